//! How heavy an environment is beside the workloads it runs: the memory (RSS, PSS) and CPU time of the
//! processes that exist only to run one workload, read from `/proc` while the run goes on.
//!
//! A **workload process** is a process of this run (it carries the run marker `AGL_PARITY_RUN=<run id>` in
//! its environment, as every environment gives its workloads) with no child of the run: the program itself,
//! not a wrapper. Its **companions** are its ancestors up to the harness, PID 1 or a shared daemon
//! (`pod-init`, `containerd-shim`, `conmon` — a container runtime's per-container processes), and the other
//! processes of its pod's cgroup when a runtime gives pods a cgroup of their own (podman's `libpod_parent/<pod>`:
//! the infra container's `catatonit` and its `conmon`). A workload inside `agl-vmm` is not a host process:
//! the VMM is both, so it counts whole as the companion (guest memory included). Shared daemons (dockerd,
//! containerd, the podman CLI, the harness itself, which also serves the native SocketCAN emulation) run for
//! every workload and are not counted.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// Daemons an ancestor walk stops at: they serve every workload.
const SHARED: &[&str] = &["containerd", "dockerd", "systemd", "init", "podman", "sshd"];
/// A process that is both VMM and workload.
const VMM: &str = "agl-vmm";

/// One process as `/proc` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcInfo {
    pub pid: i32,
    pub ppid: i32,
    pub comm: String,
    pub rss_kib: u64,
    pub pss_kib: u64,
    /// User plus system CPU time so far.
    pub cpu_ms: f64,
    /// The process's cgroup path (the first hierarchy `/proc/<pid>/cgroup` lists).
    pub cgroup: String,
}

/// Reads one process; `None` when it is gone or unreadable.
pub fn read_proc(pid: i32) -> Option<ProcInfo> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let close = stat.rfind(')')?;
    let comm = stat.get(stat.find('(')? + 1..close)?.to_string();
    let fields: Vec<&str> = stat.get(close + 2..)?.split_whitespace().collect();
    let ppid = fields.get(1)?.parse().ok()?;
    let ticks = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf has no memory effects.
    let hz = match unsafe { libc::sysconf(libc::_SC_CLK_TCK) } {
        n if n > 0 => n as f64,
        _ => 100.0,
    };
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .ok()
        .and_then(|c| {
            c.lines()
                .next()
                .and_then(|l| l.splitn(3, ':').nth(2))
                .map(str::to_string)
        })
        .unwrap_or_default();
    Some(ProcInfo {
        pid,
        ppid,
        comm,
        rss_kib: 0,
        pss_kib: 0,
        cpu_ms: ticks * 1000.0 / hz,
        cgroup,
    })
}

