//! The socache provider's callbacks, as declared in
//! `apache-glue/socache_shm_rust.h` and put in the `ap_socache_provider_t`
//! of `apache-glue/mod_socache_shm.c`.
//!
//! Lifecycle (httpd 2.4), and what each step does here:
//!
//! ```text
//!  parent: read config ──► create   parse + validate the argument, allocate
//!                                   the Instance, free it in a pconf cleanup
//!          post_config ──► init     map the segment: reopen the descriptor
//!                                   kept in the process pool (memfd or file),
//!                                   or create a segment and keep its fd
//!          fork children            they inherit the mapping
//!  child:  child_init  ──► close every segment descriptor (the mapping stays)
//!          requests    ──► store / retrieve / remove / iterate / status
//!  parent: monitor     ──► (about every 10 s) zero expired entries
//!  parent: restart     ──► destroy  unmap (pconf cleared), DSO unloaded,
//!                                   then create/init again: reattach
//!          full stop   ──► destroy  unmap, and unlink the segment file
//! ```
//!
//! httpd runs config + post_config twice at startup and again on every
//! restart, and a consumer may call `init` once per virtual host on one
//! instance: `create` and `init` are idempotent and never leak a segment.
//!
//! Every callback runs behind [`guard`]: a Rust panic becomes an APR error
//! (logged through the panic hook) and never unwinds into C.

use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::OnceLock;

use socache_shm_farm::{Farm, Lookup};

use super::bindings::{
    self as b, ap_socache_hints, ap_socache_instance_t, ap_socache_iterator_t, apr_pool_t,
    apr_status_t, apr_time_t, request_rec, server_rec,
};
use super::farm::{self, FarmPlan};
use super::log::{self, log, CurrentServer, Level};
use super::pools::{self, FdSlot};
use super::status;
use crate::engine::{
    Cache, CacheConfig, ControlFlow, Error, Existing, Miss, Opened, Replacement, Timestamp,
};
use crate::spec::{self, CacheSpec};

const SUCCESS: apr_status_t = b::APR_SUCCESS as apr_status_t;
const NOTFOUND: apr_status_t = b::APR_NOTFOUND as apr_status_t;
const ENOSPC: apr_status_t = b::APR_ENOSPC as apr_status_t;
const EINVAL: apr_status_t = b::APR_EINVAL as apr_status_t;
const EGENERAL: apr_status_t = b::APR_EGENERAL as apr_status_t;
const EINIT: apr_status_t = b::APR_EINIT as apr_status_t;

/// One configured cache (one `shm:...` of one directive).
pub(crate) struct Instance {
    /// The parsed, ServerRoot-resolved and validated argument.
    spec: CacheSpec,
    /// The mapped segment, between `init` and `destroy`.
    cache: CacheSlot,
    /// The process that created this instance: httpd's parent. Forked
    /// children inherit a copy and never unmap or free it (see `shutdown`).
    home_pid: libc::pid_t,
    /// The process-pool slot that keeps the segment's descriptor across
    /// restarts (set by `init`; null before).
    slot: AtomicPtr<c_int>,
    /// The farm tier's options as `create` checked them (key file read);
    /// `init` takes them to build `farm`.
    farm_plan: std::sync::Mutex<Option<FarmPlan>>,
    /// The second tier behind `cache` (`redis=...`), from `init` on.
    farm: OnceLock<Farm>,
}

/// The instances with a mapped segment in this process, for the hooks that
/// act on all of them (`child_init`, `monitor`). Touched only by httpd's
/// parent while it is single-threaded, and by a child in `child_init`
/// before it starts threads.
static LIVE: std::sync::Mutex<Vec<usize>> = std::sync::Mutex::new(Vec::new());

fn live_instances() -> Vec<usize> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

fn set_live(inst: &Instance, live: bool) {
    let me = inst as *const Instance as usize;
    let mut all = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    all.retain(|&i| i != me);
    if live {
        all.push(me);
    }
}

/// The process-pool key of a file segment's descriptor.
fn file_slot_key(path: &std::path::Path) -> String {
    format!("socache_shm:file:{}", path.display())
}

/// The instance's `Cache`, shared by all threads of a child.
///
/// A `Box<Cache>` behind an atomic pointer: the request path is one acquire
/// load. The pointer is written only in the parent while it is single-
/// threaded (`init`, `destroy`, the pool cleanup), before children fork or
/// after they are gone, which is the socache contract: `destroy` is never
/// called concurrently with the instance's other callbacks.
struct CacheSlot(AtomicPtr<Cache>);

impl CacheSlot {
    const fn empty() -> CacheSlot {
        CacheSlot(AtomicPtr::new(ptr::null_mut()))
    }

    fn get(&self) -> Option<&Cache> {
        let p = self.0.load(Ordering::Acquire);
        // SAFETY: a non-null pointer comes from `Box::into_raw` in `set` and
        // is freed only by `take`, whose callers guarantee that no reference
        // from `get` is alive (the single-threaded parent; see the type doc).
        unsafe { p.as_ref() }
    }

    /// Install `cache`. The slot must be empty.
    fn set(&self, cache: Cache) {
        let new = Box::into_raw(Box::new(cache));
        let old = self.0.swap(new, Ordering::AcqRel);
        debug_assert!(old.is_null(), "CacheSlot::set over a live cache");
        if !old.is_null() {
            // SAFETY: `old` came from `Box::into_raw` in an earlier `set`;
            // the swap made this the only owner. (Unreachable: init returns
            // early when a cache is installed.)
            drop(unsafe { Box::from_raw(old) });
        }
    }

    /// Remove the cache, returning ownership.
    ///
    /// # Safety
    /// No reference obtained from `get` may be alive, in any thread.
    unsafe fn take(&self) -> Option<Box<Cache>> {
        let p = self.0.swap(ptr::null_mut(), Ordering::AcqRel);
        // SAFETY: non-null `p` came from `Box::into_raw` in `set`; the swap
        // made this the only owner; no borrow is alive (caller).
        (!p.is_null()).then(|| unsafe { Box::from_raw(p) })
    }
}

impl Drop for CacheSlot {
    fn drop(&mut self) {
        // SAFETY: `&mut self`: no borrow from `get` can be alive.
        drop(unsafe { self.take() });
    }
}

