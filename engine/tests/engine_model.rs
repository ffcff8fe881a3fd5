//! Property tests of the engine against a simple in-memory model.
//!
//! Random operation sequences (store, retrieve, remove, flush, clock moves,
//! iterate) run on a [`Cache`] driven by a [`ManualClock`] and on a
//! `BTreeMap` model side by side, in two regimes:
//!
//! - **exact**: the cache is large enough that nothing is ever evicted, so it
//!   must agree with the model on every answer (values, misses, expiry,
//!   iteration, entry counts, replacement counts);
//! - **pressure**: a small budget and many keys, so entries are evicted all
//!   the time; the cache may forget entries but must never return a value the
//!   model does not hold for that id (no stale, foreign or expired value),
//!   must accept every normal-size store (and return it right away), and must
//!   refuse oversize entries without touching anything else.
//!
//! Plus two deterministic tests of the eviction policy: expired entries are
//! reclaimed before live ones are evicted, and recency (CLOCK) protects an
//! entry that is read, unlike FIFO.
//!
//! The runs are deterministic: a fixed RNG seed (override with
//! `PROPTEST_RNG_SEED`, case counts with `PROPTEST_CASES`) and no failure
//! persistence files.

use std::sync::Arc;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, RngSeed};
use socache_shm_engine::testkit::{self, expired, value_for, Entry, LiveSet, Model, Rng};
use socache_shm_engine::{Cache, CacheConfig, Clock, Error, ManualClock, Miss, Stored, Timestamp};

/// 2023-11-14T22:13:20.5Z: half a second into a second, so that sub-second
/// clock moves cross whole-second expiry boundaries.
const START_US: i64 = 1_700_000_000_500_000;

fn config(cases: u32, seed: u64) -> Config {
    let mut c = Config {
        cases,
        failure_persistence: None,
        rng_algorithm: RngAlgorithm::ChaCha,
        max_shrink_iters: 2_000,
        ..Config::default()
    };
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        c.rng_seed = RngSeed::Fixed(seed);
    }
    if std::env::var_os("PROPTEST_CASES").is_some() {
        c.cases = Config::default().cases;
    }
    c
}

// ---------------------------------------------------------------------------
// Ids and values

/// The id pool of the exact regime: empty, one-byte, prefixes of each other,
/// binary, TLS-sized and long ids.
fn exact_ids() -> Vec<Vec<u8>> {
    let mut ids: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"\0".to_vec(),
        b"\0\0".to_vec(),
        b"a".to_vec(),
        b"ab".to_vec(),
        b"abc".to_vec(),
        b"abd".to_vec(),
        vec![0xff; 7],
    ];
    for i in 0..12u64 {
        let mut s = Rng(i + 1000);
        let id: Vec<u8> = (0..4).flat_map(|_| s.next().to_le_bytes()).collect();
        ids.push(id); // 32 bytes, like a TLS session id
    }
    ids.push(vec![b'x'; 300]);
    let mut long = vec![b'x'; 300];
    long[299] = b'y';
    ids.push(long);
    ids.push(vec![7u8; 1000]);
    ids.push((0..=255u8).collect());
    ids
}

/// The id pool of the pressure regime: many 32-byte ids plus a few odd ones.
fn pressure_ids(n: usize) -> Vec<Vec<u8>> {
    let mut ids: Vec<Vec<u8>> = vec![b"".to_vec(), b"k".to_vec(), vec![0u8; 200]];
    for i in 0..n as u64 {
        let mut s = Rng(i ^ 0xABCD_EF01);
        ids.push((0..4).flat_map(|_| s.next().to_le_bytes()).collect());
    }
    ids
}

// ---------------------------------------------------------------------------
// Operations

#[derive(Clone, Debug)]
enum Op {
    Store(Store),
    /// `get` and, alternately, `retrieve` into an exact or a short buffer.
    Retrieve {
        id: usize,
        how: u8,
    },
    Remove {
        id: usize,
    },
    /// Move the clock forward.
    Advance {
        us: i64,
    },
    Iterate,
    Flush,
    /// A store of `max_entry_size + extra` bytes (id included): must be refused.
    StoreOversize {
        id: usize,
        extra: u16,
    },
}

