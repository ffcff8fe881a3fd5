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
//!    odd before a mutation's first write, `end` even after its last. The
//!    reader loads it, looks the id up and copies the value with
//!    bounds-checked reads that never panic and never write, then loads it
//!    again; only if it was even and has not moved is the answer used, else
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
//!    buggy process) takes the shard *out of service*: it stores the second
//!    in `SeqLine::poisoned` (atomics only; the first to do so logs it) and
//!    answers a miss (retrieves) or refuses (stores). While the mark is set,
//!    operations on the shard answer at once without touching its lock.
//!    [`REINIT_AFTER_SECS`] (5 s) later, the first operation to come claims
//!    the reinitialisation (a compare-and-swap to `POISON_REINIT`),
//!    initialises a fresh mutex over the old words, takes it, zeroes the
//!    shard (a recovery) and puts it back in service. A holder that was
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
//! An entry whose expiry second has come (`now >= expiry`) is never returned;
//! a lookup that meets one reclaims it. When an insert needs room, expired
//! entries are reclaimed first (a sweep of the index, skipped while `now` is
//! below the shard's `min_expiry` bound), then CLOCK evicts, with a 2-bit
//! use count per entry (in its header, written by the lock holder only) and
//! two read marks beside its index slot (rule 7): a hand walks the arena's
//! blocks taking one from each entry's count; at an entry whose count is
//! zero it looks up the entry's slot, and the entry stays (its count set to
//! `USES_AGAIN`, the mark taken) if it was read again since the hand last
//! looked, else it goes. A store sets the count to 2 and clears the marks;
//! the first hit sets `MARK_READ`, later ones `MARK_AGAIN`: a fresh entry
//! ranks with one read once (in a TLS 1.3 cache the fresh one is a client's
//! next session, the one read once is dead, and among equals the hand
//! takes the older), entries read again rank above both. Entries not read
//! again go in about the order they came; entries in use stay. Every hit
//! can record its read without the lock, so every hit may be unlocked.
//!
//! # Secrets
//! An entry's bytes are zeroed before its block is freed, whatever the reason:
//! removal, replacement, expiry, eviction, flush, recovery or a failed
//! checksum. An expired entry's bytes are zeroed within a bound of its
//! expiry, not only when its id comes back: every store to a shard in which
//! something has expired also sweeps [`SWEEP_SLOTS`] index slots (a cursor
//! that walks the whole index in turn), and [`Locked::sweep_expired`] clears
//! a whole shard (httpd's parent runs it from its monitor hook, about every
//! 10 s, so an idle shard is cleared too).
//!
//! # Integrity
//! Each entry carries a checksum of its value keyed by the hash of its id
//! and its expiry ([`checksum`]). A read that finds a mismatch answers a
//! miss, wipes the entry and counts it (`corrupt`); `check` verifies every
//! entry's checksum.

use std::ptr;
use std::sync::atomic::{fence, AtomicU32, Ordering};

use siphasher::sip::SipHasher13;
use std::hash::Hasher;

use super::arena::Arena;
use super::error::Error;
use super::layout::{
    Geometry, SeqLine, ShardHeader, ShardState, ENTRY_HEADER, ID_LEN_MASK, LANES, MARKS,
    POISON_REINIT, USES_AGAIN, USES_MAX, USES_NEW, USES_SHIFT, VALUE_LEN_MASK,
};
use super::lock::ShardLock;
pub use super::lock::LOCK_BOUND;
use super::outcome::{Miss, Stats, Stored};
use super::table::{Hash, Index};

/// Why an entry leaves, for the counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Departure {
    Removed,
    Replaced,
    Expired,
    Evicted,
    Corrupt,
}

/// Seconds a shard stays out of service before it is reinitialised (rule 6).
pub const REINIT_AFTER_SECS: u32 = 5;

/// Index slots a store sweeps for expired entries (see "Secrets").
pub const SWEEP_SLOTS: u32 = 32;

