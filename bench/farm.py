#!/usr/bin/env python3
"""The farm tier's benchmark: `shm` with Redis behind it, side by side with
`shm` alone and httpd's own network providers, in loopback httpds.

Two httpd "hosts" per configuration, A on 127.0.0.1:P and B on 127.0.0.2:P
(the same port: mod_ssl's session id context is ServerName:port, so a farm
needs one port), event MPM, 4 children x 8 threads, mod_ssl with
SSLSessionTickets off, one certificate and (for `shm`+Redis) one farm key
for both. Its own redis-server (one per Redis configuration, so the
command counts and the faults stay apart) and memcached on free loopback
ports, no persistence. Configurations:

  shm         shm:DIR/scache(1M)                         (no farm)
  shm+redis   "shm:DIR/scache(1M) redis=redis://127.0.0.1:R/0 seal=KEY timeout=20ms"
  shm+rediss  the same over TLS: rediss://127.0.0.1:R3/0 redis-ca=CERT (Redis's
              tls-port, its certificate for IP 127.0.0.1)
  shm+unix    the same over a Unix socket: redis=unix://DIR/redis.sock
              (the redis of shm+redis, which also listens there)
  shm+memcache "shm:DIR/scache(1M) memcache=127.0.0.1:M2 seal=KEY timeout=20ms"
  redis       redis:127.0.0.1:R2     (mod_socache_redis)
  memcache    memcache:127.0.0.1:M   (mod_socache_memcache)

Measured, every configuration in turn inside each repeat (interleaved):
  same-host   bench/tls-load against A only, TLS 1.2 and 1.3: resumed/s,
              Redis commands per handshake (INFO commandstats)
  cross-host  tls-load --resume-port: N sessions made on A, each resumed
              once on B (a local miss there: the second tier's hit), then
              once more on B (a local hit): resumption share, resumed/s,
              p50/p99 of both rounds
  faults      (TLS 1.2, shm+redis and redis) healthy, then Redis hung
              (SIGSTOP), then down (SIGKILL): handshake p50/p99 on A for
              same-host load and for sessions made on B (local misses on
              A); every client operation bounded by --io-timeout; then
              Redis restarted and the time until B resumes A's sessions
              again (the breaker closing)
  visible     tls-load --immediate: each session made on A offered to B
              at once after A's connection ended (1 client; 1000 sessions
              at idle, 300 under a same-host load on A and B): resumed
              share and the time B took (an upper bound of store-to-visible)
  idle        cross-host with 1 client at idle: a remote hit against a
              local hit, p50

Writes bench/farm-results.md and .json (--quick: farm-results-quick.*).
Reuses bench/run.py's httpd instances and cleanup: every process it starts
runs in its own process group and is stopped on exit (normal, error,
SIGINT, SIGTERM); every wait is bounded.

Usage: python3 bench/farm.py [--quick] [--reps R] [--seconds S]
                             [--sessions N] [--out FILE.md]
(`make bench-farm` builds the module and tls-load and runs this.)
"""

import argparse
import json
import os
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (bench/run.py: Httpd, cleanup, machine, tls-load)
from run import Httpd, MODDIR, RUNNING, SHM_SO, TLS_LOAD, WAIT, log  # noqa: E402

REDIS = os.environ.get("REDIS_SERVER", "/usr/bin/redis-server")
REDIS_CLI = os.environ.get("REDIS_CLI", "/usr/bin/redis-cli")
MEMCACHED = os.environ.get("MEMCACHED", "/usr/bin/memcached")
HOST_A, HOST_B = "127.0.0.1", "127.0.0.2"
CHILDREN, THREADS = 4, 8
TIMEOUT_MS = 20           # the farm tier's timeout=
SLACK_MS = 5              # "a few ms" over it
CONFIGS = ["shm", "shm+redis", "shm+rediss", "shm+unix", "shm+memcache", "redis", "memcache"]
REDIS_CONFIGS = ["shm+redis", "shm+rediss", "shm+unix", "redis"]
FARM_CONFIGS = ["shm+redis", "shm+rediss", "shm+unix", "shm+memcache"]
# Each farm configuration's anchor: httpd's own provider for its engine.
ANCHOR = {"shm+redis": "redis", "shm+rediss": "redis", "shm+unix": "redis",
          "shm+memcache": "memcache"}
# Configurations whose faults are measured (the TLS one behaves as the
# plain one there; its figures of interest are speed and visibility).
FAULT_CONFIGS = ["shm+redis", "redis"]
VISIBLE_IDLE, VISIBLE_LOADED, IDLE_SESSIONS = 1000, 300, 200


# ---------------------------------------------------------------------------
# Backends: redis-server, memcached
# ---------------------------------------------------------------------------

