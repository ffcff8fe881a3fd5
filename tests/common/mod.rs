//! Harness for the httpd integration tests: the real Debian `/usr/sbin/apache2`
//! on loopback, in a temporary directory, with a generated certificate, and
//! a TLS client (the openssl crate) that reports whether each handshake
//! resumed and which httpd process served it.
//!
//! - [`Options`] says what to run: socache provider ([`Provider`]: our `shm`
//!   or the stock `shmcb`), MPM ([`Mpm`]), `SSLSessionCache` argument,
//!   `SSLProtocol`, `SSLSessionCacheTimeout`, extra configuration lines.
//! - [`Prepared`] is an instance directory with its `httpd.conf`, not yet
//!   running: [`Prepared::config_test`] runs `apache2 -t` on it,
//!   [`Prepared::start`] starts it.
//! - [`Httpd`] is a running server (`apache2 -DFOREGROUND` as our child, in its
//!   own process group, killed if the test thread dies). Dropping it stops
//!   the server and waits for every process of it to exit.
//! - [`Client`] makes TLS connections; [`Httpd::connect`] makes one request
//!   tagged with a unique query string and finds its access-log line, which
//!   records `%P %{SSL_SESSION_RESUMED}x %{SSL_PROTOCOL}x %{SSL_SESSION_ID}x %r`.
//!
//! Every wait is bounded by [`WAIT`]; a failure panics with the tails of
//! httpd's error log and stderr. Each instance has its own port and
//! directory, so tests may run in parallel threads.
//!
//! Environment:
//! - `SOCACHE_TEST_PROVIDER=shmcb` runs the provider-parametrised tests
//!   against stock mod_socache_shmcb instead of our `shm` (comparison runs).
//! - `SOCACHE_SHM_MODULE=/path/mod_socache_shm.so` uses that module instead of
//!   building `build/mod_socache_shm.so` with `make module`.
//! - `APACHE2_BIN`, `APACHE2_MODULES`: the httpd binary and its modules
//!   directory (default `/usr/sbin/apache2`, `/usr/lib/apache2/modules`).
//! - `HTTPD_TEST_KEEP=1` keeps the instance directories (they are also kept
//!   when a test panics, and their path is printed).

#![allow(dead_code)] // Each test crate uses a different part of the harness.

use std::collections::HashMap;
use std::ffi::CString;
use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::ssl::{
    Ssl, SslContext, SslContextBuilder, SslMethod, SslOptions, SslSession, SslStream,
    SslVerifyMode, SslVersion,
};
use openssl::x509::extension::{BasicConstraints, SubjectAlternativeName};
use openssl::x509::{X509Builder, X509NameBuilder};

/// Upper bound of every wait: startup, shutdown, a log line, a response.
pub const WAIT: Duration = Duration::from_secs(20);

/// Poll interval of the bounded waits.
const POLL: Duration = Duration::from_millis(20);

/// The access log's format: served-by pid, `Initial`/`Resumed`, protocol,
/// session id, request line.
pub const LOG_FORMAT: &str = "%P %{SSL_SESSION_RESUMED}x %{SSL_PROTOCOL}x %{SSL_SESSION_ID}x %r";

// ---------------------------------------------------------------------------
// What to run
// ---------------------------------------------------------------------------

/// The socache provider behind `SSLSessionCache`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provider {
    /// Ours: `build/mod_socache_shm.so`, provider `shm`.
    Shm,
    /// Stock mod_socache_shmcb, provider `shmcb`: the comparison.
    Shmcb,
}

impl Provider {
    /// `SOCACHE_TEST_PROVIDER` (`shm` or `shmcb`), `shm` when unset.
    pub fn from_env() -> Provider {
        match std::env::var("SOCACHE_TEST_PROVIDER").as_deref() {
            Err(_) | Ok("") | Ok("shm") => Provider::Shm,
            Ok("shmcb") => Provider::Shmcb,
            Ok(other) => panic!("SOCACHE_TEST_PROVIDER={other:?}: expected shm or shmcb"),
        }
    }

    /// The name in `SSLSessionCache <name>:<arg>`.
    pub fn name(self) -> &'static str {
        match self {
            Provider::Shm => "shm",
            Provider::Shmcb => "shmcb",
        }
    }

    /// The `CacheType` its status prints.
    pub fn cache_type(self) -> &'static str {
        match self {
            Provider::Shm => "SHM",
            Provider::Shmcb => "SHMCB",
        }
    }
}

/// The multi-processing module.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mpm {
    /// One connection per child process; 8 children at start.
    Prefork,
    /// 3 processes at start, 4 threads each.
    Event,
    /// 3 processes at start, 4 threads each.
    Worker,
}

impl Mpm {
    pub fn name(self) -> &'static str {
        match self {
            Mpm::Prefork => "prefork",
            Mpm::Event => "event",
            Mpm::Worker => "worker",
        }
    }

    /// Connections that can be held open at once without waiting for a
    /// new process (and that force more than one process to serve them).
    pub fn capacity(self) -> usize {
        match self {
            Mpm::Prefork => PREFORK_CHILDREN,
            Mpm::Event | Mpm::Worker => THREADED_PROCESSES * THREADS_PER_CHILD,
        }
    }

    fn directives(self) -> String {
        match self {
            Mpm::Prefork => format!(
                "StartServers {n}\nMinSpareServers {n}\nMaxSpareServers {max}\n\
                 ServerLimit {max}\nMaxRequestWorkers {max}\nMaxConnectionsPerChild 0\n",
                n = PREFORK_CHILDREN,
                max = 2 * PREFORK_CHILDREN,
            ),
            Mpm::Event | Mpm::Worker => format!(
                "StartServers {p}\nServerLimit {limit}\nThreadLimit {t}\nThreadsPerChild {t}\n\
                 MinSpareThreads {t}\nMaxSpareThreads {max}\nMaxRequestWorkers {max}\n\
                 MaxConnectionsPerChild 0\n",
                p = THREADED_PROCESSES,
                limit = THREADED_PROCESSES + 1,
                t = THREADS_PER_CHILD,
                max = (THREADED_PROCESSES + 1) * THREADS_PER_CHILD,
            ),
        }
    }
}

/// Children prefork starts with (and keeps idle).
pub const PREFORK_CHILDREN: usize = 8;
/// Processes event/worker start with.
pub const THREADED_PROCESSES: usize = 3;
/// Threads per event/worker process: small, so 8 held connections need
/// at least two processes.
pub const THREADS_PER_CHILD: usize = 4;

