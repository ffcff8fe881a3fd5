//! A loom model of the shard's seqlock (lock protocol rule 5) and of
//! owner-death recovery (rule 2), with the memory orderings the engine
//! uses, checked over every interleaving loom explores (its C11 model:
//! a relaxed load may return any store coherence and happens-before allow).
//!
//! # What runs the engine's code, and what mirrors it
//! The sequence word's four halves are the engine's own functions
//! (`engine/src/seqlock.rs`, compiled into this crate with `cfg(loom)` so
//! they use loom's atomics; see `src/lib.rs`): the model calls
//! `seqlock::write_begin` and `write_end` where the engine's
//! `Locked::begin` and `Locked::end` (engine/src/shard.rs) do, and
//! `read_begin` / `read_end` where `Shard::get_unlocked` does. A change to
//! an ordering there is checked here without touching this file.
//!
//! The rest is mirrored, by name (the engine file each lives in, then the
//! item):
//! | model                  | engine                                                   |
//! |------------------------|----------------------------------------------------------|
//! | `Shard::lock`          | lock.rs `ShardLock::lock_within`: trylock/timed waits     |
//! |                        | until 0 or EOWNERDEAD; glibc takes the word with an       |
//! |                        | acquiring CAS (here `compare_exchange(.., Acquire, ..)`)  |
//! | `Shard::unlock`        | lock.rs `ShardLock::unlock`: glibc releases the word      |
//! |                        | (`Release`)                                               |
//! | `Shard::owner_dies`    | the kernel's robust-list walk at the owner's death: it    |
//! |                        | sets FUTEX_OWNER_DIED in the word with a locked cmpxchg   |
//! |                        | (ordered after every store the dead thread made: Release) |
//! | `begin_step(0)`, `(1)` | shard.rs `Locked::begin`: `dirty = 1`, then               |
//! |                        | `seqlock::write_begin` (the engine's, called)             |
//! | `end_step(0)`, `(1)`   | shard.rs `Locked::end`: `seqlock::write_end` (called),    |
//! |                        | then `dirty = 0`                                          |
//! | `write_byte`           | a mutation's stores: entry.rs `write`, the arena's zeroing |
//! |                        | in `Locked::depart`, index.rs `Index::fill`/`erase`       |
//! | `wipe`                 | shard.rs `Locked::wipe` (`Shard::reset`): every byte to 0 |
//! | `recover_if_dirty`     | shard.rs `Shard::lock`: dirty set -> begin, wipe,         |
//! |                        | `recoveries += 1`, end                                    |
//! | `panic_unwind`         | shard.rs `Drop for Locked` while panicking: `begin()`     |
//! |                        | again, then unlock                                        |
//! | `get_unlocked`         | shard.rs `Shard::get_unlocked`: `seqlock::read_begin`     |
//! |                        | (called), the reads (entry.rs's unlocked reader),         |
//! |                        | `seqlock::read_end` (called)                              |
//!
//! The lock, the `dirty` mark and the bytes stay mirrored: the engine's are
//! a pthread mutex, plain memory under it and raw racy copies, none of
//! which loom can run.
//!
//! `Value` stands for every byte an unlocked reader reads (index control
//! bytes and slots, entry header, id and value): two bytes are enough to
//! tear. `dirty` is a `loom::cell::UnsafeCell`, so loom also checks that
//! every access to it is ordered by the lock (a causality violation fails).
//!
//! # Difference from the engine
//! The engine reads and writes the bytes with plain (volatile or
//! `copy_nonoverlapping`) accesses; the model uses `Relaxed` atomic byte
//! accesses, the only ones the C11 model gives a meaning to when they race
//! (the "atomic memcpy" of P1478). So the model shows the *orderings* are
//! right; that the engine's plain racy copies compile to the same loads is
//! an assumption about the compiler, which miri and ThreadSanitizer flag as
//! the data race it formally is (see scripts/tsan-suppressions.txt).
//!
//! # Interleavings covered
//! Three threads: a writer W that runs one mutation (lock, begin, two
//! byte stores, end, unlock) and is killed after any of its steps (k = 0..9,
//! each a separate exhaustive model run), or panics after any step while
//! holding the lock; a locker L that takes the lock (waiting, or getting
//! it from a dead owner), recovers if `dirty`, then runs a mutation of its
//! own; an unlocked reader R. Every interleaving of the three, and every
//! value loom's memory model lets each relaxed load return, with at most
//! two preemptions per execution (LOOM_MAX_PREEMPTIONS=2, set by
//! scripts/concurrency-checks.sh; unbounded takes many minutes).
//! Checked: R never accepts a torn or mixed value; L never trusts a
//! half-updated shard (no recovery -> the bytes are a whole value); at the
//! end `dirty` is clear, the sequence even (unlocked readers can answer
//! again) and the bytes a whole value or the wipe's zeros.
//!
//! # Not covered
//! - More than one writer killed, or a killed locker mid-recovery (a second
//!   recovery runs the same steps; not modelled).
//! - The bounded wait, out of service and reinitialisation (rule 6): the model's
//!   lock waits forever; `ShardLock::init` over a live lock is not modelled.
//! - The lost-wakeup path (a woken waiter killed before it locks): the
//!   kernel's futex queue is not modelled (issue 9, item 5: no test yet).
//! - Sequence wrap-around (2^32 mutations during one read), the reader's
//!   bounds checks on torn data (miri checks those), the checksum.
//! - Several shards, processes mapping at different addresses.
//! - The read marks (layout version 5, lock protocol rule 7): a hit's
//!   `fetch_or` into its index slot word with no lock, and the CLOCK
//!   hand's `fetch_and` under it. `Value` is read-only for the reader
//!   here; the marks are atomic RMWs on a word whose offset bits only the
//!   lock holder writes. A first model of them (a slot word stored with
//!   the second byte, `fetch_or`ed by the reader after it accepted a
//!   value, its offset checked at the end) failed under loom 0.7 with a
//!   final word no C11 modification order allows (the reader's RMW read
//!   the initial word after the locker's store): not understood yet, so
//!   not committed; see the issue 11 report.
//!
//! # Found
//! At 8e8c50b `begin` fenced only when it made the sequence odd itself. A
//! holder recovering after a writer killed mid-mutation finds it odd
//! already, so its wipe had no release fence before it: a reader could
//! read a wiped byte beside an old one and still load the old even
//! sequence (C11 allows it; x86's TSO hides it). `broken_begin_as_it_was`
//! shows the failure; `seqlock::write_begin` now fences unconditionally.
//!
//! Each `broken_*` test changes one ordering or step the engine relies on
//! and must make the model fail: they show the checks can fail.

