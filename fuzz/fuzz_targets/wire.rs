//! The hub's wire-protocol decoder (`vcan::wire::Decoder`) on arbitrary bytes, fed in two pieces.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let split = data.first().map_or(0, |&b| usize::from(b)).min(data.len());
    let mut decoder = vcan::wire::Decoder::new("fuzz");
    decoder.extend(&data[..split]);
    while let Ok(Some(_)) = decoder.next_message() {}
    decoder.extend(&data[split..]);
    while let Ok(Some(_)) = decoder.next_message() {}
});
