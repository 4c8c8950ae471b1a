//! The vm environment on the real /dev/kvm: the unmodified workload binary in a microVM of agl-vmm, using the
//! SocketCAN API inside the guest, restored from a snapshot for every scenario, with exec readiness probes
//! running in VMs of their own. (The VMM's own KVM tests live in harness/vmm/tests.)
//!
//! Needs /dev/kvm; without it these tests print a loud SKIP line, and fail when `AGL_PARITY_REQUIRE` names
//! `vm` (CI requires it).

mod common;

use agl_parity::record::Outcome;
use common::{record, TestProject};

fn kvm() -> bool {
    match agl_parity::env::vm::probe() {
        Ok(_) => true,
        Err(why) => {
            let required = std::env::var("AGL_PARITY_REQUIRE").unwrap_or_default();
            if required.split(',').any(|r| r == "vm" || r == "all") {
                panic!("the vm environment is required but unavailable: {why}");
            }
            eprintln!("!!!!!!!! SKIPPED: no usable /dev/kvm: {why}");
            false
        }
    }
}

#[test]
fn workloads_run_in_the_vm_on_socketcan_restored_from_one_snapshot() {
    if !kvm() {
        return;
    }
    let p = TestProject::new();
    p.write(
        "scenarios/vm.feature",
        "Feature: vm\n  Scenario: lock in a VM\n    Given the \"body-control\" workload is running\n    When \"LockRequest\" is sent with Command=1\n    Then within 500 ms \"DoorLockState\" has Locked=1\n\n  Scenario: lock again in a VM\n    Given the \"body-control\" workload is running\n    When the frame 120#01 is sent\n    Then within 500 ms the frame 321#04 is seen\n\n  Scenario: a pod of two with exec probes\n    Given the \"comfort\" workload is running\n    Then \"DoorLockState\" is sent every 200 ms ± 25%\n",
    );
    let mut options = p.options();
    options.environments = vec!["vm".into()];
    let out = p.run_with(options);
    for name in [
        "lock in a VM",
        "lock again in a VM",
        "a pod of two with exec probes",
    ] {
        let r = record(&out, name);
        assert_eq!(r.outcome, Outcome::Passed, "{name}: {:?}", r.message);
        assert_eq!(
            r.transport,
            "SocketCAN API (AF_CAN) served by the VMM, bridged to the userspace hub"
        );
    }
    let logs: Vec<String> = ["lock in a VM", "lock again in a VM"]
        .iter()
        .map(|n| {
            let r = record(&out, n);
            std::fs::read_to_string(
                out.report_dir
                    .join(r.workloads[0].log_file.as_ref().expect("log")),
            )
            .expect("log")
        })
        .collect();
    for log in &logs {
        assert!(
            log.contains("\"bus\":\"socketcan:can0\""),
            "the guest used the SocketCAN API: {log}"
        );
        assert!(
            log.contains("# harness: VM: restore from snapshot"),
            "started from the snapshot: {log}"
        );
    }
    let snapshot = |log: &str| {
        log.lines()
            .find_map(|l| l.split("restore from snapshot ").nth(1).map(str::to_string))
    };
    assert_eq!(
        snapshot(&logs[0]),
        snapshot(&logs[1]),
        "both scenarios restored the same snapshot"
    );
}

#[test]
fn doctor_names_the_kind_of_kvm() {
    if !kvm() {
        return;
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_agl-parity"))
        .arg("doctor")
        .output()
        .expect("doctor");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("env vm"))
        .unwrap_or_default()
        .to_string();
    assert!(
        line.contains("ok") && (line.contains("PVM") || line.contains("hardware")),
        "{text}"
    );
}
