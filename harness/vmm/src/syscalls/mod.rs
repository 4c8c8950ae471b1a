//! The Linux x86-64 syscall ABI, served by the VMM: a [`SyscallTable`] from syscall number to handler.
//!
//! A trapped `syscall` arrives with the number in RAX and the arguments in RDI, RSI, RDX, R10, R8, R9.
//! The handler's result goes to RAX (`-errno` on failure) and the VMM returns to user mode itself.
//!
//! Classes of entries:
//! * **served**: implemented here (memory and file mappings, files and directories under the guest root
//!   with `getdents64`/`statx`, stdio, SocketCAN, pipes, eventfds, timerfds, `poll`/`select`/`epoll` over
//!   all of them, time, signals, process identity...) — what glibc's dynamic loader and typical
//!   event-loop programs need; every guest pointer checked (`EFAULT`), every length bounded;
//! * **forbidden**: calls that would act on the host or need privileges (`execve`, `ptrace`, `mount`,
//!   `reboot`, module loading, `setuid`, namespaces...): `EPERM`, logged once per number, no host effect;
//! * **no processes or threads**: `fork`, `vfork`, `clone` give `EAGAIN` (`clone3` `ENOSYS`, so glibc falls
//!   back to `clone`), with one line on stderr saying why — `threads unsupported in vm`
//!   ([`THREADS_UNSUPPORTED`]) for `clone(CLONE_THREAD)`, `processes unsupported in vm` otherwise — so a
//!   guest trying to start a thread or a child gets an error, not a hang, and the log says why;
//! * **unsupported**: known calls this VMM does not provide (`rseq`, `signalfd`, `inotify`, `memfd`,
//!   `io_uring`, `socketpair`...): `ENOSYS` quietly (programs fall back);
//! * anything else: `ENOSYS`, logged once per number.
//!
//! Layers (no module imports one above it): this module, the table and dispatcher, is on top; the handler
//! families (`events`, `files`, `io`, `memory`, `net`, `process`, `signal`, `time`) are below it and never
//! import each other; what they share is below them: `fdio` (the descriptor data path of the I/O and
//! socket calls), `readiness` (what a descriptor is ready for and the wait for it: poll, select and
//! epoll) and `abi` (the handler signature, result type and common argument checks). [`nr`] only names
//! numbers.

mod abi;
mod events;
mod fdio;
mod files;
mod io;
mod memory;
mod net;
pub mod nr;
mod process;
mod readiness;
mod signal;
mod time;

pub use abi::{Handler, SysResult};

use crate::errno::{Errno, ERESTARTNOHAND, ERESTARTSYS};
use crate::guest::Guest;
use crate::vcpu::CpuState;

/// How a syscall number is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Served,
    Forbidden,
    NoProcesses,
    Unsupported,
}

/// One table entry.
#[derive(Clone, Copy)]
pub struct Entry {
    pub name: &'static str,
    pub class: Class,
    pub handler: Handler,
}

/// Syscall number -> handler.
pub struct SyscallTable {
    entries: Vec<Option<Entry>>,
}

/// What the VM loop must do after a dispatched syscall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dispatched {
    /// Registers are set; resume the guest (after delivering pending signals).
    Resume,
    /// The guest ended ([`Guest::exit`] is set).
    Exit,
    /// Take the snapshot now, then dispatch this same syscall again.
    SnapshotFirst,
}

fn forbidden(g: &mut Guest, cpu: &mut CpuState, _a: &[u64; 6]) -> SysResult {
    let nr = cpu.regs.rax;
    if g.unknown_seen.insert(nr | 1 << 32) {
        tracing::warn!(
            syscall = nr::name(nr),
            "forbidden syscall refused with EPERM (agl-vmm never performs it on the host)"
        );
    }
    Err(Errno::EPERM)
}

/// `CLONE_THREAD`: the new task shares the thread group (a thread, `pthread_create`).
const CLONE_THREAD: u64 = 0x0001_0000;

/// The line the VMM writes to stderr (once) when the guest tries to start a thread; the harness's
/// report shows it when a workload fails because of it.
pub const THREADS_UNSUPPORTED: &str = "threads unsupported in vm";

