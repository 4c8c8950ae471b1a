//! The bench-lab inventory: which target boards a bench host can reach, and how.
//!
//! An inventory is a YAML file (example: `fixtures/lab/bench-lab.yaml`, schema: `fixtures/lab/README.md`).
//! Every mapping is read with `deny_unknown_fields`, so a misspelt field is an error naming the file and the
//! field path (`boards[1].can[0].bitrate`), never silently ignored.
//!
//! ```yaml
//! lab: bench-lab-1                      # optional name, shown in reports
//! boards:
//!   - name: rcar-h3                     # column `board:rcar-h3`
//!     arch: aarch64                     # x86_64 | aarch64 | armv7 | riscv64 (checked against `uname -m`)
//!     ssh:
//!       host: 192.168.50.21
//!       port: 22                        # default 22
//!       user: root                      # default root
//!       key: keys/rcar-h3.ed25519       # IdentityFile; relative to the inventory; `~/` is $HOME
//!       connect_timeout_s: 5            # default 5
//!       options: [ProxyJump=lab-gw]     # extra `ssh -o` options (default none)
//!     workdir: /tmp/agl-parity-board    # remote scratch directory (default)
//!     workloads: prebuilt/aarch64       # prebuilt workload binaries for this board (default: cargo build)
//!     can:
//!       - name: can0                    # interface on the board
//!         bus: vehicle                  # scenario bus it carries (default: any bus no other interface names)
//!         bitrate: 500000
//!         fd: true
//!         dbitrate: 2000000             # data-phase bitrate, FD only
//!         bench: socketcan:can0         # how the bench reaches the same bus: socketcan:<if> | tcp:<ip>:<port> | hub:<ip>
//!     power_on: usbrelay BITFT_1=1      # optional, run on the bench when the board does not answer
//!     power_off: usbrelay BITFT_1=0     # optional, run after the run when power_on was needed
//!     boot_timeout_s: 120               # how long to wait for ssh after power_on (default 120)
//!     console: picocom -b 115200 /dev/ttyUSB0   # optional, shown by doctor when the board is unreachable
//!     tags: [rcar, gen3]                # capability tags for `@needs:<tag>`
//! ```
//!
//! `bench: hub:<ip>` is the simulated lab (CI): there is no shared physical bus; the bench runs the scenario's
//! userspace hub listening on `<ip>` and the workload on the board joins it over TCP.
//!
//! **Capabilities.** A board offers its `tags` plus derived ones: `can`, `can-fd` (an interface with
//! `fd: true`), `bitrate:<n>` for each interface bitrate and `arch:<arch>`. A scenario tagged
//! `@needs:<capability>` runs only where the environment offers it, and is reported as *unsupported here*
//! elsewhere.
//!
//! **Credentials.** The key path is never printed: [`Redactor`] replaces it in every message that could
//! quote it (ssh's own errors included), and the `Debug` form of [`SshTarget`] hides it.

pub mod sim;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// An inventory that cannot be used, with the place that is wrong.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("cannot read lab inventory {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {field}: {reason}")]
    Field {
        path: PathBuf,
        field: String,
        reason: String,
    },
}

/// Processor architecture of a board, as `uname -m` names it (normalised).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arch(String);

