//! What every protocol bridge shares: the link between a hub bus and a foreign CAN protocol.
//!
//! A bridge (the crates `vcan-socketcand`, `vcan-slcan` and `vcan-cannelloni`) speaks a third-party
//! protocol on one side and joins the hub on the other as ordinary bus nodes, one per peer, through
//! [`join`]. Frames that enter through a bridge are therefore first-class: the hub orders, filters,
//! echoes, drops and faults them like any workload's, and the hub's statistics list each bridge node by its
//! name, `<protocol>:<peer>` ([`node_name`]), e.g. `socketcand:127.0.0.1:51234`, `slcan:/tmp/slcan0`,
//! `cannelloni:127.0.0.1:20001` — a fault's sender selector can name them too.
//!
//! Every bridge implements [`Bridge`] (start is the crate's own constructor; stop and reporting are
//! shared), counts what crossed it in [`BridgeCounters`] (frames each way, malformed input, sequence gaps
//! and reordering where the protocol numbers its packets), and stops its threads through a
//! [`StopSignal`] that wakes their `poll(2)` at once ([`wait_readable`]).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::client::HubClient;
use crate::options::{Endpoint, OpenOptions};
use crate::socket::BusError;

/// Errors starting or running a bridge.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error("{protocol}: cannot listen on {address}: {source}")]
    Listen {
        protocol: &'static str,
        address: String,
        source: io::Error,
    },
    #[error("{protocol}: {reason}")]
    Setup { protocol: &'static str, reason: String },
    #[error("{protocol}: cannot join the bus: {source}")]
    Bus {
        protocol: &'static str,
        source: BusError,
    },
    #[error("{protocol}: I/O error: {source}")]
    Io {
        protocol: &'static str,
        source: io::Error,
    },
}

/// The name a bridge node joins the bus with: `<protocol>:<peer>`.
pub fn node_name(protocol: &str, peer: &str) -> String {
    format!("{protocol}:{peer}")
}

/// The protocols this workspace bridges, as they prefix node names.
pub const PROTOCOLS: &[&str] = &["socketcand", "slcan", "cannelloni"];

/// True if a hub node's name is a bridge node's (`socketcand:…`, `slcan:…`, `cannelloni:…`).
pub fn is_bridge_node(name: &str) -> bool {
    PROTOCOLS
        .iter()
        .any(|p| name.strip_prefix(p).is_some_and(|rest| rest.starts_with(':')))
}

/// Joins the hub at `hub` as the bridge node for `peer`.
///
/// `fd`: the peer may send and receive CAN FD frames; `want_errors`: the peer receives error frames.
pub fn join(
    hub: &Endpoint,
    protocol: &'static str,
    peer: &str,
    fd: bool,
    want_errors: bool,
) -> Result<HubClient, BridgeError> {
    let options = OpenOptions {
        node_name: node_name(protocol, peer),
        recv_own: false,
        filters: Vec::new(),
        want_errors,
        fd,
    };
    HubClient::connect(hub, &options).map_err(|source| BridgeError::Bus { protocol, source })
}

/// What crossed one bridge node, updated by the bridge's threads while it runs.
#[derive(Debug, Default)]
pub struct BridgeCounters {
    /// Frames the peer sent that entered the bus.
    pub to_bus: AtomicU64,
    /// Frames of the bus passed to the peer.
    pub to_peer: AtomicU64,
    /// Peer input that was not a valid frame or command (each also a line in `errors`).
    pub rejected: AtomicU64,
    /// Frames the protocol's sequence numbers show were lost on the way from the peer.
    pub lost: AtomicU64,
    /// Packets from the peer that arrived out of order.
    pub reordered: AtomicU64,
    /// Packets from the peer that arrived twice.
    pub duplicated: AtomicU64,
    errors: Mutex<Vec<String>>,
}

/// The first this many problems are kept per node (all are counted).
pub const KEPT_ERRORS: usize = 20;

