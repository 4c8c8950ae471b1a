//! Integration tests of the userspace hub and its clients over real Unix and TCP sockets.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use vcan::client::HubClient;
use vcan::hub::{query_stats, Backpressure, Hub, HubConfig, HubStats};
use vcan::wire::{self, Decoder, Hello, Message, Role};
use vcan::{BusError, CanId, CanSocket, Endpoint, FdFlags, Filter, Frame, OpenOptions, Received};

const WAIT: Option<Duration> = Some(Duration::from_secs(10));

struct Bus {
    hub: Hub,
    _dir: tempfile::TempDir,
    path: PathBuf,
}

fn bus_with(queue_frames: usize, backpressure: Backpressure) -> Bus {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bus.sock");
    let hub = Hub::start(HubConfig {
        name: "test".into(),
        unix_path: Some(path.clone()),
        tcp_addr: Some("127.0.0.1:0".parse().unwrap()),
        queue_frames,
        backpressure,
        timing: None,
        ..HubConfig::default()
    })
    .unwrap();
    Bus { hub, _dir: dir, path }
}

fn bus() -> Bus {
    bus_with(65_536, Backpressure::Drop)
}

fn opts(name: &str) -> OpenOptions {
    OpenOptions {
        node_name: name.into(),
        ..OpenOptions::default()
    }
}

fn join(bus: &Bus, options: &OpenOptions) -> HubClient {
    HubClient::connect(&bus.hub.unix_endpoint().unwrap(), options).unwrap()
}

fn frame(text: &str) -> Frame {
    text.parse().unwrap()
}

fn recv(node: &mut HubClient) -> Received {
    node.recv(WAIT).unwrap().expect("a frame within the wait")
}

fn numbered(i: u32) -> Frame {
    Frame::data(CanId::Standard((i % 0x800) as u16), &i.to_le_bytes()).unwrap()
}

fn payload_number(frame: &Frame) -> u32 {
    u32::from_le_bytes(frame.payload()[..4].try_into().unwrap())
}

fn node_stats<'a>(stats: &'a HubStats, name: &str) -> &'a vcan::hub::NodeStats {
    stats.nodes.iter().find(|n| n.name == name).unwrap()
}

#[test]
fn frames_reach_other_nodes_with_seq_and_timestamp() {
    let bus = bus();
    let mut a = join(&bus, &opts("a"));
    let mut b = join(&bus, &opts("b"));
    assert_ne!(a.node_id(), b.node_id());
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    a.send(&frame("123#1122")).unwrap();
    a.send(&frame("12345678#R3")).unwrap();
    let first = recv(&mut b);
    let second = recv(&mut b);
    assert_eq!(first.frame, frame("123#1122"));
    assert_eq!(second.frame, frame("12345678#R3"));
    assert_eq!(first.seq, Some(1));
    assert_eq!(second.seq, Some(2));
    assert!(!first.own);
    assert!(first.timestamp_ns >= before && second.timestamp_ns >= first.timestamp_ns);
    // The sender did not ask for its own frames.
    assert!(a.recv(Some(Duration::ZERO)).unwrap().is_none());
    let stats = bus.hub.stats();
    assert_eq!(stats.frames, 2);
    assert_eq!(node_stats(&stats, "a").sent, 2);
    assert_eq!(node_stats(&stats, "b").delivered, 2);
    assert_eq!(stats.name, "test");
}

#[test]
fn recv_own_echoes_in_the_global_order() {
    let bus = bus();
    let mut a = join(
        &bus,
        &OpenOptions {
            recv_own: true,
            ..opts("a")
        },
    );
    let mut b = join(&bus, &opts("b"));
    a.send(&frame("100#01")).unwrap();
    b.send(&frame("200#02")).unwrap();
    let a1 = recv(&mut a);
    let a2 = recv(&mut a);
    let b1 = recv(&mut b);
    assert_eq!((a1.frame.clone(), a1.own), (frame("100#01"), true));
    assert_eq!((a2.frame, a2.own), (frame("200#02"), false));
    assert_eq!((b1.frame, b1.own, b1.seq), (frame("100#01"), false, a1.seq));
    assert!(a1.seq < a2.seq);
}