/// A TLS protocol version, pinned on both client and connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tls {
    V12,
    V13,
}

impl Tls {
    fn version(self) -> SslVersion {
        match self {
            Tls::V12 => SslVersion::TLS1_2,
            Tls::V13 => SslVersion::TLS1_3,
        }
    }

    /// `%{SSL_PROTOCOL}x` for it.
    pub fn log_name(self) -> &'static str {
        match self {
            Tls::V12 => "TLSv1.2",
            Tls::V13 => "TLSv1.3",
        }
    }
}

/// The `SSLSessionCache` argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionCache {
    /// `<provider>:<dir>/run/ssl_scache(<bytes>)`.
    File { bytes: u64 },
    /// `none`.
    None,
    /// Written as is after `{dir}` is replaced by the instance directory.
    Raw(String),
}

/// The segment file of [`SessionCache::File`], relative to the instance dir.
pub const CACHE_FILE: &str = "run/ssl_scache";

/// What an instance runs. `{dir}` in `cache`/`extra` is the instance directory.
#[derive(Clone, Debug)]
pub struct Options {
    pub provider: Provider,
    pub mpm: Mpm,
    pub cache: SessionCache,
    /// `SSLProtocol`.
    pub protocol: String,
    /// `SSLSessionCacheTimeout`, seconds.
    pub cache_timeout: u32,
    /// `LogLevel`.
    pub log_level: String,
    /// Appended to the configuration.
    pub extra: String,
}

impl Options {
    /// TLS 1.2 and 1.3, a 512000-byte file-backed cache, timeout 300 s.
    pub fn new(provider: Provider, mpm: Mpm) -> Options {
        Options {
            provider,
            mpm,
            cache: SessionCache::File { bytes: 512_000 },
            protocol: "-all +TLSv1.2 +TLSv1.3".into(),
            cache_timeout: 300,
            log_level: "info".into(),
            extra: String::new(),
        }
    }

    pub fn cache(mut self, cache: SessionCache) -> Options {
        self.cache = cache;
        self
    }

    pub fn protocol(mut self, protocol: &str) -> Options {
        self.protocol = protocol.into();
        self
    }

    pub fn cache_timeout(mut self, seconds: u32) -> Options {
        self.cache_timeout = seconds;
        self
    }

    pub fn extra(mut self, lines: &str) -> Options {
        self.extra.push_str(lines);
        self.extra.push('\n');
        self
    }
}

// ---------------------------------------------------------------------------
// Paths and the module
// ---------------------------------------------------------------------------

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The httpd binary.
pub fn apache2_bin() -> PathBuf {
    let bin = std::env::var_os("APACHE2_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/sbin/apache2"));
    assert!(
        bin.is_file(),
        "{} not found: install apache2 (sudo bash scripts/deps.sh) or set APACHE2_BIN",
        bin.display()
    );
    bin
}

/// httpd's modules directory.
pub fn modules_dir() -> PathBuf {
    std::env::var_os("APACHE2_MODULES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/apache2/modules"))
}

/// `build/mod_socache_shm.so`, built with `make module` first if it is
/// missing or older than the sources (once per test process, under a file
/// lock so concurrent test processes do not build at the same time).
pub fn shm_module() -> PathBuf {
    static MODULE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    MODULE
        .get_or_init(build_module)
        .clone()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn build_module() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("SOCACHE_SHM_MODULE") {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "SOCACHE_SHM_MODULE={}: no such file",
                path.display()
            ))
        };
    }
    let root = repo_root();
    let so = root.join("build/mod_socache_shm.so");
    if !is_stale(&so, &root) {
        return Ok(so);
    }
    fs::create_dir_all(root.join("build")).map_err(|e| format!("mkdir build: {e}"))?;
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(root.join("build/.test-build.lock"))
        .map_err(|e| format!("open build/.test-build.lock: {e}"))?;
    let _locked = FileLock::exclusive(lock);
    if !is_stale(&so, &root) {
        return Ok(so); // Another test process built it meanwhile.
    }
    let log = root.join("build/test-make.log");
    let out = fs::File::create(&log).map_err(|e| format!("create {}: {e}", log.display()))?;
    let err = out.try_clone().map_err(|e| format!("dup: {e}"))?;
    eprintln!(
        "building {} with `make module` (output in {})",
        so.display(),
        log.display()
    );
    // cargo releases its build-directory lock before it runs tests, so the
    // nested cargo build in `make` does not wait for us.
    let status = Command::new("make")
        .arg("module")
        .current_dir(&root)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .status()
        .map_err(|e| format!("cannot run make: {e}"))?;
    let text = fs::read_to_string(&log).unwrap_or_default();
    if !status.success() || !so.is_file() {
        return Err(format!(
            "`make module` failed ({status}); {} is needed by the httpd tests \
             (run `make` first, or scripts/test.sh). Output tail:\n{}",
            so.display(),
            tail(&text, 40)
        ));
    }
    Ok(so)
}

/// Missing, or older than a source it is built from.
fn is_stale(so: &Path, root: &Path) -> bool {
    let Ok(built) = fs::metadata(so).and_then(|m| m.modified()) else {
        return true;
    };
    let mut newest = UNIX_EPOCH;
    let mut visit = |p: &Path| {
        if let Ok(t) = fs::metadata(p).and_then(|m| m.modified()) {
            newest = newest.max(t);
        }
    };
    for f in ["build.rs", "Cargo.toml", "Cargo.lock", "Makefile"] {
        visit(&root.join(f));
    }
    for dir in ["src", "apache-glue"] {
        walk(&root.join(dir), &mut |p| {
            // The binaries are not linked into the module.
            if !p.starts_with(root.join("src/bin")) {
                visit(p)
            }
        });
    }
    newest > built
}

fn walk(dir: &Path, f: &mut dyn FnMut(&Path)) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, f);
        } else {
            f(&p);
        }
    }
}

/// `flock(LOCK_EX)` held until dropped.
struct FileLock(fs::File);

