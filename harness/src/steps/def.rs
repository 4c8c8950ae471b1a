//! What every step family shares: the step definition type ([`StepDef`], [`Kind`]), the arguments a
//! step gets ([`StepArgs`]), the `step_fn!` wrapper that times, guards and records a step body, and the
//! parsers of step arguments (durations, signal assignments and conditions, CAN ids, frames). The families
//! (`frames`, `signals`, `lifecycle`, `timing`) sit above this module and the catalog (`steps/mod.rs`) on top.

use std::time::Duration;

use cucumber::gherkin;
use cucumber::step::Context;
use futures::future::LocalBoxFuture;
use regex::Regex;

use crate::world::{ScenarioWorld, StepFailure};

/// Result of a step body.
pub type StepResult = Result<(), StepFailure>;

/// The captures and attachments of a matched step.
pub struct StepArgs {
    /// Capture groups 1.. (an unmatched optional group is an empty string).
    pub captures: Vec<String>,
    pub step: gherkin::Step,
}

impl StepArgs {
    pub fn from_context(ctx: Context) -> StepArgs {
        let captures = ctx.matches.into_iter().skip(1).map(|(_, v)| v).collect();
        StepArgs {
            captures,
            step: ctx.step,
        }
    }

    /// Capture `i` (0-based over the groups).
    pub fn get(&self, i: usize) -> &str {
        self.captures.get(i).map(String::as_str).unwrap_or("")
    }

    /// Capture `i`, or `None` when the optional group did not match.
    pub fn opt(&self, i: usize) -> Option<&str> {
        Some(self.get(i)).filter(|s| !s.is_empty())
    }

    /// The data table rows, header included.
    pub fn table(&self) -> Result<&[Vec<String>], StepFailure> {
        match &self.step.table {
            Some(t) if !t.rows.is_empty() => Ok(&t.rows),
            _ => Err(StepFailure::fail("this step needs a data table")),
        }
    }

    /// A duration from two captures: number and unit (`ms` or `s`).
    pub fn duration(&self, number: usize, unit: usize) -> Result<Duration, StepFailure> {
        parse_duration(self.get(number), self.get(unit))
    }
}

/// `500` + `ms` → 500 ms; `1.5` + `s` → 1500 ms.
pub fn parse_duration(number: &str, unit: &str) -> Result<Duration, StepFailure> {
    let value: f64 = number
        .parse()
        .map_err(|_| StepFailure::fail(format!("`{number}` is not a number")))?;
    let secs = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        other => {
            return Err(StepFailure::fail(format!(
                "unknown time unit `{other}` (use ms or s)"
            )))
        }
    };
    if !(0.0..=3600.0).contains(&secs) {
        return Err(StepFailure::fail(format!(
            "duration {number} {unit} is out of range (0 to 1 h)"
        )));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Regex fragment for a duration: captures number and unit.
pub const DUR: &str = r"(\d+(?:\.\d+)?) ?(ms|s)";
/// Regex fragment for an optional bus: captures the name.
pub const ON_BUS: &str = r#"(?: on bus "([^"]+)")?"#;

/// Payload of the panic that marks a failed step to cucumber; the panic hook keeps it quiet.
pub struct StepFailed;

/// Installs (once) a panic hook that stays silent for [`StepFailed`] and defers to the previous hook
/// for real panics.
pub fn install_quiet_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.payload().downcast_ref::<StepFailed>().is_none() {
                previous(info);
            }
        }));
    });
}

/// Wraps a step body `async fn(&mut ScenarioWorld, &StepArgs) -> StepResult` into a cucumber step: times
/// it, applies the step timeout, records it, and fails the step on error.
macro_rules! step_fn {
    ($body:path) => {{
        fn wrapper(
            w: &mut $crate::world::ScenarioWorld,
            ctx: cucumber::step::Context,
        ) -> futures::future::LocalBoxFuture<'_, ()> {
            Box::pin(async move {
                let args = $crate::steps::def::StepArgs::from_context(ctx);
                w.begin_step(&args.step);
                let (limit, interrupt) = w
                    .pass
                    .as_ref()
                    .map(|p| (p.settings.step_timeout, p.settings.interrupt.clone()))
                    .unwrap_or_default();
                let cancellable = args.step.ty == cucumber::gherkin::StepType::Then;
                let result = $crate::steps::def::guard($body(w, &args), limit, &interrupt, cancellable).await;
                if w.end_step(&args.step, result).is_some() {
                    std::panic::panic_any($crate::steps::def::StepFailed);
                }
            })
        }
        wrapper as cucumber::Step<$crate::world::ScenarioWorld>
    }};
}
pub(crate) use step_fn;

/// Runs a step body under the step time limit and the run's interrupt: an interrupted run fails every step
/// that has not started, and cancels expectations (`cancellable`) that are waiting; actions finish.
pub async fn guard(
    body: impl std::future::Future<Output = StepResult>,
    limit: Duration,
    interrupt: &crate::interrupt::Interrupt,
    cancellable: bool,
) -> StepResult {
    let interrupted = || Err(StepFailure::Infra(crate::error::InfraError::Interrupted));
    if interrupt.is_set() {
        return interrupted();
    }
    let limit = if limit.is_zero() {
        Duration::from_secs(60)
    } else {
        limit
    };
    let timed = async {
        match tokio::time::timeout(limit, body).await {
            Ok(r) => r,
            Err(_) => Err(StepFailure::fail(format!("step timed out after {limit:?}"))),
        }
    };
    if cancellable {
        tokio::select! {
            r = timed => r,
            _ = interrupt.wait() => interrupted(),
        }
    } else {
        timed.await
    }
}

