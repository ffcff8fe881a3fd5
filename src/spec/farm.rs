//! The farm tier's options: what follows the segment in the argument.
//!
//! ```text
//! SSLSessionCache "shm:/run/apache2/ssl_scache(64M) redis=redis://10.0.0.5:6379/0 seal=/etc/apache2/socache-farm.key"
//!                  |<------- segment -------->| |<---------------------- options ------------------------------>|
//! ```
//!
//! The segment part ends at the first blank followed by `name=`; the rest
//! is blank-separated `name=value` options (so a segment path may contain
//! blanks, as before, unless a blank is followed by `name=`; option values
//! cannot contain blanks). An argument that starts with an option has the
//! default anonymous segment.
//!
//! | option                 | meaning                                                        |
//! |------------------------|----------------------------------------------------------------|
//! | `redis=URL`            | one Redis (or Valkey): `redis://[user[:password]@]host:port[/db]`, `rediss://` for TLS, `unix:///path/redis.sock[?db=N]` |
//! | `redis-cluster=LIST`   | a Redis Cluster: seed nodes `host:port` or URLs, comma-separated |
//! | `redis-sentinel=LIST`  | Redis Sentinels (`host:port` or URLs, comma-separated), with `redis-master=` |
//! | `redis-master=NAME`    | the master's name the sentinels watch                          |
//! | `memcache=LIST`        | memcached servers: `host:port` or `memcache://host:port` (`memcaches://` for TLS), comma-separated; keys spread over them |
//! | `redis-replica=URL`    | a replica (beside this host, e.g. `unix:///run/redis/replica.sock`) that lookups ask instead of the master; stores still go to the master |
//! | `redis-ca=FILE`        | CA certificates that verify a `rediss://` server (default: the system's) |
//! | `redis-cert=FILE`      | client certificate for `rediss://` (with `redis-key`)          |
//! | `redis-key=FILE`       | its private key                                                |
//! | `timeout=DURATION`     | the most a handshake waits on Redis, connect included: `20ms` (default), `1s` |
//! | `seal=FILE` or `seal=off` | the farm key file (48-byte records, see `socache_shm_farm::keys`), or an explicit, warned opt-out |
//! | `prefix=TEXT`          | the start of every Redis key (default `socache-shm:`), to share one Redis between farms |
//!
//! This parser checks the grammar only (pure, fuzzed with the rest of the
//! argument); the URLs and files are checked by the farm tier when the
//! configuration is read (`apachectl -t`), after paths are resolved against
//! ServerRoot.

use std::path::PathBuf;
use std::time::Duration;

use super::SpecError;

/// The default `timeout=`: a loopback or LAN round trip is well under a
/// millisecond; 20 ms covers a loaded Redis without making a stuck one
/// cost a handshake more than a blink.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(20);

/// The longest `timeout=` accepted.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(10);

/// The default `prefix=`.
pub const DEFAULT_PREFIX: &str = "socache-shm:";

/// The longest `prefix=` accepted, in bytes.
pub const MAX_PREFIX: usize = 128;

/// Where the second tier is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Redis {
    /// `redis=URL`.
    Server(String),
    /// `redis-cluster=LIST`.
    Cluster(String),
    /// `redis-sentinel=LIST redis-master=NAME`.
    Sentinel { sentinels: String, master: String },
    /// `memcache=LIST`.
    Memcache(String),
}

/// How values are sealed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seal {
    /// `seal=FILE`: the farm key file.
    File(PathBuf),
    /// `seal=off`.
    Off,
}

/// The farm tier's options, as written (paths possibly relative).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FarmSpec {
    pub redis: Redis,
    /// `redis-replica=URL`: where lookups go instead.
    pub replica: Option<String>,
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub timeout: Duration,
    pub seal: Seal,
    pub prefix: String,
}

/// Every option name, in the order the table above gives them.
pub const OPTIONS: [&str; 12] = [
    "redis",
    "memcache",
    "redis-cluster",
    "redis-sentinel",
    "redis-master",
    "redis-replica",
    "redis-ca",
    "redis-cert",
    "redis-key",
    "timeout",
    "seal",
    "prefix",
];

/// Is `token` an option (`name=...` with a name of lowercase letters,
/// digits and dashes, starting with a letter)? Unknown names count, so
/// that they are refused by name rather than taken for part of a path.
pub(super) fn looks_like_option(token: &str) -> bool {
    let Some((name, _)) = token.split_once('=') else {
        return false;
    };
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z'))
        && bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-'))
}