impl Arch {
    /// The architectures workloads can be built for.
    pub const KNOWN: [&'static str; 4] = ["x86_64", "aarch64", "armv7", "riscv64"];

    /// Normalises a `uname -m` answer (`arm64` → `aarch64`, `armv7l` → `armv7`).
    pub fn from_uname(machine: &str) -> Arch {
        let m = machine.trim();
        let name = match m {
            "arm64" => "aarch64",
            "amd64" => "x86_64",
            m if m.starts_with("armv7") => "armv7",
            m => m,
        };
        Arch(name.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The Rust target triple static workloads are built for.
    pub fn triple(&self) -> String {
        match self.0.as_str() {
            "armv7" => "armv7-unknown-linux-gnueabihf".into(),
            "riscv64" => "riscv64gc-unknown-linux-gnu".into(),
            a => format!("{a}-unknown-linux-gnu"),
        }
    }

    /// The architecture of this bench host.
    pub fn host() -> Arch {
        Arch::from_uname(std::env::consts::ARCH)
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// How the bench host reaches the bus of a board interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BenchSide {
    /// A CAN adapter on the bench (PEAK, Kvaser, CANable …) wired to the same bus: `socketcan:can0`.
    SocketCan(String),
    /// A TCP bridge to the bus (a bus hub next to the adapter): `tcp:192.168.50.2:29536`.
    Tcp(SocketAddr),
    /// No shared bus: the bench runs the scenario's userspace hub on this address and the workload joins it
    /// over TCP (the simulated CI lab): `hub:10.241.0.1`.
    Hub(IpAddr),
}

impl BenchSide {
    fn parse(text: &str) -> Result<BenchSide, BenchSideError> {
        let (scheme, rest) = text
            .split_once(':')
            .ok_or_else(|| BenchSideError::NoScheme(text.to_string()))?;
        match scheme {
            "socketcan" if valid_ifname(rest) => Ok(BenchSide::SocketCan(rest.to_string())),
            "socketcan" => Err(BenchSideError::Interface(rest.to_string())),
            "tcp" => rest.parse().map(BenchSide::Tcp).map_err(|e| BenchSideError::Tcp {
                text: rest.to_string(),
                reason: e.to_string(),
            }),
            "hub" => rest.parse().map(BenchSide::Hub).map_err(|e| BenchSideError::Hub {
                text: rest.to_string(),
                reason: e.to_string(),
            }),
            other => Err(BenchSideError::Scheme(other.to_string())),
        }
    }
}

/// Why a `bench:` value of a lab inventory is not a bench side.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BenchSideError {
    #[error("`{0}`: expected socketcan:<if>, tcp:<ip>:<port> or hub:<ip>")]
    NoScheme(String),
    #[error("`{0}` is not a network interface name")]
    Interface(String),
    #[error("`{text}`: {reason} (expected <ip>:<port>)")]
    Tcp { text: String, reason: String },
    #[error("`{text}`: {reason} (expected an IP address of this bench)")]
    Hub { text: String, reason: String },
    #[error("unknown scheme `{0}`: expected socketcan:<if>, tcp:<ip>:<port> or hub:<ip>")]
    Scheme(String),
}

impl std::fmt::Display for BenchSide {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BenchSide::SocketCan(i) => write!(f, "socketcan:{i}"),
            BenchSide::Tcp(a) => write!(f, "tcp:{a}"),
            BenchSide::Hub(ip) => write!(f, "hub:{ip}"),
        }
    }
}

/// A CAN interface of a board and the bench's way onto the same bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanInterface {
    /// Interface name on the board (`can0`).
    pub name: String,
    /// Scenario bus carried; `None`: every bus no other interface names.
    pub bus: Option<String>,
    pub bitrate: u32,
    pub fd: bool,
    pub dbitrate: Option<u32>,
    pub bench: BenchSide,
}

/// How to log in to a board. The key path is a credential: see [`Redactor`].
#[derive(Clone, PartialEq, Eq)]
pub struct SshTarget {
    pub host: String,
    pub port: u16,
    pub user: String,
    /// IdentityFile, absolute.
    pub key: PathBuf,
    pub connect_timeout: Duration,
    /// Extra `-o` options.
    pub options: Vec<String>,
}

impl std::fmt::Debug for SshTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshTarget")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("key", &REDACTED)
            .finish_non_exhaustive()
    }
}

impl SshTarget {
    /// `user@host:port`, for messages (no credentials).
    pub fn display(&self) -> String {
        format!("{}@{}:{}", self.user, self.host, self.port)
    }
}

