//! The harness's own helper executables: `pod-init` (PID 1 of every container, from package
//! `agl-workloads`) and `agl-vmm` (the VMM of the vm environment, from `harness/vmm`).
//!
//! They belong to the harness, not to the project under test, so they are never looked up in the user's
//! project or workloads directory. Each is found, once per process, in this order:
//!
//! 1. its environment override ([`Helper::env_var`]: `AGL_PARITY_POD_INIT`, `AGL_PARITY_VMM`);
//! 2. an executable of that name beside the running `agl-parity` (an installed tool, e.g.
//!    `cargo install --path harness` plus the helpers in the same `bin/`), unless the running executable is
//!    a build of the harness's own workspace (`cargo run`, `cargo test`), which builds them instead;
//! 3. built from the harness's own source, the workspace this binary was built from ([`crate::cargo::source_workspace`]):
//!    pod-init fully static (it runs in a FROM-scratch image), the VMM for the host.

use std::path::{Path, PathBuf};

use tokio::sync::OnceCell;

use crate::cargo::{source_workspace, BuildError, BuildRequest};
use crate::error::InfraError;

/// A helper executable of the harness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Helper {
    /// PID 1 of containers, speaking `agl_workloads::pod_init`.
    PodInit,
    /// The VMM of the vm environment.
    Vmm,
}

impl Helper {
    /// The executable's name.
    pub fn name(self) -> &'static str {
        match self {
            Helper::PodInit => "pod-init",
            Helper::Vmm => "agl-vmm",
        }
    }

    /// The environment variable naming the executable to use.
    pub fn env_var(self) -> &'static str {
        match self {
            Helper::PodInit => "AGL_PARITY_POD_INIT",
            Helper::Vmm => "AGL_PARITY_VMM",
        }
    }

    fn request(self) -> (&'static str, Option<String>, bool) {
        match self {
            Helper::PodInit => ("agl-workloads", Some(crate::workload::host_triple()), true),
            Helper::Vmm => ("agl-vmm", None, false),
        }
    }

    fn cell(self) -> &'static OnceCell<Result<PathBuf, HelperError>> {
        static POD_INIT: OnceCell<Result<PathBuf, HelperError>> = OnceCell::const_new();
        static VMM: OnceCell<Result<PathBuf, HelperError>> = OnceCell::const_new();
        match self {
            Helper::PodInit => &POD_INIT,
            Helper::Vmm => &VMM,
        }
    }

    /// The helper's executable: found or built once per process (later calls reuse the result).
    pub async fn path(self) -> Result<PathBuf, InfraError> {
        self.cell()
            .get_or_init(|| locate(self))
            .await
            .clone()
            .map_err(|e| InfraError::Build {
                workload: self.name().into(),
                reason: e.to_string(),
            })
    }
}

/// Why a helper could not be found or built.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HelperError {
    #[error("{var}={} is not a file", .path.display())]
    NotAFile { var: &'static str, path: PathBuf },
    #[error(
        "{build}\n(the harness builds {name} from its source at {}; or set {var}, or install {name} beside agl-parity)",
        .workspace.display()
    )]
    Build {
        name: &'static str,
        var: &'static str,
        workspace: PathBuf,
        build: BuildError,
    },
    #[error(
        "no {name}: the harness source it was built from ({}) is gone; set {var} or install {name} beside agl-parity",
        .workspace.display()
    )]
    NoSource {
        name: &'static str,
        var: &'static str,
        workspace: PathBuf,
    },
}

async fn locate(helper: Helper) -> Result<PathBuf, HelperError> {
    if let Some(path) = std::env::var_os(helper.env_var()) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(HelperError::NotAFile {
                var: helper.env_var(),
                path,
            })
        };
    }
    let workspace = source_workspace();
    if let Some(path) = beside_current_exe(helper, &workspace) {
        return Ok(path);
    }
    if !workspace.join("Cargo.toml").is_file() {
        return Err(HelperError::NoSource {
            name: helper.name(),
            var: helper.env_var(),
            workspace,
        });
    }
    let (package, triple, static_crt) = helper.request();
    let request = BuildRequest {
        package,
        triple: triple.as_deref(),
        static_crt,
    };
    match crate::cargo::build(&workspace, &request).await {
        Ok(dir) => Ok(dir.join(helper.name())),
        Err(build) => Err(HelperError::Build {
            name: helper.name(),
            var: helper.env_var(),
            workspace,
            build,
        }),
    }
}

/// The helper installed beside the running executable, unless that executable is a build in the source
/// workspace's target directory (whose neighbours may be stale or, for pod-init, not static).
fn beside_current_exe(helper: Helper, workspace: &Path) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?.canonicalize().ok()?;
    let target = crate::cargo::target_dir(workspace);
    let target = target.canonicalize().unwrap_or(target);
    if exe.starts_with(&target) || exe.starts_with(workspace.join("target")) {
        return None;
    }
    let path = exe.parent()?.join(helper.name());
    if !path.is_file() {
        return None;
    }
    if helper == Helper::PodInit && matches!(crate::workload::elf_interpreter(&path), Ok(Some(_))) {
        tracing::warn!(path = %path.display(), "ignoring a dynamically linked pod-init: containers need a static one");
        return None;
    }
    Some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_overrides() {
        assert_eq!(Helper::PodInit.name(), "pod-init");
        assert_eq!(Helper::Vmm.env_var(), "AGL_PARITY_VMM");
        assert!(source_workspace().join("harness/Cargo.toml").is_file());
        // A test binary lives in the workspace's target directory: it never takes its neighbours.
        assert_eq!(beside_current_exe(Helper::PodInit, &source_workspace()), None);
    }
}
