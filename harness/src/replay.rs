//! Trace replay: recorded CAN traffic (a candump `-l` log, or a Vector ASC trace) put back on a scenario's
//! buses from the harness node, so workloads are driven by what a real vehicle or a board sent.
//!
//! [`load`] reads a trace (by extension: `.asc` is Vector ASC, anything else candump) with errors naming the
//! file and line. [`ReplayPlan::new`] keeps the chosen ids, maps each trace interface to a bus (the bus given
//! by the step, else a bus of the scenario with the interface's name, else the default bus) and keeps the
//! timestamps relative to the first kept frame, divided by the speed factor. [`Replayer`] sends the plan on a
//! thread of its own (the tokio timer has millisecond resolution; a thread sleeping to each frame's offset keeps
//! the recorded gaps to tens of microseconds), once or looped until stopped.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vcan::candump::{TraceReader, TraceRecord};
use vcan::Frame;

use crate::bus::BusSender;
use crate::error::InfraError;

/// Why a trace cannot be replayed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReplayError {
    #[error("{}: {reason}", .path.display())]
    Read { path: PathBuf, reason: String },
    #[error("{source_name}:{line}: {reason}")]
    Line {
        source_name: String,
        line: usize,
        reason: String,
    },
    #[error("{}: no frame left to replay{}", .path.display(), if *.filtered { " after the id filter" } else { "" })]
    Empty { path: PathBuf, filtered: bool },
}

/// Reads every record of a trace file.
pub fn load(path: &Path) -> Result<Vec<TraceRecord>, ReplayError> {
    let file = std::fs::File::open(path).map_err(|e| ReplayError::Read {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let name = path.display().to_string();
    let reader = std::io::BufReader::new(file);
    let is_asc = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("asc"));
    let records: Result<Vec<TraceRecord>, _> = if is_asc {
        vcan::asc::AscReader::new(reader, name).collect()
    } else {
        TraceReader::new(reader, name).collect()
    };
    records.map_err(|e| ReplayError::Line {
        source_name: e.source_name,
        line: e.line,
        reason: e.reason,
    })
}

/// How a trace is replayed.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayOptions {
    /// Replay again from the start when the end is reached, until stopped.
    pub looped: bool,
    /// Timestamps are divided by this (2.0 plays twice as fast).
    pub speed: f64,
    /// Only frames with these ids, as Linux `can_id`s (all when empty).
    pub ids: Vec<u32>,
    /// Every frame onto this bus, whatever its interface in the trace.
    pub bus: Option<String>,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        ReplayOptions {
            looped: false,
            speed: 1.0,
            ids: Vec::new(),
            bus: None,
        }
    }
}

/// One frame of a plan: when (from the start of the replay), where and what.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedFrame {
    pub offset: Duration,
    pub bus: String,
    pub frame: Frame,
}

/// The frames to send, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayPlan {
    pub frames: Vec<PlannedFrame>,
    /// A loop's length: the last offset plus the gap before it (so the seam keeps the trace's rhythm).
    pub period: Duration,
}

impl ReplayPlan {
    /// The plan of `records` under `options`; `bus_for` maps a trace interface to a bus name.
    pub fn new(
        path: &Path,
        records: &[TraceRecord],
        options: &ReplayOptions,
        bus_for: impl Fn(&str) -> String,
    ) -> Result<ReplayPlan, ReplayError> {
        let kept: Vec<&TraceRecord> = records
            .iter()
            .filter(|r| {
                options.ids.is_empty()
                    || r.frame
                        .id()
                        .is_some_and(|id| options.ids.contains(&id.to_linux()))
            })
            .collect();
        let Some(first) = kept.first() else {
            return Err(ReplayError::Empty {
                path: path.to_path_buf(),
                filtered: !options.ids.is_empty() && !records.is_empty(),
            });
        };
        let speed = if options.speed > 0.0 { options.speed } else { 1.0 };
        let base = first.timestamp_ns;
        let frames: Vec<PlannedFrame> = kept
            .iter()
            .map(|r| PlannedFrame {
                // A trace out of time order (merged logs) plays the late frame at once.
                offset: Duration::from_secs_f64(r.timestamp_ns.saturating_sub(base) as f64 / 1e9 / speed),
                bus: options.bus.clone().unwrap_or_else(|| bus_for(&r.interface)),
                frame: r.frame.clone(),
            })
            .collect();
        let last = frames.last().map_or(Duration::ZERO, |f| f.offset);
        let gap = match frames.len() {
            0 | 1 => Duration::from_millis(1),
            n => frames[n - 1].offset.saturating_sub(frames[n - 2].offset),
        };
        Ok(ReplayPlan {
            frames,
            period: (last + gap).max(Duration::from_millis(1)),
        })
    }

