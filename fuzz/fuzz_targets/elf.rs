//! The VMM's ELF loader (`agl_vmm::loader::Elf::parse`) on arbitrary files, and the load segments of what
//! it accepts.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(elf) = agl_vmm::loader::Elf::parse(data) {
        for segment in elf.load_segments(0) {
            let _ = segment;
        }
    }
});
