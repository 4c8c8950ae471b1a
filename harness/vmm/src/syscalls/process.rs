//! Process syscalls: exit, identity, limits, `uname`, `arch_prctl` (TLS), `prctl`, `getrandom`,
//! `futex` (single thread), `kill`/`tgkill` to itself, and the no-ops a single-threaded guest needs.
//!
//! The guest is one process with one thread: its pid and tid are the VMM's pid; signals to any other
//! process give `ESRCH`, so a guest can never signal a host process.

use super::abi::{access_ok, read_timespec, SysResult};
use crate::errno::{Errno, ERESTARTSYS};
use crate::guest::{Guest, GuestExit, Woken, MAX_IO};
use crate::signals::{SI_TKILL, SI_USER};
use crate::vcpu::CpuState;

/// Canonical user addresses end here.
const USER_TOP: u64 = 1 << 47;

pub fn zero(_g: &mut Guest, _cpu: &mut CpuState, _a: &[u64; 6]) -> SysResult {
    Ok(0)
}

pub fn exit(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    g.exit = Some(GuestExit::Exited(a[0] as i32 & 0xff));
    Ok(0)
}

pub fn getpid(g: &mut Guest, _cpu: &mut CpuState, _a: &[u64; 6]) -> SysResult {
    Ok(u64::from(g.info.pid))
}

pub fn getppid(_g: &mut Guest, _cpu: &mut CpuState, _a: &[u64; 6]) -> SysResult {
    // SAFETY: getppid has no preconditions.
    Ok(unsafe { libc::getppid() } as u64)
}

pub fn getuid(g: &mut Guest, _cpu: &mut CpuState, _a: &[u64; 6]) -> SysResult {
    Ok(u64::from(g.info.uid))
}

pub fn getgid(g: &mut Guest, _cpu: &mut CpuState, _a: &[u64; 6]) -> SysResult {
    Ok(u64::from(g.info.gid))
}

pub fn getresuid(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    let uid = g.info.uid;
    for p in &a[..3] {
        g.write_u32(*p, uid)?;
    }
    Ok(0)
}

pub fn getresgid(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    let gid = g.info.gid;
    for p in &a[..3] {
        g.write_u32(*p, gid)?;
    }
    Ok(0)
}

pub fn getgroups(_g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    if (a[0] as i32) < 0 {
        return Err(Errno::EINVAL);
    }
    Ok(0)
}

pub fn getpriority(_g: &mut Guest, _cpu: &mut CpuState, _a: &[u64; 6]) -> SysResult {
    Ok(20) // nice 0, as the kernel encodes it (20 - nice)
}

pub fn umask(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    let old = g.info.umask;
    g.info.umask = (a[0] & 0o777) as u32;
    Ok(u64::from(old))
}

pub fn wait(_g: &mut Guest, _cpu: &mut CpuState, _a: &[u64; 6]) -> SysResult {
    Err(Errno::ECHILD)
}

fn utsname_field(s: &str) -> [u8; 65] {
    let mut f = [0u8; 65];
    let b = s.as_bytes();
    let n = b.len().min(64);
    f[..n].copy_from_slice(&b[..n]);
    f
}

