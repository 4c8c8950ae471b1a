//! Path syscalls, all confined to the guest root ([`crate::fs`]): `open`/`openat` (files and
//! directories), the `stat` family (`fstatat` with `AT_EMPTY_PATH`, `statx` with the basic stats),
//! `access`/`faccessat`, `readlink`, `getdents64`, `getcwd`, `chdir`. Anything that would modify the
//! file system returns `EROFS`.

use std::os::fd::AsRawFd;

use super::abi::SysResult;
use crate::errno::Errno;
use crate::fdtable::{Object, OpenFile};
use crate::fs::{stat_bytes, stdio_stat_bytes, FileKind, PATH_MAX};
use crate::guest::{Guest, MAX_IO};
use crate::vcpu::CpuState;

const AT_FDCWD: i32 = -100;
const AT_SYMLINK_NOFOLLOW: u64 = 0x100;
const AT_EMPTY_PATH: u64 = 0x1000;

/// Resolves (`dirfd`, guest path pointer) to an absolute guest path.
fn guest_path(g: &Guest, dirfd: i32, path_addr: u64) -> Result<String, Errno> {
    let raw = g.read_cstring(path_addr, PATH_MAX - 1)?;
    if raw.first() == Some(&b'/') || dirfd == AT_FDCWD {
        return g.root.absolute(&raw, None);
    }
    let desc = g.fds.get(dirfd)?;
    let d = desc.borrow();
    match &d.object {
        Object::File(f) if f.kind == FileKind::Directory => g.root.absolute(&raw, Some(&f.path)),
        _ => Err(Errno::ENOTDIR),
    }
}

fn do_open(g: &mut Guest, dirfd: i32, path_addr: u64, flags: u64) -> SysResult {
    let path = guest_path(g, dirfd, path_addr)?;
    let flags = flags as i32;
    let (file, kind) = g.root.open_path(&path, flags)?;
    if flags & libc::O_DIRECTORY != 0 && kind != FileKind::Directory {
        return Err(Errno::ENOTDIR);
    }
    let fd = g.fds.insert(
        Object::File(OpenFile {
            file,
            kind,
            path,
            offset: 0,
        }),
        flags & libc::O_NONBLOCK != 0,
        flags & libc::O_CLOEXEC != 0,
    )?;
    Ok(fd as u64)
}

pub fn open(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    do_open(g, AT_FDCWD, a[0], a[1])
}

pub fn openat(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    do_open(g, a[0] as i32, a[1], a[2])
}

/// `struct stat` bytes of a descriptor.
fn fd_stat(g: &Guest, fd: i32) -> Result<Vec<u8>, Errno> {
    let desc = g.fds.get(fd)?;
    let d = desc.borrow();
    match &d.object {
        Object::Stdio(n) => Ok(stdio_stat_bytes(*n)),
        Object::File(f) => stat_bytes(f.file.as_raw_fd()),
        Object::Can(_) | Object::IoctlSocket { .. } => Ok(anon_stat(fd, libc::S_IFSOCK | 0o777)),
        // Pipes are FIFOs; eventfds, timerfds and epoll instances are anonymous inodes (mode 0600, no type).
        Object::Pipe(_) => Ok(anon_stat(fd, libc::S_IFIFO | 0o600)),
        Object::EventFd(_) | Object::TimerFd(_) | Object::Epoll(_) => Ok(anon_stat(fd, 0o600)),
    }
}

/// A synthetic `struct stat` for an object without a file behind it.
fn anon_stat(fd: i32, mode: u32) -> Vec<u8> {
    let mut b = vec![0u8; 144];
    b[8..16].copy_from_slice(&(100 + fd as u64).to_le_bytes());
    b[16..24].copy_from_slice(&1u64.to_le_bytes());
    b[24..28].copy_from_slice(&mode.to_le_bytes());
    b[56..64].copy_from_slice(&4096u64.to_le_bytes());
    b
}