/// Parse the options (blank-separated `name=value` tokens).
pub(super) fn parse(text: &str) -> Result<FarmSpec, SpecError> {
    let mut seen: Vec<&str> = Vec::new();
    let (mut redis, mut cluster) = (None, None);
    let (mut sentinels, mut master, mut replica) = (None, None, None);
    let mut memcache = None;
    let (mut ca, mut cert, mut key) = (None, None, None);
    let (mut timeout, mut seal, mut prefix) = (None, None, None);
    for token in text.split_ascii_whitespace() {
        let Some((name, value)) = token.split_once('=').filter(|_| looks_like_option(token)) else {
            return Err(SpecError::NotAnOption {
                text: token.to_string(),
            });
        };
        if !OPTIONS.contains(&name) {
            return Err(SpecError::UnknownOption {
                name: name.to_string(),
            });
        }
        if seen.contains(&name) {
            return Err(SpecError::DuplicateOption {
                name: name.to_string(),
            });
        }
        seen.push(name);
        if value.is_empty() {
            return Err(SpecError::EmptyOption {
                name: name.to_string(),
            });
        }
        let path = || Some(PathBuf::from(value));
        match name {
            "redis" => redis = Some(value.to_string()),
            "redis-cluster" => cluster = Some(value.to_string()),
            "redis-sentinel" => sentinels = Some(value.to_string()),
            "redis-master" => master = Some(value.to_string()),
            "redis-replica" => replica = Some(value.to_string()),
            "memcache" => memcache = Some(value.to_string()),
            "redis-ca" => ca = path(),
            "redis-cert" => cert = path(),
            "redis-key" => key = path(),
            "timeout" => timeout = Some(parse_duration(value)?),
            "seal" => {
                seal = Some(if value == "off" {
                    Seal::Off
                } else {
                    Seal::File(PathBuf::from(value))
                })
            }
            "prefix" => {
                if value.len() > MAX_PREFIX {
                    return Err(SpecError::PrefixTooLong { len: value.len() });
                }
                prefix = Some(value.to_string())
            }
            _ => unreachable!("every name in OPTIONS is matched"),
        }
    }
    if master.is_some() && sentinels.is_none() {
        return Err(SpecError::MasterWithoutSentinel);
    }
    let redis = match (redis, cluster, sentinels, memcache) {
        (Some(url), None, None, None) => Redis::Server(url),
        (None, Some(list), None, None) => Redis::Cluster(list),
        (None, None, Some(sentinels), None) => Redis::Sentinel {
            sentinels,
            master: master.ok_or(SpecError::SentinelWithoutMaster)?,
        },
        (None, None, None, Some(list)) => Redis::Memcache(list),
        (None, None, None, None) => {
            let name = seen.first().copied().unwrap_or("timeout");
            return Err(SpecError::OptionWithoutRedis {
                name: name.to_string(),
            });
        }
        _ => return Err(SpecError::RedisTwice),
    };
    let seal = seal.ok_or(SpecError::SealMissing)?;
    if replica.is_some() && matches!(redis, Redis::Cluster(_) | Redis::Memcache(_)) {
        return Err(SpecError::ReplicaWithCluster);
    }
    Ok(FarmSpec {
        redis,
        replica,
        ca,
        cert,
        key,
        timeout: timeout.unwrap_or(DEFAULT_TIMEOUT),
        seal,
        prefix: prefix.unwrap_or_else(|| DEFAULT_PREFIX.to_string()),
    })
}

