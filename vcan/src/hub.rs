//! The userspace virtual CAN bus.
//!
//! A [`Hub`] listens on a Unix stream socket and/or a loopback TCP port. Nodes join with the [`crate::wire`]
//! handshake; every frame a node sends is stamped with the host time and a bus-wide sequence number and
//! delivered, in that one global order, to every other node whose filters accept it (and back to the sender
//! when it asked for its own frames), like the kernel's `vcan`.
//!
//! A node is on the bus from the moment the hub handles its hello: it gets every frame ordered after
//! that (so every frame sent once its `HubClient::connect` has returned) and none ordered before. A
//! burst that starts while another node is still joining reaches that node only from some frame on;
//! `delivered` below `sent` with no drops, and nothing left queued, is this, not a stall. A connection
//! that has not completed its hello within [`HubConfig::handshake_timeout`] (10 s by default) is closed,
//! with a warning naming the peer, and counted ([`Hub::handshake_timeouts`]).
//!
//! Backpressure is explicit. Each node has a bounded outbound queue. With [`Backpressure::Drop`] a full
//! queue drops the frame *for that node only* and counts it in [`NodeStats::dropped`]; with
//! [`Backpressure::Block`] the hub stops reading from senders until the slow node drains (flow control:
//! nothing is lost, senders slow down). Statistics are available from the handle ([`Hub::stats`]) and over
//! the wire to any client ([`query_stats`]).
//!
//! The hub runs on its own thread; it is embedded in the harness (one hub per scenario bus) and runnable as
//! a standalone process through the CLI's `hub` command.
//!
//! How it works (one thread, `mio`, edge-triggered, nonblocking sockets):
//! * Each connection gets one read of up to 128 KiB per loop turn, so a busy sender is drained with few
//!   system calls and cannot starve the others; every complete [`crate::wire::SEND`] in it is ordered at
//!   once: sequence number = bus-wide frame count, timestamp = `SystemTime` now.
//! * A frame is encoded once as a [`crate::wire::DELIVER`] message and appended to the outbound buffer of
//!   every node that accepts it (filters, FD capability, error frames, own echo only with `recv_own`).
//!   Outbound buffers are written after each turn, so a burst goes out in large writes.
//! * A node's queue is the frames the hub holds for it beyond what its socket buffer took. When it reaches
//!   [`HubConfig::queue_frames`], the hub first tries to hand the queue to the socket; only if the socket is
//!   full too does backpressure apply.
//! * Writable readiness is only asked for while a node's output is blocked (otherwise every read by the
//!   peer would wake the hub once more).
//! * Malformed bytes from a connection close that connection only, with a `warn` log naming the node.
//!
//! Faults and bus timing (both off by default, and then the path above is all a frame takes):
//! * [`Hub::add_fault`] and its siblings run the [`crate::fault`] engine on every frame a node sends
//!   (frames the hub injects or generates are not faulted). Dropped-by-fault frames are counted in the
//!   fault's report, never in [`HubStats::dropped`].
//! * With a [`HubConfig::timing`] (or [`Hub::set_timing`]) the bus is a [`crate::bustime::BusScheduler`]:
//!   per-node transmit queues of [`TX_QUEUE_FRAMES`], arbitration, and DELIVER timestamps that are the
//!   virtual end-of-frame times. Faults act before a frame enters its sender's queue (a delayed frame
//!   joins it when its delay is over). While a node's queue is full the hub stops reading from it.
//! * Timed work (delayed and held frames, fault durations, generators, ends of frames) wakes the loop
//!   through a `timerfd` armed at the next deadline (ms poll timeouts if no timerfd is available).

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

use crate::bustime::{BusScheduler, BusTiming};
pub use crate::client::query_stats;
pub use crate::fault::{Fault, FaultId, FaultReport};
use crate::fault::{FaultEngine, Origin, Output, CAN_ERR_BUSOFF, CAN_ERR_RESTARTED};
use crate::filter::Filter;
use crate::frame::Frame;
use crate::options::Endpoint;
use crate::socket::BusError;
use crate::wire::{self, Decoder, Message, Role};
/// The statistics types are part of the wire protocol ([`wire::STATS_REPLY`]); re-exported here because
/// they are what [`Hub::stats`] and [`query_stats`] return.
pub use crate::wire::{HubStats, NodeStats};

/// What the hub does when a node's outbound queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backpressure {
    /// Drop the frame for that node and count the drop.
    #[default]
    Drop,
    /// Stop reading from senders until the node drains.
    Block,
}

/// Hub settings.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Bus name used in logs and statistics.
    pub name: String,
    /// Unix socket path to listen on (created; removed on shutdown; a stale socket file is replaced).
    pub unix_path: Option<PathBuf>,
    /// TCP address to listen on; port 0 picks a free port.
    pub tcp_addr: Option<SocketAddr>,
    /// Frames a node's outbound queue holds before backpressure applies.
    pub queue_frames: usize,
    pub backpressure: Backpressure,
    /// The bus's bitrate: with one, frames queue per node, arbitrate and take their wire time (see
    /// [`crate::bustime`]); `None`: an ideal bus that delivers every frame at once.
    pub timing: Option<BusTiming>,
    /// How long a new connection may take to complete its hello; one that has not by then is closed
    /// (logged with its peer, counted in [`Hub::handshake_timeouts`]). `None`: no deadline.
    pub handshake_timeout: Option<Duration>,
}

/// The default [`HubConfig::handshake_timeout`].
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            name: "vcan".into(),
            unix_path: None,
            tcp_addr: None,
            queue_frames: 65_536,
            backpressure: Backpressure::Drop,
            timing: None,
            handshake_timeout: Some(HANDSHAKE_TIMEOUT),
        }
    }
}

/// A running hub. Dropping it shuts it down.
pub struct Hub {
    name: String,
    unix_path: Option<PathBuf>,
    tcp_addr: Option<SocketAddr>,
    requests: mpsc::Sender<Request>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<HubStats>>,
    /// The counters the hub thread left when it ended (used if it ended unexpectedly).
    last: Arc<Mutex<Option<HubStats>>>,
    /// Connections closed for not completing their handshake in time.
    handshake_timeouts: Arc<AtomicU64>,
}

enum Request {
    Stats(mpsc::SyncSender<HubStats>),
    AddFault(Box<Fault>, mpsc::SyncSender<Result<FaultId, BusError>>),
    RemoveFault(FaultId, mpsc::SyncSender<Option<FaultReport>>),
    ClearFaults(mpsc::SyncSender<Vec<FaultReport>>),
    FaultReports(mpsc::SyncSender<Vec<FaultReport>>),
    Inject(Frame, mpsc::SyncSender<Result<(), BusError>>),
    SetTiming(Option<BusTiming>, mpsc::SyncSender<Result<(), BusError>>),
    Shutdown,
}

