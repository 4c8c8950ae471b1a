//! A scenario's CAN bus as the harness sees it: the bus itself, a recorder tape, and an injector.
//!
//! For the userspace transport, [`ScenarioBus::start`] embeds a [`vcan::hub::Hub`] listening on a Unix socket
//! in the scenario's scratch directory (and on TCP where the environment needs it). The harness then joins
//! the bus like any node, through [`vcan::open`]: a *recorder* node that sees every frame (hub timestamp and
//! sequence number included) and an *injector* node that only sends. Because both go through bus endpoints,
//! the same code drives a real adapter (`socketcan:can0`) on a bench host.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;
use vcan::candump::TraceRecord;
use vcan::hub::{Hub, HubConfig, HubStats};
use vcan::{CanSocket, Endpoint, Filter, Frame, OpenOptions};

use crate::error::InfraError;

/// Where an environment's workloads reach one bus.
#[derive(Debug, Clone)]
pub struct BusInfo {
    pub name: String,
    pub unix_path: Option<PathBuf>,
    pub tcp_addr: Option<SocketAddr>,
}

/// One frame on the tape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TracedFrame {
    /// Host wall-clock nanoseconds since the Unix epoch (hub timestamp).
    pub timestamp_ns: u64,
    /// Bus sequence number, where the bus provides one.
    pub seq: Option<u64>,
    pub frame: Frame,
}

/// The growing recording of a bus, shared between the recorder thread and the steps.
#[derive(Default)]
pub struct Tape {
    frames: Mutex<Vec<TracedFrame>>,
    grew: Notify,
    failed: Mutex<Option<String>>,
}

