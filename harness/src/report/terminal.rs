//! The scenario × environment matrix for the terminal, and the closing `N passed, N failed` line.

use std::io::IsTerminal;

use crate::parity::{outcome_label, RunReport, Verdict};
use crate::record::Outcome;
use crate::report::common::env_columns;

const NAME_WIDTH: usize = 58;

/// The matrix, drifts and failures, ending with the totals line.
pub fn render(report: &RunReport, color: bool) -> String {
    let envs = env_columns(report);
    let paint = |text: &str, code: &str| {
        if color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    };
    let mut out = String::new();
    let widths: Vec<usize> = envs.iter().map(|e| e.len().max(11)).collect();
    out.push_str(&format!("{:<NAME_WIDTH$}", "scenario"));
    for (e, w) in envs.iter().zip(&widths) {
        out.push_str(&format!("  {e:<w$}"));
    }
    out.push_str("  verdict\n");
    out.push_str(&"-".repeat(NAME_WIDTH + widths.iter().map(|w| w + 2).sum::<usize>() + 14));
    out.push('\n');
    for s in &report.scenarios {
        let title = format!("{} {}", s.id, s.name);
        let title: String = if title.chars().count() > NAME_WIDTH {
            format!("{}…", title.chars().take(NAME_WIDTH - 1).collect::<String>())
        } else {
            title
        };
        out.push_str(&format!("{title:<NAME_WIDTH$}"));
        for (e, w) in envs.iter().zip(&widths) {
            let (text, code) = match s.outcomes.get(e) {
                _ if s.is_flaky_in(e) => ("FLAKY", "33"),
                Some(Outcome::Passed) => ("pass", "32"),
                Some(Outcome::Failed) => ("FAIL", "31"),
                Some(Outcome::InfraError) => ("INFRA", "33"),
                Some(Outcome::Unsupported) => ("unsupported", "36"),
                None => ("-", "2"),
            };
            out.push_str("  ");
            out.push_str(&paint(&format!("{text:<w$}"), code));
        }
        let code = match s.verdict {
            Verdict::Pass => "32",
            Verdict::Fail => "31;1",
            Verdict::InfraError => "33;1",
            Verdict::ParityDrift => "35;1",
            Verdict::Unsupported => "36",
            Verdict::Flaky => "33",
        };
        out.push_str("  ");
        out.push_str(&paint(s.verdict.label(), code));
        out.push('\n');
    }
    let problems: Vec<_> = report
        .scenarios
        .iter()
        .filter(|s| s.verdict != Verdict::Pass)
        .collect();
    if !problems.is_empty() || !report.feature_errors.is_empty() {
        out.push('\n');
    }
    for e in &report.feature_errors {
        out.push_str(&format!(
            "{} {}:{}: {}\n",
            paint("ERROR", "31;1"),
            e.path,
            e.line,
            e.message
        ));
    }
    for s in problems {
        out.push_str(&format!(
            "{} {} {}\n",
            paint(s.verdict.label(), "1"),
            s.id,
            s.name
        ));
        for f in &s.flaky {
            out.push_str(&format!("    flaky: {}\n", f.describe()));
        }
        // With repeats, the first message per environment and outcome stands for the others.
        let mut shown = std::collections::BTreeSet::new();
        for run in report
            .runs
            .iter()
            .filter(|r| r.id == s.id && r.outcome != Outcome::Passed)
        {
            if !shown.insert((run.env.as_str(), run.outcome)) {
                continue;
            }
            let msg = run.message.clone().unwrap_or_default();
            let mut lines = msg.lines();
            let env = if s.repeats > 1 {
                format!("{} repeat {}", run.env, run.repeat + 1)
            } else {
                run.env.clone()
            };
            out.push_str(&format!(
                "    {} [{env}]: {}\n",
                outcome_label(run.outcome),
                lines.next().unwrap_or("")
            ));
            for l in lines {
                out.push_str(&format!("      {l}\n"));
            }
        }
        for d in &s.drift {
            out.push_str(&format!("    drift ({}): {}\n", d.kind, d.detail));
        }
    }
    for s in report.scenarios.iter().filter(|s| !s.nondeterministic.is_empty()) {
        out.push_str(&format!(
            "{} {} {}: {}\n",
            paint("nondeterministic", "2"),
            s.id,
            s.name,
            s.nondeterministic.join(", ")
        ));
    }
    let repeats = report.repeats();
    if repeats > 1 {
        out.push_str(&format!(
            "\n{repeats} repeats per scenario; timing test: {}\n",
            report.timing_test
        ));
        // Per environment, the spread of every measured period (the figures the timing test judges).
        for env in &envs {
            let mut spreads: Vec<String> = Vec::new();
            for s in &report.scenarios {
                for row in s.timing.iter().filter(|r| r.metric.starts_with("period ")) {
                    if let Some(d) = row.stats.get(env) {
                        spreads.push(format!("{} {}", row.metric, d.describe(&row.unit)));
                    }
                }
            }
            spreads.sort();
            spreads.dedup();
            for line in spreads.iter().take(6) {
                out.push_str(&format!("{env:>12}: {line}\n"));
            }
        }
    }
    out.push('\n');
    for env in &report.environments {
        let state = match &env.unavailable {
            Some(why) => format!("UNAVAILABLE: {why}"),
            None => format!(
                "{} passed, {} failed, {} infra-errors{}{} in {:.1} s ({})",
                env.passed,
                env.failed,
                env.infra_errors,
                if env.flaky > 0 {
                    format!(", {} flaky", env.flaky)
                } else {
                    String::new()
                },
                if env.unsupported > 0 {
                    format!(", {} unsupported here", env.unsupported)
                } else {
                    String::new()
                },
                env.wall_ms / 1000.0,
                env.transport
            ),
        };
        out.push_str(&format!(
            "{:>12}: {state}{}\n",
            env.name,
            deploy_figure(report, &env.name)
        ));
    }
    let (passed, failed) = report.totals();
    let flaky = match report.flaky() {
        0 => String::new(),
        n => format!(", {n} flaky"),
    };
    match report.unsupported() {
        0 => out.push_str(&format!("{passed} passed, {failed} failed{flaky}\n")),
        // Counted as skipped on the closing line; the matrix and the problems list say why.
        n => out.push_str(&format!("{passed} passed, {failed} failed{flaky}, {n} skipped\n")),
    }
    out
}

/// `; deploy to ready: median … ms (n)` from the `ready <pod>` metrics of an environment's runs.
fn deploy_figure(report: &RunReport, env: &str) -> String {
    let mut values: Vec<f64> = report
        .runs
        .iter()
        .filter(|r| r.env == env)
        .flat_map(|r| r.metrics.iter())
        .filter(|m| m.name.starts_with("ready "))
        .map(|m| m.value)
        .collect();
    if values.is_empty() {
        return String::new();
    }
    values.sort_by(f64::total_cmp);
    let median = values[values.len() / 2];
    let max = values[values.len() - 1];
    format!(
        "; deploy to ready: median {median:.0} ms, max {max:.0} ms ({} deploys)",
        values.len()
    )
}

/// Whether stdout wants colors.
pub fn stdout_color() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}
