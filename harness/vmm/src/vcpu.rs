//! KVM: the VM, its single vCPU, the CPU state of a 64-bit CPL3 process, the run loop's exits.
//!
//! Setup follows the usual order (create VM, TSS address, memory slot, vCPU, CPUID, special registers,
//! MSRs, XCR0, general registers). The vCPU starts directly in 64-bit long mode at CPL3 with paging on
//! (no real-mode or 32-bit boot path, no irqchip, no interrupts: nothing asynchronous happens in the guest).
//!
//! * `syscall` enters the stub at `LSTAR`, which exits with `out` to [`SYSCALL_PORT`]; the VMM serves the
//!   call and returns by setting RIP = RCX, RFLAGS = R11 and the user CS/SS itself. (On PVM the stub runs
//!   at CPL3, see [`crate::memory`]; on hardware KVM at CPL0. Both work the same from here.)
//! * An exception enters its IDT stub, which exits with `out` to `EXCEPTION_PORT_BASE + vector`.
//! * Registers travel through `KVM_CAP_SYNC_REGS` (the `kvm_run` page) where the host offers it, so a
//!   syscall round trip costs one `KVM_RUN` ioctl and no register ioctls; otherwise through
//!   `KVM_GET/SET_REGS` and `KVM_GET/SET_SREGS`.
//! * A host signal aimed at the VMM makes `KVM_RUN` return `EINTR` ([`Exit::Interrupted`]); the signal
//!   handler also sets `immediate_exit` through [`Vcpu::immediate_exit_ptr`] to close the race with entry.

use kvm_bindings::{
    kvm_fpu, kvm_msr_entry, kvm_regs, kvm_segment, kvm_sregs, kvm_userspace_memory_region, kvm_xcrs,
    kvm_xsave, Msrs, KVM_MAX_CPUID_ENTRIES,
};
use kvm_ioctls::{Cap, Kvm, SyncReg, VcpuExit, VcpuFd, VmFd};

use crate::memory::{
    selectors, Layout, EXCEPTION_PORT_BASE, EXCEPTION_VECTORS, GDT_ADDR, IDT_ADDR, REVOKE_PORT, STUB_ADDR,
    SYSCALL_PORT, TSS_ADDR, TSS_LIMIT,
};

pub const MSR_EFER: u32 = 0xc000_0080;
pub const MSR_STAR: u32 = 0xc000_0081;
pub const MSR_LSTAR: u32 = 0xc000_0082;
pub const MSR_CSTAR: u32 = 0xc000_0083;
pub const MSR_SFMASK: u32 = 0xc000_0084;
pub const MSR_FS_BASE: u32 = 0xc000_0100;
pub const MSR_GS_BASE: u32 = 0xc000_0101;
pub const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
/// MSRs saved in snapshots (FS/GS base are also in the segment registers).
pub const SAVED_MSRS: [u32; 7] = [
    MSR_STAR,
    MSR_LSTAR,
    MSR_CSTAR,
    MSR_SFMASK,
    MSR_FS_BASE,
    MSR_GS_BASE,
    MSR_KERNEL_GS_BASE,
];

/// RFLAGS bits cleared on `syscall` entry: TF, IF, DF, IOPL, NT, AC (as Linux does).
const SFMASK: u64 = 0x4_7700;
/// RFLAGS a new process starts with: IF and the reserved bit 1.
pub const USER_RFLAGS: u64 = 0x202;
const CR0: u64 = 0x8005_0033; // PG | AM | WP | NE | ET | MP | PE
const CR4_PAE: u64 = 1 << 5;
const CR4_OSFXSR: u64 = 1 << 9;
const CR4_OSXMMEXCPT: u64 = 1 << 10;
const CR4_OSXSAVE: u64 = 1 << 18;
const EFER: u64 = 0xd01; // NXE | LMA | LME | SCE
/// KVM's (Intel) TSS area, above guest RAM.
const KVM_TSS_ADDRESS: usize = 0xfffb_d000;

