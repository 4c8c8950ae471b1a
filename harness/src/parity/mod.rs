//! The parity engine: compare each scenario across environments and give it one verdict.
//!
//! For a scenario that ran in several environments:
//! * **outcome**: the same pass/fail/infra-error everywhere;
//! * **frames**: per bus and CAN id, the same sequence of distinct payloads (volatile signals masked, see
//!   [`crate::config`]); how many times a heartbeat repeated is not compared, what it said is;
//! * **timing**: measured periods within the configured relative tolerance of each other, judged on their
//!   distributions (below). Response times and step durations are reported side by side but do not by
//!   themselves make a drift;
//! * **lifecycle**: each container's automatic restarts (the restart policy's, whoever applies it: the
//!   harness's supervisor or an orchestrator) the same everywhere; a different last exit is a note.
//!
//! Verdict: `infra-error` if any environment could not run it, else `fail` if any failed, else `flaky` if
//! any environment's repeats disagree, else `parity-drift` if frames or periods differ, else `pass`.
//!
//! ## Repeats and noise (`--repeat N`)
//!
//! Each environment may run a scenario several times; its repeats are first summed up per environment
//! ([`collapse`]), then environments are compared:
//! * **outcome**: all repeats alike give that outcome; some passed and some not is **flaky** (with the
//!   failing repeats' numbers and messages, [`FlakyEnv`]); none passed is `fail` (or `infra-error` if no
//!   repeat failed outright). Precedence: `infra-error` > `fail` (an environment fails in every repeat) >
//!   `flaky` > `parity-drift` > `pass`: a broken environment or workload is the first thing to fix, a flaky
//!   one makes any drift beside it doubtful, and a drift is only called between environments that behave
//!   reproducibly. An infra-error in one repeat of an otherwise passing environment is flakiness too.
//!   Recordings (frames, timing, lifecycle) are compared over the repeats that passed.
//! * **frames**: an id whose sequences an environment's repeats disagree about (other than one repeat
//!   merely continuing another) is *nondeterministic* there: listed (`vehicle 0x3A0 in native`), not
//!   compared, not a drift. Otherwise each environment contributes its most common sequence.
//! * **timing** (the test named in reports as `IQR overlap, tolerance 25%`): an environment's samples of
//!   a figure are the union over its repeats (every interval a periodic check measured; a figure without
//!   samples gives one value per repeat). A `period` drift is called between two environments only when
//!   their medians differ by more than `timing_tolerance × the smaller median` **and** their
//!   inter-quartile ranges [p25, p75], each widened by `timing_tolerance / 2 × the smaller median`, do
//!   not overlap: they differ by more than their own measured noise plus the tolerance. Why not a rank
//!   test such as Mann–Whitney: there are few repeats, scheduler noise on shared CI machines is heavy-
//!   tailed (one preempted interval of 140 ms among 100s), and the intervals of one run are not
//!   independent samples (a late frame shortens the next interval), which such a test assumes; quantiles
//!   are robust to the tail and need no independence to describe the spread. The widening is relative to
//!   the smaller median of the pair (not each environment's own) so that with one sample per environment
//!   the test is exactly the former rule: the larger exceeds the smaller by more than the tolerance.
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
    /// Some environment's repeats (`--repeat N`) disagree: passed in some, not in others.
    Flaky,
}

impl Verdict {
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::InfraError => "infra-error",
            Verdict::ParityDrift => "parity-drift",
            Verdict::Unsupported => "unsupported here",
            Verdict::Flaky => "flaky",
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
    /// Per environment: the median of its samples (its value, with one repeat and no samples).
    pub values: BTreeMap<String, f64>,
    /// (max - min) / min of the medians.
    pub relative_spread: f64,
    /// Per environment: the distribution of its samples over all its compared repeats.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub stats: BTreeMap<String, Distribution>,
}

/// The samples of one figure in one environment, with the quantiles the timing test uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Distribution {
    pub n: usize,
    pub median: f64,
    pub p10: f64,
    pub p25: f64,
    pub p75: f64,
    pub p90: f64,
    /// Sorted.
    pub samples: Vec<f64>,
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
    /// Environments whose repeats disagree about the outcome, with the repeats that did not pass.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flaky: Vec<FlakyEnv>,
    /// Ids whose frame sequence an environment's repeats disagree about (`vehicle 0x3A0 in native`):
    /// not compared, so not a drift.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nondeterministic: Vec<String>,
    /// The most repeats any environment ran.
    #[serde(default = "one")]
    pub repeats: u32,
}

