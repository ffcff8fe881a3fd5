//! A process's link to Redis: the connections its threads use, and where
//! each key goes (one server, or the node of a Redis Cluster that serves the
//! key's slot). Every operation runs on the calling thread under the
//! caller's deadline; there are no threads of our own.
//!
//! # Shape
//!
//! ```text
//!  caller (an httpd thread in a handshake)
//!    │ get / set / del (key, deadline)
//!    ▼
//!  Link ── route(key) ──▶ Address (single: the server; cluster: slot map)
//!    │ take an idle Conn for that address, or open one (within the deadline)
//!    ▼
//!  Conn (module conn): GET waits for its reply; SET/DEL are written and
//!    their replies read later (at the next call, or when 16 wait)
//! ```
//!
//! - At most `max` connections per process (a prefork child uses one); a
//!   caller that finds every one busy gets [`Answer::Busy`] and skips Redis.
//! - A connection that failed (timeout, reset, a bad reply) is dropped,
//!   never reused: its stream may hold half a reply. A connection-level
//!   failure also ends the current *generation*: every idle connection made
//!   before it is dropped when next taken (after Redis restarts, the pooled
//!   connections are all dead; the first op after the restart must not
//!   fail on them one by one). A connection that was idle and fails at once
//!   is tried again once on a new one, within the same deadline.
//!
//! # Cluster
//!
//! The slot map comes from `CLUSTER SLOTS`, asked at the first op and again
//! after a redirection or a node's failure, at most once every
//! [`REFRESH_EVERY`] (a misdirecting node must not turn every op into a
//! refresh). A `MOVED` reply updates its slot at once and the op follows it
//! once, within its deadline; `ASK` (a slot being migrated) is not
//! followed: the op fails and is counted. A node's key slot is CRC16 of the
//! key (its hash tag if it has one) modulo 16384, as every cluster client
//! computes it.
//!
//! # Sentinel
//!
//! The master's address comes from the sentinels
//! (`SENTINEL get-master-addr-by-name NAME`, asked in turn within the op's
//! deadline) at the first op, and again after the master failed (a
//! connection failure, a timeout, or `READONLY`: the old master came back
//! as a replica), at most once every [`ASK_SENTINELS_EVERY`]. So a
//! failover is followed within a moment of the sentinels announcing it
//! (`+switch-master`), with no subscription and no thread.
//!
//! # memcached
//!
//! Several servers, each key on one (CRC16 of the key modulo their number,
//! so a dead server costs only its keys: its failures count as one node's,
//! like a cluster node's), spoken to in the meta protocol (module `conn`):
//! `mg KEY v`, `ms KEY LEN T<secs>` (a lifetime over 30 days is sent as an
//! absolute time, memcached's rule), `md KEY`, and for an agreement `ms`
//! with mode `E` (add) then `mg`.
//!
//! # Processes
//!
//! A link belongs to the process that made it (its pid is recorded). After
//! a `fork` the child finds a link whose pid is not its own: its mutex may
//! have been held by a thread that does not exist in the child, so the
//! child abandons it with `mem::forget` (no socket is shut down: that would
//! cut the parent's connection) and makes its own (`Farm::link_here`).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use redis::{ErrorKind, ServerErrorKind, Value};

use crate::conn::{Conn, Drained, Failure, FailureKind, Login, Protocol, Sent};
use crate::transport::{Address, Connector};

/// The least time between two slot-map refreshes of one process.
pub const REFRESH_EVERY: Duration = Duration::from_secs(1);

/// The least time between two questions to the sentinels of one process:
/// shorter than [`REFRESH_EVERY`], since during a failover a sentinel may
/// still name the old master for a moment, and every store sent there is
/// lost (a sentinel's answer is one small reply).
pub const ASK_SENTINELS_EVERY: Duration = Duration::from_millis(100);

/// The bytes a `CLUSTER SLOTS` reply may take.
const SLOTS_BUDGET: usize = 1 << 20;

/// The number of hash slots of a Redis Cluster.
const SLOTS: usize = 16384;

/// "No node known" in the slot map.
const UNKNOWN: u16 = u16::MAX;

