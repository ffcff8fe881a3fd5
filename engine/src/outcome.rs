//! What the engine's operations answer: [`Stored`], [`Miss`], [`Stats`],
//! and what reopening a kept segment found ([`Opened`], [`Replacement`]).
//! Kept apart from `cache.rs` and `shard.rs`, which both use them.

use crate::layout::Counters;

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

macro_rules! define_stats {
    ($($field:ident: $key:literal, $label:literal;)*) => {
        /// Figures of one shard or of the whole cache (the sum of its
        /// shards): the sizes, then one field per row of
        /// `counters::counter_table`, then the two counts kept outside the
        /// lock (`lock_timeouts`: operations that gave up on a shard lock
        /// after the bound; `unlocked_reads`: retrieves answered without a
        /// lock, hits and misses, also in `hits` and `misses`; only in
        /// `Cache::stats`, per-shard figures count the locked ones).
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct Stats {
            pub entries: u64,
            pub bytes_total: u64,
            pub bytes_used: u64,
            pub bytes_free: u64,
            pub largest_free_block: u64,
            pub index_slots: u64,
            $(pub $field: u64,)*
            pub lock_timeouts: u64,
            pub unlocked_reads: u64,
        }

        impl Stats {
            /// These figures with a shard's counters.
            pub(crate) fn with_counters(mut self, c: &Counters) -> Stats {
                $(self.$field = c.$field;)*
                self
            }

            /// The figures of two parts together (the largest free block
            /// is the larger one; everything else adds up).
            pub fn plus(self, o: &Stats) -> Stats {
                Stats {
                    entries: self.entries.saturating_add(o.entries),
                    bytes_total: self.bytes_total.saturating_add(o.bytes_total),
                    bytes_used: self.bytes_used.saturating_add(o.bytes_used),
                    bytes_free: self.bytes_free.saturating_add(o.bytes_free),
                    largest_free_block: self.largest_free_block.max(o.largest_free_block),
                    index_slots: self.index_slots.saturating_add(o.index_slots),
                    $($field: self.$field.saturating_add(o.$field),)*
                    lock_timeouts: self.lock_timeouts.saturating_add(o.lock_timeouts),
                    unlocked_reads: self.unlocked_reads.saturating_add(o.unlocked_reads),
                }
            }

            /// (status key, label, value) of every counter, in table order.
            pub fn counters(&self) -> Vec<(&'static str, &'static str, u64)> {
                vec![$(($key, $label, self.$field)),*]
            }
        }
    };
}
crate::counters::counter_table!(define_stats);
