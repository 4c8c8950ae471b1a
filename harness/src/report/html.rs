//! `summary.html`: a self-contained page (inline CSS and SVG, no scripts) with the matrix, environment
//! summaries, and per scenario the drifts, failures, flaky repeats, step timings, timing plots (bars, or
//! per environment the distribution of the samples with the median marked), a CAN frame timeline per
//! environment, and, for scenarios that did not pass and the first few, each DBC signal's value over time
//! with the environments overlaid (collapsed; signals of drifted ids marked).

use std::collections::BTreeSet;
use std::fmt::Write as _;

use crate::parity::{outcome_label, Distribution, RunReport, ScenarioParity, TimingRow, Verdict};
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
    let unsupported = match report.flaky() {
        0 => unsupported,
        n => format!(", {n} flaky{unsupported}"),
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

    if let Some(seed) = report.seed {
        let _ = write!(
            h,
            "<p class=\"meta\">fault seed {seed} (<code>--seed {seed}</code> applies the same faults again)</p>"
        );
    }
    let repeats = report.repeats();
    if repeats > 1 || !report.timing_test.is_empty() {
        let _ = write!(
            h,
            "<p class=\"meta\">{}timing test: {}</p>",
            if repeats > 1 {
                format!("every scenario ran {repeats} times per environment; ")
            } else {
                String::new()
            },
            esc(&report.timing_test)
        );
    }
    h.push_str("<h2>Environments</h2><table><tr><th>environment</th><th>transport</th><th>passed</th><th>failed</th><th>infra-errors</th><th>flaky</th><th>unsupported here</th><th>wall time</th></tr>");
    for e in &report.environments {
        match &e.unavailable {
            Some(why) => {
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td colspan=7 class=\"infra\">unavailable: {}</td></tr>",
                    esc(&e.name),
                    esc(why)
                );
            }
            None => {
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1} s</td></tr>",
                    esc(&e.name),
                    esc(&e.transport),
                    e.passed,
                    e.failed,
                    e.infra_errors,
                    e.flaky,
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
                Some(_) if s.is_flaky_in(e) => h.push_str("<td class=\"flaky\">flaky</td>"),
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
        // Signal plots for the scenarios worth looking at, and the first few: the page stays small.
        let plots = i < SIGNAL_PLOTS_FIRST || !matches!(s.verdict, Verdict::Pass | Verdict::Unsupported);
        scenario_section(&mut h, i, s, &runs, &envs, plots);
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

fn scenario_section(
    h: &mut String,
    i: usize,
    s: &ScenarioParity,
    runs: &[&ScenarioRun],
    envs: &[String],
    signal_plots: bool,
) {
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
    let faults = super::common::fault_lines(s, runs.iter().copied());
    if !faults.is_empty() {
        h.push_str("<ul>");
        for f in &faults {
            let _ = write!(h, "<li class=\"meta\">fault: {}</li>", esc(f));
        }
        h.push_str("</ul>");
    }
    if !s.flaky.is_empty() || !s.nondeterministic.is_empty() {
        h.push_str("<ul>");
        for f in &s.flaky {
            let _ = write!(h, "<li class=\"flaky\">flaky: {}</li>", esc(&f.describe()));
        }
        if !s.nondeterministic.is_empty() {
            let _ = write!(
                h,
                "<li class=\"meta\">nondeterministic (repeats disagree, not compared): {}</li>",
                esc(&s.nondeterministic.join(", "))
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
    for (run, m, repeat) in super::common::shown_messages(s, runs.iter().copied()) {
        let repeat = if repeat.is_empty() {
            repeat
        } else {
            format!(", {repeat}")
        };
        let _ = write!(
            h,
            "<p><b>{}</b> ({}{repeat}):</p><pre>{}</pre>",
            esc(&run.env),
            outcome_label(run.outcome),
            esc(m)
        );
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
                match (row.values.get(e), row.stats.get(e)) {
                    (Some(_), Some(d)) if d.n > 1 => {
                        let _ = write!(h, "<td>{}</td>", esc(&d.describe(&row.unit)));
                    }
                    (Some(v), _) => {
                        let _ = write!(h, "<td>{v:.1} {}</td>", esc(&row.unit));
                    }
                    (None, _) => h.push_str("<td class=\"na\">—</td>"),
                }
            }
            h.push_str("</tr>");
        }
        h.push_str("</table>");
        // Figures with several samples somewhere get a distribution plot; the others a bar.
        let (spread, single): (Vec<&TimingRow>, Vec<&TimingRow>) = s
            .timing
            .iter()
            .filter(|r| r.unit == "ms")
            .partition(|r| r.stats.values().any(|d| d.n > 1));
        let rows: Vec<(String, Vec<(String, f64)>)> = single
            .iter()
            .map(|r| (r.metric.clone(), r.values.clone().into_iter().collect()))
            .collect();
        h.push_str(&bar_chart(&rows, "ms", envs));
        for row in spread {
            let drifted = s
                .drift
                .iter()
                .any(|d| d.kind == "timing" && d.detail.starts_with(&format!("{}:", row.metric)));
            h.push_str(&distribution_plot(row, envs, drifted));
        }
    }
    // With repeats, each environment's first repeat and those that did not pass: the page stays small.
    let shown: Vec<&ScenarioRun> = runs
        .iter()
        .copied()
        .filter(|r| {
            r.outcome != Outcome::Passed || !runs.iter().any(|o| o.env == r.env && o.repeat < r.repeat)
        })
        .collect();
    for run in &shown {
        let repeat = if s.repeats > 1 {
            format!(" (repeat {})", run.repeat + 1)
        } else {
            String::new()
        };
        let _ = write!(
            h,
            "<h4>{}{repeat} <span class=\"{}\">{}</span></h4>",
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
    let firsts: Vec<&ScenarioRun> = shown
        .iter()
        .copied()
        .filter(|r| !runs.iter().any(|o| o.env == r.env && o.repeat < r.repeat))
        .collect();
    h.push_str(&timeline(&firsts, envs));
    if signal_plots {
        h.push_str(&signal_plots_of(s, runs, envs));
    }
    h.push_str("</details>");
}

/// Scenarios shown with signal plots beside those that did not pass.
const SIGNAL_PLOTS_FIRST: usize = 3;

/// Per environment a strip of the samples, the box p25..p75, whiskers p10..p90 and the median marked.
fn distribution_plot(row: &TimingRow, envs: &[String], drifted: bool) -> String {
    let present: Vec<(usize, &String, &Distribution)> = envs
        .iter()
        .enumerate()
        .filter_map(|(i, e)| row.stats.get(e).map(|d| (i, e, d)))
        .filter(|(_, _, d)| d.n > 0)
        .collect();
    let lo = present
        .iter()
        .flat_map(|(_, _, d)| d.samples.first())
        .copied()
        .fold(f64::INFINITY, f64::min);
    let hi = present
        .iter()
        .flat_map(|(_, _, d)| d.samples.last())
        .copied()
        .fold(f64::NEG_INFINITY, f64::max);
    if present.is_empty() || !lo.is_finite() || !hi.is_finite() {
        return String::new();
    }
    let (lo, hi) = if hi - lo < 1e-9 {
        (lo - 1.0, hi + 1.0)
    } else {
        (lo, hi)
    };
    let (label_w, plot_w, lane) = (120.0, 480.0, 22.0);
    let height = lane * present.len() as f64 + 40.0;
    let x = |v: f64| label_w + (v - lo) / (hi - lo) * plot_w;
    let mut svg = format!(
        "<h4>{}{}</h4><svg class=\"chart\" width=\"{}\" height=\"{height}\" xmlns=\"http://www.w3.org/2000/svg\">",
        esc(&row.metric),
        if drifted {
            " <span class=\"drift\">drift</span>"
        } else {
            ""
        },
        label_w + plot_w + 30.0
    );
    for (k, (i, env, d)) in present.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        let y = k as f64 * lane + 6.0;
        let mid = y + lane / 2.0 - 3.0;
        let _ = write!(
            svg,
            "<text x=\"0\" y=\"{:.1}\" class=\"lbl\">{} (n {})</text>",
            mid + 4.0,
            esc(env),
            d.n
        );
        let _ = write!(
            svg,
            "<line x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{mid:.1}\" y2=\"{mid:.1}\" stroke=\"{colour}\"/>",
            x(d.p10),
            x(d.p90)
        );
        let _ = write!(
            svg,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{colour}\" fill-opacity=\"0.25\" stroke=\"{colour}\"><title>{} {}</title></rect>",
            x(d.p25),
            y + 2.0,
            (x(d.p75) - x(d.p25)).max(1.0),
            lane - 10.0,
            esc(env),
            esc(&d.describe(&row.unit))
        );
        let _ = write!(
            svg,
            "<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"{1:.1}\" y2=\"{2:.1}\" stroke=\"#000\" stroke-width=\"2\"/>",
            x(d.median),
            y,
            y + lane - 6.0
        );
        for (j, v) in d.samples.iter().enumerate() {
            // A small deterministic vertical jitter keeps coinciding samples apart.
            let dy = (j % 5) as f64 * 2.0 - 4.0;
            let _ = write!(
                svg,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"1.6\" fill=\"{colour}\"/>",
                x(*v),
                mid + dy
            );
        }
    }
    let ay = height - 22.0;
    let _ = write!(
        svg,
        "<line x1=\"{label_w}\" x2=\"{}\" y1=\"{ay}\" y2=\"{ay}\" class=\"axis\"/>",
        label_w + plot_w
    );
    for i in 0..=4 {
        let v = lo + (hi - lo) * i as f64 / 4.0;
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{}\" class=\"val\">{v:.1} {}</text>",
            x(v) - 12.0,
            ay + 12.0,
            esc(&row.unit)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// Per DBC signal: its value over time, environments overlaid (first repeat of each), signals of ids
/// that drifted marked. Collapsed in a `<details>`.
/// One environment's series of one signal: (palette index, (ms, value) change points, scenario end in ms).
type SignalSeries<'a> = (usize, &'a Vec<(f64, f64)>, f64);

fn signal_plots_of(s: &ScenarioParity, runs: &[&ScenarioRun], envs: &[String]) -> String {
    // The first repeat of each environment.
    let mut firsts: Vec<&ScenarioRun> = Vec::new();
    for r in runs {
        match firsts.iter_mut().find(|f| f.env == r.env) {
            Some(f) if r.repeat < f.repeat => *f = r,
            Some(_) => {}
            None => firsts.push(r),
        }
    }
    let mut keys: BTreeSet<(String, String)> = BTreeSet::new();
    let mut ids: std::collections::BTreeMap<(String, String), String> = Default::default();
    for r in &firsts {
        for b in &r.buses {
            for k in b.signals.keys() {
                keys.insert((b.name.clone(), k.clone()));
            }
            for (m, id) in &b.signal_ids {
                ids.insert((b.name.clone(), m.clone()), id.clone());
            }
        }
    }
    if keys.is_empty() {
        return String::new();
    }
    // The time axis spans the scenarios: a value holds until the next change or the scenario's end.
    let max_t = firsts
        .iter()
        .map(|r| r.duration_ms)
        .chain(
            firsts
                .iter()
                .flat_map(|r| r.buses.iter())
                .flat_map(|b| b.signals.values())
                .flat_map(|v| v.last().map(|(t, _)| *t)),
        )
        .fold(0.0_f64, f64::max)
        .max(1.0);
    let drifted = |bus: &str, id: &str| {
        s.drift
            .iter()
            .any(|d| d.kind == "frames" && d.detail.starts_with(&format!("bus {bus}, id 0x{id}:")))
    };
    let mut out = format!(
        "<details><summary>Signals over time ({} signals)</summary><p class=\"meta\">",
        keys.len()
    );
    for (e, env) in envs.iter().enumerate() {
        if firsts.iter().any(|r| &r.env == env) {
            let _ = write!(
                out,
                "<span style=\"color:{}\">■</span> {} ",
                PALETTE[e % PALETTE.len()],
                esc(env)
            );
        }
    }
    out.push_str("</p>");
    let (label_w, plot_w, plot_h) = (60.0, 560.0, 60.0);
    for (bus, key) in &keys {
        let message = key.split('.').next().unwrap_or(key);
        let id = ids.get(&(bus.clone(), message.to_string()));
        let mark = id.is_some_and(|id| drifted(bus, id));
        let series: Vec<SignalSeries<'_>> = firsts
            .iter()
            .filter_map(|r| {
                let b = r.buses.iter().find(|b| &b.name == bus)?;
                let v = b.signals.get(key)?;
                let e = envs.iter().position(|e| *e == r.env).unwrap_or(0);
                Some((e, v, r.duration_ms))
            })
            .collect();
        let lo = series
            .iter()
            .flat_map(|(_, v, _)| v.iter().map(|p| p.1))
            .fold(f64::INFINITY, f64::min);
        let hi = series
            .iter()
            .flat_map(|(_, v, _)| v.iter().map(|p| p.1))
            .fold(f64::NEG_INFINITY, f64::max);
        if !lo.is_finite() || !hi.is_finite() {
            continue;
        }
        let (lo, hi) = if hi - lo < 1e-9 {
            (lo - 1.0, hi + 1.0)
        } else {
            (lo, hi)
        };
        let x = |t: f64| label_w + t.max(0.0) / max_t * plot_w;
        let y = |v: f64| 8.0 + (hi - v) / (hi - lo) * plot_h;
        let _ = write!(
            out,
            "<div class=\"meta\">{} {}{}</div><svg class=\"chart\" width=\"{}\" height=\"{}\" xmlns=\"http://www.w3.org/2000/svg\">",
            esc(bus),
            esc(key),
            match (id, mark) {
                (Some(id), true) => format!(" <span class=\"drift\">0x{} drifted</span>", esc(id)),
                (Some(id), false) => format!(" (0x{})", esc(id)),
                _ => String::new(),
            },
            label_w + plot_w + 10.0,
            plot_h + 28.0
        );
        let _ = write!(
            out,
            "<text x=\"0\" y=\"{:.1}\" class=\"val\">{hi:.1}</text><text x=\"0\" y=\"{:.1}\" class=\"val\">{lo:.1}</text>",
            y(hi) + 4.0,
            y(lo)
        );
        for (e, v, end) in &series {
            // A step plot: a value holds until the next change, the last one until the scenario's end.
            let mut path = String::new();
            for (k, (t, val)) in v.iter().enumerate() {
                if k == 0 {
                    let _ = write!(path, "M{:.1},{:.1}", x(*t), y(*val));
                } else {
                    let _ = write!(path, "H{:.1}V{:.1}", x(*t), y(*val));
                }
            }
            let last_t = v.last().map_or(0.0, |p| p.0);
            let _ = write!(path, "H{:.1}", x(end.max(last_t)));
            let _ = write!(
                out,
                "<path d=\"{path}\" fill=\"none\" stroke=\"{}\" stroke-width=\"1.5\" stroke-opacity=\"0.8\"/>",
                PALETTE[e % PALETTE.len()]
            );
        }
        let ay = plot_h + 14.0;
        for i in 0..=4 {
            let t = max_t * i as f64 / 4.0;
            let _ = write!(
                out,
                "<text x=\"{:.1}\" y=\"{}\" class=\"val\">{t:.0} ms</text>",
                x(t) - 10.0,
                ay + 10.0
            );
        }
        out.push_str("</svg>");
    }
    out.push_str("</details>");
    out
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
