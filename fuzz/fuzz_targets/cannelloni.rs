//! The cannelloni datagram decoder on arbitrary datagrams; what decodes re-encodes to a datagram that
//! decodes to the same frames.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vcan_cannelloni::codec::{decode, Encoder, Packet};

fuzz_target!(|data: &[u8]| {
    if let Ok(Packet::Data { frames, .. }) = decode(data) {
        if let Ok(mut encoder) = Encoder::new(1472, true) {
            for (_, datagram) in encoder.encode(&frames) {
                assert!(decode(&datagram).is_ok(), "our own datagram does not decode");
            }
        }
    }
});
