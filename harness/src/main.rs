//! `agl-parity`: run scenarios across environments, start a bus, check the machine, list what exists, and
//! write a starter project (`init`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

use agl_parity::features::{self, FeatureSet};
use agl_parity::project::Project;
use agl_parity::runner::{self, RunOptions};
use agl_parity::{doctor, env, report, steps};

#[derive(Parser)]
#[command(
    name = "agl-parity",
    version,
    about = "Environment-parity test harness for AGL CAN workloads"
)]
struct Cli {
    /// Project directory: the one holding agl-parity.yaml (or scenarios/, fixtures/ and reports/). Default:
    /// the current directory if it is a project, else the workspace this was built from.
    #[arg(long, global = true, env = "AGL_PARITY_PROJECT")]
    project: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum ReferenceAction {
    /// Save the records of one environment of a run as a reference (`--out` a directory or a .json file).
    Save {
        /// The run directory, reports/<run-id>.
        dir: PathBuf,
        /// The column to save, e.g. board:rpi4.
        #[arg(long)]
        env: String,
        /// Where to write it: a directory (file named after the environment) or a .json path.
        #[arg(long, default_value = "fixtures/references")]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum Command {
    /// Run scenarios in one or more environments and write a parity report.
    Run {
        /// Feature files or directories (default: the project's `scenarios:`).
        paths: Vec<PathBuf>,
        /// Environments, comma-separated, in column order.
        #[arg(long = "env", short = 'e', value_delimiter = ',', default_value = "native")]
        environments: Vec<String>,
        /// Tag expression, e.g. "@hvac and not @slow".
        #[arg(long)]
        tags: Option<String>,
        /// Only scenarios whose name matches this regex.
        #[arg(long)]
        name: Option<String>,
        /// Scenarios run at once per environment.
        #[arg(long, short = 'j', default_value_t = 4)]
        concurrency: usize,
        /// Where run directories are written (default: the project's `reports:`).
        #[arg(long)]
        report_dir: Option<PathBuf>,
        /// Per-step time limit in seconds.
        #[arg(long, default_value_t = 60)]
        step_timeout: u64,
        /// Time a workload gets to become ready, in seconds.
        #[arg(long, default_value_t = 15)]
        ready_timeout: u64,
        /// Do not draw progress bars.
        #[arg(long)]
        no_progress: bool,
        /// A directory of workload executables, tried before the project's workload sources
        /// (also AGL_PARITY_WORKLOADS_DIR).
        #[arg(long)]
        workloads: Option<PathBuf>,
        /// Lab inventory for board columns: `--env board:<name>`, or `--env board` for every board
        /// (default: the project's `lab:`).
        #[arg(long, env = "AGL_PARITY_LAB")]
        lab: Option<PathBuf>,
        /// Run the environments at the same time (every board of a lab in parallel).
        #[arg(long)]
        parallel: bool,
        /// How SocketCAN reaches the workloads: auto (kernel CAN where the environment and kernel have it,
        /// else the seccomp emulation), emulated, kernel, or hub (this project's bus client only).
        #[arg(long, env = "AGL_PARITY_CAN_TRANSPORT", default_value = "auto")]
        can_transport: agl_parity::env::socketcan::CanTransport,
        /// Run every scenario N times per environment; parity then tells noise (flaky outcomes,
        /// nondeterministic frames, timing spread) from drift.
        #[arg(long, env = "AGL_PARITY_REPEAT", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        repeat: u32,
        /// Compare every environment against this recorded reference as if it were a column
        /// (`agl-parity reference save`).
        #[arg(long)]
        reference: Option<PathBuf>,
        /// Seed of the random faults (drop percentages, jitter, random corruption); the report gives the
        /// seed used, and the same seed reproduces a run's faults exactly.
        #[arg(long, env = "AGL_PARITY_SEED")]
        seed: Option<u64>,
        /// Serve every scenario bus to socketcand clients (python-can, SavvyCAN, Kayak) on this port or
        /// `ip:port` (loopback unless the project file's `bridges.socketcand.allow_remote`); clients
        /// `< open BUS >` by the bus's name. Scenarios then run one at a time.
        #[arg(long, value_name = "PORT|IP:PORT")]
        socketcand: Option<String>,
        /// What goes to stdout at the end: the terminal matrix, or LAVA test-shell signals (one
        /// `<LAVA_SIGNAL_TESTCASE …>` per scenario × environment, figure and verdict). The report files
        /// are written either way.
        #[arg(long, value_enum, default_value = "terminal")]
        format: OutputFormat,
    },
    /// Recorded references: one environment's records kept as the yardstick of later runs.
    Reference {
        #[command(subcommand)]
        action: ReferenceAction,
    },
    /// Run any program attached to CAN buses with SocketCAN emulated for it (no root, no kernel module):
    /// `agl-parity exec --can can0=unix:/tmp/bus.sock -- candump can0`.
    Exec {
        /// An interface and the bus it is bridged to, IF=ENDPOINT (unix:PATH or tcp:HOST:PORT, e.g. of
        /// `agl-parity hub`); repeat or separate with commas.
        #[arg(long = "can", required = true)]
        can: Vec<String>,
        /// The program and its arguments (after `--`).
        #[arg(required = true, last = true)]
        command: Vec<String>,
    },
    /// Merge the parity reports of several machines (CI legs, bench labs) into one report.
    Merge {
        /// Run directories holding parity.json, or directories to search for them.
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// Where the merged report is written.
        #[arg(long)]
        out: PathBuf,
        /// Refuse environments that occur in more than one input instead of suffixing them (`native#2`).
        #[arg(long)]
        strict: bool,
    },
    /// A simulated lab for machines without boards: sshd "boards" in network namespaces (needs root).
    LabSim {
        #[command(subcommand)]
        action: LabSimAction,
    },
    /// Start a userspace CAN bus and serve it until interrupted.
    Hub {
        /// Unix socket path to listen on.
        #[arg(long)]
        unix: Option<PathBuf>,
        /// TCP address to listen on, e.g. 127.0.0.1:29536.
        #[arg(long)]
        tcp: Option<std::net::SocketAddr>,
        /// Record the bus to this candump log.
        #[arg(long)]
        record: Option<PathBuf>,
        /// Frames each node's queue holds.
        #[arg(long, default_value_t = 65536)]
        queue: usize,
        /// Apply flow control instead of dropping frames for slow nodes.
        #[arg(long)]
        block: bool,
        /// Give the bus a bitrate (bit/s): frames take their time on the wire, arbitrated by id.
        #[arg(long)]
        bitrate: Option<u32>,
        /// CAN FD data-phase bitrate (bit/s), with --bitrate.
        #[arg(long, requires = "bitrate")]
        data_bitrate: Option<u32>,
        /// The bus's name: what socketcand clients open (`< open NAME >`) and logs show.
        #[arg(long, default_value = "vcan0")]
        name: String,
        /// Serve the bus to socketcand clients on this port or `ip:port` (loopback only unless
        /// --allow-remote).
        #[arg(long, value_name = "PORT|IP:PORT")]
        socketcand: Option<String>,
        /// Let --socketcand listen on a non-loopback address (socketcand has no authentication).
        #[arg(long, requires = "socketcand")]
        allow_remote: bool,
        /// Make an slcan (LAWICEL) adapter of the bus on a pseudo-terminal linked at PATH
        /// (python-can `interface="slcan"`, `slcand`).
        #[arg(long, value_name = "PATH")]
        slcan: Option<PathBuf>,
        /// Bridge the bus over UDP to a cannelloni peer (another hub, cannelloni, CANdevStudio):
        /// LOCAL=REMOTE, e.g. 127.0.0.1:20000=192.0.2.7:20000.
        #[arg(long, value_name = "LOCAL=REMOTE")]
        cannelloni: Option<String>,
    },
    /// Show which environments this machine can host, and how to fix what is missing.
    Doctor {
        /// Remove what killed runs left behind (on the boards of `--lab` too).
        #[arg(long)]
        clean: bool,
        /// Pre-flight every board of this lab inventory.
        #[arg(long)]
        lab: Option<PathBuf>,
    },
    /// List scenarios (and where they run), environments, or the step library.
    List {
        /// Feature files or directories (default: the project's `scenarios:`).
        paths: Vec<PathBuf>,
        /// List the step definitions instead.
        #[arg(long)]
        steps: bool,
    },
    /// Rebuild the reports of a run directory from its records.jsonl (e.g. after a killed run).
    Report {
        /// The run directory, reports/<run-id>.
        dir: PathBuf,
    },
    /// Write a starter project (agl-parity.yaml, a manifest, a DBC, a feature) into DIR; passes on `native`.
    Init {
        /// The new project's directory (created if missing; existing files are never overwritten).
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum LabSimAction {
    /// Start simulated boards and write their inventory to DIR/lab.yaml; they run until `down`.
    Up {
        #[arg(long, default_value = "target/lab-sim")]
        dir: PathBuf,
        /// Board names.
        #[arg(long, value_delimiter = ',', default_value = "sim-a,sim-b")]
        boards: Vec<String>,
    },
    /// Stop the simulated boards of DIR and remove them.
    Down {
        #[arg(long, default_value = "target/lab-sim")]
        dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let project = cli
        .project
        .clone()
        .unwrap_or_else(agl_parity::default_project_dir);
    let runtime = match agl_parity::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Commands that read the project's layout.
    let load_project = || match Project::load(&project) {
        Ok(p) => Ok(p),
        Err(e) => {
            eprintln!("error: {e}");
            Err(ExitCode::from(2))
        }
    };
    match cli.command {
        Command::Run {
            paths,
            environments,
            tags,
            name,
            concurrency,
            report_dir,
            step_timeout,
            ready_timeout,
            no_progress,
            workloads,
            lab,
            parallel,
            can_transport,
            reference,
            seed,
            repeat,
            socketcand,
            format,
        } => {
            let project = match load_project() {
                Ok(p) => p,
                Err(code) => return code,
            };
            let mut defaults = RunOptions::new(&project);
            if let Some(listen) = socketcand {
                match agl_parity::bridges::SocketcandSetting::parse_listen(&listen) {
                    Ok(listen) => {
                        let previous = defaults.bridges.socketcand.take();
                        defaults.bridges.socketcand = Some(agl_parity::bridges::SocketcandSetting {
                            listen,
                            buses: previous.as_ref().and_then(|p| p.buses.clone()),
                            allow_remote: previous.is_some_and(|p| p.allow_remote),
                        });
                    }
                    Err(e) => {
                        eprintln!("error: --socketcand: {e}");
                        return ExitCode::from(2);
                    }
                }
            }
            let options = RunOptions {
                scenario_paths: if paths.is_empty() {
                    defaults.scenario_paths.clone()
                } else {
                    paths
                },
                environments,
                tags,
                name_filter: name,
                concurrency,
                report_root: report_dir.unwrap_or_else(|| defaults.report_root.clone()),
                step_timeout: Duration::from_secs(step_timeout),
                ready_timeout: Duration::from_secs(ready_timeout),
                progress: !no_progress,
                // Absolute: workloads run with their own working directory (the manifest's workingDir).
                prebuilt_workloads: workloads.map(|dir| std::path::absolute(&dir).unwrap_or(dir)),
                lab: lab.or_else(|| defaults.lab.clone()),
                parallel_environments: parallel,
                can_transport,
                reference,
                seed: seed.unwrap_or(defaults.seed),
                repeat,
                ..defaults
            };
            runtime.block_on(run(options, format))
        }
        Command::Hub {
            unix,
            tcp,
            record,
            queue,
            block,
            bitrate,
            data_bitrate,
            name,
            socketcand,
            allow_remote,
            slcan,
            cannelloni,
        } => {
            let timing = bitrate.map(|nominal| agl_parity::config::BusTimingConfig {
                bitrate: nominal,
                data_bitrate,
                stuffing: Default::default(),
            });
            let bridges = match hub_bridges(&name, socketcand, allow_remote, slcan, cannelloni) {
                Ok(b) => b,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            let options = HubOptions {
                name,
                unix,
                tcp,
                record,
                queue,
                block,
                timing,
                bridges,
            };
            runtime.block_on(hub(options))
        }
        Command::Doctor { clean, lab } => match load_project() {
            Ok(p) => {
                let lab = lab.or_else(|| p.lab.clone());
                runtime.block_on(doctor_cmd(&p, clean, lab))
            }
            Err(code) => code,
        },
        Command::Merge { inputs, out, strict } => match load_project() {
            Ok(p) => merge_cmd(&p, &inputs, &out, strict),
            Err(code) => code,
        },
        Command::LabSim { action } => lab_sim(action),
        Command::Exec { can, command } => exec_cmd(&can, &command),
        Command::List { paths, steps } => match load_project() {
            Ok(p) => list(&p, paths, steps),
            Err(code) => code,
        },
        Command::Report { dir } => rebuild_report(&project, &dir),
        Command::Init { dir } => init_cmd(&dir),
        Command::Reference {
            action: ReferenceAction::Save { dir, env, out },
        } => match agl_parity::reference::save(&dir, &env, &out) {
            Ok(file) => {
                println!("saved {env} of {} as {}", dir.display(), file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
    }
}

/// What `run` prints on stdout when it ends.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum OutputFormat {
    Terminal,
    Lava,
}

async fn run(options: RunOptions, format: OutputFormat) -> ExitCode {
    let journal = runner::Journal::new();
    let started = Instant::now();
    let interrupt = options.interrupt.clone();
    let run = runner::run(options.clone(), journal.clone());
    tokio::pin!(run);
    let mut interrupted = false;
    let first = tokio::select! {
        r = &mut run => Some(r),
        _ = tokio::signal::ctrl_c() => None,
    };
    let result = match first {
        Some(r) => Some(r),
        None => {
            // First Ctrl-C: let the run wind down (steps fail as interrupted, teardown removes everything).
            interrupted = true;
            interrupt.trigger();
            eprintln!("interrupted: stopping the run (Ctrl-C again to abort at once)");
            tokio::select! {
                r = &mut run => Some(r),
                _ = tokio::signal::ctrl_c() => None,
                _ = tokio::time::sleep(Duration::from_secs(60)) => None,
            }
        }
    };
    let (report, dir) = match result {
        Some(Ok(outcome)) => (outcome.report, outcome.report_dir),
        Some(Err(e)) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
        None => {
            // Aborted: the run future is dropped; workloads die with their handles. Sweep what remains.
            eprintln!("aborted: writing the report of what finished");
            let dir = options.report_root.join(&options.run_id);
            let report = runner::partial_report(&options, &journal, started.elapsed());
            agl_parity::cleanup::sweep(&agl_parity::cleanup::state_root());
            match &options.lab {
                Some(lab) => runner::sweep_lab(lab).await,
                None => runner::sweep_environments(Default::default()).await,
            }
            (report, dir)
        }
    };
    match format {
        OutputFormat::Terminal => print!(
            "{}",
            report::terminal::render(&report, report::terminal::stdout_color())
        ),
        OutputFormat::Lava => print!("{}", report::lava::render(&report)),
    }
    match report::write_all(&report, &dir) {
        Ok(files) => eprintln!(
            "report: {} (also {}, {})",
            files.html.display(),
            files.junit.display(),
            files.json.display()
        ),
        Err(e) => eprintln!("error: cannot write the report to {}: {e}", dir.display()),
    }
    let faulted = report
        .runs
        .iter()
        .any(|r| r.buses.iter().any(|b| !b.faults.is_empty()));
    if let (true, Some(seed)) = (faulted, report.seed) {
        eprintln!("fault seed {seed}: `--seed {seed}` applies the same faults again");
    }
    if interrupted {
        ExitCode::from(130)
    } else if report.all_passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// What `agl-parity hub` serves.
struct HubOptions {
    name: String,
    unix: Option<PathBuf>,
    tcp: Option<std::net::SocketAddr>,
    record: Option<PathBuf>,
    queue: usize,
    block: bool,
    timing: Option<agl_parity::config::BusTimingConfig>,
    bridges: agl_parity::bridges::BridgeSettings,
}

/// The hub command's bridge flags as bridge settings for its one bus.
fn hub_bridges(
    bus: &str,
    socketcand: Option<String>,
    allow_remote: bool,
    slcan: Option<PathBuf>,
    cannelloni: Option<String>,
) -> Result<agl_parity::bridges::BridgeSettings, String> {
    use agl_parity::bridges::{BridgeSettings, CannelloniSetting, SocketcandSetting};
    let mut settings = BridgeSettings::default();
    if let Some(listen) = socketcand {
        settings.socketcand = Some(SocketcandSetting {
            listen: SocketcandSetting::parse_listen(&listen).map_err(|e| format!("--socketcand: {e}"))?,
            buses: None,
            allow_remote,
        });
    }
    if let Some(path) = slcan {
        settings.slcan.insert(bus.to_string(), path);
    }
    if let Some(link) = cannelloni {
        let (local, remote) = link
            .split_once('=')
            .ok_or_else(|| format!("--cannelloni: `{link}` is not LOCAL=REMOTE (ip:port=ip:port)"))?;
        let addr = |a: &str, which: &str| {
            a.trim()
                .parse::<std::net::SocketAddr>()
                .map_err(|_| format!("--cannelloni: the {which} address `{a}` is not a numeric ip:port"))
        };
        settings.cannelloni.insert(
            bus.to_string(),
            CannelloniSetting {
                local: addr(local, "local")?,
                remote: addr(remote, "remote")?,
                batch_ms: None,
            },
        );
    }
    Ok(settings)
}

async fn hub(options: HubOptions) -> ExitCode {
    use vcan::hub::{Backpressure, Hub, HubConfig};
    let HubOptions {
        name,
        unix,
        tcp,
        record,
        queue,
        block,
        timing,
        bridges,
    } = options;
    if let Some(rate) = timing
        .iter()
        .flat_map(|t| [Some(t.bitrate), t.data_bitrate])
        .flatten()
        .find(|r| !(agl_parity::config::MIN_BITRATE..=agl_parity::config::MAX_BITRATE).contains(r))
    {
        eprintln!(
            "error: {rate} bit/s is outside {}..={} bit/s",
            agl_parity::config::MIN_BITRATE,
            agl_parity::config::MAX_BITRATE
        );
        return ExitCode::from(2);
    }
    // Bridges join the bus through a socket; with none given, a private one in a temporary directory.
    let private_dir = match (&unix, &tcp, bridges.is_empty()) {
        (None, None, true) => {
            eprintln!("error: give --unix PATH and/or --tcp ADDR (or a bridge: --socketcand, --slcan, --cannelloni)");
            return ExitCode::from(2);
        }
        // A run directory of the state root: removed at exit, and by the next run if this one is killed.
        (None, None, false) => {
            let root = agl_parity::cleanup::state_root();
            agl_parity::cleanup::sweep(&root);
            match agl_parity::cleanup::RunGuard::register(&root, &format!("hub-{}", std::process::id())) {
                Ok(guard) => Some(guard),
                Err(e) => {
                    eprintln!(
                        "error: cannot make a directory for the bus socket in {}: {e}",
                        root.display()
                    );
                    return ExitCode::FAILURE;
                }
            }
        }
        _ => None,
    };
    let unix = unix.or_else(|| private_dir.as_ref().map(|d| d.dir().join("bus.sock")));
    let config = HubConfig {
        name: name.clone(),
        unix_path: unix,
        tcp_addr: tcp,
        queue_frames: queue,
        backpressure: if block {
            Backpressure::Block
        } else {
            Backpressure::Drop
        },
        timing: timing.map(|t| t.timing()),
        ..HubConfig::default()
    };
    let hub = match Hub::start(config) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let endpoints: Vec<String> = hub
        .unix_endpoint()
        .into_iter()
        .chain(hub.tcp_endpoint())
        .map(|e| e.to_string())
        .collect();
    println!("bus ready: {}", endpoints.join(" "));
    let run_bridges = match agl_parity::bridges::RunBridges::start(bridges) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut bus_bridges = match endpoints
        .first()
        .map(|ep| ep.parse::<vcan::Endpoint>().map_err(|e| e.to_string()))
    {
        Some(Ok(ep)) => match run_bridges.attach(&name, &ep) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        },
        Some(Err(e)) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
        None => agl_parity::bridges::BusBridges::none(&name),
    };
    for line in run_bridges.describe() {
        println!("bridge ready: {line}");
    }
    let recorder = match (&record, endpoints.first()) {
        (Some(path), Some(ep)) => match ep
            .parse()
            .map_err(|e: vcan::BusError| e.to_string())
            .and_then(|ep| {
                agl_parity::bus::ScenarioBus::attach(
                    "hub",
                    ep,
                    agl_parity::bus::BusInfo {
                        name: "hub".into(),
                        unix_path: None,
                        tcp_addr: None,
                    },
                )
                .map_err(|e| e.to_string())
            }) {
            Ok(bus) => Some((bus, path.clone())),
            Err(e) => {
                eprintln!("error: cannot record: {e}");
                return ExitCode::FAILURE;
            }
        },
        _ => None,
    };
    let _ = tokio::signal::ctrl_c().await;
    if let Some((bus, path)) = recorder {
        let summary = bus.finish();
        match agl_parity::bus::write_candump(&path, "can0", &summary.frames, &summary.notes) {
            Ok(()) => eprintln!("recorded {} frames to {}", summary.frames.len(), path.display()),
            Err(e) => eprintln!("error: cannot write {}: {e}", path.display()),
        }
    }
    let bridge_reports = bus_bridges.stop();
    run_bridges.stop();
    let stats = hub.shutdown();
    println!("{} frames on the bus, {} dropped", stats.frames, stats.dropped);
    for report in &bridge_reports {
        for line in report.lines() {
            println!("  bridge node {line}");
        }
    }
    for n in stats.nodes {
        println!(
            "  node {} {:<20} sent {:>8}  delivered {:>8}  dropped {:>6}",
            n.node, n.name, n.sent, n.delivered, n.dropped
        );
    }
    ExitCode::SUCCESS
}

async fn doctor_cmd(project: &Project, clean: bool, lab: Option<PathBuf>) -> ExitCode {
    println!("agl-parity doctor (project {})", project.root.display());
    println!(
        "  {:<7} {:<18} {}",
        "",
        "project file",
        match &project.file {
            Some(f) => f.display().to_string(),
            None => format!("none ({} layout defaults)", agl_parity::project::PROJECT_FILE),
        }
    );
    let scenarios = FeatureSet::load(&project.scenarios);
    println!(
        "  {:<7} {:<18} {} scenarios in {}",
        if scenarios.errors.is_empty() {
            "ok"
        } else {
            "PROBLEM"
        },
        "scenarios",
        scenarios.scenarios().len(),
        join_paths(&project.scenarios)
    );
    for e in &scenarios.errors {
        println!("  {:<7} {:<18} {e}", "", "");
    }
    let catalog = agl_parity::workload::WorkloadCatalog::for_project(project, None);
    println!(
        "  {:<7} {:<18} {}",
        "",
        "workloads",
        match catalog.known_workloads() {
            names if names.is_empty() => "none known before building".to_string(),
            names => names.join(", "),
        }
    );
    for c in doctor::checks().await {
        println!(
            "  {:<7} {:<18} {}",
            if c.ok { "ok" } else { "MISSING" },
            c.name,
            c.detail
        );
    }
    for line in doctor::leftovers(clean).await {
        println!("  {:<7} {:<18} {line}", "", "leftovers");
    }
    if clean {
        for line in agl_parity::lab::sim::sweep() {
            println!("  {:<7} {:<18} {line}", "", "leftovers");
        }
    }
    let Some(lab) = lab else {
        return ExitCode::SUCCESS;
    };
    println!("lab {}", lab.display());
    let checks = doctor::lab_checks(&lab).await;
    for c in &checks {
        println!(
            "  {:<7} {:<26} {}",
            if c.ok { "ok" } else { "PROBLEM" },
            c.name,
            c.detail
        );
    }
    if clean {
        if let Ok(inventory) = agl_parity::lab::Lab::load(&lab) {
            let live = agl_parity::cleanup::live_runs(&agl_parity::cleanup::state_root());
            let setup = env::Setup {
                lab: Some(&inventory),
            };
            for (_, line) in env::sweep(&live, setup).await {
                println!("  {:<7} {:<26} {line}", "", "leftovers");
            }
        }
    }
    if checks.iter().all(|c| c.ok) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn exec_cmd(can: &[String], command: &[String]) -> ExitCode {
    let Some((program, args)) = command.split_first() else {
        eprintln!("error: give the program to run after `--`");
        return ExitCode::from(2);
    };
    let result = agl_parity::exec::parse_interfaces(can)
        .and_then(|ifaces| agl_parity::exec::exec(ifaces, &PathBuf::from(program), args));
    match result {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn join_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn merge_cmd(project: &Project, inputs: &[PathBuf], out: &std::path::Path, strict: bool) -> ExitCode {
    let config = match agl_parity::config::ParityConfig::load(&project.parity) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let collision = if strict {
        agl_parity::merge::Collision::Error
    } else {
        agl_parity::merge::Collision::Suffix
    };
    match agl_parity::merge::merge(inputs, out, &config, collision) {
        Ok(report) => {
            print!(
                "{}",
                report::terminal::render(&report, report::terminal::stdout_color())
            );
            eprintln!("merged report: {}", out.join("summary.html").display());
            if report.all_passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn lab_sim(action: LabSimAction) -> ExitCode {
    use agl_parity::lab::sim;
    match action {
        LabSimAction::Up { dir, boards } => {
            if let Err(e) = sim::install_openssh_server() {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
            let spec = sim::SimSpec {
                boards,
                dir: Some(dir),
                persistent: true,
            };
            match sim::SimLab::start(&spec) {
                Ok(lab) => {
                    for b in lab.boards() {
                        println!(
                            "board {}: sshd at {}:22 in namespace {}, bench hub address {}",
                            b.name, b.board_ip, b.namespace, b.bench_ip
                        );
                    }
                    println!("inventory: {}", lab.inventory().display());
                    lab.detach();
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        LabSimAction::Down { dir } => {
            for line in sim::down(&dir) {
                println!("{line}");
            }
            ExitCode::SUCCESS
        }
    }
}

fn list(project: &Project, paths: Vec<PathBuf>, show_steps: bool) -> ExitCode {
    if show_steps {
        for def in steps::catalog() {
            let kw = match def.kind {
                steps::Kind::Action => "Given/When",
                steps::Kind::Expectation => "Then",
            };
            println!("{kw:<11} {}\n            e.g. {}", def.pattern, def.example);
        }
        return ExitCode::SUCCESS;
    }
    let paths = if paths.is_empty() {
        project.scenarios.clone()
    } else {
        paths
    };
    let set = FeatureSet::load(&paths);
    let envs: Vec<&str> = env::registry().iter().map(|k| k.name).collect();
    println!("environments: {}", envs.join(", "));
    for s in set.scenarios() {
        let tags = s.tags();
        let runs: Vec<&str> = envs
            .iter()
            .copied()
            .filter(|e| features::runs_in(&tags, e))
            .collect();
        let file = s
            .feature
            .path
            .as_deref()
            .map(|p| p.strip_prefix(&project.root).unwrap_or(p).display().to_string())
            .unwrap_or_default();
        println!(
            "{file}:{:<4} {:<60} [{}] {}",
            s.scenario.position.line,
            s.scenario.name,
            runs.join(","),
            tags.iter().map(|t| format!("@{t}")).collect::<Vec<_>>().join(" ")
        );
    }
    for e in &set.errors {
        println!("ERROR {e}");
    }
    if set.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn init_cmd(dir: &std::path::Path) -> ExitCode {
    match agl_parity::init::init(dir) {
        Ok(written) => {
            for f in &written {
                println!("wrote {}", f.display());
            }
            println!(
                "next: cd {} && agl-parity run        # every scenario on the native environment",
                dir.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn rebuild_report(project: &std::path::Path, dir: &std::path::Path) -> ExitCode {
    match runner::report_from_journal(dir, project) {
        Ok(report) => {
            print!(
                "{}",
                report::terminal::render(&report, report::terminal::stdout_color())
            );
            match report::write_all(&report, dir) {
                Ok(files) => {
                    eprintln!("report: {}", files.html.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
