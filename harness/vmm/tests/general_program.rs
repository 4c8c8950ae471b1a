//! A general static program (`hello-static`) gives the same output and exit code in the VM as natively:
//! stdout and stderr, argv and environment, a file read from its guest root, heap, clocks, a 50 ms sleep.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

#[test]
fn hello_static_matches_native() {
    if !kvm_or_skip("hello_static_matches_native") {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    std::fs::write(
        root.path().join("greeting.txt"),
        "greetings from the guest root\n",
    )
    .unwrap();
    let bin = guest("hello-static");
    let env = [("HELLO", "world"), ("CAN_BUS", "socketcan:can0"), ("EMPTY", "")];

    let native = run_with_timeout(
        Command::new(&bin)
            .env_clear()
            .envs(env)
            .args(["hello", "42"])
            .arg(root.path().join("greeting.txt"))
            .args(["one", "two words", "--flag"]),
        Duration::from_secs(30),
    );
    let mut vm_cmd = Command::new(vmm());
    vm_cmd
        .arg("run")
        .arg("--elf")
        .arg(&bin)
        .arg("--root")
        .arg(root.path());
    for (k, v) in env {
        vm_cmd.arg("--env").arg(format!("{k}={v}"));
    }
    vm_cmd.args(["--", "hello", "42", "/greeting.txt", "one", "two words", "--flag"]);
    vm_cmd.env_remove("RUST_LOG");
    let vm = run_with_timeout(&mut vm_cmd, Duration::from_secs(30));

    assert_eq!(native.status.code(), Some(42), "native: {native:?}");
    assert_eq!(vm.status.code(), Some(42), "vm: {vm:?}");
    assert_eq!(
        vm.stdout, native.stdout,
        "stdout differs\nvm stderr:\n{}",
        vm.stderr
    );
    assert_eq!(vm.stderr, native.stderr, "stderr differs");
    for line in [
        "hello from stdout",
        "argv0: hello-static",
        r#"args: ["one", "two words", "--flag"]"#,
        "env: CAN_BUS=socketcan:can0",
        "env: EMPTY=",
        "env: HELLO=world",
        "file: greetings from the guest root",
        "clock: ok",
        "slept: ok",
    ] {
        assert!(
            vm.stdout.lines().any(|l| l == line),
            "missing `{line}` in\n{}",
            vm.stdout
        );
    }
    assert_eq!(
        vm.stdout.matches("env: ").count(),
        3,
        "the environment is exactly the --env list"
    );
}

#[test]
fn missing_file_and_exit_codes() {
    if !kvm_or_skip("missing_file_and_exit_codes") {
        return;
    }
    // No --root: the guest has no files at all; the error is the guest's, the VMM stays quiet.
    let vm = run_with_timeout(
        Command::new(vmm())
            .arg("run")
            .arg("--elf")
            .arg(guest("hello-static"))
            .args(["--", "hello", "0", "/etc/passwd"]),
        Duration::from_secs(30),
    );
    assert_eq!(vm.status.code(), Some(0));
    assert!(
        vm.stdout.contains("file: error: No such file or directory"),
        "{}",
        vm.stdout
    );
}

#[test]
fn vmm_errors_exit_70_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let not_elf = dir.path().join("script.sh");
    std::fs::write(&not_elf, "#!/bin/sh\necho hi\n").unwrap();
    for (args, expect) in [
        (
            vec!["run".to_string(), "--elf".into(), not_elf.display().to_string()],
            "not an ELF file",
        ),
        (
            vec!["run".into(), "--elf".into(), "/nonexistent/prog".into()],
            "cannot read",
        ),
        (vec!["run".into()], "--elf is required"),
        (
            vec![
                "run".into(),
                "--elf".into(),
                "/bin/true".into(),
                "--mem".into(),
                "1M".into(),
            ],
            "out of range",
        ),
        (
            vec!["run".into(), "--restore".into(), dir.path().display().to_string()],
            "state.json",
        ),
        (
            vec!["run".into(), "--can".into(), "can0=bogus:x".into()],
            "unknown scheme",
        ),
    ] {
        let out = run_with_timeout(Command::new(vmm()).args(&args), Duration::from_secs(30));
        assert_eq!(out.status.code(), Some(70), "{args:?}: {out:?}");
        assert!(
            out.stderr.contains(expect),
            "{args:?}: expected `{expect}` in {}",
            out.stderr
        );
    }
    // A dynamically linked program is refused with a hint.
    let out = run_with_timeout(
        Command::new(vmm()).args(["run", "--elf", "/bin/true"]),
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(70));
    assert!(out.stderr.contains("static"), "{}", out.stderr);
}

