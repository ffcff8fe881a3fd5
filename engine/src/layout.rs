//! The segment layout: every `#[repr(C)]` type that lives in shared memory and
//! the [`Geometry`] that places them. Where each part of the segment lies
//! (the header, a shard's header and region, its index and arena, the read
//! stripes, the tier words) is computed here, by `Geometry`'s pointer
//! methods, and nowhere else. Inside a shard's region, the index
//! (`index.rs`) places its lines and slots, the arena (`arena.rs`) its
//! blocks, and `entry.rs` the fields of one entry, each from the base
//! pointer it is given here.
//!
//! ```text
//! offset 0                                                              total_bytes
//! +----------------+----------------------------+--------------+-----------+ ... +-----------+
//! | SegmentHeader  | ShardHeader x shard_count  | ReadStripe x | TierWords | region 0  | ... | region N-1|
//! | magic, version,| (64-aligned each: lock,    | READ_STRIPES | (256 B:   | (shard 0) |     |           |
//! | geometry, key  |  dirty mark, counters,     | (64 B each:  |  the farm |           |     |           |
//! |                |  table counts, CLOCK hand, |  hit and miss|  tier's   |           |     |           |
//! |                |  arena free lists; then    |  counts of   |  breaker, |           |     |           |
//! |                |  the sequence word alone   |  unlocked    |  counters)|           |     |           |
//! |                |  on its own cache line)    |  reads)      |           |           |     |           |
//! +----------------+----------------------------+--------------+-----------+-----------+ ... +-----------+
//!                                               ^ stripes_offset ^ tier_offset ^ regions_offset, each
//!                                                                              region shard_stride bytes
//!
//! one region:
//! +-------------------------------------------+--------------------------------+
//! | index: groups x 64-byte lines, each       | arena: arena_bytes             |
//! | [ctrl u8 x 12][pad x 4][slot u32 x 12]    | blocks holding entries:        |
//! | (SwissTable control bytes, then each      | [hdr u32][expiry u32][id_len   |
//! | slot's arena offset | read marks in its   |  :16|check:16][uses:2|0:1|     |
//! | 3 low bits; see index.rs)                 |  value_len:29][id][value]      |
//! +-------------------------------------------+--------------------------------+
//! ```
//!
//! Every pointer inside the segment is an offset, so any process may map it at
//! any address: forked children, httpd's parent after a graceful restart, and
//! the `shmcache` inspector. That is why the index is not `hashbrown::HashTable`
//! over an allocator-api2 allocator: hashbrown keeps absolute pointers to its
//! control bytes and buckets in the table value, so a table built by one
//! mapping is garbage in another mapping of the same memory. The index here
//! is the same design (SwissTable: 7-bit tags in control bytes scanned a group
//! at a time) addressed by offsets, with a fixed capacity chosen from the byte
//! budget so it never grows.

use std::mem::{align_of, size_of};
use std::sync::atomic::{AtomicU32, AtomicU64};

use super::arena::{self, ArenaHeader};
use super::error::Error;
use super::lock::ShardLock;

pub const MAGIC: [u8; 8] = *b"SOCSHM\r\n";
/// Bump on any change to a `#[repr(C)]` type here or to the region layout.
pub const LAYOUT_VERSION: u32 = 5;
/// Written last when a segment is created; a segment without it is unfinished.
pub const READY: u32 = 0x5245_4459;

