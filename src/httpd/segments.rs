//! Where an instance's segment comes from, and which paths it may use.
//!
//! # May this path be used?
//!
//! Decided at `create` (so `apachectl -t` says it) by [`check_path`], the
//! one caller of all four checks:
//! 1. `spec::validate`: the path is not a directory, and its directory
//!    exists and this process may write there (the message operators know
//!    from shmcb);
//! 2. [`crate::engine::check_replaceable`] (engine/src/segment.rs has the
//!    rules): the directory is trusted (owned by root or the user httpd
//!    starts as, not writable by group or others) and what is at the path
//!    is nothing, an empty file or an old segment of ours: never someone
//!    else's file. Skipped when this server already keeps the segment's
//!    descriptor (a restart reattaches through it and never opens the path);
//! 3. [`pools::claim_path`]: no other instance of this configuration uses
//!    the same file.
//!
//! # Opening, at `init`
//!
//! A segment's descriptor is kept in httpd's process pool ([`FdSlot`], by
//! path for a file, by consumer name and ordinal for a memfd), so a restart
//! reattaches to the live segment through it ([`open`]): entries survive a
//! graceful restart. A start (no descriptor kept) makes a new segment,
//! replacing what was at the path. Children drop every descriptor at
//! `child_init` (module `hooks`).

use std::ffi::c_int;
use std::path::Path;

use super::bindings::{self as b, apr_pool_t, server_rec};
use super::codes::{InitError, EGENERAL};
use super::log::{log, Level};
use super::pools::{self, FdSlot};
use crate::engine::{Cache, CacheConfig, Error, Existing, Opened, Replacement};
use crate::spec::{self, CacheSpec};

/// The process-pool key of a file segment's descriptor.
fn file_slot_key(path: &Path) -> String {
    format!("socache_shm:file:{}", path.display())
}

/// Every check of the configured path, at `create` (module doc). `owner`
/// identifies the instance claiming it.
///
/// # Safety
/// `pconf` is httpd's configuration pool.
pub(crate) unsafe fn check_path(
    spec: &CacheSpec,
    pconf: *mut apr_pool_t,
    owner: *const std::ffi::c_void,
) -> Result<(), String> {
    spec::validate(spec).map_err(|e| e.to_string())?;
    let Some(path) = &spec.path else {
        return Ok(());
    };
    // SAFETY: ap_pglobal is httpd's process pool (set before any
    // configuration is read, valid until the process exits).
    let kept = unsafe { FdSlot::get(b::ap_pglobal, &file_slot_key(path)) }
        .and_then(|slot| slot.fd())
        .is_some();
    if !kept {
        crate::engine::check_replaceable(path).map_err(|e| format!("Invalid argument: {e}"))?;
    }
    // SAFETY: `pconf` is the configuration pool (caller); `owner` is only
    // compared.
    if !unsafe { pools::claim_path(pconf, &path.to_string_lossy(), owner) } {
        return Err(format!(
            "Invalid argument: {} is already the segment of another socache instance; give each cache its own file",
            path.display()
        ));
    }
    Ok(())
}

/// A mapped segment, what was done to get it, and how loudly to say so: a
/// segment replaced because it was damaged or foreign (not because the
/// configured size changed) is worth the operator's attention at the
/// default LogLevel.
pub(crate) struct Opening {
    pub(crate) cache: Cache,
    pub(crate) what: String,
    pub(crate) level: Level,
    /// The process-pool slot that keeps its descriptor.
    pub(crate) slot: *mut c_int,
}

/// The instance's segment: reattached through the kept descriptor, or made
/// (and its descriptor kept).
///
/// # Safety
/// `s` is valid; the parent is single-threaded (init).
pub(crate) unsafe fn open(
    config: &CacheConfig,
    cname: &str,
    s: *const server_rec,
) -> Result<Opening, InitError> {
    let no_slot = || InitError::new(EGENERAL, "cannot keep the segment in the process pool");
    // SAFETY: `s` valid (caller).
    let (process_pool, pconf) = unsafe { pools::pools_of(s) }
        .ok_or_else(|| InitError::new(EGENERAL, "the server has no process pools"))?;
    // Distinct instances with one consumer name get distinct memfd slots,
    // in configuration order (stable across restarts).
    // SAFETY: `pconf` is httpd's configuration pool.
    let ordinal = unsafe { pools::next_ordinal(pconf, cname) }.unwrap_or(0);
    let memfd_key = format!("socache_shm:memfd:{cname}:{ordinal}");
    // SAFETY: `process_pool` is httpd's process pool.
    let memfd = unsafe { FdSlot::get(process_pool, &memfd_key) };
    match &config.path {
        Some(path) => {
            // This slot's consumer moved from anonymous to a file: release
            // the anonymous segment it kept.
            if let Some(slot) = &memfd {
                slot.replace(None);
            }
            // SAFETY: `process_pool` is httpd's process pool.
            let slot =
                unsafe { FdSlot::get(process_pool, &file_slot_key(path)) }.ok_or_else(no_slot)?;
            open_file_segment(config, path, &slot)
        }
        None => {
            let slot = memfd.ok_or_else(no_slot)?;
            open_anonymous_segment(config, &slot, s, cname)
        }
    }
}

