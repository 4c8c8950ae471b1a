//! Bad project files (manifests, DBC, `parity.yaml`) found by a corpus of malformed projects (issue 14 §6):
//! each is a clear error naming the file, the line where there is one, and the field; the scenarios that
//! do not need the bad part still run and the report is still written.

mod common;

use std::path::{Path, PathBuf};

use agl_parity::config::ParityConfig;
use agl_parity::fixtures::Fixtures;
use agl_parity::manifest;
use agl_parity::record::Outcome;
use common::{assert_passed, assert_report_written, message_of, TestProject};
use vcan::dbc::Database;

const GOOD: &str = r#"
Feature: good
  Scenario: a healthy scenario still passes
    Given the "body-control" workload is running
    When "LockRequest" is sent with Command=1
    Then within 300 ms "DoorLockState" has Locked=1
"#;

const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn repo_file(rel: &str) -> String {
    std::fs::read_to_string(common::repo().join(rel)).unwrap()
}

// ---------------------------------------------------------------------------------------------------------
// Manifests
// ---------------------------------------------------------------------------------------------------------

const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: NAME\n  annotations: { parity.agl.io/can-buses: vehicle }\nspec:\n  containers: [{ name: c, image: agl/x:1 }]\n";

#[test]
fn the_same_workload_name_twice_in_one_file_names_both_documents() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pods.yaml");
    let text = [
        POD.replace("NAME", "twin"),
        POD.replace("NAME", "other"),
        POD.replace("NAME", "twin"),
    ]
    .join("---\n");
    std::fs::write(&file, text).unwrap();
    let fx = Fixtures::from_paths(std::slice::from_ref(&file), &[]);
    let err = fx.workload("twin").unwrap_err().to_string();
    let shown = file.display();
    assert!(
        err.contains(&format!(
            "workload `twin` is defined 2 times: in {shown} document 1 and in {shown} document 3"
        )),
        "{err}"
    );
    assert!(
        fx.workload("other").is_ok(),
        "the other workload of the file is still used"
    );
    assert!(
        fx.manifest_errors.iter().any(|e| e.contains("`twin`")),
        "{:?}",
        fx.manifest_errors
    );
}

#[test]
fn the_same_workload_name_in_two_files_is_an_infra_error_naming_both_files() {
    let p = TestProject::new();
    p.write("scenarios/good.feature", GOOD);
    let hvac = std::fs::read_to_string(p.path().join("fixtures/manifests/hvac.yaml")).unwrap();
    p.write("fixtures/manifests/team-b/hvac-copy.yaml", &hvac);
    p.write(
        "scenarios/hvac.feature",
        "Feature: h\n  Scenario: uses the twice-defined workload\n    Given the \"hvac\" workload is running\n",
    );
    let out = p.run();
    let msg = message_of(&out, "uses the twice-defined workload", Outcome::InfraError);
    assert!(msg.contains("workload `hvac` is defined 2 times"), "{msg}");
    assert!(
        msg.contains("hvac.yaml document 1") && msg.contains("team-b/hvac-copy.yaml document 1"),
        "{msg}"
    );
    assert_passed(&out, "a healthy scenario still passes");
    assert_report_written(&out);
}

