//! What the segment-patching targets (attach, inspect) share: the pristine
//! segment file they patch, and a scratch directory of their own.

use std::path::PathBuf;

use socache_shm_engine::layout::Geometry;
use socache_shm_engine::{Cache, CacheConfig, Timestamp};

/// The budget of the segments.
const BYTES: u64 = 64 * 1024;

/// The bytes of a valid `BYTES` segment file that `fill` wrote entries into
/// (it gets the cache and an expiry an hour ahead), and its geometry.
/// `target` names the scratch directory (see [`scratch`]).
pub(crate) fn pristine_segment(
    target: &str,
    fill: impl FnOnce(&Cache, Timestamp),
) -> (Vec<u8>, Geometry) {
    let path = scratch(target, "pristine");
    let _ = std::fs::remove_file(&path);
    let mut cfg = CacheConfig::new(BYTES);
    cfg.path = Some(path.clone());
    let cache = Cache::create(&cfg).expect("create");
    let exp = cache.now().plus_secs(3600);
    fill(&cache, exp);
    drop(cache);
    let bytes = std::fs::read(&path).expect("read");
    let geo = Geometry::new(BYTES, 32, 160).expect("geometry");
    (bytes, geo)
}

/// A file in this process's own directory for the fuzz target `target`
/// (segments are refused in a directory others can write, such as /tmp
/// itself).
pub(crate) fn scratch(target: &str, name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("shm-fuzz-{target}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir.join(name)
}
