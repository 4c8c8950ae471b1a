//! The board environment against real OpenSSH servers: simulated boards (sshd in network namespaces,
//! [`agl_parity::lab::sim`]) reached with the system ssh/scp clients. Covers a run with the lifecycle and
//! exec probes, every fault `doctor --lab` and a run must name (unreachable board, refused key, wrong
//! architecture, missing CAN interface), `@needs:` reported as unsupported here, credentials kept out of
//! reports, a SIGKILLed run leaving nothing on the board, merging reports of two runs, and the lab sweep.
//!
//! Needs root, iproute2 and openssh-server (installed when missing). Without them: a loud SKIP, or a
//! failure when `AGL_PARITY_REQUIRE` names `board` (CI).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use agl_parity::parity::Verdict;
use agl_parity::record::Outcome;
use common::board::{eventually, processes_with, sim_lab};
use common::{record, TestProject};

const LIFECYCLE: &str = r#"Feature: board canary
  Scenario: a locked door on a board
    Given the "body-control" workload is running
    When "LockRequest" is sent with Command=1
    Then within 500 ms "DoorLockState" has Locked=1

  Scenario: a crashed BCM is restarted on the board
    Given the "body-control" workload is running
    When the "body-control" workload is killed
    Then the "body-control" workload is restarted by its restart policy within 3 s
    And within 2 s "DoorLockState" has Locked=0

  Scenario: a stopped controller exits cleanly on the board
    Given the "hvac" workload is running
    When the "hvac" workload is stopped
    Then the "hvac" workload exits with code 0 within 3 s

  Scenario: exec probes run on the board
    Given the "comfort" workload is running
    When "LockRequest" is sent with Command=1
    Then within 300 ms "DoorLockState" has Locked=1
"#;

fn board_options(p: &TestProject, lab: &Path, envs: &[&str]) -> agl_parity::runner::RunOptions {
    let mut o = p.options();
    o.environments = envs.iter().map(|s| s.to_string()).collect();
    o.lab = Some(lab.to_path_buf());
    o
}

/// Every file under `dir`, as text (lossy).
fn all_text(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                out.push((p, String::from_utf8_lossy(&bytes).to_string()));
            }
        }
    }
    out
}

/// The key path and the key's secret lines must not be anywhere under `dir`.
fn assert_no_credentials(dir: &Path, key: &Path) {
    let key_text = std::fs::read_to_string(key).expect("key");
    let secret_lines: Vec<&str> = key_text
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() > 20)
        .collect();
    assert!(!secret_lines.is_empty());
    let key_path = key.display().to_string();
    let key_name = key.file_name().unwrap().to_string_lossy().to_string();
    for (path, text) in all_text(dir) {
        assert!(!text.contains(&key_path), "key path in {}", path.display());
        assert!(!text.contains(&key_name), "key file name in {}", path.display());
        for l in &secret_lines {
            assert!(!text.contains(l), "key material in {}", path.display());
        }
    }
}

fn remote_run_dir(board: &str, run_id: &str) -> PathBuf {
    // Simulated boards share the bench's filesystem; each has its own workdir.
    PathBuf::from(format!("/tmp/agl-parity-board/{board}/{run_id}"))
}

