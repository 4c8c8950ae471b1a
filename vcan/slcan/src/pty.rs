//! A pseudo-terminal pair for the emulated adapter: the master end the bridge serves, the slave end a
//! host tool opens as its "serial port", in raw mode (no echo, no line editing, no CR/NL translation).

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// An open pseudo-terminal: both ends and the slave's path (`/dev/pts/N`).
#[derive(Debug)]
pub struct Pty {
    /// Non-blocking, close-on-exec.
    pub master: OwnedFd,
    /// Close-on-exec; held open by the bridge so that the master never sees a hang-up while no host tool
    /// has the port open (reads on the master would fail with `EIO`).
    pub slave: OwnedFd,
    pub path: PathBuf,
}

fn check(result: libc::c_int) -> io::Result<libc::c_int> {
    if result < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(result)
    }
}

fn set_flag(fd: RawFd, get: libc::c_int, set: libc::c_int, flag: libc::c_int) -> io::Result<()> {
    // SAFETY: fcntl with integer arguments on a descriptor we own.
    let flags = check(unsafe { libc::fcntl(fd, get) })?;
    // SAFETY: as above.
    check(unsafe { libc::fcntl(fd, set, flags | flag) })?;
    Ok(())
}

/// Opens a pseudo-terminal pair and puts the slave in raw mode (`cfmakeraw`).
pub fn open_raw() -> io::Result<Pty> {
    let mut master: libc::c_int = -1;
    let mut slave: libc::c_int = -1;
    // SAFETY: openpty writes two descriptors into the given ints; name, termios and winsize are null
    // (not wanted).
    check(unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    })?;
    // SAFETY: openpty succeeded, so both are fresh descriptors owned by nobody else.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    set_flag(master.as_raw_fd(), libc::F_GETFD, libc::F_SETFD, libc::FD_CLOEXEC)?;
    set_flag(slave.as_raw_fd(), libc::F_GETFD, libc::F_SETFD, libc::FD_CLOEXEC)?;
    set_flag(master.as_raw_fd(), libc::F_GETFL, libc::F_SETFL, libc::O_NONBLOCK)?;

    // SAFETY: a zeroed termios is a valid value to be overwritten by tcgetattr.
    let mut attrs: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: tcgetattr/cfmakeraw/tcsetattr read and write the live `attrs`.
    unsafe {
        check(libc::tcgetattr(slave.as_raw_fd(), &mut attrs))?;
        libc::cfmakeraw(&mut attrs);
        check(libc::tcsetattr(slave.as_raw_fd(), libc::TCSANOW, &attrs))?;
    }

    let mut name = [0 as libc::c_char; 128];
    // SAFETY: ttyname_r writes a NUL-terminated name of at most `name.len()` bytes into `name`.
    let rc = unsafe { libc::ttyname_r(slave.as_raw_fd(), name.as_mut_ptr(), name.len()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    // SAFETY: ttyname_r succeeded, so `name` holds a NUL-terminated string.
    let path = unsafe { CStr::from_ptr(name.as_ptr()) };
    let path = PathBuf::from(std::ffi::OsStr::from_bytes(path.to_bytes()));
    Ok(Pty { master, slave, path })
}

/// Discards what was written to the master and not yet read from the slave.
pub fn discard_unread(slave: &OwnedFd) -> io::Result<()> {
    // SAFETY: tcflush takes a descriptor we own and a constant.
    check(unsafe { libc::tcflush(slave.as_raw_fd(), libc::TCIFLUSH) })?;
    Ok(())
}