/// Which keywords a step definition answers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Given and When: setting up or acting.
    Action,
    /// Then: expecting.
    Expectation,
}

/// One step definition.
pub struct StepDef {
    pub kind: Kind,
    pub pattern: String,
    pub example: &'static str,
    pub func: for<'a> fn(&'a mut ScenarioWorld, Context) -> LocalBoxFuture<'a, ()>,
}

impl StepDef {
    pub fn new(
        kind: Kind,
        pattern: impl Into<String>,
        example: &'static str,
        func: for<'a> fn(&'a mut ScenarioWorld, Context) -> LocalBoxFuture<'a, ()>,
    ) -> StepDef {
        StepDef {
            kind,
            pattern: pattern.into(),
            example,
            func,
        }
    }
}

/// Parses `Name=1, Other=2.5` (assignments) into pairs.
pub fn parse_assignments(text: &str) -> Result<Vec<(String, f64)>, StepFailure> {
    parse_conditions(text)?
        .into_iter()
        .map(|c| match c.op {
            Op::Eq => Ok((c.signal, c.value)),
            _ => Err(StepFailure::fail(format!(
                "`{}`: only `=` can set a signal value",
                c.text
            ))),
        })
        .collect()
}

/// A comparison operator of a signal condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// `Signal <op> value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub signal: String,
    pub op: Op,
    pub value: f64,
    pub text: String,
}

impl Condition {
    /// Whether `actual` satisfies the condition; equality allows `tolerance` (half a raw step).
    pub fn holds(&self, actual: f64, tolerance: f64) -> bool {
        let eq = (actual - self.value).abs() <= tolerance;
        match self.op {
            Op::Eq => eq,
            Op::Ne => !eq,
            Op::Lt => actual < self.value && !eq,
            Op::Le => actual < self.value || eq,
            Op::Gt => actual > self.value && !eq,
            Op::Ge => actual > self.value || eq,
        }
    }
}

/// Parses `FanPwm=55, Compressor!=1, CabinTemp>=20.5` (comma- or `and`-separated).
pub fn parse_conditions(text: &str) -> Result<Vec<Condition>, StepFailure> {
    let re = Regex::new(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(==|=|!=|<=|>=|<|>)\s*(-?\d+(?:\.\d+)?)\s*$")
        .map_err(|e| StepFailure::fail(e.to_string()))?;
    let mut out = Vec::new();
    for part in text.split(',').flat_map(|p| p.split(" and ")) {
        let caps = re.captures(part).ok_or_else(|| {
            StepFailure::fail(format!(
                "`{}` is not `Signal=value` (operators: = != < <= > >=)",
                part.trim()
            ))
        })?;
        let op = match &caps[2] {
            "=" | "==" => Op::Eq,
            "!=" => Op::Ne,
            "<" => Op::Lt,
            "<=" => Op::Le,
            ">" => Op::Gt,
            _ => Op::Ge,
        };
        let value = caps[3]
            .parse()
            .map_err(|_| StepFailure::fail(format!("`{}` is not a number", &caps[3])))?;
        out.push(Condition {
            signal: caps[1].to_string(),
            op,
            value,
            text: part.trim().to_string(),
        });
    }
    Ok(out)
}

/// Parses a CAN id written as `0x3A0`, `3A0` or `18FF0010` into the Linux `can_id`.
pub fn parse_id(text: &str) -> Result<u32, StepFailure> {
    crate::manifest::parse_can_id(text).map_err(|e| StepFailure::fail(e.to_string()))
}

/// Parses a candump-syntax frame.
pub fn parse_frame(text: &str) -> Result<vcan::Frame, StepFailure> {
    text.parse::<vcan::Frame>()
        .map_err(|e| StepFailure::fail(e.to_string()))
}

/// Milliseconds between two bus timestamps.
pub fn ms_between(from_ns: u64, to_ns: u64) -> f64 {
    (to_ns.saturating_sub(from_ns)) as f64 / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_and_assignments() {
        let c = parse_conditions("FanPwm=55, Compressor!=1 and CabinTemp>=-20.5").unwrap();
        assert_eq!(c.len(), 3);
        assert_eq!(c[1].op, Op::Ne);
        assert_eq!(c[2].value, -20.5);
        assert!(c[0].holds(55.0, 0.5) && !c[0].holds(56.0, 0.5));
        assert!(c[2].holds(-20.5, 0.05) && c[2].holds(0.0, 0.05) && !c[2].holds(-21.0, 0.05));
        assert!(parse_conditions("FanPwm is 55").is_err());
        assert!(parse_assignments("A>1").is_err());
        assert_eq!(
            parse_assignments("A=1,B=2").unwrap(),
            vec![("A".into(), 1.0), ("B".into(), 2.0)]
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500", "ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1.5", "s").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("5000", "s").is_err());
    }
}