#[test]
fn a_board_runs_workloads_over_ssh_and_leaves_nothing_behind() {
    let Some(lab) = sim_lab(&["ci-board"]) else { return };
    let p = TestProject::new();
    p.write("scenarios/board.feature", LIFECYCLE);
    let out = p.run_with(board_options(&p, lab.inventory(), &["board"]));
    for name in [
        "a locked door on a board",
        "a crashed BCM is restarted on the board",
        "a stopped controller exits cleanly on the board",
        "exec probes run on the board",
    ] {
        let r = record(&out, name);
        assert_eq!(r.outcome, Outcome::Passed, "{name}: {:?}", r.message);
        assert_eq!(r.env, "board:ci-board");
        assert!(r.transport.contains("over ssh"), "{}", r.transport);
    }
    let canary = record(&out, "a locked door on a board");
    assert!(
        canary
            .metrics
            .iter()
            .any(|m| m.name == "ready body-control" && m.value > 0.0),
        "deploy time recorded: {:?}",
        canary.metrics
    );
    let log = out
        .report_dir
        .join(canary.workloads[0].log_file.as_ref().expect("log file"));
    let text = std::fs::read_to_string(&log).expect("log streamed back");
    assert!(text.contains("\"event\":\"ready\""), "{text}");
    assert!(
        text.contains("started pid") && text.contains("on board ci-board"),
        "{text}"
    );
    let crashed = record(&out, "a crashed BCM is restarted on the board");
    assert_eq!(crashed.workloads[0].restarts, 1, "{:?}", crashed.workloads);
    let stopped = record(&out, "a stopped controller exits cleanly on the board");
    assert_eq!(stopped.workloads[0].last_exit.as_deref(), Some("exit code 0"));

    // Nothing of the run is left: no remote directory, no remote or local process with the run marker.
    let run_id = out.report.run_id.clone();
    assert!(
        !remote_run_dir("ci-board", &run_id).exists(),
        "remote run directory removed"
    );
    assert!(
        eventually(10, || processes_with(&format!("AGL_PARITY_RUN={run_id}"))
            .is_empty()),
        "no process of the run is left"
    );
    assert_no_credentials(&out.report_dir, lab.client_key());

    // The same scenarios natively, in a second run, merged with the board run into one report.
    let native = p.run();
    assert!(native.report.all_passed());
    let merged = p.path().join("merged");
    let status = Command::new(env!("CARGO_BIN_EXE_agl-parity"))
        .arg("--project")
        .arg(p.path())
        .arg("merge")
        .arg(&out.report_dir)
        .arg(&native.report_dir)
        .arg("--out")
        .arg(&merged)
        .stdout(Stdio::null())
        .status()
        .expect("merge runs");
    assert!(status.success());
    let report = agl_parity::report::read_json(&merged.join("parity.json")).expect("merged report");
    let envs: Vec<&str> = report.environments.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(envs, vec!["board:ci-board", "native"]);
    assert_eq!(report.scenarios.len(), 4);
    for s in &report.scenarios {
        assert_eq!(s.outcomes.len(), 2, "{}: side by side", s.name);
    }
}

/// An inventory with one good board and one board per fault, all on the simulated sshd.
fn faulty_inventory(lab: &agl_parity::lab::sim::SimLab, dir: &Path) -> (PathBuf, PathBuf) {
    let b = &lab.boards()[0];
    let wrong_key = dir.join("wrong_ed25519");
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&wrong_key)
        .status()
        .expect("ssh-keygen");
    assert!(status.success());
    let key = lab.client_key().display().to_string();
    let hub = format!("\"hub:{}\"", b.bench_ip);
    let board = |name: &str, arch: &str, port: u16, key: &str, can: &str| {
        format!(
            "  - name: {name}\n    arch: {arch}\n    ssh: {{ host: {ip}, port: {port}, key: \"{key}\", connect_timeout_s: 3 }}\n    \
             workdir: /tmp/agl-parity-board/{name}\n    can: [{can}]\n",
            ip = b.board_ip
        )
    };
    let hub_can = format!("{{ name: vcan0, bitrate: 500000, bench: {hub} }}");
    let text = format!(
        "boards:\n{}{}{}{}{}",
        board("good", "x86_64", 22, &key, &hub_can),
        board("unreachable", "x86_64", 2222, &key, &hub_can),
        board(
            "refused-key",
            "x86_64",
            22,
            &wrong_key.display().to_string(),
            &hub_can
        ),
        board("wrong-arch", "aarch64", 22, &key, &hub_can),
        board(
            "missing-can",
            "x86_64",
            22,
            &key,
            "{ name: can0, bitrate: 500000, bench: \"socketcan:can0\" }"
        ),
    );
    let path = dir.join("faulty-lab.yaml");
    std::fs::write(&path, text).expect("inventory");
    (path, wrong_key)
}