fn one() -> u32 {
    1
}

/// One environment's repeats of a scenario whose outcomes differ: flaky there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlakyEnv {
    pub env: String,
    /// Repeats run.
    pub repeats: u32,
    /// Repeats that passed.
    pub passed: u32,
    /// The repeats that did not pass.
    pub failures: Vec<RepeatFailure>,
}

/// A repeat that did not pass.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RepeatFailure {
    /// 0-based, as in [`ScenarioRun::repeat`].
    pub repeat: u32,
    pub outcome: Outcome,
    pub message: Option<String>,
}

impl FlakyEnv {
    /// `native: 2 of 3 repeats passed; repeat 2 fail: …`.
    pub fn describe(&self) -> String {
        let failures: Vec<String> = self
            .failures
            .iter()
            .map(|f| {
                format!(
                    "repeat {} {}: {}",
                    f.repeat + 1,
                    outcome_label(f.outcome),
                    f.message
                        .as_deref()
                        .and_then(|m| m.lines().next())
                        .unwrap_or("no message")
                )
            })
            .collect();
        format!(
            "{}: {} of {} repeats passed; {}",
            self.env,
            self.passed,
            self.repeats,
            failures.join("; ")
        )
    }
}

/// The name of the timing test, as reports show it: `IQR overlap, tolerance 25%`.
pub fn timing_test_name(config: &ParityConfig) -> String {
    format!("{TIMING_TEST}, tolerance {:.0}%", config.timing_tolerance * 100.0)
}

/// The timing test's short name (see the module doc).
pub const TIMING_TEST: &str = "IQR overlap";

/// What the repeats of a scenario in one environment amount to: one outcome, or flaky (`None`).
///
/// All repeats the same: that outcome. Some passed and some did not: flaky. None passed: failed if any
/// failed, else infra-error (an environment that failed and also could not run some repeats is failing).
/// Unsupported repeats take no part unless all are.
pub fn collapse(outcomes: &[Outcome]) -> Option<Outcome> {
    let run: Vec<Outcome> = outcomes
        .iter()
        .copied()
        .filter(|o| *o != Outcome::Unsupported)
        .collect();
    if run.is_empty() {
        return Some(Outcome::Unsupported);
    }
    let distinct: BTreeSet<Outcome> = run.iter().copied().collect();
    if distinct.len() == 1 {
        return Some(run[0]);
    }
    if distinct.contains(&Outcome::Passed) {
        None
    } else if distinct.contains(&Outcome::Failed) {
        Some(Outcome::Failed)
    } else {
        Some(Outcome::InfraError)
    }
}

/// Counts an environment's scenarios into `summary` (passed, failed, infra-errors, flaky, unsupported):
/// each scenario once, whatever its repeats, by [`collapse`].
pub fn count_outcomes(summary: &mut EnvSummary, runs: &[ScenarioRun]) {
    let mut by_id: BTreeMap<&ScenarioId, Vec<Outcome>> = BTreeMap::new();
    for r in runs {
        by_id.entry(&r.id).or_default().push(r.outcome);
    }
    for outcomes in by_id.values() {
        match collapse(outcomes) {
            Some(Outcome::Passed) => summary.passed += 1,
            Some(Outcome::Failed) => summary.failed += 1,
            Some(Outcome::InfraError) => summary.infra_errors += 1,
            Some(Outcome::Unsupported) => summary.unsupported += 1,
            None => summary.flaky += 1,
        }
    }
}

impl ScenarioParity {
    /// Whether `env`'s repeats of this scenario disagree.
    pub fn is_flaky_in(&self, env: &str) -> bool {
        self.flaky.iter().any(|f| f.env == env)
    }
}

