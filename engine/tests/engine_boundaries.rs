//! The engine at its edges: odd ids and values, the size limits, budgets,
//! expiry at and before "now", replacement, flush, file-backed segments
//! (mode, reattach, attach, corrupt files), fd hand-over, and secrets: the
//! bytes of departed entries must be gone from the segment.

use std::ops::ControlFlow;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use socache_shm_engine::testkit::Rng;
use socache_shm_engine::{
    Cache, CacheConfig, Clock, Error, ManualClock, Miss, Opened, Replacement, Stats, Stored,
    Timestamp,
};

// ---------------------------------------------------------------------------
// Helpers

const START_US: i64 = 1_700_000_000_250_000;

/// `len` random-looking bytes, unique per `seed`.
fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut s = Rng(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ 0xB0B0_CAFE);
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        v.extend_from_slice(&s.next().to_le_bytes());
    }
    v.truncate(len);
    v
}

fn manual(cache: Cache) -> (Cache, ManualClock) {
    let clock = ManualClock::new(Timestamp(START_US));
    (cache.with_clock(Arc::new(clock.clone())), clock)
}

fn anon(bytes: u64) -> (Cache, ManualClock) {
    manual(
        Cache::create(&CacheConfig::new(bytes)).unwrap_or_else(|e| panic!("create {bytes}: {e}")),
    )
}

fn far(cache: &Cache) -> Timestamp {
    cache.now().plus_secs(3600)
}

/// Store entries `0..n` (`bytes(i, 32)` → `bytes(i, 160)`), expiring in
/// 2096: segments that outlive their cache (reattached) keep them.
fn store_numbered(c: &Cache, n: u64) {
    for i in 0..n {
        c.store(
            &bytes(i, 32),
            &bytes(i, 160),
            Timestamp::from_secs(4_000_000_000),
        )
        .unwrap();
    }
}

/// Every entry of [`store_numbered`]`(_, n)` is there, with its value.
fn assert_numbered(c: &Cache, n: u64, when: &str) {
    for i in 0..n {
        assert_eq!(
            c.get(&bytes(i, 32)),
            Some(bytes(i, 160)),
            "entry {i} {when}"
        );
    }
}

fn snapshot(cache: &Cache) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    cache.iterate(&mut |id, v, _| {
        out.push((id.to_vec(), v.to_vec()));
        ControlFlow::Continue(())
    });
    out.sort();
    out
}

/// A directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let p = std::env::temp_dir().join(format!(
            "socache-shm-test-{tag}-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn file_config(path: &Path, bytes: u64) -> CacheConfig {
    CacheConfig {
        path: Some(path.to_path_buf()),
        ..CacheConfig::new(bytes)
    }
}

/// Whether `needle` occurs anywhere in `hay`.
fn contains(hay: &[u8], needle: &[u8]) -> bool {
    assert!(!needle.is_empty());
    let first = needle[0];
    let last_start = match hay.len().checked_sub(needle.len()) {
        Some(n) => n,
        None => return false,
    };
    let mut i = 0;
    while i <= last_start {
        match hay[i..=last_start].iter().position(|&b| b == first) {
            None => return false,
            Some(off) => {
                i += off;
                if &hay[i..i + needle.len()] == needle {
                    return true;
                }
                i += 1;
            }
        }
    }
    false
}

// ---------------------------------------------------------------------------
// Ids

#[test]
fn empty_id_is_an_id_like_any_other() {
    let (c, _) = anon(65_536);
    assert_eq!(c.get(b""), None);
    assert_eq!(
        c.store(b"", b"empty-id value", far(&c)).unwrap(),
        Stored::Inserted
    );
    c.store(b"\0", b"nul id", far(&c)).unwrap();
    assert_eq!(c.get(b"").as_deref(), Some(&b"empty-id value"[..]));
    assert_eq!(c.get(b"\0").as_deref(), Some(&b"nul id"[..]));
    assert_eq!(
        snapshot(&c),
        vec![
            (b"".to_vec(), b"empty-id value".to_vec()),
            (b"\0".to_vec(), b"nul id".to_vec())
        ]
    );
    assert!(c.remove(b""));
    assert!(!c.remove(b""));
    assert_eq!(c.get(b""), None);
    assert_eq!(c.get(b"\0").as_deref(), Some(&b"nul id"[..]));
}

#[test]
fn every_one_byte_id_is_distinct() {
    let (c, _) = anon(1 << 20);
    for b in 0..=255u8 {
        c.store(&[b], &bytes(b as u64, 100), far(&c)).unwrap();
    }
    assert_eq!(c.stats().entries, 256);
    for b in 0..=255u8 {
        assert_eq!(c.get(&[b]), Some(bytes(b as u64, 100)), "id {b:#04x}");
    }
    // Two-byte ids starting with each byte are not confused with them.
    for b in 0..=255u8 {
        assert_eq!(c.get(&[b, 0]), None);
    }
}

