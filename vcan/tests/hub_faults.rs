//! Fault injection, injected frames and bus timing of the hub, over real Unix sockets.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use vcan::bittiming::{wire_time, Bitrate, Stuffing};
use vcan::bustime::BusTiming;
use vcan::client::HubClient;
use vcan::fault::{CorruptMode, DropMode, Fault, FaultKind, FrameSelector};
use vcan::hub::{Hub, HubConfig, TX_QUEUE_FRAMES};
use vcan::{BusError, CanId, CanSocket, FdFlags, Frame, OpenOptions, Received};

const WAIT: Option<Duration> = Some(Duration::from_secs(10));

struct Bus {
    hub: Hub,
    _dir: tempfile::TempDir,
}

fn bus(timing: Option<BusTiming>) -> Bus {
    let dir = tempfile::tempdir().unwrap();
    let path: PathBuf = dir.path().join("bus.sock");
    let hub = Hub::start(HubConfig {
        name: "faults".into(),
        unix_path: Some(path),
        timing,
        ..HubConfig::default()
    })
    .unwrap();
    Bus { hub, _dir: dir }
}

fn timing(nominal: u32) -> BusTiming {
    BusTiming {
        bitrate: Bitrate { nominal, data: None },
        stuffing: Stuffing::WorstCase,
    }
}

fn join_with(bus: &Bus, name: &str, f: impl FnOnce(&mut OpenOptions)) -> HubClient {
    let mut options = OpenOptions {
        node_name: name.into(),
        ..OpenOptions::default()
    };
    f(&mut options);
    HubClient::connect(&bus.hub.unix_endpoint().unwrap(), &options).unwrap()
}

fn join(bus: &Bus, name: &str) -> HubClient {
    join_with(bus, name, |_| {})
}

fn frame(text: &str) -> Frame {
    text.parse().unwrap()
}

fn recv(node: &mut HubClient) -> Received {
    node.recv(WAIT).unwrap().expect("a frame within the wait")
}

/// Frames until (and without) the first one equal to `marker`.
fn until(node: &mut HubClient, marker: &Frame) -> Vec<Frame> {
    let mut got = Vec::new();
    loop {
        let r = recv(node);
        if r.frame == *marker {
            return got;
        }
        got.push(r.frame);
    }
}

fn fault(kind: FaultKind, select: FrameSelector, seed: u64) -> Fault {
    Fault {
        kind,
        select,
        seed,
        duration: None,
    }
}

/// Waits until the hub has taken `n` frames from node `name` (its statistics are read by the hub
/// thread, so this is a condition on the hub's state, not a guess about time).
fn wait_sent(bus: &Bus, name: &str, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats = bus.hub.stats();
        if stats.nodes.iter().any(|s| s.name == name && s.sent >= n) {
            return;
        }
        assert!(Instant::now() < deadline, "hub never took {n} frames from {name}");
        std::thread::yield_now();
    }
}

fn run_drop(seed: u64) -> (Vec<Frame>, vcan::fault::FaultReport, u64) {
    let bus = bus(None);
    let mut tx = join(&bus, "hvac-controller");
    let mut rx = join(&bus, "recorder");
    bus.hub
        .add_fault(fault(
            FaultKind::Drop(DropMode::Percent(30.0)),
            FrameSelector::id(0x3A0),
            seed,
        ))
        .unwrap();
    for i in 0..300u16 {
        tx.send(&Frame::data(CanId::Standard(0x3A0), &i.to_le_bytes()).unwrap())
            .unwrap();
        tx.send(&frame("111#01")).unwrap();
    }
    let marker = frame("7FF#FF");
    tx.send(&marker).unwrap();
    let got = until(&mut rx, &marker);
    let reports = bus.hub.fault_reports();
    (got, reports[0].clone(), bus.hub.stats().dropped)
}