impl BridgeCounters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts a rejected input and keeps its description (the first [`KEPT_ERRORS`]).
    pub fn reject(&self, problem: impl Into<String>) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        self.note(problem);
    }

    /// Keeps a problem's description without counting it as rejected input.
    pub fn note(&self, problem: impl Into<String>) {
        let problem = problem.into();
        tracing::warn!("{problem}");
        if let Ok(mut errors) = self.errors.lock() {
            if errors.len() < KEPT_ERRORS {
                errors.push(problem);
            }
        }
    }

    fn snapshot(&self, node: &str, peer: &str, connected: bool) -> BridgeNodeReport {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        BridgeNodeReport {
            node: node.to_string(),
            peer: peer.to_string(),
            connected,
            to_bus: get(&self.to_bus),
            to_peer: get(&self.to_peer),
            rejected: get(&self.rejected),
            lost: get(&self.lost),
            reordered: get(&self.reordered),
            duplicated: get(&self.duplicated),
            errors: self.errors.lock().map(|e| e.clone()).unwrap_or_default(),
        }
    }
}

/// One bridge node as a bridge tracks it: its counters and whether its peer is still there.
#[derive(Debug)]
pub struct BridgeNode {
    pub node: String,
    pub peer: String,
    pub counters: BridgeCounters,
    connected: std::sync::atomic::AtomicBool,
}

impl BridgeNode {
    pub fn new(protocol: &str, peer: &str) -> Arc<BridgeNode> {
        Arc::new(BridgeNode {
            node: node_name(protocol, peer),
            peer: peer.to_string(),
            counters: BridgeCounters::default(),
            connected: std::sync::atomic::AtomicBool::new(true),
        })
    }

    pub fn disconnected(&self) {
        self.connected.store(false, Ordering::Relaxed);
    }

    pub fn report(&self) -> BridgeNodeReport {
        self.counters
            .snapshot(&self.node, &self.peer, self.connected.load(Ordering::Relaxed))
    }
}

/// The nodes a bridge has had, shared between its threads and its handle.
#[derive(Debug, Default, Clone)]
pub struct BridgeNodes(Arc<Mutex<Vec<Arc<BridgeNode>>>>);

impl BridgeNodes {
    /// Registers a node for `peer` and returns it.
    pub fn add(&self, protocol: &str, peer: &str) -> Arc<BridgeNode> {
        let node = BridgeNode::new(protocol, peer);
        if let Ok(mut nodes) = self.0.lock() {
            nodes.push(Arc::clone(&node));
        }
        node
    }

    /// The bridge's report: its protocol, its address and every node's counters.
    pub fn report(&self, protocol: &str, address: String) -> BridgeReport {
        BridgeReport {
            protocol: protocol.to_string(),
            address,
            nodes: self.reports(),
        }
    }

    pub fn reports(&self) -> Vec<BridgeNodeReport> {
        self.0
            .lock()
            .map(|nodes| nodes.iter().map(|n| n.report()).collect())
            .unwrap_or_default()
    }
}

/// A bridge's account of itself, for logs and the run's report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BridgeReport {
    /// `socketcand`, `slcan` or `cannelloni`.
    pub protocol: String,
    /// Where it listens or what it links (`127.0.0.1:29536`, `/tmp/slcan0`, `udp 127.0.0.1:20000 → 127.0.0.1:20001`).
    pub address: String,
    /// Every node the bridge joined to the bus, in join order.
    pub nodes: Vec<BridgeNodeReport>,
}

/// One bridge node's counters (see [`BridgeCounters`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BridgeNodeReport {
    /// The node's name on the bus (`socketcand:127.0.0.1:51234`).
    pub node: String,
    pub peer: String,
    pub connected: bool,
    pub to_bus: u64,
    pub to_peer: u64,
    pub rejected: u64,
    pub lost: u64,
    pub reordered: u64,
    pub duplicated: u64,
    /// The first problems seen ([`KEPT_ERRORS`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

impl BridgeReport {
    /// One line per node: `socketcand:127.0.0.1:51234: 3 to the bus, 5 to the peer, 1 rejected`.
    pub fn lines(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| {
                let mut parts = vec![
                    format!("{} to the bus", n.to_bus),
                    format!("{} to the peer", n.to_peer),
                ];
                for (count, what) in [
                    (n.rejected, "rejected"),
                    (n.lost, "lost"),
                    (n.reordered, "reordered"),
                    (n.duplicated, "duplicated"),
                ] {
                    if count > 0 {
                        parts.push(format!("{count} {what}"));
                    }
                }
                format!("{} ({}): {}", n.node, self.protocol, parts.join(", "))
            })
            .collect()
    }
}

