//! The `agl-vmm` command line (a stable interface: the harness spawns it exactly like this).
//!
//! ```text
//! agl-vmm run --elf PATH [--mem 64M] [--root DIR] [--env KEY=VALUE]... [--can IFNAME=ENDPOINT]...
//!             [--snapshot-at-bind DIR] [--restore DIR] [--trace-syscalls] -- ARG...
//! agl-vmm probe
//! ```
//!
//! Exit status: the guest's `exit_group` code; 128 + signal when a fault or a signal killed the guest
//! (after a report on stderr); 70 when the VMM itself failed (bad arguments, unusable KVM, bad snapshot,
//! internal error), with an `agl-vmm: error: ...` line. Logs go to stderr (`RUST_LOG`, default `warn`),
//! every line prefixed `agl-vmm:` so they stand apart from guest output.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::VmConfig;
use crate::error::VmmError;
use crate::memory::parse_size;
use crate::vcpu::{probe, HostKind};
use crate::vm::Vm;

/// Exit status for VMM-internal failures (`EX_SOFTWARE`).
pub const EXIT_VMM_ERROR: i32 = 70;

#[derive(Parser, Debug)]
#[command(
    name = "agl-vmm",
    version,
    about = "Run a Linux x86-64 program in a KVM microVM without a guest kernel"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run an ELF (or restore a snapshot) until it exits.
    Run(RunArgs),
    /// Tell whether /dev/kvm is usable and what kind of KVM it is.
    Probe,
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// The x86-64 ELF executable (ET_EXEC, PIE or static-pie; a dynamically linked one loads its
    /// interpreter and libraries from --root).
    #[arg(long, value_name = "PATH")]
    elf: Option<PathBuf>,
    /// Guest memory (K, M or G suffix; with --restore the snapshot's size is used).
    #[arg(long, default_value = "64M", value_parser = parse_size)]
    mem: u64,
    /// Directory the guest sees as `/` (read-only). Without it the guest has no files.
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Guest environment variable (the guest environment is exactly this list).
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    env: Vec<String>,
    /// A CAN interface in the guest (ifindex 1, 2, ... in order) bridged to a vcan bus endpoint.
    #[arg(long = "can", value_name = "IFNAME=ENDPOINT", value_parser = parse_can)]
    can: Vec<(String, vcan::Endpoint)>,
    /// Snapshot the guest into DIR right before its first bind() of a CAN socket, then continue.
    #[arg(long, value_name = "DIR")]
    snapshot_at_bind: Option<PathBuf>,
    /// Start from a snapshot directory instead of loading the ELF (give the same --can interface names).
    #[arg(long, value_name = "DIR")]
    restore: Option<PathBuf>,
    /// Print every syscall with its arguments and result to stderr.
    #[arg(long)]
    trace_syscalls: bool,
    /// Guest arguments (argv[1..]; argv[0] is the ELF's file name).
    #[arg(last = true, value_name = "ARG")]
    args: Vec<String>,
}

