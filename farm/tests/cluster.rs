//! The farm against a three-master Redis Cluster on loopback: ids spread
//! over the slots of every node roundtrip through one farm.

mod common;

use std::time::Duration;

use common::*;
use socache_shm_farm::{now_us, stats, Endpoint, Lookup, Topology};

#[test]
fn fifty_ids_roundtrip_across_the_cluster() {
    let cluster = RedisCluster::start(3);
    let endpoint = Endpoint::parse_cluster(&cluster.seeds()).expect("seeds");
    assert_eq!(endpoint.topology(), Topology::Cluster);
    let mut config = config(endpoint, Duration::from_millis(1000));
    config.connections = 4;
    let (farm, events) = farm_with(config);
    let words = words();
    let ids: Vec<[u8; 32]> = (0..50u8).map(|i| [i; 32]).collect();
    for id in &ids {
        farm.store(&words, id, &[id[0]; 100], now_us() + 300_000_000, now_us());
    }
    for id in &ids {
        let hit = poll(Duration::from_secs(20), || {
            match farm.retrieve(&words, id, now_us()) {
                Lookup::Hit { value, .. } => Some(value),
                _ => None,
            }
        });
        assert_eq!(hit, Some(vec![id[0]; 100]), "id {}", id[0]);
    }
    // The keys are spread: every master holds some.
    let per_node: Vec<i64> = cluster
        .nodes
        .iter()
        .map(|n| {
            redis::cmd("DBSIZE")
                .query(&mut n.connection())
                .expect("DBSIZE")
        })
        .collect();
    assert_eq!(per_node.iter().sum::<i64>(), 50, "{per_node:?}");
    assert!(per_node.iter().all(|&n| n > 0), "{per_node:?}");
    let s = stats(&words);
    assert_eq!(s.remote_hits, 50, "{s:?}");
    assert_eq!(
        events.opened(),
        0,
        "{:?}",
        events.whys.lock().map(|w| w.clone())
    );
}
