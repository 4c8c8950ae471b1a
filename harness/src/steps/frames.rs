//! Raw-frame steps: send and expect frames written in candump syntax (`123#1122`, `18FF0010#01`,
//! `123##1AABB`, `123#R`).

use std::time::Duration;

use super::def::{
    ms_between, parse_frame, parse_id, step_fn, Kind, StepArgs, StepDef, StepResult, DUR, ON_BUS,
};
use crate::bus::TracedFrame;
use crate::record::Metric;
use crate::world::{ScenarioWorld, StepFailure};

pub fn steps() -> Vec<StepDef> {
    use Kind::*;
    vec![
        StepDef::new(
            Action,
            format!(r"^the frame (\S+) is sent{ON_BUS}$"),
            "the frame 120#01 is sent",
            step_fn!(send),
        ),
        StepDef::new(
            Action,
            format!(r"^these frames are sent{ON_BUS}:$"),
            "these frames are sent:",
            step_fn!(send_table),
        ),
        StepDef::new(
            Expectation,
            format!(r"^within {DUR} the frame (\S+) is seen{ON_BUS}$"),
            "within 200 ms the frame 321#04 is seen",
            step_fn!(expect_frame),
        ),
        StepDef::new(
            Expectation,
            format!(r"^within {DUR} a frame with id (\S+) is seen{ON_BUS}$"),
            "within 200 ms a frame with id 0x321 is seen",
            step_fn!(expect_id),
        ),
        StepDef::new(
            Expectation,
            format!(r"^these frames are seen in order within {DUR}{ON_BUS}:$"),
            "these frames are seen in order within 1 s:",
            step_fn!(expect_sequence),
        ),
        StepDef::new(
            Expectation,
            format!(r"^(\d+) to (\d+) frames with id (\S+) are seen in {DUR}{ON_BUS}$"),
            "3600 to 3710 frames with id 0x7FF are seen in 600 ms",
            step_fn!(count_id),
        ),
        StepDef::new(
            Expectation,
            format!(r"^no frame with id (\S+) is seen for {DUR}{ON_BUS}$"),
            "no frame with id 0x300 is seen for 500 ms",
            step_fn!(no_id),
        ),
    ]
}

async fn send(w: &mut ScenarioWorld, a: &StepArgs) -> StepResult {
    let frame = parse_frame(a.get(0))?;
    w.bus(a.opt(1))?.send(&frame)?;
    Ok(())
}

/// Frames of a table: a `frame` column in candump syntax, or `id` and `data` columns.
pub fn table_frames(rows: &[Vec<String>]) -> Result<Vec<vcan::Frame>, StepFailure> {
    let (header, body) = rows
        .split_first()
        .ok_or_else(|| StepFailure::fail("empty table"))?;
    let col = |name: &str| header.iter().position(|h| h.trim().eq_ignore_ascii_case(name));
    let mut out = Vec::new();
    for (i, row) in body.iter().enumerate() {
        let text = match (col("frame"), col("id"), col("data")) {
            (Some(f), _, _) => row.get(f).cloned().unwrap_or_default(),
            (None, Some(id), Some(data)) => format!(
                "{}#{}",
                row.get(id)
                    .map(|s| s.trim().trim_start_matches("0x").to_string())
                    .unwrap_or_default(),
                row.get(data).map(|s| s.replace(' ', "")).unwrap_or_default()
            ),
            _ => {
                return Err(StepFailure::fail(
                    "the table needs a `frame` column, or `id` and `data` columns",
                ))
            }
        };
        out.push(
            parse_frame(text.trim())
                .map_err(|e| StepFailure::fail(format!("table row {}: {}", i + 1, e.message())))?,
        );
    }
    Ok(out)
}

async fn send_table(w: &mut ScenarioWorld, a: &StepArgs) -> StepResult {
    let frames = table_frames(a.table()?)?;
    let bus = w.bus(a.opt(0))?;
    for f in &frames {
        bus.send(f)?;
    }
    Ok(())
}

