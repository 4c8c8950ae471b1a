//! Fault injection on the userspace bus: drop, delay, duplicate, reorder and corrupt frames, unplug a node,
//! load the bus, babble.
//!
//! Faults act in the hub on the frames nodes send, so every environment joined to the hub (native,
//! container, microVM, board) sees the same fault. This module holds the public types ([`Fault`],
//! [`FaultKind`], [`FrameSelector`], [`FaultReport`]) and the pure engine the hub drives with explicit
//! times ([`FaultEngine`]); the hub's handle methods are [`crate::hub::Hub::add_fault`] and its siblings.
//!
//! * **Determinism**: every random decision of a fault is a function of its seed and of `n`, the number of
//!   frames the fault has matched so far (splitmix64), so the same fault with the same seed acts on the
//!   n-th matching frame identically in every environment, whatever the timing.
//! * **Pipeline**: a frame from a node passes the active faults in the order they were added. A drop ends
//!   it; corruption changes its payload; duplication multiplies it; a delay postpones every copy; a reorder
//!   holds it back. A frame released by a reorder skips the faults after the reorder.
//! * **Names**: `sender` and `CutLink::node` are substrings of the node's hello name (`node<N>` for a node
//!   that gave none). Frames the hub itself puts on the bus come from `hub`; generated ones from
//!   `bus-load` and `babbler`. Faults do not act on those frames (except that a cut node receives
//!   nothing).
//! * **With a bus timing** every fault acts before a frame enters its sender's transmit queue: a delayed
//!   frame joins the queue when its delay is over (like an ECU sending late), so it still arbitrates.

use std::collections::BinaryHeap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::bustime::BusTiming;
use crate::frame::{CanId, Frame};

/// Linux `CAN_ERR_BUSOFF`: the controller went bus-off.
pub const CAN_ERR_BUSOFF: u32 = 0x40;
/// Linux `CAN_ERR_RESTARTED`: the controller restarted.
pub const CAN_ERR_RESTARTED: u32 = 0x100;
/// Frames a generator emits at most per [`FaultEngine::advance`] when it is behind, each with its own due
/// time, so a hub woken late (the host busy) still puts every frame on the bus in bus time: 65,536 frames
/// are ~8.8 s of back-to-back 8-byte frames at 1 Mbit/s. Only a hub stalled for longer skips periods.
pub const GENERATOR_BURST: u32 = 65_536;
/// How long a reorder holds a frame at most.
pub const REORDER_HOLD_MAX: Duration = Duration::from_millis(100);

/// Which frames a fault acts on. Every field that is set must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FrameSelector {
    /// `(id, mask)`: frames whose identifier (without flag bits) satisfies `frame_id & mask == id & mask`.
    /// Error frames never match.
    pub id: Option<(u32, u32)>,
    /// Only extended (`true`) or only standard (`false`) identifiers; error frames never match.
    pub extended: Option<bool>,
    /// A substring of the sending node's hello name, e.g. `hvac-controller`.
    pub sender: Option<String>,
}

impl FrameSelector {
    /// Every frame, error frames included.
    pub fn all() -> Self {
        FrameSelector::default()
    }

    /// Exactly this identifier (standard or extended).
    pub fn id(id: u32) -> Self {
        FrameSelector {
            id: Some((id, crate::frame::EFF_MAX)),
            ..FrameSelector::default()
        }
    }

    pub fn matches(&self, frame: &Frame, sender_name: &str) -> bool {
        if let Some((id, mask)) = self.id {
            match frame.id() {
                Some(frame_id) if frame_id.raw() & mask == id & mask => {}
                _ => return false,
            }
        }
        if let Some(extended) = self.extended {
            match frame.id() {
                Some(frame_id) if frame_id.is_extended() == extended => {}
                _ => return false,
            }
        }
        if let Some(sender) = &self.sender {
            if !sender_name.contains(sender.as_str()) {
                return false;
            }
        }
        true
    }

    fn describe(&self) -> String {
        let mut parts = Vec::new();
        match self.id {
            Some((id, mask)) if mask == crate::frame::EFF_MAX || mask == u32::MAX => {
                parts.push(format!("id 0x{id:X}"))
            }
            Some((id, mask)) => parts.push(format!("id 0x{id:X}/0x{mask:X}")),
            None => {}
        }
        match self.extended {
            Some(true) => parts.push("extended ids".to_string()),
            Some(false) => parts.push("standard ids".to_string()),
            None => {}
        }
        if let Some(sender) = &self.sender {
            parts.push(format!("from `{sender}`"));
        }
        if parts.is_empty() {
            "all frames".to_string()
        } else {
            parts.join(" ")
        }
    }
}

/// Which matching frames a drop drops.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DropMode {
    All,
    /// Each matching frame with this probability, in percent (0 to 100).
    Percent(f64),
    /// The n-th, 2n-th, ... matching frame.
    EveryNth(u32),
    /// The next n matching frames, then none.
    NextN(u32),
}

/// How a corruption changes the masked payload bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CorruptMode {
    /// Inverts them (payload xor mask).
    Flip,
    /// Replaces them with seeded random bits.
    Random,
}

