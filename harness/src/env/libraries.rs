//! The shared libraries of a dynamically linked executable, for the environments that ship an
//! executable into a root file system of its own: the container environment's FROM-scratch images
//! (`container::image`) and the vm environment's guest root (`vm`).
//!
//! [`shared_libraries`] asks `ldd` for the interpreter and the libraries (as host paths);
//! [`install_into_root`] puts files at their host paths under a root directory (hard links where the
//! file system allows, else copies), read-only.

use std::path::{Path, PathBuf};

/// Why the libraries of an executable could not be listed or installed.
#[derive(Debug, thiserror::Error)]
pub enum LibraryError {
    #[error("cannot run `ldd`: {0}")]
    Spawn(String),
    #[error("`ldd {binary}` failed ({status}): {output}")]
    Failed {
        binary: String,
        status: String,
        output: String,
    },
    #[error("{binary}: library `{library}` not found (ldd)")]
    NotFound { binary: String, library: String },
    #[error("installing {file} into {root}: {reason}")]
    Install {
        file: String,
        root: String,
        reason: String,
    },
}

/// The interpreter and the shared libraries of a dynamically linked executable, as host paths (the
/// interpreter first unless `ldd` lists it).
pub async fn shared_libraries(binary: &Path, interpreter: &str) -> Result<Vec<PathBuf>, LibraryError> {
    let output = tokio::process::Command::new("ldd")
        .arg(binary)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| LibraryError::Spawn(e.to_string()))?;
    if !output.status.success() {
        return Err(LibraryError::Failed {
            binary: binary.display().to_string(),
            status: output.status.to_string(),
            output: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    let mut libraries =
        parse_ldd(&String::from_utf8_lossy(&output.stdout)).map_err(|library| LibraryError::NotFound {
            binary: binary.display().to_string(),
            library,
        })?;
    let interpreter = PathBuf::from(interpreter);
    if !libraries.contains(&interpreter) {
        libraries.insert(0, interpreter);
    }
    Ok(libraries)
}

/// The library paths of `ldd` output; `Err(name)` for a library it did not find. The vDSO has no path.
pub fn parse_ldd(text: &str) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (name, rest) = match line.split_once("=>") {
            Some((name, rest)) => (name.trim(), rest.trim()),
            None => (line, line),
        };
        if rest.starts_with("not found") {
            return Err(name.to_string());
        }
        let path = rest.split(" (").next().unwrap_or(rest).trim();
        if path.starts_with('/') && !out.iter().any(|p: &PathBuf| p == Path::new(path)) {
            out.push(PathBuf::from(path));
        }
    }
    Ok(out)
}

/// Puts each absolute host path of `files` at the same path under `root` (following symlinks: the file
/// itself), as a hard link when `root` is on the same file system, else as a copy; copies are made
/// read-only. Files already there are kept.
pub fn install_into_root(root: &Path, files: &[PathBuf]) -> Result<(), LibraryError> {
    use std::os::unix::fs::PermissionsExt;
    for file in files {
        let fail = |reason: String| LibraryError::Install {
            file: file.display().to_string(),
            root: root.display().to_string(),
            reason,
        };
        let relative = file
            .strip_prefix("/")
            .map_err(|_| fail("not an absolute path".into()))?;
        let at = root.join(relative);
        if at.exists() {
            continue;
        }
        if let Some(parent) = at.parent() {
            std::fs::create_dir_all(parent).map_err(|e| fail(e.to_string()))?;
        }
        let real = std::fs::canonicalize(file).map_err(|e| fail(e.to_string()))?;
        if std::fs::hard_link(&real, &at).is_err() {
            std::fs::copy(&real, &at).map_err(|e| fail(e.to_string()))?;
            let mode = std::fs::metadata(&at)
                .map_err(|e| fail(e.to_string()))?
                .permissions()
                .mode();
            std::fs::set_permissions(&at, std::fs::Permissions::from_mode(mode & !0o222))
                .map_err(|e| fail(e.to_string()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::elf_interpreter;

    #[test]
    fn ldd_output_gives_interpreter_and_libraries() {
        let text = "\tlinux-vdso.so.1 (0x00007ffc1a9f2000)\n\
                    \tlibm.so.6 => /lib/x86_64-linux-gnu/libm.so.6 (0x00007f5c0b8f8000)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f5c0b717000)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f5c0b9f9000)\n";
        assert_eq!(
            parse_ldd(text).unwrap(),
            vec![
                PathBuf::from("/lib/x86_64-linux-gnu/libm.so.6"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
        assert_eq!(
            parse_ldd("\tlibwiper.so.1 => not found\n").unwrap_err(),
            "libwiper.so.1"
        );
    }

    #[tokio::test]
    async fn libraries_of_a_real_dynamic_executable_install_into_a_root() {
        let sh = Path::new("/bin/sh");
        let Some(interpreter) = elf_interpreter(sh).unwrap() else {
            panic!("/bin/sh is expected to be dynamically linked here");
        };
        let libs = shared_libraries(sh, &interpreter).await.unwrap();
        assert!(libs.contains(&PathBuf::from(&interpreter)), "{libs:?}");
        assert!(
            libs.iter().any(|l| l.to_string_lossy().contains("libc.so")),
            "{libs:?}"
        );
        let root = tempfile::tempdir().unwrap();
        install_into_root(root.path(), &libs).unwrap();
        install_into_root(root.path(), &libs).unwrap();
        for lib in &libs {
            let at = root.path().join(lib.strip_prefix("/").unwrap());
            assert_eq!(std::fs::read(&at).unwrap(), std::fs::read(lib).unwrap());
        }
        assert!(install_into_root(root.path(), &[PathBuf::from("relative")]).is_err());
    }
}
