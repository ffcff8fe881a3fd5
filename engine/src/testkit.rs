//! The engine's test kit (the `testkit` feature; dev-only: the engine's
//! tests and examples, engine-bench and the fuzzer enable it, the httpd
//! module does not): one copy of what they all need.
//!
//! - [`Rng`]: SplitMix64, a tiny deterministic generator (fixed seeds make
//!   every run reproducible);
//! - [`SharedPage`]: an anonymous `MAP_SHARED` page of atomic words, seen by
//!   forked children (start barriers, stop flags, counts);
//! - [`Model`]: what a cache must answer, as a `BTreeMap` with the engine's
//!   expiry rule ([`expired`]), for the property tests
//!   (`engine/tests/engine_model.rs`) and the ops fuzzer
//!   (`fuzz/fuzz_targets/ops.rs`);
//! - [`value_for`] (a value unique to a sequence number) and [`snapshot`]
//!   (what `Cache::iterate` yields, as a map).

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::atomic::AtomicU32;

use crate::{Cache, Timestamp};

/// SplitMix64: a tiny deterministic generator.
#[derive(Clone, Debug)]
pub struct Rng(pub u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform enough in `0..n` (`n > 0`) for tests.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// In `0..n` by Lemire's multiply-shift: unbiased enough for a
    /// benchmark, and no division in its loop.
    pub fn pick(&mut self, n: usize) -> usize {
        (((self.next() >> 32) * n as u64) >> 32) as usize
    }

    /// In `[0, 1)`, from the top 53 bits.
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// An anonymous `MAP_SHARED` page of [`SharedPage::WORDS`] atomic words,
/// zeroed, visible to the children forked after it was made. Unmapped on
/// drop (in each process that drops it).
pub struct SharedPage(*mut AtomicU32);

// SAFETY: the page is only used through atomics; the pointer is valid for
// the value's lifetime.
unsafe impl Send for SharedPage {}
// SAFETY: as for Send.
unsafe impl Sync for SharedPage {}

impl SharedPage {
    pub const BYTES: usize = 4096;
    pub const WORDS: usize = Self::BYTES / 4;

    /// # Panics
    /// If the page cannot be mapped.
    pub fn new() -> SharedPage {
        // SAFETY: an anonymous shared mapping of one page; no pointer in.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                Self::BYTES,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert!(
            p != libc::MAP_FAILED,
            "mmap: {}",
            std::io::Error::last_os_error()
        );
        SharedPage(p.cast())
    }

    /// Word `i` (`i < WORDS`, asserted).
    pub fn word(&self, i: usize) -> &AtomicU32 {
        assert!(i < Self::WORDS);
        // SAFETY: i < WORDS: inside the mapped, zero-initialised page, which
        // lives as long as self; 4-aligned (page-aligned base); used only
        // through atomics by every process.
        unsafe { &*self.0.add(i) }
    }
}

impl Default for SharedPage {
    fn default() -> Self {
        SharedPage::new()
    }
}

impl Drop for SharedPage {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe { libc::munmap(self.0.cast(), Self::BYTES) };
    }
}

/// The engine's expiry rule: an entry whose expiry second has come
/// (`now >= expiry`, whole seconds) is never returned.
pub fn expired(expiry: Timestamp, now: Timestamp) -> bool {
    now.as_secs() >= expiry.as_secs()
}

/// A value unique to `seq` (for `len >= 8`: it starts with `seq`), so a
/// stale or foreign value can never pass for the expected one.
pub fn value_for(seq: u64, len: usize) -> Vec<u8> {
    let mut r = Rng(seq ^ 0x5EED_0F7A_1E00);
    let mut v = Vec::with_capacity(len + 8);
    v.extend_from_slice(&seq.to_le_bytes());
    while v.len() < len {
        v.extend_from_slice(&r.next().to_le_bytes());
    }
    v.truncate(len);
    v
}

/// id -> (value, expiry second): what `Cache::iterate` should yield.
pub type LiveSet = BTreeMap<Vec<u8>, (Vec<u8>, i64)>;

/// What [`Cache::iterate`] yields, as a map; `Err(id)` if an id came twice.
pub fn snapshot(cache: &Cache) -> Result<LiveSet, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut dup = None;
    cache.iterate(&mut |id, value, expiry| {
        if out
            .insert(id.to_vec(), (value.to_vec(), expiry.as_secs()))
            .is_some()
        {
            dup = Some(id.to_vec());
        }
        ControlFlow::Continue(())
    });
    match dup {
        Some(id) => Err(id),
        None => Ok(out),
    }
}

/// One entry of the [`Model`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub value: Vec<u8>,
    pub expiry: Timestamp,
}

/// What a cache holds: the last value stored under each id. An expired one
/// stays until the cache has certainly reclaimed it (a lookup, store or
/// remove of that id); whether a cache with too little room evicted an
/// entry is the caller's business (the model never evicts).
#[derive(Clone, Debug, Default)]
pub struct Model {
    pub map: BTreeMap<Vec<u8>, Entry>,
}

impl Model {
    /// The entry a retrieve of `id` must answer at `now`.
    pub fn live(&self, id: &[u8], now: Timestamp) -> Option<&Entry> {
        self.map.get(id).filter(|e| !expired(e.expiry, now))
    }

    /// A store at `now`: an entry already expired is not stored, and
    /// whatever was there is gone.
    pub fn store(&mut self, id: &[u8], value: Vec<u8>, expiry: Timestamp, now: Timestamp) {
        if expired(expiry, now) {
            self.map.remove(id);
        } else {
            self.map.insert(id.to_vec(), Entry { value, expiry });
        }
    }

    /// A lookup of `id` at `now` that found nothing live: the cache
    /// reclaimed any expired entry of that id.
    pub fn looked_up(&mut self, id: &[u8], now: Timestamp) {
        if self.live(id, now).is_none() {
            self.map.remove(id);
        }
    }

    pub fn remove(&mut self, id: &[u8]) {
        self.map.remove(id);
    }

    pub fn clear(&mut self) {
        self.map.clear();
    }

    /// Every live entry at `now`, as [`snapshot`] gives a cache's.
    pub fn live_set(&self, now: Timestamp) -> LiveSet {
        self.map
            .iter()
            .filter(|(_, e)| !expired(e.expiry, now))
            .map(|(k, e)| (k.clone(), (e.value.clone(), e.expiry.as_secs())))
            .collect()
    }

    pub fn live_count(&self, now: Timestamp) -> u64 {
        self.map
            .values()
            .filter(|e| !expired(e.expiry, now))
            .count() as u64
    }

    /// Entries held, expired ones not yet reclaimed included.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}
