//! [`Index`]: a fixed-capacity SwissTable addressed by offsets.
//!
//! Each slot has a control byte: `EMPTY` (0xFF), `DELETED` (0x80, a tombstone)
//! or `FULL` (0x00..=0x7F: the top 7 bits of the entry's hash, its tag). A
//! lookup starts at `h1 = hash mod slots` and scans `GROUP` control bytes at a
//! time with word-parallel (SWAR) compares, checking the id only where the tag
//! matches; it stops at the first group holding an `EMPTY`. Probing steps a
//! group at a time (linear over groups), which visits every slot for any slot
//! count that is a multiple of `GROUP`. The control array carries `GROUP`
//! mirror bytes after its end so a group load never wraps.
//!
//! The index never grows: its capacity is fixed by the byte budget. An erase
//! writes `EMPTY` when no probe could have passed the slot (fewer than `GROUP`
//! consecutive non-empty slots around it), else a tombstone. When full slots
//! plus tombstones reach the load limit and tombstones exist, the shard
//! rebuilds its index in place from the arena (`Shard::rebuild_index`),
//! which is bounded by the shard's size, not the cache's.

use std::ptr;
use std::sync::atomic::{AtomicU32, Ordering};

use super::layout::{GROUP, MARKS, MARK_AGAIN, MARK_READ};

pub const EMPTY: u8 = 0xFF;
pub const DELETED: u8 = 0x80;

const LSB: u64 = 0x0101_0101_0101_0101;
const MSB: u64 = 0x8080_8080_8080_8080;

/// The parts of a hash the index uses.
#[derive(Clone, Copy, Debug)]
pub struct Hash {
    pub h1: u32,
    pub tag: u8,
}

impl Hash {
    pub fn split(hash: u64, slots: u32) -> Hash {
        Hash {
            h1: (((hash as u32) as u64 * slots as u64) >> 32) as u32,
            tag: (hash >> 57) as u8,
        }
    }
}

/// A view of one shard's control bytes and slots.
///
/// A slot is a `u32` word: the arena offset of its entry's block (a
/// multiple of 8) in the high bits and the entry's read marks (`MARKS`) in
/// the low three. The lock holder writes the whole word; retrieves, with
/// or without the lock, only ever `fetch_or` a mark into it (see
/// [`Index::mark_read`]). So every access to a slot word is atomic, and
/// a reader's mark can never change the offset a writer reads back.
pub struct Index {
    ctrl: *mut u8,
    slots: *mut u32,
    n: u32,
}

/// Bit set of matching bytes in a group, lowest slot first.
struct Matches(u64);

impl Iterator for Matches {
    type Item = u32;
    fn next(&mut self) -> Option<u32> {
        if self.0 == 0 {
            return None;
        }
        let i = self.0.trailing_zeros() / 8;
        self.0 &= self.0 - 1;
        Some(i)
    }
}

impl Index {
    /// # Safety
    /// `ctrl` is valid for `n + GROUP` bytes and `slots` (4-aligned) for `n`
    /// u32s, for reads and writes, exclusively ours while the shard lock is
    /// held. `n` is a non-zero multiple of `GROUP`.
    pub unsafe fn new(ctrl: *mut u8, slots: *mut u32, n: u32) -> Index {
        debug_assert!(n >= GROUP && n % GROUP == 0);
        Index { ctrl, slots, n }
    }

    pub fn slot_count(&self) -> u32 {
        self.n
    }

    fn group(&self, pos: u32) -> u64 {
        debug_assert!(pos < self.n);
        // SAFETY: pos < n and the array has n + GROUP bytes, so pos..pos+8 is in bounds;
        // read_unaligned has no alignment requirement.
        u64::from_le(unsafe { ptr::read_unaligned(self.ctrl.add(pos as usize) as *const u64) })
    }

    pub fn ctrl(&self, i: u32) -> u8 {
        assert!(i < self.n);
        // SAFETY: i < n (checked).
        unsafe { *self.ctrl.add(i as usize) }
    }

    /// The mirror copy of control byte `i < GROUP`.
    pub fn mirror(&self, i: u32) -> u8 {
        assert!(i < GROUP);
        // SAFETY: the array has n + GROUP bytes and i < GROUP.
        unsafe { *self.ctrl.add((self.n + i) as usize) }
    }

