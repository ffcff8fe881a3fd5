//! The farm tier on the engines operators already run (issue 19), with the
//! real apache2 and real servers on loopback: a primary watched by Redis
//! Sentinel, failed over while two hosts share sessions; and a replica
//! beside each host over a Unix socket (`redis-replica=`) that keeps
//! answering lookups while the primary is stopped.

mod common;

use std::time::{Duration, Instant};

use common::{
    new_farm_key, start_farm_host, Client, FarmArg, Httpd, Memcached, Mpm, Options, Provider,
    RedisServer, Sentinel, Session, Tls, FARM_PREFIX,
};
use testkit::ServerDir;

const SESSIONS: usize = 50;
const RESUMED_AT_LEAST: usize = 49;
/// Bound of one connection while a server is gone or hung: generous, for
/// a loaded machine (the figure is printed).
const FAULT_BOUND: Duration = Duration::from_secs(3);

fn options() -> Options {
    Options::new(Provider::Shm, Mpm::Prefork)
}

fn full_handshakes(host: &mut Httpd, client: &Client, n: usize) -> Vec<Session> {
    (0..n)
        .map(|_| {
            let c = host.connect(client, None);
            assert!(c.status == 200 && !c.resumed, "a new handshake");
            c.session
        })
        .collect()
}

/// How many of `sessions` resume on `host`; the slowest connection.
fn resumed_on(host: &mut Httpd, client: &Client, sessions: &[Session]) -> (usize, Duration) {
    let mut slowest = Duration::ZERO;
    let n = sessions
        .iter()
        .filter(|s| {
            let (c, took) = host.connect_timed(client, Some(s), common::WAIT);
            slowest = slowest.max(took);
            assert_eq!(c.status, 200, "every handshake succeeds");
            c.both_resumed()
        })
        .count();
    (n, slowest)
}

/// [`SESSIONS`] new sessions made on `a`: at least [`RESUMED_AT_LEAST`]
/// resume on `b`.
fn assert_shared(a: &mut Httpd, b: &mut Httpd, client: &Client, what: &str) {
    let sessions = full_handshakes(a, client, SESSIONS);
    let (resumed, slowest) = resumed_on(b, client, &sessions);
    println!("{what}: {resumed}/{SESSIONS} resumed on B, slowest {slowest:?}");
    assert!(resumed >= RESUMED_AT_LEAST, "{what}: {resumed}/{SESSIONS}");
}

fn ids(sessions: &[Session]) -> Vec<String> {
    sessions.iter().map(Session::server_id_hex).collect()
}