fn no_processes(g: &mut Guest, cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    let nr = cpu.regs.rax;
    let thread = nr == nr::CLONE && a[0] & CLONE_THREAD != 0;
    // One line per kind, straight to stderr (not through the log filter): it explains the failure.
    let kind = if thread { 1 << 33 } else { 1 << 34 };
    if g.unknown_seen.insert(kind) {
        if thread {
            eprintln!(
                "agl-vmm: {THREADS_UNSUPPORTED}: the guest called clone(CLONE_THREAD) to start a thread; \
                 agl-vmm runs single-threaded guests only -> EAGAIN"
            );
        } else {
            eprintln!(
                "agl-vmm: processes unsupported in vm: the guest called {} to start a process; agl-vmm \
                 runs one process and has no fork -> EAGAIN (as under RLIMIT_NPROC)",
                nr::name(nr)
            );
        }
    }
    Err(Errno::EAGAIN)
}

fn unsupported(_g: &mut Guest, cpu: &mut CpuState, _a: &[u64; 6]) -> SysResult {
    tracing::debug!(syscall = nr::name(cpu.regs.rax), "unsupported syscall -> ENOSYS");
    Err(Errno::ENOSYS)
}

impl SyscallTable {
    fn add(&mut self, nr: u64, class: Class, handler: Handler) {
        if let Some(slot) = self.entries.get_mut(nr as usize) {
            *slot = Some(Entry {
                name: nr::name(nr),
                class,
                handler,
            });
        }
    }

