//! The real sample workloads run in the VM with `CAN_BUS=socketcan:can0` against a vcan hub embedded in
//! the test: they join through the emulated SocketCAN API, send their heartbeats, react to frames, and
//! stop cleanly on SIGTERM.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

fn spawn_workload(name: &str, bus: &Bus, extra_env: &[&str]) -> std::process::Child {
    let mut cmd = Command::new(vmm());
    cmd.arg("run")
        .arg("--elf")
        .arg(guest(name))
        .args(["--env", "CAN_BUS=socketcan:can0", "--can"])
        .arg(format!("can0={}", bus.uri));
    for e in extra_env {
        cmd.args(["--env", e]);
    }
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null());
    cmd.spawn().expect("spawn agl-vmm")
}

/// Stops the workload with SIGTERM and returns (exit code, stdout, stderr).
fn stop(mut child: std::process::Child) -> (Option<i32>, String, String) {
    let (out, err) = collect(&mut child);
    sigterm(&child);
    let status = wait_timeout(&mut child, Duration::from_secs(10)).unwrap_or_else(|| {
        let _ = child.kill();
        panic!("the workload did not stop within 10 s of SIGTERM");
    });
    (
        status.code(),
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    )
}

#[test]
fn hvac_controller_heartbeats_and_stops() {
    if !kvm_or_skip("hvac_controller_heartbeats_and_stops") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut bus = Bus::start(dir.path(), "vehicle");
    let child = spawn_workload("hvac-controller", &bus, &[]);
    // Start-up: HvacStatus, HvacActuators, DiagInfo (SwVersion 0x0102).
    let first = bus
        .wait_id(0x3A0, Duration::from_secs(20))
        .expect("first HvacStatus 0x3A0");
    bus.wait_id(0x300, Duration::from_secs(2))
        .expect("HvacActuators 0x300");
    let diag = bus
        .wait_id(0x7A0, Duration::from_secs(2))
        .expect("DiagInfo 0x7A0");
    assert_eq!(&diag.frame.payload()[..2], &[0x01, 0x02]);
    // Heartbeats every 100 ms.
    let mut stamps = vec![first.timestamp_ns];
    for _ in 0..5 {
        stamps.push(
            bus.wait_id(0x3A0, Duration::from_secs(2))
                .expect("HvacStatus heartbeat")
                .timestamp_ns,
        );
    }
    let span_ms = (stamps[5] - stamps[0]) as f64 / 1e6;
    assert!((400.0..700.0).contains(&span_ms), "5 periods took {span_ms} ms");
    // A climate request changes the settings (ClimateRequest 0x200: 22.0 degC, fan 3, AC on).
    bus.send("200#2C1300");
    let status = bus
        .wait_for(Duration::from_secs(3), |f| {
            f.id().map(|i| i.raw()) == Some(0x3A0) && f.payload().get(1) == Some(&0x2C)
        })
        .expect("HvacStatus with the requested target temperature");
    assert_eq!(status.frame.payload()[2] & 0x0F, 3, "fan level");
    let (code, stdout, stderr) = stop(child);
    assert_eq!(code, Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("\"event\":\"ready\""), "{stdout}");
    assert!(stdout.contains("\"bus\":\"socketcan:can0\""), "{stdout}");
    assert!(stdout.contains("\"event\":\"settings_changed\""), "{stdout}");
    assert!(
        stdout
            .lines()
            .last()
            .unwrap_or("")
            .contains("\"event\":\"stopped\""),
        "{stdout}"
    );
    assert!(stdout.contains("\"signal\":\"SIGTERM\""), "{stdout}");
}

#[test]
fn body_control_locks_on_request_and_stops() {
    if !kvm_or_skip("body_control_locks_on_request_and_stops") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut bus = Bus::start(dir.path(), "body");
    let child = spawn_workload("body-control", &bus, &["LOG_LEVEL=debug"]);
    let first = bus
        .wait_id(0x320, Duration::from_secs(20))
        .expect("first DoorLockState 0x320");
    assert_eq!(first.frame.payload()[0] & 1, 0, "starts unlocked");
    let second = bus
        .wait_id(0x320, Duration::from_secs(2))
        .expect("DoorLockState heartbeat");
    let period_ms = (second.timestamp_ns - first.timestamp_ns) as f64 / 1e6;
    assert!((150.0..300.0).contains(&period_ms), "period {period_ms} ms");
    // Lock request -> DoorLockState Locked=1 first, then LockResponse Result=0 Command=1 (0x04).
    bus.send("120#01");
    let state = bus
        .wait_for(Duration::from_secs(3), |f| {
            f.id().map(|i| i.raw()) == Some(0x320) && f.payload()[0] & 1 == 1
        })
        .expect("DoorLockState Locked=1");
    let response = bus
        .wait_id(0x321, Duration::from_secs(3))
        .expect("LockResponse 0x321");
    assert_eq!(response.frame.payload(), &[0x04]);
    assert!(
        response.seq > state.seq,
        "DoorLockState is sent before the LockResponse"
    );
    let (code, stdout, stderr) = stop(child);
    assert_eq!(code, Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("\"event\":\"locked\""), "{stdout}");
    assert!(stdout.contains("\"event\":\"lock_response\""), "{stdout}");
    assert!(stdout.contains("\"event\":\"stopped\""), "{stdout}");
}

#[test]
fn sigint_stops_a_workload_too() {
    if !kvm_or_skip("sigint_stops_a_workload_too") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut bus = Bus::start(dir.path(), "int");
    let mut child = spawn_workload("body-control", &bus, &[]);
    bus.wait_id(0x320, Duration::from_secs(20))
        .expect("DoorLockState");
    let (out, _err) = collect(&mut child);
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = wait_timeout(&mut child, Duration::from_secs(10)).expect("stopped on SIGINT");
    assert_eq!(status.code(), Some(0));
    let stdout = out.join().unwrap_or_default();
    assert!(stdout.contains("\"signal\":\"SIGINT\""), "{stdout}");
}

#[test]
fn unreachable_bus_is_a_startup_error_of_the_workload() {
    if !kvm_or_skip("unreachable_bus_is_a_startup_error_of_the_workload") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = run_with_timeout(
        Command::new(vmm())
            .arg("run")
            .arg("--elf")
            .arg(guest("hvac-controller"))
            .args(["--env", "CAN_BUS=socketcan:can0", "--can"])
            .arg(format!("can0=unix:{}", dir.path().join("nobody.sock").display())),
        Duration::from_secs(30),
    );
    // The workload's own start-up failure (exit 2, `fatal`), not a VMM failure.
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stdout.contains("\"event\":\"fatal\""), "{}", out.stdout);
    // And an interface that was never configured.
    let out = run_with_timeout(
        Command::new(vmm())
            .arg("run")
            .arg("--elf")
            .arg(guest("hvac-controller"))
            .args(["--env", "CAN_BUS=socketcan:can9"]),
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stdout.contains("can9"), "{}", out.stdout);
}
