//! The emulated slcan adapter end to end: a real hub, the port, and the test as the host tool on the
//! linked tty; a plain hub node on the other side.

mod common;

use std::time::{Duration, Instant};

use common::{recv, send, Rig, Tty, WAIT};
use vcan::bridge::Bridge;
use vcan::{CanId, CanSocket, FdFlags, Frame};
use vcan_slcan::protocol::timestamp_ms;
use vcan_slcan::{ChannelMode, SlcanConfig, SlcanPort};

fn std_id(id: u32) -> CanId {
    CanId::standard(id).unwrap()
}

fn ext_id(id: u32) -> CanId {
    CanId::extended(id).unwrap()
}

#[test]
fn classic_frames_cross_both_ways() {
    let rig = Rig::start();
    let mut node = rig.node("tester", false);
    let mut tty = rig.tty();
    assert_eq!(tty.command("S6\rO\r"), "\r");
    assert_eq!(tty.reply(), "\r");
    let status = rig.port.status();
    assert_eq!(status.mode, ChannelMode::Open);
    assert_eq!(status.bitrate, Some(500_000));

    assert_eq!(tty.command("t1232AABB\r"), "\r");
    let got = recv(&mut node);
    assert_eq!(got.frame, Frame::data(std_id(0x123), &[0xAA, 0xBB]).unwrap());

    send(&mut node, &Frame::data(std_id(0x321), &[1, 2, 3]).unwrap());
    assert_eq!(tty.reply(), "t3213010203\r");

    let report = rig.port.report();
    assert_eq!(report.protocol, "slcan");
    assert_eq!(report.nodes.len(), 1);
    assert_eq!((report.nodes[0].to_bus, report.nodes[0].to_peer), (1, 1));
    assert_eq!(report.nodes[0].rejected, 0);
}

#[test]
fn extended_remote_and_fd_frames_round_trip() {
    let rig = Rig::start();
    let mut node = rig.node("tester", false);
    let mut tty = rig.tty();
    tty.open_channel();
    assert_eq!(tty.command("Y2\r"), "\x07", "no data bitrate change while open");
    assert_eq!(tty.command("C\r"), "\r");
    assert_eq!(tty.command("Y2\r"), "\r");
    assert_eq!(tty.command("O\r"), "\r");
    assert_eq!(rig.port.status().data_bitrate, Some(2_000_000));

    let brs = FdFlags {
        brs: true,
        esi: false,
    };
    let twelve: Vec<u8> = (1..=12).collect();
    let twelve_hex: String = twelve.iter().map(|b| format!("{b:02X}")).collect();
    let sixty_four: Vec<u8> = (0..64).collect();
    let sixty_four_hex: String = sixty_four.iter().map(|b| format!("{b:02x}")).collect();
    let host_to_bus = [
        (
            "T1ABCDEF021122".to_string(),
            Frame::data(ext_id(0x1ABC_DEF0), &[0x11, 0x22]).unwrap(),
        ),
        ("r7FF4".to_string(), Frame::remote(std_id(0x7FF), 4).unwrap()),
        ("R000001230".to_string(), Frame::remote(ext_id(0x123), 0).unwrap()),
        (
            format!("d4569{twelve_hex}"),
            Frame::fd(std_id(0x456), &twelve, FdFlags::default()).unwrap(),
        ),
        (
            format!("b456F{sixty_four_hex}"),
            Frame::fd(std_id(0x456), &sixty_four, brs).unwrap(),
        ),
        (
            "D1FFFFFFF0".to_string(),
            Frame::fd(ext_id(0x1FFF_FFFF), &[], FdFlags::default()).unwrap(),
        ),
        (
            format!("B000000019{twelve_hex}"),
            Frame::fd(ext_id(1), &twelve, brs).unwrap(),
        ),
    ];
    for (line, frame) in &host_to_bus {
        assert_eq!(tty.command(&format!("{line}\r")), "\r", "{line}");
        assert_eq!(recv(&mut node).frame, *frame, "{line}");
    }

    let bus_to_host = [
        (
            Frame::data(ext_id(0x0000_0042), &[0xFF]).unwrap(),
            "T000000421FF\r".to_string(),
        ),
        (Frame::remote(std_id(0x10), 8).unwrap(), "r0108\r".to_string()),
        (
            Frame::remote(ext_id(0x10), 2).unwrap(),
            "R000000102\r".to_string(),
        ),
        (
            Frame::fd(std_id(0x654), &twelve, FdFlags::default()).unwrap(),
            format!("d6549{twelve_hex}\r"),
        ),
        (
            Frame::fd(ext_id(0x654), &sixty_four, brs).unwrap(),
            format!("B00000654F{}\r", sixty_four_hex.to_uppercase()),
        ),
    ];
    for (frame, line) in &bus_to_host {
        send(&mut node, frame);
        assert_eq!(tty.reply(), *line);
    }
    let report = rig.port.report();
    assert_eq!(report.nodes[0].to_bus, host_to_bus.len() as u64);
    assert_eq!(report.nodes[0].to_peer, bus_to_host.len() as u64);
    assert_eq!(report.nodes[0].rejected, 1, "{:?}", report.nodes[0].errors);
}