const WAKER: Token = Token(0);
const UNIX_LISTENER: Token = Token(1);
const TCP_LISTENER: Token = Token(2);
const TIMER: Token = Token(3);
const FIRST_CONN: usize = 4;
/// Frames a node's transmit queue holds on a bus with a timing; while it is full the hub stops reading
/// from that node (its socket buffer fills and its sends block, like a controller's full tx buffer).
pub const TX_QUEUE_FRAMES: usize = 1024;
/// Frames a virtual node (bus load, babbler) keeps queued at most; a generator that loses arbitration
/// skips frames instead of piling them up.
const VIRTUAL_TX_QUEUE: usize = 64;
/// Bytes read from one connection per turn: large, so a busy sender is drained in few syscalls, and one
/// turn per connection per loop keeps senders fair.
const READ_CHUNK: usize = 128 * 1024;

impl Hub {
    /// Binds the configured listeners and starts the hub thread.
    ///
    /// Returns once the listeners are bound, so the endpoints are connectable as soon as this returns.
    pub fn start(config: HubConfig) -> Result<Hub, BusError> {
        if let Some(timing) = &config.timing {
            check_timing(timing)?;
        }
        if config.unix_path.is_none() && config.tcp_addr.is_none() {
            return Err(BusError::InvalidEndpoint {
                uri: String::new(),
                reason: format!(
                    "hub `{}` has neither a Unix socket path nor a TCP address to listen on",
                    config.name
                ),
            });
        }
        let io_err = |endpoint: String| move |source: io::Error| BusError::Io { endpoint, source };
        let poll = Poll::new().map_err(io_err(format!("hub `{}`", config.name)))?;
        let waker =
            Arc::new(Waker::new(poll.registry(), WAKER).map_err(io_err(format!("hub `{}`", config.name)))?);

        let mut unix = None;
        if let Some(path) = &config.unix_path {
            let endpoint = Endpoint::Unix(path.clone()).to_string();
            remove_stale_socket(path).map_err(io_err(endpoint.clone()))?;
            let mut listener = UnixListener::bind(path).map_err(io_err(endpoint.clone()))?;
            poll.registry()
                .register(&mut listener, UNIX_LISTENER, Interest::READABLE)
                .map_err(io_err(endpoint))?;
            unix = Some(listener);
        }
        let mut tcp = None;
        let mut tcp_addr = None;
        if let Some(addr) = config.tcp_addr {
            let endpoint = Endpoint::Tcp(addr).to_string();
            let bound = TcpListener::bind(addr).and_then(|mut l| {
                poll.registry()
                    .register(&mut l, TCP_LISTENER, Interest::READABLE)?;
                let local = l.local_addr()?;
                Ok((l, local))
            });
            match bound {
                Ok((listener, local)) => {
                    tcp_addr = Some(local);
                    tcp = Some(listener);
                }
                Err(source) => {
                    if let Some(path) = &config.unix_path {
                        let _ = std::fs::remove_file(path);
                    }
                    return Err(BusError::Io { endpoint, source });
                }
            }
        }

        let timer = match Timer::new() {
            Ok(timer) => match poll.registry().register(
                &mut SourceFd(&timer.fd.as_raw_fd()),
                TIMER,
                Interest::READABLE,
            ) {
                Ok(()) => Some(timer),
                Err(e) => {
                    tracing::warn!(bus = %config.name, error = %e, "cannot poll a timerfd; timed work rounds to ms");
                    None
                }
            },
            Err(e) => {
                tracing::warn!(bus = %config.name, error = %e, "no timerfd; timed work rounds to ms");
                None
            }
        };
        let (tx, rx) = mpsc::channel();
        let last = Arc::new(Mutex::new(None));
        let handshake_timeouts = Arc::new(AtomicU64::new(0));
        let name = config.name.clone();
        let unix_path = config.unix_path.clone();
        let mut state = HubThread {
            poll,
            unix,
            tcp,
            conns: Vec::new(),
            free: Vec::new(),
            nodes: Vec::new(),
            frames: 0,
            dropped: 0,
            any_full: false,
            scratch: Vec::with_capacity(128),
            requests: rx,
            accepted: 0,
            faults: FaultEngine::new(config.timing),
            bus: config.timing.map(BusScheduler::new),
            timer,
            names: Vec::new(),
            outputs: Vec::new(),
            tx_blocked: false,
            handshakes: VecDeque::new(),
            handshake_timeouts: Arc::clone(&handshake_timeouts),
            config,
        };
        let thread_last = Arc::clone(&last);
        let thread = std::thread::Builder::new()
            .name(format!("vcan-hub-{name}"))
            .spawn(move || {
                let stats = state.run();
                if let Ok(mut slot) = thread_last.lock() {
                    *slot = Some(stats.clone());
                }
                stats
            })
            .map_err(io_err(format!("hub `{name}`")))?;
        tracing::info!(bus = %name, unix = ?unix_path, tcp = ?tcp_addr, "hub started");
        Ok(Hub {
            name,
            unix_path,
            tcp_addr,
            requests: tx,
            waker,
            thread: Some(thread),
            last,
            handshake_timeouts,
        })
    }

    /// `unix:` endpoint, if listening on a Unix socket.
    pub fn unix_endpoint(&self) -> Option<Endpoint> {
        self.unix_path.clone().map(Endpoint::Unix)
    }

    /// `tcp:` endpoint with the actual bound port, if listening on TCP.
    pub fn tcp_endpoint(&self) -> Option<Endpoint> {
        self.tcp_addr.map(Endpoint::Tcp)
    }

    /// The bus name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A snapshot of the counters.
    ///
    /// The snapshot is taken by the hub thread between two frames, so it is consistent with what nodes have
    /// received: every frame a node has read is counted.
    /// Connections closed so far because they did not complete their hello within
    /// [`HubConfig::handshake_timeout`].
    pub fn handshake_timeouts(&self) -> u64 {
        self.handshake_timeouts.load(Ordering::Relaxed)
    }

    pub fn stats(&self) -> HubStats {
        let (tx, rx) = mpsc::sync_channel(1);
        if self.requests.send(Request::Stats(tx)).is_ok() && self.waker.wake().is_ok() {
            if let Ok(stats) = rx.recv() {
                return stats;
            }
        }
        self.last_stats()
    }

    /// Sends a request to the hub thread and waits for its reply; `None` if the hub is gone.
    fn call<T>(&self, request: impl FnOnce(mpsc::SyncSender<T>) -> Request) -> Option<T> {
        let (tx, rx) = mpsc::sync_channel(1);
        if self.requests.send(request(tx)).is_ok() && self.waker.wake().is_ok() {
            rx.recv().ok()
        } else {
            None
        }
    }

