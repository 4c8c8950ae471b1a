//! The slcan adapter's line splitter and device state machine on arbitrary host bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vcan_slcan::protocol::{parse_line, Device, LineSplitter};

fuzz_target!(|data: &[u8]| {
    let _ = parse_line(data);
    let mut splitter = LineSplitter::default();
    let mut device = Device::new();
    for chunk in data.chunks(5) {
        for input in splitter.push(chunk) {
            let _ = device.handle(&input);
        }
    }
});
