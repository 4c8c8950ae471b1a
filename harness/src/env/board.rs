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
//!   a `hub:<ip>` interface gives `CAN_BUS=tcp:<ip>:<port>` of the scenario's own hub, which listens on that
//!   bench address.
//! * **cleanup**: every remote process carries `AGL_PARITY_RUN=<run-id>` and `AGL_PARITY_OWNER=<bench id>`;
//!   the run's remote directory holds an `owner` file. `finish` kills what is left of the run and removes the
//!   directory; [`sweep_lab`] does the same for every run of this bench that is no longer alive, on every
//!   board of the inventory (runs of other benches sharing the board are left alone).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use futures::future::BoxFuture;

use super::contract::{
    bus_env, Check, ColumnError, DeployRequest, EnvKind, Environment, Instance, ProbeFailure, RunContext,
    Setup, Transport,
};
use super::launcher::argv_for;
use crate::cleanup::RUN_MARKER_ENV;
use crate::error::InfraError;
use crate::lab::{Arch, BenchSide, Board, CanInterface, Lab};
use crate::logs::{self, LogSink};
use crate::ssh::{last_lines, sh_quote, Ssh, SshError};
use crate::supervisor::{ExitInfo, Launcher, Process, StopSignal};
use crate::workload::WorkloadCatalog;

/// Environment variable carrying the bench's identity on every remote process.
pub const OWNER_ENV: &str = "AGL_PARITY_OWNER";
/// Environment variable naming a lab inventory (the scenario suite and `doctor` pick it up).
pub const LAB_ENV: &str = "AGL_PARITY_LAB";
/// Prefix of the wrapper's control lines on stderr.
const CONTROL: &str = "@@agl-parity ";
/// Time limit of short remote commands.
const COMMAND_LIMIT: Duration = Duration::from_secs(30);
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
        needs_lab: true,
        probe: || Box::pin(probe()),
        columns,
        create: create_column,
        sweep: sweep_entry,
        preflight,
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

