//! The engine's errors: one enum, each variant a sentence an operator can act on.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::lock::OutOfService;

#[derive(Debug)]
pub enum Error {
    /// The byte budget cannot hold the segment header, one shard and one entry.
    BudgetTooSmall { bytes: u64, min: u64 },
    /// The byte budget exceeds what the engine can address or the machine can map.
    BudgetTooLarge { bytes: u64, max: u64 },
    /// An entry (id + value + overhead) larger than the cache's maximum entry size.
    EntryTooLarge { size: u64, max: u64 },
    /// An id longer than the entry header can record (`layout::ID_LEN_MASK`).
    IdTooLong { len: u64, max: u64 },
    /// Creating, sizing or mapping the segment failed.
    Io {
        path: Option<PathBuf>,
        op: &'static str,
        source: io::Error,
    },
    /// The file is not a mod_socache_shm segment (bad magic).
    NotASegment { path: PathBuf },
    /// The file is a segment of another layout version.
    WrongVersion {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
    /// The file's header disagrees with its size or with itself.
    Corrupt { path: Option<PathBuf>, what: String },
    /// The path cannot be used safely (an untrusted directory, a file that
    /// is not ours to replace): `why` says what is wrong and what to do.
    Refused { path: PathBuf, why: String },
    /// The shard holding this id is out of service ([`OutOfService`]): its
    /// lock could not be taken within the bound (lock protocol rule 6, in
    /// `shard.rs`). `first`: this call is the one that found it (log it
    /// once). The API name predates the state's name and is kept.
    Unavailable { shard: u32, first: bool },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::BudgetTooSmall { bytes, min } => write!(
                f,
                "cache size {bytes} bytes is too small to hold one entry (minimum {min} bytes)"
            ),
            Error::BudgetTooLarge { bytes, max } => {
                write!(
                    f,
                    "cache size {bytes} bytes is larger than the maximum of {max} bytes"
                )
            }
            Error::EntryTooLarge { size, max } => write!(
                f,
                "entry of {size} bytes exceeds this cache's maximum entry size of {max} bytes"
            ),
            Error::IdTooLong { len, max } => write!(
                f,
                "id of {len} bytes is longer than the {max} bytes an entry can hold"
            ),
            Error::Io {
                path: Some(p),
                op,
                source,
            } => {
                write!(f, "{op} {}: {source}", p.display())
            }
            Error::Io {
                path: None,
                op,
                source,
            } => write!(f, "{op}: {source}"),
            Error::NotASegment { path } => {
                write!(
                    f,
                    "{} is not a mod_socache_shm segment (bad magic)",
                    path.display()
                )
            }
            Error::WrongVersion {
                path,
                found,
                expected,
            } => write!(
                f,
                "{} has segment layout version {found}, this build uses {expected}",
                path.display()
            ),
            Error::Corrupt {
                path: Some(p),
                what,
            } => {
                write!(f, "{} is a corrupt segment: {what}", p.display())
            }
            Error::Corrupt { path: None, what } => write!(f, "corrupt segment: {what}"),
            Error::Refused { path, why } => write!(f, "{}: {why}", path.display()),
            Error::Unavailable { shard, first } => OutOfService {
                shard: *shard,
                first: *first,
            }
            .fmt(f),
        }
    }
}

impl From<OutOfService> for Error {
    fn from(o: OutOfService) -> Error {
        Error::Unavailable {
            shard: o.shard,
            first: o.first,
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
