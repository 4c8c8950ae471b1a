//! Tracking the `u8` sequence numbers of the datagrams a peer sends: gaps (lost datagrams), late
//! arrivals (reordering) and copies (duplicates), robust to the number wrapping from 255 to 0.
//!
//! The tracker keeps the highest number seen and a window of the [`WINDOW`] numbers at and behind it.
//! A number up to [`WINDOW`] ahead of the highest moves the window (the numbers skipped are counted
//! lost); a number less than [`WINDOW`] behind it is late — delivered, counted as reordered, and no longer
//! lost — or, if it was already seen, a duplicate. Cannelloni numbers datagrams, not frames, so the
//! counts are datagrams.
//!
//! A peer that restarts its numbering looks like a gap or a late datagram; nothing in the format tells
//! the two apart.

/// How many numbers behind the highest the tracker remembers; a number within this distance ahead is a
/// step forward, one within it behind is late or a duplicate.
pub const WINDOW: u8 = 128;

/// What one sequence number means, given those seen before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqEvent {
    /// The first datagram seen.
    First,
    /// The next number after the highest.
    InOrder,
    /// Ahead of the highest by more than one: `missing` numbers were skipped (counted lost until they
    /// arrive late).
    Gap { missing: u8 },
    /// Behind the highest and not seen before: delivered late, `behind` numbers behind the highest.
    /// `was_lost` says whether a gap had counted it lost (it had, unless it precedes the first datagram).
    Late { behind: u8, was_lost: bool },
    /// Seen before, within the window.
    Duplicate,
}

impl SeqEvent {
    /// False for a duplicate, whose frames should not enter the bus a second time.
    pub fn deliver(self) -> bool {
        !matches!(self, SeqEvent::Duplicate)
    }
}

/// Lost, reordered and duplicated datagrams from one peer.
#[derive(Debug, Clone, Default)]
pub struct SeqTracker {
    /// The highest number seen, `None` before the first datagram.
    highest: Option<u8>,
    /// Bit `i`: number `highest - i` has arrived.
    seen: u128,
    /// Bit `i`: number `highest - i` is at or after the first datagram (arrived or counted lost).
    passed: u128,
    lost: u64,
    reordered: u64,
    duplicated: u64,
}

fn low_bits(n: u32) -> u128 {
    if n >= 128 {
        u128::MAX
    } else {
        (1u128 << n) - 1
    }
}

fn shift_left(bits: u128, n: u32) -> u128 {
    if n >= 128 {
        0
    } else {
        bits << n
    }
}

impl SeqTracker {
    pub fn new() -> SeqTracker {
        SeqTracker::default()
    }

    /// Takes the next datagram's number into account.
    pub fn observe(&mut self, seq: u8) -> SeqEvent {
        let Some(highest) = self.highest else {
            self.highest = Some(seq);
            self.seen = 1;
            self.passed = 1;
            return SeqEvent::First;
        };
        let ahead = seq.wrapping_sub(highest);
        if ahead == 0 {
            self.duplicated += 1;
            return SeqEvent::Duplicate;
        }
        if ahead <= WINDOW {
            let step = u32::from(ahead);
            self.highest = Some(seq);
            self.seen = shift_left(self.seen, step) | 1;
            self.passed = shift_left(self.passed, step) | low_bits(step);
            let missing = ahead - 1;
            self.lost += u64::from(missing);
            return if missing == 0 {
                SeqEvent::InOrder
            } else {
                SeqEvent::Gap { missing }
            };
        }
        // Behind the highest by 1..WINDOW-1.
        let behind = highest.wrapping_sub(seq);
        let bit = 1u128 << behind;
        if self.seen & bit != 0 {
            self.duplicated += 1;
            return SeqEvent::Duplicate;
        }
        self.seen |= bit;
        self.reordered += 1;
        let was_lost = self.passed & bit != 0;
        if was_lost {
            self.lost = self.lost.saturating_sub(1);
        } else {
            self.passed |= bit;
        }
        SeqEvent::Late { behind, was_lost }
    }

    /// Datagrams skipped and not (yet) arrived late.
    pub fn lost(&self) -> u64 {
        self.lost
    }

    /// Datagrams that arrived after a later one.
    pub fn reordered(&self) -> u64 {
        self.reordered
    }

    /// Datagrams that arrived a second time.
    pub fn duplicated(&self) -> u64 {
        self.duplicated
    }