#[test]
fn very_long_ids_are_stored_or_refused_by_the_maximum() {
    // 128 MiB: shards large enough that a 60,000-byte id fits.
    let (big, _) = anon(128 << 20);
    let max = big.max_entry_size() as usize;
    assert!(max >= 70_100, "max_entry_size {max} at 128 MiB");
    let id = bytes(7, 60_000);
    let mut twin = id.clone();
    *twin.last_mut().unwrap() ^= 1;
    big.store(&id, b"long-id value", far(&big)).unwrap();
    assert_eq!(big.get(&id).as_deref(), Some(&b"long-id value"[..]));
    assert_eq!(big.get(&twin), None, "ids differing in their last byte");
    assert_eq!(big.get(&id[..59_999]), None, "a prefix of the id");
    // The longest id an entry records (16 bits of length), with a value
    // that fills the entry to the maximum.
    let id_max = bytes(8, 65_535);
    let value = bytes(3, max - 65_535);
    big.store(&id_max, &value, far(&big)).unwrap();
    assert_eq!(big.get(&id_max), Some(value));
    // One byte longer: refused as too long, though the entry would fit.
    let id_over = bytes(9, 65_536);
    match big.store(&id_over, b"", far(&big)) {
        Err(Error::IdTooLong { len, max }) => assert_eq!((len, max), (65_536, 65_535)),
        other => panic!("id of 65,536 bytes: {other:?}"),
    }
    assert_eq!(big.get(&id_over), None);
    // Over the entry maximum: too large.
    let value_over = bytes(4, max - 65_535 + 1);
    match big.store(&id_max, &value_over, far(&big)) {
        Err(Error::EntryTooLarge { max: m, .. }) => assert_eq!(m, max as u64),
        other => panic!("entry of max+1 bytes: {other:?}"),
    }
    let id = bytes(7, 20_000);

    // At the default 512,000 bytes a 20,000-byte id is refused.
    let (small, _) = anon(512_000);
    assert!((small.max_entry_size() as usize) < 20_000);
    assert!(matches!(
        small.store(&id, b"v", far(&small)),
        Err(Error::EntryTooLarge { .. })
    ));
    assert_eq!(small.stats().entries, 0);
}

// ---------------------------------------------------------------------------
// Values and sizes

#[test]
fn zero_length_values_are_hits_not_misses() {
    let (c, _) = anon(65_536);
    c.store(b"zero", b"", far(&c)).unwrap();
    assert_eq!(c.get(b"zero"), Some(Vec::new()));
    assert_eq!(c.retrieve(b"zero", &mut []), Ok(0));
    assert_eq!(c.retrieve(b"none", &mut []), Err(Miss::NotFound));
    let mut buf = [0xEEu8; 8];
    assert_eq!(c.retrieve(b"zero", &mut buf), Ok(0));
    assert_eq!(buf, [0xEE; 8], "nothing written for an empty value");
    assert_eq!(snapshot(&c), vec![(b"zero".to_vec(), Vec::new())]);
}

#[test]
fn retrieve_into_a_short_buffer_reports_the_size_needed() {
    let (c, _) = anon(65_536);
    let v = bytes(1, 300);
    c.store(b"id", &v, far(&c)).unwrap();
    let mut small = vec![0u8; 299];
    assert_eq!(
        c.retrieve(b"id", &mut small),
        Err(Miss::BufferTooSmall { needed: 300 })
    );
    assert!(
        small.iter().all(|&b| b == 0),
        "a short buffer is left alone"
    );
    let mut exact = vec![0u8; 300];
    assert_eq!(c.retrieve(b"id", &mut exact), Ok(300));
    assert_eq!(exact, v);
}

/// Fill a cache with TLS-session-sized entries until the first eviction.
fn fill(c: &Cache, seed: u64) -> usize {
    let mut n = 0;
    for i in 0.. {
        let before = c.stats().evictions;
        c.store(
            &bytes(seed + i, 32),
            &bytes(seed + i + 1_000_000, 160),
            far(c),
        )
        .unwrap();
        n += 1;
        if c.stats().evictions > before {
            break;
        }
    }
    n
}

