//! The per-process link to Redis: worker threads that own the connections,
//! fed through one bounded queue, so that no caller (an httpd worker thread
//! in the middle of a TLS handshake) ever blocks on the network for longer
//! than the farm's timeout, and a store never blocks at all.
//!
//! # Shape
//!
//! ```text
//!  callers ──try_send──▶ sync_channel(queue) ──▶ worker "socache-farm" ×N ──▶ Redis
//!     ▲                   (one receiver,            owns its Connection or
//!     │                    behind a Mutex)          ClusterConnection
//!     └── recv_timeout(timeout) ◀── reply channel (GET only, capacity 1)
//! ```
//!
//! - [`Op::Set`] and [`Op::Del`] are fire-and-forget: the caller's `try_send`
//!   never waits (a full queue drops the op; the caller counts it).
//! - [`Op::Get`] carries a reply channel of capacity 1 and a deadline: the
//!   caller waits with `recv_timeout`; a reply that comes after is dropped
//!   (`try_send` into a channel whose receiver is gone), and a worker that
//!   takes a Get whose deadline has passed skips it (its caller left).
//! - A worker connects lazily, with `get_connection_with_timeout(timeout)`,
//!   and sets the read and write timeouts itself (redis-rs clears them after
//!   connecting). On any error it drops the connection; the next op
//!   reconnects (ops reach the worker only while the breaker admits them).
//! - Sets already queued behind a Set go out in one pipeline (single server;
//!   up to 32), so a burst of new sessions costs one round trip.
//!
//! # Reporting without shared memory
//!
//! Workers cannot see the caller's shared words (they get a borrow per call).
//! What workers learn from Sets and Dels (failures; a probe's outcome) goes
//! into this process's [`Outcomes`], and the next caller of the process
//! folds it into the shared counters and the breaker (`Farm::absorb`). A
//! Get's outcome the caller sees itself.
//!
//! # Processes
//!
//! A link belongs to the process that started it (its pid is recorded). The
//! farm starts none in its home process (httpd's parent) and none in
//! `Farm::new`. After a `fork` the child finds a link whose pid is not its
//! own: that link's threads do not exist in the child and its channel's
//! locks may have been held mid-operation by them at the fork, so the child
//! abandons it with `mem::forget` (never dropped, never joined, no socket
//! shut down: a shutdown would cut the parent's connection) and starts its
//! own.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use redis::cluster::{ClusterClient, ClusterConnection};
use redis::{Client, Connection, ConnectionLike, RedisError};

/// The most worker reports kept between two folds (a flood of failures needs
/// only the first to open the breaker; the counters count them all).
const MAX_REPORTS: usize = 64;

/// The most Sets one pipeline carries.
const MAX_BATCH: usize = 32;

/// The name of every worker thread.
pub const THREAD_NAME: &str = "socache-farm";

/// Where the workers connect: built once by `Farm::new`, shared by workers.
pub enum Target {
    /// One server.
    Single(Client),
    /// A Redis Cluster.
    Cluster(ClusterClient),
}

/// One queued operation.
pub enum Op {
    /// `SET key sealed PX px_ms`.
    Set {
        key: Vec<u8>,
        sealed: Vec<u8>,
        px_ms: u64,
        probe: bool,
    },
    /// `GET key`, answered on `reply` unless `deadline` has passed.
    Get {
        key: Vec<u8>,
        reply: SyncSender<GetReply>,
        deadline: Instant,
    },
    /// `DEL key`.
    Del { key: Vec<u8>, probe: bool },
}

/// A worker's answer to a Get.
#[derive(Debug)]
pub enum GetReply {
    /// The stored (sealed) bytes.
    Found(Vec<u8>),
    /// No such key.
    Absent,
    /// It failed.
    Failed(Failure),
}

/// Whether a failure was a timeout or anything else.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// A socket timeout (connect, read or write).
    Timeout,
    /// Refused, reset, an error reply (LOADING, OOM, NOAUTH, READONLY, MOVED
    /// loops, …), a protocol error.
    Error,
    /// Like `Error`, but from one node of a Redis Cluster whose connection
    /// still stands: the other nodes' slots still answer, so it is counted
    /// and does not open the host's breaker (a dead node costs only its
    /// slots; a refused connection costs no wait). A node that hangs still
    /// times out, and timeouts open the breaker.
    NodeError,
}

/// Why an op failed.
#[derive(Clone, Debug)]
pub struct Failure {
    /// Timeout or error.
    pub kind: FailureKind,
    /// For the log ("SET: Connection refused (os error 111)").
    pub why: String,
}

