//! The byte protocol between bus nodes and the userspace hub (Unix stream or TCP).
//!
//! # Framing
//!
//! The stream is a sequence of messages. Every message starts with a 4-byte header, one little-endian
//! `u32` word:
//!
//! ```text
//! bits 0..24   body length in bytes (0 ..= MAX_BODY, 1 MiB)
//! bits 24..32  message type
//! ```
//!
//! followed by exactly `length` body bytes. All integers are little-endian. There is no padding and no
//! trailer; a reader that has the 4 header bytes knows how many more bytes the message needs, so one read
//! from the socket may carry many messages and a message may span reads ([`Decoder`] handles both).
//!
//! # Handshake
//!
//! The first message on a connection is the client's [`HELLO`]:
//!
//! ```text
//! magic      4 bytes  "VCAN"
//! version    u16      PROTOCOL_VERSION (1)
//! role       u8       0 = bus node, 1 = control connection (statistics only, not a bus node)
//! options    u8       bit 0 recv_own, bit 1 want_errors, bit 2 fd; other bits must be 0
//! name_len   u8       then name_len bytes of UTF-8 node name
//! filters    u16 count, then count x filter (at most MAX_FILTERS)
//! ```
//!
//! A filter is 9 bytes: `id u32`, `mask u32`, `flags u8` (bit 0 inverted, other bits 0), with
//! [`crate::filter`] semantics.
//!
//! The hub answers [`WELCOME`] (`magic`, `version u16`, `node_id u32`, `bus_len u8` + bus name) or
//! [`REFUSED`] (the body is a UTF-8 reason) and then closes the connection. A client checks the magic and
//! version of the welcome too, so talking to something that is not a hub fails clearly. A control
//! connection gets node id 0.
//!
//! # Messages after the handshake
//!
//! | type | name | direction | body |
//! |---|---|---|---|
//! | 0x10 | [`SEND`] | node -> hub | frame |
//! | 0x11 | [`DELIVER`] | hub -> node | `seq u64`, `timestamp_ns u64`, `flags u8` (bit 0 own), frame |
//! | 0x12 | [`SET_FILTERS`] | node -> hub | `count u16`, count x filter (replaces the node's filters) |
//! | 0x20 | [`STATS_REQUEST`] | control -> hub | empty |
//! | 0x21 | [`STATS_REPLY`] | hub -> control | statistics, see below |
//!
//! A frame is `can_id u32` (the Linux `can_id` word with `CAN_EFF_FLAG`/`CAN_RTR_FLAG`/`CAN_ERR_FLAG`),
//! `fd_flags u8`, `len u8`, then the payload:
//!
//! * `fd_flags` = 0: classic frame. With `CAN_RTR_FLAG`, `len` is the remote frame's DLC (0-8) and no
//!   payload follows; otherwise `len` (0-8) payload bytes follow.
//! * `fd_flags` with `FDF` (0x04) set: CAN FD frame; `BRS` 0x01 and `ESI` 0x02 may be set, no other bits;
//!   `len` must be a valid FD length; no `CAN_RTR_FLAG`.
//! * `CAN_ERR_FLAG`: error frame; the class is `can_id & 0x1FFFFFFF`, `fd_flags` must be 0, no EFF/RTR flags,
//!   `len` must be 8.
//! * A standard id (no `CAN_EFF_FLAG`) must be at most 0x7FF.
//!
//! A message body must be exactly as long as its fields; any surplus byte is an error.
//!
//! The statistics body: `frames u64`, `dropped u64`, `bus_len u8` + bus name, `count u32`, then per node
//! `node u32`, `sent u64`, `delivered u64`, `dropped u64`, `connected u8` (0/1), `name_len u8` + name.
//!
//! # Errors
//!
//! [`decode_body`] returns a [`DecodeError`] naming the field that was bad; [`Decoder::next_message`] wraps
//! it (and its own framing errors) in [`crate::socket::BusError::Protocol`] naming the peer and what was wrong: an
//! unknown message type, a body longer than [`MAX_BODY`] or of the wrong length for its type, bad magic or
//! version, a first message that is not a handshake, invalid frame fields, invalid UTF-8 in a name,
//! too many filters. After an error the stream cannot be resynchronised; the hub drops that one
//! connection, the client reports the error. Nothing in here panics on any input.
//!
//! # Speed
//!
//! Headers are fixed and small (4 bytes; a delivered classic 8-byte frame is 35 bytes on the wire), encoders
//! append directly to a caller-owned `Vec<u8>` (no allocation once the buffer has grown), the decoder parses
//! in place from one buffer filled by large reads and never allocates for frame messages.

use std::io;

use crate::filter::Filter;
use crate::frame::{CanId, FdFlags, Frame, FrameError, CAN_EFF_FLAG, CAN_ERR_FLAG, CAN_RTR_FLAG, EFF_MAX};
use crate::socket::BusError;

/// Handshake magic, the first 4 bytes of [`HELLO`] and [`WELCOME`] bodies.
pub const MAGIC: [u8; 4] = *b"VCAN";
/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u16 = 1;
/// Length of the message header.
pub const HEADER_LEN: usize = 4;
/// Largest accepted body length.
pub const MAX_BODY: usize = 1 << 20;
/// Most filters one node may install (the kernel's `CAN_RAW_FILTER_MAX`).
pub const MAX_FILTERS: usize = 512;
/// Longest node or bus name in bytes.
pub const MAX_NAME: usize = 255;

