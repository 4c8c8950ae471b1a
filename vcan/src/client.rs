//! A bus node joined to a userspace hub (`hub::Hub`) over a Unix stream socket or TCP, and the hub's
//! statistics query ([`query_stats`]), the other client-side use of the [`crate::wire`] protocol.
//!
//! The socket is a plain blocking stream; every call uses `MSG_DONTWAIT` and waits with `poll(2)` where it
//! has to, so timeouts are exact and the fd stays usable by a caller's own poll loop. Received bytes go
//! into an internal buffer that is decoded frame by frame, so one `read` serves many frames. Each
//! [`CanSocket::send`] writes its frame at once (latency matters on a bus); [`HubClient::send_batch`]
//! writes many frames with one system call for throughput. While a send waits for the hub to accept bytes,
//! the client keeps reading what the hub delivers into its buffer, so a node that both sends and receives
//! cannot deadlock against the hub's flow control. Only numeric addresses are used (no name resolution),
//! so the client works in fully static binaries.

use std::io;
use std::net::TcpStream;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use crate::filter::Filter;
use crate::frame::Frame;
use crate::options::{Endpoint, OpenOptions};
use crate::socket::{BusError, CanSocket, Received};
use crate::wire::{self, Decoder, Hello, HubStats, Message, Role};

/// Bytes read per `recv(2)`.
const READ_CHUNK: usize = 64 * 1024;
/// How long `connect` waits for the hub's answer to the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// While blocked in a send, inbound bytes are buffered up to this much before the client stops reading.
const MAX_BUFFER_WHILE_SENDING: usize = 64 * 1024 * 1024;

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
}

/// The raw connection with its buffers, shared by nodes and control connections.
struct Link {
    stream: Stream,
    endpoint: String,
    decoder: Decoder,
    closed: bool,
    /// The last read filled a whole chunk, so more bytes are probably waiting (read before polling).
    maybe_more: bool,
}

enum Wait {
    Ready,
    TimedOut,
}

impl Link {
    fn connect(endpoint: &Endpoint) -> Result<Link, BusError> {
        let uri = endpoint.to_string();
        let connect_err = |source: io::Error| BusError::Connect {
            endpoint: uri.clone(),
            source,
        };
        let stream = match endpoint {
            Endpoint::Unix(path) => Stream::Unix(UnixStream::connect(path).map_err(connect_err)?),
            Endpoint::Tcp(addr) => {
                let stream = TcpStream::connect(addr).map_err(connect_err)?;
                stream.set_nodelay(true).map_err(connect_err)?;
                Stream::Tcp(stream)
            }
            Endpoint::SocketCan(_) => {
                return Err(BusError::InvalidEndpoint {
                    uri,
                    reason: "a hub client needs a `unix:` or `tcp:` endpoint".to_string(),
                })
            }
        };
        Ok(Link {
            stream,
            decoder: Decoder::new(uri.clone()),
            endpoint: uri,
            closed: false,
            maybe_more: false,
        })
    }

    fn io_error(&self, source: io::Error) -> BusError {
        BusError::Io {
            endpoint: self.endpoint.clone(),
            source,
        }
    }

    fn closed_error(&self) -> BusError {
        if self.decoder.buffered() > 0 {
            BusError::Protocol {
                endpoint: self.endpoint.clone(),
                reason: format!(
                    "the hub closed the connection in the middle of a message ({} bytes)",
                    self.decoder.buffered()
                ),
            }
        } else {
            BusError::Closed(self.endpoint.clone())
        }
    }

