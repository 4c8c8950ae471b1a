//! The container environment against the real Docker engine: a canary container, manifest limits applied to
//! the container, infra errors for each way a container can fail, and cleanup after SIGKILL and SIGINT.
//!
//! Needs a Docker engine. Without one these tests print a loud SKIP line and pass only when
//! `AGL_PARITY_REQUIRE` does not name `container` (CI requires it).

mod common;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use agl_parity::cleanup;
use agl_parity::env::container::RUN_LABEL;
use agl_parity::record::Outcome;
use bollard::query_parameters::ListContainersOptions;
use common::{record, TestProject};

/// Whether the engine is reachable; otherwise a loud skip (or a failure when CI requires containers).
fn engine() -> bool {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    match rt.block_on(agl_parity::env::container::probe()) {
        Ok(_) => true,
        Err(why) => {
            let required = std::env::var("AGL_PARITY_REQUIRE").unwrap_or_default();
            if required.split(',').any(|r| r == "container" || r == "all") {
                panic!("the container environment is required but unavailable: {why}");
            }
            eprintln!("!!!!!!!! SKIPPED: no Docker engine: {why}");
            false
        }
    }
}

fn containers_of(run_id: &str) -> Vec<String> {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let docker = bollard::Docker::connect_with_local_defaults().expect("docker");
        let mut filters = HashMap::new();
        filters.insert("label".to_string(), vec![format!("{RUN_LABEL}={run_id}")]);
        let opts = ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        };
        docker
            .list_containers(Some(opts))
            .await
            .expect("list")
            .into_iter()
            .filter_map(|c| c.id)
            .collect()
    })
}

fn container_options(p: &TestProject) -> agl_parity::runner::RunOptions {
    let mut o = p.options();
    o.environments = vec!["container".into()];
    o
}

#[test]
fn bollard_stays_pinned_to_the_release_that_talks_to_api_1_41() {
    let lock = std::fs::read_to_string(common::repo().join("Cargo.lock")).expect("Cargo.lock");
    let bollard = lock
        .split("[[package]]")
        .find(|p| p.contains("name = \"bollard\"\n"))
        .expect("bollard in Cargo.lock");
    assert!(
        bollard.contains("version = \"0.21.1\""),
        "bollard must stay 0.21.1: {bollard}"
    );
}

#[test]
fn canary_scenario_runs_in_a_container_and_leaves_nothing() {
    if !engine() {
        return;
    }
    let p = TestProject::new();
    p.write(
        "scenarios/canary.feature",
        "Feature: canary\n  Scenario: a locked door in a container\n    Given the \"body-control\" workload is running\n    When \"LockRequest\" is sent with Command=1\n    Then within 500 ms \"DoorLockState\" has Locked=1\n",
    );
    let out = p.run_with(container_options(&p));
    let r = record(&out, "a locked door in a container");
    assert_eq!(r.outcome, Outcome::Passed, "{:?}", r.message);
    // The default transport: vxcan where the kernel has CAN, else SocketCAN emulated through pod-init.
    let expected = if vcan::kernel::kernel_has_can().is_ok() {
        "vxcan pair"
    } else {
        "SocketCAN emulated (seccomp user notification), bridged to the userspace hub (pod-init hands the listener out)"
    };
    assert!(r.transport.starts_with(expected), "{}", r.transport);
    let log = out
        .report_dir
        .join(r.workloads[0].log_file.as_ref().expect("log"));
    let text = std::fs::read_to_string(log).expect("container log captured");
    assert!(
        text.contains("\"event\":\"ready\"") && text.contains("container"),
        "{text}"
    );
    assert!(
        containers_of(&out.report.run_id).is_empty(),
        "no container of the run is left"
    );
}

#[test]
fn manifest_limits_are_applied_to_the_container() {
    if !engine() {
        return;
    }
    let p = TestProject::new();
    // The hvac manifest limits: 64Mi memory, 250m CPU. A scenario that keeps the workload up while we look.
    p.write("scenarios/limits.feature", "Feature: l\n  Scenario: limited\n    Given the \"hvac\" workload is running\n    Then no \"DiagInfo\" is seen for 3 s\n");
    let state = p.path().join("state");
    let mut child = Command::new(env!("CARGO_BIN_EXE_agl-parity"))
        .arg("--project")
        .arg(p.path())
        .args(["run", "--no-progress", "--env", "container", "--workloads"])
        .arg(common::workload_bins())
        .env(cleanup::STATE_DIR_ENV, &state)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("harness");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let host_config = rt.block_on(async {
        let docker = bollard::Docker::connect_with_local_defaults().expect("docker");
        for _ in 0..300 {
            let mut filters = HashMap::new();
            filters.insert("label".to_string(), vec!["agl.parity.pod=hvac".to_string()]);
            let opts = ListContainersOptions {
                filters: Some(filters),
                ..Default::default()
            };
            let running = docker.list_containers(Some(opts)).await.unwrap_or_default();
            let ours = running.into_iter().find(|c| {
                c.labels
                    .as_ref()
                    .and_then(|l| l.get(RUN_LABEL))
                    .is_some_and(|run| {
                        std::fs::read_dir(state.join("runs"))
                            .map(|mut d| d.any(|e| e.is_ok_and(|e| e.file_name() == run.as_str())))
                            .unwrap_or(false)
                    })
            });
            if let Some(c) = ours {
                let inspect = docker
                    .inspect_container(c.id.as_deref().unwrap_or_default(), None)
                    .await
                    .expect("inspect");
                return inspect.host_config.expect("host config");
            }
            tokio::time::sleep(Duration::from_millis(20)).await; // polling another process's progress
        }
        panic!("the hvac container did not appear");
    });
    assert!(child.wait().expect("run").success());
    assert_eq!(host_config.memory, Some(64 << 20));
    assert_eq!(host_config.nano_cpus, Some(250_000_000));
    assert_eq!(host_config.network_mode.as_deref(), Some("none"));
    // cdk8s-plus writes readOnlyRootFilesystem: true.
    assert_eq!(host_config.readonly_rootfs, Some(true));
}

