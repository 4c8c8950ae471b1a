//! The project's fixtures as a run sees them: workload manifests by pod name, and the DBC signal database.
//!
//! Manifests are read from `fixtures/manifests/*.yaml`, DBC files from `fixtures/dbc/*.dbc`. A file that
//! cannot be read does not stop the run: its error is kept and reported by every scenario that needs it,
//! while scenarios that do not need it run normally.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use vcan::dbc::{Database, MessageDef};

use crate::manifest::{self, WorkloadSpec};

/// Manifests and signal databases of a project.
#[derive(Debug, Default)]
pub struct Fixtures {
    pub root: PathBuf,
    /// Pods by `metadata.name`.
    pub workloads: BTreeMap<String, WorkloadSpec>,
    /// Manifest files that could not be read, with their errors.
    pub manifest_errors: Vec<String>,
    pub databases: Vec<Database>,
    /// DBC files that could not be read, with their errors.
    pub dbc_errors: Vec<String>,
}

impl Fixtures {
    /// Loads everything under `root` (the project's `fixtures/`).
    pub fn load(root: &Path) -> Fixtures {
        let mut fx = Fixtures {
            root: root.to_path_buf(),
            ..Fixtures::default()
        };
        for path in files_with_extension(&root.join("manifests"), &["yaml", "yml"]) {
            match manifest::load(&path) {
                Ok(pods) => {
                    for pod in pods {
                        if let Some(previous) = fx.workloads.get(&pod.name) {
                            fx.manifest_errors.push(format!(
                                "{}: workload `{}` is also defined in {}",
                                path.display(),
                                pod.name,
                                previous.source.display()
                            ));
                            continue;
                        }
                        fx.workloads.insert(pod.name.clone(), pod);
                    }
                }
                Err(e) => fx.manifest_errors.push(e.to_string()),
            }
        }
        for path in files_with_extension(&root.join("dbc"), &["dbc"]) {
            match Database::load(&path) {
                Ok(db) => fx.databases.push(db),
                Err(e) => fx.dbc_errors.push(e.to_string()),
            }
        }
        fx
    }

    /// The pod named `name`, or an error that names the manifests that could not be read.
    pub fn workload(&self, name: &str) -> Result<&WorkloadSpec, FixtureError> {
        self.workloads.get(name).ok_or_else(|| FixtureError::NoWorkload {
            name: name.to_string(),
            dir: self.root.join("manifests"),
            known: self.workloads.keys().cloned().collect(),
            unreadable: self.manifest_errors.clone(),
        })
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
            dir: self.root.join("dbc"),
            unreadable: self.dbc_errors.clone(),
        })
    }

    /// The DBC message with the frame's id, if any.
    pub fn message_for(&self, frame: &vcan::Frame) -> Option<&MessageDef> {
        self.databases.iter().find_map(|db| db.message_for(frame))
    }
}

fn files_with_extension(dir: &Path, extensions: &[&str]) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| extensions.contains(&e))
        })
        .collect();
    files.sort();
    files
}

/// A pod or DBC message a scenario names that the project does not define; the files that could not be read
/// are listed, since the name may be in one of them.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FixtureError {
    #[error("no manifest in {} defines workload `{name}` (known: {}){}", .dir.display(), .known.join(", "), unreadable_lines("manifest", .unreadable))]
    NoWorkload {
        name: String,
        dir: PathBuf,
        known: Vec<String>,
        unreadable: Vec<String>,
    },
    #[error("no DBC message named `{name}` in {}{}", .dir.display(), unreadable_lines("DBC", .unreadable))]
    NoMessage {
        name: String,
        dir: PathBuf,
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
}
