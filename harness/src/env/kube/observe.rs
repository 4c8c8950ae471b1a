//! What podman does to the containers it plays, observed: its event stream, `podman container inspect`
//! after each event, and its container log files. [`PodmanContainer`] is one played container as the step
//! library sees it ([`Orchestrated`]); [`PlayedPods`] is one deploy's pods, removed when the scenario ends.
//!
//! * **State** comes from podman: a container's phase from `State.Status`, its automatic restarts from
//!   `RestartCount` (podman's restart policy), its start time from `State.StartedAt`, its last exit from the
//!   `died` event's exit code. Podman reports a signal death as exit code 128 + n; codes above 128 are read
//!   as signal n, as a shell would. After an exit the phase is named by the manifest's policy (back-off when
//!   it restarts, exited when not); the restart itself is podman's, seen as the next start.
//! * **Lifecycle steps** go to podman: `stop` is `podman stop -t <grace>` (the manifest's
//!   `terminationGracePeriodSeconds`, which podman 4.3's kube play does not apply on its own), `kill` is
//!   SIGKILL to the container's process (its host pid from `podman inspect`), a crash for podman's policy;
//!   `restart` is `podman stop -t <grace>` and `podman start`.
//! * **Logs**: the k8s-file log podman's conmon writes (`HostConfig.LogConfig.Path`), followed from its
//!   start, across restarts (podman appends to it); the CRI line format (`<time> <stream> <P|F> <text>`) is
//!   decoded, partial lines joined.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncSeekExt};
use tokio::sync::{mpsc, watch};

use super::play::PlayObjects;
use super::podman::Podman;
use crate::error::InfraError;
use crate::logs::LogSink;
use crate::manifest::RestartPolicy;
use crate::supervisor::{ExitInfo, Orchestrated, Phase, ProcessState};

/// How often a followed log file is read again at its end.
const LOG_POLL: Duration = Duration::from_millis(20);
/// How long a kill waits for podman to see the container die.
const KILL_SEEN_WITHIN: Duration = Duration::from_secs(10);

/// One event of `podman events --format json`.
#[derive(Debug, Clone, serde::Deserialize)]
pub(super) struct PodmanEvent {
    #[serde(rename = "Name", default)]
    pub name: String,
    #[serde(rename = "Status", default)]
    pub status: String,
    #[serde(rename = "Type", default)]
    pub kind: String,
    #[serde(rename = "ContainerExitCode", default)]
    pub exit_code: Option<i32>,
}

type Subscribers = Arc<Mutex<HashMap<String, mpsc::UnboundedSender<PodmanEvent>>>>;

/// The run's podman event stream (containers labelled with the run id), handed to the containers that
/// follow them by name.
pub(super) struct EventStream {
    subscribers: Subscribers,
    task: tokio::task::JoinHandle<()>,
}

impl EventStream {
    /// Starts `podman events --stream` for the containers of run `run_id`.
    pub(super) fn start(podman: &Podman, label: &str, run_id: &str) -> Result<EventStream, InfraError> {
        let mut child = podman
            .command()
            .args(["events", "--stream", "--format", "json", "--filter"])
            .arg(format!("label={label}={run_id}"))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| InfraError::Unavailable {
                env: "kube".into(),
                reason: format!("cannot run `podman events`: {e}"),
            })?;
        let stdout = child.stdout.take();
        let subscribers: Subscribers = Arc::default();
        let to = subscribers.clone();
        let task = tokio::spawn(async move {
            let _child = child; // killed when the task ends (kill_on_drop)
            let Some(stdout) = stdout else { return };
            let mut lines = tokio::io::BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let Ok(event) = serde_json::from_str::<PodmanEvent>(&line) else {
                    tracing::debug!(line, "podman event not understood");
                    continue;
                };
                if event.kind != "container" {
                    continue;
                }
                if let Ok(subscribers) = to.lock() {
                    if let Some(tx) = subscribers.get(&event.name) {
                        let _ = tx.send(event);
                    }
                }
            }
        });
        Ok(EventStream { subscribers, task })
    }

    /// The events of container `name` from now on.
    pub(super) fn subscribe(&self, name: &str) -> mpsc::UnboundedReceiver<PodmanEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        if let Ok(mut subscribers) = self.subscribers.lock() {
            subscribers.insert(name.to_string(), tx);
        }
        rx
    }

    pub(super) fn unsubscribe(&self, name: &str) {
        if let Ok(mut subscribers) = self.subscribers.lock() {
            subscribers.remove(name);
        }
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What `podman container inspect` says about a container (the fields used here).
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct ContainerInspect {
    #[serde(default)]
    pub state: InspectState,
    #[serde(default)]
    pub restart_count: u32,
    #[serde(default)]
    pub host_config: InspectHostConfig,
}

#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct InspectState {
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub pid: i32,
    #[serde(default)]
    pub exit_code: i32,
    #[serde(default)]
    pub started_at: String,
}

