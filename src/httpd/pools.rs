//! Small typed wrappers over the APR pool calls the provider needs.
//!
//! Lifetimes in httpd, and what this module keeps where:
//! - the *process pool* (`s->process->pool`) lives until the parent exits,
//!   across every restart. It outlives this DSO, which httpd unloads and
//!   reloads on restart, so nothing stored there may point into the DSO: the
//!   memfd slots below are plain ints in pool memory, with no cleanup.
//! - the *configuration pool* (`s->process->pconf`) is cleared on every
//!   restart, before the DSO is unloaded. Per-generation bookkeeping (which
//!   instance took which memfd slot or file) lives there, as pool memory too.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::ptr;

use super::bindings::{self as b, apr_pool_t, server_rec};

/// The process pool and the configuration pool of `s`.
///
/// # Safety
/// `s` is null or a valid `server_rec` whose `process` is null or valid.
pub(crate) unsafe fn pools_of(s: *const server_rec) -> Option<(*mut apr_pool_t, *mut apr_pool_t)> {
    if s.is_null() {
        return None;
    }
    // SAFETY: `s` is valid (caller) and non-null (checked).
    let process = unsafe { (*s).process };
    if process.is_null() {
        return None;
    }
    // SAFETY: `process` is valid (caller) and non-null (checked).
    let (pool, pconf) = unsafe { ((*process).pool, (*process).pconf) };
    (!pool.is_null() && !pconf.is_null()).then_some((pool, pconf))
}

/// Look up `key` in `pool`'s userdata.
///
/// # Safety
/// `pool` is a valid pool.
unsafe fn userdata_get(pool: *mut apr_pool_t, key: &CStr) -> *mut c_void {
    let mut data: *mut c_void = ptr::null_mut();
    // SAFETY: `pool` is valid (caller), `key` is NUL-terminated, `data` is a
    // valid out-pointer.
    let rv = unsafe { b::apr_pool_userdata_get(&raw mut data, key.as_ptr(), pool) };
    if rv == b::APR_SUCCESS as c_int {
        data
    } else {
        ptr::null_mut()
    }
}

/// Store `data` under `key` in `pool`'s userdata with no cleanup. The key is
/// copied into `pool` first, because `apr_pool_userdata_setn` keeps the
/// pointer, not the text.
///
/// # Safety
/// `pool` is a valid pool; `data` stays valid as long as `pool`.
unsafe fn userdata_set(pool: *mut apr_pool_t, key: &CStr, data: *mut c_void) -> bool {
    // SAFETY: `pool` is valid; `key` is NUL-terminated; apr_pstrdup copies it.
    let key_in_pool = unsafe { b::apr_pstrdup(pool, key.as_ptr()) };
    if key_in_pool.is_null() {
        return false;
    }
    // SAFETY: `key_in_pool` and `data` live as long as `pool`; no cleanup is
    // registered, so nothing in the pool points into this DSO.
    let rv = unsafe { b::apr_pool_userdata_setn(data, key_in_pool, None, pool) };
    rv == b::APR_SUCCESS as c_int
}

/// A `c_int` in pool memory, found by key; created (with `init`) on first use.
///
/// # Safety
/// `pool` is a valid pool, and `key` is used for nothing but such ints.
unsafe fn int_slot(pool: *mut apr_pool_t, key: &str, init: c_int) -> Option<*mut c_int> {
    let key = CString::new(key).ok()?;
    // SAFETY: `pool` is valid (caller).
    let found = unsafe { userdata_get(pool, &key) };
    if !found.is_null() {
        return Some(found.cast());
    }
    // SAFETY: `pool` is valid; the allocation is sized and aligned for a
    // c_int (apr_palloc aligns to 8).
    let mem = unsafe { b::apr_palloc(pool, std::mem::size_of::<c_int>()) }.cast::<c_int>();
    if mem.is_null() {
        return None;
    }
    // SAFETY: `mem` is a fresh, aligned c_int-sized allocation.
    unsafe { mem.write(init) };
    // SAFETY: `pool` is valid and `mem` lives as long as it.
    unsafe { userdata_set(pool, &key, mem.cast()) }.then_some(mem)
}

/// The memfd of an anonymous segment, kept in the process pool across
/// restarts so a new configuration generation can reattach to it.
pub(crate) struct FdSlot(*mut c_int);

