//! Descriptor I/O: `read`/`write` (+ vectored and positional forms), `lseek` (files, and directories to
//! rewind them), `close`, `dup*`, `fcntl`, `ioctl`, `poll`/`ppoll`, `select`/`pselect6`.
//!
//! Reading and writing a descriptor's data (stdio, files, CAN sockets) is the data path in `fdio`, which
//! the socket calls share. Blocking operations wait through [`Guest::wait`], which a host signal for the
//! guest interrupts.

use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use super::abi::{access_ok, read_timespec, with_temporary_mask, SysResult};
use super::fdio::{read_fd, write_fd};
use super::readiness::{probe_fd, wait_for, Probe, Scan};
use crate::errno::Errno;
use crate::fdtable::{Object, MAX_FDS};
use crate::fs::FileKind;
use crate::guest::{Guest, MAX_IO};
use crate::vcpu::CpuState;

/// A file read whose bytes could not be copied to the guest did not happen: the offset goes back.
fn unread(g: &Guest, fd: i32, n: usize) {
    if let Ok(desc) = g.fds.get(fd) {
        if let Object::File(f) = &mut desc.borrow_mut().object {
            f.offset = f.offset.saturating_sub(n as u64);
        }
    }
}

pub fn read(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    access_ok(a[1], a[2])?;
    let data = read_fd(g, a[0] as i32, a[2])?;
    if let Err(e) = g.write_user(a[1], &data) {
        unread(g, a[0] as i32, data.len());
        return Err(e);
    }
    Ok(data.len() as u64)
}

pub fn write(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    access_ok(a[1], a[2])?;
    // Check the descriptor before the buffer (Linux order: EBADF wins over EFAULT).
    g.fds.get(a[0] as i32)?;
    let data = g.read_user(a[1], a[2].min(MAX_IO))?;
    Ok(write_fd(g, a[0] as i32, &data)? as u64)
}

pub fn readv(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    let iov = g.read_iovecs(a[1], a[2])?;
    for &(base, len) in &iov {
        access_ok(base, len)?;
    }
    let total: u64 = iov.iter().map(|v| v.1).sum();
    let data = read_fd(g, a[0] as i32, total)?;
    match g.scatter(&iov, &data) {
        Ok(n) => Ok(n as u64),
        Err(e) => {
            unread(g, a[0] as i32, data.len());
            Err(e)
        }
    }
}

pub fn writev(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    g.fds.get(a[0] as i32)?;
    let iov = g.read_iovecs(a[1], a[2])?;
    for &(base, len) in &iov {
        access_ok(base, len)?;
    }
    let data = g.gather(&iov, MAX_IO)?;
    Ok(write_fd(g, a[0] as i32, &data)? as u64)
}

fn pread_file(g: &mut Guest, fd: i32, len: u64, offset: u64) -> Result<Vec<u8>, Errno> {
    if offset > i64::MAX as u64 {
        return Err(Errno::EINVAL);
    }
    let desc = g.fds.get(fd)?;
    let d = desc.borrow();
    match &d.object {
        Object::File(f) if f.kind == FileKind::Regular => {
            let mut buf = vec![0u8; len.min(MAX_IO) as usize];
            let n = f.file.read_at(&mut buf, offset).map_err(|e| Errno::from_io(&e))?;
            buf.truncate(n);
            Ok(buf)
        }
        Object::File(_) => Err(Errno::EISDIR),
        _ => Err(Errno::ESPIPE),
    }
}

pub fn pread64(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    access_ok(a[1], a[2])?;
    let data = pread_file(g, a[0] as i32, a[2], a[3])?;
    g.write_user(a[1], &data)?;
    Ok(data.len() as u64)
}

pub fn preadv(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    let iov = g.read_iovecs(a[1], a[2])?;
    let total: u64 = iov.iter().map(|v| v.1).sum();
    let data = pread_file(g, a[0] as i32, total, a[3])?;
    Ok(g.scatter(&iov, &data)? as u64)
}

pub fn pwrite64(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    let desc = g.fds.get(a[0] as i32)?;
    let d = desc.borrow();
    match d.object {
        Object::File(_) => Err(Errno::EBADF),
        _ => Err(Errno::ESPIPE),
    }
}

