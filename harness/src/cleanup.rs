//! Leak prevention: every run registers itself, and the next run removes what a killed one left.
//!
//! A run owns a state directory `<state root>/runs/<run-id>/` holding an `owner` file (harness pid and its
//! start time) and everything the run creates on the host: bus sockets, per-instance working directories.
//! Every process the run starts carries `AGL_PARITY_RUN=<run-id>` in its environment. Normal teardown
//! removes all of it. After a harness killed with SIGINT or SIGKILL, [`sweep`] (run at the start of every
//! run and by `doctor --clean`) finds runs whose owner is gone, kills their marked processes and removes
//! their directories; environments with their own resources (containers, …) sweep them by run id too.

use std::fs;
use std::path::{Path, PathBuf};

/// Environment variable that marks every process of a run.
pub const RUN_MARKER_ENV: &str = "AGL_PARITY_RUN";
/// Environment variable overriding the state root.
pub const STATE_DIR_ENV: &str = "AGL_PARITY_STATE_DIR";

/// The directory under which runs keep their state.
pub fn state_root() -> PathBuf {
    std::env::var_os(STATE_DIR_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("agl-parity"))
}

/// The registration of a live run; dropping it removes the run's state directory.
pub struct RunGuard {
    run_id: String,
    dir: PathBuf,
}

impl RunGuard {
    /// Registers run `run_id` under `root`. The directory appears atomically with its `owner` file (it is
    /// prepared under a staging name and renamed), so a concurrent [`sweep`] never sees a run without an
    /// owner and takes it for a dead one. A run id already registered is an `AlreadyExists` error.
    pub fn register(root: &Path, run_id: &str) -> std::io::Result<RunGuard> {
        let runs = root.join("runs");
        fs::create_dir_all(&runs)?;
        let dir = runs.join(run_id);
        let me = std::process::id();
        let staging = staging_dir(&runs, run_id);
        fs::create_dir_all(&staging)?;
        let start = process_start_time(me).unwrap_or(0);
        let prepared = fs::write(staging.join("owner"), format!("{me} {start}\n"))
            .and_then(|()| fs::rename(&staging, &dir));
        if let Err(e) = prepared {
            let _ = fs::remove_dir_all(&staging);
            // rename(2) onto a non-empty directory: someone registered the id in between.
            return Err(if dir.exists() {
                already_registered(run_id)
            } else {
                e
            });
        }
        Ok(RunGuard {
            run_id: run_id.to_string(),
            dir,
        })
    }

    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        kill_marked_processes(&self.run_id);
        // Out of sight first, so a concurrent sweep never finds the run half removed and owner-less.
        let doomed = self
            .dir
            .parent()
            .map(|runs| staging_dir(runs, &self.run_id))
            .unwrap_or_else(|| self.dir.clone());
        let gone = match fs::rename(&self.dir, &doomed) {
            Ok(()) => &doomed,
            Err(_) => &self.dir,
        };
        let _ = fs::remove_dir_all(gone);
    }
}

/// Name prefix of a run directory being prepared by [`RunGuard::register`]: `.staging-<pid>-<run-id>`.
const STAGING_PREFIX: &str = ".staging-";

/// This process's staging directory for `run_id` under `runs`.
fn staging_dir(runs: &Path, run_id: &str) -> PathBuf {
    runs.join(format!("{STAGING_PREFIX}{}-{run_id}", std::process::id()))
}

fn already_registered(run_id: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::AlreadyExists,
        format!("run id `{run_id}` is already registered"),
    )
}

/// What a sweep removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepReport {
    /// Run ids whose leftovers were removed.
    pub runs: Vec<String>,
    /// Processes killed.
    pub processes: usize,
    /// Other resources removed by environments (e.g. `container 3f2a…`).
    pub other: Vec<String>,
}

impl SweepReport {
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty() && self.processes == 0 && self.other.is_empty()
    }
}

/// Removes the leftovers of every run under `root` whose owner is no longer alive.
pub fn sweep(root: &Path) -> SweepReport {
    let mut report = SweepReport::default();
    let Ok(entries) = fs::read_dir(root.join("runs")) else {
        return report;
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        let run_id = entry.file_name().to_string_lossy().to_string();
        if let Some(rest) = run_id.strip_prefix(STAGING_PREFIX) {
            // A registration cut short: its owner died between preparing and renaming it.
            let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
            if pid.is_some_and(|pid| process_start_time(pid).is_none()) {
                let _ = fs::remove_dir_all(&dir);
            }
            continue;
        }
        if owner_alive(&dir) {
            continue;
        }
        report.processes += kill_marked_processes(&run_id);
        if fs::remove_dir_all(&dir).is_ok() {
            report.runs.push(run_id);
        }
    }
    report
}