impl FileLock {
    fn exclusive(file: fs::File) -> FileLock {
        use std::os::fd::AsRawFd;
        // SAFETY: the descriptor is open and owned by `file` for the call.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(rc, 0, "flock: {}", std::io::Error::last_os_error());
        FileLock(file)
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        // SAFETY: the descriptor is still open (owned by self.0).
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

// ---------------------------------------------------------------------------
// Instance directory, certificate, configuration
// ---------------------------------------------------------------------------

/// A self-signed P-256 certificate for localhost/127.0.0.1, made once per
/// test process: (certificate PEM, PKCS#8 key PEM).
fn certificate() -> &'static (Vec<u8>, Vec<u8>) {
    static CERT: OnceLock<(Vec<u8>, Vec<u8>)> = OnceLock::new();
    CERT.get_or_init(|| {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).expect("P-256 group");
        let key = PKey::from_ec_key(EcKey::generate(&group).expect("EC key")).expect("PKey");
        let mut name = X509NameBuilder::new().expect("name builder");
        name.append_entry_by_text("CN", "localhost").expect("CN");
        let name = name.build();
        let mut b = X509Builder::new().expect("X509 builder");
        b.set_version(2).expect("version");
        let serial = BigNum::from_u32(1)
            .and_then(|n| n.to_asn1_integer())
            .expect("serial");
        b.set_serial_number(&serial).expect("serial");
        b.set_subject_name(&name).expect("subject");
        b.set_issuer_name(&name).expect("issuer");
        b.set_pubkey(&key).expect("pubkey");
        let now = unix_now();
        b.set_not_before(&Asn1Time::from_unix(now as i64 - 3600).expect("time"))
            .expect("not before");
        b.set_not_after(&Asn1Time::days_from_now(7).expect("time"))
            .expect("not after");
        let san = SubjectAlternativeName::new()
            .dns("localhost")
            .ip("127.0.0.1")
            .build(&b.x509v3_context(None, None))
            .expect("SAN");
        b.append_extension(san).expect("SAN");
        b.append_extension(BasicConstraints::new().build().expect("BC"))
            .expect("BC");
        b.sign(&key, MessageDigest::sha256()).expect("sign");
        (
            b.build().to_pem().expect("cert PEM"),
            key.private_key_to_pem_pkcs8().expect("key PEM"),
        )
    })
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// A port below Linux's ephemeral range (32768..) so the kernel never hands
/// it to a client socket meanwhile; distinct per call in this process and
/// spread by pid across processes; checked free by binding it.
fn pick_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = 20_000 + (std::process::id() % 500) * 20;
    for _ in 0..2000 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (base + n % 12_000) as u16;
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port found in 20000..32000");
}

/// The uid/gid httpd's children run as when we are root.
fn run_as() -> Option<(String, String)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    if user_ids("www-data").is_some() {
        Some(("www-data".into(), "www-data".into()))
    } else {
        Some(("nobody".into(), "#65534".into()))
    }
}

