#!/usr/bin/env bash
# Install what building and testing mod_socache_shm needs, when missing:
# apache2 (the server the tests and the demo run), apache2-dev (apxs and the
# httpd/APR headers), libssl-dev (the tests' TLS client), libclang-dev
# (bindgen), pkg-config, build-essential, curl; for the Debian package and
# its test (make deb, scripts/package-test.sh) debhelper, dpkg-dev, lintian,
# ssl-cert (the snakeoil certificate of the stock default-ssl site),
# openssl (s_client) and iproute2 (ss); llvm (llvm-symbolizer, which
# ThreadSanitizer needs to name the frames its suppressions match, in
# scripts/concurrency-checks.sh); redis-server and redis-tools (the farm
# tier's tests start their own servers and a Redis Cluster on loopback),
# memcached (the farm benchmark's mod_socache_memcache side),
# python3-prometheus-client (its text parser reads `shmcache stat
# --prometheus` in shmcache/tests/shmcache_prometheus.rs), help2man (the
# manual page, scripts/gen-manpage.sh); and a Rust toolchain with
# rustfmt and clippy (rustup, when cargo is missing or older than the
# crate's rust-version). Idempotent: does nothing when everything is there.
set -euo pipefail

PACKAGES=(apache2 apache2-dev libssl-dev libclang-dev pkg-config build-essential curl
    debhelper dpkg-dev lintian ssl-cert openssl iproute2 llvm redis-server redis-tools memcached
    python3-prometheus-client help2man)
RUST_MIN=1.88 # workspace.package.rust-version in Cargo.toml (the redis crate's floor)

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        echo "deps.sh: need root to run: $*" >&2
        exit 1
    fi
}

missing=()
for p in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done
if [ "${#missing[@]}" -gt 0 ]; then
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "deps.sh: missing ${missing[*]} and no apt-get; see INSTALL for other systems" >&2
        exit 1
    fi
    echo "deps.sh: installing ${missing[*]}"
    as_root apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# Rust: cargo on PATH or in ~/.cargo/bin, at least RUST_MIN.
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi
version_ok() {
    local v
    v=$(cargo --version 2>/dev/null | awk '{print $2}') || return 1
    [ -n "$v" ] && [ "$(printf '%s\n%s\n' "$RUST_MIN" "$v" | sort -V | head -n1)" = "$RUST_MIN" ]
}
if ! command -v cargo >/dev/null 2>&1 || ! version_ok; then
    if command -v rustup >/dev/null 2>&1; then
        echo "deps.sh: updating the Rust toolchain with rustup"
        rustup toolchain install stable --profile minimal -c rustfmt -c clippy
        rustup default stable
    else
        echo "deps.sh: installing Rust (rustup, stable, minimal profile) into $HOME/.cargo"
        curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs |
            sh -s -- -y -q --profile minimal -c rustfmt -c clippy
    fi
    export PATH="$HOME/.cargo/bin:$PATH"
fi
if command -v rustup >/dev/null 2>&1; then
    cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
    cargo clippy --version >/dev/null 2>&1 || rustup component add clippy
fi
version_ok || { echo "deps.sh: cargo >= $RUST_MIN needed, found: $(cargo --version 2>&1)" >&2; exit 1; }

# cargo-deny (scripts/deny.sh; skipped there when missing): only on request,
# CARGO_DENY=1 bash scripts/deps.sh. `cargo install cargo-deny --locked`
# compiles about 140 crates: 13.5 min here on 2 loaded cores (4.3 min of
# CPU), too long to add to every fresh run of scripts/test.sh.
if [ "${CARGO_DENY:-0}" = 1 ] && ! cargo deny --version >/dev/null 2>&1; then
    echo "deps.sh: installing cargo-deny (cargo install cargo-deny --locked)"
    cargo install cargo-deny --locked
fi
