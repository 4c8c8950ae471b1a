//! Environments: where a workload runs and how CAN reaches it.
//!
//! Every environment implements [`Environment`]: deploy a pod from its manifest onto the scenario's buses,
//! and hand back one [`Instance`] per container that the step library can stop, kill, restart, probe and
//! read logs from. Restart policy and readiness are decided by the harness in the same way for every
//! environment ([`crate::supervisor`], [`crate::readiness`]), so the environments differ only in how a
//! process is started ([`crate::supervisor::Launcher`]) and how the bus endpoint is reached.
//!
//! Adding an environment means one new module here plus one line in [`registry`].

pub mod board;
pub mod container;
pub mod native;
pub mod vm;
pub mod vxcan;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use futures::future::BoxFuture;

use crate::bus::BusInfo;
use crate::logs::LogSink;
use crate::manifest::{ContainerSpec, WorkloadSpec};
use crate::supervisor::Supervisor;
use crate::workload::WorkloadCatalog;

/// Why an environment could not do its part; reported as an infra-error, not a test failure.
#[derive(Debug, Clone, thiserror::Error)]
pub enum InfraError {
    #[error("environment `{env}` is unavailable: {reason}")]
    Unavailable { env: String, reason: String },
    #[error("cannot build workload `{workload}`: {reason}")]
    Build { workload: String, reason: String },
    #[error("cannot start `{workload}`: {reason}")]
    Launch { workload: String, reason: String },
    #[error("`{workload}` exited ({status}) before becoming ready{}", tail_suffix(.log_tail))]
    ExitedBeforeReady {
        workload: String,
        status: String,
        log_tail: String,
    },
    #[error("`{workload}` did not become ready within {waited_ms} ms ({probe}){}", tail_suffix(.log_tail))]
    NeverReady {
        workload: String,
        waited_ms: u128,
        probe: String,
        log_tail: String,
    },
    #[error("bus `{bus}`: {reason}")]
    Bus { bus: String, reason: String },
    #[error("{0}")]
    Other(String),
}

fn tail_suffix(tail: &str) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!("; last log lines:\n{tail}")
    }
}

/// What one run shares with every deployment of an environment.
#[derive(Debug, Clone)]
pub struct RunContext {
    /// Run id, also the marker every process/container of this run carries for leak sweeps.
    pub run_id: String,
    /// Scratch directory of this run (sockets, per-instance working directories).
    pub state_dir: PathBuf,
    /// Where workload binaries come from.
    pub catalog: Arc<WorkloadCatalog>,
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
        launcher: Arc<dyn crate::supervisor::Launcher>,
        logs: LogSink,
    ) -> Instance {
        Instance {
            pod: pod.name.clone(),
            container: container.clone(),
            supervisor: Supervisor::start(launcher, pod.restart_policy, logs),
        }
    }
}

/// One supervised container of a deployed pod.
pub struct Instance {
    /// Pod name (`metadata.name`).
    pub pod: String,
    pub container: ContainerSpec,
    pub supervisor: Supervisor,
}

/// Static facts about an environment kind, for `doctor` and `list`.
pub struct EnvKind {
    pub name: &'static str,
    pub summary: &'static str,
    /// Checks whether this machine can host the environment; `Err` says why not and how to fix it.
    pub probe: fn() -> BoxFuture<'static, Result<String, String>>,
    /// Builds the environment for a run.
    pub create: fn(&RunContext) -> Result<Arc<dyn Environment>, InfraError>,
    /// Removes this environment's own leftovers (containers, networks, ...) of runs not in `live_runs`;
    /// returns a line per removed item. Host processes are swept by [`crate::cleanup`] for everyone.
    pub sweep: fn(live_runs: Vec<String>) -> BoxFuture<'static, Vec<String>>,
}

/// Every environment this build knows, in matrix order.
pub fn registry() -> Vec<EnvKind> {
    vec![native::kind(), container::kind(), vm::kind(), board::kind()]
}

/// Finds an environment kind by the name used on the command line (`board:<name>` is the board kind).
pub fn find_kind(name: &str) -> Option<EnvKind> {
    let kind = name.split_once(':').map_or(name, |(k, _)| k);
    registry().into_iter().find(|k| k.name == kind)
}

/// Builds the environment of column `column` for a run; board columns come from the lab inventory.
pub fn create(
    column: &str,
    run: &RunContext,
    lab: Option<&crate::lab::Lab>,
) -> Result<Arc<dyn Environment>, InfraError> {
    match (column.strip_prefix("board:"), lab) {
        (Some(board), Some(lab)) => board::create(run, lab, board),
        _ => {
            let kind = find_kind(column).ok_or_else(|| InfraError::Unavailable {
                env: column.to_string(),
                reason: "unknown environment".into(),
            })?;
            (kind.create)(run)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bus_variables() {
        assert_eq!(bus_env_name("body-1"), "CAN_BUS_BODY_1");
        let env = bus_env(&[
            ("vehicle".into(), "unix:/a".into()),
            ("body".into(), "unix:/b".into()),
        ]);
        assert_eq!(
            env,
            vec![
                ("CAN_BUS".to_string(), "unix:/a".to_string()),
                ("CAN_BUS_VEHICLE".to_string(), "unix:/a".to_string()),
                ("CAN_BUS_BODY".to_string(), "unix:/b".to_string()),
            ]
        );
        assert!(bus_env(&[]).is_empty());
    }
}
