//! The board environment: workloads run on target boards of a bench lab, deployed over SSH.
//!
//! Columns are `board:<name>` for the boards of a lab inventory ([`crate::lab`]); `--env board` means every
//! board. Per run and board:
//!
//! * **prepare**: the board must answer over ssh with the inventory's key ([`crate::ssh`]; if it does not
//!   and the inventory has `power_on`, the bench powers it on and waits up to `boot_timeout_s`), report the
//!   inventory's architecture (`uname -m`), and have its CAN interfaces (kernel interface present and up,
//!   bitrate and FD as the inventory says) — or, for a `hub:` bus, reach the bench's hub address. Every
//!   problem is an infra-error naming the board and the cause. Workload binaries are built for the board's
//!   target triple (see `fixtures/lab/README.md` for cross-compiling) and copied with `scp` on first use to
//!   `<workdir>/<run-id>/bin/<triple>/`.
//! * **deploy**: each container gets an instance directory holding its environment (`env`, one
//!   `NAME=value` per line) and a `run` script (`exec env -i <env> <binary> <args>`). One ssh session per
//!   incarnation runs a small wrapper: it starts `run`, reports the pid, and reads stop commands from the
//!   session's stdin (`TERM`, `KILL`); when the session ends for any reason (the harness was killed, the link
//!   died) stdin closes and the wrapper SIGKILLs the workload, so its lifetime is tied to the session. The exit
//!   status comes back as a trailer line; codes above 128 are reported as signals. stdout/stderr stream into
//!   the container's log. Restart policy, stop, kill and restart are the shared [`Supervisor`]'s.
//! * **readiness probes** (`exec`) run over ssh in the instance directory with the container's environment.
//! * **CAN**: a board interface with a physical bus gives the workload `CAN_BUS=socketcan:<board if>`, and the
//!   scenario's bus on the bench is the configured adapter or TCP bridge (scenarios then run one at a time);
//!   a `hub:<ip>` interface reaches the scenario's own hub, which listens on that bench address: the
//!   workload runs under `pod-init --can-emulate <if>=tcp:<ip>:<port> -- ...` (the harness's static helper,
//!   copied to the board like the workloads), which gives the unmodified program SocketCAN by seccomp user
//!   notification on the board, with `CAN_BUS=socketcan:<if>` (the interface named as the manifest asks);
//!   with `--can-transport hub`, or a board of another architecture than the bench's, it gets
//!   `CAN_BUS=tcp:<ip>:<port>` instead (this project's bus client only).
//! * **cleanup**: every remote process carries `AGL_PARITY_RUN=<run-id>` and `AGL_PARITY_OWNER=<bench id>`;
//!   the run's remote directory holds an `owner` file. `finish` kills what is left of the run and removes the
//!   directory; [`sweep_lab`] does the same for every run of this bench that is no longer alive, on every
//!   board of the inventory (runs of other benches sharing the board are left alone).
//!
//! Layout: [`remote`] (what every remote operation shares) and [`power`] (the bench's power commands) at the
//! bottom; [`preflight`] (connection and pre-flight checks), [`sweep`] (remote cleanup) and [`launcher`] (an
//! incarnation's ssh session) above them; this file, the registry entry and [`BoardEnv`], on top.

mod launcher;
mod power;
mod preflight;
mod remote;
mod sweep;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::contract::{
    bus_env, ColumnError, DeployRequest, EnvKind, Environment, Instance, ProbeFailure, RunContext, Setup,
    Transport,
};
use crate::cleanup::RUN_MARKER_ENV;
use crate::env::launcher::argv_for;
use crate::error::InfraError;
use crate::lab::{Arch, BenchSide, Board, Lab};
use crate::ssh::{sh_quote, Ssh, SshError};
use crate::workload::WorkloadCatalog;
use launcher::BoardLauncher;
use power::run_local;
pub use power::LocalCommandError;
pub use preflight::{check_board, parse_link, LinkState};
pub use remote::OWNER_ENV;
use remote::{with_console, COMMAND_LIMIT};
pub use sweep::{board_owner, clean_remote, owner_id, sweep_lab, CleanMode};

