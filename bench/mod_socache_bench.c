/* mod_socache_bench: drive any socache provider from inside httpd children,
 * the way mod_ssl drives its session cache. A benchmark tool, built by
 * `make bench` (bench/run.py), never installed.
 *
 * Configuration:
 *
 *   LoadModule socache_bench_module /path/mod_socache_bench.so
 *   SocacheBench shmcb /dir/cache(512000)     provider name, then its argument
 *   (or SocacheBench ssl: drive mod_ssl's own session cache instance, under
 *    mod_ssl's own mutex, e.g. to prefill it for a TLS benchmark; found
 *    through mod_ssl's process-lifetime config record, whose leading fields
 *    have been the same in all of 2.4 and are checked before use)
 *   <Location /socache-bench>
 *     SetHandler socache-bench
 *     Require all granted
 *   </Location>
 *
 * The instance is created while the directive is parsed (create), and
 * initialised in post_config in the parent with mod_ssl's hints (30/150/30)
 * before the children fork, skipped on the first startup pass like
 * mod_ssl's. For a provider flagged AP_SOCACHE_FLAG_NOTMPSAFE (shmcb) a
 * global mutex of type "socache-bench" is created like mod_ssl's
 * "ssl-cache" (ap_global_mutex_create, the Mutex directive's default
 * mechanism unless configured), re-attached in child_init, and taken around
 * every provider call, as ssl_scache.c does.
 *
 * Ids are 32 bytes derived from (namespace, index) by a mixing function, so
 * every child computes the same id for an index; values are 160 bytes
 * whose first 8 bytes tag the index (a hit is checked against it).
 * An anonymous shared counter (`next`) hands out fresh store indices to all
 * children; "recent" ids are those just below it.
 *
 * Every random choice comes from the request's seed=X alone (bench/run.py
 * gives child k of a run seed ^ k), so a rerun draws the same ids.
 *
 * Requests (GET /socache-bench?op=...; plain JSON answers):
 *   op=info                        provider, flags, mutex, pid, next, timer cost
 *   op=fill&n=N                    store N fresh ids (indices next..next+N-1)
 *   op=check&lo=A&hi=B&sample=S    how many of S evenly spread indices of
 *                                  [A,B) are retrievable (S=0: all)
 *   op=run&ms=D&mix=H,M,S&win=W&at=T&seed=X
 *                                  for D ms (starting at CLOCK_REALTIME ms T
 *                                  if given): H% retrieves of a random one
 *                                  of the W ids below `next` (hits), M%
 *                                  retrieves of random never-stored ids
 *                                  (misses), S% stores of fresh ids; every
 *                                  op timed with clock_gettime; answers op
 *                                  counts and latency histograms
 *   op=firstread&n=F&sample=S&step=K&offset=O&seed=X  (or lo=A&hi=B, n=0)
 *                                  a first read over a full cache: store F
 *                                  fresh ids (or take the stored window
 *                                  [A,B)), pick S of the window's indices
 *                                  O, O+K, O+2K, ... in a random order, then
 *                                  pass 1: retrieve each once (never read
 *                                  before: first reads), pass 2: the same
 *                                  ids again in another order (repeated
 *                                  reads), pass 3: again after walking a
 *                                  64 MiB buffer (CPU caches flushed); each
 *                                  pass timed as a whole (one clock pair),
 *                                  plus the harness alone (ids made, no
 *                                  retrieve); answers ns and found per pass
 *   op=status                      the provider's status (?auto form)
 *   op=zipf&d=D&warm=W&a=A&s=1.0&seed=X
 *                                  D distinct ids stored once, held counted
 *                                  (all D checked), then W unmeasured and A
 *                                  measured attempts: pick id k with Zipf(s)
 *                                  popularity over D, retrieve, store on a
 *                                  miss (a TLS server makes a new session);
 *                                  answers held and the hit rate
 */

#include "httpd.h"
#include "http_config.h"
#include "http_core.h"
#include "http_log.h"
#include "http_protocol.h"
#include "http_request.h"
#include "ap_provider.h"
#include "ap_socache.h"
#include "ap_mpm.h"
#include "mod_status.h"
#include "util_mutex.h"

#include "apr_global_mutex.h"
#include "apr_shm.h"
#include "apr_strings.h"

#include <math.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BENCH_MUTEX_TYPE "socache-bench"
#define ID_LEN 32
#define VALUE_LEN 160
#define EXPIRY_SECONDS 3600

/* Namespaces of ids: fill/run stores, run misses, zipf. */
#define NS_STORE 0x5354ULL
#define NS_MISS 0x4d49ULL
#define NS_ZIPF 0x5a49ULL

/* Latency histogram: exact below 32 ns, then 32 buckets per power of two. */
#define HIST_SUB 32
#define HIST_BUCKETS (HIST_SUB + 40 * HIST_SUB)

module AP_MODULE_DECLARE_DATA socache_bench_module;

typedef struct {
    volatile uint64_t next;     /* next fresh store index */
} bench_shared;

