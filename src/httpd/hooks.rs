//! The module's two httpd hooks (registered by apache-glue/mod_socache_shm.c),
//! which act on every live instance of the process.

use std::ffi::c_int;

use super::bindings::{apr_pool_t, server_rec};
use super::instance::LIVE;
use super::log::{log, Level};
use super::provider::guard;

/// How long the parent's sweep waits for one shard's lock: it must not
/// hold up the parent's main loop, so a busy shard waits for the next turn.
const SWEEP_PATIENCE: std::time::Duration = std::time::Duration::from_millis(2);

/// What a RUN_ALL hook returns to let the others run.
const DECLINED: c_int = -1;

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
        // SAFETY: a new child, before it starts threads (caller).
        unsafe { LIVE.for_each(|inst| inst.close_descriptors()) }
    })
}

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
        // SAFETY: the parent, single-threaded (caller).
        unsafe {
            LIVE.for_each(|inst| {
                let Some(cache) = inst.cache().filter(|_| inst.is_home()) else {
                    return;
                };
                if cache.intact() {
                    let n = cache.sweep_expired(SWEEP_PATIENCE);
                    if n > 0 {
                        log!(s, Level::Debug, "SHM0501", "zeroed {n} expired entries");
                    }
                }
            })
        };
        DECLINED
    })
}
