//! Integration tests of the cannelloni bridge over real UDP sockets on loopback and real hubs: two
//! buses linked both ways, losses and reordering introduced by a relay and counted, malformed and
//! foreign datagrams rejected while the bridge keeps working, a raw peer reading MTU-sized datagrams, and
//! stopping.

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vcan::bridge::{wait_readable, Bridge, BridgeReport, StopSignal, Wake};
use vcan::client::HubClient;
use vcan::frame::FD_LENGTHS;
use vcan::hub::{Hub, HubConfig, HubStats};
use vcan::{CanId, CanSocket, Endpoint, FdFlags, Frame, OpenOptions};
use vcan_cannelloni::codec::{self, Packet};
use vcan_cannelloni::{CannelloniBridge, CannelloniConfig};

const WAIT: Duration = Duration::from_secs(10);

struct Bus {
    hub: Hub,
    _dir: tempfile::TempDir,
}

impl Bus {
    fn new(name: &str) -> Bus {
        let dir = tempfile::tempdir().unwrap();
        let path: PathBuf = dir.path().join("bus.sock");
        let hub = Hub::start(HubConfig {
            name: name.into(),
            unix_path: Some(path),
            ..HubConfig::default()
        })
        .unwrap();
        Bus { hub, _dir: dir }
    }

    fn endpoint(&self) -> Endpoint {
        self.hub.unix_endpoint().unwrap()
    }

    fn node(&self, name: &str) -> HubClient {
        let options = OpenOptions {
            node_name: name.into(),
            fd: true,
            ..OpenOptions::default()
        };
        HubClient::connect(&self.endpoint(), &options).unwrap()
    }

    /// Waits (by asking the hub, at most [`WAIT`]) until `node` is listed as disconnected.
    fn wait_left(&self, node: &str) -> HubStats {
        let deadline = Instant::now() + WAIT;
        loop {
            let stats = self.hub.stats();
            let entry = stats.nodes.iter().find(|n| n.name == node);
            assert!(entry.is_some(), "{node} never joined: {stats:?}");
            if entry.is_some_and(|n| !n.connected) {
                return stats;
            }
            assert!(Instant::now() < deadline, "{node} still on the bus: {stats:?}");
            std::thread::yield_now();
        }
    }
}

fn loopback() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").unwrap()
}

fn config(remote: SocketAddr, bus: &Bus, fd: bool) -> CannelloniConfig {
    CannelloniConfig {
        fd,
        ..CannelloniConfig::new("127.0.0.1:0".parse().unwrap(), remote, bus.endpoint())
    }
}

/// Frame `i` of a mix of classic, extended, remote and CAN FD frames.
fn mixed(i: u32) -> Frame {
    let mut bytes = [0xA5u8; 8];
    bytes[..4].copy_from_slice(&i.to_le_bytes());
    match i % 5 {
        0 => Frame::data(CanId::Standard((i % 0x800) as u16), &bytes[..(i % 9) as usize]).unwrap(),
        1 => Frame::data(CanId::Extended(0x1000_0000 | i), &bytes).unwrap(),
        2 if i.is_multiple_of(2) => {
            Frame::remote(CanId::Standard((i % 0x800) as u16), (i % 9) as u8).unwrap()
        }
        2 => Frame::remote(CanId::Extended(i), (i % 9) as u8).unwrap(),
        3 => {
            let len = FD_LENGTHS[(i % 16) as usize];
            let data: Vec<u8> = (0..len).map(|k| (i as usize + k) as u8).collect();
            let flags = FdFlags {
                brs: i.is_multiple_of(2),
                esi: i.is_multiple_of(3),
            };
            Frame::fd(CanId::Standard((i % 0x800) as u16), &data, flags).unwrap()
        }
        _ => Frame::fd(CanId::Extended(i), &[i as u8; 64], FdFlags::default()).unwrap(),
    }
}

/// A classic frame numbered `i` in its first two bytes.
fn numbered(i: u16) -> Frame {
    Frame::data(CanId::Standard(i % 0x800), &i.to_le_bytes()).unwrap()
}

fn number(frame: &Frame) -> u16 {
    let p = frame.payload();
    u16::from_le_bytes([p[0], p[1]])
}

fn recv_frame(node: &mut HubClient) -> Frame {
    node.recv(Some(WAIT))
        .unwrap()
        .expect("a frame within the wait")
        .frame
}

fn node_report(report: &BridgeReport) -> &vcan::bridge::BridgeNodeReport {
    assert_eq!(report.nodes.len(), 1, "{report:?}");
    &report.nodes[0]
}

