//! # A team's project outside this repository, on native, container and vm (issue 9, section 3)
//!
//! What this proves: a project that shares nothing with the agl-parity workspace but the `agl-parity`
//! binary runs unchanged on every environment this machine can host, and passes with parity. The project is
//! written into a fresh temporary directory (nothing is copied into the workspace) and driven through the
//! real CLI, `agl-parity --project <tmp> run --env native,container,vm --no-progress --report-dir
//! <tmp>/reports`, whose exit status and `parity.json` are checked. The project has:
//!
//! * its own project file `agl-parity.yaml` (`scenarios: [features]`, `manifests: [deploy]`, `dbc: [dbc]`,
//!   `parity: parity.yaml`, `workloads: [{dir: bin}]`) and its own `parity.yaml`, whose `default_bus: body`
//!   is a bus name the sample project never uses;
//! * its own DBC `dbc/door-lock.dbc` (the content of the sample's DBC under another name);
//! * its own prebuilt executables in `bin/`: the sample `body-control` workload, built statically, as
//!   `door-lock` (image `registry.example.com/team/door-lock:2.1`), and the `hello-static` test program as
//!   `preflight` (image `registry.example.com/team/preflight:1`): the image's last path component names the
//!   executable, the registry host and the tag do not matter;
//! * a cdk8s-plus-style Deployment in a nested directory, `deploy/apps/door-lock.yaml`, with every default
//!   cdk8s-plus writes (as in `fixtures/manifests/hvac.yaml`), `replicas: 2`, an init container
//!   (`preflight hello 0 /proc/self/cmdline door-lock-preflight`, which prints its arguments and
//!   environment and exits 0; its log is checked) and the `parity.agl.io/can-buses` /
//!   `parity.agl.io/ready-frame` annotations on the pod template;
//! * `deploy/config.yaml` with a `Namespace`, the `ConfigMap` that feeds both containers through `envFrom`
//!   (`HEARTBEAT_MS=100`, `AUTOLOCK_KMH=30`: the sample's defaults are 200 and 15, so the scenarios see
//!   whether the ConfigMap of *another file* arrived) and a `Service`; the Namespace and the Service must be
//!   accepted and not deployed;
//! * scenarios under `features/`: one feature with two `Rule:`s and a `Scenario Outline` with two
//!   `Examples` tables, one tagged `@fast`; one feature in German (`# language: de`, `Funktionalität`,
//!   `Grundlage`, `Szenario`, `Angenommen`/`Wenn`/`Dann`/`Und`; the step texts stay the English step
//!   library's).
//!
//! Two identical controllers on one bus: both replicas of the Deployment receive every request and both
//! answer, and both send the `DoorLockState` heartbeat, interleaved at an arbitrary phase. So the scenarios
//! assert only what holds for one controller as for two: a request gets a `LockResponse` with the right
//! result, the lock state reaches the expected value, a heartbeat is seen, nothing is dropped. They never
//! measure the heartbeat period (two interleaved 100 ms heartbeats have no single period) and never count
//! frames on the bus. The parity engine compares sequences of *distinct consecutive* payloads per CAN id,
//! so two identical answers in a row compare equal to one. That both replicas really were on the bus is
//! checked outside the scenarios, in each replica's own log: every replica logs `ready` with the
//! ConfigMap's settings and, in the scenarios that send a request, that it handled the request.
//!
//! Environments: each of native, container (needs a Docker engine) and vm (needs /dev/kvm) is probed with
//! its registry entry's own probe; one that this machine cannot host is skipped with a loud line on stderr,
//! and is a failure when `AGL_PARITY_REQUIRE` names it (or `all`).
//!
//! The second test is the same project with a field outside the Kubernetes schema in the Deployment
//! (`spec.template.spec.dnsPolcy`) and one more, valid Pod: the run still writes its report, the scenarios
//! of the broken workload are infra-errors whose message names the file, the document and the field path,
//! and the scenario of the valid Pod still runs and passes (native only: manifests are read before any
//! environment is involved).
//!
//! `AGL_PARITY_KEEP_TEST_DIRS=1` keeps the temporary projects (reports, logs, traces) for a post-mortem.
//!
//! The replica check found a real bug, now fixed: readiness of a second replica was satisfied by the first
//! replica's ready frame; `ScenarioWorld::deploy_spec` now also waits until the replica's own bus node has
//! sent.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock};