    /// Starts a fault (see [`crate::fault`]); it acts from the next frame on.
    ///
    /// Refused with [`BusError::InvalidFault`] when it cannot work: a drop percentage outside 0..=100, a
    /// cut link without a node name, a bus load or back-to-back babble on a bus without a timing.
    pub fn add_fault(&self, fault: Fault) -> Result<FaultId, BusError> {
        self.call(|tx| Request::AddFault(Box::new(fault), tx))
            .unwrap_or_else(|| Err(BusError::Closed(self.name.clone())))
    }

    /// Ends a fault; its report, or `None` if no such fault is active.
    pub fn remove_fault(&self, id: FaultId) -> Option<FaultReport> {
        self.call(|tx| Request::RemoveFault(id, tx)).flatten()
    }

    /// Ends every fault and returns the reports of all faults added since the last clear (ended ones
    /// too), in the order they were added; the hub then forgets them.
    pub fn clear_faults(&self) -> Vec<FaultReport> {
        self.call(Request::ClearFaults).unwrap_or_default()
    }

    /// The reports of all faults added since the last clear, active ones with their counts so far.
    pub fn fault_reports(&self) -> Vec<FaultReport> {
        self.call(Request::FaultReports).unwrap_or_default()
    }

    /// Puts a frame on the bus from the hub itself (node name `hub`), for example an error frame: it is
    /// delivered to every node whose filters (or error mask) accept it, like any frame. Faults do not act
    /// on it; with a bus timing it arbitrates like the others (error frames first).
    pub fn inject(&self, frame: Frame) -> Result<(), BusError> {
        self.call(|tx| Request::Inject(frame, tx))
            .unwrap_or_else(|| Err(BusError::Closed(self.name.clone())))
    }

    /// Gives the bus a bitrate, changes it, or (`None`) makes it ideal again (frames still queued are
    /// then delivered at once). Refused while a fault that needs a bitrate is active.
    pub fn set_timing(&self, timing: Option<BusTiming>) -> Result<(), BusError> {
        self.call(|tx| Request::SetTiming(timing, tx))
            .unwrap_or_else(|| Err(BusError::Closed(self.name.clone())))
    }

    fn last_stats(&self) -> HubStats {
        match self.last.lock() {
            Ok(slot) => slot.clone().unwrap_or_else(|| HubStats {
                name: self.name.clone(),
                ..HubStats::default()
            }),
            Err(_) => HubStats {
                name: self.name.clone(),
                ..HubStats::default()
            },
        }
    }

    /// Stops the hub, disconnects all nodes, removes the socket file and returns the final counters.
    pub fn shutdown(mut self) -> HubStats {
        self.stop()
    }

    fn stop(&mut self) -> HubStats {
        let Some(thread) = self.thread.take() else {
            return self.last_stats();
        };
        let _ = self.requests.send(Request::Shutdown);
        if let Err(e) = self.waker.wake() {
            tracing::error!(bus = %self.name, error = %e, "cannot wake the hub thread to shut it down");
        }
        let stats = match thread.join() {
            Ok(stats) => stats,
            Err(_) => {
                tracing::error!(bus = %self.name, "the hub thread panicked");
                self.last_stats()
            }
        };
        // The thread removes the socket file; this covers a thread that died before it could.
        if let Some(path) = &self.unix_path {
            if is_socket(path) {
                let _ = std::fs::remove_file(path);
            }
        }
        tracing::info!(bus = %self.name, frames = stats.frames, dropped = stats.dropped, "hub stopped");
        stats
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.stop();
    }
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("name", &self.name)
            .field("unix_path", &self.unix_path)
            .field("tcp_addr", &self.tcp_addr)
            .finish_non_exhaustive()
    }
}

fn is_socket(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

/// Removes a socket file left by a hub that is gone; refuses to touch a live socket or a non-socket file.
fn remove_stale_socket(path: &Path) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a socket; not replacing it", path.display()),
        ));
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("another process is listening on {}", path.display()),
        ));
    }
    tracing::debug!(path = %path.display(), "replacing stale hub socket file");
    std::fs::remove_file(path)
}

fn check_timing(timing: &BusTiming) -> Result<(), BusError> {
    if timing.bitrate.nominal == 0 || timing.bitrate.data == Some(0) {
        return Err(BusError::InvalidTiming(format!(
            "a bitrate of 0 bit/s ({:?})",
            timing.bitrate
        )));
    }
    Ok(())
}

/// A `timerfd` on `CLOCK_REALTIME` (the clock of the hub's timestamps), armed at absolute times, so the
/// hub wakes for timed work with ns precision rather than poll's ms.
struct Timer {
    fd: std::os::fd::OwnedFd,
    armed: Option<u64>,
}

