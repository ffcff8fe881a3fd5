//! The farm tier: Redis shared by the hosts of a server farm behind each
//! host's own segment, values sealed with a farm key. Against the real
//! Debian apache2 using `shm` and the real Debian redis-server, on loopback
//! (tests/common is the harness; tests/common/farm.rs holds every name the
//! tests read from the module: status figures, log lines, Redis keys).
//!
//! 1. A session made on host A resumes on host B (TLS 1.2 and 1.3 with
//!    `SSLSessionTickets off`, prefork and event), and in a Redis Cluster.
//! 2. A local hit sends no command to Redis.
//! 3. A hung (SIGSTOP) or dead (SIGKILL) Redis costs no handshake: each
//!    stays within a bound derived from `timeout=`; the breaker's opening is
//!    logged once per outage; after a restart, cross-host resumption returns.
//!    A dead cluster node costs only its slots.
//! 4. A value altered in Redis, sealed with another key, or moved to another
//!    session's key is a full handshake, counted, never a crash; no master
//!    key is readable in Redis; a second key record opens but does not
//!    seal (rotation); another `prefix=` is another farm.
//! 5. Arguments that cannot work fail `apache2 -t` naming the problem.
//!
//! Each test has its own Redis and its own hosts (own ports, directories,
//! segments), so the tests run in parallel threads. Bounds are generous:
//! these are not speed tests.
//!
//! Cross-host resumption needs the same session id context on every host:
//! mod_ssl derives it from `ServerName` and the vhost's port; the harness's
//! hosts are the main server with `ServerName localhost` (no port, so 443
//! for every host) and the same certificate, whatever port they listen on.

mod common;

use std::collections::HashMap;
use std::thread;
use std::time::{Duration, Instant};

use common::{
    crash_lines, farm_key_name, new_farm_key, start_farm_host, write_key_file, Breaker, Client,
    Conn, FarmArg, FarmFigure, Httpd, Mpm, Options, Prepared, Provider, RedisCluster, RedisServer,
    Resp, Session, SessionCache, Tls, FARM_KEY_FILE, FARM_PREFIX, WAIT,
};

/// Sessions per cross-host run.
const SESSIONS: usize = 100;
/// Of which at least this many must resume on the other host.
const RESUMED_AT_LEAST: usize = 99;

/// How long a store may take to reach Redis: it is forwarded
/// asynchronously, so a test waits for the key before it asks host B.
const FORWARD_WAIT: Duration = Duration::from_secs(10);

/// The `timeout=` of the hung-Redis test (the others keep [`FarmArg`]'s
/// generous 1 s).
const TIMEOUT: &str = "50ms";

/// Bound of one connection (handshake and request) while Redis is hung or
/// dead: 60 × `timeout=`, for a loaded machine.
const FAULT_BOUND: Duration = Duration::from_secs(3);

/// How long cross-host resumption may take to come back after Redis does:
/// the breaker's longest backoff is 5 s.
const RECOVERY: Duration = Duration::from_secs(20);

fn options(mpm: Mpm) -> Options {
    Options::new(Provider::Shm, mpm)
}

fn describe(c: &Conn) -> String {
    format!(
        "status {} client resumed={} log: {}",
        c.status, c.resumed, c.log.line
    )
}

/// Hosts A and B: own ports, directories and segments; one Redis; the same
/// farm key and prefix.
fn two_hosts(arg: &FarmArg, mpm: Mpm) -> (Httpd, Httpd) {
    let key = new_farm_key();
    let a = start_farm_host(options(mpm), arg, Some(&key));
    let b = start_farm_host(options(mpm), arg, Some(&key));
    (a, b)
}

/// `n` full handshakes on `host`: their sessions.
fn full_handshakes(host: &mut Httpd, client: &Client, n: usize) -> Vec<Session> {
    (0..n)
        .map(|_| host.new_session(client, describe).session)
        .collect()
}

fn ids(sessions: &[Session]) -> Vec<String> {
    sessions.iter().map(Session::server_id_hex).collect()
}

/// Wait until the sessions' stores have reached Redis; their keys. Panics
/// unless at least `at_least` did within [`FORWARD_WAIT`].
fn in_redis(
    redis: &RedisServer,
    sessions: &[Session],
    at_least: usize,
    what: &str,
) -> Vec<Option<String>> {
    let keys = redis.wait_for_sessions(FARM_PREFIX, &ids(sessions), FORWARD_WAIT);
    let n = keys.iter().flatten().count();
    if n < at_least {
        let mut there = redis.keys();
        there.truncate(10);
        panic!(
            "{what}: {n} of {} sessions reached Redis within {FORWARD_WAIT:?} (needed {at_least}); \
             keys there include {there:?}; looking for ids like {:?} under {FARM_PREFIX:?}",
            sessions.len(),
            sessions.first().map(Session::server_id_hex)
        );
    }
    keys
}

