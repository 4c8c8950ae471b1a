//! Workload incarnations in a container: the [`Launcher`] creates (or takes from the pool) a resident
//! container with `pod-init` as PID 1 and asks `pod-init` to start each incarnation; the [`Process`] follows
//! it through `pod-init`'s reports ([`agl_workloads::pod_init`]). With emulated SocketCAN, each incarnation's
//! seccomp listener comes from `pod-init` ahead of `started`, and the launcher serves it
//! ([`vcan::emu::Emulation`]) until the incarnation ends.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use agl_workloads::pod_init::{Command, Event, EventError, CAN_ENV, SOCKET_ENV, USER_ENV};
use async_trait::async_trait;
use bollard::Docker;
use futures::StreamExt;
use testcontainers::core::Mount;
use testcontainers::runners::AsyncRunner;
use testcontainers::{GenericImage, ImageExt};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

use super::image::LocalImage;
use super::pool::{Pool, Resident};
use super::transport::ContainerCan;
use crate::cleanup::RUN_MARKER_ENV;
use crate::env::contract::bus_env;
use crate::env::vxcan::{run_commands, CanBridge, VxcanPlan};
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
/// Where `pod-init` sits inside containers.
const POD_INIT: &str = "/agl-pod-init";

/// The short form of a container id, as `docker ps` shows it.
pub(super) fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// What the environment's instances share.
pub(super) struct Shared {
    pub(super) docker: Docker,
    pub(super) can: ContainerCan,
    pub(super) run_id: String,
    pub(super) state_dir: PathBuf,
    pub(super) pool: Pool,
    pub(super) slots: AtomicUsize,
    pub(super) names: AtomicUsize,
}

