//! `parity.json` against its JSON Schema (`reports/schema/parity-v1.schema.json`, draft 2020-12) with a real
//! validator (the `jsonschema` crate): the reports of real runs — a plain native run of the HVAC sample, a
//! run with faults on the bus, and one with `--repeat 2` — must match it, every object of the schema closed
//! (`additionalProperties: false`), so a field added to the report without the schema fails here, named by
//! its JSON pointer. The schema's version is the one the harness writes.

mod common;

use serde_json::Value;

use common::schema::{assert_valid, mismatches, parity_json, schema};
use common::TestProject;

const HEARTBEAT: &str = r#"Feature: HVAC heartbeat

  Scenario: Status heartbeat
    Given the "hvac" workload is running
    Then "HvacStatus" is sent every 100 ms ± 25%
    And no frames were dropped
"#;

const FAULTED: &str = r#"Feature: Faults

  Scenario: A dropped and delayed heartbeat
    Given the "hvac" workload is running
    And 50 % of "HvacStatus" frames are lost
    And "HvacStatus" frames are delayed by 5 ms
    Then within 2 s "HvacStatus" is seen
"#;

#[test]
fn the_schema_is_versioned_like_the_reports_the_harness_writes() {
    let s = schema();
    assert_eq!(s["$schema"], "https://json-schema.org/draft/2020-12/schema");
    assert_eq!(
        s["properties"]["schema_version"]["const"],
        agl_parity::parity::SCHEMA_VERSION
    );
    // Every object the schema describes is closed, so undocumented fields are caught.
    let mut open = Vec::new();
    fn walk(v: &Value, at: String, open: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if m.get("type") == Some(&Value::from("object"))
                    && m.contains_key("properties")
                    && m.get("additionalProperties") != Some(&Value::Bool(false))
                {
                    open.push(at.clone());
                }
                for (k, x) in m {
                    walk(x, format!("{at}/{k}"), open);
                }
            }
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    walk(x, format!("{at}/{i}"), open);
                }
            }
            _ => {}
        }
    }
    walk(&s, String::new(), &mut open);
    assert!(
        open.is_empty(),
        "objects without additionalProperties: false: {open:?}"
    );
}

#[test]
fn a_mismatch_is_named_by_its_json_pointer() {
    let p = TestProject::new();
    p.write("scenarios/heartbeat.feature", HEARTBEAT);
    let out = p.run();
    let mut report = parity_json(&out.report_dir);
    // A bus with a bridge (as the bridge serialises itself) is documented too.
    let bridge = vcan::bridge::BridgeReport {
        protocol: "socketcand".into(),
        address: "127.0.0.1:29536".into(),
        nodes: vec![vcan::bridge::BridgeNodeReport {
            node: "socketcand:127.0.0.1:51234".into(),
            peer: "127.0.0.1:51234".into(),
            connected: true,
            to_bus: 3,
            to_peer: 5,
            rejected: 0,
            lost: 1,
            reordered: 0,
            duplicated: 0,
            errors: vec!["short frame".into()],
        }],
    };
    report["runs"][0]["buses"][0]["bridges"] = serde_json::json!([bridge]);
    assert_valid("a bus with a bridge", &report);
    report["runs"][0]["buses"][0]["undocumented"] = Value::from(1);
    report["environments"][0]["passed"] = Value::from("one");
    let found = mismatches(&schema(), &report);
    assert!(
        found
            .iter()
            .any(|m| m.starts_with("/runs/0/buses/0:") && m.contains("undocumented")),
        "{found:?}"
    );
    assert!(
        found.iter().any(|m| m.starts_with("/environments/0/passed:")),
        "{found:?}"
    );
}

#[test]
fn reports_of_real_runs_match_the_schema() {
    // A plain native run of a sample feature.
    let p = TestProject::new();
    p.write("scenarios/heartbeat.feature", HEARTBEAT);
    let plain = p.run();
    assert!(plain.report.all_passed(), "{:?}", plain.report.scenarios);
    let json = parity_json(&plain.report_dir);
    assert_eq!(json["schema_version"], agl_parity::parity::SCHEMA_VERSION);
    assert_valid("plain run", &json);

    // Faults on the bus: the run records them (buses[].faults) and the seed.
    let p = TestProject::new();
    p.write("scenarios/faulted.feature", FAULTED);
    let faulted = p.run();
    assert!(
        faulted
            .report
            .runs
            .iter()
            .any(|r| r.buses.iter().any(|b| b.faults.len() == 2)),
        "the faults are recorded: {:?}",
        faulted.report.runs.iter().map(|r| &r.message).collect::<Vec<_>>()
    );
    let json = parity_json(&faulted.report_dir);
    assert!(json["seed"].is_u64(), "{}", json["seed"]);
    assert_valid("run with faults", &json);

    // Repeats: distributions (timing[].stats) and the repeat of each record.
    let p = TestProject::new();
    p.write("scenarios/heartbeat.feature", HEARTBEAT);
    let mut options = p.options();
    options.repeat = 2;
    let repeated = p.run_with(options);
    let json = parity_json(&repeated.report_dir);
    assert_eq!(json["runs"].as_array().map(Vec::len), Some(2));
    assert!(
        json["scenarios"][0]["timing"]
            .as_array()
            .is_some_and(|rows| rows.iter().any(|r| r["stats"].is_object())),
        "{}",
        json["scenarios"][0]["timing"]
    );
    assert_valid("run with --repeat 2", &json);

    // What the harness writes, it reads back.
    for dir in [&plain.report_dir, &faulted.report_dir, &repeated.report_dir] {
        agl_parity::report::read_json(&dir.join("parity.json")).expect("reads back");
    }
}
