//! How long a CAN frame occupies the wire: its length in bits (ISO 11898-1), bit stuffing included, and
//! its duration at a bitrate. The arithmetic a bus with a bitrate needs to behave like a physical one.
//!
//! * **Classic frames**: the fixed fields (SOF, identifier, RTR/SRR, IDE, r0/r1, DLC, CRC, delimiters, ACK,
//!   EOF) plus the data, plus the 3-bit intermission, plus stuff bits: after five equal bits the
//!   transmitter inserts the opposite bit, from SOF to the end of the CRC. [`Stuffing::Exact`] stuffs the
//!   frame's real bit sequence (the CRC-15 computed); [`Stuffing::WorstCase`] counts the most stuff bits any
//!   payload can need, `⌊(n − 1) / 4⌋` for `n` stuffable bits. An 8-byte base frame is 111 bits
//!   unstuffed, 135 at worst; an 8-byte extended frame 131 and 160.
//! * **CAN FD frames**: the arbitration phase (SOF to BRS, and CRC delimiter to intermission) at the
//!   nominal bitrate, the data phase (ESI, DLC, data, stuff count, CRC) at the data bitrate when the frame
//!   switches its bitrate (BRS), with the stuff count (4 bits), the CRC-17 (≤ 16 data bytes) or CRC-21 and
//!   its fixed stuff bits (one before the stuff count and one after every 4 bits); dynamic stuff bits of
//!   the arbitration and data fields are counted at worst case.

use std::time::Duration;

use crate::frame::{CanId, Frame};

/// How stuff bits are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stuffing {
    /// None (the shortest a frame can be).
    None,
    /// The most any payload needs: the bound a bus must plan for.
    WorstCase,
    /// This frame's own (classic frames; FD frames fall back to the worst case).
    Exact,
}

/// A bus's bitrates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bitrate {
    /// Nominal (arbitration) bitrate, bit/s.
    pub nominal: u32,
    /// CAN FD data-phase bitrate, bit/s (frames with BRS); `None`: the nominal one.
    pub data: Option<u32>,
}

/// A frame's length on the wire, split by phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameBits {
    /// Bits at the nominal bitrate (the whole of a classic frame), intermission included.
    pub nominal: u32,
    /// Bits at the data bitrate (FD frames with BRS); 0 otherwise.
    pub data: u32,
}

impl FrameBits {
    pub fn total(&self) -> u32 {
        self.nominal + self.data
    }

    /// How long these bits take at `bitrate`.
    pub fn duration(&self, bitrate: Bitrate) -> Duration {
        let nominal = u64::from(bitrate.nominal.max(1));
        let data = u64::from(bitrate.data.unwrap_or(bitrate.nominal).max(1));
        let ns =
            u64::from(self.nominal) * 1_000_000_000 / nominal + u64::from(self.data) * 1_000_000_000 / data;
        Duration::from_nanos(ns)
    }
}

/// Stuff bits at worst for `n` stuffable bits: a stuff bit every four bits after the first five.
pub fn worst_case_stuff_bits(n: u32) -> u32 {
    n.saturating_sub(1) / 4
}

/// CRC-15/CAN over `bits` (polynomial 0x4599).
fn crc15(bits: &[bool]) -> u16 {
    let mut crc: u16 = 0;
    for &bit in bits {
        let next = bit ^ ((crc >> 14) & 1 == 1);
        crc = (crc << 1) & 0x7fff;
        if next {
            crc ^= 0x4599;
        }
    }
    crc
}

fn push_bits(out: &mut Vec<bool>, value: u64, width: u32) {
    for i in (0..width).rev() {
        out.push((value >> i) & 1 == 1);
    }
}

/// Stuff bits the transmitter inserts into `bits`.
fn stuff_bits(bits: &[bool]) -> u32 {
    let mut inserted = 0;
    let mut run = 0;
    let mut last: Option<bool> = None;
    for &bit in bits {
        if Some(bit) == last {
            run += 1;
        } else {
            last = Some(bit);
            run = 1;
        }
        if run == 5 {
            inserted += 1;
            // The stuff bit is the opposite value and starts a new run.
            last = Some(!bit);
            run = 1;
        }
    }
    inserted
}

