//! One connection to one Redis node: commands packed by redis-rs
//! ([`redis::Cmd`]), replies read by redis-rs's parser ([`redis::Parser`]);
//! or, for memcached, meta commands encoded and reply headers parsed by
//! the `memcache` crate's wire layer ([`Protocol::Meta`]), whose replies
//! are given to the caller as the RESP values they mean (`HD` as OK, `VA`
//! as a bulk string, `EN`/`NF` as nil, `NS`/`EX`/errors as error replies),
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
use std::io::{self, Read, Write};
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

/// The protocol a connection speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// Redis (RESP2).
    Resp,
    /// memcached's meta protocol.
    Meta,
}

/// The longest meta reply header line read.
const META_LINE: usize = 1024;

/// One connection.
pub struct Conn {
    address: Address,
    stream: Stream,
    protocol: Protocol,
    parser: Parser,
    /// Bytes read past the last meta reply (meta only).
    meta_buf: Vec<u8>,
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
        protocol: Protocol,
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
            protocol,
            parser: Parser::new(),
            meta_buf: Vec::new(),
            pending: VecDeque::new(),
            generation,
        };
        let mut setup = Vec::new();
        if protocol == Protocol::Meta {
            return Ok(conn); // no AUTH, no SELECT (memcached has neither)
        }
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
        if self.protocol == Protocol::Meta {
            return self.read_meta(deadline, budget, what);
        }
        self.stream.arm(deadline, budget);
        let value = self
            .parser
            .parse_value(&mut self.stream)
            .map_err(|e| self.parse_failure(what, &e))?;
        self.stream.keep_session();
        Ok(value)
    }

    /// One meta reply: the header line (at most [`META_LINE`] bytes),
    /// parsed by the memcache crate, then the data block it announces, if
    /// no larger than `budget` (else refused unread), as a RESP value.
    fn read_meta(
        &mut self,
        deadline: Instant,
        budget: usize,
        what: &str,
    ) -> Result<Value, Failure> {
        use memcache::exp::{MetaResponse, ReturnCode};
        self.stream.arm(deadline, budget.saturating_add(META_LINE));
        let line = self.meta_take_through_crlf(META_LINE, what)?;
        let header = &line[..line.len() - 2];
        let response = match MetaResponse::parse_header(header) {
            Ok(r) => r,
            Err(e) => {
                let text = format!("{e}");
                // memcached's own refusals (SERVER_ERROR out of memory,
                // CLIENT_ERROR ...) are error replies; anything else is a
                // reply no command of ours gets.
                if header.starts_with(b"SERVER_ERROR") || header.starts_with(b"CLIENT_ERROR") {
                    return Ok(error_value(&text));
                }
                return Err(Failure::new(
                    FailureKind::BadReply,
                    format!("{what} {}: unreadable reply: {text}", self.address),
                ));
            }
        };
        Ok(match response.rc {
            ReturnCode::Hd | ReturnCode::Mn => Value::Okay,
            ReturnCode::En | ReturnCode::Nf => Value::Nil,
            ReturnCode::Ns => error_value("NOTSTORED not stored"),
            ReturnCode::Ex => error_value("EXISTS item exists"),
            ReturnCode::Va => {
                let len = response.datalen.unwrap_or(0);
                if len > budget {
                    return Err(Failure::new(
                        FailureKind::BadReply,
                        format!(
                            "{what} {}: {} ({len} bytes announced)",
                            self.address,
                            crate::transport::ReplyTooLarge
                        ),
                    ));
                }
                let mut block = self.meta_take_exact(len + 2, what)?;
                if !block.ends_with(b"\r\n") {
                    return Err(Failure::new(
                        FailureKind::BadReply,
                        format!("{what} {}: a value block without its end", self.address),
                    ));
                }
                block.truncate(len);
                Value::BulkString(block)
            }
            ReturnCode::Me => {
                return Err(Failure::new(
                    FailureKind::BadReply,
                    format!("{what} {}: unexpected debug reply", self.address),
                ))
            }
        })
    }

    /// Bytes through the next CRLF, at most `limit` of them.
    fn meta_take_through_crlf(&mut self, limit: usize, what: &str) -> Result<Vec<u8>, Failure> {
        loop {
            if let Some(at) = self.meta_buf.windows(2).position(|w| w == b"\r\n") {
                let rest = self.meta_buf.split_off(at + 2);
                return Ok(std::mem::replace(&mut self.meta_buf, rest));
            }
            if self.meta_buf.len() > limit {
                return Err(Failure::new(
                    FailureKind::BadReply,
                    format!(
                        "{what} {}: a reply line longer than {limit} bytes",
                        self.address
                    ),
                ));
            }
            self.meta_fill(what)?;
        }
    }

    /// Exactly `n` bytes.
    fn meta_take_exact(&mut self, n: usize, what: &str) -> Result<Vec<u8>, Failure> {
        while self.meta_buf.len() < n {
            self.meta_fill(what)?;
        }
        let rest = self.meta_buf.split_off(n);
        Ok(std::mem::replace(&mut self.meta_buf, rest))
    }

    /// One read into the meta buffer (bounded by the armed deadline and
    /// budget).
    fn meta_fill(&mut self, what: &str) -> Result<(), Failure> {
        let mut chunk = [0u8; 16 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) => Err(Failure::new(
                FailureKind::Connection,
                format!("{what} {}: the server closed the connection", self.address),
            )),
            Ok(n) => {
                self.meta_buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            Err(e) if self.stream.budget_spent() => Err(Failure::new(
                FailureKind::BadReply,
                format!("{what} {}: {e}", self.address),
            )),
            Err(e) => Err(self.io_failure(what, &e.to_string())),
        }
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

/// An error reply, as redis-rs would have parsed it from `-{text}`.
fn error_value(text: &str) -> Value {
    let clean: String = text.chars().filter(|c| !c.is_control()).collect();
    redis::parse_redis_value(format!("-{clean}\r\n").as_bytes())
        .unwrap_or_else(|_| Value::SimpleString(clean))
}

impl Sent {
    fn name(self) -> &'static str {
        match self {
            Sent::Set => "SET",
            Sent::Del => "DEL",
        }
    }
}
