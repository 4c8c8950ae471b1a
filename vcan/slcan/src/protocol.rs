//! The slcan (LAWICEL) line protocol, without any I/O: splitting the host's byte stream into lines,
//! parsing a line into a [`Command`], the emulated adapter's state machine ([`Device`]) that answers
//! each command, and formatting a bus frame as the line the adapter sends to the host.
//!
//! The port module (`port.rs`) feeds bytes from the pseudo-terminal in and writes what comes out; every
//! protocol decision is made here, so it is tested without a terminal.
//!
//! What the adapter answers (`\r` = OK, `\a` = error), modelled on can-utils' `slcanpty` and the
//! CANable 2.0 firmware's FD extension, and checked against python-can 4.6.1's `slcan` interface and the
//! Linux `slcan` driver:
//!
//! | command | answer |
//! |---|---|
//! | `S0`–`S8` (bitrate index), `sxxyy[zz[ww]]` (BTR registers), `Yn` (FD data rate) | `\r` while closed, `\a` while open |
//! | `O` (open), `L` (listen-only) | `\r` (also when already open: python-can sends `O` twice) |
//! | `C` (close) | `\r` (also when already closed: python-can and the kernel close first) |
//! | `t`/`T`/`r`/`R` classic, `d`/`D` FD, `b`/`B` FD with bit rate switch | `\r` and the frame enters the bus while open; `\a` when closed or listen-only |
//! | `Z0`/`Z1` | `\r`; with `Z1` the adapter's frame lines end in a 4-digit hex millisecond timestamp (0000–EA5F) |
//! | `F` | `F00\r` (no error flags) |
//! | `V`, `v`, `N` | `V1013\r`, `v1014\r`, `NVCAN\r` |
//! | `Mxxxxxxxx`, `mxxxxxxxx` (acceptance code/mask), `Un` (UART rate), `X1` (auto-poll on) | `\r` (accepted, no effect) |
//! | `X0`, `P`, `A` (polling), anything else, malformed lines | `\a` |
//!
//! The transmit acknowledgement is a bare `\r` (as `slcanpty` sends), not CAN232's `z\r`/`Z\r`: python-can
//! discards any reply that is not a frame line and the kernel driver ignores lines of four characters or
//! fewer, so both work with `\r`, and `\r` is what the LAWICEL documentation specifies. Empty lines (a
//! lone `\r`, which python-can sends for "no data bitrate") and `\n` around a line are ignored without an
//! answer.

use vcan::{CanId, FdFlags, Frame, FrameError};

/// Longest line accepted from the host; the longest valid one (`B` + 8 id digits + DLC + 64 bytes) has 138.
pub const MAX_LINE: usize = 200;

/// The OK answer.
pub const OK: &[u8] = b"\r";
/// The error answer (BEL).
pub const ERROR: &[u8] = b"\x07";

/// Nominal bitrates of `S0`–`S8` (kernel `slcan_bitrate_const`, LAWICEL, CanHacker; python-can calls S7
/// 750 kbit/s, every adapter documentation 800 kbit/s).
pub const BITRATES: [u32; 9] = [
    10_000, 20_000, 50_000, 100_000, 125_000, 250_000, 500_000, 800_000, 1_000_000,
];

/// The CAN FD data bitrate of `Yn` (CANable 2.0 firmware), `None` for an index it does not define.
pub fn data_bitrate(index: u8) -> Option<u32> {
    match index {
        0 => Some(500_000),
        1 => Some(1_000_000),
        2 => Some(2_000_000),
        4 => Some(4_000_000),
        5 => Some(5_000_000),
        8 => Some(8_000_000),
        _ => None,
    }
}

/// The CAN FD payload length of a DLC nibble.
const FD_LEN: [usize; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 20, 24, 32, 48, 64];

/// Why a line from the host was refused (the adapter answers `\a`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("unknown command `{0}`")]
    Unknown(String),
    #[error("`{command}`: {reason}")]
    BadArgument { command: char, reason: String },
    #[error("command `{0}` is not supported by this adapter")]
    Unsupported(char),
    #[error("frame: {0}")]
    Frame(#[from] FrameError),
    #[error("line longer than {MAX_LINE} bytes")]
    TooLong,
}

