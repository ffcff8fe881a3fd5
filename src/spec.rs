//! The provider argument: what follows `shm:` in `SSLSessionCache shm:...`
//! (or any other socache directive).
//!
//! | argument            | segment                                      |
//! |---------------------|----------------------------------------------|
//! | *(none)*, `shm:`    | anonymous, [`DEFAULT_BYTES`]                 |
//! | `(1M)`              | anonymous, 1 MiB                             |
//! | `/path`             | file-backed at `/path`, [`DEFAULT_BYTES`]    |
//! | `/path(512000)`     | file-backed, 512000 bytes                    |
//! | `/path(512K)`       | K, M, G (or k, m, g): powers of 1024         |
//!
//! [`parse`] is pure (no filesystem access, fuzzed in `fuzz/`); it runs when
//! the configuration is read so a malformed argument fails `apachectl -t`.
//! [`validate`] then checks the argument against this machine: the
//! directory exists and is writable, and the size fits in physical memory.
//! Relative paths are resolved against ServerRoot by the httpd layer between
//! the two steps, as mod_socache_shmcb does.
//!
//! Error texts reuse mod_socache_shmcb's where operators already know them.
//!
//! After the segment may come the farm tier's options (`redis=`, `seal=`,
//! ...): see [`farm`]; and the session-ticket options (`tickets=`,
//! `ticket-keys=`): see [`tickets`].

pub mod farm;
pub mod tickets;

pub use farm::FarmSpec;
pub use tickets::TicketSpec;

use std::ffi::CString;
use std::fmt;
use std::path::{Path, PathBuf};

/// Size of a segment when the argument names none: the common shmcb setting.
pub const DEFAULT_BYTES: u64 = 512_000;

/// The smallest segment the engine accepts (header, one shard, one session).
pub const MIN_BYTES: u64 = 8192;

/// A parsed provider argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheSpec {
    /// `None`: an anonymous segment. `Some`: the segment's file, as written
    /// (possibly relative until the httpd layer resolves it).
    pub path: Option<PathBuf>,
    /// Total size of the segment, in bytes (>= [`MIN_BYTES`]).
    pub bytes: u64,
    /// The farm tier's options, if any (`redis=...`).
    pub farm: Option<FarmSpec>,
    /// The session-ticket keys' options, if any (`tickets=...`).
    pub tickets: Option<TicketSpec>,
}