impl FdSlot {
    /// The slot for `key` in the process pool, made empty (-1) on first use.
    ///
    /// # Safety
    /// `process_pool` is httpd's process pool (valid until the parent exits).
    pub(crate) unsafe fn get(process_pool: *mut apr_pool_t, key: &str) -> Option<FdSlot> {
        // SAFETY: forwarded from the caller; the key prefix is ours alone.
        unsafe { int_slot(process_pool, key, -1) }.map(FdSlot)
    }

    /// The slot at a pointer from [`FdSlot::as_ptr`].
    ///
    /// # Safety
    /// `p` came from `as_ptr` of a slot in the process pool.
    pub(crate) unsafe fn from_ptr(p: *mut c_int) -> FdSlot {
        FdSlot(p)
    }

    pub(crate) fn as_ptr(&self) -> *mut c_int {
        self.0
    }

    /// The descriptor held, if any.
    pub(crate) fn fd(&self) -> Option<c_int> {
        // SAFETY: the slot points at a live c_int in the process pool, which
        // outlives this value; the parent is single-threaded while callers
        // (init) run.
        let fd = unsafe { self.0.read() };
        (fd >= 0).then_some(fd)
    }

    /// Hold `fd` (owned by the slot from now on), closing any previous one.
    pub(crate) fn replace(&self, fd: Option<c_int>) {
        if let Some(old) = self.fd() {
            if Some(old) != fd {
                // SAFETY: the slot owns `old`; it is closed once and forgotten.
                unsafe { libc::close(old) };
            }
        }
        // SAFETY: as in `fd`.
        unsafe { self.0.write(fd.unwrap_or(-1)) };
    }
}

/// The next number for `what` in this configuration generation: 0, 1, 2, ...
/// Two instances with the same consumer name get distinct memfd slots.
///
/// # Safety
/// `pconf` is httpd's configuration pool.
pub(crate) unsafe fn next_ordinal(pconf: *mut apr_pool_t, what: &str) -> Option<c_int> {
    // SAFETY: forwarded from the caller; the key prefix is ours alone.
    let slot = unsafe { int_slot(pconf, &format!("socache_shm:ordinal:{what}"), 0) }?;
    // SAFETY: a live c_int in pconf; the parent is single-threaded in init.
    unsafe {
        let n = slot.read();
        slot.write(n.saturating_add(1));
        Some(n)
    }
}

/// Record that `owner` uses `path` in this configuration generation.
/// Returns false if another owner already claimed it.
///
/// # Safety
/// `pconf` is httpd's configuration pool; `owner` is only compared.
pub(crate) unsafe fn claim_path(pconf: *mut apr_pool_t, path: &str, owner: *const c_void) -> bool {
    let Ok(key) = CString::new(format!("socache_shm:path:{path}")) else {
        return false;
    };
    // SAFETY: `pconf` is valid (caller).
    let found = unsafe { userdata_get(pconf, &key) };
    if !found.is_null() {
        return ptr::eq(found.cast_const(), owner);
    }
    // SAFETY: `pconf` is valid; `owner` is never dereferenced through the
    // pool, only compared, so its lifetime does not matter.
    unsafe { userdata_set(pconf, &key, owner.cast_mut()) }
}

/// `ap_server_root_relative(pool, path)`: `path` made absolute against
/// ServerRoot (absolute paths come back as they are). None when httpd
/// refuses the path.
///
/// # Safety
/// `pool` is a valid pool.
pub(crate) unsafe fn server_root_relative(pool: *mut apr_pool_t, path: &CStr) -> Option<CString> {
    // SAFETY: `pool` is valid (caller), `path` NUL-terminated.
    let p = unsafe { b::ap_server_root_relative(pool, path.as_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: httpd returns a NUL-terminated string allocated in `pool`.
    Some(unsafe { CStr::from_ptr(p) }.to_owned())
}

/// A copy of `text` in `pool`, for strings handed back to httpd.
///
/// # Safety
/// `pool` is a valid pool.
pub(crate) unsafe fn pstr(pool: *mut apr_pool_t, text: &str) -> *const c_char {
    // SAFETY: `pool` valid (caller); apr_pstrmemdup copies `len` bytes and
    // NUL-terminates.
    unsafe { b::apr_pstrmemdup(pool, text.as_ptr().cast(), text.len()) }
}