/* The leading fields of mod_ssl's SSLModConfigRec (ssl_private.h), the same
 * throughout httpd 2.4. mod_ssl keeps the record in its process pool's
 * userdata under "ssl_module". */
typedef struct {
    pid_t pid;
    apr_pool_t *pPool;
    unsigned int bFixed;
    long sesscache_mode;
    const ap_socache_provider_t *sesscache;
    ap_socache_instance_t *sesscache_context;
    apr_global_mutex_t *pMutex;
} ssl_mod_config_head;

typedef struct {
    const char *provider_name;
    const char *arg;
    const ap_socache_provider_t *provider;
    ap_socache_instance_t *instance;
    int initialised;
    apr_global_mutex_t *mutex;  /* only for NOTMPSAFE providers */
    ssl_mod_config_head *ssl;   /* SocacheBench ssl: mod_ssl's record */
    apr_shm_t *shm;
    bench_shared *shared;
} bench_conf;

/* One per httpd (the directive is global, like SSLSessionCache). */
static bench_conf *bench;

/* ------------------------------------------------------------------------ */
/* ids, values, randomness                                                   */

static uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static void make_id(unsigned char *id, uint64_t ns, uint64_t index)
{
    uint64_t w[4];
    int j;
    for (j = 0; j < 4; j++) {
        w[j] = mix64((index << 2 | (uint64_t)j) ^ (ns << 48) ^ 0x6a09e667f3bcc908ULL);
    }
    memcpy(id, w, ID_LEN);
}

static void make_value(unsigned char *v, uint64_t ns, uint64_t index)
{
    uint64_t tag = mix64(index ^ (ns << 52) ^ 0x3c6ef372fe94f82bULL);
    int i;
    for (i = 0; i < VALUE_LEN; i++) {
        v[i] = (unsigned char)(0x30 + i);
    }
    memcpy(v, &tag, 8);
}

static int value_matches(const unsigned char *v, unsigned int len, uint64_t ns,
                         uint64_t index)
{
    uint64_t tag = mix64(index ^ (ns << 52) ^ 0x3c6ef372fe94f82bULL);
    return len == VALUE_LEN && memcmp(v, &tag, 8) == 0;
}

typedef struct {
    uint64_t s;
} rng_t;

static uint64_t rng_next(rng_t *r)
{
    /* xorshift64* */
    r->s ^= r->s >> 12;
    r->s ^= r->s << 25;
    r->s ^= r->s >> 27;
    return r->s * 0x2545f4914f6cdd1dULL;
}

static void rng_seed(rng_t *r, uint64_t seed)
{
    r->s = mix64(seed) | 1;
}

