//! The container environment: each container of a pod runs in a Docker container started through
//! testcontainers-rs, from a FROM-scratch image holding only the workload's static binary.
//!
//! * **Images** are built locally, never pulled: `agl-parity/<binary>:<content hash>` (rebuilt only when the
//!   binary changes) and additionally tagged with the manifest's own `image` reference.
//! * **CAN**: on hosts without kernel CAN (like these), the run's state directory is bind-mounted at
//!   `/run/agl-parity`, and each container gets a *slot* directory there whose `<bus>.sock` symlinks point
//!   at the scenario's hub socket, so `CAN_BUS=unix:/run/agl-parity/slots/<n>/<bus>.sock`. Where the host
//!   kernel has CAN, [`super::vxcan`] describes the vxcan alternative. Containers have no network at all.
//! * **Manifest**: command/args, env, restart policy (the shared [`Supervisor`] restarts the container, so
//!   restarts behave exactly as natively), readiness, memory and CPU limits (cgroup limits of the container).
//! * **Reuse**: a container whose workload was stopped cleanly goes back to a pool and is started again by the
//!   next scenario with the same spec (no create); its symlinks are re-pointed to the new scenario's bus.
//! * **Cleanup**: every container carries `agl.parity.run=<run-id>`; dropping a running container removes it,
//!   the pool is emptied at the end of the run, and [`kind`]'s sweep removes containers of dead runs.
//!
//! Layout: [`transport`] (how CAN reaches the container) and [`image`] (building and tagging the images) at
//! the bottom, [`pool`] (reuse between scenarios) above them, [`launcher`] (a container's incarnations,
//! through `pod-init`) on top of those; this file holds the registry entry, the probe, the sweep and
//! [`ContainerEnv`].
//!
//! Docker here is Debian's docker.io 20.10 (API 1.41). bollard is pinned to 0.21.1, which sends unversioned
//! request paths and so works against it; a bollard that sends `/v1.53/…` would be refused by this engine.

mod image;
mod launcher;
mod pool;
mod transport;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bollard::query_parameters::{ListContainersOptions, RemoveContainerOptions};
use bollard::Docker;

use super::contract::{
    no_preflight, single_column, DeployRequest, EnvKind, Environment, Instance, ProbeFailure, RunContext,
    Setup, Transport,
};
use crate::error::InfraError;
use crate::manifest::Enforcement;
use image::Images;
use launcher::{short, ContainerLauncher, Shared};
pub use launcher::{RUN_LABEL, STATE_LABEL};
use pool::{spec_key, Pool, Resident};
pub use transport::ContainerCan;

const HOW_TO_START: &str =
    "install and start a Docker engine: `apt-get install -y docker.io && (dockerd >/var/log/dockerd.log 2>&1 &)` \
     or `systemctl start docker`";

/// Registry entry.
pub fn kind() -> EnvKind {
    EnvKind {
        name: "container",
        summary: "Docker containers (testcontainers-rs) from FROM-scratch images of the workload binaries",
        probe: || Box::pin(probe()),
        columns: single_column,
        create: |_column, run, _setup| Ok(Arc::new(ContainerEnv::new(run, reuse_from_env())?)),
        sweep: sweep_entry,
        preflight: no_preflight,
    }
}

fn sweep_entry(live: Vec<String>, _setup: Setup<'_>) -> futures::future::BoxFuture<'_, Vec<String>> {
    Box::pin(sweep(live))
}

/// `AGL_PARITY_CONTAINER_REUSE=0` turns container reuse off.
fn reuse_from_env() -> bool {
    std::env::var("AGL_PARITY_CONTAINER_REUSE")
        .map(|v| v != "0")
        .unwrap_or(true)
}

/// The Docker engine cannot be reached (no client configuration, no socket).
#[derive(Debug, thiserror::Error)]
#[error("cannot reach the Docker engine: {0}; {how}", how = HOW_TO_START)]
struct DockerUnreachable(bollard::errors::Error);

fn connect() -> Result<Docker, DockerUnreachable> {
    Docker::connect_with_local_defaults().map_err(DockerUnreachable)
}

/// Whether a Docker engine answers, and which.
pub async fn probe() -> Result<String, ProbeFailure> {
    let docker = connect().map_err(|e| ProbeFailure::new(e.to_string()))?;
    match tokio::time::timeout(std::time::Duration::from_secs(5), docker.version()).await {
        Ok(Ok(v)) => Ok(format!(
            "Docker Engine {} (API {}), images built locally FROM scratch",
            v.version.unwrap_or_default(),
            v.api_version.unwrap_or_default()
        )),
        Ok(Err(e)) => Err(ProbeFailure::new(format!(
            "no Docker engine answers ({e}); {HOW_TO_START}"
        ))),
        Err(_) => Err(ProbeFailure::new(format!(
            "the Docker engine did not answer within 5 s; {HOW_TO_START}"
        ))),
    }
}

/// Removes containers of runs that are not alive.
pub async fn sweep(live: Vec<String>) -> Vec<String> {
    let Ok(docker) = connect() else { return Vec::new() };
    let mut filters = HashMap::new();
    let root = crate::cleanup::state_root().display().to_string();
    filters.insert(
        "label".to_string(),
        vec![RUN_LABEL.to_string(), format!("{STATE_LABEL}={root}")],
    );
    let options = ListContainersOptions {
        all: true,
        filters: Some(filters),
        ..Default::default()
    };
    let Ok(Ok(list)) = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        docker.list_containers(Some(options)),
    )
    .await
    else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for c in list {
        let run = c
            .labels
            .as_ref()
            .and_then(|l| l.get(RUN_LABEL))
            .cloned()
            .unwrap_or_default();
        if live.contains(&run) {
            continue;
        }
        let Some(id) = c.id else { continue };
        let opts = RemoveContainerOptions {
            force: true,
            v: true,
            ..Default::default()
        };
        if docker.remove_container(&id, Some(opts)).await.is_ok() {
            let name = c.names.and_then(|n| n.first().cloned()).unwrap_or_default();
            removed.push(format!("removed container {} {name} of run {run}", short(&id)));
        }
    }
    removed
}