/// Where the link sends keys.
#[derive(Clone, Debug)]
pub enum Route {
    /// One server.
    Single(Address),
    /// A Redis Cluster, found through these seeds.
    Cluster(Vec<Address>),
    /// memcached servers, keys spread over them.
    Memcache(Vec<Address>),
    /// The master the sentinels name.
    Sentinel {
        /// The sentinels.
        sentinels: Vec<Address>,
        /// The master's name.
        master: String,
    },
}

/// How an op ended.
#[derive(Debug)]
pub enum Answer<T> {
    /// Done.
    Done(T),
    /// It failed.
    Failed(Failure),
    /// Every connection of this process was busy: not sent.
    Busy,
}

/// What the caller gets: the answer, and the late replies read on the way.
#[derive(Debug)]
pub struct Outcome<T> {
    /// The op's answer.
    pub answer: Answer<T>,
    /// Earlier stores' and removes' replies read on the way.
    pub drained: Drained,
}

/// How an op on one connection ended ([`Link::run`]): the late replies
/// read on the way and the op's own result; `Err`: the connection failed.
type ConnOp<T> = Result<(Drained, Result<T, Failure>), Failure>;

/// A process's link (cheap to clone: one shared state).
#[derive(Clone)]
pub struct Link {
    pid: u32,
    shared: Arc<Shared>,
}

struct Shared {
    connector: Connector,
    login: Login,
    route: Route,
    /// Where GETs go instead (`redis-replica=`).
    replica: Option<Address>,
    idle: Mutex<Vec<Conn>>,
    open: AtomicUsize,
    max: usize,
    generation: AtomicU64,
    slots: Mutex<SlotMap>,
    master: Mutex<Master>,
}

/// The sentinel-named master, as this process knows it.
#[derive(Default)]
struct Master {
    at: Option<Address>,
    asked: Option<Instant>,
    stale: bool,
}

/// The cluster's slot map, as this process knows it.
struct SlotMap {
    nodes: Vec<Address>,
    owner: Vec<u16>,
    refreshed: Option<Instant>,
    stale: bool,
}

impl Link {
    /// A link for this process: no connection yet.
    pub fn new(
        connector: Connector,
        login: Login,
        route: Route,
        replica: Option<Address>,
        max: usize,
    ) -> Link {
        Link {
            pid: std::process::id(),
            shared: Arc::new(Shared {
                connector,
                login,
                route,
                replica,
                idle: Mutex::new(Vec::new()),
                open: AtomicUsize::new(0),
                max: max.max(1),
                generation: AtomicU64::new(0),
                slots: Mutex::new(SlotMap {
                    nodes: Vec::new(),
                    owner: Vec::new(),
                    refreshed: None,
                    stale: true,
                }),
                master: Mutex::default(),
            }),
        }
    }

    /// Opens one connection ahead of need (to the server, the sentinels'
    /// master, a cluster's slot map; a memcached list's first server), so
    /// that the process's first handshakes find it made and, over TLS, a
    /// session to resume for the next ones. Failures are ignored: the ops
    /// that follow meet them under their own deadlines.
    pub fn warm_up(&self, deadline: Instant) {
        let key = b"warm-up";
        let address = match self.route(key, deadline) {
            Ok(address) => address,
            Err(_) => return,
        };
        let address = self.shared.replica.clone().unwrap_or(address);
        if let Ok(Some((mut conn, _))) = self.take(&address, deadline) {
            // One round trip, so that TLS 1.3's tickets arrive and the
            // connection is known to work.
            let ping = match self.protocol() {
                Protocol::Resp => redis::cmd("PING").get_packed_command(),
                Protocol::Meta => b"mn\r\n".to_vec(),
            };
            match conn.call("PING", &ping, deadline, crate::conn::SLACK) {
                Ok(_) => self.put(conn),
                Err(failure) => self.discard(conn, &failure),
            }
        }
    }

    /// The process that made this link.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The protocol of this link's servers.
    fn protocol(&self) -> Protocol {
        match self.shared.route {
            Route::Memcache(_) => Protocol::Meta,
            _ => Protocol::Resp,
        }
    }

    /// `GET key`, its reply read before `deadline` and at most `budget`
    /// bytes long.
    pub fn get(&self, key: &[u8], deadline: Instant, budget: usize) -> Outcome<Option<Vec<u8>>> {
        let command = match self.protocol() {
            Protocol::Resp => redis::cmd("GET").arg(key).get_packed_command(),
            Protocol::Meta => meta::get(key),
        };
        self.run_at(key, deadline, self.shared.replica.as_ref(), |conn| {
            let (drained, value) = conn.call("GET", &command, deadline, budget)?;
            Ok((drained, found(conn, "GET", value)))
        })
    }

