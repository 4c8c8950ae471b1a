//! Benchmark: container and kube start-up against native process start, measured in the same run.
//!
//! Ten identical minimal scenarios (deploy `body-control`, see its heartbeat, tear down) run four times:
//! natively (the baseline), in containers with reuse (a cleanly stopped container is started again by the
//! next scenario), in containers recreated for every scenario, and played by podman (`kube`: a pod per
//! scenario, `podman kube play` to `podman pod rm`). For each it prints deploy-to-ready (median; the first
//! scenario separately, since it may build the image) and the mean scenario wall time, and the
//! per-scenario overhead against native. An environment this machine cannot host is printed as such.

use std::process::Command;

const SCENARIOS: usize = 10;

mod common;

fn main() {
    let mut feature = String::from("Feature: start-up\n");
    for i in 0..SCENARIOS {
        feature.push_str(&format!(
            "  Scenario: start {i}\n    Given the \"body-control\" workload is running\n    Then within 1 s \"DoorLockState\" is seen\n\n"
        ));
    }
    let (project, bins) = common::project("startup.feature", &feature);
    println!("container and kube start-up benchmark: {SCENARIOS} minimal scenarios (deploy body-control, see its heartbeat, tear down), one at a time");
    let configs = [
        ("native", "native", "1"),
        ("container, reused", "container", "1"),
        ("container, recreated", "container", "0"),
        ("kube (podman)", "kube", "1"),
    ];
    let mut baseline: Option<(f64, f64)> = None;
    for (label, env, reuse) in configs {
        let reports = project
            .path()
            .join(format!("reports-{}", label.replace([' ', ',', '(', ')'], "")));
        let status = Command::new(env!("CARGO_BIN_EXE_agl-parity"))
            .arg("--project")
            .arg(project.path())
            .args(["run", "--no-progress", "-j", "1", "--env", env, "--report-dir"])
            .arg(&reports)
            .arg("--workloads")
            .arg(&bins)
            .env("AGL_PARITY_CONTAINER_REUSE", reuse)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("agl-parity runs");
        let Some(json) = common::report_json(&reports) else {
            println!("  {label:<22} run failed ({status})");
            continue;
        };
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(json).unwrap_or_default()).unwrap_or_default();
        let runs = report["runs"].as_array().cloned().unwrap_or_default();
        let mut ready: Vec<(usize, f64)> = runs
            .iter()
            .filter_map(|r| {
                let line = r["id"]["line"].as_u64()? as usize;
                let v = r["metrics"]
                    .as_array()?
                    .iter()
                    .find(|m| m["name"] == "ready body-control")?["value"]
                    .as_f64()?;
                Some((line, v))
            })
            .collect();
        ready.sort_by_key(|(line, _)| *line);
        let first = ready.first().map(|(_, v)| *v).unwrap_or(f64::NAN);
        let mut rest: Vec<f64> = ready.iter().skip(1).map(|(_, v)| *v).collect();
        rest.sort_by(f64::total_cmp);
        let median = rest.get(rest.len() / 2).copied().unwrap_or(f64::NAN);
        let wall: f64 =
            runs.iter().filter_map(|r| r["duration_ms"].as_f64()).sum::<f64>() / runs.len().max(1) as f64;
        let passed = runs.iter().filter(|r| r["outcome"] == "passed").count();
        let vs = match baseline {
            None => {
                baseline = Some((median, wall));
                "baseline".to_string()
            }
            Some((b_ready, b_wall)) => format!(
                "ready {:.1}x native, per-scenario overhead {:+.0} ms",
                median / b_ready,
                wall - b_wall
            ),
        };
        println!(
            "  {label:<22} deploy→ready median {median:7.1} ms (first {first:7.1} ms) | scenario wall {wall:7.1} ms | {passed}/{} passed | {vs}",
            runs.len()
        );
    }
}