/// Errors from KVM.
#[derive(Debug, thiserror::Error)]
pub enum KvmError {
    #[error("cannot open /dev/kvm: {0} (is the kvm module loaded and /dev/kvm readable and writable by this user? try `setfacl -m u:$USER:rw /dev/kvm` or add the user to the `kvm` group)")]
    Open(vmm_sys_util::errno::Error),
    #[error("KVM API version {0} is not 12")]
    ApiVersion(i32),
    #[error("KVM ioctl {what} failed: {source}")]
    Ioctl {
        what: &'static str,
        source: vmm_sys_util::errno::Error,
    },
    #[error("KVM does not support {0}")]
    Missing(&'static str),
}

fn ioctl(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> KvmError {
    move |source| KvmError::Ioctl { what, source }
}

/// What kind of KVM this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKind {
    /// PVM (`kvm_pvm`): pagetable-based nested KVM; CPL3 native, CPL0 emulated.
    Pvm,
    /// Hardware virtualization (VMX/SVM).
    Hardware,
}

impl HostKind {
    pub fn detect() -> HostKind {
        if std::path::Path::new("/sys/module/kvm_pvm").exists() {
            HostKind::Pvm
        } else {
            HostKind::Hardware
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            HostKind::Pvm => "PVM nested, CPL0 emulated",
            HostKind::Hardware => "hardware virtualization",
        }
    }
}

/// Checks that /dev/kvm can create a VM and a vCPU.
pub fn probe() -> Result<HostKind, KvmError> {
    let kvm = Kvm::new().map_err(KvmError::Open)?;
    if kvm.get_api_version() != 12 {
        return Err(KvmError::ApiVersion(kvm.get_api_version()));
    }
    let vm = kvm.create_vm().map_err(ioctl("KVM_CREATE_VM"))?;
    vm.create_vcpu(0).map_err(ioctl("KVM_CREATE_VCPU"))?;
    Ok(HostKind::detect())
}

/// Why `KVM_RUN` returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// The guest executed `syscall`.
    Syscall,
    /// The guest raised exception `vector`.
    Exception(u8),
    /// The revocation stub finished.
    RevokeDone,
    /// A host signal interrupted `KVM_RUN` (or `immediate_exit` was set).
    Interrupted,
    /// Anything else (triple fault, unexpected port, internal error...).
    Unexpected(String),
}

/// The vCPU registers as the VMM works on them between two runs.
#[derive(Clone)]
pub struct CpuState {
    pub regs: kvm_regs,
    pub sregs: kvm_sregs,
    regs_dirty: bool,
    sregs_dirty: bool,
}

impl CpuState {
    pub fn regs_mut(&mut self) -> &mut kvm_regs {
        self.regs_dirty = true;
        &mut self.regs
    }
    pub fn sregs_mut(&mut self) -> &mut kvm_sregs {
        self.sregs_dirty = true;
        &mut self.sregs
    }

    /// Marks everything for writing back to KVM before the next run.
    pub fn mark_dirty(&mut self) {
        self.regs_dirty = true;
        self.sregs_dirty = true;
    }

    /// Returns from a syscall to user mode with `value` in RAX (what `sysretq` would do).
    pub fn return_to_user(&mut self, value: u64) {
        let r = self.regs_mut();
        r.rax = value;
        r.rip = r.rcx;
        r.rflags = (r.r11 & !0x3_0000) | 0x2; // clear RF and VM, keep the reserved bit
        self.set_user_segments();
    }

    /// Puts CS/SS back to the user selectors (CPL3).
    pub fn set_user_segments(&mut self) {
        let s = self.sregs_mut();
        s.cs = user_code_segment();
        s.ss = user_data_segment();
    }

    /// True while the vCPU runs the guest's own code (CPL3 and not in the VMM's stub page; on PVM the
    /// syscall stub itself runs at CPL3).
    pub fn in_user_mode(&self) -> bool {
        self.sregs.cs.selector & 3 == 3 && !in_stub_page(self.regs.rip)
    }

    pub fn fs_base(&self) -> u64 {
        self.sregs.fs.base
    }

    /// A saved state (snapshot), to be pushed to KVM before the first run.
    pub fn from_saved(regs: kvm_regs, sregs: kvm_sregs) -> CpuState {
        CpuState {
            regs,
            sregs,
            regs_dirty: true,
            sregs_dirty: true,
        }
    }

