//! Bus endpoint URIs and the one way to open a bus from one.
//!
//! * `socketcan:<ifname>` — kernel SocketCAN interface (`vcan0`, `can0`).
//! * `unix:<path>` — a userspace hub's Unix stream socket.
//! * `tcp:<ip>:<port>` — a userspace hub's TCP listener (numeric address; no name lookup, so fully static
//!   binaries work).
//!
//! Workloads read the URI from the `CAN_BUS` environment variable and call [`open`]; the harness does the
//! same, so both sides of every environment go through this module.
//!
//! [`Endpoint`] and [`OpenOptions`] are defined below the backends (the backends take them), this module
//! sits above the backends (it picks one), so it re-exports the two types.

use crate::client::HubClient;
use crate::kernel::KernelSocket;
pub use crate::options::{Endpoint, OpenOptions};
use crate::socket::{BusError, CanSocket};

/// Environment variable through which a workload receives its bus endpoint.
pub const BUS_ENV: &str = "CAN_BUS";

/// Opens the bus at `endpoint` as a node configured by `options`.
pub fn open(endpoint: &Endpoint, options: &OpenOptions) -> Result<Box<dyn CanSocket>, BusError> {
    match endpoint {
        Endpoint::SocketCan(ifname) => Ok(Box::new(KernelSocket::open(ifname, options)?)),
        Endpoint::Unix(_) | Endpoint::Tcp(_) => Ok(Box::new(HubClient::connect(endpoint, options)?)),
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