/// Run a callback body with the panic hook installed and `s` recorded for
/// it; a panic returns `on_panic` instead of unwinding into httpd.
fn guard<R>(s: *const server_rec, on_panic: R, body: impl FnOnce() -> R) -> R {
    log::install_panic_hook();
    let _current = CurrentServer::enter(s);
    // AssertUnwindSafe: after a panic the instance is not used again by this
    // call; the engine keeps its shared state consistent under its own locks
    // (a panic inside a lock is a crashed holder it recovers from).
    catch_unwind(AssertUnwindSafe(body)).unwrap_or(on_panic)
}

/// The instance behind httpd's opaque pointer.
///
/// # Safety
/// `inst` is null or a pointer returned by `socache_shm_create` whose pool
/// cleanup has not run.
unsafe fn instance<'a>(inst: *mut ap_socache_instance_t) -> Option<&'a Instance> {
    // SAFETY: per the caller, non-null means a live `Box<Instance>` leaked in
    // `create`; only shared references are made until the cleanup frees it.
    unsafe { inst.cast::<Instance>().as_ref() }
}

/// A byte slice from httpd's (pointer, length); empty for a null pointer.
///
/// # Safety
/// A non-null `p` points to `len` readable bytes that outlive `'a`.
unsafe fn bytes<'a>(p: *const u8, len: c_uint) -> &'a [u8] {
    if p.is_null() || len == 0 {
        &[]
    } else {
        // SAFETY: per the caller.
        unsafe { std::slice::from_raw_parts(p, len as usize) }
    }
}

fn pid() -> libc::pid_t {
    // SAFETY: getpid has no preconditions.
    unsafe { libc::getpid() }
}

/// The APR status for an engine error: its errno for I/O errors (APR
/// statuses below APR_OS_START_ERROR are errno values), else EGENERAL.
fn apr_status(e: &Error) -> apr_status_t {
    match e {
        Error::Io { source, .. } => source.raw_os_error().unwrap_or(EGENERAL),
        Error::EntryTooLarge { .. } | Error::IdTooLong { .. } => ENOSPC,
        Error::BudgetTooSmall { .. } | Error::BudgetTooLarge { .. } => EINVAL,
        _ => EGENERAL,
    }
}

/// The provider record as bindgen sees `ap_socache_provider_t` in the
/// installed `ap_socache.h`: rustc checks every callback's signature
/// against the header here, so a header that drifts from what the Rust
/// side implements does not compile. (The record httpd uses is the one in
/// apache-glue/mod_socache_shm.c, which names the same functions; its C
/// compiler checks them against the same header.)
#[allow(dead_code)]
const PROVIDER: b::ap_socache_provider_t = b::ap_socache_provider_t {
    name: c"shm".as_ptr(),
    flags: 0,
    create: Some(socache_shm_create),
    init: Some(socache_shm_init),
    destroy: Some(socache_shm_destroy),
    store: Some(socache_shm_store),
    retrieve: Some(socache_shm_retrieve),
    remove: Some(socache_shm_remove),
    status: Some(socache_shm_status),
    iterate: Some(socache_shm_iterate),
};

// ---------------------------------------------------------------- create --

/// `create(&instance, arg, tmp, p)`: parse and check the argument; the
/// errors surface at `apachectl -t`.
///
/// # Safety
/// Called by httpd with a valid out-pointer, `arg` null or NUL-terminated,
/// and valid pools.
#[no_mangle]
pub unsafe extern "C" fn socache_shm_create(
    instance: *mut *mut ap_socache_instance_t,
    arg: *const c_char,
    tmp: *mut apr_pool_t,
    p: *mut apr_pool_t,
) -> *const c_char {
    let _ = tmp;
    let result = guard(ptr::null(), Err(None), || {
        // SAFETY: httpd passes null or a NUL-terminated argument.
        let arg = (!arg.is_null()).then(|| unsafe { CStr::from_ptr(arg) });
        // SAFETY: `p` is httpd's configuration pool (valid, per the caller).
        unsafe { create(arg, p) }.map_err(Some)
    });
    match result {
        Ok(inst) => {
            if !instance.is_null() {
                // SAFETY: `instance` is httpd's valid out-pointer.
                unsafe { instance.write(inst.cast()) };
            }
            ptr::null()
        }
        // SAFETY: `p` is a valid pool; the message is copied into it.
        Err(Some(msg)) => unsafe { pools::pstr(p, &msg) },
        Err(None) => {
            c"mod_socache_shm: internal error while reading the argument (see the error log)"
                .as_ptr()
        }
    }
}

