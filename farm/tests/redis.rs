//! The farm against a real `redis-server` of its own: roundtrips, sealing as
//! seen from Redis, removal, a hung and a killed server (timeouts bounded,
//! one breaker opening, probes, recovery), a tampered value, a full queue.

mod common;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use socache_shm_farm::breaker::OPEN_AFTER;
use socache_shm_farm::{now_us, stats, Endpoint, Farm, Lookup, Sealer, TIER_WORDS};

const LIFE_US: i64 = 300_000_000;

/// Polls `retrieve` until a hit (bounded), for values stored just before.
fn await_hit(
    farm: &Farm,
    words: &[AtomicU64; TIER_WORDS],
    id: &[u8],
    limit: Duration,
) -> Option<Vec<u8>> {
    poll(limit, || match farm.retrieve(words, id, now_us()) {
        Lookup::Hit { value, .. } => Some(value),
        _ => None,
    })
}

/// A farm on `server` with `timeout`, its recorder and words, once the
/// value of `id` it stored can be read back.
fn farm_holding_id(
    server: &RedisServer,
    timeout: Duration,
) -> (Farm, Arc<Recorder>, Box<[AtomicU64; TIER_WORDS]>) {
    let (farm, events) = farm_for(server, timeout);
    let words = words();
    farm.store(&words, b"id", b"v", now_us() + LIFE_US, now_us());
    assert!(await_hit(&farm, &words, b"id", Duration::from_secs(10)).is_some());
    (farm, events, words)
}

/// With the server hung or gone: OPEN_AFTER lookups in a row fail, each
/// within 2 s, and the breaker opens at the last of them, once.
fn fail_until_open(farm: &Farm, words: &[AtomicU64; TIER_WORDS], events: &Recorder) {
    for n in 0..OPEN_AFTER {
        let started = Instant::now();
        assert_eq!(farm.retrieve(words, b"id", now_us()), Lookup::Failed);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        let expected = usize::from(n + 1 == OPEN_AFTER);
        assert_eq!(events.opened(), expected, "after {} failures", n + 1);
    }
}

#[test]
fn store_then_retrieve_and_redis_holds_only_sealed_bytes() {
    let server = RedisServer::start();
    let (farm, events) = farm_for(&server, Duration::from_millis(500));
    let words = words();
    let id = b"0123456789abcdef0123456789abcdef";
    let value = b"-----PLAINTEXT SESSION DER-----";
    let expiry = now_us() + LIFE_US;
    farm.store(&words, id, value, expiry, now_us());
    let got = poll(Duration::from_secs(10), || {
        match farm.retrieve(&words, id, now_us()) {
            Lookup::Hit { value, expiry_us } => Some((value, expiry_us)),
            _ => None,
        }
    });
    assert_eq!(got, Some((value.to_vec(), expiry)));

    let key = farm.redis_key(id);
    assert!(key.starts_with(b"socache-shm:mod_ssl-session:30313233"));
    let mut c = server.connection();
    let stored: Vec<u8> = redis::cmd("GET").arg(&key).query(&mut c).expect("GET");
    assert_eq!(stored[0], socache_shm_farm::seal::VERSION_SEALED);
    assert_eq!(
        stored.len(),
        value.len() + socache_shm_farm::seal::SEALED_OVERHEAD
    );
    assert!(!stored.windows(9).any(|w| w == b"PLAINTEXT"));
    let pttl: i64 = redis::cmd("PTTL").arg(&key).query(&mut c).expect("PTTL");
    assert!(pttl > 0 && pttl <= LIFE_US / 1000 + 1, "PTTL {pttl}");

    assert_eq!(farm.retrieve(&words, b"absent", now_us()), Lookup::Miss);
    let s = stats(&words);
    assert!(
        s.remote_hits >= 1 && s.remote_misses >= 1 && s.stores_sent == 1,
        "{s:?}"
    );
    assert_eq!((s.errors, s.timeouts, s.seal_failures), (0, 0, 0), "{s:?}");
    assert_eq!(events.opened(), 0);
    assert_eq!(figure(&words, "FarmBreaker"), "closed");
}

