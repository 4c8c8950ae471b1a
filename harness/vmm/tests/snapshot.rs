//! Snapshot at bus join, then restore — twice from the same snapshot onto two different buses. Each
//! restored guest joins its own bus, sends the start-up frames and heartbeats, and stops on SIGTERM. Guest
//! memory is mapped copy-on-write from the snapshot, not copied (checked through the restored process's
//! mappings and its resident memory).

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn vm_command() -> Command {
    let mut cmd = Command::new(vmm());
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null());
    cmd
}

fn stop(mut child: Child) -> (Option<i32>, String, String) {
    let (out, err) = collect(&mut child);
    sigterm(&child);
    let status = wait_timeout(&mut child, Duration::from_secs(10)).unwrap_or_else(|| {
        let _ = child.kill();
        panic!("did not stop within 10 s of SIGTERM");
    });
    (
        status.code(),
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    )
}

/// Start-up frames of hvac-controller in order, then two heartbeats.
fn expect_hvac_startup(bus: &mut Bus, what: &str) {
    bus.wait_id(0x3A0, Duration::from_secs(20))
        .unwrap_or_else(|| panic!("{what}: first HvacStatus"));
    bus.wait_id(0x300, Duration::from_secs(2))
        .unwrap_or_else(|| panic!("{what}: HvacActuators"));
    bus.wait_id(0x7A0, Duration::from_secs(2))
        .unwrap_or_else(|| panic!("{what}: DiagInfo"));
    for _ in 0..2 {
        bus.wait_id(0x3A0, Duration::from_secs(2))
            .unwrap_or_else(|| panic!("{what}: heartbeat"));
    }
}

fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(u64::MAX)
}

#[test]
fn snapshot_at_bind_then_restore_twice_on_two_buses() {
    if !kvm_or_skip("snapshot_at_bind_then_restore_twice_on_two_buses") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let snap = dir.path().join("snap");
    // A large guest memory makes a copying restore obvious in the resident set size.
    let mem = "512M";

    // 1. Cold start with --snapshot-at-bind: the snapshot is written before the bind, the guest goes on.
    let mut bus_a = Bus::start(dir.path(), "a");
    let original = vm_command()
        .arg("run")
        .arg("--elf")
        .arg(guest("hvac-controller"))
        .args(["--mem", mem, "--env", "CAN_BUS=socketcan:can0", "--can"])
        .arg(format!("can0={}", bus_a.uri))
        .arg("--snapshot-at-bind")
        .arg(&snap)
        .spawn()
        .expect("spawn");
    expect_hvac_startup(&mut bus_a, "original");
    assert!(snap.join("memory.bin").exists() && snap.join("state.json").exists());
    let (code, stdout, stderr) = stop(original);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");

    // 2. Two restores from the same snapshot, on two other buses, running at the same time.
    let mut bus_b = Bus::start(dir.path(), "b");
    let mut bus_c = Bus::start(dir.path(), "c");
    let spawn_restore = |bus: &Bus| {
        vm_command()
            .arg("run")
            .arg("--restore")
            .arg(&snap)
            .arg("--can")
            .arg(format!("can0={}", bus.uri))
            .spawn()
            .expect("spawn restore")
    };
    let t0 = Instant::now();
    let b = spawn_restore(&bus_b);
    let c = spawn_restore(&bus_c);
    expect_hvac_startup(&mut bus_b, "restore b");
    expect_hvac_startup(&mut bus_c, "restore c");
    let ready_ms = t0.elapsed().as_millis();

    // Copy-on-write: the restored VMM maps memory.bin privately, and has not read all of it.
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", b.id())).unwrap();
    let mapping = maps
        .lines()
        .find(|l| l.ends_with("memory.bin"))
        .unwrap_or_else(|| panic!("memory.bin is not mapped:\n{maps}"));
    let perms = mapping.split_whitespace().nth(1).unwrap_or("");
    assert_eq!(perms, "rw-p", "private (copy-on-write) mapping: {mapping}");
    let offset = mapping.split_whitespace().nth(2).unwrap_or("");
    assert_eq!(
        u64::from_str_radix(offset, 16).ok(),
        Some(4096),
        "mapped after the header: {mapping}"
    );
    let rss = vm_rss_kib(b.id());
    assert!(
        rss < 128 * 1024,
        "restored VMM resident set is {rss} KiB for a 512 MiB guest: memory was copied"
    );

    // The two restored guests are independent: frames on one bus never reach the other.
    bus_b.send("200#2C1300");
    bus_b
        .wait_for(Duration::from_secs(3), |f| {
            f.id().map(|i| i.raw()) == Some(0x3A0) && f.payload().get(1) == Some(&0x2C)
        })
        .expect("restored guest b reacts to its own bus");
    let on_c = bus_c.wait_for(Duration::from_millis(500), |f| {
        f.id().map(|i| i.raw()) == Some(0x3A0) && f.payload().get(1) == Some(&0x2C)
    });
    assert!(on_c.is_none(), "guest c must not see bus b's request");

    for (name, child) in [("b", b), ("c", c)] {
        let (code, stdout, stderr) = stop(child);
        assert_eq!(code, Some(0), "restore {name}: {stdout}\n{stderr}");
        assert!(stdout.contains("\"event\":\"ready\""), "restore {name}: {stdout}");
        assert!(
            stdout.contains("\"event\":\"stopped\""),
            "restore {name}: {stdout}"
        );
    }
    eprintln!("two restores to ready on both buses: {ready_ms} ms");
}

#[test]
fn restore_validates_its_inputs() {
    if !kvm_or_skip("restore_validates_its_inputs") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let snap = dir.path().join("snap");
    let mut bus = Bus::start(dir.path(), "v");
    let child = vm_command()
        .arg("run")
        .arg("--elf")
        .arg(guest("body-control"))
        .args(["--env", "CAN_BUS=socketcan:can0", "--can"])
        .arg(format!("can0={}", bus.uri))
        .arg("--snapshot-at-bind")
        .arg(&snap)
        .spawn()
        .expect("spawn");
    bus.wait_id(0x320, Duration::from_secs(20))
        .expect("DoorLockState");
    stop(child);

    // Without the CAN interface the snapshot's guest needs.
    let out = run_with_timeout(
        Command::new(vmm()).arg("run").arg("--restore").arg(&snap),
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(70), "{out:?}");
    assert!(out.stderr.contains("--can can0=ENDPOINT"), "{}", out.stderr);

    // A damaged memory file.
    let mem = snap.join("memory.bin");
    let f = std::fs::OpenOptions::new().write(true).open(&mem).unwrap();
    f.set_len(4096 + 4096).unwrap();
    let out = run_with_timeout(
        Command::new(vmm())
            .arg("run")
            .arg("--restore")
            .arg(&snap)
            .arg("--can")
            .arg(format!("can0={}", bus.uri)),
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(70), "{out:?}");
    assert!(
        out.stderr.contains("memory.bin") && out.stderr.contains("expected"),
        "{}",
        out.stderr
    );
}
