//! The running cannelloni bridge: one UDP socket linked to one remote peer, and one bridge node on a hub
//! bus, served by one thread.
//!
//! The thread waits on the UDP socket, the hub connection and the bridge's [`StopSignal`]:
//!
//! * Frames from the bus are gathered for [`CannelloniConfig::batch_timeout`] after the first one (or
//!   until a datagram is full), then sent to the remote as numbered DATA datagrams no larger than the
//!   MTU allows.
//! * Datagrams from the remote are decoded; their frames enter the bus through the bridge node in
//!   datagram order. Sequence numbers are tracked ([`crate::seq`]): gaps count as lost, late datagrams are
//!   delivered and count as reordered, copies count as duplicated and are not delivered again. Each of
//!   these is logged as a warning and kept among the node's problems.
//! * Datagrams from any other address, malformed datagrams, ACK/NACK datagrams (which cannelloni's UDP
//!   mode never sends) and CAN FD frames on a bridge without `fd` are rejected: counted, logged and
//!   described in the report. Nothing a peer sends makes the thread panic or stop.
//!
//! The thread ends when the bridge stops or the hub goes away; its node then leaves the bus.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vcan::bridge::{
    self, wait_readable, Bridge, BridgeCounters, BridgeError, BridgeNode, BridgeNodes, BridgeReport,
    StopSignal, Wake,
};
use vcan::client::HubClient;
use vcan::{BusError, CanSocket, Endpoint, Frame};

use crate::codec::{self, Encoder, Packet, HEADER_SIZE};
use crate::seq::{SeqEvent, SeqTracker};

/// The protocol name bridge nodes carry: `cannelloni:<remote ip:port>`.
pub const PROTOCOL: &str = "cannelloni";
/// How long frames are gathered into one datagram by default.
pub const DEFAULT_BATCH_TIMEOUT: Duration = Duration::from_millis(1);
/// The link MTU by default (cannelloni's `-m` default).
pub const DEFAULT_MTU: usize = 1500;
/// The default cannelloni UDP port (both `-l` and `-r`).
pub const DEFAULT_PORT: u16 = 20000;

/// Most datagrams or bus frames handled in one turn before the other side gets a turn.
const TURN_LIMIT: usize = 1024;
/// How long a send waits for room in the socket's buffer before the datagram is given up.
const SEND_WAIT: Duration = Duration::from_secs(1);

/// How to start a [`CannelloniBridge`].
#[derive(Debug, Clone)]
pub struct CannelloniConfig {
    /// The UDP address to bind; port 0 picks a free port ([`CannelloniBridge::local_addr`] tells which).
    pub local: SocketAddr,
    /// The peer: datagrams go there, and only datagrams from there are accepted.
    pub remote: SocketAddr,
    /// The hub bus to join.
    pub hub: Endpoint,
    /// How long frames from the bus are gathered into one datagram after the first; zero sends what one
    /// poll turn gathered at once. (cannelloni itself defaults to 100 ms.)
    pub batch_timeout: Duration,
    /// The link MTU; a datagram's payload is this less the IP and UDP headers (28 bytes over IPv4, 48
    /// over IPv6), as cannelloni computes it. It must leave room for the header and the largest frame.
    pub mtu: usize,
    /// Carry CAN FD frames (the bridge node joins the bus FD-capable); without it, CAN FD frames from the
    /// peer are rejected.
    pub fd: bool,
}

impl CannelloniConfig {
    /// A configuration with the defaults: 1 ms batching, MTU 1500, classic CAN only.
    pub fn new(local: SocketAddr, remote: SocketAddr, hub: Endpoint) -> CannelloniConfig {
        CannelloniConfig {
            local,
            remote,
            hub,
            batch_timeout: DEFAULT_BATCH_TIMEOUT,
            mtu: DEFAULT_MTU,
            fd: false,
        }
    }

    /// The largest datagram payload this configuration allows.
    pub fn max_payload(&self) -> Result<usize, BridgeError> {
        let overhead = if self.remote.is_ipv6() {
            codec::IPV6_UDP_OVERHEAD
        } else {
            codec::IPV4_UDP_OVERHEAD
        };
        self.mtu.checked_sub(overhead).ok_or_else(|| BridgeError::Setup {
            protocol: PROTOCOL,
            reason: format!(
                "MTU {} is smaller than the {overhead} bytes of IP and UDP headers",
                self.mtu
            ),
        })
    }
}

