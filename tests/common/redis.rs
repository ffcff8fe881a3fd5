//! Redis for the farm tests: the real Debian `redis-server` on a loopback
//! port in its own directory ([`RedisServer`]), and a Redis Cluster of such
//! servers ([`RedisCluster`]). Faults are real signals: SIGSTOP (hung: the
//! kernel still completes connects into the backlog), SIGKILL (down).
//!
//! Commands go over a small RESP client of our own (binary-safe values, no
//! process per command); [`RedisServer::cli`] runs `redis-cli` for what
//! only it does (`--cluster create`).

use super::*;

use std::io::BufRead;

/// Bound of one command's reply (the server is running: it answers at once).
const REPLY_WAIT: Duration = Duration::from_secs(5);

/// `redis-server` (`REDIS_SERVER` overrides).
pub(crate) fn redis_server_bin() -> PathBuf {
    tool("REDIS_SERVER", "/usr/bin/redis-server")
}

/// `redis-cli` (`REDIS_CLI` overrides).
pub(crate) fn redis_cli_bin() -> PathBuf {
    tool("REDIS_CLI", "/usr/bin/redis-cli")
}

fn tool(var: &str, default: &str) -> PathBuf {
    let bin = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default));
    assert!(
        bin.is_file(),
        "{} not found: install redis-server (apt-get install redis-server) or set {var}",
        bin.display()
    );
    bin
}

/// A reply in the Redis protocol (RESP2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Resp {
    Simple(String),
    Error(String),
    Int(i64),
    /// `None`: the null bulk string (a missing key).
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Resp>>),
}

impl Resp {
    /// A bulk or simple string as text (lossy).
    pub(crate) fn text(&self) -> String {
        match self {
            Resp::Simple(s) | Resp::Error(s) => s.clone(),
            Resp::Bulk(Some(b)) => String::from_utf8_lossy(b).into_owned(),
            Resp::Int(n) => n.to_string(),
            other => format!("{other:?}"),
        }
    }
}

/// A `redis-server` we started; killed (and its directory removed unless a
/// test panicked) on drop.
pub(crate) struct RedisServer {
    pub port: u16,
    pub dir: PathBuf,
    /// The TLS port ([`RedisServer::start_tls`]); `port` stays plain, for
    /// the harness's own commands.
    pub tls_port: Option<u16>,
    /// Arguments after the common ones (cluster mode, say).
    args: Vec<String>,
    child: Option<Child>,
}

impl RedisServer {
    /// A standalone server on a free loopback port, no persistence.
    pub(crate) fn start() -> RedisServer {
        RedisServer::start_with(Vec::new())
    }

    /// [`RedisServer::start`] with more `redis-server` arguments.
    pub(crate) fn start_with(args: Vec<String>) -> RedisServer {
        let mut server = RedisServer {
            port: pick_port(),
            dir: new_redis_dir(),
            tls_port: None,
            args,
            child: None,
        };
        server.launch();
        server
    }

    /// A standalone server that also speaks TLS on [`RedisServer::tls_port`]
    /// (clients need no certificate), with a certificate for 127.0.0.1 and
    /// localhost issued by a CA of its own ([`RedisServer::ca_file`]). The
    /// plain port stays open for the harness's commands.
    pub(crate) fn start_tls() -> RedisServer {
        let dir = new_redis_dir();
        let (ca, cert, key) = tls_files();
        for (name, pem) in [(REDIS_CA_FILE, ca), ("redis.crt", cert), ("redis.key", key)] {
            fs::write(dir.join(name), pem).unwrap_or_else(|e| panic!("write {name}: {e}"));
            // The CA is read by httpd's children (the server's User).
            fs::set_permissions(dir.join(name), fs::Permissions::from_mode(0o644))
                .expect("chmod TLS file");
        }
        let tls_port = pick_port();
        let path = |name: &str| dir.join(name).display().to_string();
        let args = vec![
            "--tls-port".to_string(),
            tls_port.to_string(),
            "--tls-cert-file".into(),
            path("redis.crt"),
            "--tls-key-file".into(),
            path("redis.key"),
            "--tls-ca-cert-file".into(),
            path(REDIS_CA_FILE),
            "--tls-auth-clients".into(),
            "no".into(),
        ];
        let mut server = RedisServer {
            port: pick_port(),
            dir,
            tls_port: Some(tls_port),
            args,
            child: None,
        };
        server.launch();
        server
    }

    /// `rediss://127.0.0.1:<tls port>/0` ([`RedisServer::start_tls`]).
    pub(crate) fn tls_url(&self) -> String {
        let port = self.tls_port.expect("a server started with start_tls");
        format!("rediss://127.0.0.1:{port}/0")
    }

