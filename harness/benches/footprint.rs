//! Benchmark: how heavy each environment is beside the workload itself ("how heavy is it?").
//!
//! One scenario holds `body-control` running for 4 s in each environment this machine hosts (native,
//! container, vm, kube), one column after another, in one `agl-parity run`. The run samples `/proc` every
//! half second ([`agl_parity::footprint`]) and writes, per environment, the memory (PSS, RSS) and CPU time of
//! the processes that exist only to run each workload (pod-init, containerd-shim, conmon, the pod's infra
//! container, the VMM with its guest) to `parity.json` and the report's environment table; this prints them,
//! with the workload's own PSS as the yardstick measured in the same run.

mod common;

use std::process::{Command, Stdio};

fn main() {
    let (project, bins) = common::project(
        "steady.feature",
        "Feature: footprint\n  Scenario: steady\n    Given the \"body-control\" workload is running\n    Then the \"body-control\" workload stays running for 4 s\n",
    );
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let mut columns = Vec::new();
    for env in ["native", "container", "vm", "kube"] {
        let probed = agl_parity::env::find_kind(env)
            .map(|k| runtime.block_on((k.probe)()).map(|_| ()).map_err(|e| e.reason))
            .unwrap_or_else(|| Err("not registered".into()));
        match probed {
            Ok(()) => columns.push(env),
            Err(why) => println!("  {env:<10} not hosted here: {why}"),
        }
    }
    let reports = project.path().join("reports");
    let status = Command::new(env!("CARGO_BIN_EXE_agl-parity"))
        .arg("--project")
        .arg(project.path())
        .args([
            "run",
            "--no-progress",
            "-j",
            "1",
            "--env",
            &columns.join(","),
            "--report-dir",
        ])
        .arg(&reports)
        .arg("--workloads")
        .arg(&bins)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("agl-parity runs");
    let Some(json) = common::report_json(&reports) else {
        println!("the run wrote no report ({status})");
        std::process::exit(1);
    };
    let report: agl_parity::parity::RunReport =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap_or_default()).expect("parity.json");
    println!("footprint benchmark: body-control held running 4 s per environment, /proc sampled every 0.5 s");
    println!(
        "  {:<10} {:>13} {:>13} {:>13} {:>11} {:>9}   companions",
        "env", "workload PSS", "beside PSS", "beside RSS", "beside CPU", "x own PSS"
    );
    for e in &report.environments {
        match &e.footprint {
            Some(f) => println!(
                "  {:<10} {:>9} KiB {:>9} KiB {:>9} KiB {:>8.0} ms {:>9} {}",
                e.name,
                f.workload_pss_kib,
                f.beside_pss_kib,
                f.beside_rss_kib,
                f.beside_cpu_ms,
                if f.workload_pss_kib > 0 {
                    format!("{:.1}x", f.beside_pss_kib as f64 / f.workload_pss_kib as f64)
                } else {
                    "guest".into()
                },
                if f.companions.is_empty() {
                    "none (the harness serves native SocketCAN in-process)".to_string()
                } else {
                    f.companions.join(", ")
                }
            ),
            None => println!("  {:<10} not sampled", e.name),
        }
    }
}
