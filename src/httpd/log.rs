//! Logging through httpd's error log with the module's own log index, so
//! `LogLevel socache_shm:debug` works; and the panic hook that sends panic
//! messages there instead of to stderr.
//!
//! Rust formats the message; the C glue (`socache_shm_log` in
//! `apache-glue/mod_socache_shm.c`) hands it to `ap_log_error` as `"%s"`,
//! because `ap_log_error` is a variadic macro that needs `APLOG_MODULE_INDEX`.

use std::cell::Cell;
use std::ffi::{c_char, c_int, CString};
use std::ptr;
use std::sync::Once;

use super::bindings::{self as b, apr_status_t, server_rec};

unsafe extern "C" {
    /// `ap_log_error(APLOG_MARK, level, status, s, "%s", msg)` with our module index.
    fn socache_shm_log(
        s: *const server_rec,
        level: c_int,
        status: apr_status_t,
        msg: *const c_char,
    );
    /// `APLOG_IS_LEVEL(s, level)` with our module index.
    fn socache_shm_log_enabled(s: *const server_rec, level: c_int) -> c_int;
}

/// The httpd log levels this module uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Level {
    Crit,
    Err,
    Warning,
    Notice,
    Info,
    Debug,
}

impl Level {
    fn apr(self) -> c_int {
        let l = match self {
            Level::Crit => b::APLOG_CRIT,
            Level::Err => b::APLOG_ERR,
            Level::Warning => b::APLOG_WARNING,
            Level::Notice => b::APLOG_NOTICE,
            Level::Info => b::APLOG_INFO,
            Level::Debug => b::APLOG_DEBUG,
        };
        l as c_int
    }
}

/// Would a message at `level` for server `s` (may be null) be written?
/// Checked before formatting, so debug messages cost nothing when off.
pub(crate) fn enabled(s: *const server_rec, level: Level) -> bool {
    // SAFETY: the C helper reads `s` only when non-null, and callers pass
    // either null or the server_rec httpd handed to the current callback,
    // which is valid for its duration.
    unsafe { socache_shm_log_enabled(s, level.apr()) != 0 }
}

/// Write `msg` to the error log of `s` (null: the main server's, or stderr
/// before the logs are open).
pub(crate) fn write(s: *const server_rec, level: Level, status: apr_status_t, msg: &str) {
    let c = CString::new(msg.replace('\0', "\\0")).unwrap_or_default();
    // SAFETY: `c` is NUL-terminated and outlives the call; `s` is null or
    // valid for the current callback (see `enabled`); ap_log_error copies
    // the text before returning.
    unsafe { socache_shm_log(s, level.apr(), status, c.as_ptr()) }
}

/// `log!(s, Level::Info, "fmt", args..)`: format and log only when enabled.
macro_rules! log {
    ($s:expr, $level:expr, $($arg:tt)+) => {{
        let s = $s;
        let level = $level;
        if $crate::httpd::log::enabled(s, level) {
            $crate::httpd::log::write(s, level, 0, &format!($($arg)+));
        }
    }};
}
pub(crate) use log;

thread_local! {
    /// The server of the callback this thread is in, for the panic hook.
    /// A `Cell` of a raw pointer: no destructor, so no TLS-dtor registration
    /// that would pin the DSO in memory.
    static CURRENT_SERVER: Cell<*const server_rec> = const { Cell::new(ptr::null()) };
}

/// Marks this thread as inside a callback for `s` until dropped.
pub(crate) struct CurrentServer {
    previous: *const server_rec,
}

impl CurrentServer {
    pub(crate) fn enter(s: *const server_rec) -> CurrentServer {
        CurrentServer {
            previous: CURRENT_SERVER.with(|c| c.replace(s)),
        }
    }
}

impl Drop for CurrentServer {
    fn drop(&mut self) {
        CURRENT_SERVER.with(|c| c.set(self.previous));
    }
}

/// Route panic messages to httpd's error log (at crit) instead of stderr.
///
/// Idempotent. The hook lives in this DSO's copy of std (the Rust runtime is
/// linked statically and hidden), so it only ever sees this module's panics,
/// and it goes away with the DSO when httpd unloads the module on restart;
/// the `Once` does too, so a reloaded module installs it again.
pub(crate) fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let payload = info.payload();
            let what = payload
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
                .unwrap_or("(non-string panic payload)");
            let place = info
                .location()
                .map(|l| format!(" at {}:{}", l.file(), l.line()))
                .unwrap_or_default();
            let s = CURRENT_SERVER.with(Cell::get);
            write(
                s,
                Level::Crit,
                0,
                &format!("internal error (Rust panic{place}): {what}"),
            );
        }));
    });
}