/// `20ms`, `1s`, `1500ms`: a count with a unit (a bare number is refused:
/// shmcb-style sizes are bytes, RedisTimeout is microseconds, so a unit-less
/// number here would mean something different to every reader).
pub fn parse_duration(text: &str) -> Result<Duration, SpecError> {
    let bad = || SpecError::BadDuration {
        text: text.to_string(),
    };
    let (digits, unit_ms) = if let Some(d) = text.strip_suffix("ms") {
        (d, 1)
    } else if let Some(d) = text.strip_suffix('s') {
        (d, 1000)
    } else {
        return Err(bad());
    };
    if digits.is_empty() || digits.len() > 9 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let d = Duration::from_millis(n * unit_ms);
    if d.is_zero() || d > MAX_TIMEOUT {
        return Err(SpecError::DurationOutOfRange {
            text: text.to_string(),
        });
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{err, ok};
    use super::*;

    #[test]
    fn the_issue_example_parses_with_defaults() {
        let s = ok(Some(
            "/run/apache2/ssl_scache(64M) redis=redis://10.0.0.5:6379/0 seal=/etc/apache2/socache-farm.key",
        ));
        assert_eq!(
            s.path.as_deref(),
            Some(std::path::Path::new("/run/apache2/ssl_scache"))
        );
        assert_eq!(s.bytes, 64 << 20);
        let f = s.farm.unwrap();
        assert_eq!(f.redis, Redis::Server("redis://10.0.0.5:6379/0".into()));
        assert_eq!(f.seal, Seal::File("/etc/apache2/socache-farm.key".into()));
        assert_eq!(f.timeout, DEFAULT_TIMEOUT);
        assert_eq!(f.prefix, DEFAULT_PREFIX);
        assert_eq!((f.ca, f.cert, f.key), (None, None, None));
    }

    #[test]
    fn every_option_in_any_order_and_blanks() {
        let f = ok(Some(
            "/c(1M)   prefix=farm1:\ttimeout=150ms seal=off redis-key=k.pem redis-cert=c.pem \
             redis-ca=ca.pem redis-cluster=10.0.0.1:7000,10.0.0.2:7000",
        ))
        .farm
        .expect("farm options");
        assert_eq!(
            f.redis,
            Redis::Cluster("10.0.0.1:7000,10.0.0.2:7000".into())
        );
        assert_eq!(f.timeout, Duration::from_millis(150));
        assert_eq!(f.seal, Seal::Off);
        assert_eq!(f.prefix, "farm1:");
        assert_eq!(f.ca, Some("ca.pem".into()));
        assert_eq!(f.cert, Some("c.pem".into()));
        assert_eq!(f.key, Some("k.pem".into()));
    }

    #[test]
    fn options_alone_mean_the_default_anonymous_segment() {
        let s = ok(Some("redis=redis://h:1 seal=off"));
        assert_eq!((s.path, s.bytes), (None, super::super::DEFAULT_BYTES));
        assert!(s.farm.is_some());
    }

    #[test]
    fn a_path_with_blanks_still_means_what_it_meant() {
        let s = ok(Some("/srv/my cache/scache(1M)"));
        assert_eq!(
            s.path.as_deref(),
            Some(std::path::Path::new("/srv/my cache/scache"))
        );
        assert_eq!(s.farm, None);
        let s = ok(Some("/srv/my cache/scache(1M) redis=redis://h:1 seal=off"));
        assert_eq!(
            s.path.as_deref(),
            Some(std::path::Path::new("/srv/my cache/scache"))
        );
        assert!(s.farm.is_some());
    }

    #[test]
    fn each_malformed_option_is_named() {
        let cases: &[(&str, &str)] = &[
            ("/c(1M) colour=red", "unknown option \"colour\""),
            (
                "/c(1M) redis=redis://h:1 seal=off timeout=1s timeout=2s",
                "\"timeout\" is given twice",
            ),
            (
                "/c(1M) redis=redis://h:1 seal=off timeout=fast",
                "timeout=fast",
            ),
            ("/c(1M) redis=redis://h:1 seal=off timeout=20", "timeout=20"),
            (
                "/c(1M) redis=redis://h:1 seal=off timeout=0ms",
                "timeout=0ms",
            ),
            (
                "/c(1M) redis=redis://h:1 seal=off timeout=11s",
                "timeout=11s",
            ),
            (
                "/c(1M) redis=redis://h:1 seal=off timeout=-5ms",
                "timeout=-5ms",
            ),
            ("/c(1M) redis=redis://h:1 seal=", "\"seal\" has no value"),
            ("/c(1M) redis=redis://h:1", "master secrets"),
            (
                "/c(1M) seal=/k",
                "\"seal\" needs redis=, redis-cluster=, redis-sentinel= or memcache=",
            ),
            (
                "/c(1M) redis-sentinel=h:26379 seal=off",
                "redis-sentinel= needs redis-master=",
            ),
            (
                "/c(1M) redis=redis://h:1 redis-master=m seal=off",
                "redis-master= needs redis-sentinel=",
            ),
            (
                "/c(1M) redis=redis://h:1 redis-sentinel=h:2 redis-master=m seal=off",
                "more than one of",
            ),
            (
                "/c(1M) redis=redis://h:1 redis-cluster=h:1 seal=off",
                "more than one of",
            ),
            ("/c(1M) redis=redis://h:1 seal=off stray", "\"stray\""),
            (
                "/c(1M) Redis=redis://h:1 seal=off",
                "Redis=redis://h:1\" after the closing",
            ),
        ];
        for (arg, want) in cases {
            let msg = err(arg).to_string();
            assert!(msg.starts_with("Invalid argument: "), "{arg}: {msg}");
            assert!(msg.contains(want), "{arg}: {msg:?} does not name {want:?}");
        }
        let long = format!(
            "/c(1M) redis=redis://h:1 seal=off prefix={}",
            "p".repeat(129)
        );
        assert!(err(&long).to_string().contains("prefix"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("20ms").unwrap(), Duration::from_millis(20));
        assert_eq!(parse_duration("1s").unwrap(), Duration::from_secs(1));
        assert_eq!(parse_duration("10s").unwrap(), MAX_TIMEOUT);
        for bad in [
            "",
            "ms",
            "s",
            "1.5s",
            "1 s",
            "20us",
            "999999999999ms",
            "+1s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }
}
