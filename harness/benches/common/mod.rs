//! What the harness's benchmarks share: a throwaway project with this repository's fixtures and one feature
//! file, and the workload binaries built once.

use std::path::{Path, PathBuf};

/// A project in a temp dir with the repository's manifests and DBC and `scenarios/<feature>` holding
/// `text`; and the directory of the built workload binaries (exits with the build error when they cannot be
/// built).
pub fn project(feature: &str, text: &str) -> (tempfile::TempDir, PathBuf) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let project = tempfile::tempdir().expect("tempdir");
    for sub in ["fixtures/manifests", "fixtures/dbc", "scenarios"] {
        std::fs::create_dir_all(project.path().join(sub)).expect("mkdir");
    }
    for sub in ["fixtures/manifests", "fixtures/dbc"] {
        for e in std::fs::read_dir(repo.join(sub)).expect("fixtures").flatten() {
            std::fs::copy(e.path(), project.path().join(sub).join(e.file_name())).expect("copy");
        }
    }
    std::fs::write(project.path().join("scenarios").join(feature), text).expect("feature");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    match runtime.block_on(agl_parity::workload::WorkloadCatalog::new(&repo).ensure_built()) {
        Ok(bins) => (project, bins),
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    }
}

/// The `parity.json` of the one run written under `reports` (`None`: the run wrote no report).
pub fn report_json(reports: &Path) -> Option<PathBuf> {
    std::fs::read_dir(reports)
        .ok()
        .and_then(|mut d| d.next())
        .and_then(|e| e.ok())
        .map(|e| e.path().join("parity.json"))
}