#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct InspectHostConfig {
    #[serde(default)]
    pub log_config: InspectLogConfig,
}

#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct InspectLogConfig {
    #[serde(default)]
    pub path: String,
}

/// `podman container inspect NAME`.
pub(super) async fn inspect(podman: &Podman, name: &str) -> Result<ContainerInspect, InfraError> {
    let found: Vec<ContainerInspect> = podman
        .json(&["container", "inspect", name], "container inspect JSON")
        .await
        .map_err(|e| InfraError::Launch {
            workload: name.to_string(),
            reason: e.to_string(),
        })?;
    found.into_iter().next().ok_or_else(|| InfraError::Launch {
        workload: name.to_string(),
        reason: "podman does not know the container".into(),
    })
}

/// An exit as podman reports it: codes above 128 are read as the signal that ended the process.
pub fn exit_from_code(code: i32) -> ExitInfo {
    if (129..=128 + 64).contains(&code) {
        ExitInfo {
            code: None,
            signal: Some(code - 128),
        }
    } else {
        ExitInfo {
            code: Some(code),
            signal: None,
        }
    }
}

/// The phase podman's status stands for; after an exit, what the manifest's policy says comes next.
/// `None` for a status that changes nothing yet (`removing`, an unknown one). A container that is
/// `stopping` still runs: its exit, and the exit code, come with `stopped`/`exited`.
pub fn phase_of(status: &str, exit: &ExitInfo, policy: RestartPolicy, stopped: bool) -> Option<Phase> {
    match status {
        "running" | "paused" | "stopping" => Some(Phase::Running),
        "created" | "configured" | "initialized" => Some(Phase::Starting),
        "exited" | "stopped" if stopped => Some(Phase::Exited),
        "exited" | "stopped" if policy.restarts_after(exit.code) => Some(Phase::BackOff),
        "exited" | "stopped" => Some(Phase::Exited),
        _ => None,
    }
}

/// Whether podman's status says the container's process has ended.
fn has_exited(status: &str) -> bool {
    matches!(status, "exited" | "stopped")
}

/// One line of a CRI (k8s-file) log: the stream and whether the line is complete, and its text.
pub fn parse_cri_line(line: &str) -> Option<(bool, &str)> {
    let mut parts = line.splitn(4, ' ');
    let (_time, _stream, tag) = (parts.next()?, parts.next()?, parts.next()?);
    let text = parts.next().unwrap_or("");
    match tag {
        "F" => Some((true, text)),
        "P" => Some((false, text)),
        _ => None,
    }
}

/// The pods of one deploy; the last of its containers to be shut down removes them (and the Secrets and
/// ConfigMap volumes the play made). Dropped without that, the pods are removed in the background.
pub(super) struct PlayedPods {
    podman: Podman,
    pods: Vec<String>,
    /// The Secrets and ConfigMap volumes the play made.
    objects: PlayObjects,
    left: AtomicU32,
    removed: AtomicBool,
}

impl PlayedPods {
    pub(super) fn new(
        podman: Podman,
        pods: Vec<String>,
        objects: PlayObjects,
        containers: u32,
    ) -> PlayedPods {
        PlayedPods {
            podman,
            pods,
            objects,
            left: AtomicU32::new(containers),
            removed: AtomicBool::new(false),
        }
    }

