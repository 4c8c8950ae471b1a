//! The seccomp half of the emulation: the BPF program that sends a process's SocketCAN calls to a
//! supervisor ([`SyscallFilter`]), installing it in a child between `fork` and `exec` and handing the
//! listener to the parent ([`SyscallFilter::install_in_child`], [`receive_listener`]), and the listener's
//! ioctls ([`Listener`]).
//!
//! The program is hand-assembled classic BPF: the rust-vmm `seccompiler` crate, which the VMM's own sandbox
//! uses, has no `SECCOMP_RET_USER_NOTIF` action and no way to ask for a listener. It is x86-64 only: any
//! other `arch` (and x32 system call numbers) is allowed unchanged, and the supervisor checks `arch` again.
//!
//! What is notified (everything else runs in the kernel untouched, at native speed):
//!
//! | call | notified when |
//! |---|---|
//! | `socket` | the domain is `AF_CAN` |
//! | `bind`, `setsockopt`, `getsockopt`, `getsockname`, `recvmsg`, `sendmsg` | always (the supervisor answers `CONTINUE` for other sockets) |
//! | `ioctl` | `SIOCGIFINDEX`, `SIOCGIFNAME`, `SIOCGIFFLAGS`, `SIOCGIFMTU` |
//! | `recvfrom` | the caller asks for the source address |
//! | `sendto` | a destination address is given, or the length is not 16 (`struct can_frame`) |
//! | `write` | fd > 2 and the length is not 16 (bad lengths are `EINVAL` on a CAN socket) |
//!
//! `sendmmsg` is never notified: the child uses it to send the listener to its parent after the filter is
//! in place (a `sendmsg` would wait for a supervisor that does not have the listener yet).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::errno::Errno;

/// The data byte that carries a descriptor in [`send_fd`] (ASCII ACK).
pub const FD_MARKER: u8 = 0x06;
const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
/// `SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP` (Linux 6.6), not in the `libc` crate.
const SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP: u64 = 1;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
pub(crate) const SYS_WRITE: i32 = 1;
pub(crate) const SYS_IOCTL: i32 = 16;
pub(crate) const SYS_SOCKET: i32 = 41;
pub(crate) const SYS_SENDTO: i32 = 44;
pub(crate) const SYS_RECVFROM: i32 = 45;
pub(crate) const SYS_SENDMSG: i32 = 46;
pub(crate) const SYS_RECVMSG: i32 = 47;
pub(crate) const SYS_BIND: i32 = 49;
pub(crate) const SYS_GETSOCKNAME: i32 = 51;
pub(crate) const SYS_SETSOCKOPT: i32 = 54;
pub(crate) const SYS_GETSOCKOPT: i32 = 55;
pub(crate) const SIOCGIFNAME: u32 = 0x8910;
pub(crate) const SIOCGIFFLAGS: u32 = 0x8913;
pub(crate) const SIOCGIFMTU: u32 = 0x8921;
pub(crate) const SIOCGIFINDEX: u32 = 0x8933;

const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const JGT_K: u16 = 0x25; // BPF_JMP | BPF_JGT | BPF_K
const JSET_K: u16 = 0x45; // BPF_JMP | BPF_JSET | BPF_K
const RET_K: u16 = 0x06; // BPF_RET | BPF_K
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
const NOTIFY: u32 = libc::SECCOMP_RET_USER_NOTIF;

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// Offset of the low 32 bits of argument `i` in `struct seccomp_data`.
fn arg_lo(i: u32) -> u32 {
    16 + 8 * i
}

/// The BPF program of the emulation, built once in the parent (the child only points the kernel at it).
pub struct SyscallFilter {
    program: Vec<libc::sock_filter>,
}

impl Default for SyscallFilter {
    fn default() -> Self {
        SyscallFilter::new()
    }
}