/// The smallest byte budget: room for the headers, one shard and a few entries.
pub const MIN_BYTES: u64 = 8192;
/// The largest: 256 shards of nearly 4 GiB (arena offsets are `u32`).
pub const MAX_BYTES: u64 = 1 << 40;
/// Bytes of one index line: a probe group's control bytes and its slots.
pub const INDEX_LINE: u32 = 64;
/// Slots per index line (12 control bytes + 4 pad + 12 x 4 bytes = 64).
pub const LANES: u32 = 12;
/// Bytes of entry header after the block header: expiry; a word holding the
/// id length (low 16 bits) and the entry's checksum (high 16 bits; see
/// `entry::checksum`: its value, keyed by the hash of its id and by its
/// expiry, so a flipped bit in any of them is found on read); and a word
/// holding the value length (low 29 bits) and the CLOCK use count (top 2
/// bits; bit 29 is unused and written 0).
pub const ENTRY_HEADER: u32 = 12;
/// Ids are at most this long (the id length's 16 bits).
pub const ID_LEN_MASK: u32 = 0xffff;
/// The use count's place in the entry header's third word.
pub const USES_SHIFT: u32 = 30;
/// Values are under 512 MiB (`Geometry` caps the largest entry there).
pub const VALUE_LEN_MASK: u32 = (1 << 29) - 1;
/// CLOCK's state for an entry is in two places with one writer each:
/// - the use count in the entry header, written only by the lock holder
///   (a store sets `USES_NEW`, each pass of the hand takes one);
/// - the read marks in the low bits of the entry's index slot word (block
///   offsets are 8-aligned, so the 3 low bits are free), set by retrieves
///   with one `fetch_or` and no lock: `MARK_READ` by the first hit after
///   the store, `MARK_AGAIN` by a later one.
///
/// When the hand finds a count at zero it looks at the slot (the victim's
/// slot is looked up anyway): with `MARK_AGAIN` (read again since the hand
/// last looked) it takes the mark and sets the count to `USES_AGAIN`, and
/// the entry stays; otherwise the entry goes. So a fresh entry ranks with
/// one read once (in a TLS 1.3 session cache, the fresh one is its
/// client's next session and the one read once is dead; among equals the
/// hand takes the older), and only entries read again rank above both.
/// Because a mark is beside the slot and not in the entry, a reader with
/// a stale slot (its entry gone, the slot reused) marks an entry it did
/// not read, which only skews the ranking a little, and a free block stays
/// all zeros.
pub const USES_NEW: u32 = 2;
pub const USES_AGAIN: u32 = 2;
pub const USES_MAX: u32 = 3;
/// The read marks in a slot word (see `USES_NEW`).
pub const MARK_READ: u32 = 1;
pub const MARK_AGAIN: u32 = 2;
pub const MARKS: u32 = 7;
/// Shards are no smaller than this, and there are at most `MAX_SHARDS`.
/// More shards mean less lock contention between processes; a bigger shard
/// means a bigger largest entry (a quarter of its arena). 48 KiB keeps that
/// above mod_ssl's cap on a session (10 KiB of DER, `SSL_SESSION_MAX_DER`)
/// with its id: 8 shards and 15 KiB entries at the common 512000 bytes.
const MIN_SHARD_BYTES: u64 = 48 * 1024;
const MAX_SHARDS: u64 = 256;
/// Index load: at most 7 of 8 slots used (full or tombstone).
pub const LOAD_NUM: u32 = 7;
pub const LOAD_DEN: u32 = 8;

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SegmentHeader {
    pub magic: [u8; 8],
    pub layout_version: u32,
    pub header_size: u32,
    pub total_bytes: u64,
    pub shard_count: u32,
    pub shard_header_size: u32,
    pub shard_headers_offset: u64,
    pub regions_offset: u64,
    pub shard_stride: u64,
    pub slots: u32,
    pub arena_bytes: u32,
    pub max_entry_size: u32,
    pub avg_id_len: u32,
    pub avg_value_len: u32,
    pub ready: u32,
    /// SipHash-1-3 key, random per segment.
    pub hash_key: [u64; 2],
    pub created_secs: i64,
    pub reserved: [u64; 4],
}

macro_rules! define_counters {
    ($($field:ident: $key:literal, $label:literal;)*) => {
        /// Event counters of one shard (written only under its lock): one
        /// `u64` per row of `counters::counter_table`, in its order.
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default)]
        pub struct Counters {
            $(pub $field: u64,)*
        }
    };
}
crate::counters::counter_table!(define_counters);

/// One shard's header, in three parts with one owner each (the rules are
/// written once, at the top of `shard.rs`):
/// - `lock`: used by every process, only through pthread calls;
/// - `state`: everything the lock protects, reached only through the
///   guard that holds the lock (`shard::Locked`);
/// - `seq`: the words used without the lock, through atomics only.
#[repr(C, align(64))]
pub struct ShardHeader {
    pub lock: ShardLock,
    pub state: ShardState,
    /// Read without the lock by unlocked retrieves; see `Shard::get_unlocked`.
    pub seq: SeqLine,
}

/// A shard's lock-protected state.
#[repr(C)]
pub struct ShardState {
    /// Non-zero while a mutation is half done; whoever takes the lock and finds
    /// it set resets the shard (its owner died or panicked mid-way).
    pub dirty: u32,
    pub entries: u32,
    pub tombstones: u32,
    /// No live entry expires before this second (a lower bound; `u32::MAX`: none).
    pub min_expiry: u32,
    /// The expiry sweep's next index slot (see `Locked::sweep_some`), and
    /// the earliest expiry it has seen in its current pass.
    pub sweep_slot: u32,
    pub sweep_min: u32,
    pub counters: Counters,
    /// The CLOCK hand: the offset of the arena block the eviction sweep
    /// looks at next (or of the end marker: wrap to 0). Kept on a block:
    /// see `Locked::depart`.
    pub hand: u32,
    /// The allocator's free lists.
    pub arena: ArenaHeader,
}

