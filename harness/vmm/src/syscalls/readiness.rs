//! Readiness of guest descriptors and the wait for it, shared by `poll`/`ppoll` and `select`/`pselect6`
//! (in `io`) and `epoll_wait` (in `events`), so CAN sockets, stdin, pipes, eventfds, timerfds and epoll
//! instances mix in one wait.
//!
//! A probe says what a descriptor is ready for now and, when it is not, what would change that: a host
//! fd to wait on (a CAN socket's bus connection, the VMM's stdin) or a time (a timerfd's next expiry).
//! Objects the VMM implements itself ([`crate::vfiles`]) change only when the guest acts, so they need
//! neither. [`wait_for`] repeats a scan until it finds something, the deadline passes or a signal the
//! guest must see arrives (`ERESTARTNOHAND`: these calls end with `EINTR` when a handler runs, as on
//! Linux).

use std::os::fd::RawFd;
use std::rc::Rc;
use std::time::Instant;

use crate::errno::{Errno, ERESTARTNOHAND, ERESTARTSYS};
use crate::fdtable::{Object, Shared};
use crate::guest::{Guest, Woken};
use crate::vfiles::{Epoll, EPOLLONESHOT};

/// Deepest nesting of epoll instances inside epoll instances that is followed (Linux's `EP_MAX_NESTS`).
pub const MAX_NESTING: u32 = 4;

/// What one descriptor is ready for now.
#[derive(Debug, Default)]
pub struct Probe {
    /// `poll` result bits (`POLLNVAL` for a closed descriptor).
    pub revents: i16,
    /// Host fds whose readiness may change this descriptor's.
    pub waits: Vec<(RawFd, i16)>,
    /// When the descriptor becomes ready by itself (a timer).
    pub wake: Option<Instant>,
}

