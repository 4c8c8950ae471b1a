//! The running adapter: a pseudo-terminal whose slave is linked at a path of the caller's choosing, one
//! hub bus node `slcan:<link>`, and one thread that moves bytes between them through the
//! [`Device`](crate::protocol::Device) state machine.
//!
//! The thread polls the stop signal, the pty master and the hub connection. Host bytes are split into
//! lines and answered; frames the host transmits enter the bus; bus frames go out as lines while the
//! channel is open. Output waits in a queue while the pty is full (no host tool reading); above
//! [`OUT_HIGH_WATER`] bytes the thread stops reading the hub, so the hub's own backpressure (its per-node
//! queue and drop counter) applies rather than an unbounded buffer here.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vcan::bridge::{
    self, Bridge, BridgeCounters, BridgeError, BridgeNode, BridgeNodes, BridgeReport, StopSignal,
};
use vcan::client::HubClient;
use vcan::{BusError, CanSocket, Endpoint};

use crate::protocol::{Device, Input, LineSplitter, Response, SlcanStatus, ERROR};
use crate::pty::{self, Pty};

const PROTOCOL: &str = "slcan";

/// Queued output (bytes) above which the bridge stops taking frames from the hub.
pub const OUT_HIGH_WATER: usize = 64 * 1024;

/// Queued output (bytes) above which the bridge also stops reading the host, whose writes then block as
/// on a serial line nobody drains (a host that writes commands and never reads their answers).
const OUT_HARD_LIMIT: usize = 4 * OUT_HIGH_WATER;

/// How long the thread leaves the master alone after it reported a hang-up or `EIO` (which the held slave
/// descriptor should prevent), so that such a state cannot make it spin.
const HANGUP_BACKOFF: Duration = Duration::from_millis(100);

/// Where the adapter appears and which bus it is on.
#[derive(Debug, Clone)]
pub struct SlcanConfig {
    /// A symbolic link created to the pty's slave (e.g. `/tmp/x/slcan0`); a stale symbolic link there is
    /// replaced (any other file is an error); removed on stop. Its parent directory must exist.
    pub link: PathBuf,
    /// The hub the adapter's node joins.
    pub hub: Endpoint,
}

/// An slcan adapter emulated on a pseudo-terminal; its CAN bus is a hub bus. Dropping it stops it.
pub struct SlcanPort {
    link: PathBuf,
    pty_path: PathBuf,
    nodes: BridgeNodes,
    node: Arc<BridgeNode>,
    status: Arc<Mutex<SlcanStatus>>,
    stop: StopSignal,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for SlcanPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlcanPort")
            .field("link", &self.link)
            .field("pty", &self.pty_path)
            .finish_non_exhaustive()
    }
}

fn io_error(source: io::Error) -> BridgeError {
    BridgeError::Io {
        protocol: PROTOCOL,
        source,
    }
}

fn setup(reason: String) -> BridgeError {
    BridgeError::Setup {
        protocol: PROTOCOL,
        reason,
    }
}

/// Creates `link` → `target`, replacing a symbolic link already there.
fn place_link(link: &Path, target: &Path) -> Result<(), BridgeError> {
    match fs::symlink_metadata(link) {
        Ok(meta) if meta.file_type().is_symlink() => {
            tracing::debug!(link = %link.display(), "replacing a stale slcan link");
            fs::remove_file(link).map_err(io_error)?;
        }
        Ok(_) => {
            return Err(setup(format!(
                "{} exists and is not a symbolic link; not replacing it",
                link.display()
            )))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error(e)),
    }
    std::os::unix::fs::symlink(target, link).map_err(|e| {
        setup(format!(
            "cannot link {} to {}: {e}",
            link.display(),
            target.display()
        ))
    })
}

/// Removes `link` if it still points at `target` (another port may have replaced it since).
fn remove_link(link: &Path, target: &Path) {
    if fs::read_link(link).is_ok_and(|t| t == target) {
        if let Err(e) = fs::remove_file(link) {
            tracing::warn!(link = %link.display(), "cannot remove the slcan link: {e}");
        }
    }
}

