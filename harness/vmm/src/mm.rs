//! The guest's user address space: which pages are mapped with which protection (ELF image, brk heap,
//! anonymous and file mappings, stack), `brk`/`mmap`/`munmap`/`mprotect`, and the check every guest pointer
//! passes before the VMM touches it.
//!
//! The region map is the single source of truth; every change is mirrored into the page tables
//! ([`crate::memory::set_user_pages`]). Invariant: user pages that are not mapped contain zeros (pages are
//! zeroed when they are unmapped), so a new anonymous mapping never needs clearing and a cold-started guest
//! costs nothing for memory it never touches.
//!
//! Revoking access (munmap, mprotect to less) is recorded ([`AddressSpace::take_revocations`]); before the
//! guest runs again the VMM clears those entries through the guest's own MMU with a CPL0 stub and writes
//! the reduced entries back (see [`crate::memory`] for why: KVM caches translations, and on shadow-paging
//! hosts such as PVM never sees page-table writes made by the VMM directly).

use std::collections::BTreeMap;

use crate::errno::Errno;
use crate::memory::{set_user_pages, GuestRam, Layout, Prot, PAGE_SIZE, USER_START};

/// What a region holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Kind {
    Elf,
    Brk,
    Stack,
    Anon,
    File,
}

/// A mapped range `[start, end)`, page aligned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Region {
    pub start: u64,
    pub end: u64,
    pub prot: Prot,
    pub kind: Kind,
}

/// Access a syscall needs to a guest buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// Errors creating an address space.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressSpaceError {
    #[error("stack size overflows")]
    StackSizeOverflows,
    #[error("guest memory too small for a {stack_size}-byte stack")]
    StackTooLarge { stack_size: u64 },
}

/// Gap kept unmapped below the stack.
pub const STACK_GUARD: u64 = 64 * 1024;

/// Rounds up to a page; `None` on overflow.
pub fn page_up(x: u64) -> Option<u64> {
    x.checked_add(PAGE_SIZE - 1).map(|v| v & !(PAGE_SIZE - 1))
}

pub fn page_down(x: u64) -> u64 {
    x & !(PAGE_SIZE - 1)
}

/// The serialisable bookkeeping of the address space.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct AddressSpace {
    regions: BTreeMap<u64, Region>,
    pub layout: Layout,
    pub brk_start: u64,
    pub brk: u64,
    pub stack_bottom: u64,
    pub stack_top: u64,
    mmap_top: u64,
    /// Page ranges whose access was reduced since the last [`AddressSpace::take_revocations`].
    #[serde(skip)]
    revoked: Vec<(u64, u64)>,
}

impl AddressSpace {
    /// An empty address space with the stack reserved at the top of the user range.
    pub fn new(layout: Layout, stack_size: u64) -> Result<AddressSpace, AddressSpaceError> {
        let stack_top = layout.user_end();
        let stack_size = page_up(stack_size).ok_or(AddressSpaceError::StackSizeOverflows)?;
        let stack_bottom = stack_top
            .checked_sub(stack_size)
            .filter(|b| *b > USER_START + STACK_GUARD)
            .ok_or(AddressSpaceError::StackTooLarge { stack_size })?;
        Ok(AddressSpace {
            regions: BTreeMap::new(),
            layout,
            brk_start: 0,
            brk: 0,
            stack_bottom,
            stack_top,
            mmap_top: stack_bottom - STACK_GUARD,
            revoked: Vec::new(),
        })
    }

    /// All regions in address order.
    pub fn regions(&self) -> impl Iterator<Item = &Region> {
        self.regions.values()
    }

    /// Ranges whose access was revoked (unmapped or reduced) since the last call: the VMM must make KVM
    /// forget its cached translations for them before the guest runs again.
    pub fn take_revocations(&mut self) -> Vec<(u64, u64)> {
        std::mem::take(&mut self.revoked)
    }

    fn revoke(&mut self, start: u64, end: u64) {
        match self.revoked.last_mut() {
            Some(last) if last.1 == start => last.1 = end,
            _ => self.revoked.push((start, end)),
        }
    }