#[test]
fn clear_opt_out_roundtrips_with_a_header() {
    let server = RedisServer::start();
    let mut config = config(
        Endpoint::parse(&server.url()).expect("endpoint"),
        Duration::from_millis(500),
    );
    config.sealer = Sealer::off();
    let (farm, _) = farm_with(config);
    let words = words();
    farm.store(&words, b"id", b"clear value", now_us() + LIFE_US, now_us());
    assert_eq!(
        await_hit(&farm, &words, b"id", Duration::from_secs(10)),
        Some(b"clear value".to_vec())
    );
    let stored: Vec<u8> = redis::cmd("GET")
        .arg(farm.redis_key(b"id"))
        .query(&mut server.connection())
        .expect("GET");
    assert_eq!(stored[0], socache_shm_farm::seal::VERSION_CLEAR);
    assert!(stored.ends_with(b"clear value"));
}

#[test]
fn remove_deletes_and_expired_stores_are_not_sent() {
    let server = RedisServer::start();
    let (farm, _) = farm_for(&server, Duration::from_millis(500));
    let words = words();
    farm.store(&words, b"gone", b"v", now_us() + LIFE_US, now_us());
    assert!(await_hit(&farm, &words, b"gone", Duration::from_secs(10)).is_some());
    farm.remove(&words, b"gone");
    let missed = poll(Duration::from_secs(10), || {
        (farm.retrieve(&words, b"gone", now_us()) == Lookup::Miss).then_some(())
    });
    assert!(missed.is_some());
    let exists: i64 = redis::cmd("EXISTS")
        .arg(farm.redis_key(b"gone"))
        .query(&mut server.connection())
        .expect("EXISTS");
    assert_eq!(exists, 0);
    assert_eq!(stats(&words).removes_sent, 1);

    let before = stats(&words).stores_sent;
    farm.store(&words, b"old", b"v", now_us() - 1, now_us());
    assert_eq!(stats(&words).stores_sent, before);
}

#[test]
fn a_value_altered_or_moved_in_redis_fails_and_is_counted() {
    let server = RedisServer::start();
    let (farm, events) = farm_for(&server, Duration::from_millis(500));
    let words = words();
    farm.store(
        &words,
        b"victim",
        b"some session bytes",
        now_us() + LIFE_US,
        now_us(),
    );
    farm.store(
        &words,
        b"other",
        b"other bytes",
        now_us() + LIFE_US,
        now_us(),
    );
    assert!(await_hit(&farm, &words, b"victim", Duration::from_secs(10)).is_some());
    assert!(await_hit(&farm, &words, b"other", Duration::from_secs(10)).is_some());
    let mut c = server.connection();
    let _: i64 = redis::cmd("SETRANGE")
        .arg(farm.redis_key(b"victim"))
        .arg(45)
        .arg(&b"\xff"[..])
        .query(&mut c)
        .expect("SETRANGE");
    assert_eq!(farm.retrieve(&words, b"victim", now_us()), Lookup::Failed);
    assert_eq!(stats(&words).seal_failures, 1);
    // Copied over another id's key: bound to its id, it does not open.
    let _: () = redis::cmd("COPY")
        .arg(farm.redis_key(b"other"))
        .arg(farm.redis_key(b"victim"))
        .arg("REPLACE")
        .query(&mut c)
        .expect("COPY");
    assert_eq!(farm.retrieve(&words, b"victim", now_us()), Lookup::Failed);
    assert_eq!(stats(&words).seal_failures, 2);
    // A seal failure is the value's fault, not Redis's: breaker stays closed.
    assert_eq!(events.opened(), 0);
    assert!(matches!(
        farm.retrieve(&words, b"other", now_us()),
        Lookup::Hit { .. }
    ));
}

#[test]
fn a_hung_redis_times_out_opens_the_breaker_once_and_recovers() {
    let server = RedisServer::start();
    let timeout = Duration::from_millis(50);
    let (farm, events, words) = farm_holding_id(&server, timeout);

    server.stop();
    fail_until_open(&farm, &words, &events);
    assert_eq!(figure(&words, "FarmBreaker"), "open");
    assert_eq!(stats(&words).breaker_openings, 1);

    // While open: skipped, without going near the network.
    let skipped_before = stats(&words).skipped;
    assert_eq!(farm.retrieve(&words, b"id", now_us()), Lookup::Skipped);
    farm.store(&words, b"id2", b"v", now_us() + LIFE_US, now_us());
    assert!(stats(&words).skipped >= skipped_before + 2);

    // Probes keep failing while it hangs; every call stays bounded, and the
    // breaker is not reported opened again.
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        let call = Instant::now();
        let answer = farm.retrieve(&words, b"id", now_us());
        assert!(
            matches!(answer, Lookup::Failed | Lookup::Skipped),
            "{answer:?}"
        );
        assert!(call.elapsed() < Duration::from_secs(2));
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(events.opened(), 1);
    assert_eq!(events.closed(), 0);
    assert!(stats(&words).timeouts >= 2, "{:?}", stats(&words));

    server.cont();
    // After at most the largest backoff a probe succeeds.
    assert!(await_hit(&farm, &words, b"id", Duration::from_secs(20)).is_some());
    assert_eq!(events.closed(), 1);
    assert_eq!(events.opened(), 1);
    assert_eq!(figure(&words, "FarmBreaker"), "closed");
}

