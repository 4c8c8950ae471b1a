//! The native environment: each container of a pod runs as a host process on the userspace bus.
//!
//! The workload joins its bus through the hub's Unix socket (`CAN_BUS=unix:/…/<bus>.sock`). Processes get a
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
use crate::cleanup::RUN_MARKER_ENV;
use crate::error::InfraError;

/// Registry entry.
pub fn kind() -> EnvKind {
    EnvKind {
        name: "native",
        summary: "host processes on the userspace CAN bus (Unix socket)",
        probe: || {
            Box::pin(async {
                Ok("host processes; CAN through the userspace hub (no kernel CAN needed)".into())
            })
        },
        columns: single_column,
        create: |_column, _run, _setup| Ok(Arc::new(NativeEnv)),
        sweep: sweep_nothing,
        preflight: no_preflight,
    }
}

/// Host processes on the userspace bus.
pub struct NativeEnv;

#[async_trait]
impl Environment for NativeEnv {
    fn name(&self) -> &str {
        "native"
    }

    fn transport(&self) -> Transport {
        "userspace hub, Unix socket".into()
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
        let bus_env = bus_env(&endpoints);
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
            });
            instances.push(Instance::start(pod, container, launcher, logs));
        }
        Ok(instances)
    }
}
