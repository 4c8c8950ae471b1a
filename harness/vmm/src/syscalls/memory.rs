//! Memory syscalls: `brk`, `mmap` (anonymous, and private copies of files under the guest root),
//! `munmap`, `mprotect`, `mremap`, `madvise`, `msync`.

use super::abi::SysResult;
use crate::errno::Errno;
use crate::fdtable::Object;
use crate::fs::FileKind;
use crate::guest::Guest;
use crate::memory::{Prot, PAGE_SIZE};
use crate::mm::{page_down, page_up, Kind};
use crate::vcpu::CpuState;

const MAP_SHARED: u64 = 0x01;
const MAP_PRIVATE: u64 = 0x02;
const MAP_SHARED_VALIDATE: u64 = 0x03;
const MAP_FIXED: u64 = 0x10;
const MAP_ANONYMOUS: u64 = 0x20;
const MAP_FIXED_NOREPLACE: u64 = 0x10_0000;
const PROT_MASK: u64 = 0x7;
const PROT_GROWS: u64 = 0x0100_0000 | 0x0200_0000;
const MREMAP_MAYMOVE: u64 = 1;
const MREMAP_FIXED: u64 = 2;
const MADV_DONTNEED: u64 = 4;
const MADV_FREE: u64 = 8;

pub fn brk(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    Ok(g.mm.set_brk(&mut g.ram, a[0]))
}

pub fn mmap(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    let (addr, len, prot, flags, fd, off) = (a[0], a[1], a[2], a[3], a[4] as i32, a[5]);
    if len == 0 {
        return Err(Errno::EINVAL);
    }
    let len = page_up(len).ok_or(Errno::ENOMEM)?;
    if prot & !(PROT_MASK | PROT_GROWS) != 0 {
        return Err(Errno::EINVAL);
    }
    let prot = Prot((prot & PROT_MASK) as u32);
    match flags & 0x3 {
        MAP_SHARED | MAP_PRIVATE | MAP_SHARED_VALIDATE => {}
        _ => return Err(Errno::EINVAL),
    }
    // File-backed: a private copy of the file's bytes (files are read-only, so a shared writable
    // mapping is refused).
    let mut source = None;
    if flags & MAP_ANONYMOUS == 0 {
        if off % PAGE_SIZE != 0 {
            return Err(Errno::EINVAL);
        }
        let desc = g.fds.get(fd)?;
        let d = desc.borrow();
        match &d.object {
            Object::File(f) if f.kind == FileKind::Regular => {
                if flags & 0x3 != MAP_PRIVATE && prot.writable() {
                    return Err(Errno::EACCES);
                }
                source = Some(f.file.try_clone().map_err(|e| Errno::from_io(&e))?);
            }
            Object::File(_) => return Err(Errno::ENODEV),
            _ => return Err(Errno::EACCES),
        }
    }
    let start = if flags & (MAP_FIXED | MAP_FIXED_NOREPLACE) != 0 {
        if addr % PAGE_SIZE != 0 {
            return Err(Errno::EINVAL);
        }
        if flags & MAP_FIXED_NOREPLACE != 0 {
            let end = addr.checked_add(len).ok_or(Errno::ENOMEM)?;
            let mut at = addr;
            while at < end {
                if g.mm.region_at(at).is_some() {
                    return Err(Errno::EEXIST);
                }
                at += PAGE_SIZE;
            }
        }
        addr
    } else {
        g.mm.find_free(len, page_down(addr)).ok_or(Errno::ENOMEM)?
    };
    let kind = if source.is_some() { Kind::File } else { Kind::Anon };
    g.mm.map_fixed(&mut g.ram, start, len, prot, kind)?;
    if let Some(file) = source {
        let size = file.metadata().map_err(|e| Errno::from_io(&e))?.len();
        let avail = size.saturating_sub(off).min(len);
        if avail > 0 {
            if let Err(e) = g.ram.read_from_file(start, avail, &file, off) {
                let _ = g.mm.unmap(&mut g.ram, start, len);
                return Err(Errno::from_io(&e));
            }
        }
    }
    Ok(start)
}

pub fn munmap(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    g.mm.unmap(&mut g.ram, a[0], a[1])?;
    Ok(0)
}

