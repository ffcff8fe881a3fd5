//! [`Arena`]: an MM-style malloc/free whose every byte of metadata lives in
//! shared memory, addressed by `u32` offsets so any process can map it anywhere.
//!
//! It is a two-level segregated fit (TLSF) allocator: O(1) `alloc` and `free`,
//! immediate coalescing with both physical neighbours, and a good-fit search
//! that bounds fragmentation (a request never takes a block more than one
//! size class, 1/8 of its size, larger than it needs, except when splitting).
//!
//! ```text
//! arena bytes (8-aligned, `len` bytes):
//!
//!   +--------+---------------------------+--------+-------------+ ... +--------+
//!   | hdr u32| payload (used block)      | hdr u32| free block  |     | hdr u32| <- end marker:
//!   +--------+---------------------------+--------+-------------+ ... +--------+    size 0, USED
//!   ^ offset 0                                    ^ block offset             ^ len - 8
//!
//! block header (u32): size (multiple of 8, header included) | 0 | PREV_FREE | USED
//! free block:  [hdr][next_free u32][prev_free u32] ... [size u32 footer]
//! ```
//!
//! Free blocks sit in one of `FL_COUNT x SL_COUNT` doubly linked lists; two
//! bitmaps say which lists are non-empty. The metadata ([`ArenaHeader`]) is
//! kept in the shard header; the blocks in the shard's arena region.
//!
//! Every read and write is bounds-checked against the region, so a corrupt
//! arena panics (and the shard is reset by the caller) instead of writing
//! outside its region.

use std::ptr;

/// Block granularity and alignment.
pub(crate) const ALIGN: u32 = 8;
/// Bytes of block header before the payload.
pub(crate) const HEADER: u32 = 4;
/// The smallest block: header, two free-list links and a footer.
pub(crate) const MIN_BLOCK: u32 = 16;
/// Bytes at the end of the region reserved for the end marker.
pub(crate) const END_MARKER: u32 = 8;

const USED: u32 = 1;
const PREV_FREE: u32 = 2;
const FLAGS: u32 = 7;
const NIL: u32 = u32::MAX;

const SL_BITS: u32 = 3;
const SL_COUNT: usize = 1 << SL_BITS;
/// Sizes below this are mapped linearly into the first level.
const SMALL: u32 = 1 << (SL_BITS + 3);
const FL_COUNT: usize = 27;

/// The allocator's state, stored in shared memory (inside a shard header).
#[repr(C)]
pub struct ArenaHeader {
    fl_bitmap: u32,
    sl_bitmap: [u32; FL_COUNT],
    heads: [[u32; SL_COUNT]; FL_COUNT],
    /// Bytes in used blocks, headers included.
    used_bytes: u32,
    used_blocks: u32,
}

/// A view of one shard's arena: its header and its block region.
pub(crate) struct Arena {
    hdr: *mut ArenaHeader,
    base: *mut u8,
    len: u32,
}

/// What [`Arena::walk`] reports about one block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Block {
    pub offset: u32,
    pub size: u32,
    pub used: bool,
}

/// Totals from a walk of every block, for checks and figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Usage {
    pub used_bytes: u64,
    pub used_blocks: u64,
    pub free_bytes: u64,
    pub largest_free: u64,
}

fn mapping(size: u32) -> (usize, usize) {
    if size < SMALL {
        (0, (size / ALIGN) as usize)
    } else {
        let fl = 31 - size.leading_zeros();
        let sl = (size >> (fl - SL_BITS)) & (SL_COUNT as u32 - 1);
        ((fl - (SL_BITS + 3) + 1) as usize, sl as usize)
    }
}

/// Round a request up so that every block in its class is large enough.
fn round_up_class(size: u32) -> Option<u32> {
    if size < SMALL {
        Some(size)
    } else {
        let fl = 31 - size.leading_zeros();
        let step = (1u32 << (fl - SL_BITS)) - 1;
        size.checked_add(step).map(|s| s & !step)
    }
}

