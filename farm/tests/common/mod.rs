//! Test fixtures: a `redis-server` of our own on a free loopback port
//! (killed on drop), a three-node Redis Cluster, an [`Events`] recorder, a
//! farm built for a server, and bounded polling.
//!
//! Every wait here is bounded and generous: a slow machine makes a test
//! slower, never wrong.

#![allow(dead_code)] // each test file uses a part

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use socache_shm_farm::keys::RECORD_LEN;
use socache_shm_farm::{
    Endpoint, Events, Farm, FarmConfig, FarmKeys, Problem, Sealer, TlsFiles, TIER_WORDS,
};

/// The longest any fixture waits for a server to come up.
pub(crate) const STARTUP: Duration = Duration::from_secs(20);

/// A `redis-server` on 127.0.0.1, killed (and reaped) on drop.
pub(crate) struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    /// The CA (a self-signed certificate for 127.0.0.1) of a TLS server.
    tls_ca: Option<std::path::PathBuf>,
}

impl RedisServer {
    /// A fresh server on a free port.
    pub(crate) fn start() -> RedisServer {
        Self::start_on(free_port(), &[])
    }

    /// A server on `port`, with `extra` arguments.
    pub(crate) fn start_on(port: u16, extra: &[&str]) -> RedisServer {
        Self::launch(port, extra, false)
    }

    /// A TLS-only server (`--tls-port`) with a fresh self-signed
    /// certificate for IP 127.0.0.1 (made with the openssl command).
    pub(crate) fn start_tls() -> RedisServer {
        Self::launch(free_port(), &[], true)
    }

    /// The PEM file that verifies a TLS server's certificate.
    pub(crate) fn tls_ca(&self) -> Option<&std::path::Path> {
        self.tls_ca.as_deref()
    }

    fn launch(port: u16, extra: &[&str], tls: bool) -> RedisServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut command = Command::new("redis-server");
        let mut tls_ca = None;
        if tls {
            let cert = dir.path().join("cert.pem");
            let key = dir.path().join("key.pem");
            let status = Command::new("openssl")
                .args([
                    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                ])
                .args([
                    "-subj",
                    "/CN=127.0.0.1",
                    "-addext",
                    "subjectAltName=IP:127.0.0.1",
                ])
                .arg("-keyout")
                .arg(&key)
                .arg("-out")
                .arg(&cert)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("openssl command");
            assert!(status.success(), "openssl req failed");
            command
                .args(["--port", "0", "--tls-port", &port.to_string()])
                .arg("--tls-cert-file")
                .arg(&cert)
                .arg("--tls-key-file")
                .arg(&key)
                .arg("--tls-ca-cert-file")
                .arg(&cert)
                .args(["--tls-auth-clients", "no"]);
            tls_ca = Some(cert);
        } else {
            command.args(["--port", &port.to_string()]);
        }
        command
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = command
            .spawn()
            .expect("redis-server (Debian's redis-server package)");
        let server = RedisServer {
            child: Some(child),
            port,
            dir,
            tls_ca,
        };
        server.wait_ready();
        server
    }

    /// `redis://127.0.0.1:PORT` (`rediss://` for a TLS server).
    pub(crate) fn url(&self) -> String {
        let scheme = if self.tls_ca.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    fn client(&self) -> redis::Client {
        match &self.tls_ca {
            None => redis::Client::open(self.url()).expect("client"),
            Some(ca) => redis::Client::build_with_tls(
                self.url(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(std::fs::read(ca).expect("CA file")),
                },
            )
            .expect("TLS client"),
        }
    }

    /// A direct connection, for looking at what the farm stored.
    pub(crate) fn connection(&self) -> redis::Connection {
        let client = self.client();
        let connection = client
            .get_connection_with_timeout(Duration::from_secs(5))
            .expect("connect");
        connection
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        connection
    }

    /// SIGSTOP: the server hangs (connects still succeed into the backlog).
    pub(crate) fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// SIGCONT.
    pub(crate) fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    /// SIGKILL and reap: the port refuses connections.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn signal(&self, signal: libc::c_int) {
        let Some(child) = &self.child else { return };
        let pid = libc::pid_t::try_from(child.id()).expect("pid");
        // SAFETY: kill(2) takes plain integers; `pid` is our own child,
        // not yet reaped (we hold its `Child` and reap only in `kill`/drop),
        // so the pid cannot have been reused by another process.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill({pid}, {signal})");
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + STARTUP;
        let client = self.client();
        loop {
            if let Ok(mut c) = client.get_connection_with_timeout(Duration::from_millis(500)) {
                if redis::cmd("PING").query::<String>(&mut c).is_ok() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on {} never answered",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.resume(); // a stopped process dies of SIGKILL all the same; be tidy
        }
        self.kill();
    }
}

