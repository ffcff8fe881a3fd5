//! The shard's consistency check (`shmcache check`, and every reattach of
//! a kept segment): arena and index walked and compared, every entry's
//! checksum verified.

use std::collections::HashSet;

use super::{checksum, entry, hash_id, Hash, Locked};
use crate::index::{DELETED, EMPTY};

impl Locked<'_> {
    /// Walk the arena and the index and verify they agree.
    ///
    /// Never panics on a corrupt shard that holds still: pass 1 checks
    /// every slot's offset against the arena's walk and every entry's
    /// lengths against its block before pass 2 (and its lookups) uses them.
    /// A process that writes the shard without its lock while it is walked
    /// (hostile or buggy: every process of the host maps the segment) can
    /// still make pass 2 trip a bounds check; `Cache::check` turns that
    /// panic into a finding.
    pub(crate) fn check(&self) -> Result<(), String> {
        let mut used = HashSet::new();
        let hand = self.st().hand;
        let mut hand_on_block = hand == self.shard.arena.capacity();
        let usage = self.shard.arena.walk(|b| {
            hand_on_block |= b.offset == hand;
            if b.used {
                used.insert(b.offset);
            }
        })?;
        if !hand_on_block {
            return Err(format!("CLOCK hand {hand} is not on a block"));
        }
        let h = self.st();
        if h.dirty != 0 {
            return Err("shard is marked dirty".into());
        }
        let slots = self.shard.index.slot_count();
        // Pass 1: every full slot points at its own used block whose lengths fit.
        let mut full = 0u32;
        let mut tombs = 0u32;
        for slot in 0..slots {
            let c = self.shard.index.ctrl(slot);
            if self.shard.index.is_full(slot) {
                full += 1;
                let block = self.shard.index.block(slot);
                if !used.remove(&block) {
                    return Err(format!(
                        "slot {slot} points at {block}, not a used block of its own"
                    ));
                }
                // SAFETY: this guard holds the lock; block is a used block
                // found by the walk, so its first 12 payload bytes are in
                // bounds (MIN_BLOCK = 16). Its lengths are checked next.
                let head = unsafe { entry::read_head(&self.shard.arena, block) };
                if head.payload_len() > self.shard.arena.block_size(block) as u64 - 4 {
                    return Err(format!("entry at {block} is longer than its block"));
                }
            } else if c == DELETED {
                tombs += 1;
            } else if c != EMPTY {
                return Err(format!("slot {slot} has an invalid control byte {c:#x}"));
            }
        }
        if !used.is_empty() {
            return Err(format!("{} used blocks are in no index slot", used.len()));
        }
        if full != h.entries || usage.used_blocks != h.entries as u64 {
            return Err(format!(
                "entry count {} disagrees with index ({full}) or arena ({})",
                h.entries, usage.used_blocks
            ));
        }
        if tombs != h.tombstones {
            return Err(format!(
                "tombstone count {} but index has {tombs}",
                h.tombstones
            ));
        }
        // Pass 2: every entry is where a lookup of its id finds it.
        for slot in 0..slots {
            if self.shard.index.is_full(slot) {
                let block = self.shard.index.block(slot);
                let head = self.head(block);
                let id = self.id_of(block, head);
                let hash = Hash::split(hash_id(self.key, id), self.shard.index.groups());
                if hash.tag != self.shard.index.ctrl(slot) {
                    return Err(format!("slot {slot}'s tag does not match its id"));
                }
                if self.lookup(hash, id) != Some(slot) {
                    return Err(format!(
                        "slot {slot}'s entry is not found by a lookup of its id"
                    ));
                }
                if checksum(
                    hash_id(self.key, id),
                    head.expiry,
                    self.value_of(block, head),
                ) != head.check
                {
                    return Err(format!("slot {slot}'s entry fails its checksum"));
                }
            }
        }
        Ok(())
    }
}