mod common;

use agl_parity::cargo::BuildRequest;
use agl_parity::parity::{RunReport, Verdict};
use agl_parity::record::Outcome;

/// The environments the project must pass on, in column order.
const ENVIRONMENTS: [&str; 3] = ["native", "container", "vm"];

/// The sample DBC whose content the project carries under its own name.
const SAMPLE_DBC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/dbc/agl-vehicle.dbc");

const PROJECT_FILE: &str = "\
# A team's agl-parity project, outside the agl-parity repository.
scenarios: [features]
manifests: [deploy]
dbc: [dbc]
parity: parity.yaml
workloads:
  - dir: bin
";

const PARITY: &str = "\
# Steps that name no bus use the team's body bus.
default_bus: body
mask_signals: []
ignore_ids: []
timing_tolerance: 0.25
";

/// The Deployment as cdk8s-plus synthesizes it, every default kept (compare fixtures/manifests/hvac.yaml).
const DEPLOYMENT: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  labels:
    app.kubernetes.io/name: door-lock
    app.kubernetes.io/part-of: team-body
  name: door-lock
  namespace: team-body
spec:
  minReadySeconds: 0
  progressDeadlineSeconds: 600
  replicas: 2
  revisionHistoryLimit: 10
  selector:
    matchLabels:
      app.kubernetes.io/name: door-lock
      cdk8s.io/metadata.addr: door-lock-c8f3a1d2
  strategy:
    rollingUpdate:
      maxSurge: 25%
      maxUnavailable: 25%
    type: RollingUpdate
  template:
    metadata:
      annotations:
        parity.agl.io/can-buses: body
        parity.agl.io/ready-frame: "0x320"
      labels:
        app.kubernetes.io/name: door-lock
        cdk8s.io/metadata.addr: door-lock-c8f3a1d2
    spec:
      automountServiceAccountToken: false
      containers:
        - envFrom:
            - configMapRef:
                name: door-lock-config
          image: registry.example.com/team/door-lock:2.1
          imagePullPolicy: IfNotPresent
          name: bcm
          resources:
            limits:
              cpu: 250m
              memory: 64Mi
            requests:
              cpu: 50m
              memory: 16Mi
          securityContext:
            allowPrivilegeEscalation: false
            privileged: false
            readOnlyRootFilesystem: true
            runAsGroup: 1000
            runAsNonRoot: true
            runAsUser: 1000
      dnsPolicy: ClusterFirst
      hostNetwork: false
      initContainers:
        - args:
            - hello
            - "0"
            - /proc/self/cmdline
            - door-lock-preflight
          envFrom:
            - configMapRef:
                name: door-lock-config
          image: registry.example.com/team/preflight:1
          imagePullPolicy: IfNotPresent
          name: preflight
          resources:
            limits:
              cpu: 250m
              memory: 64Mi
          securityContext:
            allowPrivilegeEscalation: false
            privileged: false
            readOnlyRootFilesystem: true
            runAsGroup: 1000
            runAsNonRoot: true
            runAsUser: 1000
      restartPolicy: Always
      securityContext:
        fsGroupChangePolicy: Always
        runAsNonRoot: true
      setHostnameAsFQDN: false
      shareProcessNamespace: false
      terminationGracePeriodSeconds: 2
"#;

/// A separate file: the ConfigMap the Deployment reads, and two objects no environment deploys.
const CONFIG: &str = r#"apiVersion: v1
kind: Namespace
metadata:
  name: team-body
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: door-lock-config
  namespace: team-body
