//! Benchmark of the userspace CAN bus (hub + Unix-socket clients) against python-can's `udp_multicast`.
//!
//! Prints plain-text tables:
//! (a) throughput, 1 sender -> 1 and -> 4 receivers, per-frame `send` and `send_batch`, with
//!     `Backpressure::Block` (flow control: the zero-loss figure) and `Backpressure::Drop` (with its loss);
//! (b) one-way latency p50/p99/max at paced 1k and 10k frames/s (CLOCK_REALTIME ns carried in the
//!     payload, compared on receipt);
//! (c) python-can `udp_multicast` measured in the same run by `python_can_baseline.py` with the interpreter
//!     in `PYTHON_CAN_PY` (`just bench-bus` sets it up), and ratios ours / python-can.
//!
//! Run: `cargo bench -p vcan --bench bus` (release profile). Bounded: the whole run takes well under two
//! minutes. `BUS_BENCH_FRAMES` overrides the frames per throughput run; `BUS_BENCH_SECTIONS` (for example
//! `b` or `a,c`) runs only some sections.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use vcan::client::HubClient;
use vcan::hub::{Backpressure, Hub, HubConfig};
use vcan::{CanId, CanSocket, Endpoint, Frame, OpenOptions};

const TARGET_FPS: f64 = 500_000.0;
const TARGET_P99_US: f64 = 100.0;
const BATCH: usize = 256;
const PYTHON_FRAMES: usize = 20_000;

fn realtime_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn opts(name: &str) -> OpenOptions {
    OpenOptions {
        node_name: name.into(),
        ..OpenOptions::default()
    }
}

fn start_hub(dir: &Path, backpressure: Backpressure) -> Hub {
    Hub::start(HubConfig {
        name: "bench".into(),
        unix_path: Some(dir.join(format!("bench-{}.sock", std::process::id()))),
        tcp_addr: None,
        backpressure,
        ..HubConfig::default()
    })
    .expect("start hub")
}

#[derive(Clone, Copy, PartialEq)]
enum Api {
    Send,
    Batch,
}

struct Throughput {
    fps: f64,
    sent: u64,
    min_received: u64,
    lost: u64,
    hub_dropped: u64,
}

/// Receivers count frames until they got `frames` or the bus went quiet for `idle`.
fn throughput(
    dir: &Path,
    receivers: usize,
    backpressure: Backpressure,
    api: Api,
    frames: usize,
) -> Throughput {
    let hub = start_hub(dir, backpressure);
    let endpoint = hub.unix_endpoint().expect("unix endpoint");
    let (ready_tx, ready_rx) = mpsc::channel();
    let handles: Vec<_> = (0..receivers)
        .map(|i| {
            let endpoint = endpoint.clone();
            let ready = ready_tx.clone();
            thread::spawn(move || {
                let mut node = HubClient::connect(&endpoint, &opts(&format!("rx{i}"))).expect("connect rx");
                ready.send(()).expect("ready");
                let idle = Some(Duration::from_secs(1));
                let mut count = 0u64;
                let mut last = Instant::now();
                while count < frames as u64 {
                    match node.recv(idle).expect("recv") {
                        Some(_) => {
                            count += 1;
                            last = Instant::now();
                        }
                        None => break,
                    }
                }
                (count, last)
            })
        })
        .collect();
    for _ in 0..receivers {
        ready_rx.recv().expect("receiver ready");
    }
    let mut tx = HubClient::connect(&endpoint, &opts("tx")).expect("connect tx");
    let batch: Vec<Frame> = (0..BATCH)
        .map(|i| Frame::data(CanId::Standard(0x123), &(i as u64).to_le_bytes()).expect("frame"))
        .collect();
    let start = Instant::now();
    match api {
        Api::Send => {
            for i in 0..frames {
                tx.send(&batch[i % BATCH]).expect("send");
            }
        }
        Api::Batch => {
            let mut left = frames;
            while left > 0 {
                let n = left.min(BATCH);
                tx.send_batch(&batch[..n]).expect("send_batch");
                left -= n;
            }
        }
    }
    let results: Vec<(u64, Instant)> = handles
        .into_iter()
        .map(|h| h.join().expect("receiver thread"))
        .collect();
    let stats = hub.shutdown();
    let end = results.iter().map(|r| r.1).max().unwrap_or(start);
    let min_received = results.iter().map(|r| r.0).min().unwrap_or(0);
    let lost: u64 = results.iter().map(|r| frames as u64 - r.0).sum();
    let seconds = end.duration_since(start).as_secs_f64().max(1e-9);
    Throughput {
        fps: min_received as f64 / seconds,
        sent: frames as u64,
        min_received,
        lost,
        hub_dropped: stats.dropped,
    }
}

