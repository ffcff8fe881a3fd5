//! [`Cache`]: the public face of the engine.

use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::ptr;
use std::sync::Arc;

use super::clock::{Clock, SystemClock, Timestamp};
use super::error::Error;
use std::sync::atomic::{AtomicU64, Ordering};

use super::entry::hash_id;
use super::layout::{
    Geometry, ReadStripe, SegmentHeader, ID_LEN_MASK, LAYOUT_VERSION, MAGIC, READY, READ_STRIPES,
    TIER_WORDS,
};
use super::outcome::{Miss, Opened, Replacement, Stats, Stored};
use super::segment::Segment;
use super::shard::{Locked, Shard};

/// How to build a segment.
#[derive(Clone, Debug)]
pub struct CacheConfig {
    /// Total byte budget of the segment (header, index and arena included).
    pub bytes: u64,
    /// `None`: an anonymous shared segment (memfd) inherited by forked children.
    /// `Some(path)`: a file-backed segment at `path`, mode 0600.
    pub path: Option<PathBuf>,
    /// Expected id and value sizes; they size the index up front.
    pub avg_id_len: u32,
    pub avg_value_len: u32,
}

impl CacheConfig {
    /// TLS session defaults: 32-byte ids, 160-byte values.
    pub fn new(bytes: u64) -> Self {
        CacheConfig {
            bytes,
            path: None,
            avg_id_len: 32,
            avg_value_len: 160,
        }
    }
}

/// Visitor verdict for [`Cache::iterate`].
pub use std::ops::ControlFlow;

/// What [`Cache::iterate`] calls for each live entry: (id, value, expiry).
pub type Visitor<'a> = dyn FnMut(&[u8], &[u8], Timestamp) -> ControlFlow<()> + 'a;

/// A shared-memory cache over one segment. `Send + Sync`: share it between
/// threads, and fork after creating it to share it between processes.
pub struct Cache {
    segment: Segment,
    geo: Geometry,
    key: [u64; 2],
    clock: Arc<dyn Clock>,
}

// SAFETY: all shared state lives in the segment and is only touched under the
// process-shared shard locks; the rest (geometry, key, clock) is immutable.
unsafe impl Send for Cache {}
// SAFETY: as for Send: every &self method takes a shard lock before touching
// shard memory, or reads it without one only through the seqlock protocol
// (`Shard::get_unlocked`: raw reads, an accepted race validated by the
// sequence word, and no write but a hit's atomic read mark), or uses atomics
// (sequence words, read stripes, tier words), and reads the immutable
// header otherwise.
unsafe impl Sync for Cache {}

fn secs(t: Timestamp) -> u32 {
    t.as_secs().clamp(0, u32::MAX as i64) as u32
}

/// Read and check a mapped segment's header; returns the geometry it describes.
fn validate(segment: &Segment, path: &Path) -> Result<(Geometry, SegmentHeader), Error> {
    let path_buf = path.to_path_buf();
    if segment.len() < std::mem::size_of::<SegmentHeader>() as u64 {
        return Err(Error::NotASegment { path: path_buf });
    }
    // SAFETY: the mapping holds at least a header (checked above) and is
    // page-aligned; the header is plain data written once at creation.
    let h: SegmentHeader = unsafe { ptr::read_volatile(Geometry::header_at(segment.base())) };
    if h.magic != MAGIC {
        return Err(Error::NotASegment { path: path_buf });
    }
    if h.layout_version != LAYOUT_VERSION {
        return Err(Error::WrongVersion {
            path: path_buf,
            found: h.layout_version,
            expected: LAYOUT_VERSION,
        });
    }
    if h.total_bytes != segment.len() {
        return Err(Error::Corrupt {
            path: Some(path_buf),
            what: format!(
                "header says {} bytes, the file has {}",
                h.total_bytes,
                segment.len()
            ),
        });
    }
    if h.ready != READY {
        return Err(Error::Corrupt {
            path: Some(path_buf),
            what: "segment was never finished".into(),
        });
    }
    let geo = Geometry::new(h.total_bytes, h.avg_id_len, h.avg_value_len).map_err(|e| {
        Error::Corrupt {
            path: Some(path_buf.clone()),
            what: e.to_string(),
        }
    })?;
    if !geo.matches(&h) {
        return Err(Error::Corrupt {
            path: Some(path_buf),
            what: "header geometry is inconsistent".into(),
        });
    }
    Ok((geo, h))
}

fn anon_name() -> &'static Path {
    Path::new("(anonymous segment)")
}

impl Cache {
    fn from_parts(segment: Segment, geo: Geometry, key: [u64; 2]) -> Cache {
        Cache {
            segment,
            geo,
            key,
            clock: Arc::new(SystemClock),
        }
    }

