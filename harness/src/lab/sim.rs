//! A simulated bench lab: real OpenSSH servers as "boards", each in a network namespace of its own.
//!
//! Machines without boards (CI, laptops) test the board environment for real with this: per board a network
//! namespace `agl-board-<pid>-<n>`, a veth pair with a private /30 from `10.241.0.0/16` (bench side `.1`,
//! board side `.2`; only inside namespaces created here), and Debian's `sshd` started inside the namespace
//! with a generated host key, root login by a generated client key only, and `ListenAddress` the board
//! address. The workload on such a "board" joins the bench's userspace hub over TCP at the bench side of the
//! veth (`bench: hub:<bench ip>` in the generated inventory).
//!
//! [`SimLab`] tears everything down when dropped (sshd, every process in the namespace, the namespace and
//! with it the veth pair, the key directory). `sshd` also dies with the thread that started it
//! (`PR_SET_PDEATHSIG`), and [`sweep`] removes namespaces and directories of owners that are gone, so a
//! killed test leaves nothing for long: the next lab, `agl-parity doctor --clean` or `lab-sim down` sweeps.
//! Persistent labs (`agl-parity lab-sim up`, for `just lab-up`) use `agl-board-keep-<n>` and are removed by
//! [`down`].
//!
//! Needs root, `ip` (iproute2), `ssh-keygen` and `/usr/sbin/sshd` (`apt-get install openssh-server`;
//! [`install_openssh_server`] does that without starting the system's sshd).

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Prefix of every simulated board's network namespace.
pub const NS_PREFIX: &str = "agl-board-";
const SSHD: &str = "/usr/sbin/sshd";
const KEEP: &str = "keep";

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Why a simulated lab cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("the simulated lab needs {0}")]
    Unavailable(String),
    #[error("simulated lab setup failed: {0}")]
    Setup(String),
    /// Installing `openssh-server` for the simulated boards failed.
    #[error("{0}")]
    Install(String),
}

/// Whether this machine can host simulated boards; `Err` says what is missing.
pub fn available() -> Result<(), SimError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(SimError::Unavailable("root (network namespaces)".into()));
    }
    for tool in ["ip", "ssh", "scp", "ssh-keygen"] {
        if !in_path(tool) {
            return Err(SimError::Unavailable(format!(
                "`{tool}` (apt-get install iproute2 openssh-client)"
            )));
        }
    }
    if !Path::new(SSHD).is_file() {
        return Err(SimError::Unavailable(format!(
            "{SSHD} (apt-get install openssh-server)"
        )));
    }
    Ok(())
}

fn in_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|p| p.join(tool).is_file()))
}

/// Installs Debian's `openssh-server` when `sshd` is missing, without letting the package start the
/// system's own sshd (a temporary `policy-rc.d` refuses service starts during the install).
pub fn install_openssh_server() -> Result<(), SimError> {
    if Path::new(SSHD).is_file() {
        return Ok(());
    }
    let policy = Path::new("/usr/sbin/policy-rc.d");
    let placed = !policy.exists() && std::fs::write(policy, "#!/bin/sh\nexit 101\n").is_ok() && {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(policy, std::fs::Permissions::from_mode(0o755)).is_ok()
    };
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .output()
    };
    let result = apt(&["update", "-qq"])
        .and_then(|_| apt(&["install", "-y", "-qq", "openssh-server", "openssh-client"]));
    if placed {
        let _ = std::fs::remove_file(policy);
    }
    match result {
        Ok(o) if o.status.success() && Path::new(SSHD).is_file() => Ok(()),
        Ok(o) => Err(SimError::Install(format!(
            "apt-get install openssh-server failed: {}",
            crate::ssh::last_lines(&String::from_utf8_lossy(&o.stderr), 3)
        ))),
        Err(e) => Err(SimError::Install(format!("cannot run apt-get: {e}"))),
    }
}

/// A lab for tests: installs `openssh-server` when it is missing (as root), then starts `names`.
pub fn start_for_tests(names: &[&str]) -> Result<SimLab, SimError> {
    if nix::unistd::geteuid().is_root() && !Path::new(SSHD).is_file() {
        install_openssh_server()?;
    }
    available()?;
    SimLab::start(&SimSpec::boards(names))
}

