//! What every environment shares: the [`Environment`] trait, what a deployment is given
//! ([`RunContext`], [`DeployRequest`]) and hands back ([`Instance`]), the registry entry ([`EnvKind`]) and
//! the pre-flight [`Check`]. Environments (the sibling modules) and their users import these from here; the
//! registry in `env/mod.rs` sits on top of the environments.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use futures::future::BoxFuture;

use crate::bus::BusInfo;
use crate::error::InfraError;
use crate::lab::Lab;
use crate::logs::LogSink;
use crate::manifest::{ContainerSpec, Enforcement, WorkloadSpec};
use crate::probes::ProbeTask;
use crate::supervisor::{Launcher, Orchestrated, Supervisor};
use crate::workload::WorkloadCatalog;

/// What one run shares with every deployment of an environment.
#[derive(Debug, Clone)]
pub struct RunContext {
    /// Run id, also the marker every process/container of this run carries for leak sweeps.
    pub run_id: String,
    /// Scratch directory of this run (sockets, per-instance working directories).
    pub state_dir: PathBuf,
    /// Where workload binaries come from.
    pub catalog: Arc<WorkloadCatalog>,
    /// The CAN transport asked for (`--can-transport`); each environment resolves it against what it and
    /// this machine offer.
    pub can_transport: super::socketcan::CanTransport,
}

/// Everything needed to deploy one pod.
pub struct DeployRequest<'a> {
    pub workload: &'a WorkloadSpec,
    /// The scenario's buses this pod joins, in manifest order.
    pub buses: Vec<BusInfo>,
    /// Directory for this pod's logs in the report.
    pub log_dir: &'a Path,
    /// Scratch directory for this scenario.
    pub scratch_dir: &'a Path,
}

impl DeployRequest<'_> {
    /// The log of one container of the pod, in the report directory.
    pub fn container_log(&self, container: &str) -> Result<LogSink, InfraError> {
        LogSink::create(container, &self.log_dir.join(format!("{container}.log"))).map_err(|e| {
            InfraError::Launch {
                workload: self.workload.name.clone(),
                reason: format!("log file: {e}"),
            }
        })
    }

    /// (bus name, hub socket) of every bus, for environments that reach the hub through its Unix socket.
    pub fn unix_sockets(&self, env: &str) -> Result<Vec<(String, PathBuf)>, InfraError> {
        self.buses
            .iter()
            .map(|b| {
                b.unix_path
                    .clone()
                    .map(|p| (b.name.clone(), p))
                    .ok_or_else(|| InfraError::Bus {
                        bus: b.name.clone(),
                        reason: format!("the {env} environment needs the bus on a Unix socket"),
                    })
            })
            .collect()
    }
}

/// The workload's bus variables from (bus name, endpoint URI) pairs in manifest order: `CAN_BUS` for the
/// first bus and `CAN_BUS_<NAME>` for every bus.
pub fn bus_env(endpoints: &[(String, String)]) -> Vec<(String, String)> {
    let mut env = Vec::new();
    if let Some((_, first)) = endpoints.first() {
        env.push((vcan::endpoint::BUS_ENV.to_string(), first.clone()));
    }
    env.extend(
        endpoints
            .iter()
            .map(|(bus, uri)| (bus_env_name(bus), uri.clone())),
    );
    env
}

/// `CAN_BUS_<NAME>` for a bus name (upper case, `-` as `_`).
pub fn bus_env_name(bus: &str) -> String {
    format!(
        "{}_{}",
        vcan::endpoint::BUS_ENV,
        bus.to_ascii_uppercase().replace('-', "_")
    )
}

/// How CAN reaches the workload in an environment, as shown in reports.
pub type Transport = String;

/// One environment of the matrix.
#[async_trait]
pub trait Environment: Send + Sync {
    /// Column name in reports: `native`, `container`, `vm`, `board:<name>`.
    fn name(&self) -> &str;

    /// How CAN reaches the workload here (shown in reports).
    fn transport(&self) -> Transport;