impl Probe {
    fn merge(&mut self, other: Probe) {
        self.waits.extend(other.waits);
        self.wake = earliest(self.wake, other.wake);
    }
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

const IN: i16 = libc::POLLIN | libc::POLLRDNORM;
const OUT: i16 = libc::POLLOUT | libc::POLLWRNORM;

/// Probes descriptor `fd` for `events` (`POLLERR`/`POLLHUP` are always reported).
pub fn probe_fd(g: &Guest, fd: i32, events: i16) -> Probe {
    match g.fds.get(fd) {
        Ok(desc) => probe(g, &desc, events, 0),
        Err(_) => Probe {
            revents: libc::POLLNVAL,
            ..Probe::default()
        },
    }
}

/// Probes an open file description.
pub fn probe(g: &Guest, desc: &Shared, events: i16, depth: u32) -> Probe {
    let always = libc::POLLERR | libc::POLLHUP;
    let want_in = events & IN != 0;
    let mut out = Probe::default();
    let nested = {
        let mut d = desc.borrow_mut();
        match &mut d.object {
            Object::Stdio(0) => {
                let mut p = libc::pollfd {
                    fd: 0,
                    events: events & IN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd, zero timeout.
                unsafe { libc::poll(&mut p, 1, 0) };
                out.revents = p.revents;
                if p.revents == 0 && want_in {
                    out.waits.push((0, libc::POLLIN));
                }
                None
            }
            Object::Stdio(_) | Object::IoctlSocket { .. } => {
                out.revents = events & OUT;
                None
            }
            Object::File(_) => {
                out.revents = events & (IN | OUT);
                None
            }
            Object::Can(s) => {
                if want_in && s.readable() {
                    out.revents |= events & IN;
                }
                out.revents |= events & OUT;
                if s.has_error() {
                    out.revents |= libc::POLLERR;
                }
                if out.revents == 0 && want_in {
                    out.waits.extend(s.wait_fd().map(|f| (f, libc::POLLIN)));
                }
                None
            }
            Object::Pipe(p) => {
                out.revents = p.poll() & (events | always);
                None
            }
            Object::EventFd(e) => {
                out.revents = e.poll() & events;
                None
            }
            Object::TimerFd(t) => {
                let now = g.clock.now_ns(t.clock).unwrap_or(0);
                out.revents = t.poll(now) & events;
                if out.revents == 0 && want_in {
                    out.wake = t.next_ns.and_then(|n| g.clock.deadline(t.clock, n).ok());
                }
                None
            }
            Object::Epoll(_) => Some(()),
        }
    };
    if nested.is_some() {
        // An epoll instance is readable when one of its entries is ready.
        let scan = scan_epoll(g, desc, 1, depth + 1, false);
        if want_in && !scan.ready.is_empty() {
            out.revents |= events & IN;
        }
        out.merge(scan.probe);
    }
    out
}

/// Ready entries of an epoll instance.
#[derive(Debug, Default)]
pub struct EpollScan {
    /// `(epoll events, user data)` of the ready entries.
    pub ready: Vec<(u32, u64)>,
    /// What to wait on for the others.
    pub probe: Probe,
}

/// Scans the interest list of the epoll instance `ep` for up to `max` ready entries. With `consume`
/// (an `epoll_wait`), an `EPOLLONESHOT` entry that is reported is disabled.
pub fn scan_epoll(g: &Guest, ep: &Shared, max: usize, depth: u32, consume: bool) -> EpollScan {
    let mut out = EpollScan::default();
    if depth > MAX_NESTING {
        return out;
    }
    let entries: Vec<(i32, u32, u64)> = {
        let mut d = ep.borrow_mut();
        let Object::Epoll(e) = &mut d.object else {
            return out;
        };
        e.forget_closed();
        e.interest
            .iter()
            .filter(|(_, i)| !i.disabled)
            .map(|(fd, i)| (*fd, i.events, i.data))
            .collect()
    };
    for (fd, events, data) in entries {
        if out.ready.len() >= max {
            break;
        }
        // The entry follows the description that was added; a descriptor number now pointing elsewhere
        // (closed and reused while a dup keeps the old file open) is not reported.
        let Ok(desc) = g.fds.get(fd) else { continue };
        if Rc::ptr_eq(&desc, ep) || !same_file(ep, fd, &desc) {
            continue;
        }
        let p = probe(g, &desc, Epoll::poll_events(events), depth);
        let revents = p.revents & !libc::POLLNVAL;
        if revents != 0 {
            out.ready.push((u32::from(revents as u16), data));
            if consume && events & EPOLLONESHOT != 0 {
                if let Object::Epoll(e) = &mut ep.borrow_mut().object {
                    if let Some(i) = e.interest.get_mut(&fd) {
                        i.disabled = true;
                    }
                }
            }
        } else {
            out.probe.merge(p);
        }
    }
    out
}

/// Whether the interest entry of `fd` in `ep` refers to `desc`.
fn same_file(ep: &Shared, fd: i32, desc: &Shared) -> bool {
    let d = ep.borrow();
    let Object::Epoll(e) = &d.object else {
        return false;
    };
    e.interest
        .get(&fd)
        .and_then(|i| i.file.upgrade())
        .is_some_and(|f| std::ptr::eq(Rc::as_ptr(&f) as *const u8, Rc::as_ptr(desc) as *const u8))
}

/// One pass of a multi-descriptor wait: a result when something is ready, else what to wait on.
pub struct Scan<T> {
    pub ready: Option<T>,
    pub probe: Probe,
}

/// Repeats `scan` until it returns a result (`Some`), `deadline` passes (`None`), or a signal interrupts
/// (`ERESTARTNOHAND`).
pub fn wait_for<T>(
    g: &mut Guest,
    deadline: Option<Instant>,
    mut scan: impl FnMut(&mut Guest) -> Scan<T>,
) -> Result<Option<T>, Errno> {
    loop {
        let s = scan(g);
        if s.ready.is_some() {
            return Ok(s.ready);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(None);
        }
        let until = earliest(deadline, s.probe.wake);
        match g.wait(&s.probe.waits, until) {
            Ok(Woken::Timeout) | Ok(Woken::Ready(_)) => continue,
            Err(e) if e == ERESTARTSYS => return Err(ERESTARTNOHAND),
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest::tests::test_guest;
    use crate::vfiles::{EventFd, PipeEnd, TimerFd, EPOLLIN};
    use std::time::Duration;

    #[test]
    fn pipes_eventfds_timers_and_epoll_probe() {
        let mut g = test_guest();
        let (r, w) = PipeEnd::pair();
        let rfd = g.fds.insert(Object::Pipe(r), false, false).unwrap();
        let wfd = g.fds.insert(Object::Pipe(w), false, false).unwrap();
        assert_eq!(probe_fd(&g, rfd, libc::POLLIN).revents, 0);
        assert_eq!(probe_fd(&g, wfd, libc::POLLOUT).revents, libc::POLLOUT);
        assert_eq!(probe_fd(&g, 99, libc::POLLIN).revents, libc::POLLNVAL);
        let efd = g
            .fds
            .insert(
                Object::EventFd(EventFd {
                    count: 1,
                    semaphore: false,
                }),
                false,
                false,
            )
            .unwrap();
        assert_eq!(probe_fd(&g, efd, libc::POLLIN).revents, libc::POLLIN);
        let mut t = TimerFd::new(libc::CLOCK_MONOTONIC);
        let now = g.clock.now_ns(libc::CLOCK_MONOTONIC).unwrap();
        t.set(Some(now + 30_000_000), 0);
        let tfd = g.fds.insert(Object::TimerFd(t), false, false).unwrap();
        let p = probe_fd(&g, tfd, libc::POLLIN);
        assert_eq!(p.revents, 0);
        assert!(p.wake.is_some(), "a timer gives a wake-up time");

        // An epoll over the pipe and the timer: the timer's expiry ends the wait.
        let ep = g
            .fds
            .insert(Object::Epoll(Epoll::default()), false, false)
            .unwrap();
        let epd = g.fds.get(ep).unwrap();
        for fd in [rfd, tfd] {
            let file: Rc<dyn std::any::Any> = g.fds.get(fd).unwrap();
            if let Object::Epoll(e) = &mut epd.borrow_mut().object {
                e.add(fd, EPOLLIN, fd as u64, Rc::downgrade(&file)).unwrap();
            }
        }
        let t0 = Instant::now();
        let got = wait_for(&mut g, Some(t0 + Duration::from_secs(5)), |g| {
            let s = scan_epoll(g, &epd, 8, 0, true);
            Scan {
                ready: (!s.ready.is_empty()).then_some(s.ready),
                probe: s.probe,
            }
        })
        .unwrap();
        assert_eq!(got, Some(vec![(EPOLLIN, tfd as u64)]));
        assert!(t0.elapsed() >= Duration::from_millis(25));
        // The epoll instance itself polls readable now.
        assert_eq!(probe_fd(&g, ep, libc::POLLIN).revents, libc::POLLIN);
        // Nothing ready and a deadline: None.
        g.fds.close(tfd).unwrap();
        let got = wait_for(&mut g, Some(Instant::now() + Duration::from_millis(10)), |g| {
            let s = scan_epoll(g, &epd, 8, 0, true);
            Scan {
                ready: (!s.ready.is_empty()).then_some(s.ready),
                probe: s.probe,
            }
        })
        .unwrap();
        assert_eq!(got, None, "the closed timer left the interest list");
    }
}