/// # Safety
/// `p` is a valid pool that lives as long as the instance should.
unsafe fn create(arg: Option<&CStr>, p: *mut apr_pool_t) -> Result<*mut Instance, String> {
    let arg = match arg {
        None => None,
        Some(a) => Some(
            a.to_str()
                .map_err(|_| "Invalid argument: not valid UTF-8".to_string())?,
        ),
    };
    let mut spec = spec::parse(arg).map_err(|e| e.to_string())?;
    let resolve = |path: &std::path::Path| -> Result<PathBuf, String> {
        let c = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| spec::SpecError::NulInPath.to_string())?;
        // SAFETY: `p` is valid (caller).
        let resolved = unsafe { pools::server_root_relative(p, &c) }.ok_or_else(|| {
            format!(
                "Invalid argument: cannot resolve {} against ServerRoot",
                path.display()
            )
        })?;
        Ok(PathBuf::from(std::ffi::OsStr::from_bytes(
            resolved.as_bytes(),
        )))
    };
    if let Some(path) = spec.path.take() {
        spec.path = Some(resolve(&path)?);
    }
    spec::validate(&spec).map_err(|e| e.to_string())?;
    // The farm tier's URL, TLS files and key file (read here, by the parent
    // as the user httpd starts as: root on an ordinary host).
    let farm_plan = spec
        .farm
        .as_ref()
        .map(|f| farm::plan(f, resolve))
        .transpose()?;
    if farm_plan.as_ref().is_some_and(FarmPlan::unsealed) && config_test() {
        // `apachectl -t` runs no init (where a start says it): say it here.
        log::write(
            ptr::null(),
            Level::Warning,
            0,
            "seal=off: session values, TLS master secrets included, would cross the network and sit in Redis in clear",
        );
    }
    // Whatever else the engine would refuse at init (with the TLS session
    // hints; other consumers' hints only move the index/arena split).
    crate::engine::layout::Geometry::new(spec.bytes, 32, 160)
        .map_err(|e| format!("Invalid argument: {e}"))?;
    if let Some(path) = &spec.path {
        // A server that already keeps this segment (a restart) reattaches
        // through its descriptor and repairs the path at init if it must:
        // a restart never fails on what someone put at the path. Otherwise
        // (a start, `apachectl -t`) what is there must be ours to replace.
        // SAFETY: ap_pglobal is httpd's process pool (set before any
        // configuration is read, valid until the process exits).
        let kept = unsafe { FdSlot::get(b::ap_pglobal, &file_slot_key(path)) }
            .and_then(|slot| slot.fd())
            .is_some();
        if !kept {
            crate::engine::check_replaceable(path).map_err(|e| format!("Invalid argument: {e}"))?;
        }
    }

    let inst = Box::into_raw(Box::new(Instance {
        spec,
        cache: CacheSlot::empty(),
        home_pid: pid(),
        slot: AtomicPtr::new(ptr::null_mut()),
        farm_plan: std::sync::Mutex::new(farm_plan),
        farm: OnceLock::new(),
    }));
    // SAFETY: `inst` was just made and is only read here.
    if let Some(path) = unsafe { &(*inst).spec.path } {
        // SAFETY: `p` is the configuration pool; `inst` is only compared.
        if !unsafe { pools::claim_path(p, &path.to_string_lossy(), inst.cast_const().cast()) } {
            let msg = format!(
                "Invalid argument: {} is already the segment of another socache instance; give each cache its own file",
                path.display()
            );
            // SAFETY: made above by Box::into_raw, not registered anywhere.
            drop(unsafe { Box::from_raw(inst) });
            return Err(msg);
        }
    }
    // SAFETY: `p` is valid; `inst` stays alive until this cleanup frees it.
    // The cleanup points into this DSO, which is safe on this pool: httpd
    // unloads the DSO in a cleanup of the same pool that was registered
    // earlier (at LoadModule), and cleanups run last-in, first-out. In a
    // fork-and-exec child, apr_pool_cleanup_null runs instead.
    unsafe {
        b::apr_pool_cleanup_register(
            p,
            inst.cast_const().cast(),
            Some(instance_cleanup),
            Some(b::apr_pool_cleanup_null),
        )
    };
    Ok(inst)
}

/// Is this `apachectl -t` (or `-S`, `-M`...): configuration only?
fn config_test() -> bool {
    // SAFETY: ap_state_query has no preconditions.
    let mode = unsafe { b::ap_state_query(b::AP_SQ_RUN_MODE as c_int) };
    mode == b::AP_SQ_RM_CONFIG_TEST as c_int || mode == b::AP_SQ_RM_CONFIG_DUMP as c_int
}

/// The pool cleanup of an instance: what `destroy` does, then free it.
unsafe extern "C" fn instance_cleanup(data: *mut c_void) -> apr_status_t {
    guard(ptr::null(), SUCCESS, || {
        let inst = data.cast::<Instance>();
        // SAFETY: `data` is the `Box<Instance>` leaked in `create`; this
        // cleanup runs once. Only shared references exist meanwhile.
        let Some(i) = (unsafe { inst.as_ref() }) else {
            return SUCCESS;
        };
        if i.home_pid != pid() {
            // A forked child exiting (apr_terminate at exit): other threads
            // may still be in a callback; leave everything to the kernel.
            return SUCCESS;
        }
        // SAFETY: in the parent, no other callback runs (socache contract).
        unsafe { shutdown(i, ptr::null()) };
        // SAFETY: as above; nothing refers to the instance any more.
        drop(unsafe { Box::from_raw(inst) });
        SUCCESS
    })
}

// ------------------------------------------------------------------ init --

/// `init(instance, cname, hints, s, pool)`: map the segment, reattaching
/// to the live one when possible.
///
/// # Safety
/// Called by httpd in the parent with an instance from `socache_shm_create`,
/// `cname` null or NUL-terminated, `hints` null or valid, `s` valid.
#[no_mangle]
pub unsafe extern "C" fn socache_shm_init(
    instance: *mut ap_socache_instance_t,
    cname: *const c_char,
    hints: *const ap_socache_hints,
    s: *mut server_rec,
    pool: *mut apr_pool_t,
) -> apr_status_t {
    let _ = pool;
    guard(s, EGENERAL, || {
        // SAFETY: `instance` is from `create` (caller).
        let Some(inst) = (unsafe { self::instance(instance) }) else {
            return EINVAL;
        };
        let cname = if cname.is_null() {
            String::new()
        } else {
            // SAFETY: NUL-terminated (caller).
            unsafe { CStr::from_ptr(cname) }
                .to_string_lossy()
                .into_owned()
        };
        // SAFETY: `hints` is null or valid (caller).
        let hints = unsafe { hints.as_ref() };
        // SAFETY: `s` valid (caller); the parent is single-threaded in init.
        match unsafe { init(inst, &cname, hints, s) } {
            Ok(()) => SUCCESS,
            Err((status, msg)) => {
                // The message says it all (I/O errors carry the OS error).
                log::write(s, Level::Err, 0, &format!("cache {cname:?}: {msg}"));
                status
            }
        }
    })
}

