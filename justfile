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

# All benchmarks: the CAN bus against python-can, emulated SocketCAN against the bus client, container and VM
# start-up against native processes, and the scenario suite's wall time.
bench: bench-bus bench-socketcan bench-container bench-footprint bench-vm bench-suite

# Benchmark the userspace CAN bus against python-can's udp_multicast (throwaway venv under target/).
bench-bus:
    python3 -m venv target/bench-venv
    target/bench-venv/bin/pip install --quiet python-can msgpack
    PYTHON_CAN_PY={{justfile_directory()}}/target/bench-venv/bin/python cargo bench -p vcan --bench bus

# SocketCAN emulated by seccomp user notification: frames/s and one-way latency against the same program on
# vcan::client and on the bare hub, and the cost of an intercepted setup call (EMU_BENCH_FRAMES=20000: short).
bench-socketcan:
    cargo bench -p vcan --bench emu

# Wall time of the whole native scenario suite, run one scenario at a time and four at a time.
bench-suite:
    cargo bench -p agl-parity --bench suite

# Container cold start, reused and recreated containers, and kube (podman kube play), against native process
# start (needs Docker and podman).
bench-container:
    cargo bench -p agl-parity --bench container

# Memory (RSS/PSS) and CPU time each environment spends beside the workload (pod-init, shims, conmon, pause
# container, VMM), per workload.
bench-footprint:
    cargo bench -p agl-parity --bench footprint

# VM cold start, restore from snapshot, syscall round trip and CAN frames/s in and out of the guest, against
# native (needs /dev/kvm).
bench-vm:
    cargo bench -p agl-vmm --bench vm

# The scenario suite on every board of a lab inventory, boards in parallel, one report (reports/<run-id>/).
lab FILE:
    cargo run --release -p agl-parity -- doctor --lab {{FILE}}
    cargo run --release -p agl-parity -- run --lab {{FILE}} --env board --parallel

# Simulated boards for machines without a lab: sshd in network namespaces (root); inventory target/lab-sim/lab.yaml.
lab-up:
    cargo run --release -p agl-parity -- lab-sim up --dir target/lab-sim

# Stop and remove the simulated boards of `lab-up`.
lab-down:
    cargo run --release -p agl-parity -- lab-sim down --dir target/lab-sim

# Every fuzz target (cargo fuzz, nightly) for SECONDS each; .ci/run runs the short form.
fuzz seconds="300":
    fuzz/run.sh {{seconds}}