/// Environment variable naming a lab inventory (the scenario suite and `doctor` pick it up).
pub const LAB_ENV: &str = "AGL_PARITY_LAB";
/// Quiet time on the bus after readiness before a scenario goes on.
const READY_QUIET: Duration = Duration::from_millis(30);
/// Time limit of one binary copy.
const COPY_LIMIT: Duration = Duration::from_secs(120);

/// Registry entry. Board columns (`board:<name>`) come from a lab inventory: `board` stands for every board
/// of it.
pub fn kind() -> EnvKind {
    EnvKind {
        name: "board",
        summary: "target boards of a lab inventory, deployed over ssh (`--lab FILE`, columns board:<name>)",
        probe: || Box::pin(probe()),
        columns,
        create: create_column,
        sweep: sweep::sweep_entry,
        preflight: preflight::preflight,
    }
}

/// `board` is every board of the lab, `board:<name>` one of them; both need the lab.
fn columns(requested: &str, setup: Setup<'_>) -> Result<Vec<String>, ColumnError> {
    let Some(lab) = setup.lab else {
        return Err(ColumnError::NeedsLab(requested.to_string()));
    };
    match requested.strip_prefix("board:") {
        None if requested == "board" => Ok(lab.boards.iter().map(Board::column).collect()),
        Some(name) if lab.board(name).is_some() => Ok(vec![requested.to_string()]),
        _ => Err(ColumnError::Unknown(requested.to_string())),
    }
}

fn create_column(
    column: &str,
    run: &RunContext,
    setup: Setup<'_>,
) -> Result<Arc<dyn Environment>, InfraError> {
    match (column.strip_prefix("board:"), setup.lab) {
        (Some(name), Some(lab)) => create(run, lab, name),
        _ => Err(InfraError::Unavailable {
            env: "board".into(),
            reason: "board columns need a lab inventory: `run --lab FILE --env board:<name>`".into(),
        }),
    }
}

/// Whether this bench can drive boards: an ssh client, and a lab named by `AGL_PARITY_LAB`.
pub async fn probe() -> Result<String, ProbeFailure> {
    for tool in ["ssh", "scp"] {
        if which(tool).is_none() {
            return Err(ProbeFailure::new(format!(
                "no `{tool}` client: `apt-get install openssh-client`"
            )));
        }
    }
    match std::env::var_os(LAB_ENV) {
        Some(path) => {
            let lab = Lab::load(Path::new(&path)).map_err(|e| ProbeFailure::new(e.to_string()))?;
            Ok(format!(
                "lab {} (from {LAB_ENV}): boards {}",
                Path::new(&path).display(),
                lab.board_names().join(", ")
            ))
        }
        None => Err(ProbeFailure::new(format!(
            "no lab inventory: pass `--lab FILE` (see fixtures/lab/README.md) or set {LAB_ENV}; \
             `just lab-up` starts a simulated board (sshd in a network namespace)"
        ))),
    }
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(tool))
            .find(|p| p.is_file())
    })
}

/// Builds the environment of column `board:<name>` for a run.
pub fn create(run: &RunContext, lab: &Lab, name: &str) -> Result<Arc<dyn Environment>, InfraError> {
    let board = lab.board(name).ok_or_else(|| InfraError::Unavailable {
        env: format!("board:{name}"),
        reason: format!(
            "no board `{name}` in {} (boards: {})",
            lab.path.display(),
            lab.board_names().join(", ")
        ),
    })?;
    Ok(Arc::new(BoardEnv::new(run, board)))
}

/// Boards of a lab for one run.
pub struct BoardEnv {
    column: String,
    board: Board,
    ssh: Ssh,
    run_id: String,
    owner: String,
    remote_dir: String,
    catalog: Arc<WorkloadCatalog>,
    copied: tokio::sync::Mutex<HashMap<String, String>>,
    instances: AtomicUsize,
    powered_on: AtomicBool,
    /// Hub buses are given as emulated SocketCAN (`pod-init --can-emulate` on the board).
    emulate_hub_buses: bool,
}

