//! The supervisor's event loop: answers notified calls with [`crate::raw`]'s semantics and bridges every
//! emulated socket to its bus.
//!
//! An emulated socket is a `SOCK_SEQPACKET` pair: one end is installed in the caller (so `read`, `write`,
//! `poll`, `epoll`, `dup` and `close` run in the kernel), the other stays here with the socket's
//! [`RawSocket`] (options, binding, bus node). Frames the program writes arrive on this end and go to the
//! bus; frames from the bus that pass the socket's filters are written to this end, one message each, as
//! `struct can_frame`/`canfd_frame`. Each written frame's receive time and own-echo flag are queued beside
//! it, so a `recvmsg` answered here (it needs the address and control messages) reports them; the queue is
//! aligned with what the program has already consumed with `read` by the bytes still waiting in its socket
//! (`SIOCINQ`).
//!
//! A blocking `recvmsg` with nothing to read waits here (the caller stays in its system call) until a frame
//! comes, its `SO_RCVTIMEO` passes, or the caller is interrupted (checked with `NOTIF_ID_VALID`).
//! The loop ends when no process uses the filter any more (the listener hangs up) or when stopped.

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::seccomp::{
    Listener, Notification, SIOCGIFFLAGS, SIOCGIFINDEX, SIOCGIFMTU, SIOCGIFNAME, SYS_BIND, SYS_GETSOCKNAME,
    SYS_GETSOCKOPT, SYS_IOCTL, SYS_RECVFROM, SYS_RECVMSG, SYS_SENDMSG, SYS_SENDTO, SYS_SETSOCKOPT,
    SYS_SOCKET, SYS_WRITE,
};
use super::target::Target;
use crate::callmem::{deliver_recvfrom, deliver_recvmsg, put_addr, Delivery, MsgHdr};
use crate::errno::Errno;
use crate::raw::{
    control_messages, decode_frame, encode_frame, sockaddr_can, Interfaces, RawSocket, CANFD_MTU, CAN_MTU,
    CAN_RAW, SOCKADDR_CAN_LEN, SOCK_RAW, SOL_SOCKET,
};

const SOCK_NONBLOCK: u64 = 0x800;
const SOCK_CLOEXEC: u64 = 0x8_0000;
const MSG_PEEK: u64 = 0x2;
const MSG_DONTWAIT: u64 = 0x40;
/// Receive metadata kept per socket at most (more than its kernel buffer can hold frames).
const META_MAX: usize = 4096;
/// Written frames forwarded per socket and wake-up before the other direction gets its turn.
const WRITE_BATCH: usize = 256;
/// How often waiting calls are checked for interruption.
const PENDING_TICK: Duration = Duration::from_millis(20);
/// `IFF_UP | IFF_RUNNING | IFF_NOARP`, as a `vcan` interface reports.
const IFF_FLAGS: i16 = 0x1 | 0x40 | 0x80;

/// What the loop counted, for tests and reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EmulationStats {
    /// Notified calls answered.
    pub calls: u64,
    /// `socket(AF_CAN)` calls that got an emulated socket.
    pub sockets: u64,
    /// Frames written by programs that could not go on a bus (bad frame, unbound socket).
    pub dropped_writes: u64,
}

/// Per-frame facts a `recvmsg` reports.
#[derive(Debug, Clone, Copy)]
struct Meta {
    len: usize,
    timestamp_ns: u64,
    own: bool,
}

struct Emulated {
    raw: RawSocket,
    /// The supervisor's end of the pair.
    near: OwnedFd,
    /// Metadata of frames written to `near` and not yet known to be consumed.
    meta: VecDeque<Meta>,
    /// Frames waiting for room in the pair.
    out: VecDeque<(Vec<u8>, Meta)>,
    hung_up: bool,
}

enum RecvCall {
    Msg {
        msg: u64,
        flags: u64,
        hdr: MsgHdr,
        /// `hdr`'s iovecs, read when the call came (each pointer argument is read once).
        iov: Vec<(u64, u64)>,
    },
    From {
        buf: u64,
        len: u64,
        flags: u64,
        src: u64,
        srclen: u64,
    },
}

