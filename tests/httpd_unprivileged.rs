//! httpd started by an unprivileged user (a per-user server, a test
//! framework such as Apache::Test, a container run with an arbitrary UID),
//! against the real Debian apache2 on loopback ports above 1024 (the
//! harness is tests/common; [`Options::start_as`] starts httpd as another
//! user).
//!
//! When the tests run as root (as CI does) they create the users
//! [`UNPRIV`] (httpd starts as it) and [`OTHER`] (another unprivileged
//! user) if missing, and give each instance directory to [`UNPRIV`]. Run
//! as an ordinary user they start httpd as themselves; what needs root
//! (chown to another user or to root) is then skipped, and says so.
//!
//! 1. Sessions resume across children (TLS 1.2 and 1.3, prefork and event)
//!    and survive a graceful restart; every httpd process runs as the
//!    unprivileged user (a `User` line is ignored), and the segment file is
//!    that user's, mode 0600.
//! 2. Two such hosts share sessions through a real redis-server, with
//!    `seal=` naming a key file owned by that user, mode 0600.
//! 3. The trust rule at `apache2 -t`: the user's own 0600 key file and a
//!    root-owned file readable by the user's group (a container's secret)
//!    pass; a key file open to group or others, owned by another
//!    unprivileged user, or group-writable fails naming it and the problem;
//!    and the rule of a server started as root is unchanged. The segment's
//!    directory follows the same rule.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use common::{
    new_farm_key, start_farm_host, user_ids, write_key_file, Client, Conn, FarmArg, FarmFigure,
    Httpd, Mpm, Options, Prepared, Provider, RedisServer, Session, SessionCache, Tls, CACHE_FILE,
    FARM_KEY_FILE, FARM_PREFIX,
};

/// The user httpd starts as when the tests run as root.
const UNPRIV: &str = "socache-unpriv";
/// Another unprivileged user: owns what the server must not trust.
const OTHER: &str = "socache-unpriv2";

/// Sessions per run.
const SESSIONS: usize = 100;
/// Of which at least this many must resume.
const RESUMED_AT_LEAST: usize = 99;

