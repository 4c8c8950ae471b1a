//! DBC databases: look up messages and signals by name and encode/decode them.
//!
//! Parsing is done by the `can-dbc` crate; encoding and decoding (Intel little-endian and Motorola
//! big-endian bit layouts, signed and unsigned raw values, factor and offset, min/max range checks) is done
//! here. Errors name the DBC file and, where there is one, the line (`can-dbc` keeps no positions: the
//! `BO_` and `SG_` lines of a message that cannot be used are found in the text). An empty file, and two
//! messages with one id, are errors too.
//!
//! Bit layouts follow the DBC convention:
//! * Intel (`@1`, little-endian): the start bit is the signal's least significant bit; bit `n` of the
//!   payload is bit `n % 8` of byte `n / 8`, and the signal occupies `start .. start + size`.
//! * Motorola (`@0`, big-endian): the start bit is the signal's most significant bit in the "sawtooth"
//!   numbering (`byte * 8 + bit`, bit 7 = MSB of a byte); following bits go down within a byte and continue
//!   at bit 7 of the next byte.
//!
//! Physical value = raw * factor + offset, where raw is two's complement for signed signals. Encoding
//! rounds to the nearest raw step and saturates at what the bit width can hold; a range [min, max] is only
//! enforced when min < max (DBC files use `[0|0]` for "no range").
//!
//! Signals are checked to fit inside their message when the DBC is loaded, so encoding and decoding never
//! index out of bounds. Multiplexed signals are decoded unconditionally (the multiplexer value is not
//! consulted), and when encoding, signals given explicitly are written after the defaulted ones so they win
//! over any overlapping multiplexed signal. The `VECTOR__INDEPENDENT_SIG_MSG` pseudo message is skipped.

use std::collections::BTreeMap;
use std::path::Path;

use can_dbc::{MessageId, NumericValue, ValueType};

use crate::frame::{CanId, FdFlags, Frame, FrameError, FD_LENGTHS};

/// Errors loading a DBC file or encoding/decoding with it.
#[derive(Debug, thiserror::Error)]
pub enum DbcError {
    #[error("cannot read DBC file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}:{line}: DBC syntax error: {reason}")]
    Syntax {
        path: String,
        line: usize,
        reason: String,
    },
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },
    /// A definition that parses but cannot be used, at its line.
    #[error("{path}:{line}: {reason}")]
    Located {
        path: String,
        line: usize,
        reason: String,
    },
    #[error("{path}: the DBC file is empty")]
    Empty { path: String },
    #[error("no message named `{0}` in the DBC")]
    UnknownMessage(String),
    #[error("message `{message}` has no signal named `{signal}`")]
    UnknownSignal { message: String, signal: String },
    #[error("value {value} for signal `{message}.{signal}` is out of range [{min}, {max}]")]
    OutOfRange {
        message: String,
        signal: String,
        value: f64,
        min: f64,
        max: f64,
    },
    #[error("frame {frame} does not match message `{message}` (id or length)")]
    Mismatch { message: String, frame: String },
    #[error(transparent)]
    Frame(#[from] FrameError),
}

/// Byte order of a signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteOrder {
    LittleEndian,
    BigEndian,
}

/// A signal definition.
#[derive(Debug, Clone, PartialEq)]
pub struct SignalDef {
    pub name: String,
    pub start_bit: u32,
    pub size: u32,
    pub byte_order: ByteOrder,
    pub signed: bool,
    pub factor: f64,
    pub offset: f64,
    pub min: f64,
    pub max: f64,
    pub unit: String,
}

/// A message definition.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageDef {
    pub name: String,
    pub id: CanId,
    pub size: usize,
    pub transmitter: Option<String>,
    pub signals: Vec<SignalDef>,
}

/// A loaded DBC database.
#[derive(Debug, Clone)]
pub struct Database {
    pub path: String,
    pub messages: Vec<MessageDef>,
}

/// Name of the pseudo message DBC editors use for signals not assigned to a message.
const INDEPENDENT_SIGNALS: &str = "VECTOR__INDEPENDENT_SIG_MSG";