impl Failure {
    /// `one_node`: the error came from an op on an established cluster
    /// connection (so from the node serving that key's slot).
    fn from_redis(what: &str, error: &RedisError, one_node: bool) -> Failure {
        Failure {
            kind: if error.is_timeout() {
                FailureKind::Timeout
            } else if one_node {
                FailureKind::NodeError
            } else {
                FailureKind::Error
            },
            why: format!("{what}: {error}"),
        }
    }

    /// Whether this failure says something about Redis as a whole (and
    /// so moves the breaker), rather than about one cluster node.
    pub fn concerns_the_breaker(&self) -> bool {
        self.kind != FailureKind::NodeError
    }
}

/// What a worker learned from a Set or Del, for the next fold.
#[derive(Clone, Debug)]
pub struct Report {
    /// The op was the breaker's probe.
    pub probe: bool,
    /// `None`: it succeeded.
    pub failure: Option<Failure>,
}

/// Outcomes of this process's fire-and-forget ops, waiting to be folded.
#[derive(Default)]
pub struct Outcomes {
    errors: AtomicU64,
    timeouts: AtomicU64,
    reports: Mutex<Vec<Report>>,
}

impl Outcomes {
    /// Takes the counts so far: (errors, timeouts).
    pub fn take_counts(&self) -> (u64, u64) {
        (
            self.errors.swap(0, Ordering::Relaxed),
            self.timeouts.swap(0, Ordering::Relaxed),
        )
    }

    /// Takes the reports so far, oldest first.
    pub fn take_reports(&self) -> Vec<Report> {
        let mut reports = self.reports.lock().unwrap_or_else(PoisonError::into_inner);
        std::mem::take(&mut *reports)
    }