impl BoardEnv {
    fn new(run: &RunContext, board: &Board) -> BoardEnv {
        let known_hosts = run.state_dir.join(format!("known_hosts-{}", board.name));
        let catalog = match &board.workloads {
            Some(dir) => Arc::new(WorkloadCatalog::prebuilt_for(dir, &board.arch.triple())),
            None if board.arch == Arch::host() => run.catalog.clone(),
            None => Arc::new(run.catalog.for_target(&board.arch.triple())),
        };
        BoardEnv {
            column: board.column(),
            board: board.clone(),
            ssh: Ssh::new(board, &known_hosts, Some(&run.run_id)),
            emulate_hub_buses: run.can_transport != crate::env::socketcan::CanTransport::Hub
                && board.arch == Arch::host(),
            run_id: run.run_id.clone(),
            owner: board_owner(board),
            remote_dir: format!("{}/{}", board.workdir, run.run_id),
            catalog,
            copied: tokio::sync::Mutex::new(HashMap::new()),
            instances: AtomicUsize::new(0),
            powered_on: AtomicBool::new(false),
        }
    }

    fn unavailable(&self, reason: String) -> InfraError {
        InfraError::Unavailable {
            env: self.column.clone(),
            reason,
        }
    }

    /// Copies a workload binary to the board once per run; returns its remote path.
    async fn remote_binary(&self, local: &Path, name: &str) -> Result<String, InfraError> {
        let mut copied = self.copied.lock().await;
        if let Some(path) = copied.get(name) {
            return Ok(path.clone());
        }
        let dir = format!("{}/bin/{}", self.remote_dir, self.catalog.triple());
        let path = format!("{dir}/{name}");
        let launch_err = |e: SshError| InfraError::Launch {
            workload: name.to_string(),
            reason: e.to_string(),
        };
        self.ssh
            .check(
                "creating the binary directory",
                &format!("mkdir -p {}", sh_quote(&dir)),
                COMMAND_LIMIT,
            )
            .await
            .map_err(launch_err)?;
        let partial = format!("{path}.part");
        self.ssh
            .copy(local, &partial, COPY_LIMIT)
            .await
            .map_err(launch_err)?;
        self.ssh
            .check(
                "installing the binary",
                &format!(
                    "chmod 755 {0} && mv -f {0} {1}",
                    sh_quote(&partial),
                    sh_quote(&path)
                ),
                COMMAND_LIMIT,
            )
            .await
            .map_err(launch_err)?;
        copied.insert(name.to_string(), path.clone());
        Ok(path)
    }

    /// Brings the board up if it does not answer and the inventory says how.
    async fn reach(&self) -> Result<(), InfraError> {
        let first = self.ssh.check("connecting", "true", COMMAND_LIMIT).await;
        let Err(err) = first else { return Ok(()) };
        let (SshError::Unreachable { .. }, Some(power_on)) = (&err, &self.board.power_on) else {
            return Err(self.unavailable(with_console(&self.board, err.to_string())));
        };
        tracing::info!(board = %self.board.name, "board does not answer: powering it on");
        run_local(power_on, COMMAND_LIMIT)
            .await
            .map_err(|e| self.unavailable(format!("board `{}`: power_on failed: {e}", self.board.name)))?;
        self.powered_on.store(true, Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + self.board.boot_timeout;
        loop {
            match self.ssh.check("connecting", "true", COMMAND_LIMIT).await {
                Ok(_) => return Ok(()),
                Err(SshError::Unreachable { .. }) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_secs(1)).await
                }
                Err(e) => {
                    return Err(self.unavailable(with_console(
                        &self.board,
                        format!(
                            "{e} (after power_on, waited {} s)",
                            self.board.boot_timeout.as_secs()
                        ),
                    )))
                }
            }
        }
    }
}