impl Database {
    pub fn load(path: &Path) -> Result<Database, DbcError> {
        let display = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| DbcError::Read {
            path: display.clone(),
            source,
        })?;
        // DBC files are often Windows-1252; without an encoding table, read non-UTF-8 files as Latin-1,
        // which keeps every ASCII construct (all the grammar uses) intact.
        let text = match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => e.into_bytes().iter().map(|&b| char::from(b)).collect(),
        };
        Self::parse(&text, &display)
    }

    /// Parses DBC text; `path` is only used in errors.
    pub fn parse(text: &str, path: &str) -> Result<Database, DbcError> {
        if text.trim_start_matches('\u{feff}').trim().is_empty() {
            return Err(DbcError::Empty {
                path: path.to_string(),
            });
        }
        let dbc = can_dbc::Dbc::try_from(text).map_err(|e| convert_error(e, text, path))?;
        check_raw_ids(text, path)?;
        let lines = SourceLines::new(text);
        let messages = dbc
            .messages
            .iter()
            .filter(|m| m.name != INDEPENDENT_SIGNALS)
            .map(|m| convert_message(m, path, &lines))
            .collect::<Result<Vec<_>, _>>()?;
        check_unique_ids(&messages, path, &lines)?;
        Ok(Database {
            path: path.to_string(),
            messages,
        })
    }

    pub fn message(&self, name: &str) -> Result<&MessageDef, DbcError> {
        self.messages
            .iter()
            .find(|m| m.name == name)
            .ok_or_else(|| DbcError::UnknownMessage(name.to_string()))
    }

    /// The message whose id matches `frame`'s id, if any.
    pub fn message_for(&self, frame: &Frame) -> Option<&MessageDef> {
        let id = frame.id()?;
        self.messages.iter().find(|m| m.id == id)
    }
}

fn convert_error(e: can_dbc::DbcError, text: &str, path: &str) -> DbcError {
    use can_dbc::DbcError as E;
    match e {
        E::Pest(pest) => {
            let line = match pest.line_col {
                pest::error::LineColLocation::Pos((line, _)) => line,
                pest::error::LineColLocation::Span((line, _), _) => line,
            };
            DbcError::Syntax {
                path: path.to_string(),
                line,
                reason: pest.variant.message().into_owned(),
            }
        }
        E::InvalidFloat(token)
        | E::InvalidInt(token)
        | E::InvalidUint(token)
        | E::InvalidNumericValue(token) => {
            let reason = format!("invalid number `{token}`");
            match line_of(text, &token) {
                Some(line) => DbcError::Syntax {
                    path: path.to_string(),
                    line,
                    reason,
                },
                None => DbcError::Invalid {
                    path: path.to_string(),
                    reason,
                },
            }
        }
        other => DbcError::Invalid {
            path: path.to_string(),
            reason: other.to_string(),
        },
    }
}

/// The 1-based line of the first occurrence of `token` as a whole word.
fn line_of(text: &str, token: &str) -> Option<usize> {
    if token.is_empty() {
        return None;
    }
    text.lines()
        .position(|l| {
            l.split(|c: char| c.is_whitespace() || "|()[],:;".contains(c))
                .any(|w| w == token)
        })
        .map(|i| i + 1)
}

/// Checks the ids as written on `BO_` lines: the parser narrows standard ids to 16 bits, which would turn
/// an invalid id such as 65792 into a valid-looking 0x100.
fn check_raw_ids(text: &str, path: &str) -> Result<(), DbcError> {
    for (i, line) in text.lines().enumerate() {
        let mut words = line.split_whitespace();
        if words.next() != Some("BO_") {
            continue;
        }
        let Some(Ok(raw)) = words.next().map(str::parse::<u64>) else {
            continue;
        };
        let too_big = if raw & (1 << 31) != 0 {
            raw > u64::from(u32::MAX)
        } else {
            raw > 0x7FF
        };
        if too_big {
            return Err(DbcError::Syntax {
                path: path.to_string(),
                line: i + 1,
                reason: format!(
                    "message id {raw} is neither a standard id (0-2047) nor an extended id (bit 31 set)"
                ),
            });
        }
    }
    Ok(())
}