    /// Whether scenarios' buses need a TCP listener (environments whose workloads cannot reach a Unix socket).
    fn needs_tcp_bus(&self) -> bool {
        false
    }

    /// The address the scenario's hub listens on for TCP (`None`: Unix socket only). Loopback unless the
    /// workloads run elsewhere (a board joins the hub at the bench side of its link).
    fn bus_listen_ip(&self) -> Option<std::net::IpAddr> {
        self.needs_tcp_bus()
            .then_some(std::net::IpAddr::from([127, 0, 0, 1]))
    }

    /// An existing bus the bench joins for scenario bus `bus` instead of starting a hub (a bench CAN adapter
    /// wired to a board, `socketcan:can0`, or a TCP bridge).
    fn bench_endpoint(&self, _bus: &str) -> Option<vcan::Endpoint> {
        None
    }

    /// Capabilities offered to `@needs:<capability>` scenarios; a scenario needing anything else is reported
    /// as unsupported here. Virtual environments simulate classic and FD CAN on the host's architecture.
    fn capabilities(&self) -> Vec<String> {
        vec![
            "can".into(),
            "can-fd".into(),
            format!("arch:{}", crate::lab::Arch::host()),
        ]
    }

    /// The manifest settings this environment applies beyond what every environment honours (see the field
    /// table of [`crate::manifest::fields`]); the others are reported as not enforced here.
    fn enforces(&self) -> Vec<Enforcement> {
        Vec::new()
    }

    /// At most this many scenarios at once (a shared physical bus allows one).
    fn max_concurrency(&self) -> Option<usize> {
        None
    }

    /// After readiness, wait until the pod's first bus has been quiet this long (at most ten times as long):
    /// a workload's start-up burst (heartbeat, state, version) may trail the readiness frame, more so where
    /// frames cross a network.
    fn ready_quiet(&self) -> Option<std::time::Duration> {
        Some(std::time::Duration::from_millis(20))
    }

    /// Whether an orchestrator runs whole pods here (init containers, replicas, restart policy, probes):
    /// then [`Environment::deploy`] is given the workload as the manifest has it, once, and returns an
    /// observed instance per app container of every replica (named by
    /// [`WorkloadSpec::replica_name`]); otherwise the harness deploys each init container and replica itself.
    fn orchestrates_pods(&self) -> bool {
        false
    }

    /// Notes on how this environment's semantics differ from the harness's supervisor (shown with the
    /// environment in reports).
    fn notes(&self) -> Vec<String> {
        Vec::new()
    }

    /// One-time preparation before the first scenario (build binaries, images, ...).
    async fn prepare(&self, run: &RunContext) -> Result<(), InfraError>;

    /// Starts every container of a pod under supervision; readiness is checked by the caller.
    async fn deploy(&self, run: &RunContext, request: DeployRequest<'_>)
        -> Result<Vec<Instance>, InfraError>;

    /// Releases whatever `prepare` set up.
    async fn finish(&self, _run: &RunContext) {}
}

impl Instance {
    /// Starts supervising one container of `pod` with the environment's launcher.
    pub fn start(
        pod: &WorkloadSpec,
        container: &ContainerSpec,
        launcher: Arc<dyn Launcher>,
        logs: LogSink,
    ) -> Instance {
        let supervisor = Supervisor::start(launcher, pod.restart_policy, logs);
        let probes = supervisor
            .control()
            .and_then(|control| ProbeTask::spawn(container, control, pod.termination_grace));
        Instance {
            pod: pod.name.clone(),
            container: container.clone(),
            supervisor,
            probes,
        }
    }

    /// Follows one container of a replica whose life an orchestrator owns (probes included).
    pub fn observed(
        replica: &str,
        container: &ContainerSpec,
        orchestrated: Arc<dyn Orchestrated>,
        logs: LogSink,
    ) -> Instance {
        Instance {
            pod: replica.to_string(),
            container: container.clone(),
            supervisor: Supervisor::observe(orchestrated, logs),
            probes: None,
        }
    }