/// # Safety
/// `s` is valid; no other callback runs on `inst` (parent, single-threaded).
///
/// In phases: the engine configuration from the argument and the hints;
/// the descriptor slots kept in the process pool; opening the segment
/// (file-backed or anonymous); saying what was done; installing it.
unsafe fn init(
    inst: &Instance,
    cname: &str,
    hints: Option<&ap_socache_hints>,
    s: *const server_rec,
) -> Result<(), (apr_status_t, String)> {
    if inst.cache.get().is_some() {
        // A second init of the same instance (e.g. once per virtual host).
        return Ok(());
    }
    // SAFETY: `s` valid (caller).
    let (process_pool, pconf) = unsafe { pools::pools_of(s) }
        .ok_or((EGENERAL, "the server has no process pools".to_string()))?;
    let config = engine_config(inst, hints);
    // Distinct instances with one consumer name get distinct memfd slots,
    // in configuration order (stable across restarts).
    // SAFETY: `pconf` is httpd's configuration pool.
    let ordinal = unsafe { pools::next_ordinal(pconf, cname) }.unwrap_or(0);
    let memfd_key = format!("socache_shm:memfd:{cname}:{ordinal}");
    // SAFETY: `process_pool` is httpd's process pool.
    let memfd = unsafe { FdSlot::get(process_pool, &memfd_key) };
    let opened = match &config.path {
        Some(path) => {
            // This slot's consumer moved from anonymous to a file: release
            // the anonymous segment it kept.
            if let Some(slot) = &memfd {
                slot.replace(None);
            }
            // SAFETY: `process_pool` is httpd's process pool.
            let slot = unsafe { FdSlot::get(process_pool, &file_slot_key(path)) }.ok_or((
                EGENERAL,
                "cannot keep the segment in the process pool".to_string(),
            ))?;
            inst.slot.store(slot.as_ptr(), Ordering::Release);
            open_file_segment(&config, path, &slot)?
        }
        None => {
            let slot = memfd.ok_or((
                EGENERAL,
                "cannot keep the segment in the process pool".to_string(),
            ))?;
            inst.slot.store(slot.as_ptr(), Ordering::Release);
            open_anonymous_segment(&config, &slot, s, cname)?
        }
    };
    let Opening { cache, what, level } = opened;
    log!(
        s,
        level,
        "cache {cname:?}: {what} [{} bytes, {} shards, entries up to {} bytes]",
        config.bytes,
        cache.shard_count(),
        cache.max_entry_size()
    );
    inst.cache.set(cache);
    set_live(inst, true);
    // SAFETY: `s` is valid and lives in pconf (caller).
    unsafe { start_farm(inst, cname, s) }
}

/// The second tier, if configured: built once per instance (a second
/// `init` finds it built). Its clients open nothing until a child uses them.
///
/// # Safety
/// `s` is valid and lives in pconf (init's server).
unsafe fn start_farm(
    inst: &Instance,
    cname: &str,
    s: *const server_rec,
) -> Result<(), (apr_status_t, String)> {
    let plan = inst
        .farm_plan
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    let Some(plan) = plan else {
        return Ok(());
    };
    if plan.unsealed() {
        log!(s, Level::Warning, "cache {cname:?}: seal=off: session values, TLS master secrets included, cross the network and sit in Redis in clear");
    }
    let what = plan.describe();
    // SAFETY: `s` is valid and outlives this configuration's children (caller).
    let farm = unsafe { farm::start(plan, cname, s, inst.home_pid) }.map_err(|e| (EGENERAL, e))?;
    log!(s, Level::Info, "cache {cname:?}: farm tier {what}");
    let _ = inst.farm.set(farm);
    Ok(())
}

/// The engine's configuration: the argument's size and path, and the
/// consumer's hints for the index/arena split (mod_ssl: 30/150).
fn engine_config(inst: &Instance, hints: Option<&ap_socache_hints>) -> CacheConfig {
    let hint = |v: Option<usize>, default: u32| {
        v.filter(|&n| n > 0)
            .map_or(default, |n| u32::try_from(n).unwrap_or(u32::MAX))
    };
    let defaults = CacheConfig::new(inst.spec.bytes);
    CacheConfig {
        bytes: inst.spec.bytes,
        path: inst.spec.path.clone(),
        avg_id_len: hint(hints.map(|h| h.avg_id_len), defaults.avg_id_len),
        avg_value_len: hint(hints.map(|h| h.avg_obj_size), defaults.avg_value_len),
    }
}

/// A mapped segment, what was done to get it, and how loudly to say so: a
/// segment replaced because it was damaged or foreign (not because the
/// configured size changed) is worth the operator's attention at the
/// default LogLevel.
struct Opening {
    cache: Cache,
    what: String,
    level: Level,
}

fn engine_err(e: Error) -> (apr_status_t, String) {
    (apr_status(&e), e.to_string())
}

/// A file-backed segment: reattach through the descriptor kept in `slot`
/// (a restart), or make one at `path` (a start), keeping its descriptor.
fn open_file_segment(
    config: &CacheConfig,
    path: &std::path::Path,
    slot: &FdSlot,
) -> Result<Opening, (apr_status_t, String)> {
    let err = engine_err;
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
                let cache = Cache::create(&anon).map_err(err)?;
                slot.replace(Some(cache.dup_fd().map_err(err)?));
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
            let found = crate::engine::check_replaceable(path).map_err(err)?;
            let cache = Cache::create(config).map_err(err)?;
            slot.replace(Some(cache.dup_fd().map_err(err)?));
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
    Ok(Opening { cache, what, level })
}

/// Reopen the segment kept in `slot` (`name` says which, for the log):
/// reattached, or replaced with the reason and the new descriptor kept.
/// The engine's refusal is passed back for the caller's fallback.
fn reopen_kept(
    fd: c_int,
    config: &CacheConfig,
    slot: &FdSlot,
    name: &str,
) -> Result<Result<Opening, Error>, (apr_status_t, String)> {
    let (cache, opened) = match Cache::reopen_fd(fd, config) {
        Ok(pair) => pair,
        Err(e) => return Ok(Err(e)),
    };
    if opened == Opened::Reattached {
        return Ok(Ok(Opening {
            cache,
            what: format!("reattached to the live {name} (entries kept)"),
            level: Level::Info,
        }));
    }
    slot.replace(Some(cache.dup_fd().map_err(engine_err)?));
    let why = match opened {
        Opened::Replaced(why) => why,
        _ => Replacement::Moved,
    };
    Ok(Ok(Opening {
        cache,
        what: format!("replaced the {name} with an empty one: {why}"),
        level: replacement_level(&why),
    }))
}

