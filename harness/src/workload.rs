//! Workloads: from a manifest's `image` to what an environment runs, through the project's workload
//! sources ([`crate::project::SourceSpec`]).
//!
//! A manifest image `agl/hvac-controller:1.0` names the executable `hvac-controller` (the last path
//! component of the repository). The [`WorkloadCatalog`] asks the sources in order and the first that
//! provides the image wins ([`WorkloadSource`]):
//!
//! * a directory of executables (`dir:`, `--workloads DIR`, `AGL_PARITY_WORKLOADS_DIR`), any language,
//!   static or dynamic;
//! * a build command (`build:` + `output:`), run once per run in the project root — this repository's C
//!   workloads (`make -C fixtures/c`, gcc, `-static`; [`project::c_workloads_build`]);
//! * a cargo package of the project (`cargo:`), built once per run as fully static executables
//!   (`-C target-feature=+crt-static`) — this repository's `agl-workloads`;
//! * the harness's own sample workloads (`builtin:`), built the same way from the harness's source;
//! * a container image (`image:`), usable by the container environment only: the others report the
//!   workload as *unsupported here* ([`InfraError::Unsupported`]), as the vm does for a dynamically linked
//!   executable ([`WorkloadCatalog::static_binary_for`], [`elf_interpreter`]).

use std::path::{Path, PathBuf};

use tokio::sync::OnceCell;

use crate::cargo::{BuildError, BuildRequest};
use crate::error::InfraError;
use crate::manifest::ImageRef;
use crate::project::{self, ImageFrom, Project, SourceSpec};

/// Environment variable naming a directory of prebuilt workload binaries (a `dir` source put first).
pub const PREBUILT_ENV: &str = "AGL_PARITY_WORKLOADS_DIR";
/// The package of the harness's own sample workloads.
pub const BUILTIN_PACKAGE: &str = "agl-workloads";

/// What a manifest image resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkloadSource {
    /// An executable on this machine (from a directory, a build command or cargo).
    Executable(PathBuf),
    /// A container image the project provides for this reference.
    Image { reference: String, how: ImageFrom },
}

/// One source with its executable directory, prepared at most once.
#[derive(Debug)]
struct Source {
    spec: SourceSpec,
    ready: OnceCell<Result<PathBuf, BuildError>>,
}

impl Source {
    fn new(spec: SourceSpec) -> Source {
        Source {
            spec,
            ready: OnceCell::new(),
        }
    }

    /// What the source is, for messages.
    fn describe(&self) -> String {
        match &self.spec {
            SourceSpec::Dir(d) => format!("directory {}", d.display()),
            SourceSpec::Build { command, .. } => format!("build `{command}`"),
            SourceSpec::Cargo { package } => format!("cargo package `{package}`"),
            SourceSpec::Builtin { .. } => format!("the harness's {BUILTIN_PACKAGE}"),
            SourceSpec::Image { reference, .. } => format!("image {reference}"),
        }
    }
}

/// Builds and locates workloads for one run.
#[derive(Debug)]
pub struct WorkloadCatalog {
    project_dir: PathBuf,
    triple: String,
    sources: Vec<Source>,
}

impl WorkloadCatalog {
    /// A catalog for the project at `project_dir` with its default sources (no project file read; see
    /// [`project::default_workloads`]), after `AGL_PARITY_WORKLOADS_DIR` if that is set.
    pub fn new(project_dir: &Path) -> WorkloadCatalog {
        WorkloadCatalog::with_sources(project_dir, None, project::default_workloads(project_dir))
    }

    /// A catalog for `project` (its `workloads:` sources), after `prebuilt` (`--workloads DIR`) or else
    /// `AGL_PARITY_WORKLOADS_DIR` when given.
    pub fn for_project(project: &Project, prebuilt: Option<&Path>) -> WorkloadCatalog {
        WorkloadCatalog::with_sources(&project.root, prebuilt, project.workloads.clone())
    }