/// Where messages and signals are defined in the text (`can-dbc` keeps no positions): the `BO_` line of
/// each message name and the `SG_` lines that follow it.
struct SourceLines<'a> {
    lines: Vec<&'a str>,
}

impl<'a> SourceLines<'a> {
    fn new(text: &'a str) -> SourceLines<'a> {
        SourceLines {
            lines: text.lines().collect(),
        }
    }

    /// The 1-based line of `BO_ <id> <message>:`.
    fn message(&self, message: &str) -> Option<usize> {
        self.lines
            .iter()
            .position(|l| {
                let mut words = l.split_whitespace();
                words.next() == Some("BO_")
                    && words.next().is_some()
                    && words
                        .next()
                        .is_some_and(|name| name.trim_end_matches(':') == message)
            })
            .map(|i| i + 1)
    }

    /// The 1-based line of `SG_ <signal> ...` in the block of `message`, else the message's line.
    fn signal(&self, message: &str, signal: &str) -> Option<usize> {
        let bo = self.message(message)?;
        let found = self.lines[bo..]
            .iter()
            .take_while(|l| l.trim().is_empty() || l.trim_start().starts_with("SG_"))
            .position(|l| l.split_whitespace().nth(1) == Some(signal));
        Some(found.map_or(bo, |i| bo + i + 1))
    }
}

/// An error at `line` if known, else naming only the file.
fn at_line(path: &str, line: Option<usize>, reason: String) -> DbcError {
    match line {
        Some(line) => DbcError::Located {
            path: path.to_string(),
            line,
            reason,
        },
        None => DbcError::Invalid {
            path: path.to_string(),
            reason,
        },
    }
}

/// Two messages with one id: a frame could not be told which it is.
fn check_unique_ids(messages: &[MessageDef], path: &str, lines: &SourceLines<'_>) -> Result<(), DbcError> {
    let mut seen: BTreeMap<CanId, &MessageDef> = BTreeMap::new();
    for m in messages {
        if let Some(first) = seen.get(&m.id) {
            let first_at = lines
                .message(&first.name)
                .map(|l| format!(" (line {l})"))
                .unwrap_or_default();
            return Err(at_line(
                path,
                lines.message(&m.name),
                format!(
                    "message `{}` has id 0x{}, which message `{}`{first_at} already has (ids must be unique)",
                    m.name, m.id, first.name
                ),
            ));
        }
        seen.insert(m.id, m);
    }
    Ok(())
}

fn numeric(v: &NumericValue) -> f64 {
    match *v {
        NumericValue::Uint(u) => u as f64,
        NumericValue::Int(i) => i as f64,
        NumericValue::Double(d) => d,
    }
}

fn convert_message(
    m: &can_dbc::Message,
    path: &str,
    lines: &SourceLines<'_>,
) -> Result<MessageDef, DbcError> {
    let invalid = |reason: String| at_line(path, lines.message(&m.name), reason);
    let invalid_signal = |signal: &str, reason: String| at_line(path, lines.signal(&m.name, signal), reason);
    let id = match m.id {
        MessageId::Standard(raw) => CanId::standard(u32::from(raw)),
        MessageId::Extended(raw) => CanId::extended(raw),
    }
    .map_err(|e| invalid(format!("message `{}`: {e}", m.name)))?;
    let size = usize::try_from(m.size).unwrap_or(usize::MAX);
    if size > 64 || (size > 8 && !FD_LENGTHS.contains(&size)) {
        return Err(invalid(format!(
            "message `{}` is {} bytes long, which is neither a classic (0-8) nor a CAN FD frame length",
            m.name, m.size
        )));
    }
    let mut signals = Vec::with_capacity(m.signals.len());
    for s in &m.signals {
        let def = SignalDef {
            name: s.name.clone(),
            start_bit: u32::try_from(s.start_bit).unwrap_or(u32::MAX),
            size: u32::try_from(s.size).unwrap_or(u32::MAX),
            byte_order: match s.byte_order {
                can_dbc::ByteOrder::LittleEndian => ByteOrder::LittleEndian,
                can_dbc::ByteOrder::BigEndian => ByteOrder::BigEndian,
            },
            signed: s.value_type == ValueType::Signed,
            factor: s.factor,
            offset: s.offset,
            min: numeric(&s.min),
            max: numeric(&s.max),
            unit: s.unit.clone(),
        };
        if def.size == 0 || def.size > 64 {
            return Err(invalid_signal(
                &s.name,
                format!(
                    "signal `{}.{}` is {} bits wide (1-64 allowed)",
                    m.name, s.name, s.size
                ),
            ));
        }
        match def.positions() {
            Some(positions)
                if positions[..def.size as usize]
                    .iter()
                    .all(|&p| (p as usize) < size * 8) => {}
            _ => {
                return Err(invalid_signal(
                    &s.name,
                    format!(
                        "signal `{}.{}` (start bit {}, {} bits, {}) does not fit in the {}-byte message",
                        m.name,
                        s.name,
                        s.start_bit,
                        s.size,
                        if def.byte_order == ByteOrder::LittleEndian {
                            "Intel"
                        } else {
                            "Motorola"
                        },
                        size
                    ),
                ))
            }
        }
        signals.push(def);
    }
    Ok(MessageDef {
        name: m.name.clone(),
        id,
        size,
        transmitter: m.transmitter.clone(),
        signals,
    })
}

impl MessageDef {
    pub fn signal(&self, name: &str) -> Result<&SignalDef, DbcError> {
        self.signals
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| DbcError::UnknownSignal {
                message: self.name.clone(),
                signal: name.to_string(),
            })
    }

