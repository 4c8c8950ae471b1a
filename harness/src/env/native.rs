//! The native environment: each container of a pod runs as a host process on the userspace bus.
//!
//! CAN ([`super::socketcan`]): by default the unmodified process gets SocketCAN emulated by seccomp user
//! notification: the interfaces its manifest names (`can0`, ...) bridged to the scenario's hubs, and
//! `CAN_BUS=socketcan:<interface>` for the framework's own workloads. With `--can-transport hub` (or
//! without seccomp user notification) the workload joins its bus through the hub's Unix socket
//! (`CAN_BUS=unix:/…/<bus>.sock`), which only this project's bus client can do. Native has no kernel CAN
//! path (it would need a network namespace per workload): `--can-transport kernel` is refused. Processes get a
//! clean environment (only what the manifest sets, the bus endpoints and the run marker), an empty working
//! directory of their own, and `PR_SET_PDEATHSIG` so they die with the harness; the run marker lets the next
//! run sweep up anything a SIGKILLed harness left behind. Resource limits are recorded, not enforced, here.

use std::sync::Arc;

use async_trait::async_trait;

use super::contract::{
    bus_env, no_preflight, single_column, sweep_nothing, DeployRequest, EnvKind, Environment, Instance,
    RunContext, Transport,
};
use super::launcher::{argv_for, HostLauncher};
use super::socketcan::{resolve, socketcan_endpoints, CanTransport, EmulationSpec, Offer, EMULATED};
use crate::cleanup::RUN_MARKER_ENV;
use crate::error::InfraError;

/// Registry entry.
pub fn kind() -> EnvKind {
    EnvKind {
        name: "native",
        summary:
            "host processes; SocketCAN emulated (seccomp) or the hub's socket, bridged to the userspace bus",
        probe: || {
            Box::pin(async {
                Ok(match vcan::emu::available() {
                    Ok(()) => "host processes; SocketCAN emulated by seccomp user notification (no kernel CAN needed)".into(),
                    Err(e) => format!("host processes; CAN through the hub's socket only ({e})"),
                })
            })
        },
        columns: single_column,
        create: |_column, run, _setup| {
            let transport =
                resolve(run.can_transport, &Offer::here(false)).map_err(|e| InfraError::Unavailable {
                    env: "native".into(),
                    reason: e.to_string(),
                })?;
            Ok(Arc::new(NativeEnv { transport }))
        },
        sweep: sweep_nothing,
        preflight: no_preflight,
    }
}

/// Host processes on the userspace bus.
pub struct NativeEnv {
    /// Emulated or hub (never kernel or auto).
    transport: CanTransport,
}

#[async_trait]
impl Environment for NativeEnv {
    fn name(&self) -> &str {
        "native"
    }

    fn transport(&self) -> Transport {
        match self.transport {
            CanTransport::Emulated => EMULATED.into(),
            _ => "userspace hub, Unix socket (this project's bus client only)".into(),
        }
    }

    async fn prepare(&self, run: &RunContext) -> Result<(), InfraError> {
        run.catalog.ensure_built().await.map(|_| ())
    }

    async fn deploy(
        &self,
        run: &RunContext,
        request: DeployRequest<'_>,
    ) -> Result<Vec<Instance>, InfraError> {
        let pod = request.workload;
        let endpoints: Vec<(String, String)> = request
            .unix_sockets("native")?
            .into_iter()
            .map(|(bus, path)| (bus, format!("unix:{}", path.display())))
            .collect();
        let emulated = self.transport == CanTransport::Emulated;
        let bus_env = if emulated {
            let buses: Vec<String> = endpoints.iter().map(|(b, _)| b.clone()).collect();
            bus_env(&socketcan_endpoints(pod, &buses))
        } else {
            bus_env(&endpoints)
        };
        let mut instances = Vec::new();
        for container in &pod.containers {
            let binary = run.catalog.binary_for(&container.image).await?;
            let argv = argv_for(container, &binary)?;
            let workdir = request
                .scratch_dir
                .join(format!("{}-{}", pod.name, container.name));
            std::fs::create_dir_all(&workdir).map_err(|e| InfraError::Launch {
                workload: pod.name.clone(),
                reason: format!("cannot create {}: {e}", workdir.display()),
            })?;
            let mut env = container.env.clone();
            env.extend(bus_env.iter().cloned());
            env.push((RUN_MARKER_ENV.to_string(), run.run_id.clone()));
            let logs = request.container_log(&container.name)?;
            let launcher = Arc::new(HostLauncher {
                name: container.name.clone(),
                binary,
                argv,
                env,
                workdir,
                emulation: if emulated {
                    Some(EmulationSpec::for_pod(
                        pod,
                        &endpoints,
                        format!("{}@native", container.image.binary_name()),
                    )?)
                } else {
                    None
                },
            });
            instances.push(Instance::start(pod, container, launcher, logs));
        }
        Ok(instances)
    }
}