#[test]
fn two_hubs_linked_both_ways_carry_every_frame_in_order() {
    let bus_a = Bus::new("a");
    let bus_b = Bus::new("b");
    let (sock_a, sock_b) = (loopback(), loopback());
    let (addr_a, addr_b) = (sock_a.local_addr().unwrap(), sock_b.local_addr().unwrap());
    let mut bridge_a = CannelloniBridge::start_on(sock_a, config(addr_b, &bus_a, true)).unwrap();
    let mut bridge_b = CannelloniBridge::start_on(sock_b, config(addr_a, &bus_b, true)).unwrap();
    assert_eq!(bridge_a.local_addr(), addr_a);
    assert_eq!(bridge_a.protocol(), "cannelloni");
    assert_eq!(bridge_a.address(), format!("udp {addr_a} → {addr_b}"));

    let name_on_a = format!("cannelloni:127.0.0.1:{}", addr_b.port());
    let name_on_b = format!("cannelloni:127.0.0.1:{}", addr_a.port());
    assert!(bus_a
        .hub
        .stats()
        .nodes
        .iter()
        .any(|n| n.name == name_on_a && n.connected));
    assert!(bus_b
        .hub
        .stats()
        .nodes
        .iter()
        .any(|n| n.name == name_on_b && n.connected));

    const N: u32 = 1000;
    let sent_a: Vec<Frame> = (0..N).map(mixed).collect();
    let sent_b: Vec<Frame> = (0..N).map(|i| mixed(i + 7)).collect();
    let node_a = bus_a.node("node-a");
    let node_b = bus_b.node("node-b");
    let started = Instant::now();
    // Both directions at once: each node sends its burst (half in batches, half frame by frame) and then
    // takes the other's, so each bridge carries traffic both ways at the same time.
    let burst = |mut node: HubClient, frames: Vec<Frame>, expect: usize| {
        std::thread::spawn(move || {
            for (k, chunk) in frames.chunks(50).enumerate() {
                if k % 2 == 0 {
                    node.send_batch(chunk).unwrap();
                } else {
                    for frame in chunk {
                        node.send(frame).unwrap();
                    }
                }
            }
            let mut got = Vec::new();
            while got.len() < expect {
                match node.recv(Some(WAIT)).unwrap() {
                    Some(received) => got.push(received.frame),
                    None => break,
                }
            }
            got
        })
    };
    let on_a = burst(node_a, sent_a.clone(), sent_b.len());
    let on_b = burst(node_b, sent_b.clone(), sent_a.len());
    // What each node received.
    let (got_a, got_b) = (on_a.join().unwrap(), on_b.join().unwrap());
    for (got, sent, what) in [(&got_b, &sent_a, "A → B"), (&got_a, &sent_b, "B → A")] {
        assert_eq!(
            got.len(),
            sent.len(),
            "{what}: {:#?}\n{:#?}\n{:#?}\n{:#?}\nafter {:?}",
            bridge_a.report(),
            bridge_b.report(),
            bus_a.hub.stats(),
            bus_b.hub.stats(),
            started.elapsed()
        );
        assert_eq!(got, sent, "{what}");
    }

    let report_a = bridge_a.stop();
    let report_b = bridge_b.stop();
    for (report, name) in [(&report_a, &name_on_a), (&report_b, &name_on_b)] {
        let node = node_report(report);
        assert_eq!(&node.node, name);
        assert_eq!(
            (node.to_bus, node.to_peer),
            (u64::from(N), u64::from(N)),
            "{report:?}"
        );
        assert_eq!(
            (node.rejected, node.lost, node.reordered, node.duplicated),
            (0, 0, 0, 0)
        );
        assert!(!node.connected);
    }
    assert_eq!(
        report_a.lines(),
        vec![format!(
            "{name_on_a} (cannelloni): 1000 to the bus, 1000 to the peer"
        )]
    );
    // The bridge nodes left both buses.
    let stats_a = bus_a.wait_left(&name_on_a);
    let bridge_node = stats_a.nodes.iter().find(|n| n.name == name_on_a).unwrap();
    assert_eq!(bridge_node.sent, u64::from(N));
    bus_b.wait_left(&name_on_b);
}

/// What the relay did to the datagrams from A to B.
#[derive(Default)]
struct RelayCounts {
    forwarded: AtomicU64,
    dropped: AtomicU64,
    swapped: AtomicU64,
    /// Frames in the datagram held back for a swap.
    held_frames: AtomicU64,
    /// The numbers of the frames in dropped datagrams.
    dropped_frames: std::sync::Mutex<Vec<u16>>,
}

