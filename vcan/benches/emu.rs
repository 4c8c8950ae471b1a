//! Benchmark of the seccomp SocketCAN emulation ([`vcan::emu`]) against the project's own bus client and
//! the bare hub, all on one userspace [`Hub`] in the same run.
//!
//! The program under test is this bench binary itself, re-executed as a child (`EMU_BENCH_ROLE` set): it
//! opens its bus with `vcan::open(CAN_BUS)`, so with `socketcan:can0` it goes through the kernel backend
//! (`socket(AF_CAN)`, answered by the emulation) and with `unix:<path>` through `vcan::client`. The same
//! role functions also run as a thread of the bench process on an in-process hub client (the bare hub).
//!
//! Prints plain-text tables:
//! (a) throughput, process -> bus and bus -> process, per-frame `send`/`recv`, hub `Backpressure::Block`,
//!     frames counted on arrival (zero-loss check), median of [`ROUNDS`] runs per path, interleaved;
//! (b) ping-pong latency: the bench sends a ping carrying CLOCK_MONOTONIC (low 32 bits of ns), the program
//!     stamps its receive time into the echo, the bench stamps the echo's arrival: one-way bench -> program
//!     and program -> bench from the timestamps carried in the payload (CLOCK_MONOTONIC is system-wide),
//!     and round trip / 2;
//! (c) per-call cost of setup calls in the emulated program (answered by the supervisor, or passed through
//!     with `SECCOMP_USER_NOTIF_FLAG_CONTINUE`) against the same calls in the same program without the
//!     filter, median of batches.
//!
//! Run: `cargo bench -p vcan --bench emu` (`just bench-socketcan`). `EMU_BENCH_FRAMES` sets the frames per
//! throughput run (default 200000; ping-pongs and setup calls are a tenth of it), so
//! `EMU_BENCH_FRAMES=20000` is a short run of a few seconds; `EMU_BENCH_DEBUG=1` prints the program's,
//! the emulation's and the hub's counters after every program -> bus run. Needs seccomp user notification.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use vcan::client::HubClient;
use vcan::emu::{self, Emulation, EmulationStats};
use vcan::hub::{Backpressure, Hub, HubConfig};
use vcan::{CanId, CanSocket, Endpoint, Frame, OpenOptions};

const ROLE_ENV: &str = "EMU_BENCH_ROLE";
const COUNT_ENV: &str = "EMU_BENCH_COUNT";
const ROUNDS: usize = 3;
const PING: u16 = 0x100;
const PONG: u16 = 0x200;
const FLOOD: u16 = 0x300;
/// A receiver that sees nothing for this long stops counting (what is missing then is lost).
const IDLE: Duration = Duration::from_secs(2);
/// Calls per timed batch in (c).
const BATCH: usize = 500;

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn opts(name: &str) -> OpenOptions {
    OpenOptions {
        node_name: name.into(),
        ..OpenOptions::default()
    }
}

fn frame(id: u16, payload: &[u8]) -> Frame {
    Frame::data(CanId::Standard(id), payload).expect("frame")
}

fn u64_at(payload: &[u8]) -> u64 {
    u64::from_le_bytes(payload.get(..8).and_then(|b| b.try_into().ok()).unwrap_or([0; 8]))
}

fn u32_at(payload: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(
        payload
            .get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .unwrap_or([0; 4]),
    )
}

// ---------------------------------------------------------------------------------------------------------
// The program under test (a child process, or a thread for the bare hub).

/// Echoes `count` pings: the ping's first 4 bytes, then the low 32 bits of the receive time.
fn role_echo(bus: &mut dyn CanSocket, count: usize) -> Option<(u64, u64)> {
    let mut echoed = 0;
    while echoed < count {
        let Ok(Some(rx)) = bus.recv(Some(IDLE)) else { break };
        let now = monotonic_ns() as u32;
        if rx.frame.id() != Some(CanId::Standard(PING)) {
            continue;
        }
        let mut payload = [0u8; 8];
        payload[..4].copy_from_slice(&u32_at(rx.frame.payload(), 0).to_le_bytes());
        payload[4..].copy_from_slice(&now.to_le_bytes());
        if bus.send(&frame(PONG, &payload)).is_err() {
            break;
        }
        echoed += 1;
    }
    Some((echoed as u64, 0))
}

