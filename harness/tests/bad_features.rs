//! Bad feature files: each gives an error naming file and line (what is wrong, where), the other scenarios
//! still run and the report is still written.

mod common;

use agl_parity::record::Outcome;
use agl_parity::runner::RunOutcome;
use common::{assert_passed, assert_report_written, message_of, TestProject};

/// A scenario that needs no workload and passes.
const GOOD: &str =
    "Feature: good\n  Scenario: a healthy scenario still passes\n    Then the bus is silent for 10 ms\n";

/// The feature errors of `file`, as `file:line: message`.
fn errors_of(outcome: &RunOutcome, file: &str) -> Vec<String> {
    outcome
        .report
        .feature_errors
        .iter()
        .filter(|e| e.path.ends_with(file))
        .map(|e| format!("{file}:{}: {}", e.line, e.message))
        .collect()
}

fn no_record(outcome: &RunOutcome, name: &str) {
    assert!(
        outcome.report.runs.iter().all(|r| r.name != name),
        "`{name}` is not run"
    );
}

#[test]
fn feature_file_with_a_byte_order_mark_runs() {
    let p = TestProject::new();
    p.write(
        "scenarios/bom.feature",
        "\u{feff}Feature: written by a Windows editor\n  Scenario: a scenario after a BOM runs\n    Then the bus is silent for 10 ms\n",
    );
    let out = p.run();
    assert!(
        out.report.feature_errors.is_empty(),
        "{:?}",
        out.report.feature_errors
    );
    assert_passed(&out, "a scenario after a BOM runs");
    assert_report_written(&out);
}

#[test]
fn outline_placeholder_missing_from_examples_fails_only_that_outline() {
    let p = TestProject::new();
    p.write(
        "scenarios/outline.feature",
        "Feature: outline\n\
         \x20 Scenario: before the outline\n\
         \x20   Then the bus is silent for 10 ms\n\
         \n\
         \x20 Scenario Outline: fan at <level>\n\
         \x20   Then the bus is silent for <level> ms\n\
         \n\
         \x20   Examples:\n\
         \x20     | speed |\n\
         \x20     | 10    |\n\
         \n\
         \x20 Scenario Outline: good outline <ms>\n\
         \x20   Then the bus is silent for <ms> ms\n\
         \n\
         \x20   Examples:\n\
         \x20     | ms |\n\
         \x20     | 10 |\n\
         \n\
         \x20 Scenario: after the outline\n\
         \x20   Then the bus is silent for 10 ms\n",
    );
    let out = p.run();
    let errors = errors_of(&out, "outline.feature");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("outline.feature:6: ") && errors[0].contains("<level>"),
        "{errors:?}"
    );
    assert!(errors[0].contains("columns: speed"), "{errors:?}");
    assert_passed(&out, "before the outline");
    assert_passed(&out, "good outline 10");
    assert_passed(&out, "after the outline");
    assert_report_written(&out);
}

#[test]
fn empty_feature_file_is_named_with_a_clear_message() {
    let p = TestProject::new();
    p.write("scenarios/good.feature", GOOD);
    p.write("scenarios/empty.feature", "");
    p.write("scenarios/comments.feature", "# nothing yet\n\n");
    let out = p.run();
    for file in ["empty.feature", "comments.feature"] {
        let errors = errors_of(&out, file);
        assert_eq!(
            errors,
            vec![format!("{file}:1: empty feature file: no `Feature:` in it")]
        );
    }
    assert_passed(&out, "a healthy scenario still passes");
    assert_report_written(&out);
}

#[test]
fn invalid_utf8_names_the_line_holding_it() {
    let p = TestProject::new();
    p.write("scenarios/good.feature", GOOD);
    let path = p.path().join("scenarios/latin1.feature");
    std::fs::write(
        &path,
        b"Feature: latin-1\n  Scenario: caf\xe9\n    Then the bus is silent for 10 ms\n",
    )
    .unwrap();
    let out = p.run();
    let errors = errors_of(&out, "latin1.feature");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("latin1.feature:2: ") && errors[0].contains("not valid UTF-8"),
        "{errors:?}"
    );
    assert_passed(&out, "a healthy scenario still passes");
    assert_report_written(&out);
}

#[test]
fn unknown_environment_tag_is_an_error_with_a_hint() {
    let p = TestProject::new();
    p.write(
        "scenarios/tags.feature",
        "Feature: tags\n\
         \x20 @env:nativ\n\
         \x20 Scenario: tagged with a typo\n\
         \x20   Then the bus is silent for 10 ms\n\
         \n\
         \x20 @env:native @not-env:vm\n\
         \x20 Scenario: tagged correctly\n\
         \x20   Then the bus is silent for 10 ms\n",
    );
    let out = p.run();
    let errors = errors_of(&out, "tags.feature");
    assert_eq!(errors.len(), 1, "{errors:?}");
    let e = &errors[0];
    assert!(e.starts_with("tags.feature:2: "), "{e}");
    assert!(e.contains("`@env:nativ`"), "{e}");
    assert!(e.contains("known: native, container, vm"), "{e}");
    assert!(e.contains("did you mean `native`"), "{e}");
    assert_passed(&out, "tagged correctly");
    let md = std::fs::read_to_string(out.report_dir.join("summary.md")).unwrap();
    assert!(md.contains("tags.feature:2"), "summary names the tag's line");
    assert_report_written(&out);
}

#[test]
fn ragged_table_rows_are_errors_naming_file_and_line() {
    let p = TestProject::new();
    p.write(
        "scenarios/ragged.feature",
        "Feature: ragged\n\
         \x20 Scenario: a row too short\n\
         \x20   When these frames are sent:\n\
         \x20     | id  | data |\n\
         \x20     | 120 |\n\
         \n\
         \x20 Scenario Outline: a row too long <ms>\n\
         \x20   Then the bus is silent for <ms> ms\n\
         \n\
         \x20   Examples:\n\
         \x20     | ms |\n\
         \x20     | 10 | 20 |\n\
         \n\
         \x20 Scenario: still runs\n\
         \x20   Then the bus is silent for 10 ms\n",
    );
    let out = p.run();
    let errors = errors_of(&out, "ragged.feature");
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors[0]
            .starts_with("ragged.feature:5: ragged data table row: 1 cells where its header (line 4) has 2"),
        "{errors:?}"
    );
    assert!(errors[0].contains("`a row too short` is not run"), "{errors:?}");
    assert!(
        errors[1].starts_with(
            "ragged.feature:12: ragged data table row: 2 cells where its header (line 11) has 1"
        ),
        "{errors:?}"
    );
    no_record(&out, "a row too short");
    no_record(&out, "a row too long 10");
    assert_passed(&out, "still runs");
    assert_report_written(&out);
}

#[test]
fn negative_timing_tolerance_is_a_bad_value_not_an_undefined_step() {
    let p = TestProject::new();
    p.write("scenarios/good.feature", GOOD);
    p.write(
        "scenarios/timing.feature",
        "Feature: timing\n  Scenario: a negative tolerance\n    Then \"HvacStatus\" is sent every 100 ms ± -25%\n",
    );
    let out = p.run();
    let msg = message_of(&out, "a negative tolerance", Outcome::Failed);
    assert!(msg.contains("bad value `± -25%`"), "{msg}");
    assert!(!msg.contains("undefined step"), "{msg}");
    assert_passed(&out, "a healthy scenario still passes");
    assert_report_written(&out);
}
