//! Test fixtures: an [`Events`] recorder and a farm built for a server.
//! The servers (`redis-server`, a Redis Cluster, Sentinel, memcached),
//! free ports and bounded polling are the workspace's test kit
//! (`testkit/`), shared with the module's httpd tests.
//!
//! Every wait is bounded and generous: a slow machine makes a test
//! slower, never wrong.

#![allow(dead_code)] // each test file uses a part

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use socache_shm_farm::keys::RECORD_LEN;
use socache_shm_farm::{
    Endpoint, Events, Farm, FarmConfig, FarmKeys, Problem, Sealer, TlsFiles, TIER_WORDS,
};
#[allow(unused_imports)] // each test file uses a part
pub(crate) use testkit::{free_port, poll, Memcached, RedisCluster, RedisServer, Sentinel, WAIT};

/// Counts the farm's events.
#[derive(Default)]
pub(crate) struct Recorder {
    pub opened: AtomicUsize,
    pub closed: AtomicUsize,
    pub problems: AtomicUsize,
    pub problems_ended: AtomicUsize,
    pub whys: Mutex<Vec<String>>,
}

impl Recorder {
    pub(crate) fn opened(&self) -> usize {
        self.opened.load(Ordering::SeqCst)
    }
    pub(crate) fn closed(&self) -> usize {
        self.closed.load(Ordering::SeqCst)
    }
}

/// The farm's `Box<dyn Events>` over a shared recorder.
pub(crate) struct Recording(pub Arc<Recorder>);

impl Events for Recording {
    fn breaker_opened(&self, why: &str) {
        self.0.opened.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut whys) = self.0.whys.lock() {
            whys.push(why.to_string());
        }
    }
    fn breaker_closed(&self, _was_open_for: Duration) {
        self.0.closed.fetch_add(1, Ordering::SeqCst);
    }
    fn problem_started(&self, _problem: Problem, why: &str) {
        self.0.problems.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut whys) = self.0.whys.lock() {
            whys.push(why.to_string());
        }
    }
    fn problem_ended(&self, _problem: Problem, _lasted: Duration) {
        self.0.problems_ended.fetch_add(1, Ordering::SeqCst);
    }
}

/// A key file's records, fresh random bytes.
pub(crate) fn random_keys(records: usize) -> FarmKeys {
    let mut bytes = vec![0u8; records * RECORD_LEN];
    openssl::rand::rand_bytes(&mut bytes).expect("rand");
    FarmKeys::from_bytes(std::path::Path::new("test keys"), &bytes).expect("keys")
}

/// A config for `endpoint` with sealing keys, two connections.
pub(crate) fn config(endpoint: Endpoint, timeout: Duration) -> FarmConfig {
    FarmConfig {
        endpoint,
        replica: None,
        tls: TlsFiles::default(),
        timeout,
        sealer: Sealer::keys(random_keys(1)),
        prefix: "socache-shm:".to_string(),
        namespace: "mod_ssl-session".to_string(),
        connections: 2,
        max_value: 16 * 1024,
        home_pid: None,
    }
}

/// A farm on `server` and its recorder.
pub(crate) fn farm_for(server: &RedisServer, timeout: Duration) -> (Farm, Arc<Recorder>) {
    let endpoint = Endpoint::parse(&server.url()).expect("endpoint");
    farm_with(config(endpoint, timeout))
}

pub(crate) fn farm_with(config: FarmConfig) -> (Farm, Arc<Recorder>) {
    let recorder = Arc::new(Recorder::default());
    let farm = Farm::new(config, Box::new(Recording(recorder.clone()))).expect("farm");
    (farm, recorder)
}

/// Fresh zeroed tier words (the segment header's, in the provider).
pub(crate) fn words() -> Box<[AtomicU64; TIER_WORDS]> {
    Box::new(std::array::from_fn(|_| AtomicU64::new(0)))
}

/// A figure's value by key.
pub(crate) fn figure(words: &[AtomicU64; TIER_WORDS], key: &str) -> String {
    socache_shm_farm::figures(words, socache_shm_farm::now_us())
        .into_iter()
        .find(|(k, _, _)| *k == key)
        .map(|(_, _, v)| v)
        .unwrap_or_default()
}