#[test]
fn an_image_by_digest_is_accepted_and_resolves_like_a_tag() {
    let text = POD
        .replace("NAME", "bcm")
        .replace("agl/x:1", &format!("agl/body-control@{DIGEST}"));
    let w = &manifest::parse(&text, Path::new("d.yaml")).unwrap()[0];
    let image = &w.containers[0].image;
    assert_eq!(image.binary_name(), "body-control");
    assert_eq!(image.digest().as_deref(), Some(DIGEST));
    assert_eq!(image.to_string(), format!("agl/body-control@{DIGEST}"));
    // A tag beside the digest is allowed; the digest names the image.
    let both = text.replace("body-control@", "body-control:1.0@");
    let w = &manifest::parse(&both, Path::new("d.yaml")).unwrap()[0];
    assert_eq!(
        w.containers[0].image.to_string(),
        format!("agl/body-control@{DIGEST}")
    );
    // A malformed digest names the field.
    let bad = text.replace(DIGEST, "sha256:xyz");
    let e = manifest::parse(&bad, Path::new("d.yaml"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("d.yaml: document 1: spec.containers[0].image: `sha256:xyz` is not an image digest"),
        "{e}"
    );
}

#[test]
fn a_workload_with_an_image_by_digest_runs() {
    let p = TestProject::new();
    let bcm = std::fs::read_to_string(p.path().join("fixtures/manifests/body-control.yaml"))
        .unwrap()
        .replace(
            "image: agl/body-control:1.0",
            &format!("image: agl/body-control@{DIGEST}"),
        );
    p.write("fixtures/manifests/body-control.yaml", &bcm);
    p.write("scenarios/good.feature", GOOD);
    let out = p.run();
    assert_passed(&out, "a healthy scenario still passes");
    assert_report_written(&out);
}

#[test]
fn annotation_errors_name_the_field_path_where_the_annotation_is() {
    let hvac = repo_file("fixtures/manifests/hvac.yaml");
    let error_of = |text: &str| {
        manifest::parse(text, Path::new("hvac.yaml"))
            .unwrap_err()
            .to_string()
    };
    // In a Deployment's pod template.
    let e = error_of(&hvac.replace("ready-frame: \"0x3A0\"", "ready-frame: \"zz\""));
    assert!(
        e.contains("spec.template.metadata.annotations.parity.agl.io/ready-frame: `zz` is not a hex CAN id"),
        "{e}"
    );
    let e = error_of(&hvac.replace("parity.agl.io/ready-frame", "parity.agl.io/redy-frame"));
    assert!(
        e.contains("spec.template.metadata.annotations.parity.agl.io/redy-frame: unknown annotation"),
        "{e}"
    );
    // In the Deployment's own metadata (which its pods inherit).
    let own = hvac
        .replace("  labels:\n    app.kubernetes.io/name: hvac\n    app.kubernetes.io/part-of", "  annotations:\n    parity.agl.io/can-interfaces: \"vehicle=bad name\"\n  labels:\n    app.kubernetes.io/name: hvac\n    app.kubernetes.io/part-of");
    assert_ne!(own, hvac);
    let e = error_of(&own);
    assert!(
        e.contains("document 1: metadata.annotations.parity.agl.io/can-interfaces:"),
        "{e}"
    );
    let own = hvac.replace(
        "  labels:\n    app.kubernetes.io/name: hvac\n    app.kubernetes.io/part-of",
        "  annotations:\n    parity.agl.io/typo: x\n  labels:\n    app.kubernetes.io/name: hvac\n    app.kubernetes.io/part-of",
    );
    let e = error_of(&own);
    assert!(
        e.contains("document 1: metadata.annotations.parity.agl.io/typo: unknown annotation"),
        "{e}"
    );
    // Missing: where a pod's annotations go.
    let e = error_of(&hvac.replace("        parity.agl.io/can-buses: vehicle\n", ""));
    assert!(
        e.contains("spec.template.metadata.annotations.parity.agl.io/can-buses: required"),
        "{e}"
    );
    // A Pod's are its own metadata's.
    let bcm = repo_file("fixtures/manifests/body-control.yaml");
    let e = error_of(&bcm.replace("ready-frame: \"0x320\"", "ready-frame: \"zz\""));
    assert!(
        e.contains("document 1: metadata.annotations.parity.agl.io/ready-frame: `zz`"),
        "{e}"
    );
}

#[test]
fn containers_know_where_the_manifest_defines_them() {
    let hvac = repo_file("fixtures/manifests/hvac.yaml");
    let w = &manifest::parse(&hvac, Path::new("m/hvac.yaml")).unwrap()[0];
    assert_eq!(
        w.containers[0].location,
        "m/hvac.yaml: document 1: spec.template.spec.containers[0]"
    );
}

// ---------------------------------------------------------------------------------------------------------
// DBC
// ---------------------------------------------------------------------------------------------------------

const DBC_HEAD: &str = "VERSION \"\"\n\nBU_: A\n\n";

#[test]
fn a_duplicate_message_id_names_both_messages_and_lines() {
    let text = format!(
        "{DBC_HEAD}BO_ 256 First: 8 A\n SG_ X : 0|8@1+ (1,0) [0|255] \"\" A\n\nBO_ 256 Second: 8 A\n SG_ Y : 0|8@1+ (1,0) [0|255] \"\" A\n"
    );
    let e = Database::parse(&text, "dup.dbc").unwrap_err().to_string();
    assert_eq!(
        e,
        "dup.dbc:8: message `Second` has id 0x100, which message `First` (line 5) already has (ids must be unique)"
    );
    // Extended and standard ids with the same number are different ids.
    let text = format!("{DBC_HEAD}BO_ 256 Std: 8 A\n\nBO_ 2147483904 Ext: 8 A\n");
    assert!(Database::parse(&text, "ok.dbc").is_ok());
}

#[test]
fn an_empty_dbc_file_is_named() {
    for text in ["", "\n  \n", "\u{feff}"] {
        let e = Database::parse(text, "fixtures/dbc/empty.dbc")
            .unwrap_err()
            .to_string();
        assert_eq!(e, "fixtures/dbc/empty.dbc: the DBC file is empty");
    }
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.dbc");
    std::fs::write(&empty, "").unwrap();
    let fx = Fixtures::from_paths(&[], &[dir.path().to_path_buf()]);
    let e = fx.message("LockRequest").unwrap_err().to_string();
    assert!(
        e.contains(&format!(
            "unreadable DBC: {}: the DBC file is empty",
            empty.display()
        )),
        "{e}"
    );
}

#[test]
fn a_signal_that_does_not_fit_and_a_dlc_over_64_have_their_line() {
    let text = format!(
        "{DBC_HEAD}BO_ 256 Ok: 8 A\n SG_ A : 0|8@1+ (1,0) [0|255] \"\" A\n\nBO_ 257 Short: 2 A\n SG_ Fits : 0|8@1+ (1,0) [0|255] \"\" A\n SG_ Outside : 12|8@1+ (1,0) [0|255] \"\" A\n"
    );
    let e = Database::parse(&text, "s.dbc").unwrap_err().to_string();
    assert!(
        e.starts_with("s.dbc:10: signal `Short.Outside` (start bit 12, 8 bits, Intel) does not fit in the 2-byte message"),
        "{e}"
    );
    let text =
        format!("{DBC_HEAD}BO_ 256 Ok: 8 A\n\nBO_ 257 Huge: 65 A\n SG_ A : 0|8@1+ (1,0) [0|255] \"\" A\n");
    let e = Database::parse(&text, "s.dbc").unwrap_err().to_string();
    assert!(e.starts_with("s.dbc:7: message `Huge` is 65 bytes long"), "{e}");
}

#[test]
fn a_duplicate_id_in_the_project_dbc_fails_signal_scenarios_and_raw_frames_still_work() {
    let p = TestProject::new();
    let dbc = std::fs::read_to_string(p.path().join("fixtures/dbc/agl-vehicle.dbc")).unwrap();
    p.write(
        "fixtures/dbc/agl-vehicle.dbc",
        &format!("{dbc}\nBO_ 288 LockRequestCopy: 1 KEYFOB\n SG_ Command : 0|2@1+ (1,0) [0|3] \"\" BCM\n"),
    );
    p.write(
        "scenarios/s.feature",
        "Feature: s\n  Scenario: speaks in signals\n    Given the \"body-control\" workload is running\n    When \"LockRequest\" is sent with Command=1\n\n  Scenario: speaks in raw frames\n    Given the \"body-control\" workload is running\n    When the frame 120#01 is sent\n    Then within 300 ms the frame 321#04 is seen\n",
    );
    let out = p.run();
    let msg = message_of(&out, "speaks in signals", Outcome::InfraError);
    assert!(
        msg.contains("agl-vehicle.dbc:")
            && msg.contains(
                "message `LockRequestCopy` has id 0x120, which message `LockRequest` (line 21) already has"
            ),
        "{msg}"
    );
    assert_passed(&out, "speaks in raw frames");
    assert_report_written(&out);
}

// ---------------------------------------------------------------------------------------------------------
// parity.yaml
// ---------------------------------------------------------------------------------------------------------

fn parity_file(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("parity.yaml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

fn repo_fixtures() -> Fixtures {
    Fixtures::load(&common::repo().join("fixtures"))
}

#[test]
fn an_unparsable_ignore_ids_entry_names_the_entry() {
    let (_dir, path) = parity_file("ignore_ids: [\"0x300\", \"0xZZ\"]\n");
    let e = ParityConfig::load(&path).unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "{}: ignore_ids[1]: `0xZZ` is not a hex CAN id (e.g. 0x3A0, 18FF0010)",
            path.display()
        )
    );
    let (_dir, path) = parity_file("ignore_ids: [\"800\"]\n");
    let e = ParityConfig::load(&path).unwrap_err().to_string();
    assert!(e.contains("ignore_ids[0]: `800`"), "{e}");
    // Valid ids are written as the recordings name them, so `0x20` matches the frame key `020`.
    let (_dir, path) = parity_file("ignore_ids: [\"0x20\", \"3a0\", \"0x18FF0010\"]\n");
    let c = ParityConfig::load(&path).unwrap();
    assert_eq!(c.ignore_ids, vec!["020", "3A0", "18FF0010"]);
}

#[test]
fn a_mask_signals_entry_naming_no_dbc_signal_is_an_error_naming_it() {
    let fx = repo_fixtures();
    let (_dir, path) =
        parity_file("mask_signals: [HvacStatus.AliveCounter, HvacStatus.AliveCountr, NoSuchMessage.X]\n");
    let c = ParityConfig::load(&path).unwrap();
    let e = c.check_against(&path, &fx).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!(
            "{}: mask_signals[1]: `HvacStatus.AliveCountr` names no DBC signal: message `HvacStatus` has no signal `AliveCountr` (signals: ",
            path.display()
        )),
        "{e}"
    );
    assert!(e.contains("AliveCounter"), "lists the signals: {e}");
    let (_dir, path) = parity_file("mask_signals: [NoSuchMessage.X]\n");
    let e = ParityConfig::load(&path)
        .unwrap()
        .check_against(&path, &fx)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(
            "mask_signals[0]: `NoSuchMessage.X` names no DBC signal: no DBC message `NoSuchMessage` in"
        ),
        "{e}"
    );
    // The repository's own settings are consistent.
    let repo = ParityConfig::path_in(&common::repo());
    let warnings = ParityConfig::load(&repo)
        .unwrap()
        .check_against(&repo, &fx)
        .unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
}

