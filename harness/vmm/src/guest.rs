//! The state of the guest process that the VMM keeps on its behalf (what a kernel's `task_struct` and
//! `mm_struct` would hold): memory, address space, descriptors, root directory, CAN interfaces, signals,
//! clocks, identity. Syscall handlers work on a [`Guest`]; a snapshot serialises it.
//!
//! Guest memory is only ever touched through the checked accessors here ([`Guest::read_user`],
//! [`Guest::write_user`], [`Guest::read_cstring`]...): every pointer and length is checked against the
//! user mappings with overflow-safe arithmetic, and a bad one is `EFAULT`, never a host-side access.

use std::collections::BTreeSet;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::can::Interfaces;
use crate::errno::{Errno, ERESTARTSYS};
use crate::fdtable::FdTable;
use crate::fs::GuestRoot;
use crate::memory::GuestRam;
use crate::mm::{Access, AddressSpace};
use crate::signals::{HostSignals, SignalState, SI_USER};
use crate::vcpu::ExtendedState;

/// Largest single read/write the VMM performs for the guest; longer requests are short (allowed by POSIX
/// for pipes, sockets and terminals; callers loop).
pub const MAX_IO: u64 = 1 << 20;

/// How the guest ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestExit {
    /// `exit_group(code)`.
    Exited(i32),
    /// Killed by a signal (default action, or a fault); `report` was printed to stderr.
    Killed { signal: i32, report: String },
}

impl GuestExit {
    /// The VMM's process exit code.
    pub fn exit_code(&self) -> i32 {
        match self {
            GuestExit::Exited(code) => code & 0xff,
            GuestExit::Killed { signal, .. } => 128 + signal,
        }
    }
}

/// Guest clocks: `CLOCK_MONOTONIC`/`CLOCK_BOOTTIME` are the host's plus an offset (which keeps a restored
/// guest's monotonic time continuous with the snapshot); `CLOCK_REALTIME` is the host's.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
pub struct GuestClock {
    pub mono_offset_ns: i64,
}

pub fn host_clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for clock_gettime to fill.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

impl GuestClock {
    /// The guest's view of `clock` in nanoseconds.
    pub fn now_ns(&self, clock: i32) -> Result<i128, Errno> {
        Ok(match clock {
            libc::CLOCK_REALTIME | libc::CLOCK_REALTIME_COARSE | libc::CLOCK_TAI => host_clock_ns(clock),
            libc::CLOCK_MONOTONIC | libc::CLOCK_MONOTONIC_RAW | libc::CLOCK_MONOTONIC_COARSE => {
                host_clock_ns(libc::CLOCK_MONOTONIC) + i128::from(self.mono_offset_ns)
            }
            libc::CLOCK_BOOTTIME => host_clock_ns(libc::CLOCK_BOOTTIME) + i128::from(self.mono_offset_ns),
            libc::CLOCK_PROCESS_CPUTIME_ID | libc::CLOCK_THREAD_CPUTIME_ID => host_clock_ns(clock),
            _ => return Err(Errno::EINVAL),
        })
    }

    /// The host `Instant` at which the guest's `clock` reaches `target_ns`.
    pub fn deadline(&self, clock: i32, target_ns: i128) -> Result<Instant, Errno> {
        let now = self.now_ns(clock)?;
        let left = (target_ns - now).max(0);
        let left = u64::try_from(left).unwrap_or(u64::MAX);
        Ok(Instant::now()
            .checked_add(Duration::from_nanos(left))
            .unwrap_or_else(far_future))
    }
}

/// An instant a year away (a practically infinite deadline).
pub fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(365 * 86_400)
}

/// Process identity and small per-process settings.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ProcInfo {
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
    /// File name of the ELF (guest argv[0]; `/proc/self/exe` reads `/<name>`).
    pub exe_name: String,
    pub comm: Vec<u8>,
    pub tid_address: u64,
    pub robust_list: (u64, u64),
    pub umask: u32,
}

/// The outcome of a blocking wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Woken {
    /// Some of the watched fds are ready (their `revents`).
    Ready(Vec<i16>),
    Timeout,
}

