//! LAVA test-shell results (`agl-parity run --format lava`): the lines LAVA's dispatcher picks out of a test
//! shell's output, so that a LAVA job running the suite on an AGL board records one result per test case.
//!
//! lava-dispatcher (checked against 2023.01, `lava_dispatcher/actions/test/shell.py`) matches
//! `<LAVA_SIGNAL_(\S+) ([^>]+)>` anywhere in the output, splits the parameters on whitespace and each
//! parameter on `=` (exactly one `=` each), and accepts the results `pass`, `fail`, `skip` and `unknown`; a
//! `MEASUREMENT` must parse as a decimal number. So every id, set name and unit written here is made of
//! `[a-z0-9_-]` only (no space, `=` or `>`), and measurements are plain decimals.
//!
//! What is written, per environment of the run in a test set of its own (`TESTSET START <env>`):
//!
//! * one test case per scenario × environment, `<scenario>__<env>`: `pass`; `fail` (failed, infra-error,
//!   or flaky over `--repeat N`); `skip` (unsupported here, or excluded from the environment by `@env:` /
//!   `@not-env:` tags); `unknown` (no record: the run was interrupted before it ran there);
//! * one measurement per timing figure of the scenario in that environment (`period HvacStatus`,
//!   `ready hvac` = deploy to ready, `scenario wall time` ...), `<scenario>__<env>__<figure>`, result
//!   `pass` with `MEASUREMENT` (the median over the environment's repeats) and `UNITS`; whether the figures
//!   agree across environments is the verdict's business;
//!
//! and in the test set `parity`, one test case per scenario verdict, `<scenario>__parity`: `pass`; `skip`
//! (unsupported everywhere); `unknown` (an environment it should have run in has no record); else `fail`
//! (fail, infra-error, parity drift, flaky), plus `<feature>_<line>__feature_error` (`fail`) per feature file
//! that could not be used.
//!
//! `<scenario>` is the feature path without its first directory (`scenarios/`), the line and the name,
//! lower-cased with every other character as `_`: `scenarios/hvac.feature:12 Heartbeat` →
//! `hvac_feature_12_heartbeat`. Ids are stable across runs. One longer than [`MAX_ID`] characters is cut and
//! ends in a hash of the whole id; an id that would repeat another gets the hash too. `STARTTC`/`ENDTC` are
//! not written: they mark the log lines of a test case while it runs, and these lines come after the run.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::features::runs_in;
use crate::parity::{self, RunReport, ScenarioParity, Verdict};
use crate::record::{Outcome, ScenarioId};

/// The longest id written (LAVA's web UI and database keep test case names short).
pub const MAX_ID: usize = 100;

/// A LAVA test case result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LavaResult {
    Pass,
    Fail,
    Skip,
    Unknown,
}

impl LavaResult {
    pub fn as_str(self) -> &'static str {
        match self {
            LavaResult::Pass => "pass",
            LavaResult::Fail => "fail",
            LavaResult::Skip => "skip",
            LavaResult::Unknown => "unknown",
        }
    }
}

/// The LAVA signal lines of a run, one per line.
pub fn render(report: &RunReport) -> String {
    let mut ids = Ids::default();
    let mut out = String::new();
    for env in &report.environments {
        let env_part = component(&env.name);
        let _ = writeln!(out, "<LAVA_SIGNAL_TESTSET START {env_part}>");
        for s in &report.scenarios {
            let base = scenario_part(&s.id, &s.name);
            let id = ids.unique(&[&base, &env_part]);
            test_case(&mut out, &id, env_result(report, s, &env.name), None);
            for row in &s.timing {
                let Some(value) = row.values.get(&env.name).filter(|v| v.is_finite()) else {
                    continue;
                };
                let id = ids.unique(&[&base, &env_part, &component(&row.metric)]);
                test_case(&mut out, &id, LavaResult::Pass, Some((*value, &row.unit)));
            }
        }
        out.push_str("<LAVA_SIGNAL_TESTSET STOP>\n");
    }
    out.push_str("<LAVA_SIGNAL_TESTSET START parity>\n");
    for s in &report.scenarios {
        let id = ids.unique(&[&scenario_part(&s.id, &s.name), "parity"]);
        test_case(&mut out, &id, verdict_result(report, s), None);
    }
    for e in &report.feature_errors {
        let id = ids.unique(&[&format!("{}_{}", feature_part(&e.path), e.line), "feature_error"]);
        test_case(&mut out, &id, LavaResult::Fail, None);
    }
    out.push_str("<LAVA_SIGNAL_TESTSET STOP>\n");
    out
}

