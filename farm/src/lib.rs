//! mod_socache_shm's farm tier: Redis (a single server, a Redis Cluster, or
//! Valkey) behind the local shared-memory cache, so that the hosts of a farm
//! resume each other's TLS sessions. It knows nothing of Apache and nothing
//! of the engine: the provider calls [`Farm`] with bytes, times in
//! microseconds since the epoch (`apr_time_t`), and a borrow of
//! [`TIER_WORDS`] words of the segment's shared memory.
//!
//! What it fixes in httpd's own `mod_socache_redis` (whose timeout is
//! multiplied by 10^6 twice in apr-util, so a hung Redis holds a worker for
//! days, and which keeps master secrets in Redis in clear): no caller ever
//! waits longer than the configured timeout (connect, TLS and the whole
//! reply included: [`transport`]); when Redis is down or hung one host-wide [`breaker`] stops
//! every process from trying, and one probe at a time finds out when it is
//! back (one log line when it opens, one when it closes); values are sealed
//! ([`seal`]) under a farm key file ([`keys`]) so Redis never holds a
//! session's master secret, and a writer to Redis can neither forge, move,
//! nor prolong a value; AUTH, ACL users, TLS (with client certificates),
//! database selection and Cluster are spoken with redis-rs's protocol code
//! over our own transport ([`conn`], [`link`]); failures that persist are
//! said once ([`problems`]).
//!
//! # Map
//!
//! - `lib.rs` (this file): the operations ([`Farm::store`],
//!   [`Farm::retrieve`], [`Farm::remove`], [`Farm::agree`]) and how their
//!   outcomes move the breaker, the counters and the episodes;
//! - [`config`]: [`FarmConfig`], [`Farm::new`], [`check`], [`FarmError`];
//! - [`words`]: the shared words, drawn, and their accessors;
//! - [`link`] → [`conn`] → [`transport`]: where a key goes, one connection,
//!   the bytes under one deadline;
//! - [`breaker`], [`counters`], [`problems`]: what the words hold;
//! - [`seal`], [`keys`]: sealing values under the farm key file;
//! - [`endpoint`]: the configured addresses, checked without network.
//!

//!
//! # Processes and threads
//!
//! [`Farm::new`] (in httpd's parent, as the user httpd starts as, at init)
//! only builds the TLS context and resolves addresses: no socket, no
//! thread, ever: every op runs on its caller's thread. In the home process
//! (`home_pid`, the parent) every op is skipped. Elsewhere the first op
//! (or [`Farm::warm_up`], at httpd's `child_init`) makes the process's
//! [`link`]; a forked child abandons its parent's link and makes its own.

pub mod breaker;
pub mod config;
pub mod conn;
pub mod counters;
pub mod endpoint;
pub mod keys;
pub mod link;
pub mod problems;
pub mod seal;
pub mod transport;
pub mod words;

use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

pub use breaker::{Admission, Breaker, BreakerState, Transition};
pub use config::{check, FarmConfig, FarmError};
pub use counters::{Counter, FarmStats};
pub use endpoint::{Endpoint, EndpointError, TlsFiles, Topology};
pub use keys::{FarmKeys, KeyFileError, KeyName};
pub use problems::Problem;
pub use seal::{SealError, Sealer};
pub use words::{figures, stats, ticket_figures, ticket_words, TICKET_ROWS, TIER_WORDS};

use conn::{Drained, Failure, FailureKind, Login, Sent};
use link::{Answer, Link, Outcome, Route};
use transport::Connector;
use words::{breaker_of, counter_words, episodes_of};

thread_local! {
    /// When this thread's latest op timed out. A handshake does at most one
    /// lookup and then stores (one or two new sessions): after a lookup
    /// that waited out `timeout`, the same thread's writes within
    /// [`QUIET_AFTER_TIMEOUT`] are skipped rather than waiting again, so a
    /// handshake waits at most one `timeout` whatever Redis does. (A
    /// `Cell` of a `Copy` value: no destructor, so no TLS-destructor
    /// registration that would pin the DSO.)
    static TIMED_OUT_AT: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) };
}

/// The least a new process waits for its first connection (`warm_up`).
const WARM_UP: Duration = Duration::from_millis(250);