/// An anonymous segment: reattach to the memfd kept in `slot`, or make one
/// and keep it there.
fn open_anonymous_segment(
    config: &CacheConfig,
    slot: &FdSlot,
    s: *const server_rec,
    cname: &str,
) -> Result<Opening, (apr_status_t, String)> {
    let err = engine_err;
    let level = Level::Info;
    let (cache, what) = match slot.fd() {
        Some(fd) => match reopen_kept(fd, config, slot, "anonymous segment")? {
            Ok(opening) => return Ok(opening),
            Err(e) => {
                log!(s, Level::Warning, "cache {cname:?}: cannot reopen the kept anonymous segment ({e}); creating a new one");
                let cache = Cache::create(config).map_err(err)?;
                slot.replace(Some(cache.dup_fd().map_err(err)?));
                (cache, "created anonymous segment".to_string())
            }
        },
        None => {
            let cache = Cache::create(config).map_err(err)?;
            slot.replace(Some(cache.dup_fd().map_err(err)?));
            (cache, "created anonymous segment".to_string())
        }
    };
    Ok(Opening { cache, what, level })
}

/// Info for a segment replaced because the configured size or layout
/// changed (an operator's doing); warning for one that was damaged, moved
/// or of another layout version.
fn replacement_level(why: &Replacement) -> Level {
    match why {
        Replacement::Resized(_) => Level::Info,
        Replacement::Moved | Replacement::Damaged(_) => Level::Warning,
    }
}

// --------------------------------------------------------------- destroy --

/// `destroy(instance, s)`: unmap; on a full stop also remove the file.
///
/// # Safety
/// Called by httpd with an instance from `socache_shm_create` (or null) and
/// `s` null or valid, while no other callback runs on the instance.
#[no_mangle]
pub unsafe extern "C" fn socache_shm_destroy(
    instance: *mut ap_socache_instance_t,
    s: *mut server_rec,
) {
    guard(s, (), || {
        // SAFETY: `instance` is from `create` (caller).
        if let Some(inst) = unsafe { self::instance(instance) } {
            if inst.home_pid == pid() {
                // SAFETY: no other callback runs (caller).
                unsafe { shutdown(inst, s) };
            }
        }
    })
}

/// Drop the cache; when httpd is exiting for good, unlink its file first.
///
/// # Safety
/// No other callback runs on `inst`, in any thread.
unsafe fn shutdown(inst: &Instance, s: *const server_rec) {
    set_live(inst, false);
    // SAFETY: per the caller, no borrow from `get` is alive.
    let Some(cache) = (unsafe { inst.cache.take() }) else {
        return;
    };
    // SAFETY: ap_state_query has no preconditions.
    let state = unsafe { b::ap_state_query(b::AP_SQ_MAIN_STATE as c_int) };
    if state == b::AP_SQ_MS_EXITING as c_int {
        if let Some(path) = cache.path() {
            match cache.unlink() {
                Ok(false) => log!(
                    s,
                    Level::Warning,
                    "left {} alone at stop: it is no longer the segment this server made",
                    path.display()
                ),
                Ok(true) => log!(
                    s,
                    Level::Info,
                    "removed segment file {} (server stopping)",
                    path.display()
                ),
                Err(e) => log!(
                    s,
                    Level::Warning,
                    "cannot remove segment file {}: {e}",
                    path.display()
                ),
            }
        }
    }
    drop(cache);
}

// ------------------------------------------------- store/retrieve/remove --

/// `store(...)`: insert or replace; `expiry` is absolute, in µs.
///
/// # Safety
/// Called by httpd with a live instance, `id`/`data` valid for their lengths.
#[no_mangle]
pub unsafe extern "C" fn socache_shm_store(
    instance: *mut ap_socache_instance_t,
    s: *mut server_rec,
    id: *const u8,
    idlen: c_uint,
    expiry: apr_time_t,
    data: *mut u8,
    datalen: c_uint,
    pool: *mut apr_pool_t,
) -> apr_status_t {
    let _ = pool;
    guard(s, EGENERAL, || {
        // SAFETY: `instance` is live (caller).
        let inst = unsafe { self::instance(instance) };
        let Some((inst, cache)) = inst.and_then(|i| Some((i, i.cache.get()?))) else {
            log!(s, Level::Debug, "store: cache not initialised");
            return EINIT;
        };
        // SAFETY: valid for their lengths during the call (caller).
        let (id, value) = unsafe { (bytes(id, idlen), bytes(data.cast_const(), datalen)) };
        match cache.store(id, value, Timestamp(expiry)) {
            Ok(_) => {
                if let Some(farm) = inst.farm.get() {
                    // Queued, never waited for: the handshake goes on.
                    farm.store(cache.tier_words(), id, value, expiry, cache.now().0);
                }
                SUCCESS
            }
            Err(e @ (Error::EntryTooLarge { .. } | Error::IdTooLong { .. })) => {
                log!(
                    s,
                    Level::Info,
                    "not caching an entry (id {} bytes): {e}",
                    id.len()
                );
                ENOSPC
            }
            Err(e @ Error::Unavailable { first, .. }) => {
                if first {
                    log!(s, Level::Warning, "{e}; until then its stores are refused and its retrieves miss (logged once)");
                }
                EGENERAL
            }
            Err(e) => {
                log!(s, Level::Err, "store failed: {e}");
                apr_status(&e)
            }
        }
    })
}