    fn set_ctrl(&mut self, i: u32, v: u8) {
        assert!(i < self.n);
        // SAFETY: i < n, and i + n < n + GROUP for the mirror when i < GROUP.
        unsafe {
            *self.ctrl.add(i as usize) = v;
            if i < GROUP {
                *self.ctrl.add((self.n + i) as usize) = v;
            }
        }
    }

    pub fn is_full(&self, i: u32) -> bool {
        self.ctrl(i) & 0x80 == 0
    }

    /// Slot `i`'s word, to use atomically.
    fn word(&self, i: u32) -> &AtomicU32 {
        assert!(i < self.n);
        // SAFETY: i < n, so the u32 is inside the slot array, which is
        // 4-aligned (`new`) and lives as long as the mapping this view is
        // of; every process uses the slot words through atomics only.
        unsafe { AtomicU32::from_ptr(self.slots.add(i as usize)) }
    }

    /// Slot `i`'s whole word: block offset | marks.
    pub fn slot_word(&self, i: u32) -> u32 {
        self.word(i).load(Ordering::Relaxed)
    }

    /// Arena offset of the entry in full slot `i`.
    pub fn block(&self, i: u32) -> u32 {
        self.slot_word(i) & !MARKS
    }

    /// Record a hit on slot `i`, whose word was `seen`: the first read
    /// since the entry was stored sets `MARK_READ`, a later one
    /// `MARK_AGAIN` (until the CLOCK hand takes it, see
    /// `Locked::evict_one`). One `fetch_or`, and none when the mark is there
    /// already, so readers of a hot entry write nothing. Called by readers
    /// that hold no lock: the slot may have been given to another entry
    /// meanwhile, which then carries a mark it did not earn (a small
    /// error in CLOCK's ranking, never in the data: the offset bits are
    /// untouched and the mark bits mean nothing else).
    pub fn mark_read(&self, i: u32, seen: u32) {
        let mark = if seen & MARK_READ == 0 {
            MARK_READ
        } else if seen & MARK_AGAIN == 0 {
            MARK_AGAIN
        } else {
            return;
        };
        self.word(i).fetch_or(mark, Ordering::Relaxed);
    }

    /// Take slot `i`'s `MARK_AGAIN` (the CLOCK hand, under the lock);
    /// whether it was set.
    pub fn take_again(&self, i: u32) -> bool {
        self.word(i).fetch_and(!MARK_AGAIN, Ordering::Relaxed) & MARK_AGAIN != 0
    }

    fn match_tag(group: u64, tag: u8) -> Matches {
        let x = group ^ (LSB * tag as u64);
        Matches(x.wrapping_sub(LSB) & !x & MSB)
    }

    fn match_empty(group: u64) -> u64 {
        group & (group << 1) & MSB
    }

    fn match_empty_or_deleted(group: u64) -> u64 {
        group & MSB
    }

    /// The slot whose entry `is_it` accepts, among slots tagged like `h`.
    ///
    /// `is_it` is given the slot's whole word (block offset | marks).
    pub fn find(&self, h: Hash, mut is_it: impl FnMut(u32) -> bool) -> Option<u32> {
        let mut pos = h.h1;
        for _ in 0..self.n.div_ceil(GROUP) + 1 {
            let g = self.group(pos);
            for bit in Self::match_tag(g, h.tag) {
                let i = self.wrap(pos + bit);
                if is_it(self.slot_word(i)) {
                    return Some(i);
                }
            }
            if Self::match_empty(g) != 0 {
                return None;
            }
            pos = self.wrap(pos + GROUP);
        }
        None
    }

    /// `i mod n` for `i < 2n` (every probe step): a compare, not a divide.
    fn wrap(&self, i: u32) -> u32 {
        if i >= self.n {
            i - self.n
        } else {
            i
        }
    }

    /// Groups a lookup for `h` that finds nothing scans (a probe-length figure).
    #[cfg(test)]
    pub fn miss_probe_groups(&self, h: Hash) -> u32 {
        let mut pos = h.h1;
        for n in 1..=self.n.div_ceil(GROUP) + 1 {
            if Self::match_empty(self.group(pos)) != 0 {
                return n;
            }
            pos = self.wrap(pos + GROUP);
        }
        self.n.div_ceil(GROUP) + 1
    }

