//! The vm environment: the unmodified workload binary in a KVM microVM of this project's VMM
//! (`harness/vmm`, binary `agl-vmm`), which has no guest kernel and serves the Linux syscall ABI itself.
//!
//! * **Executables**: static ones, and dynamically linked ones: the guest root (a per-container scratch
//!   directory, read-only to the guest) gets the executable's interpreter and the libraries `ldd` lists, at
//!   their host paths ([`super::libraries`], the same list the container images get), and the VMM loads
//!   the interpreter from there (Debian's `candump`/`cansend` run this way). Files, directories, pipes,
//!   `select`/`poll`/`epoll`, eventfd and timerfd work in the guest; threads and child processes do not:
//!   the VMM writes `threads unsupported in vm` (or `processes unsupported in vm`) to the container's log,
//!   and when the workload then fails the harness adds a note saying so as the log's last line, so the
//!   report's log excerpt names the reason.
//!
//! * **CAN**: the workload uses the real SocketCAN API (`CAN_BUS=socketcan:can0`); the VMM provides the
//!   interfaces the manifest names (`can0`, `can1`, … by default, one per bus of the pod, in manifest order)
//!   and bridges them to the scenario's hub sockets, with the same `CAN_RAW` semantics ([`vcan::raw`]) as the
//!   seccomp emulation of the native and container environments.
//! * **Snapshots**: for each distinct container (binary, arguments, environment, memory) a template VM boots
//!   once per run and is snapshotted right before it joins its bus (`--snapshot-at-bind`); every scenario,
//!   and every restart, then restores from that snapshot (memory mapped copy-on-write), so every scenario
//!   starts from the same state and the workload's start-up frames still go onto the scenario's bus.
//!   `AGL_PARITY_VM_SNAPSHOTS=0` boots every incarnation cold instead.
//! * **Manifest**: memory limit → guest RAM (default 64 MiB); env and args as given; restart policy and
//!   readiness by the shared supervisor; exec readiness probes run the probe command in a VM of its own.
//! * Each VM is a host process carrying the run marker, so killed runs are swept like native processes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::OnceCell;

use super::contract::{
    no_preflight, single_column, sweep_nothing, DeployRequest, EnvKind, Environment, Instance, ProbeFailure,
    RunContext, Transport,
};
use super::launcher::{argv_for, HostLauncher};
use crate::cleanup::RUN_MARKER_ENV;
use crate::error::InfraError;
use crate::logs::LogSink;
use crate::supervisor::{Launcher, Process};

const DEFAULT_MEMORY: u64 = 64 << 20;
const KVM_GET_API_VERSION: libc::c_ulong = 0xAE00;

/// Registry entry.
pub fn kind() -> EnvKind {
    EnvKind {
        name: "vm",
        summary:
            "KVM microVM of agl-vmm: the workload (static or dynamic) at CPL3, syscalls and SocketCAN by the VMM",
        probe: || Box::pin(async { probe() }),
        columns: single_column,
        create: |_column, run, _setup| Ok(Arc::new(VmEnv::new(run))),
        // VMs are host processes with the run marker: the common process sweep removes them.
        sweep: sweep_nothing,
        preflight: no_preflight,
    }
}

/// Whether /dev/kvm is usable, and whether it is hardware KVM or PVM.
pub fn probe() -> Result<String, ProbeFailure> {
    use std::os::fd::AsRawFd;
    let kvm = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map_err(|e| {
            ProbeFailure::new(format!(
            "/dev/kvm cannot be opened ({e}): enable virtualization (VT-x/AMD-V) or nested virtualization, \
             `modprobe kvm_intel` / `kvm_amd`, and give this user access (`usermod -aG kvm $USER`)"
        ))
        })?;
    // SAFETY: KVM_GET_API_VERSION takes no argument and only returns an integer.
    let version = unsafe { libc::ioctl(kvm.as_raw_fd(), KVM_GET_API_VERSION, 0) };
    if version != 12 {
        return Err(ProbeFailure::new(format!(
            "/dev/kvm answers KVM_GET_API_VERSION with {version}, expected 12"
        )));
    }
    Ok(match host_kind() {
        HostKind::Pvm => {
            "KVM usable: PVM (nested, pagetable-based; guest CPL0 emulated, ~50-100 µs per exit)".into()
        }
        HostKind::Hardware => "KVM usable: hardware virtualization".into(),
    })
}

