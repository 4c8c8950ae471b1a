//! The socketcand server: a TCP listener, one thread accepting clients and one thread per client
//! ([`crate::session`]), the table of buses clients may open, and the [`Bridge`] handle that stops it all.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use vcan::bridge::{self, Bridge, BridgeError, BridgeNodes, BridgeReport, StopSignal, Wake};
use vcan::Endpoint;

use crate::session::{self, Shared, PROTOCOL};

/// socketcand's TCP port.
pub const DEFAULT_PORT: u16 = 29536;
/// How long the accept thread backs off when `accept` fails for lack of resources (descriptors, memory).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Where the server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketcandConfig {
    /// Address to listen on, e.g. `127.0.0.1:29536`; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Allow a non-loopback listen address. socketcand has no authentication, so by default the server
    /// only listens on loopback.
    pub allow_remote: bool,
}

impl Default for SocketcandConfig {
    fn default() -> Self {
        SocketcandConfig {
            listen: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, DEFAULT_PORT)),
            allow_remote: false,
        }
    }
}

/// The client connections, so that stopping can disconnect them and join their threads.
#[derive(Default)]
struct Clients {
    next: AtomicU64,
    streams: Mutex<HashMap<u64, TcpStream>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// A running socketcand server whose buses are hub buses. Dropping it stops it.
pub struct SocketcandServer {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    clients: Arc<Clients>,
    accept: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for SocketcandServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketcandServer")
            .field("local_addr", &self.local_addr)
            .field("buses", &self.buses())
            .finish_non_exhaustive()
    }
}

impl SocketcandServer {
    /// Listens on `config.listen` and starts accepting clients (no bus is served until [`Self::set_bus`]).
    ///
    /// Refuses a non-loopback address unless `config.allow_remote`.
    pub fn start(config: SocketcandConfig) -> Result<SocketcandServer, BridgeError> {
        if !config.listen.ip().is_loopback() && !config.allow_remote {
            return Err(BridgeError::Setup {
                protocol: PROTOCOL,
                reason: format!(
                    "refusing to listen on {}: not a loopback address, and socketcand has no \
                     authentication (set allow_remote to serve other hosts)",
                    config.listen
                ),
            });
        }
        let listen_err = |source: io::Error| BridgeError::Listen {
            protocol: PROTOCOL,
            address: config.listen.to_string(),
            source,
        };
        let listener = TcpListener::bind(config.listen).map_err(listen_err)?;
        listener.set_nonblocking(true).map_err(listen_err)?;
        let local_addr = listener.local_addr().map_err(listen_err)?;
        let stop = StopSignal::new().map_err(|source| BridgeError::Io {
            protocol: PROTOCOL,
            source,
        })?;
        let shared = Arc::new(Shared {
            buses: Mutex::new(BTreeMap::new()),
            nodes: BridgeNodes::default(),
            stop,
        });
        let clients = Arc::new(Clients::default());
        let accept = {
            let shared = Arc::clone(&shared);
            let clients = Arc::clone(&clients);
            std::thread::Builder::new()
                .name(format!("socketcand-{}", local_addr.port()))
                .spawn(move || accept_loop(&listener, &shared, &clients))
                .map_err(|source| BridgeError::Io {
                    protocol: PROTOCOL,
                    source,
                })?
        };
        tracing::info!(address = %local_addr, "socketcand server listening");
        Ok(SocketcandServer {
            local_addr,
            shared,
            clients,
            accept: Some(accept),
        })
    }

    /// The address clients connect to (with the port picked if the config said 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Lets clients `< open name >` the hub bus at `hub` (replacing an earlier bus of that name; clients
    /// that already opened it stay on the old one).
    pub fn set_bus(&self, name: &str, hub: Endpoint) {
        if let Ok(mut buses) = self.shared.buses.lock() {
            buses.insert(name.to_string(), hub);
        }
    }

