//! Redis: the real Debian `redis-server` on a loopback port in a directory
//! of its own ([`RedisServer`]); a Redis Cluster of such servers
//! ([`RedisCluster`], cluster.rs).
//!
//! Commands go through redis-rs: [`RedisServer::command`] packs one with
//! `redis::Cmd` and reads the reply with `redis::Parser` (an error reply
//! stays a value, [`Resp::Error`]); [`RedisServer::connection`] is a
//! redis-rs `Connection` for the farm's tests; [`redis_cli`] runs
//! `redis-cli` for what only it does (`--cluster create`).

use std::collections::HashMap;
use std::fs;
use std::io::{BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use crate::server::{Kind, Server};
use crate::tls::tls_files;
use crate::{free_port, run_captured, ServerDir, WAIT};

pub use crate::cluster::RedisCluster;

/// Bound of one command's reply (the server is running: it answers at once).
const REPLY_WAIT: Duration = Duration::from_secs(5);

/// The CA file of [`RedisServer::start_tls`] in the server's directory.
const CA_FILE: &str = "ca.pem";

/// `redis-server` (`REDIS_SERVER` overrides).
pub(crate) fn redis_server_bin() -> PathBuf {
    tool("REDIS_SERVER", "/usr/bin/redis-server")
}

/// `redis-cli` (`REDIS_CLI` overrides).
fn redis_cli_bin() -> PathBuf {
    tool("REDIS_CLI", "/usr/bin/redis-cli")
}

fn tool(var: &str, default: &str) -> PathBuf {
    let bin = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default));
    assert!(
        bin.is_file(),
        "{} not found: install redis-server (apt-get install redis-server) or set {var}",
        bin.display()
    );
    bin
}

/// A reply of the Redis protocol, as the tests compare it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resp {
    Simple(String),
    /// An error reply (`NOPERM ...`): code and detail.
    Error(String),
    Int(i64),
    /// `None`: the null bulk string (a missing key).
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Resp>>),
}

impl Resp {
    /// A bulk or simple string as text (lossy).
    pub fn text(&self) -> String {
        match self {
            Resp::Simple(s) | Resp::Error(s) => s.clone(),
            Resp::Bulk(Some(b)) => String::from_utf8_lossy(b).into_owned(),
            Resp::Int(n) => n.to_string(),
            other => format!("{other:?}"),
        }
    }

    fn from_value(value: redis::Value) -> Resp {
        use redis::Value;
        match value {
            Value::Nil => Resp::Bulk(None),
            Value::Int(n) => Resp::Int(n),
            Value::BulkString(b) => Resp::Bulk(Some(b)),
            Value::Array(items) | Value::Set(items) => {
                Resp::Array(Some(items.into_iter().map(Resp::from_value).collect()))
            }
            Value::SimpleString(s) => Resp::Simple(s),
            Value::Okay => Resp::Simple("OK".into()),
            Value::ServerError(e) => Resp::Error(match e.details() {
                Some(detail) => format!("{} {detail}", e.code()),
                None => e.code().to_string(),
            }),
            other => Resp::Error(format!("a RESP3 reply the kit does not expect: {other:?}")),
        }
    }
}

/// Debian's `redis-server`, no persistence: the [`Kind`] of a
/// [`RedisServer`].
pub struct Redis {
    /// Arguments after the common ones (TLS, cluster mode, a replica's).
    args: Vec<String>,
}

/// A `redis-server` we started, on `127.0.0.1:port`.
pub type RedisServer = Server<Redis>;

impl Kind for Redis {
    const NAME: &'static str = "redis";

    fn command(&self, port: u16, dir: &ServerDir) -> Command {
        let mut command = Command::new(redis_server_bin());
        command
            .arg("--port")
            .arg(port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no", "--dir"])
            .arg(dir.path())
            .args(&self.args);
        command
    }

    fn ready(port: u16) -> bool {
        resp_command(port, &[b"PING"]) == Ok(Resp::Simple("PONG".into()))
    }
}

impl Server<Redis> {
    /// A standalone server on a free loopback port.
    pub fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    /// [`RedisServer::start`] with more `redis-server` arguments.
    pub fn start_with(args: &[&str]) -> RedisServer {
        let args = args.iter().map(|a| a.to_string()).collect();
        Server::launch(Redis { args }, RedisServer::new_dir(), None)
    }

