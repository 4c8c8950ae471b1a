//! Guest RAM, the guest-physical layout, the page tables and the x86 descriptor tables (GDT, IDT, TSS)
//! together with the tiny CPL0 entry stubs.
//!
//! The guest has no kernel, so the VMM builds everything a kernel would: guest virtual addresses are
//! identity-mapped onto guest physical RAM (`[0, mem_size)`), with 4 KiB pages so that every page carries
//! the permissions of the ELF segment or mapping it belongs to (present, writable, user, no-execute).
//!
//! Layout (guest physical = guest virtual):
//!
//! | range | what | user access |
//! |---|---|---|
//! | `0x0000..0x1000` | never mapped: null pointer dereferences fault | - |
//! | `0x1000` | GDT | supervisor |
//! | `0x2000` | IDT (exceptions 0-31 point at stubs) | supervisor |
//! | `0x3000` | 64-bit TSS (RSP0, IST1) | supervisor |
//! | `0x4000` | CPL0 stubs: `syscall` entry (LSTAR) and one stub per exception vector | supervisor |
//! | `0x5000..0x9000` | CPL0 stack for exceptions (RSP0) | supervisor |
//! | `0x9000..0xa000` | IST1 stack (double fault, NMI, machine check) | supervisor |
//! | `USER_START..user_end` | ELF image, brk heap, mmap area (top-down), stack (top) | per mapping |
//! | `user_end..mem_size` | page tables: 2 PML4 copies, PDPT, PDs, PTs (contiguous) | not mapped |
//!
//! Each stub is `out imm8, al` (a VM exit to the VMM: port [`SYSCALL_PORT`] for a `syscall`,
//! [`EXCEPTION_PORT_BASE`]` + vector` for an exception) followed by `hlt`. The VMM answers the syscall and
//! performs the return to user mode itself (RIP = RCX, RFLAGS = R11, user CS/SS).
//!
//! Measured on PVM (`kvm_pvm`): for a guest that is not PVM-aware, `syscall` jumps to LSTAR but leaves the
//! vCPU in user mode (CS stays 0x2b; `sysretq` there is a #GP, which is why it "triple-faulted"). The stub
//! therefore must work at CPL3 as well as at CPL0: its page is user-executable (read-only), and the TSS
//! I/O permission bitmap allows `out` to [`SYSCALL_PORT`] (and no other port) at CPL3. On hardware KVM the
//! stub runs at CPL0 as usual (SMEP is off, so a user page is executable there). Exceptions are delivered
//! through the IDT at CPL0 on both.
//!
//! Granting access (new mappings, more permissions) is done by the VMM writing page-table entries
//! directly: x86 and KVM's shadow MMU re-walk the guest tables on a fault. Revoking access is different:
//! KVM caches translations (TLB, and on shadow-paging hosts such as PVM its shadow page tables, which
//! never see writes made by the VMM through host memory). So revocations run a small CPL0 stub in the guest
//! that clears the entries through the guest's own MMU (`rep stosq`; KVM write-protects guest page tables
//! and sees these writes) and reloads CR3; the VMM then writes the reduced entries (see [`crate::mm`]).
//! The page-table area is mapped supervisor-only for that stub. The two PML4 copies are kept identical.

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap, GuestRegionMmap, MmapRegion};

/// Page size of the guest.
pub const PAGE_SIZE: u64 = 4096;
/// GDT base.
pub const GDT_ADDR: u64 = 0x1000;
/// IDT base.
pub const IDT_ADDR: u64 = 0x2000;
/// TSS base.
pub const TSS_ADDR: u64 = 0x3000;
/// Offset of the I/O permission bitmap in the TSS.
pub const TSS_IOMAP: u64 = 104;
/// TSS limit: the 104-byte 64-bit TSS, a bitmap for ports 0-255 and the terminating byte.
pub const TSS_LIMIT: u64 = TSS_IOMAP + 32;
/// Page with the CPL0 stubs; the `syscall` entry point (LSTAR) is its first byte.
pub const STUB_ADDR: u64 = 0x4000;
/// Offset of the exception stubs within the stub page; vector `v` is at `+ v * EXCEPTION_STUB_SIZE`.
pub const EXCEPTION_STUBS_OFFSET: u64 = 0x100;
/// Bytes per exception stub.
pub const EXCEPTION_STUB_SIZE: u64 = 8;
/// Top of the CPL0 exception stack (TSS.RSP0).
pub const KSTACK_TOP: u64 = 0x9000;
/// Top of the IST1 stack.
pub const IST1_TOP: u64 = 0xa000;
/// Lowest user address (like Linux's `vm.mmap_min_addr`).
pub const USER_START: u64 = 0x10000;
/// Port written by the `syscall` stub.
pub const SYSCALL_PORT: u16 = 0x10;
/// Offset of the revocation stub in the stub page (see [`crate::mm`]).
pub const REVOKE_STUB_OFFSET: u64 = 0x40;
/// Port written by the revocation stub when it is done.
pub const REVOKE_PORT: u16 = 0x11;
/// Port of the exception stub for vector 0; vector `v` writes `EXCEPTION_PORT_BASE + v`.
pub const EXCEPTION_PORT_BASE: u16 = 0x40;
/// Exception vectors that have a stub.
pub const EXCEPTION_VECTORS: u8 = 32;
/// Smallest guest RAM accepted.
pub const MEM_MIN: u64 = 8 << 20;
/// Largest guest RAM accepted (stays below the 32-bit MMIO hole and KVM's TSS area).
pub const MEM_MAX: u64 = 3 << 30;

