//! Signals: host signals aimed at the VMM are forwarded to the guest; the guest's `rt_sigaction`
//! handlers run on a Linux-conformant `rt_sigframe`; `rt_sigreturn` restores the interrupted context.
//!
//! Host side: SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 get a handler that records the signal
//! in an atomic bit set, writes a byte to a self-pipe (waking any blocking wait of the VMM) and sets
//! `kvm_run.immediate_exit` (so a guest spinning at CPL3 leaves `KVM_RUN` at once, and a signal that
//! arrives just before entry is not lost). The handler does nothing else (async-signal-safe).
//!
//! Guest side ([`SignalState`]): per-signal actions, the blocked mask, pending signals, the alternate
//! stack. A pending, unblocked signal is delivered at the next VM exit: after a syscall returned (a
//! blocking syscall returns `EINTR`, or restarts with `SA_RESTART`), or when `KVM_RUN` was interrupted.
//! Without a handler the default action applies: terminate (exit code 128 + signal) or ignore.
//! The frame is the kernel's: return address (`sa_restorer`), `ucontext` with the `sigcontext` and the
//! signal mask, `siginfo`. The FPU/SSE/AVX state is not written to the guest stack; the VMM keeps it and
//! restores it on `rt_sigreturn` (`fpstate` in the frame is NULL, as for a task that never used the FPU).
//!
//! Temporary masks (`ppoll`, `pselect6`, `epoll_pwait`, `epoll_pwait2`, `rt_sigsuspend`) follow the
//! kernel's `TIF_RESTORE_SIGMASK`: the caller's mask is saved ([`SignalState::set_temporary_mask`]); a
//! call that ends without being interrupted restores it at once; an interrupted one keeps the temporary
//! mask in force until the signal is delivered. The handler's frame then holds the saved mask (restored by
//! `rt_sigreturn`); when no handler runs, the saved mask is restored once nothing more is deliverable.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, AtomicPtr, AtomicU64, Ordering};

use crate::errno::Errno;
use crate::vcpu::CpuState;

pub const SIG_DFL: u64 = 0;
pub const SIG_IGN: u64 = 1;
pub const SA_SIGINFO: u64 = 0x4;
pub const SA_ONSTACK: u64 = 0x0800_0000;
pub const SA_RESTART: u64 = 0x1000_0000;
pub const SA_NODEFER: u64 = 0x4000_0000;
pub const SA_RESETHAND: u64 = 0x8000_0000;
pub const SA_RESTORER: u64 = 0x0400_0000;
pub const SS_ONSTACK: i32 = 1;
pub const SS_DISABLE: i32 = 2;
/// Number of signals (1..=64).
pub const NSIG: usize = 64;
/// `si_code` for a signal sent by `kill`.
pub const SI_USER: i32 = 0;
/// `si_code` for a signal sent by `tkill`/`tgkill`.
pub const SI_TKILL: i32 = -6;
/// Size of the frame the VMM builds (pretcode + ucontext + siginfo).
pub const FRAME_SIZE: u64 = 8 + UCONTEXT_SIZE + 128;
const UCONTEXT_SIZE: u64 = 8 + 8 + 24 + 256 + 8;
/// Offset of `uc_mcontext` in the frame.
const MCONTEXT_OFF: u64 = 8 + 8 + 8 + 24;
/// Offset of `uc_sigmask` in the frame.
const SIGMASK_OFF: u64 = MCONTEXT_OFF + 256;
/// Offset of `siginfo` in the frame.
const SIGINFO_OFF: u64 = 8 + UCONTEXT_SIZE;
/// RFLAGS bits a signal handler may change through the frame (Linux `FIX_EFLAGS`).
const FIX_EFLAGS: u64 = 0x4_0dd5 | 0x1_0000;
/// Host signals forwarded to the guest.
pub const FORWARDED: [i32; 6] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

fn bit(sig: usize) -> u64 {
    1u64 << (sig - 1)
}

