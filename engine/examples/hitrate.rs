//! Hit rate under Zipf(s=1) reuse, the engine half of the httpd bench's
//! `zipf` run (bench/results.md): D distinct TLS-sized sessions (about 10x
//! what the cache holds), popularity Zipf(s=1) over them (ranks scattered
//! over ids), a retrieve that misses stores the session again (a new full
//! handshake). Prints the hit rate over 2 D attempts after 2 D of warm-up.
//!
//! ```text
//! cargo run --release -p socache-shm-engine --example hitrate [BYTES...]
//! ```

use socache_shm_engine::testkit::Rng;
use socache_shm_engine::{Cache, CacheConfig, Timestamp};

fn key(i: u64) -> [u8; 32] {
    let mut k = [0u8; 32];
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    for c in k.chunks_mut(8) {
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        c.copy_from_slice(&z.to_le_bytes());
    }
    k
}

fn main() {
    let sizes: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![512_000, 4 << 20]
    } else {
        sizes
    };
    let exp = Timestamp::from_secs(4_000_000_000);
    for bytes in sizes {
        let c = Cache::create(&CacheConfig::new(bytes)).expect("create");
        // What it holds: store until the first eviction.
        let mut held = 0u64;
        while c.stats().evictions == 0 {
            let k = key(u64::MAX - held);
            c.store(&k, &[1u8; 160], exp).expect("store");
            held += 1;
        }
        c.flush();
        let d = held * 10;
        let mut cdf = Vec::with_capacity(d as usize);
        let mut sum = 0.0;
        for r in 1..=d {
            sum += 1.0 / r as f64;
            cdf.push(sum);
        }
        for i in 0..d {
            let k = key(i);
            c.store(&k, &[2u8; 160], exp).expect("store");
        }
        let mut rng = Rng(bytes);
        let mut buf = [0u8; 256];
        let (mut hits, mut tries) = (0u64, 0u64);
        for round in 0..4 * d {
            let u = rng.unit() * sum;
            let rank = cdf.partition_point(|&x| x < u) as u64;
            let k = key(rank);
            let hit = c.retrieve(&k, &mut buf).is_ok();
            if !hit {
                c.store(&k, &[3u8; 160], exp).expect("store");
            }
            if round >= 2 * d {
                tries += 1;
                hits += hit as u64;
            }
        }
        println!(
            "{bytes} B: holds {held}, D {d}: Zipf(s=1) hit rate {:.4}",
            hits as f64 / tries as f64
        );
    }
}
