//! [`Index`]: a fixed-capacity SwissTable addressed by offsets, one probe
//! group per cache line.
//!
//! The index is `groups` lines of 64 bytes. A line holds `LANES` (12)
//! slots: their control bytes first, then 4 pad bytes, then their 12 slot
//! words, so a lookup that finds its entry in its first group touches one
//! line of index and then the entry (two dependent cache misses, not the
//! three of separate control and slot arrays):
//!
//! ```text
//! one line (64-aligned):
//! +--------------------+--------+----------------------------------------+
//! | ctrl: u8 x 12      | pad x4 | slot word: u32 x 12                    |
//! | EMPTY, DELETED or  | (0xFF, | block offset (8-aligned) | read marks  |
//! | FULL (7-bit tag)   | unused)| (3 low bits, see `Index::mark_read`)   |
//! +--------------------+--------+----------------------------------------+
//! 0                    12       16                                       64
//! ```
//!
//! Each control byte is `EMPTY` (0xFF), `DELETED` (0x80, a tombstone) or
//! `FULL` (0x00..=0x7F: the top 7 bits of the entry's hash, its tag). A
//! lookup starts at the home group `h1` (the hash's low 32 bits scaled to
//! the group count: a multiply and a shift, no divide) and compares the 16
//! bytes at the line's start with one word-parallel (SWAR, `u128`) compare,
//! masked to the 12 lanes; it checks the id only where the tag matches and
//! stops at the first group holding an `EMPTY`. Probing steps a group at a
//! time (linear, wrapping with a compare), which visits every group.
//!
//! The index never grows: its capacity is fixed by the byte budget. An erase
//! writes `EMPTY` when its group still holds an `EMPTY` (then the group was
//! never full since the index was cleared, so no probe ever went past it:
//! an `EMPTY`, once gone from a group, comes back only by a clear), else a
//! tombstone. When full slots plus tombstones reach the load limit and
//! tombstones exist, the shard rebuilds its index in place from the arena
//! (`Locked::rebuild_index`, in `shard/evict.rs`), which is bounded by the
//! shard's size, not the cache's.

use std::ptr;
use std::sync::atomic::{AtomicU32, Ordering};

use super::layout::{INDEX_LINE, LANES, MARKS, MARK_AGAIN, MARK_READ};

pub(crate) const EMPTY: u8 = 0xFF;
pub(crate) const DELETED: u8 = 0x80;

const LSB: u128 = 0x0101_0101_0101_0101_0101_0101_0101_0101;
/// The high bit of each of the 12 lanes (the pad's 4 bytes masked off).
const MSB: u128 = 0x0000_0000_8080_8080_8080_8080_8080_8080;
/// Where the slot words start in a line.
const WORDS_AT: usize = 16;

/// The parts of a hash the index uses.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Hash {
    /// The home group.
    pub h1: u32,
    pub tag: u8,
}

impl Hash {
    /// `groups`: the index's group count ([`Index::groups`]).
    pub(crate) fn split(hash: u64, groups: u32) -> Hash {
        Hash {
            h1: (((hash as u32) as u64 * groups as u64) >> 32) as u32,
            tag: (hash >> 57) as u8,
        }
    }
}

/// A view of one shard's index lines.
///
/// A slot word holds the arena offset of its entry's block (a multiple of
/// 8) in the high bits and the entry's read marks (`MARKS`) in the low
/// three. The lock holder writes the whole word; retrieves, with or without
/// the lock, only ever `fetch_or` a mark into it (see [`Index::mark_read`]).
/// So every access to a slot word is atomic, and a reader's mark can never
/// change the offset a writer reads back.
pub(crate) struct Index {
    lines: *mut u8,
    groups: u32,
}

