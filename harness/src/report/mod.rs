//! Reports of a run, written to `reports/<run-id>/`:
//!
//! * `junit.xml`: one testcase per scenario × environment (environment as a property), plus a `parity`
//!   suite with one testcase per scenario verdict;
//! * `parity.json`: the whole [`RunReport`], including every record; what `parity merge` reads back. Its
//!   format is versioned (`schema_version`, [`crate::parity::SCHEMA_VERSION`]) and described by the JSON
//!   Schema `reports/schema/parity-v1.schema.json` (draft 2020-12; `tests/report_schema.rs` checks real runs
//!   against it), which changes with every field added to the report;
//! * `summary.md` and `summary.html`: the scenario × environment matrix, drifts, failures, timing tables and
//!   plots (the HTML is self-contained, with inline SVG);
//! * `cucumber-<env>.json`: Cucumber JSON per environment ([`cucumber`]), for cucumber-html-reporter,
//!   Jenkins, Allure, Xray;
//! * `traces/<env>/*.log` (candump) and `logs/<env>/…` are written during the run.
//!
//! [`terminal`] renders the matrix for the end of a run on the terminal; [`lava`] the same results as LAVA
//! test-shell signals instead (`run --format lava`, for AGL's LAVA lab).

mod common;
pub mod cucumber;
pub mod html;
pub mod junit;
pub mod lava;
pub mod markdown;
pub mod terminal;

use std::path::{Path, PathBuf};

use crate::parity::RunReport;

pub use common::env_columns;

/// Files written for a run.
#[derive(Debug, Clone)]
pub struct ReportFiles {
    pub junit: PathBuf,
    pub json: PathBuf,
    pub markdown: PathBuf,
    pub html: PathBuf,
}

/// Writes every report file into `dir`.
pub fn write_all(report: &RunReport, dir: &Path) -> std::io::Result<ReportFiles> {
    std::fs::create_dir_all(dir)?;
    let files = ReportFiles {
        junit: dir.join("junit.xml"),
        json: dir.join("parity.json"),
        markdown: dir.join("summary.md"),
        html: dir.join("summary.html"),
    };
    let json = serde_json::to_string_pretty(report).map_err(std::io::Error::other)?;
    std::fs::write(&files.json, json)?;
    std::fs::write(
        &files.junit,
        junit::render(report).map_err(std::io::Error::other)?,
    )?;
    std::fs::write(&files.markdown, markdown::render(report))?;
    std::fs::write(&files.html, html::render(report))?;
    for env in &report.environments {
        let doc = cucumber::render(report, &env.name);
        let text = serde_json::to_string_pretty(&doc).map_err(std::io::Error::other)?;
        std::fs::write(dir.join(cucumber_file(&env.name)), text)?;
    }
    Ok(files)
}

/// The Cucumber JSON file of an environment: `cucumber-<env>.json` (`board:rpi4` → `cucumber-board-rpi4.json`).
pub fn cucumber_file(env: &str) -> String {
    format!("cucumber-{}.json", crate::record::env_dir(env))
}

