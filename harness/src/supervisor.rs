//! Supervision of one container's process: start, restart policy with back-off, stop, kill, restart.
//!
//! The same supervisor drives every environment, so a crashed workload is restarted by the same rules
//! whether it is a host process, a Docker container or a KVM guest; environments only provide a
//! [`Launcher`] that starts one incarnation and a [`Process`] handle to wait for and signal it.
//!
//! Restart back-off follows Kubernetes' shape, scaled for tests: 100 ms after the first crash, doubling up
//! to 3.2 s, reset after 10 s of running.
//!
//! Where an orchestrator owns the container's life (the kube environment, `podman kube play`), the
//! supervisor decides nothing: [`Supervisor::observe`] wraps an [`Orchestrated`] container whose state
//! comes from the orchestrator and to which the scenario's stop, kill and restart are passed on. The step
//! library sees the same [`Supervisor`] either way.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot, watch};

use crate::error::InfraError;
use crate::logs::LogSink;
use crate::manifest::RestartPolicy;

const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_millis(3200);
const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(10);

/// How an incarnation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitInfo {
    /// Exit code, or `None` when ended by a signal.
    pub code: Option<i32>,
    /// Signal number when killed by one.
    pub signal: Option<i32>,
}

impl std::fmt::Display for ExitInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.code, self.signal) {
            (Some(code), _) => write!(f, "exit code {code}"),
            (None, Some(sig)) => write!(f, "killed by signal {sig}"),
            (None, None) => write!(f, "ended"),
        }
    }
}

/// How to end a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    /// SIGTERM or the environment's graceful stop.
    Terminate,
    /// SIGKILL or the environment's hard stop.
    Kill,
}

/// A running incarnation of a container.
#[async_trait]
pub trait Process: Send {
    /// Waits for the process to end. Must be cancellation-safe.
    async fn wait(&mut self) -> ExitInfo;
    /// Sends a stop signal; returns at once.
    async fn signal(&mut self, signal: StopSignal) -> Result<(), InfraError>;
}

/// Starts incarnations of one container, wiring its stdout/stderr into `logs`.
#[async_trait]
pub trait Launcher: Send + Sync {
    async fn launch(&self, logs: &LogSink) -> Result<Box<dyn Process>, InfraError>;

    /// Runs a readiness-probe command in the context of the container (its environment, its filesystem);
    /// `Ok(true)` when it exits with code 0.
    async fn exec(&self, command: &[String]) -> Result<bool, InfraError>;
}

/// A container whose life an orchestrator owns: restart policy, back-off and probes are the orchestrator's;
/// this handle reports what the orchestrator says (kept current in [`Orchestrated::watch`]) and carries the
/// scenario's lifecycle steps to it.
#[async_trait]
pub trait Orchestrated: Send + Sync {
    /// The container's state as the orchestrator reports it.
    fn watch(&self) -> watch::Receiver<ProcessState>;
    /// Graceful stop through the orchestrator (its stop with `grace`); it does not restart it.
    async fn stop(&self, grace: Duration);
    /// SIGKILL to the container's process, as a crash: the orchestrator's restart policy decides.
    async fn kill(&self);
    /// A restart asked by the scenario (the orchestrator's restart with `grace`).
    async fn restart(&self, grace: Duration);
    /// Runs a probe command in the container; `Ok(true)` when it exits with code 0.
    async fn exec(&self, command: &[String]) -> Result<bool, InfraError>;
    /// The end of the scenario for this container: the orchestrator removes it (with `grace`).
    async fn shutdown(&self, grace: Duration);
}

/// Where the supervised container is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    Starting,
    Running,
    /// Crashed; waiting to be restarted.
    BackOff,
    /// Ended and not restarted (policy, or stopped by the scenario).
    Exited,
    /// Could not be started.
    Failed(String),
}

/// Observable state of a supervised container.
#[derive(Debug, Clone)]
pub struct ProcessState {
    pub phase: Phase,
    /// Incarnations started so far.
    pub starts: u32,
    /// Automatic restarts done by the restart policy.
    pub restarts: u32,
    /// Wall-clock time the current (or last) incarnation started.
    pub started_at: SystemTime,
    pub last_exit: Option<ExitInfo>,
    /// True once the scenario stopped it on purpose.
    pub stopped: bool,
}

