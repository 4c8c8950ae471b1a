//! What the report renderers ([`super::html`], [`super::markdown`], [`super::terminal`]) share about a run.

use crate::parity::{RunReport, ScenarioParity};
use crate::record::ScenarioRun;

/// Environment columns of a report, in run order.
pub fn env_columns(report: &RunReport) -> Vec<String> {
    report.environments.iter().map(|e| e.name.clone()).collect()
}

/// One field of one workload, with its fate in every column (the "manifest fields" table of the reports).
pub struct FieldRow<'a> {
    pub path: &'a str,
    pub note: &'a str,
    /// The field's fate per column, in column order.
    pub fates: Vec<crate::manifest::Fate>,
}

/// Every workload's field table: (workload heading, rows).
pub fn field_tables(report: &RunReport) -> Vec<(String, Vec<FieldRow<'_>>)> {
    report
        .manifests
        .workloads
        .iter()
        .map(|w| {
            let rows = w
                .fields
                .iter()
                .map(|f| FieldRow {
                    path: &f.path,
                    note: &f.note,
                    fates: report.environments.iter().map(|e| f.fate(&e.enforces)).collect(),
                })
                .collect();
            (format!("{} `{}` ({})", w.kind, w.name, w.source), rows)
        })
        .collect()
}

/// The records of scenario `s` whose message a report shows, with a repeat label (`repeat 3`, empty without
/// repeats): with repeats, the first message per environment and outcome stands for the others.
pub fn shown_messages<'a>(
    s: &ScenarioParity,
    runs: impl IntoIterator<Item = &'a ScenarioRun>,
) -> Vec<(&'a ScenarioRun, &'a str, String)> {
    let mut shown = std::collections::BTreeSet::new();
    runs.into_iter()
        .filter(|r| r.id == s.id)
        .filter_map(|r| r.message.as_deref().map(|m| (r, m)))
        .filter(|(r, _)| shown.insert((r.env.clone(), r.outcome)))
        .map(|(r, m)| {
            let repeat = if s.repeats > 1 {
                format!("repeat {}", r.repeat + 1)
            } else {
                String::new()
            };
            (r, m, repeat)
        })
        .collect()
}

/// What the hub did to scenario `s`'s buses, one line per environment, bus and fault (the first repeat of
/// each environment stands for the others: the same seed applies the same fault in every repeat), and the
/// bitrate of buses that had one.
pub fn fault_lines<'a>(s: &ScenarioParity, runs: impl IntoIterator<Item = &'a ScenarioRun>) -> Vec<String> {
    let mut out = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for r in runs.into_iter().filter(|r| r.id == s.id) {
        if !seen.insert(r.env.clone()) {
            continue;
        }
        for b in &r.buses {
            if let Some(t) = &b.timing {
                out.push(format!("{}: bus {} at {t}", r.env, b.name));
            }
            for bridge in &b.bridges {
                for line in bridge.lines() {
                    out.push(format!("{}: bus {}: bridge node {line}", r.env, b.name));
                }
            }
            for f in &b.faults {
                out.push(format!(
                    "{}: bus {}: {} — matched {}, affected {}",
                    r.env, b.name, f.description, f.matched, f.affected
                ));
            }
        }
    }
    out
}