static double rng_unit(rng_t *r)
{
    return (double)(rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static uint64_t realtime_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000ULL + (uint64_t)ts.tv_nsec / 1000000ULL;
}

/* ------------------------------------------------------------------------ */
/* Provider calls, under the global mutex when the provider needs one
 * (ssl_scache.c: ssl_mutex_on / ssl_mutex_off around each call).          */

typedef struct {
    server_rec *s;
    apr_pool_t *pool;
    unsigned long lock_failures;
} call_ctx;

static apr_global_mutex_t *the_mutex(void)
{
    if (bench->ssl) {
        /* mod_ssl's "ssl-cache" mutex, re-attached by its child_init. */
        return (bench->provider->flags & AP_SOCACHE_FLAG_NOTMPSAFE) ? bench->ssl->pMutex : NULL;
    }
    return bench->mutex;
}

static int lock_on(call_ctx *c)
{
    apr_status_t rv;
    apr_global_mutex_t *m = the_mutex();
    if (!m) {
        return 1;
    }
    rv = apr_global_mutex_lock(m);
    if (rv != APR_SUCCESS) {
        /* mod_ssl logs AH02026 and calls the provider anyway. */
        c->lock_failures++;
        return 0;
    }
    return 1;
}

static void lock_off(int locked)
{
    apr_global_mutex_t *m = the_mutex();
    if (m && locked) {
        apr_global_mutex_unlock(m);
    }
}

static apr_status_t do_store(call_ctx *c, const unsigned char *id,
                             const unsigned char *value, apr_time_t expiry)
{
    apr_status_t rv;
    int locked = lock_on(c);
    rv = bench->provider->store(bench->instance, c->s, id, ID_LEN, expiry,
                                (unsigned char *)value, VALUE_LEN, c->pool);
    lock_off(locked);
    return rv;
}

static apr_status_t do_retrieve(call_ctx *c, const unsigned char *id,
                                unsigned char *dest, unsigned int *destlen)
{
    apr_status_t rv;
    int locked = lock_on(c);
    rv = bench->provider->retrieve(bench->instance, c->s, id, ID_LEN, dest,
                                   destlen, c->pool);
    lock_off(locked);
    return rv;
}

/* Stores entries [lo, hi) of namespace ns (clearing the call pool every 4096
 * stores); returns how many stores failed. */
static uint64_t store_range(call_ctx *c, uint64_t ns, uint64_t lo, uint64_t hi,
                            apr_time_t expiry)
{
    unsigned char id[ID_LEN], value[VALUE_LEN];
    uint64_t k, failed = 0;
    for (k = lo; k < hi; k++) {
        make_id(id, ns, k);
        make_value(value, ns, k);
        if (do_store(c, id, value, expiry) != APR_SUCCESS) {
            failed++;
        }
        if ((k & 4095) == 0) {
            apr_pool_clear(c->pool);
        }
    }
    return failed;
}

/* Retrieves id (made by make_id from ns and index) and checks its value:
 * counts one in *found (unless NULL) when it is the entry's own, in *bad
 * when it is another; a miss counts nowhere. Returns 1 for its own value. */
static int lookup(call_ctx *c, const unsigned char *id, uint64_t ns,
                  uint64_t index, uint64_t *found, uint64_t *bad)
{
    unsigned char dest[1024];
    unsigned int len = sizeof(dest);
    if (do_retrieve(c, id, dest, &len) != APR_SUCCESS) {
        return 0;
    }
    if (!value_matches(dest, len, ns, index)) {
        (*bad)++;
        return 0;
    }
    if (found) {
        (*found)++;
    }
    return 1;
}

/* ------------------------------------------------------------------------ */
/* Histograms                                                                */

static unsigned int hist_bucket(uint64_t v)
{
    unsigned int e, sub, b;
    if (v < HIST_SUB) {
        return (unsigned int)v;
    }
    e = 63 - (unsigned int)__builtin_clzll(v);         /* >= 5 */
    sub = (unsigned int)(v >> (e - 5)) - HIST_SUB;     /* 0..31 */
    b = HIST_SUB + (e - 5) * HIST_SUB + sub;
    return b < HIST_BUCKETS ? b : HIST_BUCKETS - 1;
}

static void hist_print(request_rec *r, const char *name, const uint64_t *h)
{
    int b, first = 1;
    ap_rprintf(r, "\"%s\":[", name);
    for (b = 0; b < HIST_BUCKETS; b++) {
        if (h[b]) {
            ap_rprintf(r, "%s[%d,%" APR_UINT64_T_FMT "]", first ? "" : ",", b, h[b]);
            first = 0;
        }
    }
    ap_rputs("]", r);
}

/* ------------------------------------------------------------------------ */
/* Query parsing                                                             */

static const char *qarg(request_rec *r, const char *name)
{
    const char *q = r->args;
    size_t n = strlen(name);
    while (q && *q) {
        const char *amp = strchr(q, '&');
        size_t len = amp ? (size_t)(amp - q) : strlen(q);
        if (len > n && strncmp(q, name, n) == 0 && q[n] == '=') {
            return apr_pstrndup(r->pool, q + n + 1, len - n - 1);
        }
        q = amp ? amp + 1 : NULL;
    }
    return NULL;
}

static uint64_t qnum(request_rec *r, const char *name, uint64_t dflt)
{
    const char *v = qarg(r, name);
    return v ? (uint64_t)apr_strtoi64(v, NULL, 10) : dflt;
}

/* ------------------------------------------------------------------------ */
/* Operations                                                                */

static void op_info(request_rec *r)
{
    uint64_t t0, t1;
    int i;
    t0 = now_ns();
    for (i = 0; i < 100000; i++) {
        (void)now_ns();
    }
    t1 = now_ns();
    ap_rprintf(r,
               "{\"op\":\"info\",\"provider\":\"%s\",\"arg\":\"%s\",\"flags\":%u,"
               "\"notmpsafe\":%d,\"mutex\":\"%s\",\"pid\":%ld,\"next\":%"
               APR_UINT64_T_FMT ",\"clock_ns\":%.1f}\n",
               bench->provider_name, bench->arg ? bench->arg : "",
               bench->provider->flags,
               (bench->provider->flags & AP_SOCACHE_FLAG_NOTMPSAFE) ? 1 : 0,
               the_mutex() ? apr_global_mutex_name(the_mutex()) : "none",
               (long)getpid(), bench->shared->next, (double)(t1 - t0) / 100000.0);
}

static void op_fill(request_rec *r, call_ctx *c)
{
    uint64_t n = qnum(r, "n", 1000), i, failed = 0;
    uint64_t first = __atomic_fetch_add(&bench->shared->next, n, __ATOMIC_RELAXED);
    unsigned char id[ID_LEN], value[VALUE_LEN];
    apr_time_t expiry = apr_time_now() + apr_time_from_sec(EXPIRY_SECONDS);
    uint64_t t0 = now_ns(), t1;
    for (i = 0; i < n; i++) {
        make_id(id, NS_STORE, first + i);
        make_value(value, NS_STORE, first + i);
        if (do_store(c, id, value, expiry) != APR_SUCCESS) {
            failed++;
        }
    }
    t1 = now_ns();
    ap_rprintf(r,
               "{\"op\":\"fill\",\"pid\":%ld,\"first\":%" APR_UINT64_T_FMT
               ",\"n\":%" APR_UINT64_T_FMT ",\"failed\":%" APR_UINT64_T_FMT
               ",\"elapsed_ns\":%" APR_UINT64_T_FMT ",\"lock_failures\":%lu}\n",
               (long)getpid(), first, n, failed, t1 - t0, c->lock_failures);
}

static void op_check(request_rec *r, call_ctx *c)
{
    uint64_t lo = qnum(r, "lo", 0), hi = qnum(r, "hi", bench->shared->next);
    uint64_t sample = qnum(r, "sample", 0), span, k, checked = 0, found = 0, bad = 0;
    unsigned char id[ID_LEN];
    uint64_t t0 = now_ns(), t1;
    if (hi < lo) {
        hi = lo;
    }
    span = hi - lo;
    if (sample == 0 || sample > span) {
        sample = span;
    }
    for (k = 0; k < sample; k++) {
        /* evenly spread over [lo, hi) */
        uint64_t idx = lo + (sample == span ? k : (uint64_t)((double)k * span / sample));
        make_id(id, NS_STORE, idx);
        checked++;
        lookup(c, id, NS_STORE, idx, &found, &bad);
    }
    t1 = now_ns();
    ap_rprintf(r,
               "{\"op\":\"check\",\"pid\":%ld,\"lo\":%" APR_UINT64_T_FMT
               ",\"hi\":%" APR_UINT64_T_FMT ",\"checked\":%" APR_UINT64_T_FMT
               ",\"found\":%" APR_UINT64_T_FMT ",\"bad\":%" APR_UINT64_T_FMT
               ",\"elapsed_ns\":%" APR_UINT64_T_FMT "}\n",
               (long)getpid(), lo, hi, checked, found, bad, t1 - t0);
}

static void op_run(request_rec *r, call_ctx *c)
{
    uint64_t ms = qnum(r, "ms", 1000), at = qnum(r, "at", 0);
    uint64_t win = qnum(r, "win", 1000), seed = qnum(r, "seed", 1);
    const char *mix = qarg(r, "mix");
    unsigned int p_hit = 80, p_miss = 10, p_store = 10;
    uint64_t *h_hit, *h_miss, *h_store;
    uint64_t n_hit = 0, n_miss = 0, n_store = 0, found_hit = 0, found_miss = 0;
    uint64_t bad = 0, store_failed = 0, ops = 0, t_start, t_end, t, t1;
    unsigned char id[ID_LEN], value[VALUE_LEN], dest[1024];
    apr_time_t expiry = apr_time_now() + apr_time_from_sec(EXPIRY_SECONDS);
    rng_t rng;

    if (mix && sscanf(mix, "%u,%u,%u", &p_hit, &p_miss, &p_store) != 3) {
        p_hit = 80, p_miss = 10, p_store = 10;
    }
    if (p_hit + p_miss + p_store == 0) {
        p_hit = 100;
    }
    if (win < 1) {
        win = 1;
    }
    h_hit = apr_pcalloc(r->pool, sizeof(uint64_t) * HIST_BUCKETS);
    h_miss = apr_pcalloc(r->pool, sizeof(uint64_t) * HIST_BUCKETS);
    h_store = apr_pcalloc(r->pool, sizeof(uint64_t) * HIST_BUCKETS);
    rng_seed(&rng, seed);
    make_value(value, NS_STORE, 0);

    /* Start together with the other children of this round (bounded wait). */
    if (at) {
        uint64_t now = realtime_ms();
        if (at > now && at - now < 5000) {
            apr_sleep(apr_time_from_msec(at - now));
        }
    }

    t_start = now_ns();
    t_end = t_start + ms * 1000000ULL;
    t = t_start;
    while (t < t_end) {
        unsigned int pick = (unsigned int)(rng_next(&rng) % (p_hit + p_miss + p_store));
        if (pick < p_hit) {
            uint64_t next = __atomic_load_n(&bench->shared->next, __ATOMIC_RELAXED);
            uint64_t w = win < next ? win : next;
            uint64_t idx = next - 1 - (w ? rng_next(&rng) % w : 0);
            unsigned int len = sizeof(dest);
            apr_status_t rv;
            make_id(id, NS_STORE, idx);
            t = now_ns();
            rv = do_retrieve(c, id, dest, &len);
            t1 = now_ns();
            h_hit[hist_bucket(t1 - t)]++;
            n_hit++;
            if (rv == APR_SUCCESS) {
                if (value_matches(dest, len, NS_STORE, idx)) {
                    found_hit++;
                }
                else {
                    bad++;
                }
            }
        }
        else if (pick < p_hit + p_miss) {
            uint64_t idx = rng_next(&rng);
            unsigned int len = sizeof(dest);
            make_id(id, NS_MISS, idx);
            t = now_ns();
            if (do_retrieve(c, id, dest, &len) == APR_SUCCESS) {
                found_miss++;
            }
            t1 = now_ns();
            h_miss[hist_bucket(t1 - t)]++;
            n_miss++;
        }
        else {
            uint64_t idx = __atomic_fetch_add(&bench->shared->next, 1, __ATOMIC_RELAXED);
            make_id(id, NS_STORE, idx);
            make_value(value, NS_STORE, idx);
            t = now_ns();
            if (do_store(c, id, value, expiry) != APR_SUCCESS) {
                store_failed++;
            }
            t1 = now_ns();
            h_store[hist_bucket(t1 - t)]++;
            n_store++;
        }
        ops++;
        t = t1;
        if ((ops & 4095) == 0) {
            apr_pool_clear(c->pool);
        }
    }

    ap_rprintf(r,
               "{\"op\":\"run\",\"pid\":%ld,\"provider\":\"%s\",\"ops\":%" APR_UINT64_T_FMT
               ",\"elapsed_ns\":%" APR_UINT64_T_FMT ",\"hit_ops\":%" APR_UINT64_T_FMT
               ",\"hit_found\":%" APR_UINT64_T_FMT ",\"miss_ops\":%" APR_UINT64_T_FMT
               ",\"miss_found\":%" APR_UINT64_T_FMT ",\"store_ops\":%" APR_UINT64_T_FMT
               ",\"store_failed\":%" APR_UINT64_T_FMT ",\"bad\":%" APR_UINT64_T_FMT
               ",\"lock_failures\":%lu,\"win\":%" APR_UINT64_T_FMT ",",
               (long)getpid(), bench->provider_name, ops, t - t_start, n_hit,
               found_hit, n_miss, found_miss, n_store, store_failed, bad,
               c->lock_failures, win);
    hist_print(r, "hit", h_hit);
    ap_rputs(",", r);
    hist_print(r, "miss", h_miss);
    ap_rputs(",", r);
    hist_print(r, "store", h_store);
    ap_rputs("}\n", r);
}

/* A walk over a 64 MiB private buffer: the CPU caches hold none of the
 * cache's lines afterwards (L3 here is 32 MiB). */
#define FLUSH_BYTES (64u << 20)
static unsigned char *flush_buf;

static void flush_cpu_caches(void)
{
    size_t i;
    volatile uint64_t sink = 0;
    uint64_t acc = 0;
    if (!flush_buf) {
        flush_buf = malloc(FLUSH_BYTES);
        if (!flush_buf) {
            return;
        }
        memset(flush_buf, 1, FLUSH_BYTES);
    }
    for (i = 0; i < FLUSH_BYTES; i += 64) {
        flush_buf[i]++;
        acc += flush_buf[i];
    }
    sink = acc;
    (void)sink;
}

typedef struct {
    uint64_t ns, n, found, bad;
} pass_res;

/* One timed pass of retrieves over idx[0..n) (one clock pair around it). */
static pass_res read_pass(call_ctx *c, const uint64_t *idx, uint64_t n, int retrieve)
{
    pass_res p = {0, n, 0, 0};
    unsigned char id[ID_LEN];
    volatile unsigned char sink = 0;
    uint64_t k, t0, t1;
    t0 = now_ns();
    for (k = 0; k < n; k++) {
        make_id(id, NS_STORE, idx[k]);
        if (!retrieve) {
            sink ^= id[k & 31];
            continue;
        }
        lookup(c, id, NS_STORE, idx[k], &p.found, &p.bad);
    }
    t1 = now_ns();
    p.ns = t1 - t0;
    return p;
}

static void shuffle(uint64_t *a, uint64_t n, rng_t *rng)
{
    uint64_t k;
    for (k = n; k > 1; k--) {
        uint64_t j = rng_next(rng) % k, tmp = a[k - 1];
        a[k - 1] = a[j];
        a[j] = tmp;
    }
}

static void pass_print(request_rec *r, const char *name, pass_res p)
{
    ap_rprintf(r, ",\"%s\":{\"ns\":%" APR_UINT64_T_FMT ",\"n\":%" APR_UINT64_T_FMT
               ",\"found\":%" APR_UINT64_T_FMT ",\"bad\":%" APR_UINT64_T_FMT "}",
               name, p.ns, p.n, p.found, p.bad);
}

static void op_firstread(request_rec *r, call_ctx *c)
{
    uint64_t n = qnum(r, "n", 0), lo = qnum(r, "lo", 0), hi = qnum(r, "hi", 0);
    uint64_t step = qnum(r, "step", 1), offset = qnum(r, "offset", 0);
    uint64_t sample = qnum(r, "sample", 20000), seed = qnum(r, "seed", 1);
    uint64_t cand = 0, k, *idx, store_failed = 0, fill_ns = 0;
    pass_res first, again, cold, harness;
    rng_t rng;

    if (step < 1) {
        step = 1;
    }
    if (n > 0) {
        /* Fresh ids stored here, in this child: the window is theirs. */
        apr_time_t expiry = apr_time_now() + apr_time_from_sec(EXPIRY_SECONDS);
        uint64_t t0 = now_ns();
        lo = __atomic_fetch_add(&bench->shared->next, n, __ATOMIC_RELAXED);
        hi = lo + n;
        store_failed += store_range(c, NS_STORE, lo, hi, expiry);
        fill_ns = now_ns() - t0;
    }
    if (hi > lo + offset) {
        cand = (hi - lo - offset + step - 1) / step;
    }
    idx = apr_palloc(r->pool, sizeof(uint64_t) * (cand ? cand : 1));
    for (k = 0; k < cand; k++) {
        idx[k] = lo + offset + k * step;
    }
    rng_seed(&rng, seed);
    shuffle(idx, cand, &rng);
    if (sample == 0 || sample > cand) {
        sample = cand;
    }
    harness = read_pass(c, idx, sample, 0);
    first = read_pass(c, idx, sample, 1);
    apr_pool_clear(c->pool);
    shuffle(idx, sample, &rng);
    again = read_pass(c, idx, sample, 1);
    apr_pool_clear(c->pool);
    shuffle(idx, sample, &rng);
    flush_cpu_caches();
    cold = read_pass(c, idx, sample, 1);
    apr_pool_clear(c->pool);

    ap_rprintf(r,
               "{\"op\":\"firstread\",\"pid\":%ld,\"provider\":\"%s\",\"lo\":%"
               APR_UINT64_T_FMT ",\"hi\":%" APR_UINT64_T_FMT ",\"step\":%" APR_UINT64_T_FMT
               ",\"offset\":%" APR_UINT64_T_FMT ",\"stored\":%" APR_UINT64_T_FMT
               ",\"store_failed\":%" APR_UINT64_T_FMT ",\"fill_ns\":%" APR_UINT64_T_FMT
               ",\"lock_failures\":%lu",
               (long)getpid(), bench->provider_name, lo, hi, step, offset, n,
               store_failed, fill_ns, c->lock_failures);
    pass_print(r, "harness", harness);
    pass_print(r, "first", first);
    pass_print(r, "again", again);
    pass_print(r, "cold", cold);
    ap_rputs("}\n", r);
}

/* Zipf(s) over ranks 1..d by inversion of the cumulative weights. */
static uint64_t zipf_pick(const double *cdf, uint64_t d, rng_t *rng)
{
    double u = rng_unit(rng) * cdf[d - 1];
    uint64_t lo = 0, hi = d - 1;
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        if (cdf[mid] < u) {
            lo = mid + 1;
        }
        else {
            hi = mid;
        }
    }
    return lo;
}

