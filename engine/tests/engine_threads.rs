//! Threads of one process on one cache, small enough for miri and
//! ThreadSanitizer (scripts/concurrency-checks.sh runs this file under
//! both, and natively with the other tests): unlocked readers (the seqlock
//! path, `Shard::get_unlocked`) beside writers that insert, replace and
//! remove entries of the same shard, and locked readers and writers on
//! their own. No fork, no file: an anonymous segment, which under miri is
//! heap-backed (`segment.rs`).

use std::sync::atomic::{AtomicU32, Ordering};

use socache_shm_engine::{Cache, CacheConfig, Timestamp};

/// Operations per thread: miri interprets every access.
const OPS: u32 = if cfg!(miri) { 60 } else { 20_000 };

fn far() -> Timestamp {
    Timestamp::from_secs(4_000_000_000)
}

/// A value that names its id and version, so a torn or foreign one shows.
fn value(id: u32, version: u32, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(&id.to_le_bytes());
    v.extend_from_slice(&version.to_le_bytes());
    while v.len() < len {
        v.push((id as u8) ^ (version as u8) ^ (v.len() as u8));
    }
    v
}

fn check(id: u32, v: &[u8]) -> Result<u32, String> {
    if v.len() < 8 || v[..4] != id.to_le_bytes() {
        return Err(format!("id {id}: foreign or short value {v:?}"));
    }
    let version = u32::from_le_bytes(v[4..8].try_into().unwrap());
    if *v != value(id, version, v.len())[..] {
        return Err(format!("id {id}: torn value of version {version}"));
    }
    Ok(version)
}

/// Readers that go through the unlocked path beside a writer rewriting
/// the neighbours of their entries (same shard: 64 KiB has one). Every
/// read of a fixed entry must hit with exactly its bytes; every read of a
/// churned one must miss or be a whole version of it.
#[test]
fn unlocked_readers_beside_a_writer() {
    let cache = Cache::create(&CacheConfig::new(65_536)).expect("create");
    assert_eq!(cache.shard_count(), 1, "the test wants one shard");
    let fixed: Vec<(u32, Vec<u8>)> = (0..4u32)
        .map(|i| (i, value(i, 0, 40 + 8 * i as usize)))
        .collect();
    for (id, v) in &fixed {
        cache.store(&id.to_le_bytes(), v, far()).unwrap();
        // Two locked reads raise the entry to the top use count, from
        // which the unlocked path answers (shard.rs, rule 5).
        for _ in 0..2 {
            assert_eq!(cache.get(&id.to_le_bytes()).as_deref(), Some(&v[..]));
        }
    }
    let before = cache.stats().unlocked_reads;
    let done = AtomicU32::new(0);
    std::thread::scope(|s| {
        s.spawn(|| {
            for n in 0..OPS {
                let id = 100 + n % 6;
                if n % 3 == 2 {
                    cache.remove(&id.to_le_bytes());
                } else {
                    let v = value(id, n, 20 + (n as usize * 7) % 90);
                    cache.store(&id.to_le_bytes(), &v, far()).unwrap();
                }
            }
            done.fetch_add(1, Ordering::Release);
        });
        for r in 0..2u32 {
            let (cache, fixed, done) = (&cache, &fixed, &done);
            s.spawn(move || {
                let mut buf = [0u8; 256];
                let mut n = 0u32;
                while n < OPS || done.load(Ordering::Acquire) == 0 {
                    let (id, v) = &fixed[((n + r) % 4) as usize];
                    let got = cache.retrieve(&id.to_le_bytes(), &mut buf);
                    assert_eq!(got, Ok(v.len()), "fixed entry {id} missed");
                    assert_eq!(&buf[..v.len()], &v[..], "fixed entry {id} torn");
                    let churned = 100 + n % 6;
                    if let Ok(len) = cache.retrieve(&churned.to_le_bytes(), &mut buf) {
                        check(churned, &buf[..len]).unwrap();
                    }
                    n += 1;
                    if n > 100 * OPS {
                        break;
                    }
                }
            });
        }
    });
    let st = cache.stats();
    assert!(
        st.unlocked_reads > before,
        "no read took the unlocked path: {st:?}"
    );
    cache.check().unwrap();
}

/// Writers and locked readers (entries never read twice stay below the
/// unlocked path's use count) on shared ids: the lock alone orders them.
#[test]
fn locked_writers_and_readers_share_ids() {
    let cache = Cache::create(&CacheConfig::new(65_536)).expect("create");
    std::thread::scope(|s| {
        for w in 0..3u32 {
            let cache = &cache;
            s.spawn(move || {
                let mut buf = [0u8; 256];
                for n in 0..OPS {
                    let id = (n + w) % 8;
                    match (n + w) % 4 {
                        0 => {
                            cache.remove(&id.to_le_bytes());
                        }
                        1 => {
                            if let Ok(len) = cache.retrieve(&id.to_le_bytes(), &mut buf) {
                                check(id, &buf[..len]).unwrap();
                            }
                        }
                        _ => {
                            let v = value(id, n * 4 + w, 16 + (n as usize) % 100);
                            cache.store(&id.to_le_bytes(), &v, far()).unwrap();
                        }
                    }
                }
            });
        }
    });
    let st = cache.stats();
    assert_eq!(st.lock_timeouts, 0, "{st:?}");
    cache.check().unwrap();
}