    /// A server that also speaks TLS on [`Server::tls_port`] (clients need
    /// no certificate), with a certificate for 127.0.0.1 and localhost
    /// issued by the kit's CA ([`RedisServer::ca_file`]). The plain port
    /// stays open for the kit's commands.
    pub fn start_tls() -> RedisServer {
        let dir = RedisServer::new_dir();
        let files = tls_files();
        for (name, pem) in [
            (CA_FILE, &files.ca),
            ("redis.crt", &files.cert),
            ("redis.key", &files.key),
        ] {
            fs::write(dir.join(name), pem).unwrap_or_else(|e| panic!("write {name}: {e}"));
        }
        // The CA is read by httpd's children (the server's User).
        fs::set_permissions(dir.join(CA_FILE), fs::Permissions::from_mode(0o644))
            .expect("chmod CA file");
        let tls_port = free_port();
        let path = |name: &str| dir.join(name).display().to_string();
        let args = vec![
            "--tls-port".to_string(),
            tls_port.to_string(),
            "--tls-cert-file".into(),
            path("redis.crt"),
            "--tls-key-file".into(),
            path("redis.key"),
            "--tls-ca-cert-file".into(),
            path(CA_FILE),
            "--tls-auth-clients".into(),
            "no".into(),
        ];
        Server::launch(Redis { args }, dir, Some(tls_port))
    }

    /// `redis://127.0.0.1:<port>/0`.
    pub fn url(&self) -> String {
        format!("redis://{}/0", self.addr())
    }

    /// `rediss://127.0.0.1:<tls port>/0` ([`RedisServer::start_tls`]).
    pub fn tls_url(&self) -> String {
        let port = self.tls_port.expect("a server started with start_tls");
        format!("rediss://127.0.0.1:{port}/0")
    }

    /// The CA that issued the TLS certificate (for `redis-ca=`).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join(CA_FILE)
    }

    /// One command on a new connection; panics on an I/O error.
    pub fn command(&self, args: &[&[u8]]) -> Resp {
        self.try_command(args).unwrap_or_else(|e| {
            panic!(
                "redis {:?} on port {}: {e}\n{}",
                args.first().map(|a| String::from_utf8_lossy(a)),
                self.port,
                self.log_tail()
            )
        })
    }

    /// One command on a new connection, every socket operation bounded.
    pub fn try_command(&self, args: &[&[u8]]) -> Result<Resp, String> {
        resp_command(self.port, args)
    }

    /// A redis-rs connection to the plain port (reads bounded by 5 s).
    pub fn connection(&self) -> redis::Connection {
        let client = redis::Client::open(self.url()).expect("client");
        let connection = client
            .get_connection_with_timeout(REPLY_WAIT)
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.addr()));
        connection
            .set_read_timeout(Some(REPLY_WAIT))
            .expect("timeout");
        connection
    }

    /// `redis-cli -h 127.0.0.1 -p <port> <args>`: its stdout; panics unless
    /// it exits 0 within [`WAIT`].
    pub fn cli(&self, args: &[&str]) -> String {
        let port = self.port.to_string();
        let mut all = vec!["-h", "127.0.0.1", "-p", &port];
        all.extend_from_slice(args);
        redis_cli(&all)
    }

    /// Calls per command since start, from `INFO commandstats`
    /// (`cmdstat_get:calls=3,...` gives `"get" → 3`).
    pub fn commandstats(&self) -> HashMap<String, u64> {
        let info = self.command(&[b"INFO", b"commandstats"]).text();
        parse_commandstats(&info)
    }

    /// Every key (`KEYS *`).
    pub fn keys(&self) -> Vec<String> {
        match self.command(&[b"KEYS", b"*"]) {
            Resp::Array(Some(items)) => items.iter().map(Resp::text).collect(),
            other => panic!("KEYS *: {other:?}"),
        }
    }

    /// `GET key`: the value, `None` if missing.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        match self.command(&[b"GET", key.as_bytes()]) {
            Resp::Bulk(v) => v,
            other => panic!("GET {key}: {other:?}"),
        }
    }

    /// `SET key value` (no expiry).
    pub fn set(&self, key: &str, value: &[u8]) {
        let r = self.command(&[b"SET", key.as_bytes(), value]);
        assert_eq!(r, Resp::Simple("OK".into()), "SET {key}");
    }

    /// Wait (up to `limit`) until every one of `ids` (session ids in hex)
    /// has a key: the farm's keys are `<prefix><namespace>:<id hex>`, the
    /// hex digits in either case. The keys found, in the order of `ids`
    /// (`None`: still missing at the deadline).
    pub fn wait_for_sessions(
        &self,
        prefix: &str,
        ids: &[String],
        limit: Duration,
    ) -> Vec<Option<String>> {
        wait_for_sessions(|| self.keys(), prefix, ids, limit)
    }
}