/// Selectors of the GDT built by [`write_system_tables`].
pub mod selectors {
    pub const KERNEL_CS: u16 = 0x08;
    pub const KERNEL_DS: u16 = 0x10;
    /// Placeholder 32-bit user code segment (the `sysret` layout needs it below the 64-bit one).
    pub const USER_CS32: u16 = 0x18 | 3;
    pub const USER_DS: u16 = 0x20 | 3;
    pub const USER_CS: u16 = 0x28 | 3;
    pub const TSS: u16 = 0x30;
}

/// Page-table entry bits.
pub mod pte {
    pub const PRESENT: u64 = 1 << 0;
    pub const WRITABLE: u64 = 1 << 1;
    pub const USER: u64 = 1 << 2;
    pub const ACCESSED: u64 = 1 << 5;
    pub const DIRTY: u64 = 1 << 6;
    pub const NO_EXECUTE: u64 = 1 << 63;
    /// Physical address bits of an entry.
    pub const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
}

/// Errors building guest memory.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("guest memory size {size} bytes is out of range ({min} MiB to {max} MiB, multiple of 4 KiB)", min = MEM_MIN >> 20, max = MEM_MAX >> 20)]
    BadSize { size: u64 },
    #[error("cannot map guest memory: {0}")]
    Mmap(#[source] vm_memory::mmap::MmapRegionError),
    #[error("cannot map guest memory: region does not fit the guest address space")]
    RegionPlacement,
    #[error("cannot map guest memory: {0}")]
    Regions(#[source] vm_memory::GuestRegionCollectionError),
    #[error("guest memory access at {addr:#x} (+{len}) is out of range")]
    OutOfRange { addr: u64, len: u64 },
}

/// Memory protection of a user page (Linux `PROT_*` bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Prot(pub u32);

impl Prot {
    pub const NONE: Prot = Prot(0);
    pub const READ: u32 = libc::PROT_READ as u32;
    pub const WRITE: u32 = libc::PROT_WRITE as u32;
    pub const EXEC: u32 = libc::PROT_EXEC as u32;
    pub const RW: Prot = Prot(Self::READ | Self::WRITE);

    /// Any access at all (x86 cannot map write-only or execute-only pages: both imply read).
    pub fn readable(self) -> bool {
        self.0 & (Self::READ | Self::WRITE | Self::EXEC) != 0
    }
    pub fn writable(self) -> bool {
        self.0 & Self::WRITE != 0
    }
    pub fn executable(self) -> bool {
        self.0 & Self::EXEC != 0
    }

    /// The leaf page-table entry for a user page at `paddr` with this protection (0 = not present).
    pub fn user_pte(self, paddr: u64) -> u64 {
        if !self.readable() {
            return 0;
        }
        let mut e = (paddr & pte::ADDR_MASK) | pte::PRESENT | pte::USER | pte::ACCESSED;
        if self.writable() {
            e |= pte::WRITABLE | pte::DIRTY;
        }
        if !self.executable() {
            e |= pte::NO_EXECUTE;
        }
        e
    }
}

impl std::fmt::Display for Prot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = |bit: u32, ch: char| if self.0 & bit != 0 { ch } else { '-' };
        write!(
            f,
            "{}{}{}",
            c(Self::READ, 'r'),
            c(Self::WRITE, 'w'),
            c(Self::EXEC, 'x')
        )
    }
}

/// Physical memory as the page-table and descriptor builders see it (guest RAM, or a `Vec` in tests).
pub trait PhysMem {
    fn size(&self) -> u64;
    fn read_u64(&self, addr: u64) -> Option<u64>;
    fn write_u64(&mut self, addr: u64, value: u64) -> bool;
    fn write_bytes(&mut self, addr: u64, bytes: &[u8]) -> bool;
}