/// Sends `count` frames; the first carries the send start (CLOCK_MONOTONIC ns), the others their index.
fn role_flood_tx(bus: &mut dyn CanSocket, count: usize) -> Option<(u64, u64)> {
    for i in 0..count {
        let value = if i == 0 { monotonic_ns() } else { i as u64 };
        if let Err(e) = bus.send(&frame(FLOOD, &value.to_le_bytes())) {
            eprintln!("emu bench program: send {i}: {e}");
            return Some((i as u64, 0));
        }
    }
    Some((count as u64, 0))
}

/// Counts frames until `count` arrived or the bus is quiet for [`IDLE`]: (received, ns from the start
/// carried by the first frame to the last arrival).
fn role_flood_rx(bus: &mut dyn CanSocket, count: usize) -> Option<(u64, u64)> {
    let mut received = 0u64;
    let mut start = 0u64;
    let mut last = 0u64;
    while received < count as u64 {
        match bus.recv(Some(IDLE)) {
            Ok(Some(rx)) => {
                last = monotonic_ns();
                if received == 0 {
                    start = u64_at(rx.frame.payload());
                }
                received += 1;
            }
            _ => break,
        }
    }
    Some((received, last.saturating_sub(start)))
}

#[derive(Clone, Copy)]
enum Role {
    Echo,
    FloodTx,
    FloodRx,
    /// [`Role::FloodRx`] in plain C style: `socket(AF_CAN)`, `bind`, `poll` and `read(2)` of `struct
    /// can_frame` (no `recvmsg`, so nothing per frame is notified). Only as a process.
    FloodRxRead,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Echo => "echo",
            Role::FloodTx => "flood-tx",
            Role::FloodRx => "flood-rx",
            Role::FloodRxRead => "flood-rx-read",
        }
    }

    fn run(self, bus: &mut dyn CanSocket, count: usize) -> Option<(u64, u64)> {
        match self {
            Role::Echo => role_echo(bus, count),
            Role::FloodTx => role_flood_tx(bus, count),
            Role::FloodRx | Role::FloodRxRead => role_flood_rx(bus, count),
        }
    }
}

/// The child's `main`: prints `READY` once its bus is open and `RESULT <a> <b>` at the end.
fn child_main(role: &str) -> i32 {
    let count: usize = std::env::var(COUNT_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if role == "calls" {
        child_calls(count);
        return 0;
    }
    if role == "flood-rx-read" {
        return child_read(count);
    }
    let role = match role {
        "echo" => Role::Echo,
        "flood-tx" => Role::FloodTx,
        "flood-rx" => Role::FloodRx,
        other => {
            eprintln!("emu bench child: unknown role {other}");
            return 2;
        }
    };
    let endpoint: Endpoint = match std::env::var(vcan::endpoint::BUS_ENV).map(|v| v.parse()) {
        Ok(Ok(e)) => e,
        _ => {
            eprintln!("emu bench child: CAN_BUS is not a bus endpoint");
            return 2;
        }
    };
    let mut bus = match vcan::open(&endpoint, &opts("program")) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("emu bench child: {endpoint}: {e}");
            return 2;
        }
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "READY");
    let _ = out.flush();
    let (a, b) = role.run(bus.as_mut(), count).unwrap_or((0, 0));
    let _ = writeln!(out, "RESULT {a} {b}");
    let _ = out.flush();
    0
}