/// `retrieve(...)`: copy the value into `dest`; APR_NOTFOUND on a miss or
/// when `dest` is too small.
///
/// # Safety
/// Called by httpd with a live instance, `id` valid for `idlen`, `dest`
/// writable for `*destlen` bytes, `destlen` valid.
#[no_mangle]
pub unsafe extern "C" fn socache_shm_retrieve(
    instance: *mut ap_socache_instance_t,
    s: *mut server_rec,
    id: *const u8,
    idlen: c_uint,
    dest: *mut u8,
    destlen: *mut c_uint,
    pool: *mut apr_pool_t,
) -> apr_status_t {
    let _ = pool;
    guard(s, NOTFOUND, || {
        // SAFETY: `instance` is live (caller).
        let inst = unsafe { self::instance(instance) };
        let Some((inst, cache)) = inst.and_then(|i| Some((i, i.cache.get()?))) else {
            return NOTFOUND;
        };
        if destlen.is_null() {
            return EINVAL;
        }
        // SAFETY: `destlen` is valid (caller; checked non-null).
        let cap = unsafe { destlen.read() };
        // SAFETY: valid for its length (caller).
        let id = unsafe { bytes(id, idlen) };
        let buf: &mut [u8] = if dest.is_null() || cap == 0 {
            &mut []
        } else {
            // SAFETY: `dest` is writable for `cap` bytes and not aliased
            // during the call (caller).
            unsafe { std::slice::from_raw_parts_mut(dest, cap as usize) }
        };
        let found = match cache.retrieve(id, buf) {
            Ok(n) => Some(n),
            // An entry too large for the caller's buffer is so everywhere.
            Err(miss @ Miss::BufferTooSmall { .. }) => {
                local_miss(s, &miss, cap);
                None
            }
            Err(miss) => {
                local_miss(s, &miss, cap);
                inst.farm
                    .get()
                    .and_then(|farm| second_tier(farm, cache, id, buf))
            }
        };
        match found {
            Some(n) => {
                // n <= buf.len() <= c_uint::MAX.
                // SAFETY: `destlen` is valid (caller).
                unsafe { destlen.write(c_uint::try_from(n).unwrap_or(cap)) };
                SUCCESS
            }
            None => NOTFOUND,
        }
    })
}

/// A local miss: the farm tier, if any, is asked next. A hit there is
/// copied into the local segment with its remaining lifetime (so the next
/// lookup is local) and into `buf`; `None` when it misses, fails or does
/// not fit.
fn second_tier(farm: &Farm, cache: &Cache, id: &[u8], buf: &mut [u8]) -> Option<usize> {
    match farm.retrieve(cache.tier_words(), id, cache.now().0) {
        Lookup::Hit { value, expiry_us } => {
            // Best effort: a value the local segment refuses is still an
            // answer for this lookup.
            let _ = cache.store(id, &value, Timestamp(expiry_us));
            let out = buf.get_mut(..value.len())?;
            out.copy_from_slice(&value);
            Some(value.len())
        }
        Lookup::Miss | Lookup::Skipped | Lookup::Failed => None,
    }
}

/// Say what a local miss needs said (once per shard for the damage kinds).
fn local_miss(s: *const server_rec, miss: &Miss, cap: c_uint) {
    match *miss {
        Miss::NotFound => {}
        Miss::Corrupt { first } => {
            if first {
                log!(s, Level::Warning, "an entry failed its checksum: treated as not found and wiped (CacheCorruptEntries counts them; logged once per shard)");
            }
        }
        Miss::Unavailable { shard, first } => {
            if first {
                log!(
                    s,
                    Level::Warning,
                    "{}; until then its retrieves miss (logged once)",
                    Error::Unavailable { shard, first }
                );
            }
        }
        Miss::BufferTooSmall { needed } => {
            log!(s, Level::Debug, "retrieve: entry of {needed} bytes does not fit the caller's {cap}-byte buffer; treated as not found");
        }
    }
}

/// `remove(...)`: APR_NOTFOUND when there was no live entry.
///
/// # Safety
/// Called by httpd with a live instance and `id` valid for `idlen`.
#[no_mangle]
pub unsafe extern "C" fn socache_shm_remove(
    instance: *mut ap_socache_instance_t,
    s: *mut server_rec,
    id: *const u8,
    idlen: c_uint,
    pool: *mut apr_pool_t,
) -> apr_status_t {
    let _ = pool;
    guard(s, EGENERAL, || {
        // SAFETY: `instance` is live (caller).
        let inst = unsafe { self::instance(instance) };
        let Some((inst, cache)) = inst.and_then(|i| Some((i, i.cache.get()?))) else {
            return NOTFOUND;
        };
        // SAFETY: valid for its length (caller).
        let id = unsafe { bytes(id, idlen) };
        if let Some(farm) = inst.farm.get() {
            // Queued like a store: the other hosts stop finding it soon.
            farm.remove(cache.tier_words(), id);
        }
        if cache.remove(id) {
            SUCCESS
        } else {
            NOTFOUND
        }
    })
}

// -------------------------------------------------------- status/iterate --

/// `status(instance, r, flags)`: the figures for mod_status, HTML or, with
/// `AP_STATUS_SHORT`, `Key: value` lines.
///
/// # Safety
/// Called by httpd with a live instance and a valid request.
#[no_mangle]
pub unsafe extern "C" fn socache_shm_status(
    instance: *mut ap_socache_instance_t,
    r: *mut request_rec,
    flags: c_int,
) {
    let s = if r.is_null() {
        ptr::null()
    } else {
        // SAFETY: `r` is a valid request (caller), non-null (checked).
        unsafe { (*r).server.cast_const() }
    };
    let short = flags & (b::AP_STATUS_SHORT as c_int) != 0;
    let text = guard(s, None, || {
        // SAFETY: `instance` is live (caller).
        let inst = unsafe { self::instance(instance) }?;
        Some(match inst.cache.get() {
            Some(cache) => {
                let mut figures = crate::engine::figures::figures(cache, &cache.stats());
                if inst.farm.get().is_some() {
                    figures.extend(status::farm_figures(cache.tier_words(), cache.now().0));
                }
                if short {
                    status::short(&figures)
                } else {
                    status::html(&figures, cache.path())
                }
            }
            None if short => "CacheType: SHM\nCacheStatus: not initialised\n".to_string(),
            None => "cache type: <b>SHM</b>, not initialised<br>".to_string(),
        })
    })
    .unwrap_or_else(|| {
        if short {
            "CacheType: SHM\nCacheStatus: error (see the error log)\n".to_string()
        } else {
            "cache type: <b>SHM</b>, status unavailable (see the error log)<br>".to_string()
        }
    });
    if r.is_null() {
        return;
    }
    for chunk in text.as_bytes().chunks(i32::MAX as usize) {
        // SAFETY: `r` is valid (caller); `chunk` is readable for its length,
        // which fits a c_int.
        unsafe { b::ap_rwrite(chunk.as_ptr().cast(), chunk.len() as c_int, r) };
    }
}

