//! The farm key file: the secret every host of a farm shares, so that a
//! value one host sealed another can open, and Redis (or whoever reads its
//! memory, its dumps or its network) learns nothing from it.
//!
//! The precedent is mod_ssl's `SSLSessionTicketKeyFile`: a small binary file
//! made with `openssl rand`, copied to every host, read once by the root
//! parent. Ours is one or more 48-byte records:
//!
//! ```text
//! +----------------+--------------------------------+
//! | key name (16)  | key (32)                       |  record 0: seals and opens
//! +----------------+--------------------------------+
//! | key name (16)  | key (32)                       |  record 1..: open only
//! +----------------+--------------------------------+
//! ```
//!
//! Made with `openssl rand 48 > FILE`. Rotation: prepend a new record
//! (`cat new old > FILE`), restart every host, later drop the old record. The
//! first record seals; every record opens, chosen by the name a sealed value
//! carries (see [`crate::seal`]).
//!
//! The file is opened the way a root process must open a path it may not
//! control (the threat model): `O_NOFOLLOW` (a symlink is refused, not
//! followed), `O_NONBLOCK` (a FIFO planted there cannot hang the parent),
//! `O_CLOEXEC`; then every check is made with `fstat` on the descriptor,
//! never `stat` on the path, so what is checked is what is read.
//!
//! # The trust rule (the same as for the segment's directory)
//! The file must be a regular file
//! 1. owned by root or by the effective user of the process reading it
//!    (the user httpd starts as: root on an ordinary host, the user itself
//!    for a per-user server, a test framework or a non-root container).
//!    Only the owner and root can change a file, so a file the reader owns
//!    can be changed by nobody who could not already change the reader
//!    itself (kill it, rewrite its configuration); any other owner could
//!    swap the key for one it knows, or read it.
//! 2. with no group or other permission bits (mode 0600 or 0400).
//!
//! One exception to 2, for container platforms that mount secrets owned by
//! root and cannot chown them to an arbitrary UID (OpenShift, Kubernetes
//! with `fsGroup`): a file owned by **root**, read by a process that is
//! **not root**, whose group may **read only** (mode 0440 or 0640: no group
//! write, nothing for others) and whose group is **one of the reader's
//! groups** (effective or supplementary). Only root can have made such a
//! file (chgrp of a root-owned file), so the group's access is root's
//! decision, and without it the process could not read the file at all. A
//! server started as root never gets this exception: it reads any file, so
//! a group bit could only widen who else can read the key.
//!
//! Key bytes live in [`Zeroizing`] buffers (wiped on drop) and no `Debug`
//! prints them.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

/// Bytes of a key name.
pub const NAME_LEN: usize = 16;
/// Bytes of a key.
pub const KEY_LEN: usize = 32;
/// Bytes of one record: name then key.
pub const RECORD_LEN: usize = NAME_LEN + KEY_LEN;
/// The most records a key file may hold (rotation needs two or three).
pub const MAX_RECORDS: usize = 64;

/// The name of a farm key: not secret, carried in every sealed value.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyName(pub [u8; NAME_LEN]);

impl fmt::Display for KeyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for KeyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyName({self})")
    }
}

/// One record of the key file: a name and its 32 secret bytes.
pub struct FarmKey {
    name: KeyName,
    key: Zeroizing<[u8; KEY_LEN]>,
}

impl FarmKey {
    /// The record's name.
    pub fn name(&self) -> KeyName {
        self.name
    }

    /// The secret bytes (for [`crate::seal`] only).
    pub(crate) fn secret(&self) -> &[u8; KEY_LEN] {
        &self.key
    }
}

impl fmt::Debug for FarmKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FarmKey")
            .field("name", &self.name)
            .field("key", &"<secret>")
            .finish()
    }
}

/// The records of a key file, in file order (never empty).
pub struct FarmKeys {
    records: Vec<FarmKey>,
}

impl FarmKeys {
    /// Opens, checks (against this process's own identity, [`Reader::current`])
    /// and reads the key file at `path` (see the module doc).
    pub fn load(path: &Path) -> Result<FarmKeys, KeyFileError> {
        Self::load_as(path, &Reader::current())
    }