/// Block size for a payload of `payload` bytes.
pub(crate) fn block_size_for(payload: u32) -> Option<u32> {
    let raw = payload.checked_add(HEADER)?.checked_add(ALIGN - 1)? & !(ALIGN - 1);
    Some(raw.max(MIN_BLOCK))
}

impl Arena {
    /// # Safety
    /// `hdr` must point to an `ArenaHeader` and `base` to `len` bytes, both
    /// valid for reads and writes for the life of the `Arena`, and accessed by
    /// no one else while it is used (the shard lock is held). `base` is
    /// 8-aligned and `len` a multiple of 8.
    pub(crate) unsafe fn new(hdr: *mut ArenaHeader, base: *mut u8, len: u32) -> Arena {
        debug_assert!(len % ALIGN == 0 && (base as usize) % ALIGN as usize == 0);
        Arena { hdr, base, len }
    }

    /// Capacity in bytes for blocks (the region less the end marker).
    pub(crate) fn capacity(&self) -> u32 {
        self.len - END_MARKER
    }

    fn h(&self) -> &ArenaHeader {
        // SAFETY: `new`'s contract: hdr is valid and exclusively ours while the lock is held.
        unsafe { &*self.hdr }
    }

    fn hm(&mut self) -> &mut ArenaHeader {
        // SAFETY: as in `h`; `&mut self` makes this the only reference.
        unsafe { &mut *self.hdr }
    }

    fn rd(&self, off: u32) -> u32 {
        assert!(
            off % 4 == 0 && off.checked_add(4).is_some_and(|e| e <= self.len),
            "arena read out of bounds"
        );
        // SAFETY: off..off+4 is inside the region (checked above) and 4-aligned
        // because base is 8-aligned and off is a multiple of 4.
        unsafe { ptr::read(self.base.add(off as usize) as *const u32) }
    }

    fn wr(&mut self, off: u32, v: u32) {
        assert!(
            off % 4 == 0 && off.checked_add(4).is_some_and(|e| e <= self.len),
            "arena write out of bounds"
        );
        // SAFETY: as in `rd`.
        unsafe { ptr::write(self.base.add(off as usize).cast::<u32>(), v) }
    }

    /// Pointer to the payload of the block at `off`, valid for `len` bytes.
    pub(crate) fn payload(&self, off: u32, len: u32) -> *mut u8 {
        let size = self.block_size(off);
        assert!(
            size >= MIN_BLOCK
                && len <= size - HEADER
                && off as u64 + size as u64 <= self.capacity() as u64,
            "payload access past its block"
        );
        // SAFETY: off + HEADER + len <= off + size <= self.len (block sizes are
        // checked against the region when blocks are made).
        unsafe { self.base.add((off + HEADER) as usize) }
    }

    /// As `payload`, for a reader that holds no lock and may be handed a
    /// stale or garbage offset (see `Shard::get_unlocked`): None instead of a
    /// panic when `off` is not a used block holding `len` payload bytes.
    /// Reads only; the answer means something only if the shard's sequence
    /// word did not move meanwhile.
    pub(crate) fn try_payload(&self, off: u32, len: u32) -> Option<*mut u8> {
        if off % ALIGN != 0 || off.checked_add(HEADER).is_none_or(|e| e > self.len) {
            return None;
        }
        // SAFETY: off..off+4 is inside the region (checked) and 4-aligned. The
        // word may be being written by a lock holder in another process: a
        // data race accepted by design (a volatile raw read, no reference);
        // the value is only bounds-checked below before use, and what a
        // torn or stale one leads to is discarded by the caller's sequence
        // check (`seqlock::read_end`).
        let h = unsafe { ptr::read_volatile(self.base.add(off as usize) as *const u32) };
        let size = h & !FLAGS;
        let fits = h & USED != 0
            && size >= MIN_BLOCK
            && len <= size - HEADER
            && off as u64 + size as u64 <= self.capacity() as u64;
        // SAFETY: as in `payload`: off + HEADER + len <= off + size <= len.
        fits.then(|| unsafe { self.base.add((off + HEADER) as usize) })
    }

    pub(crate) fn block_size(&self, off: u32) -> u32 {
        self.rd(off) & !FLAGS
    }