/// What kind of KVM this host has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKind {
    Pvm,
    Hardware,
}

pub fn host_kind() -> HostKind {
    if Path::new("/sys/module/kvm_pvm").exists() {
        HostKind::Pvm
    } else {
        HostKind::Hardware
    }
}

type Snapshot = Arc<OnceCell<Result<PathBuf, SnapshotError>>>;

/// Why the template VM of a command line gave no snapshot.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SnapshotError {
    #[error("{}: {reason}", .dir.display())]
    Directory { dir: PathBuf, reason: String },
    #[error("empty VMM command")]
    EmptyCommand,
    #[error("the template VM did not reach its bus within 120 s")]
    Timeout,
    #[error("cannot start the template VM: {0}")]
    Start(String),
    #[error("the template VM wrote no snapshot ({status}): {stderr}")]
    NoSnapshot {
        status: String,
        stderr: String,
        /// It ended with code 0: a program that never binds a CAN socket has nothing to snapshot at.
        clean_exit: bool,
    },
}

/// Workloads in KVM microVMs.
pub struct VmEnv {
    state_dir: PathBuf,
    run_id: String,
    snapshots: tokio::sync::Mutex<HashMap<String, Snapshot>>,
    use_snapshots: bool,
}

impl VmEnv {
    fn new(run: &RunContext) -> VmEnv {
        VmEnv {
            state_dir: run.state_dir.clone(),
            run_id: run.run_id.clone(),
            snapshots: tokio::sync::Mutex::new(HashMap::new()),
            use_snapshots: std::env::var("AGL_PARITY_VM_SNAPSHOTS")
                .map(|v| v != "0")
                .unwrap_or(true),
        }
    }

    /// The `agl-vmm` binary: the harness's own helper (`AGL_PARITY_VMM`, installed beside agl-parity, or
    /// built from the harness's source), never the project's.
    async fn vmm(&self) -> Result<PathBuf, InfraError> {
        crate::helpers::Helper::Vmm.path().await
    }

    /// The snapshot for a VM command line, made once per run by a template boot.
    async fn snapshot(
        &self,
        key: &str,
        template: Vec<String>,
        process_env: &[(String, String)],
    ) -> Result<PathBuf, SnapshotError> {
        let cell = {
            let mut map = self.snapshots.lock().await;
            map.entry(key.to_string())
                .or_insert_with(|| Arc::new(OnceCell::new()))
                .clone()
        };
        cell.get_or_init(|| async {
            let n = self.snapshots.lock().await.len();
            let dir = self.state_dir.join("vm-snapshots").join(n.to_string());
            std::fs::create_dir_all(&dir).map_err(|e| SnapshotError::Directory {
                dir: dir.clone(),
                reason: e.to_string(),
            })?;
            // The template boots cold and is snapshotted right before its first CAN bind(); its bus does not
            // exist, so it stops right after the snapshot.
            let mut argv = template;
            let at = argv.iter().position(|a| a == "run").map(|i| i + 1).unwrap_or(1);
            argv.insert(at, dir.display().to_string());
            argv.insert(at, "--snapshot-at-bind".into());
            let (program, args) = argv.split_first().ok_or(SnapshotError::EmptyCommand)?;
            let started = std::time::Instant::now();
            let out = tokio::process::Command::new(program)
                .args(args)
                .env_clear()
                .envs(process_env.iter().cloned())
                .kill_on_drop(true)
                .output();
            let out = tokio::time::timeout(std::time::Duration::from_secs(120), out)
                .await
                .map_err(|_| SnapshotError::Timeout)?
                .map_err(|e| SnapshotError::Start(e.to_string()))?;
            if std::fs::read_dir(&dir).map(|mut d| d.next().is_none()).unwrap_or(true) {
                let stderr = String::from_utf8_lossy(&out.stderr);
                return Err(SnapshotError::NoSnapshot {
                    status: out.status.to_string(),
                    stderr: stderr.trim().to_string(),
                    clean_exit: out.status.success(),
                });
            }
            tracing::info!(snapshot = %dir.display(), ms = started.elapsed().as_millis() as u64, "VM snapshot made");
            Ok(dir)
        })
        .await
        .clone()
    }
}

