//! The CAN frame model: classic data and remote frames, CAN FD frames and error frames.
//!
//! Constructors validate identifier range and payload length and return [`FrameError`]; a [`Frame`] that
//! exists is always a frame a real controller could put on the wire. Frames print and parse in the
//! can-utils `candump`/`cansend` syntax, which is also how scenarios write raw frames.

use std::fmt;
use std::str::FromStr;

/// Largest 11-bit identifier.
pub const SFF_MAX: u32 = 0x7FF;
/// Largest 29-bit identifier.
pub const EFF_MAX: u32 = 0x1FFF_FFFF;
/// Linux `CAN_EFF_FLAG`: the identifier is 29 bits.
pub const CAN_EFF_FLAG: u32 = 0x8000_0000;
/// Linux `CAN_RTR_FLAG`: remote transmission request.
pub const CAN_RTR_FLAG: u32 = 0x4000_0000;
/// Linux `CAN_ERR_FLAG`: error frame.
pub const CAN_ERR_FLAG: u32 = 0x2000_0000;
/// Valid CAN FD payload lengths.
pub const FD_LENGTHS: [usize; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 20, 24, 32, 48, 64];

/// Why a frame could not be built or parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("standard CAN id 0x{0:X} is out of range (max 0x7FF)")]
    StandardIdOutOfRange(u32),
    #[error("extended CAN id 0x{0:X} is out of range (max 0x1FFFFFFF)")]
    ExtendedIdOutOfRange(u32),
    #[error("classic CAN payload of {0} bytes is too long (max 8)")]
    ClassicTooLong(usize),
    #[error("CAN FD payload of {0} bytes is not a valid FD length (0-8, 12, 16, 20, 24, 32, 48, 64)")]
    InvalidFdLength(usize),
    #[error("remote frame DLC {0} is out of range (max 8)")]
    RemoteDlcOutOfRange(u8),
    #[error("error frame class 0x{0:X} is out of range (max 0x1FFFFFFF)")]
    ErrorClassOutOfRange(u32),
    #[error("cannot parse frame `{text}`: {reason}")]
    Syntax { text: String, reason: String },
}

/// An 11-bit (standard) or 29-bit (extended) CAN identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CanId {
    Standard(u16),
    Extended(u32),
}

impl CanId {
    /// An 11-bit identifier; fails above 0x7FF.
    pub fn standard(id: u32) -> Result<Self, FrameError> {
        if id > SFF_MAX {
            return Err(FrameError::StandardIdOutOfRange(id));
        }
        Ok(CanId::Standard(id as u16))
    }

    /// A 29-bit identifier; fails above 0x1FFFFFFF.
    pub fn extended(id: u32) -> Result<Self, FrameError> {
        if id > EFF_MAX {
            return Err(FrameError::ExtendedIdOutOfRange(id));
        }
        Ok(CanId::Extended(id))
    }

    /// The identifier without flag bits.
    pub fn raw(self) -> u32 {
        match self {
            CanId::Standard(id) => u32::from(id),
            CanId::Extended(id) => id,
        }
    }

    pub fn is_extended(self) -> bool {
        matches!(self, CanId::Extended(_))
    }

    /// The identifier as Linux encodes it in `can_id` (with `CAN_EFF_FLAG` for extended ids).
    pub fn to_linux(self) -> u32 {
        match self {
            CanId::Standard(id) => u32::from(id),
            CanId::Extended(id) => id | CAN_EFF_FLAG,
        }
    }

    /// The identifier of a Linux `can_id` word, the inverse of [`CanId::to_linux`]: the one place where
    /// the kernel backend and the wire protocol turn a raw `can_id` into an identifier.
    ///
    /// * With `CAN_EFF_FLAG`, the low 29 bits are an extended id.
    /// * Without it, the low 29 bits are a standard id and must be at most 0x7FF; a larger value fails
    ///   with [`FrameError::StandardIdOutOfRange`] (carrying the 29-bit value).
    /// * `CAN_RTR_FLAG` and `CAN_ERR_FLAG` are not part of the identifier and are ignored here; the caller
    ///   decides what kind of frame the word describes (an error frame's low bits are its class, not an
    ///   id, so callers do not decode an identifier for error frames at all).
    ///
    /// Why reject rather than mask with `CAN_SFF_MASK`: the words come from outside the process (hub
    /// peers, other writers on a kernel bus), and a standard `can_id` with bits above 0x7FF is not a
    /// frame any controller can carry. Masking would silently turn it into a different, valid-looking
    /// id (0x923 would become 0x123), so a corrupt or hostile sender could impersonate another message;
    /// rejecting reports the bad word instead.
    pub fn from_linux(can_id: u32) -> Result<Self, FrameError> {
        let id = can_id & EFF_MAX;
        if can_id & CAN_EFF_FLAG != 0 {
            Ok(CanId::Extended(id))
        } else if id > SFF_MAX {
            Err(FrameError::StandardIdOutOfRange(id))
        } else {
            Ok(CanId::Standard(id as u16))
        }
    }
}