/// [`Role::FloodRxRead`]: `can0` opened and read with plain system calls.
fn child_read(count: usize) -> i32 {
    // SAFETY (all blocks below): plain system calls on the descriptor created here, with valid buffers.
    let fd = unsafe { libc::socket(libc::AF_CAN, libc::SOCK_RAW, libc::CAN_RAW) };
    let mut ifr = ifreq("can0");
    if fd < 0 || unsafe { libc::ioctl(fd, libc::SIOCGIFINDEX, ifr.as_mut_ptr()) } != 0 {
        eprintln!("emu bench child: can0: {}", std::io::Error::last_os_error());
        return 2;
    }
    let mut addr: libc::sockaddr_can = unsafe { std::mem::zeroed() };
    addr.can_family = libc::AF_CAN as libc::sa_family_t;
    addr.can_ifindex = i32::from_ne_bytes([ifr[16], ifr[17], ifr[18], ifr[19]]);
    let len = std::mem::size_of::<libc::sockaddr_can>() as libc::socklen_t;
    if unsafe { libc::bind(fd, (&addr as *const libc::sockaddr_can).cast(), len) } != 0 {
        eprintln!("emu bench child: bind can0: {}", std::io::Error::last_os_error());
        return 2;
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "READY");
    let _ = out.flush();
    let (mut received, mut start, mut last) = (0u64, 0u64, 0u64);
    let mut buf = [0u8; 16];
    while received < count as u64 {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        if unsafe { libc::poll(&mut pfd, 1, IDLE.as_millis() as i32) } <= 0 {
            break;
        }
        if unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) } != 16 {
            break;
        }
        last = monotonic_ns();
        if received == 0 {
            start = u64_at(&buf[8..]);
        }
        received += 1;
    }
    let _ = writeln!(out, "RESULT {received} {}", last.saturating_sub(start));
    let _ = out.flush();
    0
}

/// Median ns per call of `f`, over batches of [`BATCH`] calls (`count` calls in all, at least 3 batches).
fn per_call_ns(count: usize, mut f: impl FnMut() -> i64) -> f64 {
    for _ in 0..BATCH {
        std::hint::black_box(f());
    }
    let batches = (count / BATCH).max(3);
    let mut per: Vec<f64> = (0..batches)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..BATCH {
                std::hint::black_box(f());
            }
            t.elapsed().as_nanos() as f64 / BATCH as f64
        })
        .collect();
    per.sort_by(f64::total_cmp);
    per[per.len() / 2]
}

/// `struct ifreq` with a name (the index is written at offset 16).
fn ifreq(name: &str) -> [u8; 40] {
    let mut ifr = [0u8; 40];
    ifr[..name.len()].copy_from_slice(name.as_bytes());
    ifr
}

/// The setup-call measurements of (c), one `CALL <name> <ns>` line each (`-` where the call cannot be
/// made, e.g. `AF_CAN` without the emulation).
fn child_calls(count: usize) {
    let mut out = std::io::stdout().lock();
    // SAFETY (all blocks below): plain system calls on descriptors created here, with valid buffers.
    let unix = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM, 0) };
    let can = unsafe { libc::socket(libc::AF_CAN, libc::SOCK_RAW, libc::CAN_RAW) };
    let rcvbuf: libc::c_int = 65536;
    let filter = [0x123u32, 0x7FF];
    let mut lo = ifreq("lo");
    let mut can0 = ifreq("can0");
    let ns = per_call_ns(count, || unsafe { libc::syscall(libc::SYS_getpid) });
    let _ = writeln!(out, "CALL getpid {ns}");
    let ns = per_call_ns(count, || unsafe {
        libc::setsockopt(
            unix,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&rcvbuf as *const libc::c_int).cast(),
            4,
        ) as i64
    });
    let _ = writeln!(out, "CALL setsockopt-unix {ns}");
    let ns = per_call_ns(count, || unsafe {
        libc::ioctl(unix, libc::SIOCGIFINDEX, lo.as_mut_ptr()) as i64
    });
    let _ = writeln!(out, "CALL ioctl-lo {ns}");
    if can >= 0 {
        let ns = per_call_ns(count, || unsafe {
            libc::setsockopt(
                can,
                libc::SOL_CAN_RAW,
                libc::CAN_RAW_FILTER,
                filter.as_ptr().cast(),
                8,
            ) as i64
        });
        let _ = writeln!(out, "CALL setsockopt-can {ns}");
        let ns = per_call_ns(count, || unsafe {
            libc::ioctl(can, libc::SIOCGIFINDEX, can0.as_mut_ptr()) as i64
        });
        let _ = writeln!(out, "CALL ioctl-can0 {ns}");
    } else {
        let _ = writeln!(out, "CALL setsockopt-can -");
        let _ = writeln!(out, "CALL ioctl-can0 -");
    }
    let _ = out.flush();
}