    /// One container is done; the last one removes the pods, stopping them within `grace`.
    async fn release(&self, grace: Duration) {
        if self.left.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.remove(grace).await;
        }
    }

    /// `podman pod stop -t <grace>` of every pod, `podman pod rm -f`, then the Secrets. (Stopped first:
    /// podman 4.3's `pod rm -f -t <grace>` of a running pod takes about 3 s more than stop and remove.)
    pub(super) async fn remove(&self, grace: Duration) {
        if self.removed.swap(true, Ordering::SeqCst) {
            return;
        }
        let secs = grace_secs(grace);
        let mut stop: Vec<&str> = vec!["pod", "stop", "--time", &secs];
        stop.extend(self.pods.iter().map(String::as_str));
        if let Err(e) = self.podman.run(&stop).await {
            tracing::debug!(error = %e, "stopping played pods");
        }
        let mut args: Vec<&str> = vec!["pod", "rm", "--force", "--time", "0"];
        args.extend(self.pods.iter().map(String::as_str));
        if let Err(e) = self.podman.run(&args).await {
            tracing::warn!(error = %e, "removing played pods");
        }
        for (kind, names) in [
            ("secret", &self.objects.secrets),
            ("volume", &self.objects.volumes),
        ] {
            if !names.is_empty() {
                let mut args: Vec<&str> = vec![kind, "rm", "--force"];
                args.extend(names.iter().map(String::as_str));
                if let Err(e) = self.podman.run(&args).await {
                    tracing::warn!(error = %e, "removing the play's {kind}s");
                }
            }
        }
    }
}

impl Drop for PlayedPods {
    fn drop(&mut self) {
        if self.removed.load(Ordering::SeqCst) || self.pods.is_empty() {
            return;
        }
        let mut command = std::process::Command::new("podman");
        if let Some(conf) = self.podman.conf() {
            command.env("CONTAINERS_CONF", conf);
        }
        command
            .args(["pod", "rm", "--force", "--time", "0"])
            .args(&self.pods)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        // Not waited for: a drop must not block; the sweep catches what this misses.
        let _ = command.spawn();
    }
}

/// A grace period as podman's whole seconds (rounded up).
fn grace_secs(grace: Duration) -> String {
    let secs = grace.as_secs() + u64::from(grace.subsec_nanos() > 0);
    secs.to_string()
}

/// What the kube environment knows of one container it played.
pub(super) struct Played {
    /// Podman's name of the container (`<pod>-<container>`).
    pub name: String,
    /// The manifest's restart policy (names the phase after an exit; podman applies it).
    pub policy: RestartPolicy,
    /// What a probe command runs under (the SocketCAN emulation's wrapper), may be empty.
    pub exec_prefix: Vec<String>,
    /// The deploy's pods, removed when the last of their containers is shut down.
    pub pods: Arc<PlayedPods>,
}

/// One container podman runs for a scenario.
pub(super) struct PodmanContainer {
    name: String,
    podman: Podman,
    state: watch::Receiver<ProcessState>,
    /// Set while the scenario has stopped it (podman's policy leaves it down).
    stopped: Arc<AtomicBool>,
    /// Restarts the scenario asked for (podman's `RestartCount` counts only its policy's).
    asked_restarts: Arc<AtomicU32>,
    /// What a probe command runs under (the SocketCAN emulation's wrapper), may be empty.
    exec_prefix: Vec<String>,
    pods: Arc<PlayedPods>,
    events: Arc<EventStream>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl PodmanContainer {
    /// Follows a played container: its state through `events` (`received`: its own, subscribed before the
    /// play), its log into `logs`.
    pub(super) async fn follow(
        played: Played,
        podman: Podman,
        events: Arc<EventStream>,
        logs: LogSink,
        received: mpsc::UnboundedReceiver<PodmanEvent>,
    ) -> Result<PodmanContainer, InfraError> {
        let Played {
            name,
            policy,
            exec_prefix,
            pods,
        } = played;
        let first = inspect(&podman, &name).await?;
        let stopped = Arc::new(AtomicBool::new(false));
        let asked_restarts = Arc::new(AtomicU32::new(0));
        let (tx, state) = watch::channel(ProcessState::starting());
        let tracker = Tracker {
            name: name.clone(),
            podman: podman.clone(),
            policy,
            stopped: stopped.clone(),
            asked_restarts: asked_restarts.clone(),
            state: tx,
        };
        tracker.apply(&first, None);
        let log_path = PathBuf::from(&first.host_config.log_config.path);
        let tasks = vec![
            tokio::spawn(tracker.run(received)),
            tokio::spawn(follow_log(log_path, logs)),
        ];
        Ok(PodmanContainer {
            name,
            podman,
            state,
            stopped,
            asked_restarts,
            exec_prefix,
            pods,
            events,
            tasks,
        })
    }

    /// Waits (bounded) until the state satisfies `done`.
    async fn settle(&self, within: Duration, done: impl FnMut(&ProcessState) -> bool) {
        let mut watch = self.state.clone();
        let _ = tokio::time::timeout(within, watch.wait_for(done)).await;
    }
}

impl Drop for PodmanContainer {
    fn drop(&mut self) {
        self.events.unsubscribe(&self.name);
        for task in &self.tasks {
            task.abort();
        }
    }
}

#[async_trait]
impl Orchestrated for PodmanContainer {
    fn watch(&self) -> watch::Receiver<ProcessState> {
        self.state.clone()
    }

