//! Workload binaries: from a manifest's `image` to a fully static executable.
//!
//! Every environment runs the same binary. A manifest image `agl/hvac-controller:1.0` names the workload
//! binary `hvac-controller` of the `agl-workloads` package under `fixtures/workloads`; the
//! [`WorkloadCatalog`] builds that package once per run as fully static executables
//! (`-C target-feature=+crt-static`), or takes them from a directory of prebuilt binaries
//! (`AGL_PARITY_WORKLOADS_DIR`, e.g. from a CI artifact or a cross build for a board).

use std::path::{Path, PathBuf};

use tokio::sync::OnceCell;

use crate::cargo::BuildError;
use crate::error::InfraError;
use crate::manifest::ImageRef;

/// Environment variable naming a directory of prebuilt workload binaries.
pub const PREBUILT_ENV: &str = "AGL_PARITY_WORKLOADS_DIR";
const PACKAGE: &str = "agl-workloads";

/// Builds and locates workload binaries.
#[derive(Debug)]
pub struct WorkloadCatalog {
    project_dir: PathBuf,
    prebuilt: Option<PathBuf>,
    triple: String,
    built: OnceCell<Result<PathBuf, BuildError>>,
}

impl WorkloadCatalog {
    /// A catalog building from the workspace at `project_dir` for the host architecture, unless
    /// `AGL_PARITY_WORKLOADS_DIR` names prebuilt binaries.
    pub fn new(project_dir: &Path) -> WorkloadCatalog {
        WorkloadCatalog {
            project_dir: project_dir.to_path_buf(),
            prebuilt: std::env::var_os(PREBUILT_ENV).map(PathBuf::from),
            triple: host_triple(),
            built: OnceCell::new(),
        }
    }

    /// A catalog of prebuilt binaries in `dir` only.
    pub fn prebuilt(dir: &Path) -> WorkloadCatalog {
        WorkloadCatalog {
            project_dir: dir.to_path_buf(),
            prebuilt: Some(dir.to_path_buf()),
            triple: host_triple(),
            built: OnceCell::new(),
        }
    }

    /// The project directory this catalog builds from.
    pub fn project_dir(&self) -> &Path {
        &self.project_dir
    }

    /// A catalog for another target triple (a board's, e.g. `aarch64-unknown-linux-gnu`): builds the same
    /// workloads with `--target <triple>`. Cross-compiling needs the target's std (`rustup target add`) and a
    /// linker for it (`CARGO_TARGET_<TRIPLE>_LINKER`); see `fixtures/lab/README.md`.
    pub fn for_target(&self, triple: &str) -> WorkloadCatalog {
        let project_dir = match self.prebuilt {
            Some(_) => crate::default_project_dir(),
            None => self.project_dir.clone(),
        };
        WorkloadCatalog {
            project_dir,
            prebuilt: None,
            triple: triple.to_string(),
            built: OnceCell::new(),
        }
    }

    /// Prebuilt binaries in `dir` built for `triple` (a board's `workloads:` directory).
    pub fn prebuilt_for(dir: &Path, triple: &str) -> WorkloadCatalog {
        WorkloadCatalog {
            triple: triple.to_string(),
            ..WorkloadCatalog::prebuilt(dir)
        }
    }

    /// The target triple the binaries are built for.
    pub fn triple(&self) -> &str {
        &self.triple
    }

    /// Names of the workload binaries the package defines (`src/bin/*.rs`).
    pub fn known_workloads(&self) -> Vec<String> {
        let dir = match &self.prebuilt {
            Some(dir) => dir.clone(),
            None => self.project_dir.join("fixtures/workloads/src/bin"),
        };
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().to_string();
                match &self.prebuilt {
                    // Executable regular files without an extension: the binaries, not cargo's by-products.
                    Some(_) => {
                        use std::os::unix::fs::PermissionsExt;
                        let meta = e.metadata().ok()?;
                        (meta.is_file() && meta.permissions().mode() & 0o111 != 0 && !name.contains('.'))
                            .then_some(name)
                    }
                    None => name.strip_suffix(".rs").map(str::to_string),
                }
            })
            .collect();
        names.sort();
        names
    }

    /// Builds the workloads (once; later calls reuse the result) and returns the binary directory.
    pub async fn ensure_built(&self) -> Result<PathBuf, InfraError> {
        let result = self
            .built
            .get_or_init(|| async {
                match &self.prebuilt {
                    Some(dir) if dir.is_dir() => Ok(dir.clone()),
                    Some(dir) => Err(BuildError::PrebuiltNotADirectory {
                        var: PREBUILT_ENV,
                        dir: dir.clone(),
                    }),
                    None => self.cargo_build().await,
                }
            })
            .await;
        result.clone().map_err(|e| InfraError::Build {
            workload: PACKAGE.into(),
            reason: e.to_string(),
        })
    }

    /// The binary an image maps to. Call after [`Self::ensure_built`].
    pub async fn binary_for(&self, image: &ImageRef) -> Result<PathBuf, InfraError> {
        let dir = self.ensure_built().await?;
        let path = dir.join(image.binary_name());
        if path.is_file() {
            Ok(path)
        } else {
            Err(InfraError::Build {
                workload: image.to_string(),
                reason: format!(
                    "image `{image}` is neither built locally nor buildable: no workload binary `{}` in {} (available: {})",
                    image.binary_name(),
                    dir.display(),
                    self.known_workloads().join(", ")
                ),
            })
        }
    }

    async fn cargo_build(&self) -> Result<PathBuf, BuildError> {
        let request = crate::cargo::BuildRequest {
            package: PACKAGE,
            triple: Some(&self.triple),
            static_crt: true,
        };
        crate::cargo::build(&self.project_dir, &request).await
    }
}

/// The Rust target triple of this host, for static glibc builds.
pub fn host_triple() -> String {
    format!("{}-unknown-linux-gnu", std::env::consts::ARCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unknown_image_names_the_available_binaries() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("hvac-controller"), b"").unwrap();
        std::fs::write(dir.path().join("hvac-controller.d"), b"").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            dir.path().join("hvac-controller"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        let catalog = WorkloadCatalog::prebuilt(dir.path());
        let image = ImageRef {
            repository: "agl/wiper".into(),
            tag: "1".into(),
        };
        let err = catalog.binary_for(&image).await.unwrap_err().to_string();
        assert!(err.contains("neither built locally nor buildable"), "{err}");
        assert!(err.contains("available: hvac-controller"), "{err}");
        let ok = ImageRef {
            repository: "registry/agl/hvac-controller".into(),
            tag: "2".into(),
        };
        assert!(catalog
            .binary_for(&ok)
            .await
            .unwrap()
            .ends_with("hvac-controller"));
    }
}