// ---------------------------------------------------------------------------------------------------------
// The bench side.

#[derive(Clone, Copy, PartialEq)]
enum Path3 {
    /// The role on a thread of this process, on a hub client.
    Bare,
    /// The role in a child process, `CAN_BUS=unix:...` (`vcan::client`).
    Client,
    /// The role in a child process, `CAN_BUS=socketcan:can0`, SocketCAN emulated.
    Emulated,
}

const PATHS: [Path3; 3] = [Path3::Bare, Path3::Client, Path3::Emulated];

impl Path3 {
    fn name(self) -> &'static str {
        match self {
            Path3::Bare => "bare hub",
            Path3::Client => "vcan::client",
            Path3::Emulated => "emulated AF_CAN",
        }
    }
}

/// The program under test, running.
enum Program {
    Thread {
        ready: mpsc::Receiver<()>,
        done: thread::JoinHandle<Option<(u64, u64)>>,
    },
    Process {
        child: Child,
        stdout: BufReader<ChildStdout>,
        emulation: Option<Emulation>,
    },
}

fn spawn_child(
    role: &str,
    count: usize,
    bus: Option<&Endpoint>,
    emulate: bool,
) -> (Child, Option<Emulation>) {
    let exe = std::env::current_exe().expect("bench executable");
    let mut command = Command::new(exe);
    command
        .env(ROLE_ENV, role)
        .env(COUNT_ENV, count.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    // SAFETY: prctl only makes a system call; the child dies with the bench.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    if !emulate {
        if let Some(bus) = bus {
            command.env(vcan::endpoint::BUS_ENV, bus.to_string());
        }
        return (command.spawn().expect("spawn the bench program"), None);
    }
    command.env(vcan::endpoint::BUS_ENV, "socketcan:can0");
    let ifaces = match bus {
        Some(bus) => emu::interfaces(vec![("can0".into(), bus.clone())]),
        None => emu::interfaces(Vec::new()),
    };
    let (child, emulation) =
        emu::spawn(&mut command, ifaces, "program".into()).expect("spawn with the emulation");
    (child, Some(emulation))
}

impl Program {
    fn start(path: Path3, role: Role, count: usize, bus: &Endpoint) -> Program {
        match path {
            Path3::Bare => {
                let (ready_tx, ready) = mpsc::channel();
                let bus = bus.clone();
                let done = thread::spawn(move || {
                    let mut node = vcan::open(&bus, &opts("program")).expect("open bare node");
                    let _ = ready_tx.send(());
                    role.run(node.as_mut(), count)
                });
                Program::Thread { ready, done }
            }
            Path3::Client | Path3::Emulated => {
                let (mut child, emulation) =
                    spawn_child(role.name(), count, Some(bus), path == Path3::Emulated);
                let stdout = BufReader::new(child.stdout.take().expect("child stdout"));
                Program::Process {
                    child,
                    stdout,
                    emulation,
                }
            }
        }
    }

