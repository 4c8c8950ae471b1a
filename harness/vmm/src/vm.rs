//! The microVM: builds a guest from an ELF (cold start) or a snapshot (restore) and runs the vCPU loop.
//!
//! Cold start: the program's segments are loaded (a PIE at [`DYN_BASE`]); a dynamically linked program's
//! interpreter (`PT_INTERP`, opened in the guest root) is loaded in the mmap area and started instead,
//! with `AT_BASE` at its base and `AT_PHDR`/`AT_PHNUM`/`AT_ENTRY` describing the program, as the kernel
//! does; the interpreter then maps the libraries itself through `openat`/`mmap`.
//!
//! Loop: push dirty registers, `KVM_RUN`, read registers, then by exit: a syscall goes to the
//! [`SyscallTable`]; an exception ends the guest with a fault report ([`crate::faults`]); an interrupted
//! run only gives pending signals their chance. After every exit pending signals are delivered
//! ([`crate::signals`]). The loop ends when the guest exits or dies; VMM-internal failures are errors.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use crate::can::Interfaces;
use crate::config::VmConfig;
use crate::error::VmmError;
use crate::fdtable::FdTable;
use crate::fs::GuestRoot;
use crate::guest::{Guest, GuestClock, GuestExit, ProcInfo};
use crate::loader::{auxv, build_stack, Elf, ElfError, StackSpec};
use crate::memory::{
    build_page_tables, set_user_pages, write_system_tables, GuestRam, Layout, Prot, KSTACK_TOP, PAGE_SIZE,
    REVOKE_STUB_OFFSET, STUB_ADDR, USER_START,
};
use crate::mm::{page_up, AddressSpace, Kind};
use crate::signals::{Delivery, HostSignals, SignalState};
use crate::snapshot;
use crate::syscalls::{Dispatched, SyscallTable};
use crate::vcpu::{kernel_code_segment, kernel_data_segment, CpuState, Exit, Vcpu};

/// Where a PIE or static-pie (`ET_DYN`) executable is loaded.
pub const DYN_BASE: u64 = 0x40_0000;
/// Signal frames whose FPU state the VMM keeps at most (older ones are forgotten).
const MAX_FPU_FRAMES: usize = 64;

/// A guest ready to run.
pub struct Vm {
    // Field order matters: the vCPU (and its VM and memory slot) is dropped before guest memory.
    vcpu: Vcpu,
    guest: Guest,
    cpu: CpuState,
    table: SyscallTable,
    host_signals: Rc<HostSignals>,
    snapshot_dir: Option<PathBuf>,
    /// Restored from a snapshot taken in a syscall: serve that syscall before the first run.
    pending_syscall: bool,
    /// False once the revocation stub failed on this host (then revocations are best effort).
    revoke_stub_works: bool,
}

/// Stack size for a guest with `mem` bytes of RAM: 1/8 of RAM, between 1 and 8 MiB.
pub fn stack_size_for(mem: u64) -> u64 {
    (mem / 8).clamp(1 << 20, 8 << 20)
}

fn host_random16() -> [u8; 16] {
    let mut r = [0u8; 16];
    // SAFETY: getrandom fills at most 16 bytes of the valid buffer.
    let n = unsafe { libc::getrandom(r.as_mut_ptr().cast(), 16, 0) };
    if n != 16 {
        // Fall back to time-derived bytes; AT_RANDOM only seeds stack protectors and hash maps.
        let t = crate::guest::host_clock_ns(libc::CLOCK_MONOTONIC) as u128;
        r.copy_from_slice(&t.to_le_bytes());
    }
    r
}

fn hwcap() -> u64 {
    u64::from(std::arch::x86_64::__cpuid(1).edx)
}

/// A loaded ELF image.
struct Loaded {
    /// Entry point (biased).
    entry: u64,
    /// Address of the program headers in the image.
    phdr: u64,
    phnum: u16,
    /// First page above the image.
    end: u64,
    /// Where `ET_DYN` was moved by (0 for `ET_EXEC`).
    bias: u64,
}