fn test_case(out: &mut String, id: &str, result: LavaResult, measurement: Option<(f64, &str)>) {
    let _ = write!(
        out,
        "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID={id} RESULT={}",
        result.as_str()
    );
    if let Some((value, unit)) = measurement {
        let _ = write!(out, " MEASUREMENT={}", decimal(value));
        let unit = component(unit);
        if !unit.is_empty() {
            let _ = write!(out, " UNITS={unit}");
        }
    }
    out.push_str(">\n");
}

/// A finite value as a plain decimal (no exponent), at most three decimals, without trailing zeros.
fn decimal(value: f64) -> String {
    let text = format!("{value:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    match text {
        "" | "-" | "-0" => "0".into(),
        t => t.into(),
    }
}

/// The result of scenario `s` in environment `env`, over all its repeats there.
pub fn env_result(report: &RunReport, s: &ScenarioParity, env: &str) -> LavaResult {
    let outcomes: Vec<Outcome> = report
        .runs
        .iter()
        .filter(|r| r.id == s.id && r.env == env)
        .map(|r| r.outcome)
        .collect();
    if outcomes.is_empty() {
        return if runs_in(&s.tags, env) {
            LavaResult::Unknown
        } else {
            LavaResult::Skip
        };
    }
    match parity::collapse(&outcomes) {
        Some(Outcome::Passed) => LavaResult::Pass,
        Some(Outcome::Unsupported) => LavaResult::Skip,
        Some(Outcome::Failed | Outcome::InfraError) | None => LavaResult::Fail,
    }
}

/// The result of scenario `s`'s cross-environment verdict.
pub fn verdict_result(report: &RunReport, s: &ScenarioParity) -> LavaResult {
    let missing = report
        .environments
        .iter()
        .any(|e| runs_in(&s.tags, &e.name) && !report.runs.iter().any(|r| r.id == s.id && r.env == e.name));
    match s.verdict {
        Verdict::Unsupported => LavaResult::Skip,
        _ if missing => LavaResult::Unknown,
        Verdict::Pass => LavaResult::Pass,
        Verdict::Fail | Verdict::InfraError | Verdict::ParityDrift | Verdict::Flaky => LavaResult::Fail,
    }
}

/// `scenarios/hvac.feature:12 Heartbeat` → `hvac_feature_12_heartbeat`.
pub fn scenario_part(id: &ScenarioId, name: &str) -> String {
    component(&format!("{}_{}_{name}", feature_part(&id.feature), id.line))
}