/// `iterate(...)`: call `iterator` for each live entry until it returns
/// something other than APR_SUCCESS, which is then returned.
///
/// # Safety
/// Called by httpd with a live instance, valid `s`, and `iterator` a valid
/// function for `userctx`.
#[no_mangle]
pub unsafe extern "C" fn socache_shm_iterate(
    instance: *mut ap_socache_instance_t,
    s: *mut server_rec,
    userctx: *mut c_void,
    iterator: ap_socache_iterator_t,
    pool: *mut apr_pool_t,
) -> apr_status_t {
    guard(s, EGENERAL, || {
        // SAFETY: `instance` is live (caller).
        let Some(cache) = (unsafe { self::instance(instance) }).and_then(|i| i.cache.get()) else {
            return EINIT;
        };
        let Some(iterator) = iterator else {
            return EINVAL;
        };
        let mut rv = SUCCESS;
        cache.iterate(&mut |id, value, _expiry| {
            let (Ok(idlen), Ok(datalen)) =
                (c_uint::try_from(id.len()), c_uint::try_from(value.len()))
            else {
                return ControlFlow::Continue(());
            };
            // SAFETY: `iterator` is the consumer's valid callback (caller);
            // `id` and `value` are copies that live through the call. The
            // engine copies entries out before visiting, so the consumer may
            // call back into this instance.
            rv = unsafe {
                iterator(
                    instance,
                    s,
                    userctx,
                    id.as_ptr(),
                    idlen,
                    value.as_ptr(),
                    datalen,
                    pool,
                )
            };
            if rv == SUCCESS {
                ControlFlow::Continue(())
            } else {
                ControlFlow::Break(())
            }
        });
        rv
    })
}

// ------------------------------------------------------- child/monitor --

/// `child_init` hook: in a new child, drop every segment descriptor this
/// process inherited (the mapping stays). The child runs as the server's
/// `User`; with a descriptor of a file segment it could truncate the file
/// under everyone else (SIGBUS), whatever the file's owner and mode.
///
/// # Safety
/// Called by httpd in a new child before it serves, single-threaded.
#[no_mangle]
pub unsafe extern "C" fn socache_shm_child_init(pchild: *mut apr_pool_t, s: *mut server_rec) {
    let _ = pchild;
    guard(s, (), || {
        for i in live_instances() {
            // SAFETY: registered by `init` and removed by `shutdown` before
            // the instance is freed; the child is single-threaded here.
            let inst = unsafe { &*(i as *const Instance) };
            if let Some(cache) = inst.cache.get() {
                cache.close_fd();
            }
            let slot = inst.slot.load(Ordering::Acquire);
            if !slot.is_null() {
                // SAFETY: a slot in the process pool (valid for the
                // process's life); closing it affects this child only.
                unsafe { FdSlot::from_ptr(slot) }.replace(None);
            }
        }
    })
}

/// How long the parent's sweep waits for one shard's lock: it must not
/// hold up the parent's main loop, so a busy shard waits for the next turn.
const SWEEP_PATIENCE: std::time::Duration = std::time::Duration::from_millis(2);

/// `monitor` hook: httpd's parent calls it about every 10 s. Zero every
/// expired entry, so an idle cache does not keep expired secrets. The
/// parent first checks the file still holds every mapped byte (a file
/// truncated under the mapping would SIGBUS it).
///
/// # Safety
/// Called by httpd in the parent, single-threaded.
#[no_mangle]
pub unsafe extern "C" fn socache_shm_monitor(p: *mut apr_pool_t, s: *mut server_rec) -> c_int {
    let _ = p;
    guard(s, DECLINED, || {
        for i in live_instances() {
            // SAFETY: as in child_init: a registered, live instance.
            let inst = unsafe { &*(i as *const Instance) };
            if inst.home_pid != pid() {
                continue;
            }
            if let Some(cache) = inst.cache.get() {
                if cache.intact() {
                    let n = cache.sweep_expired(SWEEP_PATIENCE);
                    if n > 0 {
                        log!(s, Level::Debug, "zeroed {n} expired entries");
                    }
                }
            }
        }
        DECLINED
    })
}

