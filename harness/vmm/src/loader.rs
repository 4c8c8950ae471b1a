//! Parsing x86-64 ELF executables and building the initial process stack.
//!
//! * ELF: `ET_EXEC` is loaded at its link addresses; `ET_DYN` (PIE, static-pie, or a program interpreter)
//!   at a base the VMM chooses. Every header field is validated (class, endianness, machine, sizes,
//!   offsets, overflow, segment alignment) and a bad file gives an [`ElfError`], never a panic. A
//!   dynamically linked program names its interpreter in `PT_INTERP` ([`Elf::interpreter`]); the VMM
//!   loads that interpreter too (from the guest root) and starts it, as the kernel's `binfmt_elf` does.
//! * Stack: the Linux x86-64 process entry layout — `argc`, `argv[]`, `NULL`, `envp[]`, `NULL`, the
//!   auxiliary vector (`AT_PHDR`, `AT_PHENT`, `AT_PHNUM`, `AT_PAGESZ`, `AT_BASE`, `AT_ENTRY`, `AT_RANDOM`,
//!   `AT_UID`..., `AT_EXECFN`, `AT_PLATFORM`, `AT_HWCAP`, `AT_MINSIGSTKSZ`; no `AT_SYSINFO_EHDR`: no vDSO),
//!   then the strings at the top. `rsp` at entry is 16-byte aligned and points at `argc`.

use crate::memory::{Prot, PAGE_SIZE};

/// Errors loading an ELF file.
#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    #[error("cannot read `{path}`: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("not an ELF file (bad magic)")]
    BadMagic,
    #[error("not a 64-bit little-endian x86-64 ELF ({0})")]
    WrongArch(String),
    #[error("ELF type {0} is not an executable (need ET_EXEC or ET_DYN)")]
    NotExecutable(u16),
    #[error("program is dynamically linked (interpreter {interpreter}) but the VM has no guest root to load it from: give --root DIR holding the interpreter and the libraries (or build static: `-C target-feature=+crt-static`, `gcc -static`)")]
    NoRoot { interpreter: String },
    #[error("program interpreter `{path}`: {reason}")]
    Interpreter { path: String, reason: String },
    #[error("malformed ELF: {0}")]
    Malformed(String),
    #[error("ELF does not fit the guest: {0}")]
    DoesNotFit(String),
}

pub const PT_LOAD: u32 = 1;
pub const PT_INTERP: u32 = 3;
pub const PT_PHDR: u32 = 6;
pub const PT_GNU_STACK: u32 = 0x6474_e551;
const ET_EXEC: u16 = 2;
const ET_DYN: u16 = 3;
const EM_X86_64: u16 = 62;
const EHDR_SIZE: usize = 64;
const PHDR_SIZE: usize = 56;
/// More program headers than any sane executable has.
const MAX_PHNUM: u16 = 256;

/// Something the loader can read bytes from at an offset (a file, or a byte slice in tests).
pub trait Source {
    fn size(&self) -> u64;
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()>;
}

impl Source for [u8] {
    fn size(&self) -> u64 {
        <[u8]>::len(self) as u64
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let eof = || std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "read past end of file");
        let start = usize::try_from(offset).map_err(|_| eof())?;
        let end = start.checked_add(buf.len()).ok_or_else(eof)?;
        buf.copy_from_slice(self.get(start..end).ok_or_else(eof)?);
        Ok(())
    }
}

impl Source for std::fs::File {
    fn size(&self) -> u64 {
        self.metadata().map(|m| m.len()).unwrap_or(0)
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(self, buf, offset)
    }
}

/// One program header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProgramHeader {
    pub p_type: u32,
    pub flags: u32,
    pub offset: u64,
    pub vaddr: u64,
    pub filesz: u64,
    pub memsz: u64,
    pub align: u64,
}

