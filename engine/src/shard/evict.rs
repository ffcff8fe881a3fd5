//! Expiry and eviction: how a shard makes room and clears what expired.
//!
//! An entry whose expiry second has come (`now >= expiry`) is never returned;
//! a lookup that meets one reclaims it. When an insert needs room, expired
//! entries are reclaimed first (a sweep of the index, skipped while `now` is
//! below the shard's `min_expiry` bound), then CLOCK evicts, with a 2-bit
//! use count per entry (in its header, written by the lock holder only) and
//! two read marks beside its index slot (lock protocol rule 7, `shard.rs`):
//! a hand walks the arena's blocks taking one from each entry's count; at
//! an entry whose count is zero it looks up the entry's slot, and the entry
//! stays (its count set to `USES_AGAIN`, the mark taken) if it was read
//! again since the hand last looked, else it goes. A store sets the count
//! to 2 and clears the marks; the first hit sets `MARK_READ`, later ones
//! `MARK_AGAIN`: a fresh entry ranks with one read once (in a TLS 1.3
//! cache the fresh one is a client's next session, the one read once is
//! dead, and among equals the hand takes the older), entries read again
//! rank above both. Entries not read again go in about the order they
//! came; entries in use stay. Every hit can record its read without the
//! lock, so every hit may be unlocked.
//!
//! Every function here runs with the shard's lock held, inside a mutation
//! (between `Locked::begin` and `Locked::end`) unless it says otherwise.

use super::{hash_id, Departure, Hash, Locked, MARKS};
use crate::arena::Block;
use crate::layout::{USES_AGAIN, USES_MAX};

/// Index slots a store sweeps for expired entries (see "Secrets" in
/// `shard.rs`).
pub(super) const SWEEP_SLOTS: u32 = 32;

