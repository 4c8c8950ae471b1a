//! The server against real third-party clients: python-can's `socketcand` interface, and a plain-TCP
//! Python script using BCM mode. Both scripts are in `tests/python/`.
//!
//! Ignored by a plain `cargo test`; run with a Python that has python-can (4.6.x):
//! `PYTHON_CAN_PY=/path/to/venv/bin/python cargo test -p vcan-socketcand --test python_can -- --ignored`.
//! Without `PYTHON_CAN_PY` the tests fail (they never pass silently).

mod common;

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use vcan::{CanId, CanSocket, Frame};

/// python-can's import and connect can be slow on a loaded machine.
const PYTHON_TIMEOUT: Duration = Duration::from_secs(30);

fn python() -> String {
    match std::env::var("PYTHON_CAN_PY") {
        Ok(path) if !path.is_empty() => path,
        _ => panic!(
            "PYTHON_CAN_PY is not set: point it at a Python interpreter that has python-can 4.6 \
             (e.g. PYTHON_CAN_PY=target/python-can-venv/bin/python cargo test -p vcan-socketcand \
             --test python_can -- --ignored)"
        ),
    }
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(name)
}

/// A running Python script; killed (with its output shown) if the test fails.
struct Script {
    name: String,
    child: Option<Child>,
}

impl Script {
    fn spawn(name: &str, args: &[String]) -> Script {
        let child = Command::new(python())
            .arg(script(name))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run PYTHON_CAN_PY for {name}: {e}"));
        Script {
            name: name.to_string(),
            child: Some(child),
        }
    }

    /// Closes the script's stdin.
    fn close_stdin(&mut self) {
        if let Some(child) = &mut self.child {
            drop(child.stdin.take());
        }
    }

    /// Waits for the script to exit and returns its stdout; panics with its output unless it succeeded.
    fn finish(mut self) -> String {
        self.close_stdin();
        let Some(child) = self.child.take() else {
            panic!("{} already finished", self.name)
        };
        let output = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(
            output.status.success(),
            "{} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
            self.name,
            output.status
        );
        stdout
    }

    /// Kills the script and panics with `problem` and what the script printed.
    fn fail(mut self, problem: &str) -> ! {
        let mut out = String::new();
        let mut err = String::new();
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            if let Some(mut s) = child.stdout.take() {
                let _ = s.read_to_string(&mut out);
            }
            if let Some(mut s) = child.stderr.take() {
                let _ = s.read_to_string(&mut err);
            }
        }
        panic!("{problem}\n{}:\n--- stdout\n{out}\n--- stderr\n{err}", self.name)
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
#[ignore = "needs PYTHON_CAN_PY (a Python with python-can)"]
fn python_can_sends_receives_and_sees_error_frames() {
    let python = python();
    let bus = hub("python");
    let server = server();
    server.set_bus("vcan0", bus.endpoint.clone());
    let mut node = node(&bus, "rust-ecu");
    let script = Script::spawn(
        "python_can_roundtrip.py",
        &[
            "127.0.0.1".to_string(),
            server.local_addr().port().to_string(),
            "vcan0".to_string(),
        ],
    );
    let Some(first) = recv(&mut node, PYTHON_TIMEOUT) else {
        script.fail(&format!(
            "no frame from python-can ({python}) within {PYTHON_TIMEOUT:?}"
        ));
    };
    let Some(second) = recv(&mut node, TIMEOUT) else {
        script.fail("no second frame from python-can");
    };
    assert_eq!(
        first.frame,
        Frame::data(CanId::standard(0x123).unwrap(), &[0x11, 0x22, 0x33]).unwrap()
    );
    assert_eq!(
        second.frame,
        Frame::data(CanId::extended(0x0123_4567).unwrap(), &[]).unwrap()
    );
    node.send(&Frame::data(CanId::extended(0x1ABC_DEF0).unwrap(), &[0xCA, 0xFE]).unwrap())
        .unwrap();
    // From the same node, so the hub orders it after the answer.
    node.send(&Frame::error(0x004, [0, 0x10, 0, 0, 0, 0, 0, 0]).unwrap())
        .unwrap();
    let stdout = script.finish();
    println!("{stdout}");
    assert!(stdout.contains("python-can roundtrip ok"), "{stdout}");
    let report = vcan::bridge::Bridge::report(&server);
    assert_eq!(report.nodes[0].to_bus, 2);
    assert_eq!(report.nodes[0].to_peer, 2);
    assert_eq!(report.nodes[0].rejected, 0, "{:?}", report.nodes[0].errors);
}

#[test]
#[ignore = "needs PYTHON_CAN_PY (a Python with python-can)"]
fn a_raw_tcp_bcm_heartbeat_runs_at_ten_hertz() {
    let bus = hub("heartbeat");
    let server = server();
    server.set_bus("body", bus.endpoint.clone());
    let mut node = node(&bus, "rust-monitor");
    let mut script = Script::spawn(
        "raw_bcm_heartbeat.py",
        &[
            "127.0.0.1".to_string(),
            server.local_addr().port().to_string(),
            "body".to_string(),
        ],
    );
    let heartbeat = Frame::data(CanId::standard(0x123).unwrap(), &[0xAA, 0xBB]).unwrap();
    let Some(first) = recv(&mut node, PYTHON_TIMEOUT) else {
        script.fail("no heartbeat frame");
    };
    assert_eq!(first.frame, heartbeat);
    // Frames in the second after the first, by the hub's timestamps.
    let window_end = first.timestamp_ns + 1_000_000_000;
    let mut in_window = 1;
    loop {
        let Some(r) = recv(&mut node, TIMEOUT) else {
            script.fail("the heartbeat stopped");
        };
        assert_eq!(r.frame, heartbeat);
        if r.timestamp_ns >= window_end {
            break;
        }
        in_window += 1;
    }
    assert!(
        (9..=11).contains(&in_window),
        "{in_window} heartbeat frames in one second (expected ~10)"
    );
    script.close_stdin();
    let stdout = script.finish();
    assert!(stdout.contains("heartbeat running"), "{stdout}");
    assert!(stdout.contains("heartbeat done"), "{stdout}");
}