/// A file-backed segment: reattach through the descriptor kept in `slot`
/// (a restart), or make one at `path` (a start), keeping its descriptor.
fn open_file_segment(
    config: &CacheConfig,
    path: &Path,
    slot: &FdSlot,
) -> Result<Opening, InitError> {
    let mut level = Level::Info;
    let shown = path.display();
    let (cache, what) = match slot.fd() {
        Some(fd) => match reopen_kept(fd, config, slot, &format!("segment {shown}"))? {
            Ok(opening) => return Ok(opening),
            Err(e) => {
                // A restart must not stop the server over what was
                // put at the path: serve from a new anonymous
                // segment (kept in the same slot) until it is fixed.
                let anon = CacheConfig {
                    path: None,
                    ..config.clone()
                };
                let cache = Cache::create(&anon)?;
                slot.replace(Some(cache.dup_fd()?));
                level = Level::Err;
                (
                    cache,
                    format!("cannot make a segment at {shown} ({e}); serving from a new anonymous segment instead (not visible to shmcache)"),
                )
            }
        },
        None => {
            // A start: whatever is at the path was not made by this
            // server (or not by this run of it), so it is replaced,
            // never reattached (see engine/src/segment.rs, rule 4).
            let found = crate::engine::check_replaceable(path)?;
            let cache = Cache::create(config)?;
            slot.replace(Some(cache.dup_fd()?));
            let what = match found {
                Existing::OurSegment => {
                    level = Level::Warning;
                    format!("replaced the segment {shown} found at start with an empty one (a start never reattaches to a file this server did not make in this run)")
                }
                Existing::EmptyFile => {
                    format!("created file-backed segment {shown} over an empty file")
                }
                Existing::Nothing => format!("created file-backed segment {shown}"),
            };
            (cache, what)
        }
    };
    Ok(Opening {
        cache,
        what,
        level,
        slot: slot.as_ptr(),
    })
}

/// Reopen the segment kept in `slot` (`name` says which, for the log):
/// reattached, or replaced with the reason and the new descriptor kept.
/// The engine's refusal is passed back for the caller's fallback.
fn reopen_kept(
    fd: c_int,
    config: &CacheConfig,
    slot: &FdSlot,
    name: &str,
) -> Result<Result<Opening, Error>, InitError> {
    let (cache, opened) = match Cache::reopen_fd(fd, config) {
        Ok(pair) => pair,
        Err(e) => return Ok(Err(e)),
    };
    if opened == Opened::Reattached {
        return Ok(Ok(Opening {
            cache,
            what: format!("reattached to the live {name} (entries kept)"),
            level: Level::Info,
            slot: slot.as_ptr(),
        }));
    }
    slot.replace(Some(cache.dup_fd()?));
    let why = match opened {
        Opened::Replaced(why) => why,
        _ => Replacement::Moved,
    };
    Ok(Ok(Opening {
        cache,
        what: format!("replaced the {name} with an empty one: {why}"),
        level: replacement_level(&why),
        slot: slot.as_ptr(),
    }))
}

/// An anonymous segment: reattach to the memfd kept in `slot`, or make one
/// and keep it there.
fn open_anonymous_segment(
    config: &CacheConfig,
    slot: &FdSlot,
    s: *const server_rec,
    cname: &str,
) -> Result<Opening, InitError> {
    if let Some(fd) = slot.fd() {
        match reopen_kept(fd, config, slot, "anonymous segment")? {
            Ok(opening) => return Ok(opening),
            Err(e) => {
                log!(s, Level::Warning, "SHM0301", "cache {cname:?}: cannot reopen the kept anonymous segment ({e}); creating a new one");
            }
        }
    }
    let cache = Cache::create(config)?;
    slot.replace(Some(cache.dup_fd()?));
    Ok(Opening {
        cache,
        what: "created anonymous segment".to_string(),
        level: Level::Info,
        slot: slot.as_ptr(),
    })
}

/// Info for a segment replaced because the configured size or layout
/// changed (an operator's doing); warning for one that was damaged, moved
/// or of another layout version.
pub(crate) fn replacement_level(why: &Replacement) -> Level {
    match why {
        Replacement::Resized(_) => Level::Info,
        Replacement::Moved | Replacement::Damaged(_) => Level::Warning,
    }
}

/// At a full stop: remove the segment's file, if it still is ours.
pub(crate) fn remove_at_stop(cache: &Cache, s: *const server_rec) {
    let Some(path) = cache.path() else {
        return;
    };
    match cache.unlink() {
        Ok(false) => log!(
            s,
            Level::Warning,
            "SHM0302",
            "left {} alone at stop: it is no longer the segment this server made",
            path.display()
        ),
        Ok(true) => log!(
            s,
            Level::Info,
            "SHM0303",
            "removed segment file {} (server stopping)",
            path.display()
        ),
        Err(e) => log!(
            s,
            Level::Warning,
            "SHM0304",
            "cannot remove segment file {}: {e}",
            path.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A resize is logged at info, a damaged or moved segment at warning:
    /// the engine's reason, an enum, not matched text.
    #[test]
    fn replacement_reasons_choose_the_log_level() {
        assert_eq!(
            replacement_level(&Replacement::Resized("64K to 128K".into())),
            Level::Info
        );
        assert_eq!(replacement_level(&Replacement::Moved), Level::Warning);
        assert_eq!(
            replacement_level(&Replacement::Damaged("bad magic".into())),
            Level::Warning
        );
    }
}