/// A running cannelloni bridge. Dropping it stops it.
#[derive(Debug)]
pub struct CannelloniBridge {
    local: SocketAddr,
    remote: SocketAddr,
    nodes: BridgeNodes,
    node: Arc<BridgeNode>,
    stop: StopSignal,
    thread: Option<JoinHandle<()>>,
}

impl CannelloniBridge {
    /// Binds `config.local`, joins the hub as `cannelloni:<remote>` and starts the bridge's thread.
    pub fn start(config: CannelloniConfig) -> Result<CannelloniBridge, BridgeError> {
        let socket = UdpSocket::bind(config.local).map_err(|source| BridgeError::Listen {
            protocol: PROTOCOL,
            address: config.local.to_string(),
            source,
        })?;
        CannelloniBridge::start_on(socket, config)
    }

    /// Like [`CannelloniBridge::start`] on a socket already bound (`config.local` is not used), so that
    /// two bridges can be given each other's address before either starts.
    pub fn start_on(socket: UdpSocket, config: CannelloniConfig) -> Result<CannelloniBridge, BridgeError> {
        let io_error = |source| BridgeError::Io {
            protocol: PROTOCOL,
            source,
        };
        let max_payload = config.max_payload()?;
        let encoder = Encoder::new(max_payload, config.fd).map_err(|e| BridgeError::Setup {
            protocol: PROTOCOL,
            reason: format!("MTU {}: {e}", config.mtu),
        })?;
        socket.set_nonblocking(true).map_err(io_error)?;
        let local = socket.local_addr().map_err(io_error)?;
        let remote = config.remote;
        let peer = remote.to_string();
        let hub = bridge::join(&config.hub, PROTOCOL, &peer, config.fd, false)?;
        let nodes = BridgeNodes::default();
        let node = nodes.add(PROTOCOL, &peer);
        let stop = StopSignal::new().map_err(io_error)?;
        let worker = Worker {
            socket,
            hub,
            node: Arc::clone(&node),
            remote,
            encoder,
            tracker: SeqTracker::new(),
            pending: Vec::new(),
            pending_bytes: 0,
            deadline: None,
            batch_timeout: config.batch_timeout,
            fd: config.fd,
            stop: stop.clone(),
            buf: vec![0u8; 65_536],
        };
        let thread = std::thread::Builder::new()
            .name(format!("cannelloni-{peer}"))
            .spawn(move || worker.run())
            .map_err(io_error)?;
        tracing::info!(%local, %remote, node = %node.node, fd = config.fd, mtu = config.mtu, "cannelloni bridge started");
        Ok(CannelloniBridge {
            local,
            remote,
            nodes,
            node,
            stop,
            thread: Some(thread),
        })
    }

    /// The UDP address the bridge is bound to (the one to give the peer).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The peer's address.
    pub fn remote_addr(&self) -> SocketAddr {
        self.remote
    }

    /// The bridge node's name on the bus, `cannelloni:<remote>`.
    pub fn node_name(&self) -> &str {
        &self.node.node
    }

    fn halt(&mut self) {
        self.stop.raise();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                self.node
                    .counters
                    .note(format!("{}: the bridge thread panicked", self.node.node));
            }
        }
        self.node.disconnected();
    }
}

impl Bridge for CannelloniBridge {
    fn protocol(&self) -> &'static str {
        PROTOCOL
    }

    fn address(&self) -> String {
        format!("udp {} → {}", self.local, self.remote)
    }

    fn report(&self) -> BridgeReport {
        self.nodes.report(PROTOCOL, self.address())
    }

    fn stop(&mut self) -> BridgeReport {
        self.halt();
        self.report()
    }
}