impl ProcessState {
    /// Before the first start.
    pub fn starting() -> ProcessState {
        ProcessState {
            phase: Phase::Starting,
            starts: 0,
            restarts: 0,
            started_at: SystemTime::now(),
            last_exit: None,
            stopped: false,
        }
    }
}

enum Command {
    Stop {
        grace: Duration,
        done: oneshot::Sender<()>,
    },
    Kill {
        done: oneshot::Sender<()>,
    },
    Restart {
        grace: Duration,
        done: oneshot::Sender<()>,
    },
    /// A failed liveness or startup probe: terminate (grace, then kill); the restart policy decides.
    Fail {
        grace: Duration,
        done: oneshot::Sender<()>,
    },
}

/// Handle to a supervised container. Dropping it kills the process (or, orchestrated, leaves the removal
/// to the orchestrated container's own drop).
pub struct Supervisor {
    driver: Driver,
}

/// Who decides the container's life.
enum Driver {
    /// This module's restart policy, through a [`Launcher`].
    Harness {
        control: SupervisorControl,
        task: Option<tokio::task::JoinHandle<()>>,
    },
    /// An orchestrator; only observed.
    Orchestrator {
        container: Arc<dyn Orchestrated>,
        logs: LogSink,
    },
}

impl Supervisor {
    /// Starts the first incarnation and supervises it under `policy`.
    pub fn start(launcher: Arc<dyn Launcher>, policy: RestartPolicy, logs: LogSink) -> Supervisor {
        let (commands, rx) = mpsc::unbounded_channel();
        let (state_tx, state) = watch::channel(ProcessState::starting());
        let task = tokio::spawn(supervise(launcher.clone(), policy, logs.clone(), rx, state_tx));
        Supervisor {
            driver: Driver::Harness {
                control: SupervisorControl {
                    launcher,
                    commands,
                    state,
                    logs,
                },
                task: Some(task),
            },
        }
    }

    /// Follows a container whose life an orchestrator owns; `logs` is where its output is collected.
    pub fn observe(container: Arc<dyn Orchestrated>, logs: LogSink) -> Supervisor {
        Supervisor {
            driver: Driver::Orchestrator { container, logs },
        }
    }

    pub fn state(&self) -> ProcessState {
        match &self.driver {
            Driver::Harness { control, .. } => control.state.borrow().clone(),
            Driver::Orchestrator { container, .. } => container.watch().borrow().clone(),
        }
    }

    /// A receiver to wait for state changes.
    pub fn watch(&self) -> watch::Receiver<ProcessState> {
        match &self.driver {
            Driver::Harness { control, .. } => control.watch(),
            Driver::Orchestrator { container, .. } => container.watch(),
        }
    }

    pub fn logs(&self) -> &LogSink {
        match &self.driver {
            Driver::Harness { control, .. } => control.logs(),
            Driver::Orchestrator { logs, .. } => logs,
        }
    }

    /// Runs a probe command in the container (see [`Launcher::exec`]).
    pub async fn exec(&self, command: &[String]) -> Result<bool, InfraError> {
        match &self.driver {
            Driver::Harness { control, .. } => control.exec(command).await,
            Driver::Orchestrator { container, .. } => container.exec(command).await,
        }
    }

    /// Graceful stop: terminate, wait up to `grace`, then kill. The policy does not restart it.
    pub async fn stop(&self, grace: Duration) {
        match &self.driver {
            Driver::Harness { control, .. } => control.send(|done| Command::Stop { grace, done }).await,
            Driver::Orchestrator { container, .. } => container.stop(grace).await,
        }
    }

    /// Hard kill, as a crash: the restart policy decides what happens next.
    pub async fn kill(&self) {
        match &self.driver {
            Driver::Harness { control, .. } => control.send(|done| Command::Kill { done }).await,
            Driver::Orchestrator { container, .. } => container.kill().await,
        }
    }

    /// A cheap handle for tasks that watch and act on this container (probes); `None` when an orchestrator
    /// runs the container's probes.
    pub fn control(&self) -> Option<SupervisorControl> {
        match &self.driver {
            Driver::Harness { control, .. } => Some(control.clone()),
            Driver::Orchestrator { .. } => None,
        }
    }