/// The stuffable bits (SOF to the end of the CRC) of a classic data or remote frame.
fn classic_stuffable(id: CanId, frame: &Frame) -> Vec<bool> {
    let data = frame.payload();
    let mut bits = vec![false]; // SOF
    if id.is_extended() {
        let raw = u64::from(id.raw());
        push_bits(&mut bits, raw >> 18, 11);
        bits.push(true); // SRR
        bits.push(true); // IDE
        push_bits(&mut bits, raw & 0x3ffff, 18);
        bits.push(frame.is_remote()); // RTR
        bits.push(false); // r1
        bits.push(false); // r0
    } else {
        push_bits(&mut bits, u64::from(id.raw()), 11);
        bits.push(frame.is_remote()); // RTR
        bits.push(false); // IDE
        bits.push(false); // r0
    }
    let dlc = match frame {
        Frame::Remote { dlc, .. } => *dlc,
        _ => data.len() as u8,
    }
    .min(8);
    push_bits(&mut bits, u64::from(dlc), 4);
    if !frame.is_remote() {
        for byte in data.iter().take(8) {
            push_bits(&mut bits, u64::from(*byte), 8);
        }
    }
    let crc = crc15(&bits);
    push_bits(&mut bits, u64::from(crc), 15);
    bits
}

/// The bits a frame occupies on the wire, intermission included.
pub fn frame_bits(frame: &Frame, stuffing: Stuffing) -> FrameBits {
    // CRC delimiter, ACK slot, ACK delimiter, EOF, intermission: never stuffed.
    const TAIL: u32 = 1 + 1 + 1 + 7 + 3;
    // An error frame on the wire: a 6-bit error flag, the 8-bit delimiter, the intermission.
    let Some(id) = frame.id() else {
        return FrameBits {
            nominal: 6 + 8 + 3,
            data: 0,
        };
    };
    if frame.is_fd() {
        return fd_frame_bits(id, frame, stuffing);
    }
    let stuffable = classic_stuffable(id, frame);
    let n = stuffable.len() as u32;
    let stuff = match stuffing {
        Stuffing::None => 0,
        Stuffing::WorstCase => worst_case_stuff_bits(n),
        Stuffing::Exact => stuff_bits(&stuffable),
    };
    FrameBits {
        nominal: n + stuff + TAIL,
        data: 0,
    }
}

fn fd_frame_bits(id: CanId, frame: &Frame, stuffing: Stuffing) -> FrameBits {
    let extended = id.is_extended();
    let len = frame.payload().len() as u32;
    let brs = matches!(frame, Frame::Fd { flags, .. } if flags.brs);
    // SOF, identifier with RRS and IDE (SRR too when extended), FDF, res, BRS: the arbitration part
    // before the switch.
    let identifier = if extended { 11 + 1 + 1 + 18 + 1 } else { 11 + 1 + 1 };
    let arbitration = 1 + identifier + 3;
    // ESI, DLC, data: dynamically stuffed in the data phase.
    let data_fields = 1 + 4 + 8 * len;
    let crc_len = if len > 16 { 21 } else { 17 };
    // Stuff count (3 bits + parity) and CRC, with a fixed stuff bit before and after every 4 bits.
    let fixed_region = 4 + crc_len;
    let fixed_stuff = 1 + (fixed_region - 1) / 4;
    let dynamic = match stuffing {
        Stuffing::None => 0,
        Stuffing::WorstCase | Stuffing::Exact => worst_case_stuff_bits(arbitration + data_fields),
    };
    // Share the dynamic stuff bits between the phases by their share of the stuffed bits.
    let dynamic_arbitration = dynamic * arbitration / (arbitration + data_fields).max(1);
    let dynamic_data = dynamic - dynamic_arbitration;
    // CRC delimiter, ACK, ACK delimiter, EOF, intermission.
    let tail = 1 + 1 + 1 + 7 + 3;
    let data_phase = data_fields + dynamic_data + fixed_region + fixed_stuff;
    if brs {
        FrameBits {
            nominal: arbitration + dynamic_arbitration + tail,
            data: data_phase,
        }
    } else {
        FrameBits {
            nominal: arbitration + dynamic_arbitration + data_phase + tail,
            data: 0,
        }
    }
}

