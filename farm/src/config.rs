//! Making a [`Farm`]: what the provider configures ([`FarmConfig`]), what
//! is checked at configuration time ([`check`]), what is built once, in
//! httpd's parent at init ([`Farm::new`]: the TLS context with its CA
//! store, the resolved addresses; no socket, no thread), and why it can
//! fail ([`FarmError`]).

use std::fmt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use redis::ConnectionAddr;

use crate::conn::{self, Login};
use crate::endpoint::{Endpoint, TlsFiles, Topology};
use crate::link::Route;
use crate::seal::{self, Sealer};
use crate::transport::{Address, Connector};
use crate::{Events, Farm};

/// Everything the farm needs, from the provider's configuration.
pub struct FarmConfig {
    /// Where Redis is ([`Endpoint::parse`] or [`Endpoint::parse_cluster`]).
    pub endpoint: Endpoint,
    /// CA file, client certificate, client key (`rediss://` only).
    pub tls: TlsFiles,
    /// The most a caller ever waits, connect and TLS included (at least
    /// 1 ms).
    pub timeout: Duration,
    /// Keys, or the explicit opt-out.
    pub sealer: Sealer,
    /// Prefix of every Redis key, e.g. "socache-shm:".
    pub prefix: String,
    /// The cache instance's consumer name, e.g. "mod_ssl-session".
    pub namespace: String,
    /// The most connections one process keeps (one per thread that may be
    /// in an op at once: 1 for prefork, ThreadsPerChild otherwise).
    pub connections: usize,
    /// The largest value the local cache accepts: a reply larger than that
    /// (sealed) is refused without being read whole.
    pub max_value: usize,
    /// The process that must never open a socket or start a thread (httpd's
    /// parent): every op there is skipped.
    pub home_pid: Option<libc::pid_t>,
}

impl Farm {
    /// Builds the TLS context (CA store and client certificate read once,
    /// here) and resolves the addresses: no socket, no thread.
    pub fn new(config: FarmConfig, events: Box<dyn Events>) -> Result<Farm, FarmError> {
        let FarmConfig {
            endpoint,
            tls,
            timeout,
            sealer,
            prefix,
            namespace,
            connections,
            max_value,
            home_pid,
        } = config;
        if connections == 0 {
            return Err(FarmError::NoConnections);
        }
        if timeout < Duration::from_millis(1) {
            return Err(FarmError::TimeoutTooShort(timeout));
        }
        let connector = connector(&endpoint, &tls)?;
        let mut addresses = Vec::with_capacity(endpoint.nodes().len());
        for info in endpoint.nodes() {
            addresses.push(address_of(info).map_err(|why| FarmError::Client {
                endpoint: endpoint.to_string(),
                why,
            })?);
        }
        let login = endpoint
            .nodes()
            .first()
            .map(|info| {
                let r = info.redis_settings();
                Login {
                    user: r.username().map(str::to_string),
                    password: r.password().map(str::to_string),
                    db: r.db(),
                }
            })
            .unwrap_or_default();
        let route = match endpoint.topology() {
            Topology::Single => Route::Single(addresses.swap_remove(0)),
            Topology::Cluster => Route::Cluster(addresses),
        };
        // A GET's reply: the sealed value in its bulk-string frame.
        let reply_budget = max_value
            .saturating_add(seal::SEALED_OVERHEAD)
            .saturating_add(conn::SLACK);
        Ok(Farm {
            connector,
            login,
            route,
            sealer,
            prefix,
            namespace,
            timeout,
            connections,
            reply_budget,
            home_pid,
            events,
            endpoint,
            link: Mutex::new(None),
        })
    }
}

/// What [`Farm::new`] would refuse about the TLS files, checked alone (at
/// configuration time, as root): unreadable files, a certificate without
/// its key, files for a `redis://` endpoint, files for a cluster.
pub fn check(endpoint: &Endpoint, tls: &TlsFiles) -> Result<(), FarmError> {
    if !tls.is_empty() && endpoint.topology() == Topology::Cluster {
        return Err(FarmError::ClusterTlsFiles {
            endpoint: endpoint.to_string(),
        });
    }
    connector(endpoint, tls).map(|_| ())
}

/// The connector for `endpoint`: TLS (the files read now) for `rediss://`.
fn connector(endpoint: &Endpoint, tls: &TlsFiles) -> Result<Connector, FarmError> {
    if !endpoint.is_tls() {
        if !tls.is_empty() {
            return Err(FarmError::TlsWithoutRediss {
                endpoint: endpoint.to_string(),
            });
        }
        return Ok(Connector::plain());
    }
    match (&tls.cert, &tls.key) {
        (Some(_), None) => return Err(FarmError::CertWithoutKey),
        (None, Some(_)) => return Err(FarmError::KeyWithoutCert),
        _ => {}
    }
    // Name the file that cannot be read (OpenSSL's own message does not).
    for path in [&tls.ca, &tls.cert, &tls.key].into_iter().flatten() {
        if let Err(source) = std::fs::File::open(path) {
            return Err(FarmError::TlsFile {
                path: path.clone(),
                source,
            });
        }
    }
    Connector::tls(tls).map_err(|e| FarmError::Client {
        endpoint: endpoint.to_string(),
        why: format!("TLS files: {e}"),
    })
}

/// Where one node is, resolved now.
fn address_of(info: &redis::ConnectionInfo) -> Result<Address, String> {
    match info.addr() {
        ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
            Address::resolve(host, *port).map_err(|e| format!("cannot resolve {host}: {e}"))
        }
        ConnectionAddr::Unix(path) => Ok(Address::Unix(path.clone())),
        other => Err(format!("unsupported address {other:?}")),
    }
}

/// Why a farm could not be made.
#[derive(Debug)]
#[non_exhaustive]
pub enum FarmError {
    /// `connections` was 0.
    NoConnections,
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
    /// TLS files for a cluster (not supported yet: its nodes' addresses
    /// come from the cluster, and their certificates are checked against
    /// the system trust store).
    ClusterTlsFiles { endpoint: String },
    /// The configuration was refused (a bad certificate, a name that does
    /// not resolve, …).
    Client { endpoint: String, why: String },
}

impl fmt::Display for FarmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoConnections => f.write_str("farm: at least one connection is needed"),
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
                write!(f, "farm: Redis at '{endpoint}': {why}")
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
