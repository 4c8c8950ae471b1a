//! `summary.html`: a self-contained page (inline CSS and SVG, no scripts) with the matrix, environment
//! summaries, and per scenario the drifts, failures, step timings, timing plots and a CAN frame timeline
//! per environment.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use crate::parity::{outcome_label, RunReport, ScenarioParity, Verdict};
use crate::record::{Outcome, ScenarioRun};
use crate::report::common::env_columns;

const PALETTE: [&str; 6] = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2"];

/// The HTML summary of a run.
pub fn render(report: &RunReport) -> String {
    let envs = env_columns(report);
    let (passed, failed) = report.totals();
    let unsupported = match report.unsupported() {
        0 => String::new(),
        n => format!(", {n} unsupported here"),
    };
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>AGL parity {id}</title><style>{CSS}</style></head><body>\
         <h1>AGL parity run <code>{id}</code></h1><p class=\"meta\">Started {start} on {host} — {dur:.1} s — \
         <b class=\"{cls}\">{passed} passed, {failed} failed{unsupported}</b></p>",
        id = esc(&report.run_id),
        start = esc(&report.started_at),
        host = esc(&report.host),
        dur = report.duration_ms / 1000.0,
        cls = if failed == 0 { "pass" } else { "fail" },
    );

    h.push_str("<h2>Environments</h2><table><tr><th>environment</th><th>transport</th><th>passed</th><th>failed</th><th>infra-errors</th><th>unsupported here</th><th>wall time</th></tr>");
    for e in &report.environments {
        match &e.unavailable {
            Some(why) => {
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td colspan=6 class=\"infra\">unavailable: {}</td></tr>",
                    esc(&e.name),
                    esc(why)
                );
            }
            None => {
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1} s</td></tr>",
                    esc(&e.name),
                    esc(&e.transport),
                    e.passed,
                    e.failed,
                    e.infra_errors,
                    e.unsupported,
                    e.wall_ms / 1000.0
                );
            }
        }
    }
    h.push_str("</table>");
    let weighed: Vec<_> = report
        .environments
        .iter()
        .filter(|e| e.footprint.is_some())
        .collect();
    if !weighed.is_empty() {
        h.push_str("<table><tr><th>environment</th><th>beside each workload (median)</th></tr>");
        for e in weighed {
            if let Some(f) = &e.footprint {
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td>{}</td></tr>",
                    esc(&e.name),
                    esc(&f.describe())
                );
            }
        }
        h.push_str("</table>");
    }
    let noted: Vec<_> = report
        .environments
        .iter()
        .filter(|e| !e.notes.is_empty())
        .collect();
    if !noted.is_empty() {
        h.push_str("<h3>How environments differ from the harness's supervisor</h3><ul>");
        for e in noted {
            for n in &e.notes {
                let _ = write!(h, "<li><b>{}</b>: {}</li>", esc(&e.name), esc(n));
            }
        }
        h.push_str("</ul>");
    }
    let walls: Vec<(String, Vec<(String, f64)>)> = vec![(
        "suite wall time".into(),
        report
            .environments
            .iter()
            .map(|e| (e.name.clone(), e.wall_ms / 1000.0))
            .collect(),
    )];
    h.push_str(&bar_chart(&walls, "s", &envs));

    h.push_str("<h2>Matrix</h2><table class=\"matrix\"><tr><th>scenario</th>");
    for e in &envs {
        let _ = write!(h, "<th>{}</th>", esc(e));
    }
    h.push_str("<th>verdict</th></tr>");
    for (i, s) in report.scenarios.iter().enumerate() {
        let _ = write!(
            h,
            "<tr><td><a href=\"#s{i}\"><code>{}</code></a> {}</td>",
            esc(&s.id.to_string()),
            esc(&s.name)
        );
        for e in &envs {
            match s.outcomes.get(e) {
                Some(o) => {
                    let _ = write!(
                        h,
                        "<td class=\"{}\">{}</td>",
                        outcome_class(*o),
                        outcome_label(*o)
                    );
                }
                None => h.push_str("<td class=\"na\">—</td>"),
            }
        }
        let _ = write!(
            h,
            "<td class=\"{}\">{}</td></tr>",
            verdict_class(s.verdict),
            s.verdict.label()
        );
    }
    h.push_str("</table>");

    if !report.feature_errors.is_empty() {
        h.push_str("<h2>Feature files that could not be read</h2><ul>");
        for e in &report.feature_errors {
            let _ = write!(
                h,
                "<li class=\"fail\"><code>{}:{}</code>: {}</li>",
                esc(&e.path),
                e.line,
                esc(&e.message)
            );
        }
        h.push_str("</ul>");
    }

    h.push_str("<h2>Scenarios</h2>");
    for (i, s) in report.scenarios.iter().enumerate() {
        // In column order, so that colours and sections match the matrix.
        let mut runs: Vec<&ScenarioRun> = report.runs.iter().filter(|r| r.id == s.id).collect();
        runs.sort_by_key(|r| envs.iter().position(|e| *e == r.env).unwrap_or(usize::MAX));
        scenario_section(&mut h, i, s, &runs, &envs);
    }
    manifest_fields(&mut h, report, &envs);
    h.push_str("</body></html>\n");
    h
}

