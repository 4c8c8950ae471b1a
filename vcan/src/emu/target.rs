//! The process whose call is being answered: its memory (`process_vm_readv`/`process_vm_writev`, each
//! pointer argument read once) and its descriptors (which socket an fd number is, and a duplicate of it with
//! `pidfd_getfd` when the supervisor must receive on the caller's behalf).

use std::os::fd::{FromRawFd, OwnedFd};

use crate::errno::Errno;

/// Larger reads than this are refused (`EINVAL`): nothing the emulation reads is bigger (a full filter
/// list is 4 KiB, an iovec array 16 KiB).
pub const MAX_READ: usize = 1 << 16;

const PIDFD_THREAD: libc::c_uint = libc::O_EXCL as libc::c_uint;

/// Whether a failed `process_vm_*` call was refused as a whole (a sandbox's seccomp profile), rather than
/// faulting on the address.
fn refused(n: isize) -> bool {
    n < 0
        && matches!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::EPERM | libc::ENOSYS | libc::EACCES)
        )
}

/// One calling thread.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub pid: i32,
}

impl Target {
    /// `len` bytes at `addr` in the caller; `EFAULT` for an address it cannot read.
    pub fn read(&self, addr: u64, len: usize) -> Result<Vec<u8>, Errno> {
        if len == 0 {
            return Ok(Vec::new());
        }
        if len > MAX_READ {
            return Err(Errno::EINVAL);
        }
        if addr == 0 {
            return Err(Errno::EFAULT);
        }
        let mut buf = vec![0u8; len];
        let local = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: len,
        };
        let remote = libc::iovec {
            iov_base: addr as *mut libc::c_void,
            iov_len: len,
        };
        // SAFETY: `local` is this buffer; the kernel checks `remote` against the caller's mappings.
        let n = unsafe { libc::process_vm_readv(self.pid, &local, 1, &remote, 1, 0) };
        if n == len as isize {
            return Ok(buf);
        }
        if !refused(n) {
            return Err(Errno::EFAULT);
        }
        use std::os::unix::fs::FileExt;
        let mem = self.mem(false)?;
        match mem.read_at(&mut buf, addr) {
            Ok(n) if n == len => Ok(buf),
            _ => Err(Errno::EFAULT),
        }
    }

    pub fn read_u32(&self, addr: u64) -> Result<u32, Errno> {
        let b = self.read(addr, 4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Writes `data` at `addr` in the caller; `EFAULT` for an address it cannot write.
    pub fn write(&self, addr: u64, data: &[u8]) -> Result<(), Errno> {
        if data.is_empty() {
            return Ok(());
        }
        if addr == 0 {
            return Err(Errno::EFAULT);
        }
        let local = libc::iovec {
            iov_base: data.as_ptr() as *mut libc::c_void,
            iov_len: data.len(),
        };
        let remote = libc::iovec {
            iov_base: addr as *mut libc::c_void,
            iov_len: data.len(),
        };
        // SAFETY: `local` is read only; the kernel checks `remote` against the caller's mappings.
        let n = unsafe { libc::process_vm_writev(self.pid, &local, 1, &remote, 1, 0) };
        if n == data.len() as isize {
            return Ok(());
        }
        if !refused(n) {
            return Err(Errno::EFAULT);
        }
        use std::os::unix::fs::FileExt;
        let mem = self.mem(true)?;
        match mem.write_at(data, addr) {
            Ok(n) if n == data.len() => Ok(()),
            _ => Err(Errno::EFAULT),
        }
    }

    /// `/proc/<pid>/mem`: where `process_vm_readv` is refused (a container engine's seccomp profile
    /// without `CAP_SYS_PTRACE`), the same ptrace access check still lets a parent read its child.
    fn mem(&self, write: bool) -> Result<std::fs::File, Errno> {
        std::fs::OpenOptions::new()
            .read(true)
            .write(write)
            .open(format!("/proc/{}/mem", self.pid))
            .map_err(|_| Errno::EFAULT)
    }

    pub fn write_u32(&self, addr: u64, value: u32) -> Result<(), Errno> {
        self.write(addr, &value.to_le_bytes())
    }

    /// The inode of the socket behind the caller's `fd`, `None` when it is no socket (or no descriptor).
    pub fn socket_inode(&self, fd: u64) -> Option<u64> {
        let fd = i32::try_from(fd).ok().filter(|f| *f >= 0)?;
        let link = std::fs::read_link(format!("/proc/{}/fd/{fd}", self.pid)).ok()?;
        let text = link.to_str()?;
        text.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
    }

    /// A duplicate of the caller's `fd` (the same open socket) in this process.
    pub fn duplicate_fd(&self, fd: u64) -> Result<OwnedFd, Errno> {
        let fd = i32::try_from(fd).map_err(|_| Errno::EBADF)?;
        // SAFETY: plain system calls; the returned descriptors are owned below.
        unsafe {
            let mut pidfd = libc::syscall(libc::SYS_pidfd_open, self.pid, 0) as i32;
            if pidfd < 0 {
                // A thread other than the leader (Linux 6.9+ accepts it with PIDFD_THREAD).
                pidfd = libc::syscall(libc::SYS_pidfd_open, self.pid, PIDFD_THREAD) as i32;
            }
            if pidfd < 0 {
                return Err(Errno(
                    std::io::Error::last_os_error()
                        .raw_os_error()
                        .unwrap_or(libc::ESRCH),
                ));
            }
            let pidfd = OwnedFd::from_raw_fd(pidfd);
            let dup = libc::syscall(
                libc::SYS_pidfd_getfd,
                std::os::fd::AsRawFd::as_raw_fd(&pidfd),
                fd,
                0,
            ) as i32;
            if dup < 0 {
                return Err(Errno(
                    std::io::Error::last_os_error()
                        .raw_os_error()
                        .unwrap_or(libc::EBADF),
                ));
            }
            Ok(OwnedFd::from_raw_fd(dup))
        }
    }
}

impl crate::callmem::CallerMemory for Target {
    fn read(&self, addr: u64, len: usize) -> Result<Vec<u8>, Errno> {
        Target::read(self, addr, len)
    }

    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), Errno> {
        Target::write(self, addr, data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_its_own_memory_and_refuses_bad_addresses() {
        let me = Target {
            pid: std::process::id() as i32,
        };
        let mut cell = [1u8, 2, 3, 4];
        let addr = cell.as_mut_ptr() as u64;
        assert_eq!(me.read(addr, 4).unwrap(), vec![1, 2, 3, 4]);
        me.write_u32(addr, 0x0A0B0C0D).unwrap();
        assert_eq!(std::hint::black_box(&cell), &[0x0D, 0x0C, 0x0B, 0x0A]);
        assert_eq!(me.read(0, 4), Err(Errno::EFAULT));
        assert_eq!(me.read(8, 4), Err(Errno::EFAULT));
        assert_eq!(me.read(addr, MAX_READ + 1), Err(Errno::EINVAL));
        assert_eq!(me.write(16, &[1]), Err(Errno::EFAULT));
    }

    #[test]
    fn finds_socket_inodes_and_duplicates_descriptors() {
        use std::os::fd::AsRawFd;
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let me = Target {
            pid: std::process::id() as i32,
        };
        let inode = me.socket_inode(a.as_raw_fd() as u64).expect("a socket");
        assert!(inode > 0);
        assert_eq!(me.socket_inode(9999), None);
        let dup = me.duplicate_fd(a.as_raw_fd() as u64).unwrap();
        assert_eq!(me.socket_inode(dup.as_raw_fd() as u64), Some(inode));
    }
}
