//! The circuit breaker: one per host, in four words of shared memory that
//! every process of the server sees, so that when Redis fails the whole host
//! stops waiting on it at once and exactly one caller at a time finds out
//! whether it is back.
//!
//! # Words
//!
//! - `open_until` (ms since the epoch): 0 = closed; otherwise the breaker is
//!   open until then.
//! - `opened_at` (ms): when it last opened (figures, and the closed event's
//!   duration).
//! - `backoff` (ms): the current backoff, [`MIN_BACKOFF_MS`] to
//!   [`MAX_BACKOFF_MS`]; 0 (fresh, zeroed memory) reads as the minimum.
//! - `streak`: failures in a row of ops admitted while closed.
//!
//! # Rules
//!
//! 1. Closed (`open_until == 0`): every op goes to Redis ([`Admission::Closed`]).
//! 2. A failure of such an op adds one to `streak`; a success sets it back
//!    to 0. The [`OPEN_AFTER`]th failure in a row opens it: CAS
//!    `0 → now + backoff`. Only the CAS winner reports [`Transition::Opened`]
//!    (the caller logs it once); losers found it already open and do
//!    nothing. (One failure alone is not enough: on a loaded host a single
//!    GET can miss a 20 ms timeout for want of a CPU, with Redis healthy,
//!    and the whole host would then stop sharing sessions for a backoff;
//!    measured in bench/farm.py at load 16: one timeout, one opening, 65
//!    lookups skipped. A Redis that is really gone fails every op, so three
//!    in a row cost three callers one timeout each.)
//! 3. While `now < open_until` ops are skipped ([`Admission::Open`]).
//! 4. Once `now >= open_until`, exactly one caller claims the probe: CAS
//!    `open_until → now + backoff` (the claim keeps others skipping while the
//!    probe is out). The winner's op goes to Redis ([`Admission::Probe`]).
//! 5. The probe's success closes it: swap `open_until` to 0 and reset the
//!    backoff; the caller that saw a non-zero value reports
//!    [`Transition::Closed`] once.
//! 6. The probe's failure doubles the backoff (capped at [`MAX_BACKOFF_MS`])
//!    and reopens until `now + backoff`.
//!
//! # Hostile words
//!
//! Any process of the server's `User` can write these words. Garbage must
//! never keep the farm off for good: an `open_until` further in the future
//! than `now + MAX_BACKOFF_MS` counts as already expired (rule 4 then
//! claims a probe and rewrites it), a `backoff` outside its range is
//! clamped, and an `opened_at` in the future gives a duration of zero. The
//! worst a writer can do is keep the breaker open by rewriting it over and
//! over, which it could do as well by killing Redis connections.
//!
//! The logic is pure: the caller passes `now_ms` and reports transitions
//! (see `crate::Farm`), so it is tested with an injected clock.
//! Orderings: each word is a value on its own; the CASes decide who acts,
//! and no other memory is published through them, so `AcqRel`/`Acquire` on
//! the deciding operations and `Relaxed` elsewhere suffice.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The first backoff after Redis fails.
pub const MIN_BACKOFF_MS: u64 = 100;
/// The longest backoff. Short, so that sharing is back within a second of
/// Redis answering again, at any traffic (one handshake a second is enough
/// to probe): a probe against a Redis still hung costs one caller one
/// timeout, at most twice a second per host.
pub const MAX_BACKOFF_MS: u64 = 500;
/// Failures in a row (of ops admitted while closed) that open the breaker.
pub const OPEN_AFTER: u64 = 3;
/// Words of shared memory the breaker uses.
pub const BREAKER_WORDS: usize = 4;

/// The breaker over its four shared words.
#[derive(Clone, Copy)]
pub struct Breaker<'a> {
    open_until: &'a AtomicU64,
    opened_at: &'a AtomicU64,
    backoff: &'a AtomicU64,
    streak: &'a AtomicU64,
}

/// What one op may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Closed: go to Redis.
    Closed,
    /// Open and this caller holds the probe: go to Redis, and report the
    /// outcome with this admission.
    Probe,
    /// Open: skip Redis.
    Open,
}