/// Per workload: what each environment did with each field its manifest sets (collapsed).
fn manifest_fields(h: &mut String, report: &RunReport, envs: &[String]) {
    use crate::manifest::Fate;
    let tables = crate::report::common::field_tables(report);
    if tables.is_empty() && report.manifests.not_deployed.is_empty() {
        return;
    }
    h.push_str("<h2>Manifest fields</h2>");
    for (heading, rows) in tables {
        let _ = write!(
            h,
            "<details><summary>{}</summary><table><tr><th>field</th>",
            esc(&heading)
        );
        for e in envs {
            let _ = write!(h, "<th>{}</th>", esc(e));
        }
        h.push_str("<th>note</th></tr>");
        for row in rows {
            let _ = write!(h, "<tr><td><code>{}</code></td>", esc(row.path));
            for fate in &row.fates {
                let class = match fate {
                    Fate::Honoured => "pass",
                    Fate::NotEnforced => "drift",
                    Fate::NoBehaviour => "",
                };
                let _ = write!(h, "<td class=\"{class}\">{}</td>", fate.label());
            }
            let _ = write!(h, "<td>{}</td></tr>", esc(row.note));
        }
        h.push_str("</table></details>");
    }
    if !report.manifests.not_deployed.is_empty() {
        h.push_str("<h3>Not deployed by any environment</h3><ul>");
        for o in &report.manifests.not_deployed {
            let _ = write!(h, "<li>{}</li>", esc(o));
        }
        h.push_str("</ul>");
    }
}

fn scenario_section(h: &mut String, i: usize, s: &ScenarioParity, runs: &[&ScenarioRun], envs: &[String]) {
    let open = if s.verdict == Verdict::Pass { "" } else { " open" };
    let _ = write!(
        h,
        "<details id=\"s{i}\"{open}><summary><span class=\"{}\">{}</span> <code>{}</code> {} — {}</summary>",
        verdict_class(s.verdict),
        s.verdict.label(),
        esc(&s.id.to_string()),
        esc(&s.feature_name),
        esc(&s.name)
    );
    if !s.tags.is_empty() {
        let _ = write!(
            h,
            "<p class=\"meta\">tags: {}</p>",
            esc(&s
                .tags
                .iter()
                .map(|t| format!("@{t}"))
                .collect::<Vec<_>>()
                .join(" "))
        );
    }
    if !s.drift.is_empty() {
        h.push_str("<ul>");
        for d in &s.drift {
            let _ = write!(
                h,
                "<li class=\"drift\">drift ({}): {}</li>",
                esc(&d.kind),
                esc(&d.detail)
            );
        }
        h.push_str("</ul>");
    }
    if !s.notes.is_empty() {
        h.push_str("<ul>");
        for d in &s.notes {
            let _ = write!(
                h,
                "<li class=\"meta\">note ({}): {}</li>",
                esc(&d.kind),
                esc(&d.detail)
            );
        }
        h.push_str("</ul>");
    }
    for run in runs {
        if let Some(m) = &run.message {
            let _ = write!(
                h,
                "<p><b>{}</b> ({}):</p><pre>{}</pre>",
                esc(&run.env),
                outcome_label(run.outcome),
                esc(m)
            );
        }
    }
    if !s.timing.is_empty() {
        h.push_str("<h4>Timing</h4><table><tr><th>metric</th>");
        for e in envs {
            let _ = write!(h, "<th>{}</th>", esc(e));
        }
        h.push_str("</tr>");
        for row in &s.timing {
            let _ = write!(h, "<tr><td>{}</td>", esc(&row.metric));
            for e in envs {
                match row.values.get(e) {
                    Some(v) => {
                        let _ = write!(h, "<td>{v:.1} {}</td>", esc(&row.unit));
                    }
                    None => h.push_str("<td class=\"na\">—</td>"),
                }
            }
            h.push_str("</tr>");
        }
        h.push_str("</table>");
        let rows: Vec<(String, Vec<(String, f64)>)> = s
            .timing
            .iter()
            .filter(|r| r.unit == "ms")
            .map(|r| (r.metric.clone(), r.values.clone().into_iter().collect()))
            .collect();
        h.push_str(&bar_chart(&rows, "ms", envs));
    }
    for run in runs {
        let _ = write!(
            h,
            "<h4>{} <span class=\"{}\">{}</span></h4>",
            esc(&run.env),
            outcome_class(run.outcome),
            outcome_label(run.outcome)
        );
        h.push_str(
            "<table><tr><th>step</th><th>line</th><th>start</th><th>duration</th><th>status</th></tr>",
        );
        for st in &run.steps {
            let _ = write!(
                h,
                "<tr><td>{} {}</td><td>{}</td><td>{:.1} ms</td><td>{:.1} ms</td><td>{:?}</td></tr>",
                esc(&st.keyword),
                esc(&st.text),
                st.line,
                st.start_ms,
                st.duration_ms,
                st.status
            );
        }
        h.push_str("</table><p class=\"meta\">");
        for b in &run.buses {
            if let Some(t) = &b.trace_file {
                let _ = write!(h, "trace <a href=\"{0}\">{0}</a> ({1} frames) ", esc(t), b.frames);
            }
            for d in &b.drops {
                let _ = write!(
                    h,
                    "<span class=\"fail\">{} dropped {} frames</span> ",
                    esc(&d.node),
                    d.dropped
                );
            }
        }
        for w in &run.workloads {
            if let Some(l) = &w.log_file {
                let _ = write!(
                    h,
                    "log <a href=\"{0}\">{0}</a> (starts {1}, restarts {2}) ",
                    esc(l),
                    w.starts,
                    w.restarts
                );
            }
        }
        h.push_str("</p>");
    }
    h.push_str(&timeline(runs, envs));
    h.push_str("</details>");
}

