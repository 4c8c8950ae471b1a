//! `doctor`: which environments this machine can host, and for each missing one why and how to fix it.

use std::path::Path;

use crate::cleanup;
use crate::env;

/// One line of the doctor's report.
#[derive(Debug, Clone)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    /// What was found, or why it is missing and how to fix it.
    pub detail: String,
}

/// Runs every check.
pub async fn checks(project_dir: &Path) -> Vec<Check> {
    let mut out = Vec::new();
    for kind in env::registry() {
        let (ok, detail) = match (kind.probe)().await {
            Ok(d) => (true, d),
            Err(d) => (false, d),
        };
        out.push(Check {
            name: format!("env {}", kind.name),
            ok,
            detail,
        });
    }
    out.push(toolchain_check(project_dir));
    out.push(kernel_can_check());
    out
}

fn toolchain_check(project_dir: &Path) -> Check {
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
                "{} builds static workloads from {} (static glibc at {libc})",
                String::from_utf8_lossy(&v.stdout).trim(),
                project_dir.join("fixtures/workloads").display()
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

/// Whether the kernel offers SocketCAN (`socket(AF_CAN)`).
pub fn kernel_can_available() -> Result<(), String> {
    // SAFETY: plain socket(2)/close(2) calls with constant arguments.
    let fd = unsafe { libc::socket(libc::AF_CAN, libc::SOCK_RAW, 1) };
    if fd >= 0 {
        // SAFETY: fd was just returned by socket(2).
        unsafe { libc::close(fd) };
        return Ok(());
    }
    Err(std::io::Error::last_os_error().to_string())
}

fn kernel_can_check() -> Check {
    match kernel_can_available() {
        Ok(()) => Check {
            name: "kernel SocketCAN".into(),
            ok: true,
            detail: "socket(AF_CAN) works: `socketcan:` endpoints and vcan/vxcan can be used".into(),
        },
        Err(e) => Check {
            name: "kernel SocketCAN".into(),
            ok: false,
            detail: format!(
                "socket(AF_CAN) failed ({e}); every environment uses the userspace bus instead. For real SocketCAN: \
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
        for kind in env::registry() {
            lines.extend((kind.sweep)(cleanup::live_runs(&root)).await);
        }
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
    let scratch = std::env::temp_dir().join(format!("agl-parity-doctor-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&scratch);
    let checks = lab.boards.iter().map(|board| {
        let ssh = crate::ssh::Ssh::new(board, &scratch.join(format!("known_hosts-{}", board.name)), None);
        async move {
            let mut out: Vec<Check> = env::board::check_board(board, &ssh)
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
