//! mod_ssl's session tickets sealed under the keys of module `tickets`:
//! the `init_server` hook that installs the callback on each virtual
//! host's `SSL_CTX`, and the callback itself.
//!
//! Where this runs (httpd 2.4 `modules/ssl/ssl_engine_init.c`,
//! `ssl_init_Module`, mod_ssl's post_config): `ssl_scache_init` (which
//! calls this provider's `init`: the segment is mapped), then
//! `ssl_init_ConfigureServer` for every server (which creates each
//! `SSL_CTX` and, in `ssl_init_server_ctx`, sets mod_ssl's own ticket
//! keys: OpenSSL's random ones, or `SSLSessionTicketKeyFile`'s callback),
//! then `ssl_init_CheckServers`, then `ssl_run_init_server(s, p, 0,
//! sc->server->ssl_ctx)` for every server with SSL enabled (and with
//! `is_proxy` 1 for proxy contexts). So the callback set here replaces
//! mod_ssl's, in the parent, before the children fork; they inherit it.
//!
//! The callback runs in children, once per ticket issued or offered. It
//! reads keys with the engine's lock-free retrieve; it makes one only when
//! one is missing (module `tickets`, rules 1 and 2). It never unwinds into
//! OpenSSL (panic boundary: [`guard`]); whatever fails is 0: no ticket, or
//! a full handshake.

use std::ffi::{c_char, c_int, c_long, c_uchar, c_void};
use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

use openssl_sys::{EVP_CIPHER_CTX, EVP_MAC_CTX, OSSL_PARAM, SSL, SSL_CTX};

use super::bindings::{apr_pool_t, server_rec};
use super::codes::InitError;
use super::codes::EGENERAL;
use super::instance::{Instance, LIVE};
use super::log::{self, log, Level};
use super::provider::guard;
use super::ticket_counters::{self, Counter};
use super::tickets::{self, Found, Made, TicketKey, TicketKeys, NAME_LEN};
use crate::spec::TicketSpec;

// libssl / libcrypto (OpenSSL 3) functions openssl-sys does not declare.
extern "C" {
    fn SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx: *mut SSL_CTX, cb: Option<TicketKeyCb>) -> c_int;
    fn SSL_CTX_get_timeout(ctx: *const SSL_CTX) -> c_long;
    fn OSSL_PARAM_construct_utf8_string(
        key: *const c_char,
        buf: *mut c_char,
        bsize: usize,
    ) -> OSSL_PARAM;
}

/// `SSL_CTX_set_tlsext_ticket_key_evp_cb`'s callback type.
type TicketKeyCb = unsafe extern "C" fn(
    *mut SSL,
    *mut c_uchar,
    *mut c_uchar,
    *mut EVP_CIPHER_CTX,
    *mut EVP_MAC_CTX,
    c_int,
) -> c_int;

/// What the init_server hook returns (a RUN_ALL hook: OK lets the others run).
const OK: c_int = 0;

/// The instance whose segment holds the ticket keys (at most one: two
/// fail `apachectl -t`), set by its `init`, cleared by its `shutdown`.
static TICKETS: AtomicPtr<Instance> = AtomicPtr::new(ptr::null_mut());

/// The `server_rec` of that `init` (as an address), for the callback's log.
static SERVER: AtomicUsize = AtomicUsize::new(0);

/// `init` of an instance with `tickets=`: only mod_ssl's session cache
/// ("mod_ssl-sess") may hold ticket keys, and only one cache.
pub(crate) fn register(
    inst: &Instance,
    cname: &str,
    s: *const server_rec,
) -> Result<(), InitError> {
    if cname != "mod_ssl-sess" {
        return Err(InitError::new(
            EGENERAL,
            format!(
                "tickets= is only for SSLSessionCache (mod_ssl's session cache), \
                 not for the cache {cname:?}"
            ),
        ));
    }
    let me = ptr::from_ref(inst).cast_mut();
    let before = TICKETS.swap(me, Ordering::AcqRel);
    if !before.is_null() && before != me {
        // SAFETY: the parent, single-threaded: no instance is freed meanwhile
        // (a registered one leaves in `shutdown` before its cleanup).
        let still_live = unsafe {
            let mut found = false;
            LIVE.for_each(|i| found |= ptr::eq(i, before));
            found
        };
        if still_live {
            TICKETS.store(before, Ordering::Release);
            return Err(InitError::new(
                EGENERAL,
                "tickets= is given on two caches; ticket keys live in one (SSLSessionCache's)",
            ));
        }
    }
    SERVER.store(s as usize, Ordering::Release);
    if let Some(cache) = inst.cache() {
        ticket_counters::map(cache.tier_words());
    }
    Ok(())
}