/// One command from the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `Sn`: nominal bitrate by index (0–8).
    Bitrate(u8),
    /// `sxxyy…`: bit timing registers, as hex digits (upper case).
    Btr(String),
    /// `Yn`: CAN FD data bitrate by index.
    DataBitrate(u8),
    /// `O`.
    Open,
    /// `L`.
    ListenOnly,
    /// `C`.
    Close,
    /// `t`/`T`/`r`/`R`/`d`/`D`/`b`/`B`: a frame to put on the bus.
    Transmit(Frame),
    /// `Zn`.
    Timestamps(bool),
    /// `F`.
    Status,
    /// `V`.
    Version,
    /// `v`.
    FirmwareVersion,
    /// `N`.
    SerialNumber,
    /// `Mxxxxxxxx`.
    AcceptanceCode(u32),
    /// `mxxxxxxxx`.
    AcceptanceMask(u32),
    /// `Xn`: auto-poll on or off.
    AutoPoll(bool),
    /// `Un`: UART rate (meaningless on a pseudo-terminal).
    UartRate(u8),
}

fn hex_digit(c: u8) -> Option<u32> {
    char::from(c).to_digit(16)
}

fn hex_number(command: char, what: &str, digits: &[u8]) -> Result<u32, LineError> {
    digits.iter().try_fold(0u32, |acc, &c| {
        hex_digit(c)
            .map(|d| (acc << 4) | d)
            .ok_or_else(|| LineError::BadArgument {
                command,
                reason: format!("{what} `{}` is not hex", digits.escape_ascii()),
            })
    })
}

fn hex_bytes(command: char, digits: &[u8]) -> Result<Vec<u8>, LineError> {
    digits
        .chunks(2)
        .map(|pair| hex_number(command, "data byte", pair).map(|b| b as u8))
        .collect()
}

fn single_digit(command: char, args: &[u8], max: u8) -> Result<u8, LineError> {
    match args {
        [c @ b'0'..=b'9'] if c - b'0' <= max => Ok(c - b'0'),
        _ => Err(LineError::BadArgument {
            command,
            reason: format!("expected one digit 0-{max}, got `{}`", args.escape_ascii()),
        }),
    }
}

fn no_args(command: char, args: &[u8]) -> Result<(), LineError> {
    if args.is_empty() {
        Ok(())
    } else {
        Err(LineError::BadArgument {
            command,
            reason: format!("unexpected `{}` after the command", args.escape_ascii()),
        })
    }
}

/// Parses one line (without its `\r` and surrounding `\n`, not empty) into a command.
pub fn parse_line(line: &[u8]) -> Result<Command, LineError> {
    let Some((&first, args)) = line.split_first() else {
        return Err(LineError::Unknown(String::new()));
    };
    let command = char::from(first);
    match first {
        b'S' => single_digit(command, args, 8).map(Command::Bitrate),
        b's' => {
            if !(4..=8).contains(&args.len()) || args.len() % 2 != 0 {
                return Err(LineError::BadArgument {
                    command,
                    reason: format!(
                        "expected 4, 6 or 8 hex digits of bit timing registers, got `{}`",
                        args.escape_ascii()
                    ),
                });
            }
            hex_bytes(command, args)?;
            Ok(Command::Btr(
                String::from_utf8_lossy(&args.to_ascii_uppercase()).into_owned(),
            ))
        }
        b'Y' => {
            let index = single_digit(command, args, 9)?;
            match data_bitrate(index) {
                Some(_) => Ok(Command::DataBitrate(index)),
                None => Err(LineError::BadArgument {
                    command,
                    reason: format!("no data bitrate has index {index} (0, 1, 2, 4, 5, 8)"),
                }),
            }
        }
        b'O' => no_args(command, args).map(|()| Command::Open),
        b'L' => no_args(command, args).map(|()| Command::ListenOnly),
        b'C' => no_args(command, args).map(|()| Command::Close),
        b'F' => no_args(command, args).map(|()| Command::Status),
        b'V' => no_args(command, args).map(|()| Command::Version),
        b'v' => no_args(command, args).map(|()| Command::FirmwareVersion),
        b'N' => no_args(command, args).map(|()| Command::SerialNumber),
        b'Z' => single_digit(command, args, 1).map(|n| Command::Timestamps(n == 1)),
        b'X' => single_digit(command, args, 1).map(|n| Command::AutoPoll(n == 1)),
        b'U' => single_digit(command, args, 9).map(Command::UartRate),
        b'M' | b'm' => {
            if args.len() != 8 {
                return Err(LineError::BadArgument {
                    command,
                    reason: format!("expected 8 hex digits, got `{}`", args.escape_ascii()),
                });
            }
            let value = hex_number(command, "acceptance value", args)?;
            Ok(if first == b'M' {
                Command::AcceptanceCode(value)
            } else {
                Command::AcceptanceMask(value)
            })
        }
        b'P' | b'A' => Err(LineError::Unsupported(command)),
        b't' | b'T' | b'r' | b'R' | b'd' | b'D' | b'b' | b'B' => {
            parse_frame(command, args).map(Command::Transmit)
        }
        _ => Err(LineError::Unknown(line.escape_ascii().to_string())),
    }
}

