//! The parity engine: compare each scenario across environments and give it one verdict.
//!
//! For a scenario that ran in several environments:
//! * **outcome**: the same pass/fail/infra-error everywhere;
//! * **frames**: per bus and CAN id, the same sequence of distinct payloads (volatile signals masked, see
//!   [`crate::config`]); how many times a heartbeat repeated is not compared, what it said is;
//! * **timing**: measured periods within the configured relative tolerance of each other. Response times
//!   and step durations are reported side by side but do not by themselves make a drift;
//! * **lifecycle**: each container's automatic restarts (the restart policy's, whoever applies it: the
//!   harness's supervisor or an orchestrator) the same everywhere; a different last exit is a note.
//!
//! Verdict: `infra-error` if any environment could not run it, else `fail` if any failed, else
//! `parity-drift` if frames or periods differ, else `pass`.
//!
//! What a recording contributes to the comparison (the masked, per-id sequences) is prepared by
//! [`normalise`] when the scenario is recorded; this module compares and judges.

pub mod normalise;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::config::ParityConfig;
use crate::features::FeatureFileError;
use crate::record::{Outcome, ScenarioId, ScenarioRun};

/// The verdict of one scenario across all environments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Pass,
    Fail,
    InfraError,
    ParityDrift,
    /// No environment of the run could run it (unmet `@needs:`): reported, not counted as passed.
    Unsupported,
}

impl Verdict {
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::InfraError => "infra-error",
            Verdict::ParityDrift => "parity-drift",
            Verdict::Unsupported => "unsupported here",
        }
    }
}

/// One difference between environments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Drift {
    /// `outcome`, `frames` or `timing`.
    pub kind: String,
    pub detail: String,
}

/// A timing figure side by side across environments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimingRow {
    pub metric: String,
    pub unit: String,
    pub values: BTreeMap<String, f64>,
    /// (max - min) / min.
    pub relative_spread: f64,
}

/// One scenario across environments.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScenarioParity {
    pub id: ScenarioId,
    pub feature_name: String,
    pub name: String,
    pub tags: Vec<String>,
    pub verdict: Verdict,
    /// Outcome per environment where the scenario ran.
    pub outcomes: BTreeMap<String, Outcome>,
    pub drift: Vec<Drift>,
    /// Differences that do not make a drift (one environment's sequence continues another's).
    #[serde(default)]
    pub notes: Vec<Drift>,
    pub timing: Vec<TimingRow>,
}

/// Compares the runs of every scenario.
pub fn compare(runs: &[ScenarioRun], config: &ParityConfig) -> Vec<ScenarioParity> {
    let mut by_scenario: BTreeMap<&ScenarioId, Vec<&ScenarioRun>> = BTreeMap::new();
    for run in runs {
        by_scenario.entry(&run.id).or_default().push(run);
    }
    by_scenario
        .into_iter()
        .map(|(id, runs)| compare_one(id, &runs, config))
        .collect()
}

