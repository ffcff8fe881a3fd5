//! Faults against the real Debian apache2 using `shm` (tests/common/mod.rs is
//! the harness): children SIGKILLed under TLS load (prefork and event), a
//! corrupt segment file at startup, the segment's directory full at startup,
//! and the segment file's mode and owner.
//!
//! Every client operation is bounded in time; everything is on loopback.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{
    children, shmcache, Client, Conn, Httpd, Mpm, Options, Prepared, Provider, SessionCache, Tally,
    Tls, PREFORK_CHILDREN,
};

/// The segment: file-backed, 1 MiB, in the instance directory.
const CACHE_ARG: &str = "shm:{dir}/scache(1M)";
const CACHE_NAME: &str = "scache";
const BYTES: u64 = 1 << 20;

/// Each socket operation of the load clients while children are being killed.
const OP_LIMIT: Duration = Duration::from_secs(5);

/// The smallest entry the arena can hold a TLS session in: block and entry
/// headers, a 32-byte id and a (much longer, in fact) DER value.
const MIN_ENTRY_BYTES: u64 = 4 + 12 + 32;

fn options(mpm: Mpm) -> Options {
    Options::new(Provider::Shm, mpm).cache(SessionCache::Raw(CACHE_ARG.into()))
}

fn segment(dir: &Path) -> PathBuf {
    dir.join(CACHE_NAME)
}

fn describe(c: &Conn) -> String {
    format!("client resumed={} log: {}", c.resumed, c.log.line)
}

fn num(m: &HashMap<String, String>, key: &str) -> u64 {
    m.get(key)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no numeric {key} in {m:?}"))
}

/// A pseudo-random sequence seeded from the clock (xorshift64).
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        Rng(t | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// A full handshake then a resumption on each protocol version; panics
/// unless both resume.
fn assert_resumes(httpd: &mut Httpd, when: &str) {
    for tls in [Tls::V12, Tls::V13] {
        let client = Client::new(tls);
        let first = httpd.connect(&client, None);
        assert_eq!(first.status, 200, "{when}: {}", describe(&first));
        let why = format!("{when}: a {} session did not resume", tls.log_name());
        httpd.offer(&client, &first.session, true, &why, describe);
    }
}

/// `shmcache check` on the segment: exit 0 and "arena and index agree".
fn assert_check(file: &Path, when: &str) -> String {
    let out = shmcache(&[Path::new("check"), file]);
    assert!(
        out.success && out.stdout.contains("arena and index agree"),
        "{when}: shmcache check {}: {out:?}",
        file.display()
    );
    out.stdout.trim().to_string()
}

/// Mode 0600, one link, owned by the user httpd starts as (root, when we
/// are root): never by the user its children run as, who could then
/// truncate or replace it.
fn assert_private(file: &Path, when: &str) {
    let meta =
        fs::metadata(file).unwrap_or_else(|e| panic!("{when}: stat {}: {e}", file.display()));
    assert_eq!(
        meta.mode() & 0o7777,
        0o600,
        "{when}: {} has mode {:o}",
        file.display(),
        meta.mode() & 0o7777
    );
    // SAFETY: geteuid has no preconditions.
    let want = unsafe { libc::geteuid() };
    assert_eq!(
        meta.uid(),
        want,
        "{when}: {} is owned by uid {}, httpd starts as {want}",
        file.display(),
        meta.uid()
    );
    assert_eq!(
        meta.nlink(),
        1,
        "{when}: {} has extra links",
        file.display()
    );
}

// ---------------------------------------------------------------------------
// 1. SIGKILL a random child every few hundred milliseconds under TLS load.
// ---------------------------------------------------------------------------

/// One load thread: mostly resumptions, a new session every 8 connections.
fn load(port: u16, which: usize, stop: &AtomicBool, tally: &Tally) {
    let client = match which % 3 {
        0 => Client::new(Tls::V12),
        1 => Client::new(Tls::V13),
        _ => Client::any(),
    };
    let mut session = None;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let offer = if n % 8 == 1 { None } else { session.as_ref() };
        let outcome = client
            .handshake_within(port, offer, OP_LIMIT)
            .and_then(|open| open.request("/"));
        // Failed connections (cut by a kill) are expected while the killing
        // goes on; they are counted as errors.
        session = tally.record(offer.is_some(), outcome, session.take());
    }
}

