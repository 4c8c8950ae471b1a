//! JUnit XML: one testcase per scenario × environment, with the environment as a property, and a
//! `parity` suite with each scenario's cross-environment verdict.
//!
//! Repeats (`--repeat N`) follow Maven Surefire's rerun format, which Jenkins' JUnit plugin and GitLab read:
//! a flaky testcase (verdict `flaky`, or an environment whose repeats disagree) is a passed testcase with
//! one `<flakyFailure>` (`<flakyError>` for an infra-error) per failing repeat, its message naming the
//! repeat; a testcase failing in every repeat is a `<failure>` with `<rerunFailure>` for the other repeats.

use std::time::Duration;

use std::collections::BTreeMap;

use quick_junit::{NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestRerun, TestSuite};

use crate::parity::{self, RunReport, Verdict};
use crate::record::{Outcome, ScenarioId, ScenarioRun};

/// The JUnit document of a run.
pub fn render(report: &RunReport) -> Result<String, quick_junit::SerializeError> {
    let mut junit = Report::new(format!("agl-parity {}", report.run_id));
    junit.set_time(Duration::from_secs_f64(report.duration_ms / 1000.0));
    for env in &report.environments {
        let mut suite = TestSuite::new(env.name.clone());
        suite.add_property(Property::new("environment", env.name.clone()));
        suite.add_property(Property::new("transport", env.transport.clone()));
        // One testcase per scenario; its repeats (`--repeat N`) become Surefire's rerun elements.
        let mut by_id: BTreeMap<&ScenarioId, Vec<&ScenarioRun>> = BTreeMap::new();
        for run in report.runs.iter().filter(|r| r.env == env.name) {
            by_id.entry(&run.id).or_default().push(run);
        }
        for mut repeats in by_id.into_values() {
            repeats.sort_by_key(|r| r.repeat);
            let outcomes: Vec<Outcome> = repeats.iter().map(|r| r.outcome).collect();
            let collapsed = parity::collapse(&outcomes);
            // The repeat that stands for the testcase: the first that did not pass when it failed in
            // every repeat, the first that passed when it is flaky, else the first.
            let stands_for = |r: &&ScenarioRun| match collapsed {
                None => r.outcome == Outcome::Passed,
                Some(Outcome::Passed) => true,
                Some(_) => r.outcome != Outcome::Passed,
            };
            let run = repeats.iter().copied().find(stands_for).unwrap_or(repeats[0]);
            let mut status = match collapsed {
                Some(Outcome::Passed) | None => TestCaseStatus::success(),
                Some(Outcome::Failed) => failure(NonSuccessKind::Failure, "fail", run.message.as_deref()),
                Some(Outcome::InfraError) => {
                    failure(NonSuccessKind::Error, "infra-error", run.message.as_deref())
                }
                Some(Outcome::Unsupported) => TestCaseStatus::skipped(),
            };
            // Flaky: a passed testcase with a <flakyFailure>/<flakyError> per failing repeat; failing in
            // every repeat: <rerunFailure>/<rerunError> for the other repeats.
            let reruns: Vec<TestRerun> = repeats
                .iter()
                .filter(|r| r.repeat != run.repeat)
                .filter(|r| matches!(r.outcome, Outcome::Failed | Outcome::InfraError))
                .map(|r| rerun(r.repeat, r.outcome, r.message.as_deref()))
                .collect();
            status.add_reruns(reruns);
            let mut case = TestCase::new(format!("{}: {}", run.feature_name, run.name), status);
            case.set_classname(run.id.to_string());
            case.set_time(Duration::from_secs_f64(run.duration_ms / 1000.0));
            case.add_property(Property::new("environment", run.env.clone()));
            case.add_property(Property::new("transport", run.transport.clone()));
            if repeats.len() > 1 {
                case.add_property(Property::new("repeats", repeats.len().to_string()));
            }
            if collapsed.is_none() {
                case.add_property(Property::new("flaky", "true"));
            }
            let steps: Vec<String> = run
                .steps
                .iter()
                .map(|s| {
                    format!(
                        "{:>8.1} ms  {:?}  {} {}",
                        s.duration_ms, s.status, s.keyword, s.text
                    )
                })
                .collect();
            case.set_system_out(steps.join("\n"));
            suite.add_test_case(case);
        }
        junit.add_test_suite(suite);
    }
    let mut parity = TestSuite::new("parity");
    for s in &report.scenarios {
        let detail: Vec<String> = s
            .drift
            .iter()
            .map(|d| format!("{}: {}", d.kind, d.detail))
            .collect();
        let status = match s.verdict {
            Verdict::Pass => TestCaseStatus::success(),
            Verdict::Fail => failure(NonSuccessKind::Failure, "fail", Some(&detail.join("\n"))),
            Verdict::InfraError => failure(NonSuccessKind::Error, "infra-error", Some(&detail.join("\n"))),
            Verdict::Unsupported => TestCaseStatus::skipped(),
            Verdict::ParityDrift => {
                failure(NonSuccessKind::Failure, "parity-drift", Some(&detail.join("\n")))
            }
            // Passed, with a <flakyFailure> per failing repeat of each flaky environment (what Maven
            // Surefire writes for a test that passed on a rerun; Jenkins and GitLab read it as passed/flaky).
            Verdict::Flaky => {
                let mut status = TestCaseStatus::success();
                for f in &s.flaky {
                    for r in &f.failures {
                        let message = format!("{}: {}", f.env, r.message.as_deref().unwrap_or("no message"));
                        status.add_rerun(rerun(r.repeat, r.outcome, Some(&message)));
                    }
                }
                status
            }
        };
        let mut case = TestCase::new(format!("{}: {}", s.feature_name, s.name), status);
        case.set_classname(s.id.to_string());
        case.add_property(Property::new("verdict", s.verdict.label()));
        if s.repeats > 1 {
            case.add_property(Property::new("repeats", s.repeats.to_string()));
        }
        parity.add_test_case(case);
    }
    for e in &report.feature_errors {
        let mut case = TestCase::new(
            format!("{}:{}", e.path, e.line),
            failure(NonSuccessKind::Error, "feature-file", Some(&e.message)),
        );
        case.set_classname(e.path.clone());
        parity.add_test_case(case);
    }
    junit.add_test_suite(parity);
    junit.to_string()
}

fn failure(kind: NonSuccessKind, ty: &str, message: Option<&str>) -> TestCaseStatus {
    let mut status = TestCaseStatus::non_success(kind);
    status.set_type(ty.to_string());
    if let Some(m) = message.filter(|m| !m.is_empty()) {
        status.set_message(m.lines().next().unwrap_or(m).to_string());
        status.set_description(m.to_string());
    }
    status
}

fn rerun(repeat: u32, outcome: Outcome, message: Option<&str>) -> TestRerun {
    let kind = if outcome == Outcome::InfraError {
        NonSuccessKind::Error
    } else {
        NonSuccessKind::Failure
    };
    let mut r = TestRerun::new(kind);
    r.set_type(parity::outcome_label(outcome));
    let text = format!("repeat {}: {}", repeat + 1, message.unwrap_or("no message"));
    r.set_message(text.lines().next().unwrap_or("").to_string());
    r.set_description(text);
    r
}