/// An entry's checksum: a two-sum (Fletcher-style) checksum of its value's
/// 64-bit words, seeded by the hash of its id and by its expiry, then mixed
/// and folded to 16 bits (it shares a word with the id length, so the
/// entry header stays 12 bytes). The first sum changes with any changed
/// word, the second with any reordering; after the mix, a random
/// corruption goes unnoticed once in 65,536.
///
/// Why not XXH3 (the xxhash-rust crate, tried first): every retrieve hit
/// verifies a checksum, and on a TLS session (160 bytes) XXH3 took 257
/// instructions against this one's 90 (callgrind), which kept a hit at 977
/// instructions against 695 before checksums. The cache needs integrity
/// against damage, not a hash that resists an adversary: a process that can
/// write the segment can recompute any checksum.
pub fn checksum(id_hash: u64, expiry: u32, value: &[u8]) -> u32 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut a = id_hash ^ ((expiry as u64) << 32);
    let mut b = 0u64;
    let mut words = value.chunks_exact(8);
    for w in &mut words {
        a = a.wrapping_add(u64::from_le_bytes([
            w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7],
        ]));
        b = b.wrapping_add(a);
    }
    let mut last = 0u64;
    for (i, &x) in words.remainder().iter().enumerate() {
        last |= (x as u64) << (8 * i);
    }
    a = a.wrapping_add(last ^ value.len() as u64);
    b = b.wrapping_add(a);
    let h = (a ^ b.rotate_left(32)).wrapping_mul(K);
    let h = (h ^ (h >> 29)).wrapping_mul(K);
    (h >> 48) as u32
}

/// The id length and checksum share the entry header's second word.
fn split_id_word(word: u32) -> (u32, u32) {
    (word & ID_LEN_MASK, word >> 16)
}

/// Keyed SipHash-1-3 of an id with the segment's key.
pub fn hash_id(key: [u64; 2], id: &[u8]) -> u64 {
    let mut h = SipHasher13::new_with_keys(key[0], key[1]);
    h.write(id);
    h.finish()
}

/// One shard's header, index and arena, located in a mapped segment.
pub struct Shard {
    number: u32,
    hdr: *mut ShardHeader,
    /// `(*hdr).state`: reached only through [`Locked`] (rule 1).
    state: *mut ShardState,
    index: Index,
    arena: Arena,
    arena_base: *mut u8,
    arena_len: u32,
}

/// An entry's header fields, read from its block.
#[derive(Clone, Copy, Debug)]
struct EntryHead {
    expiry: u32,
    id_len: u32,
    value_len: u32,
    /// CLOCK use count, 0..=USES_MAX.
    uses: u32,
    /// The entry's checksum (see [`checksum`]).
    check: u32,
}

