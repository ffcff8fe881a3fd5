//! Where the farm's Redis is: parsing and validating the configuration
//! values, with no network (so `apachectl -t` can say what is wrong).
//!
//! - A single server (Redis or Valkey): [`Endpoint::parse`] of
//!   `redis://[user[:password]@]host:port[/db]`, or `rediss://…` for TLS with
//!   the server's certificate verified (against the system trust store, or
//!   the CA file of [`TlsFiles`]). `valkey://` and `valkeys://` are taken as
//!   synonyms.
//! - A Redis Cluster: [`Endpoint::parse_cluster`] of a comma-separated list
//!   of seed nodes, each `host:port` or a URL as above. All URL entries must
//!   share one scheme; a bare `host:port` takes the scheme and credentials of
//!   the list's first URL entry (plain `redis://` if there is none). The
//!   database must be 0 or absent (a cluster has only database 0).
//!
//! redis-rs's own parser (`IntoConnectionInfo`) makes the connection
//! information, so what is accepted is what the client understands; checks
//! of our own come first so that every malformed value gets a message that
//! names it: an empty host, a missing or zero port (no silent default of
//! 6379: a farm's address is written out), a bad database, an unknown scheme.
//!
//! - A single server over a Unix socket: `unix:///path/redis.sock` or
//!   `redis+unix:///path/redis.sock`, with `?db=N` (and `user=`, `pass=`) as
//!   redis-rs reads them: a replica beside each httpd (a cluster or a
//!   sentinel list cannot use one).
//! - Redis Sentinel: [`Endpoint::parse_sentinel`] of the sentinels' list
//!   (entries as for a cluster) and the master's name; the database may be
//!   given as for a single server. Credentials in the URLs are the
//!   master's; the sentinels are asked without AUTH.
//!
//! Refused on purpose: `#insecure` (TLS without certificate verification);
//! query parameters on TCP addresses (`?protocol=` and the like: we speak
//! RESP2, which every Redis and Valkey speaks).
//!
//! Passwords never appear in `Display` or `Debug`: both show `user:***@`.

use std::fmt;
use std::path::PathBuf;

use redis::{ConnectionInfo, IntoConnectionInfo};

/// The largest database number accepted (Redis's `databases` default is 16;
/// a server may be configured with more).
pub const MAX_DB: i64 = i32::MAX as i64;

/// Single server, cluster or sentinel-watched master.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topology {
    /// One Redis (or Valkey) server (TCP or a Unix socket).
    Single,
    /// A Redis Cluster reached through seed nodes.
    Cluster,
    /// The master a set of Redis Sentinels names.
    Sentinel,
    /// memcached servers (keys spread over them).
    Memcache,
}

/// A validated farm address.
#[derive(Clone)]
pub struct Endpoint {
    topology: Topology,
    tls: bool,
    nodes: Vec<ConnectionInfo>,
    shown: String,
    /// The master's name (`Topology::Sentinel` only).
    master: Option<String>,
}

impl Endpoint {
    /// One server: `redis://[user[:password]@]host:port[/db]` or `rediss://…`.
    pub fn parse(url: &str) -> Result<Endpoint, EndpointError> {
        let node = parse_url(url.trim())?;
        Ok(Endpoint {
            topology: Topology::Single,
            tls: node.tls,
            shown: node.shown,
            nodes: vec![node.info],
            master: None,
        })
    }

    /// The master `master` as the sentinels of `list` (comma-separated,
    /// entries as for [`parse_cluster`](Self::parse_cluster)) name it.
    pub fn parse_sentinel(list: &str, master: &str) -> Result<Endpoint, EndpointError> {
        let valid = !master.is_empty()
            && master.len() <= 128
            && master
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !valid {
            return Err(EndpointError::BadMasterName {
                name: master.to_string(),
            });
        }
        let mut e = Self::parse_list(list, true)?;
        e.topology = Topology::Sentinel;
        e.shown = format!("sentinel {} master {master}", e.shown);
        e.master = Some(master.to_string());
        Ok(e)
    }

