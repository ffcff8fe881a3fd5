//! An instance directory: certificate, configuration, `apache2 -t`.

use super::*;

/// A self-signed P-256 certificate for localhost/127.0.0.1, made once per
/// test process: (certificate PEM, PKCS#8 key PEM).
pub(crate) fn certificate() -> &'static (Vec<u8>, Vec<u8>) {
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

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// The uid/gid httpd's children run as when httpd starts as root (we are
/// root and no [`Options::start_as`]).
pub(crate) fn run_as(opts: &Options) -> Option<(String, String)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || opts.start_as.is_some() {
        return None;
    }
    if user_ids("www-data").is_some() {
        Some(("www-data".into(), "www-data".into()))
    } else {
        Some(("nobody".into(), "#65534".into()))
    }
}

/// (uid, gid) of a user name.
pub(crate) fn user_ids(name: &str) -> Option<(u32, u32)> {
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
            &raw mut pw,
            buf.as_mut_ptr(),
            buf.len(),
            &raw mut result,
        )
    };
    (rc == 0 && !result.is_null()).then_some((pw.pw_uid, pw.pw_gid))
}

/// An instance directory with its configuration, not running.
pub(crate) struct Prepared {
    pub opts: Options,
    pub dir: PathBuf,
    pub port: u16,
    pub conf: PathBuf,
    pub(crate) keep: bool,
    /// Our module's path in `LoadModule` (see [`module_for`]).
    pub(crate) module: PathBuf,
}

impl Prepared {
    /// Create the directory tree, certificate, document root and httpd.conf.
    pub(crate) fn new(opts: Options) -> Prepared {
        let dir = testkit::fresh_dir("httpd");
        for sub in ["logs", "run", "mutex", "htdocs"] {
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

        let module = if opts.provider == Provider::Shm {
            module_for(&opts, &dir)
        } else {
            PathBuf::new()
        };
        let mut prepared = Prepared {
            opts,
            dir,
            port: free_port(),
            conf: PathBuf::new(),
            keep: std::env::var_os("HTTPD_TEST_KEEP").is_some(),
            module,
        };
        prepared.conf = prepared.dir.join("httpd.conf");
        prepared.write_conf();
        if let Some((uid, gid)) = prepared.opts.start_as {
            chown_tree(&prepared.dir, uid, gid);
        }
        prepared
    }

    /// The (uid, gid) httpd starts as, when not ourselves.
    pub(crate) fn start_as(&self) -> Option<(u32, u32)> {
        self.opts.start_as
    }

    /// Give `path` (made by us, inside the instance) to the user httpd
    /// starts as, if that is not us: what an unprivileged server's owner
    /// would have made. No-op otherwise.
    pub(crate) fn give(&self, path: &Path) {
        if let Some((uid, gid)) = self.opts.start_as {
            std::os::unix::fs::lchown(path, Some(uid), Some(gid))
                .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
        }
    }

    /// (Re)write httpd.conf from the options (e.g. after changing them).
    pub(crate) fn write_conf(&self) {
        fs::write(&self.conf, self.render()).expect("write httpd.conf");
    }

    /// `{dir}` replaced by the instance directory.
    pub(crate) fn expand(&self, text: &str) -> String {
        text.replace("{dir}", &self.dir.display().to_string())
    }

    /// The `SSLSessionCache` argument.
    pub(crate) fn cache_arg(&self) -> String {
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
                self.module.display()
            );
        }
        let _ = writeln!(c, "LoadModule ssl_module \"{m}/mod_ssl.so\"");
        if let Some((user, group)) = run_as(o) {
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
        let _ = writeln!(
            c,
            "SSLSessionTickets {}",
            if o.tickets { "on" } else { "off" }
        );
        let _ = writeln!(c, "SSLSessionCache {}", quoted(&self.cache_arg()));
        let _ = writeln!(c, "SSLSessionCacheTimeout {}", o.cache_timeout);
        c.push_str(&self.expand(&o.extra));
        c
    }

    /// `apache2 -t` on this configuration, as the user httpd starts as:
    /// (exit status success, stderr+stdout).
    pub(crate) fn config_test(&self) -> (bool, String) {
        self.config_test_as(self.opts.start_as)
    }

    /// [`Prepared::config_test`] as another user (uid, gid); we must be root.
    pub(crate) fn config_test_as(&self, user: Option<(u32, u32)>) -> (bool, String) {
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
    pub(crate) fn start(self) -> Httpd {
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
    pub(crate) fn try_start(mut self) -> Result<Httpd, Box<(Prepared, String)>> {
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
                        self.port = free_port();
                        self.write_conf();
                        continue;
                    }
                    return Err(Box::new((self, why)));
                }
            }
        }
    }

    /// The last lines of the error log and of httpd's stderr.
    pub(crate) fn diagnostics(&self) -> String {
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

/// `arg` as one httpd directive argument: in double quotes (a `"` inside
/// escaped as `\"`, the only escape httpd reads there) when it has white
/// space, as farm arguments do.
pub(crate) fn quoted(arg: &str) -> String {
    if arg.chars().any(char::is_whitespace) {
        format!("\"{}\"", arg.replace('"', "\\\""))
    } else {
        arg.to_string()
    }
}

/// The module file httpd loads: [`shm_module`], unless httpd starts as
/// another user who cannot reach it (a checkout under a private home
/// directory, say): then a copy in the instance directory `dir`.
pub(crate) fn module_for(opts: &Options, dir: &Path) -> PathBuf {
    let module = shm_module();
    if opts.start_as.is_none() || world_readable(&module) {
        return module;
    }
    // A copy, not a hard link: the instance directory is chowned to that
    // user, and a link would hand over the build's own file.
    let here = dir.join("mod_socache_shm.so");
    fs::copy(&module, &here)
        .unwrap_or_else(|e| panic!("copy {} to {}: {e}", module.display(), here.display()));
    fs::set_permissions(&here, fs::Permissions::from_mode(0o755)).expect("chmod module");
    here
}

/// Whether any user can read `path`: every directory above it searchable
/// by others and the file readable by others.
fn world_readable(path: &Path) -> bool {
    let file_ok = fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o004 != 0);
    file_ok
        && path.ancestors().skip(1).all(|d| {
            d.as_os_str().is_empty()
                || fs::metadata(d).is_ok_and(|m| m.permissions().mode() & 0o001 != 0)
        })
}

/// `chown -R uid:gid` of a tree we made (symbolic links not followed).
pub(crate) fn chown_tree(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
    let is_dir = fs::symlink_metadata(path).is_ok_and(|m| m.is_dir());
    if is_dir {
        for e in fs::read_dir(path).expect("read_dir").flatten() {
            chown_tree(&e.path(), uid, gid);
        }
    }
}

pub(crate) fn unix_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos()
}

/// `apache2 -t` on a fresh instance with these options.
pub(crate) fn config_test(opts: Options) -> (bool, String) {
    Prepared::new(opts).config_test()
}

/// Poll `/server-status?auto` until it answers for the configured MPM;
/// Err(why, with diagnostics) if httpd exits or [`WAIT`] passes first.
pub(crate) fn wait_ready(
    prep: &Prepared,
    child: &mut Child,
    client: &Client,
) -> Result<(), String> {
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
pub(crate) fn terminate(mut child: Child, grace: Duration) -> bool {
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
                &raw mut info,
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