/// How long a store may take to reach Redis (forwarded asynchronously).
const FORWARD_WAIT: Duration = Duration::from_secs(10);

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// (uid, gid) of `name`, made with `useradd` if missing (we are root).
fn ensure_user(name: &str) -> (u32, u32) {
    static LOCK: Mutex<()> = Mutex::new(());
    let _held = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(ids) = user_ids(name) {
        return ids;
    }
    let out = Command::new("useradd")
        .args([
            "--system",
            "--user-group",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            name,
        ])
        .output()
        .expect("run useradd");
    // Another test process may have made it meanwhile (exit status 9).
    user_ids(name).unwrap_or_else(|| {
        panic!(
            "useradd {name} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Whom httpd starts as: [`UNPRIV`] when we are root, else ourselves (None).
fn unprivileged() -> Option<(u32, u32)> {
    is_root().then(|| ensure_user(UNPRIV))
}

/// The uid httpd runs as in these tests.
fn server_uid() -> u32 {
    match unprivileged() {
        Some((uid, _)) => uid,
        // SAFETY: geteuid has no preconditions.
        None => unsafe { libc::geteuid() },
    }
}

/// Options of an unprivileged server. With a `User` line (when the user
/// exists): httpd started unprivileged ignores it, which test 1 checks.
fn options(mpm: Mpm) -> Options {
    let opts = Options::new(Provider::Shm, mpm).start_as(unprivileged());
    if user_ids("www-data").is_some() {
        opts.extra("User www-data\nGroup www-data")
    } else {
        opts
    }
}

fn describe(c: &Conn) -> String {
    format!(
        "status {} client resumed={} log: {}",
        c.status, c.resumed, c.log.line
    )
}

/// `path` (`name` if it cannot be read) is `uid`'s, mode 0600; `wrong`
/// says so when it is not.
fn assert_owned_0600(path: &Path, name: &str, uid: u32, wrong: &str) {
    let meta = fs::metadata(path).expect(name);
    assert_eq!((meta.uid(), meta.mode() & 0o7777), (uid, 0o600), "{wrong}");
}

/// Real and effective uid of a process, from /proc.
fn uids(pid: u32) -> Option<(u32, u32)> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    let mut f = line.split_whitespace().skip(1);
    Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
}

/// Every process of `httpd` (parent and children) runs as `uid`.
fn assert_runs_as(httpd: &mut Httpd, uid: u32, when: &str) {
    let parent = httpd.pid();
    let children = common::children(parent);
    if children.is_empty() {
        httpd.fail(&format!("{when}: httpd {parent} has no children"));
    }
    let mut wrong = Vec::new();
    for pid in std::iter::once(parent as i32).chain(children.iter().copied()) {
        match uids(pid as u32) {
            Some((real, effective)) if real == uid && effective == uid => {}
            Some(ids) => wrong.push(format!("pid {pid} runs as (real, effective) {ids:?}")),
            None => {} // exited meanwhile
        }
    }
    if !wrong.is_empty() {
        httpd.fail(&format!(
            "{when}: not every httpd process runs as uid {uid}: {wrong:?}"
        ));
    }
}

/// `SESSIONS` full handshakes: their sessions and the pid that made each.
fn full_handshakes(httpd: &mut Httpd, client: &Client) -> Vec<(Session, u32)> {
    (0..SESSIONS)
        .map(|_| {
            let c = httpd.new_session(client, describe);
            (c.session, c.log.pid)
        })
        .collect()
}

// ---------------------------------------------------------------------------
// 1. Resumption across children, and across a graceful restart.
// ---------------------------------------------------------------------------

/// For TLS 1.2 and 1.3: [`SESSIONS`] full handshakes; each session is then
/// offered on more connections held open at once than one process can
/// serve: counted when a process other than the one that made it resumed
/// it. After `apache2 -k graceful`
/// (run as the user) every session is offered again to the new children.
fn across_children_and_graceful(mpm: Mpm) {
    let uid = server_uid();
    let mut httpd = Httpd::start(options(mpm));
    assert_runs_as(&mut httpd, uid, "after start");
    let segment = httpd.dir().join(CACHE_FILE);
    let wrong = format!(
        "the segment {} should be the server user's, mode 0600",
        segment.display()
    );
    assert_owned_0600(&segment, "the segment file", uid, &wrong);

    let mut made = Vec::new();
    for tls in [Tls::V12, Tls::V13] {
        let client = Client::new(tls);
        let sessions = full_handshakes(&mut httpd, &client);
        let mut across = 0;
        let mut not = Vec::new();
        let mut pids = BTreeSet::new();
        // Connections held open at once that one process cannot all serve
        // (prefork: one per child; event: one per thread, 4 a process), so
        // at least one is served by another process than `origin`.
        let held = match mpm {
            Mpm::Prefork => 2,
            Mpm::Event | Mpm::Worker => common::THREADS_PER_CHILD + 1,
        };
        for (session, origin) in &sessions {
            let batch = httpd.concurrent(&client, session, held);
            let mut other = false;
            for c in &batch {
                assert_eq!(c.log.protocol, tls.log_name(), "{}", describe(c));
                pids.insert(c.log.pid);
                if c.both_resumed() && c.log.pid != *origin {
                    other = true;
                } else if !c.both_resumed() {
                    not.push(describe(c));
                }
            }
            if other {
                across += 1;
            }
        }
        not.truncate(5);
        eprintln!(
            "unprivileged (uid {uid}) {} {}: {across}/{SESSIONS} sessions resumed by another \
             process than the one that made them ({} processes served)",
            mpm.name(),
            tls.log_name(),
            pids.len()
        );
        assert!(
            across >= RESUMED_AT_LEAST,
            "{} {}: only {across} of {SESSIONS} sessions resumed in another process; \
             not resumed e.g. {not:#?}",
            mpm.name(),
            tls.log_name()
        );
        made.push((tls, client, sessions));
    }

    let generation = httpd.generation();
    httpd.graceful();
    assert!(httpd.generation() > generation, "no new generation");
    assert_runs_as(&mut httpd, uid, "after the graceful restart");
    for (tls, client, sessions) in &made {
        let sessions = sessions.iter().map(|(s, _)| s);
        let (resumed, not) = httpd.resume_each(client, sessions, |_| {}, describe);
        let name = tls.log_name();
        eprintln!(
            "unprivileged (uid {uid}) {} {name}: {resumed}/{SESSIONS} sessions made before \
             the graceful restart resumed after it",
            mpm.name()
        );
        assert!(
            resumed >= RESUMED_AT_LEAST,
            "{} {name}: only {resumed} of {SESSIONS} sessions resumed after the graceful \
             restart; e.g. {not:#?}",
            mpm.name()
        );
    }
    let log = httpd.error_log();
    assert!(
        log.contains("reattached"),
        "no line about reattaching to the live segment after the graceful restart:\n{log}"
    );
}

common::test_cases!(across_children_and_graceful {
    prefork_unprivileged_resumes_across_children_and_a_graceful_restart(Mpm::Prefork);
    event_unprivileged_resumes_across_processes_and_a_graceful_restart(Mpm::Event);
});

// ---------------------------------------------------------------------------
// 2. Two unprivileged hosts share sessions through Redis.
// ---------------------------------------------------------------------------

/// Hosts A and B, both started by the unprivileged user, one redis-server,
/// `seal=` naming each host's copy of one farm key, owned by that user,
/// mode 0600. For TLS 1.2 and 1.3: [`SESSIONS`] full handshakes on A; once
/// their stores are in Redis, each is offered to B, which never saw it.
#[test]
fn two_unprivileged_hosts_share_sessions_through_redis() {
    let uid = server_uid();
    let redis = RedisServer::start();
    let arg = FarmArg::redis(&redis.url());
    let key = new_farm_key();
    let mut a = start_farm_host(options(Mpm::Prefork), &arg, Some(&key));
    let mut b = start_farm_host(options(Mpm::Prefork), &arg, Some(&key));
    for host in [&mut a, &mut b] {
        let file = host.dir().join(FARM_KEY_FILE);
        let wrong = format!(
            "{}: the key file should be the server user's, mode 0600",
            file.display()
        );
        assert_owned_0600(&file, "key file", uid, &wrong);
        assert_runs_as(host, uid, "farm host after start");
    }
    for tls in [Tls::V12, Tls::V13] {
        let client = Client::new(tls);
        let sessions: Vec<Session> = full_handshakes(&mut a, &client)
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        let ids: Vec<String> = sessions.iter().map(Session::server_id_hex).collect();
        let stored = redis.wait_for_sessions(FARM_PREFIX, &ids, FORWARD_WAIT);
        let in_redis = stored.iter().flatten().count();
        assert!(
            in_redis >= RESUMED_AT_LEAST,
            "{}: {in_redis} of {SESSIONS} sessions made on A reached Redis within {FORWARD_WAIT:?}",
            tls.log_name()
        );
        let hits_before = b.farm(FarmFigure::RemoteHits);
        let check = |c: &Conn| assert_eq!(c.log.protocol, tls.log_name(), "{}", describe(c));
        let (resumed, not) = b.resume_each(&client, &sessions, check, describe);
        let hits = b.farm(FarmFigure::RemoteHits) - hits_before;
        eprintln!(
            "unprivileged (uid {uid}) farm {}: {resumed}/{SESSIONS} sessions made on A \
             resumed on B ({hits} remote hits; {in_redis} in Redis)",
            tls.log_name()
        );
        assert!(
            resumed >= RESUMED_AT_LEAST,
            "{}: only {resumed} of {SESSIONS} sessions made on A resumed on B; e.g. {not:#?}",
            tls.log_name()
        );
        assert!(
            hits >= resumed as u64,
            "B resumed {resumed} sessions it never made but counts {hits} remote hits"
        );
    }
    // The values in Redis are sealed: no master key of a session is there.
    let s = Client::new(Tls::V12);
    let c = a.connect(&s, None);
    let id = c.session.server_id_hex();
    let found = redis.wait_for_sessions(FARM_PREFIX, std::slice::from_ref(&id), FORWARD_WAIT);
    let value = found[0]
        .as_ref()
        .and_then(|k| redis.get(k))
        .expect("the session's value in Redis");
    let master = c.session.master_key();
    assert!(
        !value.windows(master.len()).any(|w| w == master.as_slice()),
        "a master key sits in Redis in clear"
    );
}

// ---------------------------------------------------------------------------
// 3. The trust rule at `apache2 -t`.
// ---------------------------------------------------------------------------

/// `apache2 -t` of a farm host started as `start_as` (None: as ourselves)
/// whose key file is `{dir}/farm.key` with `owner`, `group` (None: ours, as
/// created) and `mode`: (passed, output).
fn key_file_test(
    start_as: Option<(u32, u32)>,
    owner: Option<(u32, u32)>,
    mode: u32,
) -> (bool, String) {
    // Nothing listens on port 1: `-t` needs no Redis.
    let arg = FarmArg::redis("redis://127.0.0.1:1/0");
    let prep = Prepared::new(
        Options::new(Provider::Shm, Mpm::Prefork)
            .start_as(start_as)
            .cache(arg.cache()),
    );
    let path = write_key_file(&prep.dir, FARM_KEY_FILE, &new_farm_key(), mode);
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::lchown(&path, Some(uid), Some(gid)).expect("chown key file");
        // chown may clear bits; set exactly what was asked.
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
    }
    prep.config_test()
}

/// A case: who starts httpd, who owns the key file, its mode; whether
/// `-t` passes and, if not, the words its output must have (besides the
/// file's name).
struct Case {
    what: &'static str,
    start_as: Option<(u32, u32)>,
    owner: Option<(u32, u32)>,
    mode: u32,
    pass: bool,
    words: Vec<String>,
}

fn run_cases(cases: Vec<Case>) {
    let mut failures = Vec::new();
    for c in cases {
        let (ok, out) = key_file_test(c.start_as, c.owner, c.mode);
        let lower = out.to_lowercase();
        let named = lower.contains(FARM_KEY_FILE)
            && c.words.iter().all(|w| lower.contains(&w.to_lowercase()));
        if c.pass && !ok {
            failures.push(format!("{}: -t should pass:\n{out}", c.what));
        } else if !c.pass && (ok || !named) {
            failures.push(format!(
                "{}: -t {}; wanted {FARM_KEY_FILE} and {:?} in:\n{out}",
                c.what,
                if ok { "passed" } else { "failed" },
                c.words
            ));
        } else {
            eprintln!(
                "{}: -t {}{}",
                c.what,
                if ok { "passed" } else { "failed: " },
                out.lines()
                    .find(|l| l.contains(FARM_KEY_FILE))
                    .unwrap_or("")
                    .trim()
            );
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn key_files_the_rule_refuses_fail_the_config_test_naming_them() {
    let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let Some(user) = unprivileged() else {
        // Not root: we are the unprivileged user; files can only be ours.
        eprintln!("not root: the cases with other owners and groups are skipped");
        run_cases(vec![
            Case {
                what: "our own key file, 0600",
                start_as: None,
                owner: None,
                mode: 0o600,
                pass: true,
                words: vec![],
            },
            Case {
                what: "our own key file, 0640",
                start_as: None,
                owner: None,
                mode: 0o640,
                pass: false,
                words: words(&["0640", "group", "chmod 600"]),
            },
            Case {
                what: "our own key file, 0604",
                start_as: None,
                owner: None,
                mode: 0o604,
                pass: false,
                words: words(&["0604", "others", "chmod 600"]),
            },
        ]);
        return;
    };
    let (uid, gid) = user;
    let other = ensure_user(OTHER);
    let (ouid, ogid) = other;
    let un = Some(user);
    let root_group = |g: u32| Some((0, g));
    let neither = |owner: u32, reader: u32| {
        vec![
            format!("owned by uid {owner}"),
            format!("neither root nor the user httpd starts as (uid {reader})"),
        ]
    };
    run_cases(vec![
        // Started unprivileged: accepted.
        Case {
            what: "the server user's key file, 0600",
            start_as: un,
            owner: Some(user),
            mode: 0o600,
            pass: true,
            words: vec![],
        },
        Case {
            what: "the server user's key file, 0400",
            start_as: un,
            owner: Some(user),
            mode: 0o400,
            pass: true,
            words: vec![],
        },
        Case {
            what:
                "root's key file readable by the server user's group, 0440 (a container's secret)",
            start_as: un,
            owner: root_group(gid),
            mode: 0o440,
            pass: true,
            words: vec![],
        },
        Case {
            what: "root's key file readable by the server user's group, 0640",
            start_as: un,
            owner: root_group(gid),
            mode: 0o640,
            pass: true,
            words: vec![],
        },
        // Started unprivileged: refused, naming the file and the problem.
        Case {
            what: "the server user's key file, 0640",
            start_as: un,
            owner: Some(user),
            mode: 0o640,
            pass: false,
            words: words(&["mode 0640", "its group", "chmod 600"]),
        },
        Case {
            what: "the server user's key file, 0604",
            start_as: un,
            owner: Some(user),
            mode: 0o604,
            pass: false,
            words: words(&["mode 0604", "others", "chmod 600"]),
        },
        Case {
            what: "the server user's key file, 0644",
            start_as: un,
            owner: Some(user),
            mode: 0o644,
            pass: false,
            words: words(&["mode 0644", "group and others"]),
        },
        Case {
            what: "another unprivileged user's key file readable by the server's group",
            start_as: un,
            owner: Some((ouid, gid)),
            mode: 0o640,
            pass: false,
            words: neither(ouid, uid),
        },
        Case {
            what: "another unprivileged user's key file readable by all",
            start_as: un,
            owner: Some(other),
            mode: 0o644,
            pass: false,
            words: neither(ouid, uid),
        },
        Case {
            what: "another unprivileged user's key file, 0600 (unreadable)",
            start_as: un,
            owner: Some(other),
            mode: 0o600,
            pass: false,
            words: words(&["cannot open", "permission denied"]),
        },
        Case {
            what: "root's key file, 0600 (unreadable)",
            start_as: un,
            owner: root_group(0),
            mode: 0o600,
            pass: false,
            words: words(&["cannot open", "permission denied"]),
        },
        Case {
            what: "root's key file readable by another group",
            start_as: un,
            owner: root_group(ogid),
            mode: 0o440,
            pass: false,
            words: words(&["cannot open", "permission denied"]),
        },
        Case {
            what: "root's key file writable by the server user's group",
            start_as: un,
            owner: root_group(gid),
            mode: 0o460,
            pass: false,
            words: words(&["mode 0460", "never write"]),
        },
        Case {
            what: "root's key file readable by all",
            start_as: un,
            owner: root_group(gid),
            mode: 0o444,
            pass: false,
            words: words(&["mode 0444", "others"]),
        },
        // Started as root: the rule of an ordinary host, unchanged.
        Case {
            what: "root-started: root's key file, 0600",
            start_as: None,
            owner: root_group(0),
            mode: 0o600,
            pass: true,
            words: vec![],
        },
        Case {
            what: "root-started: root's key file readable by a group, 0640",
            start_as: None,
            owner: root_group(gid),
            mode: 0o640,
            pass: false,
            words: words(&[
                "mode 0640",
                "only when httpd starts as a user other than root",
            ]),
        },
        Case {
            what: "root-started: the unprivileged user's key file, 0600",
            start_as: None,
            owner: Some(user),
            mode: 0o600,
            pass: false,
            words: neither(uid, 0),
        },
    ]);
}

/// The segment's directory follows the same rule: the server user's (or
/// root's), writable by its owner only.
#[test]
fn segment_directories_follow_the_same_rule() {
    let user = unprivileged();
    let uid = server_uid();
    let run = |owner: Option<(u32, u32)>, mode: u32| -> (bool, String) {
        let prep = Prepared::new(
            Options::new(Provider::Shm, Mpm::Prefork)
                .start_as(user)
                .cache(SessionCache::Raw("shm:{dir}/segdir/scache(512000)".into())),
        );
        let dir = prep.dir.join("segdir");
        fs::create_dir(&dir).expect("mkdir segdir");
        prep.give(&dir);
        if let Some((u, g)) = owner {
            std::os::unix::fs::lchown(&dir, Some(u), Some(g)).expect("chown segdir");
        }
        fs::set_permissions(&dir, fs::Permissions::from_mode(mode)).expect("chmod segdir");
        prep.config_test()
    };
    let (ok, out) = run(None, 0o700);
    assert!(
        ok,
        "the server user's 0700 directory should pass -t:\n{out}"
    );
    let (ok, out) = run(None, 0o770);
    assert!(
        !ok && out.contains("segdir") && out.contains("writable by its group"),
        "a group-writable directory of the server user should fail -t naming it:\n{out}"
    );
    let Some((_, gid)) = user else {
        eprintln!("not root: a directory of another user is not tried");
        return;
    };
    // Another user's directory the server can write (through its group):
    // its owner could replace the segment.
    let (ouid, _) = ensure_user(OTHER);
    let (ok, out) = run(Some((ouid, gid)), 0o775);
    let want =
        format!("owned by uid {ouid}, neither root nor the user httpd starts as (uid {uid})");
    assert!(
        !ok && out.contains("segdir") && out.contains(&want),
        "another user's directory should fail -t with {want:?}:\n{out}"
    );
}