/// Parses a frame line's arguments: id, DLC, data.
fn parse_frame(command: char, args: &[u8]) -> Result<Frame, LineError> {
    let extended = command.is_ascii_uppercase();
    let id_len = if extended { 8 } else { 3 };
    let bad = |reason: String| LineError::BadArgument { command, reason };
    if args.len() < id_len {
        return Err(bad(format!(
            "expected {id_len} hex digits of identifier, got `{}`",
            args.escape_ascii()
        )));
    }
    let (id_digits, rest) = args.split_at(id_len);
    let raw_id = hex_number(command, "identifier", id_digits)?;
    let id = if extended {
        CanId::extended(raw_id)?
    } else {
        CanId::standard(raw_id)?
    };
    let remote = matches!(command, 'r' | 'R');
    let fd = matches!(command, 'd' | 'D' | 'b' | 'B');
    let Some((&dlc_char, data)) = rest.split_first() else {
        if remote {
            // slcanpty's tolerance: an RTR line without its DLC asks for zero bytes.
            return Ok(Frame::remote(id, 0)?);
        }
        return Err(bad("missing the DLC".into()));
    };
    let dlc = hex_digit(dlc_char)
        .ok_or_else(|| bad(format!("DLC `{}` is not a hex digit", char::from(dlc_char))))?;
    if !fd && dlc > 8 {
        return Err(bad(format!("classic CAN DLC must be 0-8, got {dlc:X}")));
    }
    if remote {
        if !data.is_empty() {
            return Err(bad(format!(
                "a remote frame carries no data, got `{}`",
                data.escape_ascii()
            )));
        }
        return Ok(Frame::remote(id, dlc as u8)?);
    }
    let len = if fd { FD_LEN[dlc as usize] } else { dlc as usize };
    if data.len() != 2 * len {
        return Err(bad(format!(
            "DLC {dlc:X} means {len} data bytes ({} hex digits), got {} hex digits",
            2 * len,
            data.len()
        )));
    }
    let bytes = hex_bytes(command, data)?;
    if fd {
        let flags = FdFlags {
            brs: matches!(command, 'b' | 'B'),
            esi: false,
        };
        Ok(Frame::fd(id, &bytes, flags)?)
    } else {
        Ok(Frame::data(id, &bytes)?)
    }
}

/// The adapter's millisecond timestamp of a time in nanoseconds since the Unix epoch: milliseconds within
/// the minute, 0–59999 (0000–EA5F), as `slcanpty` computes it.
pub fn timestamp_ms(timestamp_ns: u64) -> u16 {
    ((timestamp_ns / 1_000_000) % 60_000) as u16
}