    /// The first EMPTY or DELETED slot on `h`'s probe path; None only if the
    /// index has no free slot at all.
    pub fn find_free(&self, h: Hash) -> Option<u32> {
        let mut pos = h.h1;
        for _ in 0..self.n.div_ceil(GROUP) + 1 {
            let m = Self::match_empty_or_deleted(self.group(pos));
            if m != 0 {
                return Some(self.wrap(pos + m.trailing_zeros() / 8));
            }
            pos = self.wrap(pos + GROUP);
        }
        None
    }

    /// Put `block` (8-aligned) in free slot `i` with `h`'s tag and read
    /// marks `marks`; true if `i` was EMPTY (not a reused tombstone).
    pub fn fill(&mut self, i: u32, h: Hash, block: u32, marks: u32) -> bool {
        debug_assert!(block & MARKS == 0);
        let was_empty = self.ctrl(i) == EMPTY;
        debug_assert!(!self.is_full(i));
        self.set_ctrl(i, h.tag);
        self.word(i)
            .store(block | (marks & MARKS), Ordering::Relaxed);
        was_empty
    }

    /// Empty full slot `i`; true if it became a tombstone.
    pub fn erase(&mut self, i: u32) -> bool {
        debug_assert!(self.is_full(i));
        // Count non-EMPTY slots on each side, up to a group's width.
        let mut before = 0;
        while before < GROUP && self.ctrl(self.wrap(i + self.n - 1 - before)) != EMPTY {
            before += 1;
        }
        let mut after = 0;
        while after < GROUP && self.ctrl(self.wrap(i + 1 + after)) != EMPTY {
            after += 1;
        }
        let tomb = before + 1 + after > GROUP - 1;
        self.set_ctrl(i, if tomb { DELETED } else { EMPTY });
        self.word(i).store(0, Ordering::Relaxed);
        tomb
    }

    /// Every slot EMPTY.
    pub fn clear(&mut self) {
        // SAFETY: ctrl has n + GROUP bytes (see `new`).
        unsafe { ptr::write_bytes(self.ctrl, EMPTY, (self.n + GROUP) as usize) };
        for i in 0..self.n {
            self.word(i).store(0, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swar_matches() {
        let g = u64::from_le_bytes([EMPTY, 5, DELETED, 5, 0x7f, EMPTY, 0, 1]);
        let tags: Vec<u32> = Index::match_tag(g, 5).collect();
        assert!(tags.contains(&1) && tags.contains(&3));
        assert_eq!(Index::match_empty(g), 0x80 | (0x80 << 40));
        assert_eq!(
            Index::match_empty_or_deleted(g),
            0x80 | (0x80 << 16) | (0x80 << 40)
        );
    }

    #[test]
    fn insert_find_erase_with_collisions() {
        let n = 64u32;
        let mut ctrl = vec![0u8; (n + GROUP) as usize];
        let mut slots = vec![0u32; n as usize];
        // SAFETY: the vecs have the sizes `new` requires and outlive the index.
        let mut ix = unsafe { Index::new(ctrl.as_mut_ptr(), slots.as_mut_ptr(), n) };
        ix.clear();
        // 56 keys, all with the same h1 and tag: the worst case.
        let h = Hash { h1: 60, tag: 3 };
        let mut at = Vec::new();
        for k in 0..56u32 {
            let i = ix.find_free(h).unwrap();
            ix.fill(i, h, (k + 1) * 8, 0);
            at.push(i);
        }
        for k in 0..56u32 {
            assert_eq!(ix.find(h, |b| b == (k + 1) * 8), Some(at[k as usize]));
        }
        for k in (0..56u32).step_by(2) {
            let i = ix.find(h, |b| b == (k + 1) * 8).unwrap();
            ix.erase(i);
        }
        for k in 0..56u32 {
            let found = ix.find(h, |b| b == (k + 1) * 8);
            assert_eq!(found.is_some(), k % 2 == 1, "key {k}");
        }
    }
}
