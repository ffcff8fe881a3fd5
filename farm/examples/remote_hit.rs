//! The farm tier's part of a remote hit, alone: one `Farm::retrieve` that
//! finds its value in Redis (GET on this thread, the sealed value opened),
//! repeated, against a redis-server given on the command line. For
//! profiling (BENCHMARKS.md section 6: strace -c, callgrind, wall time).
//!
//! Usage: cargo run --release -p socache-shm-farm --example remote_hit -- redis://127.0.0.1:6379 [N]

use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use socache_shm_farm::{
    now_us, Endpoint, Events, Farm, FarmConfig, FarmKeys, Lookup, Problem, Sealer, TlsFiles,
    TIER_WORDS,
};

struct Quiet;
impl Events for Quiet {
    fn breaker_opened(&self, why: &str) {
        eprintln!("breaker opened: {why}");
    }
    fn breaker_closed(&self, _: Duration) {}
    fn problem_started(&self, _: Problem, why: &str) {
        eprintln!("problem: {why}");
    }
    fn problem_ended(&self, _: Problem, _: Duration) {}
}

fn main() {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "redis://127.0.0.1:6379".into());
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let mut key = [0u8; 48];
    openssl::rand::rand_bytes(&mut key).expect("rand");
    let keys = FarmKeys::from_bytes(std::path::Path::new("example key"), &key).expect("keys");
    let farm = Farm::new(
        FarmConfig {
            endpoint: Endpoint::parse(&url).expect("endpoint"),
            replica: None,
            tls: TlsFiles::default(),
            timeout: Duration::from_millis(200),
            sealer: Sealer::keys(keys),
            prefix: "socache-shm-example:".into(),
            namespace: "mod_ssl-sess".into(),
            connections: 1,
            max_value: 16 * 1024,
            home_pid: None,
        },
        Box::new(Quiet),
    )
    .expect("farm");
    let words: Box<[AtomicU64; TIER_WORDS]> = Box::new(std::array::from_fn(|_| AtomicU64::new(0)));
    let id = [7u8; 32];
    let session = [9u8; 150]; // a TLS session's DER is about this size
    farm.store(&words, &id, &session, now_us() + 300_000_000, now_us());
    // Warm: the connection made, the reply of the store read.
    assert!(matches!(
        farm.retrieve(&words, &id, now_us()),
        Lookup::Hit { .. }
    ));
    let started = Instant::now();
    for _ in 0..n {
        match farm.retrieve(&words, &id, now_us()) {
            Lookup::Hit { value, .. } => assert_eq!(value.len(), session.len()),
            other => panic!("{other:?}"),
        }
    }
    let took = started.elapsed();
    println!(
        "{n} remote hits: {:.1} us each (GET round trip on loopback included)",
        took.as_secs_f64() * 1e6 / n as f64
    );
}