/// A `--env` or `--can` value that is not accepted (clap prints it after the option's name).
#[derive(Debug, thiserror::Error)]
pub enum ArgError {
    #[error("`{0}` is not KEY=VALUE")]
    NotKeyValue(String),
    #[error("`{0}` is not IFNAME=ENDPOINT")]
    NotIfnameEndpoint(String),
    #[error("interface name `{0}` must be 1-15 characters without `/` or spaces")]
    BadInterfaceName(String),
    #[error(transparent)]
    Endpoint(#[from] vcan::BusError),
}

fn parse_env(s: &str) -> Result<String, ArgError> {
    match s.split_once('=') {
        Some((k, _)) if !k.is_empty() && !k.contains('\0') && !s.contains('\0') => Ok(s.to_string()),
        _ => Err(ArgError::NotKeyValue(s.to_string())),
    }
}

fn parse_can(s: &str) -> Result<(String, vcan::Endpoint), ArgError> {
    let (name, uri) = s
        .split_once('=')
        .ok_or_else(|| ArgError::NotIfnameEndpoint(s.to_string()))?;
    if name.is_empty() || name.len() > 15 || name.contains(['/', ' ', '\0']) {
        return Err(ArgError::BadInterfaceName(name.to_string()));
    }
    let endpoint: vcan::Endpoint = uri.parse()?;
    Ok((name.to_string(), endpoint))
}

/// Sets up logging: `RUST_LOG` (default `warn`) to stderr, each line prefixed `agl-vmm:`.
pub fn init_logging() {
    use tracing_subscriber::fmt::format::Writer;
    use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
    use tracing_subscriber::registry::LookupSpan;

    struct Prefixed;
    impl<S, N> FormatEvent<S, N> for Prefixed
    where
        S: tracing::Subscriber + for<'a> LookupSpan<'a>,
        N: for<'a> FormatFields<'a> + 'static,
    {
        fn format_event(
            &self,
            ctx: &FmtContext<'_, S, N>,
            mut writer: Writer<'_>,
            event: &tracing::Event<'_>,
        ) -> std::fmt::Result {
            let meta = event.metadata();
            write!(writer, "agl-vmm: {} {}: ", meta.level(), meta.target())?;
            ctx.field_format().format_fields(writer.by_ref(), event)?;
            writeln!(writer)
        }
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .event_format(Prefixed)
        .try_init();
}

fn run(args: RunArgs) -> Result<i32, VmmError> {
    let config = VmConfig {
        elf: args.elf,
        mem_size: args.mem,
        root: args.root,
        env: args.env,
        can: args.can,
        args: args.args,
        snapshot_at_bind: args.snapshot_at_bind,
        restore: args.restore.clone(),
        trace_syscalls: args.trace_syscalls,
    };
    {
        let mut names: Vec<&str> = config.can.iter().map(|(n, _)| n.as_str()).collect();
        names.sort_unstable();
        if names.windows(2).any(|w| w[0] == w[1]) {
            return Err(VmmError::DuplicateCanName);
        }
    }
    let mut vm = match &args.restore {
        Some(dir) => Vm::restore(&config, dir)?,
        None => Vm::boot(&config)?,
    };
    let exit = vm.run()?;
    Ok(exit.exit_code())
}

/// The `agl-vmm` program: returns the process exit status.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_VMM_ERROR } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    init_logging();
    match cli.command {
        Command::Probe => match probe() {
            Ok(HostKind::Pvm) => {
                println!("kvm: usable (PVM nested, CPL0 emulated)");
                0
            }
            Ok(HostKind::Hardware) => {
                println!("kvm: usable (hardware virtualization)");
                0
            }
            Err(e) => {
                println!("kvm: unavailable: {e}");
                1
            }
        },
        Command::Run(args) => match run(args) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("agl-vmm: error: {e}");
                EXIT_VMM_ERROR
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_parse() {
        let cli = Cli::try_parse_from([
            "agl-vmm",
            "run",
            "--elf",
            "/x/hvac",
            "--mem",
            "128M",
            "--env",
            "A=1",
            "--env",
            "CAN_BUS=socketcan:can0",
            "--can",
            "can0=unix:/tmp/bus.sock",
            "--",
            "--flag",
            "value",
        ])
        .unwrap();
        let Command::Run(r) = cli.command else { panic!() };
        assert_eq!(r.mem, 128 << 20);
        assert_eq!(r.env, ["A=1", "CAN_BUS=socketcan:can0"]);
        assert_eq!(r.can[0].0, "can0");
        assert_eq!(r.args, ["--flag", "value"]);
        assert!(Cli::try_parse_from(["agl-vmm", "run", "--env", "NOEQUALS"]).is_err());
        assert!(Cli::try_parse_from(["agl-vmm", "run", "--can", "can0"]).is_err());
        assert!(Cli::try_parse_from(["agl-vmm", "run", "--can", "can0=ftp:x"]).is_err());
        assert!(Cli::try_parse_from(["agl-vmm", "run", "--mem", "lots"]).is_err());
        assert!(Cli::try_parse_from(["agl-vmm", "probe"]).is_ok());
    }
}