pub fn uname(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    // The host's release (programs check kernel features by it); a fixed node name.
    // SAFETY: zeroed utsname is valid plain data for uname to fill.
    let mut host: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `host` is a valid utsname buffer.
    unsafe { libc::uname(&mut host) };
    let field = |f: &[libc::c_char]| -> String {
        let bytes: Vec<u8> = f.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    let mut out = Vec::with_capacity(390);
    for s in [
        "Linux".to_string(),
        "agl-vmm".to_string(),
        field(&host.release),
        field(&host.version),
        "x86_64".to_string(),
        "(none)".to_string(),
    ] {
        out.extend_from_slice(&utsname_field(&s));
    }
    g.write_user(a[0], &out)?;
    Ok(0)
}

pub fn set_tid_address(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    g.info.tid_address = a[0];
    Ok(u64::from(g.info.pid))
}

pub fn set_robust_list(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    if a[1] != 24 {
        return Err(Errno::EINVAL);
    }
    g.info.robust_list = (a[0], a[1]);
    Ok(0)
}

pub fn get_robust_list(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    if a[0] != 0 && a[0] != u64::from(g.info.pid) {
        return Err(Errno::ESRCH);
    }
    let (head, len) = g.info.robust_list;
    g.write_u64(a[1], head)?;
    g.write_u64(a[2], len)?;
    Ok(0)
}

/// `(cur, max)` of a resource limit.
fn limit(g: &Guest, resource: u32) -> Result<(u64, u64), Errno> {
    const INF: u64 = u64::MAX;
    Ok(match resource {
        3 => (g.mm.stack_top - g.mm.stack_bottom, INF), // RLIMIT_STACK
        7 => (crate::fdtable::MAX_FDS as u64, crate::fdtable::MAX_FDS as u64), // RLIMIT_NOFILE
        2 | 9 => (g.ram.size(), g.ram.size()),          // RLIMIT_DATA, RLIMIT_AS
        4 => (0, INF),                                  // RLIMIT_CORE
        6 => (1, 1),                                    // RLIMIT_NPROC
        0 | 1 | 5 | 8 | 10..=15 => (INF, INF),
        _ => return Err(Errno::EINVAL),
    })
}

fn put_rlimit(g: &mut Guest, addr: u64, (cur, max): (u64, u64)) -> Result<(), Errno> {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&cur.to_le_bytes());
    b[8..].copy_from_slice(&max.to_le_bytes());
    g.write_user(addr, &b)
}

pub fn getrlimit(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    let l = limit(g, a[0] as u32)?;
    put_rlimit(g, a[1], l)?;
    Ok(0)
}

pub fn setrlimit(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    let (_, max) = limit(g, a[0] as u32)?;
    let b = g.read_user(a[1], 16)?;
    let new_max = u64::from_le_bytes(b[8..16].try_into().map_err(|_| Errno::EFAULT)?);
    if new_max > max {
        return Err(Errno::EPERM);
    }
    Ok(0)
}

pub fn prlimit64(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    if a[0] != 0 && a[0] != u64::from(g.info.pid) {
        return Err(Errno::ESRCH);
    }
    let l = limit(g, a[1] as u32)?;
    if a[2] != 0 {
        let b = g.read_user(a[2], 16)?;
        let new_max = u64::from_le_bytes(b[8..16].try_into().map_err(|_| Errno::EFAULT)?);
        if new_max > l.1 {
            return Err(Errno::EPERM);
        }
    }
    if a[3] != 0 {
        put_rlimit(g, a[3], l)?;
    }
    Ok(0)
}

pub fn getrusage(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    let who = a[0] as i32;
    if who != libc::RUSAGE_SELF && who != libc::RUSAGE_CHILDREN && who != libc::RUSAGE_THREAD {
        return Err(Errno::EINVAL);
    }
    let mut b = vec![0u8; 144];
    if who != libc::RUSAGE_CHILDREN {
        let cpu = g.clock.now_ns(libc::CLOCK_PROCESS_CPUTIME_ID)?;
        b[0..8].copy_from_slice(&((cpu / 1_000_000_000) as i64).to_le_bytes());
        b[8..16].copy_from_slice(&((cpu % 1_000_000_000 / 1000) as i64).to_le_bytes());
    }
    g.write_user(a[1], &b)?;
    Ok(0)
}

pub fn times(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    let ticks = |ns: i128| (ns / 10_000_000) as u64;
    let cpu = g.clock.now_ns(libc::CLOCK_PROCESS_CPUTIME_ID)?;
    if a[0] != 0 {
        let mut b = [0u8; 32];
        b[0..8].copy_from_slice(&ticks(cpu).to_le_bytes());
        g.write_user(a[0], &b)?;
    }
    Ok(ticks(g.clock.now_ns(libc::CLOCK_BOOTTIME)?))
}

