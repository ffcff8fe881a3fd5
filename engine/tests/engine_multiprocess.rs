//! Many processes (forked after the cache is created) and many threads
//! hammering one segment with self-verifying values, and workers SIGKILLed at
//! random moments while the others go on.
//!
//! Every value encodes its id, its writer, the writer's sequence number, its
//! own length, a payload derived from (writer, seq) and a checksum, so a torn,
//! mixed, foreign or corrupt value is always detected. On top of that:
//! - ids private to one worker must read back exactly that worker's last
//!   store (or miss, if evicted): no stale value;
//! - for shared ids, a reader never sees an older value of one writer after a
//!   newer one (a resurrected value).
//!
//! A forked child only runs its workload and leaves with `libc::_exit`; it
//! reports through a pipe. The parent waits with a deadline and SIGKILLs
//! everything if it passes, so a deadlock fails the test instead of hanging.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use socache_shm_engine::testkit::{Rng, SharedPage};
use socache_shm_engine::{Cache, CacheConfig, Clock, Miss, SystemClock, Timestamp};

/// The tests of this file run one at a time. Several fork, and a child
/// forked while another test's thread holds a lock of this process (stderr's,
/// an allocator's, std's own) would inherit it held and could block on it
/// forever; with one test at a time, no other test thread exists at a fork.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------
// Ids and self-verifying values

const SHARED_KEYS: u32 = 160;
const PRIVATE_KEYS: u32 = 96;
const MAX_VALUE: usize = 2100;

/// Shared ids: `S` + index, padded to a length that varies with the index.
fn shared_id(i: u32) -> Vec<u8> {
    let mut id = format!("S{i:05}").into_bytes();
    id.resize(id.len() + (i as usize * 7) % 41, b'.');
    id
}