    /// Whether this is one server over a Unix socket.
    pub fn is_unix(&self) -> bool {
        matches!(
            self.nodes.first().map(|n| n.addr()),
            Some(redis::ConnectionAddr::Unix(_))
        )
    }

    /// memcached servers: `host:port,...` or `memcache://host:port`
    /// (`memcaches://` for TLS), comma-separated.
    pub fn parse_memcache(list: &str) -> Result<Endpoint, EndpointError> {
        let entries: Vec<String> = list
            .split(',')
            .map(|e| {
                let e = e.trim();
                if let Some(rest) = e.strip_prefix("memcaches://") {
                    format!("rediss://{rest}")
                } else if let Some(rest) = e.strip_prefix("memcache://") {
                    format!("redis://{rest}")
                } else {
                    e.to_string()
                }
            })
            .collect();
        let mut e = Self::parse_list(&entries.join(","), false)?;
        if e.nodes.iter().any(|n| {
            let r = n.redis_settings();
            r.username().is_some() || r.password().is_some()
        }) {
            return Err(EndpointError::MemcacheCredentials {
                list: redact_list(list),
            });
        }
        e.topology = Topology::Memcache;
        e.shown = e
            .shown
            .replace("rediss://", "memcaches://")
            .replace("redis://", "memcache://");
        Ok(e)
    }

    /// The master's name (sentinel only).
    pub fn master(&self) -> Option<&str> {
        self.master.as_deref()
    }

    /// A cluster: comma-separated seed nodes, `host:port` or URLs.
    pub fn parse_cluster(list: &str) -> Result<Endpoint, EndpointError> {
        Self::parse_list(list, false)
    }

    /// A list of nodes; `any_db`: a database other than 0 is allowed (the
    /// sentinel's master), else refused (a cluster has only database 0).
    fn parse_list(list: &str, any_db: bool) -> Result<Endpoint, EndpointError> {
        let entries: Vec<&str> = list.split(',').map(str::trim).collect();
        if entries.iter().all(|e| e.is_empty()) {
            return Err(EndpointError::Empty);
        }
        // The first URL entry gives bare entries their scheme and userinfo.
        let mut template: Option<(String, String)> = None;
        for entry in &entries {
            if entry.contains("://") {
                let url = redis::parse_redis_url(entry).ok_or_else(|| classify_unparsed(entry))?;
                let mut userinfo = String::new();
                if !url.username().is_empty() || url.password().is_some() {
                    userinfo.push_str(url.username());
                    if let Some(pw) = url.password() {
                        userinfo.push(':');
                        userinfo.push_str(pw);
                    }
                    userinfo.push('@');
                }
                template = Some((url.scheme().to_string(), userinfo));
                break;
            }
        }
        let (scheme, userinfo) = template.unwrap_or_else(|| ("redis".to_string(), String::new()));
        let mut nodes = Vec::with_capacity(entries.len());
        let mut shown = Vec::with_capacity(entries.len());
        let mut tls = None;
        for entry in entries {
            if entry.is_empty() {
                return Err(EndpointError::EmptyEntry {
                    list: redact_list(list),
                });
            }
            let node = if entry.contains("://") {
                parse_url(entry)?
            } else {
                check_host_port(entry)?;
                parse_url(&format!("{scheme}://{userinfo}{entry}"))?
            };
            if node.unix {
                return Err(EndpointError::UnixInList { value: node.shown });
            }
            if node.db != 0 && !any_db {
                return Err(EndpointError::ClusterDb {
                    value: node.shown,
                    db: node.db,
                });
            }
            match tls {
                None => tls = Some(node.tls),
                Some(t) if t != node.tls => {
                    return Err(EndpointError::MixedSchemes {
                        list: redact_list(list),
                    })
                }
                Some(_) => {}
            }
            shown.push(node.shown);
            nodes.push(node.info);
        }
        Ok(Endpoint {
            topology: Topology::Cluster,
            tls: tls.unwrap_or(false),
            nodes,
            shown: shown.join(","),
            master: None,
        })
    }