impl Distribution {
    /// `100.2 ms (IQR 98.1..102.3, p10..p90 97.0..104.9, n 30)`.
    pub fn describe(&self, unit: &str) -> String {
        format!(
            "{:.1} {unit} (IQR {:.1}..{:.1}, p10..p90 {:.1}..{:.1}, n {})",
            self.median, self.p25, self.p75, self.p10, self.p90, self.n
        )
    }
}

/// Compares the runs of every scenario (every environment, every repeat).
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

/// One environment's repeats of a scenario.
struct EnvRuns<'a> {
    env: &'a str,
    /// By repeat number.
    runs: Vec<&'a ScenarioRun>,
    /// [`collapse`] of their outcomes.
    outcome: Option<Outcome>,
}

impl<'a> EnvRuns<'a> {
    /// The repeats whose recordings are compared: those that passed (all, if none did).
    fn compared(&self) -> Vec<&'a ScenarioRun> {
        let passed: Vec<&ScenarioRun> = self
            .runs
            .iter()
            .copied()
            .filter(|r| r.outcome == Outcome::Passed)
            .collect();
        if passed.is_empty() {
            self.runs.clone()
        } else {
            passed
        }
    }
}

/// The runs of a scenario per environment, environments in the order they first occur.
fn by_env<'a>(runs: &[&'a ScenarioRun]) -> Vec<EnvRuns<'a>> {
    let mut out: Vec<EnvRuns<'a>> = Vec::new();
    for r in runs {
        match out.iter_mut().find(|e| e.env == r.env) {
            Some(e) => e.runs.push(r),
            None => out.push(EnvRuns {
                env: r.env.as_str(),
                runs: vec![r],
                outcome: None,
            }),
        }
    }
    for e in &mut out {
        e.runs.sort_by_key(|r| r.repeat);
        let outcomes: Vec<Outcome> = e.runs.iter().map(|r| r.outcome).collect();
        e.outcome = collapse(&outcomes);
    }
    out
}

