//! The session-ticket figures of server-status and `shmcache stat`,
//! counted by every child of this host into words of the ticket cache's
//! segment (its tier words, `socache_shm_farm::words`, `TICKETS_AT`): they
//! survive a graceful restart with the segment, and `shmcache stat` reads
//! them. The words' pointer is set when the ticket cache registers (the
//! parent, before fork) and cleared when it leaves, before its segment is
//! unmapped.
//!
//! One table: a counter is one row of `socache_shm_farm::TICKET_ROWS`; the
//! enum below names its index.

use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

use socache_shm_farm::{ticket_words, TICKET_ROWS, TIER_WORDS};

/// One counter: its index among the ticket words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Counter {
    Issued = 0,
    OpenedNewest,
    OpenedOlder,
    NotOpened,
    KeysMade,
    KeysAgreed,
    KeysAlone,
}

const _: () = assert!(Counter::KeysAlone as usize + 1 == TICKET_ROWS.len());

/// The ticket cache's tier words, or null (before registration).
static WORDS: AtomicPtr<[AtomicU64; TIER_WORDS]> = AtomicPtr::new(ptr::null_mut());

/// Count into `words` from now on (the parent, single-threaded, before
/// fork; `words` stay mapped until [`unmap`]).
pub(crate) fn map(words: &[AtomicU64; TIER_WORDS]) {
    WORDS.store(ptr::from_ref(words).cast_mut(), Ordering::Release);
}

/// Stop counting (the parent, single-threaded, before the segment is
/// unmapped).
pub(crate) fn unmap() {
    WORDS.store(ptr::null_mut(), Ordering::Release);
}

fn slot(c: Counter) -> Option<&'static AtomicU64> {
    let p = NonNull::new(WORDS.load(Ordering::Acquire))?;
    // SAFETY: set by `map` from the registered ticket cache's tier words,
    // which stay mapped until `unmap` clears the pointer (the parent,
    // single-threaded, before its `shutdown` unmaps the segment); children
    // keep their copy of the mapping for their whole life. The words are
    // only ever used through atomics, by every process.
    let words = unsafe { p.as_ref() };
    ticket_words(words).get(c as usize)
}

/// Count one.
pub(crate) fn bump(c: Counter) {
    if let Some(a) = slot(c) {
        a.fetch_add(1, Ordering::Relaxed);
    }
}

/// Every counter's value, in table order (None: not registered).
pub(crate) fn values() -> Option<Vec<u64>> {
    let p = NonNull::new(WORDS.load(Ordering::Acquire))?;
    // SAFETY: as in `slot`.
    let words = unsafe { p.as_ref() };
    Some(
        ticket_words(words)
            .iter()
            .map(|w| w.load(Ordering::Relaxed))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_into_the_tier_words_across_fork() {
        assert_eq!(values(), None, "nothing before registration");
        bump(Counter::Issued); // not registered: ignored
                               // Anonymous shared memory stands in for the segment: a fork shares it.
                               // SAFETY: a new anonymous shared mapping, big enough for the words.
        let shared = unsafe {
            libc::mmap(
                ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(shared, libc::MAP_FAILED);
        // SAFETY: the mapping is zeroed (valid AtomicU64s), aligned, large
        // enough, and never unmapped in this test process.
        let shared: &'static [AtomicU64; TIER_WORDS] = unsafe { &*shared.cast() };
        map(shared);
        bump(Counter::Issued);
        // SAFETY: the child only bumps an atomic in shared memory and exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            bump(Counter::Issued);
            bump(Counter::KeysAlone);
            // SAFETY: leave the child at once, without running Rust's exit path.
            unsafe { libc::_exit(0) };
        }
        assert!(pid > 0, "fork");
        let mut status = 0;
        // SAFETY: waits for our own child.
        unsafe { libc::waitpid(pid, &raw mut status, 0) };
        let v = values().expect("registered");
        assert_eq!(v[0], 2, "the child's count is seen by the parent");
        assert_eq!(v[Counter::KeysAlone as usize], 1);
        let figures = socache_shm_farm::ticket_figures(shared);
        assert_eq!(figures[0], ("TicketsIssued", TICKET_ROWS[0].1, 2));
        unmap();
        assert_eq!(values(), None);
    }
}
