//! The socache provider's callbacks, as declared in
//! `apache-glue/socache_shm_rust.h` and put in the `ap_socache_provider_t`
//! of `apache-glue/mod_socache_shm.c`. Each is a few lines over a plainly
//! named Rust type: [`Instance`] (module `instance`: create, init,
//! shutdown), [`Tiers`] (the local cache and the farm tier behind it, which
//! the data-path callbacks reach through `over_tiers`) and the figures of
//! module `status`.
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
//!  child:  child_init  ──► close every segment descriptor (module hooks)
//!          requests    ──► store / retrieve / remove / iterate / status
//!  parent: monitor     ──► (about every 10 s) zero expired entries (hooks)
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

use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;

use super::bindings::{
    self as b, ap_socache_hints, ap_socache_instance_t, ap_socache_iterator_t, apr_pool_t,
    apr_status_t, apr_time_t, request_rec, server_rec,
};
use super::codes::{apr_status, EGENERAL, EINIT, EINVAL, NOTFOUND, SUCCESS};
use super::instance::{self, Instance};
use super::log::{self, log, CurrentServer, Level};
use super::pools;
use super::status;
use super::tiers::Tiers;
use crate::engine::{ControlFlow, Error, Miss, Timestamp};

/// Run a callback body with the panic hook installed and `s` recorded for
/// it; a panic returns `on_panic` instead of unwinding into httpd.
pub(crate) fn guard<R>(s: *const server_rec, on_panic: R, body: impl FnOnce() -> R) -> R {
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
/// cleanup has not run: a live `Box<Instance>` leaked by `create`, of which
/// only shared references are made until that cleanup frees it.
unsafe fn live<'a>(inst: *mut ap_socache_instance_t) -> Option<&'a Instance> {
    // SAFETY: per the caller.
    unsafe { inst.cast::<Instance>().as_ref() }
}

/// A data-path callback's `body` over `inst`'s [`Tiers`], behind [`guard`]
/// (`on_panic` if it panics); `None` if there is no instance or it is not
/// initialised.
fn over_tiers(
    inst: Option<&Instance>,
    s: *const server_rec,
    on_panic: apr_status_t,
    body: impl FnOnce(Tiers<'_>) -> apr_status_t,
) -> Option<apr_status_t> {
    guard(s, Some(on_panic), || {
        inst.and_then(Instance::tiers).map(body)
    })
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
    _tmp: *mut apr_pool_t,
    p: *mut apr_pool_t,
) -> *const c_char {
    let result = guard(ptr::null(), Err(None), || {
        // SAFETY: httpd passes null or a NUL-terminated argument.
        let arg = (!arg.is_null()).then(|| unsafe { CStr::from_ptr(arg) });
        // SAFETY: `p` is httpd's configuration pool (valid, per the caller).
        unsafe { instance::create(arg, p) }.map_err(Some)
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
    _pool: *mut apr_pool_t,
) -> apr_status_t {
    guard(s, EGENERAL, || {
        // SAFETY: `instance` is from `create` (caller).
        let Some(inst) = (unsafe { live(instance) }) else {
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
        // SAFETY: `hints` is null or valid; `s` valid; the parent is
        // single-threaded in init (caller).
        match unsafe { instance::init(inst, &cname, hints.as_ref(), s) } {
            Ok(()) => SUCCESS,
            Err(e) => {
                // The message says it all (I/O errors carry the OS error).
                log::write(
                    s,
                    Level::Err,
                    0,
                    "SHM0108",
                    &format!("cache {cname:?}: {}", e.message),
                );
                e.status
            }
        }
    })
}

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
        if let Some(inst) = unsafe { live(instance) }.filter(|i| i.is_home()) {
            // SAFETY: no other callback runs (caller).
            unsafe { instance::shutdown(inst, s) };
        }
    })
}

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
    _pool: *mut apr_pool_t,
) -> apr_status_t {
    // SAFETY: `instance` is live (caller).
    over_tiers(unsafe { live(instance) }, s, EGENERAL, |tiers| {
        // SAFETY: valid for their lengths during the call (caller).
        let (id, value) = unsafe { (bytes(id, idlen), bytes(data.cast_const(), datalen)) };
        match tiers.store(id, value, Timestamp(expiry)) {
            Ok(()) => SUCCESS,
            Err(e) => store_failed(s, &e, id.len()),
        }
    })
    .unwrap_or_else(|| {
        log!(s, Level::Debug, "SHM0101", "store: cache not initialised");
        EINIT
    })
}

/// Say why a store failed, and the status for it.
fn store_failed(s: *const server_rec, e: &Error, idlen: usize) -> apr_status_t {
    match *e {
        Error::EntryTooLarge { .. } | Error::IdTooLong { .. } => {
            log!(
                s,
                Level::Info,
                "SHM0102",
                "not caching an entry (id {idlen} bytes): {e}"
            );
        }
        Error::Unavailable { first, .. } => {
            if first {
                log!(
                    s,
                    Level::Warning,
                    "SHM0103",
                    "{e}; until then its stores are refused and its retrieves miss (logged once)"
                );
            }
            return EGENERAL;
        }
        _ => log!(s, Level::Err, "SHM0104", "store failed: {e}"),
    }
    apr_status(e)
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
    _pool: *mut apr_pool_t,
) -> apr_status_t {
    // SAFETY: `instance` is live (caller).
    over_tiers(unsafe { live(instance) }, s, NOTFOUND, |tiers| {
        // SAFETY: `destlen` is null or valid (caller).
        let Some(cap) = (unsafe { destlen.as_ref() }).copied() else {
            return EINVAL;
        };
        // SAFETY: `id` valid for its length; `dest` writable for `cap` bytes
        // and not aliased during the call (caller).
        let (id, buf) = unsafe { (bytes(id, idlen), bytes_mut(dest, cap)) };
        match tiers.retrieve(id, buf, |miss| local_miss(s, miss, cap)) {
            Some((n, _)) => {
                // n <= buf.len() <= c_uint::MAX.
                // SAFETY: `destlen` is valid (caller; checked non-null).
                unsafe { destlen.write(c_uint::try_from(n).unwrap_or(cap)) };
                SUCCESS
            }
            None => NOTFOUND,
        }
    })
    .unwrap_or(NOTFOUND)
}

/// A writable byte slice from httpd's (pointer, capacity).
///
/// # Safety
/// A non-null `p` is writable for `cap` bytes, not aliased, outliving `'a`.
unsafe fn bytes_mut<'a>(p: *mut u8, cap: c_uint) -> &'a mut [u8] {
    if p.is_null() || cap == 0 {
        &mut []
    } else {
        // SAFETY: per the caller.
        unsafe { std::slice::from_raw_parts_mut(p, cap as usize) }
    }
}

/// Say what a local miss needs said (once per shard for the damage kinds).
fn local_miss(s: *const server_rec, miss: &Miss, cap: c_uint) {
    match *miss {
        Miss::NotFound => {}
        Miss::Corrupt { first } => {
            if first {
                log!(s, Level::Warning, "SHM0105", "an entry failed its checksum: treated as not found and wiped (CacheCorruptEntries counts them; logged once per shard)");
            }
        }
        Miss::Unavailable { shard, first } => {
            if first {
                log!(
                    s,
                    Level::Warning,
                    "SHM0106",
                    "{}; until then its retrieves miss (logged once)",
                    Error::Unavailable { shard, first }
                );
            }
        }
        Miss::BufferTooSmall { needed } => {
            log!(s, Level::Debug, "SHM0107", "retrieve: entry of {needed} bytes does not fit the caller's {cap}-byte buffer; treated as not found");
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
    _pool: *mut apr_pool_t,
) -> apr_status_t {
    // SAFETY: `instance` is live (caller).
    over_tiers(unsafe { live(instance) }, s, EGENERAL, |tiers| {
        // SAFETY: valid for its length (caller).
        if tiers.remove(unsafe { bytes(id, idlen) }) {
            SUCCESS
        } else {
            NOTFOUND
        }
    })
    .unwrap_or(NOTFOUND)
}

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
    // SAFETY: `r` is null or a valid request (caller).
    let Some(req) = (unsafe { r.as_ref() }) else {
        return;
    };
    let short = flags & (b::AP_STATUS_SHORT as c_int) != 0;
    let text = guard(req.server, None, || {
        // SAFETY: `instance` is live (caller).
        unsafe { live(instance) }.map(|inst| status::of_instance(inst, short))
    })
    .unwrap_or_else(|| status::unavailable(short));
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
    // SAFETY: `instance` is live (caller).
    over_tiers(unsafe { live(instance) }, s, EGENERAL, |tiers| {
        let Some(iterator) = iterator else {
            return EINVAL;
        };
        let mut rv = SUCCESS;
        tiers.cache.iterate(&mut |id, value, _expiry| {
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
    .unwrap_or(EINIT)
}

#[cfg(test)]
#[path = "provider_tests.rs"]
mod tests;
