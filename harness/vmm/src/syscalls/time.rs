//! Time: `clock_gettime`, `clock_getres`, `gettimeofday`, `time`, `nanosleep`, `clock_nanosleep`.
//!
//! There is no vDSO, so glibc falls back to these syscalls. Sleeps block the VMM in `ppoll` on the
//! signal self-pipe, so a host signal for the guest interrupts them (`EINTR` with the remaining time).

use std::time::Instant;

use super::abi::{read_timespec, SysResult};
use crate::errno::{Errno, ERESTARTNOHAND, ERESTARTSYS};
use crate::guest::{Guest, Woken};
use crate::vcpu::CpuState;

const TIMER_ABSTIME: u64 = 1;

fn timespec_bytes(ns: i128) -> [u8; 16] {
    let ns = ns.max(0);
    let sec = (ns / 1_000_000_000) as i64;
    let nsec = (ns % 1_000_000_000) as i64;
    let mut b = [0u8; 16];
    b[0..8].copy_from_slice(&sec.to_le_bytes());
    b[8..16].copy_from_slice(&nsec.to_le_bytes());
    b
}

pub fn clock_gettime(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    let ns = g.clock.now_ns(a[0] as i32)?;
    g.write_user(a[1], &timespec_bytes(ns))?;
    Ok(0)
}

pub fn clock_getres(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    g.clock.now_ns(a[0] as i32)?;
    if a[1] != 0 {
        g.write_user(a[1], &timespec_bytes(1))?;
    }
    Ok(0)
}

pub fn gettimeofday(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    if a[0] != 0 {
        let ns = g.clock.now_ns(libc::CLOCK_REALTIME)?;
        let mut b = [0u8; 16];
        b[0..8].copy_from_slice(&((ns / 1_000_000_000) as i64).to_le_bytes());
        b[8..16].copy_from_slice(&((ns % 1_000_000_000 / 1000) as i64).to_le_bytes());
        g.write_user(a[0], &b)?;
    }
    if a[1] != 0 {
        g.write_user(a[1], &[0u8; 8])?;
    }
    Ok(0)
}

pub fn time(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    let secs = (g.clock.now_ns(libc::CLOCK_REALTIME)? / 1_000_000_000) as u64;
    if a[0] != 0 {
        g.write_u64(a[0], secs)?;
    }
    Ok(secs)
}

/// Sleeps until `deadline`; on a signal writes the remaining time to `rem` (if given).
fn sleep_until(g: &mut Guest, deadline: Instant, rem: u64) -> SysResult {
    match g.wait(&[], Some(deadline)) {
        Ok(Woken::Timeout) | Ok(Woken::Ready(_)) => Ok(0),
        Err(e) if e == ERESTARTSYS => {
            if rem != 0 {
                let left = deadline.saturating_duration_since(Instant::now());
                g.write_user(rem, &timespec_bytes(left.as_nanos() as i128))?;
            }
            Err(ERESTARTNOHAND)
        }
        Err(e) => Err(e),
    }
}

pub fn nanosleep(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    let d = read_timespec(g, a[0])?;
    if a[1] != 0 {
        g.mm.check(a[1], 16, crate::mm::Access::Write)?;
    }
    let deadline = Instant::now()
        .checked_add(d)
        .unwrap_or_else(crate::guest::far_future);
    sleep_until(g, deadline, a[1])
}

pub fn clock_nanosleep(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    let (clock, flags, req, rem) = (a[0] as i32, a[1], a[2], a[3]);
    if matches!(clock, libc::CLOCK_THREAD_CPUTIME_ID) {
        return Err(Errno::EINVAL);
    }
    g.clock.now_ns(clock)?;
    let d = read_timespec(g, req)?;
    let deadline = if flags & TIMER_ABSTIME != 0 {
        g.clock.deadline(clock, d.as_nanos() as i128)?
    } else {
        Instant::now()
            .checked_add(d)
            .unwrap_or_else(crate::guest::far_future)
    };
    // The remaining time is only reported for relative sleeps.
    let rem = if flags & TIMER_ABSTIME != 0 { 0 } else { rem };
    sleep_until(g, deadline, rem)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::guest::tests::test_guest;

    #[test]
    fn clocks_and_sleeps() {
        let mut g = test_guest();
        let mut c = CpuState::for_tests(Default::default());
        assert_eq!(clock_gettime(&mut g, &mut c, &[1, 0x40_0000, 0, 0, 0, 0]), Ok(0));
        let t1 = g.read_u64(0x40_0000).unwrap();
        assert!(t1 > 0);
        assert_eq!(
            clock_gettime(&mut g, &mut c, &[1, 0x50_0000, 0, 0, 0, 0]),
            Err(Errno::EFAULT)
        );
        assert_eq!(
            clock_gettime(&mut g, &mut c, &[77, 0x40_0000, 0, 0, 0, 0]),
            Err(Errno::EINVAL)
        );
        // 30 ms sleep.
        g.write_user(0x40_0100, &timespec_bytes(30_000_000)).unwrap();
        let t0 = Instant::now();
        assert_eq!(nanosleep(&mut g, &mut c, &[0x40_0100, 0, 0, 0, 0, 0]), Ok(0));
        assert!(t0.elapsed() >= Duration::from_millis(30));
        // Invalid timespecs.
        let mut bad = timespec_bytes(0);
        bad[8..16].copy_from_slice(&2_000_000_000i64.to_le_bytes());
        g.write_user(0x40_0200, &bad).unwrap();
        assert_eq!(
            nanosleep(&mut g, &mut c, &[0x40_0200, 0, 0, 0, 0, 0]),
            Err(Errno::EINVAL)
        );
        assert_eq!(
            nanosleep(&mut g, &mut c, &[0x10, 0, 0, 0, 0, 0]),
            Err(Errno::EFAULT)
        );
        // Absolute monotonic sleep to a time already past returns at once.
        g.write_user(0x40_0300, &timespec_bytes(1)).unwrap();
        assert_eq!(
            clock_nanosleep(&mut g, &mut c, &[1, 1, 0x40_0300, 0, 0, 0]),
            Ok(0)
        );
    }
}