/// How long after a timeout this thread's writes are skipped.
const QUIET_AFTER_TIMEOUT: Duration = Duration::from_millis(100);

/// Whether this thread's latest op timed out less than `window` ago.
fn thread_timed_out_within(window: Duration) -> bool {
    TIMED_OUT_AT.with(|t| t.get().is_some_and(|at| at.elapsed() < window))
}

/// How the farm reports, so the caller can log (httpd's error log). Called
/// from the thread of an op, once per transition host-wide.
pub trait Events: Send + Sync {
    /// The breaker opened (this process's op saw the failure `why`).
    fn breaker_opened(&self, why: &str);
    /// A probe succeeded and closed the breaker.
    fn breaker_closed(&self, was_open_for: Duration);
    /// A persistent failure began (module `problems`): `why` names the
    /// server and the reason.
    fn problem_started(&self, problem: Problem, why: &str);
    /// It ended (nothing failed for [`problems::QUIET_MS`], then a success).
    fn problem_ended(&self, problem: Problem, lasted: Duration);
}

/// Nobody to tell: every event is dropped (for tests, fuzzing and tools
/// that only read the tier words).
impl Events for () {
    fn breaker_opened(&self, _: &str) {}
    fn breaker_closed(&self, _: Duration) {}
    fn problem_started(&self, _: Problem, _: &str) {}
    fn problem_ended(&self, _: Problem, _: Duration) {}
}

/// The answer of [`Farm::retrieve`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Found, opened, unexpired.
    Hit {
        /// The value as stored.
        value: Vec<u8>,
        /// Its absolute expiry (µs since the epoch).
        expiry_us: i64,
    },
    /// Redis has no such value (or it expired).
    Miss,
    /// Not asked: breaker open, home process, or every connection busy.
    Skipped,
    /// Timeout, error, or a value that did not open (counted).
    Failed,
}

/// The answer of [`Farm::agree`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Agreement {
    /// Our proposal was stored: every host that asks later gets it.
    Ours,
    /// Another host's value was there first (opened): use it instead.
    Theirs {
        /// The value as that host proposed it.
        value: Vec<u8>,
    },
    /// The farm could not be asked (breaker open, home process, timeout,
    /// error, or a value there that does not open): decide alone.
    Unreachable,
}

/// The farm tier of one cache instance. `Send + Sync`: shared by all
/// threads of a process.
pub struct Farm {
    connector: Connector,
    login: Login,
    route: Route,
    /// Where lookups go instead of `route` (`redis-replica=`).
    replica: Option<transport::Address>,
    sealer: Sealer,
    prefix: String,
    namespace: String,
    timeout: Duration,
    connections: usize,
    reply_budget: usize,
    home_pid: Option<libc::pid_t>,
    events: Box<dyn Events>,
    endpoint: Endpoint,
    /// This process's link. Never taken in the home process, so a fork from
    /// there never inherits it locked.
    link: Mutex<Option<Link>>,
}

const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Farm>();
};

impl Farm {
    /// Where this farm's Redis is (passwords hidden), for the log.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Shares a store: the SET is written before this returns (so another
    /// host finds it at once) and its reply is read later, so the caller
    /// waits for nothing but a socket write (and, on a process's first op,
    /// the connect), never longer than `timeout`. The breaker's probe reads
    /// its reply now.
    pub fn store(
        &self,
        words: &[AtomicU64; TIER_WORDS],
        id: &[u8],
        value: &[u8],
        expiry_us: i64,
        now_us: i64,
    ) {
        let remaining_us = expiry_us.saturating_sub(now_us);
        if remaining_us <= 0 {
            return; // already expired: nothing to share
        }
        let Some(link) = self.link_here() else {
            return;
        };
        let now_ms = ms(now_us);
        let px_ms = px_ms(remaining_us);
        let admission = breaker_of(words).admit(now_ms);
        if admission == Admission::Open || self.thread_just_timed_out() {
            counters::bump(counter_words(words), Counter::Skipped);
            return;
        }
        let sealed = match self.sealer.seal(&self.namespace, id, expiry_us, value) {
            Ok(sealed) => sealed,
            Err(_) => {
                counters::bump(counter_words(words), Counter::SealFailures);
                return;
            }
        };
        let started = Instant::now();
        let probe = admission == Admission::Probe;
        let out = link.set(
            &self.redis_key(id),
            &sealed,
            px_ms,
            started + self.timeout,
            probe,
        );
        self.conclude(words, Sent::Set, out, admission, now_ms, started);
    }