fn sweep_entry(live: Vec<String>, setup: Setup<'_>) -> BoxFuture<'_, Vec<String>> {
    Box::pin(async move {
        match setup.lab {
            Some(lab) => sweep_lab(lab, &live).await,
            None => Vec::new(),
        }
    })
}

/// Pre-flight of every board of the lab: reachable, key accepted, architecture, workload build for it, CAN
/// interfaces (or the hub endpoint of a simulated board). One line per fact; problems are not ok.
fn preflight(setup: Setup<'_>) -> BoxFuture<'_, Vec<Check>> {
    Box::pin(async move {
        let Some(lab) = setup.lab else { return Vec::new() };
        let scratch = std::env::temp_dir().join(format!("agl-parity-doctor-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&scratch);
        let checks = lab.boards.iter().map(|board| {
            let ssh = Ssh::new(board, &scratch.join(format!("known_hosts-{}", board.name)), None);
            async move {
                let mut out: Vec<Check> = check_board(board, &ssh)
                    .await
                    .into_iter()
                    .map(|f| Check {
                        name: format!("{} {}", board.column(), f.what),
                        ok: f.ok,
                        detail: f.detail,
                    })
                    .collect();
                out.push(workload_build_check(board));
                out
            }
        });
        let out = futures::future::join_all(checks).await.concat();
        let _ = std::fs::remove_dir_all(&scratch);
        out
    })
}

/// Whether workloads can be had for a board's architecture: prebuilt binaries, the host build, or an
/// installed Rust target for cross-compiling.
fn workload_build_check(board: &crate::lab::Board) -> Check {
    let name = format!("{} workloads", board.column());
    let triple = board.arch.triple();
    if let Some(dir) = &board.workloads {
        let ok = dir.is_dir();
        return Check {
            name,
            ok,
            detail: if ok {
                format!("prebuilt {triple} binaries from {}", dir.display())
            } else {
                format!("`workloads: {}` is not a directory", dir.display())
            },
        };
    }
    if board.arch == crate::lab::Arch::host() {
        return Check {
            name,
            ok: true,
            detail: format!("built for the host triple {triple}"),
        };
    }
    let installed = std::process::Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.trim() == triple)
        })
        .unwrap_or(false);
    Check {
        name,
        ok: installed,
        detail: if installed {
            format!("cross-built for {triple} (see fixtures/lab/README.md for the linker)")
        } else {
            format!(
                "no Rust target {triple} on this bench: `rustup target add {triple}` and a linker \
                 (fixtures/lab/README.md), or `workloads: <dir>` with prebuilt binaries"
            )
        },
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

/// The bench's identity on boards: a hash of host name and state root, so benches sharing a board (and
/// harnesses with different state roots) never sweep each other's runs.
pub fn owner_id() -> String {
    let host = nix::sys::utsname::uname()
        .map(|u| u.nodename().to_string_lossy().to_string())
        .unwrap_or_default();
    let text = format!("{host}:{}", crate::cleanup::state_root().display());
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The owner marker of one board: the bench's identity and the board name (boards that share a filesystem
/// and a process table, like the simulated ones, then still clean up only their own processes).
pub fn board_owner(board: &Board) -> String {
    format!("{}.{}", owner_id(), board.name)
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

fn with_console(board: &Board, text: String) -> String {
    match &board.console {
        Some(c) => format!("{text}; console: `{c}`"),
        None => text,
    }
}

async fn run_local(command: &str, limit: Duration) -> Result<(), String> {
    let out = tokio::time::timeout(
        limit,
        tokio::process::Command::new("sh")
            .arg("-c")
            .arg(command)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| format!("`{command}` did not finish within {} s", limit.as_secs()))?
    .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{command}` exited with {}: {}",
            out.status,
            last_lines(&String::from_utf8_lossy(&out.stderr), 3)
        ))
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
        let problems: Vec<String> = check_board(&self.board, &self.ssh)
            .await
            .into_iter()
            .filter(|f| !f.ok)
            .map(|f| format!("{}: {}", f.what, f.detail))
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
                    format!("tcp:{addr}")
                }
                _ => format!("socketcan:{}", iface.name),
            };
            endpoints.push((bus.name.clone(), uri));
        }
        let bus_env = bus_env(&endpoints);
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

/// Which runs a remote cleanup removes.
pub enum CleanMode<'a> {
    /// Exactly this run.
    Only(&'a str),
    /// Every run of this bench that is not in the list.
    AllBut(&'a [String]),
}

/// Kills the remote processes and removes the remote directories of runs of this bench (`owner`) selected by
/// `mode`; returns a line per removed item.
pub async fn clean_remote(
    ssh: &Ssh,
    workdir: &str,
    owner: &str,
    mode: CleanMode<'_>,
) -> Result<Vec<String>, SshError> {
    let (m, list) = match mode {
        CleanMode::Only(run) => ("only", vec![run.to_string()]),
        CleanMode::AllBut(live) => ("allbut", live.to_vec()),
    };
    let mut script = format!("set -- {} {} {m}", sh_quote(workdir), sh_quote(owner));
    for run in &list {
        script.push(' ');
        script.push_str(&sh_quote(run));
    }
    script.push('\n');
    script.push_str(CLEAN_SCRIPT);
    let out = ssh.check("cleaning up", &script, COMMAND_LIMIT).await?;
    Ok(out
        .lines()
        .map(|l| format!("board `{}`: {l}", ssh.board()))
        .collect())
}

/// Remote cleanup. Arguments: workdir, owner, `only`|`allbut`, run ids.
const CLEAN_SCRIPT: &str = r#"w=$1; owner=$2; mode=$3; shift 3; list=" $* "
target() {
  case "$list" in *" $1 "*) inlist=1;; *) inlist=0;; esac
  if [ "$mode" = only ]; then [ $inlist = 1 ]; else [ $inlist = 0 ]; fi
}
for e in $(grep -lsF "AGL_PARITY_OWNER=$owner" /proc/[0-9]*/environ 2>/dev/null); do
  p=${e#/proc/}; p=${p%/environ}
  [ "$p" = "$$" ] && continue
  o=$(tr '\0' '\n' < "$e" 2>/dev/null | sed -n 's/^AGL_PARITY_OWNER=//p')
  [ "$o" = "$owner" ] || continue
  r=$(tr '\0' '\n' < "$e" 2>/dev/null | sed -n 's/^AGL_PARITY_RUN=//p')
  [ -n "$r" ] || continue
  target "$r" || continue
  kill -KILL "$p" 2>/dev/null && echo "killed process $p of run $r"
done
[ -d "$w" ] || exit 0
for d in "$w"/*/; do
  [ -f "${d}owner" ] || continue
  [ "$(cat "${d}owner" 2>/dev/null)" = "$owner" ] || continue
  r=$(basename "$d")
  target "$r" || continue
  rm -rf "$d" && echo "removed ${d%/} of run $r"
done
rmdir "$w" 2>/dev/null
exit 0
"#;

/// Removes, on every board of `lab`, what runs of this bench that are not in `live` left behind.
pub async fn sweep_lab(lab: &Lab, live: &[String]) -> Vec<String> {
    let dir = std::env::temp_dir().join(format!("agl-parity-sweep-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let sweeps = lab.boards.iter().map(|board| {
        let ssh = Ssh::new(board, &dir.join(format!("known_hosts-{}", board.name)), None);
        let owner = board_owner(board);
        async move {
            match clean_remote(&ssh, &board.workdir, &owner, CleanMode::AllBut(live)).await {
                Ok(lines) => lines,
                Err(e) => {
                    tracing::debug!(board = %board.name, error = %e, "sweep skipped");
                    Vec::new()
                }
            }
        }
    });
    let lines = futures::future::join_all(sweeps).await.concat();
    let _ = std::fs::remove_dir_all(&dir);
    lines
}

/// One result of a board pre-flight check.
#[derive(Debug, Clone)]
pub struct Finding {
    pub ok: bool,
    /// What was checked: `ssh`, `arch`, `can0`, `bus vehicle`.
    pub what: String,
    pub detail: String,
}

impl Finding {
    fn ok(what: &str, detail: String) -> Finding {
        Finding {
            ok: true,
            what: what.into(),
            detail,
        }
    }
    fn problem(what: &str, detail: String) -> Finding {
        Finding {
            ok: false,
            what: what.into(),
            detail,
        }
    }
}

/// What a board says about one interface.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LinkState {
    pub exists: bool,
    pub up: bool,
    /// ARPHRD type (280: CAN).
    pub link_type: Option<u32>,
    pub bitrate: Option<u32>,
    pub dbitrate: Option<u32>,
    pub fd: bool,
}

/// Parses the interface section the pre-flight script prints.
pub fn parse_link(section: &str) -> LinkState {
    let mut s = LinkState::default();
    for line in section.lines() {
        let line = line.trim();
        if line == "missing" {
            return LinkState::default();
        }
        if let Some(flags) = line.strip_prefix("flags ") {
            s.exists = true;
            s.up = u32::from_str_radix(flags.trim_start_matches("0x"), 16).is_ok_and(|f| f & 1 == 1);
        } else if let Some(t) = line.strip_prefix("type ") {
            s.link_type = t.trim().parse().ok();
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        for pair in words.windows(2) {
            match pair[0] {
                "bitrate" => s.bitrate = pair[1].parse().ok(),
                "dbitrate" => s.dbitrate = pair[1].parse().ok(),
                _ => {}
            }
        }
        if words.first() == Some(&"can")
            && words
                .get(1)
                .is_some_and(|w| w.starts_with('<') && w.contains("FD"))
        {
            s.fd = true;
        }
    }
    s
}

const ARPHRD_CAN: u32 = 280;

/// Checks a board the way `doctor --lab` reports it: reachable, key accepted, architecture, and for each CAN
/// interface the board side (exists, is CAN, is up, bitrate/FD as the inventory says) and the bench side
/// (adapter, bridge, or a hub address the board can reach). One finding per fact, problems first-class.
pub async fn check_board(board: &Board, ssh: &Ssh) -> Vec<Finding> {
    let mut out = Vec::new();
    if !ssh.key_readable() {
        out.push(Finding::problem(
            "ssh",
            SshError::KeyMissing {
                board: board.name.clone(),
            }
            .to_string(),
        ));
        return out;
    }
    let mut script = String::from("uname -m\n");
    for c in board.can.iter().filter(|c| !matches!(c.bench, BenchSide::Hub(_))) {
        script.push_str(&format!(
            "i={}; echo \"@@if $i\"; if [ -e /sys/class/net/$i ]; then echo \"flags $(cat /sys/class/net/$i/flags)\"; \
             echo \"type $(cat /sys/class/net/$i/type)\"; ip -details link show \"$i\" 2>/dev/null; else echo missing; fi\n",
            sh_quote(&c.name)
        ));
    }
    let started = std::time::Instant::now();
    let output = match ssh.check("the pre-flight check", &script, COMMAND_LIMIT).await {
        Ok(o) => o,
        Err(e) => {
            out.push(Finding::problem("ssh", with_console(board, e.to_string())));
            return out;
        }
    };
    out.push(Finding::ok(
        "ssh",
        format!(
            "reachable as {}, key accepted ({} ms)",
            ssh.target(),
            started.elapsed().as_millis()
        ),
    ));
    let mut sections = output.split("@@if ");
    let machine = sections.next().unwrap_or("").trim().to_string();
    let reported = Arch::from_uname(&machine);
    if reported == board.arch {
        out.push(Finding::ok("arch", format!("{reported}, as the inventory says")));
    } else {
        out.push(Finding::problem(
            "arch",
            format!(
                "the inventory says {} but the board reports {machine}: workloads built for {} would not run there",
                board.arch,
                board.arch.triple()
            ),
        ));
    }
    let links: HashMap<String, LinkState> = sections
        .filter_map(|s| {
            let (name, rest) = s.split_once('\n')?;
            Some((name.trim().to_string(), parse_link(rest)))
        })
        .collect();
    for c in &board.can {
        match &c.bench {
            BenchSide::Hub(ip) => out.push(check_hub(ssh, c, *ip).await),
            bench => {
                out.push(check_link(
                    c,
                    links.get(&c.name).cloned().unwrap_or_default(),
                    "on the board",
                ));
                out.push(check_bench(c, bench).await);
            }
        }
    }
    out
}

fn check_link(c: &CanInterface, s: LinkState, side: &str) -> Finding {
    let what = c.name.as_str();
    if !s.exists {
        return Finding::problem(what, format!("CAN interface {what} does not exist {side}"));
    }
    if s.link_type.is_some_and(|t| t != ARPHRD_CAN) {
        return Finding::problem(
            what,
            format!(
                "{what} {side} is not a CAN interface (link type {})",
                s.link_type.unwrap_or(0)
            ),
        );
    }
    if !s.up {
        return Finding::problem(
            what,
            format!(
                "CAN interface {what} {side} is down: `ip link set {what} up type can bitrate {}{}`",
                c.bitrate,
                match (c.fd, c.dbitrate) {
                    (true, Some(d)) => format!(" dbitrate {d} fd on"),
                    (true, None) => " fd on".to_string(),
                    _ => String::new(),
                }
            ),
        );
    }
    if let Some(b) = s.bitrate {
        if b != c.bitrate {
            return Finding::problem(
                what,
                format!(
                    "{what} {side} runs at {b} bit/s, the inventory says {}",
                    c.bitrate
                ),
            );
        }
    }
    if c.fd && !s.fd && s.bitrate.is_some() {
        return Finding::problem(
            what,
            format!("{what} {side} is not in FD mode, the inventory says fd: true"),
        );
    }
    if let (Some(want), Some(got)) = (c.dbitrate, s.dbitrate) {
        if want != got {
            return Finding::problem(
                what,
                format!("{what} {side} has data bitrate {got}, the inventory says {want}"),
            );
        }
    }
    Finding::ok(
        what,
        format!(
            "up {side}{}",
            s.bitrate.map(|b| format!(", {b} bit/s")).unwrap_or_default()
        ),
    )
}

async fn check_bench(c: &CanInterface, bench: &BenchSide) -> Finding {
    let what = format!("bench {bench}");
    match bench {
        BenchSide::SocketCan(ifname) => {
            if let Err(e) = vcan::kernel::kernel_has_can() {
                return Finding::problem(
                    &what,
                    format!("this bench has no kernel SocketCAN ({e}): `modprobe can can-raw`"),
                );
            }
            let sys = Path::new("/sys/class/net").join(ifname);
            let read = |f: &str| std::fs::read_to_string(sys.join(f)).unwrap_or_default();
            let state = LinkState {
                exists: sys.exists(),
                up: u32::from_str_radix(read("flags").trim().trim_start_matches("0x"), 16)
                    .is_ok_and(|f| f & 1 == 1),
                link_type: read("type").trim().parse().ok(),
                ..LinkState::default()
            };
            let mut f = check_link(
                &CanInterface {
                    name: ifname.clone(),
                    ..c.clone()
                },
                state,
                "on the bench",
            );
            f.what = what;
            f
        }
        BenchSide::Tcp(addr) => {
            match tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr)).await {
                Ok(Ok(_)) => Finding::ok(&what, format!("bridge {addr} answers")),
                Ok(Err(e)) => Finding::problem(&what, format!("bridge {addr}: {e}")),
                Err(_) => Finding::problem(&what, format!("bridge {addr} did not answer within 5 s")),
            }
        }
        BenchSide::Hub(_) => Finding::ok(&what, String::new()),
    }
}

/// A `hub:` bus: the bench must own the address, and the board must reach a listener on it.
async fn check_hub(ssh: &Ssh, c: &CanInterface, ip: IpAddr) -> Finding {
    let what = format!("bus {}", c.bus.as_deref().unwrap_or("(default)"));
    let listener = match TcpListener::bind(SocketAddr::new(ip, 0)) {
        Ok(l) => l,
        Err(e) => {
            return Finding::problem(
                &what,
                format!("hub address {ip} is not usable on this bench ({e}): the bench side of the board's link must have it"),
            )
        }
    };
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    let _ = listener.set_nonblocking(true);
    let script = format!(
        "if command -v bash >/dev/null 2>&1; then bash -c 'exec 3<>/dev/tcp/{ip}/{port}'; \
         elif command -v nc >/dev/null 2>&1; then nc -z -w 5 {ip} {port}; else echo 'neither bash nor nc on the board' >&2; exit 3; fi"
    );
    match ssh.run("the hub check", &script, None, COMMAND_LIMIT).await {
        Ok(o) if o.status == 0 => Finding::ok(
            &what,
            format!("the board reaches the bench hub address {ip} over TCP"),
        ),
        Ok(o) => Finding::problem(
            &what,
            format!(
                "the board cannot reach the bench hub address {ip}:{port}: {}",
                last_lines(&o.stderr, 2)
            ),
        ),
        Err(e) => Finding::problem(&what, e.to_string()),
    }
}

/// Starts incarnations of one container on the board, one ssh session each.
struct BoardLauncher {
    ssh: Ssh,
    workload: String,
    board: String,
    dir: String,
    binary: String,
    argv: Vec<String>,
    env: Vec<(String, String)>,
    run_id: String,
    owner: String,
    connect_timeout: Duration,
}

impl BoardLauncher {
    fn err(&self, reason: String) -> InfraError {
        InfraError::Launch {
            workload: self.workload.clone(),
            reason,
        }
    }

    fn env_args(&self) -> String {
        self.env
            .iter()
            .map(|(k, v)| sh_quote(&format!("{k}={v}")))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The session script: write `env` and `run`, start the workload, relay stop commands, report the exit.
    fn session_script(&self) -> String {
        let env_file: String = self.env.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        let argv: Vec<String> = self.argv.iter().map(|a| sh_quote(a)).collect();
        let run = format!(
            "#!/bin/sh\n# {} on board {}: generated by agl-parity\nexec env -i {} {}\n",
            self.workload,
            self.board,
            self.env_args(),
            argv.join(" ")
        );
        format!(
            r#"d={dir}
mkdir -p "$d" && cd "$d" || exit 125
cat > env <<'AGL_PARITY_EOF'
{env_file}AGL_PARITY_EOF
cat > run <<'AGL_PARITY_EOF'
{run}AGL_PARITY_EOF
chmod 755 run
exec 3<&0
./run </dev/null &
pid=$!
echo "{CONTROL}pid $pid" >&2
( while IFS= read -r c <&3; do
    case "$c" in TERM) kill -TERM "$pid" 2>/dev/null;; KILL) kill -KILL "$pid" 2>/dev/null;; esac
  done
  kill -KILL "$pid" 2>/dev/null ) &
w=$!
wait "$pid"; code=$?
kill "$w" 2>/dev/null
echo "{CONTROL}exit $code" >&2
exit "$code"
"#,
            dir = sh_quote(&self.dir),
        )
    }
}

/// What the wrapper reported on stderr.
#[derive(Default)]
struct Control {
    pid: Option<u32>,
    exit: Option<i32>,
    stderr: Vec<String>,
}

#[async_trait]
impl Launcher for BoardLauncher {
    async fn launch(&self, logs: &LogSink) -> Result<Box<dyn Process>, InfraError> {
        let script = format!(
            "exec env {RUN_MARKER_ENV}={} {OWNER_ENV}={} sh -c {}",
            sh_quote(&self.run_id),
            sh_quote(&self.owner),
            sh_quote(&self.session_script())
        );
        let mut child = self
            .ssh
            .command(&script)
            .spawn()
            .map_err(|e| self.err(format!("cannot run ssh: {e}")))?;
        // Taken now: tokio's `Child::wait` closes a stdin it still holds, which would end the session.
        let stdin = child.stdin.take();
        let control = Arc::new(Mutex::new(Control::default()));
        let (pid_tx, pid_rx) = tokio::sync::oneshot::channel::<()>();
        let stdout = child.stdout.take().map(|out| logs.follow(out));
        let stderr = child.stderr.take().map(|err| {
            let logs = logs.clone();
            let control = control.clone();
            let redactor = self.ssh.redactor().clone();
            tokio::spawn(async move {
                let mut pid_tx = Some(pid_tx);
                let mut lines = BufReader::new(err).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Some(rest) = line.strip_prefix(CONTROL) {
                        let mut c = match control.lock() {
                            Ok(c) => c,
                            Err(_) => continue,
                        };
                        if let Some(pid) = rest.strip_prefix("pid ") {
                            c.pid = pid.trim().parse().ok();
                            if let Some(tx) = pid_tx.take() {
                                let _ = tx.send(());
                            }
                        } else if let Some(code) = rest.strip_prefix("exit ") {
                            c.exit = code.trim().parse().ok();
                        }
                        continue;
                    }
                    let line = redactor.apply(&line);
                    if let Ok(mut c) = control.lock() {
                        c.stderr.push(line.clone());
                    }
                    logs.push(&line);
                }
            })
        });
        let limit = self.connect_timeout + Duration::from_secs(20);
        let started = tokio::select! {
            r = tokio::time::timeout(limit, pid_rx) => match r {
                Ok(Ok(())) => Ok(()),
                Ok(Err(_)) => Err(None),
                Err(_) => Err(Some(format!("no answer from board `{}` within {} s", self.board, limit.as_secs()))),
            },
            status = child.wait() => Err(Some(format!("ssh ended before the workload started ({})",
                status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string())))),
        };
        if let Err(why) = started {
            let _ = child.start_kill();
            let _ = child.wait().await;
            if let Some(h) = stderr {
                let _ = tokio::time::timeout(Duration::from_secs(2), h).await;
            }
            let text = control.lock().map(|c| c.stderr.join("\n")).unwrap_or_default();
            let reason = match self.ssh.classify("starting the workload", &text) {
                Some(e) => e.to_string(),
                None => format!(
                    "{}{}",
                    why.unwrap_or_else(|| "the session ended before the workload started".into()),
                    if text.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", last_lines(&text, 3))
                    }
                ),
            };
            return Err(self.err(reason));
        }
        let pid = control.lock().ok().and_then(|c| c.pid).unwrap_or(0);
        logs.note(&format!("started pid {pid} on board {}", self.board));
        Ok(Box::new(BoardProcess {
            stdin,
            child,
            control,
            readers: [stdout, stderr],
            signalled: None,
        }))
    }

    async fn exec(&self, command: &[String]) -> Result<bool, InfraError> {
        let Some((first, args)) = command.split_first() else {
            return Ok(false);
        };
        let base = |p: &str| p.rsplit('/').next().unwrap_or(p).to_string();
        let program = if base(first) == base(&self.binary) {
            self.binary.clone()
        } else {
            first.clone()
        };
        let mut words = vec![sh_quote(&program)];
        words.extend(args.iter().map(|a| sh_quote(a)));
        let script = format!(
            "cd {} && exec env -i {} {} </dev/null >/dev/null 2>&1",
            sh_quote(&self.dir),
            self.env_args(),
            words.join(" ")
        );
        let out = self
            .ssh
            .run("an exec probe", &script, None, COMMAND_LIMIT)
            .await
            .map_err(|e| self.err(format!("probe: {e}")))?;
        Ok(out.status == 0)
    }
}

/// One incarnation: the ssh session running the wrapper.
struct BoardProcess {
    child: tokio::process::Child,
    stdin: Option<tokio::process::ChildStdin>,
    control: Arc<Mutex<Control>>,
    readers: [Option<tokio::task::JoinHandle<()>>; 2],
    signalled: Option<i32>,
}

#[async_trait]
impl Process for BoardProcess {
    async fn wait(&mut self) -> ExitInfo {
        let status = self.child.wait().await;
        logs::drain(&mut self.readers).await;
        let reported = self.control.lock().ok().and_then(|c| c.exit);
        tracing::debug!(?status, ?reported, "board session ended");
        match reported {
            Some(code) if code > 128 && code <= 128 + 64 => ExitInfo {
                code: None,
                signal: Some(code - 128),
            },
            Some(code) => ExitInfo {
                code: Some(code),
                signal: None,
            },
            // No trailer: the session itself ended (link lost, ssh killed).
            None => ExitInfo {
                code: None,
                signal: self.signalled.or_else(|| {
                    use std::os::unix::process::ExitStatusExt;
                    status.ok().and_then(|s| s.signal())
                }),
            },
        }
    }

    async fn signal(&mut self, signal: StopSignal) -> Result<(), InfraError> {
        let (word, number) = match signal {
            StopSignal::Terminate => ("TERM\n", 15),
            StopSignal::Kill => ("KILL\n", 9),
        };
        self.signalled = Some(number);
        let delivered = match self.stdin.as_mut() {
            Some(stdin) => stdin.write_all(word.as_bytes()).await.is_ok() && stdin.flush().await.is_ok(),
            None => false,
        };
        if !delivered && signal == StopSignal::Kill {
            // The session is unusable: ending it makes the wrapper kill the workload.
            let _ = self.child.start_kill();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_sections_are_parsed() {
        let up_fd = "flags 0x40c1\ntype 280\n3: can0: <NOARP,UP,LOWER_UP,ECHO> mtu 72 qdisc pfifo_fast state UP mode DEFAULT\n    link/can  promiscuity 0\n    can <FD> state ERROR-ACTIVE (berr-counter tx 0 rx 0) restart-ms 100\n\t  bitrate 500000 sample-point 0.875\n\t  dbitrate 2000000 dsample-point 0.750\n";
        let s = parse_link(up_fd);
        assert_eq!(
            s,
            LinkState {
                exists: true,
                up: true,
                link_type: Some(280),
                bitrate: Some(500000),
                dbitrate: Some(2000000),
                fd: true
            }
        );
        assert_eq!(parse_link("missing\n"), LinkState::default());
        let down = parse_link("flags 0x1080\ntype 280\n");
        assert!(down.exists && !down.up);
    }

    fn iface(fd: bool) -> CanInterface {
        CanInterface {
            name: "can0".into(),
            bus: None,
            bitrate: 500000,
            fd,
            dbitrate: None,
            bench: BenchSide::SocketCan("can0".into()),
        }
    }

    #[test]
    fn link_findings_say_what_is_wrong() {
        let missing = check_link(&iface(false), LinkState::default(), "on the board");
        assert!(!missing.ok);
        assert_eq!(missing.detail, "CAN interface can0 does not exist on the board");
        let ether = LinkState {
            exists: true,
            up: true,
            link_type: Some(1),
            ..LinkState::default()
        };
        assert!(check_link(&iface(false), ether, "on the board")
            .detail
            .contains("not a CAN interface"));
        let down = LinkState {
            exists: true,
            link_type: Some(280),
            ..LinkState::default()
        };
        assert!(check_link(&iface(true), down, "on the board")
            .detail
            .contains("is down: `ip link set can0 up type can bitrate 500000 fd on`"));
        let slow = LinkState {
            exists: true,
            up: true,
            link_type: Some(280),
            bitrate: Some(250000),
            ..LinkState::default()
        };
        assert!(check_link(&iface(false), slow, "on the board")
            .detail
            .contains("runs at 250000 bit/s"));
        let classic = LinkState {
            exists: true,
            up: true,
            link_type: Some(280),
            bitrate: Some(500000),
            ..LinkState::default()
        };
        assert!(check_link(&iface(true), classic.clone(), "on the board")
            .detail
            .contains("not in FD mode"));
        assert!(check_link(&iface(false), classic, "on the board").ok);
    }
}