#[async_trait]
impl Environment for VmEnv {
    fn name(&self) -> &str {
        "vm"
    }

    fn transport(&self) -> Transport {
        "SocketCAN API (AF_CAN) served by the VMM, bridged to the userspace hub".into()
    }

    /// The guest's memory is the container's memory limit, and its root is read-only.
    fn enforces(&self) -> Vec<crate::manifest::Enforcement> {
        use crate::manifest::Enforcement;
        vec![
            Enforcement::MemoryLimit,
            Enforcement::ReadOnlyRoot,
            Enforcement::Volumes,
        ]
    }

    async fn prepare(&self, run: &RunContext) -> Result<(), InfraError> {
        probe().map_err(|e| InfraError::Unavailable {
            env: "vm".into(),
            reason: e.reason,
        })?;
        self.vmm().await?;
        run.catalog.ensure_built().await.map(|_| ())
    }

    async fn deploy(
        &self,
        run: &RunContext,
        request: DeployRequest<'_>,
    ) -> Result<Vec<Instance>, InfraError> {
        let pod = request.workload;
        let vmm = self.vmm().await?.display().to_string();
        // Each bus is the guest interface the manifest names (`can<i>` by default), bridged by the VMM to the
        // hub socket.
        let sockets = request.unix_sockets("vm")?;
        let buses: Vec<String> = sockets.iter().map(|(b, _)| b.clone()).collect();
        let guest_bus_env = super::contract::bus_env(&super::socketcan::socketcan_endpoints(pod, &buses));
        let ifnames: Vec<String> = buses.iter().map(|b| pod.interface_of(b)).collect();
        let can_args: Vec<String> = sockets
            .iter()
            .zip(&ifnames)
            .map(|((_, path), name)| format!("{name}=unix:{}", path.display()))
            .collect();
        let process_env = vec![(RUN_MARKER_ENV.to_string(), self.run_id.clone())];
        let mut instances = Vec::new();
        for container in &pod.containers {
            let binary = run.catalog.binary_for(&container.image).await?;
            let guest_args: Vec<String> = argv_for(container, &binary)?.into_iter().skip(1).collect();
            let memory = container.limits.memory_bytes.unwrap_or(DEFAULT_MEMORY);
            let workdir = request
                .scratch_dir
                .join(format!("{}-{}", pod.name, container.name));
            let root = workdir.join("root");
            std::fs::create_dir_all(&root).map_err(|e| InfraError::Launch {
                workload: pod.name.clone(),
                reason: format!("cannot create {}: {e}", root.display()),
            })?;
            // The pod's volumes, copied into the guest root (which the guest sees read-only).
            let mounts = crate::volumes::materialise(
                pod,
                container,
                &request.scratch_dir.join(format!("{}-volumes", pod.name)),
            )?;
            crate::volumes::copy_into_root(&mounts, &root).map_err(|e| InfraError::Launch {
                workload: pod.name.clone(),
                reason: format!("volumes into {}: {e}", root.display()),
            })?;
            install_libraries(&container.image.to_string(), &binary, &root).await?;
            let mut guest_env = container.env.clone();
            guest_env.extend(guest_bus_env.iter().cloned());
            let mut common = vec![
                "--mem".to_string(),
                memory.to_string(),
                "--root".into(),
                root.display().to_string(),
            ];
            for (k, v) in &guest_env {
                common.push("--env".into());
                common.push(format!("{k}={v}"));
            }
            let mut argv = vec![vmm.clone(), "run".into()];
            let mut boot = "cold boot".to_string();
            if self.use_snapshots {
                let mut template = vec![
                    vmm.clone(),
                    "run".into(),
                    "--elf".into(),
                    binary.display().to_string(),
                ];
                template.extend(common.iter().cloned());
                for name in &ifnames {
                    template.push("--can".into());
                    template.push(format!(
                        "{name}=unix:{}",
                        self.state_dir.join("no-bus.sock").display()
                    ));
                }
                template.push("--".into());
                template.extend(guest_args.iter().cloned());
                // The same container in every scenario: binary, memory, environment, arguments (not its scratch
                // root, which is empty at bind time, nor its bus sockets, given again at restore).
                let key = format!("{}|{memory}|{guest_env:?}|{guest_args:?}", binary.display());
                match self.snapshot(&key, template, &process_env).await {
                    Ok(dir) => {
                        boot = format!("restore from snapshot {}", dir.display());
                        argv.extend(["--restore".to_string(), dir.display().to_string()]);
                    }
                    // A program that exits without opening a CAN socket (an init container) has no bind to
                    // snapshot at: a cold boot is the normal case for it.
                    Err(e @ SnapshotError::NoSnapshot { clean_exit: true, .. }) => {
                        tracing::debug!(error = %e, "no VM snapshot: booting cold");
                        argv.extend(["--elf".to_string(), binary.display().to_string()]);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "no VM snapshot: booting cold");
                        argv.extend(["--elf".to_string(), binary.display().to_string()]);
                    }
                }
            } else {
                argv.extend(["--elf".to_string(), binary.display().to_string()]);
            }
            argv.extend(common.iter().cloned());
            for can in &can_args {
                argv.push("--can".into());
                argv.push(can.clone());
            }
            argv.push("--".into());
            argv.extend(guest_args.iter().cloned());
            let logs = request.container_log(&container.name)?;
            let launcher = Arc::new(VmLauncher {
                host: HostLauncher {
                    name: container.name.clone(),
                    binary: binary.clone(),
                    argv,
                    env: process_env.clone(),
                    workdir,
                    emulation: None,
                },
                vmm: vmm.clone(),
                binary,
                probe_args: common,
                boot,
                can_args: can_args.clone(),
                process_env: process_env.clone(),
            });
            instances.push(Instance::start(pod, container, launcher, logs));
        }
        Ok(instances)
    }
}

