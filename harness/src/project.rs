//! The project a run works on: where its scenarios, manifests, DBC files, parity settings, reports, lab
//! inventory and workloads are.
//!
//! A project describes itself in [`PROJECT_FILE`] (`agl-parity.yaml`) at its root; every field is optional
//! and relative paths are relative to the root. Without the file, this repository's layout is the default
//! (so the repository itself needs none):
//!
//! ```yaml
//! scenarios: [scenarios]              # feature files or directories
//! manifests: [fixtures/manifests]     # manifest directories (searched recursively for *.yaml/*.yml) or files
//! dbc: [fixtures/dbc]                 # DBC directories (recursive) or files
//! parity: scenarios/parity.yaml       # parity settings
//! reports: reports
//! lab: bench-lab.yaml                 # optional lab inventory (same as --lab)
//! bridges:                            # optional: third-party tools on the scenario buses (crate::bridges)
//!   socketcand: 29536                 #   a socketcand server for every bus (same as `run --socketcand`)
//!   slcan: {body: /tmp/slcan-body}    #   an slcan adapter on a pty, per bus
//!   cannelloni: {vehicle: {local: 127.0.0.1:20000, remote: 127.0.0.1:20001}}
//! workloads:                          # sources, the first that provides an image's binary wins
//!   - dir: build/bin                  # executables named after the image's last path component
//!   - build: "make -C src"            # run once per run in the project root (sh -c) ...
//!     output: build/bin               #   ... producing executables here
//!   - cargo: my-workloads             # a cargo package of the project, built as static executables
//!   - builtin: [hvac-controller]      # the harness's own sample workloads, built from its source
//!   - image: registry.example/agl/wiper:1.0   # a container image: already in the local engine, or
//!     tarball: images/wiper.tar               #   loaded with `docker load`, or
//!     containerfile: images/Containerfile     #   built with `docker build`
//! ```
//!
//! Without a `workloads:` list, a project laid out like this repository (it has
//! `fixtures/workloads/Cargo.toml`) gets this repository's sources ([`default_workloads`]):
//!
//! ```yaml
//! workloads:
//!   - cargo: agl-workloads            # hvac-controller, body-control (Rust, static)
//!   - dir: fixtures/can-utils         # links to the host's can-utils (candump, cansend), when present
//!   - build: "make -s --no-print-directory -C fixtures/c OUT='<target>/c-workloads'"
//!     output: <target>/c-workloads    # the C workloads (wiper-ecu), gcc -static, when fixtures/c has a Makefile
//! ```
//!
//! (`<target>` is cargo's target directory: `CARGO_TARGET_DIR`, else `target`.) Any other project without
//! the list gets `dir: bin` when that directory exists. [`crate::workload`] turns the sources into
//! executables and images.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::config::PARITY_CONFIG;

/// The project file at a project's root.
pub const PROJECT_FILE: &str = "agl-parity.yaml";

/// Where a project keeps what a run needs; every path is absolute or relative to the working directory
/// (already joined with [`Project::root`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    pub root: PathBuf,
    /// The project file, when the project has one.
    pub file: Option<PathBuf>,
    /// Feature files or directories.
    pub scenarios: Vec<PathBuf>,
    /// Manifest files or directories (searched recursively).
    pub manifests: Vec<PathBuf>,
    /// DBC files or directories (searched recursively).
    pub dbc: Vec<PathBuf>,
    /// The parity settings file (need not exist).
    pub parity: PathBuf,
    /// Where run directories are written.
    pub reports: PathBuf,
    /// Lab inventory for board columns.
    pub lab: Option<PathBuf>,
    /// Workload sources, in order of preference.
    pub workloads: Vec<SourceSpec>,
    /// Third-party tools on the scenario buses (socketcand, slcan, cannelloni).
    pub bridges: crate::bridges::BridgeSettings,
}

