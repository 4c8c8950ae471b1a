//! Vector ASC text traces: what CANalyzer/CANoe, python-can's `ASCWriter` and can-utils `log2asc` write.
//!
//! [`AscReader`] reads them into [`TraceRecord`]s (the candump model): the header (`date ...`,
//! `base hex|dec  timestamps absolute|relative`, `[no] internal events logged`, `Begin Triggerblock ...`,
//! `End TriggerBlock`, `//` comments), classic lines (`0.012345 1  3A0             Rx   d 8 01 02 ...`,
//! extended ids with a trailing `x`, remote `r [dlc]`), `ErrorFrame` lines and CAN FD lines in python-can's
//! layout (`CANFD   1 Rx 3A0  [name] brs esi dlc length data ...`). Other events (`Start of measurement`,
//! `Statistic:`, status lines) are skipped; a line that looks like a frame but is not a valid one is an
//! error naming the source and line ([`TraceError`]); the reader never panics on bad input.
//!
//! * Timestamps: seconds since the measurement start, read exactly (no float rounding) to the ns;
//!   `timestamps relative` means each is the delta to the previous event. The record's `timestamp_ns` is
//!   the measurement start (the `Begin Triggerblock` date, else the `date` line, read as UTC; 0 if neither
//!   parses) plus that offset.
//! * Channels: ASC channel `n` (1-based) becomes interface `can<n-1>`; channel 0 becomes `asc0`.
//! * Error frames carry no class in ASC: they are read as [`Frame::Error`] with class 0; written as
//!   `ErrorFrame` whatever their class.
//!
//! [`AscWriter`] writes what python-can's `ASCReader` reads back, in its `ASCWriter` layout: the header
//! with the first record's time (UTC, to the ms) as the measurement start, `Start of measurement`, one
//! line per record with 6 fractional digits, `End TriggerBlock` at [`AscWriter::finish`].

use std::io::{self, BufRead, Write};