impl SyscallFilter {
    pub fn new() -> SyscallFilter {
        let mut p = vec![
            stmt(LD_W_ABS, OFF_ARCH),
            jump(JEQ_K, AUDIT_ARCH_X86_64, 1, 0),
            stmt(RET_K, ALLOW),
            stmt(LD_W_ABS, OFF_NR),
            jump(JSET_K, X32_SYSCALL_BIT, 0, 1),
            stmt(RET_K, ALLOW),
        ];
        // Each block runs when `nr` matches and ends in a return; the accumulator holds `nr` on entry.
        let always = vec![stmt(RET_K, NOTIFY)];
        let socket = vec![
            stmt(LD_W_ABS, arg_lo(0)),
            jump(JEQ_K, crate::raw::AF_CAN as u32, 0, 1),
            stmt(RET_K, NOTIFY),
            stmt(RET_K, ALLOW),
        ];
        let requests = [SIOCGIFINDEX, SIOCGIFNAME, SIOCGIFFLAGS, SIOCGIFMTU];
        let mut ioctl = vec![stmt(LD_W_ABS, arg_lo(1))];
        let m = requests.len();
        for (i, r) in requests.iter().enumerate() {
            ioctl.push(jump(JEQ_K, *r, (m - i) as u8, 0));
        }
        ioctl.extend([stmt(RET_K, ALLOW), stmt(RET_K, NOTIFY)]);
        let recvfrom = vec![
            stmt(LD_W_ABS, arg_lo(4)),
            jump(JEQ_K, 0, 0, 2),
            stmt(LD_W_ABS, arg_lo(4) + 4),
            jump(JEQ_K, 0, 1, 0),
            stmt(RET_K, NOTIFY),
            stmt(RET_K, ALLOW),
        ];
        let sendto = vec![
            stmt(LD_W_ABS, arg_lo(4)),
            jump(JEQ_K, 0, 0, 5),
            stmt(LD_W_ABS, arg_lo(4) + 4),
            jump(JEQ_K, 0, 0, 3),
            stmt(LD_W_ABS, arg_lo(2)),
            jump(JEQ_K, crate::raw::CAN_MTU as u32, 0, 1),
            stmt(RET_K, ALLOW),
            stmt(RET_K, NOTIFY),
        ];
        let write = vec![
            stmt(LD_W_ABS, arg_lo(0)),
            jump(JGT_K, 2, 0, 3),
            stmt(LD_W_ABS, arg_lo(2)),
            jump(JEQ_K, crate::raw::CAN_MTU as u32, 1, 0),
            stmt(RET_K, NOTIFY),
            stmt(RET_K, ALLOW),
        ];
        let blocks: Vec<(i32, Vec<libc::sock_filter>)> = vec![
            (SYS_SOCKET, socket),
            (SYS_BIND, always.clone()),
            (SYS_SETSOCKOPT, always.clone()),
            (SYS_GETSOCKOPT, always.clone()),
            (SYS_GETSOCKNAME, always.clone()),
            (SYS_RECVMSG, always.clone()),
            (SYS_SENDMSG, always),
            (SYS_IOCTL, ioctl),
            (SYS_RECVFROM, recvfrom),
            (SYS_SENDTO, sendto),
            (SYS_WRITE, write),
        ];
        for (nr, block) in blocks {
            // Blocks other than the first start by reloading `nr` (a block's loads replace it).
            p.push(stmt(LD_W_ABS, OFF_NR));
            p.push(jump(JEQ_K, nr as u32, 0, block.len() as u8));
            p.extend(block);
        }
        p.push(stmt(RET_K, ALLOW));
        SyscallFilter { program: p }
    }

    /// Instructions in the program (for tests and the report).
    pub fn len(&self) -> usize {
        self.program.len()
    }

    pub fn is_empty(&self) -> bool {
        self.program.is_empty()
    }

    /// Installs the filter in the calling process and sends the listener over `channel` (a Unix socket)
    /// with `SCM_RIGHTS`. For the child between `fork` and `exec` (`pre_exec`): it only makes system calls
    /// (`prctl`, `seccomp`, `sendmmsg`, `close`) and allocates nothing.
    ///
    /// # Safety
    /// Call it only in a freshly forked child about to `exec` (the filter binds the whole process for the
    /// rest of its life); `channel` must be an open Unix socket.
    pub unsafe fn install_in_child(&self, channel: RawFd) -> io::Result<()> {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(io::Error::last_os_error());
        }
        let prog = libc::sock_fprog {
            len: self.program.len() as u16,
            filter: self.program.as_ptr() as *mut libc::sock_filter,
        };
        let listener = libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
            &prog as *const libc::sock_fprog,
        );
        if listener < 0 {
            return Err(io::Error::last_os_error());
        }
        let listener = listener as RawFd;
        let sent = send_fd_mmsg(channel, listener);
        libc::close(listener);
        sent
    }
}