data:
  AUTOLOCK_KMH: "30"
  HEARTBEAT_MS: "100"
immutable: false
---
apiVersion: v1
kind: Service
metadata:
  labels:
    app.kubernetes.io/name: door-lock
  name: door-lock
  namespace: team-body
spec:
  externalIPs: []
  ports:
    - port: 8080
      targetPort: 8080
  selector:
    cdk8s.io/metadata.addr: door-lock-c8f3a1d2
  type: ClusterIP
"#;

/// English, with rules and an outline of two Examples tables (one tagged).
const DOOR_LOCK_FEATURE: &str = r#"@door-lock
Feature: Door lock: two body controllers on the body bus
  The door-lock Deployment runs two identical replicas on one bus. Every assertion holds whether one or
  both controllers answer: a request gets a response, the lock state reaches its value, heartbeats come.

  Background:
    Given the "door-lock" workload is running

  Rule: The controllers announce their lock state

    Scenario: Heartbeats keep coming
      Then the "door-lock" workload runs 2 replicas
      And within 300 ms "DoorLockState" has Locked=0, AutoLocked=0, LastReject=0
      And no "LockResponse" is seen for 300 ms
      And no frames were dropped

    Scenario: No automatic lock at 20 km/h, the ConfigMap's AUTOLOCK_KMH is 30
      When "VehicleSpeed" is sent with Speed=20, SpeedValid=1
      Then no "DoorLockState" has Locked=1 for 500 ms
      And within 300 ms "DoorLockState" is seen

  Rule: Every key-fob request is answered

    Scenario: A lock request locks the doors
      When "LockRequest" is sent with Command=1
      Then within 500 ms "LockResponse" has Result=0, Command=1
      And within 500 ms "DoorLockState" has Locked=1, AutoLocked=0

    Scenario Outline: Command <command> is answered with result <result>
      When "LockRequest" is sent with Command=<command>
      Then within 500 ms "LockResponse" has Result=<result>, Command=<command>
      And within 500 ms "DoorLockState" has LastReject=<reject>

      @fast
      Examples: accepted while stationary
        | command | result | reject |
        | 1       | 0      | 0      |
        | 2       | 0      | 0      |

      Examples: invalid commands
        | command | result | reject |
        | 0       | 2      | 2      |
        | 3       | 2      | 2      |
"#;

/// German keywords, the step library's English step texts.
const GERMAN_FEATURE: &str = r#"# language: de
@door-lock
Funktionalität: Türverriegelung
  Grundlage:
    Angenommen the "door-lock" workload is running

  Szenario: Verriegeln auf Anfrage
    Wenn "LockRequest" is sent with Command=1
    Dann within 500 ms "LockResponse" has Result=0, Command=1
    Und within 500 ms "DoorLockState" has Locked=1

  Szenario: Automatisch verriegeln erst über 30 km/h
    Wenn "VehicleSpeed" is sent with Speed=40, SpeedValid=1
    Dann within 500 ms "DoorLockState" has Locked=1, AutoLocked=1
    Und no "LockResponse" is seen for 300 ms
"#;

