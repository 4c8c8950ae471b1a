//! Bus endpoint URIs and the one way to open a bus from one.
//!
//! * `socketcan:<ifname>` — kernel SocketCAN interface (`vcan0`, `can0`).
//! * `unix:<path>` — a userspace hub's Unix stream socket.
//! * `tcp:<ip>:<port>` — a userspace hub's TCP listener (numeric address; no name lookup, so fully static
//!   binaries work).
//!
//! Workloads read the URI from the `CAN_BUS` environment variable and call [`open`]; the harness does the
//! same, so both sides of every environment go through this module.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use crate::{BusError, CanSocket, Filter};

/// Environment variable through which a workload receives its bus endpoint.
pub const BUS_ENV: &str = "CAN_BUS";

/// Where a bus is reached.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    SocketCan(String),
    Unix(PathBuf),
    Tcp(SocketAddr),
}

/// How a node wants to join a bus.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// Name shown in hub statistics and reports (workload name, `harness`, ...).
    pub node_name: String,
    /// Receive the frames this node sends itself (SocketCAN `CAN_RAW_RECV_OWN_MSGS`).
    pub recv_own: bool,
    /// Acceptance filters; empty accepts all.
    pub filters: Vec<Filter>,
    /// Receive error frames.
    pub want_errors: bool,
    /// Allow sending/receiving CAN FD frames (SocketCAN `CAN_RAW_FD_FRAMES`).
    pub fd: bool,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::SocketCan(ifname) => write!(f, "socketcan:{ifname}"),
            Endpoint::Unix(path) => write!(f, "unix:{}", path.display()),
            Endpoint::Tcp(addr) => write!(f, "tcp:{addr}"),
        }
    }
}

impl FromStr for Endpoint {
    type Err = BusError;

    fn from_str(uri: &str) -> Result<Self, BusError> {
        let invalid = |reason: &str| BusError::InvalidEndpoint {
            uri: uri.to_string(),
            reason: reason.to_string(),
        };
        let (scheme, rest) = uri
            .split_once(':')
            .ok_or_else(|| invalid("expected `socketcan:<ifname>`, `unix:<path>` or `tcp:<ip>:<port>`"))?;
        match scheme {
            "socketcan" => {
                if rest.is_empty() || rest.len() > 15 || rest.contains(['/', ' ', '\0']) {
                    return Err(invalid(
                        "interface name must be 1-15 characters without `/` or spaces",
                    ));
                }
                Ok(Endpoint::SocketCan(rest.to_string()))
            }
            "unix" => {
                if rest.is_empty() {
                    return Err(invalid("missing socket path"));
                }
                Ok(Endpoint::Unix(PathBuf::from(rest)))
            }
            "tcp" => rest
                .parse::<SocketAddr>()
                .map(Endpoint::Tcp)
                .map_err(|_| invalid("expected a numeric `<ip>:<port>` such as `127.0.0.1:29536`")),
            other => Err(invalid(&format!("unknown scheme `{other}`"))),
        }
    }
}

/// Opens the bus at `endpoint` as a node configured by `options`.
pub fn open(endpoint: &Endpoint, options: &OpenOptions) -> Result<Box<dyn CanSocket>, BusError> {
    match endpoint {
        Endpoint::SocketCan(ifname) => Ok(Box::new(crate::kernel::KernelSocket::open(ifname, options)?)),
        Endpoint::Unix(_) | Endpoint::Tcp(_) => {
            Ok(Box::new(crate::client::HubClient::connect(endpoint, options)?))
        }
    }
}

/// Opens the bus named by the `CAN_BUS` environment variable.
pub fn open_from_env(options: &OpenOptions) -> Result<Box<dyn CanSocket>, BusError> {
    let uri = std::env::var(BUS_ENV).map_err(|_| BusError::InvalidEndpoint {
        uri: String::new(),
        reason: format!("environment variable {BUS_ENV} is not set"),
    })?;
    open(&uri.parse()?, options)
}
