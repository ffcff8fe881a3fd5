#!/usr/bin/env bash
# cargo-deny over the workspace (policy: deny.toml): licences, bans
# (duplicate versions are warnings), sources; advisories only when the
# RustSec database is already on this machine (nothing is fetched: run
# `cargo deny fetch` to get or refresh it). Skips, saying so, when
# `cargo deny` is not installed (scripts/deps.sh installs it).
# Usage: bash scripts/deny.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! cargo deny --version >/dev/null 2>&1; then
    echo "deny.sh: cargo-deny is not installed; skipped (cargo install cargo-deny --locked)" >&2
    exit 0
fi
checks=(licenses bans sources)
db="${CARGO_HOME:-$HOME/.cargo}/advisory-dbs"
if compgen -G "$db/*" >/dev/null; then
    checks+=(advisories)
else
    echo "deny.sh: no advisory database in $db (offline); advisories skipped (cargo deny fetch)" >&2
fi
cargo deny check --disable-fetch "${checks[@]}"
