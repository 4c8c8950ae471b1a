//! Signal syscalls: `rt_sigaction`, `rt_sigprocmask`, `rt_sigreturn`, `sigaltstack`, `rt_sigpending`,
//! `rt_sigsuspend`, `pause`. The state and frame layout live in [`crate::signals`].

use super::abi::{with_temporary_mask, SysResult};
use crate::errno::{Errno, ERESTARTNOHAND, ERESTARTSYS};
use crate::guest::{Guest, GuestExit};
use crate::signals::{Action, AltStack, FRAME_SIZE, SS_DISABLE, SS_ONSTACK};
use crate::vcpu::CpuState;

/// `MINSIGSTKSZ` the VMM requires for an alternate stack.
pub const MIN_SIGSTACK: u64 = 2048;
const SS_AUTODISARM: i32 = 1 << 31;

fn read_action(g: &Guest, addr: u64) -> Result<Action, Errno> {
    let b = g.read_user(addr, 32)?;
    let w = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
    Ok(Action {
        handler: w(0),
        flags: w(1),
        restorer: w(2),
        mask: w(3),
    })
}

pub fn rt_sigaction(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    let (sig, act, oact, size) = (a[0] as usize, a[1], a[2], a[3]);
    if size != 8 {
        return Err(Errno::EINVAL);
    }
    let new = if act != 0 {
        Some(read_action(g, act)?)
    } else {
        None
    };
    if oact != 0 {
        g.mm.check(oact, 32, crate::mm::Access::Write)?;
    }
    let old = g.signals.set_action(sig, new)?;
    if oact != 0 {
        let mut b = Vec::with_capacity(32);
        for v in [old.handler, old.flags, old.restorer, old.mask] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        g.write_user(oact, &b)?;
    }
    Ok(0)
}

pub fn rt_sigprocmask(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    let (how, set, oset, size) = (a[0] as i32, a[1], a[2], a[3]);
    if size != 8 {
        return Err(Errno::EINVAL);
    }
    let old = g.signals.mask;
    if set != 0 {
        let new = g.read_u64(set)?;
        let mask = match how {
            libc::SIG_BLOCK => old | new,
            libc::SIG_UNBLOCK => old & !new,
            libc::SIG_SETMASK => new,
            _ => return Err(Errno::EINVAL),
        };
        g.signals.set_mask(mask);
    }
    if oset != 0 {
        g.write_u64(oset, old)?;
    }
    Ok(0)
}

pub fn rt_sigreturn(g: &mut Guest, cpu: &mut CpuState, _a: &[u64; 6]) -> SysResult {
    // The handler's `ret` popped the return address: the frame starts 8 bytes below RSP.
    let frame_addr = cpu.regs.rsp.wrapping_sub(8);
    let frame = match g.read_user(frame_addr, FRAME_SIZE) {
        Ok(f) => f,
        Err(_) => {
            let report = format!("bad signal frame at {frame_addr:#x} in rt_sigreturn");
            eprintln!("agl-vmm: guest killed by SIGSEGV: {report}");
            g.exit = Some(GuestExit::Killed {
                signal: libc::SIGSEGV,
                report,
            });
            return Ok(0);
        }
    };
    g.signals.sigreturn(&frame, cpu)?;
    if let Some(i) = g.fpu_frames.iter().rposition(|(addr, _)| *addr == frame_addr) {
        let (_, fpu) = g.fpu_frames.swap_remove(i);
        g.fpu_frames.truncate(i);
        g.fpu_to_restore = Some(fpu);
    }
    g.skip_return = true;
    Ok(0)
}

pub fn sigaltstack(g: &mut Guest, cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    let (ss, old) = (a[0], a[1]);
    let cur = g.signals.altstack;
    let on =
        cur.flags & SS_DISABLE == 0 && cpu.regs.rsp > cur.sp && cpu.regs.rsp <= cur.sp.wrapping_add(cur.size);
    if old != 0 {
        let mut b = [0u8; 24];
        b[0..8].copy_from_slice(&cur.sp.to_le_bytes());
        let flags = if on { SS_ONSTACK } else { cur.flags };
        b[8..12].copy_from_slice(&flags.to_le_bytes());
        b[16..24].copy_from_slice(&cur.size.to_le_bytes());
        g.write_user(old, &b)?;
    }
    if ss != 0 {
        let b = g.read_user(ss, 24)?;
        let sp = u64::from_le_bytes(b[0..8].try_into().map_err(|_| Errno::EFAULT)?);
        let flags = i32::from_le_bytes(b[8..12].try_into().map_err(|_| Errno::EFAULT)?);
        let size = u64::from_le_bytes(b[16..24].try_into().map_err(|_| Errno::EFAULT)?);
        if on {
            return Err(Errno::EPERM);
        }
        let mode = flags & !SS_AUTODISARM;
        if mode != 0 && mode != SS_DISABLE && mode != SS_ONSTACK {
            return Err(Errno::EINVAL);
        }
        g.signals.altstack = if mode == SS_DISABLE {
            AltStack::default()
        } else {
            if size < MIN_SIGSTACK {
                return Err(Errno::ENOMEM);
            }
            AltStack { sp, flags: 0, size }
        };
    }
    Ok(0)
}