impl fmt::Display for CanId {
    /// candump style: three hex digits for standard ids, eight for extended ids.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CanId::Standard(id) => write!(f, "{id:03X}"),
            CanId::Extended(id) => write!(f, "{id:08X}"),
        }
    }
}

/// CAN FD flags (`canfd_frame.flags`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct FdFlags {
    /// Bit rate switch: the data phase runs at the data bit rate.
    pub brs: bool,
    /// Error state indicator: the sender is error passive.
    pub esi: bool,
}

impl FdFlags {
    pub const BRS: u8 = 0x01;
    pub const ESI: u8 = 0x02;
    pub const FDF: u8 = 0x04;

    /// The flags byte as Linux stores it; FDF is always set for FD frames.
    pub fn bits(self) -> u8 {
        Self::FDF | if self.brs { Self::BRS } else { 0 } | if self.esi { Self::ESI } else { 0 }
    }

    pub fn from_bits(bits: u8) -> Self {
        FdFlags {
            brs: bits & Self::BRS != 0,
            esi: bits & Self::ESI != 0,
        }
    }
}

/// One CAN frame.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Frame {
    /// Classic CAN data frame, 0-8 bytes.
    Data { id: CanId, data: Payload },
    /// Classic CAN remote transmission request with its DLC (0-8).
    Remote { id: CanId, dlc: u8 },
    /// CAN FD frame, payload of a valid FD length up to 64 bytes.
    Fd {
        id: CanId,
        flags: FdFlags,
        data: Payload,
    },
    /// Error frame: error class bits (`can_id & CAN_ERR_MASK`) and the 8 detail bytes.
    Error { class: u32, data: [u8; 8] },
}

/// A frame payload of up to 64 bytes, stored inline.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Payload {
    len: u8,
    bytes: [u8; 64],
}

