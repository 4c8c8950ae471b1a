//! Fault and bus-timing steps: what the hub does to the traffic of a scenario's bus ([`vcan::fault`],
//! [`vcan::bittiming`]).
//!
//! Faults act in the hub, between every sender and every receiver, so the same fault acts the same way in
//! every environment (all join the scenario's hub). Each step applies one fault from now on, for the
//! duration it names or until the scenario ends (when every fault is undone with the bus); random faults
//! take a seed derived from the run's `--seed`, the scenario and the fault's place in it. Each fault is a
//! `# fault:` line of the bus's trace notes (`<trace>.notes`) and an entry of the bus's record (matched and affected frames). On a
//! bus that is a real adapter (a bench's `socketcan:can0`) there is no hub to act in: the scenario is
//! *unsupported here* in that column.
//!
//! Frames are named the way scenarios name them: `"CabinTemperature" frames` (a DBC message), `frames with
//! id 0x3A0`, `frames from "hvac-controller"` (a workload's node on the bus), or `frames` (all).

use std::time::Duration;

use vcan::fault::{CorruptMode, DropMode, Fault, FaultKind, FrameSelector};
use vcan::CanId;

use super::def::{
    parse_duration, parse_frame, parse_id, step_fn, Kind, StepArgs, StepDef, StepResult, DUR, ON_BUS,
};
use crate::world::{ScenarioWorld, StepFailure};

/// Frames in the plural: three captures (message, id, sender), none for all frames.
const FRAMES: &str = r#"(?:"(\w+)" frames|frames with id (\S+)|frames from "([^"]+)"|(?:all )?frames)"#;
/// One frame of the same kinds, for "every 3rd … frame".
const FRAME: &str = r#"(?:"(\w+)" frame|frame with id (\S+)|frame from "([^"]+)"|frame)"#;
/// An optional duration: two captures.
fn for_dur() -> String {
    format!(r"(?: for {DUR})?")
}

