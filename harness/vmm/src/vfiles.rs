//! The descriptor objects the VMM implements itself, with no host object behind them: pipes, eventfds,
//! timerfds and epoll instances.
//!
//! The guest is one single-threaded process, so only the guest itself (its main flow or a signal handler)
//! can change these objects: their readiness is computed from their state when asked, never waited for
//! on a host fd. A timerfd becomes ready at a time, which waits take as a deadline. These types hold state
//! and Linux's rules (capacities, counter limits, expiration counts); blocking, guest memory and the
//! descriptor table are the syscall layer's (`syscalls::events`, `syscalls::readiness`, `syscalls::fdio`).
//!
//! * **Pipe**: a 64 KiB byte buffer shared by a read end and a write end ([`PipeEnd`]); each end counts
//!   itself in the buffer while it lives, so the reader sees end-of-file once no write end is open and a
//!   writer gets `EPIPE` once no read end is.
//! * **eventfd**: a 64-bit counter, optionally with semaphore semantics.
//! * **timerfd**: one timer on a guest clock (absolute expiry and interval in that clock's nanoseconds);
//!   reads return the number of expirations since the last read.
//! * **epoll**: the interest list — descriptor number, events, user data, and a weak reference to the open
//!   file description that was added (an entry whose description is gone is dropped, as Linux drops an
//!   entry when its file is closed). `EPOLLONESHOT` disables an entry once reported; `EPOLLET` is served as
//!   level-triggered (a program written for edge triggering reads until `EAGAIN` and sees no difference).

use std::any::Any;
use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::rc::{Rc, Weak};

use crate::errno::Errno;

/// Bytes a pipe holds (Linux's default pipe size).
pub const PIPE_CAPACITY: usize = 64 * 1024;
/// Writes up to this size are atomic (`PIPE_BUF`).
pub const PIPE_BUF: usize = 4096;

/// The buffer shared by the two ends of a pipe.
#[derive(Debug, Default)]
pub struct PipeBuf {
    data: VecDeque<u8>,
    readers: usize,
    writers: usize,
}

/// One end of a pipe.
#[derive(Debug)]
pub struct PipeEnd {
    buf: Rc<RefCell<PipeBuf>>,
    /// True for the write end.
    pub write: bool,
}

/// What a pipe read or write can do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PipeIo {
    /// Bytes read, or the number of bytes written.
    Done(Vec<u8>, usize),
    /// Nothing can move now (empty or full); a blocking caller waits.
    WouldBlock,
    /// Read end: no writer is left and the buffer is empty.
    Eof,
}

impl PipeEnd {
    /// A new pipe: (read end, write end).
    pub fn pair() -> (PipeEnd, PipeEnd) {
        let buf = Rc::new(RefCell::new(PipeBuf {
            data: VecDeque::new(),
            readers: 1,
            writers: 1,
        }));
        (
            PipeEnd {
                buf: Rc::clone(&buf),
                write: false,
            },
            PipeEnd { buf, write: true },
        )
    }

    /// Bytes waiting in the pipe.
    pub fn available(&self) -> usize {
        self.buf.borrow().data.len()
    }

    /// Reads up to `len` bytes.
    pub fn read(&self, len: usize) -> PipeIo {
        let mut b = self.buf.borrow_mut();
        if b.data.is_empty() {
            return if b.writers == 0 {
                PipeIo::Eof
            } else {
                PipeIo::WouldBlock
            };
        }
        let n = len.min(b.data.len());
        let out: Vec<u8> = b.data.drain(..n).collect();
        PipeIo::Done(out, n)
    }

    /// Writes what fits of `data` (all of it or nothing for writes up to [`PIPE_BUF`]); `EPIPE` without a
    /// reader.
    pub fn write(&self, data: &[u8]) -> Result<PipeIo, Errno> {
        let mut b = self.buf.borrow_mut();
        if b.readers == 0 {
            return Err(Errno::EPIPE);
        }
        let free = PIPE_CAPACITY - b.data.len();
        if free == 0 || (data.len() <= PIPE_BUF && free < data.len()) {
            return Ok(PipeIo::WouldBlock);
        }
        let n = data.len().min(free);
        b.data.extend(&data[..n]);
        Ok(PipeIo::Done(Vec::new(), n))
    }

