//! Attach to a segment file with fuzzer-chosen bytes patched into a valid one.
//! Whatever the bytes: attach either refuses with an error or yields a cache
//! whose `check` either reports a finding or passes; and a cache that passed
//! `check` survives a few operations and still passes. No panic, no hang.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use socache_shm_engine::Cache;

mod common;

/// A valid segment with entries, made once.
fn pristine() -> &'static (Vec<u8>, u64) {
    static SEG: OnceLock<(Vec<u8>, u64)> = OnceLock::new();
    SEG.get_or_init(|| {
        let (bytes, geo) = common::pristine_segment("attach", |cache, exp| {
            for i in 0..120u32 {
                let v = vec![i as u8; (i as usize * 37) % 600];
                cache.store(&i.to_le_bytes(), &v, exp).expect("store");
            }
            for i in (0..120u32).step_by(3) {
                cache.remove(&i.to_le_bytes());
            }
        });
        (bytes, geo.regions_offset)
    })
}

fuzz_target!(|data: &[u8]| {
    let (base, regions) = pristine();
    let mut seg = base.clone();
    // Patches: [u32 offset][u8 value] ... Offsets land in the segment header
    // or in the shard regions; the shard headers' lock words are left alone
    // (a garbage futex word is a wait, bounded by check's timed lock, that
    // would only slow the fuzzer down).
    for p in data.chunks_exact(5) {
        let off = u32::from_le_bytes([p[0], p[1], p[2], p[3]]) as u64;
        let span = 136 + (seg.len() as u64 - regions);
        let off = off % span;
        let at = if off < 136 {
            off
        } else {
            regions + (off - 136)
        };
        seg[at as usize] = p[4];
    }
    let path = common::scratch("attach", "case");
    std::fs::write(&path, &seg).expect("write");
    if let Ok(cache) = Cache::attach(&path) {
        if cache.check().is_ok() {
            let exp = cache.now().plus_secs(60);
            for i in 0..50u32 {
                let _ = cache.store(&(i * 7).to_le_bytes(), &[i as u8; 200], exp);
                let _ = cache.get(&i.to_le_bytes());
                cache.remove(&(i * 3).to_le_bytes());
            }
            cache
                .check()
                .expect("a cache that passed check stays consistent");
        }
    }
});
