//! The farm tier as the tests see it: the cache argument ([`FarmArg`]),
//! farm key files, and every name the tests read from the module: its
//! server-status figures ([`FarmFigure`], [`BREAKER_KEY`]), its error-log
//! lines ([`breaker_opened`]) and its Redis keys ([`farm_key_name`]). When
//! the module renames one, this file is the one to change.

use super::*;

/// Bytes of one farm key record (`openssl rand 48 > FILE`).
pub(crate) const FARM_KEY_BYTES: usize = 48;

/// The key prefix the tests configure.
pub(crate) const FARM_PREFIX: &str = "farm-test:";

/// The namespace mod_ssl's session cache gives the provider (`init`'s
/// `cname`, "mod_ssl-sess" in httpd 2.4's ssl_scache.c), the middle part of
/// every Redis key.
pub(crate) const SESSION_NAMESPACE: &str = "mod_ssl-sess";

/// The Redis key of a session: `{prefix}{namespace}:{hex(id)}`.
pub(crate) fn farm_key_name(prefix: &str, id_hex: &str) -> String {
    format!("{prefix}{SESSION_NAMESPACE}:{id_hex}")
}

/// Whether `key` is the Redis key of the session `id_hex` under `prefix`,
/// whatever the namespace and the hex digits' case.
pub(crate) fn is_key_of(key: &str, prefix: &str, id_hex: &str) -> bool {
    key.starts_with(prefix)
        && key.len() >= id_hex.len()
        && key[key.len() - id_hex.len()..].eq_ignore_ascii_case(id_hex)
}

/// A numeric figure the module adds to `server-status?auto`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FarmFigure {
    /// A local miss answered by Redis (and opened).
    RemoteHits,
    /// A local miss Redis did not know either.
    RemoteMisses,
    /// Stores forwarded to Redis.
    StoresSent,
    /// Stores not forwarded (queue full, breaker open).
    StoresDropped,
    /// Connection failures (refused, reset, TLS, AUTH).
    Errors,
    /// Commands Redis refused with an error reply (NOPERM, OOM, MOVED...).
    ErrorReplies,
    /// Redis operations cut by `timeout=`.
    Timeouts,
    /// Values from Redis that did not open (altered, another key, moved).
    SealFailures,
}

impl FarmFigure {
    /// Its `?auto` key.
    pub(crate) fn key(self) -> &'static str {
        match self {
            FarmFigure::RemoteHits => "FarmRemoteHits",
            FarmFigure::RemoteMisses => "FarmRemoteMisses",
            FarmFigure::StoresSent => "FarmStoresSent",
            FarmFigure::StoresDropped => "FarmStoresDropped",
            FarmFigure::Errors => "FarmErrors",
            FarmFigure::ErrorReplies => "FarmErrorReplies",
            FarmFigure::Timeouts => "FarmTimeouts",
            FarmFigure::SealFailures => "FarmSealFailures",
        }
    }
}

/// The `?auto` key of the circuit breaker's state.
pub(crate) const BREAKER_KEY: &str = "FarmBreaker";

/// The breaker's state as `?auto` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Breaker {
    Closed,
    Open,
}

impl Breaker {
    fn parse(value: &str) -> Option<Breaker> {
        let v = value.to_ascii_lowercase();
        if v.starts_with("closed") {
            Some(Breaker::Closed)
        } else if v.starts_with("open") || v.starts_with("half") {
            // Half-open (probing) is still not using Redis for every call.
            Some(Breaker::Open)
        } else {
            None
        }
    }
}

/// An error-log line saying the circuit breaker opened (Redis is being
/// skipped): "opened" and the breaker (not, say, a connection "opened").
pub(crate) fn breaker_opened(line: &str) -> bool {
    let l = line.to_ascii_lowercase();
    l.contains("opened") && ["breaker", "circuit"].iter().any(|w| l.contains(w))
}

/// The lines of `log` for which [`breaker_opened`] holds.
pub(crate) fn breaker_opened_lines(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| breaker_opened(l))
        .map(str::to_string)
        .collect()
}

/// Error-log lines that say a child crashed (`AH00052: child pid N exit
/// signal Segmentation fault (11)`, aborts, panics that escaped).
pub(crate) fn crash_lines(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("exit signal") || l.contains("panicked"))
        .map(str::to_string)
        .collect()
}

/// 48 random bytes: one farm key record.
pub(crate) fn new_farm_key() -> Vec<u8> {
    let mut key = vec![0u8; FARM_KEY_BYTES];
    openssl::rand::rand_bytes(&mut key).expect("RAND_bytes");
    key
}

