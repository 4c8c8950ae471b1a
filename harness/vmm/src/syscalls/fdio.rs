//! The descriptor data path shared by the I/O calls (`read`, `write` and their vectored forms, in `io`)
//! and the socket calls (`send*`/`recv*`, in `net`): reading and writing a guest descriptor (stdio on the
//! VMM's own fds, files under the guest root, CAN sockets) and receiving one CAN frame.
//!
//! Guest stdout/stderr writes go straight to the VMM's fd 1/2 with `write(2)`, unbuffered, so guest lines
//! interleave with other output exactly as a native process's would. Blocking operations wait through
//! [`Guest::wait`], which a host signal for the guest interrupts.

use std::os::unix::fs::FileExt;
use std::time::Instant;

use crate::can::encode_frame;
use crate::errno::{Errno, ERESTARTSYS};
use crate::fdtable::{Object, Shared};
use crate::fs::FileKind;
use crate::guest::{Guest, Woken, MAX_IO};
use crate::signals::SI_USER;
use crate::vfiles::PipeIo;

/// Writes all of `data` to a host fd (stdout/stderr), waiting when the fd is full.
fn host_write(g: &mut Guest, fd: i32, data: &[u8]) -> Result<usize, Errno> {
    let mut done = 0;
    while done < data.len() {
        // SAFETY: writing from a valid slice to a host fd the VMM owns (its stdout/stderr).
        let n = unsafe { libc::write(fd, data[done..].as_ptr().cast(), data.len() - done) };
        if n >= 0 {
            done += n as usize;
            continue;
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => {
                // A host signal: if the guest must see it, stop here (a blocked stdout must not make the
                // guest deaf to SIGTERM).
                g.collect_host_signals();
                if g.signals.interrupts() {
                    if done == 0 {
                        return Err(ERESTARTSYS);
                    }
                    break;
                }
            }
            Some(libc::EAGAIN) => match g.wait(&[(fd, libc::POLLOUT)], None) {
                Ok(_) => continue,
                Err(err) if done == 0 => return Err(err),
                Err(_) => break,
            },
            _ if done > 0 => break,
            _ => return Err(Errno::from_io(&e)),
        }
    }
    Ok(done)
}

/// Reads from the VMM's stdin.
fn host_read(g: &mut Guest, fd: i32, len: usize, nonblock: bool) -> Result<Vec<u8>, Errno> {
    if !nonblock {
        g.wait(&[(fd, libc::POLLIN)], None)?;
    }
    let mut buf = vec![0u8; len];
    loop {
        // SAFETY: reading into a valid buffer of `len` bytes from a host fd the VMM owns.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), len) };
        if n >= 0 {
            buf.truncate(n as usize);
            return Ok(buf);
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(Errno::from_io(&e));
        }
    }
}

/// Reads up to `len` bytes from descriptor `fd` (the common part of read/readv/recv).
pub fn read_fd(g: &mut Guest, fd: i32, len: u64) -> Result<Vec<u8>, Errno> {
    let desc = g.fds.get(fd)?;
    let len = len.min(MAX_IO) as usize;
    let nonblock = desc.borrow().nonblock;
    let stdin = matches!(desc.borrow().object, Object::Stdio(0));
    if stdin {
        return host_read(g, 0, len, nonblock);
    }
    let is_can = matches!(desc.borrow().object, Object::Can(_));
    if is_can {
        let (bytes, _) = can_recv(g, &desc, nonblock, false)?;
        return Ok(bytes.into_iter().take(len).collect());
    }
    if desc.borrow().object.anon_name().is_some() {
        return vfile_read(g, &desc, len, nonblock);
    }
    let mut d = desc.borrow_mut();
    match &mut d.object {
        Object::Stdio(_) => Err(Errno::EBADF),
        Object::File(f) if f.kind == FileKind::Directory => Err(Errno::EISDIR),
        Object::File(f) => {
            let mut buf = vec![0u8; len];
            let n = f
                .file
                .read_at(&mut buf, f.offset)
                .map_err(|e| Errno::from_io(&e))?;
            buf.truncate(n);
            f.offset += n as u64;
            Ok(buf)
        }
        Object::IoctlSocket { .. } => Err(if d.nonblock {
            Errno::EAGAIN
        } else {
            Errno::ENOTCONN
        }),
        Object::Can(_) => Err(Errno::EBADF),
        Object::Pipe(_) | Object::EventFd(_) | Object::TimerFd(_) | Object::Epoll(_) => Err(Errno::EBADF),
    }
}

/// What a read or write of a VMM-implemented object did.
enum Step<T> {
    Done(T),
    /// Nothing now; a blocking caller waits (until the instant, or for a signal).
    Block(Option<Instant>),
}

/// Runs `attempt` until it is done, waiting between tries unless `nonblock` (`EAGAIN`). Only the guest
/// can change these objects, so a wait without a deadline ends only with a signal (whose handler may
/// write into the pipe or eventfd): the restart then finds the data.
fn retry<T>(
    g: &mut Guest,
    nonblock: bool,
    mut attempt: impl FnMut(&Guest) -> Result<Step<T>, Errno>,
) -> Result<T, Errno> {
    loop {
        match attempt(g)? {
            Step::Done(v) => return Ok(v),
            Step::Block(_) if nonblock => return Err(Errno::EAGAIN),
            Step::Block(deadline) => {
                g.wait(&[], deadline)?;
            }
        }
    }
}

