//! The guest's file system view: a per-guest root directory (`--root`), read-only.
//!
//! Every guest path is resolved by the host kernel *inside* the root with `openat2(RESOLVE_IN_ROOT)`:
//! absolute paths, `..` and symlinks cannot leave it, and magic links (`/proc/self/fd/..`) are refused.
//! The program interpreter of a dynamically linked guest and the libraries it maps come from here too.
//! Only regular files and directories can be opened (directories read with `getdents64`, as `opendir`
//! does with `O_RDONLY|O_NONBLOCK|O_CLOEXEC|O_DIRECTORY`); files are opened `O_NONBLOCK` on the host so a
//! FIFO placed in the root cannot block the VMM, and are then refused. Opening for writing, creating or
//! `O_TMPFILE` gives `EROFS`. Without `--root` there are no files at all (`ENOENT`). `/proc/self/maps` and friends do not
//! exist (glibc and Rust's std cope with that); `/proc/self/exe` reads as the program's own path.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::path::{Path, PathBuf};

use crate::errno::Errno;

/// Longest path the guest may pass (Linux `PATH_MAX`).
pub const PATH_MAX: usize = 4096;

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_IN_ROOT: u64 = 0x10;

/// What kind of object an opened path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum FileKind {
    Regular,
    Directory,
}

/// The guest root directory could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("opening guest root {path:?}: {source}")]
pub struct RootError {
    /// The host directory given as the root.
    pub path: Option<PathBuf>,
    pub source: std::io::Error,
}

/// The guest root directory.
pub struct GuestRoot {
    dir: Option<File>,
    path: Option<PathBuf>,
    /// The guest's current directory (absolute guest path).
    pub cwd: String,
}

impl GuestRoot {
    /// Opens `path` as the root; `None` gives a guest without files.
    pub fn open(path: Option<&Path>) -> Result<GuestRoot, RootError> {
        let fail = |source| RootError {
            path: path.map(Path::to_path_buf),
            source,
        };
        let dir = match path {
            Some(p) => {
                let c = CString::new(p.as_os_str().as_encoded_bytes())
                    .map_err(|_| fail(std::io::Error::from_raw_os_error(libc::EINVAL)))?;
                // SAFETY: `c` is a valid NUL-terminated path.
                let fd =
                    unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) };
                if fd < 0 {
                    return Err(fail(std::io::Error::last_os_error()));
                }
                // SAFETY: `fd` is a fresh fd we own.
                Some(unsafe { File::from_raw_fd(fd) })
            }
            None => None,
        };
        Ok(GuestRoot {
            dir,
            path: path.map(Path::to_path_buf),
            cwd: "/".to_string(),
        })
    }

    pub fn host_path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Makes a guest path absolute (relative to `base`, a guest directory, or the cwd) and normalises
    /// `.`/`..` lexically, never above `/`.
    pub fn absolute(&self, path: &[u8], base: Option<&str>) -> Result<String, Errno> {
        if path.is_empty() {
            return Err(Errno::ENOENT);
        }
        if path.len() >= PATH_MAX {
            return Err(Errno::ENAMETOOLONG);
        }
        let text = std::str::from_utf8(path).map_err(|_| Errno::ENOENT)?;
        let joined = if text.starts_with('/') {
            text.to_string()
        } else {
            format!("{}/{}", base.unwrap_or(&self.cwd), text)
        };
        let mut parts: Vec<&str> = Vec::new();
        for c in joined.split('/') {
            match c {
                "" | "." => {}
                ".." => {
                    parts.pop();
                }
                other => parts.push(other),
            }
        }
        Ok(format!("/{}", parts.join("/")))
    }

    /// Opens a guest path (already absolute) read-only inside the root.
    ///
    /// `flags` are the guest's open flags: write access, `O_CREAT` or `O_TRUNC` give `EROFS`.
    pub fn open_path(&self, guest_path: &str, flags: i32) -> Result<(File, FileKind), Errno> {
        let acc = flags & libc::O_ACCMODE;
        // O_TMPFILE includes the O_DIRECTORY bit: only all of its bits mean "create a temporary file".
        if acc != libc::O_RDONLY
            || flags & (libc::O_CREAT | libc::O_TRUNC) != 0
            || flags & libc::O_TMPFILE == libc::O_TMPFILE
        {
            // Creating or writing: the guest file system is read-only.
            return Err(Errno::EROFS);
        }
        let host_flags = libc::O_RDONLY
            | libc::O_CLOEXEC
            | libc::O_NONBLOCK
            | (flags & (libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_PATH));
        let file = self.resolve(guest_path, host_flags)?;
        let kind = kind_of(&file)?;
        Ok((file, kind))
    }

    /// Opens `guest_path` with `O_PATH` (for stat/access/readlink); `follow` follows a final symlink.
    pub fn open_meta(&self, guest_path: &str, follow: bool) -> Result<File, Errno> {
        let mut flags = libc::O_PATH | libc::O_CLOEXEC;
        if !follow {
            flags |= libc::O_NOFOLLOW;
        }
        self.resolve(guest_path, flags)
    }

    fn resolve(&self, guest_path: &str, host_flags: i32) -> Result<File, Errno> {
        let Some(dir) = &self.dir else {
            return Err(Errno::ENOENT);
        };
        let c = CString::new(guest_path).map_err(|_| Errno::ENOENT)?;
        let how = OpenHow {
            flags: host_flags as u64,
            mode: 0,
            resolve: RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
        };
        // SAFETY: openat2 with a valid dirfd, a NUL-terminated path and a correctly sized open_how.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir.as_raw_fd(),
                c.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        };
        if fd < 0 {
            let e = std::io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::EXDEV) => Errno::ENOENT,
                Some(libc::ENOSYS) => Errno::ENOENT,
                _ => Errno::from_io(&e),
            });
        }
        // SAFETY: fd is a fresh descriptor returned by openat2.
        Ok(unsafe { File::from_raw_fd(fd as RawFd) })
    }
}

