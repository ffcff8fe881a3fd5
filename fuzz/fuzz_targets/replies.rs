//! The farm tier against a server that answers anything: a real TCP
//! server on loopback (a thread of this process) reads each request and
//! writes the input's bytes back as the reply, then closes. Over the
//! Redis protocol and memcached's meta protocol (the first byte's low bit
//! chooses; its next bit makes the reply endless: repeated to 8 MiB), a
//! lookup never panics, ends within its deadline, stops reading at its
//! byte budget (or the process would grow past libFuzzer's -rss_limit_mb),
//! and never yields a value: nothing the server makes up opens under the
//! farm key.
#![no_main]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener};
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use socache_shm_farm::keys::RECORD_LEN;
use socache_shm_farm::{
    now_us, Endpoint, Farm, FarmConfig, FarmKeys, Lookup, Sealer, TlsFiles, TIER_WORDS,
};

/// The farm's deadline per operation.
const TIMEOUT: Duration = Duration::from_millis(200);
/// Slack for a loaded machine before a lookup counts as unbounded.
const SLACK: Duration = Duration::from_secs(2);

/// What the server answers next, and how many times over.
static REPLY: Mutex<(Vec<u8>, usize)> = Mutex::new((Vec::new(), 1));

/// An endless reply's length.
const ENDLESS: usize = 8 << 20;

/// The server's port, started once: for each connection, read whatever
/// arrives, answer [`REPLY`], close.
fn server() -> u16 {
    static PORT: OnceLock<u16> = OnceLock::new();
    *PORT.get_or_init(|| {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        std::thread::spawn(move || {
            for mut conn in listener.incoming().flatten() {
                let mut buf = [0u8; 4096];
                let _ = conn.set_read_timeout(Some(Duration::from_secs(1)));
                // A farm that keeps the connection without reading the rest
                // of an endless reply must not stall the next input.
                let _ = conn.set_write_timeout(Some(Duration::from_millis(100)));
                if matches!(conn.read(&mut buf), Ok(n) if n > 0) {
                    let (reply, times) = REPLY.lock().map(|r| r.clone()).unwrap_or_default();
                    for _ in 0..times {
                        if conn.write_all(&reply).is_err() {
                            break; // the farm gave up reading, or stopped
                        }
                    }
                }
                let _ = conn.shutdown(Shutdown::Both);
            }
        });
        port
    })
}

/// A farm on the server, over Redis (`memcache` false) or memcached.
fn farm(memcache: bool) -> Farm {
    let addr = format!("127.0.0.1:{}", server());
    let endpoint = if memcache {
        Endpoint::parse_memcache(&addr)
    } else {
        Endpoint::parse(&format!("redis://{addr}"))
    }
    .expect("endpoint");
    let keys =
        FarmKeys::from_bytes(std::path::Path::new("fuzz keys"), &[7u8; RECORD_LEN]).expect("keys");
    let config = FarmConfig {
        endpoint,
        replica: None,
        tls: TlsFiles::default(),
        timeout: TIMEOUT,
        sealer: Sealer::keys(keys),
        prefix: "socache-shm:".to_string(),
        namespace: "mod_ssl-session".to_string(),
        connections: 1,
        max_value: 16 * 1024,
        home_pid: None,
    };
    Farm::new(config, Box::new(())).expect("farm")
}

fuzz_target!(|data: &[u8]| {
    static FARMS: OnceLock<(Farm, Farm)> = OnceLock::new();
    let (redis, memcache) = FARMS.get_or_init(|| (farm(false), farm(true)));
    let Some((&choice, reply)) = data.split_first() else {
        return;
    };
    let times = if choice & 2 == 0 || reply.is_empty() {
        1
    } else {
        ENDLESS / reply.len()
    };
    *REPLY.lock().expect("reply") = (reply.to_vec(), times);
    let farm = if choice & 1 == 0 { redis } else { memcache };
    // Fresh tier words: a breaker opened by an earlier input does not skip
    // this one.
    let words: Box<[AtomicU64; TIER_WORDS]> = Box::new(std::array::from_fn(|_| AtomicU64::new(0)));
    let started = Instant::now();
    let answer = farm.retrieve(&words, &[0x5a; 32], now_us());
    let took = started.elapsed();
    assert!(
        !matches!(answer, Lookup::Hit { .. }),
        "a made-up reply opened: {answer:?}"
    );
    assert!(
        took < TIMEOUT + SLACK,
        "a lookup took {took:?} (timeout {TIMEOUT:?})"
    );
});