/// One board of the lab.
#[derive(Debug, Clone)]
pub struct Board {
    pub name: String,
    pub arch: Arch,
    pub ssh: SshTarget,
    pub workdir: String,
    pub workloads: Option<PathBuf>,
    pub can: Vec<CanInterface>,
    pub power_on: Option<String>,
    pub power_off: Option<String>,
    pub boot_timeout: Duration,
    pub console: Option<String>,
    pub tags: Vec<String>,
}

impl Board {
    /// The environment column of this board: `board:<name>`.
    pub fn column(&self) -> String {
        format!("board:{}", self.name)
    }

    /// Tags plus derived capabilities (`can`, `can-fd`, `bitrate:<n>`, `arch:<arch>`), sorted.
    pub fn capabilities(&self) -> Vec<String> {
        let mut caps = self.tags.clone();
        caps.push(format!("arch:{}", self.arch));
        if !self.can.is_empty() {
            caps.push("can".into());
        }
        if self.can.iter().any(|c| c.fd) {
            caps.push("can-fd".into());
        }
        for c in &self.can {
            caps.push(format!("bitrate:{}", c.bitrate));
        }
        caps.sort();
        caps.dedup();
        caps
    }

    /// The interface carrying scenario bus `bus`.
    pub fn interface_for(&self, bus: &str) -> Option<&CanInterface> {
        self.can
            .iter()
            .find(|c| c.bus.as_deref() == Some(bus))
            .or_else(|| self.can.iter().find(|c| c.bus.is_none()))
    }

    /// Whether the board's buses are shared physical buses (scenarios must then run one at a time).
    pub fn has_physical_bus(&self) -> bool {
        self.can.iter().any(|c| !matches!(c.bench, BenchSide::Hub(_)))
    }

    /// A redactor for everything this board's credentials could leak into.
    pub fn redactor(&self) -> Redactor {
        Redactor::for_key(&self.ssh.key)
    }
}

/// A parsed inventory.
#[derive(Debug, Clone)]
pub struct Lab {
    pub path: PathBuf,
    pub name: Option<String>,
    pub boards: Vec<Board>,
}

