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
//! Docker here is Debian's docker.io 20.10 (API 1.41). bollard is pinned to 0.21.1, which sends unversioned
//! request paths and so works against it; a bollard that sends `/v1.53/…` would be refused by this engine.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

use async_trait::async_trait;
use bollard::query_parameters::{ListContainersOptions, RemoveContainerOptions, TagImageOptions};
use bollard::Docker;
use futures::StreamExt;
use testcontainers::core::Mount;
use testcontainers::runners::{AsyncBuilder, AsyncRunner};
use testcontainers::{ContainerAsync, GenericBuildableImage, GenericImage, ImageExt};

use super::contract::{
    no_preflight, single_column, DeployRequest, EnvKind, Environment, Instance, ProbeFailure, RunContext,
    Setup, Transport,
};
use crate::cleanup::RUN_MARKER_ENV;
use crate::error::InfraError;
use crate::logs::LogSink;
use crate::manifest::ContainerSpec;
use crate::supervisor::{ExitInfo, Launcher, Process, StopSignal};

/// Label carrying the run id on every container of a run.
pub const RUN_LABEL: &str = "agl.parity.run";
/// Label carrying the state root of the harness that owns the run: sweeps only touch their own root's runs,
/// so harnesses with different state roots (parallel CI jobs, tests) leave each other alone.
pub const STATE_LABEL: &str = "agl.parity.state";
/// Where the run's state directory appears inside containers.
const RUN_MOUNT: &str = "/run/agl-parity";
const HOW_TO_START: &str =
    "install and start a Docker engine: `apt-get install -y docker.io && (dockerd >/var/log/dockerd.log 2>&1 &)` \
     or `systemctl start docker`";