    /// One GET; the caller waits at most `timeout`, connect and TLS
    /// included; opens the sealed value.
    pub fn retrieve(&self, words: &[AtomicU64; TIER_WORDS], id: &[u8], now_us: i64) -> Lookup {
        let Some(link) = self.link_here() else {
            return Lookup::Skipped;
        };
        let now_ms = ms(now_us);
        let counters = counter_words(words);
        let admission = breaker_of(words).admit(now_ms);
        if admission == Admission::Open {
            counters::bump(counters, Counter::Skipped);
            return Lookup::Skipped;
        }
        let started = Instant::now();
        let out = link.get(
            &self.redis_key(id),
            started + self.timeout,
            self.reply_budget,
        );
        self.settle(words, &out.drained, now_ms);
        match out.answer {
            Answer::Done(Some(sealed)) => {
                match self.sealer.open(&self.namespace, id, now_us, &sealed) {
                    Ok((value, expiry_us)) => {
                        self.report_success(words, admission, now_ms);
                        self.problem_over(words, Problem::Lookups, now_ms);
                        self.problem_over(words, Problem::Values, now_ms);
                        counters::bump(counters, Counter::RemoteHits);
                        Lookup::Hit { value, expiry_us }
                    }
                    Err(SealError::Expired) => {
                        self.report_success(words, admission, now_ms);
                        counters::bump(counters, Counter::RemoteMisses);
                        Lookup::Miss
                    }
                    Err(e) => {
                        // Redis answered, but not with a value of ours.
                        self.bad_value(words, &e, now_ms);
                        Lookup::Failed
                    }
                }
            }
            Answer::Done(None) => {
                self.report_success(words, admission, now_ms);
                self.problem_over(words, Problem::Lookups, now_ms);
                counters::bump(counters, Counter::RemoteMisses);
                Lookup::Miss
            }
            Answer::Busy => {
                counters::bump(counters, Counter::Skipped);
                Lookup::Skipped
            }
            Answer::Failed(failure) => {
                self.failed(
                    words,
                    Problem::Lookups,
                    &failure,
                    admission,
                    now_ms,
                    started,
                );
                Lookup::Failed
            }
        }
    }

    /// Agrees with the other hosts on one value for `id` (a ticket key for
    /// a period, say): stores `proposal`, sealed like every value, unless a
    /// value is there already, in which case that one (opened) is the
    /// answer (`SET NX GET`: one round trip, the first writer wins, every
    /// later reader gets the winner). Waits at most `timeout`. `expiry_us`
    /// must be the same on every host for the same `id` (it is bound into
    /// the seal).
    pub fn agree(
        &self,
        words: &[AtomicU64; TIER_WORDS],
        id: &[u8],
        proposal: &[u8],
        expiry_us: i64,
        now_us: i64,
    ) -> Agreement {
        let remaining_us = expiry_us.saturating_sub(now_us);
        let Some(link) = self.link_here().filter(|_| remaining_us > 0) else {
            return Agreement::Unreachable;
        };
        let now_ms = ms(now_us);
        let admission = breaker_of(words).admit(now_ms);
        if admission == Admission::Open {
            counters::bump(counter_words(words), Counter::Skipped);
            return Agreement::Unreachable;
        }
        let Ok(sealed) = self.sealer.seal(&self.namespace, id, expiry_us, proposal) else {
            counters::bump(counter_words(words), Counter::SealFailures);
            return Agreement::Unreachable;
        };
        let px_ms = px_ms(remaining_us);
        let started = Instant::now();
        let out = link.set_nx_get(
            &self.redis_key(id),
            &sealed,
            px_ms,
            started + self.timeout,
            self.reply_budget,
        );
        self.settle(words, &out.drained, now_ms);
        match out.answer {
            Answer::Done(None) => {
                self.report_success(words, admission, now_ms);
                Agreement::Ours
            }
            Answer::Done(Some(theirs)) => {
                self.report_success(words, admission, now_ms);
                match self.sealer.open(&self.namespace, id, now_us, &theirs) {
                    Ok((value, _)) => Agreement::Theirs { value },
                    Err(e) => {
                        self.bad_value(words, &e, now_ms);
                        Agreement::Unreachable
                    }
                }
            }
            Answer::Busy => {
                counters::bump(counter_words(words), Counter::Skipped);
                Agreement::Unreachable
            }
            Answer::Failed(failure) => {
                self.failed(words, Problem::Stores, &failure, admission, now_ms, started);
                Agreement::Unreachable
            }
        }
    }