fn kill_children_under_load(mpm: Mpm, window: Duration, every: Duration) {
    let began = Instant::now();
    let mut httpd = Httpd::start(options(mpm));
    let port = httpd.port();
    let parent = httpd.pid();
    let file = segment(httpd.dir());
    let initial: BTreeSet<i32> = children(parent).into_iter().collect();
    if mpm == Mpm::Prefork {
        assert!(
            initial.len() >= PREFORK_CHILDREN,
            "prefork started {} children, expected >= {PREFORK_CHILDREN}",
            initial.len()
        );
    }

    let stop = AtomicBool::new(false);
    let tally = Tally::default();
    let mut kills = 0u64;
    let mut victims = BTreeSet::new();
    thread::scope(|s| {
        for which in 0..3 {
            let (stop, tally) = (&stop, &tally);
            s.spawn(move || load(port, which, stop, tally));
        }
        let mut rng = Rng::new();
        let start = Instant::now();
        while start.elapsed() < window {
            thread::sleep(every);
            let kids = children(parent);
            if kids.is_empty() {
                continue;
            }
            let victim = kids[(rng.next() % kids.len() as u64) as usize];
            // SAFETY: kill has no memory-safety preconditions; `victim` is a
            // child of our httpd's parent (just read from /proc).
            if unsafe { libc::kill(victim, libc::SIGKILL) } == 0 {
                kills += 1;
                victims.insert(victim);
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
    httpd.check_alive("after children were killed");
    let (full, attempts, resumed, errors) = (
        tally.full.load(Ordering::Relaxed),
        tally.attempts.load(Ordering::Relaxed),
        tally.resumed.load(Ordering::Relaxed),
        tally.errors.load(Ordering::Relaxed),
    );
    assert!(kills >= 20, "only {kills} children killed");
    assert!(
        full > 0 && resumed > 0,
        "no TLS traffic got through while children were killed: {full} full handshakes, {resumed}/{attempts} resumed, {errors} errors"
    );

    // The accounting survived: arena and index agree.
    let checked = assert_check(&file, "after the kills");

    // Values are intact: every live entry still parses as a TLS session.
    let dump = shmcache(&[Path::new("dump"), &file]);
    assert!(dump.success, "{dump:?}");
    for line in dump.stdout.lines() {
        assert!(
            line.contains(" TLSv1.2 ") || line.contains(" TLSv1.3 "),
            "an entry is not a TLS session any more: {line}"
        );
    }

    // Sane figures, the same through httpd and through the inspector.
    let status = httpd.status_auto();
    let recoveries = num(&status, "CacheRecoveries");
    let entries = num(&status, "CacheCurrentEntries");
    let slots = num(&status, "CacheIndexesPerSubcaches") * num(&status, "CacheShards");
    let used = num(&status, "CacheBytesUsed");
    let free = num(&status, "CacheBytesFree");
    assert_eq!(num(&status, "CacheSharedMemory"), BYTES, "{status:?}");
    assert!(
        entries <= slots,
        "{entries} entries in {slots} slots: {status:?}"
    );
    assert!(
        entries * MIN_ENTRY_BYTES <= used && used + free <= BYTES,
        "{entries} entries in {used} used + {free} free arena bytes of a {BYTES}-byte segment: {status:?}"
    );
    let stat = common::parse_status(&shmcache(&[Path::new("stat"), &file]).stdout);
    assert_eq!(
        stat.get("CacheRecoveries"),
        status.get("CacheRecoveries"),
        "shmcache stat and server-status disagree: {stat:?} vs {status:?}"
    );

    // A fresh session resumes on several processes, new ones among them.
    // (The MPM may still be replacing the last processes killed: retry.)
    let distinct_wanted = 3;
    let mut last = String::new();
    let mut served = BTreeSet::new();
    let ok = (0..3).any(|attempt| {
        if attempt > 0 {
            thread::sleep(Duration::from_secs(1));
        }
        let client = Client::new(if attempt % 2 == 0 { Tls::V12 } else { Tls::V13 });
        let first = httpd.connect(&client, None);
        let conns = httpd.concurrent(&client, &first.session, mpm.capacity());
        served = conns
            .iter()
            .filter(|c| c.both_resumed())
            .map(|c| c.log.pid as i32)
            .collect();
        let all = conns.iter().all(Conn::both_resumed);
        last = conns.iter().map(describe).collect::<Vec<_>>().join("\n");
        all && served.len() >= distinct_wanted
    });
    assert!(
        ok,
        "after the kills a fresh session did not resume on {distinct_wanted} processes:\n{last}"
    );
    let new_children = served.difference(&initial).count();
    assert!(
        new_children > 0,
        "only children from before the kills resumed ({served:?}); the replacements do not use the cache"
    );

    println!(
        "{} kill test: {:.1} s window, {kills} SIGKILLs ({} distinct children), \
         {full} full handshakes, {resumed}/{attempts} resumptions, {errors} client errors; \
         CacheRecoveries {recoveries}, {entries} entries; afterwards a fresh session resumed on \
         {} processes ({new_children} started during the kills); shmcache check: {checked}; \
         {:.1} s in all",
        mpm.name(),
        window.as_secs_f64(),
        victims.len(),
        served.len(),
        began.elapsed().as_secs_f64()
    );
    httpd.stop();
}

common::test_cases!(kill_children_under_load {
    prefork_children_killed_under_load(
        Mpm::Prefork,
        Duration::from_secs(25),
        Duration::from_millis(250),
    );
    event_children_killed_under_load(
        Mpm::Event,
        Duration::from_secs(15),
        Duration::from_millis(300),
    );
});

// ---------------------------------------------------------------------------
// 2. A corrupt segment file at startup is replaced, never used.
// ---------------------------------------------------------------------------

/// The bytes of a live segment holding a few sessions, copied while httpd
/// ran (made once per test process).
fn real_segment() -> &'static [u8] {
    static REAL: OnceLock<Vec<u8>> = OnceLock::new();
    REAL.get_or_init(|| {
        let mut httpd = Httpd::start(options(Mpm::Prefork));
        assert_resumes(&mut httpd, "making sessions for a segment copy");
        let file = segment(httpd.dir());
        let copy = httpd.dir().join("scache.copy");
        let cp = Command::new("cp")
            .arg(&file)
            .arg(&copy)
            .status()
            .expect("run cp");
        assert!(cp.success(), "cp {} failed", file.display());
        let bytes = fs::read(&copy).expect("read the copy");
        httpd.stop();
        assert!(
            !file.exists(),
            "{} left behind after a full stop",
            file.display()
        );
        assert_eq!(bytes.len() as u64, BYTES);
        assert_eq!(&bytes[..8], b"SOCSHM\r\n");
        bytes
    })
}

/// Plant `bytes` as the segment file, start httpd, and check that it
/// replaced the file with a new segment of its own (a start never trusts a
/// file it did not make, however valid: issue 8), serves TLS and resumes
/// sessions from a fresh, consistent, private segment.
fn replaced_at_startup(what: &str, bytes: Vec<u8>) {
    let prep = Prepared::new(options(Mpm::Prefork));
    let file = segment(&prep.dir);
    fs::write(&file, &bytes).expect("plant the segment file");
    fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).expect("chmod 600");
    let planted = fs::metadata(&file).expect("stat").ino();
    let mut httpd = prep.start();
    let log = httpd.error_log();
    let line = log
        .lines()
        .find(|l| l.contains("replaced the segment") && l.contains("found at start"))
        .unwrap_or_else(|| {
            panic!("{what}: no \"replaced the segment ... found at start\" line:\n{log}")
        });
    assert_resumes(&mut httpd, what);
    assert_ne!(
        fs::metadata(&file).expect("stat").ino(),
        planted,
        "{what}: a new file"
    );
    let fresh = fs::read(&file).expect("read the segment");
    assert_eq!(fresh.len() as u64, BYTES, "{what}");
    assert_eq!(&fresh[..8], b"SOCSHM\r\n", "{what}");
    assert_check(&file, what);
    assert_private(&file, what);
    assert_eq!(
        num(&httpd.status_auto(), "CacheRetrieveHitCount"),
        2,
        "{what}: the replaced segment's counters did not start at zero"
    );
    eprintln!("{what}: {line}");
    httpd.stop();
}

/// A valid segment left by an earlier run (its sessions included) is not
/// reattached at a start: a start cannot tell it from one planted by
/// another user.
#[test]
fn startup_replaces_a_valid_leftover_segment() {
    replaced_at_startup("a valid segment", real_segment().to_vec());
}

#[test]
fn startup_replaces_segment_with_wrong_version() {
    let mut bytes = real_segment().to_vec();
    bytes[8..12].copy_from_slice(&7u32.to_ne_bytes());
    replaced_at_startup("layout version 7", bytes);
}

#[test]
fn startup_replaces_truncated_segment() {
    let bytes = real_segment()[..BYTES as usize / 2].to_vec();
    replaced_at_startup("truncated to half", bytes);
}

/// Random bytes at the path are not a segment: not ours to replace. The
/// start fails naming the file, and the file is left byte for byte.
#[test]
fn startup_refuses_a_file_that_is_not_a_segment() {
    let prep = Prepared::new(options(Mpm::Prefork));
    let file = segment(&prep.dir);
    let bytes = Rng::new().bytes(BYTES as usize);
    fs::write(&file, &bytes).expect("plant the file");
    let (ok, out) = prep.config_test();
    assert!(
        !ok,
        "apache2 -t accepted a foreign file as the segment:\n{out}"
    );
    assert!(
        out.contains(&file.display().to_string()) && out.contains("not a mod_socache_shm segment"),
        "{out}"
    );
    assert_eq!(
        fs::read(&file).expect("read"),
        bytes,
        "the file was changed"
    );
}

// ---------------------------------------------------------------------------
// 3. The segment's directory full at startup: a clear error, no start.
//    (An unwritable directory: httpd_resumption.rs, unwritable_directory_fails_config_test.)
// ---------------------------------------------------------------------------

/// Unmounts on drop.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let st = Command::new("umount").arg(&self.0).status();
        if !st.as_ref().is_ok_and(|s| s.success()) {
            eprintln!("umount {} failed: {st:?}", self.0.display());
        }
    }
}

