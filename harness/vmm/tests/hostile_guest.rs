//! A hostile guest: bad pointers, huge lengths, unknown and forbidden syscalls, escapes from its root,
//! a thread attempt, and finally a fault. The VMM answers each call correctly, has no host side effects,
//! reports the fault and exits 128 + signal — and never crashes itself.

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use common::*;

fn run_hostile(fault: &str, root: &std::path::Path) -> Output {
    run_with_timeout(
        Command::new(vmm())
            .arg("run")
            .arg("--elf")
            .arg(guest("hostile-guest"))
            .arg("--root")
            .arg(root)
            .args(["--", fault])
            .env_remove("RUST_LOG"),
        Duration::from_secs(60),
    )
}

fn results(stdout: &str) -> HashMap<String, String> {
    stdout
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn every_bad_call_gets_the_right_answer() {
    if !kvm_or_skip("every_bad_call_gets_the_right_answer") {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("data.txt"), "data\n").unwrap();
    let _ = std::fs::remove_file("/tmp/agl-vmm-pwned");
    let out = run_hostile("jump", root.path());
    let r = results(&out.stdout);
    let expect: &[(&str, i32)] = &[
        ("write_bad_ptr", -libc::EFAULT),
        ("write_huge_len", -libc::EFAULT),
        ("write_overflow", -libc::EFAULT),
        ("open_data", 0),
        ("read_bad_ptr", -libc::EFAULT),
        ("read_into_stub_page", -libc::EFAULT),
        ("read_huge_len", -libc::EFAULT),
        ("open_bad_path_ptr", -libc::EFAULT),
        ("read_bad_fd", -libc::EBADF),
        ("poll_bad_ptr", -libc::EFAULT),
        ("clock_gettime_bad_ptr", -libc::EFAULT),
        ("unknown_9999", -libc::ENOSYS),
        ("unknown_335", -libc::ENOSYS),
        ("unknown_huge", -libc::ENOSYS),
        ("execve", -libc::EPERM),
        ("fork", -libc::EAGAIN),
        ("vfork", -libc::EAGAIN),
        ("clone", -libc::EAGAIN),
        ("ptrace", -libc::EPERM),
        ("mount", -libc::EPERM),
        ("reboot", -libc::EPERM),
        ("kill_init", -libc::ESRCH),
        ("setuid", -libc::EPERM),
        ("sigaction_sigkill", -libc::EINVAL),
        ("arch_prctl_noncanonical", -libc::EPERM),
        ("open_etc_passwd", -libc::ENOENT),
        ("open_dotdot_passwd", -libc::ENOENT),
        ("open_create", -libc::EROFS),
        ("socket_inet_stream", -libc::EACCES),
        ("mmap_huge", -libc::ENOMEM),
        ("mmap_fixed_system_area", -libc::ENOMEM),
        ("mprotect_unmapped", -libc::ENOMEM),
        ("munmap_misaligned", -libc::EINVAL),
    ];
    for (name, value) in expect {
        assert_eq!(
            r.get(*name).map(String::as_str),
            Some(value.to_string().as_str()),
            "{name}\nstdout:\n{}\nstderr:\n{}",
            out.stdout,
            out.stderr
        );
    }
    // The thread attempt fails cleanly with EAGAIN instead of hanging.
    assert_eq!(r.get("thread").map(String::as_str), Some("error 11"));
    // The wild jump: a page fault report, exit 139, the VMM not crashed (no panic, not 70).
    assert!(out.stdout.contains("about to fault: jump"));
    assert!(
        out.stderr
            .contains("agl-vmm: guest fault: #PF page fault (vector 14) at rip=0xdead0000")
            && out
                .stderr
                .contains("addr=0xdead0000 (user instruction fetch, page not mapped)"),
        "{}",
        out.stderr
    );
    assert_eq!(out.status.code(), Some(139), "{out:?}");
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    // Unknown syscalls are logged once each; forbidden ones are named.
    assert_eq!(out.stderr.matches("nr=9999").count(), 1, "{}", out.stderr);
    assert!(out.stderr.contains("\"execve\""), "{}", out.stderr);
    assert!(out.stderr.contains("single-threaded"), "{}", out.stderr);
    // No host side effects.
    assert!(!std::path::Path::new("/tmp/agl-vmm-pwned").exists());
    assert_eq!(
        std::fs::read_dir(root.path()).unwrap().count(),
        1,
        "the guest root is unchanged"
    );
}

#[test]
fn each_fault_kind_ends_the_guest_like_a_signal() {
    if !kvm_or_skip("each_fault_kind_ends_the_guest_like_a_signal") {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("data.txt"), "data\n").unwrap();
    for (fault, code, report) in [
        ("null", 139, "#PF page fault (vector 14)"),
        ("ud2", 132, "#UD invalid opcode (vector 6)"),
        ("div0", 136, "#DE divide error (vector 0)"),
        ("gp", 139, "#GP general protection (vector 13)"),
        ("int3", 133, "#BP breakpoint (vector 3)"),
        ("out", 139, "(I/O instruction in user mode)"),
        // munmap takes effect at once, also for a page the guest had already touched.
        ("use-after-munmap", 139, "(user write, page not mapped)"),
        ("none", 0, ""),
    ] {
        let out = run_hostile(fault, root.path());
        assert_eq!(out.status.code(), Some(code), "{fault}: {out:?}");
        if report.is_empty() {
            assert!(out.stdout.contains("no fault"));
            assert!(!out.stderr.contains("guest fault"));
        } else {
            let line = out
                .stderr
                .lines()
                .find(|l| l.starts_with("agl-vmm: guest fault: "))
                .unwrap_or_else(|| panic!("{fault}: no fault report in {}", out.stderr));
            assert!(line.contains(report), "{fault}: {line}");
            assert!(line.contains("rip=0x"), "{line}");
        }
        if fault == "null" {
            assert!(
                out.stderr.contains("addr=0x0 (user write, page not mapped)"),
                "{}",
                out.stderr
            );
        }
    }
}
