//! The behaviour suite as part of `cargo test`: every scenario in `scenarios/` on every environment this
//! machine can host, with the parity comparison, written to `reports/<run-id>/`.
//!
//! * `AGL_PARITY_ENVS=native,container` picks the environments (default: every environment whose `doctor`
//!   probe passes here; the others are announced loudly as skipped).
//! * `AGL_PARITY_REQUIRE=container,vm` (or `all`) turns a missing environment into a failure (CI).
//! * libtest arguments are tolerated: a positional filter selects scenarios by name (case-insensitive
//!   substring); `--nocapture`, `--test-threads`, `--exact` and friends are accepted and ignored; `--list`
//!   lists the scenarios.

use std::process::ExitCode;
use std::time::Duration;

use agl_parity::env;
use agl_parity::features::FeatureSet;
use agl_parity::runner::{self, RunOptions};

fn main() -> ExitCode {
    let args = LibtestArgs::parse(std::env::args().skip(1));
    if args.ignored {
        eprintln!("only ignored tests requested; the scenario suite has none");
        println!("0 passed, 0 failed");
        return ExitCode::SUCCESS;
    }
    let project = agl_parity::default_project_dir();
    if args.list {
        for s in FeatureSet::load(&[project.join("scenarios")]).scenarios() {
            println!("{}: test", s.scenario.name);
        }
        return ExitCode::SUCCESS;
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();

    let runtime = match agl_parity::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let required: Vec<String> = std::env::var("AGL_PARITY_REQUIRE")
        .map(|v| {
            v.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let mut environments = Vec::new();
    let mut missing_required = Vec::new();
    // The board environment: the lab of AGL_PARITY_LAB, else a simulated board (sshd in a network
    // namespace) when this machine can host one; torn down when the suite ends.
    let mut sim_lab: Option<agl_parity::lab::sim::SimLab> = None;
    let mut lab: Option<std::path::PathBuf> = None;
    let wanted: Option<Vec<String>> = std::env::var("AGL_PARITY_ENVS")
        .ok()
        .map(|v| v.split(',').map(|s| s.trim().to_string()).collect());
    for kind in env::registry() {
        if wanted.as_ref().is_some_and(|w| !w.iter().any(|n| n == kind.name)) {
            continue;
        }
        let probed = if kind.needs_lab() {
            board_lab(&mut sim_lab).map(|path| lab = Some(path))
        } else {
            runtime.block_on((kind.probe)()).map(|_| ()).map_err(|e| e.reason)
        };
        match probed {
            Ok(()) => environments.push(kind.name.to_string()),
            Err(why) => {
                let is_required = required.iter().any(|r| r == "all" || r == kind.name);
                eprintln!();
                eprintln!(
                    "!!!!!!!! ENVIRONMENT `{}` SKIPPED: this machine cannot host it",
                    kind.name
                );
                eprintln!("!!!!!!!! {why}");
                eprintln!("!!!!!!!! (run `cargo run -p agl-parity -- doctor` for details)");
                eprintln!();
                if is_required {
                    missing_required.push(format!("{}: {why}", kind.name));
                }
            }
        }
    }
    if !missing_required.is_empty() {
        for m in &missing_required {
            eprintln!("error: required environment unavailable: {m}");
        }
        println!("0 passed, {} failed", missing_required.len());
        return ExitCode::FAILURE;
    }

    let options = RunOptions {
        run_id: runner::new_run_id(),
        scenario_paths: vec![project.join("scenarios")],
        environments,
        tags: None,
        name_filter: args.filter.map(|f| format!("(?i){}", regex::escape(&f))),
        concurrency: std::env::var("AGL_PARITY_CONCURRENCY")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(4),
        report_root: project.join("reports"),
        step_timeout: Duration::from_secs(60),
        ready_timeout: Duration::from_secs(20),
        progress: false,
        prebuilt_workloads: None,
        interrupt: Default::default(),
        lab,
        parallel_environments: false,
        project_dir: project,
    };
    let journal = runner::Journal::new();
    let outcome = match runtime.block_on(runner::run(options, journal)) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            println!("0 passed, 1 failed");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = agl_parity::report::write_all(&outcome.report, &outcome.report_dir) {
        eprintln!("error: cannot write the report: {e}");
    } else {
        eprintln!("report: {}", outcome.report_dir.join("summary.html").display());
    }
    print!("{}", agl_parity::report::terminal::render(&outcome.report, false));
    drop(sim_lab);
    if outcome.report.all_passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The inventory for the board columns: `AGL_PARITY_LAB`, or a simulated lab started into `sim`.
fn board_lab(sim: &mut Option<agl_parity::lab::sim::SimLab>) -> Result<std::path::PathBuf, String> {
    if let Some(path) = std::env::var_os(agl_parity::env::board::LAB_ENV) {
        return Ok(path.into());
    }
    let lab = agl_parity::lab::sim::start_for_tests(&["ci-board"]).map_err(|e| e.to_string())?;
    let path = lab.inventory().to_path_buf();
    *sim = Some(lab);
    Ok(path)
}

/// The libtest arguments `cargo test` may pass; the ones that do not apply here are accepted and ignored.
#[derive(Default)]
struct LibtestArgs {
    filter: Option<String>,
    list: bool,
    ignored: bool,
}

impl LibtestArgs {
    fn parse(mut args: impl Iterator<Item = String>) -> LibtestArgs {
        let mut out = LibtestArgs::default();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--list" => out.list = true,
                "--ignored" => out.ignored = true,
                "--test-threads" | "--color" | "--format" | "--skip" | "-Z" | "--logfile" => {
                    let _ = args.next();
                }
                a if a.starts_with('-') => {}
                a => out.filter = Some(a.to_string()),
            }
        }
        out
    }
}
