//! Cucumber JSON (`cucumber-<env>.json`, one file per environment): the format cucumber-html-reporter,
//! multiple-cucumber-html-reporter, Jenkins' cucumber plugin, Allure and Xray import.
//!
//! Each file is the standard array of features, each with its `elements` (scenarios) and their `steps`
//! with `result.status` (`passed`, `failed`, `skipped`, `undefined`) and `result.duration` in nanoseconds.
//! The environment is carried three ways, so every consumer finds it: a tag `@env:<env>` on each scenario,
//! the feature `uri` prefixed `<env>/`, and the `metadata` block (`device`, `platform`, `browser`) that
//! multiple-cucumber-html-reporter shows as one "device" per environment. A scenario run several times
//! (`--repeat N`) is one element per repeat, named `… [repeat k]`. A scenario that did not run in an
//! environment (unsupported here) is one skipped step carrying the reason.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::parity::RunReport;
use crate::record::{Outcome, ScenarioRun, StepStatus};

/// The Cucumber JSON document of environment `env`.
pub fn render(report: &RunReport, env: &str) -> Value {
    let mut features: BTreeMap<&str, Vec<&ScenarioRun>> = BTreeMap::new();
    for run in report.runs.iter().filter(|r| r.env == env) {
        features.entry(run.id.feature.as_str()).or_default().push(run);
    }
    let repeats = report.runs.iter().map(|r| r.repeat).max().unwrap_or(0) > 0;
    let transport = report
        .environments
        .iter()
        .find(|e| e.name == env)
        .map(|e| e.transport.clone())
        .unwrap_or_default();
    let docs: Vec<Value> = features
        .into_iter()
        .map(|(uri, mut runs)| {
            runs.sort_by_key(|r| (r.id.line, r.repeat));
            let first = runs[0];
            let feature_id = slug(&first.feature_name);
            let elements: Vec<Value> = runs
                .iter()
                .map(|r| element(r, &feature_id, env, repeats))
                .collect();
            json!({
                "uri": format!("{env}/{uri}"),
                "id": feature_id,
                "keyword": "Feature",
                "name": first.feature_name,
                "description": "",
                "line": 1,
                "tags": [],
                "elements": elements,
                "metadata": {
                    "device": env,
                    "platform": { "name": "linux", "version": transport },
                    "browser": { "name": env, "version": report.run_id },
                },
            })
        })
        .collect();
    Value::Array(docs)
}

fn element(r: &ScenarioRun, feature_id: &str, env: &str, repeats: bool) -> Value {
    let name = if repeats {
        format!("{} [repeat {}]", r.name, r.repeat + 1)
    } else {
        r.name.clone()
    };
    let mut tags: Vec<Value> = r
        .tags
        .iter()
        .map(|t| json!({ "name": format!("@{t}"), "line": r.id.line.saturating_sub(1) }))
        .collect();
    tags.push(json!({ "name": format!("@env:{env}"), "line": r.id.line.saturating_sub(1) }));
    let mut steps: Vec<Value> = r
        .steps
        .iter()
        .map(|s| {
            let status = match s.status {
                StepStatus::Passed => "passed",
                StepStatus::Failed | StepStatus::InfraError => "failed",
                StepStatus::Undefined => "undefined",
                StepStatus::Skipped => "skipped",
            };
            let mut result = json!({
                "status": status,
                "duration": (s.duration_ms * 1e6).round() as u64,
            });
            if matches!(s.status, StepStatus::Failed | StepStatus::InfraError) {
                result["error_message"] = json!(r.message.clone().unwrap_or_default());
            }
            json!({
                "keyword": format!("{} ", s.keyword),
                "name": s.text,
                "line": s.line,
                "result": result,
            })
        })
        .collect();
    if steps.is_empty() {
        // Not run here (unsupported, or the environment was unavailable): one step that says why.
        let status = if r.outcome == Outcome::Unsupported {
            "skipped"
        } else {
            "failed"
        };
        steps.push(json!({
            "keyword": "Given ",
            "name": r.message.clone().unwrap_or_else(|| "not run in this environment".into()),
            "line": r.id.line,
            "result": { "status": status, "duration": 0 },
        }));
    }
    json!({
        "id": format!("{feature_id};{};{}", slug(&r.name), r.repeat + 1),
        "keyword": "Scenario",
        "name": name,
        "description": "",
        "line": r.id.line,
        "type": "scenario",
        "tags": tags,
        "steps": steps,
    })
}

fn slug(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{ScenarioId, StepRun};

    fn run(env: &str, outcome: Outcome, status: StepStatus, repeat: u32) -> ScenarioRun {
        ScenarioRun {
            id: ScenarioId {
                feature: "scenarios/hvac.feature".into(),
                line: 9,
            },
            feature_name: "HVAC controller".into(),
            name: "Status heartbeat".into(),
            tags: vec!["hvac".into()],
            env: env.into(),
            transport: "t".into(),
            outcome,
            message: (outcome != Outcome::Passed).then(|| "scenarios/hvac.feature:10: late".into()),
            started_at: String::new(),
            duration_ms: 120.0,
            steps: vec![StepRun {
                keyword: "Then".into(),
                text: "\"HvacStatus\" is sent every 100 ms".into(),
                line: 10,
                start_ms: 0.0,
                duration_ms: 1.5,
                status,
            }],
            metrics: vec![],
            buses: vec![],
            workloads: vec![],
            repeat,
        }
    }

    #[test]
    fn features_carry_the_environment_and_steps_their_results() {
        let mut report: RunReport = serde_json::from_value(json!({
            "run_id": "r1", "started_at": "", "duration_ms": 1.0, "host": "h",
            "environments": [], "scenarios": [], "feature_errors": [], "runs": []
        }))
        .unwrap();
        report.runs = vec![
            run("native", Outcome::Passed, StepStatus::Passed, 0),
            run("vm", Outcome::Failed, StepStatus::Failed, 0),
            run("vm", Outcome::Passed, StepStatus::Passed, 1),
        ];
        let native = render(&report, "native");
        let f = &native[0];
        assert_eq!(f["uri"], "native/scenarios/hvac.feature");
        assert_eq!(f["metadata"]["device"], "native");
        let e = &f["elements"][0];
        assert_eq!(e["type"], "scenario");
        assert_eq!(e["name"], "Status heartbeat [repeat 1]");
        assert!(e["tags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "@env:native"));
        assert_eq!(e["steps"][0]["result"]["status"], "passed");
        assert_eq!(e["steps"][0]["result"]["duration"], 1_500_000);
        let vm = render(&report, "vm");
        let elements = vm[0]["elements"].as_array().unwrap();
        assert_eq!(elements.len(), 2, "one element per repeat");
        assert_eq!(elements[0]["steps"][0]["result"]["status"], "failed");
        assert_eq!(
            elements[0]["steps"][0]["result"]["error_message"],
            "scenarios/hvac.feature:10: late"
        );
        assert_ne!(elements[0]["id"], elements[1]["id"]);
    }
}
