//! Benchmark: wall time of the whole scenario suite on the native environment.
//!
//! The baseline, measured in the same run, is the suite run one scenario at a time; it is compared with the
//! default of four at a time. Workload binaries are built before timing starts. Reports go to
//! `target/bench-reports/`.

use std::time::{Duration, Instant};

use agl_parity::runner::{self, Journal, RunOptions};
use agl_parity::workload::WorkloadCatalog;

fn main() {
    let project = agl_parity::default_project_dir();
    let runtime = match agl_parity::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    let bins = match runtime.block_on(WorkloadCatalog::new(&project).ensure_built()) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    println!(
        "suite benchmark: every scenario in {} on the native environment",
        project.join("scenarios").display()
    );
    let mut baseline = None;
    for concurrency in [1usize, 4] {
        let options = RunOptions {
            run_id: runner::new_run_id(),
            project_dir: project.clone(),
            scenario_paths: vec![project.join("scenarios")],
            environments: vec!["native".into()],
            tags: None,
            name_filter: None,
            concurrency,
            report_root: project.join("target/bench-reports"),
            step_timeout: Duration::from_secs(60),
            ready_timeout: Duration::from_secs(20),
            progress: false,
            prebuilt_workloads: Some(bins.clone()),
            interrupt: Default::default(),
            lab: None,
            parallel_environments: false,
            can_transport: Default::default(),
            reference: None,
            seed: 1,
            repeat: 1,
            bridges: Default::default(),
        };
        let started = Instant::now();
        let outcome = match runtime.block_on(runner::run(options, Journal::new())) {
            Ok(o) => o,
            Err(e) => {
                eprintln!("run failed: {e}");
                std::process::exit(1);
            }
        };
        let wall = started.elapsed().as_secs_f64();
        let (passed, failed) = outcome.report.totals();
        let runs = &outcome.report.runs;
        let mean = runs.iter().map(|r| r.duration_ms).sum::<f64>() / runs.len().max(1) as f64;
        let ratio = match baseline {
            None => {
                baseline = Some(wall);
                "baseline".to_string()
            }
            Some(b) => format!(
                "{:.2}x the baseline's wall time ({:.1}x faster)",
                wall / b,
                b / wall
            ),
        };
        println!(
            "  concurrency {concurrency}: {wall:6.2} s wall for {} scenarios ({passed} passed, {failed} failed), mean scenario {:.0} ms — {ratio}",
            runs.len(),
            mean
        );
    }
}