/// Client handshake.
pub const HELLO: u8 = 0x01;
/// Hub accepts the client.
pub const WELCOME: u8 = 0x02;
/// Hub refuses the client (then closes).
pub const REFUSED: u8 = 0x03;
/// A frame a node puts on the bus.
pub const SEND: u8 = 0x10;
/// A frame the hub delivers to a node.
pub const DELIVER: u8 = 0x11;
/// A node replaces its acceptance filters.
pub const SET_FILTERS: u8 = 0x12;
/// A control connection asks for statistics.
pub const STATS_REQUEST: u8 = 0x20;
/// The hub's statistics.
pub const STATS_REPLY: u8 = 0x21;

const FRAME_HEADER: usize = 6;
const DELIVER_PREFIX: usize = 17;
const FILTER_LEN: usize = 9;

const OPT_RECV_OWN: u8 = 0x01;
const OPT_WANT_ERRORS: u8 = 0x02;
const OPT_FD: u8 = 0x04;

/// What kind of connection a [`Hello`] opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A bus node that sends and receives frames.
    Node,
    /// A short-lived statistics connection (`hub::query_stats`).
    Control,
}

/// The client handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub version: u16,
    pub role: Role,
    pub name: String,
    pub recv_own: bool,
    pub want_errors: bool,
    pub fd: bool,
    pub filters: Vec<Filter>,
}

/// A frame delivered by the hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub seq: u64,
    pub timestamp_ns: u64,
    pub own: bool,
    pub frame: Frame,
}

/// Per-node counters, as the hub keeps them and as [`STATS_REPLY`] carries them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// Hub-assigned node number (unique for the hub's lifetime).
    pub node: u32,
    /// Name the node gave at join.
    pub name: String,
    /// Frames the node sent onto the bus.
    pub sent: u64,
    /// Frames delivered to the node.
    pub delivered: u64,
    /// Frames that could not be delivered to the node because its queue was full.
    pub dropped: u64,
    /// Whether the node is still connected.
    pub connected: bool,
}

/// Bus-wide counters, as the hub keeps them and as [`STATS_REPLY`] carries them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HubStats {
    pub name: String,
    /// Frames ordered onto the bus (the last sequence number).
    pub frames: u64,
    /// Sum of per-node drops.
    pub dropped: u64,
    /// Every node that ever joined, in join order.
    pub nodes: Vec<NodeStats>,
}

/// One decoded message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Hello(Hello),
    Welcome { node_id: u32, bus: String },
    Refused(String),
    Send(Frame),
    Deliver(Delivery),
    SetFilters(Vec<Filter>),
    StatsRequest,
    StatsReply(HubStats),
}

// ----------------------------------------------------------------------------------------------------
// Encoding
// ----------------------------------------------------------------------------------------------------

/// Why a message cannot be encoded (values the format cannot carry).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("name `{0}` is longer than {MAX_NAME} bytes")]
    NameTooLong(String),
    #[error("{0} filters is more than the {MAX_FILTERS} a node may install")]
    TooManyFilters(usize),
    #[error("message body of {0} bytes exceeds the {MAX_BODY}-byte limit")]
    TooLong(usize),
}

fn put_header(out: &mut Vec<u8>, kind: u8, len: usize) {
    // Callers guarantee len <= MAX_BODY, so it fits in 24 bits.
    let word = (len as u32 & 0x00FF_FFFF) | (u32::from(kind) << 24);
    out.extend_from_slice(&word.to_le_bytes());
}

/// Encoded length of a frame (header + payload).
fn frame_len(frame: &Frame) -> usize {
    match frame {
        Frame::Remote { .. } => FRAME_HEADER,
        _ => FRAME_HEADER + frame.payload().len(),
    }
}

fn put_frame(out: &mut Vec<u8>, frame: &Frame) {
    out.extend_from_slice(&frame.linux_can_id().to_le_bytes());
    match frame {
        Frame::Data { data, .. } => {
            let data = data.as_slice();
            out.push(0);
            out.push(data.len() as u8);
            out.extend_from_slice(data);
        }
        Frame::Remote { dlc, .. } => {
            out.push(0);
            out.push(*dlc);
        }
        Frame::Fd { flags, data, .. } => {
            let data = data.as_slice();
            out.push(flags.bits());
            out.push(data.len() as u8);
            out.extend_from_slice(data);
        }
        Frame::Error { data, .. } => {
            out.push(0);
            out.push(8);
            out.extend_from_slice(data);
        }
    }
}

fn put_name(out: &mut Vec<u8>, name: &str) -> Result<(), EncodeError> {
    if name.len() > MAX_NAME {
        return Err(EncodeError::NameTooLong(name.to_string()));
    }
    out.push(name.len() as u8);
    out.extend_from_slice(name.as_bytes());
    Ok(())
}

fn put_filters(out: &mut Vec<u8>, filters: &[Filter]) -> Result<(), EncodeError> {
    if filters.len() > MAX_FILTERS {
        return Err(EncodeError::TooManyFilters(filters.len()));
    }
    out.extend_from_slice(&(filters.len() as u16).to_le_bytes());
    for f in filters {
        out.extend_from_slice(&f.id.to_le_bytes());
        out.extend_from_slice(&f.mask.to_le_bytes());
        out.push(u8::from(f.inverted));
    }
    Ok(())
}