/// Horizontal grouped bars: one group per row, one bar per environment.
fn bar_chart(rows: &[(String, Vec<(String, f64)>)], unit: &str, envs: &[String]) -> String {
    let max = rows
        .iter()
        .flat_map(|(_, v)| v.iter().map(|(_, x)| *x))
        .fold(0.0_f64, f64::max);
    if rows.is_empty() || max <= 0.0 {
        return String::new();
    }
    let (label_w, plot_w, bar_h) = (220.0, 460.0, 14.0);
    let group_h = bar_h * envs.len().max(1) as f64 + 10.0;
    let height = group_h * rows.len() as f64 + 30.0;
    let mut svg = format!(
        "<svg class=\"chart\" width=\"{}\" height=\"{height}\" xmlns=\"http://www.w3.org/2000/svg\">",
        label_w + plot_w + 90.0
    );
    for (r, (label, values)) in rows.iter().enumerate() {
        let y0 = r as f64 * group_h + 5.0;
        let _ = write!(
            svg,
            "<text x=\"0\" y=\"{}\" class=\"lbl\">{}</text>",
            y0 + bar_h,
            esc(&truncate(label, 34))
        );
        for (e, env) in envs.iter().enumerate() {
            if let Some((_, v)) = values.iter().find(|(n, _)| n == env) {
                let w = (v / max * plot_w).max(1.0);
                let y = y0 + e as f64 * bar_h;
                let _ = write!(
                    svg,
                    "<rect x=\"{label_w}\" y=\"{y}\" width=\"{w:.1}\" height=\"{}\" fill=\"{}\"><title>{} {v:.2} {unit}</title></rect>\
                     <text x=\"{:.1}\" y=\"{}\" class=\"val\">{v:.1} {unit}</text>",
                    bar_h - 2.0,
                    PALETTE[e % PALETTE.len()],
                    esc(env),
                    label_w + w + 4.0,
                    y + bar_h - 4.0
                );
            }
        }
    }
    let ly = height - 8.0;
    for (e, env) in envs.iter().enumerate() {
        let x = label_w + e as f64 * 110.0;
        let _ = write!(
            svg,
            "<rect x=\"{x}\" y=\"{}\" width=\"10\" height=\"10\" fill=\"{}\"/><text x=\"{}\" y=\"{ly}\" class=\"lbl\">{}</text>",
            ly - 9.0,
            PALETTE[e % PALETTE.len()],
            x + 14.0,
            esc(env)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// CAN frames over time: one row per (bus, id), one tick per frame, one color per environment.
fn timeline(runs: &[&ScenarioRun], envs: &[String]) -> String {
    let colour = |env: &str| PALETTE[envs.iter().position(|e| e == env).unwrap_or(0) % PALETTE.len()];
    let mut keys: BTreeSet<(String, String)> = BTreeSet::new();
    let mut max_t = 0.0_f64;
    for run in runs {
        for b in &run.buses {
            for (id, t) in &b.timeline {
                keys.insert((b.name.clone(), id.clone()));
                max_t = max_t.max(*t);
            }
        }
    }
    if keys.is_empty() || max_t <= 0.0 {
        return String::new();
    }
    let keys: Vec<(String, String)> = keys.into_iter().collect();
    let (label_w, plot_w, lane) = (150.0, 600.0, 7.0);
    let row_h = lane * runs.len() as f64 + 6.0;
    let height = row_h * keys.len() as f64 + 40.0;
    let mut svg = format!(
        "<h4>CAN frames over time</h4><svg class=\"chart\" width=\"{}\" height=\"{height}\" xmlns=\"http://www.w3.org/2000/svg\">",
        label_w + plot_w + 20.0
    );
    for (k, (bus, id)) in keys.iter().enumerate() {
        let y0 = k as f64 * row_h + 4.0;
        let _ = write!(
            svg,
            "<text x=\"0\" y=\"{}\" class=\"lbl\">{} 0x{}</text>",
            y0 + row_h / 2.0 + 3.0,
            esc(bus),
            esc(id)
        );
        let _ = write!(
            svg,
            "<line x1=\"{label_w}\" x2=\"{}\" y1=\"{y0}\" y2=\"{y0}\" class=\"grid\"/>",
            label_w + plot_w
        );
        for (e, run) in runs.iter().enumerate() {
            let y = y0 + e as f64 * lane + 2.0;
            let Some(b) = run.buses.iter().find(|b| &b.name == bus) else {
                continue;
            };
            for (fid, t) in b.timeline.iter().filter(|(fid, _)| fid == id) {
                let x = label_w + t.max(0.0) / max_t * plot_w;
                let _ = write!(
                    svg,
                    "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"1.5\" height=\"{}\" fill=\"{}\"><title>{} 0x{} +{t:.1} ms</title></rect>",
                    lane - 1.0,
                    colour(&run.env),
                    esc(&run.env),
                    esc(fid)
                );
            }
        }
    }
    let ay = height - 22.0;
    let _ = write!(
        svg,
        "<line x1=\"{label_w}\" x2=\"{}\" y1=\"{ay}\" y2=\"{ay}\" class=\"axis\"/>",
        label_w + plot_w
    );
    for i in 0..=4 {
        let x = label_w + plot_w * i as f64 / 4.0;
        let _ = write!(
            svg,
            "<text x=\"{x:.1}\" y=\"{}\" class=\"val\">{:.0} ms</text>",
            ay + 12.0,
            max_t * i as f64 / 4.0
        );
    }
    for (e, run) in runs.iter().enumerate() {
        let x = label_w + e as f64 * 110.0;
        let _ = write!(
            svg,
            "<rect x=\"{x}\" y=\"{}\" width=\"10\" height=\"8\" fill=\"{}\"/><text x=\"{}\" y=\"{}\" class=\"lbl\">{}</text>",
            height - 9.0,
            colour(&run.env),
            x + 14.0,
            height - 1.0,
            esc(&run.env)
        );
    }
    svg.push_str("</svg>");
    svg
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() > n {
        format!("{}…", s.chars().take(n - 1).collect::<String>())
    } else {
        s.to_string()
    }
}

fn outcome_class(o: Outcome) -> &'static str {
    match o {
        Outcome::Passed => "pass",
        Outcome::Failed => "fail",
        Outcome::InfraError => "infra",
        Outcome::Unsupported => "unsupported",
    }
}

fn verdict_class(v: Verdict) -> &'static str {
    match v {
        Verdict::Pass => "pass",
        Verdict::Fail => "fail",
        Verdict::InfraError => "infra",
        Verdict::ParityDrift => "drift",
        Verdict::Unsupported => "unsupported",
        Verdict::Flaky => "flaky",
    }
}

/// HTML-escapes text.
pub fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const CSS: &str = "body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:.5em 0}\
td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;font-size:13px}th{background:#f3f3f3}\
.pass{color:#1a7f37}.fail{color:#cf222e;font-weight:bold}.infra{color:#b35900;font-weight:bold}.drift{color:#8250df;font-weight:bold}\
.na{color:#aaa}.unsupported{color:#0b7285}td.unsupported{background:#e3f6f8}td.pass{background:#e6f4ea}td.fail{background:#fde7e9}td.infra{background:#fff1e0}td.drift{background:#f1e8ff}.flaky{color:#9a6700;font-weight:bold}td.flaky{background:#fff8c5}\
.meta{color:#666;font-size:13px}pre{background:#f6f8fa;padding:8px;overflow:auto;font-size:12px;white-space:pre-wrap}details{margin:.6em 0;border-left:3px solid #ddd;padding-left:.8em}\
summary{cursor:pointer;font-size:14px}.chart text.lbl{font-size:11px;fill:#333}.chart text.val{font-size:10px;fill:#555}\
.chart .grid{stroke:#eee}.chart .axis{stroke:#999}";