#[test]
fn full_directory_fails_startup() {
    let prep = Prepared::new(
        Options::new(Provider::Shm, Mpm::Prefork)
            .cache(SessionCache::Raw("shm:{dir}/full/scache(1M)".into())),
    );
    let dir = prep.dir.clone();
    let full = dir.join("full");
    fs::create_dir(&full).expect("mkdir full");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k,mode=0755", "tmpfs"])
        .arg(&full)
        .output();
    match &mounted {
        Ok(out) if out.status.success() => {}
        other => {
            println!(
                "SKIPPED full_directory_fails_startup: cannot mount a 64k tmpfs here ({other:?})"
            );
            return;
        }
    }
    let guard = Mounted(full.clone());
    let outcome = match prep.try_start() {
        Ok(mut httpd) => {
            httpd.stop();
            Err("httpd started with a 1 MiB segment in a 64 KiB tmpfs".to_string())
        }
        Err(failed) => Ok(*failed),
    };
    let error_log = fs::read_to_string(dir.join("logs/error.log")).unwrap_or_default();
    let stderr = fs::read_to_string(dir.join("logs/stderr.log")).unwrap_or_default();
    let leftovers: Vec<_> = fs::read_dir(&full)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    // Unmount before the instance directory is removed (with `prep`).
    drop(guard);
    let (prep, msg) = outcome.unwrap_or_else(|e| panic!("{e}"));
    drop(prep);

    assert!(msg.contains("httpd exited while starting"), "{msg}");
    let path = full.join("scache").display().to_string();
    let both = format!("{error_log}\n{stderr}");
    let line = both
        .lines()
        .find(|l| l.contains(&path) && (l.contains("No space") || l.contains("allocate")))
        .unwrap_or_else(|| {
            panic!(
                "no line naming {path} and \"No space\"/\"allocate\":\n--- error.log\n{error_log}\n--- stderr\n{stderr}"
            )
        });
    assert!(
        leftovers.is_empty(),
        "a failed start left files in the full directory: {leftovers:?}"
    );
    println!("directory full: {line}");
}

// ---------------------------------------------------------------------------
// 4. The segment file holds secrets: mode 0600, owned by httpd's user.
// ---------------------------------------------------------------------------

#[test]
fn segment_file_is_private_to_root() {
    let mut httpd = Httpd::start(options(Mpm::Prefork));
    let file = segment(httpd.dir());
    assert_resumes(&mut httpd, "before the mode check");
    assert_private(&file, "created at startup");
    // Children (running as another user) wrote it through their mapping.
    let entries = num(&httpd.status_auto(), "CacheCurrentEntries");
    assert!(entries >= 2, "{entries} entries");
    httpd.graceful();
    assert_private(&file, "after a graceful restart");
    assert_resumes(&mut httpd, "after a graceful restart");
    // No half-made copy (the temporary name it is created under) lies around.
    let strays: Vec<_> = fs::read_dir(httpd.dir())
        .expect("read the instance dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(CACHE_NAME) && n != CACHE_NAME)
        .collect();
    assert!(strays.is_empty(), "stray segment files: {strays:?}");
    httpd.stop();
}
