//! Bad input never stops a run: each case gives a clear error naming the place, marks only the affected
//! scenarios (fail or infra-error), the other scenarios still run, and the report is still written.

mod common;

use agl_parity::parity::Verdict;
use agl_parity::record::Outcome;
use common::{assert_report_written, record, TestProject};

const GOOD: &str = r#"
Feature: good
  Scenario: a healthy scenario still passes
    Given the "body-control" workload is running
    When "LockRequest" is sent with Command=1
    Then within 300 ms "DoorLockState" has Locked=1
"#;

#[test]
fn malformed_feature_file_is_reported_with_file_and_line() {
    let p = TestProject::new();
    p.write("scenarios/good.feature", GOOD);
    p.write(
        "scenarios/broken.feature",
        "Feature: broken\n  Scenario: ok\n    Given x\n  Scenariooo: typo\n    Given y\n",
    );
    let out = p.run();
    assert_eq!(out.report.feature_errors.len(), 1);
    let e = &out.report.feature_errors[0];
    assert!(e.path.ends_with("broken.feature") && e.line == 4, "{e:?}");
    assert!(e.message.contains("malformed feature file"), "{}", e.message);
    assert_eq!(
        record(&out, "a healthy scenario still passes").outcome,
        Outcome::Passed
    );
    assert_eq!(out.report.totals(), (1, 1), "the broken file counts as failed");
    assert_report_written(&out);
    let md = std::fs::read_to_string(out.report_dir.join("summary.md")).unwrap();
    assert!(md.contains("broken.feature:4"), "summary names the file");
}

#[test]
fn unknown_step_fails_its_scenario_naming_the_step() {
    let p = TestProject::new();
    p.write("scenarios/good.feature", GOOD);
    p.write("scenarios/unknown.feature", "Feature: u\n  Scenario: uses an unknown step\n    Given the \"hvac\" workload is running\n    When the wipers are switched on\n    Then the bus is silent for 10 ms\n");
    let out = p.run();
    let r = record(&out, "uses an unknown step");
    assert_eq!(r.outcome, Outcome::Failed);
    let msg = r.message.as_deref().unwrap();
    assert!(
        msg.contains("unknown.feature:4: undefined step: `When the wipers are switched on`"),
        "{msg}"
    );
    assert_eq!(
        record(&out, "a healthy scenario still passes").outcome,
        Outcome::Passed
    );
    assert_report_written(&out);
}

#[test]
fn manifest_with_unknown_field_is_an_infra_error_naming_field_and_file() {
    let p = TestProject::new();
    p.write("scenarios/good.feature", GOOD);
    let broken = std::fs::read_to_string(p.path().join("fixtures/manifests/hvac.yaml"))
        .unwrap()
        .replace(
            "          imagePullPolicy: IfNotPresent\n",
            "          imagePullPolicy: IfNotPresent\n          livenessProbes: {}\n",
        );
    p.write("fixtures/manifests/hvac.yaml", &broken);
    p.write(
        "scenarios/hvac.feature",
        "Feature: h\n  Scenario: needs the broken manifest\n    Given the \"hvac\" workload is running\n",
    );
    let out = p.run();
    let r = record(&out, "needs the broken manifest");
    assert_eq!(r.outcome, Outcome::InfraError);
    let msg = r.message.as_deref().unwrap();
    assert!(
        msg.contains("hvac.yaml: document 1: spec.template.spec.containers[0]"),
        "{msg}"
    );
    assert!(
        msg.contains("unknown field `livenessProbes`: not in the Kubernetes schema"),
        "{msg}"
    );
    assert_eq!(
        record(&out, "a healthy scenario still passes").outcome,
        Outcome::Passed
    );
    assert_report_written(&out);
}

#[test]
fn dbc_syntax_error_is_an_infra_error_naming_file_and_line_but_raw_frames_still_work() {
    let p = TestProject::new();
    let dbc = std::fs::read_to_string(p.path().join("fixtures/dbc/agl-vehicle.dbc")).unwrap();
    p.write(
        "fixtures/dbc/agl-vehicle.dbc",
        &dbc.replacen("BO_ 288 LockRequest: 1 KEYFOB", "BO_ 288 LockRequest 1 KEYFOB", 1),
    );
    p.write(
        "scenarios/s.feature",
        "Feature: s\n  Scenario: speaks in signals\n    Given the \"body-control\" workload is running\n    When \"LockRequest\" is sent with Command=1\n\n  Scenario: speaks in raw frames\n    Given the \"body-control\" workload is running\n    When the frame 120#01 is sent\n    Then within 300 ms the frame 321#04 is seen\n",
    );
    let out = p.run();
    let r = record(&out, "speaks in signals");
    assert_eq!(r.outcome, Outcome::InfraError);
    let msg = r.message.as_deref().unwrap();
    assert!(msg.contains("agl-vehicle.dbc:"), "{msg}");
    assert!(msg.contains("DBC syntax error"), "{msg}");
    assert_eq!(record(&out, "speaks in raw frames").outcome, Outcome::Passed);
    assert_report_written(&out);
}

