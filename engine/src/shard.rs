//! [`Shard`]: one lock, one index, one arena. Everything the cache does to an
//! entry happens here, under the shard's lock.
//!
//! # Lock protocol
//! 1. One owner for each piece of shard state (`layout::ShardHeader`):
//!    - the lock ([`ShardLock`](super::lock::ShardLock)) is used by every
//!      process, through pthread calls only, by shared reference;
//!    - the lock-protected state (`ShardState`: dirty mark, counts,
//!      counters, the arena's free lists and the CLOCK hand), the index and
//!      the arena's blocks are read and written only with the lock held,
//!      through the one handle that proves it, [`Locked`] (made only by
//!      [`Shard::lock`], after the lock was taken; it unlocks on drop). The
//!      state is reached as `&ShardState` from `&Locked` and as
//!      `&mut ShardState` only from `&mut Locked`, so the borrow checker
//!      keeps a `&mut` from outliving any other use of the shard;
//!    - the words used without the lock (`SeqLine`: the sequence word, the
//!      out-of-service mark, the lock-timeout count) and the per-CPU read
//!      stripes are used through atomics only, by shared reference.
//!
//!    No `&mut` is ever made to memory another thread or process may touch
//!    meanwhile: index and arena bytes are written through raw pointers,
//!    because unlocked readers (rule 5) may be reading them. No code holds
//!    two shard locks at once, so there is no lock order to keep.
//! 2. A mutation sets `dirty` before its first write and clears it after its
//!    last. Whoever takes the lock and finds `dirty` set knows the previous
//!    holder died (robust mutex, `EOWNERDEAD`) or panicked mid-way, zeroes the
//!    shard and re-initialises it (`recoveries` counts this). Only that shard
//!    loses its entries; the rest of the segment is untouched.
//! 3. A locked retrieve copies the value out while holding the lock, so it
//!    can never see a half-written or half-freed entry. It writes nothing
//!    but the counters and the entry's read mark (rule 7), which leave the
//!    shard consistent at every instant, so it needs no dirty mark.
//! 4. Values leave the shard only as copies into the caller's buffer.
//! 5. A retrieve may first try without the lock ([`Shard::get_unlocked`], a
//!    seqlock read). The shard's sequence word (`ShardHeader::seq`, alone on
//!    its cache line) is odd exactly while `dirty` is set: `begin` makes it
//!    odd before a mutation's first write, `end` even after its last (their
//!    halves on the sequence word, and the reader's, are in `seqlock.rs`,
//!    which the loom model runs). The reader loads it, looks the id up and
//!    copies the value with bounds-checked reads that never panic and never
//!    write (`entry.rs`'s unlocked reader), then loads it again; only if it
//!    was even and has not moved is the answer used, else
//!    the retrieve takes the lock as before. So readers on different cores
//!    write no shared cache line (their hit counts go to per-CPU
//!    [`ReadStripe`](super::layout::ReadStripe)s), and they do not serialise
//!    behind each other. A writer that dies leaves the word odd: readers
//!    take the lock, and the recovery (rule 2) makes it even again. A hit
//!    writes only its read mark (rule 7), after the second load showed its
//!    answer good. Reads that must write more (an expired entry to reclaim)
//!    take the lock, and so do those whose buffer is too small (the locked
//!    path says how much is needed).
//!
//! 6. Every wait for a shard lock is bounded ([`LOCK_BOUND`], 1 s). An
//!    operation that cannot take the lock in that time (a stopped holder,
//!    or a lock word no valid mutex state explains, written by a hostile or
//!    buggy process) takes the shard *out of service* ([`OutOfService`]): it
//!    stores the second in `SeqLine::out_of_service` (atomics only; the
//!    first to do so logs it) and answers a miss (retrieves) or refuses
//!    (stores). While the mark is set, operations on the shard answer at
//!    once without touching its lock. [`REINIT_AFTER_SECS`] (5 s) later,
//!    the first operation to come claims the reinitialisation (a
//!    compare-and-swap to `REINIT_CLAIMED`), initialises a fresh mutex over
//!    the old words, takes it, zeroes the shard (a recovery) and puts it
//!    back in service. A holder that was
//!    merely stopped for those seconds loses its shard's entries: when it
//!    resumes it may write into the wiped shard, which the checksums and
//!    bounds checks then treat as corruption (a miss), never as data. The
//!    unlocked reads of rule 5 need no lock and go on meanwhile.
//! 7. The read marks are the one piece of index or arena memory written
//!    without the lock: the 3 low bits of an index slot word (block offsets
//!    are 8-aligned), set by a hit's `fetch_or` (`Index::mark_read`), with or
//!    without the lock. Every access to a slot word is therefore atomic:
//!    the lock holder loads it, stores it whole (fill, erase, clear) and
//!    takes `MARK_AGAIN` with a `fetch_and` (the CLOCK hand); readers
//!    only `fetch_or` mark bits. A mark can never change the offset a
//!    writer reads back; a mark that lands after its slot was erased or
//!    given to another entry (the reader's slot went stale) only skews
//!    CLOCK's ranking of that slot's next entry, and lands in the index,
//!    never in the arena, whose free blocks stay all zeros.
//!
//! # Expiry and eviction
//! In [`evict`]: the expiry sweeps, CLOCK and the index rebuild, the ways
//! a store makes room.
//!
//! # Secrets
//! An entry's bytes are zeroed before its block is freed, whatever the reason:
//! removal, replacement, expiry, eviction, flush, recovery or a failed
//! checksum. An expired entry's bytes are zeroed within a bound of its
//! expiry, not only when its id comes back: every store to a shard in which
//! something has expired also sweeps [`SWEEP_SLOTS`](evict::SWEEP_SLOTS)
//! index slots (a cursor that walks the whole index in turn), and
//! [`Locked::sweep_expired`] clears a whole shard (httpd's parent runs it
//! from its monitor hook, about every 10 s, so an idle shard is cleared
//! too).
//!
//! # Integrity
//! Each entry carries a checksum of its value keyed by the hash of its id
//! and its expiry ([`checksum`](crate::entry::checksum); the entry's bytes
//! are encoded and decoded in `entry.rs` only). A read that finds a
//! mismatch answers a miss, wipes the entry and counts it (`corrupt`);
//! `Locked::check` ([`fsck`]) verifies every entry's checksum.