/// One simulated board.
#[derive(Debug)]
pub struct SimBoard {
    pub name: String,
    pub namespace: String,
    /// Bench side of the veth pair (where the hub listens).
    pub bench_ip: Ipv4Addr,
    /// The board's address (sshd listens on port 22).
    pub board_ip: Ipv4Addr,
    sshd: Option<Child>,
}

/// A running simulated lab; dropping it removes everything it created.
#[derive(Debug)]
pub struct SimLab {
    dir: PathBuf,
    boards: Vec<SimBoard>,
    inventory: PathBuf,
    client_key: PathBuf,
    owned_dir: bool,
    detached: bool,
}

/// What to start.
#[derive(Debug, Clone)]
pub struct SimSpec {
    /// Board names, one namespace and sshd each.
    pub boards: Vec<String>,
    /// Where keys, configs and the inventory go (default: a new directory under the temp dir, removed on
    /// drop).
    pub dir: Option<PathBuf>,
    /// Keep running after this process ends (`lab-sim up`); removed by [`down`].
    pub persistent: bool,
}

impl SimSpec {
    pub fn boards(names: &[&str]) -> SimSpec {
        SimSpec {
            boards: names.iter().map(|s| s.to_string()).collect(),
            dir: None,
            persistent: false,
        }
    }
}