fn compare_one(id: &ScenarioId, all_runs: &[&ScenarioRun], config: &ParityConfig) -> ScenarioParity {
    // Environments where the scenario is unsupported show it, but take no part in the comparison.
    let runs: Vec<&ScenarioRun> = all_runs
        .iter()
        .copied()
        .filter(|r| r.outcome != Outcome::Unsupported)
        .collect();
    if runs.is_empty() {
        let first = all_runs[0];
        return ScenarioParity {
            id: id.clone(),
            feature_name: first.feature_name.clone(),
            name: first.name.clone(),
            tags: first.tags.clone(),
            verdict: Verdict::Unsupported,
            outcomes: all_runs.iter().map(|r| (r.env.clone(), r.outcome)).collect(),
            drift: Vec::new(),
            notes: Vec::new(),
            timing: Vec::new(),
        };
    }
    let runs = &runs[..];
    let outcomes: BTreeMap<String, Outcome> = runs.iter().map(|r| (r.env.clone(), r.outcome)).collect();
    let mut drift = Vec::new();
    let distinct: BTreeSet<Outcome> = outcomes.values().copied().collect();
    if distinct.len() > 1 {
        let detail = outcomes
            .iter()
            .map(|(e, o)| format!("{e}: {}", outcome_label(*o)))
            .collect::<Vec<_>>()
            .join(", ");
        drift.push(Drift {
            kind: "outcome".into(),
            detail,
        });
    }
    let all_passed = runs.iter().all(|r| r.outcome == Outcome::Passed);
    let mut notes = Vec::new();
    if all_passed && runs.len() > 1 {
        let (tails, real): (Vec<Drift>, Vec<Drift>) = frame_drift(runs)
            .into_iter()
            .partition(|d| d.kind == "frames-tail");
        drift.extend(real);
        notes = tails;
    }
    if runs.len() > 1 {
        let (lifecycle_drift, lifecycle_notes) = lifecycle_drift(runs);
        if all_passed {
            drift.extend(lifecycle_drift);
        } else {
            notes.extend(lifecycle_drift);
        }
        notes.extend(lifecycle_notes);
    }
    let timing = timing_rows(runs);
    // How long a restart policy took differs by who applies it (the harness's back-off, an orchestrator's
    // own): shown as a note, compared like the other figures but not a drift by itself.
    for row in timing.iter().filter(|r| r.metric.starts_with("restart ")) {
        if runs.len() > 1 && row.relative_spread > config.timing_tolerance {
            notes.push(Drift {
                kind: "lifecycle-timing".into(),
                detail: format!("{}: {}", row.metric, fmt_values(&row.values, &row.unit)),
            });
        }
    }
    if all_passed && runs.len() > 1 {
        for row in &timing {
            if row.metric.starts_with("period ") && row.relative_spread > config.timing_tolerance {
                drift.push(Drift {
                    kind: "timing".into(),
                    detail: format!(
                        "{}: {} (spread {:.0}% > {:.0}%)",
                        row.metric,
                        fmt_values(&row.values, &row.unit),
                        row.relative_spread * 100.0,
                        config.timing_tolerance * 100.0
                    ),
                });
            }
        }
    }
    let verdict = if runs.iter().any(|r| r.outcome == Outcome::InfraError) {
        Verdict::InfraError
    } else if runs.iter().any(|r| r.outcome == Outcome::Failed) {
        Verdict::Fail
    } else if !drift.is_empty() {
        Verdict::ParityDrift
    } else {
        Verdict::Pass
    };
    let first = runs[0];
    let mut outcomes = outcomes;
    for r in all_runs.iter().filter(|r| r.outcome == Outcome::Unsupported) {
        outcomes.insert(r.env.clone(), r.outcome);
    }
    ScenarioParity {
        id: id.clone(),
        feature_name: first.feature_name.clone(),
        name: first.name.clone(),
        tags: first.tags.clone(),
        verdict,
        outcomes,
        drift,
        notes,
        timing,
    }
}

/// The short label of an outcome.
pub fn outcome_label(o: Outcome) -> &'static str {
    match o {
        Outcome::Passed => "pass",
        Outcome::Failed => "fail",
        Outcome::InfraError => "infra-error",
        Outcome::Unsupported => "unsupported here",
    }
}

fn frame_drift(runs: &[&ScenarioRun]) -> Vec<Drift> {
    let mut out = Vec::new();
    let buses: BTreeSet<&str> = runs
        .iter()
        .flat_map(|r| r.buses.iter().map(|b| b.name.as_str()))
        .collect();
    for bus in buses {
        let per_env: Vec<(&str, BTreeMap<String, Vec<String>>)> = runs
            .iter()
            .map(|r| {
                let seqs = r
                    .buses
                    .iter()
                    .find(|b| b.name == bus)
                    .map(|b| b.sequences.clone())
                    .unwrap_or_default();
                (r.env.as_str(), seqs)
            })
            .collect();
        let ids: BTreeSet<&String> = per_env.iter().flat_map(|(_, s)| s.keys()).collect();
        for id in ids {
            let empty = Vec::new();
            let (base_env, base) = (per_env[0].0, per_env[0].1.get(id).unwrap_or(&empty));
            for (env, seqs) in &per_env[1..] {
                let other = seqs.get(id).unwrap_or(&empty);
                if other == base {
                    continue;
                }
                // One environment merely went on a little longer within its observation window (the
                // scenario ends with its last step, periodic frames catch up a period later): a note.
                let tail_only = base.starts_with(other) || other.starts_with(base);
                let (kind, sep) = if tail_only {
                    ("frames-tail", "then")
                } else {
                    ("frames", "≠")
                };
                out.push(Drift {
                    kind: kind.into(),
                    detail: format!(
                        "bus {bus}, id 0x{id}: {base_env} {} {sep} {env} {}",
                        fmt_seq(base),
                        fmt_seq(other)
                    ),
                });
            }
        }
    }
    out
}