/// Appends a [`SEND`] message carrying `frame`.
pub fn encode_send(out: &mut Vec<u8>, frame: &Frame) {
    put_header(out, SEND, frame_len(frame));
    put_frame(out, frame);
}

/// Appends a [`DELIVER`] message.
pub fn encode_deliver(out: &mut Vec<u8>, seq: u64, timestamp_ns: u64, own: bool, frame: &Frame) {
    put_header(out, DELIVER, DELIVER_PREFIX + frame_len(frame));
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&timestamp_ns.to_le_bytes());
    out.push(u8::from(own));
    put_frame(out, frame);
}

/// Offset of the `own` flag byte inside an encoded [`DELIVER`] message, so a fan-out can encode once and
/// flip the flag for the sender's echo.
pub const DELIVER_OWN_OFFSET: usize = HEADER_LEN + 16;

/// Encodes a body built by `body` behind a header of type `kind`, checking the size limit.
fn with_body(
    out: &mut Vec<u8>,
    kind: u8,
    body: impl FnOnce(&mut Vec<u8>) -> Result<(), EncodeError>,
) -> Result<(), EncodeError> {
    let start = out.len();
    put_header(out, kind, 0);
    if let Err(e) = body(out) {
        out.truncate(start);
        return Err(e);
    }
    let len = out.len() - start - HEADER_LEN;
    if len > MAX_BODY {
        out.truncate(start);
        return Err(EncodeError::TooLong(len));
    }
    let word = (len as u32) | (u32::from(kind) << 24);
    out[start..start + HEADER_LEN].copy_from_slice(&word.to_le_bytes());
    Ok(())
}

/// Appends a [`HELLO`] message.
pub fn encode_hello(out: &mut Vec<u8>, hello: &Hello) -> Result<(), EncodeError> {
    with_body(out, HELLO, |out| {
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&hello.version.to_le_bytes());
        out.push(match hello.role {
            Role::Node => 0,
            Role::Control => 1,
        });
        let mut options = 0;
        if hello.recv_own {
            options |= OPT_RECV_OWN;
        }
        if hello.want_errors {
            options |= OPT_WANT_ERRORS;
        }
        if hello.fd {
            options |= OPT_FD;
        }
        out.push(options);
        put_name(out, &hello.name)?;
        put_filters(out, &hello.filters)
    })
}

/// Appends a [`WELCOME`] message.
pub fn encode_welcome(out: &mut Vec<u8>, node_id: u32, bus: &str) -> Result<(), EncodeError> {
    with_body(out, WELCOME, |out| {
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
        out.extend_from_slice(&node_id.to_le_bytes());
        put_name(out, bus)
    })
}

/// Appends a [`REFUSED`] message (the reason is cut to 1024 bytes at a character boundary).
pub fn encode_refused(out: &mut Vec<u8>, reason: &str) {
    let mut end = reason.len().min(1024);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    put_header(out, REFUSED, end);
    out.extend_from_slice(&reason.as_bytes()[..end]);
}

/// Appends a [`SET_FILTERS`] message.
pub fn encode_set_filters(out: &mut Vec<u8>, filters: &[Filter]) -> Result<(), EncodeError> {
    with_body(out, SET_FILTERS, |out| put_filters(out, filters))
}

/// Appends a [`STATS_REQUEST`] message.
pub fn encode_stats_request(out: &mut Vec<u8>) {
    put_header(out, STATS_REQUEST, 0);
}

/// Appends a [`STATS_REPLY`] message.
pub fn encode_stats_reply(out: &mut Vec<u8>, stats: &HubStats) -> Result<(), EncodeError> {
    with_body(out, STATS_REPLY, |out| {
        out.extend_from_slice(&stats.frames.to_le_bytes());
        out.extend_from_slice(&stats.dropped.to_le_bytes());
        put_name(out, &stats.name)?;
        out.extend_from_slice(&(stats.nodes.len() as u32).to_le_bytes());
        for n in &stats.nodes {
            out.extend_from_slice(&n.node.to_le_bytes());
            out.extend_from_slice(&n.sent.to_le_bytes());
            out.extend_from_slice(&n.delivered.to_le_bytes());
            out.extend_from_slice(&n.dropped.to_le_bytes());
            out.push(u8::from(n.connected));
            put_name(out, &n.name)?;
        }
        Ok(())
    })
}

impl Message {
    /// Appends this message to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        match self {
            Message::Hello(h) => encode_hello(out, h),
            Message::Welcome { node_id, bus } => encode_welcome(out, *node_id, bus),
            Message::Refused(reason) => {
                encode_refused(out, reason);
                Ok(())
            }
            Message::Send(frame) => {
                encode_send(out, frame);
                Ok(())
            }
            Message::Deliver(d) => {
                encode_deliver(out, d.seq, d.timestamp_ns, d.own, &d.frame);
                Ok(())
            }
            Message::SetFilters(filters) => encode_set_filters(out, filters),
            Message::StatsRequest => {
                encode_stats_request(out);
                Ok(())
            }
            Message::StatsReply(stats) => encode_stats_reply(out, stats),
        }
    }
}

// ----------------------------------------------------------------------------------------------------
// Decoding
// ----------------------------------------------------------------------------------------------------