/// Waits from the mark until a frame matching `pred` appears within `within` (bus time); records the
/// response time as a metric named `response <what>`.
pub async fn expect_within(
    w: &mut ScenarioWorld,
    bus: Option<&str>,
    within: Duration,
    what: &str,
    pred: impl Fn(&TracedFrame) -> bool,
) -> Result<TracedFrame, StepFailure> {
    let mark = w.mark();
    let bus = w.bus(bus)?;
    let from = mark.tape_index.get(bus.name()).copied().unwrap_or(0);
    let limit_ns = mark.at_ns + within.as_nanos() as u64;
    let found = bus
        .tape()
        .wait(from, mark.at + within, |frames| {
            frames
                .iter()
                .find(|f| f.timestamp_ns >= mark.at_ns && f.timestamp_ns <= limit_ns && pred(f))
                .cloned()
        })
        .await;
    match found {
        Some(f) => {
            w.metrics.push(Metric {
                name: format!("response {what}"),
                value: ms_between(mark.at_ns, f.timestamp_ns),
                unit: "ms".into(),
                samples: Vec::new(),
            });
            Ok(f)
        }
        None => Err(StepFailure::fail(format!(
            "{what} not seen within {} ms",
            within.as_millis()
        ))),
    }
}

/// A short description of the frames with `id` on the tape since the mark, for failure messages.
pub fn seen_with_id(
    w: &mut ScenarioWorld,
    bus: Option<&str>,
    id: u32,
    decode: &dyn Fn(&vcan::Frame) -> String,
) -> String {
    let mark = w.mark();
    let Ok(bus) = w.bus(bus) else { return String::new() };
    let from = mark.tape_index.get(bus.name()).copied().unwrap_or(0);
    let frames: Vec<TracedFrame> = bus
        .tape()
        .since(from)
        .into_iter()
        .filter(|f| f.frame.linux_can_id() & !vcan::frame::CAN_RTR_FLAG == id)
        .collect();
    if frames.is_empty() {
        return "; no frame with that id was seen since the last action".into();
    }
    let shown: Vec<String> = frames
        .iter()
        .rev()
        .take(5)
        .rev()
        .map(|f| {
            format!(
                "{} (+{:.1} ms)",
                decode(&f.frame),
                ms_between(mark.at_ns, f.timestamp_ns)
            )
        })
        .collect();
    format!(
        "; seen since the last action ({} frames, last {}): {}",
        frames.len(),
        shown.len(),
        shown.join(", ")
    )
}

async fn expect_frame(w: &mut ScenarioWorld, a: &StepArgs) -> StepResult {
    let within = a.duration(0, 1)?;
    let wanted = parse_frame(a.get(2))?;
    let r = expect_within(w, a.opt(3), within, &format!("frame {wanted}"), |f| {
        f.frame == wanted
    })
    .await;
    r.map(|_| ()).map_err(|e| {
        let id = wanted.linux_can_id() & !vcan::frame::CAN_RTR_FLAG;
        StepFailure::fail(format!(
            "{}{}",
            e.message(),
            seen_with_id(w, a.opt(3), id, &|f| f.to_string())
        ))
    })
}

async fn expect_id(w: &mut ScenarioWorld, a: &StepArgs) -> StepResult {
    let within = a.duration(0, 1)?;
    let id = parse_id(a.get(2))?;
    expect_within(w, a.opt(3), within, &format!("frame with id {}", a.get(2)), |f| {
        f.frame.linux_can_id() & !vcan::frame::CAN_RTR_FLAG == id
    })
    .await
    .map(|_| ())
}

async fn expect_sequence(w: &mut ScenarioWorld, a: &StepArgs) -> StepResult {
    let within = a.duration(0, 1)?;
    let wanted = table_frames(a.table()?)?;
    let mark = w.mark();
    let bus = w.bus(a.opt(2))?;
    let from = mark.tape_index.get(bus.name()).copied().unwrap_or(0);
    let limit_ns = mark.at_ns + within.as_nanos() as u64;
    // Length of the longest prefix of `wanted` found in order.
    let progress = |frames: &[TracedFrame]| {
        let mut next = 0;
        for f in frames
            .iter()
            .filter(|f| f.timestamp_ns >= mark.at_ns && f.timestamp_ns <= limit_ns)
        {
            if next < wanted.len() && f.frame == wanted[next] {
                next += 1;
            }
        }
        next
    };
    let done = bus
        .tape()
        .wait(from, mark.at + within, |frames| {
            (progress(frames) == wanted.len()).then_some(())
        })
        .await;
    if done.is_some() {
        return Ok(());
    }
    let got = progress(&bus.tape().since(from));
    Err(StepFailure::fail(format!(
        "only {got} of {} frames seen in order within {} ms; first missing: {}",
        wanted.len(),
        within.as_millis(),
        wanted.get(got).map(|f| f.to_string()).unwrap_or_default()
    )))
}