    async fn stop(&self, grace: Duration) {
        self.stopped.store(true, Ordering::SeqCst);
        let secs = grace_secs(grace);
        if let Err(e) = self.podman.run(&["stop", "--time", &secs, &self.name]).await {
            tracing::warn!(container = %self.name, error = %e, "podman stop");
        }
        self.settle(Duration::from_secs(5), |s| s.phase != Phase::Running)
            .await;
    }

    async fn kill(&self) {
        let Ok(found) = inspect(&self.podman, &self.name).await else {
            return;
        };
        if found.state.pid <= 0 {
            return;
        }
        let started = self.state.borrow().started_at;
        let pid = nix::unistd::Pid::from_raw(found.state.pid);
        if nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).is_ok() {
            // Done once podman has seen the death (its policy then decides).
            self.settle(KILL_SEEN_WITHIN, |s| {
                s.phase != Phase::Running || s.started_at != started
            })
            .await;
        }
    }

    async fn restart(&self, grace: Duration) {
        self.stopped.store(false, Ordering::SeqCst);
        self.asked_restarts.fetch_add(1, Ordering::SeqCst);
        // `podman stop` then `podman start`: podman 4.3's `restart` of a pod's only container fails once
        // the pod's infra container has stopped with it ("cannot get namespace path").
        let secs = grace_secs(grace);
        if let Err(e) = self.podman.run(&["stop", "--time", &secs, &self.name]).await {
            tracing::warn!(container = %self.name, error = %e, "podman stop");
        }
        if let Err(e) = self.podman.run(&["start", &self.name]).await {
            tracing::warn!(container = %self.name, error = %e, "podman start");
        }
        self.settle(Duration::from_secs(5), |s| s.phase == Phase::Running)
            .await;
    }

    async fn exec(&self, command: &[String]) -> Result<bool, InfraError> {
        let mut args: Vec<String> = vec!["exec".into(), self.name.clone()];
        args.extend(self.exec_prefix.iter().cloned());
        args.extend(command.iter().cloned());
        let status = self
            .podman
            .command()
            .args(&args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .await
            .map_err(|e| InfraError::Launch {
                workload: self.name.clone(),
                reason: format!("podman exec: {e}"),
            })?;
        Ok(status.success())
    }

    async fn shutdown(&self, grace: Duration) {
        self.pods.release(grace).await;
    }
}

/// Keeps one container's [`ProcessState`] as podman reports it.
struct Tracker {
    name: String,
    podman: Podman,
    policy: RestartPolicy,
    stopped: Arc<AtomicBool>,
    asked_restarts: Arc<AtomicU32>,
    state: watch::Sender<ProcessState>,
}

impl Tracker {
    async fn run(self, mut received: mpsc::UnboundedReceiver<PodmanEvent>) {
        while let Some(event) = received.recv().await {
            // Coalesce what arrived meanwhile: one inspect for a burst of events.
            let mut died = (event.status == "died").then_some(event.exit_code).flatten();
            while let Ok(more) = received.try_recv() {
                if more.status == "died" {
                    died = more.exit_code.or(died);
                }
            }
            match inspect(&self.podman, &self.name).await {
                Ok(found) => self.apply(&found, died),
                Err(_) => return, // removed
            }
        }
    }

