#!/usr/bin/env python3
"""Side-by-side benchmark of the socache providers `shm` (ours) and `shmcb`
(stock) inside a real loopback httpd (Debian's /usr/sbin/apache2, prefork).

Sections, numbered and named as in BENCHMARKS.md (which quotes them):
  1  speed inside httpd, by cache size and concurrency:
     bench/mod_socache_bench.so drives the provider in 1, 2, 4, 8 children
     at once (mix 80/10/10), at 512000 B, 64 MiB, 256 MiB, each cache
     filled to capacity first; 3 repeats per cell
  2  a first read over a full cache, one child, in section 1's httpds
     after its runs: fresh ids stored, then a pass of retrieves over ids
     never read before (first reads), timed apart from a second pass over
     the same ids (repeated reads) and a third after the CPU caches are
     flushed
  3  TLS handshakes end to end: bench/tls-load (Rust, openssl crate), if
     built
  4  sessions per MiB and hit rate: at equal memory (512000 B, 4 MiB),
     many more distinct sessions than fit, then Zipf(s=1) reuse, storing
     on a miss
  5  graceful restart: N real TLS sessions (TLS 1.2 and 1.3,
     SSLSessionTickets off), `apache2 -k graceful`, resume all N
They run in the order 1 and 2, 4, 5, 3 (section 1 starts section 3's
large TLS httpds and fills their caches next to its own fills); the report
lists them in order. It states figures: the floors that issues set, and
whether a run met them, are in BENCHMARKS.md and its history in git.

Every random choice is seeded: with --seed S, child k of a run draws from
S ^ k (likewise each first-read repeat and the Zipf run), so a rerun asks
for the same ids. The recorded commit ends in "-dirty" when the tree had
uncommitted changes.

Writes bench/results.md (Markdown) and bench/results.json (raw figures).
Every httpd runs in its own temporary directory under /dev/shm, on
127.0.0.1 and a free port, in its own process group; all are stopped on exit
(normal, error, SIGINT, SIGTERM). Every wait is bounded.

Usage: python3 bench/run.py [--sections 1,2,3,4,5] [--quick] [--seed S] [--out FILE.md]
(--quick: shorter runs at 512000 B and 64 MiB, into bench/results-quick.md)
(`make bench` builds the modules and runs this.)
"""

import argparse
import atexit
import concurrent.futures
import http.client
import json
import math
import os
import platform
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APACHE = os.environ.get("APACHE2_BIN", "/usr/sbin/apache2")
MODDIR = os.environ.get("APACHE2_MODULES", "/usr/lib/apache2/modules")
SHM_SO = os.environ.get("SOCACHE_SHM_MODULE", os.path.join(ROOT, "build", "mod_socache_shm.so"))
BENCH_SO = os.path.join(ROOT, "bench", ".libs", "mod_socache_bench.so")
TLS_LOAD = os.environ.get(
    "TLS_LOAD_BIN", os.path.join(ROOT, "target-bench", "release", "tls-load"))
WAIT = 20.0  # seconds: startup, shutdown, a small request

PROVIDERS = ["shm", "shmcb"]
KB512 = 512000
MIB = 1 << 20



def log(msg):
    print(msg, file=sys.stderr, flush=True)