#[test]
fn maximum_size_entries_store_and_one_more_byte_is_refused() {
    for bytes_budget in [8192u64, 65_536, 512_000, 1 << 20] {
        let (c, _) = anon(bytes_budget);
        let max = c.max_entry_size() as usize;
        assert!(max >= 192, "{bytes_budget}: max {max}");

        // Exactly the maximum, into an empty cache.
        let id = bytes(1, 32);
        let v = bytes(2, max - 32);
        c.store(&id, &v, far(&c))
            .unwrap_or_else(|e| panic!("{bytes_budget}: max entry: {e}"));
        assert_eq!(c.get(&id).as_ref(), Some(&v));

        // Exactly the maximum, into a full cache: made room for, never refused.
        c.flush();
        fill(&c, 100);
        let id2 = bytes(3, 32);
        let v2 = bytes(4, max - 32);
        c.store(&id2, &v2, far(&c))
            .unwrap_or_else(|e| panic!("{bytes_budget}: max entry into a full cache: {e}"));
        assert_eq!(c.get(&id2).as_ref(), Some(&v2));

        // One byte more: refused, and nothing else changes.
        fill(&c, 200);
        let before = snapshot(&c);
        let st: Stats = c.stats();
        for (idl, vl) in [(32, max - 31), (0, max + 1), (max + 1, 0), (33, max - 32)] {
            match c.store(&bytes(5, idl), &bytes(6, vl), far(&c)) {
                Err(e @ Error::EntryTooLarge { .. }) => {
                    let Error::EntryTooLarge { max: m, .. } = e else {
                        unreachable!()
                    };
                    assert_eq!(m, max as u64, "the error names the maximum");
                    let text = e.to_string();
                    assert!(
                        text.contains(&max.to_string()) && text.contains("maximum"),
                        "{text}"
                    );
                }
                other => panic!("{bytes_budget}: {idl}+{vl} bytes (max {max}): {other:?}"),
            }
        }
        // Replacing an existing id with an oversize value keeps the old value.
        let (old_id, old_v) = before.last().cloned().expect("cache not empty");
        assert!(matches!(
            c.store(&old_id, &bytes(7, max), far(&c)),
            Err(Error::EntryTooLarge { .. })
        ));
        assert_eq!(
            snapshot(&c),
            before,
            "{bytes_budget}: a refused store changed the cache"
        );
        assert_eq!(c.get(&old_id), Some(old_v));
        let st2 = c.stats();
        assert_eq!(
            (
                st2.entries,
                st2.evictions,
                st2.expirations,
                st2.bytes_used,
                st2.stores
            ),
            (
                st.entries,
                st.evictions,
                st.expirations,
                st.bytes_used,
                st.stores
            ),
            "{bytes_budget}"
        );
        assert!(
            st2.refused >= st.refused + 5,
            "refusals are counted: {st2:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// Budgets

#[test]
fn a_budget_too_small_is_refused_with_a_clear_error() {
    for bytes in [0u64, 1, 4096, 8191] {
        match Cache::create(&CacheConfig::new(bytes)) {
            Err(e @ Error::BudgetTooSmall { .. }) => {
                let Error::BudgetTooSmall { bytes: b, min } = e else {
                    unreachable!()
                };
                assert_eq!((b, min), (bytes, 8192));
                let text = e.to_string();
                assert!(
                    text.contains("too small") && text.contains("8192"),
                    "{text}"
                );
                assert!(text.contains(&bytes.to_string()), "{text}");
            }
            Err(e) => panic!("{bytes}: wrong error {e:?}"),
            Ok(_) => panic!("{bytes}: created"),
        }
    }
    // File-backed too, and no file is left behind.
    let dir = TempDir::new("small");
    let p = dir.path("seg");
    assert!(matches!(
        Cache::create(&file_config(&p, 100)),
        Err(Error::BudgetTooSmall { .. })
    ));
    assert!(!p.exists());
    // Huge budgets are refused up front, not by a failed mapping.
    assert!(matches!(
        Cache::create(&CacheConfig::new(u64::MAX)),
        Err(Error::BudgetTooLarge { .. })
    ));

    // The minimum works and holds TLS sessions.
    let (c, _) = anon(8192);
    assert!(c.max_entry_size() >= 192);
    for i in 0..10 {
        c.store(&bytes(i, 32), &bytes(i + 50, 160), far(&c))
            .unwrap();
        assert_eq!(c.get(&bytes(i, 32)), Some(bytes(i + 50, 160)));
    }
    let st = c.stats();
    assert!(st.bytes_total <= 8192, "{st:?}");
}

// ---------------------------------------------------------------------------
// Expiry

#[test]
fn expiry_in_the_past_or_this_second_stores_nothing() {
    let (c, clock) = anon(65_536);
    let now = c.now();
    assert_eq!(
        c.store(b"past", b"v", now.plus_secs(-10)).unwrap(),
        Stored::Inserted
    );
    assert_eq!(c.get(b"past"), None);
    assert_eq!(
        c.store(b"epoch", b"v", Timestamp(0)).unwrap(),
        Stored::Inserted
    );
    assert_eq!(c.get(b"epoch"), None);
    // Expiry within the current second: already expired (whole seconds).
    let this_second = Timestamp(Timestamp::from_secs(now.as_secs()).0 + 999_999);
    c.store(b"now", b"v", this_second).unwrap();
    assert_eq!(c.get(b"now"), None);
    assert_eq!(c.stats().entries, 0);
    assert!(snapshot(&c).is_empty());

    // A past expiry over a live entry: the old value is gone too.
    c.store(b"live", b"old", now.plus_secs(60)).unwrap();
    assert_eq!(
        c.store(b"live", b"new", now.plus_secs(-1)).unwrap(),
        Stored::Replaced
    );
    assert_eq!(c.get(b"live"), None);
    assert_eq!(c.stats().entries, 0);

    // Next second: live until the clock's second reaches it.
    let next = Timestamp::from_secs(now.as_secs() + 1);
    c.store(b"next", b"v", next).unwrap();
    assert_eq!(c.get(b"next").as_deref(), Some(&b"v"[..]));
    clock.set(Timestamp(next.0 - 1));
    assert_eq!(c.get(b"next").as_deref(), Some(&b"v"[..]));
    clock.set(next);
    assert_eq!(c.get(b"next"), None);
    assert!(snapshot(&c).is_empty());
    assert!(c.stats().expirations >= 1);
    // Remove of an expired entry reports nothing removed.
    c.store(b"exp", b"v", clock.now().plus_secs(1)).unwrap();
    clock.advance_secs(1);
    assert!(!c.remove(b"exp"));
}

#[test]
fn iterate_reports_expiry_and_skips_expired_entries() {
    let (c, clock) = anon(65_536);
    let now = c.now();
    c.store(b"a", b"1", now.plus_secs(5)).unwrap();
    c.store(b"b", b"2", now.plus_secs(50)).unwrap();
    let mut seen = Vec::new();
    c.iterate(&mut |id, v, exp| {
        seen.push((id.to_vec(), v.to_vec(), exp.as_secs()));
        ControlFlow::Continue(())
    });
    seen.sort();
    assert_eq!(
        seen,
        vec![
            (b"a".to_vec(), b"1".to_vec(), now.as_secs() + 5),
            (b"b".to_vec(), b"2".to_vec(), now.as_secs() + 50)
        ]
    );
    clock.advance_secs(5);
    assert_eq!(snapshot(&c), vec![(b"b".to_vec(), b"2".to_vec())]);
    // Break stops the walk; the visitor may call back into the cache.
    for i in 0..50u64 {
        c.store(&bytes(i, 32), &bytes(i, 10), far(&c)).unwrap();
    }
    let mut n = 0;
    c.iterate(&mut |id, _, _| {
        n += 1;
        assert!(c.get(id).is_some());
        ControlFlow::Break(())
    });
    assert_eq!(n, 1);
}

// ---------------------------------------------------------------------------
// Replacement and flush

#[test]
fn replacement_returns_replaced_and_counts() {
    let (c, _) = anon(65_536);
    assert_eq!(
        c.store(b"id", &bytes(1, 100), far(&c)).unwrap(),
        Stored::Inserted
    );
    assert_eq!(
        c.store(b"id", &bytes(2, 1000), far(&c)).unwrap(),
        Stored::Replaced
    );
    assert_eq!(c.get(b"id"), Some(bytes(2, 1000)));
    assert_eq!(
        c.store(b"id", &bytes(3, 10), far(&c)).unwrap(),
        Stored::Replaced
    );
    assert_eq!(c.get(b"id"), Some(bytes(3, 10)));
    let st = c.stats();
    assert_eq!(
        (st.entries, st.replacements, st.stores),
        (1, 2, 3),
        "{st:?}"
    );
    assert_eq!(snapshot(&c), vec![(b"id".to_vec(), bytes(3, 10))]);
    // After a remove, the next store is an insert again.
    assert!(c.remove(b"id"));
    assert_eq!(c.store(b"id", b"x", far(&c)).unwrap(), Stored::Inserted);
}

#[test]
fn flush_empties_every_shard() {
    let (c, _) = anon(1 << 20);
    assert!(c.shard_count() > 1);
    let empty_used = c.stats().bytes_used;
    for i in 0..500u64 {
        c.store(&bytes(i, 32), &bytes(i, 160), far(&c)).unwrap();
    }
    assert_eq!(c.stats().entries, 500);
    c.flush();
    let st = c.stats();
    assert_eq!(st.entries, 0);
    assert_eq!(st.bytes_used, empty_used, "{st:?}");
    assert!(snapshot(&c).is_empty());
    for i in 0..500u64 {
        assert_eq!(c.get(&bytes(i, 32)), None);
    }
    let per_shard: u64 = c.shard_stats().iter().map(|s| s.entries).sum();
    assert_eq!(per_shard, 0);
    // Usable afterwards.
    c.store(b"after", b"flush", far(&c)).unwrap();
    assert_eq!(c.get(b"after").as_deref(), Some(&b"flush"[..]));
}

#[test]
fn stats_add_up_over_shards() {
    let (c, _) = anon(1 << 20);
    for i in 0..300u64 {
        c.store(&bytes(i, 32), &bytes(i, 160), far(&c)).unwrap();
        c.get(&bytes(i, 32));
        c.get(&bytes(i + 10_000, 32));
    }
    let st = c.stats();
    let shards = c.shard_stats();
    assert_eq!(shards.len(), c.shard_count());
    assert_eq!(shards.iter().map(|s| s.entries).sum::<u64>(), st.entries);
    // Retrieves answered without a lock are counted per CPU, not per shard.
    assert_eq!(
        shards.iter().map(|s| s.hits + s.misses).sum::<u64>() + st.unlocked_reads,
        st.hits + st.misses
    );
    assert_eq!(
        (st.entries, st.hits, st.misses, st.stores),
        (300, 300, 300, 300)
    );
    assert!(st.bytes_used + st.bytes_free <= st.bytes_total);
    assert!(st.largest_free_block <= st.bytes_free);
    // The arenas' bytes: most of the budget, never more.
    assert!(
        st.bytes_total <= 1 << 20 && st.bytes_total > (1 << 20) * 3 / 4,
        "{st:?}"
    );
}

// ---------------------------------------------------------------------------
// File-backed segments

#[test]
fn file_segment_is_private_and_reattaches_with_the_same_config() {
    let dir = TempDir::new("file");
    let p = dir.path("cache.shm");
    let cfg = file_config(&p, 256 * 1024);
    let c = Cache::create(&cfg).unwrap();
    let fd = c.dup_fd().unwrap();
    assert_eq!(c.path(), Some(p.as_path()));
    let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "segment file mode {mode:o}");
    assert_eq!(
        std::fs::metadata(&p).unwrap().len(),
        256 * 1024,
        "never past the budget"
    );
    store_numbered(&c, 100);
    // Another mapping of the same file sees the same entries, both ways.
    let other = Cache::attach(&p).unwrap();
    assert_eq!(other.get(&bytes(5, 32)), Some(bytes(5, 160)));
    other
        .store(b"via attach", b"seen", Timestamp::from_secs(4_000_000_000))
        .unwrap();
    assert_eq!(c.get(b"via attach").as_deref(), Some(&b"seen"[..]));
    drop(other);
    drop(c);

    // Same config, through the kept descriptor: reattached, entries kept.
    let (c, opened) = Cache::reopen_fd(fd, &cfg).unwrap();
    assert_eq!(opened, Opened::Reattached);
    assert_numbered(&c, 100, "after reattach");
    assert_eq!(c.stats().entries, 101);
    drop(c);

    // Another size: replaced, empty, the file resized, still 0600.
    let cfg2 = file_config(&p, 512 * 1024);
    let (c, opened) = Cache::reopen_fd(fd, &cfg2).unwrap();
    assert!(
        matches!(opened, Opened::Replaced(Replacement::Resized(_))),
        "{opened:?}"
    );
    // SAFETY: our dup, closed once.
    unsafe { libc::close(fd) };
    assert_eq!(c.stats().entries, 0);
    assert_eq!(c.get(&bytes(1, 32)), None);
    assert_eq!(std::fs::metadata(&p).unwrap().len(), 512 * 1024);
    assert_eq!(
        std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
        0o600
    );
    c.store(b"k", b"v", Timestamp::from_secs(4_000_000_000))
        .unwrap();
    drop(c);

    // Cache::create always starts afresh.
    let c = Cache::create(&cfg2).unwrap();
    assert_eq!(c.get(b"k"), None);

    // unlink removes the file; the mapping stays usable.
    c.unlink().unwrap();
    assert!(!p.exists());
    c.store(b"k2", b"v2", Timestamp::from_secs(4_000_000_000))
        .unwrap();
    assert_eq!(c.get(b"k2").as_deref(), Some(&b"v2"[..]));
}

/// An empty file (say, made by the operator with `touch`) is replaced by
/// a private segment; a file with anything else in it is not ours to
/// replace: refused, and left byte for byte as it was (a mistyped
/// `shm:/etc/apache2/important.conf` must not destroy the file).
#[test]
fn only_empty_files_and_segments_are_replaced() {
    let dir = TempDir::new("mode");
    let p = dir.path("seg");
    std::fs::write(&p, b"").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    let c = Cache::create(&file_config(&p, 65_536)).unwrap();
    let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "replaced segment file mode {mode:o}");
    drop(c);

    let conf = dir.path("important.conf");
    let text = b"ServerName example.org\n# the operator's configuration\n".repeat(50);
    std::fs::write(&conf, &text).unwrap();
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o644)).unwrap();
    let before = std::fs::metadata(&conf).unwrap();
    match Cache::create(&file_config(&conf, 65_536)) {
        Err(e @ Error::Refused { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains("not a mod_socache_shm segment") && msg.contains("important.conf"),
                "{msg}"
            );
        }
        Err(e) => panic!("wrong error {e:?}"),
        Ok(_) => panic!("a configuration file was replaced by a segment"),
    }
    let after = std::fs::metadata(&conf).unwrap();
    assert_eq!(std::fs::read(&conf).unwrap(), text, "contents kept");
    assert_eq!(
        (before.ino(), before.mode()),
        (after.ino(), after.mode()),
        "same file, same mode"
    );
    assert!(socache_shm_engine::check_replaceable(&conf).is_err());
}