static void op_zipf(request_rec *r, call_ctx *c)
{
    uint64_t d = qnum(r, "d", 100000), warm = qnum(r, "warm", 0);
    uint64_t a = qnum(r, "a", 1000000), seed = qnum(r, "seed", 7), k, i;
    const char *s_arg = qarg(r, "s");
    double s = s_arg ? atof(s_arg) : 1.0, acc = 0.0;
    double *cdf;
    uint64_t *perm;
    uint64_t held = 0, hits = 0, attempts = 0, stores = 0, store_failed = 0, bad = 0;
    uint64_t t0, t1, t2;
    unsigned char id[ID_LEN], value[VALUE_LEN];
    apr_time_t expiry = apr_time_now() + apr_time_from_sec(EXPIRY_SECONDS);
    rng_t rng;

    if (d < 1) {
        d = 1;
    }
    cdf = apr_palloc(r->pool, sizeof(double) * d);
    perm = apr_palloc(r->pool, sizeof(uint64_t) * d);
    for (k = 0; k < d; k++) {
        acc += 1.0 / pow((double)(k + 1), s);
        cdf[k] = acc;
        perm[k] = k;
    }
    rng_seed(&rng, seed);
    /* Popularity rank -> id index: a random permutation, so the order in
     * which sessions were first stored says nothing about their popularity. */
    for (k = d - 1; k > 0; k--) {
        uint64_t j = rng_next(&rng) % (k + 1), tmp = perm[k];
        perm[k] = perm[j];
        perm[j] = tmp;
    }

    /* Issue every distinct session once (in index order). */
    t0 = now_ns();
    store_failed += store_range(c, NS_ZIPF, 0, d, expiry);
    /* Sessions held when full. */
    for (k = 0; k < d; k++) {
        make_id(id, NS_ZIPF, k);
        lookup(c, id, NS_ZIPF, k, &held, &bad);
    }
    t1 = now_ns();

    /* Resumption attempts with skewed reuse; a miss makes a new session. */
    for (i = 0; i < warm + a; i++) {
        uint64_t idx = perm[zipf_pick(cdf, d, &rng)];
        int hit;
        make_id(id, NS_ZIPF, idx);
        hit = lookup(c, id, NS_ZIPF, idx, NULL, &bad);
        if (!hit) {
            make_value(value, NS_ZIPF, idx);
            if (do_store(c, id, value, expiry) != APR_SUCCESS) {
                store_failed++;
            }
            if (i >= warm) {
                stores++;
            }
        }
        if (i >= warm) {
            attempts++;
            hits += hit;
        }
        if ((i & 4095) == 0) {
            apr_pool_clear(c->pool);
        }
    }
    t2 = now_ns();

    ap_rprintf(r,
               "{\"op\":\"zipf\",\"pid\":%ld,\"provider\":\"%s\",\"d\":%" APR_UINT64_T_FMT
               ",\"s\":%.3f,\"held\":%" APR_UINT64_T_FMT ",\"warm\":%" APR_UINT64_T_FMT
               ",\"attempts\":%" APR_UINT64_T_FMT ",\"hits\":%" APR_UINT64_T_FMT
               ",\"stores\":%" APR_UINT64_T_FMT ",\"store_failed\":%" APR_UINT64_T_FMT
               ",\"bad\":%" APR_UINT64_T_FMT ",\"fill_ns\":%" APR_UINT64_T_FMT
               ",\"zipf_ns\":%" APR_UINT64_T_FMT ",\"lock_failures\":%lu}\n",
               (long)getpid(), bench->provider_name, d, s, held, warm, attempts,
               hits, stores, store_failed, bad, t1 - t0, t2 - t1, c->lock_failures);
}