    /// `SET key value PX px_ms`. With `wait`, its reply is read now (a
    /// breaker's probe needs it); without, later (module `conn`).
    pub fn set(
        &self,
        key: &[u8],
        value: &[u8],
        px_ms: u64,
        deadline: Instant,
        wait: bool,
    ) -> Outcome<()> {
        let command = match self.protocol() {
            Protocol::Resp => redis::cmd("SET")
                .arg(key)
                .arg(value)
                .arg("PX")
                .arg(px_ms)
                .get_packed_command(),
            Protocol::Meta => meta::set(key, value, px_ms, false),
        };
        self.write(Sent::Set, key, &command, deadline, wait)
    }

    /// `SET key value NX GET PX px_ms`: stores `value` unless the key
    /// exists, and answers the value that was there (`None`: ours was
    /// stored). One round trip (Redis >= 7.0).
    pub fn set_nx_get(
        &self,
        key: &[u8],
        value: &[u8],
        px_ms: u64,
        deadline: Instant,
        budget: usize,
    ) -> Outcome<Option<Vec<u8>>> {
        if self.protocol() == Protocol::Meta {
            let add = meta::set(key, value, px_ms, true);
            let get = meta::get(key);
            return self.run(key, deadline, |conn| {
                add_then_get(conn, &add, &get, deadline, budget)
            });
        }
        let command = redis::cmd("SET")
            .arg(key)
            .arg(value)
            .arg("NX")
            .arg("GET")
            .arg("PX")
            .arg(px_ms)
            .get_packed_command();
        self.run(key, deadline, |conn| {
            let (drained, reply) = conn.call("SET NX GET", &command, deadline, budget)?;
            Ok((drained, found(conn, "SET NX GET", reply)))
        })
    }

    /// `DEL key`, like [`set`](Self::set).
    pub fn del(&self, key: &[u8], deadline: Instant, wait: bool) -> Outcome<()> {
        let command = match self.protocol() {
            Protocol::Resp => redis::cmd("DEL").arg(key).get_packed_command(),
            Protocol::Meta => meta::delete(key),
        };
        self.write(Sent::Del, key, &command, deadline, wait)
    }

    fn write(
        &self,
        sent: Sent,
        key: &[u8],
        command: &[u8],
        deadline: Instant,
        wait: bool,
    ) -> Outcome<()> {
        let what = match sent {
            Sent::Set => "SET",
            Sent::Del => "DEL",
        };
        self.run(key, deadline, |conn| {
            if !wait {
                return conn.send(sent, command, deadline).map(|d| (d, Ok(())));
            }
            let (drained, value) = conn.call(what, command, deadline, crate::conn::SLACK)?;
            let done = match value {
                Value::Okay | Value::Int(_) | Value::SimpleString(_) => Ok(()),
                Value::ServerError(e) => Err(refused(conn, what, e)),
                other => Err(conn.unexpected(what, &other)),
            };
            Ok((drained, done))
        })
    }

    /// Runs `op` on a connection to the node of `key`. `op` returns the late
    /// replies and the op's own result; `Err` from `op` itself means the
    /// connection failed (it is dropped).
    fn run<T>(
        &self,
        key: &[u8],
        deadline: Instant,
        op: impl FnMut(&mut Conn) -> ConnOp<T>,
    ) -> Outcome<T> {
        self.run_at(key, deadline, None, op)
    }