/// Why an argument was refused. `Display` is the message httpd prints after
/// the directive's name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SpecError {
    /// `/path(512000` or `/path(`: no `)` after the `(`.
    NoClosingParenthesis,
    /// `/path)` or `/path512000)`: a `)` without a `(`.
    NoOpeningParenthesis,
    /// `/path()`: nothing between the parentheses.
    SizeMissing,
    /// `/path(512000)x`: text after the closing parenthesis.
    TrailingText { text: String },
    /// `/path(12x)`: the size is not a number with an optional K/M/G suffix.
    NotNumerical { size: String },
    /// `/path(0)`.
    Zero,
    /// The size does not fit in 64 bits.
    Overflow { size: String },
    /// Below [`MIN_BYTES`].
    TooSmall { bytes: u64 },
    /// The path contains a NUL byte (cannot be a file name).
    NulInPath,
    /// The path names a directory, not a file.
    PathIsDirectory { path: PathBuf },
    /// The file's directory does not exist (or is not a directory).
    DirectoryMissing { dir: PathBuf },
    /// The file's directory (or the existing file) is not writable.
    NotWritable { path: PathBuf, reason: String },
    /// Larger than this machine's physical memory.
    LargerThanMemory { bytes: u64, memory: u64 },
    /// A token after the segment that is not `name=value`.
    NotAnOption { text: String },
    /// `colour=red`.
    UnknownOption { name: String },
    /// `timeout=1s timeout=2s`.
    DuplicateOption { name: String },
    /// `seal=`.
    EmptyOption { name: String },
    /// `timeout=fast`, `timeout=20` (no unit).
    BadDuration { text: String },
    /// `timeout=0ms`, or above `farm::MAX_TIMEOUT`.
    DurationOutOfRange { text: String },
    /// `prefix=` longer than `farm::MAX_PREFIX`.
    PrefixTooLong { len: usize },
    /// Two of `redis=`, `redis-cluster=`, `redis-sentinel=`.
    RedisTwice,
    /// `redis-replica=` with `redis-cluster=` (a cluster's nodes have their
    /// own replicas).
    ReplicaWithCluster,
    /// `redis-sentinel=` without `redis-master=`.
    SentinelWithoutMaster,
    /// `redis-master=` without `redis-sentinel=`.
    MasterWithoutSentinel,
    /// A farm option without `redis=` or `redis-cluster=`.
    OptionWithoutRedis { name: String },
    /// `redis=` without `seal=`.
    SealMissing,
    /// `tickets=fast`, `tickets=12` (no unit).
    BadTicketPeriod { text: String },
    /// `tickets=` under [`tickets::MIN_PERIOD`] or over [`tickets::MAX_PERIOD`].
    TicketPeriodOutOfRange { text: String },
    /// `ticket-keys=` not a number from [`tickets::MIN_KEYS`] to [`tickets::MAX_KEYS`].
    BadTicketKeys { text: String },
    /// `ticket-keys=` without `tickets=`.
    OptionWithoutTickets { name: String },
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Invalid argument: ")?;
        match self {
            SpecError::NoClosingParenthesis => f.write_str(
                "no closing parenthesis or cache size missing after pathname with parenthesis",
            ),
            SpecError::NoOpeningParenthesis => {
                f.write_str("no opening parenthesis before the cache size's closing parenthesis")
            }
            SpecError::SizeMissing => f.write_str(
                "cache size missing between the parentheses (expected e.g. /path(512000) or /path(1M))",
            ),
            SpecError::TrailingText { text } => write!(
                f,
                "unexpected text {text:?} after the closing parenthesis of the cache size"
            ),
            SpecError::NotNumerical { size } => write!(
                f,
                "cache size not numerical: {size:?} (expected bytes, or a number with a K, M or G suffix)"
            ),
            SpecError::Zero => f.write_str("cache size must not be zero"),
            SpecError::Overflow { size } => {
                write!(f, "cache size {size:?} is too large to represent")
            }
            SpecError::TooSmall { bytes } => write!(
                f,
                "size has to be >= {MIN_BYTES} bytes (got {bytes}): too small to hold one session"
            ),
            SpecError::NulInPath => f.write_str("the cache file's path contains a NUL byte"),
            SpecError::PathIsDirectory { path } => write!(
                f,
                "the cache file {} is a directory (name a file inside it)",
                path.display()
            ),
            SpecError::DirectoryMissing { dir } => write!(
                f,
                "the directory {} of the cache file does not exist",
                dir.display()
            ),
            SpecError::NotWritable { path, reason } => {
                write!(f, "{} is not writable: {reason}", path.display())
            }
            SpecError::LargerThanMemory { bytes, memory } => write!(
                f,
                "cache size {bytes} bytes is larger than the machine can map \
                 ({memory} bytes of physical memory)"
            ),
            SpecError::NotAnOption { text } => write!(
                f,
                "{text:?} after the cache file is not an option (expected name=value, e.g. redis=redis://host:6379)"
            ),
            SpecError::UnknownOption { name } => write!(
                f,
                "unknown option {name:?} (known: {}, {})",
                farm::OPTIONS.join(", "),
                tickets::OPTIONS.join(", ")
            ),
            SpecError::DuplicateOption { name } => write!(f, "option {name:?} is given twice"),
            SpecError::EmptyOption { name } => write!(f, "option {name:?} has no value"),
            SpecError::BadDuration { text } => write!(
                f,
                "timeout={text} is not a duration (expected a whole number with ms or s, e.g. timeout=20ms)"
            ),
            SpecError::DurationOutOfRange { text } => write!(
                f,
                "timeout={text} is out of range (from 1ms to {}s)",
                farm::MAX_TIMEOUT.as_secs()
            ),
            SpecError::PrefixTooLong { len } => write!(
                f,
                "prefix= is {len} bytes long (at most {})",
                farm::MAX_PREFIX
            ),
            SpecError::RedisTwice => f.write_str(
                "more than one of redis=, redis-cluster=, redis-sentinel= and memcache= is given (name one second tier)",
            ),
            SpecError::ReplicaWithCluster => f.write_str(
                "redis-replica= cannot go with redis-cluster= or memcache= (name a replica of one Redis master)",
            ),
            SpecError::SentinelWithoutMaster => f.write_str(
                "redis-sentinel= needs redis-master= (the name of the master the sentinels watch)",
            ),
            SpecError::MasterWithoutSentinel => {
                f.write_str("redis-master= needs redis-sentinel= (the sentinels to ask for it)")
            }
            SpecError::OptionWithoutRedis { name } => write!(
                f,
                "option {name:?} needs redis=, redis-cluster=, redis-sentinel= or memcache= (the farm tier's servers)"
            ),
            SpecError::SealMissing => f.write_str(
                "redis= without seal=: the cached TLS sessions' master secrets would cross the network \
                 and sit in Redis in clear; give seal=FILE (48-byte records, made with \
                 `openssl rand 48 > FILE`, mode 0600, owned by root or by the user httpd starts as) or, \
                 knowingly, seal=off",
            ),
            SpecError::BadTicketPeriod { text } => write!(
                f,
                "tickets={text} is not a period (expected a whole number with ms, s, m, h or d, e.g. tickets=12h)"
            ),
            SpecError::TicketPeriodOutOfRange { text } => write!(
                f,
                "tickets={text} is out of range (a new ticket key from every {}s to every {}d)",
                tickets::MIN_PERIOD.as_secs(),
                tickets::MAX_PERIOD.as_secs() / 86400
            ),
            SpecError::BadTicketKeys { text } => write!(
                f,
                "ticket-keys={text} is not a number from {} to {} (how many periods a ticket key decrypts for)",
                tickets::MIN_KEYS,
                tickets::MAX_KEYS
            ),
            SpecError::OptionWithoutTickets { name } => {
                write!(f, "{name}= needs tickets= (the period of the ticket keys)")
            }
        }
    }
}