pub fn steps() -> Vec<StepDef> {
    use Kind::*;
    let for_ = for_dur();
    vec![
        StepDef::new(
            Action,
            r#"^the bus(?: "([^"]+)")? runs at (\d+(?:\.\d+)?) ?(bit/s|kbit/s|Mbit/s)(?: with a (\d+(?:\.\d+)?) ?(kbit/s|Mbit/s) data phase)?(?: and (worst-case|exact|no) bit stuffing)?$"#.to_string(),
            r#"the bus runs at 500 kbit/s"#,
            step_fn!(bitrate),
        ),
        StepDef::new(
            Action,
            r#"^the bus(?: "([^"]+)")? is ideal again$"#.to_string(),
            r#"the bus is ideal again"#,
            step_fn!(ideal),
        ),
        StepDef::new(
            Action,
            format!(r"^(\d+(?:\.\d+)?) ?% of {FRAMES} (?:are|is) lost{for_}{ON_BUS}$"),
            r#"100% of "CabinTemperature" frames are lost"#,
            step_fn!(drop_percent),
        ),
        StepDef::new(
            Action,
            format!(r"^every (\d+)(?:st|nd|rd|th) {FRAME} is lost{for_}{ON_BUS}$"),
            r#"every 3rd "VehicleSpeed" frame is lost"#,
            step_fn!(drop_every),
        ),
        StepDef::new(
            Action,
            format!(r"^the next (\d+) {FRAMES} are lost{ON_BUS}$"),
            r#"the next 2 "ClimateRequest" frames are lost"#,
            step_fn!(drop_next),
        ),
        StepDef::new(
            Action,
            format!(r"^{FRAMES} are delayed by {DUR}(?: ± ?{DUR})?{for_}{ON_BUS}$"),
            r#""VehicleSpeed" frames are delayed by 150 ms ± 20 ms"#,
            step_fn!(delay),
        ),
        StepDef::new(
            Action,
            format!(r"^{FRAMES} are duplicated(?: (\d+) times)?{for_}{ON_BUS}$"),
            r#""LockRequest" frames are duplicated"#,
            step_fn!(duplicate),
        ),
        StepDef::new(
            Action,
            format!(r"^{FRAMES} are reordered(?: by (\d+))?{for_}{ON_BUS}$"),
            r#""ClimateRequest" frames are reordered"#,
            step_fn!(reorder),
        ),
        StepDef::new(
            Action,
            format!(r#"^the signal "(\w+)\.(\w+)" is corrupted( with random bits)?{for_}{ON_BUS}$"#),
            r#"the signal "CabinTemperature.CabinTemp" is corrupted"#,
            step_fn!(corrupt),
        ),
        StepDef::new(
            Action,
            format!(r#"^an error frame "([\w-]+)" is injected(?: (\d+) times)?{ON_BUS}$"#),
            r#"an error frame "bus-error" is injected 5 times"#,
            step_fn!(error_frame),
        ),
        StepDef::new(
            Action,
            format!(r#"^the link of "([^"]+)" is cut( \(bus-off\))?{for_}{ON_BUS}$"#),
            r#"the link of "hvac-controller" is cut for 500 ms"#,
            step_fn!(cut_link),
        ),
        StepDef::new(
            Action,
            format!(r"^a background load of (\d+(?:\.\d+)?) ?% is put on the bus{for_}{ON_BUS}$"),
            r#"a background load of 60% is put on the bus"#,
            step_fn!(bus_load),
        ),
        StepDef::new(
            Action,
            format!(r"^a babbling node sends (\S+)(?: at (\d+(?:\.\d+)?) frames/s)?{for_}{ON_BUS}$"),
            r#"a babbling node sends 7FF#FFFFFFFFFFFFFFFF for 1 s"#,
            step_fn!(babble),
        ),
        StepDef::new(
            Action,
            format!(r"^the faults are cleared{ON_BUS}$"),
            r#"the faults are cleared"#,
            step_fn!(clear),
        ),
        StepDef::new(
            Expectation,
            format!(r"^the faults (?:have )?affected (at least )?(\d+) frames?{ON_BUS}$"),
            r#"the faults affected at least 10 frames"#,
            step_fn!(affected),
        ),
    ]
}

/// A rate with its unit in bit/s.
fn bit_rate(number: &str, unit: &str) -> Result<u32, StepFailure> {
    let value: f64 = number
        .parse()
        .map_err(|_| StepFailure::fail(format!("`{number}` is not a number")))?;
    let scale = match unit {
        "bit/s" => 1.0,
        "kbit/s" => 1e3,
        "Mbit/s" => 1e6,
        other => return Err(StepFailure::fail(format!("unknown rate unit `{other}`"))),
    };
    let rate = (value * scale).round();
    if !(f64::from(crate::config::MIN_BITRATE)..=f64::from(crate::config::MAX_BITRATE)).contains(&rate) {
        return Err(StepFailure::fail(format!(
            "{number} {unit} is outside {} bit/s to {} bit/s",
            crate::config::MIN_BITRATE,
            crate::config::MAX_BITRATE
        )));
    }
    Ok(rate as u32)
}

async fn bitrate(w: &mut ScenarioWorld, a: &StepArgs) -> StepResult {
    let nominal = bit_rate(a.get(1), a.get(2))?;
    let data = match a.opt(3) {
        Some(n) => Some(bit_rate(n, a.get(4))?),
        None => None,
    };
    let stuffing = match a.opt(5) {
        Some("exact") => vcan::bittiming::Stuffing::Exact,
        Some("no") => vcan::bittiming::Stuffing::None,
        _ => vcan::bittiming::Stuffing::WorstCase,
    };
    let timing = vcan::bustime::BusTiming {
        bitrate: vcan::bittiming::Bitrate { nominal, data },
        stuffing,
    };
    w.bus(a.opt(0))?.set_timing(Some(timing))?;
    Ok(())
}

async fn ideal(w: &mut ScenarioWorld, a: &StepArgs) -> StepResult {
    w.bus(a.opt(0))?.set_timing(None)?;
    Ok(())
}

/// The selector of the [`FRAMES`]/[`FRAME`] captures starting at `at`.
fn selector(w: &ScenarioWorld, a: &StepArgs, at: usize) -> Result<FrameSelector, StepFailure> {
    if let Some(message) = a.opt(at) {
        let pass = w.pass()?;
        let m = pass
            .fixtures
            .message(message)
            .map_err(|e| StepFailure::fail(e.to_string()))?;
        return Ok(by_id(m.id));
    }
    if let Some(id) = a.opt(at + 1) {
        let linux = parse_id(id)?;
        let id = CanId::from_linux(linux).map_err(|e| StepFailure::fail(e.to_string()))?;
        return Ok(by_id(id));
    }
    if let Some(sender) = a.opt(at + 2) {
        return Ok(FrameSelector {
            sender: Some(sender.to_string()),
            ..FrameSelector::all()
        });
    }
    Ok(FrameSelector::all())
}

fn by_id(id: CanId) -> FrameSelector {
    let mask = if id.is_extended() { 0x1FFF_FFFF } else { 0x7FF };
    FrameSelector {
        id: Some((id.raw(), mask)),
        extended: Some(id.is_extended()),
        ..FrameSelector::all()
    }
}

/// The optional `for <duration>` at captures `at`, `at + 1`.
fn duration_at(a: &StepArgs, at: usize) -> Result<Option<Duration>, StepFailure> {
    match a.opt(at) {
        Some(n) => parse_duration(n, a.get(at + 1)).map(Some),
        None => Ok(None),
    }
}

/// Applies a fault on the bus of capture `bus_at`.
fn apply(
    w: &mut ScenarioWorld,
    a: &StepArgs,
    kind: FaultKind,
    select: FrameSelector,
    duration: Option<Duration>,
    bus_at: usize,
) -> StepResult {
    let seed = w.next_fault_seed();
    let fault = Fault {
        kind,
        select,
        seed,
        duration,
    };
    w.bus(a.opt(bus_at))?.add_fault(fault)?;
    Ok(())
}

fn number<T: std::str::FromStr>(text: &str, what: &str) -> Result<T, StepFailure> {
    text.parse()
        .map_err(|_| StepFailure::fail(format!("{what} `{text}` is not a valid number")))
}

async fn drop_percent(w: &mut ScenarioWorld, a: &StepArgs) -> StepResult {
    let percent: f64 = number(a.get(0), "percentage")?;
    if !(0.0..=100.0).contains(&percent) {
        return Err(StepFailure::fail(format!("{percent}% is not between 0 and 100")));
    }
    let mode = if percent >= 100.0 {
        DropMode::All
    } else {
        DropMode::Percent(percent)
    };
    let select = selector(w, a, 1)?;
    let duration = duration_at(a, 4)?;
    apply(w, a, FaultKind::Drop(mode), select, duration, 6)
}

async fn drop_every(w: &mut ScenarioWorld, a: &StepArgs) -> StepResult {
    let n: u32 = number(a.get(0), "count")?;
    if n == 0 {
        return Err(StepFailure::fail("every 0th frame: the count must be at least 1"));
    }
    let select = selector(w, a, 1)?;
    let duration = duration_at(a, 4)?;
    apply(w, a, FaultKind::Drop(DropMode::EveryNth(n)), select, duration, 6)
}

async fn drop_next(w: &mut ScenarioWorld, a: &StepArgs) -> StepResult {
    let n: u32 = number(a.get(0), "count")?;
    let select = selector(w, a, 1)?;
    apply(w, a, FaultKind::Drop(DropMode::NextN(n)), select, None, 4)
}

async fn delay(w: &mut ScenarioWorld, a: &StepArgs) -> StepResult {
    let select = selector(w, a, 0)?;
    let delay = parse_duration(a.get(3), a.get(4))?;
    let jitter = match a.opt(5) {
        Some(n) => parse_duration(n, a.get(6))?,
        None => Duration::ZERO,
    };
    let duration = duration_at(a, 7)?;
    apply(w, a, FaultKind::Delay { delay, jitter }, select, duration, 9)
}

async fn duplicate(w: &mut ScenarioWorld, a: &StepArgs) -> StepResult {
    let select = selector(w, a, 0)?;
    let copies = match a.opt(3) {
        Some(n) => number::<u32>(n, "times")?.max(1),
        None => 1,
    };
    let duration = duration_at(a, 4)?;
    apply(w, a, FaultKind::Duplicate { copies }, select, duration, 6)
}

async fn reorder(w: &mut ScenarioWorld, a: &StepArgs) -> StepResult {
    let select = selector(w, a, 0)?;
    let depth = match a.opt(3) {
        Some(n) => number::<u32>(n, "depth")?.max(1),
        None => 1,
    };
    let duration = duration_at(a, 4)?;
    apply(w, a, FaultKind::Reorder { depth }, select, duration, 6)
}

async fn corrupt(w: &mut ScenarioWorld, a: &StepArgs) -> StepResult {
    let (message, signal) = (a.get(0), a.get(1));
    let (id, mask) = {
        let pass = w.pass()?;
        let m = pass
            .fixtures
            .message(message)
            .map_err(|e| StepFailure::fail(e.to_string()))?;
        let s = m.signal(signal).map_err(|e| StepFailure::fail(e.to_string()))?;
        (m.id, s.mask(m.size.max(1)))
    };
    let mode = if a.opt(2).is_some() {
        CorruptMode::Random
    } else {
        CorruptMode::Flip
    };
    let duration = duration_at(a, 3)?;
    apply(w, a, FaultKind::Corrupt { mask, mode }, by_id(id), duration, 5)
}

/// The error classes of `linux/can/error.h` by the names scenarios use.
pub const ERROR_CLASSES: &[(&str, u32)] = &[
    ("tx-timeout", 0x001),
    ("lost-arbitration", 0x002),
    ("controller", 0x004),
    ("protocol", 0x008),
    ("transceiver", 0x010),
    ("no-ack", 0x020),
    ("bus-off", 0x040),
    ("bus-error", 0x080),
    ("restarted", 0x100),
    ("counters", 0x200),
];

async fn error_frame(w: &mut ScenarioWorld, a: &StepArgs) -> StepResult {
    let name = a.get(0);
    let class = ERROR_CLASSES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, c)| *c)
        .ok_or_else(|| {
            StepFailure::fail(format!(
                "unknown error class `{name}` (known: {})",
                ERROR_CLASSES
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
    let times = match a.opt(1) {
        Some(n) => number::<u32>(n, "times")?.clamp(1, 10_000),
        None => 1,
    };
    let frame = vcan::Frame::error(class, [0; 8]).map_err(|e| StepFailure::fail(e.to_string()))?;
    let bus = w.bus(a.opt(2))?;
    for _ in 0..times {
        bus.inject(&frame)?;
    }
    Ok(())
}

async fn cut_link(w: &mut ScenarioWorld, a: &StepArgs) -> StepResult {
    let node = a.get(0).to_string();
    let bus_off = a.opt(1).is_some();
    let duration = duration_at(a, 2)?;
    apply(
        w,
        a,
        FaultKind::CutLink { node, bus_off },
        FrameSelector::all(),
        duration,
        4,
    )
}

async fn bus_load(w: &mut ScenarioWorld, a: &StepArgs) -> StepResult {
    let percent: f64 = number(a.get(0), "percentage")?;
    if !(0.0..100.0).contains(&percent) {
        return Err(StepFailure::fail(format!(
            "a background load of {percent}% is not below 100%"
        )));
    }
    let duration = duration_at(a, 1)?;
    let kind = FaultKind::BusLoad {
        percent,
        id: CanId::Standard(0x7FF),
        dlc: 8,
    };
    apply(w, a, kind, FrameSelector::all(), duration, 3)
}

async fn babble(w: &mut ScenarioWorld, a: &StepArgs) -> StepResult {
    let frame = parse_frame(a.get(0))?;
    let Some(id) = frame.id() else {
        return Err(StepFailure::fail(
            "a babbling node sends a data frame, not an error frame",
        ));
    };
    let rate = match a.opt(1) {
        Some(r) => Some(number::<f64>(r, "rate")?).filter(|r| *r > 0.0),
        None => None,
    };
    let duration = duration_at(a, 2)?;
    let kind = FaultKind::Babble {
        id,
        data: frame.payload().to_vec(),
        rate,
    };
    apply(w, a, kind, FrameSelector::all(), duration, 4)
}

async fn clear(w: &mut ScenarioWorld, a: &StepArgs) -> StepResult {
    w.bus(a.opt(0))?.clear_faults()?;
    Ok(())
}

async fn affected(w: &mut ScenarioWorld, a: &StepArgs) -> StepResult {
    let at_least = a.opt(0).is_some();
    let expected: u64 = number(a.get(1), "count")?;
    let bus = w.bus(a.opt(2))?;
    let reports = bus.fault_reports()?;
    let total: u64 = reports.iter().map(|r| r.affected).sum();
    let ok = if at_least {
        total >= expected
    } else {
        total == expected
    };
    if ok {
        Ok(())
    } else {
        let each: Vec<String> = reports
            .iter()
            .map(|r| {
                format!(
                    "{}: matched {}, affected {}",
                    r.description, r.matched, r.affected
                )
            })
            .collect();
        Err(StepFailure::fail(format!(
            "the faults affected {total} frames, expected {}{expected} ({})",
            if at_least { "at least " } else { "" },
            if each.is_empty() {
                "no fault applied".into()
            } else {
                each.join("; ")
            }
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_take_their_units() {
        assert_eq!(bit_rate("500", "kbit/s").unwrap(), 500_000);
        assert_eq!(bit_rate("1", "Mbit/s").unwrap(), 1_000_000);
        assert!(bit_rate("20", "Mbit/s").is_err());
        assert!(bit_rate("5", "bit/s").is_err());
    }
}
