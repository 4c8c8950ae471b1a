//! The one implementation of Linux's `CAN_RAW` socket semantics, for every place that gives an unmodified
//! program SocketCAN without a kernel: the VMM (guest syscalls) and the seccomp emulation of native and
//! container processes ([`crate::emu`]).
//!
//! A [`RawSocket`] is one `socket(AF_CAN, SOCK_RAW, CAN_RAW)`: its options ([`RawOptions`]), the interface it
//! is bound to, and its node on the interface's bus (a [`crate::CanSocket`] joined with [`crate::open`] at
//! `bind`). Interfaces come from a list of `(name, endpoint)` ([`Interfaces`], ifindex `base`, `base + 1`,
//! ... in order). Options follow the kernel:
//!
//! * `CAN_RAW_FILTER`: the default is one accept-all filter; an empty list receives nothing. The filters are
//!   given to the hub (less traffic) and applied again locally (exactness, and `CAN_RAW_JOIN_FILTERS`,
//!   which the hub cannot express).
//! * `CAN_RAW_ERR_FILTER`: error frames whose class matches the mask are delivered.
//! * `CAN_RAW_RECV_OWN_MSGS` / `CAN_RAW_LOOPBACK`: own frames come back flagged `MSG_CONFIRM`. The hub
//!   always echoes a socket's frames; whether an echo is delivered is decided when the frame is sent, as
//!   in the kernel, so changing the options later affects only later frames.
//! * `CAN_RAW_FD_FRAMES`: 72-byte `canfd_frame` I/O is allowed; FD frames are delivered only then.
//! * `SO_TIMESTAMPNS` / `SO_TIMESTAMP`: `recvmsg` adds the hub's receive time as a control message
//!   ([`control_messages`]).
//!
//! Frames are read and written as the kernel's `struct can_frame` (16 bytes) and `struct canfd_frame` (72
//! bytes): [`encode_frame`], [`decode_frame`]. Bad lengths, a length code above 8 (64 for FD), FD frames on a
//! socket without `CAN_RAW_FD_FRAMES` and standard ids above 0x7FF are `EINVAL`, as in the kernel.

use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::time::Duration;

use crate::errno::Errno;
use crate::frame::{CAN_ERR_FLAG, CAN_RTR_FLAG, EFF_MAX, FD_LENGTHS};
use crate::{CanId, Endpoint, FdFlags, Filter, Frame, OpenOptions, Received};

pub const AF_CAN: i32 = 29;
pub const CAN_RAW: i32 = 1;
pub const SOL_CAN_RAW: i32 = 101;
pub const CAN_RAW_FILTER: i32 = 1;
pub const CAN_RAW_ERR_FILTER: i32 = 2;
pub const CAN_RAW_LOOPBACK: i32 = 3;
pub const CAN_RAW_RECV_OWN_MSGS: i32 = 4;
pub const CAN_RAW_FD_FRAMES: i32 = 5;
pub const CAN_RAW_JOIN_FILTERS: i32 = 6;
pub const CAN_MTU: usize = 16;
pub const CANFD_MTU: usize = 72;
/// `CAN_RAW_FILTER_MAX`.
pub const FILTER_MAX: usize = 512;
/// `sizeof(struct sockaddr_can)`.
pub const SOCKADDR_CAN_LEN: usize = 24;
/// Frames pulled from the bus connection at a time.
pub const RX_BATCH: usize = 64;

pub const SOCK_RAW: i32 = 3;
pub const SOL_SOCKET: i32 = 1;
pub const SO_TYPE: i32 = 3;
pub const SO_ERROR: i32 = 4;
pub const SO_SNDBUF: i32 = 7;
pub const SO_RCVBUF: i32 = 8;
pub const SO_RCVTIMEO: i32 = 20;
pub const SO_TIMESTAMP: i32 = 29;
pub const SO_SNDBUFFORCE: i32 = 32;
pub const SO_RCVBUFFORCE: i32 = 33;
pub const SO_TIMESTAMPNS: i32 = 35;
pub const SO_PROTOCOL: i32 = 38;
pub const SO_DOMAIN: i32 = 39;
pub const MSG_DONTROUTE: i32 = 0x4;
pub const MSG_CTRUNC: i32 = 0x8;
pub const MSG_TRUNC: i32 = 0x20;
pub const MSG_CONFIRM: i32 = 0x800;

/// The SocketCAN interfaces a program sees: `(name, endpoint)`, ifindex = `base` + position.
#[derive(Debug, Clone, Default)]
pub struct Interfaces {
    list: Vec<(String, Endpoint)>,
    base: u32,
}

impl Interfaces {
    /// Interfaces numbered from 1 (a VM, where they are the only interfaces).
    pub fn new(list: Vec<(String, Endpoint)>) -> Interfaces {
        Interfaces::with_base(list, 1)
    }

    /// Interfaces numbered from `base` (a host network namespace, whose own interfaces come first).
    pub fn with_base(list: Vec<(String, Endpoint)>, base: u32) -> Interfaces {
        Interfaces {
            list,
            base: base.max(1),
        }
    }

