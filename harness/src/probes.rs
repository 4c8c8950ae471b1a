//! Startup and liveness probes of one container, with the kubelet's semantics, the same in every
//! environment (the probe command runs through the environment's [`crate::supervisor::Launcher::exec`]).
//!
//! For each incarnation of the container: the startup probe (if any) runs every `period` until it passes;
//! `failure_threshold` failures in a row end the container as failed. Once it has passed (or when there is
//! none), readiness may be checked ([`ProbeTask::started`]) and the liveness probe (if any) runs every
//! `period`; `failure_threshold` failures in a row end the container as failed, and the restart policy
//! decides what happens next. A new incarnation starts the sequence again.

use std::time::Duration;

use tokio::sync::watch;

use crate::manifest::{ContainerSpec, ExecProbe};
use crate::supervisor::{Phase, ProcessState, SupervisorControl};

/// The probe task of one container; dropping it stops the probes.
pub struct ProbeTask {
    task: tokio::task::JoinHandle<()>,
    started: watch::Receiver<Option<u32>>,
}

impl ProbeTask {
    /// Starts probing `container` if it has a startup or liveness probe.
    pub fn spawn(
        container: &ContainerSpec,
        control: SupervisorControl,
        grace: Duration,
    ) -> Option<ProbeTask> {
        if container.startup.is_none() && container.liveness.is_none() {
            return None;
        }
        let (tx, started) = watch::channel(None);
        let startup = container.startup.clone();
        let liveness = container.liveness.clone();
        let task = tokio::spawn(run(startup, liveness, control, grace, tx));
        Some(ProbeTask { task, started })
    }

    /// Waits until the startup probe has passed for the running incarnation.
    pub async fn started(&self) {
        let mut rx = self.started.clone();
        let _ = rx.wait_for(|s| s.is_some()).await;
    }
}

impl Drop for ProbeTask {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The incarnation running now, if any.
fn running(state: &ProcessState) -> Option<u32> {
    (state.phase == Phase::Running).then_some(state.starts)
}

async fn run(
    startup: Option<ExecProbe>,
    liveness: Option<ExecProbe>,
    control: SupervisorControl,
    grace: Duration,
    started: watch::Sender<Option<u32>>,
) {
    let mut state = control.watch();
    loop {
        // Wait for a running incarnation.
        let Ok(incarnation) = state.wait_for(|s| running(s).is_some()).await.map(|s| s.starts) else {
            return;
        };
        started.send_replace(None);
        if let Some(p) = &startup {
            match probe_until(p, &control, incarnation, Until::Passes).await {
                Verdict::Passed => {}
                Verdict::Failed(n) => {
                    control
                        .logs()
                        .note(&format!("startup probe failed {n} times: ending the container"));
                    control.fail(grace).await;
                    continue;
                }
                Verdict::Gone => {
                    wait_next(&mut state, incarnation).await;
                    continue;
                }
            }
        }
        started.send_replace(Some(incarnation));
        if let Some(p) = &liveness {
            if let Verdict::Failed(n) = probe_until(p, &control, incarnation, Until::Fails).await {
                control
                    .logs()
                    .note(&format!("liveness probe failed {n} times: ending the container"));
                control.fail(grace).await;
                continue;
            }
        }
        wait_next(&mut state, incarnation).await;
    }
}

/// Waits until the incarnation `current` is no longer the running one.
async fn wait_next(state: &mut watch::Receiver<ProcessState>, current: u32) {
    let _ = state.wait_for(|s| running(s) != Some(current)).await;
}

enum Until {
    /// A startup probe: until one success.
    Passes,
    /// A liveness probe: until `failure_threshold` failures in a row.
    Fails,
}

enum Verdict {
    Passed,
    Failed(u32),
    /// The incarnation ended while probing.
    Gone,
}

async fn probe_until(p: &ExecProbe, control: &SupervisorControl, incarnation: u32, until: Until) -> Verdict {
    let alive = || running(&control.watch().borrow()) == Some(incarnation);
    tokio::time::sleep(p.initial_delay).await;
    let mut failures = 0;
    loop {
        if !alive() {
            return Verdict::Gone;
        }
        let ok = matches!(
            tokio::time::timeout(p.timeout, control.exec(&p.command)).await,
            Ok(Ok(true))
        );
        if !alive() {
            return Verdict::Gone;
        }
        if ok {
            failures = 0;
            if let Until::Passes = until {
                return Verdict::Passed;
            }
        } else {
            failures += 1;
            if failures >= p.failure_threshold {
                return Verdict::Failed(failures);
            }
        }
        tokio::time::sleep(p.period).await;
    }
}
