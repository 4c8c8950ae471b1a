//! The seccomp SocketCAN emulation with real, unmodified programs: Debian's can-utils (`cansend`,
//! `candump`, dynamically linked) on a userspace hub, on a machine without kernel CAN.
//!
//! can-utils must be installed (`apt-get install can-utils`; `.ci/run` does): the tests fail, loudly, when
//! it is missing rather than pass without running.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use vcan::client::HubClient;
use vcan::emu::{self, Emulation};
use vcan::hub::{Hub, HubConfig};
use vcan::{CanSocket, Frame, OpenOptions};

const WAIT: Option<Duration> = Some(Duration::from_secs(10));

fn tool(name: &str) -> PathBuf {
    let path = Path::new("/usr/bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: install can-utils (apt-get install can-utils) to run the emulation tests",
        path.display()
    );
    path
}

struct Bus {
    hub: Hub,
    _dir: tempfile::TempDir,
}

fn bus() -> Bus {
    emu::available().expect("seccomp user notification");
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(HubConfig {
        name: "test".into(),
        unix_path: Some(dir.path().join("bus.sock")),
        ..HubConfig::default()
    })
    .unwrap();
    Bus { hub, _dir: dir }
}

/// Spawns `program args` with `can0` (and `vcan1` when given) emulated.
fn spawn(bus: &Bus, program: &Path, args: &[&str]) -> (std::process::Child, Emulation) {
    let mut command = Command::new(program);
    command.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    let ifaces = emu::interfaces(vec![("can0".into(), bus.hub.unix_endpoint().unwrap())]);
    emu::spawn(&mut command, ifaces, "tool".into()).unwrap()
}

/// Waits (bounded) until a node named `name` has joined the hub.
fn wait_for_node(bus: &Bus, name: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !bus.hub.stats().nodes.iter().any(|n| n.name == name) {
        assert!(
            std::time::Instant::now() < deadline,
            "{name} never joined the bus"
        );
        std::thread::yield_now();
    }
}

fn observer(bus: &Bus) -> HubClient {
    HubClient::connect(
        &bus.hub.unix_endpoint().unwrap(),
        &OpenOptions {
            node_name: "observer".into(),
            ..OpenOptions::default()
        },
    )
    .unwrap()
}

#[test]
fn cansend_puts_its_frame_on_the_hub() {
    let bus = bus();
    let mut obs = observer(&bus);
    let (child, emulation) = spawn(&bus, &tool("cansend"), &["can0", "123#DEADBEEF"]);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "cansend: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rx = obs.recv(WAIT).unwrap().expect("the frame cansend sent");
    assert_eq!(rx.frame, "123#DEADBEEF".parse::<Frame>().unwrap());
    let stats = emulation.wait();
    assert_eq!(stats.sockets, 1);
}

#[test]
fn cansend_to_an_unknown_interface_fails_as_on_linux() {
    let bus = bus();
    let (child, _emulation) = spawn(&bus, &tool("cansend"), &["can7", "123#00"]);
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("No such device"), "{err}");
}

#[test]
fn candump_prints_frames_from_the_hub_with_filters_and_timestamps() {
    let bus = bus();
    let mut obs = observer(&bus);
    // -L: log format with timestamps (recvmsg with SO_TIMESTAMP and the source address); a filter for
    // 0x120-0x12F; -n 2: exit after two frames.
    let (child, _emulation) = spawn(&bus, &tool("candump"), &["-L", "-n", "2", "can0,120:7F0"]);
    // candump joins the bus when it binds: wait for its node, then send once.
    wait_for_node(&bus, "tool");
    for f in ["7FF#01", "121#AA", "300#02", "12F#BBCC"] {
        obs.send(&f.parse().unwrap()).unwrap();
    }
    let waiter = std::thread::spawn(move || child.wait_with_output().unwrap());
    let out = waiter.join().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "candump: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].ends_with(" can0 121#AA"), "{text}");
    assert!(lines[1].ends_with(" can0 12F#BBCC"), "{text}");
    // `(seconds.micros)` of the hub's receive time, not 0.
    assert!(
        lines[0].starts_with('(') && !lines[0].starts_with("(0000000000."),
        "{text}"
    );
}

#[test]
fn a_program_that_cannot_be_executed_is_an_error_not_a_hang() {
    // Between installing the filter and exec, the child reports the failed exec with a notified `write`:
    // it must be served although the spawn has not returned yet.
    let bus = bus();
    let mut command = Command::new("/nonexistent/program");
    let ifaces = emu::interfaces(vec![("can0".into(), bus.hub.unix_endpoint().unwrap())]);
    let Err(err) = emu::spawn(&mut command, ifaces, "missing".into()) else {
        panic!("a program that does not exist was started");
    };
    let err = err.to_string();
    assert!(err.contains("No such file"), "{err}");
}
