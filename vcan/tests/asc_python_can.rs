//! Interoperability of `vcan::asc` with python-can's `ASCReader`/`ASCWriter` (ignored by default: it
//! needs python-can). Run with an interpreter that has it, the same variable as the bus bench:
//! `PYTHON_CAN_PY=target/bench-venv/bin/python cargo test -p vcan --test asc_python_can -- --ignored`.

use std::process::Command;

use vcan::asc::{AscReader, AscWriter};
use vcan::candump::TraceRecord;
use vcan::Frame;

fn python() -> String {
    std::env::var("PYTHON_CAN_PY").unwrap_or_else(|_| "python3".into())
}

fn records() -> Vec<TraceRecord> {
    let start = 1_764_613_436_123_000_000u64;
    [
        (0, "can0", "3A0#0102030405060708"),
        (1_000_000, "can1", "01ABCDEF#AABB"),
        (2_000_000, "can0", "123#R3"),
        (3_000_000, "can0", "20000000#0000000000000000"),
        (4_000_000, "can0", "1A0##1000102030405060708090A0B"),
    ]
    .iter()
    .map(|(offset, interface, frame)| TraceRecord {
        timestamp_ns: start + offset,
        interface: interface.to_string(),
        frame: frame.parse::<Frame>().unwrap(),
    })
    .collect()
}

#[test]
#[ignore = "needs python-can (PYTHON_CAN_PY)"]
fn python_can_reads_what_we_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ours.asc");
    let mut writer = AscWriter::new(Vec::new());
    for r in records() {
        writer.write(&r).unwrap();
    }
    std::fs::write(&path, writer.finish().unwrap()).unwrap();
    let script = "import can, sys\n\
        for m in can.ASCReader(sys.argv[1]):\n\
        \x20   print(f'{m.timestamp:.6f} {m.channel} {m.arbitration_id:X} {int(m.is_extended_id)} \
        {int(m.is_remote_frame)} {int(m.is_error_frame)} {int(m.is_fd)} {int(m.bitrate_switch)} {m.dlc} {m.data.hex()}')\n";
    let out = Command::new(python())
        .args(["-c", script])
        .arg(&path)
        .output()
        .expect("run python");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [
            "0.000000 0 3A0 0 0 0 0 0 8 0102030405060708",
            "0.001000 1 1ABCDEF 1 0 0 0 0 2 aabb",
            "0.002000 0 123 0 1 0 0 0 3 ",
            "0.003000 0 0 1 0 1 0 0 0 ", // python-can error frames default to is_extended_id
            "0.004000 0 1A0 0 0 0 1 1 12 000102030405060708090a0b",
        ]
    );
}

#[test]
#[ignore = "needs python-can (PYTHON_CAN_PY)"]
fn we_read_what_python_can_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("python.asc");
    let script = "import can, sys\n\
        w = can.ASCWriter(sys.argv[1])\n\
        t = 1764613436.123\n\
        w.on_message_received(can.Message(timestamp=t, arbitration_id=0x3A0, data=bytes(range(1, 9)), is_extended_id=False, channel=0))\n\
        w.on_message_received(can.Message(timestamp=t + 0.001, arbitration_id=0x1ABCDEF, data=b'\\xaa\\xbb', channel=1))\n\
        w.on_message_received(can.Message(timestamp=t + 0.002, arbitration_id=0x123, is_remote_frame=True, dlc=3, is_extended_id=False, channel=0))\n\
        w.on_message_received(can.Message(timestamp=t + 0.003, is_error_frame=True, channel=0))\n\
        w.on_message_received(can.Message(timestamp=t + 0.004, arbitration_id=0x1A0, data=bytes(range(12)), is_fd=True, bitrate_switch=True, is_extended_id=False, channel=0))\n\
        w.stop()\n";
    let out = Command::new(python())
        .args(["-c", script])
        .arg(&path)
        .output()
        .expect("run python");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let file = std::fs::File::open(&path).unwrap();
    let back: Vec<TraceRecord> = AscReader::new(std::io::BufReader::new(file), "python.asc")
        .collect::<Result<_, _>>()
        .unwrap();
    let want = records();
    assert_eq!(back.len(), want.len());
    for (got, one) in back.iter().zip(&want) {
        assert_eq!(got.frame, one.frame);
        assert_eq!(got.interface, one.interface);
        // python-can writes the measurement start in local time to the ms: compare offsets.
        assert_eq!(
            got.timestamp_ns - back[0].timestamp_ns,
            one.timestamp_ns - want[0].timestamp_ns
        );
    }
}