#[test]
fn a_seeded_drop_drops_the_same_frames_on_every_run_and_is_counted_apart_from_backpressure() {
    let (a, report, dropped) = run_drop(42);
    let (b, _, _) = run_drop(42);
    let (c, _, _) = run_drop(7);
    assert_eq!(a, b);
    assert_ne!(a, c);
    let kept = a
        .iter()
        .filter(|f| f.id() == Some(CanId::Standard(0x3A0)))
        .count() as u64;
    assert_eq!(a.len() as u64 - kept, 300, "frames of other ids are untouched");
    assert_eq!(report.matched, 300);
    assert_eq!(report.affected, 300 - kept);
    assert!((50..130).contains(&report.affected), "{}", report.affected);
    assert_eq!(report.description, "drop 30% of id 0x3A0 (seed 42)");
    assert_eq!(dropped, 0, "fault drops are not backpressure drops");
}

#[test]
fn delay_postpones_matching_frames_with_exact_timestamps() {
    let bus = bus(None);
    let mut tx = join(&bus, "a");
    let mut rx = join(&bus, "b");
    bus.hub
        .add_fault(fault(
            FaultKind::Delay {
                delay: Duration::from_millis(20),
                jitter: Duration::ZERO,
            },
            FrameSelector::id(0x100),
            0,
        ))
        .unwrap();
    tx.send(&frame("100#01")).unwrap();
    tx.send(&frame("200#02")).unwrap();
    let first = recv(&mut rx);
    let second = recv(&mut rx);
    assert_eq!(first.frame, frame("200#02"));
    assert_eq!(second.frame, frame("100#01"));
    let gap = second.timestamp_ns - first.timestamp_ns;
    assert!(
        (19_000_000..21_000_000).contains(&gap),
        "delayed by {gap} ns instead of 20 ms"
    );
    assert!(second.seq > first.seq);
    let report = bus.hub.remove_fault(vcan::fault::FaultId(1)).unwrap();
    assert_eq!((report.matched, report.affected), (1, 1));
    assert!(report.ended_ns.is_some());
}

#[test]
fn duplicate_corrupt_and_reorder_act_on_the_selected_frames() {
    let bus = bus(None);
    let mut tx = join(&bus, "a");
    let mut rx = join(&bus, "b");
    let dup = bus
        .hub
        .add_fault(fault(
            FaultKind::Duplicate { copies: 2 },
            FrameSelector::id(0x10),
            0,
        ))
        .unwrap();
    bus.hub
        .add_fault(fault(
            FaultKind::Corrupt {
                mask: vec![0x0F],
                mode: CorruptMode::Flip,
            },
            FrameSelector::id(0x20),
            0,
        ))
        .unwrap();
    bus.hub
        .add_fault(fault(FaultKind::Reorder { depth: 2 }, FrameSelector::id(0x30), 0))
        .unwrap();
    for text in ["010#AA", "020#A5", "030#01", "030#02", "030#03", "030#04"] {
        tx.send(&frame(text)).unwrap();
    }
    let marker = frame("7FF#");
    tx.send(&marker).unwrap();
    let got: Vec<String> = until(&mut rx, &marker).iter().map(Frame::to_string).collect();
    assert_eq!(
        got,
        ["010#AA", "010#AA", "010#AA", "020#AA", "030#02", "030#03", "030#01"]
    );
    // 030#04 is held; removing the reorder releases it.
    let reports = bus.hub.fault_reports();
    assert_eq!(reports.len(), 3);
    assert_eq!((reports[2].matched, reports[2].affected), (4, 2));
    assert!(bus.hub.remove_fault(dup).is_some());
    let reports = bus.hub.clear_faults();
    assert_eq!(reports.len(), 3);
    assert!(reports.iter().all(|r| r.ended_ns.is_some()));
    assert_eq!(recv(&mut rx).frame, frame("030#04"));
    assert!(bus.hub.fault_reports().is_empty());
}

