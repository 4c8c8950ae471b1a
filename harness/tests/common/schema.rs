//! `parity.json` against its JSON Schema (`reports/schema/parity-v1.schema.json`), for the tests that check
//! the reports of real runs with a real validator (the `jsonschema` crate).

use std::path::Path;

use serde_json::Value;

/// The schema, read from the repository.
pub fn schema() -> Value {
    let path = super::repo().join("reports/schema/parity-v1.schema.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every mismatch of `instance` as `<JSON pointer>: <what>`.
pub fn mismatches(schema: &Value, instance: &Value) -> Vec<String> {
    let validator = jsonschema::draft202012::new(schema).expect("the schema is a valid 2020-12 schema");
    validator
        .iter_errors(instance)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

pub fn parity_json(dir: &Path) -> Value {
    let path = dir.join("parity.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn assert_valid(what: &str, instance: &Value) {
    let found = mismatches(&schema(), instance);
    assert!(
        found.is_empty(),
        "{what}: parity.json does not match reports/schema/parity-v1.schema.json:\n{}",
        found.join("\n")
    );
}