static int bench_handler(request_rec *r)
{
    const char *op;
    call_ctx c;

    if (!r->handler || strcmp(r->handler, "socache-bench") != 0) {
        return DECLINED;
    }
    if (!bench || !bench->initialised) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r,
                      "socache-bench: no SocacheBench instance configured");
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    op = qarg(r, "op");
    if (!op) {
        op = "info";
    }
    ap_set_content_type(r, "application/json");
    c.s = r->server;
    c.lock_failures = 0;
    if (apr_pool_create(&c.pool, r->pool) != APR_SUCCESS) {
        return HTTP_INTERNAL_SERVER_ERROR;
    }

    if (strcmp(op, "info") == 0) {
        op_info(r);
    }
    else if (strcmp(op, "fill") == 0) {
        op_fill(r, &c);
    }
    else if (strcmp(op, "check") == 0) {
        op_check(r, &c);
    }
    else if (strcmp(op, "run") == 0) {
        op_run(r, &c);
    }
    else if (strcmp(op, "zipf") == 0) {
        op_zipf(r, &c);
    }
    else if (strcmp(op, "firstread") == 0) {
        op_firstread(r, &c);
    }
    else if (strcmp(op, "status") == 0) {
        /* The provider's own figures, machine-readable form. */
        int locked;
        ap_set_content_type(r, "text/plain");
        locked = lock_on(&c);
        bench->provider->status(bench->instance, r, AP_STATUS_SHORT);
        lock_off(locked);
    }
    else {
        return HTTP_BAD_REQUEST;
    }
    return OK;
}

