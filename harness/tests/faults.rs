//! Faults, bus timing, trace replay and recorded references through the real harness: the hub's faults
//! seeded and reproducible (`--seed`), recorded in the trace and the report; a replayed trace; bad traces
//! and bad fault steps named by file and line while the other scenarios run; and a reference saved from a
//! board run (simulated lab: sshd in a network namespace) used as a column of a native run.

mod common;

use std::collections::BTreeSet;
use std::process::Command;

use agl_parity::parity::Verdict;
use agl_parity::record::Outcome;
use common::board::sim_lab;
use common::{record, TestProject};

/// 100 frames with id 0x123 and a counter payload, 2 ms apart.
fn counter_trace() -> String {
    (0..100u32)
        .map(|i| {
            format!(
                "({}.{:06}) can0 123#{:02X}\n",
                1_764_590_400 + i / 500,
                (i % 500) * 2000,
                i
            )
        })
        .collect()
}

const SEEDED: &str = r#"Feature: seeded faults
  Scenario: a third of the counter frames are lost
    Given 30% of frames with id 0x123 are lost
    When the trace "traces/counter.log" is replayed
    Then the faults affected at least 1 frame
"#;

/// The counter payloads that reached the recorder in the run's trace of the scenario, and the trace text.
fn survivors(out: &agl_parity::runner::RunOutcome) -> (BTreeSet<String>, String) {
    let r = record(out, "a third of the counter frames are lost");
    assert_eq!(r.outcome, Outcome::Passed, "{:?}", r.message);
    let bus = &r.buses[0];
    let trace = out.report_dir.join(bus.trace_file.as_ref().expect("trace"));
    let frames = std::fs::read_to_string(&trace).expect("trace");
    let notes = std::fs::read_to_string(agl_parity::bus::notes_path(&trace)).expect("the trace's notes");
    let text = format!("{frames}{notes}");
    let seen = frames
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .filter_map(|f| f.strip_prefix("123#"))
        .map(str::to_string)
        .collect();
    (seen, text)
}

#[test]
fn a_seeded_fault_acts_the_same_in_every_run_with_that_seed_and_is_recorded() {
    let p = TestProject::new();
    p.write("traces/counter.log", &counter_trace());
    p.write("scenarios/seeded.feature", SEEDED);
    let run = |seed: u64| {
        let mut o = p.options();
        o.seed = seed;
        p.run_with(o)
    };
    let (first, text) = survivors(&run(7));
    let (again, _) = survivors(&run(7));
    let (other, _) = survivors(&run(8));
    assert!(
        (50..=90).contains(&first.len()),
        "about 70 of 100 frames pass a 30% drop: {}",
        first.len()
    );
    assert_eq!(first, again, "the same seed drops the same frames");
    assert_ne!(first, other, "another seed drops other frames");
    assert!(
        text.lines()
            .any(|l| l.starts_with("# fault: drop 30%") && l.contains("0x123")),
        "the trace names the fault: {text}"
    );
    assert!(
        text.contains("# replay: traces/counter.log (100 frames)"),
        "{text}"
    );
    let out = run(7);
    assert_eq!(out.report.seed, Some(7));
    let r = record(&out, "a third of the counter frames are lost");
    let fault = &r.buses[0].faults[0];
    assert_eq!(fault.matched, 100, "{fault:?}");
    assert_eq!(fault.affected, 100 - first.len() as u64, "{fault:?}");
}

const BAD: &str = r#"Feature: bad stimulus
  Scenario: a trace with a bad line
    When the trace "traces/bad.log" is replayed

  Scenario: an unknown error class
    When an error frame "lightning" is injected

  Scenario: a fault on a message the DBC does not have
    Given 50% of "NoSuchMessage" frames are lost

  Scenario: still runs
    Given the "hvac" workload is running
    When "ClimateRequest" is sent with TargetTemp=21, FanLevel=3, AcOn=0
    Then within 300 ms "HvacActuators" has FanPwm=40
"#;

#[test]
fn bad_traces_and_fault_steps_are_named_and_the_other_scenarios_run() {
    let p = TestProject::new();
    p.write(
        "traces/bad.log",
        "(1.000000) can0 123#01\n(1.100000) can0 123#XY\n",
    );
    p.write("scenarios/bad.feature", BAD);
    let out = p.run();
    let msg = |name: &str| {
        let r = record(&out, name);
        assert_eq!(r.outcome, Outcome::Failed, "{name}");
        r.message.clone().unwrap_or_default()
    };
    let m = msg("a trace with a bad line");
    assert!(m.contains("bad.log:2"), "{m}");
    let m = msg("an unknown error class");
    assert!(m.contains("lightning") && m.contains("bus-off"), "{m}");
    let m = msg("a fault on a message the DBC does not have");
    assert!(m.contains("NoSuchMessage"), "{m}");
    assert_eq!(record(&out, "still runs").outcome, Outcome::Passed);
    assert!(out.report_dir.join("summary.html").is_file());
}