/// Regular file or directory; anything else (FIFO, device, socket) is refused with `EACCES`.
pub fn kind_of(file: &File) -> Result<FileKind, Errno> {
    let meta = file.metadata().map_err(|e| Errno::from_io(&e))?;
    let ft = meta.file_type();
    if ft.is_file() {
        Ok(FileKind::Regular)
    } else if ft.is_dir() {
        Ok(FileKind::Directory)
    } else {
        Err(Errno::EACCES)
    }
}

/// `fstat` of a host fd as the guest's `struct stat` (144 bytes, x86-64 layout).
pub fn stat_bytes(fd: RawFd) -> Result<Vec<u8>, Errno> {
    // SAFETY: zeroed `stat` is valid plain data; fstat fills it for a valid fd.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid, writable stat buffer.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return Err(Errno::from_io(&std::io::Error::last_os_error()));
    }
    let mut b = vec![0u8; 144];
    let mut put64 = |off: usize, v: u64| b[off..off + 8].copy_from_slice(&v.to_le_bytes());
    put64(0, st.st_dev);
    put64(8, st.st_ino);
    put64(16, st.st_nlink);
    put64(40, st.st_rdev);
    put64(48, st.st_size as u64);
    put64(56, st.st_blksize as u64);
    put64(64, st.st_blocks as u64);
    put64(72, st.st_atime as u64);
    put64(80, st.st_atime_nsec as u64);
    put64(88, st.st_mtime as u64);
    put64(96, st.st_mtime_nsec as u64);
    put64(104, st.st_ctime as u64);
    put64(112, st.st_ctime_nsec as u64);
    // Files in the guest root look read-only and owned by the guest's user.
    let mode = st.st_mode & !0o222;
    b[24..28].copy_from_slice(&mode.to_le_bytes());
    b[28..32].copy_from_slice(&st.st_uid.to_le_bytes());
    b[32..36].copy_from_slice(&st.st_gid.to_le_bytes());
    Ok(b)
}

