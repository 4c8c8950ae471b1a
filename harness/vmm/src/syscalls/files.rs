//! Path syscalls, all confined to the guest root ([`crate::fs`]): `open`/`openat`, `stat` family,
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
        Object::Can(_) | Object::IoctlSocket { .. } => {
            let mut b = vec![0u8; 144];
            b[8..16].copy_from_slice(&(100 + fd as u64).to_le_bytes());
            b[16..24].copy_from_slice(&1u64.to_le_bytes());
            b[24..28].copy_from_slice(&(libc::S_IFSOCK | 0o777).to_le_bytes());
            b[56..64].copy_from_slice(&4096u64.to_le_bytes());
            Ok(b)
        }
    }
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
        let d = desc.borrow();
        let Object::File(f) = &d.object else {
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
