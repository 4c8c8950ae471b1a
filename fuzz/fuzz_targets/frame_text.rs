//! Frames in can-utils text syntax (`123#1122`, `1ABCDEF0##1AA`, `123#R`): what parses prints back to
//! text that parses to the same frame.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(frame) = text.parse::<vcan::Frame>() {
        let again: vcan::Frame = frame.to_string().parse().expect("our own text parses");
        assert_eq!(again, frame);
    }
});