fn calls(stats: &HashMap<String, u64>, command: &str) -> u64 {
    stats.get(command).copied().unwrap_or(0)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

// ---------------------------------------------------------------------------
// 1. A session made on A resumes on B.
// ---------------------------------------------------------------------------

/// [`SESSIONS`] full handshakes on A; once their stores are in Redis, each
/// session is offered to B, which never saw it: at least
/// [`RESUMED_AT_LEAST`] resume, and B counts them as remote hits.
fn cross_host(mpm: Mpm, tls: Tls) {
    let redis = RedisServer::start();
    let (mut a, mut b) = two_hosts(&FarmArg::redis(&redis.url()), mpm);
    let client = Client::new(tls);
    let sessions = full_handshakes(&mut a, &client, SESSIONS);
    in_redis(&redis, &sessions, RESUMED_AT_LEAST, "made on A");
    let hits_before = b.farm(FarmFigure::RemoteHits);
    let check = |c: &Conn| {
        assert_eq!(c.status, 200, "{}", describe(c));
        assert_eq!(c.log.protocol, tls.log_name(), "{}", describe(c));
    };
    let (resumed, not) = b.resume_each(&client, &sessions, check, describe);
    assert!(
        resumed >= RESUMED_AT_LEAST,
        "{} {}: {resumed} of {SESSIONS} sessions made on A resumed on B; e.g. {not:#?}",
        mpm.name(),
        tls.log_name()
    );
    let hits = b.farm(FarmFigure::RemoteHits) - hits_before;
    assert!(
        hits >= resumed as u64,
        "B resumed {resumed} sessions it never made but counts {hits} remote hits"
    );
    eprintln!(
        "{} {}: {resumed}/{SESSIONS} resumed across hosts",
        mpm.name(),
        tls.log_name()
    );
}

common::mpm_tls_cases!(cross_host {
    Prefork => prefork_tls12_resumes_across_hosts, prefork_tls13_resumes_across_hosts;
    Event => event_tls12_resumes_across_hosts, event_tls13_resumes_across_hosts;
});

// ---------------------------------------------------------------------------
// 2. A local hit sends nothing to Redis.
// ---------------------------------------------------------------------------

/// After a cross-host warm-up (B's first resumption of each session is a
/// local miss: one GET each, counted by Redis), resuming on A (which made
/// the sessions) and on B (which copied them) sends no GET; for TLS 1.2,
/// whose resumptions store nothing, no command at all but SET (a late,
/// asynchronous forward would be one).
#[test]
fn a_local_hit_sends_nothing_to_redis() {
    const N: usize = 5;
    const ROUNDS: usize = 4;
    let redis = RedisServer::start();
    let (mut a, mut b) = two_hosts(&FarmArg::redis(&redis.url()), Mpm::Prefork);
    for tls in [Tls::V12, Tls::V13] {
        let client = Client::new(tls);
        let sessions = full_handshakes(&mut a, &client, N);
        in_redis(&redis, &sessions, N, "made on A");
        let before = redis.commandstats();
        for s in &sessions {
            let c = b.connect(&client, Some(s));
            assert!(c.both_resumed(), "warm-up on B: {}", describe(&c));
        }
        let warm = redis.commandstats();
        assert!(
            calls(&warm, "get") >= calls(&before, "get") + N as u64,
            "{}: B's {N} local misses sent {} GETs (expected one each)",
            tls.log_name(),
            calls(&warm, "get") - calls(&before, "get")
        );
        for _ in 0..ROUNDS {
            for s in &sessions {
                for host in [&mut a, &mut b] {
                    let c = host.connect(&client, Some(s));
                    assert!(c.both_resumed(), "a local hit: {}", describe(&c));
                }
            }
        }
        let after = redis.commandstats();
        assert_eq!(
            calls(&after, "get"),
            calls(&warm, "get"),
            "{}: {} local hits sent GETs to Redis",
            tls.log_name(),
            2 * N * ROUNDS
        );
        if tls == Tls::V12 {
            // Ours: INFO (commandstats) and KEYS (in_redis, before `warm`);
            // PING: the warm-up of children prefork starts meanwhile
            // (`Farm::warm_up`, at child_init, not a lookup).
            let changed: Vec<_> = after
                .iter()
                .filter(|(cmd, _)| !["info", "keys", "set", "ping"].contains(&cmd.as_str()))
                .filter(|(cmd, &n)| n != calls(&warm, cmd))
                .collect();
            assert!(
                changed.is_empty(),
                "TLS 1.2 local hits sent commands to Redis: {changed:?} (before: {warm:?})"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// 3. A hung or dead Redis costs no handshake.
// ---------------------------------------------------------------------------

/// One outage of Redis, as A must show it.
struct Outage {
    /// Names the outage in every message: "Redis stopped".
    when: &'static str,
    /// The figure A counts the outage's failures in, and their name.
    counted: (FarmFigure, &'static str),
    /// Breaker-opened lines in A's error log by the outage's end (every
    /// outage so far counts), and what a different number means.
    opened: (usize, &'static str),
    /// A's breaker by the outage's end where that is sure, and its message.
    breaker: Option<(Breaker, &'static str)>,
}

/// Connections to A while Redis is unusable, each within [`FAULT_BOUND`]:
/// a new full handshake, a resumption of A's own session (a local hit), and
/// an offer of a session only Redis knows (a local miss: Redis would be
/// asked, the breaker stops that). `rounds` of them, 200 ms apart, so the
/// breaker's backoff ends and it probes several times meanwhile. Then A's
/// error log, breaker and figures as `outage` says.
fn unusable_redis_rounds(
    a: &mut Httpd,
    client: &Client,
    own: &Session,
    remote: &Session,
    outage: &Outage,
) {
    const ROUNDS: usize = 15;
    let when = outage.when;
    let (figure, counted) = outage.counted;
    let before = a.farm(figure);
    let mut slowest = Duration::ZERO;
    for round in 0..ROUNDS {
        let cases: [(Option<&Session>, &str, bool); 3] = [
            (None, "a new full handshake", false),
            (Some(own), "a local resumption", true),
            (Some(remote), "a local miss", false),
        ];
        for (session, what, must_resume) in cases {
            let (c, took) = a.connect_timed(client, session, WAIT);
            slowest = slowest.max(took);
            assert_eq!(
                c.status,
                200,
                "{when}, round {round}, {what}: {}",
                describe(&c)
            );
            assert!(
                took < FAULT_BOUND,
                "{when}, round {round}: {what} took {took:?} (bound {FAULT_BOUND:?}, timeout={TIMEOUT})"
            );
            if must_resume {
                assert!(c.both_resumed(), "{when}, {what}: {}", describe(&c));
            }
        }
        thread::sleep(Duration::from_millis(200));
    }
    eprintln!("{when}: slowest connection {slowest:?}");
    let opened = a.breaker_opened_lines();
    let (lines, why) = outage.opened;
    assert_eq!(opened.len(), lines, "{when}: {why}: {opened:#?}");
    if let Some((state, why)) = outage.breaker {
        assert_eq!(a.breaker(), state, "{why}");
    }
    assert!(a.farm(figure) > before, "{when}: no {counted} counted");
}

/// Poll until `b`'s new sessions resume on `a` (bounded by [`RECOVERY`]);
/// how long it took.
fn cross_host_back(
    a: &mut Httpd,
    b: &mut Httpd,
    redis: &RedisServer,
    client: &Client,
    when: &str,
) -> Duration {
    let started = Instant::now();
    loop {
        let s = b.connect(client, None).session;
        let stored =
            redis.wait_for_sessions(FARM_PREFIX, &[s.server_id_hex()], Duration::from_secs(2));
        if stored[0].is_some() {
            let c = a.connect(client, Some(&s));
            assert_eq!(c.status, 200, "{when}: {}", describe(&c));
            if c.both_resumed() {
                return started.elapsed();
            }
        }
        if started.elapsed() > RECOVERY {
            a.fail(&format!(
                "{when}: no session made on B resumed on A within {RECOVERY:?}"
            ));
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// After an outage, `when` it ended: cross-host resumption is back (how
/// soon, printed) and A's breaker is closed.
fn back_across_hosts(
    a: &mut Httpd,
    b: &mut Httpd,
    redis: &RedisServer,
    client: &Client,
    when: &str,
) {
    let took = cross_host_back(a, b, redis, client, when);
    eprintln!("cross-host resumption back {took:?} {when}");
    assert_eq!(a.breaker(), Breaker::Closed, "breaker {when}");
}

/// Redis SIGSTOPped (hung: connects succeed, nothing answers), then
/// SIGCONTed, then SIGKILLed (refused), then restarted: A keeps serving
/// within bounds throughout; its error log says the breaker opened once per
/// outage (the breaker is shared by A's children, prefork's 8 of them);
/// cross-host resumption comes back after each.
#[test]
fn a_hung_or_dead_redis_costs_no_handshake() {
    let mut redis = RedisServer::start();
    let arg = FarmArg::redis(&redis.url()).set("timeout", TIMEOUT);
    let (mut a, mut b) = two_hosts(&arg, Mpm::Prefork);
    let client = Client::new(Tls::V12);
    let own = a.connect(&client, None).session;
    let remote = b.connect(&client, None).session;
    in_redis(
        &redis,
        &[own.clone(), remote.clone()],
        2,
        "before the faults",
    );
    assert_eq!(a.breaker(), Breaker::Closed, "breaker before the faults");

    redis.stop();
    let stopped = Outage {
        when: "Redis stopped",
        counted: (FarmFigure::Timeouts, "timeout"),
        opened: (1, "the breaker's opening should be logged exactly once"),
        breaker: Some((Breaker::Open, "breaker while Redis is stopped")),
    };
    unusable_redis_rounds(&mut a, &client, &own, &remote, &stopped);

    redis.cont();
    back_across_hosts(&mut a, &mut b, &redis, &client, "after SIGCONT");

    let remote = b.connect(&client, None).session;
    in_redis(&redis, std::slice::from_ref(&remote), 1, "before the kill");
    redis.kill();
    let killed = Outage {
        when: "Redis killed",
        counted: (FarmFigure::Errors, "error"),
        opened: (2, "one more breaker-opened line expected"),
        breaker: None,
    };
    unusable_redis_rounds(&mut a, &client, &own, &remote, &killed);

    redis.restart();
    back_across_hosts(&mut a, &mut b, &redis, &client, "after the restart");
    for h in [&mut a, &mut b] {
        h.check_alive("after the faults");
        let crashes = crash_lines(&h.error_log());
        assert!(crashes.is_empty(), "{crashes:#?}");
    }
}

/// A graceful restart keeps the farm tier working: the segment (and its
/// breaker and counters) is reattached, the new children connect on their
/// own, and sessions made before it resume on the restarted host (from its
/// segment) and after it on the other host (through Redis).
#[test]
fn a_graceful_restart_keeps_the_farm_tier() {
    let redis = RedisServer::start();
    let (mut a, mut b) = two_hosts(&FarmArg::redis(&redis.url()), Mpm::Event);
    let client = Client::new(Tls::V12);
    let before = full_handshakes(&mut a, &client, 10);
    in_redis(&redis, &before, 10, "before the restart");
    let sent = a.farm(FarmFigure::StoresSent);
    a.graceful();
    assert!(
        a.farm(FarmFigure::StoresSent) >= sent,
        "the tier's counters live in the reattached segment"
    );
    for s in &before {
        let c = a.connect(&client, Some(s));
        assert!(c.both_resumed(), "A after its restart: {}", describe(&c));
    }
    let after = full_handshakes(&mut a, &client, 10);
    in_redis(&redis, &after, 10, "made by A's new children");
    for s in &after {
        let c = b.connect(&client, Some(s));
        assert!(c.both_resumed(), "on B: {}", describe(&c));
    }
    a.check_alive("after the graceful restart");
    let crashes = crash_lines(&a.error_log());
    assert!(crashes.is_empty(), "{crashes:#?}");
}

// ---------------------------------------------------------------------------
// 4. Values that must not open, and what Redis holds.
// ---------------------------------------------------------------------------

/// Offer `session` to `b`, a host that must not open its value: a full
/// handshake that succeeds, one more seal failure counted; `b` alive, no
/// child crashed.
fn refused_on(b: &mut Httpd, client: &Client, session: &Session, what: &str) {
    let before = b.farm(FarmFigure::SealFailures);
    let c = b.connect(client, Some(session));
    assert_eq!(c.status, 200, "{what}: {}", describe(&c));
    assert!(
        !c.resumed && !c.log.resumed,
        "{what}: resumed from a value that should not open: {}",
        describe(&c)
    );
    let after = b.farm(FarmFigure::SealFailures);
    assert!(
        after > before,
        "{what}: FarmSealFailures stayed at {before}"
    );
    b.check_alive(what);
    let crashes = crash_lines(&b.error_log());
    assert!(crashes.is_empty(), "{what}: {crashes:#?}");
}

/// Hosts A and B (prefork) on `redis`; `n` TLS 1.2 full handshakes on A,
/// each waited for in Redis: A, B, the client, the sessions and their keys
/// (as [`in_redis`]).
fn in_redis_from_a(
    redis: &RedisServer,
    n: usize,
) -> (Httpd, Httpd, Client, Vec<Session>, Vec<Option<String>>) {
    let (mut a, b) = two_hosts(&FarmArg::redis(&redis.url()), Mpm::Prefork);
    let client = Client::new(Tls::V12);
    let sessions = full_handshakes(&mut a, &client, n);
    let keys = in_redis(redis, &sessions, n, "made on A");
    (a, b, client, sessions, keys)
}

fn key_of(keys: &[Option<String>], i: usize) -> &str {
    keys[i].as_deref().expect("in Redis (checked by in_redis)")
}

/// A value altered in Redis: one byte flipped in the middle (SETRANGE), its
/// last byte flipped, cut to half its length. Each is a full handshake on
/// B, counted as a seal failure; an untouched session still resumes.
#[test]
fn an_altered_value_is_a_full_handshake() {
    let redis = RedisServer::start();
    let (_a, mut b, client, sessions, keys) = in_redis_from_a(&redis, 4);
    let value = |i: usize| redis.get(key_of(&keys, i)).expect("value in Redis");

    let v = value(0);
    let mid = v.len() / 2;
    let r = redis.command(&[
        b"SETRANGE",
        key_of(&keys, 0).as_bytes(),
        mid.to_string().as_bytes(),
        &[v[mid] ^ 0x01],
    ]);
    assert_eq!(r, Resp::Int(v.len() as i64), "SETRANGE");
    assert_ne!(value(0), v, "SETRANGE changed nothing");
    refused_on(
        &mut b,
        &client,
        &sessions[0],
        "a byte flipped in the middle",
    );

    let v = value(1);
    let last = v.len() - 1;
    redis.command(&[
        b"SETRANGE",
        key_of(&keys, 1).as_bytes(),
        last.to_string().as_bytes(),
        &[v[last] ^ 0x80],
    ]);
    refused_on(&mut b, &client, &sessions[1], "the last byte flipped");

    let v = value(2);
    redis.set(key_of(&keys, 2), &v[..v.len() / 2]);
    refused_on(&mut b, &client, &sessions[2], "cut to half its length");

    let c = b.connect(&client, Some(&sessions[3]));
    assert!(
        c.both_resumed(),
        "an untouched value did not resume on B: {}",
        describe(&c)
    );
}

/// Host B with another farm key: values A sealed do not open on B.
#[test]
fn a_value_sealed_with_another_key_is_a_full_handshake() {
    let redis = RedisServer::start();
    let arg = FarmArg::redis(&redis.url());
    let mut a = start_farm_host(options(Mpm::Prefork), &arg, Some(&new_farm_key()));
    let mut b = start_farm_host(options(Mpm::Prefork), &arg, Some(&new_farm_key()));
    for tls in [Tls::V12, Tls::V13] {
        let client = Client::new(tls);
        let sessions = full_handshakes(&mut a, &client, 3);
        in_redis(&redis, &sessions, 3, "made on A");
        for s in &sessions {
            refused_on(
                &mut b,
                &client,
                s,
                &format!("{}: sealed with A's key", tls.log_name()),
            );
        }
        // A's own sessions still resume on A.
        let c = a.connect(&client, Some(&sessions[0]));
        assert!(c.both_resumed(), "{}", describe(&c));
    }
}

/// A valid value under another session's key: COPY one session's value over
/// another's key, RENAME a third's onto a fourth's. The seal binds the
/// value to its key, so the moved ones do not open; the originals (COPY
/// leaves one) still resume.
#[test]
fn a_value_moved_to_another_key_is_a_full_handshake() {
    let redis = RedisServer::start();
    let (_a, mut b, client, s, keys) = in_redis_from_a(&redis, 4);
    let k = |i: usize| key_of(&keys, i).as_bytes();

    let r = redis.command(&[b"COPY", k(0), k(1), b"REPLACE"]);
    assert_eq!(r, Resp::Int(1), "COPY");
    refused_on(&mut b, &client, &s[1], "another session's value (COPY)");
    let c = b.connect(&client, Some(&s[0]));
    assert!(c.both_resumed(), "the COPY's source: {}", describe(&c));

    let r = redis.command(&[b"RENAME", k(2), k(3)]);
    assert_eq!(r, Resp::Simple("OK".into()), "RENAME");
    refused_on(&mut b, &client, &s[3], "another session's value (RENAME)");
}

/// Key rotation: a key file of two records (new, then old) seals with the
/// first and opens with either. Host C has [new, old], host A [old]: A's
/// sessions resume on C; C's (sealed with the new key) do not open on A.
#[test]
fn a_second_key_record_opens_but_does_not_seal() {
    let redis = RedisServer::start();
    let arg = FarmArg::redis(&redis.url());
    let (old, new) = (new_farm_key(), new_farm_key());
    let mut a = start_farm_host(options(Mpm::Prefork), &arg, Some(&old));
    let mut c = start_farm_host(options(Mpm::Prefork), &arg, Some(&[new, old].concat()));
    let client = Client::new(Tls::V12);
    let from_a = full_handshakes(&mut a, &client, 3);
    let from_c = full_handshakes(&mut c, &client, 3);
    in_redis(
        &redis,
        &[from_a.clone(), from_c.clone()].concat(),
        6,
        "made on A and C",
    );
    for s in &from_a {
        let r = c.connect(&client, Some(s));
        assert!(
            r.both_resumed(),
            "a value sealed with the old key (A's only record) did not open on C, \
             whose second record it is: {}",
            describe(&r)
        );
    }
    for s in &from_c {
        refused_on(&mut a, &client, s, "sealed with C's new key, unknown to A");
    }
}

/// `prefix=` separates farms sharing one Redis: host D (another prefix)
/// finds none of A's sessions (a remote miss each), and its keys are under
/// its own prefix.
#[test]
fn another_prefix_is_another_farm() {
    let redis = RedisServer::start();
    let key = new_farm_key();
    let mut a = start_farm_host(
        options(Mpm::Prefork),
        &FarmArg::redis(&redis.url()),
        Some(&key),
    );
    let other = "other-farm:";
    let mut d = start_farm_host(
        options(Mpm::Prefork),
        &FarmArg::redis(&redis.url()).set("prefix", other),
        Some(&key),
    );
    let client = Client::new(Tls::V12);
    let from_a = full_handshakes(&mut a, &client, 3);
    in_redis(&redis, &from_a, 3, "made on A");
    let misses = d.farm(FarmFigure::RemoteMisses);
    for s in &from_a {
        let r = d.connect(&client, Some(s));
        assert!(
            r.status == 200 && !r.resumed && !r.log.resumed,
            "a session of the {FARM_PREFIX:?} farm resumed in the {other:?} farm: {}",
            describe(&r)
        );
    }
    assert!(
        d.farm(FarmFigure::RemoteMisses) >= misses + 3,
        "D did not look A's sessions up under its own prefix (no remote misses)"
    );
    let from_d = full_handshakes(&mut d, &client, 1);
    let found = redis.wait_for_sessions(other, &ids(&from_d), FORWARD_WAIT);
    assert!(
        found[0].is_some(),
        "D's session is not under {other:?}: {:?}",
        redis.keys()
    );
}

/// Every value in Redis, TLS 1.2 and 1.3, made on A and on B (B's new TLS
/// 1.3 tickets from resumptions too), is searched for every session's
/// master key (TLS 1.3: resumption PSK) as the client knows it: none is
/// there. The Redis keys are `{prefix}mod_ssl-sess:{hex id}`. Control:
/// with `seal=off` the same search finds the master key, so the search
/// would see one; and that host's error log warns that secrets sit in
/// Redis in clear.
#[test]
fn redis_holds_no_master_key() {
    let redis = RedisServer::start();
    let (mut a, mut b) = two_hosts(&FarmArg::redis(&redis.url()), Mpm::Prefork);
    let mut sessions = Vec::new();
    for tls in [Tls::V12, Tls::V13] {
        let client = Client::new(tls);
        for s in full_handshakes(&mut a, &client, 10) {
            let c = b.connect(&client, Some(&s));
            assert!(c.both_resumed(), "{}", describe(&c));
            sessions.push(s);
            if tls == Tls::V13 {
                sessions.push(c.session);
            }
        }
    }
    let keys = in_redis(&redis, &sessions, sessions.len(), "made on A and B");
    let id = sessions[0].server_id_hex();
    let want = farm_key_name(FARM_PREFIX, &id);
    assert_eq!(
        keys[0].as_deref(),
        Some(want.as_str()),
        "the Redis key of session {id}"
    );
    let all = redis.keys();
    assert!(all.len() >= sessions.len(), "{} keys in Redis", all.len());
    let master_keys: Vec<Vec<u8>> = sessions.iter().map(Session::master_key).collect();
    for key in &all {
        let Some(value) = redis.get(key) else {
            continue; // Expired or deleted meanwhile.
        };
        assert!(!value.is_empty(), "empty value at {key}");
        for (s, mk) in sessions.iter().zip(&master_keys) {
            assert!(
                find(&value, mk).is_none(),
                "the master key of {s:?} is readable in Redis at {key}"
            );
        }
    }

    let clear = RedisServer::start();
    let mut c = start_farm_host(
        options(Mpm::Prefork),
        &FarmArg::redis(&clear.url()).set("seal", "off"),
        None,
    );
    let client = Client::new(Tls::V12);
    let s = full_handshakes(&mut c, &client, 1);
    let k = in_redis(&clear, &s, 1, "seal=off");
    let value = clear.get(key_of(&k, 0)).expect("value");
    assert!(
        find(&value, &s[0].master_key()).is_some(),
        "control: with seal=off the master key should be in the value (is the search blind?)"
    );
    let warned = c
        .error_log()
        .lines()
        .any(|l| l.contains("seal=off") && l.to_lowercase().contains("clear"));
    assert!(
        warned,
        "seal=off: no warning that secrets travel in clear in the error log:\n{}",
        c.error_log()
    );
}

// ---------------------------------------------------------------------------
// 3b. A Redis Cluster, and one of its nodes dying.
// ---------------------------------------------------------------------------

/// Three masters: cross-host resumption as with one Redis (TLS 1.2); then
/// one node is killed: sessions whose keys live on the other two still
/// resume on B, every handshake succeeds within [`FAULT_BOUND`].
#[test]
fn a_redis_cluster_serves_the_farm_and_a_dead_node_costs_only_its_slots() {
    let mut cluster = RedisCluster::start(3);
    let (mut a, mut b) = two_hosts(&FarmArg::cluster(&cluster.seeds()), Mpm::Prefork);
    let client = Client::new(Tls::V12);

    let sessions = full_handshakes(&mut a, &client, SESSIONS);
    let found = cluster.wait_for_sessions(FARM_PREFIX, &ids(&sessions), FORWARD_WAIT);
    let stored = found.iter().flatten().count();
    assert!(
        stored >= RESUMED_AT_LEAST,
        "{stored} of {SESSIONS} sessions reached the cluster; keys there: {:?}",
        cluster.keys().into_iter().take(10).collect::<Vec<_>>()
    );
    let mut per_node = [0usize; 3];
    for (node, _) in found.iter().flatten() {
        per_node[*node] += 1;
    }
    assert!(
        per_node.iter().all(|&n| n > 0),
        "keys on every node expected (hash slots): {per_node:?}"
    );
    let resumed = sessions
        .iter()
        .filter(|s| {
            let c = b.connect(&client, Some(s));
            assert_eq!(c.status, 200, "{}", describe(&c));
            c.both_resumed()
        })
        .count();
    assert!(
        resumed >= RESUMED_AT_LEAST,
        "cluster: {resumed} of {SESSIONS} sessions made on A resumed on B"
    );

    // Fresh sessions (B holds none of them), then a node dies.
    let fresh = full_handshakes(&mut a, &client, 60);
    let found = cluster.wait_for_sessions(FARM_PREFIX, &ids(&fresh), FORWARD_WAIT);
    let dead = 0;
    cluster.kill(dead);
    let (mut live, mut live_resumed, mut on_dead) = (0, 0, 0);
    for (s, where_) in fresh.iter().zip(&found) {
        let (c, took) = b.connect_timed(&client, Some(s), WAIT);
        assert_eq!(c.status, 200, "a node dead: {}", describe(&c));
        assert!(
            took < FAULT_BOUND,
            "a node dead: a connection took {took:?} (bound {FAULT_BOUND:?})"
        );
        match where_ {
            Some((node, _)) if *node != dead => {
                live += 1;
                if c.both_resumed() {
                    live_resumed += 1;
                }
            }
            Some(_) => on_dead += 1,
            None => {}
        }
    }
    assert!(live > 0, "no fresh session on a live node");
    assert!(
        live_resumed * 100 >= live * 95,
        "a node dead: {live_resumed} of {live} sessions on the live nodes resumed on B \
         ({on_dead} were on the dead node)"
    );
    for host in [&mut a, &mut b] {
        for (c, took) in (0..10).map(|_| host.connect_timed(&client, None, WAIT)) {
            assert_eq!(
                c.status,
                200,
                "a new handshake, a node dead: {}",
                describe(&c)
            );
            assert!(took < FAULT_BOUND, "a new handshake took {took:?}");
        }
        host.check_alive("a cluster node dead");
    }
    eprintln!(
        "cluster: {resumed}/{SESSIONS} across hosts; node {dead} dead: {live_resumed}/{live} live-slot sessions resumed, {on_dead} lost"
    );
}

// ---------------------------------------------------------------------------
// 5. Arguments that cannot work fail `apache2 -t`.
// ---------------------------------------------------------------------------

/// The key file of a configuration-test case.
enum KeyFile {
    /// 48 random bytes, mode 0600.
    Good,
    /// This many random bytes, mode 0600.
    Bytes(usize),
    /// 48 random bytes with this mode.
    Mode(u32),
    /// 48 bytes, mode 0600, owned by the server's `User` (root runs only).
    OwnedByUser,
    /// No file.
    Missing,
}

/// A configuration that must fail `apache2 -t`, and the words its message
/// must have: `all` of them, and one of `any` (if any).
struct Bad {
    what: &'static str,
    arg: FarmArg,
    key: KeyFile,
    all: &'static [&'static str],
    any: &'static [&'static str],
}

/// `apache2 -t` on a host whose cache is `arg` with `key` as its
/// `{dir}/farm.key`: (success, output).
fn config_test(arg: &FarmArg, key: KeyFile) -> (bool, String) {
    let prep = Prepared::new(options(Mpm::Prefork).cache(arg.cache()));
    let random = |n: usize| -> Vec<u8> {
        let mut v = vec![0u8; n];
        openssl::rand::rand_bytes(&mut v).expect("RAND_bytes");
        v
    };
    match key {
        KeyFile::Good => {
            write_key_file(&prep.dir, FARM_KEY_FILE, &random(48), 0o600);
        }
        KeyFile::Bytes(n) => {
            write_key_file(&prep.dir, FARM_KEY_FILE, &random(n), 0o600);
        }
        KeyFile::Mode(mode) => {
            write_key_file(&prep.dir, FARM_KEY_FILE, &random(48), mode);
        }
        KeyFile::OwnedByUser => {
            let path = write_key_file(&prep.dir, FARM_KEY_FILE, &random(48), 0o600);
            let (uid, gid) = common::user_ids("www-data")
                .or_else(|| common::user_ids("nobody"))
                .expect("www-data or nobody");
            std::os::unix::fs::chown(&path, Some(uid), Some(gid)).expect("chown key file");
        }
        KeyFile::Missing => {}
    }
    prep.config_test()
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Each argument that cannot work fails `apache2 -t` with a message naming
/// the problem (`all` of these words, and one of `any`); `seal=off` and
/// the good farm arguments pass (no Redis needs to be up for `-t`), and so
/// do the plain `shm` arguments from before the farm. The words are
/// chosen so that a message that merely echoes the argument (as the parser
/// before the farm does: "unexpected text ... after the closing
/// parenthesis") does not have them.
#[test]
fn bad_farm_arguments_fail_the_config_test_naming_the_problem() {
    // Nothing listens on port 1: `-t` must not need Redis.
    let url = "redis://127.0.0.1:1/0";
    let good = || FarmArg::redis(url);
    let bad = vec![
        Bad {
            what: "an http URL",
            arg: FarmArg::redis("http://x"),
            key: KeyFile::Good,
            all: &["http://x"],
            any: &["scheme", "redis://", "url"],
        },
        Bad {
            what: "an unknown option",
            arg: good().push("colour", "red"),
            key: KeyFile::Good,
            all: &["colour"],
            any: &[
                "unknown",
                "unrecogni",
                "unsupported",
                "not an option",
                "invalid option",
            ],
        },
        Bad {
            what: "a duplicate option",
            arg: good().set("timeout", "1s").push("timeout", "2s"),
            key: KeyFile::Good,
            all: &["timeout"],
            any: &[
                "twice",
                "duplicate",
                "more than once",
                "repeated",
                "again",
                "already",
            ],
        },
        Bad {
            what: "a bad duration",
            arg: good().set("timeout", "fast"),
            key: KeyFile::Good,
            all: &["fast"],
            any: &["duration", "suffix", "number", "seconds"],
        },
        Bad {
            what: "a missing key file",
            arg: good(),
            key: KeyFile::Missing,
            all: &[FARM_KEY_FILE],
            any: &[
                "no such file",
                "not found",
                "missing",
                "does not exist",
                "cannot open",
                "can't open",
            ],
        },
        Bad {
            what: "a 47-byte key file",
            arg: good(),
            key: KeyFile::Bytes(47),
            all: &[],
            any: &[
                "47 bytes",
                "48 bytes",
                "multiple of 48",
                "48-byte",
                "length",
            ],
        },
        Bad {
            what: "a 0644 key file",
            arg: good(),
            key: KeyFile::Mode(0o644),
            all: &[],
            any: &["0644", "mode", "permission", "group", "other"],
        },
        Bad {
            what: "redis= without seal=",
            arg: good().without("seal"),
            key: KeyFile::Good,
            all: &["seal", "clear"],
            any: &[],
        },
        Bad {
            what: "redis-cluster= without seal=",
            arg: FarmArg::cluster("127.0.0.1:1,127.0.0.1:2,127.0.0.1:3").without("seal"),
            key: KeyFile::Good,
            all: &["seal", "clear"],
            any: &[],
        },
    ];
    let mut failures = Vec::new();
    for Bad {
        what,
        arg,
        key,
        all,
        any,
    } in bad
    {
        let (ok, out) = config_test(&arg, key);
        let lower = out.to_lowercase();
        let names = all.iter().all(|w| lower.contains(&w.to_lowercase()))
            && (any.is_empty() || any.iter().any(|w| lower.contains(&w.to_lowercase())));
        if ok || !names {
            failures.push(format!(
                "{what} ({}): -t {}; wanted all of {all:?} and one of {any:?} in:\n{out}",
                arg.render(),
                if ok { "passed" } else { "failed" }
            ));
        }
    }
    if is_root() {
        let (ok, out) = config_test(&good(), KeyFile::OwnedByUser);
        let lower = out.to_lowercase();
        if ok || !["owner", "owned by"].iter().any(|w| lower.contains(w)) {
            failures.push(format!(
                "a key file owned by the server's User: -t {}:\n{out}",
                if ok { "passed" } else { "failed" }
            ));
        }
    }

    // Its warning is logged at startup (redis_holds_no_master_key checks).
    let (ok, out) = config_test(&good().set("seal", "off"), KeyFile::Missing);
    if !ok {
        failures.push(format!("seal=off should pass -t:\n{out}"));
    }
    let good_cases: Vec<(&str, FarmArg, KeyFile)> = vec![
        ("the farm argument", good(), KeyFile::Good),
        ("two key records (96 bytes)", good(), KeyFile::Bytes(96)),
        (
            "a URL with user, password and db",
            FarmArg::redis("redis://farm:secret@127.0.0.1:1/3"),
            KeyFile::Good,
        ),
        (
            "redis-cluster=",
            FarmArg::cluster("127.0.0.1:1,127.0.0.1:2,127.0.0.1:3"),
            KeyFile::Good,
        ),
        ("timeout=1s", good().set("timeout", "1s"), KeyFile::Good),
    ];
    for (what, arg, key) in good_cases {
        let (ok, out) = config_test(&arg, key);
        if !ok {
            failures.push(format!("{what} ({}) should pass -t:\n{out}", arg.render()));
        }
    }
    for plain in [
        "shm",
        "shm:(1M)",
        "shm:{dir}/scache",
        "shm:{dir}/scache(512000)",
        "shm:{dir}/scache(512K)",
    ] {
        let prep = Prepared::new(options(Mpm::Prefork).cache(SessionCache::Raw(plain.into())));
        let (ok, out) = prep.config_test();
        if !ok {
            failures.push(format!("plain {plain} should still pass -t:\n{out}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
