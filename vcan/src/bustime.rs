//! A CAN bus with a bitrate, in virtual time: per-node transmit queues, arbitration and frame durations.
//!
//! [`BusScheduler`] is the pure model the hub drives when it has a [`BusTiming`]: every sent frame joins
//! its sender's FIFO transmit queue (a controller's tx buffer); whenever the bus is idle, arbitration picks,
//! among the heads of all queues, the frame with the lowest arbitration field (the dominant bit wins, bit by
//! bit), which then occupies the bus for [`wire_time`] (intermission included) and completes at its end of
//! frame. A frame starts at the later of its arrival and the end of the previous frame. No threads and no
//! clock: the caller passes the times, so the model is deterministic and testable.
//!
//! Arbitration order: the 11-bit base id first; with an equal base id a standard data (or FD) frame beats a
//! standard remote frame (RTR recessive), and both beat every extended frame (SRR and IDE recessive);
//! extended frames compare the full 29 bits, data before remote. Error frames are not arbitrated on a real
//! bus (they overwrite whatever is on it); here they win arbitration over every frame.

use std::collections::VecDeque;

use crate::bittiming::{wire_time, Bitrate, Stuffing};
use crate::frame::{CanId, Frame};

/// A bus's bitrate and how stuff bits are counted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BusTiming {
    pub bitrate: Bitrate,
    pub stuffing: Stuffing,
}

impl BusTiming {
    /// How long `frame` occupies the bus, in nanoseconds.
    pub fn frame_ns(&self, frame: &Frame) -> u64 {
        wire_time(frame, self.bitrate, self.stuffing).as_nanos() as u64
    }
}

/// The arbitration field of a frame as a number: lower wins.
///
/// Bits, most significant first, as they go on the wire (dominant 0): base id (11), RTR or SRR, IDE, the
/// 18 extension bits, the extended frame's RTR. Standard frames have zeros after IDE.
pub fn arbitration_key(frame: &Frame) -> u64 {
    match frame.id() {
        None => 0,
        Some(CanId::Standard(id)) => {
            let rtr = u64::from(frame.is_remote());
            1 << 32 | u64::from(id) << 21 | rtr << 20
        }
        Some(CanId::Extended(id)) => {
            let id = u64::from(id);
            let base = id >> 18;
            let ext = id & 0x3ffff;
            let rtr = u64::from(frame.is_remote());
            1 << 32 | base << 21 | 1 << 20 | 1 << 19 | ext << 1 | rtr
        }
    }
}

struct TxQueue<K> {
    node: K,
    frames: VecDeque<(Frame, u64)>,
}

/// The frame on the bus.
struct OnBus<K> {
    node: K,
    frame: Frame,
    end_ns: u64,
}

/// Transmit queues and arbitration of one bus in virtual time (see the module documentation).
pub struct BusScheduler<K> {
    timing: BusTiming,
    queues: Vec<TxQueue<K>>,
    on_bus: Option<OnBus<K>>,
    /// End of the last completed frame: the bus is idle from then on.
    free_at_ns: u64,
}

impl<K: Clone + PartialEq> BusScheduler<K> {
    pub fn new(timing: BusTiming) -> Self {
        BusScheduler {
            timing,
            queues: Vec::new(),
            on_bus: None,
            free_at_ns: 0,
        }
    }

    pub fn timing(&self) -> BusTiming {
        self.timing
    }

    /// Changes the bitrate for frames not yet on the bus.
    pub fn set_timing(&mut self, timing: BusTiming) {
        self.timing = timing;
    }

    /// Appends `frame` to `node`'s transmit queue; it competes for the bus from `arrival_ns` on.
    pub fn submit(&mut self, node: K, frame: Frame, arrival_ns: u64) {
        match self.queues.iter_mut().find(|q| q.node == node) {
            Some(queue) => queue.frames.push_back((frame, arrival_ns)),
            None => self.queues.push(TxQueue {
                node,
                frames: VecDeque::from([(frame, arrival_ns)]),
            }),
        }
    }

    /// Frames waiting in `node`'s transmit queue (not counting one on the bus).
    pub fn queued(&self, node: &K) -> usize {
        self.queues
            .iter()
            .find(|q| q.node == *node)
            .map_or(0, |q| q.frames.len())
    }

    /// True if no frame is queued or on the bus.
    pub fn is_idle(&self) -> bool {
        self.on_bus.is_none() && self.queues.is_empty()
    }