use std::ptr;
use std::sync::atomic::{AtomicU32, Ordering};

use super::arena::Arena;
use super::entry::{self, checksum, hash_id, EntryHead};
use super::error::Error;
use super::index::{Hash, Index};
use super::layout::{
    Geometry, SeqLine, ShardHeader, ShardState, ENTRY_HEADER, LANES, MARKS, REINIT_CLAIMED,
};
use super::lock::{OutOfService, ShardLock, LOCK_BOUND, REINIT_AFTER_SECS};
use super::outcome::{Miss, Stats, Stored};
use super::seqlock;

mod evict;
mod fsck;

/// Why an entry leaves, for the counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Departure {
    Removed,
    Replaced,
    Expired,
    Evicted,
    Corrupt,
}

/// One shard's header, index and arena, located in a mapped segment.
pub(crate) struct Shard {
    number: u32,
    hdr: *mut ShardHeader,
    /// `(*hdr).state`: reached only through [`Locked`] (rule 1).
    state: *mut ShardState,
    index: Index,
    arena: Arena,
    arena_base: *mut u8,
    arena_len: u32,
}

impl Shard {
    /// # Safety
    /// `base` is the start of a mapping of at least `geo.total_bytes` bytes laid
    /// out by `geo`, valid while the `Shard` is used; `i < geo.shard_count`.
    pub(crate) unsafe fn at(base: *mut u8, geo: &Geometry, i: u32) -> Shard {
        // SAFETY: the caller's contract is `Geometry`'s (a mapping laid out
        // by `geo`); `shard_header` and `region` assert i < shard_count.
        unsafe {
            let hdr = geo.shard_header(base, i);
            let region = geo.region(base, i);
            let arena_base = geo.arena_at(region);
            let state = &raw mut (*hdr).state;
            Shard {
                number: i,
                hdr,
                state,
                // The region is 64-aligned (regions_offset and the stride
                // are multiples of 64, the mapping page-aligned).
                index: Index::new(region, geo.slots / LANES),
                arena: Arena::new(&raw mut (*state).arena, arena_base, geo.arena_bytes),
                arena_base,
                arena_len: geo.arena_bytes,
            }
        }
    }

