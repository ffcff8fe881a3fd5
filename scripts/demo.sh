#!/usr/bin/env bash
# Loopback demo of mod_socache_shm: builds the module, starts the system's
# apache2 (prefork, 6 children) on 127.0.0.1 in a temporary directory with
#   SSLSessionCache shm:<tmpdir>/ssl_scache(512000)
# makes a handful of TLS handshakes with `openssl s_client` (one full
# handshake, then resumptions held open at the same time so that different
# child processes serve them), graceful-restarts httpd and resumes again,
# prints which child served each connection and whether it resumed (from
# the access log), the cache's figures from /server-status?auto, then stops
# httpd; then the farm tier: two hosts behind one redis-server, a session
# made on one resumed on the other, and the farm figures; then session
# tickets (tickets=1h): a ticket made on host A resumed after A's graceful
# restart and on host B; and removes the directory. Usage, as root: bash scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# /dev/null must be the null device (see scripts/test.sh); nothing here
# reads standard input.
source scripts/devnull.sh
ensure_null_device "start of $0"
exec </dev/null
REPO=$(pwd)

bash scripts/deps.sh
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi
echo "=== building the module (make)"
make
MODULE="$REPO/build/mod_socache_shm.so"
[ -f "$MODULE" ] || { echo "demo: $MODULE was not built" >&2; exit 1; }

APACHE2=${APACHE2_BIN:-/usr/sbin/apache2}
MODULES=${APACHE2_MODULES:-/usr/lib/apache2/modules}
WAIT=20 # seconds, for every wait below

DIR=$(mktemp -d /tmp/socache-demo.XXXXXX)
chmod 755 "$DIR" # httpd's children (www-data) read the document root
PID_FILE="$DIR/run/httpd.pid"

stop_httpd() {
    [ -f "$PID_FILE" ] || return 0
    local pid
    pid=$(cat "$PID_FILE" 2>/dev/null) || return 0
    "$APACHE2" -d "$DIR" -f "$DIR/httpd.conf" -k stop 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq $((WAIT * 10))); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    echo "demo: httpd (pid $pid) did not stop within ${WAIT}s; killing it" >&2
    kill -KILL "$pid" 2>/dev/null || true
}
cleanup() {
    stop_httpd
    rm -rf "$DIR"
}
trap cleanup EXIT

