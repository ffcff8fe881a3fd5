//! The shard's sequence word (lock protocol, rule 5 in `shard.rs`): the
//! writer's two halves and the reader's two halves, with their orderings.
//!
//! This file is also compiled into the loom model (`checks/loom`, with
//! `--cfg loom`), where the atomics below are loom's: the model runs these
//! very functions, so it cannot drift from the engine. Keep it free of
//! anything but the sequence word (no `crate::` paths: the model includes
//! the file alone).

// `cfg(loom)` is set only by checks/loom's build of this one file; the
// engine never sees it (so rustc's check of cfg names is told here, not in
// the workspace's lint table).
#![allow(unexpected_cfgs)]
// `pub`: the loom model's crate includes this file as its public module
// and calls these functions from its test; in the engine the module is
// private, which `unreachable_pub` would flag.
#![allow(unreachable_pub)]

#[cfg(loom)]
use loom::sync::atomic::{fence, AtomicU32, Ordering};
#[cfg(not(loom))]
use std::sync::atomic::{fence, AtomicU32, Ordering};

/// The writer's first half, after it set the shard's `dirty` mark: make
/// the sequence odd (if a writer that died mid-way left it odd already,
/// it stays so), then order that before every write of the mutation.
#[inline]
pub fn write_begin(seq: &AtomicU32) {
    let s = seq.load(Ordering::Relaxed);
    if s & 1 == 0 {
        seq.store(s.wrapping_add(1), Ordering::Relaxed);
    }
    // Order the odd value before every write of the mutation, also when
    // it was odd already (a recovery after a writer died mid-way): the
    // wipe's writes need the fence too (checks/loom found it).
    fence(Ordering::Release);
}

/// The writer's second half, before it clears `dirty`: make the sequence
/// even, every write of the mutation ordered before it (`Release`).
#[inline]
pub fn write_end(seq: &AtomicU32) {
    let s = seq.load(Ordering::Relaxed);
    if s & 1 != 0 {
        seq.store(s.wrapping_add(1), Ordering::Release);
    }
}

/// The reader's first half: the sequence to compare against later, or
/// `None` while a mutation is running (odd). `Acquire`: the reads that
/// follow see at least every write of the mutations that ended before it.
#[inline]
pub fn read_begin(seq: &AtomicU32) -> Option<u32> {
    let before = seq.load(Ordering::Acquire);
    (before & 1 == 0).then_some(before)
}

/// The reader's second half: whether what it read since `read_begin`
/// gave `before` is consistent (no mutation began meanwhile). The fence
/// orders every read above before the second load of the sequence.
#[inline]
pub fn read_end(seq: &AtomicU32, before: u32) -> bool {
    fence(Ordering::Acquire);
    seq.load(Ordering::Relaxed) == before
}