impl Lab {
    /// Reads and checks an inventory file.
    pub fn load(path: &Path) -> Result<Lab, LabError> {
        let text = std::fs::read_to_string(path).map_err(|source| LabError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Lab::parse(&text, path)
    }

    /// Parses inventory text; `path` names the source in errors and anchors relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Lab, LabError> {
        let err = |field: &str, reason: String| LabError::Field {
            path: path.to_path_buf(),
            field: field.to_string(),
            reason,
        };
        let de = serde_yaml::Deserializer::from_str(text);
        let raw: RawLab = serde_path_to_error::deserialize(de).map_err(|e| {
            let field = e.path().to_string();
            let field = if field == "." { "(document)".into() } else { field };
            err(&field, e.inner().to_string())
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut boards: Vec<Board> = Vec::new();
        if raw.boards.is_empty() {
            return Err(err("boards", "the inventory lists no board".into()));
        }
        for (i, b) in raw.boards.into_iter().enumerate() {
            let at = |f: &str| format!("boards[{i}].{f}");
            if !valid_name(&b.name) {
                return Err(err(
                    &at("name"),
                    format!("`{}`: use letters, digits, `-`, `_` and `.`", b.name),
                ));
            }
            if boards.iter().any(|o| o.name == b.name) {
                return Err(err(&at("name"), format!("board `{}` is listed twice", b.name)));
            }
            let arch = Arch::from_uname(&b.arch);
            if !Arch::KNOWN.contains(&arch.as_str()) {
                return Err(err(
                    &at("arch"),
                    format!(
                        "unknown architecture `{}` (known: {})",
                        b.arch,
                        Arch::KNOWN.join(", ")
                    ),
                ));
            }
            if b.ssh.host.trim().is_empty() {
                return Err(err(&at("ssh.host"), "empty host".into()));
            }
            for (j, o) in b.ssh.options.iter().enumerate() {
                if !o.contains('=') || o.starts_with('-') {
                    return Err(err(
                        &at(&format!("ssh.options[{j}]")),
                        format!("`{o}`: expected Name=value"),
                    ));
                }
            }
            let mut can = Vec::new();
            for (j, c) in b.can.into_iter().enumerate() {
                let f = |x: &str| at(&format!("can[{j}].{x}"));
                if !valid_ifname(&c.name) {
                    return Err(err(&f("name"), format!("`{}` is not an interface name", c.name)));
                }
                if c.bitrate == 0 || c.bitrate > 1_000_000 {
                    return Err(err(
                        &f("bitrate"),
                        format!("{} bit/s: classic CAN runs at 1..=1000000 bit/s", c.bitrate),
                    ));
                }
                match (c.fd, c.dbitrate) {
                    (false, Some(_)) => {
                        return Err(err(&f("dbitrate"), "a data bitrate needs `fd: true`".into()))
                    }
                    (true, Some(d)) if d < c.bitrate || d > 12_000_000 => {
                        return Err(err(
                            &f("dbitrate"),
                            format!("{d} bit/s: must be at least the bitrate and at most 12000000"),
                        ))
                    }
                    _ => {}
                }
                let bench = BenchSide::parse(&c.bench).map_err(|r| err(&f("bench"), r.to_string()))?;
                can.push(CanInterface {
                    name: c.name,
                    bus: c.bus,
                    bitrate: c.bitrate,
                    fd: c.fd,
                    dbitrate: c.dbitrate,
                    bench,
                });
            }
            if can.iter().filter(|c| c.bus.is_none()).count() > 1 {
                return Err(err(
                    &at("can"),
                    "at most one interface may leave `bus` unset (it carries every other bus)".into(),
                ));
            }
            if b.tags.iter().any(|t| t == "can-fd") && !can.iter().any(|c| c.fd) {
                return Err(err(
                    &at("tags"),
                    "tag `can-fd` but no interface has `fd: true`".into(),
                ));
            }
            let expand = |p: &str| -> PathBuf {
                match p.strip_prefix("~/") {
                    Some(rest) => std::env::var_os("HOME")
                        .map(PathBuf::from)
                        .unwrap_or_default()
                        .join(rest),
                    None => base.join(p),
                }
            };
            let workdir = b.workdir.unwrap_or_else(|| DEFAULT_WORKDIR.to_string());
            if !workdir.starts_with('/')
                || workdir.contains(['\'', '"', ' ', '$', '`', '\\'])
                || workdir == "/"
            {
                return Err(err(
                    &at("workdir"),
                    format!("`{workdir}`: an absolute directory without quotes, spaces or `$`"),
                ));
            }
            boards.push(Board {
                name: b.name,
                arch,
                ssh: SshTarget {
                    host: b.ssh.host,
                    port: b.ssh.port.unwrap_or(22),
                    user: b.ssh.user.unwrap_or_else(|| "root".into()),
                    key: expand(&b.ssh.key),
                    connect_timeout: Duration::from_secs(b.ssh.connect_timeout_s.unwrap_or(5).max(1)),
                    options: b.ssh.options,
                },
                workdir,
                workloads: b.workloads.as_deref().map(expand),
                can,
                power_on: b.power_on,
                power_off: b.power_off,
                boot_timeout: Duration::from_secs(b.boot_timeout_s.unwrap_or(120)),
                console: b.console,
                tags: b.tags,
            });
        }
        Ok(Lab {
            path: path.to_path_buf(),
            name: raw.lab,
            boards,
        })
    }

    pub fn board(&self, name: &str) -> Option<&Board> {
        self.boards.iter().find(|b| b.name == name)
    }

    /// Board names, for messages.
    pub fn board_names(&self) -> Vec<String> {
        self.boards.iter().map(|b| b.name.clone()).collect()
    }
}

/// Default remote scratch directory.
pub const DEFAULT_WORKDIR: &str = "/tmp/agl-parity-board";

/// What replaces a credential in text.
pub const REDACTED: &str = "<redacted>";

/// Replaces credentials (key file paths in every spelling) in text bound for logs and reports.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    pub fn for_key(key: &Path) -> Redactor {
        let mut secrets = vec![key.display().to_string()];
        if let Ok(canonical) = key.canonicalize() {
            secrets.push(canonical.display().to_string());
        }
        if let (Some(home), Ok(rest)) = (
            std::env::var_os("HOME"),
            key.strip_prefix(std::env::var_os("HOME").unwrap_or_default()),
        ) {
            if !home.is_empty() {
                secrets.push(format!("~/{}", rest.display()));
            }
        }
        // Longest first, so that a path is replaced whole before any shorter spelling of it.
        secrets.retain(|s| s.len() > 1);
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Redactor { secrets }
    }

