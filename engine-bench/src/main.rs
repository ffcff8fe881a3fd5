//! engine-bench: throughput, latency, density and fragmentation of the engine,
//! with TLS-session-sized entries (32-byte ids, 160-byte values), next to the
//! physical reference: the same get-and-copy on a process-local
//! `hashbrown::HashMap` behind a `std::sync::Mutex`.
//!
//! ```text
//! cargo run --release --bin engine-bench [-- --quick] [-- --json] [-- --bytes N]
//! ```
//!
//! Multi-process figures fork P workers (after the cache is made, as httpd
//! does); they start together on a shared flag and each reports its operation
//! count and elapsed time through a pipe. Aggregate ops/s = sum of ops / the
//! longest elapsed time. Latency: every 32nd operation of the one-process run
//! is timed on its own.

use std::fmt::Write as _;
use std::hint::black_box;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use socache_shm_engine::testkit::{Rng, SharedPage};
use socache_shm_engine::{Cache, CacheConfig, Clock, SystemClock, Timestamp};

const ID_LEN: usize = 32;
const VALUE_LEN: usize = 160;
const SEGMENT: u64 = 64 << 20;
const SAMPLE_EVERY: u64 = 32;

// Floors from the issue.
const FLOOR_VS_REFERENCE: f64 = 0.5;
const FLOOR_2P_SCALING: f64 = 1.7;
const FLOOR_DENSITY: f64 = 4_700.0;

fn main() {
    let mut quick = false;
    let mut json = false;
    let mut bytes = SEGMENT;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--json" => json = true,
            "--bytes" => match args.next().and_then(|v| v.parse().ok()) {
                Some(b) => bytes = b,
                None => {
                    eprintln!("engine-bench: --bytes needs a number of bytes");
                    std::process::exit(2);
                }
            },
            "-h" | "--help" => {
                println!("usage: engine-bench [--quick] [--json] [--bytes N (default {SEGMENT})]");
                return;
            }
            other => {
                eprintln!("engine-bench: unknown argument {other:?} (try --help)");
                std::process::exit(2);
            }
        }
    }
    let phase = if quick {
        Duration::from_millis(200)
    } else {
        Duration::from_millis(1500)
    };
    let report = run(phase, quick, bytes);
    if json {
        println!("{}", report.json());
    } else {
        print!("{}", report.table());
    }
}

// ---------------------------------------------------------------------------
// Keys, values, randomness

fn key(seed: u64) -> [u8; ID_LEN] {
    let mut r = Rng(seed);
    let mut k = [0u8; ID_LEN];
    for c in k.chunks_mut(8) {
        c.copy_from_slice(&r.next().to_le_bytes());
    }
    k
}

fn value_for(k: &[u8; ID_LEN]) -> [u8; VALUE_LEN] {
    let mut v = [0x5Au8; VALUE_LEN];
    v[..ID_LEN].copy_from_slice(k);
    v
}

fn expiry() -> Timestamp {
    SystemClock.now().plus_secs(3600)
}

/// Store fresh keys (seeds from `seed0`) until the cache first evicts;
/// returns the keys stored that are still present.
fn fill_until_full(cache: &Cache, seed0: u64) -> Vec<[u8; ID_LEN]> {
    let exp = expiry();
    let mut keys = Vec::new();
    let base = cache.stats().evictions;
    let mut i = 0u64;
    loop {
        let k = key(seed0 + i);
        i += 1;
        cache.store(&k, &value_for(&k), exp).expect("store");
        keys.push(k);
        if i % 256 == 0 && cache.stats().evictions > base {
            let mut buf = [0u8; VALUE_LEN];
            keys.retain(|k| cache.retrieve(k, &mut buf).is_ok());
            return keys;
        }
    }
}