/// (uid, gid) of a user name.
pub fn user_ids(name: &str) -> Option<(u32, u32)> {
    let c = CString::new(name).ok()?;
    let mut pw: libc::passwd = {
        // SAFETY: passwd is a plain C struct; all-zero (null pointers) is a
        // valid value for getpwnam_r to overwrite.
        unsafe { std::mem::zeroed() }
    };
    let mut buf = vec![0 as libc::c_char; 4096];
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; buf's length is passed.
    let rc = unsafe {
        libc::getpwnam_r(
            c.as_ptr(),
            &mut pw,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    (rc == 0 && !result.is_null()).then_some((pw.pw_uid, pw.pw_gid))
}

/// An instance directory with its configuration, not running.
pub struct Prepared {
    pub opts: Options,
    pub dir: PathBuf,
    pub port: u16,
    pub conf: PathBuf,
    keep: bool,
}

impl Prepared {
    /// Create the directory tree, certificate, document root and httpd.conf.
    pub fn new(opts: Options) -> Prepared {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "socache-httpd-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        if dir.exists() {
            fs::remove_dir_all(&dir).expect("remove stale instance dir");
        }
        for sub in ["", "logs", "run", "mutex", "htdocs"] {
            let d = dir.join(sub);
            fs::create_dir_all(&d).unwrap_or_else(|e| panic!("mkdir {}: {e}", d.display()));
            // httpd's children (www-data when we are root) read htdocs.
            fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).expect("chmod 755");
        }
        let (cert, key) = certificate();
        fs::write(dir.join("cert.pem"), cert).expect("write cert.pem");
        fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(dir.join("key.pem"))
            .and_then(|mut f| f.write_all(key))
            .expect("write key.pem");
        fs::write(dir.join("htdocs/index.html"), "socache test\n").expect("write index.html");

        let mut prepared = Prepared {
            opts,
            dir,
            port: pick_port(),
            conf: PathBuf::new(),
            keep: std::env::var_os("HTTPD_TEST_KEEP").is_some(),
        };
        prepared.conf = prepared.dir.join("httpd.conf");
        prepared.write_conf();
        prepared
    }

    /// (Re)write httpd.conf from the options (e.g. after changing them).
    pub fn write_conf(&self) {
        fs::write(&self.conf, self.render()).expect("write httpd.conf");
    }

    /// `{dir}` replaced by the instance directory.
    pub fn expand(&self, text: &str) -> String {
        text.replace("{dir}", &self.dir.display().to_string())
    }

    /// The `SSLSessionCache` argument.
    pub fn cache_arg(&self) -> String {
        match &self.opts.cache {
            SessionCache::File { bytes } => format!(
                "{}:{}({bytes})",
                self.opts.provider.name(),
                self.dir.join(CACHE_FILE).display()
            ),
            SessionCache::None => "none".into(),
            SessionCache::Raw(arg) => self.expand(arg),
        }
    }

    fn render(&self) -> String {
        let o = &self.opts;
        let d = self.dir.display();
        let m = modules_dir();
        let m = m.display();
        let mut c = String::new();
        let _ = writeln!(
            c,
            "# Generated by tests/common/mod.rs: {} provider, {} MPM",
            o.provider.name(),
            o.mpm.name()
        );
        let _ = writeln!(c, "ServerRoot \"{d}\"");
        let _ = writeln!(c, "ServerName localhost");
        let _ = writeln!(c, "Listen 127.0.0.1:{}", self.port);
        let _ = writeln!(c, "PidFile \"{d}/run/httpd.pid\"");
        let _ = writeln!(c, "DefaultRuntimeDir \"{d}/run\"");
        let _ = writeln!(c, "ErrorLog \"{d}/logs/error.log\"");
        let _ = writeln!(c, "LogLevel {}", o.log_level);
        let _ = writeln!(c, "Mutex file:{d}/mutex default");
        let _ = writeln!(
            c,
            "LoadModule mpm_{0}_module \"{m}/mod_mpm_{0}.so\"",
            o.mpm.name()
        );
        for module in ["authz_core", "dir", "status", "socache_shmcb"] {
            let _ = writeln!(c, "LoadModule {module}_module \"{m}/mod_{module}.so\"");
        }
        if o.provider == Provider::Shm {
            let _ = writeln!(
                c,
                "LoadModule socache_shm_module \"{}\"",
                shm_module().display()
            );
        }
        let _ = writeln!(c, "LoadModule ssl_module \"{m}/mod_ssl.so\"");
        if let Some((user, group)) = run_as() {
            let _ = writeln!(c, "User {user}\nGroup {group}");
        }
        c.push_str(&o.mpm.directives());
        let _ = writeln!(c, "Timeout {}", WAIT.as_secs());
        let _ = writeln!(c, "DocumentRoot \"{d}/htdocs\"");
        let _ = writeln!(
            c,
            "<Directory \"{d}/htdocs\">\n  Require all granted\n</Directory>"
        );
        let _ = writeln!(c, "DirectoryIndex index.html");
        let _ = writeln!(
            c,
            "LogFormat \"{}\" resumption",
            LOG_FORMAT.replace('"', "\\\"")
        );
        let _ = writeln!(c, "CustomLog \"{d}/logs/access.log\" resumption");
        let _ = writeln!(c, "ExtendedStatus On");
        let _ = writeln!(
            c,
            "<Location /server-status>\n  SetHandler server-status\n  Require all granted\n</Location>"
        );
        let _ = writeln!(c, "SSLEngine on");
        let _ = writeln!(c, "SSLCertificateFile \"{d}/cert.pem\"");
        let _ = writeln!(c, "SSLCertificateKeyFile \"{d}/key.pem\"");
        let _ = writeln!(c, "SSLProtocol {}", o.protocol);
        let _ = writeln!(c, "SSLSessionTickets off");
        let _ = writeln!(c, "SSLSessionCache {}", self.cache_arg());
        let _ = writeln!(c, "SSLSessionCacheTimeout {}", o.cache_timeout);
        c.push_str(&self.expand(&o.extra));
        c
    }

    /// `apache2 -t` on this configuration: (exit status success, stderr+stdout).
    pub fn config_test(&self) -> (bool, String) {
        self.config_test_as(None)
    }

    /// [`Prepared::config_test`] as another user (uid, gid); we must be root.
    pub fn config_test_as(&self, user: Option<(u32, u32)>) -> (bool, String) {
        let out_path = self
            .dir
            .join(format!("logs/configtest-{}.out", unix_nanos()));
        let out = fs::File::create(&out_path).expect("create configtest output");
        let mut cmd = Command::new(apache2_bin());
        cmd.arg("-t")
            .arg("-d")
            .arg(&self.dir)
            .arg("-f")
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup"))
            .stderr(out);
        drop_privileges(&mut cmd, user);
        let mut child = cmd.spawn().expect("spawn apache2 -t");
        let Some(status) = wait_child(&mut child, WAIT) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "apache2 -t on {} did not finish within {WAIT:?}",
                self.conf.display()
            );
        };
        (
            status.success(),
            fs::read_to_string(&out_path).unwrap_or_default(),
        )
    }

    /// Start httpd on this configuration; panics (with its error log) unless
    /// it serves within [`WAIT`]. Retries on another port if the port was
    /// taken meanwhile.
    pub fn start(self) -> Httpd {
        match self.try_start() {
            Ok(httpd) => httpd,
            Err(failed) => {
                let (mut prep, why) = *failed;
                prep.keep = true;
                panic!(
                    "httpd ({} MPM, {} provider) failed to start; instance kept in {}\n{why}",
                    prep.opts.mpm.name(),
                    prep.opts.provider.name(),
                    prep.dir.display()
                );
            }
        }
    }

    /// [`Prepared::start`] for a start that is meant to fail: the instance
    /// back, and why (with diagnostics), instead of a panic.
    pub fn try_start(mut self) -> Result<Httpd, Box<(Prepared, String)>> {
        let client = Client::any();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut child = Httpd::launch(&self);
            match wait_ready(&self, &mut child, &client) {
                Ok(()) => {
                    return Ok(Httpd {
                        prep: self,
                        child: Some(child),
                        status_client: client,
                    })
                }
                Err(why) => {
                    terminate(child, WAIT);
                    if why.contains("Address already in use") && attempt < 5 {
                        self.port = pick_port();
                        self.write_conf();
                        continue;
                    }
                    return Err(Box::new((self, why)));
                }
            }
        }
    }

    /// The last lines of the error log and of httpd's stderr.
    pub fn diagnostics(&self) -> String {
        let err = fs::read_to_string(self.dir.join("logs/error.log")).unwrap_or_default();
        let stderr = fs::read_to_string(self.dir.join("logs/stderr.log")).unwrap_or_default();
        format!(
            "--- error.log (tail) ---\n{}\n--- stderr (tail) ---\n{}",
            tail(&err, 30),
            tail(&stderr, 15)
        )
    }
}