/// A directory others can write is refused, sticky `/tmp` included: another
/// user could plant or swap the segment there. Nothing is created.
#[test]
fn untrusted_directories_are_refused() {
    let dir = TempDir::new("perm");
    for mode in [0o777, 0o1777, 0o775] {
        std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(mode)).unwrap();
        let p = dir.path("seg");
        match Cache::create(&file_config(&p, 65_536)) {
            Err(e @ Error::Refused { .. }) => {
                assert!(e.to_string().contains("writable by"), "{mode:o}: {e}")
            }
            Err(e) => panic!("{mode:o}: wrong error {e:?}"),
            Ok(_) => panic!("{mode:o}: a segment was made in an untrusted directory"),
        }
        assert!(!p.exists());
    }
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    let tmp = std::path::Path::new("/tmp/socache-shm-in-tmp");
    assert!(matches!(
        Cache::create(&file_config(tmp, 65_536)),
        Err(Error::Refused { .. })
    ));
    // A name too long for the file system (with the temporary suffix).
    let long = dir.path(&"x".repeat(240));
    match Cache::create(&file_config(&long, 65_536)) {
        Err(e @ Error::Refused { .. }) => assert!(e.to_string().contains("file name"), "{e}"),
        other => panic!("long name: {:?}", other.err()),
    }
    // A symbolic link is not followed, whatever it points at.
    let target = dir.path("target");
    std::fs::write(&target, b"").unwrap();
    let link = dir.path("link");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    match Cache::create(&file_config(&link, 65_536)) {
        Err(e @ Error::Refused { .. }) => assert!(e.to_string().contains("symbolic link"), "{e}"),
        other => panic!("symlink: {:?}", other.err()),
    }
    assert!(
        Cache::attach(&link).is_err(),
        "attach does not follow links"
    );
    assert_eq!(
        std::fs::read(&target).unwrap(),
        b"",
        "link target untouched"
    );
}

