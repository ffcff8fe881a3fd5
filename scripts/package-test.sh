#!/usr/bin/env bash
# The Debian package, end to end, on this machine's stock apache2 layout:
# build it (make deb) and lintian it; dpkg -i; a2enmod socache_shm ssl;
# a2ensite default-ssl; change only the SSLSessionCache line of the stock
# ssl.conf to shm:${APACHE_RUN_DIR}/ssl_scache(512000); apache2ctl
# configtest and start; resume TLS 1.2 and TLS 1.3 sessions on 127.0.0.1:443
# and see them hit the cache (shmcache stat on the live segment); stop;
# dpkg -r (the module is disabled, the conffiles stay), dpkg --purge, and
# show that no file of the package remains, the module is no longer enabled
# and apache2ctl configtest still passes.
#
# Everything it changes in /etc/apache2 (and apache2's module/site state in
# /var/lib/apache2) is put back on exit, failure included, and compared with
# a copy taken first. Needs root, ports 80 and 443 free and no system
# apache2 running (it refuses otherwise). Usage: bash scripts/package-test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
exec </dev/null

PKG=libapache2-mod-socache-shm
ETC=/etc/apache2
STATE=/var/lib/apache2
SSL_CONF=$ETC/mods-available/ssl.conf

say() { echo "package-test: $*"; }
fail() {
    echo "package-test: FAILED: $*" >&2
    exit 1
}

[ "$(id -u)" -eq 0 ] || fail "run as root: it installs and purges $PKG and uses $ETC"
bash scripts/deps.sh
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi

# The stock layout's paths (APACHE_RUN_DIR, APACHE_PID_FILE, ...).
# shellcheck disable=SC1091
eval "$(set +u; . $ETC/envvars && printf 'RUN_DIR=%q PID_FILE=%q LOG_DIR=%q\n' \
    "$APACHE_RUN_DIR" "$APACHE_PID_FILE" "$APACHE_LOG_DIR")"
SEGMENT=$RUN_DIR/ssl_scache

apache_pid() {
    local pid
    pid=$(cat "$PID_FILE" 2>/dev/null) || return 1
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}
port_busy() { [ -n "$(ss -Hltn "sport = :$1")" ]; }

# --- Preconditions: refuse rather than disturb what is there. -------------
if pid=$(apache_pid); then
    fail "a system apache2 is running (pid $pid, $PID_FILE); stop it first (apache2ctl stop)"
fi
for port in 80 443; do
    if port_busy $port; then
        fail "port $port is in use (ss -ltnp 'sport = :$port'); the stock sites need it"
    fi
done
pkg_status() { dpkg-query -W -f='${db:Status-Status}' "$PKG" 2>/dev/null || true; }
if [ -n "$(pkg_status)" ] && [ "$(pkg_status)" != not-installed ]; then
    fail "$PKG is already installed (this test installs and purges it): dpkg --purge $PKG first"
fi

work=$(mktemp -d /tmp/socache-package-test.XXXXXX)
backup=$work/backup
we_installed=0
we_started=0
restored=0

# Stop the server this test started: apache2ctl stop, then wait for the
# parent (which reaps its children first) to exit; TERM/KILL it if not.
stop_apache() {
    local pid i
    pid=$(apache_pid) || return 0
    apache2ctl stop >/dev/null 2>&1 || true
    for i in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    say "apache2 (pid $pid) did not stop in 10 s; sending TERM, then KILL"
    kill -TERM "$pid" 2>/dev/null || true
    sleep 2
    kill -KILL "$pid" 2>/dev/null || true
    return 1
}