/// Registry entry.
pub fn kind() -> EnvKind {
    EnvKind {
        name: "container",
        summary: "Docker containers (testcontainers-rs) from FROM-scratch images of the workload binaries",
        needs_lab: false,
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

fn connect() -> Result<Docker, String> {
    Docker::connect_with_local_defaults()
        .map_err(|e| format!("cannot reach the Docker engine: {e}; {HOW_TO_START}"))
}

/// Whether a Docker engine answers, and which.
pub async fn probe() -> Result<String, ProbeFailure> {
    let docker = connect().map_err(ProbeFailure::new)?;
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

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// FNV-1a over the file: a stable content hash for image tags.
fn content_hash(path: &Path) -> std::io::Result<String> {
    let bytes = std::fs::read(path)?;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    Ok(format!("{h:016x}"))
}

/// A running container whose PID 1 is `pod-init`, waiting to start workload incarnations.
struct Resident {
    container: ContainerAsync<GenericImage>,
    /// Host path of the container's slot directory (bus symlinks, `init.sock`).
    slot: PathBuf,
    /// Slot number (names the vxcan pairs).
    slot_no: usize,
    /// With kernel CAN: the vxcan pairs in the container's namespace, one per bus.
    vxcan: Vec<super::vxcan::VxcanPlan>,
    /// With kernel CAN: the bridges from the host ends of the pairs to the current scenario's hubs.
    bridges: Vec<super::vxcan::CanBridge>,
}

/// How CAN reaches workloads in containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerCan {
    /// The hub's Unix socket, bind-mounted (works everywhere).
    SocketMount,
    /// A vxcan pair per bus into the container's network namespace, bridged to the hub (needs kernel CAN
    /// and CAP_NET_ADMIN; see [`super::vxcan`]).
    Vxcan,
}

/// The transport to use: vxcan where the kernel has CAN, unless `AGL_PARITY_CONTAINER_CAN=socket`;
/// `AGL_PARITY_CONTAINER_CAN=vxcan` insists on vxcan.
pub fn container_can(kernel_can: bool, setting: Option<&str>) -> Result<ContainerCan, String> {
    match (setting, kernel_can) {
        (Some("socket"), _) | (None, false) => Ok(ContainerCan::SocketMount),
        (Some("vxcan"), true) | (None, true) => Ok(ContainerCan::Vxcan),
        (Some("vxcan"), false) => Err(
            "AGL_PARITY_CONTAINER_CAN=vxcan, but this kernel has no CAN support \
             (socket(AF_CAN) fails): `modprobe can can-raw vxcan`"
                .into(),
        ),
        (Some(other), _) => Err(format!(
            "AGL_PARITY_CONTAINER_CAN=`{other}`: expected `socket` or `vxcan`"
        )),
    }
}

/// A local image and the command line it runs under `pod-init`.
#[derive(Clone)]
struct LocalImage {
    reference: String,
    /// Entrypoint plus arguments, as `pod-init` executes them.
    argv: Vec<String>,
}

/// What the environment's instances share.
struct Shared {
    docker: Docker,
    can: ContainerCan,
    run_id: String,
    state_dir: PathBuf,
    reuse: bool,
    pool: Mutex<HashMap<String, Vec<Resident>>>,
    slots: AtomicUsize,
    names: AtomicUsize,
}

/// Docker containers through testcontainers.
pub struct ContainerEnv {
    shared: Arc<Shared>,
    images: tokio::sync::Mutex<HashMap<String, String>>,
}

impl ContainerEnv {
    fn new(run: &RunContext, reuse: bool) -> Result<ContainerEnv, InfraError> {
        let docker = connect().map_err(|reason| InfraError::Unavailable {
            env: "container".into(),
            reason,
        })?;
        let setting = std::env::var("AGL_PARITY_CONTAINER_CAN").ok();
        let can =
            container_can(vcan::kernel::kernel_has_can().is_ok(), setting.as_deref()).map_err(|reason| {
                InfraError::Unavailable {
                    env: "container".into(),
                    reason,
                }
            })?;
        Ok(ContainerEnv {
            shared: Arc::new(Shared {
                docker,
                can,
                run_id: run.run_id.clone(),
                state_dir: run.state_dir.clone(),
                reuse,
                pool: Mutex::new(HashMap::new()),
                slots: AtomicUsize::new(0),
                names: AtomicUsize::new(0),
            }),
            images: tokio::sync::Mutex::new(HashMap::new()),
        })
    }

    /// The local image of a container and its command line: our images are built from the workload binary
    /// (content-hash tag); an image that is not ours is usable when the engine already has it.
    async fn image_for(&self, run: &RunContext, spec: &ContainerSpec) -> Result<LocalImage, InfraError> {
        let docker = &self.shared.docker;
        let image = &spec.image;
        let binary = match run.catalog.binary_for(image).await {
            Ok(b) => b,
            Err(e) => {
                let Ok(inspect) = docker.inspect_image(&image.to_string()).await else {
                    return Err(e);
                };
                let config = inspect.config.unwrap_or_default();
                let mut argv = if spec.command.is_empty() {
                    config.entrypoint.unwrap_or_default()
                } else {
                    spec.command.clone()
                };
                argv.extend(if spec.args.is_empty() {
                    config.cmd.unwrap_or_default()
                } else {
                    spec.args.clone()
                });
                return Ok(LocalImage {
                    reference: image.to_string(),
                    argv,
                });
            }
        };
        let entry = format!("/{}", image.binary_name());
        let mut argv = vec![entry.clone()];
        argv.extend(super::launcher::argv_for(spec, &binary)?.into_iter().skip(1));
        let mut images = self.images.lock().await;
        if let Some(reference) = images.get(&image.to_string()) {
            return Ok(LocalImage {
                reference: reference.clone(),
                argv,
            });
        }
        let build_err = |reason: String| InfraError::Build {
            workload: image.to_string(),
            reason,
        };
        let hash = content_hash(&binary).map_err(|e| build_err(format!("{}: {e}", binary.display())))?;
        let name = format!("agl-parity/{}", image.binary_name());
        let local = format!("{name}:{hash}");
        if docker.inspect_image(&local).await.is_err() {
            let started = Instant::now();
            let dockerfile = format!(
                "FROM scratch\nCOPY workload {entry}\nLABEL org.opencontainers.image.title=\"{}\"\nENTRYPOINT [\"{entry}\"]\n",
                image.binary_name()
            );
            let _built = GenericBuildableImage::new(name.clone(), hash.clone())
                .with_dockerfile_string(dockerfile)
                .with_file(binary.clone(), "workload")
                .build_image()
                .await
                .map_err(|e| build_err(format!("docker build of {local} failed: {e}")))?;
            tracing::info!(image = %local, ms = started.elapsed().as_millis() as u64, "built image");
        }
        let tag = TagImageOptions {
            repo: Some(image.repository.clone()),
            tag: Some(image.tag.clone()),
        };
        docker
            .tag_image(&local, Some(tag))
            .await
            .map_err(|e| build_err(format!("cannot tag {local} as {image}: {e}")))?;
        images.insert(image.to_string(), local.clone());
        Ok(LocalImage {
            reference: local,
            argv,
        })
    }
}

#[async_trait]
impl Environment for ContainerEnv {
    fn name(&self) -> &str {
        "container"
    }

    fn transport(&self) -> Transport {
        match self.shared.can {
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
        run.catalog.ensure_built().await.map(|_| ())
    }

    async fn deploy(
        &self,
        run: &RunContext,
        request: DeployRequest<'_>,
    ) -> Result<Vec<Instance>, InfraError> {
        let pod = request.workload;
        let mut instances = Vec::new();
        for container in &pod.containers {
            let image = self.image_for(run, container).await?;
            let pod_init = run.catalog.ensure_built().await?.join("pod-init");
            let links = request.unix_sockets("container")?;
            let key = spec_key(&image.reference, &image.argv, container, &links);
            let logs = request.container_log(&container.name)?;
            let launcher = Arc::new(ContainerLauncher {
                shared: self.shared.clone(),
                pod: pod.name.clone(),
                spec: container.clone(),
                image,
                pod_init,
                links,
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
        let pooled: Vec<Resident> = match self.shared.pool.lock() {
            Ok(mut pool) => pool.drain().flat_map(|(_, v)| v).collect(),
            Err(_) => Vec::new(),
        };
        for p in pooled {
            let _ = p.container.rm().await;
        }
    }
}

/// Containers with the same key are interchangeable between scenarios.
fn spec_key(image: &str, cmd: &[String], spec: &ContainerSpec, links: &[(String, PathBuf)]) -> String {
    let mut env = spec.env.clone();
    env.sort();
    let buses: Vec<&str> = links.iter().map(|(b, _)| b.as_str()).collect();
    format!(
        "{image}|{cmd:?}|{env:?}|{:?}|{:?}|{buses:?}",
        spec.limits.memory_bytes, spec.limits.cpu_millis
    )
}

/// Starts incarnations of one container. The container itself is resident: created once (or taken from
/// the pool of a previous scenario) with `pod-init` as PID 1, which starts each workload incarnation on
/// request, so a restart or a reused container costs a process spawn, not an engine start.
struct ContainerLauncher {
    shared: Arc<Shared>,
    pod: String,
    spec: ContainerSpec,
    image: LocalImage,
    /// The `pod-init` binary, bind-mounted into the container.
    pod_init: PathBuf,
    links: Vec<(String, PathBuf)>,
    key: String,
    held: tokio::sync::Mutex<Option<Resident>>,
    /// No workload incarnation is running in the held container (it may go back to the pool).
    idle: Arc<AtomicBool>,
    id: Mutex<String>,
}

/// Where `pod-init` sits inside containers.
const POD_INIT: &str = "/agl-pod-init";

impl ContainerLauncher {
    fn err(&self, reason: String) -> InfraError {
        InfraError::Launch {
            workload: format!("{}/{}", self.pod, self.spec.name),
            reason,
        }
    }

    /// Points the slot's `<bus>.sock` symlinks at this scenario's hub sockets (relative, so they resolve
    /// inside the container where the state directory is mounted at `/run/agl-parity`).
    fn link_slot(&self, slot: &Path) -> Result<(), InfraError> {
        std::fs::create_dir_all(slot).map_err(|e| self.err(format!("{}: {e}", slot.display())))?;
        for (bus, socket) in &self.links {
            let rel = socket.strip_prefix(&self.shared.state_dir).map_err(|_| {
                self.err(format!(
                    "bus socket {} is outside the run directory",
                    socket.display()
                ))
            })?;
            let link = slot.join(format!("{bus}.sock"));
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(Path::new("../..").join(rel), &link)
                .map_err(|e| self.err(format!("{}: {e}", link.display())))?;
        }
        Ok(())
    }

    async fn create(&self) -> Result<Resident, InfraError> {
        let n = self.shared.slots.fetch_add(1, Ordering::SeqCst);
        let slot = self.shared.state_dir.join("slots").join(n.to_string());
        self.link_slot(&slot)?;
        let slot_in_container = format!("{RUN_MOUNT}/slots/{n}");
        let (repo, tag) = self
            .image
            .reference
            .rsplit_once(':')
            .unwrap_or((&self.image.reference, "latest"));
        let name = format!(
            "agl-parity-{}-{}",
            self.shared.run_id,
            self.shared.names.fetch_add(1, Ordering::SeqCst)
        );
        let mut request = GenericImage::new(repo, tag)
            .with_entrypoint(POD_INIT)
            .with_cmd(self.image.argv.clone())
            .with_container_name(name)
            .with_label(RUN_LABEL, self.shared.run_id.clone())
            .with_label(STATE_LABEL, crate::cleanup::state_root().display().to_string())
            .with_label("agl.parity.pod", self.pod.clone())
            .with_label("agl.parity.container", self.spec.name.clone())
            .with_mount(Mount::bind_mount(
                self.shared.state_dir.display().to_string(),
                RUN_MOUNT,
            ))
            .with_mount(Mount::bind_mount(self.pod_init.display().to_string(), POD_INIT))
            .with_env_var(RUN_MARKER_ENV, self.shared.run_id.clone())
            .with_env_var("AGL_POD_INIT_SOCKET", format!("{slot_in_container}/init.sock"));
        for (k, v) in &self.spec.env {
            request = request.with_env_var(k.clone(), v.clone());
        }
        let endpoints: Vec<(String, String)> = self
            .links
            .iter()
            .enumerate()
            .map(|(i, (bus, _))| match self.shared.can {
                ContainerCan::SocketMount => (bus.clone(), format!("unix:{slot_in_container}/{bus}.sock")),
                ContainerCan::Vxcan => (bus.clone(), format!("socketcan:can{i}")),
            })
            .collect();
        for (k, v) in super::contract::bus_env(&endpoints) {
            request = request.with_env_var(k, v);
        }
        let limits = self.spec.limits;
        let request = request.with_host_config_modifier(move |hc| {
            hc.network_mode = Some("none".into());
            if let Some(bytes) = limits.memory_bytes {
                hc.memory = Some(bytes as i64);
                hc.memory_swap = Some(bytes as i64);
            }
            if let Some(millis) = limits.cpu_millis {
                hc.nano_cpus = Some(millis as i64 * 1_000_000);
            }
        });
        let container = request
            .start()
            .await
            .map_err(|e| self.err(format!("docker could not start {}: {e}", self.image.reference)))?;
        let mut resident = Resident {
            container,
            slot,
            slot_no: n,
            vxcan: Vec::new(),
            bridges: Vec::new(),
        };
        if self.shared.can == ContainerCan::Vxcan {
            // pod-init holds the namespace and starts the workload only on request, so the interfaces exist
            // before the workload opens `can0`.
            let inspect = self
                .shared
                .docker
                .inspect_container(resident.container.id(), None)
                .await
                .map_err(|e| self.err(format!("docker inspect: {e}")))?;
            let pid = inspect.state.and_then(|st| st.pid).unwrap_or(0);
            if pid <= 0 {
                return Err(self.err("the container has no process to hold its network namespace".into()));
            }
            for i in 0..self.links.len() {
                let plan = super::vxcan::VxcanPlan::new(pid as u32, resident.slot_no, i);
                super::vxcan::run_commands(&plan.setup())
                    .await
                    .map_err(|e| self.err(format!("vxcan: {e}")))?;
                resident.vxcan.push(plan);
            }
        }
        Ok(resident)
    }

    /// With vxcan: (re)connects the host ends of the container's pairs to this scenario's hubs.
    fn bridge(&self, resident: &mut Resident) -> Result<(), InfraError> {
        resident.bridges.clear();
        for (plan, (_, socket)) in resident.vxcan.iter().zip(&self.links) {
            let bridge =
                super::vxcan::CanBridge::start(&plan.host_endpoint(), &vcan::Endpoint::Unix(socket.clone()))
                    .map_err(|e| self.err(format!("vxcan bridge {}: {e}", plan.host_if)))?;
            resident.bridges.push(bridge);
        }
        Ok(())
    }

    fn take_pooled(&self) -> Option<Resident> {
        if !self.shared.reuse {
            return None;
        }
        self.shared.pool.lock().ok()?.get_mut(&self.key)?.pop()
    }

    /// Connects to the container's `pod-init`, waiting (bounded) for it to listen.
    async fn connect_init(&self, resident: &Resident) -> Result<tokio::net::UnixStream, InfraError> {
        let path = resident.slot.join("init.sock");
        let deadline = Instant::now() + std::time::Duration::from_secs(15);
        loop {
            match tokio::net::UnixStream::connect(&path).await {
                Ok(s) => return Ok(s),
                Err(e) if Instant::now() >= deadline => {
                    return Err(self.err(format!(
                        "pod-init of container {} did not answer: {e}",
                        short(resident.container.id())
                    )));
                }
                // pod-init is starting inside the container: poll for its socket.
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(5)).await,
            }
        }
    }
}

#[async_trait]
impl Launcher for ContainerLauncher {
    async fn launch(&self, logs: &LogSink) -> Result<Box<dyn Process>, InfraError> {
        let mut held = self.held.lock().await;
        let how = match held.as_ref() {
            Some(_) => "restarting in",
            None => match self.take_pooled() {
                Some(r) => {
                    self.link_slot(&r.slot)?;
                    *held = Some(r);
                    "reusing"
                }
                None => {
                    *held = Some(self.create().await?);
                    "created"
                }
            },
        };
        if how != "restarting in" {
            if let Some(r) = held.as_mut() {
                self.bridge(r)?;
            }
        }
        let resident = held.as_ref().ok_or_else(|| self.err("no container".into()))?;
        let id = resident.container.id().to_string();
        if let Ok(mut slot) = self.id.lock() {
            slot.clone_from(&id);
        }
        let stream = match self.connect_init(resident).await {
            Ok(s) => s,
            Err(e) => {
                // A broken container: forget it, so the next launch creates a new one.
                *held = None;
                return Err(e);
            }
        };
        let (read, mut write) = stream.into_split();
        let mut lines = tokio::io::BufReader::new(read).lines();
        write
            .write_all(b"start\n")
            .await
            .map_err(|e| self.err(format!("pod-init: {e}")))?;
        let reply = lines
            .next_line()
            .await
            .map_err(|e| self.err(format!("pod-init: {e}")))?
            .unwrap_or_default();
        let Some(pid) = reply.strip_prefix("started ") else {
            return Err(self.err(format!("pod-init could not start the workload: {reply}")));
        };
        self.idle.store(false, Ordering::SeqCst);
        logs.note(&format!("{how} container {}: workload pid {pid}", short(&id)));
        Ok(Box::new(ContainerProcess {
            lines,
            write,
            logs: logs.clone(),
            idle: self.idle.clone(),
            ended: None,
        }))
    }

    async fn exec(&self, command: &[String]) -> Result<bool, InfraError> {
        let id = self.id.lock().map(|id| id.clone()).unwrap_or_default();
        if id.is_empty() {
            return Ok(false);
        }
        let docker = &self.shared.docker;
        let probe_err = |e: bollard::errors::Error| self.err(format!("exec probe: {e}"));
        let config = bollard::models::ExecConfig {
            cmd: Some(command.to_vec()),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            ..Default::default()
        };
        let exec = docker.create_exec(&id, config).await.map_err(probe_err)?;
        // Attached: the output stream ends when the command does.
        if let bollard::exec::StartExecResults::Attached { mut output, .. } =
            docker.start_exec(&exec.id, None).await.map_err(probe_err)?
        {
            while output.next().await.is_some() {}
        }
        let inspect = docker.inspect_exec(&exec.id).await.map_err(probe_err)?;
        Ok(inspect.exit_code == Some(0))
    }
}

impl Drop for ContainerLauncher {
    fn drop(&mut self) {
        let Some(resident) = self.held.get_mut().take() else {
            return;
        };
        if self.shared.reuse && self.idle.load(Ordering::SeqCst) {
            // The workload ended cleanly: keep the container for the next scenario with the same spec.
            if let Ok(mut pool) = self.shared.pool.lock() {
                pool.entry(self.key.clone()).or_default().push(resident);
                return;
            }
        }
        // Dropping a ContainerAsync removes the container (forced).
        drop(resident);
    }
}

/// One workload incarnation inside a resident container, as `pod-init` reports it.
struct ContainerProcess {
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::net::unix::OwnedReadHalf>>,
    write: tokio::net::unix::OwnedWriteHalf,
    logs: LogSink,
    idle: Arc<AtomicBool>,
    ended: Option<ExitInfo>,
}

#[async_trait]
impl Process for ContainerProcess {
    async fn wait(&mut self) -> ExitInfo {
        if let Some(e) = &self.ended {
            return e.clone();
        }
        let exit = loop {
            match self.lines.next_line().await {
                Ok(Some(line)) => {
                    if let Some(text) = line.strip_prefix("out ").or_else(|| line.strip_prefix("err ")) {
                        self.logs.push(text);
                        continue;
                    }
                    if let Some(code) = line.strip_prefix("exited ") {
                        let code = code.split_whitespace().next().and_then(|c| c.parse().ok());
                        self.idle.store(true, Ordering::SeqCst);
                        break ExitInfo { code, signal: None };
                    }
                    if let Some(sig) = line.strip_prefix("killed ") {
                        self.idle.store(true, Ordering::SeqCst);
                        break ExitInfo {
                            code: None,
                            signal: sig.trim().parse().ok(),
                        };
                    }
                    // `ok` / `error …` answers to signal requests.
                }
                // pod-init or the container is gone: the container is not reusable.
                _ => {
                    break ExitInfo {
                        code: None,
                        signal: None,
                    }
                }
            }
        };
        self.ended = Some(exit.clone());
        exit
    }

    async fn signal(&mut self, signal: StopSignal) -> Result<(), InfraError> {
        let number = match signal {
            StopSignal::Terminate => libc::SIGTERM,
            StopSignal::Kill => libc::SIGKILL,
        };
        self.write
            .write_all(format!("signal {number}\n").as_bytes())
            .await
            .map_err(|e| InfraError::PodInit(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::ImageRef;

    /// A container spec of image `agl/x:1` with environment `env`.
    fn spec(env: &[(&str, &str)]) -> ContainerSpec {
        ContainerSpec {
            name: "c".into(),
            image: ImageRef {
                repository: "agl/x".into(),
                tag: "1".into(),
            },
            command: vec![],
            args: vec![],
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            limits: Default::default(),
            requests: Default::default(),
            readiness: None,
        }
    }

    /// A launcher whose bus sockets are `links`, in a run directory `state`.
    fn launcher(state: &Path, links: Vec<(String, PathBuf)>) -> ContainerLauncher {
        ContainerLauncher {
            shared: Arc::new(Shared {
                docker: Docker::connect_with_local_defaults().expect("client (no connection is made)"),
                can: ContainerCan::SocketMount,
                run_id: "r".into(),
                state_dir: state.to_path_buf(),
                reuse: true,
                pool: Mutex::new(HashMap::new()),
                slots: AtomicUsize::new(0),
                names: AtomicUsize::new(0),
            }),
            pod: "hvac".into(),
            spec: spec(&[]),
            image: LocalImage {
                reference: "agl/x:1".into(),
                argv: vec!["/x".into()],
            },
            pod_init: PathBuf::from("/nonexistent/pod-init"),
            links,
            key: String::new(),
            held: tokio::sync::Mutex::new(None),
            idle: Arc::new(AtomicBool::new(true)),
            id: Mutex::new(String::new()),
        }
    }

    #[test]
    fn slot_links_resolve_inside_the_container_and_bad_sockets_are_named() {
        let state = tempfile::tempdir().unwrap();
        let socket = state.path().join("container-s3/vehicle.sock");
        let l = launcher(state.path(), vec![("vehicle".into(), socket)]);
        let slot = state.path().join("slots/7");
        l.link_slot(&slot).unwrap();
        let target = std::fs::read_link(slot.join("vehicle.sock")).unwrap();
        // Relative, so that /run/agl-parity/slots/7/vehicle.sock -> /run/agl-parity/container-s3/vehicle.sock.
        assert_eq!(target, Path::new("../../container-s3/vehicle.sock"));

        let outside = launcher(
            state.path(),
            vec![("vehicle".into(), PathBuf::from("/elsewhere/vehicle.sock"))],
        );
        let err = outside.link_slot(&slot).unwrap_err().to_string();
        assert!(
            err.contains("hvac/c") && err.contains("outside the run directory"),
            "{err}"
        );
    }

    #[test]
    fn transport_follows_the_kernel_unless_told() {
        assert_eq!(container_can(false, None), Ok(ContainerCan::SocketMount));
        assert_eq!(container_can(true, None), Ok(ContainerCan::Vxcan));
        assert_eq!(container_can(true, Some("socket")), Ok(ContainerCan::SocketMount));
        assert!(container_can(false, Some("vxcan"))
            .unwrap_err()
            .contains("no CAN support"));
        assert!(container_can(true, Some("tcp")).is_err());
    }

    #[test]
    fn content_hash_is_stable_and_content_based() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        std::fs::write(&a, b"static binary").unwrap();
        let h1 = content_hash(&a).unwrap();
        assert_eq!(h1, content_hash(&a).unwrap());
        assert_eq!(h1.len(), 16);
        std::fs::write(&a, b"static binary!").unwrap();
        assert_ne!(h1, content_hash(&a).unwrap());
    }

    #[test]
    fn spec_keys_separate_different_containers() {
        let links = vec![("vehicle".to_string(), PathBuf::from("/s/a.sock"))];
        let other_links = vec![("vehicle".to_string(), PathBuf::from("/s/b.sock"))];
        let a = spec_key("img:1", &[], &spec(&[("A", "1"), ("B", "2")]), &links);
        let b = spec_key("img:1", &[], &spec(&[("B", "2"), ("A", "1")]), &other_links);
        assert_eq!(a, b, "env order and socket location do not matter");
        assert_ne!(a, spec_key("img:1", &[], &spec(&[("A", "2")]), &links));
        assert_ne!(
            a,
            spec_key("img:2", &[], &spec(&[("A", "1"), ("B", "2")]), &links)
        );
    }
}