    pub(crate) fn seq(&self) -> &AtomicU32 {
        &self.line().seq
    }

    /// The words used without the lock (rules 5 and 6).
    pub(crate) fn line(&self) -> &SeqLine {
        // SAFETY: hdr points into the live mapping; the SeqLine's fields are
        // only ever used through atomic operations, by every process.
        unsafe { &(*self.hdr).seq }
    }

    /// Retrieve without the lock (lock protocol, rule 5). `Some` is the
    /// answer, as `Locked::get` would have given it; `None`: take the lock
    /// and ask again (a writer was active or got in the way, or this read
    /// must write: an expired entry to reclaim, a buffer too small). Writes
    /// nothing but a hit's read mark (one `fetch_or` on its slot word, after
    /// the answer is known good); never panics, whatever the segment holds.
    pub(crate) fn get_unlocked(
        &self,
        hash: u64,
        id: &[u8],
        now: u32,
        buf: &mut [u8],
    ) -> Option<Result<usize, Miss>> {
        let id_len = u32::try_from(id.len()).ok()?;
        let seq = self.seq();
        let before = seqlock::read_begin(seq)?;
        let h = Hash::split(hash, self.index.groups());
        let mut torn = false;
        let mut found = None;
        let slot = self.index.find(h, |word| {
            let block = word & !MARKS;
            match entry::head_unlocked(&self.arena, block) {
                None => {
                    torn = true;
                    true
                }
                Some(head) => {
                    let hit =
                        head.id_len == id_len && entry::id_is_unlocked(&self.arena, block, id);
                    if hit {
                        found = Some((word, head));
                    }
                    hit
                }
            }
        });
        if torn {
            return None;
        }
        let answer = match found {
            None => Err(Miss::NotFound),
            Some((word, head)) => {
                let block = word & !MARKS;
                // Expired (to reclaim), or a buffer too small (to say how
                // much is needed; the copy's `None`): the locked path
                // answers.
                if head.expiry <= now {
                    return None;
                }
                Ok(entry::copy_value_unlocked(&self.arena, block, head, buf)?)
            }
        };
        if !seqlock::read_end(seq, before) {
            return None;
        }
        if let (Ok(n), Some((word, head)), Some(slot)) = (answer, found, slot) {
            // A consistent copy that fails its checksum: the locked path
            // checks again, wipes the entry and counts it.
            if checksum(hash, head.expiry, &buf[..n]) != head.check {
                return None;
            }
            // A good hit: record it for CLOCK (rule 5; a writer may have
            // reused the slot since the check, see `Index::mark_read`).
            self.index.mark_read(slot, word);
        }
        Some(answer)
    }

    /// Initialise a shard of a segment no other process can reach yet.
    ///
    /// # Safety
    /// No other thread or process uses this shard during the call.
    pub(crate) unsafe fn init(&mut self) -> std::io::Result<()> {
        // SAFETY: the caller guarantees exclusive access; hdr is in the mapping.
        unsafe { ShardLock::init(&raw mut (*self.hdr).lock)? };
        self.seq().store(0, Ordering::Relaxed);
        // SAFETY: exclusive access (the caller), so no one else reads or
        // writes the shard meanwhile.
        unsafe { self.reset() };
        Ok(())
    }