pub fn sysinfo(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    let mut b = vec![0u8; 112];
    let uptime = (g.clock.now_ns(libc::CLOCK_BOOTTIME)? / 1_000_000_000) as u64;
    b[0..8].copy_from_slice(&uptime.to_le_bytes());
    b[32..40].copy_from_slice(&g.ram.size().to_le_bytes()); // totalram
    let used: u64 = g.mm.regions().map(|r| r.end - r.start).sum();
    b[40..48].copy_from_slice(&g.ram.size().saturating_sub(used).to_le_bytes()); // freeram
    b[80..82].copy_from_slice(&1u16.to_le_bytes()); // procs
    b[104..108].copy_from_slice(&1u32.to_le_bytes()); // mem_unit
    g.write_user(a[0], &b)?;
    Ok(0)
}

pub fn sched_getaffinity(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    if a[0] != 0 && a[0] != u64::from(g.info.pid) {
        return Err(Errno::ESRCH);
    }
    let len = a[1];
    if len < 8 || !len.is_multiple_of(8) {
        return Err(Errno::EINVAL);
    }
    // One vCPU.
    g.write_u64(a[2], 1)?;
    Ok(8)
}

pub fn getcpu(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    if a[0] != 0 {
        g.write_u32(a[0], 0)?;
    }
    if a[1] != 0 {
        g.write_u32(a[1], 0)?;
    }
    Ok(0)
}

pub fn getrandom(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    let (buf, len, flags) = (a[0], a[1], a[2]);
    if flags & !0x7 != 0 {
        return Err(Errno::EINVAL);
    }
    access_ok(buf, len)?;
    let n = len.min(MAX_IO) as usize;
    g.mm.check(buf, n as u64, crate::mm::Access::Write)?;
    let mut data = vec![0u8; n];
    let mut filled = 0;
    while filled < n {
        // SAFETY: getrandom fills at most `n - filled` bytes of the valid buffer.
        let r = unsafe { libc::getrandom(data[filled..].as_mut_ptr().cast(), n - filled, 0) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(Errno::from_io(&e));
        }
        filled += r as usize;
    }
    g.write_user(buf, &data)?;
    Ok(n as u64)
}

const ARCH_SET_GS: u64 = 0x1001;
const ARCH_SET_FS: u64 = 0x1002;
const ARCH_GET_FS: u64 = 0x1003;
const ARCH_GET_GS: u64 = 0x1004;

pub fn arch_prctl(g: &mut Guest, cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    match a[0] {
        ARCH_SET_FS | ARCH_SET_GS => {
            if a[1] >= USER_TOP {
                return Err(Errno::EPERM);
            }
            let s = cpu.sregs_mut();
            if a[0] == ARCH_SET_FS {
                s.fs.base = a[1];
            } else {
                s.gs.base = a[1];
            }
            Ok(0)
        }
        ARCH_GET_FS => {
            let v = cpu.sregs.fs.base;
            g.write_u64(a[1], v)?;
            Ok(0)
        }
        ARCH_GET_GS => {
            let v = cpu.sregs.gs.base;
            g.write_u64(a[1], v)?;
            Ok(0)
        }
        _ => Err(Errno::EINVAL),
    }
}

pub fn prctl(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    match a[0] as i32 {
        libc::PR_SET_NAME => {
            let mut name = g.read_cstring(a[1], 4096).or_else(|e| {
                if e == Errno::ENAMETOOLONG {
                    g.read_user(a[1], 15)
                } else {
                    Err(e)
                }
            })?;
            name.truncate(15);
            g.info.comm = name;
            Ok(0)
        }
        libc::PR_GET_NAME => {
            let mut b = g.info.comm.clone();
            b.resize(16, 0);
            g.write_user(a[1], &b)?;
            Ok(0)
        }
        libc::PR_SET_PDEATHSIG
        | libc::PR_SET_DUMPABLE
        | libc::PR_SET_NO_NEW_PRIVS
        | libc::PR_SET_TIMERSLACK => Ok(0),
        libc::PR_GET_DUMPABLE | libc::PR_GET_NO_NEW_PRIVS => Ok(1),
        libc::PR_GET_PDEATHSIG => {
            g.write_u32(a[1], 0)?;
            Ok(0)
        }
        _ => Err(Errno::EINVAL),
    }
}

/// Resolves a kill target: the guest itself, or `ESRCH`.
fn self_target(g: &Guest, pid: i64) -> Result<(), Errno> {
    if pid == 0 || pid == -1 || pid == i64::from(g.info.pid) || pid == -i64::from(g.info.pid) {
        Ok(())
    } else {
        Err(Errno::ESRCH)
    }
}