    /// When something next happens: the end of the frame on the bus, or the start of the next one (which
    /// may be in the past: then [`BusScheduler::complete_until`] with the current time starts it).
    pub fn next_event_ns(&self) -> Option<u64> {
        if let Some(on_bus) = &self.on_bus {
            return Some(on_bus.end_ns);
        }
        self.earliest_arrival().map(|a| a.max(self.free_at_ns))
    }

    fn earliest_arrival(&self) -> Option<u64> {
        self.queues
            .iter()
            .filter_map(|q| q.frames.front().map(|f| f.1))
            .min()
    }

    /// Runs the bus up to `now_ns`: every frame whose end of frame is at or before `now_ns`, in bus order,
    /// with its end-of-frame time. A frame that started but has not ended stays on the bus.
    pub fn complete_until(&mut self, now_ns: u64) -> Vec<(K, Frame, u64)> {
        let mut done = Vec::new();
        loop {
            if let Some(on_bus) = &self.on_bus {
                if on_bus.end_ns > now_ns {
                    break;
                }
                if let Some(on_bus) = self.on_bus.take() {
                    self.free_at_ns = on_bus.end_ns;
                    done.push((on_bus.node, on_bus.frame, on_bus.end_ns));
                }
                continue;
            }
            let Some(earliest) = self.earliest_arrival() else {
                break;
            };
            let start = earliest.max(self.free_at_ns);
            if start > now_ns {
                break;
            }
            // Arbitration among the heads that are waiting at `start`; ties (the same id from two nodes,
            // an error on a real bus) go to the earlier arrival, then the earlier queue.
            let mut winner: Option<(usize, u64, u64)> = None;
            for (i, queue) in self.queues.iter().enumerate() {
                let Some((frame, arrival)) = queue.frames.front() else {
                    continue;
                };
                if *arrival > start {
                    continue;
                }
                let key = arbitration_key(frame);
                if winner.is_none_or(|(_, k, a)| (key, *arrival) < (k, a)) {
                    winner = Some((i, key, *arrival));
                }
            }
            let Some((i, _, _)) = winner else { break };
            let Some((frame, _)) = self.queues[i].frames.pop_front() else {
                break;
            };
            let node = self.queues[i].node.clone();
            if self.queues[i].frames.is_empty() {
                self.queues.swap_remove(i);
            }
            let end_ns = start + self.timing.frame_ns(&frame);
            self.on_bus = Some(OnBus { node, frame, end_ns });
        }
        done
    }