    pub fn index_of(&self, name: &str) -> Option<u32> {
        self.list
            .iter()
            .position(|(n, _)| n == name)
            .map(|i| i as u32 + self.base)
    }

    fn position(&self, ifindex: u32) -> Option<usize> {
        usize::try_from(ifindex.checked_sub(self.base)?).ok()
    }

    pub fn name_of(&self, ifindex: u32) -> Option<&str> {
        self.list.get(self.position(ifindex)?).map(|(n, _)| n.as_str())
    }

    pub fn endpoint(&self, ifindex: u32) -> Option<&Endpoint> {
        self.list.get(self.position(ifindex)?).map(|(_, e)| e)
    }

    /// The ifindex of the only interface, for `bind` to ifindex 0 ("any"), which one bus node per socket
    /// can only honour with a single interface.
    pub fn only(&self) -> Option<u32> {
        (self.list.len() == 1).then_some(self.base)
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

/// The options of a `CAN_RAW` socket (what a VM snapshot keeps).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RawOptions {
    /// `(can_id, can_mask)` pairs; the kernel default is one accept-all filter.
    pub filters: Vec<(u32, u32)>,
    pub err_mask: u32,
    pub loopback: bool,
    pub recv_own: bool,
    pub fd_frames: bool,
    pub join_filters: bool,
    pub timestamp_ns: bool,
    pub timestamp_us: bool,
    pub rcvbuf: i32,
    pub sndbuf: i32,
}

impl Default for RawOptions {
    fn default() -> Self {
        RawOptions {
            filters: vec![(0, 0)],
            err_mask: 0,
            loopback: true,
            recv_own: false,
            fd_frames: false,
            join_filters: false,
            timestamp_ns: false,
            timestamp_us: false,
            rcvbuf: 212_992,
            sndbuf: 212_992,
        }
    }
}

fn option_int(bytes: &[u8]) -> Result<i32, Errno> {
    // The kernel takes an int option from at least 4 bytes.
    match bytes.get(..4) {
        Some(b) => Ok(i32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        None => Err(Errno::EINVAL),
    }
}

impl RawOptions {
    fn local_filters(&self) -> Vec<Filter> {
        self.filters
            .iter()
            .map(|&(id, mask)| Filter::new(id, mask))
            .collect()
    }

    /// Whether a received frame passes this socket's options (an own frame with the options of now).
    pub fn accepts(&self, rx: &Received) -> bool {
        (!rx.own || self.wants_own()) && self.passes(&rx.frame)
    }

    /// Whether the echo of a frame sent now is wanted (`RECV_OWN_MSGS` with `LOOPBACK`).
    fn wants_own(&self) -> bool {
        self.recv_own && self.loopback
    }

    /// Whether a frame passes the filters, `ERR_FILTER` and `FD_FRAMES`.
    fn passes(&self, frame: &Frame) -> bool {
        if frame.is_fd() && !self.fd_frames {
            return false;
        }
        if let Frame::Error { class, .. } = *frame {
            return class & self.err_mask != 0;
        }
        let filters = self.local_filters();
        if filters.is_empty() {
            return false;
        }
        if self.join_filters {
            filters.iter().all(|f| f.matches(frame))
        } else {
            filters.iter().any(|f| f.matches(frame))
        }
    }

    /// The filters handed to the hub.
    fn hub_filters(&self) -> Vec<Filter> {
        if self.join_filters {
            Vec::new()
        } else if self.filters.is_empty() {
            // Matches no data frame (inverted accept-all).
            vec![Filter::inverted(0, 0)]
        } else {
            self.local_filters()
        }
    }

    /// `setsockopt(level, name, bytes)` for the options kept here (`SOL_CAN_RAW`, and `SOL_SOCKET`'s
    /// timestamps and buffer sizes; other `SOL_SOCKET` options are accepted and ignored).
    pub fn set(&mut self, level: i32, name: i32, bytes: &[u8]) -> Result<(), Errno> {
        let flag = || option_int(bytes).map(|v| v != 0);
        match (level, name) {
            (SOL_CAN_RAW, CAN_RAW_FILTER) => self.filters = parse_filters(bytes)?,
            (SOL_CAN_RAW, CAN_RAW_ERR_FILTER) => self.err_mask = option_int(bytes)? as u32,
            (SOL_CAN_RAW, CAN_RAW_LOOPBACK) => self.loopback = flag()?,
            (SOL_CAN_RAW, CAN_RAW_RECV_OWN_MSGS) => self.recv_own = flag()?,
            (SOL_CAN_RAW, CAN_RAW_FD_FRAMES) => self.fd_frames = flag()?,
            (SOL_CAN_RAW, CAN_RAW_JOIN_FILTERS) => self.join_filters = flag()?,
            (SOL_CAN_RAW, _) => return Err(Errno::ENOPROTOOPT),
            (SOL_SOCKET, SO_TIMESTAMPNS) => self.timestamp_ns = flag()?,
            (SOL_SOCKET, SO_TIMESTAMP) => self.timestamp_us = flag()?,
            (SOL_SOCKET, SO_RCVBUF | SO_RCVBUFFORCE) => {
                self.rcvbuf = option_int(bytes)?.clamp(2304, 1 << 26) * 2
            }
            (SOL_SOCKET, SO_SNDBUF | SO_SNDBUFFORCE) => {
                self.sndbuf = option_int(bytes)?.clamp(2304, 1 << 26) * 2
            }
            (SOL_SOCKET, _) => {}
            _ => return Err(Errno::ENOPROTOOPT),
        }
        Ok(())
    }

    /// `getsockopt(level, name)` with a caller buffer of `cap` bytes: the value's bytes (an int option is
    /// truncated to `cap` as the kernel does; a filter list that does not fit is `ERANGE`). `error` is the
    /// socket's pending error (`SO_ERROR`).
    pub fn get(&self, level: i32, name: i32, cap: usize, error: Option<Errno>) -> Result<Vec<u8>, Errno> {
        let int = |v: i32| v.to_le_bytes().to_vec();
        let value = match (level, name) {
            (SOL_CAN_RAW, CAN_RAW_FILTER) => {
                let mut b = Vec::new();
                for (id, mask) in &self.filters {
                    b.extend_from_slice(&id.to_le_bytes());
                    b.extend_from_slice(&mask.to_le_bytes());
                }
                if b.len() > cap {
                    return Err(Errno::ERANGE);
                }
                b
            }
            (SOL_CAN_RAW, CAN_RAW_ERR_FILTER) => int(self.err_mask as i32),
            (SOL_CAN_RAW, CAN_RAW_LOOPBACK) => int(self.loopback as i32),
            (SOL_CAN_RAW, CAN_RAW_RECV_OWN_MSGS) => int(self.recv_own as i32),
            (SOL_CAN_RAW, CAN_RAW_FD_FRAMES) => int(self.fd_frames as i32),
            (SOL_CAN_RAW, CAN_RAW_JOIN_FILTERS) => int(self.join_filters as i32),
            (SOL_SOCKET, SO_TYPE) => int(SOCK_RAW),
            (SOL_SOCKET, SO_ERROR) => int(error.map_or(0, |e| e.0)),
            (SOL_SOCKET, SO_DOMAIN) => int(AF_CAN),
            (SOL_SOCKET, SO_PROTOCOL) => int(CAN_RAW),
            (SOL_SOCKET, SO_RCVBUF) => int(self.rcvbuf),
            (SOL_SOCKET, SO_SNDBUF) => int(self.sndbuf),
            (SOL_SOCKET, SO_TIMESTAMPNS) => int(self.timestamp_ns as i32),
            (SOL_SOCKET, SO_TIMESTAMP) => int(self.timestamp_us as i32),
            _ => return Err(Errno::ENOPROTOOPT),
        };
        let n = value.len().min(cap);
        Ok(value[..n].to_vec())
    }
}

/// A `CAN_RAW` socket: options, binding and its node on the bus.
pub struct RawSocket {
    pub opts: RawOptions,
    /// Interface index it is bound to.
    pub bound: Option<u32>,
    /// Node name on the bus.
    pub node_name: String,
    conn: Option<Box<dyn crate::CanSocket>>,
    rx: VecDeque<Received>,
    /// Set when the bus connection failed; reads and writes report it.
    failed: Option<Errno>,
    /// `SO_RCVTIMEO` in microseconds (0 = block forever).
    pub rcvtimeo_us: u64,
    /// Frames sent and whether their echo is wanted, decided when sent as the kernel does: the hub always
    /// echoes (so `RECV_OWN_MSGS`/`LOOPBACK` change without rejoining the bus) and each echo is matched here.
    sent: VecDeque<(Frame, bool)>,
}

/// Sent frames remembered for their echo at most.
const SENT_MAX: usize = 4096;

impl std::fmt::Debug for RawSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawSocket")
            .field("opts", &self.opts)
            .field("bound", &self.bound)
            .field("connected", &self.conn.is_some())
            .finish()
    }
}