/// Docker containers through testcontainers.
pub struct ContainerEnv {
    shared: Arc<Shared>,
    images: Images,
}

impl ContainerEnv {
    fn new(run: &RunContext, reuse: bool) -> Result<ContainerEnv, InfraError> {
        let docker = connect().map_err(|e| InfraError::Unavailable {
            env: "container".into(),
            reason: e.to_string(),
        })?;
        let transport =
            crate::env::socketcan::resolve(run.can_transport, &crate::env::socketcan::Offer::here(true))
                .map_err(|e| InfraError::Unavailable {
                    env: "container".into(),
                    reason: e.to_string(),
                })?;
        let can = ContainerCan::from_transport(transport);
        Ok(ContainerEnv {
            shared: Arc::new(Shared {
                docker,
                can,
                run_id: run.run_id.clone(),
                state_dir: run.state_dir.clone(),
                pool: Pool::new(reuse),
                slots: AtomicUsize::new(0),
                names: AtomicUsize::new(0),
            }),
            images: Images::new(),
        })
    }
}

#[async_trait]
impl Environment for ContainerEnv {
    fn name(&self) -> &str {
        "container"
    }

    /// cgroup memory and CPU limits, a read-only root filesystem, bind-mounted volumes.
    fn enforces(&self) -> Vec<Enforcement> {
        crate::manifest::fields::enforced_by("container")
    }

    fn transport(&self) -> Transport {
        match self.shared.can {
            ContainerCan::Emulated => format!(
                "{} (pod-init hands the listener out)",
                crate::env::socketcan::EMULATED
            ),
            ContainerCan::SocketMount => "userspace hub, Unix socket bind-mounted into the container".into(),
            ContainerCan::Vxcan => {
                "vxcan pair into the container's network namespace, bridged to the hub".into()
            }
        }
    }

    async fn prepare(&self, run: &RunContext) -> Result<(), InfraError> {
        tokio::time::timeout(std::time::Duration::from_secs(10), self.shared.docker.ping())
            .await
            .map_err(|_| InfraError::Unavailable {
                env: "container".into(),
                reason: format!("no answer; {HOW_TO_START}"),
            })?
            .map_err(|e| InfraError::Unavailable {
                env: "container".into(),
                reason: format!("{e}; {HOW_TO_START}"),
            })?;
        // The project's executables (a project of container images only needs none) and pod-init.
        run.catalog.prepare().await?;
        crate::helpers::Helper::PodInit.path().await.map(|_| ())
    }

    async fn deploy(
        &self,
        run: &RunContext,
        request: DeployRequest<'_>,
    ) -> Result<Vec<Instance>, InfraError> {
        let pod = request.workload;
        let pod_init = crate::helpers::Helper::PodInit.path().await?;
        let links = request.unix_sockets("container")?;
        let volumes = request.scratch_dir.join(format!("{}-volumes", pod.name));
        let mut instances = Vec::new();
        for container in &pod.containers {
            let image = self.images.image_for(&self.shared.docker, run, container).await?;
            let mounts = crate::volumes::materialise(pod, container, &volumes)?;
            let interfaces: Vec<String> = links.iter().map(|(bus, _)| pod.interface_of(bus)).collect();
            let key = format!(
                "{}|{interfaces:?}",
                spec_key(&image.reference, &image.argv, container, &links, &mounts)
            );
            let logs = request.container_log(&container.name)?;
            let launcher = Arc::new(ContainerLauncher {
                shared: self.shared.clone(),
                pod: pod.name.clone(),
                spec: container.clone(),
                image,
                pod_init: pod_init.clone(),
                links: links.clone(),
                interfaces,
                mounts,
                key,
                held: tokio::sync::Mutex::new(None),
                idle: Arc::new(AtomicBool::new(true)),
                id: Mutex::new(String::new()),
            });
            instances.push(Instance::start(pod, container, launcher, logs));
        }
        Ok(instances)
    }

    async fn finish(&self, _run: &RunContext) {
        let pooled: Vec<Resident> = self.shared.pool.drain();
        for p in pooled {
            let _ = p.container.rm().await;
        }
    }
}
