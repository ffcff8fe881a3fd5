//! What to run: provider, MPM, cache argument, options.

use super::*;

/// The socache provider behind `SSLSessionCache`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Provider {
    /// Ours: `build/mod_socache_shm.so`, provider `shm`.
    Shm,
    /// Stock mod_socache_shmcb, provider `shmcb`: the comparison.
    Shmcb,
}

impl Provider {
    /// `SOCACHE_TEST_PROVIDER` (`shm` or `shmcb`), `shm` when unset.
    pub(crate) fn from_env() -> Provider {
        match std::env::var("SOCACHE_TEST_PROVIDER").as_deref() {
            Err(_) | Ok("") | Ok("shm") => Provider::Shm,
            Ok("shmcb") => Provider::Shmcb,
            Ok(other) => panic!("SOCACHE_TEST_PROVIDER={other:?}: expected shm or shmcb"),
        }
    }

    /// The name in `SSLSessionCache <name>:<arg>`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Provider::Shm => "shm",
            Provider::Shmcb => "shmcb",
        }
    }

    /// The `CacheType` its status prints.
    pub(crate) fn cache_type(self) -> &'static str {
        match self {
            Provider::Shm => "SHM",
            Provider::Shmcb => "SHMCB",
        }
    }
}

/// The multi-processing module.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mpm {
    /// One connection per child process; 8 children at start.
    Prefork,
    /// 3 processes at start, 4 threads each.
    Event,
    /// 3 processes at start, 4 threads each.
    Worker,
}

impl Mpm {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Mpm::Prefork => "prefork",
            Mpm::Event => "event",
            Mpm::Worker => "worker",
        }
    }

    /// Connections that can be held open at once without waiting for a
    /// new process (and that force more than one process to serve them).
    pub(crate) fn capacity(self) -> usize {
        match self {
            Mpm::Prefork => PREFORK_CHILDREN,
            Mpm::Event | Mpm::Worker => THREADED_PROCESSES * THREADS_PER_CHILD,
        }
    }

    pub(crate) fn directives(self) -> String {
        match self {
            Mpm::Prefork => format!(
                "StartServers {n}\nMinSpareServers {n}\nMaxSpareServers {max}\n\
                 ServerLimit {max}\nMaxRequestWorkers {max}\nMaxConnectionsPerChild 0\n",
                n = PREFORK_CHILDREN,
                max = 2 * PREFORK_CHILDREN,
            ),
            Mpm::Event | Mpm::Worker => format!(
                "StartServers {p}\nServerLimit {limit}\nThreadLimit {t}\nThreadsPerChild {t}\n\
                 MinSpareThreads {t}\nMaxSpareThreads {max}\nMaxRequestWorkers {max}\n\
                 MaxConnectionsPerChild 0\n",
                p = THREADED_PROCESSES,
                limit = THREADED_PROCESSES + 1,
                t = THREADS_PER_CHILD,
                max = (THREADED_PROCESSES + 1) * THREADS_PER_CHILD,
            ),
        }
    }
}

/// Children prefork starts with (and keeps idle).
pub(crate) const PREFORK_CHILDREN: usize = 8;
/// Processes event/worker start with.
pub(crate) const THREADED_PROCESSES: usize = 3;
/// Threads per event/worker process: small, so 8 held connections need
/// at least two processes.
pub(crate) const THREADS_PER_CHILD: usize = 4;

/// A TLS protocol version, pinned on both client and connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tls {
    V12,
    V13,
}

impl Tls {
    pub(crate) fn version(self) -> SslVersion {
        match self {
            Tls::V12 => SslVersion::TLS1_2,
            Tls::V13 => SslVersion::TLS1_3,
        }
    }

    /// `%{SSL_PROTOCOL}x` for it.
    pub(crate) fn log_name(self) -> &'static str {
        match self {
            Tls::V12 => "TLSv1.2",
            Tls::V13 => "TLSv1.3",
        }
    }
}

/// The `SSLSessionCache` argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum SessionCache {
    /// `<provider>:<dir>/run/ssl_scache(<bytes>)`.
    File { bytes: u64 },
    /// `none`.
    None,
    /// Written as is after `{dir}` is replaced by the instance directory.
    Raw(String),
}

/// The segment file of [`SessionCache::File`], relative to the instance dir.
pub(crate) const CACHE_FILE: &str = "run/ssl_scache";