impl RawSocket {
    pub fn new(node_name: String) -> RawSocket {
        RawSocket {
            opts: RawOptions::default(),
            bound: None,
            node_name,
            conn: None,
            rx: VecDeque::new(),
            failed: None,
            rcvtimeo_us: 0,
            sent: VecDeque::new(),
        }
    }

    /// A socket restored from a snapshot: same options, not connected ([`RawSocket::reconnect`] joins).
    pub fn restored(node_name: String, opts: RawOptions, bound: Option<u32>) -> RawSocket {
        RawSocket {
            opts,
            bound,
            ..RawSocket::new(node_name)
        }
    }

    fn open_options(&self) -> OpenOptions {
        OpenOptions {
            node_name: self.node_name.clone(),
            // Always: whether an echo is wanted is decided per frame when it is sent (`sent`).
            recv_own: true,
            filters: self.opts.hub_filters(),
            want_errors: true,
            fd: true,
        }
    }

    /// `bind` to `ifindex` (0: the only interface): joins its bus.
    pub fn bind(&mut self, ifaces: &Interfaces, ifindex: u32) -> Result<(), Errno> {
        if self.bound.is_some() {
            return Err(Errno::EINVAL);
        }
        let ifindex = match ifindex {
            0 => ifaces.only().ok_or_else(|| {
                tracing::warn!("bind to all CAN interfaces (ifindex 0) needs exactly one interface");
                Errno::EINVAL
            })?,
            i => i,
        };
        let endpoint = ifaces.endpoint(ifindex).ok_or(Errno::ENODEV)?.clone();
        self.connect(&endpoint)?;
        self.bound = Some(ifindex);
        Ok(())
    }

