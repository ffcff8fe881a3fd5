//! The farm tier (`socache_shm_farm`) as httpd runs it, behind the local
//! cache: what the provider's callbacks do with it is in `provider.rs`
//! (store: local, then written to Redis; retrieve: local, then one bounded GET on a
//! miss, copied into the local segment; remove: both).
//!
//! When each part happens, and in which process:
//!
//! ```text
//!  parent, config read ──► plan()   check the URL, read the key file (as
//!                                   the user httpd starts as, once), check
//!                                   the TLS files and socket: a bad
//!                                   value fails `apachectl -t` here
//!  parent, post_config ──► start()  Farm::new: the TLS context (CA store
//!                                   read once) and the addresses resolved;
//!                                   no socket, no thread (the parent
//!                                   unloads this DSO on restart; it must
//!                                   own nothing live)
//!  child, child_init  ──► warm_up() one connection, before it serves
//!  child, requests     ──►          the farm's link: connections, made and
//!                                   used on the calling thread
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use socache_shm_farm::endpoint::{Endpoint, TlsFiles};
use socache_shm_farm::keys::FarmKeys;
use socache_shm_farm::seal::Sealer;
use socache_shm_farm::{Events, Farm, FarmConfig, Problem};

use super::bindings::{self as b, server_rec};
use super::log::{self, Level};
use crate::spec::farm::{Redis, Seal};
use crate::spec::FarmSpec;

/// The one warning of `seal=off`, at `apachectl -t` and at every start.
pub(crate) const UNSEALED_WARNING: &str = "seal=off: session values, TLS master secrets included, cross the network and sit in Redis in clear";

/// What `create` read and checked; `init` turns it into a [`Farm`] once it
/// knows the consumer's name (the keys' namespace).
pub(crate) struct FarmPlan {
    endpoint: Endpoint,
    replica: Option<Endpoint>,
    tls: TlsFiles,
    timeout: Duration,
    sealer: Sealer,
    prefix: String,
}

impl FarmPlan {
    /// Whether values cross the network in clear (`seal=off`).
    pub(crate) fn unsealed(&self) -> bool {
        self.sealer.is_off()
    }

    /// One line for the error log: where the second tier is (no password).
    pub(crate) fn describe(&self) -> String {
        format!(
            "{}{} (timeout {} ms, prefix {:?}, {})",
            self.endpoint,
            self.replica
                .as_ref()
                .map(|r| format!(", lookups from the replica {r}"))
                .unwrap_or_default(),
            self.timeout.as_millis(),
            self.prefix,
            if self.unsealed() {
                "values NOT sealed"
            } else {
                "values sealed"
            }
        )
    }
}

/// Check the farm options against this machine and read the key file.
/// `resolve` makes a configured path absolute (ServerRoot-relative, as
/// httpd does for every file it names).
pub(crate) fn plan(
    spec: &FarmSpec,
    resolve: impl Fn(&Path) -> Result<PathBuf, String>,
) -> Result<FarmPlan, String> {
    let endpoint = match &spec.redis {
        Redis::Server(url) => Endpoint::parse(url),
        Redis::Cluster(list) => Endpoint::parse_cluster(list),
        Redis::Sentinel { sentinels, master } => Endpoint::parse_sentinel(sentinels, master),
        Redis::Memcache(list) => Endpoint::parse_memcache(list),
    }
    .map_err(|e| format!("Invalid argument: {e}"))?;
    let replica = spec
        .replica
        .as_deref()
        .map(Endpoint::parse)
        .transpose()
        .map_err(|e| format!("Invalid argument: redis-replica=: {e}"))?;
    if let Some(r) = &replica {
        if !r.is_unix() && r.is_tls() != endpoint.is_tls() {
            return Err(format!(
                "Invalid argument: redis-replica={r} and the master {endpoint} must both use TLS (rediss://) or both not (or the replica a Unix socket)"
            ));
        }
    }
    let resolve_opt = |p: &Option<PathBuf>| p.as_deref().map(&resolve).transpose();
    let tls = TlsFiles {
        ca: resolve_opt(&spec.ca)?,
        cert: resolve_opt(&spec.cert)?,
        key: resolve_opt(&spec.key)?,
    };
    let sealer = match &spec.seal {
        Seal::Off => Sealer::off(),
        Seal::File(path) => {
            let path = resolve(path)?;
            Sealer::keys(FarmKeys::load(&path).map_err(|e| format!("Invalid argument: {e}"))?)
        }
    };
    let plan = FarmPlan {
        endpoint,
        replica,
        tls,
        timeout: spec.timeout,
        sealer,
        prefix: spec.prefix.clone(),
    };
    // What Farm::new would refuse (TLS files unreadable, a client
    // certificate without its key, TLS files with redis://) fails here,
    // at configuration time, rather than at start.
    socache_shm_farm::check(&plan.endpoint, &plan.tls)
        .map_err(|e| format!("Invalid argument: {e}"))?;
    if let Some(r) = &plan.replica {
        socache_shm_farm::check(r, &TlsFiles::default())
            .map_err(|e| format!("Invalid argument: redis-replica=: {e}"))?;
    }
    Ok(plan)
}