/// How long `frame` occupies a bus at `bitrate`.
pub fn wire_time(frame: &Frame, bitrate: Bitrate, stuffing: Stuffing) -> Duration {
    frame_bits(frame, stuffing).duration(bitrate)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::frame::FdFlags;

    fn classic(id: CanId, len: usize) -> Frame {
        Frame::data(id, &vec![0x55; len]).unwrap()
    }

    #[test]
    fn classic_frame_lengths_match_the_hand_computed_ones() {
        let base = CanId::standard(0x123).unwrap();
        let ext = CanId::extended(0x1234567).unwrap();
        // Base frame: 44 fixed bits + 8 per byte + 3 intermission; 34 + 8n stuffable bits.
        assert_eq!(frame_bits(&classic(base, 8), Stuffing::None).total(), 111);
        assert_eq!(frame_bits(&classic(base, 8), Stuffing::WorstCase).total(), 135);
        assert_eq!(frame_bits(&classic(base, 0), Stuffing::None).total(), 47);
        assert_eq!(frame_bits(&classic(base, 0), Stuffing::WorstCase).total(), 55);
        // Extended frame: 64 fixed bits + 8 per byte + 3; 54 + 8n stuffable bits.
        assert_eq!(frame_bits(&classic(ext, 8), Stuffing::None).total(), 131);
        assert_eq!(frame_bits(&classic(ext, 8), Stuffing::WorstCase).total(), 160);
    }

    #[test]
    fn exact_stuffing_counts_the_frames_own_runs() {
        // Id 0, no data: SOF..CRC are 34 dominant bits (the CRC of zeros is zero), so a stuff bit follows
        // every fifth of them: 6 stuff bits.
        let zero = Frame::data(CanId::standard(0).unwrap(), &[]).unwrap();
        assert_eq!(frame_bits(&zero, Stuffing::Exact).total(), 47 + 6);
        // Exact never exceeds the worst case, never undercuts no stuffing.
        for len in 0..=8 {
            for id in [0u32, 0x7ff, 0x555, 0x2aa, 0x123] {
                let f = Frame::data(CanId::standard(id).unwrap(), &vec![0xffu8; len]).unwrap();
                let exact = frame_bits(&f, Stuffing::Exact).total();
                assert!(exact >= frame_bits(&f, Stuffing::None).total());
                assert!(
                    exact <= frame_bits(&f, Stuffing::WorstCase).total(),
                    "id {id:#x} len {len}"
                );
            }
        }
    }

    #[test]
    fn stuffing_inserts_after_five_equal_bits_and_restarts_the_run() {
        assert_eq!(stuff_bits(&[false; 4]), 0);
        assert_eq!(stuff_bits(&[false; 5]), 1);
        // Five zeros, the stuff bit, four zeros: one stuff bit; a fifth zero after the stuff bit makes two.
        assert_eq!(stuff_bits(&[false; 9]), 1);
        assert_eq!(stuff_bits(&[false; 10]), 2);
        assert_eq!(stuff_bits(&[true, false, true, false, true]), 0);
        // 00000 (stuff 1) then 1111: the stuff bit starts the run of ones, so the fourth 1 closes five.
        assert_eq!(
            stuff_bits(&[false, false, false, false, false, true, true, true, true]),
            2
        );
    }

    #[test]
    fn crc15_of_a_known_frame() {
        // CRC-15/CAN check value for the ASCII bytes "123456789".
        let mut bits = Vec::new();
        for b in b"123456789" {
            push_bits(&mut bits, u64::from(*b), 8);
        }
        assert_eq!(crc15(&bits), 0x059e);
    }

    #[test]
    fn a_1_mbit_bus_carries_at_most_about_9000_eight_byte_frames_a_second() {
        let rate = Bitrate {
            nominal: 1_000_000,
            data: None,
        };
        let f = classic(CanId::standard(0x100).unwrap(), 8);
        let best = wire_time(&f, rate, Stuffing::None);
        let worst = wire_time(&f, rate, Stuffing::WorstCase);
        assert_eq!(best, Duration::from_micros(111));
        assert_eq!(worst, Duration::from_micros(135));
        assert_eq!(1_000_000 / best.as_micros(), 9009);
        assert_eq!(1_000_000 / worst.as_micros(), 7407);
    }

    #[test]
    fn fd_frames_spend_their_data_phase_at_the_data_bitrate() {
        let id = CanId::standard(0x100).unwrap();
        let slow = Frame::fd(id, &[0u8; 64], FdFlags::default()).unwrap();
        let fast = Frame::fd(
            id,
            &[0u8; 64],
            FdFlags {
                brs: true,
                esi: false,
            },
        )
        .unwrap();
        let bits = frame_bits(&fast, Stuffing::None);
        // Arbitration: SOF 1 + id 11 + RRS, IDE, FDF, res, BRS 5 = 17; tail 13.
        assert_eq!(bits.nominal, 17 + 13);
        // ESI 1 + DLC 4 + 512 data + stuff count 4 + CRC-21 + 7 fixed stuff bits.
        assert_eq!(bits.data, 1 + 4 + 512 + 4 + 21 + 7);
        assert_eq!(frame_bits(&slow, Stuffing::None).total(), bits.total());
        let rate = Bitrate {
            nominal: 500_000,
            data: Some(2_000_000),
        };
        assert!(wire_time(&fast, rate, Stuffing::None) < wire_time(&slow, rate, Stuffing::None) / 3);
    }
}