    /// Builds the frame for this message. Signals not listed are encoded as their physical value 0
    /// clamped into [min, max]. Values outside [min, max] (when min < max) are an error.
    pub fn encode(&self, values: &[(&str, f64)]) -> Result<Frame, DbcError> {
        let mut given = Vec::with_capacity(values.len());
        for &(name, value) in values {
            let signal = self.signal(name)?;
            if signal.min < signal.max {
                let tolerance = 1e-9 * signal.min.abs().max(signal.max.abs()).max(1.0);
                if !(value >= signal.min - tolerance && value <= signal.max + tolerance) {
                    return Err(DbcError::OutOfRange {
                        message: self.name.clone(),
                        signal: name.to_string(),
                        value,
                        min: signal.min,
                        max: signal.max,
                    });
                }
            }
            given.push((signal, value));
        }
        let mut data = vec![0u8; self.size];
        for signal in &self.signals {
            if !values.iter().any(|(name, _)| *name == signal.name) {
                let default = if signal.min < signal.max {
                    0f64.clamp(signal.min, signal.max)
                } else {
                    0.0
                };
                signal.encode(default, &mut data);
            }
        }
        for (signal, value) in given {
            signal.encode(value, &mut data);
        }
        let frame = if self.size <= 8 {
            Frame::data(self.id, &data)?
        } else {
            Frame::fd(self.id, &data, FdFlags::default())?
        };
        Ok(frame)
    }

    /// Decodes all signals of `frame` to physical values.
    pub fn decode(&self, frame: &Frame) -> Result<BTreeMap<String, f64>, DbcError> {
        let fits = matches!(frame, Frame::Data { .. } | Frame::Fd { .. })
            && frame.id() == Some(self.id)
            && frame.payload().len() >= self.size;
        if !fits {
            return Err(DbcError::Mismatch {
                message: self.name.clone(),
                frame: frame.to_string(),
            });
        }
        let data = frame.payload();
        Ok(self
            .signals
            .iter()
            .map(|s| (s.name.clone(), s.decode(data)))
            .collect())
    }
}