struct Latency {
    rate: u32,
    samples: usize,
    p50_us: f64,
    p99_us: f64,
    max_us: f64,
    lost: usize,
}

fn sleep_until(deadline_ns: u64) {
    let ts = libc::timespec {
        tv_sec: (deadline_ns / 1_000_000_000) as _,
        tv_nsec: (deadline_ns % 1_000_000_000) as _,
    };
    // SAFETY: valid timespec; TIMER_ABSTIME sleep on CLOCK_MONOTONIC, EINTR just returns early.
    unsafe {
        libc::clock_nanosleep(
            libc::CLOCK_MONOTONIC,
            libc::TIMER_ABSTIME,
            &ts,
            std::ptr::null_mut(),
        )
    };
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn latency(dir: &Path, rate: u32, seconds: f64) -> Latency {
    let hub = start_hub(dir, Backpressure::Block);
    let endpoint: Endpoint = hub.unix_endpoint().expect("unix endpoint");
    let frames = (f64::from(rate) * seconds) as usize;
    let warmup = (frames / 20).max(10);
    let (ready_tx, ready_rx) = mpsc::channel();
    let rx_endpoint = endpoint.clone();
    let receiver = thread::spawn(move || {
        let mut node = HubClient::connect(&rx_endpoint, &opts("rx")).expect("connect rx");
        ready_tx.send(()).expect("ready");
        let mut deltas = Vec::with_capacity(frames);
        while deltas.len() < frames {
            match node.recv(Some(Duration::from_secs(1))).expect("recv") {
                Some(r) => {
                    let now = realtime_ns();
                    let sent = u64::from_le_bytes(r.frame.payload()[..8].try_into().unwrap_or([0; 8]));
                    deltas.push(now.saturating_sub(sent));
                }
                None => break,
            }
        }
        deltas
    });
    ready_rx.recv().expect("receiver ready");
    let mut tx = HubClient::connect(&endpoint, &opts("tx")).expect("connect tx");
    // SAFETY: prctl with PR_SET_TIMERSLACK only changes this thread's timer slack (1 ns: precise pacing).
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1, 0, 0, 0) };
    let period = 1_000_000_000 / u64::from(rate);
    let t0 = monotonic_ns() + 1_000_000;
    for i in 0..frames as u64 {
        sleep_until(t0 + i * period);
        let frame = Frame::data(CanId::Standard(0x321), &realtime_ns().to_le_bytes()).expect("frame");
        tx.send(&frame).expect("send");
    }
    let deltas = receiver.join().expect("receiver thread");
    drop(hub);
    summarize(rate, frames, warmup, deltas)
}

/// Machine floor for (a): one 18-byte `send` per frame over a bare Unix socketpair to a reader thread
/// that reads 64 KiB at a time. No hub, no protocol: what one syscall per frame costs here.
fn raw_send_floor(frames: usize) -> f64 {
    use std::io::{Read, Write};
    let (mut a, mut b) = std::os::unix::net::UnixStream::pair().expect("socketpair");
    let total = frames * 18;
    let reader = thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        let mut got = 0;
        while got < total {
            match b.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
        Instant::now()
    });
    let msg = [0u8; 18];
    let start = Instant::now();
    for _ in 0..frames {
        a.write_all(&msg).expect("write");
    }
    let end = reader.join().expect("reader");
    frames as f64 / end.duration_since(start).as_secs_f64().max(1e-9)
}