    /// [`load`](Self::load) with the trust rule checked for `reader` (tests;
    /// the provider always uses `load`). The file is still opened with this
    /// process's own rights.
    pub fn load_as(path: &Path, reader: &Reader) -> Result<FarmKeys, KeyFileError> {
        let at = || path.to_path_buf();
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
            .map_err(|source| {
                if source.raw_os_error() == Some(libc::ELOOP) {
                    KeyFileError::Symlink { path: at() }
                } else {
                    KeyFileError::Open { path: at(), source }
                }
            })?;
        // File::metadata is fstat(2) on the descriptor just opened.
        let meta = file
            .metadata()
            .map_err(|source| KeyFileError::Read { path: at(), source })?;
        if !meta.file_type().is_file() {
            return Err(KeyFileError::NotRegular { path: at() });
        }
        trust(path, meta.uid(), meta.gid(), meta.mode(), reader)?;
        let size = meta.size();
        check_size(path, size)?;
        // The size is checked: at most MAX_RECORDS * RECORD_LEN, so it fits.
        let expected = usize::try_from(size).unwrap_or(usize::MAX);
        let bytes = read_exactly(file, expected)
            .map_err(|source| KeyFileError::Read { path: at(), source })?;
        if bytes.len() != expected {
            return Err(KeyFileError::ChangedWhileRead { path: at() });
        }
        Self::from_bytes(path, &bytes)
    }

    /// Parses records already in memory; `origin` names them in errors.
    pub fn from_bytes(origin: &Path, bytes: &[u8]) -> Result<FarmKeys, KeyFileError> {
        check_size(origin, u64::try_from(bytes.len()).unwrap_or(u64::MAX))?;
        let mut records: Vec<FarmKey> = Vec::with_capacity(bytes.len() / RECORD_LEN);
        for record in bytes.chunks_exact(RECORD_LEN) {
            let (name_bytes, key_bytes) = record.split_at(NAME_LEN);
            let mut name = [0u8; NAME_LEN];
            name.copy_from_slice(name_bytes);
            let name = KeyName(name);
            if records.iter().any(|r| r.name == name) {
                return Err(KeyFileError::DuplicateName {
                    path: origin.to_path_buf(),
                    name,
                });
            }
            let mut key = Zeroizing::new([0u8; KEY_LEN]);
            key.copy_from_slice(key_bytes);
            records.push(FarmKey { name, key });
        }
        Ok(FarmKeys { records })
    }

    /// The record that seals: the file's first.
    pub fn sealing(&self) -> &FarmKey {
        // `from_bytes` refuses an empty file, so there is a first record;
        // `records` is private and never shrinks.
        &self.records[0]
    }

    /// The record named `name`, if the file has it.
    pub fn find(&self, name: &KeyName) -> Option<&FarmKey> {
        self.records.iter().find(|r| r.name == *name)
    }

    /// The number of records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Always false (a key file has at least one record); for clippy.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The names, in file order.
    pub fn names(&self) -> Vec<KeyName> {
        self.records.iter().map(|r| r.name).collect()
    }
}

impl fmt::Debug for FarmKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FarmKeys")
            .field("names", &self.names())
            .finish()
    }
}

/// Who reads the key file: the identity [the trust rule](self) is checked
/// against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reader {
    /// The effective user id (the user httpd starts as, in its parent).
    pub uid: u32,
    /// The effective group id and every supplementary group.
    pub groups: Vec<u32>,
}

impl Reader {
    /// This process: `geteuid()`, `getegid()` and `getgroups()`.
    pub fn current() -> Reader {
        // SAFETY: geteuid and getegid have no preconditions.
        let (uid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
        let mut groups = vec![egid];
        // SAFETY: with a size of 0, getgroups only returns the count.
        let n = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
        if n > 0 {
            let mut list = vec![0 as libc::gid_t; n as usize];
            // SAFETY: `list` has room for `n` entries, the size passed.
            let got = unsafe { libc::getgroups(n, list.as_mut_ptr()) };
            if got > 0 {
                list.truncate(got as usize);
                groups.extend(list.into_iter().filter(|g| *g != egid));
            }
        }
        Reader { uid, groups }
    }

    fn in_group(&self, gid: u32) -> bool {
        self.groups.contains(&gid)
    }
}

/// How a trusted key file may be read, once [`trust`] accepted it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// By its owner only (mode 0600 or 0400).
    Private,
    /// Owned by root and readable by this group, one of a non-root
    /// reader's groups (a container platform's secret).
    Group(u32),
}