impl Payload {
    fn new(data: &[u8]) -> Self {
        let mut bytes = [0u8; 64];
        let len = data.len().min(64);
        bytes[..len].copy_from_slice(&data[..len]);
        Payload {
            len: len as u8,
            bytes,
        }
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.as_slice() {
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

impl Frame {
    /// A classic data frame; fails on more than 8 bytes.
    pub fn data(id: CanId, data: &[u8]) -> Result<Self, FrameError> {
        if data.len() > 8 {
            return Err(FrameError::ClassicTooLong(data.len()));
        }
        Ok(Frame::Data {
            id,
            data: Payload::new(data),
        })
    }

    /// A remote frame; fails on a DLC above 8.
    pub fn remote(id: CanId, dlc: u8) -> Result<Self, FrameError> {
        if dlc > 8 {
            return Err(FrameError::RemoteDlcOutOfRange(dlc));
        }
        Ok(Frame::Remote { id, dlc })
    }

    /// A CAN FD frame; fails unless the length is one of [`FD_LENGTHS`].
    pub fn fd(id: CanId, data: &[u8], flags: FdFlags) -> Result<Self, FrameError> {
        if !FD_LENGTHS.contains(&data.len()) {
            return Err(FrameError::InvalidFdLength(data.len()));
        }
        Ok(Frame::Fd {
            id,
            flags,
            data: Payload::new(data),
        })
    }

    /// An error frame; `class` is the error class mask without `CAN_ERR_FLAG`.
    pub fn error(class: u32, data: [u8; 8]) -> Result<Self, FrameError> {
        if class > EFF_MAX {
            return Err(FrameError::ErrorClassOutOfRange(class));
        }
        Ok(Frame::Error { class, data })
    }

    /// The identifier; `None` for error frames.
    pub fn id(&self) -> Option<CanId> {
        match self {
            Frame::Data { id, .. } | Frame::Remote { id, .. } | Frame::Fd { id, .. } => Some(*id),
            Frame::Error { .. } => None,
        }
    }

    /// The payload bytes (empty for remote frames).
    pub fn payload(&self) -> &[u8] {
        match self {
            Frame::Data { data, .. } | Frame::Fd { data, .. } => data.as_slice(),
            Frame::Remote { .. } => &[],
            Frame::Error { data, .. } => data,
        }
    }

    pub fn is_fd(&self) -> bool {
        matches!(self, Frame::Fd { .. })
    }

    pub fn is_remote(&self) -> bool {
        matches!(self, Frame::Remote { .. })
    }

    pub fn is_error(&self) -> bool {
        matches!(self, Frame::Error { .. })
    }

    /// The Linux `can_id` word with EFF/RTR/ERR flag bits.
    pub fn linux_can_id(&self) -> u32 {
        match self {
            Frame::Data { id, .. } | Frame::Fd { id, .. } => id.to_linux(),
            Frame::Remote { id, .. } => id.to_linux() | CAN_RTR_FLAG,
            Frame::Error { class, .. } => class | CAN_ERR_FLAG,
        }
    }
}

impl fmt::Display for Frame {
    /// candump/cansend syntax: `123#1122`, `123#R`, `123#R3`, `123##1AABB`, `20000004#0000000000000000`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Frame::Data { id, data } => {
                write!(f, "{id}#")?;
                write_hex(f, data.as_slice())
            }
            Frame::Remote { id, dlc } => {
                if *dlc == 0 {
                    write!(f, "{id}#R")
                } else {
                    write!(f, "{id}#R{dlc}")
                }
            }
            Frame::Fd { id, flags, data } => {
                write!(f, "{id}##{:X}", flags.bits())?;
                write_hex(f, data.as_slice())
            }
            Frame::Error { class, data } => {
                write!(f, "{:08X}#", class | CAN_ERR_FLAG)?;
                write_hex(f, data)
            }
        }
    }
}

fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    for b in bytes {
        write!(f, "{b:02X}")?;
    }
    Ok(())
}

impl FromStr for Frame {
    type Err = FrameError;

    /// Parses candump/cansend syntax. Three hex digits mean a standard id, eight an extended id;
    /// an eight-digit id with `CAN_ERR_FLAG` set is an error frame. Data bytes may be separated by `.`.
    ///
    /// Accepted forms (hex digits in either case):
    /// * `<id>#<data>`: classic data frame with 0-8 bytes (`123#1122`, `123#11.22.33`, `123#`);
    /// * `<id>#R` / `<id>#R<dlc>`: remote frame, DLC 0-8;
    /// * `<id>##<flags><data>`: CAN FD frame; `<flags>` is one hex nibble (BRS 0x1, ESI 0x2, FDF 0x4 may or
    ///   may not be set), followed by 0-64 bytes of a valid FD length;
    /// * `<8-digit id with 0x20000000 set>#<data>`: error frame, up to 8 detail bytes (zero padded);
    /// * a trailing `_<hex>` raw DLC (9-F) after 8 data bytes or `R8` is tolerated and ignored.
    ///
    /// Surrounding whitespace is ignored. Bad input gives [`FrameError::Syntax`] (or the constructor's
    /// error for out-of-range ids and lengths), never a panic.
    fn from_str(text: &str) -> Result<Self, FrameError> {
        parse_frame(text.trim()).map_err(|e| match e {
            ParseError::Syntax(reason) => FrameError::Syntax {
                text: text.to_string(),
                reason,
            },
            ParseError::Frame(e) => e,
        })
    }
}

enum ParseError {
    Syntax(String),
    Frame(FrameError),
}

impl From<FrameError> for ParseError {
    fn from(e: FrameError) -> Self {
        ParseError::Frame(e)
    }
}