    /// Make the whole region one free block. Zeroes nothing: callers zero
    /// what held secrets before they reset.
    pub(crate) fn reset(&mut self) {
        let end = self.capacity();
        let hm = self.hm();
        hm.fl_bitmap = 0;
        hm.sl_bitmap = [0; FL_COUNT];
        hm.heads = [[NIL; SL_COUNT]; FL_COUNT];
        hm.used_bytes = 0;
        hm.used_blocks = 0;
        // End marker: size 0, used; its PREV_FREE is set by make_free below.
        self.wr(end, USED);
        self.wr(end + 4, 0);
        self.wr(0, 0);
        self.make_free(0, end);
        self.link(0, end);
    }

    pub(crate) fn used_bytes(&self) -> u32 {
        self.h().used_bytes
    }

    /// Allocate a block with room for `payload` bytes; returns its offset.
    pub(crate) fn alloc(&mut self, payload: u32) -> Option<u32> {
        let need = block_size_for(payload)?;
        let off = match self.find_good_fit(need) {
            Some(off) => off,
            None => self.find_in_own_class(need)?,
        };
        let size = self.block_size(off);
        assert!(size >= need, "arena free list holds a block too small");
        self.unlink(off, size);
        // Split off the tail when it can stand alone.
        if size - need >= MIN_BLOCK {
            let rest = off + need;
            self.wr(off, need | (self.rd(off) & PREV_FREE) | USED);
            self.wr(rest, 0);
            self.make_free(rest, size - need);
            self.link(rest, size - need);
        } else {
            self.wr(off, size | (self.rd(off) & PREV_FREE) | USED);
            let next = off + size;
            let nh = self.rd(next);
            self.wr(next, nh & !PREV_FREE);
        }
        let got = self.block_size(off);
        let hm = self.hm();
        hm.used_bytes += got;
        hm.used_blocks += 1;
        Some(off)
    }

    /// The head of the first non-empty list whose every block is >= `need`.
    fn find_good_fit(&self, need: u32) -> Option<u32> {
        let search = round_up_class(need)?;
        let (fl, sl) = mapping(search);
        if fl >= FL_COUNT {
            return None;
        }
        let sl_map = self.h().sl_bitmap[fl] & (!0u32 << sl);
        let (fl, sl) = if sl_map != 0 {
            (fl, sl_map.trailing_zeros() as usize)
        } else {
            let fl_map = if fl + 1 >= 32 {
                0
            } else {
                self.h().fl_bitmap & (!0u32 << (fl + 1))
            };
            if fl_map == 0 {
                return None;
            }
            let fl = fl_map.trailing_zeros() as usize;
            (fl, self.h().sl_bitmap[fl].trailing_zeros() as usize)
        };
        let off = self.h().heads[fl][sl];
        assert!(off != NIL, "arena free-list bitmap out of sync");
        Some(off)
    }

    /// Fallback when no class above `need`'s holds a block: a few blocks of
    /// `need`'s own class may still be large enough (they span 1/8 of a size).
    fn find_in_own_class(&self, need: u32) -> Option<u32> {
        let (fl, sl) = mapping(need);
        if fl >= FL_COUNT {
            return None;
        }
        let mut cur = self.h().heads[fl][sl];
        for _ in 0..8 {
            if cur == NIL {
                return None;
            }
            if self.block_size(cur) >= need {
                return Some(cur);
            }
            cur = self.rd(cur + 4);
        }
        None
    }