/// What a fault does.
#[derive(Debug, Clone, PartialEq)]
pub enum FaultKind {
    Drop(DropMode),
    /// Each matching frame is delivered `delay` ± a uniform `jitter` later (never earlier than sent).
    Delay {
        delay: Duration,
        jitter: Duration,
    },
    /// Each matching frame is delivered `1 + copies` times.
    Duplicate {
        copies: u32,
    },
    /// A matching frame is held back until `depth` more matching frames have passed (at most
    /// [`REORDER_HOLD_MAX`]); then the next matching frame is held.
    Reorder {
        depth: u32,
    },
    /// Payload bytes xor `mask` ([`CorruptMode::Flip`]) or the bits set in `mask` replaced by random bits.
    Corrupt {
        mask: Vec<u8>,
        mode: CorruptMode,
    },
    /// The node (a substring of its hello name) is unplugged: its frames reach nobody and nothing reaches
    /// it. With `bus_off` it gets a `CAN_ERR_BUSOFF` error frame when the cut starts and a
    /// `CAN_ERR_RESTARTED` one when it ends (if it asked for error frames). The selector is not used.
    CutLink {
        node: String,
        bus_off: bool,
    },
    /// Filler frames from a virtual node `bus-load` (id `id`, `dlc` zero bytes) taking `percent` of the
    /// bus time. Needs a bus timing.
    BusLoad {
        percent: f64,
        id: CanId,
        dlc: u8,
    },
    /// A virtual node `babbler` sending `id` with `data`: `rate` frames per second, or back to back at the
    /// bitrate when `None` (which needs a bus timing).
    Babble {
        id: CanId,
        data: Vec<u8>,
        rate: Option<f64>,
    },
}

/// One fault.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    pub kind: FaultKind,
    pub select: FrameSelector,
    pub seed: u64,
    /// The fault ends by itself this long after it was added.
    pub duration: Option<Duration>,
}

impl Fault {
    /// A fault of `kind` on every frame, seed 0, no end.
    pub fn new(kind: FaultKind) -> Self {
        Fault {
            kind,
            select: FrameSelector::all(),
            seed: 0,
            duration: None,
        }
    }

    /// One line, e.g. `drop 30% of id 0x3A0 (seed 42)`.
    pub fn describe(&self) -> String {
        let what = self.select.describe();
        let mut line = match &self.kind {
            FaultKind::Drop(DropMode::All) => format!("drop {what}"),
            FaultKind::Drop(DropMode::Percent(p)) => format!("drop {p}% of {what}"),
            FaultKind::Drop(DropMode::EveryNth(n)) => format!("drop every {n}th of {what}"),
            FaultKind::Drop(DropMode::NextN(n)) => format!("drop the next {n} of {what}"),
            FaultKind::Delay { delay, jitter } if jitter.is_zero() => format!("delay {what} by {delay:?}"),
            FaultKind::Delay { delay, jitter } => format!("delay {what} by {delay:?} ± {jitter:?}"),
            FaultKind::Duplicate { copies } => format!("duplicate {what} ({copies} extra copies)"),
            FaultKind::Reorder { depth } => format!("reorder {what} (depth {depth})"),
            FaultKind::Corrupt { mask, mode } => {
                let mut hex = String::new();
                for b in mask {
                    let _ = write!(hex, "{b:02X}");
                }
                let how = match mode {
                    CorruptMode::Flip => "flip",
                    CorruptMode::Random => "randomise",
                };
                format!("corrupt {what} ({how} mask {hex})")
            }
            FaultKind::CutLink { node, bus_off } => {
                format!(
                    "cut the link of `{node}`{}",
                    if *bus_off { " (bus-off)" } else { "" }
                )
            }
            FaultKind::BusLoad { percent, id, dlc } => {
                format!("load the bus {percent}% with id 0x{:X} dlc {dlc}", id.raw())
            }
            FaultKind::Babble { id, rate, .. } => match rate {
                Some(rate) => format!("babble id 0x{:X} at {rate} frames/s", id.raw()),
                None => format!("babble id 0x{:X} back to back", id.raw()),
            },
        };
        let _ = write!(line, " (seed {})", self.seed);
        if let Some(duration) = self.duration {
            let _ = write!(line, " for {duration:?}");
        }
        line
    }
}

/// A fault added to a hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FaultId(pub u64);

/// What a fault did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultReport {
    pub id: u64,
    pub description: String,
    /// Frames the selector matched while the fault was active.
    pub matched: u64,
    /// Frames dropped, delayed, duplicated, corrupted, held or generated.
    pub affected: u64,
    /// Wall-clock ns since the Unix epoch.
    pub started_ns: u64,
    pub ended_ns: Option<u64>,
}

/// Why a fault was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FaultError(pub String);

/// splitmix64: the finaliser used to derive every random decision from (seed, n).
pub fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The random word number `salt` for the n-th matching frame of a fault with `seed`.
fn random(seed: u64, n: u64, salt: u64) -> u64 {
    splitmix64(seed ^ splitmix64(n.wrapping_mul(0x1000_0000_01B3) ^ splitmix64(salt)))
}

/// A uniform number in [0, 1).
fn unit(x: u64) -> f64 {
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// Who sent a frame the engine hands back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin<K> {
    /// The node the frame came from.
    Node(K),
    /// A virtual node: `hub`, `bus-load` or `babbler`.
    Virtual(&'static str),
}

/// What the hub must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output<K> {
    /// Put `frame` on the bus at `at_ns` (now, or the due time of a delayed or generated frame).
    Frame {
        from: Origin<K>,
        frame: Frame,
        at_ns: u64,
    },
    /// The cuts changed: the hub re-evaluates which nodes are cut. When `bus_off`, the nodes matching
    /// `node` get a bus-off (`started`) or restarted error frame.
    Cut {
        node: String,
        bus_off: bool,
        started: bool,
    },
}

