//! The socketcand text protocol without any I/O: splitting a byte stream into `< … >` messages
//! ([`Splitter`]), parsing a client's message into a [`Command`] ([`parse_command`]), and formatting what
//! the server sends (frames, error frames, statistics, replies).
//!
//! The wire format follows linux-can/socketcand (`doc/protocol.md` and the `sscanf`/`sprintf` calls of
//! `src/state_*.c`) and what python-can's `socketcand` interface parses:
//!
//! * messages are `< … >` with no other framing; one read may carry several, one message may span reads;
//! * identifiers are hex: 1-3 digits are a standard (11-bit) id, exactly 8 digits an extended (29-bit) id;
//!   4-7 digits are accepted only for values up to 0x7FF (standard), as socketcand would read them;
//! * a DLC is decimal 0-8 and must equal the number of data bytes that follow (each 1-2 hex digits);
//! * intervals are `secs usecs` (decimal, `usecs` below 1 000 000);
//! * raw-mode frames are `< frame ID SECS.USECS DATA >` with the data as padded upper-case hex without
//!   spaces, BCM-mode frames put `%02X ` per byte (a trailing space, then ` >`), error frames are
//!   `< error CLASS SECS.USECS >` with the class as `%03X`.
//!
//! Tokens are separated by any ASCII whitespace, so `<rawmode>` and `<  send 123 0  >` are accepted
//! (socketcand itself compares some commands byte for byte).

use std::fmt::Write as _;
use std::time::Duration;

use vcan::{CanId, Frame};

/// The greeting the server sends when a client connects.
pub const HI: &str = "< hi >";
/// The positive reply to `open` and to mode switches.
pub const OK: &str = "< ok >";
/// The reply to `< echo >`.
pub const ECHO: &str = "< echo >";
/// The reply to an `open` of a bus the server does not serve (then the server closes the connection).
pub const COULD_NOT_OPEN_BUS: &str = "< error could not open bus >";
/// A message that has not ended after this many bytes is dropped as malformed.
pub const MAX_MESSAGE: usize = 4096;

/// Why client input was not a valid command. The text goes back to the client in `< error … >`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("text outside `< >`: `{0}`")]
    Garbage(String),
    #[error("message `{0}` has no closing `>` before the next `<`")]
    Unterminated(String),
    #[error("message longer than {MAX_MESSAGE} bytes without a closing `>`")]
    TooLong,
    #[error("message is not ASCII text")]
    NotText,
    #[error("empty message `< >`")]
    Empty,
    #[error("unknown command `{0}`")]
    UnknownCommand(String),
    #[error("`{command}`: missing {what}")]
    Missing {
        command: &'static str,
        what: &'static str,
    },
    #[error("`{command}`: unexpected `{extra}` after the last argument")]
    TooMany { command: &'static str, extra: String },
    #[error("bad CAN id `{text}`: {reason}")]
    BadId { text: String, reason: String },
    #[error("bad {what} `{text}`: expected a decimal number")]
    BadNumber { what: &'static str, text: String },
    #[error("bad data byte `{0}`: expected 1-2 hex digits")]
    BadByte(String),
    #[error("dlc {0} is out of range (classic CAN: 0-8)")]
    DlcTooLarge(u64),
    #[error("dlc {dlc} but {bytes} data bytes")]
    DlcMismatch { dlc: u8, bytes: usize },
    #[error("usecs {0} is out of range (0-999999)")]
    BadUsecs(u64),
    #[error("{0} is not supported by this server")]
    Unsupported(String),
}

/// A socketcand mode, switched with `< rawmode >`, `< bcmmode >`, `< controlmode >`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Raw,
    Bcm,
    Control,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Raw => "rawmode",
            Mode::Bcm => "bcmmode",
            Mode::Control => "controlmode",
        }
    }
}