    /// Return the block at `off`, zeroed; coalesces with free neighbours.
    /// Returns the free block it became part of: (offset, size).
    pub(crate) fn free(&mut self, off: u32) -> (u32, u32) {
        let h = self.rd(off);
        assert!(h & USED != 0, "arena double free");
        let mut start = off;
        let mut size = h & !FLAGS;
        assert!(
            size >= MIN_BLOCK && off as u64 + size as u64 <= self.capacity() as u64,
            "arena block corrupt"
        );
        {
            let hm = self.hm();
            hm.used_bytes -= size;
            hm.used_blocks -= 1;
        }
        // Zero the payload: whatever it held (a secret) does not outlive the
        // block, and free blocks are all zeros but for their links and footer,
        // which `walk` verifies.
        // SAFETY: off + size <= capacity was checked above; the block is ours.
        unsafe {
            ptr::write_bytes(
                self.base.add((off + HEADER) as usize),
                0,
                (size - HEADER) as usize,
            )
        };
        if h & PREV_FREE != 0 {
            assert!(off >= MIN_BLOCK, "arena PREV_FREE on first block");
            let psize = self.rd(off - 4);
            assert!(psize >= MIN_BLOCK && psize <= off, "arena footer corrupt");
            let prev = off - psize;
            self.unlink(prev, psize);
            start = prev;
            size += psize;
            // Leave no stale structure inside the merged block.
            self.wr(off - 4, 0);
            self.wr(off, 0);
        }
        let next = off + (h & !FLAGS);
        let nh = self.rd(next);
        if nh & USED == 0 {
            let nsize = nh & !FLAGS;
            self.unlink(next, nsize);
            size += nsize;
            self.wr(next, 0);
            self.wr(next + 4, 0);
            self.wr(next + 8, 0);
        }
        self.make_free(start, size);
        self.link(start, size);
        (start, size)
    }

    /// The block that starts at `off` (panics, like every other accessor,
    /// if `off` is not the start of a block inside the region).
    pub(crate) fn block_at(&self, off: u32) -> Block {
        let h = self.rd(off);
        let size = h & !FLAGS;
        assert!(
            size >= MIN_BLOCK && off as u64 + size as u64 <= self.capacity() as u64,
            "arena offset is not on a block"
        );
        Block {
            offset: off,
            size,
            used: h & USED != 0,
        }
    }

    /// Blocks a walk of the arena may pass (an upper bound).
    pub(crate) fn max_blocks(&self) -> u32 {
        self.capacity() / MIN_BLOCK
    }

    /// Header, footer and the next block's PREV_FREE for a free block.
    fn make_free(&mut self, off: u32, size: u32) {
        let prev_flag = self.rd(off) & PREV_FREE;
        self.wr(off, size | prev_flag);
        self.wr(off + size - 4, size);
        let next = off + size;
        let nh = self.rd(next);
        self.wr(next, nh | PREV_FREE);
    }

    fn link(&mut self, off: u32, size: u32) {
        let (fl, sl) = mapping(size);
        let head = self.h().heads[fl][sl];
        self.wr(off + 4, head);
        self.wr(off + 8, NIL);
        if head != NIL {
            self.wr(head + 8, off);
        }
        let hm = self.hm();
        hm.heads[fl][sl] = off;
        hm.fl_bitmap |= 1 << fl;
        hm.sl_bitmap[fl] |= 1 << sl;
    }

    fn unlink(&mut self, off: u32, size: u32) {
        let (fl, sl) = mapping(size);
        let next = self.rd(off + 4);
        let prev = self.rd(off + 8);
        if prev != NIL {
            self.wr(prev + 4, next);
        } else {
            assert!(self.h().heads[fl][sl] == off, "arena free list corrupt");
            self.hm().heads[fl][sl] = next;
            if next == NIL {
                let hm = self.hm();
                hm.sl_bitmap[fl] &= !(1 << sl);
                if hm.sl_bitmap[fl] == 0 {
                    hm.fl_bitmap &= !(1 << fl);
                }
            }
        }
        if next != NIL {
            self.wr(next + 8, prev);
        }
    }