    /// Empties the bus and every queue: the frame on the bus first, then the queues' frames in
    /// arbitration order of their heads (for switching the timing off).
    pub fn drain(&mut self) -> Vec<(K, Frame)> {
        let mut out = Vec::new();
        if let Some(on_bus) = self.on_bus.take() {
            out.push((on_bus.node, on_bus.frame));
        }
        loop {
            let best = self
                .queues
                .iter()
                .enumerate()
                .filter_map(|(i, q)| q.frames.front().map(|(f, _)| (arbitration_key(f), i)))
                .min();
            let Some((_, i)) = best else { break };
            if let Some((frame, _)) = self.queues[i].frames.pop_front() {
                out.push((self.queues[i].node.clone(), frame));
            }
            if self.queues[i].frames.is_empty() {
                self.queues.swap_remove(i);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing(nominal: u32) -> BusTiming {
        BusTiming {
            bitrate: Bitrate { nominal, data: None },
            stuffing: Stuffing::WorstCase,
        }
    }

    fn f(text: &str) -> Frame {
        text.parse().unwrap()
    }

    fn ids(done: &[(u32, Frame, u64)]) -> Vec<String> {
        done.iter().map(|(_, frame, _)| frame.to_string()).collect()
    }

    #[test]
    fn arbitration_keys_follow_the_wire_bits() {
        let order = [
            "100#00",      // standard data
            "100#R",       // standard remote, same base id
            "04000000#00", // extended, base id 0x100, extension 0
            "04000000#R",  // the same extended id as a remote frame
            "04000001#00", // extended, base 0x100, extension 1
            "101#00",      // the next base id beats none of the above
            "04040000#00", // extended with base id 0x101 loses to standard 0x101
        ];
        for pair in order.windows(2) {
            assert!(
                arbitration_key(&f(pair[0])) < arbitration_key(&f(pair[1])),
                "{} should win over {}",
                pair[0],
                pair[1]
            );
        }
        // An extended id whose base is lower beats a standard one with a higher id.
        assert!(arbitration_key(&f("00000001#00")) < arbitration_key(&f("001#00")));
        // FD frames (RRS dominant) arbitrate like data frames.
        assert_eq!(arbitration_key(&f("100##0")), arbitration_key(&f("100#")));
    }

    #[test]
    fn frames_queued_while_the_bus_is_busy_come_out_lowest_id_first() {
        let t = timing(10_000);
        let mut bus = BusScheduler::new(t);
        let long = f("7FF#0102030405060708");
        bus.submit(0u32, long.clone(), 1_000);
        // While the long frame is on the bus, four nodes queue theirs.
        bus.submit(1, f("300#01"), 2_000);
        bus.submit(2, f("04000000#02"), 2_100);
        bus.submit(3, f("100#R"), 2_200);
        bus.submit(4, f("100#03"), 2_300);
        assert!(bus.complete_until(2_300).is_empty());
        let done = bus.complete_until(u64::MAX);
        assert_eq!(
            ids(&done),
            ["7FF#0102030405060708", "100#03", "100#R", "04000000#02", "300#01"]
        );
        assert_eq!(done[1].0, 4);
        assert!(bus.is_idle());
    }

    #[test]
    fn a_nodes_queue_is_fifo_whatever_the_ids() {
        let mut bus = BusScheduler::new(timing(500_000));
        bus.submit("a", f("500#01"), 0);
        bus.submit("a", f("100#02"), 0);
        bus.submit("b", f("300#03"), 0);
        let done = bus.complete_until(u64::MAX);
        // a's head (0x500) loses to b's 0x300; a's 0x100 waits behind its own 0x500.
        let got: Vec<String> = done.iter().map(|(_, fr, _)| fr.to_string()).collect();
        assert_eq!(got, ["300#03", "500#01", "100#02"]);
    }

    #[test]
    fn end_of_frame_times_are_exact_and_frames_start_at_arrival_or_after_the_previous_one() {
        let t = timing(500_000);
        let mut bus = BusScheduler::new(t);
        let a = f("123#1122334455667788");
        let b = f("124#11");
        let wa = t.frame_ns(&a);
        let wb = t.frame_ns(&b);
        assert_eq!(wa, 135 * 2_000);
        bus.submit(1u8, a.clone(), 10_000);
        bus.submit(2u8, b.clone(), 10_500); // arrives during a: starts at a's end
        assert_eq!(bus.next_event_ns(), Some(10_000));
        assert!(bus.complete_until(10_000 + wa - 1).is_empty());
        assert_eq!(bus.next_event_ns(), Some(10_000 + wa));
        let done = bus.complete_until(10_000 + wa);
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].2, 10_000 + wa);
        let done = bus.complete_until(u64::MAX);
        assert_eq!(done[0].2, 10_000 + wa + wb);
        // After idle time, a frame starts at its own arrival.
        bus.submit(1, a, 5_000_000);
        let done = bus.complete_until(u64::MAX);
        assert_eq!(done[0].2, 5_000_000 + wa);
    }

    #[test]
    fn throughput_at_1_mbit_is_135_us_per_worst_case_8_byte_frame() {
        let t = timing(1_000_000);
        let mut bus = BusScheduler::new(t);
        for i in 0..1000u32 {
            bus.submit(i % 3, Frame::data(CanId::Standard(0x100), &[0xAA; 8]).unwrap(), 0);
        }
        let done = bus.complete_until(u64::MAX);
        assert_eq!(done.len(), 1000);
        let span = done[999].2;
        assert_eq!(span, 1000 * 135_000);
        let per_second = 1000.0 * 1e9 / span as f64;
        assert!(per_second <= 9_000.0, "{per_second}");
        // Consecutive frames are spaced by exactly one frame time.
        for pair in done.windows(2) {
            assert_eq!(pair[1].2 - pair[0].2, 135_000);
        }
    }

    #[test]
    fn drain_returns_everything_and_empties_the_bus() {
        let mut bus = BusScheduler::new(timing(10_000));
        bus.submit(1u8, f("200#"), 0);
        bus.submit(2u8, f("300#"), 0);
        bus.submit(3u8, f("100#"), 0);
        assert!(bus.complete_until(0).is_empty());
        let drained: Vec<String> = bus.drain().iter().map(|(_, fr)| fr.to_string()).collect();
        assert_eq!(drained, ["100#", "200#", "300#"]);
        assert!(bus.is_idle());
        assert_eq!(bus.next_event_ns(), None);
    }
}