/// One parsed client message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `< open BUS >`.
    Open(String),
    /// `< rawmode >`, `< bcmmode >`, `< controlmode >`.
    Mode(Mode),
    /// `< echo >`.
    Echo,
    /// `< send ID DLC DATA… >`: one frame now.
    Send(Frame),
    /// `< add SECS USECS ID DLC DATA… >`: a cyclic send job (interval zero: sent once).
    Add { interval: Duration, frame: Frame },
    /// `< update ID DLC DATA… >`: new content for a send job, timers untouched.
    Update(Frame),
    /// `< delete ID >`: ends a send job.
    Delete(CanId),
    /// `< filter SECS USECS ID DLC MASK… >`: report frames of `id` whose masked bytes changed.
    Filter {
        throttle: Duration,
        id: CanId,
        mask: Vec<u8>,
    },
    /// `< subscribe SECS USECS ID >`: report every frame of `id`.
    Subscribe { throttle: Duration, id: CanId },
    /// `< unsubscribe ID >`: ends a filter or subscription.
    Unsubscribe(CanId),
    /// `< statistics MS >`: a `< stat … >` every `MS` milliseconds (0 stops them).
    Statistics(u32),
}

/// Splits a byte stream into `< … >` messages.
///
/// Whitespace between messages is skipped; other text outside a message, a message cut off by the next
/// `<`, and a message longer than [`MAX_MESSAGE`] come out as errors, after which splitting goes on.
#[derive(Debug, Default)]
pub struct Splitter {
    buf: Vec<u8>,
}

impl Splitter {
    pub fn new() -> Splitter {
        Splitter::default()
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received but not yet part of a complete message.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The next complete message (`< … >` included), an error for malformed input, or `None` until more
    /// bytes arrive.
    pub fn next_message(&mut self) -> Option<Result<String, ProtocolError>> {
        let skip = self
            .buf
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .unwrap_or(self.buf.len());
        self.buf.drain(..skip);
        let first = *self.buf.first()?;
        if first != b'<' {
            let end = self.buf.iter().position(|&b| b == b'<').unwrap_or(self.buf.len());
            let junk: Vec<u8> = self.buf.drain(..end).collect();
            return Some(Err(ProtocolError::Garbage(shown(&junk))));
        }
        match self.buf[1..].iter().position(|&b| b == b'>' || b == b'<') {
            Some(i) if self.buf[i + 1] == b'>' => {
                let message: Vec<u8> = self.buf.drain(..i + 2).collect();
                Some(match String::from_utf8(message) {
                    Ok(text) if text.is_ascii() => Ok(text),
                    _ => Err(ProtocolError::NotText),
                })
            }
            Some(i) => {
                let cut: Vec<u8> = self.buf.drain(..i + 1).collect();
                Some(Err(ProtocolError::Unterminated(shown(&cut))))
            }
            None if self.buf.len() > MAX_MESSAGE => {
                self.buf.clear();
                Some(Err(ProtocolError::TooLong))
            }
            None => None,
        }
    }
}

/// Client text as it may appear in an error reply: printable ASCII, at most 40 characters.
fn shown(bytes: &[u8]) -> String {
    let text: String = String::from_utf8_lossy(bytes)
        .chars()
        .map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' })
        .collect();
    let text = text.trim();
    if text.chars().count() > 40 {
        let head: String = text.chars().take(40).collect();
        format!("{head}…")
    } else {
        text.to_string()
    }
}

/// Parses one message as [`Splitter::next_message`] returns it (`< … >`).
pub fn parse_command(message: &str) -> Result<Command, ProtocolError> {
    let inner = message
        .strip_prefix('<')
        .and_then(|m| m.strip_suffix('>'))
        .ok_or_else(|| ProtocolError::Garbage(shown(message.as_bytes())))?;
    let mut args = Args(inner.split_ascii_whitespace());
    let name = args.0.next().ok_or(ProtocolError::Empty)?;
    let command = match name {
        "open" => Command::Open(args.next("open", "the bus name")?.to_string()),
        "rawmode" => Command::Mode(Mode::Raw),
        "bcmmode" => Command::Mode(Mode::Bcm),
        "controlmode" => Command::Mode(Mode::Control),
        "echo" => Command::Echo,
        "send" => Command::Send(frame(&mut args, "send")?),
        "add" => {
            let interval = interval(&mut args, "add")?;
            Command::Add {
                interval,
                frame: frame(&mut args, "add")?,
            }
        }
        "update" => Command::Update(frame(&mut args, "update")?),
        "delete" => Command::Delete(id(args.next("delete", "the CAN id")?)?),
        "filter" => {
            let throttle = interval(&mut args, "filter")?;
            let id = id(args.next("filter", "the CAN id")?)?;
            let mask = data(&mut args, "filter")?;
            Command::Filter { throttle, id, mask }
        }
        "subscribe" => {
            let throttle = interval(&mut args, "subscribe")?;
            Command::Subscribe {
                throttle,
                id: id(args.next("subscribe", "the CAN id")?)?,
            }
        }
        "unsubscribe" => Command::Unsubscribe(id(args.next("unsubscribe", "the CAN id")?)?),
        "statistics" => {
            let text = args.next("statistics", "the interval in ms")?;
            Command::Statistics(number(text, "statistics interval")?)
        }
        "isotpmode" | "isotpconf" | "sendpdu" => {
            return Err(ProtocolError::Unsupported(format!("ISO-TP (`{name}`)")))
        }
        "muxfilter" => return Err(ProtocolError::Unsupported("`muxfilter`".into())),
        other => {
            // `< can0 B … >` / `< can0 C … >`: bit timing and control modes of a real interface.
            if let Some("B" | "C") = args.0.next() {
                return Err(ProtocolError::Unsupported(format!(
                    "bus configuration (`{} {}`) on a virtual bus",
                    shown(other.as_bytes()),
                    inner.split_ascii_whitespace().nth(1).unwrap_or_default()
                )));
            }
            return Err(ProtocolError::UnknownCommand(shown(other.as_bytes())));
        }
    };
    args.end(command.name())?;
    Ok(command)
}

impl Command {
    /// The command word (`send`, `rawmode`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Command::Open(_) => "open",
            Command::Mode(mode) => mode.name(),
            Command::Echo => "echo",
            Command::Send(_) => "send",
            Command::Add { .. } => "add",
            Command::Update(_) => "update",
            Command::Delete(_) => "delete",
            Command::Filter { .. } => "filter",
            Command::Subscribe { .. } => "subscribe",
            Command::Unsubscribe(_) => "unsubscribe",
            Command::Statistics(_) => "statistics",
        }
    }
}

