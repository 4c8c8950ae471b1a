//! What a run records: one [`ScenarioRun`] per (scenario, environment), serialisable so that reports from
//! different machines can be merged and compared later.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Identity of a scenario across environments: feature file (relative to the project) and line.
/// Outline examples each have their own line.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ScenarioId {
    pub feature: String,
    pub line: usize,
}

impl ScenarioId {
    /// The id of the scenario at `line` of the feature file `feature_path`, named relative to `project_dir`
    /// (a path outside it is kept as is; a feature without a path is `<unknown>`).
    pub fn new(project_dir: &Path, feature_path: Option<&Path>, line: usize) -> ScenarioId {
        ScenarioId {
            feature: relative(project_dir, feature_path),
            line,
        }
    }
}

/// A feature path relative to the project root, as records name it.
fn relative(project_dir: &Path, path: Option<&Path>) -> String {
    match path {
        Some(p) => p.strip_prefix(project_dir).unwrap_or(p).display().to_string(),
        None => "<unknown>".into(),
    }
}

/// Directory name for an environment column (`board:rpi4` → `board-rpi4`): where its traces and logs go,
/// and the file name of a reference saved from it.
pub fn env_dir(env: &str) -> String {
    env.replace([':', '/'], "-")
}

impl std::fmt::Display for ScenarioId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.feature, self.line)
    }
}

/// Outcome of one scenario in one environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Passed,
    /// A step's expectation was not met, or the scenario itself is wrong (undefined step, bad argument).
    Failed,
    /// The environment could not run the scenario (deploy failure, workload never ready, bus error).
    InfraError,
    /// Not run: the scenario needs a capability (`@needs:<tag>`) this environment does not offer, or the
    /// environment cannot run a workload as the project provides it (a container image on a host
    /// environment, a dynamically linked executable in the vm). Shown as "unsupported here"; neither passed
    /// nor failed.
    Unsupported,
}

/// Status of one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepStatus {
    Passed,
    Failed,
    InfraError,
    /// No step definition matches the text.
    Undefined,
    /// Not run because an earlier step failed.
    Skipped,
}

/// One executed (or skipped) step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepRun {
    pub keyword: String,
    pub text: String,
    pub line: usize,
    /// Offset from the scenario start.
    pub start_ms: f64,
    pub duration_ms: f64,
    pub status: StepStatus,
}

/// A timing figure measured by a step (periods, latencies), compared across environments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    pub name: String,
    pub value: f64,
    pub unit: String,
    /// Every observation behind `value` (the intervals a periodic check measured, its median being the
    /// value): the parity engine compares distributions where there are samples.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub samples: Vec<f64>,
}

impl Metric {
    /// A figure without samples.
    pub fn new(name: impl Into<String>, value: f64, unit: impl Into<String>) -> Metric {
        Metric {
            name: name.into(),
            value,
            unit: unit.into(),
            samples: Vec::new(),
        }
    }
}

/// Drops the bus counted for one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeDrops {
    pub node: String,
    pub dropped: u64,
}

/// One bus of a scenario run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BusRun {
    pub name: String,
    pub frames: u64,
    /// candump log, relative to the report directory.
    pub trace_file: Option<String>,
    /// The same trace as Vector ASC (python-can's `ASCWriter` layout), relative to the report directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asc_file: Option<String>,
    /// Nodes that lost frames (empty when nothing was lost).
    pub drops: Vec<NodeDrops>,
    /// Per CAN id (`0x3A0`): the sequence of distinct consecutive payloads (hex), after masking the
    /// signals the parity configuration declares volatile (the parity engine's normalisation). This is
    /// what parity compares.
    pub sequences: BTreeMap<String, Vec<String>>,
    /// Per CAN id: number of frames.
    pub counts: BTreeMap<String, u64>,
    /// Why recording stopped early, if it did.
    pub recorder_failure: Option<String>,
    /// (CAN id, ms since the scenario started) of the first frames, for plots.
    pub timeline: Vec<(String, f64)>,
    /// The faults applied to the bus (steps of [`crate::steps::faults`]), with what each did.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<vcan::fault::FaultReport>,
    /// The bus's bitrate when it had one (`500 kbit/s, worst-case stuffing`); none: an ideal bus.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timing: Option<String>,
    /// Per DBC signal (`Message.Signal`): (ms since the scenario started, physical value), decoded from
    /// the observed frames, for the report's value-over-time plots. Bounded: change points are kept, and
    /// at most [`SIGNAL_POINTS`] points per signal.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub signals: BTreeMap<String, Vec<(f64, f64)>>,
    /// The CAN id (`3A0`) of each message of `signals`, so that plots can mark ids that drifted.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub signal_ids: BTreeMap<String, String>,
    /// The third-party bridges on the bus (socketcand, slcan, cannelloni: [`crate::bridges`]), each with
    /// every node it joined to the bus and what crossed it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bridges: Vec<vcan::bridge::BridgeReport>,
}

/// Points kept per signal of a [`BusRun`].
pub const SIGNAL_POINTS: usize = 500;

/// One workload of a scenario run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkloadRun {
    pub pod: String,
    pub container: String,
    pub starts: u32,
    pub restarts: u32,
    pub last_exit: Option<String>,
    /// Log file, relative to the report directory.
    pub log_file: Option<String>,
}

/// One scenario in one environment.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScenarioRun {
    pub id: ScenarioId,
    pub feature_name: String,
    pub name: String,
    pub tags: Vec<String>,
    pub env: String,
    pub transport: String,
    pub outcome: Outcome,
    /// What went wrong, with the step's place (`scenarios/hvac.feature:14`).
    pub message: Option<String>,
    pub started_at: String,
    pub duration_ms: f64,
    pub steps: Vec<StepRun>,
    pub metrics: Vec<Metric>,
    pub buses: Vec<BusRun>,
    pub workloads: Vec<WorkloadRun>,
    /// Which repetition of the scenario in its environment this is (`--repeat N`: 0..N); 0 in reports
    /// written before repeats existed.
    #[serde(default)]
    pub repeat: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_name_features_relative_to_the_project() {
        let project = Path::new("/p");
        let id = ScenarioId::new(project, Some(Path::new("/p/scenarios/hvac.feature")), 7);
        assert_eq!(id.to_string(), "scenarios/hvac.feature:7");
        let outside = ScenarioId::new(project, Some(Path::new("/q/x.feature")), 1);
        assert_eq!(outside.feature, "/q/x.feature");
        assert_eq!(ScenarioId::new(project, None, 3).feature, "<unknown>");
    }
}