/// The ids of every entry in the cache, in a (deterministic) random order.
fn live_keys(cache: &Cache) -> Vec<[u8; ID_LEN]> {
    let mut keys = Vec::new();
    cache.iterate(&mut |id, _, _| {
        if let Ok(k) = <[u8; ID_LEN]>::try_from(id) {
            keys.push(k);
        }
        std::ops::ControlFlow::Continue(())
    });
    let mut r = Rng(0x5EED);
    for i in (1..keys.len()).rev() {
        keys.swap(i, r.pick(i + 1));
    }
    keys
}

/// Make sure every key of `keys` is in the cache (after a phase evicted or
/// removed some).
fn refill(cache: &Cache, keys: &[[u8; ID_LEN]]) {
    let exp = expiry();
    for k in keys {
        cache.store(k, &value_for(k), exp).expect("refill");
    }
}

// ---------------------------------------------------------------------------
// Workloads

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Hit,
    Miss,
    Store,
    Remove,
}

impl Op {
    const ALL: [Op; 4] = [Op::Hit, Op::Miss, Op::Store, Op::Remove];

    fn name(self) -> &'static str {
        match self {
            Op::Hit => "retrieve-hit",
            Op::Miss => "retrieve-miss",
            Op::Store => "store (evicting)",
            Op::Remove => "remove",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Op::Hit => "retrieve_hit",
            Op::Miss => "retrieve_miss",
            Op::Store => "store",
            Op::Remove => "remove",
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Run {
    ops: u64,
    nanos: u64,
    /// Operations that did what the phase measures (hits, removals...).
    effective: u64,
    p50_ns: u64,
    p99_ns: u64,
}

/// One worker's share of a phase: worker `w` of `p`.
fn work(cache: &Cache, keys: &[[u8; ID_LEN]], op: Op, w: usize, p: usize, dur: Duration) -> Run {
    let mut rng = Rng(0xBE4C_0000 + w as u64 * 7919 + op as u64);
    let mut buf = [0u8; 4096];
    let exp = expiry();
    let mut value = [0x33u8; VALUE_LEN];
    let mut samples: Vec<u32> = Vec::with_capacity(1 << 16);
    // Remove works through this worker's own slice of the keys.
    let slice = &keys[keys.len() * w / p..keys.len() * (w + 1) / p];
    let mut ops = 0u64;
    let mut effective = 0u64;
    let start = Instant::now();
    let mut fresh = 0xF5E5_0000_0000u64 + ((w as u64) << 32);
    loop {
        // Check the clock every 1024 operations only.
        if ops % 1024 == 0 && start.elapsed() >= dur {
            break;
        }
        if op == Op::Remove && ops as usize >= slice.len() {
            break;
        }
        let sample = ops % SAMPLE_EVERY == 0;
        let t0 = if sample { Some(Instant::now()) } else { None };
        let ok = match op {
            Op::Hit => {
                let k = &keys[rng.pick(keys.len())];
                cache.retrieve(k, &mut buf).is_ok()
            }
            Op::Miss => {
                let k = key(!rng.next());
                cache.retrieve(&k, &mut buf).is_err()
            }
            Op::Store => {
                fresh += 1;
                let k = key(fresh);
                value[..8].copy_from_slice(&fresh.to_le_bytes());
                cache.store(&k, &value, exp).is_ok()
            }
            Op::Remove => cache.remove(&slice[ops as usize]),
        };
        if let Some(t0) = t0 {
            samples.push(t0.elapsed().as_nanos().min(u32::MAX as u128) as u32);
        }
        effective += ok as u64;
        ops += 1;
        black_box(&buf);
    }
    let nanos = start.elapsed().as_nanos() as u64;
    samples.sort_unstable();
    let pct = |q: f64| -> u64 {
        if samples.is_empty() {
            0
        } else {
            samples[((samples.len() - 1) as f64 * q) as usize] as u64
        }
    };
    Run {
        ops,
        nanos,
        effective,
        p50_ns: pct(0.50),
        p99_ns: pct(0.99),
    }
}

/// Run `op` in `p` forked processes at once; the aggregate.
fn forked(cache: &Cache, keys: &[[u8; ID_LEN]], op: Op, p: usize, dur: Duration) -> Run {
    // [0]: workers ready; [1]: go.
    let barrier = SharedPage::new();
    let mut kids = Vec::new();
    for w in 0..p {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: fds is a valid array of two ints.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0, "pipe");
        // SAFETY: this program is single-threaded; the child only runs the
        // workload, writes its result and leaves with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            barrier.word(0).fetch_add(1, Ordering::SeqCst);
            while barrier.word(1).load(Ordering::Acquire) == 0 {
                std::hint::spin_loop();
            }
            let r = work(cache, keys, op, w, p, dur);
            let line = format!(
                "{} {} {} {} {}",
                r.ops, r.nanos, r.effective, r.p50_ns, r.p99_ns
            );
            // SAFETY: writing a live buffer to our pipe, then leaving at once.
            unsafe {
                libc::write(fds[1], line.as_ptr().cast(), line.len());
                libc::_exit(0)
            }
        }
        // SAFETY: the parent does not use the write end.
        unsafe { libc::close(fds[1]) };
        kids.push((pid, fds[0]));
    }
    while barrier.word(0).load(Ordering::SeqCst) < p as u32 {
        std::thread::sleep(Duration::from_millis(1));
    }
    barrier.word(1).store(1, Ordering::Release);
    let mut total = Run::default();
    for (pid, fd) in kids {
        let mut out = Vec::new();
        let mut buf = [0u8; 256];
        loop {
            // SAFETY: reading into a live buffer of that length from our fd.
            let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
            out.extend_from_slice(&buf[..n as usize]);
        }
        let mut status = 0;
        // SAFETY: our fd, closed once; waiting for our own child.
        unsafe {
            libc::close(fd);
            libc::waitpid(pid, &raw mut status, 0);
        }
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "worker failed"
        );
        let f: Vec<u64> = String::from_utf8_lossy(&out)
            .split_whitespace()
            .map(|x| x.parse().expect("worker report"))
            .collect();
        assert_eq!(f.len(), 5, "worker report");
        total.ops += f[0];
        total.nanos = total.nanos.max(f[1]);
        total.effective += f[2];
        total.p50_ns = total.p50_ns.max(f[3]);
        total.p99_ns = total.p99_ns.max(f[4]);
    }
    total
}