    /// Shares a remove (written now, its reply read later, like a store).
    pub fn remove(&self, words: &[AtomicU64; TIER_WORDS], id: &[u8]) {
        self.remove_at(words, id, now_us());
    }

    /// [`remove`](Self::remove) with the caller's clock.
    pub fn remove_at(&self, words: &[AtomicU64; TIER_WORDS], id: &[u8], now_us: i64) {
        let Some(link) = self.link_here() else {
            return;
        };
        let now_ms = ms(now_us);
        let admission = breaker_of(words).admit(now_ms);
        if admission == Admission::Open || self.thread_just_timed_out() {
            counters::bump(counter_words(words), Counter::Skipped);
            return;
        }
        let started = Instant::now();
        let probe = admission == Admission::Probe;
        let out = link.del(&self.redis_key(id), started + self.timeout, probe);
        self.conclude(words, Sent::Del, out, admission, now_ms, started);
    }

    /// The redis key of `id`: `{prefix}{namespace}:{hex(id)}`.
    pub fn redis_key(&self, id: &[u8]) -> Vec<u8> {
        let mut key =
            Vec::with_capacity(self.prefix.len() + self.namespace.len() + 1 + 2 * id.len());
        key.extend_from_slice(self.prefix.as_bytes());
        key.extend_from_slice(self.namespace.as_bytes());
        key.push(b':');
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for byte in id {
            key.push(HEX[usize::from(byte >> 4)]);
            key.push(HEX[usize::from(byte & 0x0f)]);
        }
        key
    }

    /// In a new process that will serve (httpd's `child_init`, before any
    /// request): connect ahead of need, waiting at most the larger of
    /// `timeout` and [`WARM_UP`], so that the first handshakes do not pay a
    /// connect (over TLS: a full TLS handshake with Redis) within their own
    /// `timeout`. Nothing in the home process; nothing counted or logged.
    pub fn warm_up(&self) {
        if let Some(link) = self.link_here() {
            link.warm_up(Instant::now() + self.timeout.max(WARM_UP));
        }
    }

    /// Whether this thread waited out a timeout just now (see
    /// `TIMED_OUT_AT`): its writes are skipped for a moment.
    fn thread_just_timed_out(&self) -> bool {
        thread_timed_out_within(QUIET_AFTER_TIMEOUT.max(self.timeout))
    }

    /// This process's link, made if needed; `None` in the home process.
    fn link_here(&self) -> Option<Link> {
        let pid = std::process::id();
        if let Some(home) = self.home_pid {
            if i64::from(home) == i64::from(pid) {
                return None;
            }
        }
        let mut slot = self.link.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(link) = slot.as_ref() {
            if link.pid() == pid {
                return Some(link.clone());
            }
            // Inherited across fork: abandon, never drop (module `link`).
            if let Some(inherited) = slot.take() {
                std::mem::forget(inherited);
            }
        }
        let link = Link::new(
            self.connector.clone(),
            self.login.clone(),
            self.route.clone(),
            self.replica.clone(),
            self.connections,
        );
        *slot = Some(link.clone());
        Some(link)
    }

    /// How a store or remove ended: its late replies settled, the op
    /// counted as sent or dropped (every connection busy), a failure
    /// counted (and moves the breaker or starts an episode); a probe's
    /// success closes the breaker.
    fn conclude(
        &self,
        words: &[AtomicU64; TIER_WORDS],
        sent: Sent,
        out: Outcome<()>,
        admission: Admission,
        now_ms: u64,
        started: Instant,
    ) {
        self.settle(words, &out.drained, now_ms);
        let counter = match (sent, &out.answer) {
            (Sent::Set, Answer::Busy) => Counter::StoresDropped,
            (Sent::Set, _) => Counter::StoresSent,
            (Sent::Del, Answer::Busy) => Counter::RemovesDropped,
            (Sent::Del, _) => Counter::RemovesSent,
        };
        counters::bump(counter_words(words), counter);
        let problem = problem_of(sent);
        match out.answer {
            Answer::Done(()) if admission == Admission::Probe => {
                self.report_success(words, admission, now_ms);
                self.problem_over(words, problem, now_ms);
            }
            Answer::Done(()) | Answer::Busy => {}
            Answer::Failed(failure) => {
                self.failed(words, problem, &failure, admission, now_ms, started)
            }
        }
    }

