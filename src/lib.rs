//! mod_socache_shm: a shared-memory session cache for Apache httpd 2.4, as
//! an httpd module.
//!
//! - [`engine`]: the cache itself, the `socache-shm-engine` crate (engine/):
//!   segment, arena, index, locking, expiry, figures. It knows nothing of
//!   Apache; re-exported here for the integration tests.
//! - [`spec`]: the `SSLSessionCache shm:...` argument parser (pure, fuzzed).
//! - `httpd` (feature `httpd`): the socache provider declared in
//!   `apache-glue/mod_socache_shm.c`: thin FFI callbacks (`provider`) over
//!   the instance, its segment and its two tiers.
//!
//! The `shmcache` inspector (shmcache/) and `engine-bench` (engine-bench/)
//! are crates of their own: the module links only what it uses.

pub use socache_shm_engine as engine;
pub mod spec;

#[cfg(feature = "httpd")]
mod httpd;
