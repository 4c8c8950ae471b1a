//! The can-utils `candump -l` log format: `(1735270496.916858) can0 123#1122334455667788`.
//!
//! [`TraceWriter`] writes it (6 fractional digits, as `candump -l`); [`TraceReader`] reads it back, accepting
//! 6 or 9 fractional digits, interface names padded with spaces, the optional ` R`/` T` direction suffix,
//! classic, extended, RTR, FD and error frames. Every parse error names its line.

use std::io::{self, BufRead, Write};

use crate::frame::Frame;

/// One line of a candump log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceRecord {
    /// Nanoseconds since the Unix epoch.
    pub timestamp_ns: u64,
    pub interface: String,
    pub frame: Frame,
}

/// A candump line that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{source_name}:{line}: {reason}")]
pub struct TraceError {
    /// The file (or other source) name given to the reader.
    pub source_name: String,
    pub line: usize,
    pub reason: String,
}

/// Formats one record as a candump `-l` line (no newline).
pub fn format_record(record: &TraceRecord) -> String {
    let secs = record.timestamp_ns / 1_000_000_000;
    let micros = (record.timestamp_ns % 1_000_000_000) / 1_000;
    format!("({secs}.{micros:06}) {} {}", record.interface, record.frame)
}

/// Parses one candump line (`line_no` only used in the error).
pub fn parse_record(text: &str, source_name: &str, line_no: usize) -> Result<TraceRecord, TraceError> {
    let error = |reason: String| TraceError {
        source_name: source_name.to_string(),
        line: line_no,
        reason,
    };
    let mut fields = text.split_ascii_whitespace();
    let Some(stamp) = fields.next() else {
        return Err(error("empty line".to_string()));
    };
    let timestamp_ns = parse_timestamp(stamp).map_err(|e| error(e.to_string()))?;
    let Some(interface) = fields.next() else {
        return Err(error("missing interface name after the timestamp".to_string()));
    };
    let Some(frame_text) = fields.next() else {
        return Err(error(format!("missing frame after interface `{interface}`")));
    };
    let frame = frame_text.parse::<Frame>().map_err(|e| error(e.to_string()))?;
    match fields.next() {
        None | Some("R") | Some("T") => {}
        Some(other) => {
            return Err(error(format!(
                "unexpected `{other}` after the frame (only ` R` or ` T` may follow)"
            )))
        }
    }
    if let Some(extra) = fields.next() {
        return Err(error(format!("unexpected `{extra}` at the end of the line")));
    }
    Ok(TraceRecord {
        timestamp_ns,
        interface: interface.to_string(),
        frame,
    })
}

/// Why a candump timestamp field is not `(seconds.fraction)`; each variant carries the field as read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum TimestampError {
    #[error("timestamp `{0}` is not `(seconds.fraction)`")]
    NotParenthesised(String),
    #[error("timestamp `{0}` has no fractional part")]
    NoFraction(String),
    #[error("timestamp `{0}` must be decimal digits")]
    NotDecimal(String),
    #[error("timestamp `{stamp}` has {digits} fractional digits (expected 6 or 9)")]
    FractionDigits { stamp: String, digits: usize },
    #[error("timestamp `{0}` is out of range")]
    OutOfRange(String),
}

/// `(seconds.fraction)` with 6 (microseconds) or 9 (nanoseconds) fractional digits.
fn parse_timestamp(stamp: &str) -> Result<u64, TimestampError> {
    let inner = stamp
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| TimestampError::NotParenthesised(stamp.to_string()))?;
    let (secs, frac) = inner
        .split_once('.')
        .ok_or_else(|| TimestampError::NoFraction(stamp.to_string()))?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(secs) || !digits(frac) {
        return Err(TimestampError::NotDecimal(stamp.to_string()));
    }
    let scale = match frac.len() {
        6 => 1_000,
        9 => 1,
        n => {
            return Err(TimestampError::FractionDigits {
                stamp: stamp.to_string(),
                digits: n,
            })
        }
    };
    let overflow = || TimestampError::OutOfRange(stamp.to_string());
    let secs: u64 = secs.parse().map_err(|_| overflow())?;
    let frac: u64 = frac.parse().map_err(|_| overflow())?;
    secs.checked_mul(1_000_000_000)
        .and_then(|ns| ns.checked_add(frac * scale))
        .ok_or_else(overflow)
}

/// Writes candump lines.
pub struct TraceWriter<W: Write> {
    out: W,
}

impl<W: Write> TraceWriter<W> {
    pub fn new(out: W) -> Self {
        TraceWriter { out }
    }

