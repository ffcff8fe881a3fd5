//! The farm tier on the engines operators already run (issue 19), with the
//! real apache2 and real servers on loopback: a primary watched by Redis
//! Sentinel, failed over while two hosts share sessions; and a replica
//! beside each host over a Unix socket (`redis-replica=`) that keeps
//! answering lookups while the primary is stopped.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    new_farm_key, start_farm_host, Client, FarmArg, Httpd, Mpm, Options, Provider, RedisServer,
    Session, Tls, FARM_PREFIX,
};

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

/// A fresh directory of root's, mode 0755 (no other user may write in it).
fn scratch_dir(what: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    use std::sync::atomic::{AtomicUsize, Ordering};
    static SEQ: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "socache-{what}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

fn ids(sessions: &[Session]) -> Vec<String> {
    sessions.iter().map(Session::server_id_hex).collect()
}

/// `redis-server --sentinel`, watching master `m` (down after 1 s).
struct Sentinel {
    child: Child,
    port: u16,
}

impl Sentinel {
    fn start(master_port: u16, dir: &std::path::Path, i: usize) -> Sentinel {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let conf = dir.join(format!("sentinel-{i}.conf"));
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {}\n\
                 sentinel monitor m 127.0.0.1 {master_port} 2\n\
                 sentinel down-after-milliseconds m 1000\n\
                 sentinel failover-timeout m 4000\n",
                dir.display()
            ),
        )
        .expect("sentinel.conf");
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server --sentinel");
        Sentinel { child, port }
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_sentinel_failover_is_followed_by_both_hosts() {
    let mut primary = RedisServer::start();
    let replica = RedisServer::start_with(vec![
        "--replicaof".into(),
        "127.0.0.1".into(),
        primary.port.to_string(),
    ]);
    let dir = scratch_dir("sentinels");
    let sentinels: Vec<Sentinel> = (0..3)
        .map(|i| Sentinel::start(primary.port, &dir, i))
        .collect();
    let list = sentinels
        .iter()
        .map(|s| format!("127.0.0.1:{}", s.port))
        .collect::<Vec<_>>()
        .join(",");
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

    let before = full_handshakes(&mut a, &client, SESSIONS);
    let (resumed, slowest) = resumed_on(&mut b, &client, &before);
    println!(
        "sentinel, before the failover: {resumed}/{SESSIONS} resumed on B, slowest {slowest:?}"
    );
    assert!(
        resumed >= RESUMED_AT_LEAST,
        "{resumed}/{SESSIONS} before the failover"
    );

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
    let after = full_handshakes(&mut a, &client, SESSIONS);
    let (resumed, slowest) = resumed_on(&mut b, &client, &after);
    println!(
        "sentinel, after the failover: {resumed}/{SESSIONS} resumed on B, slowest {slowest:?}"
    );
    assert!(
        resumed >= RESUMED_AT_LEAST,
        "{resumed}/{SESSIONS} after the failover"
    );
    drop(replica);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_local_replica_answers_lookups_while_the_primary_is_stopped() {
    let primary = RedisServer::start();
    let with_socket = || {
        let dir = scratch_dir("replica");
        let sock = dir.join("replica.sock");
        let r = RedisServer::start_with(vec![
            "--replicaof".into(),
            "127.0.0.1".into(),
            primary.port.to_string(),
            "--unixsocket".into(),
            sock.display().to_string(),
            "--unixsocketperm".into(),
            "777".into(),
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
    let _ = std::fs::remove_dir_all(_dir_a);
    let _ = std::fs::remove_dir_all(_dir_b);
}
