//! The broadcast manager of BCM mode, modelled on Linux `CAN_BCM` as socketcand drives it, without I/O:
//! cyclic send jobs ([`TxJobs`]) and receive operations ([`RxOps`]: content filters and subscriptions
//! with a throttle). Time is passed in, so the client thread owns the clock and tests can step it.
//!
//! Semantics (Linux `net/can/bcm.c`, with the flags socketcand sets):
//!
//! * `add` (`TX_SETUP` + `SETTIMER|STARTTIMER`) sends the frame at once and then every interval; an
//!   interval of zero sends it once and keeps the job. An `add` for an id that has a job replaces it and
//!   restarts its timer. Jobs are keyed by id (standard and extended ids are different keys).
//! * `update` (`TX_SETUP` without flags) replaces the content of a job; timers are untouched and nothing
//!   is sent. For an id without a job this server answers an error (the kernel would create a job that
//!   never sends).
//! * `filter` (`RX_SETUP` + `SETTIMER`) reports the first frame of its id and then every frame whose
//!   bytes under the mask differ from the last reported change; `subscribe` (`RX_FILTER_ID`) reports
//!   every frame of its id. With a throttle, a change within the throttle time of the last report is held
//!   back and the newest held change is reported when the throttle time has passed. One operation per id:
//!   a second `filter`/`subscribe` for an id replaces the first, `unsubscribe` removes it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use vcan::{CanId, Frame};

/// Frames one job sends at most per call of [`TxJobs::due`] to catch up (intervals far below the
/// caller's wake-up granularity); beyond that the job skips ahead instead of bursting.
pub const MAX_CATCH_UP: u32 = 100;

#[derive(Debug)]
struct TxJob {
    frame: Frame,
    interval: Duration,
    next: Option<Instant>,
}

/// The cyclic send jobs of one client, keyed by CAN id.
#[derive(Debug, Default)]
pub struct TxJobs {
    jobs: HashMap<CanId, TxJob>,
}

impl TxJobs {
    /// Adds or replaces the job for the frame's id; returns the frame to send now.
    pub fn add(&mut self, frame: Frame, interval: Duration, now: Instant) -> Frame {
        let next = if interval.is_zero() {
            None
        } else {
            now.checked_add(interval)
        };
        if let Some(id) = frame.id() {
            self.jobs.insert(
                id,
                TxJob {
                    frame: frame.clone(),
                    interval,
                    next,
                },
            );
        }
        frame
    }

    /// Replaces the content of the job for the frame's id; `false` if there is none.
    pub fn update(&mut self, frame: Frame) -> bool {
        match frame.id().and_then(|id| self.jobs.get_mut(&id)) {
            Some(job) => {
                job.frame = frame;
                true
            }
            None => false,
        }
    }

    /// Ends the job for `id`; `false` if there is none.
    pub fn delete(&mut self, id: CanId) -> bool {
        self.jobs.remove(&id).is_some()
    }

