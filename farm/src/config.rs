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
    /// A replica that lookups ask instead ([`Endpoint::parse`]; a single
    /// server, typically a Unix socket beside this host). Stores, removes
    /// and agreements still go to `endpoint`.
    pub replica: Option<Endpoint>,
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
            replica,
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
        let replica = match &replica {
            Some(r) => Some(
                r.nodes()
                    .first()
                    .map(address_of)
                    .transpose()
                    .map_err(|why| FarmError::Client {
                        endpoint: r.to_string(),
                        why,
                    })?
                    .ok_or_else(|| FarmError::Client {
                        endpoint: r.to_string(),
                        why: "no address".to_string(),
                    })?,
            ),
            None => None,
        };
        let route = match endpoint.topology() {
            Topology::Single => Route::Single(addresses.swap_remove(0)),
            Topology::Cluster => Route::Cluster(addresses),
            Topology::Memcache => Route::Memcache(addresses),
            Topology::Sentinel => Route::Sentinel {
                sentinels: addresses,
                master: endpoint.master().unwrap_or_default().to_string(),
            },
        };
        // A GET's reply: the sealed value in its bulk-string frame.
        let reply_budget = max_value
            .saturating_add(seal::SEALED_OVERHEAD)
            .saturating_add(conn::SLACK);
        Ok(Farm {
            connector,
            login,
            route,
            replica,
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
/// configuration time, as the user httpd starts as): unreadable files, a certificate without
/// its key, files for a `redis://` endpoint, files for a cluster.
pub fn check(endpoint: &Endpoint, tls: &TlsFiles) -> Result<(), FarmError> {
    if !tls.is_empty() && endpoint.topology() == Topology::Cluster {
        return Err(FarmError::ClusterTlsFiles {
            endpoint: endpoint.to_string(),
        });
    }
    for info in endpoint.nodes() {
        if let ConnectionAddr::Unix(path) = info.addr() {
            check_unix_socket(path)?;
        }
    }
    connector(endpoint, tls).map(|_| ())
}

/// A Unix socket's place must be one no other local user can put a socket
/// of their own in: its directory not writable by others (as Redis's own
/// `/run/redis`, root's or redis's, mode 2755 or 2775). If the socket is
/// there already it must be a socket, not a link or a file. (It may be
/// absent at configuration time: Redis may start after httpd.)
pub fn check_unix_socket(path: &std::path::Path) -> Result<(), FarmError> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let refuse = |why: String| FarmError::UnixSocket {
        path: path.to_path_buf(),
        why,
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .ok_or_else(|| refuse("has no directory".to_string()))?;
    let meta = std::fs::metadata(dir)
        .map_err(|e| refuse(format!("its directory {}: {e}", dir.display())))?;
    if meta.permissions().mode() & 0o002 != 0 {
        return Err(refuse(format!(
            "its directory {} is writable by every user, any of whom could put a socket of their own there; \
             use a directory such as /run/redis",
            dir.display()
        )));
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if !m.file_type().is_socket() => Err(refuse(
            "is there but is not a socket (a link or a file?)".to_string(),
        )),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(refuse(e.to_string())),
    }
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
    /// A Unix socket in a place others could take over (see
    /// [`check_unix_socket`]).
    UnixSocket { path: PathBuf, why: String },
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
            Self::UnixSocket { path, why } => {
                write!(f, "farm: Redis socket {}: {why}", path.display())
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn unix_sockets_only_in_directories_others_cannot_write() {
        let dir = tempfile::tempdir().expect("dir");
        let sock = dir.path().join("redis.sock");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        assert!(
            check_unix_socket(&sock).is_ok(),
            "absent: Redis may start later"
        );
        let _listener = std::os::unix::net::UnixListener::bind(&sock).expect("bind");
        assert!(check_unix_socket(&sock).is_ok());
        let file = dir.path().join("plain");
        std::fs::write(&file, b"x").expect("write");
        let e = check_unix_socket(&file).expect_err("a file");
        assert!(e.to_string().contains("not a socket"), "{e}");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
            .expect("chmod");
        let e = check_unix_socket(&sock).expect_err("world-writable");
        assert!(e.to_string().contains("writable by every user"), "{e}");
    }
}