def human_bytes(n):
    if n == KB512:
        return "512000 B"
    if n % MIB == 0:
        return "%d MiB" % (n // MIB)
    return "%d B" % n


def si(x):
    if x >= 1e6:
        return "%.2f M" % (x / 1e6)
    if x >= 1e3:
        return "%.0f k" % (x / 1e3)
    return "%.0f" % x


# ---------------------------------------------------------------------------
# httpd instances
# ---------------------------------------------------------------------------

RUNNING = []


def cleanup():
    for h in list(RUNNING):
        h.stop()


def on_signal(signum, frame):
    cleanup()
    sys.exit(128 + signum)


atexit.register(cleanup)
signal.signal(signal.SIGTERM, on_signal)
signal.signal(signal.SIGINT, on_signal)
signal.signal(signal.SIGHUP, on_signal)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_as():
    if os.geteuid() != 0:
        return None
    try:
        import pwd
        pwd.getpwnam("www-data")
        return ("www-data", "www-data")
    except KeyError:
        return ("nobody", "#65534")


class Httpd:
    """An apache2 -DFOREGROUND in a temporary directory: prefork with
    `children` processes, or (mpm="event") `children` processes of
    `threads` threads each. It listens on host:port (default 127.0.0.1 and
    a free port)."""

    def __init__(self, label, body, children=10, modules=(), mpm="prefork", threads=8,
                 host="127.0.0.1", port=None):
        self.label = label
        self.dir = tempfile.mkdtemp(prefix="socache-bench-", dir="/dev/shm")
        os.chmod(self.dir, 0o755)
        for sub in ("logs", "run", "htdocs"):
            os.makedirs(os.path.join(self.dir, sub))
        with open(os.path.join(self.dir, "htdocs", "index.html"), "w") as f:
            f.write("ok\n")
        self.host = host
        self.port = port or free_port()
        self.conf = os.path.join(self.dir, "httpd.conf")
        self.proc = None
        d = self.dir
        lines = [
            "# generated by bench/run.py: %s" % label,
            'ServerRoot "%s"' % d,
            "ServerName localhost",
            "Listen %s:%d" % (host, self.port),
            'PidFile "%s/run/httpd.pid"' % d,
            'DefaultRuntimeDir "%s/run"' % d,
            'ErrorLog "%s/logs/error.log"' % d,
            "LogLevel warn",
            # No Mutex directive: Debian 12's apache2.conf leaves its
            # "Mutex file:... default" commented out, so mutexes use APR's
            # default mechanism (pthread on Debian's APR).
            'LoadModule mpm_%s_module "%s/mod_mpm_%s.so"' % (mpm, MODDIR, mpm),
            'LoadModule authz_core_module "%s/mod_authz_core.so"' % MODDIR,
            'LoadModule socache_shmcb_module "%s/mod_socache_shmcb.so"' % MODDIR,
            'LoadModule socache_shm_module "%s"' % SHM_SO,
        ]
        for name, path in modules:
            lines.append('LoadModule %s "%s"' % (name, path))
        user = run_as()
        if user:
            lines.append("User %s\nGroup %s" % user)
        if mpm == "event":
            # Exactly `children` x `threads`: no spare-thread churn.
            lines += [
                "StartServers %d" % children,
                "ServerLimit %d" % children,
                "ThreadsPerChild %d" % threads,
                "ThreadLimit %d" % threads,
                "MaxRequestWorkers %d" % (children * threads),
                "MinSpareThreads %d" % threads,
                "MaxSpareThreads %d" % (children * threads),
            ]
        else:
            lines += [
                "StartServers %d" % children,
                "MinSpareServers %d" % children,
                "MaxSpareServers %d" % (2 * children),
                "ServerLimit %d" % (2 * children),
                "MaxRequestWorkers %d" % (2 * children),
            ]
        lines += [
            "MaxConnectionsPerChild 0",
            "KeepAlive Off",
            "Timeout 600",
            'DocumentRoot "%s/htdocs"' % d,
            '<Directory "%s/htdocs">\n  Require all granted\n</Directory>' % d,
        ]
        lines.append(body.replace("{dir}", d))
        with open(self.conf, "w") as f:
            f.write("\n".join(lines) + "\n")

    def start(self, probe):
        """Start and wait until `probe()` succeeds."""
        self.proc = subprocess.Popen(
            [APACHE, "-d", self.dir, "-f", self.conf, "-DFOREGROUND"],
            stdin=subprocess.DEVNULL,
            stdout=open(os.path.join(self.dir, "logs", "stdout.log"), "w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        RUNNING.append(self)
        deadline = time.time() + WAIT
        while time.time() < deadline:
            if self.proc.poll() is not None:
                self.fail("httpd exited at startup (%s)" % self.proc.returncode)
            try:
                probe()
                return
            except (OSError, http.client.HTTPException, ssl.SSLError):
                time.sleep(0.05)
        self.fail("httpd did not answer within %.0f s" % WAIT)

    def tail(self, name="error.log", n=15):
        try:
            with open(os.path.join(self.dir, "logs", name)) as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def fail(self, msg):
        err = self.tail() + self.tail("stdout.log")
        self.stop()
        raise RuntimeError("%s: %s\n%s" % (self.label, msg, err))

    def get(self, path, timeout=WAIT):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request("GET", path)
            r = conn.getresponse()
            body = r.read().decode()
            if r.status != 200:
                raise RuntimeError("%s GET %s: %d %s\n%s" % (self.label, path, r.status,
                                                             body[:200], self.tail()))
            return body
        finally:
            conn.close()

    def json(self, path, timeout=WAIT):
        return json.loads(self.get(path, timeout))

    def graceful(self):
        out = subprocess.run([APACHE, "-d", self.dir, "-f", self.conf, "-k", "graceful"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             timeout=WAIT)
        if out.returncode != 0:
            self.fail("apache2 -k graceful: %s" % out.stdout.decode())

    def generations(self):
        return self.tail(n=10000).count("resuming normal operations")

    def stop(self):
        if self in RUNNING:
            RUNNING.remove(self)
        p = self.proc
        if p is not None and p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout=WAIT)
            except subprocess.TimeoutExpired:
                pass
        if p is not None:
            # Whatever is left of the process group (children included).
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self.proc = None
        if os.environ.get("BENCH_KEEP") != "1":
            shutil.rmtree(self.dir, ignore_errors=True)


def bench_httpd(provider, size, label):
    body = """SocacheBench %s {dir}/cache(%d)
<Location /socache-bench>
  SetHandler socache-bench
  Require all granted
</Location>""" % (provider, size)
    h = Httpd(label, body, modules=[("socache_bench_module", BENCH_SO)])
    h.start(lambda: h.get("/socache-bench?op=info", timeout=2))
    return h


# ---------------------------------------------------------------------------
# Histograms (the module's buckets: exact below 32 ns, 32 per octave above)
# ---------------------------------------------------------------------------

def bucket_mid(b):
    if b < 32:
        return float(b)
    e = (b - 32) // 32 + 5
    sub = (b - 32) % 32
    lo = (32 + sub) << (e - 5)
    hi = (33 + sub) << (e - 5)
    return (lo + hi) / 2.0


def merge(hists):
    out = {}
    for h in hists:
        for b, c in h:
            out[b] = out.get(b, 0) + c
    return out


def percentile(hist, q):
    total = sum(hist.values())
    if total == 0:
        return float("nan")
    want = q * total
    acc = 0
    for b in sorted(hist):
        acc += hist[b]
        if acc >= want:
            return bucket_mid(b)
    return bucket_mid(max(hist))


def us(ns):
    if ns != ns:
        return "-"
    if ns < 10000:
        return "%.2f" % (ns / 1000.0)
    return "%.0f" % (ns / 1000.0)


# ---------------------------------------------------------------------------
# Sections 1 and 2: speed inside httpd; a first read over a full cache
# ---------------------------------------------------------------------------

def concurrent_runs(h, c, ms, win, mix, seed):
    """c simultaneous run requests, each on its own connection (so its own
    prefork child), starting together at a common wall-clock instant; child
    k (1..c) draws its ids from seed ^ k."""
    at = int(time.time() * 1000) + 300
    results = [None] * c
    errors = []
    conns = []
    for i in range(c):
        conn = http.client.HTTPConnection("127.0.0.1", h.port, timeout=ms / 1000.0 + 60)
        conn.connect()
        conns.append(conn)

    def one(i):
        try:
            conns[i].request("GET", "/socache-bench?op=run&ms=%d&win=%d&mix=%s&at=%d&seed=%d"
                             % (ms, win, mix, at, seed ^ (i + 1)))
            r = conns[i].getresponse()
            body = r.read().decode()
            if r.status != 200:
                raise RuntimeError("status %d" % r.status)
            results[i] = json.loads(body)
        except Exception as e:  # reported below
            errors.append(repr(e))
        finally:
            conns[i].close()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(c)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(ms / 1000.0 + 90)
    if errors or any(r is None for r in results):
        h.fail("run requests failed: %s" % errors)
    pids = {r["pid"] for r in results}
    ops_s = sum(r["ops"] / (r["elapsed_ns"] / 1e9) for r in results)
    hit_ops = sum(r["hit_ops"] for r in results)
    hit_found = sum(r["hit_found"] for r in results)
    return {
        "children": c,
        "distinct_pids": len(pids),
        "ops_s": ops_s,
        "ops": sum(r["ops"] for r in results),
        "hit_share": hit_found / hit_ops if hit_ops else float("nan"),
        "miss_found": sum(r["miss_found"] for r in results),
        "bad": sum(r["bad"] for r in results),
        "store_failed": sum(r["store_failed"] for r in results),
        "lock_failures": sum(r["lock_failures"] for r in results),
        "hist_all": merge([r["hit"] for r in results] + [r["miss"] for r in results]
                          + [r["store"] for r in results]),
        "hist_hit": merge([r["hit"] for r in results]),
    }


def section1(args):
    """Section 1 (the runs, when "1" is asked for) and section 2 (the first
    read, in the same httpds after the runs, when "2" is): both need the
    caches filled first. Returns section 1's figures with section 2's
    under "first"."""
    runs = "1" in args.section_list
    first = "2" in args.section_list
    sizes = [KB512, 64 * MIB, 256 * MIB] if not args.quick else [KB512, 64 * MIB]
    conc = [1, 2, 4, 8]
    reps = args.repeats
    out = {"sizes": sizes, "children": conc, "repeats": reps, "ms": args.ms,
           "mix": args.mix, "cells": {}, "fill": {}, "status": {}, "first": {},
           "first_sample": args.first_sample}
    for size in sizes:
        for prov in PROVIDERS:
            label = "section 1 %s %s" % (prov, human_bytes(size))
            t0 = time.time()
            h = bench_httpd(prov, size, label)
            try:
                info = h.json("/socache-bench?op=info")
                companion = None
                if ("3" in args.section_list and os.path.exists(TLS_LOAD)
                        and size in args.tls_large):
                    companion = start_prefilled(prov, size, args)
                # Store 1.2 x the expected capacity (about 210 B per entry for
                # both providers with 32 + 160 B entries), in chunks.
                n = int(1.2 * size / 210)
                tf = time.time()
                done = 0
                while done < n:
                    k = min(200000, n - done)
                    h.json("/socache-bench?op=fill&n=%d" % k, timeout=600)
                    done += k
                fill_s = time.time() - tf
                if companion:
                    wait_prefilled(companion)
                chk = h.json("/socache-bench?op=check&lo=0&hi=%d&sample=%d"
                             % (n, min(n, 40000)), timeout=600)
                held = int(round(chk["found"] / chk["checked"] * n))
                # Hits: ids among the most recent quarter of what the cache holds.
                win = max(1, held // 4)
                fill = {"stored": n, "held": held, "fill_s": fill_s, "win": win,
                        "mutex": info["mutex"], "clock_ns": info["clock_ns"],
                        "check_bad": chk["bad"]}
                out["fill"]["%s/%d" % (prov, size)] = fill
                log("%s: mutex %s, stored %d in %.1f s, held ~%d, hit window %d"
                    % (label, info["mutex"], n, fill_s, held, win))
                cells = {c: [] for c in conc} if runs else {}
                for rep in range(reps if runs else 0):
                    for c in conc:
                        res = concurrent_runs(h, c, args.ms, win, args.mix, args.seed)
                        if res["distinct_pids"] != c:
                            log("  warning: %d requests served by %d children"
                                % (c, res["distinct_pids"]))
                        cells[c].append(res)
                        log("  rep %d, %d children: %s ops/s, hits found %.4f"
                            % (rep + 1, c, si(res["ops_s"]), res["hit_share"]))
                for c in cells:
                    rs = cells[c]
                    vals = sorted(r["ops_s"] for r in rs)
                    all_h = merge([list(r["hist_all"].items()) for r in rs])
                    hit_h = merge([list(r["hist_hit"].items()) for r in rs])
                    out["cells"]["%s/%d/%d" % (prov, size, c)] = {
                        "ops_s": vals,
                        "median": statistics.median(vals),
                        "p50_ns": percentile(all_h, 0.50),
                        "p99_ns": percentile(all_h, 0.99),
                        "hit_p50_ns": percentile(hit_h, 0.50),
                        "hit_p99_ns": percentile(hit_h, 0.99),
                        "hit_share": min(r["hit_share"] for r in rs),
                        "distinct_pids": min(r["distinct_pids"] for r in rs),
                        "bad": sum(r["bad"] for r in rs),
                        "miss_found": sum(r["miss_found"] for r in rs),
                        "store_failed": sum(r["store_failed"] for r in rs),
                        "lock_failures": sum(r["lock_failures"] for r in rs),
                    }
                if first:
                    out["first"]["%s/%d" % (prov, size)] = first_read(h, held, args, label)
                text = h.get("/socache-bench?op=status")
                out["status"]["%s/%d" % (prov, size)] = dict(
                    line.split(": ", 1) for line in text.splitlines() if ": " in line)
            finally:
                h.stop()
            log("%s: %.0f s" % (label, time.time() - t0))
    return out


def first_read(h, held, args, label):
    """Section 2: a first read over a full cache, in one child: fresh ids
    are stored into the full cache (the newest quarter of what it holds, so
    every one is held), then bench/mod_socache_bench's op=firstread reads a
    random sample of them once (first reads: never read before), again in
    another order (repeated reads) and once more after flushing the CPU
    caches. `args.repeats` repeats of at least `args.first_sample`
    retrieves per pass; each repeat reads ids none of the others read.
    Repeat k (1..) shuffles with seed ^ k; a small cache's round j of
    repeat k stores and reads with seed ^ (1000 * (k - 1) + j)."""
    f = max(1, held // 4)
    need = args.first_sample
    reps = args.repeats
    runs = []
    if f >= reps * need:
        # One fill; repeat k reads indices lo+k, lo+k+reps, ... (disjoint).
        lo, done = None, 0
        while done < f:
            k = min(200000, f - done)
            r = h.json("/socache-bench?op=fill&n=%d" % k, timeout=600)
            if lo is None:
                lo = r["first"]
            elif r["first"] != lo + done:
                h.fail("first read: fill not contiguous")
            done += k
        for rep in range(reps):
            r = h.json("/socache-bench?op=firstread&lo=%d&hi=%d&step=%d&offset=%d"
                       "&sample=%d&seed=%d" % (lo, lo + f, reps, rep, need, args.seed ^ (rep + 1)),
                       timeout=900)
            runs.append([r])
    else:
        # Small caches: rounds of (store f fresh ids, read them), in the
        # same request (so the same child), until `need` per pass.
        for rep in range(reps):
            rounds, got = [], 0
            while got < need:
                r = h.json("/socache-bench?op=firstread&n=%d&sample=0&seed=%d"
                           % (f, args.seed ^ (1000 * rep + len(rounds) + 1)), timeout=900)
                rounds.append(r)
                got += r["first"]["n"]
            runs.append(rounds)
    out = {"window": f, "reps": []}
    for rounds in runs:
        rep = {"rounds": len(rounds), "pids": sorted({r["pid"] for r in rounds}),
               "lock_failures": sum(r["lock_failures"] for r in rounds)}
        for name in ("harness", "first", "again", "cold"):
            ns = sum(r[name]["ns"] for r in rounds)
            n = sum(r[name]["n"] for r in rounds)
            found = sum(r[name]["found"] for r in rounds)
            rep[name] = {"ns_per": ns / n if n else float("nan"), "n": n,
                         "found_share": found / n if n else float("nan"),
                         "bad": sum(r[name]["bad"] for r in rounds)}
        out["reps"].append(rep)
    for name in ("harness", "first", "again", "cold"):
        vals = [x[name]["ns_per"] for x in out["reps"]]
        out[name] = {"median": statistics.median(vals), "all": vals,
                     "found_share": min(x[name]["found_share"] for x in out["reps"]),
                     "bad": sum(x[name]["bad"] for x in out["reps"])}
    log("%s: first read %.0f ns, repeated %.0f ns, repeated after flush %.0f ns per retrieve "
        "(harness %.0f ns), found %.4f / %.4f"
        % (label, out["first"]["median"], out["again"]["median"], out["cold"]["median"],
           out["harness"]["median"], out["first"]["found_share"], out["again"]["found_share"]))
    return out


def report1(r):
    """Section 1 in Markdown: the table, then ratios (figures, no verdicts)."""
    md = []
    sizes, conc = r["sizes"], r["children"]
    cells = r["cells"]
    md.append("### 1. Speed inside httpd, by cache size and concurrency\n")
    md.append("mod_socache_bench in each prefork child, mix %s (retrieve hit / "
              "retrieve miss / store), 32-byte ids, 160-byte values, each cache "
              "filled first (1.2 x its expected capacity stored); shmcb behind "
              "a global mutex like mod_ssl's (mechanism: %s). ops/s summed over "
              "the children; median of %d runs of %.1f s [min-max]; p50/p99 "
              "per operation over all runs (µs, clock_gettime around each call)."
              "\n" % (r["mix"].replace(",", "/"),
                      next(iter(v["mutex"] for k, v in r["fill"].items()
                                if k.startswith("shmcb/")), "?"),
                      r["repeats"], r["ms"] / 1000.0))
    md.append("| size | children | shm ops/s | shmcb ops/s | shm/shmcb | "
              "shm p50 / p99 µs | shmcb p50 / p99 µs | hit share shm / shmcb |")
    md.append("|---|---:|---:|---:|---:|---:|---:|---:|")
    for size in sizes:
        for c in conc:
            a = cells.get("shm/%d/%d" % (size, c))
            b = cells.get("shmcb/%d/%d" % (size, c))
            if not a or not b:
                continue
            ratio = a["median"] / b["median"]
            lo = min(a["ops_s"]) / max(b["ops_s"])
            hi = max(a["ops_s"]) / min(b["ops_s"])
            md.append("| %s | %d | %s [%s-%s] | %s [%s-%s] | **%.1fx** [%.1f-%.1f] | "
                      "%s / %s | %s / %s | %.3f / %.3f |" % (
                          human_bytes(size), c,
                          si(a["median"]), si(min(a["ops_s"])), si(max(a["ops_s"])),
                          si(b["median"]), si(min(b["ops_s"])), si(max(b["ops_s"])),
                          ratio, lo, hi,
                          us(a["p50_ns"]), us(a["p99_ns"]),
                          us(b["p50_ns"]), us(b["p99_ns"]), a["hit_share"], b["hit_share"]))
    md.append("")
    md.append("| size | provider | stored | held (sampled) | fill time |")
    md.append("|---|---|---:|---:|---:|")
    for size in sizes:
        for p in PROVIDERS:
            f = r["fill"].get("%s/%d" % (p, size))
            if f:
                md.append("| %s | %s | %d | %d | %.1f s |" % (
                    human_bytes(size), p, f["stored"], f["held"], f["fill_s"]))
    md.append("")

    small = cells.get("shm/%d/1" % KB512)
    big = cells.get("shm/%d/1" % (256 * MIB))
    if small and big:
        md.append("- shm cost per op at 256 MiB over its cost at 512000 B (1 child): %.2fx "
                  "(%.0f vs %.0f ns per op; hit p50 %s vs %s µs)." % (
                      small["median"] / big["median"], 1e9 / big["median"],
                      1e9 / small["median"], us(big["hit_p50_ns"]), us(small["hit_p50_ns"])))
    for size in sizes:
        one = cells.get("shm/%d/1" % size)
        two = cells.get("shm/%d/2" % size)
        if one and two:
            md.append("- shm ops/s with 2 children over 1 child at %s: %.2fx."
                      % (human_bytes(size), two["median"] / one["median"]))
    md.append("")
    return md


def report2(r):
    """Section 2 in Markdown: r is {"sizes", "first_sample", "cells"}."""
    first = r.get("cells") or {}
    if not first:
        return []
    sizes = [s for s in r["sizes"] if "shm/%d" % s in first and "shmcb/%d" % s in first]
    any_cell = next(iter(first.values()))
    md = ["### 2. A first read over a full cache, one child\n",
          "The cache full (section 1's fill and runs), then W fresh ids stored "
          "(the newest quarter of what the cache holds) and, in one child, a "
          "random sample of them retrieved once: **first read** (never read "
          "before), then the same ids again in another order: **repeated "
          "read**, then once more after walking a 64 MiB buffer (CPU caches "
          "flushed). Each pass timed as a whole (one clock pair around it), "
          "ns per retrieve; the harness alone (ids made, no call) is its own "
          "column and included in every figure. shmcb behind the same global "
          "mutex as section 1. %d repeats of at least %d retrieves per pass, "
          "each repeat over ids no other read: median [min-max].\n"
          % (len(any_cell["reps"]), r.get("first_sample", 20000)),
          "| size | provider | W | first read ns | repeated ns | repeated, caches flushed, ns "
          "| harness ns | found (first / repeated) |",
          "|---|---|---:|---:|---:|---:|---:|---:|"]

    def rng(c):
        return "%.0f [%.0f-%.0f]" % (c["median"], min(c["all"]), max(c["all"]))

    for size in sizes:
        for prov in PROVIDERS:
            c = first["%s/%d" % (prov, size)]
            md.append("| %s | %s | %d | %s | %s | %s | %.0f | %.4f / %.4f |" % (
                human_bytes(size), prov, c["window"], rng(c["first"]), rng(c["again"]),
                rng(c["cold"]), c["harness"]["median"], c["first"]["found_share"],
                c["again"]["found_share"]))
    md += ["", "| size | first read: shm speed / shmcb | repeated: shm / shmcb | "
           "flushed: shm / shmcb | shm first / repeated cost |", "|---|---:|---:|---:|---:|"]
    for size in sizes:
        a, b = first["shm/%d" % size], first["shmcb/%d" % size]
        x = {n: b[n]["median"] / a[n]["median"] for n in ("first", "again", "cold")}
        lo = min(b["first"]["all"]) / max(a["first"]["all"])
        hi = max(b["first"]["all"]) / min(a["first"]["all"])
        md.append("| %s | **%.1fx** [%.1f-%.1f] | %.1fx | %.1fx | %.2f |" % (
            human_bytes(size), x["first"], lo, hi, x["again"], x["cold"],
            a["first"]["median"] / a["again"]["median"]))
    md.append("")
    small, big = first.get("shm/%d" % KB512), first.get("shm/%d" % (256 * MIB))
    if small and big:
        for name, what in (("first", "first read"), ("again", "repeated read")):
            cost = big[name]["median"] / small[name]["median"]
            md.append("- shm retrieve cost at 256 MiB over its cost at 512000 B (%s, 1 child): "
                      "%.2fx (%.0f vs %.0f ns)." % (what, cost, big[name]["median"],
                                                   small[name]["median"]))
    md.append("")
    return md


# ---------------------------------------------------------------------------
# Section 4: sessions per MiB and hit rate (at equal memory)
# ---------------------------------------------------------------------------

def section4(args):
    sizes = [KB512, 4 * MIB]
    out = {"cells": {}}
    for size in sizes:
        d = 10 * size // 210          # ~10x more distinct sessions than fit
        warm = max(200000, 2 * d)
        attempts = 1000000 if not args.quick else 300000
        for prov in PROVIDERS:
            label = "section 4 %s %s" % (prov, human_bytes(size))
            h = bench_httpd(prov, size, label)
            try:
                r = h.json("/socache-bench?op=zipf&d=%d&warm=%d&a=%d&s=1.0&seed=%d"
                           % (d, warm, attempts, args.seed ^ 11), timeout=600)
            finally:
                h.stop()
            r["hit_rate"] = r["hits"] / r["attempts"]
            out["cells"]["%s/%d" % (prov, size)] = r
            log("%s: held %d of %d, hit rate %.4f (%.1f s + %.1f s)"
                % (label, r["held"], d, r["hit_rate"], r["fill_ns"] / 1e9, r["zipf_ns"] / 1e9))
    out["sizes"] = sizes
    return out


def oracle(held, d, s):
    """Hit rate of a cache that always holds the `held` most popular ids."""
    w = [1.0 / (k ** s) for k in range(1, d + 1)]
    return sum(w[:held]) / sum(w)


def report4(r):
    md = ["### 4. Sessions per MiB and hit rate\n",
          "One child; D distinct sessions (about 10x what fits) stored once, "
          "then the number still retrievable is counted (held); then "
          "resumption attempts pick a session with Zipf(s=1) popularity over "
          "the D (ranks shuffled over ids), a retrieve that misses stores "
          "the session again (a new full handshake). Hit rate over the "
          "measured attempts, after the warm-up attempts. Oracle: the hit "
          "rate of a cache always holding the shm-held number of most popular "
          "sessions (the bound for that many).\n",
          "| size | D distinct | attempts (warm-up) | shm held | shmcb held | shm/shmcb held | "
          "shm hit rate | shmcb hit rate | oracle |",
          "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
          ]
    for size in r["sizes"]:
        a = r["cells"].get("shm/%d" % size)
        b = r["cells"].get("shmcb/%d" % size)
        if not a or not b:
            continue
        md.append("| %s | %d | %d (%d) | %d | %d | %.2fx | %.4f | %.4f | %.4f |" % (
            human_bytes(size), a["d"], a["attempts"], a["warm"], a["held"], b["held"],
            a["held"] / max(1, b["held"]), a["hit_rate"], b["hit_rate"],
            oracle(a["held"], a["d"], a["s"])))
    md.append("")
    return md


# ---------------------------------------------------------------------------
# TLS instances (sections 5 and 3)
# ---------------------------------------------------------------------------

def make_cert(d):
    key = os.path.join(d, "key.pem")
    cert = os.path.join(d, "cert.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "2", "-subj", "/CN=localhost"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   timeout=WAIT)
    os.chmod(key, 0o644)
    return cert, key


def ssl_directives(certdir, cache):
    """The mod_ssl lines of a benchmark host: cert.pem and key.pem of
    certdir, TLS 1.2 and 1.3, no tickets, cache as its SSLSessionCache."""
    return """SSLEngine on
SSLCertificateFile "%s/cert.pem"
SSLCertificateKeyFile "%s/key.pem"
SSLProtocol -all +TLSv1.2 +TLSv1.3
SSLSessionTickets off
SSLSessionCache %s
SSLSessionCacheTimeout 300""" % (certdir, certdir, cache)


def start_tls(h):
    """Starts Httpd h, ready once it answers a TLS 1.2 request; returns h."""
    ctx = client_ctx("1.2")
    h.start(lambda: tls_get(h.port, ctx, None, timeout=2, host=h.host))
    return h


def tls_httpd(cache, label, children=10, extra="", modules=(), **kw):
    """mod_ssl on loopback; cache is an SSLSessionCache argument with {dir};
    `modules` more (name, path) to load, `kw` passed to Httpd (mpm, threads,
    host, port)."""
    body = ssl_directives("{dir}", cache) + "\n" + extra
    h = Httpd(label, body, children=children,
              modules=[("ssl_module", os.path.join(MODDIR, "mod_ssl.so"))] + (
                  [("socache_bench_module", BENCH_SO)] if "SocacheBench" in extra else [])
              + list(modules), **kw)
    make_cert(h.dir)
    return start_tls(h)


def client_ctx(version):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    v = ssl.TLSVersion.TLSv1_2 if version == "1.2" else ssl.TLSVersion.TLSv1_3
    ctx.minimum_version = v
    ctx.maximum_version = v
    return ctx


def recv_all(s, bufsize):
    """All that socket s receives until the peer closes."""
    data = b""
    while True:
        chunk = s.recv(bufsize)
        if not chunk:
            return data
        data += chunk


def tls_get(port, ctx, session, timeout=WAIT, host="127.0.0.1"):
    """One HTTPS request; returns (session, resumed)."""
    with socket.create_connection((host, port), timeout=timeout) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost", session=session) as s:
            s.sendall(b"GET /index.html HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            data = recv_all(s, 4096)
            if not data.startswith(b"HTTP/1.1 200"):
                raise RuntimeError("unexpected response %r" % data[:60])
            return s.session, s.session_reused


# ---------------------------------------------------------------------------
# Section 5: graceful restart
# ---------------------------------------------------------------------------

def section5(args):
    n = args.sessions
    out = {"n": n, "cells": {}}
    for prov in PROVIDERS:
        label = "section 5 %s" % prov
        h = tls_httpd("%s:{dir}/ssl_scache(512000)" % prov, label)
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=6)
        try:
            for ver in ("1.2", "1.3"):
                ctx = client_ctx(ver)
                # Control: sessions resumed without a restart.
                full = lambda _: tls_get(h.port, ctx, None)[0]
                resume = lambda s: tls_get(h.port, ctx, s)[1]
                ctl = list(pool.map(full, range(n // 5)))
                ctl_ok = sum(pool.map(resume, ctl))
                sessions = list(pool.map(full, range(n)))
                gens = h.generations()
                h.graceful()
                deadline = time.time() + WAIT
                while h.generations() <= gens and time.time() < deadline:
                    time.sleep(0.05)
                if h.generations() <= gens:
                    h.fail("no new generation after graceful")
                time.sleep(0.3)
                resumed = sum(pool.map(resume, sessions))
                cell = {"n": n, "resumed": resumed, "share": resumed / n,
                        "control_n": len(ctl), "control_resumed": ctl_ok}
                out["cells"]["%s/%s" % (prov, ver)] = cell
                log("%s TLS %s: control %d/%d, after graceful %d/%d"
                    % (label, ver, ctl_ok, len(ctl), resumed, n))
        finally:
            pool.shutdown()
            h.stop()
    return out


def report5(r):
    md = ["### 5. Graceful restart\n",
          "mod_ssl, `SSLSessionCache <provider>:<dir>/ssl_scache(512000)`, "
          "SSLSessionTickets off, prefork. N full handshakes (each session "
          "kept by the client), `apache2 -k graceful`, then every session "
          "offered once. Control: N/5 other sessions resumed without a "
          "restart, before it.\n",
          "| provider | TLS | N | resumed after graceful | share | control (no restart) |",
          "|---|---|---:|---:|---:|---:|"]
    for prov in PROVIDERS:
        for ver in ("1.2", "1.3"):
            c = r["cells"].get("%s/%s" % (prov, ver))
            if not c:
                continue
            md.append("| %s | %s | %d | %d | %.1f%% | %d/%d |" % (
                prov, ver, c["n"], c["resumed"], 100 * c["share"],
                c["control_resumed"], c["control_n"]))
    md.append("")
    return md


# ---------------------------------------------------------------------------
# Section 3: TLS handshakes end to end (bench/tls-load)
# ---------------------------------------------------------------------------

PREPARED = {}  # (provider, size) -> section 3's TLS httpd being / been prefilled


def tls_instance(prov, size, args):
    cache = "none" if prov == "none" else "%s:{dir}/ssl_scache(%d)" % (prov, size)
    extra = BENCH_SSL if prov != "none" else ""
    return tls_httpd(cache, "section 3 %s %s" % (prov, human_bytes(size)),
                     children=args.tls_children, extra=extra)


def start_prefilled(prov, size, args):
    """Start section 3's TLS httpd for (prov, size) and prefill mod_ssl's
    cache in a background thread (section 1 starts these next to its own fill of the
    same size, so the two slow shmcb fills overlap; the measurements never
    run while a fill does)."""
    key = (prov, size)
    if key in PREPARED:
        return PREPARED[key]
    slot = {"h": tls_instance(prov, size, args), "prefill": None, "error": None}

    def work():
        try:
            slot["prefill"] = prefill_ssl_cache(slot["h"], size)
        except Exception as e:  # reported by wait_prefilled
            slot["error"] = repr(e)

    slot["thread"] = threading.Thread(target=work, daemon=True)
    slot["thread"].start()
    PREPARED[key] = slot
    return slot


def wait_prefilled(slot):
    t = slot.get("thread")
    if t is None:
        return
    t.join(900)
    if t.is_alive() or slot["error"]:
        slot["h"].fail("prefill: %s" % (slot["error"] or "did not finish in 900 s"))


CLK_TCK = os.sysconf("SC_CLK_TCK")


def group_cpu_seconds(pgid):
    """CPU time (user + system) of every process in httpd's process group,
    plus what its parent has reaped from children that exited."""
    total = 0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                rest = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # rest[0] state, [1] ppid, [2] pgrp, [11] utime, [12] stime,
        # [13] cutime, [14] cstime
        if int(rest[2]) != pgid:
            continue
        total += int(rest[11]) + int(rest[12])
        if int(name) == pgid:
            total += int(rest[13]) + int(rest[14])
    return total / CLK_TCK


def tls_load(h, ver, args):
    cpu0 = group_cpu_seconds(h.proc.pid)
    cmd = [TLS_LOAD, "--port", str(h.port), "--tls", ver, "--clients",
           str(args.tls_clients), "--seconds", str(args.tls_seconds), "--json"]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=args.tls_seconds + 60)
    if p.returncode != 0:
        h.fail("tls-load: %s" % p.stderr.decode()[-2000:])
    res = json.loads(p.stdout.decode())
    cpu = group_cpu_seconds(h.proc.pid) - cpu0
    res["server_cpu_s"] = cpu
    res["server_cpu_us_per_conn"] = (1e6 * cpu / res["connections"]
                                     if res["connections"] else None)
    return res


def section3(args):
    if not os.path.exists(TLS_LOAD):
        log("section 3 skipped: %s not built" % TLS_LOAD)
        return None
    out = {"cells": {}, "status": {}, "reps": args.tls_reps, "clients": args.tls_clients,
           "children": args.tls_children, "seconds": args.tls_seconds}
    sizes = [int(x) for x in args.tls_sizes.split(",")]
    for size in sizes:
        provs = ["shm", "shmcb"] + (["none"] if size == KB512 else [])
        slots = {}
        try:
            for prov in provs:
                if size > KB512 and prov != "none":
                    slots[prov] = start_prefilled(prov, size, args)
                else:
                    slots[prov] = {"h": tls_instance(prov, size, args)}
            for prov, slot in slots.items():
                wait_prefilled(slot)
                if slot.get("prefill"):
                    out["cells"]["prefill/%s/%d" % (prov, size)] = slot["prefill"]
            # Interleaved: every repeat runs every provider in turn, so a
            # change in the machine's load hits all of them alike.
            runs = {}
            for rep in range(args.tls_reps):
                for ver in ("1.2", "1.3"):
                    for prov in provs:
                        res = tls_load(slots[prov]["h"], ver, args)
                        runs.setdefault((prov, ver), []).append(res)
                        log("section 3 %s %s TLS %s rep %d: %.0f handshakes/s, %.0f resumed/s, "
                            "share %s, errors %d" % (
                                prov, human_bytes(size), ver, rep + 1, res["handshakes_s"],
                                res["resumed_s"], res["resumption_share"], res["errors"]))
            for (prov, ver), rs in runs.items():
                by = sorted(rs, key=lambda x: x["resumed_s"] if prov != "none"
                            else x["handshakes_s"])
                mid = by[len(by) // 2]
                attempts = sum(x["attempts"] for x in rs)
                cell = dict(mid)
                cell.update({
                    "runs": rs,
                    "resumed_s_all": [x["resumed_s"] for x in rs],
                    "handshakes_s_all": [x["handshakes_s"] for x in rs],
                    "resumption_share": (sum(x["resumed"] for x in rs) / attempts
                                         if attempts else None),
                    "errors": sum(x["errors"] for x in rs),
                    "server_cpu_us_per_conn": (
                        1e6 * sum(x["server_cpu_s"] for x in rs)
                        / max(1, sum(x["connections"] for x in rs))),
                })
                out["cells"]["%s/%d/%s" % (prov, size, ver)] = cell
            for prov in provs:
                if prov != "none":
                    out["status"]["%s/%d" % (prov, size)] = tls_bench_status(slots[prov]["h"])
        finally:
            for prov, slot in slots.items():
                slot["h"].stop()
                PREPARED.pop((prov, size), None)
    out["sizes"] = sizes
    return out


BENCH_SSL = """SocacheBench ssl
<Location /socache-bench>
  SetHandler socache-bench
  Require all granted
</Location>"""


def prefill_ssl_cache(h, size):
    """Fill mod_ssl's own cache instance to capacity through the provider
    API (mod_socache_bench in `SocacheBench ssl` mode, under mod_ssl's
    mutex), with 1.2 x the expected capacity of fake 32 + 160 B sessions."""
    info = tls_bench_json(h, "/socache-bench?op=info")
    n = int(1.2 * size / 210)
    t = time.time()
    done = 0
    while done < n:
        k = min(200000, n - done)
        tls_bench_json(h, "/socache-bench?op=fill&n=%d" % k, timeout=600)
        done += k
    chk = tls_bench_json(h, "/socache-bench?op=check&lo=0&hi=%d&sample=%d"
                         % (n, min(n, 20000)), timeout=600)
    held = int(round(chk["found"] / chk["checked"] * n))
    log("%s: mod_ssl's %s cache prefilled: %d stored in %.1f s, ~%d held (mutex %s)"
        % (h.label, info["provider"], n, time.time() - t, held, info["mutex"]))
    return {"stored": n, "held": held, "fill_s": time.time() - t, "mutex": info["mutex"]}


def tls_bench_status(h):
    text = tls_bench_get(h, "/socache-bench?op=status")
    return dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)


def tls_bench_json(h, path, timeout=WAIT):
    return json.loads(tls_bench_get(h, path, timeout))


def tls_bench_get(h, path, timeout=WAIT):
    """GET over TLS (the TLS httpd has no plain listener)."""
    ctx = client_ctx("1.2")
    with socket.create_connection(("127.0.0.1", h.port), timeout=timeout) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(("GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
                       % path).encode())
            data = recv_all(s, 65536)
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        h.fail("GET %s: %r" % (path, head[:80]))
    return body.decode()


def fmt(x, f):
    return "-" if x is None or x != x else f % x


def report3(r):
    if not r:
        return ["### 3. TLS handshakes end to end\n", "Not run (bench/tls-load not built).\n"]
    md = ["### 3. TLS handshakes end to end\n",
          "bench/tls-load (Rust, openssl crate): %d virtual clients, each one full "
          "handshake then resumptions of its session (the newest one the server "
          "gave), one `GET` per connection; httpd prefork with %d children, "
          "SSLSessionTickets off. The large caches are first filled to capacity "
          "with fake sessions through the provider API (mod_socache_bench "
          "`SocacheBench ssl`: mod_ssl's own instance, under mod_ssl's mutex). "
          "%d interleaved runs of %d s per cell: median [min-max]; latencies "
          "(TCP connect + TLS handshake, client side) from the median run; "
          "resumption share over all runs. httpd CPU: user + system time of all "
          "httpd processes during the runs, per connection (the client shares "
          "the same 2 CPUs).\n" % (
              r.get("clients", 16), r.get("children", 16), r["reps"], r.get("seconds", 3)),
          "| size | provider | TLS | handshakes/s | resumed/s | resumption share | "
          "full p50 / p99 ms | resumed p50 / p99 ms | httpd CPU µs / conn | errors |",
          "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]

    def rng(v):
        return "%.0f [%.0f-%.0f]" % (statistics.median(v), min(v), max(v))

    for size in r["sizes"]:
        for prov in ["shm", "shmcb", "none"]:
            for ver in ("1.2", "1.3"):
                c = r["cells"].get("%s/%d/%s" % (prov, size, ver))
                if not c:
                    continue
                md.append("| %s | %s | %s | %s | %s | %s | %s / %s | %s / %s | %s | %d |" % (
                    human_bytes(size), prov, ver, rng(c["handshakes_s_all"]),
                    rng(c["resumed_s_all"]) if prov != "none" else "0",
                    fmt(c["resumption_share"], "%.4f"),
                    fmt(c["full_p50_ms"], "%.2f"), fmt(c["full_p99_ms"], "%.2f"),
                    fmt(c["resumed_p50_ms"], "%.2f"), fmt(c["resumed_p99_ms"], "%.2f"),
                    fmt(c["server_cpu_us_per_conn"], "%.0f"), c["errors"]))
    md.append("")
    for size in r["sizes"]:
        for prov in ("shm", "shmcb"):
            p = r["cells"].get("prefill/%s/%d" % (prov, size))
            if p:
                md.append("- %s %s prefill: %d fake sessions stored in %.1f s, ~%d held."
                          % (prov, human_bytes(size), p["stored"], p["fill_s"], p["held"]))
    md.append("")
    for ver in ("1.2", "1.3"):
        for size in r["sizes"]:
            a = r["cells"].get("shm/%d/%s" % (size, ver))
            b = r["cells"].get("shmcb/%d/%s" % (size, ver))
            if not (a and b):
                continue
            x = statistics.median(a["resumed_s_all"]) / statistics.median(b["resumed_s_all"])
            lo = min(a["resumed_s_all"]) / max(b["resumed_s_all"])
            hi = max(a["resumed_s_all"]) / min(b["resumed_s_all"])
            md.append("- shm resumed/s over shmcb's at %s, TLS %s: %.2fx (medians; runs "
                      "%.2f-%.2fx); httpd CPU per connection %s vs %s µs." % (
                          human_bytes(size), ver, x, lo, hi,
                          fmt(a["server_cpu_us_per_conn"], "%.0f"),
                          fmt(b["server_cpu_us_per_conn"], "%.0f")))
    md.append("")
    return md


# ---------------------------------------------------------------------------

def recorded_commit():
    """HEAD's short hash, with "-dirty" when tracked files differ from it
    (as `git describe --dirty` says it)."""
    def git(*argv):
        return subprocess.run(["git", "-C", ROOT] + list(argv), stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, timeout=10)
    commit = git("rev-parse", "--short", "HEAD").stdout.decode().strip() or "?"
    git("update-index", "-q", "--refresh")
    if git("diff-index", "--quiet", "HEAD", "--").returncode != 0:
        commit += "-dirty"
    return commit


def machine():
    model = "?"
    try:
        out = subprocess.run(["lscpu"], stdout=subprocess.PIPE, timeout=10).stdout.decode()
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    apache = subprocess.run([APACHE, "-v"], stdout=subprocess.PIPE,
                            timeout=10).stdout.decode().splitlines()[0]
    commit = recorded_commit()
    try:
        with open("/sys/kernel/mm/transparent_hugepage/shmem_enabled") as f:
            thp = f.read().strip()
    except OSError:
        thp = "?"
    return {"cpu": model, "nproc": os.cpu_count(), "kernel": platform.release(),
            "apache": apache, "openssl": ssl.OPENSSL_VERSION, "commit": commit,
            "load_before": os.getloadavg(), "shmem_thp": thp}


# The sections in the order they run (see the docstring), and in the order
# the report lists them.
RUN_ORDER = ["1", "2", "4", "5", "3"]
REPORT_ORDER = ["1", "2", "3", "4", "5"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sections", default="1,2,3,4,5",
                    help="which of BENCHMARKS.md's sections 1-5 to measure")
    ap.add_argument("--quick", action="store_true", help="short runs, for trying it out")
    ap.add_argument("--seed", type=int, default=0,
                    help="base of every random stream (child k: seed ^ k)")
    ap.add_argument("--ms", type=int, default=1500, help="section 1: ms per run")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--mix", default="80,10,10")
    ap.add_argument("--first-sample", type=int, default=20000,
                    help="section 2: retrieves per pass and repeat (first read)")
    ap.add_argument("--sessions", type=int, default=500, help="section 5: N")
    ap.add_argument("--tls-clients", type=int, default=16)
    ap.add_argument("--tls-children", type=int, default=16)
    ap.add_argument("--tls-seconds", type=int, default=3)
    ap.add_argument("--tls-reps", type=int, default=3)
    ap.add_argument("--tls-sizes", default="%d,%d" % (KB512, 256 * MIB),
                    help="section 3: cache sizes (bytes); all but 512000 are prefilled")
    ap.add_argument("--out", default=None,
                    help="default bench/results.md (--quick: bench/results-quick.md)")
    args = ap.parse_args()
    if args.out is None:
        args.out = os.path.join(ROOT, "bench", "results-quick.md" if args.quick else "results.md")
    if args.quick:
        args.ms = min(args.ms, 500)
        args.repeats = min(args.repeats, 2)
        args.sessions = min(args.sessions, 100)
        args.first_sample = min(args.first_sample, 5000)
        args.tls_seconds = min(args.tls_seconds, 2)
        args.tls_reps = min(args.tls_reps, 2)
        if args.tls_sizes == "%d,%d" % (KB512, 256 * MIB):
            args.tls_sizes = "%d,%d" % (KB512, 64 * MIB)
    wanted = {x.strip() for x in args.sections.split(",") if x.strip()}
    unknown = wanted - set(REPORT_ORDER)
    if unknown:
        sys.exit("unknown section(s) %s: BENCHMARKS.md's sections 1-5" % ",".join(sorted(unknown)))
    for path in (SHM_SO, BENCH_SO):
        if not os.path.exists(path):
            sys.exit("missing %s (run `make bench`)" % path)

    args.section_list = sorted(wanted)
    args.tls_large = [int(x) for x in args.tls_sizes.split(",") if int(x) > KB512]
    t0 = time.time()
    mach = machine()
    log("machine: %s" % mach)
    results = {"machine": mach, "args": vars(args)}
    reports = {}
    for n in RUN_ORDER:
        if n not in wanted or n in reports:
            continue
        tn = time.time()
        if n in ("1", "2"):
            r = section1(args)
            first = r.pop("first")
            if "1" in wanted:
                results["section1"] = r
                reports["1"] = report1(r)
            if "2" in wanted:
                results["section2"] = {"sizes": r["sizes"], "first_sample": r["first_sample"],
                                       "cells": first}
                reports["2"] = report2(results["section2"])
        elif n == "4":
            results["section4"] = section4(args)
            reports["4"] = report4(results["section4"])
        elif n == "5":
            results["section5"] = section5(args)
            reports["5"] = report5(results["section5"])
        elif n == "3":
            results["section3"] = section3(args)
            reports["3"] = report3(results["section3"])
        log("section %s: %.0f s" % ("1, 2" if n in ("1", "2") else n, time.time() - tn))
    sections = [line for n in REPORT_ORDER if n in reports for line in reports[n]]
    elapsed = time.time() - t0
    mach["load_after"] = os.getloadavg()

    md = ["## Results of `make bench` (bench/run.py)\n",
          "Machine: %s, %d CPUs (nproc), Linux %s, %s, %s; shmem huge pages "
          "`%s`; repository at %s. "
          "Load average (1 min) before the run: %.2f (the run itself then "
          "keeps up to ~30 threads runnable). Total %.0f s. Seed %d (child k "
          "of a run: %d ^ k).\n" % (
              mach["cpu"], mach["nproc"], mach["kernel"], mach["apache"],
              mach["openssl"], mach["shmem_thp"], mach["commit"],
              mach["load_before"][0], elapsed, args.seed, args.seed),
          "Command: `%s`\n" % ("make bench" + (" BENCH_ARGS=\"%s\"" % " ".join(sys.argv[1:])
                                                 if len(sys.argv) > 1 else "")
                                  if os.environ.get("MAKELEVEL") else
                                  "python3 bench/run.py " + " ".join(sys.argv[1:]))]
    md += sections
    text = "\n".join(md)
    with open(args.out, "w") as f:
        f.write(text)
    json_path = os.path.splitext(args.out)[0] + ".json"
    with open(json_path, "w") as f:
        json.dump(results, f, indent=1, default=str)
    if "section1" in results or "section2" in results:
        png = os.path.splitext(args.out)[0] + ".png"
        try:
            sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
            import plot
            if plot.plot(json_path, png):
                text += "\n![ops/s and p50 against cache size](%s)\n" % os.path.basename(png)
                with open(args.out, "w") as f:
                    f.write(text)
                log("wrote %s" % png)
        except ImportError:
            log("no plot: matplotlib is not installed (pip install matplotlib)")
    print(text)
    log("wrote %s (%.0f s)" % (args.out, elapsed))


if __name__ == "__main__":
    main()
