//! One entry's bytes in its arena block: the one codec of the entry
//! header, with its writer and its two readers side by side.
//!
//! ```text
//! block:  [hdr u32 (the arena's)][expiry u32][id_len:16|check:16][uses:2|0:1|value_len:29][id][value]
//!                                 ^ payload (arena::Arena::payload), ENTRY_HEADER = 12 bytes, then id and value
//! ```
//!
//! - the writer ([`write`], [`write_uses`]): the lock holder, inside a
//!   mutation (`shard.rs`, rules 1 and 2);
//! - the locked reader ([`head`], [`id`], [`value`]): the lock holder;
//!   plain reads and slices, since no one else writes the entry meanwhile;
//!   a length that does not fit its block is a bounds-check panic (the
//!   shard is then wiped by its next holder, see `Drop for Locked`);
//! - the unlocked reader ([`head_unlocked`], [`id_is_unlocked`],
//!   [`copy_value_unlocked`]): a seqlock reader (`shard.rs`, rule 5) that
//!   holds no lock; every offset and length checked, `None` instead of a
//!   panic, raw copies only, and nothing it reads is used unless the
//!   sequence check after it passes.
//!
//! [`checksum`] and [`hash_id`] are the entry's integrity and placement.

use std::hash::Hasher;
use std::ptr;

use siphasher::sip::SipHasher13;

use super::arena::Arena;
use super::layout::{ENTRY_HEADER, ID_LEN_MASK, USES_NEW, USES_SHIFT, VALUE_LEN_MASK};

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
#[inline]
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

/// Keyed SipHash-1-3 of an id with the segment's key.
#[inline]
pub(crate) fn hash_id(key: [u64; 2], id: &[u8]) -> u64 {
    let mut h = SipHasher13::new_with_keys(key[0], key[1]);
    h.write(id);
    h.finish()
}

/// An entry's header fields, decoded from its block.
#[derive(Clone, Copy, Debug)]
pub(crate) struct EntryHead {
    pub expiry: u32,
    pub id_len: u32,
    pub value_len: u32,
    /// CLOCK use count, 0..=USES_MAX.
    pub uses: u32,
    /// The entry's checksum (see [`checksum`]).
    pub check: u32,
}

impl EntryHead {
    /// The decoder: the header's three words, as stored.
    #[inline]
    fn decode(expiry: u32, id_word: u32, len_word: u32) -> EntryHead {
        EntryHead {
            expiry,
            // The id length and the checksum share the second word.
            id_len: id_word & ID_LEN_MASK,
            check: id_word >> 16,
            value_len: len_word & VALUE_LEN_MASK,
            uses: len_word >> USES_SHIFT,
        }
    }

    /// Payload bytes the entry needs: its header, id and value.
    #[inline]
    pub(crate) fn payload_len(&self) -> u64 {
        ENTRY_HEADER as u64 + self.id_len as u64 + self.value_len as u64
    }
}

/// The third header word: the value length and the use count.
#[inline]
fn len_word(value_len: u32, uses: u32) -> u32 {
    value_len | (uses << USES_SHIFT)
}

// ---------------------------------------------------------------------------
// The writer (the lock holder, inside a mutation)

