"""A plain-TCP socketcand client in BCM mode (driven by tests/python_can.rs).

Usage: raw_bcm_heartbeat.py HOST PORT CHANNEL

Opens CHANNEL, adds the cyclic job `< add 0 100000 123 2 AA BB >` (0x123 every 100 ms) and checks with
`< echo >` that the server took it without an error. Prints `heartbeat running`, keeps the connection
(and so the job) until stdin closes, then deletes the job, prints `heartbeat done` and exits 0.
"""

import socket
import sys

TIMEOUT = 10.0


class Connection:
    def __init__(self, host, port):
        self.sock = socket.create_connection((host, port), timeout=TIMEOUT)
        self.buffer = b""

    def send(self, text):
        self.sock.sendall(text.encode("ascii"))

    def message(self):
        """The next `< ... >` message (several may arrive in one read, one may span reads)."""
        while True:
            start = self.buffer.find(b"<")
            end = self.buffer.find(b">", start + 1) if start >= 0 else -1
            if end >= 0:
                message = self.buffer[start : end + 1].decode("ascii")
                self.buffer = self.buffer[end + 1 :]
                return message
            chunk = self.sock.recv(4096)
            if not chunk:
                raise AssertionError("the server closed the connection")
            self.buffer += chunk

    def expect(self, expected):
        got = self.message()
        assert got == expected, f"expected {expected!r}, got {got!r}"


def main():
    host, port, channel = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    connection = Connection(host, port)
    connection.expect("< hi >")
    connection.send(f"< open {channel} >")
    connection.expect("< ok >")
    connection.send("< add 0 100000 123 2 AA BB >")
    connection.send("< echo >")
    connection.expect("< echo >")
    print("heartbeat running", flush=True)
    sys.stdin.read()
    connection.send("< delete 123 >")
    connection.send("< echo >")
    connection.expect("< echo >")
    connection.sock.close()
    print("heartbeat done", flush=True)


if __name__ == "__main__":
    main()
