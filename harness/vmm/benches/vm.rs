//! `cargo bench -p agl-vmm --bench vm`: the VM environment against native processes, measured in one run.
//!
//! * start to workload-ready: spawn `hvac-controller` and wait for its first HvacStatus (0x3A0) on the
//!   bus — natively (`CAN_BUS=unix:`), as a VM cold start (ELF load, `CAN_BUS=socketcan:can0`), and as a
//!   restore from a snapshot taken at bus join;
//! * syscall round trip: `hello-static getpid N` in the VM and natively;
//! * CAN frames/s into, out of and through (echo) the guest with zero loss (`hello-static can-sink`,
//!   `can-source`, `can-echo` over SocketCAN in the VM; the same program on the hub endpoint natively).
//!
//! Ready times are the hub's timestamp of the first heartbeat minus the wall-clock time just before
//! `spawn`. Bounded well under two minutes. Prints the host type (PVM or hardware KVM) and a table.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;

const RUNS: usize = 10;

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn quiet(mut cmd: Command) -> Command {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .stdin(Stdio::null());
    cmd
}

fn stop(mut child: Child) {
    sigterm(&child);
    if wait_timeout(&mut child, Duration::from_secs(10)).is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Spawns `cmd` and returns ms until the first 0x3A0 on `bus`.
fn time_to_heartbeat(bus: &mut Bus, mut cmd: Command) -> f64 {
    // Drain anything left from a previous run.
    while bus.wait_for(Duration::from_millis(1), |_| true).is_some() {}
    let t0 = now_ns();
    let child = cmd.spawn().expect("spawn");
    let rx = bus
        .wait_id(0x3A0, Duration::from_secs(30))
        .expect("first heartbeat");
    stop(child);
    (rx.timestamp_ns.saturating_sub(t0)) as f64 / 1e6
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn vm_run(elf: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(vmm());
    c.arg("run").arg("--elf").arg(elf).args(args);
    c
}

fn getpid_ns(mut cmd: Command) -> f64 {
    let out = run_with_timeout(&mut cmd, Duration::from_secs(60));
    let line = out
        .stdout
        .lines()
        .find(|l| l.starts_with("getpid:"))
        .unwrap_or_else(|| panic!("{out:?}"));
    line.split(", ")
        .nth(1)
        .and_then(|s| s.trim_end_matches(" ns/call").parse().ok())
        .unwrap_or(f64::NAN)
}

/// Result of one CAN throughput run: frames/s and whether every frame arrived in order.
struct Flow {
    rate: f64,
    lossless: bool,
}

fn can_flow(bus: &mut Bus, mode: &str, n: u32, mut cmd: Command) -> Flow {
    while bus.wait_for(Duration::from_millis(1), |_| true).is_some() {}
    let mut child = cmd.spawn().expect("spawn");
    bus.wait_id(0x7FE, Duration::from_secs(30))
        .expect("guest ready frame 0x7FE");
    let t0 = Instant::now();
    let lossless = match mode {
        "can-sink" => {
            for i in 0..n {
                bus.send(&format!("123#{:08X}", i.swap_bytes()));
            }
            let done = bus
                .wait_id(0x7FF, Duration::from_secs(60))
                .expect("sink summary 0x7FF");
            done.frame.payload() == n.to_le_bytes()
        }
        "can-source" => {
            let mut next = 0u32;
            let mut in_order = true;
            while next < n {
                let rx = bus.wait_id(0x100, Duration::from_secs(10)).expect("source frame");
                let seq = u32::from_le_bytes(rx.frame.payload()[..4].try_into().unwrap_or([0; 4]));
                in_order &= seq == next;
                next += 1;
            }
            in_order
        }
        _ => {
            // Pipelined: keep up to 32 frames in flight.
            let (mut sent, mut got, mut ok) = (0u32, 0u32, true);
            while got < n {
                while sent < n && sent - got < 32 {
                    bus.send(&format!("200#{:08X}", sent.swap_bytes()));
                    sent += 1;
                }
                let rx = bus.wait_id(0x201, Duration::from_secs(10)).expect("echo");
                let seq = u32::from_le_bytes(rx.frame.payload()[..4].try_into().unwrap_or([0; 4]));
                ok &= seq == got;
                got += 1;
            }
            ok
        }
    };
    let secs = t0.elapsed().as_secs_f64();
    let _ = wait_timeout(&mut child, Duration::from_secs(10)).or_else(|| {
        let _ = child.kill();
        child.wait().ok()
    });
    let dropped = bus.hub.stats().dropped;
    Flow {
        rate: f64::from(n) / secs,
        lossless: lossless && dropped == 0,
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if !kvm_or_skip("bench vm") {
        return;
    }
    let started = Instant::now();
    let host = agl_vmm::vcpu::probe().map(|h| h.describe()).unwrap_or("unusable");
    let hvac = guest("hvac-controller");
    let hello = guest("hello-static");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut bus = Bus::start(dir.path(), "bench");
    let can = format!("can0={}", bus.uri);

    // Start to ready.
    let native_start: Vec<f64> = (0..RUNS)
        .map(|_| {
            let mut c = quiet(Command::new(&hvac));
            c.env_clear().env("CAN_BUS", &bus.uri);
            time_to_heartbeat(&mut bus, c)
        })
        .collect();
    let cold: Vec<f64> = (0..RUNS)
        .map(|_| {
            let c = quiet(vm_run(&hvac, &["--env", "CAN_BUS=socketcan:can0", "--can", &can]));
            time_to_heartbeat(&mut bus, c)
        })
        .collect();
    let snap = dir.path().join("snap");
    let mut c = quiet(vm_run(&hvac, &["--env", "CAN_BUS=socketcan:can0", "--can", &can]));
    c.arg("--snapshot-at-bind").arg(&snap);
    time_to_heartbeat(&mut bus, c);
    let restore: Vec<f64> = (0..RUNS)
        .map(|_| {
            let mut c = quiet(Command::new(vmm()));
            c.arg("run").arg("--restore").arg(&snap).args(["--can", &can]);
            time_to_heartbeat(&mut bus, c)
        })
        .collect();

    // Syscall round trip.
    let n_calls = "20000";
    let vm_getpid = getpid_ns(vm_run(&hello, &["--", "getpid", n_calls]));
    let mut native_cmd = Command::new(&hello);
    native_cmd.args(["getpid", n_calls]);
    let native_getpid = getpid_ns(native_cmd);

    // CAN throughput.
    let n = 3000u32;
    let mut flows = Vec::new();
    for mode in ["can-sink", "can-source", "can-echo"] {
        let ns = n.to_string();
        let vm = can_flow(
            &mut bus,
            mode,
            n,
            quiet(vm_run(&hello, &["--can", &can, "--", mode, "can0", &ns])),
        );
        let mut native = quiet(Command::new(&hello));
        native.args([mode, &bus.uri, &ns]);
        let nat = can_flow(&mut bus, mode, n, native);
        flows.push((mode, vm, nat));
    }

    let best_restore = restore.iter().copied().fold(f64::INFINITY, f64::min);
    let (ns, cs, rs) = (median(native_start), median(cold), median(restore));
    println!();
    println!(
        "agl-vmm benchmark — host: {host}; {RUNS} runs each, medians; hvac-controller on a userspace hub"
    );
    println!(
        "{:<44} {:>14} {:>14} {:>10}",
        "measure", "vm", "native", "vm/native"
    );
    println!("{}", "-".repeat(86));
    let row = |name: &str, vm: f64, native: f64, unit: &str| {
        println!(
            "{:<44} {:>11.2} {unit:<2} {:>11.2} {unit:<2} {:>9.1}x",
            name,
            vm,
            native,
            vm / native
        );
    };
    row("start to first heartbeat (cold VM)", cs, ns, "ms");
    row("start to first heartbeat (restore)", rs, ns, "ms");
    row(
        "syscall round trip (getpid)",
        vm_getpid / 1000.0,
        native_getpid / 1000.0,
        "us",
    );
    for (mode, vm, nat) in &flows {
        let name = match *mode {
            "can-sink" => "CAN frames/s into the guest",
            "can-source" => "CAN frames/s out of the guest",
            _ => "CAN frames/s echoed (in + out)",
        };
        println!(
            "{:<44} {:>11.0} /s {:>11.0} /s {:>9.2}x   zero loss: vm {} native {}",
            name,
            vm.rate,
            nat.rate,
            vm.rate / nat.rate,
            if vm.lossless { "yes" } else { "NO" },
            if nat.lossless { "yes" } else { "NO" }
        );
    }
    println!("{}", "-".repeat(86));
    println!(
        "restore to ready: median {rs:.2} ms, best {best_restore:.2} ms (target <= 5 ms: {})",
        if rs <= 5.0 { "met" } else { "NOT met" }
    );
    println!("total bench time: {:.1} s", started.elapsed().as_secs_f64());
    let all_lossless = flows.iter().all(|(_, v, n)| v.lossless && n.lossless);
    if !all_lossless {
        eprintln!("frames were lost in a CAN throughput run");
        std::process::exit(1);
    }
}
