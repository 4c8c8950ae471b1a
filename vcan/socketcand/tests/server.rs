//! The socketcand server against a real hub, spoken to by a plain TCP client: raw, BCM and control mode,
//! errors, bus registration, node names and stopping.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use vcan::bridge::{Bridge, BridgeError};
use vcan::{CanId, CanSocket, FdFlags, Frame};
use vcan_socketcand::{SocketcandConfig, SocketcandServer};

fn std_frame(id: u32, data: &[u8]) -> Frame {
    Frame::data(CanId::standard(id).unwrap(), data).unwrap()
}

#[test]
fn raw_mode_carries_frames_both_ways() {
    let bus = hub("body");
    let server = server();
    server.set_bus("body", bus.endpoint.clone());
    let mut node = node(&bus, "ecu");
    let mut client = Client::open(server.local_addr(), "body");
    client.send("< rawmode >");
    client.expect("< ok >");

    // python-can's spelling: lower-case unpadded bytes; and an 8-digit (extended) id.
    client.send("< send 123 3 1 a ff >< send 1ABCDEF0 0 >");
    let r = recv(&mut node, TIMEOUT).expect("the client's frame on the bus");
    assert_eq!(r.frame, std_frame(0x123, &[0x01, 0x0A, 0xFF]));
    let r = recv(&mut node, TIMEOUT).expect("the client's second frame on the bus");
    assert_eq!(
        r.frame,
        Frame::data(CanId::extended(0x1ABC_DEF0).unwrap(), &[]).unwrap()
    );

    node.send(&std_frame(0x456, &[0xDE, 0xAD])).unwrap();
    let message = client.expect_prefix("< frame ");
    let (id, ts, data) = frame_parts(&message);
    assert_eq!((id.as_str(), data.as_str()), ("456", "DEAD"));
    check_timestamp(&ts);

    node.send(&Frame::data(CanId::extended(0x1F).unwrap(), &[]).unwrap())
        .unwrap();
    let (id, _, data) = frame_parts(&client.expect_prefix("< frame "));
    assert_eq!((id.as_str(), data.as_str()), ("0000001F", ""));

    // Error frames come as `< error CLASS SECS.USECS >`.
    bus.hub
        .inject(Frame::error(0x004, [0, 0x08, 0, 0, 0, 0, 0, 0]).unwrap())
        .unwrap();
    let message = client.expect_prefix("< error 004 ");
    check_timestamp(message.trim_start_matches("< error 004 ").trim_end_matches(" >"));

    // CAN FD and remote frames are not passed on; the next data frame is.
    node.send(&Frame::fd(CanId::standard(0x10).unwrap(), &[0; 12], FdFlags::default()).unwrap())
        .unwrap();
    node.send(&Frame::remote(CanId::standard(0x11).unwrap(), 2).unwrap())
        .unwrap();
    node.send(&std_frame(0x12, &[7])).unwrap();
    let (id, _, data) = frame_parts(&client.expect_prefix("< frame "));
    assert_eq!((id.as_str(), data.as_str()), ("012", "07"));

    drop(client);
    let name = format!("socketcand:127.0.0.1:{}", report_port(&server));
    wait_for_node(&bus, &name, false);
    let mut server = server;
    let report = server.stop();
    let node_report = &report.nodes[0];
    assert_eq!(node_report.to_bus, 2);
    assert_eq!(node_report.to_peer, 4);
    assert_eq!(node_report.rejected, 0);
    assert!(
        node_report.errors.iter().any(|e| e.contains("1 CAN FD frames")),
        "{:?}",
        node_report.errors
    );
    assert!(
        node_report.errors.iter().any(|e| e.contains("1 remote frames")),
        "{:?}",
        node_report.errors
    );
}

/// The port of the (only) node the server has had.
fn report_port(server: &SocketcandServer) -> String {
    let report = server.report();
    report.nodes[0].peer.rsplit(':').next().unwrap().to_string()
}

#[test]
fn the_bridge_node_is_named_after_the_client_and_leaves_when_the_server_stops() {
    let bus = hub("chassis");
    let mut server = server();
    server.set_bus("chassis", bus.endpoint.clone());
    let mut client = Client::open(server.local_addr(), "chassis");
    let name = format!("socketcand:127.0.0.1:{}", client.local_port());
    wait_for_node(&bus, &name, true);
    assert_eq!(server.report().nodes[0].node, name);
    assert_eq!(server.address(), server.local_addr().to_string());
    assert_eq!(server.protocol(), "socketcand");

    let report = server.stop();
    client.expect_eof();
    wait_for_node(&bus, &name, false);
    assert_eq!(report.nodes.len(), 1);
    assert!(!report.nodes[0].connected);
    // Stopping twice is harmless; the server no longer accepts.
    server.stop();
    let refused = std::net::TcpStream::connect(server.local_addr());
    assert!(refused.is_err());
}

