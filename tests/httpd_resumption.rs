//! TLS session resumption through the socache provider, against the real
//! Debian apache2 on loopback (see tests/common/mod.rs for the harness).
//!
//! The provider is `shm` (build/mod_socache_shm.so, built by `make module`
//! when missing or stale). `SOCACHE_TEST_PROVIDER=shmcb` runs the same
//! scenarios against stock mod_socache_shmcb for comparison; the tests that
//! concern only our module (argument errors, its status keys) always use `shm`,
//! and the graceful-restart test then only reports what shmcb does.
//!
//! Each test starts its own httpd on its own port and directory.

mod common;

use std::collections::BTreeSet;
use std::thread;
use std::time::Duration;

use common::{
    user_ids, Client, Conn, Httpd, Mpm, Options, Prepared, Provider, Session, SessionCache, Tls,
    CACHE_FILE,
};

fn provider() -> Provider {
    Provider::from_env()
}

/// Sequential resumptions after the first (full) handshake.
const SEQUENTIAL: usize = 6;

fn describe(c: &Conn) -> String {
    format!("client resumed={} log: {}", c.resumed, c.log.line)
}

/// One full handshake makes a session; later connections resume it, one
/// after the other and `mpm.capacity()` at once; the concurrent ones force
/// other processes than the one that made the session to serve them, so
/// the session must have come from the shared cache.
fn resumption(mpm: Mpm, tls: Tls) {
    let mut httpd = Httpd::start(Options::new(provider(), mpm));
    let client = Client::new(tls);

    let first = httpd.connect(&client, None);
    assert_eq!(first.status, 200, "{}", describe(&first));
    assert!(
        !first.resumed && !first.log.resumed,
        "first handshake must be full: {}",
        describe(&first)
    );
    assert_eq!(first.log.protocol, tls.log_name(), "{}", describe(&first));
    let origin = first.log.pid;

    let mut pids = BTreeSet::new();
    for _ in 0..SEQUENTIAL {
        let c = httpd.connect(&client, Some(&first.session));
        assert!(
            c.both_resumed(),
            "sequential resumption failed: {}",
            describe(&c)
        );
        pids.insert(c.log.pid);
    }

    // TLS 1.3: each resumption brings a new ticket; a chain of them resumes too.
    let mut session = first.session.clone();
    for _ in 0..3 {
        let c = httpd.connect(&client, Some(&session));
        assert!(
            c.both_resumed(),
            "chained resumption failed: {}",
            describe(&c)
        );
        pids.insert(c.log.pid);
        session = c.session;
    }

    let n = mpm.capacity();
    let batch = httpd.concurrent(&client, &first.session, n);
    let mut batch_pids = BTreeSet::new();
    for c in &batch {
        assert!(
            c.both_resumed(),
            "concurrent resumption failed: {}",
            describe(c)
        );
        batch_pids.insert(c.log.pid);
    }
    let expect_distinct = match mpm {
        // One connection per child: every held connection has its own child.
        Mpm::Prefork => n,
        // 4 threads per process, and a process accepts only while it has an
        // idle thread: 12 held connections span at least 3 processes.
        Mpm::Event | Mpm::Worker => n / common::THREADS_PER_CHILD,
    };
    assert!(
        batch_pids.len() >= expect_distinct,
        "{n} concurrent connections were served by only {} processes {batch_pids:?} (expected >= {expect_distinct})",
        batch_pids.len()
    );
    pids.extend(&batch_pids);
    let others: Vec<_> = pids.iter().filter(|&&p| p != origin).collect();
    assert!(
        !others.is_empty(),
        "every resumption was served by {origin}, the process that made the session"
    );
    eprintln!(
        "{} {} {}: session made by pid {origin}; resumed by {} processes {pids:?}",
        provider().name(),
        mpm.name(),
        tls.log_name(),
        pids.len()
    );
}

common::mpm_tls_cases!(resumption {
    Prefork => prefork_tls12_resumes_across_children, prefork_tls13_resumes_across_children;
    Event => event_tls12_resumes_across_processes, event_tls13_resumes_across_processes;
    Worker => worker_tls12_resumes_across_processes, worker_tls13_resumes_across_processes;
});

/// `SSLSessionCache none`: mod_ssl uses no provider and nothing resumes,
/// not even on the child that made the session.
#[test]
fn cache_none_nothing_resumes() {
    let mut httpd = Httpd::start(Options::new(provider(), Mpm::Prefork).cache(SessionCache::None));
    for tls in [Tls::V12, Tls::V13] {
        let client = Client::new(tls);
        let first = httpd.connect(&client, None);
        assert!(!first.log.resumed, "{}", describe(&first));
        let why = format!("{} resumed with SSLSessionCache none", tls.log_name());
        for _ in 0..4 {
            httpd.offer(&client, &first.session, false, &why, describe);
        }
    }
}

