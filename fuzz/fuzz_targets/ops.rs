//! Coverage-guided operation sequences against a model.
//!
//! The input decodes (`arbitrary`) into a budget and a list of operations
//! (store, get, retrieve into a buffer of chosen size, remove, clock moves,
//! iterate, flush, oversize stores) on a small cache driven by a
//! `ManualClock`, checked against the test kit's `Model` (the one the
//! property tests of engine/tests/engine_model.rs use, with the engine's
//! expiry rule):
//! - while nothing has been evicted (since creation or the last flush), the
//!   cache must agree with the model exactly;
//! - always: no value the model does not hold for that id (stale, foreign or
//!   expired), every normal-size store accepted and retrievable right away,
//!   oversize stores refused with `EntryTooLarge` and nothing else changed.
//!
//! ```text
//! RUSTC_BOOTSTRAP=1 cargo fuzz run ops
//! ```
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use socache_shm_engine::testkit::{expired, snapshot, value_for, Model};
use socache_shm_engine::{Cache, CacheConfig, Error, ManualClock, Miss, Stored, Timestamp};

const START_US: i64 = 1_700_000_000_500_000;
const BUDGETS: [u64; 3] = [8192, 16_384, 65_536];

#[derive(Arbitrary, Debug)]
struct Input {
    /// Index into `BUDGETS`.
    budget: u8,
    ops: Vec<Op>,
}

#[derive(Arbitrary, Debug)]
enum Op {
    /// Store the next unique value of `len % (max + 64)` bytes (oversize
    /// past the maximum) under `id(id)`, expiring `ttl - 16` seconds and a
    /// sub-second part `sub` from now.
    Store {
        id: u8,
        len: u16,
        ttl: u8,
        sub: u8,
    },
    Get {
        id: u8,
    },
    /// Retrieve into a buffer of `cap % 512` bytes.
    Retrieve {
        id: u8,
        cap: u16,
    },
    Remove {
        id: u8,
    },
    /// Move the clock forward `us * 100` microseconds.
    Advance {
        us: u16,
    },
    /// Flush when `what % 4 == 0`, else compare `iterate` with the model.
    Whole {
        what: u8,
    },
}

/// 48 ids: empty, one-byte, prefixes of each other, 32-byte, long.
fn id(i: u8) -> Vec<u8> {
    match i % 48 {
        0 => Vec::new(),
        1 => vec![0],
        2 => vec![0, 0],
        3 => b"a".to_vec(),
        4 => b"ab".to_vec(),
        5 => vec![b'L'; 400],
        n => {
            let mut v = vec![n; 32];
            v[0] = b'#';
            v[31] = n.wrapping_mul(31);
            v
        }
    }
}

fn whole_snapshot(cache: &Cache) -> socache_shm_engine::testkit::LiveSet {
    snapshot(cache).unwrap_or_else(|id| panic!("iterate: id {id:02x?} twice"))
}

fuzz_target!(|input: Input| {
    let clock = ManualClock::new(Timestamp(START_US));
    let cache = Cache::create(&CacheConfig::new(
        BUDGETS[input.budget as usize % BUDGETS.len()],
    ))
    .expect("create")
    .with_clock(Arc::new(clock.clone()));
    let max = cache.max_entry_size() as usize;
    let mut model = Model::default();
    let mut seq = 0u64;
    // Evictions counted when the model was last exact (creation or flush).
    let mut evictions_base = 0u64;

    for op in input.ops {
        let now = cache.now();
        let exact = cache.stats().evictions == evictions_base;
        match op {
            Op::Store {
                id: i,
                len,
                ttl,
                sub,
            } => {
                let id = id(i);
                let len = len as usize % (max + 64);
                seq += 1;
                let v = value_for(seq, len);
                // -16..=239 seconds, with a sub-second part.
                let expiry = Timestamp(now.0 + (ttl as i64 - 16) * 1_000_000 + sub as i64 * 3_000);
                if id.len() + len > max {
                    let before = whole_snapshot(&cache);
                    let st = cache.stats();
                    let r = cache.store(&id, &v, expiry);
                    assert!(
                        matches!(r, Err(Error::EntryTooLarge { .. })),
                        "oversize: {r:?}"
                    );
                    assert_eq!(
                        whole_snapshot(&cache),
                        before,
                        "a refused store changed the cache"
                    );
                    let st2 = cache.stats();
                    assert_eq!((st2.entries, st2.evictions), (st.entries, st.evictions));
                    continue;
                }
                let was_live = model.live(&id, now).is_some();
                let was_held = model.map.contains_key(&id);
                let r = cache
                    .store(&id, &v, expiry)
                    .expect("a normal-size store is refused");
                if exact && was_live {
                    assert_eq!(r, Stored::Replaced);
                }
                if exact && !was_held {
                    assert_eq!(r, Stored::Inserted);
                }
                if expired(expiry, now) {
                    assert_eq!(cache.get(&id), None, "an expired store is returned");
                } else {
                    assert_eq!(
                        cache.get(&id).as_ref(),
                        Some(&v),
                        "not retrievable right after store"
                    );
                }
                model.store(&id, v, expiry, now);
            }
            Op::Get { id: i } | Op::Retrieve { id: i, .. } => {
                let id = id(i);
                let want = model.live(&id, now).map(|e| e.value.clone());
                let got = match op {
                    Op::Retrieve { cap, .. } => {
                        let mut buf = vec![0u8; cap as usize % 512];
                        match cache.retrieve(&id, &mut buf) {
                            Ok(n) => Some(buf[..n].to_vec()),
                            Err(Miss::NotFound) => None,
                            Err(Miss::BufferTooSmall { needed }) => {
                                let w = want
                                    .as_ref()
                                    .expect("BufferTooSmall for an entry the model lacks");
                                assert_eq!(needed, w.len());
                                assert!(buf.len() < needed);
                                Some(w.clone()) // checked: the size is right
                            }
                            Err(other) => panic!("{other:?}: nothing corrupts or locks up here"),
                        }
                    }
                    _ => cache.get(&id),
                };
                if exact {
                    assert_eq!(got, want, "exact: lookup disagrees with the model");
                } else if let Some(g) = &got {
                    assert_eq!(Some(g), want.as_ref(), "a value the model does not hold");
                }
                model.looked_up(&id, now);
            }
            Op::Remove { id: i } => {
                let id = id(i);
                let removed = cache.remove(&id);
                let was_live = model.live(&id, now).is_some();
                if exact {
                    assert_eq!(removed, was_live);
                } else {
                    assert!(!removed || was_live, "removed an entry the model lacks");
                }
                assert_eq!(cache.get(&id), None);
                model.remove(&id);
            }
            Op::Advance { us } => clock.set(Timestamp(now.0 + us as i64 * 100)),
            Op::Whole { what } => {
                if what % 4 == 0 {
                    cache.flush();
                    model.clear();
                    evictions_base = cache.stats().evictions;
                    assert_eq!(cache.stats().entries, 0);
                } else {
                    let snap = whole_snapshot(&cache);
                    let want = model.live_set(now);
                    if exact {
                        assert_eq!(snap, want, "exact: iterate disagrees with the model");
                    } else {
                        for (k, got) in &snap {
                            assert_eq!(Some(got), want.get(k), "iterate: a value the model lacks");
                        }
                    }
                }
            }
        }
        let st = cache.stats();
        assert!(
            st.entries <= model.len() as u64,
            "more entries than the model holds"
        );
        assert!(st.bytes_used <= st.bytes_total);
    }
});