/// A feature path without its first directory when it is relative and has one (`scenarios/`).
fn feature_part(path: &str) -> String {
    let p = std::path::Path::new(path);
    let parts: Vec<String> = p
        .components()
        .filter_map(|c| match c {
            std::path::Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect();
    let skip = usize::from(p.is_relative() && parts.len() > 1);
    component(&parts[skip..].join("_"))
}

/// Lower case `[a-z0-9-]`, every run of anything else one `_`, none at either end.
pub fn component(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() || c == '-' {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('_') {
            out.push('_');
        }
    }
    while out.ends_with('_') {
        out.pop();
    }
    out
}

/// Hands out ids joined with `__`, at most [`MAX_ID`] long, each once.
#[derive(Default)]
struct Ids {
    used: BTreeSet<String>,
    /// Per cut or repeated id, how often it was asked for (for the hash of a repeat).
    asked: BTreeMap<String, u32>,
}

impl Ids {
    fn unique(&mut self, parts: &[&str]) -> String {
        let full = parts.join("__");
        let n = self.asked.entry(full.clone()).or_insert(0);
        *n += 1;
        let mut id = full.clone();
        if id.len() > MAX_ID || self.used.contains(&id) {
            let keyed = format!("{full}#{n}");
            let hash = format!("{:08x}", fnv1a(keyed.as_bytes()));
            let keep = MAX_ID.min(full.len()).saturating_sub(hash.len() + 1);
            // Ids are ASCII, so any byte index is a char boundary.
            id = format!("{}_{hash}", full[..keep].trim_end_matches('_'));
        }
        self.used.insert(id.clone());
        id
    }
}

/// 32-bit FNV-1a: a stable hash (the same id in every run and on every machine).
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::config::ParityConfig;
    use crate::parity::{EnvSummary, FeatureFileErrorRecord};
    use crate::record::{Metric, ScenarioRun};

    fn run(env: &str, line: usize, name: &str, outcome: Outcome, repeat: u32) -> ScenarioRun {
        ScenarioRun {
            id: ScenarioId {
                feature: "scenarios/hvac.feature".into(),
                line,
            },
            feature_name: "HVAC".into(),
            name: name.into(),
            tags: vec![],
            env: env.into(),
            transport: "t".into(),
            outcome,
            message: None,
            started_at: String::new(),
            duration_ms: 250.0,
            steps: vec![],
            metrics: vec![
                Metric::new("period HvacStatus", 100.25, "ms"),
                Metric::new("ready hvac", 6.0, "ms"),
            ],
            buses: vec![],
            workloads: vec![],
            repeat,
        }
    }

    fn report(runs: Vec<ScenarioRun>, envs: &[&str]) -> RunReport {
        let scenarios = parity::compare(&runs, &ParityConfig::default());
        RunReport {
            schema_version: crate::parity::SCHEMA_VERSION,
            run_id: "r".into(),
            started_at: String::new(),
            duration_ms: 1.0,
            host: "h".into(),
            environments: envs
                .iter()
                .map(|e| EnvSummary {
                    name: e.to_string(),
                    ..EnvSummary::default()
                })
                .collect(),
            scenarios,
            feature_errors: vec![],
            runs,
            manifests: Default::default(),
            timing_test: String::new(),
            seed: None,
        }
    }

    /// (id, result, measurement, units) of every TESTCASE line, parsed the way lava-dispatcher does.
    fn cases(text: &str) -> Vec<(String, String, Option<String>, Option<String>)> {
        let signal = regex::Regex::new(r"<LAVA_SIGNAL_(\S+) ([^>]+)>").unwrap();
        let mut out = Vec::new();
        for line in text.lines() {
            let c = signal
                .captures(line)
                .unwrap_or_else(|| panic!("not a signal: {line}"));
            assert_eq!(&c[0], line, "one signal per line, nothing else");
            if &c[1] != "TESTCASE" {
                continue;
            }
            let mut kv = BTreeMap::new();
            for p in c[2].split_whitespace() {
                let parts: Vec<&str> = p.split('=').collect();
                assert_eq!(parts.len(), 2, "exactly one = in {p}");
                kv.insert(parts[0].to_lowercase(), parts[1].to_string());
            }
            let id = kv["test_case_id"].clone();
            assert!(!id.is_empty() && id.len() <= MAX_ID, "{id}");
            assert!(
                id.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-".contains(c)),
                "{id}"
            );
            out.push((
                id,
                kv["result"].clone(),
                kv.get("measurement").cloned(),
                kv.get("units").cloned(),
            ));
        }
        out
    }

    fn result_of<'a>(cases: &'a [(String, String, Option<String>, Option<String>)], id: &str) -> &'a str {
        &cases
            .iter()
            .find(|c| c.0 == id)
            .unwrap_or_else(|| panic!("no case {id}: {cases:?}"))
            .1
    }

    #[test]
    fn outcomes_verdicts_and_measurements_become_lava_test_cases() {
        let mut runs = vec![
            run("native", 12, "Heartbeat", Outcome::Passed, 0),
            run("board:rpi4", 12, "Heartbeat", Outcome::Passed, 0),
            run("native", 20, "Lock: on request!", Outcome::Passed, 0),
            run("board:rpi4", 20, "Lock: on request!", Outcome::Failed, 0),
            run("native", 30, "Needs CAN FD", Outcome::Unsupported, 0),
            run("board:rpi4", 30, "Needs CAN FD", Outcome::Unsupported, 0),
            run("native", 40, "Infra", Outcome::InfraError, 0),
            run("board:rpi4", 40, "Infra", Outcome::Passed, 0),
        ];
        let mut vm_only = run("native", 50, "Only on the board", Outcome::Passed, 0);
        vm_only.tags = vec!["env:board".into()];
        vm_only.env = "board:rpi4".into();
        runs.push(vm_only);
        // Interrupted: line 60 ran on native only.
        runs.push(run("native", 60, "Interrupted", Outcome::Passed, 0));
        let mut r = report(runs, &["native", "board:rpi4"]);
        r.feature_errors.push(FeatureFileErrorRecord {
            path: "scenarios/broken.feature".into(),
            line: 3,
            message: "bad".into(),
        });
        let text = render(&r);
        let c = cases(&text);
        assert_eq!(result_of(&c, "hvac_feature_12_heartbeat__native"), "pass");
        assert_eq!(result_of(&c, "hvac_feature_12_heartbeat__board_rpi4"), "pass");
        assert_eq!(result_of(&c, "hvac_feature_12_heartbeat__parity"), "pass");
        assert_eq!(
            result_of(&c, "hvac_feature_20_lock_on_request__board_rpi4"),
            "fail"
        );
        assert_eq!(result_of(&c, "hvac_feature_20_lock_on_request__parity"), "fail");
        assert_eq!(result_of(&c, "hvac_feature_30_needs_can_fd__native"), "skip");
        assert_eq!(result_of(&c, "hvac_feature_30_needs_can_fd__parity"), "skip");
        assert_eq!(result_of(&c, "hvac_feature_40_infra__native"), "fail");
        assert_eq!(result_of(&c, "hvac_feature_50_only_on_the_board__native"), "skip");
        assert_eq!(result_of(&c, "hvac_feature_50_only_on_the_board__parity"), "pass");
        assert_eq!(
            result_of(&c, "hvac_feature_60_interrupted__board_rpi4"),
            "unknown"
        );
        assert_eq!(result_of(&c, "hvac_feature_60_interrupted__parity"), "unknown");
        assert_eq!(result_of(&c, "broken_feature_3__feature_error"), "fail");

        let period = c
            .iter()
            .find(|c| c.0 == "hvac_feature_12_heartbeat__native__period_hvacstatus")
            .expect("period measurement");
        assert_eq!(
            (period.1.as_str(), period.2.as_deref(), period.3.as_deref()),
            ("pass", Some("100.25"), Some("ms"))
        );
        let ready = c
            .iter()
            .find(|c| c.0 == "hvac_feature_12_heartbeat__board_rpi4__ready_hvac")
            .expect("deploy-to-ready measurement");
        assert_eq!(ready.2.as_deref(), Some("6"));
        // A figure of an environment the scenario did not run in is not measured.
        assert!(!c
            .iter()
            .any(|c| c.0.starts_with("hvac_feature_60_interrupted__board_rpi4__")));

        let ids: BTreeSet<&String> = c.iter().map(|c| &c.0).collect();
        assert_eq!(ids.len(), c.len(), "every id once");
        assert!(text.starts_with("<LAVA_SIGNAL_TESTSET START native>\n"), "{text}");
        assert!(
            text.contains("<LAVA_SIGNAL_TESTSET START board_rpi4>\n"),
            "{text}"
        );
        assert!(text.contains("<LAVA_SIGNAL_TESTSET START parity>\n"), "{text}");
        assert_eq!(text.matches("<LAVA_SIGNAL_TESTSET STOP>").count(), 3);
        assert_eq!(text, render(&r), "stable");
    }

    #[test]
    fn repeats_collapse_and_flaky_is_a_failure() {
        let runs = vec![
            run("native", 7, "Flaky", Outcome::Passed, 0),
            run("native", 7, "Flaky", Outcome::Failed, 1),
            run("native", 8, "Steady", Outcome::Passed, 0),
            run("native", 8, "Steady", Outcome::Passed, 1),
        ];
        let c = cases(&render(&report(runs, &["native"])));
        assert_eq!(result_of(&c, "hvac_feature_7_flaky__native"), "fail");
        assert_eq!(result_of(&c, "hvac_feature_7_flaky__parity"), "fail");
        assert_eq!(result_of(&c, "hvac_feature_8_steady__native"), "pass");
        assert_eq!(
            c.iter()
                .filter(|c| c.0 == "hvac_feature_8_steady__native")
                .count(),
            1
        );
    }

    #[test]
    fn long_and_colliding_ids_stay_short_unique_and_stable() {
        let long = "x".repeat(300);
        let runs = vec![
            run("native", 1, &long, Outcome::Passed, 0),
            run("native", 2, "a.b", Outcome::Passed, 0),
        ];
        let mut r = report(runs, &["native"]);
        // Two scenarios whose names sanitise alike (a.b / a_b at the same line of features named alike).
        let mut twin = r.scenarios[1].clone();
        twin.name = "a_b".into();
        r.scenarios.push(twin);
        let text = render(&r);
        let c = cases(&text);
        let ids: BTreeSet<&String> = c.iter().map(|c| &c.0).collect();
        assert_eq!(ids.len(), c.len(), "{text}");
        assert!(c.iter().any(|c| c.0.len() == MAX_ID), "{text}");
        assert_eq!(text, render(&r));
        assert_eq!(component(" Board:rpi4 / ä=x>y "), "board_rpi4_x_y");
        assert_eq!(decimal(100.0), "100");
        assert_eq!(decimal(0.0001), "0");
        assert_eq!(decimal(-2.5), "-2.5");
    }
}
