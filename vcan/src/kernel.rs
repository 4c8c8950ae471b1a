//! Kernel SocketCAN backend (`vcan0`, `can0`, `slcan0`, ...) through the `socketcan` crate.
//!
//! Used wherever the kernel has CAN: CI runners with `modprobe vcan`, real boards, bench hosts with a USB
//! adapter. On kernels without CAN, [`KernelSocket::open`] fails with [`BusError::NoKernelCan`].
//!
//! The socket is a `CAN_RAW` socket ([`socketcan::CanFdSocket`] when FD is asked for, else
//! [`socketcan::CanSocket`]) configured from [`OpenOptions`]: `CAN_RAW_RECV_OWN_MSGS` for `recv_own`,
//! `CAN_RAW_FILTER` for the filters (an empty list installs the accept-all filter, matching the hub),
//! `CAN_RAW_ERR_FILTER` with all error classes for `want_errors`. Frames are received with `recvmsg(2)`
//! so that the kernel's `MSG_CONFIRM` flag marks the socket's own echoed frames and `SO_TIMESTAMPNS` gives
//! the kernel receive time. Conversions between [`Frame`] and the `socketcan` frame types are plain
//! functions ([`to_socketcan`], [`from_socketcan`]) so they are tested without kernel CAN, and so is
//! [`decode_raw`], which turns the bytes `recvmsg(2)` returned into a [`Frame`] or a [`RawFrameError`].

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use socketcan::{
    CanAnyFrame, CanDataFrame, CanErrorFrame, CanFdFrame, CanFilter, CanFrame, CanRemoteFrame, EmbeddedFrame,
    ExtendedId, Id, Socket, SocketOptions, StandardId,
};

use crate::filter::{Filter, CAN_INV_FILTER};
use crate::frame::{CanId, FdFlags, Frame, FrameError, CAN_ERR_FLAG, CAN_RTR_FLAG, EFF_MAX};
use crate::options::OpenOptions;
use crate::socket::{BusError, CanSocket, Received};

/// Every error class (`CAN_ERR_MASK`).
const ERR_MASK_ALL: u32 = EFF_MAX;

enum Inner {
    Classic(socketcan::CanSocket),
    Fd(socketcan::CanFdSocket),
}

impl Inner {
    fn fd(&self) -> RawFd {
        match self {
            Inner::Classic(s) => s.as_raw_fd(),
            Inner::Fd(s) => s.as_raw_fd(),
        }
    }
}

/// A raw CAN socket bound to one kernel interface (`CAN_RAW`, FD frames enabled when asked).
pub struct KernelSocket {
    inner: Inner,
    name: String,
    want_errors: bool,
}

/// Maps an error from opening/configuring a kernel CAN socket to the bus error a user can act on.
pub fn map_open_error(ifname: &str, e: io::Error) -> BusError {
    match e.raw_os_error() {
        Some(libc::EAFNOSUPPORT) | Some(libc::EPROTONOSUPPORT) => BusError::NoKernelCan,
        Some(libc::ENODEV) | Some(libc::ENXIO) => BusError::NoSuchInterface(ifname.to_string()),
        _ if e.to_string().to_ascii_lowercase().contains("no such device") => {
            BusError::NoSuchInterface(ifname.to_string())
        }
        _ => BusError::Io {
            endpoint: format!("socketcan:{ifname}"),
            source: e,
        },
    }
}

/// Probes whether this kernel can create `AF_CAN` raw sockets at all.
pub fn kernel_has_can() -> Result<(), BusError> {
    // SAFETY: plain socket(2) call; the fd is closed right away.
    let fd = unsafe { libc::socket(libc::AF_CAN, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::CAN_RAW) };
    if fd < 0 {
        return Err(map_open_error("", io::Error::last_os_error()));
    }
    // SAFETY: `fd` is a socket we own.
    unsafe { libc::close(fd) };
    Ok(())
}

impl KernelSocket {
    pub fn open(ifname: &str, options: &OpenOptions) -> Result<KernelSocket, BusError> {
        // Probe the address family first: the interface lookup would otherwise report "no such device"
        // on a kernel that has no CAN at all.
        kernel_has_can()?;
        let map = |e: io::Error| map_open_error(ifname, e);
        let inner = if options.fd {
            Inner::Fd(socketcan::CanFdSocket::open(ifname).map_err(map)?)
        } else {
            Inner::Classic(socketcan::CanSocket::open(ifname).map_err(map)?)
        };
        let mut socket = KernelSocket {
            inner,
            name: format!("socketcan:{ifname}"),
            want_errors: options.want_errors,
        };
        socket.configure(options).map_err(map)?;
        Ok(socket)
    }