struct Args<'a>(std::str::SplitAsciiWhitespace<'a>);

impl<'a> Args<'a> {
    fn next(&mut self, command: &'static str, what: &'static str) -> Result<&'a str, ProtocolError> {
        self.0.next().ok_or(ProtocolError::Missing { command, what })
    }

    fn end(&mut self, command: &'static str) -> Result<(), ProtocolError> {
        match self.0.next() {
            None => Ok(()),
            Some(extra) => Err(ProtocolError::TooMany {
                command,
                extra: shown(extra.as_bytes()),
            }),
        }
    }
}

/// A CAN id in socketcand's notation (see the module doc).
pub fn id(text: &str) -> Result<CanId, ProtocolError> {
    let bad = |reason: &str| ProtocolError::BadId {
        text: shown(text.as_bytes()),
        reason: reason.to_string(),
    };
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad("expected hex digits"));
    }
    if text.len() > 8 {
        return Err(bad("more than 8 hex digits"));
    }
    let value = u32::from_str_radix(text, 16).map_err(|_| bad("expected hex digits"))?;
    if text.len() == 8 {
        CanId::extended(value).map_err(|_| bad("extended ids are at most 1FFFFFFF"))
    } else {
        CanId::standard(value).map_err(|_| {
            bad("standard ids (1-3 hex digits) are at most 7FF; write extended ids with 8 hex digits")
        })
    }
}

fn number<T: std::str::FromStr>(text: &str, what: &'static str) -> Result<T, ProtocolError> {
    let bad = || ProtocolError::BadNumber {
        what,
        text: shown(text.as_bytes()),
    };
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    text.parse().map_err(|_| bad())
}

fn interval(args: &mut Args<'_>, command: &'static str) -> Result<Duration, ProtocolError> {
    let secs: u64 = number(args.next(command, "the interval seconds")?, "seconds")?;
    let usecs: u64 = number(args.next(command, "the interval microseconds")?, "microseconds")?;
    if usecs >= 1_000_000 {
        return Err(ProtocolError::BadUsecs(usecs));
    }
    Ok(Duration::from_secs(secs) + Duration::from_micros(usecs))
}

