//! The cache engine: one shared-memory segment holding independent shards,
//! each a robust-mutex-guarded SwissTable index over an MM-style arena, all
//! addressed by offsets. It knows nothing of Apache.
//!
//! - [`layout`]: the segment layout (drawn there) and its `#[repr(C)]` types.
//! - `segment`: the shared mapping (memfd or file).
//! - `arena`: the TLSF allocator inside a shard.
//! - `index`: the offset-addressed SwissTable index.
//! - `entry`: one entry's bytes: its codec, writer and two readers.
//! - `lock`: the process-shared robust mutex, and the out-of-service state.
//! - `seqlock`: the sequence word's halves (run by the loom model too).
//! - `shard`: the lock protocol (documented there); `shard::evict`: expiry
//!   and CLOCK eviction; `shard::fsck`: the consistency check.
//! - [`Cache`]: the public API; `outcome`: what its operations answer.
//! - [`figures`]: the cache's figures as named lines (server-status, shmcache).
//! - `testkit` (the `testkit` feature, dev-only): the RNG, the fork-shared
//!   page and the cache model of the tests, examples, bench and fuzzer.
//!
//! A later tier (a shared Redis for server farms) sits *behind* a `Cache`:
//! nothing here assumes an entry lives only in this segment, and a miss is
//! just a miss.

mod arena;
mod cache;
mod clock;
mod counters;
mod entry;
mod error;
pub mod figures;
mod index;
pub mod layout;
mod lock;
mod outcome;
mod segment;
mod seqlock;
mod shard;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use cache::{Cache, CacheConfig, ControlFlow, Visitor};
pub use clock::{Clock, ManualClock, SystemClock, Timestamp};
pub use entry::checksum;
pub use error::Error;
pub use layout::TIER_WORDS;
pub use lock::{OutOfService, LOCK_BOUND, REINIT_AFTER_SECS};
pub use outcome::{Miss, Opened, Replacement, Stats, Stored};
pub use segment::{check_replaceable, Existing};
