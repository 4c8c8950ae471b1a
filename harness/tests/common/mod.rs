//! A throwaway project (scenarios, fixtures, reports in a temp dir) for integration tests, running on the
//! real workload binaries of this repository.

#![allow(dead_code)]

pub mod board;
pub mod schema;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use agl_parity::config::ParityConfig;
use agl_parity::runner::{self, Journal, RunOptions, RunOutcome};
use agl_parity::workload::WorkloadCatalog;

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("repo root")
}

/// Builds (once per process; cargo caches across processes) the static workload binaries.
pub fn workload_bins() -> PathBuf {
    static BINS: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BINS.get_or_init(|| {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(WorkloadCatalog::new(&repo()).ensure_built())
            .expect("workloads build")
    })
    .clone()
}

pub struct TestProject {
    pub dir: tempfile::TempDir,
}

impl TestProject {
    /// A project with this repository's fixtures (manifests, DBC, traces) and no scenarios. With `AGL_PARITY_KEEP_TEST_DIRS` set
    /// the directory (reports, logs, traces) outlives the test, for post-mortems.
    pub fn new() -> TestProject {
        let mut dir = tempfile::tempdir().expect("tempdir");
        if std::env::var_os("AGL_PARITY_KEEP_TEST_DIRS").is_some() {
            dir.disable_cleanup(true);
        }
        for sub in [
            "fixtures/manifests",
            "fixtures/dbc",
            "fixtures/traces",
            "scenarios",
        ] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("mkdir");
        }
        for sub in ["fixtures/manifests", "fixtures/dbc", "fixtures/traces"] {
            for e in std::fs::read_dir(repo().join(sub)).expect("fixtures").flatten() {
                std::fs::copy(e.path(), dir.path().join(sub).join(e.file_name())).expect("copy");
            }
        }
        std::fs::copy(ParityConfig::path_in(&repo()), ParityConfig::path_in(dir.path())).expect("copy");
        TestProject { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&p, text).expect("write");
        p
    }

    pub fn options(&self) -> RunOptions {
        RunOptions {
            run_id: runner::new_run_id(),
            project_dir: self.path().to_path_buf(),
            scenario_paths: vec![self.path().join("scenarios")],
            environments: vec!["native".into()],
            tags: None,
            name_filter: None,
            concurrency: 4,
            report_root: self.path().join("reports"),
            step_timeout: Duration::from_secs(30),
            ready_timeout: Duration::from_secs(5),
            progress: false,
            prebuilt_workloads: Some(workload_bins()),
            interrupt: Default::default(),
            lab: None,
            parallel_environments: false,
            can_transport: Default::default(),
            reference: None,
            seed: 1,
            repeat: 1,
            bridges: Default::default(),
        }
    }

    /// Runs with `options` and writes the reports.
    pub fn run_with(&self, options: RunOptions) -> RunOutcome {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let outcome = rt
            .block_on(runner::run(options, Journal::new()))
            .expect("run starts");
        agl_parity::report::write_all(&outcome.report, &outcome.report_dir).expect("report written");
        outcome
    }

    pub fn run(&self) -> RunOutcome {
        self.run_with(self.options())
    }
}

/// The record of the scenario named `name`.
pub fn record<'a>(outcome: &'a RunOutcome, name: &str) -> &'a agl_parity::record::ScenarioRun {
    outcome
        .report
        .runs
        .iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| {
            panic!(
                "no record for `{name}`: {:?}",
                outcome.report.runs.iter().map(|r| &r.name).collect::<Vec<_>>()
            )
        })
}

pub fn shared<T>(t: T) -> Arc<T> {
    Arc::new(t)
}

