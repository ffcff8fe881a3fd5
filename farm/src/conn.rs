//! One connection to one Redis node: commands packed by redis-rs
//! ([`redis::Cmd`]), replies read by redis-rs's parser ([`redis::Parser`]),
//! over a [`Stream`] whose every byte is bounded by the operation's deadline
//! and budget (module `transport`). No protocol code of our own.
//!
//! # Replies not waited for
//!
//! A store or remove writes its command and returns: its reply is read
//! later, before the next reply this connection needs ([`Conn::call`]), at
//! the next command if it has arrived by then (a poll that does not wait),
//! or when [`MAX_PENDING`] are waiting ([`Conn::send`]). The command is in the
//! server's socket before the handshake that made the session ends (so
//! another host finds it at once), and the handshake never waits for Redis
//! to answer it. The replies read later say how those commands went
//! ([`Drained`]).

use std::collections::VecDeque;
use std::io::{self, Write};
use std::time::Instant;

use redis::{Parser, RedisError, Value};

use crate::transport::{Address, Connector, Stream};

/// Replies a connection lets wait before it reads them.
pub const MAX_PENDING: usize = 16;

/// The bytes a connection may read for one reply beyond the largest value
/// (framing, a TLS record's overhead, a pending reply or two).
pub const SLACK: usize = 16 * 1024;

/// The bytes a connect may read (the server's TLS certificate chain, the
/// AUTH and SELECT replies).
pub const CONNECT_BUDGET: usize = 256 * 1024;

/// What a failure was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// The deadline passed (connect, TLS, request or reply).
    Timeout,
    /// Refused, reset, closed, TLS refused, or the server refused the
    /// connection's set-up (AUTH, SELECT): no connection to use.
    Connection,
    /// The server answered with an error reply (NOPERM, OOM, READONLY,
    /// LOADING, ...): the connection stands.
    Refused,
    /// A reply that is not what the command gets: too large, garbage, an
    /// unexpected type.
    BadReply,
}

/// Why an op failed.
#[derive(Clone, Debug)]
pub struct Failure {
    /// What went wrong.
    pub kind: FailureKind,
    /// From one node of a Redis Cluster (the others may be fine).
    pub node: bool,
    /// For the log: what, where, why ("GET 10.0.0.5:6379: NOPERM ...").
    pub why: String,
}

impl Failure {
    pub(crate) fn new(kind: FailureKind, why: String) -> Failure {
        Failure {
            kind,
            node: false,
            why,
        }
    }

    /// Whether it says Redis as a whole is gone or hung, and so moves the
    /// breaker: a timeout, or a connection that failed (unless one cluster
    /// node's: the others' slots still answer). An error reply or a bad
    /// reply costs no wait: it is counted and logged, and never opens it.
    pub fn moves_breaker(&self) -> bool {
        match self.kind {
            FailureKind::Timeout => true,
            FailureKind::Connection => !self.node,
            FailureKind::Refused | FailureKind::BadReply => false,
        }
    }
}

/// What a command whose reply was read late was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sent {
    /// A `SET`.
    Set,
    /// A `DEL`.
    Del,
}

/// The late replies read on the way to another: each sent command and its
/// outcome.
pub type Drained = Vec<(Sent, Result<(), Failure>)>;

/// One connection.
pub struct Conn {
    address: Address,
    stream: Stream,
    parser: Parser,
    pending: VecDeque<Sent>,
    /// The link's generation when it was made (module `link`).
    pub generation: u64,
}

/// Credentials and database, sent after connecting.
#[derive(Clone, Debug, Default)]
pub struct Login {
    /// ACL user (None: `default`).
    pub user: Option<String>,
    /// Password (None: no AUTH).
    pub password: Option<String>,
    /// Database (0: no SELECT).
    pub db: i64,
}

impl Conn {
    /// Connects, then AUTH and SELECT as `login` says, all before
    /// `deadline`.
    pub fn open(
        connector: &Connector,
        address: &Address,
        login: &Login,
        deadline: Instant,
        generation: u64,
    ) -> Result<Conn, Failure> {
        let stream = connector
            .connect(address, deadline, CONNECT_BUDGET)
            .map_err(|e| {
                let kind = if e.kind() == io::ErrorKind::TimedOut || Instant::now() >= deadline {
                    FailureKind::Timeout
                } else {
                    FailureKind::Connection
                };
                Failure::new(kind, format!("connect {address}: {e}"))
            })?;
        let mut conn = Conn {
            address: address.clone(),
            stream,
            parser: Parser::new(),
            pending: VecDeque::new(),
            generation,
        };
        let mut setup = Vec::new();
        if let Some(password) = &login.password {
            let mut auth = redis::cmd("AUTH");
            if let Some(user) = &login.user {
                auth.arg(user);
            }
            setup.push(("AUTH", auth.arg(password).get_packed_command()));
        }
        if login.db != 0 {
            setup.push((
                "SELECT",
                redis::cmd("SELECT").arg(login.db).get_packed_command(),
            ));
        }
        if setup.is_empty() {
            return Ok(conn);
        }
        let bytes: Vec<u8> = setup.iter().flat_map(|(_, c)| c.iter().copied()).collect();
        conn.write(&bytes, deadline, "connect")?;
        for (what, _) in &setup {
            match conn.read(deadline, CONNECT_BUDGET, what)? {
                Value::Okay | Value::SimpleString(_) => {}
                Value::ServerError(e) => {
                    // The server will not let this connection be used:
                    // as good as no connection (and the breaker moves).
                    return Err(Failure::new(
                        FailureKind::Connection,
                        format!("{what} {address}: {e}"),
                    ));
                }
                other => return Err(conn.unexpected(what, &other)),
            }
        }
        Ok(conn)
    }

