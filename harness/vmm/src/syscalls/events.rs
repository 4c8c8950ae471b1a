//! Event and IPC descriptors the VMM implements itself ([`crate::vfiles`]): `pipe`/`pipe2`,
//! `eventfd`/`eventfd2`, `timerfd_create`/`timerfd_settime`/`timerfd_gettime`, and
//! `epoll_create`/`epoll_create1`/`epoll_ctl`/`epoll_wait`/`epoll_pwait`/`epoll_pwait2`.
//!
//! Reads and writes of these descriptors are the shared data path (`fdio`); readiness, and the wait of
//! `epoll_wait`, are `readiness`, which `poll` and `select` use too — so an epoll set can hold CAN
//! sockets, stdin, pipes, eventfds, timerfds and other epoll instances.

use std::rc::Rc;
use std::time::{Duration, Instant};

use super::abi::{read_timespec, with_temporary_mask, SysResult};
use super::readiness::{scan_epoll, wait_for, Scan};
use crate::errno::Errno;
use crate::fdtable::Object;
use crate::guest::Guest;
use crate::vcpu::CpuState;
use crate::vfiles::{Epoll, EventFd, PipeEnd, TimerFd, EFD_SEMAPHORE, EPOLLEXCLUSIVE};

fn pipe_common(g: &mut Guest, fds_addr: u64, flags: u64) -> SysResult {
    let known = (libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_DIRECT) as u64;
    if flags & !known != 0 {
        return Err(Errno::EINVAL);
    }
    // The result array must be writable before anything is created.
    g.mm.check(fds_addr, 8, crate::mm::Access::Write)?;
    let nonblock = flags & libc::O_NONBLOCK as u64 != 0;
    let cloexec = flags & libc::O_CLOEXEC as u64 != 0;
    let (r, w) = PipeEnd::pair();
    let rfd = g.fds.insert(Object::Pipe(r), nonblock, cloexec)?;
    let wfd = match g.fds.insert(Object::Pipe(w), nonblock, cloexec) {
        Ok(fd) => fd,
        Err(e) => {
            let _ = g.fds.close(rfd);
            return Err(e);
        }
    };
    let mut b = [0u8; 8];
    b[..4].copy_from_slice(&rfd.to_le_bytes());
    b[4..].copy_from_slice(&wfd.to_le_bytes());
    if let Err(e) = g.write_user(fds_addr, &b) {
        let _ = g.fds.close(rfd);
        let _ = g.fds.close(wfd);
        return Err(e);
    }
    Ok(0)
}

pub fn pipe(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    pipe_common(g, a[0], 0)
}

pub fn pipe2(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    pipe_common(g, a[0], a[1])
}

fn eventfd_common(g: &mut Guest, initval: u64, flags: u64) -> SysResult {
    let known = EFD_SEMAPHORE | (libc::O_CLOEXEC | libc::O_NONBLOCK) as u64;
    if flags & !known != 0 {
        return Err(Errno::EINVAL);
    }
    let e = EventFd {
        count: initval & 0xffff_ffff,
        semaphore: flags & EFD_SEMAPHORE != 0,
    };
    let fd = g.fds.insert(
        Object::EventFd(e),
        flags & libc::O_NONBLOCK as u64 != 0,
        flags & libc::O_CLOEXEC as u64 != 0,
    )?;
    Ok(fd as u64)
}

pub fn eventfd(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    eventfd_common(g, a[0], 0)
}

pub fn eventfd2(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    eventfd_common(g, a[0], a[1])
}

const TFD_TIMER_ABSTIME: u64 = 1;
const TFD_TIMER_CANCEL_ON_SET: u64 = 2;

pub fn timerfd_create(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    let (clock, flags) = (a[0] as i32, a[1]);
    if flags & !((libc::O_CLOEXEC | libc::O_NONBLOCK) as u64) != 0 {
        return Err(Errno::EINVAL);
    }
    match clock {
        libc::CLOCK_REALTIME | libc::CLOCK_MONOTONIC | libc::CLOCK_BOOTTIME => {}
        // The alarm clocks need CAP_WAKE_ALARM.
        libc::CLOCK_REALTIME_ALARM | libc::CLOCK_BOOTTIME_ALARM => return Err(Errno::EPERM),
        _ => return Err(Errno::EINVAL),
    }
    let fd = g.fds.insert(
        Object::TimerFd(TimerFd::new(clock)),
        flags & libc::O_NONBLOCK as u64 != 0,
        flags & libc::O_CLOEXEC as u64 != 0,
    )?;
    Ok(fd as u64)
}