impl PhysMem for Vec<u8> {
    fn size(&self) -> u64 {
        self.len() as u64
    }
    fn read_u64(&self, addr: u64) -> Option<u64> {
        let start = usize::try_from(addr).ok()?;
        let bytes = self.get(start..start.checked_add(8)?)?;
        let mut b = [0u8; 8];
        b.copy_from_slice(bytes);
        Some(u64::from_le_bytes(b))
    }
    fn write_u64(&mut self, addr: u64, value: u64) -> bool {
        self.write_bytes(addr, &value.to_le_bytes())
    }
    fn write_bytes(&mut self, addr: u64, bytes: &[u8]) -> bool {
        let Ok(start) = usize::try_from(addr) else {
            return false;
        };
        let Some(end) = start.checked_add(bytes.len()) else {
            return false;
        };
        match self.get_mut(start..end) {
            Some(dst) => {
                dst.copy_from_slice(bytes);
                true
            }
            None => false,
        }
    }
}

/// Where things are for a given RAM size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Layout {
    pub mem_size: u64,
    /// First byte of the page-table area (= end of the user address space).
    pub pt_base: u64,
    /// The two PML4 copies.
    pub pml4: [u64; 2],
    pub pdpt: u64,
    /// First page directory (one per GiB, contiguous).
    pub pds: u64,
    /// First page table (one per 2 MiB, contiguous): the PTE of page `p` is at `pts + p * 8`.
    pub pts: u64,
}

impl Layout {
    /// Computes the layout for `mem_size` bytes of RAM.
    pub fn new(mem_size: u64) -> Result<Layout, MemoryError> {
        if !(MEM_MIN..=MEM_MAX).contains(&mem_size) || !mem_size.is_multiple_of(PAGE_SIZE) {
            return Err(MemoryError::BadSize { size: mem_size });
        }
        let n_pd = mem_size.div_ceil(1 << 30);
        let n_pt = mem_size.div_ceil(2 << 20);
        let pt_pages = 2 + 1 + n_pd + n_pt;
        let pt_base = mem_size - pt_pages * PAGE_SIZE;
        Ok(Layout {
            mem_size,
            pt_base,
            pml4: [pt_base, pt_base + PAGE_SIZE],
            pdpt: pt_base + 2 * PAGE_SIZE,
            pds: pt_base + 3 * PAGE_SIZE,
            pts: pt_base + (3 + n_pd) * PAGE_SIZE,
        })
    }

    /// End (exclusive) of the user address space.
    pub fn user_end(&self) -> u64 {
        self.pt_base
    }

    /// Address of the leaf entry that maps `vaddr` (which must be below `mem_size`).
    pub fn pte_addr(&self, vaddr: u64) -> Option<u64> {
        if vaddr >= self.mem_size {
            return None;
        }
        Some(self.pts + (vaddr / PAGE_SIZE) * 8)
    }
}

/// Builds the page tables: every upper level is present; leaf entries map the system pages
/// (supervisor-only) and nothing else. User pages are mapped later with [`set_user_pages`].
pub fn build_page_tables(mem: &mut impl PhysMem, layout: &Layout) -> Result<(), MemoryError> {
    let oor = |addr| MemoryError::OutOfRange { addr, len: 8 };
    let upper = pte::PRESENT | pte::WRITABLE | pte::USER;
    // Zero the whole page-table area first (restored or reused memory may hold anything).
    let area = layout.mem_size - layout.pt_base;
    let zero = vec![0u8; PAGE_SIZE as usize];
    for off in (0..area).step_by(PAGE_SIZE as usize) {
        if !mem.write_bytes(layout.pt_base + off, &zero) {
            return Err(oor(layout.pt_base + off));
        }
    }
    for root in layout.pml4 {
        if !mem.write_u64(root, layout.pdpt | upper) {
            return Err(oor(root));
        }
    }
    let n_pd = layout.mem_size.div_ceil(1 << 30);
    for i in 0..n_pd {
        let pd = layout.pds + i * PAGE_SIZE;
        if !mem.write_u64(layout.pdpt + i * 8, pd | upper) {
            return Err(oor(layout.pdpt + i * 8));
        }
    }
    let n_pt = layout.mem_size.div_ceil(2 << 20);
    for j in 0..n_pt {
        let pt = layout.pts + j * PAGE_SIZE;
        // PD entries are contiguous across the PD pages.
        if !mem.write_u64(layout.pds + j * 8, pt | upper) {
            return Err(oor(layout.pds + j * 8));
        }
    }
    // System pages: GDT, IDT, TSS, stubs (executable), CPL0 stacks. Supervisor only.
    let sys = |addr: u64, exec: bool, write: bool| {
        let mut e = addr | pte::PRESENT | pte::ACCESSED;
        if write {
            e |= pte::WRITABLE | pte::DIRTY;
        }
        if !exec {
            e |= pte::NO_EXECUTE;
        }
        e
    };
    let mut system = vec![
        (GDT_ADDR, sys(GDT_ADDR, false, true)),
        (IDT_ADDR, sys(IDT_ADDR, false, false)),
        (TSS_ADDR, sys(TSS_ADDR, false, true)),
        (STUB_ADDR, sys(STUB_ADDR, true, false) | pte::USER),
    ];
    let mut page = STUB_ADDR + PAGE_SIZE;
    while page < IST1_TOP {
        system.push((page, sys(page, false, true)));
        page += PAGE_SIZE;
    }
    // The page tables themselves: supervisor read-write, so the revocation stub can write entries
    // through the guest's own MMU (which is what makes KVM drop its cached translations).
    let mut page = layout.pt_base;
    while page < layout.mem_size {
        system.push((page, sys(page, false, true)));
        page += PAGE_SIZE;
    }
    for (vaddr, entry) in system {
        let at = layout.pte_addr(vaddr).ok_or_else(|| oor(vaddr))?;
        if !mem.write_u64(at, entry) {
            return Err(oor(at));
        }
    }
    Ok(())
}

