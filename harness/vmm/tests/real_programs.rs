//! Real programs in the VM: dynamically linked ELF programs (their interpreter and libraries loaded from
//! the guest root), Debian's `candump`/`cansend` (can-utils) and `busybox` unmodified, and a C program
//! (`tests/c/events.c`, built here with gcc, static and dynamic) that checks pipes, select/pselect6,
//! poll, epoll over pipes/eventfds/timerfds, eventfd, timerfd, directories, statx and fstatat — plus what
//! stays unsupported: threads (one `threads unsupported in vm` line) and fork (`EAGAIN`, one line).
//!
//! Needs gcc, can-utils (`/usr/bin/candump`, `/usr/bin/cansend`) and busybox (`/bin/busybox`); a missing
//! one fails the test (`.ci/run` installs them). Without /dev/kvm the tests are skipped loudly, like the
//! other KVM tests.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

const LIMIT: Duration = Duration::from_secs(60);

/// Compiles `tests/c/<name>.c` into `dir` (static with `-static`); returns the executable.
fn gcc(dir: &Path, name: &str, static_link: bool) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/c/{name}.c"));
    let out = dir.join(if static_link {
        format!("{name}-static")
    } else {
        name.to_string()
    });
    let mut cmd = Command::new("gcc");
    cmd.args(["-O1", "-Wall", "-o"])
        .arg(&out)
        .arg(&src)
        .arg("-lpthread");
    if static_link {
        cmd.arg("-static");
    }
    let status = cmd.status().expect("gcc must be installed for this test");
    assert!(status.success(), "gcc {} failed", src.display());
    out
}

fn required(path: &str) -> PathBuf {
    let p = PathBuf::from(path);
    assert!(
        p.exists(),
        "{path} is missing: install it (apt-get install can-utils busybox); .ci/run does"
    );
    p
}

/// The interpreter and libraries `ldd` lists for `binary`.
fn ldd(binary: &Path) -> Vec<PathBuf> {
    let out = Command::new("ldd").arg(binary).output().expect("run ldd");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if text.contains("not a dynamic executable") {
        return Vec::new();
    }
    assert!(out.status.success(), "ldd {}: {text}", binary.display());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let rest = l.split_once("=>").map_or(l, |(_, r)| r).trim();
            let path = rest.split(" (").next()?.trim();
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// A guest root holding `binary`'s interpreter and libraries at their host paths (copies), plus `files`.
fn root_with_libs(binary: &Path, files: &[(&str, &str)]) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    for lib in ldd(binary) {
        let at = root.path().join(lib.strip_prefix("/").unwrap());
        std::fs::create_dir_all(at.parent().unwrap()).unwrap();
        std::fs::copy(&lib, &at).unwrap();
    }
    for (path, content) in files {
        let at = root.path().join(path);
        std::fs::create_dir_all(at.parent().unwrap()).unwrap();
        std::fs::write(at, content).unwrap();
    }
    root
}

fn vm_run(elf: &Path, root: Option<&Path>, env: &[&str], args: &[&str]) -> Output {
    let mut cmd = Command::new(vmm());
    cmd.arg("run").arg("--elf").arg(elf);
    if let Some(r) = root {
        cmd.arg("--root").arg(r);
    }
    for e in env {
        cmd.arg("--env").arg(e);
    }
    cmd.arg("--").args(args).env_remove("RUST_LOG");
    run_with_timeout(&mut cmd, LIMIT)
}

fn assert_all_ok(what: &str, out: &Output) {
    assert_eq!(out.status.code(), Some(0), "{what}: {out:?}");
    assert!(!out.stdout.contains("FAIL"), "{what}:\n{}", out.stdout);
    for check in [
        "ok pipe read",
        "ok select timeout",
        "ok pselect ready",
        "ok epoll_wait timer",
        "ok epoll_wait pipe+eventfd",
        "ok poll",
        "ok self pipe read",
        "ok readdir",
        "ok rewinddir",
        "ok fstatat AT_EMPTY_PATH",
        "ok statx",
        "ok statx pipe",
    ] {
        assert!(
            out.stdout.lines().any(|l| l == check),
            "{what}: missing `{check}` in\n{}",
            out.stdout
        );
    }
}

