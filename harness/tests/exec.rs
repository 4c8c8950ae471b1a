//! `agl-parity exec --can IF=ENDPOINT -- PROGRAM` as a user runs it, on a machine without kernel CAN: Debian's
//! `cansend` and `candump` (can-utils) and a python-can script (`interface='socketcan'`) on a userspace hub,
//! and the exit code and message of bad `--can` values.
//!
//! Needs can-utils (`/usr/bin/cansend`, `/usr/bin/candump`) and python-can from PyPI, installed here in a
//! throwaway venv under the target directory (`<target>/pycan-venv`); a missing tool or an unreachable PyPI
//! fails the test with what to do (CI has both), it never passes without running.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vcan::{CanSocket, Frame, OpenOptions, Received};

const LIMIT: Duration = Duration::from_secs(30);

fn agl_parity() -> Command {
    Command::new(env!("CARGO_BIN_EXE_agl-parity"))
}

fn tool(name: &str) -> PathBuf {
    let path = Path::new("/usr/bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: install can-utils (apt-get install can-utils; .ci/run does)",
        path.display()
    );
    path
}

/// A hub on a Unix socket and the test's node on it.
struct Bus {
    bus: common::TempHub,
    node: Box<dyn CanSocket>,
}

impl Bus {
    fn start() -> Bus {
        let bus = common::TempHub::start("exec");
        let node = vcan::open(
            &bus.endpoint(),
            &OpenOptions {
                node_name: "exec-test".into(),
                ..OpenOptions::default()
            },
        )
        .expect("join hub");
        Bus { bus, node }
    }

    fn can_arg(&self) -> String {
        format!("can0={}", self.bus.uri)
    }