fn compare_one(id: &ScenarioId, all_runs: &[&ScenarioRun], config: &ParityConfig) -> ScenarioParity {
    let first = all_runs[0];
    let mut parity = ScenarioParity {
        id: id.clone(),
        feature_name: first.feature_name.clone(),
        name: first.name.clone(),
        tags: first.tags.clone(),
        verdict: Verdict::Unsupported,
        outcomes: BTreeMap::new(),
        drift: Vec::new(),
        notes: Vec::new(),
        timing: Vec::new(),
        flaky: Vec::new(),
        nondeterministic: Vec::new(),
        repeats: 1,
    };
    let all_envs = by_env(all_runs);
    parity.repeats = all_envs.iter().map(|e| e.runs.len() as u32).max().unwrap_or(1);
    // Environments where the scenario is unsupported show it, but take no part in the comparison.
    let (envs, unsupported): (Vec<EnvRuns>, Vec<EnvRuns>) = all_envs
        .into_iter()
        .partition(|e| e.outcome != Some(Outcome::Unsupported));
    for e in &unsupported {
        parity.outcomes.insert(e.env.to_string(), Outcome::Unsupported);
    }
    if envs.is_empty() {
        return parity;
    }
    for e in &envs {
        // A flaky environment shows its worst repeat (fail before infra-error).
        let shown = e.outcome.unwrap_or_else(|| {
            e.runs
                .iter()
                .map(|r| r.outcome)
                .filter(|o| *o != Outcome::Passed)
                .min()
                .unwrap_or(Outcome::Failed)
        });
        parity.outcomes.insert(e.env.to_string(), shown);
        if e.outcome.is_none() {
            parity.flaky.push(FlakyEnv {
                env: e.env.to_string(),
                repeats: e.runs.len() as u32,
                passed: e.runs.iter().filter(|r| r.outcome == Outcome::Passed).count() as u32,
                failures: e
                    .runs
                    .iter()
                    .filter(|r| r.outcome != Outcome::Passed && r.outcome != Outcome::Unsupported)
                    .map(|r| RepeatFailure {
                        repeat: r.repeat,
                        outcome: r.outcome,
                        message: r.message.clone(),
                    })
                    .collect(),
            });
        }
    }
    // Outcomes compared between the environments that are not flaky.
    let settled: BTreeMap<&str, Outcome> = envs
        .iter()
        .filter_map(|e| e.outcome.map(|o| (e.env, o)))
        .collect();
    let distinct: BTreeSet<Outcome> = settled.values().copied().collect();
    if distinct.len() > 1 {
        let detail = settled
            .iter()
            .map(|(e, o)| format!("{e}: {}", outcome_label(*o)))
            .collect::<Vec<_>>()
            .join(", ");
        parity.drift.push(Drift {
            kind: "outcome".into(),
            detail,
        });
    }
    let failing = |o: Outcome| envs.iter().any(|e| e.outcome == Some(o));
    // Recordings are compared when every environment passed, at least in some repeats.
    let comparable = !failing(Outcome::Failed) && !failing(Outcome::InfraError);
    let several = envs.len() > 1;
    if comparable {
        let (frames, nondeterministic) = frame_drift(&envs);
        parity.nondeterministic = nondeterministic;
        if several {
            let (tails, real): (Vec<Drift>, Vec<Drift>) =
                frames.into_iter().partition(|d| d.kind == "frames-tail");
            parity.drift.extend(real);
            parity.notes.extend(tails);
        }
    }
    if several {
        let firsts: Vec<&ScenarioRun> = envs.iter().map(|e| e.compared()[0]).collect();
        let (lifecycle_drift, lifecycle_notes) = lifecycle_drift(&firsts);
        if comparable {
            parity.drift.extend(lifecycle_drift);
        } else {
            parity.notes.extend(lifecycle_drift);
        }
        parity.notes.extend(lifecycle_notes);
    }
    parity.timing = timing_rows(&envs);
    // How long a restart policy took differs by who applies it (the harness's back-off, an orchestrator's
    // own): shown as a note, compared like the other figures but not a drift by itself.
    for row in parity.timing.iter().filter(|r| r.metric.starts_with("restart ")) {
        if several && row.relative_spread > config.timing_tolerance {
            parity.notes.push(Drift {
                kind: "lifecycle-timing".into(),
                detail: format!("{}: {}", row.metric, fmt_values(&row.values, &row.unit)),
            });
        }
    }
    if comparable && several {
        for row in &parity.timing {
            if !row.metric.starts_with("period ") {
                continue;
            }
            if let Some(detail) = timing_drift(row, config.timing_tolerance) {
                parity.drift.push(Drift {
                    kind: "timing".into(),
                    detail,
                });
            }
        }
    }
    parity.verdict = if failing(Outcome::InfraError) {
        Verdict::InfraError
    } else if failing(Outcome::Failed) {
        Verdict::Fail
    } else if !parity.flaky.is_empty() {
        Verdict::Flaky
    } else if !parity.drift.is_empty() {
        Verdict::ParityDrift
    } else {
        Verdict::Pass
    };
    parity
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

/// A bus's per-id sequences ([`crate::record::BusRun::sequences`]).
type Sequences = BTreeMap<String, Vec<String>>;

/// Whether two sequences of one id tell the same story: equal, or one only continues the other.
fn consistent(a: &[String], b: &[String]) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// Frame drifts (and tail notes) between environments, and the ids whose sequence an environment's
/// repeats disagree about (`vehicle 0x3A0 in native`): those are listed, not compared.
fn frame_drift(envs: &[EnvRuns]) -> (Vec<Drift>, Vec<String>) {
    let mut out = Vec::new();
    let mut nondeterministic = Vec::new();
    let compared: Vec<(&str, Vec<&ScenarioRun>)> = envs.iter().map(|e| (e.env, e.compared())).collect();
    let buses: BTreeSet<&str> = compared
        .iter()
        .flat_map(|(_, runs)| runs.iter().flat_map(|r| r.buses.iter().map(|b| b.name.as_str())))
        .collect();
    let empty: Vec<String> = Vec::new();
    for bus in buses {
        // Per environment, per repeat: the bus's sequences.
        let per_env: Vec<(&str, Vec<&Sequences>)> = compared
            .iter()
            .map(|(env, runs)| {
                let seqs = runs
                    .iter()
                    .filter_map(|r| r.buses.iter().find(|b| b.name == bus).map(|b| &b.sequences))
                    .collect();
                (*env, seqs)
            })
            .collect();
        let ids: BTreeSet<&String> = per_env
            .iter()
            .flat_map(|(_, reps)| reps.iter().flat_map(|s| s.keys()))
            .collect();
        for id in ids {
            // Each environment's sequence: the one its repeats saw most often (the first on a tie).
            let mut chosen: Vec<(&str, &Vec<String>)> = Vec::new();
            let mut undecided = false;
            for (env, reps) in &per_env {
                let seqs: Vec<&Vec<String>> = reps.iter().map(|s| s.get(id).unwrap_or(&empty)).collect();
                let agree = seqs.iter().all(|s| seqs.iter().all(|t| consistent(s, t)));
                if !agree {
                    nondeterministic.push(format!("{bus} 0x{id} in {env}"));
                    undecided = true;
                    continue;
                }
                let mut common: &Vec<String> = &empty;
                let mut best = 0;
                for s in &seqs {
                    let n = seqs.iter().filter(|t| **t == *s).count();
                    if n > best {
                        (common, best) = (s, n);
                    }
                }
                chosen.push((env, common));
            }
            if undecided || chosen.len() < 2 {
                continue;
            }
            let (base_env, base) = chosen[0];
            for (env, other) in &chosen[1..] {
                if *other == base {
                    continue;
                }
                // One environment merely went on a little longer within its observation window (the
                // scenario ends with its last step, periodic frames catch up a period later): a note.
                let (kind, sep) = if consistent(base, other) {
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
    (out, nondeterministic)
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

/// Quantile `q` (0..=1) of sorted values, linearly interpolated (type 7, as R's and numpy's default).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        1 => sorted[0],
        n => {
            let h = (n - 1) as f64 * q.clamp(0.0, 1.0);
            let (lo, hi) = (h.floor() as usize, h.ceil() as usize);
            sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
        }
    }
}

impl Distribution {
    /// The distribution of `samples` (any order).
    pub fn of(mut samples: Vec<f64>) -> Distribution {
        samples.retain(|v| v.is_finite());
        samples.sort_by(f64::total_cmp);
        Distribution {
            n: samples.len(),
            median: quantile(&samples, 0.5),
            p10: quantile(&samples, 0.1),
            p25: quantile(&samples, 0.25),
            p75: quantile(&samples, 0.75),
            p90: quantile(&samples, 0.9),
            samples,
        }
    }
}

/// Every figure of the compared repeats side by side: per environment the distribution of its samples
/// (the union over its repeats; a figure without samples contributes its value per repeat).
fn timing_rows(envs: &[EnvRuns]) -> Vec<TimingRow> {
    let mut samples: BTreeMap<String, (String, BTreeMap<String, Vec<f64>>)> = BTreeMap::new();
    for e in envs {
        for run in e.compared() {
            for m in &run.metrics {
                let (_, per_env) = samples
                    .entry(m.name.clone())
                    .or_insert_with(|| (m.unit.clone(), BTreeMap::new()));
                let values = per_env.entry(e.env.to_string()).or_default();
                if m.samples.is_empty() {
                    values.push(m.value);
                } else {
                    values.extend(&m.samples);
                }
            }
            let (_, per_env) = samples
                .entry("scenario wall time".into())
                .or_insert_with(|| ("ms".into(), BTreeMap::new()));
            per_env
                .entry(e.env.to_string())
                .or_default()
                .push(run.duration_ms);
        }
    }
    samples
        .into_iter()
        .map(|(metric, (unit, per_env))| {
            let stats: BTreeMap<String, Distribution> = per_env
                .into_iter()
                .map(|(env, v)| (env, Distribution::of(v)))
                .collect();
            // With one value per environment (one repeat, a figure without samples) the median is that
            // value, as before repeats existed.
            let values: BTreeMap<String, f64> =
                stats.iter().map(|(env, d)| (env.clone(), d.median)).collect();
            let min = values.values().copied().fold(f64::INFINITY, f64::min);
            let max = values.values().copied().fold(f64::NEG_INFINITY, f64::max);
            let relative_spread = if min > 0.0 && values.len() > 1 {
                (max - min) / min
            } else {
                0.0
            };
            TimingRow {
                metric,
                unit,
                values,
                relative_spread,
                stats,
            }
        })
        .collect()
}

/// The timing test of a `period` row: the pair of environments furthest apart whose medians differ by
/// more than `tolerance × the smaller median` and whose [p25, p75] ranges, each widened by
/// `tolerance / 2 × the smaller median`, do not overlap; `None` if no pair is.
fn timing_drift(row: &TimingRow, tolerance: f64) -> Option<String> {
    let envs: Vec<(&String, &Distribution)> = row.stats.iter().filter(|(_, d)| d.n > 0).collect();
    let mut worst: Option<(f64, usize, usize)> = None;
    for i in 0..envs.len() {
        for j in i + 1..envs.len() {
            let (a, b) = (envs[i].1, envs[j].1);
            let (lo, hi) = if a.median <= b.median { (a, b) } else { (b, a) };
            let reference = lo.median.min(hi.median);
            if reference <= 0.0 {
                continue;
            }
            let widen = tolerance / 2.0 * reference;
            let medians_apart = hi.median - lo.median > tolerance * reference;
            let gap = (hi.p25 - widen) - (lo.p75 + widen);
            if medians_apart && gap > 0.0 && worst.is_none_or(|(g, _, _)| gap > g) {
                worst = Some((gap, i, j));
            }
        }
    }
    let (_, i, j) = worst?;
    let show = |(env, d): (&String, &Distribution)| {
        if d.n > 1 {
            format!(
                "{env} median {:.1} {u} (IQR {:.1}..{:.1}, n {})",
                d.median,
                d.p25,
                d.p75,
                d.n,
                u = row.unit
            )
        } else {
            format!("{env} {:.1} {}", d.median, row.unit)
        }
    };
    Some(format!(
        "{}: {} vs {}: apart by more than their spread and {:.0}% (spread {:.0}%; timing test: {TIMING_TEST}, tolerance {:.0}%)",
        row.metric,
        show(envs[i]),
        show(envs[j]),
        tolerance * 100.0,
        row.relative_spread * 100.0,
        tolerance * 100.0
    ))
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
    /// Scenarios whose repeats disagree (passed in some, not in others).
    #[serde(default)]
    pub flaky: usize,
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

/// The version of the `parity.json` format written by this build: the `schema_version` of a
/// [`RunReport`], described by `reports/schema/parity-v<N>.schema.json` (JSON Schema 2020-12).
pub const SCHEMA_VERSION: u32 = 1;

fn schema_v1() -> u32 {
    1
}

/// Everything a run produced; serialised as `parity.json` (format: [`SCHEMA_VERSION`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunReport {
    /// The `parity.json` format version ([`SCHEMA_VERSION`] when written by this build); files written
    /// before the field existed load as version 1, the format they have.
    #[serde(default = "schema_v1")]
    pub schema_version: u32,
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
    /// How timing figures were judged ([`timing_test_name`]: `IQR overlap, tolerance 25%`).
    #[serde(default)]
    pub timing_test: String,
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
    /// Scenarios with verdict pass, and all others except the unsupported and the flaky ones (feature
    /// files that did not parse count as failed).
    pub fn totals(&self) -> (usize, usize) {
        let passed = self
            .scenarios
            .iter()
            .filter(|s| s.verdict == Verdict::Pass)
            .count();
        (
            passed,
            self.scenarios.len() - passed - self.unsupported() - self.flaky() + self.feature_errors.len(),
        )
    }

    /// Scenarios with verdict flaky: counted apart from passed and failed, but not a passing run.
    pub fn flaky(&self) -> usize {
        self.scenarios
            .iter()
            .filter(|s| s.verdict == Verdict::Flaky)
            .count()
    }

    /// The most repeats of any scenario (1 without `--repeat`).
    pub fn repeats(&self) -> u32 {
        self.scenarios.iter().map(|s| s.repeats).max().unwrap_or(1)
    }

    /// Scenarios no environment of the run could run (unmet `@needs:`).
    pub fn unsupported(&self) -> usize {
        self.scenarios
            .iter()
            .filter(|s| s.verdict == Verdict::Unsupported)
            .count()
    }

    /// Nothing failed and nothing was flaky (the run's exit status).
    pub fn all_passed(&self) -> bool {
        self.totals().1 == 0 && self.flaky() == 0
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
            metrics: vec![Metric::new("period HvacStatus", period, "ms")],
            buses: vec![BusRun {
                name: "vehicle".into(),
                sequences,
                ..BusRun::default()
            }],
            workloads: vec![],
            repeat: 0,
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
            r.metrics
                .push(Metric::new("restart hvac by its policy", ms, "ms"));
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

    fn repeat(mut r: ScenarioRun, k: u32) -> ScenarioRun {
        r.repeat = k;
        r
    }

    fn with_samples(env: &str, k: u32, samples: &[f64]) -> ScenarioRun {
        let mut r = repeat(run(env, Outcome::Passed, &["#00"], 0.0), k);
        let d = Distribution::of(samples.to_vec());
        r.metrics = vec![Metric {
            samples: samples.to_vec(),
            ..Metric::new("period HvacStatus", d.median, "ms")
        }];
        r
    }

    #[test]
    fn repeats_with_different_outcomes_are_flaky_with_the_failing_repeats() {
        let mut failed = repeat(run("native", Outcome::Failed, &["#00"], 100.0), 1);
        failed.message = Some("scenarios/hvac.feature:9: HvacStatus not seen".into());
        let runs = vec![
            repeat(run("native", Outcome::Passed, &["#00"], 100.0), 0),
            failed,
            repeat(run("native", Outcome::Passed, &["#00"], 100.0), 2),
            repeat(run("vm", Outcome::Passed, &["#00"], 100.0), 0),
            repeat(run("vm", Outcome::Passed, &["#00"], 100.0), 1),
            repeat(run("vm", Outcome::Passed, &["#00"], 100.0), 2),
        ];
        let p = &compare(&runs, &ParityConfig::default())[0];
        assert_eq!(p.verdict, Verdict::Flaky);
        assert_eq!(p.verdict.label(), "flaky");
        assert_eq!(p.repeats, 3);
        assert_eq!(p.flaky.len(), 1);
        let f = &p.flaky[0];
        assert_eq!((f.env.as_str(), f.repeats, f.passed), ("native", 3, 2));
        assert_eq!(f.failures.len(), 1);
        assert_eq!(f.failures[0].repeat, 1);
        assert_eq!(f.failures[0].outcome, Outcome::Failed);
        assert!(
            f.describe()
                .contains("native: 2 of 3 repeats passed; repeat 2 fail: scenarios/hvac.feature:9"),
            "{}",
            f.describe()
        );
        // Not an outcome drift: the flaky environment is not compared by outcome.
        assert!(p.drift.iter().all(|d| d.kind != "outcome"), "{:?}", p.drift);
        let mut summary = EnvSummary::default();
        count_outcomes(&mut summary, &runs[..3]);
        assert_eq!((summary.passed, summary.failed, summary.flaky), (0, 0, 1));
        // Failing in every repeat of one environment beats flaky in another.
        let mut all_fail = runs.clone();
        for r in all_fail.iter_mut().filter(|r| r.env == "vm") {
            r.outcome = Outcome::Failed;
        }
        assert_eq!(
            compare(&all_fail, &ParityConfig::default())[0].verdict,
            Verdict::Fail
        );
    }

    #[test]
    fn noisy_but_equal_distributions_pass() {
        let native: Vec<f64> = vec![95.0, 97.0, 99.0, 100.0, 101.0, 103.0, 105.0, 140.0, 98.0, 102.0];
        let vm: Vec<f64> = vec![97.0, 99.0, 101.0, 102.0, 104.0, 106.0, 108.0, 100.0, 103.0, 105.0];
        for tolerance in [0.25, 0.1] {
            let config = ParityConfig {
                timing_tolerance: tolerance,
                ..ParityConfig::default()
            };
            let runs: Vec<ScenarioRun> = (0..3)
                .flat_map(|k| [with_samples("native", k, &native), with_samples("vm", k, &vm)])
                .collect();
            let p = &compare(&runs, &config)[0];
            assert_eq!(p.verdict, Verdict::Pass, "{tolerance}: {:?}", p.drift);
            let row = p.timing.iter().find(|t| t.metric == "period HvacStatus").unwrap();
            let d = &row.stats["native"];
            assert_eq!(d.n, 30, "the union of the repeats' samples");
            assert!(d.p25 <= d.median && d.median <= d.p75 && d.p90 >= d.p75 && d.p10 <= d.p25);
            assert!((d.median - 100.5).abs() < 1e-9, "{}", d.median);
        }
    }

    #[test]
    fn a_shifted_distribution_is_timing_drift_naming_both_medians() {
        let native: Vec<f64> = vec![97.0, 98.0, 99.0, 100.0, 100.0, 101.0, 102.0, 103.0];
        let vm: Vec<f64> = vec![117.0, 118.0, 119.0, 120.0, 120.0, 121.0, 122.0, 123.0];
        let runs: Vec<ScenarioRun> = (0..3)
            .flat_map(|k| [with_samples("native", k, &native), with_samples("vm", k, &vm)])
            .collect();
        // A 20% shift is within the default 25% tolerance by definition; at 10% it is a drift.
        assert_eq!(compare(&runs, &ParityConfig::default())[0].verdict, Verdict::Pass);
        let config = ParityConfig {
            timing_tolerance: 0.1,
            ..ParityConfig::default()
        };
        let p = &compare(&runs, &config)[0];
        assert_eq!(p.verdict, Verdict::ParityDrift);
        let d = p
            .drift
            .iter()
            .find(|d| d.kind == "timing")
            .expect("a timing drift");
        assert!(
            d.detail.contains("native median 100.0 ms") && d.detail.contains("vm median 120.0 ms"),
            "{}",
            d.detail
        );
        assert!(
            d.detail.contains("timing test: IQR overlap, tolerance 10%"),
            "{}",
            d.detail
        );
        assert_eq!(
            timing_test_name(&ParityConfig::default()),
            "IQR overlap, tolerance 25%"
        );
    }

    #[test]
    fn an_id_whose_repeats_disagree_is_nondeterministic_not_drift() {
        let runs = vec![
            repeat(run("native", Outcome::Passed, &["#00", "#14"], 100.0), 0),
            repeat(run("native", Outcome::Passed, &["#00", "#15"], 100.0), 1),
            repeat(run("vm", Outcome::Passed, &["#00", "#14"], 100.0), 0),
            repeat(run("vm", Outcome::Passed, &["#00", "#14"], 100.0), 1),
        ];
        let p = &compare(&runs, &ParityConfig::default())[0];
        assert_eq!(p.verdict, Verdict::Pass, "{:?}", p.drift);
        assert_eq!(p.nondeterministic, vec!["vehicle 0x300 in native".to_string()]);
        // Repeats that agree (one merely continuing another) still drift against another environment.
        let runs = vec![
            repeat(run("native", Outcome::Passed, &["#00", "#14"], 100.0), 0),
            repeat(run("native", Outcome::Passed, &["#00"], 100.0), 1),
            repeat(run("vm", Outcome::Passed, &["#00", "#15"], 100.0), 0),
            repeat(run("vm", Outcome::Passed, &["#00", "#15"], 100.0), 1),
        ];
        let p = &compare(&runs, &ParityConfig::default())[0];
        assert_eq!(p.verdict, Verdict::ParityDrift);
        assert!(p.nondeterministic.is_empty());
        assert!(
            p.drift[0].detail.contains("native [#00, #14] ≠ vm [#00, #15]"),
            "{}",
            p.drift[0].detail
        );
    }

    #[test]
    fn one_sample_per_environment_is_the_relative_spread_rule() {
        for (other, drift) in [(124.0, false), (126.0, true), (76.0, true), (81.0, false)] {
            let runs = vec![
                run("native", Outcome::Passed, &["#00"], 100.0),
                run("vm", Outcome::Passed, &["#00"], other),
            ];
            let p = &compare(&runs, &ParityConfig::default())[0];
            let spread = (100.0f64.max(other) - 100.0f64.min(other)) / 100.0f64.min(other);
            assert_eq!(spread > 0.25, drift, "{other}");
            assert_eq!(p.verdict == Verdict::ParityDrift, drift, "{other}: {:?}", p.drift);
            let row = p.timing.iter().find(|t| t.metric == "period HvacStatus").unwrap();
            assert_eq!(row.values["vm"], other);
            assert_eq!(row.stats["vm"].n, 1);
        }
    }
}