    /// The table of everything agl-vmm knows.
    pub fn linux() -> SyscallTable {
        use nr::*;
        let mut t = SyscallTable {
            entries: vec![None; 512],
        };
        let served: &[(u64, Handler)] = &[
            (READ, io::read),
            (WRITE, io::write),
            (OPEN, files::open),
            (CLOSE, io::close),
            (STAT, files::stat),
            (FSTAT, files::fstat),
            (LSTAT, files::lstat),
            (POLL, io::poll),
            (LSEEK, io::lseek),
            (MMAP, memory::mmap),
            (MPROTECT, memory::mprotect),
            (MUNMAP, memory::munmap),
            (BRK, memory::brk),
            (RT_SIGACTION, signal::rt_sigaction),
            (RT_SIGPROCMASK, signal::rt_sigprocmask),
            (RT_SIGRETURN, signal::rt_sigreturn),
            (IOCTL, io::ioctl),
            (PREAD64, io::pread64),
            (PWRITE64, io::pwrite64),
            (READV, io::readv),
            (WRITEV, io::writev),
            (ACCESS, files::access),
            (SCHED_YIELD, process::zero),
            (MREMAP, memory::mremap),
            (MSYNC, memory::msync),
            (MADVISE, memory::madvise),
            (DUP, io::dup),
            (DUP2, io::dup2),
            (PAUSE, signal::pause),
            (NANOSLEEP, time::nanosleep),
            (GETPID, process::getpid),
            (SOCKET, net::socket),
            (CONNECT, net::connect),
            (SENDTO, net::sendto),
            (RECVFROM, net::recvfrom),
            (SENDMSG, net::sendmsg),
            (RECVMSG, net::recvmsg),
            (SHUTDOWN, net::shutdown),
            (BIND, net::bind),
            (LISTEN, net::listen),
            (GETSOCKNAME, net::getsockname),
            (GETPEERNAME, net::getpeername),
            (SETSOCKOPT, net::setsockopt),
            (GETSOCKOPT, net::getsockopt),
            (EXIT, process::exit),
            (WAIT4, process::wait),
            (KILL, process::kill),
            (UNAME, process::uname),
            (FCNTL, io::fcntl),
            (FLOCK, process::zero),
            (FSYNC, process::zero),
            (FDATASYNC, process::zero),
            (GETDENTS64, files::getdents64),
            (GETCWD, files::getcwd),
            (CHDIR, files::chdir),
            (FCHDIR, files::fchdir),
            (READLINK, files::readlink),
            (UMASK, process::umask),
            (GETTIMEOFDAY, time::gettimeofday),
            (GETRLIMIT, process::getrlimit),
            (GETRUSAGE, process::getrusage),
            (SYSINFO, process::sysinfo),
            (TIMES, process::times),
            (GETUID, process::getuid),
            (GETGID, process::getgid),
            (GETEUID, process::getuid),
            (GETEGID, process::getgid),
            (GETPPID, process::getppid),
            (GETPGRP, process::getpid),
            (GETGROUPS, process::getgroups),
            (GETRESUID, process::getresuid),
            (GETRESGID, process::getresgid),
            (GETPGID, process::getpid),
            (GETSID, process::getpid),
            (RT_SIGPENDING, signal::rt_sigpending),
            (RT_SIGSUSPEND, signal::rt_sigsuspend),
            (SIGALTSTACK, signal::sigaltstack),
            (GETPRIORITY, process::getpriority),
            (SETPRIORITY, process::zero),
            (PRCTL, process::prctl),
            (ARCH_PRCTL, process::arch_prctl),
            (SETRLIMIT, process::setrlimit),
            (GETTID, process::getpid),
            (TKILL, process::tkill),
            (TIME, time::time),
            (FUTEX, process::futex),
            (SCHED_SETAFFINITY, process::zero),
            (SCHED_GETAFFINITY, process::sched_getaffinity),
            (SET_TID_ADDRESS, process::set_tid_address),
            (CLOCK_GETTIME, time::clock_gettime),
            (CLOCK_GETRES, time::clock_getres),
            (CLOCK_NANOSLEEP, time::clock_nanosleep),
            (EXIT_GROUP, process::exit),
            (TGKILL, process::tgkill),
            (WAITID, process::wait),
            (OPENAT, files::openat),
            (NEWFSTATAT, files::newfstatat),
            (READLINKAT, files::readlinkat),
            (FACCESSAT, files::faccessat),
            (PPOLL, io::ppoll),
            (SET_ROBUST_LIST, process::set_robust_list),
            (GET_ROBUST_LIST, process::get_robust_list),
            (DUP3, io::dup3),
            (PREADV, io::preadv),
            (PRLIMIT64, process::prlimit64),
            (GETCPU, process::getcpu),
            (GETRANDOM, process::getrandom),
            (FACCESSAT2, files::faccessat2),
            (PIPE, events::pipe),
            (PIPE2, events::pipe2),
            (SELECT, io::select),
            (PSELECT6, io::pselect6),
            (EPOLL_CREATE, events::epoll_create),
            (EPOLL_CREATE1, events::epoll_create1),
            (EPOLL_CTL, events::epoll_ctl),
            (EPOLL_WAIT, events::epoll_wait),
            (EPOLL_PWAIT, events::epoll_pwait),
            (EPOLL_PWAIT2, events::epoll_pwait2),
            (EVENTFD, events::eventfd),
            (EVENTFD2, events::eventfd2),
            (TIMERFD_CREATE, events::timerfd_create),
            (TIMERFD_SETTIME, events::timerfd_settime),
            (TIMERFD_GETTIME, events::timerfd_gettime),
            (STATX, files::statx),
            (MLOCK, process::zero),
            (MUNLOCK, process::zero),
            (MLOCKALL, process::zero),
            (MUNLOCKALL, process::zero),
        ];
        for &(n, h) in served {
            t.add(n, Class::Served, h);
        }
        let read_only_fs = [
            RENAME, MKDIR, RMDIR, CREAT, LINK, UNLINK, SYMLINK, CHMOD, FCHMOD, CHOWN, FCHOWN, LCHOWN,
            TRUNCATE, FTRUNCATE, MKDIRAT, UNLINKAT, RENAMEAT, LINKAT, SYMLINKAT, FCHMODAT, FCHOWNAT,
            RENAMEAT2, UTIMENSAT,
        ];
        for n in read_only_fs {
            t.add(n, Class::Served, files::read_only);
        }
        for n in [
            EXECVE,
            EXECVEAT,
            PTRACE,
            MOUNT,
            UMOUNT2,
            PIVOT_ROOT,
            CHROOT,
            REBOOT,
            KEXEC_LOAD,
            KEXEC_FILE_LOAD,
            INIT_MODULE,
            FINIT_MODULE,
            DELETE_MODULE,
            SWAPON,
            SWAPOFF,
            ACCT,
            SETTIMEOFDAY,
            CLOCK_SETTIME,
            ADJTIMEX,
            CLOCK_ADJTIME,
            SETHOSTNAME,
            SETDOMAINNAME,
            IOPL,
            IOPERM,
            UNSHARE,
            SETNS,
            BPF,
            PERF_EVENT_OPEN,
            PROCESS_VM_READV,
            PROCESS_VM_WRITEV,
            KCMP,
            USERFAULTFD,
            SETUID,
            SETGID,
            SETREUID,
            SETREGID,
            SETRESUID,
            SETRESGID,
            SETFSUID,
            SETFSGID,
            CAPSET,
            MKNOD,
            MKNODAT,
            MODIFY_LDT,
            SETPGID,
            SETSID,
            SYSLOG,
            QUOTACTL,
            VHANGUP,
            FANOTIFY_INIT,
            OPEN_BY_HANDLE_AT,
            NAME_TO_HANDLE_AT,
            MOVE_MOUNT,
            FSOPEN,
            FSMOUNT,
            FSCONFIG,
            FSPICK,
            OPEN_TREE,
            MOUNT_SETATTR,
            PIDFD_OPEN,
            PIDFD_GETFD,
            PIDFD_SEND_SIGNAL,
            PROCESS_MADVISE,
            LANDLOCK_CREATE_RULESET,
            SECCOMP,
        ] {
            t.add(n, Class::Forbidden, forbidden);
        }
        for n in [FORK, VFORK, CLONE] {
            t.add(n, Class::NoProcesses, no_processes);
        }
        for n in [
            CLONE3,
            RSEQ,
            SIGNALFD,
            SIGNALFD4,
            INOTIFY_INIT,
            INOTIFY_INIT1,
            MEMFD_CREATE,
            IO_URING_SETUP,
            MEMBARRIER,
            STATFS,
            FSTATFS,
            SOCKETPAIR,
            ACCEPT,
            ACCEPT4,
            RT_SIGTIMEDWAIT,
            RT_SIGQUEUEINFO,
            MINCORE,
            CAPGET,
            PERSONALITY,
            SENDFILE,
            COPY_FILE_RANGE,
            SPLICE,
            TEE,
            GETDENTS,
            ALARM,
            SETITIMER,
            GETITIMER,
            TIMER_CREATE,
            PWRITEV,
            PREADV2,
            PWRITEV2,
            FADVISE64,
            READAHEAD,
            SYNC,
            SYNCFS,
            MQ_OPEN,
            SHMGET,
            SEMGET,
            MSGGET,
            IO_SETUP,
            CLOSE_RANGE,
            PKEY_ALLOC,
            PKEY_MPROTECT,
            MBIND,
            SET_MEMPOLICY,
            GET_MEMPOLICY,
            FUTEX_WAITV,
        ] {
            t.add(n, Class::Unsupported, unsupported);
        }
        t
    }

