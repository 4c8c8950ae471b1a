//! Progress of a run on the terminal: one bar per environment, one line per finished scenario.
//!
//! Bars are drawn only when stderr is a terminal; the per-scenario lines are always printed (to stderr),
//! so CI logs show the run as it happens.

use std::io::IsTerminal;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::parity::outcome_label;
use crate::record::{Outcome, ScenarioRun};

/// The run's progress display.
pub struct Progress {
    multi: Option<MultiProgress>,
}

impl Progress {
    pub fn new(bars: bool) -> Progress {
        let multi = (bars && std::io::stderr().is_terminal())
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Progress { multi }
    }

    /// Prints a line above the bars.
    pub fn line(&self, text: &str) {
        match &self.multi {
            Some(m) => {
                let _ = m.println(text);
            }
            None => eprintln!("{text}"),
        }
    }

    /// A bar for one environment's passes over `scenarios` scenarios, each run `repeats` times.
    pub fn environment(&self, name: &str, scenarios: usize, repeats: u32) -> EnvBar {
        let total = scenarios as u64 * u64::from(repeats.max(1));
        let bar = match &self.multi {
            Some(m) => {
                let bar = m.add(ProgressBar::new(total));
                let style = ProgressStyle::with_template(
                    "{prefix:>12.bold} [{bar:30.cyan/blue}] {pos}/{len} {elapsed} {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar());
                bar.set_style(style.progress_chars("=> "));
                bar.set_prefix(name.to_string());
                Some(bar)
            }
            None => {
                if repeats > 1 {
                    eprintln!(
                        "== environment {name}: {scenarios} scenarios × {repeats} repeats ({total} runs)"
                    );
                } else {
                    eprintln!("== environment {name}: {scenarios} scenarios");
                }
                None
            }
        };
        EnvBar {
            bar,
            multi: self.multi.clone(),
            env: name.to_string(),
        }
    }
}

/// Progress of one environment.
#[derive(Clone)]
pub struct EnvBar {
    bar: Option<ProgressBar>,
    multi: Option<MultiProgress>,
    env: String,
}

impl EnvBar {
    pub fn message(&self, msg: &str) {
        if let Some(b) = &self.bar {
            b.set_message(msg.to_string());
        }
    }

    fn println(&self, text: &str) {
        match &self.multi {
            Some(m) => {
                let _ = m.println(text);
            }
            None => eprintln!("{text}"),
        }
    }

    /// Reports a finished scenario: a line, and the failure message indented.
    pub fn scenario_finished(&self, run: &ScenarioRun) {
        let label = match run.outcome {
            Outcome::Passed => "PASS",
            Outcome::Failed => "FAIL",
            Outcome::InfraError => "INFRA",
            Outcome::Unsupported => "UNSUP",
        };
        let repeat = if run.repeat > 0 {
            format!(" [repeat {}]", run.repeat + 1)
        } else {
            String::new()
        };
        self.println(&format!(
            "  {label:<5} {:<10} {:<32} {}{repeat} ({:.1} s)",
            self.env,
            run.id.to_string(),
            run.name,
            run.duration_ms / 1000.0
        ));
        if let Some(msg) = &run.message {
            for line in msg.lines() {
                self.println(&format!("        {line}"));
            }
        }
        if let Some(b) = &self.bar {
            b.inc(1);
            b.set_message(format!("{} {}", outcome_label(run.outcome), run.name));
        }
    }

    /// Counts `n` runs as done without a line (the repeats of a scenario recorded once).
    pub fn advance(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }

    pub fn finish_with(&self, msg: &str) {
        match &self.bar {
            Some(b) => b.finish_with_message(msg.to_string()),
            None => eprintln!("== environment {}: {msg}", self.env),
        }
    }
}