/// Reads a pipe, an eventfd or a timerfd.
fn vfile_read(g: &mut Guest, desc: &Shared, len: usize, nonblock: bool) -> Result<Vec<u8>, Errno> {
    retry(g, nonblock, |g| {
        let mut d = desc.borrow_mut();
        match &mut d.object {
            Object::Pipe(p) if !p.write => Ok(match p.read(len) {
                PipeIo::Done(bytes, _) => Step::Done(bytes),
                PipeIo::Eof => Step::Done(Vec::new()),
                PipeIo::WouldBlock => Step::Block(None),
            }),
            Object::Pipe(_) => Err(Errno::EBADF),
            Object::EventFd(_) | Object::TimerFd(_) if len < 8 => Err(Errno::EINVAL),
            Object::EventFd(e) => Ok(match e.read() {
                Some(v) => Step::Done(v.to_le_bytes().to_vec()),
                None => Step::Block(None),
            }),
            Object::TimerFd(t) => {
                let now = g.clock.now_ns(t.clock)?;
                Ok(match t.read(now) {
                    Some(n) => Step::Done(n.to_le_bytes().to_vec()),
                    None => Step::Block(t.next_ns.and_then(|n| g.clock.deadline(t.clock, n).ok())),
                })
            }
            _ => Err(Errno::EINVAL),
        }
    })
}

/// Writes a pipe or an eventfd; a pipe without a reader raises `SIGPIPE` and gives `EPIPE`.
fn vfile_write(g: &mut Guest, desc: &Shared, data: &[u8], nonblock: bool) -> Result<usize, Errno> {
    let r = retry(g, nonblock, |_| {
        let mut d = desc.borrow_mut();
        match &mut d.object {
            Object::Pipe(p) if p.write => {
                if data.is_empty() {
                    return Ok(Step::Done(0));
                }
                Ok(match p.write(data)? {
                    PipeIo::Done(_, n) => Step::Done(n),
                    _ => Step::Block(None),
                })
            }
            Object::Pipe(_) => Err(Errno::EBADF),
            Object::EventFd(e) => {
                let v = data
                    .get(..8)
                    .and_then(|b| b.try_into().ok())
                    .map(u64::from_le_bytes)
                    .ok_or(Errno::EINVAL)?;
                Ok(if e.write(v)? {
                    Step::Done(8)
                } else {
                    Step::Block(None)
                })
            }
            _ => Err(Errno::EINVAL),
        }
    });
    if r == Err(Errno::EPIPE) {
        g.signals.raise(libc::SIGPIPE as usize, SI_USER);
    }
    r
}

/// Writes `data` to descriptor `fd` (the common part of write/writev/send).
pub fn write_fd(g: &mut Guest, fd: i32, data: &[u8]) -> Result<usize, Errno> {
    let desc = g.fds.get(fd)?;
    let host = match &desc.borrow().object {
        Object::Stdio(out @ (1 | 2)) => Some(*out),
        _ => None,
    };
    if let Some(out) = host {
        return host_write(g, out, data);
    }
    if desc.borrow().object.anon_name().is_some() {
        let nonblock = desc.borrow().nonblock;
        return vfile_write(g, &desc, data, nonblock);
    }
    let mut d = desc.borrow_mut();
    match &mut d.object {
        Object::Stdio(_) | Object::File(_) => Err(Errno::EBADF),
        Object::Pipe(_) | Object::EventFd(_) | Object::TimerFd(_) | Object::Epoll(_) => Err(Errno::EBADF),
        Object::Can(sock) => sock.send(data),
        Object::IoctlSocket { .. } => Err(Errno::EDESTADDRREQ),
    }
}

/// A received CAN frame as guest bytes, plus what `recvmsg` reports about it.
pub struct Delivered {
    pub ifindex: u32,
    pub own: bool,
    pub timestamp_ns: u64,
}

/// Receives one frame from the CAN socket behind `desc`, blocking unless `dontwait`.
pub fn can_recv(
    g: &mut Guest,
    desc: &Shared,
    dontwait: bool,
    peek: bool,
) -> Result<(Vec<u8>, Delivered), Errno> {
    let timeout_us = match &desc.borrow().object {
        Object::Can(s) => s.rcvtimeo_us,
        _ => return Err(Errno::ENOTSOCK),
    };
    let deadline = (timeout_us > 0).then(|| Instant::now() + std::time::Duration::from_micros(timeout_us));
    loop {
        let wait_fd = {
            let mut d = desc.borrow_mut();
            let Object::Can(s) = &mut d.object else {
                return Err(Errno::ENOTSOCK);
            };
            let got = if peek {
                if s.readable() {
                    s.peek()
                } else {
                    None
                }
            } else {
                s.take()?
            };
            if let Some(rx) = got {
                let info = Delivered {
                    ifindex: s.bound.unwrap_or(0),
                    own: rx.own,
                    timestamp_ns: rx.timestamp_ns,
                };
                return Ok((encode_frame(&rx.frame), info));
            }
            if dontwait {
                return Err(Errno::EAGAIN);
            }
            s.wait_fd()
        };
        let fds: Vec<(i32, i16)> = wait_fd.into_iter().map(|f| (f, libc::POLLIN)).collect();
        match g.wait(&fds, deadline)? {
            Woken::Timeout => return Err(Errno::EAGAIN),
            Woken::Ready(_) => continue,
        }
    }
}