#[test]
fn attach_refuses_garbage_and_damaged_files() {
    let dir = TempDir::new("attach");

    let missing = dir.path("missing");
    assert!(
        matches!(Cache::attach(&missing), Err(Error::Io { .. })),
        "missing file"
    );

    let empty = dir.path("empty");
    std::fs::write(&empty, b"").unwrap();
    assert!(Cache::attach(&empty).is_err(), "empty file");

    let garbage = dir.path("garbage");
    std::fs::write(&garbage, bytes(42, 65_536)).unwrap();
    match Cache::attach(&garbage) {
        Err(e @ Error::NotASegment { .. }) => {
            assert!(
                e.to_string().contains("not a mod_socache_shm segment"),
                "{e}"
            )
        }
        Err(e) => panic!("garbage: wrong error {e:?}"),
        Ok(_) => panic!("garbage attached"),
    }
    assert!(
        matches!(
            Cache::create(&file_config(&garbage, 65_536)),
            Err(Error::Refused { .. })
        ),
        "garbage is not ours to replace"
    );
    assert_eq!(std::fs::read(&garbage).unwrap(), bytes(42, 65_536));

    // A real segment, then damaged copies of it.
    let good = dir.path("good");
    let c = Cache::create(&file_config(&good, 131_072)).unwrap();
    c.store(b"id", b"value", Timestamp::from_secs(4_000_000_000))
        .unwrap();
    drop(c);
    let image = std::fs::read(&good).unwrap();
    assert_eq!(
        Cache::attach(&good).unwrap().get(b"id").as_deref(),
        Some(&b"value"[..])
    );

    let truncated = dir.path("truncated");
    std::fs::write(&truncated, &image[..image.len() / 2]).unwrap();
    assert!(Cache::attach(&truncated).is_err(), "truncated to half");
    // Still recognisably a segment (our magic): replaced by a fresh one.
    let c = Cache::create(&file_config(&truncated, 131_072)).unwrap();
    assert_eq!(c.get(b"id"), None);
    drop(c);

    let grown = dir.path("grown");
    let mut longer = image.clone();
    longer.extend_from_slice(&[0u8; 4096]);
    std::fs::write(&grown, &longer).unwrap();
    assert!(Cache::attach(&grown).is_err(), "grown by a page");

    let header_only = dir.path("header-only");
    std::fs::write(&header_only, &image[..64]).unwrap();
    assert!(Cache::attach(&header_only).is_err(), "first 64 bytes only");

    let versioned = dir.path("version");
    let mut other_version = image.clone();
    other_version[8] ^= 0x7f; // the layout version follows the 8-byte magic
    std::fs::write(&versioned, &other_version).unwrap();
    assert!(
        matches!(
            Cache::attach(&versioned),
            Err(Error::WrongVersion { .. } | Error::Corrupt { .. })
        ),
        "another layout version"
    );
}

