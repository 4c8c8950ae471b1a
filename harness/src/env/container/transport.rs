//! How CAN reaches workloads in containers: the environment's reading of `--can-transport`
//! ([`crate::env::socketcan`]).

use crate::env::socketcan::CanTransport;

/// How CAN reaches workloads in containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerCan {
    /// SocketCAN emulated for the workload: `pod-init` installs the seccomp filter before it execs the
    /// workload and hands the listener to the harness, which answers from outside the container (no
    /// privileges, no kernel module).
    Emulated,
    /// The hub's Unix socket, bind-mounted (this project's bus client only).
    SocketMount,
    /// A vxcan pair per bus into the container's network namespace, bridged to the hub (needs kernel CAN
    /// and CAP_NET_ADMIN; see [`crate::env::vxcan`]).
    Vxcan,
}

impl ContainerCan {
    /// The container form of a resolved transport (never `Auto`).
    pub fn from_transport(transport: CanTransport) -> ContainerCan {
        match transport {
            CanTransport::Kernel => ContainerCan::Vxcan,
            CanTransport::Hub => ContainerCan::SocketMount,
            CanTransport::Emulated | CanTransport::Auto => ContainerCan::Emulated,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_transport_has_its_container_form() {
        assert_eq!(
            ContainerCan::from_transport(CanTransport::Kernel),
            ContainerCan::Vxcan
        );
        assert_eq!(
            ContainerCan::from_transport(CanTransport::Hub),
            ContainerCan::SocketMount
        );
        assert_eq!(
            ContainerCan::from_transport(CanTransport::Emulated),
            ContainerCan::Emulated
        );
    }
}