struct Held<K> {
    frames: Vec<(Origin<K>, Frame)>,
    passed: u32,
    since_ns: u64,
}

struct Generator {
    frame: Frame,
    period_ns: u64,
    next_ns: u64,
    origin: &'static str,
}

struct Active<K> {
    id: u64,
    fault: Fault,
    report: FaultReport,
    ends_ns: Option<u64>,
    held: Option<Held<K>>,
    generator: Option<Generator>,
}

struct Delayed<K> {
    at_ns: u64,
    order: u64,
    from: Origin<K>,
    frame: Frame,
}

impl<K> PartialEq for Delayed<K> {
    fn eq(&self, other: &Self) -> bool {
        (self.at_ns, self.order) == (other.at_ns, other.order)
    }
}
impl<K> Eq for Delayed<K> {}
impl<K> PartialOrd for Delayed<K> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<K> Ord for Delayed<K> {
    /// Reversed: `BinaryHeap` is a max-heap and the earliest due frame must come first.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.at_ns, other.order).cmp(&(self.at_ns, self.order))
    }
}

/// The faults of one bus and the frames they hold, driven by the hub with explicit times.
pub struct FaultEngine<K> {
    active: Vec<Active<K>>,
    ended: Vec<FaultReport>,
    delayed: BinaryHeap<Delayed<K>>,
    next_id: u64,
    order: u64,
    timing: Option<BusTiming>,
}

impl<K: Clone> Default for FaultEngine<K> {
    fn default() -> Self {
        Self::new(None)
    }
}

impl<K: Clone> FaultEngine<K> {
    pub fn new(timing: Option<BusTiming>) -> Self {
        FaultEngine {
            active: Vec::new(),
            ended: Vec::new(),
            delayed: BinaryHeap::new(),
            next_id: 1,
            order: 0,
            timing,
        }
    }

    /// True if no fault is active and no frame is pending: frames can bypass the engine.
    pub fn is_idle(&self) -> bool {
        self.active.is_empty() && self.delayed.is_empty()
    }

    /// Whether an active cut unplugs the node named `name`.
    pub fn is_cut(&self, name: &str) -> bool {
        self.active.iter().any(|a| match &a.fault.kind {
            FaultKind::CutLink { node, .. } => name.contains(node.as_str()),
            _ => false,
        })
    }

    /// Checks a fault against the bus timing it would run with.
    pub fn validate(fault: &Fault, timing: Option<BusTiming>) -> Result<(), FaultError> {
        let err = |reason: String| Err(FaultError(reason));
        match &fault.kind {
            FaultKind::Drop(DropMode::Percent(p)) if !(0.0..=100.0).contains(p) => {
                err(format!("drop percentage {p} is not in 0..=100"))
            }
            FaultKind::Drop(DropMode::EveryNth(0)) => {
                err("drop every 0th frame: n must be at least 1".into())
            }
            FaultKind::CutLink { node, .. } if node.is_empty() => {
                err("a cut link needs a node name (a substring of its hello name)".into())
            }
            FaultKind::BusLoad { percent, .. } if !(*percent > 0.0 && *percent <= 100.0) => {
                err(format!("bus load {percent}% is not in (0, 100]"))
            }
            FaultKind::BusLoad { dlc, .. } if *dlc > 8 => err(format!("bus load dlc {dlc} is above 8")),
            FaultKind::BusLoad { .. } if timing.is_none() => {
                err("a bus load needs a bus timing (the hub has no bitrate)".into())
            }
            FaultKind::Babble { rate: Some(rate), .. } if !(rate.is_finite() && *rate > 0.0) => {
                err(format!("babble rate {rate} frames/s is not a positive number"))
            }
            FaultKind::Babble { rate: None, .. } if timing.is_none() => {
                err("back-to-back babble needs a bus timing (the hub has no bitrate); give a rate".into())
            }
            FaultKind::Babble { id, data, .. } => babble_frame(*id, data).map(|_| ()),
            _ => Ok(()),
        }
    }

    /// Adds a fault active from `now_ns`.
    pub fn add(&mut self, fault: Fault, now_ns: u64) -> Result<(FaultId, Vec<Output<K>>), FaultError> {
        Self::validate(&fault, self.timing)?;
        let id = self.next_id;
        self.next_id += 1;
        let mut out = Vec::new();
        let generator = self.generator(&fault, now_ns)?;
        if let FaultKind::CutLink { node, bus_off } = &fault.kind {
            out.push(Output::Cut {
                node: node.clone(),
                bus_off: *bus_off,
                started: true,
            });
        }
        let ends_ns = fault.duration.map(|d| now_ns.saturating_add(d.as_nanos() as u64));
        self.active.push(Active {
            id,
            report: FaultReport {
                id,
                description: fault.describe(),
                matched: 0,
                affected: 0,
                started_ns: now_ns,
                ended_ns: None,
            },
            fault,
            ends_ns,
            held: None,
            generator,
        });
        Ok((FaultId(id), out))
    }

