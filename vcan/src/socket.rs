//! The [`CanSocket`] trait: what every bus backend (userspace hub client, kernel SocketCAN) offers a
//! workload or the harness, and the metadata a received frame carries.

use std::os::fd::RawFd;
use std::time::Duration;

use crate::filter::Filter;
use crate::frame::{Frame, FrameError};

/// A frame received from a bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub frame: Frame,
    /// Host wall-clock time the bus accepted the frame, in nanoseconds since the Unix epoch
    /// (hub: when the hub ordered it; kernel: the socket timestamp or the receive time).
    pub timestamp_ns: u64,
    /// The bus-wide sequence number (global delivery order) where the bus provides one (the hub does).
    pub seq: Option<u64>,
    /// True when this is the echo of a frame this socket sent itself.
    pub own: bool,
}

/// Errors from opening or using a bus.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("invalid bus endpoint `{uri}`: {reason}")]
    InvalidEndpoint { uri: String, reason: String },
    #[error("cannot connect to bus `{endpoint}`: {source}")]
    Connect {
        endpoint: String,
        source: std::io::Error,
    },
    #[error("this kernel has no CAN support (socket(AF_CAN) failed with EAFNOSUPPORT); use a `unix:` or `tcp:` bus endpoint, or load the `can` and `can-raw` modules")]
    NoKernelCan,
    #[error("CAN interface `{0}` does not exist")]
    NoSuchInterface(String),
    #[error("the hub refused this node: {0}")]
    Refused(String),
    #[error("protocol error on bus `{endpoint}`: {reason}")]
    Protocol { endpoint: String, reason: String },
    #[error("bus `{0}` closed the connection")]
    Closed(String),
    #[error("invalid fault `{fault}`: {reason}")]
    InvalidFault { fault: String, reason: String },
    #[error("invalid bus timing: {0}")]
    InvalidTiming(String),
    #[error("frame not supported by this bus: {0}")]
    Unsupported(String),
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("I/O error on bus `{endpoint}`: {source}")]
    Io {
        endpoint: String,
        source: std::io::Error,
    },
}

/// A connected CAN bus node.
///
/// Sends are delivered to every other node of the bus in one global order; what this node receives is
/// limited by its acceptance filters. Implementations buffer internally, so callers that multiplex several
/// sources must call [`CanSocket::recv`] with a zero timeout after their own poll says the fd is readable
/// *and* before they block (see [`CanSocket::has_buffered`]).
pub trait CanSocket: Send {
    /// Sends one frame. Blocks only while the transport applies flow control.
    fn send(&mut self, frame: &Frame) -> Result<(), BusError>;

    /// Receives the next frame. `None` timeout blocks; `Some(Duration::ZERO)` polls. Returns `Ok(None)` when
    /// the timeout elapsed with no frame, and also early when a signal interrupted the wait (so a caller
    /// whose signal handler set a flag sees it at once).
    fn recv(&mut self, timeout: Option<Duration>) -> Result<Option<Received>, BusError>;

    /// Replaces the acceptance filters (an empty list accepts everything).
    fn set_filters(&mut self, filters: &[Filter]) -> Result<(), BusError>;

    /// True if frames are already buffered in user space, so polling the fd would not show them.
    fn has_buffered(&self) -> bool;

    /// The file descriptor to poll for readability.
    fn raw_fd(&self) -> RawFd;

    /// A human-readable name of the bus this socket is joined to (the endpoint URI).
    fn bus_name(&self) -> &str;
}
