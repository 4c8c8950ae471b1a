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

#[cfg(test)]
mod tests {
    //! Probes against a fake launcher whose probe answers are scripted per incarnation; paused time.
    use super::*;
    use crate::error::InfraError;
    use crate::logs::LogSink;
    use crate::manifest::RestartPolicy;
    use crate::supervisor::{ExitInfo, Launcher, Process, StopSignal, Supervisor};
    use async_trait::async_trait;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    /// Runs until signalled.
    struct Forever {
        signalled: Option<i32>,
    }

    #[async_trait]
    impl Process for Forever {
        async fn wait(&mut self) -> ExitInfo {
            match self.signalled {
                Some(sig) => ExitInfo {
                    code: None,
                    signal: Some(sig),
                },
                None => std::future::pending().await,
            }
        }
        async fn signal(&mut self, signal: StopSignal) -> Result<(), InfraError> {
            self.signalled = Some(if signal == StopSignal::Kill { 9 } else { 15 });
            Ok(())
        }
    }

    /// Probe answers: `answer(incarnation, call)`.
    struct Scripted {
        launches: AtomicU32,
        calls: AtomicU32,
        answer: fn(u32, u32) -> bool,
    }

    #[async_trait]
    impl Launcher for Scripted {
        async fn launch(&self, _logs: &LogSink) -> Result<Box<dyn Process>, InfraError> {
            self.launches.fetch_add(1, Ordering::SeqCst);
            self.calls.store(0, Ordering::SeqCst);
            Ok(Box::new(Forever { signalled: None }))
        }
        async fn exec(&self, _command: &[String]) -> Result<bool, InfraError> {
            let call = self.calls.fetch_add(1, Ordering::SeqCst);
            Ok((self.answer)(self.launches.load(Ordering::SeqCst), call))
        }
    }

    fn probe(failure_threshold: u32) -> ExecProbe {
        ExecProbe {
            command: vec!["/probe".into()],
            initial_delay: Duration::ZERO,
            period: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            failure_threshold,
            success_threshold: 1,
        }
    }

    fn start(
        answer: fn(u32, u32) -> bool,
        policy: RestartPolicy,
        container: ContainerSpec,
    ) -> (Supervisor, Option<ProbeTask>, Arc<Scripted>) {
        let launcher = Arc::new(Scripted {
            launches: AtomicU32::new(0),
            calls: AtomicU32::new(0),
            answer,
        });
        let sup = Supervisor::start(launcher.clone(), policy, LogSink::memory("c"));
        let control = sup.control().expect("the harness supervises");
        let task = ProbeTask::spawn(&container, control, Duration::from_secs(1));
        (sup, task, launcher)
    }

    async fn until(sup: &Supervisor, f: impl Fn(&ProcessState) -> bool) -> ProcessState {
        let mut w = sup.watch();
        let state = tokio::time::timeout(Duration::from_secs(120), w.wait_for(|s| f(s)))
            .await
            .expect("state reached")
            .expect("supervisor alive")
            .clone();
        state
    }

    #[tokio::test(start_paused = true)]
    async fn failing_liveness_restarts_the_container_then_a_healthy_one_stays() {
        // The first incarnation fails every probe; later ones pass.
        let container = ContainerSpec {
            liveness: Some(probe(3)),
            ..Default::default()
        };
        let (sup, task, launcher) = start(|inc, _| inc > 1, RestartPolicy::Always, container);
        assert!(task.is_some());
        let state = until(&sup, |s| s.starts == 2 && s.phase == Phase::Running).await;
        assert_eq!(state.restarts, 1);
        assert!(sup.logs().tail(100).contains("liveness probe failed 3 times"));
        // Healthy now: another minute of probes restarts nothing.
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(sup.state().starts, 2);
        assert!(launcher.calls.load(Ordering::SeqCst) >= 50);
    }

    #[tokio::test(start_paused = true)]
    async fn liveness_failure_under_never_leaves_the_container_exited() {
        let container = ContainerSpec {
            liveness: Some(probe(2)),
            ..Default::default()
        };
        let (sup, _task, _) = start(|_, _| false, RestartPolicy::Never, container);
        let state = until(&sup, |s| s.phase == Phase::Exited).await;
        assert_eq!((state.starts, state.restarts), (1, 0));
        assert!(!state.stopped, "ended by the probe, not by the scenario");
    }

    #[tokio::test(start_paused = true)]
    async fn startup_gates_liveness_and_started() {
        // Startup passes on the third call; liveness (which would fail at once) only runs afterwards, so
        // the container is restarted only after started() resolved.
        let container = ContainerSpec {
            startup: Some(probe(5)),
            liveness: Some(ExecProbe {
                initial_delay: Duration::from_secs(5),
                ..probe(1)
            }),
            ..Default::default()
        };
        let (sup, task, launcher) = start(|inc, call| inc > 1 || call == 2, RestartPolicy::Always, container);
        let task = task.unwrap();
        until(&sup, |s| s.phase == Phase::Running).await;
        task.started().await;
        assert_eq!(
            launcher.calls.load(Ordering::SeqCst),
            3,
            "two failed startup probes, one success"
        );
        until(&sup, |s| s.starts == 2).await;
        assert!(sup.logs().tail(100).contains("liveness probe failed 1 times"));
    }

    #[tokio::test(start_paused = true)]
    async fn startup_failures_end_the_container() {
        let container = ContainerSpec {
            startup: Some(probe(2)),
            ..Default::default()
        };
        let (sup, _task, _) = start(|inc, _| inc > 1, RestartPolicy::OnFailure, container);
        let state = until(&sup, |s| s.starts == 2 && s.phase == Phase::Running).await;
        assert_eq!(state.restarts, 1);
        assert!(sup.logs().tail(100).contains("startup probe failed 2 times"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_container_without_startup_or_liveness_probes_gets_no_task() {
        let (_sup, task, _) = start(|_, _| false, RestartPolicy::Always, ContainerSpec::default());
        assert!(task.is_none());
    }
}