#[test]
fn concurrent_senders_get_one_global_order() {
    let bus = bus();
    let endpoint = bus.hub.unix_endpoint().unwrap();
    let mut watchers: Vec<HubClient> = (0..2).map(|i| join(&bus, &opts(&format!("watch{i}")))).collect();
    const PER_SENDER: u32 = 2_000;
    let senders: Vec<_> = (0..3u32)
        .map(|s| {
            let endpoint = endpoint.clone();
            let mut node = HubClient::connect(&endpoint, &opts(&format!("send{s}"))).unwrap();
            std::thread::spawn(move || {
                for i in 0..PER_SENDER {
                    node.send(&numbered(s * 1_000_000 + i)).unwrap();
                }
                node
            })
        })
        .collect();
    let total = 3 * PER_SENDER as usize;
    let mut seen: Vec<Vec<(u64, u32)>> = Vec::new();
    for w in watchers.iter_mut() {
        let got: Vec<(u64, u32)> = (0..total)
            .map(|_| {
                let r = recv(w);
                (r.seq.unwrap(), payload_number(&r.frame))
            })
            .collect();
        seen.push(got);
    }
    for s in senders {
        s.join().unwrap();
    }
    // Both watchers saw the same sequence, numbered 1..=total without gaps.
    assert_eq!(seen[0], seen[1]);
    for (i, (seq, _)) in seen[0].iter().enumerate() {
        assert_eq!(*seq, i as u64 + 1);
    }
    // Each sender's frames stay in its own order.
    for s in 0..3u32 {
        let mine: Vec<u32> = seen[0]
            .iter()
            .map(|(_, n)| *n)
            .filter(|n| n / 1_000_000 == s)
            .collect();
        let want: Vec<u32> = (0..PER_SENDER).map(|i| s * 1_000_000 + i).collect();
        assert_eq!(mine, want);
    }
}

#[test]
fn filters_apply_and_can_be_replaced() {
    let bus = bus();
    let mut tx = join(&bus, &opts("tx"));
    let mut rx = join(
        &bus,
        &OpenOptions {
            filters: vec![Filter::new(0x100, 0x700), Filter::new(0x7FF, 0x7FF)],
            ..opts("rx")
        },
    );
    let mut inv = join(
        &bus,
        &OpenOptions {
            filters: vec![Filter::inverted(0x023, 0x7FF)],
            ..opts("inv")
        },
    );
    for text in ["023#01", "1FF#02", "300#03", "7FF#04"] {
        tx.send(&frame(text)).unwrap();
    }
    assert_eq!(recv(&mut rx).frame, frame("1FF#02"));
    assert_eq!(recv(&mut rx).frame, frame("7FF#04"));
    assert_eq!(recv(&mut inv).frame, frame("1FF#02"));
    assert_eq!(recv(&mut inv).frame, frame("300#03"));
    assert_eq!(recv(&mut inv).frame, frame("7FF#04"));

    // Filters change at rx's point in the bus order: a frame rx sends after set_filters and tx receives
    // proves the hub has applied them before tx sends anything else.
    let resync = |rx: &mut HubClient, tx: &mut HubClient, marker: &str| {
        rx.send(&frame(marker)).unwrap();
        assert_eq!(recv(tx).frame, frame(marker));
    };
    rx.set_filters(&[Filter::new(0x123, 0x7FF)]).unwrap();
    resync(&mut rx, &mut tx, "7AA#");
    tx.send(&frame("1FF#05")).unwrap();
    tx.send(&frame("123#06")).unwrap();
    assert_eq!(recv(&mut rx).frame, frame("123#06"));
    rx.set_filters(&[]).unwrap();
    resync(&mut rx, &mut tx, "7AB#");
    tx.send(&frame("456#07")).unwrap();
    assert_eq!(recv(&mut rx).frame, frame("456#07"));
    assert!(rx.recv(Some(Duration::ZERO)).unwrap().is_none());
}

#[test]
fn error_and_fd_frames_only_reach_nodes_that_asked() {
    let bus = bus();
    let mut tx = join(
        &bus,
        &OpenOptions {
            fd: true,
            ..opts("tx")
        },
    );
    let mut plain = join(&bus, &opts("plain"));
    let mut full = join(
        &bus,
        &OpenOptions {
            fd: true,
            want_errors: true,
            ..opts("full")
        },
    );
    let fd = Frame::fd(
        CanId::Extended(0x1234),
        &[0xAB; 64],
        FdFlags {
            brs: true,
            esi: false,
        },
    )
    .unwrap();
    let err = Frame::error(0x4, [0, 4, 0, 0, 0, 0, 0, 0]).unwrap();
    tx.send(&fd).unwrap();
    tx.send(&err).unwrap();
    tx.send(&frame("123#")).unwrap();
    assert_eq!(recv(&mut full).frame, fd);
    assert_eq!(recv(&mut full).frame, err);
    assert_eq!(recv(&mut full).frame, frame("123#"));
    // The classic node without error frames only sees the classic frame.
    assert_eq!(recv(&mut plain).frame, frame("123#"));
    // A classic node cannot send FD frames.
    assert!(matches!(plain.send(&fd), Err(BusError::Unsupported(_))));
    assert!(matches!(
        plain.send_batch(&[frame("001#"), fd.clone()]),
        Err(BusError::Unsupported(_))
    ));
}

