//! What an image of a project's workload holds, whichever engine stores it (Docker for the container
//! environment, podman for kube): the files of an executable's FROM-scratch image and the content tag they
//! give it, and the Kubernetes command line over an image's own Entrypoint and Cmd.
//!
//! A static executable is the image's only file, at `/<binary>`; a dynamically linked one (an ELF with a
//! `PT_INTERP` program header) brings its interpreter and the libraries `ldd` lists, at their host paths
//! ([`crate::env::libraries`]), so it runs unchanged.

use std::path::{Path, PathBuf};

use crate::env::launcher::argv_for;
use crate::env::libraries::shared_libraries;
use crate::error::InfraError;
use crate::manifest::{ContainerSpec, ImageRef};
use crate::workload::elf_interpreter;

/// The FROM-scratch image of one executable.
pub struct ExecutableImage {
    /// (host file, path in the image), the executable first.
    pub files: Vec<(PathBuf, String)>,
    /// A content hash over the files and where they go: the image's tag.
    pub hash: String,
    /// The image's entrypoint, `/<binary>`.
    pub entry: String,
    /// Whether the executable is dynamically linked (brings its interpreter and libraries).
    pub dynamic: bool,
}

/// The repository of the harness's images of a manifest image: `agl-parity/<binary>`, tagged by content.
pub fn local_repository(image: &ImageRef) -> String {
    format!("agl-parity/{}", image.binary_name())
}

/// The command line of a container of an executable's image: the image's entrypoint `/<binary>` with the
/// manifest's `command`/`args` as [`argv_for`] reads them.
pub fn executable_argv(spec: &ContainerSpec, binary: &Path) -> Result<Vec<String>, InfraError> {
    let mut argv = vec![format!("/{}", spec.image.binary_name())];
    argv.extend(argv_for(spec, binary)?.into_iter().skip(1));
    Ok(argv)
}

impl ExecutableImage {
    /// The image of `binary` for the manifest's `image`.
    pub async fn of(image: &ImageRef, binary: &Path) -> Result<ExecutableImage, InfraError> {
        let build_err = |reason: String| InfraError::Build {
            workload: image.to_string(),
            reason,
        };
        let entry = format!("/{}", image.binary_name());
        let mut files: Vec<(PathBuf, String)> = vec![(binary.to_path_buf(), entry.clone())];
        let interpreter =
            elf_interpreter(binary).map_err(|e| build_err(format!("{}: {e}", binary.display())))?;
        if let Some(interpreter) = &interpreter {
            let libraries = shared_libraries(binary, interpreter)
                .await
                .map_err(|e| build_err(e.to_string()))?;
            files.extend(libraries.into_iter().map(|l| {
                let at = l.display().to_string();
                (l, at)
            }));
        }
        let hash = files_hash(&files).map_err(build_err)?;
        Ok(ExecutableImage {
            files,
            hash,
            entry,
            dynamic: interpreter.is_some(),
        })
    }
}

/// The command line of a container of an image with `(entrypoint, cmd)`: Kubernetes semantics, where
/// `command` replaces the Entrypoint (and drops the Cmd) and `args` replaces the Cmd.
pub fn kubernetes_argv(
    command: &[String],
    args: &[String],
    (entrypoint, cmd): &(Vec<String>, Vec<String>),
) -> Vec<String> {
    let mut argv = if command.is_empty() {
        entrypoint.clone()
    } else {
        command.to_vec()
    };
    if !args.is_empty() {
        argv.extend(args.iter().cloned());
    } else if command.is_empty() {
        argv.extend(cmd.iter().cloned());
    }
    argv
}

/// A content hash over the files of an image and where they go.
fn files_hash(files: &[(PathBuf, String)]) -> Result<String, String> {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (host, at) in files {
        let content = content_hash(host).map_err(|e| format!("{}: {e}", host.display()))?;
        for b in at.bytes().chain(content.bytes()) {
            h = fnv(h, b);
        }
    }
    Ok(format!("{h:016x}"))
}

fn fnv(h: u64, b: u8) -> u64 {
    (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
}

/// FNV-1a over the file: a stable content hash for image tags.
fn content_hash(path: &Path) -> std::io::Result<String> {
    let bytes = std::fs::read(path)?;
    let h = bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| fnv(h, *b));
    Ok(format!("{h:016x}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_hash_is_stable_and_content_based() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        std::fs::write(&a, b"static binary").unwrap();
        let h1 = content_hash(&a).unwrap();
        assert_eq!(h1, content_hash(&a).unwrap());
        assert_eq!(h1.len(), 16);
        std::fs::write(&a, b"static binary!").unwrap();
        assert_ne!(h1, content_hash(&a).unwrap());
        let one = files_hash(&[(a.clone(), "/w".into())]).unwrap();
        assert_ne!(one, files_hash(&[(a.clone(), "/v".into())]).unwrap());
        assert_ne!(
            one,
            files_hash(&[(a.clone(), "/w".into()), (a, "/lib/x".into())]).unwrap()
        );
    }

    #[test]
    fn command_and_args_override_entrypoint_and_cmd_like_kubernetes() {
        let entry = (vec!["/entry".to_string()], vec!["--default".to_string()]);
        let argv = |command: &[&str], args: &[&str]| {
            let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
            kubernetes_argv(&owned(command), &owned(args), &entry)
        };
        assert_eq!(argv(&[], &[]), ["/entry", "--default"]);
        assert_eq!(argv(&[], &["-v"]), ["/entry", "-v"]);
        assert_eq!(argv(&["/other"], &[]), ["/other"]);
        assert_eq!(argv(&["/other"], &["-v"]), ["/other", "-v"]);
    }
}
