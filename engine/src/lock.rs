//! [`ShardLock`]: a process-shared, robust pthread mutex living in the segment.
//!
//! Robust: when a process dies holding it, the next locker gets `EOWNERDEAD`
//! instead of waiting forever. The lock itself is then made consistent again
//! and the caller is told the owner died ([`Acquired::owner_died`]); whether
//! the data it guards needs repair is the caller's business (the shard keeps
//! a `dirty` mark for that, see `shard.rs`).
//!
//! Both threads and processes may use it: glibc's robust list is per thread
//! and is re-registered in a child after `fork`.
//!
//! A lock that cannot be taken within [`LOCK_BOUND`] takes its shard *out of
//! service* ([`OutOfService`], lock protocol rule 6 in `shard.rs`) for
//! [`REINIT_AFTER_SECS`]. "Out of service" is the state's one name; the
//! public answers that report it keep their API names, `Error::Unavailable`
//! and `Miss::Unavailable`.

use std::cell::UnsafeCell;
use std::io;

/// Attempts (each after a few `spin_loop` hints) before blocking on a busy lock.
const SPINS: u32 = 16;
/// The longest one wait for a busy lock sleeps before trying again.
const WAIT_SLICE: std::time::Duration = std::time::Duration::from_millis(50);
/// The longest any operation waits for a shard lock. Critical sections last
/// microseconds; a lock busy for this long is held by a stopped process or
/// is garbage, and the shard is taken out of service (see `shard.rs`).
pub const LOCK_BOUND: std::time::Duration = std::time::Duration::from_secs(1);
/// Seconds a shard stays out of service before the first operation to come
/// reinitialises its lock (lock protocol, rule 6).
pub const REINIT_AFTER_SECS: u32 = 5;

/// A shard out of service: its lock was not obtained within [`LOCK_BOUND`].
/// `first`: the operation that found it (log it once). Its `Display` is the
/// sentence operators read (`Error::Unavailable` shows it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutOfService {
    pub shard: u32,
    pub first: bool,
}

impl std::fmt::Display for OutOfService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "shard {} is out of service: its lock was not obtained within {} ms (a garbage lock word or a stopped holder); it is reinitialised {} s after it was found",
            self.shard,
            LOCK_BOUND.as_millis(),
            REINIT_AFTER_SECS
        )
    }
}

/// `CLOCK_REALTIME` now plus `d`, as `pthread_mutex_timedlock` wants it.
fn deadline_after(d: std::time::Duration) -> libc::timespec {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: now is a valid timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &raw mut now) };
    let nanos = now.tv_nsec as u64 + d.subsec_nanos() as u64;
    libc::timespec {
        tv_sec: now.tv_sec + d.as_secs() as libc::time_t + (nanos / 1_000_000_000) as libc::time_t,
        tv_nsec: (nanos % 1_000_000_000) as _,
    }
}

/// Lives in shared memory; initialised once by the segment's creator.
#[repr(C)]
pub struct ShardLock {
    mutex: UnsafeCell<libc::pthread_mutex_t>,
}

/// How the lock was obtained.
#[derive(Clone, Copy, Debug, Default)]
pub struct Acquired {
    /// Another holder had it first: we had to wait.
    pub waited: bool,
    /// Its previous owner died while holding it.
    pub owner_died: bool,
}

impl ShardLock {
    /// # Safety
    /// `this` points to writable shared memory for a `ShardLock` that no
    /// process is using (the segment is being created or reset while no
    /// other process can reach it).
    pub unsafe fn init(this: *mut ShardLock) -> io::Result<()> {
        let mut attr: libc::pthread_mutexattr_t =
            // SAFETY: pthread_mutexattr_t is plain data; all-zero is a valid
            // starting value that pthread_mutexattr_init overwrites.
            unsafe { std::mem::zeroed() };
        // SAFETY: attr is a valid, exclusively owned attribute object;
        // `this` is valid per the caller's contract.
        unsafe {
            check(libc::pthread_mutexattr_init(&raw mut attr))?;
            let r = (|| {
                // Under miri (which implements neither attribute) the lock
                // is a plain process-private mutex: see `MIRI` below.
                #[cfg(not(miri))]
                {
                    check(libc::pthread_mutexattr_setpshared(
                        &raw mut attr,
                        libc::PTHREAD_PROCESS_SHARED,
                    ))?;
                    check(libc::pthread_mutexattr_setrobust(
                        &raw mut attr,
                        libc::PTHREAD_MUTEX_ROBUST,
                    ))?;
                }
                check(libc::pthread_mutex_init(
                    (*this).mutex.get(),
                    &raw const attr,
                ))
            })();
            libc::pthread_mutexattr_destroy(&raw mut attr);
            r
        }
    }

