//! The httpd side: the `shm` socache provider behind the C glue in
//! `apache-glue/mod_socache_shm.c`.
//!
//! - [`provider`]: the `extern "C"` callbacks (create, init, destroy, store,
//!   retrieve, remove, status, iterate), each a few lines behind a panic
//!   boundary ([`provider::guard`]).
//! - `hooks`: the `child_init` and `monitor` hooks.
//! - `instance`: one configured cache: what it owns, its create / init /
//!   shutdown, and the registry of the live ones the hooks walk.
//! - `segments`: which paths a segment may use, and opening, reattaching
//!   or replacing it across restarts.
//! - `tiers`: the local cache and the farm tier behind it, as one cache.
//! - `farm`: the farm tier (Redis behind the local cache) as httpd runs it:
//!   checked at configuration time, built at init, used by children.
//! - `pools`: typed wrappers over the APR pool calls, and where the
//!   segments' descriptors are kept across restarts.
//! - `codes`: APR status codes and the init error.
//! - `tickets`: session-ticket keys kept in the segment (`tickets=`):
//!   which encrypts, which decrypt, how one is made or agreed.
//! - `ticket_hook`: mod_ssl's `init_server` hook and OpenSSL's ticket-key
//!   callback over them; `ticket_config`: the `tickets=` checks that need
//!   the whole configuration (at `apachectl -t`); `ticket_counters`: the
//!   host's ticket figures, in a page shared by the children.
//! - `log`: `ap_log_error` with the module's log index; the panic hook.
//! - `status`: the figures as mod_status HTML and `?auto` lines.
//! - `bindings`: bindgen's output over the installed httpd/APR headers.

mod bindings;
mod codes;
mod farm;
// hooks, provider and ticket_hook: their `#[no_mangle] pub extern "C"`
// functions leave the crate through the C glue, not through a Rust path.
#[allow(unreachable_pub)]
mod hooks;
mod instance;
pub(crate) mod log;
mod pools;
#[allow(unreachable_pub)]
pub mod provider;
mod segments;
mod status;
mod ticket_config;
mod ticket_counters;
#[allow(unreachable_pub)]
pub mod ticket_hook;
mod tickets;
mod tiers;
