//! mod_socache_shm's farm tier: Redis (a single server, a Redis Cluster, or
//! Valkey) behind the local shared-memory cache, so that the hosts of a farm
//! resume each other's TLS sessions. It knows nothing of Apache and nothing
//! of the engine: the provider calls [`Farm`] with bytes, times in
//! microseconds since the epoch (`apr_time_t`), and a borrow of
//! [`TIER_WORDS`] words of the segment's shared memory.
//!
//! What it fixes in httpd's own `mod_socache_redis` (see the reference
//! notes): no caller ever waits longer than the configured timeout (connect
//! included); when Redis is down or hung one host-wide [`breaker`] stops
//! every process from trying, and one probe at a time finds out when it is
//! back (one log line when it opens, one when it closes); values are sealed
//! ([`seal`]) under a farm key file ([`keys`]) so Redis never holds a
//! session's master secret, and a writer to Redis can neither forge, move,
//! nor prolong a value; AUTH, ACL users, TLS (with client certificates),
//! database selection and Cluster come from the redis-rs client
//! ([`endpoint`]).
//!
//! # Shared words
//!
//! ```text
//! word  0        1          2         3 .. 3+COUNTER_WORDS     .. 31
//!      +--------+----------+---------+------------------------+----------+
//!      | open_  | opened_  | backoff | counters (counters.rs  | reserved |
//!      | until  | at       |  (ms)   | table order)           | (zero)   |
//!      +--------+----------+---------+------------------------+----------+
//! ```
//!
//! The words are shared by every process of the host and may be written by
//! any of them (a compromised child included): the breaker reads garbage
//! safely, and counters are only statistics.
//!
//! # Processes and threads
//!
//! [`Farm::new`] (in httpd's parent, as root, at init) only builds clients:
//! no socket, no thread. In the home process (`home_pid`, the parent) every
//! op is skipped. Elsewhere the first op starts the process's [`link`]; a
//! forked child abandons its parent's link and starts its own.

