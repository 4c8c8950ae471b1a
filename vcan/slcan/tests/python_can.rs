//! python-can 4.6.1's `slcan` interface (with pyserial) against the emulated adapter: classic and CAN FD
//! frames both ways between a Python program on the linked tty and a Rust hub node.
//!
//! Ignored by default: it needs a Python with python-can and pyserial, named by `PYTHON_CAN_PY`
//! (`PYTHON_CAN_PY=/path/to/venv/bin/python cargo test -p vcan-slcan --test python_can -- --ignored`).
//! Run without `PYTHON_CAN_PY` it fails rather than passing silently.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use common::Rig;
use vcan::bridge::Bridge;
use vcan::{CanId, CanSocket, FdFlags, Frame};
use vcan_slcan::ChannelMode;

/// How long the Python program may take in all.
const PYTHON_TIMEOUT: Duration = Duration::from_secs(60);

/// The answer the Python side expects: identifier plus one, same kind of frame, data reversed.
fn answer(frame: &Frame) -> Frame {
    let id = frame.id().expect("a data frame");
    let next = if id.is_extended() {
        CanId::extended(id.raw() + 1)
    } else {
        CanId::standard(id.raw() + 1)
    }
    .unwrap();
    let data: Vec<u8> = frame.payload().iter().rev().copied().collect();
    match frame {
        Frame::Fd { flags, .. } => Frame::fd(next, &data, *flags).unwrap(),
        _ => Frame::data(next, &data).unwrap(),
    }
}

#[test]
#[ignore = "needs PYTHON_CAN_PY: a Python with python-can 4.6.1 and pyserial"]
fn python_can_slcan_exchanges_classic_and_fd_frames() {
    let python = std::env::var_os("PYTHON_CAN_PY").unwrap_or_else(|| {
        panic!(
            "PYTHON_CAN_PY is not set: point it at a Python with python-can and pyserial, e.g. \
             PYTHON_CAN_PY=/work/main/target/python-can-venv/bin/python"
        )
    });
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/slcan_roundtrip.py");

    let rig = Rig::start();
    let mut responder = rig.node("responder", false);
    let done = Arc::new(AtomicBool::new(false));
    let responder_done = Arc::clone(&done);
    let responder_thread = std::thread::spawn(move || {
        let mut seen = Vec::new();
        while !responder_done.load(Ordering::Relaxed) {
            match responder.recv(Some(Duration::from_millis(100))) {
                Ok(Some(received)) => {
                    responder.send(&answer(&received.frame)).unwrap();
                    seen.push(received.frame);
                }
                Ok(None) => {}
                Err(e) => panic!("responder: {e}"),
            }
        }
        seen
    });

    let mut child = Command::new(&python)
        .arg(script)
        .arg(&rig.link)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run PYTHON_CAN_PY={}: {e}", python.to_string_lossy()));
    let pid = child.id();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut out = String::new();
        let mut err = String::new();
        let _ = stdout.read_to_string(&mut out);
        let _ = stderr.read_to_string(&mut err);
        let _ = tx.send((child.wait(), out, err));
    });
    let (status, out, err) = match rx.recv_timeout(PYTHON_TIMEOUT) {
        Ok(result) => result,
        Err(_) => {
            // SAFETY: signals the child we started, by its pid.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            panic!("the python-can program did not finish within {PYTHON_TIMEOUT:?}");
        }
    };
    done.store(true, Ordering::Relaxed);
    let seen = responder_thread.join().unwrap();

    let status = status.unwrap();
    assert!(
        status.success(),
        "python-can program failed ({status}):\n--- stdout\n{out}\n--- stderr\n{err}"
    );
    assert!(out.contains("all exchanges OK"), "stdout:\n{out}\nstderr:\n{err}");

    let brs = FdFlags {
        brs: true,
        esi: false,
    };
    let expected = vec![
        Frame::data(CanId::standard(0x123).unwrap(), &[0x11, 0x22, 0x33]).unwrap(),
        Frame::data(CanId::extended(0x1ABC_DE00).unwrap(), &[1, 2, 3, 4, 5, 6, 7, 8]).unwrap(),
        Frame::fd(
            CanId::standard(0x200).unwrap(),
            &(0..64).collect::<Vec<u8>>(),
            brs,
        )
        .unwrap(),
        Frame::fd(
            CanId::extended(0x1000).unwrap(),
            &(100..112).collect::<Vec<u8>>(),
            FdFlags::default(),
        )
        .unwrap(),
    ];
    assert_eq!(seen, expected, "frames python-can put on the bus");

    let report = rig.port.report();
    let node = &report.nodes[0];
    assert_eq!(
        node.rejected, 0,
        "python-can's commands were all accepted: {:?}",
        node.errors
    );
    assert_eq!((node.to_bus, node.to_peer), (4, 4));
    let status = rig.port.status();
    assert_eq!(status.mode, ChannelMode::Closed, "python-can closes on shutdown");
    assert_eq!(status.bitrate, Some(500_000));
    assert_eq!(status.data_bitrate, Some(2_000_000));
}