/// Store the next unique value under the id `id` names ([`Ids::get`]); its
/// length is `len_per_mille` of the regime's value cap; it expires `ttl_us`
/// from now.
#[derive(Clone, Debug)]
struct Store {
    id: usize,
    len_per_mille: u16,
    ttl_us: i64,
}

impl Store {
    /// Its value's length under a value cap of `cap` bytes.
    fn len(&self, cap: usize) -> usize {
        cap * self.len_per_mille as usize / 1000
    }
}

/// A regime's id pool, and the count of the values stored under its ids
/// (every store's value is a new one).
struct Ids {
    pool: Vec<Vec<u8>>,
    stored: u64,
}

impl Ids {
    fn new(pool: Vec<Vec<u8>>) -> Ids {
        Ids { pool, stored: 0 }
    }

    /// The id an op's `id` names: `pool[id % pool.len()]`.
    fn get(&self, id: usize) -> &Vec<u8> {
        &self.pool[id % self.pool.len()]
    }

    /// What `store` writes at `now`: its id and an entry with the next
    /// unique value, `len(id)` bytes long, expiring `ttl_us` after `now`.
    fn new_entry(
        &mut self,
        store: &Store,
        now: Timestamp,
        len: impl FnOnce(&[u8]) -> usize,
    ) -> (Vec<u8>, Entry) {
        let id = self.get(store.id).clone();
        let len = len(&id);
        self.stored += 1;
        let value = value_for(self.stored, len);
        let expiry = Timestamp(now.0 + store.ttl_us);
        (id, Entry { value, expiry })
    }
}

fn ttl_strategy() -> impl Strategy<Value = i64> {
    prop_oneof![
        // Mostly seconds to a minute ahead, with a sub-second part.
        6 => 0i64..60_000_000,
        // Already past, or within the current second.
        1 => -5_000_000i64..1_000_000,
        // Long-lived.
        1 => Just(86_400_000_000i64),
    ]
}

fn op_strategy(pressure: bool) -> impl Strategy<Value = Op> {
    // Under pressure: mostly stores, few removes, no flush (they would relieve it).
    let (store, remove, flush, over) = if pressure {
        (60, 4, 0, 2)
    } else {
        (40, 10, 1, 0)
    };
    prop_oneof![
        store => (any::<usize>(), 0u16..=1000, ttl_strategy())
            .prop_map(|(id, len_per_mille, ttl_us)| Op::Store(Store { id, len_per_mille, ttl_us })),
        30 => (any::<usize>(), any::<u8>()).prop_map(|(id, how)| Op::Retrieve { id, how }),
        remove => any::<usize>().prop_map(|id| Op::Remove { id }),
        8 => prop_oneof![
            3 => 0i64..1_500_000,
            1 => 1_000_000i64..20_000_000,
        ]
        .prop_map(|us| Op::Advance { us }),
        4 => Just(Op::Iterate),
        flush => Just(Op::Flush),
        over => (any::<usize>(), 1u16..300)
            .prop_map(|(id, extra)| Op::StoreOversize { id, extra }),
    ]
}

// ---------------------------------------------------------------------------
// The model

// The model (`Model`, `Entry`, `expired`, `LiveSet`) is the test kit's,
// shared with the ops fuzzer (fuzz/fuzz_targets/ops.rs).

fn snapshot(cache: &Cache) -> Result<LiveSet, TestCaseError> {
    testkit::snapshot(cache)
        .map_err(|id| TestCaseError::fail(format!("iterate yielded id {id:02x?} twice")))
}

fn new_cache(bytes: u64) -> (Cache, ManualClock) {
    let clock = ManualClock::new(Timestamp(START_US));
    let cache = Cache::create(&CacheConfig::new(bytes))
        .unwrap_or_else(|e| panic!("create {bytes}: {e}"))
        .with_clock(Arc::new(clock.clone()));
    (cache, clock)
}

