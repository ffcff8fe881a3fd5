#!/usr/bin/env bash
# cargo-deny over the workspace (policy: deny.toml): licences, bans
# (duplicate versions are warnings), sources; advisories only when the
# RustSec database is already on this machine (nothing is fetched: run
# `cargo deny fetch` to get or refresh it). Skips, saying so, when
# `cargo deny` is not installed (`CARGO_DENY=1 bash scripts/deps.sh`
# installs it).
# Usage: bash scripts/deny.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! cargo deny --version >/dev/null 2>&1; then
    echo "deny.sh: cargo-deny is not installed; skipped (CARGO_DENY=1 bash scripts/deps.sh installs it)" >&2
    exit 0
fi
# The root package is not a virtual manifest: --workspace takes every member.
cargo deny --workspace check --hide-inclusion-graph licenses bans sources
db="${CARGO_HOME:-$HOME/.cargo}/advisory-dbs"
if compgen -G "$db/*" >/dev/null; then
    # --offline: the database as it is on disk, never fetched here.
    cargo deny --workspace --offline check advisories
else
    echo "deny.sh: no advisory database in $db; advisories skipped (cargo deny fetch gets one)" >&2
fi