    /// The CA that issued the TLS certificate (for `redis-ca=`).
    pub(crate) fn ca_file(&self) -> PathBuf {
        self.dir.join(REDIS_CA_FILE)
    }

    /// `127.0.0.1:<port>`.
    pub(crate) fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `redis://127.0.0.1:<port>/0`.
    pub(crate) fn url(&self) -> String {
        format!("redis://{}/0", self.addr())
    }

    /// Start `redis-server` on `self.port` and wait until it answers PING.
    fn launch(&mut self) {
        assert!(self.child.is_none(), "redis-server already running");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("redis.log"))
            .expect("create redis.log");
        let mut cmd = Command::new(redis_server_bin());
        cmd.arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no", "--dir"])
            .arg(&self.dir)
            .args(&self.args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log);
        // SAFETY: between fork and exec the closure only calls the
        // async-signal-safe setpgid and prctl: its own process group (a
        // signal to the test's group never reaches it), and SIGKILL when the
        // test thread that started it dies.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setpgid(0, 0) != 0
                    || libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!("spawn {}: {e}", redis_server_bin().display());
        });
        self.child = Some(child);
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().expect("try_wait"))
            {
                self.child = None;
                panic!(
                    "redis-server on port {} exited while starting ({status})\n{}",
                    self.port,
                    self.log_tail()
                );
            }
            if let Ok(Resp::Simple(pong)) = self.try_command(&[b"PING"]) {
                if pong == "PONG" {
                    return;
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "redis-server on port {} did not answer PING within {WAIT:?}\n{}",
                    self.port,
                    self.log_tail()
                );
            }
            thread::sleep(POLL);
        }
    }

    fn pid(&self) -> libc::pid_t {
        self.child.as_ref().expect("redis-server running").id() as libc::pid_t
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill has no memory-safety preconditions; the pid is our
        // unreaped child, so it names no other process.
        let rc = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
    }

    /// SIGSTOP: the server hangs; connects still complete into the backlog,
    /// nothing is answered.
    pub(crate) fn stop(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// SIGCONT after [`RedisServer::stop`].
    pub(crate) fn cont(&self) {
        self.signal(libc::SIGCONT);
    }

    /// SIGKILL and reap: connects are refused.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: as in `signal`: our unreaped child.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
            let _ = child.wait();
        }
    }

    /// Kill (if running) and start again, empty, on the same port.
    pub(crate) fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    /// One command on a new connection; panics on an I/O error.
    pub(crate) fn command(&self, args: &[&[u8]]) -> Resp {
        self.try_command(args).unwrap_or_else(|e| {
            panic!(
                "redis {:?} on port {}: {e}\n{}",
                args.first().map(|a| String::from_utf8_lossy(a)),
                self.port,
                self.log_tail()
            )
        })
    }

    /// One command on a new connection, every socket operation bounded.
    pub(crate) fn try_command(&self, args: &[&[u8]]) -> Result<Resp, String> {
        resp_command(self.port, args)
    }

    /// `redis-cli -h 127.0.0.1 -p <port> <args>`: its stdout; panics unless
    /// it exits 0 within [`WAIT`].
    pub(crate) fn cli(&self, args: &[&str]) -> String {
        let port = self.port.to_string();
        let mut all = vec!["-h", "127.0.0.1", "-p", &port];
        all.extend_from_slice(args);
        redis_cli(&all)
    }

    /// Calls per command since start, from `INFO commandstats`
    /// (`cmdstat_get:calls=3,...` gives `"get" → 3`).
    pub(crate) fn commandstats(&self) -> HashMap<String, u64> {
        let info = self.command(&[b"INFO", b"commandstats"]).text();
        parse_commandstats(&info)
    }

    /// Every key (`KEYS *`).
    pub(crate) fn keys(&self) -> Vec<String> {
        match self.command(&[b"KEYS", b"*"]) {
            Resp::Array(Some(items)) => items.iter().map(Resp::text).collect(),
            other => panic!("KEYS *: {other:?}"),
        }
    }

    /// `GET key`: the value, `None` if missing.
    pub(crate) fn get(&self, key: &str) -> Option<Vec<u8>> {
        match self.command(&[b"GET", key.as_bytes()]) {
            Resp::Bulk(v) => v,
            other => panic!("GET {key}: {other:?}"),
        }
    }

    /// `SET key value` (no expiry).
    pub(crate) fn set(&self, key: &str, value: &[u8]) {
        let r = self.command(&[b"SET", key.as_bytes(), value]);
        assert_eq!(r, Resp::Simple("OK".into()), "SET {key}");
    }

    /// The last lines of redis-server's log.
    pub(crate) fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default();
        format!("--- redis.log (tail) ---\n{}", tail(&log, 15))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        if thread::panicking() || std::env::var_os("HTTPD_TEST_KEEP").is_some() {
            eprintln!("redis directory kept: {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// The CA file of [`RedisServer::start_tls`] in its directory.
const REDIS_CA_FILE: &str = "ca.pem";

/// A new, empty working directory for a `redis-server`.
fn new_redis_dir() -> PathBuf {
    static SEQ: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "socache-redis-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    if dir.exists() {
        fs::remove_dir_all(&dir).expect("remove stale redis dir");
    }
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod redis dir");
    dir
}

/// A CA and a server certificate it issued for 127.0.0.1 and localhost,
/// made once per test process: (CA PEM, certificate PEM, PKCS#8 key PEM).
fn tls_files() -> (&'static [u8], &'static [u8], &'static [u8]) {
    static FILES: OnceLock<(Vec<u8>, Vec<u8>, Vec<u8>)> = OnceLock::new();
    let (ca, cert, key) = FILES.get_or_init(|| {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).expect("P-256 group");
        let new_key = || PKey::from_ec_key(EcKey::generate(&group).expect("EC key")).expect("PKey");
        let name = |cn: &str| {
            let mut n = X509NameBuilder::new().expect("name builder");
            n.append_entry_by_text("CN", cn).expect("CN");
            n.build()
        };
        let validity = |b: &mut X509Builder, serial: u32| {
            b.set_version(2).expect("version");
            let serial = BigNum::from_u32(serial)
                .and_then(|n| n.to_asn1_integer())
                .expect("serial");
            b.set_serial_number(&serial).expect("serial");
            b.set_not_before(&Asn1Time::from_unix(unix_now() as i64 - 3600).expect("time"))
                .expect("not before");
            b.set_not_after(&Asn1Time::days_from_now(7).expect("time"))
                .expect("not after");
        };
        let ca_key = new_key();
        let ca_name = name("socache test Redis CA");
        let mut b = X509Builder::new().expect("X509 builder");
        validity(&mut b, 1);
        b.set_subject_name(&ca_name).expect("subject");
        b.set_issuer_name(&ca_name).expect("issuer");
        b.set_pubkey(&ca_key).expect("pubkey");
        b.append_extension(BasicConstraints::new().critical().ca().build().expect("BC"))
            .expect("BC");
        b.sign(&ca_key, MessageDigest::sha256()).expect("sign CA");
        let ca = b.build();

        let key = new_key();
        let mut b = X509Builder::new().expect("X509 builder");
        validity(&mut b, 2);
        b.set_subject_name(&name("127.0.0.1")).expect("subject");
        b.set_issuer_name(ca.subject_name()).expect("issuer");
        b.set_pubkey(&key).expect("pubkey");
        let san = SubjectAlternativeName::new()
            .dns("localhost")
            .ip("127.0.0.1")
            .build(&b.x509v3_context(Some(&ca), None))
            .expect("SAN");
        b.append_extension(san).expect("SAN");
        b.append_extension(BasicConstraints::new().build().expect("BC"))
            .expect("BC");
        b.sign(&ca_key, MessageDigest::sha256()).expect("sign cert");
        (
            ca.to_pem().expect("CA PEM"),
            b.build().to_pem().expect("cert PEM"),
            key.private_key_to_pem_pkcs8().expect("key PEM"),
        )
    });
    (ca, cert, key)
}