// ---------------------------------------------------------------------------
// Regime (a): nothing is evicted; exact agreement.

/// (budget, number of ids from the pool, largest value).
const EXACT_SETUPS: [(u64, usize, usize); 3] =
    [(1 << 20, 24, 1500), (8192, 6, 200), (65_536, 12, 600)];

fn run_exact(setup: usize, ops: &[Op]) -> Result<(), TestCaseError> {
    let (bytes, n_ids, max_len) = EXACT_SETUPS[setup];
    let mut ids = Ids::new(exact_ids().into_iter().take(n_ids).collect());
    let (cache, clock) = new_cache(bytes);
    let mut model = Model::default();
    let mut replacements = 0u64;
    let mut hits = 0u64;
    let mut misses = 0u64;
    let mut buf = vec![0u8; 4096];

    for (step, op) in ops.iter().enumerate() {
        let now = clock.now();
        match *op {
            Op::Store(ref store) => {
                let (id, entry) = ids.new_entry(store, now, |_| store.len(max_len));
                let expiry = entry.expiry;
                let got = cache.store(&id, &entry.value, expiry);
                let stored = got.map_err(|e| {
                    let len = entry.value.len();
                    TestCaseError::fail(format!("step {step}: store of {len} B failed: {e}"))
                })?;
                match model.map.get(id.as_slice()) {
                    Some(e) if !expired(e.expiry, now) => {
                        prop_assert_eq!(
                            stored,
                            Stored::Replaced,
                            "step {}: live entry replaced",
                            step
                        );
                    }
                    None => prop_assert_eq!(stored, Stored::Inserted, "step {}: new id", step),
                    // An expired, unreclaimed entry: either answer is fair.
                    Some(_) => {}
                }
                // The counter counts replacements by a stored entry (an
                // already-expired store removes the old one and stores nothing).
                if stored == Stored::Replaced && !expired(expiry, now) {
                    replacements += 1;
                }
                if expired(expiry, now) {
                    // Not stored, and whatever was there is gone.
                    model.map.remove(id.as_slice());
                } else {
                    model.map.insert(id, entry);
                }
            }
            Op::Retrieve { id, how } => {
                let id = ids.get(id);
                let want = model.live(id, now).map(|e| e.value.clone());
                match how % 3 {
                    0 => {
                        let got = cache.get(id);
                        prop_assert_eq!(&got, &want, "step {}: get {:02x?}", step, id);
                        if got.is_some() {
                            hits += 1
                        } else {
                            misses += 1
                        }
                    }
                    1 => {
                        let got = cache.retrieve(id, &mut buf).map(|n| buf[..n].to_vec());
                        prop_assert_eq!(&got, &want.clone().ok_or(Miss::NotFound), "step {}", step);
                        if got.is_ok() {
                            hits += 1
                        } else {
                            misses += 1
                        }
                    }
                    _ => match &want {
                        // A buffer one byte short: BufferTooSmall with the size.
                        Some(w) if !w.is_empty() => {
                            let mut small = vec![0u8; w.len() - 1];
                            let got = cache.retrieve(id, &mut small);
                            prop_assert_eq!(
                                got,
                                Err(Miss::BufferTooSmall { needed: w.len() }),
                                "step {}",
                                step
                            );
                            misses += 1;
                        }
                        // A miss (or an empty value) into an empty buffer.
                        _ => {
                            let got = cache.retrieve(id, &mut []);
                            prop_assert_eq!(
                                got,
                                want.as_ref().map(|_| 0).ok_or(Miss::NotFound),
                                "step {}",
                                step
                            );
                            if got.is_ok() {
                                hits += 1
                            } else {
                                misses += 1
                            }
                        }
                    },
                }
                if want.is_none() {
                    // The lookup reclaimed any expired entry of that id.
                    model.map.remove(id.as_slice());
                }
            }
            Op::Remove { id } => {
                let id = ids.get(id);
                let want = model.live(id, now).is_some();
                prop_assert_eq!(cache.remove(id), want, "step {}: remove", step);
                prop_assert_eq!(cache.get(id), None, "step {}: get after remove", step);
                misses += 1;
                model.map.remove(id.as_slice());
            }
            Op::Advance { us } => clock.set(Timestamp(now.0 + us)),
            Op::Iterate => {
                prop_assert_eq!(
                    snapshot(&cache)?,
                    model.live_set(now),
                    "step {}: iterate",
                    step
                );
            }
            Op::Flush => {
                cache.flush();
                model.map.clear();
                prop_assert_eq!(cache.stats().entries, 0, "step {}: flush", step);
            }
            Op::StoreOversize { .. } => unreachable!("not generated in the exact regime"),
        }

        let now = clock.now();
        let st = cache.stats();
        let live = model.live_count(now);
        let present = model.map.len() as u64;
        prop_assert!(
            live <= st.entries && st.entries <= present,
            "step {}: stats.entries {} outside [{} live, {} present]",
            step,
            st.entries,
            live,
            present
        );
        prop_assert_eq!(
            st.evictions,
            0,
            "step {}: evicted in a cache with room",
            step
        );
        prop_assert_eq!(st.replacements, replacements, "step {}: replacements", step);
        prop_assert!(
            st.hits >= hits && st.misses >= misses,
            "step {}: hit/miss counters {:?}",
            step,
            st
        );
        prop_assert!(st.bytes_used <= st.bytes_total, "step {}: {:?}", step, st);
    }

    // Finally every id, and the whole live set.
    let now = clock.now();
    for id in &ids.pool {
        prop_assert_eq!(cache.get(id), model.live(id, now).map(|e| e.value.clone()));
    }
    prop_assert_eq!(snapshot(&cache)?, model.live_set(now));
    Ok(())
}