impl RecvCall {
    fn flags(&self) -> u64 {
        match self {
            RecvCall::Msg { flags, .. } | RecvCall::From { flags, .. } => *flags,
        }
    }
}

struct Pending {
    notif: Notification,
    inode: u64,
    /// The caller's socket (the far end of the pair), duplicated.
    far: OwnedFd,
    call: RecvCall,
    deadline: Option<Instant>,
}

enum Answer {
    Value(i64),
    Error(Errno),
    Continue,
    /// Answered already (a descriptor was installed) or left waiting.
    Done,
}

impl From<Result<i64, Errno>> for Answer {
    fn from(r: Result<i64, Errno>) -> Self {
        match r {
            Ok(v) => Answer::Value(v),
            Err(e) => Answer::Error(e),
        }
    }
}

/// The emulation of one process tree (everything that inherited the filter).
pub struct Supervisor {
    listener: Listener,
    ifaces: Interfaces,
    node_name: String,
    sockets: HashMap<u64, Emulated>,
    pending: Vec<Pending>,
    stats: EmulationStats,
}

impl Supervisor {
    pub fn new(listener: OwnedFd, ifaces: Interfaces, node_name: String) -> Supervisor {
        Supervisor {
            listener: Listener::new(listener),
            ifaces,
            node_name,
            sockets: HashMap::new(),
            pending: Vec::new(),
            stats: EmulationStats::default(),
        }
    }