    /// [`run`](Self::run) at `fixed` if given (the replica), else where the
    /// key's route says.
    fn run_at<T>(
        &self,
        key: &[u8],
        deadline: Instant,
        fixed: Option<&Address>,
        mut op: impl FnMut(&mut Conn) -> ConnOp<T>,
    ) -> Outcome<T> {
        let mut drained = Drained::new();
        let failed = |failure: Failure, drained: Drained| Outcome {
            answer: Answer::Failed(self.note(failure)),
            drained,
        };
        let routed = match fixed {
            Some(address) => Ok(address.clone()),
            None => self.route(key, deadline),
        };
        let mut address = match routed {
            Ok(address) => address,
            Err(failure) => return failed(failure, drained),
        };
        let mut retried = false;
        loop {
            let (mut conn, reused) = match self.take(&address, deadline) {
                Ok(Some(taken)) => taken,
                Ok(None) => {
                    return Outcome {
                        answer: Answer::Busy,
                        drained,
                    }
                }
                Err(failure) => return failed(failure, drained),
            };
            match op(&mut conn) {
                Ok((late, result)) => {
                    self.notice_redirects(&late);
                    drained.extend(late);
                    let moved = result.as_ref().err().and_then(moved_to);
                    match &result {
                        // A reply no command of ours gets: the stream is
                        // not to be trusted any more.
                        Err(failure) if failure.kind != FailureKind::Refused => {
                            self.discard(conn, failure)
                        }
                        _ => self.put(conn),
                    }
                    match (result, moved) {
                        (Err(_), Some(to)) if !retried && Instant::now() < deadline => {
                            retried = true;
                            address = to;
                        }
                        (Ok(value), _) => {
                            return Outcome {
                                answer: Answer::Done(value),
                                drained,
                            }
                        }
                        (Err(failure), _) => return failed(failure, drained),
                    }
                }
                Err(failure) => {
                    self.discard(conn, &failure);
                    // An idle connection that fails at once (Redis restarted
                    // and reset it, or a sentinel's old master died) gets
                    // one new connection, in time left, routed afresh.
                    if reused
                        && !retried
                        && failure.kind == FailureKind::Connection
                        && Instant::now() < deadline
                    {
                        retried = true;
                        let _ = self.note(failure);
                        if fixed.is_none() {
                            if let Ok(again) = self.route(key, deadline) {
                                address = again;
                            }
                        }
                        continue;
                    }
                    return failed(failure, drained);
                }
            }
        }
    }

    /// Marks a cluster failure as one node's, and a failed node's slot map
    /// as worth refreshing.
    fn note(&self, mut failure: Failure) -> Failure {
        if matches!(self.shared.route, Route::Memcache(_)) {
            failure.node = true; // one server's keys only
        }
        if matches!(self.shared.route, Route::Sentinel { .. })
            && (failure.kind != FailureKind::Refused || failure.why.contains("READONLY"))
        {
            self.master_lock().stale = true;
        }
        if matches!(self.shared.route, Route::Cluster(_)) {
            failure.node = true;
            if let Some((slot, to)) = moved_slot(&failure) {
                self.slots().patch(slot, to);
            } else if failure.kind != FailureKind::Refused {
                self.slots().stale = true;
            }
        }
        failure
    }

    /// `MOVED` replies among late ones update the slot map.
    fn notice_redirects(&self, late: &Drained) {
        for (_, outcome) in late {
            if let Err(failure) = outcome {
                let _ = moved_to(failure).map(|_| self.note(failure.clone()));
            }
        }
    }

    /// An idle connection to `address` (made in this generation), or a
    /// new one if fewer than `max` are open; `Ok(None)` if all are busy.
    fn take(&self, address: &Address, deadline: Instant) -> Result<Option<(Conn, bool)>, Failure> {
        let generation = self.shared.generation.load(Ordering::Acquire);
        let mut stale = Vec::new();
        let found = {
            let mut idle = self
                .shared
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let mut found = None;
            while let Some(i) = idle.iter().rposition(|c| c.address() == address) {
                let conn = idle.swap_remove(i);
                if conn.generation == generation {
                    found = Some(conn);
                    break;
                }
                stale.push(conn);
            }
            found
        };
        if !stale.is_empty() {
            self.shared.open.fetch_sub(stale.len(), Ordering::AcqRel);
            drop(stale); // closed outside the lock
        }
        if let Some(conn) = found {
            return Ok(Some((conn, true)));
        }
        let max = self.max_open();
        if self.shared.open.fetch_add(1, Ordering::AcqRel) >= max {
            // An idle connection to another node makes room: a prefork
            // child's one connection follows its keys around a cluster.
            let spare = self
                .shared
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop();
            match spare {
                Some(conn) => {
                    self.shared.open.fetch_sub(1, Ordering::AcqRel);
                    drop(conn);
                }
                None => {
                    self.shared.open.fetch_sub(1, Ordering::AcqRel);
                    return Ok(None);
                }
            }
        }
        // The sentinels are asked without the master's credentials.
        let anonymous = Login::default();
        let login = match &self.shared.route {
            Route::Sentinel { sentinels, .. } if sentinels.contains(address) => &anonymous,
            _ => &self.shared.login,
        };
        match Conn::open(
            &self.shared.connector,
            address,
            login,
            self.protocol(),
            deadline,
            generation,
        ) {
            Ok(conn) => Ok(Some((conn, false))),
            Err(failure) => {
                self.shared.open.fetch_sub(1, Ordering::AcqRel);
                if failure.kind != FailureKind::Refused {
                    self.end_generation(&failure);
                }
                Err(failure)
            }
        }
    }