/// Sets the leaf entries of the user pages `[start, start + len)` (page aligned) to `prot`.
pub fn set_user_pages(mem: &mut impl PhysMem, layout: &Layout, start: u64, len: u64, prot: Prot) -> bool {
    if !start.is_multiple_of(PAGE_SIZE) || !len.is_multiple_of(PAGE_SIZE) || start < USER_START {
        return false;
    }
    let Some(end) = start.checked_add(len) else {
        return false;
    };
    if end > layout.user_end() {
        return false;
    }
    let mut page = start;
    while page < end {
        let Some(at) = layout.pte_addr(page) else {
            return false;
        };
        if !mem.write_u64(at, prot.user_pte(page)) {
            return false;
        }
        page += PAGE_SIZE;
    }
    true
}

/// Walks the page tables from `root` like the CPU does; returns the physical address and the combined
/// (writable, user, executable) permissions, or `None` if `vaddr` is not mapped.
pub fn translate(mem: &impl PhysMem, root: u64, vaddr: u64) -> Option<(u64, bool, bool, bool)> {
    if vaddr >> 47 != 0 {
        return None;
    }
    let mut table = root;
    let mut writable = true;
    let mut user = true;
    let mut exec = true;
    for shift in [39u32, 30, 21, 12] {
        let index = (vaddr >> shift) & 0x1ff;
        let entry = mem.read_u64(table + index * 8)?;
        if entry & pte::PRESENT == 0 {
            return None;
        }
        writable &= entry & pte::WRITABLE != 0;
        user &= entry & pte::USER != 0;
        exec &= entry & pte::NO_EXECUTE == 0;
        table = entry & pte::ADDR_MASK;
    }
    Some((table | (vaddr & (PAGE_SIZE - 1)), writable, user, exec))
}

/// Vectors for which the CPU pushes an error code.
pub fn has_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10 | 11 | 12 | 13 | 14 | 17 | 21 | 29 | 30)
}