impl Locked<'_> {
    /// Reclaim (and zero) every expired entry of the shard; returns how
    /// many. Does nothing unless something may have expired.
    pub(crate) fn sweep_expired(&mut self, now: u32) -> u32 {
        if self.st_mut().min_expiry > now {
            return 0;
        }
        self.begin();
        let n = self.sweep_all(now);
        self.end();
        n
    }

    /// As `sweep_expired`, inside a mutation.
    fn sweep_all(&mut self, now: u32) -> u32 {
        let mut n = 0;
        let mut min = u32::MAX;
        for slot in 0..self.shard.index.slot_count() {
            if self.shard.index.is_full(slot) {
                let e = self.head(self.shard.index.block(slot)).expiry;
                if e <= now {
                    self.depart(slot, Departure::Expired);
                    n += 1;
                } else {
                    min = min.min(e);
                }
            }
        }
        let h = self.st_mut();
        h.min_expiry = min;
        h.sweep_slot = 0;
        h.sweep_min = u32::MAX;
        n
    }

    /// Reclaim the expired entries among the next [`SWEEP_SLOTS`] index
    /// slots (a cursor over the whole index); at the end of each pass the
    /// earliest expiry it saw becomes the shard's `min_expiry`. Inside a
    /// mutation.
    pub(super) fn sweep_some(&mut self, now: u32) {
        let slots = self.shard.index.slot_count();
        let mut at = self.st_mut().sweep_slot;
        let mut min = self.st_mut().sweep_min;
        for _ in 0..SWEEP_SLOTS.min(slots) {
            if at >= slots {
                at = 0;
            }
            if self.shard.index.is_full(at) {
                let e = self.head(self.shard.index.block(at)).expiry;
                if e <= now {
                    self.depart(at, Departure::Expired);
                } else {
                    min = min.min(e);
                }
            }
            at += 1;
            if at >= slots {
                at = 0;
                self.st_mut().min_expiry = min;
                min = u32::MAX;
            }
        }
        let h = self.st_mut();
        h.sweep_slot = at;
        h.sweep_min = min;
    }

    /// CLOCK: evict (or reclaim, if expired) one entry; false if there is none.
    /// The hand walks the arena's blocks in address order (see
    /// `advance_hand`), taking one from each entry's use count; the
    /// first entry it finds at zero goes. At most `USES_MAX + 1` turns.
    fn evict_one(&mut self, now: u32) -> bool {
        if self.st_mut().entries == 0 {
            return false;
        }
        for _ in 0..(USES_MAX + 1) * self.shard.arena.max_blocks() + 2 {
            let b = self.advance_hand();
            if !b.used {
                continue;
            }
            let head = self.head(b.offset);
            if head.expiry > now && head.uses > 0 {
                self.set_uses(b.offset, head, head.uses - 1);
                continue;
            }
            let id = self.id_of(b.offset, head);
            let h = Hash::split(hash_id(self.key, id), self.shard.index.groups());
            let slot = self.shard.index.find(h, |word| word & !MARKS == b.offset);
            let slot = slot.expect("every used block is in the index");
            if head.expiry <= now {
                self.depart(slot, Departure::Expired);
                return true;
            }
            // At zero: read again since the hand last looked? Then it stays.
            if self.shard.index.take_again(slot) {
                self.set_uses(b.offset, head, USES_AGAIN);
                continue;
            }
            self.depart(slot, Departure::Evicted);
            return true;
        }
        false
    }

    /// The block under the CLOCK hand, and the hand moved past it (wrapping
    /// at the end). Walking blocks in address order visits entries in an
    /// order unrelated to their hashes, so evictions free index slots evenly.
    fn advance_hand(&mut self) -> Block {
        let mut at = self.st().hand;
        if at >= self.shard.arena.capacity() {
            at = 0;
        }
        let b = self.shard.arena.block_at(at);
        self.st_mut().hand = at + b.size;
        b
    }

    /// Free one entry's worth of room: expired entries first, then CLOCK.
    pub(super) fn make_room(&mut self, now: u32) -> bool {
        if self.st_mut().min_expiry <= now && self.sweep_all(now) > 0 {
            return true;
        }
        self.evict_one(now)
    }

    /// Ensure the index can take one more entry without passing its load limit.
    pub(super) fn make_index_room(&mut self, now: u32) {
        loop {
            let (entries, tombstones) = (self.st().entries, self.st().tombstones);
            let limit = self.growth_limit;
            if entries + tombstones < limit {
                return;
            }
            if tombstones > 0 && (tombstones * 16 >= limit || entries == 0) {
                self.rebuild_index();
            } else if !self.make_room(now) {
                // No entries, yet no room: the counts are off. Start over.
                self.wipe();
                return;
            }
        }
    }

    /// Re-insert every entry into a cleared index (drops all tombstones).
    /// Bounded by the shard's size: O(entries in this shard).
    /// The entries keep their read marks (each block's old slot is looked
    /// up before the index is cleared; one the old index misses starts
    /// unmarked).
    fn rebuild_index(&mut self) {
        let mut blocks = Vec::with_capacity(self.st_mut().entries as usize);
        let walked = self.shard.arena.walk(|b| {
            if b.used {
                blocks.push(b.offset);
            }
        });
        if walked.is_err() {
            self.wipe();
            return;
        }
        let mut entries = Vec::with_capacity(blocks.len());
        for block in blocks {
            let head = self.head(block);
            let hash = Hash::split(
                hash_id(self.key, self.id_of(block, head)),
                self.shard.index.groups(),
            );
            let marks = self
                .shard
                .index
                .find(hash, |word| word & !MARKS == block)
                .map_or(0, |slot| self.shard.index.slot_word(slot) & MARKS);
            entries.push((block, hash, marks));
        }
        self.shard.index.clear();
        self.st_mut().tombstones = 0;
        for (block, hash, marks) in entries {
            let slot = self
                .shard
                .index
                .find_free(hash)
                .expect("index has room after clear");
            self.shard.index.fill(slot, hash, block, marks);
        }
    }
}