    /// Publishes what `podman inspect` said (and the exit code of a `died` event seen since).
    fn apply(&self, found: &ContainerInspect, died: Option<i32>) {
        let stopped = self.stopped.load(Ordering::SeqCst);
        let asked = self.asked_restarts.load(Ordering::SeqCst);
        let exited = has_exited(&found.state.status);
        let started_at = chrono::DateTime::parse_from_rfc3339(&found.state.started_at)
            .map(SystemTime::from)
            .ok();
        self.state.send_modify(|s| {
            if exited {
                // Podman's own record of this exit; a `died` event's code when inspect has none yet.
                s.last_exit = Some(exit_from_code(found.state.exit_code));
            } else if let Some(code) = died {
                s.last_exit = Some(exit_from_code(code));
            }
            let exit = s.last_exit.clone().unwrap_or(ExitInfo {
                code: Some(0),
                signal: None,
            });
            if let Some(phase) = phase_of(&found.state.status, &exit, self.policy, stopped) {
                s.phase = phase;
            }
            s.restarts = found.restart_count;
            if let Some(at) = started_at.filter(|t| *t > SystemTime::UNIX_EPOCH) {
                s.started_at = at;
                s.starts = 1 + found.restart_count + asked;
            }
            s.stopped = stopped && exited;
        });
    }
}

/// Follows a k8s-file log from its start into `logs`.
async fn follow_log(path: PathBuf, logs: LogSink) {
    let mut file = loop {
        match tokio::fs::File::open(&path).await {
            Ok(f) => break f,
            Err(_) => tokio::time::sleep(LOG_POLL).await,
        }
    };
    let mut pending = String::new();
    let mut partial = String::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut offset = 0u64;
    loop {
        match file.read(&mut buf).await {
            Ok(0) => {
                tokio::time::sleep(LOG_POLL).await;
                // A log rotated or truncated by podman starts over.
                if let Ok(meta) = tokio::fs::metadata(&path).await {
                    if meta.len() < offset {
                        offset = 0;
                        let _ = file.seek(std::io::SeekFrom::Start(0)).await;
                    }
                }
            }
            Ok(n) => {
                offset += n as u64;
                pending.push_str(&String::from_utf8_lossy(&buf[..n]));
                while let Some(end) = pending.find('\n') {
                    let line: String = pending.drain(..=end).collect();
                    if let Some((complete, text)) = parse_cri_line(line.trim_end_matches('\n')) {
                        partial.push_str(text);
                        if complete {
                            logs.push(&partial);
                            partial.clear();
                        }
                    }
                }
            }
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_above_128_are_signals() {
        assert_eq!(exit_from_code(137).signal, Some(9));
        assert_eq!(exit_from_code(137).code, None);
        assert_eq!(exit_from_code(3).code, Some(3));
        assert_eq!(exit_from_code(255).code, Some(255));
    }

    #[test]
    fn phases_follow_podman_status_and_the_policy_after_an_exit() {
        let crash = exit_from_code(3);
        let clean = exit_from_code(0);
        let phase = |status, exit, policy, stopped| phase_of(status, exit, policy, stopped);
        assert_eq!(
            phase("running", &crash, RestartPolicy::Never, false),
            Some(Phase::Running)
        );
        // Stopping still runs; the exit (and its code) come with `stopped` or `exited`.
        assert_eq!(
            phase("stopping", &crash, RestartPolicy::Never, true),
            Some(Phase::Running)
        );
        assert_eq!(
            phase("exited", &crash, RestartPolicy::OnFailure, false),
            Some(Phase::BackOff)
        );
        assert_eq!(
            phase("exited", &clean, RestartPolicy::OnFailure, false),
            Some(Phase::Exited)
        );
        assert_eq!(
            phase("stopped", &crash, RestartPolicy::Always, true),
            Some(Phase::Exited)
        );
        assert_eq!(
            phase("created", &clean, RestartPolicy::Always, false),
            Some(Phase::Starting)
        );
        assert_eq!(phase("removing", &clean, RestartPolicy::Always, false), None);
    }

    #[test]
    fn cri_log_lines_are_decoded_and_partials_marked() {
        assert_eq!(
            parse_cri_line("2026-12-01T15:20:53.684737081+00:00 stdout F hello world"),
            Some((true, "hello world"))
        );
        assert_eq!(
            parse_cri_line("2026-12-01T15:20:53.684737081+00:00 stderr P part"),
            Some((false, "part"))
        );
        assert_eq!(
            parse_cri_line("2026-12-01T15:20:53+00:00 stdout F "),
            Some((true, ""))
        );
        assert_eq!(parse_cri_line("garbage"), None);
    }

    #[test]
    fn grace_periods_round_up_to_whole_seconds() {
        assert_eq!(grace_secs(Duration::from_millis(0)), "0");
        assert_eq!(grace_secs(Duration::from_millis(1500)), "2");
        assert_eq!(grace_secs(Duration::from_secs(2)), "2");
    }
}
