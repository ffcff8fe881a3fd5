//! A running httpd: start, graceful, stop, logs, status, shmcache.

use super::*;

/// A running httpd; dropping it stops it.
pub(crate) struct Httpd {
    pub prep: Prepared,
    pub(crate) child: Option<Child>,
    pub(crate) status_client: Client,
}

/// One line of the access log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LogEntry {
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
pub(crate) struct Conn {
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
    pub(crate) fn both_resumed(&self) -> bool {
        self.resumed && self.log.resumed
    }
}

impl Httpd {
    /// [`Prepared::new`] then [`Prepared::start`].
    pub(crate) fn start(opts: Options) -> Httpd {
        Prepared::new(opts).start()
    }

    pub(crate) fn port(&self) -> u16 {
        self.prep.port
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.prep.dir
    }

    /// The httpd parent's pid.
    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().expect("httpd running").id()
    }

    /// Spawn `apache2 -DFOREGROUND` in its own process group.
    pub(crate) fn launch(prep: &Prepared) -> Child {
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
        let user = prep.opts.start_as;
        // SAFETY: between fork and exec the closure only calls the
        // async-signal-safe setpgid, setgroups, setgid, setuid and prctl:
        // httpd gets its own process group (so a stop can reach all its
        // processes), the user it starts as (if not us), and SIGTERM when
        // the test thread that started it dies, so a crashed test leaves no
        // httpd. The death signal is set last: a change of user clears it.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setpgid(0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if let Some((uid, gid)) = user {
                    if libc::setgroups(0, std::ptr::null()) != 0
                        || libc::setgid(gid) != 0
                        || libc::setuid(uid) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd.spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", apache2_bin().display()))
    }

    /// Panic with the diagnostics (and keep the instance dir).
    pub(crate) fn fail(&mut self, why: &str) -> ! {
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
    pub(crate) fn check_alive(&mut self, when: &str) {
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
    pub(crate) fn graceful(&mut self) {
        let before = self.generation();
        let out_path = self.prep.dir.join("logs/graceful.out");
        let out = fs::File::create(&out_path).expect("create graceful.out");
        let mut cmd = Command::new(apache2_bin());
        cmd.arg("-d")
            .arg(&self.prep.dir)
            .arg("-f")
            .arg(&self.prep.conf)
            .args(["-k", "graceful"])
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup"))
            .stderr(out);
        // As the user httpd started as: its configuration is read (and
        // checked) by that user, as an operator of that server would.
        drop_privileges(&mut cmd, self.prep.opts.start_as);
        let mut child = cmd.spawn().expect("spawn apache2 -k graceful");
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
        self.await_generation_after(before, "during graceful restart", "graceful");
    }

    /// A graceful restart by SIGUSR1 straight to the parent (as `kill -USR1`
    /// or a log rotator sends it), without `apache2 -k graceful`'s own
    /// reading of the configuration first; waits as [`Httpd::graceful`].
    pub(crate) fn graceful_by_signal(&mut self) {
        let before = self.generation();
        // SAFETY: kill has no memory-safety preconditions; the pid is our
        // running child (httpd's parent).
        unsafe { libc::kill(self.pid() as libc::pid_t, libc::SIGUSR1) };
        self.await_generation_after(before, "during graceful restart (SIGUSR1)", "SIGUSR1");
    }

    /// Waits (up to [`WAIT`], httpd alive throughout: `during` names the
    /// moment in a failure) until a process of a generation newer than
    /// `before` serves `server-status`; fails saying what it came `after`.
    fn await_generation_after(&mut self, before: u64, during: &str, after: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            self.check_alive(during);
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
                    "no process of generation > {before} served within {WAIT:?} after {after}"
                ));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// `ParentServerConfigGeneration` of whichever process answers.
    pub(crate) fn generation(&mut self) -> u64 {
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
    pub(crate) fn stop(&mut self) {
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
    pub(crate) fn access_log(&self) -> String {
        fs::read_to_string(self.prep.dir.join("logs/access.log")).unwrap_or_default()
    }

    /// The error log's text.
    pub(crate) fn error_log(&self) -> String {
        fs::read_to_string(self.prep.dir.join("logs/error.log")).unwrap_or_default()
    }

    /// The access-log entry of the request tagged `tag` (waits for it: httpd
    /// logs after the response is sent).
    pub(crate) fn log_entry(&mut self, tag: &str) -> LogEntry {
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
    pub(crate) fn connect(&mut self, client: &Client, session: Option<&Session>) -> Conn {
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

    /// A full handshake, which must have been new on both sides and served
    /// (200): else fails with `describe` of the connection.
    pub(crate) fn new_session(
        &mut self,
        client: &Client,
        describe: impl Fn(&Conn) -> String,
    ) -> Conn {
        let c = self.connect(client, None);
        assert!(
            c.status == 200 && !c.resumed && !c.log.resumed,
            "a new handshake: {}",
            describe(&c)
        );
        c
    }

    /// Offers `session` on a connection of its own, which must have resumed
    /// on both sides if `resumes`, on neither otherwise: else fails saying
    /// `why` and `describe` of the connection.
    pub(crate) fn offer(
        &mut self,
        client: &Client,
        session: &Session,
        resumes: bool,
        why: &str,
        describe: impl Fn(&Conn) -> String,
    ) {
        let c = self.connect(client, Some(session));
        let as_expected = if resumes {
            c.both_resumed()
        } else {
            !c.resumed && !c.log.resumed
        };
        assert!(as_expected, "{why}: {}", describe(&c));
    }

    /// Offers each of `sessions` to this server on a connection of its own,
    /// passing every connection to `check` first: how many both resumed, and
    /// `describe` of (the first five of) those that did not.
    pub(crate) fn resume_each<'a>(
        &mut self,
        client: &Client,
        sessions: impl IntoIterator<Item = &'a Session>,
        check: impl Fn(&Conn),
        describe: impl Fn(&Conn) -> String,
    ) -> (usize, Vec<String>) {
        let mut resumed = 0;
        let mut not = Vec::new();
        for s in sessions {
            let c = self.connect(client, Some(s));
            check(&c);
            if c.both_resumed() {
                resumed += 1;
            } else {
                not.push(describe(&c));
            }
        }
        not.truncate(5);
        (resumed, not)
    }

    /// [`Httpd::connect`] with every socket operation bounded by `limit`,
    /// and the time the handshake and request took (not the wait for the
    /// access-log line). Panics (with diagnostics) if the connection fails.
    pub(crate) fn connect_timed(
        &mut self,
        client: &Client,
        session: Option<&Session>,
        limit: Duration,
    ) -> (Conn, Duration) {
        let tag = new_tag();
        let started = Instant::now();
        let reply = client
            .handshake_within(self.port(), session, limit)
            .and_then(|open| open.request(&format!("/?{tag}")));
        let took = started.elapsed();
        match reply {
            Ok(r) => (self.finish(tag, r), took),
            Err(e) => self.fail(&format!("request {tag} (after {took:?}): {e}")),
        }
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
    pub(crate) fn concurrent(&mut self, client: &Client, session: &Session, n: usize) -> Vec<Conn> {
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
    pub(crate) fn get(&mut self, target: &str) -> Reply {
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
    pub(crate) fn status_auto(&mut self) -> HashMap<String, String> {
        let r = self.get("/server-status?auto");
        if r.status != 200 {
            self.fail(&format!("server-status?auto: status {}", r.status));
        }
        parse_status(&r.text())
    }

    /// A numeric `?auto` figure.
    pub(crate) fn figure(&mut self, key: &str) -> u64 {
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
pub(crate) struct Inspected {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// The `shmcache` binary of this build (the shmcache crate, a member of
/// the workspace): beside this test binary's directory, in the same
/// profile's target directory. Built first if missing.
pub(crate) fn shmcache_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("current_exe");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>/deps/<test>");
        let bin = profile_dir.join("shmcache");
        if !bin.exists() {
            let release = profile_dir.ends_with("release");
            let mut cargo =
                Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
            cargo.args(["build", "-p", "shmcache", "--bin", "shmcache"]);
            if release {
                cargo.arg("--release");
            }
            let st = cargo
                .current_dir(repo_root())
                .status()
                .expect("run cargo build -p shmcache");
            assert!(st.success(), "cargo build -p shmcache failed");
        }
        assert!(bin.exists(), "no shmcache binary at {}", bin.display());
        bin
    })
    .clone()
}

/// Run `shmcache <args>` (this crate's binary), bounded by [`WAIT`]; as the
/// given (uid, gid) when `user` is set (we must be root).
pub(crate) fn shmcache_as<S: AsRef<std::ffi::OsStr>>(
    user: Option<(u32, u32)>,
    args: &[S],
) -> Inspected {
    let mut cmd = Command::new(shmcache_bin());
    cmd.args(args);
    drop_privileges(&mut cmd, user);
    let run = testkit::run_captured(&mut cmd, WAIT);
    let status = run.status;
    let shown: Vec<String> = args
        .iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect();
    let inspected = Inspected {
        success: status.is_some_and(|s| s.success()),
        stdout: run.stdout,
        stderr: run.stderr,
    };
    assert!(
        status.is_some(),
        "shmcache {shown:?} did not finish within {WAIT:?}: {inspected:?}"
    );
    inspected
}

/// Run `shmcache <args>` as ourselves, bounded by [`WAIT`].
pub(crate) fn shmcache<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Inspected {
    shmcache_as(None, args)
}

/// Pids of the processes whose parent is `parent` (httpd's children), from
/// `/proc/*/stat`.
pub(crate) fn children(parent: u32) -> Vec<i32> {
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
pub(crate) fn parse_status(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

pub(crate) fn parse_log_line(line: &str) -> Option<LogEntry> {
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

pub(crate) fn new_tag() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "t{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}