pub mod breaker;
pub mod counters;
pub mod endpoint;
pub mod keys;
pub mod link;
pub mod seal;

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::mpsc::{self, RecvTimeoutError, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use redis::cluster::ClusterClientBuilder;
use redis::{Client, ClientTlsConfig, TlsCertificates};

pub use breaker::{Admission, Breaker, BreakerState, Transition};
pub use counters::{Counter, FarmStats};
pub use endpoint::{Endpoint, EndpointError, TlsFiles, Topology};
pub use keys::{FarmKeys, KeyFileError, KeyName};
pub use seal::{SealError, Sealer};

use breaker::BREAKER_WORDS;
use counters::COUNTER_WORDS;
use link::{FailureKind, GetReply, Link, Op, Target};

/// Number of u64 words the caller gives the farm tier in shared memory (all
/// processes of one host see the same words; they start zeroed). The caller
/// (the engine's segment header) provides `&[AtomicU64; TIER_WORDS]`.
pub const TIER_WORDS: usize = 32;

/// The first counter word.
const COUNTERS_AT: usize = BREAKER_WORDS;
const _: () = assert!(COUNTERS_AT + COUNTER_WORDS <= TIER_WORDS);

/// Everything the farm needs, from the provider's configuration.
pub struct FarmConfig {
    /// Where Redis is ([`Endpoint::parse`] or [`Endpoint::parse_cluster`]).
    pub endpoint: Endpoint,
    /// CA file, client certificate, client key (`rediss://` only).
    pub tls: TlsFiles,
    /// The most a caller ever waits, connect included (at least 1 ms).
    pub timeout: Duration,
    /// Keys, or the explicit opt-out.
    pub sealer: Sealer,
    /// Prefix of every Redis key, e.g. "socache-shm:".
    pub prefix: String,
    /// The cache instance's consumer name, e.g. "mod_ssl-session".
    pub namespace: String,
    /// I/O worker threads per process (1 for prefork, 2 for threaded MPMs).
    pub workers: usize,
    /// Bounded queue length (e.g. 1024).
    pub queue: usize,
    /// The process that must never open a socket or start a thread (httpd's
    /// parent): every op there is skipped.
    pub home_pid: Option<libc::pid_t>,
}

/// How the farm reports, so the caller can log (httpd's error log). Called
/// from the thread of an op, once per transition host-wide.
pub trait Events: Send + Sync {
    /// The breaker opened (this process's op saw the failure `why`).
    fn breaker_opened(&self, why: &str);
    /// A probe succeeded and closed the breaker.
    fn breaker_closed(&self, was_open_for: Duration);
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
    /// Not asked: breaker open, home process, or queue full.
    Skipped,
    /// Timeout, error, or a value that did not open (counted).
    Failed,
}

/// The farm tier of one cache instance. `Send + Sync`: shared by all
/// threads of a process.
pub struct Farm {
    target: Arc<Target>,
    sealer: Sealer,
    prefix: String,
    namespace: String,
    timeout: Duration,
    workers: usize,
    queue: usize,
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
    /// Builds the redis client(s) and reads the TLS files: no socket, no
    /// thread.
    pub fn new(config: FarmConfig, events: Box<dyn Events>) -> Result<Farm, FarmError> {
        let FarmConfig {
            endpoint,
            tls,
            timeout,
            sealer,
            prefix,
            namespace,
            workers,
            queue,
            home_pid,
        } = config;
        if workers == 0 {
            return Err(FarmError::NoWorkers);
        }
        if queue == 0 {
            return Err(FarmError::NoQueue);
        }
        if timeout < Duration::from_millis(1) {
            return Err(FarmError::TimeoutTooShort(timeout));
        }
        let certificates = read_tls_files(&endpoint, &tls)?;
        let client_error = |e: redis::RedisError| FarmError::Client {
            endpoint: endpoint.to_string(),
            why: e.to_string(),
        };
        let target = match endpoint.topology() {
            Topology::Single => {
                let info = endpoint
                    .nodes()
                    .first()
                    .cloned()
                    .ok_or_else(|| FarmError::Client {
                        endpoint: endpoint.to_string(),
                        why: "no node".to_string(),
                    })?;
                let client = match certificates {
                    Some(certs) => Client::build_with_tls(info, certs),
                    None => Client::open(info),
                }
                .map_err(client_error)?;
                Target::Single(client)
            }
            Topology::Cluster => {
                // redis-rs's sync cluster client takes custom certificates
                // only with rustls; with native-tls (the system OpenSSL)
                // it verifies against the system trust store.
                if certificates.is_some() {
                    return Err(FarmError::ClusterTlsFiles {
                        endpoint: endpoint.to_string(),
                    });
                }
                let builder = ClusterClientBuilder::new(endpoint.nodes().to_vec())
                    // One retry: follows one MOVED/ASK; the sync client's
                    // retries sleep, and a caller never waits past `timeout`.
                    .retries(1)
                    .min_retry_wait(1)
                    .max_retry_wait(10)
                    .connection_timeout(timeout)
                    .response_timeout(timeout);
                Target::Cluster(builder.build().map_err(client_error)?)
            }
        };
        Ok(Farm {
            target: Arc::new(target),
            sealer,
            prefix,
            namespace,
            timeout,
            workers,
            queue,
            home_pid,
            events,
            endpoint,
            link: Mutex::new(None),
        })
    }

    /// Where this farm's Redis is (passwords hidden), for the log.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Forward a store: never blocks on the network (try_send on the bounded
    /// queue; full = dropped and counted).
    pub fn store(
        &self,
        words: &[AtomicU64; TIER_WORDS],
        id: &[u8],
        value: &[u8],
        expiry_us: i64,
        now_us: i64,
    ) {
        let Some(link) = self.link_here() else {
            return;
        };
        let now_ms = ms(now_us);
        self.absorb(words, &link, now_ms);
        let remaining_us = expiry_us.saturating_sub(now_us);
        if remaining_us <= 0 {
            return; // already expired: nothing to share
        }
        let px_ms = u64::try_from(remaining_us.saturating_add(999) / 1000)
            .unwrap_or(1)
            .max(1);
        let admission = breaker_of(words).admit(now_ms);
        if admission == Admission::Open {
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
        let op = Op::Set {
            key: self.redis_key(id),
            sealed,
            px_ms,
            probe: admission == Admission::Probe,
        };
        match link.try_send(op) {
            Ok(()) => counters::bump(counter_words(words), Counter::StoresSent),
            Err(TrySendError::Full(_)) => {
                counters::bump(counter_words(words), Counter::StoresDropped)
            }
            Err(TrySendError::Disconnected(_)) => {
                counters::bump(counter_words(words), Counter::Errors)
            }
        }
    }

    /// One GET, the caller waits at most `timeout` (recv_timeout on a reply
    /// channel); opens the sealed value.
    pub fn retrieve(&self, words: &[AtomicU64; TIER_WORDS], id: &[u8], now_us: i64) -> Lookup {
        let Some(link) = self.link_here() else {
            return Lookup::Skipped;
        };
        let now_ms = ms(now_us);
        self.absorb(words, &link, now_ms);
        let breaker = breaker_of(words);
        let counters = counter_words(words);
        let admission = breaker.admit(now_ms);
        if admission == Admission::Open {
            counters::bump(counters, Counter::Skipped);
            return Lookup::Skipped;
        }
        let (reply, answer) = mpsc::sync_channel(1);
        let op = Op::Get {
            key: self.redis_key(id),
            reply,
            deadline: Instant::now() + self.timeout,
        };
        match link.try_send(op) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                counters::bump(counters, Counter::Skipped);
                return Lookup::Skipped;
            }
            Err(TrySendError::Disconnected(_)) => {
                counters::bump(counters, Counter::Errors);
                return Lookup::Failed;
            }
        }
        match answer.recv_timeout(self.timeout) {
            Ok(GetReply::Found(sealed)) => {
                self.report_success(words, admission, now_ms);
                match self.sealer.open(&self.namespace, id, now_us, &sealed) {
                    Ok((value, expiry_us)) => {
                        counters::bump(counters, Counter::RemoteHits);
                        Lookup::Hit { value, expiry_us }
                    }
                    Err(SealError::Expired) => {
                        counters::bump(counters, Counter::RemoteMisses);
                        Lookup::Miss
                    }
                    Err(_) => {
                        counters::bump(counters, Counter::SealFailures);
                        Lookup::Failed
                    }
                }
            }
            Ok(GetReply::Absent) => {
                self.report_success(words, admission, now_ms);
                counters::bump(counters, Counter::RemoteMisses);
                Lookup::Miss
            }
            Ok(GetReply::Failed(failure)) => {
                let counter = match failure.kind {
                    FailureKind::Timeout => Counter::Timeouts,
                    FailureKind::Error | FailureKind::NodeError => Counter::Errors,
                };
                counters::bump(counters, counter);
                // One cluster node's failure leaves the breaker alone,
                // unless this GET was the probe (whose outcome decides).
                if failure.concerns_the_breaker() || admission == Admission::Probe {
                    self.report_failure(words, admission, now_ms, &failure.why);
                }
                Lookup::Failed
            }
            Err(RecvTimeoutError::Timeout) => {
                counters::bump(counters, Counter::Timeouts);
                let why = format!(
                    "GET: no answer from {} within {} ms",
                    self.endpoint,
                    self.timeout.as_millis()
                );
                self.report_failure(words, admission, now_ms, &why);
                Lookup::Failed
            }
            Err(RecvTimeoutError::Disconnected) => {
                // The worker dropped the reply unanswered (it found the
                // deadline passed): as good as a timeout.
                counters::bump(counters, Counter::Timeouts);
                let why = format!("GET: {} did not answer in time", self.endpoint);
                self.report_failure(words, admission, now_ms, &why);
                Lookup::Failed
            }
        }
    }

    /// Forward a DEL (queued like a store).
    pub fn remove(&self, words: &[AtomicU64; TIER_WORDS], id: &[u8]) {
        self.remove_at(words, id, now_us());
    }

    /// [`remove`](Self::remove) with the caller's clock.
    pub fn remove_at(&self, words: &[AtomicU64; TIER_WORDS], id: &[u8], now_us: i64) {
        let Some(link) = self.link_here() else {
            return;
        };
        let now_ms = ms(now_us);
        self.absorb(words, &link, now_ms);
        let admission = breaker_of(words).admit(now_ms);
        if admission == Admission::Open {
            counters::bump(counter_words(words), Counter::Skipped);
            return;
        }
        let op = Op::Del {
            key: self.redis_key(id),
            probe: admission == Admission::Probe,
        };
        match link.try_send(op) {
            Ok(()) => counters::bump(counter_words(words), Counter::RemovesSent),
            Err(TrySendError::Full(_)) => {
                counters::bump(counter_words(words), Counter::RemovesDropped)
            }
            Err(TrySendError::Disconnected(_)) => {
                counters::bump(counter_words(words), Counter::Errors)
            }
        }
    }

    /// The Redis key of `id`: `{prefix}{namespace}:{hex(id)}`.
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

    /// This process's link, started if needed; `None` in the home process
    /// or if no thread could be started.
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
        let link = Link::start(self.target.clone(), self.workers, self.queue, self.timeout).ok()?;
        *slot = Some(link.clone());
        Some(link)
    }

    /// Folds the workers' outcomes into the shared counters and breaker.
    fn absorb(&self, words: &[AtomicU64; TIER_WORDS], link: &Link, now_ms: u64) {
        let counters = counter_words(words);
        let (errors, timeouts) = link.outcomes().take_counts();
        counters::add(counters, Counter::Errors, errors);
        counters::add(counters, Counter::Timeouts, timeouts);
        for report in link.outcomes().take_reports() {
            let admission = if report.probe {
                Admission::Probe
            } else {
                Admission::Closed
            };
            match report.failure {
                None => self.report_success(words, admission, now_ms),
                Some(failure) => self.report_failure(words, admission, now_ms, &failure.why),
            }
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

impl Drop for Farm {
    /// A link this process started is dropped (its workers see the queue
    /// close and end); one inherited across `fork` is abandoned instead,
    /// like in `link_here`: its channel may have been locked by a thread
    /// that does not exist here.
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

/// What [`Farm::new`] would refuse about the TLS files, checked alone (at
/// configuration time, as root): unreadable files, a certificate without
/// its key, files for a `redis://` endpoint, files for a cluster.
pub fn check(endpoint: &Endpoint, tls: &TlsFiles) -> Result<(), FarmError> {
    let certificates = read_tls_files(endpoint, tls)?;
    if certificates.is_some() && endpoint.topology() == Topology::Cluster {
        return Err(FarmError::ClusterTlsFiles {
            endpoint: endpoint.to_string(),
        });
    }
    Ok(())
}

/// A snapshot of the tier's counters.
pub fn stats(words: &[AtomicU64; TIER_WORDS]) -> FarmStats {
    FarmStats::read(counter_words(words))
}

fn breaker_of(words: &[AtomicU64; TIER_WORDS]) -> Breaker<'_> {
    // Constant indices into an array of TIER_WORDS (checked at compile time).
    Breaker::new(&words[0], &words[1], &words[2])
}

fn counter_words(words: &[AtomicU64; TIER_WORDS]) -> &[AtomicU64] {
    // In bounds: the const assert beside COUNTERS_AT.
    &words[COUNTERS_AT..COUNTERS_AT + COUNTER_WORDS]
}

/// µs since the epoch → ms since the epoch (0 before it).
fn ms(us: i64) -> u64 {
    u64::try_from(us / 1000).unwrap_or(0)
}

/// Now, in µs since the epoch.
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// Reads the TLS files named for a `rediss://` endpoint.
fn read_tls_files(
    endpoint: &Endpoint,
    tls: &TlsFiles,
) -> Result<Option<TlsCertificates>, FarmError> {
    if tls.is_empty() {
        return Ok(None);
    }
    if !endpoint.is_tls() {
        return Err(FarmError::TlsWithoutRediss {
            endpoint: endpoint.to_string(),
        });
    }
    let read = |path: &PathBuf| {
        std::fs::read(path).map_err(|source| FarmError::TlsFile {
            path: path.clone(),
            source,
        })
    };
    let client_tls = match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => Some(ClientTlsConfig {
            client_cert: read(cert)?,
            client_key: read(key)?,
        }),
        (Some(_), None) => return Err(FarmError::CertWithoutKey),
        (None, Some(_)) => return Err(FarmError::KeyWithoutCert),
        (None, None) => None,
    };
    let root_cert = tls.ca.as_ref().map(read).transpose()?;
    Ok(Some(TlsCertificates {
        client_tls,
        root_cert,
    }))
}

/// Why a farm could not be made.
#[derive(Debug)]
#[non_exhaustive]
pub enum FarmError {
    /// `workers` was 0.
    NoWorkers,
    /// `queue` was 0.
    NoQueue,
    /// `timeout` under 1 ms.
    TimeoutTooShort(Duration),
    /// TLS files named for a `redis://` address.
    TlsWithoutRediss { endpoint: String },
    /// A client certificate without its key.
    CertWithoutKey,
    /// A client key without its certificate.
    KeyWithoutCert,
    /// A TLS file could not be read.
    TlsFile {
        path: PathBuf,
        source: std::io::Error,
    },
    /// TLS files for a cluster: the cluster client verifies against the
    /// system trust store only.
    ClusterTlsFiles { endpoint: String },
    /// The redis client refused the configuration (a bad certificate, …).
    Client { endpoint: String, why: String },
}

impl fmt::Display for FarmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoWorkers => f.write_str("farm: at least one worker thread is needed"),
            Self::NoQueue => f.write_str("farm: the queue needs room for at least one op"),
            Self::TimeoutTooShort(t) => write!(f, "farm: timeout {t:?} is under 1 ms"),
            Self::TlsWithoutRediss { endpoint } => write!(
                f,
                "farm: TLS files are given but '{endpoint}' is not a rediss:// address"
            ),
            Self::CertWithoutKey => f.write_str("farm: a TLS client certificate needs its key"),
            Self::KeyWithoutCert => f.write_str("farm: a TLS client key needs its certificate"),
            Self::TlsFile { path, source } => {
                write!(f, "farm: cannot read TLS file {}: {source}", path.display())
            }
            Self::ClusterTlsFiles { endpoint } => write!(
                f,
                "farm: TLS files are not supported for the cluster '{endpoint}'; \
                 install its CA in the system trust store (update-ca-certificates)"
            ),
            Self::Client { endpoint, why } => {
                write!(f, "farm: Redis client for '{endpoint}': {why}")
            }
        }
    }
}