    /// The buses the plan sends on.
    pub fn buses(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for f in &self.frames {
            if !out.contains(&f.bus) {
                out.push(f.bus.clone());
            }
        }
        out
    }
}

/// A replay in progress on its own thread.
pub struct Replayer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Result<u64, InfraError>>>,
}

impl Replayer {
    /// Starts sending `plan` through `senders` (one per bus of the plan).
    pub fn start(plan: ReplayPlan, senders: Vec<BusSender>, looped: bool) -> Result<Replayer, InfraError> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("trace-replay".into())
            .spawn(move || play(&plan, &senders, looped, &flag))
            .map_err(|e| InfraError::Bus {
                bus: String::new(),
                reason: format!("cannot start the replay thread: {e}"),
            })?;
        Ok(Replayer {
            stop,
            thread: Some(thread),
        })
    }

    /// Waits for a replay that is not looped to send its last frame; the number of frames sent.
    pub async fn finish(mut self) -> Result<u64, InfraError> {
        let Some(thread) = self.thread.take() else {
            return Ok(0);
        };
        tokio::task::spawn_blocking(move || thread.join())
            .await
            .map_err(|e| InfraError::Bus {
                bus: String::new(),
                reason: format!("replay thread: {e}"),
            })?
            .unwrap_or_else(|_| {
                Err(InfraError::Bus {
                    bus: String::new(),
                    reason: "the replay thread panicked".into(),
                })
            })
    }

    /// Stops a replay (a looped one at the end of its scenario) and waits for its thread.
    pub fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        match self.thread.take().map(std::thread::JoinHandle::join) {
            Some(Ok(Ok(sent))) => sent,
            _ => 0,
        }
    }
}

impl Drop for Replayer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn play(
    plan: &ReplayPlan,
    senders: &[BusSender],
    looped: bool,
    stop: &AtomicBool,
) -> Result<u64, InfraError> {
    let started = Instant::now();
    let mut sent = 0u64;
    let mut round = 0u32;
    loop {
        let round_start = started + plan.period * round;
        for f in &plan.frames {
            let due = round_start + f.offset;
            // Sleep in slices, so a stop is seen within 20 ms even in a long gap.
            loop {
                if stop.load(Ordering::SeqCst) {
                    return Ok(sent);
                }
                let now = Instant::now();
                if now >= due {
                    break;
                }
                std::thread::sleep((due - now).min(Duration::from_millis(20)));
            }
            if let Some(sender) = senders.iter().find(|s| s.bus() == f.bus) {
                sender.send(&f.frame)?;
                sent += 1;
            }
        }
        round += 1;
        if !looped {
            return Ok(sent);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(ts_ms: u64, iface: &str, frame: &str) -> TraceRecord {
        TraceRecord {
            timestamp_ns: 1_700_000_000_000_000_000 + ts_ms * 1_000_000,
            interface: iface.into(),
            frame: frame.parse().unwrap(),
        }
    }

    #[test]
    fn plans_keep_relative_times_scaled_and_filter_ids() {
        let records = vec![
            record(100, "can0", "3A0#01"),
            record(110, "can1", "200#02"),
            record(150, "can0", "3A0#03"),
        ];
        let opts = ReplayOptions {
            speed: 2.0,
            ..ReplayOptions::default()
        };
        let plan = ReplayPlan::new(Path::new("t.log"), &records, &opts, |i| {
            if i == "can1" {
                "body".into()
            } else {
                "vehicle".into()
            }
        })
        .unwrap();
        let offsets: Vec<u128> = plan.frames.iter().map(|f| f.offset.as_millis()).collect();
        assert_eq!(offsets, vec![0, 5, 25]);
        assert_eq!(plan.buses(), vec!["vehicle".to_string(), "body".to_string()]);
        assert_eq!(plan.period.as_millis(), 45);
        let only = ReplayOptions {
            ids: vec![0x3A0],
            bus: Some("x".into()),
            ..ReplayOptions::default()
        };
        let plan = ReplayPlan::new(Path::new("t.log"), &records, &only, |_| "vehicle".into()).unwrap();
        assert_eq!(plan.frames.len(), 2);
        assert!(plan.frames.iter().all(|f| f.bus == "x"));
        let none = ReplayOptions {
            ids: vec![0x7FF],
            ..ReplayOptions::default()
        };
        let e = ReplayPlan::new(Path::new("t.log"), &records, &none, |_| "v".into()).unwrap_err();
        assert!(e.to_string().contains("after the id filter"), "{e}");
    }

    #[test]
    fn a_bad_trace_line_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.log");
        std::fs::write(&p, "(1.000000) can0 3A0#01\n(1.1) can0 3A0#zz\n").unwrap();
        let e = load(&p).unwrap_err().to_string();
        assert!(e.contains("t.log:2"), "{e}");
    }
}