    /// Visit every block in address order. Returns an error naming the first
    /// inconsistency instead of panicking (used by checks of untrusted segments).
    pub(crate) fn walk(&self, mut visit: impl FnMut(Block)) -> Result<Usage, String> {
        let mut usage = Usage::default();
        let mut off = 0u32;
        let mut prev_free = false;
        let end = self.capacity();
        while off < end {
            let h = self.rd(off);
            let size = h & !FLAGS;
            if size < MIN_BLOCK || size % ALIGN != 0 || off as u64 + size as u64 > end as u64 {
                return Err(format!("block at {off} has a bad size {size}"));
            }
            if (h & PREV_FREE != 0) != prev_free {
                return Err(format!("block at {off} has a wrong PREV_FREE flag"));
            }
            let used = h & USED != 0;
            if used {
                usage.used_bytes += size as u64;
                usage.used_blocks += 1;
            } else {
                if prev_free {
                    return Err(format!("two free blocks in a row at {off}"));
                }
                if self.rd(off + size - 4) != size {
                    return Err(format!("free block at {off} has a wrong footer"));
                }
                // SAFETY: off + size <= end was checked above, so the body
                // between the links and the footer is inside the region.
                let body = unsafe {
                    std::slice::from_raw_parts(self.base.add(off as usize + 12), size as usize - 16)
                };
                if body.iter().any(|b| *b != 0) {
                    return Err(format!("free block at {off} holds stray bytes"));
                }
                usage.free_bytes += size as u64;
                usage.largest_free = usage.largest_free.max(size as u64);
            }
            visit(Block {
                offset: off,
                size,
                used,
            });
            prev_free = !used;
            off += size;
        }
        if off != end {
            return Err("blocks overrun the arena".into());
        }
        if (self.rd(end) & PREV_FREE != 0) != prev_free || self.rd(end) & USED == 0 {
            return Err("end marker corrupt".into());
        }
        if usage.used_bytes != self.h().used_bytes as u64
            || usage.used_blocks != self.h().used_blocks as u64
        {
            return Err("used-byte accounting disagrees with the blocks".into());
        }
        // Every free block is on exactly the list its size maps to.
        let mut listed = 0u64;
        for fl in 0..FL_COUNT {
            for sl in 0..SL_COUNT {
                let mut cur = self.h().heads[fl][sl];
                let nonempty = self.h().sl_bitmap[fl] & (1 << sl) != 0;
                if nonempty != (cur != NIL) {
                    return Err(format!("bitmap disagrees with list ({fl},{sl})"));
                }
                let mut prev = NIL;
                let mut guard = 0u32;
                while cur != NIL {
                    if cur >= end || cur % ALIGN != 0 {
                        return Err(format!("free list ({fl},{sl}) points outside"));
                    }
                    let h = self.rd(cur);
                    if h & USED != 0 || mapping(h & !FLAGS) != (fl, sl) {
                        return Err(format!("free list ({fl},{sl}) holds a wrong block"));
                    }
                    if self.rd(cur + 8) != prev {
                        return Err(format!("free list ({fl},{sl}) back link broken"));
                    }
                    listed += (h & !FLAGS) as u64;
                    prev = cur;
                    cur = self.rd(cur + 4);
                    guard += 1;
                    if guard > end / MIN_BLOCK {
                        return Err(format!("free list ({fl},{sl}) loops"));
                    }
                }
            }
        }
        if listed != usage.free_bytes {
            return Err("free lists do not hold every free block".into());
        }
        Ok(usage)
    }