/// Write `bytes` as `<dir>/<name>` with `mode`, owned by us (root, when the
/// tests run as root; [`Prepared::give`] hands it to an unprivileged
/// server's user); its path.
pub(crate) fn write_key_file(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> PathBuf {
    let path = dir.join(name);
    let _ = fs::remove_file(&path);
    fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(mode)
        .open(&path)
        .and_then(|mut f| f.write_all(bytes))
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    // The umask may have cleared bits of `mode`; set exactly what was asked.
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod key file");
    path
}

/// The key file every farm host of the tests reads: `{dir}/farm.key`.
pub(crate) const FARM_KEY_FILE: &str = "farm.key";

/// The `SSLSessionCache` argument of a farm host: our segment plus
/// `name=value` options, rendered in order.
#[derive(Clone, Debug)]
pub(crate) struct FarmArg {
    /// `shm:{dir}/scache(1M)`.
    pub segment: String,
    pub options: Vec<(String, String)>,
}

impl FarmArg {
    /// `shm:{dir}/scache(1M) redis=<url> seal={dir}/farm.key timeout=1s
    /// prefix=farm-test:`. The timeout is generous: on a loaded machine a
    /// healthy Redis must not look hung (the fault tests set their own).
    pub(crate) fn redis(url: &str) -> FarmArg {
        FarmArg::with_remote("redis", url)
    }

    /// As [`FarmArg::redis`] with `redis-cluster=<seeds>`.
    pub(crate) fn cluster(seeds: &str) -> FarmArg {
        FarmArg::with_remote("redis-cluster", seeds)
    }

    fn with_remote(option: &str, value: &str) -> FarmArg {
        FarmArg {
            segment: "shm:{dir}/scache(1M)".into(),
            options: vec![
                (option.into(), value.into()),
                ("seal".into(), format!("{{dir}}/{FARM_KEY_FILE}")),
                ("timeout".into(), "1s".into()),
                ("prefix".into(), FARM_PREFIX.into()),
            ],
        }
    }

    /// Set `name=value` (replacing an earlier `name=`).
    pub(crate) fn set(mut self, name: &str, value: &str) -> FarmArg {
        match self.options.iter_mut().find(|(n, _)| n == name) {
            Some(o) => o.1 = value.into(),
            None => self.options.push((name.into(), value.into())),
        }
        self
    }

    /// Add `name=value` even if `name=` is there (duplicates).
    pub(crate) fn push(mut self, name: &str, value: &str) -> FarmArg {
        self.options.push((name.into(), value.into()));
        self
    }

    /// Drop `name=`.
    pub(crate) fn without(mut self, name: &str) -> FarmArg {
        self.options.retain(|(n, _)| n != name);
        self
    }

    pub(crate) fn render(&self) -> String {
        let mut s = self.segment.clone();
        for (n, v) in &self.options {
            let _ = write!(s, " {n}={v}");
        }
        s
    }

    pub(crate) fn cache(&self) -> SessionCache {
        SessionCache::Raw(self.render())
    }
}

/// Prepare a farm host (`opts` with `arg` as its cache), write `key` (if
/// any) as its `{dir}/farm.key` (mode 0600, owned by the user httpd starts
/// as), and start it.
pub(crate) fn start_farm_host(opts: Options, arg: &FarmArg, key: Option<&[u8]>) -> Httpd {
    let prep = Prepared::new(opts.cache(arg.cache()));
    if let Some(key) = key {
        let path = write_key_file(&prep.dir, FARM_KEY_FILE, key, 0o600);
        prep.give(&path);
    }
    prep.start()
}

impl Httpd {
    /// A farm figure of `server-status?auto`; panics (with diagnostics)
    /// when it is missing.
    pub(crate) fn farm(&mut self, figure: FarmFigure) -> u64 {
        self.figure(figure.key())
    }

    /// The breaker's state from `server-status?auto`.
    pub(crate) fn breaker(&mut self) -> Breaker {
        let s = self.status_auto();
        match s.get(BREAKER_KEY).and_then(|v| Breaker::parse(v)) {
            Some(b) => b,
            None => self.fail(&format!(
                "server-status?auto has no {BREAKER_KEY}: closed|open: {s:?}"
            )),
        }
    }

    /// The error log's breaker-opened lines.
    pub(crate) fn breaker_opened_lines(&self) -> Vec<String> {
        breaker_opened_lines(&self.error_log())
    }
}

/// The Redis key of the session `id_hex` among `keys`.
pub(crate) fn find_key<'a>(keys: &'a [String], prefix: &str, id_hex: &str) -> Option<&'a String> {
    keys.iter().find(|k| is_key_of(k, prefix, id_hex))
}