/// The environments of `names` this machine can host, each asked with its registry entry's own probe. One
/// that is missing is announced loudly on stderr (naming `who` skipped it) and fails the test when
/// `AGL_PARITY_REQUIRE` names it (or `all`).
pub fn hostable(names: &[&'static str], who: &str) -> Vec<&'static str> {
    let required = std::env::var("AGL_PARITY_REQUIRE").unwrap_or_default();
    let required: Vec<&str> = required.split(',').map(str::trim).collect();
    let runtime = agl_parity::runtime().expect("async runtime");
    let registry = agl_parity::env::registry();
    let mut hostable = Vec::new();
    for &name in names {
        let kind = registry
            .iter()
            .find(|k| k.name == name)
            .unwrap_or_else(|| panic!("environment `{name}` is not in agl_parity::env::registry()"));
        match runtime.block_on((kind.probe)()) {
            Ok(_) => hostable.push(name),
            Err(why) => {
                if required.iter().any(|r| *r == name || *r == "all") {
                    panic!(
                        "environment `{name}` is required (AGL_PARITY_REQUIRE) but this machine cannot host it: {}",
                        why.reason
                    );
                }
                eprintln!();
                eprintln!("!!!!!!!! ENVIRONMENT `{name}` SKIPPED by {who}: this machine cannot host it");
                eprintln!("!!!!!!!! {}", why.reason);
                eprintln!("!!!!!!!! (run `agl-parity doctor`; set AGL_PARITY_REQUIRE={name} to make this a failure)");
                eprintln!();
            }
        }
    }
    hostable
}

/// Waits for `child` (its stdout and stderr piped) within `limit` and collects its output; a child that
/// overruns is killed and the test fails with its stderr.
pub fn finish_within(mut child: std::process::Child, limit: Duration) -> std::process::Output {
    use std::io::Read;
    let reader = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let out = reader(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let err = reader(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let status = child.wait();
        let _ = tx.send(());
        status
    });
    if rx.recv_timeout(limit).is_err() {
        // SAFETY: kill(2) on the child's pid; the waiter thread reaps it.
        unsafe {
            libc::kill(pid as i32, libc::SIGKILL);
        }
        let _ = waiter.join();
        panic!(
            "the program did not finish within {limit:?}; stderr: {}",
            String::from_utf8_lossy(&err.join().unwrap_or_default())
        );
    }
    let status = waiter.join().expect("waiter").expect("wait");
    std::process::Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

/// A userspace hub on a Unix socket in a temporary directory (removed with it).
pub struct TempHub {
    _dir: tempfile::TempDir,
    pub hub: vcan::hub::Hub,
    /// `unix:<socket>`, as `--can can0=...` takes it.
    pub uri: String,
}

impl TempHub {
    pub fn start(name: &str) -> TempHub {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bus.sock");
        let hub = vcan::hub::Hub::start(vcan::hub::HubConfig {
            name: name.into(),
            unix_path: Some(path.clone()),
            ..vcan::hub::HubConfig::default()
        })
        .expect("start hub");
        TempHub {
            _dir: dir,
            hub,
            uri: format!("unix:{}", path.display()),
        }
    }

    pub fn endpoint(&self) -> vcan::Endpoint {
        self.hub.unix_endpoint().expect("unix endpoint")
    }
}

/// Starts a run of one minute-long scenario (`hvac` held running) on `env` in another process, with its own
/// state root `state`; returns it and its run id once `left(run id)` says the run has made something the
/// environment must clean up (a container, a pod).
pub fn spawn_long_run(
    p: &TestProject,
    state: &Path,
    env: &str,
    left: impl Fn(&str) -> bool,
) -> (std::process::Child, String) {
    p.write(
        "scenarios/long.feature",
        "Feature: long\n  Scenario: busy\n    Given the \"hvac\" workload is running\n    Then no \"DiagInfo\" is seen for 60 s\n",
    );
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_agl-parity"))
        .arg("--project")
        .arg(p.path())
        .args(["run", "--no-progress", "--env", env, "--workloads"])
        .arg(workload_bins())
        .env(agl_parity::cleanup::STATE_DIR_ENV, state)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("harness");
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(120) {
        let runs: Vec<String> = std::fs::read_dir(state.join("runs"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().to_string())
                    .collect()
            })
            .unwrap_or_default();
        if let Some(run) = runs.into_iter().find(|r| left(r)) {
            return (child, run);
        }
        std::thread::sleep(Duration::from_millis(20)); // polling another process's progress
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the run on {env} made nothing to clean up within 120 s");
}

/// Asserts that scenario `name` passed.
pub fn assert_passed(outcome: &RunOutcome, name: &str) {
    let r = record(outcome, name);
    assert_eq!(
        r.outcome,
        agl_parity::record::Outcome::Passed,
        "{name}: {:?}",
        r.message
    );
}

/// The message of scenario `name`, which must have ended with `expected`.
pub fn message_of<'a>(outcome: &'a RunOutcome, name: &str, expected: agl_parity::record::Outcome) -> &'a str {
    let r = record(outcome, name);
    assert_eq!(r.outcome, expected, "{name}: {:?}", r.message);
    r.message.as_deref().unwrap_or_default()
}

/// Asserts that every report file of the run was written (also when some input was bad).
pub fn assert_report_written(outcome: &RunOutcome) {
    for f in [
        "junit.xml",
        "parity.json",
        "summary.md",
        "summary.html",
        "records.jsonl",
    ] {
        assert!(outcome.report_dir.join(f).is_file(), "{f} written");
    }
}