    /// Reconnects a socket that was bound when the snapshot was taken.
    pub fn reconnect(&mut self, ifaces: &Interfaces) -> Result<(), Errno> {
        let Some(ifindex) = self.bound else { return Ok(()) };
        let endpoint = ifaces.endpoint(ifindex).ok_or(Errno::ENODEV)?.clone();
        self.connect(&endpoint)
    }

    fn connect(&mut self, endpoint: &Endpoint) -> Result<(), Errno> {
        match crate::open(endpoint, &self.open_options()) {
            Ok(conn) => {
                tracing::debug!(node = %self.node_name, bus = %endpoint, "CAN_RAW socket joined the bus");
                self.conn = Some(conn);
                self.failed = None;
                Ok(())
            }
            Err(e) => {
                tracing::warn!(node = %self.node_name, bus = %endpoint, error = %e, "cannot join the CAN bus");
                Err(Errno::ENETDOWN)
            }
        }
    }

    /// `setsockopt`: the option (and `SO_RCVTIMEO`), applied to a live connection.
    pub fn setsockopt(
        &mut self,
        ifaces: &Interfaces,
        level: i32,
        name: i32,
        bytes: &[u8],
    ) -> Result<(), Errno> {
        if (level, name) == (SOL_SOCKET, SO_RCVTIMEO) {
            let (Some(sec), Some(usec)) = (bytes.get(0..8), bytes.get(8..16)) else {
                return Err(Errno::EINVAL);
            };
            let sec = i64::from_le_bytes(sec.try_into().map_err(|_| Errno::EINVAL)?);
            let usec = i64::from_le_bytes(usec.try_into().map_err(|_| Errno::EINVAL)?);
            if sec < 0 || !(0..1_000_000).contains(&usec) {
                return Err(Errno::EINVAL);
            }
            self.rcvtimeo_us = (sec as u64).saturating_mul(1_000_000).saturating_add(usec as u64);
            return Ok(());
        }
        let before = self.opts.clone();
        self.opts.set(level, name, bytes)?;
        self.options_changed(ifaces, &before)
    }

    /// `getsockopt` with a caller buffer of `cap` bytes.
    pub fn getsockopt(&self, level: i32, name: i32, cap: usize) -> Result<Vec<u8>, Errno> {
        self.opts.get(level, name, cap, self.failed)
    }

    /// Applies changed options to a live connection: the hub's filters in place (own-message echo needs
    /// nothing: it is decided per sent frame).
    pub fn options_changed(&mut self, _ifaces: &Interfaces, before: &RawOptions) -> Result<(), Errno> {
        if self.conn.is_none() {
            return Ok(());
        }
        if before.hub_filters() != self.opts.hub_filters() {
            let filters = self.opts.hub_filters();
            if let Some(conn) = self.conn.as_mut() {
                conn.set_filters(&filters).map_err(|_| Errno::ENETDOWN)?;
            }
        }
        Ok(())
    }

    /// Moves frames waiting on the bus connection into the local queue, without blocking. Stops at
    /// [`RX_BATCH`] queued frames: the rest waits in the socket and the hub's per-node queue, where the
    /// hub applies (and counts) backpressure, so nothing is dropped here.
    pub fn pump(&mut self) {
        while self.rx.len() < RX_BATCH {
            let Some(conn) = self.conn.as_mut() else { return };
            match conn.recv(Some(Duration::ZERO)) {
                Ok(Some(rx)) => {
                    let wanted = if rx.own { self.echo_wanted(&rx.frame) } else { true };
                    if wanted && self.opts.passes(&rx.frame) {
                        self.rx.push_back(rx);
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(node = %self.node_name, error = %e, "CAN bus connection failed");
                    self.failed = Some(Errno::ENETDOWN);
                    self.conn = None;
                    return;
                }
            }
        }
    }

    /// Whether the echo of an own frame is wanted, as decided when it was sent. Echoes come in send order;
    /// frames the hub did not echo (filtered, dropped) are skipped. An echo of a frame not remembered (sent
    /// before a snapshot was restored) follows the options of now.
    fn echo_wanted(&mut self, frame: &Frame) -> bool {
        match self.sent.iter().position(|(f, _)| f == frame) {
            Some(i) => {
                let wanted = self.sent[i].1;
                self.sent.drain(..=i);
                wanted
            }
            None => self.opts.wants_own(),
        }
    }

    /// True if a frame can be read now (after pulling what the bus has).
    pub fn readable(&mut self) -> bool {
        if self.rx.is_empty() {
            self.pump();
        }
        !self.rx.is_empty()
    }

    /// True if the socket has an error to report (POLLERR).
    pub fn has_error(&self) -> bool {
        self.failed.is_some()
    }

    /// The host fd to wait on for more frames, if connected.
    pub fn wait_fd(&self) -> Option<RawFd> {
        self.conn.as_ref().map(|c| c.raw_fd())
    }

    /// The next received frame without taking it (`MSG_PEEK`).
    pub fn peek(&self) -> Option<Received> {
        self.rx.front().cloned()
    }

    /// Takes the next received frame.
    pub fn take(&mut self) -> Result<Option<Received>, Errno> {
        if let Some(rx) = self.rx.pop_front() {
            return Ok(Some(rx));
        }
        self.pump();
        if let Some(rx) = self.rx.pop_front() {
            return Ok(Some(rx));
        }
        match self.failed {
            Some(e) => Err(e),
            None => Ok(None),
        }
    }

    /// Sends one frame given as the program's bytes (`write`).
    pub fn send(&mut self, bytes: &[u8]) -> Result<usize, Errno> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        let frame = decode_frame(bytes, self.opts.fd_frames)?;
        self.send_frame(&frame).map(|()| bytes.len())
    }