/// What an instance runs. `{dir}` in `cache`/`extra` is the instance directory.
#[derive(Clone, Debug)]
pub(crate) struct Options {
    pub provider: Provider,
    pub mpm: Mpm,
    pub cache: SessionCache,
    /// `SSLProtocol`.
    pub protocol: String,
    /// `SSLSessionCacheTimeout`, seconds.
    pub cache_timeout: u32,
    /// `LogLevel`.
    pub log_level: String,
    /// Appended to the configuration.
    pub extra: String,
    /// `SSLSessionTickets on` (default off: the session cache tests want
    /// every resumption to go through the cache).
    pub tickets: bool,
    /// Start httpd (and run `-t`, `-k graceful`) as this (uid, gid)
    /// instead of as ourselves: an unprivileged server, which ignores
    /// `User` (none is written). The instance directory is then that
    /// user's. We must be root.
    pub start_as: Option<(u32, u32)>,
}

impl Options {
    /// TLS 1.2 and 1.3, a 512000-byte file-backed cache, timeout 300 s.
    pub(crate) fn new(provider: Provider, mpm: Mpm) -> Options {
        Options {
            provider,
            mpm,
            cache: SessionCache::File { bytes: 512_000 },
            protocol: "-all +TLSv1.2 +TLSv1.3".into(),
            cache_timeout: 300,
            log_level: "info".into(),
            extra: String::new(),
            tickets: false,
            start_as: None,
        }
    }

    /// `SSLSessionTickets on`: clients resume from stateless tickets.
    pub(crate) fn session_tickets(mut self, on: bool) -> Options {
        self.tickets = on;
        self
    }

    /// See [`Options::start_as`].
    pub(crate) fn start_as(mut self, user: Option<(u32, u32)>) -> Options {
        self.start_as = user;
        self
    }

    pub(crate) fn cache(mut self, cache: SessionCache) -> Options {
        self.cache = cache;
        self
    }

    pub(crate) fn protocol(mut self, protocol: &str) -> Options {
        self.protocol = protocol.into();
        self
    }

    pub(crate) fn cache_timeout(mut self, seconds: u32) -> Options {
        self.cache_timeout = seconds;
        self
    }

    pub(crate) fn extra(mut self, lines: &str) -> Options {
        self.extra.push_str(lines);
        self.extra.push('\n');
        self
    }
}

/// A parametrised test's table: one `#[test]` per row, named by the row,
/// calling `$run` with the row's arguments (and carrying the row's doc
/// comment and other attributes).
///
/// ```ignore
/// test_cases!(resumption {
///     prefork_tls12_resumes_across_children(Mpm::Prefork, Tls::V12);
///     prefork_tls13_resumes_across_children(Mpm::Prefork, Tls::V13);
/// });
/// ```
// Not every test crate uses it (see the module-wide dead_code allowance).
#[allow(unused_macros)]
macro_rules! test_cases {
    ($run:ident { $($(#[$meta:meta])* $name:ident($($arg:expr),* $(,)?);)* }) => {
        $(
            $(#[$meta])*
            #[test]
            fn $name() {
                $run($($arg),*);
            }
        )*
    };
}
#[allow(unused_imports)]
pub(crate) use test_cases;

/// A test over the MPM × TLS version matrix: per row, an MPM (a [`Mpm`]
/// variant) and its TLS 1.2 and TLS 1.3 tests, each a `#[test]` calling
/// `$run(mpm, tls)`.
///
/// ```ignore
/// mpm_tls_cases!(resumption {
///     Prefork => prefork_tls12_resumes_across_children, prefork_tls13_resumes_across_children;
/// });
/// ```
// Not every test crate uses it (see the module-wide dead_code allowance).
#[allow(unused_macros)]
macro_rules! mpm_tls_cases {
    ($run:ident { $($mpm:ident => $tls12:ident, $tls13:ident;)* }) => {
        $(
            #[test]
            fn $tls12() {
                $run($crate::common::Mpm::$mpm, $crate::common::Tls::V12);
            }

            #[test]
            fn $tls13() {
                $run($crate::common::Mpm::$mpm, $crate::common::Tls::V13);
            }
        )*
    };
}
#[allow(unused_imports)]
pub(crate) use mpm_tls_cases;
