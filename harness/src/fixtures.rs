//! The project's fixtures as a run sees them: workload manifests by pod name, and the DBC signal database.
//!
//! Manifests are read from the project's manifest paths (`manifests:` of `agl-parity.yaml`, by default
//! `fixtures/manifests`): files as given, directories searched recursively for `*.yaml`/`*.yml`; DBC files
//! likewise from its `dbc:` paths (`*.dbc`). A file that cannot be read does not stop the run: its error is
//! kept and reported by every scenario that needs it, while scenarios that do not need it run normally.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use vcan::dbc::{Database, MessageDef};

use crate::manifest::{self, WorkloadSpec};

/// Manifests and signal databases of a project.
#[derive(Debug, Default)]
pub struct Fixtures {
    /// Where manifests were searched.
    pub manifest_paths: Vec<PathBuf>,
    /// Where DBC files were searched.
    pub dbc_paths: Vec<PathBuf>,
    /// Pods by `metadata.name`.
    pub workloads: BTreeMap<String, WorkloadSpec>,
    /// Manifest files that could not be read, with their errors.
    pub manifest_errors: Vec<String>,
    /// Workload names defined more than once (by pod name): every place, `file#document`. Such a name is
    /// not deployed (which definition is meant is not known); a scenario using it gets the places.
    pub duplicates: BTreeMap<String, Vec<String>>,
    /// Objects of the manifests that no environment deploys (Service, Namespace, ...).
    pub not_deployed: Vec<crate::manifest::OtherObject>,
    pub databases: Vec<Database>,
    /// DBC files that could not be read, with their errors.
    pub dbc_errors: Vec<String>,
}

impl Fixtures {
    /// Loads `root/manifests` and `root/dbc` (this repository's `fixtures/` layout).
    pub fn load(root: &Path) -> Fixtures {
        Fixtures::from_paths(&[root.join("manifests")], &[root.join("dbc")])
    }

    /// Loads the manifests and DBC files at these paths (files, or directories searched recursively).
    pub fn from_paths(manifests: &[PathBuf], dbc: &[PathBuf]) -> Fixtures {
        let mut fx = Fixtures {
            manifest_paths: manifests.to_vec(),
            dbc_paths: dbc.to_vec(),
            ..Fixtures::default()
        };
        // Read together, so that a workload can use a ConfigMap or Secret of another file.
        let files = files_with_extension(manifests, &["yaml", "yml"], &mut fx.manifest_errors);
        let set = manifest::load_set(&files);
        fx.manifest_errors
            .extend(set.errors.iter().map(|e| e.to_string()));
        fx.not_deployed = set.others;
        let place = |pod: &WorkloadSpec| format!("{} document {}", pod.source.display(), pod.document);
        for pod in set.workloads {
            if let Some(previous) = fx.workloads.get(&pod.name) {
                let places = fx
                    .duplicates
                    .entry(pod.name.clone())
                    .or_insert_with(|| vec![place(previous)]);
                places.push(place(&pod));
                continue;
            }
            fx.workloads.insert(pod.name.clone(), pod);
        }
        for (name, places) in &fx.duplicates {
            fx.workloads.remove(name);
            let e = FixtureError::Duplicate {
                name: name.clone(),
                places: places.clone(),
            };
            tracing::warn!("{e}");
            fx.manifest_errors.push(e.to_string());
        }
        for path in files_with_extension(dbc, &["dbc"], &mut fx.dbc_errors) {
            match Database::load(&path) {
                Ok(db) => fx.databases.push(db),
                Err(e) => fx.dbc_errors.push(e.to_string()),
            }
        }
        fx
    }

    /// The pod named `name`, or an error that names the manifests that could not be read.
    pub fn workload(&self, name: &str) -> Result<&WorkloadSpec, FixtureError> {
        if let Some(places) = self.duplicates.get(name) {
            return Err(FixtureError::Duplicate {
                name: name.to_string(),
                places: places.clone(),
            });
        }
        self.workloads.get(name).ok_or_else(|| FixtureError::NoWorkload {
            name: name.to_string(),
            searched: self.manifest_paths.clone(),
            known: self.workloads.keys().cloned().collect(),
            unreadable: self.manifest_errors.clone(),
        })
    }

    /// The report's view of the project's manifests (field tables, objects not deployed), file names
    /// relative to the project directory `root`.
    pub fn manifest_summary(&self, root: &Path) -> crate::manifest::ManifestSummary {
        crate::manifest::summarise(self.workloads.values(), &self.not_deployed, root)
    }