/// A Redis Cluster of standalone masters (no replicas), created with
/// `redis-cli --cluster create`. With `cluster-require-full-coverage no`,
/// so that a dead node costs only its own slots: the live nodes keep
/// answering for theirs (with the default, the whole cluster refuses every
/// command once the node is marked failed).
pub(crate) struct RedisCluster {
    pub nodes: Vec<RedisServer>,
    alive: Vec<bool>,
}

impl RedisCluster {
    /// `n` (≥ 3) nodes; returns when every node reports `cluster_state:ok`.
    pub(crate) fn start(n: usize) -> RedisCluster {
        assert!(n >= 3, "a Redis Cluster needs at least 3 masters");
        let nodes: Vec<RedisServer> = (0..n)
            .map(|_| {
                // The bus port too: the default (port + 10000) could land in
                // the ephemeral range or on another test's port.
                let bus = pick_port().to_string();
                RedisServer::start_with(
                    [
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
                    ]
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
                )
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
    pub(crate) fn seeds(&self) -> String {
        self.nodes
            .iter()
            .map(RedisServer::addr)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// SIGKILL node `i`.
    pub(crate) fn kill(&mut self, i: usize) {
        self.nodes[i].kill();
        self.alive[i] = false;
    }

    /// Every key of every live node, with the node's index.
    pub(crate) fn keys(&self) -> Vec<(usize, String)> {
        let mut out = Vec::new();
        for (i, node) in self.nodes.iter().enumerate() {
            if self.alive[i] {
                out.extend(node.keys().into_iter().map(|k| (i, k)));
            }
        }
        out
    }

    /// Calls per command, summed over the live nodes.
    pub(crate) fn commandstats(&self) -> HashMap<String, u64> {
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
}

/// `redis-cli <args>`: its stdout; panics unless it exits 0 within [`WAIT`].
pub(crate) fn redis_cli(args: &[&str]) -> String {
    let mut child = Command::new(redis_cli_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn redis-cli");
    let drain = |r: Option<Box<dyn Read + Send>>| {
        thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut r) = r {
                let _ = r.read_to_string(&mut text);
            }
            text
        })
    };
    let out = drain(child.stdout.take().map(|r| Box::new(r) as _));
    let err = drain(child.stderr.take().map(|r| Box::new(r) as _));
    let status = wait_child(&mut child, WAIT);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let (out, err) = (
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    );
    match status {
        Some(s) if s.success() => out,
        Some(s) => panic!("redis-cli {args:?} failed ({s}):\n{out}\n{err}"),
        None => panic!("redis-cli {args:?} did not finish within {WAIT:?}:\n{out}\n{err}"),
    }
}

/// `INFO commandstats` text → calls per command (lower-case name).
pub(crate) fn parse_commandstats(info: &str) -> HashMap<String, u64> {
    info.lines()
        .filter_map(|l| l.trim().strip_prefix("cmdstat_"))
        .filter_map(|l| {
            let (name, fields) = l.split_once(':')?;
            let calls = fields
                .split(',')
                .find_map(|f| f.strip_prefix("calls="))?
                .parse()
                .ok()?;
            Some((name.to_string(), calls))
        })
        .collect()
}

/// One command to 127.0.0.1:`port` on a new connection.
pub(crate) fn resp_command(port: u16, args: &[&[u8]]) -> Result<Resp, String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut tcp = TcpStream::connect_timeout(&addr, REPLY_WAIT)
        .map_err(|e| format!("connect {addr}: {e}"))?;
    tcp.set_read_timeout(Some(REPLY_WAIT))
        .and_then(|()| tcp.set_write_timeout(Some(REPLY_WAIT)))
        .map_err(|e| e.to_string())?;
    let mut req = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        req.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        req.extend_from_slice(a);
        req.extend_from_slice(b"\r\n");
    }
    tcp.write_all(&req).map_err(|e| format!("write: {e}"))?;
    read_resp(&mut std::io::BufReader::new(tcp))
}

fn read_resp(r: &mut impl BufRead) -> Result<Resp, String> {
    let mut line = Vec::new();
    r.read_until(b'\n', &mut line)
        .map_err(|e| format!("read: {e}"))?;
    if line.len() < 3 || !line.ends_with(b"\r\n") {
        return Err(format!(
            "truncated reply {:?}",
            String::from_utf8_lossy(&line)
        ));
    }
    let body = String::from_utf8_lossy(&line[1..line.len() - 2]).into_owned();
    let int = || {
        body.parse::<i64>()
            .map_err(|_| format!("bad length/integer {body:?}"))
    };
    match line[0] {
        b'+' => Ok(Resp::Simple(body)),
        b'-' => Ok(Resp::Error(body)),
        b':' => Ok(Resp::Int(int()?)),
        b'$' => {
            let n = int()?;
            if n < 0 {
                return Ok(Resp::Bulk(None));
            }
            let mut buf = vec![0u8; n as usize + 2];
            r.read_exact(&mut buf).map_err(|e| format!("read: {e}"))?;
            buf.truncate(n as usize);
            Ok(Resp::Bulk(Some(buf)))
        }
        b'*' => {
            let n = int()?;
            if n < 0 {
                return Ok(Resp::Array(None));
            }
            let items = (0..n).map(|_| read_resp(r)).collect::<Result<_, _>>()?;
            Ok(Resp::Array(Some(items)))
        }
        other => Err(format!("unknown reply type {:?}", other as char)),
    }
}