    /// Waits until the program's bus is open.
    fn ready(&mut self) {
        match self {
            Program::Thread { ready, .. } => ready.recv().expect("bare node ready"),
            Program::Process { stdout, .. } => {
                let mut line = String::new();
                stdout.read_line(&mut line).expect("child output");
                assert_eq!(line.trim(), "READY", "the bench program did not start");
            }
        }
    }

    /// Waits for the end; the role's result and what the emulation served.
    fn finish(self) -> ((u64, u64), EmulationStats) {
        match self {
            Program::Thread { done, .. } => (
                done.join().ok().flatten().unwrap_or((0, 0)),
                EmulationStats::default(),
            ),
            Program::Process {
                mut child,
                mut stdout,
                emulation,
            } => {
                let mut text = String::new();
                let _ = std::io::Read::read_to_string(&mut stdout, &mut text);
                let _ = child.wait();
                let stats = emulation.map(Emulation::wait).unwrap_or_default();
                let result = text
                    .lines()
                    .find_map(|l| l.strip_prefix("RESULT "))
                    .and_then(|r| {
                        let mut it = r.split_whitespace().filter_map(|v| v.parse().ok());
                        Some((it.next()?, it.next()?))
                    })
                    .unwrap_or((0, 0));
                (result, stats)
            }
        }
    }
}

fn start_hub(dir: &Path, n: usize) -> Hub {
    Hub::start(HubConfig {
        name: "emu-bench".into(),
        unix_path: Some(dir.join(format!("emu-bench-{n}.sock"))),
        backpressure: Backpressure::Block,
        ..HubConfig::default()
    })
    .expect("start hub")
}

struct Flood {
    fps: f64,
    lost: u64,
    /// Notified calls per frame sent.
    calls_per_frame: f64,
    dropped_writes: u64,
}

impl Flood {
    fn new(frames: usize, received: u64, ns: u64, stats: EmulationStats) -> Flood {
        Flood {
            fps: received as f64 / (ns as f64 / 1e9).max(1e-9),
            lost: frames as u64 - received,
            calls_per_frame: stats.calls as f64 / frames as f64,
            dropped_writes: stats.dropped_writes,
        }
    }
}

/// The program sends `frames`; the bench counts them on arrival.
fn flood_tx(hub: &Hub, path: Path3, frames: usize) -> Flood {
    let endpoint = hub.unix_endpoint().expect("unix endpoint");
    let mut me = HubClient::connect(&endpoint, &opts("bench")).expect("connect bench");
    let mut program = Program::start(path, Role::FloodTx, frames, &endpoint);
    program.ready();
    let (received, ns) = role_flood_rx(&mut me, frames).unwrap_or((0, 0));
    let ((sent, _), stats) = program.finish();
    if sent != frames as u64 {
        println!(
            "  ! {}: the program's send failed after {sent} of {frames} frames",
            path.name()
        );
    }
    if std::env::var_os("EMU_BENCH_DEBUG").is_some() {
        println!(
            "  debug {}: sent {sent} received {received} stats {stats:?} hub {:?}",
            path.name(),
            hub.stats()
        );
    }
    Flood::new(frames, received, ns, stats)
}

/// The bench sends `frames`; the program counts them on arrival.
fn flood_rx(hub: &Hub, path: Path3, role: Role, frames: usize) -> Flood {
    let endpoint = hub.unix_endpoint().expect("unix endpoint");
    let mut me = HubClient::connect(&endpoint, &opts("bench")).expect("connect bench");
    let mut program = Program::start(path, role, frames, &endpoint);
    program.ready();
    role_flood_tx(&mut me, frames);
    let ((received, ns), stats) = program.finish();
    Flood::new(frames, received, ns, stats)
}

struct Latency {
    /// Notified calls per round trip.
    calls_per_ping: f64,
    samples: usize,
    lost: usize,
    /// Bench -> program, program -> bench, round trip / 2: (p50, p99) in µs.
    down: (f64, f64),
    up: (f64, f64),
    half_rtt: (f64, f64),
}