/// `p` with its memory read (`smaps_rollup`: RSS and PSS), which costs more than the rest, so only the
/// processes that are counted get it.
pub fn with_memory(mut p: ProcInfo) -> ProcInfo {
    let rollup = std::fs::read_to_string(format!("/proc/{}/smaps_rollup", p.pid)).unwrap_or_default();
    let field = |name: &str| {
        rollup
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    p.rss_kib = field("Rss:");
    p.pss_kib = field("Pss:");
    p
}

/// Every process of this machine that can be read (without memory, see [`with_memory`]).
pub fn all_procs() -> BTreeMap<i32, ProcInfo> {
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

/// Whether process `pid` carries the marker of run `run_id`.
fn carries_marker(pid: i32, run_id: &str) -> bool {
    let marker = format!("{}={run_id}", crate::cleanup::RUN_MARKER_ENV);
    std::fs::read(format!("/proc/{pid}/environ"))
        .map(|env| env.split(|b| *b == 0).any(|var| var == marker.as_bytes()))
        .unwrap_or(false)
}

/// One workload and its companions at one instant.
#[derive(Debug, Clone)]
pub struct WorkloadProcs {
    /// The workload's own process; `None` inside a VMM.
    pub workload: Option<ProcInfo>,
    pub companions: Vec<ProcInfo>,
}

/// The podman pod cgroup a path lies in (`…/libpod_parent/<pod>`), if any.
fn pod_cgroup(path: &str) -> Option<&str> {
    let at = path.find("libpod_parent/")? + "libpod_parent/".len();
    let end = path[at..].find('/').map_or(path.len(), |i| at + i);
    Some(&path[..end])
}

/// The workloads of run `run_id` in `procs` and their companions (`harness`: the harness's pid).
pub fn workloads_in(procs: &BTreeMap<i32, ProcInfo>, run_id: &str, harness: i32) -> Vec<WorkloadProcs> {
    let marked: BTreeSet<i32> = procs
        .keys()
        .copied()
        .filter(|pid| carries_marker(*pid, run_id))
        .collect();
    let parents: BTreeSet<i32> = marked
        .iter()
        .filter_map(|pid| procs.get(pid))
        .map(|p| p.ppid)
        .collect();
    let mut out = Vec::new();
    for pid in marked
        .iter()
        .filter(|pid| !parents.contains(pid) && **pid != harness)
    {
        let Some(leaf) = procs.get(pid) else { continue };
        if leaf.comm.starts_with(VMM) {
            out.push(WorkloadProcs {
                workload: None,
                companions: vec![leaf.clone()],
            });
            continue;
        }
        let mut companions = Vec::new();
        let mut at = leaf.ppid;
        while let Some(p) = procs.get(&at) {
            if p.pid == harness || p.pid <= 1 || SHARED.contains(&p.comm.as_str()) {
                break;
            }
            companions.push(p.clone());
            at = p.ppid;
        }
        if let Some(pod) = pod_cgroup(&leaf.cgroup) {
            let known: BTreeSet<i32> = companions.iter().map(|c| c.pid).chain([leaf.pid]).collect();
            companions.extend(
                procs
                    .values()
                    .filter(|p| !known.contains(&p.pid) && pod_cgroup(&p.cgroup) == Some(pod))
                    .filter(|p| !marked.contains(&p.pid))
                    .cloned(),
            );
        }
        out.push(WorkloadProcs {
            workload: Some(leaf.clone()),
            companions,
        });
    }
    out.into_iter()
        .map(|w| WorkloadProcs {
            workload: w.workload.map(with_memory),
            companions: w.companions.into_iter().map(with_memory).collect(),
        })
        .collect()
}

/// What an environment spent beside its workloads over a run, per workload (medians over the workloads
/// sampled).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Footprint {
    /// Workload processes seen.
    pub workloads: usize,
    /// The workload's own PSS (KiB), median; 0 inside a VMM.
    pub workload_pss_kib: u64,
    /// PSS of the companions (KiB), median per workload.
    pub beside_pss_kib: u64,
    /// RSS of the companions (KiB), median per workload.
    pub beside_rss_kib: u64,
    /// CPU time of the companions (ms), median per workload.
    pub beside_cpu_ms: f64,
    /// The companions' names.
    pub companions: Vec<String>,
}

impl Footprint {
    /// One line for reports.
    pub fn describe(&self) -> String {
        let names = if self.companions.is_empty() {
            "none".to_string()
        } else {
            self.companions.join(", ")
        };
        format!(
            "{:.1} MiB PSS, {:.0} ms CPU beside each workload ({names}); workload {:.1} MiB",
            self.beside_pss_kib as f64 / 1024.0,
            self.beside_cpu_ms,
            self.workload_pss_kib as f64 / 1024.0
        )
    }
}

/// Collects samples of one run's workloads; each workload is kept as last seen.
#[derive(Debug, Default)]
pub struct FootprintSampler {
    seen: BTreeMap<i32, WorkloadProcs>,
}

impl FootprintSampler {
    /// Reads `/proc` once.
    pub fn sample(&mut self, run_id: &str, harness: i32) {
        for w in workloads_in(&all_procs(), run_id, harness) {
            let key = w
                .workload
                .as_ref()
                .or(w.companions.first())
                .map(|p| p.pid)
                .unwrap_or_default();
            self.seen.insert(key, w);
        }
    }

    /// The footprint so far (`None` when no workload was seen: a remote environment).
    pub fn footprint(&self) -> Option<Footprint> {
        if self.seen.is_empty() {
            return None;
        }
        let median = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v.get(v.len() / 2).copied().unwrap_or(0.0)
        };
        let all: Vec<&WorkloadProcs> = self.seen.values().collect();
        let sum = |w: &WorkloadProcs, f: fn(&ProcInfo) -> f64| w.companions.iter().map(f).sum::<f64>();
        let names: BTreeSet<String> = all
            .iter()
            .flat_map(|w| w.companions.iter().map(|c| c.comm.clone()))
            .collect();
        Some(Footprint {
            workloads: all.len(),
            workload_pss_kib: median(
                all.iter()
                    .map(|w| w.workload.as_ref().map_or(0.0, |p| p.pss_kib as f64))
                    .collect(),
            ) as u64,
            beside_pss_kib: median(all.iter().map(|w| sum(w, |p| p.pss_kib as f64)).collect()) as u64,
            beside_rss_kib: median(all.iter().map(|w| sum(w, |p| p.rss_kib as f64)).collect()) as u64,
            // `+ 0.0`: an empty sum is -0.0.
            beside_cpu_ms: median(all.iter().map(|w| sum(w, |p| p.cpu_ms)).collect()) + 0.0,
            companions: names.into_iter().collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_reads_itself() {
        let me = with_memory(read_proc(std::process::id() as i32).expect("own /proc entry"));
        assert!(me.rss_kib > 0 && me.pss_kib > 0, "{me:?}");
        assert!(me.ppid > 0);
    }

    #[test]
    fn podman_pod_cgroups_are_recognised() {
        assert_eq!(
            pod_cgroup("/libpod_parent/abc123/libpod-def"),
            Some("/libpod_parent/abc123")
        );
        assert_eq!(pod_cgroup("/libpod_parent/abc123"), Some("/libpod_parent/abc123"));
        assert_eq!(pod_cgroup("/docker/def"), None);
    }

    #[test]
    fn a_run_with_no_marked_process_has_no_footprint() {
        let mut sampler = FootprintSampler::default();
        sampler.sample("no-such-run", std::process::id() as i32);
        assert_eq!(sampler.footprint(), None);
    }

    #[test]
    fn a_marked_child_is_a_workload_whose_parent_is_not_counted_when_it_is_the_harness() {
        let me = std::process::id() as i32;
        let run = format!("footprint-test-{me}");
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .env(crate::cleanup::RUN_MARKER_ENV, &run)
            .spawn()
            .expect("sleep");
        let found = workloads_in(&all_procs(), &run, me);
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].workload.as_ref().map(|w| w.comm.as_str()), Some("sleep"));
        assert!(found[0].companions.is_empty(), "{found:?}");
    }
}