/// The uncatchable signals.
pub fn uncatchable(sig: usize) -> bool {
    sig == libc::SIGKILL as usize || sig == libc::SIGSTOP as usize
}

/// Conventional name of a signal.
pub fn name(sig: i32) -> String {
    let n = match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGCHLD => "SIGCHLD",
        libc::SIGSYS => "SIGSYS",
        libc::SIGSTOP => "SIGSTOP",
        _ => return format!("signal {sig}"),
    };
    n.to_string()
}

// ---- Host side ----

static HOST_PENDING: AtomicU64 = AtomicU64::new(0);
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);
static IMMEDIATE_EXIT: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());

extern "C" fn on_host_signal(sig: libc::c_int) {
    if (1..=64).contains(&sig) {
        HOST_PENDING.fetch_or(1u64 << (sig - 1), Ordering::SeqCst);
    }
    let p = IMMEDIATE_EXIT.load(Ordering::SeqCst);
    if !p.is_null() {
        // SAFETY: `p` points at `kvm_run.immediate_exit` of the live vCPU mapping (cleared before the
        // mapping goes away); a volatile byte store is async-signal-safe.
        unsafe { std::ptr::write_volatile(p, 1) };
    }
    let fd = WAKE_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        let b = 1u8;
        // SAFETY: write(2) of one byte from a valid local to a nonblocking pipe is async-signal-safe; a
        // full pipe (EAGAIN) is fine, a wake-up is already pending.
        unsafe { libc::write(fd, (&b as *const u8).cast(), 1) };
    }
}

/// The host half of signal forwarding: handlers installed, a self-pipe to wait on.
pub struct HostSignals {
    read_fd: RawFd,
    write_fd: RawFd,
}

impl HostSignals {
    /// Installs the handlers (without `SA_RESTART`) and ignores SIGPIPE (a closed stdout must not kill
    /// the VMM; the guest gets EPIPE).
    pub fn install() -> std::io::Result<HostSignals> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        WAKE_FD.store(fds[1], Ordering::SeqCst);
        for sig in FORWARDED {
            // SAFETY: zeroed sigaction is a valid starting value; the handler only does async-signal-safe
            // work; the mask is initialised with sigemptyset.
            let rc = unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = on_host_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
                libc::sigemptyset(&mut sa.sa_mask);
                libc::sigaction(sig, &sa, std::ptr::null_mut())
            };
            if rc != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        // SAFETY: setting SIGPIPE to SIG_IGN has no memory-safety preconditions.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
        Ok(HostSignals {
            read_fd: fds[0],
            write_fd: fds[1],
        })
    }

    /// The fd that becomes readable when a host signal arrived.
    pub fn wake_fd(&self) -> RawFd {
        self.read_fd
    }

    /// Registers the vCPU's `immediate_exit` byte (null to unregister).
    pub fn set_immediate_exit(&self, p: *mut u8) {
        IMMEDIATE_EXIT.store(p, Ordering::SeqCst);
    }

    /// Takes the host signals received since the last call (bit `n-1` = signal `n`) and drains the pipe.
    pub fn take(&self) -> u64 {
        let mut buf = [0u8; 64];
        // SAFETY: reading into a valid local buffer from our own nonblocking pipe.
        while unsafe { libc::read(self.read_fd, buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
        HOST_PENDING.swap(0, Ordering::SeqCst)
    }

    /// True if host signals are waiting to be taken.
    pub fn any(&self) -> bool {
        HOST_PENDING.load(Ordering::SeqCst) != 0
    }
}

impl Drop for HostSignals {
    fn drop(&mut self) {
        IMMEDIATE_EXIT.store(std::ptr::null_mut(), Ordering::SeqCst);
        WAKE_FD.store(-1, Ordering::SeqCst);
        // SAFETY: closing the two pipe fds this struct owns.
        unsafe {
            libc::close(self.read_fd);
            libc::close(self.write_fd);
        }
    }
}

// ---- Guest side ----

/// One `struct sigaction` as the guest registered it (kernel layout: handler, flags, restorer, mask).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Action {
    pub handler: u64,
    pub flags: u64,
    pub restorer: u64,
    pub mask: u64,
}

