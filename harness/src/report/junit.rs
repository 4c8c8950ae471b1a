//! JUnit XML: one testcase per scenario × environment, with the environment as a property, and a
//! `parity` suite with each scenario's cross-environment verdict.

use std::time::Duration;

use quick_junit::{NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestSuite};

use crate::parity::{RunReport, Verdict};
use crate::record::Outcome;

/// The JUnit document of a run.
pub fn render(report: &RunReport) -> Result<String, quick_junit::SerializeError> {
    let mut junit = Report::new(format!("agl-parity {}", report.run_id));
    junit.set_time(Duration::from_secs_f64(report.duration_ms / 1000.0));
    for env in &report.environments {
        let mut suite = TestSuite::new(env.name.clone());
        suite.add_property(Property::new("environment", env.name.clone()));
        suite.add_property(Property::new("transport", env.transport.clone()));
        for run in report.runs.iter().filter(|r| r.env == env.name) {
            let status = match run.outcome {
                Outcome::Passed => TestCaseStatus::success(),
                Outcome::Failed => failure(NonSuccessKind::Failure, "fail", run.message.as_deref()),
                Outcome::InfraError => failure(NonSuccessKind::Error, "infra-error", run.message.as_deref()),
                Outcome::Unsupported => TestCaseStatus::skipped(),
            };
            let mut case = TestCase::new(format!("{}: {}", run.feature_name, run.name), status);
            case.set_classname(run.id.to_string());
            case.set_time(Duration::from_secs_f64(run.duration_ms / 1000.0));
            case.add_property(Property::new("environment", run.env.clone()));
            case.add_property(Property::new("transport", run.transport.clone()));
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
        };
        let mut case = TestCase::new(format!("{}: {}", s.feature_name, s.name), status);
        case.set_classname(s.id.to_string());
        case.add_property(Property::new("verdict", s.verdict.label()));
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