impl std::error::Error for FarmError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::TlsFile { source, .. } => Some(source),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Quiet;
    impl Events for Quiet {
        fn breaker_opened(&self, _: &str) {}
        fn breaker_closed(&self, _: Duration) {}
    }

    fn config(endpoint: &str) -> FarmConfig {
        FarmConfig {
            endpoint: Endpoint::parse(endpoint).expect("endpoint"),
            tls: TlsFiles::default(),
            timeout: Duration::from_millis(50),
            sealer: Sealer::off(),
            prefix: "socache-shm:".into(),
            namespace: "ns".into(),
            workers: 1,
            queue: 4,
            home_pid: None,
        }
    }

    #[test]
    fn keys_are_prefixed_hex() {
        let farm = Farm::new(config("redis://127.0.0.1:1"), Box::new(Quiet)).expect("farm");
        assert_eq!(
            farm.redis_key(&[0x00, 0xab, 0xff]),
            b"socache-shm:ns:00abff".to_vec()
        );
    }

    #[test]
    fn configuration_errors() {
        let mut c = config("redis://127.0.0.1:1");
        c.tls.ca = Some("/nonexistent".into());
        assert!(matches!(
            Farm::new(c, Box::new(Quiet)),
            Err(FarmError::TlsWithoutRediss { .. })
        ));
        let mut c = config("rediss://127.0.0.1:1");
        c.tls.cert = Some("/nonexistent".into());
        assert!(matches!(
            Farm::new(c, Box::new(Quiet)),
            Err(FarmError::CertWithoutKey)
        ));
        let mut c = config("rediss://127.0.0.1:1");
        c.tls.key = Some("/nonexistent".into());
        assert!(matches!(
            Farm::new(c, Box::new(Quiet)),
            Err(FarmError::KeyWithoutCert)
        ));
        let mut c = config("rediss://127.0.0.1:1");
        c.tls.ca = Some("/nonexistent/ca.pem".into());
        assert!(matches!(
            Farm::new(c, Box::new(Quiet)),
            Err(FarmError::TlsFile { .. })
        ));
        let mut c = config("redis://127.0.0.1:1");
        c.workers = 0;
        assert!(matches!(
            Farm::new(c, Box::new(Quiet)),
            Err(FarmError::NoWorkers)
        ));
        let mut c = config("redis://127.0.0.1:1");
        c.queue = 0;
        assert!(matches!(
            Farm::new(c, Box::new(Quiet)),
            Err(FarmError::NoQueue)
        ));
        let mut c = config("redis://127.0.0.1:1");
        c.timeout = Duration::ZERO;
        assert!(matches!(
            Farm::new(c, Box::new(Quiet)),
            Err(FarmError::TimeoutTooShort(_))
        ));
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