#[test]
fn doctor_and_runs_name_every_board_fault() {
    let Some(lab) = sim_lab(&["faults"]) else { return };
    let p = TestProject::new();
    let (inventory, wrong_key) = faulty_inventory(&lab, p.path());
    let ip = lab.boards()[0].board_ip;

    let out = Command::new(env!("CARGO_BIN_EXE_agl-parity"))
        .arg("--project")
        .arg(p.path())
        .args(["doctor", "--lab"])
        .arg(&inventory)
        .output()
        .expect("doctor runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(!out.status.success(), "problems make doctor fail:\n{text}");
    let line = |board: &str, what: &str| -> String {
        text.lines()
            .find(|l| l.contains(&format!("board:{board} {what} ")))
            .unwrap_or_else(|| panic!("no `{board} {what}` line in:\n{text}"))
            .to_string()
    };
    assert!(line("good", "ssh").trim_start().starts_with("ok"), "{text}");
    assert!(line("good", "arch").trim_start().starts_with("ok"), "{text}");
    assert!(
        line("good", "bus").contains("reaches the bench hub address"),
        "{text}"
    );
    let unreachable = line("unreachable", "ssh");
    assert!(unreachable.trim_start().starts_with("PROBLEM"), "{unreachable}");
    assert!(
        unreachable.contains(&format!("board `unreachable` is unreachable (root@{ip}:2222)"))
            && unreachable.contains("Connection refused"),
        "{unreachable}"
    );
    let refused = line("refused-key", "ssh");
    assert!(
        refused.contains("board `refused-key` refused the ssh key"),
        "{refused}"
    );
    let arch = line("wrong-arch", "arch");
    assert!(
        arch.contains("PROBLEM") && arch.contains("the inventory says aarch64 but the board reports x86_64"),
        "{arch}"
    );
    let can = line("missing-can", "can0");
    assert!(
        can.contains("PROBLEM") && can.contains("CAN interface can0 does not exist on the board"),
        "{can}"
    );
    assert!(
        !text.contains(&wrong_key.display().to_string()),
        "key path printed:\n{text}"
    );
    assert!(
        !text.contains(&lab.client_key().display().to_string()),
        "key path printed:\n{text}"
    );

    // The same faults in a run: infra-errors naming the board and the cause, never a hang.
    p.write(
        "scenarios/one.feature",
        "Feature: one\n  Scenario: a locked door\n    Given the \"body-control\" workload is running\n    When \"LockRequest\" is sent with Command=1\n    Then within 500 ms \"DoorLockState\" has Locked=1\n",
    );
    let started = std::time::Instant::now();
    let run = p.run_with(board_options(&p, &inventory, &["board"]));
    assert!(started.elapsed().as_secs() < 60, "faults are reported promptly");
    let by_env = |env: &str| {
        run.report
            .runs
            .iter()
            .find(|r| r.env == env)
            .unwrap_or_else(|| panic!("no record for {env}"))
    };
    assert_eq!(
        by_env("board:good").outcome,
        Outcome::Passed,
        "{:?}",
        by_env("board:good").message
    );
    for (env, cause) in [
        ("board:unreachable", "board `unreachable` is unreachable"),
        ("board:refused-key", "board `refused-key` refused the ssh key"),
        (
            "board:wrong-arch",
            "the inventory says aarch64 but the board reports x86_64",
        ),
        (
            "board:missing-can",
            "CAN interface can0 does not exist on the board",
        ),
    ] {
        let r = by_env(env);
        assert_eq!(r.outcome, Outcome::InfraError, "{env}");
        let msg = r.message.clone().unwrap_or_default();
        assert!(msg.contains(cause), "{env}: {msg}");
        assert!(msg.contains(&format!("`{env}`")), "names the column: {msg}");
    }
    assert_no_credentials(&run.report_dir, &wrong_key);
    assert_no_credentials(&run.report_dir, lab.client_key());
}

#[test]
fn scenarios_needing_what_no_board_offers_are_unsupported_here() {
    let Some(lab) = sim_lab(&["classic"]) else { return };
    let p = TestProject::new();
    // The simulated board, but with a classic (non-FD) interface.
    let text = std::fs::read_to_string(lab.inventory())
        .expect("inventory")
        .replace("fd: true, dbitrate: 2000000", "fd: false")
        .replace(
            "key: client_ed25519",
            &format!("key: \"{}\"", lab.client_key().display()),
        );
    let inventory = p.write("classic-lab.yaml", &text);
    p.write(
        "scenarios/needs.feature",
        "Feature: needs\n  @needs:can-fd\n  Scenario: needs FD\n    Given the \"body-control\" workload is running\n    Then within 1 s \"DoorLockState\" is seen\n\n  @needs:flux-capacitor\n  Scenario: needs what nobody has\n    Given the \"body-control\" workload is running\n\n  Scenario: needs nothing\n    Given the \"body-control\" workload is running\n    Then within 1 s \"DoorLockState\" is seen\n",
    );
    let out = p.run_with(board_options(&p, &inventory, &["native", "board:classic"]));
    let outcome = |name: &str, env: &str| {
        out.report
            .runs
            .iter()
            .find(|r| r.name == name && r.env == env)
            .map(|r| (r.outcome, r.message.clone().unwrap_or_default()))
            .unwrap_or_else(|| panic!("no record {name} {env}"))
    };
    let (fd_board, why) = outcome("needs FD", "board:classic");
    assert_eq!(fd_board, Outcome::Unsupported);
    assert!(why.contains("unsupported here: needs @needs:can-fd"), "{why}");
    assert_eq!(outcome("needs FD", "native").0, Outcome::Passed);
    assert_eq!(outcome("needs what nobody has", "native").0, Outcome::Unsupported);
    assert_eq!(outcome("needs nothing", "board:classic").0, Outcome::Passed);
    let verdict = |name: &str| {
        out.report
            .scenarios
            .iter()
            .find(|s| s.name == name)
            .expect("scenario")
            .verdict
    };
    assert_eq!(verdict("needs FD"), Verdict::Pass);
    assert_eq!(verdict("needs what nobody has"), Verdict::Unsupported);
    assert_eq!(
        out.report.totals(),
        (2, 0),
        "unsupported is neither passed nor failed"
    );
    assert_eq!(out.report.unsupported(), 1);
    let board = out
        .report
        .environments
        .iter()
        .find(|e| e.name == "board:classic")
        .expect("env");
    assert_eq!((board.passed, board.unsupported), (1, 2));
    let md = std::fs::read_to_string(out.report_dir.join("summary.md")).expect("summary.md");
    assert!(md.contains("unsupported here"), "{md}");
    let terminal = agl_parity::report::terminal::render(&out.report, false);
    assert!(
        terminal.ends_with("2 passed, 0 failed, 1 skipped\n"),
        "{terminal}"
    );
}

#[test]
fn a_killed_run_leaves_nothing_on_the_board() {
    let Some(lab) = sim_lab(&["victim"]) else { return };
    let p = TestProject::new();
    p.write(
        "scenarios/long.feature",
        "Feature: long\n  Scenario: waits\n    Given the \"hvac\" workload is running\n    Then no \"ClimateRequest\" is seen for 60 s\n",
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_agl-parity"))
        .arg("--project")
        .arg(p.path())
        .args(["run", "--no-progress", "--env", "board:victim", "--lab"])
        .arg(lab.inventory())
        .arg("--workloads")
        .arg(common::workload_bins())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("harness starts");
    // Wait for the run to appear and its workload to run on the board.
    let mut run_id = String::new();
    let running = eventually(60, || {
        if run_id.is_empty() {
            run_id = std::fs::read_dir(p.path().join("reports"))
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .next()
                .unwrap_or_default();
        }
        !run_id.is_empty()
            && std::fs::read_dir(remote_run_dir("victim", &run_id))
                .into_iter()
                .flatten()
                .flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("i0-"))
            && processes_with(&format!("AGL_PARITY_RUN={run_id}")).len() >= 2
    });
    if !running {
        let _ = child.kill();
        let _ = child.wait();
        panic!("the workload never ran on the board");
    }
    child.kill().expect("SIGKILL the harness");
    child.wait().expect("reaped");
    // The ssh clients die with the harness, the sessions end, the wrappers kill the workloads.
    let marker = format!("AGL_PARITY_RUN={run_id}");
    assert!(
        eventually(15, || processes_with(&marker).is_empty()),
        "remote processes of the killed run are gone: {:?}",
        processes_with(&marker)
    );
    assert!(
        remote_run_dir("victim", &run_id).exists(),
        "the remote directory is left for the sweep"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_agl-parity"))
        .arg("--project")
        .arg(p.path())
        .args(["doctor", "--clean", "--lab"])
        .arg(lab.inventory())
        .output()
        .expect("doctor --clean runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "board `victim`: removed /tmp/agl-parity-board/victim/{run_id} of run {run_id}"
        )),
        "{text}"
    );
    assert!(!remote_run_dir("victim", &run_id).exists());
}

#[test]
fn the_lab_sweep_removes_namespaces_of_dead_owners() {
    let Some(_lab) = sim_lab(&[]) else { return };
    // A namespace named for an owner process that no longer exists.
    let mut gone = Command::new("true").spawn().expect("true");
    let dead = gone.id();
    gone.wait().expect("reaped");
    let ns = format!("agl-board-{dead}-77");
    let status = Command::new("ip")
        .args(["netns", "add", &ns])
        .status()
        .expect("ip");
    assert!(status.success());
    let lines = agl_parity::lab::sim::sweep();
    let list = String::from_utf8_lossy(
        &Command::new("ip")
            .args(["netns", "list"])
            .output()
            .expect("ip")
            .stdout,
    )
    .to_string();
    assert!(!list.contains(&ns), "{list}");
    assert!(lines.iter().any(|l| l.contains(&ns)), "{lines:?}");
}