/// Ids only worker `w` writes.
fn private_id(w: u32, i: u32) -> Vec<u8> {
    let mut id = format!("P{w:04}:{i:04}").into_bytes();
    id.resize(id.len() + (i as usize * 5) % 23, b'_');
    id
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Bytes a value has besides its payload, for an id of `id_len` bytes.
fn overhead(id_len: usize) -> usize {
    4 + 4 + 8 + 2 + id_len + 8
}

/// `[len u32][writer u32][seq u64][id_len u16][id][payload][fnv1a u64]`, `len`
/// bytes in all; the payload is a function of (writer, seq).
fn make_value(id: &[u8], writer: u32, seq: u64, len: usize) -> Vec<u8> {
    let len = len.max(overhead(id.len()));
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(&(len as u32).to_le_bytes());
    v.extend_from_slice(&writer.to_le_bytes());
    v.extend_from_slice(&seq.to_le_bytes());
    v.extend_from_slice(&(id.len() as u16).to_le_bytes());
    v.extend_from_slice(id);
    let mut r = Rng(((writer as u64) << 40) ^ seq);
    while v.len() < len - 8 {
        let n = (len - 8 - v.len()).min(8);
        v.extend_from_slice(&r.next().to_le_bytes()[..n]);
    }
    let sum = fnv1a(&v);
    v.extend_from_slice(&sum.to_le_bytes());
    v
}

/// Checks a value read under `id`; returns its (writer, seq). An empty value
/// is valid (it is stored as such) and yields `None`.
fn check_value(id: &[u8], v: &[u8]) -> Result<Option<(u32, u64)>, String> {
    if v.is_empty() {
        return Ok(None);
    }
    let bad = |what: &str| {
        Err(format!(
            "corrupt value under id {:?} ({} bytes): {what}; head {:02x?}",
            String::from_utf8_lossy(id),
            v.len(),
            &v[..v.len().min(48)]
        ))
    };
    if v.len() < overhead(0) {
        return bad("shorter than any value");
    }
    let len = u32::from_le_bytes(v[0..4].try_into().unwrap()) as usize;
    if len != v.len() {
        return bad("length field disagrees");
    }
    let (body, sum) = v.split_at(v.len() - 8);
    if fnv1a(body) != u64::from_le_bytes(sum.try_into().unwrap()) {
        return bad("checksum mismatch (torn or mixed)");
    }
    let writer = u32::from_le_bytes(v[4..8].try_into().unwrap());
    let seq = u64::from_le_bytes(v[8..16].try_into().unwrap());
    let id_len = u16::from_le_bytes(v[16..18].try_into().unwrap()) as usize;
    if v.len() < overhead(id_len) || &v[18..18 + id_len] != id {
        return bad("value belongs to another id (foreign)");
    }
    if make_value(id, writer, seq, len) != v {
        return bad("payload does not match its writer and sequence number");
    }
    Ok(Some((writer, seq)))
}

// ---------------------------------------------------------------------------
// The workload

struct Workload {
    /// This worker's id (its private ids and the writer field of its values).
    writer: u32,
    seed: u64,
    run_for: Duration,
    max_ops: u64,
}

#[derive(Default, Debug, Clone, Copy)]
struct Report {
    stores: u64,
    gets: u64,
    hits: u64,
    removes: u64,
}

impl std::ops::AddAssign for Report {
    fn add_assign(&mut self, r: Report) {
        self.stores += r.stores;
        self.gets += r.gets;
        self.hits += r.hits;
        self.removes += r.removes;
    }
}

impl std::iter::Sum for Report {
    fn sum<I: Iterator<Item = Report>>(reports: I) -> Report {
        let mut total = Report::default();
        for r in reports {
            total += r;
        }
        total
    }
}

fn far_expiry() -> Timestamp {
    SystemClock.now().plus_secs(3600)
}

/// Runs until `run_for` has passed, `max_ops` are done or `stop` is set.
fn run_workload(cache: &Cache, w: &Workload, stop: &AtomicU32) -> Result<Report, String> {
    let mut rng = Rng(w.seed ^ ((w.writer as u64) << 32));
    let mut rep = Report::default();
    let mut seq = 0u64;
    // What this worker last stored under each private id: None if removed
    // (or never stored), Some(None) if an empty value, else (writer, seq).
    let mut last: Vec<Option<Option<(u32, u64)>>> = vec![None; PRIVATE_KEYS as usize];
    // Highest seq seen per (shared id, writer).
    let mut seen: HashMap<(u32, u32), u64> = HashMap::new();
    let mut buf = vec![0u8; 4096];
    let started = Instant::now();
    let expiry = far_expiry();
    // First, one value under every private id: together the workers' data
    // then overflows the caches of these tests, however slow the machine.
    for k in 0..PRIVATE_KEYS {
        seq += 1;
        let id = private_id(w.writer, k);
        let v = make_value(&id, w.writer, seq, 700 + rng.below(800) as usize);
        cache
            .store(&id, &v, expiry)
            .map_err(|e| format!("store of {} bytes failed: {e}", v.len()))?;
        rep.stores += 1;
        last[k as usize] = Some(Some((w.writer, seq)));
    }
    let mut ops = 0u64;
    while ops < w.max_ops && stop.load(Ordering::Relaxed) == 0 {
        if ops % 64 == 0 && started.elapsed() >= w.run_for {
            break;
        }
        ops += 1;
        let private = rng.below(10) < 3;
        let k = if private {
            rng.below(PRIVATE_KEYS as u64)
        } else {
            rng.below(SHARED_KEYS as u64)
        } as u32;
        let id = if private {
            private_id(w.writer, k)
        } else {
            shared_id(k)
        };
        let roll = rng.below(100);
        if roll < 40 {
            seq += 1;
            let len = match rng.below(20) {
                0 => 0,
                1 => MAX_VALUE,
                2..=11 => 100 + rng.below(120) as usize,
                _ => rng.below(MAX_VALUE as u64) as usize,
            };
            let v = if len == 0 {
                Vec::new()
            } else {
                make_value(&id, w.writer, seq, len)
            };
            cache
                .store(&id, &v, expiry)
                .map_err(|e| format!("store of {} bytes failed: {e}", v.len()))?;
            rep.stores += 1;
            if private {
                last[k as usize] = Some(if v.is_empty() {
                    None
                } else {
                    Some((w.writer, seq))
                });
                // Read-your-writes, right away: that value, or a miss if
                // other workers' stores evicted it in between.
                match cache.get(&id) {
                    Some(got) if got == v => rep.hits += 1,
                    Some(got) => {
                        check_value(&id, &got)?;
                        return Err(format!(
                            "private id {k}: read back another value than just stored"
                        ));
                    }
                    None => {}
                }
                rep.gets += 1;
            }
        } else if roll < 90 {
            let got = if roll % 2 == 0 {
                cache.get(&id)
            } else {
                match cache.retrieve(&id, &mut buf) {
                    Ok(n) => Some(buf[..n].to_vec()),
                    Err(Miss::NotFound) => None,
                    Err(Miss::BufferTooSmall { needed }) => {
                        return Err(format!(
                            "BufferTooSmall({needed}) for a value of at most {MAX_VALUE}"
                        ))
                    }
                    Err(other) => {
                        return Err(format!("{other:?}: no corruption, no stuck lock here"))
                    }
                }
            };
            rep.gets += 1;
            let Some(v) = got else { continue };
            rep.hits += 1;
            let who = check_value(&id, &v)?;
            if private {
                if Some(who) != last[k as usize] {
                    return Err(format!(
                        "private id {k}: read {who:?}, last stored {:?} (stale value)",
                        last[k as usize]
                    ));
                }
            } else if let Some((writer, s)) = who.filter(|(w, _)| *w < STORM_WRITERS) {
                let e = seen.entry((k, writer)).or_insert(0);
                if s < *e {
                    return Err(format!(
                        "shared id {k}: writer {writer}'s seq {s} after seq {} (resurrected)",
                        *e
                    ));
                }
                *e = s;
            }
        } else if roll < 99 {
            let removed = cache.remove(&id);
            rep.removes += 1;
            if private {
                // May be false if it was evicted or stored empty.
                let _ = removed;
                last[k as usize] = None;
                if cache.get(&id).is_some() {
                    return Err(format!("private id {k}: still there after remove"));
                }
                rep.gets += 1;
            }
        } else {
            // Now and then, a full iteration: every entry must be intact.
            audit_iterate(cache)?;
        }
    }
    Ok(rep)
}

/// Writers from here on are storms: they cycle through prepared values, so
/// their sequence numbers are not monotonic.
const STORM_WRITERS: u32 = 1_000_000;

/// A store-only workload of large, prepared values on the shared ids, to
/// spend as much time as possible inside shard locks mid-update (the kill
/// test wants to catch processes there).
fn run_storm(cache: &Cache, writer: u32, stop: &AtomicU32) -> Result<Report, String> {
    const PER_KEY: u64 = 3;
    let pool: Vec<Vec<Vec<u8>>> = (0..SHARED_KEYS)
        .map(|k| {
            (0..PER_KEY)
                .map(|j| make_value(&shared_id(k), writer, j, MAX_VALUE - 16 * j as usize))
                .collect()
        })
        .collect();
    let mut rng = Rng(writer as u64);
    let mut rep = Report::default();
    let expiry = far_expiry();
    let started = Instant::now();
    while stop.load(Ordering::Relaxed) == 0 && started.elapsed() < Duration::from_secs(30) {
        let k = rng.below(SHARED_KEYS as u64) as usize;
        let j = rng.below(PER_KEY) as usize;
        cache
            .store(&shared_id(k as u32), &pool[k][j], expiry)
            .map_err(|e| format!("storm store failed: {e}"))?;
        rep.stores += 1;
    }
    Ok(rep)
}

/// Iterate over the whole cache and check every entry.
fn audit_iterate(cache: &Cache) -> Result<u64, String> {
    let mut err = None;
    let mut n = 0;
    cache.iterate(&mut |id, v, _| {
        n += 1;
        match check_value(id, v) {
            Ok(_) => ControlFlow::Continue(()),
            Err(e) => {
                err = Some(e);
                ControlFlow::Break(())
            }
        }
    });
    match err {
        Some(e) => Err(format!("iterate: {e}")),
        None => Ok(n),
    }
}

/// Look up every id any of `writers` could have written and check the values;
/// then iterate. Returns (hits, iterated).
fn audit_all(cache: &Cache, writers: u32) -> Result<(u64, u64), String> {
    let mut hits = 0;
    let mut check = |id: Vec<u8>| -> Result<(), String> {
        if let Some(v) = cache.get(&id) {
            hits += 1;
            check_value(&id, &v)?;
        }
        Ok(())
    };
    for k in 0..SHARED_KEYS {
        check(shared_id(k))?;
    }
    for w in 0..writers {
        for k in 0..PRIVATE_KEYS {
            check(private_id(w, k))?;
        }
    }
    let n = audit_iterate(cache)?;
    Ok((hits, n))
}

// ---------------------------------------------------------------------------
// Processes

struct Child {
    pid: libc::pid_t,
    /// Read end of the child's report pipe (non-blocking).
    fd: libc::c_int,
    what: String,
}

/// Fork a child that runs `f` and leaves with `_exit`: 0 and an `ok ...`
/// line on success, 1 and the error otherwise, 2 on a panic.
fn spawn(what: String, f: impl FnOnce() -> Result<String, String>) -> Child {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: fds is a valid array of two ints.
    let r = unsafe { libc::pipe(fds.as_mut_ptr()) };
    assert_eq!(r, 0, "pipe: {}", std::io::Error::last_os_error());
    // SAFETY: fork has no memory-safety preconditions; the child below only
    // runs the workload (no test-harness state, no stdio locks) and leaves
    // through _exit, never returning into the harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        // SAFETY: the child's copy of the read end is not used.
        unsafe { libc::close(fds[0]) };
        let (code, msg) = match catch_unwind(AssertUnwindSafe(f)) {
            Ok(Ok(m)) => (0, m),
            Ok(Err(e)) => (1, e),
            Err(_) => (2, "panicked".to_string()),
        };
        let bytes = msg.as_bytes();
        let n = bytes.len().min(4000);
        // SAFETY: writing n bytes from a live buffer to our pipe end; then
        // leaving at once without running destructors or atexit handlers.
        unsafe {
            libc::write(fds[1], bytes.as_ptr().cast(), n);
            libc::_exit(code)
        }
    }
    // SAFETY: the parent's copy of the write end is not used; the read end
    // is ours and becomes non-blocking (a sibling forked concurrently by
    // another test may hold a copy of the write end).
    unsafe {
        libc::close(fds[1]);
        libc::fcntl(fds[0], libc::F_SETFL, libc::O_NONBLOCK);
    }
    Child {
        pid,
        fd: fds[0],
        what,
    }
}

