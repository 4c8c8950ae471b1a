//! The SocketCAN conformance test (issue 10): one plain-C program, `fixtures/c/socketcan-conformance`,
//! built here with `gcc -static`, run unchanged against every way agl-parity gives a program SocketCAN —
//! (1) the seccomp emulation through `agl-parity exec`, (2) the VMM (`agl-vmm run`), (3) kernel `vcan`
//! where the kernel has CAN (not on these machines: skipped loudly, and then not counted as passed;
//! `AGL_PARITY_REQUIRE_KERNEL_CAN=1` turns the skip into a failure). Every check must pass in each, and the
//! emulation and the VMM must report the same checks with the same outcomes.
//!
//! The program is its own peer (several sockets on `can0`, each a node on the hub). For the one frame that
//! must come from outside (an error frame), it sends the marker 0x7F0 and the test answers on the bus with
//! an error frame of class `CAN_ERR_RESTARTED`: ordered by the marker, never by a sleep.
//!
//! A `known-difference NAME: ...` line is a documented difference of the userspace bus from kernel vcan
//! (docs/socketcan-emulation.md, "Conformance"); only the names in [`KNOWN_DIFFERENCES`] may report one,
//! and only outside the kernel.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use vcan::{Endpoint, Frame, OpenOptions};

/// Every check the program prints, in order.
const CHECKS: &[&str] = &[
    "ifindex_round_trip",
    "ifindex_unknown_name_enodev",
    "ifname_unknown_index_enodev",
    "bind_unknown_ifindex_enodev",
    "bind_short_address_einval",
    "getsockname",
    "getsockopt_filter",
    "getsockopt_defaults",
    "filter",
    "inverted_filter",
    "empty_filter_receives_nothing",
    "join_filters",
    "no_own_echo_by_default",
    "recv_own_msgs_confirm",
    "loopback_default_peer_receives",
    "loopback_off_no_own_echo",
    "loopback_off_peer",
    "fd_frame_not_to_classic_socket",
    "fd_frame_to_fd_socket",
    "fd_write_without_fd_frames_einval",
    "bad_write_length_einval",
    "error_frames_need_err_filter",
    "error_frame_from_bus",
    "so_timestampns",
    "so_timestamp",
    "eagain_when_empty",
    "poll_readiness",
];

/// Checks where the userspace bus may differ from kernel vcan (documented).
const KNOWN_DIFFERENCES: &[&str] = &["loopback_off_peer"];

/// The marker frame the program sends before it waits for the harness's error frame.
const MARKER_ID: u32 = 0x7F0;
/// `CAN_ERR_RESTARTED`.
const ERR_RESTARTED: u32 = 0x100;
/// The longest one run may take (each of its waits is bounded at 10 s).
const RUN_LIMIT: Duration = Duration::from_secs(120);

/// The conformance program, built once per test process.
fn program() -> &'static Path {
    static BUILT: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &BUILT
        .get_or_init(|| {
            let src = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../fixtures/c/socketcan-conformance/conformance.c");
            let dir = tempfile::tempdir().expect("tempdir");
            let out = dir.path().join("conformance");
            let output = Command::new("gcc")
                .args(["-std=c11", "-O1", "-Wall", "-Wextra", "-Werror", "-static", "-o"])
                .arg(&out)
                .arg(&src)
                .output()
                .expect("gcc must be installed for the conformance test (.ci/run installs it)");
            assert!(
                output.status.success(),
                "gcc -static {} failed:\n{}",
                src.display(),
                String::from_utf8_lossy(&output.stderr)
            );
            (dir, out)
        })
        .1
}

/// Answers the program's marker with an error frame, on its own thread (ends after answering or when
/// `limit` passes). Joined to the bus before the program starts, so the marker cannot be missed.
fn answer_marker(endpoint: &Endpoint, limit: Duration) -> std::thread::JoinHandle<bool> {
    let mut node = vcan::open(
        endpoint,
        &OpenOptions {
            node_name: "conformance-test".into(),
            ..OpenOptions::default()
        },
    )
    .expect("join the bus");
    std::thread::spawn(move || {
        let deadline = Instant::now() + limit;
        loop {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return false;
            };
            match node.recv(Some(left)) {
                Ok(Some(rx)) if rx.frame.id().map(|i| i.raw()) == Some(MARKER_ID) => {
                    let error = Frame::error(ERR_RESTARTED, [0; 8]).expect("error frame");
                    return node.send(&error).is_ok();
                }
                Ok(_) => {}
                Err(_) => return false,
            }
        }
    })
}

/// What one run printed.
#[derive(Debug)]
struct Run {
    env: &'static str,
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Run {
    /// `(check, outcome)` for each check line, in order (`ok`, `FAIL`, `known-difference`).
    fn outcomes(&self) -> Vec<(String, String)> {
        self.stdout
            .lines()
            .filter_map(|l| {
                let (outcome, rest) = l.split_once(' ')?;
                matches!(outcome, "ok" | "FAIL" | "known-difference").then(|| {
                    let name = rest.split(':').next().unwrap_or(rest).trim();
                    (name.to_string(), outcome.to_string())
                })
            })
            .collect()
    }

    /// Every check ran and passed (a known difference only where allowed).
    fn assert_conformant(&self, differences_allowed: bool) {
        let context = format!(
            "{}: exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.env, self.status, self.stdout, self.stderr
        );
        let outcomes = self.outcomes();
        let names: Vec<&str> = outcomes.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names, CHECKS,
            "the checks reported differ from the expected list\n{context}"
        );
        for (name, outcome) in &outcomes {
            let allowed = outcome == "ok"
                || (outcome == "known-difference"
                    && differences_allowed
                    && KNOWN_DIFFERENCES.contains(&name.as_str()));
            assert!(allowed, "{name}: {outcome}\n{context}");
        }
        assert!(self.status.success(), "the program failed\n{context}");
        println!(
            "{}: {} checks passed ({} known differences)",
            self.env,
            outcomes.iter().filter(|(_, o)| o == "ok").count(),
            outcomes.iter().filter(|(_, o)| o != "ok").count()
        );
    }
}

