//! What the report renderers ([`super::html`], [`super::markdown`], [`super::terminal`]) share about a run.

use crate::parity::RunReport;

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