impl ProgramHeader {
    /// The memory protection this segment asks for (`PF_R`, `PF_W`, `PF_X`).
    pub fn prot(&self) -> Prot {
        let mut p = 0;
        if self.flags & 4 != 0 {
            p |= Prot::READ;
        }
        if self.flags & 2 != 0 {
            p |= Prot::WRITE;
        }
        if self.flags & 1 != 0 {
            p |= Prot::EXEC;
        }
        Prot(p)
    }
}

/// A parsed, validated ELF executable.
#[derive(Debug, Clone)]
pub struct Elf {
    pub is_dyn: bool,
    pub entry: u64,
    pub phoff: u64,
    pub phnum: u16,
    pub phdrs: Vec<ProgramHeader>,
    /// Lowest page-aligned address of the PT_LOAD segments (unbiased).
    pub min_vaddr: u64,
    /// Highest end address of the PT_LOAD segments (unbiased).
    pub max_vaddr: u64,
    pub exec_stack: bool,
    /// `PT_INTERP`: file offset and size of the interpreter path.
    pub interp: Option<(u64, u64)>,
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn le64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

impl Elf {
    /// Parses and validates the ELF header and program headers of `src`.
    pub fn parse<S: Source + ?Sized>(src: &S) -> Result<Elf, ElfError> {
        let malformed = |m: &str| ElfError::Malformed(m.to_string());
        let io = |e: std::io::Error| ElfError::Malformed(format!("truncated file: {e}"));
        let mut magic = [0u8; 4];
        if src.size() < 4 || src.read_at(0, &mut magic).is_err() || magic != [0x7f, b'E', b'L', b'F'] {
            return Err(ElfError::BadMagic);
        }
        if src.size() < EHDR_SIZE as u64 {
            return Err(malformed("file shorter than an ELF header"));
        }
        let mut h = [0u8; EHDR_SIZE];
        src.read_at(0, &mut h).map_err(io)?;
        if h[4] != 2 {
            return Err(ElfError::WrongArch(format!("EI_CLASS {}", h[4])));
        }
        if h[5] != 1 {
            return Err(ElfError::WrongArch(format!("EI_DATA {}", h[5])));
        }
        if h[6] != 1 {
            return Err(malformed("EI_VERSION is not 1"));
        }
        let e_type = le16(&h, 16);
        let machine = le16(&h, 18);
        if machine != EM_X86_64 {
            return Err(ElfError::WrongArch(format!("e_machine {machine}")));
        }
        if e_type != ET_EXEC && e_type != ET_DYN {
            return Err(ElfError::NotExecutable(e_type));
        }
        let entry = le64(&h, 24);
        let phoff = le64(&h, 32);
        let phentsize = le16(&h, 54);
        let phnum = le16(&h, 56);
        if phentsize as usize != PHDR_SIZE {
            return Err(malformed("e_phentsize is not 56"));
        }
        if phnum == 0 || phnum > MAX_PHNUM {
            return Err(ElfError::Malformed(format!(
                "e_phnum {phnum} out of range 1..={MAX_PHNUM}"
            )));
        }
        let table_len = u64::from(phnum) * PHDR_SIZE as u64;
        match phoff.checked_add(table_len) {
            Some(end) if end <= src.size() => {}
            _ => return Err(malformed("program header table lies outside the file")),
        }
        let mut table = vec![0u8; table_len as usize];
        src.read_at(phoff, &mut table).map_err(io)?;
        let mut phdrs = Vec::with_capacity(usize::from(phnum));
        for i in 0..usize::from(phnum) {
            let p = &table[i * PHDR_SIZE..(i + 1) * PHDR_SIZE];
            phdrs.push(ProgramHeader {
                p_type: le32(p, 0),
                flags: le32(p, 4),
                offset: le64(p, 8),
                vaddr: le64(p, 16),
                filesz: le64(p, 32),
                memsz: le64(p, 40),
                align: le64(p, 48),
            });
        }
        let interp = match phdrs.iter().find(|p| p.p_type == PT_INTERP) {
            None => None,
            Some(p) => {
                if p.filesz < 2 || p.filesz > 4096 {
                    return Err(malformed("PT_INTERP size out of range"));
                }
                match p.offset.checked_add(p.filesz) {
                    Some(end) if end <= src.size() => {}
                    _ => return Err(malformed("PT_INTERP lies outside the file")),
                }
                Some((p.offset, p.filesz))
            }
        };
        let exec_stack = phdrs.iter().any(|p| p.p_type == PT_GNU_STACK && p.flags & 1 != 0);
        let mut min_vaddr = u64::MAX;
        let mut max_vaddr = 0u64;
        for (i, p) in phdrs.iter().enumerate().filter(|(_, p)| p.p_type == PT_LOAD) {
            let bad = |m: &str| ElfError::Malformed(format!("PT_LOAD #{i}: {m}"));
            if p.filesz > p.memsz {
                return Err(bad("p_filesz > p_memsz"));
            }
            match p.offset.checked_add(p.filesz) {
                Some(end) if end <= src.size() => {}
                _ => return Err(bad("file data lies outside the file")),
            }
            let end = p
                .vaddr
                .checked_add(p.memsz)
                .ok_or_else(|| bad("p_vaddr + p_memsz overflows"))?;
            if end > (1 << 47) {
                return Err(bad("segment ends above the 47-bit user address space"));
            }
            if p.align > 1 && (!p.align.is_power_of_two() || p.offset % PAGE_SIZE != p.vaddr % PAGE_SIZE) {
                return Err(bad("p_offset and p_vaddr are not congruent modulo the page size"));
            }
            if p.memsz == 0 {
                continue;
            }
            min_vaddr = min_vaddr.min(p.vaddr & !(PAGE_SIZE - 1));
            max_vaddr = max_vaddr.max(end);
        }
        if min_vaddr == u64::MAX {
            return Err(malformed("no loadable segment"));
        }
        Ok(Elf {
            is_dyn: e_type == ET_DYN,
            entry,
            phoff,
            phnum,
            phdrs,
            min_vaddr,
            max_vaddr,
            exec_stack,
            interp,
        })
    }

