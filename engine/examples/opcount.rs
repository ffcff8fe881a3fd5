//! Instructions per operation, for callgrind (deterministic, whatever else
//! the machine is doing): fill a 512,000-byte cache with 2,000 TLS-sized
//! entries (32-byte ids, 160-byte values), read the first 1,000 twice (so
//! their next reads take no lock), then run MODE N times. The difference
//! between `MODE N` and `none 0`, divided by N, is one operation's cost.
//!
//! ```text
//! cargo build --release -p socache-shm-engine --example opcount
//! valgrind --tool=callgrind target/release/examples/opcount none 0
//! valgrind --tool=callgrind target/release/examples/opcount hit 100000
//! valgrind --tool=callgrind target/release/examples/opcount store 100000
//! ```

use socache_shm_engine::{Cache, CacheConfig, Timestamp};

fn key(i: u64) -> [u8; 32] {
    let mut k = [0u8; 32];
    k[..8].copy_from_slice(&i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes());
    k
}

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_default();
    let n: u64 = std::env::args()
        .nth(2)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let c = Cache::create(&CacheConfig::new(512_000)).expect("create");
    let exp = Timestamp::from_secs(4_000_000_000);
    let v = [7u8; 160];
    for i in 0..2000u64 {
        c.store(&key(i), &v, exp).expect("store");
    }
    let mut buf = [0u8; 256];
    for _ in 0..2 {
        for i in 0..1000u64 {
            let _ = c.retrieve(&key(i), &mut buf);
        }
    }
    match mode.as_str() {
        "hit" => {
            for r in 0..n {
                let _ = std::hint::black_box(c.retrieve(&key(r % 1000), &mut buf));
            }
        }
        "store" => {
            for r in 0..n {
                c.store(&key(100_000 + r), &v, exp).expect("store");
            }
        }
        "none" => {}
        other => {
            eprintln!("opcount: MODE is none, hit or store, not {other:?}");
            std::process::exit(2);
        }
    }
}