    /// Write a fresh header and empty shards into a zeroed segment.
    fn initialise(segment: &Segment, geo: &Geometry, key: [u64; 2]) -> Result<(), Error> {
        let created = SystemClock.now().as_secs();
        let header = geo.header(key, created);
        // SAFETY: the segment is new (no other process can reach it yet), at
        // least geo.total_bytes long and page-aligned.
        unsafe { ptr::write(Geometry::header_at(segment.base()), header) };
        for i in 0..geo.shard_count {
            // SAFETY: the mapping is laid out by geo; nobody else uses it yet.
            let mut shard = unsafe { Shard::at(segment.base(), geo, i) };
            // SAFETY: as above: exclusive access during creation.
            unsafe { shard.init() }.map_err(|e| Error::Io {
                path: segment.path().map(Path::to_path_buf),
                op: "init lock",
                source: e,
            })?;
        }
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        // SAFETY: header written above; `ready` is a u32 field of it.
        unsafe {
            ptr::write_volatile(&raw mut (*Geometry::header_at(segment.base())).ready, READY)
        };
        Ok(())
    }

    fn random_key() -> Result<[u64; 2], Error> {
        let mut b = [0u8; 16];
        getrandom::fill(&mut b).map_err(|e| Error::Io {
            path: None,
            op: "getrandom",
            source: std::io::Error::other(e.to_string()),
        })?;
        let (a, c) = b.split_at(8);
        Ok([
            u64::from_le_bytes(a.try_into().expect("8 bytes")),
            u64::from_le_bytes(c.try_into().expect("8 bytes")),
        ])
    }

    /// A new, empty segment: anonymous, or a fresh file in a trusted
    /// directory, replacing only nothing, an empty file or an old segment
    /// (`Error::Refused` otherwise; see `segment.rs`).
    pub fn create(config: &CacheConfig) -> Result<Cache, Error> {
        Self::create_keyed(config, Self::random_key()?)
    }

    /// As [`Cache::create`] with a chosen hash key instead of a random one.
    /// Only for tests that show what a known key would allow (hash flooding).
    #[doc(hidden)]
    pub fn create_keyed(config: &CacheConfig, key: [u64; 2]) -> Result<Cache, Error> {
        let geo = Geometry::new(config.bytes, config.avg_id_len, config.avg_value_len)?;
        let segment = match &config.path {
            None => {
                let s = Segment::create_anonymous(geo.total_bytes)?;
                Self::initialise(&s, &geo, key)?;
                s
            }
            Some(p) => {
                Segment::create_file(p, geo.total_bytes, |s| Self::initialise(s, &geo, key))?
            }
        };
        Ok(Self::from_parts(segment, geo, key))
    }

    /// Attach to an existing file-backed segment (the inspector's way in).
    pub fn attach(path: &Path) -> Result<Cache, Error> {
        let segment = Segment::open_file(path)?;
        let (geo, h) = validate(&segment, path)?;
        Ok(Self::from_parts(segment, geo, h.hash_key))
    }

    /// A dup of the segment's file descriptor, owned by the caller; it keeps
    /// the segment alive after this `Cache` is dropped, e.g. in httpd's
    /// process pool across a graceful restart, and it is the only way back
    /// in ([`Cache::reopen_fd`]): a segment is never reattached by path.
    pub fn dup_fd(&self) -> Result<RawFd, Error> {
        self.segment.dup_fd()
    }

    /// Map the segment behind `fd` (from [`Cache::dup_fd`]; `fd` stays the
    /// caller's). Reattached when its size and layout match `config`, its
    /// contents check out, and, for a file-backed config, the file is still
    /// private and still at `config.path`. Otherwise a new segment is
    /// created as [`Cache::create`] would (`Opened::Replaced`), and the
    /// caller should close `fd` and keep the new [`Cache::dup_fd`].
    pub fn reopen_fd(fd: RawFd, config: &CacheConfig) -> Result<(Cache, Opened), Error> {
        let want = Geometry::new(config.bytes, config.avg_id_len, config.avg_value_len)?;
        let name = config.path.as_deref().unwrap_or(anon_name());
        let why = match Segment::reopen(fd, config.path.as_deref()) {
            Ok((_, false)) => Replacement::Moved,
            Ok((segment, true)) => match validate(&segment, name) {
                Ok((geo, h)) if geo == want => {
                    // A header can be right over garbage: walk everything first.
                    let cache = Self::from_parts(segment, geo, h.hash_key);
                    match cache.check() {
                        Ok(()) => return Ok((cache, Opened::Reattached)),
                        Err(e) => {
                            Replacement::Damaged(format!("its contents are inconsistent ({e})"))
                        }
                    }
                }
                Ok((geo, _)) => Replacement::Resized(format!(
                    "{} bytes for {}+{}-byte entries, now {} for {}+{}",
                    geo.total_bytes,
                    geo.avg_id_len,
                    geo.avg_value_len,
                    want.total_bytes,
                    want.avg_id_len,
                    want.avg_value_len
                )),
                Err(e) => Replacement::Damaged(e.to_string()),
            },
            Err(e) => Replacement::Damaged(e.to_string()),
        };
        Ok((Self::create(config)?, Opened::Replaced(why)))
    }

    /// Whether every byte of the mapping is still backed by its file (a
    /// truncated file would SIGBUS whoever touches the lost pages). httpd's
    /// parent asks before it touches a segment.
    pub fn intact(&self) -> bool {
        self.segment.intact()
    }

    /// Drop this process's descriptor of the segment; the mapping stays.
    /// For forked children: with no descriptor they cannot truncate a file
    /// segment under the others (an anonymous one is sealed anyway).
    pub fn close_fd(&self) {
        self.segment.close_fd();
    }