/// One place workloads come from, as the project file states it (paths joined with the project root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    /// A directory of executables named after the image's last path component.
    Dir(PathBuf),
    /// A command run once per run in the project root (`sh -c`) that writes executables into `output`.
    Build { command: String, output: PathBuf },
    /// A cargo package of the project, built as static executables.
    Cargo { package: String },
    /// The harness's own sample workloads (`agl-workloads`), built from the harness's source; `names`
    /// limits which (empty: all).
    Builtin { names: Vec<String> },
    /// A container image for the manifest image `reference` (container environment only).
    Image { reference: String, how: ImageFrom },
}

/// Where a container image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageFrom {
    /// Already in the local engine.
    Engine,
    /// Loaded with `docker load` from this tarball.
    Tarball(PathBuf),
    /// Built with `docker build` from this Containerfile (context: its directory).
    Containerfile(PathBuf),
}

/// Why a project file cannot be used; every variant names the file, and the field (with its line) where
/// there is one.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProjectError {
    #[error("{}: {reason}", .path.display())]
    Read { path: PathBuf, reason: String },
    #[error("{}: {field}: {reason}", .path.display())]
    Field {
        path: PathBuf,
        field: String,
        reason: String,
    },
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawProject {
    scenarios: Option<Vec<PathBuf>>,
    manifests: Option<Vec<PathBuf>>,
    dbc: Option<Vec<PathBuf>>,
    parity: Option<PathBuf>,
    reports: Option<PathBuf>,
    lab: Option<PathBuf>,
    workloads: Option<Vec<RawSource>>,
    bridges: Option<crate::bridges::BridgeSettings>,
}

/// A workload source before its paths are joined with the root; validated while it is deserialised, so
/// that a wrong combination of keys is reported with its field path and line.
#[derive(Deserialize)]
#[serde(try_from = "RawSourceKeys")]
struct RawSource(SourceSpec);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSourceKeys {
    dir: Option<PathBuf>,
    build: Option<String>,
    output: Option<PathBuf>,
    cargo: Option<String>,
    builtin: Option<Vec<String>>,
    image: Option<String>,
    tarball: Option<PathBuf>,
    containerfile: Option<PathBuf>,
}

const SOURCE_KINDS: &str = "one of `dir`, `build` (with `output`), `cargo`, `builtin`, `image`";

impl TryFrom<RawSourceKeys> for RawSource {
    type Error = String;

    fn try_from(k: RawSourceKeys) -> Result<RawSource, String> {
        let kinds = [
            ("dir", k.dir.is_some()),
            ("build", k.build.is_some()),
            ("cargo", k.cargo.is_some()),
            ("builtin", k.builtin.is_some()),
            ("image", k.image.is_some()),
        ];
        let given: Vec<&str> = kinds.iter().filter(|(_, set)| *set).map(|(n, _)| *n).collect();
        if given.len() != 1 {
            return Err(format!(
                "a workload source is {SOURCE_KINDS}; this one has {}",
                if given.is_empty() {
                    "none".to_string()
                } else {
                    given
                        .iter()
                        .map(|g| format!("`{g}`"))
                        .collect::<Vec<_>>()
                        .join(" and ")
                }
            ));
        }
        if k.output.is_some() && k.build.is_none() {
            return Err("`output` belongs to a `build` source".into());
        }
        if (k.tarball.is_some() || k.containerfile.is_some()) && k.image.is_none() {
            return Err("`tarball` and `containerfile` belong to an `image` source".into());
        }
        let spec = if let Some(dir) = k.dir {
            SourceSpec::Dir(dir)
        } else if let Some(command) = k.build {
            let output = k
                .output
                .ok_or("a `build` source needs `output`: the directory of executables it produces")?;
            SourceSpec::Build { command, output }
        } else if let Some(package) = k.cargo {
            SourceSpec::Cargo { package }
        } else if let Some(names) = k.builtin {
            SourceSpec::Builtin { names }
        } else {
            let reference = k.image.unwrap_or_default();
            if reference.trim().is_empty() {
                return Err("`image` is empty".into());
            }
            let how = match (k.tarball, k.containerfile) {
                (Some(_), Some(_)) => {
                    return Err("an image comes from a `tarball` or a `containerfile`, not both".into())
                }
                (Some(t), None) => ImageFrom::Tarball(t),
                (None, Some(c)) => ImageFrom::Containerfile(c),
                (None, None) => ImageFrom::Engine,
            };
            SourceSpec::Image { reference, how }
        };
        Ok(RawSource(spec))
    }
}