/// Starts incarnations of one container. The container itself is resident: created once (or taken from
/// the pool of a previous scenario) with `pod-init` as PID 1, which starts each workload incarnation on
/// request, so a restart or a reused container costs a process spawn, not an engine start.
pub(super) struct ContainerLauncher {
    pub(super) shared: Arc<Shared>,
    pub(super) pod: String,
    pub(super) spec: ContainerSpec,
    pub(super) image: LocalImage,
    /// The `pod-init` binary, bind-mounted into the container.
    pub(super) pod_init: PathBuf,
    pub(super) links: Vec<(String, PathBuf)>,
    /// The SocketCAN interface of each link's bus (emulated transport).
    pub(super) interfaces: Vec<String>,
    /// The pod's volumes this container mounts.
    pub(super) mounts: Vec<crate::volumes::HostMount>,
    pub(super) key: String,
    pub(super) held: tokio::sync::Mutex<Option<Resident>>,
    /// No workload incarnation is running in the held container (it may go back to the pool).
    pub(super) idle: Arc<AtomicBool>,
    pub(super) id: Mutex<String>,
}

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
            .with_env_var(SOCKET_ENV, format!("{slot_in_container}/init.sock"));
        for (k, v) in &self.spec.env {
            request = request.with_env_var(k.clone(), v.clone());
        }
        let security = self.spec.security;
        match (security.run_as_user, security.run_as_group) {
            (None | Some(0), _) if security.run_as_non_root => {
                // What a kubelet answers too: the images built here have no USER of their own.
                return Err(self.err(
                    "securityContext.runAsNonRoot is set but the container would run as root: give securityContext.runAsUser".into(),
                ));
            }
            (None, None) => {}
            (uid, gid) => {
                request =
                    request.with_env_var(USER_ENV, format!("{}:{}", uid.unwrap_or(0), gid.unwrap_or(0)));
            }
        }
        for m in &self.mounts {
            let mount = Mount::bind_mount(m.host.display().to_string(), m.path.clone());
            request = request.with_mount(if m.read_only {
                mount.with_access_mode(testcontainers::core::AccessMode::ReadOnly)
            } else {
                mount
            });
        }
        let endpoints: Vec<(String, String)> = self
            .links
            .iter()
            .enumerate()
            .map(|(i, (bus, _))| match self.shared.can {
                ContainerCan::SocketMount => (bus.clone(), format!("unix:{slot_in_container}/{bus}.sock")),
                ContainerCan::Vxcan => (bus.clone(), format!("socketcan:can{i}")),
                ContainerCan::Emulated => (
                    bus.clone(),
                    format!(
                        "socketcan:{}",
                        self.interfaces
                            .get(i)
                            .cloned()
                            .unwrap_or_else(|| format!("can{i}"))
                    ),
                ),
            })
            .collect();
        if self.shared.can == ContainerCan::Emulated {
            request = request.with_env_var(CAN_ENV, "1");
        }
        for (k, v) in bus_env(&endpoints) {
            request = request.with_env_var(k, v);
        }
        let limits = self.spec.limits;
        let read_only_root = self.spec.security.read_only_root;
        let request = request.with_host_config_modifier(move |hc| {
            hc.network_mode = Some("none".into());
            hc.readonly_rootfs = Some(read_only_root);
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
                let plan = VxcanPlan::new(pid as u32, resident.slot_no, i);
                run_commands(&plan.setup())
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
            let bridge = CanBridge::start(&plan.host_endpoint(), &vcan::Endpoint::Unix(socket.clone()))
                .map_err(|e| self.err(format!("vxcan bridge {}: {e}", plan.host_if)))?;
            resident.bridges.push(bridge);
        }
        Ok(())
    }

    /// Reads the seccomp listener `pod-init` sends ahead of `started` and serves it; when the first byte came
    /// without one, it is handed back as the start of `pod-init`'s answer.
    async fn receive_listener(
        &self,
        stream: &tokio::net::UnixStream,
    ) -> Result<(Option<vcan::emu::Emulation>, String), InfraError> {
        use std::os::fd::AsRawFd;
        let fd = stream.as_raw_fd();
        let received = loop {
            stream
                .readable()
                .await
                .map_err(|e| self.err(format!("pod-init: {e}")))?;
            match stream.try_io(tokio::io::Interest::READABLE, || vcan::emu::receive_fd(fd)) {
                Ok(r) => break r,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(self.err(format!("pod-init: {e}"))),
            }
        };
        let listener = match received {
            Ok(listener) => listener,
            Err(byte) => return Ok((None, (byte as char).to_string())),
        };
        let interfaces = self
            .links
            .iter()
            .zip(&self.interfaces)
            .map(|((_, socket), name)| (name.clone(), vcan::Endpoint::Unix(socket.clone())))
            .collect();
        let emulation = vcan::emu::Emulation::start(
            listener,
            vcan::emu::interfaces(interfaces),
            format!("{}@container", self.spec.image.binary_name()),
        )
        .map_err(|e| self.err(e.to_string()))?;
        Ok((Some(emulation), String::new()))
    }

    fn take_pooled(&self) -> Option<Resident> {
        self.shared.pool.take(&self.key)
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
        let mut stream = stream;
        stream
            .write_all(Command::Start.encode().as_bytes())
            .await
            .map_err(|e| self.err(format!("pod-init: {e}")))?;
        // With emulation the listener comes first; a byte without it starts an error line.
        let (emulation, first) = match self.shared.can {
            ContainerCan::Emulated => self.receive_listener(&stream).await?,
            _ => (None, String::new()),
        };
        let (read, write) = stream.into_split();
        let mut lines = tokio::io::BufReader::new(read).lines();
        let reply = lines
            .next_line()
            .await
            .map_err(|e| self.err(format!("pod-init: {e}")))?
            .unwrap_or_default();
        let reply = format!("{first}{reply}");
        let Ok(Event::Started { pid }) = Event::parse(&reply) else {
            return Err(self.err(format!("pod-init could not start the workload: {reply}")));
        };
        self.idle.store(false, Ordering::SeqCst);
        logs.note(&format!("{how} container {}: workload pid {pid}", short(&id)));
        Ok(Box::new(ContainerProcess {
            lines,
            write,
            _emulation: emulation,
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
        // Probes run through `docker exec`, outside pod-init's incarnations: with emulated SocketCAN they run
        // under `pod-init --can-emulate`, which serves their CAN calls inside the container on the
        // bind-mounted hub sockets.
        let mut command = command.to_vec();
        if self.shared.can == ContainerCan::Emulated {
            let slot = self.held.lock().await.as_ref().map(|r| r.slot_no);
            if let Some(n) = slot {
                let spec: Vec<String> = self
                    .links
                    .iter()
                    .zip(&self.interfaces)
                    .map(|((bus, _), name)| format!("{name}=unix:{RUN_MOUNT}/slots/{n}/{bus}.sock"))
                    .collect();
                let mut wrapped = vec![
                    POD_INIT.to_string(),
                    "--can-emulate".into(),
                    spec.join(","),
                    "--".into(),
                ];
                wrapped.extend(command);
                command = wrapped;
            }
        }
        let docker = &self.shared.docker;
        let probe_err = |e: bollard::errors::Error| self.err(format!("exec probe: {e}"));
        let config = bollard::models::ExecConfig {
            cmd: Some(command),
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
        if self.idle.load(Ordering::SeqCst) {
            // The workload ended cleanly: keep the container for the next scenario with the same spec.
            self.shared.pool.keep(&self.key, resident);
            return;
        }
        // Dropping a ContainerAsync removes the container (forced).
        drop(resident);
    }
}

/// One workload incarnation inside a resident container, as `pod-init` reports it.
struct ContainerProcess {
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::net::unix::OwnedReadHalf>>,
    write: tokio::net::unix::OwnedWriteHalf,
    /// Serves this incarnation's SocketCAN calls (emulated transport).
    _emulation: Option<vcan::emu::Emulation>,
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
                Ok(Some(line)) => match Event::parse(&line) {
                    Ok(Event::Stdout { line } | Event::Stderr { line }) => self.logs.push(&line),
                    Ok(Event::Exited { code, .. }) => {
                        self.idle.store(true, Ordering::SeqCst);
                        break ExitInfo {
                            code: Some(code),
                            signal: None,
                        };
                    }
                    Ok(Event::Killed { signal }) => {
                        self.idle.store(true, Ordering::SeqCst);
                        break ExitInfo {
                            code: None,
                            signal: Some(signal),
                        };
                    }
                    // The workload ended, but its exit report does not say how.
                    Err(EventError::BadNumber {
                        verb: "exited" | "killed",
                        ..
                    }) => {
                        self.idle.store(true, Ordering::SeqCst);
                        break ExitInfo {
                            code: None,
                            signal: None,
                        };
                    }
                    // `ok` / `error …` answers to signal requests, and lines that are no report.
                    Ok(Event::Started { .. } | Event::Signalled | Event::Refused { .. }) | Err(_) => {}
                },
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
            .write_all(Command::Signal(number).encode().as_bytes())
            .await
            .map_err(|e| InfraError::PodInit(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::super::pool::fixtures::spec;
    use super::*;

    /// A launcher whose bus sockets are `links`, in a run directory `state`.
    fn launcher(state: &Path, links: Vec<(String, PathBuf)>) -> ContainerLauncher {
        ContainerLauncher {
            shared: Arc::new(Shared {
                docker: Docker::connect_with_local_defaults().expect("client (no connection is made)"),
                can: ContainerCan::SocketMount,
                run_id: "r".into(),
                state_dir: state.to_path_buf(),
                pool: Pool::new(true),
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
            interfaces: Vec::new(),
            mounts: Vec::new(),
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
}