# A free port: nothing answers on it.
PORT=28443
while (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; do
    PORT=$((PORT + 1))
done

mkdir -p "$DIR"/{logs,run,htdocs}
echo "mod_socache_shm demo" >"$DIR/htdocs/index.html"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$DIR/key.pem" -out "$DIR/cert.pem" -days 1 -subj /CN=localhost \
    -addext basicConstraints=critical,CA:FALSE 2>/dev/null

USER_LINES=""
if [ "$(id -u)" -eq 0 ]; then
    USER_LINES=$'User www-data\nGroup www-data'
fi

cat >"$DIR/httpd.conf" <<CONF
ServerRoot "$DIR"
ServerName localhost
Listen 127.0.0.1:$PORT
PidFile "$PID_FILE"
DefaultRuntimeDir "$DIR/run"
ErrorLog "$DIR/logs/error.log"
LogLevel info
Mutex file:$DIR/run default
LoadModule mpm_prefork_module "$MODULES/mod_mpm_prefork.so"
LoadModule authz_core_module "$MODULES/mod_authz_core.so"
LoadModule dir_module "$MODULES/mod_dir.so"
LoadModule status_module "$MODULES/mod_status.so"
LoadModule socache_shm_module "$MODULE"
LoadModule ssl_module "$MODULES/mod_ssl.so"
$USER_LINES
StartServers 6
MinSpareServers 6
MaxSpareServers 12
MaxRequestWorkers 12
MaxConnectionsPerChild 0
DocumentRoot "$DIR/htdocs"
<Directory "$DIR/htdocs">
    Require all granted
</Directory>
DirectoryIndex index.html
LogFormat "%P %{SSL_SESSION_RESUMED}x %{SSL_PROTOCOL}x %{SSL_SESSION_ID}x %r" resumption
CustomLog "$DIR/logs/access.log" resumption
ExtendedStatus On
<Location /server-status>
    SetHandler server-status
    Require all granted
</Location>
SSLEngine on
SSLCertificateFile "$DIR/cert.pem"
SSLCertificateKeyFile "$DIR/key.pem"
SSLProtocol -all +TLSv1.2 +TLSv1.3
SSLSessionTickets off
SSLSessionCache shm:$DIR/ssl_scache(512000)
SSLSessionCacheTimeout 300
CONF

echo
echo "=== starting $APACHE2 on 127.0.0.1:$PORT (prefork, 6 children) in $DIR"
grep -E '^(SSLSessionCache|SSLSessionTickets|LoadModule socache)' "$DIR/httpd.conf" | sed 's/^/    /'
"$APACHE2" -d "$DIR" -f "$DIR/httpd.conf" -k start
ready=0
for _ in $(seq $((WAIT * 10))); do
    if curl -sk -o /dev/null "https://127.0.0.1:$PORT/server-status?auto"; then
        ready=1
        break
    fi
    sleep 0.1
done
if [ "$ready" -ne 1 ]; then
    echo "demo: httpd did not answer within ${WAIT}s; error log:" >&2
    tail -20 "$DIR/logs/error.log" >&2 || true
    exit 1
fi

# handshake TAG VERSION [SESSION_IN] [HOLD_SECONDS]: GET /?TAG over a new
# connection; the first handshake writes its session to $DIR/<version>.sess.
handshake() {
    local tag=$1 version=$2 sess_in=${3:-} hold=${4:-0}
    local args=(-connect "127.0.0.1:$PORT" "-$version" -ign_eof)
    if [ -n "$sess_in" ]; then
        args+=(-sess_in "$sess_in")
    else
        args+=(-sess_out "$DIR/$version.sess")
    fi
    { sleep "$hold"; printf 'GET /?%s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' "$tag"; } |
        timeout "$WAIT" openssl s_client "${args[@]}" >"$DIR/logs/$tag.out" 2>&1 || true
}

# report TAG...: who served each connection, from the access log.
report() {
    local tag line
    for tag in "$@"; do
        line=""
        for _ in $(seq $((WAIT * 10))); do
            line=$(grep " GET /?$tag " "$DIR/logs/access.log" || true)
            [ -n "$line" ] && break
            sleep 0.1
        done
        if [ -z "$line" ]; then
            printf '    %-18s no access log line\n' "$tag"
            continue
        fi
        read -r pid resumed proto sid _ <<<"$line"
        printf '    %-18s served by child pid %-7s %-8s %-8s session %s...\n' \
            "$tag" "$pid" "$proto" "$resumed" "${sid:0:16}"
    done
}

# round VERSION NAME LABEL: (a full handshake if this version has no session
# yet, then) five resumptions at once.
round() {
    local version=$1 name=$2 label=$3 tags=() i
    echo
    echo "=== $label"
    if [ ! -f "$DIR/$version.sess" ]; then
        handshake "${version}-full" "$version"
        tags+=("${version}-full")
    fi
    # Five resumptions at once, each holding its connection open for a
    # second: prefork gives each its own child.
    for i in 1 2 3 4 5; do
        handshake "$version-$name-$i" "$version" "$DIR/$version.sess" 1 &
        tags+=("$version-$name-$i")
    done
    wait
    report "${tags[@]}"
}

round tls1_2 resume "TLS 1.2 (session id): one full handshake, then 5 resumptions at once"
round tls1_3 resume "TLS 1.3 (stateful tickets, SSLSessionTickets off): the same"

echo
echo "=== apache2 -k graceful: the cache survives the restart"
gen() { curl -sk "https://127.0.0.1:$PORT/server-status?auto" | awk -F': ' '/^ParentServerConfigGeneration/ {print $2}'; }
before=$(gen)
"$APACHE2" -d "$DIR" -f "$DIR/httpd.conf" -k graceful
for _ in $(seq $((WAIT * 10))); do
    now=$(gen || true)
    [ -n "$now" ] && [ "$now" -gt "$before" ] && break
    sleep 0.1
done
echo "    configuration generation $before -> ${now:-?}"
round tls1_2 graceful "TLS 1.2 after the graceful restart: resuming the session made before"
round tls1_3 graceful "TLS 1.3 after the graceful restart: resuming the session made before"

echo
echo "=== cache figures (/server-status?auto)"
curl -sk "https://127.0.0.1:$PORT/server-status?auto" | grep -E '^Cache' | sed 's/^/    /'

total=$(grep -c ' /?tls' "$DIR/logs/access.log" || true)
resumed=$(grep ' /?tls' "$DIR/logs/access.log" | grep -c ' Resumed ' || true)
children=$(grep ' /?tls' "$DIR/logs/access.log" | grep ' Resumed ' | awk '{print $1}' | sort -u | wc -l)
echo
echo "=== $resumed of $total connections resumed, served by $children different child processes"

status=0
if [ "$resumed" -ne $((total - 2)) ] || [ "$children" -lt 2 ]; then
    echo "demo: expected every connection but the two full handshakes to resume, across several children" >&2
    status=1
fi

echo
echo "=== stopping httpd"
stop_httpd

# The farm tier: two hosts (own ports, own segments) share sessions through
# one redis-server behind their local caches, values sealed with one farm
# key. A session made on host A resumes on host B.
echo
echo "=== the farm tier: hosts A and B behind one redis-server"
free_port() {
    local p=$1
    while (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do p=$((p + 1)); done
    echo "$p"
}
REDIS_PORT=$(free_port 26379)
mkdir -p "$DIR/redis"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$DIR/redis" --daemonize yes --pidfile "$DIR/redis/redis.pid" >/dev/null
stop_farm() {
    local pid
    for f in "$DIR"/a/run/httpd.pid "$DIR"/b/run/httpd.pid "$DIR"/redis/redis.pid; do
        [ -f "$f" ] || continue
        pid=$(cat "$f" 2>/dev/null) || continue
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq $((WAIT * 10))); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        rm -f "$f"
    done
}
trap 'stop_farm; cleanup' EXIT
for _ in $(seq $((WAIT * 10))); do
    redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break
    sleep 0.1
done
openssl rand 48 >"$DIR/farm.key"
chmod 600 "$DIR/farm.key"
FARM_ARG="redis=redis://127.0.0.1:$REDIS_PORT/0 seal=$DIR/farm.key timeout=20ms"
host_port() { [ "$1" = a ] && echo "$PORT_A" || echo "$PORT_B"; }
PORT_A=$(free_port $((PORT + 1)))
PORT_B=$(free_port $((PORT_A + 1)))
for h in a b; do
    mkdir -p "$DIR/$h"/{logs,run}
    hp=$(host_port "$h")
    sed -e "s|^Listen .*|Listen 127.0.0.1:$hp|" \
        -e "s|^PidFile .*|PidFile \"$DIR/$h/run/httpd.pid\"|" \
        -e "s|^DefaultRuntimeDir .*|DefaultRuntimeDir \"$DIR/$h/run\"|" \
        -e "s|^ErrorLog .*|ErrorLog \"$DIR/$h/logs/error.log\"|" \
        -e "s|^Mutex .*|Mutex file:$DIR/$h/run default|" \
        -e "s|^CustomLog .*|CustomLog \"$DIR/$h/logs/access.log\" resumption|" \
        -e "s|^SSLSessionCache .*|SSLSessionCache \"shm:$DIR/$h/ssl_scache(512000) $FARM_ARG\"|" \
        "$DIR/httpd.conf" >"$DIR/$h/httpd.conf"
    "$APACHE2" -d "$DIR/$h" -f "$DIR/$h/httpd.conf" -k start
done
grep -E '^SSLSessionCache ' "$DIR/a/httpd.conf" | sed 's/^/    /'
for h in a b; do
    for _ in $(seq $((WAIT * 10))); do
        curl -sk -o /dev/null "https://127.0.0.1:$(host_port "$h")/server-status?auto" && break
        sleep 0.1
    done
done
farm_status=0
# farm_get HOST TAG VERSION SESSION_OPTION SESSION_FILE: GET /?TAG on host
# HOST, s_client's output in $DIR/logs/TAG.out. As handshake() above: a real
# request, and -ign_eof so that s_client reads until the server closes. With
# TLS 1.3 the server sends its NewSessionTicket after the handshake; a client
# that hung up at once (echo | s_client) never read it, and -sess_out wrote
# no session to offer to B.
farm_get() {
    local host=$1 tag=$2 version=$3 sess_opt=$4 sess_file=$5
    printf 'GET /?%s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' "$tag" |
        timeout "$WAIT" openssl s_client -connect "127.0.0.1:$(host_port "$host")" "-$version" \
            -ign_eof -servername localhost "$sess_opt" "$sess_file" >"$DIR/logs/$tag.out" 2>&1 || true
}
for v in tls1_2 tls1_3; do
    farm_get a "farm-$v-a" "$v" -sess_out "$DIR/farm-$v.sess"
    if [ ! -s "$DIR/farm-$v.sess" ]; then
        echo "    $v: host A gave s_client no session to save (see below)" >&2
        sed 's/^/        /' "$DIR/logs/farm-$v-a.out" >&2 || true
    fi
    # No wait: A wrote the session's SET to Redis before its handshake
    # ended, so B finds it at once.
    farm_get b "farm-$v-b" "$v" -sess_in "$DIR/farm-$v.sess"
    out=$(grep -E '^(Reused|New),' "$DIR/logs/farm-$v-b.out" | head -n1 || true)
    echo "    $v: session made on A, offered to B: ${out:-no answer}"
    case "$out" in Reused*) ;; *) farm_status=1 ;; esac
