//! What the report renderers ([`super::html`], [`super::markdown`], [`super::terminal`]) share about a run.

use crate::parity::RunReport;

/// Environment columns of a report, in run order.
pub fn env_columns(report: &RunReport) -> Vec<String> {
    report.environments.iter().map(|e| e.name.clone()).collect()
}