#[test]
fn z1_adds_millisecond_timestamps_to_frame_lines() {
    let rig = Rig::start();
    let mut node = rig.node("tester", true);
    let mut tty = rig.tty();
    assert_eq!(tty.command("Z1\r"), "\r");
    tty.open_channel();
    assert!(rig.port.status().timestamps);

    send(&mut node, &Frame::data(std_id(0x100), &[0xAB]).unwrap());
    let echo = recv(&mut node);
    let line = tty.reply();
    let expected = timestamp_ms(echo.timestamp_ns);
    assert!(expected < 60_000);
    assert_eq!(line, format!("t1001AB{expected:04X}\r"));

    assert_eq!(tty.command("Z0\r"), "\r");
    send(&mut node, &Frame::data(std_id(0x100), &[0xAB]).unwrap());
    recv(&mut node);
    assert_eq!(tty.reply(), "t1001AB\r");
}

#[test]
fn a_closed_port_refuses_frames_and_passes_none_on() {
    let rig = Rig::start();
    let mut node = rig.node("tester", false);
    let mut tty = rig.tty();
    assert_eq!(tty.command("t1232AABB\r"), "\x07");
    send(&mut node, &Frame::data(std_id(0x321), &[1]).unwrap());
    tty.expect_silence(Duration::from_millis(300));

    tty.open_channel();
    assert_eq!(tty.command("C\r"), "\r");
    assert_eq!(tty.command("T000001230\r"), "\x07");
    assert!(
        node.recv(Some(Duration::from_millis(200))).unwrap().is_none(),
        "a refused frame reached the bus"
    );

    let report = rig.port.report();
    let node_report = &report.nodes[0];
    assert_eq!(node_report.rejected, 2);
    assert_eq!(node_report.to_bus, 0);
    assert!(
        node_report.errors[0].contains("`t1232AABB`") && node_report.errors[0].contains("closed"),
        "{:?}",
        node_report.errors
    );
}

#[test]
fn listen_only_receives_but_refuses_to_transmit() {
    let rig = Rig::start();
    let mut node = rig.node("tester", false);
    let mut tty = rig.tty();
    assert_eq!(tty.command("S4\rL\r"), "\r");
    assert_eq!(tty.reply(), "\r");
    assert_eq!(rig.port.status().mode, ChannelMode::ListenOnly);
    assert_eq!(rig.port.status().bitrate, Some(125_000));

    assert_eq!(tty.command("t1232AABB\r"), "\x07");
    send(&mut node, &Frame::data(std_id(0x7FF), &[]).unwrap());
    assert_eq!(tty.reply(), "t7FF0\r");
    assert!(node.recv(Some(Duration::from_millis(200))).unwrap().is_none());
    let report = rig.port.report();
    assert_eq!(report.nodes[0].rejected, 1);
    assert!(report.nodes[0].errors[0].contains("listen-only"));
}

