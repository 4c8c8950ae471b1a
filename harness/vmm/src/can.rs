//! SocketCAN emulation: `socket(AF_CAN, SOCK_RAW, CAN_RAW)` inside the guest, bridged to a vcan bus.
//!
//! Interfaces come from `--can IFNAME=ENDPOINT` (ifindex 1, 2, ... in order). A guest CAN socket is a
//! separate node on its interface's bus, joined with [`vcan::open`] when the guest `bind`s it. Socket
//! options follow `CAN_RAW` semantics:
//!
//! * `CAN_RAW_FILTER`: the kernel default is one accept-all filter; an empty list receives nothing. The
//!   filters are given to the hub (less traffic) and applied again locally (exactness, and
//!   `CAN_RAW_JOIN_FILTERS`, which the hub cannot express).
//! * `CAN_RAW_ERR_FILTER`: error frames whose class matches the mask are delivered.
//! * `CAN_RAW_RECV_OWN_MSGS` / `CAN_RAW_LOOPBACK`: own frames come back flagged `MSG_CONFIRM`. Changing it
//!   after `bind` rejoins the bus with the new setting.
//! * `CAN_RAW_FD_FRAMES`: 72-byte `canfd_frame` I/O is allowed; FD frames are delivered only then.
//! * `SO_TIMESTAMPNS` / `SO_TIMESTAMP`: `recvmsg` adds the hub's receive time as a control message.
//!
//! Frames are read and written as the kernel's `struct can_frame` (16 bytes) and `struct canfd_frame`
//! (72 bytes). Readiness for `poll` comes from a local receive queue, refilled from the bus socket
//! without blocking ([`GuestCanSocket::readable`]), so `poll` never reports a socket readable that then
//! has nothing to read.

use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::time::Duration;

use vcan::frame::{CAN_ERR_FLAG, CAN_RTR_FLAG, EFF_MAX, FD_LENGTHS};
use vcan::{CanId, Endpoint, FdFlags, Filter, Frame, OpenOptions, Received};

use crate::errno::Errno;

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

/// The configured interfaces: `(name, endpoint)`, ifindex = position + 1.
#[derive(Debug, Clone, Default)]
pub struct Interfaces {
    list: Vec<(String, Endpoint)>,
}

impl Interfaces {
    pub fn new(list: Vec<(String, Endpoint)>) -> Interfaces {
        Interfaces { list }
    }

    pub fn index_of(&self, name: &str) -> Option<u32> {
        self.list
            .iter()
            .position(|(n, _)| n == name)
            .map(|i| i as u32 + 1)
    }

    pub fn name_of(&self, ifindex: u32) -> Option<&str> {
        let i = usize::try_from(ifindex).ok()?.checked_sub(1)?;
        self.list.get(i).map(|(n, _)| n.as_str())
    }