#[test]
fn send_batch_keeps_order() {
    let bus = bus();
    let mut tx = join(&bus, &opts("tx"));
    let mut rx = join(&bus, &opts("rx"));
    let frames: Vec<Frame> = (0..5_000).map(numbered).collect();
    tx.send_batch(&frames).unwrap();
    for (i, want) in frames.iter().enumerate() {
        let r = recv(&mut rx);
        assert_eq!(&r.frame, want);
        assert_eq!(r.seq, Some(i as u64 + 1));
    }
    assert!(!rx.has_buffered());
}

#[test]
fn drop_mode_counts_drops_for_the_slow_node_only() {
    let bus = bus_with(16, Backpressure::Drop);
    let mut tx = join(&bus, &opts("tx"));
    let mut observer = join(&bus, &opts("observer"));
    let mut slow = join(&bus, &opts("slow"));
    const N: u32 = 3_000;
    // Lockstep with the observer, so its queue never holds more than one frame; the slow node never reads
    // until the end, so its socket buffer and then its queue fill up.
    for i in 0..N {
        tx.send(&numbered(i)).unwrap();
        assert_eq!(payload_number(&recv(&mut observer).frame), i);
    }
    let stats = bus.hub.stats();
    let slow_stats = node_stats(&stats, "slow");
    assert!(slow_stats.dropped > 0, "{stats:?}");
    assert_eq!(node_stats(&stats, "observer").dropped, 0);
    assert_eq!(stats.dropped, slow_stats.dropped);
    assert_eq!(stats.frames, u64::from(N));
    // The slow node now gets exactly the frames that were not dropped, in order.
    let expected = N as u64 - slow_stats.dropped;
    let mut last_seq = 0;
    for _ in 0..expected {
        let r = recv(&mut slow);
        let seq = r.seq.unwrap();
        assert!(seq > last_seq);
        last_seq = seq;
    }
    assert!(slow.recv(Some(Duration::from_millis(50))).unwrap().is_none());
    let stats = bus.hub.stats();
    assert_eq!(node_stats(&stats, "slow").delivered, expected);
}

#[test]
fn block_mode_loses_nothing_and_throttles_senders() {
    let bus = bus_with(8, Backpressure::Block);
    let endpoint = bus.hub.unix_endpoint().unwrap();
    let mut slow = join(&bus, &opts("slow"));
    let mut fast = join(&bus, &opts("fast"));
    const N: u32 = 100_000;
    let (done_tx, done_rx) = mpsc::channel();
    let mut tx = HubClient::connect(&endpoint, &opts("tx")).unwrap();
    let sender = std::thread::spawn(move || {
        let frames: Vec<Frame> = (0..N).map(numbered).collect();
        for chunk in frames.chunks(1_000) {
            tx.send_batch(chunk).unwrap();
        }
        done_tx.send(()).unwrap();
        tx
    });
    // 100k frames (3.5 MB delivered) cannot fit in socket buffers: with the slow node not reading, the
    // sender must be held back.
    assert!(
        done_rx.recv_timeout(Duration::from_millis(300)).is_err(),
        "sender was not throttled"
    );
    let stats = bus.hub.stats();
    assert!(stats.frames < u64::from(N), "{stats:?}");
    // Drain both receivers (alternating, since the bus only moves when both have room).
    let mut got_slow = 0u32;
    let mut got_fast = 0u32;
    while got_slow < N || got_fast < N {
        while got_slow < N {
            match slow.recv(Some(Duration::ZERO)).unwrap() {
                Some(r) => {
                    assert_eq!(payload_number(&r.frame), got_slow);
                    assert_eq!(r.seq, Some(u64::from(got_slow) + 1));
                    got_slow += 1;
                }
                None => break,
            }
        }
        while got_fast < N {
            match fast.recv(Some(Duration::from_millis(1))).unwrap() {
                Some(r) => {
                    assert_eq!(payload_number(&r.frame), got_fast);
                    got_fast += 1;
                }
                None => break,
            }
        }
    }
    done_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    sender.join().unwrap();
    let stats = bus.hub.stats();
    assert_eq!(stats.dropped, 0);
    assert_eq!(stats.frames, u64::from(N));
}