/// Counts the frames with an id from the mark for a period (a bus's throughput, a starved sender): fails
/// early once there are more than the most, else at the end if fewer than the least; the rate is a metric.
async fn count_id(w: &mut ScenarioWorld, a: &StepArgs) -> StepResult {
    let (least, most): (u64, u64) = match (a.get(0).parse(), a.get(1).parse()) {
        (Ok(l), Ok(m)) if l <= m => (l, m),
        _ => {
            return Err(StepFailure::fail(format!(
                "`{} to {}` is not a range of counts",
                a.get(0),
                a.get(1)
            )))
        }
    };
    let id = parse_id(a.get(2))?;
    let period = a.duration(3, 4)?;
    let mark = w.mark();
    let bus = w.bus(a.opt(5))?;
    let from = mark.tape_index.get(bus.name()).copied().unwrap_or(0);
    let end_ns = mark.at_ns + period.as_nanos() as u64;
    let count = |frames: &[TracedFrame]| {
        frames
            .iter()
            .filter(|f| {
                f.timestamp_ns >= mark.at_ns
                    && f.timestamp_ns <= end_ns
                    && f.frame.linux_can_id() & !vcan::frame::CAN_RTR_FLAG == id
            })
            .count() as u64
    };
    let early = bus
        .tape()
        .wait(from, mark.at + period, |frames| {
            let n = count(frames);
            (n > most).then_some(n)
        })
        .await;
    // Frames stamped inside the period may still be on their way to the recorder: the tape is read again
    // once the bus has gone past the period's end.
    let n = match early {
        Some(n) => n,
        None => {
            let settle = tokio::time::Instant::now() + Duration::from_millis(50);
            bus.tape()
                .wait(from, settle, |frames| {
                    frames.iter().any(|f| f.timestamp_ns > end_ns).then_some(())
                })
                .await;
            count(&bus.tape().since(from))
        }
    };
    w.metrics.push(Metric::new(
        format!("frames/s of id {}", a.get(2)),
        n as f64 / period.as_secs_f64().max(1e-9),
        "frames/s",
    ));
    if (least..=most).contains(&n) {
        Ok(())
    } else {
        Err(StepFailure::fail(format!(
            "{n} frames with id {} seen in {} ms, expected {least} to {most}",
            a.get(2),
            period.as_millis()
        )))
    }
}

/// Fails as soon as a frame matching `pred` appears during the next `period` (bus time from now).
pub async fn expect_none(
    w: &mut ScenarioWorld,
    bus: Option<&str>,
    period: Duration,
    what: &str,
    pred: impl Fn(&TracedFrame) -> bool,
) -> StepResult {
    let bus = w.bus(bus)?;
    let from = bus.tape().len();
    let start_ns = crate::bus::now_ns();
    let end_ns = start_ns + period.as_nanos() as u64;
    let deadline = tokio::time::Instant::now() + period;
    let hit = bus
        .tape()
        .wait(from, deadline, |frames| {
            frames
                .iter()
                .find(|f| f.timestamp_ns >= start_ns && f.timestamp_ns <= end_ns && pred(f))
                .cloned()
        })
        .await;
    match hit {
        None => Ok(()),
        Some(f) => Err(StepFailure::fail(format!(
            "{what} seen {:.1} ms into the {} ms quiet period: {}",
            ms_between(start_ns, f.timestamp_ns),
            period.as_millis(),
            f.frame
        ))),
    }
}

async fn no_id(w: &mut ScenarioWorld, a: &StepArgs) -> StepResult {
    let id = parse_id(a.get(0))?;
    let period = a.duration(1, 2)?;
    expect_none(
        w,
        a.opt(3),
        period,
        &format!("a frame with id {}", a.get(0)),
        |f| f.frame.linux_can_id() & !vcan::frame::CAN_RTR_FLAG == id,
    )
    .await
}