    /// A CPU state with the given registers and default segment registers (unit tests).
    #[cfg(test)]
    pub fn for_tests(regs: kvm_regs) -> CpuState {
        CpuState {
            regs,
            sregs: kvm_sregs::default(),
            regs_dirty: false,
            sregs_dirty: false,
        }
    }
}

/// True if `rip` lies in the VMM's stub page.
pub fn in_stub_page(rip: u64) -> bool {
    (STUB_ADDR..STUB_ADDR + crate::memory::PAGE_SIZE).contains(&rip)
}

/// The 64-bit kernel code segment (selector 0x08).
pub fn kernel_code_segment() -> kvm_segment {
    kvm_segment {
        selector: selectors::KERNEL_CS,
        type_: 11,
        dpl: 0,
        ..user_code_segment()
    }
}

/// The kernel data segment (selector 0x10).
pub fn kernel_data_segment() -> kvm_segment {
    kvm_segment {
        selector: selectors::KERNEL_DS,
        dpl: 0,
        ..user_data_segment()
    }
}

/// The 64-bit user code segment (selector 0x2b).
pub fn user_code_segment() -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector: selectors::USER_CS,
        type_: 11,
        present: 1,
        dpl: 3,
        db: 0,
        s: 1,
        l: 1,
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// The user data segment (selector 0x23).
pub fn user_data_segment() -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector: selectors::USER_DS,
        type_: 3,
        present: 1,
        dpl: 3,
        db: 1,
        s: 1,
        l: 0,
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// vCPU state beyond the general and segment registers, for snapshots and signal frames.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ExtendedState {
    /// `KVM_GET_XSAVE` area (x87, SSE, AVX...; 1024 words), when the host has XSAVE.
    pub xsave: Option<Vec<u32>>,
    /// Legacy FPU state (the bytes of `struct kvm_fpu`), used when XSAVE is not available.
    pub fpu: Option<Vec<u8>>,
    pub xcrs: Option<kvm_xcrs>,
    /// (index, value) of [`SAVED_MSRS`].
    pub msrs: Vec<(u32, u64)>,
}

/// The VM with its single vCPU.
pub struct Vcpu {
    _kvm: Kvm,
    _vm: VmFd,
    fd: VcpuFd,
    sync_regs: bool,
    has_xsave: bool,
    pub host: HostKind,
    layout: Layout,
}