#[test]
fn disconnect_marks_node_and_frees_it() {
    let bus = bus();
    let mut a = join(&bus, &opts("a"));
    let b = join(&bus, &opts("b"));
    let mut c = join(&bus, &opts("c"));
    drop(b);
    // Frames keep flowing to the remaining nodes.
    a.send(&frame("123#01")).unwrap();
    assert_eq!(recv(&mut c).frame, frame("123#01"));
    // The hub sees the close before or after the frame; wait for it through the stats.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats = bus.hub.stats();
        if !node_stats(&stats, "b").connected {
            assert!(node_stats(&stats, "a").connected && node_stats(&stats, "c").connected);
            break;
        }
        assert!(Instant::now() < deadline, "b never disconnected: {stats:?}");
        std::thread::yield_now();
    }
}

#[test]
fn garbage_disconnects_only_the_offender() {
    let bus = bus();
    let mut a = join(&bus, &opts("a"));
    let mut b = join(&bus, &opts("b"));
    // Garbage before any handshake.
    let mut raw = UnixStream::connect(&bus.path).unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(
        raw.read_to_end(&mut buf).unwrap(),
        0,
        "the hub closes the connection"
    );

    // A node that joins properly and then sends garbage.
    let mut hello = Vec::new();
    wire::encode_hello(
        &mut hello,
        &Hello {
            version: wire::PROTOCOL_VERSION,
            role: Role::Node,
            name: "bad".into(),
            recv_own: false,
            want_errors: false,
            fd: false,
            filters: vec![],
        },
    )
    .unwrap();
    let mut bad = UnixStream::connect(&bus.path).unwrap();
    bad.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    bad.write_all(&hello).unwrap();
    bad.write_all(&[0xFF; 64]).unwrap();
    let mut rest = Vec::new();
    // The welcome arrives, then EOF.
    bad.read_to_end(&mut rest).unwrap();
    let mut dec = Decoder::new("hub");
    dec.extend(&rest);
    assert!(matches!(
        dec.next_message().unwrap(),
        Some(Message::Welcome { .. })
    ));
    let stats = bus.hub.stats();
    assert!(!node_stats(&stats, "bad").connected);

    // The rest of the bus is unaffected.
    a.send(&frame("321#AA")).unwrap();
    assert_eq!(recv(&mut b).frame, frame("321#AA"));
}

