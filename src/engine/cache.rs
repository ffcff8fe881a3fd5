//! [`Cache`]: the public face of the engine.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::clock::{Clock, SystemClock, Timestamp};
use super::error::Error;

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
        CacheConfig { bytes, path: None, avg_id_len: 32, avg_value_len: 160 }
    }
}

/// What opening a file-backed segment found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Opened {
    /// No segment was there: a new, empty one was made.
    Created,
    /// A live segment with the same size and layout: its entries are kept.
    Reattached,
    /// A segment was there but could not be kept; why, for the log.
    Replaced(String),
}

/// Whether a store added a new entry or replaced one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stored {
    Inserted,
    Replaced,
}

/// A retrieve that found nothing usable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Miss {
    /// No live entry for that id.
    NotFound,
    /// An entry exists but the caller's buffer is smaller than `needed`.
    BufferTooSmall { needed: usize },
}

/// Figures of one shard or of the whole cache (the sum of its shards).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub entries: u64,
    pub bytes_total: u64,
    pub bytes_used: u64,
    pub bytes_free: u64,
    pub largest_free_block: u64,
    pub index_slots: u64,
    pub hits: u64,
    pub misses: u64,
    pub stores: u64,
    pub replacements: u64,
    pub evictions: u64,
    pub expirations: u64,
    pub removals: u64,
    pub lock_waits: u64,
    pub recoveries: u64,
    pub refused: u64,
}

/// Visitor verdict for [`Cache::iterate`].
pub use std::ops::ControlFlow;

pub struct Cache {
    clock: Arc<dyn Clock>,
}

impl Cache {
    /// A new, empty segment (anonymous, or a fresh file replacing any old one).
    pub fn create(config: &CacheConfig) -> Result<Cache, Error> {
        let _ = config;
        todo!()
    }

    /// For a file-backed config: reattach to a live segment at the path when its
    /// size and layout match, else replace it. Anonymous configs always create.
    pub fn open_or_create(config: &CacheConfig) -> Result<(Cache, Opened), Error> {
        let _ = config;
        todo!()
    }

    /// Attach to an existing file-backed segment (the inspector's way in).
    pub fn attach(path: &Path) -> Result<Cache, Error> {
        let _ = path;
        todo!()
    }

    /// A dup of the segment's file descriptor, owned by the caller; it keeps an
    /// anonymous (memfd) segment alive after this `Cache` is dropped, e.g. in
    /// httpd's process pool across a graceful restart.
    pub fn dup_fd(&self) -> Result<std::os::fd::RawFd, Error> {
        todo!()
    }

    /// Map the segment behind `fd` (from [`Cache::dup_fd`]; `fd` stays the
    /// caller's). Reattached when its size and layout match `config`;
    /// otherwise a new anonymous segment is created (`Opened::Replaced`), and
    /// the caller should close `fd` and keep the new [`Cache::dup_fd`].
    pub fn reopen_fd(
        fd: std::os::fd::RawFd,
        config: &CacheConfig,
    ) -> Result<(Cache, Opened), Error> {
        let _ = (fd, config);
        todo!()
    }

    /// Replace the clock (tests).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Cache {
        self.clock = clock;
        self
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Insert or replace. An entry already past `expiry` is not stored (Ok).
    /// Too large: `Err(Error::EntryTooLarge)`, and nothing else is touched.
    pub fn store(&self, id: &[u8], value: &[u8], expiry: Timestamp) -> Result<Stored, Error> {
        let _ = (id, value, expiry);
        todo!()
    }

    /// Copy the live value for `id` into `buf`; returns its length.
    pub fn retrieve(&self, id: &[u8], buf: &mut [u8]) -> Result<usize, Miss> {
        let _ = (id, buf);
        todo!()
    }

    /// The live value for `id`, owned.
    pub fn get(&self, id: &[u8]) -> Option<Vec<u8>> {
        let _ = id;
        todo!()
    }

    /// Remove `id`; true if a live entry was removed.
    pub fn remove(&self, id: &[u8]) -> bool {
        let _ = id;
        todo!()
    }

    /// Visit every live entry. Entries are copied out of a shard before the
    /// visitor runs, so the visitor may call back into the cache.
    pub fn iterate(
        &self,
        visit: &mut dyn FnMut(&[u8], &[u8], Timestamp) -> ControlFlow<()>,
    ) {
        let _ = visit;
        todo!()
    }

    /// Remove (and zero) every entry.
    pub fn flush(&self) {
        todo!()
    }

    /// Figures summed over all shards.
    pub fn stats(&self) -> Stats {
        todo!()
    }

    /// Figures per shard.
    pub fn shard_stats(&self) -> Vec<Stats> {
        todo!()
    }

    /// Largest id + value this cache accepts, in bytes.
    pub fn max_entry_size(&self) -> u64 {
        todo!()
    }

    pub fn shard_count(&self) -> usize {
        todo!()
    }

    /// The segment's file, when file-backed.
    pub fn path(&self) -> Option<&Path> {
        todo!()
    }

    /// Remove the segment's file (a full stop); the mapping stays valid until drop.
    pub fn unlink(&self) -> Result<(), Error> {
        todo!()
    }
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig::new(512_000)
    }
}

#[allow(dead_code)]
fn default_clock() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}