    /// Waits until the container's startup probe (if any) has passed for its running incarnation.
    pub async fn started(&self) {
        if let Some(p) = &self.probes {
            p.started().await;
        }
    }
}

/// One supervised container of a deployed pod.
pub struct Instance {
    /// Pod name (`metadata.name`).
    pub pod: String,
    pub container: ContainerSpec,
    pub supervisor: Supervisor,
    /// Startup and liveness probes, when the container has them.
    pub probes: Option<ProbeTask>,
}

/// What a run knows beyond this machine, for kinds whose columns come from outside it (the boards of a lab
/// inventory). Kinds that need nothing of it ignore it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Setup<'a> {
    pub lab: Option<&'a Lab>,
}

/// Why a name on the command line does not stand for a column of an environment kind.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ColumnError {
    #[error("unknown environment `{0}`")]
    Unknown(String),
    #[error("environment `{0}` needs a lab inventory: --lab FILE (see fixtures/lab/README.md)")]
    NeedsLab(String),
}

/// Why this machine cannot host an environment, and how to fix it (shown by `doctor` and the test suite).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{reason}")]
pub struct ProbeFailure {
    pub reason: String,
}

impl ProbeFailure {
    pub fn new(reason: impl Into<String>) -> ProbeFailure {
        ProbeFailure {
            reason: reason.into(),
        }
    }
}

/// One line of a pre-flight report (`doctor`, `doctor --lab`): what was checked, whether it is fine, and what
/// was found or why it is missing and how to fix it.
#[derive(Debug, Clone)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

/// [`EnvKind::create`]: builds the environment of one column for a run.
pub type CreateFn =
    fn(column: &str, run: &RunContext, setup: Setup<'_>) -> Result<Arc<dyn Environment>, InfraError>;

/// Static facts about an environment kind, for `doctor`, `list`, the runner and the scenario suite. Every
/// kind, board included, is reached only through these functions.
pub struct EnvKind {
    pub name: &'static str,
    pub summary: &'static str,
    /// Checks whether this machine can host the environment; `Err` says why not and how to fix it.
    pub probe: fn() -> BoxFuture<'static, Result<String, ProbeFailure>>,
    /// The columns a name on the command line stands for (`native` is one column; `board` is every board of
    /// the lab, `board:<name>` one of them).
    pub columns: fn(requested: &str, setup: Setup<'_>) -> Result<Vec<String>, ColumnError>,
    /// Builds the environment of one column for a run.
    pub create: CreateFn,
    /// Removes this environment's own leftovers (containers, networks, remote files ...) of runs not in
    /// `live_runs`; returns a line per removed item. Host processes are swept by [`crate::cleanup`] for
    /// everyone.
    pub sweep: for<'a> fn(live_runs: Vec<String>, setup: Setup<'a>) -> BoxFuture<'a, Vec<String>>,
    /// Pre-flight checks beyond [`EnvKind::probe`] for `doctor --lab` (every board of the lab); most kinds
    /// have none.
    pub preflight: for<'a> fn(setup: Setup<'a>) -> BoxFuture<'a, Vec<Check>>,
}

impl EnvKind {
    /// Whether this kind's columns come from a lab inventory (`--lab`): without one, its own name stands for
    /// no column. The scenario suite then provides a lab (a simulated one when none is given).
    pub fn needs_lab(&self) -> bool {
        matches!(
            (self.columns)(self.name, Setup::default()),
            Err(ColumnError::NeedsLab(_))
        )
    }
}

/// [`EnvKind::columns`] of a kind that is one column of its own name.
pub fn single_column(requested: &str, _setup: Setup<'_>) -> Result<Vec<String>, ColumnError> {
    Ok(vec![requested.to_string()])
}

/// [`EnvKind::sweep`] of a kind that leaves nothing of its own behind.
pub fn sweep_nothing(_live_runs: Vec<String>, _setup: Setup<'_>) -> BoxFuture<'_, Vec<String>> {
    Box::pin(async { Vec::new() })
}

/// [`EnvKind::preflight`] of a kind whose probe says everything.
pub fn no_preflight(_setup: Setup<'_>) -> BoxFuture<'_, Vec<Check>> {
    Box::pin(async { Vec::new() })
}
