//! Nothing leaks: a run killed with SIGKILL or interrupted with SIGINT leaves no processes behind, and its
//! leftovers (state directory, sockets) are found and removed by `doctor --clean` and by the next run.
//! These tests drive the real `agl-parity` binary against real workload processes.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agl_parity::cleanup;
use common::TestProject;

const LONG: &str = r#"
Feature: long
  Scenario: quick one
    Given the "body-control" workload is running
    Then within 1 s "DoorLockState" is seen

  Scenario: keeps the workload busy
    Given the "hvac" workload is running
    Then no "DiagInfo" is seen for 60 s
"#;

fn harness(project: &Path, state: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_agl-parity"))
        .args(["--project"])
        .arg(project)
        .args(["run", "--no-progress", "--concurrency", "1", "--workloads"])
        .arg(common::workload_bins())
        .env(cleanup::STATE_DIR_ENV, state)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("harness starts")
}

/// Polls `cond` every 20 ms for up to `limit` (waiting for another process to reach a state).
fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

fn run_ids(state: &Path) -> Vec<String> {
    std::fs::read_dir(state.join("runs"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Starts a run and waits until its long scenario has the hvac workload running.
fn start_long_run(p: &TestProject, state: &Path) -> (Child, String) {
    p.write("scenarios/long.feature", LONG);
    let child = harness(p.path(), state);
    let mut run_id = String::new();
    let running = wait_until(Duration::from_secs(60), || {
        run_ids(state).into_iter().any(|id| {
            let busy = cleanup::marked_processes(&id).iter().any(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains("hvac-controller"))
            });
            if busy {
                run_id = id;
            }
            busy
        })
    });
    assert!(
        running,
        "the run registered itself and started the long scenario's workload"
    );
    (child, run_id)
}

#[test]
fn sigkilled_run_leaves_no_process_and_its_leftovers_are_swept() {
    let p = TestProject::new();
    let state = p.path().join("state");
    let (mut child, run_id) = start_long_run(&p, &state);
    let workload_pid = cleanup::marked_processes(&run_id)[0];

    child.kill().expect("SIGKILL the harness");
    let _ = child.wait();
    assert!(
        wait_until(Duration::from_secs(5), || cleanup::marked_processes(&run_id)
            .is_empty()),
        "workload pid {workload_pid} died with the harness"
    );
    assert!(
        state.join("runs").join(&run_id).exists(),
        "the killed run left its state directory"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_agl-parity"))
        .args(["doctor", "--clean"])
        .env(cleanup::STATE_DIR_ENV, &state)
        .output()
        .expect("doctor runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("removed leftovers of run {run_id}")),
        "{text}"
    );
    assert!(!state.join("runs").join(&run_id).exists());
}

#[test]
fn next_run_sweeps_a_killed_run() {
    let p = TestProject::new();
    let state = p.path().join("state");
    // A run that died without cleaning up: owner gone, a marked process and a socket left behind.
    let dead = state.join("runs/20260101-000000-dead");
    std::fs::create_dir_all(dead.join("native-s0")).unwrap();
    std::fs::write(dead.join("owner"), "999999999 1\n").unwrap();
    std::fs::write(dead.join("native-s0/vehicle.sock"), b"").unwrap();
    let mut orphan = Command::new("sleep")
        .arg("120")
        .env(cleanup::RUN_MARKER_ENV, "20260101-000000-dead")
        .spawn()
        .expect("orphan starts");

    p.write(
        "scenarios/one.feature",
        "Feature: one\n  Scenario: s\n    Given the \"body-control\" workload is running\n",
    );
    let status = Command::new(env!("CARGO_BIN_EXE_agl-parity"))
        .arg("--project")
        .arg(p.path())
        .args(["run", "--no-progress", "--workloads"])
        .arg(common::workload_bins())
        .env(cleanup::STATE_DIR_ENV, &state)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run");
    assert!(status.success());
    assert!(
        !orphan.wait().expect("orphan reaped").success(),
        "the orphan was killed"
    );
    assert!(!dead.exists(), "the dead run's directory was removed");
    assert!(
        run_ids(&state).is_empty(),
        "the new run removed its own state too"
    );
}

#[test]
fn interrupted_run_stops_its_workloads_and_keeps_what_finished() {
    let p = TestProject::new();
    let state = p.path().join("state");
    let (child, run_id) = start_long_run(&p, &state);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("SIGINT");
    let out = child.wait_with_output().expect("harness exits");
    assert_eq!(out.status.code(), Some(130), "interrupted runs exit with 130");
    assert!(
        cleanup::marked_processes(&run_id).is_empty(),
        "no workload survives"
    );
    assert!(!state.join("runs").join(&run_id).exists(), "state removed");
    let report = p.path().join("reports").join(&run_id);
    let json = std::fs::read_to_string(report.join("parity.json")).expect("report written");
    assert!(
        json.contains("quick one"),
        "the finished scenario is in the report"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().last(), Some("1 passed, 1 failed"), "{stdout}");
    assert!(
        json.contains("run interrupted"),
        "the interrupted scenario says so"
    );
}