#[test]
fn version_mismatch_is_refused_with_a_reason() {
    let bus = bus();
    let mut hello = Vec::new();
    wire::encode_hello(
        &mut hello,
        &Hello {
            version: 99,
            role: Role::Node,
            name: "future".into(),
            recv_own: false,
            want_errors: false,
            fd: false,
            filters: vec![],
        },
    )
    .unwrap();
    let mut raw = UnixStream::connect(&bus.path).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    raw.write_all(&hello).unwrap();
    let mut reply = Vec::new();
    raw.read_to_end(&mut reply).unwrap();
    let mut dec = Decoder::new("hub");
    dec.extend(&reply);
    match dec.next_message().unwrap() {
        Some(Message::Refused(reason)) => assert!(reason.contains("version 99"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn query_stats_over_unix_and_tcp() {
    let bus = bus();
    let mut a = join(&bus, &opts("a"));
    let mut b = HubClient::connect(&bus.hub.tcp_endpoint().unwrap(), &opts("b-tcp")).unwrap();
    a.send(&frame("123#")).unwrap();
    assert_eq!(recv(&mut b).frame, frame("123#"));
    b.send(&frame("124#")).unwrap();
    assert_eq!(recv(&mut a).frame, frame("124#"));
    for endpoint in [bus.hub.unix_endpoint().unwrap(), bus.hub.tcp_endpoint().unwrap()] {
        let stats = query_stats(&endpoint).unwrap();
        assert_eq!(stats, bus.hub.stats());
        assert_eq!(stats.frames, 2);
        assert_eq!(stats.nodes.len(), 2);
        assert_eq!(node_stats(&stats, "b-tcp").sent, 1);
    }
    match bus.hub.tcp_endpoint().unwrap() {
        Endpoint::Tcp(addr) => assert_ne!(addr.port(), 0),
        other => panic!("{other}"),
    }
}

#[test]
fn open_through_endpoint_uri() {
    let bus = bus();
    let uri = bus.hub.unix_endpoint().unwrap().to_string();
    let mut a = vcan::open(&uri.parse().unwrap(), &opts("a")).unwrap();
    let tcp_uri = bus.hub.tcp_endpoint().unwrap().to_string();
    let mut b = vcan::open(&tcp_uri.parse().unwrap(), &opts("b")).unwrap();
    assert_eq!(a.bus_name(), uri);
    assert_eq!(b.bus_name(), tcp_uri);
    assert!(a.raw_fd() >= 0);
    a.send(&frame("555#55")).unwrap();
    assert_eq!(b.recv(WAIT).unwrap().unwrap().frame, frame("555#55"));
}

#[test]
fn recv_timeouts_and_buffering() {
    let bus = bus();
    let mut a = join(&bus, &opts("a"));
    let mut b = join(&bus, &opts("b"));
    assert!(b.recv(Some(Duration::ZERO)).unwrap().is_none());
    let start = Instant::now();
    assert!(b.recv(Some(Duration::from_millis(30))).unwrap().is_none());
    assert!(start.elapsed() >= Duration::from_millis(30));
    a.send_batch(&[frame("001#"), frame("002#"), frame("003#")])
        .unwrap();
    assert_eq!(recv(&mut b).frame, frame("001#"));
    // One read brought all three in (they were written in one batch), so the rest is buffered... unless
    // the kernel split them; either way both are received.
    assert_eq!(recv(&mut b).frame, frame("002#"));
    assert_eq!(recv(&mut b).frame, frame("003#"));
    assert!(!b.has_buffered());
}

#[test]
fn shutdown_closes_clients_and_removes_the_socket() {
    let bus = bus();
    let mut a = join(&bus, &opts("a"));
    let mut b = join(&bus, &opts("b"));
    a.send(&frame("123#")).unwrap();
    assert_eq!(recv(&mut b).frame, frame("123#"));
    let path = bus.path.clone();
    assert!(path.exists());
    let Bus { hub, _dir, .. } = bus;
    let stats = hub.shutdown();
    assert!(!path.exists());
    assert_eq!(stats.frames, 1);
    assert!(stats.nodes.iter().all(|n| !n.connected));
    assert!(matches!(a.recv(WAIT), Err(BusError::Closed(_))));
    assert!(matches!(
        HubClient::connect(&Endpoint::Unix(path), &opts("late")),
        Err(BusError::Connect { .. })
    ));
}

#[test]
fn drop_removes_the_socket() {
    let bus = bus();
    let path = bus.path.clone();
    let Bus { hub, _dir, .. } = bus;
    drop(hub);
    assert!(!path.exists());
}

#[test]
fn stale_socket_is_replaced_but_live_sockets_and_files_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let config = HubConfig {
        unix_path: Some(path.clone()),
        ..HubConfig::default()
    };
    let hub = Hub::start(config.clone()).unwrap();
    // A second hub on a live socket is refused.
    assert!(matches!(Hub::start(config.clone()), Err(BusError::Io { .. })));
    let mut node = HubClient::connect(&hub.unix_endpoint().unwrap(), &opts("n")).unwrap();
    node.set_filters(&[]).unwrap();
    drop(hub);
    // A regular file is never removed.
    std::fs::write(&path, b"not a socket").unwrap();
    assert!(matches!(Hub::start(config), Err(BusError::Io { .. })));
    assert_eq!(std::fs::read(&path).unwrap(), b"not a socket");
}

#[test]
fn connect_errors_name_the_endpoint() {
    let endpoint = Endpoint::Unix("/nonexistent/vcan/bus.sock".into());
    match HubClient::connect(&endpoint, &opts("x")) {
        Err(e @ BusError::Connect { .. }) => {
            assert!(e.to_string().contains("unix:/nonexistent/vcan/bus.sock"))
        }
        other => panic!("{other:?}"),
    }
    // A TCP port nobody listens on (bind then drop to find one).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    assert!(matches!(
        HubClient::connect(&Endpoint::Tcp(port), &opts("x")),
        Err(BusError::Connect { .. })
    ));
    assert!(matches!(
        HubClient::connect(&Endpoint::SocketCan("can0".into()), &opts("x")),
        Err(BusError::InvalidEndpoint { .. })
    ));
    assert!(matches!(
        Hub::start(HubConfig::default()),
        Err(BusError::InvalidEndpoint { .. })
    ));
}

#[test]
fn a_non_hub_peer_fails_the_handshake_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fake.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 256];
        let _ = s.read(&mut buf).unwrap();
        s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").unwrap();
    });
    match HubClient::connect(&Endpoint::Unix(path), &opts("x")) {
        Err(BusError::Protocol { endpoint, reason }) => {
            assert!(endpoint.starts_with("unix:"));
            assert!(!reason.is_empty());
        }
        other => panic!("{other:?}"),
    }
    server.join().unwrap();
}