#[test]
fn dup_fd_and_reopen_fd_keep_an_anonymous_segment() {
    let cfg = CacheConfig::new(256 * 1024);
    let c = Cache::create(&cfg).unwrap();
    store_numbered(&c, 50);
    let fd = c.dup_fd().unwrap();
    drop(c);

    let (c, opened) = Cache::reopen_fd(fd, &cfg).unwrap();
    assert_eq!(opened, Opened::Reattached);
    assert_numbered(&c, 50, "after reopen_fd");
    // The fd stays the caller's: a second reopen works too.
    let (c2, opened) = Cache::reopen_fd(fd, &cfg).unwrap();
    assert_eq!(opened, Opened::Reattached);
    c2.store(b"shared", b"both", Timestamp::from_secs(4_000_000_000))
        .unwrap();
    assert_eq!(c.get(b"shared").as_deref(), Some(&b"both"[..]));

    // Another size: a new, empty segment.
    let (c3, opened) = Cache::reopen_fd(fd, &CacheConfig::new(512 * 1024)).unwrap();
    assert!(matches!(opened, Opened::Replaced(_)), "{opened:?}");
    assert_eq!(c3.stats().entries, 0);
    let total = c3.stats().bytes_total;
    assert!(
        total > 256 * 1024 && total <= 512 * 1024,
        "bytes_total {total}"
    );
    // SAFETY: fd came from dup_fd, is ours, and is closed once.
    unsafe { libc::close(fd) };
    // The old mappings still work after the fd is closed.
    assert_eq!(c.get(&bytes(3, 32)), Some(bytes(3, 160)));

    // A descriptor that is not a segment.
    let dir = TempDir::new("fd");
    let p = dir.path("junk");
    std::fs::write(&p, bytes(1, 65_536)).unwrap();
    let f = std::fs::File::open(&p).unwrap();
    use std::os::fd::AsRawFd;
    let (c4, opened) = Cache::reopen_fd(f.as_raw_fd(), &CacheConfig::new(65_536)).unwrap();
    assert!(matches!(opened, Opened::Replaced(_)), "{opened:?}");
    assert_eq!(c4.stats().entries, 0);
}

