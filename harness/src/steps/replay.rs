//! Replay steps: recorded traffic (candump `-l` or Vector ASC) put back on the scenario's buses
//! ([`crate::replay`]): a trace file of the project, or the stimulus frames of the run's recorded reference
//! (`--reference`), so a scenario can be driven by exactly what drove the board it is compared against.

use super::def::{parse_id, step_fn, Kind, StepArgs, StepDef, StepResult};
use crate::replay::{self, ReplayOptions, ReplayPlan, Replayer};
use crate::world::{ScenarioWorld, StepFailure};

pub fn steps() -> Vec<StepDef> {
    use Kind::*;
    vec![
        StepDef::new(
            Action,
            r#"^the trace "([^"]+)" is replayed(?: (once|looped))?(?: at (\d+(?:\.\d+)?)x speed)?(?: with only ids ([0-9A-Fa-fxX, ]+?))?(?: onto bus "([^"]+)")?$"#,
            r#"the trace "fixtures/traces/hvac-drive.log" is replayed at 2x speed onto bus "vehicle""#,
            step_fn!(replay_trace),
        ),
        StepDef::new(
            Action,
            r#"^the reference's frames with ids ([0-9A-Fa-fxX, ]+?) are replayed$"#,
            r#"the reference's frames with ids 0x200, 0x210 are replayed"#,
            step_fn!(replay_reference),
        ),
    ]
}

/// `When the reference's frames with ids 0x200, 0x210 are replayed`: the stimulus frames (the ids named)
/// of this scenario's recording in the run's `--reference`, from its traces, at their recorded times
/// relative to the first of them, each onto the bus it was recorded on.
async fn replay_reference(w: &mut ScenarioWorld, a: &StepArgs) -> StepResult {
    let pass = w.pass()?.clone();
    let Some((reference, file)) = pass.settings.reference.clone() else {
        return Err(StepFailure::fail(
            "this step replays the run's recorded reference: run with --reference FILE",
        ));
    };
    let id =
        w.id.clone()
            .ok_or_else(|| StepFailure::fail("scenario not bound"))?;
    let record = reference
        .runs
        .iter()
        .filter(|r| r.id == id)
        .min_by_key(|r| r.repeat)
        .ok_or_else(|| {
            StepFailure::fail(format!(
                "the reference {} has no recording of {id} (saved from another revision of the scenarios?)",
                file.display()
            ))
        })?;
    let ids = parse_ids(a.get(0))?;
    let base = file.parent().unwrap_or(std::path::Path::new(".")).to_path_buf();
    let mut started = Vec::new();
    for bus in &record.buses {
        let Some(trace) = &bus.trace_file else { continue };
        let path = base.join(trace);
        let records = replay::load(&path).map_err(|e| StepFailure::fail(e.to_string()))?;
        let options = ReplayOptions {
            ids: ids.clone(),
            bus: Some(bus.name.clone()),
            ..ReplayOptions::default()
        };
        let Ok(plan) = ReplayPlan::new(&path, &records, &options, |_| bus.name.clone()) else {
            continue; // None of the ids on this bus.
        };
        let sink = w.bus(Some(&bus.name))?;
        sink.note(format!(
            "replay: {} frames of the reference {} ({})",
            plan.frames.len(),
            reference.env,
            path.display()
        ));
        started.push(Replayer::start(plan, vec![sink.sender()], false)?);
    }
    if started.is_empty() {
        return Err(StepFailure::fail(format!(
            "the reference's recording of {id} has no frame with ids {}",
            a.get(0)
        )));
    }
    for replayer in started {
        replayer.finish().await?;
    }
    Ok(())
}

fn parse_ids(list: &str) -> Result<Vec<u32>, StepFailure> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(parse_id)
        .collect()
}

/// `When the trace "PATH" is replayed [once|looped] [at Nx speed] [with only ids A, B] [onto bus "B"]`:
/// once (the default) waits until the last frame is sent; looped goes on in the background until the
/// scenario ends. The path is relative to the project directory.
async fn replay_trace(w: &mut ScenarioWorld, a: &StepArgs) -> StepResult {
    let pass = w.pass()?.clone();
    let path = pass.settings.project_dir.join(a.get(0));
    let looped = a.opt(1) == Some("looped");
    let speed = match a.opt(2) {
        Some(s) => s
            .parse::<f64>()
            .ok()
            .filter(|v| *v > 0.0 && *v <= 1000.0)
            .ok_or_else(|| StepFailure::fail(format!("speed `{s}x` must be a number above 0, up to 1000")))?,
        None => 1.0,
    };
    let ids = match a.opt(3) {
        Some(list) => parse_ids(list)?,
        None => Vec::new(),
    };
    let options = ReplayOptions {
        looped,
        speed,
        ids,
        bus: a.opt(4).map(str::to_string),
    };
    let records = replay::load(&path).map_err(|e| StepFailure::fail(e.to_string()))?;
    let default_bus = w.bus(None)?.name().to_string();
    let known: Vec<String> = w.buses.keys().cloned().collect();
    let plan = ReplayPlan::new(&path, &records, &options, |iface| {
        if known.iter().any(|b| b == iface) {
            iface.to_string()
        } else {
            default_bus.clone()
        }
    })
    .map_err(|e| StepFailure::fail(e.to_string()))?;
    let mut senders = Vec::new();
    let what = format!(
        "replay: {} ({} frames{}{})",
        a.get(0),
        plan.frames.len(),
        if looped { ", looped" } else { "" },
        if speed == 1.0 {
            String::new()
        } else {
            format!(", {speed}x speed")
        }
    );
    for bus in plan.buses() {
        let bus = w.bus(Some(&bus))?;
        bus.note(what.clone());
        senders.push(bus.sender());
    }
    let replayer = Replayer::start(plan, senders, looped)?;
    if looped {
        w.replays.push(replayer);
        Ok(())
    } else {
        replayer.finish().await.map(|_| ()).map_err(StepFailure::from)
    }
}