#[test]
fn an_unknown_bus_is_refused_and_the_connection_closed() {
    let bus = hub("known");
    let server = server();
    server.set_bus("known", bus.endpoint.clone());
    let mut client = Client::connect(server.local_addr());
    client.send("< open unknown >");
    client.expect("< error could not open bus >");
    client.expect_eof();
    assert!(server.report().nodes.is_empty());
}

#[test]
fn buses_can_be_registered_and_removed_while_running() {
    let a = hub("a");
    let b = hub("b");
    let server = server();
    assert!(server.buses().is_empty());
    server.set_bus("b", b.endpoint.clone());
    server.set_bus("a", a.endpoint.clone());
    assert_eq!(server.buses(), vec!["a".to_string(), "b".to_string()]);
    let _on_a = Client::open(server.local_addr(), "a");
    server.remove_bus("a");
    assert_eq!(server.buses(), vec!["b".to_string()]);
    let mut late = Client::connect(server.local_addr());
    late.send("< open a >");
    late.expect("< error could not open bus >");
    // Re-registering a name points new clients at the new hub.
    server.set_bus("a", b.endpoint.clone());
    let on_b = Client::open(server.local_addr(), "a");
    wait_for_node(&b, &format!("socketcand:127.0.0.1:{}", on_b.local_port()), true);
}

#[test]
fn a_cyclic_bcm_job_runs_at_its_interval_until_deleted() {
    let bus = hub("heartbeat");
    let server = server();
    server.set_bus("hb", bus.endpoint.clone());
    let mut node = node(&bus, "listener");
    let mut client = Client::open(server.local_addr(), "hb");
    client.send("< add 0 100000 123 2 AA BB >");

    let first = recv(&mut node, TIMEOUT).expect("the job's first frame");
    assert_eq!(first.frame, std_frame(0x123, &[0xAA, 0xBB]));
    let window_end = first.timestamp_ns + 1_000_000_000;
    let mut in_window = 1;
    loop {
        let r = recv(&mut node, TIMEOUT).expect("the job keeps sending");
        assert_eq!(r.frame.id(), Some(CanId::standard(0x123).unwrap()));
        if r.timestamp_ns >= window_end {
            break;
        }
        in_window += 1;
    }
    assert!(
        (9..=11).contains(&in_window),
        "{in_window} frames in one second at 100 ms"
    );

    // `update` changes the content without touching the timer.
    client.send("< update 123 1 CC >");
    client.sync();
    let changed = loop {
        let r = recv(&mut node, TIMEOUT).expect("the job keeps sending");
        if r.frame.payload() == [0xCC] {
            break r;
        }
    };
    let next = recv(&mut node, TIMEOUT).expect("the job keeps sending");
    let gap_ms = (next.timestamp_ns - changed.timestamp_ns) / 1_000_000;
    assert!((50..=200).contains(&gap_ms), "{gap_ms} ms between frames");

    client.send("< delete 123 >");
    client.sync();
    let deadline = Instant::now() + Duration::from_millis(500);
    let mut after = 0;
    while let Some(_r) = recv(&mut node, deadline.saturating_duration_since(Instant::now())) {
        after += 1;
    }
    assert!(after <= 1, "{after} frames after delete");

    // A zero interval sends once.
    client.send("< add 0 0 7FF 0 >");
    let once = recv(&mut node, TIMEOUT).expect("the one frame");
    assert_eq!(once.frame, std_frame(0x7FF, &[]));
    assert!(recv(&mut node, Duration::from_millis(300)).is_none());
}