pub fn lseek(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    let desc = g.fds.get(a[0] as i32)?;
    let mut d = desc.borrow_mut();
    let Object::File(f) = &mut d.object else {
        return Err(Errno::ESPIPE);
    };
    let off = a[1] as i64;
    if f.kind == FileKind::Directory {
        // A directory's position is the host directory stream's (getdents64 reads from there): seek it
        // there, so `rewinddir` (lseek 0) and `seekdir` work.
        let whence = match a[2] as i32 {
            w @ (libc::SEEK_SET | libc::SEEK_CUR) => w,
            _ => return Err(Errno::EINVAL),
        };
        // SAFETY: lseek on a directory fd the VMM owns; no memory is involved.
        let r = unsafe { libc::lseek(f.file.as_raw_fd(), off, whence) };
        if r < 0 {
            return Err(Errno::from_io(&std::io::Error::last_os_error()));
        }
        f.offset = r as u64;
        return Ok(r as u64);
    }
    let base: i64 = match a[2] as i32 {
        libc::SEEK_SET => 0,
        libc::SEEK_CUR => f.offset as i64,
        libc::SEEK_END => f.file.metadata().map_err(|e| Errno::from_io(&e))?.len() as i64,
        _ => return Err(Errno::EINVAL),
    };
    let new = base.checked_add(off).filter(|v| *v >= 0).ok_or(Errno::EINVAL)?;
    f.offset = new as u64;
    Ok(new as u64)
}

pub fn close(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    g.fds.close(a[0] as i32)?;
    Ok(0)
}

pub fn dup(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    Ok(g.fds.dup(a[0] as i32, 0, false)? as u64)
}

pub fn dup2(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    let (old, new) = (a[0] as i32, a[1] as i32);
    if old == new {
        g.fds.get(old)?;
        return Ok(new as u64);
    }
    Ok(g.fds.dup_to(old, new, false)? as u64)
}

pub fn dup3(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    let (old, new, flags) = (a[0] as i32, a[1] as i32, a[2] as i32);
    if old == new || flags & !libc::O_CLOEXEC != 0 {
        return Err(Errno::EINVAL);
    }
    Ok(g.fds.dup_to(old, new, flags & libc::O_CLOEXEC != 0)? as u64)
}

pub fn fcntl(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    let fd = a[0] as i32;
    let desc = g.fds.get(fd)?;
    match a[1] as i32 {
        libc::F_DUPFD => Ok(g.fds.dup(fd, a[2] as i32, false)? as u64),
        libc::F_DUPFD_CLOEXEC => Ok(g.fds.dup(fd, a[2] as i32, true)? as u64),
        libc::F_GETFD => Ok(if g.fds.cloexec(fd)? {
            libc::FD_CLOEXEC as u64
        } else {
            0
        }),
        libc::F_SETFD => {
            g.fds.set_cloexec(fd, a[2] as i32 & libc::FD_CLOEXEC != 0)?;
            Ok(0)
        }
        libc::F_GETFL => {
            let d = desc.borrow();
            let acc = match &d.object {
                Object::File(_) => libc::O_RDONLY,
                Object::Stdio(0) => libc::O_RDONLY,
                Object::Pipe(p) if !p.write => libc::O_RDONLY,
                Object::Pipe(_) => libc::O_WRONLY,
                Object::Stdio(_) => libc::O_WRONLY,
                _ => libc::O_RDWR,
            };
            Ok((acc | if d.nonblock { libc::O_NONBLOCK } else { 0 }) as u64)
        }
        libc::F_SETFL => {
            desc.borrow_mut().nonblock = a[2] as i32 & libc::O_NONBLOCK != 0;
            Ok(0)
        }
        libc::F_GETLK
        | libc::F_SETLK
        | libc::F_SETLKW
        | libc::F_OFD_GETLK
        | libc::F_OFD_SETLK
        | libc::F_OFD_SETLKW => Ok(0),
        _ => Err(Errno::EINVAL),
    }
}

const TCGETS: u64 = 0x5401;
const FIONREAD: u64 = 0x541b;
const FIONBIO: u64 = 0x5421;
const SIOCGIFNAME: u64 = 0x8910;
const SIOCGIFFLAGS: u64 = 0x8913;
const SIOCGIFMTU: u64 = 0x8921;
const SIOCGIFINDEX: u64 = 0x8933;
/// `sizeof(struct ifreq)`.
const IFREQ_LEN: u64 = 40;

