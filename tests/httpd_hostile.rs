//! Hostile neighbours (issue 8), against the real Debian apache2 using `shm`
//! (tests/common/mod.rs is the harness). The threat: code running as the
//! server's `User` (a CGI, a PHP app, a compromised child), another local
//! user, and an operator's typo. Each test is written to fail on the code
//! before issue 8:
//!
//! 1. root never acts on a path it does not control: a symlink swapped in
//!    at the segment's path during graceful restarts changes nothing;
//! 2. a valid segment planted at the path is never reattached;
//! 3. a garbage lock word takes a shard out of service for seconds, never
//!    the server forever;
//! 4. a flipped bit in a cached session is a clean full handshake;
//! 5. the `User` can neither truncate nor replace the segment, children
//!    hold no descriptor of it, and what root itself does wrong (a FIFO at
//!    the path, a truncated file) never stops the server;
//! 6. expired sessions' master keys are zeroed within the documented bound;
//! 7. paths that cannot work fail `apache2 -t` naming the problem, and a
//!    file that is not a segment is left byte for byte.
//!
//! Tests that need to be root (to have a `User` to drop to) say so and
//! return when they are not.

mod common;

use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{
    children, shmcache, user_ids, Client, Httpd, Mpm, Options, Prepared, Provider, SessionCache,
    Tls, CACHE_FILE,
};

fn options() -> Options {
    Options::new(Provider::Shm, Mpm::Prefork)
}