impl SlcanPort {
    /// Opens the pseudo-terminal, joins the hub as `slcan:<link>`, creates the link and starts serving.
    ///
    /// The node joins with CAN FD enabled, so FD frames of the bus reach the host as `d`/`b` lines (tools
    /// that only know classic CAN, like the kernel driver, ignore them) and the host may send FD frames.
    /// Error frames are not passed on.
    pub fn start(config: SlcanConfig) -> Result<SlcanPort, BridgeError> {
        let Pty {
            master,
            slave,
            path: pty_path,
        } = pty::open_raw().map_err(|e| setup(format!("cannot open a pseudo-terminal: {e}")))?;
        let peer = config.link.display().to_string();
        let client = bridge::join(&config.hub, PROTOCOL, &peer, true, false)?;
        let stop = StopSignal::new().map_err(io_error)?;
        place_link(&config.link, &pty_path)?;
        let nodes = BridgeNodes::default();
        let node = nodes.add(PROTOCOL, &peer);
        let status = Arc::new(Mutex::new(SlcanStatus::default()));
        let worker = Worker {
            master,
            slave,
            client: Some(client),
            device: Device::new(),
            splitter: LineSplitter::default(),
            out: Vec::new(),
            node: Arc::clone(&node),
            status: Arc::clone(&status),
            stop: stop.clone(),
            master_resume: None,
        };
        let thread = std::thread::Builder::new()
            .name(format!("slcan {}", config.link.display()))
            .spawn(move || worker.run())
            .map_err(|e| {
                remove_link(&config.link, &pty_path);
                io_error(e)
            })?;
        tracing::info!(link = %config.link.display(), pty = %pty_path.display(), hub = ?config.hub, "slcan adapter started");
        Ok(SlcanPort {
            link: config.link,
            pty_path,
            nodes,
            node,
            status,
            stop,
            thread: Some(thread),
        })
    }

    /// The pty's slave device (`/dev/pts/N`) the link points at.
    pub fn pty_path(&self) -> PathBuf {
        self.pty_path.clone()
    }

    /// The link path given in the configuration.
    pub fn link(&self) -> &Path {
        &self.link
    }

    /// What the host has configured: open or closed, bitrate, data bitrate, timestamps.
    pub fn status(&self) -> SlcanStatus {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Bridge for SlcanPort {
    fn protocol(&self) -> &'static str {
        PROTOCOL
    }

    fn address(&self) -> String {
        self.link.display().to_string()
    }

    fn report(&self) -> BridgeReport {
        self.nodes.report(PROTOCOL, self.address())
    }

    fn stop(&mut self) -> BridgeReport {
        if let Some(thread) = self.thread.take() {
            self.stop.raise();
            if thread.join().is_err() {
                self.node
                    .counters
                    .note(format!("{}: the slcan thread panicked", self.node.node));
            }
            remove_link(&self.link, &self.pty_path);
            self.node.disconnected();
            tracing::info!(link = %self.link.display(), "slcan adapter stopped");
        }
        self.report()
    }
}

impl Drop for SlcanPort {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The adapter thread's state.
struct Worker {
    master: OwnedFd,
    /// Held so the master never hangs up while no host tool has the port open.
    slave: OwnedFd,
    /// `None` once the hub connection failed: the tty is still answered, frames are refused.
    client: Option<HubClient>,
    device: Device,
    splitter: LineSplitter,
    out: Vec<u8>,
    node: Arc<BridgeNode>,
    status: Arc<Mutex<SlcanStatus>>,
    stop: StopSignal,
    /// Set after a hang-up or `EIO` on the master: when to look at it again.
    master_resume: Option<Instant>,
}

/// What one `read(2)` of the master gave.
enum ReadOutcome {
    Data(usize),
    Empty,
    HungUp,
}

impl Worker {
    fn run(mut self) {
        if let Err(e) = self.serve() {
            self.node.counters.note(format!(
                "{}: the adapter stopped on an error: {e}",
                self.node.node
            ));
        }
    }

    fn serve(&mut self) -> io::Result<()> {
        loop {
            // Frames already buffered in the client are invisible to poll: take them first.
            if self.client.as_ref().is_some_and(|c| c.has_buffered()) && self.hub_wanted() {
                self.drain_hub();
            }
            self.flush_out()?;

            let now = Instant::now();
            if self.master_resume.is_some_and(|t| t <= now) {
                self.master_resume = None;
            }
            let watch_master = self.master_resume.is_none();
            let take_input = self.out.len() < OUT_HARD_LIMIT;
            let hub_fd = self
                .client
                .as_ref()
                .filter(|_| self.hub_wanted())
                .map(|c| c.raw_fd());
            let mut master_events = 0;
            if watch_master {
                if take_input {
                    master_events |= libc::POLLIN;
                }
                if !self.out.is_empty() {
                    master_events |= libc::POLLOUT;
                }
            }
            let mut fds = [
                libc::pollfd {
                    fd: self.stop.fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: if master_events != 0 {
                        self.master.as_raw_fd()
                    } else {
                        -1
                    },
                    events: master_events,
                    revents: 0,
                },
                libc::pollfd {
                    fd: hub_fd.unwrap_or(-1),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            let timeout_ms = match self.master_resume {
                Some(t) => i32::try_from(t.saturating_duration_since(now).as_millis())
                    .unwrap_or(i32::MAX)
                    .max(1),
                None => -1,
            };
            // SAFETY: `fds` is a live array of `fds.len()` pollfd entries.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if fds[0].revents != 0 {
                return Ok(());
            }
            let master_revents = fds[1].revents;
            if master_revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
                if take_input {
                    self.read_master(master_revents & libc::POLLIN == 0)?;
                } else if master_revents & libc::POLLOUT == 0 {
                    self.back_off();
                }
            }
            if fds[2].revents != 0 {
                self.drain_hub();
            }
        }
    }