/// Writes the GDT, IDT, TSS and the CPL0 stubs.
pub fn write_system_tables(mem: &mut impl PhysMem) -> Result<(), MemoryError> {
    let oor = |addr| MemoryError::OutOfRange { addr, len: PAGE_SIZE };
    let mut gdt = vec![
        0u64,
        0x00af_9b00_0000_ffff, // kernel code64
        0x00cf_9300_0000_ffff, // kernel data
        0x00cf_fb00_0000_ffff, // user code32 (unused, sysret layout)
        0x00cf_f300_0000_ffff, // user data
        0x00af_fb00_0000_ffff, // user code64
    ];
    // 64-bit TSS descriptor (16 bytes): type 9 (available), present.
    let base = TSS_ADDR;
    let limit = TSS_LIMIT;
    let low = (limit & 0xffff)
        | ((base & 0xff_ffff) << 16)
        | (0x89u64 << 40)
        | (((limit >> 16) & 0xf) << 48)
        | (((base >> 24) & 0xff) << 56);
    gdt.push(low);
    gdt.push(base >> 32);
    let gdt_bytes: Vec<u8> = gdt.iter().flat_map(|d| d.to_le_bytes()).collect();
    if !mem.write_bytes(GDT_ADDR, &gdt_bytes) {
        return Err(oor(GDT_ADDR));
    }

    // TSS: RSP0 at offset 4, IST1 at offset 36, then an I/O permission bitmap for ports 0-255 that allows
    // only SYSCALL_PORT (the stub's `out` may run at CPL3, see the module docs), and the 0xff terminator.
    let mut tss = vec![0u8; TSS_LIMIT as usize + 1];
    tss[4..12].copy_from_slice(&KSTACK_TOP.to_le_bytes());
    tss[36..44].copy_from_slice(&IST1_TOP.to_le_bytes());
    tss[102..104].copy_from_slice(&(TSS_IOMAP as u16).to_le_bytes());
    for b in &mut tss[TSS_IOMAP as usize..] {
        *b = 0xff;
    }
    let port = SYSCALL_PORT as usize;
    tss[TSS_IOMAP as usize + port / 8] &= !(1u8 << (port % 8));
    if !mem.write_bytes(TSS_ADDR, &tss) {
        return Err(oor(TSS_ADDR));
    }

    // IDT: vectors 0-31 -> interrupt gates to the stubs. #BP and #OF are callable from CPL3 (int3, into)
    // like on Linux; #DF, NMI and #MC use IST1.
    let mut idt = vec![0u8; 256 * 16];
    for v in 0..EXCEPTION_VECTORS {
        let target = STUB_ADDR + EXCEPTION_STUBS_OFFSET + u64::from(v) * EXCEPTION_STUB_SIZE;
        let dpl: u8 = if matches!(v, 3 | 4) { 3 } else { 0 };
        let ist: u8 = if matches!(v, 2 | 8 | 18) { 1 } else { 0 };
        let gate = &mut idt[usize::from(v) * 16..usize::from(v) * 16 + 16];
        gate[0..2].copy_from_slice(&(target as u16).to_le_bytes());
        gate[2..4].copy_from_slice(&selectors::KERNEL_CS.to_le_bytes());
        gate[4] = ist;
        gate[5] = 0x80 | (dpl << 5) | 0x0e;
        gate[6..8].copy_from_slice(&((target >> 16) as u16).to_le_bytes());
        gate[8..12].copy_from_slice(&((target >> 32) as u32).to_le_bytes());
    }
    if !mem.write_bytes(IDT_ADDR, &idt) {
        return Err(oor(IDT_ADDR));
    }

    // Stubs: `out imm8, al ; hlt ; jmp $`.
    let mut stubs = vec![0xccu8; PAGE_SIZE as usize];
    stubs[0..5].copy_from_slice(&[0xe6, SYSCALL_PORT as u8, 0xf4, 0xeb, 0xfe]);
    // Revocation stub (entered at CPL0 by the VMM): `rep stosq` (RCX page-table entries at RDI get RAX),
    // `mov rdx, cr3 ; mov cr3, rdx` (flush the TLB), `out REVOKE_PORT, al`, `hlt`.
    let r = REVOKE_STUB_OFFSET as usize;
    stubs[r..r + 14].copy_from_slice(&[
        0xf3,
        0x48,
        0xab,
        0x0f,
        0x20,
        0xda,
        0x0f,
        0x22,
        0xda,
        0xe6,
        REVOKE_PORT as u8,
        0xf4,
        0xeb,
        0xfe,
    ]);
    for v in 0..EXCEPTION_VECTORS {
        let at = (EXCEPTION_STUBS_OFFSET + u64::from(v) * EXCEPTION_STUB_SIZE) as usize;
        let port = EXCEPTION_PORT_BASE as u8 + v;
        stubs[at..at + 5].copy_from_slice(&[0xe6, port, 0xf4, 0xeb, 0xfe]);
    }
    if !mem.write_bytes(STUB_ADDR, &stubs) {
        return Err(oor(STUB_ADDR));
    }
    Ok(())
}

/// Guest RAM: one region at guest physical 0, anonymous (cold start) or a private copy-on-write mapping
/// of a snapshot memory file (restore).
pub struct GuestRam {
    mem: GuestMemoryMmap,
    size: u64,
    host: *mut u8,
    /// Anonymous memory: dropping pages (`MADV_DONTNEED`) reads back zeros. Not so for a private file
    /// mapping, where it would read back the file.
    anonymous: bool,
}

// SAFETY: the raw host pointer is only an address of the mapping owned by `mem`, which is Send + Sync; all
// accesses go through bounds-checked methods on one thread at a time (`&mut self` for writes).
unsafe impl Send for GuestRam {}

impl GuestRam {
    /// Fresh zeroed anonymous memory (`MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE`).
    pub fn anonymous(size: u64) -> Result<GuestRam, MemoryError> {
        let len = usize::try_from(size).map_err(|_| MemoryError::BadSize { size })?;
        let region = MmapRegion::<()>::build(
            None,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
        )
        .map_err(MemoryError::Mmap)?;
        Self::from_region(region, size, true)
    }