#[test]
fn queries_and_configuration_commands_are_answered() {
    let rig = Rig::start();
    let mut tty = rig.tty();
    // Leading and empty lines and `\n` are tolerated without an answer.
    tty.send("\r\r\n");
    assert_eq!(tty.command("V\r"), "V1013\r");
    assert_eq!(tty.command("v\r\n"), "v1014\r");
    assert_eq!(tty.command("N\r"), "NVCAN\r");
    assert_eq!(tty.command("F\r"), "F00\r");
    assert_eq!(tty.command("s011C\r"), "\r");
    assert_eq!(rig.port.status().bitrate, Some(250_000));
    assert_eq!(rig.port.status().btr.as_deref(), Some("011C"));
    for ok in ["M00000000\r", "mFFFFFFFF\r", "X1\r", "Z0\r", "U1\r"] {
        assert_eq!(tty.command(ok), "\r", "{ok:?}");
    }
    for refused in ["X0\r", "P\r", "A\r", "Q\r"] {
        assert_eq!(tty.command(refused), "\x07", "{refused:?}");
    }
    assert_eq!(rig.port.report().nodes[0].rejected, 4);
}

#[test]
fn malformed_lines_are_refused_and_counted() {
    let rig = Rig::start();
    let mut node = rig.node("tester", false);
    let mut tty = rig.tty();
    tty.open_channel();
    let bad: Vec<Vec<u8>> = vec![
        b"t12\r".to_vec(),
        b"t1232AA\r".to_vec(),
        b"t8000\r".to_vec(),
        b"t1239AABBCCDDEEFF001122\r".to_vec(),
        b"T2000000000\r".to_vec(),
        b"d123A00\r".to_vec(),
        b"S9\r".to_vec(),
        b"Z5\r".to_vec(),
        vec![b't', 0xFF, 0xC3, 0x28, b'0', b'\r'],
        [vec![b'x'; 1000], b"\r".to_vec()].concat(),
    ];
    for line in &bad {
        tty.write(line);
        assert_eq!(tty.reply(), "\x07", "{:?}", line.escape_ascii().to_string());
    }
    // The port still works.
    assert_eq!(tty.command("t0011FF\r"), "\r");
    assert_eq!(recv(&mut node).frame, Frame::data(std_id(1), &[0xFF]).unwrap());

    let report = rig.port.report();
    let n = &report.nodes[0];
    assert_eq!(n.rejected, bad.len() as u64);
    assert_eq!(n.to_bus, 1);
    assert!(n.errors[0].contains("`t12`"), "{:?}", n.errors);
    assert!(n.errors[2].contains("0x800"), "{:?}", n.errors);
    assert!(n.errors[8].contains("\\xff"), "{:?}", n.errors);
    assert!(n.errors[9].contains("longer than"), "{:?}", n.errors);
}

#[test]
fn the_node_is_named_after_the_link_and_leaves_on_stop() {
    let mut rig = Rig::start();
    let name = format!("slcan:{}", rig.link.display());
    let stats = rig.hub.stats();
    let node = stats
        .nodes
        .iter()
        .find(|n| n.name == name)
        .unwrap_or_else(|| panic!("no node {name} in {stats:?}"));
    assert!(node.connected);
    assert_eq!(
        std::fs::read_link(&rig.link).unwrap(),
        rig.port.pty_path(),
        "the link points at the pty"
    );
    assert!(rig.port.pty_path().starts_with("/dev/pts"));
    assert_eq!(rig.port.link(), rig.link);
    assert_eq!(rig.port.address(), rig.link.display().to_string());

    let report = rig.port.stop();
    assert_eq!(report.nodes[0].node, name);
    assert!(!report.nodes[0].connected);
    assert!(
        std::fs::symlink_metadata(&rig.link).is_err(),
        "the link is removed"
    );
    let deadline = Instant::now() + WAIT;
    loop {
        let stats = rig.hub.stats();
        let gone = stats
            .nodes
            .iter()
            .find(|n| n.name == name)
            .is_some_and(|n| !n.connected);
        if gone {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the node is still on the bus: {stats:?}"
        );
        std::thread::yield_now();
    }
    // Stopping twice is harmless.
    assert_eq!(rig.port.stop().nodes.len(), 1);
}

