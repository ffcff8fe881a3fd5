//! The `shmcache` inspector's read paths over fuzzer-patched segments:
//! `open` (attach + check), then `check`, `stat` (text, JSON, Prometheus, per shard)
//! and `dump` exactly as the tool runs them (socache_shm::inspect). Whatever
//! the bytes: an error or an answer, never a panic or a hang.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use shmcache as inspect;
use socache_shm_engine::{layout, Cache};

mod common;

/// A valid segment with live entries (some of them TLS-session-shaped DER
/// prefixes for dump's decoder), made once.
fn pristine() -> &'static (Vec<u8>, u64, u64) {
    static SEG: OnceLock<(Vec<u8>, u64, u64)> = OnceLock::new();
    SEG.get_or_init(|| {
        let (bytes, geo) = common::pristine_segment("inspect", |cache, exp| {
            for i in 0..80u32 {
                let mut v = vec![0x30, 0x81, 0x90, 0x02, 0x01, 0x01];
                v.resize(6 + (i as usize * 29) % 400, i as u8);
                cache.store(&[i as u8; 32], &v, exp).expect("store");
            }
            for i in (0..80u32).step_by(4) {
                cache.remove(&[i as u8; 32]);
            }
        });
        (bytes, geo.shard_headers_offset, geo.stripes_offset)
    })
}

/// Size of a `pthread_mutex_t` on this target: the shard header's lock.
const LOCK_BYTES: u64 = std::mem::size_of::<libc_mutex::Mutex>() as u64;

mod libc_mutex {
    /// glibc x86_64/aarch64 `pthread_mutex_t`: 40 bytes, 8-aligned.
    #[repr(C, align(8))]
    pub struct Mutex([u8; 40]);
}

fuzz_target!(|data: &[u8]| {
    let (base, shard_headers, stripes) = pristine();
    let mut seg = base.clone();
    // Patches: [u32 offset][u8 value] ... anywhere in the file except the
    // shard locks (a garbage lock word is a bounded 1 s wait, tested by
    // tests/httpd_hostile.rs; here it would only slow the fuzzer down).
    let header_size = std::mem::size_of::<layout::ShardHeader>() as u64;
    for p in data.chunks_exact(5) {
        let off = u32::from_le_bytes([p[0], p[1], p[2], p[3]]) as u64 % seg.len() as u64;
        let in_lock = off >= *shard_headers
            && off < *stripes
            && (off - shard_headers) % header_size < LOCK_BYTES;
        if !in_lock {
            seg[off as usize] = p[4];
        }
    }
    let path = common::scratch("inspect", "case");
    std::fs::write(&path, &seg).expect("write");
    if let Ok(cache) = Cache::attach(&path) {
        let _ = inspect::check(&cache);
    }
    if let Ok(cache) = inspect::open(&path) {
        let _ = inspect::stat(&cache, false, true);
        let _ = inspect::stat(&cache, true, true);
        let _ = inspect::stat_prometheus(&cache, "/fuzz/\"seg\"", true);
        let _ = inspect::dump(&cache);
        let _ = inspect::check(&cache);
    }
});
