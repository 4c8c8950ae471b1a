//! Recorded references: one environment's records of a run, kept as the yardstick later runs are compared
//! against (`agl-parity reference save`, `run --reference`).
//!
//! A board run in the lab is the truth the laptop runs should match. [`save`] takes the records of one column
//! of a report directory (`parity.json`), renames the column `reference:<env>`, copies its candump traces
//! beside the reference file and writes `<out>/<env>.json` (or the `.json` path given). [`Reference::load`]
//! reads it back with errors naming the file, line and field; [`Reference::column_runs`] gives the records of
//! the scenarios a run selected, which the runner puts beside its own columns before [`crate::parity::compare`]:
//! the reference is then judged exactly like a column, with the same masks and tolerances.
//!
//! Scenarios are matched by feature file and line, so a reference belongs to a revision of `scenarios/`;
//! a selected scenario the reference does not hold is listed in [`Reference::missing`] and shown as a note.
//! The reference's stimulus is what drove its scenarios (their `When` steps, replayed traces, or whatever
//! else was on the board's bus): a later run re-creates it by running the same steps, or puts the recorded
//! stimulus frames themselves back on the bus with `When the reference's frames with ids … are replayed`
//! (from the reference's copy of the traces, [`crate::steps::replay`]); the workloads' responses are then
//! compared with the same masks and tolerances.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::parity::{EnvSummary, RunReport};
use crate::record::{Outcome, ScenarioId, ScenarioRun};

/// The format tag written into every reference file.
pub const FORMAT: &str = "agl-parity-reference/1";

/// A recorded reference.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reference {
    pub format: String,
    /// The column the records came from (`board:rpi4`).
    pub env: String,
    /// The run they came from, and its host.
    pub run_id: String,
    pub host: String,
    pub saved_at: String,
    /// The transport line of the source column.
    #[serde(default)]
    pub transport: String,
    /// The records, their trace files relative to the reference file's directory.
    pub runs: Vec<ScenarioRun>,
}

/// Why a reference cannot be saved or used.
#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    #[error(transparent)]
    Report(#[from] crate::report::ReadReportError),
    #[error("{report}: no records of environment `{env}` (the report has: {available})")]
    NoSuchEnv {
        report: PathBuf,
        env: String,
        available: String,
    },
    #[error("{}: {reason}", .path.display())]
    Io { path: PathBuf, reason: String },
    #[error("{}: {field}: {reason}", .path.display())]
    Field {
        path: PathBuf,
        field: String,
        reason: String,
    },
    #[error("{}: format `{found}` is not `{FORMAT}` (saved by another version of agl-parity?)", .path.display())]
    Format { path: PathBuf, found: String },
}

impl Reference {
    /// The column name the reference takes in a run: `reference:<env>`.
    pub fn column(&self) -> String {
        format!("reference:{}", self.env)
    }