    /// Single server or cluster.
    pub fn topology(&self) -> Topology {
        self.topology
    }

    /// Whether the connections use TLS (`rediss://`).
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The connection information: one entry, or the cluster's seeds.
    pub fn nodes(&self) -> &[ConnectionInfo] {
        &self.nodes
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("topology", &self.topology)
            .field("nodes", &self.shown)
            .finish()
    }
}

/// The TLS files of a `rediss://` farm, read by [`crate::Farm::new`] (in the
/// parent, as the user httpd starts as: root on an ordinary host, before
/// children drop privileges).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM CA certificate(s) to verify the server with, instead of the
    /// system trust store.
    pub ca: Option<PathBuf>,
    /// PEM client certificate (mutual TLS); needs `key`.
    pub cert: Option<PathBuf>,
    /// PEM client private key; needs `cert`.
    pub key: Option<PathBuf>,
}

impl TlsFiles {
    /// Whether no file is named.
    pub fn is_empty(&self) -> bool {
        self.ca.is_none() && self.cert.is_none() && self.key.is_none()
    }
}

/// One parsed URL.
struct Node {
    info: ConnectionInfo,
    tls: bool,
    unix: bool,
    db: i64,
    shown: String,
}

fn parse_url(value: &str) -> Result<Node, EndpointError> {
    if value.is_empty() {
        return Err(EndpointError::Empty);
    }
    let Some((scheme, _)) = value.split_once("://") else {
        return Err(EndpointError::NoScheme {
            value: redact(value),
        });
    };
    let tls = match scheme.to_ascii_lowercase().as_str() {
        "redis" | "valkey" => false,
        "rediss" | "valkeys" => true,
        "unix" | "redis+unix" | "valkey+unix" => return parse_unix(value),
        _ => {
            return Err(EndpointError::UnknownScheme {
                value: redact(value),
                scheme: scheme.to_string(),
            })
        }
    };
    let url = redis::parse_redis_url(value).ok_or_else(|| classify_unparsed(value))?;
    let shown = show(&url);
    let host = url.host_str().unwrap_or("");
    if host.is_empty() {
        return Err(EndpointError::EmptyHost { value: shown });
    }
    match url.port() {
        None => return Err(EndpointError::MissingPort { value: shown }),
        Some(0) => return Err(EndpointError::ZeroPort { value: shown }),
        Some(_) => {}
    }
    if url.query().is_some() {
        return Err(EndpointError::Query { value: shown });
    }
    if url.fragment().is_some() {
        return Err(EndpointError::Fragment { value: shown });
    }
    let db = match url.path().trim_matches('/') {
        "" => 0,
        path => match path.parse::<i64>() {
            Ok(db) if (0..=MAX_DB).contains(&db) && path.bytes().all(|b| b.is_ascii_digit()) => db,
            _ => {
                return Err(EndpointError::BadDb {
                    value: shown,
                    db: path.to_string(),
                })
            }
        },
    };
    let info = value
        .into_connection_info()
        .map_err(|e| EndpointError::Refused {
            value: shown.clone(),
            why: e.to_string(),
        })?;
    Ok(Node {
        info,
        tls,
        unix: false,
        db,
        shown,
    })
}