#[test]
fn events_and_directories_static_and_dynamic() {
    if !kvm_or_skip("events_and_directories_static_and_dynamic") {
        return;
    }
    let build = tempfile::tempdir().unwrap();
    let files = [("dir/a", "xy"), ("dir/b", "b")];
    // Static, in a root that only holds the directory.
    let stat = gcc(build.path(), "events", true);
    let root = root_with_libs(&stat, &files);
    let out = vm_run(&stat, Some(root.path()), &[], &["/dir"]);
    assert_all_ok("static", &out);
    // Dynamic, in a root that holds the directory and exactly the libraries ldd lists.
    let dynamic = gcc(build.path(), "events", false);
    let root = root_with_libs(&dynamic, &files);
    assert!(root.path().join("lib64/ld-linux-x86-64.so.2").exists());
    let out = vm_run(&dynamic, Some(root.path()), &[], &["/dir"]);
    assert_all_ok("dynamic", &out);
    assert!(!out.stderr.contains("threads unsupported"), "{}", out.stderr);
}

#[test]
fn threads_fail_with_one_clear_line() {
    if !kvm_or_skip("threads_fail_with_one_clear_line") {
        return;
    }
    let build = tempfile::tempdir().unwrap();
    let dynamic = gcc(build.path(), "events", false);
    let root = root_with_libs(&dynamic, &[("dir/a", "xy"), ("dir/b", "b")]);
    let out = vm_run(&dynamic, Some(root.path()), &["EVENTS_TRY_THREAD=1"], &["/dir"]);
    assert!(
        out.stdout.contains("ok pthread_create fails with EAGAIN"),
        "{out:?}"
    );
    assert_eq!(
        out.stderr.matches("threads unsupported in vm").count(),
        1,
        "{}",
        out.stderr
    );
}

#[test]
fn dynamic_program_needs_a_root_and_says_so() {
    if !kvm_or_skip("dynamic_program_needs_a_root_and_says_so") {
        return;
    }
    let candump = required("/usr/bin/candump");
    let out = vm_run(&candump, None, &[], &["-h"]);
    assert_eq!(out.status.code(), Some(70), "{out:?}");
    assert!(
        out.stderr
            .contains("dynamically linked (interpreter /lib64/ld-linux-x86-64.so.2)"),
        "{}",
        out.stderr
    );
    // A root without the interpreter.
    let empty = tempfile::tempdir().unwrap();
    let out = vm_run(&candump, Some(empty.path()), &[], &["-h"]);
    assert_eq!(out.status.code(), Some(70), "{out:?}");
    assert!(out.stderr.contains("program interpreter"), "{}", out.stderr);
}

#[test]
fn candump_help_matches_native() {
    if !kvm_or_skip("candump_help_matches_native") {
        return;
    }
    let candump = required("/usr/bin/candump");
    let native = run_with_timeout(Command::new(&candump).arg("-h"), LIMIT);
    let root = root_with_libs(&candump, &[]);
    let vm = vm_run(&candump, Some(root.path()), &[], &["-h"]);
    assert_eq!(vm.status.code(), native.status.code(), "{vm:?}");
    assert!(vm.stderr.contains("Usage: candump"), "{vm:?}");
    assert_eq!(
        vm.stderr.replace("/candump", "candump"),
        native.stderr.replace(&candump.display().to_string(), "candump"),
    );
    // The host's / as the guest root works as well.
    let vm = vm_run(&candump, Some(Path::new("/")), &[], &["-h"]);
    assert!(vm.stderr.contains("Usage: candump"), "{vm:?}");
}