    pub fn clear(&mut self) {
        self.jobs.clear();
    }

    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// When the next job is due.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.jobs.values().filter_map(|j| j.next).min()
    }

    /// Appends the frames due at `now` to `out` (in deadline order per job) and schedules the next ones.
    pub fn due(&mut self, now: Instant, out: &mut Vec<Frame>) {
        for job in self.jobs.values_mut() {
            let mut sent = 0;
            while let Some(next) = job.next.filter(|&n| n <= now) {
                if sent == MAX_CATCH_UP {
                    job.next = now.checked_add(job.interval);
                    break;
                }
                out.push(job.frame.clone());
                sent += 1;
                job.next = next.checked_add(job.interval);
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum RxKind {
    /// Report changes of the bytes under the mask.
    Filter([u8; 8]),
    /// Report every frame.
    Subscribe,
}

#[derive(Debug)]
struct RxOp {
    kind: RxKind,
    throttle: Duration,
    /// The data of the last change seen (padded to 8 bytes), `None` before the first frame.
    last_change: Option<[u8; 8]>,
    /// When a change was last reported.
    last_report: Option<Instant>,
    /// A change held back by the throttle, with its hub timestamp.
    held: Option<(Frame, u64)>,
}

impl RxOp {
    fn throttle_end(&self) -> Option<Instant> {
        if self.throttle.is_zero() {
            return None;
        }
        self.last_report.and_then(|t| t.checked_add(self.throttle))
    }
}

/// The receive operations of one client, keyed by CAN id.
#[derive(Debug, Default)]
pub struct RxOps {
    ops: HashMap<CanId, RxOp>,
}

/// A frame to report to the client, with the hub timestamp it was received with.
pub type Report = (Frame, u64);

impl RxOps {
    /// A content filter on `id`: `mask` are the first bytes of an 8-byte mask (the rest is zero).
    pub fn filter(&mut self, id: CanId, mask: &[u8], throttle: Duration) {
        let mut full = [0u8; 8];
        for (dst, src) in full.iter_mut().zip(mask) {
            *dst = *src;
        }
        self.insert(id, RxKind::Filter(full), throttle);
    }

    /// Every frame of `id`.
    pub fn subscribe(&mut self, id: CanId, throttle: Duration) {
        self.insert(id, RxKind::Subscribe, throttle);
    }

    fn insert(&mut self, id: CanId, kind: RxKind, throttle: Duration) {
        self.ops.insert(
            id,
            RxOp {
                kind,
                throttle,
                last_change: None,
                last_report: None,
                held: None,
            },
        );
    }

    /// Ends the filter or subscription of `id`; `false` if there is none.
    pub fn unsubscribe(&mut self, id: CanId) -> bool {
        self.ops.remove(&id).is_some()
    }

    pub fn clear(&mut self) {
        self.ops.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// A classic data frame from the bus: what to report now, if anything.
    pub fn on_frame(&mut self, frame: &Frame, timestamp_ns: u64, now: Instant) -> Option<Report> {
        let op = self.ops.get_mut(&frame.id()?)?;
        let mut data = [0u8; 8];
        for (dst, src) in data.iter_mut().zip(frame.payload()) {
            *dst = *src;
        }
        let changed = match (&op.kind, op.last_change) {
            (RxKind::Subscribe, _) | (RxKind::Filter(_), None) => true,
            (RxKind::Filter(mask), Some(last)) => mask
                .iter()
                .zip(data.iter().zip(last))
                .any(|(m, (d, l))| d & m != l & m),
        };
        if !changed {
            return None;
        }
        op.last_change = Some(data);
        match op.throttle_end() {
            Some(end) if now < end => {
                op.held = Some((frame.clone(), timestamp_ns));
                None
            }
            _ => {
                op.last_report = Some(now);
                op.held = None;
                Some((frame.clone(), timestamp_ns))
            }
        }
    }

    /// When the next held-back change is due.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.ops
            .values()
            .filter(|op| op.held.is_some())
            .filter_map(|op| op.throttle_end())
            .min()
    }

    /// Appends the held-back changes whose throttle time has passed to `out`.
    pub fn due(&mut self, now: Instant, out: &mut Vec<Report>) {
        for op in self.ops.values_mut() {
            if op.throttle_end().is_some_and(|end| end <= now) {
                if let Some(held) = op.held.take() {
                    op.last_report = Some(now);
                    out.push(held);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(id: u32, data: &[u8]) -> Frame {
        Frame::data(CanId::standard(id).unwrap(), data).unwrap()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_job_sends_at_once_then_every_interval() {
        let t0 = Instant::now();
        let mut jobs = TxJobs::default();
        let first = jobs.add(frame(0x123, &[1]), ms(100), t0);
        assert_eq!(first, frame(0x123, &[1]));
        assert_eq!(jobs.next_deadline(), Some(t0 + ms(100)));
        let mut out = Vec::new();
        jobs.due(t0 + ms(99), &mut out);
        assert!(out.is_empty());
        jobs.due(t0 + ms(100), &mut out);
        assert_eq!(out.len(), 1);
        assert!(jobs.update(frame(0x123, &[2])));
        // Late wake-up: both missed frames go out, the schedule does not drift.
        jobs.due(t0 + ms(301), &mut out);
        assert_eq!(
            out,
            vec![frame(0x123, &[1]), frame(0x123, &[2]), frame(0x123, &[2])]
        );
        assert_eq!(jobs.next_deadline(), Some(t0 + ms(400)));
        assert!(jobs.delete(CanId::standard(0x123).unwrap()));
        assert!(!jobs.delete(CanId::standard(0x123).unwrap()));
        assert_eq!(jobs.next_deadline(), None);
    }

    #[test]
    fn a_zero_interval_sends_once_and_update_needs_a_job() {
        let t0 = Instant::now();
        let mut jobs = TxJobs::default();
        jobs.add(frame(0x10, &[]), Duration::ZERO, t0);
        assert_eq!(jobs.next_deadline(), None);
        assert_eq!(jobs.len(), 1);
        assert!(!jobs.update(frame(0x11, &[])));
    }

    #[test]
    fn catching_up_is_bounded() {
        let t0 = Instant::now();
        let mut jobs = TxJobs::default();
        jobs.add(frame(0x1, &[]), Duration::from_micros(10), t0);
        let mut out = Vec::new();
        jobs.due(t0 + ms(10), &mut out);
        assert_eq!(out.len(), MAX_CATCH_UP as usize);
        assert_eq!(
            jobs.next_deadline(),
            Some(t0 + ms(10) + Duration::from_micros(10))
        );
    }

    #[test]
    fn a_filter_reports_the_first_frame_and_masked_changes() {
        let t0 = Instant::now();
        let mut rx = RxOps::default();
        rx.filter(CanId::standard(0x123).unwrap(), &[0xF0], Duration::ZERO);
        assert!(rx.on_frame(&frame(0x123, &[0x11, 0]), 1, t0).is_some());
        // Only the low nibble (unmasked) and an unmasked byte changed.
        assert!(rx.on_frame(&frame(0x123, &[0x1F, 5]), 2, t0).is_none());
        assert_eq!(
            rx.on_frame(&frame(0x123, &[0x2F, 5]), 3, t0),
            Some((frame(0x123, &[0x2F, 5]), 3))
        );
        assert!(rx.on_frame(&frame(0x124, &[0xFF]), 4, t0).is_none());
    }

    #[test]
    fn a_throttle_holds_back_the_newest_change() {
        let t0 = Instant::now();
        let mut rx = RxOps::default();
        rx.subscribe(CanId::standard(0x5).unwrap(), ms(100));
        assert!(rx.on_frame(&frame(0x5, &[1]), 1, t0).is_some());
        assert!(rx.on_frame(&frame(0x5, &[2]), 2, t0 + ms(10)).is_none());
        assert!(rx.on_frame(&frame(0x5, &[3]), 3, t0 + ms(20)).is_none());
        assert_eq!(rx.next_deadline(), Some(t0 + ms(100)));
        let mut out = Vec::new();
        rx.due(t0 + ms(50), &mut out);
        assert!(out.is_empty());
        rx.due(t0 + ms(100), &mut out);
        assert_eq!(out, vec![(frame(0x5, &[3]), 3)]);
        assert_eq!(rx.next_deadline(), None);
        assert!(rx.on_frame(&frame(0x5, &[4]), 4, t0 + ms(150)).is_none());
        assert!(rx.on_frame(&frame(0x5, &[5]), 5, t0 + ms(200)).is_some());
        assert!(rx.unsubscribe(CanId::standard(0x5).unwrap()));
        assert!(rx.on_frame(&frame(0x5, &[6]), 6, t0 + ms(400)).is_none());
    }
}
