//! Benchmark: how heavy each environment is beside the workload itself ("how heavy is it?").
//!
//! One scenario keeps `body-control` running for 4 s in each environment this machine hosts (native,
//! container, vm, kube), one after another. Two seconds in, the benchmark reads `/proc`: the workload's own
//! process (RSS, PSS from `smaps_rollup`, CPU time so far) and every process that exists only to run it —
//! its ancestors up to the harness or a shared daemon (`pod-init`, `containerd-shim`, `conmon`), and for
//! kube the pod's infra container (its conmon and `catatonit`). The vm's workload is a guest inside
//! `agl-vmm`, so the VMM row includes the guest. The emulation of native SocketCAN runs inside the harness
//! process and is not counted here (it is the harness's, shared by all workloads).
//!
//! Shared daemons (dockerd, containerd, the podman CLI calls) are not per workload and not counted.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One process as `/proc` shows it.
#[derive(Debug, Clone)]
struct Proc {
    pid: i32,
    ppid: i32,
    comm: String,
    cmdline: String,
    rss_kib: u64,
    pss_kib: u64,
    cpu_ms: f64,
}

fn read_proc(pid: i32) -> Option<Proc> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let close = stat.rfind(')')?;
    let comm = stat.get(stat.find('(')? + 1..close)?.to_string();
    let fields: Vec<&str> = stat.get(close + 2..)?.split_whitespace().collect();
    let ppid = fields.get(1)?.parse().ok()?;
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    let hz = 100.0; // USER_HZ on Linux
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default();
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let field = |name: &str| {
        rollup
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Some(Proc {
        pid,
        ppid,
        comm,
        cmdline,
        rss_kib: field("Rss:"),
        pss_kib: field("Pss:"),
        cpu_ms: ticks * 1000.0 / hz,
    })
}

fn all_procs() -> BTreeMap<i32, Proc> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
                .filter_map(read_proc)
                .map(|p| (p.pid, p))
                .collect()
        })
        .unwrap_or_default()
}

/// Shared daemons an ancestor walk stops at.
const SHARED: &[&str] = &["containerd", "dockerd", "systemd", "init", "podman"];

/// The workload's per-workload companions: ancestors up to the harness (`harness`) or a shared daemon.
fn companions(procs: &BTreeMap<i32, Proc>, workload: &Proc, harness: i32) -> Vec<Proc> {
    let mut out = Vec::new();
    let mut at = workload.ppid;
    while let Some(p) = procs.get(&at) {
        if p.pid == harness || p.pid <= 1 || SHARED.contains(&p.comm.as_str()) {
            break;
        }
        out.push(p.clone());
        at = p.ppid;
    }
    out
}

/// The infra container of a kube pod: the conmon whose command line names `infra` and its children.
fn kube_infra(procs: &BTreeMap<i32, Proc>, infra_ids: &[String]) -> Vec<Proc> {
    let conmons: Vec<&Proc> = procs
        .values()
        .filter(|p| p.comm == "conmon" && infra_ids.iter().any(|id| p.cmdline.contains(id.as_str())))
        .collect();
    let mut out: Vec<Proc> = conmons.iter().map(|p| (*p).clone()).collect();
    for c in conmons {
        out.extend(procs.values().filter(|p| p.ppid == c.pid).cloned());
    }
    out
}

fn infra_ids(conf: &Path) -> Vec<String> {
    let out = Command::new("podman")
        .env("CONTAINERS_CONF", conf)
        .args([
            "pod",
            "ps",
            "--filter",
            "label=agl.parity.run",
            "--format",
            "{{.InfraId}}",
        ])
        .output();
    out.map(|o| {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    })
    .unwrap_or_default()
}

mod common;

fn main() {
    let (project, bins) = common::project(
        "steady.feature",
        "Feature: footprint\n  Scenario: steady\n    Given the \"body-control\" workload is running\n    Then the \"body-control\" workload stays running for 4 s\n",
    );
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let conf = agl_parity::cleanup::state_root().join("kube/containers.conf");
    println!("footprint benchmark: body-control held running 4 s per environment; /proc read 2 s in");
    println!(
        "  {:<10} {:>14} {:>14} {:>10}   per-workload companions (RSS/PSS KiB, CPU ms)",
        "env", "workload PSS", "beside PSS", "beside CPU"
    );
    for env in ["native", "container", "vm", "kube"] {
        let hostable = agl_parity::env::find_kind(env)
            .map(|k| runtime.block_on((k.probe)()).map(|_| ()).map_err(|e| e.reason))
            .unwrap_or_else(|| Err("not registered".into()));
        if let Err(why) = hostable {
            println!("  {env:<10} not hosted here: {why}");
            continue;
        }
        let mut child = Command::new(env!("CARGO_BIN_EXE_agl-parity"))
            .arg("--project")
            .arg(project.path())
            .args(["run", "--no-progress", "-j", "1", "--env", env, "--report-dir"])
            .arg(project.path().join(format!("reports-{env}")))
            .arg("--workloads")
            .arg(&bins)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("agl-parity runs");
        let harness = child.id() as i32;
        let started = Instant::now();
        let wanted = if env == "vm" { "agl-vmm" } else { "body-control" };
        // Polling another process's progress: the workload appears when its deploy is done.
        let mut found = None;
        while started.elapsed() < Duration::from_secs(60) {
            let procs = all_procs();
            if let Some(w) = procs
                .values()
                .find(|p| p.comm.starts_with(wanted) && p.pid != harness)
            {
                found = Some(w.pid);
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let Some(pid) = found else {
            println!("  {env:<10} the workload did not appear");
            let _ = child.kill();
            let _ = child.wait();
            continue;
        };
        std::thread::sleep(Duration::from_secs(2));
        let procs = all_procs();
        let Some(workload) = procs.get(&pid).cloned() else {
            println!("  {env:<10} the workload ended early");
            let _ = child.wait();
            continue;
        };
        let (own, mut beside) = if env == "vm" {
            // The workload is the guest inside the VMM: one process, guest included.
            (None, vec![workload.clone()])
        } else {
            (Some(workload.clone()), companions(&procs, &workload, harness))
        };
        if env == "kube" {
            beside.extend(kube_infra(&procs, &infra_ids(&conf)));
        }
        let pss: u64 = beside.iter().map(|p| p.pss_kib).sum();
        let cpu: f64 = beside.iter().map(|p| p.cpu_ms).sum();
        let list = if beside.is_empty() {
            "none (emulation served by the harness process)".to_string()
        } else {
            beside
                .iter()
                .map(|p| format!("{} {}/{} KiB {:.0} ms", p.comm, p.rss_kib, p.pss_kib, p.cpu_ms))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let own_pss = own
            .as_ref()
            .map(|w| format!("{} KiB", w.pss_kib))
            .unwrap_or_else(|| "in the guest".into());
        println!("  {env:<10} {own_pss:>14} {:>10} KiB {cpu:>7.0} ms   {list}", pss);
        let _ = child.wait();
    }
}
