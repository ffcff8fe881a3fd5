//! The cache engine: a shared-memory segment holding sharded, locked,
//! offset-addressed hash tables over an MM-style arena. Knows nothing of Apache.
//! (Layout and lock protocol: see the doc below, filled in with the code.)

mod cache;
mod clock;
mod error;

pub use cache::{Cache, CacheConfig, ControlFlow, Miss, Opened, Stats, Stored};
pub use clock::{Clock, ManualClock, SystemClock, Timestamp};
pub use error::Error;