/// The guest process.
pub struct Guest {
    pub ram: GuestRam,
    pub mm: AddressSpace,
    pub fds: FdTable,
    pub root: GuestRoot,
    pub ifaces: Interfaces,
    pub signals: SignalState,
    pub clock: GuestClock,
    pub info: ProcInfo,
    pub host_signals: Option<Rc<HostSignals>>,
    pub trace: bool,
    /// Syscall numbers already reported as unknown (logged once each).
    pub unknown_seen: BTreeSet<u64>,
    pub exit: Option<GuestExit>,
    /// Take a snapshot before the first `bind` of an `AF_CAN` socket.
    pub snapshot_before_bind: bool,
    /// Set by a handler that already put the vCPU where it must continue (rt_sigreturn).
    pub skip_return: bool,
    /// FPU state saved per signal frame (frame address, state), restored by `rt_sigreturn`.
    pub fpu_frames: Vec<(u64, ExtendedState)>,
    /// FPU state for the VM loop to load before the next run.
    pub fpu_to_restore: Option<ExtendedState>,
}

impl Guest {
    /// Checks and copies `len` guest bytes at `addr`.
    pub fn read_user(&self, addr: u64, len: u64) -> Result<Vec<u8>, Errno> {
        self.mm.check(addr, len, Access::Read)?;
        let n = usize::try_from(len).map_err(|_| Errno::EFAULT)?;
        let mut buf = vec![0u8; n];
        self.ram.read(addr, &mut buf).map_err(|_| Errno::EFAULT)?;
        Ok(buf)
    }

    /// Checks and copies `data` into guest memory at `addr`.
    pub fn write_user(&mut self, addr: u64, data: &[u8]) -> Result<(), Errno> {
        self.mm.check(addr, data.len() as u64, Access::Write)?;
        self.ram.write(addr, data).map_err(|_| Errno::EFAULT)
    }

    pub fn read_u64(&self, addr: u64) -> Result<u64, Errno> {
        let b = self.read_user(addr, 8)?;
        Ok(u64::from_le_bytes(b.try_into().map_err(|_| Errno::EFAULT)?))
    }

    pub fn read_u32(&self, addr: u64) -> Result<u32, Errno> {
        let b = self.read_user(addr, 4)?;
        Ok(u32::from_le_bytes(b.try_into().map_err(|_| Errno::EFAULT)?))
    }

    pub fn write_u64(&mut self, addr: u64, v: u64) -> Result<(), Errno> {
        self.write_user(addr, &v.to_le_bytes())
    }

    pub fn write_u32(&mut self, addr: u64, v: u32) -> Result<(), Errno> {
        self.write_user(addr, &v.to_le_bytes())
    }

    /// Reads a NUL-terminated string of at most `max` bytes (without the NUL); `ENAMETOOLONG` if longer.
    pub fn read_cstring(&self, addr: u64, max: usize) -> Result<Vec<u8>, Errno> {
        let mut out = Vec::new();
        let mut at = addr;
        while out.len() <= max {
            // Read up to the end of the current page (the next page may be unmapped).
            let page_end = (at | 0xfff).checked_add(1).ok_or(Errno::EFAULT)?;
            let chunk = self.read_user(at, page_end - at)?;
            if let Some(nul) = chunk.iter().position(|&b| b == 0) {
                out.extend_from_slice(&chunk[..nul]);
                return if out.len() > max {
                    Err(Errno::ENAMETOOLONG)
                } else {
                    Ok(out)
                };
            }
            out.extend_from_slice(&chunk);
            at = page_end;
        }
        Err(Errno::ENAMETOOLONG)
    }

    /// Reads a `struct iovec` array: (base, len) pairs, at most `IOV_MAX`, total length capped.
    pub fn read_iovecs(&self, addr: u64, count: u64) -> Result<Vec<(u64, u64)>, Errno> {
        if count > 1024 {
            return Err(Errno::EINVAL);
        }
        let raw = self.read_user(addr, count * 16)?;
        let mut total: u64 = 0;
        let mut v = Vec::with_capacity(count as usize);
        for c in raw.chunks_exact(16) {
            let base = u64::from_le_bytes(c[0..8].try_into().map_err(|_| Errno::EFAULT)?);
            let len = u64::from_le_bytes(c[8..16].try_into().map_err(|_| Errno::EFAULT)?);
            if len > i64::MAX as u64 {
                return Err(Errno::EINVAL);
            }
            total = total
                .checked_add(len)
                .filter(|t| *t <= i64::MAX as u64)
                .ok_or(Errno::EINVAL)?;
            v.push((base, len));
        }
        Ok(v)
    }

    /// Gathers up to `limit` bytes from iovecs (every touched buffer is checked).
    pub fn gather(&self, iov: &[(u64, u64)], limit: u64) -> Result<Vec<u8>, Errno> {
        let mut out = Vec::new();
        for &(base, len) in iov {
            let left = limit.saturating_sub(out.len() as u64);
            if left == 0 {
                break;
            }
            out.extend(self.read_user(base, len.min(left))?);
        }
        Ok(out)
    }

