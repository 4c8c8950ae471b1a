//! The step library: every Gherkin step the framework understands.
//!
//! Steps are registered explicitly (no link-time inventory), grouped by concern: [`lifecycle`] (deploying,
//! stopping, killing, restarting workloads), [`frames`] (raw frames in candump syntax), [`signals`] (DBC
//! messages by signal values), [`timing`] (silence, periodic rates, drops), [`replay`] (recorded traces put back
//! on the bus) and [`faults`] (faults and bus timing applied by the hub). [`catalog`] lists them for
//! `agl-parity list --steps`.
//!
//! Deadlines (`within 500 ms`) count from the *mark*: the start of the last `When` step (or the end of the
//! last `Given` step). Frame timestamps are the bus's own, so a deadline measures what the bus saw.
//! Wherever a step takes `on bus "<name>"`, leaving it out means the scenario's only bus, or the default bus
//! of the parity configuration.

pub mod def;
pub mod faults;
pub mod frames;
pub mod lifecycle;
pub mod replay;
pub mod signals;
pub mod timing;

use cucumber::step::Collection;
use regex::Regex;

pub use def::{
    guard, install_quiet_panic_hook, ms_between, parse_assignments, parse_conditions, parse_duration,
    parse_frame, parse_id, Condition, Kind, Op, StepArgs, StepDef, StepFailed, StepResult, DUR, ON_BUS,
};

use crate::world::ScenarioWorld;

/// Every step definition, in documentation order.
pub fn catalog() -> Vec<StepDef> {
    let mut all = lifecycle::steps();
    all.extend(frames::steps());
    all.extend(signals::steps());
    all.extend(timing::steps());
    all.extend(replay::steps());
    all.extend(faults::steps());
    all
}

/// The cucumber step collection.
pub fn collection() -> Result<Collection<ScenarioWorld>, regex::Error> {
    let mut c = Collection::new();
    for def in catalog() {
        let re = Regex::new(&def.pattern)?;
        c = match def.kind {
            Kind::Action => c.given(None, re.clone(), def.func).when(None, re, def.func),
            Kind::Expectation => c.then(None, re, def.func),
        };
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pattern_compiles_and_examples_match_exactly_one() {
        let defs = catalog();
        let compiled: Vec<(Kind, Regex)> = defs
            .iter()
            .map(|d| (d.kind, Regex::new(&d.pattern).expect("pattern compiles")))
            .collect();
        for d in &defs {
            let matching: Vec<_> = compiled
                .iter()
                .filter(|(k, re)| *k == d.kind && re.is_match(d.example))
                .map(|(_, re)| re.as_str())
                .collect();
            assert_eq!(
                matching.len(),
                1,
                "example `{}` matches {:?}",
                d.example,
                matching
            );
            assert!(
                d.pattern.starts_with('^') && d.pattern.ends_with('$'),
                "{} is anchored",
                d.pattern
            );
        }
        assert!(collection().is_ok());
    }
}
