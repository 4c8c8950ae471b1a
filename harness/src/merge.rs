//! `agl-parity merge`: one parity report from reports produced on different machines (CI legs of the
//! nightly matrix, a bench-lab run).
//!
//! Each input is a run directory holding `parity.json`, or a directory searched (three levels deep) for run
//! directories, as CI artifact downloads lay them out. The records of every input are put side by side and
//! the verdicts are computed again with [`crate::parity::compare`] and the project's parity configuration, so
//! a drift between a CI leg and a board shows up exactly as it would in a single run. Scenarios are matched by
//! feature file and line, so inputs must come from the same revision of `scenarios/`.
//!
//! An environment name that occurs in more than one input is an error with [`Collision::Error`], or gets a
//! suffix (`native#2`) with [`Collision::Suffix`]. Traces and logs of every input are copied to
//! `<out>/sources/<input run id>/` and the records point there, so the merged report is self-contained.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::config::ParityConfig;
use crate::parity::{self, RunReport};

/// What to do when two inputs have an environment of the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Collision {
    /// Rename the later one `<name>#<n>`.
    Suffix,
    /// Refuse to merge.
    Error,
}

/// Why reports cannot be merged.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error("no parity.json found under {0}")]
    NoReport(PathBuf),
    #[error(transparent)]
    Read(#[from] crate::report::ReadReportError),
    #[error("environment `{env}` is in both {first} and {second} (use suffixes to keep both)")]
    Collision {
        env: String,
        first: PathBuf,
        second: PathBuf,
    },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// Run directories (holding `parity.json`) at or under `path`.
pub fn find_reports(path: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
        if dir.join("parity.json").is_file() {
            out.push(dir.to_path_buf());
            return;
        }
        if depth == 0 {
            return;
        }
        let mut subdirs: Vec<PathBuf> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        subdirs.sort();
        for d in subdirs {
            walk(&d, depth - 1, out);
        }
    }
    let mut out = Vec::new();
    if path.is_file() && path.file_name().is_some_and(|n| n == "parity.json") {
        if let Some(dir) = path.parent() {
            out.push(dir.to_path_buf());
        }
        return out;
    }
    walk(path, 3, &mut out);
    out
}