    /// Scatters `data` into iovecs; returns the bytes written.
    pub fn scatter(&mut self, iov: &[(u64, u64)], data: &[u8]) -> Result<usize, Errno> {
        let mut done = 0usize;
        for &(base, len) in iov {
            if done >= data.len() {
                break;
            }
            let n = (len as usize).min(data.len() - done);
            self.write_user(base, &data[done..done + n])?;
            done += n;
        }
        Ok(done)
    }

    /// Moves host signals that arrived into the guest's pending set.
    pub fn collect_host_signals(&mut self) {
        let Some(host) = &self.host_signals else { return };
        let bits = host.take();
        for sig in 1..=64usize {
            if bits & (1u64 << (sig - 1)) != 0 {
                self.signals.raise(sig, SI_USER);
            }
        }
    }

    /// Blocks until one of `fds` is ready, `deadline` passes, or a signal the guest must see arrives
    /// (`ERESTARTSYS`; the caller may turn it into its own restart code).
    pub fn wait(&mut self, fds: &[(RawFd, i16)], deadline: Option<Instant>) -> Result<Woken, Errno> {
        loop {
            self.collect_host_signals();
            if self.signals.interrupts() {
                return Err(ERESTARTSYS);
            }
            let timeout = match deadline {
                None => None,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(Woken::Timeout);
                    }
                    Some(left)
                }
            };
            let mut pfds: Vec<libc::pollfd> = fds
                .iter()
                .map(|&(fd, events)| libc::pollfd {
                    fd,
                    events,
                    revents: 0,
                })
                .collect();
            let wake = self.host_signals.as_ref().map(|h| h.wake_fd());
            if let Some(w) = wake {
                pfds.push(libc::pollfd {
                    fd: w,
                    events: libc::POLLIN,
                    revents: 0,
                });
            }
            let ts = timeout.map(|t| libc::timespec {
                tv_sec: t.as_secs().min(i64::MAX as u64) as libc::time_t,
                tv_nsec: libc::c_long::from(t.subsec_nanos() as i32),
            });
            let tsp = ts
                .as_ref()
                .map_or(std::ptr::null(), |t| t as *const libc::timespec);
            // SAFETY: `pfds` is a valid array of pollfd of the given length; `tsp` is null or points at a
            // live timespec; no signal mask is passed.
            let n = unsafe {
                libc::ppoll(
                    pfds.as_mut_ptr(),
                    pfds.len() as libc::nfds_t,
                    tsp,
                    std::ptr::null(),
                )
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                return Err(Errno::from_io(&e));
            }
            let revents: Vec<i16> = pfds[..fds.len()].iter().map(|p| p.revents).collect();
            if revents.iter().any(|&r| r != 0) {
                return Ok(Woken::Ready(revents));
            }
        }
    }

    /// Logs an unknown syscall number once.
    pub fn note_unknown(&mut self, nr: u64) {
        if self.unknown_seen.insert(nr) {
            tracing::warn!(nr, "unknown syscall -> ENOSYS (reported once per number)");
        }
    }
}