impl std::error::Error for SpecError {}

/// Parse the provider argument. `None` is a directive without `:` (plain `shm`).
///
/// Pure: no filesystem access. The path is returned as written.
pub fn parse(arg: Option<&str>) -> Result<CacheSpec, SpecError> {
    let arg = arg.unwrap_or("");
    if arg.contains('\0') {
        return Err(SpecError::NulInPath);
    }
    let (segment, options) = split_options(arg);
    let (path, bytes) = parse_segment(segment)?;
    let (farm, tickets) = match options {
        None => (None, None),
        Some(options) => parse_options(options)?,
    };
    Ok(CacheSpec {
        path,
        bytes,
        farm,
        tickets,
    })
}

/// The options: the ticket ones taken out, the rest (if any) the farm
/// tier's. Malformed tokens are left to the farm parser, which names them.
fn parse_options(text: &str) -> Result<(Option<FarmSpec>, Option<TicketSpec>), SpecError> {
    let (ticket_tokens, rest): (Vec<&str>, Vec<&str>) =
        text.split_ascii_whitespace().partition(|token| {
            farm::looks_like_option(token)
                && token
                    .split_once('=')
                    .is_some_and(|(name, _)| tickets::owns(name))
        });
    let tickets = tickets::parse(
        ticket_tokens
            .iter()
            .filter_map(|token| token.split_once('=')),
    )?;
    let farm = if rest.is_empty() {
        None
    } else {
        Some(farm::parse(&rest.join(" "))?)
    };
    Ok((farm, tickets))
}

/// Split the argument where its options start: at the first blank that is
/// followed by `name=` (or at the start, if it starts with one).
fn split_options(arg: &str) -> (&str, Option<&str>) {
    if farm::looks_like_option(arg.split_ascii_whitespace().next().unwrap_or("")) {
        return ("", Some(arg));
    }
    let mut from = 0;
    while let Some(at) = arg[from..].find(|c: char| c.is_ascii_whitespace()) {
        let blank = from + at;
        let rest = arg[blank..].trim_start();
        if farm::looks_like_option(rest.split_ascii_whitespace().next().unwrap_or("")) {
            return (&arg[..blank], Some(rest));
        }
        from = blank + 1;
    }
    (arg, None)
}

/// The segment part: `/path`, `/path(size)`, `(size)` or nothing.
fn parse_segment(arg: &str) -> Result<(Option<PathBuf>, u64), SpecError> {
    if arg.is_empty() {
        return Ok((None, DEFAULT_BYTES));
    }

    // The size is in the last "(...)", so a path may itself contain '('.
    let (path, bytes) = match arg.rfind('(') {
        Some(open) => {
            let rest = &arg[open + 1..];
            let close = rest.find(')').ok_or(SpecError::NoClosingParenthesis)?;
            let trailing = &rest[close + 1..];
            if !trailing.is_empty() {
                return Err(SpecError::TrailingText {
                    text: trailing.to_string(),
                });
            }
            (&arg[..open], parse_size(&rest[..close])?)
        }
        None if arg.ends_with(')') => return Err(SpecError::NoOpeningParenthesis),
        None => (arg, DEFAULT_BYTES),
    };

    let path = (!path.is_empty()).then(|| PathBuf::from(path));
    Ok((path, bytes))
}