/// A dynamically linked executable's interpreter and libraries, into its guest root (a static one needs
/// nothing).
async fn install_libraries(workload: &str, binary: &Path, root: &Path) -> Result<(), InfraError> {
    let build_err = |reason: String| InfraError::Build {
        workload: workload.to_string(),
        reason,
    };
    let interpreter = crate::workload::elf_interpreter(binary)
        .map_err(|e| build_err(format!("{}: {e}", binary.display())))?;
    let Some(interpreter) = interpreter else {
        return Ok(());
    };
    let libraries = super::libraries::shared_libraries(binary, &interpreter)
        .await
        .map_err(|e| build_err(e.to_string()))?;
    super::libraries::install_into_root(root, &libraries).map_err(|e| build_err(e.to_string()))?;
    tracing::debug!(binary = %binary.display(), libraries = libraries.len(), "guest root holds the interpreter and libraries");
    Ok(())
}

/// What the VMM writes to stderr when the guest tries to start a thread (agl-vmm's
/// `syscalls::THREADS_UNSUPPORTED`).
pub const THREADS_UNSUPPORTED: &str = "threads unsupported in vm";
/// What it writes when the guest tries to start a child process.
pub const PROCESSES_UNSUPPORTED: &str = "processes unsupported in vm";

/// One incarnation's VMM process: when it fails after the VMM said the guest tried to start a thread or
/// a process, a harness note saying so becomes the log's last line (the report's log excerpt).
struct VmProcess {
    inner: Box<dyn Process>,
    logs: LogSink,
    /// The log line where this incarnation started.
    from: usize,
}

