//! The AGL environment-parity harness.
//!
//! It runs the same orchestrated CAN workloads (Kubernetes manifests, static binaries) in several
//! environments, drives them with Gherkin scenarios, records the CAN traffic and compares the behaviour.
//!
//! | module | job |
//! |---|---|
//! | [`project`] | the project file `agl-parity.yaml`: where scenarios, manifests, DBC, reports and workloads are |
//! | [`manifest`] | Kubernetes objects (k8s-openapi) into the workload model, and the table of field classes |
//! | [`fixtures`] | the project's manifests by pod name and its DBC databases |
//! | [`workload`] | workload sources: from a manifest image to an executable or a container image |
//! | [`cargo`] | building cargo packages (workloads, pod-init, VMM) at run time |
//! | [`helpers`] | the harness's own helpers (pod-init, agl-vmm): override, installed, or built from source |
//! | [`error`] | [`error::InfraError`]: what an environment, the supervisor or the bus report as an infra-error |
//! | [`env`] | the [`env::Environment`] trait and the environments (native, ...) |
//! | [`supervisor`] | restart policy, stop, kill, restart of one container, for every environment |
//! | [`readiness`] | readiness probes (process, CAN heartbeat, exec), init-container completion, new replicas on the bus |
//! | [`probes`] | startup and liveness exec probes with the kubelet's semantics |
//! | [`volumes`] | configMap/secret/emptyDir volumes as host files for the environments that mount them |
//! | [`logs`] | captured workload output |
//! | [`bus`] | a scenario's bus: embedded hub, recorder tape, injector |
//! | [`features`] | `.feature` discovery, outline expansion, environment tags |
//! | [`steps`] | the step library |
//! | [`world`] | the cucumber World: one scenario in one environment |
//! | [`runner`] | one cucumber pass per environment, the run journal |
//! | [`parity`] | cross-environment comparison and verdicts |
//! | [`record`] | what is recorded per scenario and environment |
//! | [`footprint`] | memory and CPU an environment spends beside each workload, from `/proc` |
//! | [`report`] | JUnit, JSON, Markdown, HTML and terminal reports |
//! | [`config`] | the parity configuration (`scenarios/parity.yaml`) |
//! | [`interrupt`] | graceful interruption of a run |
//! | [`cleanup`] | run registration and sweeping up after killed runs |
//! | [`doctor`] | what this machine can host |
//! | [`lab`] | bench-lab inventories (boards, ssh, CAN wiring, capabilities) and the simulated lab |
//! | [`ssh`] | the system ssh/scp client for boards, bounded and classified |
//! | [`merge`] | merging parity reports of different machines |
//! | [`progress`] | progress bars and per-scenario lines |
//! | [`init`] | `agl-parity init`: a starter project |
//! | [`suite`] | the scenario suite as a `harness = false` test target of any crate |

pub mod bridges;
pub mod bus;
pub mod cargo;
pub mod cleanup;
pub mod config;
pub mod doctor;
pub mod env;
pub mod error;
pub mod exec;
pub mod features;
pub mod fixtures;
pub mod footprint;
pub mod helpers;
pub mod init;
pub mod interrupt;
pub mod lab;
pub mod logs;
pub mod manifest;
pub mod merge;
pub mod parity;
pub mod probes;
pub mod progress;
pub mod project;
pub mod readiness;
pub mod record;
pub mod reference;
pub mod replay;
pub mod report;
pub mod runner;
pub mod ssh;
pub mod steps;
pub mod suite;
pub mod supervisor;
pub mod volumes;
pub mod workload;
pub mod world;

use std::path::PathBuf;

/// The async runtime the CLI, the scenario test target and the benchmarks use: two workers, enough for the
/// harness on the small machines it targets (workloads are separate processes).
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
}

/// Environment variable naming the project directory (the one holding `agl-parity.yaml` or `scenarios/`).
pub const PROJECT_ENV: &str = "AGL_PARITY_PROJECT";

/// The project directory: `AGL_PARITY_PROJECT`, else the current directory when it is a project (it holds
/// `agl-parity.yaml` or `scenarios/`), else the workspace this binary was built from when that is one, else
/// the current directory.
pub fn default_project_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(PROJECT_ENV) {
        return PathBuf::from(dir);
    }
    let current = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    if project::is_project(&current) {
        return current;
    }
    let built_from = cargo::source_workspace();
    if project::is_project(&built_from) {
        return built_from;
    }
    current
}