    /// Sends one decoded frame.
    pub fn send_frame(&mut self, frame: &Frame) -> Result<(), Errno> {
        // Unbound: no interface to send on (the kernel's `ENXIO`).
        let conn = self.conn.as_mut().ok_or(Errno::ENXIO)?;
        conn.send(frame).map_err(|e| {
            tracing::warn!(node = %self.node_name, error = %e, "CAN send failed");
            Errno::ENOBUFS
        })?;
        if self.sent.len() >= SENT_MAX {
            self.sent.pop_front();
        }
        self.sent.push_back((frame.clone(), self.opts.wants_own()));
        Ok(())
    }

    /// `sendto`/`sendmsg` with a destination address: it must name the bound interface (or 0).
    pub fn check_destination(&self, addr: &[u8]) -> Result<(), Errno> {
        let ifindex = parse_sockaddr_can(addr)?;
        match self.bound {
            Some(b) if ifindex == b || ifindex == 0 => Ok(()),
            _ => Err(Errno::EINVAL),
        }
    }

    /// Whether the connection exists (bound and joined).
    pub fn connected(&self) -> bool {
        self.conn.is_some()
    }
}

/// Decodes a program's `can_frame` (16 bytes) or `canfd_frame` (72 bytes, only with `fd_enabled`).
pub fn decode_frame(bytes: &[u8], fd_enabled: bool) -> Result<Frame, Errno> {
    let bad = |_| Errno::EINVAL;
    match bytes.len() {
        CAN_MTU => {
            let can_id = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
            let len = bytes[4];
            if len > 8 {
                return Err(Errno::EINVAL);
            }
            if can_id & CAN_ERR_FLAG != 0 {
                let mut data = [0u8; 8];
                data.copy_from_slice(&bytes[8..16]);
                return Frame::error(can_id & EFF_MAX, data).map_err(bad);
            }
            let id = decode_id(can_id)?;
            if can_id & CAN_RTR_FLAG != 0 {
                Frame::remote(id, len).map_err(bad)
            } else {
                Frame::data(id, &bytes[8..8 + usize::from(len)]).map_err(bad)
            }
        }
        CANFD_MTU if fd_enabled => {
            let can_id = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
            if can_id & (CAN_ERR_FLAG | CAN_RTR_FLAG) != 0 {
                return Err(Errno::EINVAL);
            }
            let len = usize::from(bytes[4]);
            if len > 64 {
                return Err(Errno::EINVAL);
            }
            // The kernel rounds a length up to the next valid FD length.
            let padded = FD_LENGTHS.iter().copied().find(|&l| l >= len).unwrap_or(64);
            Frame::fd(
                decode_id(can_id)?,
                &bytes[8..8 + padded],
                FdFlags::from_bits(bytes[5]),
            )
            .map_err(bad)
        }
        _ => Err(Errno::EINVAL),
    }
}

/// The one rule for a `can_id` from outside ([`CanId::from_linux`]): a standard id above 0x7FF is refused
/// (`EINVAL`), as the hub's wire protocol and the kernel backend refuse it.
fn decode_id(can_id: u32) -> Result<CanId, Errno> {
    CanId::from_linux(can_id).map_err(|_| Errno::EINVAL)
}

/// Encodes a frame as a program reads it: 16 bytes for classic and error frames, 72 for FD frames.
pub fn encode_frame(frame: &Frame) -> Vec<u8> {
    let can_id = frame.linux_can_id();
    match frame {
        Frame::Fd { flags, .. } => {
            let mut b = vec![0u8; CANFD_MTU];
            b[0..4].copy_from_slice(&can_id.to_le_bytes());
            let data = frame.payload();
            b[4] = data.len() as u8;
            b[5] = flags.bits();
            b[8..8 + data.len()].copy_from_slice(data);
            b
        }
        Frame::Remote { dlc, .. } => {
            let mut b = vec![0u8; CAN_MTU];
            b[0..4].copy_from_slice(&can_id.to_le_bytes());
            b[4] = *dlc;
            b
        }
        _ => {
            let mut b = vec![0u8; CAN_MTU];
            b[0..4].copy_from_slice(&can_id.to_le_bytes());
            let data = frame.payload();
            b[4] = data.len() as u8;
            b[8..8 + data.len()].copy_from_slice(data);
            b
        }
    }
}

