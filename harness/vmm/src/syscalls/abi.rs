//! What every syscall handler shares, below the handler families and the table: the handler signature
//! and its result type, and the argument checks and decoders that several families use (Linux's
//! `access_ok` range check, `struct timespec`).
//!
//! Nothing here depends on a handler family, so `files`, `io`, `memory`, `net`, `process`, `signal` and
//! `time` import it without depending on each other or on the table in `syscalls`.

use std::time::Duration;

use crate::errno::{Errno, ERESTARTNOHAND, ERESTARTSYS};
use crate::guest::Guest;
use crate::vcpu::CpuState;

/// A handler's result: the value for RAX, or an errno.
pub type SysResult = Result<u64, Errno>;
/// A syscall handler: the guest, the vCPU registers (for calls that change them) and the six arguments.
pub type Handler = fn(&mut Guest, &mut CpuState, &[u64; 6]) -> SysResult;

/// Linux's user address space limit: `addr + len` beyond it is `EFAULT` before anything is touched.
const TASK_SIZE: u64 = 1 << 47;

/// The range check Linux does first (`access_ok`): no overflow, below the top of user space.
pub fn access_ok(addr: u64, len: u64) -> Result<(), Errno> {
    match addr.checked_add(len) {
        Some(end) if end <= TASK_SIZE => Ok(()),
        _ => Err(Errno::EFAULT),
    }
}

/// Runs the wait `f` of `ppoll`, `pselect6`, `epoll_pwait`, `epoll_pwait2` or `rt_sigsuspend` under the
/// temporary signal mask `mask` (`None`: the call gave none). If a signal interrupted the wait, the
/// caller's mask is restored only after that signal was delivered (see [`crate::signals`]); otherwise at
/// once.
pub fn with_temporary_mask(
    g: &mut Guest,
    mask: Option<u64>,
    f: impl FnOnce(&mut Guest) -> SysResult,
) -> SysResult {
    let Some(mask) = mask else { return f(g) };
    g.signals.set_temporary_mask(mask);
    let r = f(g);
    let interrupted = matches!(r, Err(e) if e == ERESTARTNOHAND || e == ERESTARTSYS || e == Errno::EINTR);
    g.signals.end_temporary_mask(interrupted);
    r
}

/// Reads and validates a `struct timespec` as a duration.
pub fn read_timespec(g: &Guest, addr: u64) -> Result<Duration, Errno> {
    let b = g.read_user(addr, 16)?;
    let sec = i64::from_le_bytes(b[0..8].try_into().map_err(|_| Errno::EFAULT)?);
    let nsec = i64::from_le_bytes(b[8..16].try_into().map_err(|_| Errno::EFAULT)?);
    if sec < 0 || !(0..1_000_000_000).contains(&nsec) {
        return Err(Errno::EINVAL);
    }
    Ok(Duration::new(sec as u64, nsec as u32))
}
