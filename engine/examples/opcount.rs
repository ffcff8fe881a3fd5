//! Instructions per operation, for callgrind (deterministic, whatever else
//! the machine is doing): fill a cache of BYTES (default 512,000) with
//! TLS-sized entries (32-byte ids, 160-byte values; 2,000 of them per
//! 512,000 bytes, under what the cache holds), read the first half twice
//! (so their next reads are repeated reads), then run MODE N times inside
//! `measured`, the only function callgrind counts:
//!
//! - `hit`: repeated reads, over the read half in a scattered order;
//! - `first`: first reads of entries never read before (the unread half,
//!   each once: N is capped at half the entries);
//! - `miss`: retrieves of ids never stored;
//! - `store`: fresh ids (the cache fills, then every store evicts);
//! - `none`: nothing (the harness alone).
//!
//! ```text
//! cargo build --release -p socache-shm-engine --example opcount
//! valgrind --tool=callgrind --toggle-collect=opcount::measured \
//!     target/release/examples/opcount hit 100000 [BYTES]
//! ```
//! One operation's cost is callgrind's total divided by N (the harness's
//! own share, a key made and a loop step, is a few instructions: `none`).

use socache_shm_engine::{Cache, CacheConfig, Timestamp};

fn key(i: u64) -> [u8; 32] {
    let mut k = [0u8; 32];
    k[..8].copy_from_slice(&i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes());
    k
}

/// Step through 0..n in a scattered order (n and STEP coprime): no divide.
const STEP: u64 = 7_919;

#[inline(never)]
fn measured(c: &Cache, mode: &str, n: u64, half: u64) {
    let exp = Timestamp::from_secs(4_000_000_000);
    let v = [7u8; 160];
    let mut buf = [0u8; 256];
    let mut at = 0u64;
    match mode {
        "hit" => {
            for _ in 0..n {
                let _ = std::hint::black_box(c.retrieve(&key(at), &mut buf));
                at += STEP;
                while at >= half {
                    at -= half;
                }
            }
        }
        "first" => {
            for _ in 0..n.min(half) {
                let _ = std::hint::black_box(c.retrieve(&key(half + at), &mut buf));
                at += STEP;
                while at >= half {
                    at -= half;
                }
            }
        }
        "miss" => {
            for r in 0..n {
                let _ = std::hint::black_box(c.retrieve(&key(1 << 40 | r), &mut buf));
            }
        }
        "store" => {
            for r in 0..n {
                c.store(&key(1 << 41 | r), &v, exp).expect("store");
            }
        }
        "none" => {
            for _ in 0..n {
                std::hint::black_box(key(at));
                at += STEP;
                while at >= half {
                    at -= half;
                }
            }
        }
        other => {
            eprintln!("opcount: MODE is hit, first, miss, store or none, not {other:?}");
            std::process::exit(2);
        }
    }
}

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_default();
    let n: u64 = std::env::args()
        .nth(2)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let bytes: u64 = std::env::args()
        .nth(3)
        .and_then(|v| v.parse().ok())
        .unwrap_or(512_000);
    let c = Cache::create(&CacheConfig::new(bytes)).expect("create");
    let exp = Timestamp::from_secs(4_000_000_000);
    let v = [7u8; 160];
    let entries = bytes / 256;
    let half = entries / 2;
    assert!(half % STEP != 0);
    for i in 0..entries {
        c.store(&key(i), &v, exp).expect("store");
    }
    let mut buf = [0u8; 256];
    for _ in 0..2 {
        for i in 0..half {
            let _ = c.retrieve(&key(i), &mut buf);
        }
    }
    measured(&c, &mode, n, half);
}
