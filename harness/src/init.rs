//! `agl-parity init DIR`: a starter project that passes on the native environment as it is.
//!
//! It writes [`crate::project::PROJECT_FILE`], one manifest (a cdk8s-style Deployment of the climate ECU),
//! one DBC, one feature file and the parity settings, from the templates in `harness/templates/init/`. Its
//! workload source is `builtin: [hvac-controller]`: the harness's own sample controller built from the
//! harness's source, so the project runs before the team has an executable of its own (the project file
//! shows where theirs go). Existing files are never overwritten: if any target exists, nothing is written.

use std::path::{Path, PathBuf};

/// The files of a starter project: path relative to the project, content.
pub const FILES: &[(&str, &str)] = &[
    (
        crate::project::PROJECT_FILE,
        include_str!("../templates/init/agl-parity.yaml"),
    ),
    ("manifests/hvac.yaml", include_str!("../templates/init/hvac.yaml")),
    ("dbc/vehicle.dbc", include_str!("../templates/init/vehicle.dbc")),
    (
        "scenarios/hvac.feature",
        include_str!("../templates/init/hvac.feature"),
    ),
    (
        "scenarios/parity.yaml",
        include_str!("../templates/init/parity.yaml"),
    ),
];

/// Why a starter project was not written.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("{} already exists; `agl-parity init` never overwrites files (nothing was written)", .0.display())]
    Exists(PathBuf),
    #[error("{}: {reason}", .path.display())]
    Write { path: PathBuf, reason: String },
}

/// Writes a starter project into `dir` (created if missing); returns the files written.
pub fn init(dir: &Path) -> Result<Vec<PathBuf>, InitError> {
    let targets: Vec<(PathBuf, &str)> = FILES.iter().map(|(rel, text)| (dir.join(rel), *text)).collect();
    if let Some((existing, _)) = targets.iter().find(|(p, _)| p.exists()) {
        return Err(InitError::Exists(existing.clone()));
    }
    let mut written = Vec::new();
    for (path, text) in targets {
        let write_err = |e: std::io::Error| InitError::Write {
            path: path.clone(),
            reason: e.to_string(),
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(write_err)?;
        }
        // create_new: a file that appeared since the check is still not overwritten.
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(write_err)?;
        file.write_all(text.as_bytes()).map_err(write_err)?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::project::{Project, SourceSpec};

    #[test]
    fn starter_project_loads_and_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("starter");
        let written = init(&root).unwrap();
        assert_eq!(written.len(), FILES.len());
        let project = Project::load(&root).unwrap();
        assert_eq!(
            project.workloads,
            vec![SourceSpec::Builtin {
                names: vec!["hvac-controller".into()]
            }]
        );
        let fixtures = crate::fixtures::Fixtures::from_paths(&project.manifests, &project.dbc);
        assert!(
            fixtures.manifest_errors.is_empty(),
            "{:?}",
            fixtures.manifest_errors
        );
        assert!(fixtures.dbc_errors.is_empty(), "{:?}", fixtures.dbc_errors);
        let hvac = fixtures.workload("hvac").unwrap();
        assert_eq!(hvac.containers[0].image.binary_name(), "hvac-controller");
        assert!(fixtures.message("HvacStatus").is_ok());
        crate::config::ParityConfig::load(&project.parity).unwrap();
        let features = crate::features::FeatureSet::load(&project.scenarios);
        assert!(features.errors.is_empty() && features.scenarios().len() == 3);

        std::fs::write(root.join("manifests/hvac.yaml"), "# mine\n").unwrap();
        std::fs::remove_file(root.join("dbc/vehicle.dbc")).unwrap();
        let e = init(&root).unwrap_err().to_string();
        assert!(
            e.contains("already exists") && e.contains("nothing was written"),
            "{e}"
        );
        assert_eq!(
            std::fs::read_to_string(root.join("manifests/hvac.yaml")).unwrap(),
            "# mine\n"
        );
        assert!(!root.join("dbc/vehicle.dbc").exists());
    }
}