#[test]
fn tcp_clients_disable_nagle() {
    let bus = bus();
    let node = HubClient::connect(&bus.hub.tcp_endpoint().unwrap(), &opts("tcp")).unwrap();
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: valid fd and out-pointers of the right size.
    let rc = unsafe {
        libc::getsockopt(
            node.raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0);
    assert_ne!(value, 0, "TCP_NODELAY is off");
}

#[test]
fn public_types_can_cross_threads() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Hub>();
    send::<HubClient>();
    send::<vcan::kernel::KernelSocket>();
    send::<Box<dyn CanSocket>>();
}

#[test]
fn a_node_that_sends_and_leaves_at_once_loses_no_frame_under_flow_control() {
    // The sender takes its own echoes and never reads them: its queue fills, the hub pauses reading, and
    // the sender closes with frames still unread in its socket. They must still reach the bus (the hub
    // once closed such a connection on the failed write of an echo and dropped its unread input).
    let bus = bus_with(16, Backpressure::Block);
    let mut observer = join(&bus, &opts("observer"));
    const N: u32 = 2000;
    let sender = {
        let endpoint = bus.hub.unix_endpoint().unwrap();
        std::thread::spawn(move || {
            let mut node = HubClient::connect(
                &endpoint,
                &OpenOptions {
                    node_name: "sender".into(),
                    recv_own: true,
                    ..OpenOptions::default()
                },
            )
            .unwrap();
            for i in 0..N {
                node.send(&numbered(i)).unwrap();
            }
        })
    };
    for i in 0..N {
        let rx = recv(&mut observer);
        assert_eq!(rx.frame, numbered(i), "frame {i}");
    }
    sender.join().unwrap();
    assert_eq!(bus.hub.stats().nodes[1].sent, N as u64);
}

/// A signal that interrupts the client's wait for the hub's welcome (the SIGCHLD of a child process of the
/// caller, say) does not end the handshake: it waits on until the hub answers. (It used to fail at once
/// with "no answer to the handshake within 10 s".)
#[test]
fn a_signal_during_the_handshake_does_not_end_it() {
    extern "C" fn ignore(_: libc::c_int) {}
    // SIGUSR2 with a handler and without SA_RESTART: a blocking poll returns EINTR.
    // SAFETY: a zeroed sigaction with a handler that does nothing.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = ignore as *const () as usize;
        libc::sigaction(libc::SIGUSR2, &action, std::ptr::null_mut());
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("slow-hub.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let (hello_seen, hello_seen_rx) = mpsc::channel();
    let (answer, answer_rx) = mpsc::channel::<()>();
    // A hub that reads the hello and answers only when told to.
    let slow_hub = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut buf = [0u8; 512];
        let _ = stream.read(&mut buf).unwrap();
        hello_seen.send(()).unwrap();
        answer_rx.recv().unwrap();
        let mut out = Vec::new();
        wire::encode_welcome(&mut out, 7, "slow").unwrap();
        stream.write_all(&out).unwrap();
        stream
    });
    let (thread_id, thread_id_rx) = mpsc::channel();
    let endpoint = Endpoint::Unix(path.clone());
    let client = std::thread::spawn(move || {
        // SAFETY: pthread_self has no preconditions.
        thread_id.send(unsafe { libc::pthread_self() }).unwrap();
        vcan::open(&endpoint, &OpenOptions::default()).map(|_| ())
    });
    let client_thread = thread_id_rx.recv().unwrap();
    hello_seen_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the client says hello");
    // The client now waits for the welcome: interrupt that wait, spacing the signals so that each one
    // finds it waiting again.
    for _ in 0..5 {
        // SAFETY: the client thread is alive (it is waiting for the answer that is not sent yet).
        unsafe { libc::pthread_kill(client_thread, libc::SIGUSR2) };
        std::thread::sleep(Duration::from_millis(10));
    }
    answer.send(()).unwrap();
    let joined = client.join().unwrap();
    assert!(joined.is_ok(), "the handshake survives signals: {joined:?}");
    drop(slow_hub.join().unwrap());
}