/// Every scenario of the project (outlines expanded): its name, whether it carries the `@fast` tag, and the
/// event every replica's log must show (both controllers are on the bus and handled the frame).
const SCENARIOS: [(&str, bool, Option<&str>); 9] = [
    ("Heartbeats keep coming", false, None),
    (
        "No automatic lock at 20 km/h, the ConfigMap's AUTOLOCK_KMH is 30",
        false,
        None,
    ),
    ("A lock request locks the doors", false, Some(LOCK_RESPONSE)),
    ("Command 1 is answered with result 0", true, Some(LOCK_RESPONSE)),
    ("Command 2 is answered with result 0", true, Some(LOCK_RESPONSE)),
    ("Command 0 is answered with result 2", false, Some(LOCK_RESPONSE)),
    ("Command 3 is answered with result 2", false, Some(LOCK_RESPONSE)),
    ("Verriegeln auf Anfrage", false, Some(LOCK_RESPONSE)),
    (
        "Automatisch verriegeln erst über 30 km/h",
        false,
        Some(r#""event":"auto_locked""#),
    ),
];

/// What body-control logs when it answers a `LockRequest`.
const LOCK_RESPONSE: &str = r#""event":"lock_response""#;

/// For the broken-manifest test: a valid Pod of the same image in its own file.
const SPARE_POD: &str = r#"apiVersion: v1
kind: Pod
metadata:
  annotations:
    parity.agl.io/can-buses: body
    parity.agl.io/ready-frame: "0x320"
  name: spare-bcm
spec:
  containers:
    - envFrom:
        - configMapRef:
            name: door-lock-config
      image: registry.example.com/team/door-lock:2.1
      name: bcm
  restartPolicy: OnFailure
  terminationGracePeriodSeconds: 2
"#;

const SPARE_FEATURE: &str = r#"Feature: The spare controller
  Scenario: The spare controller answers a lock request
    Given the "spare-bcm" workload is running
    When "LockRequest" is sent with Command=1
    Then within 500 ms "LockResponse" has Result=0, Command=1
"#;

/// One CLI run at a time: both tests start every environment, and this is a small machine.
static RUNS: Mutex<()> = Mutex::new(());

/// The directory of the statically linked `agl-workloads` executables, built once per test process the
/// way the harness builds its own sample workloads.
fn sample_executables() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let triple = agl_parity::workload::host_triple();
        let request = BuildRequest {
            package: "agl-workloads",
            triple: Some(&triple),
            static_crt: true,
        };
        let runtime = agl_parity::runtime().expect("async runtime");
        runtime
            .block_on(agl_parity::cargo::build(
                &agl_parity::cargo::source_workspace(),
                &request,
            ))
            .unwrap_or_else(|e| panic!("building the sample workloads: {e}"))
    })
}

/// The team project in a temporary directory outside the workspace.
struct TeamProject {
    dir: tempfile::TempDir,
}