fn syntax<T>(reason: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError::Syntax(reason.into()))
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn parse_frame(text: &str) -> Result<Frame, ParseError> {
    let bytes = text.as_bytes();
    let Some(hash) = bytes.iter().position(|&c| c == b'#') else {
        return syntax("missing `#` between id and data");
    };
    let id_text = &bytes[..hash];
    let mut id_value: u32 = 0;
    for &c in id_text {
        let Some(v) = hex_value(c) else {
            return syntax(format!("id contains the non-hex character {:?}", char::from(c)));
        };
        id_value = (id_value << 4) | u32::from(v);
    }
    let rest = &bytes[hash + 1..];
    let id = match id_text.len() {
        3 => CanId::standard(id_value)?,
        8 if id_value & CAN_ERR_FLAG != 0 => {
            if id_value & (CAN_EFF_FLAG | CAN_RTR_FLAG) != 0 {
                return syntax("error frame id must not have the EFF or RTR flag bits set");
            }
            if rest.first() == Some(&b'#') {
                return syntax("an error frame cannot be a CAN FD frame");
            }
            let (data, len) = parse_data(rest, 64)?;
            if len8_suffix_present(rest) {
                return syntax("an error frame cannot carry a raw DLC suffix");
            }
            if len > 8 {
                return syntax(format!("error frame has {len} data bytes (max 8)"));
            }
            let mut detail = [0u8; 8];
            detail[..len].copy_from_slice(&data[..len]);
            return Ok(Frame::error(id_value & EFF_MAX, detail)?);
        }
        8 => CanId::extended(id_value)?,
        0 => return syntax("missing id before `#`"),
        n => {
            return syntax(format!(
                "id must be 3 (standard) or 8 (extended) hex digits, found {n}"
            ))
        }
    };

    if let Some(fd) = rest.strip_prefix(b"#") {
        let Some((&nibble, data_text)) = fd.split_first() else {
            return syntax("CAN FD frame needs a flags nibble after `##`");
        };
        let Some(flags) = hex_value(nibble) else {
            return syntax(format!(
                "CAN FD flags must be one hex digit, found {:?}",
                char::from(nibble)
            ));
        };
        let (data, len) = parse_data(data_text, 64)?;
        if len8_suffix_present(data_text) {
            return syntax("a CAN FD frame cannot carry a raw DLC suffix");
        }
        return Ok(Frame::fd(id, &data[..len], FdFlags::from_bits(flags))?);
    }

    if let Some(rtr) = rest.strip_prefix(b"R").or_else(|| rest.strip_prefix(b"r")) {
        let (dlc, tail) = match rtr.split_first() {
            None => (0, rtr),
            Some((&c @ b'0'..=b'9', tail)) => (c - b'0', tail),
            Some((&b'_', _)) => (0, rtr),
            Some((&c, _)) => {
                return syntax(format!(
                    "remote frame DLC must be a digit 0-8, found {:?}",
                    char::from(c)
                ))
            }
        };
        if !tail.is_empty() {
            if dlc == 8 && is_len8_suffix(tail) {
                return Ok(Frame::remote(id, dlc)?);
            }
            return syntax("unexpected characters after the remote frame DLC");
        }
        return Ok(Frame::remote(id, dlc)?);
    }

    let (data, len) = parse_data(rest, 64)?;
    Ok(Frame::data(id, &data[..len])?)
}

/// True when `text` is a `_X` raw DLC suffix with X in 9-F.
fn is_len8_suffix(text: &[u8]) -> bool {
    matches!(text, [b'_', c] if hex_value(*c).is_some_and(|v| v >= 9))
}

fn len8_suffix_present(text: &[u8]) -> bool {
    text.contains(&b'_')
}