#[test]
fn a_cut_link_isolates_the_node_both_ways_and_signals_bus_off_and_restart() {
    let bus = bus(None);
    let mut hvac = join_with(&bus, "hvac-controller", |o| o.want_errors = true);
    let mut body = join(&bus, "body");
    let id = bus
        .hub
        .add_fault(fault(
            FaultKind::CutLink {
                node: "hvac".into(),
                bus_off: true,
            },
            FrameSelector::all(),
            0,
        ))
        .unwrap();
    let busoff = recv(&mut hvac);
    assert_eq!(busoff.frame, Frame::error(0x40, [0; 8]).unwrap());
    body.send(&frame("123#01")).unwrap();
    hvac.send(&frame("321#01")).unwrap();
    wait_sent(&bus, "body", 1);
    wait_sent(&bus, "hvac-controller", 1);
    let report = bus.hub.remove_fault(id).unwrap();
    assert_eq!((report.matched, report.affected), (1, 1));
    let restarted = recv(&mut hvac);
    assert_eq!(restarted.frame, Frame::error(0x100, [0; 8]).unwrap());
    body.send(&frame("123#02")).unwrap();
    hvac.send(&frame("321#02")).unwrap();
    // The frames sent during the cut reached nobody.
    assert_eq!(recv(&mut hvac).frame, frame("123#02"));
    assert_eq!(recv(&mut body).frame, frame("321#02"));
}

#[test]
fn a_fault_with_a_duration_ends_by_itself() {
    let bus = bus(None);
    let mut tx = join(&bus, "a");
    let mut rx = join(&bus, "b");
    let mut drop_all = fault(FaultKind::Drop(DropMode::All), FrameSelector::all(), 0);
    drop_all.duration = Some(Duration::from_millis(30));
    bus.hub.add_fault(drop_all).unwrap();
    let started = Instant::now();
    // Keep sending until a frame gets through: only once the fault has ended by itself.
    let got = loop {
        tx.send(&frame("100#01")).unwrap();
        if let Some(r) = rx.recv(Some(Duration::from_millis(1))).unwrap() {
            break r;
        }
        assert!(started.elapsed() < Duration::from_secs(10));
    };
    assert!(started.elapsed() >= Duration::from_millis(30));
    let report = &bus.hub.fault_reports()[0];
    let ended = report.ended_ns.expect("ended by itself");
    assert_eq!(ended - report.started_ns, 30_000_000);
    assert!(got.timestamp_ns >= ended);
    assert!(report.affected > 0 && report.affected == report.matched);
}

#[test]
fn invalid_faults_are_refused_with_a_reason() {
    let bus = bus(None);
    let refused = |kind| match bus.hub.add_fault(fault(kind, FrameSelector::all(), 0)) {
        Err(BusError::InvalidFault { reason, .. }) => reason,
        other => panic!("{other:?}"),
    };
    assert!(refused(FaultKind::Drop(DropMode::Percent(150.0))).contains("150"));
    assert!(refused(FaultKind::BusLoad {
        percent: 20.0,
        id: CanId::Standard(0x7FF),
        dlc: 8
    })
    .contains("timing"));
    assert!(refused(FaultKind::Babble {
        id: CanId::Standard(0),
        data: vec![],
        rate: None
    })
    .contains("timing"));
    assert!(refused(FaultKind::CutLink {
        node: String::new(),
        bus_off: false
    })
    .contains("node"));
    assert!(bus.hub.fault_reports().is_empty());
}

#[test]
fn injected_frames_reach_nodes_that_accept_them() {
    let bus = bus(None);
    let mut errors = join_with(&bus, "errors", |o| o.want_errors = true);
    let mut plain = join(&bus, "plain");
    let error = Frame::error(0x40, [0; 8]).unwrap();
    bus.hub.inject(error.clone()).unwrap();
    bus.hub.inject(frame("0AA#01")).unwrap();
    let r = recv(&mut errors);
    assert_eq!(r.frame, error);
    assert!(!r.own);
    assert_eq!(recv(&mut errors).frame, frame("0AA#01"));
    // The node without an error mask only gets the data frame.
    assert_eq!(recv(&mut plain).frame, frame("0AA#01"));
}

