//! Misbehaving servers (small real ones, on loopback, written for the
//! test): whatever they do, a lookup ends within its deadline, reads at
//! most a bounded number of bytes, and is counted by kind.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use socache_shm_farm::{now_us, stats, Endpoint, Lookup, TlsFiles};

/// A server on loopback whose every connection runs `serve`; counts the
/// bytes it managed to write.
fn rogue(serve: fn(TcpStream, &AtomicU64)) -> (u16, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let counter = counter.clone();
            thread::spawn(move || serve(conn, &counter));
        }
    });
    (port, sent)
}

/// Reads one command's worth (whatever arrives) and says so.
fn read_some(conn: &mut TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    matches!(conn.read(&mut buf), Ok(n) if n > 0)
}

fn stall(conn: TcpStream, _: &AtomicU64) {
    // Accepts, never answers (not even a TLS ServerHello), holds on.
    thread::sleep(Duration::from_secs(30));
    drop(conn);
}

fn drip(mut conn: TcpStream, sent: &AtomicU64) {
    while read_some(&mut conn) {
        for byte in b"$5\r\nhello\r\n" {
            thread::sleep(Duration::from_millis(20));
            if conn.write_all(&[*byte]).is_err() {
                return;
            }
            sent.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn huge(mut conn: TcpStream, sent: &AtomicU64) {
    const SIZE: usize = 64 << 20;
    let chunk = vec![b'x'; 64 * 1024];
    while read_some(&mut conn) {
        if conn.write_all(format!("${SIZE}\r\n").as_bytes()).is_err() {
            return;
        }
        for _ in 0..SIZE / chunk.len() {
            if conn.write_all(&chunk).is_err() {
                return;
            }
            sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        let _ = conn.write_all(b"\r\n");
    }
}

fn garbage(mut conn: TcpStream, _: &AtomicU64) {
    while read_some(&mut conn) {
        if conn.write_all(b"?\x00\xffnot resp at all\r\n").is_err() {
            return;
        }
    }
}

/// Lookups against `url`, each timed: the slowest, and the farm's words.
fn lookups(
    url: &str,
    timeout: Duration,
    n: usize,
    tls: TlsFiles,
) -> (Duration, Box<[AtomicU64; 32]>) {
    let mut c = config(Endpoint::parse(url).expect("endpoint"), timeout);
    c.tls = tls;
    let (farm, _) = farm_with(c);
    let words = words();
    let mut slowest = Duration::ZERO;
    for i in 0..n {
        let started = Instant::now();
        let answer = farm.retrieve(&words, &[i as u8; 32], now_us());
        slowest = slowest.max(started.elapsed());
        assert!(
            matches!(answer, Lookup::Failed | Lookup::Skipped),
            "{answer:?}"
        );
    }
    (slowest, words)
}

/// Five lookups against a plain (no TLS) rogue server running `serve`:
/// the slowest, the farm's words, the bytes the server wrote.
fn five_lookups(
    serve: fn(TcpStream, &AtomicU64),
    timeout: Duration,
) -> (Duration, Box<[AtomicU64; 32]>, Arc<AtomicU64>) {
    let (port, sent) = rogue(serve);
    let url = format!("redis://127.0.0.1:{port}");
    let (slowest, words) = lookups(&url, timeout, 5, TlsFiles::default());
    (slowest, words, sent)
}

/// Every lookup ended within `timeout` (and [`MARGIN`]), and they timed
/// out rather than failing otherwise.
fn assert_timed_out(what: &str, slowest: Duration, timeout: Duration, words: &[AtomicU64; 32]) {
    println!("{what}: slowest lookup {slowest:?}");
    assert!(slowest < timeout + MARGIN, "{slowest:?}");
    assert!(stats(words).timeouts >= 3, "{:?}", stats(words));
}

/// Generous: a loaded CI machine may be late waking us.
const MARGIN: Duration = Duration::from_millis(400);

#[test]
fn a_tls_handshake_that_never_completes_is_bounded_by_the_timeout() {
    let (port, _) = rogue(stall);
    // Any CA will do: the server never gets as far as a certificate.
    let server = RedisServer::start_tls();
    let ca = server.ca_file();
    let timeout = Duration::from_millis(100);
    let (slowest, words) = lookups(
        &format!("rediss://127.0.0.1:{port}"),
        timeout,
        5,
        TlsFiles {
            ca: Some(ca),
            cert: None,
            key: None,
        },
    );
    assert_timed_out("stalled TLS handshake", slowest, timeout, &words);
}

#[test]
fn a_dripped_reply_is_bounded_by_the_deadline_not_per_read() {
    let timeout = Duration::from_millis(100);
    let (slowest, words, _) = five_lookups(drip, timeout);
    assert_timed_out("dripped reply", slowest, timeout, &words);
}

#[test]
fn a_huge_reply_is_refused_without_being_read_whole() {
    let (slowest, words, sent) = five_lookups(huge, Duration::from_secs(2));
    let s = stats(&words);
    println!(
        "64 MiB replies: slowest lookup {slowest:?}, server wrote {} bytes in all, {s:?}",
        sent.load(Ordering::Relaxed)
    );
    assert_eq!(s.bad_replies, 5, "{s:?}");
    assert_eq!(s.breaker_openings, 0, "a bad reply costs no wait");
    // Five lookups read at most their budget each (the server's writes
    // stop once the socket buffers fill and the connection is dropped).
    assert!(
        sent.load(Ordering::Relaxed) < 5 * (16 << 20),
        "{} bytes went out",
        sent.load(Ordering::Relaxed)
    );
}

#[test]
fn garbage_is_a_bad_reply() {
    let (slowest, words, _) = five_lookups(garbage, Duration::from_millis(200));
    let s = stats(&words);
    println!("garbage: slowest lookup {slowest:?}, {s:?}");
    assert_eq!(s.bad_replies, 5, "{s:?}");
    assert_eq!(s.breaker_openings, 0);
}
