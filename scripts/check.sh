#!/usr/bin/env bash
# The fast inner loop: rustfmt, clippy (the same commands as
# scripts/test.sh), cargo-deny when it is installed (scripts/deny.sh), and
# the unit and property tests that need no root, no apt, no network, no
# httpd and no redis-server: the engine's library and integration tests
# (models, boundaries, threads, forked processes over one segment), and the
# libraries of the farm tier, shmcache and the module. Under 3 minutes on
# a 2-core machine once target/ is warm (the first run builds the
# workspace: about 10 minutes there).
#
# Left to scripts/test.sh (the full check, the one CI runs): the module
# build (make), the farm tier against real redis-servers, shmcache's
# command-line tests, the real-apache2 tests, the demo,
# miri/loom/ThreadSanitizer, fuzzing and the Debian package.
#
# Usage: bash scripts/check.sh   (any user; needs the build dependencies
# scripts/deps.sh installs: cargo, apache2-dev and libclang-dev for the
# module's bindgen, libssl-dev)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/devnull.sh
ensure_null_device "start of scripts/check.sh"
exec </dev/null
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"

start=$SECONDS
run() {
    echo "=== $*" >&2
    "$@"
}

run cargo fmt --all --check
run cargo clippy --workspace --all-targets -- -D warnings
run bash scripts/deny.sh
# Release, as scripts/test.sh: the property tests run far faster optimised,
# and the artefacts are the ones `cargo test --release --workspace` reuses.
run cargo test --release -p socache-shm-engine --lib --tests
run cargo test --release -p socache-shm-farm -p shmcache -p mod_socache_shm --lib
echo "check.sh: all passed in $((SECONDS - start)) s" >&2
