//! Linux error numbers as a syscall returns them, for every layer that answers syscalls on a program's
//! behalf: the VMM's syscall handlers and the seccomp SocketCAN emulation ([`crate::emu`]) both return
//! `Result<_, Errno>`, and [`crate::raw`] (the one `CAN_RAW` semantics) reports its errors in it.
//!
//! [`Errno::as_return`] is the negative return value of the Linux x86-64 ABI. [`ERESTARTSYS`] is the
//! kernel-internal "interrupted, restart if the handler has `SA_RESTART`" code; it never reaches a program.

use std::fmt;

/// A Linux errno value (positive).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Errno(pub i32);

/// Kernel-internal: the syscall was interrupted by a signal and may be restarted (`SA_RESTART`).
pub const ERESTARTSYS: Errno = Errno(512);
/// Kernel-internal: interrupted; restarted only if no handler runs (poll, sleeps: `EINTR` otherwise).
pub const ERESTARTNOHAND: Errno = Errno(514);

macro_rules! errnos {
    ($($name:ident),* $(,)?) => {
        impl Errno {
            $(pub const $name: Errno = Errno(libc::$name);)*

            /// The symbolic name (`EFAULT`), or the number for values without one here.
            pub fn name(self) -> String {
                match self.0 {
                    $(libc::$name => stringify!($name).to_string(),)*
                    512 => "ERESTARTSYS".to_string(),
                    514 => "ERESTARTNOHAND".to_string(),
                    n => format!("errno {n}"),
                }
            }
        }
    };
}

errnos!(
    EPERM,
    ENOENT,
    ESRCH,
    EINTR,
    EIO,
    ENXIO,
    E2BIG,
    EBADF,
    ECHILD,
    EAGAIN,
    ENOMEM,
    EACCES,
    EFAULT,
    EBUSY,
    EEXIST,
    EXDEV,
    ENODEV,
    ENOTDIR,
    EISDIR,
    EINVAL,
    ENFILE,
    EMFILE,
    ENOTTY,
    EFBIG,
    ENOSPC,
    ESPIPE,
    EROFS,
    EPIPE,
    ERANGE,
    ENAMETOOLONG,
    ENOSYS,
    ENOTEMPTY,
    ELOOP,
    ENODATA,
    ENOTSOCK,
    EDESTADDRREQ,
    EMSGSIZE,
    EPROTOTYPE,
    ENOPROTOOPT,
    EPROTONOSUPPORT,
    EOPNOTSUPP,
    EAFNOSUPPORT,
    EADDRINUSE,
    EADDRNOTAVAIL,
    ENETDOWN,
    ENOBUFS,
    EISCONN,
    ENOTCONN,
    ETIMEDOUT,
    ECONNREFUSED,
    ESOCKTNOSUPPORT,
    ENOTBLK,
    ETXTBSY,
    EMLINK,
    EDOM,
    EDEADLK,
    ENOLCK,
    EBADFD,
    ENOMSG,
    EOVERFLOW,
    EILSEQ,
    ECANCELED,
    EALREADY,
    EINPROGRESS,
    ECONNRESET,
    ECONNABORTED,
    EHOSTUNREACH,
    ENETUNREACH,
    EIDRM,
    ENOSTR,
    ETIME,
);

impl Errno {
    /// The errno of a host I/O error (EIO when it has none).
    pub fn from_io(e: &std::io::Error) -> Errno {
        Errno(e.raw_os_error().unwrap_or(libc::EIO))
    }

    /// The value the guest sees in `rax`.
    pub fn as_return(self) -> u64 {
        (-i64::from(self.0)) as u64
    }
}

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_return_values() {
        assert_eq!(Errno::EFAULT.name(), "EFAULT");
        assert_eq!(Errno::ENOSYS.as_return(), (-38i64) as u64);
        assert_eq!(ERESTARTSYS.name(), "ERESTARTSYS");
        assert_eq!(Errno(4000).name(), "errno 4000");
    }
}