    fn generator(&self, fault: &Fault, now_ns: u64) -> Result<Option<Generator>, FaultError> {
        let (frame, period_ns, origin) = match &fault.kind {
            FaultKind::BusLoad { percent, id, dlc } => {
                let frame =
                    Frame::data(*id, &vec![0u8; usize::from(*dlc)]).map_err(|e| FaultError(e.to_string()))?;
                let Some(timing) = self.timing else {
                    return Err(FaultError("a bus load needs a bus timing".into()));
                };
                let period = (timing.frame_ns(&frame) as f64 * 100.0 / percent).round() as u64;
                (frame, period, "bus-load")
            }
            FaultKind::Babble { id, data, rate } => {
                let frame = babble_frame(*id, data)?;
                let period = match (rate, self.timing) {
                    (Some(rate), _) => (1e9 / rate).round() as u64,
                    (None, Some(timing)) => timing.frame_ns(&frame),
                    (None, None) => return Err(FaultError("back-to-back babble needs a bus timing".into())),
                };
                (frame, period, "babbler")
            }
            _ => return Ok(None),
        };
        Ok(Some(Generator {
            frame,
            period_ns: period_ns.max(1),
            next_ns: now_ns,
            origin,
        }))
    }

    /// Changes the bus timing; refused while a fault that needs one is active.
    pub fn set_timing(&mut self, timing: Option<BusTiming>) -> Result<(), FaultError> {
        for a in &self.active {
            if let Err(e) = Self::validate(&a.fault, timing) {
                return Err(FaultError(format!(
                    "fault {} ({}) is active: {e}",
                    a.id, a.report.description
                )));
            }
        }
        self.timing = timing;
        for i in 0..self.active.len() {
            let next = self.active[i].generator.as_ref().map(|g| g.next_ns);
            if let Some(next) = next {
                let fault = self.active[i].fault.clone();
                if let Ok(Some(mut g)) = self.generator(&fault, next) {
                    g.next_ns = next;
                    self.active[i].generator = Some(g);
                }
            }
        }
        Ok(())
    }

    /// Ends fault `id` now: held frames are released, a cut is restored, a generator stops. Delayed
    /// frames are still delivered when due.
    pub fn remove(&mut self, id: FaultId, now_ns: u64, out: &mut Vec<Output<K>>) -> Option<FaultReport> {
        let index = self.active.iter().position(|a| a.id == id.0)?;
        let report = self.end(index, now_ns, out);
        Some(report)
    }

    fn end(&mut self, index: usize, now_ns: u64, out: &mut Vec<Output<K>>) -> FaultReport {
        let mut active = self.active.remove(index);
        if let Some(held) = active.held.take() {
            for (from, frame) in held.frames {
                out.push(Output::Frame {
                    from,
                    frame,
                    at_ns: now_ns,
                });
            }
        }
        if let FaultKind::CutLink { node, bus_off } = &active.fault.kind {
            out.push(Output::Cut {
                node: node.clone(),
                bus_off: *bus_off,
                started: false,
            });
        }
        active.report.ended_ns = Some(now_ns);
        self.ended.push(active.report.clone());
        active.report
    }

    /// Ends every fault and forgets them; the reports of all faults since the last clear.
    pub fn clear(&mut self, now_ns: u64, out: &mut Vec<Output<K>>) -> Vec<FaultReport> {
        while !self.active.is_empty() {
            self.end(0, now_ns, out);
        }
        let mut reports = std::mem::take(&mut self.ended);
        reports.sort_by_key(|r| r.id);
        reports
    }

    /// The reports of all faults since the last clear, active ones with their counts so far.
    pub fn reports(&self) -> Vec<FaultReport> {
        let mut reports: Vec<FaultReport> = self
            .ended
            .iter()
            .cloned()
            .chain(self.active.iter().map(|a| a.report.clone()))
            .collect();
        reports.sort_by_key(|r| r.id);
        reports
    }

    /// The next time [`FaultEngine::advance`] has something to do.
    pub fn next_deadline(&self) -> Option<u64> {
        let hold = REORDER_HOLD_MAX.as_nanos() as u64;
        let mut next = self.delayed.peek().map(|d| d.at_ns);
        let mut consider = |t: u64| next = Some(next.map_or(t, |n: u64| n.min(t)));
        for a in &self.active {
            if let Some(end) = a.ends_ns {
                consider(end);
            }
            if let Some(held) = &a.held {
                consider(held.since_ns.saturating_add(hold));
            }
            if let Some(g) = &a.generator {
                consider(g.next_ns);
            }
        }
        next
    }