/// A shard's sequence word, alone on its cache line so that unlocked readers
/// (who only load it) never share a line with the lock word every locked
/// operation writes. Even while the shard is consistent; odd from the first
/// write of a mutation to its last (it moves with the `dirty` mark).
///
/// The words beside it are also touched without the lock, by atomics only:
/// `out_of_service` (0: in service; else the second the shard's lock was
/// found unobtainable, or `REINIT_CLAIMED` while one process reinitialises
/// it; see `lock::OutOfService`) and `lock_timeouts` (how many operations
/// gave up on the lock).
#[repr(C, align(64))]
pub struct SeqLine {
    pub seq: AtomicU32,
    pub out_of_service: AtomicU32,
    pub lock_timeouts: AtomicU64,
}

/// `SeqLine::out_of_service` while a process reinitialises the shard.
pub const REINIT_CLAIMED: u32 = u32::MAX;

/// Hit and miss counts of the retrieves answered without a lock. Kept per
/// CPU (`sched_getcpu() % READ_STRIPES`), each on its own cache line, so two
/// processes reading on two cores never write the same line for a count.
#[repr(C, align(64))]
pub struct ReadStripe {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
}

pub const READ_STRIPES: u64 = 64;

/// Words kept for the tier behind this cache (the farm tier: its circuit
/// breaker and its counters), after the read stripes. The engine gives them
/// out zeroed and never reads them: what they mean is the other tier's
/// business, and since every process of the host maps them, any of them may
/// write anything there (a reader must treat them as untrusted).
pub const TIER_WORDS: usize = 32;

/// The tier words' place: 4 cache lines of `AtomicU64`, used only atomically.
#[repr(C, align(64))]
pub struct TierWords(pub [AtomicU64; TIER_WORDS]);

// Layout guards: a change here must come with a LAYOUT_VERSION bump.
const _: () = assert!(size_of::<SegmentHeader>() == 136);
const _: () = assert!(align_of::<ShardHeader>() == 64);
const _: () = assert!(size_of::<ShardHeader>() % 64 == 0);
const _: () = assert!(size_of::<SeqLine>() == 64);
const _: () = assert!(size_of::<ReadStripe>() == 64);
const _: () = assert!(size_of::<TierWords>() == 256);

const fn align_up(x: u64, a: u64) -> u64 {
    (x + a - 1) & !(a - 1)
}

/// Where everything is, derived from (bytes, avg id length, avg value length)
/// alone: a segment whose header does not match the geometry its own figures
/// produce is not trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub total_bytes: u64,
    pub shard_count: u32,
    pub shard_headers_offset: u64,
    /// The `ReadStripe`s, after the shard headers (fixed by the geometry,
    /// so not recorded in the segment header).
    pub stripes_offset: u64,
    /// The [`TierWords`], after the stripes (fixed by the geometry too).
    pub tier_offset: u64,
    pub regions_offset: u64,
    pub shard_stride: u64,
    /// Index slots: `LANES` per line of the index, which starts the
    /// region; the arena follows it at `arena_offset`.
    pub slots: u32,
    pub arena_offset: u64,
    pub arena_bytes: u32,
    pub max_entry_size: u32,
    pub avg_id_len: u32,
    pub avg_value_len: u32,
}

