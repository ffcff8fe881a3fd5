//! Tests of the callbacks over a real (anonymous) engine cache, with
//! stand-ins for the C glue's log helpers and httpd's `ap_state_query`.
use super::*;
use crate::httpd::codes::ENOSPC;
use crate::httpd::instance::testing;
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
        boom.2.contains("provider_tests.rs"),
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

fn live_instance() -> *mut ap_socache_instance_t {
    testing::live_instance().cast()
}

fn free(inst: *mut ap_socache_instance_t) {
    testing::free(inst.cast());
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

/// `socache_shm_store` of `id` and `value`, to expire in a minute, with a
/// null server and pool (used only for logging).
///
/// # Safety
///
/// `inst` is a live instance, or one `socache_shm_destroy` left behind.
unsafe fn store(inst: *mut ap_socache_instance_t, id: &[u8], value: &mut [u8]) -> apr_status_t {
    // SAFETY: the buffers are valid for the lengths passed; `inst` is the
    // caller's.
    unsafe {
        socache_shm_store(
            inst,
            ptr::null_mut(),
            id.as_ptr(),
            id.len() as c_uint,
            in_a_minute(),
            value.as_mut_ptr(),
            value.len() as c_uint,
            ptr::null_mut(),
        )
    }
}

/// `socache_shm_retrieve` of `id` into a 512-byte buffer of which it may
/// fill `room` bytes, with a null server and pool: its status, and the
/// bytes it says it wrote.
///
/// # Safety
///
/// As for [`store`].
unsafe fn retrieve(
    inst: *mut ap_socache_instance_t,
    id: &[u8],
    room: c_uint,
) -> (apr_status_t, Vec<u8>) {
    let mut buf = [0u8; 512];
    let mut len = room;
    // SAFETY: `buf` holds 512 >= `room` writable bytes, `id` its length;
    // `inst` is the caller's.
    let rv = unsafe {
        socache_shm_retrieve(
            inst,
            ptr::null_mut(),
            id.as_ptr(),
            id.len() as c_uint,
            buf.as_mut_ptr(),
            &raw mut len,
            ptr::null_mut(),
        )
    };
    (rv, buf[..len.min(room) as usize].to_vec())
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
        assert_eq!(store(inst, &id, &mut value), SUCCESS);
        assert_eq!(retrieve(inst, &id, 512), (SUCCESS, value.to_vec()));

        // Too small a buffer reads as a miss.
        assert_eq!(retrieve(inst, &id, 10).0, NOTFOUND);
        // So does an unknown id.
        let other = [8u8; 32];
        assert_eq!(retrieve(inst, &other, 512).0, NOTFOUND);

        // Larger than the cache accepts: ENOSPC, and nothing else changes.
        let mut huge = vec![1u8; 60 * 1024];
        assert_eq!(store(inst, &other, &mut huge), ENOSPC);

        // Iterate stops where the consumer says so.
        for i in 0..5u8 {
            store(inst, &[i; 32], &mut value);
        }
        let mut seen = 0u32;
        let rv = socache_shm_iterate(inst, s, (&raw mut seen).cast(), Some(count_two), p);
        assert_eq!((rv, seen), (EGENERAL, 2));

        assert_eq!(socache_shm_remove(inst, s, id.as_ptr(), 32, p), SUCCESS);
        assert_eq!(socache_shm_remove(inst, s, id.as_ptr(), 32, p), NOTFOUND);

        // destroy unmaps; later calls see an uninitialised instance.
        socache_shm_destroy(inst, s);
        assert_eq!(store(inst, &id, &mut value), EINIT);
        assert_eq!(retrieve(inst, &id, 512).0, NOTFOUND);
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
                &raw mut len,
                ptr::null_mut()
            ),
            NOTFOUND
        );
        socache_shm_destroy(ptr::null_mut(), ptr::null_mut());
    }
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
