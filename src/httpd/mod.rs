//! The httpd side: the `shm` socache provider's callbacks behind the C
//! glue in `apache-glue/mod_socache_shm.c`.
//!
//! - [`bindings`]: bindgen's output over the installed httpd/APR headers.
//! - [`provider`]: the `extern "C"` callbacks (create, init, destroy, store,
//!   retrieve, remove, status, iterate), each behind a panic boundary.
//! - [`pools`]: typed wrappers over the APR pool calls, and where the
//!   anonymous segments' memfds are kept across restarts.
//! - [`log`]: `ap_log_error` with the module's log index; the panic hook.
//! - [`status`]: the figures as mod_status HTML and `?auto` lines.
//! - `farm`: the farm tier (Redis behind the local cache) as httpd runs it:
//!   checked at configuration time, built at init, used by children.

mod bindings;
mod farm;
pub(crate) mod log;
mod pools;
pub mod provider;
mod status;
