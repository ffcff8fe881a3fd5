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
    let f = |key, label, value: String| Figure { key, label, value };
    let mut all = vec![
        f("CacheType", "cache type", "SHM".into()),
        f(
            "CacheSharedMemory",
            "shared memory (bytes)",
            cache.segment_bytes().to_string(),
        ),
        f(
            "CacheCurrentEntries",
            "current entries",
            s.entries.to_string(),
        ),
        f("CacheSubcaches", "shards", cache.shard_count().to_string()),
        f("CacheShards", "shards", cache.shard_count().to_string()),
        f(
            "CacheIndexesPerSubcaches",
            "index slots per shard",
            (s.index_slots / cache.shard_count().max(1) as u64).to_string(),
        ),
        f(
            "CacheIndexUsage",
            "index usage",
            pct(s.entries, s.index_slots),
        ),
        f(
            "CacheUsage",
            "arena usage",
            pct(s.bytes_used, s.bytes_total),
        ),
        f(
            "CacheBytesUsed",
            "arena bytes used",
            s.bytes_used.to_string(),
        ),
        f(
            "CacheBytesFree",
            "arena bytes free",
            s.bytes_free.to_string(),
        ),
        f(
            "CacheLargestFreeBlock",
            "largest free block (bytes)",
            s.largest_free_block.to_string(),
        ),
        f(
            "CacheMaxEntrySize",
            "largest entry accepted (id + value bytes)",
            cache.max_entry_size().to_string(),
        ),
        f(
            "CacheLockTimeouts",
            "operations that gave up on a shard lock after 1 s",
            s.lock_timeouts.to_string(),
        ),
        f(
            "CacheUnlockedReads",
            "retrieves answered without a lock (whole cache only)",
            s.unlocked_reads.to_string(),
        ),
    ];
    // Then every event counter, from the one table (counters.rs).
    all.extend(
        s.counters()
            .into_iter()
            .map(|(key, label, value)| f(key, label, value.to_string())),
    );
    all
}