#[test]
fn container_failures_are_infra_errors_naming_the_cause() {
    if !engine() {
        return;
    }
    let p = TestProject::new();
    let body = std::fs::read_to_string(p.path().join("fixtures/manifests/body-control.yaml")).unwrap();
    p.write(
        "fixtures/manifests/crashing.yaml",
        &body
            .replace("  name: body-control\nspec:", "  name: crashing\nspec:")
            .replace("value: \"200\"", "value: \"often\""),
    );
    p.write(
        "fixtures/manifests/silent.yaml",
        &body
            .replace("  name: body-control\nspec:", "  name: silent\nspec:")
            .replace("ready-frame: \"0x320\"", "ready-frame: \"0x7FF\""),
    );
    p.write(
        "fixtures/manifests/unbuildable.yaml",
        &body
            .replace("  name: body-control\nspec:", "  name: unbuildable\nspec:")
            .replace("agl/body-control:1.0", "agl/wiper-control:1.0"),
    );
    p.write(
        "scenarios/failures.feature",
        "Feature: f\n  Scenario: exits at start\n    Given the \"crashing\" workload is running\n\n  Scenario: never ready\n    Given the \"silent\" workload is running\n\n  Scenario: no such image\n    Given the \"unbuildable\" workload is running\n\n  Scenario: still fine\n    Given the \"body-control\" workload is running\n",
    );
    let mut options = container_options(&p);
    options.ready_timeout = Duration::from_secs(5);
    let out = p.run_with(options);
    let msg = |n: &str| record(&out, n).message.clone().unwrap_or_default();
    for n in ["exits at start", "never ready", "no such image"] {
        assert_eq!(record(&out, n).outcome, Outcome::InfraError, "{n}: {}", msg(n));
    }
    assert!(
        msg("exits at start").contains("exited (exit code 2) before becoming ready"),
        "{}",
        msg("exits at start")
    );
    assert!(
        msg("exits at start").contains("HEARTBEAT_MS"),
        "{}",
        msg("exits at start")
    );
    assert!(
        msg("never ready").contains("did not become ready within 5000 ms (CAN heartbeat 0x7FF not seen)"),
        "{}",
        msg("never ready")
    );
    assert!(
        msg("no such image").contains("image `agl/wiper-control:1.0` is neither built locally nor buildable"),
        "{}",
        msg("no such image")
    );
    assert_eq!(
        record(&out, "still fine").outcome,
        Outcome::Passed,
        "{}",
        msg("still fine")
    );
    assert!(out.report_dir.join("summary.html").is_file());
    assert!(containers_of(&out.report.run_id).is_empty());
}

#[test]
fn unreachable_engine_is_an_infra_error_and_the_report_is_written() {
    let p = TestProject::new();
    p.write(
        "scenarios/one.feature",
        "Feature: one\n  Scenario: needs docker\n    Given the \"body-control\" workload is running\n",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_agl-parity"))
        .arg("--project")
        .arg(p.path())
        .args(["run", "--no-progress", "--env", "native,container", "--workloads"])
        .arg(common::workload_bins())
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .env(cleanup::STATE_DIR_ENV, p.path().join("state"))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("container: UNAVAILABLE"), "{stdout}");
    assert!(stdout.contains("Docker"), "{stdout}");
    let json = std::fs::read_dir(p.path().join("reports"))
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path()
        .join("parity.json");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    let outcomes: Vec<(String, String)> = report["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["env"].as_str().unwrap().to_string(),
                r["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        outcomes.contains(&("native".into(), "passed".into())),
        "{outcomes:?}"
    );
    assert!(
        outcomes.contains(&("container".into(), "infra-error".into())),
        "{outcomes:?}"
    );
}

#[test]
fn sigkilled_container_run_is_cleaned_by_doctor_and_sigint_leaves_nothing() {
    if !engine() {
        return;
    }
    let p = TestProject::new();
    let state = p.path().join("state");
    let (mut child, run) = common::spawn_long_run(&p, &state, "container", |r| !containers_of(r).is_empty());
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    assert!(
        !containers_of(&run).is_empty(),
        "a SIGKILLed run leaves its container behind"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_agl-parity"))
        .args(["doctor", "--clean"])
        .env(cleanup::STATE_DIR_ENV, &state)
        .output()
        .expect("doctor");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("of run {run}")), "{text}");
    assert!(containers_of(&run).is_empty(), "doctor --clean removed it");

    let (child, run) = common::spawn_long_run(&p, &state, "container", |r| !containers_of(r).is_empty());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("SIGINT");
    let out = child.wait_with_output().expect("exit");
    assert_eq!(out.status.code(), Some(130));
    assert!(
        containers_of(&run).is_empty(),
        "an interrupted run removes its containers"
    );
}