/// A `SOCK_SEQPACKET` Unix socket pair, both ends close-on-exec: each emulated CAN socket is one, and so is
/// the channel a child sends its listener over (a sequenced-packet peer sees the other end go away).
pub fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut pair = [0i32; 2];
    // SAFETY: socketpair writes two descriptors into `pair`, owned right below.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            pair.as_mut_ptr(),
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both were just created and are owned by nothing else.
    Ok(unsafe { (OwnedFd::from_raw_fd(pair[0]), OwnedFd::from_raw_fd(pair[1])) })
}

/// A control-message buffer for one descriptor, aligned for `cmsghdr`.
#[repr(C, align(8))]
struct FdCmsg {
    bytes: [u8; 24],
}

/// Sends `fd` over `channel` with one `sendmmsg` (allocation-free).
unsafe fn send_fd_mmsg(channel: RawFd, fd: RawFd) -> io::Result<()> {
    let mut byte = [FD_MARKER];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut control = FdCmsg { bytes: [0; 24] };
    let mut msg: libc::msghdr = std::mem::zeroed();
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.bytes.as_mut_ptr().cast();
    msg.msg_controllen = libc::CMSG_SPACE(4) as usize;
    let cmsg = libc::CMSG_FIRSTHDR(&msg);
    if cmsg.is_null() {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    (*cmsg).cmsg_level = libc::SOL_SOCKET;
    (*cmsg).cmsg_type = libc::SCM_RIGHTS;
    (*cmsg).cmsg_len = libc::CMSG_LEN(4) as usize;
    std::ptr::copy_nonoverlapping((&fd as *const RawFd).cast::<u8>(), libc::CMSG_DATA(cmsg), 4);
    let mut mmsg = libc::mmsghdr {
        msg_hdr: msg,
        msg_len: 0,
    };
    if libc::sendmmsg(channel, &mut mmsg, 1, 0) != 1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sends `fd` over the Unix socket `channel` with `SCM_RIGHTS`, one marker byte as the data (for
/// `pod-init`, which hands a container's listener to the harness).
pub fn send_fd(channel: RawFd, fd: RawFd) -> io::Result<()> {
    // SAFETY: the buffers live on this stack frame for the whole call.
    unsafe { send_fd_mmsg(channel, fd) }
}

/// Receives a descriptor sent with [`send_fd`] or by [`SyscallFilter::install_in_child`]: reads exactly the
/// one marker byte (so nothing after it on a stream is consumed). `Ok(Err(byte))` when the first byte came
/// without a descriptor (the peer sent something else; the byte is handed back).
pub fn receive_fd(channel: RawFd) -> io::Result<Result<OwnedFd, u8>> {
    let mut byte = [0u8];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut control = FdCmsg { bytes: [0; 24] };
    // SAFETY: msghdr is plain data; every pointer in it refers to this stack frame.
    let n = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.bytes.as_mut_ptr().cast();
        msg.msg_controllen = libc::CMSG_SPACE(4) as usize;
        let n = libc::recvmsg(channel, &mut msg, libc::MSG_CMSG_CLOEXEC);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if n == 1
            && !cmsg.is_null()
            && (*cmsg).cmsg_level == libc::SOL_SOCKET
            && (*cmsg).cmsg_type == libc::SCM_RIGHTS
        {
            let mut fd: RawFd = -1;
            std::ptr::copy_nonoverlapping(libc::CMSG_DATA(cmsg), (&mut fd as *mut RawFd).cast::<u8>(), 4);
            if fd >= 0 {
                return Ok(Ok(OwnedFd::from_raw_fd(fd)));
            }
        }
        n
    };
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the peer closed the channel before sending the seccomp listener",
        ));
    }
    Ok(Err(byte[0]))
}

/// One notified system call.
#[derive(Debug, Clone, Copy)]
pub struct Notification {
    pub id: u64,
    /// The calling thread, in the supervisor's PID namespace.
    pub pid: i32,
    pub nr: i32,
    pub arch: u32,
    pub args: [u64; 6],
}

impl Notification {
    pub fn is_native_arch(&self) -> bool {
        self.arch == AUDIT_ARCH_X86_64
    }
}

/// The supervisor's end of a filter: a seccomp listener descriptor.
pub struct Listener {
    fd: OwnedFd,
}