#[test]
fn a_stale_link_is_replaced_and_other_files_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let hub = vcan::hub::Hub::start(vcan::hub::HubConfig {
        unix_path: Some(dir.path().join("hub.sock")),
        ..Default::default()
    })
    .unwrap();
    let link = dir.path().join("slcan0");
    std::os::unix::fs::symlink("/nonexistent/pts/99", &link).unwrap();
    let port = SlcanPort::start(SlcanConfig {
        link: link.clone(),
        hub: hub.unix_endpoint().unwrap(),
    })
    .unwrap();
    assert_eq!(std::fs::read_link(&link).unwrap(), port.pty_path());
    drop(port);
    assert!(std::fs::symlink_metadata(&link).is_err());

    let file = dir.path().join("a-file");
    std::fs::write(&file, "keep me").unwrap();
    let err = SlcanPort::start(SlcanConfig {
        link: file.clone(),
        hub: hub.unix_endpoint().unwrap(),
    })
    .unwrap_err();
    assert!(err.to_string().contains("not a symbolic link"), "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
}

#[test]
fn a_tool_can_close_and_reopen_the_port() {
    let rig = Rig::start();
    let mut node = rig.node("tester", false);
    {
        let mut tty = rig.tty();
        tty.open_channel();
        assert_eq!(tty.command("t1230\r"), "\r");
        recv(&mut node);
        // Closed without `C`; the bus keeps talking to nobody.
    }
    send(&mut node, &Frame::data(std_id(0x200), &[2]).unwrap());
    let mut tty = rig.tty();
    // The channel is still open: the frame sent meanwhile waits, then new ones follow.
    assert_eq!(tty.reply(), "t200102\r");
    assert_eq!(tty.command("t1240\r"), "\r");
    assert_eq!(recv(&mut node).frame, Frame::data(std_id(0x124), &[]).unwrap());
}

#[test]
fn closing_the_channel_discards_lines_the_host_did_not_read() {
    let rig = Rig::start();
    let mut node = rig.node("tester", false);
    let mut tty = rig.tty();
    tty.open_channel();
    send(&mut node, &Frame::data(std_id(0x300), &[3]).unwrap());
    tty.wait_unread();
    let unread = tty.unread();
    assert_eq!(unread, "t300103\r".len());
    tty.send("C\r");
    // Not reading until the adapter has acted on `C` (reading earlier would take the line first).
    let deadline = Instant::now() + WAIT;
    while tty.unread() == unread {
        assert!(Instant::now() < deadline, "the adapter did not answer `C`");
        std::thread::yield_now();
    }
    assert_eq!(tty.reply(), "\r", "the unread frame line is discarded");
    tty.expect_silence(Duration::from_millis(100));
}

#[test]
fn a_port_nobody_reads_does_not_block_the_bridge() {
    let mut rig = Rig::start();
    let mut node = rig.node("tester", false);
    let mut tty = rig.tty();
    tty.open_channel();
    drop(tty);
    // Far more than the pty and the bridge's queue hold.
    let frame = Frame::data(ext_id(0x1234_5678), &[0x55; 8]).unwrap();
    for _ in 0..20 {
        node.send_batch(&vec![frame.clone(); 1000]).unwrap();
    }
    // The bridge still answers the host (its answer queues behind the unread lines) and stops promptly.
    let mut tty: Tty = rig.tty();
    tty.send("V\r");
    let started = Instant::now();
    let report = rig.port.stop();
    assert!(started.elapsed() < WAIT, "stop took {:?}", started.elapsed());
    assert!(report.nodes[0].to_peer > 0);
}

#[test]
fn the_port_keeps_answering_when_the_hub_goes_away() {
    let Rig {
        dir: _dir,
        hub,
        mut port,
        link,
    } = Rig::start();
    let mut tty = Tty::open(&link);
    tty.open_channel();
    hub.shutdown();
    // The bridge learns of the hub's end when it next reads or writes the connection.
    let deadline = Instant::now() + WAIT;
    while tty.command("t1230\r") != "\x07" {
        assert!(
            Instant::now() < deadline,
            "frames still accepted after the hub stopped"
        );
    }
    assert_eq!(tty.command("V\r"), "V1013\r");
    let report = port.stop();
    let node = &report.nodes[0];
    assert!(!node.connected);
    assert!(
        node.errors.iter().any(|e| e.contains("left the bus")),
        "{:?}",
        node.errors
    );
    assert!(
        node.errors.iter().any(|e| e.contains("`t1230`")),
        "{:?}",
        node.errors
    );
}