/// `512000`, `500K`, `64m`, `1G`: bytes, or a count of 1024-based units.
fn parse_size(text: &str) -> Result<u64, SpecError> {
    if text.is_empty() {
        return Err(SpecError::SizeMissing);
    }
    let (digits, unit): (&str, u64) = match text.as_bytes()[text.len() - 1] {
        b'k' | b'K' => (&text[..text.len() - 1], 1 << 10),
        b'm' | b'M' => (&text[..text.len() - 1], 1 << 20),
        b'g' | b'G' => (&text[..text.len() - 1], 1 << 30),
        _ => (text, 1),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SpecError::NotNumerical {
            size: text.to_string(),
        });
    }
    let overflow = || SpecError::Overflow {
        size: text.to_string(),
    };
    let n: u64 = digits.parse().map_err(|_| overflow())?;
    let bytes = n.checked_mul(unit).ok_or_else(overflow)?;
    if bytes == 0 {
        return Err(SpecError::Zero);
    }
    if bytes < MIN_BYTES {
        return Err(SpecError::TooSmall { bytes });
    }
    Ok(bytes)
}

/// Check a parsed (and, for a file, ServerRoot-resolved) spec against this
/// machine: the size fits in physical memory, the file's directory exists
/// and is writable, and the path is not a directory.
pub fn validate(spec: &CacheSpec) -> Result<(), SpecError> {
    validate_with_memory(spec, physical_memory())
}

/// [`validate`] with the physical memory given (`None`: unknown, unchecked).
pub fn validate_with_memory(spec: &CacheSpec, memory: Option<u64>) -> Result<(), SpecError> {
    if let Some(memory) = memory {
        if spec.bytes > memory {
            return Err(SpecError::LargerThanMemory {
                bytes: spec.bytes,
                memory,
            });
        }
    }
    let Some(path) = spec.path.as_deref() else {
        return Ok(());
    };
    if path.is_dir() {
        return Err(SpecError::PathIsDirectory {
            path: path.to_path_buf(),
        });
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(SpecError::DirectoryMissing {
            dir: dir.to_path_buf(),
        });
    }
    writable(dir, false)?;
    // Whatever is at the path: the engine decides whether it may be
    // replaced. Something that vanishes between the two looks (a racer
    // swapping names during a restart) is nothing, not an error: a restart
    // must never fail on what appeared at, or disappeared from, the path.
    writable(path, true)?;
    Ok(())
}