/// What a RUN_ALL hook returns to let the others run.
const DECLINED: c_int = -1;

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// What the stand-in for the C log helper received: (server, level, text).
    static LOGGED: Mutex<Vec<(usize, c_int, String)>> = Mutex::new(Vec::new());

    /// Stand-in for `socache_shm_log` of the C glue (not linked into tests).
    #[no_mangle]
    extern "C" fn socache_shm_log(
        s: *const server_rec,
        level: c_int,
        _status: apr_status_t,
        msg: *const c_char,
    ) {
        // SAFETY: `log::write` passes a valid NUL-terminated string.
        let text = unsafe { CStr::from_ptr(msg) }
            .to_string_lossy()
            .into_owned();
        // Other tests' panics come through the hook too: keep them visible.
        eprintln!("[log level {level}] {text}");
        LOGGED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((s as usize, level, text));
    }

    /// Stand-in for httpd's `ap_state_query`: serving requests.
    #[no_mangle]
    extern "C" fn ap_state_query(_query: c_int) -> c_int {
        b::AP_SQ_MS_RUN_MPM as c_int
    }

    #[no_mangle]
    extern "C" fn socache_shm_log_enabled(_s: *const server_rec, _level: c_int) -> c_int {
        1
    }

    #[test]
    fn a_panic_becomes_the_fallback_and_a_crit_log_line_for_its_server() {
        let fake_server = 0x1000 as *const server_rec;
        let rv = guard(fake_server, EGENERAL, || -> apr_status_t {
            panic!("boom {}", 42);
        });
        assert_eq!(rv, EGENERAL);
        // The calling thread's server is restored after the callback.
        let after = guard(ptr::null(), 0usize, || {
            panic!("second");
        });
        assert_eq!(after, 0);

        let logged = LOGGED.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let boom = logged
            .iter()
            .find(|(_, _, t)| t.contains("boom 42"))
            .expect("the panic message reached the log");
        assert_eq!(boom.0, 0x1000, "logged for the callback's server");
        assert_eq!(boom.1, b::APLOG_CRIT as c_int);
        assert!(
            boom.2.contains("provider.rs"),
            "with its location: {}",
            boom.2
        );
        let second = logged
            .iter()
            .find(|(_, _, t)| t.contains("second"))
            .expect("logged");
        assert_eq!(second.0, 0);
        // Give the test binary its default hook back.
        drop(std::panic::take_hook());
    }

    /// An initialised instance over a real (anonymous) engine cache.
    fn live_instance() -> *mut ap_socache_instance_t {
        let inst = Instance {
            spec: CacheSpec {
                path: None,
                bytes: 64 * 1024,
                farm: None,
            },
            cache: CacheSlot::empty(),
            home_pid: pid(),
            slot: AtomicPtr::new(ptr::null_mut()),
            farm_plan: std::sync::Mutex::new(None),
            farm: OnceLock::new(),
        };
        let cache = Cache::create(&CacheConfig::new(64 * 1024)).expect("engine cache");
        inst.cache.set(cache);
        Box::into_raw(Box::new(inst)).cast()
    }

    fn free(inst: *mut ap_socache_instance_t) {
        // SAFETY: from `live_instance`, not used afterwards.
        drop(unsafe { Box::from_raw(inst.cast::<Instance>()) });
    }

    fn in_a_minute() -> apr_time_t {
        use crate::engine::Clock;
        crate::engine::SystemClock.now().plus_secs(60).0
    }

    /// An `ap_socache_iterator_t` that counts entries in `userctx` and
    /// stops (returns APR_EGENERAL) at the second one.
    unsafe extern "C" fn count_two(
        _instance: *mut ap_socache_instance_t,
        _s: *mut server_rec,
        userctx: *mut c_void,
        _id: *const u8,
        idlen: c_uint,
        _data: *const u8,
        datalen: c_uint,
        _pool: *mut apr_pool_t,
    ) -> apr_status_t {
        assert!(idlen == 32 && datalen == 150);
        // SAFETY: the test passes a `*mut u32` as userctx.
        let n = unsafe { &mut *userctx.cast::<u32>() };
        *n += 1;
        if *n == 2 {
            EGENERAL
        } else {
            SUCCESS
        }
    }

    #[test]
    fn data_path_callbacks_over_a_real_cache() {
        let inst = live_instance();
        let s = ptr::null_mut();
        let p = ptr::null_mut();
        let id = [7u8; 32];
        let mut value = [9u8; 150];
        // SAFETY: every call below gets a live instance, buffers valid for
        // the lengths passed, and a null server/pool (used only for logging).
        unsafe {
            let rv = socache_shm_store(
                inst,
                s,
                id.as_ptr(),
                32,
                in_a_minute(),
                value.as_mut_ptr(),
                150,
                p,
            );
            assert_eq!(rv, SUCCESS);

            let mut buf = [0u8; 512];
            let mut len: c_uint = 512;
            assert_eq!(
                socache_shm_retrieve(inst, s, id.as_ptr(), 32, buf.as_mut_ptr(), &mut len, p),
                SUCCESS
            );
            assert_eq!(len, 150);
            assert_eq!(&buf[..150], &value[..]);

            // Too small a buffer reads as a miss.
            let mut len: c_uint = 10;
            assert_eq!(
                socache_shm_retrieve(inst, s, id.as_ptr(), 32, buf.as_mut_ptr(), &mut len, p),
                NOTFOUND
            );
            // So does an unknown id.
            let mut len: c_uint = 512;
            let other = [8u8; 32];
            assert_eq!(
                socache_shm_retrieve(inst, s, other.as_ptr(), 32, buf.as_mut_ptr(), &mut len, p),
                NOTFOUND
            );

            // Larger than the cache accepts: ENOSPC, and nothing else changes.
            let mut huge = vec![1u8; 60 * 1024];
            let rv = socache_shm_store(
                inst,
                s,
                other.as_ptr(),
                32,
                in_a_minute(),
                huge.as_mut_ptr(),
                huge.len() as c_uint,
                p,
            );
            assert_eq!(rv, ENOSPC);

            // Iterate stops where the consumer says so.
            for i in 0..5u8 {
                let k = [i; 32];
                socache_shm_store(
                    inst,
                    s,
                    k.as_ptr(),
                    32,
                    in_a_minute(),
                    value.as_mut_ptr(),
                    150,
                    p,
                );
            }
            let mut seen = 0u32;
            let rv =
                socache_shm_iterate(inst, s, (&mut seen as *mut u32).cast(), Some(count_two), p);
            assert_eq!((rv, seen), (EGENERAL, 2));

            assert_eq!(socache_shm_remove(inst, s, id.as_ptr(), 32, p), SUCCESS);
            assert_eq!(socache_shm_remove(inst, s, id.as_ptr(), 32, p), NOTFOUND);

            // destroy unmaps; later calls see an uninitialised instance.
            socache_shm_destroy(inst, s);
            let rv = socache_shm_store(
                inst,
                s,
                id.as_ptr(),
                32,
                in_a_minute(),
                value.as_mut_ptr(),
                150,
                p,
            );
            assert_eq!(rv, EINIT);
            let mut len: c_uint = 512;
            assert_eq!(
                socache_shm_retrieve(inst, s, id.as_ptr(), 32, buf.as_mut_ptr(), &mut len, p),
                NOTFOUND
            );
            // A second destroy is harmless.
            socache_shm_destroy(inst, s);
        }
        free(inst);
    }

    #[test]
    fn null_instance_is_refused_not_dereferenced() {
        let id = [1u8; 32];
        let mut len: c_uint = 0;
        // SAFETY: a null instance is checked before any use.
        unsafe {
            assert_eq!(
                socache_shm_retrieve(
                    ptr::null_mut(),
                    ptr::null_mut(),
                    id.as_ptr(),
                    32,
                    ptr::null_mut(),
                    &mut len,
                    ptr::null_mut()
                ),
                NOTFOUND
            );
            socache_shm_destroy(ptr::null_mut(), ptr::null_mut());
        }
    }

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

    #[test]
    fn no_panic_passes_the_value_through() {
        assert_eq!(guard(ptr::null(), 1, || 2), 2);
    }

    #[test]
    fn byte_slices_from_null_are_empty() {
        // SAFETY: null is allowed and yields an empty slice.
        assert!(unsafe { bytes(ptr::null(), 5) }.is_empty());
        let v = [1u8, 2, 3];
        // SAFETY: `v` holds 3 readable bytes.
        assert_eq!(unsafe { bytes(v.as_ptr(), 3) }, &v);
    }
}