/// Parses `CAN_RAW_FILTER` option bytes (an array of `struct can_filter`).
pub fn parse_filters(bytes: &[u8]) -> Result<Vec<(u32, u32)>, Errno> {
    if !bytes.len().is_multiple_of(8) || bytes.len() / 8 > FILTER_MAX {
        return Err(Errno::EINVAL);
    }
    Ok(bytes
        .chunks_exact(8)
        .map(|c| {
            (
                u32::from_le_bytes([c[0], c[1], c[2], c[3]]),
                u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
            )
        })
        .collect())
}

/// A `struct sockaddr_can` for `ifindex`.
pub fn sockaddr_can(ifindex: u32) -> [u8; SOCKADDR_CAN_LEN] {
    let mut b = [0u8; SOCKADDR_CAN_LEN];
    b[0..2].copy_from_slice(&(AF_CAN as u16).to_le_bytes());
    b[4..8].copy_from_slice(&ifindex.to_le_bytes());
    b
}

/// The ifindex of a program's `struct sockaddr_can` (at least family and ifindex: 8 bytes).
pub fn parse_sockaddr_can(bytes: &[u8]) -> Result<u32, Errno> {
    let b = bytes.get(..8).ok_or(Errno::EINVAL)?;
    if i32::from(u16::from_le_bytes([b[0], b[1]])) != AF_CAN {
        return Err(Errno::EINVAL);
    }
    let idx = i32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    u32::try_from(idx).map_err(|_| Errno::ENODEV)
}

/// The control messages `recvmsg` returns with a frame received at `timestamp_ns` (Unix epoch): the
/// timestamp the socket asked for (`SO_TIMESTAMPNS` wins over `SO_TIMESTAMP`), in the x86-64 layout.
pub fn control_messages(opts: &RawOptions, timestamp_ns: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let secs = timestamp_ns / 1_000_000_000;
    let sub = timestamp_ns % 1_000_000_000;
    if opts.timestamp_ns {
        push_cmsg(&mut out, SOL_SOCKET, SO_TIMESTAMPNS, &[secs, sub]);
    } else if opts.timestamp_us {
        push_cmsg(&mut out, SOL_SOCKET, SO_TIMESTAMP, &[secs, sub / 1000]);
    }
    out
}

/// `msg_flags` of a received frame: `MSG_DONTROUTE | MSG_CONFIRM` for the echo of an own frame, nothing
/// for a frame from another bus node. The kernel's `raw_rcv` sets `MSG_DONTROUTE` for frames sent on this
/// host (`candump -x` prints them as `TX`) and `MSG_CONFIRM` for the receiving socket's own; every other
/// node of a hub is another host on the bus (`RX`).
pub fn recv_flags(own: bool) -> i32 {
    if own {
        MSG_DONTROUTE | MSG_CONFIRM
    } else {
        0
    }
}