fn ops_per_sec(r: &Run) -> f64 {
    r.ops as f64 / (r.nanos.max(1) as f64 / 1e9)
}

/// Time the engine's entry checksum over TLS-session-sized values.
fn checksum_cost(dur: Duration) -> f64 {
    let values: Vec<[u8; VALUE_LEN]> = (0..64u8).map(|i| [i; VALUE_LEN]).collect();
    let start = Instant::now();
    let mut n = 0u64;
    let mut acc = 0u32;
    while start.elapsed() < dur {
        for (i, v) in values.iter().enumerate() {
            acc ^= socache_shm_engine::checksum(black_box(i as u64), 7, black_box(v));
        }
        n += values.len() as u64;
    }
    black_box(acc);
    start.elapsed().as_nanos() as f64 / n as f64
}

/// The physical reference: get-and-copy on a process-local HashMap behind a
/// Mutex, same keys, same random order, same copy into a caller buffer.
fn reference(keys: &[[u8; ID_LEN]], dur: Duration) -> Run {
    let mut map: hashbrown::HashMap<Vec<u8>, Vec<u8>> =
        hashbrown::HashMap::with_capacity(keys.len());
    for k in keys {
        map.insert(k.to_vec(), value_for(k).to_vec());
    }
    let map = Mutex::new(map);
    let mut rng = Rng(0xBE4C_0000 + Op::Hit as u64);
    let mut buf = [0u8; 4096];
    let mut ops = 0u64;
    let mut hits = 0u64;
    let start = Instant::now();
    loop {
        if ops % 1024 == 0 && start.elapsed() >= dur {
            break;
        }
        let k = &keys[rng.pick(keys.len())];
        let g = map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = g.get(k.as_slice()) {
            buf[..v.len()].copy_from_slice(v);
            hits += 1;
        }
        drop(g);
        black_box(&buf);
        ops += 1;
    }
    Run {
        ops,
        nanos: start.elapsed().as_nanos() as u64,
        effective: hits,
        ..Run::default()
    }
}