/// `stack_t` of `sigaltstack`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AltStack {
    pub sp: u64,
    pub flags: i32,
    pub size: u64,
}

impl Default for AltStack {
    fn default() -> Self {
        AltStack {
            sp: 0,
            flags: SS_DISABLE,
            size: 0,
        }
    }
}

/// What the default action of a signal does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultAction {
    Terminate,
    Ignore,
}

pub fn default_action(sig: usize) -> DefaultAction {
    match sig as i32 {
        libc::SIGCHLD
        | libc::SIGURG
        | libc::SIGWINCH
        | libc::SIGCONT
        | libc::SIGSTOP
        | libc::SIGTSTP
        | libc::SIGTTIN
        | libc::SIGTTOU => DefaultAction::Ignore,
        _ => DefaultAction::Terminate,
    }
}

/// The guest's signal state.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SignalState {
    actions: Vec<Action>,
    /// Blocked signals.
    pub mask: u64,
    /// Pending signals (with the `si_code` of the most recent sender per signal).
    pub pending: u64,
    codes: Vec<i32>,
    pub altstack: AltStack,
    /// The caller's mask while a syscall's temporary mask is in force, until the signal that interrupted
    /// the call was delivered (the kernel's `saved_sigmask` with `TIF_RESTORE_SIGMASK`).
    #[serde(default)]
    saved_mask: Option<u64>,
}

impl Default for SignalState {
    fn default() -> Self {
        SignalState {
            actions: vec![Action::default(); NSIG],
            mask: 0,
            pending: 0,
            codes: vec![SI_USER; NSIG],
            altstack: AltStack::default(),
            saved_mask: None,
        }
    }
}

/// What delivering a signal resulted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// A frame was built; the vCPU now runs the handler.
    Handler,
    /// The signal was ignored.
    Ignored,
    /// The default action terminates the guest.
    Terminate,
}

impl SignalState {
    pub fn action(&self, sig: usize) -> Option<Action> {
        self.actions.get(sig.checked_sub(1)?).copied()
    }

    /// `rt_sigaction`: validates and replaces the action; returns the old one.
    pub fn set_action(&mut self, sig: usize, new: Option<Action>) -> Result<Action, Errno> {
        if !(1..=NSIG).contains(&sig) {
            return Err(Errno::EINVAL);
        }
        let old = self.actions[sig - 1];
        if let Some(mut a) = new {
            if uncatchable(sig) {
                return Err(Errno::EINVAL);
            }
            a.mask &= !(bit(libc::SIGKILL as usize) | bit(libc::SIGSTOP as usize));
            self.actions[sig - 1] = a;
            // Setting SIG_IGN (or SIG_DFL of an ignore-by-default signal) discards a pending instance.
            if a.handler == SIG_IGN || (a.handler == SIG_DFL && default_action(sig) == DefaultAction::Ignore)
            {
                self.pending &= !bit(sig);
            }
        }
        Ok(old)
    }

    /// Marks `sig` pending (from `kill`/`tgkill` or a host signal).
    pub fn raise(&mut self, sig: usize, code: i32) {
        if (1..=NSIG).contains(&sig) {
            self.pending |= bit(sig);
            self.codes[sig - 1] = code;
        }
    }

    /// Sets the blocked mask (SIGKILL and SIGSTOP cannot be blocked).
    pub fn set_mask(&mut self, mask: u64) {
        self.mask = mask & !(bit(libc::SIGKILL as usize) | bit(libc::SIGSTOP as usize));
    }

    /// Installs a syscall's temporary mask, saving the caller's (`set_user_sigmask`).
    pub fn set_temporary_mask(&mut self, mask: u64) {
        if self.saved_mask.is_none() {
            self.saved_mask = Some(self.mask);
        }
        self.set_mask(mask);
    }