use crate::candump::{TraceError, TraceLines, TraceRecord};
use crate::frame::{CanId, FdFlags, Frame, FD_LENGTHS};

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
const MONTH_NAMES: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// `Tue Dec 01 18:23:56.123 2026` (UTC, ms) for ns since the Unix epoch.
pub fn format_date(ns: u64) -> String {
    let secs = (ns / 1_000_000_000) as i64;
    let ms = (ns % 1_000_000_000) / 1_000_000;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{} {} {d:02} {:02}:{:02}:{:02}.{ms:03} {y}",
        WEEKDAYS[days.rem_euclid(7) as usize],
        MONTH_NAMES[(m - 1) as usize],
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

/// Reads an ASC date (`Tue Dec 01 06:23:56.123 pm 2026`, `Mon Jan 27 10:42:06 2020`, German weekday
/// names too: the weekday is not checked) as ns since the Unix epoch, UTC.
pub fn parse_date(text: &str) -> Option<u64> {
    let tokens: Vec<&str> = text.split_whitespace().collect();
    // Weekday, month, day, time, [am|pm], year.
    let (month, day, time, ampm, year) = match tokens.as_slice() {
        [_, month, day, time, ampm, year] => (*month, *day, *time, Some(*ampm), *year),
        [_, month, day, time, year] => (*month, *day, *time, None, *year),
        _ => return None,
    };
    let month_lower = month.to_ascii_lowercase();
    let m = MONTHS
        .iter()
        .position(|name| month_lower.starts_with(name) || (*name == "may" && month_lower == "mai"))?
        as u32
        + 1;
    let d: u32 = day.parse().ok()?;
    let y: i64 = year.parse().ok()?;
    let (hms, frac) = match time.split_once('.') {
        Some((hms, frac)) => (hms, frac),
        None => (time, ""),
    };
    let mut parts = hms.split(':');
    let mut hour: u64 = parts.next()?.parse().ok()?;
    let minute: u64 = parts.next()?.parse().ok()?;
    let second: u64 = parts.next()?.parse().ok()?;
    if parts.next().is_some() || !(1..=31).contains(&d) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    match ampm.map(str::to_ascii_lowercase).as_deref() {
        None => {}
        Some("am") if hour == 12 => hour = 0,
        Some("am") => {}
        Some("pm") if hour < 12 => hour += 12,
        Some("pm") => {}
        Some(_) => return None,
    }
    let frac_ns = fraction_ns(frac)?;
    let days = days_from_civil(y, m, d);
    if days < 0 {
        return None;
    }
    (days as u64 * 86_400 + hour * 3600 + minute * 60 + second)
        .checked_mul(1_000_000_000)?
        .checked_add(frac_ns)
}

/// Nanoseconds of a decimal fraction's digits (`123` is 123 ms); `None` unless all are digits.
fn fraction_ns(digits: &str) -> Option<u64> {
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut ns = 0u64;
    for (i, b) in digits.bytes().take(9).enumerate() {
        ns += u64::from(b - b'0') * 10u64.pow(8 - i as u32);
    }
    Some(ns)
}

/// Seconds with an optional fraction (`12.345678`) as ns, exactly; `None` if it is not such a number.
fn parse_seconds(text: &str) -> Option<u64> {
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: u64 = int.parse().ok()?;
    secs.checked_mul(1_000_000_000)?.checked_add(fraction_ns(frac)?)
}

/// Reads a Vector ASC trace (see the module documentation).
pub struct AscReader<R: BufRead> {
    lines: TraceLines<R>,
    base: u32,
    relative: bool,
    start_ns: u64,
    /// The previous event's offset, for relative timestamps.
    last_ns: u64,
}

impl<R: BufRead> AscReader<R> {
    pub fn new(input: R, source_name: impl Into<String>) -> Self {
        AscReader {
            lines: TraceLines::new(input, source_name),
            base: 16,
            relative: false,
            start_ns: 0,
            last_ns: 0,
        }
    }

    /// The measurement start read so far (ns since the Unix epoch; 0 if the header has no date).
    pub fn start_ns(&self) -> u64 {
        self.start_ns
    }

    fn error(&self, reason: impl Into<String>) -> TraceError {
        self.lines.error(reason)
    }

    /// One line: `Ok(None)` for header, comment and event lines.
    fn parse_line(&mut self, text: &str) -> Result<Option<TraceRecord>, TraceError> {
        let text = text.trim();
        if text.is_empty() || text.starts_with("//") {
            return Ok(None);
        }
        let lower = text.to_ascii_lowercase();
        let mut tokens = text.split_whitespace();
        let Some(first) = tokens.next() else {
            return Ok(None);
        };
        let Some(offset) = parse_seconds(first) else {
            return self.header_line(text, &lower).map(|()| None);
        };
        let offset = if self.relative {
            self.last_ns.saturating_add(offset)
        } else {
            offset
        };
        self.last_ns = offset;
        let rest: Vec<&str> = tokens.collect();
        let frame = match rest.as_slice() {
            ["CANFD", channel, dir, more @ ..] => {
                let Ok(channel) = channel.parse::<u32>() else {
                    return Ok(None);
                };
                if !is_direction(dir) {
                    return Ok(None);
                }
                let frame = self.fd_frame(more)?;
                (channel, frame)
            }
            [channel, kind, more @ ..] => {
                let Ok(channel) = channel.parse::<u32>() else {
                    return Ok(None);
                };
                if kind.eq_ignore_ascii_case("errorframe") {
                    (channel, error_frame())
                } else if more.first().is_some_and(|d| is_direction(d)) {
                    (channel, self.classic_frame(kind, &more[1..])?)
                } else {
                    return Ok(None);
                }
            }
            _ => return Ok(None),
        };
        let (channel, frame) = frame;
        Ok(Some(TraceRecord {
            timestamp_ns: self.start_ns.saturating_add(offset),
            interface: if channel == 0 {
                "asc0".to_string()
            } else {
                format!("can{}", channel - 1)
            },
            frame,
        }))
    }

    fn header_line(&mut self, text: &str, lower: &str) -> Result<(), TraceError> {
        if lower.starts_with("date ") {
            if let Some(ns) = parse_date(&text["date ".len()..]) {
                if self.start_ns == 0 {
                    self.start_ns = ns;
                }
            }
            return Ok(());
        }
        if lower.starts_with("begin triggerblock") {
            if let Some(ns) = parse_date(&text["begin triggerblock".len()..]) {
                self.start_ns = ns;
            }
            return Ok(());
        }
        if lower.starts_with("end triggerblock") || lower.ends_with("internal events logged") {
            return Ok(());
        }
        if let Some(base) = lower.strip_prefix("base ") {
            let mut words = base.split_whitespace();
            self.base = match words.next() {
                Some("hex") => 16,
                Some("dec") => 10,
                other => return Err(self.error(format!("unknown base `{}`", other.unwrap_or("")))),
            };
            match (words.next(), words.next()) {
                (None, _) => {}
                (Some("timestamps"), Some("absolute")) => self.relative = false,
                (Some("timestamps"), Some("relative")) => self.relative = true,
                _ => return Err(self.error(format!("unknown timestamp mode in `{text}`"))),
            }
            return Ok(());
        }
        Err(self.error(format!("not an ASC line: `{text}`")))
    }

    fn number(&self, text: &str, what: &str) -> Result<u32, TraceError> {
        u32::from_str_radix(text, self.base).map_err(|_| {
            let base = if self.base == 16 { "hex" } else { "decimal" };
            self.error(format!("{what} `{text}` is not a {base} number"))
        })
    }

    fn id(&self, text: &str) -> Result<CanId, TraceError> {
        let (digits, extended) = match text.strip_suffix(['x', 'X']) {
            Some(digits) => (digits, true),
            None => (text, false),
        };
        let raw = self.number(digits, "identifier")?;
        let id = if extended {
            CanId::extended(raw)
        } else {
            CanId::standard(raw)
        };
        id.map_err(|e| self.error(e.to_string()))
    }

    fn bytes(&self, tokens: &[&str], count: usize) -> Result<Vec<u8>, TraceError> {
        if tokens.len() < count {
            return Err(self.error(format!("{count} data bytes announced, {} present", tokens.len())));
        }
        tokens[..count]
            .iter()
            .map(|t| {
                let value = self.number(t, "data byte")?;
                u8::try_from(value).map_err(|_| self.error(format!("data byte `{t}` is above 255")))
            })
            .collect()
    }

    /// `id Rx d dlc bytes...` or `id Rx r [dlc]` (the direction already checked).
    fn classic_frame(&self, id: &str, after_dir: &[&str]) -> Result<Frame, TraceError> {
        let id = self.id(id)?;
        match after_dir {
            [kind, rest @ ..] if kind.eq_ignore_ascii_case("r") => {
                let dlc = rest
                    .first()
                    .and_then(|t| u8::from_str_radix(t, self.base).ok())
                    .unwrap_or(0);
                Frame::remote(id, dlc.min(8)).map_err(|e| self.error(e.to_string()))
            }
            [kind, dlc, rest @ ..] if kind.eq_ignore_ascii_case("d") => {
                let dlc = self.number(dlc, "DLC")?;
                if dlc > 15 {
                    return Err(self.error(format!("DLC {dlc} is above 15")));
                }
                let data = self.bytes(rest, dlc.min(8) as usize)?;
                Frame::data(id, &data).map_err(|e| self.error(e.to_string()))
            }
            _ => Err(self.error("expected `d <dlc> <data>` or `r` after the direction")),
        }
    }

    /// After `CANFD channel dir`: `ErrorFrame`, or `id [name] brs esi dlc length data...`.
    fn fd_frame(&self, tokens: &[&str]) -> Result<Frame, TraceError> {
        let Some(first) = tokens.first() else {
            return Err(self.error("CANFD line ends after the direction"));
        };
        if first.eq_ignore_ascii_case("errorframe") {
            return Ok(error_frame());
        }
        let id = self.id(first)?;
        let mut rest = &tokens[1..];
        // A symbolic name may stand between the id and BRS.
        if rest.first().is_some_and(|t| *t != "0" && *t != "1") {
            rest = &rest[1..];
        }
        let [brs, esi, dlc, length, data @ ..] = rest else {
            return Err(self.error("CANFD line needs `brs esi dlc length` after the id"));
        };
        let flag = |t: &str, what: &str| match t {
            "0" => Ok(false),
            "1" => Ok(true),
            _ => Err(self.error(format!("{what} `{t}` is not 0 or 1"))),
        };
        let flags = FdFlags {
            brs: flag(brs, "BRS")?,
            esi: flag(esi, "ESI")?,
        };
        let dlc = self.number(dlc, "DLC")?;
        if dlc > 15 {
            return Err(self.error(format!("DLC {dlc} is above 15")));
        }
        let length: usize = length
            .parse()
            .map_err(|_| self.error(format!("data length `{length}` is not a number")))?;
        if length == 0 && dlc > 0 {
            // python-can's reading: no data with a DLC is a remote request.
            return Frame::remote(id, (dlc as u8).min(8)).map_err(|e| self.error(e.to_string()));
        }
        if !FD_LENGTHS.contains(&length) {
            return Err(self.error(format!("data length {length} is not a CAN FD length")));
        }
        if FD_LENGTHS[dlc as usize] != length {
            return Err(self.error(format!(
                "DLC {dlc} means {} bytes, the line says {length}",
                FD_LENGTHS[dlc as usize]
            )));
        }
        let data = self.bytes(data, length)?;
        Frame::fd(id, &data, flags).map_err(|e| self.error(e.to_string()))
    }
}

fn is_direction(token: &str) -> bool {
    matches!(token, "Rx" | "Tx" | "TxRq" | "rx" | "tx")
}

fn error_frame() -> Frame {
    Frame::Error {
        class: 0,
        data: [0; 8],
    }
}

impl<R: BufRead> Iterator for AscReader<R> {
    type Item = Result<TraceRecord, TraceError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let text = match self.lines.next_line()? {
                Ok(text) => text.to_string(),
                Err(e) => return Some(Err(e)),
            };
            match self.parse_line(&text) {
                Ok(Some(record)) => return Some(Ok(record)),
                Ok(None) => continue,
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

/// The ASC channel of an interface name: `can<n>` (or any name ending in digits) is `n + 1`, `asc<n>`
/// is `n`, anything else 1.
fn channel_of(interface: &str) -> u32 {
    let digits = interface.trim_start_matches(|c: char| !c.is_ascii_digit());
    let Ok(n) = digits.parse::<u32>() else {
        return 1;
    };
    if interface.starts_with("asc") {
        n
    } else {
        n.saturating_add(1)
    }
}

/// Writes a Vector ASC trace in python-can's `ASCWriter` layout (see the module documentation).
pub struct AscWriter<W: Write> {
    out: W,
    /// Measurement start (the first record's time, to the ms), once the header is written.
    started: Option<u64>,
}

impl<W: Write> AscWriter<W> {
    pub fn new(out: W) -> Self {
        AscWriter { out, started: None }
    }

    fn header(&mut self, start_ns: u64) -> io::Result<u64> {
        if let Some(started) = self.started {
            return Ok(started);
        }
        let start = start_ns - start_ns % 1_000_000;
        let date = format_date(start);
        write!(
            self.out,
            "date {date}\nbase hex  timestamps absolute\ninternal events logged\nBegin Triggerblock {date}\n"
        )?;
        writeln!(self.out, "{} Start of measurement", format_offset(0))?;
        self.started = Some(start);
        Ok(start)
    }

    pub fn write(&mut self, record: &TraceRecord) -> io::Result<()> {
        let started = self.header(record.timestamp_ns)?;
        let offset = format_offset(record.timestamp_ns.saturating_sub(started));
        let channel = channel_of(&record.interface);
        let line = match &record.frame {
            Frame::Error { .. } => format!("{channel}  ErrorFrame"),
            Frame::Data { id, data } => {
                let bytes = hex_bytes(data.as_slice());
                format!(
                    "{channel}  {:<15} {:<4} d {:x} {bytes}",
                    asc_id(*id),
                    "Rx",
                    data.as_slice().len()
                )
            }
            Frame::Remote { id, dlc } => format!("{channel}  {:<15} {:<4} r {dlc:x} ", asc_id(*id), "Rx"),
            Frame::Fd { id, flags, data } => {
                let len = data.as_slice().len();
                let dlc = FD_LENGTHS.iter().position(|&l| l == len).unwrap_or(15);
                let mut bits = 1u32 << 12;
                if flags.brs {
                    bits |= 1 << 13;
                }
                if flags.esi {
                    bits |= 1 << 14;
                }
                format!(
                    "CANFD {channel:>3} {:<4} {:>8}  {:>32} {} {} {dlc:x} {len:>2} {} {:>8} {:>4} {bits:>8X} {:>8} {:>8} {:>8} {:>8} {:>8}",
                    "Rx",
                    asc_id(*id),
                    "",
                    u8::from(flags.brs),
                    u8::from(flags.esi),
                    hex_bytes(data.as_slice()),
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0
                )
            }
        };
        writeln!(self.out, "{offset} {line}")
    }

    /// Writes `End TriggerBlock` (and a header first if nothing was written) and returns the output.
    pub fn finish(mut self) -> io::Result<W> {
        self.header(0)?;
        self.out.write_all(b"End TriggerBlock\n")?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// python-can's `{timestamp: 9.6f}`: a space for the sign, then at least 9 characters right-aligned.
fn format_offset(ns: u64) -> String {
    let text = format!(" {}.{:06}", ns / 1_000_000_000, (ns % 1_000_000_000) / 1_000);
    format!("{text:>9}")
}

fn asc_id(id: CanId) -> String {
    match id {
        CanId::Standard(raw) => format!("{raw:X}"),
        CanId::Extended(raw) => format!("{raw:X}x"),
    }
}

fn hex_bytes(data: &[u8]) -> String {
    data.iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Vec<Result<TraceRecord, TraceError>> {
        AscReader::new(text.as_bytes(), "t.asc").collect()
    }

    fn ok(text: &str) -> Vec<TraceRecord> {
        read(text).into_iter().map(Result::unwrap).collect()
    }

    fn frames(records: &[TraceRecord]) -> Vec<String> {
        records.iter().map(|r| r.frame.to_string()).collect()
    }

    /// The layout python-can's ASCWriter produces (python-can 4.x).
    const PYTHON_CAN: &str = "date Mon Dec 01 18:23:56.123 2025
base hex  timestamps absolute
internal events logged
Begin Triggerblock Mon Dec 01 18:23:56.123 2025
 0.000000 Start of measurement
 0.000456 1  3A0             Rx   d 8 01 02 03 04 05 06 07 08
 0.100000 2  1ABCDEFx        Rx   d 2 AA BB
 0.200000 1  123             Rx   r 3 
 1.500000 1  ErrorFrame
 12.250000 CANFD   1 Rx      1A0                                   1 0 d 32 00 01 02 03 04 05 06 07 08 09 0A 0B 0C 0D 0E 0F 10 11 12 13 14 15 16 17 18 19 1A 1B 1C 1D 1E 1F        0    0     3000        0        0        0        0        0
End TriggerBlock
";

    #[test]
    fn reads_python_can_output() {
        let records = ok(PYTHON_CAN);
        let start = parse_date("Mon Dec 01 18:23:56.123 2025").unwrap();
        assert_eq!(start % 1_000_000_000, 123_000_000);
        assert_eq!(
            frames(&records),
            [
                "3A0#0102030405060708",
                "01ABCDEF#AABB",
                "123#R3",
                "20000000#0000000000000000",
                "1A0##5000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F",
            ]
        );
        assert_eq!(records[0].timestamp_ns, start + 456_000);
        assert_eq!(records[0].interface, "can0");
        assert_eq!(records[1].interface, "can1");
        assert_eq!(records[4].timestamp_ns, start + 12_250_000_000);
    }

    #[test]
    fn reads_canalyzer_style_dec_relative_and_events() {
        let text = "date Wed Jul 11 03:46:22.915 pm 2018
base dec  timestamps relative
no internal events logged
// version 9.0.0
Begin Triggerblock Wed Jul 11 03:46:22.915 pm 2018
   0.000000 Start of measurement
   0.001000 1  Statistic: D 0 R 0 XD 0 XR 0 E 0 O 0 B 0.00%
   0.010000 1  928             Rx   d 2 1 255  Length = 240000 BitCount = 62 ID = 928
   0.005000 CAN 1 Status:chip status error active
   0.002000 CANFD   2 Tx 291  EngineData                 0 1 8 8 10 20 30 40 50 60 70 80
   0.003000 1  291x            Tx   d 0
End TriggerBlock
";
        let records = ok(text);
        assert_eq!(
            frames(&records),
            ["3A0#01FF", "123##60A141E28323C4650", "00000123#"]
        );
        let start = parse_date("Wed Jul 11 15:46:22.915 2018").unwrap();
        assert_eq!(parse_date("Wed Jul 11 03:46:22.915 pm 2018"), Some(start));
        // Relative: each timestamp adds to the previous event's.
        assert_eq!(records[0].timestamp_ns, start + 11_000_000);
        assert_eq!(records[1].timestamp_ns, start + 18_000_000);
        assert_eq!(records[2].timestamp_ns, start + 21_000_000);
        assert_eq!(records[1].interface, "can1");
    }

    #[test]
    fn errors_name_the_source_and_line() {
        let cases = [
            (
                "base hex\n 0.1 1  800             Rx   d 1 00\n",
                2,
                "out of range",
            ),
            (" 0.1 1  100             Rx   d 4 00 01\n", 1, "4 data bytes"),
            (" 0.1 1  100             Rx   d 1 GG\n", 1, "not a hex"),
            (" 0.1 1  100             Rx   d 1 100\n", 1, "above 255"),
            (" 0.1 1  100             Rx   q 1\n", 1, "expected"),
            ("what is this\n", 1, "not an ASC line"),
            ("base oct\n", 1, "unknown base"),
            (" 0.1 CANFD 1 Rx 100 1 0 9 8 00\n", 1, "12 bytes"),
            (" 0.1 CANFD 1 Rx 100 1 2 1 1 00\n", 1, "ESI"),
        ];
        for (text, line, needle) in cases {
            let results = read(text);
            let err = results
                .into_iter()
                .find_map(Result::err)
                .unwrap_or_else(|| panic!("no error for {text:?}"));
            assert_eq!((err.source_name.as_str(), err.line), ("t.asc", line), "{text:?}");
            assert!(err.reason.contains(needle), "{text:?}: {}", err.reason);
        }
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 1u64;
        let alphabet: Vec<char> = " 0123456789.xXrdRxTCANFDErrorFrame\t".chars().collect();
        for _ in 0..2000 {
            let mut line = String::new();
            for _ in 0..(seed % 40) {
                seed = crate::fault::splitmix64(seed);
                line.push(alphabet[(seed % alphabet.len() as u64) as usize]);
            }
            seed = crate::fault::splitmix64(seed);
            let _ = read(&line);
            let _ = read(&format!(" 0.5 {line}"));
            let _ = read(&format!(" 0.5 CANFD 1 Rx {line}"));
        }
    }

    #[test]
    fn writes_python_can_layout_and_reads_it_back() {
        let start = parse_date("Mon Dec 01 18:23:56.123 2025").unwrap() + 456_789;
        let records = vec![
            TraceRecord {
                timestamp_ns: start,
                interface: "can0".into(),
                frame: "3A0#0102030405060708".parse().unwrap(),
            },
            TraceRecord {
                timestamp_ns: start + 1_000_000,
                interface: "can1".into(),
                frame: "01ABCDEF#AABB".parse().unwrap(),
            },
            TraceRecord {
                timestamp_ns: start + 2_000_000,
                interface: "can0".into(),
                frame: "123#R3".parse().unwrap(),
            },
            TraceRecord {
                timestamp_ns: start + 3_000_000,
                interface: "can0".into(),
                frame: Frame::Error {
                    class: 0,
                    data: [0; 8],
                },
            },
            TraceRecord {
                timestamp_ns: start + 12_000_000_000,
                interface: "can0".into(),
                frame: "1A0##3000102030405060708090A0B".parse().unwrap(),
            },
        ];
        let mut writer = AscWriter::new(Vec::new());
        for r in &records {
            writer.write(r).unwrap();
        }
        let text = String::from_utf8(writer.finish().unwrap()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "date Mon Dec 01 18:23:56.123 2025");
        assert_eq!(lines[1], "base hex  timestamps absolute");
        assert_eq!(lines[2], "internal events logged");
        assert_eq!(lines[3], "Begin Triggerblock Mon Dec 01 18:23:56.123 2025");
        assert_eq!(lines[4], " 0.000000 Start of measurement");
        assert_eq!(
            lines[5],
            " 0.000456 1  3A0             Rx   d 8 01 02 03 04 05 06 07 08"
        );
        assert_eq!(lines[6], " 0.001456 2  1ABCDEFx        Rx   d 2 AA BB");
        assert_eq!(lines[7], " 0.002456 1  123             Rx   r 3 ");
        assert_eq!(lines[8], " 0.003456 1  ErrorFrame");
        assert!(
            lines[9].starts_with(" 12.000456 CANFD   1 Rx        1A0  "),
            "{}",
            lines[9]
        );
        assert!(lines[9].contains(" 1 1 9 12 00 01 02 03 04 05 06 07 08 09 0A 0B "));
        assert_eq!(lines[10], "End TriggerBlock");
        // Read back: the same records, timestamps to the µs.
        let back = ok(&text);
        let truncated: Vec<TraceRecord> = records
            .iter()
            .map(|r| TraceRecord {
                timestamp_ns: r.timestamp_ns - r.timestamp_ns % 1_000,
                ..r.clone()
            })
            .collect();
        assert_eq!(back, truncated);
    }

    #[test]
    fn dates_round_trip() {
        for ns in [
            0u64,
            951_782_400_123_000_000,
            1_764_613_436_999_000_000,
            4_102_444_800_000_000_000,
        ] {
            assert_eq!(parse_date(&format_date(ns)), Some(ns), "{}", format_date(ns));
        }
        assert_eq!(format_date(0), "Thu Jan 01 00:00:00.000 1970");
        assert_eq!(
            parse_date("Sam Sep 30 15:06:13.191 2017"),
            parse_date("Sat Sep 30 15:06:13.191 2017")
        );
        assert!(parse_date("Mon Foo 01 00:00:00 2020").is_none());
        assert!(parse_date("Mon Jan 01 25:00:00 2020").is_none());
    }
}