pub fn ioctl(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    let (fd, req, arg) = (a[0] as i32, a[1] & 0xffff_ffff, a[2]);
    let desc = g.fds.get(fd)?;
    let is_socket = matches!(desc.borrow().object, Object::Can(_) | Object::IoctlSocket { .. });
    match req {
        FIONBIO => {
            let on = g.read_u32(arg)? != 0;
            desc.borrow_mut().nonblock = on;
            Ok(0)
        }
        FIONREAD => {
            let n: u32 = {
                let mut d = desc.borrow_mut();
                match &mut d.object {
                    Object::Can(s) => {
                        if s.readable() {
                            16
                        } else {
                            0
                        }
                    }
                    Object::Pipe(p) if !p.write => p.available() as u32,
                    Object::File(f) => {
                        let len = f.file.metadata().map(|m| m.len()).unwrap_or(0);
                        len.saturating_sub(f.offset).min(u64::from(u32::MAX)) as u32
                    }
                    _ => return Err(Errno::ENOTTY),
                }
            };
            g.write_u32(arg, n)?;
            Ok(0)
        }
        SIOCGIFINDEX | SIOCGIFNAME | SIOCGIFFLAGS | SIOCGIFMTU if is_socket => {
            let mut ifr = g.read_user(arg, IFREQ_LEN)?;
            let name_of = |ifr: &[u8]| -> Result<String, Errno> {
                let end = ifr[..16].iter().position(|&b| b == 0).ok_or(Errno::ENODEV)?;
                String::from_utf8(ifr[..end].to_vec()).map_err(|_| Errno::ENODEV)
            };
            match req {
                SIOCGIFINDEX => {
                    let idx = g.ifaces.index_of(&name_of(&ifr)?).ok_or(Errno::ENODEV)?;
                    ifr[16..20].copy_from_slice(&idx.to_le_bytes());
                }
                SIOCGIFNAME => {
                    let idx = u32::from_le_bytes([ifr[16], ifr[17], ifr[18], ifr[19]]);
                    let name = g.ifaces.name_of(idx).ok_or(Errno::ENODEV)?.as_bytes().to_vec();
                    ifr[..16].fill(0);
                    ifr[..name.len().min(15)].copy_from_slice(&name[..name.len().min(15)]);
                }
                SIOCGIFFLAGS => {
                    g.ifaces.index_of(&name_of(&ifr)?).ok_or(Errno::ENODEV)?;
                    let flags: u16 = 0x1 | 0x40 | 0x80; // IFF_UP | IFF_RUNNING | IFF_NOARP
                    ifr[16..18].copy_from_slice(&flags.to_le_bytes());
                }
                _ => {
                    g.ifaces.index_of(&name_of(&ifr)?).ok_or(Errno::ENODEV)?;
                    ifr[16..20].copy_from_slice(&(crate::can::CANFD_MTU as u32).to_le_bytes());
                }
            }
            g.write_user(arg, &ifr)?;
            Ok(0)
        }
        TCGETS => Err(Errno::ENOTTY),
        _ if is_socket => Err(Errno::ENOTTY),
        _ => Err(Errno::ENOTTY),
    }
}