pub fn mprotect(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    if a[2] & !(PROT_MASK | PROT_GROWS) != 0 {
        return Err(Errno::EINVAL);
    }
    g.mm.protect(&mut g.ram, a[0], a[1], Prot((a[2] & PROT_MASK) as u32))?;
    Ok(0)
}

pub fn mremap(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    let (old, old_len, new_len, flags, new_addr) = (a[0], a[1], a[2], a[3], a[4]);
    if old % PAGE_SIZE != 0 || flags & !(MREMAP_MAYMOVE | MREMAP_FIXED | 4) != 0 || new_len == 0 {
        return Err(Errno::EINVAL);
    }
    if flags & MREMAP_FIXED != 0 {
        // Moving to a caller-chosen address is not supported.
        let _ = new_addr;
        return Err(Errno::EINVAL);
    }
    let old_len = page_up(old_len).ok_or(Errno::EINVAL)?;
    let new_len = page_up(new_len).ok_or(Errno::ENOMEM)?;
    // The old range must be one mapping.
    let region = *g.mm.region_at(old).ok_or(Errno::EFAULT)?;
    let old_end = old.checked_add(old_len).ok_or(Errno::EFAULT)?;
    if old_len == 0 || old_end > region.end {
        return Err(Errno::EFAULT);
    }
    if new_len <= old_len {
        if new_len < old_len {
            g.mm.unmap(&mut g.ram, old + new_len, old_len - new_len)?;
        }
        return Ok(old);
    }
    let grow = new_len - old_len;
    if g.mm.find_free(grow, old_end) == Some(old_end) {
        g.mm.map_fixed(&mut g.ram, old_end, grow, region.prot, region.kind)?;
        return Ok(old);
    }
    if flags & MREMAP_MAYMOVE == 0 {
        return Err(Errno::ENOMEM);
    }
    let dst = g.mm.find_free(new_len, 0).ok_or(Errno::ENOMEM)?;
    g.mm.map_fixed(&mut g.ram, dst, new_len, region.prot, region.kind)?;
    // Copy in chunks so a large move does not need one large buffer.
    let mut done = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    while done < old_len {
        let n = (old_len - done).min(buf.len() as u64);
        let chunk = &mut buf[..n as usize];
        g.ram.read(old + done, chunk).map_err(|_| Errno::EFAULT)?;
        g.ram.write(dst + done, chunk).map_err(|_| Errno::EFAULT)?;
        done += n;
    }
    g.mm.unmap(&mut g.ram, old, old_len)?;
    Ok(dst)
}

pub fn madvise(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    let (addr, len, advice) = (a[0], a[1], a[2]);
    if addr % PAGE_SIZE != 0 {
        return Err(Errno::EINVAL);
    }
    let len = page_up(len).ok_or(Errno::EINVAL)?;
    let end = addr.checked_add(len).ok_or(Errno::EINVAL)?;
    if advice == MADV_DONTNEED || advice == MADV_FREE {
        // Private anonymous pages read back as zeros afterwards.
        let mut at = addr;
        while at < end {
            let Some(r) = g.mm.region_at(at).copied() else {
                return Err(Errno::ENOMEM);
            };
            let stop = r.end.min(end);
            if r.kind != Kind::File && r.kind != Kind::Elf {
                g.ram.zero(at, stop - at).map_err(|_| Errno::EFAULT)?;
            }
            at = stop;
        }
    }
    Ok(0)
}