/// `shutdown` of an instance: forget it if it holds the ticket keys.
pub(crate) fn unregister(inst: &Instance) {
    let me = ptr::from_ref(inst).cast_mut();
    if TICKETS
        .compare_exchange(me, ptr::null_mut(), Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
    {
        ticket_counters::unmap();
    }
}

/// The registered instance and its ticket options.
fn registered<'a>() -> Option<(&'a Instance, TicketSpec)> {
    let p = TICKETS.load(Ordering::Acquire);
    // SAFETY: a registered instance is live until its `shutdown` (parent,
    // single-threaded) unregisters it; children inherit the pointer with
    // their copy of the instance, which they never free.
    let inst = unsafe { p.as_ref() }?;
    Some((inst, inst.ticket_spec()?))
}

fn server() -> *const server_rec {
    SERVER.load(Ordering::Acquire) as *const server_rec
}

/// mod_ssl's optional hook `init_server(s, p, is_proxy, ctx)`, forwarded
/// by apache-glue/mod_socache_shm.c: for a server context (not a proxy's)
/// with session tickets on, while a cache has `tickets=`, install the
/// callback.
///
/// # Safety
/// Called by mod_ssl in the parent, single-threaded, with a valid server
/// and context.
#[no_mangle]
pub unsafe extern "C" fn socache_shm_ssl_init_server(
    s: *mut server_rec,
    _p: *mut apr_pool_t,
    is_proxy: c_int,
    ctx: *mut SSL_CTX,
) -> c_int {
    guard(s, OK, || {
        let Some((inst, spec)) = registered() else {
            return OK;
        };
        if is_proxy != 0 || ctx.is_null() {
            return OK;
        }
        // SAFETY: `ctx` is mod_ssl's valid context (caller).
        let options = unsafe { openssl_sys::SSL_CTX_get_options(ctx) };
        if options & openssl_sys::SSL_OP_NO_TICKET != 0 {
            log!(
                s,
                Level::Debug,
                "SHM0601",
                "SSLSessionTickets off here: tickets= does not apply"
            );
            return OK;
        }
        // SAFETY: as above.
        let lifetime = unsafe { SSL_CTX_get_timeout(ctx) };
        let keeps = spec.guaranteed_lifetime().as_secs();
        if u64::try_from(lifetime).unwrap_or(0) > keeps {
            log!(
                s,
                Level::Warning,
                "SHM0602",
                "tickets={} ticket-keys={}: a ticket lives {lifetime} s (SSLSessionCacheTimeout) \
                 but is only sure to open for {keys} s after its period: tickets made late in a \
                 period will make full handshakes before they expire",
                tickets::human(spec.period),
                spec.keys,
                keys = keeps
            );
        }
        // SAFETY: as above; the callback is a function of this DSO, which
        // stays loaded as long as the context (both live in pconf; the DSO
        // is unloaded after pconf's cleanups).
        if unsafe { SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, Some(ticket_key_cb)) } != 1 {
            log!(
                s,
                Level::Err,
                "SHM0603",
                "could not install the session-ticket key callback; this server keeps mod_ssl's ticket keys"
            );
            return OK;
        }
        make_keys_before_fork(inst, spec, s);
        log!(
            s,
            Level::Info,
            "SHM0604",
            "session tickets sealed under the cache's keys: {}{}",
            tickets::describe(spec),
            if inst.has_farm() {
                ", agreed through the farm tier"
            } else {
                ""
            }
        );
        OK
    })
}