    /// Does everything due at `now_ns`: faults whose duration is over end, reorders release frames held
    /// too long, delayed frames come due, generators emit (a generator that fell behind catches up, at most
    /// [`GENERATOR_BURST`] frames per call; only older missed periods are skipped).
    pub fn advance(&mut self, now_ns: u64, out: &mut Vec<Output<K>>) {
        let hold = REORDER_HOLD_MAX.as_nanos() as u64;
        let mut i = 0;
        while i < self.active.len() {
            if self.active[i].ends_ns.is_some_and(|end| end <= now_ns) {
                let end = self.active[i].ends_ns.unwrap_or(now_ns);
                self.end(i, end, out);
                continue;
            }
            let active = &mut self.active[i];
            if active
                .held
                .as_ref()
                .is_some_and(|h| h.since_ns.saturating_add(hold) <= now_ns)
            {
                if let Some(held) = active.held.take() {
                    let at = held.since_ns.saturating_add(hold);
                    for (from, frame) in held.frames {
                        out.push(Output::Frame {
                            from,
                            frame,
                            at_ns: at,
                        });
                    }
                }
            }
            if let Some(g) = &mut active.generator {
                let mut burst = 0;
                while g.next_ns <= now_ns && burst < GENERATOR_BURST {
                    out.push(Output::Frame {
                        from: Origin::Virtual(g.origin),
                        frame: g.frame.clone(),
                        at_ns: g.next_ns,
                    });
                    active.report.affected += 1;
                    g.next_ns += g.period_ns;
                    burst += 1;
                }
                if g.next_ns <= now_ns {
                    let behind = (now_ns - g.next_ns) / g.period_ns;
                    g.next_ns += (behind + 1) * g.period_ns;
                }
            }
            i += 1;
        }
        while self.delayed.peek().is_some_and(|d| d.at_ns <= now_ns) {
            if let Some(d) = self.delayed.pop() {
                out.push(Output::Frame {
                    from: d.from,
                    frame: d.frame,
                    at_ns: d.at_ns,
                });
            }
        }
    }

    /// Passes a frame a node sent at `now_ns` through the active faults; what is to be put on the bus (now
    /// or later) goes to `out` or is kept for [`FaultEngine::advance`].
    pub fn on_frame(
        &mut self,
        from: K,
        sender_name: &str,
        frame: Frame,
        now_ns: u64,
        out: &mut Vec<Output<K>>,
    ) {
        // An unplugged node's frames reach nobody, whatever the other faults.
        let cut = self.active.iter_mut().find(|a| {
            matches!(&a.fault.kind, FaultKind::CutLink { node, .. } if sender_name.contains(node.as_str()))
        });
        if let Some(cut) = cut {
            cut.report.matched += 1;
            cut.report.affected += 1;
            return;
        }
        // Copies of the frame with their delay so far.
        let mut copies: Vec<(Frame, u64)> = vec![(frame, 0)];
        let mut released: Vec<(Origin<K>, Frame)> = Vec::new();
        for active in &mut self.active {
            if copies.is_empty() {
                break;
            }
            if matches!(
                active.fault.kind,
                FaultKind::CutLink { .. } | FaultKind::BusLoad { .. } | FaultKind::Babble { .. }
            ) {
                continue;
            }
            if !active.fault.select.matches(&copies[0].0, sender_name) {
                continue;
            }
            active.report.matched += 1;
            let n = active.report.matched;
            let seed = active.fault.seed;
            match &active.fault.kind {
                FaultKind::Drop(mode) => {
                    let drop = match *mode {
                        DropMode::All => true,
                        DropMode::Percent(p) => unit(random(seed, n, 0)) * 100.0 < p,
                        DropMode::EveryNth(k) => n % u64::from(k.max(1)) == 0,
                        DropMode::NextN(k) => n <= u64::from(k),
                    };
                    if drop {
                        active.report.affected += 1;
                        copies.clear();
                    }
                }
                FaultKind::Delay { delay, jitter } => {
                    let delay = delay.as_nanos() as i128;
                    let jitter = jitter.as_nanos() as i128;
                    for (c, (_, d)) in copies.iter_mut().enumerate() {
                        let offset = if jitter > 0 {
                            let u = unit(random(seed, n, 1 + c as u64));
                            ((u * 2.0 - 1.0) * jitter as f64).round() as i128
                        } else {
                            0
                        };
                        let extra = (delay + offset).max(0) as u64;
                        *d = d.saturating_add(extra);
                    }
                    active.report.affected += 1;
                }
                FaultKind::Duplicate { copies: extra } => {
                    let originals = copies.clone();
                    for _ in 0..*extra {
                        copies.extend(originals.iter().cloned());
                    }
                    active.report.affected += 1;
                }
                FaultKind::Corrupt { mask, mode } => {
                    let mut changed = false;
                    for (frame, _) in copies.iter_mut() {
                        if let Some(corrupted) = corrupt(frame, mask, *mode, seed, n) {
                            changed |= corrupted != *frame;
                            *frame = corrupted;
                        }
                    }
                    if changed {
                        active.report.affected += 1;
                    }
                }
                FaultKind::Reorder { depth } => match &mut active.held {
                    None => {
                        active.held = Some(Held {
                            frames: copies
                                .drain(..)
                                .map(|(f, _)| (Origin::Node(from.clone()), f))
                                .collect(),
                            passed: 0,
                            since_ns: now_ns,
                        });
                        active.report.affected += 1;
                    }
                    Some(held) => {
                        held.passed += 1;
                        if held.passed >= *depth {
                            if let Some(held) = active.held.take() {
                                released.extend(held.frames);
                            }
                        }
                    }
                },
                FaultKind::CutLink { .. } | FaultKind::BusLoad { .. } | FaultKind::Babble { .. } => {}
            }
        }
        for (frame, delay) in copies {
            if delay == 0 {
                out.push(Output::Frame {
                    from: Origin::Node(from.clone()),
                    frame,
                    at_ns: now_ns,
                });
            } else {
                self.order += 1;
                self.delayed.push(Delayed {
                    at_ns: now_ns.saturating_add(delay),
                    order: self.order,
                    from: Origin::Node(from.clone()),
                    frame,
                });
            }
        }
        for (from, frame) in released {
            out.push(Output::Frame {
                from,
                frame,
                at_ns: now_ns,
            });
        }
    }
}