#[test]
fn a_sentinel_failover_is_followed_by_both_hosts() {
    let mut primary = RedisServer::start();
    let replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &primary.port.to_string()]);
    let (_sentinels, list) = Sentinel::three(primary.port);
    std::thread::sleep(Duration::from_millis(1500)); // sentinels up
    let arg = FarmArg::redis("unused")
        .without("redis")
        .set("redis-sentinel", &list)
        .set("redis-master", "m")
        .set("timeout", "200ms");
    let key = new_farm_key();
    let mut a = start_farm_host(options(), &arg, Some(&key));
    let mut b = start_farm_host(options(), &arg, Some(&key));
    let client = Client::new(Tls::V12);

    assert_shared(&mut a, &mut b, &client, "sentinel, before the failover");

    primary.kill();
    let killed = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut back = None;
    while killed.elapsed() < Duration::from_secs(40) {
        let s = full_handshakes(&mut a, &client, 1);
        let (c, took) = b.connect_timed(&client, Some(&s[0]), common::WAIT);
        slowest = slowest.max(took);
        assert_eq!(
            c.status, 200,
            "every handshake succeeds during the failover"
        );
        if c.both_resumed() {
            back = Some(killed.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("sentinel failover: cross-host sharing back {back:?} after the primary died; slowest handshake on B meanwhile {slowest:?}");
    assert!(back.is_some(), "the failover was never followed");
    assert!(slowest < FAULT_BOUND, "{slowest:?}");
    assert_shared(&mut a, &mut b, &client, "sentinel, after the failover");
    drop(replica);
}

#[test]
fn a_local_replica_answers_lookups_while_the_primary_is_stopped() {
    let primary = RedisServer::start();
    let with_socket = || {
        let dir = ServerDir::new("replica");
        let sock = dir.join("replica.sock");
        let r = RedisServer::start_with(&[
            "--replicaof",
            "127.0.0.1",
            &primary.port.to_string(),
            "--unixsocket",
            &sock.display().to_string(),
            "--unixsocketperm",
            "777",
        ]);
        (r, sock, dir)
    };
    let (replica_a, sock_a, _dir_a) = with_socket();
    let (replica_b, sock_b, _dir_b) = with_socket();
    let key = new_farm_key();
    let host = |sock: &std::path::Path| {
        FarmArg::redis(&primary.url())
            .set("redis-replica", &format!("unix://{}", sock.display()))
            .set("timeout", "200ms")
    };
    let mut a = start_farm_host(options(), &host(&sock_a), Some(&key));
    let mut b = start_farm_host(options(), &host(&sock_b), Some(&key));
    let client = Client::new(Tls::V12);

    let sessions = full_handshakes(&mut a, &client, SESSIONS);
    let found = replica_b.wait_for_sessions(FARM_PREFIX, &ids(&sessions), Duration::from_secs(10));
    assert!(
        found.iter().flatten().count() >= RESUMED_AT_LEAST,
        "replicated to B's replica"
    );
    let primary_gets = primary.commandstats().get("get").copied().unwrap_or(0);
    let replica_gets = replica_b.commandstats().get("get").copied().unwrap_or(0);
    let (resumed, slowest) = resumed_on(&mut b, &client, &sessions);
    let gets_b = replica_b.commandstats().get("get").copied().unwrap_or(0) - replica_gets;
    let gets_primary = primary.commandstats().get("get").copied().unwrap_or(0) - primary_gets;
    println!("replica: {resumed}/{SESSIONS} resumed on B, slowest {slowest:?}; GETs: B's replica {gets_b}, primary {gets_primary}");
    assert!(resumed >= RESUMED_AT_LEAST, "{resumed}/{SESSIONS}");
    assert!(
        gets_b >= resumed as u64,
        "lookups asked B's replica ({gets_b} GETs)"
    );
    assert_eq!(gets_primary, 0, "no lookup went to the primary");

    // Made before the primary stops, offered to B after: B's replica
    // answers; every handshake stays bounded (stores to the stopped
    // primary time out at most once per handshake).
    let more = full_handshakes(&mut a, &client, 20);
    let found = replica_b.wait_for_sessions(FARM_PREFIX, &ids(&more), Duration::from_secs(10));
    assert!(found.iter().flatten().count() >= 19, "replicated");
    primary.stop();
    let (resumed, slowest) = resumed_on(&mut b, &client, &more);
    primary.cont();
    println!("replica with the primary stopped: {resumed}/20 resumed on B, slowest {slowest:?}");
    assert!(resumed >= 19, "{resumed}/20 with the primary stopped");
    assert!(slowest < FAULT_BOUND, "{slowest:?}");
    drop((replica_a, a));
}

fn memcache_arg(servers: &[&Memcached]) -> FarmArg {
    let list = servers
        .iter()
        .map(|m| m.addr())
        .collect::<Vec<_>>()
        .join(",");
    FarmArg::redis("unused")
        .without("redis")
        .set("memcache", &list)
        .set("timeout", "200ms")
}

#[test]
fn two_hosts_share_sessions_through_memcached() {
    let one = Memcached::start();
    let two = Memcached::start();
    let arg = memcache_arg(&[&one, &two]);
    let key = new_farm_key();
    let mut a = start_farm_host(options(), &arg, Some(&key));
    let mut b = start_farm_host(options(), &arg, Some(&key));
    for tls in [Tls::V12, Tls::V13] {
        let client = Client::new(tls);
        let sessions = full_handshakes(&mut a, &client, 100);
        let (resumed, slowest) = resumed_on(&mut b, &client, &sessions);
        println!(
            "memcached, {}: {resumed}/100 made on A resumed on B, slowest {slowest:?}",
            tls.log_name()
        );
        assert!(resumed >= 99, "{}: {resumed}/100", tls.log_name());
    }
    // A local hit sends nothing: B resumes what it now holds locally.
    let client = Client::new(Tls::V12);
    let sessions = full_handshakes(&mut b, &client, 20);
    let gets = one.stat("cmd_get") + two.stat("cmd_get");
    let (resumed, _) = resumed_on(&mut b, &client, &sessions);
    let after = one.stat("cmd_get") + two.stat("cmd_get");
    assert_eq!(resumed, 20);
    assert_eq!(
        after,
        gets,
        "local hits sent {} GETs to memcached",
        after - gets
    );
}

#[test]
fn memcached_holds_no_master_key_unless_told_to() {
    for (seal, expect_clear) in [(true, false), (false, true)] {
        let m = Memcached::start();
        let mut arg = memcache_arg(&[&m]);
        if !seal {
            arg = arg.set("seal", "off");
        }
        let key = new_farm_key();
        let mut a = start_farm_host(options(), &arg, Some(&key));
        let client = Client::new(Tls::V12);
        let sessions = full_handshakes(&mut a, &client, 5);
        // Every key the farm wrote, and its value.
        let dump = String::from_utf8_lossy(&m.ask("lru_crawler metadump all")).into_owned();
        let keys: Vec<String> = dump
            .lines()
            .filter_map(|l| l.strip_prefix("key="))
            .map(|l| percent_decoded(l.split(' ').next().unwrap_or("")))
            .collect();
        assert!(keys.len() >= 5, "keys in memcached: {keys:?}");
        let values: Vec<Vec<u8>> = keys.iter().map(|k| m.ask(&format!("get {k}"))).collect();
        let clear = sessions.iter().any(|s| {
            let mk = s.master_key();
            values
                .iter()
                .any(|v| v.windows(mk.len()).any(|w| w == mk.as_slice()))
        });
        assert_eq!(
            clear,
            expect_clear,
            "seal={}: a master key in clear in memcached: {clear}",
            if seal { "FILE" } else { "off" }
        );
    }
}

/// metadump's keys are URL-encoded (`%3A` for `:`).
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn a_hung_or_dead_memcached_costs_no_handshake_and_sharing_returns() {
    let mut m = Memcached::start();
    let arg = memcache_arg(&[&m]);
    let key = new_farm_key();
    let mut a = start_farm_host(options(), &arg, Some(&key));
    let mut b = start_farm_host(options(), &arg, Some(&key));
    let client = Client::new(Tls::V12);
    // Hung: sessions B never saw, offered while memcached is stopped.
    let sessions = full_handshakes(&mut a, &client, 10);
    m.stop();
    let (_, slowest_hung) = resumed_on(&mut b, &client, &sessions);
    m.cont();
    // Down.
    m.kill();
    let sessions = full_handshakes(&mut a, &client, 10);
    let (_, slowest_down) = resumed_on(&mut b, &client, &sessions);
    println!("memcached hung: slowest handshake {slowest_hung:?}; down: {slowest_down:?}");
    assert!(slowest_hung < FAULT_BOUND, "{slowest_hung:?}");
    assert!(slowest_down < FAULT_BOUND, "{slowest_down:?}");
    // Back on the same port: sharing returns.
    m.restart();
    let started = Instant::now();
    let mut returned = None;
    while started.elapsed() < Duration::from_secs(20) {
        let s = full_handshakes(&mut a, &client, 1);
        if b.connect(&client, Some(&s[0])).both_resumed() {
            returned = Some(started.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("memcached restarted: sharing back after {returned:?}");
    assert!(returned.is_some(), "sharing never returned");
}