    fn configure(&mut self, options: &OpenOptions) -> io::Result<()> {
        let err_mask = if options.want_errors { ERR_MASK_ALL } else { 0 };
        match &self.inner {
            Inner::Classic(s) => {
                s.set_recv_own_msgs(options.recv_own)?;
                s.set_error_filter(err_mask)?;
                s.set_recv_timestamp(true)?;
            }
            Inner::Fd(s) => {
                s.set_recv_own_msgs(options.recv_own)?;
                s.set_error_filter(err_mask)?;
                s.set_recv_timestamp(true)?;
            }
        }
        self.apply_filters(&options.filters)
    }

    fn apply_filters(&self, filters: &[Filter]) -> io::Result<()> {
        let kernel: Vec<CanFilter> = if filters.is_empty() {
            vec![CanFilter::new(0, 0)]
        } else {
            filters.iter().map(to_kernel_filter).collect()
        };
        match &self.inner {
            Inner::Classic(s) => s.set_filters(&kernel),
            Inner::Fd(s) => s.set_filters(&kernel),
        }
    }

    fn io_error(&self, source: io::Error) -> BusError {
        BusError::Io {
            endpoint: self.name.clone(),
            source,
        }
    }

    /// Reads one frame with `recvmsg(2)`; `Ok(None)` if none is ready.
    fn read_one(&self) -> Result<Option<Received>, BusError> {
        let mut raw = [0u8; libc::CANFD_MTU];
        let mut iov = libc::iovec {
            iov_base: raw.as_mut_ptr().cast(),
            iov_len: raw.len(),
        };
        // u64 storage keeps the control buffer aligned for cmsghdr.
        let mut control = [0u64; 16];
        // SAFETY: zeroed msghdr is a valid "empty" value; we fill the pointers below.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control) as _;
        // SAFETY: msg points at live buffers of the sizes given above.
        let n = unsafe { libc::recvmsg(self.inner.fd(), &mut msg, libc::MSG_DONTWAIT) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(None),
                _ => Err(self.io_error(e)),
            };
        }
        let own = msg.msg_flags & libc::MSG_CONFIRM != 0;
        let timestamp_ns = control_timestamp(&msg).unwrap_or_else(now_ns);
        let frame = decode_raw(&raw, n as usize).map_err(|e| BusError::Protocol {
            endpoint: self.name.clone(),
            reason: e.to_string(),
        })?;
        Ok(Some(Received {
            frame,
            timestamp_ns,
            seq: None,
            own,
        }))
    }
}