    pub fn lookup(&self, nr: u64) -> Option<&Entry> {
        self.entries.get(usize::try_from(nr).ok()?)?.as_ref()
    }

    /// All entries (for documentation and tests).
    pub fn entries(&self) -> impl Iterator<Item = (u64, &Entry)> {
        self.entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.as_ref().map(|e| (i as u64, e)))
    }

    /// Serves the syscall the vCPU trapped on and sets the return registers.
    pub fn dispatch(&self, g: &mut Guest, cpu: &mut CpuState) -> Dispatched {
        let nr = cpu.regs.rax;
        let r = &cpu.regs;
        let args = [r.rdi, r.rsi, r.rdx, r.r10, r.r8, r.r9];
        if nr == nr::BIND && g.snapshot_before_bind && net::is_can_socket(g, args[0]) {
            return Dispatched::SnapshotFirst;
        }
        g.skip_return = false;
        let result = match self.lookup(nr) {
            Some(e) => (e.handler)(g, cpu, &args),
            None => {
                g.note_unknown(nr);
                Err(Errno::ENOSYS)
            }
        };
        if g.exit.is_some() {
            if g.trace {
                trace(nr, &args, "(no return)");
            }
            return Dispatched::Exit;
        }
        if g.skip_return {
            if g.trace {
                trace(nr, &args, "(no return)");
            }
            return Dispatched::Resume;
        }
        let mut restarted = false;
        match result {
            Ok(v) => cpu.return_to_user(v),
            Err(e) if e == ERESTARTSYS || e == ERESTARTNOHAND => {
                // Restart the call if the signal that interrupted it will not run a handler (or its
                // handler asked for SA_RESTART and the call is restartable); otherwise EINTR.
                g.collect_host_signals();
                let restart = match g.signals.next_deliverable() {
                    None => true,
                    Some(sig) => g.signals.ignored(sig) || (e == ERESTARTSYS && g.signals.restarts(sig)),
                };
                if restart {
                    cpu.return_to_user(nr);
                    let regs = cpu.regs_mut();
                    regs.rip = regs.rip.wrapping_sub(2);
                    restarted = true;
                } else {
                    cpu.return_to_user(Errno::EINTR.as_return());
                }
            }
            Err(e) => cpu.return_to_user(e.as_return()),
        }
        if g.trace {
            let shown = match result {
                _ if restarted => "? (interrupted, restarted)".to_string(),
                Ok(v) if v > 0xffff => format!("{v:#x}"),
                Ok(v) => v.to_string(),
                Err(e) if e == ERESTARTSYS || e == ERESTARTNOHAND => "-1 EINTR (interrupted)".to_string(),
                Err(e) => format!("-1 {e}"),
            };
            trace(nr, &args, &shown);
        }
        Dispatched::Resume
    }
}