    /// The program interpreter named by `PT_INTERP` (`/lib64/ld-linux-x86-64.so.2`), `None` for a static
    /// program.
    pub fn interpreter<S: Source + ?Sized>(&self, src: &S) -> Result<Option<String>, ElfError> {
        let Some((offset, size)) = self.interp else {
            return Ok(None);
        };
        let bad = |m: &str| ElfError::Malformed(format!("PT_INTERP: {m}"));
        let mut b = vec![0u8; size as usize];
        src.read_at(offset, &mut b)
            .map_err(|e| ElfError::Malformed(format!("PT_INTERP: {e}")))?;
        if b.pop() != Some(0) || b.contains(&0) {
            return Err(bad("not one NUL-terminated path"));
        }
        String::from_utf8(b).map(Some).map_err(|_| bad("not UTF-8"))
    }

    /// Bytes from the lowest to the end of the highest loaded page.
    pub fn span(&self) -> u64 {
        self.max_vaddr.div_ceil(PAGE_SIZE) * PAGE_SIZE - self.min_vaddr
    }

    /// Load bias for a given base: `ET_DYN` is moved so its lowest page lands on `base`; `ET_EXEC` stays.
    pub fn bias(&self, dyn_base: u64) -> u64 {
        if self.is_dyn {
            dyn_base.wrapping_sub(self.min_vaddr)
        } else {
            0
        }
    }

    /// Loadable segments, biased.
    pub fn load_segments(&self, bias: u64) -> impl Iterator<Item = ProgramHeader> + '_ {
        self.phdrs
            .iter()
            .filter(|p| p.p_type == PT_LOAD && p.memsz > 0)
            .map(move |p| ProgramHeader {
                vaddr: p.vaddr.wrapping_add(bias),
                ..*p
            })
    }