// ---------------------------------------------------------------------------
// Regime (b): eviction under pressure.

const PRESSURE_BUDGETS: [u64; 4] = [8192, 16_384, 65_536, 131_072];

fn run_pressure(budget: usize, ops: &[Op]) -> Result<(), TestCaseError> {
    let bytes = PRESSURE_BUDGETS[budget];
    let mut ids = Ids::new(pressure_ids(400));
    let (cache, clock) = new_cache(bytes);
    let max = cache.max_entry_size() as usize;
    prop_assert!(max >= 192, "max_entry_size {} at {} bytes", max, bytes);
    // "Normal size": up to a quarter of the maximum entry, and at most 2 KB.
    let cap = (max / 4).min(2048);
    let mut model = Model::default();

    for (step, op) in ops.iter().enumerate() {
        let now = clock.now();
        match *op {
            Op::Store(ref store) => {
                let (id, entry) =
                    ids.new_entry(store, now, |id| store.len(cap).min(max - id.len()));
                let expiry = entry.expiry;
                if let Err(e) = cache.store(&id, &entry.value, expiry) {
                    return Err(TestCaseError::fail(format!(
                        "step {step}: normal-size store ({} + {} B, max {max}) refused: {e}",
                        id.len(),
                        entry.value.len()
                    )));
                }
                if expired(expiry, now) {
                    model.map.remove(id.as_slice());
                    prop_assert_eq!(
                        cache.get(&id),
                        None,
                        "step {}: expired store returned",
                        step
                    );
                } else {
                    let got = cache.get(&id);
                    prop_assert_eq!(
                        got.as_ref(),
                        Some(&entry.value),
                        "step {}: not retrievable right after store",
                        step
                    );
                    model.map.insert(id, entry);
                }
            }
            Op::Retrieve { id, how } => {
                let id = ids.get(id);
                let want = model.live(id, now).map(|e| e.value.clone());
                let got = if how % 2 == 0 {
                    cache.get(id)
                } else {
                    let mut buf = vec![0u8; 4096];
                    cache.retrieve(id, &mut buf).ok().map(|n| buf[..n].to_vec())
                };
                if let Some(g) = &got {
                    prop_assert_eq!(
                        Some(g),
                        want.as_ref(),
                        "step {}: get {:02x?} returned a value the model does not hold",
                        step,
                        id
                    );
                }
            }
            Op::Remove { id } => {
                let id = ids.get(id);
                let removed = cache.remove(id);
                prop_assert!(
                    !removed || model.live(id, now).is_some(),
                    "step {}: remove found a live entry the model does not hold",
                    step
                );
                prop_assert_eq!(cache.get(id), None, "step {}: get after remove", step);
                model.map.remove(id.as_slice());
            }
            Op::Advance { us } => clock.set(Timestamp(now.0 + us)),
            Op::Iterate => {
                let snap = snapshot(&cache)?;
                let live = model.live_set(now);
                for (id, got) in &snap {
                    prop_assert_eq!(
                        Some(got),
                        live.get(id),
                        "step {}: iterate {:02x?}",
                        step,
                        id
                    );
                }
            }
            Op::Flush => {
                cache.flush();
                model.map.clear();
                prop_assert_eq!(snapshot(&cache)?.len(), 0, "step {}: flush", step);
            }
            Op::StoreOversize { id, extra } => {
                let id = ids.get(id);
                let len = max + extra as usize - id.len().min(max);
                let before = snapshot(&cache)?;
                let st_before = cache.stats();
                let got = cache.store(id, &vec![0xA5; len], Timestamp(now.0 + 60_000_000));
                prop_assert!(
                    matches!(got, Err(Error::EntryTooLarge { .. })),
                    "step {}: oversize store ({} + {} B, max {}) gave {:?}",
                    step,
                    id.len(),
                    len,
                    max,
                    got
                );
                prop_assert_eq!(
                    &snapshot(&cache)?,
                    &before,
                    "step {}: refused store changed the cache",
                    step
                );
                let st = cache.stats();
                prop_assert_eq!(st.entries, st_before.entries, "step {}", step);
                prop_assert_eq!(st.evictions, st_before.evictions, "step {}", step);
                prop_assert_eq!(st.bytes_used, st_before.bytes_used, "step {}", step);
            }
        }
        let st = cache.stats();
        prop_assert!(
            st.entries <= model.map.len() as u64,
            "step {}: {} entries, model holds {}",
            step,
            st.entries,
            model.map.len()
        );
        prop_assert!(st.bytes_used <= st.bytes_total, "step {}: {:?}", step, st);
    }
    if std::env::var_os("ENGINE_MODEL_VERBOSE").is_some() {
        eprintln!("pressure {bytes} B, {} ops: {:?}", ops.len(), cache.stats());
    }
    Ok(())
}