impl Project {
    /// The project at `root`: its project file if it has one, else the defaults.
    pub fn load(root: &Path) -> Result<Project, ProjectError> {
        let file = root.join(PROJECT_FILE);
        if !file.is_file() {
            return Ok(Project::defaults(root));
        }
        let text = std::fs::read_to_string(&file).map_err(|e| ProjectError::Read {
            path: file.clone(),
            reason: e.to_string(),
        })?;
        Project::parse(&text, root, &file)
    }

    /// Parses project-file text for the project at `root`; `file` names it in errors.
    pub fn parse(text: &str, root: &Path, file: &Path) -> Result<Project, ProjectError> {
        let has_content = text
            .lines()
            .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#') && l.trim() != "---");
        let raw: RawProject = if has_content {
            let de = serde_yaml::Deserializer::from_str(text);
            serde_path_to_error::deserialize(de).map_err(|e| ProjectError::Field {
                path: file.to_path_buf(),
                field: match e.path().to_string() {
                    p if p == "." || p.is_empty() => "(document)".into(),
                    p => p,
                },
                reason: e.inner().to_string(),
            })?
        } else {
            RawProject::default()
        };
        let defaults = Project::defaults(root);
        let join = |p: PathBuf| root.join(p);
        let joins = |v: Vec<PathBuf>| v.into_iter().map(join).collect::<Vec<_>>();
        Ok(Project {
            root: root.to_path_buf(),
            file: Some(file.to_path_buf()),
            scenarios: raw.scenarios.map(joins).unwrap_or(defaults.scenarios),
            manifests: raw.manifests.map(joins).unwrap_or(defaults.manifests),
            dbc: raw.dbc.map(joins).unwrap_or(defaults.dbc),
            parity: raw.parity.map(join).unwrap_or(defaults.parity),
            reports: raw.reports.map(join).unwrap_or(defaults.reports),
            lab: raw.lab.map(join),
            workloads: match raw.workloads {
                Some(sources) => sources.into_iter().map(|s| s.0.rooted(root)).collect(),
                None => defaults.workloads,
            },
            bridges: raw.bridges.unwrap_or_default().rooted(root),
        })
    }

    /// The project at `root` laid out like this repository, without a project file.
    pub fn defaults(root: &Path) -> Project {
        Project {
            root: root.to_path_buf(),
            file: None,
            scenarios: vec![root.join("scenarios")],
            manifests: vec![root.join("fixtures/manifests")],
            dbc: vec![root.join("fixtures/dbc")],
            parity: root.join(PARITY_CONFIG),
            reports: root.join("reports"),
            lab: None,
            workloads: default_workloads(root),
            bridges: Default::default(),
        }
    }

    /// Puts a directory of executables first among the workload sources (`--workloads DIR`).
    pub fn prefer_workloads_dir(&mut self, dir: &Path) {
        self.workloads.insert(0, SourceSpec::Dir(dir.to_path_buf()));
    }
}

impl SourceSpec {
    /// The spec with its relative paths joined with the project root.
    fn rooted(self, root: &Path) -> SourceSpec {
        match self {
            SourceSpec::Dir(d) => SourceSpec::Dir(root.join(d)),
            SourceSpec::Build { command, output } => SourceSpec::Build {
                command,
                output: root.join(output),
            },
            SourceSpec::Image { reference, how } => SourceSpec::Image {
                reference,
                how: match how {
                    ImageFrom::Engine => ImageFrom::Engine,
                    ImageFrom::Tarball(t) => ImageFrom::Tarball(root.join(t)),
                    ImageFrom::Containerfile(c) => ImageFrom::Containerfile(root.join(c)),
                },
            },
            other => other,
        }
    }
}