    /// Zero the whole arena and make the shard empty.
    ///
    /// # Safety
    /// This thread holds the shard's lock (a [`Locked`] guard) or has the
    /// shard to itself (a segment being made). Unlocked readers may be
    /// looking at the arena meanwhile; the caller has made the sequence odd
    /// (`Locked::begin`) so they discard what they read.
    unsafe fn reset(&mut self) {
        // SAFETY: arena_base..+arena_len is this shard's arena region
        // (Shard::at); raw writes, no reference over memory readers share.
        unsafe { ptr::write_bytes(self.arena_base, 0, self.arena_len as usize) };
        self.index.clear();
        self.arena.reset();
        // SAFETY: per the contract, no one else touches the state; no other
        // reference to it is alive (this is the only one, made here).
        let st = unsafe { &mut *self.state };
        st.entries = 0;
        st.tombstones = 0;
        st.min_expiry = u32::MAX;
        st.sweep_slot = 0;
        st.sweep_min = u32::MAX;
        st.hand = 0;
    }

    /// Take the shard's lock (lock protocol, rule 6). `patience`: `None` to
    /// wait up to [`LOCK_BOUND`] and take the shard out of service if that
    /// fails; `Some(d)` to wait at most `d` and just give up (callers that
    /// must not block, such as httpd's parent). A shard left half-modified
    /// is reset first; one out of service long enough is reinitialised.
    pub(crate) fn lock(
        &mut self,
        key: [u64; 2],
        growth_limit: u32,
        now: u32,
        patience: Option<std::time::Duration>,
    ) -> Result<Locked<'_>, Error> {
        let number = self.number;
        let unavailable = |first| {
            Error::from(OutOfService {
                shard: number,
                first,
            })
        };
        let hdr = self.hdr;
        let line = self.line();
        let marked = line.out_of_service.load(Ordering::Acquire);
        let reinit = marked != 0;
        if reinit {
            let due = marked != REINIT_CLAIMED && now >= marked.saturating_add(REINIT_AFTER_SECS);
            if !due
                || patience.is_some()
                || line
                    .out_of_service
                    .compare_exchange(marked, REINIT_CLAIMED, Ordering::AcqRel, Ordering::Acquire)
                    .is_err()
            {
                return Err(unavailable(false));
            }
            // SAFETY: hdr is in the mapping. This process won the claim, so
            // no other reinitialises the lock; other processes do not touch
            // it meanwhile (they see the mark and answer at once), except
            // one that read the mark as clear just before it was set, whose
            // bounded wait ends in a timeout, a fresh lock, or EINVAL; all
            // three leave it harmless (rule 6).
            if unsafe { ShardLock::init(&raw mut (*hdr).lock) }.is_err() {
                line.out_of_service.store(now.max(1), Ordering::Release);
                return Err(unavailable(false));
            }
        }
        // SAFETY: hdr points into the live mapping; the lock is only ever used
        // through pthread calls.
        let lock = unsafe { &(*hdr).lock };
        let acquired = match lock.lock_within(patience.unwrap_or(LOCK_BOUND)) {
            Ok(a) => a,
            Err(_) if patience.is_some() => return Err(unavailable(false)),
            Err(_) => {
                line.lock_timeouts.fetch_add(1, Ordering::Relaxed);
                let first = if reinit {
                    line.out_of_service.store(now.max(1), Ordering::Release);
                    false
                } else {
                    line.out_of_service
                        .compare_exchange(0, now.max(1), Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                };
                return Err(unavailable(first));
            }
        };
        let mut locked = Locked {
            shard: self,
            key,
            growth_limit,
        };
        if acquired.waited {
            locked.st_mut().counters.lock_waits += 1;
        }
        if reinit || locked.st().dirty != 0 {
            locked.begin(); // the sequence is odd already if a writer died
            locked.wipe();
            locked.st_mut().counters.recoveries += 1;
            locked.end();
        }
        if reinit {
            locked
                .shard
                .line()
                .out_of_service
                .store(0, Ordering::Release);
        }
        Ok(locked)
    }
}