#[test]
fn out_of_range_frames_fail_with_the_reason() {
    let p = TestProject::new();
    p.write(
        "scenarios/f.feature",
        "Feature: f\n  Scenario: id too large\n    When the frame 800#00 is sent\n\n  Scenario: payload too long\n    When the frame 123#112233445566778899 is sent\n\n  Scenario: signal out of range\n    When \"ClimateRequest\" is sent with TargetTemp=40\n",
    );
    let out = p.run();
    let msg = |n: &str| record(&out, n).message.clone().unwrap_or_default();
    assert_eq!(record(&out, "id too large").outcome, Outcome::Failed);
    assert!(
        msg("id too large").contains("f.feature:3"),
        "{}",
        msg("id too large")
    );
    assert!(
        msg("id too large").to_lowercase().contains("out of range"),
        "{}",
        msg("id too large")
    );
    assert!(
        msg("payload too long").contains("too long") || msg("payload too long").contains("8"),
        "{}",
        msg("payload too long")
    );
    assert!(
        msg("signal out of range").contains("out of range"),
        "{}",
        msg("signal out of range")
    );
    assert_report_written(&out);
}

#[test]
fn workload_that_exits_at_start_is_an_infra_error_with_its_last_log_lines() {
    let p = TestProject::new();
    let bad = std::fs::read_to_string(p.path().join("fixtures/manifests/body-control.yaml"))
        .unwrap()
        .replace("  name: body-control\nspec:", "  name: broken-bcm\nspec:")
        .replace("value: \"200\"", "value: \"often\"");
    p.write("fixtures/manifests/broken-bcm.yaml", &bad);
    p.write("scenarios/good.feature", GOOD);
    p.write("scenarios/x.feature", "Feature: x\n  Scenario: deploys a crashing workload\n    Given the \"broken-bcm\" workload is running\n");
    let out = p.run();
    let r = record(&out, "deploys a crashing workload");
    assert_eq!(r.outcome, Outcome::InfraError);
    let msg = r.message.as_deref().unwrap();
    assert!(
        msg.contains("exited (exit code 2) before becoming ready"),
        "{msg}"
    );
    assert!(
        msg.contains("HEARTBEAT_MS"),
        "the log tail names the bad setting: {msg}"
    );
    assert_eq!(
        record(&out, "a healthy scenario still passes").outcome,
        Outcome::Passed
    );
}

#[test]
fn workload_that_never_becomes_ready_is_an_infra_error_naming_the_probe() {
    let p = TestProject::new();
    let never = std::fs::read_to_string(p.path().join("fixtures/manifests/body-control.yaml"))
        .unwrap()
        .replace("  name: body-control\nspec:", "  name: silent-bcm\nspec:")
        .replace("ready-frame: \"0x320\"", "ready-frame: \"0x7FF\"");
    p.write("fixtures/manifests/silent-bcm.yaml", &never);
    p.write("scenarios/x.feature", "Feature: x\n  Scenario: waits for a heartbeat that never comes\n    Given the \"silent-bcm\" workload is running\n");
    let mut options = p.options();
    options.ready_timeout = std::time::Duration::from_millis(800);
    let out = p.run_with(options);
    let r = record(&out, "waits for a heartbeat that never comes");
    assert_eq!(r.outcome, Outcome::InfraError);
    let msg = r.message.as_deref().unwrap();
    assert!(
        msg.contains("did not become ready within 800 ms (CAN heartbeat 0x7FF not seen)"),
        "{msg}"
    );
    assert_eq!(out.report.scenarios[0].verdict, Verdict::InfraError);
    // Its log was still captured into the report.
    let log = r.workloads[0].log_file.as_ref().expect("log file recorded");
    assert!(out.report_dir.join(log).is_file());
}