    /// Whether there is room to take more frames from the hub.
    fn hub_wanted(&self) -> bool {
        self.out.len() < OUT_HIGH_WATER
    }

    fn read_once(&self, buf: &mut [u8]) -> io::Result<ReadOutcome> {
        // SAFETY: reads at most `buf.len()` bytes into the live buffer.
        let n = unsafe { libc::read(self.master.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n > 0 {
            return Ok(ReadOutcome::Data(n as usize));
        }
        if n == 0 {
            return Ok(ReadOutcome::HungUp);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(ReadOutcome::Empty),
            Some(libc::EIO) => Ok(ReadOutcome::HungUp),
            _ => Err(e),
        }
    }

    /// Reads and answers everything the host has written. `hangup_only`: poll reported a hang-up or error
    /// without data.
    fn read_master(&mut self, hangup_only: bool) -> io::Result<()> {
        let mut buf = [0u8; 4096];
        let mut got_any = false;
        loop {
            match self.read_once(&mut buf)? {
                ReadOutcome::Data(n) => {
                    got_any = true;
                    for input in self.splitter.push(&buf[..n]) {
                        self.answer(&input);
                    }
                }
                ReadOutcome::Empty => {
                    if hangup_only && !got_any {
                        self.back_off();
                    }
                    return Ok(());
                }
                ReadOutcome::HungUp => {
                    self.back_off();
                    return Ok(());
                }
            }
        }
    }

    fn back_off(&mut self) {
        tracing::debug!(node = %self.node.node, "the pty master reports a hang-up; looking again shortly");
        self.master_resume = Some(Instant::now() + HANGUP_BACKOFF);
    }

    fn answer(&mut self, input: &Input) {
        let before = self.device.status().clone();
        let mut response = self.device.handle(input);
        if let Some(frame) = response.frame.take() {
            self.transmit(&frame, input, &mut response);
        }
        if let Some(problem) = &response.refused {
            self.node
                .counters
                .reject(format!("{}: {problem}", self.node.node));
        }
        if response.closed {
            // Closing a real serial port discards what it had not read; do the same for lines the host
            // did not read before `C`, so a tool that reopens the port does not see stale frames.
            self.out.clear();
            if let Err(e) = pty::discard_unread(&self.slave) {
                tracing::debug!(node = %self.node.node, "cannot discard unread pty input: {e}");
            }
        }
        self.out.extend_from_slice(&response.reply);
        let after = self.device.status();
        if *after != before {
            tracing::info!(node = %self.node.node, status = ?after, "slcan adapter configured");
            if let Ok(mut shared) = self.status.lock() {
                *shared = after.clone();
            }
        }
    }

    fn transmit(&mut self, frame: &vcan::Frame, input: &Input, response: &mut Response) {
        let line = match input {
            Input::Line(line) => line.escape_ascii().to_string(),
            Input::TooLong => String::new(),
        };
        let refuse = |response: &mut Response, reason: String| {
            response.reply = ERROR.to_vec();
            response.refused = Some(format!("refused `{line}`: {reason}"));
        };
        let Some(client) = self.client.as_mut() else {
            refuse(response, "the bus connection is gone".into());
            return;
        };
        match client.send(frame) {
            Ok(()) => BridgeCounters::add(&self.node.counters.to_bus, 1),
            Err(e @ (BusError::Unsupported(_) | BusError::Frame(_))) => {
                refuse(response, format!("the bus refused the frame: {e}"));
            }
            Err(e) => {
                refuse(response, format!("the bus connection failed: {e}"));
                self.lose_bus(e);
            }
        }
    }

    fn lose_bus(&mut self, e: BusError) {
        if self.client.take().is_some() {
            self.node
                .counters
                .note(format!("{}: left the bus: {e}", self.node.node));
            self.node.disconnected();
        }
    }

    /// Takes every frame the hub has for us (while there is room) and queues its line.
    fn drain_hub(&mut self) {
        while self.hub_wanted() {
            let Some(client) = self.client.as_mut() else {
                return;
            };
            match client.recv(Some(Duration::ZERO)) {
                Ok(Some(received)) => {
                    if let Some(line) = self.device.frame_line(&received.frame, received.timestamp_ns) {
                        self.out.extend_from_slice(line.as_bytes());
                        BridgeCounters::add(&self.node.counters.to_peer, 1);
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    self.lose_bus(e);
                    return;
                }
            }
        }
    }

    /// Writes as much queued output as the pty takes.
    fn flush_out(&mut self) -> io::Result<()> {
        let mut written = 0;
        while written < self.out.len() {
            let rest = &self.out[written..];
            // SAFETY: writes at most `rest.len()` bytes from the live buffer.
            let n = unsafe { libc::write(self.master.as_raw_fd(), rest.as_ptr().cast(), rest.len()) };
            if n > 0 {
                written += n as usize;
                continue;
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) => break,
                Some(libc::EIO) => {
                    self.back_off();
                    break;
                }
                _ => return Err(e),
            }
        }
        self.out.drain(..written);
        Ok(())
    }
}
