//! mod_socache_shm: a shared-memory session cache for Apache httpd 2.4.
//!
//! - [`engine`]: the pure-Rust cache (segment, arena, index, locking, expiry).
//!   It knows nothing of Apache.
//! - [`figures`]: the cache's figures as named lines (status page, inspector).
//! - [`inspect`]: what the `shmcache` inspector prints (fuzzed).
//! - [`spec`]: the `SSLSessionCache shm:...` argument parser (pure, fuzzed).
//! - `httpd` (feature `httpd`): the thin FFI layer behind the socache provider
//!   declared in `apache-glue/mod_socache_shm.c`.

pub mod engine;
pub mod figures;
pub mod inspect;
pub mod spec;

#[cfg(feature = "httpd")]
mod httpd;