#[async_trait]
impl Environment for BoardEnv {
    fn name(&self) -> &str {
        &self.column
    }

    fn transport(&self) -> Transport {
        let ifs: Vec<String> = self
            .board
            .can
            .iter()
            .map(|c| match &c.bench {
                BenchSide::Hub(ip) if self.emulate_hub_buses => format!(
                    "SocketCAN emulated on the board (seccomp user notification, pod-init) ↔ userspace hub over TCP from the bench ({ip})"
                ),
                BenchSide::Hub(ip) => format!("userspace hub over TCP from the bench ({ip})"),
                bench => format!(
                    "{} {} kbit/s{} ↔ bench {bench}",
                    c.name,
                    c.bitrate / 1000,
                    if c.fd { " FD" } else { "" }
                ),
            })
            .collect();
        format!(
            "board {} ({}) over ssh: {}",
            self.board.name,
            self.board.arch,
            ifs.join(", ")
        )
    }

    fn needs_tcp_bus(&self) -> bool {
        self.board
            .can
            .iter()
            .any(|c| matches!(c.bench, BenchSide::Hub(_)))
    }

    fn bus_listen_ip(&self) -> Option<IpAddr> {
        self.board.can.iter().find_map(|c| match c.bench {
            BenchSide::Hub(ip) => Some(ip),
            _ => None,
        })
    }

    fn bench_endpoint(&self, bus: &str) -> Option<vcan::Endpoint> {
        match &self.board.interface_for(bus)?.bench {
            BenchSide::SocketCan(ifname) => Some(vcan::Endpoint::SocketCan(ifname.clone())),
            BenchSide::Tcp(addr) => Some(vcan::Endpoint::Tcp(*addr)),
            BenchSide::Hub(_) => None,
        }
    }

    fn capabilities(&self) -> Vec<String> {
        self.board.capabilities()
    }

    fn ready_quiet(&self) -> Option<Duration> {
        // The start-up burst (heartbeat, state, version) crosses ssh-free but real links: a network hop
        // for a `hub:` bus, a CAN bus and adapter otherwise.
        Some(READY_QUIET)
    }

    fn max_concurrency(&self) -> Option<usize> {
        // A physical bus is shared by everything on it: one scenario at a time.
        self.board.has_physical_bus().then_some(1)
    }

    async fn prepare(&self, run: &RunContext) -> Result<(), InfraError> {
        if !self.ssh.key_readable() {
            return Err(self.unavailable(
                SshError::KeyMissing {
                    board: self.board.name.clone(),
                }
                .to_string(),
            ));
        }
        self.reach().await?;
        let problems: Vec<String> = preflight::facts(&self.board, &self.ssh)
            .await
            .into_iter()
            .filter(|f| !f.ok)
            .map(|f| format!("{}: {}", f.name, f.detail))
            .collect();
        if !problems.is_empty() {
            return Err(self.unavailable(format!("board `{}`: {}", self.board.name, problems.join("; "))));
        }
        self.catalog.ensure_built().await.map_err(|e| {
            self.unavailable(format!(
                "board `{}`: no workload build for {} ({}): {e}",
                self.board.name,
                self.board.arch,
                self.catalog.triple()
            ))
        })?;
        let setup = format!(
            "mkdir -p {dir} && printf '%s\\n' {owner} > {dir}/owner",
            dir = sh_quote(&self.remote_dir),
            owner = sh_quote(&self.owner)
        );
        self.ssh
            .check("creating the run directory", &setup, COMMAND_LIMIT)
            .await
            .map_err(|e| self.unavailable(e.to_string()))?;
        tracing::info!(board = %self.board.name, run = %run.run_id, "board ready");
        Ok(())
    }