    /// The highest number seen so far.
    pub fn highest(&self) -> Option<u8> {
        self.highest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(seqs: &[u8]) -> (SeqTracker, Vec<SeqEvent>) {
        let mut tracker = SeqTracker::new();
        let events = seqs.iter().map(|&s| tracker.observe(s)).collect();
        (tracker, events)
    }

    fn counts(t: &SeqTracker) -> (u64, u64, u64) {
        (t.lost(), t.reordered(), t.duplicated())
    }

    #[test]
    fn an_unbroken_sequence_counts_nothing_across_the_wrap() {
        let seqs: Vec<u8> = (0..1000u32).map(|i| (i + 200) as u8).collect();
        let (t, events) = run(&seqs);
        assert_eq!(events[0], SeqEvent::First);
        assert!(events[1..].iter().all(|e| *e == SeqEvent::InOrder));
        assert_eq!(counts(&t), (0, 0, 0));
        assert_eq!(t.highest(), Some(((999 + 200) % 256) as u8));
    }

    #[test]
    fn gaps_count_the_missing_datagrams() {
        let (t, events) = run(&[10, 11, 14, 15, 20]);
        assert_eq!(events[2], SeqEvent::Gap { missing: 2 });
        assert_eq!(events[4], SeqEvent::Gap { missing: 4 });
        assert_eq!(counts(&t), (6, 0, 0));
    }

    #[test]
    fn a_gap_across_the_wrap() {
        let (t, events) = run(&[253, 254, 1]);
        assert_eq!(events[2], SeqEvent::Gap { missing: 2 });
        assert_eq!(counts(&t), (2, 0, 0));
    }

    #[test]
    fn a_swap_is_one_reordering_and_no_loss() {
        let (t, events) = run(&[1, 2, 4, 3, 5]);
        assert_eq!(events[2], SeqEvent::Gap { missing: 1 });
        assert_eq!(
            events[3],
            SeqEvent::Late {
                behind: 1,
                was_lost: true
            }
        );
        assert!(events[3].deliver());
        assert_eq!(counts(&t), (0, 1, 0));
    }

    #[test]
    fn a_swap_across_the_wrap() {
        let (t, _) = run(&[254, 0, 255, 1, 2]);
        assert_eq!(counts(&t), (0, 1, 0));
    }

    #[test]
    fn duplicates_are_counted_and_not_delivered() {
        let (t, events) = run(&[5, 5, 6, 7, 6, 255, 0]);
        assert_eq!(events[1], SeqEvent::Duplicate);
        assert!(!events[1].deliver());
        assert_eq!(events[4], SeqEvent::Duplicate);
        // 255 and 0 are behind 7 (within the window): never seen, so late; they precede the first
        // datagram, so nothing had counted them lost.
        assert_eq!(
            events[5],
            SeqEvent::Late {
                behind: 8,
                was_lost: false
            }
        );
        assert_eq!(counts(&t), (0, 2, 2));
        // A second copy of a late one is a duplicate too.
        let mut t = t;
        assert_eq!(t.observe(255), SeqEvent::Duplicate);
    }

    #[test]
    fn a_datagram_later_than_a_gap_and_a_copy_of_it() {
        let (t, _) = run(&[100, 110, 105, 105, 111]);
        assert_eq!(counts(&t), (8, 1, 1));
    }

    #[test]
    fn the_window_edge() {
        // 128 ahead is a step forward (127 lost); then the old 0 is 128 behind: treated as ahead again.
        let (t, events) = run(&[0, 128]);
        assert_eq!(events[1], SeqEvent::Gap { missing: 127 });
        assert_eq!(counts(&t), (127, 0, 0));
        // 127 behind is late.
        let (t, events) = run(&[0, 1, 127, 128, 1]);
        assert_eq!(events[4], SeqEvent::Duplicate);
        assert_eq!(counts(&t), (125, 0, 1));
        let (t, events) = run(&[0, 127, 1]);
        assert_eq!(
            events[2],
            SeqEvent::Late {
                behind: 126,
                was_lost: true
            }
        );
        assert_eq!(counts(&t), (125, 1, 0));
    }

    #[test]
    fn every_tenth_dropped_and_pairs_swapped_over_many_wraps() {
        // The pattern the loopback relay test applies, checked against the tracker directly.
        let mut sent = Vec::new();
        let (mut dropped, mut swapped) = (0u64, 0u64);
        let mut i = 0u32;
        // Ends with a datagram after the last drop: a loss shows only once a later datagram arrives.
        while i <= 2000 {
            if i % 10 == 9 {
                dropped += 1;
                i += 1;
                continue;
            }
            if i % 10 == 3 {
                sent.push((i + 1) as u8);
                sent.push(i as u8);
                swapped += 1;
                i += 2;
                continue;
            }
            sent.push(i as u8);
            i += 1;
        }
        let (t, _) = run(&sent);
        assert_eq!(counts(&t), (dropped, swapped, 0));
    }
}