    /// The late replies of earlier stores and removes: counted, and their
    /// error replies make (or their successes end) an episode.
    fn settle(&self, words: &[AtomicU64; TIER_WORDS], drained: &Drained, now_ms: u64) {
        for (sent, outcome) in drained {
            let problem = problem_of(*sent);
            match outcome {
                Ok(()) => self.problem_over(words, problem, now_ms),
                Err(failure) => {
                    count_failure(words, failure);
                    self.problem(words, problem, &failure.why, now_ms);
                }
            }
        }
    }

    /// A failed op: counted by kind; a failure that says Redis is gone or
    /// hung moves the breaker, any other starts (or continues) an episode.
    fn failed(
        &self,
        words: &[AtomicU64; TIER_WORDS],
        problem: Problem,
        failure: &Failure,
        admission: Admission,
        now_ms: u64,
        started: Instant,
    ) {
        count_failure(words, failure);
        if failure.kind == FailureKind::Timeout {
            TIMED_OUT_AT.with(|t| t.set(Some(Instant::now())));
        }
        if failure.moves_breaker() || admission == Admission::Probe {
            // The backoff counts from when the wait ended.
            let ended_ms = now_ms.saturating_add(started.elapsed().as_millis() as u64);
            self.report_failure(words, admission, ended_ms, &failure.why);
        }
        if !failure.moves_breaker() {
            self.problem(words, problem, &failure.why, now_ms);
        }
    }

    fn problem(&self, words: &[AtomicU64; TIER_WORDS], problem: Problem, why: &str, now_ms: u64) {
        if episodes_of(words).failed(problem, now_ms) {
            self.events.problem_started(problem, why);
        }
    }

    /// A value Redis answered that did not open: counted, and an episode
    /// of [`Problem::Values`] started (or continued). That says nothing
    /// good about Redis (no breaker success), nor that it is gone.
    fn bad_value(&self, words: &[AtomicU64; TIER_WORDS], e: &SealError, now_ms: u64) {
        counters::bump(counter_words(words), Counter::SealFailures);
        if episodes_of(words).failed(Problem::Values, now_ms) {
            self.events.problem_started(
                Problem::Values,
                &format!("{}: {e} (another farm key, or tampering)", self.endpoint),
            );
        }
    }

    fn problem_over(&self, words: &[AtomicU64; TIER_WORDS], problem: Problem, now_ms: u64) {
        if let Some(lasted) = episodes_of(words).succeeded(problem, now_ms) {
            self.events.problem_ended(problem, lasted);
        }
    }

    fn report_success(&self, words: &[AtomicU64; TIER_WORDS], admission: Admission, now_ms: u64) {
        if let Some(Transition::Closed { was_open_for }) =
            breaker_of(words).succeeded(admission, now_ms)
        {
            self.events.breaker_closed(was_open_for);
        }
    }

    fn report_failure(
        &self,
        words: &[AtomicU64; TIER_WORDS],
        admission: Admission,
        now_ms: u64,
        why: &str,
    ) {
        if let Some(Transition::Opened) = breaker_of(words).failed(admission, now_ms) {
            counters::bump(counter_words(words), Counter::BreakerOpenings);
            self.events.breaker_opened(why);
        }
    }
}

/// Counts a failure by its kind.
fn count_failure(words: &[AtomicU64; TIER_WORDS], failure: &Failure) {
    let counter = match failure.kind {
        FailureKind::Timeout => Counter::Timeouts,
        FailureKind::Connection => Counter::Errors,
        FailureKind::Refused => Counter::ErrorReplies,
        FailureKind::BadReply => Counter::BadReplies,
    };
    counters::bump(counter_words(words), counter);
}