impl Listener {
    pub fn new(fd: OwnedFd) -> Listener {
        // Wake the supervisor on the caller's CPU (Linux 6.6+): lower latency per call; older kernels refuse
        // the flag, which only costs speed.
        // SAFETY: the ioctl takes a u64 flag word by value.
        unsafe {
            libc::ioctl(
                fd.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_SET_FLAGS as _,
                SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP,
            );
        }
        Listener { fd }
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The next notification; `Ok(None)` when it vanished (the caller was interrupted) before it was read.
    pub fn recv(&self) -> io::Result<Option<Notification>> {
        // SAFETY: seccomp_notif is plain data, zeroed as the kernel requires.
        let mut req: libc::seccomp_notif = unsafe { std::mem::zeroed() };
        // SAFETY: the kernel writes one seccomp_notif into `req`.
        let r = unsafe { libc::ioctl(self.raw_fd(), libc::SECCOMP_IOCTL_NOTIF_RECV as _, &mut req) };
        if r < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::ENOENT | libc::EINTR | libc::EAGAIN) => Ok(None),
                _ => Err(e),
            };
        }
        let a = req.data.args;
        Ok(Some(Notification {
            id: req.id,
            pid: req.pid as i32,
            nr: req.data.nr,
            arch: req.data.arch,
            args: [a[0], a[1], a[2], a[3], a[4], a[5]],
        }))
    }

    /// Whether the notification is still pending (its caller was not interrupted or killed meanwhile):
    /// checked after reading the caller's memory and before acting on it.
    pub fn id_valid(&self, id: u64) -> bool {
        // SAFETY: the ioctl reads one u64.
        unsafe { libc::ioctl(self.raw_fd(), libc::SECCOMP_IOCTL_NOTIF_ID_VALID as _, &id) == 0 }
    }

    fn send(&self, resp: libc::seccomp_notif_resp) {
        // SAFETY: the kernel reads one seccomp_notif_resp. ENOENT (the caller went away) needs no handling.
        unsafe {
            libc::ioctl(self.raw_fd(), libc::SECCOMP_IOCTL_NOTIF_SEND as _, &resp);
        }
    }

    /// The call returns `value`.
    pub fn reply_value(&self, id: u64, value: i64) {
        self.send(libc::seccomp_notif_resp {
            id,
            val: value,
            error: 0,
            flags: 0,
        });
    }

    /// The call fails with `errno`.
    pub fn reply_error(&self, id: u64, errno: Errno) {
        self.send(libc::seccomp_notif_resp {
            id,
            val: 0,
            error: -errno.0,
            flags: 0,
        });
    }

    /// The call runs in the kernel as it is.
    pub fn reply_continue(&self, id: u64) {
        self.send(libc::seccomp_notif_resp {
            id,
            val: 0,
            error: 0,
            flags: libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32,
        });
    }

    /// Installs `src` in the caller and answers the call with the new descriptor number, atomically
    /// (`SECCOMP_ADDFD_FLAG_SEND`, so a signal cannot leave a descriptor behind without an answer).
    pub fn reply_with_fd(&self, id: u64, src: RawFd, cloexec: bool) -> io::Result<i32> {
        let addfd = libc::seccomp_notif_addfd {
            id,
            flags: libc::SECCOMP_ADDFD_FLAG_SEND as u32,
            srcfd: src as u32,
            newfd: 0,
            newfd_flags: if cloexec { libc::O_CLOEXEC as u32 } else { 0 },
        };
        // SAFETY: the kernel reads one seccomp_notif_addfd.
        let r = unsafe { libc::ioctl(self.raw_fd(), libc::SECCOMP_IOCTL_NOTIF_ADDFD as _, &addfd) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_jump_lands_inside_the_program() {
        let f = SyscallFilter::new();
        assert!(f.len() < 256, "{} instructions", f.len());
        for (i, ins) in f.program.iter().enumerate() {
            if ins.code & 0x07 == 0x05 {
                assert!(i + 1 + (ins.jt as usize) < f.len(), "jt of {i}");
                assert!(i + 1 + (ins.jf as usize) < f.len(), "jf of {i}");
            }
        }
        assert_eq!(f.program.last().map(|i| (i.code, i.k)), Some((RET_K, ALLOW)));
    }
}
