#!/usr/bin/env bash
# Runs every cargo-fuzz target (libFuzzer) for SECONDS each (default 20): `just fuzz [SECONDS]`, and `.ci/run`
# with the short form. Fails on a crash, a hang (an input taking over 1 s) or memory over 512 MiB; the
# input that did it is left in fuzz/artifacts/<target>/ (turn it into a regression test, then delete it).
# The committed seeds (fuzz/corpus/<target>, from the fixtures) are read; what the fuzzer grows goes to a
# scratch directory, so the tree stays as it was.
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-20}
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "error: cargo fuzz needs the nightly toolchain (rustup toolchain install nightly)" >&2
    exit 1
fi
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
cargo +nightly fuzz build -O
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for target in $(cargo +nightly fuzz list); do
    mkdir -p "$scratch/$target" "corpus/$target"
    log="$scratch/$target.log"
    if ! cargo +nightly fuzz run -O "$target" "$scratch/$target" "corpus/$target" -- \
        -max_total_time="$secs" -timeout=1 -rss_limit_mb=512 -print_final_stats=1 >"$log" 2>&1; then
        tail -40 "$log"
        echo "fuzz target $target FAILED (input in fuzz/artifacts/$target/)" >&2
        exit 1
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    echo "fuzz target $target: ${runs:-?} inputs in ${secs} s, no crash, hang or OOM"
done
