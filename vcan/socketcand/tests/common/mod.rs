//! Test helpers shared by the integration tests: a real hub, the server, hub nodes, and a plain TCP
//! client that speaks the socketcand protocol (with the crate's own message splitter).

#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use vcan::client::HubClient;
use vcan::hub::{Hub, HubConfig};
use vcan::{CanSocket, Endpoint, OpenOptions, Received};
use vcan_socketcand::protocol::Splitter;
use vcan_socketcand::{SocketcandConfig, SocketcandServer};

pub const TIMEOUT: Duration = Duration::from_secs(5);

pub struct Bus {
    pub hub: Hub,
    pub endpoint: Endpoint,
    _dir: tempfile::TempDir,
}

pub fn hub(name: &str) -> Bus {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::start(HubConfig {
        name: name.to_string(),
        unix_path: Some(dir.path().join("hub.sock")),
        ..Default::default()
    })
    .unwrap();
    let endpoint = hub.unix_endpoint().unwrap();
    Bus {
        hub,
        endpoint,
        _dir: dir,
    }
}

pub fn server() -> SocketcandServer {
    SocketcandServer::start(SocketcandConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        allow_remote: false,
    })
    .unwrap()
}

/// A hub node the test uses to see and make traffic.
pub fn node(bus: &Bus, name: &str) -> HubClient {
    HubClient::connect(
        &bus.endpoint,
        &OpenOptions {
            node_name: name.to_string(),
            fd: true,
            want_errors: true,
            ..Default::default()
        },
    )
    .unwrap()
}

pub fn recv(node: &mut HubClient, timeout: Duration) -> Option<Received> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if let Some(r) = node.recv(Some(left)).unwrap() {
            return Some(r);
        }
        if left.is_zero() {
            return None;
        }
    }
}

/// Waits until the hub lists a node of that name with that connection state.
pub fn wait_for_node(bus: &Bus, name: &str, connected: bool) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let stats = bus.hub.stats();
        if stats
            .nodes
            .iter()
            .any(|n| n.name == name && n.connected == connected)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no node `{name}` with connected={connected} in {:?}",
            stats.nodes
        );
        std::thread::yield_now();
    }
}

/// A socketcand client over plain TCP.
pub struct Client {
    pub stream: TcpStream,
    splitter: Splitter,
}

impl Client {
    /// Connects and reads the greeting.
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).unwrap();
        let mut client = Client {
            stream,
            splitter: Splitter::new(),
        };
        client.expect("< hi >");
        client
    }

    /// Connects, opens `bus` (expecting `< ok >`).
    pub fn open(addr: SocketAddr, bus: &str) -> Client {
        let mut client = Client::connect(addr);
        client.send(&format!("< open {bus} >"));
        client.expect("< ok >");
        client
    }

    pub fn local_port(&self) -> u16 {
        self.stream.local_addr().unwrap().port()
    }

    pub fn send(&mut self, text: &str) {
        self.stream.write_all(text.as_bytes()).unwrap();
    }

    /// The next message, `None` on timeout; panics on EOF.
    pub fn next(&mut self, timeout: Duration) -> Option<String> {
        match self.next_or_eof(timeout) {
            Next::Message(m) => Some(m),
            Next::Timeout => None,
            Next::Eof => panic!("the server closed the connection"),
        }
    }

    pub fn next_or_eof(&mut self, timeout: Duration) -> Next {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(message) = self.splitter.next_message() {
                return Next::Message(message.unwrap());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Next::Timeout;
            }
            self.stream.set_read_timeout(Some(left)).unwrap();
            let mut buf = [0u8; 4096];
            match self.stream.read(&mut buf) {
                Ok(0) => return Next::Eof,
                Ok(n) => self.splitter.push(&buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Next::Timeout
                }
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return Next::Eof,
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    /// The next message must be `expected`.
    pub fn expect(&mut self, expected: &str) {
        let got = self.next(TIMEOUT);
        assert_eq!(got.as_deref(), Some(expected));
    }

    /// The next message must start with `prefix`; returns it.
    pub fn expect_prefix(&mut self, prefix: &str) -> String {
        let got = self
            .next(TIMEOUT)
            .unwrap_or_else(|| panic!("no message (expected `{prefix}…`)"));
        assert!(got.starts_with(prefix), "expected `{prefix}…`, got `{got}`");
        got
    }

    /// Waits until the server closes the connection (nothing else may arrive).
    pub fn expect_eof(&mut self) {
        match self.next_or_eof(TIMEOUT) {
            Next::Eof => {}
            Next::Message(m) => panic!("expected the connection to close, got `{m}`"),
            Next::Timeout => panic!("the server did not close the connection"),
        }
    }

    /// Sends `< echo >` and waits for it: every earlier command has been handled.
    pub fn sync(&mut self) {
        self.send("< echo >");
        self.expect("< echo >");
    }
}

#[derive(Debug)]
pub enum Next {
    Message(String),
    Timeout,
    Eof,
}

/// Splits `< frame ID SECS.USECS DATA >` into (id, timestamp, data) text.
pub fn frame_parts(message: &str) -> (String, String, String) {
    let inner = message
        .strip_prefix("< frame ")
        .and_then(|m| m.strip_suffix(" >"))
        .unwrap_or_else(|| panic!("not a frame: `{message}`"));
    let mut parts = inner.splitn(3, ' ');
    let id = parts.next().unwrap_or_default().to_string();
    let ts = parts.next().unwrap_or_default().to_string();
    let data = parts.next().unwrap_or_default().to_string();
    (id, ts, data)
}

/// Checks `SECS.USECS` and that it is within a minute of now.
pub fn check_timestamp(ts: &str) {
    let (secs, usecs) = ts.split_once('.').unwrap_or_else(|| panic!("timestamp `{ts}`"));
    assert_eq!(usecs.len(), 6, "timestamp `{ts}`");
    assert!(usecs.bytes().all(|b| b.is_ascii_digit()), "timestamp `{ts}`");
    let secs: u64 = secs.parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(secs.abs_diff(now) < 60, "timestamp `{ts}` is not now ({now})");
}
