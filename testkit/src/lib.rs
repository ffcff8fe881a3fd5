//! One test kit for every crate's tests: the real servers the farm tier
//! talks to, started on loopback by the test that needs them and gone when
//! it ends. The module's httpd tests (`tests/`), the farm's own tests
//! (`farm/tests/`) use it; it is a dev-dependency only.
//!
//! - [`RedisServer`] (plain, or TLS as well: [`RedisServer::start_tls`]),
//!   [`Memcached`]: one life cycle, [`Server`], over two [`Kind`]s;
//!   [`RedisCluster`] of such servers, [`Sentinel`]s watching one. Each is
//!   Debian's `redis-server` or `memcached` as a [`ServerProcess`] in its
//!   own process group, killed by the kernel if the test thread that
//!   started it dies. Faults are real signals: `stop` (SIGSTOP: hung, the
//!   kernel still completes connects into the backlog), `kill` (SIGKILL:
//!   down, connects refused), and `restart` on the same ports.
//! - [`free_port`], [`poll`], [`wait_child`], [`tail`], [`ServerDir`]: the
//!   pieces every fixture needs.
//!
//! Every wait is bounded, generously ([`WAIT`]): a slow machine makes a
//! test slower, never wrong.

use std::fs;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

mod cluster;
mod memcached;
mod process;
mod redis;
mod sentinel;
mod server;
mod tls;

pub use memcached::{Memcache, Memcached};
pub use process::{run_captured, wait_child, Captured, ServerProcess};
pub use redis::{
    parse_commandstats, redis_cli, resp_command, Redis, RedisCluster, RedisServer, Resp,
};
pub use sentinel::{Sentinel, Watch};
pub use server::{Kind, Server};

/// Upper bound of every wait of the kit: a server coming up, a command's
/// reply, `redis-cli` finishing.
pub const WAIT: Duration = Duration::from_secs(20);

/// Poll interval of the kit's bounded waits.
const POLL: Duration = Duration::from_millis(20);

/// A loopback port nothing listens on now, below Linux's ephemeral range
/// (32768..) so that the kernel never hands it to a client socket
/// meanwhile; distinct per call in this process and spread by pid across
/// the test processes that run at once.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = 20_000 + (std::process::id() % 500) * 20;
    for _ in 0..2000 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (base + n % 12_000) as u16;
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port found in 20000..32000");
}

/// Calls `f` every 10 ms until it returns `Some`, for at most `limit`.
pub fn poll<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let v: Vec<&str> = text.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

/// A new, empty directory `socache-<what>-<pid>-<n>` under the system
/// temp dir (a stale one of that name is removed first), mode 0755. The
/// caller decides when it goes ([`ServerDir`] does on drop).
pub fn fresh_dir(what: &str) -> PathBuf {
    static SEQ: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "socache-{what}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    if dir.exists() {
        fs::remove_dir_all(&dir).expect("remove a stale directory");
    }
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod 0755");
    dir
}

/// A server's working directory under the system temp dir, mode 0755 (the
/// CA file in it is read by httpd's children, another user; nobody else
/// may write in it). Removed on drop, unless a test panicked or
/// `HTTPD_TEST_KEEP` is set: then its path is printed and it stays.
pub struct ServerDir(PathBuf);

impl ServerDir {
    /// A new, empty directory named after `what` ([`fresh_dir`]).
    pub fn new(what: &str) -> ServerDir {
        ServerDir(fresh_dir(what))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// `name` in the directory.
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for ServerDir {
    fn drop(&mut self) {
        if thread::panicking() || std::env::var_os("HTTPD_TEST_KEEP").is_some() {
            eprintln!("server directory kept: {}", self.0.display());
        } else {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}