impl SignalDef {
    /// Payload bit positions (`byte * 8 + bit`) of the raw value's bits, least significant first; `None`
    /// if the layout leaves the addressable range.
    fn positions(&self) -> Option<[u32; 64]> {
        let size = self.size.min(64) as usize;
        let mut out = [0u32; 64];
        match self.byte_order {
            ByteOrder::LittleEndian => {
                for (i, slot) in out.iter_mut().enumerate().take(size) {
                    *slot = self.start_bit.checked_add(i as u32)?;
                }
            }
            ByteOrder::BigEndian => {
                // Walk from the most significant bit down the sawtooth.
                let mut p = self.start_bit;
                for k in 0..size {
                    out[size - 1 - k] = p;
                    if k + 1 < size {
                        p = if p.is_multiple_of(8) {
                            p.checked_add(15)?
                        } else {
                            p - 1
                        };
                    }
                }
            }
        }
        Some(out)
    }

    fn raw_bounds(&self) -> (f64, f64) {
        let bits = self.size.clamp(1, 64);
        if self.signed {
            let half = 2f64.powi(bits as i32 - 1);
            (-half, half - 1.0)
        } else {
            (0.0, 2f64.powi(bits as i32) - 1.0)
        }
    }

    /// The bits of this signal in a payload of `len` bytes, set to 1: what a fault flips to corrupt it.
    pub fn mask(&self, len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        let Some(positions) = self.positions() else {
            return out;
        };
        let size = self.size.clamp(1, 64) as usize;
        for &p in &positions[..size] {
            if let Some(byte) = out.get_mut((p / 8) as usize) {
                *byte |= 1 << (p % 8);
            }
        }
        out
    }

    /// Raw bits -> physical value.
    pub fn decode(&self, data: &[u8]) -> f64 {
        let Some(positions) = self.positions() else {
            return f64::NAN;
        };
        let size = self.size.clamp(1, 64) as usize;
        let mut raw = 0u64;
        for (i, &p) in positions[..size].iter().enumerate() {
            let bit = data
                .get((p / 8) as usize)
                .is_some_and(|byte| byte >> (p % 8) & 1 == 1);
            if bit {
                raw |= 1 << i;
            }
        }
        let value = if self.signed {
            let shift = 64 - size as u32;
            ((raw << shift) as i64 >> shift) as f64
        } else {
            raw as f64
        };
        value * self.factor + self.offset
    }