/// Appends a control message (`cmsghdr` + 8-byte words) in the x86-64 layout.
fn push_cmsg(out: &mut Vec<u8>, level: i32, ty: i32, words: &[u64]) {
    let len = 16 + words.len() * 8;
    out.extend_from_slice(&(len as u64).to_le_bytes());
    out.extend_from_slice(&level.to_le_bytes());
    out.extend_from_slice(&ty.to_le_bytes());
    for w in words {
        out.extend_from_slice(&w.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rx(text: &str, own: bool) -> Received {
        Received {
            frame: text.parse().unwrap(),
            timestamp_ns: 1,
            seq: Some(1),
            own,
        }
    }

    #[test]
    fn frames_round_trip_through_the_kernel_layout() {
        for text in [
            "123#1122334455667788",
            "123#",
            "1ABCDEF0#01",
            "7FF#R",
            "00000001#R8",
        ] {
            let f: Frame = text.parse().unwrap();
            let b = encode_frame(&f);
            assert_eq!(b.len(), CAN_MTU);
            assert_eq!(decode_frame(&b, false).unwrap(), f, "{text}");
        }
        let fd = Frame::fd(
            CanId::Standard(5),
            &[0x77; 12],
            FdFlags {
                brs: true,
                esi: false,
            },
        )
        .unwrap();
        let b = encode_frame(&fd);
        assert_eq!(b.len(), CANFD_MTU);
        assert_eq!(b[5], 0x05);
        assert_eq!(decode_frame(&b, true).unwrap(), fd);
        assert_eq!(
            decode_frame(&b, false),
            Err(Errno::EINVAL),
            "FD needs CAN_RAW_FD_FRAMES"
        );
        let err = Frame::error(0x4, [0, 4, 0, 0, 0, 0, 0, 0]).unwrap();
        assert_eq!(decode_frame(&encode_frame(&err), false).unwrap(), err);
    }

    #[test]
    fn bad_frames_are_einval() {
        let mut b = encode_frame(&"123#11".parse().unwrap());
        b[4] = 9;
        assert_eq!(decode_frame(&b, false), Err(Errno::EINVAL));
        assert_eq!(decode_frame(&[0u8; 15], true), Err(Errno::EINVAL));
        assert_eq!(decode_frame(&[0u8; 100], true), Err(Errno::EINVAL));
        let mut fd = vec![0u8; CANFD_MTU];
        fd[4] = 65;
        assert_eq!(decode_frame(&fd, true), Err(Errno::EINVAL));
        // An FD length of 9 is rounded up to 12 as the kernel does.
        fd[4] = 9;
        assert_eq!(decode_frame(&fd, true).unwrap().payload().len(), 12);
        // A standard id above 0x7FF.
        let mut std = encode_frame(&"123#11".parse().unwrap());
        std[0..4].copy_from_slice(&0x800u32.to_le_bytes());
        assert_eq!(decode_frame(&std, false), Err(Errno::EINVAL));
    }

    #[test]
    fn options_filter_like_can_raw() {
        let mut o = RawOptions::default();
        assert!(o.accepts(&rx("123#01", false)), "default accepts all");
        assert!(!o.accepts(&rx("123#01", true)), "own frames need RECV_OWN_MSGS");
        assert!(
            !o.accepts(&rx("20000004#0000000000000000", false)),
            "errors need ERR_FILTER"
        );
        o.err_mask = 0x4;
        assert!(o.accepts(&rx("20000004#0000000000000000", false)));
        o.filters = vec![(0x120, 0x7FF)];
        assert!(o.accepts(&rx("120#01", false)));
        assert!(!o.accepts(&rx("121#01", false)));
        o.filters.clear();
        assert!(
            !o.accepts(&rx("120#01", false)),
            "an empty filter list receives nothing"
        );
        assert_eq!(o.hub_filters(), vec![Filter::inverted(0, 0)]);
        o.filters = vec![(0x100, 0x700), (0x020, 0x0F0)];
        o.join_filters = true;
        assert!(o.accepts(&rx("120#", false)));
        assert!(!o.accepts(&rx("130#", false)), "join: all filters must match");
        assert!(o.hub_filters().is_empty());
        o.recv_own = true;
        assert!(o.accepts(&rx("120#", true)));
        o.loopback = false;
        assert!(!o.accepts(&rx("120#", true)), "no loopback, no own frames");
    }

    #[test]
    fn options_set_and_get_like_the_kernel() {
        let mut o = RawOptions::default();
        let one = 1i32.to_le_bytes();
        o.set(SOL_CAN_RAW, CAN_RAW_RECV_OWN_MSGS, &one).unwrap();
        assert!(o.recv_own);
        assert_eq!(
            o.set(SOL_CAN_RAW, CAN_RAW_RECV_OWN_MSGS, &one[..2]),
            Err(Errno::EINVAL)
        );
        assert_eq!(o.set(SOL_CAN_RAW, 99, &one), Err(Errno::ENOPROTOOPT));
        assert_eq!(o.set(7, 1, &one), Err(Errno::ENOPROTOOPT));
        assert_eq!(o.set(SOL_CAN_RAW, CAN_RAW_FILTER, &[0; 7]), Err(Errno::EINVAL));
        let mut f = Vec::new();
        for v in [0x120u32, 0x7ff, 0x130, 0x7ff] {
            f.extend_from_slice(&v.to_le_bytes());
        }
        o.set(SOL_CAN_RAW, CAN_RAW_FILTER, &f).unwrap();
        assert_eq!(o.get(SOL_CAN_RAW, CAN_RAW_FILTER, 64, None).unwrap(), f);
        assert_eq!(o.get(SOL_CAN_RAW, CAN_RAW_FILTER, 8, None), Err(Errno::ERANGE));
        assert_eq!(o.get(SOL_SOCKET, SO_TYPE, 4, None).unwrap(), 3i32.to_le_bytes());
        assert_eq!(
            o.get(SOL_SOCKET, SO_DOMAIN, 2, None).unwrap(),
            vec![29, 0],
            "truncated to the buffer"
        );
        assert_eq!(
            o.get(SOL_SOCKET, SO_ERROR, 4, Some(Errno::ENETDOWN)).unwrap(),
            libc::ENETDOWN.to_le_bytes()
        );
        o.set(SOL_SOCKET, SO_RCVBUF, &4096i32.to_le_bytes()).unwrap();
        assert_eq!(o.rcvbuf, 8192, "the kernel doubles a buffer size");
    }

    #[test]
    fn filter_option_parsing() {
        assert_eq!(parse_filters(&[]).unwrap(), vec![]);
        let mut b = Vec::new();
        b.extend_from_slice(&0x123u32.to_le_bytes());
        b.extend_from_slice(&0x7FFu32.to_le_bytes());
        assert_eq!(parse_filters(&b).unwrap(), vec![(0x123, 0x7FF)]);
        assert_eq!(parse_filters(&b[..7]), Err(Errno::EINVAL));
        assert_eq!(parse_filters(&vec![0u8; 8 * 513]), Err(Errno::EINVAL));
    }

    #[test]
    fn interfaces_are_numbered_from_their_base() {
        let list = vec![
            ("can0".to_string(), "unix:/a".parse().unwrap()),
            ("vcan1".to_string(), "unix:/b".parse().unwrap()),
        ];
        let i = Interfaces::new(list.clone());
        assert_eq!(i.index_of("can0"), Some(1));
        assert_eq!(i.index_of("vcan1"), Some(2));
        assert_eq!(i.index_of("can9"), None);
        assert_eq!(i.name_of(2), Some("vcan1"));
        assert_eq!(i.name_of(0), None);
        assert!(i.endpoint(3).is_none());
        assert_eq!(i.only(), None);
        let h = Interfaces::with_base(list[..1].to_vec(), 4096);
        assert_eq!(h.index_of("can0"), Some(4096));
        assert_eq!(h.name_of(4096), Some("can0"));
        assert_eq!(h.name_of(1), None);
        assert_eq!(h.only(), Some(4096));
    }

    #[test]
    fn addresses_and_control_messages() {
        let a = sockaddr_can(7);
        assert_eq!(parse_sockaddr_can(&a), Ok(7));
        assert_eq!(parse_sockaddr_can(&a[..4]), Err(Errno::EINVAL));
        let mut inet = a;
        inet[0] = 2;
        assert_eq!(parse_sockaddr_can(&inet), Err(Errno::EINVAL));
        let mut o = RawOptions::default();
        assert!(control_messages(&o, 5).is_empty());
        o.timestamp_us = true;
        let c = control_messages(&o, 3_000_004_000);
        assert_eq!(c.len(), 32);
        assert_eq!(i32::from_le_bytes(c[12..16].try_into().unwrap()), SO_TIMESTAMP);
        assert_eq!(u64::from_le_bytes(c[16..24].try_into().unwrap()), 3);
        assert_eq!(u64::from_le_bytes(c[24..32].try_into().unwrap()), 4);
        assert_eq!(recv_flags(true), MSG_DONTROUTE | MSG_CONFIRM);
        assert_eq!(
            recv_flags(false),
            0,
            "a frame from another node is not local (RX)"
        );
    }

    #[test]
    fn own_echo_is_decided_when_the_frame_is_sent() {
        let dir = tempfile::tempdir().unwrap();
        let hub = crate::hub::Hub::start(crate::hub::HubConfig {
            name: "echo".into(),
            unix_path: Some(dir.path().join("bus.sock")),
            ..crate::hub::HubConfig::default()
        })
        .unwrap();
        let ifaces = Interfaces::new(vec![("can0".into(), hub.unix_endpoint().unwrap())]);
        let mut s = RawSocket::new("echo".into());
        s.bind(&ifaces, 1).unwrap();
        let one = 1i32.to_le_bytes();
        let zero = 0i32.to_le_bytes();
        // Sent without RECV_OWN_MSGS, the option turned on before the echo is read: not delivered.
        s.send(&encode_frame(&"101#01".parse().unwrap())).unwrap();
        s.setsockopt(&ifaces, SOL_CAN_RAW, CAN_RAW_RECV_OWN_MSGS, &one)
            .unwrap();
        s.send(&encode_frame(&"102#02".parse().unwrap())).unwrap();
        // LOOPBACK off: no echo even with RECV_OWN_MSGS, whatever comes after.
        s.setsockopt(&ifaces, SOL_CAN_RAW, CAN_RAW_LOOPBACK, &zero)
            .unwrap();
        s.send(&encode_frame(&"103#03".parse().unwrap())).unwrap();
        s.setsockopt(&ifaces, SOL_CAN_RAW, CAN_RAW_LOOPBACK, &one)
            .unwrap();
        s.send(&encode_frame(&"104#04".parse().unwrap())).unwrap();
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while got.len() < 2 && std::time::Instant::now() < deadline {
            if let Some(fd) = s.wait_fd() {
                let mut p = libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                unsafe { libc::poll(&mut p, 1, 100) };
            }
            while let Some(rx) = s.take().unwrap() {
                assert!(rx.own);
                got.push(rx.frame.to_string());
            }
        }
        assert_eq!(got, ["102#02", "104#04"]);
        assert_eq!(s.sent.len(), 0, "every echo was matched");
    }

    #[test]
    fn binding_to_an_unreachable_bus_is_enetdown() {
        let dir = tempfile::tempdir().unwrap();
        let ep: Endpoint = format!("unix:{}", dir.path().join("none.sock").display())
            .parse()
            .unwrap();
        let ifaces = Interfaces::new(vec![("can0".into(), ep)]);
        let mut s = RawSocket::new("t".into());
        assert_eq!(s.bind(&ifaces, 2), Err(Errno::ENODEV));
        assert_eq!(s.bind(&ifaces, 1), Err(Errno::ENETDOWN));
        assert_eq!(s.send(&encode_frame(&"123#".parse().unwrap())), Err(Errno::ENXIO));
    }
}