/// The line the adapter sends the host for a bus frame (with its `\r`), `None` for error frames (not
/// passed on). The FD error state indicator has no slcan form and is dropped.
pub fn format_frame(frame: &Frame, timestamp: Option<u16>) -> Option<String> {
    use std::fmt::Write;
    let id_text = |id: &CanId| match id {
        CanId::Standard(raw) => format!("{raw:03X}"),
        CanId::Extended(raw) => format!("{raw:08X}"),
    };
    let letter = |id: &CanId, lower: char| {
        if id.is_extended() {
            lower.to_ascii_uppercase()
        } else {
            lower
        }
    };
    let mut line = match frame {
        Frame::Data { id, .. } => {
            format!("{}{}{}", letter(id, 't'), id_text(id), frame.payload().len())
        }
        Frame::Remote { id, dlc } => format!("{}{}{dlc}", letter(id, 'r'), id_text(id)),
        Frame::Fd { id, flags, .. } => {
            let len = frame.payload().len();
            let dlc = FD_LEN.iter().position(|&l| l == len)?;
            let kind = if flags.brs { 'b' } else { 'd' };
            format!("{}{}{dlc:X}", letter(id, kind), id_text(id))
        }
        Frame::Error { .. } => return None,
    };
    for b in frame.payload() {
        let _ = write!(line, "{b:02X}");
    }
    if let Some(ms) = timestamp {
        let _ = write!(line, "{ms:04X}");
    }
    line.push('\r');
    Some(line)
}

/// One event of the host's byte stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A complete, non-empty line without its `\r` and surrounding `\n`.
    Line(Vec<u8>),
    /// A line longer than [`MAX_LINE`] was discarded (up to its `\r`).
    TooLong,
}

/// Splits the host's bytes into lines at `\r`, across reads.
#[derive(Debug, Default)]
pub struct LineSplitter {
    buf: Vec<u8>,
    overlong: bool,
}

impl LineSplitter {
    /// Takes bytes as they were read and returns the complete lines they end.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Input> {
        let mut out = Vec::new();
        for &b in bytes {
            if b == b'\r' {
                if std::mem::take(&mut self.overlong) {
                    out.push(Input::TooLong);
                } else {
                    let line = trim_newlines(&self.buf);
                    if !line.is_empty() {
                        out.push(Input::Line(line.to_vec()));
                    }
                }
                self.buf.clear();
            } else if !self.overlong {
                if self.buf.len() >= MAX_LINE {
                    self.overlong = true;
                    self.buf.clear();
                } else {
                    self.buf.push(b);
                }
            }
        }
        out
    }
}

fn trim_newlines(mut line: &[u8]) -> &[u8] {
    while let [b'\n', rest @ ..] = line {
        line = rest;
    }
    while let [rest @ .., b'\n'] = line {
        line = rest;
    }
    line
}

/// Whether the channel is open, as `O`, `L` and `C` set it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ChannelMode {
    #[default]
    Closed,
    Open,
    ListenOnly,
}

/// What the host has configured on the adapter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlcanStatus {
    pub mode: ChannelMode,
    /// The nominal bitrate from `Sn`, or computed from `sxxyy` (SJA1000 registers, 8 MHz CAN clock).
    pub bitrate: Option<u32>,
    /// The bit timing registers of the last `s` command, if it was the latest bitrate setting.
    pub btr: Option<String>,
    /// The CAN FD data bitrate from `Yn`.
    pub data_bitrate: Option<u32>,
    /// `Z1`: frame lines carry timestamps.
    pub timestamps: bool,
}

/// The nominal bitrate of SJA1000 BTR0/BTR1 at the 8 MHz CAN clock python-can and LAWICEL assume.
fn sja1000_bitrate(btr: &str) -> Option<u32> {
    let value = u32::from_str_radix(btr, 16).ok()?;
    if btr.len() != 4 {
        return None;
    }
    let (btr0, btr1) = (value >> 8, value & 0xFF);
    let brp = (btr0 & 0x3F) + 1;
    let tseg1 = (btr1 & 0x0F) + 1;
    let tseg2 = ((btr1 >> 4) & 0x07) + 1;
    Some(8_000_000 / (brp * (1 + tseg1 + tseg2)))
}