// ---------------------------------------------------------------------------
// Secrets: departed entries are zeroed in the segment.

struct SecretCache {
    _dir: TempDir,
    path: PathBuf,
    cache: Cache,
    clock: ManualClock,
}

impl SecretCache {
    fn new(tag: &str, bytes: u64) -> SecretCache {
        let dir = TempDir::new(tag);
        let path = dir.path("segment");
        let (cache, clock) = manual(Cache::create(&file_config(&path, bytes)).unwrap());
        SecretCache {
            _dir: dir,
            path,
            cache,
            clock,
        }
    }

    /// Store [`secret`]`(n)` under `id`, for an hour.
    fn store_secret(&self, id: &[u8], n: u64) {
        self.cache.store(id, &secret(n), far(&self.cache)).unwrap();
    }

    fn image(&self) -> Vec<u8> {
        std::fs::read(&self.path).unwrap()
    }

    fn assert_present(&self, what: &str, v: &[u8]) {
        assert!(
            contains(&self.image(), v),
            "{what}: not found in the file (is the scan blind?)"
        );
    }

    fn assert_absent(&self, what: &str, v: &[u8]) {
        assert!(
            !contains(&self.image(), v),
            "{what}: still in the segment file"
        );
    }
}

/// A 64-byte random-looking secret, unique to `n`.
fn secret(n: u64) -> Vec<u8> {
    bytes(0x5EC0_0000 + n, 64)
}

#[test]
fn removed_entries_are_zeroed() {
    let s = SecretCache::new("sec-remove", 131_072);
    let id = bytes(1, 32);
    s.store_secret(&id, 1);
    s.store_secret(b"keep", 2);
    s.assert_present("stored value", &secret(1));
    s.assert_present("stored id", &id);
    assert!(s.cache.remove(&id));
    s.assert_absent("removed value", &secret(1));
    s.assert_absent("removed id", &id);
    s.assert_present("kept value", &secret(2));
}