#[test]
fn a_killed_redis_fails_fast_and_a_restarted_one_is_used_again() {
    let mut server = RedisServer::start();
    let (farm, events, words) = farm_holding_id(&server, Duration::from_millis(50));

    server.kill();
    fail_until_open(&farm, &words, &events);
    assert_eq!(farm.retrieve(&words, b"id", now_us()), Lookup::Skipped);
    // Refused probes for a while.
    let until = Instant::now() + Duration::from_millis(500);
    while Instant::now() < until {
        let _ = farm.retrieve(&words, b"id", now_us());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(events.opened(), 1);
    assert!(stats(&words).errors + stats(&words).timeouts >= 1);

    server.restart(); // on the same port
                      // The restarted server is empty: store again until a retrieve hits.
    let hit = poll(Duration::from_secs(20), || {
        farm.store(&words, b"id", b"again", now_us() + LIFE_US, now_us());
        match farm.retrieve(&words, b"id", now_us()) {
            Lookup::Hit { value, .. } => Some(value),
            _ => None,
        }
    });
    assert_eq!(hit, Some(b"again".to_vec()));
    assert_eq!(events.closed(), 1);
    assert_eq!(events.opened(), 1);
}

/// A store writes its SET and reads the reply later: against a hung Redis
/// the replies never come, and the store that finds 16 waiting waits for
/// them, at most `timeout`; after that timeout this thread's writes are
/// skipped at once for a while (and three timeouts host-wide open the
/// breaker): no store waits twice in a row.
#[test]
fn a_hung_redis_costs_stores_a_bounded_wait_until_the_breaker_opens() {
    let server = RedisServer::start();
    let timeout = Duration::from_millis(100);
    let (farm, events) = farm_for(&server, timeout);
    let words = words();
    farm.store(&words, b"warm", b"v", now_us() + LIFE_US, now_us());
    server.stop();
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for i in 0..200u32 {
        let call = Instant::now();
        farm.store(&words, &i.to_be_bytes(), b"v", now_us() + LIFE_US, now_us());
        slowest = slowest.max(call.elapsed());
    }
    let took = started.elapsed();
    println!("200 stores against a hung Redis: {took:?}, slowest {slowest:?}");
    assert!(
        slowest < timeout + Duration::from_millis(900),
        "{slowest:?}"
    );
    assert!(took < Duration::from_secs(3), "{took:?}");
    let s = stats(&words);
    assert!(events.opened() <= 1, "{s:?}");
    assert!(s.timeouts >= 1, "{s:?}");
    assert!(s.skipped > 100, "{s:?}");
    assert_eq!(s.stores_sent + s.stores_dropped + s.skipped, 201, "{s:?}");
    server.cont();
}

#[test]
fn a_burst_of_stores_all_arrive() {
    let server = RedisServer::start();
    let (farm, events) = farm_for(&server, Duration::from_millis(1000));
    let words = words();
    for i in 0..300u32 {
        farm.store(
            &words,
            &i.to_be_bytes(),
            &i.to_le_bytes(),
            now_us() + LIFE_US,
            now_us(),
        );
    }
    for i in 0..300u32 {
        let hit = await_hit(&farm, &words, &i.to_be_bytes(), Duration::from_secs(10));
        assert_eq!(hit, Some(i.to_le_bytes().to_vec()), "id {i}");
    }
    let dbsize: i64 = redis::cmd("DBSIZE")
        .query(&mut server.connection())
        .expect("DBSIZE");
    assert_eq!(dbsize, 300);
    assert_eq!(stats(&words).stores_sent, 300);
    assert_eq!(events.opened(), 0);
}

/// Error replies to lookups open the breaker like a dead server: `NOAUTH`
/// (a Redis that wants a password this farm lacks). Stores that Redis
/// refuses (`OOM`: full, with `noeviction`) are counted but leave lookups
/// alone: they cost no caller a wait, and reads still work.
#[test]
fn error_replies_noauth_opens_the_breaker_and_oom_only_counts() {
    let locked = RedisServer::start();
    let (farm, events) = farm_for(&locked, Duration::from_millis(500));
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("not-the-farms")
        .query::<()>(&mut locked.connection())
        .expect("CONFIG SET requirepass");
    let words = words();
    for _ in 0..OPEN_AFTER {
        assert_eq!(farm.retrieve(&words, b"id", now_us()), Lookup::Failed);
    }
    assert_eq!(events.opened(), 1);
    let whys = events.whys.lock().map(|w| w.join("; ")).unwrap_or_default();
    assert!(
        whys.contains("NOAUTH") || whys.contains("uthentication"),
        "{whys}"
    );
    assert!(stats(&words).errors >= OPEN_AFTER, "{:?}", stats(&words));

    let full = RedisServer::start();
    let (farm, events) = farm_for(&full, Duration::from_millis(500));
    let words = self::words();
    farm.store(&words, b"kept", b"v", now_us() + LIFE_US, now_us());
    assert!(await_hit(&farm, &words, b"kept", Duration::from_secs(10)).is_some());
    let mut admin = full.connection();
    for (name, value) in [("maxmemory-policy", "noeviction"), ("maxmemory", "1")] {
        redis::cmd("CONFIG")
            .arg("SET")
            .arg(name)
            .arg(value)
            .query::<()>(&mut admin)
            .expect("CONFIG SET");
    }
    let refused = poll(Duration::from_secs(20), || {
        for i in 0..10u8 {
            farm.store(&words, &[i], b"v", now_us() + LIFE_US, now_us());
        }
        // A lookup reads the stores' late replies.
        let _ = farm.retrieve(&words, b"other", now_us());
        (stats(&words).error_replies >= 10).then_some(())
    });
    assert!(refused.is_some(), "{:?}", stats(&words));
    assert_eq!(
        events.opened(),
        0,
        "{:?}",
        events.whys.lock().map(|w| w.clone())
    );
    assert!(matches!(
        farm.retrieve(&words, b"kept", now_us()),
        Lookup::Hit { .. }
    ));
    // Said once, however many stores Redis refused.
    assert_eq!(
        events.problems.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "{:?}",
        events.whys.lock().map(|w| w.clone())
    );
}

/// Two farms (two hosts) agree on one value for an id: the first proposal
/// is stored, the second host gets it back, opened; with Redis gone each
/// decides alone.
#[test]
fn hosts_agree_on_one_value_first_writer_wins() {
    use socache_shm_farm::Agreement;
    let mut server = RedisServer::start();
    let endpoint = || Endpoint::parse(&server.url()).expect("endpoint");
    let mut bytes = vec![0u8; socache_shm_farm::keys::RECORD_LEN];
    openssl::rand::rand_bytes(&mut bytes).expect("rand");
    let keys = || {
        socache_shm_farm::FarmKeys::from_bytes(std::path::Path::new("test keys"), &bytes)
            .expect("keys")
    };
    let mut a = config(endpoint(), Duration::from_millis(500));
    a.sealer = Sealer::keys(keys());
    let mut b = config(endpoint(), Duration::from_millis(500));
    b.sealer = Sealer::keys(keys());
    let (host_a, _) = farm_with(a);
    let (host_b, _) = farm_with(b);
    let (wa, wb) = (words(), words());
    let expiry = now_us() + LIFE_US;
    assert_eq!(
        host_a.agree(&wa, b"ticket-key:7", b"A's key", expiry, now_us()),
        Agreement::Ours
    );
    assert_eq!(
        host_b.agree(&wb, b"ticket-key:7", b"B's key", expiry, now_us()),
        Agreement::Theirs {
            value: b"A's key".to_vec()
        }
    );
    // Sealed in Redis like every value: no key in clear.
    let stored: Vec<Vec<u8>> = redis::cmd("KEYS")
        .arg("*")
        .query::<Vec<String>>(&mut server.connection())
        .expect("KEYS")
        .into_iter()
        .map(|k| {
            redis::cmd("GET")
                .arg(k)
                .query::<Vec<u8>>(&mut server.connection())
                .expect("GET")
        })
        .collect();
    assert_eq!(stored.len(), 1);
    assert!(!stored[0].windows(7).any(|w| w == b"A's key"));
    server.kill();
    assert_eq!(
        host_b.agree(&wb, b"ticket-key:8", b"B's key", expiry, now_us()),
        Agreement::Unreachable
    );
}
