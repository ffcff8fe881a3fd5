//! Hash flooding: ids an attacker picked to collide under a *known* hash key
//! pile into one shard and one probe chain of a cache using that key, but
//! spread like random ids in a real cache, whose key is random per segment
//! and never leaves it.
//!
//! The cost of a flood is measured in index groups probed per lookup
//! (`Cache::probe_groups`), not in time: a count does not depend on the
//! machine's speed or on what else runs on it.

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

/// Mean index groups probed by a lookup of each id, every id stored (from
/// an empty cache).
fn mean_probe(cache: &Cache, ids: &[[u8; 32]]) -> f64 {
    cache.flush();
    let exp = cache.now().plus_secs(3600);
    for i in ids {
        cache.store(i, &[5u8; 160], exp).expect("store");
    }
    let total: u64 = ids
        .iter()
        .map(|i| cache.probe_groups(i).expect("shard in service") as u64)
        .sum();
    total as f64 / ids.len() as f64
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

    // Lookups: hostile ids probe about as many index groups as random ids
    // under the secret key, and far more under the known key (so the
    // figure does see a flood).
    let p_random = mean_probe(&real, &random);
    let p_hostile = mean_probe(&real, &hostile);
    let p_known = mean_probe(&known, &hostile);
    println!(
        "index groups probed per lookup of {HOSTILE} ids: random {p_random:.2}, hostile {p_hostile:.2} (secret key), hostile {p_known:.2} (known key)"
    );
    assert!(
        p_hostile <= p_random * 1.5 + 0.5,
        "hostile ids probe {p_hostile:.2} groups per lookup, random ids {p_random:.2}"
    );
    assert!(
        p_known >= 4.0 * p_hostile,
        "the known-key flood is not seen by the probe count: {p_known:.2} vs {p_hostile:.2}"
    );
}