    /// End of a call with a temporary mask: restores the caller's mask now unless the call was
    /// interrupted by a signal, which is then delivered under the temporary mask first
    /// (`restore_saved_sigmask_unless`).
    pub fn end_temporary_mask(&mut self, interrupted: bool) {
        if !interrupted {
            self.restore_saved_mask();
        }
    }

    /// Puts the saved caller's mask back, if a temporary one is in force (`restore_saved_sigmask`).
    pub fn restore_saved_mask(&mut self) {
        if let Some(m) = self.saved_mask.take() {
            self.set_mask(m);
        }
    }

    /// The caller's mask saved under a temporary one, if any.
    pub fn saved_mask(&self) -> Option<u64> {
        self.saved_mask
    }

    /// The lowest pending signal that is not blocked. When none is and a temporary mask is still in
    /// force (its call was interrupted, but no handler ran), the saved mask is restored first and the
    /// pending set looked at again, as the kernel does before returning to user mode.
    pub fn next_deliverable(&mut self) -> Option<usize> {
        loop {
            let ready = self.pending & !self.mask;
            if ready != 0 {
                return Some(ready.trailing_zeros() as usize + 1);
            }
            let saved = self.saved_mask.take()?;
            self.set_mask(saved);
        }
    }

    /// True if a pending signal would interrupt a blocking syscall (deliverable and not ignored).
    pub fn interrupts(&self) -> bool {
        let mut ready = self.pending & !self.mask;
        while ready != 0 {
            let sig = ready.trailing_zeros() as usize + 1;
            ready &= ready - 1;
            if !self.ignored(sig) {
                return true;
            }
        }
        false
    }

    /// True if `sig` would be discarded on delivery.
    pub fn ignored(&self, sig: usize) -> bool {
        match self.action(sig) {
            Some(a) if a.handler == SIG_IGN => true,
            Some(a) if a.handler == SIG_DFL => default_action(sig) == DefaultAction::Ignore,
            _ => false,
        }
    }

    /// Whether the handler of `sig` asked for restartable syscalls.
    pub fn restarts(&self, sig: usize) -> bool {
        self.action(sig).is_some_and(|a| a.flags & SA_RESTART != 0)
    }

