//! Failures that persist, said once when they start and once when they
//! end, host-wide: a Redis ACL user without SET, a cluster node that points
//! to a dead address, values that never open (another farm key), a server
//! that answers garbage. None of these moves the breaker (they cost no
//! wait: see `Failure::moves_breaker`), so without this nothing would ever
//! be logged while a farm silently shares nothing.
//!
//! # Words
//!
//! Two words of the tier's shared memory per [`Problem`]: `since` (ms since
//! the epoch when the episode began; 0 = none) and `last` (ms of its latest
//! failure).
//!
//! # Rules
//!
//! 1. A failure sets `last` to now; the caller whose CAS `since: 0 → now`
//!    wins starts the episode and logs it (one line per host).
//! 2. A success ends it only once no failure has come for [`QUIET_MS`]: a
//!    problem that fails some ops and not others (one dead node among
//!    three, an ACL that denies one key pattern) is one episode, not a line
//!    per op. The caller whose CAS `since → 0` wins logs the end.
//! 3. Hostile words (any process of the server's `User` can write them)
//!    only cost log lines or silence: a `last` in the future beyond
//!    [`QUIET_MS`] counts as no recent failure.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Quiet time after the last failure before a success ends an episode.
pub const QUIET_MS: u64 = 10_000;

/// A kind of persistent failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Problem {
    /// GETs refused (NOPERM, a MOVED to nowhere, ...) or badly answered.
    Lookups,
    /// SETs refused (NOPERM, OOM, READONLY, ...) or badly answered.
    Stores,
    /// DELs refused or badly answered.
    Removes,
    /// Values found that do not open (another farm key, tampering).
    Values,
}

impl Problem {
    /// Every kind, in word order.
    pub const ALL: [Problem; 4] = [
        Problem::Lookups,
        Problem::Stores,
        Problem::Removes,
        Problem::Values,
    ];

    /// For the log.
    pub fn label(self) -> &'static str {
        match self {
            Problem::Lookups => "lookups (GET)",
            Problem::Stores => "stores (SET)",
            Problem::Removes => "removes (DEL)",
            Problem::Values => "values found in Redis that do not open",
        }
    }
}

/// Words the episodes use.
pub const PROBLEM_WORDS: usize = 2 * Problem::ALL.len();

/// The episodes over their words.
#[derive(Clone, Copy)]
pub struct Episodes<'a> {
    words: &'a [AtomicU64; PROBLEM_WORDS],
}

impl<'a> Episodes<'a> {
    /// The episodes over `words`.
    pub fn new(words: &'a [AtomicU64; PROBLEM_WORDS]) -> Self {
        Episodes { words }
    }

    fn pair(&self, p: Problem) -> (&AtomicU64, &AtomicU64) {
        let i = 2 * p as usize;
        (&self.words[i], &self.words[i + 1])
    }

    /// A failure at `now_ms` (rule 1): true if this caller began the
    /// episode (and so logs it).
    pub fn failed(&self, p: Problem, now_ms: u64) -> bool {
        let (since, last) = self.pair(p);
        last.store(now_ms, Ordering::Relaxed);
        since
            .compare_exchange(0, now_ms.max(1), Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// A success at `now_ms` (rule 2): how long the episode lasted, if this
    /// caller ended it.
    pub fn succeeded(&self, p: Problem, now_ms: u64) -> Option<Duration> {
        let (since, last) = self.pair(p);
        let began = since.load(Ordering::Acquire);
        if began == 0 {
            return None; // the healthy path: one load
        }
        let latest = last.load(Ordering::Relaxed);
        let future = latest > now_ms.saturating_add(QUIET_MS);
        if !future && now_ms < latest.saturating_add(QUIET_MS) {
            return None;
        }
        since
            .compare_exchange(began, 0, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| Duration::from_millis(now_ms.saturating_sub(began)))
    }

    /// Whether an episode of `p` is under way.
    pub fn ongoing(&self, p: Problem) -> bool {
        self.pair(p).0.load(Ordering::Acquire) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: u64 = 1_700_000_000_000;

    #[test]
    fn one_start_one_end_however_many_failures() {
        let words: [AtomicU64; PROBLEM_WORDS] = Default::default();
        let e = Episodes::new(&words);
        let starts = (0..100)
            .filter(|i| e.failed(Problem::Stores, T + i))
            .count();
        assert_eq!(starts, 1);
        // Successes mixed with failures: no end while failures keep coming.
        for i in 0..100 {
            assert_eq!(e.succeeded(Problem::Stores, T + 100 + i), None);
            e.failed(Problem::Stores, T + 100 + i);
        }
        assert!(e.ongoing(Problem::Stores));
        assert!(!e.ongoing(Problem::Lookups));
        let quiet = T + 200 + QUIET_MS;
        assert_eq!(
            e.succeeded(Problem::Stores, quiet),
            Some(Duration::from_millis(quiet - T))
        );
        assert_eq!(e.succeeded(Problem::Stores, quiet + 1), None);
        assert!(e.failed(Problem::Stores, quiet + 2), "a new episode");
    }

    #[test]
    fn hostile_words_cost_only_lines() {
        let words: [AtomicU64; PROBLEM_WORDS] = Default::default();
        let e = Episodes::new(&words);
        words[0].store(u64::MAX, Ordering::Relaxed);
        words[1].store(u64::MAX, Ordering::Relaxed);
        assert!(e.succeeded(Problem::Lookups, T).is_some());
        assert!(!e.ongoing(Problem::Lookups));
    }
}