use loom::cell::UnsafeCell;
use loom::sync::atomic::{fence, AtomicU32, AtomicU8, Ordering};
use loom::sync::Arc;
use loom::thread;
use socache_shm_loom_model::seqlock;

type Value = [u8; 2];
const OLD: Value = [1, 1];
const NEW: Value = [2, 2];
const LOCKERS: Value = [3, 3];
const WIPED: Value = [0, 0];

const FREE: u32 = 0;
const HELD: u32 = 1;
const OWNER_DEAD: u32 = 2;

/// Protocol variants: `Engine` is the code (the engine's own `seqlock`
/// functions); the others break one thing, with model code in their place.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Variant {
    Engine,
    /// `end` clears `dirty` before making the sequence even.
    EndClearsDirtyFirst,
    /// No `fence(Acquire)` before the reader's second sequence load.
    ReaderWithoutFence,
    /// No `fence(Release)` after `begin`'s odd store.
    BeginWithoutFence,
    /// `begin` as it was at 8e8c50b: the fence only when it made the
    /// sequence odd itself. The model found this: a recovery after a dead
    /// writer (the sequence already odd) wiped with no release fence, so
    /// a reader could see a wiped byte and still the old even sequence.
    FenceOnlyWhenItMadeOdd,
    /// Recovery keyed on EOWNERDEAD alone, not on `dirty` (misses a
    /// panicked holder, which unlocks normally).
    RecoverOnOwnerDeathOnly,
}

struct Shard {
    lock: AtomicU32,
    seq: AtomicU32,
    dirty: UnsafeCell<u32>,
    bytes: [AtomicU8; 2],
    variant: Variant,
}

impl Shard {
    fn new(variant: Variant) -> Shard {
        Shard {
            lock: AtomicU32::new(FREE),
            seq: AtomicU32::new(0),
            dirty: UnsafeCell::new(0),
            bytes: [AtomicU8::new(OLD[0]), AtomicU8::new(OLD[1])],
            variant,
        }
    }

