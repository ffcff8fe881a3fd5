#!/usr/bin/env bash
# Write shmcache(8) from `shmcache --help` and `--version`, the one source of
# the command's documentation (the HELP text in shmcache/src/main.rs, in the
# shape help2man reads), with GNU help2man. Deterministic: the date is
# SOURCE_DATE_EPOCH's (dpkg-buildpackage sets it from debian/changelog),
# else the top debian/changelog entry's, else today's.
# Usage: bash scripts/gen-manpage.sh [SHMCACHE_BINARY] > shmcache.8
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/shmcache}
case $bin in */*) ;; *) bin=./$bin ;; esac

if ! command -v help2man >/dev/null 2>&1; then
    echo "gen-manpage.sh: help2man is not installed (apt-get install help2man; scripts/deps.sh)" >&2
    exit 1
fi
if [ -z "${SOURCE_DATE_EPOCH:-}" ] && command -v dpkg-parsechangelog >/dev/null 2>&1 &&
    [ -f debian/changelog ]; then
    SOURCE_DATE_EPOCH=$(dpkg-parsechangelog -l debian/changelog -S Timestamp)
fi
[ -z "${SOURCE_DATE_EPOCH:-}" ] || export SOURCE_DATE_EPOCH
# NAME: the summary line that follows the "Usage:" lines, without its stop.
name=$("$bin" --help | awk '!/^(Usage: |  or:  )/ { sub(/\.$/, ""); print tolower(substr($0, 1, 1)) substr($0, 2); exit }')
LC_ALL=C.UTF-8 help2man --no-info --section 8 --manual "System Administration" \
    --name "$name" --output - "$bin"