/// A full handshake on each of `clients`, its session then offered again,
/// which must resume (`when` says in a failure): the sessions.
fn resumed_sessions(httpd: &mut Httpd, clients: &[Client], when: &str) -> Vec<Session> {
    clients
        .iter()
        .map(|client| {
            let first = httpd.connect(client, None);
            let again = httpd.connect(client, Some(&first.session));
            assert!(
                again.both_resumed(),
                "no resumption {when}: {}",
                describe(&again)
            );
            first.session
        })
        .collect()
}

/// `SSLSessionCacheTimeout 2`: a session resumes at once, and 3 s later the
/// cache no longer returns it (a retrieve miss, not a hit OpenSSL refuses).
#[test]
fn cache_timeout_expires_sessions() {
    let mut httpd = Httpd::start(Options::new(provider(), Mpm::Prefork).cache_timeout(2));
    let clients = [Client::new(Tls::V12), Client::new(Tls::V13)];
    let sessions = resumed_sessions(&mut httpd, &clients, "within the timeout");
    thread::sleep(Duration::from_secs(3));
    for (client, session) in clients.iter().zip(&sessions) {
        let hits = httpd.figure("CacheRetrieveHitCount");
        let misses = httpd.figure("CacheRetrieveMissCount");
        // A TLS 1.3 client no longer offers a ticket past its lifetime;
        // refreshing the session's time makes it offer the id anyway.
        let c = httpd.connect(client, Some(&session.refreshed()));
        assert!(
            !c.resumed && !c.log.resumed,
            "an expired session resumed: {}",
            describe(&c)
        );
        assert_eq!(
            httpd.figure("CacheRetrieveHitCount"),
            hits,
            "the cache returned an expired session: {}",
            describe(&c)
        );
        assert!(
            httpd.figure("CacheRetrieveMissCount") > misses,
            "the expired id was not looked up (no retrieve miss): {}",
            describe(&c)
        );
    }
}

/// Sessions made before `apache2 -k graceful` resume after it (ours
/// re-attaches to the live segment). With `SOCACHE_TEST_PROVIDER=shmcb` this
/// only reports what shmcb does (it starts empty after every restart).
fn graceful(mpm: Mpm, cache: SessionCache) {
    let p = provider();
    let mut httpd = Httpd::start(Options::new(p, mpm).cache(cache.clone()));
    let clients = [Client::new(Tls::V12), Client::new(Tls::V13)];
    let sessions = resumed_sessions(&mut httpd, &clients, "before graceful");
    let generation = httpd.generation();
    httpd.graceful();
    assert!(httpd.generation() > generation);
    for round in 1..=2 {
        for (client, session) in clients.iter().zip(&sessions) {
            let c = httpd.connect(client, Some(session));
            match p {
                Provider::Shm => assert!(
                    c.both_resumed(),
                    "a session made before graceful restart #{round} did not resume after it: {}",
                    describe(&c)
                ),
                Provider::Shmcb => eprintln!(
                    "comparison: shmcb after graceful restart #{round}: {} resumed={}",
                    c.log.protocol,
                    c.both_resumed()
                ),
            }
        }
        if round == 1 {
            httpd.graceful();
        }
    }
    if p == Provider::Shm {
        let log = httpd.error_log();
        assert!(
            log.contains("reattached"),
            "no info line about reattaching to the live segment:\n{log}"
        );
    }
    // New sessions still work after the restarts.
    resumed_sessions(&mut httpd, &clients, "after graceful");
    if p == Provider::Shm && matches!(cache, SessionCache::File { .. }) {
        let file = httpd.dir().join(CACHE_FILE);
        assert!(file.exists(), "{} missing while httpd runs", file.display());
        httpd.stop();
        assert!(
            !file.exists(),
            "{} left behind after a full stop",
            file.display()
        );
    }
}

common::test_cases!(graceful {
    graceful_restart_keeps_sessions_prefork_file(
        Mpm::Prefork,
        SessionCache::File { bytes: 512_000 },
    );
    graceful_restart_keeps_sessions_event_anonymous(
        Mpm::Event,
        SessionCache::Raw(provider().name().into()),
    );
});

