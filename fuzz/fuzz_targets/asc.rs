//! The Vector ASC reader (`vcan::asc::AscReader`) on arbitrary bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for (n, record) in vcan::asc::AscReader::new(data, "fuzz.asc").enumerate() {
        if n > data.len() + 1 {
            panic!("more records than lines");
        }
        let _ = record;
    }
});