    /// One nonblocking read into the buffer. `Ok(false)`: nothing to read now.
    fn read_some(&mut self) -> Result<bool, BusError> {
        if self.closed {
            return Err(self.closed_error());
        }
        loop {
            match self
                .decoder
                .recv_from_fd(self.stream.fd(), READ_CHUNK, libc::MSG_DONTWAIT)
            {
                Ok(0) => {
                    self.closed = true;
                    return Err(self.closed_error());
                }
                Ok(n) => {
                    self.maybe_more = n == READ_CHUNK;
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.maybe_more = false;
                    return Ok(false);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if is_disconnect(&e) => {
                    self.closed = true;
                    return Err(self.closed_error());
                }
                Err(e) => return Err(self.io_error(e)),
            }
        }
    }

    /// Waits until the socket is readable or `deadline` passes (`None`: forever). A deadline in the past
    /// still polls once, so data that is already there counts as ready.
    fn wait_readable(&self, deadline: Option<Instant>) -> Result<Wait, BusError> {
        loop {
            let timeout_ms = match deadline {
                None => -1,
                // Round up so a sub-millisecond remainder still waits.
                Some(deadline) => deadline
                    .saturating_duration_since(Instant::now())
                    .as_micros()
                    .div_ceil(1000)
                    .min(i32::MAX as u128) as i32,
            };
            match poll_fd(self.stream.fd(), libc::POLLIN, timeout_ms) {
                Ok((0, _)) => {
                    if timeout_ms == 0 || deadline.is_some_and(|d| Instant::now() >= d) {
                        return Ok(Wait::TimedOut);
                    }
                }
                Ok(_) => return Ok(Wait::Ready),
                // A signal: return early (as a timeout) so the caller can look at what the handler set.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(Wait::TimedOut),
                Err(e) => return Err(self.io_error(e)),
            }
        }
    }

    /// The next message, waiting until `deadline`; `Ok(None)` on timeout.
    ///
    /// When the last read drained the socket, this polls before reading: one `poll` + one `recv` per
    /// wake-up instead of a speculative `recv` that would only say "nothing yet".
    fn next_message(&mut self, deadline: Option<Instant>) -> Result<Option<Message>, BusError> {
        loop {
            if let Some(message) = self.decoder.next_message()? {
                return Ok(Some(message));
            }
            if self.maybe_more && self.read_some()? {
                continue;
            }
            if self.closed {
                return Err(self.closed_error());
            }
            match self.wait_readable(deadline)? {
                Wait::Ready => {
                    self.read_some()?;
                }
                Wait::TimedOut => return Ok(None),
            }
        }
    }

    /// The hub's answer to a request, waiting until `deadline` whatever signals arrive meanwhile
    /// ([`Link::next_message`] returns early on one: EINTR, e.g. the SIGCHLD of a child process of the
    /// caller exiting); `Ok(None)` only once the deadline has passed.
    fn answer_by(&mut self, deadline: Instant) -> Result<Option<Message>, BusError> {
        loop {
            let answer = self.next_message(Some(deadline))?;
            if answer.is_some() || Instant::now() >= deadline {
                return Ok(answer);
            }
        }
    }

    /// Writes all of `bytes`, handling partial writes; reads inbound bytes meanwhile (see module doc).
    fn write_all(&mut self, bytes: &[u8]) -> Result<(), BusError> {
        let fd = self.stream.fd();
        let mut pos = 0;
        while pos < bytes.len() {
            let rest = &bytes[pos..];
            // SAFETY: `rest` is a valid initialised buffer; send reads at most its length.
            let n = unsafe {
                libc::send(
                    fd,
                    rest.as_ptr().cast(),
                    rest.len(),
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            if n >= 0 {
                pos += n as usize;
                continue;
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => self.wait_writable()?,
                _ if is_disconnect(&e) => {
                    self.closed = true;
                    return Err(BusError::Closed(self.endpoint.clone()));
                }
                _ => return Err(self.io_error(e)),
            }
        }
        Ok(())
    }

    fn wait_writable(&mut self) -> Result<(), BusError> {
        loop {
            let drain = !self.closed && self.decoder.buffered() < MAX_BUFFER_WHILE_SENDING;
            let events = if drain {
                libc::POLLOUT | libc::POLLIN
            } else {
                libc::POLLOUT
            };
            let revents = match poll_fd(self.stream.fd(), events, -1) {
                Ok((_, revents)) => revents,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.io_error(e)),
            };
            if drain && revents & (libc::POLLIN | libc::POLLHUP) != 0 {
                match self.read_some() {
                    Ok(_) => {}
                    // Closed: let the next send report it with the precise error.
                    Err(BusError::Closed(_) | BusError::Protocol { .. }) => return Ok(()),
                    Err(e) => return Err(e),
                }
            }
            if revents & (libc::POLLOUT | libc::POLLERR | libc::POLLHUP) != 0 {
                return Ok(());
            }
        }
    }
}

/// `poll(2)` on one fd; returns the number of ready fds (0 or 1) and the returned events.
fn poll_fd(fd: RawFd, events: i16, timeout_ms: i32) -> io::Result<(i32, i16)> {
    let mut pfd = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: `pfd` is one valid pollfd and we pass a count of 1.
    let n = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((n, pfd.revents))
}

fn is_disconnect(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
    )
}

fn handshake(link: &mut Link, hello: &Hello) -> Result<u32, BusError> {
    let mut out = Vec::with_capacity(64);
    wire::encode_hello(&mut out, hello).map_err(|e| BusError::Unsupported(e.to_string()))?;
    if hello.role == Role::Control {
        wire::encode_stats_request(&mut out);
    }
    link.write_all(&out)?;
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    match link.answer_by(deadline)? {
        Some(Message::Welcome { node_id, .. }) => Ok(node_id),
        Some(Message::Refused(reason)) => Err(BusError::Refused(reason)),
        Some(other) => Err(BusError::Protocol {
            endpoint: link.endpoint.clone(),
            reason: format!("expected the hub's welcome, got {other:?}"),
        }),
        None => Err(BusError::Protocol {
            endpoint: link.endpoint.clone(),
            reason: format!(
                "no answer to the handshake within {} s",
                HANDSHAKE_TIMEOUT.as_secs()
            ),
        }),
    }
}

/// The [`CanSocket`] of a hub node.
pub struct HubClient {
    link: Link,
    node_id: u32,
    fd_frames: bool,
    wbuf: Vec<u8>,
}

impl HubClient {
    /// Connects and performs the join handshake (node name, echo, filters, FD, error frames).
    pub fn connect(endpoint: &Endpoint, options: &OpenOptions) -> Result<HubClient, BusError> {
        let mut link = Link::connect(endpoint)?;
        let hello = Hello {
            version: wire::PROTOCOL_VERSION,
            role: Role::Node,
            name: options.node_name.clone(),
            recv_own: options.recv_own,
            want_errors: options.want_errors,
            fd: options.fd,
            filters: options.filters.clone(),
        };
        let node_id = handshake(&mut link, &hello)?;
        let shown = if options.node_name.is_empty() {
            format!("node{node_id}")
        } else {
            options.node_name.clone()
        };
        link.decoder
            .set_peer(format!("{} (node {node_id} `{shown}`)", link.endpoint));
        tracing::debug!(endpoint = %link.endpoint, node = node_id, name = %shown, "joined hub");
        Ok(HubClient {
            link,
            node_id,
            fd_frames: options.fd,
            wbuf: Vec::with_capacity(256),
        })
    }