    /// A private (copy-on-write) mapping of `file` from `offset`: pages are read from the file on first
    /// access, guest writes go to anonymous copies; nothing is copied up front.
    pub fn file_private(file: std::fs::File, offset: u64, size: u64) -> Result<GuestRam, MemoryError> {
        let len = usize::try_from(size).map_err(|_| MemoryError::BadSize { size })?;
        let region = MmapRegion::<()>::build(
            Some(vm_memory::FileOffset::new(file, offset)),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_NORESERVE,
        )
        .map_err(MemoryError::Mmap)?;
        Self::from_region(region, size, false)
    }

    fn from_region(region: MmapRegion<()>, size: u64, anonymous: bool) -> Result<GuestRam, MemoryError> {
        let host = region.as_ptr();
        let region = GuestRegionMmap::new(region, GuestAddress(0)).ok_or(MemoryError::RegionPlacement)?;
        let mem = GuestMemoryMmap::from_regions(vec![region]).map_err(MemoryError::Regions)?;
        Ok(GuestRam {
            mem,
            size,
            host,
            anonymous,
        })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Host address of guest physical 0 (for `KVM_SET_USER_MEMORY_REGION`).
    pub fn host_address(&self) -> u64 {
        self.host as u64
    }

    fn check(&self, addr: u64, len: u64) -> Result<(), MemoryError> {
        match addr.checked_add(len) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(MemoryError::OutOfRange { addr, len }),
        }
    }

    /// Copies guest memory out (bounds checked).
    pub fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        self.check(addr, buf.len() as u64)?;
        self.mem
            .read_slice(buf, GuestAddress(addr))
            .map_err(|_| MemoryError::OutOfRange {
                addr,
                len: buf.len() as u64,
            })
    }

    /// Copies into guest memory (bounds checked).
    pub fn write(&mut self, addr: u64, buf: &[u8]) -> Result<(), MemoryError> {
        self.check(addr, buf.len() as u64)?;
        self.mem
            .write_slice(buf, GuestAddress(addr))
            .map_err(|_| MemoryError::OutOfRange {
                addr,
                len: buf.len() as u64,
            })
    }

    /// Zero-fills `[addr, addr + len)`.
    pub fn zero(&mut self, addr: u64, len: u64) -> Result<(), MemoryError> {
        self.check(addr, len)?;
        if self.anonymous
            && len >= 64 * 1024
            && addr.is_multiple_of(PAGE_SIZE)
            && len.is_multiple_of(PAGE_SIZE)
        {
            // Large anonymous ranges: give the pages back to the host; they read back as zeros (KVM
            // learns of the change through its MMU notifier).
            // SAFETY: the page-aligned range lies inside our private anonymous mapping.
            let rc = unsafe {
                libc::madvise(
                    self.host.add(addr as usize).cast(),
                    len as usize,
                    libc::MADV_DONTNEED,
                )
            };
            if rc == 0 {
                return Ok(());
            }
        }
        // SAFETY: the range was checked to lie inside the mapping of `size` bytes starting at `host`, which
        // lives as long as `self`; the guest vCPU is not running while the VMM handles an exit.
        unsafe { std::ptr::write_bytes(self.host.add(addr as usize), 0, len as usize) };
        Ok(())
    }

    /// Reads `len` bytes from `file` at `file_offset` straight into guest memory.
    pub fn read_from_file(
        &mut self,
        addr: u64,
        len: u64,
        file: &std::fs::File,
        file_offset: u64,
    ) -> Result<(), std::io::Error> {
        use std::os::unix::fs::FileExt;
        self.check(addr, len)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        // SAFETY: the range was checked to be inside the live mapping; no other reference to these guest
        // bytes exists while the VMM handles an exit.
        let dst = unsafe { std::slice::from_raw_parts_mut(self.host.add(addr as usize), len as usize) };
        file.read_exact_at(dst, file_offset)
    }

    /// A read-only view of `[addr, addr + len)` for bulk work (snapshot writing, zero-page detection).
    pub fn with_slice<R>(&self, addr: u64, len: u64, f: impl FnOnce(&[u8]) -> R) -> Result<R, MemoryError> {
        self.check(addr, len)?;
        // SAFETY: bounds checked above; the vCPU is stopped while the VMM runs this.
        let s = unsafe { std::slice::from_raw_parts(self.host.add(addr as usize), len as usize) };
        Ok(f(s))
    }

    /// The underlying vm-memory object.
    pub fn guest_memory(&self) -> &GuestMemoryMmap {
        &self.mem
    }
}