impl Vcpu {
    /// Creates the VM over `host_addr..+layout.mem_size` and a vCPU in long mode at CPL3.
    ///
    /// The register state is not set yet: call [`Vcpu::initial_state`] and [`Vcpu::put`], or
    /// [`Vcpu::restore`].
    pub fn create(host_addr: u64, layout: Layout) -> Result<Vcpu, KvmError> {
        let kvm = Kvm::new().map_err(KvmError::Open)?;
        if kvm.get_api_version() != 12 {
            return Err(KvmError::ApiVersion(kvm.get_api_version()));
        }
        if !kvm.check_extension(Cap::UserMemory) {
            return Err(KvmError::Missing("user memory regions"));
        }
        let vm = kvm.create_vm().map_err(ioctl("KVM_CREATE_VM"))?;
        // Intel needs a TSS area outside guest RAM for real-mode emulation; harmless elsewhere.
        if let Err(e) = vm.set_tss_address(KVM_TSS_ADDRESS) {
            tracing::debug!(error = %e, "KVM_SET_TSS_ADDR failed (not needed on this host)");
        }
        let region = kvm_userspace_memory_region {
            slot: 0,
            flags: 0,
            guest_phys_addr: 0,
            memory_size: layout.mem_size,
            userspace_addr: host_addr,
        };
        // SAFETY: `host_addr..+mem_size` is a live mapping owned by the caller's `GuestRam`, which outlives
        // this VM (the `Vm` struct owns both and drops the vCPU first).
        unsafe { vm.set_user_memory_region(region) }.map_err(ioctl("KVM_SET_USER_MEMORY_REGION"))?;
        let mut fd = vm.create_vcpu(0).map_err(ioctl("KVM_CREATE_VCPU"))?;

        let mut cpuid = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(ioctl("KVM_GET_SUPPORTED_CPUID"))?;
        let mut has_xsave = false;
        let mut xcr0 = 0x3u64;
        for e in cpuid.as_mut_slice() {
            if e.function == 1 {
                has_xsave = e.ecx & (1 << 26) != 0;
                // Initial APIC id 0, one logical processor.
                e.ebx &= 0x0000_ffff;
                e.ebx |= 1 << 16;
            }
            if e.function == 0xd && e.index == 0 {
                // x87, SSE, AVX, AVX-512 (opmask, ZMM_Hi256, Hi16_ZMM); no AMX or PKRU.
                xcr0 = u64::from(e.eax) & 0xe7 | 0x3;
            }
        }
        fd.set_cpuid2(&cpuid).map_err(ioctl("KVM_SET_CPUID2"))?;
        has_xsave &= kvm.check_extension(Cap::Xsave) && kvm.check_extension(Cap::Xcrs);

        let sync_regs = kvm.check_extension(Cap::SyncRegs);
        if sync_regs {
            fd.set_sync_valid_reg(SyncReg::Register);
            fd.set_sync_valid_reg(SyncReg::SystemRegister);
        }
        let vcpu = Vcpu {
            _kvm: kvm,
            _vm: vm,
            fd,
            sync_regs,
            has_xsave,
            host: HostKind::detect(),
            layout,
        };
        let msrs = vec![
            (
                MSR_STAR,
                (u64::from(selectors::USER_CS32 & !3) << 48) | (u64::from(selectors::KERNEL_CS) << 32),
            ),
            (MSR_LSTAR, STUB_ADDR),
            (MSR_CSTAR, STUB_ADDR),
            (MSR_SFMASK, SFMASK),
            (MSR_KERNEL_GS_BASE, 0),
        ];
        if has_xsave {
            vcpu.set_xcr0(xcr0)?;
        }
        vcpu.set_msrs(&msrs)?;
        tracing::debug!(sync_regs, has_xsave, xcr0 = format_args!("{xcr0:#x}"), host = ?vcpu.host, "vCPU created");
        Ok(vcpu)
    }

    fn set_xcr0(&self, value: u64) -> Result<(), KvmError> {
        let mut xcrs = kvm_xcrs {
            nr_xcrs: 1,
            ..Default::default()
        };
        xcrs.xcrs[0].xcr = 0;
        xcrs.xcrs[0].value = value;
        self.fd.set_xcrs(&xcrs).map_err(ioctl("KVM_SET_XCRS"))
    }

    fn set_msrs(&self, entries: &[(u32, u64)]) -> Result<(), KvmError> {
        let list: Vec<kvm_msr_entry> = entries
            .iter()
            .map(|&(index, data)| kvm_msr_entry {
                index,
                data,
                ..Default::default()
            })
            .collect();
        let msrs = Msrs::from_entries(&list).map_err(|_| KvmError::Missing("MSR list allocation"))?;
        let n = self.fd.set_msrs(&msrs).map_err(ioctl("KVM_SET_MSRS"))?;
        if n != entries.len() {
            return Err(KvmError::Ioctl {
                what: "KVM_SET_MSRS",
                source: kvm_ioctls::Error::new(libc::EINVAL),
            });
        }
        Ok(())
    }

    /// The state of a new process: entry point, stack pointer, long mode at CPL3.
    pub fn initial_state(&self, rip: u64, rsp: u64) -> Result<CpuState, KvmError> {
        let mut sregs = self.fd.get_sregs().map_err(ioctl("KVM_GET_SREGS"))?;
        sregs.cs = user_code_segment();
        let ds = user_data_segment();
        sregs.ds = ds;
        sregs.es = ds;
        sregs.fs = ds;
        sregs.gs = ds;
        sregs.ss = ds;
        sregs.tr = kvm_segment {
            base: TSS_ADDR,
            limit: TSS_LIMIT as u32,
            selector: selectors::TSS,
            type_: 11,
            present: 1,
            dpl: 0,
            db: 0,
            s: 0,
            l: 0,
            g: 0,
            avl: 0,
            unusable: 0,
            padding: 0,
        };
        sregs.gdt.base = GDT_ADDR;
        sregs.gdt.limit = 8 * 8 - 1;
        sregs.idt.base = IDT_ADDR;
        sregs.idt.limit = 256 * 16 - 1;
        sregs.cr0 = CR0;
        sregs.cr3 = self.layout.pml4[0];
        sregs.cr4 = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT | if self.has_xsave { CR4_OSXSAVE } else { 0 };
        sregs.efer = EFER;
        let regs = kvm_regs {
            rip,
            rsp,
            rflags: USER_RFLAGS,
            ..Default::default()
        };
        Ok(CpuState {
            regs,
            sregs,
            regs_dirty: true,
            sregs_dirty: true,
        })
    }