/// `unix:///path?db=N`: the path must be absolute; redis-rs reads the rest.
fn parse_unix(value: &str) -> Result<Node, EndpointError> {
    let shown = redact_query(value);
    let after = value.split_once("://").map_or("", |(_, a)| a);
    let path = after.split(['?', '#']).next().unwrap_or("");
    if !path.starts_with('/') || path.len() < 2 {
        return Err(EndpointError::UnixPath { value: shown });
    }
    if value.contains('#') {
        return Err(EndpointError::Fragment { value: shown });
    }
    // redis-rs takes `unix://` and `redis+unix://`; valkey+unix is ours.
    let url = value.replacen("valkey+unix://", "redis+unix://", 1);
    let info = url
        .as_str()
        .into_connection_info()
        .map_err(|e| EndpointError::Refused {
            value: shown.clone(),
            why: e.to_string(),
        })?;
    let db = info.redis_settings().db();
    if !(0..=MAX_DB).contains(&db) {
        return Err(EndpointError::BadDb {
            value: shown,
            db: db.to_string(),
        });
    }
    Ok(Node {
        info,
        tls: false,
        unix: true,
        db,
        shown,
    })
}

/// A Unix-socket URL with `pass=` values hidden.
fn redact_query(value: &str) -> String {
    let Some((head, query)) = value.split_once('?') else {
        return value.to_string();
    };
    let parts: Vec<String> = query
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) if k == "pass" || k == "password" => format!("{k}=***"),
            _ => kv.to_string(),
        })
        .collect();
    format!("{head}?{}", parts.join("&"))
}

/// A bare cluster entry must be `host:port` (IPv6 in brackets).
fn check_host_port(entry: &str) -> Result<(), EndpointError> {
    let value = || entry.to_string();
    let Some((host, port)) = entry.rsplit_once(':') else {
        return Err(EndpointError::MissingPort { value: value() });
    };
    if host.is_empty() || host == "[]" {
        return Err(EndpointError::EmptyHost { value: value() });
    }
    if host.contains('@') || host.contains('/') || port.contains('/') {
        return Err(EndpointError::Malformed { value: value() });
    }
    match port.parse::<u16>() {
        Ok(0) => Err(EndpointError::ZeroPort { value: value() }),
        Ok(_) if port.bytes().all(|b| b.is_ascii_digit()) => Ok(()),
        _ if port.is_empty() => Err(EndpointError::MissingPort { value: value() }),
        _ => Err(EndpointError::BadPort {
            value: value(),
            port: port.to_string(),
        }),
    }
}

/// Why the URL parser refused `value`, as precisely as we can tell.
fn classify_unparsed(value: &str) -> EndpointError {
    let shown = redact(value);
    let after = value.split_once("://").map(|(_, a)| a).unwrap_or(value);
    let authority = after.split(['/', '?', '#']).next().unwrap_or("");
    let hostport = authority
        .rsplit_once('@')
        .map(|(_, h)| h)
        .unwrap_or(authority);
    if hostport.is_empty() || hostport.starts_with(':') {
        return EndpointError::EmptyHost { value: shown };
    }
    if let Some((_, port)) = hostport.rsplit_once(':') {
        if !port.is_empty() && port.parse::<u16>().is_err() && !hostport.ends_with(']') {
            return EndpointError::BadPort {
                value: shown,
                port: port.to_string(),
            };
        }
    }
    EndpointError::Malformed { value: shown }
}

/// `scheme://[user[:***]@]host:port[/db]` of a parsed URL.
fn show(url: &url::Url) -> String {
    let mut out = format!("{}://", url.scheme());
    if !url.username().is_empty() || url.password().is_some() {
        out.push_str(url.username());
        if url.password().is_some() {
            out.push_str(":***");
        }
        out.push('@');
    }
    out.push_str(url.host_str().unwrap_or(""));
    if let Some(port) = url.port() {
        out.push_str(&format!(":{port}"));
    }
    let path = url.path();
    if !path.is_empty() && path != "/" {
        out.push_str(path);
    }
    out
}

/// An unparsed value with anything between `://` and the last `@` of its
/// authority replaced, so a password cannot leak into a message.
fn redact(value: &str) -> String {
    let Some((scheme, after)) = value.split_once("://") else {
        return match value.rsplit_once('@') {
            Some((_, host)) => format!("***@{host}"),
            None => value.to_string(),
        };
    };
    let end = after.find(['/', '?', '#']).unwrap_or(after.len());
    let (authority, tail) = after.split_at(end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            let hidden = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                user.to_string()
            };
            format!("{scheme}://{hidden}@{host}{tail}")
        }
        None => value.to_string(),
    }
}