pub fn msync(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    if !a[0].is_multiple_of(PAGE_SIZE) {
        return Err(Errno::EINVAL);
    }
    g.mm.check(a[0], a[1], crate::mm::Access::Read)
        .map_err(|_| Errno::ENOMEM)?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest::tests::test_guest;

    fn cpu() -> CpuState {
        CpuState::for_tests(Default::default())
    }

    #[test]
    fn anonymous_mmap_munmap_and_errors() {
        let mut g = test_guest();
        let mut c = cpu();
        let p = mmap(&mut g, &mut c, &[0, 12288, 3, 0x22, u64::MAX, 0]).unwrap();
        assert_eq!(p % PAGE_SIZE, 0);
        g.write_user(p, b"data").unwrap();
        assert_eq!(mprotect(&mut g, &mut c, &[p, 4096, 0, 0, 0, 0]), Ok(0));
        assert_eq!(g.read_user(p, 1), Err(Errno::EFAULT));
        assert_eq!(munmap(&mut g, &mut c, &[p, 12288, 0, 0, 0, 0]), Ok(0));
        assert_eq!(
            mmap(&mut g, &mut c, &[0, 0, 3, 0x22, u64::MAX, 0]),
            Err(Errno::EINVAL)
        );
        assert_eq!(
            mmap(&mut g, &mut c, &[0, 1 << 46, 3, 0x22, u64::MAX, 0]),
            Err(Errno::ENOMEM)
        );
        assert_eq!(
            mmap(&mut g, &mut c, &[0, u64::MAX, 3, 0x22, u64::MAX, 0]),
            Err(Errno::ENOMEM)
        );
        assert_eq!(
            mmap(&mut g, &mut c, &[0, 4096, 3, 0x20, u64::MAX, 0]),
            Err(Errno::EINVAL),
            "no type"
        );
        assert_eq!(
            mmap(&mut g, &mut c, &[0, 4096, 0x80, 0x22, u64::MAX, 0]),
            Err(Errno::EINVAL)
        );
        assert_eq!(
            mmap(&mut g, &mut c, &[0x4000, 4096, 3, 0x32, u64::MAX, 0]),
            Err(Errno::ENOMEM),
            "system area"
        );
        assert_eq!(
            mmap(&mut g, &mut c, &[0, 4096, 1, 0x02, 77, 0]),
            Err(Errno::EBADF)
        );
        assert_eq!(
            mmap(&mut g, &mut c, &[0, 4096, 1, 0x02, 1, 0]),
            Err(Errno::EACCES),
            "stdout is no file"
        );
        // MAP_FIXED_NOREPLACE over an existing mapping.
        assert_eq!(
            mmap(&mut g, &mut c, &[0x40_0000, 4096, 3, 0x10_0022, u64::MAX, 0]),
            Err(Errno::EEXIST)
        );
    }

    #[test]
    fn mremap_grows_and_moves_with_contents() {
        let mut g = test_guest();
        let mut c = cpu();
        let p = mmap(&mut g, &mut c, &[0, 8192, 3, 0x22, u64::MAX, 0]).unwrap();
        g.write_user(p, b"keep me").unwrap();
        // Allocate right above so in-place growth is impossible.
        let _blocker = mmap(&mut g, &mut c, &[p + 8192, 4096, 3, 0x32, u64::MAX, 0]).unwrap();
        assert_eq!(
            mremap(&mut g, &mut c, &[p, 8192, 65536, 0, 0, 0]),
            Err(Errno::ENOMEM)
        );
        let q = mremap(&mut g, &mut c, &[p, 8192, 65536, MREMAP_MAYMOVE, 0, 0]).unwrap();
        assert_ne!(q, p);
        assert_eq!(g.read_user(q, 7).unwrap(), b"keep me");
        assert_eq!(g.read_user(p, 1), Err(Errno::EFAULT), "old range gone");
        assert_eq!(
            mremap(&mut g, &mut c, &[q, 65536, 4096, 0, 0, 0]),
            Ok(q),
            "shrink in place"
        );
        assert_eq!(
            mremap(&mut g, &mut c, &[0x10, 4096, 8192, 1, 0, 0]),
            Err(Errno::EINVAL)
        );
        assert_eq!(
            mremap(&mut g, &mut c, &[0x7000_0000, 4096, 8192, 1, 0, 0]),
            Err(Errno::EFAULT)
        );
    }

    #[test]
    fn madvise_dontneed_zeroes() {
        let mut g = test_guest();
        let mut c = cpu();
        g.write_user(0x40_2000, b"xyz").unwrap();
        assert_eq!(
            madvise(&mut g, &mut c, &[0x40_2000, 4096, MADV_DONTNEED, 0, 0, 0]),
            Ok(0)
        );
        assert_eq!(g.read_user(0x40_2000, 3).unwrap(), [0, 0, 0]);
        assert_eq!(
            madvise(&mut g, &mut c, &[0x40_2001, 4096, MADV_DONTNEED, 0, 0, 0]),
            Err(Errno::EINVAL)
        );
    }
}