    /// Address of the program headers in the loaded image (for `AT_PHDR`).
    pub fn phdr_addr(&self, bias: u64) -> Option<u64> {
        if let Some(p) = self.phdrs.iter().find(|p| p.p_type == PT_PHDR) {
            return Some(p.vaddr.wrapping_add(bias));
        }
        // No PT_PHDR: find the PT_LOAD segment whose file data contains the table.
        self.phdrs
            .iter()
            .filter(|p| p.p_type == PT_LOAD)
            .find(|p| p.offset <= self.phoff && self.phoff < p.offset.saturating_add(p.filesz))
            .map(|p| p.vaddr.wrapping_add(self.phoff - p.offset).wrapping_add(bias))
    }

    /// Page ranges `[start, end)` with the union of the protections of the segments touching them, so that
    /// a page shared by two segments gets both.
    pub fn page_protections(&self, bias: u64) -> Vec<(u64, u64, Prot)> {
        let mut pages: std::collections::BTreeMap<u64, u32> = std::collections::BTreeMap::new();
        for p in self.load_segments(bias) {
            let start = p.vaddr & !(PAGE_SIZE - 1);
            let end = p.vaddr.saturating_add(p.memsz).div_ceil(PAGE_SIZE) * PAGE_SIZE;
            let mut page = start;
            while page < end {
                *pages.entry(page).or_insert(0) |= p.prot().0;
                page += PAGE_SIZE;
            }
        }
        // Merge runs of equal protection.
        let mut out: Vec<(u64, u64, Prot)> = Vec::new();
        for (page, prot) in pages {
            match out.last_mut() {
                Some((_, end, p)) if *end == page && p.0 == prot => *end += PAGE_SIZE,
                _ => out.push((page, page + PAGE_SIZE, Prot(prot))),
            }
        }
        out
    }
}

/// Auxiliary vector tags.
pub mod auxv {
    pub const AT_NULL: u64 = 0;
    pub const AT_PHDR: u64 = 3;
    pub const AT_PHENT: u64 = 4;
    pub const AT_PHNUM: u64 = 5;
    pub const AT_PAGESZ: u64 = 6;
    pub const AT_BASE: u64 = 7;
    pub const AT_FLAGS: u64 = 8;
    pub const AT_ENTRY: u64 = 9;
    pub const AT_UID: u64 = 11;
    pub const AT_EUID: u64 = 12;
    pub const AT_GID: u64 = 13;
    pub const AT_EGID: u64 = 14;
    pub const AT_PLATFORM: u64 = 15;
    pub const AT_HWCAP: u64 = 16;
    pub const AT_CLKTCK: u64 = 17;
    pub const AT_SECURE: u64 = 23;
    pub const AT_RANDOM: u64 = 25;
    pub const AT_HWCAP2: u64 = 26;
    pub const AT_EXECFN: u64 = 31;
    pub const AT_MINSIGSTKSZ: u64 = 51;
}

/// What goes into the initial stack.
#[derive(Debug, Clone, Default)]
pub struct StackSpec {
    pub argv: Vec<Vec<u8>>,
    pub envp: Vec<Vec<u8>>,
    /// `AT_EXECFN` string.
    pub execfn: Vec<u8>,
    /// Auxiliary entries besides AT_RANDOM, AT_EXECFN, AT_PLATFORM and AT_NULL (added by the builder).
    pub aux: Vec<(u64, u64)>,
    pub random: [u8; 16],
}

/// The built stack: bytes to copy to `[sp, top)`, plus where things ended up.
#[derive(Debug, Clone)]
pub struct BuiltStack {
    pub sp: u64,
    pub bytes: Vec<u8>,
    pub argv_addrs: Vec<u64>,
    pub random_addr: u64,
}

