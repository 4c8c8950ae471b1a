//! The kube environment against real podman (`podman kube play`): podman owns the restart policy, the
//! scenario's kill is a crash podman restarts, the report carries podman's semantic notes, kinds podman
//! does not play are unsupported here, and nothing is left in podman after a normal, a SIGKILLed or an
//! interrupted run.
//!
//! Needs podman and catatonit (`apt-get install podman catatonit`). Without them these tests print a loud
//! SKIP line and pass only when `AGL_PARITY_REQUIRE` does not name `kube` (CI requires it).

mod common;

use std::process::Command;
use std::time::Duration;

use agl_parity::cleanup;
use agl_parity::env::kube::{Podman, RUN_LABEL};
use agl_parity::record::Outcome;
use common::{record, TestProject};

/// Whether podman works here; otherwise a loud skip (or a failure when CI requires kube).
fn podman_here() -> bool {
    !common::hostable(&["kube"], "tests/kube.rs").is_empty()
}

/// The pods podman has for run `run_id` (any state root).
fn pods_of(run_id: &str) -> Vec<String> {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let podman = Podman::new(&cleanup::state_root()).expect("podman config");
    let label = format!("label={RUN_LABEL}={run_id}");
    let out = rt
        .block_on(podman.run(&["pod", "ps", "--quiet", "--filter", &label]))
        .expect("podman pod ps");
    out.lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect()
}

/// The podman volumes and secrets named after run `run_id` (ConfigMap volumes and Secrets of its plays).
fn objects_of(run_id: &str) -> Vec<String> {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let podman = Podman::new(&cleanup::state_root()).expect("podman config");
    let mut found = Vec::new();
    for kind in ["volume", "secret"] {
        let out = rt
            .block_on(podman.run(&[kind, "ls", "--format", "{{.Name}}"]))
            .expect("podman ls");
        found.extend(
            out.lines()
                .filter(|l| l.contains(run_id))
                .map(|l| format!("{kind} {l}")),
        );
    }
    found
}

fn kube_options(p: &TestProject) -> agl_parity::runner::RunOptions {
    let mut o = p.options();
    o.environments = vec!["kube".into()];
    o
}

#[test]
fn podman_restarts_a_killed_workload_and_the_run_leaves_no_pod() {
    if !podman_here() {
        return;
    }
    let p = TestProject::new();
    p.write(
        "scenarios/kube.feature",
        "Feature: kube\n  Scenario: a killed controller comes back under podman\n    Given the \"hvac\" workload is running\n    When the \"hvac\" workload is killed\n    Then the \"hvac\" workload is restarted by its restart policy within 5 s\n    And the \"hvac\" workload has been restarted 1 times\n    And \"HvacStatus\" is sent every 100 ms ± 30%\n",
    );
    let mut options = kube_options(&p);
    options.environments = vec!["native".into(), "kube".into()];
    let out = p.run_with(options);
    let r = out
        .report
        .runs
        .iter()
        .find(|r| r.env == "kube")
        .expect("a kube record");
    assert_eq!(r.outcome, Outcome::Passed, "{:?}", r.message);
    assert_eq!(r.workloads[0].restarts, 1, "{:?}", r.workloads);
    assert_eq!(r.workloads[0].last_exit.as_deref(), Some("killed by signal 9"));
    // The log is podman's (conmon's file), across both incarnations.
    let log = out
        .report_dir
        .join(r.workloads[0].log_file.as_ref().expect("log"));
    let text = std::fs::read_to_string(log).expect("log captured");
    assert_eq!(text.matches("\"event\":\"ready\"").count(), 2, "{text}");
    // The same restart count natively: parity passes, no lifecycle drift.
    let verdict = &out.report.scenarios[0];
    assert_eq!(
        verdict.verdict,
        agl_parity::parity::Verdict::Pass,
        "{:?}",
        verdict.drift
    );
    let kube = out
        .report
        .environments
        .iter()
        .find(|e| e.name == "kube")
        .expect("kube summary");
    assert!(
        kube.notes
            .iter()
            .any(|n| n.starts_with("restart back-off: podman restarts")),
        "{:?}",
        kube.notes
    );
    let md = std::fs::read_to_string(out.report_dir.join("summary.md")).expect("summary.md");
    assert!(
        md.contains("How environments differ from the harness's supervisor"),
        "{md}"
    );
    assert!(
        pods_of(&out.report.run_id).is_empty(),
        "no pod of the run is left"
    );
}

#[test]
fn a_stopped_pod_stays_down_and_a_restarted_one_comes_back() {
    if !podman_here() {
        return;
    }
    let p = TestProject::new();
    p.write(
        "scenarios/kube.feature",
        "Feature: kube\n  Scenario: stop and restart through podman\n    Given the \"body-control\" workload is running\n    When the \"body-control\" workload is stopped\n    Then the \"body-control\" workload stays exited for 1 s\n    When the \"body-control\" workload is restarted\n    Then the \"body-control\" workload has been restarted 0 times\n    And within 2 s \"DoorLockState\" is seen\n",
    );
    let out = p.run_with(kube_options(&p));
    let r = record(&out, "stop and restart through podman");
    assert_eq!(r.outcome, Outcome::Passed, "{:?}", r.message);
    assert_eq!(r.workloads[0].starts, 2, "{:?}", r.workloads);
}

