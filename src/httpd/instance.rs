//! One configured cache (one `shm:...` of one directive): what it owns, how
//! it is made (`create`), started (`init`) and ended (`shutdown`), and the
//! registry of the live ones that the hooks walk.
//!
//! Ownership: `create` leaks a `Box<Instance>` to httpd as the opaque
//! instance pointer and registers a pool cleanup on the configuration pool
//! that frees it; the callbacks only ever make shared references.

use std::ffi::{c_int, c_void, CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::{Mutex, OnceLock};

use socache_shm_farm::Farm;

use super::bindings::{self as b, ap_socache_hints, apr_pool_t, apr_status_t, server_rec};
use super::codes::{InitError, EGENERAL, SUCCESS};
use super::farm::{self, FarmPlan};
use super::log::{self, log, Level};
use super::pools::{self, FdSlot};
use super::segments::{self, Opening};
use super::tiers::Tiers;
use crate::engine::{Cache, CacheConfig};
use crate::spec::{self, CacheSpec, TicketSpec};

/// One configured cache.
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
    farm_plan: Mutex<Option<FarmPlan>>,
    /// The second tier behind `cache` (`redis=...`), from `init` on.
    farm: OnceLock<Farm>,
}

impl Instance {
    fn new(spec: CacheSpec, farm_plan: Option<FarmPlan>) -> Instance {
        Instance {
            spec,
            cache: CacheSlot::empty(),
            home_pid: pid(),
            slot: AtomicPtr::new(ptr::null_mut()),
            farm_plan: Mutex::new(farm_plan),
            farm: OnceLock::new(),
        }
    }

    /// The mapped segment (None before `init` and after `destroy`).
    pub(crate) fn cache(&self) -> Option<&Cache> {
        self.cache.get()
    }

    /// The segment and the farm tier behind it, once initialised.
    pub(crate) fn tiers(&self) -> Option<Tiers<'_>> {
        Some(Tiers {
            cache: self.cache.get()?,
            farm: self.farm.get(),
        })
    }

    /// The session-ticket options (`tickets=`), if given.
    pub(crate) fn ticket_spec(&self) -> Option<TicketSpec> {
        self.spec.tickets
    }

    /// Whether this instance has a farm tier.
    pub(crate) fn has_farm(&self) -> bool {
        self.farm.get().is_some()
    }

    /// Whether this process is the one that created the instance (httpd's
    /// parent), the only one that may unmap or free it.
    pub(crate) fn is_home(&self) -> bool {
        self.home_pid == pid()
    }

    /// In a new child, before it serves: connect the farm tier ahead of
    /// need (bounded; see `Farm::warm_up`).
    pub(crate) fn warm_up_farm(&self) {
        if let Some(farm) = self.farm.get() {
            farm.warm_up();
        }
    }

    /// In a new child: drop the segment's descriptors (the mapping stays).
    pub(crate) fn close_descriptors(&self) {
        if let Some(cache) = self.cache.get() {
            cache.close_fd();
        }
        let slot = self.slot.load(Ordering::Acquire);
        if !slot.is_null() {
            // SAFETY: a slot in the process pool (valid for the process's
            // life); closing it affects this process only.
            unsafe { FdSlot::from_ptr(slot) }.replace(None);
        }
    }
}

/// `create`: parse and check the argument (the errors surface at
/// `apachectl -t`), read the farm's key file, and allocate the instance,
/// freed by a cleanup of `p`.
///
/// # Safety
/// `p` is httpd's configuration pool, valid as long as the instance should.
pub(crate) unsafe fn create(
    arg: Option<&CStr>,
    p: *mut apr_pool_t,
) -> Result<*mut Instance, String> {
    let arg = match arg {
        None => None,
        Some(a) => Some(
            a.to_str()
                .map_err(|_| "Invalid argument: not valid UTF-8".to_string())?,
        ),
    };
    let mut spec = spec::parse(arg).map_err(|e| e.to_string())?;
    if let Some(tickets) = spec.tickets {
        // What only the whole configuration says (`apachectl -t` included).
        super::ticket_config::check(tickets)?;
    }
    // SAFETY: `p` is valid (caller).
    let resolve = |path: &Path| unsafe { resolve_in(p, path) };
    if let Some(path) = spec.path.take() {
        spec.path = Some(resolve(&path)?);
    }
    let inst = Box::into_raw(Box::new(Instance::new(spec, None)));
    // SAFETY: `inst` was just made and is only read here; `p` is the
    // configuration pool (caller).
    let checked = unsafe { segments::check_path(&(*inst).spec, p, inst.cast_const().cast()) }
        // SAFETY: as above.
        .and_then(|()| plan_farm(unsafe { &*inst }, resolve));
    if let Err(msg) = checked {
        // SAFETY: made above by Box::into_raw, not registered anywhere.
        drop(unsafe { Box::from_raw(inst) });
        return Err(msg);
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

/// The farm tier's URL, TLS files and key file (read here, as the user
/// httpd starts as: root on an ordinary host), then whatever else the
/// engine would refuse at init.
fn plan_farm(
    inst: &Instance,
    resolve: impl Fn(&Path) -> Result<PathBuf, String>,
) -> Result<(), String> {
    let farm_plan = inst
        .spec
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
            "SHM0204",
            farm::UNSEALED_WARNING,
        );
    }
    // With the TLS session hints; other consumers' hints only move the
    // index/arena split.
    crate::engine::layout::Geometry::new(inst.spec.bytes, 32, 160)
        .map_err(|e| format!("Invalid argument: {e}"))?;
    *inst.farm_plan.lock().unwrap_or_else(|e| e.into_inner()) = farm_plan;
    Ok(())
}

