//! The two tiers as one cache: the local segment first, the farm tier (if
//! configured) behind it. Plain Rust over the engine's [`Cache`] and the
//! farm's [`Farm`]: no FFI, tested without httpd.
//!
//! - store: into the local segment; then, if that succeeded, written to the
//!   farm (before the handshake ends, never waiting for Redis's answer).
//! - retrieve: the local segment; on a local miss (not a value too large
//!   for the caller's buffer, which would be so everywhere), one bounded
//!   lookup in the farm, whose hit is copied into the local segment with its
//!   remaining lifetime, so that the next lookup is local.
//! - remove: from both.

use socache_shm_farm::{Farm, Lookup};

use crate::engine::{Cache, Error, Miss, Timestamp};

/// The local cache and the farm tier behind it.
#[derive(Clone, Copy)]
pub(crate) struct Tiers<'a> {
    pub(crate) cache: &'a Cache,
    pub(crate) farm: Option<&'a Farm>,
}

/// Where a retrieved value came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    Local,
    Farm,
}

impl Tiers<'_> {
    /// Stores locally, then shares it (a value the local segment refuses is
    /// not shared: the other hosts would refuse it too).
    pub(crate) fn store(&self, id: &[u8], value: &[u8], expiry: Timestamp) -> Result<(), Error> {
        self.cache.store(id, value, expiry)?;
        if let Some(farm) = self.farm {
            farm.store(
                self.cache.tier_words(),
                id,
                value,
                expiry.0,
                self.cache.now().0,
            );
        }
        Ok(())
    }

    /// The value of `id` copied into `buf`: its length and where it came
    /// from. `on_local_miss` hears every local miss (for the log), even when
    /// the farm then answers.
    pub(crate) fn retrieve(
        &self,
        id: &[u8],
        buf: &mut [u8],
        on_local_miss: impl FnOnce(&Miss),
    ) -> Option<(usize, Source)> {
        let miss = match self.cache.retrieve(id, buf) {
            Ok(n) => return Some((n, Source::Local)),
            Err(miss) => miss,
        };
        on_local_miss(&miss);
        if matches!(miss, Miss::BufferTooSmall { .. }) {
            return None;
        }
        let farm = self.farm?;
        match farm.retrieve(self.cache.tier_words(), id, self.cache.now().0) {
            Lookup::Hit { value, expiry_us } => {
                // Best effort: a value the local segment refuses is still an
                // answer for this lookup.
                let _ = self.cache.store(id, &value, Timestamp(expiry_us));
                let out = buf.get_mut(..value.len())?;
                out.copy_from_slice(&value);
                Some((value.len(), Source::Farm))
            }
            Lookup::Miss | Lookup::Skipped | Lookup::Failed => None,
        }
    }

    /// Removes from both tiers; whether the local segment had it.
    pub(crate) fn remove(&self, id: &[u8]) -> bool {
        if let Some(farm) = self.farm {
            farm.remove(self.cache.tier_words(), id);
        }
        self.cache.remove(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{CacheConfig, Clock, SystemClock};

    fn cache() -> Cache {
        Cache::create(&CacheConfig::new(64 * 1024)).expect("engine cache")
    }

    /// The tiers of a cache without a farm tier.
    fn local_only(cache: &Cache) -> Tiers<'_> {
        Tiers { cache, farm: None }
    }

    fn later() -> Timestamp {
        SystemClock.now().plus_secs(60)
    }

    #[test]
    fn local_only_stores_retrieves_and_removes() {
        let cache = cache();
        let tiers = local_only(&cache);
        tiers.store(b"id", b"value", later()).expect("store");
        let mut buf = [0u8; 64];
        let mut misses = 0;
        assert_eq!(
            tiers.retrieve(b"id", &mut buf, |_| misses += 1),
            Some((5, Source::Local))
        );
        assert_eq!(&buf[..5], b"value");
        assert_eq!(tiers.retrieve(b"other", &mut buf, |_| misses += 1), None);
        assert_eq!(misses, 1);
        assert!(tiers.remove(b"id"));
        assert!(!tiers.remove(b"id"));
    }

    #[test]
    fn a_value_too_large_for_the_buffer_is_a_miss_that_is_said() {
        let cache = cache();
        let tiers = local_only(&cache);
        tiers.store(b"id", &[7u8; 100], later()).expect("store");
        let mut small = [0u8; 10];
        let mut heard = None;
        assert_eq!(
            tiers.retrieve(b"id", &mut small, |m| heard = Some(format!("{m:?}"))),
            None
        );
        assert!(heard.is_some_and(|m| m.contains("BufferTooSmall")));
    }

    #[test]
    fn a_refused_local_store_is_an_error() {
        let cache = cache();
        let tiers = local_only(&cache);
        let huge = vec![1u8; 60 * 1024];
        assert!(matches!(
            tiers.store(b"id", &huge, later()),
            Err(Error::EntryTooLarge { .. })
        ));
    }
}
