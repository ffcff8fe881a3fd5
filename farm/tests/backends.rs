//! The farm over a Unix socket (a replica beside each httpd) and through
//! Redis Sentinel (a primary, a replica, three sentinels; the primary
//! killed, the failover followed), with real redis-servers on loopback.

mod common;

use std::time::{Duration, Instant};

use common::*;
use socache_shm_farm::{now_us, stats, Endpoint, Lookup};

const LIFE_US: i64 = 300_000_000;

#[test]
fn a_unix_socket_roundtrips_and_its_directory_is_checked() {
    let dir = tempfile::tempdir().expect("dir");
    let sock = dir.path().join("redis.sock");
    let sock_arg = sock.to_str().expect("utf-8 path").to_string();
    let _server = RedisServer::start_with(&["--unixsocket", &sock_arg, "--unixsocketperm", "700"]);
    let url = format!("unix://{sock_arg}");
    let endpoint = Endpoint::parse(&url).expect("unix endpoint");
    socache_shm_farm::check(&endpoint, &Default::default()).expect("a private directory");
    let (farm, events) = farm_with(config(endpoint, Duration::from_millis(200)));
    let words = words();
    farm.store(
        &words,
        b"id",
        b"over a socket",
        now_us() + LIFE_US,
        now_us(),
    );
    assert!(matches!(
        farm.retrieve(&words, b"id", now_us()),
        Lookup::Hit { value, .. } if value == b"over a socket"
    ));
    assert_eq!(events.opened(), 0);
    assert_eq!(stats(&words).remote_hits, 1);
}

#[test]
fn sentinel_names_the_master_and_a_failover_is_followed() {
    let mut primary = RedisServer::start();
    let replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &primary.port.to_string()]);
    let (_sentinels, list) = Sentinel::three(primary.port);
    // Sentinels answer once they have loaded their configuration.
    std::thread::sleep(Duration::from_millis(1500));
    let timeout = Duration::from_millis(300);
    let endpoint = Endpoint::parse_sentinel(&list, "m").expect("sentinel endpoint");
    let (farm, _) = farm_with(config(endpoint, timeout));
    let words = words();
    farm.store(&words, b"before", b"v1", now_us() + LIFE_US, now_us());
    let hit = poll(Duration::from_secs(10), || {
        matches!(
            farm.retrieve(&words, b"before", now_us()),
            Lookup::Hit { .. }
        )
        .then_some(())
    });
    assert!(
        hit.is_some(),
        "through the sentinel-named primary: {:?}",
        stats(&words)
    );

    primary.kill();
    let killed = Instant::now();
    let mut slowest = Duration::ZERO;
    // The replica becomes the master (down-after 1 s, then the election);
    // meanwhile every op stays bounded.
    let back = poll(Duration::from_secs(40), || {
        let started = Instant::now();
        farm.store(&words, b"after", b"v2", now_us() + LIFE_US, now_us());
        let answer = farm.retrieve(&words, b"after", now_us());
        slowest = slowest.max(started.elapsed());
        std::thread::sleep(Duration::from_millis(100));
        matches!(answer, Lookup::Hit { .. }).then_some(killed.elapsed())
    });
    println!(
        "sentinel failover: sharing back {back:?} after the primary was killed; slowest store+lookup {slowest:?}; {:?}",
        stats(&words)
    );
    assert!(
        back.is_some(),
        "the failover was not followed: {:?}",
        stats(&words)
    );
    assert!(
        slowest < 2 * timeout + Duration::from_millis(700),
        "{slowest:?}"
    );
    let _ = replica;
}