/// The `SCM_TIMESTAMPNS` time of a received message, if the kernel attached one.
fn control_timestamp(msg: &libc::msghdr) -> Option<u64> {
    // SAFETY: `msg` was filled by recvmsg; the CMSG macros walk within msg_control/msg_controllen.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                return Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64);
            }
            cmsg = libc::CMSG_NXTHDR(msg, cmsg);
        }
    }
    None
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Why bytes read from a `CAN_RAW` socket are not a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RawFrameError {
    /// Fewer bytes than the `can_id` word.
    #[error("kernel returned a {0}-byte CAN frame")]
    Truncated(usize),
    /// Neither a `can_frame` nor a `canfd_frame`.
    #[error("kernel returned a {0}-byte CAN frame (expected {CAN_MTU} or {CANFD_MTU})", CAN_MTU = libc::CAN_MTU, CANFD_MTU = libc::CANFD_MTU)]
    Length(usize),
    /// The fields do not make a valid frame (a standard id above 0x7FF, an FD length, ...).
    #[error(transparent)]
    Frame(#[from] FrameError),
}

/// Decodes a raw `can_frame` (16 bytes) or `canfd_frame` (72 bytes) as read from a `CAN_RAW` socket.
///
/// The identifier is decoded by [`CanId::from_linux`], the rule the wire protocol uses too: a standard
/// `can_id` above 0x7FF is an error, not masked. `len` is what the kernel returned; bytes `raw` does not
/// hold read as 0.
pub fn decode_raw(raw: &[u8], len: usize) -> Result<Frame, RawFrameError> {
    let can_id = match raw.get(..4) {
        Some(b) => u32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
        None => return Err(RawFrameError::Truncated(len)),
    };
    let field = |i: usize| raw.get(i).copied().unwrap_or(0);
    if len == libc::CAN_MTU {
        let dlc = usize::from(field(4)).min(8);
        // can_frame.data, zero past what `raw` holds (as in a zero-initialised `can_frame`).
        let mut data = [0u8; 8];
        if let Some(bytes) = raw.get(8..8 + dlc) {
            data[..dlc].copy_from_slice(bytes);
        }
        if can_id & CAN_ERR_FLAG != 0 {
            // The low bits are the error class, not an identifier.
            return Ok(Frame::error(can_id & EFF_MAX, data)?);
        }
        let id = CanId::from_linux(can_id)?;
        if can_id & CAN_RTR_FLAG != 0 {
            Ok(Frame::remote(id, dlc as u8)?)
        } else {
            Ok(Frame::data(id, &data[..dlc])?)
        }
    } else if len == libc::CANFD_MTU {
        let flen = usize::from(field(4)).min(64);
        let flags = field(5);
        let data = raw.get(8..8 + flen).unwrap_or(&[]);
        let id = CanId::from_linux(can_id)?;
        Ok(Frame::fd(id, data, FdFlags::from_bits(flags))?)
    } else {
        Err(RawFrameError::Length(len))
    }
}

fn to_socketcan_id(id: CanId) -> Result<Id, BusError> {
    let bad = || BusError::Unsupported(format!("CAN id {id} cannot be represented"));
    match id {
        CanId::Standard(raw) => StandardId::new(raw).map(Id::Standard).ok_or_else(bad),
        CanId::Extended(raw) => ExtendedId::new(raw).map(Id::Extended).ok_or_else(bad),
    }
}

fn from_socketcan_id(id: Id) -> Result<CanId, FrameError> {
    match id {
        Id::Standard(s) => CanId::standard(u32::from(s.as_raw())),
        Id::Extended(e) => CanId::extended(e.as_raw()),
    }
}

/// Our frame as a `socketcan` frame (classic data/remote/error frames become [`CanAnyFrame`]'s classic
/// variants, FD frames [`CanAnyFrame::Fd`]).
pub fn to_socketcan(frame: &Frame) -> Result<CanAnyFrame, BusError> {
    let construction = |what: &str| BusError::Unsupported(format!("socketcan cannot build {what} {frame}"));
    Ok(match frame {
        Frame::Data { id, data } => CanAnyFrame::Normal(
            CanDataFrame::new(to_socketcan_id(*id)?, data.as_slice())
                .ok_or_else(|| construction("data frame"))?,
        ),
        Frame::Remote { id, dlc } => CanAnyFrame::Remote(
            CanRemoteFrame::new_remote(to_socketcan_id(*id)?, usize::from(*dlc))
                .ok_or_else(|| construction("remote frame"))?,
        ),
        Frame::Fd { id, flags, data } => {
            let mut fd_flags = socketcan::frame::FdFlags::FDF;
            if flags.brs {
                fd_flags |= socketcan::frame::FdFlags::BRS;
            }
            if flags.esi {
                fd_flags |= socketcan::frame::FdFlags::ESI;
            }
            CanAnyFrame::Fd(
                CanFdFrame::with_flags(to_socketcan_id(*id)?, data.as_slice(), fd_flags)
                    .ok_or_else(|| construction("FD frame"))?,
            )
        }
        Frame::Error { class, data } => CanAnyFrame::Error(
            CanErrorFrame::new_error(class | CAN_ERR_FLAG, data).map_err(|_| construction("error frame"))?,
        ),
    })
}

/// A `socketcan` frame as our frame.
pub fn from_socketcan(frame: &CanAnyFrame) -> Result<Frame, FrameError> {
    match frame {
        CanAnyFrame::Normal(f) => Frame::data(from_socketcan_id(f.id())?, f.data()),
        CanAnyFrame::Remote(f) => {
            let dlc = u8::try_from(f.dlc()).unwrap_or(u8::MAX);
            Frame::remote(from_socketcan_id(f.id())?, dlc)
        }
        CanAnyFrame::Error(f) => {
            let mut data = [0u8; 8];
            let bytes = f.data();
            let n = bytes.len().min(8);
            data[..n].copy_from_slice(&bytes[..n]);
            Frame::error(f.error_bits(), data)
        }
        CanAnyFrame::Fd(f) => {
            let flags = FdFlags {
                brs: f.is_brs(),
                esi: f.is_esi(),
            };
            Frame::fd(from_socketcan_id(f.id())?, f.data(), flags)
        }
    }
}

/// Our filter as a kernel `can_filter`.
pub fn to_kernel_filter(filter: &Filter) -> CanFilter {
    if filter.is_inverted() {
        CanFilter::new_inverted(filter.id & !CAN_INV_FILTER, filter.mask)
    } else {
        CanFilter::new(filter.id, filter.mask)
    }
}

impl CanSocket for KernelSocket {
    fn send(&mut self, frame: &Frame) -> Result<(), BusError> {
        if frame.is_fd() && matches!(self.inner, Inner::Classic(_)) {
            return Err(BusError::Unsupported(format!(
                "CAN FD frame {frame} on a classic socket (set OpenOptions::fd)"
            )));
        }
        let any = to_socketcan(frame)?;
        let result = match (&self.inner, any) {
            (Inner::Fd(s), any) => s.write_frame_insist(&any),
            (Inner::Classic(s), CanAnyFrame::Normal(f)) => s.write_frame_insist(&CanFrame::Data(f)),
            (Inner::Classic(s), CanAnyFrame::Remote(f)) => s.write_frame_insist(&CanFrame::Remote(f)),
            (Inner::Classic(s), CanAnyFrame::Error(f)) => s.write_frame_insist(&CanFrame::Error(f)),
            (Inner::Classic(_), CanAnyFrame::Fd(_)) => {
                return Err(BusError::Unsupported(format!(
                    "CAN FD frame {frame} on a classic socket"
                )))
            }
        };
        result.map_err(|e| self.io_error(e))
    }

    fn recv(&mut self, timeout: Option<Duration>) -> Result<Option<Received>, BusError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if let Some(received) = self.read_one()? {
                if received.frame.is_error() && !self.want_errors {
                    continue;
                }
                return Ok(Some(received));
            }
            let timeout_ms = match deadline {
                None => -1,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(None);
                    }
                    left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32
                }
            };
            let mut pfd = libc::pollfd {
                fd: self.inner.fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let n = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(self.io_error(e));
                }
            }
        }
    }

    fn set_filters(&mut self, filters: &[Filter]) -> Result<(), BusError> {
        self.apply_filters(filters).map_err(|e| self.io_error(e))
    }

    fn has_buffered(&self) -> bool {
        false
    }

    fn raw_fd(&self) -> RawFd {
        self.inner.fd()
    }

    fn bus_name(&self) -> &str {
        &self.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use socketcan::Frame as _;

    fn frames() -> Vec<Frame> {
        let mut v: Vec<Frame> = [
            "123#1122334455667788",
            "123#",
            "1ABCDEF0#01",
            "7FF#R",
            "00000001#R8",
            "20000004#0004000000000000",
        ]
        .iter()
        .map(|t| t.parse().unwrap())
        .collect();
        v.push(
            Frame::fd(
                CanId::Standard(5),
                &[0x77; 64],
                FdFlags {
                    brs: true,
                    esi: false,
                },
            )
            .unwrap(),
        );
        v.push(
            Frame::fd(
                CanId::Extended(0x1234),
                &[1, 2, 3],
                FdFlags {
                    brs: false,
                    esi: true,
                },
            )
            .unwrap(),
        );
        v.push(Frame::fd(CanId::Extended(0x1234), &[], FdFlags::default()).unwrap());
        v
    }

    #[test]
    fn socketcan_conversions_round_trip() {
        for frame in frames() {
            let sc = to_socketcan(&frame).unwrap();
            assert_eq!(from_socketcan(&sc).unwrap(), frame, "{frame}");
        }
    }

    #[test]
    fn socketcan_conversion_keeps_linux_fields() {
        let sc = to_socketcan(&"1ABCDEF0#0102".parse().unwrap()).unwrap();
        match sc {
            CanAnyFrame::Normal(f) => {
                assert_eq!(f.id_word(), 0x9ABC_DEF0);
                assert_eq!(f.data(), &[1, 2]);
            }
            _ => panic!("expected a data frame"),
        }
        match to_socketcan(&"123#R5".parse().unwrap()).unwrap() {
            CanAnyFrame::Remote(f) => {
                assert_eq!(f.dlc(), 5);
                assert_eq!(f.id_word(), 0x4000_0123);
            }
            _ => panic!("expected a remote frame"),
        }
        match to_socketcan(&"20000010#0000000000000001".parse().unwrap()).unwrap() {
            CanAnyFrame::Error(f) => {
                assert_eq!(f.error_bits(), 0x10);
                assert_eq!(f.data()[7], 1);
            }
            _ => panic!("expected an error frame"),
        }
    }

    #[test]
    fn decodes_raw_kernel_frames() {
        let mut raw = [0u8; libc::CANFD_MTU];
        raw[..4].copy_from_slice(&(0x8000_0123u32).to_ne_bytes());
        raw[4] = 2;
        raw[8] = 0xAA;
        raw[9] = 0xBB;
        assert_eq!(
            decode_raw(&raw, libc::CAN_MTU).unwrap(),
            "00000123#AABB".parse().unwrap()
        );
        raw[..4].copy_from_slice(&(0x4000_0123u32).to_ne_bytes());
        raw[4] = 3;
        assert_eq!(
            decode_raw(&raw, libc::CAN_MTU).unwrap(),
            "123#R3".parse().unwrap()
        );
        raw[..4].copy_from_slice(&(0x123u32).to_ne_bytes());
        raw[4] = 2;
        raw[5] = 0x05;
        assert_eq!(
            decode_raw(&raw, libc::CANFD_MTU).unwrap(),
            "123##5AABB".parse().unwrap()
        );
        raw[4] = 9;
        assert!(decode_raw(&raw, libc::CANFD_MTU).is_err());
        assert!(decode_raw(&raw, 3).is_err());
        assert!(decode_raw(&raw[..2], 2).is_err());
    }

    #[test]
    fn raw_ids_follow_can_id_from_linux() {
        let raw = |can_id: u32, len: u8| {
            let mut raw = [0u8; libc::CANFD_MTU];
            raw[..4].copy_from_slice(&can_id.to_ne_bytes());
            raw[4] = len;
            raw[8] = 0xAA;
            raw
        };
        // A standard id above 0x7FF is rejected in classic, remote and FD frames alike.
        for (can_id, mtu) in [
            (0x923, libc::CAN_MTU),
            (0x923 | CAN_RTR_FLAG, libc::CAN_MTU),
            (0x800, libc::CANFD_MTU),
        ] {
            assert_eq!(
                decode_raw(&raw(can_id, 1), mtu),
                Err(RawFrameError::Frame(FrameError::StandardIdOutOfRange(
                    can_id & EFF_MAX
                ))),
                "{can_id:08X}"
            );
        }
        // Extended ids keep 29 bits.
        assert_eq!(
            decode_raw(&raw(0x9ABC_DEF0, 1), libc::CAN_MTU).unwrap(),
            "1ABCDEF0#AA".parse().unwrap()
        );
        // An error frame's low bits are its class, not an id, so a class above 0x7FF is fine.
        let err = decode_raw(&raw(CAN_ERR_FLAG | 0x1000, 8), libc::CAN_MTU).unwrap();
        assert_eq!(err, Frame::error(0x1000, [0xAA, 0, 0, 0, 0, 0, 0, 0]).unwrap());
        assert_eq!(decode_raw(&raw(0x123, 1), 3), Err(RawFrameError::Length(3)));
        assert_eq!(decode_raw(&[0; 2], 2), Err(RawFrameError::Truncated(2)));
    }

    #[test]
    fn filters_map_to_kernel_filters() {
        let f = to_kernel_filter(&Filter::inverted(0x123, 0x7FF));
        let raw: &libc::can_filter = f.as_ref();
        assert_eq!(raw.can_id, 0x123 | crate::filter::CAN_INV_FILTER);
        assert_eq!(raw.can_mask, 0x7FF);
        let f = to_kernel_filter(&Filter::new(0x123, 0x7FF));
        let raw: &libc::can_filter = f.as_ref();
        assert_eq!(raw.can_id, 0x123);
    }

    #[test]
    fn error_mapping() {
        assert!(matches!(
            map_open_error("x", io::Error::from_raw_os_error(libc::EAFNOSUPPORT)),
            BusError::NoKernelCan
        ));
        assert!(matches!(
            map_open_error("can9", io::Error::from_raw_os_error(libc::ENODEV)),
            BusError::NoSuchInterface(name) if name == "can9"
        ));
        assert!(matches!(
            map_open_error("x", io::Error::from_raw_os_error(libc::EPERM)),
            BusError::Io { .. }
        ));
    }

    #[test]
    fn open_without_kernel_can_reports_it() {
        let options = OpenOptions::default();
        match KernelSocket::open("vcan0", &options) {
            Err(BusError::NoKernelCan) => {}
            Ok(_) => eprintln!("SKIP: this kernel has CAN and vcan0 exists; NoKernelCan path not exercised"),
            Err(BusError::NoSuchInterface(name)) if kernel_has_can().is_ok() => {
                eprintln!("SKIP: this kernel has CAN (no `{name}` interface); NoKernelCan path not exercised")
            }
            Err(other) => panic!("unexpected error: {other}"),
        }
    }
}
