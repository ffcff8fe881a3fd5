//! What the engine's operations answer: [`Stored`], [`Miss`], [`Stats`],
//! and what reopening a kept segment found ([`Opened`], [`Replacement`]).
//! Kept apart from `cache.rs` and `shard.rs`, which both use them.

/// What reopening a kept segment found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Opened {
    /// No segment was there: a new, empty one was made.
    Created,
    /// A live segment with the same size and layout: its entries are kept.
    Reattached,
    /// A segment was there but could not be kept: a new, empty one was made.
    Replaced(Replacement),
}

/// Why a kept segment was replaced by a new one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Replacement {
    /// The configured size or entry sizes changed (the operator's doing).
    Resized(String),
    /// The file at the configured path was removed or replaced by another.
    Moved,
    /// The segment was damaged, of another layout version, or unusable.
    Damaged(String),
}

impl std::fmt::Display for Replacement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Replacement::Resized(what) => write!(f, "its size or layout changed ({what})"),
            Replacement::Moved => f.write_str(
                "the file at its path is no longer the segment this server made (removed or replaced)",
            ),
            Replacement::Damaged(why) => f.write_str(why),
        }
    }
}

/// Whether a store added a new entry or replaced one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stored {
    Inserted,
    Replaced,
}

/// A retrieve that found nothing usable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Miss {
    /// No live entry for that id.
    NotFound,
    /// An entry exists but the caller's buffer is smaller than `needed`.
    BufferTooSmall { needed: usize },
    /// The entry failed its checksum and was wiped. `first`: the first such
    /// entry in its shard (log it once).
    Corrupt { first: bool },
    /// The entry's shard is out of service (see [`Error::Unavailable`]).
    Unavailable { shard: u32, first: bool },
}

/// Figures of one shard or of the whole cache (the sum of its shards).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub entries: u64,
    pub bytes_total: u64,
    pub bytes_used: u64,
    pub bytes_free: u64,
    pub largest_free_block: u64,
    pub index_slots: u64,
    pub hits: u64,
    pub misses: u64,
    pub stores: u64,
    pub replacements: u64,
    pub evictions: u64,
    pub expirations: u64,
    pub removals: u64,
    pub remove_misses: u64,
    pub lock_waits: u64,
    pub recoveries: u64,
    pub refused: u64,
    /// Entries found corrupt (checksum mismatch) on read, and wiped.
    pub corrupt: u64,
    /// Operations that gave up on a shard lock after the bound.
    pub lock_timeouts: u64,
    /// Retrieves answered without taking a lock (hits and misses; they are
    /// in `hits` and `misses` too). Only in [`Cache::stats`]: per-shard
    /// figures count the locked ones.
    pub unlocked_reads: u64,
}