fn run(cmd: &str, args: &[&str]) -> Result<String, SimError> {
    let out = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| SimError::Setup(format!("cannot run {cmd}: {e}")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).to_string())
    } else {
        Err(SimError::Setup(format!(
            "`{cmd} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// A free /30 in 10.241.0.0/16: (bench, board) addresses.
fn allocate_subnet(seed: usize) -> Result<(Ipv4Addr, Ipv4Addr), SimError> {
    let used = run("ip", &["-4", "-o", "addr", "show"])?;
    for i in 0..16384 {
        let k = (seed + i) % 16384;
        let (c, d) = ((k / 64) as u8, ((k % 64) * 4) as u8);
        let bench = Ipv4Addr::new(10, 241, c, d + 1);
        if !used.contains(&format!(" {bench}/")) {
            return Ok((bench, Ipv4Addr::new(10, 241, c, d + 2)));
        }
    }
    Err(SimError::Setup("no free /30 left in 10.241.0.0/16".into()))
}

impl SimLab {
    /// Starts the boards of `spec` (sweeping leftovers of dead owners first).
    pub fn start(spec: &SimSpec) -> Result<SimLab, SimError> {
        available()?;
        for line in sweep() {
            tracing::warn!("{line}");
        }
        let pid = std::process::id();
        let (dir, owned_dir) = match &spec.dir {
            Some(d) => (d.clone(), false),
            None => (
                std::env::temp_dir().join(format!(
                    "agl-parity-lab-{pid}-{}",
                    COUNTER.fetch_add(1, Ordering::SeqCst)
                )),
                true,
            ),
        };
        std::fs::create_dir_all(&dir).map_err(|e| SimError::Setup(format!("{}: {e}", dir.display())))?;
        // sshd wants absolute paths in its configuration.
        let dir = dir
            .canonicalize()
            .map_err(|e| SimError::Setup(format!("{}: {e}", dir.display())))?;
        let mut lab = SimLab {
            inventory: dir.join("lab.yaml"),
            client_key: dir.join("client_ed25519"),
            dir,
            boards: Vec::new(),
            owned_dir,
            detached: false,
        };
        lab.keys()?;
        let _ = std::fs::create_dir_all("/run/sshd");
        for name in &spec.boards {
            let board = lab.start_board(name, spec.persistent)?;
            lab.boards.push(board);
        }
        lab.write_inventory()?;
        if spec.persistent {
            let state: String = lab
                .boards
                .iter()
                .map(|b| {
                    format!(
                        "{} {}\n",
                        b.namespace,
                        b.sshd.as_ref().map(Child::id).unwrap_or(0)
                    )
                })
                .collect();
            std::fs::write(lab.dir.join("state"), state).map_err(|e| SimError::Setup(e.to_string()))?;
        }
        Ok(lab)
    }

    fn keys(&self) -> Result<(), SimError> {
        for key in ["host_ed25519", "client_ed25519"] {
            let path = self.dir.join(key);
            if !path.exists() {
                let p = path.display().to_string();
                run(
                    "ssh-keygen",
                    &["-q", "-t", "ed25519", "-N", "", "-C", "agl-parity-sim", "-f", &p],
                )?;
            }
        }
        std::fs::copy(
            self.dir.join("client_ed25519.pub"),
            self.dir.join("authorized_keys"),
        )
        .map_err(|e| SimError::Setup(format!("authorized_keys: {e}")))?;
        Ok(())
    }

    fn start_board(&self, name: &str, persistent: bool) -> Result<SimBoard, SimError> {
        let pid = std::process::id();
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let namespace = if persistent {
            format!("{NS_PREFIX}{KEEP}-{n}-{pid}")
        } else {
            format!("{NS_PREFIX}{pid}-{n}")
        };
        let (bench_ip, board_ip) = allocate_subnet(pid as usize * 7 + n)?;
        let (host_if, board_if) = (format!("ag{pid:x}x{n:x}h"), format!("ag{pid:x}x{n:x}b"));
        let mut board = SimBoard {
            name: name.to_string(),
            namespace: namespace.clone(),
            bench_ip,
            board_ip,
            sshd: None,
        };
        run("ip", &["netns", "add", &namespace])?;
        // From here on, dropping `board` (through `remove`) undoes what was done.
        let setup = || -> Result<(), SimError> {
            run(
                "ip",
                &[
                    "link", "add", &host_if, "type", "veth", "peer", "name", &board_if, "netns", &namespace,
                ],
            )?;
            run("ip", &["addr", "add", &format!("{bench_ip}/30"), "dev", &host_if])?;
            run("ip", &["link", "set", &host_if, "up"])?;
            run(
                "ip",
                &[
                    "-n",
                    &namespace,
                    "addr",
                    "add",
                    &format!("{board_ip}/30"),
                    "dev",
                    &board_if,
                ],
            )?;
            run("ip", &["-n", &namespace, "link", "set", &board_if, "up"])?;
            run("ip", &["-n", &namespace, "link", "set", "lo", "up"])?;
            Ok(())
        };
        if let Err(e) = setup() {
            remove_board(&mut board);
            return Err(e);
        }
        let config = self.dir.join(format!("sshd_config-{name}"));
        let text = format!(
            "# simulated board `{name}` (agl-parity lab-sim)\nListenAddress {board_ip}:22\nHostKey {host}\nPidFile none\n\
             AuthorizedKeysFile {auth}\nPermitRootLogin prohibit-password\nPubkeyAuthentication yes\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nMaxSessions 100\nMaxStartups 100:30:200\n\
             PrintMotd no\nPrintLastLog no\nX11Forwarding no\nAllowTcpForwarding no\nSubsystem sftp internal-sftp\n",
            host = self.dir.join("host_ed25519").display(),
            auth = self.dir.join("authorized_keys").display(),
        );
        let started = std::fs::write(&config, text)
            .map_err(|e| SimError::Setup(format!("{}: {e}", config.display())))
            .and_then(|_| self.spawn_sshd(&namespace, &config, name, persistent));
        match started {
            Ok(child) => board.sshd = Some(child),
            Err(e) => {
                remove_board(&mut board);
                return Err(e);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let addr = SocketAddr::from((board_ip, 22));
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                break;
            }
            let exited = board.sshd.as_mut().and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() > deadline {
                let log =
                    std::fs::read_to_string(self.dir.join(format!("sshd-{name}.log"))).unwrap_or_default();
                remove_board(&mut board);
                return Err(SimError::Setup(format!(
                    "sshd of board `{name}` did not listen on {addr}: {}",
                    crate::ssh::last_lines(&log, 3)
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(board)
    }

    fn spawn_sshd(
        &self,
        namespace: &str,
        config: &Path,
        name: &str,
        persistent: bool,
    ) -> Result<Child, SimError> {
        let log = std::fs::File::create(self.dir.join(format!("sshd-{name}.log")))
            .map_err(|e| SimError::Setup(e.to_string()))?;
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", namespace, SSHD, "-D", "-e", "-f"])
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        use std::os::unix::process::CommandExt;
        // SAFETY: only prctl(2)/setsid(2), async-signal-safe, between fork and exec.
        unsafe {
            command.pre_exec(move || {
                if persistent {
                    libc::setsid();
                } else if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        command
            .spawn()
            .map_err(|e| SimError::Setup(format!("cannot start sshd: {e}")))
    }

    fn write_inventory(&self) -> Result<(), SimError> {
        let mut y = String::from(
            "# Generated by agl-parity's simulated lab: each board is an sshd in a network namespace.\nlab: sim\nboards:\n",
        );
        for b in &self.boards {
            y.push_str(&format!(
                "  - name: {name}\n    arch: {arch}\n    ssh: {{ host: {ip}, port: 22, user: root, key: client_ed25519, connect_timeout_s: 5 }}\n    \
                 workdir: /tmp/agl-parity-board/{name}\n    can:\n      - {{ name: vcan0, bitrate: 500000, fd: true, dbitrate: 2000000, bench: \"hub:{bench}\" }}\n    tags: [sim]\n",
                name = b.name,
                arch = super::Arch::host(),
                ip = b.board_ip,
                bench = b.bench_ip
            ));
        }
        std::fs::write(&self.inventory, y)
            .map_err(|e| SimError::Setup(format!("{}: {e}", self.inventory.display())))
    }

    /// The generated inventory (`lab.yaml` in the lab directory).
    pub fn inventory(&self) -> &Path {
        &self.inventory
    }

    /// The client key the boards accept.
    pub fn client_key(&self) -> &Path {
        &self.client_key
    }

    /// The lab directory (keys, sshd configs and logs, inventory).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn boards(&self) -> &[SimBoard] {
        &self.boards
    }

    /// Leaves everything running (persistent labs); [`down`] removes it.
    pub fn detach(mut self) -> PathBuf {
        self.detached = true;
        self.dir.clone()
    }
}

fn remove_board(board: &mut SimBoard) {
    if let Some(mut child) = board.sshd.take() {
        let _ = child.kill();
        let _ = child.wait();
    }
    remove_namespace(&board.namespace);
}

/// Kills every process in a namespace and deletes it (and so its veth pair).
fn remove_namespace(namespace: &str) -> usize {
    let pids = Command::new("ip")
        .args(["netns", "pids", namespace])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default();
    let mut killed = 0;
    for pid in pids.split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
        if nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).is_ok()
        {
            killed += 1;
        }
    }
    let _ = Command::new("ip").args(["netns", "del", namespace]).output();
    killed
}

impl Drop for SimLab {
    fn drop(&mut self) {
        if self.detached {
            return;
        }
        for b in &mut self.boards {
            remove_board(b);
        }
        if self.owned_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
        // The boards' workdirs live on the bench's filesystem; the parent goes once it is empty.
        let _ = std::fs::remove_dir(crate::lab::DEFAULT_WORKDIR);
    }
}

/// Removes a persistent lab started with `lab-sim up --dir <dir>`.
pub fn down(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let state = std::fs::read_to_string(dir.join("state")).unwrap_or_default();
    for line in state.lines() {
        let mut parts = line.split_whitespace();
        let (Some(ns), pid) = (parts.next(), parts.next().and_then(|p| p.parse::<i32>().ok())) else {
            continue;
        };
        if let Some(pid) = pid.filter(|p| *p > 0) {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
        let killed = remove_namespace(ns);
        out.push(format!("removed namespace {ns} ({killed} processes)"));
    }
    for f in [
        "state",
        "lab.yaml",
        "authorized_keys",
        "host_ed25519",
        "host_ed25519.pub",
        "client_ed25519",
        "client_ed25519.pub",
    ] {
        let _ = std::fs::remove_file(dir.join(f));
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if name.starts_with("sshd_config-") || name.starts_with("sshd-") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
    out
}

/// Removes namespaces (with their sshd and processes) and lab directories of simulated labs whose owner
/// process is gone; returns a line per removed item.
pub fn sweep() -> Vec<String> {
    let mut out = Vec::new();
    let alive = |pid: u32| Path::new(&format!("/proc/{pid}")).exists();
    let list = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default();
    for ns in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(rest) = ns.strip_prefix(NS_PREFIX) else {
            continue;
        };
        let Some(owner) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !alive(owner) {
            let killed = remove_namespace(ns);
            out.push(format!(
                "removed namespace {ns} of a dead test run ({killed} processes)"
            ));
        }
    }
    if let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let Some(owner) = name
                .strip_prefix("agl-parity-lab-")
                .and_then(|r| r.split('-').next())
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            if !alive(owner) && std::fs::remove_dir_all(e.path()).is_ok() {
                out.push(format!("removed {}", e.path().display()));
            }
        }
    }
    out
}