/// The property test `$name`: `$run(setup, &ops)` for `config(256, $seed)`'s
/// cases, each a setup index in `$setups` and an op sequence (its length in
/// `$len`) of `op_strategy($pressure)`.
macro_rules! model_test {
    ($name:ident, $seed:expr, $run:ident, $setups:expr, $pressure:expr, $len:expr) => {
        proptest! {
            #![proptest_config(config(256, $seed))]

            #[test]
            fn $name(
                setup in $setups,
                ops in proptest::collection::vec(op_strategy($pressure), $len),
            ) {
                $run(setup, &ops)?;
            }
        }
    };
}

model_test!(
    exact_model,
    0x50C4_C4E5_0001,
    run_exact,
    0..EXACT_SETUPS.len(),
    false,
    1..400
);
model_test!(
    eviction_under_pressure,
    0x50C4_C4E5_0002,
    run_pressure,
    0..PRESSURE_BUDGETS.len(),
    true,
    1..1200
);

// ---------------------------------------------------------------------------
// The eviction policy, deterministically.

/// Expired entries go before live ones: with the cache full of half
/// short-lived, half long-lived entries, once the short ones have expired new
/// stores reclaim them and evict none of the long-lived ones.
#[test]
fn expired_entries_are_reclaimed_before_live_ones_are_evicted() {
    let (cache, clock) = new_cache(32_768);
    assert_eq!(
        cache.shard_count(),
        1,
        "the test assumes one shard at 32 KiB"
    );
    let now = clock.now();
    let ids = pressure_ids(2000);
    let mut seq = 0;
    // Fill until the first eviction, alternating short and long lives.
    let mut stored: Vec<(usize, Vec<u8>, bool)> = Vec::new();
    for (i, id) in ids.iter().enumerate().skip(3) {
        let short = i % 2 == 0;
        let ttl = if short { 10 } else { 3600 };
        seq += 1;
        let v = value_for(seq, 100);
        let before = cache.stats().evictions;
        cache.store(id, &v, now.plus_secs(ttl)).expect("store");
        if cache.stats().evictions > before {
            break;
        }
        stored.push((i, v, short));
    }
    // Start over from a state with no eviction: flush and refill the same set.
    cache.flush();
    for (i, v, short) in &stored {
        let ttl = if *short { 10 } else { 3600 };
        cache
            .store(&ids[*i], v, now.plus_secs(ttl))
            .expect("refill");
    }
    let st = cache.stats();
    assert_eq!(st.entries as usize, stored.len());
    let shorts = stored.iter().filter(|s| s.2).count();
    assert!(shorts >= 20, "only {shorts} short-lived entries fit");

    clock.advance_secs(11);
    // New entries worth a third of the expired ones.
    for id in ids.iter().skip(1500).take(shorts / 3) {
        seq += 1;
        cache
            .store(id, &value_for(seq, 100), clock.now().plus_secs(3600))
            .expect("store");
    }
    let st2 = cache.stats();
    assert_eq!(
        st2.evictions, st.evictions,
        "a live entry was evicted while expired ones were there: {st2:?}"
    );
    assert!(
        st2.expirations > st.expirations,
        "nothing counted as expired: {st2:?}"
    );
    for (i, v, short) in &stored {
        let got = cache.get(&ids[*i]);
        if *short {
            assert_eq!(got, None, "expired entry returned");
        } else {
            assert_eq!(got.as_ref(), Some(v), "long-lived entry {i} lost");
        }
    }
}

