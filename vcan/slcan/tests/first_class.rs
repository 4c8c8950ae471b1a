//! Frames that enter through the slcan bridge are first-class bus frames: the hub's faults select them by
//! the bridge node's name, and other nodes' acceptance filters apply to them.

mod common;

use std::time::{Duration, Instant};

use common::{recv, Rig};
use vcan::fault::{DropMode, Fault, FaultKind, FrameSelector};
use vcan::{CanSocket, Filter, OpenOptions};

/// Waits until the hub has taken `n` frames from the node named `name`.
fn wait_sent(rig: &Rig, name: &str, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if rig
            .hub
            .stats()
            .nodes
            .iter()
            .any(|s| s.name == name && s.sent >= n)
        {
            return;
        }
        std::thread::yield_now();
    }
    panic!("node {name} did not send {n} frames: {:?}", rig.hub.stats().nodes);
}

#[test]
fn a_fault_selecting_the_bridge_node_drops_what_enters_through_it() {
    let rig = Rig::start();
    let mut node = rig.node("ecu", false);
    let mut tty = rig.tty();
    assert_eq!(tty.command("S6\rO\r"), "\r");
    assert_eq!(tty.reply(), "\r");
    let node_name = format!("slcan:{}", rig.link.display());
    let id = rig
        .hub
        .add_fault(Fault {
            kind: FaultKind::Drop(DropMode::All),
            select: FrameSelector {
                sender: Some("slcan:".into()),
                ..FrameSelector::all()
            },
            seed: 0,
            duration: None,
        })
        .unwrap();
    assert_eq!(tty.command("t1231AA\r"), "\r");
    wait_sent(&rig, &node_name, 1);
    let report = rig.hub.remove_fault(id).unwrap();
    assert_eq!((report.matched, report.affected), (1, 1), "{report:?}");
    // The fault is gone: the next frame arrives, and it is the first the node sees.
    assert_eq!(tty.command("t1231BB\r"), "\r");
    let rx = recv(&mut node);
    assert_eq!(rx.frame.payload(), &[0xBB]);
    assert_eq!(node.recv(Some(Duration::ZERO)).unwrap(), None);
}

#[test]
fn acceptance_filters_of_other_nodes_apply_to_bridged_frames() {
    let rig = Rig::start();
    let mut only_321 = vcan::client::HubClient::connect(
        &rig.hub.unix_endpoint().unwrap(),
        &OpenOptions {
            node_name: "only-321".into(),
            filters: vec![Filter::new(0x321, 0x7FF)],
            ..OpenOptions::default()
        },
    )
    .unwrap();
    let mut tty = rig.tty();
    assert_eq!(tty.command("S6\rO\r"), "\r");
    assert_eq!(tty.reply(), "\r");
    assert_eq!(tty.command("t1231AA\r"), "\r");
    assert_eq!(tty.command("t3211CC\r"), "\r");
    let rx = recv(&mut only_321);
    assert_eq!(rx.frame.id().map(|i| i.raw()), Some(0x321));
    assert_eq!(only_321.recv(Some(Duration::ZERO)).unwrap(), None);
}