    /// The most connections open at once: `max` per thread-worth of
    /// callers, times the nodes of a cluster (each caller may need any).
    fn max_open(&self) -> usize {
        match &self.shared.route {
            Route::Single(_) => self.shared.max,
            // The master's, and one to ask a sentinel.
            Route::Sentinel { .. } => self.shared.max.saturating_add(1),
            Route::Memcache(servers) => self.shared.max.saturating_mul(servers.len().max(1)),
            Route::Cluster(seeds) => {
                let nodes = self.slots().nodes.len().max(seeds.len()).max(1);
                self.shared.max.saturating_mul(nodes)
            }
        }
    }

    fn put(&self, conn: Conn) {
        self.shared
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(conn);
    }

    fn discard(&self, conn: Conn, failure: &Failure) {
        self.shared.open.fetch_sub(1, Ordering::AcqRel);
        drop(conn);
        self.end_generation(failure);
    }

    /// A connection-level failure of a single server: its other idle
    /// connections are presumed dead too (a cluster's belong to other
    /// nodes, which may well be fine).
    fn end_generation(&self, failure: &Failure) {
        let single = matches!(self.shared.route, Route::Single(_) | Route::Sentinel { .. });
        if single && matches!(failure.kind, FailureKind::Connection | FailureKind::Timeout) {
            self.shared.generation.fetch_add(1, Ordering::AcqRel);
        }
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, SlotMap> {
        self.shared
            .slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn master_lock(&self) -> std::sync::MutexGuard<'_, Master> {
        self.shared
            .master
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The node for `key`.
    fn route(&self, key: &[u8], deadline: Instant) -> Result<Address, Failure> {
        let seeds = match &self.shared.route {
            Route::Single(address) => return Ok(address.clone()),
            Route::Memcache(servers) => {
                let i = usize::from(key_slot(key)) % servers.len().max(1);
                return servers.get(i).cloned().ok_or_else(|| {
                    Failure::new(FailureKind::Connection, "no memcached server".to_string())
                });
            }
            Route::Sentinel { sentinels, master } => {
                return self.master_address(sentinels, master, deadline)
            }
            Route::Cluster(seeds) => seeds,
        };
        let slot = key_slot(key);
        let due = {
            let map = self.slots();
            map.stale && map.refreshed.is_none_or(|at| at.elapsed() >= REFRESH_EVERY)
        };
        if due {
            self.refresh(seeds, deadline);
        }
        let map = self.slots();
        Ok(match map.owner.get(usize::from(slot)) {
            Some(&i) if i != UNKNOWN => map.nodes[usize::from(i)].clone(),
            _ => seeds[usize::from(slot) % seeds.len()].clone(),
        })
    }

    /// The master's address: known, or asked of the sentinels (module doc).
    fn master_address(
        &self,
        sentinels: &[Address],
        name: &str,
        deadline: Instant,
    ) -> Result<Address, Failure> {
        let (known, due) = {
            let m = self.master_lock();
            let may_ask = m.asked.is_none_or(|at| at.elapsed() >= ASK_SENTINELS_EVERY);
            (m.at.clone(), (m.at.is_none() || m.stale) && may_ask)
        };
        if !due {
            return known.ok_or_else(|| {
                Failure::new(
                    FailureKind::Connection,
                    format!("no sentinel has named master {name} yet"),
                )
            });
        }
        self.master_lock().asked = Some(Instant::now());
        let command = redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(name)
            .get_packed_command();
        let mut last = None;
        for sentinel in sentinels {
            if Instant::now() >= deadline {
                break;
            }
            let reply = match self.ask(sentinel, "SENTINEL", &command, deadline) {
                Ok(Some(value)) => value,
                Ok(None) => continue,
                Err(failure) => {
                    last = Some(failure);
                    continue;
                }
            };
            if let Some(address) = parse_master(&reply) {
                let mut m = self.master_lock();
                m.at = Some(address.clone());
                m.stale = false;
                return Ok(address);
            }
            last = Some(Failure::new(
                FailureKind::Refused,
                format!("sentinel {sentinel} does not know master {name}"),
            ));
        }
        // No sentinel answered: keep the last known master, if any.
        match known {
            Some(address) => Ok(address),
            None => Err(last.unwrap_or_else(|| {
                Failure::new(
                    FailureKind::Timeout,
                    format!("no sentinel answered for master {name} in time"),
                )
            })),
        }
    }

    /// One question to `address` (a sentinel, a cluster node), its reply at
    /// most [`SLOTS_BUDGET`] bytes: `Ok(None)` if every connection is busy.
    /// The connection is kept if it answered, dropped if it failed.
    fn ask(
        &self,
        address: &Address,
        what: &str,
        command: &[u8],
        deadline: Instant,
    ) -> Result<Option<Value>, Failure> {
        let Some((mut conn, _)) = self.take(address, deadline)? else {
            return Ok(None);
        };
        match conn.call(what, command, deadline, SLOTS_BUDGET) {
            Ok((_, value)) => {
                self.put(conn);
                Ok(Some(value))
            }
            Err(failure) => {
                self.discard(conn, &failure);
                Err(failure)
            }
        }
    }

    /// Asks a node (known ones first, then the seeds) for the slot map.
    fn refresh(&self, seeds: &[Address], deadline: Instant) {
        let mut candidates: Vec<Address> = self.slots().nodes.clone();
        for seed in seeds {
            if !candidates.contains(seed) {
                candidates.push(seed.clone());
            }
        }
        {
            let mut map = self.slots();
            map.refreshed = Some(Instant::now());
        }
        let command = redis::cmd("CLUSTER").arg("SLOTS").get_packed_command();
        for candidate in candidates {
            if Instant::now() >= deadline {
                return;
            }
            let Ok(Some(reply)) = self.ask(&candidate, "CLUSTER SLOTS", &command, deadline) else {
                continue;
            };
            if let Some(map) = parse_slots(&reply) {
                let mut current = self.slots();
                current.nodes = map.0;
                current.owner = map.1;
                current.stale = false;
                return;
            }
        }
    }

    #[cfg(test)]
    fn open_connections(&self) -> usize {
        self.shared.open.load(Ordering::Acquire)
    }
}

/// An error reply as a failure (a `MOVED` keeps where it points, in its
/// text). `NOAUTH` and `WRONGPASS` say this connection may do nothing at
/// all: as good as no connection.
fn refused(conn: &Conn, what: &str, e: redis::ServerError) -> Failure {
    let kind = match e.code() {
        "NOAUTH" | "WRONGPASS" => FailureKind::Connection,
        _ => FailureKind::Refused,
    };
    Failure::new(kind, format!("{what} {}: {e}", conn.address()))
}

/// A value reply (`GET`, `mg`, `SET NX GET`): the value, none (`Nil`), or
/// the failure an error reply or any other reply makes.
fn found(conn: &Conn, what: &str, reply: Value) -> Result<Option<Vec<u8>>, Failure> {
    match reply {
        Value::BulkString(bytes) => Ok(Some(bytes)),
        Value::Nil => Ok(None),
        Value::ServerError(e) => Err(refused(conn, what, e)),
        other => Err(conn.unexpected(what, &other)),
    }
}

/// memcached's agreement on `conn`: `add` (`ms` in add mode), then (if
/// another value was there) `get` (`mg`), within one deadline. Answers as
/// [`Link::run`]'s `op` does.
fn add_then_get(
    conn: &mut Conn,
    add: &[u8],
    get: &[u8],
    deadline: Instant,
    budget: usize,
) -> ConnOp<Option<Vec<u8>>> {
    let (mut drained, reply) = conn.call("ms (add)", add, deadline, crate::conn::SLACK)?;
    match reply {
        Value::Okay => return Ok((drained, Ok(None))),
        Value::ServerError(e) if e.code() == "NOTSTORED" => {}
        Value::ServerError(e) => return Ok((drained, Err(refused(conn, "ms (add)", e)))),
        other => return Ok((drained, Err(conn.unexpected("ms (add)", &other)))),
    }
    let (more, reply) = conn.call("mg", get, deadline, budget)?;
    drained.extend(more);
    // `Nil`: gone between the two commands; ours may be stored now.
    Ok((drained, found(conn, "mg", reply)))
}

impl SlotMap {
    /// `slot` is served by `to` (a `MOVED` said so); the rest of the map
    /// is refreshed when next due.
    fn patch(&mut self, slot: u16, to: Address) {
        if self.owner.len() != SLOTS {
            self.owner = vec![UNKNOWN; SLOTS];
        }
        if let Ok(index) = u16::try_from(node_index(&mut self.nodes, to)) {
            self.owner[usize::from(slot) % SLOTS] = index;
        }
        self.stale = true;
    }
}

/// Where a `MOVED` failure points.
fn moved_to(failure: &Failure) -> Option<Address> {
    moved_slot(failure).map(|(_, to)| to)
}

/// The slot and node of a `MOVED` failure (an IP literal only: a name
/// would need the resolver within a caller's wait).
fn moved_slot(failure: &Failure) -> Option<(u16, Address)> {
    if failure.kind != FailureKind::Refused {
        return None;
    }
    // The failure text ends with the server's error: "... MOVED 3999 ip:port".
    let at = failure.why.find("MOVED ")?;
    let reply = format!("-{}\r\n", &failure.why[at..]);
    let error = redis::parse_redis_value(reply.as_bytes())
        .ok()?
        .extract_error()
        .err()?;
    if error.kind() != ErrorKind::Server(ServerErrorKind::Moved) {
        return None;
    }
    let (addr, slot) = error.redirect_node()?;
    let (host, port) = addr.rsplit_once(':')?;
    Some((slot, Address::literal(host, port.parse().ok()?)?))
}

/// memcached meta commands, encoded by the memcache crate.
mod meta {
    use memcache::exp::{
        build_delete, build_get, build_set, DeleteOptions, GetOptions, SetMode, SetOptions,
    };

    /// memcached reads a lifetime above 30 days as an absolute Unix time.
    const RELATIVE_MAX_SECS: u64 = 30 * 24 * 3600;

    fn encode(command: Result<memcache::exp::MetaCommand, memcache::MemcacheError>) -> Vec<u8> {
        // Our keys are short printable ASCII (prefix, namespace, hex id)
        // and the options valid: encoding cannot fail. Were it to, the
        // empty command is written and its missing reply times out.
        command.and_then(|c| c.encode()).unwrap_or_default()
    }

    pub(super) fn get(key: &[u8]) -> Vec<u8> {
        let options = GetOptions {
            value: true,
            ..GetOptions::default()
        };
        encode(build_get(key.to_vec(), &options))
    }

    pub(super) fn set(key: &[u8], value: &[u8], px_ms: u64, add: bool) -> Vec<u8> {
        let secs = px_ms.div_ceil(1000).max(1);
        let ttl = if secs > RELATIVE_MAX_SECS {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            now.saturating_add(secs)
        } else {
            secs
        };
        let options = SetOptions {
            ttl: Some(u32::try_from(ttl).unwrap_or(u32::MAX)),
            mode: if add { SetMode::Add } else { SetMode::Set },
            ..SetOptions::default()
        };
        encode(build_set(key.to_vec(), value.to_vec(), &options))
    }

    pub(super) fn delete(key: &[u8]) -> Vec<u8> {
        encode(build_delete(key.to_vec(), &DeleteOptions::default()))
    }
}

/// A string reply's text (bulk or simple); `None` for any other reply.
fn text(reply: Option<&Value>) -> Option<String> {
    match reply {
        Some(Value::BulkString(b)) => Some(String::from_utf8_lossy(b).into_owned()),
        Some(Value::SimpleString(s)) => Some(s.clone()),
        _ => None,
    }
}

/// The index of `node` in `nodes`, where it is added if it is not there.
fn node_index(nodes: &mut Vec<Address>, node: Address) -> usize {
    match nodes.iter().position(|n| *n == node) {
        Some(i) => i,
        None => {
            nodes.push(node);
            nodes.len() - 1
        }
    }
}

/// The master's address in a `SENTINEL get-master-addr-by-name` reply.
fn parse_master(reply: &Value) -> Option<Address> {
    let Value::Array(parts) = reply else {
        return None;
    };
    let host = text(parts.first())?;
    let port = text(parts.get(1))?.parse().ok()?;
    Address::literal(&host, port)
}

/// The slot map in a `CLUSTER SLOTS` reply: (nodes, owner of each slot).
fn parse_slots(reply: &Value) -> Option<(Vec<Address>, Vec<u16>)> {
    let Value::Array(ranges) = reply else {
        return None;
    };
    let mut nodes: Vec<Address> = Vec::new();
    let mut owner = vec![UNKNOWN; SLOTS];
    for range in ranges {
        let Value::Array(parts) = range else {
            return None;
        };
        let (Some(Value::Int(start)), Some(Value::Int(end)), Some(Value::Array(master))) =
            (parts.first(), parts.get(1), parts.get(2))
        else {
            return None;
        };
        let host = text(master.first())?;
        let Some(Value::Int(port)) = master.get(1) else {
            return None;
        };
        let Some(address) = Address::literal(&host, u16::try_from(*port).ok()?) else {
            continue; // a name: not followed (see `moved_to`)
        };
        let index = node_index(&mut nodes, address);
        let (start, end) = (usize::try_from(*start).ok()?, usize::try_from(*end).ok()?);
        if start > end || end >= SLOTS {
            return None;
        }
        let index = u16::try_from(index).ok()?;
        owner[start..=end].iter_mut().for_each(|o| *o = index);
    }
    Some((nodes, owner))
}

/// The cluster slot of `key`: CRC16 (XMODEM) of its hash tag (the part
/// between the first `{` and the next `}`, if not empty) or of the whole
/// key, modulo 16384.
pub fn key_slot(key: &[u8]) -> u16 {
    let tagged = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            rest.iter()
                .position(|&b| b == b'}')
                .filter(|&close| close > 0)
                .map(|close| &rest[..close])
        })
        .unwrap_or(key);
    crc16::State::<crc16::XMODEM>::calculate(tagged) % SLOTS as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_slots_match_redis() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(key_slot(b"123456789"), 12739);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{}{bar}"), key_slot(b"foo{}{bar}"));
        assert_ne!(key_slot(b"foo{}{bar}"), key_slot(b"bar"));
    }

    #[test]
    fn moved_points_to_literals_only() {
        let cases = [
            (
                "GET 127.0.0.1:7000: MOVED 3999 127.0.0.1:7001",
                Address::literal("127.0.0.1", 7001),
            ),
            ("GET 127.0.0.1:7000: MOVED 3999 redis-b:7001", None),
            ("GET x: NOPERM no", None),
        ];
        for (why, to) in cases {
            let f = Failure::new(FailureKind::Refused, why.into());
            assert_eq!(moved_to(&f), to, "{why}");
        }
    }

    #[test]
    fn slot_maps_parse_and_garbage_is_refused() {
        // A `CLUSTER SLOTS` reply of one range, served by 127.0.0.1:7000.
        let one_range = |start, end| {
            Value::Array(vec![Value::Array(vec![
                Value::Int(start),
                Value::Int(end),
                Value::Array(vec![
                    Value::BulkString(b"127.0.0.1".to_vec()),
                    Value::Int(7000),
                ]),
            ])])
        };
        let (nodes, owner) = parse_slots(&one_range(0, 100)).expect("map");
        assert_eq!(nodes.len(), 1);
        assert_eq!(owner[100], 0);
        assert_eq!(owner[101], UNKNOWN);
        assert!(parse_slots(&Value::Int(3)).is_none());
        assert!(parse_slots(&one_range(5, 99999)).is_none());
    }

    #[test]
    fn a_refused_connect_leaves_no_connection_counted() {
        let link = Link::new(
            Connector::plain(),
            Login::default(),
            Route::Single(Address::literal("127.0.0.1", 1).expect("addr")),
            None,
            2,
        );
        let out = link.get(b"k", Instant::now() + Duration::from_millis(200), 1024);
        assert!(matches!(out.answer, Answer::Failed(ref f) if f.kind == FailureKind::Connection));
        assert_eq!(link.open_connections(), 0);
    }
}