    /// Takes `sig` off the pending set and decides what happens; for a handler, returns the frame to
    /// write and updates `cpu` to enter the handler.
    pub fn deliver(
        &mut self,
        sig: usize,
        cpu: &mut CpuState,
        pid: u32,
        uid: u32,
    ) -> (Delivery, Option<SigFrame>) {
        self.pending &= !bit(sig);
        let Some(action) = self.action(sig) else {
            return (Delivery::Ignored, None);
        };
        match action.handler {
            SIG_IGN => return (Delivery::Ignored, None),
            SIG_DFL => {
                return match default_action(sig) {
                    DefaultAction::Ignore => (Delivery::Ignored, None),
                    DefaultAction::Terminate => (Delivery::Terminate, None),
                }
            }
            _ => {}
        }
        // Where the frame goes: below the red zone, or on the alternate stack.
        let mut sp = cpu.regs.rsp.wrapping_sub(128);
        let alt = self.altstack;
        let on_alt = alt.flags & SS_DISABLE == 0
            && cpu.regs.rsp > alt.sp
            && cpu.regs.rsp <= alt.sp.wrapping_add(alt.size);
        if action.flags & SA_ONSTACK != 0 && alt.flags & SS_DISABLE == 0 && !on_alt {
            sp = alt.sp.wrapping_add(alt.size);
        }
        let frame_addr = (sp.wrapping_sub(FRAME_SIZE) & !15).wrapping_sub(8);
        let mut f = vec![0u8; FRAME_SIZE as usize];
        let put = |f: &mut Vec<u8>, off: u64, v: u64| {
            f[off as usize..off as usize + 8].copy_from_slice(&v.to_le_bytes());
        };
        put(&mut f, 0, action.restorer);
        put(&mut f, 8, 0x6); // uc_flags: UC_SIGCONTEXT_SS | UC_STRICT_RESTORE_SS
        put(&mut f, 16, 0); // uc_link
        put(&mut f, 24, alt.sp);
        f[32..36].copy_from_slice(&(if on_alt { SS_ONSTACK } else { alt.flags }).to_le_bytes());
        put(&mut f, 40, alt.size);
        let r = &cpu.regs;
        let gregs = [
            r.r8, r.r9, r.r10, r.r11, r.r12, r.r13, r.r14, r.r15, r.rdi, r.rsi, r.rbp, r.rbx, r.rdx, r.rax,
            r.rcx, r.rsp, r.rip, r.rflags,
        ];
        for (i, v) in gregs.iter().enumerate() {
            put(&mut f, MCONTEXT_OFF + i as u64 * 8, *v);
        }
        // cs, gs, fs, ss (16 bits each)
        let segs = (u64::from(crate::memory::selectors::USER_CS))
            | (u64::from(crate::memory::selectors::USER_DS) << 48);
        put(&mut f, MCONTEXT_OFF + 18 * 8, segs);
        // err, trapno, oldmask, cr2, fpstate (NULL), reserved: zero. The mask the handler's return
        // restores is the caller's one saved under a temporary mask (which is cleared: delivered).
        let restore_mask = self.saved_mask.take().unwrap_or(self.mask);
        put(&mut f, MCONTEXT_OFF + 21 * 8, restore_mask);
        put(&mut f, SIGMASK_OFF, restore_mask);
        // siginfo: signo, errno, code, then pid and uid for SI_USER/SI_TKILL.
        let code = self.codes[sig - 1];
        f[SIGINFO_OFF as usize..SIGINFO_OFF as usize + 4].copy_from_slice(&(sig as i32).to_le_bytes());
        f[SIGINFO_OFF as usize + 8..SIGINFO_OFF as usize + 12].copy_from_slice(&code.to_le_bytes());
        f[SIGINFO_OFF as usize + 16..SIGINFO_OFF as usize + 20].copy_from_slice(&pid.to_le_bytes());
        f[SIGINFO_OFF as usize + 20..SIGINFO_OFF as usize + 24].copy_from_slice(&uid.to_le_bytes());

        // Enter the handler.
        let regs = cpu.regs_mut();
        regs.rsp = frame_addr;
        regs.rip = action.handler;
        regs.rdi = sig as u64;
        regs.rsi = frame_addr + SIGINFO_OFF;
        regs.rdx = frame_addr + 8;
        regs.rax = 0;
        regs.rflags &= !(0x100 | 0x400 | 0x1_0000); // TF, DF, RF
        cpu.set_user_segments();
        let mut block = action.mask;
        if action.flags & SA_NODEFER == 0 {
            block |= bit(sig);
        }
        self.set_mask(self.mask | block);
        if action.flags & SA_RESETHAND != 0 {
            self.actions[sig - 1] = Action::default();
        }
        (
            Delivery::Handler,
            Some(SigFrame {
                addr: frame_addr,
                bytes: f,
            }),
        )
    }

    /// `rt_sigreturn`: restores the context saved in the frame at `rsp - 8`.
    pub fn sigreturn(&mut self, frame: &[u8], cpu: &mut CpuState) -> Result<(), Errno> {
        if frame.len() < FRAME_SIZE as usize {
            return Err(Errno::EFAULT);
        }
        let get = |off: u64| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&frame[off as usize..off as usize + 8]);
            u64::from_le_bytes(b)
        };
        let g = |i: u64| get(MCONTEXT_OFF + i * 8);
        let old_flags = cpu.regs.rflags;
        let r = cpu.regs_mut();
        r.r8 = g(0);
        r.r9 = g(1);
        r.r10 = g(2);
        r.r11 = g(3);
        r.r12 = g(4);
        r.r13 = g(5);
        r.r14 = g(6);
        r.r15 = g(7);
        r.rdi = g(8);
        r.rsi = g(9);
        r.rbp = g(10);
        r.rbx = g(11);
        r.rdx = g(12);
        r.rax = g(13);
        r.rcx = g(14);
        r.rsp = g(15);
        r.rip = g(16);
        r.rflags = (old_flags & !FIX_EFLAGS) | (g(17) & FIX_EFLAGS) | 0x200 | 0x2;
        cpu.set_user_segments();
        self.set_mask(get(SIGMASK_OFF));
        Ok(())
    }
}

