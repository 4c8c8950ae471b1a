//! `summary.md`: the matrix, drifts, failures and timings as Markdown (readable in CI artifact viewers).

use crate::parity::{outcome_label, RunReport, Verdict};
use crate::report::common::{env_columns, field_tables};

/// The Markdown summary of a run.
pub fn render(report: &RunReport) -> String {
    let envs = env_columns(report);
    let (passed, failed) = report.totals();
    let unsupported = match report.unsupported() {
        0 => String::new(),
        n => format!(", {n} unsupported here"),
    };
    let unsupported = match report.flaky() {
        0 => unsupported,
        n => format!(", {n} flaky{unsupported}"),
    };
    let repeats = report.repeats();
    let mut md = format!(
        "# AGL parity run {}\n\nStarted {} on {} — {:.1} s — **{passed} passed, {failed} failed{unsupported}**\n\n",
        report.run_id,
        report.started_at,
        report.host,
        report.duration_ms / 1000.0
    );
    if let Some(seed) = report.seed {
        md.push_str(&format!(
            "Fault seed {seed} (`--seed {seed}` applies the same faults again).\n\n"
        ));
    }
    if repeats > 1 {
        md.push_str(&format!(
            "Every scenario ran **{repeats} times** per environment; timing test: {}.\n\n",
            report.timing_test
        ));
    }
    md.push_str("| environment | transport | passed | failed | infra-errors | flaky | unsupported here | wall time |\n|---|---|---|---|---|---|---|---|\n");
    for e in &report.environments {
        match &e.unavailable {
            Some(why) => md.push_str(&format!(
                "| {} | unavailable: {} | | | | | | |\n",
                e.name,
                escape(why)
            )),
            None => md.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {:.1} s |\n",
                e.name,
                e.transport,
                e.passed,
                e.failed,
                e.infra_errors,
                e.flaky,
                e.unsupported,
                e.wall_ms / 1000.0
            )),
        }
    }
    let noted: Vec<_> = report
        .environments
        .iter()
        .filter(|e| !e.notes.is_empty())
        .collect();
    if !noted.is_empty() {
        md.push_str("\n### How environments differ from the harness's supervisor\n\n");
        for e in noted {
            for n in &e.notes {
                md.push_str(&format!("- **{}**: {}\n", e.name, escape(n)));
            }
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
            let cell = if s.is_flaky_in(e) {
                "flaky"
            } else {
                s.outcomes.get(e).map(|o| outcome_label(*o)).unwrap_or("—")
            };
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
            for f in &s.flaky {
                md.push_str(&format!("- flaky: {}\n", escape(&f.describe())));
            }
            for (run, m, repeat) in super::common::shown_messages(s, &report.runs) {
                let repeat = if repeat.is_empty() {
                    repeat
                } else {
                    format!(", {repeat}")
                };
                md.push_str(&format!(
                    "- **{}** ({}{repeat}):\n\n```\n{}\n```\n",
                    run.env,
                    outcome_label(run.outcome),
                    m
                ));
            }
            for d in &s.drift {
                md.push_str(&format!("- drift ({}): {}\n", d.kind, escape(&d.detail)));
            }
            for d in &s.notes {
                md.push_str(&format!("- note ({}): {}\n", d.kind, escape(&d.detail)));
            }
        }
    }
    let nondeterministic: Vec<_> = report
        .scenarios
        .iter()
        .filter(|s| !s.nondeterministic.is_empty())
        .collect();
    if !nondeterministic.is_empty() {
        md.push_str("\n## Nondeterministic frames\n\nIds whose sequence an environment's repeats disagree about; not compared.\n\n");
        for s in nondeterministic {
            md.push_str(&format!(
                "- `{}` {}: {}\n",
                s.id,
                escape(&s.name),
                escape(&s.nondeterministic.join(", "))
            ));
        }
    }
    let faulted: Vec<(&crate::parity::ScenarioParity, Vec<String>)> = report
        .scenarios
        .iter()
        .map(|s| (s, crate::report::common::fault_lines(s, &report.runs)))
        .filter(|(_, lines)| !lines.is_empty())
        .collect();
    if !faulted.is_empty() {
        md.push_str("\n## Faults and bus timing\n\nWhat the hub did to each scenario's buses.\n\n");
        for (s, lines) in faulted {
            md.push_str(&format!("- `{}` {}\n", s.id, escape(&s.name)));
            for l in lines {
                md.push_str(&format!("  - {}\n", escape(&l)));
            }
        }
    }
    md.push_str("\n## Timing\n\n");
    if !report.timing_test.is_empty() {
        md.push_str(&format!(
            "Periods drift when environments differ by more than their spread (timing test: {}){}.\n\n",
            report.timing_test,
            if repeats > 1 {
                "; cells: median (inter-quartile range, p10..p90, samples)"
            } else {
                ""
            }
        ));
    }
    md.push_str("| scenario | metric |");
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
                match (row.values.get(e), row.stats.get(e)) {
                    (Some(_), Some(d)) if s.repeats > 1 && d.n > 1 => {
                        md.push_str(&format!(" {} |", d.describe(&row.unit)))
                    }
                    (Some(v), _) => md.push_str(&format!(" {v:.1} {} |", row.unit)),
                    (None, _) => md.push_str(" — |"),
                }
            }
            md.push('\n');
        }
    }
    manifest_fields(report, &envs, &mut md);
    md
}

/// Per workload: what each environment did with each field its manifest sets.
fn manifest_fields(report: &RunReport, envs: &[String], md: &mut String) {
    let tables = field_tables(report);
    if tables.is_empty() && report.manifests.not_deployed.is_empty() {
        return;
    }
    md.push_str("\n## Manifest fields\n\nEvery field each manifest sets: honoured, no behaviour here, or not enforced in that environment.\n");
    for (heading, rows) in tables {
        md.push_str(&format!("\n### {heading}\n\n| field |"));
        for e in envs {
            md.push_str(&format!(" {e} |"));
        }
        md.push_str(" note |\n|---|");
        for _ in envs {
            md.push_str("---|");
        }
        md.push_str("---|\n");
        for row in rows {
            md.push_str(&format!("| `{}` |", row.path));
            for fate in &row.fates {
                md.push_str(&format!(" {} |", fate.label()));
            }
            md.push_str(&format!(" {} |\n", escape(row.note)));
        }
    }
    if !report.manifests.not_deployed.is_empty() {
        md.push_str("\n### Not deployed by any environment\n\n");
        for o in &report.manifests.not_deployed {
            md.push_str(&format!("- {}\n", escape(o)));
        }
    }
}

fn escape(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}
