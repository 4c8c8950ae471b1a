//! Lifecycle steps: deploy, stop, kill, restart workloads, and expectations about their state and logs.

use std::time::Duration;

use super::def::{step_fn, Kind, StepArgs, StepDef, StepResult, DUR};
use crate::env::Instance;
use crate::supervisor::Phase;
use crate::world::{Mark, ScenarioWorld, StepFailure};

pub fn steps() -> Vec<StepDef> {
    use Kind::*;
    vec![
        StepDef::new(
            Action,
            r#"^the "([^"]+)" workload is (?:running|deployed)$"#,
            r#"the "hvac" workload is running"#,
            step_fn!(deploy),
        ),
        StepDef::new(
            Action,
            r#"^the workloads? from "([^"]+)" (?:is|are) (?:running|deployed)$"#,
            r#"the workload from "fixtures/manifests/hvac.yaml" is running"#,
            step_fn!(deploy_file),
        ),
        StepDef::new(
            Action,
            r#"^the "([^"]+)" workload is stopped$"#,
            r#"the "hvac" workload is stopped"#,
            step_fn!(stop),
        ),
        StepDef::new(
            Action,
            r#"^the "([^"]+)" workload is killed$"#,
            r#"the "hvac" workload is killed"#,
            step_fn!(kill),
        ),
        StepDef::new(
            Action,
            r#"^the "([^"]+)" workload is restarted$"#,
            r#"the "hvac" workload is restarted"#,
            step_fn!(restart),
        ),
        StepDef::new(
            Expectation,
            format!(r#"^the "([^"]+)" workload becomes ready within {DUR}$"#),
            r#"the "hvac" workload becomes ready within 2 s"#,
            step_fn!(becomes_ready),
        ),
        StepDef::new(
            Expectation,
            format!(r#"^the "([^"]+)" workload is restarted by its restart policy within {DUR}$"#),
            r#"the "hvac" workload is restarted by its restart policy within 2 s"#,
            step_fn!(policy_restart),
        ),
        StepDef::new(
            Expectation,
            r#"^the "([^"]+)" workload has been restarted (\d+) times?$"#,
            r#"the "hvac" workload has been restarted 1 time"#,
            step_fn!(restart_count),
        ),
        StepDef::new(
            Expectation,
            r#"^the "([^"]+)" workload runs (\d+) (?:replicas?|pods?)$"#,
            r#"the "door-locks" workload runs 2 replicas"#,
            step_fn!(replica_count),
        ),
        StepDef::new(
            Expectation,
            format!(r#"^the "([^"]+)" workload (?:stays|is) (running|exited) for {DUR}$"#),
            r#"the "hvac" workload stays exited for 500 ms"#,
            step_fn!(stays),
        ),
        StepDef::new(
            Expectation,
            format!(r#"^the "([^"]+)" workload exits with code (-?\d+) within {DUR}$"#),
            r#"the "hvac" workload exits with code 0 within 1 s"#,
            step_fn!(exits_with),
        ),
        StepDef::new(
            Expectation,
            format!(r#"^the "([^"]+)" workload logs "([^"]*)" within {DUR}$"#),
            r#"the "hvac" workload logs "sensor_fault" within 3 s"#,
            step_fn!(logs),
        ),
        StepDef::new(
            Expectation,
            format!(r#"^the "([^"]+)" log of "([^"]+)" shows "([^"]*)" within {DUR}$"#),
            r#"the "candump" log of "wiper-candump" shows "can0 3B0#" within 1 s"#,
            step_fn!(container_logs),
        ),
    ]
}

async fn deploy(w: &mut ScenarioWorld, a: &StepArgs) -> StepResult {
    w.deploy(a.get(0)).await
}

async fn deploy_file(w: &mut ScenarioWorld, a: &StepArgs) -> StepResult {
    let pass = w.pass()?.clone();
    let path = pass.settings.project_dir.join(a.get(0));
    let pods = crate::manifest::load(&path)
        .map_err(|e| StepFailure::Infra(crate::error::InfraError::Manifest(e.to_string())))?;
    for pod in pods {
        w.deploy_spec(pod).await?;
    }
    Ok(())
}

async fn stop(w: &mut ScenarioWorld, a: &StepArgs) -> StepResult {
    let pod = w.pod(a.get(0))?;
    for i in &pod.instances {
        i.supervisor.stop(pod.spec.termination_grace).await;
    }
    Ok(())
}

async fn kill(w: &mut ScenarioWorld, a: &StepArgs) -> StepResult {
    let pod = w.pod(a.get(0))?;
    for i in &pod.instances {
        i.supervisor.kill().await;
    }
    Ok(())
}

async fn restart(w: &mut ScenarioWorld, a: &StepArgs) -> StepResult {
    {
        let pod = w.pod(a.get(0))?;
        for i in &pod.instances {
            i.supervisor.restart(pod.spec.termination_grace).await;
        }
    }
    let pass = w.pass()?.clone();
    wait_ready_again(w, a.get(0), pass.settings.ready_timeout).await
}

async fn becomes_ready(w: &mut ScenarioWorld, a: &StepArgs) -> StepResult {
    let within = a.duration(1, 2)?;
    wait_ready_again(w, a.get(0), within).await
}

/// Readiness after a restart or crash, counting frames from the mark.
async fn wait_ready_again(w: &mut ScenarioWorld, name: &str, timeout: Duration) -> StepResult {
    let mark = w.mark();
    let pod = w.pod(name)?;
    let first_bus = pod.spec.buses.first().cloned().unwrap_or_default();
    let tape = w.buses.get(&first_bus).map(|b| {
        (
            b.tape().as_ref(),
            mark.tape_index.get(&first_bus).copied().unwrap_or(0),
            mark.at_ns,
        )
    });
    crate::readiness::wait_ready(&pod.spec, &pod.instances, tape, timeout).await?;
    Ok(())
}

async fn policy_restart(w: &mut ScenarioWorld, a: &StepArgs) -> StepResult {
    let within = a.duration(1, 2)?;
    let mark = w.mark();
    let pod = w.pod(a.get(0))?;
    let mut latest_start_ns = mark.at_ns;
    for i in &pod.instances {
        let mut watch = i.supervisor.watch();
        let restarted = watch.wait_for(|s| {
            s.phase == Phase::Running
                && s.restarts > 0
                && crate::bus::system_time_ns(s.started_at) >= mark.at_ns
        });
        let restarted = tokio::time::timeout_at(mark.at + within, restarted)
            .await
            .map(|r| r.is_ok())
            .unwrap_or(false);
        match restarted {
            true => {
                latest_start_ns =
                    latest_start_ns.max(crate::bus::system_time_ns(i.supervisor.state().started_at));
            }
            false => {
                let s = i.supervisor.state();
                return Err(StepFailure::fail(format!(
                    "`{}` was not restarted within {within:?} (phase {:?}, {} restarts, last exit: {}, policy {:?})",
                    i.container.name,
                    s.phase,
                    s.restarts,
                    s.last_exit.map(|e| e.to_string()).unwrap_or_else(|| "none".into()),
                    pod.spec.restart_policy
                )));
            }
        }
    }
    // How long the restart policy (the harness's supervisor, or an orchestrator) took to bring every
    // container back: compared side by side across environments.
    let name = format!("restart {} by its policy", a.get(0));
    w.metrics.push(crate::record::Metric {
        name,
        value: latest_start_ns.saturating_sub(mark.at_ns) as f64 / 1e6,
        unit: "ms".into(),
        samples: Vec::new(),
    });
    Ok(())
}

async fn restart_count(w: &mut ScenarioWorld, a: &StepArgs) -> StepResult {
    let expected: u32 = a
        .get(1)
        .parse()
        .map_err(|_| StepFailure::fail("restart count is not a number"))?;
    let pod = w.pod(a.get(0))?;
    let actual: u32 = pod.instances.iter().map(|i| i.supervisor.state().restarts).sum();
    if actual == expected {
        Ok(())
    } else {
        Err(StepFailure::fail(format!(
            "`{}` was restarted {actual} times, expected {expected}",
            a.get(0)
        )))
    }
}

async fn replica_count(w: &mut ScenarioWorld, a: &StepArgs) -> StepResult {
    let expected: usize = a
        .get(1)
        .parse()
        .map_err(|_| StepFailure::fail("replica count is not a number"))?;
    let pod = w.pod(a.get(0))?;
    let mut running: Vec<&str> = pod
        .instances
        .iter()
        .filter(|i| i.supervisor.state().phase == Phase::Running)
        .map(|i| i.pod.as_str())
        .collect();
    running.sort_unstable();
    running.dedup();
    if running.len() == expected {
        Ok(())
    } else {
        Err(StepFailure::fail(format!(
            "`{}` runs {} pods ({}), expected {expected}",
            a.get(0),
            running.len(),
            running.join(", ")
        )))
    }
}

fn phase_matches(phase: &Phase, wanted: &str) -> bool {
    match wanted {
        "running" => *phase == Phase::Running,
        _ => matches!(phase, Phase::Exited | Phase::Failed(_)),
    }
}

async fn stays(w: &mut ScenarioWorld, a: &StepArgs) -> StepResult {
    let wanted = a.get(1).to_string();
    let period = a.duration(2, 3)?;
    let pod = w.pod(a.get(0))?;
    let deadline = tokio::time::Instant::now() + period;
    for i in &pod.instances {
        let mut watch = i.supervisor.watch();
        let left = watch.wait_for(|s| !phase_matches(&s.phase, &wanted));
        let left = tokio::time::timeout_at(deadline, left)
            .await
            .ok()
            .and_then(|r| r.ok())
            .map(|s| s.clone());
        if let Some(s) = left {
            return Err(StepFailure::fail(format!(
                "`{}` did not stay {wanted}: it is {:?} (last exit: {})",
                i.container.name,
                s.phase,
                s.last_exit
                    .as_ref()
                    .map(|e| e.to_string())
                    .unwrap_or_else(|| "none".into())
            )));
        }
    }
    tokio::time::sleep_until(deadline).await;
    Ok(())
}

async fn exits_with(w: &mut ScenarioWorld, a: &StepArgs) -> StepResult {
    let code: i32 = a
        .get(1)
        .parse()
        .map_err(|_| StepFailure::fail("exit code is not a number"))?;
    let within = a.duration(2, 3)?;
    let mark = w.mark();
    let pod = w.pod(a.get(0))?;
    for i in &pod.instances {
        let mut watch = i.supervisor.watch();
        let exited = watch.wait_for(|s| s.phase == Phase::Exited || s.phase == Phase::BackOff);
        let state = match tokio::time::timeout_at(mark.at + within, exited).await {
            Ok(Ok(s)) => s.clone(),
            _ => {
                return Err(StepFailure::fail(format!(
                    "`{}` did not exit within {within:?}",
                    i.container.name
                )))
            }
        };
        let actual = state.last_exit.and_then(|e| e.code);
        if actual != Some(code) {
            return Err(StepFailure::fail(format!(
                "`{}` exited with {}, expected code {code}",
                i.container.name,
                actual
                    .map(|c| format!("code {c}"))
                    .unwrap_or_else(|| "a signal".into())
            )));
        }
    }
    Ok(())
}

async fn logs(w: &mut ScenarioWorld, a: &StepArgs) -> StepResult {
    let needle = a.get(1).to_string();
    let within = a.duration(2, 3)?;
    let mark = w.mark();
    let pod = w.pod(a.get(0))?;
    let instances: Vec<&Instance> = pod.instances.iter().collect();
    match wait_for_log(&instances, &mark, &needle, within).await {
        Ok(()) => Ok(()),
        Err(tail) => Err(StepFailure::fail(format!(
            "`{}` did not log \"{needle}\" within {within:?}; last lines:\n{tail}",
            a.get(0)
        ))),
    }
}

/// Waits until one of `instances` logs `needle` after `mark` (within `within`); else the last lines of
/// each, for the failure message.
async fn wait_for_log(
    instances: &[&Instance],
    mark: &Mark,
    needle: &str,
    within: Duration,
) -> Result<(), String> {
    let waits = instances.iter().map(|i| {
        let from = mark
            .log_index
            .get(&format!("{}/{}", i.pod, i.container.name))
            .copied()
            .unwrap_or(0);
        let logs = i.supervisor.logs().clone();
        let needle = needle.to_string();
        Box::pin(async move { logs.wait_for(from, &needle, within).await.ok_or(()) })
    });
    if futures::future::select_ok(waits).await.is_ok() {
        return Ok(());
    }
    Err(instances
        .iter()
        .map(|i| i.supervisor.logs().tail(6))
        .collect::<Vec<_>>()
        .join("\n"))
}

/// `the "<container>" log of "<pod>" shows "<text>"`: like [`logs`], but only the named container's output
/// counts (a sidecar's `candump`, not the workload beside it); any replica's container will do.
async fn container_logs(w: &mut ScenarioWorld, a: &StepArgs) -> StepResult {
    let (container, needle) = (a.get(0), a.get(2).to_string());
    let within = a.duration(3, 4)?;
    let mark = w.mark();
    let pod = w.pod(a.get(1))?;
    let instances: Vec<&Instance> = pod
        .instances
        .iter()
        .filter(|i| i.container.name == container)
        .collect();
    if instances.is_empty() {
        let mut names: Vec<&str> = pod.instances.iter().map(|i| i.container.name.as_str()).collect();
        names.dedup();
        return Err(StepFailure::fail(format!(
            "`{}` has no container `{container}` (containers: {})",
            a.get(1),
            names.join(", ")
        )));
    }
    match wait_for_log(&instances, &mark, &needle, within).await {
        Ok(()) => Ok(()),
        Err(tail) => Err(StepFailure::fail(format!(
            "the `{container}` log of `{}` did not show \"{needle}\" within {within:?}; last lines:\n{tail}",
            a.get(1)
        ))),
    }
}
