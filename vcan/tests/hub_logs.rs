//! The hub's log when it disconnects a node for garbage bytes names the node (own test binary, because it
//! installs a process-wide tracing subscriber to see the hub thread's events).

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use vcan::hub::{Hub, HubConfig};
use vcan::wire::{self, Hello, Role};

#[test]
fn garbage_is_logged_as_a_warning_naming_the_node() {
    let captured = common::logs();

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("logs.sock");
    let hub = Hub::start(HubConfig {
        name: "logbus".into(),
        unix_path: Some(path.clone()),
        ..HubConfig::default()
    })
    .unwrap();
    let mut hello = Vec::new();
    wire::encode_hello(
        &mut hello,
        &Hello {
            version: wire::PROTOCOL_VERSION,
            role: Role::Node,
            name: "brake-ecu".into(),
            recv_own: false,
            want_errors: false,
            fd: false,
            filters: vec![],
        },
    )
    .unwrap();
    let mut raw = UnixStream::connect(&path).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    raw.write_all(&hello).unwrap();
    raw.write_all(&[0x00, 0x00, 0x00, 0x7E]).unwrap();
    let mut rest = Vec::new();
    raw.read_to_end(&mut rest).unwrap();
    // The hub logged before it closed the socket, and is still serving.
    let stats = hub.stats();
    assert!(!stats.nodes[0].connected);
    drop(hub);

    let logs = captured.text();
    let line = logs
        .lines()
        .find(|l| l.contains("WARN") && l.contains("disconnecting node"))
        .unwrap_or_else(|| panic!("no warning in:\n{logs}"));
    assert!(line.contains("brake-ecu"), "{line}");
    assert!(line.contains("unknown message type 0x7E"), "{line}");
    assert!(logs.contains("node joined"), "{logs}");
}