/// `DLC DATA…` to the end of the message.
fn data(args: &mut Args<'_>, command: &'static str) -> Result<Vec<u8>, ProtocolError> {
    let dlc: u64 = number(args.next(command, "the dlc")?, "dlc")?;
    if dlc > 8 {
        return Err(ProtocolError::DlcTooLarge(dlc));
    }
    let mut bytes = Vec::with_capacity(8);
    for text in args.0.by_ref() {
        if text.is_empty() || text.len() > 2 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ProtocolError::BadByte(shown(text.as_bytes())));
        }
        let byte = u8::from_str_radix(text, 16).map_err(|_| ProtocolError::BadByte(text.to_string()))?;
        bytes.push(byte);
    }
    // `dlc` is at most 8 here.
    let dlc = dlc as u8;
    if bytes.len() != usize::from(dlc) {
        return Err(ProtocolError::DlcMismatch {
            dlc,
            bytes: bytes.len(),
        });
    }
    Ok(bytes)
}

/// `ID DLC DATA…` to the end of the message, as a classic data frame.
fn frame(args: &mut Args<'_>, command: &'static str) -> Result<Frame, ProtocolError> {
    let id = id(args.next(command, "the CAN id")?)?;
    let bytes = data(args, command)?;
    Frame::data(id, &bytes).map_err(|e| ProtocolError::Unsupported(e.to_string()))
}

/// `SECS.USECS` of a hub timestamp (nanoseconds since the Unix epoch).
pub fn timestamp(timestamp_ns: u64) -> String {
    format!(
        "{}.{:06}",
        timestamp_ns / 1_000_000_000,
        (timestamp_ns % 1_000_000_000) / 1_000
    )
}

/// A received frame in raw mode: `< frame 123 1700000000.123456 1122 >`.
pub fn raw_frame(id: CanId, data: &[u8], timestamp_ns: u64) -> String {
    let mut out = format!("< frame {id} {} ", timestamp(timestamp_ns));
    for b in data {
        let _ = write!(out, "{b:02X}");
    }
    out.push_str(" >");
    out
}

/// A received frame in BCM mode: `< frame 123 1700000000.123456 11 22  >`.
pub fn bcm_frame(id: CanId, data: &[u8], timestamp_ns: u64) -> String {
    let mut out = format!("< frame {id} {} ", timestamp(timestamp_ns));
    for b in data {
        let _ = write!(out, "{b:02X} ");
    }
    out.push_str(" >");
    out
}

/// A received error frame in raw mode: `< error 004 1700000000.123456 >` (class without `CAN_ERR_FLAG`).
pub fn raw_error(class: u32, timestamp_ns: u64) -> String {
    format!("< error {class:03X} {} >", timestamp(timestamp_ns))
}

/// A statistics report: `< stat rbytes rpackets tbytes tpackets >`.
pub fn stat(rbytes: u64, rpackets: u64, tbytes: u64, tpackets: u64) -> String {
    format!("< stat {rbytes} {rpackets} {tbytes} {tpackets} >")
}

