//! memcached: the real Debian `memcached` on a loopback port.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use crate::server::{Kind, Server};
use crate::ServerDir;

/// Debian's `memcached` (16 MiB, no UDP): the [`Kind`] of a [`Memcached`].
pub struct Memcache;

/// A `memcached` we started, on `127.0.0.1:port`.
pub type Memcached = Server<Memcache>;

impl Kind for Memcache {
    const NAME: &'static str = "memcached";

    fn command(&self, port: u16, _dir: &ServerDir) -> Command {
        let mut command = Command::new("memcached");
        command
            .args(["-l", "127.0.0.1", "-p", &port.to_string()])
            .args(["-U", "0", "-m", "16"])
            // memcached refuses to run as root without a user to become.
            .args(["-u", "nobody"]);
        command
    }

    fn ready(port: u16) -> bool {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    }
}

impl Server<Memcache> {
    /// A server on a free loopback port; returns once it accepts.
    pub fn start() -> Memcached {
        Server::launch(Memcache, Memcached::new_dir(), None)
    }

    /// One text-protocol command's whole answer (up to `END`); reads
    /// bounded by 5 s each.
    pub fn ask(&self, command: &str) -> Vec<u8> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        s.write_all(format!("{command}\r\n").as_bytes())
            .expect("write");
        let mut out = Vec::new();
        let mut buf = [0u8; 65536];
        while !out.ends_with(b"END\r\n") {
            let n = s.read(&mut buf).expect("read");
            assert!(n > 0, "memcached closed");
            out.extend_from_slice(&buf[..n]);
        }
        out
    }

    /// A `stats` figure (0 when absent).
    pub fn stat(&self, name: &str) -> u64 {
        String::from_utf8_lossy(&self.ask("stats"))
            .lines()
            .find_map(|l| l.strip_prefix(&format!("STAT {name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }
}
