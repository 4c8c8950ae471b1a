//! What opening a bus takes: where the bus is ([`Endpoint`], parsed from and printed as the URIs of
//! `endpoint`) and how the node joins it ([`OpenOptions`]).
//!
//! Plain data below every backend: the kernel backend and the hub client take these types, and
//! `endpoint::open` (above the backends) picks the backend for an [`Endpoint`]. Both types are public as
//! `vcan::endpoint::{Endpoint, OpenOptions}` and `vcan::{Endpoint, OpenOptions}`.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use crate::filter::Filter;
use crate::socket::BusError;

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
