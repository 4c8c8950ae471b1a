//! Timing steps: bus silence, periodic rates within a tolerance, and lost frames.

use std::time::Duration;

use super::def::{step_fn, Kind, StepArgs, StepDef, StepResult, DUR, ON_BUS};
use super::frames::expect_none;
use crate::record::Metric;
use crate::world::{ScenarioWorld, StepFailure};

/// Intervals measured for a periodic check.
const PERIODIC_INTERVALS: usize = 10;

pub fn steps() -> Vec<StepDef> {
    use Kind::*;
    vec![
        StepDef::new(
            Expectation,
            format!(r#"^the bus(?: "([^"]+)")? is silent for {DUR}$"#),
            "the bus is silent for 300 ms",
            step_fn!(silent),
        ),
        StepDef::new(
            Expectation,
            format!(r#"^"(\w+)" is sent every (\d+(?:\.\d+)?) ms(?: ± ?(-?\d+(?:\.\d+)?) ?%)?{ON_BUS}$"#),
            r#""HvacStatus" is sent every 100 ms ± 20%"#,
            step_fn!(periodic),
        ),
        StepDef::new(
            Expectation,
            format!(r#"^no frames were dropped{ON_BUS}$"#),
            "no frames were dropped",
            step_fn!(no_drops),
        ),
    ]
}

async fn silent(w: &mut ScenarioWorld, a: &StepArgs) -> StepResult {
    let period = a.duration(1, 2)?;
    expect_none(w, a.opt(0), period, "a frame", |_| true).await
}

/// Median and largest deviation of the intervals between `timestamps` (ns), in ms.
pub fn interval_stats(timestamps: &[u64]) -> Option<(f64, Vec<f64>)> {
    let mut intervals: Vec<f64> = timestamps
        .windows(2)
        .map(|w| w[1].saturating_sub(w[0]) as f64 / 1e6)
        .collect();
    if intervals.is_empty() {
        return None;
    }
    let raw = intervals.clone();
    intervals.sort_by(f64::total_cmp);
    Some((intervals[(intervals.len() - 1) / 2], raw))
}

async fn periodic(w: &mut ScenarioWorld, a: &StepArgs) -> StepResult {
    let name = a.get(0).to_string();
    let period_ms: f64 = a
        .get(1)
        .parse()
        .map_err(|_| StepFailure::fail("period is not a number"))?;
    let tolerance = match a.opt(2) {
        Some(t) => {
            let value = t.parse::<f64>().map_err(|_| {
                StepFailure::fail(format!("bad value `± {t}%`: the tolerance is not a number"))
            })?;
            if value < 0.0 {
                return Err(StepFailure::fail(format!(
                    "bad value `± {t}%`: a tolerance cannot be negative (write `± {}%`)",
                    -value
                )));
            }
            value / 100.0
        }
        None => 0.2,
    };
    let msg = {
        let pass = w.pass()?;
        pass.fixtures
            .message(&name)
            .map_err(|e| StepFailure::fail(e.to_string()))?
            .clone()
    };
    let bus = w.bus(a.opt(3))?;
    let from = bus.tape().len();
    let start_ns = crate::bus::now_ns();
    let budget =
        Duration::from_secs_f64(period_ms * (PERIODIC_INTERVALS as f64 + 2.0) * (1.0 + tolerance) / 1000.0);
    let stamps = bus
        .tape()
        .wait(from, tokio::time::Instant::now() + budget, |frames| {
            let ts: Vec<u64> = frames
                .iter()
                .filter(|f| f.timestamp_ns >= start_ns && f.frame.id() == Some(msg.id))
                .map(|f| f.timestamp_ns)
                .collect();
            (ts.len() > PERIODIC_INTERVALS).then_some(ts)
        })
        .await;
    let Some(stamps) = stamps else {
        let seen = bus
            .tape()
            .since(from)
            .iter()
            .filter(|f| f.frame.id() == Some(msg.id))
            .count();
        return Err(StepFailure::fail(format!(
            "\"{name}\" seen {seen} times in {} ms; expected {} at a {period_ms} ms period",
            budget.as_millis(),
            PERIODIC_INTERVALS + 1
        )));
    };
    let (median, intervals) = interval_stats(&stamps[..=PERIODIC_INTERVALS]).unwrap_or((0.0, Vec::new()));
    let jitter = intervals
        .iter()
        .map(|i| (i - period_ms).abs())
        .fold(0.0, f64::max);
    // Every interval is kept: across repeats and environments parity compares their distributions.
    w.metrics.push(Metric {
        samples: intervals.clone(),
        ..Metric::new(format!("period {name}"), median, "ms")
    });
    w.metrics
        .push(Metric::new(format!("jitter {name}"), jitter, "ms"));
    let low = period_ms * (1.0 - tolerance);
    let high = period_ms * (1.0 + tolerance);
    if median < low || median > high {
        return Err(StepFailure::fail(format!(
            "\"{name}\" median period {median:.1} ms is outside {period_ms} ms ± {:.0}% ({low:.1}..{high:.1} ms); intervals: {}",
            tolerance * 100.0,
            fmt_intervals(&intervals)
        )));
    }
    if let Some(gap) = intervals.iter().find(|i| **i > 2.0 * period_ms) {
        return Err(StepFailure::fail(format!(
            "\"{name}\" missed a period: a gap of {gap:.1} ms at a {period_ms} ms period; intervals: {}",
            fmt_intervals(&intervals)
        )));
    }
    Ok(())
}

fn fmt_intervals(intervals: &[f64]) -> String {
    intervals
        .iter()
        .map(|i| format!("{i:.1}"))
        .collect::<Vec<_>>()
        .join(", ")
}

async fn no_drops(w: &mut ScenarioWorld, a: &StepArgs) -> StepResult {
    let bus = w.bus(a.opt(0))?;
    let Some(stats) = bus.stats() else {
        return Err(StepFailure::fail(
            "this bus does not count drops (not a userspace hub)",
        ));
    };
    let lost: Vec<String> = stats
        .nodes
        .iter()
        .filter(|n| n.dropped > 0)
        .map(|n| format!("{} lost {}", n.name, n.dropped))
        .collect();
    if lost.is_empty() {
        Ok(())
    } else {
        Err(StepFailure::fail(format!(
            "frames were dropped: {}",
            lost.join(", ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_interval() {
        let ts = [0, 100_000_000, 205_000_000, 300_000_000, 500_000_000];
        let (median, intervals) = interval_stats(&ts).unwrap();
        assert_eq!(intervals.len(), 4);
        assert!((median - 100.0).abs() < 1e-9, "{median}");
        assert!(interval_stats(&[1]).is_none());
    }
}