/// A synthetic `struct stat` for stdio (a character device, like a terminal or `/dev/null`).
pub fn stdio_stat_bytes(fd: i32) -> Vec<u8> {
    let mut b = vec![0u8; 144];
    b[8..16].copy_from_slice(&(fd as u64 + 1).to_le_bytes());
    b[16..24].copy_from_slice(&1u64.to_le_bytes());
    let mode: u32 = libc::S_IFCHR | 0o620;
    b[24..28].copy_from_slice(&mode.to_le_bytes());
    b[56..64].copy_from_slice(&4096u64.to_le_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> (tempfile::TempDir, GuestRoot) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/hello.txt"), "hi\n").unwrap();
        std::os::unix::fs::symlink("/etc/hello.txt", dir.path().join("abs-link")).unwrap();
        std::os::unix::fs::symlink("../../../../../etc/passwd", dir.path().join("escape")).unwrap();
        let r = GuestRoot::open(Some(dir.path())).unwrap();
        (dir, r)
    }

    #[test]
    fn paths_normalise_inside_the_root() {
        let (_d, r) = root();
        assert_eq!(r.absolute(b"/a/./b/../c", None).unwrap(), "/a/c");
        assert_eq!(r.absolute(b"../../../etc/passwd", None).unwrap(), "/etc/passwd");
        assert_eq!(r.absolute(b"x", Some("/dir")).unwrap(), "/dir/x");
        assert_eq!(r.absolute(b"", None), Err(Errno::ENOENT));
        assert_eq!(r.absolute(&vec![b'a'; 5000], None), Err(Errno::ENAMETOOLONG));
    }

    #[test]
    fn files_open_read_only_and_never_escape() {
        let (_d, r) = root();
        let (f, kind) = r.open_path("/etc/hello.txt", libc::O_RDONLY).unwrap();
        assert_eq!(kind, FileKind::Regular);
        assert_eq!(std::io::read_to_string(f).unwrap(), "hi\n");
        // Absolute symlinks resolve inside the root.
        assert!(r.open_path("/abs-link", libc::O_RDONLY).is_ok());
        // Escapes through symlinks and .. stay inside: the host's /etc/passwd is not reachable.
        assert_eq!(r.open_path("/escape", libc::O_RDONLY).err(), Some(Errno::ENOENT));
        assert_eq!(
            r.open_path("/etc/passwd", libc::O_RDONLY).err(),
            Some(Errno::ENOENT)
        );
        assert_eq!(
            r.open_path("/etc/hello.txt", libc::O_WRONLY).err(),
            Some(Errno::EROFS)
        );
        assert_eq!(
            r.open_path("/new", libc::O_RDONLY | libc::O_CREAT).err(),
            Some(Errno::EROFS)
        );
        assert_eq!(
            r.open_path("/etc", libc::O_RDONLY).unwrap().1,
            FileKind::Directory
        );
        // What opendir() passes: a directory opens, O_TMPFILE (which contains O_DIRECTORY) does not.
        let opendir = libc::O_RDONLY | libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_DIRECTORY;
        assert_eq!(r.open_path("/etc", opendir).unwrap().1, FileKind::Directory);
        assert_eq!(
            r.open_path("/etc", libc::O_RDWR | libc::O_TMPFILE).err(),
            Some(Errno::EROFS)
        );
        assert_eq!(r.open_path("/etc/hello.txt", opendir).err(), Some(Errno::ENOTDIR));
        assert_eq!(
            r.open_path("/proc/self/maps", libc::O_RDONLY).err(),
            Some(Errno::ENOENT)
        );
    }

    #[test]
    fn no_root_no_files() {
        let r = GuestRoot::open(None).unwrap();
        assert_eq!(
            r.open_path("/etc/passwd", libc::O_RDONLY).err(),
            Some(Errno::ENOENT)
        );
    }

    #[test]
    fn fifos_are_refused_without_blocking() {
        let (d, r) = root();
        let p = CString::new(d.path().join("fifo").as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: valid path.
        assert_eq!(unsafe { libc::mkfifo(p.as_ptr(), 0o644) }, 0);
        assert_eq!(r.open_path("/fifo", libc::O_RDONLY).err(), Some(Errno::EACCES));
    }

    #[test]
    fn stat_layout() {
        let (_d, r) = root();
        let (f, _) = r.open_path("/etc/hello.txt", libc::O_RDONLY).unwrap();
        let b = stat_bytes(f.as_raw_fd()).unwrap();
        assert_eq!(u64::from_le_bytes(b[48..56].try_into().unwrap()), 3, "st_size");
        let mode = u32::from_le_bytes(b[24..28].try_into().unwrap());
        assert_eq!(mode & libc::S_IFMT, libc::S_IFREG);
        assert_eq!(mode & 0o222, 0, "read-only");
    }
}