    fn with_sources(project_dir: &Path, prebuilt: Option<&Path>, specs: Vec<SourceSpec>) -> WorkloadCatalog {
        let first = prebuilt
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os(PREBUILT_ENV).map(PathBuf::from))
            .map(SourceSpec::Dir);
        WorkloadCatalog {
            project_dir: project_dir.to_path_buf(),
            triple: host_triple(),
            sources: first.into_iter().chain(specs).map(Source::new).collect(),
        }
    }

    /// A catalog of prebuilt binaries in `dir` only.
    pub fn prebuilt(dir: &Path) -> WorkloadCatalog {
        WorkloadCatalog {
            project_dir: dir.to_path_buf(),
            triple: host_triple(),
            sources: vec![Source::new(SourceSpec::Dir(dir.to_path_buf()))],
        }
    }

    /// The project directory this catalog builds in.
    pub fn project_dir(&self) -> &Path {
        &self.project_dir
    }

    /// A catalog for another target triple (a board's, e.g. `aarch64-unknown-linux-gnu`): the cargo and
    /// builtin sources built with `--target <triple>` (directories, build commands and images are for the
    /// host and left out; with none left, the harness's sample workloads). Cross-compiling needs the
    /// target's std (`rustup target add`) and a linker for it (`CARGO_TARGET_<TRIPLE>_LINKER`); see
    /// `fixtures/lab/README.md`.
    pub fn for_target(&self, triple: &str) -> WorkloadCatalog {
        let mut specs: Vec<SourceSpec> = self
            .sources
            .iter()
            .filter(|s| matches!(s.spec, SourceSpec::Cargo { .. } | SourceSpec::Builtin { .. }))
            .map(|s| s.spec.clone())
            .collect();
        if specs.is_empty() {
            specs.push(SourceSpec::Builtin { names: Vec::new() });
        }
        WorkloadCatalog {
            project_dir: self.project_dir.clone(),
            triple: triple.to_string(),
            sources: specs.into_iter().map(Source::new).collect(),
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

    /// Names of the workloads the sources offer, as far as they are known without building.
    pub fn known_workloads(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for source in &self.sources {
            match &source.spec {
                SourceSpec::Dir(dir) | SourceSpec::Build { output: dir, .. } => {
                    names.extend(executables_in(dir))
                }
                SourceSpec::Cargo { .. } => {
                    if let Some(Ok(dir)) = source.ready.get() {
                        names.extend(executables_in(dir));
                    }
                }
                SourceSpec::Builtin { names: wanted } if !wanted.is_empty() => {
                    names.extend(wanted.iter().cloned())
                }
                SourceSpec::Builtin { .. } => names.extend(builtin_workloads()),
                SourceSpec::Image { reference, .. } => names.push(image_binary_name(reference).to_string()),
            }
        }
        names.sort();
        names.dedup();
        names
    }

    /// Prepares every executable source once (runs build commands, builds cargo packages, checks
    /// directories) and returns the directory of the first. A project whose workloads are all container
    /// images has none: that is [`InfraError::Unsupported`] (environments that run executables cannot run
    /// it); a project without any source is an [`InfraError::Build`].
    pub async fn ensure_built(&self) -> Result<PathBuf, InfraError> {
        let mut first = None;
        for source in self
            .sources
            .iter()
            .filter(|s| !matches!(s.spec, SourceSpec::Image { .. }))
        {
            let dir = self.ready(source).await?;
            first.get_or_insert(dir);
        }
        match first {
            Some(dir) => Ok(dir),
            None if self.sources.is_empty() => Err(InfraError::Build {
                workload: "workloads".into(),
                reason: format!(
                    "the project at {} names no workload source: add `workloads:` to its {} or give --workloads DIR",
                    self.project_dir.display(),
                    project::PROJECT_FILE
                ),
            }),
            None => Err(InfraError::Unsupported {
                workload: "workloads".into(),
                reason: "the project provides its workloads as container images only".into(),
            }),
        }
    }

    /// Prepares the executable sources like [`Self::ensure_built`], but a project of container images only
    /// is fine (for the container environment).
    pub async fn prepare(&self) -> Result<(), InfraError> {
        match self.ensure_built().await {
            Ok(_) | Err(InfraError::Unsupported { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The source that provides `image`: the first executable source holding its binary, or an image
    /// source for its reference.
    pub async fn resolve(&self, image: &ImageRef) -> Result<WorkloadSource, InfraError> {
        let name = image.binary_name();
        let mut searched = Vec::new();
        for source in &self.sources {
            match &source.spec {
                SourceSpec::Image { reference, how } => {
                    if image_matches(reference, image) {
                        return Ok(WorkloadSource::Image {
                            reference: reference.clone(),
                            how: how.clone(),
                        });
                    }
                }
                SourceSpec::Builtin { names } if !names.is_empty() && !names.iter().any(|n| n == name) => {}
                _ => {
                    let dir = self.ready(source).await?;
                    let path = dir.join(name);
                    if path.is_file() {
                        return Ok(WorkloadSource::Executable(path));
                    }
                    if let Some(target) = dangling_link(&path) {
                        return Err(InfraError::Build {
                            workload: image.to_string(),
                            reason: format!(
                                "{} links to {}, which does not exist: the program is not installed on this machine",
                                path.display(),
                                target.display()
                            ),
                        });
                    }
                    searched.push(dir.display().to_string());
                }
            }
        }
        Err(InfraError::Build {
            workload: image.to_string(),
            reason: format!(
                "image `{image}` is neither built locally nor buildable: no workload binary `{name}` in {} and no `image: {image}` source (available: {})",
                if searched.is_empty() { "any workload source".to_string() } else { searched.join(", ") },
                self.known_workloads().join(", ")
            ),
        })
    }

    /// The executable an image maps to, for environments that run executables; an image the project
    /// provides only as a container image is [`InfraError::Unsupported`].
    pub async fn binary_for(&self, image: &ImageRef) -> Result<PathBuf, InfraError> {
        match self.resolve(image).await? {
            WorkloadSource::Executable(path) => Ok(path),
            WorkloadSource::Image { reference, .. } => Err(InfraError::Unsupported {
                workload: image.to_string(),
                reason: format!(
                    "the project provides it only as the container image `{reference}`, which runs in the container environment only"
                ),
            }),
        }
    }

    /// [`Self::binary_for`] for environments that run static executables only (the vm): a dynamically
    /// linked executable is [`InfraError::Unsupported`].
    pub async fn static_binary_for(&self, image: &ImageRef) -> Result<PathBuf, InfraError> {
        let path = self.binary_for(image).await?;
        match elf_interpreter(&path) {
            Ok(None) => Ok(path),
            Ok(Some(interpreter)) => Err(InfraError::Unsupported {
                workload: image.to_string(),
                reason: format!(
                    "dynamically linked (interpreter {interpreter}): the vm runs static executables only"
                ),
            }),
            Err(e) => Err(InfraError::Build {
                workload: image.to_string(),
                reason: format!("{}: {e}", path.display()),
            }),
        }
    }

    /// The executable directory of a source (built once).
    async fn ready(&self, source: &Source) -> Result<PathBuf, InfraError> {
        source
            .ready
            .get_or_init(|| self.prepare_source(&source.spec))
            .await
            .clone()
            .map_err(|e| InfraError::Build {
                workload: source.describe(),
                reason: e.to_string(),
            })
    }

    async fn prepare_source(&self, spec: &SourceSpec) -> Result<PathBuf, BuildError> {
        let dir = match spec {
            SourceSpec::Dir(dir) => dir.clone(),
            SourceSpec::Build { command, output } => {
                run_build_command(&self.project_dir, command).await?;
                output.clone()
            }
            SourceSpec::Cargo { package } => {
                let request = BuildRequest {
                    package,
                    triple: Some(&self.triple),
                    static_crt: true,
                };
                crate::cargo::build(&self.project_dir, &request).await?
            }
            SourceSpec::Builtin { .. } => {
                let request = BuildRequest {
                    package: BUILTIN_PACKAGE,
                    triple: Some(&self.triple),
                    static_crt: true,
                };
                crate::cargo::build(&crate::cargo::source_workspace(), &request).await?
            }
            // Callers never ask an image source for a directory; say so rather than invent one.
            SourceSpec::Image { reference, .. } => {
                return Err(BuildError::NotADirectory {
                    what: format!("image {reference} (not a source of executables)"),
                    dir: PathBuf::new(),
                })
            }
        };
        if dir.is_dir() {
            Ok(dir)
        } else {
            Err(BuildError::NotADirectory {
                what: match spec {
                    SourceSpec::Build { command, .. } => format!("output of `{command}`"),
                    _ => "workloads".into(),
                },
                dir,
            })
        }
    }
}

/// Runs a project's build command once in `dir` with `sh -c`; its output is kept for the error.
async fn run_build_command(dir: &Path, command: &str) -> Result<(), BuildError> {
    tracing::info!(command, dir = %dir.display(), "workload build command");
    let output = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| BuildError::CommandSpawn {
            command: command.to_string(),
            dir: dir.to_path_buf(),
            reason: e.to_string(),
        })?;
    if output.status.success() {
        return Ok(());
    }
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(40)..].join("\n");
    Err(BuildError::CommandFailed {
        command: command.to_string(),
        dir: dir.to_path_buf(),
        status: output.status.to_string(),
        output: tail,
    })
}

/// Where `path` links to, when it is a symbolic link whose target does not exist (a link to a program that
/// is not installed here, like `fixtures/can-utils/candump` without can-utils).
fn dangling_link(path: &Path) -> Option<PathBuf> {
    let target = std::fs::read_link(path).ok()?;
    (!path.exists()).then_some(target)
}

/// Executable regular files without an extension in `dir`, or links to one: the binaries, not cargo's
/// by-products.
fn executables_in(dir: &Path) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let meta = std::fs::metadata(e.path()).ok()?;
            (meta.is_file() && meta.permissions().mode() & 0o111 != 0 && !name.contains('.')).then_some(name)
        })
        .collect()
}

