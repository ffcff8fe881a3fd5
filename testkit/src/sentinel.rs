//! Redis Sentinel: `redis-server --sentinel` with a configuration of its
//! own, watching one master.

use std::fs;
use std::process::Command;

use crate::redis::{redis_server_bin, resp_command, Resp};
use crate::server::{Kind, Server};
use crate::ServerDir;

/// A sentinel watching master `m` at 127.0.0.1:`master_port` with a quorum
/// of 2, down after 1 s, failover timeout 4 s: the [`Kind`] of a
/// [`Sentinel`].
pub struct Watch {
    master_port: u16,
}

/// A sentinel we started, on `127.0.0.1:port`.
pub type Sentinel = Server<Watch>;

impl Kind for Watch {
    const NAME: &'static str = "sentinel";

    /// Writes `sentinel.conf` in `dir` (a sentinel rewrites its file, so
    /// each has a directory of its own).
    fn command(&self, port: u16, dir: &ServerDir) -> Command {
        let conf = dir.join("sentinel.conf");
        fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {}\n\
                 sentinel monitor m 127.0.0.1 {} 2\n\
                 sentinel down-after-milliseconds m 1000\n\
                 sentinel failover-timeout m 4000\n\
                 sentinel parallel-syncs m 1\n",
                dir.path().display(),
                self.master_port
            ),
        )
        .expect("sentinel.conf");
        let mut command = Command::new(redis_server_bin());
        command.arg(&conf).arg("--sentinel");
        command
    }

    fn ready(port: u16) -> bool {
        resp_command(port, &[b"PING"]) == Ok(Resp::Simple("PONG".into()))
    }
}

impl Server<Watch> {
    /// One sentinel watching the master on `master_port`, named `m`.
    pub fn start(master_port: u16) -> Sentinel {
        Server::launch(Watch { master_port }, Sentinel::new_dir(), None)
    }

    /// Three sentinels on `master_port` and their list for
    /// `redis-sentinel=` (`host:port,host:port,host:port`).
    pub fn three(master_port: u16) -> (Vec<Sentinel>, String) {
        let sentinels: Vec<Sentinel> = (0..3).map(|_| Sentinel::start(master_port)).collect();
        let list = sentinels
            .iter()
            .map(Server::addr)
            .collect::<Vec<_>>()
            .join(",");
        (sentinels, list)
    }
}
