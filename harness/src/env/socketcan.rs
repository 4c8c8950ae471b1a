//! How SocketCAN reaches a workload, for every environment that starts processes on this machine or in
//! its containers: the transport choice (`--can-transport`) and the seccomp emulation of SocketCAN
//! ([`vcan::emu`]) for the processes the harness starts.
//!
//! * **emulated**: the unmodified program gets `socket(AF_CAN, SOCK_RAW, CAN_RAW)` and the interfaces its
//!   manifest names (`can0`, ...), bridged to the scenario's hubs, with no kernel CAN, no root and no
//!   kernel module; its `CAN_BUS` variables say `socketcan:<interface>`.
//! * **kernel**: real kernel CAN (vxcan pairs into containers); only where the kernel has it.
//! * **hub**: the hub's socket itself (`CAN_BUS=unix:...`): only workloads using this project's bus client
//!   can join, as before the emulation.
//! * **auto** (default): kernel where the environment offers it and the kernel has CAN, else emulated where
//!   seccomp user notification exists, else hub.

use std::fmt;
use std::str::FromStr;

use vcan::emu::{ChildChannel, Emulation};
use vcan::Endpoint;

use crate::error::InfraError;
use crate::manifest::WorkloadSpec;

/// The transport asked for (`--can-transport`, `AGL_PARITY_CAN_TRANSPORT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CanTransport {
    #[default]
    Auto,
    Emulated,
    Kernel,
    Hub,
}

impl FromStr for CanTransport {
    type Err = TransportError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(CanTransport::Auto),
            "emulated" => Ok(CanTransport::Emulated),
            "kernel" => Ok(CanTransport::Kernel),
            "hub" => Ok(CanTransport::Hub),
            other => Err(TransportError::Unknown(other.to_string())),
        }
    }
}

impl fmt::Display for CanTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CanTransport::Auto => "auto",
            CanTransport::Emulated => "emulated",
            CanTransport::Kernel => "kernel",
            CanTransport::Hub => "hub",
        })
    }
}

/// Why a transport cannot be used here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    #[error("--can-transport `{0}`: expected auto, emulated, kernel or hub")]
    Unknown(String),
    #[error("--can-transport kernel: {0}")]
    NoKernel(String),
    #[error("--can-transport emulated: {0}")]
    NoEmulation(String),
}

/// What this machine offers, as [`resolve`] weighs it.
#[derive(Debug, Clone)]
pub struct Offer {
    /// The environment can give workloads kernel CAN interfaces (vxcan into containers).
    pub env_has_kernel_path: bool,
    /// `Ok` when the kernel has CAN; the reason otherwise.
    pub kernel_can: Result<(), String>,
    /// `Ok` when seccomp user notification works; the reason otherwise.
    pub emulation: Result<(), String>,
}

impl Offer {
    /// This machine, for an environment with (`kernel_path`) or without a kernel CAN path.
    pub fn here(kernel_path: bool) -> Offer {
        Offer {
            env_has_kernel_path: kernel_path,
            kernel_can: vcan::kernel::kernel_has_can().map_err(|e| e.to_string()),
            emulation: vcan::emu::available().map_err(|e| e.to_string()),
        }
    }
}

/// The transport an environment uses: never `Auto`.
pub fn resolve(requested: CanTransport, offer: &Offer) -> Result<CanTransport, TransportError> {
    let kernel = || -> Result<(), String> {
        if !offer.env_has_kernel_path {
            return Err("this environment has no kernel CAN path (use emulated or hub)".into());
        }
        offer.kernel_can.clone()
    };
    match requested {
        CanTransport::Auto if kernel().is_ok() => Ok(CanTransport::Kernel),
        CanTransport::Auto if offer.emulation.is_ok() => Ok(CanTransport::Emulated),
        CanTransport::Auto => {
            tracing::warn!(
                reason = offer.emulation.as_ref().err().map(String::as_str).unwrap_or(""),
                "no kernel CAN and no SocketCAN emulation: workloads reach the hub's socket only"
            );
            Ok(CanTransport::Hub)
        }
        CanTransport::Kernel => kernel()
            .map(|()| CanTransport::Kernel)
            .map_err(TransportError::NoKernel),
        CanTransport::Emulated => offer
            .emulation
            .clone()
            .map(|()| CanTransport::Emulated)
            .map_err(TransportError::NoEmulation),
        CanTransport::Hub => Ok(CanTransport::Hub),
    }
}