/// `access(path, W_OK)`: may this process create or change files there?
/// With `missing_ok`, nothing at the path (ENOENT) passes.
fn writable(path: &Path, missing_ok: bool) -> Result<(), SpecError> {
    use std::os::unix::ffi::OsStrExt;
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| SpecError::NulInPath)?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call;
    // access(2) only reads it.
    let rc = unsafe { libc::access(c.as_ptr(), libc::W_OK) };
    if rc == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    if missing_ok && e.raw_os_error() == Some(libc::ENOENT) {
        return Ok(());
    }
    Err(SpecError::NotWritable {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Physical memory in bytes (`_SC_PHYS_PAGES * _SC_PAGESIZE`), if known.
pub fn physical_memory() -> Option<u64> {
    // SAFETY: sysconf has no memory-safety preconditions.
    let pages = unsafe { libc::sysconf(libc::_SC_PHYS_PAGES) };
    // SAFETY: as above.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if pages <= 0 || page <= 0 {
        return None;
    }
    u64::try_from(pages)
        .ok()?
        .checked_mul(u64::try_from(page).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `arg` parses to; a refusal fails the test. (The options' tests,
    /// in the submodules, use it too.)
    pub(super) fn ok(arg: Option<&str>) -> CacheSpec {
        match parse(arg) {
            Ok(s) => s,
            Err(e) => panic!("{arg:?} refused: {e}"),
        }
    }

    /// Why `arg` is refused; an acceptance fails the test.
    pub(super) fn err(arg: &str) -> SpecError {
        match parse(Some(arg)) {
            Ok(s) => panic!("{arg:?} accepted as {s:?}"),
            Err(e) => e,
        }
    }

    /// An anonymous segment of `bytes`, without options.
    fn anonymous(bytes: u64) -> CacheSpec {
        CacheSpec {
            path: None,
            bytes,
            farm: None,
            tickets: None,
        }
    }

    /// A segment file at `p` of `bytes`, without options.
    fn file(p: impl Into<PathBuf>, bytes: u64) -> CacheSpec {
        CacheSpec {
            path: Some(p.into()),
            ..anonymous(bytes)
        }
    }

    #[test]
    fn no_argument_is_anonymous_default() {
        assert_eq!(ok(None), anonymous(512_000));
        assert_eq!(ok(Some("")), anonymous(512_000));
    }

    #[test]
    fn path_alone_has_default_size() {
        assert_eq!(
            ok(Some("/run/apache2/ssl_scache")),
            file("/run/apache2/ssl_scache", 512_000)
        );
        assert_eq!(
            ok(Some("logs/ssl_scache")),
            file("logs/ssl_scache", 512_000)
        );
    }

    #[test]
    fn path_with_plain_bytes() {
        assert_eq!(
            ok(Some("/run/apache2/ssl_scache(512000)")),
            file("/run/apache2/ssl_scache", 512_000)
        );
        assert_eq!(ok(Some("/x(8192)")), file("/x", 8192));
        assert_eq!(ok(Some("/x(008192)")), file("/x", 8192));
    }

    #[test]
    fn suffixes_are_1024_based_and_case_insensitive() {
        assert_eq!(ok(Some("/x(512K)")).bytes, 512 * 1024);
        assert_eq!(ok(Some("/x(512k)")).bytes, 512 * 1024);
        assert_eq!(ok(Some("/x(64M)")).bytes, 64 << 20);
        assert_eq!(ok(Some("/x(64m)")).bytes, 64 << 20);
        assert_eq!(ok(Some("/x(2G)")).bytes, 2 << 30);
        assert_eq!(ok(Some("/x(2g)")).bytes, 2 << 30);
        assert_eq!(ok(Some("/x(8K)")).bytes, 8192);
    }

    #[test]
    fn size_without_path_is_anonymous() {
        assert_eq!(ok(Some("(1M)")), anonymous(1 << 20));
    }

    #[test]
    fn the_last_parenthesis_holds_the_size() {
        assert_eq!(ok(Some("/a(b)/c(16K)")), file("/a(b)/c", 16384));
        assert_eq!(ok(Some("/a)b(16K)")), file("/a)b", 16384));
    }

    #[test]
    fn missing_closing_parenthesis() {
        assert_eq!(err("/x(512000"), SpecError::NoClosingParenthesis);
        assert_eq!(err("/x("), SpecError::NoClosingParenthesis);
        let msg = err("/x(1").to_string();
        assert!(
            msg.contains(
                "no closing parenthesis or cache size missing after pathname with parenthesis"
            ),
            "{msg}"
        );
    }

    #[test]
    fn missing_opening_parenthesis() {
        assert_eq!(err("/x512000)"), SpecError::NoOpeningParenthesis);
        assert_eq!(err(")"), SpecError::NoOpeningParenthesis);
    }

    #[test]
    fn empty_size() {
        assert_eq!(err("/x()"), SpecError::SizeMissing);
        assert!(err("/x()").to_string().contains("cache size missing"));
    }

    #[test]
    fn junk_after_closing_parenthesis() {
        assert_eq!(
            err("/x(512000)x"),
            SpecError::TrailingText { text: "x".into() }
        );
        assert_eq!(
            err("/x(512000) "),
            SpecError::TrailingText { text: " ".into() }
        );
        assert_eq!(err("/x(1)(2"), SpecError::NoClosingParenthesis);
        assert!(err("/x(512000)junk")
            .to_string()
            .contains("\"junk\" after the closing parenthesis"));
    }

    #[test]
    fn not_numerical() {
        for bad in [
            "abc",
            "12x",
            "K",
            "-8192",
            "+8192",
            " 8192",
            "8192 ",
            "1.5M",
            "8 K",
            "1KB",
            "0x2000",
            "１２３",
        ] {
            let e = err(&format!("/x({bad})"));
            assert_eq!(e, SpecError::NotNumerical { size: bad.into() }, "{bad}");
            assert!(e.to_string().contains("cache size not numerical"), "{e}");
        }
    }

    #[test]
    fn zero() {
        assert_eq!(err("/x(0)"), SpecError::Zero);
        assert_eq!(err("/x(0K)"), SpecError::Zero);
        assert_eq!(err("(000)"), SpecError::Zero);
    }

    #[test]
    fn too_small() {
        assert_eq!(err("/x(8191)"), SpecError::TooSmall { bytes: 8191 });
        assert_eq!(err("/x(1)"), SpecError::TooSmall { bytes: 1 });
        assert_eq!(err("/x(7k)"), SpecError::TooSmall { bytes: 7168 });
        assert!(err("/x(100)")
            .to_string()
            .contains("size has to be >= 8192 bytes"));
    }

    #[test]
    fn overflow() {
        assert_eq!(
            err("/x(18446744073709551616)"),
            SpecError::Overflow {
                size: "18446744073709551616".into()
            }
        );
        assert_eq!(
            err("/x(17179869184G)"),
            SpecError::Overflow {
                size: "17179869184G".into()
            }
        );
        assert_eq!(ok(Some("/x(18446744073709551615)")).bytes, u64::MAX);
    }

    #[test]
    fn the_engine_accepts_exactly_what_the_parser_accepts_at_the_bottom() {
        use crate::engine::layout::{Geometry, MIN_BYTES as ENGINE_MIN};
        assert_eq!(MIN_BYTES, ENGINE_MIN);
        assert!(Geometry::new(MIN_BYTES, 32, 160).is_ok());
        assert!(Geometry::new(DEFAULT_BYTES, 32, 160).is_ok());
    }

    #[test]
    fn nul_in_path() {
        assert_eq!(err("/x\0y"), SpecError::NulInPath);
    }

    #[test]
    fn validate_checks_memory() {
        let spec = anonymous(1 << 30);
        assert_eq!(validate_with_memory(&spec, Some(1 << 30)), Ok(()));
        assert_eq!(
            validate_with_memory(&spec, Some((1 << 30) - 1)),
            Err(SpecError::LargerThanMemory {
                bytes: 1 << 30,
                memory: (1 << 30) - 1
            })
        );
        assert_eq!(validate_with_memory(&spec, None), Ok(()));
        let huge = ok(Some("(1000000G)"));
        let e = validate(&huge).expect_err("a petabyte segment on a test machine");
        assert!(
            e.to_string().contains("larger than the machine can map"),
            "{e}"
        );
        assert!(physical_memory().is_some_and(|m| m > 0));
    }

    #[test]
    fn validate_checks_directory() {
        let dir = std::env::temp_dir().join(format!("socache_shm_spec_{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let good = file(dir.join("cache"), DEFAULT_BYTES);
        assert_eq!(validate(&good), Ok(()));

        let missing = file(dir.join("nope/cache"), DEFAULT_BYTES);
        let e = validate(&missing).expect_err("missing dir");
        assert_eq!(
            e,
            SpecError::DirectoryMissing {
                dir: dir.join("nope")
            }
        );
        assert!(e.to_string().contains("does not exist"), "{e}");

        let is_dir = file(dir.clone(), DEFAULT_BYTES);
        assert_eq!(
            validate(&is_dir),
            Err(SpecError::PathIsDirectory { path: dir.clone() })
        );

        // A file where the directory should be.
        let plain = dir.join("plain");
        std::fs::write(&plain, b"x").expect("write");
        let under_file = file(plain.join("cache"), DEFAULT_BYTES);
        assert_eq!(
            validate(&under_file),
            Err(SpecError::DirectoryMissing { dir: plain.clone() })
        );

        // A read-only directory (root passes access(2) on any mode, so only
        // an unprivileged run can check this).
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            use std::os::unix::fs::PermissionsExt;
            let ro_dir = dir.join("ro");
            std::fs::create_dir(&ro_dir).expect("mkdir");
            std::fs::set_permissions(&ro_dir, std::fs::Permissions::from_mode(0o500))
                .expect("chmod");
            let ro = file(ro_dir.join("cache"), DEFAULT_BYTES);
            let e = validate(&ro).expect_err("read-only dir");
            assert!(matches!(e, SpecError::NotWritable { .. }), "{e:?}");
            assert!(e.to_string().contains("is not writable"), "{e}");
            std::fs::set_permissions(&ro_dir, std::fs::Permissions::from_mode(0o700))
                .expect("chmod");
        }

        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn anonymous_needs_no_filesystem() {
        assert_eq!(validate(&ok(None)), Ok(()));
    }
}