/// The directory of this repository's C workloads (one subdirectory with a Makefile each).
pub const C_WORKLOADS_DIR: &str = "fixtures/c";
/// The directory of links to the host's can-utils in this repository.
pub const CAN_UTILS_DIR: &str = "fixtures/can-utils";

/// The workload sources of a project without a `workloads:` list: this repository's (see the module
/// documentation), else `dir: bin`.
pub fn default_workloads(root: &Path) -> Vec<SourceSpec> {
    if root.join("fixtures/workloads/Cargo.toml").is_file() {
        let mut sources = vec![SourceSpec::Cargo {
            package: "agl-workloads".into(),
        }];
        if root.join(CAN_UTILS_DIR).is_dir() {
            sources.push(SourceSpec::Dir(root.join(CAN_UTILS_DIR)));
        }
        if root.join(C_WORKLOADS_DIR).join("Makefile").is_file() {
            sources.push(c_workloads_build(root));
        }
        sources
    } else if root.join("bin").is_dir() {
        vec![SourceSpec::Dir(root.join("bin"))]
    } else {
        Vec::new()
    }
}

/// The build source of this repository's C workloads: `make` in [`C_WORKLOADS_DIR`] with gcc, fully static
/// (one executable for every environment: the vm and FROM-scratch containers need a static one), into
/// `<target>/c-workloads`. A missing compiler or static C library is named by the Makefile.
pub fn c_workloads_build(root: &Path) -> SourceSpec {
    let output = crate::cargo::target_dir(root).join("c-workloads");
    let output = if output.is_absolute() {
        output
    } else {
        root.join(output)
    };
    SourceSpec::Build {
        command: format!(
            "make -s --no-print-directory -C {C_WORKLOADS_DIR} OUT={}",
            shell_quote(&output.display().to_string())
        ),
        output,
    }
}

