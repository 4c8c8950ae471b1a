//! Kubernetes semantics that need an environment's help, in every environment this machine hosts: init
//! containers run to completion before the app container, a ConfigMap mounted as files, and the pod's
//! `securityContext.runAsUser/runAsGroup`. Where an environment applies the setting, the workload sees it;
//! where it does not, the run report says "not enforced" for that field and environment — never silence.
//!
//! The init containers are the `hello-static` test program (`hello 0 FILE` prints FILE and exits 0): one
//! prints `/proc/self/status` (its user), one the mounted ConfigMap file. Their logs are read from the
//! report directory.

mod common;

use std::path::{Path, PathBuf};

use agl_parity::env;
use agl_parity::record::Outcome;
use common::{record, TestProject};

const MANIFEST: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata: { name: tuning }
data: { tuning.conf: "gain=7" }
---
apiVersion: v1
kind: Pod
metadata:
  name: secured
  annotations: { parity.agl.io/can-buses: vehicle, parity.agl.io/ready-frame: "0x3A0" }
spec:
  restartPolicy: Always
  terminationGracePeriodSeconds: 2
  securityContext: { runAsUser: 4242, runAsGroup: 4343 }
  volumes: [{ name: tuning, configMap: { name: tuning } }]
  initContainers:
    - { name: who, image: agl/hello-static:1, args: [hello, "0", /proc/self/status] }
    - name: cfg
      image: agl/hello-static:1
      args: [hello, "0", /etc/tuning/tuning.conf]
      volumeMounts: [{ name: tuning, mountPath: /etc/tuning }]
  containers:
    - name: hvac
      image: agl/hvac-controller:1.2
"#;

/// The environments to check: every one whose probe passes; a required one that cannot run fails the test.
fn environments() -> Vec<&'static str> {
    let required = std::env::var("AGL_PARITY_REQUIRE").unwrap_or_default();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut out = Vec::new();
    for kind in env::registry() {
        if !["native", "container", "vm"].contains(&kind.name) {
            continue;
        }
        match rt.block_on((kind.probe)()) {
            Ok(_) => out.push(kind.name),
            Err(why) => {
                if required.split(',').any(|r| r == kind.name || r == "all") {
                    panic!("environment `{}` is required but unavailable: {why}", kind.name);
                }
                eprintln!("!!!!!!!! SKIPPED `{}`: {why}", kind.name);
            }
        }
    }
    out
}

fn find_log(dir: &Path, env: &str, container: &str) -> Option<PathBuf> {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).ok()?.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p
                .file_name()
                .is_some_and(|n| n == format!("{container}.log").as_str())
                && p.components().any(|c| c.as_os_str() == env)
            {
                return Some(p);
            }
        }
    }
    None
}

#[test]
fn init_containers_volumes_and_users_are_applied_or_reported_not_enforced() {
    let envs = environments();
    let p = TestProject::new();
    p.write("fixtures/manifests/secured.yaml", MANIFEST);
    p.write(
        "scenarios/secured.feature",
        "Feature: s\n  Scenario: secured pod\n    Given the \"secured\" workload is running\n    Then within 1 s \"HvacStatus\" is seen\n",
    );
    let mut options = p.options();
    options.environments = envs.iter().map(|e| e.to_string()).collect();
    options.ready_timeout = std::time::Duration::from_secs(20);
    let out = p.run_with(options);
    let table = &out
        .report
        .manifests
        .workloads
        .iter()
        .find(|w| w.name == "secured")
        .expect("the workload's field table is in the report")
        .fields;
    let fate = |path: &str, env: &str| {
        let field = table
            .iter()
            .find(|f| f.path == path)
            .unwrap_or_else(|| panic!("{path} not in the table"));
        let e = out
            .report
            .environments
            .iter()
            .find(|e| e.name == env)
            .expect("column");
        field.fate(&e.enforces).label()
    };
    for env in &envs {
        let r = out
            .report
            .runs
            .iter()
            .find(|r| r.env == *env && r.name == "secured pod")
            .unwrap_or_else(|| panic!("no run in {env}"));
        assert_eq!(r.outcome, Outcome::Passed, "{env}: {:?}", r.message);
        let log = |c: &str| {
            std::fs::read_to_string(
                find_log(&out.report_dir, env, c).unwrap_or_else(|| panic!("{env}: no {c}.log")),
            )
            .expect("log")
        };
        // Both init containers ran to completion before the app container (the pod became ready).
        let (who, cfg) = (log("who"), log("cfg"));
        assert!(who.contains("exited: exit code 0"), "{env}: {who}");
        let volumes = fate("spec.initContainers[].volumeMounts[].mountPath", env);
        let users = fate("spec.securityContext.runAsUser", env);
        match *env {
            "container" => {
                assert_eq!((volumes, users), ("honoured", "honoured"));
                assert!(cfg.contains("file: gain=7"), "{cfg}");
                assert!(
                    who.lines().any(|l| l.contains("Uid:") && l.contains("4242")),
                    "{who}"
                );
                assert!(
                    who.lines().any(|l| l.contains("Gid:") && l.contains("4343")),
                    "{who}"
                );
            }
            "vm" => {
                assert_eq!((volumes, users), ("honoured", "not enforced"));
                assert!(cfg.contains("file: gain=7"), "{cfg}");
            }
            _ => {
                assert_eq!((volumes, users), ("not enforced", "not enforced"));
                assert!(cfg.contains("file: error"), "native mounts nothing: {cfg}");
            }
        }
    }
    // The pod's own init order is honoured everywhere.
    assert_eq!(fate("spec.initContainers[].name", envs[0]), "honoured");
    let _ = record(&out, "secured pod");
}