/// Eviction follows use, not insertion order: an entry read between every
/// two stores survives a flood of new entries many times the cache's size,
/// where FIFO would have dropped it in the first round.
#[test]
fn recently_read_entries_survive_eviction() {
    for bytes in [8192u64, 32_768, 262_144] {
        let (cache, clock) = new_cache(bytes);
        let far = clock.now().plus_secs(3600);
        let hot: Vec<Vec<u8>> = (0..3u8).map(|i| vec![b'h', b'o', b't', i]).collect();
        let hot_values: Vec<Vec<u8>> = (0..3).map(|i| value_for(1_000_000 + i, 150)).collect();
        for (id, v) in hot.iter().zip(&hot_values) {
            cache.store(id, v, far).expect("store hot");
        }
        let ids = pressure_ids(20_000);
        let mut flood = 0;
        for (i, id) in ids.iter().enumerate().skip(3) {
            cache
                .store(id, &value_for(i as u64, 150), far)
                .expect("store");
            for (h, v) in hot.iter().zip(&hot_values) {
                assert_eq!(
                    cache.get(h).as_ref(),
                    Some(v),
                    "{bytes} B: hot entry evicted after {i} stores"
                );
            }
            flood += 1;
            // Stop after evicting about five cache-fulls.
            if cache.stats().evictions > 5 * (bytes / 200).max(40) {
                break;
            }
        }
        let st = cache.stats();
        assert!(
            st.evictions > 0,
            "{bytes} B: {flood} stores caused no eviction: {st:?}"
        );
    }
}

