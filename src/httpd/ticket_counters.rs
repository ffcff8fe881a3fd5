//! The session-ticket figures of server-status, counted by every child of
//! this host: a few `AtomicU64`s in one page of anonymous shared memory
//! that the parent maps when the ticket cache registers (before the
//! children fork, so they all share it) and unmaps when it leaves.
//!
//! Why not the segment: its layout belongs to the engine, and the farm's
//! tier words to the farm. So these figures count from the last start or
//! restart of this host, and `shmcache stat` (which reads the segment) does
//! not show them. A child of an older generation keeps counting into its
//! generation's page, which the kernel frees when the last one exits.
//!
//! One table: a counter is one line of [`COUNTERS`].

use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

/// One counter: its index in the page, its server-status key and label.
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

/// (counter, `?auto` key, HTML label), in display order.
pub(crate) const COUNTERS: [(Counter, &str, &str); 7] = [
    (Counter::Issued, "TicketsIssued", "session tickets issued"),
    (
        Counter::OpenedNewest,
        "TicketsOpenedNewestKey",
        "session tickets opened with the newest key",
    ),
    (
        Counter::OpenedOlder,
        "TicketsOpenedOlderKey",
        "session tickets opened with an older key (renewed)",
    ),
    (
        Counter::NotOpened,
        "TicketsNotOpened",
        "session tickets with an unknown or expired key (full handshakes)",
    ),
    (
        Counter::KeysMade,
        "TicketKeysMade",
        "session-ticket keys made on this host (no farm tier)",
    ),
    (
        Counter::KeysAgreed,
        "TicketKeysAgreed",
        "session-ticket keys agreed through the farm tier",
    ),
    (
        Counter::KeysAlone,
        "TicketKeysMadeAlone",
        "session-ticket keys made alone (farm tier unreachable)",
    ),
];

const PAGE: usize = 4096;
const _: () = assert!(COUNTERS.len() * size_of::<AtomicU64>() <= PAGE);
// The table lists the counters in index order (a counter's index is its
// place in the page and in the table).
const _: () = {
    let mut i = 0;
    while i < COUNTERS.len() {
        assert!(COUNTERS[i].0 as usize == i);
        i += 1;
    }
};

/// The page, or null (before registration, or when mmap failed).
static PAGE_PTR: AtomicPtr<AtomicU64> = AtomicPtr::new(ptr::null_mut());

/// Map the page (the parent, single-threaded, before fork). Idempotent.
pub(crate) fn map() {
    if !PAGE_PTR.load(Ordering::Acquire).is_null() {
        return;
    }
    // SAFETY: a new anonymous shared mapping; no existing memory touched.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            PAGE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p != libc::MAP_FAILED {
        // Zero-filled by the kernel: all counters start at 0.
        PAGE_PTR.store(p.cast(), Ordering::Release);
    }
}

/// Unmap the page (the parent, single-threaded, no child of this process
/// reads through this process's pointer: children have their own copy of
/// the mapping).
pub(crate) fn unmap() {
    let p = PAGE_PTR.swap(ptr::null_mut(), Ordering::AcqRel);
    if !p.is_null() {
        // SAFETY: `p` is the mapping made by `map`, PAGE bytes; no reference
        // into it outlives the calls of this module.
        unsafe { libc::munmap(p.cast(), PAGE) };
    }
}

fn slot(c: Counter) -> Option<&'static AtomicU64> {
    let p = NonNull::new(PAGE_PTR.load(Ordering::Acquire))?;
    // SAFETY: the page holds PAGE bytes of AtomicU64s (zero is a valid
    // value), mapped until `unmap`, which only the single-threaded parent
    // calls; the index is below COUNTERS.len() (checked at compile time to
    // fit the page).
    Some(unsafe { &*p.as_ptr().add(c as usize) })
}

/// Count one.
pub(crate) fn bump(c: Counter) {
    if let Some(a) = slot(c) {
        a.fetch_add(1, Ordering::Relaxed);
    }
}

/// Every counter's value, in [`COUNTERS`] order (None: not mapped).
pub(crate) fn values() -> Option<Vec<u64>> {
    (!PAGE_PTR.load(Ordering::Acquire).is_null()).then_some(())?;
    Some(
        COUNTERS
            .iter()
            .map(|&(c, _, _)| slot(c).map_or(0, |a| a.load(Ordering::Relaxed)))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_across_fork_then_unmapped() {
        assert_eq!(values(), None, "nothing before the parent maps the page");
        bump(Counter::Issued); // not mapped: ignored
        map();
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
        unsafe { libc::waitpid(pid, &mut status, 0) };
        let v = values().expect("mapped");
        assert_eq!(v[0], 2, "the child's count is seen by the parent");
        assert_eq!(v[Counter::KeysAlone as usize], 1);
        assert_eq!(COUNTERS[Counter::KeysAlone as usize].0, Counter::KeysAlone);
        unmap();
        assert_eq!(values(), None);
    }
}