/// Run ids under `root` whose owner is alive.
pub fn live_runs(root: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(root.join("runs")) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with(STAGING_PREFIX))
        .filter(|e| owner_alive(&e.path()))
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect()
}

fn owner_alive(run_dir: &Path) -> bool {
    let Ok(text) = fs::read_to_string(run_dir.join("owner")) else {
        return false;
    };
    let mut parts = text.split_whitespace();
    let (Some(Ok(pid)), Some(Ok(start))) = (
        parts.next().map(str::parse::<u32>),
        parts.next().map(str::parse::<u64>),
    ) else {
        return false;
    };
    // The pid may have been reused by another process: the start time tells them apart.
    process_start_time(pid) == Some(start)
}

/// Start time of a process in clock ticks since boot (`/proc/<pid>/stat` field 22).
fn process_start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; fields after it follow the last ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// Pids of processes whose environment carries `AGL_PARITY_RUN=<run_id>`.
pub fn marked_processes(run_id: &str) -> Vec<u32> {
    let needle = format!("{RUN_MARKER_ENV}={run_id}");
    let me = std::process::id();
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/environ"))
                .map(|env| env.split(|b| *b == 0).any(|var| var == needle.as_bytes()))
                .unwrap_or(false)
        })
        .collect()
}

/// SIGKILLs every process marked with `run_id`; returns how many were signalled.
pub fn kill_marked_processes(run_id: &str) -> usize {
    let pids = marked_processes(run_id);
    for pid in &pids {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    pids.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    #[test]
    fn sweep_removes_dead_runs_and_their_processes_only() {
        let root = tempfile::tempdir().unwrap();
        // A live run: ours.
        let live = RunGuard::register(root.path(), "live-run").unwrap();
        // A dead run: owner pid that does not exist, and a marked process still running.
        let dead_dir = root.path().join("runs/dead-run");
        fs::create_dir_all(dead_dir.join("sockets")).unwrap();
        fs::write(dead_dir.join("owner"), "999999999 1\n").unwrap();
        let mut orphan = Command::new("sleep")
            .arg("300")
            .env(RUN_MARKER_ENV, "dead-run")
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        // /proc/<pid>/environ is empty for a moment while the child finishes execve: wait for it (bounded).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while marked_processes("dead-run").is_empty() && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        assert_eq!(marked_processes("dead-run"), vec![orphan.id()]);

        let report = sweep(root.path());
        assert_eq!(report.runs, vec!["dead-run".to_string()]);
        assert_eq!(report.processes, 1);
        let status = orphan.wait().unwrap();
        assert!(!status.success(), "orphan was killed");
        assert!(!dead_dir.exists());
        assert!(live.dir().exists(), "a live run is left alone");
        assert_eq!(live_runs(root.path()), vec!["live-run".to_string()]);
        drop(live);
        assert!(!root.path().join("runs/live-run").exists());
    }

    #[test]
    fn a_run_id_registers_once() {
        let root = tempfile::tempdir().unwrap();
        let _first = RunGuard::register(root.path(), "same").unwrap();
        let err = RunGuard::register(root.path(), "same").err().unwrap();
        assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);
    }

    #[test]
    fn a_run_registering_during_a_sweep_is_never_taken_for_dead() {
        let root = tempfile::tempdir().unwrap();
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let report = sweep(root.path());
                    assert!(report.runs.is_empty(), "swept a live run: {report:?}");
                }
            });
            for i in 0..300 {
                let guard = RunGuard::register(root.path(), &format!("run-{i}")).unwrap();
                assert!(guard.dir().join("owner").is_file());
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        });
    }

    #[test]
    fn sweep_removes_staging_dirs_of_dead_registrations_only() {
        let root = tempfile::tempdir().unwrap();
        let dead = root.path().join("runs/.staging-999999999-r1");
        let mine = root
            .path()
            .join(format!("runs/.staging-{}-r2", std::process::id()));
        fs::create_dir_all(&dead).unwrap();
        fs::create_dir_all(&mine).unwrap();
        let report = sweep(root.path());
        assert!(report.runs.is_empty());
        assert!(!dead.exists() && mine.exists());
        assert!(live_runs(root.path()).is_empty());
    }
}
