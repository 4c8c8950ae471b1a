//! The candump `-l` trace reader (`vcan::candump::TraceReader`) on arbitrary bytes: every line is a record
//! or an error naming it, and reading ends.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for (n, record) in vcan::candump::TraceReader::new(data, "fuzz.log").enumerate() {
        if n > data.len() + 1 {
            panic!("more records than lines");
        }
        let _ = record;
    }
});
