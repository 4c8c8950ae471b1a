//! Shared fixtures of the integration tests: a hub, an slcan port on it, a plain hub node, and the host
//! side of the port opened as a raw tty with reads that wait on the descriptor with a timeout.

#![allow(dead_code)]

use std::fs::{File, OpenOptions as FileOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vcan::client::HubClient;
use vcan::hub::{Hub, HubConfig};
use vcan::{CanSocket, Frame, OpenOptions, Received};
use vcan_slcan::{SlcanConfig, SlcanPort};

/// How long a test waits for anything that should happen.
pub const WAIT: Duration = Duration::from_secs(5);

/// A hub with an slcan port linked in a temporary directory.
pub struct Rig {
    pub dir: tempfile::TempDir,
    pub hub: Hub,
    pub port: SlcanPort,
    pub link: PathBuf,
}

impl Rig {
    pub fn start() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let hub = Hub::start(HubConfig {
            name: "slcan-test".into(),
            unix_path: Some(dir.path().join("hub.sock")),
            ..Default::default()
        })
        .unwrap();
        let link = dir.path().join("slcan0");
        let port = SlcanPort::start(SlcanConfig {
            link: link.clone(),
            hub: hub.unix_endpoint().unwrap(),
        })
        .unwrap();
        Rig { dir, hub, port, link }
    }

    /// A plain hub node (FD enabled; `recv_own`: also receive its own frames).
    pub fn node(&self, name: &str, recv_own: bool) -> HubClient {
        HubClient::connect(
            &self.hub.unix_endpoint().unwrap(),
            &OpenOptions {
                node_name: name.into(),
                recv_own,
                fd: true,
                ..Default::default()
            },
        )
        .unwrap()
    }

    pub fn tty(&self) -> Tty {
        Tty::open(&self.link)
    }
}

/// Receives the next frame on `node` or fails the test after [`WAIT`].
pub fn recv(node: &mut HubClient) -> Received {
    match node.recv(Some(WAIT)) {
        Ok(Some(received)) => received,
        Ok(None) => panic!("no frame on the bus within {WAIT:?}"),
        Err(e) => panic!("bus error: {e}"),
    }
}

/// Sends a frame from `node`.
pub fn send(node: &mut HubClient, frame: &Frame) {
    node.send(frame).unwrap();
}

/// The host end of the port, as a tool opens it: read/write, no controlling tty, non-blocking.
pub struct Tty {
    file: File,
    pending: Vec<u8>,
}

fn wait_fd(fd: i32, events: i16, timeout: Duration) -> bool {
    let mut p = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: one live pollfd.
    let n = unsafe { libc::poll(&mut p, 1, ms) };
    n > 0 && p.revents != 0
}

impl Tty {
    pub fn open(path: &Path) -> Tty {
        let file = FileOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
            .open(path)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
        Tty {
            file,
            pending: Vec::new(),
        }
    }

    pub fn write(&mut self, bytes: &[u8]) {
        let mut rest = bytes;
        let deadline = Instant::now() + WAIT;
        while !rest.is_empty() {
            match self.file.write(rest) {
                Ok(n) => rest = &rest[n..],
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    assert!(
                        wait_fd(self.file.as_raw_fd(), libc::POLLOUT, left),
                        "the tty takes no input"
                    );
                }
                Err(e) => panic!("tty write: {e}"),
            }
        }
    }

    pub fn send(&mut self, text: &str) {
        self.write(text.as_bytes());
    }

    /// Reads what is there, waiting up to `timeout` for the first byte; false if nothing came.
    fn fill(&mut self, timeout: Duration) -> bool {
        if !wait_fd(self.file.as_raw_fd(), libc::POLLIN, timeout) {
            return false;
        }
        let mut buf = [0u8; 4096];
        match self.file.read(&mut buf) {
            Ok(n) => {
                self.pending.extend_from_slice(&buf[..n]);
                n > 0
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
            Err(e) => panic!("tty read: {e}"),
        }
    }

    /// The next answer of the adapter, up to and including its `\r` or `\a` (as python-can splits them).
    pub fn reply(&mut self) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(end) = self.pending.iter().position(|&b| b == b'\r' || b == 7) {
                let token: Vec<u8> = self.pending.drain(..=end).collect();
                return String::from_utf8(token).unwrap();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no complete answer within {WAIT:?}; got {:?}",
                String::from_utf8_lossy(&self.pending)
            );
            self.fill(left);
        }
    }

    /// Sends a command and returns its answer.
    pub fn command(&mut self, text: &str) -> String {
        self.send(text);
        self.reply()
    }

    /// Asserts that nothing arrives within `time`.
    pub fn expect_silence(&mut self, time: Duration) {
        let deadline = Instant::now() + time;
        loop {
            assert!(
                self.pending.is_empty(),
                "expected silence, got {:?}",
                String::from_utf8_lossy(&self.pending)
            );
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !self.fill(left) {
                return;
            }
        }
    }

    /// Waits until the adapter has written something, without reading it.
    pub fn wait_unread(&self) {
        assert!(
            wait_fd(self.file.as_raw_fd(), libc::POLLIN, WAIT),
            "nothing arrived within {WAIT:?}"
        );
    }

    /// Bytes the adapter wrote that the tty has not read yet (`FIONREAD`).
    pub fn unread(&self) -> usize {
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int into the live `n`.
        let rc = unsafe { libc::ioctl(self.file.as_raw_fd(), libc::FIONREAD, &mut n) };
        assert_eq!(rc, 0, "FIONREAD: {}", std::io::Error::last_os_error());
        usize::try_from(n).unwrap_or(0)
    }

    /// Opens the channel as the kernel and `slcand` do: `C`, `S6`, `O`.
    pub fn open_channel(&mut self) {
        assert_eq!(self.command("C\r"), "\r");
        assert_eq!(self.command("S6\r"), "\r");
        assert_eq!(self.command("O\r"), "\r");
    }
}
