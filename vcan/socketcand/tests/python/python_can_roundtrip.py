"""python-can's socketcand interface against the vcan-socketcand server (driven by tests/python_can.rs).

Usage: python_can_roundtrip.py HOST PORT CHANNEL

Sends a standard and an extended frame, then expects the Rust side's answer (extended id 0x1ABCDEF0,
data CA FE) and an error frame of class 0x004. Prints `python-can roundtrip ok` and exits 0 on success;
any failure raises (non-zero exit, traceback on stderr).
"""

import sys
import time

import can

TIMEOUT = 10.0


def receive(bus, what):
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        message = bus.recv(timeout=deadline - time.monotonic())
        if message is not None:
            return message
    raise AssertionError(f"no {what} within {TIMEOUT} s")


def main():
    host, port, channel = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    print(f"python-can {can.__version__} connecting to {host}:{port} channel {channel}", flush=True)
    bus = can.Bus(interface="socketcand", host=host, port=port, channel=channel)
    try:
        bus.send(can.Message(arbitration_id=0x123, data=[0x11, 0x22, 0x33], is_extended_id=False))
        bus.send(can.Message(arbitration_id=0x01234567, data=[], is_extended_id=True))

        answer = receive(bus, "answer frame")
        assert not answer.is_error_frame, f"expected a data frame, got {answer}"
        assert answer.arbitration_id == 0x1ABCDEF0, f"answer id {answer.arbitration_id:#x}"
        assert answer.is_extended_id, "answer should be extended"
        assert bytes(answer.data) == b"\xca\xfe", f"answer data {bytes(answer.data).hex()}"
        assert answer.dlc == 2, f"answer dlc {answer.dlc}"
        assert abs(answer.timestamp - time.time()) < 60, f"answer timestamp {answer.timestamp}"

        error = receive(bus, "error frame")
        assert error.is_error_frame, f"expected an error frame, got {error}"
        assert error.arbitration_id == 0x004, f"error class {error.arbitration_id:#x}"
        print(f"answer: {answer}", flush=True)
        print(f"error frame: {error}", flush=True)
    finally:
        bus.shutdown()
    print("python-can roundtrip ok", flush=True)


if __name__ == "__main__":
    main()
