//! One life cycle for every server the kit starts: [`Server`] runs a
//! [`Kind`] (Redis, memcached) on a free loopback port in a directory of
//! its own, waits until it answers, and hangs, kills or restarts it on the
//! same ports. What differs between kinds is only the command line and how
//! to tell it is ready.

use std::process::{Command, Stdio};
use std::thread;
use std::time::Instant;

use crate::{free_port, ServerDir, ServerProcess, POLL, WAIT};

/// What a kind of server needs to say for [`Server`] to run it.
pub trait Kind {
    /// What it is, for messages and its directory's name.
    const NAME: &'static str;

    /// Its command line, listening on 127.0.0.1:`port` (a TLS port is in
    /// the kind's own arguments) with `dir` as its working directory; the
    /// working directory and stdio are set by [`Server`].
    fn command(&self, port: u16, dir: &ServerDir) -> Command;

    /// Whether the server on `port` answers.
    fn ready(port: u16) -> bool;
}

/// A server of kind `K` we started; killed on drop, then its directory
/// removed (unless a test panicked).
pub struct Server<K: Kind> {
    /// The plain port.
    pub port: u16,
    /// The TLS port, for a server that speaks TLS as well.
    pub tls_port: Option<u16>,
    /// Its working directory (its log, TLS files, sockets a test puts there).
    pub dir: ServerDir,
    pub(crate) kind: K,
    /// `None` while killed. Declared after `dir` but dropped first (Drop).
    process: Option<ServerProcess>,
}

impl<K: Kind> Server<K> {
    /// Start `kind` on a free port (and `tls_port`) in `dir`; returns once
    /// it answers.
    pub(crate) fn launch(kind: K, dir: ServerDir, tls_port: Option<u16>) -> Server<K> {
        let mut server = Server {
            port: free_port(),
            tls_port,
            dir,
            kind,
            process: None,
        };
        server.run();
        server
    }

    /// A new directory for a server of this kind.
    pub(crate) fn new_dir() -> ServerDir {
        ServerDir::new(K::NAME)
    }

    fn run(&mut self) {
        assert!(self.process.is_none(), "{} already running", K::NAME);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_file())
            .expect("create the server's log");
        let mut command = self.kind.command(self.port, &self.dir);
        command
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log);
        let name = format!("{} on port {}", K::NAME, self.port);
        self.process = Some(ServerProcess::spawn(&mut command, name));
        let deadline = Instant::now() + WAIT;
        while !K::ready(self.port) {
            if let Some(status) = self.process.as_mut().and_then(ServerProcess::exited) {
                panic!(
                    "{} on port {} exited while starting ({status})\n{}",
                    K::NAME,
                    self.port,
                    self.log_tail()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "{} on port {} did not answer within {WAIT:?}\n{}",
                    K::NAME,
                    self.port,
                    self.log_tail()
                );
            }
            thread::sleep(POLL);
        }
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn process(&self) -> &ServerProcess {
        self.process
            .as_ref()
            .unwrap_or_else(|| panic!("{} on port {} is not running", K::NAME, self.port))
    }

    /// SIGSTOP: the server hangs; connects still complete into the kernel's
    /// backlog, nothing is answered.
    pub fn stop(&self) {
        self.process().stop();
    }

    /// SIGCONT after [`Server::stop`].
    pub fn cont(&self) {
        self.process().cont();
    }

    /// SIGKILL and reap: connects are refused.
    pub fn kill(&mut self) {
        self.process = None;
    }

    /// Kill (if running) and start again, empty, on the same ports.
    pub fn restart(&mut self) {
        self.kill();
        self.run();
    }

    fn log_file(&self) -> std::path::PathBuf {
        self.dir.join(&format!("{}.log", K::NAME))
    }

    /// The last lines of the server's log.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_file()).unwrap_or_default();
        format!("--- {}.log (tail) ---\n{}", K::NAME, crate::tail(&log, 15))
    }
}

impl<K: Kind> Drop for Server<K> {
    /// The server dies before its directory goes.
    fn drop(&mut self) {
        self.kill();
    }
}