fn send_self(g: &mut Guest, sig: u64, code: i32) -> SysResult {
    if sig > 64 {
        return Err(Errno::EINVAL);
    }
    if sig != 0 {
        g.signals.raise(sig as usize, code);
    }
    Ok(0)
}

pub fn kill(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    if a[1] > 64 {
        return Err(Errno::EINVAL);
    }
    self_target(g, a[0] as i32 as i64)?;
    send_self(g, a[1], SI_USER)
}

pub fn tkill(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    let tid = a[0] as i32;
    if tid <= 0 || a[1] > 64 {
        return Err(Errno::EINVAL);
    }
    if tid as u32 != g.info.pid {
        return Err(Errno::ESRCH);
    }
    send_self(g, a[1], SI_TKILL)
}

pub fn tgkill(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    let (tgid, tid) = (a[0] as i32, a[1] as i32);
    if tgid <= 0 || tid <= 0 || a[2] > 64 {
        return Err(Errno::EINVAL);
    }
    if tgid as u32 != g.info.pid || tid as u32 != g.info.pid {
        return Err(Errno::ESRCH);
    }
    send_self(g, a[2], SI_TKILL)
}

const FUTEX_WAIT: u64 = 0;
const FUTEX_WAKE: u64 = 1;
const FUTEX_REQUEUE: u64 = 3;
const FUTEX_CMP_REQUEUE: u64 = 4;
const FUTEX_WAIT_BITSET: u64 = 9;
const FUTEX_WAKE_BITSET: u64 = 10;