/// The trust rule (module doc) for a file of owner `uid`, group `gid` and
/// `mode` (from `fstat`), read by `reader`.
pub fn trust(
    path: &Path,
    uid: u32,
    gid: u32,
    mode: u32,
    reader: &Reader,
) -> Result<Access, KeyFileError> {
    let at = || path.to_path_buf();
    if uid != 0 && uid != reader.uid {
        return Err(KeyFileError::WrongOwner {
            path: at(),
            uid,
            reader: reader.uid,
        });
    }
    let mode = mode & 0o7777;
    if mode & 0o077 == 0 {
        return Ok(Access::Private);
    }
    let group_read_only = mode & 0o077 == 0o040;
    if group_read_only && uid == 0 && reader.uid != 0 && reader.in_group(gid) {
        return Ok(Access::Group(gid));
    }
    Err(KeyFileError::TooOpen {
        path: at(),
        mode,
        uid,
        gid,
        reader: reader.uid,
    })
}

fn check_size(path: &Path, size: u64) -> Result<(), KeyFileError> {
    let at = || path.to_path_buf();
    if size == 0 {
        return Err(KeyFileError::Empty { path: at() });
    }
    if !size.is_multiple_of(RECORD_LEN as u64) {
        return Err(KeyFileError::BadSize { path: at(), size });
    }
    if size / RECORD_LEN as u64 > MAX_RECORDS as u64 {
        return Err(KeyFileError::TooManyRecords {
            path: at(),
            records: size / RECORD_LEN as u64,
        });
    }
    Ok(())
}

/// Reads at most `expected + 1` bytes (one more shows a file that grew).
fn read_exactly(file: File, expected: usize) -> io::Result<Zeroizing<Vec<u8>>> {
    let mut bytes = Zeroizing::new(Vec::with_capacity(expected + 1));
    file.take(expected as u64 + 1).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Why a key file was refused; each message names the file and the fix
/// (they become `apachectl -t` messages).
#[derive(Debug)]
#[non_exhaustive]
pub enum KeyFileError {
    /// open(2) failed.
    Open { path: PathBuf, source: io::Error },
    /// The path is a symbolic link (`O_NOFOLLOW`).
    Symlink { path: PathBuf },
    /// Not a regular file (a directory, FIFO, device, socket).
    NotRegular { path: PathBuf },
    /// Owned by someone other than root and the reader (the user httpd
    /// starts as, uid `reader`).
    WrongOwner {
        path: PathBuf,
        uid: u32,
        reader: u32,
    },
    /// Group or others have some permission bit, outside the one exception
    /// (root's file, group read only, one of a non-root reader's groups).
    TooOpen {
        path: PathBuf,
        mode: u32,
        uid: u32,
        gid: u32,
        reader: u32,
    },
    /// Zero bytes.
    Empty { path: PathBuf },
    /// Not a multiple of 48 bytes.
    BadSize { path: PathBuf, size: u64 },
    /// More than [`MAX_RECORDS`] records.
    TooManyRecords { path: PathBuf, records: u64 },
    /// Two records share a name (an opener could not tell them apart).
    DuplicateName { path: PathBuf, name: KeyName },
    /// fstat or read failed.
    Read { path: PathBuf, source: io::Error },
    /// The file's size changed between fstat and read.
    ChangedWhileRead { path: PathBuf },
}

impl fmt::Display for KeyFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Open { path, source } => {
                write!(f, "farm key file {}: cannot open: {source}", path.display())
            }
            Self::Symlink { path } => write!(
                f,
                "farm key file {} is a symbolic link; name the file itself",
                path.display()
            ),
            Self::NotRegular { path } => {
                write!(f, "farm key file {} is not a regular file", path.display())
            }
            Self::WrongOwner { path, uid, reader } => write!(
                f,
                "farm key file {} is owned by uid {uid}, neither root nor the user httpd \
                 starts as (uid {reader}): its owner could replace the key; chown it to \
                 one of them, mode 0600",
                path.display()
            ),
            Self::TooOpen {
                path,
                mode,
                uid,
                gid,
                reader,
            } => {
                let who = match (mode & 0o070 != 0, mode & 0o007 != 0) {
                    (true, true) => "group and others",
                    (true, false) => "its group",
                    _ => "others",
                };
                write!(
                    f,
                    "farm key file {} is open to {who} (mode {mode:04o}, group {gid}); chmod 600 it",
                    path.display()
                )?;
                if mode & 0o077 == 0o040 && *uid == 0 {
                    // The container case that just missed the exception.
                    if *reader == 0 {
                        write!(
                            f,
                            " (a root-owned key file readable by a group is accepted only \
                             when httpd starts as a user other than root, in that group)"
                        )?;
                    } else {
                        write!(
                            f,
                            " (group {gid} is not one of the groups httpd starts with, \
                             so it grants others, not httpd, the right to read the key)"
                        )?;
                    }
                } else if *uid == 0 && *reader != 0 && mode & 0o007 == 0 {
                    write!(
                        f,
                        " (a root-owned key file may give its group read permission, \
                         never write: mode 0440 or 0640)"
                    )?;
                }
                Ok(())
            }
            Self::Empty { path } => write!(
                f,
                "farm key file {} is empty; make it with 'openssl rand 48 > FILE'",
                path.display()
            ),
            Self::BadSize { path, size } => write!(
                f,
                "farm key file {} has {size} bytes, not a multiple of {RECORD_LEN} \
                 (records of a 16-byte name and a 32-byte key; 'openssl rand 48 > FILE')",
                path.display()
            ),
            Self::TooManyRecords { path, records } => write!(
                f,
                "farm key file {} has {records} records; at most {MAX_RECORDS}",
                path.display()
            ),
            Self::DuplicateName { path, name } => write!(
                f,
                "farm key file {} has two records named {name}",
                path.display()
            ),
            Self::Read { path, source } => {
                write!(f, "farm key file {}: cannot read: {source}", path.display())
            }
            Self::ChangedWhileRead { path } => write!(
                f,
                "farm key file {} changed size while it was read",
                path.display()
            ),
        }
    }
}