    /// Returns whether the previous owner died holding it (EOWNERDEAD).
    fn lock(&self) -> bool {
        loop {
            if self
                .lock
                .compare_exchange(FREE, HELD, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return false;
            }
            if self
                .lock
                .compare_exchange(OWNER_DEAD, HELD, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return true;
            }
            thread::yield_now();
        }
    }

    fn unlock(&self) {
        self.lock.store(FREE, Ordering::Release);
    }

    fn owner_dies(&self) {
        self.lock.store(OWNER_DEAD, Ordering::Release);
    }

    fn set_dirty(&self, v: u32) {
        // SAFETY (model): only lock holders touch `dirty`; loom checks it.
        self.dirty.with_mut(|p| unsafe { *p = v });
    }

    fn dirty(&self) -> u32 {
        // SAFETY (model): as in set_dirty.
        self.dirty.with(|p| unsafe { *p })
    }

    fn begin_step(&self, step: u32) {
        match step {
            0 => self.set_dirty(1),
            1 => match self.variant {
                Variant::BeginWithoutFence | Variant::FenceOnlyWhenItMadeOdd => {
                    let s = self.seq.load(Ordering::Relaxed);
                    if s & 1 == 0 {
                        self.seq.store(s.wrapping_add(1), Ordering::Relaxed);
                        if self.variant == Variant::FenceOnlyWhenItMadeOdd {
                            fence(Ordering::Release);
                        }
                    }
                }
                _ => seqlock::write_begin(&self.seq),
            },
            _ => unreachable!(),
        }
    }

    fn begin(&self) {
        self.begin_step(0);
        self.begin_step(1);
    }

    fn end_step(&self, step: u32) {
        let clear_first = self.variant == Variant::EndClearsDirtyFirst;
        match (step, clear_first) {
            (0, false) | (1, true) => seqlock::write_end(&self.seq),
            (1, false) | (0, true) => self.set_dirty(0),
            _ => unreachable!(),
        }
    }

    fn end(&self) {
        self.end_step(0);
        self.end_step(1);
    }

    fn write_byte(&self, i: usize, v: u8) {
        self.bytes[i].store(v, Ordering::Relaxed);
    }

    fn wipe(&self) {
        for i in 0..2 {
            self.write_byte(i, 0);
        }
    }

    /// Read by the lock holder (its own view: the lock orders it).
    fn value(&self) -> Value {
        [
            self.bytes[0].load(Ordering::Relaxed),
            self.bytes[1].load(Ordering::Relaxed),
        ]
    }

    /// `Shard::lock`'s recovery; returns whether it wiped.
    fn recover_if_dirty(&self, owner_died: bool) -> bool {
        let needed = if self.variant == Variant::RecoverOnOwnerDeathOnly {
            owner_died
        } else {
            self.dirty() != 0
        };
        if needed {
            self.begin();
            self.wipe();
            self.end();
        }
        needed
    }

    fn get_unlocked(&self) -> Option<Value> {
        let read = || {
            [
                self.bytes[0].load(Ordering::Relaxed),
                self.bytes[1].load(Ordering::Relaxed),
            ]
        };
        if self.variant == Variant::ReaderWithoutFence {
            let before = self.seq.load(Ordering::Acquire);
            if before & 1 != 0 {
                return None;
            }
            let v = read();
            return (self.seq.load(Ordering::Relaxed) == before).then_some(v);
        }
        let before = seqlock::read_begin(&self.seq)?;
        let v = read();
        seqlock::read_end(&self.seq, before).then_some(v)
    }
}

/// How the writer stops.
#[derive(Clone, Copy, Debug)]
enum Stop {
    /// SIGKILL after `k` of its steps.
    KilledAfter(u32),
    /// A panic (a bounds check on a corrupt shard) after `k` steps.
    PanicsAfter(u32),
}

/// The writer's steps: 0 lock, 1-2 begin, 3-4 the two byte stores,
/// 5-6 end, 7 unlock. Returns after `stop`.
fn writer(s: &Shard, stop: Stop) {
    let limit = match stop {
        Stop::KilledAfter(k) | Stop::PanicsAfter(k) => k,
    };
    let mut held = false;
    for step in 0..8u32 {
        if step == limit {
            break;
        }
        match step {
            0 => {
                s.lock();
                held = true;
            }
            1 | 2 => s.begin_step(step - 1),
            3 | 4 => s.write_byte((step - 3) as usize, NEW[(step - 3) as usize]),
            5 | 6 => s.end_step(step - 5),
            7 => {
                s.unlock();
                held = false;
            }
            _ => unreachable!(),
        }
    }
    if held {
        match stop {
            Stop::KilledAfter(_) => s.owner_dies(),
            Stop::PanicsAfter(_) => {
                // Drop for Locked while panicking: begin(), then unlock.
                s.begin();
                s.unlock();
            }
        }
    }
}