/// A port nothing listens on now (the kernel's choice for port 0).
pub(crate) fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// Three masters on loopback, slots split by `redis-cli --cluster create`.
pub(crate) struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub(crate) fn start() -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| {
                RedisServer::start_on(
                    free_port(),
                    &[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        "5000",
                    ],
                )
            })
            .collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let status = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli");
        assert!(status.success(), "redis-cli --cluster create failed");
        let deadline = Instant::now() + STARTUP;
        for node in &nodes {
            loop {
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query(&mut node.connection())
                    .unwrap_or_default();
                if info.contains("cluster_state:ok") {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "cluster never reached cluster_state:ok"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        RedisCluster { nodes }
    }

    /// `127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3`.
    pub(crate) fn seeds(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Counts the farm's events.
#[derive(Default)]
pub(crate) struct Recorder {
    pub opened: AtomicUsize,
    pub closed: AtomicUsize,
    pub problems: AtomicUsize,
    pub problems_ended: AtomicUsize,
    pub whys: Mutex<Vec<String>>,
}

impl Recorder {
    pub(crate) fn opened(&self) -> usize {
        self.opened.load(Ordering::SeqCst)
    }
    pub(crate) fn closed(&self) -> usize {
        self.closed.load(Ordering::SeqCst)
    }
}

/// The farm's `Box<dyn Events>` over a shared recorder.
pub(crate) struct Recording(pub Arc<Recorder>);

impl Events for Recording {
    fn breaker_opened(&self, why: &str) {
        self.0.opened.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut whys) = self.0.whys.lock() {
            whys.push(why.to_string());
        }
    }
    fn breaker_closed(&self, _was_open_for: Duration) {
        self.0.closed.fetch_add(1, Ordering::SeqCst);
    }
    fn problem_started(&self, _problem: Problem, why: &str) {
        self.0.problems.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut whys) = self.0.whys.lock() {
            whys.push(why.to_string());
        }
    }
    fn problem_ended(&self, _problem: Problem, _lasted: Duration) {
        self.0.problems_ended.fetch_add(1, Ordering::SeqCst);
    }
}

/// A key file's records, fresh random bytes.
pub(crate) fn random_keys(records: usize) -> FarmKeys {
    let mut bytes = vec![0u8; records * RECORD_LEN];
    openssl::rand::rand_bytes(&mut bytes).expect("rand");
    FarmKeys::from_bytes(std::path::Path::new("test keys"), &bytes).expect("keys")
}

/// A config for `endpoint` with sealing keys, two connections.
pub(crate) fn config(endpoint: Endpoint, timeout: Duration) -> FarmConfig {
    FarmConfig {
        endpoint,
        replica: None,
        tls: TlsFiles::default(),
        timeout,
        sealer: Sealer::keys(random_keys(1)),
        prefix: "socache-shm:".to_string(),
        namespace: "mod_ssl-session".to_string(),
        connections: 2,
        max_value: 16 * 1024,
        home_pid: None,
    }
}

/// A farm on `server` and its recorder.
pub(crate) fn farm_for(server: &RedisServer, timeout: Duration) -> (Farm, Arc<Recorder>) {
    let endpoint = Endpoint::parse(&server.url()).expect("endpoint");
    farm_with(config(endpoint, timeout))
}

pub(crate) fn farm_with(config: FarmConfig) -> (Farm, Arc<Recorder>) {
    let recorder = Arc::new(Recorder::default());
    let farm = Farm::new(config, Box::new(Recording(recorder.clone()))).expect("farm");
    (farm, recorder)
}

/// Fresh zeroed tier words (the segment header's, in the provider).
pub(crate) fn words() -> Box<[AtomicU64; TIER_WORDS]> {
    Box::new(std::array::from_fn(|_| AtomicU64::new(0)))
}

/// Calls `f` every 10 ms until it returns `Some`, for at most `limit`.
pub(crate) fn poll<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A figure's value by key.
pub(crate) fn figure(words: &[AtomicU64; TIER_WORDS], key: &str) -> String {
    socache_shm_farm::figures(words, socache_shm_farm::now_us())
        .into_iter()
        .find(|(k, _, _)| *k == key)
        .map(|(_, _, v)| v)
        .unwrap_or_default()
}