    /// Replace the clock (tests).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Cache {
        self.clock = clock;
        self
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    fn hash(&self, id: &[u8]) -> u64 {
        hash_id(self.key, id)
    }

    fn shard(&self, i: u32) -> Shard {
        // SAFETY: the segment is mapped for self's lifetime and laid out by geo.
        unsafe { Shard::at(self.segment.base(), &self.geo, i) }
    }

    fn shard_of(&self, hash: u64) -> u32 {
        ((hash >> 32) as u32) & (self.geo.shard_count - 1)
    }

    /// Run `f` on shard `i` with its lock held: waiting at most
    /// `LOCK_BOUND`, and answering `Error::Unavailable` at once for a shard
    /// out of service (`lock::OutOfService`; `shard.rs`, rule 6).
    fn with_shard<R>(&self, i: u32, f: impl FnOnce(&mut Locked<'_>) -> R) -> Result<R, Error> {
        let mut shard = self.shard(i);
        let now = secs(self.now());
        let mut locked = shard.lock(self.key, self.geo.growth_limit(), now, None)?;
        Ok(f(&mut locked))
    }

    /// Insert or replace. An entry already past `expiry` is not stored (Ok),
    /// and any older value for `id` is dropped. Too large:
    /// `Err(Error::EntryTooLarge)`, and nothing else is touched.
    pub fn store(&self, id: &[u8], value: &[u8], expiry: Timestamp) -> Result<Stored, Error> {
        let size = id.len() as u64 + value.len() as u64;
        let hash = self.hash(id);
        let shard = self.shard_of(hash);
        if size > self.geo.max_entry_size as u64 || id.len() > ID_LEN_MASK as usize {
            // Counted if the shard is in service; refused either way.
            let _ = self.with_shard(shard, |s| s.refuse());
            if id.len() > ID_LEN_MASK as usize {
                return Err(Error::IdTooLong {
                    len: id.len() as u64,
                    max: ID_LEN_MASK as u64,
                });
            }
            return Err(Error::EntryTooLarge {
                size,
                max: self.geo.max_entry_size as u64,
            });
        }
        let now = secs(self.now());
        self.with_shard(shard, |s| s.put(hash, id, value, secs(expiry), now))?
    }

    /// Copy the live value for `id` into `buf`; returns its length.
    pub fn retrieve(&self, id: &[u8], buf: &mut [u8]) -> Result<usize, Miss> {
        let hash = self.hash(id);
        let now = secs(self.now());
        let i = self.shard_of(hash);
        if let Some(answer) = self.shard(i).get_unlocked(hash, id, now, buf) {
            let stripe = self.my_stripe();
            let count = if answer.is_ok() {
                &stripe.hits
            } else {
                &stripe.misses
            };
            count.fetch_add(1, Ordering::Relaxed);
            return answer;
        }
        match self.with_shard(i, |s| s.get(hash, id, now, buf)) {
            Ok(answer) => answer,
            Err(Error::Unavailable { shard, first }) => Err(Miss::Unavailable { shard, first }),
            Err(_) => Err(Miss::NotFound),
        }
    }

    /// The live value for `id`, owned.
    pub fn get(&self, id: &[u8]) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; self.geo.max_entry_size as usize];
        let n = self.retrieve(id, &mut buf).ok()?;
        buf.truncate(n);
        Some(buf)
    }

    /// Remove `id`; true if a live entry was removed.
    pub fn remove(&self, id: &[u8]) -> bool {
        let hash = self.hash(id);
        let now = secs(self.now());
        self.with_shard(self.shard_of(hash), |s| s.delete(hash, id, now))
            .unwrap_or(false)
    }

    /// Visit every live entry. Entries are copied out of a shard before the
    /// visitor runs, so the visitor may call back into the cache; the copies
    /// are zeroed afterwards.
    pub fn iterate(&self, visit: &mut Visitor<'_>) {
        let now = secs(self.now());
        for i in 0..self.geo.shard_count {
            let Ok(mut entries) = self.with_shard(i, |s| s.snapshot(now)) else {
                continue;
            };
            let mut stop = false;
            for (id, value, expiry) in &entries {
                if !stop && visit(id, value, Timestamp::from_secs(*expiry as i64)).is_break() {
                    stop = true;
                }
            }
            for (id, value, _) in &mut entries {
                zero(id);
                zero(value);
            }
            if stop {
                return;
            }
        }
    }

    /// Remove (and zero) every entry.
    pub fn flush(&self) {
        self.flush_within(None);
    }

    /// As `flush`, waiting at most `patience` for each shard's lock (`None`:
    /// the usual bound, taking a stuck shard out of service).
    fn flush_within(&self, patience: Option<std::time::Duration>) {
        let now = secs(self.now());
        for i in 0..self.geo.shard_count {
            let mut shard = self.shard(i);
            let locked = shard.lock(self.key, self.geo.growth_limit(), now, patience);
            if let Ok(mut s) = locked {
                s.flush();
            }
        }
    }

    /// Zero every expired entry now, shard by shard, waiting at most
    /// `patience` for each lock (a busy shard is skipped). httpd's parent
    /// runs this from its monitor hook. Returns how many went.
    pub fn sweep_expired(&self, patience: std::time::Duration) -> u64 {
        let now = secs(self.now());
        (0..self.geo.shard_count)
            .map(|i| {
                let mut shard = self.shard(i);
                shard
                    .lock(self.key, self.geo.growth_limit(), now, Some(patience))
                    .map_or(0, |mut s| s.sweep_expired(now) as u64)
            })
            .sum()
    }

    /// Figures summed over all shards.
    pub fn stats(&self) -> Stats {
        let mut total = self
            .shard_stats()
            .iter()
            .fold(Stats::default(), |a, s| a.plus(s));
        for i in 0..READ_STRIPES as usize {
            let s = self.stripe(i);
            let (hits, misses) = (
                s.hits.load(Ordering::Relaxed),
                s.misses.load(Ordering::Relaxed),
            );
            // Saturating: any process of the host can write the stripes.
            total.hits = total.hits.saturating_add(hits);
            total.misses = total.misses.saturating_add(misses);
            total.unlocked_reads = total
                .unlocked_reads
                .saturating_add(hits.saturating_add(misses));
        }
        total
    }

    fn stripe(&self, i: usize) -> &ReadStripe {
        // SAFETY: the segment is mapped for self's lifetime and laid out by
        // geo; the stripes are only ever used through atomic operations, by
        // every process.
        unsafe { &*self.geo.stripe(self.segment.base(), i) }
    }

    /// The words kept for the tier behind this cache ([`TierWords`]): zeroed
    /// when the segment is made, shared by every process that maps it, never
    /// read by the engine.
    pub fn tier_words(&self) -> &[AtomicU64; TIER_WORDS] {
        // SAFETY: the segment is mapped for self's lifetime and laid out by
        // geo; the words are only ever used through atomic operations, by
        // every process.
        unsafe { &(*self.geo.tier_words(self.segment.base())).0 }
    }

    /// This CPU's stripe, for counting an unlocked read.
    fn my_stripe(&self) -> &ReadStripe {
        // SAFETY: no preconditions; -1 (unsupported) maps to stripe 0.
        #[cfg(not(miri))]
        let cpu = unsafe { libc::sched_getcpu() }.max(0) as usize;
        // Miri has no sched_getcpu: every thread counts in stripe 0 (the
        // counts are atomic, so only their spread over cache lines differs).
        #[cfg(miri)]
        let cpu = 0usize;
        self.stripe(cpu % READ_STRIPES as usize)
    }

    /// Figures per shard.
    pub fn shard_stats(&self) -> Vec<Stats> {
        let now = secs(self.now());
        (0..self.geo.shard_count)
            .map(|i| {
                self.with_shard(i, |s| s.stats(now))
                    .unwrap_or_else(|_| Stats {
                        lock_timeouts: self.shard(i).line().lock_timeouts.load(Ordering::Relaxed),
                        ..Stats::default()
                    })
            })
            .collect()
    }

    /// Walk every shard's arena and index and verify they agree
    /// (`Locked::check`, whose doc says when it can panic).
    pub fn check(&self) -> Result<(), String> {
        for i in 0..self.geo.shard_count {
            // A panic there (a process writing the shard without its lock
            // while it is walked) is a finding, not a crash; the shard is
            // marked for a wipe on its next use (`Drop for Locked`).
            let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.with_shard(i, |s| s.check())
            }))
            .map_err(|_| format!("shard {i}: a bounds check failed while walking it"))?;
            checked
                .map_err(|e| format!("shard {i}: {e}"))?
                .map_err(|e| format!("shard {i}: {e}"))?;
        }
        Ok(())
    }

    /// Which shard holds `id` under the hash key `key` with `shards` shards
    /// (a power of two), as the cache places it. For flooding tests.
    #[doc(hidden)]
    pub fn shard_for(key: [u64; 2], shards: usize, id: &[u8]) -> usize {
        ((hash_id(key, id) >> 32) as usize) & (shards - 1)
    }

    /// Index groups a lookup of `id` scans, to find it or to conclude it
    /// is absent (a probe-length figure, for flooding tests: it does not
    /// depend on the machine's speed or load).
    #[cfg(feature = "testkit")]
    #[doc(hidden)]
    pub fn probe_groups(&self, id: &[u8]) -> Result<u32, Error> {
        let hash = self.hash(id);
        self.with_shard(self.shard_of(hash), |s| s.probe_groups(hash, id))
    }

    /// Largest id + value this cache accepts, in bytes.
    pub fn max_entry_size(&self) -> u64 {
        self.geo.max_entry_size as u64
    }

    pub fn shard_count(&self) -> usize {
        self.geo.shard_count as usize
    }

    /// Configured size of the whole segment.
    pub fn segment_bytes(&self) -> u64 {
        self.geo.total_bytes
    }

    /// The segment's file, when file-backed.
    pub fn path(&self) -> Option<&Path> {
        self.segment.path()
    }

    /// Zero every entry and remove the segment's file (a full stop), if
    /// its path still names this segment; the mapping stays valid until
    /// drop. A file truncated under the mapping is not touched (no SIGBUS).
    pub fn unlink(&self) -> Result<bool, Error> {
        if self.intact() {
            // A stop must not wait a second per stuck shard.
            self.flush_within(Some(std::time::Duration::from_millis(50)));
        }
        self.segment.unlink()
    }
}