/// The adapter's answer to one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Bytes to send the host (`\r`, `\a` or a value line).
    pub reply: Vec<u8>,
    /// A frame to put on the bus.
    pub frame: Option<Frame>,
    /// Why the line was refused, quoting it (the reply is then `\a`).
    pub refused: Option<String>,
    /// The channel was closed: frames not yet read by the host are stale and may be discarded.
    pub closed: bool,
}

impl Response {
    fn ok() -> Response {
        Response::reply(OK)
    }

    fn reply(bytes: &[u8]) -> Response {
        Response {
            reply: bytes.to_vec(),
            frame: None,
            refused: None,
            closed: false,
        }
    }

    fn refuse(line: &[u8], reason: impl std::fmt::Display) -> Response {
        Response {
            reply: ERROR.to_vec(),
            frame: None,
            refused: Some(format!("refused `{}`: {reason}", line.escape_ascii())),
            closed: false,
        }
    }
}

/// The emulated adapter: its configuration and the answer to every command.
#[derive(Debug, Default)]
pub struct Device {
    status: SlcanStatus,
}

impl Device {
    pub fn new() -> Device {
        Device::default()
    }

    pub fn status(&self) -> &SlcanStatus {
        &self.status
    }

    /// Answers one host input.
    pub fn handle(&mut self, input: &Input) -> Response {
        match input {
            Input::TooLong => Response {
                refused: Some(format!("refused a line: {}", LineError::TooLong)),
                ..Response::reply(ERROR)
            },
            Input::Line(line) => match parse_line(line) {
                Ok(command) => self.execute(line, command),
                Err(e) => Response::refuse(line, e),
            },
        }
    }

    fn execute(&mut self, line: &[u8], command: Command) -> Response {
        let open = self.status.mode != ChannelMode::Closed;
        match command {
            Command::Bitrate(_) | Command::Btr(_) | Command::DataBitrate(_) if open => {
                Response::refuse(line, "bit timing can only be set while the channel is closed")
            }
            Command::Bitrate(index) => {
                self.status.bitrate = BITRATES.get(usize::from(index)).copied();
                self.status.btr = None;
                Response::ok()
            }
            Command::Btr(btr) => {
                self.status.bitrate = sja1000_bitrate(&btr);
                self.status.btr = Some(btr);
                Response::ok()
            }
            Command::DataBitrate(index) => {
                self.status.data_bitrate = data_bitrate(index);
                Response::ok()
            }
            Command::Open => {
                self.status.mode = ChannelMode::Open;
                Response::ok()
            }
            Command::ListenOnly => {
                self.status.mode = ChannelMode::ListenOnly;
                Response::ok()
            }
            Command::Close => {
                self.status.mode = ChannelMode::Closed;
                Response {
                    closed: true,
                    ..Response::ok()
                }
            }
            Command::Transmit(frame) => match self.status.mode {
                ChannelMode::Closed => Response::refuse(line, "the channel is closed"),
                ChannelMode::ListenOnly => Response::refuse(line, "the channel is open listen-only"),
                ChannelMode::Open => Response {
                    frame: Some(frame),
                    ..Response::ok()
                },
            },
            Command::Timestamps(on) => {
                self.status.timestamps = on;
                Response::ok()
            }
            Command::Status => Response::reply(b"F00\r"),
            Command::Version => Response::reply(b"V1013\r"),
            Command::FirmwareVersion => Response::reply(b"v1014\r"),
            Command::SerialNumber => Response::reply(b"NVCAN\r"),
            Command::AcceptanceCode(_) | Command::AcceptanceMask(_) | Command::UartRate(_) => Response::ok(),
            Command::AutoPoll(true) => Response::ok(),
            Command::AutoPoll(false) => Response::refuse(
                line,
                "polling (auto-poll off) is not supported: frames are always forwarded",
            ),
        }
    }

