//! `--repeat N` through the real CLI: repeats are recorded, the sample suite has no false drift or flaky
//! scenario under repetition, and a deliberately changed heartbeat period is flagged as a timing drift
//! across two reports merged with `agl-parity merge`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use agl_parity::parity::{RunReport, Verdict};
use common::TestProject;

/// Runs `agl-parity run` on the project with `args`; returns the run's report (from its parity.json).
fn cli_run(project: &Path, args: &[&str]) -> RunReport {
    let reports = project.join("reports");
    let out = Command::new(env!("CARGO_BIN_EXE_agl-parity"))
        .arg("--project")
        .arg(project)
        .args(["run", "--no-progress"])
        .args(args)
        .arg("--workloads")
        .arg(common::workload_bins())
        .arg("--report-dir")
        .arg(&reports)
        .env_remove("AGL_PARITY_REPEAT")
        .output()
        .expect("agl-parity runs");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    let dirs = agl_parity::merge::find_reports(&reports);
    assert_eq!(dirs.len(), 1, "one run directory under {}", reports.display());
    agl_parity::report::read_json(&dirs[0].join("parity.json")).expect("parity.json")
}

fn hvac_feature() -> String {
    std::fs::read_to_string(common::repo().join("scenarios/hvac.feature")).expect("hvac.feature")
}

#[test]
fn three_repeats_of_the_hvac_suite_are_recorded_without_false_drift_or_flakiness() {
    let p = TestProject::new();
    p.write("scenarios/hvac.feature", &hvac_feature());
    let report = cli_run(p.path(), &["--env", "native", "--repeat", "3"]);
    assert!(!report.scenarios.is_empty());
    for s in &report.scenarios {
        let repeats: Vec<u32> = {
            let mut r: Vec<u32> = report
                .runs
                .iter()
                .filter(|r| r.id == s.id)
                .map(|r| r.repeat)
                .collect();
            r.sort();
            r
        };
        assert_eq!(repeats, vec![0, 1, 2], "{} {}", s.id, s.name);
        assert_eq!(s.repeats, 3);
        assert_eq!(
            s.verdict,
            Verdict::Pass,
            "{} {}: {:?} {:?}",
            s.id,
            s.name,
            s.drift,
            s.flaky
        );
        assert!(s.flaky.is_empty());
    }
    let native = &report.environments[0];
    assert_eq!(native.passed, report.scenarios.len(), "scenarios counted once");
    assert_eq!(native.flaky, 0);
    // Repeats keep their own traces.
    let traces: std::collections::BTreeSet<&String> = report
        .runs
        .iter()
        .flat_map(|r| r.buses.iter().filter_map(|b| b.trace_file.as_ref()))
        .collect();
    assert_eq!(traces.len(), report.runs.len(), "one trace file per repeat");
    // The heartbeat's intervals of all three repeats make its distribution.
    let heartbeat = report
        .scenarios
        .iter()
        .find(|s| s.name == "Status heartbeat every 100 ms")
        .expect("heartbeat scenario");
    let row = heartbeat
        .timing
        .iter()
        .find(|t| t.metric == "period HvacStatus")
        .expect("period row");
    assert_eq!(row.stats["native"].n, 30, "{:?}", row.stats["native"]);
    assert_eq!(report.timing_test, "IQR overlap, tolerance 10%");
}

/// A project whose HVAC heartbeat is `heartbeat_ms`, judged with the sample suite's parity settings (a 10%
/// timing tolerance beyond the measured noise), running only the heartbeat scenario.
fn heartbeat_project(heartbeat_ms: u32) -> TestProject {
    let p = TestProject::new();
    let manifest = p.path().join("fixtures/manifests/hvac.yaml");
    let text = std::fs::read_to_string(&manifest).expect("hvac manifest");
    let changed = text.replace(
        "- name: HEARTBEAT_MS\n              value: \"100\"",
        &format!("- name: HEARTBEAT_MS\n              value: \"{heartbeat_ms}\""),
    );
    assert!(
        heartbeat_ms == 100 || changed != text,
        "the manifest sets HEARTBEAT_MS"
    );
    std::fs::write(&manifest, changed).expect("write manifest");
    let parity = std::fs::read_to_string(p.path().join("scenarios/parity.yaml")).expect("parity.yaml");
    assert!(parity.contains("timing_tolerance: 0.1"), "{parity}");
    p.write(
        "scenarios/heartbeat.feature",
        "Feature: HVAC heartbeat\n\n  Scenario: Status heartbeat\n    Given the \"hvac\" workload is running\n    Then \"HvacStatus\" is sent every 100 ms ± 25%\n",
    );
    p
}

#[test]
fn a_changed_heartbeat_period_is_a_timing_drift_in_merged_reports() {
    let base = heartbeat_project(100);
    let slow = heartbeat_project(120);
    let a = cli_run(base.path(), &["--env", "native", "--repeat", "3"]);
    let b = cli_run(slow.path(), &["--env", "native", "--repeat", "3"]);
    for r in [&a, &b] {
        assert_eq!(r.scenarios[0].verdict, Verdict::Pass, "{:?}", r.scenarios[0]);
        assert_eq!(r.runs.len(), 3);
    }
    let out = base.path().join("merged");
    let inputs: Vec<PathBuf> = vec![base.path().join("reports"), slow.path().join("reports")];
    let status = Command::new(env!("CARGO_BIN_EXE_agl-parity"))
        .arg("--project")
        .arg(base.path())
        .arg("merge")
        .args(&inputs)
        .arg("--out")
        .arg(&out)
        .output()
        .expect("merge runs");
    // A drift makes the merge exit non-zero; the report is written either way.
    let merged = agl_parity::report::read_json(&out.join("parity.json")).unwrap_or_else(|e| {
        panic!(
            "merged parity.json: {e}\n{}",
            String::from_utf8_lossy(&status.stderr)
        )
    });
    let s = &merged.scenarios[0];
    assert_eq!(s.outcomes.len(), 2, "{:?}", s.outcomes);
    assert!(s.outcomes.contains_key("native#2"), "{:?}", s.outcomes);
    assert_eq!(s.verdict, Verdict::ParityDrift, "{:?}", s.drift);
    let drift = s
        .drift
        .iter()
        .find(|d| d.kind == "timing")
        .unwrap_or_else(|| panic!("no timing drift: {:?}", s.drift));
    assert!(drift.detail.starts_with("period HvacStatus:"), "{}", drift.detail);
    assert!(
        drift.detail.contains("native median 10") && drift.detail.contains("native#2 median 1"),
        "{}",
        drift.detail
    );
    let row = s
        .timing
        .iter()
        .find(|t| t.metric == "period HvacStatus")
        .expect("period row");
    assert!(
        row.values["native"] < 105.0 && row.values["native#2"] > 115.0,
        "{row:?}"
    );
    assert_eq!(merged.timing_test, "IQR overlap, tolerance 10%");
}