/// Write a new entry (header, id, value) at `p`, the payload of a block
/// that no index slot points to yet; its use count starts at `USES_NEW`:
/// a new entry starts where an entry read once stands, so one stored a
/// moment ago and not yet read (a TLS session whose client has not come
/// back yet) is not evicted before one read a while ago.
///
/// # Safety
/// 1. `p` is 4-aligned and valid for writes of `ENTRY_HEADER + id.len() +
///    value.len()` bytes (a payload the arena bounds-checked);
/// 2. the caller holds the shard lock inside a mutation (the sequence is
///    odd, so unlocked readers discard whatever they read of it);
/// 3. `id.len() <= ID_LEN_MASK` and `value.len() <= VALUE_LEN_MASK`.
#[inline]
pub(crate) unsafe fn write(p: *mut u8, id_hash: u64, expiry: u32, id: &[u8], value: &[u8]) {
    let w = p.cast::<u32>();
    // SAFETY: (1): the three header words, then id and value, are inside
    // the payload; raw writes, no reference over bytes readers may copy.
    unsafe {
        ptr::write(w, expiry);
        ptr::write(
            w.add(1),
            id.len() as u32 | (checksum(id_hash, expiry, value) << 16),
        );
        ptr::write(w.add(2), len_word(value.len() as u32, USES_NEW));
        ptr::copy_nonoverlapping(id.as_ptr(), p.add(ENTRY_HEADER as usize), id.len());
        ptr::copy_nonoverlapping(
            value.as_ptr(),
            p.add(ENTRY_HEADER as usize + id.len()),
            value.len(),
        );
    }
}

/// Set an entry's use count (a single aligned 4-byte store, so the entry
/// is consistent at every instant). Writes nothing if it is unchanged.
///
/// # Safety
/// The caller holds the shard lock; `head` is [`head`]'s answer for the
/// used block `block` under that same lock.
#[inline]
pub(crate) unsafe fn write_uses(arena: &Arena, block: u32, head: EntryHead, uses: u32) {
    if uses == head.uses {
        return;
    }
    let p = arena.payload(block, ENTRY_HEADER).cast::<u32>();
    // SAFETY: payload() checked 12 bytes of this block, 4-aligned; the
    // lock (the caller) keeps every other writer away.
    unsafe { ptr::write(p.add(2), len_word(head.value_len, uses)) };
}

// ---------------------------------------------------------------------------
// The locked reader (the lock holder: nothing writes the entry meanwhile)

/// The header of the entry in used block `block`, as stored: its lengths
/// not yet checked against the block (see [`head`]).
///
/// # Safety
/// The caller holds the shard lock (no writer meanwhile).
#[inline]
pub(crate) unsafe fn read_head(arena: &Arena, block: u32) -> EntryHead {
    let p = arena.payload(block, ENTRY_HEADER) as *const u32;
    // SAFETY: payload() checked 12 bytes are inside the block; p is
    // 4-aligned (8-aligned block + 4-byte block header); the lock (the
    // caller) keeps writers away.
    unsafe { EntryHead::decode(ptr::read(p), ptr::read(p.add(1)), ptr::read(p.add(2))) }
}

/// The header of the entry in used block `block`, its lengths checked
/// against the block before anyone slices with them: a bounds-check panic
/// if they do not fit (a corrupt shard; see the module's doc).
///
/// # Safety
/// As [`read_head`].
#[inline]
pub(crate) unsafe fn head(arena: &Arena, block: u32) -> EntryHead {
    // SAFETY: the caller's contract.
    let head = unsafe { read_head(arena, block) };
    assert!(
        head.payload_len() <= (arena.block_size(block) as u64).saturating_sub(4),
        "entry lengths exceed their block"
    );
    head
}

/// The id of the entry in `block` whose header is `head`.
///
/// # Safety
/// The caller holds the shard lock for as long as the slice lives.
#[inline]
pub(crate) unsafe fn id(arena: &Arena, block: u32, head: EntryHead) -> &[u8] {
    let p = arena.payload(block, ENTRY_HEADER + head.id_len);
    // SAFETY: payload() bounds-checked id_len bytes after the header; the
    // lock (the caller) keeps every writer away while the slice lives.
    unsafe { std::slice::from_raw_parts(p.add(ENTRY_HEADER as usize), head.id_len as usize) }
}

/// The value of the entry in `block` whose header is `head`.
///
/// # Safety
/// As [`id`].
#[inline]
pub(crate) unsafe fn value(arena: &Arena, block: u32, head: EntryHead) -> &[u8] {
    let p = arena.payload(block, ENTRY_HEADER + head.id_len + head.value_len);
    // SAFETY: as in `id`, for the value bytes that follow the id.
    unsafe {
        std::slice::from_raw_parts(
            p.add((ENTRY_HEADER + head.id_len) as usize),
            head.value_len as usize,
        )
    }
}