    /// Where this connection goes.
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// Writes `command` now and reads its reply later (module doc). When
    /// [`MAX_PENDING`] replies wait, they are read first, before `deadline`.
    pub fn send(
        &mut self,
        sent: Sent,
        command: &[u8],
        deadline: Instant,
    ) -> Result<Drained, Failure> {
        let arrived = !self.pending.is_empty() && self.stream.readable_now();
        let drained = if self.pending.len() >= MAX_PENDING || arrived {
            self.drain(deadline, MAX_PENDING * 64 + SLACK)?
        } else {
            Vec::new()
        };
        self.write(command, deadline, sent.name())?;
        self.pending.push_back(sent);
        Ok(drained)
    }

    /// Sends `command` and reads its reply, before `deadline`, reading at
    /// most `budget` bytes for it; first reads the replies still pending.
    pub fn call(
        &mut self,
        what: &str,
        command: &[u8],
        deadline: Instant,
        budget: usize,
    ) -> Result<(Drained, Value), Failure> {
        self.write(command, deadline, what)?;
        let drained = self.drain(deadline, self.pending.len() * 64 + SLACK)?;
        let value = self.read(deadline, budget, what)?;
        Ok((drained, value))
    }

    /// Reads every pending reply.
    fn drain(&mut self, deadline: Instant, budget: usize) -> Result<Drained, Failure> {
        let mut drained = Vec::with_capacity(self.pending.len());
        while let Some(sent) = self.pending.pop_front() {
            let outcome = match self.read(deadline, budget, sent.name())? {
                Value::ServerError(e) => Err(Failure::new(
                    FailureKind::Refused,
                    format!("{} {}: {e}", sent.name(), self.address),
                )),
                Value::Okay | Value::Int(_) | Value::SimpleString(_) => Ok(()),
                other => return Err(self.unexpected(sent.name(), &other)),
            };
            drained.push((sent, outcome));
        }
        Ok(drained)
    }

    /// A reply that no command of ours gets: the connection is not to be
    /// trusted any more (the caller drops it).
    pub fn unexpected(&self, what: &str, value: &Value) -> Failure {
        let shown = match value {
            Value::BulkString(b) => format!("a {}-byte string", b.len()),
            Value::Array(a) => format!("an array of {}", a.len()),
            other => format!("{:.60}", format!("{other:?}")),
        };
        Failure::new(
            FailureKind::BadReply,
            format!("{what} {}: unexpected reply ({shown})", self.address),
        )
    }

    fn write(&mut self, bytes: &[u8], deadline: Instant, what: &str) -> Result<(), Failure> {
        self.stream.arm(deadline, SLACK);
        self.stream
            .write_all(bytes)
            .and_then(|()| self.stream.flush())
            .map_err(|e| self.io_failure(what, &e.to_string()))
    }

    fn read(&mut self, deadline: Instant, budget: usize, what: &str) -> Result<Value, Failure> {
        self.stream.arm(deadline, budget);
        let value = self
            .parser
            .parse_value(&mut self.stream)
            .map_err(|e| self.parse_failure(what, &e))?;
        self.stream.keep_session();
        Ok(value)
    }

    fn parse_failure(&self, what: &str, e: &RedisError) -> Failure {
        if self.stream.budget_spent() {
            return Failure::new(
                FailureKind::BadReply,
                format!(
                    "{what} {}: {}",
                    self.address,
                    crate::transport::ReplyTooLarge
                ),
            );
        }
        if e.is_io_error() {
            return self.io_failure(what, &e.to_string());
        }
        Failure::new(
            FailureKind::BadReply,
            format!("{what} {}: unreadable reply: {e}", self.address),
        )
    }

    fn io_failure(&self, what: &str, e: &str) -> Failure {
        if self.stream.past_deadline() {
            Failure::new(
                FailureKind::Timeout,
                format!("{what} {}: no answer in time", self.address),
            )
        } else {
            Failure::new(
                FailureKind::Connection,
                format!("{what} {}: {e}", self.address),
            )
        }
    }
}

impl Sent {
    fn name(self) -> &'static str {
        match self {
            Sent::Set => "SET",
            Sent::Del => "DEL",
        }
    }
}