/* ------------------------------------------------------------------------ */
/* Configuration and lifecycle                                               */

static const char *set_bench(cmd_parms *cmd, void *dummy, const char *name,
                             const char *arg)
{
    const char *err;
    bench_conf *b;

    if ((err = ap_check_cmd_context(cmd, GLOBAL_ONLY))) {
        return err;
    }
    b = apr_pcalloc(cmd->pool, sizeof(*b));
    b->provider_name = apr_pstrdup(cmd->pool, name);
    b->arg = arg ? apr_pstrdup(cmd->pool, arg) : NULL;
    if (strcmp(name, "ssl") == 0) {
        /* mod_ssl's instance, looked up in post_config. */
        bench = b;
        return NULL;
    }
    b->provider = ap_lookup_provider(AP_SOCACHE_PROVIDER_GROUP, name,
                                     AP_SOCACHE_PROVIDER_VERSION);
    if (!b->provider) {
        return apr_psprintf(cmd->pool, "SocacheBench: unknown socache provider '%s'"
                            " (load its module first)", name);
    }
    /* As mod_ssl's SSLSessionCache: create while the config is parsed. */
    err = b->provider->create(&b->instance, arg, cmd->temp_pool, cmd->pool);
    if (err) {
        return apr_psprintf(cmd->pool, "SocacheBench: %s", err);
    }
    bench = b;
    return NULL;
}