    /// Serves until no process uses the filter or `stop` becomes readable.
    pub fn run(mut self, stop: Option<RawFd>) -> EmulationStats {
        loop {
            let mut fds = vec![libc::pollfd {
                fd: self.listener.raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            }];
            if let Some(stop) = stop {
                fds.push(libc::pollfd {
                    fd: stop,
                    events: libc::POLLIN,
                    revents: 0,
                });
            }
            let socket_start = fds.len();
            for s in self.sockets.values() {
                let mut events = libc::POLLIN;
                if !s.out.is_empty() {
                    events |= libc::POLLOUT;
                }
                fds.push(libc::pollfd {
                    fd: s.near.as_raw_fd(),
                    events,
                    revents: 0,
                });
                if let (true, Some(bus)) = (s.out.is_empty(), s.raw.wait_fd()) {
                    fds.push(libc::pollfd {
                        fd: bus,
                        events: libc::POLLIN,
                        revents: 0,
                    });
                }
            }
            for p in &self.pending {
                fds.push(libc::pollfd {
                    fd: p.far.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                });
            }
            let timeout = if self.pending.is_empty() {
                -1
            } else {
                PENDING_TICK.as_millis() as i32
            };
            // SAFETY: `fds` is a valid array of pollfd for the duration of the call.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
            if n < 0 {
                if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                tracing::warn!(error = %std::io::Error::last_os_error(), "SocketCAN emulation: poll failed");
                break;
            }
            if stop.is_some() && fds[1].revents != 0 {
                // Stopped: what the program wrote before still goes on the bus.
                self.pump_all(usize::MAX);
                break;
            }
            let listener = fds[0].revents;
            if listener & libc::POLLIN != 0 {
                match self.listener.recv() {
                    Ok(Some(n)) => self.handle(n),
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "SocketCAN emulation: reading a notification failed");
                        break;
                    }
                }
            } else if listener & (libc::POLLHUP | libc::POLLERR) != 0 {
                // No process uses the filter any more: what the last one wrote still goes on the bus.
                self.pump_all(usize::MAX);
                break;
            }
            for fd in &fds[socket_start..] {
                if fd.revents & libc::POLLHUP != 0 && fd.revents & libc::POLLIN == 0 {
                    if let Some(s) = self.sockets.values_mut().find(|s| s.near.as_raw_fd() == fd.fd) {
                        s.hung_up = true;
                    }
                }
            }
            self.pump_all(WRITE_BATCH);
            self.serve_pending();
        }
        self.stats
    }

    fn handle(&mut self, n: Notification) {
        self.stats.calls += 1;
        if !n.is_native_arch() {
            self.listener.reply_continue(n.id);
            return;
        }
        let t = Target { pid: n.pid };
        let answer = match n.nr {
            SYS_SOCKET => self.socket(&n),
            SYS_BIND => self.bind(&n, t),
            SYS_SETSOCKOPT => self.setsockopt(&n, t),
            SYS_GETSOCKOPT => self.getsockopt(&n, t),
            SYS_GETSOCKNAME => self.getsockname(&n, t),
            SYS_IOCTL => self.ioctl(&n, t),
            SYS_RECVMSG => self.recvmsg(n, t),
            SYS_RECVFROM => self.recvfrom(n, t),
            SYS_SENDMSG => self.sendmsg(&n, t),
            SYS_SENDTO => self.sendto(&n, t),
            SYS_WRITE => self.write(&n, t),
            _ => Answer::Continue,
        };
        match answer {
            Answer::Value(v) => self.listener.reply_value(n.id, v),
            Answer::Error(e) => self.listener.reply_error(n.id, e),
            Answer::Continue => self.listener.reply_continue(n.id),
            Answer::Done => {}
        }
    }

    /// The emulated socket behind the caller's descriptor `fd`, if it is one.
    fn ours(&self, t: Target, fd: u64) -> Option<u64> {
        t.socket_inode(fd).filter(|i| self.sockets.contains_key(i))
    }

    fn socket(&mut self, n: &Notification) -> Answer {
        let (ty, proto) = (n.args[1], n.args[2] as i32);
        if ty & !(0xf | SOCK_NONBLOCK | SOCK_CLOEXEC) != 0 {
            return Answer::Error(Errno::EINVAL);
        }
        if (ty & 0xf) as i32 != SOCK_RAW || proto != CAN_RAW {
            // CAN_BCM, ISO-TP and J1939 are not emulated.
            return Answer::Error(Errno::EPROTONOSUPPORT);
        }
        let Ok((far, near)) = super::seccomp::seqpacket_pair() else {
            return Answer::Error(Errno::ENOBUFS);
        };
        set_nonblocking(near.as_raw_fd());
        if ty & SOCK_NONBLOCK != 0 {
            set_nonblocking(far.as_raw_fd());
        }
        // SAFETY: fstat fills a plain struct.
        let inode = unsafe {
            let mut st: libc::stat = std::mem::zeroed();
            if libc::fstat(far.as_raw_fd(), &mut st) != 0 {
                return Answer::Error(Errno::ENOBUFS);
            }
            st.st_ino
        };
        match self
            .listener
            .reply_with_fd(n.id, far.as_raw_fd(), ty & SOCK_CLOEXEC != 0)
        {
            Ok(_) => {
                self.stats.sockets += 1;
                self.sockets.insert(
                    inode,
                    Emulated {
                        raw: RawSocket::new(self.node_name.clone()),
                        near,
                        meta: VecDeque::new(),
                        out: VecDeque::new(),
                        hung_up: false,
                    },
                );
            }
            Err(e) => tracing::debug!(error = %e, "SocketCAN emulation: the caller of socket() went away"),
        }
        Answer::Done
    }

    fn bind(&mut self, n: &Notification, t: Target) -> Answer {
        let Some(inode) = self.ours(t, n.args[0]) else {
            return Answer::Continue;
        };
        let len = n.args[2];
        if len < 8 {
            return Answer::Error(Errno::EINVAL);
        }
        let addr = match t.read(n.args[1], len.min(SOCKADDR_CAN_LEN as u64) as usize) {
            Ok(a) => a,
            Err(e) => return Answer::Error(e),
        };
        if !self.listener.id_valid(n.id) {
            return Answer::Done;
        }
        let ifindex = match crate::raw::parse_sockaddr_can(&addr) {
            Ok(i) => i,
            Err(e) => return Answer::Error(e),
        };
        let ifaces = &self.ifaces;
        match self.sockets.get_mut(&inode) {
            Some(s) => s.raw.bind(ifaces, ifindex).map(|()| 0).into(),
            None => Answer::Error(Errno::EBADF),
        }
    }

    fn setsockopt(&mut self, n: &Notification, t: Target) -> Answer {
        let Some(inode) = self.ours(t, n.args[0]) else {
            return Answer::Continue;
        };
        let (level, name, val, len) = (n.args[1] as i32, n.args[2] as i32, n.args[3], n.args[4]);
        if len > super::target::MAX_READ as u64 {
            return Answer::Error(Errno::EINVAL);
        }
        let bytes = match t.read(val, len as usize) {
            Ok(b) => b,
            Err(e) => return Answer::Error(e),
        };
        if !self.listener.id_valid(n.id) {
            return Answer::Done;
        }
        let ifaces = &self.ifaces;
        let Some(s) = self.sockets.get_mut(&inode) else {
            return Answer::Error(Errno::EBADF);
        };
        // Frames written before the call go out under the options they were written with (the kernel
        // sends each frame during its write): an FD frame before FD_FRAMES is turned off, a frame written
        // with LOOPBACK off before it is turned on.
        forward_written(s, &mut self.stats, usize::MAX);
        match s.raw.setsockopt(ifaces, level, name, &bytes) {
            // Socket-level options also apply to the real socket (receive timeouts, buffer sizes).
            Ok(()) if level == SOL_SOCKET => Answer::Continue,
            r => r.map(|()| 0).into(),
        }
    }

    fn getsockopt(&mut self, n: &Notification, t: Target) -> Answer {
        let Some(inode) = self.ours(t, n.args[0]) else {
            return Answer::Continue;
        };
        let (level, name, val, lenp) = (n.args[1] as i32, n.args[2] as i32, n.args[3], n.args[4]);
        let cap = match t.read_u32(lenp) {
            Ok(c) if (c as i32) < 0 => return Answer::Error(Errno::EINVAL),
            Ok(c) => c as usize,
            Err(e) => return Answer::Error(e),
        };
        let Some(s) = self.sockets.get(&inode) else {
            return Answer::Error(Errno::EBADF);
        };
        match s.raw.getsockopt(level, name, cap) {
            Ok(value) => {
                let r = t
                    .write(val, &value)
                    .and_then(|()| t.write_u32(lenp, value.len() as u32));
                r.map(|()| 0).into()
            }
            // Socket-level options not modelled here are the real socket's.
            Err(Errno::ENOPROTOOPT) if level == SOL_SOCKET => Answer::Continue,
            Err(e) => Answer::Error(e),
        }
    }

    fn getsockname(&mut self, n: &Notification, t: Target) -> Answer {
        let Some(inode) = self.ours(t, n.args[0]) else {
            return Answer::Continue;
        };
        let bound = self.sockets.get(&inode).and_then(|s| s.raw.bound).unwrap_or(0);
        put_addr(&mut { t }, n.args[1], n.args[2], &sockaddr_can(bound))
            .map(|()| 0)
            .into()
    }

    fn ioctl(&mut self, n: &Notification, t: Target) -> Answer {
        let (request, arg) = (n.args[1] as u32, n.args[2]);
        let ifr = match t.read(arg, 20) {
            Ok(b) => b,
            Err(e) => return Answer::Error(e),
        };
        let name_len = ifr[..16].iter().position(|&b| b == 0).unwrap_or(16);
        let name = String::from_utf8_lossy(&ifr[..name_len]).into_owned();
        let result = match request {
            SIOCGIFNAME => {
                let ifindex = i32::from_le_bytes([ifr[16], ifr[17], ifr[18], ifr[19]]);
                let Some(found) = u32::try_from(ifindex).ok().and_then(|i| self.ifaces.name_of(i)) else {
                    return Answer::Continue;
                };
                let mut out = [0u8; 16];
                let b = found.as_bytes();
                out[..b.len().min(15)].copy_from_slice(&b[..b.len().min(15)]);
                t.write(arg, &out)
            }
            _ => {
                let Some(ifindex) = self.ifaces.index_of(&name) else {
                    return Answer::Continue;
                };
                match request {
                    SIOCGIFINDEX => t.write(arg + 16, &ifindex.to_le_bytes()),
                    SIOCGIFFLAGS => t.write(arg + 16, &IFF_FLAGS.to_le_bytes()),
                    SIOCGIFMTU => t.write(arg + 16, &(CANFD_MTU as i32).to_le_bytes()),
                    _ => return Answer::Continue,
                }
            }
        };
        result.map(|()| 0).into()
    }

    fn recvmsg(&mut self, n: Notification, t: Target) -> Answer {
        let Some(inode) = self.ours(t, n.args[0]) else {
            return Answer::Continue;
        };
        let (hdr, iov) = match MsgHdr::read(&t, n.args[1]).and_then(|h| Ok((h, h.iovecs(&t)?))) {
            Ok(read) => read,
            Err(e) => return Answer::Error(e),
        };
        self.start_recv(
            n,
            t,
            inode,
            RecvCall::Msg {
                msg: n.args[1],
                flags: n.args[2],
                hdr,
                iov,
            },
        )
    }

    fn recvfrom(&mut self, n: Notification, t: Target) -> Answer {
        let Some(inode) = self.ours(t, n.args[0]) else {
            return Answer::Continue;
        };
        let call = RecvCall::From {
            buf: n.args[1],
            len: n.args[2],
            flags: n.args[3],
            src: n.args[4],
            srclen: n.args[5],
        };
        self.start_recv(n, t, inode, call)
    }

    fn start_recv(&mut self, n: Notification, t: Target, inode: u64, call: RecvCall) -> Answer {
        let far = match t.duplicate_fd(n.args[0]) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %e, "SocketCAN emulation: cannot reach the caller's socket; recvmsg runs unemulated");
                return Answer::Continue;
            }
        };
        // SAFETY: F_GETFL reads the descriptor's status flags.
        let nonblocking = unsafe { libc::fcntl(far.as_raw_fd(), libc::F_GETFL) } & libc::O_NONBLOCK != 0
            || call.flags() & MSG_DONTWAIT != 0;
        match self.try_recv(t, inode, far.as_raw_fd(), &call) {
            Some(answer) => answer,
            None if nonblocking => Answer::Error(Errno::EAGAIN),
            None => {
                let timeout = self.sockets.get(&inode).map_or(0, |s| s.raw.rcvtimeo_us);
                self.pending.push(Pending {
                    notif: n,
                    inode,
                    far,
                    call,
                    deadline: (timeout > 0).then(|| Instant::now() + Duration::from_micros(timeout)),
                });
                Answer::Done
            }
        }
    }

    /// Receives one frame for `call` from the caller's socket `far`; `None` when there is none yet.
    fn try_recv(&mut self, t: Target, inode: u64, far: RawFd, call: &RecvCall) -> Option<Answer> {
        let s = self.sockets.get_mut(&inode)?;
        // Forget the metadata of frames the program has read with read() meanwhile.
        let mut waiting: libc::c_int = 0;
        // SAFETY: SIOCINQ writes one int.
        if unsafe { libc::ioctl(far, libc::FIONREAD, &mut waiting) } == 0 {
            let mut queued: usize = s.meta.iter().map(|m| m.len).sum();
            while queued > waiting.max(0) as usize {
                match s.meta.pop_front() {
                    Some(m) => queued -= m.len,
                    None => break,
                }
            }
        }
        let peek = call.flags() & MSG_PEEK != 0;
        let mut buf = [0u8; CANFD_MTU];
        let flags = libc::MSG_DONTWAIT | if peek { libc::MSG_PEEK } else { 0 };
        // SAFETY: recv writes at most buf.len() bytes into buf.
        let got = unsafe { libc::recv(far, buf.as_mut_ptr().cast(), buf.len(), flags) };
        if got < 0 {
            let e = std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO);
            if e == libc::EAGAIN {
                return None;
            }
            return Some(Answer::Error(Errno(e)));
        }
        let frame = &buf[..got as usize];
        let meta = if peek {
            s.meta.front().copied()
        } else {
            s.meta.pop_front()
        };
        let meta = meta.filter(|m| m.len == frame.len()).unwrap_or(Meta {
            len: frame.len(),
            timestamp_ns: now_ns(),
            own: false,
        });
        let control = control_messages(&s.raw.opts, meta.timestamp_ns);
        let rx = Delivery {
            frame,
            ifindex: s.raw.bound.unwrap_or(0),
            own: meta.own,
            control: &control,
        };
        let mut mem = t;
        let delivered = match call {
            RecvCall::From {
                buf,
                len,
                flags,
                src,
                srclen,
            } => deliver_recvfrom(&mut mem, (*buf, *len, *flags, *src, *srclen), &rx),
            RecvCall::Msg { msg, flags, hdr, iov } => deliver_recvmsg(&mut mem, *msg, hdr, iov, *flags, &rx),
        };
        Some(delivered.map(|n| n as i64).into())
    }

    fn serve_pending(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        for p in pending {
            if !self.listener.id_valid(p.notif.id) {
                continue;
            }
            let t = Target { pid: p.notif.pid };
            match self.try_recv(t, p.inode, p.far.as_raw_fd(), &p.call) {
                Some(Answer::Value(v)) => self.listener.reply_value(p.notif.id, v),
                Some(Answer::Error(e)) => self.listener.reply_error(p.notif.id, e),
                Some(_) => self.listener.reply_continue(p.notif.id),
                None if p.deadline.is_some_and(|d| Instant::now() >= d) => {
                    self.listener.reply_error(p.notif.id, Errno::EAGAIN)
                }
                None => self.pending.push(p),
            }
        }
    }

    fn sendmsg(&mut self, n: &Notification, t: Target) -> Answer {
        let Some(inode) = self.ours(t, n.args[0]) else {
            return Answer::Continue;
        };
        let hdr = match MsgHdr::read(&t, n.args[1]) {
            Ok(h) => h,
            Err(e) => return Answer::Error(e),
        };
        let data = match gather(&t, &hdr) {
            Ok(d) => d,
            Err(e) => return Answer::Error(e),
        };
        let dest = match hdr.name {
            0 => None,
            addr => match t.read(addr, (hdr.namelen as usize).min(SOCKADDR_CAN_LEN)) {
                Ok(a) => Some(a),
                Err(e) => return Answer::Error(e),
            },
        };
        self.send(n, inode, &data, dest.as_deref())
    }

    fn sendto(&mut self, n: &Notification, t: Target) -> Answer {
        let Some(inode) = self.ours(t, n.args[0]) else {
            return Answer::Continue;
        };
        let len = n.args[2];
        if len != CAN_MTU as u64 && len != CANFD_MTU as u64 {
            return Answer::Error(Errno::EINVAL);
        }
        let data = match t.read(n.args[1], len as usize) {
            Ok(d) => d,
            Err(e) => return Answer::Error(e),
        };
        let dest = match n.args[4] {
            0 => None,
            addr => match t.read(addr, (n.args[5] as usize).min(SOCKADDR_CAN_LEN)) {
                Ok(a) => Some(a),
                Err(e) => return Answer::Error(e),
            },
        };
        self.send(n, inode, &data, dest.as_deref())
    }

    fn send(&mut self, n: &Notification, inode: u64, data: &[u8], dest: Option<&[u8]>) -> Answer {
        if !self.listener.id_valid(n.id) {
            return Answer::Done;
        }
        let Some(s) = self.sockets.get_mut(&inode) else {
            return Answer::Error(Errno::EBADF);
        };
        if let Some(addr) = dest {
            if addr.len() < 8 {
                return Answer::Error(Errno::EINVAL);
            }
            if let Err(e) = s.raw.check_destination(addr) {
                return Answer::Error(e);
            }
        }
        // Frames written earlier with write() go first.
        forward_written(s, &mut self.stats, usize::MAX);
        s.raw.send(data).map(|n| n as i64).into()
    }

    fn write(&mut self, n: &Notification, t: Target) -> Answer {
        let Some(inode) = self.ours(t, n.args[0]) else {
            return Answer::Continue;
        };
        let len = n.args[2];
        let fd_frames = self.sockets.get(&inode).is_some_and(|s| s.raw.opts.fd_frames);
        if len != CANFD_MTU as u64 || !fd_frames {
            return Answer::Error(Errno::EINVAL);
        }
        match t.read(n.args[1], CANFD_MTU).and_then(|b| decode_frame(&b, true)) {
            // A valid FD frame goes through the pair like every written frame.
            Ok(_) => Answer::Continue,
            Err(e) => Answer::Error(e),
        }
    }

    /// Moves frames both ways for every socket: at most `max_written` written frames each.
    fn pump_all(&mut self, max_written: usize) {
        let stats = &mut self.stats;
        for s in self.sockets.values_mut() {
            forward_written(s, stats, max_written);
            forward_received(s);
        }
        self.sockets.retain(|_, s| !s.hung_up);
    }
}