fn redact_list(list: &str) -> String {
    list.split(',')
        .map(|e| redact(e.trim()))
        .collect::<Vec<_>>()
        .join(",")
}

/// Why a farm address was refused; each message names the value (with any
/// password hidden).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EndpointError {
    /// Nothing given.
    Empty,
    /// An empty entry in a cluster list (`a:1,,b:2`).
    EmptyEntry { list: String },
    /// No `scheme://`.
    NoScheme { value: String },
    /// A scheme other than redis, rediss, valkey, valkeys.
    UnknownScheme { value: String, scheme: String },
    /// A Unix socket in a cluster or sentinel list.
    UnixInList { value: String },
    /// A Unix socket URL whose path is not absolute.
    UnixPath { value: String },
    /// Credentials in a memcached address (SASL is not supported).
    MemcacheCredentials { list: String },
    /// A sentinel master name that is empty or not `[A-Za-z0-9._-]`.
    BadMasterName { name: String },
    /// Not a URL the parser understands.
    Malformed { value: String },
    /// No host.
    EmptyHost { value: String },
    /// No port (no default is assumed).
    MissingPort { value: String },
    /// Port 0.
    ZeroPort { value: String },
    /// A port that is not a number from 1 to 65535.
    BadPort { value: String, port: String },
    /// A database that is not a number from 0 to [`MAX_DB`].
    BadDb { value: String, db: String },
    /// A cluster entry with a database other than 0.
    ClusterDb { value: String, db: i64 },
    /// Cluster entries of both redis:// and rediss://.
    MixedSchemes { list: String },
    /// `?…` parameters.
    Query { value: String },
    /// `#…` (such as `#insecure`).
    Fragment { value: String },
    /// The redis client refused it (for instance a wildcard address).
    Refused { value: String, why: String },
}

impl fmt::Display for EndpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("no Redis address given"),
            Self::EmptyEntry { list } => {
                write!(f, "Redis cluster list '{list}' has an empty entry")
            }
            Self::NoScheme { value } => write!(
                f,
                "Redis address '{value}' has no scheme; write redis://host:port or rediss://host:port"
            ),
            Self::UnknownScheme { value, scheme } => write!(
                f,
                "Redis address '{value}': unknown scheme '{scheme}' (redis:// or rediss://)"
            ),
            Self::UnixInList { value } => write!(
                f,
                "Redis address '{value}': a Unix socket cannot be a cluster node or a sentinel; use host:port"
            ),
            Self::UnixPath { value } => write!(
                f,
                "Redis address '{value}': the socket's path must be absolute (unix:///run/redis/redis.sock)"
            ),
            Self::MemcacheCredentials { list } => write!(
                f,
                "memcached address '{list}': user and password are not supported (memcached's SASL needs the binary protocol); keep memcached on a private network or use memcaches:// with a firewall"
            ),
            Self::BadMasterName { name } => write!(
                f,
                "Redis Sentinel master name '{name}' must be 1 to 128 letters, digits, '.', '_' or '-'"
            ),
            Self::Malformed { value } => write!(f, "Redis address '{value}' is not a valid URL"),
            Self::EmptyHost { value } => write!(f, "Redis address '{value}' has no host"),
            Self::MissingPort { value } => {
                write!(f, "Redis address '{value}' has no port (write host:port, e.g. :6379)")
            }
            Self::ZeroPort { value } => write!(f, "Redis address '{value}' has port 0"),
            Self::BadPort { value, port } => write!(
                f,
                "Redis address '{value}': port '{port}' is not a number from 1 to 65535"
            ),
            Self::BadDb { value, db } => write!(
                f,
                "Redis address '{value}': database '{db}' is not a number from 0 to {MAX_DB}"
            ),
            Self::ClusterDb { value, db } => write!(
                f,
                "Redis cluster node '{value}' names database {db}; a cluster has only database 0"
            ),
            Self::MixedSchemes { list } => write!(
                f,
                "Redis cluster list '{list}' mixes redis:// and rediss:// nodes"
            ),
            Self::Query { value } => write!(
                f,
                "Redis address '{value}': query parameters (?...) are not supported"
            ),
            Self::Fragment { value } => write!(
                f,
                "Redis address '{value}': fragments (#...) are not supported; \
                 TLS certificates are always verified"
            ),
            Self::Refused { value, why } => write!(f, "Redis address '{value}': {why}"),
        }
    }
}

