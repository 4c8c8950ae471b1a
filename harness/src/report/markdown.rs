//! `summary.md`: the matrix, drifts, failures and timings as Markdown (readable in CI artifact viewers).

use crate::parity::{outcome_label, RunReport, Verdict};
use crate::report::common::env_columns;

/// The Markdown summary of a run.
pub fn render(report: &RunReport) -> String {
    let envs = env_columns(report);
    let (passed, failed) = report.totals();
    let unsupported = match report.unsupported() {
        0 => String::new(),
        n => format!(", {n} unsupported here"),
    };
    let mut md = format!(
        "# AGL parity run {}\n\nStarted {} on {} — {:.1} s — **{passed} passed, {failed} failed{unsupported}**\n\n",
        report.run_id,
        report.started_at,
        report.host,
        report.duration_ms / 1000.0
    );
    md.push_str("| environment | transport | passed | failed | infra-errors | unsupported here | wall time |\n|---|---|---|---|---|---|---|\n");
    for e in &report.environments {
        match &e.unavailable {
            Some(why) => md.push_str(&format!(
                "| {} | unavailable: {} | | | | | |\n",
                e.name,
                escape(why)
            )),
            None => md.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {:.1} s |\n",
                e.name,
                e.transport,
                e.passed,
                e.failed,
                e.infra_errors,
                e.unsupported,
                e.wall_ms / 1000.0
            )),
        }
    }
    md.push_str("\n## Matrix\n\n| scenario |");
    for e in &envs {
        md.push_str(&format!(" {e} |"));
    }
    md.push_str(" verdict |\n|---|");
    for _ in &envs {
        md.push_str("---|");
    }
    md.push_str("---|\n");
    for s in &report.scenarios {
        md.push_str(&format!("| `{}` {} |", s.id, escape(&s.name)));
        for e in &envs {
            let cell = s.outcomes.get(e).map(|o| outcome_label(*o)).unwrap_or("—");
            md.push_str(&format!(" {cell} |"));
        }
        let verdict = if s.verdict == Verdict::Pass {
            "pass".to_string()
        } else {
            format!("**{}**", s.verdict.label())
        };
        md.push_str(&format!(" {verdict} |\n"));
    }
    if !report.feature_errors.is_empty() {
        md.push_str("\n## Feature files that could not be read\n\n");
        for e in &report.feature_errors {
            md.push_str(&format!("- `{}:{}`: {}\n", e.path, e.line, escape(&e.message)));
        }
    }
    let problems: Vec<_> = report
        .scenarios
        .iter()
        .filter(|s| s.verdict != Verdict::Pass)
        .collect();
    if !problems.is_empty() {
        md.push_str("\n## Problems\n");
        for s in problems {
            md.push_str(&format!(
                "\n### {} — `{}` {}\n\n",
                s.verdict.label(),
                s.id,
                escape(&s.name)
            ));
            for run in report.runs.iter().filter(|r| r.id == s.id) {
                if let Some(m) = &run.message {
                    md.push_str(&format!(
                        "- **{}** ({}):\n\n```\n{}\n```\n",
                        run.env,
                        outcome_label(run.outcome),
                        m
                    ));
                }
            }
            for d in &s.drift {
                md.push_str(&format!("- drift ({}): {}\n", d.kind, escape(&d.detail)));
            }
            for d in &s.notes {
                md.push_str(&format!("- note ({}): {}\n", d.kind, escape(&d.detail)));
            }
        }
    }
    md.push_str("\n## Timing\n\n| scenario | metric |");
    for e in &envs {
        md.push_str(&format!(" {e} |"));
    }
    md.push_str("\n|---|---|");
    for _ in &envs {
        md.push_str("---|");
    }
    md.push('\n');
    for s in &report.scenarios {
        for row in &s.timing {
            md.push_str(&format!("| `{}` | {} |", s.id, row.metric));
            for e in &envs {
                match row.values.get(e) {
                    Some(v) => md.push_str(&format!(" {v:.1} {} |", row.unit)),
                    None => md.push_str(" — |"),
                }
            }
            md.push('\n');
        }
    }
    md
}

fn escape(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}