/// Polls `keys` until each of `ids` has one (see
/// [`RedisServer::wait_for_sessions`]) or `limit` passes.
pub(crate) fn wait_for_sessions(
    keys: impl Fn() -> Vec<String>,
    prefix: &str,
    ids: &[String],
    limit: Duration,
) -> Vec<Option<String>> {
    let is_key_of = |key: &str, id: &str| {
        key.starts_with(prefix)
            && key.len() >= id.len()
            && key[key.len() - id.len()..].eq_ignore_ascii_case(id)
    };
    let deadline = Instant::now() + limit;
    loop {
        let all = keys();
        let found: Vec<Option<String>> = ids
            .iter()
            .map(|id| all.iter().find(|k| is_key_of(k, id)).cloned())
            .collect();
        if found.iter().all(Option::is_some) || Instant::now() > deadline {
            return found;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// `redis-cli <args>`: its stdout; panics unless it exits 0 within [`WAIT`].
pub fn redis_cli(args: &[&str]) -> String {
    let run = run_captured(Command::new(redis_cli_bin()).args(args), WAIT);
    let (out, err) = (run.stdout, run.stderr);
    match run.status {
        Some(s) if s.success() => out,
        Some(s) => panic!("redis-cli {args:?} failed ({s}):\n{out}\n{err}"),
        None => panic!("redis-cli {args:?} did not finish within {WAIT:?}:\n{out}\n{err}"),
    }
}

/// `INFO commandstats` text → calls per command (lower-case name).
pub fn parse_commandstats(info: &str) -> HashMap<String, u64> {
    info.lines()
        .filter_map(|l| l.trim().strip_prefix("cmdstat_"))
        .filter_map(|l| {
            let (name, fields) = l.split_once(':')?;
            let calls = fields
                .split(',')
                .find_map(|f| f.strip_prefix("calls="))?
                .parse()
                .ok()?;
            Some((name.to_string(), calls))
        })
        .collect()
}

/// One command to 127.0.0.1:`port` on a new connection, packed by
/// redis-rs, its reply read by redis-rs's parser; connect, write and every
/// read bounded by 5 s.
pub fn resp_command(port: u16, args: &[&[u8]]) -> Result<Resp, String> {
    let (name, rest) = args.split_first().ok_or("no command")?;
    let mut cmd = redis::cmd(&String::from_utf8_lossy(name));
    for a in rest {
        cmd.arg(*a);
    }
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut tcp = TcpStream::connect_timeout(&addr, REPLY_WAIT)
        .map_err(|e| format!("connect {addr}: {e}"))?;
    tcp.set_read_timeout(Some(REPLY_WAIT))
        .and_then(|()| tcp.set_write_timeout(Some(REPLY_WAIT)))
        .map_err(|e| e.to_string())?;
    tcp.write_all(&cmd.get_packed_command())
        .map_err(|e| format!("write: {e}"))?;
    redis::Parser::new()
        .parse_value(BufReader::new(tcp))
        .map(Resp::from_value)
        .map_err(|e| format!("read: {e}"))
}