#[test]
fn a_timed_bus_arbitrates_queued_frames_by_id_with_wire_time_timestamps() {
    let t = timing(10_000);
    let bus = bus(Some(t));
    let mut recorder = join_with(&bus, "recorder", |o| o.fd = true);
    let mut long_node = join_with(&bus, "long", |o| o.fd = true);
    let mut nodes: Vec<HubClient> = (0..4).map(|i| join(&bus, &format!("n{i}"))).collect();
    // 64 bytes at 10 kbit/s without bitrate switch: about 60 ms on the bus.
    let long = Frame::fd(CanId::Standard(0x7FF), &[0x55; 64], FdFlags::default()).unwrap();
    long_node.send(&long).unwrap();
    wait_sent(&bus, "long", 1);
    // While it is on the bus, four nodes queue frames, highest id first.
    let frames = [
        frame("300#03"),
        frame("04000000#02"),
        frame("100#R"),
        frame("100#01"),
    ];
    for (node, f) in nodes.iter_mut().zip(&frames) {
        node.send(f).unwrap();
    }
    let got: Vec<Received> = (0..5).map(|_| recv(&mut recorder)).collect();
    let order: Vec<String> = got.iter().map(|r| r.frame.to_string()).collect();
    assert_eq!(
        order[1..],
        ["100#01", "100#R", "04000000#02", "300#03"],
        "the long frame ended last at {}",
        got[0].timestamp_ns
    );
    assert_eq!(got[0].frame, long);
    for pair in got.windows(2) {
        let wire = wire_time(&pair[1].frame, t.bitrate, t.stuffing).as_nanos() as u64;
        assert_eq!(pair[1].timestamp_ns - pair[0].timestamp_ns, wire);
        assert!(pair[1].seq > pair[0].seq);
    }
}

#[test]
fn a_full_transmit_queue_blocks_the_sender_and_loses_nothing() {
    let t = timing(1_000_000);
    let bus = bus(Some(t));
    let mut rx = join(&bus, "rx");
    let endpoint = bus.hub.unix_endpoint().unwrap();
    const N: u32 = 3_000;
    let sender = std::thread::spawn(move || {
        let mut tx = HubClient::connect(
            &endpoint,
            &OpenOptions {
                node_name: "tx".into(),
                ..OpenOptions::default()
            },
        )
        .unwrap();
        for i in 0..N {
            tx.send(&Frame::data(CanId::Standard(0x100), &i.to_le_bytes()).unwrap())
                .unwrap();
        }
        tx
    });
    let mut last: Option<u64> = None;
    let mut deepest = 0;
    for i in 0..N {
        if i % 100 == 0 {
            // Frames taken from the sender but not yet on the bus: never more than its queue holds.
            let stats = bus.hub.stats();
            let sent = stats.nodes.iter().find(|n| n.name == "tx").map_or(0, |n| n.sent);
            let queued = sent.saturating_sub(stats.frames);
            assert!(queued <= TX_QUEUE_FRAMES as u64 + 1, "{queued} frames queued");
            deepest = deepest.max(queued);
        }
        let r = recv(&mut rx);
        assert_eq!(r.frame.payload()[..4], i.to_le_bytes());
        if let Some(last) = last {
            assert!(r.timestamp_ns - last >= wire_time(&r.frame, t.bitrate, t.stuffing).as_nanos() as u64);
        }
        last = Some(r.timestamp_ns);
    }
    sender.join().unwrap();
    assert!(deepest > 500, "the queue never filled ({deepest})");
    let stats = bus.hub.stats();
    assert_eq!(stats.dropped, 0);
    assert_eq!(stats.frames, u64::from(N));
}

