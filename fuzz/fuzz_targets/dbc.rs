//! The DBC loader (`vcan::dbc::Database::parse`, can-dbc underneath) on arbitrary text, and decoding a
//! frame with every message it accepts.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(db) = vcan::dbc::Database::parse(text, "fuzz.dbc") {
        for payload in [&[0u8; 8][..], &[0xFF; 8], &[0x55; 64]] {
            if let Ok(frame) = vcan::Frame::data(vcan::CanId::Standard(0x123), &payload[..8]) {
                if let Some(m) = db.message_for(&frame) {
                    let _ = m.decode(&frame);
                }
            }
        }
    }
});