/// Parses hex byte pairs (optionally separated by `.`) into a buffer; returns the buffer and the length.
/// A trailing `_X` raw DLC suffix is accepted after exactly 8 bytes (and ignored).
fn parse_data(text: &[u8], max: usize) -> Result<([u8; 64], usize), ParseError> {
    let mut out = [0u8; 64];
    let mut len = 0usize;
    let mut i = 0usize;
    while i < text.len() {
        let c = text[i];
        if c == b'.' {
            i += 1;
            continue;
        }
        if c == b'_' {
            if len == 8 && is_len8_suffix(&text[i..]) {
                return Ok((out, len));
            }
            return syntax("a raw DLC suffix `_X` (X = 9-F) is only allowed after exactly 8 data bytes");
        }
        let Some(hi) = hex_value(c) else {
            return syntax(format!("data contains the non-hex character {:?}", char::from(c)));
        };
        let Some(&c2) = text.get(i + 1) else {
            return syntax("data has an odd number of hex digits");
        };
        let Some(lo) = hex_value(c2) else {
            if c2 == b'.' {
                return syntax("a `.` separator splits a data byte");
            }
            return syntax(format!(
                "data contains the non-hex character {:?}",
                char::from(c2)
            ));
        };
        if len >= max {
            return syntax(format!("more than {max} data bytes"));
        }
        out[len] = (hi << 4) | lo;
        len += 1;
        i += 2;
    }
    Ok((out, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Frame, FrameError> {
        text.parse()
    }

    fn std_id(id: u32) -> CanId {
        CanId::standard(id).unwrap()
    }

    fn ext_id(id: u32) -> CanId {
        CanId::extended(id).unwrap()
    }

    #[test]
    fn can_id_from_linux_words() {
        // Standard ids in range, including the bounds.
        assert_eq!(CanId::from_linux(0), Ok(CanId::Standard(0)));
        assert_eq!(CanId::from_linux(0x123), Ok(CanId::Standard(0x123)));
        assert_eq!(CanId::from_linux(SFF_MAX), Ok(CanId::Standard(0x7FF)));
        // Extended ids keep all 29 bits, also small ones.
        assert_eq!(
            CanId::from_linux(CAN_EFF_FLAG | 0x123),
            Ok(CanId::Extended(0x123))
        );
        assert_eq!(
            CanId::from_linux(CAN_EFF_FLAG | EFF_MAX),
            Ok(CanId::Extended(EFF_MAX))
        );
        // A standard id above 0x7FF is rejected, not masked.
        assert_eq!(
            CanId::from_linux(0x800),
            Err(FrameError::StandardIdOutOfRange(0x800))
        );
        assert_eq!(
            CanId::from_linux(0x923),
            Err(FrameError::StandardIdOutOfRange(0x923))
        );
        assert_eq!(
            CanId::from_linux(EFF_MAX),
            Err(FrameError::StandardIdOutOfRange(EFF_MAX))
        );
        // RTR and ERR flags are not part of the id.
        assert_eq!(
            CanId::from_linux(CAN_RTR_FLAG | 0x123),
            Ok(CanId::Standard(0x123))
        );
        assert_eq!(
            CanId::from_linux(CAN_EFF_FLAG | CAN_RTR_FLAG | 0x1ABC_DEF0),
            Ok(CanId::Extended(0x1ABC_DEF0))
        );
        assert_eq!(
            CanId::from_linux(CAN_ERR_FLAG | 0x004),
            Ok(CanId::Standard(0x004))
        );
        assert_eq!(
            CanId::from_linux(CAN_RTR_FLAG | 0x800),
            Err(FrameError::StandardIdOutOfRange(0x800))
        );
        // Every valid id round-trips through `to_linux`.
        for id in [
            CanId::Standard(0),
            CanId::Standard(0x7FF),
            CanId::Extended(0),
            CanId::Extended(EFF_MAX),
        ] {
            assert_eq!(CanId::from_linux(id.to_linux()), Ok(id));
        }
    }

    #[test]
    fn parses_classic_data() {
        assert_eq!(
            parse("123#1122").unwrap(),
            Frame::data(std_id(0x123), &[0x11, 0x22]).unwrap()
        );
        assert_eq!(parse("123#").unwrap(), Frame::data(std_id(0x123), &[]).unwrap());
        assert_eq!(
            parse("7ff#aabbccddeeff0011").unwrap().payload(),
            &[0xAA, 0xBB, 0xCC, 0xDD, 0xEE, 0xFF, 0, 0x11]
        );
        assert_eq!(parse("000#00").unwrap(), Frame::data(std_id(0), &[0]).unwrap());
    }

    #[test]
    fn parses_dotted_data() {
        let want = Frame::data(std_id(0x123), &[0x11, 0x22, 0x33]).unwrap();
        assert_eq!(parse("123#11.22.33").unwrap(), want);
        assert_eq!(parse("123#.11..22.33.").unwrap(), want);
        assert!(matches!(parse("123#1.122"), Err(FrameError::Syntax { .. })));
    }

    #[test]
    fn parses_extended() {
        assert_eq!(
            parse("12345678#AB").unwrap(),
            Frame::data(ext_id(0x1234_5678), &[0xAB]).unwrap()
        );
        // Eight digits always mean an extended id, even for small values.
        assert_eq!(
            parse("00000123#").unwrap(),
            Frame::data(ext_id(0x123), &[]).unwrap()
        );
        assert_eq!(parse("1FFFFFFF#").unwrap().id(), Some(ext_id(EFF_MAX)));
    }

    #[test]
    fn parses_remote() {
        assert_eq!(parse("123#R").unwrap(), Frame::remote(std_id(0x123), 0).unwrap());
        assert_eq!(parse("123#R3").unwrap(), Frame::remote(std_id(0x123), 3).unwrap());
        assert_eq!(
            parse("1234ABCD#R8").unwrap(),
            Frame::remote(ext_id(0x1234_ABCD), 8).unwrap()
        );
        assert_eq!(
            parse("123#R8_F").unwrap(),
            Frame::remote(std_id(0x123), 8).unwrap()
        );
        assert_eq!(parse("123#R9"), Err(FrameError::RemoteDlcOutOfRange(9)));
        assert!(matches!(parse("123#RX"), Err(FrameError::Syntax { .. })));
        assert!(matches!(parse("123#R12"), Err(FrameError::Syntax { .. })));
        assert!(matches!(parse("123#R3_9"), Err(FrameError::Syntax { .. })));
    }

    #[test]
    fn parses_fd_with_any_flags_nibble() {
        let data = [0xAA, 0xBB];
        assert_eq!(
            parse("123##1AABB").unwrap(),
            Frame::fd(
                std_id(0x123),
                &data,
                FdFlags {
                    brs: true,
                    esi: false
                }
            )
            .unwrap()
        );
        assert_eq!(
            parse("123##5AABB").unwrap(),
            Frame::fd(
                std_id(0x123),
                &data,
                FdFlags {
                    brs: true,
                    esi: false
                }
            )
            .unwrap()
        );
        assert_eq!(
            parse("123##0AABB").unwrap(),
            Frame::fd(std_id(0x123), &data, FdFlags::default()).unwrap()
        );
        assert_eq!(
            parse("123##4").unwrap(),
            Frame::fd(std_id(0x123), &[], FdFlags::default()).unwrap()
        );
        assert_eq!(
            parse("123##3").unwrap(),
            Frame::fd(std_id(0x123), &[], FdFlags { brs: true, esi: true }).unwrap()
        );
        assert_eq!(
            parse("123##F").unwrap(),
            Frame::fd(std_id(0x123), &[], FdFlags { brs: true, esi: true }).unwrap()
        );
        let long = "11".repeat(64);
        let frame = parse(&format!("1ABCDEF0##1{long}")).unwrap();
        assert_eq!(frame.payload(), &[0x11; 64]);
        assert!(frame.is_fd());
        assert_eq!(
            parse(&format!("123##1{}", "00".repeat(9))),
            Err(FrameError::InvalidFdLength(9))
        );
        assert!(matches!(parse("123##"), Err(FrameError::Syntax { .. })));
        assert!(matches!(parse("123##G11"), Err(FrameError::Syntax { .. })));
        assert!(matches!(
            parse(&format!("123##1{}", "00".repeat(65))),
            Err(FrameError::Syntax { .. })
        ));
    }

    #[test]
    fn parses_error_frames() {
        let frame = parse("20000004#0004000000000000").unwrap();
        assert_eq!(frame, Frame::error(0x4, [0, 4, 0, 0, 0, 0, 0, 0]).unwrap());
        assert_eq!(frame.linux_can_id(), 0x2000_0004);
        // Fewer bytes are zero padded.
        assert_eq!(
            parse("20000100#01").unwrap(),
            Frame::error(0x100, [1, 0, 0, 0, 0, 0, 0, 0]).unwrap()
        );
        assert!(matches!(parse("A0000004#00"), Err(FrameError::Syntax { .. })));
        assert!(matches!(parse("20000004##100"), Err(FrameError::Syntax { .. })));
        assert!(matches!(parse("20000004#R"), Err(FrameError::Syntax { .. })));
        assert!(matches!(
            parse("20000004#000000000000000000"),
            Err(FrameError::Syntax { .. })
        ));
    }

    #[test]
    fn tolerates_raw_dlc_suffix() {
        let want = Frame::data(std_id(0x123), &[1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
        assert_eq!(parse("123#0102030405060708_9").unwrap(), want);
        assert_eq!(parse("123#0102030405060708_f").unwrap(), want);
        assert!(matches!(
            parse("123#0102030405060708_8"),
            Err(FrameError::Syntax { .. })
        ));
        assert!(matches!(
            parse("123#01020304050607_9"),
            Err(FrameError::Syntax { .. })
        ));
        assert!(matches!(
            parse("123#0102030405060708_9A"),
            Err(FrameError::Syntax { .. })
        ));
    }

    #[test]
    fn rejects_bad_input_with_typed_errors() {
        assert_eq!(parse("800#"), Err(FrameError::StandardIdOutOfRange(0x800)));
        assert_eq!(
            parse("123#112233445566778899"),
            Err(FrameError::ClassicTooLong(9))
        );
        assert_eq!(
            parse("40000000#"),
            Err(FrameError::ExtendedIdOutOfRange(0x4000_0000))
        );
        for bad in [
            "",
            "#",
            "123",
            "12#11",
            "1234#11",
            "12345678901#",
            "12G#11",
            "123#1",
            "123#XY",
            "123#11 22",
            "123#R#",
        ] {
            match parse(bad) {
                Err(FrameError::Syntax { text, reason }) => {
                    assert_eq!(text, bad);
                    assert!(!reason.is_empty());
                }
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn display_round_trips() {
        let frames = [
            Frame::data(std_id(0x123), &[0x11, 0x22]).unwrap(),
            Frame::data(ext_id(0x1ABC_DEF0), &[]).unwrap(),
            Frame::remote(std_id(0x7FF), 0).unwrap(),
            Frame::remote(ext_id(0x10), 5).unwrap(),
            Frame::fd(
                std_id(0x1),
                &[0xAA; 12],
                FdFlags {
                    brs: true,
                    esi: false,
                },
            )
            .unwrap(),
            Frame::fd(
                ext_id(0x1),
                &[0x55; 64],
                FdFlags {
                    brs: false,
                    esi: true,
                },
            )
            .unwrap(),
            Frame::error(0x1FFF_FFFF, [1, 2, 3, 4, 5, 6, 7, 8]).unwrap(),
        ];
        for frame in frames {
            let text = frame.to_string();
            assert_eq!(parse(&text).unwrap(), frame, "{text}");
        }
    }

    /// A tiny deterministic generator so the property tests need no extra crates.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn property_round_trip_many_ids_and_lengths() {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        for i in 0..20_000u32 {
            let r = rng.next();
            let id = if i % 2 == 0 {
                CanId::standard((r as u32) & SFF_MAX).unwrap()
            } else {
                CanId::extended((r as u32) & EFF_MAX).unwrap()
            };
            let mut bytes = [0u8; 64];
            for b in bytes.iter_mut() {
                *b = rng.next() as u8;
            }
            let frame = match i % 4 {
                0 => Frame::data(id, &bytes[..(r >> 40) as usize % 9]).unwrap(),
                1 => Frame::remote(id, ((r >> 40) % 9) as u8).unwrap(),
                2 => {
                    let len = FD_LENGTHS[(r >> 40) as usize % FD_LENGTHS.len()];
                    let flags = FdFlags::from_bits((r >> 50) as u8);
                    Frame::fd(id, &bytes[..len], flags).unwrap()
                }
                _ => Frame::error((r as u32) & EFF_MAX, bytes[..8].try_into().unwrap()).unwrap(),
            };
            let text = frame.to_string();
            assert_eq!(parse(&text).unwrap(), frame, "{text}");
            // Lowercase and dotted forms parse to the same frame.
            assert_eq!(parse(&text.to_lowercase()).unwrap(), frame, "{text}");
        }
    }

    #[test]
    fn random_text_never_panics() {
        let alphabet = b"0123456789abcdefABCDEF#R_.rxX \n\x00\xC3";
        let mut rng = XorShift(42);
        for _ in 0..50_000 {
            let len = (rng.next() % 40) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| alphabet[(rng.next() % alphabet.len() as u64) as usize])
                .collect();
            let text = String::from_utf8_lossy(&bytes);
            let _ = parse(&text);
        }
    }
}