    /// Writes dirty registers back to KVM (through the sync-regs page when available).
    pub fn put(&mut self, cpu: &mut CpuState) -> Result<(), KvmError> {
        if self.sync_regs {
            let sync = self.fd.sync_regs_mut();
            if cpu.regs_dirty {
                sync.regs = cpu.regs;
            }
            if cpu.sregs_dirty {
                sync.sregs = cpu.sregs;
            }
            if cpu.regs_dirty {
                self.fd.set_sync_dirty_reg(SyncReg::Register);
            }
            if cpu.sregs_dirty {
                self.fd.set_sync_dirty_reg(SyncReg::SystemRegister);
            }
        } else {
            if cpu.sregs_dirty {
                self.fd.set_sregs(&cpu.sregs).map_err(ioctl("KVM_SET_SREGS"))?;
            }
            if cpu.regs_dirty {
                self.fd.set_regs(&cpu.regs).map_err(ioctl("KVM_SET_REGS"))?;
            }
        }
        cpu.regs_dirty = false;
        cpu.sregs_dirty = false;
        Ok(())
    }

    /// Reads the registers after an exit.
    pub fn fetch(&mut self) -> Result<CpuState, KvmError> {
        let (regs, sregs) = if self.sync_regs {
            let s = self.fd.sync_regs();
            (s.regs, s.sregs)
        } else {
            (
                self.fd.get_regs().map_err(ioctl("KVM_GET_REGS"))?,
                self.fd.get_sregs().map_err(ioctl("KVM_GET_SREGS"))?,
            )
        };
        Ok(CpuState {
            regs,
            sregs,
            regs_dirty: false,
            sregs_dirty: false,
        })
    }

    /// Pushes everything to KVM with the ioctls (used once after restore, before the first run).
    pub fn put_all(&mut self, cpu: &mut CpuState) -> Result<(), KvmError> {
        self.fd.set_sregs(&cpu.sregs).map_err(ioctl("KVM_SET_SREGS"))?;
        self.fd.set_regs(&cpu.regs).map_err(ioctl("KVM_SET_REGS"))?;
        if self.sync_regs {
            // The sync page must not carry stale values into the first run.
            let sync = self.fd.sync_regs_mut();
            sync.regs = cpu.regs;
            sync.sregs = cpu.sregs;
        }
        cpu.regs_dirty = false;
        cpu.sregs_dirty = false;
        Ok(())
    }