/// A shard whose lock this thread holds; unlocks on drop.
pub(crate) struct Locked<'a> {
    shard: &'a mut Shard,
    key: [u64; 2],
    growth_limit: u32,
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // A bounds check tripped on a corrupt shard (or a bug) mid-way:
            // have the next holder wipe it rather than trip over it forever
            // (and unlocked readers stay away until then).
            self.begin();
        }
        // SAFETY: a `Locked` exists only while this thread holds the lock:
        // `Shard::lock` is the only place one is made, after the lock was
        // taken.
        unsafe { (*self.shard.hdr).lock.unlock() };
    }
}

impl Locked<'_> {
    /// The lock-protected state, to read (rule 1).
    fn st(&self) -> &ShardState {
        // SAFETY: this guard holds the lock, so no other thread or process
        // writes the state; the only `&mut` to it is made by `st_mut`, which
        // takes `&mut self`, so none is alive while this one is.
        unsafe { &*self.shard.state }
    }

    /// The lock-protected state, to change (rule 1).
    fn st_mut(&mut self) -> &mut ShardState {
        // SAFETY: as in `st`, and `&mut self` makes this the only reference
        // to the state for as long as it lives (the arena's view of its own
        // header is only used through `self.shard.arena`, which this borrow
        // also excludes).
        unsafe { &mut *self.shard.state }
    }

    /// Mark the shard as being modified (rule 2 and 5 of the lock protocol).
    /// Idempotent: a mutation may call it again after a `wipe`.
    fn begin(&mut self) {
        self.st_mut().dirty = 1;
        seqlock::write_begin(self.shard.seq());
    }

    /// The mutation is complete: make the sequence even (its writes ordered
    /// before it), then clear the mark. In that order, a holder killed
    /// between the two leaves `dirty` set (the next holder wipes the shard,
    /// needlessly but safely) rather than an odd sequence with `dirty` clear,
    /// which nobody would ever make even again.
    fn end(&mut self) {
        seqlock::write_end(self.shard.seq());
        self.st_mut().dirty = 0;
    }

    /// The entry in used block `block`: its header, lengths checked against
    /// the block (`entry::head`).
    fn head(&self, block: u32) -> EntryHead {
        // SAFETY: this guard holds the lock.
        unsafe { entry::head(&self.shard.arena, block) }
    }

    /// Set an entry's use count. Only the CLOCK hand calls it, inside a
    /// mutation (readers never write the entry: their marks go to the slot,
    /// see `Index::mark_read`).
    fn set_uses(&mut self, block: u32, head: EntryHead, uses: u32) {
        // SAFETY: this guard holds the lock; `head` is this block's (`head`).
        unsafe { entry::write_uses(&self.shard.arena, block, head, uses) }
    }

    fn id_of(&self, block: u32, head: EntryHead) -> &[u8] {
        // SAFETY: this guard holds the lock for as long as the slice, which
        // borrows it, lives.
        unsafe { entry::id(&self.shard.arena, block, head) }
    }

    fn value_of(&self, block: u32, head: EntryHead) -> &[u8] {
        // SAFETY: as in `id_of`.
        unsafe { entry::value(&self.shard.arena, block, head) }
    }

    fn lookup(&self, h: Hash, id: &[u8]) -> Option<u32> {
        self.shard.index.find(h, |word| {
            let block = word & !MARKS;
            let head = self.head(block);
            head.id_len as usize == id.len() && self.id_of(block, head) == id
        })
    }

    /// Zero and free the entry in slot `slot`.
    fn depart(&mut self, slot: u32, why: Departure) {
        let block = self.shard.index.block(slot);
        // Zeroes the entry's bytes.
        let (start, size) = self.shard.arena.free(block);
        // Keep the hand on a block: if the merged free block covers it, put
        // it past the free block rather than at its start. A new entry is
        // then allocated behind the hand, so a whole turn passes before the
        // hand first reaches it; at the free block's start, the next entry
        // would sit right under the hand and be the first one taken down
        // (and, after a turn that found every entry in use, evicted within a
        // few stores, before anyone had a chance to read it).
        let hand = self.st().hand;
        if hand >= start && hand < start + size {
            self.st_mut().hand = start + size;
        }
        if self.shard.index.erase(slot) {
            self.st_mut().tombstones += 1;
        }
        let h = self.st_mut();
        h.entries -= 1;
        let c = &mut h.counters;
        match why {
            Departure::Removed => c.removals += 1,
            Departure::Replaced => {}
            Departure::Expired => c.expirations += 1,
            Departure::Evicted => c.evictions += 1,
            Departure::Corrupt => c.corrupt += 1,
        }
    }

    /// Zero the whole shard and start it empty. Called inside a mutation
    /// (between `begin` and `end`), which it does not end.
    pub(crate) fn wipe(&mut self) {
        // SAFETY: this guard holds the lock; the mutation made the sequence odd.
        unsafe { self.shard.reset() };
    }

    /// Remove every entry (zeroing the whole arena), counted as removals.
    pub(crate) fn flush(&mut self) {
        let n = self.st_mut().entries as u64;
        self.begin();
        self.wipe();
        self.st_mut().counters.removals += n;
        self.end();
    }

    /// Index groups a lookup of `id` scans (see `Index::probe_groups`).
    #[cfg(any(test, feature = "testkit"))]
    pub(crate) fn probe_groups(&self, hash: u64, id: &[u8]) -> u32 {
        let h = Hash::split(hash, self.shard.index.groups());
        self.shard.index.probe_groups(h, |word| {
            let block = word & !MARKS;
            let head = self.head(block);
            head.id_len as usize == id.len() && self.id_of(block, head) == id
        })
    }

    #[cfg(test)]
    pub(crate) fn miss_probe_groups(&self, hash: u64) -> u32 {
        self.shard
            .index
            .miss_probe_groups(Hash::split(hash, self.shard.index.groups()))
    }

    /// Copy the live value of `id` into `buf`.
    pub(crate) fn get(
        &mut self,
        hash: u64,
        id: &[u8],
        now: u32,
        buf: &mut [u8],
    ) -> Result<usize, Miss> {
        let h = Hash::split(hash, self.shard.index.groups());
        let Some(slot) = self.lookup(h, id) else {
            self.st_mut().counters.misses += 1;
            return Err(Miss::NotFound);
        };
        let block = self.shard.index.block(slot);
        let head = self.head(block);
        if head.expiry <= now {
            self.begin();
            self.depart(slot, Departure::Expired);
            self.end();
            self.st_mut().counters.misses += 1;
            return Err(Miss::NotFound);
        }
        if checksum(hash, head.expiry, self.value_of(block, head)) != head.check {
            let first = self.st().counters.corrupt == 0;
            self.begin();
            self.depart(slot, Departure::Corrupt);
            self.end();
            self.st_mut().counters.misses += 1;
            return Err(Miss::Corrupt { first });
        }
        let value = self.value_of(block, head);
        if value.len() > buf.len() {
            let needed = value.len();
            self.st_mut().counters.misses += 1;
            return Err(Miss::BufferTooSmall { needed });
        }
        buf[..value.len()].copy_from_slice(value);
        self.shard
            .index
            .mark_read(slot, self.shard.index.slot_word(slot));
        self.st_mut().counters.hits += 1;
        Ok(head.value_len as usize)
    }

    /// Insert or replace. The caller has checked the size against the maximum.
    pub(crate) fn put(
        &mut self,
        hash: u64,
        id: &[u8],
        value: &[u8],
        expiry: u32,
        now: u32,
    ) -> Result<Stored, Error> {
        let h = Hash::split(hash, self.shard.index.groups());
        self.begin();
        let replaced = match self.lookup(h, id) {
            Some(slot) => {
                self.depart(slot, Departure::Replaced);
                true
            }
            None => false,
        };
        let outcome = if replaced {
            Stored::Replaced
        } else {
            Stored::Inserted
        };
        if expiry <= now {
            // Already expired: storing it would only hide it; the old value is gone.
            self.end();
            return Ok(outcome);
        }
        self.make_index_room(now);
        let payload = ENTRY_HEADER + id.len() as u32 + value.len() as u32;
        let block = loop {
            if let Some(b) = self.shard.arena.alloc(payload) {
                break b;
            }
            if !self.make_room(now) {
                // Empty, and still no room for an entry under the maximum size:
                // the arena's state is wrong. Start over, then try once more.
                self.wipe();
                self.st_mut().counters.recoveries += 1;
                self.begin();
                match self.shard.arena.alloc(payload) {
                    Some(b) => break b,
                    None => {
                        self.end();
                        return Err(Error::Corrupt {
                            path: None,
                            what: "shard arena cannot hold a maximum-size entry".into(),
                        });
                    }
                }
            }
        };
        let p = self.shard.arena.payload(block, payload);
        // SAFETY: payload() checked `payload` bytes are inside the new block,
        // which no index slot points to yet; p is 4-aligned (8-aligned block
        // + 4-byte block header); this guard holds the lock and `begin` made
        // the sequence odd; the caller refused ids longer than ID_LEN_MASK
        // and entries over the maximum size (under VALUE_LEN_MASK).
        unsafe { entry::write(p, hash, expiry, id, value) };
        let slot = self
            .shard
            .index
            .find_free(h)
            .expect("make_index_room left a free slot");
        if !self.shard.index.fill(slot, h, block, 0) {
            self.st_mut().tombstones -= 1;
        }
        let hd = self.st_mut();
        hd.entries += 1;
        hd.min_expiry = hd.min_expiry.min(expiry);
        hd.sweep_min = hd.sweep_min.min(expiry);
        hd.counters.stores += 1;
        if replaced {
            hd.counters.replacements += 1;
        }
        if hd.min_expiry <= now {
            self.sweep_some(now);
        }
        self.end();
        Ok(outcome)
    }

    /// Remove `id`; true if a live entry went.
    pub(crate) fn delete(&mut self, hash: u64, id: &[u8], now: u32) -> bool {
        let h = Hash::split(hash, self.shard.index.groups());
        let Some(slot) = self.lookup(h, id) else {
            self.st_mut().counters.remove_misses += 1;
            return false;
        };
        let live = self.head(self.shard.index.block(slot)).expiry > now;
        self.begin();
        self.depart(
            slot,
            if live {
                Departure::Removed
            } else {
                Departure::Expired
            },
        );
        self.end();
        live
    }

    /// Copies of every live entry: (id, value, expiry second).
    pub(crate) fn snapshot(&self, now: u32) -> Vec<(Vec<u8>, Vec<u8>, u32)> {
        let mut out = Vec::with_capacity(self.st().entries as usize);
        for slot in 0..self.shard.index.slot_count() {
            if self.shard.index.is_full(slot) {
                let block = self.shard.index.block(slot);
                let head = self.head(block);
                let (id, value) = (self.id_of(block, head), self.value_of(block, head));
                if head.expiry > now
                    && checksum(hash_id(self.key, id), head.expiry, value) == head.check
                {
                    out.push((id.to_vec(), value.to_vec(), head.expiry));
                }
            }
        }
        out
    }

    pub(crate) fn refuse(&mut self) {
        self.st_mut().counters.refused += 1;
    }

    /// The shard's figures; `entries` counts live entries only (an expired
    /// one awaiting its sweep is not current).
    pub(crate) fn stats(&self, now: u32) -> Stats {
        let mut live = 0u64;
        for slot in 0..self.shard.index.slot_count() {
            if self.shard.index.is_full(slot)
                && self.head(self.shard.index.block(slot)).expiry > now
            {
                live += 1;
            }
        }
        let h = self.st();
        let c = h.counters;
        let cap = self.shard.arena.capacity() as u64;
        let used = self.shard.arena.used_bytes() as u64;
        Stats {
            entries: live,
            bytes_total: cap,
            bytes_used: used,
            bytes_free: cap - used.min(cap),
            largest_free_block: self.shard.arena.largest_free_hint() as u64,
            index_slots: self.shard.index.slot_count() as u64,
            lock_timeouts: self.shard.line().lock_timeouts.load(Ordering::Relaxed),
            ..Stats::default()
        }
        .with_counters(&c)
    }
}