/// An error reply `< error … >`; `<` and `>` in `text` are replaced so the reply stays one message.
pub fn error_reply(text: &str) -> String {
    let text: String = text
        .chars()
        .map(|c| match c {
            '<' => '(',
            '>' => ')',
            c if c.is_control() => ' ',
            c => c,
        })
        .collect();
    format!("< error {text} >")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(splitter: &mut Splitter) -> Vec<Result<String, ProtocolError>> {
        std::iter::from_fn(|| splitter.next_message()).collect()
    }

    fn std_id(id: u32) -> CanId {
        CanId::standard(id).unwrap()
    }

    #[test]
    fn one_read_may_carry_several_messages() {
        let mut s = Splitter::new();
        s.push(b"< open can0 >< rawmode >\n  < echo >");
        assert_eq!(
            all(&mut s),
            vec![
                Ok("< open can0 >".to_string()),
                Ok("< rawmode >".to_string()),
                Ok("< echo >".to_string())
            ]
        );
        assert_eq!(s.pending(), 0);
    }

    #[test]
    fn a_message_may_span_reads() {
        let mut s = Splitter::new();
        s.push(b"< send 1");
        assert_eq!(s.next_message(), None);
        s.push(b"23 2 a");
        assert_eq!(s.next_message(), None);
        s.push(b"a bb >< ec");
        assert_eq!(s.next_message(), Some(Ok("< send 123 2 aa bb >".to_string())));
        assert_eq!(s.next_message(), None);
        s.push(b"ho >");
        assert_eq!(s.next_message(), Some(Ok("< echo >".to_string())));
    }

    #[test]
    fn garbage_and_cut_messages_are_errors_and_splitting_goes_on() {
        let mut s = Splitter::new();
        s.push(b"hello < open x < echo > trailing");
        assert_eq!(
            all(&mut s),
            vec![
                Err(ProtocolError::Garbage("hello".into())),
                Err(ProtocolError::Unterminated("< open x".into())),
                Ok("< echo >".to_string()),
                Err(ProtocolError::Garbage("trailing".into())),
            ]
        );
        s.push(b"< \xff >");
        assert_eq!(s.next_message(), Some(Err(ProtocolError::NotText)));
        s.push(&[b'<'; 1]);
        s.push(&vec![b'a'; MAX_MESSAGE + 1]);
        assert_eq!(s.next_message(), Some(Err(ProtocolError::TooLong)));
        s.push(b"< echo >");
        assert_eq!(s.next_message(), Some(Ok("< echo >".to_string())));
    }

    #[test]
    fn whitespace_between_tokens_is_free() {
        assert_eq!(parse_command("<rawmode>"), Ok(Command::Mode(Mode::Raw)));
        assert_eq!(
            parse_command("<  send\t123  0 >"),
            Ok(Command::Send(Frame::data(std_id(0x123), &[]).unwrap()))
        );
        assert_eq!(parse_command("< >"), Err(ProtocolError::Empty));
    }

    #[test]
    fn send_parses_standard_and_extended_ids() {
        assert_eq!(
            parse_command("< send 1AAAAAAA 2 1 f1 >"),
            Ok(Command::Send(
                Frame::data(CanId::extended(0x1AAA_AAAA).unwrap(), &[0x01, 0xF1]).unwrap()
            ))
        );
        assert_eq!(
            parse_command("< send 00000123 1 FF >"),
            Ok(Command::Send(
                Frame::data(CanId::extended(0x123).unwrap(), &[0xFF]).unwrap()
            ))
        );
        assert_eq!(
            parse_command("< send 7 0 >"),
            Ok(Command::Send(Frame::data(std_id(7), &[]).unwrap()))
        );
    }

    #[test]
    fn bad_ids_are_refused_with_the_reason() {
        for (text, reason) in [
            ("< send 123456789 0 >", "more than 8 hex digits"),
            ("< send 800 0 >", "at most 7FF"),
            ("< send 12345 0 >", "at most 7FF"),
            ("< send 3FFFFFFF 0 >", "at most 1FFFFFFF"),
            ("< send 12g 0 >", "hex digits"),
            ("< delete -1 >", "hex digits"),
        ] {
            match parse_command(text) {
                Err(ProtocolError::BadId { reason: r, .. }) => {
                    assert!(r.contains(reason), "{text}: {r}")
                }
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn bad_data_is_refused() {
        assert_eq!(
            parse_command("< send 123 2 aa >"),
            Err(ProtocolError::DlcMismatch { dlc: 2, bytes: 1 })
        );
        assert_eq!(
            parse_command("< send 123 1 aa bb >"),
            Err(ProtocolError::DlcMismatch { dlc: 1, bytes: 2 })
        );
        assert_eq!(
            parse_command("< send 123 9 1 2 3 4 5 6 7 8 9 >"),
            Err(ProtocolError::DlcTooLarge(9))
        );
        assert_eq!(
            parse_command("< send 123 1 zz >"),
            Err(ProtocolError::BadByte("zz".into()))
        );
        assert_eq!(
            parse_command("< send 123 1 123 >"),
            Err(ProtocolError::BadByte("123".into()))
        );
        assert_eq!(
            parse_command("< send 123 x >"),
            Err(ProtocolError::BadNumber {
                what: "dlc",
                text: "x".into()
            })
        );
        assert_eq!(
            parse_command("< send 123 >"),
            Err(ProtocolError::Missing {
                command: "send",
                what: "the dlc"
            })
        );
        assert_eq!(
            parse_command("< send 123 99999999999999999999999 >"),
            Err(ProtocolError::BadNumber {
                what: "dlc",
                text: "99999999999999999999999".into()
            })
        );
    }

    #[test]
    fn bcm_commands_parse() {
        assert_eq!(
            parse_command("< add 1 500 123 2 AA BB >"),
            Ok(Command::Add {
                interval: Duration::from_micros(1_000_500),
                frame: Frame::data(std_id(0x123), &[0xAA, 0xBB]).unwrap()
            })
        );
        assert_eq!(
            parse_command("< update 123 3 11 22 33 >"),
            Ok(Command::Update(
                Frame::data(std_id(0x123), &[0x11, 0x22, 0x33]).unwrap()
            ))
        );
        assert_eq!(
            parse_command("< delete 123 >"),
            Ok(Command::Delete(std_id(0x123)))
        );
        assert_eq!(
            parse_command("< filter 0 0 123 1 FF >"),
            Ok(Command::Filter {
                throttle: Duration::ZERO,
                id: std_id(0x123),
                mask: vec![0xFF]
            })
        );
        assert_eq!(
            parse_command("< subscribe 0 100000 123 >"),
            Ok(Command::Subscribe {
                throttle: Duration::from_millis(100),
                id: std_id(0x123)
            })
        );
        assert_eq!(
            parse_command("< unsubscribe 123 >"),
            Ok(Command::Unsubscribe(std_id(0x123)))
        );
        assert_eq!(
            parse_command("< statistics 1000 >"),
            Ok(Command::Statistics(1000))
        );
        assert_eq!(
            parse_command("< add 0 1000000 123 0 >"),
            Err(ProtocolError::BadUsecs(1_000_000))
        );
        assert_eq!(
            parse_command("< delete 123 456 >"),
            Err(ProtocolError::TooMany {
                command: "delete",
                extra: "456".into()
            })
        );
    }

    #[test]
    fn unknown_and_unsupported_commands_say_so() {
        assert_eq!(
            parse_command("< frobnicate 1 >"),
            Err(ProtocolError::UnknownCommand("frobnicate".into()))
        );
        assert!(matches!(
            parse_command("< isotpmode >"),
            Err(ProtocolError::Unsupported(_))
        ));
        assert!(matches!(
            parse_command("< can0 B 500000 0 0 0 0 0 0 0 >"),
            Err(ProtocolError::Unsupported(t)) if t.contains("bus configuration")
        ));
        assert!(matches!(
            parse_command("< muxfilter 0 0 123 2 FF 00 00 00 00 00 00 00 33 FF FF FF FF FF FF FF >"),
            Err(ProtocolError::Unsupported(_))
        ));
    }

    #[test]
    fn frames_format_like_socketcand() {
        let ts = 1_700_000_000_123_456_789;
        assert_eq!(
            raw_frame(std_id(0x123), &[0x1A, 0x22, 0x03, 0x44], ts),
            "< frame 123 1700000000.123456 1A220344 >"
        );
        assert_eq!(
            raw_frame(CanId::extended(0xABC).unwrap(), &[], 23_424_242_000),
            "< frame 00000ABC 23.424242  >"
        );
        assert_eq!(
            bcm_frame(std_id(0x7), &[0x11, 0x02], ts),
            "< frame 007 1700000000.123456 11 02  >"
        );
        assert_eq!(raw_error(0x4, ts), "< error 004 1700000000.123456 >");
        assert_eq!(stat(1, 2, 3, 4), "< stat 1 2 3 4 >");
        assert_eq!(timestamp(5_000), "0.000005");
    }

    #[test]
    fn error_replies_stay_one_message() {
        assert_eq!(error_reply("bad `< x >`\n"), "< error bad `( x )`  >");
        let reply = error_reply(&ProtocolError::Unterminated("< open x".into()).to_string());
        assert_eq!(reply.matches('<').count(), 1);
        assert_eq!(reply.matches('>').count(), 1);
    }
}
