# Developer recipes. Run `just --list` to see them.

# The main job: every scenario on the native environment, report in reports/<run-id>/.
demo:
    cargo run --release -p agl-parity -- run

# Unit, bad-input, cleanup and scenario tests (what CI runs after fmt and clippy).
test:
    cargo test

# Everything CI does, locally.
ci:
    .ci/run

# What this machine can host, and how to fix what it cannot.
doctor:
    cargo run -p agl-parity -- doctor

# All benchmarks: the CAN bus against python-can, and the scenario suite's wall time.
bench: bench-bus bench-suite

# Benchmark the userspace CAN bus against python-can's udp_multicast (throwaway venv under target/).
bench-bus:
    python3 -m venv target/bench-venv
    target/bench-venv/bin/pip install --quiet python-can msgpack
    PYTHON_CAN_PY={{justfile_directory()}}/target/bench-venv/bin/python cargo bench -p vcan --bench bus

# Wall time of the whole native scenario suite, run one scenario at a time and four at a time.
bench-suite:
    cargo bench -p agl-parity --bench suite