    /// Checks that `[addr, addr + len)` lies in mapped user memory with the access `access`.
    /// A zero length is always fine (Linux does not touch the buffer).
    pub fn check(&self, addr: u64, len: u64, access: Access) -> Result<(), Errno> {
        if len == 0 {
            return Ok(());
        }
        let end = addr.checked_add(len).ok_or(Errno::EFAULT)?;
        let mut at = addr;
        while at < end {
            let r = self.region_at(at).ok_or(Errno::EFAULT)?;
            let ok = match access {
                Access::Read => r.prot.readable(),
                Access::Write => r.prot.writable(),
            };
            if !ok {
                return Err(Errno::EFAULT);
            }
            at = r.end;
        }
        Ok(())
    }

    /// The region containing `addr`.
    pub fn region_at(&self, addr: u64) -> Option<&Region> {
        self.regions
            .range(..=addr)
            .next_back()
            .map(|(_, r)| r)
            .filter(|r| addr < r.end)
    }

    fn overlaps(&self, start: u64, end: u64) -> bool {
        self.regions
            .range(..end)
            .next_back()
            .is_some_and(|(_, r)| r.end > start)
    }

    fn in_user_range(&self, start: u64, end: u64) -> bool {
        start >= USER_START && end <= self.layout.user_end() && start < end
    }