/// A new entry is not evicted before anyone had a chance to read it: with a
/// full cache of mixed-size entries that are stored and never read (the
/// worst case: TLS 1.3 without tickets stores a session on every
/// resumption), the newest third of what the cache holds is always all
/// there. An entry inserted without its reference bit can land just ahead
/// of the hand and go at the next store.
#[test]
fn new_entries_outlive_the_next_pass_of_the_hand() {
    for bytes in [32_768u64, 65_536, 512_000] {
        let (cache, clock) = new_cache(bytes);
        let far = clock.now().plus_secs(3600);
        let ids = pressure_ids(60_000);
        let mut rng = Rng(0x0123_4567_89AB_CDEFu64 ^ bytes);
        let mut held_at_start = 0u64;
        let mut values = Vec::with_capacity(ids.len());
        for (i, id) in ids.iter().enumerate().skip(3) {
            let len = 60 + (rng.next() % 400) as usize;
            let v = value_for(i as u64, len);
            cache.store(id, &v, far).expect("store");
            values.push((i, v));
            let st = cache.stats();
            if held_at_start == 0 && st.evictions > 0 {
                held_at_start = st.entries;
            }
            // Steady state: several cache-fulls evicted.
            if held_at_start > 0 && st.evictions > 4 * held_at_start {
                break;
            }
        }
        let st = cache.stats();
        assert!(st.evictions > 4 * held_at_start, "{bytes} B: {st:?}");
        let newest = (st.entries / 3) as usize;
        assert!(newest >= 20, "{bytes} B: only {} entries held", st.entries);
        for (i, v) in values.iter().rev().take(newest) {
            assert_eq!(
                cache.get(&ids[*i]).as_ref(),
                Some(v),
                "{bytes} B: entry {i}, among the newest {newest} of {} held, was evicted",
                st.entries
            );
        }
    }
}

/// The access pattern of TLS 1.3 without tickets, through mod_ssl and
/// OpenSSL 3: every connection resumes its client's newest session (a
/// retrieve) and is given a new one (a store; the client keeps it), so the
/// cache fills with dead sessions, each read exactly once, while the live
/// ones (one per client) have never been read. (Seen in httpd: evicting by
/// use alone then dropped the live sessions first.) While the live sessions
/// (one per client) are far fewer than the cache holds, every resumption
/// must hit, also right after a phase in which other entries were read many
/// times (a TLS 1.2 run resuming the same sessions over and over).
#[test]
fn tls13_pattern_resumes_every_live_session() {
    for bytes in [512_000u64, 65_536] {
        let (cache, clock) = new_cache(bytes);
        let far = clock.now().plus_secs(3600);
        let mut n = 0u64;
        let fresh = |n: &mut u64| {
            *n += 1;
            let mut s = Rng(*n);
            let id: Vec<u8> = (0..4).flat_map(|_| s.next().to_le_bytes()).collect();
            (id, value_for(*n, 140 + (*n % 64) as usize))
        };
        let mut misses = 0;
        let mut attempts = 0;
        for phase in 0..4 {
            // A "TLS 1.2" phase: 16 sessions resumed many times, then left.
            let hot: Vec<_> = (0..16).map(|_| fresh(&mut n)).collect();
            for (id, v) in &hot {
                cache.store(id, v, far).expect("store");
            }
            for _ in 0..50 {
                for (id, _) in &hot {
                    cache.get(id);
                }
            }
            // A "TLS 1.3" phase: 16 clients, 400 connections each.
            let mut live: Vec<_> = (0..16).map(|_| fresh(&mut n)).collect();
            for (id, v) in &live {
                cache.store(id, v, far).expect("store");
            }
            for round in 0..400 {
                for (c, session) in live.iter_mut().enumerate() {
                    attempts += 1;
                    let (id, v) = &*session;
                    if cache.get(id).as_ref() != Some(v) {
                        misses += 1;
                        eprintln!("{bytes} B: phase {phase} round {round} client {c}: miss");
                    }
                    *session = fresh(&mut n);
                    cache.store(&session.0, &session.1, far).expect("store");
                }
            }
        }
        let st = cache.stats();
        assert!(
            st.evictions > 10_000,
            "{bytes} B: the pattern must evict: {st:?}"
        );
        assert_eq!(
            misses, 0,
            "{bytes} B: {misses} of {attempts} resumptions missed: {st:?}"
        );
    }
}