/// The sample workloads of the harness's own `agl-workloads` (`src/bin/*.rs`, without its helpers).
pub fn builtin_workloads() -> Vec<String> {
    let dir = crate::cargo::source_workspace().join("fixtures/workloads/src/bin");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_string_lossy()
                .strip_suffix(".rs")
                .map(str::to_string)
        })
        .filter(|n| n != "pod-init")
        .collect();
    names.sort();
    names
}

/// The binary name of an image reference: the last path component without its tag.
fn image_binary_name(reference: &str) -> &str {
    let last = reference.rsplit('/').next().unwrap_or(reference);
    last.split(':').next().unwrap_or(last)
}

/// Whether an image source's `reference` provides the manifest image: the same `repository:tag`, or the
/// same repository when the reference names no tag.
fn image_matches(reference: &str, image: &ImageRef) -> bool {
    let last = reference.rsplit('/').next().unwrap_or(reference);
    if last.contains(':') {
        reference == image.to_string()
    } else {
        reference == image.repository
    }
}

/// The Rust target triple of this host, for static glibc builds.
pub fn host_triple() -> String {
    format!("{}-unknown-linux-gnu", std::env::consts::ARCH)
}

/// The program interpreter (`PT_INTERP`, e.g. `/lib64/ld-linux-x86-64.so.2`) of an ELF executable:
/// `Some` for a dynamically linked one, `None` for a static one or a file that is not ELF (a script).
pub fn elf_interpreter(path: &Path) -> std::io::Result<Option<String>> {
    use std::os::unix::fs::FileExt;
    let bad =
        |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("malformed ELF: {what}"));
    let file = std::fs::File::open(path)?;
    let mut header = [0u8; 64];
    let n = read_at_most(&file, &mut header, 0)?;
    if n < 52 || header[..4] != *b"\x7fELF" {
        return Ok(None);
    }
    let wide = match header[4] {
        1 => false,
        2 => true,
        _ => return Err(bad("unknown class")),
    };
    let big = match header[5] {
        1 => false,
        2 => true,
        _ => return Err(bad("unknown byte order")),
    };
    let int = |bytes: &[u8]| -> u64 {
        let mut v: u64 = 0;
        if big {
            bytes.iter().for_each(|b| v = (v << 8) | u64::from(*b));
        } else {
            bytes.iter().rev().for_each(|b| v = (v << 8) | u64::from(*b));
        }
        v
    };
    if wide && n < 64 {
        return Err(bad("short header"));
    }
    let (phoff, phentsize, phnum) = if wide {
        (
            int(&header[0x20..0x28]),
            int(&header[0x36..0x38]),
            int(&header[0x38..0x3a]),
        )
    } else {
        (
            int(&header[0x1c..0x20]),
            int(&header[0x2a..0x2c]),
            int(&header[0x2c..0x2e]),
        )
    };
    if phnum > 4096 || phentsize < if wide { 56 } else { 32 } {
        return Err(bad("program header table"));
    }
    for i in 0..phnum {
        let mut ph = [0u8; 56];
        let len = if wide { 56 } else { 32 };
        let at = phoff
            .checked_add(i * phentsize)
            .ok_or_else(|| bad("program header offset"))?;
        file.read_exact_at(&mut ph[..len], at)?;
        if int(&ph[0..4]) != 3 {
            continue; // not PT_INTERP
        }
        let (offset, size) = if wide {
            (int(&ph[0x08..0x10]), int(&ph[0x20..0x28]))
        } else {
            (int(&ph[0x04..0x08]), int(&ph[0x10..0x14]))
        };
        if size == 0 || size > 4096 {
            return Err(bad("interpreter path length"));
        }
        let mut name = vec![0u8; size as usize];
        file.read_exact_at(&mut name, offset)?;
        let end = name.iter().position(|b| *b == 0).unwrap_or(name.len());
        return Ok(Some(String::from_utf8_lossy(&name[..end]).to_string()));
    }
    Ok(None)
}

