//! `shmcache`: look into, check and empty a file-backed mod_socache_shm segment
//! while httpd uses it.
//!
//! The command line is described once, in [`HELP`]: `shmcache --help` prints
//! it and `scripts/gen-manpage.sh` turns the same text into `shmcache(8)`.
//! Every command takes each shard's lock only for as long as httpd itself
//! would for one operation (dump copies a shard's entries out, then prints).

use std::ffi::CStr;
use std::os::raw::{c_char, c_int, c_long};
use std::path::Path;
use std::process::ExitCode;

use socache_shm::engine::{Cache, ControlFlow, Stats};
use socache_shm::figures::figures;

/// The help text, and the source of the man page. Its shape is what
/// scripts/gen-manpage.sh reads: the first line is "name - summary"; a line
/// in capitals is a section heading; in a section, a line indented by two
/// spaces whose term is followed by two or more spaces is a term and its
/// description (deeper-indented lines continue the description); other
/// indented lines are running text; USAGE and EXAMPLES are kept verbatim.
const HELP: &str = "\
shmcache - inspect, check and empty a mod_socache_shm segment

USAGE
  shmcache stat FILE [--json] [--shards]
  shmcache dump FILE
  shmcache check FILE
  shmcache flush FILE
  shmcache remove FILE ID_HEX
  shmcache -h | --help
  shmcache --version

DESCRIPTION
  shmcache opens FILE, the file-backed shared-memory segment of a
  mod_socache_shm cache (for example SSLSessionCache
  shm:/run/apache2/ssl_scache(512000)), while httpd uses it. Every command
  takes each shard's lock only for as long as httpd itself would for one
  operation. An anonymous segment (shm or shm:(SIZE)) has no file: read
  its figures from server-status instead.

COMMANDS
  stat FILE    Print the cache's figures as Key: value lines, under the
               keys of server-status (CacheCurrentEntries,
               CacheRetrieveHitCount, ...).
  dump FILE    Print one line per live entry: id, size, seconds left and,
               for a TLS session, its protocol, cipher, SNI name and
               creation time. Never key material.
  check FILE   Verify that the arena and the index agree.
  flush FILE   Forget every entry now (their bytes are zeroed).
  remove FILE ID_HEX
               Forget the entry whose id is ID_HEX (hexadecimal).

OPTIONS
  --json       stat: print the figures as one JSON object.
  --shards     stat: also print each shard's figures.
  -h, --help   Print this help and exit.
  --version    Print the version and exit.
  --           End of options: what follows is FILE or ID_HEX even if it
               starts with a dash.

EXIT STATUS
  0            Success.
  1            The command failed: FILE is not a segment shmcache can
               attach, check found a fault, or remove found no such entry.
  2            Usage error: unknown command or option, missing or extra
               argument.

EXAMPLES
  shmcache stat /run/apache2/ssl_scache
  shmcache stat /run/apache2/ssl_scache --json --shards
  shmcache dump /run/apache2/ssl_scache

SEE ALSO
  apache2ctl(8), a2enmod(8); /usr/share/doc/libapache2-mod-socache-shm/
";

/// The USAGE section of [`HELP`], printed with every usage error.
fn usage() -> String {
    let section = HELP
        .split("\n\n")
        .find_map(|block| block.strip_prefix("USAGE\n"))
        .unwrap_or_default();
    let mut out = String::from("usage:");
    for line in section.lines() {
        out.push_str("\n  ");
        out.push_str(line.trim());
    }
    out
}

/// What the command line asks for.
#[derive(Debug, PartialEq)]
enum Request<'a> {
    Help,
    Version,
    Stat {
        file: &'a Path,
        json: bool,
        shards: bool,
    },
    Dump(&'a Path),
    Check(&'a Path),
    Flush(&'a Path),
    Remove(&'a Path, &'a str),
}

/// A command line shmcache does not accept (exit status 2).
#[derive(Debug, PartialEq)]
struct UsageError(String);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let request = match parse(&args) {
        Ok(r) => r,
        Err(UsageError(msg)) => {
            eprintln!("shmcache: {msg}\n{}", usage());
            return ExitCode::from(2);
        }
    };
    match run(request) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("shmcache: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// Reads the command line: `-h`/`--help` or `--version` anywhere (before a
/// `--`) wins; otherwise a known command, only the options that command
/// takes, and exactly its operands.
fn parse(args: &[String]) -> Result<Request<'_>, UsageError> {
    let mut options = Vec::new();
    let mut operands = Vec::new();
    let mut only_operands = false;
    for a in args {
        if only_operands {
            operands.push(a.as_str());
        } else if a == "--" {
            only_operands = true;
        } else if a == "-h" || a == "--help" {
            return Ok(Request::Help);
        } else if a == "--version" {
            return Ok(Request::Version);
        } else if a.len() > 1 && a.starts_with('-') {
            options.push(a.as_str());
        } else {
            operands.push(a.as_str());
        }
    }
    let Some((&cmd, operands)) = operands.split_first() else {
        return Err(UsageError(match options.first() {
            Some(o) => format!("unknown option {o:?}"),
            None => "missing command".into(),
        }));
    };
    let (allowed, names): (&[&str], &[&str]) = match cmd {
        "stat" => (&["--json", "--shards"], &["FILE"]),
        "dump" | "check" | "flush" => (&[], &["FILE"]),
        "remove" => (&[], &["FILE", "ID_HEX"]),
        // A mistyped command is reported as such, not as whatever is wrong with FILE.
        other => return Err(UsageError(format!("unknown command {other:?}"))),
    };
    if let Some(o) = options.iter().find(|o| !allowed.contains(o)) {
        return Err(UsageError(format!("unknown option {o:?} for {cmd}")));
    }
    if operands.len() < names.len() {
        return Err(UsageError(format!(
            "{cmd}: missing {}",
            names[operands.len()..].join(" ")
        )));
    }
    if let Some(extra) = operands.get(names.len()) {
        return Err(UsageError(format!("{cmd}: unexpected argument {extra:?}")));
    }
    let file = Path::new(operands[0]);
    Ok(match cmd {
        "stat" => Request::Stat {
            file,
            json: options.contains(&"--json"),
            shards: options.contains(&"--shards"),
        },
        "dump" => Request::Dump(file),
        "check" => Request::Check(file),
        "flush" => Request::Flush(file),
        _ => Request::Remove(file, operands[1]),
    })
}

fn run(request: Request<'_>) -> Result<(), String> {
    let attach = |file: &Path| Cache::attach(file).map_err(|e| e.to_string());
    match request {
        Request::Help => print!("{HELP}"),
        Request::Version => println!("shmcache (mod_socache_shm) {}", env!("CARGO_PKG_VERSION")),
        Request::Stat { file, json, shards } => stat(&attach(file)?, json, shards),
        Request::Dump(file) => dump(&attach(file)?),
        Request::Check(file) => {
            let cache = attach(file)?;
            cache.check()?;
            println!(
                "ok: {} entries, arena and index agree",
                cache.stats().entries
            );
        }
        Request::Flush(file) => {
            let cache = attach(file)?;
            let n = cache.stats().entries;
            cache.flush();
            println!("flushed {n} entries");
        }
        Request::Remove(file, hex) => {
            let id = from_hex(hex).ok_or_else(|| format!("{hex:?} is not a hex id"))?;
            if !attach(file)?.remove(&id) {
                return Err("no live entry with that id".into());
            }
            println!("removed");
        }
    }
    Ok(())
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