impl std::error::Error for EndpointError {}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::ConnectionAddr;
    use EndpointError as E;

    /// What a refused value's error must match.
    type Expect = fn(&EndpointError) -> bool;

    /// A row of a refusals table: the pattern an error must match, and
    /// the values refused with it.
    macro_rules! refused {
        ($pattern:pat, $($value:expr),+) => {
            (
                (|e: &EndpointError| matches!(e, $pattern)) as Expect,
                &[$($value),+][..],
            )
        };
    }

    #[test]
    fn unix_sockets_and_sentinels_parse() {
        let e = Endpoint::parse("unix:///run/redis/redis.sock?db=3").expect("unix");
        assert_eq!(e.topology(), Topology::Single);
        assert!(
            matches!(e.nodes()[0].addr(), ConnectionAddr::Unix(p) if p.ends_with("redis.sock"))
        );
        assert_eq!(e.nodes()[0].redis_settings().db(), 3);
        let e = Endpoint::parse("redis+unix:///run/r.sock?pass=s3cret").expect("unix");
        assert!(!format!("{e} {e:?}").contains("s3cret"));
        assert!(Endpoint::parse_cluster("unix:///run/r.sock").is_err());

        let e = Endpoint::parse_sentinel("10.0.0.1:26379,10.0.0.2:26379", "mymaster")
            .expect("sentinel");
        assert_eq!(e.topology(), Topology::Sentinel);
        assert_eq!(e.master(), Some("mymaster"));
        assert_eq!(e.nodes().len(), 2);
        assert!(matches!(
            Endpoint::parse_sentinel("10.0.0.1:26379", "my master"),
            Err(EndpointError::BadMasterName { .. })
        ));
        assert!(matches!(
            Endpoint::parse_sentinel("unix:///run/s.sock", "m"),
            Err(EndpointError::UnixInList { .. })
        ));
    }

    #[test]
    fn single_plain_and_tls() {
        let e = Endpoint::parse("redis://127.0.0.1:6379").expect("plain");
        assert_eq!(e.topology(), Topology::Single);
        assert!(!e.is_tls());
        assert_eq!(e.nodes().len(), 1);
        assert!(matches!(e.nodes()[0].addr(), ConnectionAddr::Tcp(h, 6379) if h == "127.0.0.1"));
        assert_eq!(e.to_string(), "redis://127.0.0.1:6379");

        let e = Endpoint::parse("rediss://user:s3cret@cache.example:6380/2").expect("tls");
        assert!(e.is_tls());
        assert!(matches!(
            e.nodes()[0].addr(),
            ConnectionAddr::TcpTls {
                insecure: false,
                port: 6380,
                ..
            }
        ));
        assert_eq!(e.nodes()[0].redis_settings().db(), 2);
        assert_eq!(e.nodes()[0].redis_settings().username(), Some("user"));
        assert_eq!(e.nodes()[0].redis_settings().password(), Some("s3cret"));
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("user:***@cache.example:6380/2"), "{shown}");

        let e = Endpoint::parse("redis://[::1]:7000").expect("ipv6");
        assert!(matches!(e.nodes()[0].addr(), ConnectionAddr::Tcp(h, 7000) if h == "::1"));
        assert!(Endpoint::parse("valkey://10.0.0.1:6379").is_ok());
    }

    #[test]
    fn refusals_name_the_problem() {
        let cases = [
            refused!(E::Empty, ""),
            refused!(E::NoScheme { .. }, "127.0.0.1:6379"),
            refused!(E::UnknownScheme { .. }, "http://h:1"),
            refused!(E::UnixPath { .. }, "unix://run/redis.sock", "unix://"),
            refused!(E::EmptyHost { .. }, "redis://:6379", "redis://"),
            refused!(E::MissingPort { .. }, "redis://host"),
            refused!(E::ZeroPort { .. }, "redis://host:0"),
            refused!(E::BadPort { .. }, "redis://host:70000", "redis://host:x1"),
            refused!(
                E::BadDb { .. },
                "redis://host:1/x",
                "redis://host:1/-1",
                "redis://host:1/99999999999"
            ),
            refused!(E::Query { .. }, "redis://host:1/?protocol=resp3"),
            refused!(E::Fragment { .. }, "rediss://host:1/#insecure"),
            refused!(E::Refused { .. }, "redis://0.0.0.0:1"),
        ];
        for (expected, values) in cases {
            for value in values {
                let err = Endpoint::parse(value).expect_err(value);
                assert!(expected(&err), "{value}: {err:?}");
                assert!(
                    err.to_string().contains(value.trim_end_matches('/'))
                        || value.is_empty()
                        || err.to_string().contains("Redis address"),
                    "{value}: {err}"
                );
            }
        }
    }

    #[test]
    fn passwords_never_shown_in_errors() {
        for value in [
            "redis://u:hunter2@host",
            "redis://u:hunter2@host:0",
            "redis://u:hunter2@host:1/x",
            "redis://u:hunter2@:1",
            "redis://:hunter2@host:1/?a=b",
            "ftp://u:hunter2@host:1",
        ] {
            let err = Endpoint::parse(value).expect_err(value);
            let text = format!("{err} {err:?}");
            assert!(!text.contains("hunter2"), "{text}");
        }
        let err = Endpoint::parse_cluster("redis://u:hunter2@a:1,,b:2").expect_err("empty");
        assert!(!format!("{err} {err:?}").contains("hunter2"));
    }

    #[test]
    fn cluster_lists() {
        let e = Endpoint::parse_cluster("127.0.0.1:7000, 127.0.0.1:7001,[::1]:7002").expect("bare");
        assert_eq!(e.topology(), Topology::Cluster);
        assert_eq!(e.nodes().len(), 3);
        assert!(!e.is_tls());
        let e = Endpoint::parse_cluster("rediss://u:pw@a:7000,b:7001").expect("inherit");
        assert!(e.is_tls());
        assert_eq!(e.nodes()[1].redis_settings().password(), Some("pw"));
        assert!(matches!(e.nodes()[1].addr(), ConnectionAddr::TcpTls { .. }));
        assert!(!e.to_string().contains("pw@"));

        let refusals = [
            refused!(E::Empty, ""),
            refused!(E::EmptyEntry { .. }, "a:1,,b:2"),
            refused!(E::MissingPort { .. }, "a:1,b"),
            refused!(E::ZeroPort { .. }, "a:0"),
            refused!(E::EmptyHost { .. }, ":1"),
            refused!(E::BadPort { .. }, "a:port"),
            refused!(E::ClusterDb { db: 3, .. }, "redis://a:1/3,b:2"),
            refused!(E::MixedSchemes { .. }, "redis://a:1,rediss://b:2"),
        ];
        for (expected, values) in refusals {
            for value in values {
                let err = Endpoint::parse_cluster(value).expect_err(value);
                assert!(expected(&err), "{value}: {err:?}");
            }
        }
        assert!(matches!(
            Endpoint::parse_cluster("redis://a:1/0,b:2"),
            Ok(e) if e.nodes().len() == 2
        ));
    }
}
