//! `doctor`: which environments this machine can host, and for each missing one why and how to fix it.
//!
//! It sits on top: it asks every kind of the environment registry ([`crate::env::registry`]) for its probe,
//! sweep and pre-flight checks, and nothing below it calls back into it.

use std::path::Path;

use crate::cleanup;
use crate::env;

/// One line of the doctor's report.
pub use crate::env::Check;

/// Runs every check.
pub async fn checks() -> Vec<Check> {
    let mut out = Vec::new();
    for kind in env::registry() {
        let (ok, detail) = match (kind.probe)().await {
            Ok(d) => (true, d),
            Err(d) => (false, d.reason),
        };
        out.push(Check {
            name: format!("env {}", kind.name),
            ok,
            detail,
        });
    }
    out.push(toolchain_check());
    out.push(kernel_can_check());
    out.push(emulation_check());
    out
}

fn toolchain_check() -> Check {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let version = std::process::Command::new(&cargo).arg("--version").output();
    let static_libc = [
        "/usr/lib/x86_64-linux-gnu/libc.a",
        "/usr/lib/aarch64-linux-gnu/libc.a",
        "/usr/lib/libc.a",
    ]
    .iter()
    .find(|p| Path::new(p).exists());
    match (version, static_libc) {
        (Ok(v), Some(libc)) if v.status.success() => Check {
            name: "workload build".into(),
            ok: true,
            detail: format!(
                "{} builds the project's `cargo`/`builtin` workloads and the harness's pod-init and agl-vmm as static executables (static glibc at {libc})",
                String::from_utf8_lossy(&v.stdout).trim(),
            ),
        },
        (Ok(_), None) => Check {
            name: "workload build".into(),
            ok: false,
            detail: "no static C library (libc.a) found: install it with `apt-get install libc6-dev`".into(),
        },
        _ => Check {
            name: "workload build".into(),
            ok: false,
            detail: format!(
                "cargo not found: install Rust (https://rustup.rs), or point {} at prebuilt workload binaries",
                crate::workload::PREBUILT_ENV
            ),
        },
    }
}

fn emulation_check() -> Check {
    match vcan::emu::available() {
        Ok(()) => Check {
            name: "SocketCAN emulation".into(),
            ok: true,
            detail: "seccomp user notification works: unmodified SocketCAN programs run natively and in containers without kernel CAN".into(),
        },
        Err(e) => Check {
            name: "SocketCAN emulation".into(),
            ok: false,
            detail: format!("{e}; workloads that speak SocketCAN need kernel CAN here (Linux 5.14+ has the emulation)"),
        },
    }
}

fn kernel_can_check() -> Check {
    match vcan::kernel::kernel_has_can() {
        Ok(()) => Check {
            name: "kernel SocketCAN".into(),
            ok: true,
            detail: "socket(AF_CAN) works: `socketcan:` endpoints and vcan/vxcan can be used".into(),
        },
        Err(e) => Check {
            name: "kernel SocketCAN".into(),
            ok: false,
            detail: format!(
                "socket(AF_CAN) failed ({e}); workloads get SocketCAN emulated and bridged to the userspace bus instead. For real SocketCAN: \
                 `modprobe can can-raw vcan vxcan can-gw` (Ubuntu: install linux-modules-extra-$(uname -r))"
            ),
        },
    }
}

/// Lines describing leftovers of killed runs (and removing them when `clean`).
pub async fn leftovers(clean: bool) -> Vec<String> {
    let root = cleanup::state_root();
    if clean {
        let mut lines = Vec::new();
        let report = cleanup::sweep(&root);
        for run in &report.runs {
            lines.push(format!("removed leftovers of run {run}"));
        }
        if report.processes > 0 {
            lines.push(format!("killed {} leftover processes", report.processes));
        }
        let live = cleanup::live_runs(&root);
        lines.extend(
            env::sweep(&live, env::Setup::default())
                .await
                .into_iter()
                .map(|(_, line)| line),
        );
        if lines.is_empty() {
            lines.push("nothing left over by earlier runs".into());
        }
        lines
    } else {
        let live = cleanup::live_runs(&root);
        let dead: Vec<String> = std::fs::read_dir(root.join("runs"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|r| !live.contains(r))
            .collect();
        if dead.is_empty() {
            vec!["no leftovers of killed runs".into()]
        } else {
            vec![format!(
                "leftovers of killed runs: {} (remove with `doctor --clean`)",
                dead.join(", ")
            )]
        }
    }
}

/// Pre-flight of every board of a lab inventory: reachable, key accepted, architecture, workload build for
/// it, CAN interfaces (or the hub endpoint of a simulated board). One line per fact; problems are not ok.
pub async fn lab_checks(path: &Path) -> Vec<Check> {
    let lab = match crate::lab::Lab::load(path) {
        Ok(lab) => lab,
        Err(e) => {
            return vec![Check {
                name: "lab".into(),
                ok: false,
                detail: e.to_string(),
            }]
        }
    };
    let setup = env::Setup { lab: Some(&lab) };
    let mut out = Vec::new();
    for kind in env::registry() {
        out.extend((kind.preflight)(setup).await);
    }
    out
}
