//! `shmcache`: look into, check and empty a file-backed mod_socache_shm segment
//! while httpd uses it.
//!
//! ```text
//! shmcache stat  FILE [--json] [--shards]   figures (as in server-status)
//! shmcache dump  FILE                       one line per live entry, no secrets
//! shmcache check FILE                       verify arena and index agree
//! shmcache flush FILE                       forget every entry now (zeroed)
//! shmcache remove FILE ID_HEX               forget one entry
//! ```
//!
//! Every command takes each shard's lock only for as long as httpd itself
//! would for one operation (dump copies a shard's entries out, then prints).

use std::ffi::CStr;
use std::os::raw::{c_char, c_int, c_long};
use std::path::Path;
use std::process::ExitCode;

use socache_shm::engine::{Cache, ControlFlow, Stats};
use socache_shm::figures::figures;

const USAGE: &str = "usage: shmcache stat FILE [--json] [--shards]
       shmcache dump FILE
       shmcache check FILE
       shmcache flush FILE
       shmcache remove FILE ID_HEX";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("shmcache: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<(), String> {
    let (cmd, file) = match args {
        [cmd, file, ..] => (cmd.as_str(), Path::new(file)),
        _ => return Err(USAGE.into()),
    };
    let flags = &args[2..];
    // A mistyped command is reported as such, not as whatever is wrong with FILE.
    if !["stat", "dump", "check", "flush", "remove"].contains(&cmd) {
        return Err(format!("unknown command {cmd:?}\n{USAGE}"));
    }
    let cache = Cache::attach(file).map_err(|e| e.to_string())?;
    match cmd {
        "stat" => {
            let json = flags.iter().any(|f| f == "--json");
            let per_shard = flags.iter().any(|f| f == "--shards");
            stat(&cache, json, per_shard);
            Ok(())
        }
        "dump" => {
            dump(&cache);
            Ok(())
        }
        "check" => {
            cache.check()?;
            println!(
                "ok: {} entries, arena and index agree",
                cache.stats().entries
            );
            Ok(())
        }
        "flush" => {
            let n = cache.stats().entries;
            cache.flush();
            println!("flushed {n} entries");
            Ok(())
        }
        "remove" => {
            let hex = flags.first().ok_or(USAGE)?;
            let id = from_hex(hex).ok_or_else(|| format!("{hex:?} is not a hex id"))?;
            if cache.remove(&id) {
                println!("removed");
                Ok(())
            } else {
                Err("no live entry with that id".into())
            }
        }
        other => Err(format!("unknown command {other:?}\n{USAGE}")),
    }
}

fn stat(cache: &Cache, json: bool, per_shard: bool) {
    let total = cache.stats();
    let shards: Vec<Stats> = if per_shard {
        cache.shard_stats()
    } else {
        Vec::new()
    };
    if json {
        let obj = |s: &Stats| {
            figures(cache, s)
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
        let mut out = format!("{{{}", obj(&total));
        if per_shard {
            let list: Vec<String> = shards.iter().map(|s| format!("{{{}}}", obj(s))).collect();
            out.push_str(&format!(",\"shards\":[{}]", list.join(",")));
        }
        out.push('}');
        println!("{out}");
        return;
    }
    for f in figures(cache, &total) {
        println!("{}: {}", f.key, f.value);
    }
    for (i, s) in shards.iter().enumerate() {
        println!(
            "shard {i}: entries {} used {} free {} largest_free {} hits {} misses {} evictions {} lock_waits {} recoveries {}",
            s.entries, s.bytes_used, s.bytes_free, s.largest_free_block, s.hits, s.misses,
            s.evictions, s.lock_waits, s.recoveries
        );
    }
}

fn dump(cache: &Cache) {
    let now = cache.now();
    cache.iterate(&mut |id, value, expiry| {
        let left = (expiry.as_secs() - now.as_secs()).max(0);
        let mut line = format!("{} {} bytes {}s", to_hex(id), value.len(), left);
        if let Some(tls) = TlsSession::parse(value) {
            line.push_str(&format!(
                " {} {} sni={} created={}",
                tls.protocol, tls.cipher, tls.sni, tls.created
            ));
        }
        println!("{line}");
        ControlFlow::Continue(())
    });
}

fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
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

fn cstr(p: *const c_char) -> String {
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
        openssl_sys::init();
        let mut p = der.as_ptr();
        // SAFETY: p/len describe `der`, which outlives the call; d2i only reads
        // them and returns a new session or NULL.
        let s = unsafe {
            openssl_sys::d2i_SSL_SESSION(std::ptr::null_mut(), &mut p, der.len() as c_long)
        };
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
                cstr(openssl_sys::SSL_CIPHER_get_name(c))
            };
            TlsSession {
                protocol,
                cipher,
                sni: cstr(SSL_SESSION_get0_hostname(s)),
                created: openssl_sys::SSL_SESSION_get_time(s) as i64,
            }
        };
        // SAFETY: s came from d2i_SSL_SESSION and is freed exactly once.
        unsafe { openssl_sys::SSL_SESSION_free(s) };
        Some(out)
    }
}