/// Reads a `parity.json` back.
pub fn read_json(path: &Path) -> Result<RunReport, ReadReportError> {
    let text = std::fs::read_to_string(path).map_err(|e| ReadReportError::Read {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    serde_json::from_str(&text).map_err(|e| ReadReportError::Json {
        path: path.to_path_buf(),
        line: e.line(),
        column: e.column(),
        reason: e.to_string(),
    })
}

/// Why a `parity.json` cannot be read back.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReadReportError {
    #[error("{}: {reason}", .path.display())]
    Read {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("{}: line {line} column {column}: {reason}", .path.display())]
    Json {
        path: std::path::PathBuf,
        line: usize,
        column: usize,
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::config::ParityConfig;
    use crate::parity::{self, EnvSummary};
    use crate::record::{BusRun, Metric, Outcome, ScenarioId, ScenarioRun};

    fn run(env: &str, line: usize, repeat: u32, outcome: Outcome, samples: &[f64]) -> ScenarioRun {
        let mut signals = BTreeMap::new();
        signals.insert(
            "HvacStatus.FanLevel".to_string(),
            vec![(0.0, 0.0), (50.0, 3.0), (200.0, 3.0)],
        );
        let mut signal_ids = BTreeMap::new();
        signal_ids.insert("HvacStatus".to_string(), "3A0".to_string());
        ScenarioRun {
            id: ScenarioId {
                feature: "scenarios/hvac.feature".into(),
                line,
            },
            feature_name: "HVAC".into(),
            name: format!("scenario {line}"),
            tags: vec![],
            env: env.into(),
            transport: "t".into(),
            outcome,
            message: (outcome != Outcome::Passed).then(|| format!("hvac.feature:{line}: late")),
            started_at: String::new(),
            duration_ms: 100.0,
            steps: vec![],
            metrics: vec![Metric {
                samples: samples.to_vec(),
                ..Metric::new("period HvacStatus", samples[samples.len() / 2], "ms")
            }],
            buses: vec![BusRun {
                name: "vehicle".into(),
                signals,
                signal_ids,
                ..BusRun::default()
            }],
            workloads: vec![],
            repeat,
        }
    }

    fn report() -> RunReport {
        let fast = [98.0, 99.0, 100.0, 101.0, 102.0];
        let slow = [118.0, 119.0, 120.0, 121.0, 122.0];
        let mut runs = Vec::new();
        for k in 0..3 {
            // Line 7 is flaky in native; line 9 drifts (a 20% slower heartbeat in vm).
            let flaky = if k == 1 { Outcome::Failed } else { Outcome::Passed };
            runs.push(run("native", 7, k, flaky, &fast));
            runs.push(run("vm", 7, k, Outcome::Passed, &fast));
            runs.push(run("native", 9, k, Outcome::Passed, &fast));
            runs.push(run("vm", 9, k, Outcome::Passed, &slow));
        }
        let config = ParityConfig {
            timing_tolerance: 0.1,
            ..ParityConfig::default()
        };
        let environments = ["native", "vm"]
            .iter()
            .map(|e| {
                let mut summary = EnvSummary {
                    name: e.to_string(),
                    ..EnvSummary::default()
                };
                let of_env: Vec<ScenarioRun> = runs.iter().filter(|r| r.env == *e).cloned().collect();
                parity::count_outcomes(&mut summary, &of_env);
                summary
            })
            .collect();
        RunReport {
            schema_version: parity::SCHEMA_VERSION,
            run_id: "r".into(),
            started_at: String::new(),
            duration_ms: 1.0,
            host: "h".into(),
            environments,
            scenarios: parity::compare(&runs, &config),
            feature_errors: vec![],
            runs,
            manifests: Default::default(),
            timing_test: parity::timing_test_name(&config),
            seed: None,
        }
    }

    #[test]
    fn repeats_flaky_and_spread_are_rendered_in_every_format() {
        let r = report();
        assert_eq!(r.totals(), (0, 1), "the drift fails, the flaky one is apart");
        assert_eq!(r.flaky(), 1);
        assert!(!r.all_passed());
        assert_eq!((r.environments[0].passed, r.environments[0].flaky), (1, 1));

        let term = terminal::render(&r, false);
        assert!(term.contains("FLAKY"), "{term}");
        assert!(
            term.contains("flaky: native: 2 of 3 repeats passed; repeat 2 fail"),
            "{term}"
        );
        assert!(
            term.contains("1 passed, 0 failed, 0 infra-errors, 1 flaky"),
            "{term}"
        );
        assert!(term.contains("0 passed, 1 failed, 1 flaky"), "{term}");
        assert!(term.contains("timing test: IQR overlap, tolerance 10%"), "{term}");
        assert!(
            term.contains("period HvacStatus 120.0 ms (IQR 119.0..121.0"),
            "{term}"
        );

        let md = markdown::render(&r);
        assert!(md.contains("| flaky |"), "{md}");
        assert!(md.contains("timing test: IQR overlap, tolerance 10%"), "{md}");
        assert!(md.contains("100.0 ms (IQR 99.0..101.0, p10..p90"), "{md}");
        assert!(md.contains("- flaky: native: 2 of 3 repeats passed"), "{md}");

        let xml = junit::render(&r).unwrap();
        assert!(xml.contains("<flakyFailure"), "{xml}");
        assert!(xml.contains("repeat 2: native: hvac.feature:7: late"), "{xml}");
        assert!(xml.contains("name=\"verdict\" value=\"flaky\""), "{xml}");
        // In the native suite the flaky testcase passed, with its failing repeat as a flakyFailure.
        let native = &xml[xml.find("<testsuite name=\"native\"").unwrap()..];
        let native = &native[..native.find("</testsuite>").unwrap()];
        assert_eq!(native.matches("<flakyFailure").count(), 1, "{native}");
        assert!(native.contains("repeat 2: hvac.feature:7: late"), "{native}");
        assert!(!native.contains("<failure"), "{native}");

        let html = html::render(&r);
        assert!(html.contains("<td class=\"flaky\">flaky</td>"));
        assert!(html.contains("period HvacStatus <span class=\"drift\">drift</span>"));
        assert!(html.contains("Signals over time (1 signals)"));
        assert!(html.contains("HvacStatus.FanLevel (0x3A0)"));
        assert!(!html.contains("<script"), "self-contained, no scripts");
    }
}