done
echo "    Redis holds $(redis-cli -p "$REDIS_PORT" dbsize) sealed sessions; host B's farm figures:"
curl -sk "https://127.0.0.1:$PORT_B/server-status?auto" |
    grep -E '^Farm(RemoteHits|RemoteMisses|StoresSent|Errors|Timeouts|SealFailures|Breaker):' | sed 's/^/    /'
if [ "$farm_status" -ne 0 ]; then
    echo "demo: expected the sessions made on host A to resume on host B" >&2
    status=1
fi

# Session tickets (tickets= on the cache line, SSLSessionTickets on): the
# ticket keys live in each host's segment and are agreed through Redis, so
# a ticket made on A resumes after A's graceful restart, and on B.
echo
echo "=== session tickets: SSLSessionTickets on, tickets=1h on both hosts (graceful restarts)"
gen_at() { curl -sk "https://127.0.0.1:$1/server-status?auto" | awk -F': ' '/^ParentServerConfigGeneration/ {print $2}'; }
graceful_host() {
    local h=$1 hp before now
    hp=$(host_port "$h")
    before=$(gen_at "$hp")
    "$APACHE2" -d "$DIR/$h" -f "$DIR/$h/httpd.conf" -k graceful
    for _ in $(seq $((WAIT * 10))); do
        now=$(gen_at "$hp" || true)
        [ -n "$now" ] && [ -n "$before" ] && [ "$now" -gt "$before" ] && break
        sleep 0.1
    done
}
for h in a b; do
    sed -i -e 's|^SSLSessionTickets off|SSLSessionTickets on|' \
        -e 's|^SSLSessionCache "\(.*\)"$|SSLSessionCache "\1 tickets=1h"|' "$DIR/$h/httpd.conf"
    graceful_host "$h"
done
grep -E '^(SSLSessionCache|SSLSessionTickets) ' "$DIR/a/httpd.conf" | sed 's/^/    /'
tickets_status=0
for v in tls1_2 tls1_3; do
    farm_get a "ticket-$v-a" "$v" -sess_out "$DIR/ticket-$v.sess"
done
graceful_host a
for v in tls1_2 tls1_3; do
    for h in a b; do
        farm_get "$h" "ticket-$v-$h-again" "$v" -sess_in "$DIR/ticket-$v.sess"
        out=$(grep -E '^(Reused|New),' "$DIR/logs/ticket-$v-$h-again.out" | head -n1 || true)
        where="after A's graceful restart, on A"
        [ "$h" = b ] && where="on B"
        echo "    $v: ticket made on A, offered $where: ${out:-no answer}"
        case "$out" in Reused*) ;; *) tickets_status=1 ;; esac
    done
done
curl -sk "https://127.0.0.1:$PORT_B/server-status?auto" | grep -E '^TicketKey' | sed 's/^/    /'
if [ "$tickets_status" -ne 0 ]; then
    echo "demo: expected the tickets made on host A to resume after its graceful restart and on host B" >&2
    status=1
fi
stop_farm
echo "    stopped; removing $DIR"
exit "$status"