/// Machine floor for (b): the same paced sender, but through a bare relay thread (blocking read, write)
/// between two socketpairs: the thread hops and wake-ups of a hub without any hub code.
fn raw_relay_floor(rate: u32, seconds: f64) -> Latency {
    use std::io::{Read, Write};
    let (mut tx, mut relay_in) = std::os::unix::net::UnixStream::pair().expect("socketpair");
    let (mut relay_out, mut rx) = std::os::unix::net::UnixStream::pair().expect("socketpair");
    let frames = (f64::from(rate) * seconds) as usize;
    let warmup = (frames / 20).max(10);
    thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = relay_in.read(&mut buf) {
            if n == 0 || relay_out.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    });
    let receiver = thread::spawn(move || {
        let mut deltas = Vec::with_capacity(frames);
        let mut buf = vec![0u8; 64 * 1024];
        let mut pending = Vec::new();
        while deltas.len() < frames {
            let n = match rx.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let now = realtime_ns();
            pending.extend_from_slice(&buf[..n]);
            let whole = pending.len() / 8 * 8;
            for chunk in pending[..whole].chunks_exact(8) {
                deltas.push(now.saturating_sub(u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]))));
            }
            pending.drain(..whole);
        }
        deltas
    });
    // SAFETY: prctl with PR_SET_TIMERSLACK only changes this thread's timer slack.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1, 0, 0, 0) };
    let period = 1_000_000_000 / u64::from(rate);
    let t0 = monotonic_ns() + 1_000_000;
    for i in 0..frames as u64 {
        sleep_until(t0 + i * period);
        tx.write_all(&realtime_ns().to_le_bytes()).expect("write");
    }
    drop(tx);
    let deltas = receiver.join().expect("receiver");
    summarize(rate, frames, warmup, deltas)
}

fn summarize(rate: u32, frames: usize, warmup: usize, deltas: Vec<u64>) -> Latency {
    let lost = frames - deltas.len();
    let mut measured: Vec<u64> = deltas.into_iter().skip(warmup).collect();
    measured.sort_unstable();
    let pick = |q: f64| -> f64 {
        if measured.is_empty() {
            return f64::NAN;
        }
        let i = ((measured.len() as f64 - 1.0) * q).round() as usize;
        measured[i] as f64 / 1000.0
    };
    Latency {
        rate,
        samples: measured.len(),
        p50_us: pick(0.50),
        p99_us: pick(0.99),
        max_us: measured.last().map_or(f64::NAN, |&m| m as f64 / 1000.0),
        lost,
    }
}

struct PythonResult {
    fps: f64,
    received: u64,
    sent: u64,
    loss_pct: f64,
    group: String,
}

fn python_interpreter() -> Option<PathBuf> {
    let value = std::env::var_os("PYTHON_CAN_PY")?;
    let path = PathBuf::from(value);
    if path.is_absolute() || path.exists() {
        return Some(path);
    }
    // cargo runs benches in the package directory; a path relative to the workspace root also works.
    let from_root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(&path);
    Some(if from_root.exists() { from_root } else { path })
}

fn python_baseline(python: &Path) -> Result<PythonResult, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/python_can_baseline.py");
    let mut child = Command::new(python)
        .arg(&script)
        .arg("--frames")
        .arg(PYTHON_FRAMES.to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    // Bounded: the script itself finishes in seconds; kill it if it hangs.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(50)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err("python-can baseline did not finish within 60 s".into());
            }
            Err(e) => return Err(format!("waiting for the baseline: {e}")),
        }
    }
    let output = child
        .wait_with_output()
        .map_err(|e| format!("reading the baseline output: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let Some(line) = stdout.lines().rev().find(|l| l.starts_with("RESULT ")) else {
        let err = stdout
            .lines()
            .rev()
            .find(|l| l.starts_with("ERROR "))
            .map(str::to_string);
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(err.unwrap_or_else(|| format!("no RESULT line; stderr: {}", stderr.trim())));
    };
    let field = |key: &str| -> Option<&str> {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
    };
    let num = |key: &str| -> Result<f64, String> {
        field(key)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("bad `{key}` in `{line}`"))
    };
    Ok(PythonResult {
        fps: num("fps")?,
        received: num("received")? as u64,
        sent: num("sent")? as u64,
        loss_pct: num("loss_pct")?,
        group: field("group").unwrap_or("?").to_string(),
    })
}