/// A running bridge. Dropping it stops it.
pub trait Bridge: Send {
    /// `socketcand`, `slcan` or `cannelloni`.
    fn protocol(&self) -> &'static str;
    /// Where it listens or what it links, as peers reach it.
    fn address(&self) -> String;
    /// Its counters so far.
    fn report(&self) -> BridgeReport;
    /// Stops every thread of the bridge (peers are disconnected, nodes leave the bus) and reports.
    fn stop(&mut self) -> BridgeReport;
}

/// Wakes a bridge's threads out of [`wait_readable`] when the bridge stops (an `eventfd`, never reset).
#[derive(Debug, Clone)]
pub struct StopSignal(Arc<OwnedFd>);

impl StopSignal {
    pub fn new() -> io::Result<StopSignal> {
        // SAFETY: eventfd has no memory arguments; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor we own.
        Ok(StopSignal(Arc::new(unsafe { OwnedFd::from_raw_fd(fd) })))
    }

    /// Stops every thread waiting on this signal, now and later.
    pub fn raise(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our eventfd.
        unsafe {
            libc::write(
                self.0.as_raw_fd(),
                (&one as *const u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
    }

    pub fn raised(&self) -> bool {
        matches!(wait_fds(&[self.fd()], Some(Duration::ZERO)), Ok(r) if r[0])
    }

    pub fn fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// What [`wait_readable`] saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wake {
    /// The stop signal was raised.
    Stop,
    /// Which of the given descriptors are readable (or hung up); all false on a timeout or a signal.
    Ready(Vec<bool>),
}

/// Waits until one of `fds` is readable, `stop` is raised or `timeout` passes (`None`: no timeout).
pub fn wait_readable(stop: &StopSignal, fds: &[RawFd], timeout: Option<Duration>) -> io::Result<Wake> {
    let mut all = Vec::with_capacity(fds.len() + 1);
    all.push(stop.fd());
    all.extend_from_slice(fds);
    let ready = wait_fds(&all, timeout)?;
    if ready[0] {
        return Ok(Wake::Stop);
    }
    Ok(Wake::Ready(ready[1..].to_vec()))
}

fn wait_fds(fds: &[RawFd], timeout: Option<Duration>) -> io::Result<Vec<bool>> {
    let mut pollfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let ms = match timeout {
        None => -1,
        Some(t) => i32::try_from(t.as_millis().max(u128::from(!t.is_zero()))).unwrap_or(i32::MAX),
    };
    // SAFETY: `pollfds` is a live array of `pollfds.len()` entries.
    let n = unsafe { libc::poll(pollfds.as_mut_ptr(), pollfds.len() as libc::nfds_t, ms) };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(vec![false; fds.len()]);
        }
        return Err(e);
    }
    Ok(pollfds
        .iter()
        .map(|p| p.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bridge_node_names_carry_their_protocol() {
        assert_eq!(node_name("slcan", "/tmp/pty0"), "slcan:/tmp/pty0");
        assert!(is_bridge_node("socketcand:127.0.0.1:4000"));
        assert!(is_bridge_node("cannelloni:127.0.0.1:20000"));
        assert!(!is_bridge_node("hvac-controller"));
        assert!(!is_bridge_node("slcanfoo"));
    }

    #[test]
    fn a_raised_stop_signal_wakes_a_waiter() {
        let stop = StopSignal::new().unwrap();
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        assert_eq!(
            wait_readable(&stop, &[a.as_raw_fd()], Some(Duration::from_millis(1))).unwrap(),
            Wake::Ready(vec![false])
        );
        let other = stop.clone();
        let waiter = std::thread::spawn(move || wait_readable(&other, &[a.as_raw_fd()], None).unwrap());
        stop.raise();
        assert_eq!(waiter.join().unwrap(), Wake::Stop);
        assert!(stop.raised());
    }

    #[test]
    fn counters_keep_the_first_problems_and_count_all() {
        let nodes = BridgeNodes::default();
        let node = nodes.add("slcan", "/tmp/x");
        for i in 0..30 {
            node.counters.reject(format!("bad line {i}"));
        }
        BridgeCounters::add(&node.counters.to_bus, 3);
        let report = BridgeReport {
            protocol: "slcan".into(),
            address: "/tmp/x".into(),
            nodes: nodes.reports(),
        };
        assert_eq!(report.nodes[0].rejected, 30);
        assert_eq!(report.nodes[0].errors.len(), KEPT_ERRORS);
        assert_eq!(
            report.lines(),
            vec!["slcan:/tmp/x (slcan): 3 to the bus, 0 to the peer, 30 rejected".to_string()]
        );
    }
}