fn path_stat(g: &Guest, dirfd: i32, path_addr: u64, flags: u64) -> Result<Vec<u8>, Errno> {
    if flags & !(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH | 0x800) != 0 {
        return Err(Errno::EINVAL);
    }
    if flags & AT_EMPTY_PATH != 0 && g.read_cstring(path_addr, PATH_MAX - 1)?.is_empty() {
        if dirfd == AT_FDCWD {
            let f = g.root.open_meta(&g.root.cwd, true)?;
            return stat_bytes(f.as_raw_fd());
        }
        return fd_stat(g, dirfd);
    }
    let path = guest_path(g, dirfd, path_addr)?;
    let f = g.root.open_meta(&path, flags & AT_SYMLINK_NOFOLLOW == 0)?;
    stat_bytes(f.as_raw_fd())
}

pub fn fstat(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    let b = fd_stat(g, a[0] as i32)?;
    g.write_user(a[1], &b)?;
    Ok(0)
}

pub fn stat(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    let b = path_stat(g, AT_FDCWD, a[0], 0)?;
    g.write_user(a[1], &b)?;
    Ok(0)
}

pub fn lstat(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    let b = path_stat(g, AT_FDCWD, a[0], AT_SYMLINK_NOFOLLOW)?;
    g.write_user(a[1], &b)?;
    Ok(0)
}

pub fn newfstatat(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    let b = path_stat(g, a[0] as i32, a[1], a[3])?;
    g.write_user(a[2], &b)?;
    Ok(0)
}

/// `AT_STATX_SYNC_TYPE` bits (how fresh a network file system's answer must be: always fresh here).
const AT_STATX_SYNC_TYPE: u64 = 0x6000;
/// `STATX_BASIC_STATS`: what a `struct stat` holds.
const STATX_BASIC_STATS: u32 = 0x7ff;
/// `STATX__RESERVED`: a mask bit that must not be set.
const STATX_RESERVED: u32 = 0x8000_0000;

/// A `struct statx` (256 bytes) with the fields of a `struct stat` (the basic stats).
fn statx_from_stat(st: &[u8]) -> Vec<u8> {
    let u64_at = |o: usize| u64::from_le_bytes(st[o..o + 8].try_into().unwrap_or([0; 8]));
    let u32_at = |o: usize| u32::from_le_bytes(st[o..o + 4].try_into().unwrap_or([0; 4]));
    // Linux's encoding of a dev_t into major and minor numbers.
    let major = |d: u64| (((d >> 8) & 0xfff) | ((d >> 32) & !0xfff)) as u32;
    let minor = |d: u64| ((d & 0xff) | ((d >> 12) & !0xff)) as u32;
    let mut b = vec![0u8; 256];
    b[0..4].copy_from_slice(&STATX_BASIC_STATS.to_le_bytes());
    b[4..8].copy_from_slice(&(u64_at(56) as u32).to_le_bytes()); // blksize
    b[16..20].copy_from_slice(&(u64_at(16) as u32).to_le_bytes()); // nlink
    b[20..24].copy_from_slice(&u32_at(28).to_le_bytes()); // uid
    b[24..28].copy_from_slice(&u32_at(32).to_le_bytes()); // gid
    b[28..30].copy_from_slice(&(u32_at(24) as u16).to_le_bytes()); // mode
    b[32..40].copy_from_slice(&u64_at(8).to_le_bytes()); // ino
    b[40..48].copy_from_slice(&u64_at(48).to_le_bytes()); // size
    b[48..56].copy_from_slice(&u64_at(64).to_le_bytes()); // blocks
                                                          // atime, ctime, mtime as {i64 sec, u32 nsec, pad}; btime is not in the basic stats.
    for (from, to) in [(72usize, 64usize), (104, 96), (88, 112)] {
        b[to..to + 8].copy_from_slice(&u64_at(from).to_le_bytes());
        b[to + 8..to + 12].copy_from_slice(&(u64_at(from + 8) as u32).to_le_bytes());
    }
    let (rdev, dev) = (u64_at(40), u64_at(0));
    b[128..132].copy_from_slice(&major(rdev).to_le_bytes());
    b[132..136].copy_from_slice(&minor(rdev).to_le_bytes());
    b[136..140].copy_from_slice(&major(dev).to_le_bytes());
    b[140..144].copy_from_slice(&minor(dev).to_le_bytes());
    b
}