impl PhysMem for GuestRam {
    fn size(&self) -> u64 {
        self.size
    }
    fn read_u64(&self, addr: u64) -> Option<u64> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b).ok()?;
        Some(u64::from_le_bytes(b))
    }
    fn write_u64(&mut self, addr: u64, value: u64) -> bool {
        self.write(addr, &value.to_le_bytes()).is_ok()
    }
    fn write_bytes(&mut self, addr: u64, bytes: &[u8]) -> bool {
        self.write(addr, bytes).is_ok()
    }
}

/// A memory size that [`parse_size`] does not accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error("unknown size suffix `{suffix}` in `{text}` (use K, M or G)")]
    UnknownSuffix { suffix: char, text: String },
    #[error("`{0}` is not a size like 64M or 1G")]
    NotASize(String),
    #[error("size `{0}` is too large")]
    TooLarge(String),
}

/// Parses a memory size such as `64M`, `1G`, `65536`, `512K` (binary units).
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let t = text.trim();
    let (digits, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m: u64 = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                _ => {
                    return Err(SizeError::UnknownSuffix {
                        suffix: c,
                        text: text.to_string(),
                    })
                }
            };
            (&t[..i], m)
        }
        _ => (t, 1),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| SizeError::NotASize(text.to_string()))?;
    n.checked_mul(mult)
        .ok_or_else(|| SizeError::TooLarge(text.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn built(size: u64) -> (Vec<u8>, Layout) {
        let layout = Layout::new(size).unwrap();
        let mut mem = vec![0u8; size as usize];
        build_page_tables(&mut mem, &layout).unwrap();
        write_system_tables(&mut mem).unwrap();
        (mem, layout)
    }

    #[test]
    fn layout_puts_page_tables_at_the_top() {
        let l = Layout::new(64 << 20).unwrap();
        // 2 PML4 + 1 PDPT + 1 PD + 32 PTs.
        assert_eq!(l.mem_size - l.pt_base, 36 * PAGE_SIZE);
        assert_eq!(l.pts + 32 * PAGE_SIZE, l.mem_size);
        assert_eq!(l.pte_addr(0x40_0000), Some(l.pts + 0x400 * 8));
        assert_eq!(l.pte_addr(64 << 20), None);
        let big = Layout::new(3 << 30).unwrap();
        assert_eq!(big.mem_size - big.pt_base, (3 + 3 + 1536) * PAGE_SIZE);
    }

    #[test]
    fn bad_sizes_are_rejected() {
        assert!(Layout::new(1 << 20).is_err());
        assert!(Layout::new((64 << 20) + 1).is_err());
        assert!(Layout::new(4 << 30).is_err());
    }

    #[test]
    fn page_tables_map_nothing_but_system_pages_until_asked() {
        let (mut mem, l) = built(16 << 20);
        for root in l.pml4 {
            assert_eq!(translate(&mem, root, 0), None, "null page unmapped");
            let (pa, w, user, x) = translate(&mem, root, STUB_ADDR + 2).unwrap();
            assert_eq!(pa, STUB_ADDR + 2);
            assert!(!w && user && x, "stubs: read-only, executable (also at CPL3)");
            let (_, w, user, x) = translate(&mem, root, KSTACK_TOP - 8).unwrap();
            assert!(w && !user && !x);
            assert_eq!(translate(&mem, root, 0x40_0000), None);
            let (_, w, user, x) = translate(&mem, root, l.pt_base).unwrap();
            assert!(
                w && !user && !x,
                "page tables: supervisor read-write (for the revocation stub)"
            );
        }
        assert!(set_user_pages(
            &mut mem,
            &l,
            0x40_0000,
            2 * PAGE_SIZE,
            Prot(Prot::READ | Prot::EXEC)
        ));
        let (pa, w, user, x) = translate(&mem, l.pml4[0], 0x40_1234).unwrap();
        assert_eq!(pa, 0x40_1234);
        assert!(!w && user && x);
        assert!(set_user_pages(&mut mem, &l, 0x40_1000, PAGE_SIZE, Prot::RW));
        let (_, w, user, x) = translate(&mem, l.pml4[1], 0x40_1000).unwrap();
        assert!(w && user && !x);
        assert!(set_user_pages(&mut mem, &l, 0x40_0000, PAGE_SIZE, Prot::NONE));
        assert_eq!(translate(&mem, l.pml4[0], 0x40_0000), None);
        // Last PT entry of the user range, and a 2 MiB boundary crossing.
        assert!(set_user_pages(&mut mem, &l, 0x1f_f000, 2 * PAGE_SIZE, Prot::RW));
        assert!(translate(&mem, l.pml4[0], 0x20_0000).is_some());
    }

    #[test]
    fn user_pages_outside_the_user_range_are_refused() {
        let (mut mem, l) = built(16 << 20);
        assert!(!set_user_pages(&mut mem, &l, 0, PAGE_SIZE, Prot::RW));
        assert!(!set_user_pages(&mut mem, &l, STUB_ADDR, PAGE_SIZE, Prot::RW));
        assert!(!set_user_pages(&mut mem, &l, l.pt_base, PAGE_SIZE, Prot::RW));
        assert!(!set_user_pages(&mut mem, &l, 0x40_0001, PAGE_SIZE, Prot::RW));
        assert!(!set_user_pages(
            &mut mem,
            &l,
            u64::MAX - 4095,
            PAGE_SIZE,
            Prot::RW
        ));
        assert!(!set_user_pages(
            &mut mem,
            &l,
            l.pt_base - PAGE_SIZE,
            2 * PAGE_SIZE,
            Prot::RW
        ));
    }

    #[test]
    fn gigabyte_boundaries_use_the_right_page_directory() {
        let size = (1 << 30) + (64 << 20);
        let l = Layout::new(size).unwrap();
        let mut mem = vec![0u8; size as usize];
        build_page_tables(&mut mem, &l).unwrap();
        assert!(set_user_pages(
            &mut mem,
            &l,
            (1 << 30) + 0x5000,
            PAGE_SIZE,
            Prot::RW
        ));
        let (pa, ..) = translate(&mem, l.pml4[0], (1 << 30) + 0x5008).unwrap();
        assert_eq!(pa, (1 << 30) + 0x5008);
    }

    #[test]
    fn descriptor_tables() {
        let (mem, _) = built(16 << 20);
        // TSS descriptor at 0x30: base, limit and type.
        let low = mem.read_u64(GDT_ADDR + 0x30).unwrap();
        assert_eq!((low >> 16) & 0xff_ffff, TSS_ADDR);
        assert_eq!(low & 0xffff, TSS_LIMIT);
        assert_eq!((low >> 40) & 0xff, 0x89);
        // I/O bitmap: only the syscall port is allowed.
        let map = |port: u64| mem[(TSS_ADDR + TSS_IOMAP + port / 8) as usize] >> (port % 8) & 1;
        assert_eq!(map(u64::from(SYSCALL_PORT)), 0);
        assert_eq!(map(0x11), 1);
        assert_eq!(map(0x4e), 1);
        assert_eq!(mem[(TSS_ADDR + TSS_LIMIT) as usize], 0xff);
        // IDT gate 14 (#PF) points at its stub, DPL 0; gate 3 (#BP) DPL 3.
        let gate = |v: u64| {
            let lo = mem.read_u64(IDT_ADDR + v * 16).unwrap();
            let hi = mem.read_u64(IDT_ADDR + v * 16 + 8).unwrap();
            let target = (lo & 0xffff) | ((lo >> 32) & 0xffff_0000) | ((hi & 0xffff_ffff) << 32);
            (target, (lo >> 40) & 0xff)
        };
        assert_eq!(gate(14), (STUB_ADDR + 0x100 + 14 * 8, 0x8e));
        assert_eq!(gate(3).1, 0xee);
        assert_eq!(gate(40).1, 0, "vectors above 31 are not present");
        // The syscall stub and the #PF stub.
        assert_eq!(
            mem[STUB_ADDR as usize..STUB_ADDR as usize + 3],
            [0xe6, 0x10, 0xf4]
        );
        let rv = (STUB_ADDR + REVOKE_STUB_OFFSET) as usize;
        assert_eq!(mem[rv..rv + 3], [0xf3, 0x48, 0xab], "rep stosq");
        let pf = (STUB_ADDR + 0x100 + 14 * 8) as usize;
        assert_eq!(mem[pf..pf + 2], [0xe6, 0x4e]);
        assert!(has_error_code(14) && !has_error_code(6));
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("512K"), Ok(512 << 10));
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("M").is_err());
        assert!(parse_size("99999999999999999999G").is_err());
    }

    #[test]
    fn guest_ram_is_bounds_checked() {
        let mut ram = GuestRam::anonymous(16 << 20).unwrap();
        ram.write(0x1000, b"hello").unwrap();
        let mut b = [0u8; 5];
        ram.read(0x1000, &mut b).unwrap();
        assert_eq!(&b, b"hello");
        assert!(ram.write((16 << 20) - 2, b"abc").is_err());
        assert!(ram.read(u64::MAX - 1, &mut b).is_err());
        ram.zero(0x1000, 5).unwrap();
        ram.read(0x1000, &mut b).unwrap();
        assert_eq!(b, [0; 5]);
    }
}