    /// Reads a reference file; errors name the file and the field.
    pub fn load(path: &Path) -> Result<Reference, ReferenceError> {
        let text = std::fs::read_to_string(path).map_err(|e| ReferenceError::Io {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let de = &mut serde_json::Deserializer::from_str(&text);
        let reference: Reference = serde_path_to_error::deserialize(de).map_err(|e| {
            let inner = e.inner();
            ReferenceError::Field {
                path: path.to_path_buf(),
                field: format!("line {} column {}: {}", inner.line(), inner.column(), e.path()),
                reason: inner.to_string(),
            }
        })?;
        if reference.format != FORMAT {
            return Err(ReferenceError::Format {
                path: path.to_path_buf(),
                found: reference.format,
            });
        }
        Ok(reference)
    }

    /// The records of the `selected` scenarios as a column of a run whose report is in `report_dir`:
    /// renamed `reference:<env>`, their trace paths pointing at the reference's copies.
    pub fn column_runs(
        &self,
        reference_file: &Path,
        report_dir: &Path,
        selected: &BTreeSet<ScenarioId>,
    ) -> Vec<ScenarioRun> {
        let base = reference_file.parent().unwrap_or(Path::new("."));
        let column = self.column();
        self.runs
            .iter()
            .filter(|r| selected.contains(&r.id))
            .cloned()
            .map(|mut r| {
                r.env = column.clone();
                for b in &mut r.buses {
                    if let Some(t) = &b.trace_file {
                        let abs = absolute(&base.join(t));
                        b.trace_file = Some(relative_to(&abs, &absolute(report_dir)));
                    }
                }
                r
            })
            .collect()
    }

    /// Selected scenarios the reference has no record of.
    pub fn missing(&self, selected: &BTreeSet<ScenarioId>) -> Vec<ScenarioId> {
        let held: BTreeSet<&ScenarioId> = self.runs.iter().map(|r| &r.id).collect();
        selected.iter().filter(|id| !held.contains(id)).cloned().collect()
    }

    /// The reference column's line of the environment table.
    pub fn summary(&self, runs: &[ScenarioRun], missing: &[ScenarioId]) -> EnvSummary {
        let count = |o: Outcome| runs.iter().filter(|r| r.outcome == o).count();
        let mut notes = vec![format!(
            "recorded reference: {} of run {} on {}, saved {}",
            self.env, self.run_id, self.host, self.saved_at
        )];
        if !missing.is_empty() {
            let shown: Vec<String> = missing.iter().take(5).map(ToString::to_string).collect();
            notes.push(format!(
                "{} selected scenario(s) not in the reference: {}{}",
                missing.len(),
                shown.join(", "),
                if missing.len() > 5 { ", …" } else { "" }
            ));
        }
        EnvSummary {
            name: self.column(),
            transport: format!("recorded reference ({})", self.transport),
            passed: count(Outcome::Passed),
            failed: count(Outcome::Failed),
            infra_errors: count(Outcome::InfraError),
            unsupported: count(Outcome::Unsupported),
            notes,
            ..EnvSummary::default()
        }
    }
}

/// Saves the records of column `env` of the run in `report_dir` as a reference under `out` (a directory,
/// or a `.json` file path). Returns the file written.
pub fn save(report_dir: &Path, env: &str, out: &Path) -> Result<PathBuf, ReferenceError> {
    let report_file = report_dir.join("parity.json");
    let report: RunReport = crate::report::read_json(&report_file)?;
    let runs: Vec<ScenarioRun> = report.runs.iter().filter(|r| r.env == env).cloned().collect();
    if runs.is_empty() {
        let available: BTreeSet<&str> = report.runs.iter().map(|r| r.env.as_str()).collect();
        return Err(ReferenceError::NoSuchEnv {
            report: report_file,
            env: env.to_string(),
            available: available.into_iter().collect::<Vec<_>>().join(", "),
        });
    }
    let stem = crate::record::env_dir(env);
    let file = if out.extension().is_some_and(|e| e == "json") {
        out.to_path_buf()
    } else {
        out.join(format!("{stem}.json"))
    };
    let dir = file.parent().unwrap_or(Path::new(".")).to_path_buf();
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |e: std::io::Error| ReferenceError::Io {
            path,
            reason: e.to_string(),
        }
    };
    let traces = dir.join(format!(
        "{}.traces",
        file.file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or(stem)
    ));
    if traces.is_dir() {
        std::fs::remove_dir_all(&traces).map_err(io(&traces))?;
    }
    std::fs::create_dir_all(&traces).map_err(io(&traces))?;
    let mut saved = Vec::with_capacity(runs.len());
    for mut run in runs {
        for bus in &mut run.buses {
            let Some(t) = &bus.trace_file else { continue };
            let from = report_dir.join(t);
            let name = Path::new(t).file_name().map(PathBuf::from).unwrap_or_default();
            let to = traces.join(&name);
            bus.trace_file = match std::fs::copy(&from, &to) {
                Ok(_) => Some(relative_to(&to, &dir)),
                Err(e) => {
                    tracing::warn!(trace = %from.display(), error = %e, "trace not copied into the reference");
                    None
                }
            };
        }
        for bus in &mut run.buses {
            // The candump copy is the reference's trace; the ASC rendering of it stays with the run.
            bus.asc_file = None;
        }
        for w in &mut run.workloads {
            w.log_file = None;
        }
        saved.push(run);
    }
    let transport = saved.first().map(|r| r.transport.clone()).unwrap_or_default();
    let reference = Reference {
        format: FORMAT.into(),
        env: env.to_string(),
        run_id: report.run_id.clone(),
        host: report.host.clone(),
        saved_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        transport,
        runs: saved,
    };
    let json = serde_json::to_string_pretty(&reference).map_err(|e| ReferenceError::Io {
        path: file.clone(),
        reason: e.to_string(),
    })?;
    std::fs::write(&file, json).map_err(io(&file))?;
    Ok(file)
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// `path` relative to `base` (both absolute or both relative), with `..` where needed.
fn relative_to(path: &Path, base: &Path) -> String {
    let p: Vec<_> = path.components().collect();
    let b: Vec<_> = base.components().collect();
    let common = p.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut out = PathBuf::new();
    for _ in common..b.len() {
        out.push("..");
    }
    for c in &p[common..] {
        out.push(c);
    }
    out.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_climb_out_of_the_base() {
        assert_eq!(
            relative_to(
                Path::new("/p/fixtures/references/x.traces/a.log"),
                Path::new("/p/reports/r1")
            ),
            "../../fixtures/references/x.traces/a.log"
        );
        assert_eq!(relative_to(Path::new("/p/a/b"), Path::new("/p/a")), "b");
    }

    #[test]
    fn a_bad_reference_names_its_file_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.json");
        std::fs::write(&p, r#"{"format": "agl-parity-reference/1", "env": 3}"#).unwrap();
        let e = Reference::load(&p).unwrap_err().to_string();
        assert!(e.contains("r.json") && e.contains("env"), "{e}");
        std::fs::write(
            &p,
            r#"{"format": "other/9", "env": "x", "run_id": "", "host": "", "saved_at": "", "runs": []}"#,
        )
        .unwrap();
        let e = Reference::load(&p).unwrap_err().to_string();
        assert!(e.contains("other/9"), "{e}");
    }
}
