//! Host signals reach the guest while it computes at CPL3 without making syscalls: a registered handler
//! runs on a proper signal frame (and the interrupted FPU state survives it), no handler means the
//! default action (killed, exit 128 + signal). A signal that a wait's temporary mask unblocks (`ppoll`,
//! `pselect6`, `epoll_pwait`, `epoll_pwait2`, `rt_sigsuspend`) runs its handler before the caller's mask
//! is back (`tests/c/sigmask_wait.c`, built here with gcc -static).

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// Starts `hello-static spin [handler]` in the VM, waits for `spinning`, sends `sig`; returns (exit code,
/// rest of stdout, stderr).
fn spin_and_signal(handler: bool, sig: i32) -> (Option<i32>, String, String) {
    let mut cmd = Command::new(vmm());
    cmd.arg("run")
        .arg("--elf")
        .arg(guest("hello-static"))
        .args(["--", "spin"]);
    if handler {
        cmd.arg("handler");
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null())
        .env_remove("RUST_LOG")
        .spawn()
        .expect("spawn");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut first = String::new();
    out.read_line(&mut first).expect("first line");
    assert_eq!(first.trim(), "spinning");
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, sig) };
    let status = wait_timeout(&mut child, Duration::from_secs(10)).unwrap_or_else(|| {
        let _ = child.kill();
        panic!("the spinning guest did not react to the signal within 10 s");
    });
    let mut rest = String::new();
    let _ = out.read_to_string(&mut rest);
    let mut err = String::new();
    let _ = child.stderr.take().expect("stderr").read_to_string(&mut err);
    (status.code(), rest, err)
}

#[test]
fn handler_runs_while_the_guest_computes_and_fpu_state_survives() {
    if !kvm_or_skip("handler_runs_while_the_guest_computes_and_fpu_state_survives") {
        return;
    }
    let (code, out, err) = spin_and_signal(true, libc::SIGTERM);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.starts_with("signal 15 after "), "{out}");
    assert!(out.trim_end().ends_with("fpu ok"), "{out}");
    let (code, out, _) = spin_and_signal(true, libc::SIGINT);
    assert_eq!(code, Some(0));
    assert!(out.starts_with("signal 2 after "), "{out}");
}

#[test]
fn without_a_handler_the_guest_is_killed_by_the_signal() {
    if !kvm_or_skip("without_a_handler_the_guest_is_killed_by_the_signal") {
        return;
    }
    let (code, out, err) = spin_and_signal(false, libc::SIGTERM);
    assert_eq!(code, Some(128 + libc::SIGTERM), "{out}\n{err}");
    assert!(err.contains("agl-vmm: guest killed by SIGTERM"), "{err}");
    let (code, _, err) = spin_and_signal(false, libc::SIGINT);
    assert_eq!(code, Some(128 + libc::SIGINT), "{err}");
}

/// Compiles `tests/c/<name>.c` statically into `dir`; returns the executable.
fn gcc_static(dir: &Path, name: &str) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/c/{name}.c"));
    let out = dir.join(name);
    let status = Command::new("gcc")
        .args(["-O1", "-Wall", "-static", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .expect("gcc must be installed for this test");
    assert!(status.success(), "gcc {} failed", src.display());
    out
}

#[test]
fn a_signal_unblocked_by_a_waits_temporary_mask_runs_its_handler() {
    if !kvm_or_skip("a_signal_unblocked_by_a_waits_temporary_mask_runs_its_handler") {
        return;
    }
    let build = tempfile::tempdir().expect("tempdir");
    let exe = gcc_static(build.path(), "sigmask_wait");
    for mode in ["ppoll", "pselect6", "epoll_pwait", "epoll_pwait2", "sigsuspend"] {
        let mut child = Command::new(vmm())
            .arg("run")
            .arg("--elf")
            .arg(&exe)
            .args(["--", mode])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null())
            .env_remove("RUST_LOG")
            .spawn()
            .expect("spawn");
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut first = String::new();
        out.read_line(&mut first).expect("first line");
        assert_eq!(first.trim(), "ready", "{mode}");
        // SIGTERM is blocked outside the wait: sent before or during it, only the wait's mask lets it in.
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let status = wait_timeout(&mut child, Duration::from_secs(30)).unwrap_or_else(|| {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{mode}: the guest did not finish within 30 s of SIGTERM");
        });
        let mut rest = String::new();
        let _ = out.read_to_string(&mut rest);
        let mut err = String::new();
        let _ = child.stderr.take().expect("stderr").read_to_string(&mut err);
        assert_eq!(status.code(), Some(0), "{mode}: {rest}\n{err}");
        assert_eq!(rest.trim(), format!("ok {mode}"), "{mode}: {err}");
    }
}