#[test]
fn bus_load_fills_its_share_of_the_bus_time() {
    let t = timing(500_000);
    let bus = bus(Some(t));
    let mut rx = join(&bus, "rx");
    bus.hub
        .add_fault(fault(
            FaultKind::BusLoad {
                percent: 50.0,
                id: CanId::Standard(0x7FF),
                dlc: 8,
            },
            FrameSelector::all(),
            0,
        ))
        .unwrap();
    // 135 bits at 500 kbit/s = 270 µs; half the bus time: one frame every 540 µs.
    let got: Vec<Received> = (0..20).map(|_| recv(&mut rx)).collect();
    for pair in got.windows(2) {
        assert_eq!(pair[1].frame, frame("7FF#0000000000000000"));
        assert_eq!(pair[1].timestamp_ns - pair[0].timestamp_ns, 540_000);
    }
    // Without a timing, the load cannot work: switching it off is refused while it runs.
    assert!(matches!(
        bus.hub.set_timing(None),
        Err(BusError::InvalidTiming(_))
    ));
    let reports = bus.hub.clear_faults();
    assert!(reports[0].affected >= 20);
    bus.hub.set_timing(None).unwrap();
}

#[test]
fn a_babbler_starves_higher_ids_until_it_stops() {
    let t = timing(100_000);
    let bus = bus(Some(t));
    let mut rx = join(&bus, "rx");
    let mut victim = join(&bus, "victim");
    let mut babble = fault(
        FaultKind::Babble {
            id: CanId::Standard(0),
            data: vec![0xBA],
            rate: None,
        },
        FrameSelector::all(),
        0,
    );
    babble.duration = Some(Duration::from_millis(50));
    bus.hub.add_fault(babble).unwrap();
    assert_eq!(recv(&mut rx).frame, frame("000#BA"));
    victim.send(&frame("100#01")).unwrap();
    let mut babbled = 1;
    let r = loop {
        let r = recv(&mut rx);
        if r.frame != frame("000#BA") {
            break r;
        }
        babbled += 1;
    };
    assert_eq!(r.frame, frame("100#01"));
    let report = &bus.hub.fault_reports()[0];
    let ended = report.ended_ns.unwrap();
    assert!(
        r.timestamp_ns >= ended,
        "the victim got through while the babbler ran"
    );
    // Back to back: 50 ms of frames of wire_time each (give or take the one on the bus at the end).
    let per = wire_time(&frame("000#BA"), t.bitrate, t.stuffing).as_nanos() as u64;
    let expected = 50_000_000 / per;
    assert!(
        babbled + 1 >= expected && babbled <= expected + 2,
        "{babbled} vs {expected}"
    );
}

#[test]
fn timing_can_be_switched_on_and_off_at_run_time() {
    let bus = bus(None);
    let mut tx = join(&bus, "a");
    let mut rx = join_with(&bus, "rx", |o| o.want_errors = true);
    assert!(matches!(
        bus.hub.set_timing(Some(timing(0))),
        Err(BusError::InvalidTiming(_))
    ));
    let t = timing(10_000);
    bus.hub.set_timing(Some(t)).unwrap();
    // One node's queue is FIFO: 0x200 goes first although 0x100 would win arbitration.
    tx.send(&frame("200#01")).unwrap();
    tx.send(&frame("100#02")).unwrap();
    let first = recv(&mut rx);
    let second = recv(&mut rx);
    assert_eq!(
        (first.frame.clone(), second.frame.clone()),
        (frame("200#01"), frame("100#02"))
    );
    let wire = wire_time(&second.frame, t.bitrate, t.stuffing).as_nanos() as u64;
    assert_eq!(second.timestamp_ns - first.timestamp_ns, wire);
    // The hub's own frames arbitrate too; an injected error frame is delivered at its end of frame.
    let error = Frame::error(0x40, [0; 8]).unwrap();
    bus.hub.inject(error.clone()).unwrap();
    let r = recv(&mut rx);
    assert_eq!(r.frame, error);
    assert!(r.timestamp_ns > second.timestamp_ns);
    bus.hub.set_timing(None).unwrap();
    tx.send(&frame("300#03")).unwrap();
    assert_eq!(recv(&mut rx).frame, frame("300#03"));
}