    pub fn write(&mut self, record: &TraceRecord) -> io::Result<()> {
        writeln!(self.out, "{}", format_record(record))
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

/// The numbered text lines of a trace file: what every trace reader (candump here, [`crate::asc`]) reads
/// through. A read error is reported once and ends the lines; a line that is not UTF-8 is an error naming it.
pub struct TraceLines<R: BufRead> {
    input: R,
    source_name: String,
    line: usize,
    done: bool,
    bytes: Vec<u8>,
}

impl<R: BufRead> TraceLines<R> {
    pub fn new(input: R, source_name: impl Into<String>) -> Self {
        TraceLines {
            input,
            source_name: source_name.into(),
            line: 0,
            done: false,
            bytes: Vec::new(),
        }
    }

    /// The number of the line last returned (1-based).
    pub fn line(&self) -> usize {
        self.line
    }

    pub fn source_name(&self) -> &str {
        &self.source_name
    }

    /// An error at the line last returned.
    pub fn error(&self, reason: impl Into<String>) -> TraceError {
        TraceError {
            source_name: self.source_name.clone(),
            line: self.line,
            reason: reason.into(),
        }
    }

    /// The next line, line end included; `None` at the end (or after a read error).
    pub fn next_line(&mut self) -> Option<Result<&str, TraceError>> {
        if self.done {
            return None;
        }
        self.bytes.clear();
        self.line += 1;
        match self.input.read_until(b'\n', &mut self.bytes) {
            Ok(0) => {
                self.done = true;
                return None;
            }
            Ok(_) => {}
            Err(e) => {
                // A failing reader is not retried: report once and stop.
                self.done = true;
                return Some(Err(self.error(format!("read error: {e}"))));
            }
        }
        match std::str::from_utf8(&self.bytes) {
            Ok(text) => Some(Ok(text)),
            Err(_) => Some(Err(TraceError {
                source_name: self.source_name.clone(),
                line: self.line,
                reason: "line is not valid UTF-8".to_string(),
            })),
        }
    }
}

/// Reads candump lines; blank lines and lines not starting with `(` (comments, `DROPCOUNT` notes) are
/// skipped as `canplayer` does.
pub struct TraceReader<R: BufRead> {
    lines: TraceLines<R>,
}

impl<R: BufRead> TraceReader<R> {
    pub fn new(input: R, source_name: impl Into<String>) -> Self {
        TraceReader {
            lines: TraceLines::new(input, source_name),
        }
    }
}

impl<R: BufRead> Iterator for TraceReader<R> {
    type Item = Result<TraceRecord, TraceError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let text = match self.lines.next_line()? {
                Ok(text) => text.trim(),
                Err(e) => return Some(Err(e)),
            };
            if !text.starts_with('(') {
                continue;
            }
            let text = text.to_string();
            return Some(parse_record(&text, self.lines.source_name(), self.lines.line()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(text: &str) -> Vec<Result<TraceRecord, TraceError>> {
        TraceReader::new(text.as_bytes(), "trace.log").collect()
    }

    #[test]
    fn parses_real_candump_lines() {
        let r = parse_record("(1735270496.916858) can0 123#1122334455667788", "t", 1).unwrap();
        assert_eq!(r.timestamp_ns, 1_735_270_496_916_858_000);
        assert_eq!(r.interface, "can0");
        assert_eq!(r.frame, "123#1122334455667788".parse().unwrap());

        let fd = parse_record("(1735270496.916858) vcan1 1ABCDEF0##5AABBCCDDEEFF0011", "t", 1).unwrap();
        assert!(fd.frame.is_fd());
        assert_eq!(fd.frame.to_string(), "1ABCDEF0##5AABBCCDDEEFF0011");

        let nanos = parse_record("(1735270496.916858123) can0 123#R", "t", 1).unwrap();
        assert_eq!(nanos.timestamp_ns, 1_735_270_496_916_858_123);
        assert_eq!(nanos.frame, "123#R".parse().unwrap());

        let err = parse_record("(0.000001) can0 20000004#0004000000000000", "t", 1).unwrap();
        assert!(err.frame.is_error());
        assert_eq!(err.timestamp_ns, 1_000);

        let ext = parse_record("(1.500000) can0 12345678#R2 T", "t", 1).unwrap();
        assert_eq!(ext.frame, "12345678#R2".parse().unwrap());
        let rx = parse_record("(1.500000) can0 123#11 R", "t", 1).unwrap();
        assert_eq!(rx.frame, "123#11".parse().unwrap());
        let len8 = parse_record("(1.500000) can0 123#1122334455667788_E", "t", 1).unwrap();
        assert_eq!(len8.frame, "123#1122334455667788".parse().unwrap());
    }

    #[test]
    fn accepts_padded_interface_names() {
        let right = parse_record("(1.000000) can0   123#11", "t", 1).unwrap();
        let left = parse_record("(1.000000)   can0 123#11", "t", 1).unwrap();
        assert_eq!(right, left);
        assert_eq!(right.interface, "can0");
        let tabs = parse_record("(1.000000)\tvcan0\t123#11", "t", 1).unwrap();
        assert_eq!(tabs.interface, "vcan0");
        let items = read_all("  (1.000000)  can0  123#11  \r\n");
        assert_eq!(items[0].as_ref().unwrap().frame, "123#11".parse().unwrap());
    }

    #[test]
    fn format_writes_six_digits_and_round_trips() {
        let record = TraceRecord {
            timestamp_ns: 1_735_270_496_916_858_999,
            interface: "can0".into(),
            frame: "123#1122334455667788".parse().unwrap(),
        };
        assert_eq!(
            format_record(&record),
            "(1735270496.916858) can0 123#1122334455667788"
        );
        let back = parse_record(&format_record(&record), "t", 1).unwrap();
        assert_eq!(back.timestamp_ns, 1_735_270_496_916_858_000);
        let small = TraceRecord {
            timestamp_ns: 5_000,
            interface: "x".into(),
            frame: "7FF#R".parse().unwrap(),
        };
        assert_eq!(format_record(&small), "(0.000005) x 7FF#R");
    }

    #[test]
    fn writer_and_reader_round_trip() {
        let records: Vec<TraceRecord> = [
            "123#",
            "12345678#DEADBEEF",
            "7FF#R8",
            "123##1AABB",
            "20000100#0000000000000000",
            "001##0",
        ]
        .iter()
        .enumerate()
        .map(|(i, f)| TraceRecord {
            timestamp_ns: 1_700_000_000_000_000_000 + i as u64 * 1_234_000,
            interface: if i % 2 == 0 {
                "can0".into()
            } else {
                "vcan12".into()
            },
            frame: f.parse().unwrap(),
        })
        .collect();
        let mut writer = TraceWriter::new(Vec::new());
        for r in &records {
            writer.write(r).unwrap();
        }
        writer.flush().unwrap();
        let text = String::from_utf8(writer.into_inner()).unwrap();
        let back: Vec<TraceRecord> = read_all(&text).into_iter().map(Result::unwrap).collect();
        assert_eq!(back, records);
    }

    #[test]
    fn reader_skips_comments_and_reports_line_numbers() {
        let text =
            "# comment\n\n(1.000000) can0 123#11\nDROPCOUNT: 3\n(2.000000) can0 123#1\n(3.000000) can0 124#22\n";
        let items = read_all(text);
        assert_eq!(items.len(), 3);
        assert_eq!(items[0].as_ref().unwrap().frame, "123#11".parse().unwrap());
        let err = items[1].as_ref().unwrap_err();
        assert_eq!(err.line, 5);
        assert_eq!(err.source_name, "trace.log");
        assert!(err.to_string().starts_with("trace.log:5: "), "{err}");
        assert!(err.reason.contains("odd number"), "{err}");
        assert_eq!(items[2].as_ref().unwrap().timestamp_ns, 3_000_000_000);
    }

    #[test]
    fn garbage_lines_give_errors_not_panics() {
        let bad = [
            "",
            "(",
            "()",
            "(1) can0 123#",
            "(1.12345) can0 123#",
            "(1.1234567) can0 123#",
            "(x.000000) can0 123#",
            "(1.000000",
            "(99999999999999999999.000000) can0 123#",
            "(18446744073.709552) can0 123#",
            "(1.000000) can0",
            "(1.000000)",
            "(1.000000) can0 123#11 X",
            "(1.000000) can0 123#11 R extra",
            "(1.000000) can0 garbage",
            "(-1.000000) can0 123#",
            "(1.-00000) can0 123#",
            "(1.000000) can0 800#",
        ];
        for (i, line) in bad.iter().enumerate() {
            let err = parse_record(line, "bad.log", i + 1).unwrap_err();
            assert_eq!(err.line, i + 1);
            assert_eq!(err.source_name, "bad.log");
            assert!(!err.reason.is_empty());
        }
    }

    #[test]
    fn invalid_utf8_and_read_errors_are_reported() {
        let bytes: &[u8] = b"(1.000000) can0 123#11\n(\xFF\xFE) can0\n(2.000000) can0 123#22";
        let items: Vec<_> = TraceReader::new(bytes, "bin.log").collect();
        assert_eq!(items.len(), 3);
        assert_eq!(items[1].as_ref().unwrap_err().line, 2);
        assert!(items[2].is_ok());

        struct Failing;
        impl io::Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("disk gone"))
            }
        }
        let items: Vec<_> = TraceReader::new(io::BufReader::new(Failing), "f.log").collect();
        assert_eq!(items.len(), 1);
        assert!(items[0].as_ref().unwrap_err().reason.contains("disk gone"));
    }
}