/// Rule 5 of module `tickets`: without a farm tier, the parent makes the
/// keys children will encrypt with first.
fn make_keys_before_fork(inst: &Instance, spec: TicketSpec, s: *const server_rec) {
    if inst.has_farm() {
        return;
    }
    let Some(tiers) = inst.tiers() else {
        return;
    };
    let keys = TicketKeys::new(tiers, spec);
    if keys.for_encrypt(said).is_none() {
        log!(
            s,
            Level::Warning,
            "SHM0605",
            "could not make a session-ticket key (no randomness?); children will try again"
        );
    }
}

/// OpenSSL's ticket-key callback: `enc` 1 to seal a new ticket (fill the
/// name and IV, set up cipher and MAC; 1, or 0 for no ticket), 0 to open
/// one (1: newest key; 2: older key, renew; 0: unknown or expired, a full
/// handshake).
unsafe extern "C" fn ticket_key_cb(
    _ssl: *mut SSL,
    name: *mut c_uchar,
    iv: *mut c_uchar,
    cctx: *mut EVP_CIPHER_CTX,
    mctx: *mut EVP_MAC_CTX,
    enc: c_int,
) -> c_int {
    guard(server(), 0, || {
        let Some((inst, spec)) = registered() else {
            return 0;
        };
        let Some(tiers) = inst.tiers() else {
            return 0;
        };
        if name.is_null() || iv.is_null() || cctx.is_null() || mctx.is_null() {
            return 0;
        }
        let keys = TicketKeys::new(tiers, spec);
        if enc == 1 {
            let Some(key) = keys.for_encrypt(said) else {
                return 0;
            };
            // SAFETY: OpenSSL passes a 16-byte name buffer and an IV buffer
            // of EVP_MAX_IV_LENGTH (16 for AES-CBC) bytes, and live contexts.
            let sealed = unsafe { seal(&key, name, iv, cctx, mctx) };
            if sealed == 1 {
                ticket_counters::bump(Counter::Issued);
            }
            sealed
        } else {
            let mut wanted = [0u8; NAME_LEN];
            // SAFETY: `name` points at the ticket's 16-byte key name.
            unsafe { ptr::copy_nonoverlapping(name, wanted.as_mut_ptr(), NAME_LEN) };
            let (key, answer, counter) = match keys.for_decrypt(&wanted, said) {
                Some(Found::Newest(key)) => (key, 1, Counter::OpenedNewest),
                Some(Found::Older(key)) => (key, 2, Counter::OpenedOlder),
                None => {
                    ticket_counters::bump(Counter::NotOpened);
                    return 0;
                }
            };
            // SAFETY: `iv` holds the ticket's IV (16 bytes), contexts live.
            if unsafe { open(&key, iv, cctx, mctx) } {
                ticket_counters::bump(counter);
                answer
            } else {
                ticket_counters::bump(Counter::NotOpened);
                0
            }
        }
    })
}

/// Set up a new ticket under `key`: its name, a random IV, AES-256-CBC and
/// HMAC-SHA256. 1, or 0 (no ticket) if OpenSSL refuses.
///
/// # Safety
/// `name` is writable for 16 bytes, `iv` for 16; the contexts are valid.
unsafe fn seal(
    key: &TicketKey,
    name: *mut c_uchar,
    iv: *mut c_uchar,
    cctx: *mut EVP_CIPHER_CTX,
    mctx: *mut EVP_MAC_CTX,
) -> c_int {
    // SAFETY: per the caller.
    unsafe {
        ptr::copy_nonoverlapping(key.name().as_ptr(), name, NAME_LEN);
        if openssl_sys::RAND_bytes(iv, 16) != 1 {
            return 0;
        }
        if !set_mac(key, mctx) {
            return 0;
        }
        let ok = openssl_sys::EVP_EncryptInit_ex(
            cctx,
            openssl_sys::EVP_aes_256_cbc(),
            ptr::null_mut(),
            key.aes().as_ptr(),
            iv,
        );
        c_int::from(ok == 1)
    }
}

