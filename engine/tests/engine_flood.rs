//! Hash flooding: ids an attacker picked to collide under a *known* hash key
//! pile into one shard and one probe chain of a cache using that key, but
//! spread like random ids in a real cache, whose key is random per segment
//! and never leaves it.

use std::time::Instant;

use socache_shm_engine::{Cache, CacheConfig};

const BYTES: u64 = 4 << 20;
const KNOWN_KEY: [u64; 2] = [0, 0];
const HOSTILE: usize = 250;

fn id(n: u64) -> [u8; 32] {
    let mut id = [0u8; 32];
    id[..8].copy_from_slice(&n.to_le_bytes());
    id[8..16].copy_from_slice(&n.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
    id
}

/// `count` ids that all land in shard 0 under KNOWN_KEY and share the top
/// bits of their in-shard position: the worst case for a cache using that key.
fn colliding_ids(count: usize, shards: usize) -> Vec<[u8; 32]> {
    let mut out = Vec::with_capacity(count);
    let mut n = 0u64;
    while out.len() < count {
        let candidate = id(n);
        n += 1;
        let h = siphash(&candidate);
        if Cache::shard_for(KNOWN_KEY, shards, &candidate) == 0 && (h as u32) >> 24 == 0 {
            out.push(candidate);
        }
    }
    out
}

fn siphash(id: &[u8]) -> u64 {
    use std::hash::Hasher;
    let mut h = siphasher::sip::SipHasher13::new_with_keys(KNOWN_KEY[0], KNOWN_KEY[1]);
    h.write(id);
    h.finish()
}

/// Best of five: seconds for storing then retrieving every id.
fn time_ops(cache: &Cache, ids: &[[u8; 32]]) -> f64 {
    let exp = cache.now().plus_secs(3600);
    let value = [5u8; 160];
    let mut buf = [0u8; 256];
    let mut best = f64::MAX;
    for _ in 0..5 {
        cache.flush();
        let t = Instant::now();
        for i in ids {
            cache.store(i, &value, exp).expect("store");
        }
        for i in ids {
            let _ = cache.retrieve(i, &mut buf);
        }
        best = best.min(t.elapsed().as_secs_f64());
    }
    best
}

fn max_shard_entries(cache: &Cache) -> u64 {
    cache
        .shard_stats()
        .iter()
        .map(|s| s.entries)
        .max()
        .unwrap_or(0)
}

#[test]
fn colliding_ids_do_not_degrade_a_cache_with_a_secret_key() {
    let config = CacheConfig::new(BYTES);
    let real = Cache::create(&config).expect("create");
    let shards = real.shard_count();
    assert!(shards >= 8, "want several shards at 4 MiB, got {shards}");
    // As many hostile ids as fit in one shard under the known key (a shard
    // of a 4 MiB cache holds about 300 TLS-sized entries).
    let hostile = colliding_ids(HOSTILE, shards);
    let random: Vec<[u8; 32]> = (0..HOSTILE as u64).map(|n| id(n * 7919 + 13)).collect();

    // A cache whose key the attacker knows: every hostile id in one shard.
    let known = Cache::create_keyed(&config, KNOWN_KEY).expect("create");
    let exp = known.now().plus_secs(3600);
    for i in &hostile {
        known.store(i, &[1u8; 160], exp).expect("store");
    }
    let piled = max_shard_entries(&known);

    // The real cache: the same ids spread over the shards like random ids.
    for i in &hostile {
        real.store(i, &[1u8; 160], exp).expect("store");
    }
    let spread = max_shard_entries(&real);
    let mean = hostile.len() as u64 / shards as u64;
    println!("hostile ids: {piled} in one shard under the known key; max {spread} per shard (mean {mean}) under the secret key");
    assert!(
        piled as usize >= hostile.len() * 9 / 10,
        "known-key pile-up not reproduced: {piled}"
    );
    assert!(
        spread <= mean * 3 + 8,
        "hostile ids cluster under the secret key: {spread} vs mean {mean}"
    );

    // Throughput: hostile ids within 2x of random ids.
    let t_random = time_ops(&real, &random);
    let t_hostile = time_ops(&real, &hostile);
    let ratio = t_hostile / t_random;
    println!(
        "store+retrieve of {HOSTILE} ids: random {:.0} us, hostile {:.0} us, ratio {ratio:.2}",
        t_random * 1e6,
        t_hostile * 1e6
    );
    assert!(
        ratio < 2.0,
        "hostile ids are {ratio:.2}x slower than random ids"
    );
}