#[async_trait]
impl Process for VmProcess {
    async fn wait(&mut self) -> crate::supervisor::ExitInfo {
        let exit = self.inner.wait().await;
        if exit.code != Some(0) {
            for (line, what) in [
                (THREADS_UNSUPPORTED, "it tried to start a thread"),
                (PROCESSES_UNSUPPORTED, "it tried to start a child process (fork)"),
            ] {
                if self.logs.find(self.from, line).is_some() {
                    self.logs.note(&format!(
                        "the workload failed ({exit}) in the vm, where {line}: {what}, which agl-vmm refuses (EAGAIN)"
                    ));
                }
            }
        }
        exit
    }

    async fn signal(&mut self, signal: crate::supervisor::StopSignal) -> Result<(), InfraError> {
        self.inner.signal(signal).await
    }
}

/// A VMM process per incarnation; exec probes run in a VM of their own.
struct VmLauncher {
    host: HostLauncher,
    vmm: String,
    binary: PathBuf,
    probe_args: Vec<String>,
    /// How each incarnation starts (cold boot or restore), noted in the log.
    boot: String,
    can_args: Vec<String>,
    process_env: Vec<(String, String)>,
}

#[async_trait]
impl Launcher for VmLauncher {
    async fn launch(&self, logs: &LogSink) -> Result<Box<dyn Process>, InfraError> {
        logs.note(&format!("VM: {}", self.boot));
        let from = logs.len();
        let inner = self.host.launch(logs).await?;
        Ok(Box::new(VmProcess {
            inner,
            logs: logs.clone(),
            from,
        }))
    }

    async fn exec(&self, command: &[String]) -> Result<bool, InfraError> {
        let Some((first, args)) = command.split_first() else {
            return Ok(false);
        };
        let name = self
            .binary
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        if first.rsplit('/').next() != Some(name.as_str()) {
            return Err(InfraError::Launch {
                workload: self.host.name.clone(),
                reason: format!("exec probe `{first}`: a VM holds only the workload binary `{name}`"),
            });
        }
        let mut argv = vec![
            "run".to_string(),
            "--elf".into(),
            self.binary.display().to_string(),
        ];
        argv.extend(self.probe_args.iter().cloned());
        for can in &self.can_args {
            argv.push("--can".into());
            argv.push(can.clone());
        }
        argv.push("--".into());
        argv.extend(args.iter().cloned());
        let status = tokio::process::Command::new(&self.vmm)
            .args(&argv)
            .env_clear()
            .envs(self.process_env.iter().cloned())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .status()
            .await
            .map_err(|e| InfraError::Launch {
                workload: self.host.name.clone(),
                reason: format!("exec probe VM: {e}"),
            })?;
        Ok(status.success())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_dynamic_executable_gets_its_interpreter_and_libraries_into_the_guest_root() {
        let binary = Path::new("/bin/sh");
        let interpreter = crate::workload::elf_interpreter(binary)
            .unwrap()
            .expect("/bin/sh is dynamically linked here");
        let root = tempfile::tempdir().unwrap();
        install_libraries("sh", binary, root.path()).await.unwrap();
        let at = |p: &str| root.path().join(p.trim_start_matches('/'));
        assert!(at(&interpreter).is_file(), "{interpreter}");
        let libc = std::fs::read_dir(root.path().join("lib/x86_64-linux-gnu"))
            .map(|d| {
                d.flatten()
                    .any(|e| e.file_name().to_string_lossy().starts_with("libc.so"))
            })
            .unwrap_or(false);
        assert!(libc, "libc in the root");
        // A static executable needs nothing.
        let empty = tempfile::tempdir().unwrap();
        let script = empty.path().join("not-elf");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        install_libraries("x", &script, empty.path()).await.unwrap();
        assert_eq!(std::fs::read_dir(empty.path()).unwrap().count(), 1);
    }
}