/// Why received bytes are not a valid message. `message` fields name the message type being decoded
/// (`send`, `hello`, ...), `field` fields the field that was bad.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("{message} message is truncated ({len} body bytes)")]
    Truncated { message: &'static str, len: usize },
    #[error("{message} message is truncated ({count} filters announced)")]
    FiltersTruncated { message: &'static str, count: usize },
    #[error("{message} message has {count} unexpected trailing bytes")]
    TrailingBytes { message: &'static str, count: usize },
    #[error("{field} is not valid UTF-8")]
    InvalidUtf8 { field: &'static str },
    #[error("{0} filters is more than the {MAX_FILTERS} allowed")]
    TooManyFilters(usize),
    #[error("filter flags 0x{0:02X} have unknown bits set")]
    FilterFlags(u8),
    #[error("standard frame id 0x{0:X} is above 0x7FF")]
    StandardIdOutOfRange(u32),
    #[error("error frame can_id 0x{can_id:08X} / fd flags 0x{fd_flags:02X} are invalid")]
    ErrorFrameFlags { can_id: u32, fd_flags: u8 },
    #[error("error frame length {0} is not 8")]
    ErrorFrameLength(usize),
    #[error("frame length {0} is above 64")]
    FrameLength(usize),
    #[error("fd flags 0x{0:02X} are invalid (FDF must be set, only BRS/ESI besides)")]
    FdFlags(u8),
    #[error("a CAN FD frame cannot be a remote frame")]
    RemoteFd,
    /// Frame fields the frame constructors reject (payload length, remote DLC, ...).
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("deliver flags 0x{0:02X} have unknown bits set")]
    DeliverFlags(u8),
    #[error("bad magic {0:02X?} in hello (expected \"VCAN\"); not a vcan client?")]
    HelloMagic([u8; 4]),
    #[error("unknown role {0} in hello")]
    UnknownRole(u8),
    #[error("hello options 0x{0:02X} have unknown bits set")]
    HelloOptions(u8),
    #[error("bad magic {0:02X?} in welcome (expected \"VCAN\"); not a vcan hub?")]
    WelcomeMagic([u8; 4]),
    #[error("hub speaks protocol version {0}, this client speaks {PROTOCOL_VERSION}")]
    Version(u16),
    #[error("stats reply claims {count} nodes but is only {len} bytes")]
    TooManyNodes { count: usize, len: usize },
    #[error("node connected flag {0} is not 0 or 1")]
    ConnectedFlag(u8),
    #[error("unknown message type 0x{0:02X}")]
    UnknownType(u8),
    #[error("message of type 0x{kind:02X} claims a {len}-byte body (limit {MAX_BODY})")]
    BodyTooLong { kind: u8, len: usize },
    #[error("stream is unusable after an earlier protocol error")]
    Unusable,
}

/// A bounds-checked reader over one message body.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    message: &'static str,
}

impl<'a> Cursor<'a> {
    fn new(bytes: &'a [u8], message: &'static str) -> Self {
        Cursor {
            bytes,
            pos: 0,
            message,
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).filter(|&end| end <= self.bytes.len());
        match end {
            Some(end) => {
                let s = &self.bytes[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(DecodeError::Truncated {
                message: self.message,
                len: self.bytes.len(),
            }),
        }
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn name(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let len = usize::from(self.u8()?);
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::InvalidUtf8 { field })
    }

    fn filters(&mut self) -> Result<Vec<Filter>, DecodeError> {
        let count = usize::from(self.u16()?);
        if count > MAX_FILTERS {
            return Err(DecodeError::TooManyFilters(count));
        }
        if count * FILTER_LEN > self.bytes.len() - self.pos {
            return Err(DecodeError::FiltersTruncated {
                message: self.message,
                count,
            });
        }
        let mut filters = Vec::with_capacity(count);
        for _ in 0..count {
            let id = self.u32()?;
            let mask = self.u32()?;
            let flags = self.u8()?;
            if flags & !1 != 0 {
                return Err(DecodeError::FilterFlags(flags));
            }
            filters.push(Filter {
                id,
                mask,
                inverted: flags & 1 != 0,
            });
        }
        Ok(filters)
    }

    fn frame(&mut self) -> Result<Frame, DecodeError> {
        let can_id = self.u32()?;
        let fd_flags = self.u8()?;
        let len = self.u8()?;
        decode_frame_fields(can_id, fd_flags, len, self)
    }

    fn finish(&self) -> Result<(), DecodeError> {
        if self.pos == self.bytes.len() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes {
                message: self.message,
                count: self.bytes.len() - self.pos,
            })
        }
    }
}

fn decode_frame_fields(
    can_id: u32,
    fd_flags: u8,
    len: u8,
    cur: &mut Cursor<'_>,
) -> Result<Frame, DecodeError> {
    let len = usize::from(len);
    if can_id & CAN_ERR_FLAG != 0 {
        if can_id & (CAN_EFF_FLAG | CAN_RTR_FLAG) != 0 || fd_flags != 0 {
            return Err(DecodeError::ErrorFrameFlags { can_id, fd_flags });
        }
        if len != 8 {
            return Err(DecodeError::ErrorFrameLength(len));
        }
        let data = cur.array::<8>()?;
        return Ok(Frame::error(can_id & EFF_MAX, data)?);
    }
    let id = CanId::from_linux(can_id).map_err(|e| match e {
        FrameError::StandardIdOutOfRange(id) => DecodeError::StandardIdOutOfRange(id),
        other => DecodeError::Frame(other),
    })?;
    if fd_flags == 0 {
        if can_id & CAN_RTR_FLAG != 0 {
            return Ok(Frame::remote(id, len as u8)?);
        }
        if len > 64 {
            return Err(DecodeError::FrameLength(len));
        }
        let data = cur.take(len)?;
        return Ok(Frame::data(id, data)?);
    }
    if fd_flags & FdFlags::FDF == 0 || fd_flags & !(FdFlags::FDF | FdFlags::BRS | FdFlags::ESI) != 0 {
        return Err(DecodeError::FdFlags(fd_flags));
    }
    if can_id & CAN_RTR_FLAG != 0 {
        return Err(DecodeError::RemoteFd);
    }
    if len > 64 {
        return Err(DecodeError::FrameLength(len));
    }
    let data = cur.take(len)?;
    Ok(Frame::fd(id, data, FdFlags::from_bits(fd_flags))?)
}

/// Decodes one message body of type `kind`.
pub fn decode_body(kind: u8, body: &[u8]) -> Result<Message, DecodeError> {
    let msg = match kind {
        SEND => {
            let mut cur = Cursor::new(body, "send");
            let frame = cur.frame()?;
            cur.finish()?;
            Message::Send(frame)
        }
        DELIVER => {
            let mut cur = Cursor::new(body, "deliver");
            let seq = cur.u64()?;
            let timestamp_ns = cur.u64()?;
            let flags = cur.u8()?;
            if flags & !1 != 0 {
                return Err(DecodeError::DeliverFlags(flags));
            }
            let frame = cur.frame()?;
            cur.finish()?;
            Message::Deliver(Delivery {
                seq,
                timestamp_ns,
                own: flags & 1 != 0,
                frame,
            })
        }
        HELLO => {
            let mut cur = Cursor::new(body, "hello");
            let magic = cur.array::<4>()?;
            if magic != MAGIC {
                return Err(DecodeError::HelloMagic(magic));
            }
            let version = cur.u16()?;
            let role = match cur.u8()? {
                0 => Role::Node,
                1 => Role::Control,
                r => return Err(DecodeError::UnknownRole(r)),
            };
            let options = cur.u8()?;
            if options & !(OPT_RECV_OWN | OPT_WANT_ERRORS | OPT_FD) != 0 {
                return Err(DecodeError::HelloOptions(options));
            }
            let name = cur.name("node name")?;
            let filters = cur.filters()?;
            cur.finish()?;
            Message::Hello(Hello {
                version,
                role,
                name,
                recv_own: options & OPT_RECV_OWN != 0,
                want_errors: options & OPT_WANT_ERRORS != 0,
                fd: options & OPT_FD != 0,
                filters,
            })
        }
        WELCOME => {
            let mut cur = Cursor::new(body, "welcome");
            let magic = cur.array::<4>()?;
            if magic != MAGIC {
                return Err(DecodeError::WelcomeMagic(magic));
            }
            let version = cur.u16()?;
            if version != PROTOCOL_VERSION {
                return Err(DecodeError::Version(version));
            }
            let node_id = cur.u32()?;
            let bus = cur.name("bus name")?;
            cur.finish()?;
            Message::Welcome { node_id, bus }
        }
        REFUSED => Message::Refused(String::from_utf8_lossy(body).into_owned()),
        SET_FILTERS => {
            let mut cur = Cursor::new(body, "set-filters");
            let filters = cur.filters()?;
            cur.finish()?;
            Message::SetFilters(filters)
        }
        STATS_REQUEST => {
            Cursor::new(body, "stats-request").finish()?;
            Message::StatsRequest
        }
        STATS_REPLY => {
            let mut cur = Cursor::new(body, "stats-reply");
            let frames = cur.u64()?;
            let dropped = cur.u64()?;
            let name = cur.name("bus name")?;
            let count = cur.u32()? as usize;
            // Each node takes at least 30 bytes, which bounds the allocation by the body size.
            if count > body.len() / 30 {
                return Err(DecodeError::TooManyNodes {
                    count,
                    len: body.len(),
                });
            }
            let mut nodes = Vec::with_capacity(count);
            for _ in 0..count {
                let node = cur.u32()?;
                let sent = cur.u64()?;
                let delivered = cur.u64()?;
                let dropped = cur.u64()?;
                let connected = match cur.u8()? {
                    0 => false,
                    1 => true,
                    c => return Err(DecodeError::ConnectedFlag(c)),
                };
                let name = cur.name("node name")?;
                nodes.push(NodeStats {
                    node,
                    name,
                    sent,
                    delivered,
                    dropped,
                    connected,
                });
            }
            cur.finish()?;
            Message::StatsReply(HubStats {
                name,
                frames,
                dropped,
                nodes,
            })
        }
        other => return Err(DecodeError::UnknownType(other)),
    };
    Ok(msg)
}

/// A streaming decoder: feed it bytes as they arrive (in any split) and take whole messages out.
///
/// The buffer is compacted lazily, so decoding many messages from one large read is a sequence of
/// in-place parses.
#[derive(Debug)]
pub struct Decoder {
    buf: Vec<u8>,
    start: usize,
    peer: String,
    failed: bool,
}

impl Decoder {
    /// A decoder for bytes from `peer` (named in errors).
    pub fn new(peer: impl Into<String>) -> Self {
        Decoder {
            buf: Vec::with_capacity(64 * 1024),
            start: 0,
            peer: peer.into(),
            failed: false,
        }
    }

    /// The peer name used in errors.
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// Renames the peer (for example once the handshake told its node name).
    pub fn set_peer(&mut self, peer: impl Into<String>) {
        self.peer = peer.into();
    }

    /// Appends received bytes.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.make_room(bytes.len());
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received and not yet consumed as messages.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Whether a whole message is buffered (so [`Decoder::next_message`] returns one or an error).
    pub fn has_message(&self) -> bool {
        self.peek_len().is_some_and(|total| self.buffered() >= total) || self.failed
    }

    fn peek_len(&self) -> Option<usize> {
        let head = self.buf.get(self.start..self.start + HEADER_LEN)?;
        let word = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        Some(HEADER_LEN + (word & 0x00FF_FFFF) as usize)
    }

    fn make_room(&mut self, extra: usize) {
        if self.start > 0 && (self.start == self.buf.len() || self.buf.capacity() - self.buf.len() < extra) {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }

    /// Reads once from `reader` into the buffer (up to `max` bytes); returns the byte count (0 at EOF).
    pub fn read_from(&mut self, reader: &mut impl io::Read, max: usize) -> io::Result<usize> {
        self.make_room(max);
        let old = self.buf.len();
        self.buf.resize(old + max, 0);
        let result = reader.read(&mut self.buf[old..]);
        let n = *result.as_ref().unwrap_or(&0);
        self.buf.truncate(old + n);
        result
    }

    /// Reads once from a raw socket with `recv(2)` and the given flags (for example `MSG_DONTWAIT`).
    pub fn recv_from_fd(&mut self, fd: std::os::fd::RawFd, max: usize, flags: i32) -> io::Result<usize> {
        self.make_room(max);
        self.buf.reserve(max);
        let old = self.buf.len();
        let spare = self.buf.spare_capacity_mut();
        let want = spare.len().min(max);
        // SAFETY: `spare` is writable memory of at least `want` bytes owned by `self.buf`; recv writes at
        // most `want` bytes into it and we only mark the bytes it reported as initialised.
        let n = unsafe { libc::recv(fd, spare.as_mut_ptr().cast(), want, flags) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        // SAFETY: recv initialised the first `n` (<= want) bytes past `old`.
        unsafe { self.buf.set_len(old + n) };
        Ok(n)
    }

    /// Takes the next whole message: `Ok(None)` if more bytes are needed, an error for malformed bytes
    /// (after which the decoder keeps returning the error).
    pub fn next_message(&mut self) -> Result<Option<Message>, BusError> {
        if self.failed {
            return Err(self.error(DecodeError::Unusable));
        }
        let Some(total) = self.peek_len() else {
            return Ok(None);
        };
        let kind = self.buf[self.start + 3];
        if total - HEADER_LEN > MAX_BODY {
            self.failed = true;
            return Err(self.error(DecodeError::BodyTooLong {
                kind,
                len: total - HEADER_LEN,
            }));
        }
        if !is_known_type(kind) {
            self.failed = true;
            return Err(self.error(DecodeError::UnknownType(kind)));
        }
        if self.buffered() < total {
            return Ok(None);
        }
        let body = &self.buf[self.start + HEADER_LEN..self.start + total];
        let result = decode_body(kind, body);
        self.start += total;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        result.map(Some).map_err(|reason| {
            self.failed = true;
            self.error(reason)
        })
    }

    fn error(&self, reason: DecodeError) -> BusError {
        BusError::Protocol {
            endpoint: self.peer.clone(),
            reason: reason.to_string(),
        }
    }
}

fn is_known_type(kind: u8) -> bool {
    matches!(
        kind,
        HELLO | WELCOME | REFUSED | SEND | DELIVER | SET_FILTERS | STATS_REQUEST | STATS_REPLY
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames() -> Vec<Frame> {
        [
            "123#1122334455667788",
            "123#",
            "1ABCDEF0#01",
            "7FF#R",
            "00000001#R8",
            "123##1AABB",
            "1FFFFFFF##3",
            "20000004#0004000000000000",
        ]
        .iter()
        .map(|t| t.parse().unwrap())
        .chain(std::iter::once(
            Frame::fd(CanId::Standard(5), &[0x77; 64], FdFlags::default()).unwrap(),
        ))
        .collect()
    }

    fn all_messages() -> Vec<Message> {
        let mut msgs = vec![
            Message::Hello(Hello {
                version: PROTOCOL_VERSION,
                role: Role::Node,
                name: "hvac".into(),
                recv_own: true,
                want_errors: false,
                fd: true,
                filters: vec![
                    Filter::new(0x123, 0x7FF),
                    Filter::inverted(CAN_EFF_FLAG, CAN_EFF_FLAG),
                ],
            }),
            Message::Hello(Hello {
                version: PROTOCOL_VERSION,
                role: Role::Control,
                name: String::new(),
                recv_own: false,
                want_errors: true,
                fd: false,
                filters: vec![],
            }),
            Message::Welcome {
                node_id: 7,
                bus: "body".into(),
            },
            Message::Refused("unsupported version".into()),
            Message::SetFilters(vec![Filter::new(1, 2)]),
            Message::SetFilters(vec![]),
            Message::StatsRequest,
            Message::StatsReply(HubStats {
                name: "bus".into(),
                frames: 10,
                dropped: 2,
                nodes: vec![
                    NodeStats {
                        node: 1,
                        name: "a".into(),
                        sent: 5,
                        delivered: 3,
                        dropped: 2,
                        connected: true,
                    },
                    NodeStats {
                        node: 2,
                        name: "ü".into(),
                        sent: 0,
                        delivered: 0,
                        dropped: 0,
                        connected: false,
                    },
                ],
            }),
        ];
        for (i, f) in frames().into_iter().enumerate() {
            msgs.push(Message::Send(f.clone()));
            msgs.push(Message::Deliver(Delivery {
                seq: i as u64 * 1_000_000_007,
                timestamp_ns: u64::MAX - i as u64,
                own: i % 2 == 0,
                frame: f,
            }));
        }
        msgs
    }

    fn encode_all(msgs: &[Message]) -> Vec<u8> {
        let mut out = Vec::new();
        for m in msgs {
            m.encode(&mut out).unwrap();
        }
        out
    }

    fn decode_all(dec: &mut Decoder) -> Result<Vec<Message>, BusError> {
        let mut got = Vec::new();
        while let Some(m) = dec.next_message()? {
            got.push(m);
        }
        Ok(got)
    }

    #[test]
    fn round_trip_all_messages_in_one_buffer() {
        let msgs = all_messages();
        let bytes = encode_all(&msgs);
        let mut dec = Decoder::new("test");
        dec.extend(&bytes);
        assert_eq!(decode_all(&mut dec).unwrap(), msgs);
        assert_eq!(dec.buffered(), 0);
    }

    #[test]
    fn round_trip_byte_by_byte() {
        let msgs = all_messages();
        let bytes = encode_all(&msgs);
        let mut dec = Decoder::new("test");
        let mut got = Vec::new();
        for b in &bytes {
            dec.extend(std::slice::from_ref(b));
            while let Some(m) = dec.next_message().unwrap() {
                got.push(m);
            }
        }
        assert_eq!(got, msgs);
    }

    #[test]
    fn deliver_size_and_own_offset() {
        let frame: Frame = "123#1122334455667788".parse().unwrap();
        let mut out = Vec::new();
        encode_deliver(&mut out, 1, 2, false, &frame);
        assert_eq!(out.len(), 35);
        assert_eq!(out[DELIVER_OWN_OFFSET], 0);
        out[DELIVER_OWN_OFFSET] = 1;
        let mut dec = Decoder::new("t");
        dec.extend(&out);
        match dec.next_message().unwrap() {
            Some(Message::Deliver(d)) => assert!(d.own),
            other => panic!("{other:?}"),
        }
        let mut out = Vec::new();
        encode_send(&mut out, &frame);
        assert_eq!(out.len(), 18);
    }

    fn expect_protocol_error(bytes: &[u8], needle: &str) {
        let mut dec = Decoder::new("node `x`");
        dec.extend(bytes);
        match decode_all(&mut dec) {
            Err(BusError::Protocol { endpoint, reason }) => {
                assert_eq!(endpoint, "node `x`");
                assert!(reason.contains(needle), "reason `{reason}` lacks `{needle}`");
            }
            other => panic!("expected a protocol error containing `{needle}`, got {other:?}"),
        }
        // The decoder stays failed.
        assert!(dec.next_message().is_err());
    }

    fn raw(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        put_header(&mut out, kind, body.len());
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn rejects_malformed_input_with_reasons() {
        expect_protocol_error(&raw(0x7F, &[]), "unknown message type 0x7F");
        let mut huge = ((MAX_BODY as u32 + 1) | (u32::from(SEND) << 24))
            .to_le_bytes()
            .to_vec();
        huge.extend_from_slice(&[0; 16]);
        expect_protocol_error(&huge, "limit");
        let mut hello = Vec::new();
        encode_hello(
            &mut hello,
            &Hello {
                version: 1,
                role: Role::Node,
                name: "n".into(),
                recv_own: false,
                want_errors: false,
                fd: false,
                filters: vec![],
            },
        )
        .unwrap();
        let mut bad_magic = hello.clone();
        bad_magic[HEADER_LEN] = b'X';
        expect_protocol_error(&bad_magic, "bad magic");
        let mut bad_role = hello.clone();
        bad_role[HEADER_LEN + 6] = 9;
        expect_protocol_error(&bad_role, "unknown role");
        let mut bad_opts = hello.clone();
        bad_opts[HEADER_LEN + 7] = 0x80;
        expect_protocol_error(&bad_opts, "options");
        // Trailing bytes.
        let mut send = Vec::new();
        encode_send(&mut send, &"123#11".parse().unwrap());
        let mut long = send[HEADER_LEN..].to_vec();
        long.push(0);
        expect_protocol_error(&raw(SEND, &long), "trailing");
        // Truncated bodies.
        expect_protocol_error(&raw(SEND, &send[HEADER_LEN..send.len() - 1]), "truncated");
        expect_protocol_error(&raw(SEND, &[]), "truncated");
        // Frame field validation.
        let frame = |id: u32, fd: u8, len: u8, data: &[u8]| {
            let mut b = id.to_le_bytes().to_vec();
            b.push(fd);
            b.push(len);
            b.extend_from_slice(data);
            raw(SEND, &b)
        };
        expect_protocol_error(&frame(0x800, 0, 0, &[]), "above 0x7FF");
        expect_protocol_error(&frame(0x123, 0, 9, &[0; 9]), "too long");
        expect_protocol_error(&frame(0x123, 0, 200, &[0; 200]), "above 64");
        expect_protocol_error(&frame(0x123 | CAN_RTR_FLAG, 0, 9, &[]), "DLC");
        expect_protocol_error(&frame(0x123, 0x01, 0, &[]), "fd flags");
        expect_protocol_error(&frame(0x123, 0x0C, 0, &[]), "fd flags");
        expect_protocol_error(&frame(0x123, 0x04, 9, &[0; 9]), "FD length");
        expect_protocol_error(&frame(0x123 | CAN_RTR_FLAG, 0x04, 0, &[]), "remote");
        expect_protocol_error(&frame(CAN_ERR_FLAG | CAN_EFF_FLAG, 0, 8, &[0; 8]), "error frame");
        expect_protocol_error(&frame(CAN_ERR_FLAG, 0, 7, &[0; 7]), "not 8");
        // Filters.
        let mut many = (MAX_FILTERS as u16 + 1).to_le_bytes().to_vec();
        many.extend(std::iter::repeat_n(0u8, (MAX_FILTERS + 1) * FILTER_LEN));
        expect_protocol_error(&raw(SET_FILTERS, &many), "filters");
        let mut bad_flag = 1u16.to_le_bytes().to_vec();
        bad_flag.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 2]);
        expect_protocol_error(&raw(SET_FILTERS, &bad_flag), "filter flags");
        // Welcome with another version.
        let mut welcome = Vec::new();
        encode_welcome(&mut welcome, 1, "b").unwrap();
        welcome[HEADER_LEN + 4] = 2;
        expect_protocol_error(&welcome, "version 2");
        // Invalid UTF-8 name.
        let mut bad_name = hello.clone();
        bad_name[HEADER_LEN + 9] = 0xFF;
        expect_protocol_error(&bad_name, "UTF-8");
        // Stats reply claiming too many nodes.
        let mut stats = Vec::new();
        stats.extend_from_slice(&[0; 16]);
        stats.push(0);
        stats.extend_from_slice(&u32::MAX.to_le_bytes());
        expect_protocol_error(&raw(STATS_REPLY, &stats), "claims");
    }

    #[test]
    fn decode_errors_name_the_bad_field() {
        let send = |can_id: u32| {
            let mut b = can_id.to_le_bytes().to_vec();
            b.extend_from_slice(&[0, 0]);
            b
        };
        assert_eq!(
            decode_body(SEND, &send(0x923)),
            Err(DecodeError::StandardIdOutOfRange(0x923))
        );
        assert_eq!(
            decode_body(SEND, &send(0x800 | CAN_RTR_FLAG)),
            Err(DecodeError::StandardIdOutOfRange(0x800))
        );
        assert_eq!(
            decode_body(SEND, &send(0x123 | CAN_EFF_FLAG)),
            Ok(Message::Send("00000123#".parse().unwrap()))
        );
        assert_eq!(
            decode_body(SEND, &[1, 2]),
            Err(DecodeError::Truncated {
                message: "send",
                len: 2
            })
        );
        assert_eq!(decode_body(0x7F, &[]), Err(DecodeError::UnknownType(0x7F)));
        assert_eq!(
            DecodeError::StandardIdOutOfRange(0x923).to_string(),
            "standard frame id 0x923 is above 0x7FF"
        );
    }

    #[test]
    fn encoder_rejects_unencodable_values() {
        let mut out = vec![1, 2, 3];
        let long = "x".repeat(MAX_NAME + 1);
        assert!(matches!(
            encode_welcome(&mut out, 1, &long),
            Err(EncodeError::NameTooLong(_))
        ));
        let filters = vec![Filter::new(0, 0); MAX_FILTERS + 1];
        assert!(matches!(
            encode_set_filters(&mut out, &filters),
            Err(EncodeError::TooManyFilters(_))
        ));
        // Failed encodes leave the buffer as it was.
        assert_eq!(out, vec![1, 2, 3]);
    }

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
    fn random_and_truncated_bytes_never_panic() {
        let mut rng = XorShift(0xDEAD_BEEF);
        let valid = encode_all(&all_messages());
        for round in 0..20_000 {
            let mut bytes: Vec<u8> = if round % 2 == 0 {
                // Random garbage with plausible headers sprinkled in.
                let len = (rng.next() % 200) as usize;
                let mut b: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                if len >= 4 && rng.next().is_multiple_of(2) {
                    let kinds = [
                        HELLO,
                        WELCOME,
                        REFUSED,
                        SEND,
                        DELIVER,
                        SET_FILTERS,
                        STATS_REQUEST,
                        STATS_REPLY,
                    ];
                    b[3] = kinds[(rng.next() % kinds.len() as u64) as usize];
                    b[2] = 0;
                    b[1] = 0;
                }
                b
            } else {
                // A valid stream, truncated and with bytes flipped.
                let cut = (rng.next() as usize) % valid.len();
                let mut b = valid[..cut].to_vec();
                for _ in 0..(rng.next() % 4) {
                    if !b.is_empty() {
                        let i = (rng.next() as usize) % b.len();
                        b[i] ^= rng.next() as u8;
                    }
                }
                b
            };
            let mut dec = Decoder::new("fuzz");
            // Feed in random splits.
            while !bytes.is_empty() {
                let n = 1 + (rng.next() as usize) % bytes.len();
                let rest = bytes.split_off(n);
                dec.extend(&bytes);
                bytes = rest;
                while let Ok(Some(_)) = dec.next_message() {}
            }
        }
    }
}