// ---------------------------------------------------------------------------
// Density and fragmentation

struct Density {
    bytes: u64,
    /// Entries when the first eviction happened.
    at_first_eviction: u64,
    /// Entries held while evicting: the mean over the second half of a run
    /// storing as many fresh entries again (the plateau).
    plateau: u64,
}

impl Density {
    /// Entries per MiB (2^20 bytes) of budget, when full.
    fn per_mib(&self) -> f64 {
        self.plateau as f64 / (self.bytes as f64 / (1u64 << 20) as f64)
    }
}

fn density(bytes: u64) -> Density {
    let cache = Cache::create(&CacheConfig::new(bytes)).expect("create");
    let keys = fill_until_full(&cache, 0xD000_0000);
    let at_first_eviction = cache.stats().entries;
    // Keep storing fresh entries (as many again): every shard fills up and
    // the count settles where eviction holds it.
    let exp = expiry();
    let mut tail = Vec::new();
    let n = keys.len() as u64;
    for i in 0..n {
        let k = key(0xD100_0000_0000 + i);
        cache.store(&k, &value_for(&k), exp).expect("store");
        if i >= n / 2 && i % 64 == 0 {
            tail.push(cache.stats().entries);
        }
    }
    let plateau = tail.iter().sum::<u64>() / tail.len().max(1) as u64;
    Density {
        bytes,
        at_first_eviction,
        plateau,
    }
}

struct Fragmentation {
    bytes: u64,
    ops: u64,
    entries: u64,
    bytes_used: u64,
    bytes_free: u64,
    /// Largest free block over all shards.
    largest_free_block: u64,
    /// Mean over shards of largest free block / free bytes.
    mean_largest_over_free: f64,
    /// Mean over shards of used / arena bytes, sampled while evicting.
    utilisation: f64,
    evictions: u64,
}

/// Churn: 8 MiB, 20,000 ids, values of 100..4000 bytes, replaced and removed
/// at random (70 % stores, 30 % removes), far more data than fits.
fn fragmentation(ops: u64) -> Fragmentation {
    let bytes = 8u64 << 20;
    let cache = Cache::create(&CacheConfig::new(bytes)).expect("create");
    let exp = expiry();
    let mut rng = Rng(0xF7A6);
    let value = vec![0xC3u8; 4000];
    let mut util_sum = 0.0;
    let mut util_n = 0u64;
    for i in 0..ops {
        let k = key(rng.pick(20_000) as u64);
        if rng.pick(10) < 7 {
            let len = 100 + rng.pick(3901);
            cache.store(&k, &value[..len], exp).expect("store");
        } else {
            cache.remove(&k);
        }
        if i % 4096 == 4095 {
            let st = cache.stats();
            util_sum += st.bytes_used as f64 / st.bytes_total as f64;
            util_n += 1;
        }
    }
    let st = cache.stats();
    let shards = cache.shard_stats();
    let ratios: Vec<f64> = shards
        .iter()
        .filter(|s| s.bytes_free > 0)
        .map(|s| s.largest_free_block as f64 / s.bytes_free as f64)
        .collect();
    Fragmentation {
        bytes,
        ops,
        entries: st.entries,
        bytes_used: st.bytes_used,
        bytes_free: st.bytes_free,
        largest_free_block: shards
            .iter()
            .map(|s| s.largest_free_block)
            .max()
            .unwrap_or(0),
        mean_largest_over_free: ratios.iter().sum::<f64>() / ratios.len().max(1) as f64,
        utilisation: util_sum / util_n.max(1) as f64,
        evictions: st.evictions,
    }
}