impl Child {
    /// What the child wrote so far, then close the pipe.
    fn take_message(&mut self) -> String {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            // SAFETY: reading into a live buffer of that length.
            let n = unsafe { libc::read(self.fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
            out.extend_from_slice(&buf[..n as usize]);
        }
        // SAFETY: our fd, closed once (set to -1 after).
        unsafe { libc::close(self.fd) };
        self.fd = -1;
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Non-blocking: the wait status if the child has ended.
    fn try_wait(&self) -> Option<libc::c_int> {
        let mut status = 0;
        // SAFETY: waiting for our own child by pid.
        let r = unsafe { libc::waitpid(self.pid, &raw mut status, libc::WNOHANG) };
        assert!(
            r >= 0,
            "waitpid {}: {}",
            self.pid,
            std::io::Error::last_os_error()
        );
        (r == self.pid).then_some(status)
    }

    fn kill(&self) {
        // SAFETY: signalling our own child, not yet reaped.
        unsafe { libc::kill(self.pid, libc::SIGKILL) };
    }
}

fn describe(status: libc::c_int) -> String {
    if libc::WIFEXITED(status) {
        format!("exit {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("signal {}", libc::WTERMSIG(status))
    } else {
        format!("status {status:#x}")
    }
}

/// Wait for all `children` until `deadline`; on timeout SIGKILL the rest and
/// fail. Returns each child's message; fails on any non-zero exit.
fn wait_all(children: Vec<Child>, deadline: Instant) -> Vec<String> {
    let mut pending = children;
    let mut done = Vec::new();
    let mut failures = Vec::new();
    while !pending.is_empty() {
        let mut i = 0;
        while i < pending.len() {
            if let Some(status) = pending[i].try_wait() {
                let mut c = pending.swap_remove(i);
                let msg = c.take_message();
                if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
                    done.push(msg);
                } else {
                    failures.push(format!("{} ({}): {msg}", c.what, describe(status)));
                }
            } else {
                i += 1;
            }
        }
        if pending.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            // Where each one is stuck, for the failure message: the kernel
            // function it sleeps in and its kernel stack (root only).
            let names: Vec<String> = pending
                .iter()
                .map(|c| {
                    let read = |f: String| {
                        std::fs::read_to_string(f)
                            .map(|t| t.trim().replace('\n', " | "))
                            .unwrap_or_else(|e| format!("({e})"))
                    };
                    let tasks: Vec<String> = std::fs::read_dir(format!("/proc/{}/task", c.pid))
                        .map(|d| {
                            d.flatten()
                                .map(|t| {
                                    let p = t.path().display().to_string();
                                    format!(
                                        "task {}: wchan {}, stack {}",
                                        t.file_name().to_string_lossy(),
                                        read(format!("{p}/wchan")),
                                        read(format!("{p}/stack"))
                                    )
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    format!("{} (pid {}; {})", c.what, c.pid, tasks.join("; "))
                })
                .collect();
            for c in &mut pending {
                c.kill();
                while c.try_wait().is_none() {
                    std::thread::sleep(Duration::from_millis(1));
                }
                c.take_message();
            }
            panic!("timeout: {names:?} still running (deadlock?); failures so far: {failures:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(failures.is_empty(), "worker failures: {failures:#?}");
    done
}

fn report_line(r: &Report) -> String {
    format!("ok {} {} {} {}", r.stores, r.gets, r.hits, r.removes)
}

fn parse_report(s: &str) -> Report {
    let f: Vec<u64> = s
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap())
        .collect();
    assert_eq!(f.len(), 4, "report {s:?}");
    Report {
        stores: f[0],
        gets: f[1],
        hits: f[2],
        removes: f[3],
    }
}

/// A directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("socache-shm-mp-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------
// Tests

const WORKERS: u32 = 6;

/// Forked workers on one memfd segment; half of them run two threads each.
/// Every value read is checked; afterwards the parent sees exactly the stores
/// and lookups the children did (the segment really is shared).
#[test]
fn forked_processes_hammer_one_segment() {
    let _serial = one_at_a_time();
    let cache = Cache::create(&CacheConfig::new(256 * 1024)).expect("create");
    let stop = SharedPage::new();
    let mut children = Vec::new();
    for w in 0..WORKERS {
        let (cache, stop) = (&cache, &stop);
        children.push(spawn(format!("worker {w}"), move || {
            let threads = if w % 2 == 0 { 1 } else { 2 };
            let results: Vec<Result<Report, String>> = std::thread::scope(|s| {
                let hs: Vec<_> = (0..threads)
                    .map(|t| {
                        let wl = Workload {
                            writer: w + 100 * t,
                            seed: 0x00C0_FFEE,
                            run_for: Duration::from_millis(2500),
                            max_ops: 400_000,
                        };
                        s.spawn(move || run_workload(cache, &wl, stop.word(0)))
                    })
                    .collect();
                hs.into_iter()
                    .map(|h| h.join().unwrap_or_else(|_| Err("thread panicked".into())))
                    .collect()
            });
            let total = results.into_iter().sum::<Result<Report, String>>()?;
            Ok(report_line(&total))
        }));
    }
    let msgs = wait_all(children, Instant::now() + Duration::from_secs(20));
    let sum: Report = msgs.iter().map(|m| parse_report(m)).sum();
    let st = cache.stats();
    eprintln!("processes: {sum:?}; cache {st:?}");
    assert!(
        sum.stores > 1000 && sum.gets > 1000,
        "too little work done: {sum:?}"
    );
    assert_eq!(st.stores, sum.stores, "the parent sees every child's store");
    assert_eq!(st.hits, sum.hits, "hits");
    assert_eq!(st.hits + st.misses, sum.gets, "lookups");
    assert!(
        st.evictions > 0,
        "the workload should overflow 256 KiB: {st:?}"
    );
    // The checked values above went through the unlocked (seqlock) path too.
    assert!(
        st.unlocked_reads > sum.gets / 10,
        "few retrieves took the unlocked path: {st:?}"
    );
    let (hits, n) = audit_all(&cache, 200).expect("final audit");
    assert_eq!(n, st.entries, "iterate visits every entry");
    assert!(hits > 0);
}

/// The same workload from threads of one process.
#[test]
fn threads_hammer_one_cache() {
    let _serial = one_at_a_time();
    let cache = Cache::create(&CacheConfig::new(256 * 1024)).expect("create");
    let stop = AtomicU32::new(0);
    let results: Vec<Result<Report, String>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..WORKERS)
            .map(|w| {
                let (cache, stop) = (&cache, &stop);
                s.spawn(move || {
                    let wl = Workload {
                        writer: w,
                        seed: 0x7EAD_5EED,
                        run_for: Duration::from_millis(2500),
                        max_ops: 400_000,
                    };
                    run_workload(cache, &wl, stop)
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().expect("worker thread panicked"))
            .collect()
    });
    let sum: Report = results
        .into_iter()
        .map(|r| r.unwrap_or_else(|e| panic!("{e}")))
        .sum();
    let st = cache.stats();
    eprintln!("threads: {sum:?}; cache {st:?}");
    assert_eq!(st.stores, sum.stores);
    assert_eq!(st.hits + st.misses, sum.gets);
    assert!(
        st.unlocked_reads > sum.gets / 10,
        "few retrieves took the unlocked path: {st:?}"
    );
    assert!(st.evictions > 0, "{st:?}");
    audit_all(&cache, WORKERS).expect("final audit");
}

/// Workers are SIGKILLed at random moments (a seeded schedule), often while
/// holding a shard lock mid-update, and replaced by new ones. The survivors
/// must finish when told, a fresh process must be able to use every shard
/// within a deadline, and every value still there must be intact.
#[test]
fn killed_workers_neither_hang_nor_corrupt_the_others() {
    let _serial = one_at_a_time();
    let dir = TempDir::new("kill");
    let path = dir.0.join("segment");
    let cfg = CacheConfig {
        path: Some(path.clone()),
        ..CacheConfig::new(1 << 20)
    };
    let cache = Cache::create(&cfg).expect("create");
    let stop = SharedPage::new();
    let mut sched = Rng(0x5EED_0FC0_FFEE);

    let start_worker = |writer: u32, storm: bool| {
        let (cache, stop) = (&cache, &stop);
        if storm {
            let writer = STORM_WRITERS + writer;
            return spawn(format!("storm {writer}"), move || {
                run_storm(cache, writer, stop.word(0)).map(|r| report_line(&r))
            });
        }
        spawn(format!("worker {writer}"), move || {
            let wl = Workload {
                writer,
                seed: 0xDEAD_BEEF,
                run_for: Duration::from_secs(30),
                max_ops: u64::MAX,
            };
            run_workload(cache, &wl, stop.word(0)).map(|r| report_line(&r))
        })
    };

    let mut next_writer = 0u32;
    let mut workers: Vec<Child> = Vec::new();
    for i in 0..WORKERS {
        workers.push(start_worker(next_writer, i % 3 == 0));
        next_writer += 1;
    }
    let mut kills = 0;
    let begin = Instant::now();
    while begin.elapsed() < Duration::from_millis(3500) {
        std::thread::sleep(Duration::from_micros(500 + sched.below(20_000)));
        let i = sched.below(workers.len() as u64) as usize;
        let mut victim = workers.swap_remove(i);
        victim.kill();
        let deadline = Instant::now() + Duration::from_secs(5);
        let status = loop {
            if let Some(s) = victim.try_wait() {
                break s;
            }
            assert!(Instant::now() < deadline, "a SIGKILLed worker did not die");
            std::thread::sleep(Duration::from_millis(1));
        };
        let msg = victim.take_message();
        // It must have died of the signal, not failed (or finished) before.
        assert!(
            libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL,
            "{} ended before its kill ({}): {msg}",
            victim.what,
            describe(status)
        );
        kills += 1;
        while workers.len() < 2 || (workers.len() < WORKERS as usize && sched.below(4) != 0) {
            workers.push(start_worker(next_writer, sched.below(3) == 0));
            next_writer += 1;
        }
    }
    // The survivors stop when told, in bounded time, all without error.
    stop.word(0).store(1, Ordering::SeqCst);
    let survivors = workers.len();
    wait_all(workers, Instant::now() + Duration::from_secs(15));

    // A fresh process uses every shard (a full audit plus a new workload)
    // within a deadline: no lock was left held by a dead owner.
    stop.word(0).store(0, Ordering::SeqCst);
    let writers = next_writer;
    let auditor = {
        let (cache, stop) = (&cache, &stop);
        spawn("auditor".to_string(), move || {
            let (hits, n) = audit_all(cache, writers)?;
            let wl = Workload {
                writer: 9999,
                seed: 1,
                run_for: Duration::from_millis(500),
                max_ops: 20_000,
            };
            run_workload(cache, &wl, stop.word(0))?;
            audit_all(cache, writers)?;
            Ok(format!("ok {hits} {n}"))
        })
    };
    wait_all(vec![auditor], Instant::now() + Duration::from_secs(15));

    // And the parent, too.
    let st = cache.stats();
    audit_all(&cache, writers).expect("parent audit");
    // A second mapping of the file sees the same intact entries.
    let attached = Cache::attach(&path).expect("attach");
    assert_eq!(
        audit_iterate(&attached).expect("audit via attach"),
        cache.stats().entries
    );
    eprintln!(
        "kill test: {kills} kills, {survivors} survivors, {} workers in all; recoveries {}; {st:?}",
        writers, st.recoveries
    );
    assert!(kills >= 20, "only {kills} kills");
    assert!(st.stores > 0 && st.entries > 0, "{st:?}");
}

/// The checker itself catches what it must: torn, mixed, foreign, truncated.
#[test]
fn value_checker_detects_corruption() {
    let _serial = one_at_a_time();
    let id = shared_id(3);
    let v = make_value(&id, 7, 42, 500);
    assert_eq!(check_value(&id, &v), Ok(Some((7, 42))));
    assert!(check_value(&shared_id(4), &v).is_err(), "foreign");
    let mut torn = v.clone();
    torn[300] ^= 1;
    assert!(check_value(&id, &torn).is_err(), "torn");
    let other = make_value(&id, 8, 43, 500);
    let mixed: Vec<u8> = v[..250].iter().chain(&other[250..]).copied().collect();
    assert!(check_value(&id, &mixed).is_err(), "mixed");
    assert!(check_value(&id, &v[..499]).is_err(), "truncated");
    assert!(check_value(&id, &[0u8; 500]).is_err(), "zeroed");
    assert_eq!(check_value(&id, &[]), Ok(None));
    let min = make_value(&id, 1, 1, 1);
    assert_eq!(min.len(), overhead(id.len()));
    assert_eq!(check_value(&id, &min), Ok(Some((1, 1))));
    let max = make_value(&id, 1, 2, MAX_VALUE);
    assert_eq!(max.len(), MAX_VALUE);
}

/// Unlocked reads under a storm of writes to the same shards never miss an
/// entry that is there all along, and never return another entry's bytes:
/// the fixed entries are never removed and the cache never fills, so every
/// read must hit, whatever the writers are doing to their neighbours
/// (inserts, removals, tombstone rebuilds).
#[test]
fn unlocked_reads_never_miss_a_present_entry() {
    let _serial = one_at_a_time();
    let cache = Cache::create(&CacheConfig::new(1 << 20)).expect("create");
    let exp = far_expiry();
    let fixed: Vec<(Vec<u8>, Vec<u8>)> = (0..64u32)
        .map(|i| {
            let id = shared_id(10_000 + i);
            let v = make_value(&id, 7, i as u64, 100 + (i as usize * 13) % 300);
            (id, v)
        })
        .collect();
    for (id, v) in &fixed {
        cache.store(id, v, exp).expect("store fixed");
    }
    let stop = AtomicU32::new(0);
    let (reads, misses, wrong) = std::thread::scope(|s| {
        for w in 0..2u32 {
            let (cache, stop) = (&cache, &stop);
            s.spawn(move || {
                let mut rng = Rng(0xD00D + w as u64);
                let mut seq = 0u64;
                while stop.load(Ordering::Relaxed) == 0 {
                    // Churn ids of the same shards as the fixed ones: 400 live
                    // at most, far below what 1 MiB holds.
                    let id = private_id(w, rng.below(200) as u32);
                    if rng.below(3) == 0 {
                        cache.remove(&id);
                    } else {
                        seq += 1;
                        let v = make_value(&id, w, seq, 50 + rng.below(400) as usize);
                        cache.store(&id, &v, exp).expect("store");
                    }
                }
            });
        }
        let readers: Vec<_> = (0..2)
            .map(|r| {
                let (cache, fixed) = (&cache, &fixed);
                s.spawn(move || {
                    let mut rng = Rng(0xBEEF + r);
                    let mut buf = vec![0u8; 4096];
                    let (mut reads, mut misses, mut wrong) = (0u64, 0u64, 0u64);
                    let end = Instant::now() + Duration::from_millis(1500);
                    while Instant::now() < end {
                        let (id, v) = &fixed[rng.below(fixed.len() as u64) as usize];
                        match cache.retrieve(id, &mut buf) {
                            Ok(n) if buf[..n] == v[..] => {}
                            Ok(_) => wrong += 1,
                            Err(_) => misses += 1,
                        }
                        reads += 1;
                    }
                    (reads, misses, wrong)
                })
            })
            .collect();
        let totals = readers
            .into_iter()
            .map(|h| h.join().expect("reader"))
            .fold((0, 0, 0), |a, b| (a.0 + b.0, a.1 + b.1, a.2 + b.2));
        stop.store(1, Ordering::Relaxed);
        totals
    });
    let st = cache.stats();
    eprintln!("unlocked storm: {reads} reads, {misses} misses, {wrong} wrong; {st:?}");
    assert_eq!(
        wrong, 0,
        "a read returned bytes that were never stored for its id"
    );
    assert_eq!(misses, 0, "a present entry was missed");
    assert_eq!(st.evictions, 0, "the test assumes no eviction: {st:?}");
    assert!(reads > 10_000, "too few reads: {reads}");
    assert!(
        st.unlocked_reads > reads / 2,
        "the reads did not take the unlocked path: {st:?}"
    );
}
