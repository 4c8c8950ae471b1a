//! The socketcand server's message splitter and command parser on arbitrary client bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vcan_socketcand::protocol::{parse_command, Splitter};

fuzz_target!(|data: &[u8]| {
    let mut splitter = Splitter::new();
    for chunk in data.chunks(7) {
        splitter.push(chunk);
        while let Some(message) = splitter.next_message() {
            if let Ok(message) = message {
                let _ = parse_command(&message);
            }
        }
    }
});