fn trace(nr: u64, args: &[u64; 6], shown: &str) {
    let a: Vec<String> = args.iter().map(|v| format!("{v:#x}")).collect();
    eprintln!("agl-vmm: syscall {}({}) = {}", nr::name(nr), a.join(", "), shown);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_and_processes_get_eagain() {
        let mut g = crate::guest::tests::test_guest();
        let mut c = CpuState::for_tests(Default::default());
        c.regs_mut().rax = nr::CLONE;
        let thread_flags = 0x3d0f00; // glibc's pthread_create: CLONE_VM|CLONE_FS|...|CLONE_THREAD|...
        assert_eq!(
            no_processes(&mut g, &mut c, &[thread_flags, 0, 0, 0, 0, 0]),
            Err(Errno::EAGAIN)
        );
        assert_eq!(
            no_processes(&mut g, &mut c, &[thread_flags, 0, 0, 0, 0, 0]),
            Err(Errno::EAGAIN)
        );
        c.regs_mut().rax = nr::FORK;
        assert_eq!(no_processes(&mut g, &mut c, &[0; 6]), Err(Errno::EAGAIN));
        assert!(g.unknown_seen.contains(&(1 << 33)) && g.unknown_seen.contains(&(1 << 34)));
    }

    #[test]
    fn table_classes() {
        let t = SyscallTable::linux();
        assert_eq!(t.lookup(nr::WRITE).map(|e| e.class), Some(Class::Served));
        assert_eq!(t.lookup(nr::EXECVE).map(|e| e.class), Some(Class::Forbidden));
        assert_eq!(t.lookup(nr::PTRACE).map(|e| e.class), Some(Class::Forbidden));
        assert_eq!(t.lookup(nr::MOUNT).map(|e| e.class), Some(Class::Forbidden));
        assert_eq!(t.lookup(nr::CLONE).map(|e| e.class), Some(Class::NoProcesses));
        assert_eq!(t.lookup(nr::FORK).map(|e| e.class), Some(Class::NoProcesses));
        assert_eq!(t.lookup(nr::CLONE3).map(|e| e.class), Some(Class::Unsupported));
        for n in [
            nr::PIPE2,
            nr::SELECT,
            nr::PSELECT6,
            nr::EPOLL_CREATE1,
            nr::EPOLL_CTL,
            nr::EPOLL_PWAIT,
            nr::EVENTFD2,
            nr::TIMERFD_CREATE,
            nr::TIMERFD_SETTIME,
            nr::TIMERFD_GETTIME,
            nr::STATX,
        ] {
            assert_eq!(
                t.lookup(n).map(|e| e.class),
                Some(Class::Served),
                "{}",
                nr::name(n)
            );
        }
        assert!(t.lookup(9999).is_none());
        assert!(t.lookup(u64::MAX).is_none());
        // Every entry has a real name.
        for (n, e) in t.entries() {
            assert!(!e.name.starts_with("syscall_"), "{n} has no name");
        }
    }
}
