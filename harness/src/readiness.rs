//! Readiness of a deployed pod, decided the same way in every environment.
//!
//! * [`Readiness::Started`]: every container is running.
//! * [`Readiness::CanFrame`]: a frame with the given id appeared on the pod's first bus after the start.
//! * [`Readiness::Exec`]: every container's exec probe passed `success_threshold` times in a row.
//!
//! A container that exits before it is ready ends the wait at once with [`InfraError::ExitedBeforeReady`];
//! running out of time gives [`InfraError::NeverReady`]. Both quote the last log lines.

use std::time::Duration;

use futures::future::select_all;
use tokio::time::Instant;

use crate::bus::Tape;
use crate::env::contract::Instance;
use crate::error::InfraError;
use crate::manifest::{Readiness, WorkloadSpec};
use crate::supervisor::Phase;

const LOG_TAIL: usize = 8;

/// Waits until `pod` is ready; returns how long it took.
pub async fn wait_ready(
    pod: &WorkloadSpec,
    instances: &[Instance],
    tape: Option<(&Tape, usize, u64)>,
    timeout: Duration,
) -> Result<Duration, InfraError> {
    let started = Instant::now();
    let deadline = started + timeout;
    let probe = describe(&pod.readiness);
    let check = async {
        match &pod.readiness {
            Readiness::Started => {
                wait_running(instances).await?;
                for instance in instances {
                    instance.started().await;
                }
                Ok(())
            }
            Readiness::CanFrame(id) => {
                let (tape, from, since_ns) = tape.ok_or_else(|| InfraError::ReadinessWithoutBus {
                    workload: pod.name.clone(),
                })?;
                let seen = tape.wait(from, deadline, |frames| {
                    frames
                        .iter()
                        .any(|f| f.timestamp_ns >= since_ns && f.frame.linux_can_id() == *id)
                        .then_some(())
                });
                tokio::select! {
                    found = seen => found.ok_or_else(|| never_ready(pod, instances, timeout, &probe)),
                    exit = first_exit(instances) => Err(exit),
                }
            }
            Readiness::Exec => {
                let probes = async {
                    // Probes start once the containers run (a probe before the start only costs a period).
                    wait_running(instances).await?;
                    for instance in instances {
                        instance.started().await;
                        if let Some(p) = &instance.container.readiness {
                            tokio::time::sleep(p.initial_delay).await;
                            let mut successes = 0;
                            while successes < p.success_threshold {
                                let ok =
                                    tokio::time::timeout(p.timeout, instance.supervisor.exec(&p.command))
                                        .await
                                        .unwrap_or(Ok(false))?;
                                if ok {
                                    successes += 1;
                                } else {
                                    successes = 0;
                                    tokio::time::sleep(p.period).await;
                                }
                            }
                        }
                    }
                    Ok::<(), InfraError>(())
                };
                tokio::select! {
                    r = probes => r,
                    exit = first_exit(instances) => Err(exit),
                }
            }
        }
    };
    match tokio::time::timeout_at(deadline, check).await {
        Ok(Ok(())) => Ok(started.elapsed()),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(never_ready(pod, instances, timeout, &probe)),
    }
}

fn describe(readiness: &Readiness) -> String {
    match readiness {
        Readiness::Started => "process running".into(),
        Readiness::CanFrame(id) => format!("CAN heartbeat 0x{:X} not seen", id & vcan::frame::EFF_MAX),
        Readiness::Exec => "exec readinessProbe".into(),
    }
}

fn never_ready(pod: &WorkloadSpec, instances: &[Instance], timeout: Duration, probe: &str) -> InfraError {
    InfraError::NeverReady {
        workload: pod.name.clone(),
        waited_ms: timeout.as_millis(),
        probe: probe.to_string(),
        log_tail: tails(instances),
    }
}