    /// `poll` bits of this end now.
    pub fn poll(&self) -> i16 {
        let b = self.buf.borrow();
        if self.write {
            let mut r = 0;
            if b.readers == 0 {
                r |= libc::POLLERR;
            }
            if PIPE_CAPACITY - b.data.len() >= PIPE_BUF {
                r |= libc::POLLOUT | libc::POLLWRNORM;
            }
            r
        } else {
            let mut r = 0;
            if !b.data.is_empty() {
                r |= libc::POLLIN | libc::POLLRDNORM;
            }
            if b.writers == 0 {
                r |= libc::POLLHUP;
            }
            r
        }
    }
}

impl Drop for PipeEnd {
    fn drop(&mut self) {
        let mut b = self.buf.borrow_mut();
        if self.write {
            b.writers = b.writers.saturating_sub(1);
        } else {
            b.readers = b.readers.saturating_sub(1);
        }
    }
}

/// `EFD_SEMAPHORE`.
pub const EFD_SEMAPHORE: u64 = 1;
/// The largest eventfd counter value.
pub const EVENTFD_MAX: u64 = u64::MAX - 1;

/// An eventfd counter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventFd {
    pub count: u64,
    pub semaphore: bool,
}

impl EventFd {
    /// A read: the counter (or 1 for a semaphore), `None` while it is zero.
    pub fn read(&mut self) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        if self.semaphore {
            self.count -= 1;
            Some(1)
        } else {
            Some(std::mem::take(&mut self.count))
        }
    }

    /// A write of `v`: `EINVAL` for `u64::MAX`, `Ok(false)` when it would overflow now (the caller blocks).
    pub fn write(&mut self, v: u64) -> Result<bool, Errno> {
        if v == u64::MAX {
            return Err(Errno::EINVAL);
        }
        match self.count.checked_add(v) {
            Some(sum) if sum <= EVENTFD_MAX => {
                self.count = sum;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    pub fn poll(&self) -> i16 {
        let mut r = 0;
        if self.count > 0 {
            r |= libc::POLLIN | libc::POLLRDNORM;
        }
        if self.count < EVENTFD_MAX {
            r |= libc::POLLOUT | libc::POLLWRNORM;
        }
        r
    }
}

/// A timerfd: expiry and interval in nanoseconds of its clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimerFd {
    pub clock: i32,
    /// Absolute time of the next expiry on `clock`; `None` when disarmed.
    pub next_ns: Option<i128>,
    pub interval_ns: i128,
    /// Expirations counted but not read yet.
    pub pending: u64,
}

impl TimerFd {
    pub fn new(clock: i32) -> TimerFd {
        TimerFd {
            clock,
            next_ns: None,
            interval_ns: 0,
            pending: 0,
        }
    }

    /// Counts the expirations up to `now_ns` into `pending`.
    pub fn advance(&mut self, now_ns: i128) {
        let Some(next) = self.next_ns else { return };
        if now_ns < next {
            return;
        }
        if self.interval_ns > 0 {
            let n = (now_ns - next) / self.interval_ns + 1;
            self.pending = self.pending.saturating_add(u64::try_from(n).unwrap_or(u64::MAX));
            self.next_ns = next.checked_add(n.saturating_mul(self.interval_ns));
        } else {
            self.pending = self.pending.saturating_add(1);
            self.next_ns = None;
        }
    }

    /// Arms (`value_ns` absolute, `None` disarms) and clears pending expirations.
    pub fn set(&mut self, value_ns: Option<i128>, interval_ns: i128) {
        self.next_ns = value_ns;
        self.interval_ns = interval_ns;
        self.pending = 0;
    }

    /// (time left until the next expiry, interval), as `timerfd_gettime` reports them.
    pub fn get(&mut self, now_ns: i128) -> (i128, i128) {
        self.advance(now_ns);
        let left = self.next_ns.map_or(0, |n| (n - now_ns).max(1));
        (left, self.interval_ns)
    }

    /// A read: the expirations since the last read, `None` when there were none.
    pub fn read(&mut self, now_ns: i128) -> Option<u64> {
        self.advance(now_ns);
        (self.pending > 0).then(|| std::mem::take(&mut self.pending))
    }

    pub fn poll(&mut self, now_ns: i128) -> i16 {
        self.advance(now_ns);
        if self.pending > 0 {
            libc::POLLIN | libc::POLLRDNORM
        } else {
            0
        }
    }
}

pub const EPOLLIN: u32 = 0x001;
pub const EPOLLERR: u32 = 0x008;
pub const EPOLLHUP: u32 = 0x010;
pub const EPOLLRDHUP: u32 = 0x2000;
pub const EPOLLEXCLUSIVE: u32 = 1 << 28;
pub const EPOLLWAKEUP: u32 = 1 << 29;
pub const EPOLLONESHOT: u32 = 1 << 30;
pub const EPOLLET: u32 = 1 << 31;

/// One entry of an epoll interest list.
#[derive(Debug, Clone)]
pub struct Interest {
    pub events: u32,
    pub data: u64,
    /// The open file description that was added (its liveness and identity).
    pub file: Weak<dyn Any>,
    /// `EPOLLONESHOT` fired: nothing more is reported until `EPOLL_CTL_MOD`.
    pub disabled: bool,
}

/// An epoll instance: descriptor number -> interest.
#[derive(Debug, Default)]
pub struct Epoll {
    pub interest: BTreeMap<i32, Interest>,
}

impl Epoll {
    /// `EPOLL_CTL_ADD`.
    pub fn add(&mut self, fd: i32, events: u32, data: u64, file: Weak<dyn Any>) -> Result<(), Errno> {
        self.forget_closed();
        if self.interest.contains_key(&fd) {
            return Err(Errno::EEXIST);
        }
        self.interest.insert(
            fd,
            Interest {
                events,
                data,
                file,
                disabled: false,
            },
        );
        Ok(())
    }

    /// `EPOLL_CTL_MOD`.
    pub fn modify(&mut self, fd: i32, events: u32, data: u64) -> Result<(), Errno> {
        self.forget_closed();
        let e = self.interest.get_mut(&fd).ok_or(Errno::ENOENT)?;
        if e.events & EPOLLEXCLUSIVE != 0 {
            return Err(Errno::EINVAL);
        }
        e.events = events;
        e.data = data;
        e.disabled = false;
        Ok(())
    }

    /// `EPOLL_CTL_DEL`.
    pub fn delete(&mut self, fd: i32) -> Result<(), Errno> {
        self.forget_closed();
        self.interest.remove(&fd).map(|_| ()).ok_or(Errno::ENOENT)
    }

    /// Drops the entries whose open file description is gone.
    pub fn forget_closed(&mut self) {
        self.interest.retain(|_, e| e.file.strong_count() > 0);
    }

    /// The `poll` events to ask of an entry (errors and hang-ups are always reported).
    pub fn poll_events(events: u32) -> i16 {
        ((events & 0xffff) as u16 as i16) | libc::POLLERR | libc::POLLHUP
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipe_eof_epipe_capacity_and_atomic_writes() {
        let (r, w) = PipeEnd::pair();
        assert_eq!(r.read(10), PipeIo::WouldBlock);
        assert_eq!(r.poll(), 0);
        assert_eq!(w.poll(), libc::POLLOUT | libc::POLLWRNORM);
        assert_eq!(w.write(b"hello").unwrap(), PipeIo::Done(Vec::new(), 5));
        assert_eq!(r.poll(), libc::POLLIN | libc::POLLRDNORM);
        assert_eq!(r.available(), 5);
        assert_eq!(r.read(3), PipeIo::Done(b"hel".to_vec(), 3));
        // Fill it: a big write is short, a small one that does not fit is all-or-nothing.
        let big = vec![7u8; PIPE_CAPACITY];
        assert_eq!(
            w.write(&big).unwrap(),
            PipeIo::Done(Vec::new(), PIPE_CAPACITY - 2)
        );
        assert_eq!(w.write(b"x").unwrap(), PipeIo::WouldBlock);
        assert_eq!(w.poll() & libc::POLLOUT, 0);
        assert_eq!(r.read(2), PipeIo::Done(b"lo".to_vec(), 2));
        assert_eq!(w.write(b"abc").unwrap(), PipeIo::WouldBlock, "PIPE_BUF atomicity");
        drop(w);
        assert_eq!(r.poll() & libc::POLLHUP, libc::POLLHUP);
        assert!(matches!(r.read(PIPE_CAPACITY * 2), PipeIo::Done(_, n) if n == PIPE_CAPACITY - 2));
        assert_eq!(r.read(1), PipeIo::Eof);
        let (r, w) = PipeEnd::pair();
        drop(r);
        assert_eq!(w.write(b"x"), Err(Errno::EPIPE));
        assert_eq!(w.poll() & libc::POLLERR, libc::POLLERR);
    }

    #[test]
    fn eventfd_counter_and_semaphore() {
        let mut e = EventFd {
            count: 0,
            semaphore: false,
        };
        assert_eq!(e.read(), None);
        assert_eq!(e.poll(), libc::POLLOUT | libc::POLLWRNORM);
        assert_eq!(e.write(3), Ok(true));
        assert_eq!(e.write(4), Ok(true));
        assert_eq!(e.read(), Some(7));
        assert_eq!(e.write(u64::MAX), Err(Errno::EINVAL));
        assert_eq!(e.write(EVENTFD_MAX), Ok(true));
        assert_eq!(e.write(1), Ok(false), "would overflow");
        assert_eq!(e.poll(), libc::POLLIN | libc::POLLRDNORM);
        let mut s = EventFd {
            count: 2,
            semaphore: true,
        };
        assert_eq!(s.read(), Some(1));
        assert_eq!(s.read(), Some(1));
        assert_eq!(s.read(), None);
    }

    #[test]
    fn timerfd_counts_expirations() {
        let mut t = TimerFd::new(libc::CLOCK_MONOTONIC);
        assert_eq!(t.read(1_000), None);
        assert_eq!(t.get(1_000), (0, 0));
        t.set(Some(2_000), 500);
        assert_eq!(t.poll(1_999), 0);
        assert_eq!(t.get(1_500), (500, 500));
        assert_eq!(t.read(2_000), Some(1));
        assert_eq!(t.read(3_100), Some(2), "2500 and 3000");
        assert_eq!(t.get(3_100), (400, 500));
        t.set(Some(4_000), 0);
        assert_eq!(t.read(10_000), Some(1));
        assert_eq!(t.read(20_000), None, "one-shot");
        assert_eq!(t.next_ns, None);
        t.set(Some(0), 1);
        t.advance(i128::from(i64::MAX));
        assert!(t.pending > 0);
    }

    #[test]
    fn epoll_interest_list() {
        let mut ep = Epoll::default();
        let file: Rc<dyn Any> = Rc::new(5u32);
        ep.add(3, EPOLLIN, 9, Rc::downgrade(&file)).unwrap();
        assert_eq!(ep.add(3, EPOLLIN, 9, Rc::downgrade(&file)), Err(Errno::EEXIST));
        ep.modify(3, EPOLLIN | EPOLLONESHOT, 10).unwrap();
        assert_eq!(ep.interest[&3].data, 10);
        assert_eq!(ep.modify(4, EPOLLIN, 0), Err(Errno::ENOENT));
        drop(file);
        assert_eq!(ep.delete(3), Err(Errno::ENOENT), "closed files leave the list");
        assert_eq!(
            Epoll::poll_events(EPOLLIN | EPOLLET),
            libc::POLLIN | libc::POLLERR | libc::POLLHUP
        );
    }
}