fn itimerspec_bytes(value_ns: i128, interval_ns: i128) -> [u8; 32] {
    let mut b = [0u8; 32];
    for (at, ns) in [(0usize, interval_ns), (16, value_ns)] {
        let ns = ns.max(0);
        b[at..at + 8].copy_from_slice(&((ns / 1_000_000_000) as i64).to_le_bytes());
        b[at + 8..at + 16].copy_from_slice(&((ns % 1_000_000_000) as i64).to_le_bytes());
    }
    b
}

/// Runs `f` on the timerfd behind `fd`.
fn with_timer<R>(g: &Guest, fd: u64, f: impl FnOnce(&mut TimerFd) -> Result<R, Errno>) -> Result<R, Errno> {
    let desc = g.fds.get(fd as i32)?;
    let mut d = desc.borrow_mut();
    match &mut d.object {
        Object::TimerFd(t) => f(t),
        _ => Err(Errno::EINVAL),
    }
}

pub fn timerfd_settime(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    let (fd, flags, new, old) = (a[0], a[1], a[2], a[3]);
    if flags & !(TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET) != 0 {
        return Err(Errno::EINVAL);
    }
    let clock = with_timer(g, fd, |t| Ok(t.clock))?;
    let interval = read_timespec(g, new)?.as_nanos() as i128;
    let value = read_timespec(g, new + 16)?.as_nanos() as i128;
    if old != 0 {
        g.mm.check(old, 32, crate::mm::Access::Write)?;
    }
    let now = g.clock.now_ns(clock)?;
    let next = if value == 0 {
        None
    } else if flags & TFD_TIMER_ABSTIME != 0 {
        Some(value)
    } else {
        Some(now + value)
    };
    let (left, was_interval) = with_timer(g, fd, |t| {
        let before = t.get(now);
        t.set(next, interval);
        Ok(before)
    })?;
    if old != 0 {
        g.write_user(old, &itimerspec_bytes(left, was_interval))?;
    }
    Ok(0)
}

pub fn timerfd_gettime(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    let clock = with_timer(g, a[0], |t| Ok(t.clock))?;
    let now = g.clock.now_ns(clock)?;
    let (left, interval) = with_timer(g, a[0], |t| Ok(t.get(now)))?;
    g.write_user(a[1], &itimerspec_bytes(left, interval))?;
    Ok(0)
}

pub fn epoll_create(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    if a[0] as i32 <= 0 {
        return Err(Errno::EINVAL);
    }
    Ok(g.fds.insert(Object::Epoll(Epoll::default()), false, false)? as u64)
}

pub fn epoll_create1(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    if a[0] & !(libc::O_CLOEXEC as u64) != 0 {
        return Err(Errno::EINVAL);
    }
    let cloexec = a[0] & libc::O_CLOEXEC as u64 != 0;
    Ok(g.fds.insert(Object::Epoll(Epoll::default()), false, cloexec)? as u64)
}

const EPOLL_CTL_ADD: u64 = 1;
const EPOLL_CTL_DEL: u64 = 2;
const EPOLL_CTL_MOD: u64 = 3;
/// `sizeof(struct epoll_event)` on x86-64 (packed: u32 events, u64 data).
const EPOLL_EVENT_LEN: u64 = 12;

pub fn epoll_ctl(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    let (epfd, op, fd, event) = (a[0] as i32, a[1], a[2] as i32, a[3]);
    let ep = g.fds.get(epfd)?;
    let target = g.fds.get(fd)?;
    let (events, data) = if op == EPOLL_CTL_DEL {
        (0, 0)
    } else {
        let b = g.read_user(event, EPOLL_EVENT_LEN)?;
        let events = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let data = u64::from_le_bytes([b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11]]);
        (events, data)
    };
    if !matches!(ep.borrow().object, Object::Epoll(_)) || Rc::ptr_eq(&ep, &target) {
        return Err(Errno::EINVAL);
    }
    // Regular files and directories are always ready: Linux refuses them in an epoll set.
    if matches!(target.borrow().object, Object::File(_)) {
        return Err(Errno::EPERM);
    }
    let file: Rc<dyn std::any::Any> = target;
    let mut d = ep.borrow_mut();
    let Object::Epoll(e) = &mut d.object else {
        return Err(Errno::EINVAL);
    };
    match op {
        EPOLL_CTL_ADD => e.add(fd, events, data, Rc::downgrade(&file))?,
        EPOLL_CTL_MOD => {
            if events & EPOLLEXCLUSIVE != 0 {
                return Err(Errno::EINVAL);
            }
            e.modify(fd, events, data)?
        }
        EPOLL_CTL_DEL => e.delete(fd)?,
        _ => return Err(Errno::EINVAL),
    }
    Ok(0)
}

