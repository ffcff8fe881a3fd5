//! The tier's words of shared memory: the layout, drawn once, and the
//! only accessors of it.
//!
//! ```text
//! word  0       1        2        3        4 .. 4+COUNTER_WORDS  ..  24 .. 31
//!      +-------+--------+--------+--------+--------------------+----+--------------+
//!      | open_ | opened_| backoff| streak | counters           |zero| episodes:    |
//!      | until | at     | (ms)   |        | (counters.rs table |    | since, last  |
//!      |       |        |        |        |  order)            |    | x 4 problems |
//!      +-------+--------+--------+--------+--------------------+----+--------------+
//!       breaker.rs (BREAKER_WORDS)          counters.rs              problems.rs
//! ```
//!
//! `COUNTERS_AT` = `BREAKER_WORDS`; `PROBLEMS_AT` = `TIER_WORDS` -
//! `PROBLEM_WORDS` (the episodes sit at the end, so a new counter never
//! moves them); a compile-time assert keeps the counters clear of them.
//!
//! The words are shared by every process of the host and may be written by
//! any of them (a compromised child included): the breaker reads garbage
//! safely, and counters are only statistics.

use std::sync::atomic::AtomicU64;

use crate::breaker::{Breaker, BREAKER_WORDS};
use crate::counters::{Counter, FarmStats, COUNTER_WORDS};
use crate::ms;
use crate::problems::{Episodes, PROBLEM_WORDS};

/// Number of u64 words the caller gives the farm tier in shared memory (all
/// processes of one host see the same words; they start zeroed). The caller
/// (the engine's segment header) provides `&[AtomicU64; TIER_WORDS]`.
pub const TIER_WORDS: usize = 32;

/// The first counter word.
const COUNTERS_AT: usize = BREAKER_WORDS;
/// The first word of the problems' episodes (the last words of the tier).
const PROBLEMS_AT: usize = TIER_WORDS - PROBLEM_WORDS;
const _: () = assert!(COUNTERS_AT + COUNTER_WORDS <= PROBLEMS_AT);

/// A snapshot of the tier's counters.
pub fn stats(words: &[AtomicU64; TIER_WORDS]) -> FarmStats {
    FarmStats::read(counter_words(words))
}

pub(crate) fn breaker_of(words: &[AtomicU64; TIER_WORDS]) -> Breaker<'_> {
    // Constant indices into an array of TIER_WORDS (checked at compile time).
    Breaker::new(&words[0], &words[1], &words[2], &words[3])
}

pub(crate) fn counter_words(words: &[AtomicU64; TIER_WORDS]) -> &[AtomicU64] {
    // In bounds: the const assert beside COUNTERS_AT.
    &words[COUNTERS_AT..COUNTERS_AT + COUNTER_WORDS]
}

pub(crate) fn episodes_of(words: &[AtomicU64; TIER_WORDS]) -> Episodes<'_> {
    let tail: &[AtomicU64; PROBLEM_WORDS] = words[PROBLEMS_AT..]
        .try_into()
        .expect("PROBLEMS_AT is TIER_WORDS - PROBLEM_WORDS");
    Episodes::new(tail)
}

/// For server-status and `shmcache stat`: `(key, label, value)` for each
/// counter (keys like "FarmRemoteHits"), then "FarmBreaker"
/// ("closed"/"open"), "FarmBreakerOpenSecs" and "FarmBreakerBackoffMs".
pub fn figures(
    words: &[AtomicU64; TIER_WORDS],
    now_us: i64,
) -> Vec<(&'static str, &'static str, String)> {
    let stats = FarmStats::read(counter_words(words));
    let mut out: Vec<(&'static str, &'static str, String)> = Counter::ALL
        .iter()
        .zip(stats.pairs())
        .map(|(c, (key, value))| (key, c.label(), value.to_string()))
        .collect();
    let state = breaker_of(words).state(ms(now_us));
    out.push((
        "FarmBreaker",
        "farm circuit breaker",
        if state.open { "open" } else { "closed" }.to_string(),
    ));
    out.push((
        "FarmBreakerOpenSecs",
        "seconds the breaker has been open",
        state.open_for.as_secs().to_string(),
    ));
    out.push((
        "FarmBreakerBackoffMs",
        "breaker backoff (ms)",
        state.backoff.as_millis().to_string(),
    ));
    out
}