/// `path` made absolute against ServerRoot, as httpd does for every file
/// it names.
///
/// # Safety
/// `p` is a valid pool.
unsafe fn resolve_in(p: *mut apr_pool_t, path: &Path) -> Result<PathBuf, String> {
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
}

/// Is this `apachectl -t` (or `-S`, `-M`...): configuration only?
fn config_test() -> bool {
    // SAFETY: ap_state_query has no preconditions.
    let mode = unsafe { b::ap_state_query(b::AP_SQ_RUN_MODE as c_int) };
    mode == b::AP_SQ_RM_CONFIG_TEST as c_int || mode == b::AP_SQ_RM_CONFIG_DUMP as c_int
}

/// The pool cleanup of an instance: what `destroy` does, then free it.
unsafe extern "C" fn instance_cleanup(data: *mut c_void) -> apr_status_t {
    super::provider::guard(ptr::null(), SUCCESS, || {
        let inst = data.cast::<Instance>();
        // SAFETY: `data` is the `Box<Instance>` leaked in `create`; this
        // cleanup runs once. Only shared references exist meanwhile.
        let Some(i) = (unsafe { inst.as_ref() }) else {
            return SUCCESS;
        };
        if !i.is_home() {
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

/// `init`: map the segment (reattaching to the live one when possible),
/// then build the farm tier. A second `init` of the same instance (once
/// per virtual host) does nothing.
///
/// # Safety
/// `s` is valid and lives in pconf; no other callback runs on `inst`
/// (parent, single-threaded).
pub(crate) unsafe fn init(
    inst: &Instance,
    cname: &str,
    hints: Option<&ap_socache_hints>,
    s: *const server_rec,
) -> Result<(), InitError> {
    if inst.cache.get().is_some() {
        return Ok(());
    }
    let config = engine_config(&inst.spec, hints);
    // SAFETY: `s` valid, single-threaded (caller).
    let Opening {
        cache,
        what,
        level,
        slot,
    } = unsafe { segments::open(&config, cname, s) }?;
    inst.slot.store(slot, Ordering::Release);
    log!(
        s,
        level,
        "SHM0201",
        "cache {cname:?}: {what} [{} bytes, {} shards, entries up to {} bytes]",
        config.bytes,
        cache.shard_count(),
        cache.max_entry_size()
    );
    inst.cache.set(cache);
    LIVE.add(inst);
    // SAFETY: `s` is valid and lives in pconf (caller).
    unsafe { start_farm(inst, cname, s) }?;
    if inst.spec.tickets.is_some() {
        super::ticket_hook::register(inst, cname, s)?;
    }
    Ok(())
}

/// The second tier, if configured: built once per instance. Its clients
/// open nothing until a child uses them.
///
/// # Safety
/// `s` is valid and lives in pconf (init's server).
unsafe fn start_farm(inst: &Instance, cname: &str, s: *const server_rec) -> Result<(), InitError> {
    let plan = inst
        .farm_plan
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    let Some(plan) = plan else {
        return Ok(());
    };
    if plan.unsealed() {
        log!(
            s,
            Level::Warning,
            "SHM0202",
            "cache {cname:?}: {}",
            farm::UNSEALED_WARNING
        );
    }
    let what = plan.describe();
    // A farm reply larger than the largest entry the local cache takes is
    // refused unread (the cache is set just before this is called).
    let max_value = inst.cache.get().map_or(0, |c| {
        usize::try_from(c.max_entry_size()).unwrap_or(usize::MAX)
    });
    // SAFETY: `s` is valid and outlives this configuration's children (caller).
    let farm = unsafe { farm::start(plan, cname, s, inst.home_pid, max_value) }
        .map_err(|e| InitError::new(EGENERAL, e))?;
    log!(
        s,
        Level::Info,
        "SHM0203",
        "cache {cname:?}: farm tier {what}"
    );
    let _ = inst.farm.set(farm);
    Ok(())
}

/// The engine's configuration: the argument's size and path, and the
/// consumer's hints for the index/arena split (mod_ssl: 30/150).
fn engine_config(spec: &CacheSpec, hints: Option<&ap_socache_hints>) -> CacheConfig {
    let hint = |v: Option<usize>, default: u32| {
        v.filter(|&n| n > 0)
            .map_or(default, |n| u32::try_from(n).unwrap_or(u32::MAX))
    };
    let defaults = CacheConfig::new(spec.bytes);
    CacheConfig {
        bytes: spec.bytes,
        path: spec.path.clone(),
        avg_id_len: hint(hints.map(|h| h.avg_id_len), defaults.avg_id_len),
        avg_value_len: hint(hints.map(|h| h.avg_obj_size), defaults.avg_value_len),
    }
}

/// Drop the cache; when httpd is exiting for good, unlink its file first.
///
/// # Safety
/// No other callback runs on `inst`, in any thread.
pub(crate) unsafe fn shutdown(inst: &Instance, s: *const server_rec) {
    super::ticket_hook::unregister(inst);
    LIVE.remove(inst);
    // SAFETY: per the caller, no borrow from `get` is alive.
    let Some(cache) = (unsafe { inst.cache.take() }) else {
        return;
    };
    // SAFETY: ap_state_query has no preconditions.
    let state = unsafe { b::ap_state_query(b::AP_SQ_MAIN_STATE as c_int) };
    if state == b::AP_SQ_MS_EXITING as c_int {
        segments::remove_at_stop(&cache, s);
    }
    drop(cache);
}

pub(crate) fn pid() -> libc::pid_t {
    // SAFETY: getpid has no preconditions.
    unsafe { libc::getpid() }
}

// -------------------------------------------------------------- registry --

/// The instances with a mapped segment in this process, for the hooks that
/// act on all of them (`child_init`, `monitor`).
pub(crate) static LIVE: Registry = Registry(Mutex::new(Vec::new()));

/// A set of live instances.
pub(crate) struct Registry(Mutex<Vec<Registered>>);

/// A registered instance's address.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Registered(NonNull<Instance>);

// SAFETY: a `Registered` is only turned back into a reference by
// `Registry::for_each`, under that method's contract; moving the address
// between threads is harmless.
unsafe impl Send for Registered {}

impl Registry {
    fn add(&self, inst: &Instance) {
        let me = Registered(NonNull::from(inst));
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if !all.contains(&me) {
            all.push(me);
        }
    }

    fn remove(&self, inst: &Instance) {
        let me = Registered(NonNull::from(inst));
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|&i| i != me);
    }

    /// Calls `f` with every registered instance.
    ///
    /// # Safety
    /// Only from httpd's parent while it is single-threaded, or a child in
    /// `child_init` before it starts threads: then no instance is freed
    /// meanwhile (an instance leaves the registry in `shutdown`, before its
    /// cleanup frees it, and both run only there).
    pub(crate) unsafe fn for_each(&self, mut f: impl FnMut(&Instance)) {
        let all = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for Registered(inst) in all {
            // SAFETY: registered by `init`, removed by `shutdown` before the
            // instance is freed; nothing frees it during this call (caller).
            f(unsafe { inst.as_ref() });
        }
    }
}

// ------------------------------------------------------------- the cache --

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

#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// An initialised instance over a real (anonymous) engine cache, as
    /// httpd's opaque pointer; free it with [`free`].
    pub(crate) fn live_instance() -> *mut Instance {
        let inst = Instance::new(
            CacheSpec {
                path: None,
                bytes: 64 * 1024,
                farm: None,
                tickets: None,
            },
            None,
        );
        let cache = Cache::create(&CacheConfig::new(64 * 1024)).expect("engine cache");
        inst.cache.set(cache);
        Box::into_raw(Box::new(inst))
    }

    pub(crate) fn free(inst: *mut Instance) {
        // SAFETY: from `live_instance`, not used afterwards.
        drop(unsafe { Box::from_raw(inst) });
    }
}