class Daemon:
    """A backend in its own process group; in run.RUNNING so run.py's
    cleanup stops it. `restart` brings it back on the same port."""

    def __init__(self, label, argv_for, port, probe):
        self.label = label
        self.port = port
        self.argv_for = argv_for
        self.probe = probe
        self.dir = tempfile.mkdtemp(prefix="socache-farm-", dir="/dev/shm")
        self.proc = None
        self.stopped = False

    def start(self):
        self.proc = subprocess.Popen(
            self.argv_for(self), stdin=subprocess.DEVNULL,
            stdout=open(os.path.join(self.dir, "out.log"), "a"),
            stderr=subprocess.STDOUT, start_new_session=True)
        if self not in RUNNING:
            RUNNING.append(self)
        self.stopped = False
        deadline = time.time() + WAIT
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("%s exited at startup" % self.label)
            try:
                self.probe(self)
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("%s did not answer within %.0f s" % (self.label, WAIT))

    def signal(self, sig):
        os.killpg(self.proc.pid, sig)
        self.stopped = sig == signal.SIGSTOP

    def kill(self):
        """Down: SIGKILL, reaped."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass

    def stop(self):
        if self in RUNNING:
            RUNNING.remove(self)
        if self.proc is not None:
            if self.stopped:
                try:
                    os.killpg(self.proc.pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
            self.kill()
            self.proc = None
        if os.environ.get("BENCH_KEEP") != "1":
            shutil.rmtree(self.dir, ignore_errors=True)


def redis_server(label, unix=False):
    def argv(d):
        extra = ["--unixsocket", os.path.join(d.dir, "redis.sock"),
                 "--unixsocketperm", "777"] if unix else []
        return [REDIS, "--port", str(d.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", d.dir, "--daemonize", "no",
                "--maxmemory", "256mb", "--maxmemory-policy", "volatile-ttl",
                "--protected-mode", "no"] + extra
    d = Daemon(label, argv, run.free_port(), lambda d: redis_cmd(d.port, "PING", timeout=1))
    # The socket's directory (/dev/shm/socache-farm-*) is root's, mode 0700:
    # let httpd's User through (the farm refuses a world-writable one).
    os.chmod(d.dir, 0o755)
    d.start()
    return d


def rediss_server(label, certdir):
    """redis-server on a TLS port only, its certificate (for IP 127.0.0.1)
    self-signed: the farm verifies it with redis-ca=."""
    cert, key = os.path.join(certdir, "redis-cert.pem"), os.path.join(certdir, "redis-key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   timeout=WAIT)

    def argv(d):
        return [REDIS, "--port", "0", "--tls-port", str(d.port), "--bind", "127.0.0.1",
                "--tls-cert-file", cert, "--tls-key-file", key, "--tls-ca-cert-file", cert,
                "--tls-auth-clients", "no", "--save", "", "--appendonly", "no",
                "--dir", d.dir, "--daemonize", "no", "--maxmemory", "256mb",
                "--maxmemory-policy", "volatile-ttl", "--protected-mode", "no"]
    d = Daemon(label, argv, run.free_port(),
               lambda d: redis_cmd(d.port, "PING", timeout=1, ca=cert))
    d.ca = cert
    d.start()
    return d


def memcached(label):
    def argv(d):
        return [MEMCACHED, "-l", "127.0.0.1", "-p", str(d.port), "-U", "0", "-m", "64",
                "-u", "nobody" if os.geteuid() == 0 else os.environ.get("USER", "nobody")]

    def probe(d):
        with socket.create_connection(("127.0.0.1", d.port), timeout=1) as s:
            s.sendall(b"version\r\n")
            if not s.recv(100).startswith(b"VERSION"):
                raise OSError("memcached: unexpected answer")
    d = Daemon(label, argv, run.free_port(), probe)
    d.start()
    return d


def redis_cmd(port, *words, timeout=3.0, ca=None):
    """One command through redis-cli (Redis's own client), bounded by
    `timeout`, over TLS verified with `ca` if given: the reply as text.
    OSError if it cannot connect, fails or does not answer in time."""
    argv = [REDIS_CLI, "-h", "127.0.0.1", "-p", str(port)]
    if ca is not None:
        argv += ["--tls", "--cacert", ca]
    try:
        p = subprocess.run(argv + list(words), stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise OSError("redis-cli %s: no answer within %.1f s" % (words[0], timeout)) from e
    out = p.stdout.decode(errors="replace")
    if p.returncode != 0 or out.startswith(("ERR", "NOAUTH", "WRONGPASS")):
        raise OSError("redis-cli %s: %s%s" % (words[0], out, p.stderr.decode(errors="replace")))
    return out


def commandstats(backend):
    """{command: calls} from INFO commandstats (bounded)."""
    out = {}
    info = redis_cmd(backend.port, "INFO", "commandstats", ca=getattr(backend, "ca", None))
    for line in info.splitlines():
        if line.startswith("cmdstat_"):
            name, rest = line[len("cmdstat_"):].split(":", 1)
            fields = dict(kv.split("=", 1) for kv in rest.split(","))
            out[name] = int(fields["calls"])
    return out


def stats_delta(before, after):
    d = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    d["info"] = d.get("info", 0) - 1       # the INFO that read `after`
    return {k: v for k, v in d.items() if v > 0}


# ---------------------------------------------------------------------------
# The hosts
# ---------------------------------------------------------------------------

def port_free_on_both():
    for _ in range(50):
        p = run.free_port()
        try:
            with socket.socket() as s:
                s.bind((HOST_B, p))
            return p
        except OSError:
            continue
    raise RuntimeError("no port free on both %s and %s" % (HOST_A, HOST_B))


def cache_arg(cfg, backends, key):
    if cfg == "shm":
        return "shm:{dir}/scache(1M)"
    if cfg == "shm+redis":
        return '"shm:{dir}/scache(1M) redis=redis://127.0.0.1:%d/0 seal=%s timeout=%dms"' % (
            backends["shm+redis"].port, key, TIMEOUT_MS)
    if cfg == "shm+rediss":
        return ('"shm:{dir}/scache(1M) redis=rediss://127.0.0.1:%d/0 redis-ca=%s seal=%s '
                'timeout=%dms"' % (backends["shm+rediss"].port, backends["shm+rediss"].ca,
                                   key, TIMEOUT_MS))
    if cfg == "shm+unix":
        return '"shm:{dir}/scache(1M) redis=unix://%s seal=%s timeout=%dms"' % (
            os.path.join(backends["shm+unix"].dir, "redis.sock"), key, TIMEOUT_MS)
    if cfg == "shm+memcache":
        return '"shm:{dir}/scache(1M) memcache=127.0.0.1:%d seal=%s timeout=%dms"' % (
            backends["shm+memcache"].port, key, TIMEOUT_MS)
    if cfg == "redis":
        return "redis:127.0.0.1:%d" % backends["redis"].port
    if cfg == "memcache":
        return "memcache:127.0.0.1:%d" % backends["memcache"].port
    raise ValueError(cfg)


def farm_host(cfg, name, host, port, cache, certdir):
    """One host of configuration cfg: mod_ssl, event MPM, the shared
    certificate, mod_status for the cache's counters."""
    mods = [("ssl_module", os.path.join(MODDIR, "mod_ssl.so")),
            ("status_module", os.path.join(MODDIR, "mod_status.so"))]
    if cfg == "redis":
        mods.append(("socache_redis_module", os.path.join(MODDIR, "mod_socache_redis.so")))
    if cfg == "memcache":
        mods.append(("socache_memcache_module",
                     os.path.join(MODDIR, "mod_socache_memcache.so")))
    body = run.ssl_directives(certdir, cache) + """
<Location /server-status>
  SetHandler server-status
  Require all granted
</Location>"""
    h = Httpd("farm %s %s" % (cfg, name), body, children=CHILDREN, threads=THREADS,
              modules=mods, mpm="event", host=host, port=port)
    return run.start_tls(h)


def cache_status(h):
    """The cache's `Key: value` lines from mod_status ?auto (bounded)."""
    ctx = run.client_ctx("1.2")
    try:
        with socket.create_connection((h.host, h.port), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                s.sendall(b"GET /server-status?auto HTTP/1.1\r\nHost: localhost\r\n"
                          b"Connection: close\r\n\r\n")
                data = run.recv_all(s, 65536)
    except (OSError, ssl.SSLError) as e:
        return {"error": repr(e)}
    body = data.partition(b"\r\n\r\n")[2].decode(errors="replace")
    return {k: v for k, v in (line.split(": ", 1) for line in body.splitlines()
                              if ": " in line)
            if k.startswith(("Farm", "Cache"))}


# ---------------------------------------------------------------------------
# tls-load, bounded
# ---------------------------------------------------------------------------

def tls_load(a, ver, args, seconds=None, io_timeout=None):
    """Same-host load against host a; never raises (a failure is a result)."""
    seconds = seconds or args.seconds
    io = io_timeout or args.io_timeout
    cmd = [TLS_LOAD, "--host", a.host, "--port", str(a.port), "--tls", ver,
           "--clients", str(args.clients), "--seconds", str(seconds),
           "--io-timeout", str(io), "--json"]
    return _tls_load(cmd, seconds + 2 * io + 30)


def tls_cross(a, b, ver, args, n=None, io_timeout=None, pause_ms=300):
    """Sessions made on a, resumed twice on b; never raises."""
    n = n or args.sessions
    io = io_timeout or args.io_timeout
    cmd = [TLS_LOAD, "--host", a.host, "--port", str(a.port), "--resume-host", b.host,
           "--resume-port", str(b.port), "--tls", ver, "--clients", str(args.clients),
           "--sessions", str(n), "--pause-ms", str(pause_ms), "--io-timeout", str(io),
           "--json"]
    # Worst case: every connection of the three rounds times out.
    rounds = 3 * (n // args.clients + 1)
    return _tls_load(cmd, rounds * io + pause_ms / 1000 + 30)


def tls_immediate(a, b, ver, args, n, clients=1):
    """Each of n sessions made on a, offered to b at once; never raises."""
    io = args.io_timeout
    cmd = [TLS_LOAD, "--host", a.host, "--port", str(a.port), "--resume-host", b.host,
           "--resume-port", str(b.port), "--tls", ver, "--clients", str(clients),
           "--sessions", str(n), "--immediate", "--io-timeout", str(io), "--json"]
    return _tls_load(cmd, 2 * (n // clients + 1) * io + 30)


def _tls_load(cmd, bound):
    t = time.time()
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=bound)
    except subprocess.TimeoutExpired:
        return {"failed": "tls-load did not finish in %.0f s" % bound, "wall_s": bound}
    try:
        res = json.loads(p.stdout.decode())
    except ValueError:
        return {"failed": "tls-load exit %d: %s" % (p.returncode, p.stderr.decode()[-300:]),
                "wall_s": time.time() - t}
    res["wall_s"] = time.time() - t
    res["load"] = os.getloadavg()[0]
    return res


# ---------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="about a minute")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=3.0, help="same-host run length")
    ap.add_argument("--sessions", type=int, default=400, help="cross-host N")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--io-timeout", type=float, default=3.0,
                    help="bound of every client socket operation (s)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.quick:
        args.reps = min(args.reps, 1)
        args.seconds = min(args.seconds, 1.5)
        args.sessions = min(args.sessions, 160)
        args.io_timeout = min(args.io_timeout, 2.0)
    if args.out is None:
        args.out = os.path.join(run.ROOT, "bench",
                                "farm-results-quick.md" if args.quick else "farm-results.md")
    for path in (SHM_SO, TLS_LOAD, REDIS, MEMCACHED):
        if not os.path.exists(path):
            sys.exit("missing %s (run `make bench-build`)" % path)
    t0 = time.time()
    mach = run.machine()
    log("machine: %s" % mach)
    res = {"machine": mach, "args": vars(args), "loads": [], "same": {}, "cross": {},
           "faults": {}, "status": {}}

    keydir = tempfile.mkdtemp(prefix="socache-farm-key-", dir="/dev/shm")
    try:
        key = os.path.join(keydir, "farm.key")
        with open(key, "wb") as f:
            f.write(os.urandom(48))
        os.chmod(key, 0o600)
        run.make_cert(keydir)
        shm_redis = redis_server("redis for shm", unix=True)
        backends = {"shm+redis": shm_redis,
                    "shm+unix": shm_redis,
                    "shm+memcache": memcached("memcached for shm"),
                    "shm+rediss": rediss_server("TLS redis for shm", keydir),
                    "redis": redis_server("redis for redis:"),
                    "memcache": memcached("memcached")}
        hosts = {}
        for cfg in CONFIGS:
            port = port_free_on_both()
            cache = cache_arg(cfg, backends, key)
            hosts[cfg] = (farm_host(cfg, "A", HOST_A, port, cache, keydir),
                          farm_host(cfg, "B", HOST_B, port, cache, keydir))
            log("%s: A %s:%d, B %s:%d, SSLSessionCache %s"
                % (cfg, HOST_A, port, HOST_B, port, cache))
        measure(args, res, hosts, backends)
    finally:
        run.cleanup()
        shutil.rmtree(keydir, ignore_errors=True)
    mach["load_after"] = os.getloadavg()
    res["elapsed_s"] = time.time() - t0
    md = report(res, args)
    with open(args.out, "w") as f:
        f.write(md)
    with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
        json.dump(res, f, indent=1, default=str)
    print(md)
    log("wrote %s (%.0f s)" % (args.out, res["elapsed_s"]))


def note_load(res, what):
    res["loads"].append((what, os.getloadavg()[0]))


def measure(args, res, hosts, backends):
    # 1-2, 6: same-host, interleaved; commands per handshake.
    for rep in range(args.reps):
        for ver in ("1.2", "1.3"):
            for cfg in CONFIGS:
                a, _ = hosts[cfg]
                before = commandstats(backends[cfg]) if cfg in REDIS_CONFIGS else None
                r = tls_load(a, ver, args)
                if before is not None and "failed" not in r:
                    r["redis_cmds"] = stats_delta(before, commandstats(backends[cfg]))
                res["same"].setdefault("%s/%s" % (cfg, ver), []).append(r)
                log("same-host %s TLS %s rep %d: %s resumed/s, share %s, errors %s, load %.2f%s"
                    % (cfg, ver, rep + 1, r.get("resumed_s"), r.get("resumption_share"),
                       r.get("errors"), os.getloadavg()[0],
                       ", redis %s" % r.get("redis_cmds") if before is not None else ""))
        note_load(res, "same-host rep %d" % (rep + 1))
    # 3-4: cross-host, interleaved.
    for rep in range(args.reps):
        for ver in ("1.2", "1.3"):
            for cfg in CONFIGS:
                a, b = hosts[cfg]
                before = commandstats(backends[cfg]) if cfg in REDIS_CONFIGS else None
                r = tls_cross(a, b, ver, args)
                if before is not None and "failed" not in r:
                    r["redis_cmds"] = stats_delta(before, commandstats(backends[cfg]))
                res["cross"].setdefault("%s/%s" % (cfg, ver), []).append(r)
                log("cross-host %s TLS %s rep %d: made %s, resumed on B %s then %s of %d, "
                    "%s resumed/s, remote p50/p99 %s/%s ms, local %s/%s ms, load %.2f" % (
                        cfg, ver, rep + 1, r.get("made"), r.get("first_resumed"),
                        r.get("second_resumed"), args.sessions, r.get("first_resumed_s"),
                        r.get("first_resumed_p50_ms"), r.get("first_resumed_p99_ms"),
                        r.get("second_resumed_p50_ms"), r.get("second_resumed_p99_ms"),
                        os.getloadavg()[0]))
        note_load(res, "cross-host rep %d" % (rep + 1))
    for cfg in CONFIGS:
        res["status"]["%s/A after load" % cfg] = cache_status(hosts[cfg][0])
        res["status"]["%s/B after load" % cfg] = cache_status(hosts[cfg][1])
    # Visible at once: idle, then under a same-host load on A and B.
    res["visible"] = {}
    res["idle"] = {}
    for ver in ("1.2", "1.3"):
        for cfg in FARM_CONFIGS + ["redis"]:
            a, b = hosts[cfg]
            r = tls_immediate(a, b, ver, args, VISIBLE_IDLE)
            res["visible"]["%s/%s/idle" % (cfg, ver)] = r
            log("visible %s TLS %s idle: %s of %d resumed, B p50/p99 %s/%s ms, load %.2f" % (
                cfg, ver, r.get("immediate_resumed"), VISIBLE_IDLE, r.get("resumed_p50_ms"),
                r.get("resumed_p99_ms"), os.getloadavg()[0]))
            loads = [subprocess.Popen(
                [TLS_LOAD, "--host", h.host, "--port", str(h.port), "--tls", ver,
                 "--clients", str(args.clients // 2), "--seconds", "600",
                 "--io-timeout", str(args.io_timeout)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True) for h in (a, b)]
            try:
                time.sleep(0.5)
                r = tls_immediate(a, b, ver, args, VISIBLE_LOADED)
            finally:
                for p in loads:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
            r["load"] = os.getloadavg()[0]
            res["visible"]["%s/%s/loaded" % (cfg, ver)] = r
            log("visible %s TLS %s loaded: %s of %d resumed, B p50/p99 %s/%s ms, load %.2f" % (
                cfg, ver, r.get("immediate_resumed"), VISIBLE_LOADED, r.get("resumed_p50_ms"),
                r.get("resumed_p99_ms"), os.getloadavg()[0]))
        note_load(res, "visible TLS %s" % ver)
        # A remote hit against a local hit, one client, at idle.
        for cfg in ["shm"] + FARM_CONFIGS + ["redis"]:
            a, b = hosts[cfg]
            r = tls_cross(a, b, ver, dict_args(args, clients=1), n=IDLE_SESSIONS, pause_ms=100)
            res["idle"]["%s/%s" % (cfg, ver)] = r
            log("idle %s TLS %s: remote p50 %s ms, local p50 %s ms" % (
                cfg, ver, r.get("first_resumed_p50_ms"), r.get("second_resumed_p50_ms")))
    # 5: faults (TLS 1.2).
    for cfg in FAULT_CONFIGS:
        res["faults"][cfg] = faults(args, hosts[cfg], backends[cfg], cfg, res)
        note_load(res, "faults %s" % cfg)


def dict_args(args, **changes):
    """A copy of the parsed arguments with some changed."""
    copy = argparse.Namespace(**vars(args))
    for k, v in changes.items():
        setattr(copy, k, v)
    return copy


def faults(args, ab, redis, cfg, res):
    a, b = ab
    out = {}
    fault_n = (4 if args.quick else 8) * args.clients

    def probe(state):
        s = tls_load(a, "1.2", args, seconds=min(args.seconds, 2.0))
        out[state + "/same"] = s
        blocked = "failed" in s or s.get("connections", 0) == 0
        if blocked:
            c = {"skipped": "same-host load was blocked"}
        else:
            # Sessions made on B, offered to A: local misses on A, so the
            # second tier's GET (or its breaker) is on the handshake.
            c = tls_cross(b, a, "1.2", args, n=fault_n)
        out[state + "/miss"] = c
        log("faults %s %s: same-host %s hs/s p50/p99/max %s/%s/%s ms errors %s; "
            "A-miss p50/p99/max %s/%s/%s ms resumed %s/%d; load %.2f" % (
                cfg, state, s.get("handshakes_s"), s.get("p50_ms"), s.get("p99_ms"),
                s.get("max_ms"), s.get("errors"), c.get("first_p50_ms"),
                c.get("first_p99_ms"), c.get("first_max_ms"), c.get("first_resumed"),
                fault_n, os.getloadavg()[0]))

    probe("healthy")
    redis.signal(signal.SIGSTOP)
    try:
        time.sleep(0.2)
        probe("hung")
        out["status/hung"] = cache_status(a)
    finally:
        redis.signal(signal.SIGCONT)
    time.sleep(1.0)
    redis.kill()
    try:
        probe("down")
        out["status/down"] = cache_status(a)
    finally:
        redis.start()
    # Recovery: A's sessions resumed on B again (the breaker closed on both).
    t = time.time()
    tries = []
    while time.time() - t < 15:
        c = tls_cross(a, b, "1.2", args, n=args.clients, pause_ms=100)
        tries.append((round(time.time() - t, 2), c.get("first_resumed"), c.get("made")))
        if c.get("first_resumed") == args.clients:
            break
        time.sleep(0.25)
    out["recovery"] = {"tries": tries, "recovered": bool(tries and tries[-1][1] == args.clients),
                       "after_s": tries[-1][0] if tries else None}
    out["status/A after"] = cache_status(a)
    out["status/B after"] = cache_status(b)
    log("faults %s recovery: %s" % (cfg, out["recovery"]))
    return out


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------

def med(rs, k):
    v = [r[k] for r in rs if r.get(k) is not None and "failed" not in r]
    return statistics.median(v) if v else None


def rng(rs, k, f="%.0f"):
    v = [r[k] for r in rs if r.get(k) is not None and "failed" not in r]
    if not v:
        return "-"
    if len(v) == 1:
        return f % v[0]
    return (f + " [" + f + "-" + f + "]") % (statistics.median(v), min(v), max(v))


def fmt(x, f="%.2f"):
    return "-" if x is None or x != x else f % x


def verdict(ok):
    return "met" if ok else "MISSED"


def per_handshake(rs):
    tot, hs = {}, 0
    for r in rs:
        if "redis_cmds" not in r:
            continue
        hs += r.get("connections") or 0
        for k, v in r["redis_cmds"].items():
            tot[k] = tot.get(k, 0) + v
    if not hs:
        return "-"
    return ", ".join("%s %.2f" % (k.upper(), v / hs) for k, v in sorted(tot.items())) or "0"


def report(res, args):
    m = res["machine"]
    loads = [l for _, l in res["loads"]]
    md = ["## The farm tier: results of bench/farm.py\n",
          "Machine: %s, %d CPUs (nproc), Linux %s, %s, %s; repository at %s. "
          "Load average (1 min): %.2f before, %s during (after each stage), %.2f after. "
          "Total %.0f s. Date: %s.\n" % (
              m["cpu"], m["nproc"], m["kernel"], m["apache"], m["openssl"], m["commit"],
              m["load_before"][0], ", ".join("%.2f" % l for l in loads),
              m["load_after"][0], res["elapsed_s"], time.strftime("%Y-%m-%d %H:%M %Z")),
          "Command: `python3 bench/farm.py %s`\n" % " ".join(sys.argv[1:]),
          "Event MPM, %d children x %d threads per host; hosts A (127.0.0.1:P) and B "
          "(127.0.0.2:P), SSLSessionTickets off, one certificate; tls-load with %d "
          "clients, every socket operation bounded by %.0f s. %d interleaved repeats: "
          "median [min-max].\n" % (CHILDREN, THREADS, args.clients, args.io_timeout, args.reps)]
    floors = []
    same, cross = res["same"], res["cross"]

    md += ["### Same host (A only)\n",
           "tls-load for %.1f s: each client one full handshake, then resumptions. "
           "Redis commands per handshake from INFO commandstats around each run.\n"
           % args.seconds,
           "| configuration | TLS | resumed/s | vs shm alone | share | resumed p50 / p99 ms "
           "| errors | Redis commands per handshake |",
           "|---|---|---:|---:|---:|---:|---:|---|"]
    for ver in ("1.2", "1.3"):
        base = same.get("shm/%s" % ver, [])
        for cfg in CONFIGS:
            rs = same.get("%s/%s" % (cfg, ver), [])
            # Ratio paired per repeat (the two ran back to back).
            pairs = [r["resumed_s"] / b["resumed_s"] for r, b in zip(rs, base)
                     if r.get("resumed_s") and b.get("resumed_s")]
            ratio = statistics.median(pairs) if pairs else None
            md.append("| %s | %s | %s | %s | %s | %s / %s | %s | %s |" % (
                cfg, ver, rng(rs, "resumed_s"), fmt(ratio, "%.2fx"),
                fmt(med(rs, "resumption_share"), "%.4f"),
                fmt(med(rs, "resumed_p50_ms")), fmt(med(rs, "resumed_p99_ms")),
                sum(r.get("errors", 0) for r in rs) + sum(1 for r in rs if "failed" in r),
                per_handshake(rs) if cfg in REDIS_CONFIGS else ""))
            if cfg in FARM_CONFIGS:
                floors.append(("same-host resumed/s with %s >= 0.95x shm alone (TLS %s)"
                               % (cfg, ver), fmt(ratio, "%.2fx") + " (median of paired repeats)",
                               verdict(ratio is not None and ratio >= 0.95)))
    md.append("")

    md += ["### Across hosts (made on A, resumed on B)\n",
           "tls-load --resume-port: %d full handshakes on A, 300 ms pause, then each "
           "session offered once to B (remote: a local miss on B), then B's newest "
           "session offered to B again (local). resumed/s over the first round's wall "
           "time.\n" % args.sessions,
           "| configuration | TLS | resumed on B (of N) | cross-host resumed/s | "
           "remote hit p50 / p99 ms | local hit p50 / p99 ms | added p50 / p99 ms | "
           "Redis commands per cycle (1 made + 2 resumed) |",
           "|---|---|---:|---:|---:|---:|---:|---|"]
    for ver in ("1.2", "1.3"):
        for cfg in CONFIGS:
            rs = cross.get("%s/%s" % (cfg, ver), [])
            ok = [r for r in rs if "failed" not in r]
            got = sum(r.get("first_resumed", 0) for r in ok)
            n = args.sessions * len(rs)
            share = got / n if n else None
            r50, r99 = med(ok, "first_resumed_p50_ms"), med(ok, "first_resumed_p99_ms")
            l50, l99 = med(ok, "second_resumed_p50_ms"), med(ok, "second_resumed_p99_ms")
            cyc = "-"
            if cfg in REDIS_CONFIGS:
                tot = {}
                for r in ok:
                    for k, v in r.get("redis_cmds", {}).items():
                        tot[k] = tot.get(k, 0) + v
                cyc = ", ".join("%s %.2f" % (k.upper(), v / n)
                                for k, v in sorted(tot.items())) if n else "-"
            md.append("| %s | %s | %d/%d (%s) | %s | %s / %s | %s / %s | %s / %s | %s |" % (
                cfg, ver, got, n, fmt(share and 100 * share, "%.1f%%"),
                rng(ok, "first_resumed_s"), fmt(r50), fmt(r99), fmt(l50), fmt(l99),
                fmt(r50 - l50 if r50 is not None and l50 is not None else None),
                fmt(r99 - l99 if r99 is not None and l99 is not None else None),
                cyc if cfg in REDIS_CONFIGS else ""))
            if cfg in FARM_CONFIGS:
                floors.append(("%s: cross-host resumption >= 99%% (TLS %s)" % (cfg, ver),
                               "%d/%d" % (got, n), verdict(share is not None and share >= 0.99)))
                anchor = ANCHOR[cfg]
                red = [r for r in cross.get("%s/%s" % (anchor, ver), []) if "failed" not in r]
                x, y = med(ok, "first_resumed_s"), med(red, "first_resumed_s")
                floors.append(("%s: cross-host resumed/s >= 1.1x httpd's %s: (TLS %s)"
                               % (cfg, anchor, ver),
                               "%s vs %s (medians, %s)" % (
                                   fmt(x, "%.0f"), fmt(y, "%.0f"),
                                   fmt(x / y if x and y else None, "%.2fx")),
                               verdict(x is not None and y is not None and x >= 1.1 * y)))
                y50 = med(red, "first_resumed_p50_ms")
                floors.append(("%s: remote-hit p50 <= httpd's %s: (TLS %s)" % (cfg, anchor, ver),
                               "%s vs %s ms" % (fmt(r50), fmt(y50)),
                               verdict(r50 is not None and y50 is not None and r50 <= y50)))
    md.append("")

    md += ["### Visible at once (made on A, offered to B right after)\n",
           "tls-load --immediate, 1 client: each session made on A is offered to B as "
           "soon as A's connection ended (%d at idle; %d while tls-load with %d clients "
           "runs against A and against B). B's handshake time bounds the time from "
           "A's end to B's lookup.\n" % (VISIBLE_IDLE, VISIBLE_LOADED, args.clients // 2),
           "| configuration | TLS | load | resumed on B | B handshake p50 / p99 / max ms "
           "| errors |", "|---|---|---|---:|---:|---:|"]
    vis = res.get("visible", {})
    for ver in ("1.2", "1.3"):
        for cfg in FARM_CONFIGS + ["redis"]:
            for state, n in (("idle", VISIBLE_IDLE), ("loaded", VISIBLE_LOADED)):
                r = vis.get("%s/%s/%s" % (cfg, ver, state), {})
                got = r.get("immediate_resumed")
                md.append("| %s | %s | %s | %s/%d | %s / %s / %s | %s |" % (
                    cfg, ver, state, got, n, fmt(r.get("resumed_p50_ms")),
                    fmt(r.get("resumed_p99_ms")), fmt(r.get("resumed_max_ms")),
                    r.get("immediate_errors", r.get("failed"))))
                if cfg == "shm+redis" and state == "idle":
                    floors.append(("visible at once: >= 999 of 1000 offered to B right "
                                   "after A (TLS %s, idle)" % ver, "%s/%d" % (got, n),
                                   verdict(got is not None and got >= 999)))
    md.append("")

    md += ["### A remote hit against a local hit, at idle\n",
           "tls-load --resume-port with 1 client, %d sessions: B's first resumption of "
           "each is a remote hit (a local miss on B), its second a local hit.\n"
           % IDLE_SESSIONS,
           "| configuration | TLS | remote hit p50 ms | local hit p50 ms | added ms |",
           "|---|---|---:|---:|---:|"]
    for ver in ("1.2", "1.3"):
        for cfg in ["shm"] + FARM_CONFIGS + ["redis"]:
            r = res.get("idle", {}).get("%s/%s" % (cfg, ver), {})
            r50, l50 = r.get("first_resumed_p50_ms"), r.get("second_resumed_p50_ms")
            added = r50 - l50 if r50 is not None and l50 is not None else None
            md.append("| %s | %s | %s | %s | %s |" % (cfg, ver, fmt(r50), fmt(l50),
                                                      fmt(added, "%.3f")))
            if cfg == "shm+redis":
                floors.append(("a remote hit adds <= 0.15 ms over a local hit at idle "
                               "(TLS %s)" % ver, fmt(added, "%.3f ms"),
                               verdict(added is not None and added <= 0.15)))
    md.append("")

    md += ["### Redis hung (SIGSTOP) and down (SIGKILL), TLS 1.2, on A\n",
           "same-host: tls-load against A (full handshakes and local resumptions). "
           "A-miss: %d sessions made on B, offered to A (local misses on A: the "
           "second tier's GET, or the breaker skipping it); all handshakes of that "
           "round. Client bound %.0f s per socket operation. Recovery: after Redis "
           "is back, sessions made on A offered to B until all %d resume.\n"
           % ((4 if args.quick else 8) * args.clients, args.io_timeout, args.clients),
           "| configuration | Redis | same-host handshakes/s | same-host p50 / p99 / max ms "
           "| A-miss p50 / p99 / max ms | A-miss resumed | errors |",
           "|---|---|---:|---:|---:|---:|---:|"]
    for cfg in FAULT_CONFIGS:
        f = res["faults"].get(cfg, {})
        for state in ("healthy", "hung", "down"):
            s = f.get(state + "/same", {})
            c = f.get(state + "/miss", {})
            blocked_s = "failed" in s or s.get("connections", 0) == 0
            if blocked_s:
                same_txt = "blocked (timed out after %.0f s)" % args.io_timeout
                same_lat = "blocked"
            else:
                same_txt = fmt(s.get("handshakes_s"), "%.0f")
                same_lat = "%s / %s / %s" % (fmt(s.get("p50_ms")), fmt(s.get("p99_ms")),
                                             fmt(s.get("max_ms")))
            if "skipped" in c or "failed" in c:
                miss_lat, miss_res = "blocked", "-"
            else:
                miss_lat = "%s / %s / %s" % (fmt(c.get("first_p50_ms")),
                                             fmt(c.get("first_p99_ms")),
                                             fmt(c.get("first_max_ms")))
                miss_res = "%s/%s" % (c.get("first_resumed"), c.get("made"))
            errs = (s.get("errors") or 0) + (c.get("first_errors") or 0) + (
                c.get("made_errors") or 0)
            md.append("| %s | %s | %s | %s | %s | %s | %d |" % (
                cfg, state, same_txt, same_lat, miss_lat, miss_res, errs))
        rec = f.get("recovery", {})
        md.append("| %s | restarted | recovery: %s | | | | |" % (
            cfg, "all resumed on B after %.1f s (%d tries)" % (rec["after_s"], len(rec["tries"]))
            if rec.get("recovered") else "NOT recovered in 15 s: %s" % rec.get("tries")))
    md.append("")
    f = res["faults"].get("shm+redis", {})
    for state in ("hung", "down"):
        h_s, h_c = f.get("healthy/same", {}), f.get("healthy/miss", {})
        s, c = f.get(state + "/same", {}), f.get(state + "/miss", {})
        worst = max([x for x in (s.get("p99_ms"), c.get("first_p99_ms")) if x is not None]
                    or [float("nan")])
        base = max([x for x in (h_s.get("p99_ms"), h_c.get("first_p99_ms")) if x is not None]
                   or [float("nan")])
        ok = worst == worst and base == base and worst <= base + TIMEOUT_MS + SLACK_MS
        floors.append(("Redis %s: shm+redis handshake p99 <= healthy p99 + timeout (%d ms) "
                       "+ %d ms" % (state, TIMEOUT_MS, SLACK_MS),
                       "%s ms (healthy %s ms); httpd's redis: %s" % (
                           fmt(worst), fmt(base), redis_fault_text(res, state, args)),
                       verdict(ok)))
    md += ["### Floors\n", "| floor | figure | verdict |", "|---|---|---|"]
    md += ["| %s | %s | %s |" % fl for fl in floors]
    md.append("")
    md += ["### Cache counters (mod_status ?auto, Farm*)\n", "```"]
    for k, v in res["status"].items():
        if k.startswith("shm+redis"):
            md.append("%s: %s" % (k, " ".join("%s=%s" % kv for kv in v.items()
                                              if kv[0].startswith("Farm"))))
    for k, v in res["faults"].get("shm+redis", {}).items():
        if k.startswith("status/"):
            md.append("faults %s: %s" % (k[7:], " ".join("%s=%s" % kv for kv in v.items()
                                                       if kv[0].startswith("Farm"))))
    md += ["```", ""]
    return "\n".join(md)


def redis_fault_text(res, state, args):
    s = res["faults"].get("redis", {}).get(state + "/same", {})
    if "failed" in s or s.get("connections", 0) == 0:
        return "blocked (timed out after %.0f s)" % args.io_timeout
    return "p99 %s ms, %s errors" % (fmt(s.get("p99_ms")), s.get("errors"))


if __name__ == "__main__":
    main()
