//! Third-party tools on the bus, through the real CLI.
//!
//! * `agl-parity hub` processes bridged to each other over cannelloni (UDP), one with an slcan pty and one
//!   with a socketcand server: a frame written into the pty comes out of the socketcand client of the other
//!   hub and back, and each hub names its bridge nodes when it stops.
//! * (`--ignored`, needs `PYTHON_CAN_PY`, run by CI) a scenario bus served over socketcand
//!   (`bridges.socketcand` in the project file): python-can (`interface="socketcand"`) sends a climate
//!   request the sample HVAC workload takes (its heartbeat shows it), a BCM job keeps a cabin temperature heartbeat that the
//!   scenario asserts, and the run's record names both bridge nodes.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::TestProject;

const WAIT: Duration = Duration::from_secs(10);

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `agl-parity hub` and the lines it printed until it was ready.
struct HubProcess {
    child: Child,
    stdout: BufReader<std::process::ChildStdout>,
    ready: Vec<String>,
}

impl HubProcess {
    /// Starts the hub and reads its output until `ready_lines` lines starting with "bridge ready" came.
    fn start(args: &[&str], ready_lines: usize) -> HubProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_agl-parity"))
            .arg("hub")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("agl-parity hub starts");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut ready = Vec::new();
        while ready
            .iter()
            .filter(|l: &&String| l.starts_with("bridge ready"))
            .count()
            < ready_lines
        {
            let mut line = String::new();
            let n = stdout.read_line(&mut line).expect("hub output");
            assert!(n > 0, "the hub exited before it was ready; it printed {ready:?}");
            ready.push(line.trim_end().to_string());
        }
        HubProcess { child, stdout, ready }
    }

    /// Interrupts the hub (Ctrl-C) and returns what it printed on the way out.
    fn stop(mut self) -> String {
        // SAFETY: kill(2) with SIGINT on our child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGINT);
        }
        let mut rest = String::new();
        self.stdout.read_to_string(&mut rest).expect("hub output");
        let status = self.child.wait().expect("hub exits");
        assert!(status.success(), "hub exited with {status}: {rest}");
        rest
    }
}

/// The host end of an slcan pty, opened as a tool opens a serial port.
fn open_tty(path: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(path)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()))
}

/// Reads until `want` shows up in what was read (a bounded wait on the descriptor, not a sleep).
fn read_until(reader: &mut impl Read, fd: i32, want: &str) -> String {
    let deadline = Instant::now() + WAIT;
    let mut got = Vec::new();
    while !String::from_utf8_lossy(&got).contains(want) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "`{want}` did not arrive; got {:?}",
            String::from_utf8_lossy(&got)
        );
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one live pollfd.
        let n = unsafe { libc::poll(&mut p, 1, left.as_millis() as i32) };
        if n > 0 {
            let mut buf = [0u8; 1024];
            let n = reader.read(&mut buf).expect("read");
            assert!(n > 0, "closed while waiting for `{want}`");
            got.extend_from_slice(&buf[..n]);
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn hubs_on_two_sides_of_cannelloni_carry_slcan_and_socketcand_tools() {
    use std::os::fd::AsRawFd;
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("slcan0");
    let (a_port, b_port, tcp_port) = (free_udp_port(), free_udp_port(), free_tcp_port());
    let a_udp = format!("127.0.0.1:{a_port}");
    let b_udp = format!("127.0.0.1:{b_port}");
    let hub_a = HubProcess::start(
        &[
            "--name",
            "body",
            "--slcan",
            link.to_str().unwrap(),
            "--cannelloni",
            &format!("{a_udp}={b_udp}"),
        ],
        2,
    );
    let hub_b = HubProcess::start(
        &[
            "--name",
            "body",
            "--socketcand",
            &tcp_port.to_string(),
            "--cannelloni",
            &format!("{b_udp}={a_udp}"),
        ],
        2,
    );
    assert!(
        hub_a
            .ready
            .iter()
            .any(|l| l.contains("slcan adapter of bus body")),
        "{:?}",
        hub_a.ready
    );

    // A socketcand client on hub B, in raw mode.
    let mut tcp = TcpStream::connect(("127.0.0.1", tcp_port)).unwrap();
    let tcp_fd = tcp.as_raw_fd();
    read_until(&mut tcp, tcp_fd, "< hi >");
    tcp.write_all(b"< open body >").unwrap();
    read_until(&mut tcp, tcp_fd, "< ok >");
    tcp.write_all(b"< rawmode >").unwrap();
    read_until(&mut tcp, tcp_fd, "< ok >");

    // An slcan tool on hub A.
    let mut tty = open_tty(&link);
    let tty_fd = tty.as_raw_fd();
    tty.write_all(b"S6\rO\r").unwrap();
    read_until(&mut tty, tty_fd, "\r\r");
    tty.write_all(b"t1232AABB\r").unwrap();
    let frame = read_until(&mut tcp, tcp_fd, " >");
    assert!(
        frame.starts_with("< frame 123 ") && frame.ends_with(" AABB >"),
        "{frame:?}"
    );

    // And back: socketcand on B → cannelloni → slcan on A.
    tcp.write_all(b"< send 321 1 cc >").unwrap();
    read_until(&mut tty, tty_fd, "t3211CC\r");
    drop(tcp);
    drop(tty);

    let a_out = hub_a.stop();
    let b_out = hub_b.stop();
    let bridge_lines = |out: &str| -> Vec<String> {
        out.lines()
            .filter(|l| l.trim_start().starts_with("bridge node"))
            .map(str::to_string)
            .collect()
    };
    let (a_lines, b_lines) = (bridge_lines(&a_out), bridge_lines(&b_out));
    assert!(
        a_lines
            .iter()
            .any(|l| l.contains(&format!("slcan:{}", link.display()))
                && l.contains("1 to the bus")
                && l.contains("1 to the peer")),
        "{a_out}"
    );
    assert!(
        a_lines
            .iter()
            .any(|l| l.contains(&format!("cannelloni:{b_udp}")) && l.contains("1 to the bus")),
        "{a_out}"
    );
    assert!(
        b_lines
            .iter()
            .any(|l| l.contains("socketcand:127.0.0.1:") && l.contains("1 to the bus")),
        "{b_out}"
    );
    assert!(
        b_lines
            .iter()
            .any(|l| l.contains(&format!("cannelloni:{a_udp}")) && !l.contains("lost")),
        "{b_out}"
    );
    assert!(!link.exists(), "the slcan link is removed when the hub stops");
}

#[test]
fn a_bad_bridge_flag_is_a_usage_error_naming_it() {
    let out = Command::new(env!("CARGO_BIN_EXE_agl-parity"))
        .args(["hub", "--cannelloni", "127.0.0.1:1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--cannelloni") && err.contains("LOCAL=REMOTE"),
        "{err}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_agl-parity"))
        .args(["hub", "--socketcand", "0.0.0.0:29999"])
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("loopback"), "{err}");
}