fn whole(v: Value) -> bool {
    [OLD, NEW, LOCKERS, WIPED].contains(&v)
}

fn run(variant: Variant, stop: Stop) {
    loom::model(move || {
        let shard = Arc::new(Shard::new(variant));
        let w = {
            let s = shard.clone();
            thread::spawn(move || writer(&s, stop))
        };
        let l = {
            let s = shard.clone();
            thread::spawn(move || {
                let owner_died = s.lock();
                let wiped = s.recover_if_dirty(owner_died);
                if !wiped {
                    let v = s.value();
                    assert!(
                        v == OLD || v == NEW || v == WIPED,
                        "{stop:?}: the locker trusts a half-updated shard: {v:?}"
                    );
                }
                // Rule 5: the sequence is odd exactly while dirty is set.
                // Once the lock is taken and any recovery done, unlocked
                // readers must be able to answer again.
                let seq = s.seq.load(Ordering::Relaxed);
                assert_eq!(
                    seq & 1,
                    0,
                    "{stop:?}: sequence left odd ({seq}) with dirty clear: readers stay locked out"
                );
                s.begin();
                s.write_byte(0, LOCKERS[0]);
                s.write_byte(1, LOCKERS[1]);
                s.end();
                s.unlock();
            })
        };
        let r = {
            let s = shard.clone();
            thread::spawn(move || {
                if let Some(v) = s.get_unlocked() {
                    assert!(whole(v), "{stop:?}: the reader accepted a torn value {v:?}");
                }
            })
        };
        w.join().unwrap();
        l.join().unwrap();
        r.join().unwrap();
        // The next locker, after all of them: whatever W left (dead,
        // panicked or done), after its recovery the shard is consistent
        // and readable without the lock.
        let owner_died = shard.lock();
        shard.recover_if_dirty(owner_died);
        assert_eq!(shard.dirty(), 0, "{stop:?}: left dirty");
        let seq = shard.seq.load(Ordering::Relaxed);
        assert_eq!(
            seq & 1,
            0,
            "{stop:?}: sequence left odd ({seq}): unlocked readers never answer again"
        );
        let v = shard.value();
        assert!(whole(v), "{stop:?}: final bytes {v:?}");
        shard.unlock();
    });
}

fn all_stops() -> Vec<Stop> {
    let mut v: Vec<Stop> = (0..=8).map(Stop::KilledAfter).collect();
    // A panic needs the lock held: after step 1 up to step 7.
    v.extend((1..=7).map(Stop::PanicsAfter));
    v
}

#[test]
fn seqlock_and_owner_death_recovery() {
    for stop in all_stops() {
        run(Variant::Engine, stop);
    }
}

/// The tests that each broken variant, stopped where its flaw shows, fails
/// the model: `fn name: Variant, stop => "what the failure says";`.
macro_rules! broken_is_found {
    ($($(#[$meta:meta])* fn $name:ident: $variant:ident, $stop:expr => $expected:literal;)*) => {
        $(
            $(#[$meta])*
            #[test]
            #[should_panic(expected = $expected)]
            fn $name() {
                run(Variant::$variant, $stop);
            }
        )*
    };
}

broken_is_found! {
    /// Killed between end's two steps (after step 5, its first).
    fn broken_end_clearing_dirty_first_is_found:
        EndClearsDirtyFirst, Stop::KilledAfter(6) => "sequence left odd";
    fn broken_reader_without_fence_is_found:
        ReaderWithoutFence, Stop::KilledAfter(8) => "torn value";
    fn broken_begin_without_fence_is_found:
        BeginWithoutFence, Stop::KilledAfter(8) => "torn value";
    /// Panics after its first byte store: unlocks normally, dirty set.
    fn broken_recovery_on_owner_death_only_is_found:
        RecoverOnOwnerDeathOnly, Stop::PanicsAfter(4) => "half-updated";
    /// Killed after begin, before any byte store: the locker recovers.
    fn broken_begin_as_it_was_is_found:
        FenceOnlyWhenItMadeOdd, Stop::KilledAfter(3) => "torn value";
}