/// Overwrite a copy of secret bytes before it is freed.
fn zero(v: &mut [u8]) {
    for b in v.iter_mut() {
        // SAFETY: b is a valid, exclusive &mut u8; volatile keeps the store.
        unsafe { ptr::write_volatile(b, 0) };
    }
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig::new(512_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ManualClock, LOCK_BOUND};

    fn cache(bytes: u64) -> (Cache, ManualClock) {
        let clock = ManualClock::new(Timestamp::from_secs(1_000_000));
        let c = Cache::create(&CacheConfig::new(bytes))
            .unwrap()
            .with_clock(Arc::new(clock.clone()));
        (c, clock)
    }

    /// Retrieves take no lock, the first reads of an entry too; the ones
    /// that must write (an expired entry) or that meet a writer take it,
    /// and every answer is the locked one.
    #[test]
    fn unlocked_reads_answer_as_the_locked_ones() {
        let (c, clock) = cache(65_536);
        let exp = clock.now().plus_secs(10);
        c.store(b"id", b"value", exp).unwrap();
        let mut buf = [0u8; 16];
        let unlocked = |c: &Cache| c.stats().unlocked_reads;
        // A new entry: the first hit marks it read, the second marks it
        // read again (a fetch_or on its index slot each, no lock).
        for n in 1..=3 {
            assert_eq!(c.retrieve(b"id", &mut buf), Ok(5));
            assert_eq!(unlocked(&c), n, "read {n} of a new entry took the lock");
        }
        assert_eq!(&buf[..5], b"value");
        // A miss needs no lock either.
        assert_eq!(c.retrieve(b"absent", &mut buf), Err(Miss::NotFound));
        assert_eq!(unlocked(&c), 4);
        let st = c.stats();
        assert_eq!((st.hits, st.misses), (3, 1), "{st:?}");
        // Too small a buffer: the locked path says how much is needed.
        assert_eq!(
            c.retrieve(b"id", &mut buf[..2]),
            Err(Miss::BufferTooSmall { needed: 5 })
        );
        assert_eq!(unlocked(&c), 4);
        // A shard marked mid-mutation (as a dead writer leaves it) sends
        // readers to the lock, whose holder recovers the shard.
        let i = c.shard_of(c.hash(b"id"));
        let shard = c.shard(i);
        shard.seq().fetch_add(1, Ordering::Relaxed);
        assert_eq!(
            c.retrieve(b"id", &mut buf),
            Ok(5),
            "odd sequence, dirty clear"
        );
        assert_eq!(
            unlocked(&c),
            4,
            "an odd sequence must send the reader to the lock"
        );
        shard.seq().fetch_add(1, Ordering::Relaxed);
        // Expired: never returned, and reclaimed under the lock.
        assert_eq!(c.retrieve(b"id", &mut buf), Ok(5));
        assert_eq!(unlocked(&c), 5);
        clock.set(exp);
        assert_eq!(c.retrieve(b"id", &mut buf), Err(Miss::NotFound));
        assert_eq!(unlocked(&c), 5);
        assert_eq!(c.stats().entries, 0);
        assert_eq!(c.stats().expirations, 1);
    }

    /// A flipped bit in a stored value is a miss (counted, the entry wiped),
    /// whether the read takes the lock or not; `first` is set once per shard.
    #[test]
    fn a_corrupt_entry_is_a_miss_and_is_wiped() {
        let (c, clock) = cache(65_536);
        let exp = clock.now().plus_secs(100);
        let value = [0xa5u8; 100];
        let mut ids = Vec::new();
        for i in 0..2u8 {
            // Two ids of the same shard.
            let id = (0..=255u8)
                .map(|k| [i, k, 1, 2])
                .find(|id| c.shard_of(c.hash(id)) == 0)
                .unwrap();
            c.store(&id, &value, exp).unwrap();
            ids.push(id);
        }
        // Read the second one twice (both reads without the lock).
        let mut buf = [0u8; 128];
        for _ in 0..2 {
            c.retrieve(&ids[1], &mut buf).unwrap();
        }
        let len = c.segment.len() as usize;
        // SAFETY: the mapping is len bytes; this test is the only user.
        let mem = unsafe { std::slice::from_raw_parts_mut(c.segment.base(), len) };
        for id in &ids {
            let at = mem.windows(4).position(|w| w == id).unwrap() + 4 + 50;
            mem[at] ^= 0x01;
        }
        assert!(c.check().unwrap_err().contains("checksum"));
        assert_eq!(
            c.retrieve(&ids[0], &mut buf),
            Err(Miss::Corrupt { first: true })
        );
        assert_eq!(
            c.retrieve(&ids[1], &mut buf),
            Err(Miss::Corrupt { first: false })
        );
        assert_eq!(c.retrieve(&ids[1], &mut buf), Err(Miss::NotFound), "wiped");
        let st = c.stats();
        // The unlocked reads are the two good reads and the last miss: the
        // corrupt entries were sent to the lock by their checksums.
        assert_eq!(
            (st.corrupt, st.entries, st.unlocked_reads),
            (2, 0, 3),
            "{st:?}"
        );
        c.check().unwrap();
    }

    /// A lock word no mutex state explains: the first operation waits the
    /// bound and takes the shard out of service; the next ones answer at
    /// once; REINIT_AFTER_SECS later the shard is reinitialised and serves.
    #[test]
    // The bound is a timed wait of the robust process-shared mutex, which
    // miri's stand-in (lock.rs) does not model.
    #[cfg_attr(miri, ignore)]
    fn a_garbage_lock_word_takes_its_shard_out_of_service_then_back() {
        use crate::lock::REINIT_AFTER_SECS;
        let (c, clock) = cache(65_536);
        let exp = clock.now().plus_secs(100);
        c.store(b"k", b"v", exp).unwrap();
        let i = c.shard_of(c.hash(b"k"));
        let geo = c.geo;
        // SAFETY: the lock's first word (the shard header's first field),
        // inside the mapping laid out by geo; a raw write of garbage is
        // exactly what a hostile process would do.
        unsafe {
            ptr::write_volatile(
                geo.shard_header(c.segment.base(), i).cast::<u32>(),
                0x1234_5678,
            )
        };
        let t = std::time::Instant::now();
        match c.store(b"k", b"w", exp) {
            Err(Error::Unavailable { shard, first: true }) => assert_eq!(shard, i),
            other => panic!("{other:?}"),
        }
        let waited = t.elapsed();
        assert!(
            waited >= LOCK_BOUND && waited < LOCK_BOUND * 3,
            "{waited:?}"
        );
        let t = std::time::Instant::now();
        assert!(matches!(
            c.store(b"k", b"w", exp),
            Err(Error::Unavailable { first: false, .. })
        ));
        assert!(
            !c.remove(b"k"),
            "a remove on a marked shard removes nothing"
        );
        assert!(
            t.elapsed() < LOCK_BOUND / 4,
            "a marked shard answers at once"
        );
        assert_eq!(c.stats().lock_timeouts, 1);
        clock.advance_secs(REINIT_AFTER_SECS as i64);
        c.store(b"k", b"w", exp).unwrap();
        assert_eq!(c.get(b"k").as_deref(), Some(&b"w"[..]));
        let st = c.stats();
        assert!(st.recoveries >= 1, "{st:?}");
        c.check().unwrap();
    }

    /// Sizes and round counts of the tests: miri interprets every byte
    /// access, so under it the tests run smaller (same code paths).
    const fn scaled(native: u64, under_miri: u64) -> u64 {
        if cfg!(miri) {
            under_miri
        } else {
            native
        }
    }

    #[test]
    fn store_retrieve_replace_remove() {
        let (c, clock) = cache(scaled(512_000, 65_536));
        let exp = clock.now().plus_secs(300);
        assert_eq!(c.store(b"a", b"one", exp).unwrap(), Stored::Inserted);
        assert_eq!(c.get(b"a").as_deref(), Some(&b"one"[..]));
        assert_eq!(c.store(b"a", b"two!", exp).unwrap(), Stored::Replaced);
        assert_eq!(c.get(b"a").as_deref(), Some(&b"two!"[..]));
        let mut small = [0u8; 2];
        assert_eq!(
            c.retrieve(b"a", &mut small),
            Err(Miss::BufferTooSmall { needed: 4 })
        );
        assert!(c.remove(b"a"));
        assert!(!c.remove(b"a"));
        assert_eq!(c.get(b"a"), None);
        let s = c.stats();
        assert_eq!(
            (s.entries, s.stores, s.replacements, s.removals),
            (0, 2, 1, 1)
        );
        c.check().unwrap();
    }

    #[test]
    fn expiry_is_never_late() {
        let (c, clock) = cache(65_536);
        c.store(b"k", b"v", clock.now().plus_secs(2)).unwrap();
        clock.advance_secs(1);
        assert!(c.get(b"k").is_some());
        clock.advance_secs(1);
        assert!(c.get(b"k").is_none());
        assert_eq!(c.stats().expirations, 1);
        c.store(b"p", b"v", clock.now().plus_secs(-1)).unwrap();
        assert!(c.get(b"p").is_none());
        c.check().unwrap();
    }

    #[test]
    fn eviction_keeps_used_entries_and_never_fails() {
        // Under miri a smaller cache and fewer rounds (at 64 KiB and 600
        // rounds the test took 15 minutes there); still most stores evict.
        let (c, clock) = cache(scaled(65_536, 16_384));
        let exp = clock.now().plus_secs(1000);
        let v = [7u8; 160];
        let key = |i: u32| {
            let mut k = [0u8; 32];
            k[..4].copy_from_slice(&i.to_le_bytes());
            k
        };
        let preload = scaled(100, 30) as u32;
        for i in 0..preload {
            c.store(&key(i), &v, exp).unwrap();
        }
        let rounds = scaled(5000, 300) as u32;
        for i in preload..rounds {
            // Keep the first 20 hot.
            for h in 0..20 {
                assert!(c.get(&key(h)).is_some(), "hot key {h} evicted at {i}");
            }
            c.store(&key(i), &v, exp).unwrap();
            assert!(c.get(&key(i)).is_some());
        }
        let s = c.stats();
        assert!(s.evictions as u32 > rounds - 1000.min(rounds / 2), "{s:?}");
        c.check().unwrap();
    }

    #[test]
    fn oversize_is_refused_and_evicts_nothing() {
        let (c, clock) = cache(65_536);
        let exp = clock.now().plus_secs(1000);
        for i in 0..50u32 {
            c.store(&i.to_le_bytes(), &[1u8; 160], exp).unwrap();
        }
        let before = c.stats();
        let big = vec![0u8; c.max_entry_size() as usize];
        assert!(matches!(
            c.store(b"x", &big, exp),
            Err(Error::EntryTooLarge { .. })
        ));
        let after = c.stats();
        assert_eq!(before.entries, after.entries);
        assert_eq!(after.refused, 1);
        let fits = vec![0u8; c.max_entry_size() as usize - 1];
        c.store(b"x", &fits, exp).unwrap();
        assert_eq!(c.get(b"x").map(|v| v.len()), Some(fits.len()));
        c.check().unwrap();
    }

    #[test]
    fn churn_with_mixed_sizes_and_tombstones() {
        let (c, clock) = cache(scaled(256 * 1024, 128 * 1024));
        let mut x: u64 = 42;
        for round in 0..scaled(60_000, 3_000) as u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let id = (x % 3000).to_le_bytes();
            match x % 5 {
                0 => {
                    c.remove(&id);
                }
                1 => {
                    if let Some(v) = c.get(&id) {
                        assert!(v.iter().all(|b| *b == id[0]), "round {round}");
                    }
                }
                _ => {
                    let len = (x >> 40) as usize % 2000;
                    let exp = clock.now().plus_secs((x >> 20) as i64 % 50);
                    c.store(&id, &vec![id[0]; len], exp).unwrap();
                }
            }
            if round % 1000 == 0 {
                clock.advance_secs(3);
                c.check().unwrap();
            }
        }
        c.check().unwrap();
    }

    /// Figures summed from counters any process can write saturate: a
    /// hostile stripe never makes `stats` panic (debug builds: the fuzzer's
    /// inspect target found the overflow) or wrap to a small number.
    #[test]
    fn hostile_counters_saturate_the_figures() {
        let c = Cache::create(&CacheConfig::new(64 * 1024)).unwrap();
        for i in 0..2 {
            c.stripe(i).hits.store(u64::MAX, Ordering::Relaxed);
            c.stripe(i).misses.store(u64::MAX - 1, Ordering::Relaxed);
        }
        let s = c.stats();
        assert_eq!(s.hits, u64::MAX);
        assert_eq!(s.misses, u64::MAX);
        assert_eq!(s.unlocked_reads, u64::MAX);
        let big = Stats {
            stores: u64::MAX,
            entries: u64::MAX,
            ..Stats::default()
        };
        let sum = big.plus(&big);
        assert_eq!((sum.stores, sum.entries), (u64::MAX, u64::MAX));
    }

    /// The tier words start zeroed, survive a reattach, and no store, evict
    /// or flush of entries ever touches them (nor they the entries).
    #[test]
    #[cfg_attr(miri, ignore = "reattach: miri has no memfd to reopen")]
    fn tier_words_are_zeroed_shared_and_apart_from_entries() {
        let c = Cache::create(&CacheConfig::new(64 * 1024)).unwrap();
        assert!(c
            .tier_words()
            .iter()
            .all(|w| w.load(Ordering::Relaxed) == 0));
        for (i, w) in c.tier_words().iter().enumerate() {
            w.store(u64::MAX - i as u64, Ordering::Relaxed);
        }
        let exp = c.now().plus_secs(300);
        // Far more than fits: evictions in every shard.
        for i in 0..2000u32 {
            c.store(&i.to_le_bytes(), &[7u8; 150], exp).unwrap();
        }
        c.check().unwrap();
        c.flush();
        let fd = c.dup_fd().unwrap();
        drop(c);
        let (c, o) = Cache::reopen_fd(fd, &CacheConfig::new(64 * 1024)).unwrap();
        // SAFETY: the test's own dup, closed once.
        unsafe { libc::close(fd) };
        assert_eq!(o, Opened::Reattached);
        for (i, w) in c.tier_words().iter().enumerate() {
            assert_eq!(w.load(Ordering::Relaxed), u64::MAX - i as u64);
        }
        c.check().unwrap();
    }

    /// A kept segment is reattached only when it checks out; otherwise it
    /// is replaced, and the reason says why. One whose path now holds a
    /// file that is not ours is refused, not overwritten.
    #[test]
    #[cfg_attr(miri, ignore = "file segments: miri cannot mmap a file")]
    fn kept_segments_are_replaced_with_the_reason() {
        let dir = std::env::temp_dir().join(format!("shm-corrupt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("seg");
        let mut cfg = CacheConfig::new(256 * 1024);
        cfg.path = Some(path.clone());
        let fill = |c: &Cache| {
            let exp = c.now().plus_secs(300);
            for i in 0..200u32 {
                c.store(&i.to_le_bytes(), &[3u8; 150], exp).unwrap();
            }
        };
        // Reopen the kept fd; on a replacement keep the new segment's fd.
        let reopen = |fd: &mut RawFd, cfg: &CacheConfig| -> Result<(Cache, Opened), Error> {
            let (c, o) = Cache::reopen_fd(*fd, cfg)?;
            if o != Opened::Reattached {
                // SAFETY: the test's own dup, closed once.
                unsafe { libc::close(*fd) };
                *fd = c.dup_fd().unwrap();
            }
            Ok((c, o))
        };
        let reason = |o: Opened| match o {
            Opened::Replaced(why) => why.to_string(),
            other => panic!("expected Replaced, got {other:?}"),
        };
        let c = Cache::create(&cfg).unwrap();
        let mut fd = c.dup_fd().unwrap();
        fill(&c);
        drop(c);
        let (c, o) = reopen(&mut fd, &cfg).unwrap();
        assert_eq!(o, Opened::Reattached);
        assert_eq!(c.stats().entries, 200);
        drop(c);
        // Garbage over the middle of the arenas.
        let mut bytes = std::fs::read(&path).unwrap();
        let n = bytes.len();
        for (k, b) in bytes[n / 3..n / 3 + 60_000].iter_mut().enumerate() {
            *b = (k * 7 + 13) as u8;
        }
        std::fs::write(&path, &bytes).unwrap();
        let (c, o) = reopen(&mut fd, &cfg).unwrap();
        assert!(reason(o).contains("inconsistent"));
        c.check().unwrap();
        assert_eq!(c.stats().entries, 0);
        fill(&c);
        drop(c);
        // Garbage inside a free block (no entry touched) is found too.
        let mut bytes = std::fs::read(&path).unwrap();
        let n = bytes.len();
        for b in &mut bytes[n - 3000..n - 2000] {
            *b = 0x5a;
        }
        std::fs::write(&path, &bytes).unwrap();
        let (c, o) = reopen(&mut fd, &cfg).unwrap();
        assert!(reason(o).contains("stray bytes"));
        drop(c);
        // Wrong version, truncated.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[8] = 99;
        std::fs::write(&path, &bytes).unwrap();
        assert!(reason(reopen(&mut fd, &cfg).unwrap().1).contains("layout version 99"));
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        assert!(reason(reopen(&mut fd, &cfg).unwrap().1).contains("bytes, the file has"));
        // A different size is a layout change, not corruption.
        let mut bigger = cfg.clone();
        bigger.bytes = 512 * 1024;
        match reopen(&mut fd, &bigger).unwrap().1 {
            Opened::Replaced(Replacement::Resized(_)) => {}
            other => panic!("expected a resize, got {other:?}"),
        }
        // The path replaced by another segment: ours is not at the path any
        // more, so a new one is made there.
        drop(Cache::create(&bigger).unwrap());
        match reopen(&mut fd, &bigger).unwrap().1 {
            Opened::Replaced(Replacement::Moved) => {}
            other => panic!("expected Moved, got {other:?}"),
        }
        // Wrong magic: not recognisably ours, so never overwritten.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[0] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        match reopen(&mut fd, &bigger) {
            Err(Error::Refused { why, .. }) => {
                assert!(why.contains("not a mod_socache_shm segment"), "{why}")
            }
            other => panic!("expected a refusal, got {:?}", other.map(|(_, o)| o)),
        }
        assert_eq!(
            std::fs::read(&path).unwrap(),
            bytes,
            "the foreign file is intact"
        );
        // SAFETY: the test's own dup, closed once.
        unsafe { libc::close(fd) };
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Regression: CLOCK once walked index slots in order, so evictions
    /// freed slots only behind the hand and misses probed dozens of groups
    /// once a cache was full and evicting. Probe lengths must stay short.
    #[test]
    #[cfg_attr(
        miri,
        ignore = "statistics over 4 MiB and 80,000 stores: hours under miri; no concurrency in it"
    )]
    fn probe_lengths_stay_short_while_evicting() {
        let (c, clock) = cache(4 << 20);
        let exp = clock.now().plus_secs(3600);
        let key = |i: u64| {
            let mut k = [0u8; 32];
            k[..8].copy_from_slice(&i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes());
            k
        };
        let capacity = (4u64 << 20) / 216;
        let mean_probe = |c: &Cache| {
            let mut total = 0u64;
            for i in 0..20_000u64 {
                let id = key(u64::MAX - i);
                let hash = c.hash(&id);
                total += c
                    .with_shard(c.shard_of(hash), |s| s.miss_probe_groups(hash))
                    .unwrap() as u64;
            }
            total as f64 / 20_000.0
        };
        for i in 0..capacity * 9 / 10 {
            c.store(&key(i), &[7u8; 160], exp).unwrap();
        }
        let filling = mean_probe(&c);
        for i in capacity..4 * capacity {
            c.store(&key(i), &[7u8; 160], exp).unwrap();
        }
        assert!(c.stats().evictions > 2 * capacity);
        let evicting = mean_probe(&c);
        assert!(
            evicting < 4.0 && evicting < 3.0 * filling,
            "misses probe {evicting:.1} groups while evicting ({filling:.1} while filling)"
        );
        c.check().unwrap();
    }
}