fn fmt_fps(fps: f64) -> String {
    let whole = fps.round() as u64;
    let s = whole.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn main() {
    // `cargo bench` passes `--bench`; accept and ignore libtest-style arguments.
    let frames: usize = std::env::var("BUS_BENCH_FRAMES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let sections = std::env::var("BUS_BENCH_SECTIONS").unwrap_or_else(|_| "a,b,c".into());
    let run = |name: &str| sections.split(',').any(|s| s.trim() == name);
    let dir = tempfile::tempdir().expect("temp dir");
    let started = Instant::now();
    println!(
        "vcan userspace bus benchmark ({} cores, Unix sockets through one hub)",
        thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!();

    println!("(a) throughput, {frames} classic 8-byte frames per run, hub queue 65536 frames");
    println!(
        "{:<10} {:<11} {:<7} {:>14} {:>16} {:>12} {:>11}",
        "receivers", "api", "mode", "frames/s", "deliveries/s", "lost", "hub drops"
    );
    let mut best_send_1 = 0.0;
    let mut best_batch_1 = 0.0;
    let mut zero_loss_1 = true;
    for receivers in [1usize, 4].into_iter().filter(|_| run("a")) {
        for api in [Api::Send, Api::Batch] {
            for mode in [Backpressure::Block, Backpressure::Drop] {
                let t = throughput(dir.path(), receivers, mode, api, frames);
                let api_name = if api == Api::Send { "send" } else { "send_batch" };
                let mode_name = if mode == Backpressure::Block {
                    "Block"
                } else {
                    "Drop"
                };
                println!(
                    "{:<10} {:<11} {:<7} {:>14} {:>16} {:>12} {:>11}",
                    receivers,
                    api_name,
                    mode_name,
                    fmt_fps(t.fps),
                    fmt_fps(t.fps * receivers as f64),
                    t.lost,
                    t.hub_dropped
                );
                if receivers == 1 && mode == Backpressure::Block {
                    zero_loss_1 &= t.lost == 0 && t.min_received == t.sent;
                    if api == Api::Send {
                        best_send_1 = t.fps;
                    } else {
                        best_batch_1 = t.fps;
                    }
                }
            }
        }
    }
    let mut floor_send = f64::NAN;
    if run("a") {
        floor_send = raw_send_floor(frames);
        println!(
            "{:<10} {:<11} {:<7} {:>14} {:>16} {:>12} {:>11}",
            "floor",
            "raw write",
            "-",
            fmt_fps(floor_send),
            "-",
            "-",
            "-"
        );
    }
    println!("  frames/s = frames every receiver got / (first send .. last receive); Block = flow control, Drop = counted loss");
    println!("  floor = one write(2) per frame over a bare socketpair to one reader, no hub: this machine's per-syscall limit");
    println!();

    println!(
        "(b) one-way latency sender -> hub -> receiver (paced per-frame send, CLOCK_REALTIME in the payload)"
    );
    println!(
        "{:<12} {:>9} {:>10} {:>10} {:>10} {:>6}",
        "rate", "samples", "p50 µs", "p99 µs", "max µs", "lost"
    );
    let mut p99_10k = f64::NAN;
    for (rate, seconds) in [(1_000u32, 2.0), (10_000u32, 2.0)]
        .into_iter()
        .filter(|_| run("b"))
    {
        let l = latency(dir.path(), rate, seconds);
        println!(
            "{:<12} {:>9} {:>10.1} {:>10.1} {:>10.1} {:>6}",
            format!("{} fps", fmt_fps(f64::from(l.rate))),
            l.samples,
            l.p50_us,
            l.p99_us,
            l.max_us,
            l.lost
        );
        if rate == 10_000 {
            p99_10k = l.p99_us;
        }
    }
    let mut floor_p99_10k = f64::NAN;
    for (rate, seconds) in [(1_000u32, 2.0), (10_000u32, 2.0)]
        .into_iter()
        .filter(|_| run("b"))
    {
        let l = raw_relay_floor(rate, seconds);
        println!(
            "{:<12} {:>9} {:>10.1} {:>10.1} {:>10.1} {:>6}   floor: bare relay thread, no hub",
            format!("{} fps", fmt_fps(f64::from(l.rate))),
            l.samples,
            l.p50_us,
            l.p99_us,
            l.max_us,
            l.lost
        );
        if rate == 10_000 {
            floor_p99_10k = l.p99_us;
        }
    }
    println!(
        "  floor = the same pacing through a bare read/write relay thread: the wake-up cost of two hops here"
    );
    println!();

    println!("(c) baseline: python-can udp_multicast, 1 sender process -> 1 receiver process, {PYTHON_FRAMES} frames");
    let python = match python_interpreter() {
        _ if !run("c") => None,
        None => {
            println!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
            println!("!!! BASELINE NOT MEASURED: PYTHON_CAN_PY is not set, so no ratio against python-can is reported.");
            println!("!!! Run `just bench-bus` (creates target/bench-venv with python-can + msgpack and sets it), or:");
            println!("!!!   python3 -m venv target/bench-venv && target/bench-venv/bin/pip install python-can msgpack");
            println!("!!!   PYTHON_CAN_PY=target/bench-venv/bin/python cargo bench -p vcan --bench bus");
            println!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
            None
        }
        Some(path) => match python_baseline(&path) {
            Ok(r) => {
                println!(
                    "group {}: {} frames/s, received {}/{} ({:.2} % lost)",
                    r.group,
                    fmt_fps(r.fps),
                    r.received,
                    r.sent,
                    r.loss_pct
                );
                Some(r)
            }
            Err(e) => {
                println!("!!! BASELINE NOT MEASURED: python-can run failed: {e}");
                None
            }
        },
    };
    println!();

    println!("summary");
    println!(
        "{:<52} {:>16} {:>16} {:>8}",
        "figure", "measured", "target", "met"
    );
    let yes = |ok: bool| if ok { "yes" } else { "NO" };
    println!(
        "{:<52} {:>16} {:>16} {:>8}",
        "1 -> 1 zero-loss throughput, send_batch (frames/s)",
        fmt_fps(best_batch_1),
        fmt_fps(TARGET_FPS),
        yes(best_batch_1 >= TARGET_FPS && zero_loss_1)
    );
    println!(
        "{:<52} {:>16} {:>16} {:>8}",
        "1 -> 1 zero-loss throughput, per-frame send (frames/s)",
        fmt_fps(best_send_1),
        fmt_fps(TARGET_FPS),
        yes(best_send_1 >= TARGET_FPS && zero_loss_1)
    );
    println!(
        "{:<52} {:>16} {:>16} {:>8}",
        "  machine floor, one write per frame, no hub",
        fmt_fps(floor_send),
        "",
        ""
    );
    println!(
        "{:<52} {:>16} {:>16} {:>8}",
        "p99 one-way latency at 10k frames/s (µs)",
        format!("{p99_10k:.1}"),
        format!("< {TARGET_P99_US:.0}"),
        yes(p99_10k < TARGET_P99_US)
    );
    println!(
        "{:<52} {:>16} {:>16} {:>8}",
        "  machine floor, bare 2-hop relay p99 (µs)",
        format!("{floor_p99_10k:.1}"),
        "",
        ""
    );
    if let Some(py) = python {
        let ratio = |ours: f64| {
            if py.fps > 0.0 {
                format!("{:.1}x", ours / py.fps)
            } else {
                "n/a".into()
            }
        };
        println!(
            "{:<52} {:>16} {:>16} {:>8}",
            "ratio ours/python-can, per-frame send",
            ratio(best_send_1),
            "",
            ""
        );
        println!(
            "{:<52} {:>16} {:>16} {:>8}",
            "ratio ours/python-can, send_batch",
            ratio(best_batch_1),
            "",
            ""
        );
        println!(
            "{:<52} {:>16} {:>16} {:>8}",
            "loss ours (Block) vs python-can (%)",
            format!("0 vs {:.2}", py.loss_pct),
            "",
            ""
        );
    } else {
        println!(
            "{:<52} {:>16}",
            "ratio ours/python-can", "NOT MEASURED (set PYTHON_CAN_PY)"
        );
    }
    println!();
    println!("bench finished in {:.1} s", started.elapsed().as_secs_f64());
}
