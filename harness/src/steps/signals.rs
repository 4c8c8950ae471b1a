//! Signal steps: send DBC messages by signal values and expect signal values, so scenarios speak in
//! `ClimateRequest` and `FanPwm=55` rather than bytes.

use std::collections::BTreeMap;

use super::def::{
    parse_assignments, parse_conditions, step_fn, Condition, Kind, StepArgs, StepDef, StepResult, DUR, ON_BUS,
};
use super::frames::{expect_none, expect_within, seen_with_id};
use crate::error::InfraError;
use crate::world::{ScenarioWorld, StepFailure};
use vcan::dbc::MessageDef;

pub fn steps() -> Vec<StepDef> {
    use Kind::*;
    vec![
        StepDef::new(
            Action,
            format!(r#"^"(\w+)" is sent with (.+?){ON_BUS}$"#),
            r#""ClimateRequest" is sent with TargetTemp=22, FanLevel=3, AcOn=1"#,
            step_fn!(send),
        ),
        StepDef::new(
            Action,
            format!(r#"^"(\w+)" is sent{ON_BUS} with:$"#),
            r#""ClimateRequest" is sent with:"#,
            step_fn!(send_table),
        ),
        StepDef::new(
            Expectation,
            format!(r#"^within {DUR} "(\w+)" has (.+?){ON_BUS}$"#),
            r#"within 300 ms "HvacActuators" has FanPwm=40, Compressor=1"#,
            step_fn!(expect_has),
        ),
        StepDef::new(
            Expectation,
            format!(r#"^within {DUR} "(\w+)" has{ON_BUS}:$"#),
            r#"within 300 ms "HvacActuators" has:"#,
            step_fn!(expect_has_table),
        ),
        StepDef::new(
            Expectation,
            format!(r#"^within {DUR} "(\w+)" is seen{ON_BUS}$"#),
            r#"within 300 ms "LockResponse" is seen"#,
            step_fn!(expect_seen),
        ),
        StepDef::new(
            Expectation,
            format!(r#"^no "(\w+)" is seen for {DUR}{ON_BUS}$"#),
            r#"no "HvacActuators" is seen for 500 ms"#,
            step_fn!(none_seen),
        ),
        StepDef::new(
            Expectation,
            format!(r#"^no "(\w+)" has (.+?) for {DUR}{ON_BUS}$"#),
            r#"no "DoorLockState" has Locked=0 for 500 ms"#,
            step_fn!(none_has),
        ),
        StepDef::new(
            Expectation,
            format!(r#"^the latest "(\w+)" has (.+?){ON_BUS}$"#),
            r#"the latest "DoorLockState" has Locked=1"#,
            step_fn!(latest_has),
        ),
    ]
}

/// The DBC message `name` (unknown names fail the step; unreadable DBC files are an infra error).
fn message(w: &ScenarioWorld, name: &str) -> Result<MessageDef, StepFailure> {
    let pass = w.pass()?;
    match pass.fixtures.message(name) {
        Ok(m) => Ok(m.clone()),
        Err(e) if !pass.fixtures.dbc_errors.is_empty() => {
            Err(StepFailure::Infra(InfraError::Dbc(e.to_string())))
        }
        Err(e) => Err(StepFailure::fail(e.to_string())),
    }
}

/// Rows `| signal | value |` (header optional) as `Name=value` pairs.
fn table_pairs(rows: &[Vec<String>]) -> String {
    rows.iter()
        .filter(|r| !(r.len() >= 2 && r[0].trim().eq_ignore_ascii_case("signal")))
        .filter_map(|r| Some(format!("{}={}", r.first()?.trim(), r.get(1)?.trim())))
        .collect::<Vec<_>>()
        .join(", ")
}

fn encode(msg: &MessageDef, assignments: &str) -> Result<vcan::Frame, StepFailure> {
    let values = parse_assignments(assignments)?;
    for (name, _) in &values {
        msg.signal(name).map_err(|e| StepFailure::fail(e.to_string()))?;
    }
    let refs: Vec<(&str, f64)> = values.iter().map(|(n, v)| (n.as_str(), *v)).collect();
    msg.encode(&refs).map_err(|e| StepFailure::fail(e.to_string()))
}

async fn send(w: &mut ScenarioWorld, a: &StepArgs) -> StepResult {
    let msg = message(w, a.get(0))?;
    let frame = encode(&msg, a.get(1))?;
    w.bus(a.opt(2))?.send(&frame)?;
    Ok(())
}

async fn send_table(w: &mut ScenarioWorld, a: &StepArgs) -> StepResult {
    let msg = message(w, a.get(0))?;
    let frame = encode(&msg, &table_pairs(a.table()?))?;
    w.bus(a.opt(1))?.send(&frame)?;
    Ok(())
}

/// Half a raw step of each signal: the tolerance of `=`.
fn tolerances(msg: &MessageDef) -> BTreeMap<String, f64> {
    msg.signals
        .iter()
        .map(|s| (s.name.clone(), (s.factor.abs() / 2.0).max(1e-9)))
        .collect()
}

fn check_conditions(msg: &MessageDef, conditions: &[Condition]) -> Result<(), StepFailure> {
    for c in conditions {
        msg.signal(&c.signal)
            .map_err(|e| StepFailure::fail(e.to_string()))?;
    }
    Ok(())
}

/// Whether `frame` is `msg` and satisfies all conditions.
fn satisfies(
    msg: &MessageDef,
    tol: &BTreeMap<String, f64>,
    conditions: &[Condition],
    frame: &vcan::Frame,
) -> bool {
    if frame.id() != Some(msg.id) {
        return false;
    }
    let Ok(values) = msg.decode(frame) else {
        return false;
    };
    conditions.iter().all(|c| {
        values
            .get(&c.signal)
            .is_some_and(|v| c.holds(*v, tol.get(&c.signal).copied().unwrap_or(1e-9)))
    })
}

/// `Sig=1 Other=2` rendering of a frame of `msg`.
fn render(msg: &MessageDef, frame: &vcan::Frame) -> String {
    match msg.decode(frame) {
        Ok(values) => values
            .iter()
            .map(|(k, v)| format!("{k}={}", trim_float(*v)))
            .collect::<Vec<_>>()
            .join(" "),
        Err(_) => format!("{frame} (does not decode)"),
    }
}

fn trim_float(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

async fn expect_conditions(
    w: &mut ScenarioWorld,
    name: &str,
    text: &str,
    dur: (usize, usize),
    bus: Option<&str>,
    a: &StepArgs,
) -> StepResult {
    let within = a.duration(dur.0, dur.1)?;
    let msg = message(w, name)?;
    let conditions = parse_conditions(text)?;
    check_conditions(&msg, &conditions)?;
    let tol = tolerances(&msg);
    let r = expect_within(w, bus, within, &format!("{name} with {text}"), |f| {
        satisfies(&msg, &tol, &conditions, &f.frame)
    })
    .await;
    r.map(|_| ()).map_err(|e| {
        let seen = seen_with_id(w, bus, msg.id.to_linux(), &|f| render(&msg, f));
        StepFailure::fail(format!("{}{seen}", e.message()))
    })
}

async fn expect_has(w: &mut ScenarioWorld, a: &StepArgs) -> StepResult {
    expect_conditions(w, a.get(2), a.get(3), (0, 1), a.opt(4), a).await
}

async fn expect_has_table(w: &mut ScenarioWorld, a: &StepArgs) -> StepResult {
    let text = table_pairs(a.table()?);
    expect_conditions(w, a.get(2), &text, (0, 1), a.opt(3), a).await
}

async fn expect_seen(w: &mut ScenarioWorld, a: &StepArgs) -> StepResult {
    let within = a.duration(0, 1)?;
    let msg = message(w, a.get(2))?;
    expect_within(w, a.opt(3), within, a.get(2), |f| f.frame.id() == Some(msg.id))
        .await
        .map(|_| ())
}

async fn none_seen(w: &mut ScenarioWorld, a: &StepArgs) -> StepResult {
    let msg = message(w, a.get(0))?;
    let period = a.duration(1, 2)?;
    expect_none(w, a.opt(3), period, &format!("\"{}\"", a.get(0)), |f| {
        f.frame.id() == Some(msg.id)
    })
    .await
}

async fn none_has(w: &mut ScenarioWorld, a: &StepArgs) -> StepResult {
    let msg = message(w, a.get(0))?;
    let conditions = parse_conditions(a.get(1))?;
    check_conditions(&msg, &conditions)?;
    let tol = tolerances(&msg);
    let period = a.duration(2, 3)?;
    let what = format!("\"{}\" with {}", a.get(0), a.get(1));
    expect_none(w, a.opt(4), period, &what, |f| {
        satisfies(&msg, &tol, &conditions, &f.frame)
    })
    .await
}

/// How long `the latest … has …` waits for a first frame of the message.
const LATEST_SETTLE: std::time::Duration = std::time::Duration::from_millis(500);

async fn latest_has(w: &mut ScenarioWorld, a: &StepArgs) -> StepResult {
    let msg = message(w, a.get(0))?;
    let conditions = parse_conditions(a.get(1))?;
    check_conditions(&msg, &conditions)?;
    let tol = tolerances(&msg);
    let bus = w.bus(a.opt(2))?;
    // A message sent right after the readiness heartbeat may still be in flight when the step starts: when
    // none has been seen yet, give the first one a moment to arrive.
    let settle = tokio::time::Instant::now() + LATEST_SETTLE;
    bus.tape()
        .wait(0, settle, |frames| {
            frames.iter().any(|f| f.frame.id() == Some(msg.id)).then_some(())
        })
        .await;
    let latest = bus
        .tape()
        .since(0)
        .into_iter()
        .rev()
        .find(|f| f.frame.id() == Some(msg.id));
    match latest {
        Some(f) if satisfies(&msg, &tol, &conditions, &f.frame) => Ok(()),
        Some(f) => Err(StepFailure::fail(format!(
            "the latest \"{}\" is {}",
            a.get(0),
            render(&msg, &f.frame)
        ))),
        None => Err(StepFailure::fail(format!("no \"{}\" has been seen", a.get(0)))),
    }
}