const REFERENCE: &str = r#"Feature: reference
  Scenario: fan level 3 drives the blower
    Given the "hvac" workload is running
    When "ClimateRequest" is sent with TargetTemp=21, FanLevel=3, AcOn=0
    Then within 300 ms "HvacActuators" has FanPwm=40
    And "HvacStatus" is sent every 100 ms ± 25%

  Scenario: a recorded warm-up
    Given the "hvac" workload is running
    When the trace "traces/warmup.log" is replayed
    Then within 300 ms "HvacActuators" has FanPwm=40, Compressor=1
"#;

#[test]
fn a_reference_saved_from_a_board_run_is_a_column_of_a_native_run() {
    let Some(lab) = sim_lab(&["ref-board"]) else {
        return;
    };
    let p = TestProject::new();
    p.write("scenarios/reference.feature", REFERENCE);
    let warmup = std::fs::read_to_string(common::repo().join("fixtures/traces/hvac-cabin-warmup.log"))
        .expect("fixture");
    p.write("traces/warmup.log", &warmup);
    let mut o = p.options();
    o.environments = vec!["board:ref-board".into()];
    o.lab = Some(lab.inventory().to_path_buf());
    let board = p.run_with(o);
    for r in &board.report.runs {
        assert_eq!(r.outcome, Outcome::Passed, "{}: {:?}", r.name, r.message);
    }
    let refs = p.path().join("fixtures/references");
    let saved = Command::new(env!("CARGO_BIN_EXE_agl-parity"))
        .current_dir(p.path())
        .args(["reference", "save"])
        .arg(&board.report_dir)
        .args(["--env", "board:ref-board", "--out"])
        .arg(&refs)
        .output()
        .expect("agl-parity runs");
    assert!(
        saved.status.success(),
        "{}",
        String::from_utf8_lossy(&saved.stderr)
    );
    let file = refs.join("board-ref-board.json");
    assert!(file.is_file(), "{}", String::from_utf8_lossy(&saved.stdout));

    let mut o = p.options();
    o.reference = Some(file.clone());
    let native = p.run_with(o);
    let column = "reference:board:ref-board";
    assert!(native.report.environments.iter().any(|e| e.name == column));
    for s in &native.report.scenarios {
        assert_eq!(s.outcomes.get(column), Some(&Outcome::Passed), "{}", s.name);
        assert_eq!(s.verdict, Verdict::Pass, "{}: {:?}", s.name, s.drift);
    }
    let r = native
        .report
        .runs
        .iter()
        .find(|r| r.env == column)
        .expect("reference records");
    let trace = r.buses[0].trace_file.as_ref().expect("trace path");
    assert!(
        native.report_dir.join(trace).is_file(),
        "the reference's trace is reachable: {trace}"
    );

    // The scenario driven by the reference's own stimulus (the same line, so the same scenario): the
    // frames the board run's replay sent, taken from the reference's trace.
    let driven = REFERENCE.replace(
        r#"When the trace "traces/warmup.log" is replayed"#,
        "When the reference's frames with ids 0x200, 0x210 are replayed",
    );
    p.write("scenarios/reference.feature", &driven);
    let mut o = p.options();
    o.reference = Some(file.clone());
    let replayed = p.run_with(o);
    let r = replayed
        .report
        .runs
        .iter()
        .find(|r| r.name == "a recorded warm-up" && r.env == "native")
        .expect("native record");
    assert_eq!(r.outcome, Outcome::Passed, "{:?}", r.message);
    let trace = replayed
        .report_dir
        .join(r.buses[0].trace_file.as_ref().expect("trace"));
    let notes = std::fs::read_to_string(agl_parity::bus::notes_path(&trace)).expect("the trace's notes");
    assert!(
        notes.contains("# replay: 11 frames of the reference board:ref-board"),
        "{notes}"
    );
    p.write("scenarios/reference.feature", REFERENCE);

    // A reference that recorded another fan answer: the native run drifts from it.
    let text = std::fs::read_to_string(&file).expect("reference");
    let tampered = text.replacen("\"#2800\"", "\"#2900\"", 1);
    assert_ne!(
        text, tampered,
        "the reference holds the HvacActuators answer #2800"
    );
    std::fs::write(&file, tampered).expect("write");
    let mut o = p.options();
    o.reference = Some(file);
    let drifted = p.run_with(o);
    let s = drifted
        .report
        .scenarios
        .iter()
        .find(|s| s.name == "fan level 3 drives the blower")
        .expect("scenario");
    assert_eq!(s.verdict, Verdict::ParityDrift, "{:?}", s.drift);
    assert!(
        s.drift
            .iter()
            .any(|d| d.kind == "frames" && d.detail.contains(column)),
        "{:?}",
        s.drift
    );
}