# Make DEST's tree what BACKUP holds: remove what is not in the copy, then
# copy the copy back over it.
sync_from() {
    local copy=$1 dest=$2 p rel
    while IFS= read -r -d '' p; do
        rel=${p#"$dest"/}
        if [ ! -e "$copy/$rel" ] && [ ! -L "$copy/$rel" ]; then
            rm -rf "$p"
        fi
    done < <(find "$dest" -mindepth 1 -depth -print0)
    cp -a "$copy/." "$dest/"
}

# Put back everything this test changed. Idempotent; runs on every exit.
restore() {
    [ "$restored" -eq 0 ] || return 0
    restored=1
    local rc=0
    if [ "$we_started" -eq 1 ]; then
        stop_apache || rc=1
    fi
    # The stock SSLSessionCache line first, so that the purge's maintainer
    # scripts see a configuration that parses without the module.
    if [ -f "$backup/done" ]; then
        cp -a "$backup/etc/mods-available/ssl.conf" "$SSL_CONF"
    fi
    if [ "$we_installed" -eq 1 ] && [ -n "$(pkg_status)" ] && [ "$(pkg_status)" != not-installed ]; then
        say "restore: purging $PKG"
        dpkg --purge "$PKG" >/dev/null || rc=1
    fi
    if [ -f "$backup/done" ]; then
        # The Debian way first (keeps a2query's state right), then the copy
        # for anything else, then proof that nothing differs.
        for site in "${sites_added[@]}"; do a2dissite -q "$site" >/dev/null 2>&1 || rc=1; done
        for conf in "${confs_added[@]}"; do a2disconf -q "$conf" >/dev/null 2>&1 || rc=1; done
        for mod in "${mods_added[@]}"; do a2dismod -q -f "$mod" >/dev/null 2>&1 || rc=1; done
        cp -a "$backup/etc/mods-available/ssl.conf" "$SSL_CONF"
        sync_from "$backup/etc" "$ETC"
        sync_from "$backup/state" "$STATE"
        if ! diff -r --no-dereference "$backup/etc" "$ETC" >"$work/diff" 2>&1 ||
            ! diff -r --no-dereference "$backup/state" "$STATE" >>"$work/diff" 2>&1; then
            say "restore: $ETC or $STATE still differs from its copy:"
            cat "$work/diff"
            rc=1
        fi
        # Files of an earlier `make install` that were moved aside.
        if [ -d "$backup/unowned" ]; then
            cp -a "$backup/unowned/." /
        fi
    fi
    rm -rf "$work"
    return $rc
}
sites_added=()
confs_added=()
mods_added=()
on_exit() {
    local rc=$?
    if ! restore; then
        echo "package-test: FAILED: could not restore $ETC completely (see above)" >&2
        rc=1
    fi
    exit $rc
}
trap on_exit EXIT

mkdir -p "$backup"
cp -a "$ETC" "$backup/etc"
cp -a "$STATE" "$backup/state"
enabled() { (cd "$ETC/$1" && ls -1 2>/dev/null | sed -n 's/\.\(load\|conf\)$//p' | sort -u); }
enabled mods-enabled >"$work/mods-before"
enabled sites-enabled >"$work/sites-before"
enabled conf-enabled >"$work/confs-before"
touch "$backup/done"

# Files of a `make install` (not owned by any package) would be taken over
# by dpkg -i and deleted by the purge: move them aside, put them back after.
for f in /usr/lib/apache2/modules/mod_socache_shm.so $ETC/mods-available/socache_shm.load $ETC/mods-available/socache_shm.conf; do
    if [ -e "$f" ] && ! dpkg -S "$f" >/dev/null 2>&1; then
        say "moving aside $f (not from a package; put back afterwards)"
        mkdir -p "$backup/unowned$(dirname "$f")"
        mv "$f" "$backup/unowned$f"
        rm -f "$ETC/mods-enabled/socache_shm.load" "$ETC/mods-enabled/socache_shm.conf"
    fi
done

# --- Build and check the package. ------------------------------------------
t0=$SECONDS
if ! make deb >"$work/build.log" 2>&1; then
    tail -n 40 "$work/build.log"
    fail "make deb"
fi
deb=$(ls build/deb/${PKG}_*_"$(dpkg --print-architecture)".deb)
say "built $deb in $((SECONDS - t0)) s"
dpkg-deb -c "$deb"
dpkg-deb -f "$deb" Depends | sed 's/^/Depends: /'
# (Output captured first: with pipefail, `cmd | grep -q` fails whenever
# grep's early exit makes cmd die of SIGPIPE.)
depends=$(dpkg-deb -f "$deb" Depends)
grep -q "apache2-api-" <<<"$depends" || fail "Depends lacks the apache2-api-* dependency"
lintian --info "$deb" 2>&1 | grep -v 'running with root privileges' >"$work/lintian" || true
say "lintian:"
grep -v '^N:' "$work/lintian" | sed 's/^/  /' || true
if grep -q '^E:' "$work/lintian"; then fail "lintian reports errors"; fi

# --- Install: the module is enabled by the maintainer script. --------------
dpkg -i "$deb" >"$work/dpkg-i.log" 2>&1 || {
    cat "$work/dpkg-i.log"
    fail "dpkg -i $deb"
}
we_installed=1
dpkg -L "$PKG" >"$work/files"
for f in socache_shm.load socache_shm.conf; do
    [ -L "$ETC/mods-enabled/$f" ] || fail "dpkg -i did not enable the module ($ETC/mods-enabled/$f missing)"
done
say "installed; postinst enabled the module: $(ls "$ETC"/mods-enabled/socache_shm.* | xargs -n1 basename | tr '\n' ' ')"
# Without a policy-rc.d that forbids it, the postinst restarts apache2.
if apache_pid >/dev/null; then
    we_started=1
    say "postinst started apache2; stopping it to start it with the test's configuration"
    stop_apache
fi

a2enmod -q socache_shm ssl
a2ensite -q default-ssl
comm -13 "$work/mods-before" <(enabled mods-enabled) >"$work/mods-added"
comm -13 "$work/sites-before" <(enabled sites-enabled) >"$work/sites-added"
comm -13 "$work/confs-before" <(enabled conf-enabled) >"$work/confs-added"
mapfile -t mods_added < <(grep -vx socache_shm "$work/mods-added" || true)
mapfile -t sites_added <"$work/sites-added"
mapfile -t confs_added <"$work/confs-added"
say "enabled for the test: mods ${mods_added[*]:-none}, sites ${sites_added[*]:-none}"

# Only the SSLSessionCache line changes.
sed -i -E 's|^([[:space:]]*SSLSessionCache[[:space:]]+)shmcb:\$\{APACHE_RUN_DIR\}/ssl_scache\(512000\)[[:space:]]*$|\1shm:${APACHE_RUN_DIR}/ssl_scache(512000)|' "$SSL_CONF"
changed=$(diff "$backup/etc/mods-available/ssl.conf" "$SSL_CONF" | grep -c '^[<>]' || true)
[ "$changed" -eq 2 ] || fail "expected to change exactly the SSLSessionCache line of $SSL_CONF (diff: $changed lines)"
say "ssl.conf: $(grep -E '^[[:space:]]*SSLSessionCache[[:space:]]' "$SSL_CONF" | xargs)"
# TLS 1.3 resumes through the cache only with stateful tickets.
tickets=$(cat "$SSL_CONF" "$ETC/sites-available/default-ssl.conf" |
    awk 'tolower($1) == "sslsessiontickets" { v = tolower($2) } END { print (v == "" ? "on (default)" : v) }')
say "SSLSessionTickets: $tickets"

if [ ! -f /etc/ssl/certs/ssl-cert-snakeoil.pem ] || [ ! -f /etc/ssl/private/ssl-cert-snakeoil.key ]; then
    say "making the snakeoil certificate (make-ssl-cert generate-default-snakeoil)"
    make-ssl-cert generate-default-snakeoil
fi

apache2ctl configtest
loaded=$(apache2ctl -M 2>/dev/null)
grep -q socache_shm_module <<<"$loaded" || fail "apache2ctl -M does not list socache_shm_module"

# --- Start the stock service layout and resume sessions. -------------------
we_started=1
apache2ctl start
for i in $(seq 1 100); do
    apache_pid >/dev/null && port_busy 443 && break
    sleep 0.1
done
pid=$(apache_pid) || { tail -n 20 "$LOG_DIR/error.log"; fail "apache2 did not start"; }
port_busy 443 || fail "apache2 (pid $pid) is not listening on 443"
stock_processes() { ps -eo pid=,args= | awk '$2 ~ /(^|\/)apache2$/ && / -k start/' || true; }
[ "$(stock_processes | wc -l)" -ge 2 ] || fail "ps does not show the stock apache2 (-k start) and its children"
say "apache2 started (pid $pid); segment $SEGMENT"

# One TLS connection sending a request and reading the whole response (so
# a TLS 1.3 client has the session tickets before it saves the session).
tls() {
    printf 'GET / HTTP/1.0\r\nHost: localhost\r\n\r\n' |
        timeout 20 openssl s_client -connect 127.0.0.1:443 -ign_eof "$@" 2>&1
}
figure() {
    shmcache stat "$SEGMENT" | awk -F': ' -v k="$1" '$1 == k { print $2 }'
}
resumed=()
for proto in tls1_2 tls1_3; do
    name=TLSv1.${proto#tls1_}
    sess=$work/session-$proto
    # TLS 1.2: no ticket, so the session id is what resumes.
    opts=()
    [ "$proto" = tls1_2 ] && opts=(-no_ticket)
    out=$(tls "-$proto" "${opts[@]}" -sess_out "$sess") || true
    grep -q "^New, $name" <<<"$out" || { echo "$out" | tail -n 30; fail "$name full handshake"; }
    hits_before=$(figure CacheRetrieveHitCount)
    for n in 1 2 3; do
        out=$(tls "-$proto" "${opts[@]}" -sess_in "$sess") || true
        grep -q "^Reused, $name" <<<"$out" || {
            echo "$out" | grep -E '^(New|Reused)|HTTP/' || true
            fail "$name resumption $n: no \"Reused, $name\""
        }
        grep -q "^HTTP/1.1 200" <<<"$out" || fail "$name resumption $n: no HTTP 200"
    done
    hits=$(($(figure CacheRetrieveHitCount) - hits_before))
    say "$name: 3 of 3 resumed (Reused, $name), cache retrieve hits +$hits"
    if [ "$proto" = tls1_2 ] || [ "$tickets" = off ]; then
        # Session ids (TLS 1.2, -no_ticket) and stateful tickets (TLS 1.3,
        # SSLSessionTickets off) are looked up in the shm cache.
        [ "$hits" -ge 3 ] || fail "$name: resumed, but not from the shm cache (+$hits hits)"
        resumed+=("$name from the shm cache")
    else
        resumed+=("$name from stateless tickets (SSLSessionTickets $tickets)")
    fi
done

say "shmcache stat $SEGMENT:"
shmcache stat "$SEGMENT" | sed 's/^/  /'
entries=$(figure CacheCurrentEntries)
[ "${entries:-0}" -gt 0 ] || fail "CacheCurrentEntries is ${entries:-missing}"
shmcache check "$SEGMENT"
[ "$(command -v shmcache)" = /usr/bin/shmcache ] || fail "shmcache is not /usr/bin/shmcache"
for f in /usr/share/man/man8/shmcache.8.gz /usr/share/doc/$PKG/changelog.gz; do
    grep -qx "$f" "$work/files" && [ -f "$f" ] || fail "$f not installed"
done
# The manual page is `shmcache --help` (of the installed binary) in roff.
SOURCE_DATE_EPOCH=$(dpkg-parsechangelog -S Timestamp) bash scripts/gen-manpage.sh /usr/bin/shmcache |
    cmp -s - <(zcat /usr/share/man/man8/shmcache.8.gz) ||
    fail "shmcache.8 differs from what scripts/gen-manpage.sh makes of /usr/bin/shmcache --help"

stop_apache || fail "apache2 did not stop"
we_started=0
# No process of the stock service (apache2 -k start) is left; the test
# suite's own httpds (apache2 -d /tmp/... -f ...) are not ours to count.
stock=$(stock_processes)
[ -z "$stock" ] || fail "apache2 processes left after apache2ctl stop: $stock"
[ ! -e "$SEGMENT" ] || fail "$SEGMENT remains after apache2ctl stop"
say "apache2 stopped"

# --- Remove, then purge. ----------------------------------------------------
# dpkg -r: the prerm disables the module first; the conffiles stay.
dpkg -r "$PKG" >"$work/remove.log" 2>&1 || {
    cat "$work/remove.log"
    fail "dpkg -r $PKG"
}
shopt -s nullglob
still=("$ETC"/mods-enabled/socache_shm.*)
shopt -u nullglob
[ "${#still[@]}" -eq 0 ] || fail "after dpkg -r the module is still enabled: ${still[*]}"
[ ! -e /usr/lib/apache2/modules/mod_socache_shm.so ] || fail "after dpkg -r the module file remains"
[ -f "$ETC/mods-available/socache_shm.load" ] || fail "dpkg -r removed the conffile socache_shm.load (only a purge should)"
[ "$(pkg_status)" = config-files ] || fail "after dpkg -r: status $(pkg_status), expected config-files"
say "removed: module disabled (no $ETC/mods-enabled/socache_shm.*), conffiles kept"

# dpkg --purge: nothing of the package remains.
dpkg --purge "$PKG" >"$work/purge.log" 2>&1 || {
    cat "$work/purge.log"
    fail "dpkg --purge $PKG"
}
we_installed=0
left=()
while IFS= read -r f; do
    # Directories shared with other packages (/usr/bin, /etc/apache2, ...) stay.
    [ -d "$f" ] && [ ! -L "$f" ] && [ "$f" != /usr/share/doc/$PKG ] && continue
    if [ -e "$f" ] || [ -L "$f" ]; then left+=("$f"); fi
done <"$work/files"
[ "${#left[@]}" -eq 0 ] || fail "after purge these files of $PKG remain: ${left[*]}"
say "purged: none of the $(wc -l <"$work/files") paths of dpkg -L $PKG remains (shared directories aside)"
shopt -s nullglob
stale=("$ETC"/mods-enabled/socache_shm.* "$ETC"/mods-available/socache_shm.* "$STATE"/module/*/socache_shm)
shopt -u nullglob
[ "${#stale[@]}" -eq 0 ] || fail "after purge: ${stale[*]}"
say "module no longer enabled (no $ETC/mods-enabled/socache_shm.*, no a2query state)"

cp -a "$backup/etc/mods-available/ssl.conf" "$SSL_CONF"
apache2ctl configtest || fail "apache2ctl configtest after purge (stock ssl.conf back, ssl and default-ssl still enabled)"
restore || fail "restoring $ETC"
apache2ctl configtest || fail "apache2ctl configtest on the restored configuration"
! apache_pid >/dev/null || fail "an apache2 is still running"
say "restored $ETC and $STATE (identical to the copies taken first); configtest passes"
say "resumed: ${resumed[*]}"
say "ok in $SECONDS s"
