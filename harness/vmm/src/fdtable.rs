//! The guest's file descriptor table.
//!
//! A descriptor points at an open object shared by `dup`s (file offset and status flags live in the
//! object, like Linux's open file descriptions). Objects: the VMM's stdio (guest 0/1/2 are the VMM's
//! 0/1/2), read-only files and directories under the guest root, `CAN_RAW` sockets, datagram sockets
//! that exist only to answer interface `ioctl`s (`if_nametoindex`), and the objects the VMM implements
//! itself ([`crate::vfiles`]: pipe ends, eventfds, timerfds, epoll instances). New descriptors take the
//! lowest free number; at most [`MAX_FDS`] are open.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fs::File;
use std::rc::Rc;

use crate::can::GuestCanSocket;
use crate::errno::Errno;
use crate::fs::FileKind;
use crate::vfiles::{Epoll, EventFd, PipeEnd, TimerFd};

/// `RLIMIT_NOFILE` of the guest.
pub const MAX_FDS: i32 = 1024;

/// An open file under the guest root.
#[derive(Debug)]
pub struct OpenFile {
    pub file: File,
    pub kind: FileKind,
    /// Absolute guest path (for snapshots and `*at` calls relative to a directory).
    pub path: String,
    pub offset: u64,
}

/// What a descriptor refers to.
#[derive(Debug)]
pub enum Object {
    /// The VMM's stdin/stdout/stderr (host fd 0, 1, 2).
    Stdio(i32),
    File(OpenFile),
    Can(Box<GuestCanSocket>),
    /// An `AF_UNIX`/`AF_INET`/`AF_INET6` datagram socket: only interface ioctls work on it.
    IoctlSocket {
        domain: i32,
    },
    Pipe(PipeEnd),
    EventFd(EventFd),
    TimerFd(TimerFd),
    Epoll(Epoll),
}

impl Object {
    /// The name `/proc/self/fd` would show for objects without a path (`pipe:`, `anon_inode:[eventfd]`).
    pub fn anon_name(&self) -> Option<&'static str> {
        match self {
            Object::Pipe(_) => Some("pipe"),
            Object::EventFd(_) => Some("anon_inode:[eventfd]"),
            Object::TimerFd(_) => Some("anon_inode:[timerfd]"),
            Object::Epoll(_) => Some("anon_inode:[eventpoll]"),
            _ => None,
        }
    }
}

/// An open file description.
#[derive(Debug)]
pub struct Description {
    pub object: Object,
    pub nonblock: bool,
}

pub type Shared = Rc<RefCell<Description>>;

#[derive(Debug, Clone)]
struct Entry {
    desc: Shared,
    cloexec: bool,
}

/// The descriptor table.
#[derive(Debug, Default)]
pub struct FdTable {
    fds: BTreeMap<i32, Entry>,
}

impl FdTable {
    /// A table with the VMM's stdio as 0, 1, 2.
    pub fn with_stdio() -> FdTable {
        let mut t = FdTable::default();
        for fd in 0..3 {
            t.fds.insert(
                fd,
                Entry {
                    desc: Rc::new(RefCell::new(Description {
                        object: Object::Stdio(fd),
                        nonblock: false,
                    })),
                    cloexec: false,
                },
            );
        }
        t
    }

    fn lowest_free(&self, min: i32) -> Result<i32, Errno> {
        let mut want = min.max(0);
        for (&fd, _) in self.fds.range(want..) {
            if fd != want {
                break;
            }
            want += 1;
        }
        if want >= MAX_FDS {
            return Err(Errno::EMFILE);
        }
        Ok(want)
    }

    /// Installs a new object at the lowest free descriptor.
    pub fn insert(&mut self, object: Object, nonblock: bool, cloexec: bool) -> Result<i32, Errno> {
        let fd = self.lowest_free(0)?;
        self.fds.insert(
            fd,
            Entry {
                desc: Rc::new(RefCell::new(Description { object, nonblock })),
                cloexec,
            },
        );
        Ok(fd)
    }