    fn record(&self, probe: bool, failure: Option<Failure>) {
        if let Some(f) = &failure {
            let counter = match f.kind {
                FailureKind::Timeout => &self.timeouts,
                FailureKind::Error | FailureKind::NodeError => &self.errors,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        let moves_breaker = failure.as_ref().is_some_and(Failure::concerns_the_breaker);
        if !probe && !moves_breaker {
            return; // nothing for the breaker (a probe's outcome always is)
        }
        let mut reports = self.reports.lock().unwrap_or_else(PoisonError::into_inner);
        if reports.len() < MAX_REPORTS || probe {
            reports.push(Report { probe, failure });
        }
    }
}

/// A process's link: the queue's sending end and the workers' outcomes.
#[derive(Clone)]
pub struct Link {
    pid: u32,
    queue: SyncSender<Op>,
    outcomes: Arc<Outcomes>,
}

impl Link {
    /// Starts `workers` threads over a queue of `queue` ops. Fails only if
    /// not even one thread could be started.
    pub fn start(
        target: Arc<Target>,
        workers: usize,
        queue: usize,
        timeout: Duration,
    ) -> io::Result<Link> {
        let (sender, receiver) = mpsc::sync_channel(queue);
        let receiver = Arc::new(Mutex::new(receiver));
        let outcomes = Arc::new(Outcomes::default());
        let mut started = 0;
        let mut last_error = None;
        for _ in 0..workers.max(1) {
            let worker = Worker {
                target: target.clone(),
                timeout,
                connection: None,
                outcomes: outcomes.clone(),
            };
            let receiver = receiver.clone();
            match std::thread::Builder::new()
                .name(THREAD_NAME.to_string())
                .spawn(move || worker.run(&receiver))
            {
                Ok(_) => started += 1,
                Err(e) => last_error = Some(e),
            }
        }
        if started == 0 {
            return Err(last_error.unwrap_or_else(|| io::Error::other("no worker started")));
        }
        Ok(Link {
            pid: std::process::id(),
            queue: sender,
            outcomes,
        })
    }

    /// The process that started this link.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Queues `op` without waiting.
    pub fn try_send(&self, op: Op) -> Result<(), TrySendError<Op>> {
        self.queue.try_send(op)
    }

    /// The workers' outcomes, to fold.
    pub fn outcomes(&self) -> &Outcomes {
        &self.outcomes
    }
}

/// A worker's connection.
enum Connected {
    Single(Connection),
    Cluster(Box<ClusterConnection>),
}

impl Connected {
    fn as_connection(&mut self) -> &mut dyn ConnectionLike {
        match self {
            Connected::Single(c) => c,
            Connected::Cluster(c) => c.as_mut(),
        }
    }
}

struct Worker {
    target: Arc<Target>,
    timeout: Duration,
    connection: Option<Connected>,
    outcomes: Arc<Outcomes>,
}

impl Worker {
    fn run(mut self, receiver: &Mutex<Receiver<Op>>) {
        loop {
            let batch = {
                let receiver = receiver.lock().unwrap_or_else(PoisonError::into_inner);
                let Ok(first) = receiver.recv() else {
                    return; // every sender is gone
                };
                let mut batch = vec![first];
                // Sets queued behind a Set go out in one pipeline (single
                // server only: a cluster routes each key to its node).
                if matches!(&*self.target, Target::Single(_)) {
                    while batch.len() < MAX_BATCH && matches!(batch.last(), Some(Op::Set { .. })) {
                        match receiver.try_recv() {
                            Ok(op) => batch.push(op),
                            Err(_) => break,
                        }
                    }
                }
                batch
            };
            self.handle_batch(batch);
        }
    }

    /// Leading Sets (two or more) in one pipeline, the rest one by one.
    fn handle_batch(&mut self, mut batch: Vec<Op>) {
        let sets = batch
            .iter()
            .take_while(|op| matches!(op, Op::Set { .. }))
            .count();
        if sets < 2 {
            for op in batch {
                self.handle(op);
            }
            return;
        }
        let rest = batch.split_off(sets);
        let mut pipe = redis::pipe();
        let mut probes = Vec::with_capacity(sets);
        for op in &batch {
            if let Op::Set {
                key,
                sealed,
                px_ms,
                probe,
            } = op
            {
                pipe.cmd("SET")
                    .arg(key)
                    .arg(sealed)
                    .arg("PX")
                    .arg(*px_ms)
                    .ignore();
                probes.push(*probe);
            }
        }
        let result = self.query("SET (pipelined)", |c| pipe.query::<()>(c));
        for probe in probes {
            self.outcomes.record(probe, result.clone().err());
        }
        for op in rest {
            self.handle(op);
        }
    }

    fn handle(&mut self, op: Op) {
        match op {
            Op::Get {
                key,
                reply,
                deadline,
            } => {
                if Instant::now() >= deadline {
                    return; // the caller has given up
                }
                let answer = match self.query("GET", |c| {
                    redis::cmd("GET").arg(&key).query::<Option<Vec<u8>>>(c)
                }) {
                    Ok(Some(bytes)) => GetReply::Found(bytes),
                    Ok(None) => GetReply::Absent,
                    Err(failure) => GetReply::Failed(failure),
                };
                // A caller that left has dropped its receiver: nothing to do.
                let _ = reply.try_send(answer);
            }
            Op::Set {
                key,
                sealed,
                px_ms,
                probe,
            } => {
                let result = self.query("SET", |c| {
                    redis::cmd("SET")
                        .arg(&key)
                        .arg(&sealed)
                        .arg("PX")
                        .arg(px_ms)
                        .query::<()>(c)
                });
                self.outcomes.record(probe, result.err());
            }
            Op::Del { key, probe } => {
                let result = self.query("DEL", |c| redis::cmd("DEL").arg(&key).query::<i64>(c));
                self.outcomes.record(probe, result.err());
            }
        }
    }

    /// Runs `f` on the connection (made first if there is none); on any
    /// error the connection is dropped.
    fn query<T>(
        &mut self,
        what: &str,
        f: impl FnOnce(&mut dyn ConnectionLike) -> redis::RedisResult<T>,
    ) -> Result<T, Failure> {
        let connection = match &mut self.connection {
            Some(connection) => connection,
            None => {
                // Not even the seed nodes answer: Redis as a whole failed.
                let made = self
                    .connect()
                    .map_err(|e| Failure::from_redis("connect", &e, false))?;
                self.connection.insert(made)
            }
        };
        let cluster = matches!(&*self.target, Target::Cluster(_));
        match f(connection.as_connection()) {
            Ok(value) => Ok(value),
            Err(error) => {
                let failure = Failure::from_redis(what, &error, cluster);
                // A single server's connection is made again; a cluster
                // connection reconnects to a failed node itself, and
                // dropping it would cost every node's connection (and a
                // slot refresh) for one node's failure. Only a timeout
                // (a node's socket left mid-reply) drops it.
                if !cluster || failure.kind == FailureKind::Timeout {
                    self.connection = None;
                }
                Err(failure)
            }
        }
    }

    fn connect(&self) -> redis::RedisResult<Connected> {
        let timeout = Some(self.timeout);
        match &*self.target {
            Target::Single(client) => {
                let connection = client.get_connection_with_timeout(self.timeout)?;
                connection.set_read_timeout(timeout)?;
                connection.set_write_timeout(timeout)?;
                Ok(Connected::Single(connection))
            }
            Target::Cluster(client) => {
                let connection = client.get_connection()?;
                connection.set_read_timeout(timeout)?;
                connection.set_write_timeout(timeout)?;
                Ok(Connected::Cluster(Box::new(connection)))
            }
        }
    }
}