#[test]
fn a_deployment_of_two_replicas_is_two_podman_pods_and_a_killed_one_comes_back() {
    if !podman_here() {
        return;
    }
    let p = TestProject::new();
    // door-locks without its init container (podman 4.3 restarts init containers under Always); the
    // controller mounts the tuning ConfigMap instead, which podman turns into a volume.
    let manifest =
        std::fs::read_to_string(p.path().join("fixtures/manifests/door-locks.yaml")).expect("manifest");
    let start = manifest.find("      initContainers:").expect("init containers");
    let end = start
        + manifest[start..]
            .find("      restartPolicy:")
            .expect("restartPolicy");
    let without_init = format!("{}{}", &manifest[..start], &manifest[end..]).replace(
        "          name: bcm\n",
        "          name: bcm\n          volumeMounts:\n            - mountPath: /etc/door-locks\n              name: tuning\n",
    );
    p.write("fixtures/manifests/door-locks.yaml", &without_init);
    p.write(
        "scenarios/kube.feature",
        "Feature: kube\n  Scenario: two replicas under podman\n    Given the \"door-locks\" workload is running\n    Then the \"door-locks\" workload runs 2 replicas\n    When the \"door-locks\" workload is killed\n    Then the \"door-locks\" workload is restarted by its restart policy within 5 s\n    And the \"door-locks\" workload runs 2 replicas\n    When \"VehicleSpeed\" is sent with Speed=35, SpeedValid=1\n    Then within 500 ms \"DoorLockState\" has Locked=1, AutoLocked=1\n",
    );
    let out = p.run_with(kube_options(&p));
    let r = record(&out, "two replicas under podman");
    assert_eq!(r.outcome, Outcome::Passed, "{:?}", r.message);
    let mut pods: Vec<(&str, u32)> = r.workloads.iter().map(|w| (w.pod.as_str(), w.restarts)).collect();
    pods.sort();
    assert_eq!(
        pods,
        vec![("door-locks-0", 1), ("door-locks-1", 1)],
        "{:?}",
        r.workloads
    );
    assert!(
        pods_of(&out.report.run_id).is_empty(),
        "no pod of the run is left"
    );
    // The ConfigMap `door-locks-files` became a podman volume named after the scenario: gone too.
    assert_eq!(objects_of(&out.report.run_id), Vec::<String>::new());
}

#[test]
fn kinds_podman_does_not_play_are_unsupported_here_and_the_others_still_run() {
    if !podman_here() {
        return;
    }
    let p = TestProject::new();
    p.write(
        "fixtures/manifests/job.yaml",
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: one-shot\n  annotations:\n    parity.agl.io/can-buses: vehicle\nspec:\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n        - name: once\n          image: agl/body-control:1.0\n",
    );
    p.write(
        "scenarios/kube.feature",
        "Feature: kube\n  Scenario: a job\n    Given the \"one-shot\" workload is running\n\n  Scenario: a pod\n    Given the \"body-control\" workload is running\n    Then within 1 s \"DoorLockState\" is seen\n",
    );
    let out = p.run_with(kube_options(&p));
    let job = record(&out, "a job");
    assert_eq!(job.outcome, Outcome::Unsupported, "{:?}", job.message);
    assert!(
        job.message
            .as_deref()
            .unwrap_or_default()
            .contains("plays Pod and Deployment, not Job"),
        "{:?}",
        job.message
    );
    assert_eq!(record(&out, "a pod").outcome, Outcome::Passed);
}

#[test]
fn a_sigkilled_kube_run_is_swept_and_an_interrupted_one_leaves_nothing() {
    if !podman_here() {
        return;
    }
    let p = TestProject::new();
    let state = p.path().join("state");
    let (mut child, run) = common::spawn_long_run(&p, &state, "kube", |r| !pods_of(r).is_empty());
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    assert!(!pods_of(&run).is_empty(), "a SIGKILLed run leaves its pod behind");
    let out = Command::new(env!("CARGO_BIN_EXE_agl-parity"))
        .args(["doctor", "--clean"])
        .env(cleanup::STATE_DIR_ENV, &state)
        .output()
        .expect("doctor");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("removed podman pod hvac-{run}-s0-pod-0 of run {run}")),
        "{text}"
    );
    assert!(pods_of(&run).is_empty(), "doctor --clean removed it");

    let (child, run) = common::spawn_long_run(&p, &state, "kube", |r| !pods_of(r).is_empty());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("SIGINT");
    let out = common::finish_within(child, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(130));
    assert!(pods_of(&run).is_empty(), "an interrupted run removes its pods");
}
