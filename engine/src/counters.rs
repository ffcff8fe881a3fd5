//! The one table of the cache's event counters. Each row is a field of
//! every shard's [`Counters`](crate::layout::Counters) (lock-protected, in
//! the segment), the same field of [`Stats`](crate::Stats) (summed over the
//! shards), and a figure of server-status and `shmcache stat` (its key, as
//! mod_socache_shmcb names it where shmcb has it, and a label). The struct,
//! the per-shard fold and the figures are all generated from here: a new
//! counter is one line (and a `LAYOUT_VERSION` bump, for the segment).

/// Calls `$then!` with the table: `field: "StatusKey", "label";` rows.
macro_rules! counter_table {
    ($then:ident) => {
        $then! {
            hits: "CacheRetrieveHitCount", "retrieve hits";
            misses: "CacheRetrieveMissCount", "retrieve misses";
            stores: "CacheStoreCount", "stores";
            replacements: "CacheReplaceCount", "replacements";
            expirations: "CacheExpireCount", "expired";
            evictions: "CacheDiscardCount", "evicted (CLOCK)";
            refused: "CacheRefusedCount", "refused (too large)";
            removals: "CacheRemoveHitCount", "removals";
            remove_misses: "CacheRemoveMissCount", "removals of absent ids";
            lock_waits: "CacheLockWaits", "lock waits";
            recoveries: "CacheRecoveries", "shard recoveries (owner died mid-update, or reinitialised)";
            corrupt: "CacheCorruptEntries", "entries that failed their checksum (wiped, read as misses)";
        }
    };
}
pub(crate) use counter_table;