    /// The first frame with this standard id within `limit`.
    fn wait_id(&mut self, id: u32, limit: Duration) -> Option<Received> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            match self.node.recv(Some(left)) {
                Ok(Some(rx)) if rx.frame.id().map(|i| i.raw()) == Some(id) => return Some(rx),
                Ok(_) => {}
                Err(e) => panic!("bus error: {e}"),
            }
        }
    }

    fn send(&mut self, text: &str) {
        let frame: Frame = text.parse().expect("frame");
        self.node.send(&frame).expect("send");
    }

    /// Waits (bounded) until a node whose name starts with `prefix` has joined: the program's socket is
    /// bound, so a frame sent now reaches it.
    fn wait_for_node(&self, prefix: &str, child: &mut Child) {
        let deadline = Instant::now() + LIMIT;
        while !self
            .bus
            .hub
            .stats()
            .nodes
            .iter()
            .any(|n| n.name.starts_with(prefix))
        {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("the program ended ({status}) before it joined the bus");
            }
            assert!(Instant::now() < deadline, "{prefix} never joined the bus");
            // Polling the hub's node list under a deadline.
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn spawn(cmd: &mut Command) -> Child {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start agl-parity exec")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn cansend_puts_a_frame_on_the_hub() {
    let mut bus = Bus::start();
    let child = spawn(
        agl_parity()
            .args(["exec", "--can", &bus.can_arg(), "--"])
            .arg(tool("cansend"))
            .args(["can0", "123#DEADBEEF"]),
    );
    let out = common::finish_within(child, LIMIT);
    assert!(
        out.status.success(),
        "cansend: {:?} {}",
        out.status,
        text(&out.stderr)
    );
    let rx = bus.wait_id(0x123, LIMIT).expect("123#DEADBEEF on the hub");
    assert_eq!(rx.frame, "123#DEADBEEF".parse::<Frame>().unwrap());
}

#[test]
fn candump_prints_a_frame_from_the_hub() {
    let mut bus = Bus::start();
    let mut child = spawn(
        agl_parity()
            .args(["exec", "--can", &bus.can_arg(), "--"])
            .arg(tool("candump"))
            .args(["-L", "-n", "1", "can0"]),
    );
    bus.wait_for_node("candump", &mut child);
    bus.send("321#C0FFEE");
    let out = common::finish_within(child, LIMIT);
    assert!(
        out.status.success(),
        "candump: {:?} {}",
        out.status,
        text(&out.stderr)
    );
    let stdout = text(&out.stdout);
    // candump -L: "(1700000000.123456) can0 321#C0FFEE"
    let line = stdout.lines().next().unwrap_or_default();
    assert!(
        line.starts_with('(') && line.ends_with(") can0 321#C0FFEE"),
        "candump printed {stdout:?}"
    );
    assert_eq!(stdout.lines().count(), 1, "candump -n 1 printed {stdout:?}");
}

#[test]
fn bad_can_values_exit_2_with_a_clear_message() {
    for (args, want) in [
        (vec!["--can", "can0"], "expected IF=ENDPOINT"),
        (vec!["--can", "=unix:/tmp/x.sock"], "expected IF=ENDPOINT"),
        (vec!["--can", "can0=ftp:somewhere"], "--can `can0=ftp:somewhere`"),
        (
            vec!["--can", "can0=unix:/a.sock", "--can", "can0=unix:/b.sock"],
            "interface `can0` is given twice",
        ),
        (vec![], "--can"),
    ] {
        let out = common::finish_within(
            spawn(agl_parity().arg("exec").args(&args).args(["--", "/bin/true"])),
            LIMIT,
        );
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {:?} {stderr}", out.status);
        assert!(
            stderr.contains(want),
            "{args:?}: stderr {stderr:?} does not say {want:?}"
        );
    }
    // A well-formed bus nobody serves: the program's bind fails, exec itself reports the program's code.
    let dir = tempfile::tempdir().expect("tempdir");
    let gone = format!("can0=unix:{}", dir.path().join("none.sock").display());
    let out = common::finish_within(
        spawn(
            agl_parity()
                .args(["exec", "--can", &gone, "--"])
                .arg(tool("cansend"))
                .args(["can0", "123#01"]),
        ),
        LIMIT,
    );
    assert!(!out.status.success(), "cansend to a bus nobody serves succeeded");
    assert_ne!(
        out.status.code(),
        Some(2),
        "a program's failure is not a usage error"
    );
}

/// The venv with python-can (`<target>/pycan-venv`), created and filled on first use.
fn python_can() -> PathBuf {
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
    };
    let venv = target.join("pycan-venv");
    let python = venv.join("bin/python");
    let has_can = |p: &Path| {
        Command::new(p)
            .args(["-c", "import can"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if python.exists() && has_can(&python) {
        return python;
    }
    let status = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .expect("python3 must be installed for the python-can test");
    assert!(status.success(), "python3 -m venv {} failed", venv.display());
    let out = Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "python-can"])
        .output()
        .expect("run pip");
    assert!(
        out.status.success(),
        "pip install python-can failed: PyPI must be reachable for this test (CI has it); this test fails \
         rather than skips.\n{}",
        text(&out.stderr)
    );
    assert!(has_can(&python), "python-can is not importable after pip install");
    python
}

const SCRIPT: &str = r#"
import can
with can.Bus(interface="socketcan", channel="can0") as bus:
    bus.send(can.Message(arbitration_id=0x456, data=[1, 2, 3], is_extended_id=False))
    while True:
        msg = bus.recv(timeout=20)
        if msg is None:
            raise SystemExit("no frame within 20 s")
        if msg.arbitration_id == 0x457:
            print("got %03X %s" % (msg.arbitration_id, msg.data.hex()))
            break
"#;

#[test]
fn python_can_sends_and_receives_through_exec() {
    let python = python_can();
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("pycan.py");
    std::fs::write(&script, SCRIPT).expect("write script");
    let mut bus = Bus::start();
    let child = spawn(
        agl_parity()
            .args(["exec", "--can", &bus.can_arg(), "--"])
            .arg(&python)
            .arg(&script),
    );
    // The script's frame means its socket is bound: the answer reaches it.
    let rx = bus.wait_id(0x456, LIMIT);
    if rx.is_none() {
        let out = common::finish_within(child, LIMIT);
        panic!(
            "no frame 0x456 from python-can: {:?}\n{}\n{}",
            out.status,
            text(&out.stdout),
            text(&out.stderr)
        );
    }
    assert_eq!(rx.map(|r| r.frame), Some("456#010203".parse::<Frame>().unwrap()));
    bus.send("457#CAFE");
    let out = common::finish_within(child, LIMIT);
    assert!(
        out.status.success(),
        "python-can: {:?}\n{}\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("got 457 cafe"),
        "python-can printed {:?}",
        text(&out.stdout)
    );
}