impl Geometry {
    pub fn new(bytes: u64, avg_id_len: u32, avg_value_len: u32) -> Result<Geometry, Error> {
        if bytes < MIN_BYTES {
            return Err(Error::BudgetTooSmall {
                bytes,
                min: MIN_BYTES,
            });
        }
        if bytes > MAX_BYTES {
            return Err(Error::BudgetTooLarge {
                bytes,
                max: MAX_BYTES,
            });
        }
        let avg_id_len = avg_id_len.clamp(1, 1 << 16);
        let avg_value_len = avg_value_len.clamp(1, 1 << 20);
        let shard_headers_offset = align_up(size_of::<SegmentHeader>() as u64, 64);
        let mut shard_count = 1u64;
        while shard_count * 2 <= MAX_SHARDS && bytes / (shard_count * 2) >= MIN_SHARD_BYTES {
            shard_count *= 2;
        }
        let stripes_offset = shard_headers_offset + shard_count * size_of::<ShardHeader>() as u64;
        let tier_offset = stripes_offset + READ_STRIPES * size_of::<ReadStripe>() as u64;
        let regions_offset = tier_offset + size_of::<TierWords>() as u64;
        let shard_stride = ((bytes - regions_offset) / shard_count) & !63;
        let entry = arena::block_size_for(ENTRY_HEADER + avg_id_len + avg_value_len)
            .unwrap_or(u32::MAX) as u64;
        // Solve stride = index + arena, the index costing 64/12 bytes a slot
        // (a line of 12) at 8 slots per 7 entries (and the 17/16 below).
        let (line, lanes) = (INDEX_LINE as u64, LANES as u64);
        let approx_arena = shard_stride * entry * LOAD_NUM as u64 * lanes * 16
            / (entry * LOAD_NUM as u64 * lanes * 16 + line * LOAD_DEN as u64 * 17);
        // A 1/16 margin over what the arena holds: tombstones (rebuilt away
        // at 1/16 of the limit) then never make the index, rather than the
        // arena, the thing that forces evictions.
        let want_entries = (approx_arena / entry) * 17 / 16;
        let groups = (want_entries * LOAD_DEN as u64)
            .div_ceil(LOAD_NUM as u64)
            .div_ceil(lanes)
            .max(2);
        let slots = groups * lanes;
        let arena_offset = groups * line;
        if arena_offset + 1024 > shard_stride {
            return Err(Error::BudgetTooSmall {
                bytes,
                min: MIN_BYTES,
            });
        }
        let arena_bytes = ((shard_stride - arena_offset) & !7).min(u32::MAX as u64 & !7) as u32;
        let usable = arena_bytes - arena::END_MARKER;
        let max_block = (usable / 4) & !7;
        let max_entry_size = (max_block - arena::HEADER - ENTRY_HEADER).min(VALUE_LEN_MASK);
        if max_entry_size < avg_id_len + avg_value_len {
            return Err(Error::BudgetTooSmall {
                bytes,
                min: MIN_BYTES,
            });
        }
        Ok(Geometry {
            total_bytes: bytes,
            shard_count: shard_count as u32,
            shard_headers_offset,
            stripes_offset,
            tier_offset,
            regions_offset,
            shard_stride,
            slots: slots as u32,
            arena_offset,
            arena_bytes,
            max_entry_size,
            avg_id_len,
            avg_value_len,
        })
    }

    /// The header a new segment of this geometry starts with (not yet ready).
    pub fn header(&self, hash_key: [u64; 2], created_secs: i64) -> SegmentHeader {
        SegmentHeader {
            magic: MAGIC,
            layout_version: LAYOUT_VERSION,
            header_size: size_of::<SegmentHeader>() as u32,
            total_bytes: self.total_bytes,
            shard_count: self.shard_count,
            shard_header_size: size_of::<ShardHeader>() as u32,
            shard_headers_offset: self.shard_headers_offset,
            regions_offset: self.regions_offset,
            shard_stride: self.shard_stride,
            slots: self.slots,
            arena_bytes: self.arena_bytes,
            max_entry_size: self.max_entry_size,
            avg_id_len: self.avg_id_len,
            avg_value_len: self.avg_value_len,
            ready: 0,
            hash_key,
            created_secs,
            reserved: [0; 4],
        }
    }

    /// Whether `h` describes exactly this geometry (magic and version aside).
    pub fn matches(&self, h: &SegmentHeader) -> bool {
        let mine = self.header(h.hash_key, h.created_secs);
        h.header_size == mine.header_size
            && h.total_bytes == mine.total_bytes
            && h.shard_count == mine.shard_count
            && h.shard_header_size == mine.shard_header_size
            && h.shard_headers_offset == mine.shard_headers_offset
            && h.regions_offset == mine.regions_offset
            && h.shard_stride == mine.shard_stride
            && h.slots == mine.slots
            && h.arena_bytes == mine.arena_bytes
            && h.max_entry_size == mine.max_entry_size
    }

    /// Index slots a shard may fill (full + tombstones) before it must make room.
    pub fn growth_limit(&self) -> u32 {
        (self.slots as u64 * LOAD_NUM as u64 / LOAD_DEN as u64) as u32
    }

    // Where each part lies in a mapping at `base`. Every method has the
    // same contract:
    //
    // # Safety
    // `base` is the start of a mapping of at least `self.total_bytes`
    // bytes, page-aligned (`Geometry::new` proves every part below ends
    // within `total_bytes`, and 64-aligned parts stay so).

