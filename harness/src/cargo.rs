//! Building cargo packages at run time: the static workload binaries of a project or of the harness's own
//! source (for the host or a board's target triple), pod-init and the VMM. Uses the cargo that runs the
//! harness (`CARGO`, else `cargo` on the `PATH`) and the workspace's target directory (`CARGO_TARGET_DIR` or
//! `<workspace>/target`), so nothing is built twice.

use std::path::{Path, PathBuf};

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildRequest<'a> {
    pub package: &'a str,
    /// `--target` triple; `None` builds for the host into `target/release`.
    pub triple: Option<&'a str>,
    /// Link statically (`-C target-feature=+crt-static`); needs a `triple` so that build scripts and
    /// proc-macros are not affected.
    pub static_crt: bool,
}

/// The workspace this harness was built from: its helpers (pod-init, the VMM) and sample workloads are
/// built there.
pub fn source_workspace() -> PathBuf {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    dir.canonicalize().unwrap_or(dir)
}

/// The workspace's target directory.
pub fn target_dir(project_dir: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| project_dir.join("target"))
}

/// Why a build failed. `Clone`, so that a build made once per run can hand its result to every caller.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BuildError {
    #[error("cannot run `{cargo}`: {reason}")]
    Spawn { cargo: String, reason: String },
    /// cargo ran and failed; `tail` holds the last lines of its output.
    #[error("`cargo {command}` failed ({status}):\n{tail}")]
    Failed {
        command: String,
        status: String,
        tail: String,
    },
    /// Prebuilt binaries were named, but the path is not a directory.
    #[error("{var}={} is not a directory", .dir.display())]
    PrebuiltNotADirectory { var: &'static str, dir: PathBuf },
    /// A directory of executables the project names does not exist.
    #[error("{what}: {} is not a directory", .dir.display())]
    NotADirectory { what: String, dir: PathBuf },
    /// A project's build command could not be started.
    #[error("cannot run `sh -c {command:?}` in {}: {reason}", .dir.display())]
    CommandSpawn {
        command: String,
        dir: PathBuf,
        reason: String,
    },
    /// A project's build command failed; `output` holds the last lines of its stdout and stderr.
    #[error("`{command}` failed ({status}) in {}:\n{output}", .dir.display())]
    CommandFailed {
        command: String,
        dir: PathBuf,
        status: String,
        output: String,
    },
}

/// Builds the package's binaries in release mode; returns the directory holding them.
pub async fn build(project_dir: &Path, request: &BuildRequest<'_>) -> Result<PathBuf, BuildError> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target_dir = target_dir(project_dir);
    let mut args = vec!["build", "--release", "-p", request.package, "--bins"];
    if let Some(triple) = request.triple {
        args.extend(["--target", triple]);
    }
    let mut command = tokio::process::Command::new(&cargo);
    command
        .current_dir(project_dir)
        .args(&args)
        .env("CARGO_TARGET_DIR", &target_dir)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .kill_on_drop(true);
    if request.static_crt {
        command.env("RUSTFLAGS", "-C target-feature=+crt-static");
    } else {
        command.env_remove("RUSTFLAGS");
    }
    let started = std::time::Instant::now();
    tracing::info!(package = request.package, triple = ?request.triple, "cargo build");
    let output = command.output().await.map_err(|e| BuildError::Spawn {
        cargo: PathBuf::from(&cargo).display().to_string(),
        reason: e.to_string(),
    })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(25).collect();
        return Err(BuildError::Failed {
            command: args.join(" "),
            status: output.status.to_string(),
            tail: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
        });
    }
    tracing::info!(
        package = request.package,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "built"
    );
    Ok(match request.triple {
        Some(triple) => target_dir.join(triple).join("release"),
        None => target_dir.join("release"),
    })
}
