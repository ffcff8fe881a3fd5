//! The farm over memcached (real `memcached` servers on loopback, from
//! Debian's package): values round-trip sealed, two hosts agree on one
//! value, keys spread over two servers and a dead one costs only its keys,
//! every op stays bounded.

mod common;

use std::time::{Duration, Instant};

use common::*;
use socache_shm_farm::{now_us, stats, Agreement, Endpoint, Lookup};

const LIFE_US: i64 = 300_000_000;

#[test]
fn values_roundtrip_and_hosts_agree_through_memcached() {
    let server = Memcached::start();
    let endpoint = Endpoint::parse_memcache(&server.addr()).expect("list");
    let (farm, events) = farm_with(config(endpoint, Duration::from_millis(500)));
    let words = words();
    // On a loaded machine one op may time out, and the thread's writes are
    // then skipped for a moment: store again until the value is there.
    let hit = poll(Duration::from_secs(10), || {
        farm.store(&words, b"id", b"in memcached", now_us() + LIFE_US, now_us());
        match farm.retrieve(&words, b"id", now_us()) {
            Lookup::Hit { value, .. } => Some(value),
            _ => None,
        }
    });
    assert_eq!(
        hit.as_deref(),
        Some(&b"in memcached"[..]),
        "{:?}",
        stats(&words)
    );
    assert_eq!(farm.retrieve(&words, b"absent", now_us()), Lookup::Miss);
    farm.remove(&words, b"id");
    let gone = poll(Duration::from_secs(5), || {
        (farm.retrieve(&words, b"id", now_us()) == Lookup::Miss).then_some(())
    });
    assert!(gone.is_some());
    assert_eq!(
        farm.agree(&words, b"key:1", b"first", now_us() + LIFE_US, now_us()),
        Agreement::Ours
    );
    assert_eq!(
        farm.agree(&words, b"key:1", b"second", now_us() + LIFE_US, now_us()),
        Agreement::Theirs {
            value: b"first".to_vec()
        }
    );
    assert_eq!(events.opened(), 0);
    assert!(server.stat("cmd_set") >= 2, "stores reached memcached");
}

#[test]
fn keys_spread_over_two_servers_and_a_dead_one_costs_only_its_keys() {
    let one = Memcached::start();
    let mut two = Memcached::start();
    let list = format!("127.0.0.1:{},memcache://127.0.0.1:{}", one.port, two.port);
    let endpoint = Endpoint::parse_memcache(&list).expect("list");
    let timeout = Duration::from_millis(300);
    let (farm, events) = farm_with(config(endpoint, timeout));
    let words = words();
    let ids: Vec<[u8; 32]> = (0..40u8).map(|i| [i; 32]).collect();
    for id in &ids {
        farm.store(&words, id, &id[..8], now_us() + LIFE_US, now_us());
    }
    for id in &ids {
        assert!(
            matches!(farm.retrieve(&words, id, now_us()), Lookup::Hit { .. }),
            "before: {:?}",
            stats(&words)
        );
    }
    let (on_one, on_two) = (one.stat("curr_items"), two.stat("curr_items"));
    assert!(on_one > 5 && on_two > 5, "spread: {on_one} and {on_two}");
    two.kill();
    let mut hits = 0;
    let mut slowest = Duration::ZERO;
    for id in &ids {
        let started = Instant::now();
        if matches!(farm.retrieve(&words, id, now_us()), Lookup::Hit { .. }) {
            hits += 1;
        }
        slowest = slowest.max(started.elapsed());
    }
    println!(
        "one of two memcached servers killed: {hits} of 40 still found ({on_one} lived on the survivor), slowest lookup {slowest:?}; {:?}",
        stats(&words)
    );
    assert_eq!(hits as u64, on_one, "the survivor's keys, all of them");
    assert_eq!(events.opened(), 0, "a dead server costs only its keys");
    assert!(
        slowest < timeout + Duration::from_millis(400),
        "{slowest:?}"
    );
}