impl Tape {
    pub fn len(&self) -> usize {
        self.frames.lock().map(|f| f.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Frames from index `from` on.
    pub fn since(&self, from: usize) -> Vec<TracedFrame> {
        self.frames
            .lock()
            .map(|f| f.get(from..).map(<[_]>::to_vec).unwrap_or_default())
            .unwrap_or_default()
    }

    pub fn all(&self) -> Vec<TracedFrame> {
        self.since(0)
    }

    /// Why recording stopped early, if it did.
    pub fn failure(&self) -> Option<String> {
        self.failed.lock().ok().and_then(|f| f.clone())
    }

    fn push(&self, frame: TracedFrame) {
        if let Ok(mut frames) = self.frames.lock() {
            frames.push(frame);
        }
        self.grew.notify_waiters();
    }

    /// Waits until `done` says yes about the frames from `from` on, or until `deadline`; returns the
    /// last answer. `done` is re-evaluated every time the tape grows.
    pub async fn wait<T>(
        &self,
        from: usize,
        deadline: tokio::time::Instant,
        mut done: impl FnMut(&[TracedFrame]) -> Option<T>,
    ) -> Option<T> {
        loop {
            let grew = self.grew.notified();
            tokio::pin!(grew);
            grew.as_mut().enable();
            {
                let frames = self.frames.lock().ok()?;
                if let Some(answer) = done(frames.get(from..).unwrap_or(&[])) {
                    return Some(answer);
                }
            }
            if tokio::time::timeout_at(deadline, grew).await.is_err() {
                let frames = self.frames.lock().ok()?;
                return done(frames.get(from..).unwrap_or(&[]));
            }
        }
    }
}

/// Now as nanoseconds since the Unix epoch.
pub fn now_ns() -> u64 {
    system_time_ns(SystemTime::now())
}

/// A wall-clock time as nanoseconds since the Unix epoch.
pub fn system_time_ns(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// A comment line of a bus's trace (`# fault: …`, `# replay: …`), at a bus time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceNote {
    pub timestamp_ns: u64,
    pub text: String,
}

/// The harness's sending node on a bus, shareable with threads that outlive a step (a looped replay).
#[derive(Clone)]
pub struct BusSender {
    bus: String,
    injector: Arc<Mutex<Box<dyn CanSocket>>>,
}

impl BusSender {
    /// Puts a frame on the bus from the harness node.
    pub fn send(&self, frame: &Frame) -> Result<(), InfraError> {
        let mut injector = self.injector.lock().map_err(|_| InfraError::Bus {
            bus: self.bus.clone(),
            reason: "injector lock poisoned".into(),
        })?;
        injector.send(frame).map_err(|e| InfraError::Bus {
            bus: self.bus.clone(),
            reason: e.to_string(),
        })
    }

    pub fn bus(&self) -> &str {
        &self.bus
    }
}

/// A bus of one scenario.
pub struct ScenarioBus {
    name: String,
    hub: Option<Hub>,
    info: BusInfo,
    tape: Arc<Tape>,
    sender: BusSender,
    notes: Mutex<Vec<TraceNote>>,
    timing: Mutex<Option<String>>,
    /// Reports of the faults cleared so far (the hub forgets them at a clear).
    fault_log: Mutex<Vec<vcan::fault::FaultReport>>,
    recorder: Option<std::thread::JoinHandle<()>>,
    stop: Arc<AtomicU64>,
    /// The third-party bridges on this bus (none on an attached bus).
    bridges: crate::bridges::BusBridges,
}

/// What is left of a bus after the scenario.
pub struct BusSummary {
    pub name: String,
    pub frames: Vec<TracedFrame>,
    pub stats: Option<HubStats>,
    pub recorder_failure: Option<String>,
    /// The trace's comment lines (faults, replays), in time order.
    pub notes: Vec<TraceNote>,
    /// Every fault applied to the bus, with what it did.
    pub faults: Vec<vcan::fault::FaultReport>,
    /// The bus's last bitrate, if it had one.
    pub timing: Option<String>,
    /// The third-party bridges on the bus, with their nodes on it.
    pub bridges: Vec<vcan::bridge::BridgeReport>,
}

/// `500 kbit/s, 2 Mbit/s data phase, worst-case stuffing`.
pub fn describe_timing(t: &vcan::bustime::BusTiming) -> String {
    let rate = |r: u32| {
        if r.is_multiple_of(1_000_000) {
            format!("{} Mbit/s", r / 1_000_000)
        } else if r.is_multiple_of(1_000) {
            format!("{} kbit/s", r / 1_000)
        } else {
            format!("{r} bit/s")
        }
    };
    let mut s = rate(t.bitrate.nominal);
    if let Some(d) = t.bitrate.data {
        s.push_str(&format!(", {} data phase", rate(d)));
    }
    s.push_str(match t.stuffing {
        vcan::bittiming::Stuffing::WorstCase => ", worst-case stuffing",
        vcan::bittiming::Stuffing::Exact => ", exact stuffing",
        vcan::bittiming::Stuffing::None => ", no stuffing",
    });
    s
}

impl ScenarioBus {
    /// Starts an embedded hub for bus `name` with its socket in `dir`, optionally also on TCP at `tcp_ip`
    /// and with a bitrate (`timing`; `None`: an ideal bus), joins the recorder and injector, and puts the
    /// run's bridges for this bus in place.
    pub fn start(
        name: &str,
        dir: &Path,
        tcp_ip: Option<IpAddr>,
        timing: Option<vcan::bustime::BusTiming>,
        bridges: &crate::bridges::RunBridges,
    ) -> Result<ScenarioBus, InfraError> {
        let bus_err = |reason: String| InfraError::Bus {
            bus: name.to_string(),
            reason,
        };
        std::fs::create_dir_all(dir).map_err(|e| bus_err(format!("cannot create {}: {e}", dir.display())))?;
        let unix_path = dir.join(format!("{name}.sock"));
        let hub = Hub::start(HubConfig {
            name: name.to_string(),
            unix_path: Some(unix_path.clone()),
            tcp_addr: tcp_ip.map(|ip| SocketAddr::new(ip, 0)),
            timing,
            ..HubConfig::default()
        })
        .map_err(|e| bus_err(e.to_string()))?;
        // Any user may join: workloads run as the manifest's runAsUser (a container's non-root user).
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&unix_path, std::fs::Permissions::from_mode(0o666))
                .map_err(|e| bus_err(format!("{}: {e}", unix_path.display())))?;
        }
        let tcp_addr = match hub.tcp_endpoint() {
            Some(Endpoint::Tcp(addr)) => Some(addr),
            _ => None,
        };
        let info = BusInfo {
            name: name.to_string(),
            unix_path: Some(unix_path.clone()),
            tcp_addr,
        };
        let endpoint = Endpoint::Unix(unix_path);
        let mut bus = Self::join(name, endpoint.clone(), Some(hub), info)?;
        bus.bridges = bridges
            .attach(name, &endpoint)
            .map_err(|e| bus_err(e.to_string()))?;
        Ok(bus)
    }