    /// Stops the current incarnation (gracefully) and starts a new one.
    pub async fn restart(&self, grace: Duration) {
        match &self.driver {
            Driver::Harness { control, .. } => control.send(|done| Command::Restart { grace, done }).await,
            Driver::Orchestrator { container, .. } => container.restart(grace).await,
        }
    }

    /// Stops the process for good (graceful, then kill) and ends supervision.
    pub async fn shutdown(mut self, grace: Duration) {
        match &mut self.driver {
            Driver::Harness { control, task } => {
                control.send(|done| Command::Stop { grace, done }).await;
                if let Some(task) = task.take() {
                    task.abort();
                    let _ = task.await;
                }
            }
            Driver::Orchestrator { container, .. } => container.shutdown(grace).await,
        }
    }
}

/// What a probe task may do to a supervised container: watch it, exec in it, fail it.
#[derive(Clone)]
pub struct SupervisorControl {
    launcher: Arc<dyn Launcher>,
    commands: mpsc::UnboundedSender<Command>,
    state: watch::Receiver<ProcessState>,
    logs: LogSink,
}

impl SupervisorControl {
    pub fn watch(&self) -> watch::Receiver<ProcessState> {
        self.state.clone()
    }

    pub fn logs(&self) -> &LogSink {
        &self.logs
    }

    /// Runs a probe command in the container (see [`Launcher::exec`]).
    pub async fn exec(&self, command: &[String]) -> Result<bool, InfraError> {
        self.launcher.exec(command).await
    }

    /// See [`Supervisor::fail`].
    pub async fn fail(&self, grace: Duration) {
        self.send(|done| Command::Fail { grace, done }).await
    }

