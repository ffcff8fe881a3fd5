//! The one table of the farm tier's counters. Each row is a word of the
//! tier's shared memory (after the breaker's), a variant of [`Counter`], a
//! field of [`FarmStats`], and a figure of server-status and `shmcache stat`
//! (its key and a label). All of them are generated from the table: a new
//! counter is one line (it must still fit [`crate::TIER_WORDS`], which a
//! compile-time assert checks).
//!
//! The words are shared by every process of the host and only ever
//! incremented with `Relaxed` `fetch_add`: each is a statistic on its own,
//! publishing nothing.

use std::sync::atomic::{AtomicU64, Ordering};

/// Calls `$then!` with the table: `Variant, field: "StatusKey", "label";` rows.
macro_rules! counter_table {
    ($then:ident) => {
        $then! {
            RemoteHits, remote_hits: "FarmRemoteHits", "farm retrieve hits";
            RemoteMisses, remote_misses: "FarmRemoteMisses", "farm retrieve misses";
            StoresSent, stores_sent: "FarmStoresSent", "stores sent to the farm";
            StoresDropped, stores_dropped: "FarmStoresDropped", "stores not sent (every connection busy)";
            RemovesSent, removes_sent: "FarmRemovesSent", "removes sent to the farm";
            RemovesDropped, removes_dropped: "FarmRemovesDropped", "removes not sent (every connection busy)";
            Errors, errors: "FarmErrors", "farm connection failures (refused, reset, TLS, AUTH)";
            Timeouts, timeouts: "FarmTimeouts", "farm timeouts";
            SealFailures, seal_failures: "FarmSealFailures", "farm values that did not open (or seal)";
            Skipped, skipped: "FarmSkipped", "ops skipped (breaker open, every connection busy)";
            BreakerOpenings, breaker_openings: "FarmBreakerOpenings", "breaker openings";
            ErrorReplies, error_replies: "FarmErrorReplies", "commands Redis refused (NOPERM, OOM, READONLY, MOVED, ...)";
            BadReplies, bad_replies: "FarmBadReplies", "replies too large or unreadable (connection dropped)";
        }
    };
}

macro_rules! define_counters {
    ($($variant:ident, $field:ident: $key:literal, $label:literal;)*) => {
        /// One counter of the table; its discriminant is its index among
        /// the counter words.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Counter {
            $(
                #[doc = $label]
                $variant,
            )*
        }

        impl Counter {
            /// Every counter, in table order.
            pub const ALL: &'static [Counter] = &[$(Counter::$variant),*];

            /// The figure's key (server-status, `shmcache stat`).
            pub fn key(self) -> &'static str {
                match self {
                    $(Counter::$variant => $key,)*
                }
            }

            /// A label for people.
            pub fn label(self) -> &'static str {
                match self {
                    $(Counter::$variant => $label,)*
                }
            }
        }

        /// A snapshot of the counters.
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct FarmStats {
            $(
                #[doc = $label]
                pub $field: u64,
            )*
        }

        impl FarmStats {
            /// Reads every counter word (`words`: the counters' region, from
            /// their first word; a missing word reads as 0).
            pub fn read(words: &[AtomicU64]) -> FarmStats {
                FarmStats {
                    $($field: get(words, Counter::$variant),)*
                }
            }

            /// `(key, value)` in table order.
            pub fn pairs(&self) -> Vec<(&'static str, u64)> {
                vec![$(($key, self.$field)),*]
            }
        }
    };
}

counter_table!(define_counters);

/// Words the counters use.
pub const COUNTER_WORDS: usize = Counter::ALL.len();

/// Adds one to `counter`.
pub fn bump(words: &[AtomicU64], counter: Counter) {
    add(words, counter, 1);
}

/// Adds `n` to `counter`.
pub fn add(words: &[AtomicU64], counter: Counter, n: u64) {
    if n == 0 {
        return;
    }
    if let Some(word) = words.get(counter as usize) {
        word.fetch_add(n, Ordering::Relaxed);
    }
}

/// The value of `counter`.
pub fn get(words: &[AtomicU64], counter: Counter) -> u64 {
    words
        .get(counter as usize)
        .map_or(0, |w| w.load(Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_indices_and_keys() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
            assert!(c.key().starts_with("Farm"));
        }
        let words: [AtomicU64; COUNTER_WORDS] = Default::default();
        bump(&words, Counter::Timeouts);
        add(&words, Counter::RemoteHits, 3);
        let stats = FarmStats::read(&words);
        assert_eq!(stats.timeouts, 1);
        assert_eq!(stats.remote_hits, 3);
        assert_eq!(stats.pairs()[0], ("FarmRemoteHits", 3));
        assert_eq!(stats.pairs().len(), COUNTER_WORDS);
    }
}
