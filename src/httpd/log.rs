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
/// before the logs are open), after its tag: `SHM0401: farm tier: ...`.
///
/// Tags are this module's `APLOGNO`: one per log statement, never reused,
/// so an operator can grep the source and the docs for the line in front
/// of them. Numbering by file: 00xx log.rs, 01xx provider.rs, 02xx
/// instance.rs, 03xx segments.rs, 04xx farm.rs, 05xx hooks.rs, 06xx
/// ticket_hook.rs (the test
/// `tags_are_unique_and_well_formed` checks them all).
pub(crate) fn write(
    s: *const server_rec,
    level: Level,
    status: apr_status_t,
    tag: &'static str,
    msg: &str,
) {
    let line = format!("{tag}: {msg}");
    let c = CString::new(line.replace('\0', "\\0")).unwrap_or_default();
    // SAFETY: `c` is NUL-terminated and outlives the call; `s` is null or
    // valid for the current callback (see `enabled`); ap_log_error copies
    // the text before returning.
    unsafe { socache_shm_log(s, level.apr(), status, c.as_ptr()) }
}

/// `log!(s, Level::Info, "SHM0123", "fmt", args..)`: format and log only
/// when enabled, after the tag (see [`write`]).
macro_rules! log {
    ($s:expr, $level:expr, $tag:literal, $($arg:tt)+) => {{
        const _: () = $crate::httpd::log::check_tag($tag);
        let s = $s;
        let level = $level;
        if $crate::httpd::log::enabled(s, level) {
            $crate::httpd::log::write(s, level, 0, $tag, &format!($($arg)+));
        }
    }};
}

/// A tag is `SHM` and four digits (checked at compile time by `log!`).
pub(crate) const fn check_tag(tag: &str) {
    let b = tag.as_bytes();
    assert!(b.len() == 7 && b[0] == b'S' && b[1] == b'H' && b[2] == b'M');
    let mut i = 3;
    while i < 7 {
        assert!(b[i].is_ascii_digit());
        i += 1;
    }
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
                "SHM0001",
                &format!("internal error (Rust panic{place}): {what}"),
            );
        }));
    });
}

#[cfg(test)]
mod tests {
    /// Every tag in the module's sources: `SHM` and four digits, each used
    /// by exactly one log statement.
    #[test]
    fn tags_are_unique_and_well_formed() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/httpd");
        let mut seen = std::collections::HashMap::new();
        for entry in std::fs::read_dir(dir).expect("src/httpd") {
            let path = entry.expect("entry").path();
            if path.extension().is_none_or(|e| e != "rs") || path.ends_with("provider_tests.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("read");
            // The code only: not the tests, not the docs.
            let code = text.split("#[cfg(test)]").next().unwrap_or("");
            for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
                let mut rest = line;
                while let Some(at) = rest.find("\"SHM") {
                    let tag = rest.get(at + 1..at + 8).unwrap_or("");
                    rest = &rest[at + 1..];
                    assert!(
                        tag.len() == 7 && tag[3..].bytes().all(|b| b.is_ascii_digit()),
                        "{tag:?} in {path:?}"
                    );
                    if let Some(first) = seen.insert(tag.to_string(), path.clone()) {
                        panic!("{tag} used twice: {first:?} and {path:?}");
                    }
                }
            }
        }
        assert!(seen.len() >= 20, "only {} tags found", seen.len());
    }
}