impl Drop for CannelloniBridge {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Why the bridge thread ends on its own.
#[derive(Debug, thiserror::Error)]
enum Fatal {
    #[error("the bus failed: {0}")]
    Bus(#[from] BusError),
    #[error("waiting on the sockets failed: {0}")]
    Poll(io::Error),
}

/// The bridge thread's state.
struct Worker {
    socket: UdpSocket,
    hub: HubClient,
    node: Arc<BridgeNode>,
    remote: SocketAddr,
    encoder: Encoder,
    tracker: SeqTracker,
    /// Frames from the bus not yet sent, and their encoded size.
    pending: Vec<Frame>,
    pending_bytes: usize,
    /// When the pending frames must be sent.
    deadline: Option<Instant>,
    batch_timeout: Duration,
    fd: bool,
    stop: StopSignal,
    buf: Vec<u8>,
}

impl Worker {
    fn run(mut self) {
        if let Err(e) = self.serve() {
            self.node
                .counters
                .note(format!("{}: bridge stopped: {e}", self.node.node));
        }
        // Whatever was gathered still goes out.
        self.flush(true);
        self.node.disconnected();
        tracing::info!(node = %self.node.node, "cannelloni bridge thread ended");
    }

    fn serve(&mut self) -> Result<(), Fatal> {
        let fds = [self.socket.as_raw_fd(), self.hub.raw_fd()];
        loop {
            let timeout = if self.hub.has_buffered() {
                Some(Duration::ZERO)
            } else {
                self.deadline.map(|d| d.saturating_duration_since(Instant::now()))
            };
            let ready = match wait_readable(&self.stop, &fds, timeout).map_err(Fatal::Poll)? {
                Wake::Stop => return Ok(()),
                Wake::Ready(ready) => ready,
            };
            if ready[0] {
                self.receive_datagrams()?;
            }
            if ready[1] || self.hub.has_buffered() {
                self.drain_bus()?;
            }
            let due = self.batch_timeout.is_zero() || self.deadline.is_some_and(|d| Instant::now() >= d);
            self.flush(due);
        }
    }

    /// Takes the frames the hub has for this node (up to a turn's worth).
    fn drain_bus(&mut self) -> Result<(), Fatal> {
        for _ in 0..TURN_LIMIT {
            let Some(received) = self.hub.recv(Some(Duration::ZERO))? else {
                break;
            };
            if self.pending.is_empty() {
                self.deadline = Some(Instant::now() + self.batch_timeout);
            }
            self.pending_bytes += codec::frame_size(&received.frame);
            self.pending.push(received.frame);
            // A full datagram goes out at once.
            if HEADER_SIZE + self.pending_bytes > self.encoder.max_payload() {
                self.flush(false);
            }
        }
        Ok(())
    }

    /// Sends the pending frames: all of them if `all`, otherwise only the datagrams that are full.
    fn flush(&mut self, all: bool) {
        let mut sent = 0usize;
        while sent < self.pending.len() {
            if !all && HEADER_SIZE + self.pending_bytes <= self.encoder.max_payload() {
                break;
            }
            let Some((seq, bytes, taken)) = self.encoder.encode_one(&self.pending[sent..]) else {
                break;
            };
            let frames = &self.pending[sent..sent + taken];
            self.pending_bytes -= frames.iter().map(codec::frame_size).sum::<usize>();
            sent += taken;
            // Counted before the peer can see the datagram (and taken back if it was not sent).
            let counters = &self.node.counters;
            BridgeCounters::add(&counters.to_peer, taken as u64);
            if let Err(e) = self.send_datagram(&bytes) {
                counters.to_peer.fetch_sub(taken as u64, Ordering::Relaxed);
                counters.note(format!(
                    "{}: datagram seq {seq} ({taken} frames, {} bytes) not sent to {}: {e}",
                    self.node.node,
                    bytes.len(),
                    self.remote
                ));
            }
        }
        self.pending.drain(..sent);
        if self.pending.is_empty() {
            self.deadline = None;
            self.pending_bytes = 0;
        }
    }