/// Bit set of matching lanes in a group, lowest lane first.
struct Matches(u128);

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
    /// `lines` is 64-aligned and valid for `groups * INDEX_LINE` bytes, for
    /// reads and writes, for as long as the `Index` is used; its control
    /// bytes are written only by the holder of the shard lock, its slot
    /// words used only atomically. `groups` is non-zero.
    pub(crate) unsafe fn new(lines: *mut u8, groups: u32) -> Index {
        debug_assert!(groups > 0 && (lines as usize) % INDEX_LINE as usize == 0);
        Index { lines, groups }
    }

    pub(crate) fn slot_count(&self) -> u32 {
        self.groups * LANES
    }

    /// Home groups: what [`Hash::split`] scales a hash to.
    pub(crate) fn groups(&self) -> u32 {
        self.groups
    }

    fn line(&self, g: u32) -> *mut u8 {
        assert!(g < self.groups);
        // SAFETY: g < groups, so the line is inside the index (`new`).
        unsafe { self.lines.add(g as usize * INDEX_LINE as usize) }
    }

    /// Group `g`'s 16 control and pad bytes.
    fn group(&self, g: u32) -> u128 {
        // SAFETY: the line's first 16 bytes are in bounds (`line`); an
        // unaligned raw read, no alignment needed. Unlocked readers race
        // with the lock holder's control-byte stores here: a data race
        // accepted by design (a raw read, no reference; the lanes it picks
        // only lead to slot words whose offsets are bounds-checked by the
        // unlocked reader of `entry.rs`), and whatever a writer changed
        // meanwhile is discarded by the sequence check (`seqlock::read_end`).
        u128::from_le(unsafe { ptr::read_unaligned(self.line(g) as *const u128) })
    }

    /// Slot `i`'s place: (group, lane).
    fn place(&self, i: u32) -> (u32, u32) {
        assert!(i < self.slot_count());
        (i / LANES, i % LANES)
    }

    pub(crate) fn ctrl(&self, i: u32) -> u8 {
        let (g, lane) = self.place(i);
        // SAFETY: lane < 12, inside the line's control bytes.
        unsafe { *self.line(g).add(lane as usize) }
    }

    fn set_ctrl(&mut self, i: u32, v: u8) {
        let (g, lane) = self.place(i);
        // SAFETY: as in `ctrl`; the lock holder is the only writer (`new`).
        unsafe { *self.line(g).add(lane as usize) = v };
    }

    pub(crate) fn is_full(&self, i: u32) -> bool {
        self.ctrl(i) & 0x80 == 0
    }

    /// The slot word of lane `lane` of group `g`, to use atomically.
    fn lane_word(&self, g: u32, lane: u32) -> &AtomicU32 {
        debug_assert!(lane < LANES);
        // SAFETY: lane < 12, so the u32 at 16 + 4 * lane is inside the
        // line, 4-aligned (the line is 64-aligned); the mapping outlives
        // this view, and every process uses slot words through atomics only.
        unsafe {
            AtomicU32::from_ptr(
                self.line(g)
                    .add(WORDS_AT + 4 * (lane % LANES) as usize)
                    .cast::<u32>(),
            )
        }
    }

    fn word(&self, i: u32) -> &AtomicU32 {
        let (g, lane) = self.place(i);
        self.lane_word(g, lane)
    }

    /// Slot `i`'s whole word: block offset | marks.
    pub(crate) fn slot_word(&self, i: u32) -> u32 {
        self.word(i).load(Ordering::Relaxed)
    }

    /// Arena offset of the entry in full slot `i`.
    pub(crate) fn block(&self, i: u32) -> u32 {
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
    pub(crate) fn mark_read(&self, i: u32, seen: u32) {
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
    pub(crate) fn take_again(&self, i: u32) -> bool {
        self.word(i).fetch_and(!MARK_AGAIN, Ordering::Relaxed) & MARK_AGAIN != 0
    }

    fn match_tag(group: u128, tag: u8) -> Matches {
        let x = group ^ (LSB * tag as u128);
        Matches(x.wrapping_sub(LSB) & !x & MSB)
    }

    fn match_empty(group: u128) -> u128 {
        group & (group << 1) & MSB
    }

    fn match_empty_or_deleted(group: u128) -> u128 {
        group & MSB
    }

    /// `g + 1 mod groups`: a compare, not a divide.
    fn next_group(&self, g: u32) -> u32 {
        if g + 1 >= self.groups {
            0
        } else {
            g + 1
        }
    }

    /// The slot whose entry `is_it` accepts, among slots tagged like `h`.
    /// `is_it` is given the slot's whole word (block offset | marks).
    pub(crate) fn find(&self, h: Hash, mut is_it: impl FnMut(u32) -> bool) -> Option<u32> {
        let mut g = h.h1;
        for _ in 0..self.groups {
            let ctrl = self.group(g);
            for lane in Self::match_tag(ctrl, h.tag) {
                if is_it(self.lane_word(g, lane).load(Ordering::Relaxed)) {
                    return Some(g * LANES + lane);
                }
            }
            if Self::match_empty(ctrl) != 0 {
                return None;
            }
            g = self.next_group(g);
        }
        None
    }

    /// Groups `find` scans for `h` until `is_it` accepts a slot or an
    /// `EMPTY` ends the probe (a probe-length figure, for tests).
    #[cfg(any(test, feature = "testkit"))]
    pub(crate) fn probe_groups(&self, h: Hash, mut is_it: impl FnMut(u32) -> bool) -> u32 {
        let mut g = h.h1;
        for n in 1..=self.groups {
            let ctrl = self.group(g);
            for lane in Self::match_tag(ctrl, h.tag) {
                if is_it(self.lane_word(g, lane).load(Ordering::Relaxed)) {
                    return n;
                }
            }
            if Self::match_empty(ctrl) != 0 {
                return n;
            }
            g = self.next_group(g);
        }
        self.groups
    }

    /// Groups a lookup for `h` that finds nothing scans (a probe-length figure).
    #[cfg(test)]
    pub(crate) fn miss_probe_groups(&self, h: Hash) -> u32 {
        let mut g = h.h1;
        for n in 1..=self.groups {
            if Self::match_empty(self.group(g)) != 0 {
                return n;
            }
            g = self.next_group(g);
        }
        self.groups
    }

    /// The first EMPTY or DELETED slot on `h`'s probe path; None only if the
    /// index has no free slot at all.
    pub(crate) fn find_free(&self, h: Hash) -> Option<u32> {
        let mut g = h.h1;
        for _ in 0..self.groups {
            let m = Self::match_empty_or_deleted(self.group(g));
            if m != 0 {
                return Some(g * LANES + m.trailing_zeros() / 8);
            }
            g = self.next_group(g);
        }
        None
    }

    /// Put `block` (8-aligned) in free slot `i` with `h`'s tag and read
    /// marks `marks`; true if `i` was EMPTY (not a reused tombstone).
    pub(crate) fn fill(&mut self, i: u32, h: Hash, block: u32, marks: u32) -> bool {
        debug_assert!(block & MARKS == 0);
        let was_empty = self.ctrl(i) == EMPTY;
        debug_assert!(!self.is_full(i));
        self.set_ctrl(i, h.tag);
        self.word(i)
            .store(block | (marks & MARKS), Ordering::Relaxed);
        was_empty
    }

    /// Empty full slot `i`; true if it became a tombstone.
    pub(crate) fn erase(&mut self, i: u32) -> bool {
        debug_assert!(self.is_full(i));
        let tomb = Self::match_empty(self.group(i / LANES)) == 0;
        self.set_ctrl(i, if tomb { DELETED } else { EMPTY });
        self.word(i).store(0, Ordering::Relaxed);
        tomb
    }

    /// Every slot EMPTY.
    pub(crate) fn clear(&mut self) {
        for g in 0..self.groups {
            // SAFETY: the line's 16 control and pad bytes (`line`); the
            // lock holder is their only writer.
            unsafe { ptr::write_bytes(self.line(g), EMPTY, WORDS_AT) };
            for lane in 0..LANES {
                self.lane_word(g, lane).store(0, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swar_matches() {
        let g = u128::from_le_bytes([
            EMPTY, 5, DELETED, 5, 0x7f, EMPTY, 0, 1, 2, 3, 5, 4, 5, 5, EMPTY, EMPTY,
        ]);
        let tags: Vec<u32> = Index::match_tag(g, 5).collect();
        // SWAR may report a false match (a borrow from a matching byte into
        // the next), which the id check rejects; never a lane past the 12th.
        assert!([1, 3, 10].iter().all(|t| tags.contains(t)), "{tags:?}");
        assert!(tags.iter().all(|&t| t < LANES), "the pad matched: {tags:?}");
        assert_eq!(Index::match_empty(g), 0x80 | (0x80 << 40));
        assert_eq!(
            Index::match_empty_or_deleted(g),
            0x80 | (0x80 << 16) | (0x80 << 40)
        );
    }

    #[repr(C, align(64))]
    struct Line([u8; 64]);

    #[test]
    fn insert_find_erase_with_collisions() {
        let groups = 6u32;
        let mut mem: Vec<Line> = (0..groups).map(|_| Line([0; 64])).collect();
        // SAFETY: the vec holds `groups` 64-aligned lines and outlives the index.
        let mut ix = unsafe { Index::new(mem.as_mut_ptr().cast(), groups) };
        ix.clear();
        // 63 keys, all with the same home group and tag: the worst case.
        let h = Hash { h1: 4, tag: 3 };
        let mut at = Vec::new();
        for k in 0..63u32 {
            let i = ix.find_free(h).unwrap();
            assert!(ix.fill(i, h, (k + 1) * 8, 0));
            at.push(i);
        }
        for k in 0..63u32 {
            assert_eq!(ix.find(h, |b| b == (k + 1) * 8), Some(at[k as usize]));
        }
        for k in (0..63u32).step_by(2) {
            let i = ix.find(h, |b| b == (k + 1) * 8).unwrap();
            ix.erase(i);
        }
        for k in 0..63u32 {
            let found = ix.find(h, |b| b == (k + 1) * 8);
            assert_eq!(found.is_some(), k % 2 == 1, "key {k}");
        }
        // Marks never touch the offset.
        let i = ix.find(h, |b| b == 16).unwrap();
        ix.mark_read(i, ix.slot_word(i));
        ix.mark_read(i, ix.slot_word(i));
        assert_eq!(ix.slot_word(i), 16 | MARK_READ | MARK_AGAIN);
        assert_eq!(ix.block(i), 16);
        assert!(ix.take_again(i) && !ix.take_again(i));
    }
}