/// The report's line for an emulated transport.
pub const EMULATED: &str = "SocketCAN emulated (seccomp user notification), bridged to the userspace hub";

/// `(bus, socketcan:<interface>)` for each bus of the pod: its `CAN_BUS` variables under emulation.
pub fn socketcan_endpoints(workload: &WorkloadSpec, buses: &[String]) -> Vec<(String, String)> {
    buses
        .iter()
        .map(|b| (b.clone(), format!("socketcan:{}", workload.interface_of(b))))
        .collect()
}

/// The emulation of one container's process: its interfaces and the bus node name.
#[derive(Debug, Clone)]
pub struct EmulationSpec {
    /// `(interface, hub endpoint)` in the pod's bus order.
    pub interfaces: Vec<(String, Endpoint)>,
    pub node_name: String,
}

impl EmulationSpec {
    /// The pod's interfaces on the scenario's hubs, from `(bus, hub endpoint URI)` pairs.
    pub fn for_pod(
        workload: &WorkloadSpec,
        hubs: &[(String, String)],
        node_name: String,
    ) -> Result<EmulationSpec, InfraError> {
        let mut interfaces = Vec::new();
        for (bus, uri) in hubs {
            let endpoint: Endpoint = uri.parse().map_err(|e: vcan::BusError| InfraError::Bus {
                bus: bus.clone(),
                reason: e.to_string(),
            })?;
            interfaces.push((workload.interface_of(bus), endpoint));
        }
        Ok(EmulationSpec {
            interfaces,
            node_name,
        })
    }

    /// Prepares `command` (its `pre_exec` installs the filter; the emulation starts the moment the child
    /// sends its listener); give the channel to [`EmulationSpec::start`] once the command is spawned.
    pub fn prepare(
        &self,
        command: &mut tokio::process::Command,
        workload: &str,
    ) -> Result<ChildChannel, InfraError> {
        let channel = ChildChannel::serving(
            vcan::emu::interfaces(self.interfaces.clone()),
            self.node_name.clone(),
        )
        .map_err(|e| InfraError::Launch {
            workload: workload.to_string(),
            reason: e.to_string(),
        })?;
        // SAFETY: the hook only makes system calls (prctl, seccomp, sendmmsg, close) and allocates nothing.
        unsafe {
            command.pre_exec(channel.hook());
        }
        Ok(channel)
    }

    /// The running emulation of the spawned child.
    pub fn start(channel: ChildChannel, workload: &str) -> Result<Emulation, InfraError> {
        channel.finish().map_err(|e| InfraError::Launch {
            workload: workload.to_string(),
            reason: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(kernel_path: bool, kernel: bool, emu: bool) -> Offer {
        Offer {
            env_has_kernel_path: kernel_path,
            kernel_can: if kernel { Ok(()) } else { Err("no AF_CAN".into()) },
            emulation: if emu { Ok(()) } else { Err("no user_notif".into()) },
        }
    }

    #[test]
    fn auto_prefers_kernel_then_emulation_then_the_hub() {
        use CanTransport::*;
        assert_eq!(resolve(Auto, &offer(true, true, true)), Ok(Kernel));
        assert_eq!(
            resolve(Auto, &offer(false, true, true)),
            Ok(Emulated),
            "no kernel path (native)"
        );
        assert_eq!(resolve(Auto, &offer(true, false, true)), Ok(Emulated));
        assert_eq!(resolve(Auto, &offer(true, false, false)), Ok(Hub));
        assert_eq!(resolve(Hub, &offer(true, true, true)), Ok(Hub));
        let e = resolve(Kernel, &offer(true, false, true))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no AF_CAN"), "{e}");
        let e = resolve(Emulated, &offer(true, true, false))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no user_notif"), "{e}");
        assert!("vxcan".parse::<CanTransport>().is_err());
        assert_eq!("emulated".parse::<CanTransport>(), Ok(Emulated));
    }
}