impl Timer {
    fn new() -> io::Result<Timer> {
        // SAFETY: plain syscall; the returned fd is owned below.
        let fd =
            unsafe { libc::timerfd_create(libc::CLOCK_REALTIME, libc::TFD_NONBLOCK | libc::TFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        Ok(Timer { fd, armed: None })
    }

    /// Fires once at `at_ns` (ns since the Unix epoch).
    fn arm(&mut self, at_ns: u64) -> io::Result<()> {
        if self.armed == Some(at_ns) {
            return Ok(());
        }
        let at_ns = at_ns.max(1);
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: (at_ns / 1_000_000_000) as libc::time_t,
                tv_nsec: (at_ns % 1_000_000_000) as libc::c_long,
            },
        };
        // SAFETY: valid fd and itimerspec; the old value is not asked for.
        let rc = unsafe {
            libc::timerfd_settime(
                self.fd.as_raw_fd(),
                libc::TFD_TIMER_ABSTIME,
                &spec,
                std::ptr::null_mut(),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        self.armed = Some(at_ns);
        Ok(())
    }

    /// Consumes an expiry (so the next one raises a new edge).
    fn fired(&mut self) {
        let mut buf = [0u8; 8];
        // SAFETY: reads at most 8 bytes into `buf`; errors (EAGAIN) are fine.
        let _ = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        self.armed = None;
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Stream {
    fn fd(&self) -> RawFd {
        match self {
            Stream::Unix(s) => s.as_raw_fd(),
            Stream::Tcp(s) => s.as_raw_fd(),
        }
    }

    fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            Stream::Unix(s) => s,
            Stream::Tcp(s) => s,
        }
    }
}

/// What a connection is, once it said hello.
enum ConnRole {
    AwaitingHello,
    Node(NodeConfig),
    Control,
}

struct NodeConfig {
    /// Index into `HubThread::nodes`.
    index: usize,
    recv_own: bool,
    want_errors: bool,
    fd: bool,
    filters: Vec<Filter>,
    /// Whether a drop was already logged since the queue last drained.
    drop_logged: bool,
    /// Unplugged by a cut-link fault: nothing is delivered to it.
    cut: bool,
}

struct Conn {
    /// The hub's accept count when it was accepted: tells this connection from a later one in its slot.
    serial: u64,
    stream: Stream,
    decoder: Decoder,
    role: ConnRole,
    /// Outbound bytes; `out[out_pos..]` is not yet written.
    out: Vec<u8>,
    out_pos: usize,
    /// Bytes ever removed from the front of `out` (so `frame_ends` can hold absolute offsets).
    out_base: u64,
    /// Absolute end offsets of the delivered frames still queued in `out`: the queue length in frames.
    frame_ends: VecDeque<u64>,
    readable: bool,
    writable: bool,
    /// Close once `out` is flushed (after a refusal).
    closing: bool,
    /// A write failed; the next `flush_all` meets the error again.
    write_failed: bool,
    /// The peer stopped reading (its socket is closed for writing): nothing more is queued for it and its
    /// output is discarded, but what it sent before is still read, up to its end of stream, so that a node
    /// that sends and exits at once loses no frame.
    peer_gone: bool,
    /// Registered for writable events too. Only while output is blocked: a Unix stream socket signals
    /// write space every time the peer reads, which would wake the hub once more per delivered frame.
    write_interest: bool,
    /// Its transmit queue on a bus with a timing is full: the hub reads nothing more from it until the
    /// queue has room.
    tx_full: bool,
}

impl Conn {
    fn queued_frames(&self) -> usize {
        self.frame_ends.len()
    }

    fn has_output(&self) -> bool {
        self.out_pos < self.out.len()
    }
}

/// Why a connection is being closed.
enum CloseReason {
    Eof,
    Error(BusError),
    Refused,
    Shutdown,
    /// No hello within the handshake deadline.
    HandshakeTimeout(Duration),
}

struct HubThread {
    config: HubConfig,
    poll: Poll,
    unix: Option<UnixListener>,
    tcp: Option<TcpListener>,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    nodes: Vec<NodeStats>,
    frames: u64,
    dropped: u64,
    /// Some node's queue is full (only tracked for [`Backpressure::Block`]).
    any_full: bool,
    scratch: Vec<u8>,
    requests: mpsc::Receiver<Request>,
    accepted: u64,
    faults: FaultEngine<usize>,
    /// The bus with a timing; `None`: ideal bus.
    bus: Option<BusScheduler<Origin<usize>>>,
    timer: Option<Timer>,
    /// Node names for fault selectors, by node index (the hello name, or `node<N>`).
    names: Vec<String>,
    /// Reused buffer of what the fault engine asks for.
    outputs: Vec<Output<usize>>,
    /// Some connection has `tx_full` set.
    tx_blocked: bool,
    /// Handshake deadlines of accepted connections, in accept order (so in deadline order): deadline,
    /// slot, serial. Entries of connections that said hello or left are dropped when they reach the front.
    handshakes: VecDeque<(Instant, usize, u64)>,
    handshake_timeouts: Arc<AtomicU64>,
}

impl HubThread {
    fn run(&mut self) -> HubStats {
        let mut events = Events::with_capacity(256);
        let mut shutdown = false;
        while !shutdown {
            let busy = self.has_pending_input();
            let timeout = if busy {
                Some(Duration::ZERO)
            } else {
                match (self.timed_wait(), self.handshake_wait()) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                tracing::error!(bus = %self.config.name, error = %e, "hub poll failed; stopping the hub");
                break;
            }
            for event in events.iter() {
                match event.token() {
                    WAKER => shutdown |= self.handle_requests(),
                    TIMER => {
                        if let Some(timer) = &mut self.timer {
                            timer.fired();
                        }
                    }
                    UNIX_LISTENER => self.accept_unix(),
                    TCP_LISTENER => self.accept_tcp(),
                    Token(t) => {
                        if let Some(Some(conn)) = self.conns.get_mut(t - FIRST_CONN) {
                            if event.is_readable() || event.is_read_closed() || event.is_error() {
                                conn.readable = true;
                            }
                            if event.is_writable() || event.is_write_closed() || event.is_error() {
                                conn.writable = true;
                            }
                        }
                    }
                }
            }
            if shutdown {
                break;
            }
            if self.timed() {
                self.advance_time();
            }
            self.process_input();
            self.expire_handshakes();
            self.flush_all();
        }
        self.finish()
    }

    /// Whether the connection in `slot` is still the one accepted as `serial`, without its hello.
    fn awaits_hello(&self, slot: usize, serial: u64) -> bool {
        matches!(self.conns.get(slot), Some(Some(c)) if c.serial == serial && matches!(c.role, ConnRole::AwaitingHello))
    }

    /// Time until the next handshake deadline (`None`: no connection is waiting, or the bus is paused and
    /// reads nothing, so no connection can be blamed for its silence).
    fn handshake_wait(&mut self) -> Option<Duration> {
        while let Some(&(_, slot, serial)) = self.handshakes.front() {
            if self.awaits_hello(slot, serial) {
                break;
            }
            self.handshakes.pop_front();
        }
        if self.paused() {
            return None;
        }
        let (deadline, _, _) = self.handshakes.front()?;
        Some(deadline.saturating_duration_since(Instant::now()))
    }

    /// Closes the connections whose handshake deadline passed without a hello.
    fn expire_handshakes(&mut self) {
        if self.paused() {
            return;
        }
        let now = Instant::now();
        while let Some(&(deadline, slot, serial)) = self.handshakes.front() {
            if deadline > now {
                break;
            }
            self.handshakes.pop_front();
            if self.awaits_hello(slot, serial) {
                let timeout = self.config.handshake_timeout.unwrap_or_default();
                self.handshake_timeouts.fetch_add(1, Ordering::Relaxed);
                self.close(slot, CloseReason::HandshakeTimeout(timeout));
            }
        }
    }

    /// True if some connection has input the hub could process right now without waiting for an event.
    fn has_pending_input(&self) -> bool {
        if self.paused() {
            return false;
        }
        self.conns
            .iter()
            .flatten()
            .any(|c| !c.closing && !c.tx_full && (c.readable || c.decoder.has_message()))
    }

    fn paused(&self) -> bool {
        self.config.backpressure == Backpressure::Block && self.any_full
    }

    /// Tries to drain full queues into their sockets; true if the bus is no longer paused.
    fn relieve(&mut self) -> bool {
        self.flush_all();
        !self.paused()
    }

    fn handle_requests(&mut self) -> bool {
        let mut shutdown = false;
        while let Ok(request) = self.requests.try_recv() {
            match request {
                Request::Stats(reply) => {
                    let _ = reply.send(self.snapshot());
                }
                Request::AddFault(fault, reply) => {
                    let now = now_ns();
                    let description = fault.describe();
                    let result = match self.faults.add(*fault, now) {
                        Ok((id, mut out)) => {
                            tracing::info!(bus = %self.config.name, fault = id.0, %description, "fault added");
                            self.apply(&mut out, now);
                            Ok(id)
                        }
                        Err(e) => Err(BusError::InvalidFault {
                            fault: description,
                            reason: e.0,
                        }),
                    };
                    let _ = reply.send(result);
                }
                Request::RemoveFault(id, reply) => {
                    let now = now_ns();
                    let mut out = Vec::new();
                    let report = self.faults.remove(id, now, &mut out);
                    self.apply(&mut out, now);
                    if let Some(report) = &report {
                        tracing::info!(bus = %self.config.name, fault = id.0, description = %report.description, "fault removed");
                    }
                    let _ = reply.send(report);
                }
                Request::ClearFaults(reply) => {
                    let now = now_ns();
                    let mut out = Vec::new();
                    let reports = self.faults.clear(now, &mut out);
                    self.apply(&mut out, now);
                    let _ = reply.send(reports);
                }
                Request::FaultReports(reply) => {
                    let _ = reply.send(self.faults.reports());
                }
                Request::Inject(frame, reply) => {
                    let now = now_ns();
                    let mut out = vec![Output::Frame {
                        from: Origin::Virtual("hub"),
                        frame,
                        at_ns: now,
                    }];
                    self.apply(&mut out, now);
                    let _ = reply.send(Ok(()));
                }
                Request::SetTiming(timing, reply) => {
                    let _ = reply.send(self.set_timing(timing));
                }
                Request::Shutdown => shutdown = true,
            }
        }
        shutdown
    }

    fn set_timing(&mut self, timing: Option<BusTiming>) -> Result<(), BusError> {
        if let Some(timing) = &timing {
            check_timing(timing)?;
        }
        self.faults
            .set_timing(timing)
            .map_err(|e| BusError::InvalidTiming(e.0))?;
        match (self.bus.as_mut(), timing) {
            (Some(bus), Some(timing)) => bus.set_timing(timing),
            (None, Some(timing)) => self.bus = Some(BusScheduler::new(timing)),
            (Some(_), None) => {
                let now = now_ns();
                let drained = self.bus.take().map(|mut bus| bus.drain()).unwrap_or_default();
                for (from, frame) in drained {
                    self.deliver(origin_node(&from), &frame, now);
                }
                for conn in self.conns.iter_mut().flatten() {
                    conn.tx_full = false;
                }
                self.tx_blocked = false;
            }
            (None, None) => {}
        }
        tracing::info!(bus = %self.config.name, ?timing, "bus timing set");
        Ok(())
    }

    /// True if the hub has timed work (a bus with a timing, faults, delayed frames).
    fn timed(&self) -> bool {
        self.bus.is_some() || !self.faults.is_idle()
    }

    /// The poll timeout that wakes the hub for its next timed work (arming the timerfd when there is one).
    fn timed_wait(&mut self) -> Option<Duration> {
        if !self.timed() {
            return None;
        }
        let bus_next = self.bus.as_ref().and_then(BusScheduler::next_event_ns);
        let deadline = match (self.faults.next_deadline(), bus_next) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        let now = now_ns();
        if deadline <= now {
            return Some(Duration::ZERO);
        }
        if let Some(timer) = &mut self.timer {
            match timer.arm(deadline) {
                Ok(()) => return None,
                Err(e) => tracing::warn!(bus = %self.config.name, error = %e, "cannot arm the timerfd"),
            }
        }
        // Round up: waking early would only loop once more.
        Some(Duration::from_nanos(deadline - now).max(Duration::from_millis(1)))
    }

    /// Does the timed work due now: faults' timers, then the bus.
    fn advance_time(&mut self) {
        let now = now_ns();
        let mut out = std::mem::take(&mut self.outputs);
        self.faults.advance(now, &mut out);
        self.apply(&mut out, now);
        self.outputs = out;
    }

    /// Carries out what the fault engine asked for, then runs the bus up to `now`.
    fn apply(&mut self, out: &mut Vec<Output<usize>>, now: u64) {
        for output in out.drain(..) {
            match output {
                Output::Frame { from, frame, at_ns } => {
                    let generated = matches!(from, Origin::Virtual(name) if name != "hub");
                    if generated && self.bus.is_some() {
                        // Bus time first: a generator catching up after a late wake has its earlier frames
                        // carried before the next one is due, as on a wire, instead of piling them up. Up to
                        // just before its due time, so that it is in the arbitration that starts then.
                        self.run_bus(at_ns.min(now).saturating_sub(1));
                    }
                    match &mut self.bus {
                        Some(bus) => {
                            if generated && bus.queued(&from) >= VIRTUAL_TX_QUEUE {
                                continue;
                            }
                            bus.submit(from, frame, at_ns);
                        }
                        None => self.deliver(origin_node(&from), &frame, at_ns),
                    }
                }
                Output::Cut {
                    node,
                    bus_off,
                    started,
                } => self.cut_changed(&node, bus_off, started),
            }
        }
        self.run_bus(now);
    }

    /// Delivers the frames whose end of frame is at or before `now`, stamped with it.
    fn run_bus(&mut self, now: u64) {
        let Some(bus) = &mut self.bus else { return };
        let done = bus.complete_until(now);
        for (from, frame, end_ns) in done {
            self.deliver(origin_node(&from), &frame, end_ns);
        }
        if self.tx_blocked {
            let Some(bus) = &self.bus else { return };
            let mut still = false;
            for conn in self.conns.iter_mut().flatten() {
                if let (true, ConnRole::Node(node)) = (conn.tx_full, &conn.role) {
                    if bus.queued(&Origin::Node(node.index)) < TX_QUEUE_FRAMES {
                        conn.tx_full = false;
                    } else {
                        still = true;
                    }
                }
            }
            self.tx_blocked = still;
        }
    }

    /// A cut started or ended: nodes re-evaluate whether they are cut; with `bus_off` the matching nodes
    /// get a bus-off error frame at the start and a restarted one at the end.
    fn cut_changed(&mut self, pattern: &str, bus_off: bool, started: bool) {
        for conn in self.conns.iter_mut().flatten() {
            if let ConnRole::Node(node) = &mut conn.role {
                let name = self.names.get(node.index).map_or("", String::as_str);
                node.cut = self.faults.is_cut(name);
            }
        }
        if !bus_off {
            return;
        }
        let class = if started {
            CAN_ERR_BUSOFF
        } else {
            CAN_ERR_RESTARTED
        };
        let Ok(frame) = Frame::error(class, [0; 8]) else {
            return;
        };
        // The error frame is local to the controller: it carries the sequence number of the last bus
        // frame and reaches only the unplugged node.
        self.scratch.clear();
        wire::encode_deliver(&mut self.scratch, self.frames, now_ns(), false, &frame);
        for conn in self.conns.iter_mut().flatten() {
            let ConnRole::Node(node) = &conn.role else {
                continue;
            };
            let name = self.names.get(node.index).map_or("", String::as_str);
            if !node.want_errors || conn.peer_gone || !name.contains(pattern) {
                continue;
            }
            conn.out.extend_from_slice(&self.scratch);
            conn.frame_ends.push_back(conn.out_base + conn.out.len() as u64);
        }
    }

    fn snapshot(&self) -> HubStats {
        HubStats {
            name: self.config.name.clone(),
            frames: self.frames,
            dropped: self.dropped,
            nodes: self.nodes.clone(),
        }
    }

    fn finish(&mut self) -> HubStats {
        for index in 0..self.conns.len() {
            if self.conns[index].is_some() {
                self.close(index, CloseReason::Shutdown);
            }
        }
        if let Some(path) = &self.config.unix_path {
            self.unix = None;
            if is_socket(path) {
                if let Err(e) = std::fs::remove_file(path) {
                    tracing::warn!(bus = %self.config.name, path = %path.display(), error = %e, "cannot remove hub socket");
                }
            }
        }
        self.snapshot()
    }

    fn accept_unix(&mut self) {
        loop {
            let Some(listener) = &self.unix else { return };
            match listener.accept() {
                Ok((stream, _)) => self.add_conn(Stream::Unix(stream), "unix"),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!(bus = %self.config.name, error = %e, "accept on the Unix socket failed");
                    return;
                }
            }
        }
    }

    fn accept_tcp(&mut self) {
        loop {
            let Some(listener) = &self.tcp else { return };
            match listener.accept() {
                Ok((stream, peer)) => {
                    if let Err(e) = stream.set_nodelay(true) {
                        tracing::warn!(bus = %self.config.name, %peer, error = %e, "cannot set TCP_NODELAY");
                    }
                    self.add_conn(Stream::Tcp(stream), &format!("tcp {peer}"));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!(bus = %self.config.name, error = %e, "accept on the TCP socket failed");
                    return;
                }
            }
        }
    }

    fn add_conn(&mut self, mut stream: Stream, kind: &str) {
        self.accepted += 1;
        let index = self.free.pop().unwrap_or(self.conns.len());
        let token = Token(index + FIRST_CONN);
        if let Err(e) = self
            .poll
            .registry()
            .register(stream.source(), token, Interest::READABLE)
        {
            tracing::warn!(bus = %self.config.name, error = %e, "cannot register a new connection");
            self.free.push(index);
            return;
        }
        let peer = format!("{} connection #{} ({kind})", self.config.name, self.accepted);
        // A deadline too far to represent is none.
        if let Some(deadline) = self
            .config
            .handshake_timeout
            .and_then(|t| Instant::now().checked_add(t))
        {
            self.handshakes.push_back((deadline, index, self.accepted));
        }
        let conn = Conn {
            serial: self.accepted,
            stream,
            decoder: Decoder::new(peer),
            role: ConnRole::AwaitingHello,
            out: Vec::new(),
            out_pos: 0,
            out_base: 0,
            frame_ends: VecDeque::new(),
            readable: true,
            writable: true,
            closing: false,
            write_failed: false,
            peer_gone: false,
            write_interest: false,
            tx_full: false,
        };
        if index == self.conns.len() {
            self.conns.push(Some(conn));
        } else {
            self.conns[index] = Some(conn);
        }
    }

    fn close(&mut self, index: usize, reason: CloseReason) {
        let Some(mut conn) = self.conns.get_mut(index).and_then(Option::take) else {
            return;
        };
        let _ = self.poll.registry().deregister(conn.stream.source());
        self.free.push(index);
        if !matches!(reason, CloseReason::Eof) && conn.has_output() {
            // Best effort: hand over what is already queued (a welcome, frames ordered before the error).
            let _ = flush_conn(&mut conn, &mut self.nodes);
        }
        let who = conn.decoder.peer().to_string();
        match &reason {
            CloseReason::Eof if matches!(conn.role, ConnRole::Node(_)) => {
                tracing::info!(bus = %self.config.name, node = %who, "node left")
            }
            CloseReason::Eof => tracing::debug!(bus = %self.config.name, peer = %who, "connection closed"),
            CloseReason::Error(e) => {
                tracing::warn!(bus = %self.config.name, node = %who, error = %e, "disconnecting node")
            }
            CloseReason::Refused => {
                tracing::info!(bus = %self.config.name, node = %who, "closed refused connection")
            }
            CloseReason::Shutdown => {
                tracing::debug!(bus = %self.config.name, node = %who, "closing at shutdown")
            }
            CloseReason::HandshakeTimeout(timeout) => tracing::warn!(
                bus = %self.config.name,
                peer = %who,
                timeout_ms = timeout.as_millis() as u64,
                "closing a connection that sent no hello within the handshake deadline"
            ),
        }
        if let ConnRole::Node(node) = &conn.role {
            if let Some(stats) = self.nodes.get_mut(node.index) {
                stats.connected = false;
            }
        }
        if self.any_full {
            self.recompute_full();
        }
    }

    fn recompute_full(&mut self) {
        let limit = self.config.queue_frames.max(1);
        self.any_full = self
            .conns
            .iter()
            .flatten()
            .any(|c| matches!(c.role, ConnRole::Node(_)) && c.queued_frames() >= limit);
    }

    /// One turn for every connection with input: handle buffered messages, then read one chunk.
    fn process_input(&mut self) {
        for index in 0..self.conns.len() {
            if self.paused() && !self.relieve() {
                return;
            }
            let Some(conn) = self.conns[index].as_mut() else {
                continue;
            };
            if conn.closing {
                continue;
            }
            // Messages left over from an earlier turn (paused by backpressure) go first.
            if let Err(reason) = self.handle_messages(index) {
                self.close(index, reason);
                continue;
            }
            if self.paused() && !self.relieve() {
                return;
            }
            let Some(conn) = self.conns[index].as_mut() else {
                continue;
            };
            if !conn.readable || conn.closing || conn.tx_full {
                continue;
            }
            let fd = conn.stream.fd();
            match conn.decoder.recv_from_fd(fd, READ_CHUNK, libc::MSG_DONTWAIT) {
                Ok(0) => {
                    let reason = if conn.decoder.buffered() > 0 {
                        CloseReason::Error(BusError::Protocol {
                            endpoint: conn.decoder.peer().to_string(),
                            reason: format!(
                                "connection closed in the middle of a message ({} bytes)",
                                conn.decoder.buffered()
                            ),
                        })
                    } else {
                        CloseReason::Eof
                    };
                    self.close(index, reason);
                    continue;
                }
                Ok(n) => {
                    // A short read drained the socket: the next arrival raises a new edge.
                    if n < READ_CHUNK {
                        conn.readable = false;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    conn.readable = false;
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let endpoint = conn.decoder.peer().to_string();
                    let reason = if is_disconnect(&e) {
                        CloseReason::Eof
                    } else {
                        CloseReason::Error(BusError::Io { endpoint, source: e })
                    };
                    self.close(index, reason);
                    continue;
                }
            }
            if let Err(reason) = self.handle_messages(index) {
                self.close(index, reason);
            }
        }
    }

    /// Handles the complete messages buffered for connection `index` until none is left or backpressure
    /// pauses the bus.
    fn handle_messages(&mut self, index: usize) -> Result<(), CloseReason> {
        loop {
            if self.paused() && !self.relieve() {
                return Ok(());
            }
            let Some(conn) = self.conns[index].as_mut() else {
                return Ok(());
            };
            if conn.closing {
                return Ok(());
            }
            if let (Some(bus), ConnRole::Node(node)) = (&self.bus, &conn.role) {
                // Flow control on a timed bus: a full transmit queue stops reading from the node.
                if bus.queued(&Origin::Node(node.index)) >= TX_QUEUE_FRAMES {
                    conn.tx_full = true;
                    self.tx_blocked = true;
                    return Ok(());
                }
            }
            let message = match conn.decoder.next_message() {
                Ok(Some(message)) => message,
                Ok(None) => return Ok(()),
                Err(e) => return Err(CloseReason::Error(e)),
            };
            match (&conn.role, message) {
                (ConnRole::Node(node), Message::Send(frame)) => {
                    if frame.is_fd() && !node.fd {
                        return Err(
                            self.protocol_error(index, "sent a CAN FD frame without enabling FD at join")
                        );
                    }
                    let sender = node.index;
                    self.dispatch(sender, frame);
                }
                (ConnRole::Node(_), Message::SetFilters(filters)) => {
                    if let Some(Conn {
                        role: ConnRole::Node(node),
                        ..
                    }) = self.conns[index].as_mut()
                    {
                        node.filters = filters;
                    }
                }
                (ConnRole::Control, Message::StatsRequest) => {
                    let stats = self.snapshot();
                    if let Some(conn) = self.conns[index].as_mut() {
                        if let Err(e) = wire::encode_stats_reply(&mut conn.out, &stats) {
                            return Err(self.protocol_error(index, &format!("cannot encode statistics: {e}")));
                        }
                    }
                }
                (ConnRole::AwaitingHello, Message::Hello(hello)) => self.handle_hello(index, hello),
                (ConnRole::AwaitingHello, other) => {
                    return Err(self.protocol_error(
                        index,
                        &format!("expected a hello first, got {}", kind_name(&other)),
                    ))
                }
                (_, other) => {
                    return Err(
                        self.protocol_error(index, &format!("unexpected {} message", kind_name(&other)))
                    )
                }
            }
        }
    }

    fn protocol_error(&self, index: usize, reason: &str) -> CloseReason {
        let endpoint = self.conns[index]
            .as_ref()
            .map_or_else(String::new, |c| c.decoder.peer().to_string());
        CloseReason::Error(BusError::Protocol {
            endpoint,
            reason: reason.to_string(),
        })
    }

    fn handle_hello(&mut self, index: usize, hello: wire::Hello) {
        let Some(conn) = self.conns[index].as_mut() else {
            return;
        };
        if hello.version != wire::PROTOCOL_VERSION {
            let reason = format!(
                "protocol version {} is not supported; hub `{}` speaks version {}",
                hello.version,
                self.config.name,
                wire::PROTOCOL_VERSION
            );
            tracing::warn!(bus = %self.config.name, peer = %conn.decoder.peer(), %reason, "refusing connection");
            wire::encode_refused(&mut conn.out, &reason);
            conn.closing = true;
            return;
        }
        match hello.role {
            Role::Control => {
                conn.role = ConnRole::Control;
                conn.decoder.set_peer(format!(
                    "{} control connection #{}",
                    self.config.name, self.accepted
                ));
                // A bus name that does not fit was rejected at encode time by the same limit.
                let _ = wire::encode_welcome(&mut conn.out, 0, &self.config.name);
            }
            Role::Node => {
                let node_id = self.nodes.len() as u32 + 1;
                let shown = if hello.name.is_empty() {
                    format!("node{node_id}")
                } else {
                    hello.name.clone()
                };
                conn.decoder
                    .set_peer(format!("node {node_id} `{shown}` on bus `{}`", self.config.name));
                if let Err(e) = wire::encode_welcome(&mut conn.out, node_id, &self.config.name) {
                    wire::encode_refused(&mut conn.out, &e.to_string());
                    conn.closing = true;
                    return;
                }
                conn.role = ConnRole::Node(NodeConfig {
                    index: self.nodes.len(),
                    recv_own: hello.recv_own,
                    want_errors: hello.want_errors,
                    fd: hello.fd,
                    filters: hello.filters,
                    drop_logged: false,
                    cut: self.faults.is_cut(&shown),
                });
                self.names.push(shown.clone());
                self.nodes.push(NodeStats {
                    node: node_id,
                    name: hello.name,
                    sent: 0,
                    delivered: 0,
                    dropped: 0,
                    connected: true,
                });
                tracing::info!(
                    bus = %self.config.name,
                    node = node_id,
                    name = %shown,
                    recv_own = hello.recv_own,
                    fd = hello.fd,
                    "node joined"
                );
            }
        }
    }

    /// Takes one frame a node sent: on an ideal bus without faults it is delivered at once; otherwise it
    /// passes the faults and, with a timing, the bus.
    fn dispatch(&mut self, sender_node: usize, frame: Frame) {
        if let Some(stats) = self.nodes.get_mut(sender_node) {
            stats.sent += 1;
        }
        if self.bus.is_none() && self.faults.is_idle() {
            self.deliver(sender_node, &frame, now_ns());
            return;
        }
        let now = now_ns();
        let mut out = std::mem::take(&mut self.outputs);
        if self.faults.is_idle() {
            out.push(Output::Frame {
                from: Origin::Node(sender_node),
                frame,
                at_ns: now,
            });
        } else {
            // Due timers first, so that frames keep their order with delayed ones that are due.
            self.faults.advance(now, &mut out);
            let name = self.names.get(sender_node).map_or("", String::as_str);
            self.faults.on_frame(sender_node, name, frame, now, &mut out);
        }
        self.apply(&mut out, now);
        self.outputs = out;
    }

    /// Orders one frame onto the bus with `timestamp` and queues it for every node that accepts it.
    /// `sender_node` is the sending node's index (`usize::MAX` for the hub's virtual nodes).
    fn deliver(&mut self, sender_node: usize, frame: &Frame, timestamp: u64) {
        self.frames += 1;
        let seq = self.frames;
        self.scratch.clear();
        wire::encode_deliver(&mut self.scratch, seq, timestamp, false, frame);
        let limit = self.config.queue_frames.max(1);
        let block = self.config.backpressure == Backpressure::Block;
        for (index, slot) in self.conns.iter_mut().enumerate() {
            let Some(conn) = slot else { continue };
            let (own, node_index) = match &conn.role {
                ConnRole::Node(node) => {
                    let own = node.index == sender_node;
                    if (own && !node.recv_own)
                        || node.cut
                        || (frame.is_fd() && !node.fd)
                        || !Filter::accepts(&node.filters, frame, node.want_errors)
                    {
                        continue;
                    }
                    (own, node.index)
                }
                _ => continue,
            };
            if conn.peer_gone {
                continue;
            }
            if conn.frame_ends.len() >= limit && conn.writable && !conn.write_failed {
                // Hand what the socket takes to the kernel before giving up on this frame.
                if flush_conn(conn, &mut self.nodes).is_err() {
                    // flush_all() meets the same error again and closes the connection.
                    conn.write_failed = true;
                }
                update_write_interest(self.poll.registry(), conn, index);
            }
            if conn.frame_ends.len() >= limit {
                // Only reachable in Drop mode: Block mode pauses before a queue can overflow.
                self.dropped += 1;
                if let (Some(stats), ConnRole::Node(node)) = (self.nodes.get_mut(node_index), &mut conn.role)
                {
                    stats.dropped += 1;
                    if !node.drop_logged {
                        node.drop_logged = true;
                        tracing::warn!(
                            bus = %self.config.name,
                            node = stats.node,
                            name = %stats.name,
                            queue = limit,
                            "node queue full; dropping frames for it (counted)"
                        );
                    }
                }
                continue;
            }
            let start = conn.out.len();
            conn.out.extend_from_slice(&self.scratch);
            if own {
                conn.out[start + wire::DELIVER_OWN_OFFSET] = 1;
            }
            conn.frame_ends.push_back(conn.out_base + conn.out.len() as u64);
            if block && conn.frame_ends.len() >= limit {
                self.any_full = true;
            }
        }
    }

    fn flush_all(&mut self) {
        for index in 0..self.conns.len() {
            let Some(conn) = self.conns[index].as_mut() else {
                continue;
            };
            if conn.has_output() && conn.writable && !conn.peer_gone {
                match self.flush(index) {
                    Ok(()) => {}
                    // The peer is gone for writing: read what it sent until its end of stream.
                    Err(CloseReason::Eof) => {
                        if let Some(conn) = self.conns[index].as_mut() {
                            conn.peer_gone = true;
                            conn.out_base += conn.out.len() as u64;
                            conn.out.clear();
                            conn.out_pos = 0;
                            conn.frame_ends.clear();
                            conn.readable = true;
                        }
                        self.any_full = true;
                    }
                    Err(reason) => {
                        self.close(index, reason);
                        continue;
                    }
                }
            }
            if let Some(conn) = &self.conns[index] {
                if conn.closing && !conn.has_output() {
                    self.close(index, CloseReason::Refused);
                }
            }
        }
        if self.any_full {
            self.recompute_full();
        }
    }

    fn flush(&mut self, index: usize) -> Result<(), CloseReason> {
        match self.conns[index].as_mut() {
            Some(conn) => {
                let result = flush_conn(conn, &mut self.nodes);
                update_write_interest(self.poll.registry(), conn, index);
                result
            }
            None => Ok(()),
        }
    }
}

/// Asks for writable events while output is blocked, and stops asking once it is flushed.
fn update_write_interest(registry: &mio::Registry, conn: &mut Conn, index: usize) {
    let want = !conn.writable && conn.has_output();
    if want == conn.write_interest {
        return;
    }
    let interest = if want {
        Interest::READABLE | Interest::WRITABLE
    } else {
        Interest::READABLE
    };
    match registry.reregister(conn.stream.source(), Token(index + FIRST_CONN), interest) {
        Ok(()) => conn.write_interest = want,
        Err(e) => {
            // Without writable events a blocked connection would stall; keep trying to write instead.
            tracing::warn!(peer = %conn.decoder.peer(), error = %e, "cannot change poll interest");
            conn.writable = true;
        }
    }
}

/// Writes as much of the connection's queued output as the socket takes now, and counts the frames that
/// left the queue as delivered.
fn flush_conn(conn: &mut Conn, nodes: &mut [NodeStats]) -> Result<(), CloseReason> {
    let fd = conn.stream.fd();
    while conn.has_output() {
        let pending = &conn.out[conn.out_pos..];
        // SAFETY: `pending` is a valid initialised buffer; send reads at most its length.
        let n = unsafe {
            libc::send(
                fd,
                pending.as_ptr().cast(),
                pending.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::WouldBlock => {
                    conn.writable = false;
                    break;
                }
                io::ErrorKind::Interrupted => continue,
                _ if is_disconnect(&e) => return Err(CloseReason::Eof),
                _ => {
                    let endpoint = conn.decoder.peer().to_string();
                    return Err(CloseReason::Error(BusError::Io { endpoint, source: e }));
                }
            }
        }
        conn.out_pos += n as usize;
    }
    let written = conn.out_base + conn.out_pos as u64;
    let mut delivered = 0u64;
    while conn.frame_ends.front().is_some_and(|&end| end <= written) {
        conn.frame_ends.pop_front();
        delivered += 1;
    }
    if !conn.has_output() {
        conn.out_base += conn.out.len() as u64;
        conn.out.clear();
        conn.out_pos = 0;
    } else if conn.out_pos > 1 << 20 && conn.out_pos * 2 > conn.out.len() {
        conn.out.drain(..conn.out_pos);
        conn.out_base += conn.out_pos as u64;
        conn.out_pos = 0;
    }
    if let ConnRole::Node(node) = &mut conn.role {
        if conn.frame_ends.is_empty() {
            node.drop_logged = false;
        }
        if let Some(stats) = nodes.get_mut(node.index) {
            stats.delivered += delivered;
        }
    }
    Ok(())
}

/// The node index a frame is delivered as coming from (`usize::MAX`: a virtual node, never anyone's own).
fn origin_node(from: &Origin<usize>) -> usize {
    match from {
        Origin::Node(index) => *index,
        Origin::Virtual(_) => usize::MAX,
    }
}

fn is_disconnect(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
    )
}

fn kind_name(message: &Message) -> &'static str {
    match message {
        Message::Hello(_) => "hello",
        Message::Welcome { .. } => "welcome",
        Message::Refused(_) => "refused",
        Message::Send(_) => "send",
        Message::Deliver(_) => "deliver",
        Message::SetFilters(_) => "set-filters",
        Message::StatsRequest => "stats-request",
        Message::StatsReply(_) => "stats-reply",
    }
}