/// The core of the epoll_wait family: `timeout` None = forever.
fn do_epoll_wait(g: &mut Guest, epfd: i32, events: u64, max: i32, timeout: Option<Duration>) -> SysResult {
    if max <= 0 || max as u64 > (i32::MAX as u64) / EPOLL_EVENT_LEN {
        return Err(Errno::EINVAL);
    }
    let len = max as u64 * EPOLL_EVENT_LEN;
    super::abi::access_ok(events, len)?;
    let ep = g.fds.get(epfd)?;
    if !matches!(ep.borrow().object, Object::Epoll(_)) {
        return Err(Errno::EINVAL);
    }
    g.mm.check(events, EPOLL_EVENT_LEN, crate::mm::Access::Write)?;
    let deadline = timeout.map(|t| {
        Instant::now()
            .checked_add(t)
            .unwrap_or_else(crate::guest::far_future)
    });
    let ready = wait_for(g, deadline, |g| {
        let s = scan_epoll(g, &ep, max as usize, 0, true);
        Scan {
            ready: (!s.ready.is_empty()).then_some(s.ready),
            probe: s.probe,
        }
    })?
    .unwrap_or_default();
    let mut out = Vec::with_capacity(ready.len() * EPOLL_EVENT_LEN as usize);
    for (ev, data) in &ready {
        out.extend_from_slice(&ev.to_le_bytes());
        out.extend_from_slice(&data.to_le_bytes());
    }
    g.write_user(events, &out)?;
    Ok(ready.len() as u64)
}

fn ms_timeout(ms: u64) -> Option<Duration> {
    let ms = ms as i32;
    (ms >= 0).then(|| Duration::from_millis(ms as u64))
}

pub fn epoll_wait(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    do_epoll_wait(g, a[0] as i32, a[1], a[2] as i32, ms_timeout(a[3]))
}

/// `epoll_pwait`/`epoll_pwait2`: the wait with a temporary signal mask.
fn with_sigmask(g: &mut Guest, set: u64, size: u64, f: impl FnOnce(&mut Guest) -> SysResult) -> SysResult {
    let mut mask = None;
    if set != 0 {
        if size != 8 {
            return Err(Errno::EINVAL);
        }
        mask = Some(g.read_u64(set)?);
    }
    with_temporary_mask(g, mask, f)
}

pub fn epoll_pwait(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    let timeout = ms_timeout(a[3]);
    with_sigmask(g, a[4], a[5], |g| {
        do_epoll_wait(g, a[0] as i32, a[1], a[2] as i32, timeout)
    })
}