pub fn statx(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    let (dirfd, path, flags, mask, buf) = (a[0] as i32, a[1], a[2], a[3] as u32, a[4]);
    if flags & AT_STATX_SYNC_TYPE == AT_STATX_SYNC_TYPE || mask & STATX_RESERVED != 0 {
        return Err(Errno::EINVAL);
    }
    let st = path_stat(g, dirfd, path, flags & !AT_STATX_SYNC_TYPE)?;
    g.write_user(buf, &statx_from_stat(&st))?;
    Ok(0)
}

fn do_access(g: &Guest, dirfd: i32, path_addr: u64, mode: u64, flags: u64) -> SysResult {
    if mode & !7 != 0 {
        return Err(Errno::EINVAL);
    }
    let path = guest_path(g, dirfd, path_addr)?;
    let f = g.root.open_meta(&path, flags & AT_SYMLINK_NOFOLLOW == 0)?;
    if mode & 2 != 0 {
        return Err(Errno::EROFS);
    }
    if mode & 1 != 0 {
        let m = f.metadata().map_err(|e| Errno::from_io(&e))?;
        if std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 == 0 {
            return Err(Errno::EACCES);
        }
    }
    Ok(0)
}

pub fn access(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    do_access(g, AT_FDCWD, a[0], a[1], 0)
}

pub fn faccessat(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    do_access(g, a[0] as i32, a[1], a[2], 0)
}

pub fn faccessat2(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    do_access(g, a[0] as i32, a[1], a[2], a[3])
}

fn do_readlink(g: &mut Guest, dirfd: i32, path_addr: u64, buf: u64, size: u64) -> SysResult {
    if size as i64 <= 0 {
        return Err(Errno::EINVAL);
    }
    let path = guest_path(g, dirfd, path_addr)?;
    let target: Vec<u8> = if path == "/proc/self/exe" {
        format!("/{}", g.info.exe_name).into_bytes()
    } else {
        let f = g.root.open_meta(&path, false)?;
        let mut out = vec![0u8; PATH_MAX];
        // SAFETY: readlinkat on an O_PATH fd with an empty path reads that symlink into a valid buffer.
        let n = unsafe { libc::readlinkat(f.as_raw_fd(), c"".as_ptr(), out.as_mut_ptr().cast(), out.len()) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            return Err(if e.raw_os_error() == Some(libc::ENOENT) {
                Errno::EINVAL
            } else {
                Errno::from_io(&e)
            });
        }
        out.truncate(n as usize);
        out
    };
    let n = target.len().min(size as usize);
    g.write_user(buf, &target[..n])?;
    Ok(n as u64)
}

pub fn readlink(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    do_readlink(g, AT_FDCWD, a[0], a[1], a[2])
}

pub fn readlinkat(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    do_readlink(g, a[0] as i32, a[1], a[2], a[3])
}

pub fn getdents64(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    let (fd, buf, count) = (a[0] as i32, a[1], a[2].min(MAX_IO));
    let desc = g.fds.get(fd)?;
    let data = {
        let mut d = desc.borrow_mut();
        let Object::File(f) = &mut d.object else {
            return Err(Errno::ENOTDIR);
        };
        if f.kind != FileKind::Directory {
            return Err(Errno::ENOTDIR);
        }
        let mut out = vec![0u8; count as usize];
        // SAFETY: getdents64 writes at most `out.len()` bytes into a valid buffer for a directory fd.
        let n = unsafe {
            libc::syscall(
                libc::SYS_getdents64,
                f.file.as_raw_fd(),
                out.as_mut_ptr(),
                out.len(),
            )
        };
        if n < 0 {
            return Err(Errno::from_io(&std::io::Error::last_os_error()));
        }
        out.truncate(n as usize);
        // SAFETY: lseek on a directory fd the VMM owns reads its position.
        let pos = unsafe { libc::lseek(f.file.as_raw_fd(), 0, libc::SEEK_CUR) };
        if pos >= 0 {
            f.offset = pos as u64;
        }
        out
    };
    g.write_user(buf, &data)?;
    Ok(data.len() as u64)
}

pub fn getcwd(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    let mut cwd = g.root.cwd.clone().into_bytes();
    cwd.push(0);
    if (a[1] as usize) < cwd.len() {
        return Err(Errno::ERANGE);
    }
    g.write_user(a[0], &cwd)?;
    Ok(cwd.len() as u64)
}