/// A change the caller reports (logs) once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// This caller opened the breaker.
    Opened,
    /// This caller closed it; it had been open this long.
    Closed { was_open_for: Duration },
}

/// The breaker's state, for figures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BreakerState {
    /// Whether it is open (probing included).
    pub open: bool,
    /// How long it has been open (zero when closed).
    pub open_for: Duration,
    /// The current backoff.
    pub backoff: Duration,
}

impl<'a> Breaker<'a> {
    /// The breaker over its words (see the module doc for their meaning).
    pub fn new(
        open_until: &'a AtomicU64,
        opened_at: &'a AtomicU64,
        backoff: &'a AtomicU64,
        streak: &'a AtomicU64,
    ) -> Self {
        Breaker {
            open_until,
            opened_at,
            backoff,
            streak,
        }
    }

    /// The breaker over the first [`BREAKER_WORDS`] of `words`.
    pub fn over(words: &'a [AtomicU64; BREAKER_WORDS]) -> Self {
        let [open_until, opened_at, backoff, streak] = words;
        Breaker::new(open_until, opened_at, backoff, streak)
    }

    /// Whether an op at `now_ms` may go to Redis (rules 1, 3, 4).
    pub fn admit(&self, now_ms: u64) -> Admission {
        let until = self.open_until.load(Ordering::Acquire);
        if until == 0 {
            return Admission::Closed;
        }
        let garbage = until > now_ms.saturating_add(MAX_BACKOFF_MS);
        if now_ms < until && !garbage {
            return Admission::Open;
        }
        let claim = now_ms.saturating_add(self.current_backoff()).max(1);
        match self
            .open_until
            .compare_exchange(until, claim, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => Admission::Probe,
            Err(_) => Admission::Open,
        }
    }

    /// Reports an op's success: it ends a streak of failures (rule 2); a
    /// probe's closes the breaker (rule 5).
    pub fn succeeded(&self, admission: Admission, now_ms: u64) -> Option<Transition> {
        // Read first: a healthy host writes nothing here.
        if self.streak.load(Ordering::Relaxed) != 0 {
            self.streak.store(0, Ordering::Relaxed);
        }
        if admission != Admission::Probe {
            return None;
        }
        let previous = self.open_until.swap(0, Ordering::AcqRel);
        self.backoff.store(MIN_BACKOFF_MS, Ordering::Relaxed);
        if previous == 0 {
            return None; // someone else closed it
        }
        let opened_at = self.opened_at.load(Ordering::Relaxed);
        Some(Transition::Closed {
            was_open_for: Duration::from_millis(now_ms.saturating_sub(opened_at)),
        })
    }

    /// Reports an op's failure (rules 2, 6).
    pub fn failed(&self, admission: Admission, now_ms: u64) -> Option<Transition> {
        match admission {
            Admission::Open => None,
            Admission::Closed => {
                let streak = self
                    .streak
                    .fetch_add(1, Ordering::Relaxed)
                    .saturating_add(1);
                if streak < OPEN_AFTER {
                    return None;
                }
                let backoff = self.current_backoff();
                let until = now_ms.saturating_add(backoff).max(1);
                match self.open_until.compare_exchange(
                    0,
                    until,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => {
                        self.opened_at.store(now_ms, Ordering::Relaxed);
                        self.streak.store(0, Ordering::Relaxed);
                        Some(Transition::Opened)
                    }
                    Err(_) => None,
                }
            }
            Admission::Probe => {
                let backoff = self.current_backoff().saturating_mul(2).min(MAX_BACKOFF_MS);
                self.backoff.store(backoff, Ordering::Relaxed);
                let until = now_ms.saturating_add(backoff).max(1);
                // A probe that outlived its claim may find 0 (someone's probe
                // closed it) or another claim: then it is not ours to reopen.
                let current = self.open_until.load(Ordering::Acquire);
                if current != 0 {
                    let _ = self.open_until.compare_exchange(
                        current,
                        until,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    );
                }
                None
            }
        }
    }