#[test]
fn a_mask_that_may_be_in_an_unreadable_dbc_is_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("broken.dbc"), "VERSION \"\"\nBO_ x\n").unwrap();
    let fx = Fixtures::from_paths(&[], &[dir.path().to_path_buf()]);
    let (_d, path) = parity_file("mask_signals: [HvacStatus.AliveCounter]\n");
    let warnings = ParityConfig::load(&path)
        .unwrap()
        .check_against(&path, &fx)
        .unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("mask_signals[0]: `HvacStatus.AliveCounter`")
            && warnings[0].contains("broken.dbc:2"),
        "{warnings:?}"
    );
}

#[test]
fn a_default_bus_no_manifest_joins_is_a_warning_naming_it() {
    let fx = repo_fixtures();
    let (_dir, path) = parity_file("default_bus: vehicel\n");
    let warnings = ParityConfig::load(&path)
        .unwrap()
        .check_against(&path, &fx)
        .unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].starts_with(&format!(
            "{}: default_bus: no manifest's workload joins bus `vehicel` (they join: ",
            path.display()
        )) && warnings[0].contains("vehicle"),
        "{warnings:?}"
    );
    // A project without manifests gets no such warning: nothing to compare with.
    let none = Fixtures::from_paths(&[], &[]);
    assert!(ParityConfig::load(&path)
        .unwrap()
        .check_against(&path, &none)
        .unwrap()
        .is_empty());
}
