//! What the `shmcache` inspector prints, as text: kept in the library so
//! that the fuzzer (fuzz/fuzz_targets/inspect.rs) drives exactly the code
//! the tool runs. Every entry point works on a [`Cache`] that passed
//! [`open`]'s check; none panics or waits without a bound on any file.

use std::ffi::CStr;
use std::fmt::Write as _;
use std::os::raw::{c_char, c_int, c_long};
use std::path::Path;

use socache_shm_engine::figures::{figures, Figure};
use socache_shm_engine::{Cache, ControlFlow, Stats};
use std::sync::atomic::{AtomicU64, Ordering};

pub mod prometheus;

/// Attach to the segment at `path` and check it: a file that fails its
/// check is reported as corrupt, never read further (`stat`, `dump`) or
/// written (`flush`, `remove`).
pub fn open(path: &Path) -> Result<Cache, String> {
    let cache = Cache::attach(path).map_err(|e| e.to_string())?;
    cache.check().map_err(|e| {
        format!(
            "{} fails its check, refusing to use it: {e}",
            path.display()
        )
    })?;
    Ok(cache)
}

/// `shmcache check`: the verdict line, or what is wrong.
pub fn check(cache: &Cache) -> Result<String, String> {
    cache.check()?;
    Ok(format!(
        "ok: {} entries, arena and index agree, every checksum matches",
        cache.stats().entries
    ))
}

/// The cache's figures, then the farm tier's when the segment has served
/// one (a farm tier writes its counters and breaker into the segment's
/// tier words; a cache without one leaves them zero), then the session
/// tickets' when it holds ticket keys (`tickets=` counts into its own
/// words of the same region).
fn all_figures(cache: &Cache, s: &Stats) -> Vec<Figure> {
    let mut all = figures(cache, s);
    let words = cache.tier_words();
    let tickets = socache_shm_farm::ticket_words(words);
    let is_ticket_word = |w: &AtomicU64| tickets.iter().any(|t| std::ptr::eq(t, w));
    let nonzero = |w: &AtomicU64| w.load(Ordering::Relaxed) != 0;
    if words.iter().any(|w| nonzero(w) && !is_ticket_word(w)) {
        all.extend(
            socache_shm_farm::figures(words, socache_shm_farm::now_us())
                .into_iter()
                .map(|(key, label, value)| Figure { key, label, value }),
        );
    }
    if tickets.iter().any(nonzero) {
        all.extend(socache_shm_farm::ticket_figures(words).into_iter().map(
            |(key, label, value)| Figure {
                key,
                label,
                value: value.to_string(),
            },
        ));
    }
    all
}

/// `shmcache stat`: the figures, as `Key: value` lines or one JSON object.
pub fn stat(cache: &Cache, json: bool, per_shard: bool) -> String {
    let total = cache.stats();
    let shards: Vec<Stats> = if per_shard {
        cache.shard_stats()
    } else {
        Vec::new()
    };
    let mut out = String::new();
    if json {
        let obj = |s: &Stats| {
            all_figures(cache, s)
                .iter()
                .map(|f| {
                    let v = &f.value;
                    if v.parse::<u64>().is_ok() {
                        format!("\"{}\":{v}", f.key)
                    } else {
                        format!("\"{}\":\"{v}\"", f.key)
                    }
                })
                .collect::<Vec<_>>()
                .join(",")
        };
        out.push('{');
        out.push_str(&obj(&total));
        if per_shard {
            let list: Vec<String> = shards.iter().map(|s| format!("{{{}}}", obj(s))).collect();
            let _ = write!(out, ",\"shards\":[{}]", list.join(","));
        }
        out.push_str("}\n");
        return out;
    }
    for f in all_figures(cache, &total) {
        let _ = writeln!(out, "{}: {}", f.key, f.value);
    }
    for (i, s) in shards.iter().enumerate() {
        let _ = writeln!(
            out,
            "shard {i}: entries {} used {} free {} largest_free {} hits {} misses {} evictions {} lock_waits {} recoveries {}",
            s.entries, s.bytes_used, s.bytes_free, s.largest_free_block, s.hits, s.misses,
            s.evictions, s.lock_waits, s.recoveries
        );
    }
    out
}