#[test]
fn cansend_puts_a_frame_on_the_bus() {
    if !kvm_or_skip("cansend_puts_a_frame_on_the_bus") {
        return;
    }
    let cansend = required("/usr/bin/cansend");
    let dir = tempfile::tempdir().unwrap();
    let mut bus = Bus::start(dir.path(), "body");
    let root = root_with_libs(&cansend, &[]);
    let mut cmd = Command::new(vmm());
    cmd.arg("run")
        .arg("--elf")
        .arg(&cansend)
        .arg("--root")
        .arg(root.path())
        .arg("--can")
        .arg(format!("can0={}", bus.uri))
        .args(["--", "can0", "123#DEADBEEF"])
        .env_remove("RUST_LOG");
    let out = run_with_timeout(&mut cmd, LIMIT);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let rx = bus
        .wait_id(0x123, Duration::from_secs(10))
        .expect("cansend's frame on the bus");
    assert_eq!(rx.frame.payload(), &[0xde, 0xad, 0xbe, 0xef]);
}

#[test]
fn candump_prints_frames_from_the_bus() {
    if !kvm_or_skip("candump_prints_frames_from_the_bus") {
        return;
    }
    let candump = required("/usr/bin/candump");
    let dir = tempfile::tempdir().unwrap();
    let mut bus = Bus::start(dir.path(), "body");
    let root = root_with_libs(&candump, &[]);
    let mut child = Command::new(vmm())
        .arg("run")
        .arg("--elf")
        .arg(&candump)
        .arg("--root")
        .arg(root.path())
        .arg("--can")
        .arg(format!("can0={}", bus.uri))
        .args(["--", "-L", "-n", "2", "can0"])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (out, err) = collect(&mut child);
    // candump joins the bus at bind; frames sent before that are not its. Send until it has two.
    let mut status = None;
    for _ in 0..200 {
        bus.send("321#C0FFEE");
        bus.send("7FF#01");
        if let Some(s) = wait_timeout(&mut child, Duration::from_millis(50)) {
            status = Some(s);
            break;
        }
    }
    let status = status.unwrap_or_else(|| {
        let _ = child.kill();
        panic!("candump -n 2 did not end");
    });
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    assert!(status.success(), "{status:?}\n{out}\n{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[0].ends_with("can0 321#C0FFEE"), "{out}");
    assert!(lines[1].ends_with("can0 7FF#01"), "{out}");
}

#[test]
fn busybox_lists_directories_and_reads_files() {
    if !kvm_or_skip("busybox_lists_directories_and_reads_files") {
        return;
    }
    let busybox = required("/bin/busybox");
    let root = root_with_libs(&busybox, &[("etc/motd", "hello from the root\n"), ("srv/x", "1")]);
    let out = vm_run(&busybox, Some(root.path()), &[], &["ls", "/"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let names: Vec<&str> = out.stdout.lines().collect();
    for want in ["etc", "srv"] {
        assert!(names.contains(&want), "{out:?}");
    }
    let out = vm_run(&busybox, Some(root.path()), &[], &["ls", "-la", "/srv"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("-r--r--r--") && l.ends_with(" x")),
        "{out:?}"
    );
    let out = vm_run(&busybox, Some(root.path()), &[], &["cat", "/etc/motd"]);
    assert_eq!(out.stdout, "hello from the root\n", "{out:?}");
    let out = vm_run(
        &busybox,
        Some(root.path()),
        &[],
        &["sh", "-c", "echo one; echo two"],
    );
    assert_eq!(out.stdout, "one\ntwo\n", "{out:?}");
}

#[test]
fn busybox_pipeline_needs_fork_and_says_so() {
    if !kvm_or_skip("busybox_pipeline_needs_fork_and_says_so") {
        return;
    }
    let busybox = required("/bin/busybox");
    let root = root_with_libs(&busybox, &[]);
    let out = vm_run(&busybox, Some(root.path()), &[], &["sh", "-c", "echo a | cat"]);
    assert_ne!(out.status.code(), Some(0), "{out:?}");
    assert!(out.stderr.contains("can't fork"), "{}", out.stderr);
    assert_eq!(
        out.stderr.matches("processes unsupported in vm").count(),
        1,
        "{}",
        out.stderr
    );
}
