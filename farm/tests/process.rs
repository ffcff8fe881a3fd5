//! Processes and threads: the farm starts no thread at all (every op runs
//! on its caller's thread), the home process (httpd's parent) never
//! connects to Redis, the first op elsewhere connects, and a forked child
//! abandons the inherited link and makes its own connection. One test, so
//! no other test's threads are in this process while it looks at
//! /proc/self/task or forks.

mod common;

use std::time::Duration;

use common::*;
use socache_shm_farm::{now_us, stats, Endpoint, Lookup};

/// Threads of this process.
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .count()
}

/// Clients connected to `server` (INFO clients), less the one asking.
fn clients(server: &RedisServer) -> i64 {
    let mut c = server.connection();
    let info: String = redis::cmd("INFO")
        .arg("clients")
        .query(&mut c)
        .expect("INFO");
    let n: i64 = info
        .lines()
        .find_map(|l| l.strip_prefix("connected_clients:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("connected_clients");
    n - 1
}

#[test]
fn no_thread_ever_home_never_connects_and_a_fork_makes_its_own_connection() {
    let server = RedisServer::start();
    let endpoint = || Endpoint::parse(&server.url()).expect("endpoint");
    let words = words();
    let before = threads();

    // Home process: every op skipped, no connection ever.
    let mut home = config(endpoint(), Duration::from_millis(500));
    home.home_pid = Some(libc::pid_t::try_from(std::process::id()).expect("pid"));
    let (home_farm, _) = farm_with(home);
    home_farm.store(&words, b"id", b"v", now_us() + 300_000_000, now_us());
    assert_eq!(home_farm.retrieve(&words, b"id", now_us()), Lookup::Skipped);
    home_farm.remove(&words, b"id");
    assert_eq!(clients(&server), 0);
    assert_eq!(stats(&words), Default::default());

    // Elsewhere: no connection at new, one at the first op, no thread.
    let (farm, _) = farm_with(config(endpoint(), Duration::from_millis(500)));
    assert_eq!(clients(&server), 0);
    farm.store(&words, b"id", b"parent's", now_us() + 300_000_000, now_us());
    assert_eq!(clients(&server), 1);
    // Visible at once: the SET was written before store returned.
    assert!(matches!(
        farm.retrieve(&words, b"id", now_us()),
        Lookup::Hit { .. }
    ));
    assert_eq!(threads(), before, "the farm started a thread");

    // A fork: the child's first op makes a new connection (the inherited
    // link is abandoned) and hits; the parent's link still works after.
    // SAFETY: fork(2) in a test process. The child only runs the farm's
    // code (which takes the farm's link mutex, not held by anyone at this
    // point: no op is in flight in the parent) and leaves with _exit,
    // running no destructor and no atexit handler.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork");
    if pid == 0 {
        let ok = matches!(farm.retrieve(&words, b"id", now_us()), Lookup::Hit { .. })
            && clients(&server) == 2;
        // SAFETY: _exit(2) ends the child at once; nothing of the parent's
        // state is unwound or flushed twice.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: `pid` is the child just forked; `status` is a valid out-pointer.
    let waited = unsafe { libc::waitpid(pid, &raw mut status, 0) };
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