/// A row of the summary: its label and the figure it reads.
type LatencyFigure = (&'static str, fn(&Latency) -> f64);

fn percentiles(mut ns: Vec<u64>) -> (f64, f64) {
    ns.sort_unstable();
    let pick = |q: f64| {
        if ns.is_empty() {
            return f64::NAN;
        }
        ns[((ns.len() as f64 - 1.0) * q).round() as usize] as f64 / 1000.0
    };
    (pick(0.50), pick(0.99))
}

fn ping_pong(hub: &Hub, path: Path3, pings: usize) -> Latency {
    let endpoint = hub.unix_endpoint().expect("unix endpoint");
    let mut me = HubClient::connect(&endpoint, &opts("bench")).expect("connect bench");
    let mut program = Program::start(path, Role::Echo, pings, &endpoint);
    program.ready();
    let warmup = (pings / 20).max(10);
    let (mut down, mut up, mut half) = (Vec::new(), Vec::new(), Vec::new());
    let mut lost = 0;
    for i in 0..pings {
        let t0 = monotonic_ns();
        me.send(&frame(PING, &(t0 as u32).to_le_bytes()))
            .expect("send ping");
        let pong = loop {
            match me.recv(Some(IDLE)) {
                Ok(Some(rx)) if rx.frame.id() == Some(CanId::Standard(PONG)) => break Some(rx),
                Ok(Some(_)) => continue,
                _ => break None,
            }
        };
        let t2 = monotonic_ns();
        let Some(pong) = pong else {
            lost += 1;
            continue;
        };
        if i < warmup {
            continue;
        }
        let p = pong.frame.payload();
        let t1 = u32_at(p, 4);
        down.push(u64::from(t1.wrapping_sub(u32_at(p, 0))));
        up.push(u64::from((t2 as u32).wrapping_sub(t1)));
        half.push((t2 - t0) / 2);
    }
    let (_, stats) = program.finish();
    Latency {
        calls_per_ping: stats.calls as f64 / pings as f64,
        samples: half.len(),
        lost,
        down: percentiles(down),
        up: percentiles(up),
        half_rtt: percentiles(half),
    }
}

/// The `CALL` lines of one `calls` child: name -> ns per call (`None`: not measurable there).
fn calls(count: usize, emulate: bool) -> Vec<(String, Option<f64>)> {
    let (mut child, emulation) = spawn_child("calls", count, None, emulate);
    let mut text = String::new();
    if let Some(mut out) = child.stdout.take() {
        let _ = std::io::Read::read_to_string(&mut out, &mut text);
    }
    let _ = child.wait();
    if let Some(e) = emulation {
        e.wait();
    }
    text.lines()
        .filter_map(|l| l.strip_prefix("CALL "))
        .filter_map(|l| {
            let (name, ns) = l.split_once(' ')?;
            Some((name.to_string(), ns.parse().ok()))
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn fmt_fps(fps: f64) -> String {
    let s = (fps.round() as u64).to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 && a.is_finite() && b.is_finite() {
        format!("{:.2}x", a / b)
    } else {
        "n/a".into()
    }
}

fn main() {
    if let Ok(role) = std::env::var(ROLE_ENV) {
        std::process::exit(child_main(&role));
    }
    // `cargo bench` passes `--bench`; accept and ignore libtest-style arguments.
    if let Err(e) = emu::available() {
        println!("SocketCAN emulation benchmark NOT RUN: {e}");
        return;
    }
    let frames: usize = std::env::var("EMU_BENCH_FRAMES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let pings = (frames / 10).max(200);
    let call_count = (frames / 10).max(3 * BATCH);
    let dir = tempfile::tempdir().expect("temp dir");
    let started = Instant::now();
    println!(
        "SocketCAN emulation benchmark ({} cores): one program, its bus opened with vcan::open(CAN_BUS), on one hub",
        thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("  bare hub        = the program's loop on a thread of the bench, hub client in-process");
    println!("  vcan::client    = the program as a process, CAN_BUS=unix:<hub>");
    println!("  emulated AF_CAN = the program as a process, CAN_BUS=socketcan:can0, SocketCAN by seccomp user notification");
    println!();

    let mut hubs = 0;
    let mut hub = || {
        hubs += 1;
        start_hub(dir.path(), hubs)
    };

    // (a) throughput
    let mut tx: Vec<Vec<Flood>> = PATHS.iter().map(|_| Vec::new()).collect();
    let mut rx: Vec<Vec<Flood>> = PATHS.iter().map(|_| Vec::new()).collect();
    let mut rx_read: Vec<Flood> = Vec::new();
    for _ in 0..ROUNDS {
        for (i, path) in PATHS.iter().enumerate() {
            tx[i].push(flood_tx(&hub(), *path, frames));
            rx[i].push(flood_rx(&hub(), *path, Role::FloodRx, frames));
        }
        rx_read.push(flood_rx(&hub(), Path3::Emulated, Role::FloodRxRead, frames));
    }
    println!(
        "(a) throughput, {frames} classic 8-byte frames per run, per-frame send/recv, median of {ROUNDS} runs, hub Backpressure::Block"
    );
    println!(
        "{:<18} {:<20} {:>12} {:>10} {:>14} {:>14}",
        "direction", "path", "frames/s", "lost", "notified/frame", "dropped writes"
    );
    let med = |runs: &[Flood]| median(runs.iter().map(|f| f.fps).collect());
    let lost = |runs: &[Flood]| runs.iter().map(|f| f.lost).sum::<u64>();
    let row = |label: &str, path: &str, runs: &[Flood]| {
        println!(
            "{:<18} {:<20} {:>12} {:>10} {:>14.2} {:>14}",
            label,
            path,
            fmt_fps(med(runs)),
            lost(runs),
            runs.iter().map(|f| f.calls_per_frame).sum::<f64>() / runs.len().max(1) as f64,
            runs.iter().map(|f| f.dropped_writes).sum::<u64>()
        );
    };
    for (label, runs) in [("program -> bus", &tx), ("bus -> program", &rx)] {
        for (i, path) in PATHS.iter().enumerate() {
            row(if i == 0 { label } else { "" }, path.name(), &runs[i]);
        }
    }
    row("", "emulated, read(2)", &rx_read);
    println!(
        "  frames/s = frames that arrived / (first send .. last arrival); lost = sent - arrived, all {ROUNDS} runs;"
    );
    println!("  notified/frame = system calls the supervisor answered per frame (mean); dropped writes = frames it could not put on the bus;");
    println!("  vcan's kernel backend receives with recvmsg (timestamps, MSG_CONFIRM), which is notified; emulated, read(2) =");
    println!("  the same flood read by plain socket/bind/poll/read(2) calls in the same program, which run natively");
    println!();

    // (b) latency
    let mut lat = Vec::new();
    for path in PATHS {
        lat.push(ping_pong(&hub(), path, pings));
    }
    println!(
        "(b) ping-pong latency, {pings} round trips (first 5 % dropped), bench <-> program through the hub"
    );
    println!(
        "{:<16} {:>8} {:>9} {:>9} {:>9} {:>9} {:>10} {:>10} {:>5} {:>9}",
        "path",
        "samples",
        "down p50",
        "down p99",
        "up p50",
        "up p99",
        "rtt/2 p50",
        "rtt/2 p99",
        "lost",
        "notified"
    );
    for (path, l) in PATHS.iter().zip(&lat) {
        println!(
            "{:<16} {:>8} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>10.1} {:>10.1} {:>5} {:>9.2}",
            path.name(),
            l.samples,
            l.down.0,
            l.down.1,
            l.up.0,
            l.up.1,
            l.half_rtt.0,
            l.half_rtt.1,
            l.lost,
            l.calls_per_ping
        );
    }
    println!("  µs; down = bench -> program, up = program -> bench (one-way, CLOCK_MONOTONIC carried in the payload);");
    println!("  rtt/2 = round trip measured by the bench / 2; notified = system calls the supervisor answered per round trip");
    println!();

    // (c) setup calls
    let emulated = calls(call_count, true);
    let plain = calls(call_count, false);
    let get = |set: &[(String, Option<f64>)], name: &str| {
        set.iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| *v)
            .map_or(f64::NAN, |ns| ns / 1000.0)
    };
    println!(
        "(c) per-call cost, median of batches of {BATCH} ({call_count} calls), the same program with and without the filter"
    );
    println!(
        "{:<44} {:>12} {:<34} {:>12} {:>8}",
        "call in the emulated program", "µs", "same program, no filter", "µs", "ratio"
    );
    let rows = [
        (
            "setsockopt(CAN_RAW_FILTER), answered",
            "setsockopt-can",
            "setsockopt(SO_RCVBUF) AF_UNIX",
            "setsockopt-unix",
        ),
        (
            "ioctl(SIOCGIFINDEX can0), answered",
            "ioctl-can0",
            "ioctl(SIOCGIFINDEX lo)",
            "ioctl-lo",
        ),
        (
            "setsockopt(SO_RCVBUF) AF_UNIX, passed on",
            "setsockopt-unix",
            "setsockopt(SO_RCVBUF) AF_UNIX",
            "setsockopt-unix",
        ),
        (
            "ioctl(SIOCGIFINDEX lo), passed on",
            "ioctl-lo",
            "ioctl(SIOCGIFINDEX lo)",
            "ioctl-lo",
        ),
        ("getpid, not notified (filter only)", "getpid", "getpid", "getpid"),
    ];
    for (label, name, base_label, base) in rows {
        let (e, p) = (get(&emulated, name), get(&plain, base));
        println!(
            "{:<44} {:>12.2} {:<34} {:>12.2} {:>8}",
            label,
            e,
            base_label,
            p,
            ratio(e, p)
        );
    }
    println!("  answered = the supervisor replies; passed on = notified, replied with SECCOMP_USER_NOTIF_FLAG_CONTINUE");
    println!();

    println!("summary (ratios emulated / other; throughput below 1 is slower, latency above 1 is slower)");
    println!("{:<40} {:>14} {:>14}", "figure", "emu/client", "emu/bare");
    let (b, c, e) = (0, 1, 2);
    let emu_read = med(&rx_read);
    for (label, runs) in [("frames/s program -> bus", &tx), ("frames/s bus -> program", &rx)] {
        println!(
            "{:<40} {:>14} {:>14}",
            label,
            ratio(med(&runs[e]), med(&runs[c])),
            ratio(med(&runs[e]), med(&runs[b]))
        );
    }
    println!(
        "{:<40} {:>14} {:>14}",
        "frames/s bus -> program, read(2)",
        ratio(emu_read, med(&rx[c])),
        ratio(emu_read, med(&rx[b]))
    );
    let pick: [LatencyFigure; 6] = [
        ("latency down p50", |l| l.down.0),
        ("latency down p99", |l| l.down.1),
        ("latency up p50", |l| l.up.0),
        ("latency up p99", |l| l.up.1),
        ("latency rtt/2 p50", |l| l.half_rtt.0),
        ("latency rtt/2 p99", |l| l.half_rtt.1),
    ];
    for (label, f) in pick {
        println!(
            "{:<40} {:>14} {:>14}",
            label,
            ratio(f(&lat[e]), f(&lat[c])),
            ratio(f(&lat[e]), f(&lat[b]))
        );
    }
    println!();
    println!("bench finished in {:.1} s", started.elapsed().as_secs_f64());
}