/// A lifetime in µs as Redis's `PX` (ms, rounded up, at least 1).
fn px_ms(remaining_us: i64) -> u64 {
    u64::try_from(remaining_us.saturating_add(999) / 1000)
        .unwrap_or(1)
        .max(1)
}

fn problem_of(sent: Sent) -> Problem {
    match sent {
        Sent::Set => Problem::Stores,
        Sent::Del => Problem::Removes,
    }
}

impl Drop for Farm {
    /// A link made by another process (inherited across `fork`) is
    /// abandoned, like in `link_here`: its mutex may have been held by a
    /// thread that does not exist here.
    fn drop(&mut self) {
        let slot = self.link.get_mut().unwrap_or_else(PoisonError::into_inner);
        if let Some(link) = slot.take() {
            if link.pid() != std::process::id() {
                std::mem::forget(link);
            }
        }
    }
}

impl fmt::Debug for Farm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Farm")
            .field("endpoint", &self.endpoint)
            .field("sealer", &self.sealer)
            .field("namespace", &self.namespace)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// µs since the epoch → ms since the epoch (0 before it).
pub(crate) fn ms(us: i64) -> u64 {
    u64::try_from(us / 1000).unwrap_or(0)
}

/// Now, in µs since the epoch.
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(endpoint: &str) -> FarmConfig {
        FarmConfig {
            endpoint: Endpoint::parse(endpoint).expect("endpoint"),
            replica: None,
            tls: TlsFiles::default(),
            timeout: Duration::from_millis(50),
            sealer: Sealer::off(),
            prefix: "socache-shm:".into(),
            namespace: "ns".into(),
            connections: 1,
            max_value: 1024,
            home_pid: None,
        }
    }

    #[test]
    fn keys_are_prefixed_hex() {
        let farm = Farm::new(config("redis://127.0.0.1:1"), Box::new(())).expect("farm");
        assert_eq!(
            farm.redis_key(&[0x00, 0xab, 0xff]),
            b"socache-shm:ns:00abff".to_vec()
        );
    }

    #[test]
    fn configuration_errors() {
        use FarmError as E;
        type Change = fn(&mut FarmConfig);
        type Expect = fn(&FarmError) -> bool;
        let cases: &[(&str, Change, Expect)] = &[
            (
                "redis://127.0.0.1:1",
                |c| c.tls.ca = Some("/nonexistent".into()),
                |e| matches!(e, E::TlsWithoutRediss { .. }),
            ),
            (
                "rediss://127.0.0.1:1",
                |c| c.tls.cert = Some("/nonexistent".into()),
                |e| matches!(e, E::CertWithoutKey),
            ),
            (
                "rediss://127.0.0.1:1",
                |c| c.tls.key = Some("/nonexistent".into()),
                |e| matches!(e, E::KeyWithoutCert),
            ),
            (
                "rediss://127.0.0.1:1",
                |c| c.tls.ca = Some("/nonexistent/ca.pem".into()),
                |e| matches!(e, E::TlsFile { .. }),
            ),
            (
                "redis://127.0.0.1:1",
                |c| c.connections = 0,
                |e| matches!(e, E::NoConnections),
            ),
            (
                "redis://127.0.0.1:1",
                |c| c.timeout = Duration::ZERO,
                |e| matches!(e, E::TimeoutTooShort(_)),
            ),
        ];
        for (i, (endpoint, change, expected)) in cases.iter().enumerate() {
            let mut c = config(endpoint);
            change(&mut c);
            let result = Farm::new(c, Box::new(()));
            assert!(
                matches!(&result, Err(e) if expected(e)),
                "case {i} ({endpoint}): {result:?}"
            );
        }
    }

    #[test]
    fn figures_start_closed_and_zero() {
        let words: [AtomicU64; TIER_WORDS] = Default::default();
        let figures: Vec<(&str, String)> = figures(&words, now_us())
            .into_iter()
            .map(|(key, _, value)| (key, value))
            .collect();
        assert_eq!(figures[0], ("FarmRemoteHits", "0".to_string()));
        assert!(figures.contains(&("FarmBreaker", "closed".to_string())));
        assert!(figures.contains(&("FarmBreakerOpenSecs", "0".to_string())));
    }
}