/// Set up opening a ticket under `key`.
///
/// # Safety
/// `iv` is readable for 16 bytes; the contexts are valid.
unsafe fn open(
    key: &TicketKey,
    iv: *mut c_uchar,
    cctx: *mut EVP_CIPHER_CTX,
    mctx: *mut EVP_MAC_CTX,
) -> bool {
    // SAFETY: per the caller.
    unsafe {
        set_mac(key, mctx)
            && openssl_sys::EVP_DecryptInit_ex(
                cctx,
                openssl_sys::EVP_aes_256_cbc(),
                ptr::null_mut(),
                key.aes().as_ptr(),
                iv,
            ) == 1
    }
}

/// HMAC-SHA256 under `key`'s MAC key (OpenSSL 3's EVP_MAC parameters).
///
/// # Safety
/// `mctx` is a valid MAC context.
unsafe fn set_mac(key: &TicketKey, mctx: *mut EVP_MAC_CTX) -> bool {
    let mut digest = *b"SHA256\0";
    // SAFETY: the parameters point at `key`'s bytes and `digest`, both
    // alive through the call, which copies them.
    unsafe {
        let params = [
            openssl_sys::OSSL_PARAM_construct_octet_string(
                c"key".as_ptr(),
                key.hmac().as_ptr().cast_mut().cast::<c_void>(),
                key.hmac().len(),
            ),
            OSSL_PARAM_construct_utf8_string(
                c"digest".as_ptr(),
                digest.as_mut_ptr().cast::<c_char>(),
                0,
            ),
            openssl_sys::OSSL_PARAM_construct_end(),
        ];
        openssl_sys::EVP_MAC_CTX_set_params(mctx, params.as_ptr()) == 1
    }
}

/// Say how a key was made, when that is news.
fn said(period: u64, made: Made) {
    let s = server();
    ticket_counters::bump(match made {
        Made::Present => return,
        Made::Local => Counter::KeysMade,
        Made::Agreed => Counter::KeysAgreed,
        Made::AloneFirst | Made::Alone => Counter::KeysAlone,
    });
    match made {
        Made::Present => {}
        Made::Local | Made::Agreed => log!(
            s,
            Level::Debug,
            "SHM0606",
            "session-ticket key of period {period}: {}",
            if made == Made::Local {
                "made"
            } else {
                "agreed through the farm tier"
            }
        ),
        Made::AloneFirst => log::write(
            s,
            Level::Warning,
            0,
            "SHM0607",
            &format!(
                "session-ticket key of period {period}: the farm tier could not be asked, so this \
                 host made its own; tickets it issues with it resume on this host alone \
                 (said once per period)"
            ),
        ),
        Made::Alone => {}
    }
}

/// Figures for server-status: the ticket keys the segment holds, then the
/// host's counters (module `ticket_counters`).
pub(crate) fn figures(inst: &Instance) -> Option<Vec<crate::engine::figures::Figure>> {
    let spec = inst.ticket_spec()?;
    let tiers = inst.tiers()?;
    let keys = TicketKeys::new(tiers, spec);
    let counted = ticket_counters::values().unwrap_or_default();
    let counters =
        socache_shm_farm::TICKET_ROWS
            .iter()
            .zip(counted)
            .map(|(&(key, label), value)| crate::engine::figures::Figure {
                key,
                label,
                value: value.to_string(),
            });
    let mut out = vec![
        crate::engine::figures::Figure {
            key: "TicketKeysHeld",
            label: "session-ticket keys held",
            value: keys.held().to_string(),
        },
        crate::engine::figures::Figure {
            key: "TicketKeyPeriod",
            label: "session-ticket key period (seconds)",
            value: spec.period.as_secs().to_string(),
        },
        crate::engine::figures::Figure {
            key: "TicketKeysDecrypting",
            label: "periods a session-ticket key decrypts for",
            value: spec.keys.to_string(),
        },
    ];
    out.extend(counters);
    Some(out)
}