    /// The state at `now_ms`, for figures.
    pub fn state(&self, now_ms: u64) -> BreakerState {
        let open = self.open_until.load(Ordering::Acquire) != 0;
        let open_for = if open {
            Duration::from_millis(now_ms.saturating_sub(self.opened_at.load(Ordering::Relaxed)))
        } else {
            Duration::ZERO
        };
        BreakerState {
            open,
            open_for,
            backoff: Duration::from_millis(self.current_backoff()),
        }
    }

    fn current_backoff(&self) -> u64 {
        self.backoff
            .load(Ordering::Relaxed)
            .clamp(MIN_BACKOFF_MS, MAX_BACKOFF_MS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    fn words() -> [AtomicU64; BREAKER_WORDS] {
        Default::default()
    }

    const T: u64 = 1_700_000_000_000;

    /// Fail closed-admitted ops until the breaker opens; the transitions.
    fn fail_until_open(b: &Breaker<'_>, now: u64) -> Vec<Option<Transition>> {
        (0..OPEN_AFTER)
            .map(|_| b.failed(Admission::Closed, now))
            .collect()
    }

    fn opened_by_the_last(b: &Breaker<'_>, now: u64) -> bool {
        let t = fail_until_open(b, now);
        t[..t.len() - 1].iter().all(Option::is_none) && t.last() == Some(&Some(Transition::Opened))
    }

    #[test]
    fn a_success_ends_a_streak_of_failures() {
        let w = words();
        let b = Breaker::over(&w);
        for _ in 0..10 {
            for _ in 1..OPEN_AFTER {
                assert_eq!(b.failed(Admission::Closed, T), None);
            }
            assert_eq!(b.succeeded(Admission::Closed, T), None);
        }
        assert_eq!(b.admit(T), Admission::Closed);
        assert!(opened_by_the_last(&b, T));
        assert_eq!(b.admit(T + 1), Admission::Open);
    }

    #[test]
    fn closed_until_a_failure_then_open_then_probe_closes() {
        let w = words();
        let b = Breaker::over(&w);
        assert_eq!(b.admit(T), Admission::Closed);
        assert_eq!(b.succeeded(Admission::Closed, T), None);
        assert!(opened_by_the_last(&b, T));
        // A further failure of an op admitted before the opening: no event.
        assert_eq!(b.failed(Admission::Closed, T + 1), None);
        assert!(b.state(T + 10).open);
        assert_eq!(b.admit(T + 1), Admission::Open);
        assert_eq!(b.admit(T + MIN_BACKOFF_MS - 1), Admission::Open);
        assert_eq!(b.admit(T + MIN_BACKOFF_MS), Admission::Probe);
        // The claim keeps the others out.
        assert_eq!(b.admit(T + MIN_BACKOFF_MS), Admission::Open);
        assert_eq!(b.admit(T + MIN_BACKOFF_MS + 50), Admission::Open);
        assert_eq!(
            b.succeeded(Admission::Probe, T + MIN_BACKOFF_MS + 5),
            Some(Transition::Closed {
                was_open_for: Duration::from_millis(MIN_BACKOFF_MS + 5)
            })
        );
        assert_eq!(b.admit(T + 200), Admission::Closed);
        assert!(!b.state(T + 200).open);
    }

    #[test]
    fn probe_failures_double_the_backoff_up_to_the_cap() {
        let w = words();
        let b = Breaker::over(&w);
        let mut now = T;
        assert!(opened_by_the_last(&b, now));
        let mut expected = MIN_BACKOFF_MS;
        for _ in 0..12 {
            assert_eq!(b.admit(now + expected - 1), Admission::Open);
            now += expected;
            assert_eq!(b.admit(now), Admission::Probe);
            assert_eq!(b.failed(Admission::Probe, now), None);
            expected = (expected * 2).min(MAX_BACKOFF_MS);
            assert_eq!(b.state(now).backoff, Duration::from_millis(expected));
        }
        assert_eq!(expected, MAX_BACKOFF_MS);
        now += MAX_BACKOFF_MS;
        assert_eq!(b.admit(now), Admission::Probe);
        assert!(matches!(
            b.succeeded(Admission::Probe, now),
            Some(Transition::Closed { .. })
        ));
        // Closing resets the backoff.
        assert!(opened_by_the_last(&b, now));
        assert_eq!(b.admit(now + MIN_BACKOFF_MS), Admission::Probe);
    }

    #[test]
    fn garbage_never_keeps_it_open() {
        for (until, opened, backoff) in [
            (u64::MAX, u64::MAX, u64::MAX),
            (T + MAX_BACKOFF_MS + 1, 0, 0),
            (T * 3, T * 3, 1),
            (1, 0, u64::MAX),
        ] {
            let w = words();
            w[0].store(until, Ordering::Relaxed);
            w[1].store(opened, Ordering::Relaxed);
            w[2].store(backoff, Ordering::Relaxed);
            w[3].store(u64::MAX, Ordering::Relaxed);
            let b = Breaker::over(&w);
            assert_eq!(b.admit(T), Admission::Probe, "{until} {opened} {backoff}");
            let state = b.state(T);
            assert!(state.backoff <= Duration::from_millis(MAX_BACKOFF_MS));
            assert!(matches!(
                b.succeeded(Admission::Probe, T),
                Some(Transition::Closed { .. })
            ));
            assert_eq!(b.admit(T), Admission::Closed);
        }
        // The near future within the cap is honoured (it may be genuine).
        let w = words();
        w[0].store(T + MAX_BACKOFF_MS, Ordering::Relaxed);
        assert_eq!(Breaker::over(&w).admit(T), Admission::Open);
    }

    #[test]
    fn a_late_probe_does_not_reopen_a_closed_breaker() {
        let w = words();
        let b = Breaker::over(&w);
        fail_until_open(&b, T);
        assert_eq!(b.admit(T + 100), Admission::Probe);
        // Its claim expired; a second probe succeeded meanwhile.
        assert_eq!(b.admit(T + 200), Admission::Probe);
        assert!(b.succeeded(Admission::Probe, T + 201).is_some());
        b.failed(Admission::Probe, T + 250);
        assert_eq!(b.admit(T + 251), Admission::Closed);
        // And a second success reports nothing.
        assert_eq!(b.succeeded(Admission::Probe, T + 252), None);
    }

    #[test]
    fn threads_open_once_probe_once_close_once() {
        let w = Arc::new(words());
        let opened = Arc::new(AtomicUsize::new(0));
        let probes = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let phase = Arc::new(std::sync::Barrier::new(8));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (w, opened, probes, closed, phase) = (
                    w.clone(),
                    opened.clone(),
                    probes.clone(),
                    closed.clone(),
                    phase.clone(),
                );
                std::thread::spawn(move || {
                    let b = Breaker::over(&w);
                    for _ in 0..1000 {
                        if b.failed(Admission::Closed, T) == Some(Transition::Opened) {
                            opened.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    // Every failure is in before anyone probes.
                    phase.wait();
                    for _ in 0..1000 {
                        if b.admit(T + MIN_BACKOFF_MS) == Admission::Probe {
                            probes.fetch_add(1, Ordering::Relaxed);
                            if b.succeeded(Admission::Probe, T + MIN_BACKOFF_MS).is_some() {
                                closed.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        assert_eq!(opened.load(Ordering::Relaxed), 1);
        // Once closed, later admissions are Closed, not probes: one probe.
        assert_eq!(probes.load(Ordering::Relaxed), 1);
        assert_eq!(closed.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn threads_race_for_one_probe() {
        let w = Arc::new(words());
        fail_until_open(&Breaker::over(&w), T);
        let probes = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (w, probes) = (w.clone(), probes.clone());
                std::thread::spawn(move || {
                    let b = Breaker::over(&w);
                    for _ in 0..1000 {
                        if b.admit(T + MIN_BACKOFF_MS + 10) == Admission::Probe {
                            probes.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        assert_eq!(probes.load(Ordering::Relaxed), 1);
    }
}