    pub fn endpoint(&self, ifindex: u32) -> Option<&Endpoint> {
        let i = usize::try_from(ifindex).ok()?.checked_sub(1)?;
        self.list.get(i).map(|(_, e)| e)
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

/// The options of a guest CAN socket (what a snapshot keeps).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CanOptions {
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

impl Default for CanOptions {
    fn default() -> Self {
        CanOptions {
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

impl CanOptions {
    fn local_filters(&self) -> Vec<Filter> {
        self.filters
            .iter()
            .map(|&(id, mask)| Filter::new(id, mask))
            .collect()
    }

    /// Whether a received frame passes this socket's options.
    pub fn accepts(&self, rx: &Received) -> bool {
        if rx.own && !(self.recv_own && self.loopback) {
            return false;
        }
        if rx.frame.is_fd() && !self.fd_frames {
            return false;
        }
        if let Frame::Error { class, .. } = rx.frame {
            return class & self.err_mask != 0;
        }
        let filters = self.local_filters();
        if filters.is_empty() {
            return false;
        }
        if self.join_filters {
            filters.iter().all(|f| f.matches(&rx.frame))
        } else {
            filters.iter().any(|f| f.matches(&rx.frame))
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

    fn hub_recv_own(&self) -> bool {
        self.recv_own && self.loopback
    }
}

/// A guest `CAN_RAW` socket.
pub struct GuestCanSocket {
    pub opts: CanOptions,
    /// Interface index it is bound to.
    pub bound: Option<u32>,
    /// Node name on the bus.
    pub node_name: String,
    conn: Option<Box<dyn vcan::CanSocket>>,
    rx: VecDeque<Received>,
    /// Set when the bus connection failed; reads and writes report it.
    failed: Option<Errno>,
    /// `SO_RCVTIMEO` in microseconds (0 = block forever).
    pub rcvtimeo_us: u64,
}

impl std::fmt::Debug for GuestCanSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestCanSocket")
            .field("opts", &self.opts)
            .field("bound", &self.bound)
            .field("connected", &self.conn.is_some())
            .finish()
    }
}

impl GuestCanSocket {
    pub fn new(node_name: String) -> GuestCanSocket {
        GuestCanSocket {
            opts: CanOptions::default(),
            bound: None,
            node_name,
            conn: None,
            rx: VecDeque::new(),
            failed: None,
            rcvtimeo_us: 0,
        }
    }

    /// A socket restored from a snapshot: same options, not connected (bind connects).
    pub fn restored(node_name: String, opts: CanOptions, bound: Option<u32>) -> GuestCanSocket {
        GuestCanSocket {
            opts,
            bound,
            ..GuestCanSocket::new(node_name)
        }
    }

    fn open_options(&self) -> OpenOptions {
        OpenOptions {
            node_name: self.node_name.clone(),
            recv_own: self.opts.hub_recv_own(),
            filters: self.opts.hub_filters(),
            want_errors: true,
            fd: true,
        }
    }

    /// `bind`: joins the bus of `ifindex`.
    pub fn bind(&mut self, ifaces: &Interfaces, ifindex: u32) -> Result<(), Errno> {
        if self.bound.is_some() {
            return Err(Errno::EINVAL);
        }
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
        match vcan::open(endpoint, &self.open_options()) {
            Ok(conn) => {
                tracing::debug!(node = %self.node_name, bus = %endpoint, "guest CAN socket joined the bus");
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

    /// Applies changed options to a live connection (filters in place; own-message echo by rejoining).
    pub fn options_changed(&mut self, ifaces: &Interfaces, before: &CanOptions) -> Result<(), Errno> {
        if self.conn.is_none() {
            return Ok(());
        }
        if before.hub_recv_own() != self.opts.hub_recv_own() {
            tracing::debug!(node = %self.node_name, "CAN_RAW_RECV_OWN_MSGS changed after bind: rejoining the bus");
            self.conn = None;
            return self.reconnect(ifaces);
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
                    if self.opts.accepts(&rx) {
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

    /// The host fd to wait on for more frames, if connected and nothing is buffered.
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

    /// Sends one frame given as guest bytes.
    pub fn send(&mut self, bytes: &[u8]) -> Result<usize, Errno> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        let frame = decode_frame(bytes, self.opts.fd_frames)?;
        let conn = self.conn.as_mut().ok_or(Errno::EDESTADDRREQ)?;
        match conn.send(&frame) {
            Ok(()) => Ok(bytes.len()),
            Err(e) => {
                tracing::warn!(node = %self.node_name, error = %e, "CAN send failed");
                Err(Errno::ENOBUFS)
            }
        }
    }

    /// Whether the connection exists (bound and joined).
    pub fn connected(&self) -> bool {
        self.conn.is_some()
    }
}

/// Decodes a guest `can_frame` (16 bytes) or `canfd_frame` (72 bytes, only with `fd_enabled`).
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
/// (`EINVAL` to the guest), as the hub's wire protocol and the kernel backend refuse it.
fn decode_id(can_id: u32) -> Result<CanId, Errno> {
    CanId::from_linux(can_id).map_err(|_| Errno::EINVAL)
}

/// Encodes a frame as the guest reads it: 16 bytes for classic and error frames, 72 for FD frames.
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
    }

    #[test]
    fn options_filter_like_can_raw() {
        let mut o = CanOptions::default();
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
    fn interfaces_are_numbered_from_one() {
        let i = Interfaces::new(vec![
            ("can0".into(), "unix:/a".parse().unwrap()),
            ("vcan1".into(), "unix:/b".parse().unwrap()),
        ]);
        assert_eq!(i.index_of("can0"), Some(1));
        assert_eq!(i.index_of("vcan1"), Some(2));
        assert_eq!(i.index_of("can9"), None);
        assert_eq!(i.name_of(2), Some("vcan1"));
        assert_eq!(i.name_of(0), None);
        assert!(i.endpoint(3).is_none());
    }

    #[test]
    fn binding_to_an_unreachable_bus_is_enetdown() {
        let dir = tempfile::tempdir().unwrap();
        let ep: Endpoint = format!("unix:{}", dir.path().join("none.sock").display())
            .parse()
            .unwrap();
        let ifaces = Interfaces::new(vec![("can0".into(), ep)]);
        let mut s = GuestCanSocket::new("t".into());
        assert_eq!(s.bind(&ifaces, 2), Err(Errno::ENODEV));
        assert_eq!(s.bind(&ifaces, 1), Err(Errno::ENETDOWN));
        assert_eq!(
            s.send(&encode_frame(&"123#".parse().unwrap())),
            Err(Errno::EDESTADDRREQ)
        );
    }
}