    /// Stops offering bus `name` to new clients (clients that opened it keep their connection until the
    /// hub goes away).
    pub fn remove_bus(&self, name: &str) {
        if let Ok(mut buses) = self.shared.buses.lock() {
            buses.remove(name);
        }
    }

    /// The names of the buses clients may open, sorted.
    pub fn buses(&self) -> Vec<String> {
        self.shared
            .buses
            .lock()
            .map(|buses| buses.keys().cloned().collect())
            .unwrap_or_default()
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>, clients: &Arc<Clients>) {
    loop {
        match bridge::wait_readable(&shared.stop, &[listener.as_raw_fd()], None) {
            Ok(Wake::Stop) => return,
            Ok(Wake::Ready(_)) => {}
            Err(e) => {
                tracing::error!(error = %e, "socketcand server cannot wait for clients; no longer accepting");
                return;
            }
        }
        loop {
            match listener.accept() {
                Ok((stream, peer)) => spawn_client(stream, peer, shared, clients),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => {}
                Err(e) => {
                    tracing::warn!(error = %e, "socketcand server cannot accept a client");
                    if let Ok(Wake::Stop) = bridge::wait_readable(&shared.stop, &[], Some(ACCEPT_BACKOFF)) {
                        return;
                    }
                    break;
                }
            }
        }
    }
}

fn spawn_client(stream: TcpStream, peer: SocketAddr, shared: &Arc<Shared>, clients: &Arc<Clients>) {
    if let Err(e) = stream.set_nonblocking(false) {
        tracing::warn!(peer = %peer, error = %e, "socketcand server drops a client");
        return;
    }
    let id = clients.next.fetch_add(1, Ordering::Relaxed);
    match stream.try_clone() {
        Ok(clone) => {
            if let Ok(mut streams) = clients.streams.lock() {
                streams.insert(id, clone);
            }
        }
        Err(e) => {
            tracing::warn!(peer = %peer, error = %e, "socketcand server drops a client");
            return;
        }
    }
    let thread = {
        let shared = Arc::clone(shared);
        let clients = Arc::clone(clients);
        std::thread::Builder::new()
            .name(format!("socketcand-{peer}"))
            .spawn(move || {
                session::serve(stream, peer.to_string(), &shared);
                if let Ok(mut streams) = clients.streams.lock() {
                    streams.remove(&id);
                }
            })
    };
    match thread {
        Ok(handle) => {
            if let Ok(mut threads) = clients.threads.lock() {
                threads.retain(|t| !t.is_finished());
                threads.push(handle);
            }
        }
        Err(e) => {
            tracing::warn!(peer = %peer, error = %e, "socketcand server cannot start a client thread");
            if let Ok(mut streams) = clients.streams.lock() {
                if let Some(stream) = streams.remove(&id) {
                    let _ = stream.shutdown(Shutdown::Both);
                }
            }
        }
    }
}

impl Bridge for SocketcandServer {
    fn protocol(&self) -> &'static str {
        PROTOCOL
    }

    fn address(&self) -> String {
        self.local_addr.to_string()
    }

    fn report(&self) -> BridgeReport {
        self.shared.nodes.report(PROTOCOL, self.address())
    }

    fn stop(&mut self) -> BridgeReport {
        if let Some(accept) = self.accept.take() {
            self.shared.stop.raise();
            let _ = accept.join();
            // No client is added from here on; wake every client thread that is blocked writing.
            if let Ok(streams) = self.clients.streams.lock() {
                for stream in streams.values() {
                    let _ = stream.shutdown(Shutdown::Both);
                }
            }
            let threads = self
                .clients
                .threads
                .lock()
                .map(|mut threads| std::mem::take(&mut *threads))
                .unwrap_or_default();
            for thread in threads {
                let _ = thread.join();
            }
            tracing::info!(address = %self.local_addr, "socketcand server stopped");
        }
        self.report()
    }
}

impl Drop for SocketcandServer {
    fn drop(&mut self) {
        self.stop();
    }
}