fn python() -> PathBuf {
    match std::env::var_os("PYTHON_CAN_PY") {
        Some(p) => PathBuf::from(p),
        None => panic!(
            "PYTHON_CAN_PY is not set: point it at a Python with python-can (CI: target/python-can-venv/bin/python)"
        ),
    }
}

const SOCKETCAND_FEATURE: &str = r#"Feature: tools on the scenario bus over socketcand
  Scenario: a python-can HMI is answered and a BCM job keeps the cabin sensor alive
    Given the "hvac" workload is running
    Then within 30 s "HvacStatus" has FanLevel=3, TargetTemp=21
    And within 30 s "CabinTemperature" has CabinTemp=22
    And "CabinTemperature" is sent every 100 ms ± 25%
"#;

#[test]
#[ignore = "needs python-can: PYTHON_CAN_PY=<venv>/bin/python (CI runs it)"]
fn python_can_joins_a_scenario_bus_over_socketcand_in_every_column() {
    let python = python();
    let envs = common::hostable(&["native", "container", "vm"], "the socketcand scenario test");
    assert!(!envs.is_empty());
    let scripts = common::repo().join("fixtures/bridges");
    for env in envs {
        let p = TestProject::new();
        let port = free_tcp_port();
        p.write("agl-parity.yaml", &format!("bridges:\n  socketcand: {port}\n"));
        p.write("scenarios/socketcand.feature", SOCKETCAND_FEATURE);
        let tool = |script: &str| {
            Command::new(&python)
                .arg(scripts.join(script))
                .args(["127.0.0.1", &port.to_string(), "vehicle"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("python runs")
        };
        let hmi = tool("hmi_socketcand.py");
        let sensor = tool("cabin_sensor_bcm.py");
        let reports = p.path().join("reports");
        let run = Command::new(env!("CARGO_BIN_EXE_agl-parity"))
            .arg("--project")
            .arg(p.path())
            .args(["run", "--no-progress", "--env", env])
            .arg("--workloads")
            .arg(common::workload_bins())
            .arg("--report-dir")
            .arg(&reports)
            .output()
            .expect("agl-parity runs");
        let hmi = common::finish_within(hmi, Duration::from_secs(90));
        let sensor = common::finish_within(sensor, Duration::from_secs(90));
        let text = |o: &std::process::Output| {
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            )
        };
        assert!(
            run.status.success(),
            "{env}: {}\npython-can HMI: {}\nBCM sensor: {}",
            text(&run),
            text(&hmi),
            text(&sensor)
        );
        assert!(
            text(&run).contains(&format!("socketcand server on 127.0.0.1:{port}")),
            "{}",
            text(&run)
        );
        assert!(hmi.status.success(), "{env}: python-can HMI: {}", text(&hmi));
        assert!(text(&hmi).contains("answer:"), "{}", text(&hmi));
        assert!(sensor.status.success(), "{env}: BCM sensor: {}", text(&sensor));

        let dirs = agl_parity::merge::find_reports(&reports);
        let report = agl_parity::report::read_json(&dirs[0].join("parity.json")).expect("parity.json");
        let bus = report.runs[0]
            .buses
            .iter()
            .find(|b| b.name == "vehicle")
            .expect("bus vehicle");
        let socketcand: Vec<_> = bus
            .bridges
            .iter()
            .filter(|b| b.protocol == "socketcand")
            .flat_map(|b| b.nodes.iter())
            .collect();
        assert_eq!(socketcand.len(), 2, "{env}: {:?}", bus.bridges);
        assert!(socketcand
            .iter()
            .all(|n| n.node.starts_with("socketcand:127.0.0.1:")));
        // The HMI's requests went onto the bus and the answers to it; the BCM job carried the heartbeat.
        assert!(
            socketcand.iter().any(|n| n.to_bus >= 1 && n.to_peer >= 1),
            "{socketcand:?}"
        );
        assert!(socketcand.iter().any(|n| n.to_bus >= 5), "{socketcand:?}");
        common::schema::assert_valid(
            "a run with socketcand clients",
            &common::schema::parity_json(&dirs[0]),
        );
        let summary = std::fs::read_to_string(dirs[0].join("summary.md")).unwrap();
        assert!(summary.contains("bridge node socketcand:127.0.0.1:"), "{summary}");
    }
}
