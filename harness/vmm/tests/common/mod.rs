//! Shared helpers of the agl-vmm integration tests: the static guest binaries (built on first use), the
//! KVM availability check, a guest root, a CAN hub with a listening node, process helpers with timeouts.

#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use vcan::hub::{Hub, HubConfig};
use vcan::{CanSocket, Frame, OpenOptions, Received};

/// The workspace's target directory.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"),
    }
}

/// Builds the fully static guests (`agl-workloads` bins) once per test process and returns their directory.
pub fn guest_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "--release",
                "-p",
                "agl-workloads",
                "--bins",
                "--target",
                "x86_64-unknown-linux-gnu",
            ])
            .env("RUSTFLAGS", "-C target-feature=+crt-static")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo to build the static guests");
        assert!(status.success(), "building the static guests failed");
        target_dir().join("x86_64-unknown-linux-gnu/release")
    })
}

pub fn guest(name: &str) -> PathBuf {
    let p = guest_dir().join(name);
    assert!(p.exists(), "{} was not built", p.display());
    p
}

pub fn vmm() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_agl-vmm"))
}

/// True if /dev/kvm can be used; otherwise prints a loud skip line (the caller returns).
pub fn kvm_or_skip(test: &str) -> bool {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        Ok(_) => true,
        Err(e) => {
            eprintln!();
            eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
            eprintln!("!!! SKIPPED {test}: /dev/kvm is not usable here ({e}); this KVM test did not run !!!");
            eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
            false
        }
    }
}

/// Output of a finished process.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs a command to completion with a deadline (killing it if it overruns, which fails the test).
pub fn run_with_timeout(cmd: &mut Command, limit: Duration) -> Output {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null());
    let mut child = cmd.spawn().expect("spawn");
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let status = wait_timeout(&mut child, limit).unwrap_or_else(|| {
        let _ = child.kill();
        let _ = child.wait();
        panic!("process did not finish within {limit:?}: {cmd:?}");
    });
    Output {
        status,
        stdout: t_out.join().unwrap_or_default(),
        stderr: t_err.join().unwrap_or_default(),
    }
}

/// Waits for a child up to `limit`.
pub fn wait_timeout(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        if Instant::now() >= deadline {
            return None;
        }
        // Polling a child's exit status; not a synchronisation sleep (the deadline bounds it).
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A hub on a Unix socket in `dir`, and a node joined to it.
pub struct Bus {
    pub hub: Hub,
    pub node: Box<dyn CanSocket>,
    pub uri: String,
}

impl Bus {
    pub fn start(dir: &Path, name: &str) -> Bus {
        let path = dir.join(format!("{name}.sock"));
        let hub = Hub::start(HubConfig {
            name: name.into(),
            unix_path: Some(path.clone()),
            ..HubConfig::default()
        })
        .expect("start hub");
        let endpoint = hub.unix_endpoint().expect("unix endpoint");
        let node = vcan::open(
            &endpoint,
            &OpenOptions {
                node_name: "test".into(),
                ..OpenOptions::default()
            },
        )
        .expect("join hub");
        Bus {
            hub,
            node,
            uri: format!("unix:{}", path.display()),
        }
    }

    /// Receives frames until one matches `pred` or `limit` passes.
    pub fn wait_for(&mut self, limit: Duration, mut pred: impl FnMut(&Frame) -> bool) -> Option<Received> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            match self.node.recv(Some(left)) {
                Ok(Some(rx)) if pred(&rx.frame) => return Some(rx),
                Ok(_) => {}
                Err(e) => panic!("bus error: {e}"),
            }
        }
    }

    /// Waits for a frame with this standard id.
    pub fn wait_id(&mut self, id: u32, limit: Duration) -> Option<Received> {
        self.wait_for(limit, |f| f.id().map(|i| i.raw()) == Some(id))
    }

    pub fn send(&mut self, text: &str) {
        let f: Frame = text.parse().expect("frame");
        self.node.send(&f).expect("send");
    }
}

/// Sends SIGTERM to a child.
pub fn sigterm(child: &Child) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
}

/// Reads a child's stdout to the end on a thread.
pub fn collect(child: &mut Child) -> (std::thread::JoinHandle<String>, std::thread::JoinHandle<String>) {
    let mut out = child.stdout.take().expect("stdout piped");
    let mut err = child.stderr.take().expect("stderr piped");
    (
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        }),
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        }),
    )
}