/// Merges the reports under `inputs` into `out` (report files written there) and returns the merged report.
pub fn merge(
    inputs: &[PathBuf],
    out: &Path,
    config: &ParityConfig,
    collision: Collision,
) -> Result<RunReport, MergeError> {
    let mut dirs = Vec::new();
    for input in inputs {
        let found = find_reports(input);
        if found.is_empty() {
            return Err(MergeError::NoReport(input.clone()));
        }
        dirs.extend(found);
    }
    let mut merged = RunReport {
        schema_version: crate::parity::SCHEMA_VERSION,
        run_id: out
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_else(|| "merged".into()),
        started_at: String::new(),
        duration_ms: 0.0,
        host: String::new(),
        environments: Vec::new(),
        scenarios: Vec::new(),
        feature_errors: Vec::new(),
        runs: Vec::new(),
        manifests: Default::default(),
        seed: None,
        timing_test: parity::timing_test_name(config),
    };
    let mut owners: Vec<(String, PathBuf)> = Vec::new();
    let mut labels: BTreeSet<String> = BTreeSet::new();
    let mut hosts: Vec<String> = Vec::new();
    let mut errors_seen: BTreeSet<(String, usize, String)> = BTreeSet::new();
    std::fs::create_dir_all(out).map_err(|source| MergeError::Write {
        path: out.to_path_buf(),
        source,
    })?;
    for dir in &dirs {
        let mut report = crate::report::read_json(&dir.join("parity.json")).map_err(MergeError::Read)?;
        let mut label = if report.run_id.is_empty() {
            "run".to_string()
        } else {
            report.run_id.clone()
        };
        let mut n = 2;
        while labels.contains(&label) {
            label = format!("{}-{n}", report.run_id);
            n += 1;
        }
        labels.insert(label.clone());
        // Environment names: unique across inputs.
        for env in &mut report.environments {
            let original = env.name.clone();
            if let Some((_, first)) = owners.iter().find(|(name, _)| *name == original) {
                if collision == Collision::Error {
                    return Err(MergeError::Collision {
                        env: original,
                        first: first.clone(),
                        second: dir.clone(),
                    });
                }
                let mut k = 2;
                while owners.iter().any(|(name, _)| *name == format!("{original}#{k}")) {
                    k += 1;
                }
                env.name = format!("{original}#{k}");
                for r in report.runs.iter_mut().filter(|r| r.env == original) {
                    r.env = env.name.clone();
                }
            }
            owners.push((env.name.clone(), dir.clone()));
        }
        // Artifacts: copied under sources/<label>/, records re-pointed.
        let prefix = format!("sources/{label}");
        for sub in ["traces", "logs"] {
            let from = dir.join(sub);
            if from.is_dir() {
                copy_tree(&from, &out.join(&prefix).join(sub)).map_err(|source| MergeError::Write {
                    path: out.join(&prefix),
                    source,
                })?;
            }
        }
        for r in &mut report.runs {
            for b in &mut r.buses {
                if let Some(t) = &b.trace_file {
                    b.trace_file = Some(format!("{prefix}/{t}"));
                }
                if let Some(t) = &b.asc_file {
                    b.asc_file = Some(format!("{prefix}/{t}"));
                }
            }
            for w in &mut r.workloads {
                if let Some(l) = &w.log_file {
                    w.log_file = Some(format!("{prefix}/{l}"));
                }
            }
        }
        if !report.started_at.is_empty()
            && (merged.started_at.is_empty() || report.started_at < merged.started_at)
        {
            merged.started_at = report.started_at.clone();
        }
        merged.duration_ms = merged.duration_ms.max(report.duration_ms);
        hosts.push(format!("{} (run {})", report.host, report.run_id));
        for e in report.feature_errors {
            if errors_seen.insert((e.path.clone(), e.line, e.message.clone())) {
                merged.feature_errors.push(e);
            }
        }
        if merged.manifests.workloads.is_empty() {
            merged.manifests = report.manifests;
        }
        merged.environments.extend(report.environments);
        merged.runs.extend(report.runs);
    }
    merged.host = format!("merged: {}", hosts.join("; "));
    merged
        .runs
        .sort_by(|a, b| (&a.id, &a.env, a.repeat).cmp(&(&b.id, &b.env, b.repeat)));
    merged.scenarios = parity::compare(&merged.runs, config);
    crate::report::write_all(&merged, out).map_err(|source| MergeError::Write {
        path: out.to_path_buf(),
        source,
    })?;
    Ok(merged)
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parity::{EnvSummary, Verdict};
    use crate::record::{BusRun, Outcome, ScenarioId, ScenarioRun};
    use std::collections::BTreeMap;

    fn run(env: &str, seq: &[&str], outcome: Outcome) -> ScenarioRun {
        let mut sequences = BTreeMap::new();
        sequences.insert("3A0".to_string(), seq.iter().map(|s| s.to_string()).collect());
        ScenarioRun {
            id: ScenarioId {
                feature: "scenarios/body.feature".into(),
                line: 9,
            },
            feature_name: "Body".into(),
            name: "heartbeat".into(),
            tags: vec![],
            env: env.into(),
            transport: "t".into(),
            outcome,
            message: None,
            started_at: String::new(),
            duration_ms: 10.0,
            steps: vec![],
            metrics: vec![],
            buses: vec![BusRun {
                name: "vehicle".into(),
                sequences,
                trace_file: Some(format!("traces/{env}/x.vehicle.log")),
                ..BusRun::default()
            }],
            workloads: vec![],
            repeat: 0,
        }
    }

    fn write_report(dir: &Path, run_id: &str, runs: Vec<ScenarioRun>) {
        let envs: Vec<EnvSummary> = runs
            .iter()
            .map(|r| EnvSummary {
                name: r.env.clone(),
                passed: 1,
                ..EnvSummary::default()
            })
            .collect();
        let report = RunReport {
            schema_version: crate::parity::SCHEMA_VERSION,
            run_id: run_id.into(),
            started_at: format!("2026-11-0{}T00:00:00Z", run_id.len() % 9),
            duration_ms: 100.0,
            host: format!("host-{run_id}"),
            environments: envs,
            scenarios: parity::compare(&runs, &ParityConfig::default()),
            feature_errors: vec![],
            runs: runs.clone(),
            manifests: Default::default(),
            seed: None,
            timing_test: String::new(),
        };
        let run_dir = dir.join(run_id);
        crate::report::write_all(&report, &run_dir).unwrap();
        for r in &runs {
            let t = run_dir.join(format!("traces/{}/x.vehicle.log", r.env));
            std::fs::create_dir_all(t.parent().unwrap()).unwrap();
            std::fs::write(t, "(0.0) vehicle 3A0#01\n").unwrap();
        }
    }

    #[test]
    fn reports_of_two_machines_are_compared_side_by_side() {
        let tmp = tempfile::tempdir().unwrap();
        write_report(
            &tmp.path().join("ci/reports-native"),
            "r1",
            vec![run("native", &["#01"], Outcome::Passed)],
        );
        write_report(
            &tmp.path().join("lab"),
            "r2",
            vec![run("board:rpi4", &["#02"], Outcome::Passed)],
        );
        let out = tmp.path().join("merged");
        let merged = merge(
            &[tmp.path().join("ci"), tmp.path().join("lab/r2")],
            &out,
            &ParityConfig::default(),
            Collision::Error,
        )
        .unwrap();
        let names: Vec<&str> = merged.environments.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, vec!["native", "board:rpi4"]);
        assert_eq!(merged.scenarios.len(), 1);
        assert_eq!(
            merged.scenarios[0].verdict,
            Verdict::ParityDrift,
            "recomputed across machines"
        );
        assert!(merged.host.contains("host-r1") && merged.host.contains("host-r2"));
        for f in ["parity.json", "junit.xml", "summary.md", "summary.html"] {
            assert!(out.join(f).is_file(), "{f}");
        }
        let trace = merged.runs[0].buses[0].trace_file.clone().unwrap();
        assert!(trace.starts_with("sources/"), "{trace}");
        assert!(out.join(&trace).is_file(), "trace copied to {trace}");
        let md = std::fs::read_to_string(out.join("summary.md")).unwrap();
        assert!(md.contains("| native | board:rpi4 |"), "{md}");
    }

    #[test]
    fn same_environment_twice_gets_a_suffix_or_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        write_report(
            &tmp.path().join("a"),
            "r1",
            vec![run("native", &["#01"], Outcome::Passed)],
        );
        write_report(
            &tmp.path().join("b"),
            "r2",
            vec![run("native", &["#01"], Outcome::Passed)],
        );
        let inputs = [tmp.path().join("a"), tmp.path().join("b")];
        let err = merge(
            &inputs,
            &tmp.path().join("m1"),
            &ParityConfig::default(),
            Collision::Error,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("environment `native` is in both"),
            "{err}"
        );
        let merged = merge(
            &inputs,
            &tmp.path().join("m2"),
            &ParityConfig::default(),
            Collision::Suffix,
        )
        .unwrap();
        let names: Vec<&str> = merged.environments.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, vec!["native", "native#2"]);
        assert_eq!(merged.scenarios[0].verdict, Verdict::Pass);
        assert_eq!(merged.scenarios[0].outcomes.len(), 2);
    }

    #[test]
    fn a_directory_without_reports_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let err = merge(
            &[tmp.path().to_path_buf()],
            &tmp.path().join("m"),
            &ParityConfig::default(),
            Collision::Suffix,
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("no parity.json found under"), "{err}");
    }
}