    /// The line for a bus frame received at `timestamp_ns`, if the channel is open and the frame has an
    /// slcan form.
    pub fn frame_line(&self, frame: &Frame, timestamp_ns: u64) -> Option<String> {
        if self.status.mode == ChannelMode::Closed {
            return None;
        }
        let timestamp = self.status.timestamps.then(|| timestamp_ms(timestamp_ns));
        format_frame(frame, timestamp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(text: &str) -> Input {
        Input::Line(text.as_bytes().to_vec())
    }

    fn std_id(id: u32) -> CanId {
        CanId::standard(id).unwrap()
    }

    fn ext_id(id: u32) -> CanId {
        CanId::extended(id).unwrap()
    }

    #[test]
    fn classic_frame_lines_parse() {
        assert_eq!(
            parse_line(b"t1232AABB").unwrap(),
            Command::Transmit(Frame::data(std_id(0x123), &[0xAA, 0xBB]).unwrap())
        );
        assert_eq!(
            parse_line(b"t7ff0").unwrap(),
            Command::Transmit(Frame::data(std_id(0x7FF), &[]).unwrap())
        );
        assert_eq!(
            parse_line(b"T1ABCDEF081122334455667788").unwrap(),
            Command::Transmit(
                Frame::data(
                    ext_id(0x1ABC_DEF0),
                    &[0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88]
                )
                .unwrap()
            )
        );
        assert_eq!(
            parse_line(b"r1233").unwrap(),
            Command::Transmit(Frame::remote(std_id(0x123), 3).unwrap())
        );
        assert_eq!(
            parse_line(b"r123").unwrap(),
            Command::Transmit(Frame::remote(std_id(0x123), 0).unwrap())
        );
        assert_eq!(
            parse_line(b"R000004568").unwrap(),
            Command::Transmit(Frame::remote(ext_id(0x456), 8).unwrap())
        );
    }

    #[test]
    fn fd_frame_lines_parse_with_the_dlc_nibble() {
        let data: Vec<u8> = (0..12).collect();
        let hex: String = data.iter().map(|b| format!("{b:02X}")).collect();
        assert_eq!(
            parse_line(format!("d1239{hex}").as_bytes()).unwrap(),
            Command::Transmit(Frame::fd(std_id(0x123), &data, FdFlags::default()).unwrap())
        );
        let brs = FdFlags {
            brs: true,
            esi: false,
        };
        let sixty_four = "00".repeat(64);
        assert_eq!(
            parse_line(format!("B00000001F{sixty_four}").as_bytes()).unwrap(),
            Command::Transmit(Frame::fd(ext_id(1), &[0; 64], brs).unwrap())
        );
        assert_eq!(
            parse_line(b"b0010").unwrap(),
            Command::Transmit(Frame::fd(std_id(1), &[], brs).unwrap())
        );
    }

    #[test]
    fn malformed_frame_lines_are_errors_not_panics() {
        for bad in [
            "t",
            "t12",
            "t123",
            "t1239",
            "t1232AA",
            "t1232AABBCC",
            "t8001AA",
            "tXYZ0",
            "t1231ZZ",
            "T2000000000",
            "T1234",
            "r1239",
            "r1231AA",
            "d123A00",
            "dG230",
            "t123\u{e9}",
            "T\u{e9}\u{e9}\u{e9}\u{e9}0",
        ] {
            assert!(parse_line(bad.as_bytes()).is_err(), "{bad} parsed");
        }
        assert!(matches!(
            parse_line(b"t8001AA"),
            Err(LineError::Frame(FrameError::StandardIdOutOfRange(0x800)))
        ));
        assert!(parse_line(&[b't', 0xFF, 0xFE, 0x80, b'0']).is_err());
    }

    #[test]
    fn commands_parse() {
        assert_eq!(parse_line(b"S6").unwrap(), Command::Bitrate(6));
        assert!(parse_line(b"S9").is_err());
        assert!(parse_line(b"S").is_err());
        assert!(parse_line(b"S66").is_err());
        assert_eq!(parse_line(b"s031c").unwrap(), Command::Btr("031C".into()));
        assert!(parse_line(b"s03").is_err());
        assert!(parse_line(b"s0G1C").is_err());
        assert_eq!(parse_line(b"Y2").unwrap(), Command::DataBitrate(2));
        assert!(parse_line(b"Y3").is_err());
        assert_eq!(parse_line(b"O").unwrap(), Command::Open);
        assert!(parse_line(b"O1").is_err());
        assert_eq!(parse_line(b"Z1").unwrap(), Command::Timestamps(true));
        assert!(parse_line(b"Z2").is_err());
        assert_eq!(parse_line(b"M00000000").unwrap(), Command::AcceptanceCode(0));
        assert_eq!(
            parse_line(b"mFFFFFFFF").unwrap(),
            Command::AcceptanceMask(0xFFFF_FFFF)
        );
        assert!(parse_line(b"m123").is_err());
        assert_eq!(parse_line(b"P"), Err(LineError::Unsupported('P')));
        assert_eq!(parse_line(b"Q1"), Err(LineError::Unknown("Q1".into())));
    }

    #[test]
    fn frames_format_as_adapter_lines() {
        let f = |frame: Frame, ts| format_frame(&frame, ts).unwrap();
        assert_eq!(
            f(Frame::data(std_id(0x123), &[0xAA, 0xBB]).unwrap(), None),
            "t1232AABB\r"
        );
        assert_eq!(f(Frame::data(std_id(0x1), &[]).unwrap(), None), "t0010\r");
        assert_eq!(
            f(Frame::data(ext_id(0x1ABC_DEF0), &[1]).unwrap(), Some(0xEA5F)),
            "T1ABCDEF0101EA5F\r"
        );
        assert_eq!(f(Frame::remote(std_id(0x7FF), 2).unwrap(), None), "r7FF2\r");
        assert_eq!(
            f(Frame::remote(ext_id(0x10), 0).unwrap(), Some(1)),
            "R0000001000001\r"
        );
        let data: Vec<u8> = (0..20).collect();
        let hex: String = data.iter().map(|b| format!("{b:02X}")).collect();
        assert_eq!(
            f(Frame::fd(std_id(0x123), &data, FdFlags::default()).unwrap(), None),
            format!("d123B{hex}\r")
        );
        let brs_esi = FdFlags { brs: true, esi: true };
        assert_eq!(
            f(Frame::fd(ext_id(0x123), &[0; 64], brs_esi).unwrap(), None),
            format!("B00000123F{}\r", "00".repeat(64))
        );
        assert_eq!(format_frame(&Frame::error(4, [0; 8]).unwrap(), None), None);
    }

    #[test]
    fn formatted_lines_parse_back() {
        let frames = [
            Frame::data(std_id(0x42), &[1, 2, 3]).unwrap(),
            Frame::data(ext_id(0x1FFF_FFFF), &[9; 8]).unwrap(),
            Frame::remote(std_id(0x42), 8).unwrap(),
            Frame::fd(std_id(0x42), &[7; 48], FdFlags::default()).unwrap(),
            Frame::fd(
                ext_id(0x42),
                &[7; 24],
                FdFlags {
                    brs: true,
                    esi: false,
                },
            )
            .unwrap(),
        ];
        for frame in frames {
            let text = format_frame(&frame, None).unwrap();
            let line = text.trim_end_matches('\r');
            assert_eq!(parse_line(line.as_bytes()).unwrap(), Command::Transmit(frame));
        }
    }

    #[test]
    fn timestamps_wrap_every_minute() {
        assert_eq!(timestamp_ms(0), 0);
        assert_eq!(timestamp_ms(59_999_999_999), 59_999);
        assert_eq!(timestamp_ms(60_000_000_000), 0);
        assert_eq!(timestamp_ms(61_234_000_000), 1_234);
    }

    #[test]
    fn the_splitter_finds_lines_across_reads_and_tolerates_newlines() {
        let mut s = LineSplitter::default();
        assert_eq!(s.push(b"\r\r\nS6\r\nO"), vec![line("S6")]);
        assert_eq!(s.push(b"\r\n"), vec![line("O")]);
        assert_eq!(s.push(b"t12"), vec![]);
        assert_eq!(s.push(b"30\rt1"), vec![line("t1230")]);
        assert_eq!(s.push(b"230\r"), vec![line("t1230")]);
        let long = vec![b'x'; MAX_LINE + 50];
        assert_eq!(s.push(&long), vec![]);
        assert_eq!(s.push(b"yy\rO\r"), vec![Input::TooLong, line("O")]);
        let exact = vec![b'x'; MAX_LINE];
        assert_eq!(s.push(&exact), vec![]);
        assert_eq!(s.push(b"\r"), vec![Input::Line(exact)]);
    }

    #[test]
    fn the_device_follows_open_close_and_listen_only() {
        let mut d = Device::new();
        let frame = line("t1232AABB");
        let closed = d.handle(&frame);
        assert_eq!(closed.reply, ERROR);
        assert!(closed.refused.unwrap().contains("closed"));
        assert_eq!(d.handle(&line("C")).reply, OK, "closing a closed channel is fine");
        assert_eq!(d.handle(&line("S6")).reply, OK);
        assert_eq!(d.status().bitrate, Some(500_000));
        assert_eq!(d.handle(&line("Y2")).reply, OK);
        assert_eq!(d.status().data_bitrate, Some(2_000_000));
        assert_eq!(d.handle(&line("O")).reply, OK);
        assert_eq!(d.handle(&line("O")).reply, OK, "python-can opens twice");
        assert_eq!(d.status().mode, ChannelMode::Open);
        let sent = d.handle(&frame);
        assert_eq!(sent.reply, OK);
        assert_eq!(
            sent.frame,
            Some(Frame::data(std_id(0x123), &[0xAA, 0xBB]).unwrap())
        );
        assert_eq!(d.handle(&line("S4")).reply, ERROR, "no bitrate change while open");
        assert_eq!(d.status().bitrate, Some(500_000));
        let close = d.handle(&line("C"));
        assert!(close.closed);
        assert_eq!(d.handle(&line("s011C")).reply, OK);
        assert_eq!(d.status().bitrate, Some(250_000));
        assert_eq!(d.status().btr.as_deref(), Some("011C"));
        assert_eq!(d.handle(&line("L")).reply, OK);
        let listen = d.handle(&frame);
        assert_eq!(listen.reply, ERROR);
        assert_eq!(listen.frame, None);
        assert!(listen.refused.unwrap().contains("listen-only"));
    }

    #[test]
    fn the_device_answers_queries() {
        let mut d = Device::new();
        assert_eq!(d.handle(&line("F")).reply, b"F00\r");
        assert_eq!(d.handle(&line("V")).reply, b"V1013\r");
        assert_eq!(d.handle(&line("v")).reply, b"v1014\r");
        assert_eq!(d.handle(&line("N")).reply, b"NVCAN\r");
        assert_eq!(d.handle(&line("X1")).reply, OK);
        assert_eq!(d.handle(&line("X0")).reply, ERROR);
        assert_eq!(d.handle(&line("M00000000")).reply, OK);
        assert_eq!(d.handle(&line("mFFFFFFFF")).reply, OK);
        assert_eq!(d.handle(&line("U1")).reply, OK);
        let unknown = d.handle(&line("Q"));
        assert_eq!(unknown.reply, ERROR);
        assert_eq!(
            unknown.refused.as_deref(),
            Some("refused `Q`: unknown command `Q`")
        );
        assert_eq!(d.handle(&Input::TooLong).reply, ERROR);
    }

    #[test]
    fn frame_lines_only_while_open_and_with_timestamps_after_z1() {
        let mut d = Device::new();
        let frame = Frame::data(std_id(0x321), &[1]).unwrap();
        assert_eq!(d.frame_line(&frame, 0), None);
        d.handle(&line("Z1"));
        d.handle(&line("L"));
        assert_eq!(
            d.frame_line(&frame, 1_234_567_890).as_deref(),
            Some("t32110104D2\r")
        );
        d.handle(&line("Z0"));
        assert_eq!(d.frame_line(&frame, 1_234_567_890).as_deref(), Some("t321101\r"));
    }
}
