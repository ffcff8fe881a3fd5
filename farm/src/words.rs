//! The tier's words of shared memory: the layout, drawn once, and the
//! only accessors of it.
//!
//! ```text
//! word  0       1        2        3        4 .. 16          17 .. 23        24 .. 31
//!      +-------+--------+--------+--------+-------------+---------------+--------------+
//!      | open_ | opened_| backoff| streak | counters    | ticket        | episodes:    |
//!      | until | at     | (ms)   |        | (counters.rs| counters      | since, last  |
//!      |       |        |        |        |  order)     | (TICKET_ROWS) | x 4 problems |
//!      +-------+--------+--------+--------+-------------+---------------+--------------+
//!       breaker.rs (BREAKER_WORDS)          counters.rs   the module's     problems.rs
//!                                                         tickets=
//! ```
//!
//! `COUNTERS_AT` = `BREAKER_WORDS`; `TICKETS_AT` follows the counters;
//! `PROBLEMS_AT` = `TIER_WORDS` - `PROBLEM_WORDS` (the episodes sit at the
//! end); compile-time asserts keep the regions apart. The ticket counters
//! are the httpd module's (session-ticket keys, `tickets=`), kept here so
//! that one map holds every word of the region, every process of the host
//! counts into them, they survive a graceful restart, and `shmcache stat`
//! reads them.
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

/// The first word of the ticket counters.
pub const TICKETS_AT: usize = COUNTERS_AT + COUNTER_WORDS;
/// The ticket counters: (`?auto`/`shmcache stat` key, label), in word order.
pub const TICKET_ROWS: [(&str, &str); 7] = [
    ("TicketsIssued", "session tickets issued"),
    (
        "TicketsOpenedNewestKey",
        "session tickets opened with the newest key",
    ),
    (
        "TicketsOpenedOlderKey",
        "session tickets opened with an older key (renewed)",
    ),
    (
        "TicketsNotOpened",
        "session tickets with an unknown or expired key (full handshakes)",
    ),
    (
        "TicketKeysMade",
        "session-ticket keys made on this host (no farm tier)",
    ),
    (
        "TicketKeysAgreed",
        "session-ticket keys agreed through the farm tier",
    ),
    (
        "TicketKeysMadeAlone",
        "session-ticket keys made alone (farm tier unreachable)",
    ),
];
const _: () = assert!(TICKETS_AT + TICKET_ROWS.len() <= PROBLEMS_AT);

/// The ticket counters' words.
pub fn ticket_words(words: &[AtomicU64; TIER_WORDS]) -> &[AtomicU64] {
    // In bounds: the const assert above.
    &words[TICKETS_AT..TICKETS_AT + TICKET_ROWS.len()]
}

/// `(key, label, value)` of every ticket counter.
pub fn ticket_figures(words: &[AtomicU64; TIER_WORDS]) -> Vec<(&'static str, &'static str, u64)> {
    TICKET_ROWS
        .iter()
        .zip(ticket_words(words))
        .map(|(&(key, label), w)| (key, label, w.load(std::sync::atomic::Ordering::Relaxed)))
        .collect()
}

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
