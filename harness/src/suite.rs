//! The behaviour suite as part of `cargo test`, for this repository and for any team's crate: every
//! scenario of a project on every environment this machine can host, with the parity comparison, written to
//! the project's reports directory.
//!
//! A team's crate declares a test target without libtest and calls [`main`]:
//!
//! ```toml
//! [dev-dependencies]
//! agl-parity = { git = "…", package = "agl-parity" }   # or a path
//!
//! [[test]]
//! name = "parity"
//! harness = false
//! ```
//!
//! ```no_run
//! // tests/parity.rs
//! fn main() -> std::process::ExitCode {
//!     agl_parity::suite::main(env!("CARGO_MANIFEST_DIR").as_ref())
//! }
//! ```
//!
//! * `AGL_PARITY_ENVS=native,container` picks the environments (default: every environment whose `doctor`
//!   probe passes here; the others are announced loudly as skipped).
//! * `AGL_PARITY_REQUIRE=container,vm` (or `all`) turns a missing environment into a failure (CI).
//! * Board columns use the project's `lab:`, else `AGL_PARITY_LAB`, else a simulated board (sshd in a
//!   network namespace) when this machine can host one, torn down when the suite ends.
//! * `AGL_PARITY_CONCURRENCY` sets the scenarios run at once per environment (default 4).
//! * libtest arguments are tolerated: a positional filter selects scenarios by name (case-insensitive
//!   substring); `--nocapture`, `--test-threads`, `--exact` and friends are accepted and ignored; `--list`
//!   lists the scenarios. The last line is libtest's `N passed, N failed`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use crate::env;
use crate::features::FeatureSet;
use crate::project::Project;
use crate::runner::{self, RunOptions};

/// Runs the scenario suite of the project at `project_dir` with the process's arguments and environment;
/// the exit code is what `cargo test` expects of a `harness = false` target.
pub fn main(project_dir: &Path) -> ExitCode {
    let args = LibtestArgs::parse(std::env::args().skip(1));
    if args.ignored {
        eprintln!("only ignored tests requested; the scenario suite has none");
        println!("0 passed, 0 failed");
        return ExitCode::SUCCESS;
    }
    let project = match Project::load(project_dir) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            println!("0 passed, 1 failed");
            return ExitCode::FAILURE;
        }
    };
    if args.list {
        for s in FeatureSet::load(&project.scenarios).scenarios() {
            println!("{}: test", s.scenario.name);
        }
        return ExitCode::SUCCESS;
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();

    let runtime = match crate::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let required = list_var("AGL_PARITY_REQUIRE").unwrap_or_default();
    let wanted = list_var("AGL_PARITY_ENVS");
    let mut environments = Vec::new();
    let mut missing_required = Vec::new();
    let mut sim_lab: Option<crate::lab::sim::SimLab> = None;
    let mut lab: Option<PathBuf> = None;
    for kind in env::registry() {
        if wanted.as_ref().is_some_and(|w| !w.iter().any(|n| n == kind.name)) {
            continue;
        }
        let probed = if kind.needs_lab() {
            board_lab(&project, &mut sim_lab).map(|path| lab = Some(path))
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
                eprintln!("!!!!!!!! (run `agl-parity doctor` for details)");
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
        environments,
        name_filter: args.filter.map(|f| format!("(?i){}", regex::escape(&f))),
        concurrency: std::env::var("AGL_PARITY_CONCURRENCY")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(4),
        step_timeout: Duration::from_secs(60),
        ready_timeout: Duration::from_secs(20),
        lab,
        ..RunOptions::new(&project)
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
    if let Err(e) = crate::report::write_all(&outcome.report, &outcome.report_dir) {
        eprintln!("error: cannot write the report: {e}");
    } else {
        eprintln!("report: {}", outcome.report_dir.join("summary.html").display());
    }
    print!("{}", crate::report::terminal::render(&outcome.report, false));
    drop(sim_lab);
    if outcome.report.all_passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// A comma-separated list from an environment variable, if set.
fn list_var(name: &str) -> Option<Vec<String>> {
    std::env::var(name).ok().map(|v| {
        v.split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    })
}

/// The inventory for the board columns: the project's `lab:`, `AGL_PARITY_LAB`, or a simulated lab
/// started into `sim`.
fn board_lab(project: &Project, sim: &mut Option<crate::lab::sim::SimLab>) -> Result<PathBuf, String> {
    if let Some(path) = &project.lab {
        return Ok(path.clone());
    }
    if let Some(path) = std::env::var_os(crate::env::board::LAB_ENV) {
        return Ok(path.into());
    }
    let lab = crate::lab::sim::start_for_tests(&["ci-board"]).map_err(|e| e.to_string())?;
    let path = lab.inventory().to_path_buf();
    *sim = Some(lab);
    Ok(path)
}

/// The libtest arguments `cargo test` may pass; the ones that do not apply here are accepted and ignored.
#[derive(Debug, Default, PartialEq, Eq)]
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libtest_arguments() {
        let parse = |a: &[&str]| LibtestArgs::parse(a.iter().map(|s| s.to_string()));
        assert_eq!(
            parse(&["--nocapture", "--test-threads", "2", "heartbeat"]),
            LibtestArgs {
                filter: Some("heartbeat".into()),
                ..LibtestArgs::default()
            }
        );
        assert!(parse(&["--list", "--format", "terse"]).list);
        assert!(parse(&["--ignored"]).ignored);
        assert_eq!(parse(&["--skip", "x"]), LibtestArgs::default());
    }
}