    /// Runs the vCPU until the next exit.
    pub fn run(&mut self) -> Exit {
        match self.fd.run() {
            Ok(VcpuExit::IoOut(port, _)) if port == SYSCALL_PORT => Exit::Syscall,
            Ok(VcpuExit::IoOut(port, _)) if port == REVOKE_PORT => Exit::RevokeDone,
            Ok(VcpuExit::IoOut(port, _))
                if (EXCEPTION_PORT_BASE..EXCEPTION_PORT_BASE + u16::from(EXCEPTION_VECTORS))
                    .contains(&port) =>
            {
                Exit::Exception((port - EXCEPTION_PORT_BASE) as u8)
            }
            Ok(VcpuExit::Intr) => Exit::Interrupted,
            Ok(VcpuExit::Shutdown) => Exit::Unexpected("triple fault (KVM_EXIT_SHUTDOWN)".into()),
            Ok(VcpuExit::Hlt) => Exit::Unexpected("hlt in a CPL0 stub".into()),
            Ok(other) => Exit::Unexpected(format!("{other:?}")),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                self.fd.set_kvm_immediate_exit(0);
                Exit::Interrupted
            }
            Err(e) => Exit::Unexpected(format!("KVM_RUN failed: {e}")),
        }
    }

    /// Pointer to `kvm_run.immediate_exit`, for the host signal handler.
    pub fn immediate_exit_ptr(&mut self) -> *mut u8 {
        &mut self.fd.get_kvm_run().immediate_exit as *mut u8
    }

    /// Reads the FPU/SSE/AVX state, XCR0 and the saved MSRs.
    pub fn save_extended(&self) -> Result<ExtendedState, KvmError> {
        let (xsave, fpu, xcrs) = if self.has_xsave {
            let x = self.fd.get_xsave().map_err(ioctl("KVM_GET_XSAVE"))?;
            (
                Some(x.region.to_vec()),
                None,
                Some(self.fd.get_xcrs().map_err(ioctl("KVM_GET_XCRS"))?),
            )
        } else {
            let f = self.fd.get_fpu().map_err(ioctl("KVM_GET_FPU"))?;
            // SAFETY: kvm_fpu is a plain-old-data repr(C) struct; viewing it as bytes is sound.
            let bytes = unsafe {
                std::slice::from_raw_parts(
                    (&f as *const kvm_fpu).cast::<u8>(),
                    std::mem::size_of::<kvm_fpu>(),
                )
            };
            (None, Some(bytes.to_vec()), None)
        };
        let entries: Vec<kvm_msr_entry> = SAVED_MSRS
            .iter()
            .map(|&index| kvm_msr_entry {
                index,
                ..Default::default()
            })
            .collect();
        let mut msrs = Msrs::from_entries(&entries).map_err(|_| KvmError::Missing("MSR list allocation"))?;
        let n = self.fd.get_msrs(&mut msrs).map_err(ioctl("KVM_GET_MSRS"))?;
        let msrs = msrs.as_slice()[..n].iter().map(|e| (e.index, e.data)).collect();
        Ok(ExtendedState {
            xsave,
            fpu,
            xcrs,
            msrs,
        })
    }

    /// Restores what [`Vcpu::save_extended`] returned.
    pub fn restore_extended(&self, state: &ExtendedState) -> Result<(), KvmError> {
        if let Some(xcrs) = &state.xcrs {
            if self.has_xsave {
                self.fd.set_xcrs(xcrs).map_err(ioctl("KVM_SET_XCRS"))?;
            }
        }
        match (&state.xsave, &state.fpu) {
            (Some(words), _) if self.has_xsave => {
                let mut xsave = kvm_xsave::default();
                if words.len() != xsave.region.len() {
                    return Err(KvmError::Missing("an XSAVE area of the expected size"));
                }
                xsave.region.copy_from_slice(words);
                // SAFETY: `xsave` is a complete 4 KiB `kvm_xsave`; XCR0 enables no dynamically sized
                // (AMX) state, so KVM reads only within the struct.
                unsafe { self.fd.set_xsave(&xsave) }.map_err(ioctl("KVM_SET_XSAVE"))?;
            }
            (_, Some(bytes)) => {
                if bytes.len() != std::mem::size_of::<kvm_fpu>() {
                    return Err(KvmError::Missing("an FPU state of the expected size"));
                }
                let mut fpu = kvm_fpu::default();
                // SAFETY: kvm_fpu is plain old data of exactly `bytes.len()` bytes; every bit pattern is valid.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        bytes.as_ptr(),
                        (&mut fpu as *mut kvm_fpu).cast::<u8>(),
                        bytes.len(),
                    )
                };
                self.fd.set_fpu(&fpu).map_err(ioctl("KVM_SET_FPU"))?;
            }
            (Some(_), None) => return Err(KvmError::Missing("XSAVE (the snapshot was taken with it)")),
            (None, None) => {}
        }
        if !state.msrs.is_empty() {
            self.set_msrs(&state.msrs)?;
        }
        Ok(())
    }

    pub fn uses_sync_regs(&self) -> bool {
        self.sync_regs
    }
}
