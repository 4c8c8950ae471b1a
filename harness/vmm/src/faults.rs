//! Guest exceptions: a CPU exception raised by guest code (page fault, general protection, invalid
//! opcode, divide error, breakpoint...) enters its IDT stub, which exits to the VMM. The VMM reads the
//! exception frame the CPU pushed on the CPL0 stack (error code, RIP, CS, RFLAGS, RSP, SS) and CR2, and
//! ends the guest the way Linux would end a process without a handler: a one-line report on stderr
//! (`agl-vmm: guest fault: ...`) and exit status 128 + the signal Linux would send.

use crate::memory::{has_error_code, GuestRam};
use crate::vcpu::CpuState;

/// What the CPU reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub vector: u8,
    pub error_code: Option<u64>,
    pub rip: u64,
    pub rsp: u64,
    pub cr2: u64,
    /// True if the fault happened at CPL0 or in the VMM's stub page rather than in guest code.
    pub in_stub: bool,
}

/// Mnemonic and the signal Linux delivers for an exception vector.
pub fn describe(vector: u8) -> (&'static str, &'static str, i32) {
    match vector {
        0 => ("#DE", "divide error", libc::SIGFPE),
        1 => ("#DB", "debug trap", libc::SIGTRAP),
        2 => ("NMI", "non-maskable interrupt", libc::SIGSEGV),
        3 => ("#BP", "breakpoint", libc::SIGTRAP),
        4 => ("#OF", "overflow", libc::SIGSEGV),
        5 => ("#BR", "bound range exceeded", libc::SIGSEGV),
        6 => ("#UD", "invalid opcode", libc::SIGILL),
        7 => ("#NM", "device not available", libc::SIGSEGV),
        8 => ("#DF", "double fault", libc::SIGSEGV),
        10 => ("#TS", "invalid TSS", libc::SIGSEGV),
        11 => ("#NP", "segment not present", libc::SIGBUS),
        12 => ("#SS", "stack-segment fault", libc::SIGBUS),
        13 => ("#GP", "general protection", libc::SIGSEGV),
        14 => ("#PF", "page fault", libc::SIGSEGV),
        16 => ("#MF", "x87 floating-point error", libc::SIGFPE),
        17 => ("#AC", "alignment check", libc::SIGBUS),
        18 => ("#MC", "machine check", libc::SIGBUS),
        19 => ("#XM", "SIMD floating-point error", libc::SIGFPE),
        _ => ("#??", "reserved exception", libc::SIGSEGV),
    }
}

/// Reads the exception frame from the CPL0 stack.
pub fn read_fault(vector: u8, cpu: &CpuState, ram: &GuestRam) -> Fault {
    let mut sp = cpu.regs.rsp;
    let word = |at: u64| -> u64 {
        let mut b = [0u8; 8];
        if ram.read(at, &mut b).is_ok() {
            u64::from_le_bytes(b)
        } else {
            0
        }
    };
    let error_code = if has_error_code(vector) {
        let e = word(sp);
        sp = sp.wrapping_add(8);
        Some(e)
    } else {
        None
    };
    let rip = word(sp);
    let cs = word(sp.wrapping_add(8));
    let rsp = word(sp.wrapping_add(24));
    Fault {
        vector,
        error_code,
        rip,
        rsp,
        cr2: cpu.sregs.cr2,
        in_stub: cs & 3 == 0 || crate::vcpu::in_stub_page(rip),
    }
}

/// Decodes a page-fault error code.
fn page_fault_cause(code: u64) -> String {
    let access = if code & 0x10 != 0 {
        "instruction fetch"
    } else if code & 0x2 != 0 {
        "write"
    } else {
        "read"
    };
    let why = if code & 0x1 == 0 {
        "page not mapped"
    } else if code & 0x8 != 0 {
        "reserved bit set"
    } else {
        "protection violation"
    };
    let ring = if code & 0x4 != 0 { "user" } else { "supervisor" };
    format!("{ring} {access}, {why}")
}

impl Fault {
    /// The signal the guest dies of.
    pub fn signal(&self) -> i32 {
        describe(self.vector).2
    }

    /// The one-line report (without the `agl-vmm: guest fault:` prefix).
    pub fn report(&self) -> String {
        let (mnemonic, name, sig) = describe(self.vector);
        let mut s = format!(
            "{mnemonic} {name} (vector {}) at rip={:#x} rsp={:#x}",
            self.vector, self.rip, self.rsp
        );
        if self.vector == 14 {
            s.push_str(&format!(" addr={:#x}", self.cr2));
            if let Some(code) = self.error_code {
                s.push_str(&format!(" ({})", page_fault_cause(code)));
            }
        }
        if let Some(code) = self.error_code {
            s.push_str(&format!(" error_code={code:#x}"));
        }
        if self.in_stub {
            s.push_str(" [in the VMM's CPL0 stub]");
        }
        s.push_str(&format!(" -> {}", crate::signals::name(sig)));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::KSTACK_TOP;

    #[test]
    fn reports_name_the_vector_address_and_signal() {
        let f = Fault {
            vector: 14,
            error_code: Some(0x14),
            rip: 0xdead_0000,
            rsp: 0x7f_f000,
            cr2: 0xdead_0000,
            in_stub: false,
        };
        let r = f.report();
        assert!(r.contains("#PF page fault (vector 14) at rip=0xdead0000"), "{r}");
        assert!(
            r.contains("addr=0xdead0000 (user instruction fetch, page not mapped)"),
            "{r}"
        );
        assert!(r.ends_with("-> SIGSEGV"), "{r}");
        assert_eq!(f.signal(), libc::SIGSEGV);
        assert_eq!(describe(6).2, libc::SIGILL);
        assert_eq!(describe(0).2, libc::SIGFPE);
        assert_eq!(describe(3).2, libc::SIGTRAP);
        assert_eq!(describe(13).0, "#GP");
    }

    #[test]
    fn frame_is_read_from_the_kernel_stack() {
        let mut ram = GuestRam::anonymous(16 << 20).unwrap();
        // #GP frame: error code, rip, cs, rflags, rsp, ss.
        let frame = [0x10u64, 0x40_1234, 0x2b, 0x202, 0x7f_0000, 0x23];
        let base = KSTACK_TOP - 48;
        for (i, w) in frame.iter().enumerate() {
            ram.write(base + i as u64 * 8, &w.to_le_bytes()).unwrap();
        }
        let regs = kvm_bindings::kvm_regs {
            rsp: base,
            ..Default::default()
        };
        let cpu = CpuState::for_tests(regs);
        let f = read_fault(13, &cpu, &ram);
        assert_eq!(f.error_code, Some(0x10));
        assert_eq!(f.rip, 0x40_1234);
        assert_eq!(f.rsp, 0x7f_0000);
        assert!(!f.in_stub);
    }
}