pub fn rt_sigpending(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    if a[1] > 8 {
        return Err(Errno::EINVAL);
    }
    g.collect_host_signals();
    let pending = g.signals.pending & g.signals.mask;
    g.write_u64(a[0], pending)?;
    Ok(0)
}

pub fn rt_sigsuspend(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    if a[1] != 8 {
        return Err(Errno::EINVAL);
    }
    let mask = g.read_u64(a[0])?;
    // Only a signal ends the wait: the temporary mask stays in force for its delivery, and the call never
    // restarts after a handler (ERESTARTNOHAND, also when the handler has SA_RESTART).
    with_temporary_mask(g, Some(mask), |g| match g.wait(&[], None) {
        Err(e) if e != ERESTARTSYS => Err(e),
        _ => Err(ERESTARTNOHAND),
    })
}

pub fn pause(g: &mut Guest, _cpu: &mut CpuState, _a: &[u64; 6]) -> SysResult {
    g.wait(&[], None)?;
    Err(ERESTARTNOHAND)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest::tests::test_guest;

    #[test]
    fn sigaction_and_masks_are_checked() {
        let mut g = test_guest();
        let mut c = CpuState::for_tests(Default::default());
        let mut act = Vec::new();
        for v in [0x40_5000u64, 0x0400_0000, 0x40_6000, 0] {
            act.extend_from_slice(&v.to_le_bytes());
        }
        g.write_user(0x40_0000, &act).unwrap();
        assert_eq!(
            rt_sigaction(&mut g, &mut c, &[15, 0x40_0000, 0x40_0100, 8, 0, 0]),
            Ok(0)
        );
        assert_eq!(g.signals.action(15).unwrap().handler, 0x40_5000);
        assert_eq!(
            rt_sigaction(&mut g, &mut c, &[15, 0x40_0000, 0, 4, 0, 0]),
            Err(Errno::EINVAL)
        );
        assert_eq!(
            rt_sigaction(&mut g, &mut c, &[9, 0x40_0000, 0, 8, 0, 0]),
            Err(Errno::EINVAL)
        );
        assert_eq!(
            rt_sigaction(&mut g, &mut c, &[15, 0x10, 0, 8, 0, 0]),
            Err(Errno::EFAULT)
        );
        assert_eq!(
            rt_sigaction(&mut g, &mut c, &[15, 0, 0x50_0000, 8, 0, 0]),
            Err(Errno::EFAULT)
        );
        g.write_u64(0x40_0200, u64::MAX).unwrap();
        assert_eq!(
            rt_sigprocmask(&mut g, &mut c, &[0, 0x40_0200, 0x40_0300, 8, 0, 0]),
            Ok(0)
        );
        assert_eq!(g.signals.mask & (1 << 8), 0, "SIGKILL stays unblocked");
        assert_eq!(
            rt_sigprocmask(&mut g, &mut c, &[7, 0x40_0200, 0, 8, 0, 0]),
            Err(Errno::EINVAL)
        );
        // sigaltstack: too small, then fine.
        let mut ss = [0u8; 24];
        ss[0..8].copy_from_slice(&0x40_8000u64.to_le_bytes());
        ss[16..24].copy_from_slice(&1024u64.to_le_bytes());
        g.write_user(0x40_0400, &ss).unwrap();
        assert_eq!(
            sigaltstack(&mut g, &mut c, &[0x40_0400, 0, 0, 0, 0, 0]),
            Err(Errno::ENOMEM)
        );
        ss[16..24].copy_from_slice(&8192u64.to_le_bytes());
        g.write_user(0x40_0400, &ss).unwrap();
        assert_eq!(
            sigaltstack(&mut g, &mut c, &[0x40_0400, 0x40_0500, 0, 0, 0, 0]),
            Ok(0)
        );
        assert_eq!(g.signals.altstack.size, 8192);
    }

    #[test]
    fn sigsuspend_keeps_its_mask_for_the_delivery_and_never_restarts() {
        let mut g = test_guest();
        let mut c = CpuState::for_tests(Default::default());
        let term = 1u64 << (libc::SIGTERM - 1);
        g.signals.set_mask(term);
        g.signals.raise(libc::SIGTERM as usize, 0);
        g.write_u64(0x40_0000, 0).unwrap();
        assert_eq!(
            rt_sigsuspend(&mut g, &mut c, &[0x40_0000, 4, 0, 0, 0, 0]),
            Err(Errno::EINVAL)
        );
        assert_eq!(
            rt_sigsuspend(&mut g, &mut c, &[0x40_0000, 8, 0, 0, 0, 0]),
            Err(ERESTARTNOHAND)
        );
        assert_eq!(g.signals.mask, 0, "the temporary mask stays for the delivery");
        assert_eq!(g.signals.saved_mask(), Some(term));
    }
}