/// `text` as one single-quoted `sh` word.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// Whether `dir` looks like a project: it has a project file or a `scenarios/` directory.
pub fn is_project(dir: &Path) -> bool {
    dir.join(PROJECT_FILE).is_file() || dir.join("scenarios").is_dir()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Project, ProjectError> {
        Project::parse(text, Path::new("/p"), Path::new("/p/agl-parity.yaml"))
    }

    #[test]
    fn defaults_are_this_repository_layout() {
        let p = parse("# nothing but a comment\n").unwrap();
        assert_eq!(p.scenarios, vec![PathBuf::from("/p/scenarios")]);
        assert_eq!(p.manifests, vec![PathBuf::from("/p/fixtures/manifests")]);
        assert_eq!(p.parity, PathBuf::from("/p/scenarios/parity.yaml"));
        assert_eq!(p.reports, PathBuf::from("/p/reports"));
        assert!(p.lab.is_none());
    }

    #[test]
    fn every_field_and_source_kind() {
        let p = parse(
            "scenarios: [features, extra/one.feature]\nmanifests: [k8s, /abs/m.yaml]\ndbc: [can]\n\
             parity: parity.yaml\nreports: out\nlab: lab.yaml\nworkloads:\n  - dir: build/bin\n\
             \x20 - build: make -C src\n    output: build/out\n  - cargo: my-workloads\n\
             \x20 - builtin: [hvac-controller]\n  - image: registry.example/agl/wiper:1.0\n\
             \x20 - image: a/b:1\n    tarball: images/b.tar\n  - image: a/c:1\n    containerfile: images/Containerfile\n",
        )
        .unwrap();
        assert_eq!(
            p.scenarios,
            vec![
                PathBuf::from("/p/features"),
                PathBuf::from("/p/extra/one.feature")
            ]
        );
        assert_eq!(p.manifests[1], PathBuf::from("/abs/m.yaml"));
        assert_eq!(p.lab, Some(PathBuf::from("/p/lab.yaml")));
        assert_eq!(
            p.workloads,
            vec![
                SourceSpec::Dir("/p/build/bin".into()),
                SourceSpec::Build {
                    command: "make -C src".into(),
                    output: "/p/build/out".into()
                },
                SourceSpec::Cargo {
                    package: "my-workloads".into()
                },
                SourceSpec::Builtin {
                    names: vec!["hvac-controller".into()]
                },
                SourceSpec::Image {
                    reference: "registry.example/agl/wiper:1.0".into(),
                    how: ImageFrom::Engine
                },
                SourceSpec::Image {
                    reference: "a/b:1".into(),
                    how: ImageFrom::Tarball("/p/images/b.tar".into())
                },
                SourceSpec::Image {
                    reference: "a/c:1".into(),
                    how: ImageFrom::Containerfile("/p/images/Containerfile".into())
                },
            ]
        );
    }

    #[test]
    fn errors_name_file_field_and_line() {
        let e = parse("scenarios: [a]\nreportz: x\n").unwrap_err().to_string();
        assert!(e.starts_with("/p/agl-parity.yaml: "), "{e}");
        assert!(
            e.contains("unknown field `reportz`") && e.contains("line 2"),
            "{e}"
        );
        let e = parse("workloads:\n  - dir: a\n  - build: make\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("workloads[1]") && e.contains("needs `output`"), "{e}");
        let e = parse("workloads:\n  - dir: a\n    cargo: b\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("workloads[0]") && e.contains("has `dir` and `cargo`"),
            "{e}"
        );
        let e = parse("workloads:\n  - image: a:1\n    tarball: t\n    containerfile: c\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not both"), "{e}");
        let e = parse("workloads:\n  - dir: a\n    tarball: t\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("belong to an `image` source"), "{e}");
        let e = parse("workloads:\n  - dirr: a\n").unwrap_err().to_string();
        assert!(e.contains("unknown field `dirr`") && e.contains("line 2"), "{e}");
    }

    #[test]
    fn this_repository_layout_builds_its_c_workloads_and_links_can_utils() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("fixtures/workloads")).unwrap();
        std::fs::write(dir.path().join("fixtures/workloads/Cargo.toml"), "").unwrap();
        let cargo = SourceSpec::Cargo {
            package: "agl-workloads".into(),
        };
        assert_eq!(default_workloads(dir.path()), vec![cargo.clone()]);
        std::fs::create_dir_all(dir.path().join(C_WORKLOADS_DIR)).unwrap();
        std::fs::write(dir.path().join(C_WORKLOADS_DIR).join("Makefile"), "").unwrap();
        std::fs::create_dir_all(dir.path().join(CAN_UTILS_DIR)).unwrap();
        let sources = default_workloads(dir.path());
        assert_eq!(
            sources[..2],
            [cargo, SourceSpec::Dir(dir.path().join(CAN_UTILS_DIR))]
        );
        let SourceSpec::Build { command, output } = &sources[2] else {
            panic!("{sources:?}");
        };
        assert!(
            output.ends_with("c-workloads") && output.is_absolute(),
            "{output:?}"
        );
        assert!(
            command.starts_with("make -s --no-print-directory -C fixtures/c OUT='")
                && command.ends_with("c-workloads'"),
            "{command}"
        );
        assert_eq!(shell_quote("a b'c"), r"'a b'\''c'");
    }

    #[test]
    fn load_without_a_file_uses_defaults_and_reads_one_when_present() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Project::load(dir.path()).unwrap(), Project::defaults(dir.path()));
        assert!(Project::defaults(dir.path()).workloads.is_empty());
        std::fs::create_dir(dir.path().join("bin")).unwrap();
        assert_eq!(
            Project::defaults(dir.path()).workloads,
            vec![SourceSpec::Dir(dir.path().join("bin"))]
        );
        std::fs::write(dir.path().join(PROJECT_FILE), "reports: r\n").unwrap();
        let p = Project::load(dir.path()).unwrap();
        assert_eq!(p.reports, dir.path().join("r"));
        assert_eq!(p.file, Some(dir.path().join(PROJECT_FILE)));
        assert!(is_project(dir.path()));
    }
}