    /// Largest free block's payload capacity, from the bitmaps (O(1), approximate
    /// to one size class: the lower bound of the largest non-empty class).
    pub(crate) fn largest_free_hint(&self) -> u32 {
        // Bitmaps and heads come from shared memory: any value is possible,
        // so every index and offset is checked before use (a figure for the
        // status page must never panic on a damaged shard).
        let fl_map = self.h().fl_bitmap & ((1u32 << FL_COUNT) - 1);
        if fl_map == 0 {
            return 0;
        }
        let fl = 31 - fl_map.leading_zeros() as usize;
        let sl_map = self.h().sl_bitmap[fl] & ((1u32 << SL_COUNT) - 1);
        if sl_map == 0 {
            return 0;
        }
        let sl = 31 - sl_map.leading_zeros() as usize;
        let mut best = 0;
        let mut cur = self.h().heads[fl][sl];
        let mut n = 0;
        while n < 64 && cur % ALIGN == 0 && cur < self.capacity() {
            best = best.max(self.block_size(cur));
            cur = self.rd(cur + 4);
            n += 1;
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Region {
        hdr: Box<ArenaHeader>,
        mem: Vec<u64>,
    }

    fn region(bytes: usize) -> Region {
        Region {
            hdr: Box::new(ArenaHeader {
                fl_bitmap: 0,
                sl_bitmap: [0; FL_COUNT],
                heads: [[0; SL_COUNT]; FL_COUNT],
                used_bytes: 0,
                used_blocks: 0,
            }),
            mem: vec![0; bytes / 8],
        }
    }

    fn arena(r: &mut Region) -> Arena {
        let len = (r.mem.len() * 8) as u32;
        // SAFETY: the box and vec outlive the arena in every test and nothing else touches them.
        let mut a = unsafe { Arena::new(&raw mut *r.hdr, r.mem.as_mut_ptr().cast::<u8>(), len) };
        a.reset();
        a
    }

    #[test]
    fn mapping_is_monotonic_and_rounding_fits() {
        let mut last = (0, 0);
        for size in (16..1 << 20).step_by(8) {
            let m = mapping(size);
            assert!(m >= last, "mapping not monotonic at {size}");
            last = m;
            let r = round_up_class(size).unwrap();
            assert!(r >= size);
            // Every block in r's class is >= size.
            let (fl, sl) = mapping(r);
            let lower = if fl == 0 {
                (sl as u32) * ALIGN
            } else {
                let f = fl as u32 + SL_BITS + 2;
                (1 << f) + (sl as u32) * (1 << (f - SL_BITS))
            };
            assert!(lower >= size, "class lower bound {lower} < {size}");
        }
    }

    #[test]
    fn alloc_free_coalesces_back_to_one_block() {
        let mut r = region(64 * 1024);
        let mut a = arena(&mut r);
        let cap = a.capacity();
        let mut offs = Vec::new();
        while let Some(o) = a.alloc(200) {
            offs.push(o);
        }
        assert!(offs.len() as u32 >= cap / 216 - 1);
        a.walk(|_| {}).unwrap();
        // Free in an interleaved order.
        for o in offs.iter().step_by(2) {
            a.free(*o);
        }
        a.walk(|_| {}).unwrap();
        for o in offs.iter().skip(1).step_by(2) {
            a.free(*o);
        }
        let u = a.walk(|_| {}).unwrap();
        assert_eq!(u.used_bytes, 0);
        assert_eq!(u.largest_free, cap as u64);
    }

    #[test]
    fn exhaustion_returns_none_and_oversize_fails() {
        let mut r = region(4096);
        let mut a = arena(&mut r);
        assert!(a.alloc(5000).is_none());
        assert!(a.alloc(u32::MAX - 2).is_none());
        let o = a.alloc(4096 - 8 - HEADER - 8).unwrap();
        assert!(a.alloc(8).is_none());
        a.free(o);
        assert!(a.alloc(8).is_some());
    }

    #[test]
    fn random_churn_keeps_invariants() {
        let mut r = region(256 * 1024);
        let mut a = arena(&mut r);
        let mut live: Vec<(u32, u32)> = Vec::new();
        let mut x: u64 = 0x9e3779b97f4a7c15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if live.len() > 50 && x % 3 == 0 {
                let i = (x >> 8) as usize % live.len();
                let (o, _) = live.swap_remove(i);
                a.free(o);
            } else {
                let n = (x >> 20) as u32 % 3000;
                if let Some(o) = a.alloc(n) {
                    assert!(a.block_size(o) >= n + HEADER);
                    // Fill to detect overlap.
                    let p = a.payload(o, n);
                    // SAFETY: payload returned a pointer valid for n bytes.
                    unsafe { ptr::write_bytes(p, (o % 251) as u8, n as usize) };
                    live.push((o, n));
                } else if let Some((o, _)) = live.pop() {
                    a.free(o);
                }
            }
        }
        a.walk(|_| {}).unwrap();
        for (o, n) in &live {
            let p = a.payload(*o, *n);
            // SAFETY: as above.
            let s = unsafe { std::slice::from_raw_parts(p, *n as usize) };
            assert!(
                s.iter().all(|b| *b == (o % 251) as u8),
                "overlapping blocks"
            );
        }
    }
}
