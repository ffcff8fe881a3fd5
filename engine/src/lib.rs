//! The cache engine: one shared-memory segment holding independent shards,
//! each a robust-mutex-guarded SwissTable index over an MM-style arena, all
//! addressed by offsets. It knows nothing of Apache.
//!
//! - [`layout`]: the segment layout (drawn there) and its `#[repr(C)]` types.
//! - `segment`: the shared mapping (memfd or file).
//! - `arena`: the TLSF allocator inside a shard.
//! - `table`: the offset-addressed SwissTable index.
//! - `lock`: the process-shared robust mutex.
//! - `shard`: the lock protocol, expiry and CLOCK eviction (documented there).
//! - [`Cache`]: the public API; `outcome`: what its operations answer.
//! - [`figures`]: the cache's figures as named lines (server-status, shmcache).
//!
//! A later tier (a shared Redis for server farms) sits *behind* a `Cache`:
//! nothing here assumes an entry lives only in this segment, and a miss is
//! just a miss.

mod arena;
mod cache;
mod clock;
mod counters;
mod error;
pub mod figures;
pub mod layout;
mod lock;
mod outcome;
mod segment;
mod shard;
mod table;

pub use cache::{Cache, CacheConfig, ControlFlow, Visitor};
pub use clock::{Clock, ManualClock, SystemClock, Timestamp};
pub use error::Error;
pub use layout::TIER_WORDS;
pub use outcome::{Miss, Opened, Replacement, Stats, Stored};
pub use segment::{check_replaceable, Existing};
pub use shard::{checksum, LOCK_BOUND, REINIT_AFTER_SECS};