fn read_at_most(file: &std::fs::File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], offset + n as u64)? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn executable(path: &Path, text: &str) {
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn image(repository: &str, tag: &str) -> ImageRef {
        ImageRef {
            repository: repository.into(),
            tag: tag.into(),
        }
    }

    #[tokio::test]
    async fn unknown_image_names_the_available_binaries() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("hvac-controller"), b"").unwrap();
        std::fs::write(dir.path().join("hvac-controller.d"), b"").unwrap();
        std::fs::set_permissions(
            dir.path().join("hvac-controller"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        let catalog = WorkloadCatalog::prebuilt(dir.path());
        let err = catalog
            .binary_for(&image("agl/wiper", "1"))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("neither built locally nor buildable"), "{err}");
        assert!(err.contains("available: hvac-controller"), "{err}");
        let ok = image("registry/agl/hvac-controller", "2");
        assert!(catalog
            .binary_for(&ok)
            .await
            .unwrap()
            .ends_with("hvac-controller"));
    }

    #[tokio::test]
    async fn first_source_wins_and_images_are_unsupported_for_executables() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        executable(&b.join("wiper"), "#!/bin/sh\n");
        executable(&b.join("hvac"), "#!/bin/sh\n");
        executable(&a.join("hvac"), "#!/bin/sh\n");
        let mut project = Project::defaults(dir.path());
        project.workloads = vec![
            SourceSpec::Image {
                reference: "reg.example/agl/wiper:1.0".into(),
                how: ImageFrom::Engine,
            },
            SourceSpec::Dir(b.clone()),
        ];
        project.prefer_workloads_dir(&a);
        let catalog = WorkloadCatalog::for_project(&project, None);
        assert_eq!(
            catalog.resolve(&image("x/hvac", "1")).await.unwrap(),
            WorkloadSource::Executable(a.join("hvac"))
        );
        let wiper = image("reg.example/agl/wiper", "1.0");
        assert_eq!(
            catalog.resolve(&wiper).await.unwrap(),
            WorkloadSource::Image {
                reference: "reg.example/agl/wiper:1.0".into(),
                how: ImageFrom::Engine
            }
        );
        let e = catalog.binary_for(&wiper).await.unwrap_err();
        assert!(matches!(e, InfraError::Unsupported { .. }), "{e}");
        // Another tag of the image is not the image source: the directory's executable serves it.
        assert_eq!(
            catalog
                .binary_for(&image("reg.example/agl/wiper", "2.0"))
                .await
                .unwrap(),
            b.join("wiper")
        );
    }

    #[tokio::test]
    async fn build_command_runs_once_and_its_output_is_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut project = Project::defaults(dir.path());
        project.workloads = vec![SourceSpec::Build {
            command: "echo run >> count && mkdir -p out && printf '#!/bin/sh\\n' > out/w && chmod +x out/w"
                .into(),
            output: dir.path().join("out"),
        }];
        let catalog = WorkloadCatalog::for_project(&project, None);
        assert_eq!(catalog.ensure_built().await.unwrap(), dir.path().join("out"));
        assert_eq!(
            catalog.binary_for(&image("w", "1")).await.unwrap(),
            dir.path().join("out/w")
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("count")).unwrap(),
            "run\n"
        );

        project.workloads = vec![SourceSpec::Build {
            command: "echo compiling wiper.c; echo 'wiper.c:3: error: expected ;' >&2; exit 2".into(),
            output: dir.path().join("none"),
        }];
        let catalog = WorkloadCatalog::for_project(&project, None);
        let e = catalog.ensure_built().await.unwrap_err().to_string();
        assert!(
            e.contains("compiling wiper.c") && e.contains("wiper.c:3: error"),
            "{e}"
        );
        assert!(e.contains("exit status: 2"), "{e}");
    }

    #[tokio::test]
    async fn image_only_projects_and_projects_without_sources() {
        let dir = tempfile::tempdir().unwrap();
        let mut project = Project::defaults(dir.path());
        let catalog = WorkloadCatalog::for_project(&project, None);
        let e = catalog.ensure_built().await.unwrap_err();
        assert!(
            matches!(e, InfraError::Build { .. }) && e.to_string().contains("no workload source"),
            "{e}"
        );
        project.workloads = vec![SourceSpec::Image {
            reference: "a/b:1".into(),
            how: ImageFrom::Engine,
        }];
        let catalog = WorkloadCatalog::for_project(&project, None);
        assert!(matches!(
            catalog.ensure_built().await,
            Err(InfraError::Unsupported { .. })
        ));
        catalog.prepare().await.unwrap();
    }

    #[test]
    fn elf_interpreter_of_static_dynamic_and_other_files() {
        // This test binary is linked dynamically by default; /bin/sh is too.
        let sh = elf_interpreter(Path::new("/bin/sh")).unwrap();
        assert!(sh.as_deref().is_some_and(|i| i.contains("ld-")), "{sh:?}");
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("s");
        executable(&script, "#!/bin/sh\necho hi\n");
        assert_eq!(elf_interpreter(&script).unwrap(), None);
        // A minimal static ELF64: header only, no program headers.
        let mut elf = vec![0u8; 64];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[5] = 1;
        elf[0x36] = 56;
        std::fs::write(dir.path().join("static"), &elf).unwrap();
        assert_eq!(elf_interpreter(&dir.path().join("static")).unwrap(), None);
        // One PT_INTERP program header pointing at "/lib/ld.so".
        elf[0x20] = 64; // e_phoff
        elf[0x38] = 1; // e_phnum
        let mut ph = vec![0u8; 56];
        ph[0] = 3;
        ph[0x08] = 120; // p_offset
        ph[0x20] = 11; // p_filesz
        elf.extend(ph);
        elf.extend(b"/lib/ld.so\0");
        std::fs::write(dir.path().join("dynamic"), &elf).unwrap();
        assert_eq!(
            elf_interpreter(&dir.path().join("dynamic")).unwrap().as_deref(),
            Some("/lib/ld.so")
        );
        elf.truncate(100);
        std::fs::write(dir.path().join("cut"), &elf).unwrap();
        assert!(elf_interpreter(&dir.path().join("cut")).is_err());
    }

    #[tokio::test]
    async fn links_in_a_directory_are_executables_and_a_dangling_one_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir_all(&real).unwrap();
        executable(&real.join("candump"), "#!/bin/sh\n");
        let links = dir.path().join("links");
        std::fs::create_dir_all(&links).unwrap();
        std::os::unix::fs::symlink(real.join("candump"), links.join("candump")).unwrap();
        std::os::unix::fs::symlink(real.join("cansend"), links.join("cansend")).unwrap();
        let catalog = WorkloadCatalog::prebuilt(&links);
        assert_eq!(catalog.known_workloads(), vec!["candump".to_string()]);
        assert_eq!(
            catalog
                .binary_for(&image("can-utils/candump", "1"))
                .await
                .unwrap(),
            links.join("candump")
        );
        let e = catalog
            .binary_for(&image("can-utils/cansend", "1"))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("links to") && e.contains("real/cansend") && e.contains("not installed"),
            "{e}"
        );
    }

    #[test]
    fn for_target_keeps_cargo_sources_only() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = WorkloadCatalog::prebuilt(dir.path()).for_target("aarch64-unknown-linux-gnu");
        assert_eq!(catalog.triple(), "aarch64-unknown-linux-gnu");
        assert_eq!(
            catalog.sources.iter().map(|s| s.spec.clone()).collect::<Vec<_>>(),
            vec![SourceSpec::Builtin { names: Vec::new() }]
        );
        assert!(builtin_workloads().contains(&"hvac-controller".to_string()));
        assert!(!builtin_workloads().contains(&"pod-init".to_string()));
    }
}