pub fn epoll_pwait2(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    let timeout = if a[3] == 0 {
        None
    } else {
        Some(read_timespec(g, a[3])?)
    };
    with_sigmask(g, a[4], a[5], |g| {
        do_epoll_wait(g, a[0] as i32, a[1], a[2] as i32, timeout)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest::tests::test_guest;
    use crate::syscalls::fdio::{read_fd, write_fd};
    use crate::vfiles::{EPOLLIN, EPOLLONESHOT};

    fn cpu() -> CpuState {
        CpuState::for_tests(Default::default())
    }

    fn fds_at(g: &Guest, addr: u64) -> (i32, i32) {
        let b = g.read_user(addr, 8).unwrap();
        (
            i32::from_le_bytes(b[..4].try_into().unwrap()),
            i32::from_le_bytes(b[4..].try_into().unwrap()),
        )
    }

    #[test]
    fn pipes_move_bytes_and_report_eof_and_epipe() {
        let mut g = test_guest();
        let mut c = cpu();
        assert_eq!(
            pipe2(&mut g, &mut c, &[0x40_0000, libc::O_NONBLOCK as u64, 0, 0, 0, 0]),
            Ok(0)
        );
        let (r, w) = fds_at(&g, 0x40_0000);
        assert_eq!((r, w), (3, 4));
        assert_eq!(read_fd(&mut g, r, 10), Err(Errno::EAGAIN));
        assert_eq!(write_fd(&mut g, w, b"ping"), Ok(4));
        assert_eq!(write_fd(&mut g, r, b"x"), Err(Errno::EBADF), "read end");
        assert_eq!(read_fd(&mut g, r, 10).unwrap(), b"ping");
        g.fds.close(w).unwrap();
        assert_eq!(read_fd(&mut g, r, 10).unwrap(), b"", "EOF without writers");
        assert_eq!(pipe(&mut g, &mut c, &[0x40_0000, 0, 0, 0, 0, 0]), Ok(0));
        let (r2, w2) = fds_at(&g, 0x40_0000);
        g.fds.close(r2).unwrap();
        assert_eq!(write_fd(&mut g, w2, b"x"), Err(Errno::EPIPE));
        assert_eq!(g.signals.next_deliverable(), Some(libc::SIGPIPE as usize));
        // Bad arguments.
        assert_eq!(
            pipe2(&mut g, &mut c, &[0x40_0000, 0x1, 0, 0, 0, 0]),
            Err(Errno::EINVAL)
        );
        let before = g.fds.len();
        assert_eq!(
            pipe(&mut g, &mut c, &[0x50_0000, 0, 0, 0, 0, 0]),
            Err(Errno::EFAULT)
        );
        assert_eq!(g.fds.len(), before, "no descriptors leak on EFAULT");
    }

    #[test]
    fn eventfd_and_timerfd() {
        let mut g = test_guest();
        let mut c = cpu();
        let e = eventfd2(&mut g, &mut c, &[2, libc::O_NONBLOCK as u64, 0, 0, 0, 0]).unwrap() as i32;
        assert_eq!(read_fd(&mut g, e, 4), Err(Errno::EINVAL), "short read");
        assert_eq!(read_fd(&mut g, e, 8).unwrap(), 2u64.to_le_bytes());
        assert_eq!(read_fd(&mut g, e, 8), Err(Errno::EAGAIN));
        assert_eq!(write_fd(&mut g, e, &5u64.to_le_bytes()), Ok(8));
        assert_eq!(write_fd(&mut g, e, &u64::MAX.to_le_bytes()), Err(Errno::EINVAL));
        assert_eq!(write_fd(&mut g, e, b"abc"), Err(Errno::EINVAL));
        assert_eq!(
            eventfd2(&mut g, &mut c, &[0, 0x4, 0, 0, 0, 0]),
            Err(Errno::EINVAL)
        );

        let t = timerfd_create(&mut g, &mut c, &[libc::CLOCK_MONOTONIC as u64, 0, 0, 0, 0, 0]).unwrap();
        assert_eq!(
            timerfd_create(&mut g, &mut c, &[99, 0, 0, 0, 0, 0]),
            Err(Errno::EINVAL)
        );
        // value 20 ms, interval 10 ms.
        let mut spec = [0u8; 32];
        spec[8..16].copy_from_slice(&10_000_000i64.to_le_bytes());
        spec[24..32].copy_from_slice(&20_000_000i64.to_le_bytes());
        g.write_user(0x40_1000, &spec).unwrap();
        assert_eq!(
            timerfd_settime(&mut g, &mut c, &[t, 0, 0x40_1000, 0, 0, 0]),
            Ok(0)
        );
        assert_eq!(
            timerfd_gettime(&mut g, &mut c, &[t, 0x40_2000, 0, 0, 0, 0]),
            Ok(0)
        );
        assert_eq!(g.read_u64(0x40_2008).unwrap(), 10_000_000, "interval");
        assert!(g.read_u64(0x40_2018).unwrap() > 0, "time left");
        let t0 = Instant::now();
        let n = u64::from_le_bytes(read_fd(&mut g, t as i32, 8).unwrap().try_into().unwrap());
        assert!(n >= 1);
        assert!(
            t0.elapsed() >= Duration::from_millis(15),
            "the read blocked until the expiry"
        );
        // Bad timespec, not a timer.
        spec[8..16].copy_from_slice(&2_000_000_000i64.to_le_bytes());
        g.write_user(0x40_1000, &spec).unwrap();
        assert_eq!(
            timerfd_settime(&mut g, &mut c, &[t, 0, 0x40_1000, 0, 0, 0]),
            Err(Errno::EINVAL)
        );
        assert_eq!(
            timerfd_settime(&mut g, &mut c, &[e as u64, 0, 0x40_1000, 0, 0, 0]),
            Err(Errno::EINVAL)
        );
        assert_eq!(
            timerfd_settime(&mut g, &mut c, &[t, 0, 0x10, 0, 0, 0]),
            Err(Errno::EFAULT)
        );
    }

    #[test]
    fn epoll_ctl_and_wait() {
        let mut g = test_guest();
        let mut c = cpu();
        let ep = epoll_create1(&mut g, &mut c, &[libc::O_CLOEXEC as u64, 0, 0, 0, 0, 0]).unwrap();
        let e = eventfd2(&mut g, &mut c, &[0, 0, 0, 0, 0, 0]).unwrap();
        let mut ev = [0u8; 12];
        ev[..4].copy_from_slice(&(EPOLLIN | EPOLLONESHOT).to_le_bytes());
        ev[4..].copy_from_slice(&0xfeedu64.to_le_bytes());
        g.write_user(0x40_0000, &ev).unwrap();
        let ctl = |g: &mut Guest, op: u64, fd: u64| epoll_ctl(g, &mut cpu(), &[ep, op, fd, 0x40_0000, 0, 0]);
        assert_eq!(ctl(&mut g, EPOLL_CTL_ADD, e), Ok(0));
        assert_eq!(ctl(&mut g, EPOLL_CTL_ADD, e), Err(Errno::EEXIST));
        assert_eq!(ctl(&mut g, EPOLL_CTL_ADD, ep), Err(Errno::EINVAL), "itself");
        assert_eq!(ctl(&mut g, EPOLL_CTL_ADD, 77), Err(Errno::EBADF));
        assert_eq!(ctl(&mut g, 9, e), Err(Errno::EINVAL));
        assert_eq!(
            epoll_ctl(&mut g, &mut c, &[e, EPOLL_CTL_ADD, 1, 0x40_0000, 0, 0]),
            Err(Errno::EINVAL),
            "not an epoll fd"
        );
        // Nothing ready: a 10 ms timeout.
        assert_eq!(epoll_wait(&mut g, &mut c, &[ep, 0x40_1000, 4, 10, 0, 0]), Ok(0));
        write_fd(&mut g, e as i32, &1u64.to_le_bytes()).unwrap();
        assert_eq!(epoll_wait(&mut g, &mut c, &[ep, 0x40_1000, 4, 0, 0, 0]), Ok(1));
        assert_eq!(g.read_u32(0x40_1000).unwrap(), EPOLLIN);
        assert_eq!(g.read_u64(0x40_1004).unwrap(), 0xfeed);
        assert_eq!(
            epoll_wait(&mut g, &mut c, &[ep, 0x40_1000, 4, 0, 0, 0]),
            Ok(0),
            "one-shot: disabled until EPOLL_CTL_MOD"
        );
        assert_eq!(ctl(&mut g, EPOLL_CTL_MOD, e), Ok(0));
        assert_eq!(epoll_wait(&mut g, &mut c, &[ep, 0x40_1000, 4, 0, 0, 0]), Ok(1));
        assert_eq!(ctl(&mut g, EPOLL_CTL_DEL, e), Ok(0));
        assert_eq!(ctl(&mut g, EPOLL_CTL_DEL, e), Err(Errno::ENOENT));
        assert_eq!(
            epoll_wait(&mut g, &mut c, &[ep, 0x40_1000, 0, 0, 0, 0]),
            Err(Errno::EINVAL)
        );
        assert_eq!(
            epoll_wait(&mut g, &mut c, &[ep, 0x50_0000, 4, 0, 0, 0]),
            Err(Errno::EFAULT)
        );
        assert_eq!(
            epoll_create(&mut g, &mut c, &[0, 0, 0, 0, 0, 0]),
            Err(Errno::EINVAL)
        );
    }
}