/// Loads the segments of `elf` (read from `file`, named `name` in errors) at `base` (for `ET_DYN`).
fn load_image(
    file: &File,
    name: &str,
    elf: &Elf,
    base: u64,
    ram: &mut GuestRam,
    mm: &mut AddressSpace,
) -> Result<Loaded, VmmError> {
    let bias = elf.bias(base);
    let lo = elf.min_vaddr.wrapping_add(bias);
    let hi = elf.max_vaddr.wrapping_add(bias);
    let limit = mm.stack_bottom.saturating_sub(crate::mm::STACK_GUARD);
    if lo < USER_START || hi > limit || hi < lo {
        return Err(ElfError::DoesNotFit(format!(
            "{name} needs {lo:#x}..{hi:#x} but user memory is {USER_START:#x}..{limit:#x} (raise --mem?)"
        ))
        .into());
    }
    for (start, end, prot) in elf.page_protections(bias) {
        mm.map_fixed(ram, start, end - start, prot, Kind::Elf)
            .map_err(|errno| VmmError::MapElf { start, end, errno })?;
    }
    for seg in elf.load_segments(bias) {
        if seg.filesz > 0 {
            ram.read_from_file(seg.vaddr, seg.filesz, file, seg.offset)
                .map_err(|source| ElfError::Io {
                    path: name.to_string(),
                    source,
                })?;
        }
    }
    let phdr = elf
        .phdr_addr(bias)
        .ok_or_else(|| ElfError::Malformed("program headers are not inside a loaded segment".into()))?;
    let end = page_up(hi).ok_or_else(|| ElfError::DoesNotFit("image end overflows".into()))?;
    Ok(Loaded {
        entry: elf.entry.wrapping_add(bias),
        phdr,
        phnum: elf.phnum,
        end,
        bias,
    })
}

/// Opens and parses the program interpreter `path` from the guest root.
fn open_interpreter(root: &GuestRoot, path: &str) -> Result<(File, Elf), VmmError> {
    let fail = |reason: String| ElfError::Interpreter {
        path: path.to_string(),
        reason,
    };
    if root.host_path().is_none() {
        return Err(ElfError::NoRoot {
            interpreter: path.to_string(),
        }
        .into());
    }
    let (file, kind) = root
        .open_path(path, libc::O_RDONLY)
        .map_err(|e| fail(format!("cannot open it in the guest root: {e}")))?;
    if kind != crate::fs::FileKind::Regular {
        return Err(fail("not a regular file".into()).into());
    }
    let elf = Elf::parse(&file).map_err(|e| fail(e.to_string()))?;
    if elf.interp.is_some() {
        return Err(fail("it names an interpreter itself".into()).into());
    }
    Ok((file, elf))
}

impl Vm {
    /// Cold start: a fresh guest running `config.elf` from its entry point.
    pub fn boot(config: &VmConfig) -> Result<Vm, VmmError> {
        let elf_path = config.elf.clone().ok_or(VmmError::MissingElf)?;
        let layout = Layout::new(config.mem_size)?;
        let mut ram = GuestRam::anonymous(config.mem_size)?;
        build_page_tables(&mut ram, &layout)?;
        write_system_tables(&mut ram)?;
        let mut mm = AddressSpace::new(layout, stack_size_for(config.mem_size))?;
        let root = GuestRoot::open(config.root.as_deref())?;
        let elf_name = elf_path.display().to_string();
        let file = File::open(&elf_path).map_err(|source| ElfError::Io {
            path: elf_name.clone(),
            source,
        })?;
        let elf = Elf::parse(&file)?;
        let exec_stack = elf.exec_stack;
        let main = load_image(&file, &elf_name, &elf, DYN_BASE, &mut ram, &mut mm)?;
        mm.init_brk(main.end);

        let stack_prot = if exec_stack {
            Prot(Prot::READ | Prot::WRITE | Prot::EXEC)
        } else {
            Prot::RW
        };
        let (sb, st) = (mm.stack_bottom, mm.stack_top);
        mm.map_fixed(&mut ram, sb, st - sb, stack_prot, Kind::Stack)
            .map_err(VmmError::MapStack)?;
        // A dynamically linked program: its interpreter (from the guest root) goes into the mmap area,
        // where the kernel puts it too, and runs first; it finds the program through the auxv.
        let mut entry = main.entry;
        let mut interp_base = 0;
        if let Some(path) = elf.interpreter(&file)? {
            let (ifile, ielf) = open_interpreter(&root, &path)?;
            let base = if ielf.is_dyn {
                mm.find_free(ielf.span(), 0).ok_or_else(|| {
                    ElfError::DoesNotFit(format!("no room for the interpreter {path} (raise --mem?)"))
                })?
            } else {
                0
            };
            let interp = load_image(&ifile, &path, &ielf, base, &mut ram, &mut mm)?;
            entry = interp.entry;
            interp_base = interp.bias.wrapping_add(ielf.min_vaddr);
            tracing::debug!(interpreter = %path, base = format_args!("{interp_base:#x}"), "interpreter loaded");
        }
        let exe_name = elf_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "guest".into());
        // SAFETY: these identity calls have no preconditions.
        let (uid, gid, pid) = unsafe { (libc::getuid(), libc::getgid(), libc::getpid() as u32) };
        let mut argv = vec![exe_name.clone().into_bytes()];
        argv.extend(config.args.iter().map(|a| a.clone().into_bytes()));
        let spec = StackSpec {
            argv,
            envp: config.env.iter().map(|e| e.clone().into_bytes()).collect(),
            execfn: format!("/{exe_name}").into_bytes(),
            aux: vec![
                (auxv::AT_PHDR, main.phdr),
                (auxv::AT_PHENT, 56),
                (auxv::AT_PHNUM, u64::from(main.phnum)),
                (auxv::AT_PAGESZ, PAGE_SIZE),
                (auxv::AT_BASE, interp_base),
                (auxv::AT_FLAGS, 0),
                (auxv::AT_ENTRY, main.entry),
                (auxv::AT_UID, u64::from(uid)),
                (auxv::AT_EUID, u64::from(uid)),
                (auxv::AT_GID, u64::from(gid)),
                (auxv::AT_EGID, u64::from(gid)),
                (auxv::AT_SECURE, 0),
                (auxv::AT_HWCAP, hwcap()),
                (auxv::AT_HWCAP2, 0),
                (auxv::AT_CLKTCK, 100),
                (auxv::AT_MINSIGSTKSZ, crate::signals::FRAME_SIZE + 1024),
            ],
            random: host_random16(),
        };
        let stack = build_stack(&spec, st, sb)?;
        ram.write(stack.sp, &stack.bytes)?;