// ---------------------------------------------------------------------------
// The run and its report

struct Report {
    quick: bool,
    bytes: u64,
    phase: Duration,
    cpus: usize,
    shards: usize,
    keys: usize,
    /// [op][procs index] for procs 1, 2, 4.
    runs: Vec<(Op, [Run; 3])>,
    /// One process, the cache just filled (no eviction yet).
    fresh_hit: Run,
    fresh_miss: Run,
    reference: Run,
    /// ns per entry checksum of a 160-byte value (every store computes one,
    /// every hit verifies one).
    checksum_ns: f64,
    density: Density,
    density_512k: Density,
    frag: Fragmentation,
}

const PROCS: [usize; 3] = [1, 2, 4];

fn run(phase: Duration, quick: bool, bytes: u64) -> Report {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    eprintln!("engine-bench: density at 64 MiB and 512,000 bytes...");
    let density_big = density(SEGMENT);
    let density_512k = density(512_000);

    eprintln!("engine-bench: filling a {bytes}-byte segment...");
    let cache = Cache::create(&CacheConfig::new(bytes)).expect("create");
    let first = fill_until_full(&cache, 0x1000_0000);
    eprintln!("engine-bench: retrieve-hit and -miss before any eviction...");
    let fresh_hit = forked(&cache, &first, Op::Hit, 1, phase);
    let fresh_miss = forked(&cache, &first, Op::Miss, 1, phase);
    // A session cache in service is full and evicting: measure that state.
    // Store as many fresh entries again (each store evicts), then take the
    // entries left as the key set.
    eprintln!("engine-bench: churning to the steady state...");
    let exp = expiry();
    for i in 0..first.len() as u64 {
        let k = key(0x2000_0000_0000 + i);
        cache.store(&k, &value_for(&k), exp).expect("store");
    }
    let keys = live_keys(&cache);

    let mut runs = Vec::new();
    for op in Op::ALL {
        let mut per = [Run::default(); 3];
        for (i, &p) in PROCS.iter().enumerate() {
            eprintln!("engine-bench: {} x {p}...", op.name());
            per[i] = forked(&cache, &keys, op, p, phase);
            if matches!(op, Op::Store | Op::Remove) {
                // Put the measured key set back for the next run.
                refill(&cache, &keys);
            }
        }
        runs.push((op, per));
    }
    eprintln!("engine-bench: reference...");
    let reference = reference(&keys, phase);
    eprintln!("engine-bench: checksum...");
    let checksum_ns = checksum_cost(phase);
    eprintln!("engine-bench: fragmentation under churn...");
    let frag = fragmentation(if quick { 200_000 } else { 1_500_000 });
    Report {
        quick,
        bytes,
        phase,
        cpus,
        shards: cache.shard_count(),
        keys: keys.len(),
        runs,
        fresh_hit,
        fresh_miss,
        reference,
        checksum_ns,
        density: density_big,
        density_512k,
        frag,
    }
}

impl Report {
    fn run_of(&self, op: Op) -> &[Run; 3] {
        &self
            .runs
            .iter()
            .find(|(o, _)| *o == op)
            .expect("op measured")
            .1
    }

    fn vs_reference(&self) -> f64 {
        ops_per_sec(&self.run_of(Op::Hit)[0]) / ops_per_sec(&self.reference)
    }

    fn scaling_2p(&self) -> f64 {
        let r = self.run_of(Op::Hit);
        ops_per_sec(&r[1]) / ops_per_sec(&r[0])
    }