    /// `text` with every secret replaced by [`REDACTED`].
    pub fn apply(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in &self.secrets {
            out = out.replace(s.as_str(), REDACTED);
        }
        out
    }
}

/// The capabilities a scenario needs: its `@needs:<capability>` tags (tags without the `@`).
pub fn needs(tags: &[String]) -> Vec<String> {
    tags.iter()
        .filter_map(|t| t.strip_prefix("needs:"))
        .map(str::to_string)
        .collect()
}

/// The needs an environment with `capabilities` does not meet.
pub fn unmet(tags: &[String], capabilities: &[String]) -> Vec<String> {
    needs(tags)
        .into_iter()
        .filter(|n| !capabilities.contains(n))
        .collect()
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLab {
    lab: Option<String>,
    #[serde(default)]
    boards: Vec<RawBoard>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBoard {
    name: String,
    arch: String,
    ssh: RawSsh,
    workdir: Option<String>,
    workloads: Option<String>,
    #[serde(default)]
    can: Vec<RawCan>,
    power_on: Option<String>,
    power_off: Option<String>,
    boot_timeout_s: Option<u64>,
    console: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSsh {
    host: String,
    port: Option<u16>,
    user: Option<String>,
    key: String,
    connect_timeout_s: Option<u64>,
    #[serde(default)]
    options: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCan {
    name: String,
    bus: Option<String>,
    bitrate: u32,
    #[serde(default)]
    fd: bool,
    dbitrate: Option<u32>,
    bench: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
lab: bench
boards:
  - name: rcar-h3
    arch: arm64
    ssh: { host: 192.168.50.21, key: keys/rcar.key }
    can:
      - { name: can0, bitrate: 500000, fd: true, dbitrate: 2000000, bench: "socketcan:can0" }
      - { name: can1, bus: body, bitrate: 125000, bench: "tcp:192.168.50.2:29536" }
    tags: [rcar]
  - name: ci
    arch: x86_64
    ssh: { host: 10.241.0.2, port: 2222, user: tester, key: ~/.ssh/ci }
    can:
      - { name: vcan0, bitrate: 500000, bench: "hub:10.241.0.1" }
"#;

    #[test]
    fn a_good_inventory_is_read_with_defaults_and_derived_capabilities() {
        let lab = Lab::parse(GOOD, Path::new("/labs/bench.yaml")).unwrap();
        assert_eq!(lab.name.as_deref(), Some("bench"));
        let rcar = lab.board("rcar-h3").unwrap();
        assert_eq!(rcar.arch.as_str(), "aarch64");
        assert_eq!(rcar.arch.triple(), "aarch64-unknown-linux-gnu");
        assert_eq!(rcar.ssh.port, 22);
        assert_eq!(rcar.ssh.user, "root");
        assert_eq!(rcar.ssh.key, PathBuf::from("/labs/keys/rcar.key"));
        assert_eq!(rcar.workdir, DEFAULT_WORKDIR);
        assert_eq!(rcar.interface_for("body").unwrap().name, "can1");
        assert_eq!(rcar.interface_for("vehicle").unwrap().name, "can0");
        assert_eq!(rcar.can[0].bench, BenchSide::SocketCan("can0".into()));
        assert!(rcar.has_physical_bus());
        assert_eq!(
            rcar.capabilities(),
            vec![
                "arch:aarch64",
                "bitrate:125000",
                "bitrate:500000",
                "can",
                "can-fd",
                "rcar"
            ]
        );
        let ci = lab.board("ci").unwrap();
        assert!(!ci.has_physical_bus());
        assert!(!ci.capabilities().contains(&"can-fd".to_string()));
        assert_eq!(ci.column(), "board:ci");
    }

    #[test]
    fn errors_name_the_file_and_field_path() {
        let cases = [
            (
                GOOD.replace("bitrate: 125000", "bitrat: 125000"),
                "boards[0].can[1]",
                "unknown field `bitrat`",
            ),
            (
                GOOD.replace("arch: arm64", "arch: sparc"),
                "boards[0].arch",
                "unknown architecture",
            ),
            (
                GOOD.replace("\"socketcan:can0\"", "\"serial:/dev/tty\""),
                "boards[0].can[0].bench",
                "unknown scheme",
            ),
            (
                GOOD.replace("name: ci", "name: rcar-h3"),
                "boards[1].name",
                "listed twice",
            ),
            (
                GOOD.replace("bitrate: 125000", "bitrate: 125000, dbitrate: 1000000"),
                "boards[0].can[1].dbitrate",
                "needs `fd: true`",
            ),
            (
                GOOD.replace(", bus: body", ""),
                "boards[0].can",
                "at most one interface",
            ),
            (
                GOOD.replace("port: 2222", "port: 70000"),
                "boards[1].ssh.port",
                "",
            ),
            (
                GOOD.replace("tags: [rcar]", "tags: [can-fd]")
                    .replace("fd: true, dbitrate: 2000000, ", ""),
                "boards[0].tags",
                "no interface has `fd: true`",
            ),
        ];
        for (text, field, reason) in cases {
            let e = Lab::parse(&text, Path::new("lab.yaml")).unwrap_err().to_string();
            assert!(e.starts_with(&format!("lab.yaml: {field}")), "{e}");
            assert!(e.contains(reason), "{e}");
        }
    }

    #[test]
    fn the_key_path_is_redacted_and_hidden_from_debug() {
        let lab = Lab::parse(GOOD, Path::new("/labs/bench.yaml")).unwrap();
        let b = lab.board("rcar-h3").unwrap();
        let r = b.redactor();
        assert_eq!(
            r.apply("Warning: Identity file /labs/keys/rcar.key not accessible"),
            format!("Warning: Identity file {REDACTED} not accessible")
        );
        assert!(!format!("{:?}", b.ssh).contains("rcar.key"));
    }

    #[test]
    fn the_example_inventory_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/lab/bench-lab.yaml");
        let lab = Lab::load(&path).unwrap();
        assert_eq!(lab.board_names(), vec!["rcar-h3", "rpi4"]);
        let rpi = lab.board("rpi4").unwrap();
        assert_eq!(
            rpi.interface_for("body").unwrap().bench,
            BenchSide::Tcp("192.168.50.2:29536".parse().unwrap())
        );
        assert!(lab
            .board("rcar-h3")
            .unwrap()
            .capabilities()
            .contains(&"can-fd".to_string()));
        assert!(!rpi.capabilities().contains(&"can-fd".to_string()));
    }

    #[test]
    fn needs_are_checked_against_capabilities() {
        let tags: Vec<String> = ["hvac", "needs:can-fd", "needs:rcar"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(needs(&tags), vec!["can-fd", "rcar"]);
        assert_eq!(unmet(&tags, &["can-fd".to_string()]), vec!["rcar"]);
        assert!(unmet(&tags, &["can-fd".to_string(), "rcar".to_string()]).is_empty());
    }
}