/// A signal frame to write to guest memory at `addr`.
#[derive(Debug, Clone)]
pub struct SigFrame {
    pub addr: u64,
    pub bytes: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu() -> CpuState {
        let regs = kvm_bindings::kvm_regs {
            rsp: 0x7f_0000,
            rip: 0x40_1234,
            rax: (-4i64) as u64,
            rbx: 7,
            rflags: 0x246,
            ..Default::default()
        };
        CpuState::for_tests(regs)
    }

    #[test]
    fn handler_frame_and_sigreturn_round_trip() {
        let mut s = SignalState::default();
        let act = Action {
            handler: 0x40_5000,
            flags: SA_RESTORER,
            restorer: 0x40_6000,
            mask: 0,
        };
        s.set_action(15, Some(act)).unwrap();
        s.raise(15, SI_USER);
        assert_eq!(s.next_deliverable(), Some(15));
        let mut c = cpu();
        let before = c.regs;
        let (d, frame) = s.deliver(15, &mut c, 42, 0);
        assert_eq!(d, Delivery::Handler);
        let frame = frame.unwrap();
        assert_eq!(frame.addr % 16, 8, "handler entry: (rsp + 8) is 16-byte aligned");
        assert!(frame.addr + FRAME_SIZE <= 0x7f_0000 - 128, "below the red zone");
        assert_eq!(c.regs.rip, 0x40_5000);
        assert_eq!(c.regs.rdi, 15);
        assert_eq!(c.regs.rsi, frame.addr + SIGINFO_OFF);
        assert_eq!(
            u64::from_le_bytes(frame.bytes[0..8].try_into().unwrap()),
            0x40_6000
        );
        assert_ne!(s.mask & bit(15), 0, "signal blocked during its handler");
        assert_eq!(s.next_deliverable(), None);
        // The handler returns: `ret` pops pretcode, then rt_sigreturn with rsp = frame + 8.
        s.sigreturn(&frame.bytes, &mut c).unwrap();
        assert_eq!(c.regs.rip, before.rip);
        assert_eq!(c.regs.rsp, before.rsp);
        assert_eq!(c.regs.rax, before.rax);
        assert_eq!(c.regs.rbx, 7);
        assert_eq!(s.mask, 0, "mask restored");
    }

    #[test]
    fn altstack_is_used_with_sa_onstack() {
        let mut s = SignalState {
            altstack: AltStack {
                sp: 0x20_0000,
                flags: 0,
                size: 0x2000,
            },
            ..SignalState::default()
        };
        s.set_action(
            11,
            Some(Action {
                handler: 0x40_5000,
                flags: SA_ONSTACK | SA_SIGINFO,
                restorer: 1,
                mask: 0,
            }),
        )
        .unwrap();
        s.raise(11, 0);
        let mut c = cpu();
        let (_, f) = s.deliver(11, &mut c, 1, 0);
        let f = f.unwrap();
        assert!(f.addr >= 0x20_0000 && f.addr + FRAME_SIZE <= 0x20_2000);
    }

    #[test]
    fn defaults_ignore_and_masks() {
        let mut s = SignalState::default();
        let mut c = cpu();
        s.raise(libc::SIGTERM as usize, 0);
        assert!(s.interrupts());
        assert_eq!(s.deliver(15, &mut c, 1, 0).0, Delivery::Terminate);
        s.raise(libc::SIGCHLD as usize, 0);
        assert!(!s.interrupts(), "SIGCHLD is ignored by default");
        assert_eq!(s.deliver(17, &mut c, 1, 0).0, Delivery::Ignored);
        s.set_action(
            2,
            Some(Action {
                handler: SIG_IGN,
                ..Action::default()
            }),
        )
        .unwrap();
        s.raise(2, 0);
        assert!(!s.interrupts());
        s.set_mask(u64::MAX);
        assert_eq!(s.mask & bit(9), 0, "SIGKILL cannot be blocked");
        s.raise(15, 0);
        assert_eq!(s.next_deliverable(), None, "everything pending is blocked");
        assert_eq!(s.set_action(9, Some(Action::default())), Err(Errno::EINVAL));
        assert_eq!(s.set_action(0, None), Err(Errno::EINVAL));
        assert_eq!(s.set_action(65, None), Err(Errno::EINVAL));
    }