#[test]
fn filters_and_subscriptions_deliver_in_bcm_mode() {
    let bus = hub("rx");
    let server = server();
    server.set_bus("rx", bus.endpoint.clone());
    let mut node = node(&bus, "ecu");
    let mut client = Client::open(server.local_addr(), "rx");

    client.send("< filter 0 0 123 1 F0 >");
    client.sync();
    for data in [[0x10], [0x1F], [0x2F]] {
        node.send(&std_frame(0x123, &data)).unwrap();
    }
    node.send(&std_frame(0x124, &[0xFF])).unwrap();
    // The first frame, then only a change under the mask; spaced bytes as socketcand's BCM writes them.
    let (id, ts, data) = frame_parts(&client.expect_prefix("< frame "));
    assert_eq!((id.as_str(), data.as_str()), ("123", "10 "));
    check_timestamp(&ts);
    let (_, _, data) = frame_parts(&client.expect_prefix("< frame "));
    assert_eq!(data, "2F ");

    client.send("< subscribe 0 0 00000321 >");
    client.sync();
    let ext = CanId::extended(0x321).unwrap();
    node.send(&Frame::data(ext, &[1, 2]).unwrap()).unwrap();
    node.send(&Frame::data(ext, &[1, 2]).unwrap()).unwrap();
    node.send(&std_frame(0x321, &[9])).unwrap();
    for _ in 0..2 {
        let (id, _, data) = frame_parts(&client.expect_prefix("< frame "));
        assert_eq!((id.as_str(), data.as_str()), ("00000321", "01 02 "));
    }

    client.send("< unsubscribe 123 >");
    client.sync();
    node.send(&std_frame(0x123, &[0x30])).unwrap();
    node.send(&Frame::data(ext, &[3]).unwrap()).unwrap();
    // The frame after the unsubscribed one is the first to arrive.
    let (id, _, data) = frame_parts(&client.expect_prefix("< frame "));
    assert_eq!((id.as_str(), data.as_str()), ("00000321", "03 "));

    // Raw-mode frames are not reported in BCM mode; switching away ends the subscriptions.
    client.send("< rawmode >");
    client.expect("< ok >");
    client.send("< bcmmode >");
    client.expect("< ok >");
    node.send(&Frame::data(ext, &[4]).unwrap()).unwrap();
    client.send("< subscribe 0 0 456 >");
    client.sync();
    node.send(&std_frame(0x456, &[5])).unwrap();
    let (id, _, _) = frame_parts(&client.expect_prefix("< frame "));
    assert_eq!(id, "456");
}

#[test]
fn a_subscription_throttle_holds_back_changes() {
    let bus = hub("throttle");
    let server = server();
    server.set_bus("t", bus.endpoint.clone());
    let mut node = node(&bus, "ecu");
    let mut client = Client::open(server.local_addr(), "t");
    client.send("< subscribe 0 300000 100 >");
    client.sync();
    node.send(&std_frame(0x100, &[1])).unwrap();
    let (_, _, data) = frame_parts(&client.expect_prefix("< frame "));
    assert_eq!(data, "01 ");
    let first_at = Instant::now();
    node.send(&std_frame(0x100, &[2])).unwrap();
    node.send(&std_frame(0x100, &[3])).unwrap();
    // Only the newest held change, once the throttle time has passed.
    let (_, _, data) = frame_parts(&client.expect_prefix("< frame "));
    assert_eq!(data, "03 ");
    assert!(first_at.elapsed() >= Duration::from_millis(200));
    assert_eq!(client.next(Duration::from_millis(400)), None);
}

#[test]
fn statistics_report_the_nodes_traffic_in_control_mode() {
    let bus = hub("stats");
    let server = server();
    server.set_bus("s", bus.endpoint.clone());
    let mut node = node(&bus, "ecu");
    let mut client = Client::open(server.local_addr(), "s");
    client.send("< send 123 2 1 2 >< send 124 1 3 >");
    recv(&mut node, TIMEOUT).expect("first frame");
    recv(&mut node, TIMEOUT).expect("second frame");
    client.send("< controlmode >");
    client.expect("< ok >");
    node.send(&std_frame(0x200, &[1, 2, 3, 4])).unwrap();
    client.send("< statistics 100 >");
    let deadline = Instant::now() + TIMEOUT;
    let mut stats = Vec::new();
    while stats.len() < 3 {
        assert!(Instant::now() < deadline, "statistics: {stats:?}");
        let message = client.expect_prefix("< stat ");
        stats.push(message);
    }
    assert_eq!(stats.last().map(String::as_str), Some("< stat 4 1 3 2 >"));
    // Control mode has no `send`.
    client.send("< send 123 0 >");
    client.expect("< error `send` is not available in controlmode >");
    client.send("< statistics 0 >");
    client.sync();
    assert_eq!(client.next(Duration::from_millis(300)), None);
}