/// Builds the initial process stack ending at `top` (exclusive) and not going below `limit`.
pub fn build_stack(spec: &StackSpec, top: u64, limit: u64) -> Result<BuiltStack, ElfError> {
    let too_big = || ElfError::DoesNotFit("arguments and environment do not fit the stack".into());
    // Strings area, filled downwards from `top`.
    let mut strings: Vec<u8> = Vec::new();
    let mut place = |s: &[u8]| -> usize {
        // Offset of the string from the start of the strings area.
        let at = strings.len();
        strings.extend_from_slice(s);
        strings.push(0);
        at
    };
    let execfn_off = place(&spec.execfn);
    let env_offs: Vec<usize> = spec.envp.iter().map(|e| place(e)).collect();
    let arg_offs: Vec<usize> = spec.argv.iter().map(|a| place(a)).collect();
    let platform_off = place(b"x86_64");
    let strings_len = strings.len() as u64;
    let strings_start = top.checked_sub(strings_len).ok_or_else(too_big)?;
    let random_addr = (strings_start - 16) & !15;
    let addr_of = |off: usize| strings_start + off as u64;

    let mut aux: Vec<(u64, u64)> = spec.aux.clone();
    aux.push((auxv::AT_RANDOM, random_addr));
    aux.push((auxv::AT_EXECFN, addr_of(execfn_off)));
    aux.push((auxv::AT_PLATFORM, addr_of(platform_off)));
    aux.push((auxv::AT_NULL, 0));

    let words = 1 + spec.argv.len() + 1 + spec.envp.len() + 1 + 2 * aux.len();
    let table_bytes = (words as u64).checked_mul(8).ok_or_else(too_big)?;
    let sp = random_addr.checked_sub(table_bytes).ok_or_else(too_big)? & !15;
    if sp < limit {
        return Err(too_big());
    }
    let mut table: Vec<u64> = Vec::with_capacity(words);
    table.push(spec.argv.len() as u64);
    let argv_addrs: Vec<u64> = arg_offs.iter().map(|&o| addr_of(o)).collect();
    table.extend(&argv_addrs);
    table.push(0);
    table.extend(env_offs.iter().map(|&o| addr_of(o)));
    table.push(0);
    for (k, v) in &aux {
        table.push(*k);
        table.push(*v);
    }
    let mut bytes = vec![0u8; (top - sp) as usize];
    for (i, w) in table.iter().enumerate() {
        bytes[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
    }
    let r = (random_addr - sp) as usize;
    bytes[r..r + 16].copy_from_slice(&spec.random);
    let s = (strings_start - sp) as usize;
    bytes[s..s + strings.len()].copy_from_slice(&strings);
    Ok(BuiltStack {
        sp,
        bytes,
        argv_addrs,
        random_addr,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal ELF image: header + `phdrs` + payload padding to `file_len`.
    pub(crate) fn make_elf(e_type: u16, entry: u64, phdrs: &[ProgramHeader], file_len: usize) -> Vec<u8> {
        let mut f = vec![0u8; file_len.max(64 + phdrs.len() * 56)];
        f[0..4].copy_from_slice(&[0x7f, b'E', b'L', b'F']);
        f[4] = 2;
        f[5] = 1;
        f[6] = 1;
        f[16..18].copy_from_slice(&e_type.to_le_bytes());
        f[18..20].copy_from_slice(&EM_X86_64.to_le_bytes());
        f[20..24].copy_from_slice(&1u32.to_le_bytes());
        f[24..32].copy_from_slice(&entry.to_le_bytes());
        f[32..40].copy_from_slice(&64u64.to_le_bytes());
        f[52..54].copy_from_slice(&64u16.to_le_bytes());
        f[54..56].copy_from_slice(&56u16.to_le_bytes());
        f[56..58].copy_from_slice(&(phdrs.len() as u16).to_le_bytes());
        for (i, p) in phdrs.iter().enumerate() {
            let o = 64 + i * 56;
            f[o..o + 4].copy_from_slice(&p.p_type.to_le_bytes());
            f[o + 4..o + 8].copy_from_slice(&p.flags.to_le_bytes());
            f[o + 8..o + 16].copy_from_slice(&p.offset.to_le_bytes());
            f[o + 16..o + 24].copy_from_slice(&p.vaddr.to_le_bytes());
            f[o + 24..o + 32].copy_from_slice(&p.vaddr.to_le_bytes());
            f[o + 32..o + 40].copy_from_slice(&p.filesz.to_le_bytes());
            f[o + 40..o + 48].copy_from_slice(&p.memsz.to_le_bytes());
            f[o + 48..o + 56].copy_from_slice(&p.align.to_le_bytes());
        }
        f
    }

    pub(crate) fn load(
        p_type: u32,
        flags: u32,
        offset: u64,
        vaddr: u64,
        filesz: u64,
        memsz: u64,
    ) -> ProgramHeader {
        ProgramHeader {
            p_type,
            flags,
            offset,
            vaddr,
            filesz,
            memsz,
            align: 0x1000,
        }
    }

    #[test]
    fn parses_et_exec() {
        let phdrs = [
            load(PT_LOAD, 5, 0, 0x40_0000, 0x1800, 0x1800),
            load(PT_LOAD, 6, 0x2000, 0x40_3000, 0x100, 0x2000),
        ];
        let f = make_elf(ET_EXEC, 0x40_0100, &phdrs, 0x2100);
        let elf = Elf::parse(&f[..]).unwrap();
        assert!(!elf.is_dyn);
        assert_eq!(elf.bias(0x80_0000), 0, "ET_EXEC stays at its link address");
        assert_eq!(elf.min_vaddr, 0x40_0000);
        assert_eq!(elf.max_vaddr, 0x40_5000);
        assert_eq!(
            elf.phdr_addr(0),
            Some(0x40_0040),
            "found through the first PT_LOAD"
        );
        let prots = elf.page_protections(0);
        assert_eq!(
            prots,
            vec![
                (0x40_0000, 0x40_2000, Prot(Prot::READ | Prot::EXEC)),
                (0x40_3000, 0x40_5000, Prot::RW)
            ]
        );
    }

    #[test]
    fn parses_et_dyn_and_applies_the_base() {
        let phdrs = [
            load(PT_PHDR, 4, 64, 64, 112, 112),
            load(PT_LOAD, 4, 0, 0, 0x800, 0x800),
            load(PT_LOAD, 5, 0x1000, 0x1000, 0x10, 0x10),
        ];
        let f = make_elf(ET_DYN, 0x1000, &phdrs, 0x1010);
        let elf = Elf::parse(&f[..]).unwrap();
        assert!(elf.is_dyn);
        let bias = elf.bias(0x40_0000);
        assert_eq!(bias, 0x40_0000);
        assert_eq!(elf.entry + bias, 0x40_1000);
        assert_eq!(elf.phdr_addr(bias), Some(0x40_0040));
        let segs: Vec<_> = elf.load_segments(bias).map(|p| p.vaddr).collect();
        assert_eq!(segs, vec![0x40_0000, 0x40_1000]);
    }

    #[test]
    fn shared_pages_get_the_union_of_protections() {
        let phdrs = [
            load(PT_LOAD, 5, 0, 0x40_0000, 0x1800, 0x1800),
            load(PT_LOAD, 6, 0x1800, 0x40_1800, 0x10, 0x10),
        ];
        let f = make_elf(ET_EXEC, 0x40_0000, &phdrs, 0x1810);
        let elf = Elf::parse(&f[..]).unwrap();
        assert_eq!(
            elf.page_protections(0),
            vec![
                (0x40_0000, 0x40_1000, Prot(Prot::READ | Prot::EXEC)),
                (0x40_1000, 0x40_2000, Prot(Prot::READ | Prot::WRITE | Prot::EXEC))
            ]
        );
    }

    #[test]
    fn bad_elves_are_errors_not_panics() {
        assert!(matches!(Elf::parse(&b""[..]), Err(ElfError::BadMagic)));
        assert!(matches!(Elf::parse(&b"#!/bin/sh\n"[..]), Err(ElfError::BadMagic)));
        let good = make_elf(
            ET_EXEC,
            0x40_0000,
            &[load(PT_LOAD, 5, 0, 0x40_0000, 0x100, 0x100)],
            0x100,
        );
        assert!(Elf::parse(&good[..]).is_ok());
        let mutate = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut b = good.clone();
            f(&mut b);
            Elf::parse(&b[..])
        };
        assert!(matches!(mutate(&|b| b[4] = 1), Err(ElfError::WrongArch(_))));
        assert!(matches!(mutate(&|b| b[5] = 2), Err(ElfError::WrongArch(_))));
        assert!(matches!(mutate(&|b| b[18] = 3), Err(ElfError::WrongArch(_))));
        assert!(matches!(mutate(&|b| b[16] = 1), Err(ElfError::NotExecutable(1))));
        assert!(matches!(mutate(&|b| b[54] = 32), Err(ElfError::Malformed(_))));
        assert!(matches!(mutate(&|b| b[56] = 0), Err(ElfError::Malformed(_))));
        assert!(matches!(
            mutate(&|b| b[32..40].copy_from_slice(&u64::MAX.to_le_bytes())),
            Err(ElfError::Malformed(_))
        ));
        assert!(matches!(mutate(&|b| b.truncate(80)), Err(ElfError::Malformed(_))));
        assert!(matches!(mutate(&|b| b.truncate(30)), Err(ElfError::Malformed(_))));
        // filesz > memsz, data beyond the file, vaddr overflow, misaligned offset.
        let with = |p: ProgramHeader| Elf::parse(&make_elf(ET_EXEC, 0, &[p], 0x100)[..]);
        assert!(with(load(PT_LOAD, 5, 0, 0x40_0000, 0x100, 0x10)).is_err());
        assert!(with(load(PT_LOAD, 5, 0, 0x40_0000, 0x10_0000, 0x10_0000)).is_err());
        assert!(with(load(PT_LOAD, 5, u64::MAX, 0x40_0000, 2, 2)).is_err());
        assert!(with(load(PT_LOAD, 5, 0, u64::MAX - 4, 0, 0x100)).is_err());
        assert!(with(load(PT_LOAD, 5, 0x10, 0x40_0000, 0x10, 0x10)).is_err());
        // PT_INTERP must be a NUL-terminated path inside the file.
        let dynamic = |path: &[u8]| {
            let at = 0x100u64;
            let phdrs = [
                load(PT_INTERP, 4, at, at, path.len() as u64, path.len() as u64),
                load(PT_LOAD, 5, 0, 0x40_0000, 0x100, 0x100),
            ];
            let mut f = make_elf(ET_DYN, 0x40_0000, &phdrs, 0x200);
            f[at as usize..at as usize + path.len()].copy_from_slice(path);
            let elf = Elf::parse(&f[..])?;
            elf.interpreter(&f[..])
        };
        assert_eq!(
            dynamic(b"/lib64/ld-linux-x86-64.so.2\0").unwrap().as_deref(),
            Some("/lib64/ld-linux-x86-64.so.2")
        );
        assert!(matches!(dynamic(b"/lib/ld\0x\0"), Err(ElfError::Malformed(_))));
        assert!(matches!(dynamic(b"/lib/ld.so"), Err(ElfError::Malformed(_))));
        assert!(matches!(dynamic(b"\0"), Err(ElfError::Malformed(_))));
        assert!(
            with(load(PT_INTERP, 4, 0xf0, 0, 0x20, 0x20)).is_err(),
            "outside the file"
        );
        assert_eq!(
            Elf::parse(&good[..]).unwrap().interpreter(&good[..]).unwrap(),
            None
        );
        assert!(matches!(
            with(load(PT_PHDR, 4, 64, 64, 56, 56)),
            Err(ElfError::Malformed(_))
        ));
        // Random garbage after a valid magic never panics.
        let mut seed = 0x1234_5678u64;
        for _ in 0..2000 {
            let mut b = good.clone();
            for _ in 0..8 {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let at = (seed >> 33) as usize % b.len();
                b[at] = (seed >> 20) as u8;
            }
            let _ = Elf::parse(&b[..]);
        }
    }

    fn read_u64(bytes: &[u8], at: usize) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[at..at + 8]);
        u64::from_le_bytes(b)
    }

    fn cstr_at(bytes: &[u8], base: u64, addr: u64) -> String {
        let start = (addr - base) as usize;
        let end = bytes[start..].iter().position(|&b| b == 0).unwrap() + start;
        String::from_utf8(bytes[start..end].to_vec()).unwrap()
    }

    #[test]
    fn stack_layout_follows_the_linux_abi() {
        let spec = StackSpec {
            argv: vec![b"prog".to_vec(), b"-x".to_vec(), b"two words".to_vec()],
            envp: vec![b"A=1".to_vec(), b"CAN_BUS=socketcan:can0".to_vec()],
            execfn: b"/prog".to_vec(),
            aux: vec![(auxv::AT_PAGESZ, 4096), (auxv::AT_ENTRY, 0x40_1000)],
            random: [7; 16],
        };
        let top = 0x80_0000;
        let st = build_stack(&spec, top, 0x70_0000).unwrap();
        assert_eq!(st.sp % 16, 0, "rsp is 16-byte aligned at entry");
        assert_eq!(st.bytes.len() as u64, top - st.sp);
        let b = &st.bytes;
        assert_eq!(read_u64(b, 0), 3, "argc");
        let argv: Vec<String> = (0..3)
            .map(|i| cstr_at(b, st.sp, read_u64(b, 8 + i * 8)))
            .collect();
        assert_eq!(argv, ["prog", "-x", "two words"]);
        assert_eq!(read_u64(b, 32), 0, "argv terminator");
        assert_eq!(cstr_at(b, st.sp, read_u64(b, 40)), "A=1");
        assert_eq!(cstr_at(b, st.sp, read_u64(b, 48)), "CAN_BUS=socketcan:can0");
        assert_eq!(read_u64(b, 56), 0, "envp terminator");
        let mut aux = std::collections::HashMap::new();
        let mut at = 64;
        loop {
            let (k, v) = (read_u64(b, at), read_u64(b, at + 8));
            at += 16;
            if k == auxv::AT_NULL {
                break;
            }
            aux.insert(k, v);
        }
        assert_eq!(aux[&auxv::AT_PAGESZ], 4096);
        assert_eq!(aux[&auxv::AT_ENTRY], 0x40_1000);
        let r = aux[&auxv::AT_RANDOM];
        assert_eq!(r % 16, 0);
        assert_eq!(&b[(r - st.sp) as usize..(r - st.sp) as usize + 16], &[7; 16]);
        assert_eq!(cstr_at(b, st.sp, aux[&auxv::AT_EXECFN]), "/prog");
        assert_eq!(cstr_at(b, st.sp, aux[&auxv::AT_PLATFORM]), "x86_64");
        // All strings lie within the stack.
        assert!(st.argv_addrs.iter().all(|&a| a >= st.sp && a < top));
    }

    #[test]
    fn stack_overflowing_its_limit_is_an_error() {
        let spec = StackSpec {
            argv: vec![vec![b'a'; 100_000]],
            ..StackSpec::default()
        };
        assert!(build_stack(&spec, 0x80_0000, 0x80_0000 - 4096).is_err());
        assert!(build_stack(&spec, 1000, 0).is_err());
    }
}
