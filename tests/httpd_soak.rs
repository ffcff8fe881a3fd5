//! The soak (`make soak`, not in CI): SOAK_SECONDS (default 600) of mixed
//! TLS 1.2/1.3 load on a prefork httpd using `shm`, with a random child
//! SIGKILLed every 300 ms. Every 30 s it reports the resumption rate, client
//! errors, the httpd processes' total RSS and the segment file's size; at the
//! end it checks that the segment never grew past its bytes, that the
//! accounting is consistent (`shmcache check`) and that sessions resume.
//!
//!     cargo test --release --test httpd_soak -- --ignored --nocapture

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{
    children, Client, Httpd, Mpm, Options, Provider, SessionCache, Tally, Tls, CACHE_FILE,
};

const BYTES: u64 = 1 << 20;

/// Total VmRSS (kB) of the parent and its children.
fn rss_kb(parent: u32) -> u64 {
    let mut pids = children(parent);
    pids.push(parent as i32);
    pids.iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok())
        .filter_map(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .sum()
}

#[test]
#[ignore = "10-minute soak; run with make soak"]
fn soak_under_load_with_children_killed() {
    let seconds: u64 = std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    let opts = Options::new(Provider::Shm, Mpm::Prefork).cache(SessionCache::File { bytes: BYTES });
    let mut httpd = Httpd::start(opts);
    let port = httpd.port();
    let parent = httpd.pid();
    let seg = httpd.dir().join(CACHE_FILE);
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());

    let workers: Vec<_> = (0..4)
        .map(|w| {
            let stop = stop.clone();
            let tally = tally.clone();
            thread::spawn(move || {
                let client = Client::new(if w % 2 == 0 { Tls::V12 } else { Tls::V13 });
                let mut session = None;
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    // A new session every 20 connections, resumed in between.
                    let offer = if n.is_multiple_of(20) {
                        None
                    } else {
                        session.as_ref()
                    };
                    let outcome = client.handshake(port, offer).and_then(|o| o.request("/"));
                    session = tally.record(offer.is_some(), outcome, session.take());
                }
            })
        })
        .collect();

    let start = Instant::now();
    let mut kills = 0u64;
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next_report = Duration::from_secs(30);
    let (mut last_attempts, mut last_resumed, mut last_errors) = (0, 0, 0);
    let mut max_seg = 0u64;
    let mut rss_samples = Vec::new();
    println!("soak: {seconds} s, prefork, shm {BYTES} bytes, 4 client threads, a child killed every 300 ms");
    println!(
        "{:>6} {:>9} {:>9} {:>8} {:>7} {:>10} {:>10}",
        "t(s)", "attempts", "resumed%", "errors", "kills", "rss(kB)", "seg(B)"
    );
    while start.elapsed() < Duration::from_secs(seconds) {
        thread::sleep(Duration::from_millis(300));
        let kids = children(parent);
        if !kids.is_empty() {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let victim = kids[(rng % kids.len() as u64) as usize];
            // SAFETY: kill has no memory-safety preconditions; victim is an httpd child.
            unsafe { libc::kill(victim, libc::SIGKILL) };
            kills += 1;
        }
        max_seg = max_seg.max(std::fs::metadata(&seg).map(|m| m.len()).unwrap_or(0));
        if start.elapsed() >= next_report {
            next_report += Duration::from_secs(30);
            let a = tally.attempts.load(Ordering::Relaxed);
            let r = tally.resumed.load(Ordering::Relaxed);
            let e = tally.errors.load(Ordering::Relaxed);
            let rss = rss_kb(parent);
            rss_samples.push(rss);
            let window = (a - last_attempts).max(1);
            println!(
                "{:>6} {:>9} {:>8.1}% {:>8} {:>7} {:>10} {:>10}",
                start.elapsed().as_secs(),
                a - last_attempts,
                100.0 * (r - last_resumed) as f64 / window as f64,
                e - last_errors,
                kills,
                rss,
                max_seg
            );
            (last_attempts, last_resumed, last_errors) = (a, r, e);
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().expect("client thread");
    }
    httpd.check_alive("after the soak");

    let a = tally.attempts.load(Ordering::Relaxed);
    let r = tally.resumed.load(Ordering::Relaxed);
    println!(
        "total: {} full handshakes, {a} resumption attempts, {r} resumed ({:.2}%), {} client errors (connections cut by kills), {kills} kills",
        tally.full.load(Ordering::Relaxed),
        100.0 * r as f64 / a.max(1) as f64,
        tally.errors.load(Ordering::Relaxed)
    );
    println!("segment file: at most {max_seg} bytes (configured {BYTES}); httpd RSS samples (kB): {rss_samples:?}");
    assert!(max_seg <= BYTES, "segment grew to {max_seg} bytes");
    let check = std::process::Command::new(common::shmcache_bin())
        .arg("check")
        .arg(&seg)
        .output()
        .expect("run shmcache");
    println!(
        "shmcache check: {}",
        String::from_utf8_lossy(&check.stdout).trim()
    );
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    // Sessions still resume across children after all that.
    // (Prefork may still be replacing the last children killed: up to three tries.)
    let client = Client::new(Tls::V12);
    let resumed_all = (0..3).any(|_| {
        thread::sleep(Duration::from_secs(1));
        let first = httpd.connect(&client, None);
        let conns = httpd.concurrent(&client, &first.session, 4);
        conns.iter().all(|c| c.resumed)
    });
    assert!(resumed_all, "resumption broken after the soak");
    let recoveries = httpd.figure("CacheRecoveries");
    println!("CacheRecoveries after the soak: {recoveries}");
    httpd.stop();
}
