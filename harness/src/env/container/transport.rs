//! How CAN reaches workloads in containers: the choice between the hub's bind-mounted Unix socket and a
//! vxcan pair, from the kernel's CAN support and `AGL_PARITY_CONTAINER_CAN`.

/// How CAN reaches workloads in containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerCan {
    /// The hub's Unix socket, bind-mounted (works everywhere).
    SocketMount,
    /// A vxcan pair per bus into the container's network namespace, bridged to the hub (needs kernel CAN
    /// and CAP_NET_ADMIN; see [`crate::env::vxcan`]).
    Vxcan,
}

/// Why `AGL_PARITY_CONTAINER_CAN` cannot be followed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContainerCanError {
    #[error(
        "AGL_PARITY_CONTAINER_CAN=vxcan, but this kernel has no CAN support \
         (socket(AF_CAN) fails): `modprobe can can-raw vxcan`"
    )]
    NoKernelCan,
    #[error("AGL_PARITY_CONTAINER_CAN=`{0}`: expected `socket` or `vxcan`")]
    Unknown(String),
}

/// The transport to use: vxcan where the kernel has CAN, unless `AGL_PARITY_CONTAINER_CAN=socket`;
/// `AGL_PARITY_CONTAINER_CAN=vxcan` insists on vxcan.
pub fn container_can(kernel_can: bool, setting: Option<&str>) -> Result<ContainerCan, ContainerCanError> {
    match (setting, kernel_can) {
        (Some("socket"), _) | (None, false) => Ok(ContainerCan::SocketMount),
        (Some("vxcan"), true) | (None, true) => Ok(ContainerCan::Vxcan),
        (Some("vxcan"), false) => Err(ContainerCanError::NoKernelCan),
        (Some(other), _) => Err(ContainerCanError::Unknown(other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_follows_the_kernel_unless_told() {
        assert_eq!(container_can(false, None), Ok(ContainerCan::SocketMount));
        assert_eq!(container_can(true, None), Ok(ContainerCan::Vxcan));
        assert_eq!(container_can(true, Some("socket")), Ok(ContainerCan::SocketMount));
        assert!(container_can(false, Some("vxcan"))
            .unwrap_err()
            .to_string()
            .contains("no CAN support"));
        assert!(container_can(true, Some("tcp")).is_err());
    }
}