/// A UDP relay between two bridges: from A to B it drops every 10th datagram and swaps the 4th and 5th
/// of every ten, except the datagram holding the frame numbered `last` (the test's final frame, which
/// shows every earlier loss as a gap and releases a held datagram); from B to A it forwards everything.
struct Relay {
    stop: StopSignal,
    thread: Option<JoinHandle<()>>,
    counts: Arc<RelayCounts>,
}

impl Relay {
    fn start(
        side_a: UdpSocket,
        side_b: UdpSocket,
        addr_a: SocketAddr,
        addr_b: SocketAddr,
        last: u16,
    ) -> Relay {
        let stop = StopSignal::new().unwrap();
        let counts = Arc::new(RelayCounts::default());
        let (stop2, counts2) = (stop.clone(), Arc::clone(&counts));
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65_536];
            let mut index = 0u64;
            let mut held: Option<Vec<u8>> = None;
            let fds = [side_a.as_raw_fd(), side_b.as_raw_fd()];
            loop {
                let ready = match wait_readable(&stop2, &fds, None).unwrap() {
                    Wake::Stop => return,
                    Wake::Ready(ready) => ready,
                };
                if ready[0] {
                    let (n, from) = side_a.recv_from(&mut buf).unwrap();
                    assert_eq!(from, addr_a);
                    let datagram = buf[..n].to_vec();
                    let Ok(Packet::Data { frames, .. }) = codec::decode(&datagram) else {
                        panic!("the bridge sent a bad datagram");
                    };
                    let faulty = !frames.iter().any(|f| number(f) == last);
                    let slot = index % 10;
                    index += 1;
                    if held.is_none() && faulty && slot == 9 {
                        counts2
                            .dropped_frames
                            .lock()
                            .unwrap()
                            .extend(frames.iter().map(number));
                        counts2.dropped.fetch_add(1, Ordering::SeqCst);
                    } else if held.is_none() && faulty && slot == 3 {
                        counts2.held_frames.store(frames.len() as u64, Ordering::SeqCst);
                        held = Some(datagram);
                    } else {
                        side_b.send_to(&datagram, addr_b).unwrap();
                        counts2.forwarded.fetch_add(1, Ordering::SeqCst);
                        if let Some(late) = held.take() {
                            side_b.send_to(&late, addr_b).unwrap();
                            counts2.forwarded.fetch_add(1, Ordering::SeqCst);
                            counts2.swapped.fetch_add(1, Ordering::SeqCst);
                            counts2.held_frames.store(0, Ordering::SeqCst);
                        }
                    }
                }
                if ready[1] {
                    let (n, _) = side_b.recv_from(&mut buf).unwrap();
                    side_a.send_to(&buf[..n], addr_a).unwrap();
                }
            }
        });
        Relay {
            stop,
            thread: Some(thread),
            counts,
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.raise();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[test]
fn losses_and_reordering_between_two_bridges_are_counted_exactly() {
    let bus_a = Bus::new("a");
    let bus_b = Bus::new("b");
    let (relay_a, relay_b) = (loopback(), loopback());
    let (relay_a_addr, relay_b_addr) = (relay_a.local_addr().unwrap(), relay_b.local_addr().unwrap());
    // A small MTU (72-byte payloads, at most 9 of these 2-byte frames a datagram) and no batching delay make
    // many datagrams, so the sequence numbers wrap several times.
    let mut bridge_a = CannelloniBridge::start(CannelloniConfig {
        mtu: 100,
        batch_timeout: Duration::ZERO,
        ..config(relay_a_addr, &bus_a, false)
    })
    .unwrap();
    let mut bridge_b = CannelloniBridge::start(config(relay_b_addr, &bus_b, false)).unwrap();
    const N: u16 = 3000;
    let relay = Relay::start(relay_a, relay_b, bridge_a.local_addr(), bridge_b.local_addr(), N);

    let mut sender = bus_a.node("sender");
    let mut receiver = bus_b.node("receiver");
    let mut got: BTreeMap<u16, usize> = BTreeMap::new();
    // At most WINDOW frames in flight (sent, not yet received, dropped or held by the relay), so that
    // no socket buffer on the way overflows and adds losses of its own, however slow the machine.
    const WINDOW: usize = 200;
    let mut next = 0u16;
    let deadline = Instant::now() + WAIT;
    while !got.contains_key(&N) {
        let accounted = got.len()
            + relay.counts.dropped_frames.lock().unwrap().len()
            + relay.counts.held_frames.load(Ordering::SeqCst) as usize;
        while next <= N && usize::from(next) < accounted + WINDOW {
            sender.send(&numbered(next)).unwrap();
            next += 1;
        }
        if let Some(received) = receiver.recv(Some(Duration::from_millis(10))).unwrap() {
            *got.entry(number(&received.frame)).or_default() += 1;
        }
        assert!(Instant::now() < deadline, "stuck after sending {next} frames");
    }
    let dropped_frames = relay.counts.dropped_frames.lock().unwrap().clone();
    let expected_frames = usize::from(N) + 1 - dropped_frames.len();
    while got.values().sum::<usize>() < expected_frames {
        *got.entry(number(&recv_frame(&mut receiver))).or_default() += 1;
    }
    assert!(receiver.recv(Some(Duration::from_millis(50))).unwrap().is_none());

    let dropped = relay.counts.dropped.load(Ordering::SeqCst);
    let swapped = relay.counts.swapped.load(Ordering::SeqCst);
    let forwarded = relay.counts.forwarded.load(Ordering::SeqCst);
    assert!(
        dropped >= 10 && swapped >= 10,
        "dropped {dropped}, swapped {swapped}"
    );
    assert!(
        forwarded > 256,
        "only {forwarded} datagrams: the sequence numbers did not wrap"
    );
    // Every frame not in a dropped datagram arrived exactly once.
    let expected: Vec<u16> = (0..=N).filter(|i| !dropped_frames.contains(i)).collect();
    assert_eq!(got.keys().copied().collect::<Vec<_>>(), expected);
    assert!(got.values().all(|&n| n == 1));

    let report_b = bridge_b.stop();
    let node = node_report(&report_b);
    assert_eq!(node.lost, dropped, "{report_b:?}");
    assert_eq!(node.reordered, swapped, "{report_b:?}");
    assert_eq!((node.duplicated, node.rejected), (0, 0));
    assert_eq!(node.to_bus, expected_frames as u64);
    assert!(
        node.errors.iter().any(|e| e.contains("lost between seq")),
        "{:?}",
        node.errors
    );
    assert!(
        node.errors.iter().any(|e| e.contains("arrived late")),
        "{:?}",
        node.errors
    );
    let report_a = bridge_a.stop();
    assert_eq!(node_report(&report_a).to_peer, u64::from(N) + 1);
}

/// A raw peer socket and a bridge linked to it.
struct RawPeer {
    bus: Bus,
    peer: UdpSocket,
    bridge: CannelloniBridge,
}

impl RawPeer {
    fn new(fd: bool, mtu: usize) -> RawPeer {
        let bus = Bus::new("raw");
        let peer = loopback();
        peer.set_read_timeout(Some(WAIT)).unwrap();
        let bridge = CannelloniBridge::start(CannelloniConfig {
            mtu,
            ..config(peer.local_addr().unwrap(), &bus, fd)
        })
        .unwrap();
        RawPeer { bus, peer, bridge }
    }

    fn send(&self, datagram: &[u8]) {
        self.peer.send_to(datagram, self.bridge.local_addr()).unwrap();
    }
}

fn data_datagram(seq: u8, frames: &[Frame]) -> Vec<u8> {
    let mut encoder = codec::Encoder::new(1472, true).unwrap();
    encoder.set_next_seq(seq);
    let mut datagrams = encoder.encode(frames);
    assert_eq!(datagrams.len(), 1);
    datagrams.remove(0).1
}

#[test]
fn malformed_and_foreign_datagrams_are_rejected_and_the_bridge_keeps_working() {
    let raw = RawPeer::new(false, 1500);
    let mut node = raw.bus.node("listener");
    // The capture from cannelloni issue #37 (seq 0x23).
    raw.send(&[
        0x02, 0x00, 0x23, 0x00, 0x01, 0x99, 0xfa, 0x04, 0x4d, 0x08, 0x0c, 0x11, 0x01, 0x00, 0xf2, 0x1d, 0x0b,
        0x02,
    ]);
    let malformed: [&[u8]; 7] = [
        &[],
        &[3, 0, 0x24, 0, 0],
        &[2, 9, 0x24, 0, 0],
        &[2, 0, 0x24, 0, 2, 0, 0, 1, 0x23, 1, 0xAA],
        &[2, 0, 0x24, 0, 1, 0, 0, 1, 0x23, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        &[2, 0, 0x24, 0, 1, 0, 0, 1, 0x23, 0, 0xEE],
        &[2, 1, 0x24, 0, 0],
    ];
    for datagram in malformed {
        raw.send(datagram);
    }
    // A CAN FD frame (this bridge is classic only) next to a classic one.
    let fd_frame = Frame::fd(CanId::Standard(0x10), &[1; 12], FdFlags::default()).unwrap();
    let classic = Frame::data(CanId::Standard(0x11), &[2]).unwrap();
    raw.send(&data_datagram(0x24, &[fd_frame, classic.clone()]));
    // A valid datagram from a stranger.
    let stranger = loopback();
    stranger
        .send_to(&data_datagram(0, &[numbered(999)]), raw.bridge.local_addr())
        .unwrap();
    let last = Frame::data(CanId::Standard(0x321), &[0xDE, 0xAD, 0xBE, 0xEF]).unwrap();
    raw.send(&data_datagram(0x25, std::slice::from_ref(&last)));

    let capture = Frame::data(
        CanId::Extended(0x19FA_044D),
        &[0x0c, 0x11, 0x01, 0x00, 0xf2, 0x1d, 0x0b, 0x02],
    )
    .unwrap();
    assert_eq!(recv_frame(&mut node), capture);
    assert_eq!(recv_frame(&mut node), classic);
    assert_eq!(recv_frame(&mut node), last);

    let report = raw.bridge.report();
    let n = node_report(&report);
    assert_eq!(n.rejected, 9, "{:#?}", n.errors);
    assert_eq!(n.to_bus, 3);
    assert_eq!((n.lost, n.reordered, n.duplicated), (0, 0, 0));
    assert!(n.connected);
    let errors = n.errors.join("\n");
    for needle in [
        "shorter than the 5-byte header",
        "version byte (offset 0) is 3",
        "op code byte (offset 1) is 9",
        "frame 1 of 2: can_id at offset 11 needs 4 bytes",
        "len byte 0x09 at offset 9: classic CAN length above 8",
        "1 bytes after the last of 1 frames",
        "ACK datagram (seq 36)",
        "the bridge runs without CAN FD",
        &format!("from {}", stranger.local_addr().unwrap()),
    ] {
        assert!(errors.contains(needle), "no `{needle}` in:\n{errors}");
    }
}

#[test]
fn bus_frames_reach_a_raw_peer_in_numbered_mtu_sized_datagrams() {
    let raw = RawPeer::new(true, 103);
    let mut node = raw.bus.node("talker");
    let frames: Vec<Frame> = (0..40).map(mixed).collect();
    node.send_batch(&frames).unwrap();
    let mut got = Vec::new();
    let mut seqs = Vec::new();
    let mut buf = [0u8; 2048];
    while got.len() < frames.len() {
        let (n, from) = raw.peer.recv_from(&mut buf).unwrap();
        assert_eq!(from, raw.bridge.local_addr());
        assert!(n <= 103 - 28, "datagram of {n} bytes");
        match codec::decode(&buf[..n]).unwrap() {
            Packet::Data { seq, frames } => {
                seqs.push(seq);
                got.extend(frames);
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(got, frames);
    let expected: Vec<u8> = (0..seqs.len() as u8).collect();
    assert_eq!(seqs, expected);
    let mut bridge = raw.bridge;
    let report = bridge.stop();
    assert_eq!(node_report(&report).to_peer, 40);
    raw.bus
        .wait_left(&format!("cannelloni:{}", raw.peer.local_addr().unwrap()));
}

#[test]
fn a_too_small_mtu_is_refused() {
    let bus = Bus::new("mtu");
    let peer = loopback();
    let err = CannelloniBridge::start(CannelloniConfig {
        mtu: 100,
        ..config(peer.local_addr().unwrap(), &bus, true)
    })
    .unwrap_err();
    assert!(err.to_string().contains("MTU 100"), "{err}");
    let err = CannelloniBridge::start(CannelloniConfig {
        mtu: 20,
        ..config(peer.local_addr().unwrap(), &bus, false)
    })
    .unwrap_err();
    assert!(err.to_string().contains("smaller than the 28 bytes"), "{err}");
}

#[test]
fn a_bridge_whose_hub_goes_away_ends_and_reports_it() {
    let bus = Bus::new("gone");
    let peer = loopback();
    let mut bridge = CannelloniBridge::start(config(peer.local_addr().unwrap(), &bus, false)).unwrap();
    drop(bus);
    // The thread sees the hub's connection close and ends on its own (asked, at most WAIT).
    let deadline = Instant::now() + WAIT;
    while node_report(&bridge.report()).connected {
        assert!(
            Instant::now() < deadline,
            "the bridge did not notice the hub leaving"
        );
        std::thread::yield_now();
    }
    let report = bridge.stop();
    let node = node_report(&report);
    assert!(
        node.errors.iter().any(|e| e.contains("bridge stopped")),
        "{:?}",
        node.errors
    );
}