    async fn deploy(
        &self,
        _run: &RunContext,
        request: DeployRequest<'_>,
    ) -> Result<Vec<Instance>, InfraError> {
        let pod = request.workload;
        let mut endpoints = Vec::new();
        // `(interface, tcp:<hub>)` of the hub buses the board-side emulation bridges.
        let mut emulated: Vec<String> = Vec::new();
        for bus in &request.buses {
            let iface = self
                .board
                .interface_for(&bus.name)
                .ok_or_else(|| InfraError::Bus {
                    bus: bus.name.clone(),
                    reason: format!("board `{}` has no CAN interface for this bus", self.board.name),
                })?;
            let uri = match &iface.bench {
                BenchSide::Hub(_) => {
                    let addr = bus.tcp_addr.ok_or_else(|| InfraError::Bus {
                        bus: bus.name.clone(),
                        reason: "the scenario's hub has no TCP listener".into(),
                    })?;
                    if self.emulate_hub_buses {
                        let ifname = pod.interface_of(&bus.name);
                        emulated.push(format!("{ifname}=tcp:{addr}"));
                        format!("socketcan:{ifname}")
                    } else {
                        format!("tcp:{addr}")
                    }
                }
                _ => format!("socketcan:{}", iface.name),
            };
            endpoints.push((bus.name.clone(), uri));
        }
        let bus_env = bus_env(&endpoints);
        // The emulation's wrapper, the same for every container of the pod.
        let wrapper = if emulated.is_empty() {
            Vec::new()
        } else {
            let pod_init = crate::helpers::Helper::PodInit.path().await?;
            let remote_init = self.remote_binary(&pod_init, "agl-pod-init").await?;
            vec![
                remote_init,
                "--can-emulate".into(),
                emulated.join(","),
                "--".into(),
            ]
        };
        let mut instances = Vec::new();
        for container in &pod.containers {
            let local = self.catalog.binary_for(&container.image).await?;
            let name = container.image.binary_name().to_string();
            let remote = self.remote_binary(&local, &name).await?;
            let argv = argv_for(container, Path::new(&remote))?;
            let mut env = container.env.clone();
            env.extend(bus_env.iter().cloned());
            env.push((RUN_MARKER_ENV.to_string(), self.run_id.clone()));
            env.push((OWNER_ENV.to_string(), self.owner.clone()));
            if let Some((k, _)) = env
                .iter()
                .find(|(k, v)| k.contains(['=', '\n', '\0']) || v.contains(['\n', '\0']))
            {
                return Err(InfraError::Launch {
                    workload: container.name.clone(),
                    reason: format!(
                        "environment variable `{k}` cannot be passed to a board (newline or `=`)"
                    ),
                });
            }
            let n = self.instances.fetch_add(1, Ordering::SeqCst);
            let dir = format!("{}/i{n}-{}-{}", self.remote_dir, pod.name, container.name);
            let logs = request.container_log(&container.name)?;
            let launcher = Arc::new(BoardLauncher {
                ssh: self.ssh.clone(),
                workload: format!("{}/{}", pod.name, container.name),
                board: self.board.name.clone(),
                dir,
                binary: remote,
                argv,
                wrapper: wrapper.clone(),
                env,
                run_id: self.run_id.clone(),
                owner: self.owner.clone(),
                connect_timeout: self.board.ssh.connect_timeout,
            });
            instances.push(Instance::start(pod, container, launcher, logs));
        }
        Ok(instances)
    }

    async fn finish(&self, _run: &RunContext) {
        match clean_remote(
            &self.ssh,
            &self.board.workdir,
            &self.owner,
            CleanMode::Only(&self.run_id),
        )
        .await
        {
            Ok(lines) => lines
                .iter()
                .for_each(|l| tracing::debug!(board = %self.board.name, "{l}")),
            Err(e) => tracing::warn!(board = %self.board.name, error = %e, "board cleanup failed"),
        }
        if self.powered_on.load(Ordering::SeqCst) {
            if let Some(off) = &self.board.power_off {
                if let Err(e) = run_local(off, COMMAND_LIMIT).await {
                    tracing::warn!(board = %self.board.name, error = %e, "power_off failed");
                }
            }
        }
    }
}