/// The core of poll/ppoll: `timeout` None = forever.
fn do_poll(g: &mut Guest, fds_addr: u64, nfds: u64, timeout: Option<Duration>) -> SysResult {
    if nfds > MAX_FDS as u64 {
        return Err(Errno::EINVAL);
    }
    let raw = g.read_user(fds_addr, nfds * 8)?;
    // The array must also be writable (revents).
    g.mm.check(fds_addr, nfds * 8, crate::mm::Access::Write)?;
    let deadline = deadline_after(timeout);
    let entries: Vec<(i32, i16)> = raw
        .chunks_exact(8)
        .map(|c| {
            (
                i32::from_le_bytes([c[0], c[1], c[2], c[3]]),
                i16::from_le_bytes([c[4], c[5]]),
            )
        })
        .collect();
    let scan = |g: &mut Guest| {
        let mut probe = Probe::default();
        let mut revents = Vec::with_capacity(entries.len());
        for &(fd, events) in &entries {
            if fd < 0 {
                revents.push(0);
                continue;
            }
            let p = probe_fd(g, fd, events);
            revents.push(p.revents);
            probe.waits.extend(p.waits);
            probe.wake = match (probe.wake, p.wake) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        Scan {
            ready: revents.iter().any(|&r| r != 0).then_some(revents),
            probe,
        }
    };
    let revents = wait_for(g, deadline, scan)?.unwrap_or_else(|| vec![0; entries.len()]);
    let mut out = raw.clone();
    for (i, r) in revents.iter().enumerate() {
        out[i * 8 + 6..i * 8 + 8].copy_from_slice(&r.to_le_bytes());
    }
    g.write_user(fds_addr, &out)?;
    Ok(revents.iter().filter(|&&r| r != 0).count() as u64)
}

/// The instant a timeout ends (`None`: no timeout).
fn deadline_after(timeout: Option<Duration>) -> Option<Instant> {
    timeout.map(|t| {
        Instant::now()
            .checked_add(t)
            .unwrap_or_else(crate::guest::far_future)
    })
}

pub fn poll(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    let ms = a[2] as i32;
    let timeout = (ms >= 0).then(|| Duration::from_millis(ms as u64));
    do_poll(g, a[0], a[1], timeout)
}

pub fn ppoll(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    let timeout = if a[2] == 0 {
        None
    } else {
        Some(read_timespec(g, a[2])?)
    };
    let mut mask = None;
    if a[3] != 0 {
        if a[4] != 8 {
            return Err(Errno::EINVAL);
        }
        mask = Some(g.read_u64(a[3])?);
    }
    with_temporary_mask(g, mask, |g| do_poll(g, a[0], a[1], timeout))
}

/// Reads a `fd_set` of `nfds` bits (`None` for a null pointer).
fn read_fd_set(g: &Guest, addr: u64, nfds: usize) -> Result<Option<Vec<u64>>, Errno> {
    if addr == 0 {
        return Ok(None);
    }
    let words = nfds.div_ceil(64);
    let raw = g.read_user(addr, words as u64 * 8)?;
    g.mm.check(addr, words as u64 * 8, crate::mm::Access::Write)?;
    let mut set: Vec<u64> = raw
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect();
    // Bits at or above nfds are ignored (and written back as zero).
    if !nfds.is_multiple_of(64) {
        if let Some(last) = set.last_mut() {
            *last &= (1u64 << (nfds % 64)) - 1;
        }
    }
    Ok(Some(set))
}

fn write_fd_set(g: &mut Guest, addr: u64, set: &[u64]) -> Result<(), Errno> {
    if addr == 0 {
        return Ok(());
    }
    let bytes: Vec<u8> = set.iter().flat_map(|w| w.to_le_bytes()).collect();
    g.write_user(addr, &bytes)
}

fn bit(set: &Option<Vec<u64>>, fd: usize) -> bool {
    set.as_ref().is_some_and(|s| s[fd / 64] & (1 << (fd % 64)) != 0)
}

/// The core of select/pselect6: the three sets, `timeout` None = forever; returns the ready count and
/// the time left.
fn do_select(g: &mut Guest, a: &[u64; 6], timeout: Option<Duration>) -> SysResult {
    let nfds = a[0] as i32;
    if nfds < 0 {
        return Err(Errno::EINVAL);
    }
    let nfds = nfds.min(MAX_FDS) as usize;
    let sets = [
        read_fd_set(g, a[1], nfds)?,
        read_fd_set(g, a[2], nfds)?,
        read_fd_set(g, a[3], nfds)?,
    ];
    // (fd, poll events) of every descriptor in a set; a closed one is EBADF before any wait.
    let mut entries: Vec<(usize, i16)> = Vec::new();
    for fd in 0..nfds {
        let mut events = 0;
        if bit(&sets[0], fd) {
            events |= libc::POLLIN | libc::POLLRDNORM;
        }
        if bit(&sets[1], fd) {
            events |= libc::POLLOUT | libc::POLLWRNORM;
        }
        if bit(&sets[2], fd) {
            events |= libc::POLLPRI;
        }
        if events != 0 {
            g.fds.get(fd as i32)?;
            entries.push((fd, events));
        }
    }
    let deadline = deadline_after(timeout);
    let words = nfds.div_ceil(64);
    let scan = |g: &mut Guest| {
        let mut probe = Probe::default();
        let mut out = [vec![0u64; words], vec![0u64; words], vec![0u64; words]];
        let mut count = 0u64;
        for &(fd, events) in &entries {
            let p = probe_fd(g, fd as i32, events);
            let r = p.revents;
            let hits = [
                events & libc::POLLIN != 0
                    && r & (libc::POLLIN | libc::POLLRDNORM | libc::POLLHUP | libc::POLLERR) != 0,
                events & libc::POLLOUT != 0 && r & (libc::POLLOUT | libc::POLLWRNORM | libc::POLLERR) != 0,
                events & libc::POLLPRI != 0 && r & libc::POLLPRI != 0,
            ];
            for (set, hit) in out.iter_mut().zip(hits) {
                if hit {
                    set[fd / 64] |= 1 << (fd % 64);
                    count += 1;
                }
            }
            probe.waits.extend(p.waits);
            probe.wake = match (probe.wake, p.wake) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        Scan {
            ready: (count > 0).then_some((count, out.clone())),
            probe,
        }
    };
    let (count, out) = wait_for(g, deadline, scan)?
        .unwrap_or_else(|| (0, [vec![0u64; words], vec![0u64; words], vec![0u64; words]]));
    for (i, set) in out.iter().enumerate() {
        write_fd_set(g, a[1 + i], set)?;
    }
    Ok(count)
}

/// Time left until `deadline`, as nanoseconds.
fn left_ns(deadline: Option<Instant>) -> i128 {
    deadline.map_or(0, |d| {
        d.saturating_duration_since(Instant::now()).as_nanos() as i128
    })
}

pub fn select(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    let tv = a[4];
    let timeout = if tv == 0 {
        None
    } else {
        let b = g.read_user(tv, 16)?;
        let sec = i64::from_le_bytes(b[0..8].try_into().map_err(|_| Errno::EFAULT)?);
        let usec = i64::from_le_bytes(b[8..16].try_into().map_err(|_| Errno::EFAULT)?);
        if sec < 0 || !(0..1_000_000).contains(&usec) {
            return Err(Errno::EINVAL);
        }
        Some(Duration::new(sec as u64, usec as u32 * 1000))
    };
    let deadline = deadline_after(timeout);
    let r = do_select(g, a, timeout);
    if tv != 0 && r != Err(Errno::EFAULT) {
        // Linux writes the time left back into the timeval.
        let ns = left_ns(deadline);
        let mut b = [0u8; 16];
        b[0..8].copy_from_slice(&((ns / 1_000_000_000) as i64).to_le_bytes());
        b[8..16].copy_from_slice(&((ns % 1_000_000_000 / 1000) as i64).to_le_bytes());
        let _ = g.write_user(tv, &b);
    }
    r
}

pub fn pselect6(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    let timeout = if a[4] == 0 {
        None
    } else {
        Some(read_timespec(g, a[4])?)
    };
    // The sixth argument points at { const sigset_t *ss; size_t ss_len; }.
    let mut mask = None;
    if a[5] != 0 {
        let set = g.read_u64(a[5])?;
        let len = g.read_u64(a[5] + 8)?;
        if set != 0 {
            if len != 8 {
                return Err(Errno::EINVAL);
            }
            mask = Some(g.read_u64(set)?);
        }
    }
    with_temporary_mask(g, mask, |g| do_select(g, a, timeout))
}

#[cfg(test)]
mod tests {
    use super::super::abi::Handler;
    use super::*;
    use crate::errno::ERESTARTNOHAND;
    use crate::guest::tests::test_guest;

    fn cpu() -> CpuState {
        CpuState::for_tests(Default::default())
    }

    #[test]
    fn bad_pointers_and_descriptors() {
        let mut g = test_guest();
        let mut c = cpu();
        assert_eq!(write(&mut g, &mut c, &[1, 0x10, 5, 0, 0, 0]), Err(Errno::EFAULT));
        assert_eq!(
            write(&mut g, &mut c, &[1, 0x40_0000, 1 << 62, 0, 0, 0]),
            Err(Errno::EFAULT)
        );
        assert_eq!(
            write(&mut g, &mut c, &[1, u64::MAX - 2, 8, 0, 0, 0]),
            Err(Errno::EFAULT)
        );
        assert_eq!(
            write(&mut g, &mut c, &[77, 0x40_0000, 1, 0, 0, 0]),
            Err(Errno::EBADF)
        );
        assert_eq!(
            write(&mut g, &mut c, &[0, 0x40_0000, 1, 0, 0, 0]),
            Err(Errno::EBADF),
            "stdin is read-only"
        );
        assert_eq!(
            read(&mut g, &mut c, &[1, 0x40_0000, 1, 0, 0, 0]),
            Err(Errno::EBADF)
        );
        assert_eq!(lseek(&mut g, &mut c, &[1, 0, 0, 0, 0, 0]), Err(Errno::ESPIPE));
        assert_eq!(close(&mut g, &mut c, &[55, 0, 0, 0, 0, 0]), Err(Errno::EBADF));
        assert_eq!(writev(&mut g, &mut c, &[1, 0x10, 1, 0, 0, 0]), Err(Errno::EFAULT));
        assert_eq!(
            ioctl(&mut g, &mut c, &[1, TCGETS, 0x40_0000, 0, 0, 0]),
            Err(Errno::ENOTTY)
        );
    }

    #[test]
    fn poll_reports_nval_and_times_out() {
        let mut g = test_guest();
        let mut c = cpu();
        let mut pfds = Vec::new();
        for (fd, ev) in [(1i32, libc::POLLOUT), (99, libc::POLLIN), (-1, libc::POLLIN)] {
            pfds.extend_from_slice(&fd.to_le_bytes());
            pfds.extend_from_slice(&ev.to_le_bytes());
            pfds.extend_from_slice(&0i16.to_le_bytes());
        }
        g.write_user(0x40_0000, &pfds).unwrap();
        assert_eq!(poll(&mut g, &mut c, &[0x40_0000, 3, 0, 0, 0, 0]), Ok(2));
        let out = g.read_user(0x40_0000, 24).unwrap();
        assert_eq!(i16::from_le_bytes([out[6], out[7]]), libc::POLLOUT);
        assert_eq!(i16::from_le_bytes([out[14], out[15]]), libc::POLLNVAL);
        assert_eq!(i16::from_le_bytes([out[22], out[23]]), 0);
        assert_eq!(
            poll(&mut g, &mut c, &[0x40_0000, 5000, 0, 0, 0, 0]),
            Err(Errno::EINVAL)
        );
        assert_eq!(
            poll(&mut g, &mut c, &[0x50_0000, 1, 0, 0, 0, 0]),
            Err(Errno::EFAULT),
            "read-only array"
        );
        // Nothing ready: a 20 ms timeout elapses.
        g.write_user(0x40_0000, &[0xff, 0xff, 0xff, 0xff, 1, 0, 0, 0])
            .unwrap();
        let t0 = Instant::now();
        assert_eq!(poll(&mut g, &mut c, &[0x40_0000, 1, 20, 0, 0, 0]), Ok(0));
        assert!(t0.elapsed() >= Duration::from_millis(20));
    }

    #[test]
    fn ppoll_and_pselect6_keep_their_mask_for_the_signal_that_interrupts_them() {
        let mut g = test_guest();
        let mut c = cpu();
        let term = 1u64 << (libc::SIGTERM - 1);
        g.signals.set_mask(term);
        g.write_u64(0x40_0000, 0).unwrap(); // the temporary mask: nothing blocked
        g.write_user(0x40_0010, &[0u8; 16]).unwrap(); // timeout 0
        g.write_u64(0x40_0020, 0x40_0000).unwrap(); // pselect6's { ss, ss_len }
        g.write_u64(0x40_0028, 8).unwrap();
        let calls: [(Handler, [u64; 6], [u64; 6]); 2] = [
            (
                ppoll,
                [0x40_0100, 0, 0x40_0010, 0x40_0000, 8, 0],
                [0x40_0100, 0, 0, 0x40_0000, 8, 0],
            ),
            (
                pselect6,
                [0, 0, 0, 0, 0x40_0010, 0x40_0020],
                [0, 0, 0, 0, 0, 0x40_0020],
            ),
        ];
        for (call, timed_out, forever) in calls {
            // Not interrupted: the caller's mask is back at once.
            assert_eq!(call(&mut g, &mut c, &timed_out), Ok(0));
            assert_eq!((g.signals.mask, g.signals.saved_mask()), (term, None));
            // SIGTERM, blocked by the caller, pending: the temporary mask lets it interrupt, and stays in
            // force for its delivery.
            g.signals.raise(libc::SIGTERM as usize, 0);
            assert_eq!(call(&mut g, &mut c, &forever), Err(ERESTARTNOHAND));
            assert_eq!(g.signals.mask, 0);
            assert_eq!(g.signals.saved_mask(), Some(term));
            assert_eq!(g.signals.next_deliverable(), Some(libc::SIGTERM as usize));
            g.signals.pending = 0;
            assert_eq!(g.signals.next_deliverable(), None);
            assert_eq!((g.signals.mask, g.signals.saved_mask()), (term, None));
        }
    }
}