static apr_status_t bench_destroy(void *data)
{
    bench_conf *b = data;
    if (b->initialised && b->instance) {
        b->provider->destroy(b->instance, NULL);
        b->initialised = 0;
    }
    if (bench == b) {
        bench = NULL;
    }
    return APR_SUCCESS;
}

/* SocacheBench ssl: borrow mod_ssl's initialised session cache instance. */
static int use_mod_ssl_cache(server_rec *s)
{
    void *v = NULL;
    ssl_mod_config_head *mc;
    const ap_socache_provider_t *named;

    apr_pool_userdata_get(&v, "ssl_module", s->process->pool);
    mc = v;
    /* Check the layout before trusting it: the record points back to the
     * process pool, and its provider is the one registered under its name. */
    if (!mc || mc->pPool != s->process->pool) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s,
                     "socache-bench: SocacheBench ssl needs mod_ssl (record not found)");
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    if (!mc->sesscache || !mc->sesscache_context) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s,
                     "socache-bench: SocacheBench ssl: mod_ssl has no session cache");
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    named = ap_lookup_provider(AP_SOCACHE_PROVIDER_GROUP, mc->sesscache->name,
                               AP_SOCACHE_PROVIDER_VERSION);
    if (named != mc->sesscache) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s,
                     "socache-bench: SocacheBench ssl: mod_ssl's record does not "
                     "have the expected layout");
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    if ((mc->sesscache->flags & AP_SOCACHE_FLAG_NOTMPSAFE) && !mc->pMutex) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s,
                     "socache-bench: SocacheBench ssl: mod_ssl has no cache mutex");
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    bench->ssl = mc;
    bench->provider = mc->sesscache;
    bench->provider_name = mc->sesscache->name;
    bench->instance = mc->sesscache_context;
    bench->initialised = 1;         /* mod_ssl initialised it and destroys it */
    return OK;
}