impl Shard {
    /// # Safety
    /// `base` is the start of a mapping of at least `geo.total_bytes` bytes laid
    /// out by `geo`, valid while the `Shard` is used; `i < geo.shard_count`.
    pub unsafe fn at(base: *mut u8, geo: &Geometry, i: u32) -> Shard {
        assert!(i < geo.shard_count);
        // SAFETY: every offset below is inside the mapping per `geo`'s layout
        // (Geometry::new proves regions end within total_bytes).
        unsafe {
            let hdr = base
                .add(geo.shard_headers_offset as usize)
                .cast::<ShardHeader>()
                .add(i as usize);
            let region = base.add((geo.regions_offset + i as u64 * geo.shard_stride) as usize);
            let arena_base = region.add(geo.arena_offset as usize);
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
    pub fn get_unlocked(
        &self,
        hash: u64,
        id: &[u8],
        now: u32,
        buf: &mut [u8],
    ) -> Option<Result<usize, Miss>> {
        let id_len = u32::try_from(id.len()).ok()?;
        let seq = self.seq();
        let before = seq.load(Ordering::Acquire);
        if before & 1 != 0 {
            return None;
        }
        let h = Hash::split(hash, self.index.groups());
        let mut torn = false;
        let mut found = None;
        let slot = self.index.find(h, |word| {
            let block = word & !MARKS;
            match self.head_unlocked(block) {
                None => {
                    torn = true;
                    true
                }
                Some(head) => {
                    let hit = head.id_len == id_len && self.id_is_unlocked(block, id);
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
                if head.expiry <= now || head.value_len as usize > buf.len() {
                    return None;
                }
                let p = self
                    .arena
                    .try_payload(block, ENTRY_HEADER + head.id_len + head.value_len)?;
                // SAFETY: try_payload checked the id and value lie inside the
                // block, inside the region; buf holds value_len bytes (checked).
                // The bytes may be being rewritten by a lock holder: a copy
                // of raw memory (no reference into the segment is made), used
                // only if the sequence word shows no writer ran meanwhile;
                // every byte pattern is a valid u8.
                unsafe {
                    ptr::copy_nonoverlapping(
                        p.add((ENTRY_HEADER + head.id_len) as usize),
                        buf.as_mut_ptr(),
                        head.value_len as usize,
                    );
                }
                Ok(head.value_len as usize)
            }
        };
        // Order every read above before the second load of the sequence.
        fence(Ordering::Acquire);
        if seq.load(Ordering::Relaxed) != before {
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

    /// An entry's header read without the lock; None if `block` is not a
    /// used block that can hold one (a torn read).
    fn head_unlocked(&self, block: u32) -> Option<EntryHead> {
        let p = self.arena.try_payload(block, ENTRY_HEADER)? as *const u32;
        // SAFETY: try_payload checked 12 bytes of the block are in the region;
        // p is 4-aligned (8-aligned block + 4-byte header). Volatile: the
        // words may change under us; any value is a valid u32 and is
        // bounds-checked before use.
        let (expiry, id_word, word) = unsafe {
            (
                ptr::read_volatile(p),
                ptr::read_volatile(p.add(1)),
                ptr::read_volatile(p.add(2)),
            )
        };
        let (id_len, check) = split_id_word(id_word);
        Some(EntryHead {
            expiry,
            id_len,
            value_len: word & VALUE_LEN_MASK,
            uses: word >> USES_SHIFT,
            check,
        })
    }

    /// Whether the entry in `block` has id `id` (lengths already equal),
    /// read without the lock.
    fn id_is_unlocked(&self, block: u32, id: &[u8]) -> bool {
        let Some(p) = self
            .arena
            .try_payload(block, ENTRY_HEADER + id.len() as u32)
        else {
            return false;
        };
        // SAFETY: try_payload checked the id's bytes lie inside the block.
        let p = unsafe { p.add(ENTRY_HEADER as usize) } as *const u8;
        let mut chunks = id.chunks_exact(8);
        let mut at = 0usize;
        for c in &mut chunks {
            // SAFETY: at + 8 <= id.len(), inside the checked range; an
            // unaligned raw read (no reference into the segment).
            let theirs = unsafe { ptr::read_unaligned(p.add(at) as *const [u8; 8]) };
            if theirs != *c {
                return false;
            }
            at += 8;
        }
        chunks.remainder().iter().enumerate().all(|(i, &b)| {
            // SAFETY: at + i < id.len(), inside the checked range.
            unsafe { ptr::read_volatile(p.add(at + i)) == b }
        })
    }

    /// Initialise a shard of a segment no other process can reach yet.
    ///
    /// # Safety
    /// No other thread or process uses this shard during the call.
    pub unsafe fn init(&mut self) -> std::io::Result<()> {
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
    pub fn lock(
        &mut self,
        key: [u64; 2],
        growth_limit: u32,
        now: u32,
        patience: Option<std::time::Duration>,
    ) -> Result<Locked<'_>, Error> {
        let number = self.number;
        let unavailable = |first| Error::Unavailable {
            shard: number,
            first,
        };
        let hdr = self.hdr;
        let line = self.line();
        let marked = line.poisoned.load(Ordering::Acquire);
        let reinit = marked != 0;
        if reinit {
            let due = marked != POISON_REINIT && now >= marked.saturating_add(REINIT_AFTER_SECS);
            if !due
                || patience.is_some()
                || line
                    .poisoned
                    .compare_exchange(marked, POISON_REINIT, Ordering::AcqRel, Ordering::Acquire)
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
                line.poisoned.store(now.max(1), Ordering::Release);
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
                    line.poisoned.store(now.max(1), Ordering::Release);
                    false
                } else {
                    line.poisoned
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
            locked.shard.line().poisoned.store(0, Ordering::Release);
        }
        Ok(locked)
    }
}

/// A shard whose lock this thread holds; unlocks on drop.
pub struct Locked<'a> {
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
        let seq = self.shard.seq();
        let s = seq.load(Ordering::Relaxed);
        if s & 1 == 0 {
            seq.store(s.wrapping_add(1), Ordering::Relaxed);
        }
        // Order the odd value before every write of the mutation, also when
        // it was odd already (a recovery after a writer died mid-way): the
        // wipe's writes need the fence too (checks/loom found it).
        fence(Ordering::Release);
    }

    /// The mutation is complete: make the sequence even (its writes ordered
    /// before it), then clear the mark. In that order, a holder killed
    /// between the two leaves `dirty` set (the next holder wipes the shard,
    /// needlessly but safely) rather than an odd sequence with `dirty` clear,
    /// which nobody would ever make even again.
    fn end(&mut self) {
        let seq = self.shard.seq();
        let s = seq.load(Ordering::Relaxed);
        if s & 1 != 0 {
            seq.store(s.wrapping_add(1), Ordering::Release);
        }
        self.st_mut().dirty = 0;
    }

    fn head(&self, block: u32) -> EntryHead {
        let p = self.shard.arena.payload(block, ENTRY_HEADER) as *const u32;
        // SAFETY: payload() checked 12 bytes are inside the block; p is 4-aligned
        // (8-aligned block + 4-byte header).
        let head = unsafe {
            let word = ptr::read(p.add(2));
            let (id_len, check) = split_id_word(ptr::read(p.add(1)));
            EntryHead {
                expiry: ptr::read(p),
                id_len,
                value_len: word & VALUE_LEN_MASK,
                uses: word >> USES_SHIFT,
                check,
            }
        };
        // Validate the lengths against the block before anyone slices with them.
        let total = (ENTRY_HEADER as u64) + head.id_len as u64 + head.value_len as u64;
        assert!(
            total <= (self.shard.arena.block_size(block) as u64).saturating_sub(4),
            "entry lengths exceed their block"
        );
        head
    }

    /// Set an entry's use count (a single aligned 4-byte store, so the entry
    /// is consistent at every instant). Writes nothing if it is unchanged.
    /// Only the CLOCK hand calls it, inside a mutation (readers never
    /// write the entry: their marks go to the slot, see `Index::mark_read`).
    fn set_uses(&mut self, block: u32, head: EntryHead, uses: u32) {
        if uses == head.uses {
            return;
        }
        let word = head.value_len | (uses << USES_SHIFT);
        let p = self.shard.arena.payload(block, ENTRY_HEADER) as *mut u32;
        // SAFETY: as in head(): 12 bytes of this used block, 4-aligned; the
        // lock is held.
        unsafe { ptr::write(p.add(2), word) };
    }

    fn id_of(&self, block: u32, head: EntryHead) -> &[u8] {
        let p = self.shard.arena.payload(block, ENTRY_HEADER + head.id_len);
        // SAFETY: payload() bounds-checked id_len bytes after the header; the
        // lock keeps every writer away while the slice lives.
        unsafe { std::slice::from_raw_parts(p.add(ENTRY_HEADER as usize), head.id_len as usize) }
    }

    fn value_of(&self, block: u32, head: EntryHead) -> &[u8] {
        let n = ENTRY_HEADER + head.id_len + head.value_len;
        let p = self.shard.arena.payload(block, n);
        // SAFETY: as in id_of, for the value bytes that follow the id.
        unsafe {
            std::slice::from_raw_parts(
                p.add((ENTRY_HEADER + head.id_len) as usize),
                head.value_len as usize,
            )
        }
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
        let (start, size) = self.shard.arena.free(block); // zeroes the entry's bytes
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
    pub fn wipe(&mut self) {
        // SAFETY: this guard holds the lock; the mutation made the sequence odd.
        unsafe { self.shard.reset() };
    }

    /// Remove every entry (zeroing the whole arena), counted as removals.
    pub fn flush(&mut self) {
        let n = self.st_mut().entries as u64;
        self.begin();
        self.wipe();
        self.st_mut().counters.removals += n;
        self.end();
    }

    /// Reclaim (and zero) every expired entry of the shard; returns how
    /// many. Does nothing unless something may have expired.
    pub fn sweep_expired(&mut self, now: u32) -> u32 {
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
    fn sweep_some(&mut self, now: u32) {
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
    fn advance_hand(&mut self) -> super::arena::Block {
        let mut at = self.st().hand;
        if at >= self.shard.arena.capacity() {
            at = 0;
        }
        let b = self.shard.arena.block_at(at);
        self.st_mut().hand = at + b.size;
        b
    }

    /// Free one entry's worth of room: expired entries first, then CLOCK.
    fn make_room(&mut self, now: u32) -> bool {
        if self.st_mut().min_expiry <= now && self.sweep_all(now) > 0 {
            return true;
        }
        self.evict_one(now)
    }

    /// Ensure the index can take one more entry without passing its load limit.
    fn make_index_room(&mut self, now: u32) {
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

    #[cfg(test)]
    pub fn miss_probe_groups(&self, hash: u64) -> u32 {
        self.shard
            .index
            .miss_probe_groups(Hash::split(hash, self.shard.index.groups()))
    }

    /// Copy the live value of `id` into `buf`.
    pub fn get(&mut self, hash: u64, id: &[u8], now: u32, buf: &mut [u8]) -> Result<usize, Miss> {
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
    pub fn put(
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
        // which no index slot points to yet; p is 4-aligned.
        unsafe {
            let w = p as *mut u32;
            ptr::write(w, expiry);
            // The caller refused ids longer than ID_LEN_MASK.
            ptr::write(
                w.add(1),
                id.len() as u32 | (checksum(hash, expiry, value) << 16),
            );
            // A new entry starts where an entry read once stands: one stored
            // a moment ago and not yet read (a TLS session whose client has
            // not come back yet) is not evicted before one read a while ago.
            ptr::write(w.add(2), value.len() as u32 | (USES_NEW << USES_SHIFT));
            ptr::copy_nonoverlapping(id.as_ptr(), p.add(ENTRY_HEADER as usize), id.len());
            ptr::copy_nonoverlapping(
                value.as_ptr(),
                p.add((ENTRY_HEADER as usize) + id.len()),
                value.len(),
            );
        }
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
    pub fn delete(&mut self, hash: u64, id: &[u8], now: u32) -> bool {
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
    pub fn snapshot(&self, now: u32) -> Vec<(Vec<u8>, Vec<u8>, u32)> {
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

    pub fn refuse(&mut self) {
        self.st_mut().counters.refused += 1;
    }

    /// The shard's figures; `entries` counts live entries only (an expired
    /// one awaiting its sweep is not current).
    pub fn stats(&self, now: u32) -> Stats {
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

    /// Walk the arena and the index and verify they agree. Never panics on a
    /// corrupt shard: every offset and length is checked before it is used.
    pub fn check(&self) -> Result<(), String> {
        let mut used = std::collections::HashSet::new();
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
                let p = self.shard.arena.payload(block, ENTRY_HEADER) as *const u32;
                // SAFETY: block is a used block found by the walk, so its first
                // 12 payload bytes are in bounds (MIN_BLOCK = 16); p is 4-aligned.
                let (id_len, value_len) = unsafe {
                    (
                        split_id_word(ptr::read(p.add(1))).0,
                        ptr::read(p.add(2)) & VALUE_LEN_MASK,
                    )
                };
                let total = ENTRY_HEADER as u64 + id_len as u64 + value_len as u64;
                if total > self.shard.arena.block_size(block) as u64 - 4 {
                    return Err(format!("entry at {block} is longer than its block"));
                }
            } else if c == super::table::DELETED {
                tombs += 1;
            } else if c != super::table::EMPTY {
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