    /// Removes `[start, end)` from the map (splitting regions) and returns what was removed.
    fn carve(&mut self, start: u64, end: u64) -> Vec<Region> {
        let mut removed = Vec::new();
        let keys: Vec<u64> = self
            .regions
            .range(..end)
            .rev()
            .take_while(|(_, r)| r.end > start)
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            let Some(r) = self.regions.remove(&k) else {
                continue;
            };
            if r.start < start {
                self.regions.insert(r.start, Region { end: start, ..r });
            }
            if r.end > end {
                self.regions.insert(end, Region { start: end, ..r });
            }
            removed.push(Region {
                start: r.start.max(start),
                end: r.end.min(end),
                ..r
            });
        }
        removed
    }

    /// Merges `r` with equal neighbours and inserts it.
    fn insert_merged(&mut self, mut r: Region) {
        if let Some((&k, prev)) = self.regions.range(..r.start).next_back() {
            if prev.end == r.start && prev.prot == r.prot && prev.kind == r.kind {
                r.start = prev.start;
                self.regions.remove(&k);
            }
        }
        if let Some(next) = self.regions.get(&r.end).copied() {
            if next.prot == r.prot && next.kind == r.kind {
                r.end = next.end;
                self.regions.remove(&next.start);
            }
        }
        self.regions.insert(r.start, r);
    }

    /// Maps `[start, start + len)` (page aligned), replacing whatever was there (those pages are zeroed).
    pub fn map_fixed(
        &mut self,
        ram: &mut GuestRam,
        start: u64,
        len: u64,
        prot: Prot,
        kind: Kind,
    ) -> Result<(), Errno> {
        let end = start.checked_add(len).ok_or(Errno::ENOMEM)?;
        if !start.is_multiple_of(PAGE_SIZE)
            || !len.is_multiple_of(PAGE_SIZE)
            || !self.in_user_range(start, end)
        {
            return Err(Errno::ENOMEM);
        }
        let replaced = self.carve(start, end);
        for r in &replaced {
            ram.zero(r.start, r.end - r.start).map_err(|_| Errno::EFAULT)?;
            self.revoke(r.start, r.end);
        }
        if !set_user_pages(ram, &self.layout, start, len, prot) {
            return Err(Errno::ENOMEM);
        }
        self.insert_merged(Region {
            start,
            end,
            prot,
            kind,
        });
        Ok(())
    }

    /// Finds a free range of `len` bytes, preferring `hint`, else the highest free range below the mmap top.
    pub fn find_free(&self, len: u64, hint: u64) -> Option<u64> {
        if len == 0 {
            return None;
        }
        if hint != 0 && hint.is_multiple_of(PAGE_SIZE) {
            if let Some(end) = hint.checked_add(len) {
                if self.in_user_range(hint, end) && end <= self.mmap_top && !self.overlaps(hint, end) {
                    return Some(hint);
                }
            }
        }
        // Walk the gaps downwards from mmap_top.
        let mut top = self.mmap_top;
        let floor = self.brk.max(USER_START);
        for r in self.regions.range(..self.mmap_top).rev() {
            let r = r.1;
            if r.end <= top && top - r.end >= len && top - len >= floor {
                return Some(top - len);
            }
            top = top.min(r.start);
            if top < floor.saturating_add(len) {
                return None;
            }
        }
        if top >= floor.saturating_add(len) {
            Some(top - len)
        } else {
            None
        }
    }

    /// `munmap`: unmaps and zeroes every page of the range that was mapped.
    pub fn unmap(&mut self, ram: &mut GuestRam, start: u64, len: u64) -> Result<(), Errno> {
        if !start.is_multiple_of(PAGE_SIZE) || len == 0 {
            return Err(Errno::EINVAL);
        }
        let len = page_up(len).ok_or(Errno::EINVAL)?;
        let end = start.checked_add(len).ok_or(Errno::EINVAL)?;
        if end > (1 << 47) {
            return Err(Errno::EINVAL);
        }
        for r in self.carve(start, end) {
            set_user_pages(ram, &self.layout, r.start, r.end - r.start, Prot::NONE);
            ram.zero(r.start, r.end - r.start).map_err(|_| Errno::EFAULT)?;
            self.revoke(r.start, r.end);
        }
        Ok(())
    }

    /// `mprotect`: every page of the range must be mapped.
    pub fn protect(&mut self, ram: &mut GuestRam, start: u64, len: u64, prot: Prot) -> Result<(), Errno> {
        if !start.is_multiple_of(PAGE_SIZE) {
            return Err(Errno::EINVAL);
        }
        if prot.0 & !(Prot::READ | Prot::WRITE | Prot::EXEC) != 0 {
            return Err(Errno::EINVAL);
        }
        let len = page_up(len).ok_or(Errno::ENOMEM)?;
        if len == 0 {
            return Ok(());
        }
        let end = start.checked_add(len).ok_or(Errno::ENOMEM)?;
        // Every page must be mapped.
        let mut at = start;
        while at < end {
            let r = self.region_at(at).ok_or(Errno::ENOMEM)?;
            at = r.end;
        }
        for r in self.carve(start, end) {
            if !set_user_pages(ram, &self.layout, r.start, r.end - r.start, prot) {
                return Err(Errno::ENOMEM);
            }
            let less = (r.prot.writable() && !prot.writable())
                || (r.prot.readable() && !prot.readable())
                || (r.prot.executable() && !prot.executable());
            if less {
                self.revoke(r.start, r.end);
            }
            self.insert_merged(Region { prot, ..r });
        }
        Ok(())
    }

    /// Sets the initial program break (page aligned, just above the ELF image).
    pub fn init_brk(&mut self, start: u64) {
        self.brk_start = start;
        self.brk = start;
    }

    /// `brk`: grows or shrinks the heap; returns the new break, or the old one when the request fails
    /// (Linux semantics).
    pub fn set_brk(&mut self, ram: &mut GuestRam, new: u64) -> u64 {
        if new < self.brk_start {
            return self.brk;
        }
        let (Some(old_top), Some(new_top)) = (page_up(self.brk), page_up(new)) else {
            return self.brk;
        };
        if new_top > old_top {
            if new_top > self.mmap_top || self.overlaps(old_top, new_top) {
                return self.brk;
            }
            if self
                .map_fixed(ram, old_top, new_top - old_top, Prot::RW, Kind::Brk)
                .is_err()
            {
                return self.brk;
            }
        } else if new_top < old_top && self.unmap(ram, new_top, old_top - new_top).is_err() {
            return self.brk;
        }
        self.brk = new;
        self.brk
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space() -> (AddressSpace, GuestRam) {
        let layout = Layout::new(16 << 20).unwrap();
        let mut ram = GuestRam::anonymous(16 << 20).unwrap();
        crate::memory::build_page_tables(&mut ram, &layout).unwrap();
        (AddressSpace::new(layout, 1 << 20).unwrap(), ram)
    }

    #[test]
    fn pointer_checks() {
        let (mut a, mut ram) = space();
        a.map_fixed(&mut ram, 0x40_0000, 0x2000, Prot(Prot::READ), Kind::Elf)
            .unwrap();
        a.map_fixed(&mut ram, 0x40_2000, 0x1000, Prot::RW, Kind::Elf)
            .unwrap();
        assert_eq!(a.check(0x40_0000, 0x3000, Access::Read), Ok(()));
        assert_eq!(
            a.check(0x40_1ff0, 0x20, Access::Read),
            Ok(()),
            "spans two regions"
        );
        assert_eq!(
            a.check(0x40_1ff0, 0x20, Access::Write),
            Err(Errno::EFAULT),
            "read-only part"
        );
        assert_eq!(a.check(0x40_2000, 0x1000, Access::Write), Ok(()));
        assert_eq!(
            a.check(0x40_2ff8, 0x10, Access::Write),
            Err(Errno::EFAULT),
            "runs off the end"
        );
        assert_eq!(a.check(0, 8, Access::Read), Err(Errno::EFAULT), "null");
        assert_eq!(
            a.check(0x1000, 8, Access::Read),
            Err(Errno::EFAULT),
            "system page"
        );
        assert_eq!(
            a.check(u64::MAX - 4, 16, Access::Read),
            Err(Errno::EFAULT),
            "overflow"
        );
        assert_eq!(
            a.check(0x40_0000, u64::MAX, Access::Read),
            Err(Errno::EFAULT),
            "huge length"
        );
        assert_eq!(
            a.check(0xdead_0000_0000, 0, Access::Write),
            Ok(()),
            "zero length touches nothing"
        );
    }

    #[test]
    fn mmap_allocates_top_down_and_munmap_frees() {
        let (mut a, mut ram) = space();
        a.init_brk(0x50_0000);
        let top = a.stack_bottom - STACK_GUARD;
        let p = a.find_free(0x3000, 0).unwrap();
        assert_eq!(p, top - 0x3000);
        a.map_fixed(&mut ram, p, 0x3000, Prot::RW, Kind::Anon).unwrap();
        let q = a.find_free(0x1000, 0).unwrap();
        assert_eq!(q, p - 0x1000);
        a.map_fixed(&mut ram, q, 0x1000, Prot::RW, Kind::Anon).unwrap();
        // Data written, unmapped, remapped: zero again.
        ram.write(p, b"secret").unwrap();
        a.unmap(&mut ram, p, 0x3000).unwrap();
        assert_eq!(a.take_revocations(), vec![(p, p + 0x3000)]);
        assert!(a.take_revocations().is_empty());
        assert_eq!(a.check(p, 1, Access::Read), Err(Errno::EFAULT));
        let r = a.find_free(0x2000, 0).unwrap();
        assert_eq!(r, top - 0x2000, "the freed gap is reused");
        a.map_fixed(&mut ram, r, 0x2000, Prot::RW, Kind::Anon).unwrap();
        let mut b = [1u8; 6];
        ram.read(p, &mut b).unwrap();
        assert_eq!(b, [0; 6]);
        // A hint that is free is honoured; one that overlaps is not.
        assert_eq!(a.find_free(0x1000, 0x60_0000), Some(0x60_0000));
        assert_ne!(a.find_free(0x1000, q), Some(q));
        // Too big.
        assert_eq!(a.find_free(64 << 20, 0), None);
    }

    #[test]
    fn partial_unmap_and_mprotect_split_regions() {
        let (mut a, mut ram) = space();
        a.map_fixed(&mut ram, 0x60_0000, 0x4000, Prot::RW, Kind::Anon)
            .unwrap();
        a.protect(&mut ram, 0x60_1000, 0x1000, Prot::NONE).unwrap();
        assert_eq!(a.check(0x60_0000, 0x1000, Access::Write), Ok(()));
        assert_eq!(a.check(0x60_1000, 1, Access::Read), Err(Errno::EFAULT));
        assert_eq!(a.check(0x60_2000, 0x2000, Access::Write), Ok(()));
        a.unmap(&mut ram, 0x60_2000, 0x1000).unwrap();
        let regions: Vec<_> = a.regions().map(|r| (r.start, r.end, r.prot)).collect();
        assert_eq!(
            regions,
            vec![
                (0x60_0000, 0x60_1000, Prot::RW),
                (0x60_1000, 0x60_2000, Prot::NONE),
                (0x60_3000, 0x60_4000, Prot::RW)
            ]
        );
        // mprotect over a hole fails with ENOMEM; bad arguments with EINVAL.
        assert_eq!(
            a.protect(&mut ram, 0x60_2000, 0x1000, Prot::RW),
            Err(Errno::ENOMEM)
        );
        assert_eq!(
            a.protect(&mut ram, 0x60_0001, 0x1000, Prot::RW),
            Err(Errno::EINVAL)
        );
        assert_eq!(a.unmap(&mut ram, 0x60_0001, 0x1000), Err(Errno::EINVAL));
        assert_eq!(a.unmap(&mut ram, 0x60_0000, 0), Err(Errno::EINVAL));
        assert_eq!(a.unmap(&mut ram, !0xfff, 0x2000), Err(Errno::EINVAL));
        // Merging back.
        a.protect(&mut ram, 0x60_1000, 0x1000, Prot::RW).unwrap();
        assert_eq!(
            a.regions().next().map(|r| (r.start, r.end)),
            Some((0x60_0000, 0x60_2000))
        );
    }

    #[test]
    fn map_fixed_outside_user_space_is_refused() {
        let (mut a, mut ram) = space();
        assert_eq!(
            a.map_fixed(&mut ram, 0, 0x1000, Prot::RW, Kind::Anon),
            Err(Errno::ENOMEM)
        );
        assert_eq!(
            a.map_fixed(&mut ram, 0x4000, 0x1000, Prot::RW, Kind::Anon),
            Err(Errno::ENOMEM)
        );
        let end = a.layout.user_end();
        assert_eq!(
            a.map_fixed(&mut ram, end, 0x1000, Prot::RW, Kind::Anon),
            Err(Errno::ENOMEM)
        );
        assert_eq!(
            a.map_fixed(&mut ram, 0x60_0000, !0xfff, Prot::RW, Kind::Anon),
            Err(Errno::ENOMEM)
        );
    }

    #[test]
    fn brk_grows_shrinks_and_refuses_collisions() {
        let (mut a, mut ram) = space();
        a.init_brk(0x50_0000);
        assert_eq!(a.set_brk(&mut ram, 0), 0x50_0000, "query");
        assert_eq!(a.set_brk(&mut ram, 0x50_0dc0), 0x50_0dc0);
        assert_eq!(a.check(0x50_0000, 0x1000, Access::Write), Ok(()));
        assert_eq!(a.set_brk(&mut ram, 0x52_1000), 0x52_1000);
        ram.write(0x52_0000, b"x").unwrap();
        assert_eq!(a.set_brk(&mut ram, 0x50_1000), 0x50_1000);
        assert_eq!(a.check(0x52_0000, 1, Access::Read), Err(Errno::EFAULT));
        // A mapping right above blocks growth; the old break is returned.
        a.map_fixed(&mut ram, 0x60_0000, 0x1000, Prot::RW, Kind::Anon)
            .unwrap();
        assert_eq!(a.set_brk(&mut ram, 0x70_0000), 0x50_1000);
        assert_eq!(a.set_brk(&mut ram, u64::MAX), 0x50_1000);
        assert_eq!(a.set_brk(&mut ram, 0x10), 0x50_1000, "below the start");
    }
}