    pub fn get(&self, fd: i32) -> Result<Shared, Errno> {
        self.fds.get(&fd).map(|e| Rc::clone(&e.desc)).ok_or(Errno::EBADF)
    }

    pub fn cloexec(&self, fd: i32) -> Result<bool, Errno> {
        self.fds.get(&fd).map(|e| e.cloexec).ok_or(Errno::EBADF)
    }

    pub fn set_cloexec(&mut self, fd: i32, on: bool) -> Result<(), Errno> {
        self.fds.get_mut(&fd).map(|e| e.cloexec = on).ok_or(Errno::EBADF)
    }

    /// Closes `fd`; the object goes away with its last descriptor.
    pub fn close(&mut self, fd: i32) -> Result<(), Errno> {
        self.fds.remove(&fd).map(|_| ()).ok_or(Errno::EBADF)
    }

    /// `dup`/`fcntl(F_DUPFD)`: lowest free descriptor `>= min`.
    pub fn dup(&mut self, fd: i32, min: i32, cloexec: bool) -> Result<i32, Errno> {
        let desc = self.get(fd)?;
        if !(0..MAX_FDS).contains(&min) {
            return Err(Errno::EINVAL);
        }
        let new = self.lowest_free(min)?;
        self.fds.insert(new, Entry { desc, cloexec });
        Ok(new)
    }

    /// `dup2`/`dup3`: makes `new` refer to `old`'s object (closing what `new` was).
    pub fn dup_to(&mut self, old: i32, new: i32, cloexec: bool) -> Result<i32, Errno> {
        let desc = self.get(old)?;
        if !(0..MAX_FDS).contains(&new) {
            return Err(Errno::EBADF);
        }
        self.fds.insert(new, Entry { desc, cloexec });
        Ok(new)
    }

    /// All descriptors with their objects (snapshot).
    pub fn entries(&self) -> impl Iterator<Item = (i32, &Shared, bool)> {
        self.fds.iter().map(|(fd, e)| (*fd, &e.desc, e.cloexec))
    }

    /// Installs a descriptor at a fixed number (restore).
    pub fn install(&mut self, fd: i32, desc: Shared, cloexec: bool) {
        self.fds.insert(fd, Entry { desc, cloexec });
    }

    pub fn len(&self) -> usize {
        self.fds.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fds.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowest_free_descriptor_and_dup_sharing() {
        let mut t = FdTable::with_stdio();
        let a = t.insert(Object::IoctlSocket { domain: 1 }, false, true).unwrap();
        assert_eq!(a, 3);
        let b = t.insert(Object::IoctlSocket { domain: 2 }, false, false).unwrap();
        assert_eq!(b, 4);
        t.close(a).unwrap();
        assert_eq!(t.close(a), Err(Errno::EBADF));
        assert_eq!(
            t.insert(Object::IoctlSocket { domain: 1 }, false, false).unwrap(),
            3
        );
        let d = t.dup(b, 10, false).unwrap();
        assert_eq!(d, 10);
        t.get(b).unwrap().borrow_mut().nonblock = true;
        assert!(t.get(d).unwrap().borrow().nonblock, "dups share the description");
        assert_eq!(t.dup_to(b, 1, false).unwrap(), 1);
        assert!(matches!(
            t.get(1).unwrap().borrow().object,
            Object::IoctlSocket { domain: 2 }
        ));
        assert_eq!(t.dup_to(b, MAX_FDS, false), Err(Errno::EBADF));
        assert_eq!(t.dup(99, 0, false), Err(Errno::EBADF));
        assert!(t.cloexec(3).is_ok());
    }

    #[test]
    fn table_is_bounded() {
        let mut t = FdTable::with_stdio();
        for _ in 3..MAX_FDS {
            t.insert(Object::IoctlSocket { domain: 1 }, false, false).unwrap();
        }
        assert_eq!(
            t.insert(Object::IoctlSocket { domain: 1 }, false, false),
            Err(Errno::EMFILE)
        );
    }
}
