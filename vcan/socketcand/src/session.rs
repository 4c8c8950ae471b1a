//! One client connection: the socketcand state machine (no bus → BCM/raw/control mode) driven by one
//! thread that waits with `poll(2)` on the client's TCP socket, its hub node and its timers.
//!
//! The thread greets with `< hi >`, joins the hub at `< open BUS >` as the bridge node
//! `socketcand:<ip>:<port>` and from then on forwards in both directions until the client disconnects,
//! the bus goes away or the server stops. Replies and frames produced in one turn are written with one
//! `write`; every turn also drains what the hub delivered (so the hub never has to drop frames for this
//! node just because the client is in control mode).

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vcan::bridge::{self, BridgeCounters, BridgeNode, BridgeNodes, StopSignal, Wake};
use vcan::client::HubClient;
use vcan::{CanSocket, Endpoint, Frame, Received};

use crate::bcm::{RxOps, TxJobs};
use crate::protocol::{self, Command, Mode, Splitter};

/// The protocol name bridge nodes carry.
pub const PROTOCOL: &str = "socketcand";
/// Bytes read from the client per turn.
const READ_CHUNK: usize = 4096;
/// Frames taken from the hub per turn before the client and the timers get their turn again.
const HUB_BATCH: usize = 1024;
/// A client that does not take our output for this long is disconnected.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the server's threads share.
pub(crate) struct Shared {
    pub buses: Mutex<BTreeMap<String, Endpoint>>,
    pub nodes: BridgeNodes,
    pub stop: StopSignal,
}

/// Why a session ended.
#[derive(Debug)]
enum End {
    Stopped,
    PeerClosed,
    Io(io::Error),
    Refused,
    Bus(String),
}

/// Byte and packet counts of one node, for `< stat … >` (the node's view: frames it received from the
/// bus and frames it sent onto it; bytes are payload bytes, as a CAN netdev counts them).
#[derive(Debug, Default)]
struct Traffic {
    rbytes: u64,
    rpackets: u64,
    tbytes: u64,
    tpackets: u64,
}

struct OpenBus {
    hub: HubClient,
    node: Arc<BridgeNode>,
    mode: Mode,
    tx: TxJobs,
    rx: RxOps,
    /// The statistics interval and when the next report is due.
    stats: Option<(Duration, Instant)>,
    traffic: Traffic,
    skipped_fd: u64,
    skipped_remote: u64,
    /// The last turn stopped taking frames from the hub before it ran dry.
    hub_pending: bool,
}

struct Session {
    stream: TcpStream,
    peer: String,
    splitter: Splitter,
    out: String,
    bus: Option<OpenBus>,
}

/// Serves one client until it disconnects or the server stops.
pub(crate) fn serve(stream: TcpStream, peer: String, shared: &Shared) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let mut session = Session {
        stream,
        peer,
        splitter: Splitter::new(),
        out: String::new(),
        bus: None,
    };
    let end = session.run(shared);
    match &end {
        End::Stopped | End::PeerClosed | End::Refused => {
            tracing::debug!(peer = %session.peer, reason = ?end, "socketcand client done")
        }
        End::Io(e) => tracing::info!(peer = %session.peer, error = %e, "socketcand client lost"),
        End::Bus(e) => tracing::warn!(peer = %session.peer, error = %e, "socketcand client's bus gone"),
    }
    if let Some(bus) = session.bus.take() {
        if bus.skipped_fd > 0 {
            bus.node.counters.note(format!(
                "{}: {} CAN FD frames of the bus not passed on (socketcand carries classic CAN only)",
                bus.node.node, bus.skipped_fd
            ));
        }
        if bus.skipped_remote > 0 {
            bus.node.counters.note(format!(
                "{}: {} remote frames of the bus not passed on (socketcand has no syntax for them)",
                bus.node.node, bus.skipped_remote
            ));
        }
        if let End::Bus(e) = &end {
            bus.node.counters.note(format!("{}: {e}", bus.node.node));
        }
        bus.node.disconnected();
    }
}