    /// Take the lock, waiting at most [`LOCK_BOUND`]. `Err` with
    /// `ErrorKind::TimedOut` when it stayed busy that long, or the OS error
    /// when the mutex is unusable (a lock word no valid mutex state explains
    /// gives `EINVAL`, `ENOTRECOVERABLE`, ...). Never waits longer: the
    /// caller takes the shard out of service instead (see `shard.rs`).
    pub fn lock(&self) -> io::Result<Acquired> {
        self.lock_within(LOCK_BOUND)
    }

    /// As [`lock`](Self::lock) with another bound (zero: try once).
    pub fn lock_within(&self, limit: std::time::Duration) -> io::Result<Acquired> {
        let m = self.mutex.get();
        // SAFETY: the mutex was initialised by `init` and lives in a mapping
        // that outlives `self`; pthread functions are the only accessors.
        // (Its bytes may be garbage written by a hostile process: glibc then
        // answers EBUSY or EINVAL, and the wait below is bounded.)
        let mut rc = unsafe { libc::pthread_mutex_trylock(m) };
        let mut acquired = Acquired::default();
        if rc == libc::EBUSY {
            acquired.waited = true;
            // Critical sections last well under a microsecond: spin a little
            // (about a microsecond) before sleeping in the kernel, which
            // costs both sides a system call and a context switch.
            for _ in 0..SPINS {
                for _ in 0..8 {
                    std::hint::spin_loop();
                }
                // SAFETY: as above.
                rc = unsafe { libc::pthread_mutex_trylock(m) };
                if rc != libc::EBUSY {
                    break;
                }
            }
        }
        // Sleep in short timed waits, not one long one. When a robust
        // mutex's owner dies, the kernel marks the lock word and wakes one
        // waiter; if that waiter is itself killed before it takes the lock,
        // the wakeup is lost and the other waiters would sleep on a lock
        // nobody holds. A waiter whose slice ends tries again and finds the
        // owner-died mark itself.
        let start = std::time::Instant::now();
        while rc == libc::EBUSY || rc == libc::ETIMEDOUT {
            let left = limit.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "shard lock not obtained within the bound",
                ));
            }
            rc = timed_lock(m, left.min(WAIT_SLICE));
        }
        match rc {
            0 => Ok(acquired),
            libc::EOWNERDEAD => {
                acquired.owner_died = true;
                // SAFETY: we hold the mutex (EOWNERDEAD grants it); marking it
                // consistent is the documented way back to normal use.
                check(unsafe { libc::pthread_mutex_consistent(m) })?;
                Ok(acquired)
            }
            e => Err(io::Error::from_raw_os_error(e)),
        }
    }

    /// # Safety
    /// The calling thread holds the lock (a successful `lock`).
    pub unsafe fn unlock(&self) {
        // SAFETY: per the caller's contract this thread owns the mutex.
        let rc = unsafe { libc::pthread_mutex_unlock(self.mutex.get()) };
        debug_assert_eq!(rc, 0, "pthread_mutex_unlock failed");
    }
}

/// One timed wait for the mutex at `m`, at most `slice`: 0, EOWNERDEAD,
/// ETIMEDOUT or the OS error, as `pthread_mutex_timedlock` answers.
#[cfg(not(miri))]
fn timed_lock(m: *mut libc::pthread_mutex_t, slice: std::time::Duration) -> libc::c_int {
    let deadline = deadline_after(slice);
    // SAFETY: m is an initialised mutex in a live mapping (the caller's
    // contract, see `lock_within`); deadline is a valid absolute
    // CLOCK_REALTIME time.
    unsafe { libc::pthread_mutex_timedlock(m, &raw const deadline) }
}

/// # Under miri
/// Miri implements neither `PTHREAD_PROCESS_SHARED`, `PTHREAD_MUTEX_ROBUST`
/// nor `pthread_mutex_timedlock`. There the lock is a default (process-
/// private, non-robust) pthread mutex, and a timed wait is `trylock` and
/// `yield_now` until the slice ends: the same answers (0 or ETIMEDOUT;
/// EOWNERDEAD cannot happen, no thread dies holding it under miri), the
/// same happens-before edges from unlock to lock, which is what miri's
/// race and aliasing checks of the shard need. Not checked under miri, then:
/// the robust list, owner-death recovery (the model in `checks/loom`
/// and the fork tests of `tests/` check that), sharing between processes.
#[cfg(miri)]
fn timed_lock(m: *mut libc::pthread_mutex_t, slice: std::time::Duration) -> libc::c_int {
    let _ = deadline_after;
    let until = std::time::Instant::now() + slice;
    loop {
        // SAFETY: as in the other `timed_lock`.
        let rc = unsafe { libc::pthread_mutex_trylock(m) };
        if rc != libc::EBUSY {
            return rc;
        }
        if std::time::Instant::now() >= until {
            return libc::ETIMEDOUT;
        }
        std::thread::yield_now();
    }
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}