/// Frames the program wrote into its end of the pair: to the bus, at most `max` of them (so that a program
/// that writes without pause does not starve the bus's direction, whose own-frame echoes would pile up in
/// the hub). True when `max` stopped it with more waiting.
fn forward_written(s: &mut Emulated, stats: &mut EmulationStats, max: usize) -> bool {
    let mut buf = [0u8; CANFD_MTU + 1];
    for _ in 0..max {
        // SAFETY: recv writes at most buf.len() bytes into buf.
        let n = unsafe {
            libc::recv(
                s.near.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            return false;
        }
        if n == 0 {
            s.hung_up = true;
            return false;
        }
        let sent = decode_frame(&buf[..n as usize], s.raw.opts.fd_frames).and_then(|f| s.raw.send_frame(&f));
        if let Err(e) = sent {
            stats.dropped_writes += 1;
            tracing::debug!(node = %s.raw.node_name, error = %e, "SocketCAN emulation: a written frame was dropped");
        }
    }
    true
}

/// Frames from the bus that pass the socket's options: into the pair, as long as it has room.
fn forward_received(s: &mut Emulated) {
    loop {
        if s.out.is_empty() {
            match s.raw.take() {
                Ok(Some(rx)) => {
                    let bytes = encode_frame(&rx.frame);
                    let meta = Meta {
                        len: bytes.len(),
                        timestamp_ns: rx.timestamp_ns,
                        own: rx.own,
                    };
                    s.out.push_back((bytes, meta));
                }
                Ok(None) | Err(_) => return,
            }
        }
        let Some((bytes, meta)) = s.out.front() else {
            return;
        };
        // SAFETY: send reads bytes.len() bytes from bytes.
        let n = unsafe {
            libc::send(
                s.near.as_raw_fd(),
                bytes.as_ptr().cast(),
                bytes.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error().raw_os_error();
            if e != Some(libc::EAGAIN) {
                s.hung_up = true;
            }
            return;
        }
        let meta = *meta;
        s.out.pop_front();
        if s.meta.len() >= META_MAX {
            s.meta.pop_front();
        }
        s.meta.push_back(meta);
    }
}

/// The bytes of a `sendmsg`'s iovecs; more than a `canfd_frame` is `EINVAL` (no frame is that long).
fn gather(t: &Target, hdr: &MsgHdr) -> Result<Vec<u8>, Errno> {
    let mut data = Vec::new();
    for (base, len) in hdr.iovecs(t)? {
        if data.len() as u64 + len > CANFD_MTU as u64 {
            return Err(Errno::EINVAL);
        }
        data.extend(t.read(base, len as usize)?);
    }
    Ok(data)
}

fn set_nonblocking(fd: RawFd) {
    // SAFETY: F_GETFL/F_SETFL on a descriptor owned by the caller.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}