impl vcan::callmem::CallerMemory for Guest {
    fn read(&self, addr: u64, len: usize) -> Result<Vec<u8>, Errno> {
        self.read_user(addr, len as u64)
    }

    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), Errno> {
        self.write_user(addr, data)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::memory::{build_page_tables, Layout, Prot};
    use crate::mm::Kind;

    /// A guest with 16 MiB of RAM, a RW mapping at 0x40_0000 (64 KiB) and a read-only page at 0x50_0000.
    pub(crate) fn test_guest() -> Guest {
        let layout = Layout::new(16 << 20).unwrap();
        let mut ram = GuestRam::anonymous(16 << 20).unwrap();
        build_page_tables(&mut ram, &layout).unwrap();
        let mut mm = AddressSpace::new(layout, 1 << 20).unwrap();
        mm.map_fixed(&mut ram, 0x40_0000, 0x1_0000, Prot::RW, Kind::Anon)
            .unwrap();
        mm.map_fixed(&mut ram, 0x50_0000, 0x1000, Prot(Prot::READ), Kind::Elf)
            .unwrap();
        mm.init_brk(0x60_0000);
        Guest {
            ram,
            mm,
            fds: FdTable::with_stdio(),
            root: GuestRoot::open(None).unwrap(),
            ifaces: Interfaces::default(),
            signals: SignalState::default(),
            clock: GuestClock::default(),
            info: ProcInfo {
                pid: 42,
                uid: 0,
                gid: 0,
                exe_name: "test".into(),
                comm: b"test".to_vec(),
                tid_address: 0,
                robust_list: (0, 0),
                umask: 0o022,
            },
            host_signals: None,
            trace: false,
            unknown_seen: BTreeSet::new(),
            exit: None,
            snapshot_before_bind: false,
            skip_return: false,
            fpu_frames: Vec::new(),
            fpu_to_restore: None,
        }
    }

    #[test]
    fn user_copies_are_checked() {
        let mut g = test_guest();
        g.write_user(0x40_0000, b"abc\0").unwrap();
        assert_eq!(g.read_user(0x40_0000, 3).unwrap(), b"abc");
        assert_eq!(g.read_cstring(0x40_0000, 100).unwrap(), b"abc");
        assert_eq!(g.read_cstring(0x40_0000, 2), Err(Errno::ENAMETOOLONG));
        assert_eq!(
            g.write_user(0x50_0000, b"x"),
            Err(Errno::EFAULT),
            "read-only page"
        );
        assert_eq!(g.read_user(0x50_0000, 4).unwrap().len(), 4);
        assert_eq!(g.read_user(0, 1), Err(Errno::EFAULT));
        assert_eq!(
            g.read_user(0x40_fff0, 0x20),
            Err(Errno::EFAULT),
            "runs off the mapping"
        );
        assert_eq!(g.read_user(u64::MAX, 2), Err(Errno::EFAULT));
        assert_eq!(g.read_user(0x40_0000, u64::MAX), Err(Errno::EFAULT));
        // A string running into unmapped memory.
        g.write_user(0x40_fffc, b"abcd").unwrap();
        assert_eq!(g.read_cstring(0x40_fffc, 4096), Err(Errno::EFAULT));
    }

    #[test]
    fn iovecs_are_checked() {
        let mut g = test_guest();
        let mut raw = Vec::new();
        for (b, l) in [(0x40_1000u64, 4u64), (0x40_2000, 3)] {
            raw.extend_from_slice(&b.to_le_bytes());
            raw.extend_from_slice(&l.to_le_bytes());
        }
        g.write_user(0x40_0000, &raw).unwrap();
        g.write_user(0x40_1000, b"abcd").unwrap();
        g.write_user(0x40_2000, b"efg").unwrap();
        let iov = g.read_iovecs(0x40_0000, 2).unwrap();
        assert_eq!(g.gather(&iov, 100).unwrap(), b"abcdefg");
        assert_eq!(g.gather(&iov, 5).unwrap(), b"abcde");
        assert_eq!(g.scatter(&iov, b"1234567890").unwrap(), 7);
        assert_eq!(g.read_iovecs(0x40_0000, 5000), Err(Errno::EINVAL));
        assert_eq!(g.read_iovecs(0x10, 1), Err(Errno::EFAULT));
        // Lengths that overflow when summed.
        let mut bad = Vec::new();
        for _ in 0..2 {
            bad.extend_from_slice(&0x40_1000u64.to_le_bytes());
            bad.extend_from_slice(&(i64::MAX as u64).to_le_bytes());
        }
        g.write_user(0x40_3000, &bad).unwrap();
        assert_eq!(g.read_iovecs(0x40_3000, 2), Err(Errno::EINVAL));
        // A bad buffer inside a good iovec array.
        let mut badbuf = Vec::new();
        badbuf.extend_from_slice(&0x10u64.to_le_bytes());
        badbuf.extend_from_slice(&4u64.to_le_bytes());
        g.write_user(0x40_4000, &badbuf).unwrap();
        let iov = g.read_iovecs(0x40_4000, 1).unwrap();
        assert_eq!(g.gather(&iov, 100), Err(Errno::EFAULT));
    }

    #[test]
    fn monotonic_clock_offset() {
        let c = GuestClock {
            mono_offset_ns: -1_000_000_000,
        };
        let host = host_clock_ns(libc::CLOCK_MONOTONIC);
        let guest = c.now_ns(libc::CLOCK_MONOTONIC).unwrap();
        assert!((host - 1_000_000_000 - guest).abs() < 100_000_000);
        assert_eq!(c.now_ns(99), Err(Errno::EINVAL));
    }

    #[test]
    fn waits_time_out() {
        let mut g = test_guest();
        let t0 = Instant::now();
        let r = g
            .wait(&[], Some(Instant::now() + Duration::from_millis(20)))
            .unwrap();
        assert_eq!(r, Woken::Timeout);
        assert!(t0.elapsed() >= Duration::from_millis(20));
    }
}
