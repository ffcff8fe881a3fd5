//! Harness for the httpd integration tests: the real Debian `/usr/sbin/apache2`
//! on loopback, in a temporary directory, with a generated certificate, and
//! a TLS client (the openssl crate) that reports whether each handshake
//! resumed and which httpd process served it.
//!
//! - [`Options`] says what to run: socache provider ([`Provider`]: our `shm`
//!   or the stock `shmcb`), MPM ([`Mpm`]), `SSLSessionCache` argument,
//!   `SSLProtocol`, `SSLSessionCacheTimeout`, extra configuration lines.
//! - [`Prepared`] is an instance directory with its `httpd.conf`, not yet
//!   running: [`Prepared::config_test`] runs `apache2 -t` on it,
//!   [`Prepared::start`] starts it.
//! - [`Options::start_as`] starts httpd (and runs `-t`, `-k graceful`) as
//!   another user, an unprivileged server: the instance directory is made
//!   that user's and no `User` line is written (tests/httpd_unprivileged.rs).
//! - [`Httpd`] is a running server (`apache2 -DFOREGROUND` as our child, in its
//!   own process group, killed if the test thread dies). Dropping it stops
//!   the server and waits for every process of it to exit.
//! - [`Client`] makes TLS connections; [`Httpd::connect`] makes one request
//!   tagged with a unique query string and finds its access-log line, which
//!   records `%P %{SSL_SESSION_RESUMED}x %{SSL_PROTOCOL}x %{SSL_SESSION_ID}x %r`.
//!
//! - [`RedisServer`], [`RedisCluster`], [`Sentinel`], [`Memcached`]: the
//!   workspace's test kit (`testkit/`, shared with the farm's own tests):
//!   real servers on loopback for the farm tier, with SIGSTOP/SIGKILL
//!   faults, `INFO commandstats`, and TLS ([`RedisServer::start_tls`]);
//!   [`FarmArg`] and the module's farm names (farm.rs).
//! - [`Rogue`] (rogue.rs): small misbehaving servers for the farm's fault
//!   tests (silent, dripping, huge replies, garbage), counting connections
//!   and bytes.
//!
//! Every wait is bounded by [`WAIT`]; a failure panics with the tails of
//! httpd's error log and stderr. Each instance has its own port and
//! directory, so tests may run in parallel threads.
//!
//! Environment:
//! - `SOCACHE_TEST_PROVIDER=shmcb` runs the provider-parametrised tests
//!   against stock mod_socache_shmcb instead of our `shm` (comparison runs).
//! - `SOCACHE_SHM_MODULE=/path/mod_socache_shm.so` uses that module instead of
//!   building `build/mod_socache_shm.so` with `make module`.
//! - `APACHE2_BIN`, `APACHE2_MODULES`: the httpd binary and its modules
//!   directory (default `/usr/sbin/apache2`, `/usr/lib/apache2/modules`).
//! - `HTTPD_TEST_KEEP=1` keeps the instance directories (they are also kept
//!   when a test panics, and their path is printed).

#![allow(dead_code)] // Each test crate uses a different part of the harness.

use std::collections::HashMap;
use std::ffi::CString;
use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::ssl::{
    Ssl, SslContext, SslContextBuilder, SslMethod, SslOptions, SslSession, SslStream,
    SslVerifyMode, SslVersion,
};
use openssl::x509::extension::{BasicConstraints, SubjectAlternativeName};
use openssl::x509::{X509Builder, X509NameBuilder};

/// Upper bound of every wait: startup, shutdown, a log line, a response.
pub(crate) const WAIT: Duration = Duration::from_secs(20);

/// Poll interval of the bounded waits.
const POLL: Duration = Duration::from_millis(20);

/// The access log's format: served-by pid, `Initial`/`Resumed`, protocol,
/// session id, request line.
pub(crate) const LOG_FORMAT: &str =
    "%P %{SSL_SESSION_RESUMED}x %{SSL_PROTOCOL}x %{SSL_SESSION_ID}x %r";

mod client;
mod farm;
mod instance;
mod options;
mod paths;
pub(crate) mod rogue;
mod server;

pub(crate) use client::*;
// Only tests/httpd_farm.rs uses the farm tier's part of the harness.
#[allow(unused_imports)]
pub(crate) use farm::*;
pub(crate) use instance::*;
pub(crate) use options::*;
pub(crate) use paths::*;
#[allow(unused_imports)]
pub(crate) use rogue::*;
pub(crate) use server::*;
pub(crate) use testkit::{free_port, tail, wait_child};
#[allow(unused_imports)]
pub(crate) use testkit::{
    parse_commandstats, resp_command, Memcached, RedisCluster, RedisServer, Resp, Sentinel,
};
