//! The error every environment, the supervisor, the bus and the workload catalog report when the
//! infrastructure (not the workload under test) fails: it becomes an *infra-error* verdict, never a test
//! failure. It lives at the bottom of the crate so that every layer can return it without importing the
//! environments.

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
    /// A pod the scenario names is not in the project's manifests, or its manifest cannot be loaded.
    #[error("{0}")]
    Manifest(String),
    /// A DBC file of the project could not be loaded, so a signal step cannot be encoded.
    #[error("{0}")]
    Dbc(String),
    /// A readiness frame is configured for a pod that joins no bus.
    #[error("`{workload}`: readiness frame needs a bus")]
    ReadinessWithoutBus { workload: String },
    /// The supervisor of an instance stopped while someone waited on it.
    #[error("supervisor ended")]
    SupervisorEnded,
    /// A signal could not be delivered to a workload process.
    #[error("cannot signal pid {pid}: {reason}")]
    Signal { pid: i32, reason: String },
    /// The control channel to `pod-init` inside a container failed.
    #[error("pod-init: {0}")]
    PodInit(String),
    /// The run was interrupted (Ctrl-C) before or while the step ran.
    #[error("run interrupted")]
    Interrupted,
    /// This environment cannot run the workload as the project provides it (a container image on a host
    /// environment, a dynamically linked executable in the vm): the scenario is *unsupported here*, not an
    /// infra-error.
    #[error("`{workload}`: {reason}")]
    Unsupported { workload: String, reason: String },
}

fn tail_suffix(tail: &str) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!("; last log lines:\n{tail}")
    }
}