impl Session {
    fn run(&mut self, shared: &Shared) -> End {
        self.out.push_str(protocol::HI);
        if let Err(end) = self.flush() {
            return end;
        }
        let mut buf = [0u8; READ_CHUNK];
        loop {
            let now = Instant::now();
            let mut fds = vec![self.stream.as_raw_fd()];
            let mut timeout = None;
            if let Some(bus) = &self.bus {
                fds.push(bus.hub.raw_fd());
                timeout = bus.next_deadline().map(|d| d.saturating_duration_since(now));
                if bus.hub_pending || bus.hub.has_buffered() {
                    timeout = Some(Duration::ZERO);
                }
            }
            let ready = match bridge::wait_readable(&shared.stop, &fds, timeout) {
                Ok(Wake::Stop) => return End::Stopped,
                Ok(Wake::Ready(ready)) => ready,
                Err(e) => return End::Io(e),
            };
            if ready[0] {
                match self.stream.read(&mut buf) {
                    Ok(0) => return End::PeerClosed,
                    Ok(n) => {
                        self.splitter.push(&buf[..n]);
                        if let Err(end) = self.handle_input(shared) {
                            return self.finish(end);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return End::Io(e),
                }
            }
            if let Some(bus) = &mut self.bus {
                if let Err(end) = bus.pump(&mut self.out) {
                    return self.finish(end);
                }
            }
            if let Err(end) = self.flush() {
                return end;
            }
        }
    }

    /// Writes what is pending (with the reason when the bus is gone) before the connection closes. In raw
    /// mode `< error … >` is an error frame to clients (python-can parses it as one), so a raw-mode client
    /// only sees the connection close.
    fn finish(&mut self, end: End) -> End {
        let raw = self.bus.as_ref().is_some_and(|b| b.mode == Mode::Raw);
        if let (End::Bus(reason), false) = (&end, raw) {
            self.out.push_str(&protocol::error_reply(reason));
        }
        let _ = self.flush();
        end
    }

    fn flush(&mut self) -> Result<(), End> {
        if self.out.is_empty() {
            return Ok(());
        }
        let result = self.stream.write_all(self.out.as_bytes());
        self.out.clear();
        result.map_err(|e| match e.kind() {
            io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => End::PeerClosed,
            _ => End::Io(e),
        })
    }

    /// Answers every complete message received so far.
    fn handle_input(&mut self, shared: &Shared) -> Result<(), End> {
        while let Some(message) = self.splitter.next_message() {
            match message.and_then(|m| protocol::parse_command(&m)) {
                Ok(command) => self.command(command, shared)?,
                Err(e) => self.reject(&e.to_string()),
            }
        }
        Ok(())
    }

    /// Answers `< error … >`, counting it on the node once there is one.
    fn reject(&mut self, problem: &str) {
        self.out.push_str(&protocol::error_reply(problem));
        match &self.bus {
            Some(bus) => bus.node.counters.reject(format!("{}: {problem}", bus.node.node)),
            None => tracing::warn!(peer = %self.peer, "socketcand client before open: {problem}"),
        }
    }

    fn command(&mut self, command: Command, shared: &Shared) -> Result<(), End> {
        let Some(bus) = &mut self.bus else {
            return match command {
                Command::Open(name) => self.open(&name, shared),
                Command::Echo => {
                    self.out.push_str(protocol::ECHO);
                    Ok(())
                }
                _ => {
                    self.reject("no bus is open: send `open BUS` first");
                    Ok(())
                }
            };
        };
        let now = Instant::now();
        let problem = match (command, bus.mode) {
            (Command::Open(_), _) => Some("a bus is already open".to_string()),
            (Command::Echo, _) => {
                self.out.push_str(protocol::ECHO);
                None
            }
            (Command::Mode(mode), _) => {
                bus.switch(mode);
                self.out.push_str(protocol::OK);
                None
            }
            (Command::Send(frame), Mode::Raw | Mode::Bcm) => {
                bus.send(&frame)?;
                None
            }
            (Command::Add { interval, frame }, Mode::Bcm) => {
                let first = bus.tx.add(frame, interval, now);
                bus.send(&first)?;
                None
            }
            (Command::Update(frame), Mode::Bcm) => {
                let id = frame.id();
                (!bus.tx.update(frame)).then(|| no_job("send job", id))
            }
            (Command::Delete(id), Mode::Bcm) => (!bus.tx.delete(id)).then(|| no_job("send job", Some(id))),
            (Command::Filter { throttle, id, mask }, Mode::Bcm) => {
                bus.rx.filter(id, &mask, throttle);
                None
            }
            (Command::Subscribe { throttle, id }, Mode::Bcm) => {
                bus.rx.subscribe(id, throttle);
                None
            }
            (Command::Unsubscribe(id), Mode::Bcm) => {
                (!bus.rx.unsubscribe(id)).then(|| no_job("subscription or filter", Some(id)))
            }
            (Command::Statistics(ms), Mode::Control) => {
                bus.stats = (ms > 0).then(|| {
                    let interval = Duration::from_millis(u64::from(ms));
                    (interval, now + interval)
                });
                None
            }
            (command, mode) => Some(format!(
                "`{}` is not available in {}",
                command.name(),
                mode.name()
            )),
        };
        if let Some(problem) = problem {
            self.reject(&problem);
        }
        Ok(())
    }

    fn open(&mut self, name: &str, shared: &Shared) -> Result<(), End> {
        let endpoint = shared
            .buses
            .lock()
            .ok()
            .and_then(|buses| buses.get(name).cloned());
        let Some(endpoint) = endpoint else {
            tracing::info!(peer = %self.peer, bus = %name, "socketcand client asked for an unknown bus");
            self.out.push_str(protocol::COULD_NOT_OPEN_BUS);
            return Err(End::Refused);
        };
        let hub = match bridge::join(&endpoint, PROTOCOL, &self.peer, true, true) {
            Ok(hub) => hub,
            Err(e) => {
                tracing::warn!(peer = %self.peer, bus = %name, error = %e, "socketcand cannot join the bus");
                self.out.push_str(&protocol::error_reply(&format!(
                    "could not start interface {name}"
                )));
                return Err(End::Refused);
            }
        };
        let node = shared.nodes.add(PROTOCOL, &self.peer);
        tracing::debug!(node = %node.node, bus = %name, endpoint = %endpoint, "socketcand client opened a bus");
        self.bus = Some(OpenBus {
            hub,
            node,
            mode: Mode::Bcm,
            tx: TxJobs::default(),
            rx: RxOps::default(),
            stats: None,
            traffic: Traffic::default(),
            skipped_fd: 0,
            skipped_remote: 0,
            hub_pending: false,
        });
        self.out.push_str(protocol::OK);
        Ok(())
    }
}

fn no_job(what: &str, id: Option<vcan::CanId>) -> String {
    match id {
        Some(id) => format!("no {what} for id {id}"),
        None => format!("no {what} for this frame"),
    }
}

impl OpenBus {
    fn next_deadline(&self) -> Option<Instant> {
        [
            self.tx.next_deadline(),
            self.rx.next_deadline(),
            self.stats.map(|(_, next)| next),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Leaving BCM mode ends its jobs and subscriptions (socketcand closes its BCM socket); leaving
    /// control mode ends the statistics.
    fn switch(&mut self, mode: Mode) {
        if mode == self.mode {
            return;
        }
        match self.mode {
            Mode::Bcm => {
                self.tx.clear();
                self.rx.clear();
            }
            Mode::Control => self.stats = None,
            Mode::Raw => {}
        }
        self.mode = mode;
    }

    fn send(&mut self, frame: &Frame) -> Result<(), End> {
        self.hub
            .send(frame)
            .map_err(|e| End::Bus(format!("cannot send to the bus: {e}")))?;
        BridgeCounters::add(&self.node.counters.to_bus, 1);
        self.traffic.tpackets += 1;
        self.traffic.tbytes += frame.payload().len() as u64;
        Ok(())
    }

    /// Takes what the hub delivered and runs the timers that are due.
    fn pump(&mut self, out: &mut String) -> Result<(), End> {
        self.hub_pending = false;
        for taken in 0.. {
            if taken == HUB_BATCH {
                self.hub_pending = true;
                break;
            }
            match self.hub.recv(Some(Duration::ZERO)) {
                Ok(Some(received)) => self.received(received, out),
                Ok(None) => break,
                Err(e) => return Err(End::Bus(format!("lost the bus: {e}"))),
            }
        }
        let now = Instant::now();
        let mut frames = Vec::new();
        self.tx.due(now, &mut frames);
        for frame in &frames {
            self.send(frame)?;
        }
        let mut reports = Vec::new();
        self.rx.due(now, &mut reports);
        for (frame, timestamp_ns) in reports {
            self.report_bcm(&frame, timestamp_ns, out);
        }
        if let Some((interval, next)) = self.stats {
            if next <= now {
                let t = &self.traffic;
                out.push_str(&protocol::stat(t.rbytes, t.rpackets, t.tbytes, t.tpackets));
                let mut next = next + interval;
                if next <= now {
                    next = now + interval;
                }
                self.stats = Some((interval, next));
            }
        }
        Ok(())
    }

    fn received(&mut self, received: Received, out: &mut String) {
        let frame = &received.frame;
        self.traffic.rpackets += 1;
        self.traffic.rbytes += frame.payload().len() as u64;
        match frame {
            Frame::Fd { .. } => {
                if self.skipped_fd == 0 {
                    tracing::info!(node = %self.node.node, "CAN FD frames are not passed to socketcand clients");
                }
                self.skipped_fd += 1;
            }
            Frame::Remote { .. } => {
                if self.skipped_remote == 0 {
                    tracing::info!(node = %self.node.node, "remote frames are not passed to socketcand clients");
                }
                self.skipped_remote += 1;
            }
            Frame::Error { class, .. } => {
                if self.mode == Mode::Raw {
                    out.push_str(&protocol::raw_error(*class, received.timestamp_ns));
                    BridgeCounters::add(&self.node.counters.to_peer, 1);
                }
            }
            Frame::Data { id, data } => match self.mode {
                Mode::Raw => {
                    out.push_str(&protocol::raw_frame(*id, data.as_slice(), received.timestamp_ns));
                    BridgeCounters::add(&self.node.counters.to_peer, 1);
                }
                Mode::Bcm => {
                    if let Some((frame, ts)) = self.rx.on_frame(frame, received.timestamp_ns, Instant::now())
                    {
                        self.report_bcm(&frame, ts, out);
                    }
                }
                Mode::Control => {}
            },
        }
    }

    fn report_bcm(&mut self, frame: &Frame, timestamp_ns: u64, out: &mut String) {
        if let Some(id) = frame.id() {
            out.push_str(&protocol::bcm_frame(id, frame.payload(), timestamp_ns));
            BridgeCounters::add(&self.node.counters.to_peer, 1);
        }
    }
}