/// `shmcache stat --prometheus`: the figures of [`stat`] in the Prometheus
/// text format, labelled with `segment` (the segment file's path); with
/// `per_shard`, each shard's own figures too (see [`prometheus`]).
pub fn stat_prometheus(cache: &Cache, segment: &str, per_shard: bool) -> String {
    let total = cache.stats();
    let figures = all_figures(cache, &total);
    let shards: Vec<(Stats, Vec<Figure>)> = if per_shard {
        cache
            .shard_stats()
            .into_iter()
            .map(|s| {
                let f = all_figures(cache, &s);
                (s, f)
            })
            .collect()
    } else {
        Vec::new()
    };
    let (counters, shard_counters) = prometheus::counter_keys();
    prometheus::exposition(
        segment,
        &total,
        &figures,
        &shards,
        &counters,
        &shard_counters,
    )
}

/// `shmcache dump`: one line per live entry; never key material.
pub fn dump(cache: &Cache) -> String {
    let now = cache.now();
    let mut out = String::new();
    cache.iterate(&mut |id, value, expiry| {
        let left = expiry.as_secs().saturating_sub(now.as_secs()).max(0);
        let _ = write!(out, "{} {} bytes {}s", to_hex(id), value.len(), left);
        if let Some(tls) = TlsSession::parse(value) {
            let _ = write!(
                out,
                " {} {} sni={} created={}",
                tls.protocol, tls.cipher, tls.sni, tls.created
            );
        }
        out.push('\n');
        ControlFlow::Continue(())
    });
    out
}

pub fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The public facts of a DER-encoded TLS session; never key material.
struct TlsSession {
    protocol: String,
    cipher: String,
    sni: String,
    created: i64,
}

extern "C" {
    // In libssl since 1.1.1; openssl-sys does not declare them.
    fn SSL_SESSION_get0_cipher(
        s: *const openssl_sys::SSL_SESSION,
    ) -> *const openssl_sys::SSL_CIPHER;
    fn SSL_SESSION_get0_hostname(s: *const openssl_sys::SSL_SESSION) -> *const c_char;
}

fn c_text(p: *const c_char) -> String {
    if p.is_null() {
        "-".into()
    } else {
        // SAFETY: OpenSSL returns NUL-terminated strings owned by the session
        // or static tables, valid until the session is freed (after this copy).
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }
}

impl TlsSession {
    fn parse(der: &[u8]) -> Option<TlsSession> {
        let len = c_long::try_from(der.len()).ok()?;
        openssl_sys::init();
        let mut p = der.as_ptr();
        // SAFETY: p/len describe `der`, which outlives the call; d2i only reads
        // them and returns a new session or NULL.
        let s = unsafe { openssl_sys::d2i_SSL_SESSION(std::ptr::null_mut(), &raw mut p, len) };
        if s.is_null() {
            return None;
        }
        // SAFETY: s is a valid session until SSL_SESSION_free below; the
        // getters only read it.
        let out = unsafe {
            let version: c_int = openssl_sys::SSL_SESSION_get_protocol_version(s);
            let protocol = match version {
                0x0301 => "TLSv1".into(),
                0x0302 => "TLSv1.1".into(),
                0x0303 => "TLSv1.2".into(),
                0x0304 => "TLSv1.3".into(),
                v => format!("0x{v:04x}"),
            };
            let c = SSL_SESSION_get0_cipher(s);
            let cipher = if c.is_null() {
                "-".into()
            } else {
                c_text(openssl_sys::SSL_CIPHER_get_name(c))
            };
            TlsSession {
                protocol,
                cipher,
                sni: c_text(SSL_SESSION_get0_hostname(s)),
                created: openssl_sys::SSL_SESSION_get_time(s) as i64,
            }
        };
        // SAFETY: s came from d2i_SSL_SESSION and is freed exactly once.
        unsafe { openssl_sys::SSL_SESSION_free(s) };
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use socache_shm_engine::CacheConfig;

    /// The farm tier's figures appear once the tier words hold something,
    /// and only then; the JSON form carries them too.
    #[test]
    fn farm_figures_follow_the_tier_words() {
        let cache = Cache::create(&CacheConfig::new(64 * 1024)).expect("create");
        let plain = stat(&cache, false, false);
        assert!(plain.contains("CacheType: SHM"), "{plain}");
        assert!(!plain.contains("Farm"), "{plain}");
        // What the farm tier does on a remote hit: its first counter word
        // (after the breaker's four).
        cache.tier_words()[4].fetch_add(2, Ordering::Relaxed);
        let text = stat(&cache, false, false);
        assert!(text.contains("FarmRemoteHits: 2"), "{text}");
        assert!(text.contains("FarmBreaker: closed"), "{text}");
        let json = stat(&cache, true, false);
        assert!(json.contains("\"FarmRemoteHits\":2"), "{json}");
        assert!(json.contains("\"FarmBreaker\":\"closed\""), "{json}");
    }
}