/// Restart counts (drift) and last exits (notes) of each container that differ between environments.
fn lifecycle_drift(runs: &[&ScenarioRun]) -> (Vec<Drift>, Vec<Drift>) {
    let mut restarts: BTreeMap<String, BTreeMap<&str, u32>> = BTreeMap::new();
    let mut exits: BTreeMap<String, BTreeMap<&str, String>> = BTreeMap::new();
    for run in runs {
        for w in &run.workloads {
            let key = format!("{}/{}", w.pod, w.container);
            *restarts
                .entry(key.clone())
                .or_default()
                .entry(run.env.as_str())
                .or_default() += w.restarts;
            exits.entry(key).or_default().insert(
                run.env.as_str(),
                w.last_exit.clone().unwrap_or_else(|| "none".into()),
            );
        }
    }
    let show = |values: &BTreeMap<&str, String>| {
        values
            .iter()
            .map(|(env, v)| format!("{env} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut drift = Vec::new();
    for (container, per_env) in &restarts {
        let distinct: BTreeSet<u32> = per_env.values().copied().collect();
        if distinct.len() > 1 {
            let values = per_env.iter().map(|(e, n)| (*e, n.to_string())).collect();
            drift.push(Drift {
                kind: "lifecycle".into(),
                detail: format!("{container} restarted by its policy: {}", show(&values)),
            });
        }
    }
    let mut notes = Vec::new();
    for (container, per_env) in &exits {
        let distinct: BTreeSet<&String> = per_env.values().collect();
        if distinct.len() > 1 {
            notes.push(Drift {
                kind: "lifecycle-exit".into(),
                detail: format!("{container} last exit: {}", show(per_env)),
            });
        }
    }
    (drift, notes)
}

fn fmt_seq(seq: &[String]) -> String {
    const SHOWN: usize = 6;
    if seq.is_empty() {
        return "[never sent]".into();
    }
    let mut s: Vec<String> = seq.iter().take(SHOWN).cloned().collect();
    if seq.len() > SHOWN {
        s.push(format!("… {} more", seq.len() - SHOWN));
    }
    format!("[{}]", s.join(", "))
}

fn timing_rows(runs: &[&ScenarioRun]) -> Vec<TimingRow> {
    let mut rows: BTreeMap<String, TimingRow> = BTreeMap::new();
    for run in runs {
        for m in &run.metrics {
            let row = rows.entry(m.name.clone()).or_insert_with(|| TimingRow {
                metric: m.name.clone(),
                unit: m.unit.clone(),
                values: BTreeMap::new(),
                relative_spread: 0.0,
            });
            row.values.insert(run.env.clone(), m.value);
        }
        let wall = rows
            .entry("scenario wall time".into())
            .or_insert_with(|| TimingRow {
                metric: "scenario wall time".into(),
                unit: "ms".into(),
                values: BTreeMap::new(),
                relative_spread: 0.0,
            });
        wall.values.insert(run.env.clone(), run.duration_ms);
    }
    for row in rows.values_mut() {
        let min = row.values.values().copied().fold(f64::INFINITY, f64::min);
        let max = row.values.values().copied().fold(f64::NEG_INFINITY, f64::max);
        row.relative_spread = if min > 0.0 && row.values.len() > 1 {
            (max - min) / min
        } else {
            0.0
        };
    }
    rows.into_values().collect()
}

fn fmt_values(values: &BTreeMap<String, f64>, unit: &str) -> String {
    values
        .iter()
        .map(|(e, v)| format!("{e} {v:.1} {unit}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Per-environment totals.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EnvSummary {
    pub name: String,
    pub transport: String,
    pub passed: usize,
    pub failed: usize,
    pub infra_errors: usize,
    /// Scenarios not run for an unmet `@needs:` (unsupported here).
    #[serde(default)]
    pub unsupported: usize,
    /// Wall time of the environment's pass (preparation included).
    pub wall_ms: f64,
    /// Why the environment could not run at all, if so.
    pub unavailable: Option<String>,
    /// Manifest settings this environment applies beyond what every environment honours.
    #[serde(default)]
    pub enforces: Vec<crate::manifest::Enforcement>,
    /// How this environment's semantics differ from the harness's supervisor (an orchestrator's own
    /// restart back-off, probes it does not run here, ...).
    #[serde(default)]
    pub notes: Vec<String>,
    /// Memory and CPU the environment spent beside each workload ([`crate::footprint`]); `None` when not
    /// sampled (remote workloads, columns run in parallel).
    #[serde(default)]
    pub footprint: Option<crate::footprint::Footprint>,
}

/// Everything a run produced; serialised as `parity.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunReport {
    pub run_id: String,
    pub started_at: String,
    pub duration_ms: f64,
    pub host: String,
    pub environments: Vec<EnvSummary>,
    pub scenarios: Vec<ScenarioParity>,
    pub feature_errors: Vec<FeatureFileErrorRecord>,
    pub runs: Vec<ScenarioRun>,
    /// The project's workloads with what each environment does with each field, and the objects no
    /// environment deploys.
    #[serde(default)]
    pub manifests: crate::manifest::ManifestSummary,
    /// The seed of the run's random faults (`--seed` reproduces them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

/// A feature file that could not be used.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FeatureFileErrorRecord {
    pub path: String,
    pub line: usize,
    pub message: String,
}

impl From<&FeatureFileError> for FeatureFileErrorRecord {
    fn from(e: &FeatureFileError) -> Self {
        FeatureFileErrorRecord {
            path: e.path.display().to_string(),
            line: e.line,
            message: e.message.clone(),
        }
    }
}

impl RunReport {
    /// Scenarios with verdict pass, and all others except the unsupported ones (feature files that did not
    /// parse count as failed).
    pub fn totals(&self) -> (usize, usize) {
        let passed = self
            .scenarios
            .iter()
            .filter(|s| s.verdict == Verdict::Pass)
            .count();
        (
            passed,
            self.scenarios.len() - passed - self.unsupported() + self.feature_errors.len(),
        )
    }

    /// Scenarios no environment of the run could run (unmet `@needs:`).
    pub fn unsupported(&self) -> usize {
        self.scenarios
            .iter()
            .filter(|s| s.verdict == Verdict::Unsupported)
            .count()
    }

    pub fn all_passed(&self) -> bool {
        self.totals().1 == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{BusRun, Metric};

    fn run(env: &str, outcome: Outcome, seq: &[&str], period: f64) -> ScenarioRun {
        let mut sequences = BTreeMap::new();
        sequences.insert("300".to_string(), seq.iter().map(|s| s.to_string()).collect());
        ScenarioRun {
            id: ScenarioId {
                feature: "scenarios/hvac.feature".into(),
                line: 7,
            },
            feature_name: "HVAC".into(),
            name: "fan".into(),
            tags: vec![],
            env: env.into(),
            transport: "t".into(),
            outcome,
            message: None,
            started_at: String::new(),
            duration_ms: 100.0,
            steps: vec![],
            metrics: vec![Metric {
                name: "period HvacStatus".into(),
                value: period,
                unit: "ms".into(),
            }],
            buses: vec![BusRun {
                name: "vehicle".into(),
                sequences,
                ..BusRun::default()
            }],
            workloads: vec![],
        }
    }

    fn with_restarts(mut r: ScenarioRun, restarts: u32, exit: &str) -> ScenarioRun {
        r.workloads = vec![crate::record::WorkloadRun {
            pod: "hvac".into(),
            container: "hvac-controller".into(),
            starts: restarts + 1,
            restarts,
            last_exit: Some(exit.into()),
            log_file: None,
        }];
        r
    }

    #[test]
    fn different_restart_counts_are_lifecycle_drift_and_exits_notes() {
        let runs = vec![
            with_restarts(
                run("native", Outcome::Passed, &["#00"], 100.0),
                1,
                "killed by signal 9",
            ),
            with_restarts(
                run("kube", Outcome::Passed, &["#00"], 100.0),
                4,
                "killed by signal 9",
            ),
        ];
        let p = compare(&runs, &ParityConfig::default());
        assert_eq!(p[0].verdict, Verdict::ParityDrift);
        assert_eq!(p[0].drift[0].kind, "lifecycle");
        assert!(p[0].drift[0]
            .detail
            .contains("hvac/hvac-controller restarted by its policy: kube 4, native 1"));
        let runs = vec![
            with_restarts(
                run("native", Outcome::Passed, &["#00"], 100.0),
                1,
                "killed by signal 9",
            ),
            with_restarts(run("kube", Outcome::Passed, &["#00"], 100.0), 1, "exit code 3"),
        ];
        let p = compare(&runs, &ParityConfig::default());
        assert_eq!(p[0].verdict, Verdict::Pass);
        assert_eq!(p[0].notes[0].kind, "lifecycle-exit");
    }

    #[test]
    fn a_restart_policy_taking_longer_in_one_column_is_a_note() {
        let mut native = run("native", Outcome::Passed, &["#00"], 100.0);
        let mut kube = run("kube", Outcome::Passed, &["#00"], 100.0);
        for (r, ms) in [(&mut native, 105.0), (&mut kube, 520.0)] {
            r.metrics.push(Metric {
                name: "restart hvac by its policy".into(),
                value: ms,
                unit: "ms".into(),
            });
        }
        let p = compare(&[native, kube], &ParityConfig::default());
        assert_eq!(p[0].verdict, Verdict::Pass, "{:?}", p[0].drift);
        let note = p[0]
            .notes
            .iter()
            .find(|n| n.kind == "lifecycle-timing")
            .expect("a note");
        assert!(
            note.detail.contains("kube 520.0 ms, native 105.0 ms"),
            "{}",
            note.detail
        );
    }

    #[test]
    fn identical_runs_pass() {
        let runs = vec![
            run("native", Outcome::Passed, &["#00", "#14"], 100.0),
            run("vm", Outcome::Passed, &["#00", "#14"], 104.0),
        ];
        let p = compare(&runs, &ParityConfig::default());
        assert_eq!(p[0].verdict, Verdict::Pass);
        assert!(p[0].drift.is_empty());
        assert_eq!(
            p[0].timing
                .iter()
                .find(|t| t.metric == "period HvacStatus")
                .unwrap()
                .values
                .len(),
            2
        );
    }

    #[test]
    fn different_frames_are_drift_naming_bus_id_and_envs() {
        let runs = vec![
            run("native", Outcome::Passed, &["#00", "#14"], 100.0),
            run("vm", Outcome::Passed, &["#00", "#15"], 100.0),
        ];
        let p = &compare(&runs, &ParityConfig::default())[0];
        assert_eq!(p.verdict, Verdict::ParityDrift);
        assert_eq!(p.drift[0].kind, "frames");
        assert!(
            p.drift[0]
                .detail
                .contains("bus vehicle, id 0x300: native [#00, #14] ≠ vm [#00, #15]"),
            "{}",
            p.drift[0].detail
        );
    }

    #[test]
    fn a_sequence_that_only_continues_another_is_a_note() {
        let runs = vec![
            run("native", Outcome::Passed, &["#00", "#14"], 100.0),
            run("container", Outcome::Passed, &["#00"], 100.0),
        ];
        let p = &compare(&runs, &ParityConfig::default())[0];
        assert_eq!(p.verdict, Verdict::Pass);
        assert_eq!(p.notes[0].kind, "frames-tail");
        assert!(
            p.notes[0]
                .detail
                .contains("native [#00, #14] then container [#00]"),
            "{}",
            p.notes[0].detail
        );
    }

    #[test]
    fn period_beyond_tolerance_is_drift() {
        let runs = vec![
            run("native", Outcome::Passed, &["#00"], 100.0),
            run("vm", Outcome::Passed, &["#00"], 140.0),
        ];
        let p = &compare(&runs, &ParityConfig::default())[0];
        assert_eq!(p.verdict, Verdict::ParityDrift);
        assert_eq!(p.drift[0].kind, "timing");
    }

    #[test]
    fn failures_and_infra_errors_win() {
        let runs = vec![
            run("native", Outcome::Passed, &["#00"], 100.0),
            run("vm", Outcome::Failed, &["#01"], 100.0),
        ];
        let p = &compare(&runs, &ParityConfig::default())[0];
        assert_eq!(p.verdict, Verdict::Fail);
        assert_eq!(p.drift[0].kind, "outcome");
        let runs = vec![
            run("native", Outcome::InfraError, &[], 0.0),
            run("vm", Outcome::Failed, &[], 0.0),
        ];
        assert_eq!(
            compare(&runs, &ParityConfig::default())[0].verdict,
            Verdict::InfraError
        );
    }

    #[test]
    fn unsupported_environments_are_shown_but_not_compared() {
        let runs = vec![
            run("native", Outcome::Passed, &["#00"], 100.0),
            run("board:rpi4", Outcome::Unsupported, &[], 0.0),
        ];
        let p = &compare(&runs, &ParityConfig::default())[0];
        assert_eq!(p.verdict, Verdict::Pass);
        assert!(p.drift.is_empty(), "{:?}", p.drift);
        assert_eq!(p.outcomes.get("board:rpi4"), Some(&Outcome::Unsupported));
        let only = compare(&runs[1..], &ParityConfig::default());
        assert_eq!(only[0].verdict, Verdict::Unsupported);
        assert_eq!(only[0].verdict.label(), "unsupported here");
    }

    #[test]
    fn single_environment_is_judged_by_outcome() {
        let p = compare(
            &[run("native", Outcome::Passed, &["#00"], 100.0)],
            &ParityConfig::default(),
        );
        assert_eq!(p[0].verdict, Verdict::Pass);
    }
}