    fn verdict(ok: bool) -> &'static str {
        if ok {
            "PASS"
        } else {
            "MISS"
        }
    }

    fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "engine-bench: {ID_LEN}-byte ids, {VALUE_LEN}-byte values; {:.2} MiB segment, {} shards, \
             full and evicting, {} keys live; {} CPUs; {:.1} s per figure{}",
            self.bytes as f64 / (1u64 << 20) as f64,
            self.shards,
            self.keys,
            self.cpus,
            self.phase.as_secs_f64(),
            if self.quick { " (--quick)" } else { "" }
        );
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "{:<18} {:>12} {:>12} {:>12} {:>9} {:>9}",
            "ops/s", "1 process", "2 processes", "4 processes", "p50", "p99"
        );
        for (op, per) in &self.runs {
            let _ = writeln!(
                s,
                "{:<18} {:>12} {:>12} {:>12} {:>9} {:>9}",
                op.name(),
                fmt_rate(ops_per_sec(&per[0])),
                fmt_rate(ops_per_sec(&per[1])),
                fmt_rate(ops_per_sec(&per[2])),
                format!("{} ns", per[0].p50_ns),
                format!("{} ns", per[0].p99_ns),
            );
        }
        let _ = writeln!(
            s,
            "{:<18} {:>12}   (process-local hashbrown::HashMap + std Mutex, get + copy, 1 thread)",
            "reference",
            fmt_rate(ops_per_sec(&self.reference))
        );
        let _ = writeln!(
            s,
            "before any eviction (just filled), 1 process: retrieve-hit {} (p50 {} ns, p99 {} ns), \
             retrieve-miss {} (p50 {} ns, p99 {} ns)",
            fmt_rate(ops_per_sec(&self.fresh_hit)),
            self.fresh_hit.p50_ns,
            self.fresh_hit.p99_ns,
            fmt_rate(ops_per_sec(&self.fresh_miss)),
            self.fresh_miss.p50_ns,
            self.fresh_miss.p99_ns
        );
        let hit_ns = 1e9 / ops_per_sec(&self.run_of(Op::Hit)[0]).max(1.0);
        let store_ns = 1e9 / ops_per_sec(&self.run_of(Op::Store)[0]).max(1.0);
        let _ = writeln!(
            s,
            "entry checksum (of a {VALUE_LEN}-byte value): {:.1} ns = {:.1}% of a 1-process retrieve hit, {:.1}% of a store",
            self.checksum_ns,
            100.0 * self.checksum_ns / hit_ns,
            100.0 * self.checksum_ns / store_ns
        );
        let hit = &self.run_of(Op::Hit)[0];
        let _ = writeln!(
            s,
            "hit ratio of the retrieve-hit run: {:.4}",
            hit.effective as f64 / hit.ops.max(1) as f64
        );
        let _ = writeln!(s);
        for d in [&self.density, &self.density_512k] {
            let _ = writeln!(
                s,
                "density at {} bytes: {} entries at the first eviction, {} steady while evicting \
                 = {:.0} entries/MiB",
                d.bytes,
                d.at_first_eviction,
                d.plateau,
                d.per_mib()
            );
        }
        let f = &self.frag;
        let _ = writeln!(
            s,
            "fragmentation under churn ({} MiB, {} ops, 20,000 ids, values 100..4000 B, 70% store / 30% remove):",
            f.bytes >> 20,
            f.ops
        );
        let _ = writeln!(
            s,
            "  {} entries, {} B used, {} B free, largest free block {} B; per shard: largest free / free = {:.2}; \
             mean arena use while evicting {:.1}%; {} evictions",
            f.entries,
            f.bytes_used,
            f.bytes_free,
            f.largest_free_block,
            f.mean_largest_over_free,
            f.utilisation * 100.0,
            f.evictions
        );
        let _ = writeln!(s);
        let _ = writeln!(s, "floors:");
        let r = self.vs_reference();
        let _ = writeln!(
            s,
            "  1-process retrieve hits / reference   {r:>7.2}x  (>= {FLOOR_VS_REFERENCE})   {}",
            Self::verdict(r >= FLOOR_VS_REFERENCE)
        );
        let sc = self.scaling_2p();
        let _ = writeln!(
            s,
            "  2 processes / 1 process retrieve hits {sc:>7.2}x  (>= {FLOOR_2P_SCALING})   {}",
            Self::verdict(sc >= FLOOR_2P_SCALING)
        );
        let d = self.density.per_mib();
        let _ = writeln!(
            s,
            "  density at 64 MiB                     {d:>7.0}/MiB (>= {FLOOR_DENSITY:.0}) {}",
            Self::verdict(d >= FLOOR_DENSITY)
        );
        s
    }

    fn json(&self) -> String {
        let mut s = String::from("{");
        let _ = write!(
            s,
            "\"id_len\":{ID_LEN},\"value_len\":{VALUE_LEN},\"segment_bytes\":{},\"shards\":{},\
             \"keys\":{},\"cpus\":{},\"seconds_per_figure\":{},\"quick\":{},",
            self.bytes,
            self.shards,
            self.keys,
            self.cpus,
            self.phase.as_secs_f64(),
            self.quick
        );
        s.push_str("\"ops_per_sec\":{");
        for (i, (op, per)) in self.runs.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            let _ = write!(
                s,
                "\"{}\":{{\"1\":{:.0},\"2\":{:.0},\"4\":{:.0},\"p50_ns\":{},\"p99_ns\":{}}}",
                op.key(),
                ops_per_sec(&per[0]),
                ops_per_sec(&per[1]),
                ops_per_sec(&per[2]),
                per[0].p50_ns,
                per[0].p99_ns
            );
        }
        let _ = write!(
            s,
            "}},\"reference_ops_per_sec\":{:.0},\"checksum_ns\":{:.2},",
            ops_per_sec(&self.reference),
            self.checksum_ns
        );
        let _ = write!(
            s,
            "\"before_eviction\":{{\"retrieve_hit\":{:.0},\"retrieve_miss\":{:.0}}},",
            ops_per_sec(&self.fresh_hit),
            ops_per_sec(&self.fresh_miss)
        );
        let _ = write!(
            s,
            "\"density\":{{\"bytes\":{},\"at_first_eviction\":{},\"steady\":{},\"per_mib\":{:.0}}},",
            self.density.bytes,
            self.density.at_first_eviction,
            self.density.plateau,
            self.density.per_mib()
        );
        let _ = write!(
            s,
            "\"density_512000\":{{\"at_first_eviction\":{},\"steady\":{},\"per_mib\":{:.0}}},",
            self.density_512k.at_first_eviction,
            self.density_512k.plateau,
            self.density_512k.per_mib()
        );
        let f = &self.frag;
        let _ = write!(
            s,
            "\"fragmentation\":{{\"bytes\":{},\"ops\":{},\"entries\":{},\"bytes_used\":{},\"bytes_free\":{},\
             \"largest_free_block\":{},\"mean_largest_over_free\":{:.3},\"utilisation\":{:.3},\"evictions\":{}}},",
            f.bytes,
            f.ops,
            f.entries,
            f.bytes_used,
            f.bytes_free,
            f.largest_free_block,
            f.mean_largest_over_free,
            f.utilisation,
            f.evictions
        );
        let (r, sc, d) = (
            self.vs_reference(),
            self.scaling_2p(),
            self.density.per_mib(),
        );
        let _ = write!(
            s,
            "\"floors\":{{\"vs_reference\":{{\"value\":{r:.3},\"floor\":{FLOOR_VS_REFERENCE},\"pass\":{}}},\
             \"scaling_2p\":{{\"value\":{sc:.3},\"floor\":{FLOOR_2P_SCALING},\"pass\":{}}},\
             \"density_per_mib\":{{\"value\":{d:.0},\"floor\":{FLOOR_DENSITY},\"pass\":{}}}}}",
            r >= FLOOR_VS_REFERENCE,
            sc >= FLOOR_2P_SCALING,
            d >= FLOOR_DENSITY
        );
        s.push('}');
        s
    }
}

fn fmt_rate(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2} M", x / 1e6)
    } else {
        format!("{:.0} k", x / 1e3)
    }
}