// ---------------------------------------------------------------------------
// The unlocked reader (a seqlock read: lock protocol, rule 5)
//
// Each read below races with a lock holder that may be rewriting, freeing or
// zeroing the bytes meanwhile: a data race, accepted by design and confined
// to these raw reads (no reference into the segment is made, nothing read is
// trusted for memory safety: every offset and length is bounds-checked
// before it is used). What a torn read returns is thrown away: the reader
// uses an answer only if the sequence word shows no mutation ran meanwhile,
// and a hit only if its checksum matches. scripts/concurrency-checks.sh and
// scripts/tsan-suppressions.txt say how the checkers are told about it.

/// An entry's header read without the lock; `None` if `block` is not a
/// used block that can hold one (a torn or stale slot word).
#[inline]
pub(crate) fn head_unlocked(arena: &Arena, block: u32) -> Option<EntryHead> {
    let p = arena.try_payload(block, ENTRY_HEADER)? as *const u32;
    // SAFETY: try_payload checked 12 bytes of the block are in the region;
    // p is 4-aligned (8-aligned block + 4-byte header). The accepted race
    // of this section: volatile raw reads, whose values are only
    // bounds-checked before use and discarded unless the sequence check
    // passes.
    unsafe {
        Some(EntryHead::decode(
            ptr::read_volatile(p),
            ptr::read_volatile(p.add(1)),
            ptr::read_volatile(p.add(2)),
        ))
    }
}

/// Whether the entry in `block` has id `id` (lengths already equal), read
/// without the lock.
#[inline]
pub(crate) fn id_is_unlocked(arena: &Arena, block: u32, id: &[u8]) -> bool {
    let Some(p) = arena.try_payload(block, ENTRY_HEADER + id.len() as u32) else {
        return false;
    };
    // SAFETY: try_payload checked the id's bytes lie inside the block.
    let p = unsafe { p.add(ENTRY_HEADER as usize) } as *const u8;
    let mut chunks = id.chunks_exact(8);
    let mut at = 0usize;
    for c in &mut chunks {
        // SAFETY: at + 8 <= id.len(), inside the checked range; the
        // accepted race of this section (an unaligned raw read, no
        // reference into the segment; a false answer is discarded by the
        // sequence check or caught by the checksum).
        let theirs = unsafe { ptr::read_unaligned(p.add(at).cast::<[u8; 8]>()) };
        if theirs != *c {
            return false;
        }
        at += 8;
    }
    chunks.remainder().iter().enumerate().all(|(i, &b)| {
        // SAFETY: at + i < id.len(), inside the checked range; as above.
        unsafe { ptr::read_volatile(p.add(at + i)) == b }
    })
}

/// Copy the value of the entry in `block` (header `head`, read by
/// [`head_unlocked`]) into `buf`, without the lock; its length, or `None`
/// if `buf` is too small or the block cannot hold it (a torn header).
#[inline]
pub(crate) fn copy_value_unlocked(
    arena: &Arena,
    block: u32,
    head: EntryHead,
    buf: &mut [u8],
) -> Option<usize> {
    let n = head.value_len as usize;
    if n > buf.len() {
        return None;
    }
    let p = arena.try_payload(block, ENTRY_HEADER + head.id_len + head.value_len)?;
    // SAFETY: try_payload checked the id and value lie inside the block,
    // inside the region; buf holds n = value_len bytes (checked). The accepted
    // race of this section: a raw copy of bytes a lock holder may be
    // rewriting; the copy is used only if the sequence word shows no
    // mutation ran meanwhile and its checksum matches.
    unsafe {
        ptr::copy_nonoverlapping(
            p.add((ENTRY_HEADER + head.id_len) as usize),
            buf.as_mut_ptr(),
            n,
        );
    }
    Some(n)
}