    /// Physical value -> raw bits written into `data` (value rounded to the nearest raw step).
    pub fn encode(&self, value: f64, data: &mut [u8]) {
        let Some(positions) = self.positions() else { return };
        let size = self.size.clamp(1, 64) as usize;
        let (lo, hi) = self.raw_bounds();
        let scaled = if self.factor == 0.0 {
            0.0
        } else {
            ((value - self.offset) / self.factor).round()
        };
        let clamped = if scaled.is_nan() {
            0.0
        } else {
            scaled.clamp(lo, hi)
        };
        // Float-to-int casts saturate, so the extremes of 64-bit signals stay in range.
        let raw = if self.signed {
            clamped as i64 as u64
        } else {
            clamped as u64
        };
        for (i, &p) in positions[..size].iter().enumerate() {
            if let Some(byte) = data.get_mut((p / 8) as usize) {
                let mask = 1u8 << (p % 8);
                if raw >> i & 1 == 1 {
                    *byte |= mask;
                } else {
                    *byte &= !mask;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_masks_cover_exactly_the_signal_bits() {
        let db = Database::parse(DBC, "t.dbc").unwrap();
        let m = db.message("HVAC_Status").unwrap();
        assert_eq!(m.signal("Fan").unwrap().mask(8), vec![0, 0, 0x0F, 0, 0, 0, 0, 0]);
        // Motorola: start bit 39 is the MSB of byte 4, 16 bits run into byte 5.
        assert_eq!(
            m.signal("Word").unwrap().mask(8),
            vec![0, 0, 0, 0, 0xFF, 0xFF, 0, 0]
        );
    }

    const DBC: &str = r#"VERSION ""

NS_ :

BS_:

BU_: ECU1 ECU2

BO_ 256 HVAC_Status: 8 ECU1
 SG_ Temp : 0|16@1- (0.1,-40) [-40|85] "degC" ECU2
 SG_ Fan : 16|4@1+ (1,0) [0|15] "" ECU2
 SG_ On : 20|1@1+ (1,0) [0|1] "" ECU2
 SG_ Word : 39|16@0+ (1,0) [0|65535] "" ECU2
 SG_ SignedBE : 55|8@0- (0.5,0) [-64|63.5] "" ECU2

BO_ 2147484672 Ext_Msg: 4 ECU2
 SG_ Counter : 7|12@0+ (1,0) [0|0] "" ECU1
 SG_ Odd : 12|12@0+ (1,0) [0|0] "" ECU1
 SG_ Flag : 31|1@1- (1,0) [0|0] "" ECU1

BO_ 512 Big: 12 ECU1
 SG_ Tail : 88|8@1+ (1,0) [0|255] "" ECU2
"#;

    fn db() -> Database {
        Database::parse(DBC, "test.dbc").unwrap()
    }

    #[test]
    fn loads_messages_and_signals() {
        let db = db();
        assert_eq!(db.messages.len(), 3);
        let hvac = db.message("HVAC_Status").unwrap();
        assert_eq!(hvac.id, CanId::Standard(0x100));
        assert_eq!(hvac.size, 8);
        assert_eq!(hvac.transmitter.as_deref(), Some("ECU1"));
        let temp = hvac.signal("Temp").unwrap();
        assert_eq!(
            (temp.start_bit, temp.size, temp.byte_order, temp.signed),
            (0, 16, ByteOrder::LittleEndian, true)
        );
        assert_eq!(
            (temp.factor, temp.offset, temp.min, temp.max),
            (0.1, -40.0, -40.0, 85.0)
        );
        assert_eq!(temp.unit, "degC");
        assert_eq!(db.message("Ext_Msg").unwrap().id, CanId::Extended(0x400));
    }

    #[test]
    fn known_vector_cross_checked_by_hand() {
        let hvac = db().message("HVAC_Status").unwrap().clone();
        let frame = hvac
            .encode(&[
                ("Temp", 21.5),
                ("Fan", 5.0),
                ("On", 1.0),
                ("Word", 4660.0),
                ("SignedBE", -3.5),
            ])
            .unwrap();
        // Temp raw (21.5 + 40) / 0.1 = 615 = 0x0267 little-endian in bytes 0-1; Fan 5 in bits 16-19 and On in
        // bit 20 give byte 2 = 0x15; Word 0x1234 big-endian from byte 4 bit 7; SignedBE raw -7 = 0xF9 in byte 6.
        assert_eq!(frame, "100#6702150012 34F900".replace(' ', "").parse().unwrap());
        let decoded = hvac.decode(&frame).unwrap();
        assert!((decoded["Temp"] - 21.5).abs() < 1e-9);
        assert_eq!(decoded["Fan"], 5.0);
        assert_eq!(decoded["On"], 1.0);
        assert_eq!(decoded["Word"], 4660.0);
        assert_eq!(decoded["SignedBE"], -3.5);
    }

    #[test]
    fn motorola_across_byte_boundaries() {
        let ext = db().message("Ext_Msg").unwrap().clone();
        let frame = ext.encode(&[("Counter", 0xABC as f64)]).unwrap();
        // MSB at byte 0 bit 7: 8 bits fill byte 0, the low nibble goes to byte 1 bits 7-4.
        assert_eq!(frame.payload(), &[0xAB, 0xC0, 0, 0]);
        let odd = ext.encode(&[("Odd", 0xABC as f64)]).unwrap();
        // MSB at byte 1 bit 4: 5 bits in byte 1 (bits 4-0), 7 bits in byte 2 (bits 7-1).
        assert_eq!(odd.payload(), &[0, 0x15, 0x78, 0]);
        assert_eq!(ext.decode(&odd).unwrap()["Odd"], 0xABC as f64);
        assert_eq!(frame.id(), Some(CanId::Extended(0x400)));
    }

    #[test]
    fn round_trips_le_be_signed_1_and_16_bit() {
        let db = db();
        let hvac = db.message("HVAC_Status").unwrap();
        for temp in [-40.0, -0.1, 0.0, 12.3, 85.0] {
            for word in [0.0, 1.0, 255.0, 256.0, 65535.0] {
                for on in [0.0, 1.0] {
                    for sbe in [-64.0, -0.5, 0.0, 63.5] {
                        let values = [("Temp", temp), ("Word", word), ("On", on), ("SignedBE", sbe)];
                        let frame = hvac.encode(&values).unwrap();
                        let back = hvac.decode(&frame).unwrap();
                        for (name, v) in values {
                            assert!((back[name] - v).abs() < 1e-9, "{name}: {v} -> {}", back[name]);
                        }
                    }
                }
            }
        }
        let ext = db.message("Ext_Msg").unwrap();
        // A 1-bit signed signal holds 0 and -1.
        for flag in [0.0, -1.0] {
            let frame = ext.encode(&[("Flag", flag)]).unwrap();
            assert_eq!(ext.decode(&frame).unwrap()["Flag"], flag);
        }
        assert_eq!(ext.encode(&[("Flag", -1.0)]).unwrap().payload()[3], 0x80);
    }

    #[test]
    fn rounding_saturation_and_defaults() {
        let db = db();
        let hvac = db.message("HVAC_Status").unwrap();
        // 21.54 rounds to the nearest 0.1 step.
        let frame = hvac.encode(&[("Temp", 21.54)]).unwrap();
        assert!((hvac.decode(&frame).unwrap()["Temp"] - 21.5).abs() < 1e-9);
        let frame = hvac.encode(&[("Temp", 21.56)]).unwrap();
        assert!((hvac.decode(&frame).unwrap()["Temp"] - 21.6).abs() < 1e-9);
        // Unlisted signals: physical 0 clamped into [min, max].
        let decoded = hvac.decode(&hvac.encode(&[]).unwrap()).unwrap();
        assert_eq!(decoded["Temp"], 0.0);
        assert_eq!(decoded["Fan"], 0.0);
        // A signal without a range saturates at its bit width.
        let ext = db.message("Ext_Msg").unwrap();
        let frame = ext.encode(&[("Counter", 1e9)]).unwrap();
        assert_eq!(ext.decode(&frame).unwrap()["Counter"], 4095.0);
        let frame = ext.encode(&[("Counter", -5.0)]).unwrap();
        assert_eq!(ext.decode(&frame).unwrap()["Counter"], 0.0);
        let frame = ext.encode(&[("Counter", f64::NAN)]).unwrap();
        assert_eq!(ext.decode(&frame).unwrap()["Counter"], 0.0);
    }

    #[test]
    fn fd_sized_messages_encode_as_fd_frames() {
        let big = db().message("Big").unwrap().clone();
        let frame = big.encode(&[("Tail", 0xAB as f64)]).unwrap();
        assert!(frame.is_fd());
        assert_eq!(frame.payload().len(), 12);
        assert_eq!(frame.payload()[11], 0xAB);
        assert_eq!(big.decode(&frame).unwrap()["Tail"], 171.0);
    }

    #[test]
    fn errors_for_unknown_names_ranges_and_mismatches() {
        let db = db();
        assert!(matches!(db.message("Nope"), Err(DbcError::UnknownMessage(n)) if n == "Nope"));
        let hvac = db.message("HVAC_Status").unwrap();
        assert!(matches!(
            hvac.encode(&[("Nope", 1.0)]),
            Err(DbcError::UnknownSignal { message, signal }) if message == "HVAC_Status" && signal == "Nope"
        ));
        match hvac.encode(&[("Temp", 85.1)]) {
            Err(DbcError::OutOfRange {
                signal,
                value,
                min,
                max,
                ..
            }) => {
                assert_eq!((signal.as_str(), value, min, max), ("Temp", 85.1, -40.0, 85.0));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            hvac.encode(&[("Fan", f64::NAN)]),
            Err(DbcError::OutOfRange { .. })
        ));
        assert!(matches!(
            hvac.decode(&"101#0000000000000000".parse().unwrap()),
            Err(DbcError::Mismatch { .. })
        ));
        assert!(matches!(
            hvac.decode(&"100#0000".parse().unwrap()),
            Err(DbcError::Mismatch { .. })
        ));
        assert!(matches!(
            hvac.decode(&"100#R8".parse().unwrap()),
            Err(DbcError::Mismatch { .. })
        ));
        assert_eq!(
            db.message_for(&"100#00".parse().unwrap())
                .map(|m| m.name.as_str()),
            Some("HVAC_Status")
        );
        assert_eq!(
            db.message_for(&"00000400#00".parse().unwrap())
                .map(|m| m.name.as_str()),
            Some("Ext_Msg")
        );
        assert!(db.message_for(&"400#00".parse().unwrap()).is_none());
        // Short data never panics in the signal decoder.
        assert_eq!(hvac.signal("Word").unwrap().decode(&[]), 0.0);
    }

    #[test]
    fn syntax_errors_report_the_line() {
        let text = "VERSION \"\"\n\nBU_: A\n\nBO_ 256 Msg: 8 A\n SG_ Sig : 0|8@1+ (1,0) [0|255] \"\" A\n SG_ Broken 0|8@1+ (1,0) [0|1] \"\" A\n";
        match Database::parse(text, "broken.dbc") {
            Err(DbcError::Syntax { path, line, reason }) => {
                assert_eq!(path, "broken.dbc");
                assert_eq!(line, 7, "{reason}");
                assert!(!reason.is_empty());
            }
            other => panic!("{other:?}"),
        }
        let err = Database::parse("VERSION \"\"\nBO_ x\n", "x.dbc").unwrap_err();
        assert!(err.to_string().starts_with("x.dbc:2: DBC syntax error"), "{err}");
    }

    #[test]
    fn invalid_layouts_are_rejected_at_load() {
        let outside = "VERSION \"\"\n\nBU_: A\n\nBO_ 256 Msg: 2 A\n SG_ Sig : 12|8@1+ (1,0) [0|255] \"\" A\n";
        assert!(
            matches!(Database::parse(outside, "o.dbc"), Err(DbcError::Located { line: 6, reason, .. }) if reason.contains("does not fit"))
        );
        let be_outside =
            "VERSION \"\"\n\nBU_: A\n\nBO_ 256 Msg: 1 A\n SG_ Sig : 3|8@0+ (1,0) [0|255] \"\" A\n";
        assert!(matches!(
            Database::parse(be_outside, "o.dbc"),
            Err(DbcError::Located { line: 6, .. })
        ));
        let wide = "VERSION \"\"\n\nBU_: A\n\nBO_ 256 Msg: 8 A\n SG_ Sig : 0|65@1+ (1,0) [0|255] \"\" A\n";
        assert!(matches!(
            Database::parse(wide, "o.dbc"),
            Err(DbcError::Located { line: 6, .. })
        ));
        let std_too_big = "VERSION \"\"\n\nBU_: A\n\nBO_ 4096 Msg: 8 A\n";
        assert!(matches!(
            Database::parse(std_too_big, "o.dbc"),
            Err(DbcError::Syntax { line: 5, .. })
        ));
        // 65792 = 0x10100 would otherwise be narrowed to the valid-looking 0x100.
        let narrowed = "VERSION \"\"\n\nBU_: A\n\nBO_ 65792 Msg: 8 A\n";
        assert!(matches!(
            Database::parse(narrowed, "o.dbc"),
            Err(DbcError::Syntax { line: 5, .. })
        ));
        let odd_size = "VERSION \"\"\n\nBU_: A\n\nBO_ 256 Msg: 9 A\n";
        assert!(matches!(
            Database::parse(odd_size, "o.dbc"),
            Err(DbcError::Located { line: 5, .. })
        ));
    }

    #[test]
    fn load_reads_files_and_reports_missing_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hvac.dbc");
        // A Latin-1 byte in a comment must not break loading.
        let mut bytes = DBC.as_bytes().to_vec();
        bytes.extend_from_slice(b"CM_ \"Temp\xE9rature\";\n");
        std::fs::write(&path, bytes).unwrap();
        let db = Database::load(&path).unwrap();
        assert_eq!(db.path, path.display().to_string());
        assert_eq!(db.messages.len(), 3);
        let missing = dir.path().join("missing.dbc");
        assert!(matches!(Database::load(&missing), Err(DbcError::Read { .. })));
    }
}
