//! The farm over TLS (`rediss://`): the server's certificate is verified
//! against the CA file of `TlsFiles`, and without it (the system trust
//! store does not know a test certificate) nothing is sent.

mod common;

use std::time::Duration;

use common::*;
use socache_shm_farm::{now_us, stats, Endpoint, Lookup, TlsFiles};

#[test]
fn rediss_with_the_ca_file_roundtrips_and_without_it_fails() {
    let server = RedisServer::start_tls();
    let endpoint = Endpoint::parse(&server.tls_url()).expect("rediss endpoint");
    assert!(endpoint.is_tls());

    let mut trusted = config(endpoint.clone(), Duration::from_secs(2));
    trusted.tls = TlsFiles {
        ca: Some(server.ca_file()),
        cert: None,
        key: None,
    };
    let (farm, events) = farm_with(trusted);
    let words = words();
    farm.store(&words, b"id", b"over tls", now_us() + 300_000_000, now_us());
    let hit = poll(Duration::from_secs(10), || {
        match farm.retrieve(&words, b"id", now_us()) {
            Lookup::Hit { value, .. } => Some(value),
            _ => None,
        }
    });
    assert_eq!(hit, Some(b"over tls".to_vec()));
    assert_eq!(events.opened(), 0);

    // No CA file: the certificate does not verify, the GET fails.
    let (untrusting, events) = farm_with(config(endpoint, Duration::from_secs(2)));
    let words = self::words();
    for _ in 0..socache_shm_farm::breaker::OPEN_AFTER {
        assert_eq!(untrusting.retrieve(&words, b"id", now_us()), Lookup::Failed);
    }
    assert_eq!(events.opened(), 1);
    let whys = events.whys.lock().map(|w| w.join("; ")).unwrap_or_default();
    assert!(whys.contains("certificate"), "{whys}");
    assert_eq!(stats(&words).remote_hits, 0);
}