/// The server-status page (HTML and `?auto`) shows the cache's figures,
/// and they count what happened.
#[test]
fn server_status_shows_cache_figures() {
    let p = provider();
    let mut httpd = Httpd::start(Options::new(p, Mpm::Prefork));
    let before = httpd.status_auto();
    let client = Client::new(Tls::V12);
    let first = httpd.connect(&client, None);
    for _ in 0..3 {
        let c = httpd.connect(&client, Some(&first.session));
        assert!(c.both_resumed(), "{}", describe(&c));
    }
    let after = httpd.status_auto();
    let n = |m: &std::collections::HashMap<String, String>, k: &str| -> u64 {
        m.get(k)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("server-status?auto has no numeric {k}: {m:?}"))
    };
    assert_eq!(
        after.get("CacheType").map(String::as_str),
        Some(p.cache_type()),
        "{after:?}"
    );
    for key in [
        "CacheSharedMemory",
        "CacheCurrentEntries",
        "CacheStoreCount",
        "CacheRetrieveHitCount",
        "CacheRetrieveMissCount",
        "CacheRemoveHitCount",
        "CacheExpireCount",
        "CacheDiscardCount",
        "CacheReplaceCount",
        "CacheRemoveMissCount",
    ] {
        n(&after, key);
    }
    assert!(
        after.contains_key("CacheUsage") && after.contains_key("CacheIndexUsage"),
        "{after:?}"
    );
    assert_eq!(n(&after, "CacheSharedMemory"), 512_000, "{after:?}");
    assert!(n(&after, "CacheCurrentEntries") >= 2, "{after:?}");
    assert!(
        n(&after, "CacheStoreCount") > n(&before, "CacheStoreCount"),
        "{after:?}"
    );
    assert_eq!(
        n(&after, "CacheRetrieveHitCount") - n(&before, "CacheRetrieveHitCount"),
        3,
        "three resumptions are three retrieve hits: {before:?} -> {after:?}"
    );
    assert_eq!(
        n(&after, "CacheRetrieveMissCount"),
        n(&before, "CacheRetrieveMissCount"),
        "{before:?} -> {after:?}"
    );
    if p == Provider::Shm {
        for key in [
            "CacheBytesUsed",
            "CacheBytesFree",
            "CacheLargestFreeBlock",
            "CacheMaxEntrySize",
            "CacheRefusedCount",
            "CacheLockWaits",
            "CacheRecoveries",
            "CacheShards",
            "CacheUnlockedReads",
        ] {
            n(&after, key);
        }
    }

    let html = httpd.get("/server-status").text();
    let want = format!("cache type: <b>{}</b>", p.cache_type());
    assert!(
        html.contains(&want),
        "HTML server-status lacks {want:?}:\n{html}"
    );
    assert!(html.contains("current entries"), "{html}");
}

// ---------------------------------------------------------------------------
// Malformed arguments: `apache2 -t` fails and names the problem (shm only).
// ---------------------------------------------------------------------------

/// `apache2 -t` with `SSLSessionCache <arg>` ({dir}: the instance dir).
fn config_test(arg: &str) -> (bool, String, String) {
    let prep = Prepared::new(
        Options::new(Provider::Shm, Mpm::Prefork).cache(SessionCache::Raw(arg.into())),
    );
    let (ok, out) = prep.config_test();
    (ok, out, prep.dir.display().to_string())
}

fn assert_refused(arg: &str, wanted: &str) {
    let (ok, out, dir) = config_test(arg);
    let wanted = wanted.replace("{dir}", &dir);
    assert!(!ok, "apache2 -t accepted SSLSessionCache {arg}:\n{out}");
    assert!(
        out.contains("SSLSessionCache") && out.contains(&wanted),
        "apache2 -t on SSLSessionCache {arg} should say {wanted:?}, said:\n{out}"
    );
}

#[test]
fn malformed_arguments_fail_config_test() {
    let cases = [
        ("shm:{dir}/run/c(512000", "no closing parenthesis"),
        ("shm:{dir}/run/c(", "no closing parenthesis"),
        ("shm:{dir}/run/c512000)", "no opening parenthesis"),
        ("shm:{dir}/run/c()", "cache size missing"),
        (
            "shm:{dir}/run/c(512000)x",
            "\"x\" after the closing parenthesis",
        ),
        (
            "shm:{dir}/run/c(1)junk",
            "\"junk\" after the closing parenthesis",
        ),
        ("shm:{dir}/run/c(12x)", "cache size not numerical: \"12x\""),
        ("shm:{dir}/run/c(-8192)", "cache size not numerical"),
        ("shm:{dir}/run/c(0)", "must not be zero"),
        ("shm:{dir}/run/c(4096)", "size has to be >= 8192 bytes"),
        ("shm:(8191)", "size has to be >= 8192 bytes"),
        (
            "shm:{dir}/run/c(100000G)",
            "larger than the machine can map",
        ),
        ("shm:{dir}/run/c(99999999999999999999)", "too large"),
        (
            "shm:{dir}/missing/c(512000)",
            "{dir}/missing of the cache file does not exist",
        ),
        // Relative paths resolve against ServerRoot (the instance dir).
        (
            "shm:missing/c",
            "{dir}/missing of the cache file does not exist",
        ),
        ("shm:{dir}/run", "is a directory"),
    ];
    for (arg, wanted) in cases {
        assert_refused(arg, wanted);
    }
}

