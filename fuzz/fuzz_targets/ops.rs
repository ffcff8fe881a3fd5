//! Coverage-guided operation sequences against a model.
//!
//! The input bytes decode into operations (store, get, retrieve into a
//! buffer of chosen size, remove, clock moves, iterate, flush, oversize
//! stores) on a small cache driven by a `ManualClock`, checked against a
//! `BTreeMap` model:
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

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use socache_shm_engine::{Cache, CacheConfig, Error, ManualClock, Miss, Stored, Timestamp};

const START_US: i64 = 1_700_000_000_500_000;
const BUDGETS: [u64; 3] = [8192, 16_384, 65_536];

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes([self.byte()?, self.byte()?]))
    }
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

/// A value unique to `seq` when 8 bytes or longer.
fn value(seq: u64, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len + 8);
    let mut x = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    v.extend_from_slice(&seq.to_le_bytes());
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

fn expired(expiry: Timestamp, now: Timestamp) -> bool {
    now.as_secs() >= expiry.as_secs()
}

fn snapshot(cache: &Cache) -> BTreeMap<Vec<u8>, (Vec<u8>, i64)> {
    let mut out = BTreeMap::new();
    cache.iterate(&mut |id, v, exp| {
        assert!(
            out.insert(id.to_vec(), (v.to_vec(), exp.as_secs()))
                .is_none(),
            "iterate: an id twice"
        );
        ControlFlow::Continue(())
    });
    out
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let Some(b) = input.byte() else { return };
    let clock = ManualClock::new(Timestamp(START_US));
    let cache = Cache::create(&CacheConfig::new(BUDGETS[b as usize % BUDGETS.len()]))
        .expect("create")
        .with_clock(Arc::new(clock.clone()));
    let max = cache.max_entry_size() as usize;
    // id -> (value, expiry): the last store of each id.
    let mut model: BTreeMap<Vec<u8>, (Vec<u8>, Timestamp)> = BTreeMap::new();
    let mut seq = 0u64;
    // Evictions counted when the model was last exact (creation or flush).
    let mut evictions_base = 0u64;

    while let Some(op) = input.byte() {
        let now = cache.now();
        let exact = cache.stats().evictions == evictions_base;
        let live = |m: &BTreeMap<Vec<u8>, (Vec<u8>, Timestamp)>, id: &[u8]| {
            m.get(id)
                .filter(|(_, e)| !expired(*e, now))
                .map(|(v, _)| v.clone())
        };
        match op % 8 {
            0..=2 => {
                let (Some(i), Some(len), Some(ttl)) = (input.byte(), input.u16(), input.byte())
                else {
                    break;
                };
                let id = id(i);
                let len = len as usize % (max + 64);
                seq += 1;
                let v = value(seq, len);
                // -16..=111 seconds, with a sub-second part from the op byte.
                let expiry = Timestamp(now.0 + (ttl as i64 - 16) * 1_000_000 + op as i64 * 3_000);
                if id.len() + len > max {
                    let before = snapshot(&cache);
                    let st = cache.stats();
                    let r = cache.store(&id, &v, expiry);
                    assert!(
                        matches!(r, Err(Error::EntryTooLarge { .. })),
                        "oversize: {r:?}"
                    );
                    assert_eq!(
                        snapshot(&cache),
                        before,
                        "a refused store changed the cache"
                    );
                    let st2 = cache.stats();
                    assert_eq!((st2.entries, st2.evictions), (st.entries, st.evictions));
                    continue;
                }
                let was_live = live(&model, &id).is_some();
                let r = cache
                    .store(&id, &v, expiry)
                    .expect("a normal-size store is refused");
                if exact && was_live {
                    assert_eq!(r, Stored::Replaced);
                }
                if exact && !model.contains_key(&id) {
                    assert_eq!(r, Stored::Inserted);
                }
                if expired(expiry, now) {
                    model.remove(&id);
                    assert_eq!(cache.get(&id), None, "an expired store is returned");
                } else {
                    assert_eq!(
                        cache.get(&id).as_ref(),
                        Some(&v),
                        "not retrievable right after store"
                    );
                    model.insert(id, (v, expiry));
                }
            }
            3 | 4 => {
                let (Some(i), Some(cap)) = (input.byte(), input.u16()) else {
                    break;
                };
                let id = id(i);
                let want = live(&model, &id);
                let got = if op % 8 == 3 {
                    cache.get(&id)
                } else {
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
                };
                if exact {
                    assert_eq!(got, want, "exact: lookup disagrees with the model");
                } else if let Some(g) = &got {
                    assert_eq!(Some(g), want.as_ref(), "a value the model does not hold");
                }
                if want.is_none() {
                    model.remove(&id);
                }
            }
            5 => {
                let Some(i) = input.byte() else { break };
                let id = id(i);
                let removed = cache.remove(&id);
                let was_live = live(&model, &id).is_some();
                if exact {
                    assert_eq!(removed, was_live);
                } else {
                    assert!(!removed || was_live, "removed an entry the model lacks");
                }
                assert_eq!(cache.get(&id), None);
                model.remove(&id);
            }
            6 => {
                let Some(us) = input.u16() else { break };
                clock.set(Timestamp(now.0 + us as i64 * 100));
            }
            _ => {
                let Some(what) = input.byte() else { break };
                if what % 4 == 0 {
                    cache.flush();
                    model.clear();
                    evictions_base = cache.stats().evictions;
                    assert_eq!(cache.stats().entries, 0);
                } else {
                    let snap = snapshot(&cache);
                    let want: BTreeMap<Vec<u8>, (Vec<u8>, i64)> = model
                        .iter()
                        .filter(|(_, (_, e))| !expired(*e, now))
                        .map(|(k, (v, e))| (k.clone(), (v.clone(), e.as_secs())))
                        .collect();
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