impl Drop for Prepared {
    fn drop(&mut self) {
        if self.keep || thread::panicking() {
            eprintln!("httpd instance directory kept: {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

fn unix_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos()
}

/// `apache2 -t` on a fresh instance with these options.
pub fn config_test(opts: Options) -> (bool, String) {
    Prepared::new(opts).config_test()
}

fn tail(text: &str, lines: usize) -> String {
    let v: Vec<&str> = text.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

/// Wait for a child up to `limit`; `None` if it is still running.
fn wait_child(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(POLL),
            Ok(None) => return None,
            Err(e) => panic!("waiting for pid {}: {e}", child.id()),
        }
    }
}

/// Poll `/server-status?auto` until it answers for the configured MPM;
/// Err(why, with diagnostics) if httpd exits or [`WAIT`] passes first.
fn wait_ready(prep: &Prepared, child: &mut Child, client: &Client) -> Result<(), String> {
    let want = format!("ServerMPM: {}", prep.opts.mpm.name());
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Err(format!(
                "httpd exited while starting ({status})\n{}",
                prep.diagnostics()
            ));
        }
        let last = match client
            // Short, so a probe stuck on a port some other socket holds
            // (httpd then exits: address in use) is noticed quickly.
            .handshake_within(prep.port, None, Duration::from_secs(2))
            .and_then(|open| open.request("/server-status?auto"))
        {
            Ok(r) if r.status == 200 && r.text().contains(&want) => return Ok(()),
            Ok(r) => format!("status {}: {}", r.status, tail(&r.text(), 5)),
            Err(e) => e,
        };
        if Instant::now() > deadline {
            return Err(format!(
                "httpd did not serve within {WAIT:?} (last try: {last})\n{}",
                prep.diagnostics()
            ));
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Stop an httpd we spawned: SIGTERM (what `apache2 -k stop` sends), wait up
/// to `grace` for the parent to exit, then SIGKILL whatever is left of its
/// process group and reap it. False if it had to be killed.
fn terminate(mut child: Child, grace: Duration) -> bool {
    let pid = child.id() as libc::pid_t;
    // SAFETY: kill has no memory-safety preconditions; `pid` is our
    // unreaped child, so it cannot name another process.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + grace;
    let mut exited = false;
    while Instant::now() < deadline {
        // Check without reaping, so the pid (= process group id) stays ours
        // until the group is cleaned up below.
        // SAFETY: siginfo_t is a plain C struct, valid when zeroed.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is valid for writing for the call.
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        // SAFETY: waitid filled `info` (si_pid stays 0 while nothing exited).
        if rc != 0 || unsafe { info.si_pid() } == pid {
            exited = true;
            break;
        }
        thread::sleep(POLL);
    }
    // SAFETY: the group's leader is our unreaped child, so the group id is
    // still ours; this reaches only httpd's processes (none, normally).
    unsafe { libc::kill(-pid, libc::SIGKILL) };
    let _ = child.wait();
    exited
}

// ---------------------------------------------------------------------------
// A running httpd
// ---------------------------------------------------------------------------

/// A running httpd; dropping it stops it.
pub struct Httpd {
    pub prep: Prepared,
    child: Option<Child>,
    status_client: Client,
}

/// One line of the access log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEntry {
    /// `%P`: the process that served the request.
    pub pid: u32,
    /// `%{SSL_SESSION_RESUMED}x` is `Resumed`.
    pub resumed: bool,
    /// `%{SSL_PROTOCOL}x`.
    pub protocol: String,
    /// `%{SSL_SESSION_ID}x`.
    pub session_id: String,
    pub line: String,
}

/// One tagged request on its own connection.
#[derive(Debug)]
pub struct Conn {
    pub tag: String,
    /// The client's view: `SSL_session_reused`.
    pub resumed: bool,
    /// The session to resume next (for TLS 1.3: the last ticket received).
    pub session: Session,
    /// The server's view.
    pub log: LogEntry,
    pub status: u16,
}

impl Conn {
    /// Resumed according to both the client and the access log.
    pub fn both_resumed(&self) -> bool {
        self.resumed && self.log.resumed
    }
}

impl Httpd {
    /// [`Prepared::new`] then [`Prepared::start`].
    pub fn start(opts: Options) -> Httpd {
        Prepared::new(opts).start()
    }

    pub fn port(&self) -> u16 {
        self.prep.port
    }

    pub fn dir(&self) -> &Path {
        &self.prep.dir
    }

    /// The httpd parent's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("httpd running").id()
    }

    /// Spawn `apache2 -DFOREGROUND` in its own process group.
    fn launch(prep: &Prepared) -> Child {
        let _ = fs::remove_file(prep.dir.join("logs/error.log"));
        let stderr = fs::File::create(prep.dir.join("logs/stderr.log")).expect("create stderr.log");
        let mut cmd = Command::new(apache2_bin());
        cmd.arg("-d")
            .arg(&prep.dir)
            .arg("-f")
            .arg(&prep.conf)
            .arg("-DFOREGROUND")
            .stdin(Stdio::null())
            .stdout(stderr.try_clone().expect("dup"))
            .stderr(stderr);
        // SAFETY: between fork and exec the closure only calls the
        // async-signal-safe setpgid and prctl: httpd gets its own process
        // group (so a stop can reach all its processes) and SIGTERM when the
        // test thread that started it dies, so a crashed test leaves no httpd.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setpgid(0, 0) != 0
                    || libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd.spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", apache2_bin().display()))
    }

    /// Panic with the diagnostics (and keep the instance dir).
    pub fn fail(&mut self, why: &str) -> ! {
        self.prep.keep = true;
        let diag = self.prep.diagnostics();
        self.stop();
        panic!(
            "{why}\n[httpd {} MPM, {} provider, dir {}]\n{diag}",
            self.prep.opts.mpm.name(),
            self.prep.opts.provider.name(),
            self.prep.dir.display()
        );
    }

    /// Panic if httpd's parent has exited.
    pub fn check_alive(&mut self, when: &str) {
        let exited = match self.child.as_mut() {
            None => Some("stopped".to_string()),
            Some(c) => c.try_wait().expect("try_wait").map(|s| s.to_string()),
        };
        if let Some(status) = exited {
            self.child = None;
            self.fail(&format!("httpd exited {when} ({status})"));
        }
    }

    /// `apache2 -k graceful`, then wait until a process of the new
    /// generation answers `/server-status?auto`.
    pub fn graceful(&mut self) {
        let before = self.generation();
        let out_path = self.prep.dir.join("logs/graceful.out");
        let out = fs::File::create(&out_path).expect("create graceful.out");
        let mut child = Command::new(apache2_bin())
            .arg("-d")
            .arg(&self.prep.dir)
            .arg("-f")
            .arg(&self.prep.conf)
            .args(["-k", "graceful"])
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup"))
            .stderr(out)
            .spawn()
            .expect("spawn apache2 -k graceful");
        let status = match wait_child(&mut child, WAIT) {
            Some(s) => s,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                self.fail("apache2 -k graceful did not return")
            }
        };
        if !status.success() {
            let out = fs::read_to_string(&out_path).unwrap_or_default();
            self.fail(&format!("apache2 -k graceful failed ({status}): {out}"));
        }
        let deadline = Instant::now() + WAIT;
        loop {
            self.check_alive("during graceful restart");
            if let Ok(r) = self.try_get("/server-status?auto") {
                if parse_status(&r.text())
                    .get("ParentServerConfigGeneration")
                    .and_then(|g| g.parse::<u64>().ok())
                    .is_some_and(|g| g > before)
                {
                    return;
                }
            }
            if Instant::now() > deadline {
                self.fail(&format!(
                    "no process of generation > {before} served within {WAIT:?} after graceful"
                ));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// A graceful restart by SIGUSR1 straight to the parent (as `kill -USR1`
    /// or a log rotator sends it), without `apache2 -k graceful`'s own
    /// reading of the configuration first; waits as [`Httpd::graceful`].
    pub fn graceful_by_signal(&mut self) {
        let before = self.generation();
        // SAFETY: kill has no memory-safety preconditions; the pid is our
        // running child (httpd's parent).
        unsafe { libc::kill(self.pid() as libc::pid_t, libc::SIGUSR1) };
        let deadline = Instant::now() + WAIT;
        loop {
            self.check_alive("during graceful restart (SIGUSR1)");
            if let Ok(r) = self.try_get("/server-status?auto") {
                if parse_status(&r.text())
                    .get("ParentServerConfigGeneration")
                    .and_then(|g| g.parse::<u64>().ok())
                    .is_some_and(|g| g > before)
                {
                    return;
                }
            }
            if Instant::now() > deadline {
                self.fail(&format!(
                    "no process of generation > {before} served within {WAIT:?} after SIGUSR1"
                ));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// `ParentServerConfigGeneration` of whichever process answers.
    pub fn generation(&mut self) -> u64 {
        let s = self.status_auto();
        match s
            .get("ParentServerConfigGeneration")
            .and_then(|g| g.parse().ok())
        {
            Some(g) => g,
            None => self.fail("server-status?auto has no ParentServerConfigGeneration"),
        }
    }

    /// Stop httpd (SIGTERM, as `apache2 -k stop` sends) and wait until its
    /// parent has exited; then kill whatever is left of its process group.
    /// Idempotent; also run on drop.
    pub fn stop(&mut self) {
        let Some(child) = self.child.take() else {
            return;
        };
        let pid = child.id();
        if !terminate(child, WAIT) && !thread::panicking() {
            self.prep.keep = true;
            panic!(
                "httpd (pid {pid}) did not stop within {WAIT:?}; killed\n{}",
                self.prep.diagnostics()
            );
        }
    }

    /// The access log's text.
    pub fn access_log(&self) -> String {
        fs::read_to_string(self.prep.dir.join("logs/access.log")).unwrap_or_default()
    }

    /// The error log's text.
    pub fn error_log(&self) -> String {
        fs::read_to_string(self.prep.dir.join("logs/error.log")).unwrap_or_default()
    }

    /// The access-log entry of the request tagged `tag` (waits for it: httpd
    /// logs after the response is sent).
    pub fn log_entry(&mut self, tag: &str) -> LogEntry {
        let needle = format!(" GET /?{tag} HTTP/1.1");
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(line) = self.access_log().lines().find(|l| l.ends_with(&needle)) {
                return match parse_log_line(line) {
                    Some(e) => e,
                    None => self.fail(&format!("cannot parse access log line {line:?}")),
                };
            }
            if Instant::now() > deadline {
                self.fail(&format!("no access log line for tag {tag} within {WAIT:?}"));
            }
            thread::sleep(POLL);
        }
    }

    /// One tagged request (`GET /?<tag>`) on a new connection, resuming
    /// `session` if given.
    pub fn connect(&mut self, client: &Client, session: Option<&Session>) -> Conn {
        let tag = new_tag();
        let reply = match client
            .handshake(self.port(), session)
            .and_then(|open| open.request(&format!("/?{tag}")))
        {
            Ok(r) => r,
            Err(e) => self.fail(&format!("request {tag}: {e}")),
        };
        self.finish(tag, reply)
    }

    fn finish(&mut self, tag: String, reply: Reply) -> Conn {
        let log = self.log_entry(&tag);
        Conn {
            tag,
            resumed: reply.resumed,
            session: reply.session,
            log,
            status: reply.status,
        }
    }

    /// `n` connections resuming `session` at the same time: all handshakes
    /// run in parallel threads and every connection stays open until all
    /// have completed their handshakes, so no process can serve two of them
    /// one after the other (prefork needs `n` different children). Then each
    /// sends its request.
    pub fn concurrent(&mut self, client: &Client, session: &Session, n: usize) -> Vec<Conn> {
        let port = self.port();
        let tags: Vec<String> = (0..n).map(|_| new_tag()).collect();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
        let mut go = Vec::new();
        let mut results = Vec::new();
        thread::scope(|s| {
            let mut handles = Vec::new();
            for tag in &tags {
                let (go_tx, go_rx) = mpsc::channel::<()>();
                go.push(go_tx);
                let ready = ready_tx.clone();
                handles.push(s.spawn(move || -> Result<Reply, String> {
                    let open = match client.handshake(port, Some(session)) {
                        Ok(o) => {
                            let _ = ready.send(Ok(()));
                            o
                        }
                        Err(e) => {
                            let _ = ready.send(Err(e.clone()));
                            return Err(e);
                        }
                    };
                    go_rx
                        .recv_timeout(WAIT)
                        .map_err(|_| "not released: another handshake failed".to_string())?;
                    open.request(&format!("/?{tag}"))
                }));
            }
            let deadline = Instant::now() + WAIT;
            let mut problem = None;
            for _ in 0..n {
                let left = deadline.saturating_duration_since(Instant::now());
                match ready_rx.recv_timeout(left) {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        problem = Some(e);
                        break;
                    }
                    Err(_) => {
                        problem = Some(format!(
                            "{n} concurrent handshakes not done within {WAIT:?}"
                        ));
                        break;
                    }
                }
            }
            if problem.is_none() {
                for g in &go {
                    let _ = g.send(());
                }
            }
            drop(go); // Unblocks waiting threads at once on failure.
            for h in handles {
                results.push(
                    h.join()
                        .unwrap_or_else(|_| Err("client thread panicked".into())),
                );
            }
            if let Some(p) = problem {
                results.push(Err(p));
            }
        });
        let mut conns = Vec::new();
        for (tag, r) in tags.into_iter().zip(results.iter()) {
            match r {
                Ok(reply) => conns.push(self.finish(tag, reply.clone())),
                Err(e) => self.fail(&format!("concurrent connection {tag}: {e}")),
            }
        }
        if let Some(Err(e)) = results.get(n) {
            self.fail(e);
        }
        conns
    }

    /// GET `target` on a fresh full handshake (TLS 1.2 or 1.3).
    pub fn get(&mut self, target: &str) -> Reply {
        match self.try_get(target) {
            Ok(r) => r,
            Err(e) => self.fail(&format!("GET {target}: {e}")),
        }
    }

    fn try_get(&self, target: &str) -> Result<Reply, String> {
        self.status_client
            .handshake(self.port(), None)
            .and_then(|open| open.request(target))
    }

    /// `/server-status?auto` as key → value.
    pub fn status_auto(&mut self) -> HashMap<String, String> {
        let r = self.get("/server-status?auto");
        if r.status != 200 {
            self.fail(&format!("server-status?auto: status {}", r.status));
        }
        parse_status(&r.text())
    }

    /// A numeric `?auto` figure.
    pub fn figure(&mut self, key: &str) -> u64 {
        let s = self.status_auto();
        match s.get(key).and_then(|v| v.parse().ok()) {
            Some(v) => v,
            None => self.fail(&format!("server-status?auto has no numeric {key}: {s:?}")),
        }
    }
}

impl Drop for Httpd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What a run of the `shmcache` inspector printed.
#[derive(Debug)]
pub struct Inspected {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Run `shmcache <args>` (this crate's binary), bounded by [`WAIT`]; as the
/// given (uid, gid) when `user` is set (we must be root).
pub fn shmcache_as<S: AsRef<std::ffi::OsStr>>(user: Option<(u32, u32)>, args: &[S]) -> Inspected {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shmcache"));
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    drop_privileges(&mut cmd, user);
    let mut child = cmd.spawn().expect("spawn shmcache");
    let drain = |r: Option<Box<dyn Read + Send>>| {
        thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut r) = r {
                let _ = r.read_to_string(&mut text);
            }
            text
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let status = wait_child(&mut child, WAIT);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let shown: Vec<String> = args
        .iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect();
    let inspected = Inspected {
        success: status.is_some_and(|s| s.success()),
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    };
    assert!(
        status.is_some(),
        "shmcache {shown:?} did not finish within {WAIT:?}: {inspected:?}"
    );
    inspected
}

/// Run `shmcache <args>` as ourselves, bounded by [`WAIT`].
pub fn shmcache<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Inspected {
    shmcache_as(None, args)
}

/// Pids of the processes whose parent is `parent` (httpd's children), from
/// `/proc/*/stat`.
pub fn children(parent: u32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the ")" that closes the command name: state ppid ...
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(parent) {
            out.push(pid);
        }
    }
    out
}

/// `Key: value` lines.
pub fn parse_status(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn parse_log_line(line: &str) -> Option<LogEntry> {
    let mut f = line.splitn(5, ' ');
    let pid = f.next()?.parse().ok()?;
    let resumed = f.next()? == "Resumed";
    let protocol = f.next()?.to_string();
    let session_id = f.next()?.to_string();
    f.next()?;
    Some(LogEntry {
        pid,
        resumed,
        protocol,
        session_id,
        line: line.to_string(),
    })
}

fn new_tag() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "t{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

// ---------------------------------------------------------------------------
// TLS client
// ---------------------------------------------------------------------------

/// A TLS client context (no certificate verification); sessions it returns
/// can only be resumed through the same client.
pub struct Client {
    ctx: SslContext,
    id: u64,
}

/// A session to resume, tied to the [`Client`] that made it.
#[derive(Clone)]
pub struct Session {
    inner: SslSession,
    client: u64,
}

/// The client's side of an open connection whose handshake is done.
pub struct Open {
    stream: SslStream<TcpStream>,
    resumed: bool,
    client: u64,
}

/// Counts of a TLS load loop (fault and soak tests): full handshakes,
/// resumption attempts, how many resumed, and failed connections.
#[derive(Default)]
pub struct Tally {
    pub full: std::sync::atomic::AtomicU64,
    pub attempts: std::sync::atomic::AtomicU64,
    pub resumed: std::sync::atomic::AtomicU64,
    pub errors: std::sync::atomic::AtomicU64,
}

impl Tally {
    /// Count one connection that offered a session (`offered`) or not, and
    /// return the session to offer next: the one this connection got, or
    /// `current` if it failed (a connection cut by a kill, say).
    pub fn record(
        &self,
        offered: bool,
        outcome: Result<Reply, String>,
        current: Option<Session>,
    ) -> Option<Session> {
        use std::sync::atomic::Ordering::Relaxed;
        match outcome {
            Ok(reply) => {
                if offered {
                    self.attempts.fetch_add(1, Relaxed);
                    if reply.resumed {
                        self.resumed.fetch_add(1, Relaxed);
                    }
                } else {
                    self.full.fetch_add(1, Relaxed);
                }
                Some(reply.session)
            }
            Err(_) => {
                self.errors.fetch_add(1, Relaxed);
                current
            }
        }
    }
}

/// A response, read to the end of the connection.
#[derive(Clone, Debug)]
pub struct Reply {
    pub resumed: bool,
    pub session: Session,
    pub status: u16,
    pub protocol: String,
    pub raw: Vec<u8>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.raw).into_owned()
    }
}

static CLIENT_IDS: AtomicU64 = AtomicU64::new(1);

impl Client {
    /// Pinned to one protocol version.
    pub fn new(tls: Tls) -> Client {
        Client::build(tls.version(), tls.version())
    }

    /// TLS 1.2 or 1.3, whichever the server prefers.
    pub fn any() -> Client {
        Client::build(SslVersion::TLS1_2, SslVersion::TLS1_3)
    }

    fn build(min: SslVersion, max: SslVersion) -> Client {
        let mut b = SslContextBuilder::new(SslMethod::tls_client()).expect("SSL_CTX_new");
        b.set_verify(SslVerifyMode::NONE);
        b.set_min_proto_version(Some(min)).expect("min version");
        b.set_max_proto_version(Some(max)).expect("max version");
        // httpd may close without close_notify after `Connection: close`.
        b.set_options(SslOptions::IGNORE_UNEXPECTED_EOF);
        Client {
            ctx: b.build(),
            id: CLIENT_IDS.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Connect to 127.0.0.1:`port` and complete the handshake, offering
    /// `session` (which must come from this client).
    pub fn handshake(&self, port: u16, session: Option<&Session>) -> Result<Open, String> {
        self.handshake_within(port, session, WAIT)
    }

    /// [`Client::handshake`] with every socket operation bounded by `limit`.
    pub fn handshake_within(
        &self,
        port: u16,
        session: Option<&Session>,
        limit: Duration,
    ) -> Result<Open, String> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let tcp =
            TcpStream::connect_timeout(&addr, limit).map_err(|e| format!("connect {addr}: {e}"))?;
        tcp.set_read_timeout(Some(limit))
            .map_err(|e| e.to_string())?;
        tcp.set_write_timeout(Some(limit))
            .map_err(|e| e.to_string())?;
        let mut ssl = Ssl::new(&self.ctx).map_err(|e| format!("SSL_new: {e}"))?;
        if let Some(s) = session {
            assert_eq!(
                s.client, self.id,
                "a session can only be resumed by the Client that made it"
            );
            // SAFETY: the session was returned by a connection of this same
            // SslContext (checked just above), as set_session requires.
            unsafe { ssl.set_session(&s.inner) }.map_err(|e| format!("set_session: {e}"))?;
        }
        let stream = ssl.connect(tcp).map_err(|e| format!("handshake: {e}"))?;
        let resumed = stream.ssl().session_reused();
        Ok(Open {
            stream,
            resumed,
            client: self.id,
        })
    }
}

impl Open {
    /// Whether the handshake resumed the offered session.
    pub fn resumed(&self) -> bool {
        self.resumed
    }

    /// Send `GET <target>` with `Connection: close` and read the whole
    /// response (so TLS 1.3 session tickets are processed).
    pub fn request(mut self, target: &str) -> Result<Reply, String> {
        let req = format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        self.stream
            .write_all(req.as_bytes())
            .map_err(|e| format!("write request: {e}"))?;
        let mut raw = Vec::new();
        self.stream
            .read_to_end(&mut raw)
            .map_err(|e| format!("read response ({} bytes so far): {e}", raw.len()))?;
        let status = raw
            .split(|&b| b == b'\r')
            .next()
            .and_then(|l| std::str::from_utf8(l).ok())
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("no HTTP status line in {:?}", String::from_utf8_lossy(&raw)))?;
        // Answer the server's close_notify. Without SSL_SENT_SHUTDOWN,
        // SSL_free calls the session "bad" and marks it not resumable.
        let _ = self.stream.shutdown();
        let ssl = self.stream.ssl();
        // A copy of the session (not the connection's object) to resume.
        let session = ssl
            .session()
            .ok_or("no session after the response")?
            .to_der()
            .and_then(|der| SslSession::from_der(&der))
            .map_err(|e| format!("copy session: {e}"))?;
        Ok(Reply {
            resumed: self.resumed,
            session: Session {
                inner: session,
                client: self.client,
            },
            status,
            protocol: ssl.version_str().to_string(),
            raw,
        })
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let id: String = self.inner.id().iter().map(|b| format!("{b:02x}")).collect();
        f.debug_struct("Session")
            .field("id", &id)
            .field("client", &self.client)
            .finish()
    }
}

impl Session {
    /// The session id as the client knows it, lower-case hex. For TLS 1.2
    /// (tickets off) it is the id the server caches the session under.
    pub fn id_hex(&self) -> String {
        self.inner.id().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The session's master key (TLS 1.3: its resumption PSK), lower-case hex.
    pub fn master_key_hex(&self) -> String {
        let mut buf = vec![0u8; self.inner.master_key_len()];
        let n = self.inner.master_key(&mut buf);
        buf[..n].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The session's creation time (seconds since the epoch).
    pub fn time(&self) -> i64 {
        #[allow(clippy::useless_conversion)]
        i64::from(self.inner.time())
    }

    /// A copy whose creation time is now. A TLS 1.3 client does not offer a
    /// ticket older than its lifetime hint; with a refreshed time it does,
    /// so a test can check that the *server's cache* refuses an expired id.
    pub fn refreshed(&self) -> Session {
        extern "C" {
            // libssl (linked through openssl-sys): long SSL_SESSION_set_time(SSL_SESSION *, long).
            fn SSL_SESSION_set_time(
                s: *mut openssl_sys::SSL_SESSION,
                t: libc::c_long,
            ) -> libc::c_long;
        }
        let der = self.inner.to_der().expect("i2d_SSL_SESSION");
        let mut p = der.as_ptr();
        // SAFETY: `p` points at `der.len()` readable bytes; d2i allocates a
        // new session (or returns null) and advances `p` within them.
        let raw = unsafe {
            openssl_sys::d2i_SSL_SESSION(std::ptr::null_mut(), &mut p, der.len() as libc::c_long)
        };
        assert!(!raw.is_null(), "d2i_SSL_SESSION failed");
        // SAFETY: `raw` is a valid session we own.
        unsafe { SSL_SESSION_set_time(raw, unix_now() as libc::c_long) };
        // SAFETY: `raw` is valid; a null output pointer asks for the length only.
        let len = unsafe { openssl_sys::i2d_SSL_SESSION(raw, std::ptr::null_mut()) };
        let mut out = vec![0u8; usize::try_from(len).unwrap_or(0)];
        let mut q = out.as_mut_ptr();
        // SAFETY: `out` has the `len` bytes i2d said it needs; it writes at
        // `q` and advances it.
        let n = unsafe { openssl_sys::i2d_SSL_SESSION(raw, &mut q) };
        // SAFETY: `raw` is ours and no longer used.
        unsafe { openssl_sys::SSL_SESSION_free(raw) };
        assert!(len > 0 && n == len, "i2d_SSL_SESSION failed");
        out.truncate(n as usize);
        Session {
            inner: SslSession::from_der(&out).expect("SslSession::from_der"),
            client: self.client,
        }
    }
}

/// Have `cmd` drop to `user` (uid, gid), if given, between fork and exec.
fn drop_privileges(cmd: &mut Command, user: Option<(u32, u32)>) {
    if let Some((uid, gid)) = user {
        // SAFETY: the closure only calls async-signal-safe functions
        // (setgroups, setgid, setuid) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(gid) != 0
                    || libc::setuid(uid) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
}