/// Runs `cmd` to completion within [`RUN_LIMIT`] (killed and failed when it overruns).
fn run(env: &'static str, mut cmd: Command) -> Run {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("{env}: cannot start {cmd:?}: {e}"));
    let out = common::finish_within(child, RUN_LIMIT);
    Run {
        env,
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The program under the seccomp emulation, as a user runs it: `agl-parity exec --can can0=... --`.
fn run_emulated() -> Run {
    let bus = common::TempHub::start("conformance");
    let answered = answer_marker(&bus.endpoint(), RUN_LIMIT);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_agl-parity"));
    cmd.arg("exec")
        .arg("--can")
        .arg(format!("can0={}", bus.uri))
        .arg("--")
        .arg(program())
        .arg("can0");
    let r = run("emulation", cmd);
    assert!(
        answered.join().unwrap_or(false),
        "emulation: the marker never came\n{r:?}"
    );
    r
}

/// The VMM of the vm environment, found or built as the harness does (`AGL_PARITY_VMM` overrides).
fn vmm() -> PathBuf {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(agl_parity::helpers::Helper::Vmm.path())
        .unwrap_or_else(|e| panic!("no agl-vmm: {e}"))
}

/// The program in a microVM of agl-vmm (static ELF, an empty guest root).
fn run_in_vm() -> Run {
    let bus = common::TempHub::start("conformance");
    let root = tempfile::tempdir().expect("tempdir");
    let answered = answer_marker(&bus.endpoint(), RUN_LIMIT);
    let mut cmd = Command::new(vmm());
    cmd.arg("run")
        .arg("--elf")
        .arg(program())
        .arg("--root")
        .arg(root.path())
        .arg("--can")
        .arg(format!("can0={}", bus.uri))
        .arg("--")
        .arg("can0");
    let r = run("vm", cmd);
    assert!(
        answered.join().unwrap_or(false),
        "vm: the marker never came\n{r:?}"
    );
    r
}

/// Says on the real stderr (not captured by the test harness, so it shows in every `cargo test` output)
/// that something was not run and why.
fn loud_skip(what: &str, reason: &str) {
    use std::io::Write;
    let line = format!("SKIPPED (loudly): {what} not run: {reason}");
    let bar = "!".repeat(line.len() + 8);
    let _ = writeln!(std::io::stderr(), "\n{bar}\n!!! {line} !!!\n{bar}");
}

#[test]
fn emulation_and_vm_pass_the_same_checks() {
    let emulated = run_emulated();
    emulated.assert_conformant(true);
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        loud_skip(
            "the VMM conformance run",
            &format!("/dev/kvm is not usable here ({e}); only the emulation was checked"),
        );
        return;
    }
    let vm = run_in_vm();
    vm.assert_conformant(true);
    assert_eq!(
        emulated.outcomes(),
        vm.outcomes(),
        "the emulation and the VMM report different outcomes\n--- emulation\n{}\n--- vm\n{}",
        emulated.stdout,
        vm.stdout
    );
}

/// Kernel vcan: the interface `AGL_PARITY_KERNEL_CAN_IF` (default `vcan0`, created beforehand with
/// `ip link add dev vcan0 type vcan && ip link set up vcan0`), no known differences allowed.
#[test]
fn kernel_vcan_passes_every_check() {
    let ifname = std::env::var("AGL_PARITY_KERNEL_CAN_IF").unwrap_or_else(|_| "vcan0".into());
    let required = std::env::var("AGL_PARITY_REQUIRE_KERNEL_CAN").is_ok_and(|v| v == "1");
    let reason = match vcan::kernel::kernel_has_can() {
        Err(e) => Some(format!("the kernel has no CAN ({e})")),
        Ok(()) => {
            let c = std::ffi::CString::new(ifname.clone()).expect("interface name");
            // SAFETY: if_nametoindex reads a NUL-terminated string.
            (unsafe { libc::if_nametoindex(c.as_ptr()) } == 0)
                .then(|| format!("no interface `{ifname}` (ip link add dev {ifname} type vcan)"))
        }
    };
    if let Some(reason) = reason {
        assert!(
            !required,
            "AGL_PARITY_REQUIRE_KERNEL_CAN=1 but kernel vcan conformance cannot run: {reason}"
        );
        loud_skip("kernel vcan conformance", &reason);
        return;
    }
    let answered = answer_marker(&Endpoint::SocketCan(ifname.clone()), RUN_LIMIT);
    let mut cmd = Command::new(program());
    cmd.arg(&ifname);
    let r = run("kernel vcan", cmd);
    assert!(
        answered.join().unwrap_or(false),
        "kernel: the marker never came\n{r:?}"
    );
    r.assert_conformant(false);
}