#[test]
fn replaced_values_are_zeroed() {
    let s = SecretCache::new("sec-replace", 131_072);
    let c = &s.cache;
    s.store_secret(b"id", 10);
    s.assert_present("v1", &secret(10));
    // Same length.
    s.store_secret(b"id", 11);
    s.assert_absent("replaced v1", &secret(10));
    // Shorter (the old tail must not survive) and longer.
    let mut short = secret(12);
    short.truncate(20);
    c.store(b"id", &short, far(c)).unwrap();
    s.assert_absent("replaced v2", &secret(11));
    s.assert_absent("replaced v2's tail", &secret(11)[20..]);
    let long: Vec<u8> = [secret(13), secret(14)].concat();
    c.store(b"id", &long, far(c)).unwrap();
    s.assert_absent("replaced v3", &short);
    s.assert_present("v4", &long);
    // Replaced by an already-expired store: the old value goes too.
    c.store(b"id", &secret(15), c.now().plus_secs(-1)).unwrap();
    s.assert_absent("v4 after an expired store", &secret(13));
    s.assert_absent("the expired store's value", &secret(15));
}

#[test]
fn evicted_entries_are_zeroed() {
    let s = SecretCache::new("sec-evict", 65_536);
    let c = &s.cache;
    let victim = bytes(77, 32);
    s.store_secret(&victim, 20);
    s.assert_present("victim", &secret(20));
    let mut i = 0u64;
    loop {
        c.store(&bytes(1000 + i, 32), &bytes(5000 + i, 160), far(c))
            .unwrap();
        i += 1;
        if i % 16 == 0 && !snapshot(c).iter().any(|(id, _)| id == &victim) {
            break;
        }
        assert!(i < 100_000, "victim never evicted");
    }
    assert!(c.stats().evictions > 0);
    s.assert_absent("evicted value", &secret(20));
    s.assert_absent("evicted id", &victim);
}

#[test]
fn expired_entries_are_zeroed_when_reclaimed() {
    let s = SecretCache::new("sec-expire", 65_536);
    let c = &s.cache;
    // One reclaimed by its own lookup...
    c.store(b"looked-up", &secret(30), c.now().plus_secs(5))
        .unwrap();
    // ...and several reclaimed to make room.
    for n in 31..36 {
        c.store(&bytes(n, 32), &secret(n), c.now().plus_secs(5))
            .unwrap();
    }
    s.assert_present("before expiry", &secret(30));
    s.clock.advance_secs(6);
    assert_eq!(c.get(b"looked-up"), None);
    s.assert_absent("expired value reclaimed by a lookup", &secret(30));

    let expired_before = c.stats().expirations;
    let mut i = 0u64;
    while c.stats().expirations < expired_before + 5 {
        c.store(&bytes(9000 + i, 32), &bytes(i, 160), far(c))
            .unwrap();
        i += 1;
        assert!(
            i < 100_000,
            "expired entries never reclaimed: {:?}",
            c.stats()
        );
    }
    for n in 31..36 {
        s.assert_absent("expired value reclaimed for room", &secret(n));
    }
}

#[test]
fn flushed_entries_are_zeroed() {
    let s = SecretCache::new("sec-flush", 262_144);
    let c = &s.cache;
    for n in 40..80 {
        s.store_secret(&bytes(n, 32), n);
    }
    s.assert_present("before flush", &secret(40));
    c.flush();
    let image = s.image();
    for n in 40..80 {
        assert!(
            !contains(&image, &secret(n)),
            "flushed value {n} still in the file"
        );
        assert!(
            !contains(&image, &bytes(n, 32)),
            "flushed id {n} still in the file"
        );
    }
}

#[test]
fn reopened_clock_is_the_system_clock() {
    // Cache::create uses the wall clock unless told otherwise.
    let c = Cache::create(&CacheConfig::new(65_536)).unwrap();
    let wall = socache_shm_engine::SystemClock.now();
    assert!((c.now().0 - wall.0).abs() < 5_000_000);
}

/// A segment path that names something other than a plain file (a FIFO, a
/// directory; think of a mistyped `shm:/dev/null`) is refused with an error
/// that says so, and the thing is left as it was: the segment is never
/// renamed over it.
#[test]
fn a_path_that_is_not_a_regular_file_is_refused_and_kept() {
    use std::os::unix::fs::FileTypeExt;
    let dir = TempDir::new("notfile");
    let fifo = dir.0.join("fifo");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: c is a valid C string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    let sub = dir.0.join("subdir");
    std::fs::create_dir(&sub).unwrap();
    for path in [&fifo, &sub] {
        for (what, result) in [
            (
                "create",
                Cache::create(&file_config(path, 65_536)).map(|_| ()),
            ),
            ("attach", Cache::attach(path).map(|_| ())),
        ] {
            let e = result
                .err()
                .unwrap_or_else(|| panic!("{what} {path:?} succeeded"));
            let msg = e.to_string();
            let kind = ["a FIFO", "a directory", "Is a directory"];
            assert!(
                kind.iter().any(|k| msg.contains(k)) && msg.contains(&*path.to_string_lossy()),
                "{what} {path:?}: {msg}"
            );
        }
    }
    assert!(std::fs::symlink_metadata(&fifo)
        .unwrap()
        .file_type()
        .is_fifo());
    assert!(std::fs::symlink_metadata(&sub).unwrap().is_dir());
}