    /// The node number the hub assigned.
    pub fn node_id(&self) -> u32 {
        self.node_id
    }

    fn check_frame(&self, frame: &Frame) -> Result<(), BusError> {
        if frame.is_fd() && !self.fd_frames {
            return Err(BusError::Unsupported(format!(
                "CAN FD frame {frame} on a node opened without `fd` (set OpenOptions::fd)"
            )));
        }
        Ok(())
    }

    /// Sends many frames with as few system calls as possible (one, unless the hub applies flow control).
    ///
    /// The frames enter the bus in slice order. If a frame is invalid for this node (FD without `fd`)
    /// nothing is sent.
    pub fn send_batch(&mut self, frames: &[Frame]) -> Result<(), BusError> {
        for frame in frames {
            self.check_frame(frame)?;
        }
        self.wbuf.clear();
        for frame in frames {
            wire::encode_send(&mut self.wbuf, frame);
        }
        let bytes = std::mem::take(&mut self.wbuf);
        let result = self.link.write_all(&bytes);
        self.wbuf = bytes;
        result
    }
}

impl std::fmt::Debug for HubClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubClient")
            .field("endpoint", &self.link.endpoint)
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

impl CanSocket for HubClient {
    fn send(&mut self, frame: &Frame) -> Result<(), BusError> {
        self.check_frame(frame)?;
        self.wbuf.clear();
        wire::encode_send(&mut self.wbuf, frame);
        let bytes = std::mem::take(&mut self.wbuf);
        let result = self.link.write_all(&bytes);
        self.wbuf = bytes;
        result
    }

    fn recv(&mut self, timeout: Option<Duration>) -> Result<Option<Received>, BusError> {
        let deadline = timeout.map(|t| Instant::now().checked_add(t).unwrap_or_else(far_future));
        match self.link.next_message(deadline)? {
            None => Ok(None),
            Some(Message::Deliver(d)) => Ok(Some(Received {
                frame: d.frame,
                timestamp_ns: d.timestamp_ns,
                seq: Some(d.seq),
                own: d.own,
            })),
            Some(other) => Err(BusError::Protocol {
                endpoint: self.link.endpoint.clone(),
                reason: format!("unexpected message from the hub: {other:?}"),
            }),
        }
    }

    fn set_filters(&mut self, filters: &[Filter]) -> Result<(), BusError> {
        self.wbuf.clear();
        wire::encode_set_filters(&mut self.wbuf, filters)
            .map_err(|e| BusError::Unsupported(e.to_string()))?;
        let bytes = std::mem::take(&mut self.wbuf);
        let result = self.link.write_all(&bytes);
        self.wbuf = bytes;
        result
    }

    fn has_buffered(&self) -> bool {
        self.link.decoder.has_message()
    }

    fn raw_fd(&self) -> RawFd {
        self.link.stream.fd()
    }

    fn bus_name(&self) -> &str {
        &self.link.endpoint
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365)
}

/// Asks the hub at `endpoint` for its counters (a short-lived control connection, not a bus node).
///
/// Also reachable as `hub::query_stats`.
pub fn query_stats(endpoint: &Endpoint) -> Result<HubStats, BusError> {
    query_stats_with_timeout(endpoint, Duration::from_secs(10))
}

/// [`query_stats`] with an explicit timeout for the whole exchange.
pub fn query_stats_with_timeout(endpoint: &Endpoint, timeout: Duration) -> Result<HubStats, BusError> {
    let mut link = Link::connect(endpoint)?;
    let hello = Hello {
        version: wire::PROTOCOL_VERSION,
        role: Role::Control,
        name: "query_stats".to_string(),
        recv_own: false,
        want_errors: false,
        fd: false,
        filters: Vec::new(),
    };
    handshake(&mut link, &hello)?;
    let deadline = Instant::now() + timeout;
    match link.answer_by(deadline)? {
        Some(Message::StatsReply(stats)) => Ok(stats),
        Some(other) => Err(BusError::Protocol {
            endpoint: link.endpoint.clone(),
            reason: format!("expected statistics, got {other:?}"),
        }),
        None => Err(BusError::Protocol {
            endpoint: link.endpoint.clone(),
            reason: format!("no statistics within {} ms", timeout.as_millis()),
        }),
    }
}