    #[test]
    fn an_interrupting_signal_is_delivered_under_the_temporary_mask() {
        let (term, usr2) = (libc::SIGTERM as usize, libc::SIGUSR2 as usize);
        let mut s = SignalState::default();
        s.set_action(
            term,
            Some(Action {
                handler: 0x40_5000,
                flags: SA_RESTORER,
                restorer: 0x40_6000,
                mask: 0,
            }),
        )
        .unwrap();
        s.set_mask(bit(term));
        // A wait that ends normally: the caller's mask is back at once.
        s.set_temporary_mask(bit(usr2));
        s.end_temporary_mask(false);
        assert_eq!((s.mask, s.saved_mask()), (bit(term), None));
        // SIGTERM arrives during the wait its mask unblocks: still in force after the call returned.
        s.set_temporary_mask(bit(usr2));
        s.raise(term, SI_USER);
        assert!(s.interrupts());
        s.end_temporary_mask(true);
        assert_eq!(s.mask, bit(usr2), "the temporary mask stays until the delivery");
        assert_eq!(s.next_deliverable(), Some(term));
        let mut c = cpu();
        let (d, frame) = s.deliver(term, &mut c, 1, 0);
        assert_eq!(d, Delivery::Handler);
        let frame = frame.unwrap();
        let word =
            |off: u64| u64::from_le_bytes(frame.bytes[off as usize..off as usize + 8].try_into().unwrap());
        assert_eq!(word(SIGMASK_OFF), bit(term), "the frame holds the caller's mask");
        assert_eq!(word(MCONTEXT_OFF + 21 * 8), bit(term));
        assert_eq!(
            s.mask,
            bit(usr2) | bit(term),
            "handler: temporary mask plus the signal"
        );
        assert_eq!(s.saved_mask(), None);
        assert_eq!(s.next_deliverable(), None);
        s.sigreturn(&frame.bytes, &mut c).unwrap();
        assert_eq!(s.mask, bit(term), "rt_sigreturn: the caller's mask");
    }

    #[test]
    fn without_a_handler_the_saved_mask_comes_back_before_user_mode() {
        let (term, usr1, usr2) = (
            libc::SIGTERM as usize,
            libc::SIGUSR1 as usize,
            libc::SIGUSR2 as usize,
        );
        let mut s = SignalState::default();
        // Interrupted, but nothing deliverable any more: the next look restores the caller's mask.
        s.set_mask(bit(term));
        s.set_temporary_mask(0);
        s.end_temporary_mask(true);
        assert_eq!(s.next_deliverable(), None);
        assert_eq!((s.mask, s.saved_mask()), (bit(term), None));
        // A temporary mask stricter than the caller's: what it held back is deliverable once it is gone.
        s.set_mask(0);
        s.set_temporary_mask(bit(usr1) | bit(usr2));
        s.raise(usr1, SI_USER);
        s.end_temporary_mask(true);
        assert_eq!(s.next_deliverable(), Some(usr1));
        assert_eq!(s.mask, 0);
        // A default-terminate delivery leaves the saved mask alone (the guest ends).
        s.pending = 0;
        s.set_mask(bit(term));
        s.set_temporary_mask(0);
        s.raise(term, SI_USER);
        s.end_temporary_mask(true);
        assert_eq!(s.next_deliverable(), Some(term));
        assert_eq!(s.deliver(term, &mut cpu(), 1, 0).0, Delivery::Terminate);
        assert_eq!(s.saved_mask(), Some(bit(term)));
    }
}
