//! Linux error numbers as the guest sees them: [`vcan::errno`], the one definition shared with the
//! SocketCAN semantics ([`vcan::raw`]) and the seccomp emulation of native processes.
//!
//! Syscall handlers return `Result<u64, Errno>`; the dispatcher turns an `Errno` into the negative return
//! value of the Linux x86-64 ABI ([`Errno::as_return`]). [`ERESTARTSYS`] is the kernel-internal
//! "interrupted, restart if the handler has `SA_RESTART`" code; it never reaches the guest.

pub use vcan::errno::{Errno, ERESTARTNOHAND, ERESTARTSYS};