static int bench_pre_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp)
{
    bench = NULL;
    return ap_mutex_register(pconf, BENCH_MUTEX_TYPE, NULL, APR_LOCK_DEFAULT, 0);
}

static int bench_post_config(apr_pool_t *pconf, apr_pool_t *plog,
                             apr_pool_t *ptemp, server_rec *s)
{
    struct ap_socache_hints hints;
    apr_status_t rv;

    if (!bench) {
        return OK;
    }
    /* mod_ssl (ssl_scache_init) skips the first startup pass. */
    if (ap_state_query(AP_SQ_MAIN_STATE) == AP_SQ_MS_CREATE_PRE_CONFIG) {
        return OK;
    }
    rv = apr_shm_create(&bench->shm, sizeof(bench_shared), NULL, pconf);
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, rv, s,
                     "socache-bench: cannot create the shared counter");
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    bench->shared = apr_shm_baseaddr_get(bench->shm);
    memset(bench->shared, 0, sizeof(bench_shared));

    if (strcmp(bench->provider_name, "ssl") == 0) {
        return use_mod_ssl_cache(s);
    }
    /* ssl_mutex_init: a global mutex only for providers that need one. */
    if (bench->provider->flags & AP_SOCACHE_FLAG_NOTMPSAFE) {
        rv = ap_global_mutex_create(&bench->mutex, NULL, BENCH_MUTEX_TYPE, NULL,
                                    s, pconf, 0);
        if (rv != APR_SUCCESS) {
            ap_log_error(APLOG_MARK, APLOG_CRIT, rv, s,
                         "socache-bench: cannot create the global mutex");
            return HTTP_INTERNAL_SERVER_ERROR;
        }
    }
    /* ssl_scache_init: mod_ssl's hints. */
    memset(&hints, 0, sizeof(hints));
    hints.avg_id_len = 30;
    hints.avg_obj_size = 150;
    hints.expiry_interval = 30;
    rv = bench->provider->init(bench->instance, "socache-bench", &hints, s, pconf);
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, rv, s,
                     "socache-bench: could not initialise the '%s' cache",
                     bench->provider_name);
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    bench->initialised = 1;
    apr_pool_cleanup_register(pconf, bench, bench_destroy, apr_pool_cleanup_null);
    return OK;
}

static void bench_child_init(apr_pool_t *p, server_rec *s)
{
    apr_status_t rv;
    if (!bench || !bench->mutex) {
        return;
    }
    /* ssl_mutex_reinit */
    rv = apr_global_mutex_child_init(&bench->mutex,
                                     apr_global_mutex_lockfile(bench->mutex), p);
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_ERR, rv, s,
                     "socache-bench: cannot re-attach the global mutex");
    }
}

static const command_rec bench_cmds[] = {
    AP_INIT_TAKE12("SocacheBench", set_bench, NULL, RSRC_CONF,
                   "socache provider name and its argument, e.g. shmcb /dir/cache(512000)"),
    {NULL}
};

static void register_hooks(apr_pool_t *p)
{
    ap_hook_pre_config(bench_pre_config, NULL, NULL, APR_HOOK_MIDDLE);
    /* After mod_ssl's post_config, which initialises its cache (for
     * SocacheBench ssl). */
    static const char *const after_ssl[] = {"mod_ssl.c", NULL};
    ap_hook_post_config(bench_post_config, after_ssl, NULL, APR_HOOK_LAST);
    ap_hook_child_init(bench_child_init, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_handler(bench_handler, NULL, NULL, APR_HOOK_MIDDLE);
}

AP_DECLARE_MODULE(socache_bench) = {
    STANDARD20_MODULE_STUFF,
    NULL,
    NULL,
    NULL,
    NULL,
    bench_cmds,
    register_hooks
};