/// Build the instance's [`Farm`] (in the parent, at `init`): clients only.
///
/// # Safety
/// `s` is the valid server of `init`, which outlives every child of this
/// configuration generation (it lives in pconf).
pub(crate) unsafe fn start(
    plan: FarmPlan,
    namespace: &str,
    s: *const server_rec,
    home_pid: libc::pid_t,
    max_value: usize,
) -> Result<Farm, String> {
    let config = FarmConfig {
        endpoint: plan.endpoint,
        replica: plan.replica,
        tls: plan.tls,
        timeout: plan.timeout,
        sealer: plan.sealer,
        prefix: plan.prefix,
        namespace: namespace.to_string(),
        connections: threads_per_child(),
        max_value,
        home_pid: Some(home_pid),
    };
    Farm::new(config, Box::new(ErrorLog { server: s as usize }))
        .map_err(|e| format!("the farm tier: {e}"))
}

/// How many threads of a child may be in a handshake at once (1 for
/// prefork; ThreadsPerChild for event and worker), and so the most farm
/// connections a child needs: one per thread, as httpd's own `redis:`
/// provider keeps.
fn threads_per_child() -> usize {
    let mut threads: std::ffi::c_int = 0;
    // SAFETY: ap_mpm_query writes one int through a valid pointer.
    let rv = unsafe { b::ap_mpm_query(b::AP_MPMQ_MAX_THREADS as _, &raw mut threads) };
    if rv == b::APR_SUCCESS as _ && threads > 0 {
        usize::try_from(threads).unwrap_or(1).min(1024)
    } else {
        1
    }
}

/// The farm's reports, as lines in httpd's error log: once when the
/// breaker opens, once when it closes, once when a persistent failure
/// starts and once when it ends; never per request.
struct ErrorLog {
    /// The `server_rec` of `init` (as an address: it is only passed back to
    /// `ap_log_error`, from any thread of the child).
    server: usize,
}

impl Events for ErrorLog {
    fn breaker_opened(&self, why: &str) {
        log::write(
            self.server as *const server_rec,
            Level::Warning,
            0,
            "SHM0401",
            &format!(
                "farm tier: Redis failed ({why}); the circuit breaker opened: \
                 this host serves from its local cache alone until a probe succeeds"
            ),
        );
    }

    fn breaker_closed(&self, was_open_for: Duration) {
        log::write(
            self.server as *const server_rec,
            Level::Notice,
            0,
            "SHM0402",
            &format!(
                "farm tier: Redis answers again; the circuit breaker closed after {:.1} s",
                was_open_for.as_secs_f64()
            ),
        );
    }

    fn problem_started(&self, problem: Problem, why: &str) {
        log::write(
            self.server as *const server_rec,
            Level::Err,
            0,
            "SHM0403",
            &format!(
                "farm tier: {} failing: {why}; said once, until they work again \
                 (counted in FarmErrorReplies, FarmBadReplies, FarmSealFailures)",
                problem.label()
            ),
        );
    }

    fn problem_ended(&self, problem: Problem, lasted: Duration) {
        log::write(
            self.server as *const server_rec,
            Level::Notice,
            0,
            "SHM0404",
            &format!(
                "farm tier: {} work again, after failing for {:.1} s",
                problem.label(),
                lasted.as_secs_f64()
            ),
        );
    }
}