    /// The DBC message named `name`, searching every database.
    pub fn message(&self, name: &str) -> Result<&MessageDef, FixtureError> {
        for db in &self.databases {
            if let Ok(m) = db.message(name) {
                return Ok(m);
            }
        }
        Err(FixtureError::NoMessage {
            name: name.to_string(),
            searched: self.dbc_paths.clone(),
            unreadable: self.dbc_errors.clone(),
        })
    }

    /// The DBC message with the frame's id, if any.
    pub fn message_for(&self, frame: &vcan::Frame) -> Option<&MessageDef> {
        self.databases.iter().find_map(|db| db.message_for(frame))
    }
}

/// The files at `paths`: a file as given, a directory searched recursively for files with one of
/// `extensions` (sorted per directory, hidden entries skipped). A directory that cannot be read is an error
/// in `errors`; a path that does not exist is skipped (a project may have no DBC at all), and a workload or
/// message looked up later names every searched path.
fn files_with_extension(paths: &[PathBuf], extensions: &[&str], errors: &mut Vec<String>) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_file() {
            files.push(path.clone());
        } else if path.is_dir() {
            walk(path, extensions, &mut files, errors);
        }
    }
    files
}

fn walk(dir: &Path, extensions: &[&str], files: &mut Vec<PathBuf>, errors: &mut Vec<String>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            errors.push(format!("{}: {e}", dir.display()));
            return;
        }
    };
    let mut paths: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    paths.sort();
    for p in paths {
        if p.is_dir() {
            walk(&p, extensions, files, errors);
        } else if p
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| extensions.contains(&e))
        {
            files.push(p);
        }
    }
}

fn display_paths(paths: &[PathBuf]) -> String {
    if paths.is_empty() {
        return "(no paths)".into();
    }
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A pod or DBC message a scenario names that the project does not define; the files that could not be read
/// are listed, since the name may be in one of them.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FixtureError {
    #[error("no manifest in {} defines workload `{name}` (known: {}){}", display_paths(.searched), .known.join(", "), unreadable_lines("manifest", .unreadable))]
    NoWorkload {
        name: String,
        searched: Vec<PathBuf>,
        known: Vec<String>,
        unreadable: Vec<String>,
    },
    #[error("workload `{name}` is defined {} times: in {} (workload names must be unique across a project's manifests)", .places.len(), .places.join(" and in "))]
    Duplicate { name: String, places: Vec<String> },
    #[error("no DBC message named `{name}` in {}{}", display_paths(.searched), unreadable_lines("DBC", .unreadable))]
    NoMessage {
        name: String,
        searched: Vec<PathBuf>,
        unreadable: Vec<String>,
    },
}

fn unreadable_lines(what: &str, errors: &[String]) -> String {
    errors
        .iter()
        .map(|e| format!("\n  unreadable {what}: {e}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreadable_manifest_is_named_when_a_workload_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("manifests")).unwrap();
        std::fs::write(
            dir.path().join("manifests/broken.yaml"),
            "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec: {bogus: 1}\n",
        )
        .unwrap();
        let fx = Fixtures::load(dir.path());
        let err = fx.workload("x").unwrap_err().to_string();
        assert!(
            err.contains("broken.yaml: document 1: spec.bogus: unknown field `bogus`"),
            "{err}"
        );
    }

    #[test]
    fn paths_are_files_or_directories_searched_recursively() {
        let repo = crate::cargo::source_workspace().join("fixtures");
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("k8s/comfort/hvac");
        std::fs::create_dir_all(&nested).unwrap();
        std::fs::copy(repo.join("manifests/hvac.yaml"), nested.join("hvac.yml")).unwrap();
        std::fs::write(dir.path().join("k8s/README.md"), "not a manifest").unwrap();
        let single = dir.path().join("body.yaml");
        std::fs::copy(repo.join("manifests/body-control.yaml"), &single).unwrap();
        let fx = Fixtures::from_paths(
            &[dir.path().join("k8s"), single, dir.path().join("absent")],
            &[repo.join("dbc/agl-vehicle.dbc")],
        );
        assert!(fx.manifest_errors.is_empty(), "{:?}", fx.manifest_errors);
        assert!(fx.workload("hvac").is_ok() && fx.workload("body-control").is_ok());
        assert!(fx.message("HvacStatus").is_ok());
        let err = fx.workload("wiper").unwrap_err().to_string();
        assert!(err.contains("k8s") && err.contains("body.yaml"), "{err}");
    }
}