#[test]
fn valid_arguments_pass_config_test() {
    for arg in [
        "shm",
        "shm:(1M)",
        "shm:{dir}/run/c",
        "shm:{dir}/run/c(512000)",
        "shm:{dir}/run/c(64K)",
        "shm:{dir}/run/c(8192)",
        "shm:run/c(1M)",
    ] {
        let (ok, out, _) = config_test(arg);
        assert!(
            ok && out.contains("Syntax OK"),
            "apache2 -t refused SSLSessionCache {arg}:\n{out}"
        );
    }
}

/// A directory httpd's user cannot write to. As root (which may write
/// anywhere) the config test runs as the unprivileged user instead.
#[test]
fn unwritable_directory_fails_config_test() {
    use std::os::unix::fs::PermissionsExt;
    let prep = Prepared::new(
        Options::new(Provider::Shm, Mpm::Prefork)
            .cache(SessionCache::Raw("shm:{dir}/ro/c(512000)".into())),
    );
    let ro = prep.dir.join("ro");
    std::fs::create_dir(&ro).expect("mkdir ro");
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).expect("chmod 555");
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let user = if root {
        Some(
            user_ids("www-data")
                .or_else(|| user_ids("nobody"))
                .expect("an unprivileged user (www-data or nobody) to run apache2 -t as"),
        )
    } else {
        None
    };
    let (ok, out) = prep.config_test_as(user);
    let _ = std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755));
    assert!(!ok, "apache2 -t accepted an unwritable directory:\n{out}");
    let wanted = format!("{} is not writable", ro.display());
    assert!(
        out.contains(&wanted),
        "apache2 -t should say {wanted:?}, said:\n{out}"
    );
}

// ---------------------------------------------------------------------------
// Segments across restarts and consumers (shm only).
// ---------------------------------------------------------------------------

/// A graceful restart that changes the cache's size starts an empty segment
/// (and says so at info level) instead of reattaching to the old one.
#[test]
fn graceful_restart_with_a_new_size_starts_empty() {
    let mut httpd = Httpd::start(Options::new(Provider::Shm, Mpm::Prefork));
    let client = Client::new(Tls::V12);
    let first = httpd.connect(&client, None);
    let again = httpd.connect(&client, Some(&first.session));
    assert!(again.both_resumed(), "{}", describe(&again));

    httpd.prep.opts.cache = SessionCache::File { bytes: 1 << 20 };
    httpd.prep.write_conf();
    httpd.graceful();
    assert_eq!(httpd.figure("CacheSharedMemory"), 1 << 20);
    let after = httpd.connect(&client, Some(&first.session));
    assert!(
        !after.resumed && !after.log.resumed,
        "a session from the old-size segment resumed: {}",
        describe(&after)
    );
    let log = httpd.error_log();
    assert!(
        log.contains("replaced the segment"),
        "no info line about the replaced segment in the error log:\n{log}"
    );
    let fresh = httpd.connect(&client, None);
    let resumed = httpd.connect(&client, Some(&fresh.session));
    assert!(resumed.both_resumed(), "{}", describe(&resumed));
}

/// Another socache consumer (mod_ssl's OCSP stapling cache) gets its own
/// segment next to the session cache's; both go away on a full stop.
#[test]
fn every_consumer_gets_its_own_segment() {
    let mut httpd = Httpd::start(
        Options::new(Provider::Shm, Mpm::Prefork)
            .extra("SSLUseStapling on\nSSLStaplingCache shm:{dir}/run/stapling(128K)"),
    );
    let session_file = httpd.dir().join(CACHE_FILE);
    let stapling_file = httpd.dir().join("run/stapling");
    for f in [&session_file, &stapling_file] {
        assert!(f.exists(), "{} missing while httpd runs", f.display());
    }
    assert_eq!(
        std::fs::metadata(&stapling_file).expect("stat").len(),
        128 * 1024
    );
    let log = httpd.error_log();
    assert!(
        log.contains("\"mod_ssl-sess\"") && log.contains("\"mod_ssl-staple\""),
        "expected an info line per cache (mod_ssl-sess, mod_ssl-staple):\n{log}"
    );
    let client = Client::new(Tls::V13);
    let first = httpd.connect(&client, None);
    let again = httpd.connect(&client, Some(&first.session));
    assert!(again.both_resumed(), "{}", describe(&again));
    httpd.stop();
    for f in [&session_file, &stapling_file] {
        assert!(!f.exists(), "{} left behind after a full stop", f.display());
    }
}
