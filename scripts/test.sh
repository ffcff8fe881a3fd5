#!/usr/bin/env bash
# Every check of mod_socache_shm: installs missing packages (scripts/deps.sh),
# builds the module (make), then rustfmt, clippy, cargo-deny and all tests, including
# the ones that run the real apache2 on loopback, then the README's demo
# (scripts/demo.sh), then bounded fuzzing of the argument parser, operation
# sequences and corrupted segments, then the
# Debian package against the stock apache2 layout (scripts/package-test.sh:
# needs ports 80/443 free and no system apache2 running). Prints a summary;
# exits non-zero if any step failed. Usage, as root: bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# /dev/null must be the null device. It has been seen here as a regular file
# holding some earlier command's `2>/dev/null` output; every program that
# opens it for input then reads that text. cargo's probe `rustc -` gets its
# (empty) source from /dev/null that way: it compiled a stray rustc warning
# and `cargo test` stopped before building anything. Put it back if so, and
# after every step say whether the step replaced it.
source scripts/devnull.sh
ensure_null_device "start of scripts/test.sh"
# Nothing here reads standard input (and CI may have closed it).
exec </dev/null

bash scripts/deps.sh
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi

# Release: the module build (make) already compiled the crate in release,
# and the engine's property tests run far faster optimised.
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"

names=()
results=()
failed=0

step() {
    local name=$1
    shift
    echo
    echo "=== $name: $*"
    local start=$SECONDS rc=0
    "$@" || rc=$?
    ensure_null_device "step '$name'"
    local took=$((SECONDS - start))
    names+=("$name")
    if [ "$rc" -eq 0 ]; then
        results+=("ok      ${took}s")
    else
        results+=("FAILED  ${took}s (exit $rc)")
        failed=1
    fi
    return 0
}

step "build module"  make
step "rustfmt"       cargo fmt --all --check
step "clippy"        cargo clippy --workspace --all-targets -- -D warnings
# Licences, duplicate versions, sources (and advisories when the database
# is on the machine) of the dependency tree: deny.toml.
step "cargo-deny"    bash scripts/deny.sh
test_log=$(mktemp /tmp/socache-test-log.XXXXXX)
trap 'rm -f "$test_log"' EXIT
run_tests() {
    cargo test --release --workspace --no-fail-fast 2>&1 | tee "$test_log"
}
step "tests"         run_tests
# The README's first command: both parts (one host; two hosts and Redis).
step "demo"          bash scripts/demo.sh
# miri, the loom model and ThreadSanitizer over the concurrency core.
step "concurrency"   bash scripts/concurrency-checks.sh
# Bounded coverage-guided fuzzing (about 60 s a target, FUZZ_SECONDS to change).
step "fuzz"          bash scripts/fuzz.sh
# make deb, dpkg -i, the stock default-ssl site on 127.0.0.1:443 with
# SSLSessionCache shm:..., TLS 1.2/1.3 resumption, dpkg --purge; puts
# /etc/apache2 back as it was.
step "package"       bash scripts/package-test.sh

echo
echo "=== summary"
for i in "${!names[@]}"; do
    printf '  %-14s %s\n' "${names[$i]}" "${results[$i]}"
done
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^(passed|failed|ignored);?$/) { k = $(i+1); sub(";", "", k); n[k] += $i } } }
     END { printf "  %-14s %d passed, %d failed, %d ignored\n", "test counts", n["passed"], n["failed"], n["ignored"] }' "$test_log"
if [ "$failed" -ne 0 ]; then
    # CI may show only the end of this output: repeat the first errors.
    if grep -q -E '^error|^test .* FAILED|panicked' "$test_log"; then
        echo "  first errors of the tests step:"
        grep -E '^error|^test .* FAILED|panicked' "$test_log" | head -n 15 | sed 's/^/    /'
    fi
    echo "FAILED"
    exit 1
fi
echo "all checks passed"
