//! The cache's figures as `key: value` lines: one list shared by httpd's
//! server-status (HTML and `?auto`) and `shmcache stat`, so an operator sees
//! the same numbers under the same names everywhere. Keys that mod_socache_shmcb
//! also prints keep its names (dashboards read them); the rest are ours.

use crate::{Cache, Stats};

/// One figure: a stable machine-readable key, a human label, and the value.
pub struct Figure {
    pub key: &'static str,
    pub label: &'static str,
    pub value: String,
}

impl Figure {
    /// The figure `key`, labelled `label`, of `value` as text.
    pub fn new(key: &'static str, label: &'static str, value: impl ToString) -> Self {
        Figure {
            key,
            label,
            value: value.to_string(),
        }
    }
}

fn pct(part: u64, whole: u64) -> String {
    match (part * 100).checked_div(whole) {
        Some(p) => format!("{p}%"),
        None => "0%".into(),
    }
}

/// The figures of `s`: a whole cache's (`Cache::stats`) or one shard's (an
/// element of `Cache::shard_stats`); the sizes that are the cache's own
/// (segment bytes, shard count, largest entry) come from `cache` either way.
pub fn figures(cache: &Cache, s: &Stats) -> Vec<Figure> {
    let mut all = vec![
        Figure::new("CacheType", "cache type", "SHM"),
        Figure::new(
            "CacheSharedMemory",
            "shared memory (bytes)",
            cache.segment_bytes(),
        ),
        Figure::new("CacheCurrentEntries", "current entries", s.entries),
        Figure::new("CacheSubcaches", "shards", cache.shard_count()),
        Figure::new("CacheShards", "shards", cache.shard_count()),
        Figure::new(
            "CacheIndexesPerSubcaches",
            "index slots per shard",
            s.index_slots / cache.shard_count().max(1) as u64,
        ),
        Figure::new(
            "CacheIndexUsage",
            "index usage",
            pct(s.entries, s.index_slots),
        ),
        Figure::new(
            "CacheUsage",
            "arena usage",
            pct(s.bytes_used, s.bytes_total),
        ),
        Figure::new("CacheBytesUsed", "arena bytes used", s.bytes_used),
        Figure::new("CacheBytesFree", "arena bytes free", s.bytes_free),
        Figure::new(
            "CacheLargestFreeBlock",
            "largest free block (bytes)",
            s.largest_free_block,
        ),
        Figure::new(
            "CacheMaxEntrySize",
            "largest entry accepted (id + value bytes)",
            cache.max_entry_size(),
        ),
        Figure::new(
            "CacheLockTimeouts",
            "operations that gave up on a shard lock after 1 s",
            s.lock_timeouts,
        ),
        Figure::new(
            "CacheUnlockedReads",
            "retrieves answered without a lock (whole cache only)",
            s.unlocked_reads,
        ),
    ];
    // Then every event counter, from the one table (counters.rs).
    all.extend(
        s.counters()
            .into_iter()
            .map(|(key, label, value)| Figure::new(key, label, value)),
    );
    all
}
