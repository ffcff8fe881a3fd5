//! Issue 9, item 5: the suspected cause of the intermittent hang of
//! `killed_workers_neither_hang_nor_corrupt_the_others`, set up on purpose.
//! The owner of a shard lock dies holding it, and the waiters the kernel
//! may wake to take it over are killed; the one waiter left must still get
//! the lock, and well within the bound (no "out of service").
//!
//! How: an anonymous segment shared by forked processes. The owner maps
//! the segment's memfd itself and takes shard 0's robust mutex directly
//! (what any process with the mapping can do), then parks. Four waiters
//! store ids of shard 0 and block on that mutex; all four are stopped
//! (SIGSTOP). The owner is killed (the kernel marks the lock word
//! owner-died and wakes one waiter, which cannot run), three waiters are
//! killed, the fourth is continued. Repeated with each waiter as the
//! survivor; the survivor must store within 500 ms.
//!
//! What this shows, and what it does not: the survivor got the lock within
//! 0.1-2.2 ms in every round, *also with the 50 ms wait slices of lock.rs
//! raised to 5 s* (tried when the test was written). So this sequence does
//! not lose a wakeup: a waiter stopped in its futex wait re-reads the lock
//! word when it is continued (the wait is restarted and the word changed),
//! and finds the owner-died mark itself. A lost wakeup needs the woken
//! waiter to die between the kernel's wake and its own next look at the
//! word, a window this test cannot hit on demand; the cause of the hang
//! seen in 2 of about 10 runs is still not shown. The timed slices stay as
//! the safeguard against it, and the 1 s bound behind them turns any wait
//! that still goes wrong into a shard out of service, not a hang.

use std::time::{Duration, Instant};

use socache_shm_engine::layout::{Geometry, ShardHeader};
use socache_shm_engine::{Cache, CacheConfig, Timestamp};

const BYTES: u64 = 256 * 1024;
const WAITERS: usize = 4;

fn fork_or_die() -> libc::pid_t {
    // SAFETY: the test forks before it starts any thread of its own; the
    // children only touch the cache, sleep and exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    pid
}

fn kill(pid: libc::pid_t) {
    // SAFETY: pid is a child of this process, not yet reaped.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

/// Wait for `pid` until `deadline`; its exit code, or None if still running.
fn wait_until(pid: libc::pid_t, deadline: Instant) -> Option<i32> {
    loop {
        let mut status = 0;
        // SAFETY: pid is our child; status is a valid out-pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == -1 {
            return Some(-2); // already reaped
        }
        if r == pid {
            return Some(if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                -1
            });
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Ids whose entries live in shard 0.
fn ids_of_shard_0(cache: &Cache, n: usize) -> Vec<[u8; 32]> {
    let mut out = Vec::new();
    let mut i = 0u64;
    while out.len() < n {
        let mut id = [0u8; 32];
        id[..8].copy_from_slice(&i.to_le_bytes());
        // The cache's own placement under its key is internal; probe it:
        // store and look at which shard's count moved.
        let before = cache.shard_stats()[0].stores;
        cache
            .store(&id, b"probe", Timestamp::from_secs(4_000_000_000))
            .expect("store");
        if cache.shard_stats()[0].stores > before {
            out.push(id);
        }
        cache.remove(&id);
        i += 1;
    }
    out
}

#[test]
fn a_lost_wakeup_after_the_owner_dies_does_not_strand_the_last_waiter() {
    let cache = Cache::create(&CacheConfig::new(BYTES)).expect("create");
    let geo = Geometry::new(BYTES, 32, 160).expect("geometry");
    let ids = ids_of_shard_0(&cache, WAITERS);
    let fd = cache.dup_fd().expect("dup");
    for survivor in 0..WAITERS {
        // The owner: map the segment, take shard 0's mutex, park.
        let owner = fork_or_die();
        if owner == 0 {
            // SAFETY: fd is the segment's memfd; the mapping covers BYTES.
            let base = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    BYTES as usize,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    fd,
                    0,
                )
            };
            if base == libc::MAP_FAILED {
                // SAFETY: ends the child.
                unsafe { libc::_exit(3) };
            }
            // The lock is the first field of shard 0's header.
            // SAFETY: shard_headers_offset lies inside the mapping; the
            // mutex there was initialised by Cache::create.
            let m = unsafe {
                base.cast::<u8>()
                    .add(geo.shard_headers_offset as usize)
                    .cast::<libc::pthread_mutex_t>()
            };
            // SAFETY: as above; a robust process-shared mutex.
            let rc = unsafe { libc::pthread_mutex_lock(m) };
            if rc != 0 && rc != libc::EOWNERDEAD {
                // SAFETY: ends the child.
                unsafe { libc::_exit(4) };
            }
            if rc == libc::EOWNERDEAD {
                // SAFETY: we hold it; make it usable again before parking.
                unsafe { libc::pthread_mutex_consistent(m) };
            }
            loop {
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        // Let the owner take the lock before the waiters queue up.
        std::thread::sleep(Duration::from_millis(100));
        assert!(size_of::<ShardHeader>() >= 64, "the header holds the lock");
        let mut waiters = Vec::new();
        for id in ids.iter().take(WAITERS) {
            let pid = fork_or_die();
            if pid == 0 {
                let ok = cache
                    .store(
                        id,
                        b"after the owner died",
                        Timestamp::from_secs(4_000_000_000),
                    )
                    .is_ok();
                // SAFETY: ends the child with its verdict.
                unsafe { libc::_exit(if ok { 0 } else { 1 }) };
            }
            waiters.push(pid);
        }
        // Every waiter is now asleep on the owner's lock. Stop them all, so
        // that the wakeup the owner's death sends goes to a process that
        // cannot act on it before it is killed.
        std::thread::sleep(Duration::from_millis(200));
        for &w in &waiters {
            // SAFETY: w is our child.
            unsafe { libc::kill(w, libc::SIGSTOP) };
        }
        std::thread::sleep(Duration::from_millis(50));
        kill(owner);
        // The owner's robust list is processed as it exits: one waiter is
        // woken (the first queued, as a rule: waiter 0).
        wait_until(owner, Instant::now() + Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(50));
        for (i, &w) in waiters.iter().enumerate() {
            if i != survivor {
                kill(w);
            }
        }
        for (i, &w) in waiters.iter().enumerate() {
            if i != survivor {
                wait_until(w, Instant::now() + Duration::from_secs(5));
            }
        }
        let died = Instant::now();
        // SAFETY: our child.
        unsafe { libc::kill(waiters[survivor], libc::SIGCONT) };
        let code = wait_until(waiters[survivor], died + Duration::from_millis(500));
        let took = died.elapsed();
        match code {
            Some(0) => {}
            Some(c) => panic!("round {survivor}: the surviving waiter's store failed (exit {c})"),
            None => {
                kill(waiters[survivor]);
                wait_until(waiters[survivor], Instant::now() + Duration::from_secs(5));
                panic!("round {survivor}: the surviving waiter did not get the lock within 500 ms of the owner's death");
            }
        }
        println!("round {survivor}: the surviving waiter stored {took:?} after it was continued");
    }
    // SAFETY: our dup, closed once.
    unsafe { libc::close(fd) };
    let st = cache.stats();
    assert!(st.lock_timeouts == 0, "no wait reached the bound: {st:?}");
    cache.check().expect("the shard is consistent afterwards");
}
