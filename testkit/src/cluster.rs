//! A Redis Cluster of [`RedisServer`]s on loopback.

use std::collections::HashMap;
use std::thread;
use std::time::{Duration, Instant};

use crate::redis::wait_for_sessions;
use crate::{free_port, redis_cli, RedisServer, WAIT};

/// A Redis Cluster of standalone masters (no replicas), created with
/// `redis-cli --cluster create`. With `cluster-require-full-coverage no`,
/// so that a dead node costs only its own slots: the live nodes keep
/// answering for theirs (with the default, the whole cluster refuses every
/// command once the node is marked failed).
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
    alive: Vec<bool>,
}

impl RedisCluster {
    /// `n` (≥ 3) nodes; returns when every node reports `cluster_state:ok`.
    pub fn start(n: usize) -> RedisCluster {
        assert!(n >= 3, "a Redis Cluster needs at least 3 masters");
        let nodes: Vec<RedisServer> = (0..n)
            .map(|_| {
                // The bus port too: the default (port + 10000) could land in
                // the ephemeral range or on another test's port.
                let bus = free_port().to_string();
                RedisServer::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                    "--cluster-port",
                    &bus,
                    "--cluster-require-full-coverage",
                    "no",
                ])
            })
            .collect();
        let addrs: Vec<String> = nodes.iter().map(RedisServer::addr).collect();
        let mut args = vec!["--cluster", "create"];
        args.extend(addrs.iter().map(String::as_str));
        args.extend(["--cluster-replicas", "0", "--cluster-yes"]);
        redis_cli(&args);
        let cluster = RedisCluster {
            alive: vec![true; nodes.len()],
            nodes,
        };
        let deadline = Instant::now() + WAIT;
        for node in &cluster.nodes {
            loop {
                let info = node.command(&[b"CLUSTER", b"INFO"]).text();
                if info.lines().any(|l| l.trim() == "cluster_state:ok") {
                    break;
                }
                if Instant::now() > deadline {
                    panic!(
                        "node {} not cluster_state:ok within {WAIT:?}:\n{info}",
                        node.addr()
                    );
                }
                thread::sleep(Duration::from_millis(100));
            }
        }
        cluster
    }

    /// The seed list for `redis-cluster=`: `host:port,host:port,...`.
    pub fn seeds(&self) -> String {
        self.nodes
            .iter()
            .map(RedisServer::addr)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// SIGKILL node `i`.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].kill();
        self.alive[i] = false;
    }

    /// Every key of every live node, with the node's index.
    pub fn keys(&self) -> Vec<(usize, String)> {
        let mut out = Vec::new();
        for (i, node) in self.nodes.iter().enumerate() {
            if self.alive[i] {
                out.extend(node.keys().into_iter().map(|k| (i, k)));
            }
        }
        out
    }

    /// Calls per command, summed over the live nodes.
    pub fn commandstats(&self) -> HashMap<String, u64> {
        let mut sum = HashMap::new();
        for (i, node) in self.nodes.iter().enumerate() {
            if self.alive[i] {
                for (k, v) in node.commandstats() {
                    *sum.entry(k).or_insert(0) += v;
                }
            }
        }
        sum
    }

    /// [`RedisServer::wait_for_sessions`] over the live nodes: (node, key).
    pub fn wait_for_sessions(
        &self,
        prefix: &str,
        ids: &[String],
        limit: Duration,
    ) -> Vec<Option<(usize, String)>> {
        // The node index is prepended to each key, and the prefix is
        // checked after it (below).
        let keys = || {
            self.keys()
                .into_iter()
                .map(|(i, k)| format!("{i} {k}"))
                .collect()
        };
        wait_for_sessions(keys, "", ids, limit)
            .into_iter()
            .map(|f| {
                let s = f?;
                let (i, k) = s.split_once(' ')?;
                k.starts_with(prefix)
                    .then(|| (i.parse().expect("node index"), k.to_string()))
            })
            .collect()
    }
}
