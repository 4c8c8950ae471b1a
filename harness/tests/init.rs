//! A real project outside this repository, driven through the built `agl-parity` binary from its own
//! directory (no `--project`): `agl-parity init` writes a starter project that passes on `native`; a
//! project whose workload exists only as a container image is *unsupported here* on `native`, not an
//! infra-error; `init` refuses to overwrite.

use std::path::Path;
use std::process::{Command, Output};

fn agl_parity(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_agl-parity"))
        .args(args)
        .current_dir(dir)
        .env_remove("AGL_PARITY_PROJECT")
        .env_remove("AGL_PARITY_WORKLOADS_DIR")
        .env_remove("AGL_PARITY_LAB")
        .output()
        .expect("agl-parity runs")
}

fn text(out: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn tempdir() -> tempfile::TempDir {
    let mut dir = tempfile::tempdir().expect("tempdir");
    if std::env::var_os("AGL_PARITY_KEEP_TEST_DIRS").is_some() {
        dir.disable_cleanup(true);
    }
    dir
}

#[test]
fn init_writes_a_project_that_passes_on_native_from_its_own_directory() {
    let dir = tempdir();
    let project = dir.path().join("climate");
    let out = agl_parity(dir.path(), &["init", "climate"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(project.join("agl-parity.yaml").is_file());

    let list = agl_parity(&project, &["list"]);
    assert!(list.status.success(), "{}", text(&list));
    assert!(
        String::from_utf8_lossy(&list.stdout).contains("scenarios/hvac.feature:"),
        "{}",
        text(&list)
    );

    let run = agl_parity(&project, &["run", "--no-progress"]);
    let all = text(&run);
    assert!(run.status.success(), "{all}");
    assert!(all.contains("3 passed, 0 failed"), "{all}");
    // The report went into the new project, not into the harness's workspace.
    let reports: Vec<_> = std::fs::read_dir(project.join("reports"))
        .expect("reports/ in the project")
        .flatten()
        .collect();
    assert_eq!(reports.len(), 1, "{all}");
    assert!(reports[0].path().join("summary.html").is_file());

    let again = agl_parity(dir.path(), &["init", "climate"]);
    assert_eq!(again.status.code(), Some(2), "{}", text(&again));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
}

#[test]
fn an_image_only_workload_is_unsupported_on_native_not_an_infra_error() {
    let dir = tempdir();
    let project = dir.path().join("imaged");
    let out = agl_parity(dir.path(), &["init", "imaged"]);
    assert!(out.status.success(), "{}", text(&out));
    // The starter's layout differs from the defaults in its manifest and DBC paths.
    std::fs::write(
        project.join("agl-parity.yaml"),
        "manifests: [manifests]\ndbc: [dbc]\nworkloads:\n  - image: agl/hvac-controller:1.0\n    containerfile: images/Containerfile\n",
    )
    .expect("project file");

    let run = agl_parity(&project, &["run", "--no-progress", "--env", "native"]);
    let all = text(&run);
    assert!(
        run.status.success(),
        "unsupported is neither passed nor failed: {all}"
    );
    let reports = std::fs::read_dir(project.join("reports"))
        .expect("reports/")
        .flatten()
        .next()
        .expect("a run directory");
    let records = std::fs::read_to_string(reports.path().join("records.jsonl")).expect("records");
    assert_eq!(records.lines().count(), 3, "{records}");
    for line in records.lines() {
        assert!(line.contains("\"outcome\":\"unsupported\""), "{line}");
        assert!(line.contains("unsupported here: "), "{line}");
        assert!(line.contains("container images only"), "{line}");
    }
}

#[test]
fn a_bad_project_file_names_file_field_and_line() {
    let dir = tempdir();
    std::fs::write(
        dir.path().join("agl-parity.yaml"),
        "scenarios: [s]\nworkloads:\n  - build: make\n",
    )
    .expect("project file");
    let out = agl_parity(dir.path(), &["list"]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(
        all.contains("agl-parity.yaml: workloads[0]")
            && all.contains("needs `output`")
            && all.contains("line 3"),
        "{all}"
    );
}