/// Futexes of a single-threaded process: nobody else can wake a waiter, so a wait only ends by its
/// timeout or a signal (as it would natively); wakes wake nobody.
pub fn futex(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    let (uaddr, op, val, timeout) = (a[0], a[1] & 0x7f, a[2] as u32, a[3]);
    if uaddr % 4 != 0 {
        return Err(Errno::EINVAL);
    }
    match op {
        FUTEX_WAIT | FUTEX_WAIT_BITSET => {
            if g.read_u32(uaddr)? != val {
                return Err(Errno::EAGAIN);
            }
            let deadline = if timeout == 0 {
                None
            } else {
                let t = read_timespec(g, timeout)?;
                Some(if op == FUTEX_WAIT_BITSET {
                    let clock = if a[1] & 256 != 0 {
                        libc::CLOCK_REALTIME
                    } else {
                        libc::CLOCK_MONOTONIC
                    };
                    g.clock.deadline(clock, t.as_nanos() as i128)?
                } else {
                    std::time::Instant::now() + t
                })
            };
            match g.wait(&[], deadline) {
                Ok(Woken::Timeout) => Err(Errno::ETIMEDOUT),
                Ok(Woken::Ready(_)) => Ok(0),
                Err(e) if e == ERESTARTSYS => Err(ERESTARTSYS),
                Err(e) => Err(e),
            }
        }
        FUTEX_WAKE | FUTEX_WAKE_BITSET | FUTEX_REQUEUE | FUTEX_CMP_REQUEUE => {
            g.read_u32(uaddr)?;
            Ok(0)
        }
        _ => Err(Errno::ENOSYS),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest::tests::test_guest;

    fn cpu() -> CpuState {
        CpuState::for_tests(Default::default())
    }

    #[test]
    fn identity_limits_and_tls() {
        let mut g = test_guest();
        let mut c = cpu();
        assert_eq!(getpid(&mut g, &mut c, &[0; 6]), Ok(42));
        assert_eq!(
            set_tid_address(&mut g, &mut c, &[0x40_0000, 0, 0, 0, 0, 0]),
            Ok(42)
        );
        assert_eq!(
            set_robust_list(&mut g, &mut c, &[0x40_0000, 24, 0, 0, 0, 0]),
            Ok(0)
        );
        assert_eq!(
            set_robust_list(&mut g, &mut c, &[0x40_0000, 8, 0, 0, 0, 0]),
            Err(Errno::EINVAL)
        );
        assert_eq!(prlimit64(&mut g, &mut c, &[0, 3, 0, 0x40_0000, 0, 0]), Ok(0));
        assert_eq!(g.read_u64(0x40_0000).unwrap(), 1 << 20);
        assert_eq!(
            prlimit64(&mut g, &mut c, &[1, 3, 0, 0x40_0000, 0, 0]),
            Err(Errno::ESRCH)
        );
        assert_eq!(
            prlimit64(&mut g, &mut c, &[0, 99, 0, 0x40_0000, 0, 0]),
            Err(Errno::EINVAL)
        );
        assert_eq!(
            arch_prctl(&mut g, &mut c, &[ARCH_SET_FS, 0x40_8000, 0, 0, 0, 0]),
            Ok(0)
        );
        assert_eq!(c.sregs.fs.base, 0x40_8000);
        assert_eq!(
            arch_prctl(&mut g, &mut c, &[ARCH_SET_FS, 1 << 63, 0, 0, 0, 0]),
            Err(Errno::EPERM)
        );
        assert_eq!(
            arch_prctl(&mut g, &mut c, &[ARCH_GET_FS, 0x40_0100, 0, 0, 0, 0]),
            Ok(0)
        );
        assert_eq!(g.read_u64(0x40_0100).unwrap(), 0x40_8000);
        assert_eq!(
            arch_prctl(&mut g, &mut c, &[0x9999, 0, 0, 0, 0, 0]),
            Err(Errno::EINVAL)
        );
        assert_eq!(uname(&mut g, &mut c, &[0x40_1000, 0, 0, 0, 0, 0]), Ok(0));
        assert_eq!(g.read_user(0x40_1000, 6).unwrap(), b"Linux\0");
        assert_eq!(
            uname(&mut g, &mut c, &[0x50_0000, 0, 0, 0, 0, 0]),
            Err(Errno::EFAULT)
        );
        assert_eq!(
            sched_getaffinity(&mut g, &mut c, &[0, 128, 0x40_2000, 0, 0, 0]),
            Ok(8)
        );
        assert_eq!(getrandom(&mut g, &mut c, &[0x40_3000, 32, 0, 0, 0, 0]), Ok(32));
        assert_eq!(
            getrandom(&mut g, &mut c, &[0x40_3000, 1 << 50, 0, 0, 0, 0]),
            Err(Errno::EFAULT)
        );
    }

    #[test]
    fn signals_only_reach_the_guest_itself() {
        let mut g = test_guest();
        let mut c = cpu();
        assert_eq!(kill(&mut g, &mut c, &[1, 9, 0, 0, 0, 0]), Err(Errno::ESRCH));
        assert_eq!(kill(&mut g, &mut c, &[42, 0, 0, 0, 0, 0]), Ok(0));
        assert_eq!(kill(&mut g, &mut c, &[42, 99, 0, 0, 0, 0]), Err(Errno::EINVAL));
        assert_eq!(tgkill(&mut g, &mut c, &[42, 42, 6, 0, 0, 0]), Ok(0));
        assert_eq!(g.signals.next_deliverable(), Some(6));
        assert_eq!(tgkill(&mut g, &mut c, &[7, 7, 6, 0, 0, 0]), Err(Errno::ESRCH));
    }

    #[test]
    fn futex_single_thread() {
        let mut g = test_guest();
        let mut c = cpu();
        g.write_u32(0x40_0000, 5).unwrap();
        assert_eq!(
            futex(&mut g, &mut c, &[0x40_0000, 128, 4, 0, 0, 0]),
            Err(Errno::EAGAIN)
        );
        assert_eq!(futex(&mut g, &mut c, &[0x40_0000, 129, 1, 0, 0, 0]), Ok(0));
        assert_eq!(
            futex(&mut g, &mut c, &[0x40_0001, 128, 5, 0, 0, 0]),
            Err(Errno::EINVAL)
        );
        let mut ts = [0u8; 16];
        ts[8..16].copy_from_slice(&10_000_000i64.to_le_bytes());
        g.write_user(0x40_0100, &ts).unwrap();
        assert_eq!(
            futex(&mut g, &mut c, &[0x40_0000, 128, 5, 0x40_0100, 0, 0]),
            Err(Errno::ETIMEDOUT)
        );
    }
}