impl std::error::Error for KeyFileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Open { source, .. } | Self::Read { source, .. } => Some(source),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;

    fn record(name: u8, key: u8) -> Vec<u8> {
        let mut r = vec![name; NAME_LEN];
        r.extend_from_slice(&[key; KEY_LEN]);
        r
    }

    /// A reader with user `uid` and no groups.
    fn as_user(uid: u32) -> Reader {
        Reader {
            uid,
            groups: Vec::new(),
        }
    }

    /// Writes `bytes` with `mode`; returns the path and the file's owner.
    fn key_file(dir: &Path, bytes: &[u8], mode: u32) -> (PathBuf, u32) {
        let path = dir.join("farm.key");
        let mut file = File::create(&path).expect("create");
        file.write_all(bytes).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        let uid = std::fs::metadata(&path).expect("stat").uid();
        (path, uid)
    }

    #[test]
    fn loads_records_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut bytes = record(1, 0xaa);
        bytes.extend(record(2, 0xbb));
        let (path, uid) = key_file(dir.path(), &bytes, 0o600);
        let keys = FarmKeys::load_as(&path, &as_user(uid)).expect("load");
        assert_eq!(keys.len(), 2);
        assert_eq!(keys.sealing().name(), KeyName([1; NAME_LEN]));
        assert_eq!(keys.sealing().secret(), &[0xaa; KEY_LEN]);
        assert_eq!(
            keys.find(&KeyName([2; NAME_LEN])).map(|k| *k.secret()),
            Some([0xbb; KEY_LEN])
        );
        assert!(keys.find(&KeyName([3; NAME_LEN])).is_none());
        if uid == 0 {
            assert!(FarmKeys::load(&path).is_ok());
        }
    }

    #[test]
    fn debug_prints_no_key() {
        let keys = FarmKeys::from_bytes(Path::new("x"), &record(7, 0x5a)).expect("keys");
        let shown = format!("{keys:?} {:?}", keys.sealing());
        assert!(!shown.contains("5a5a"), "{shown}");
        assert!(!shown.contains("90, 90"), "{shown}");
    }

    #[test]
    fn refuses_group_or_other_bits() {
        let dir = tempfile::tempdir().expect("tempdir");
        for mode in [0o640, 0o604, 0o610, 0o601, 0o660] {
            let (path, uid) = key_file(dir.path(), &record(1, 1), mode);
            let err = FarmKeys::load_as(&path, &as_user(uid)).expect_err("too open");
            assert!(matches!(err, KeyFileError::TooOpen { .. }), "{err}");
            let text = err.to_string();
            assert!(
                text.contains("farm.key") && text.contains("chmod 600"),
                "{text}"
            );
            assert!(text.contains(&format!("{mode:04o}")), "{text}");
        }
    }

    #[test]
    fn refuses_wrong_owner() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, uid) = key_file(dir.path(), &record(1, 1), 0o600);
        // Neither root nor the reader: refused, naming both.
        let other = if uid == 0 { 4242 } else { uid };
        let reader = if uid == 0 { 4243 } else { uid.wrapping_add(1) };
        if uid != 0 {
            let err = FarmKeys::load_as(&path, &as_user(reader)).expect_err("owner");
            assert!(matches!(err, KeyFileError::WrongOwner { .. }), "{err}");
        }
        let err = trust(&path, other, 0, 0o100600, &as_user(reader)).expect_err("owner");
        let text = err.to_string();
        assert!(
            text.contains("farm.key")
                && text.contains(&format!("owned by uid {other}"))
                && text.contains(&format!(
                    "neither root nor the user httpd starts as (uid {reader})"
                )),
            "{text}"
        );
        // The reader's own file loads (this process reads it as its owner).
        assert!(FarmKeys::load_as(&path, &as_user(uid)).is_ok());
        assert!(FarmKeys::load(&path).is_ok(), "our own 0600 file");
    }

    /// The rule as a table: (owner, group, mode, reader uid, reader groups)
    /// and whether it is trusted.
    #[test]
    fn the_trust_rule() {
        let p = Path::new("/k/farm.key");
        let user = 1001;
        let other = 1002;
        let ug = 1001; // the user's own group
        let fs_group = 1000650000; // a container platform's fsGroup
        let me = |groups: &[u32]| Reader {
            uid: user,
            groups: groups.to_vec(),
        };
        let root = Reader {
            uid: 0,
            groups: vec![0],
        };
        // Owner: root or the reader, never another user.
        assert_eq!(trust(p, 0, 0, 0o600, &root).ok(), Some(Access::Private));
        assert_eq!(
            trust(p, 0, 0, 0o400, &me(&[ug])).ok(),
            Some(Access::Private)
        );
        assert_eq!(
            trust(p, user, ug, 0o600, &me(&[ug])).ok(),
            Some(Access::Private)
        );
        assert_eq!(
            trust(p, user, ug, 0o400, &me(&[ug])).ok(),
            Some(Access::Private)
        );
        for (owner, reader) in [(user, &root), (other, &me(&[ug])), (33, &root)] {
            let err = trust(p, owner, owner, 0o600, reader).expect_err("owner");
            assert!(matches!(err, KeyFileError::WrongOwner { .. }), "{err}");
        }
        // Group or other bits: refused, except root's file, group read
        // only, one of a non-root reader's groups.
        assert_eq!(
            trust(p, 0, fs_group, 0o440, &me(&[0, fs_group])).ok(),
            Some(Access::Group(fs_group))
        );
        assert_eq!(
            trust(p, 0, 0, 0o640, &me(&[0, fs_group])).ok(),
            Some(Access::Group(0))
        );
        let refused: &[(u32, u32, u32, &Reader, &str)] = &[
            // A server started as root: the rule for ordinary hosts stands.
            (
                0,
                0,
                0o640,
                &root,
                "only when httpd starts as a user other than root",
            ),
            (0, 0, 0o440, &root, "its group"),
            // Not one of the reader's groups.
            (
                0,
                27,
                0o440,
                &me(&[ug]),
                "group 27 is not one of the groups",
            ),
            // The reader's own file: chmod it.
            (user, ug, 0o640, &me(&[ug]), "chmod 600"),
            (user, ug, 0o440, &me(&[ug]), "chmod 600"),
            // Group write, exec, or anything for others.
            (0, fs_group, 0o460, &me(&[fs_group]), "never write"),
            (0, fs_group, 0o660, &me(&[fs_group]), "never write"),
            (0, fs_group, 0o450, &me(&[fs_group]), "never write"),
            (0, fs_group, 0o444, &me(&[fs_group]), "group and others"),
            (0, fs_group, 0o404, &me(&[fs_group]), "others"),
            (user, ug, 0o604, &me(&[ug]), "others"),
        ];
        for &(owner, group, mode, reader, why) in refused {
            let err = trust(p, owner, group, 0o100000 | mode, reader).expect_err("too open");
            assert!(matches!(err, KeyFileError::TooOpen { .. }), "{err}");
            let text = err.to_string();
            assert!(
                text.contains("/k/farm.key")
                    && text.contains(&format!("mode {mode:04o}"))
                    && text.contains("chmod 600")
                    && text.contains(why),
                "owner {owner} group {group} mode {mode:o} reader {reader:?}: {text}"
            );
        }
    }

    #[test]
    fn the_current_reader_is_this_process() {
        let r = Reader::current();
        // SAFETY: geteuid and getegid have no preconditions.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        assert_eq!(r.uid, uid);
        assert_eq!(r.groups.first(), Some(&gid));
    }

    #[test]
    fn refuses_bad_sizes_and_duplicates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, uid) = key_file(dir.path(), b"", 0o600);
        let err = FarmKeys::load_as(&path, &as_user(uid)).expect_err("empty");
        assert!(matches!(err, KeyFileError::Empty { .. }), "{err}");
        let (path, uid) = key_file(dir.path(), &[0u8; 47], 0o600);
        let err = FarmKeys::load_as(&path, &as_user(uid)).expect_err("47");
        assert!(
            matches!(err, KeyFileError::BadSize { size: 47, .. }),
            "{err}"
        );
        let (path, uid) = key_file(dir.path(), &[0u8; 49], 0o600);
        assert!(FarmKeys::load_as(&path, &as_user(uid)).is_err());
        let (path, uid) = key_file(dir.path(), &vec![0u8; RECORD_LEN * 65], 0o600);
        let err = FarmKeys::load_as(&path, &as_user(uid)).expect_err("65 records");
        assert!(matches!(err, KeyFileError::TooManyRecords { .. }), "{err}");
        let mut bytes = record(1, 1);
        bytes.extend(record(1, 2));
        let (path, uid) = key_file(dir.path(), &bytes, 0o600);
        let err = FarmKeys::load_as(&path, &as_user(uid)).expect_err("duplicate");
        assert!(matches!(err, KeyFileError::DuplicateName { .. }), "{err}");
    }

    #[test]
    fn refuses_symlinks_directories_and_missing_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, uid) = key_file(dir.path(), &record(1, 1), 0o600);
        let link = dir.path().join("link.key");
        std::os::unix::fs::symlink(&path, &link).expect("symlink");
        let err = FarmKeys::load_as(&link, &as_user(uid)).expect_err("symlink");
        assert!(matches!(err, KeyFileError::Symlink { .. }), "{err}");
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).expect("mkdir");
        std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        let err = FarmKeys::load_as(&sub, &as_user(uid)).expect_err("directory");
        assert!(matches!(err, KeyFileError::NotRegular { .. }), "{err}");
        let err = FarmKeys::load_as(&dir.path().join("absent"), &as_user(uid)).expect_err("absent");
        assert!(matches!(err, KeyFileError::Open { .. }), "{err}");
    }

    #[test]
    fn refuses_a_fifo_without_hanging() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("fifo.key");
        let status = std::process::Command::new("mkfifo")
            .arg("-m")
            .arg("600")
            .arg(&fifo)
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            return; // no mkfifo here: nothing to show
        }
        let uid = std::fs::symlink_metadata(&fifo).expect("lstat").uid();
        let err = FarmKeys::load_as(&fifo, &as_user(uid)).expect_err("fifo");
        assert!(matches!(err, KeyFileError::NotRegular { .. }), "{err}");
    }
}