    /// Sends one datagram, waiting (a bounded time) for room in the socket buffer.
    fn send_datagram(&self, bytes: &[u8]) -> io::Result<()> {
        let give_up = Instant::now() + SEND_WAIT;
        loop {
            match self.socket.send_to(bytes, self.remote) {
                Ok(n) if n == bytes.len() => return Ok(()),
                Ok(n) => {
                    return Err(io::Error::other(format!(
                        "only {n} of {} bytes sent",
                        bytes.len()
                    )))
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let left = give_up.saturating_duration_since(Instant::now());
                    if left.is_zero() || !wait_writable(&self.socket, left)? {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "the socket's send buffer stayed full",
                        ));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads the datagrams waiting on the socket (up to a turn's worth).
    fn receive_datagrams(&mut self) -> Result<(), Fatal> {
        for _ in 0..TURN_LIMIT {
            let (len, source) = match self.socket.recv_from(&mut self.buf) {
                Ok(got) => got,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // ICMP errors reported on the socket (port unreachable, …): noted, not fatal.
                    self.node
                        .counters
                        .note(format!("{}: UDP receive error: {e}", self.node.node));
                    break;
                }
            };
            let datagram = std::mem::take(&mut self.buf);
            let result = self.handle_datagram(&datagram[..len], source);
            self.buf = datagram;
            result?;
        }
        Ok(())
    }

    /// Puts one datagram's frames onto the bus, or rejects it.
    fn handle_datagram(&mut self, datagram: &[u8], source: SocketAddr) -> Result<(), Fatal> {
        let counters = &self.node.counters;
        let name = &self.node.node;
        if source != self.remote {
            counters.reject(format!(
                "{name}: datagram of {} bytes from {source} ignored: not the peer {}",
                datagram.len(),
                self.remote
            ));
            return Ok(());
        }
        let (seq, frames) = match codec::decode(datagram) {
            Ok(Packet::Data { seq, frames }) => (seq, frames),
            Ok(Packet::Control { op, seq }) => {
                counters.reject(format!(
                    "{name}: {op} datagram (seq {seq}) from {source} ignored: cannelloni's UDP format uses only DATA"
                ));
                return Ok(());
            }
            Err(e) => {
                counters.reject(format!(
                    "{name}: malformed datagram of {} bytes from {source}: {e}",
                    datagram.len()
                ));
                return Ok(());
            }
        };
        let highest = self.tracker.highest();
        let event = self.tracker.observe(seq);
        match event {
            SeqEvent::First | SeqEvent::InOrder => {}
            SeqEvent::Gap { missing } => counters.note(format!(
                "{name}: {missing} datagram(s) from {source} lost between seq {} and seq {seq}",
                highest.map_or(String::from("?"), |h| h.to_string())
            )),
            SeqEvent::Late { behind, .. } => counters.note(format!(
                "{name}: datagram seq {seq} from {source} arrived late ({behind} behind seq {}); delivered",
                highest.map_or(String::from("?"), |h| h.to_string())
            )),
            SeqEvent::Duplicate => counters.note(format!(
                "{name}: datagram seq {seq} from {source} arrived again; its {} frames were not delivered twice",
                frames.len()
            )),
        }
        counters.lost.store(self.tracker.lost(), Ordering::Relaxed);
        counters
            .reordered
            .store(self.tracker.reordered(), Ordering::Relaxed);
        counters
            .duplicated
            .store(self.tracker.duplicated(), Ordering::Relaxed);
        if !event.deliver() {
            return Ok(());
        }
        let mut to_bus = Vec::with_capacity(frames.len());
        for frame in frames {
            if frame.is_fd() && !self.fd {
                counters.reject(format!(
                    "{name}: CAN FD frame {frame} in datagram seq {seq} from {source} rejected: the bridge runs without CAN FD"
                ));
            } else {
                to_bus.push(frame);
            }
        }
        if to_bus.is_empty() {
            return Ok(());
        }
        // Counted before the frames can be seen on the bus, so a report read after they arrived has them.
        let count = to_bus.len() as u64;
        BridgeCounters::add(&counters.to_bus, count);
        let result = self.hub.send_batch(&to_bus);
        if result.is_err() {
            counters.to_bus.fetch_sub(count, Ordering::Relaxed);
        }
        match result {
            Ok(()) => Ok(()),
            Err(BusError::Unsupported(reason)) => {
                counters.reject(format!(
                    "{name}: {} frames of datagram seq {seq} from {source} refused by the bus: {reason}",
                    to_bus.len()
                ));
                Ok(())
            }
            Err(e) => Err(Fatal::Bus(e)),
        }
    }
}

/// Waits until `socket` can be written to; false on a timeout.
fn wait_writable(socket: &UdpSocket, timeout: Duration) -> io::Result<bool> {
    let mut pollfd = libc::pollfd {
        fd: socket.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    };
    let ms = i32::try_from(timeout.as_millis().max(1)).unwrap_or(i32::MAX);
    // SAFETY: `pollfd` is one live pollfd for the duration of the call.
    let n = unsafe { libc::poll(&mut pollfd, 1, ms) };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(true);
        }
        return Err(e);
    }
    Ok(n > 0)
}
