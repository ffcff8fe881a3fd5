//! Processes and threads: `Farm::new` starts no thread, the home process
//! (httpd's parent) never starts one or touches Redis, the first op
//! elsewhere starts the link, and a forked child abandons the inherited
//! link and starts its own. One test, so no other test's threads are in
//! this process while it looks at /proc/self/task or forks.

mod common;

use std::time::Duration;

use common::*;
use socache_shm_farm::{now_us, stats, Endpoint, Lookup};

/// Threads of this process named "socache-farm".
fn farm_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|e| e.ok())
        .filter(|e| {
            std::fs::read_to_string(e.path().join("comm"))
                .map(|c| c.trim() == socache_shm_farm::link::THREAD_NAME)
                .unwrap_or(false)
        })
        .count()
}

/// Waits (bounded) until exactly `n` farm threads exist: a thread names
/// itself once it runs, a moment after spawn returns.
fn threads_become(n: usize) -> Option<()> {
    poll(Duration::from_secs(10), || {
        (farm_threads() == n).then_some(())
    })
}

#[test]
fn threads_only_outside_home_and_a_fork_starts_its_own_link() {
    let server = RedisServer::start();
    let endpoint = || Endpoint::parse(&server.url()).expect("endpoint");
    let words = words();

    // Home process: every op skipped, no thread ever.
    let mut home = config(endpoint(), Duration::from_millis(500));
    home.home_pid = Some(libc::pid_t::try_from(std::process::id()).expect("pid"));
    let (home_farm, _) = farm_with(home);
    home_farm.store(&words, b"id", b"v", now_us() + 300_000_000, now_us());
    assert_eq!(home_farm.retrieve(&words, b"id", now_us()), Lookup::Skipped);
    home_farm.remove(&words, b"id");
    assert_eq!(farm_threads(), 0);
    assert_eq!(stats(&words), Default::default());

    // Elsewhere: no thread at new, `workers` threads at the first op.
    let mut elsewhere = config(endpoint(), Duration::from_millis(500));
    elsewhere.workers = 2;
    let (farm, _) = farm_with(elsewhere);
    assert_eq!(farm_threads(), 0);
    farm.store(&words, b"id", b"parent's", now_us() + 300_000_000, now_us());
    assert_eq!(threads_become(2), Some(()));
    let hit = poll(Duration::from_secs(10), || {
        matches!(farm.retrieve(&words, b"id", now_us()), Lookup::Hit { .. }).then_some(())
    });
    assert!(hit.is_some());

    // A fork: the child's first op starts a new link (the inherited one has
    // no threads there) and hits; the parent's link still works after.
    // SAFETY: fork(2) in a test process. The child only runs the farm's
    // code (which takes the farm's link mutex, not held by anyone at this
    // point: no op is in flight in the parent), reads /proc, and leaves
    // with _exit, running no destructor and no atexit handler.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork");
    if pid == 0 {
        let ok = farm_threads() == 0
            && matches!(farm.retrieve(&words, b"id", now_us()), Lookup::Hit { .. })
            && threads_become(2).is_some();
        // SAFETY: _exit(2) ends the child at once; nothing of the parent's
        // state is unwound or flushed twice.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: `pid` is the child just forked; `status` is a valid out-pointer.
    let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(waited, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child status {status}"
    );
    assert!(matches!(
        farm.retrieve(&words, b"id", now_us()),
        Lookup::Hit { .. }
    ));
}
