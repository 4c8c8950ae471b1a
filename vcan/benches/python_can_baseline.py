#!/usr/bin/env python3
"""Baseline for vcan/benches/bus.rs: python-can's `udp_multicast` bus, one sender to one receiver.

The sender process starts a receiver process (this script with `--role receiver`), waits until it has
joined the group, sends N classic 8-byte frames as fast as `bus.send` goes, and then collects the
receiver's count. Throughput is frames received per second from the first send to the last receive (both
on CLOCK_MONOTONIC, which is system-wide on Linux), loss is the share of frames never received.

The last line printed is machine-readable for the Rust bench:

    RESULT group=<group> sent=<n> received=<n> seconds=<s> fps=<f> loss_pct=<p>

or `ERROR <reason>` (exit status 1). python-can's default group is IPv6; if that cannot be used here the
IPv4 group 239.74.163.2 is tried. Multicast stays on this host (hop limit 1, multicast loopback on).

Usage: python python_can_baseline.py [--frames 20000]
Needs: pip install python-can msgpack
"""

import argparse
import subprocess
import sys
import time

GROUPS = ["ff15:7079:7468:6f6e:6465:6d6f:6d63:6173", "239.74.163.2"]
PORT = 43113
IDLE_SECONDS = 1.0
STARTUP_SECONDS = 10.0


def open_bus(group):
    import can

    return can.Bus(interface="udp_multicast", channel=group, port=PORT, receive_own_messages=False)


def receiver(group, frames):
    bus = open_bus(group)
    print("READY", flush=True)
    count = 0
    first = last = None
    started = time.monotonic()
    try:
        while count < frames:
            timeout = IDLE_SECONDS if count else STARTUP_SECONDS
            msg = bus.recv(timeout=timeout)
            if msg is None:
                break
            now = time.monotonic()
            if first is None:
                first = now
            last = now
            count += 1
    finally:
        bus.shutdown()
    print(f"RECEIVED {count} {first or started} {last or started}", flush=True)


def sender(group, frames):
    import can

    proc = subprocess.Popen(
        [sys.executable, __file__, "--role", "receiver", "--group", group, "--frames", str(frames)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline().strip()
        if line != "READY":
            err = proc.stderr.read().strip().splitlines()
            raise RuntimeError(f"receiver did not start on {group}: {err[-1] if err else line!r}")
        bus = open_bus(group)
        try:
            payloads = [i.to_bytes(8, "little") for i in range(frames)]
            start = time.monotonic()
            for data in payloads:
                bus.send(can.Message(arbitration_id=0x123, is_extended_id=False, data=data))
            send_seconds = time.monotonic() - start
        finally:
            bus.shutdown()
        out, err = proc.communicate(timeout=STARTUP_SECONDS + IDLE_SECONDS + 30)
        received_line = [l for l in out.splitlines() if l.startswith("RECEIVED")]
        if not received_line:
            raise RuntimeError(f"receiver gave no count: {err.strip()[-300:]}")
        _, count, _first, last = received_line[-1].split()
        count = int(count)
        seconds = (float(last) - start) if count else send_seconds
        fps = count / seconds if seconds > 0 else 0.0
        loss = 100.0 * (frames - count) / frames
        return count, seconds, fps, loss, send_seconds
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20000)
    parser.add_argument("--role", choices=["sender", "receiver"], default="sender")
    parser.add_argument("--group", default=None)
    args = parser.parse_args()
    if args.role == "receiver":
        receiver(args.group, args.frames)
        return 0
    try:
        import can  # noqa: F401
        import msgpack  # noqa: F401
    except ImportError as e:
        print(f"ERROR python-can or msgpack missing ({e}); pip install python-can msgpack", flush=True)
        return 1
    errors = []
    for group in [args.group] if args.group else GROUPS:
        try:
            count, seconds, fps, loss, send_seconds = sender(group, args.frames)
        except (OSError, RuntimeError, subprocess.TimeoutExpired) as e:
            errors.append(f"{group}: {e}")
            continue
        if count == 0:
            errors.append(f"{group}: nothing received")
            continue
        print(f"python-can udp_multicast on {group}: sent {args.frames} in {send_seconds:.3f} s", file=sys.stderr)
        print(
            f"RESULT group={group} sent={args.frames} received={count} seconds={seconds:.6f} "
            f"fps={fps:.1f} loss_pct={loss:.3f}",
            flush=True,
        )
        return 0
    print("ERROR " + "; ".join(errors), flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
