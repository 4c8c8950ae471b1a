//! Replay steps: recorded traffic (candump `-l` or Vector ASC) put back on the scenario's buses
//! ([`crate::replay`]).

use super::def::{parse_id, step_fn, Kind, StepArgs, StepDef, StepResult};
use crate::replay::{self, ReplayOptions, ReplayPlan, Replayer};
use crate::world::{ScenarioWorld, StepFailure};

pub fn steps() -> Vec<StepDef> {
    use Kind::*;
    vec![StepDef::new(
        Action,
        r#"^the trace "([^"]+)" is replayed(?: (once|looped))?(?: at (\d+(?:\.\d+)?)x speed)?(?: with only ids ([0-9A-Fa-fxX, ]+?))?(?: onto bus "([^"]+)")?$"#,
        r#"the trace "fixtures/traces/hvac-drive.log" is replayed at 2x speed onto bus "vehicle""#,
        step_fn!(replay_trace),
    )]
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
        Some(list) => list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(parse_id)
            .collect::<Result<Vec<u32>, _>>()?,
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
