#!/usr/bin/env bash
# Coverage-guided fuzzing of the argument parser (spec_parse), operation
# sequences against a model (ops), attaching to corrupted segments (attach)
# and the shmcache inspector's read paths over them (inspect), and the farm
# tier's reading of whatever a Redis or memcached server answers (replies:
# a loopback server of the target's own), each for FUZZ_SECONDS (default
# 60). Seeds come from the checked-in
# corpus in fuzz/corpus/<target>; what a run discovers goes to a scratch
# directory, not into the tree. cargo-fuzz needs a nightly compiler;
# RUSTC_BOOTSTRAP=1 lets the stable one stand in.
# Usage: bash scripts/fuzz.sh [target ...]
set -euo pipefail
cd "$(dirname "$0")/.."
# /dev/null must be the null device (see scripts/test.sh); nothing here
# reads standard input.
source scripts/devnull.sh
ensure_null_device "start of $0"
exec </dev/null

seconds=${FUZZ_SECONDS:-60}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(spec_parse ops attach inspect replies)

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "installing cargo-fuzz"
    cargo install --locked cargo-fuzz
fi
export RUSTC_BOOTSTRAP=1

scratch=$(mktemp -d /tmp/socache-fuzz.XXXXXX)
trap 'rm -rf "$scratch" /tmp/shm-fuzz-attach-* /tmp/shm-fuzz-inspect-*' EXIT

cd fuzz
for t in "${targets[@]}"; do
    cargo fuzz build "$t"
done
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "$scratch/$t"
    echo "=== fuzz $t for ${seconds}s (seed corpus: $(ls "corpus/$t" | wc -l) inputs)"
    # -seed fixed: a run is reproducible; -rss_limit_mb bounds the attach
    # target's temporary files and mappings.
    # The run's own status counts, not only its artifacts: a crash whose
    # reproducer was not written (seen once: "deadly signal", no file)
    # must fail too. The full output is kept for the reproducer's name.
    status=0
    cargo fuzz run "$t" "$scratch/$t" "corpus/$t" -- \
        -max_total_time="$seconds" -seed=20261123 -rss_limit_mb=4096 \
        -artifact_prefix="$scratch/" >"$scratch/$t.log" 2>&1 || status=$?
    grep -E '^(#[0-9]+ +DONE|Done|INFO: +[0-9]+ files|==|thread|.*panicked|artifact_prefix|Test unit)' "$scratch/$t.log" || true
    if [ "$status" -ne 0 ]; then
        mkdir -p "artifacts/$t"
        cp "$scratch"/crash-* "$scratch"/leak-* "$scratch"/timeout-* "$scratch"/oom-* "artifacts/$t/" 2>/dev/null || true
        tail -40 "$scratch/$t.log"
        echo "fuzz target $t FAILED (exit $status): reproducer(s), if written, in fuzz/artifacts/$t/"
        exit 1
    fi
    if ls "$scratch"/crash-* "$scratch"/leak-* "$scratch"/timeout-* "$scratch"/oom-* >/dev/null 2>&1; then
        mkdir -p "artifacts/$t"
        cp "$scratch"/crash-* "$scratch"/leak-* "$scratch"/timeout-* "$scratch"/oom-* "artifacts/$t/" 2>/dev/null || true
        echo "fuzz target $t FAILED: reproducer(s) in fuzz/artifacts/$t/"
        exit 1
    fi
    echo "fuzz target $t: no crash in ${seconds}s"
done