#[test]
fn probe_names_the_host() {
    let out = run_with_timeout(Command::new(vmm()).arg("probe"), Duration::from_secs(30));
    if std::path::Path::new("/dev/kvm").exists() {
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        let line = out.stdout.trim();
        assert!(
            line == "kvm: usable (PVM nested, CPL0 emulated)"
                || line == "kvm: usable (hardware virtualization)",
            "{line}"
        );
        let pvm = std::path::Path::new("/sys/module/kvm_pvm").exists();
        assert_eq!(line.contains("PVM"), pvm);
    } else {
        assert_eq!(out.status.code(), Some(1));
        assert!(out.stdout.starts_with("kvm: unavailable: "), "{}", out.stdout);
    }
}

/// A minimal hand-assembled `ET_EXEC` (non-PIE) static program at the classic link address 0x400000:
/// `write(1, "hi from ET_EXEC\n", 16); exit_group(3)`.
fn tiny_et_exec() -> Vec<u8> {
    let msg = b"hi from ET_EXEC\n";
    let mut code = vec![
        0xb8, 1, 0, 0, 0, // mov eax, 1 (write)
        0xbf, 1, 0, 0, 0, // mov edi, 1
        0x48, 0x8d, 0x35, 19, 0, 0, 0, // lea rsi, [rip + 19] (msg)
        0xba, 16, 0, 0, 0, // mov edx, 16
        0x0f, 0x05, // syscall
        0xb8, 231, 0, 0, 0, // mov eax, 231 (exit_group)
        0xbf, 3, 0, 0, 0, // mov edi, 3
        0x0f, 0x05, // syscall
    ];
    code.extend_from_slice(msg);
    let code_off = 64 + 56;
    let total = code_off + code.len();
    let base = 0x40_0000u64;
    let mut f = vec![0u8; code_off];
    f[0..4].copy_from_slice(b"\x7fELF");
    f[4] = 2; // 64-bit
    f[5] = 1; // little endian
    f[6] = 1;
    f[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    f[18..20].copy_from_slice(&62u16.to_le_bytes()); // x86-64
    f[20..24].copy_from_slice(&1u32.to_le_bytes());
    f[24..32].copy_from_slice(&(base + code_off as u64).to_le_bytes()); // entry
    f[32..40].copy_from_slice(&64u64.to_le_bytes()); // phoff
    f[52..54].copy_from_slice(&64u16.to_le_bytes());
    f[54..56].copy_from_slice(&56u16.to_le_bytes());
    f[56..58].copy_from_slice(&1u16.to_le_bytes());
    // PT_LOAD, R+X, the whole file at 0x400000.
    let p = 64;
    f[p..p + 4].copy_from_slice(&1u32.to_le_bytes());
    f[p + 4..p + 8].copy_from_slice(&5u32.to_le_bytes());
    f[p + 16..p + 24].copy_from_slice(&base.to_le_bytes());
    f[p + 24..p + 32].copy_from_slice(&base.to_le_bytes());
    f[p + 32..p + 40].copy_from_slice(&(total as u64).to_le_bytes());
    f[p + 40..p + 48].copy_from_slice(&(total as u64).to_le_bytes());
    f[p + 48..p + 56].copy_from_slice(&0x1000u64.to_le_bytes());
    f.extend_from_slice(&code);
    f
}

#[test]
fn et_exec_program_runs_at_its_link_address() {
    if !kvm_or_skip("et_exec_program_runs_at_its_link_address") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny");
    std::fs::write(&path, tiny_et_exec()).unwrap();
    let out = run_with_timeout(
        Command::new(vmm())
            .arg("run")
            .arg("--elf")
            .arg(&path)
            .arg("--trace-syscalls"),
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_eq!(out.stdout, "hi from ET_EXEC\n");
    assert!(
        out.stderr.contains("agl-vmm: syscall write(0x1, 0x40009c, 0x10"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("agl-vmm: syscall exit_group(0x3"),
        "{}",
        out.stderr
    );
}