    /// The segment header, at offset 0 (`base` need only hold a header:
    /// the caller checked the mapping's length before reading it).
    #[inline]
    pub fn header_at(base: *mut u8) -> *mut SegmentHeader {
        base.cast()
    }

    /// Shard `i`'s header (64-aligned); `i < shard_count` (asserted).
    ///
    /// # Safety
    /// As above.
    #[inline]
    pub unsafe fn shard_header(&self, base: *mut u8, i: u32) -> *mut ShardHeader {
        assert!(i < self.shard_count);
        // SAFETY: the caller's contract; the headers end at stripes_offset.
        unsafe {
            base.add(self.shard_headers_offset as usize)
                .cast::<ShardHeader>()
                .add(i as usize)
        }
    }

    /// Shard `i`'s region, where its index lines start (64-aligned:
    /// regions_offset and the stride are multiples of 64); its arena is at
    /// [`arena_at`](Self::arena_at). `i < shard_count` (asserted).
    ///
    /// # Safety
    /// As above.
    #[inline]
    pub unsafe fn region(&self, base: *mut u8, i: u32) -> *mut u8 {
        assert!(i < self.shard_count);
        // SAFETY: the caller's contract; regions end within total_bytes.
        unsafe { base.add((self.regions_offset + i as u64 * self.shard_stride) as usize) }
    }

    /// The arena of the shard whose region starts at `region`
    /// (`arena_bytes` long, 8-aligned).
    ///
    /// # Safety
    /// `region` is [`region`](Self::region)'s answer for a mapping that
    /// satisfies the contract above.
    #[inline]
    pub unsafe fn arena_at(&self, region: *mut u8) -> *mut u8 {
        // SAFETY: arena_offset + arena_bytes <= shard_stride (Geometry::new).
        unsafe { region.add(self.arena_offset as usize) }
    }

    /// Read stripe `i` (64-aligned); `i < READ_STRIPES` (asserted).
    ///
    /// # Safety
    /// As above.
    #[inline]
    pub unsafe fn stripe(&self, base: *mut u8, i: usize) -> *mut ReadStripe {
        assert!(i < READ_STRIPES as usize);
        // SAFETY: the caller's contract; the stripes end at tier_offset.
        unsafe {
            base.add(self.stripes_offset as usize)
                .cast::<ReadStripe>()
                .add(i)
        }
    }

    /// The tier words (64-aligned).
    ///
    /// # Safety
    /// As above.
    #[inline]
    pub unsafe fn tier_words(&self, base: *mut u8) -> *mut TierWords {
        // SAFETY: the caller's contract; they end at regions_offset.
        unsafe { base.add(self.tier_offset as usize).cast() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_fits_the_budget_everywhere() {
        for bytes in [
            8192u64,
            10_000,
            65_536,
            512_000,
            1 << 20,
            64 << 20,
            256 << 20,
            3 << 30,
        ] {
            let g = Geometry::new(bytes, 32, 160).unwrap();
            let end = g.regions_offset + g.shard_count as u64 * g.shard_stride;
            assert!(end <= bytes, "{bytes}: regions end at {end}");
            assert!(g.arena_offset + g.arena_bytes as u64 <= g.shard_stride);
            assert_eq!(g.slots % LANES, 0);
            assert!(g.arena_offset >= g.slots as u64 / LANES as u64 * INDEX_LINE as u64);
            assert_eq!(g.regions_offset % 64, 0);
            assert_eq!(g.shard_stride % 64, 0);
            assert!(
                g.max_entry_size >= 192,
                "{bytes}: max entry {}",
                g.max_entry_size
            );
            assert!(g.shard_count.is_power_of_two());
        }
    }

    #[test]
    fn too_small_and_too_large_are_refused() {
        assert!(matches!(
            Geometry::new(8191, 32, 160),
            Err(Error::BudgetTooSmall { .. })
        ));
        assert!(matches!(
            Geometry::new(MAX_BYTES + 1, 32, 160),
            Err(Error::BudgetTooLarge { .. })
        ));
        assert!(matches!(
            Geometry::new(8192, 32, 60_000),
            Err(Error::BudgetTooSmall { .. })
        ));
    }

    #[test]
    fn max_entry_at_common_sizes() {
        // shmcb accepts up to 13,864 B at 512000; mod_ssl caps DER at 10 KiB.
        let g = Geometry::new(512_000, 30, 150).unwrap();
        assert!(
            g.max_entry_size as usize > 10 * 1024 + 32,
            "{}",
            g.max_entry_size
        );
    }
}