    /// Sends a command and waits until the supervisor has carried it out (at once when it is gone).
    async fn send(&self, command: impl FnOnce(oneshot::Sender<()>) -> Command) {
        let (done, wait) = oneshot::channel();
        if self.commands.send(command(done)).is_ok() {
            let _ = wait.await;
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        // Aborting the task drops the `Process`, whose own Drop kills what is left.
        if let Driver::Harness { task: Some(task), .. } = &self.driver {
            task.abort();
        }
    }
}

async fn supervise(
    launcher: Arc<dyn Launcher>,
    policy: RestartPolicy,
    logs: LogSink,
    mut commands: mpsc::UnboundedReceiver<Command>,
    state: watch::Sender<ProcessState>,
) {
    let mut backoff = BACKOFF_START;
    let mut pending: Option<Command> = None;
    'incarnations: loop {
        state.send_modify(|s| {
            s.phase = Phase::Starting;
            s.stopped = false;
        });
        let mut process = match launcher.launch(&logs).await {
            Ok(p) => p,
            Err(e) => {
                logs.note(&format!("launch failed: {e}"));
                state.send_modify(|s| s.phase = Phase::Failed(e.to_string()));
                finish_pending(pending.take());
                park(&mut commands, &state).await;
                return;
            }
        };
        let started = Instant::now();
        state.send_modify(|s| {
            s.phase = Phase::Running;
            s.starts += 1;
            s.started_at = SystemTime::now();
        });
        finish_pending(pending.take()); // a Restart completes once the new incarnation runs

        // Run until the process ends or a command arrives.
        let exit = tokio::select! {
            exit = process.wait() => exit,
            cmd = commands.recv() => {
                let Some(cmd) = cmd else {
                    let _ = process.signal(StopSignal::Kill).await;
                    let _ = process.wait().await;
                    return;
                };
                match cmd {
                    Command::Stop { grace, done } => {
                        let exit = end(&mut *process, grace).await;
                        logs.note(&format!("stopped by the scenario ({exit})"));
                        state.send_modify(|s| { s.phase = Phase::Exited; s.last_exit = Some(exit); s.stopped = true; });
                        let _ = done.send(());
                        // Parked: only Restart brings it back.
                        match wait_restart(&mut commands, &state).await {
                            Some(next) => { pending = Some(next); continue 'incarnations; }
                            None => return,
                        }
                    }
                    Command::Restart { grace, done } => {
                        let exit = end(&mut *process, grace).await;
                        logs.note(&format!("restarted by the scenario ({exit})"));
                        state.send_modify(|s| s.last_exit = Some(exit));
                        pending = Some(Command::Restart { grace, done });
                        continue 'incarnations;
                    }
                    Command::Kill { done } => {
                        let _ = process.signal(StopSignal::Kill).await;
                        let exit = process.wait().await;
                        logs.note(&format!("killed by the scenario ({exit})"));
                        let _ = done.send(());
                        exit
                    }
                    Command::Fail { grace, done } => {
                        let exit = end(&mut *process, grace).await;
                        logs.note(&format!("ended after a failed probe ({exit})"));
                        let _ = done.send(());
                        // A container ended by a failed probe has failed, whatever its exit code.
                        let code = exit.code.filter(|c| *c != 0);
                        let signal = if code.is_none() { exit.signal.or(Some(libc::SIGTERM)) } else { None };
                        ExitInfo { code, signal }
                    }
                }
            }
        };

        // The incarnation ended on its own (or was killed as a crash): apply the restart policy.
        logs.note(&format!("exited: {exit}"));
        let restart = policy.restarts_after(exit.code);
        state.send_modify(|s| {
            s.last_exit = Some(exit.clone());
            s.phase = if restart { Phase::BackOff } else { Phase::Exited };
        });
        if !restart {
            match wait_restart(&mut commands, &state).await {
                Some(next) => {
                    pending = Some(next);
                    continue 'incarnations;
                }
                None => return,
            }
        }
        if started.elapsed() >= BACKOFF_RESET_AFTER {
            backoff = BACKOFF_START;
        }
        let sleep = tokio::time::sleep(backoff);
        tokio::pin!(sleep);
        backoff = (backoff * 2).min(BACKOFF_MAX);
        loop {
            tokio::select! {
                _ = &mut sleep => break,
                cmd = commands.recv() => match cmd {
                    None => return,
                    Some(Command::Kill { done } | Command::Fail { done, .. }) => { let _ = done.send(()); }
                    Some(Command::Stop { done, .. }) => {
                        state.send_modify(|s| { s.phase = Phase::Exited; s.stopped = true; });
                        let _ = done.send(());
                        match wait_restart(&mut commands, &state).await {
                            Some(next) => { pending = Some(next); continue 'incarnations; }
                            None => return,
                        }
                    }
                    Some(restart @ Command::Restart { .. }) => { pending = Some(restart); continue 'incarnations; }
                },
            }
        }
        state.send_modify(|s| s.restarts += 1);
    }
}

/// Terminate, give it `grace`, then kill.
async fn end(process: &mut dyn Process, grace: Duration) -> ExitInfo {
    if process.signal(StopSignal::Terminate).await.is_ok() {
        if let Ok(exit) = tokio::time::timeout(grace, process.wait()).await {
            return exit;
        }
    }
    let _ = process.signal(StopSignal::Kill).await;
    process.wait().await
}

/// While not running: acknowledge stop/kill, return the first Restart (None when the handle is gone).
async fn wait_restart(
    commands: &mut mpsc::UnboundedReceiver<Command>,
    _state: &watch::Sender<ProcessState>,
) -> Option<Command> {
    loop {
        match commands.recv().await? {
            Command::Stop { done, .. } | Command::Kill { done } | Command::Fail { done, .. } => {
                let _ = done.send(());
            }
            restart @ Command::Restart { .. } => return Some(restart),
        }
    }
}

/// After a failed launch: acknowledge everything until the handle is dropped.
async fn park(commands: &mut mpsc::UnboundedReceiver<Command>, _state: &watch::Sender<ProcessState>) {
    while let Some(cmd) = commands.recv().await {
        finish_pending(Some(cmd));
    }
}

fn finish_pending(cmd: Option<Command>) {
    match cmd {
        Some(Command::Stop { done, .. })
        | Some(Command::Kill { done })
        | Some(Command::Fail { done, .. })
        | Some(Command::Restart { done, .. }) => {
            let _ = done.send(());
        }
        None => {}
    }
}

#[cfg(test)]
mod tests {
    //! The supervisor against a fake launcher: restart policy and lifecycle commands, no real processes.
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A fake process that ends with the scripted exit code when told, or when signalled.
    struct FakeProcess {
        ends: Option<oneshot::Receiver<i32>>,
        signalled: Option<i32>,
    }

    #[async_trait]
    impl Process for FakeProcess {
        async fn wait(&mut self) -> ExitInfo {
            if let Some(sig) = self.signalled {
                return ExitInfo {
                    code: None,
                    signal: Some(sig),
                };
            }
            match self.ends.as_mut() {
                Some(rx) => match rx.await {
                    Ok(code) => {
                        self.ends = None;
                        self.signalled = Some(0);
                        ExitInfo {
                            code: Some(code),
                            signal: None,
                        }
                    }
                    Err(_) => std::future::pending().await,
                },
                None => std::future::pending().await,
            }
        }
        async fn signal(&mut self, signal: StopSignal) -> Result<(), InfraError> {
            self.signalled = Some(if signal == StopSignal::Kill { 9 } else { 15 });
            Ok(())
        }
    }

    /// Each launch hands the test a sender that makes that incarnation exit with a code.
    struct FakeLauncher {
        launches: AtomicU32,
        exits: mpsc::UnboundedSender<oneshot::Sender<i32>>,
    }

    #[async_trait]
    impl Launcher for FakeLauncher {
        async fn launch(&self, _logs: &LogSink) -> Result<Box<dyn Process>, InfraError> {
            self.launches.fetch_add(1, Ordering::SeqCst);
            let (tx, rx) = oneshot::channel();
            let _ = self.exits.send(tx);
            Ok(Box::new(FakeProcess {
                ends: Some(rx),
                signalled: None,
            }))
        }
        async fn exec(&self, _command: &[String]) -> Result<bool, InfraError> {
            Ok(true)
        }
    }

    fn setup(policy: RestartPolicy) -> (Supervisor, mpsc::UnboundedReceiver<oneshot::Sender<i32>>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let launcher = Arc::new(FakeLauncher {
            launches: AtomicU32::new(0),
            exits: tx,
        });
        (Supervisor::start(launcher, policy, LogSink::memory("fake")), rx)
    }

    // The binding keeps the watch borrow from outliving `w` (tail-expression temporaries, edition 2021).
    #[allow(clippy::let_and_return)]
    async fn until(sup: &Supervisor, f: impl Fn(&ProcessState) -> bool) -> ProcessState {
        let mut w = sup.watch();
        let s = tokio::time::timeout(Duration::from_secs(10), w.wait_for(|s| f(s))).await;
        let state = s.expect("state reached").expect("supervisor alive").clone();
        state
    }

    #[tokio::test(start_paused = true)]
    async fn always_restarts_after_crash_and_counts() {
        let (sup, mut exits) = setup(RestartPolicy::Always);
        exits.recv().await.unwrap().send(1).unwrap();
        let s = until(&sup, |s| s.restarts == 1 && s.phase == Phase::Running).await;
        assert_eq!(s.starts, 2);
        assert_eq!(
            s.last_exit,
            Some(ExitInfo {
                code: Some(1),
                signal: None
            })
        );
    }

    #[tokio::test(start_paused = true)]
    async fn on_failure_does_not_restart_clean_exit() {
        let (sup, mut exits) = setup(RestartPolicy::OnFailure);
        exits.recv().await.unwrap().send(0).unwrap();
        let s = until(&sup, |s| s.phase == Phase::Exited).await;
        assert_eq!(s.restarts, 0);
        assert_eq!(s.starts, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn kill_is_a_crash_and_stop_is_final() {
        let (sup, mut exits) = setup(RestartPolicy::OnFailure);
        let _first = exits.recv().await.unwrap();
        until(&sup, |s| s.phase == Phase::Running).await;
        sup.kill().await;
        let s = until(&sup, |s| s.restarts == 1 && s.phase == Phase::Running).await;
        assert_eq!(s.last_exit.as_ref().and_then(|e| e.signal), Some(9));
        let _second = exits.recv().await.unwrap();
        sup.stop(Duration::from_millis(10)).await;
        let s = sup.state();
        assert_eq!(s.phase, Phase::Exited);
        assert!(s.stopped);
        sup.restart(Duration::from_millis(10)).await;
        let s = until(&sup, |s| s.phase == Phase::Running).await;
        assert_eq!(s.starts, 3);
        assert_eq!(s.restarts, 1, "a deliberate restart is not a policy restart");
    }

    #[tokio::test(start_paused = true)]
    async fn never_policy_leaves_it_exited() {
        let (sup, mut exits) = setup(RestartPolicy::Never);
        exits.recv().await.unwrap().send(3).unwrap();
        let s = until(&sup, |s| s.phase == Phase::Exited).await;
        assert_eq!(s.last_exit.and_then(|e| e.code), Some(3));
    }
}