fn segment(dir: &Path) -> PathBuf {
    dir.join(CACHE_FILE)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The user httpd's children run as under the harness (root runs only).
fn server_user() -> (u32, u32) {
    user_ids("www-data")
        .or_else(|| user_ids("nobody"))
        .expect("www-data or nobody")
}

/// Run `script` with `sh -c` as `user` (uid, gid, no supplementary
/// groups); returns (success, output).
fn sh_as(user: (u32, u32), script: &str) -> (bool, String) {
    let out = Command::new("setpriv")
        .arg(format!("--reuid={}", user.0))
        .arg(format!("--regid={}", user.1))
        .arg("--clear-groups")
        .args(["sh", "-c", script])
        .output()
        .expect("run setpriv");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A full handshake then a resumption of its session; true if resumed.
fn resumes(httpd: &mut Httpd, tls: Tls) -> bool {
    let client = Client::new(tls);
    let first = httpd.connect(&client, None);
    let again = httpd.connect(&client, Some(&first.session));
    again.both_resumed()
}

fn figure(httpd: &mut Httpd, key: &str) -> u64 {
    httpd
        .status_auto()
        .get(key)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in server-status"))
}

fn hex(bytes: &str) -> Vec<u8> {
    (0..bytes.len() / 2)
        .map(|i| u8::from_str_radix(&bytes[2 * i..2 * i + 2], 16).expect("hex"))
        .collect()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

// ---------------------------------------------------------------------------
// 1. A symlink swapped in at the path while the parent reattaches.
// ---------------------------------------------------------------------------

/// The old code opened the segment, checked it, then `chown(path)`: a
/// symlink swapped in between got any root file chowned to the `User`.
/// Here a racer swaps the path between the segment and a symlink to a
/// root-owned victim as fast as it can, across graceful restarts; the
/// victim's owner, mode and bytes never change and the server keeps
/// serving.
#[test]
fn a_swapped_symlink_never_turns_root_against_its_own_files() {
    let mut httpd = Httpd::start(options());
    let file = segment(httpd.dir());
    let victim = httpd.dir().join("victim.conf");
    fs::write(&victim, b"root's own file\n").expect("write victim");
    fs::set_permissions(&victim, fs::Permissions::from_mode(0o640)).expect("chmod");
    let before = fs::metadata(&victim).expect("stat victim");
    let stop = AtomicBool::new(false);
    let swaps = AtomicU32::new(0);
    thread::scope(|s| {
        s.spawn(|| {
            let saved = file.with_extension("saved");
            let link = file.with_extension("link");
            while !stop.load(Ordering::Relaxed) {
                let _ = fs::remove_file(&link);
                if std::os::unix::fs::symlink(&victim, &link).is_err() {
                    continue;
                }
                // Keep the real file aside, put the link at the path, then
                // put the real file back: the window the old code lost.
                if fs::rename(&file, &saved).is_ok() {
                    let _ = fs::rename(&link, &file);
                    thread::sleep(Duration::from_micros(200));
                    let _ = fs::rename(&saved, &file);
                    swaps.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        // Stop the racer even if a restart fails (the scope joins it).
        struct StopOnDrop<'a>(&'a AtomicBool);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let _stop = StopOnDrop(&stop);
        for _ in 0..8 {
            httpd.graceful_by_signal();
        }
    });
    let after = fs::metadata(&victim).expect("stat victim");
    assert!(swaps.load(Ordering::Relaxed) > 10, "the racer barely ran");
    assert_eq!(
        (after.uid(), after.gid(), after.mode()),
        (before.uid(), before.gid(), before.mode()),
        "the victim's owner or mode changed"
    );
    assert_eq!(
        fs::read(&victim).expect("read victim"),
        b"root's own file\n"
    );
    assert!(resumes(&mut httpd, Tls::V12), "serving after the race");
    httpd.stop();
}

// ---------------------------------------------------------------------------
// 2. A segment planted by someone else is never reattached.
// ---------------------------------------------------------------------------

/// A valid segment with an entry, owned by another user who keeps it
/// mapped, is at the path when httpd starts. httpd makes its own: the
/// planter's mapping never sees a session.
#[test]
fn a_planted_segment_is_never_trusted() {
    use socache_shm::engine::{Cache, CacheConfig, Timestamp};
    let prep = Prepared::new(options());
    let file = segment(&prep.dir);
    let planted = Cache::create(&CacheConfig {
        path: Some(file.clone()),
        ..CacheConfig::new(512_000)
    })
    .expect("plant a segment");
    planted
        .store(
            b"planted",
            b"by someone else",
            Timestamp::from_secs(4_000_000_000),
        )
        .expect("store");
    if is_root() {
        let (uid, gid) = user_ids("nobody").expect("nobody");
        std::os::unix::fs::chown(&file, Some(uid), Some(gid)).expect("chown to nobody");
    }
    let planted_ino = fs::metadata(&file).expect("stat").ino();
    let mut httpd = prep.start();
    for tls in [Tls::V12, Tls::V13] {
        assert!(
            resumes(&mut httpd, tls),
            "{tls:?} resumes from the new segment"
        );
    }
    let now = fs::metadata(&file).expect("stat");
    assert_ne!(
        now.ino(),
        planted_ino,
        "the planted file is still the segment"
    );
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(now.uid(), euid, "owned by the server's starter");
    assert_eq!(
        planted.stats().entries,
        1,
        "the planter's mapping saw the server's sessions"
    );
    assert!(
        figure(&mut httpd, "CacheCurrentEntries") >= 2,
        "the server's own sessions are in its own segment"
    );
    let log = httpd.error_log();
    assert!(log.contains("found at start"), "{log}");
    httpd.stop();
}

// ---------------------------------------------------------------------------
// 3. Garbage over every shard's lock word while serving.
// ---------------------------------------------------------------------------

/// Offsets of every shard's lock word in a live segment file.
fn lock_words(file: &Path) -> Vec<u64> {
    use socache_shm::engine::layout::SegmentHeader;
    let bytes = fs::read(file).expect("read segment");
    assert!(bytes.len() >= std::mem::size_of::<SegmentHeader>());
    // SAFETY: at least a header's bytes; read_unaligned of plain data.
    let h: SegmentHeader = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    (0..h.shard_count as u64)
        .map(|i| h.shard_headers_offset + i * h.shard_header_size as u64)
        .collect()
}

/// Four bytes of garbage over each shard's lock word used to leave every
/// child asleep forever. Now each operation waits at most a second, the
/// shard answers misses meanwhile, and it is reinitialised a few seconds
/// later: sessions resume again with no operator action.
#[test]
fn garbage_lock_words_cost_seconds_not_the_server() {
    let mut httpd = Httpd::start(options().cache_timeout(300));
    assert!(resumes(&mut httpd, Tls::V12), "before the garbage");
    let file = segment(httpd.dir());
    let words = lock_words(&file);
    let f = fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .expect("open segment");
    for &at in &words {
        f.write_all_at(&0x1234_5678u32.to_ne_bytes(), at)
            .expect("write garbage");
    }
    drop(f);
    let start = Instant::now();
    let mut back = None;
    while start.elapsed() < Duration::from_secs(40) {
        let t = Instant::now();
        let client = Client::new(Tls::V12);
        let open = client
            .handshake_within(httpd.port(), None, Duration::from_secs(10))
            .and_then(|o| o.request("/"));
        let took = t.elapsed();
        let reply = open.unwrap_or_else(|e| panic!("a request failed after the garbage: {e}"));
        assert_eq!(reply.status, 200);
        assert!(
            took < Duration::from_secs(6),
            "a request took {took:?}: some wait is not bounded"
        );
        let again = client
            .handshake_within(httpd.port(), Some(&reply.session), Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("a resumption attempt failed: {e}"));
        if again.resumed() {
            back = Some(start.elapsed());
            break;
        }
        thread::sleep(Duration::from_millis(200));
    }
    let back = back.expect("sessions never resumed again within 40 s");
    let timeouts = figure(&mut httpd, "CacheLockTimeouts");
    let recoveries = figure(&mut httpd, "CacheRecoveries");
    assert!(
        timeouts >= 1 && recoveries >= 1,
        "timeouts {timeouts}, recoveries {recoveries}"
    );
    let log = httpd.error_log();
    assert!(log.contains("out of service"), "no warning logged:\n{log}");
    println!(
        "garbage over {} lock words: resuming again after {back:?} ({timeouts} lock timeouts, {recoveries} recoveries)",
        words.len()
    );
    httpd.stop();
}

// ---------------------------------------------------------------------------
// 4. A flipped bit in a cached session.
// ---------------------------------------------------------------------------

/// The old code resumed with the corrupted master key and the connection
/// died ("bad record mac"). Now the entry fails its checksum: a clean full
/// handshake, the entry wiped, counted, and `shmcache check` names it.
#[test]
fn a_flipped_bit_is_a_full_handshake_not_a_broken_connection() {
    let mut httpd = Httpd::start(options());
    let client = Client::new(Tls::V12);
    let first = httpd.connect(&client, None);
    let file = segment(httpd.dir());
    let id = hex(&first.session.id_hex());
    let bytes = fs::read(&file).expect("read segment");
    let at = find(&bytes, &id).expect("the session id is in the segment") + id.len() + 40;
    let f = fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .expect("open segment");
    f.write_all_at(&[bytes[at] ^ 0x10], at as u64)
        .expect("flip a bit");
    drop(f);
    let check = shmcache(&[Path::new("check"), &file]);
    assert!(
        !check.success && check.stderr.contains("checksum"),
        "check did not find the flipped bit: {check:?}"
    );
    let again = httpd.connect(&client, Some(&first.session));
    assert_eq!(again.status, 200, "the connection works");
    assert!(
        !again.resumed && !again.log.resumed,
        "resumed a corrupted session"
    );
    assert_eq!(figure(&mut httpd, "CacheCorruptEntries"), 1);
    let check = shmcache(&[Path::new("check"), &file]);
    assert!(check.success, "the corrupt entry was not wiped: {check:?}");
    assert!(resumes(&mut httpd, Tls::V12), "new sessions resume");
    assert!(httpd.error_log().contains("failed its checksum"));
    httpd.stop();
}

// ---------------------------------------------------------------------------
// 5. The User against the segment; root's own mistakes.
// ---------------------------------------------------------------------------

/// Every path in /proc/<pid>/fd of `pid` that names `file`.
fn fds_naming(pid: i32, file: &Path) -> Vec<String> {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| fs::read_link(e.path()).ok())
        .map(|t| t.display().to_string())
        .filter(|t| t.starts_with(&*file.to_string_lossy()))
        .collect()
}

#[test]
fn the_user_cannot_truncate_or_replace_the_segment() {
    if !is_root() {
        println!("SKIPPED: needs root (a User to drop to)");
        return;
    }
    let mut httpd = Httpd::start(options());
    assert!(resumes(&mut httpd, Tls::V12));
    let file = segment(httpd.dir());
    let user = server_user();
    // Children hold the mapping, never a descriptor they could truncate.
    let kids = children(httpd.pid());
    assert!(!kids.is_empty());
    for &k in &kids {
        let held = fds_naming(k, &file);
        assert!(
            held.is_empty(),
            "child {k} holds descriptors of the segment: {held:?}"
        );
    }
    let f = file.display();
    let d = file.parent().expect("dir").display();
    for (what, script) in [
        ("open for writing", format!("exec 3<>'{f}'")),
        ("truncate", format!("truncate -s 0 '{f}'")),
        (
            "replace with a FIFO",
            format!("mkfifo '{d}/fifo' && mv -f '{d}/fifo' '{f}'"),
        ),
        ("remove", format!("rm -f '{f}'")),
    ] {
        let (ok, out) = sh_as(user, &script);
        assert!(!ok, "the User could {what} the segment: {out}");
    }
    assert_eq!(fs::metadata(&file).expect("stat").len(), 512_000);
    httpd.graceful();
    assert!(
        resumes(&mut httpd, Tls::V12),
        "after the attempts and a graceful restart"
    );
    httpd.stop();
}

/// What only root can do (an operator's mistake) still never stops the
/// server: with a FIFO at the path, `apache2 -k graceful` refuses (naming
/// it) and the running server goes on; a graceful restart by signal (which
/// reads no configuration first) serves from a new anonymous segment and
/// says so, instead of exiting (AH00020).
#[test]
fn a_fifo_at_the_path_does_not_stop_a_graceful_restart() {
    let mut httpd = Httpd::start(options());
    let file = segment(httpd.dir());
    let fifo = file.with_extension("fifo");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: c is a valid C string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    fs::rename(&fifo, &file).expect("put the FIFO at the path");
    let (ok, out) = httpd.prep.config_test();
    assert!(
        !ok && out.contains("a FIFO") && out.contains(&*file.to_string_lossy()),
        "{out}"
    );
    assert!(
        resumes(&mut httpd, Tls::V12),
        "serving after the refused configuration test"
    );
    httpd.graceful_by_signal();
    assert!(
        resumes(&mut httpd, Tls::V12),
        "serving after the graceful restart"
    );
    let log = httpd.error_log();
    assert!(log.contains("cannot make a segment at"), "{log}");
    httpd.stop();
    assert!(
        fs::symlink_metadata(&file)
            .expect("stat")
            .file_type()
            .is_fifo(),
        "the FIFO is left alone"
    );
}

use std::os::unix::fs::FileTypeExt;

/// A segment truncated under the running server: the parent checks the
/// file's size before it touches the mapping, so at stop it neither dies
/// of SIGBUS nor leaves the file behind.
#[test]
fn a_truncated_segment_does_not_kill_the_parent_at_stop() {
    let mut httpd = Httpd::start(options());
    assert!(resumes(&mut httpd, Tls::V12));
    let file = segment(httpd.dir());
    fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .and_then(|f| f.set_len(4096))
        .expect("truncate");
    let log_path = httpd.dir().join("logs/error.log");
    httpd.stop();
    assert!(
        !file.exists(),
        "the parent died before removing the segment"
    );
    let log = fs::read_to_string(log_path).unwrap_or_default();
    assert!(log.contains("removed segment file"), "{log}");
}

// ---------------------------------------------------------------------------
// 6. Expired secrets wiped on time.
// ---------------------------------------------------------------------------

/// Seconds after expiry by which an expired entry's bytes are zeroed when
/// nothing else touches the cache: httpd's parent runs its monitor hook
/// every 10 turns of its 1-second loop (README, "Security model").
const EXPIRY_WIPE_BOUND: Duration = Duration::from_secs(12);

#[test]
fn expired_master_keys_are_zeroed_within_the_bound() {
    let timeout = 2;
    let mut opts = options().cache_timeout(timeout).protocol("-all +TLSv1.2");
    opts.log_level = "info socache_shm:debug".into();
    let mut httpd = Httpd::start(opts);
    let client = Client::new(Tls::V12);
    let sessions: Vec<_> = (0..2)
        .map(|_| httpd.connect(&client, None).session)
        .collect();
    let keys: Vec<Vec<u8>> = sessions.iter().map(|s| hex(&s.master_key_hex())).collect();
    let file = segment(httpd.dir());
    let bytes = fs::read(&file).expect("read segment");
    for k in &keys {
        assert!(
            find(&bytes, k).is_some(),
            "a live master key is in the segment"
        );
    }
    let expired_at = Instant::now() + Duration::from_secs(timeout as u64 + 1);
    thread::sleep(Duration::from_secs(timeout as u64 + 1));
    assert_eq!(
        shmcache(&[Path::new("stat"), &file])
            .stdout
            .lines()
            .find(|l| l.starts_with("CacheCurrentEntries"))
            .map(|l| l.trim().to_string()),
        Some("CacheCurrentEntries: 0".to_string()),
        "expired entries are not current"
    );
    let deadline = expired_at + EXPIRY_WIPE_BOUND;
    loop {
        let bytes = fs::read(&file).expect("read segment");
        if keys.iter().all(|k| find(&bytes, k).is_none()) {
            println!(
                "expired keys zeroed {:?} after expiry",
                Instant::now() - expired_at
            );
            // By the parent's sweep (nothing else touched the cache).
            let log = httpd.error_log();
            assert!(
                log.lines()
                    .any(|l| l.contains("zeroed") && l.contains("expired entries")),
                "{log}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "expired master keys still in the segment {EXPIRY_WIPE_BOUND:?} after expiry"
        );
        thread::sleep(Duration::from_millis(250));
    }
    httpd.stop();
}

// ---------------------------------------------------------------------------
// 7. Paths that cannot work fail `apache2 -t`, naming the problem.
// ---------------------------------------------------------------------------

#[test]
fn bad_paths_fail_the_config_test_and_touch_nothing() {
    let prep = Prepared::new(options());
    let dir = prep.dir.clone();
    // An operator's file mistyped as the cache.
    let conf = dir.join("important.conf");
    let text = b"# the operator's configuration\nServerName example.org\n".repeat(20);
    fs::write(&conf, &text).expect("write conf");
    let fifo = dir.join("fifo");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: c is a valid C string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    let link = dir.join("link");
    std::os::unix::fs::symlink(&conf, &link).expect("symlink");
    let open_dir = dir.join("open");
    fs::create_dir(&open_dir).expect("mkdir");
    fs::set_permissions(&open_dir, fs::Permissions::from_mode(0o777)).expect("chmod 777");
    let long = dir.join("x".repeat(250));
    let cases: Vec<(String, String, &str)> = vec![
        (
            format!("shm:{}(512000)", conf.display()),
            "not a mod_socache_shm segment".into(),
            "a configuration file",
        ),
        (
            format!("shm:{}(512000)", fifo.display()),
            "a FIFO".into(),
            "a FIFO",
        ),
        (
            format!("shm:{}(512000)", link.display()),
            "a symbolic link".into(),
            "a symlink",
        ),
        (
            "shm:/dev/null(512000)".into(),
            "not owned by root|character device|writable by".into(),
            "/dev/null",
        ),
        (
            format!("shm:{}/seg(512000)", open_dir.display()),
            "writable by everyone".into(),
            "a world-writable directory",
        ),
        (
            "shm:/tmp/socache-shm-test-seg(512000)".into(),
            "writable by everyone".into(),
            "sticky /tmp",
        ),
        (
            format!("shm:{}(512000)", long.display()),
            "file name".into(),
            "a name too long",
        ),
    ];
    for (arg, want, what) in &cases {
        let mut opts = options();
        opts.cache = SessionCache::Raw(arg.clone());
        let p = Prepared::new(opts);
        let (ok, out) = p.config_test();
        assert!(!ok, "{what}: apache2 -t accepted {arg}:\n{out}");
        assert!(
            want.split('|').any(|w| out.contains(w)),
            "{what}: the error should say {want:?}:\n{out}"
        );
    }
    // The same file for two caches.
    let mut opts = options();
    opts.extra = format!(
        "SSLStaplingCache shm:{}(512000)\n",
        segment(Path::new("{dir}")).display()
    );
    let p = Prepared::new(opts);
    let (ok, out) = p.config_test();
    assert!(
        !ok && out.contains("already the segment of another"),
        "{out}"
    );
    // Nothing was changed.
    assert_eq!(
        fs::read(&conf).expect("read conf"),
        text,
        "the configuration file changed"
    );
    assert!(fs::symlink_metadata(&fifo)
        .expect("stat")
        .file_type()
        .is_fifo());
    assert!(fs::symlink_metadata(&link)
        .expect("stat")
        .file_type()
        .is_symlink());
    assert!(fs::metadata("/dev/null")
        .expect("stat")
        .file_type()
        .is_char_device());
    assert_eq!(fs::read_dir(&open_dir).expect("read dir").count(), 0);
    drop(prep);
}
