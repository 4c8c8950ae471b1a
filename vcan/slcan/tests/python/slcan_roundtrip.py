"""python-can's `slcan` interface against the emulated adapter (driven by tests/python_can.rs).

Usage: slcan_roundtrip.py LINK_PATH

Opens the adapter twice, as a tool that closes and reopens the port does: first classic CAN at 500 kbit/s
(`bitrate=500000`), then CAN FD with a 2 Mbit/s data phase (`timing=BitTimingFd`, sent as `S6` + `Y2`).
Each frame sent is answered by a Rust hub node with the identifier plus one, the same kind of frame and
the data reversed; every answer is checked. Exits non-zero with a message on any mismatch.
"""

import sys

import can

RECV_TIMEOUT = 10.0


def fail(message):
    print(f"FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def exchange(bus, sent):
    bus.send(sent)
    answer = bus.recv(timeout=RECV_TIMEOUT)
    if answer is None:
        fail(f"no answer to {sent} within {RECV_TIMEOUT} s")
    expected = {
        "arbitration_id": sent.arbitration_id + 1,
        "is_extended_id": sent.is_extended_id,
        "is_fd": sent.is_fd,
        "bitrate_switch": sent.bitrate_switch,
        "is_remote_frame": False,
        "data": bytes(reversed(sent.data)),
    }
    got = {
        "arbitration_id": answer.arbitration_id,
        "is_extended_id": answer.is_extended_id,
        "is_fd": answer.is_fd,
        "bitrate_switch": answer.bitrate_switch,
        "is_remote_frame": answer.is_remote_frame,
        "data": bytes(answer.data),
    }
    if got != expected:
        fail(f"answer to {sent}: expected {expected}, got {got}")
    print(f"ok: {sent} -> {answer}")


def main():
    if len(sys.argv) != 2:
        fail("usage: slcan_roundtrip.py LINK_PATH")
    link = sys.argv[1]

    bus = can.Bus(interface="slcan", channel=link, bitrate=500000, sleep_after_open=0)
    try:
        exchange(bus, can.Message(arbitration_id=0x123, data=[0x11, 0x22, 0x33], is_extended_id=False))
        exchange(
            bus,
            can.Message(arbitration_id=0x1ABCDE00, data=list(range(1, 9)), is_extended_id=True),
        )
    finally:
        bus.shutdown()

    timing = can.BitTimingFd.from_sample_point(
        f_clock=80_000_000,
        nom_bitrate=500_000,
        nom_sample_point=80.0,
        data_bitrate=2_000_000,
        data_sample_point=80.0,
    )
    bus = can.Bus(interface="slcan", channel=link, timing=timing, sleep_after_open=0)
    try:
        exchange(
            bus,
            can.Message(
                arbitration_id=0x200,
                data=list(range(64)),
                is_extended_id=False,
                is_fd=True,
                bitrate_switch=True,
            ),
        )
        exchange(
            bus,
            can.Message(
                arbitration_id=0x1000,
                data=list(range(100, 112)),
                is_extended_id=True,
                is_fd=True,
                bitrate_switch=False,
            ),
        )
    finally:
        bus.shutdown()
    print("python-can slcan: all exchanges OK")


if __name__ == "__main__":
    main()
