//! Connection and pre-flight checks of a board: reachable over ssh with the inventory's key, the
//! architecture it reports, its CAN interfaces (board side and bench side) or the hub address of a `hub:`
//! bus, and whether workloads can be built for it. `doctor --lab` shows them ([`preflight`], the registry's
//! pre-flight) and `prepare` refuses a board with problems.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::Path;
use std::time::Duration;

use futures::future::BoxFuture;

use super::remote::{with_console, COMMAND_LIMIT};
use crate::env::contract::{Check, Setup};
use crate::lab::{Arch, BenchSide, Board, CanInterface};
use crate::ssh::{last_lines, sh_quote, Ssh, SshError};

/// Pre-flight of every board of the lab: reachable, key accepted, architecture, workload build for it, CAN
/// interfaces (or the hub endpoint of a simulated board). One line per fact; problems are not ok.
pub(super) fn preflight(setup: Setup<'_>) -> BoxFuture<'_, Vec<Check>> {
    Box::pin(async move {
        let Some(lab) = setup.lab else { return Vec::new() };
        let scratch = std::env::temp_dir().join(format!("agl-parity-doctor-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&scratch);
        let checks = lab.boards.iter().map(|board| {
            let ssh = Ssh::new(board, &scratch.join(format!("known_hosts-{}", board.name)), None);
            async move {
                let mut out = check_board(board, &ssh).await;
                out.push(workload_build_check(board));
                out
            }
        });
        let out = futures::future::join_all(checks).await.concat();
        let _ = std::fs::remove_dir_all(&scratch);
        out
    })
}

/// Whether workloads can be had for a board's architecture: prebuilt binaries, the host build, or an
/// installed Rust target for cross-compiling.
fn workload_build_check(board: &Board) -> Check {
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
    if board.arch == Arch::host() {
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

/// A check of `what` that is fine.
fn fine(what: &str, detail: String) -> Check {
    Check {
        name: what.into(),
        ok: true,
        detail,
    }
}

/// A check of `what` that found a problem.
fn problem(what: &str, detail: String) -> Check {
    Check {
        name: what.into(),
        ok: false,
        detail,
    }
}

/// What a board says about one interface.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LinkState {
    pub exists: bool,
    pub up: bool,
    /// ARPHRD type (280: CAN).
    pub link_type: Option<u32>,
    pub bitrate: Option<u32>,
    pub dbitrate: Option<u32>,
    pub fd: bool,
}

/// Parses the interface section the pre-flight script prints.
pub fn parse_link(section: &str) -> LinkState {
    let mut s = LinkState::default();
    for line in section.lines() {
        let line = line.trim();
        if line == "missing" {
            return LinkState::default();
        }
        if let Some(flags) = line.strip_prefix("flags ") {
            s.exists = true;
            s.up = u32::from_str_radix(flags.trim_start_matches("0x"), 16).is_ok_and(|f| f & 1 == 1);
        } else if let Some(t) = line.strip_prefix("type ") {
            s.link_type = t.trim().parse().ok();
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        for pair in words.windows(2) {
            match pair[0] {
                "bitrate" => s.bitrate = pair[1].parse().ok(),
                "dbitrate" => s.dbitrate = pair[1].parse().ok(),
                _ => {}
            }
        }
        if words.first() == Some(&"can")
            && words
                .get(1)
                .is_some_and(|w| w.starts_with('<') && w.contains("FD"))
        {
            s.fd = true;
        }
    }
    s
}

const ARPHRD_CAN: u32 = 280;

/// Checks a board the way `doctor --lab` reports it: reachable, key accepted, architecture, and for each CAN
/// interface the board side (exists, is CAN, is up, bitrate/FD as the inventory says) and the bench side
/// (adapter, bridge, or a hub address the board can reach). One check per fact, problems first-class, each
/// named `<column> <fact>` (`board:rpi4 ssh`, `board:rpi4 can0`, `board:rpi4 bus vehicle`).
pub async fn check_board(board: &Board, ssh: &Ssh) -> Vec<Check> {
    let column = board.column();
    let mut out = facts(board, ssh).await;
    for check in &mut out {
        check.name = format!("{column} {}", check.name);
    }
    out
}

/// The checks of [`check_board`], each named by its fact alone (`ssh`, `arch`, `can0`, `bus vehicle`).
pub(super) async fn facts(board: &Board, ssh: &Ssh) -> Vec<Check> {
    let mut out = Vec::new();
    if !ssh.key_readable() {
        out.push(problem(
            "ssh",
            SshError::KeyMissing {
                board: board.name.clone(),
            }
            .to_string(),
        ));
        return out;
    }
    let mut script = String::from("uname -m\n");
    for c in board.can.iter().filter(|c| !matches!(c.bench, BenchSide::Hub(_))) {
        script.push_str(&format!(
            "i={}; echo \"@@if $i\"; if [ -e /sys/class/net/$i ]; then echo \"flags $(cat /sys/class/net/$i/flags)\"; \
             echo \"type $(cat /sys/class/net/$i/type)\"; ip -details link show \"$i\" 2>/dev/null; else echo missing; fi\n",
            sh_quote(&c.name)
        ));
    }
    let started = std::time::Instant::now();
    let output = match ssh.check("the pre-flight check", &script, COMMAND_LIMIT).await {
        Ok(o) => o,
        Err(e) => {
            out.push(problem("ssh", with_console(board, e.to_string())));
            return out;
        }
    };
    out.push(fine(
        "ssh",
        format!(
            "reachable as {}, key accepted ({} ms)",
            ssh.target(),
            started.elapsed().as_millis()
        ),
    ));
    let mut sections = output.split("@@if ");
    let machine = sections.next().unwrap_or("").trim().to_string();
    let reported = Arch::from_uname(&machine);
    if reported == board.arch {
        out.push(fine("arch", format!("{reported}, as the inventory says")));
    } else {
        out.push(problem(
            "arch",
            format!(
                "the inventory says {} but the board reports {machine}: workloads built for {} would not run there",
                board.arch,
                board.arch.triple()
            ),
        ));
    }
    let links: HashMap<String, LinkState> = sections
        .filter_map(|s| {
            let (name, rest) = s.split_once('\n')?;
            Some((name.trim().to_string(), parse_link(rest)))
        })
        .collect();
    for c in &board.can {
        match &c.bench {
            BenchSide::Hub(ip) => out.push(check_hub(ssh, c, *ip).await),
            bench => {
                out.push(check_link(
                    c,
                    links.get(&c.name).cloned().unwrap_or_default(),
                    "on the board",
                ));
                out.push(check_bench(c, bench).await);
            }
        }
    }
    out
}

fn check_link(c: &CanInterface, s: LinkState, side: &str) -> Check {
    let what = c.name.as_str();
    if !s.exists {
        return problem(what, format!("CAN interface {what} does not exist {side}"));
    }
    if s.link_type.is_some_and(|t| t != ARPHRD_CAN) {
        return problem(
            what,
            format!(
                "{what} {side} is not a CAN interface (link type {})",
                s.link_type.unwrap_or(0)
            ),
        );
    }
    if !s.up {
        return problem(
            what,
            format!(
                "CAN interface {what} {side} is down: `ip link set {what} up type can bitrate {}{}`",
                c.bitrate,
                match (c.fd, c.dbitrate) {
                    (true, Some(d)) => format!(" dbitrate {d} fd on"),
                    (true, None) => " fd on".to_string(),
                    _ => String::new(),
                }
            ),
        );
    }
    if let Some(b) = s.bitrate {
        if b != c.bitrate {
            return problem(
                what,
                format!(
                    "{what} {side} runs at {b} bit/s, the inventory says {}",
                    c.bitrate
                ),
            );
        }
    }
    if c.fd && !s.fd && s.bitrate.is_some() {
        return problem(
            what,
            format!("{what} {side} is not in FD mode, the inventory says fd: true"),
        );
    }
    if let (Some(want), Some(got)) = (c.dbitrate, s.dbitrate) {
        if want != got {
            return problem(
                what,
                format!("{what} {side} has data bitrate {got}, the inventory says {want}"),
            );
        }
    }
    fine(
        what,
        format!(
            "up {side}{}",
            s.bitrate.map(|b| format!(", {b} bit/s")).unwrap_or_default()
        ),
    )
}

async fn check_bench(c: &CanInterface, bench: &BenchSide) -> Check {
    let what = format!("bench {bench}");
    match bench {
        BenchSide::SocketCan(ifname) => {
            if let Err(e) = vcan::kernel::kernel_has_can() {
                return problem(
                    &what,
                    format!("this bench has no kernel SocketCAN ({e}): `modprobe can can-raw`"),
                );
            }
            let sys = Path::new("/sys/class/net").join(ifname);
            let read = |f: &str| std::fs::read_to_string(sys.join(f)).unwrap_or_default();
            let state = LinkState {
                exists: sys.exists(),
                up: u32::from_str_radix(read("flags").trim().trim_start_matches("0x"), 16)
                    .is_ok_and(|f| f & 1 == 1),
                link_type: read("type").trim().parse().ok(),
                ..LinkState::default()
            };
            let mut f = check_link(
                &CanInterface {
                    name: ifname.clone(),
                    ..c.clone()
                },
                state,
                "on the bench",
            );
            f.name = what;
            f
        }
        BenchSide::Tcp(addr) => {
            match tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr)).await {
                Ok(Ok(_)) => fine(&what, format!("bridge {addr} answers")),
                Ok(Err(e)) => problem(&what, format!("bridge {addr}: {e}")),
                Err(_) => problem(&what, format!("bridge {addr} did not answer within 5 s")),
            }
        }
        BenchSide::Hub(_) => fine(&what, String::new()),
    }
}

/// A `hub:` bus: the bench must own the address, and the board must reach a listener on it.
async fn check_hub(ssh: &Ssh, c: &CanInterface, ip: IpAddr) -> Check {
    let what = format!("bus {}", c.bus.as_deref().unwrap_or("(default)"));
    let listener = match TcpListener::bind(SocketAddr::new(ip, 0)) {
        Ok(l) => l,
        Err(e) => {
            return problem(
                &what,
                format!("hub address {ip} is not usable on this bench ({e}): the bench side of the board's link must have it"),
            )
        }
    };
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    let _ = listener.set_nonblocking(true);
    let script = format!(
        "if command -v bash >/dev/null 2>&1; then bash -c 'exec 3<>/dev/tcp/{ip}/{port}'; \
         elif command -v nc >/dev/null 2>&1; then nc -z -w 5 {ip} {port}; else echo 'neither bash nor nc on the board' >&2; exit 3; fi"
    );
    match ssh.run("the hub check", &script, None, COMMAND_LIMIT).await {
        Ok(o) if o.status == 0 => fine(
            &what,
            format!("the board reaches the bench hub address {ip} over TCP"),
        ),
        Ok(o) => problem(
            &what,
            format!(
                "the board cannot reach the bench hub address {ip}:{port}: {}",
                last_lines(&o.stderr, 2)
            ),
        ),
        Err(e) => problem(&what, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_sections_are_parsed() {
        let up_fd = "flags 0x40c1\ntype 280\n3: can0: <NOARP,UP,LOWER_UP,ECHO> mtu 72 qdisc pfifo_fast state UP mode DEFAULT\n    link/can  promiscuity 0\n    can <FD> state ERROR-ACTIVE (berr-counter tx 0 rx 0) restart-ms 100\n\t  bitrate 500000 sample-point 0.875\n\t  dbitrate 2000000 dsample-point 0.750\n";
        let s = parse_link(up_fd);
        assert_eq!(
            s,
            LinkState {
                exists: true,
                up: true,
                link_type: Some(280),
                bitrate: Some(500000),
                dbitrate: Some(2000000),
                fd: true
            }
        );
        assert_eq!(parse_link("missing\n"), LinkState::default());
        let down = parse_link("flags 0x1080\ntype 280\n");
        assert!(down.exists && !down.up);
    }

    fn iface(fd: bool) -> CanInterface {
        CanInterface {
            name: "can0".into(),
            bus: None,
            bitrate: 500000,
            fd,
            dbitrate: None,
            bench: BenchSide::SocketCan("can0".into()),
        }
    }

    #[test]
    fn link_findings_say_what_is_wrong() {
        let missing = check_link(&iface(false), LinkState::default(), "on the board");
        assert!(!missing.ok);
        assert_eq!(missing.detail, "CAN interface can0 does not exist on the board");
        let ether = LinkState {
            exists: true,
            up: true,
            link_type: Some(1),
            ..LinkState::default()
        };
        assert!(check_link(&iface(false), ether, "on the board")
            .detail
            .contains("not a CAN interface"));
        let down = LinkState {
            exists: true,
            link_type: Some(280),
            ..LinkState::default()
        };
        assert!(check_link(&iface(true), down, "on the board")
            .detail
            .contains("is down: `ip link set can0 up type can bitrate 500000 fd on`"));
        let slow = LinkState {
            exists: true,
            up: true,
            link_type: Some(280),
            bitrate: Some(250000),
            ..LinkState::default()
        };
        assert!(check_link(&iface(false), slow, "on the board")
            .detail
            .contains("runs at 250000 bit/s"));
        let classic = LinkState {
            exists: true,
            up: true,
            link_type: Some(280),
            bitrate: Some(500000),
            ..LinkState::default()
        };
        assert!(check_link(&iface(true), classic.clone(), "on the board")
            .detail
            .contains("not in FD mode"));
        assert!(check_link(&iface(false), classic, "on the board").ok);
    }
}