    /// Joins an existing bus (a bench adapter such as `socketcan:can0`, or a remote hub).
    pub fn attach(name: &str, endpoint: Endpoint, info: BusInfo) -> Result<ScenarioBus, InfraError> {
        Self::join(name, endpoint, None, info)
    }

    fn join(
        name: &str,
        endpoint: Endpoint,
        hub: Option<Hub>,
        info: BusInfo,
    ) -> Result<ScenarioBus, InfraError> {
        let bus_err = |reason: String| InfraError::Bus {
            bus: name.to_string(),
            reason,
        };
        let recorder_opts = OpenOptions {
            node_name: "harness-recorder".into(),
            want_errors: true,
            fd: true,
            ..OpenOptions::default()
        };
        let mut recorder_socket =
            vcan::open(&endpoint, &recorder_opts).map_err(|e| bus_err(e.to_string()))?;
        let injector_opts = OpenOptions {
            node_name: "harness".into(),
            fd: true,
            // Accept nothing: an inverted all-matching filter.
            filters: vec![Filter::inverted(0, 0)],
            ..OpenOptions::default()
        };
        let injector = vcan::open(&endpoint, &injector_opts).map_err(|e| bus_err(e.to_string()))?;
        let tape = Arc::new(Tape::default());
        let stop = Arc::new(AtomicU64::new(RECORDING));
        let recorder = {
            let tape = tape.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name(format!("recorder-{name}"))
                .spawn(move || record(&mut *recorder_socket, &tape, &stop))
                .map_err(|e| bus_err(format!("cannot start the recorder thread: {e}")))?
        };
        Ok(ScenarioBus {
            name: name.to_string(),
            hub,
            info,
            tape,
            sender: BusSender {
                bus: name.to_string(),
                injector: Arc::new(Mutex::new(injector)),
            },
            notes: Mutex::new(Vec::new()),
            timing: Mutex::new(None),
            fault_log: Mutex::new(Vec::new()),
            recorder: Some(recorder),
            stop,
            bridges: crate::bridges::BusBridges::none(name),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn info(&self) -> BusInfo {
        self.info.clone()
    }

    pub fn tape(&self) -> &Arc<Tape> {
        &self.tape
    }

    /// Current hub counters (userspace bus only).
    pub fn stats(&self) -> Option<HubStats> {
        self.hub.as_ref().map(Hub::stats)
    }

    /// Puts a frame on the bus from the harness node.
    pub fn send(&self, frame: &Frame) -> Result<(), InfraError> {
        self.sender.send(frame)
    }

    /// The harness's sending node, for work that outlives a step.
    pub fn sender(&self) -> BusSender {
        self.sender.clone()
    }

    /// The embedded hub, where faults and bus timing act; a bus the harness only attached to (a bench
    /// adapter) has none, and what needs one is *unsupported here*.
    fn hub(&self, what: &str) -> Result<&Hub, InfraError> {
        self.hub.as_ref().ok_or_else(|| InfraError::Unsupported {
            workload: format!("bus {}", self.name),
            reason: format!(
                "{what} acts in the harness's virtual bus, and this environment's bus `{}` is a real adapter",
                self.name
            ),
        })
    }

    /// Applies a fault to the bus until it ends by itself, is removed, or the scenario ends; the trace
    /// gets a `# fault:` line.
    pub fn add_fault(&self, fault: vcan::fault::Fault) -> Result<vcan::fault::FaultId, InfraError> {
        let description = fault.describe();
        let id = self
            .hub(&format!("fault `{description}`"))?
            .add_fault(fault)
            .map_err(|e| InfraError::Bus {
                bus: self.name.clone(),
                reason: e.to_string(),
            })?;
        self.note(format!("fault: {description}"));
        Ok(id)
    }

    /// Ends every fault of the bus (a `# fault ended:` line each); the reports of all faults so far.
    pub fn clear_faults(&self) -> Result<Vec<vcan::fault::FaultReport>, InfraError> {
        let hub = self.hub("clearing faults")?;
        Ok(self.end_faults(hub, "fault ended"))
    }

    /// Clears the hub's faults, noting those that were still acting.
    fn end_faults(&self, hub: &Hub, why: &str) -> Vec<vcan::fault::FaultReport> {
        let active: Vec<u64> = hub
            .fault_reports()
            .iter()
            .filter(|r| r.ended_ns.is_none())
            .map(|r| r.id)
            .collect();
        let reports = hub.clear_faults();
        for r in reports.iter().filter(|r| active.contains(&r.id)) {
            self.note(format!(
                "{why}: {} (matched {}, affected {})",
                r.description, r.matched, r.affected
            ));
        }
        // The hub forgets cleared faults; the scenario's record keeps them all.
        if let Ok(mut log) = self.fault_log.lock() {
            log.extend(reports.iter().cloned());
            log.clone()
        } else {
            reports
        }
    }

    /// What the bus's faults did so far (cleared ones included).
    pub fn fault_reports(&self) -> Result<Vec<vcan::fault::FaultReport>, InfraError> {
        let live = self.hub("fault reports")?.fault_reports();
        let mut all = self.fault_log.lock().map(|l| l.clone()).unwrap_or_default();
        all.extend(live);
        Ok(all)
    }

    /// Puts a frame on the bus from the hub itself (error frames, which a node cannot send).
    pub fn inject(&self, frame: &Frame) -> Result<(), InfraError> {
        self.hub("injecting an error frame")?
            .inject(frame.clone())
            .map_err(|e| InfraError::Bus {
                bus: self.name.clone(),
                reason: e.to_string(),
            })?;
        self.note(format!("fault: injected {frame}"));
        Ok(())
    }

    /// Gives the bus a bitrate (`None`: ideal again) from now on.
    pub fn set_timing(&self, timing: Option<vcan::bustime::BusTiming>) -> Result<(), InfraError> {
        self.hub("a bitrate")?
            .set_timing(timing)
            .map_err(|e| InfraError::Bus {
                bus: self.name.clone(),
                reason: e.to_string(),
            })?;
        self.timed(timing);
        Ok(())
    }

    /// Records the bus's bitrate (trace line and summary).
    pub fn timed(&self, timing: Option<vcan::bustime::BusTiming>) {
        let text = timing.as_ref().map(describe_timing);
        self.note(format!("bus timing: {}", text.as_deref().unwrap_or("ideal")));
        if let Ok(mut t) = self.timing.lock() {
            *t = text;
        }
    }

    /// Adds a comment line to the bus's trace, at the current bus time.
    pub fn note(&self, text: impl Into<String>) {
        if let Ok(mut notes) = self.notes.lock() {
            notes.push(TraceNote {
                timestamp_ns: now_ns(),
                text: text.into(),
            });
        }
    }

    /// Stops recording (after the recorder has taped everything the bus already ordered) and the hub.
    pub fn finish(mut self) -> BusSummary {
        let last_seq = self.hub.as_ref().map(|h| h.stats().frames).unwrap_or(0);
        self.stop.store(last_seq, Ordering::SeqCst);
        if let Some(handle) = self.recorder.take() {
            let _ = handle.join();
        }
        let faults = match &self.hub {
            Some(hub) => self.end_faults(hub, "fault ended with the scenario"),
            None => Vec::new(),
        };
        let bridge_reports = self.bridges.stop();
        let stats = self.hub.take().map(Hub::shutdown);
        let bridges = crate::bridges::bus_reports(bridge_reports, stats.as_ref());
        let mut notes = self.notes.lock().map(|n| n.clone()).unwrap_or_default();
        notes.sort_by_key(|n| n.timestamp_ns);
        BusSummary {
            name: self.name.clone(),
            frames: self.tape.all(),
            stats,
            recorder_failure: self.tape.failure(),
            notes,
            faults,
            timing: self.timing.lock().ok().and_then(|t| t.clone()),
            bridges,
        }
    }
}

impl Drop for ScenarioBus {
    fn drop(&mut self) {
        self.stop.store(0, Ordering::SeqCst);
        if let Some(handle) = self.recorder.take() {
            let _ = handle.join();
        }
    }
}

/// Recorder value of `stop` while recording; any other value means "stop once the frame with this sequence
/// number (0: none) has been taped, or after [`DRAIN_LIMIT`]".
const RECORDING: u64 = u64::MAX;
const DRAIN_LIMIT: Duration = Duration::from_millis(500);

fn record(socket: &mut dyn CanSocket, tape: &Tape, stop: &AtomicU64) {
    let mut last_seq = 0u64;
    let mut drain_deadline = None;
    loop {
        let target = stop.load(Ordering::SeqCst);
        if target != RECORDING {
            let deadline = *drain_deadline.get_or_insert_with(|| std::time::Instant::now() + DRAIN_LIMIT);
            if last_seq >= target || std::time::Instant::now() >= deadline {
                // Take whatever is already buffered, then stop.
                while let Ok(Some(rx)) = socket.recv(Some(Duration::ZERO)) {
                    tape.push(TracedFrame {
                        timestamp_ns: rx.timestamp_ns,
                        seq: rx.seq,
                        frame: rx.frame,
                    });
                }
                return;
            }
        }
        match socket.recv(Some(Duration::from_millis(20))) {
            Ok(Some(rx)) => {
                last_seq = rx.seq.unwrap_or(last_seq);
                tape.push(TracedFrame {
                    timestamp_ns: rx.timestamp_ns,
                    seq: rx.seq,
                    frame: rx.frame,
                });
            }
            Ok(None) => {}
            Err(e) => {
                if stop.load(Ordering::SeqCst) == RECORDING {
                    tracing::warn!(bus = socket.bus_name(), error = %e, "recorder stopped");
                    if let Ok(mut failed) = tape.failed.lock() {
                        *failed = Some(e.to_string());
                    }
                }
                return;
            }
        }
    }
}

/// Writes a tape as a candump `-l` log with the bus name as interface, exactly as `candump -l` writes one
/// (python-can's `CanutilsLogReader`, `log2asc` and `canplayer` read it; none of them takes comment lines).
/// `notes` (faults, replays) go beside it, into [`notes_path`], one `# fault: … (secs.usecs)` line each
/// in time order.
pub fn write_candump(
    path: &Path,
    interface: &str,
    frames: &[TracedFrame],
    notes: &[TraceNote],
) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for f in frames {
        out.write_all(
            vcan::candump::format_record(&TraceRecord {
                timestamp_ns: f.timestamp_ns,
                interface: interface.to_string(),
                frame: f.frame.clone(),
            })
            .as_bytes(),
        )?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    if !notes.is_empty() {
        let mut side = std::io::BufWriter::new(std::fs::File::create(notes_path(path))?);
        for n in notes {
            write_note(&mut side, n)?;
        }
        side.flush()?;
    }
    Ok(())
}

/// Where the notes of the candump trace at `trace` are written: `x.vehicle.log` → `x.vehicle.notes`.
pub fn notes_path(trace: &Path) -> PathBuf {
    trace.with_extension("notes")
}

/// Writes a tape as a Vector ASC trace (python-can's `ASCWriter` layout, [`vcan::asc`]), for CANalyzer,
/// python-can and cantools users.
pub fn write_asc(path: &Path, interface: &str, frames: &[TracedFrame]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut writer = vcan::asc::AscWriter::new(std::io::BufWriter::new(std::fs::File::create(path)?));
    for f in frames {
        writer.write(&TraceRecord {
            timestamp_ns: f.timestamp_ns,
            interface: interface.to_string(),
            frame: f.frame.clone(),
        })?;
    }
    let mut out = writer.finish()?;
    std::io::Write::flush(&mut out)
}

fn write_note(out: &mut impl std::io::Write, note: &TraceNote) -> std::io::Result<()> {
    let text = note.text.replace(['\n', '\r'], " ");
    writeln!(
        out,
        "# {text} ({}.{:06})",
        note.timestamp_ns / 1_000_000_000,
        (note.timestamp_ns % 1_000_000_000) / 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_need_the_harness_hub_and_a_real_adapter_is_unsupported_here() {
        let dir = tempfile::tempdir().unwrap();
        // A bus the harness only attaches to stands for a bench adapter: no hub of its own to act in.
        let hub = Hub::start(HubConfig {
            name: "bench".into(),
            unix_path: Some(dir.path().join("bench.sock")),
            ..HubConfig::default()
        })
        .unwrap();
        let info = BusInfo {
            name: "vehicle".into(),
            unix_path: None,
            tcp_addr: None,
        };
        let attached = ScenarioBus::attach("vehicle", hub.unix_endpoint().unwrap(), info).unwrap();
        let fault = vcan::fault::Fault::new(vcan::fault::FaultKind::Drop(vcan::fault::DropMode::All));
        match attached.add_fault(fault.clone()) {
            Err(InfraError::Unsupported { reason, .. }) => {
                assert!(reason.contains("real adapter"), "{reason}")
            }
            other => panic!("expected unsupported here, got {other:?}"),
        }
        attached.finish();

        let own = ScenarioBus::start(
            "vehicle",
            dir.path(),
            None,
            None,
            &crate::bridges::RunBridges::none(),
        )
        .unwrap();
        own.add_fault(fault.clone()).unwrap();
        assert_eq!(own.clear_faults().unwrap().len(), 1);
        own.add_fault(fault).unwrap();
        assert_eq!(
            own.fault_reports().unwrap().len(),
            2,
            "cleared faults stay in the record"
        );
        let summary = own.finish();
        assert_eq!(summary.faults.len(), 2, "{:?}", summary.faults);
        assert!(summary
            .notes
            .iter()
            .any(|n| n.text.starts_with("fault ended: drop")));
        assert!(
            summary.notes.iter().any(|n| n.text.starts_with("fault: drop")),
            "{:?}",
            summary.notes
        );
        assert!(
            summary
                .notes
                .iter()
                .any(|n| n.text.starts_with("fault ended with the scenario")),
            "{:?}",
            summary.notes
        );
    }

    #[test]
    fn notes_go_beside_the_trace_which_stays_plain_candump() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.log");
        let frame = |ts: u64, text: &str| TracedFrame {
            timestamp_ns: ts,
            seq: None,
            frame: text.parse().unwrap(),
        };
        let notes = [TraceNote {
            timestamp_ns: 1_500_000_000,
            text: "fault: drop all\nframes".into(),
        }];
        write_candump(
            &path,
            "vehicle",
            &[frame(1_000_000_000, "123#01"), frame(2_000_000_000, "123#02")],
            &notes,
        )
        .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text, "(1.000000) vehicle 123#01\n(2.000000) vehicle 123#02\n",
            "only frames, as candump writes them"
        );
        let notes = std::fs::read_to_string(notes_path(&path)).unwrap();
        assert_eq!(notes, "# fault: drop all frames (1.500000)\n");
    }
}