fn babble_frame(id: CanId, data: &[u8]) -> Result<Frame, FaultError> {
    let frame = if data.len() <= 8 {
        Frame::data(id, data)
    } else {
        Frame::fd(id, data, crate::frame::FdFlags::default())
    };
    frame.map_err(|e| FaultError(format!("babble frame: {e}")))
}

/// The frame with its payload corrupted; `None` for frames without a payload to corrupt.
fn corrupt(frame: &Frame, mask: &[u8], mode: CorruptMode, seed: u64, n: u64) -> Option<Frame> {
    let mut data = match frame {
        Frame::Data { data, .. } | Frame::Fd { data, .. } => data.as_slice().to_vec(),
        Frame::Remote { .. } | Frame::Error { .. } => return None,
    };
    for (i, (byte, m)) in data.iter_mut().zip(mask).enumerate() {
        match mode {
            CorruptMode::Flip => *byte ^= m,
            CorruptMode::Random => {
                let r = random(seed, n, 100 + i as u64) as u8;
                *byte = (*byte & !m) | (r & m);
            }
        }
    }
    match frame {
        Frame::Data { id, .. } => Frame::data(*id, &data).ok(),
        Frame::Fd { id, flags, .. } => Frame::fd(*id, &data, *flags).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bittiming::{Bitrate, Stuffing};

    fn f(text: &str) -> Frame {
        text.parse().unwrap()
    }

    fn fault(kind: FaultKind, select: FrameSelector, seed: u64) -> Fault {
        Fault {
            kind,
            select,
            seed,
            duration: None,
        }
    }

    /// The frames put on the bus now, as candump text.
    fn sent(out: &[Output<u8>]) -> Vec<String> {
        out.iter()
            .filter_map(|o| match o {
                Output::Frame { frame, .. } => Some(frame.to_string()),
                Output::Cut { .. } => None,
            })
            .collect()
    }

    fn run(engine: &mut FaultEngine<u8>, frames: &[&str], sender: &str) -> Vec<String> {
        let mut out = Vec::new();
        for (i, text) in frames.iter().enumerate() {
            engine.on_frame(1, sender, f(text), 1_000 + i as u64, &mut out);
        }
        sent(&out)
    }

    #[test]
    fn selectors_match_id_mask_kind_and_sender() {
        let s = FrameSelector::id(0x3A0);
        assert!(s.matches(&f("3A0#01"), "x"));
        assert!(!s.matches(&f("3A1#01"), "x"));
        assert!(!s.matches(&Frame::error(0x3A0, [0; 8]).unwrap(), "x"));
        let masked = FrameSelector {
            id: Some((0x300, 0x700)),
            ..FrameSelector::all()
        };
        assert!(masked.matches(&f("3FF#"), "x") && !masked.matches(&f("400#"), "x"));
        let ext = FrameSelector {
            extended: Some(true),
            sender: Some("hvac".into()),
            ..FrameSelector::all()
        };
        assert!(ext.matches(&f("12345678#"), "hvac-controller"));
        assert!(!ext.matches(&f("123#"), "hvac-controller"));
        assert!(!ext.matches(&f("12345678#"), "body"));
        assert!(FrameSelector::all().matches(&Frame::error(1, [0; 8]).unwrap(), ""));
    }

    #[test]
    fn describe_is_one_line() {
        let d = fault(
            FaultKind::Drop(DropMode::Percent(30.0)),
            FrameSelector::id(0x3A0),
            42,
        );
        assert_eq!(d.describe(), "drop 30% of id 0x3A0 (seed 42)");
        let mut c = fault(
            FaultKind::CutLink {
                node: "hvac".into(),
                bus_off: true,
            },
            FrameSelector::all(),
            0,
        );
        c.duration = Some(Duration::from_secs(2));
        assert_eq!(c.describe(), "cut the link of `hvac` (bus-off) (seed 0) for 2s");
    }

    #[test]
    fn percent_drop_is_a_function_of_seed_and_n_only() {
        let frames: Vec<String> = (0..1000).map(|i| format!("3A0#{:04X}", i)).collect();
        let refs: Vec<&str> = frames.iter().map(String::as_str).collect();
        let pass = |seed: u64, other_traffic: bool| {
            let mut e = FaultEngine::<u8>::new(None);
            e.add(
                fault(
                    FaultKind::Drop(DropMode::Percent(30.0)),
                    FrameSelector::id(0x3A0),
                    seed,
                ),
                0,
            )
            .unwrap();
            let mut out = Vec::new();
            for text in &refs {
                if other_traffic {
                    // Unmatched frames in between change nothing.
                    e.on_frame(2, "x", f("111#"), 5, &mut out);
                }
                e.on_frame(1, "x", f(text), 5, &mut out);
            }
            let kept: Vec<String> = sent(&out).into_iter().filter(|t| t.starts_with("3A0")).collect();
            (kept, e.reports()[0].clone())
        };
        let (a, report) = pass(42, false);
        let (b, _) = pass(42, true);
        let (c, _) = pass(43, false);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(report.matched, 1000);
        assert_eq!(report.affected, 1000 - a.len() as u64);
        // 30% of 1000 with a binomial spread: well within 230..370.
        assert!((230..370).contains(&report.affected), "{}", report.affected);
    }

    #[test]
    fn every_nth_and_next_n_drop_the_right_frames() {
        let mut e = FaultEngine::<u8>::new(None);
        e.add(
            fault(FaultKind::Drop(DropMode::EveryNth(3)), FrameSelector::all(), 0),
            0,
        )
        .unwrap();
        let got = run(
            &mut e,
            &[
                "001#01", "001#02", "001#03", "001#04", "001#05", "001#06", "001#07",
            ],
            "a",
        );
        assert_eq!(got, ["001#01", "001#02", "001#04", "001#05", "001#07"]);
        let mut e = FaultEngine::<u8>::new(None);
        e.add(
            fault(FaultKind::Drop(DropMode::NextN(2)), FrameSelector::all(), 0),
            0,
        )
        .unwrap();
        assert_eq!(run(&mut e, &["001#01", "001#02", "001#03"], "a"), ["001#03"]);
    }

    #[test]
    fn invalid_faults_are_refused_with_a_reason() {
        let mut e = FaultEngine::<u8>::new(None);
        let bad = [
            FaultKind::Drop(DropMode::Percent(101.0)),
            FaultKind::Drop(DropMode::Percent(-1.0)),
            FaultKind::CutLink {
                node: String::new(),
                bus_off: false,
            },
            FaultKind::BusLoad {
                percent: 50.0,
                id: CanId::Standard(0x7FF),
                dlc: 8,
            },
            FaultKind::Babble {
                id: CanId::Standard(0),
                data: vec![],
                rate: None,
            },
        ];
        for kind in bad {
            let err = e
                .add(fault(kind.clone(), FrameSelector::all(), 0), 0)
                .unwrap_err();
            assert!(!err.0.is_empty(), "{kind:?}");
        }
        assert!(e.reports().is_empty());
    }

    #[test]
    fn a_generator_woken_late_catches_up_in_bus_time() {
        // A babbler at 1,000 frames/s on an ideal bus, and the engine advanced only after 500 ms (a busy
        // host): every period is emitted, each at its own due time.
        let mut e = FaultEngine::<u8>::new(None);
        let kind = FaultKind::Babble {
            id: CanId::Standard(0x7FF),
            data: vec![0xFF],
            rate: Some(1000.0),
        };
        e.add(fault(kind, FrameSelector::all(), 0), 0).unwrap();
        let mut out = Vec::new();
        e.advance(500_000_000, &mut out);
        let due: Vec<u64> = out
            .iter()
            .filter_map(|o| match o {
                Output::Frame { at_ns, .. } => Some(*at_ns),
                _ => None,
            })
            .collect();
        assert!((500..=501).contains(&due.len()), "{} frames", due.len());
        assert!(due.windows(2).all(|w| w[1] - w[0] == 1_000_000), "one every 1 ms");
    }

    #[test]
    fn duplicate_corrupt_and_delay_compose() {
        let mut e = FaultEngine::<u8>::new(None);
        e.add(
            fault(
                FaultKind::Corrupt {
                    mask: vec![0xFF, 0x0F],
                    mode: CorruptMode::Flip,
                },
                FrameSelector::id(0x100),
                0,
            ),
            0,
        )
        .unwrap();
        e.add(
            fault(FaultKind::Duplicate { copies: 2 }, FrameSelector::id(0x100), 0),
            0,
        )
        .unwrap();
        assert_eq!(
            run(&mut e, &["100#0000AA", "200#00"], "a"),
            ["100#FF0FAA"; 3]
                .iter()
                .map(|s| s.to_string())
                .chain(["200#00".to_string()])
                .collect::<Vec<_>>()
        );
        let reports = e.reports();
        assert_eq!((reports[0].matched, reports[0].affected), (1, 1));
        assert_eq!((reports[1].matched, reports[1].affected), (1, 1));

        let mut e = FaultEngine::<u8>::new(None);
        e.add(
            fault(
                FaultKind::Delay {
                    delay: Duration::from_millis(10),
                    jitter: Duration::ZERO,
                },
                FrameSelector::all(),
                0,
            ),
            0,
        )
        .unwrap();
        let mut out = Vec::new();
        e.on_frame(1, "a", f("001#01"), 1_000, &mut out);
        assert!(out.is_empty());
        assert_eq!(e.next_deadline(), Some(10_001_000));
        e.advance(10_000_999, &mut out);
        assert!(out.is_empty());
        e.advance(10_001_000, &mut out);
        assert_eq!(
            out,
            [Output::Frame {
                from: Origin::Node(1),
                frame: f("001#01"),
                at_ns: 10_001_000
            }]
        );
    }

    #[test]
    fn random_corruption_changes_only_masked_bits_deterministically() {
        let once = |seed| {
            let mut e = FaultEngine::<u8>::new(None);
            e.add(
                fault(
                    FaultKind::Corrupt {
                        mask: vec![0x00, 0xF0],
                        mode: CorruptMode::Random,
                    },
                    FrameSelector::all(),
                    seed,
                ),
                0,
            )
            .unwrap();
            run(&mut e, &["001#AB05", "001#AB05", "001#AB05", "001#AB05"], "a")
        };
        let a = once(7);
        assert_eq!(a, once(7));
        for text in &a {
            let frame = f(text);
            assert_eq!(frame.payload()[0], 0xAB);
            assert_eq!(frame.payload()[1] & 0x0F, 0x05);
        }
        // Four draws of 4 random bits are not all equal.
        assert!(a.iter().any(|t| t != &a[0]));
    }

    #[test]
    fn jitter_stays_within_bounds_and_never_goes_negative() {
        let mut e = FaultEngine::<u8>::new(None);
        e.add(
            fault(
                FaultKind::Delay {
                    delay: Duration::from_micros(100),
                    jitter: Duration::from_micros(300),
                },
                FrameSelector::all(),
                9,
            ),
            0,
        )
        .unwrap();
        let mut out = Vec::new();
        for i in 0..200u64 {
            e.on_frame(1, "a", f("001#"), 1_000_000 + i, &mut out);
        }
        e.advance(u64::MAX, &mut out);
        assert_eq!(out.len(), 200);
        let mut spread = std::collections::HashSet::new();
        for o in &out {
            if let Output::Frame { at_ns, .. } = o {
                assert!(*at_ns >= 1_000_000 && *at_ns <= 1_000_200 + 400_000);
                spread.insert(*at_ns / 50_000);
            }
        }
        assert!(spread.len() > 3);
    }

    #[test]
    fn reorder_holds_one_frame_behind_depth_others_or_100_ms() {
        let mut e = FaultEngine::<u8>::new(None);
        e.add(fault(FaultKind::Reorder { depth: 2 }, FrameSelector::all(), 0), 0)
            .unwrap();
        let got = run(
            &mut e,
            &[
                "001#01", "001#02", "001#03", "001#04", "001#05", "001#06", "001#07",
            ],
            "a",
        );
        assert_eq!(got, ["001#02", "001#03", "001#01", "001#05", "001#06", "001#04"]);
        // 7 is held; it comes out 100 ms after it was held.
        let mut out = Vec::new();
        assert_eq!(e.next_deadline(), Some(1_006 + 100_000_000));
        e.advance(1_006 + 99_999_999, &mut out);
        assert!(out.is_empty());
        e.advance(1_006 + 100_000_000, &mut out);
        assert_eq!(sent(&out), ["001#07"]);
        let report = &e.reports()[0];
        assert_eq!((report.matched, report.affected), (7, 3));
    }

    #[test]
    fn cut_link_swallows_the_nodes_frames_and_ends_after_its_duration() {
        let mut e = FaultEngine::<u8>::new(None);
        let mut cut = fault(
            FaultKind::CutLink {
                node: "hvac".into(),
                bus_off: true,
            },
            FrameSelector::all(),
            0,
        );
        cut.duration = Some(Duration::from_millis(5));
        let (id, out) = e.add(cut, 1_000).unwrap();
        assert_eq!(
            out,
            [Output::Cut {
                node: "hvac".into(),
                bus_off: true,
                started: true
            }]
        );
        assert!(e.is_cut("hvac-controller") && !e.is_cut("body"));
        assert!(run(&mut e, &["001#01"], "hvac-controller").is_empty());
        assert_eq!(run(&mut e, &["001#02"], "body"), ["001#02"]);
        assert_eq!(e.next_deadline(), Some(5_001_000));
        let mut out = Vec::new();
        e.advance(5_001_000, &mut out);
        assert_eq!(
            out,
            [Output::Cut {
                node: "hvac".into(),
                bus_off: true,
                started: false
            }]
        );
        assert!(!e.is_cut("hvac-controller"));
        let mut out = Vec::new();
        assert!(e.remove(id, 6_000_000, &mut out).is_none());
        let reports = e.clear(7_000_000, &mut out);
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].ended_ns, Some(5_001_000));
        assert_eq!((reports[0].matched, reports[0].affected), (1, 1));
        assert!(e.reports().is_empty());
    }

    #[test]
    fn generators_emit_on_their_period() {
        let timing = BusTiming {
            bitrate: Bitrate {
                nominal: 500_000,
                data: None,
            },
            stuffing: Stuffing::WorstCase,
        };
        let mut e = FaultEngine::<u8>::new(Some(timing));
        e.add(
            fault(
                FaultKind::BusLoad {
                    percent: 50.0,
                    id: CanId::Standard(0x7FF),
                    dlc: 8,
                },
                FrameSelector::all(),
                0,
            ),
            0,
        )
        .unwrap();
        // 135 bits at 500 kbit/s = 270 µs; at 50% one frame every 540 µs.
        let mut out = Vec::new();
        let mut t = 0;
        while t <= 5_400_000 {
            e.advance(t, &mut out);
            t = e.next_deadline().unwrap();
        }
        assert_eq!(out.len(), 11);
        let times: Vec<u64> = out
            .iter()
            .filter_map(|o| match o {
                Output::Frame { at_ns, from, .. } => {
                    assert_eq!(*from, Origin::Virtual("bus-load"));
                    Some(*at_ns)
                }
                _ => None,
            })
            .collect();
        assert_eq!(times[1] - times[0], 540_000);
        assert!(e.set_timing(None).is_err());
        let mut e = FaultEngine::<u8>::new(None);
        e.add(
            fault(
                FaultKind::Babble {
                    id: CanId::Standard(0),
                    data: vec![1, 2],
                    rate: Some(1000.0),
                },
                FrameSelector::all(),
                0,
            ),
            0,
        )
        .unwrap();
        let mut out = Vec::new();
        e.advance(0, &mut out);
        e.advance(999_999, &mut out);
        e.advance(1_000_000, &mut out);
        assert_eq!(sent(&out), ["000#0102", "000#0102"]);
        assert_eq!(e.reports()[0].affected, 2);
    }
}
