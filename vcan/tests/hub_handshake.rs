//! A connection that never completes its hello is closed at the hub's handshake deadline, logged with its
//! peer and counted; nodes that did join are not affected. (Own test binary: it installs a process-wide
//! tracing subscriber to see the hub thread's warning.)

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::logs;
use vcan::client::HubClient;
use vcan::hub::{Hub, HubConfig, HANDSHAKE_TIMEOUT};
use vcan::wire::{self, Hello, Role};
use vcan::{CanId, CanSocket, Endpoint, Frame, OpenOptions};

/// Only a failure waits this long.
const LIMIT: Duration = Duration::from_secs(10);

fn start(name: &str, dir: &tempfile::TempDir, timeout: Option<Duration>) -> Hub {
    logs();
    Hub::start(HubConfig {
        name: name.into(),
        unix_path: Some(dir.path().join(format!("{name}.sock"))),
        tcp_addr: Some("127.0.0.1:0".parse().unwrap()),
        handshake_timeout: timeout,
        ..HubConfig::default()
    })
    .unwrap()
}

fn node(hub: &Hub, name: &str) -> HubClient {
    let options = OpenOptions {
        node_name: name.into(),
        ..OpenOptions::default()
    };
    HubClient::connect(&hub.unix_endpoint().unwrap(), &options).unwrap()
}

/// Reads until the hub closes the connection; fails if it is still open after [`LIMIT`].
fn closed_by_hub(stream: &mut impl Read, what: &str) {
    let mut rest = Vec::new();
    match stream.read_to_end(&mut rest) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("{what}: still open after {LIMIT:?} ({e})"),
    }
}

fn half_a_hello() -> Vec<u8> {
    let mut hello = Vec::new();
    wire::encode_hello(
        &mut hello,
        &Hello {
            version: wire::PROTOCOL_VERSION,
            role: Role::Node,
            name: "slow-ecu".into(),
            recv_own: false,
            want_errors: false,
            fd: false,
            filters: vec![],
        },
    )
    .unwrap();
    hello.truncate(hello.len() / 2);
    hello
}

/// Sends one frame from `from` and checks that `to` receives it.
fn exchange(from: &mut HubClient, to: &mut HubClient, id: u16) {
    let frame = Frame::data(CanId::Standard(id), &[id as u8]).unwrap();
    from.send(&frame).unwrap();
    let got = to.recv(Some(LIMIT)).unwrap().expect("frame delivered");
    assert_eq!(got.frame, frame);
}

#[test]
fn the_default_deadline_is_ten_seconds() {
    assert_eq!(HANDSHAKE_TIMEOUT, Duration::from_secs(10));
    assert_eq!(HubConfig::default().handshake_timeout, Some(HANDSHAKE_TIMEOUT));
}

#[test]
fn silent_and_half_hello_connections_are_closed_at_the_deadline_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let hub = start("hsbus", &dir, Some(Duration::from_secs(1)));
    // Two good nodes join before the slow connections, so their deadlines pass first.
    let mut a = node(&hub, "good-a");
    let mut b = node(&hub, "good-b");

    let mut silent = UnixStream::connect(dir.path().join("hsbus.sock")).unwrap();
    silent.set_read_timeout(Some(LIMIT)).unwrap();
    let Some(Endpoint::Tcp(addr)) = hub.tcp_endpoint() else {
        panic!("hub has a TCP endpoint")
    };
    let mut partial = std::net::TcpStream::connect(addr).unwrap();
    partial.set_read_timeout(Some(LIMIT)).unwrap();
    partial.write_all(&half_a_hello()).unwrap();

    closed_by_hub(&mut silent, "a connection that sent nothing");
    closed_by_hub(&mut partial, "a connection that sent half a hello");
    assert_eq!(hub.handshake_timeouts(), 2);

    // The nodes that joined were past their own deadline by then, and are still on the bus.
    exchange(&mut a, &mut b, 0x123);
    exchange(&mut b, &mut a, 0x321);
    let stats = hub.stats();
    assert_eq!(stats.nodes.len(), 2, "the slow connections never became nodes");
    assert!(stats.nodes.iter().all(|n| n.connected), "{stats:?}");
    // A node joining now is not affected either.
    let mut c = node(&hub, "good-c");
    exchange(&mut c, &mut a, 0x7FF);
    assert_eq!(hub.handshake_timeouts(), 2);
    drop(hub);

    let logs = logs().text();
    let warnings: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("hsbus") && l.contains("handshake deadline"))
        .collect();
    assert_eq!(warnings.len(), 2, "{logs}");
    assert!(
        warnings.iter().any(|l| l.contains("(unix)")),
        "the Unix peer is named: {warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .any(|l| l.contains(&format!("tcp 127.0.0.1:{}", partial.local_addr().unwrap().port()))),
        "the TCP peer is named with its address: {warnings:?}"
    );
}

#[test]
fn without_a_deadline_a_silent_connection_stays_open() {
    let dir = tempfile::tempdir().unwrap();
    // A hub with a short deadline is the clock: once it has closed its silent connection, the same wait has
    // passed for the hub without a deadline.
    let clock = start("clock", &dir, Some(Duration::from_millis(500)));
    let hub = start("nodeadline", &dir, None);
    let mut open = UnixStream::connect(dir.path().join("nodeadline.sock")).unwrap();
    let mut tick = UnixStream::connect(dir.path().join("clock.sock")).unwrap();
    tick.set_read_timeout(Some(LIMIT)).unwrap();
    closed_by_hub(&mut tick, "the clock hub's silent connection");
    assert_eq!(clock.handshake_timeouts(), 1);
    // Still open: it completes its hello now and is welcomed.
    let mut full = Vec::new();
    wire::encode_hello(
        &mut full,
        &Hello {
            version: wire::PROTOCOL_VERSION,
            role: Role::Node,
            name: "late".into(),
            recv_own: false,
            want_errors: false,
            fd: false,
            filters: vec![],
        },
    )
    .unwrap();
    open.write_all(&full).unwrap();
    open.set_read_timeout(Some(LIMIT)).unwrap();
    let mut welcome = [0u8; 1];
    assert_eq!(open.read(&mut welcome).unwrap(), 1, "welcomed");
    let stats = hub.stats();
    assert_eq!(hub.handshake_timeouts(), 0);
    assert!(
        stats.nodes.iter().any(|n| n.name == "late" && n.connected),
        "{stats:?}"
    );
}