#[test]
fn bad_commands_get_errors_and_the_connection_stays_usable() {
    let bus = hub("errors");
    let mut server = server();
    server.set_bus("e", bus.endpoint.clone());
    let mut node = node(&bus, "ecu");
    let mut client = Client::connect(server.local_addr());
    client.send("< send 123 0 >");
    client.expect("< error no bus is open: send `open BUS` first >");
    client.send("< open e >");
    client.expect("< ok >");

    for (command, reply) in [
        ("< frobnicate 1 >", "< error unknown command `frobnicate` >"),
        ("< send 123 2 aa >", "< error dlc 2 but 1 data bytes >"),
        (
            "< send 123 9 1 2 3 4 5 6 7 8 9 >",
            "< error dlc 9 is out of range (classic CAN: 0-8) >",
        ),
        (
            "< send 12x 0 >",
            "< error bad CAN id `12x`: expected hex digits >",
        ),
        (
            "< send 123456789 0 >",
            "< error bad CAN id `123456789`: more than 8 hex digits >",
        ),
        (
            "< send 123 1 0x1 >",
            "< error bad data byte `0x1`: expected 1-2 hex digits >",
        ),
        ("< delete 555 >", "< error no send job for id 555 >"),
        ("< update 555 0 >", "< error no send job for id 555 >"),
        (
            "< unsubscribe 555 >",
            "< error no subscription or filter for id 555 >",
        ),
        (
            "< statistics 100 >",
            "< error `statistics` is not available in bcmmode >",
        ),
        ("< open e >", "< error a bus is already open >"),
        (
            "< isotpmode >",
            "< error ISO-TP (`isotpmode`) is not supported by this server >",
        ),
        ("garbage", "< error text outside `( )`: `garbage` >"),
        ("< >", "< error empty message `( )` >"),
    ] {
        client.send(command);
        client.expect(reply);
    }
    // A message split over several writes still works, and so does the connection.
    client.stream.set_nodelay(true).unwrap();
    client.send("< se");
    client.send("nd 321 1 ");
    client.send("42 >");
    let r = recv(&mut node, TIMEOUT).expect("the split message's frame");
    assert_eq!(r.frame, std_frame(0x321, &[0x42]));
    client.send("< rawmode >");
    client.expect("< ok >");
    client.send("< add 0 0 123 0 >");
    client.expect("< error `add` is not available in rawmode >");
    client.sync();

    let report = server.stop();
    assert_eq!(report.nodes[0].rejected, 15);
    assert_eq!(report.nodes[0].to_bus, 1);
    assert!(report.nodes[0]
        .errors
        .iter()
        .any(|e| e.contains("unknown command `frobnicate`")));
}

#[test]
fn losing_the_hub_ends_the_session_with_an_error() {
    let bus = hub("gone");
    let server = server();
    server.set_bus("g", bus.endpoint.clone());
    let mut client = Client::open(server.local_addr(), "g");
    let Bus { hub, .. } = bus;
    hub.shutdown();
    let message = client.expect_prefix("< error lost the bus");
    assert!(!message[1..].contains('<'));
    client.expect_eof();
    assert!(!server.report().nodes[0].connected);
}

#[test]
fn a_raw_mode_client_losing_the_hub_sees_the_connection_close_without_an_error_frame() {
    let bus = hub("gone-raw");
    let server = server();
    server.set_bus("g", bus.endpoint.clone());
    let mut client = Client::open(server.local_addr(), "g");
    client.send("< rawmode >");
    client.expect("< ok >");
    let Bus { hub, .. } = bus;
    hub.shutdown();
    // In raw mode `< error … >` would be read as an error frame (python-can does).
    client.expect_eof();
    assert!(!server.report().nodes[0].connected);
}

#[test]
fn a_non_loopback_address_needs_allow_remote() {
    let any: SocketAddr = "0.0.0.0:0".parse().unwrap();
    let err = SocketcandServer::start(SocketcandConfig {
        listen: any,
        allow_remote: false,
    })
    .unwrap_err();
    assert!(matches!(err, BridgeError::Setup { .. }), "{err:?}");
    assert!(err.to_string().contains("not a loopback address"), "{err}");
    let server = SocketcandServer::start(SocketcandConfig {
        listen: any,
        allow_remote: true,
    })
    .unwrap();
    assert_ne!(server.local_addr().port(), 0);
    // Loopback is the default.
    assert!(SocketcandConfig::default().listen.ip().is_loopback());
    assert_eq!(SocketcandConfig::default().listen.port(), 29536);
}