        let vcpu = Vcpu::create(ram.host_address(), layout)?;
        let cpu = vcpu.initial_state(entry, stack.sp)?;
        let host_signals = Rc::new(HostSignals::install().map_err(VmmError::SignalHandlers)?);
        let guest = Guest {
            ram,
            mm,
            fds: FdTable::with_stdio(),
            root,
            ifaces: Interfaces::new(config.can.clone()),
            signals: SignalState::default(),
            clock: GuestClock::default(),
            info: ProcInfo {
                pid,
                uid,
                gid,
                exe_name: exe_name.clone(),
                comm: exe_name.into_bytes().into_iter().take(15).collect(),
                tid_address: 0,
                robust_list: (0, 0),
                umask: 0o022,
            },
            host_signals: Some(Rc::clone(&host_signals)),
            trace: config.trace_syscalls,
            unknown_seen: Default::default(),
            exit: None,
            snapshot_before_bind: config.snapshot_at_bind.is_some(),
            skip_return: false,
            fpu_frames: Vec::new(),
            fpu_to_restore: None,
        };
        tracing::debug!(
            entry = format_args!("{entry:#x}"),
            sp = format_args!("{:#x}", stack.sp),
            "guest loaded"
        );
        Ok(Vm {
            vcpu,
            guest,
            cpu,
            table: SyscallTable::linux(),
            host_signals,
            snapshot_dir: config.snapshot_at_bind.clone(),
            pending_syscall: false,
            revoke_stub_works: true,
        })
    }

    /// Restore: the guest of a snapshot directory, memory mapped copy-on-write from its memory file.
    pub fn restore(config: &VmConfig, dir: &Path) -> Result<Vm, VmmError> {
        let host_signals = Rc::new(HostSignals::install().map_err(VmmError::SignalHandlers)?);
        let t0 = std::time::Instant::now();
        let restored = snapshot::load(dir, config, Rc::clone(&host_signals))?;
        let t_load = t0.elapsed();
        let vcpu = Vcpu::create(restored.guest.ram.host_address(), restored.guest.mm.layout)?;
        vcpu.restore_extended(&restored.ext)?;
        tracing::debug!(
            load_us = t_load.as_micros() as u64,
            vcpu_us = (t0.elapsed() - t_load).as_micros() as u64,
            "restored"
        );
        let mut cpu = restored.cpu;
        let mut vm = Vm {
            vcpu,
            guest: restored.guest,
            cpu: cpu.clone(),
            table: SyscallTable::linux(),
            host_signals,
            snapshot_dir: config.snapshot_at_bind.clone(),
            pending_syscall: restored.pending_syscall,
            revoke_stub_works: true,
        };
        vm.vcpu.put_all(&mut cpu)?;
        vm.cpu = cpu;
        vm.guest.snapshot_before_bind = config.snapshot_at_bind.is_some();
        Ok(vm)
    }

    /// The guest state (tests, snapshot).
    pub fn guest(&self) -> &Guest {
        &self.guest
    }

    /// Runs until the guest exits or dies.
    pub fn run(&mut self) -> Result<GuestExit, VmmError> {
        self.host_signals
            .set_immediate_exit(self.vcpu.immediate_exit_ptr());
        let result = self.run_loop();
        self.host_signals.set_immediate_exit(std::ptr::null_mut());
        result
    }

    fn run_loop(&mut self) -> Result<GuestExit, VmmError> {
        if std::mem::take(&mut self.pending_syscall) {
            if let Some(exit) = self.handle_syscall()? {
                return Ok(exit);
            }
        }
        loop {
            if let Some(fpu) = self.guest.fpu_to_restore.take() {
                self.vcpu.restore_extended(&fpu)?;
            }
            let revoked = self.guest.mm.take_revocations();
            if !revoked.is_empty() {
                self.apply_revocations(&revoked)?;
            }
            self.vcpu.put(&mut self.cpu)?;
            let exit = self.vcpu.run();
            self.cpu = self.vcpu.fetch()?;
            match exit {
                Exit::Syscall if self.cpu.regs.rip != STUB_ADDR + 2 => {
                    // An `out` to the syscall port from guest code (the TSS bitmap allows it at CPL3 for
                    // the PVM stub): on Linux this is a #GP, so it is one here too.
                    let rip = self.cpu.regs.rip.wrapping_sub(2);
                    let report = format!(
                        "#GP general protection (vector 13) at rip={rip:#x} rsp={:#x} (I/O instruction in user mode) -> SIGSEGV",
                        self.cpu.regs.rsp
                    );
                    eprintln!("agl-vmm: guest fault: {report}");
                    return Ok(GuestExit::Killed {
                        signal: libc::SIGSEGV,
                        report,
                    });
                }
                Exit::Syscall => {
                    if let Some(exit) = self.handle_syscall()? {
                        return Ok(exit);
                    }
                }
                Exit::Exception(vector) => {
                    let fault = crate::faults::read_fault(vector, &self.cpu, &self.guest.ram);
                    let report = fault.report();
                    eprintln!("agl-vmm: guest fault: {report}");
                    return Ok(GuestExit::Killed {
                        signal: fault.signal(),
                        report,
                    });
                }
                Exit::RevokeDone => return Err(VmmError::StrayRevokeExit),
                Exit::Interrupted => {
                    if self.cpu.in_user_mode() {
                        if let Some(exit) = self.deliver_signals()? {
                            return Ok(exit);
                        }
                    }
                }
                Exit::Unexpected(what) => {
                    let r = &self.cpu.regs;
                    return Err(VmmError::UnexpectedExit {
                        what,
                        rip: r.rip,
                        rsp: r.rsp,
                        cs: self.cpu.sregs.cs.selector,
                        cr2: self.cpu.sregs.cr2,
                    });
                }
            }
        }
    }

    /// Makes revoked mappings take effect: runs the CPL0 revocation stub, which clears the page-table
    /// entries of each range through the guest's MMU and reloads CR3, then writes back the entries the
    /// region map says the pages now have. The interrupted user context is saved and restored around it.
    fn apply_revocations(&mut self, ranges: &[(u64, u64)]) -> Result<(), VmmError> {
        if !self.revoke_stub_works {
            for &(start, end) in ranges {
                self.rewrite_ptes(start, end);
            }
            return Ok(());
        }
        let saved = self.cpu.clone();
        let t0 = std::time::Instant::now();
        for &(start, end) in ranges {
            let Some(pte) = self.guest.mm.layout.pte_addr(start) else {
                continue;
            };
            let r = self.cpu.regs_mut();
            r.rdi = pte;
            r.rcx = (end - start) / PAGE_SIZE;
            r.rax = 0;
            r.rip = STUB_ADDR + REVOKE_STUB_OFFSET;
            r.rsp = KSTACK_TOP;
            r.rflags = 0x2;
            let s = self.cpu.sregs_mut();
            s.cs = kernel_code_segment();
            s.ss = kernel_data_segment();
            self.vcpu.put(&mut self.cpu)?;
            let exit = self.vcpu.run();
            self.cpu = self.vcpu.fetch()?;
            if exit != Exit::RevokeDone {
                // Keep going without the stub: mappings stay correct, revocations may lag on this host.
                tracing::warn!(
                    exit = ?exit,
                    "the page-table revocation stub did not complete; unmapped pages may stay accessible to the guest"
                );
                self.revoke_stub_works = false;
            }
            self.rewrite_ptes(start, end);
        }
        self.cpu = saved;
        self.cpu.mark_dirty();
        tracing::debug!(
            ranges = ranges.len(),
            pages = ranges.iter().map(|(s, e)| (e - s) / PAGE_SIZE).sum::<u64>(),
            us = t0.elapsed().as_micros() as u64,
            "mappings revoked"
        );
        Ok(())
    }

    /// Writes the page-table entries of `[start, end)` from the region map (zero where nothing is mapped).
    fn rewrite_ptes(&mut self, start: u64, end: u64) {
        let layout = self.guest.mm.layout;
        let mut at = start;
        while at < end {
            let (stop, prot) = match self.guest.mm.region_at(at) {
                Some(r) => (r.end.min(end), r.prot),
                None => {
                    let next = self
                        .guest
                        .mm
                        .regions()
                        .map(|r| r.start)
                        .find(|&s| s > at)
                        .unwrap_or(end);
                    (next.min(end), Prot::NONE)
                }
            };
            set_user_pages(&mut self.guest.ram, &layout, at, stop - at, prot);
            at = stop;
        }
    }

    /// Serves the syscall the vCPU is stopped on; `Some` when the guest ended.
    fn handle_syscall(&mut self) -> Result<Option<GuestExit>, VmmError> {
        loop {
            match self.table.dispatch(&mut self.guest, &mut self.cpu) {
                Dispatched::Resume => return self.deliver_signals(),
                Dispatched::Exit => {
                    return Ok(Some(self.guest.exit.clone().unwrap_or(GuestExit::Exited(0))));
                }
                Dispatched::SnapshotFirst => {
                    self.guest.snapshot_before_bind = false;
                    if let Some(dir) = self.snapshot_dir.clone() {
                        let ext = self.vcpu.save_extended()?;
                        let t0 = std::time::Instant::now();
                        snapshot::save(&dir, &self.guest, &self.cpu, &ext)?;
                        tracing::info!(dir = %dir.display(), ms = t0.elapsed().as_millis() as u64, "snapshot written before bind");
                    }
                }
            }
        }
    }

    /// Delivers pending, unblocked signals; `Some` when one killed the guest.
    fn deliver_signals(&mut self) -> Result<Option<GuestExit>, VmmError> {
        self.guest.collect_host_signals();
        while let Some(sig) = self.guest.signals.next_deliverable() {
            let (delivery, frame) =
                self.guest
                    .signals
                    .deliver(sig, &mut self.cpu, self.guest.info.pid, self.guest.info.uid);
            match delivery {
                Delivery::Ignored => {}
                Delivery::Terminate => {
                    let name = crate::signals::name(sig as i32);
                    eprintln!("agl-vmm: guest killed by {name}");
                    return Ok(Some(GuestExit::Killed {
                        signal: sig as i32,
                        report: format!("killed by {name}"),
                    }));
                }
                Delivery::Handler => {
                    let Some(frame) = frame else { continue };
                    if self.guest.write_user(frame.addr, &frame.bytes).is_err() {
                        let report = format!(
                            "cannot write the {} frame at {:#x} (stack overflow?)",
                            crate::signals::name(sig as i32),
                            frame.addr
                        );
                        eprintln!("agl-vmm: guest killed by SIGSEGV: {report}");
                        return Ok(Some(GuestExit::Killed {
                            signal: libc::SIGSEGV,
                            report,
                        }));
                    }
                    // deliver() changed only the general registers: this is the interrupted FPU state.
                    let fpu = self.vcpu.save_extended()?;
                    if self.guest.fpu_frames.len() >= MAX_FPU_FRAMES {
                        self.guest.fpu_frames.remove(0);
                    }
                    self.guest.fpu_frames.push((frame.addr, fpu));
                }
            }
        }
        Ok(None)
    }
}