impl TeamProject {
    fn new() -> TeamProject {
        let mut dir = tempfile::tempdir().expect("tempdir");
        if std::env::var_os("AGL_PARITY_KEEP_TEST_DIRS").is_some() {
            dir.disable_cleanup(true);
            eprintln!("keeping the project in {}", dir.path().display());
        }
        let workspace = agl_parity::cargo::source_workspace();
        assert!(
            !dir.path().starts_with(&workspace),
            "the project must be outside the workspace {}: {}",
            workspace.display(),
            dir.path().display()
        );
        let project = TeamProject { dir };
        project.write("agl-parity.yaml", PROJECT_FILE);
        project.write("parity.yaml", PARITY);
        let dbc = std::fs::read_to_string(SAMPLE_DBC).expect("the sample DBC");
        project.write("dbc/door-lock.dbc", &dbc);
        project.write("deploy/apps/door-lock.yaml", DEPLOYMENT);
        project.write("deploy/config.yaml", CONFIG);
        project.write("features/door-lock.feature", DOOR_LOCK_FEATURE);
        project.write("features/tuerschloss.feature", GERMAN_FEATURE);
        let bin = project.path().join("bin");
        std::fs::create_dir_all(&bin).expect("mkdir bin");
        let built = sample_executables();
        for (from, to) in [("body-control", "door-lock"), ("hello-static", "preflight")] {
            std::fs::copy(built.join(from), bin.join(to))
                .unwrap_or_else(|e| panic!("copying {from} from {}: {e}", built.display()));
        }
        project
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn write(&self, rel: &str, text: &str) {
        let path = self.path().join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }

    /// `agl-parity --project <dir> run --env <envs> --no-progress --report-dir <dir>/reports`, from a
    /// working directory that is neither the project nor the workspace.
    fn run(&self, environments: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_agl-parity"))
            .arg("--project")
            .arg(self.path())
            .args([
                "run",
                "--env",
                &environments.join(","),
                "--no-progress",
                "--report-dir",
            ])
            .arg(self.path().join("reports"))
            .current_dir(std::env::temp_dir())
            .env_remove("AGL_PARITY_PROJECT")
            .env_remove("AGL_PARITY_WORKLOADS_DIR")
            .env_remove("AGL_PARITY_LAB")
            .output()
            .expect("agl-parity runs")
    }

    /// The one run directory under `reports/` and its `parity.json`.
    fn report(&self, cli: &str) -> (PathBuf, RunReport) {
        let runs: Vec<PathBuf> = std::fs::read_dir(self.path().join("reports"))
            .unwrap_or_else(|e| panic!("no reports/ in the project ({e}):\n{cli}"))
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        assert_eq!(runs.len(), 1, "one run directory: {runs:?}\n{cli}");
        let json = runs[0].join("parity.json");
        let report = agl_parity::report::read_json(&json).unwrap_or_else(|e| panic!("{e}\n{cli}"));
        assert_eq!(
            runs[0].file_name().and_then(|n| n.to_str()),
            Some(report.run_id.as_str()),
            "the run directory is named after the run id"
        );
        (runs[0].clone(), report)
    }
}

fn cli_text(out: &Output) -> String {
    format!(
        "agl-parity exited with {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn a_team_project_outside_the_workspace_passes_on_native_container_and_vm() {
    let environments = common::hostable(&ENVIRONMENTS, "the out-of-tree project test");
    assert!(
        environments.contains(&"native"),
        "the native environment is always hostable"
    );
    let project = TeamProject::new();
    let _one_run_at_a_time = RUNS.lock().unwrap_or_else(|e| e.into_inner());
    let out = project.run(&environments);
    let cli = cli_text(&out);
    eprintln!("{cli}");
    assert!(out.status.success(), "the run must pass:\n{cli}");
    let (run_dir, report) = project.report(&cli);

    assert!(report.feature_errors.is_empty(), "{:?}", report.feature_errors);
    // Columns: exactly the environments asked for, in order, each with every scenario passed.
    let columns: Vec<&str> = report.environments.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(columns, environments, "{cli}");
    for column in &report.environments {
        assert_eq!(column.unavailable, None, "{}", column.name);
        assert_eq!(
            (
                column.passed,
                column.failed,
                column.infra_errors,
                column.unsupported
            ),
            (SCENARIOS.len(), 0, 0, 0),
            "{}: passed, failed, infra-errors, unsupported\n{cli}",
            column.name
        );
    }
    // Scenarios: the outlines expanded from both Examples tables, the German feature's, each passed in
    // every column without drift.
    let names: BTreeSet<&str> = report.scenarios.iter().map(|s| s.name.as_str()).collect();
    let expected: BTreeSet<&str> = SCENARIOS.iter().map(|(n, _, _)| *n).collect();
    assert_eq!(names, expected);
    assert_eq!(report.scenarios.len(), SCENARIOS.len(), "names are distinct");
    for s in &report.scenarios {
        let outcomes: BTreeMap<&str, Outcome> = report_outcomes(s).into_iter().collect::<BTreeMap<_, _>>();
        let every_passed: BTreeMap<&str, Outcome> =
            environments.iter().map(|e| (*e, Outcome::Passed)).collect();
        assert_eq!(outcomes, every_passed, "{}: {:?}", s.name, s.drift);
        assert_eq!(s.verdict, Verdict::Pass, "{}: {:?}", s.name, s.drift);
        assert!(s.drift.is_empty(), "{}: {:?}", s.name, s.drift);
        let fast = SCENARIOS.iter().any(|(n, f, _)| *n == s.name && *f);
        assert_eq!(
            s.tags.iter().any(|t| t.trim_start_matches('@') == "fast"),
            fast,
            "{}: the @fast tag of its Examples table, and only there: {:?}",
            s.name,
            s.tags
        );
        assert!(
            s.tags.iter().any(|t| t.trim_start_matches('@') == "door-lock"),
            "{}: the feature's tag: {:?}",
            s.name,
            s.tags
        );
        let feature = if s.name.contains("Verriegeln") || s.name.contains("verriegeln") {
            "features/tuerschloss.feature"
        } else {
            "features/door-lock.feature"
        };
        assert_eq!(
            s.id.feature, feature,
            "{}: ids are relative to the project",
            s.name
        );
    }
    let german: Vec<&str> = report
        .scenarios
        .iter()
        .filter(|s| s.id.feature.ends_with("tuerschloss.feature"))
        .map(|s| s.feature_name.as_str())
        .collect();
    assert_eq!(german, vec!["Türverriegelung"; 2], "the German feature's name");

    // Records: one per scenario and environment, on the parity.yaml's default bus, with both replicas of
    // the Deployment and nothing restarted.
    assert_eq!(report.runs.len(), SCENARIOS.len() * environments.len());
    let mut absent_replicas: Vec<String> = Vec::new();
    let received_frames = regex::Regex::new(r#""rx_frames":[1-9]"#).expect("regex");
    for r in &report.runs {
        assert_eq!(
            r.outcome,
            Outcome::Passed,
            "{} in {}: {:?}",
            r.name,
            r.env,
            r.message
        );
        let buses: Vec<&str> = r.buses.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(buses, vec!["body"], "{} in {}", r.name, r.env);
        assert!(
            r.buses[0].drops.is_empty(),
            "{} in {}: {:?}",
            r.name,
            r.env,
            r.buses[0].drops
        );
        let mut pods: Vec<(&str, &str, u32)> = r
            .workloads
            .iter()
            .map(|w| (w.pod.as_str(), w.container.as_str(), w.restarts))
            .collect();
        pods.sort();
        assert_eq!(
            pods,
            vec![("door-lock-0", "bcm", 0), ("door-lock-1", "bcm", 0)],
            "{} in {}: two replicas, the init container done before them",
            r.name,
            r.env
        );
        // Both replicas were on the bus while the scenario ran: each one's log shows that it joined with
        // the ConfigMap's settings and handled the scenario's request (a replica that joins late, or
        // never, would not have). Checked last, below, so that every other check has run.
        let event = SCENARIOS
            .iter()
            .find(|(n, _, _)| *n == r.name)
            .and_then(|(_, _, e)| *e);
        for w in &r.workloads {
            let log = run_dir.join(
                w.log_file
                    .as_deref()
                    .unwrap_or_else(|| panic!("{} in {}: no log of {}", r.name, r.env, w.pod)),
            );
            let text = std::fs::read_to_string(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
            let joined = text.contains(r#""event":"ready""#) && text.contains(r#""heartbeat_ms":100"#);
            // A replica that received the request while on the bus was there, even when the scenario
            // ended (on the other replica's answer) before this one logged its own.
            let received = received_frames.is_match(&text);
            let missing = match event {
                _ if !joined => Some(r#""event":"ready" with "heartbeat_ms":100"#),
                Some(event) if !text.contains(event) && !received => Some(event),
                _ => None,
            };
            if let Some(missing) = missing {
                absent_replicas.push(format!(
                    "{} in {}: replica {} was not on the bus while the scenario ran ({missing} missing \
                     from {}):\n{text}",
                    r.name,
                    r.env,
                    w.pod,
                    log.display()
                ));
            }
        }
    }

    // The init container ran to completion before each replica, in every environment, with the
    // ConfigMap's environment: its log holds hello-static's report.
    let logs = files_under(&run_dir.join("logs"));
    let preflight_logs: Vec<String> = logs
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .filter(|text| text.contains("argv0: preflight"))
        .collect();
    assert_eq!(
        preflight_logs.len(),
        2 * SCENARIOS.len() * environments.len(),
        "one preflight log per replica, scenario and environment; logs: {logs:?}"
    );
    for text in &preflight_logs {
        assert!(
            text.contains("hello from stdout")
                && text.contains("args: [\"door-lock-preflight\"]")
                && text.contains("env: AUTOLOCK_KMH=30")
                && text.contains("env: HEARTBEAT_MS=100")
                && text.contains("# harness: exited: exit code 0"),
            "{text}"
        );
    }

    // The Namespace and the Service were accepted and listed as not deployed; the ConfigMap feeds the
    // workload, and the Deployment is the one workload.
    // File names are relative to the project, as a team reads them.
    assert_eq!(
        report.manifests.not_deployed,
        vec![
            "Namespace team-body (deploy/config.yaml#1)".to_string(),
            "Service door-lock (deploy/config.yaml#3)".to_string(),
        ]
    );
    let workloads: Vec<(&str, &str)> = report
        .manifests
        .workloads
        .iter()
        .map(|w| (w.name.as_str(), w.kind.as_str()))
        .collect();
    assert_eq!(workloads, vec![("door-lock", "Deployment")]);

    assert!(
        absent_replicas.is_empty(),
        "{} of {} replica runs were not on the bus during their scenario (see the Status section at the \
         top of this file):\n{}",
        absent_replicas.len(),
        2 * report.runs.len(),
        absent_replicas.join("\n")
    );
}

/// The outcome per column of one scenario.
fn report_outcomes(s: &agl_parity::parity::ScenarioParity) -> Vec<(&str, Outcome)> {
    s.outcomes.iter().map(|(e, o)| (e.as_str(), *o)).collect()
}

#[test]
fn a_field_outside_the_kubernetes_schema_is_named_and_the_other_scenarios_still_run() {
    let project = TeamProject::new();
    let broken = DEPLOYMENT.replace(
        "      dnsPolicy: ClusterFirst\n",
        "      dnsPolicy: ClusterFirst\n      dnsPolcy: ClusterFirst\n",
    );
    assert_ne!(broken, DEPLOYMENT);
    project.write("deploy/apps/door-lock.yaml", &broken);
    project.write("deploy/apps/spare-bcm.yaml", SPARE_POD);
    project.write("features/spare.feature", SPARE_FEATURE);
    let _one_run_at_a_time = RUNS.lock().unwrap_or_else(|e| e.into_inner());
    let out = project.run(&["native"]);
    let cli = cli_text(&out);
    eprintln!("{cli}");
    assert_eq!(
        out.status.code(),
        Some(1),
        "failed scenarios, not a usage error:\n{cli}"
    );
    let (_, report) = project.report(&cli);

    let file = project.path().join("deploy/apps/door-lock.yaml");
    let named = format!("{}: document 1: spec.template.spec.dnsPolcy", file.display());
    assert_eq!(report.scenarios.len(), SCENARIOS.len() + 1, "{cli}");
    for s in &report.scenarios {
        let r = report
            .runs
            .iter()
            .find(|r| r.id == s.id)
            .unwrap_or_else(|| panic!("no record of {}", s.name));
        if s.name == "The spare controller answers a lock request" {
            assert_eq!(r.outcome, Outcome::Passed, "{:?}", r.message);
            assert_eq!(s.verdict, Verdict::Pass);
        } else {
            assert_eq!(r.outcome, Outcome::InfraError, "{}: {:?}", s.name, r.message);
            let message = r.message.as_deref().unwrap_or_default();
            assert!(
                message.contains(&named) && message.contains("unknown field `dnsPolcy`"),
                "{}: the error names file, document and field path: {message}",
                s.name
            );
        }
    }
    let native = &report.environments[0];
    assert_eq!(
        (native.passed, native.failed, native.infra_errors),
        (1, 0, SCENARIOS.len()),
        "{cli}"
    );
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        all.contains("spec.template.spec.dnsPolcy"),
        "the CLI's output names the field:\n{cli}"
    );
}

/// The `harness = false` test target a team adds to its own crate (README, "Your own project").
const TEAM_CARGO_TOML: &str = r#"[package]
name = "team-door-lock"
version = "0.1.0"
edition = "2021"
publish = false

[dev-dependencies]
agl-parity = { path = "HARNESS" }

[[test]]
name = "parity"
harness = false

[workspace]

# The same debug settings as this workspace (the team's choice in real life): with them the team's build
# reuses the harness artifacts already in the target directory instead of building a second copy.
[profile.dev]
debug = "line-tables-only"

[profile.dev.package."*"]
debug = false
"#;

const TEAM_TEST_TARGET: &str = r#"fn main() -> std::process::ExitCode {
    agl_parity::suite::main(env!("CARGO_MANIFEST_DIR").as_ref())
}
"#;

/// The target directory this test was built into (`<target>/debug/deps/out_of_tree-…`): the team crate's
/// build reuses the harness's artifacts from it instead of building everything again.
fn own_target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    exe.ancestors()
        .nth(3)
        .expect("<target>/debug/deps/exe")
        .to_path_buf()
}

#[test]
fn the_team_crate_runs_the_parity_suite_from_its_own_cargo_test() {
    let project = TeamProject::new();
    project.write(
        "Cargo.toml",
        &TEAM_CARGO_TOML.replace("HARNESS", env!("CARGO_MANIFEST_DIR")),
    );
    project.write("src/lib.rs", "//! The team's ECU code.\n");
    project.write("tests/parity.rs", TEAM_TEST_TARGET);
    // The workspace's lock file pins the same dependency versions, so the harness is not rebuilt.
    let lock =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.lock")).expect("Cargo.lock");
    project.write("Cargo.lock", &lock);
    let _one_run_at_a_time = RUNS.lock().unwrap_or_else(|e| e.into_inner());
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let run = |libtest_args: &[&str]| {
        // Bounded: a cargo that waits on a lock forever fails the test instead of hanging CI.
        let out = Command::new("timeout")
            .arg("1200")
            .arg(&cargo)
            .args(["test", "--quiet", "--test", "parity", "--"])
            .args(libtest_args)
            .current_dir(project.path())
            .env("CARGO_TARGET_DIR", own_target_dir())
            .env("AGL_PARITY_ENVS", "native")
            .env("AGL_PARITY_REQUIRE", "native")
            .env_remove("AGL_PARITY_PROJECT")
            .env_remove("AGL_PARITY_WORKLOADS_DIR")
            .env_remove("AGL_PARITY_LAB")
            .output()
            .expect("cargo runs");
        let text = cli_text(&out);
        eprintln!("{text}");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            text,
        )
    };
    // `cargo test --test parity -- --list` lists the team's scenarios, libtest style.
    let (ok, stdout, text) = run(&["--list"]);
    assert!(ok, "{text}");
    for (name, _, _) in SCENARIOS {
        assert!(
            stdout.contains(&format!("{name}: test")),
            "{name} not listed:\n{stdout}"
        );
    }
    // `cargo test --test parity -- "answered with result"` runs the four outline rows, and only them.
    let (ok, stdout, text) = run(&["answered with result", "--nocapture"]);
    assert!(ok, "{text}");
    assert!(
        stdout.lines().any(|l| l.trim() == "4 passed, 0 failed"),
        "the suite's closing line:\n{stdout}"
    );
    let reports: Vec<PathBuf> = std::fs::read_dir(project.path().join("reports"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert_eq!(
        reports.len(),
        1,
        "the run (not the listing) wrote its report in the team's reports/: {reports:?}"
    );
}