pub fn chdir(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    let path = guest_path(g, AT_FDCWD, a[0])?;
    let (_, kind) = g.root.open_path(&path, libc::O_RDONLY)?;
    if kind != FileKind::Directory {
        return Err(Errno::ENOTDIR);
    }
    g.root.cwd = path;
    Ok(0)
}

pub fn fchdir(g: &mut Guest, _cpu: &mut CpuState, a: &[u64; 6]) -> SysResult {
    let desc = g.fds.get(a[0] as i32)?;
    let path = match &desc.borrow().object {
        Object::File(f) if f.kind == FileKind::Directory => f.path.clone(),
        _ => return Err(Errno::ENOTDIR),
    };
    g.root.cwd = path;
    Ok(0)
}

/// Everything that would change the file system.
pub fn read_only(_g: &mut Guest, _cpu: &mut CpuState, _a: &[u64; 6]) -> SysResult {
    Err(Errno::EROFS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest::tests::test_guest;

    #[test]
    fn files_in_the_root_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("greeting.txt"), "hello\n").unwrap();
        let mut g = test_guest();
        g.root = crate::fs::GuestRoot::open(Some(dir.path())).unwrap();
        let mut c = CpuState::for_tests(Default::default());
        g.write_user(0x40_0000, b"/greeting.txt\0").unwrap();
        g.write_user(0x40_0100, b"/etc/passwd\0").unwrap();
        g.write_user(0x40_0200, b"../../../../etc/passwd\0").unwrap();
        let fd = openat(&mut g, &mut c, &[AT_FDCWD as u64, 0x40_0000, 0, 0, 0, 0]).unwrap();
        assert_eq!(fd, 3);
        assert_eq!(
            super::super::io::read(&mut g, &mut c, &[fd, 0x40_1000, 100, 0, 0, 0]),
            Ok(6)
        );
        assert_eq!(g.read_user(0x40_1000, 6).unwrap(), b"hello\n");
        assert_eq!(
            openat(&mut g, &mut c, &[AT_FDCWD as u64, 0x40_0100, 0, 0, 0, 0]),
            Err(Errno::ENOENT)
        );
        assert_eq!(
            openat(&mut g, &mut c, &[AT_FDCWD as u64, 0x40_0200, 0, 0, 0, 0]),
            Err(Errno::ENOENT)
        );
        assert_eq!(
            openat(
                &mut g,
                &mut c,
                &[AT_FDCWD as u64, 0x40_0000, libc::O_RDWR as u64, 0, 0, 0]
            ),
            Err(Errno::EROFS)
        );
        assert_eq!(
            openat(&mut g, &mut c, &[AT_FDCWD as u64, 0x10, 0, 0, 0, 0]),
            Err(Errno::EFAULT)
        );
        assert_eq!(fstat(&mut g, &mut c, &[fd, 0x40_2000, 0, 0, 0, 0]), Ok(0));
        assert_eq!(g.read_u64(0x40_2000 + 48).unwrap(), 6);
        assert_eq!(
            newfstatat(&mut g, &mut c, &[AT_FDCWD as u64, 0x40_0000, 0x40_2000, 0, 0, 0]),
            Ok(0)
        );
        assert_eq!(do_access(&g, AT_FDCWD, 0x40_0000, 2, 0), Err(Errno::EROFS));
        g.write_user(0x40_0300, b"/proc/self/exe\0").unwrap();
        assert_eq!(
            readlink(&mut g, &mut c, &[0x40_0300, 0x40_3000, 64, 0, 0, 0]),
            Ok(5)
        );
        assert_eq!(g.read_user(0x40_3000, 5).unwrap(), b"/test");
        assert_eq!(getcwd(&mut g, &mut c, &[0x40_4000, 64, 0, 0, 0, 0]), Ok(2));
        assert_eq!(
            getcwd(&mut g, &mut c, &[0x40_4000, 1, 0, 0, 0, 0]),
            Err(Errno::ERANGE)
        );
        assert_eq!(read_only(&mut g, &mut c, &[0; 6]), Err(Errno::EROFS));
        assert!(!dir.path().join("pwned").exists());
    }
}