fn tails(instances: &[Instance]) -> String {
    instances
        .iter()
        .map(|i| i.supervisor.logs().tail(LOG_TAIL))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Resolves with an error when any container leaves the running state; pending while all run.
async fn first_exit(instances: &[Instance]) -> InfraError {
    let mut watches: Vec<_> = instances.iter().map(|i| i.supervisor.watch()).collect();
    loop {
        for (i, w) in watches.iter().enumerate() {
            let state = w.borrow().clone();
            let ended = match &state.phase {
                Phase::Exited | Phase::BackOff => true,
                Phase::Failed(reason) => {
                    return InfraError::Launch {
                        workload: instances[i].pod.clone(),
                        reason: reason.clone(),
                    };
                }
                Phase::Starting | Phase::Running => false,
            };
            if ended {
                return InfraError::ExitedBeforeReady {
                    workload: format!("{}/{}", instances[i].pod, instances[i].container.name),
                    status: state
                        .last_exit
                        .map(|e| e.to_string())
                        .unwrap_or_else(|| "unknown".into()),
                    log_tail: instances[i].supervisor.logs().tail(LOG_TAIL),
                };
            }
        }
        if watches.is_empty() {
            return std::future::pending().await;
        }
        let changed: Vec<_> = watches.iter_mut().map(|w| Box::pin(w.changed())).collect();
        let (result, _, _) = select_all(changed).await;
        if result.is_err() {
            return std::future::pending().await; // supervisor gone: teardown is under way
        }
    }
}

/// Waits until a run-to-completion init container has exited with code 0 (the restart policy retries it
/// while it fails); an init container that fails for good, or runs past `timeout`, keeps the pod from
/// starting.
pub async fn wait_completed(instance: &Instance, timeout: Duration) -> Result<(), InfraError> {
    let mut w = instance.supervisor.watch();
    let who = format!("{}/{} (init container)", instance.pod, instance.container.name);
    let done = w.wait_for(|s| matches!(s.phase, Phase::Exited | Phase::Failed(_)));
    let state = match tokio::time::timeout(timeout, done).await {
        Ok(Ok(state)) => state.clone(),
        Ok(Err(_)) => return Err(InfraError::SupervisorEnded),
        Err(_) => {
            return Err(InfraError::NeverReady {
                workload: who,
                waited_ms: timeout.as_millis(),
                probe: "init container still running".into(),
                log_tail: instance.supervisor.logs().tail(LOG_TAIL),
            })
        }
    };
    match (&state.phase, &state.last_exit) {
        (Phase::Exited, Some(exit)) if exit.code == Some(0) => Ok(()),
        (Phase::Failed(reason), _) => Err(InfraError::Launch {
            workload: who,
            reason: reason.clone(),
        }),
        (_, exit) => Err(InfraError::ExitedBeforeReady {
            workload: who,
            status: exit
                .as_ref()
                .map(|e| e.to_string())
                .unwrap_or_else(|| "unknown".into()),
            log_tail: instance.supervisor.logs().tail(LOG_TAIL),
        }),
    }
}

/// Bus nodes that are connected and have sent at least one frame (`None` without hub statistics, e.g. a
/// bench adapter).
pub fn senders(bus: &crate::bus::ScenarioBus) -> Option<usize> {
    bus.stats()
        .map(|s| s.nodes.iter().filter(|n| n.connected && n.sent > 0).count())
}

/// Waits until more than `before` nodes have sent on `bus`: a new replica is on the bus. (Replicas send
/// the same ready frame, so the frame alone cannot tell the second replica from the first.)
pub async fn wait_new_sender(
    bus: &crate::bus::ScenarioBus,
    before: usize,
    workload: &str,
    timeout: Duration,
) -> Result<(), InfraError> {
    let deadline = Instant::now() + timeout;
    while senders(bus).is_some_and(|now| now <= before) {
        if Instant::now() >= deadline {
            return Err(InfraError::NeverReady {
                workload: workload.to_string(),
                waited_ms: timeout.as_millis(),
                probe: "replica never sent on the bus".into(),
                log_tail: String::new(),
            });
        }
        // The next frame on the bus is the next chance for the replica to have sent.
        let len = bus.tape().len();
        let _ = bus
            .tape()
            .wait(len, deadline, |f| (!f.is_empty()).then_some(()))
            .await;
    }
    Ok(())
}

async fn wait_running(instances: &[Instance]) -> Result<(), InfraError> {
    for instance in instances {
        let mut w = instance.supervisor.watch();
        let state = w
            .wait_for(|s| s.phase != Phase::Starting)
            .await
            .map_err(|_| InfraError::SupervisorEnded)?
            .clone();
        match state.phase {
            Phase::Running => {}
            Phase::Failed(reason) => {
                return Err(InfraError::Launch {
                    workload: instance.pod.clone(),
                    reason,
                })
            }
            _ => {
                return Err(InfraError::ExitedBeforeReady {
                    workload: instance.pod.clone(),
                    status: state
                        .last_exit
                        .map(|e| e.to_string())
                        .unwrap_or_else(|| "unknown".into()),
                    log_tail: instance.supervisor.logs().tail(LOG_TAIL),
                })
            }
        }
    }
    Ok(())
}
