//! [`Segment`]: the shared mapping itself, anonymous (a memfd) or a file.
//!
//! Both are `MAP_SHARED` (memmap2's `MmapRaw`), so children forked after the
//! mapping is made see each other's writes. The mapping is handed out as a
//! raw pointer only, never as `&mut [u8]`: other processes write it too.
//!
//! # Who may touch the file (the threat model)
//! httpd's parent runs as root; its children, and everything they run, as
//! the server's `User`, which must be treated as hostile. (An httpd started
//! by an unprivileged user ignores `User`: parent and children are that
//! user, and the rules below then keep out other users only.) So:
//! 1. A file segment lives in a *trusted directory*: owned by root or by
//!    the effective user of the process (the user httpd starts as), and
//!    writable by no one else: the same trust rule as the farm key file's
//!    (`farm/src/keys.rs`). A sticky,
//!    world-writable `/tmp` is refused: another user could pre-create or
//!    squat the names used there. The directory is opened once
//!    (`O_DIRECTORY | O_NOFOLLOW`), checked with `fstat`, and every later
//!    step uses that descriptor (`fstatat`, `openat`, `renameat`), never
//!    the path again.
//! 2. The file is created by the process that maps it (httpd's parent),
//!    mode 0600, under a temporary name, filled with `posix_fallocate` (so a
//!    full tmpfs is an error now, not a SIGBUS later), initialised, then
//!    renamed into place: a reader never sees a half-made segment, and
//!    processes still mapping a replaced file keep their (unlinked) copy.
//!    Nothing is ever chowned or chmodded: children use the mapping they
//!    inherit and never need the file.
//! 3. What may be replaced: nothing at the path, an empty regular file, or a
//!    regular file that starts with our magic (a segment left by an earlier
//!    run, or planted by someone else: it is replaced, never trusted).
//!    Anything else (another file, a symbolic link, a FIFO, a device, a
//!    directory) is refused with an error naming the path.
//! 4. A segment is reattached only through a descriptor its creator kept
//!    ([`Segment::reopen`]), never by opening a path: a cold start cannot
//!    tell a leftover from a planted file, so it makes a new segment.
//! 5. An anonymous segment is a memfd sealed against shrinking and growing
//!    (`F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL`): a process that inherits
//!    its descriptor can neither truncate it under the others (SIGBUS) nor
//!    remove the seals. A file cannot be sealed; children drop their copy
//!    of its descriptor ([`Segment::close_fd`]).

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};

#[cfg(miri)]
use heap::MmapRaw;
#[cfg(not(miri))]
use memmap2::{Advice, MmapRaw};

use super::error::Error;
use super::layout::MAGIC;

pub(crate) struct Segment {
    map: MmapRaw,
    /// The segment's descriptor, or -1 once [`Segment::close_fd`] dropped it.
    fd: AtomicI32,
    path: Option<PathBuf>,
}

impl Drop for Segment {
    fn drop(&mut self) {
        let fd = self.fd.swap(-1, Ordering::AcqRel);
        if fd >= 0 {
            // SAFETY: the descriptor is ours (made or dup'ed by this Segment)
            // and closed exactly once (the swap took it).
            unsafe { libc::close(fd) };
        }
    }
}

fn io_err(path: Option<&Path>, op: &'static str, source: std::io::Error) -> Error {
    Error::Io {
        path: path.map(Path::to_path_buf),
        op,
        source,
    }
}

fn refused(path: &Path, why: String) -> Error {
    Error::Refused {
        path: path.to_path_buf(),
        why,
    }
}

fn cstr(name: &OsStr) -> std::io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))
}

fn euid() -> libc::uid_t {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

/// Root, or the user this process runs as (the trust rule).
fn trusted_owner(uid: libc::uid_t) -> bool {
    uid == 0 || uid == euid()
}

fn fstat(fd: RawFd) -> std::io::Result<libc::stat> {
    // SAFETY: all-zero is a valid `stat` for fstat to overwrite.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fd is open (callers own it); st is a valid out-pointer.
    if unsafe { libc::fstat(fd, &raw mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st)
}

/// The descriptor a call just returned, owned; or, if the call failed (`fd`
/// negative), the error it left in `errno`, as an [`Error::Io`] of `op`.
///
/// # Safety
///
/// `fd` is negative or a fresh descriptor that nothing else owns or closes,
/// and nothing has run since the call that could have changed `errno`.
unsafe fn owned_fd(fd: RawFd, path: Option<&Path>, op: &'static str) -> Result<OwnedFd, Error> {
    if fd < 0 {
        return Err(io_err(path, op, std::io::Error::last_os_error()));
    }
    // SAFETY: fd is fresh and ours alone (the caller's promise).
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `open(path, flags | O_NOFOLLOW | O_CLOEXEC)`; its failures are [`Error::Io`]
/// of `op`.
fn open_nofollow(path: &Path, flags: libc::c_int, op: &'static str) -> Result<OwnedFd, Error> {
    let c = cstr(path.as_os_str()).map_err(|e| io_err(Some(path), op, e))?;
    // SAFETY: c is NUL-terminated; open's new fd, ours alone, goes straight
    // (errno and all) to owned_fd.
    unsafe {
        owned_fd(
            libc::open(c.as_ptr(), flags | libc::O_NOFOLLOW | libc::O_CLOEXEC),
            Some(path),
            op,
        )
    }
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`; `None` if there is nothing there.
fn stat_at(dir: &OwnedFd, name: &CString) -> std::io::Result<Option<libc::stat>> {
    // SAFETY: all-zero is a valid `stat` for fstatat to overwrite.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: dir is an open directory; name is NUL-terminated; st is valid.
    let rc = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            &raw mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc == 0 {
        return Ok(Some(st));
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ENOENT) {
        Ok(None)
    } else {
        Err(e)
    }
}

fn kind(mode: libc::mode_t) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFREG => "a regular file",
        libc::S_IFDIR => "a directory",
        libc::S_IFLNK => "a symbolic link",
        libc::S_IFIFO => "a FIFO",
        libc::S_IFSOCK => "a socket",
        libc::S_IFCHR => "a character device",
        libc::S_IFBLK => "a block device",
        _ => "not a regular file",
    }
}

/// The segment file's directory and its name in it.
fn split(path: &Path) -> Result<(&Path, &OsStr), Error> {
    let name = path
        .file_name()
        .ok_or_else(|| refused(path, "does not name a file".into()))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    Ok((dir, name))
}

/// Open `dir` and check that only root (or this process's user) can change
/// what it holds (rule 1 of the module doc).
pub(crate) fn open_trusted_dir(dir: &Path) -> Result<OwnedFd, Error> {
    let dirfd = open_nofollow(dir, libc::O_RDONLY | libc::O_DIRECTORY, "open directory")?;
    let st = fstat(dirfd.as_raw_fd()).map_err(|e| io_err(Some(dir), "stat directory", e))?;
    if !trusted_owner(st.st_uid) {
        return Err(refused(
            dir,
            format!(
                "the segment's directory is owned by uid {}, neither root nor the user httpd starts as (uid {}): its owner could replace the segment; use a directory that root or that user owns and only its owner can write, such as /run/apache2",
                st.st_uid,
                euid()
            ),
        ));
    }
    if st.st_mode & 0o022 != 0 {
        return Err(refused(
            dir,
            format!(
                "the segment's directory is writable by {} (mode {:o}): others could plant or replace files there; use a directory only its owner (root or the user httpd starts as) can write, such as /run/apache2",
                if st.st_mode & 0o002 != 0 { "everyone" } else { "its group" },
                st.st_mode & 0o7777
            ),
        ));
    }
    Ok(dirfd)
}

/// What lies at a segment's path, for [`check_replaceable`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Existing {
    Nothing,
    EmptyFile,
    /// A regular file starting with our magic.
    OurSegment,
}

/// Whether the segment file at `path` may be (re)made: its directory is
/// trusted, and what is there now is nothing, an empty file or a segment of
/// ours (rule 3). Never modifies anything. Used by `apachectl -t` too.
pub fn check_replaceable(path: &Path) -> Result<Existing, Error> {
    let (dir, name) = split(path)?;
    let dirfd = open_trusted_dir(dir)?;
    existing_at(&dirfd, name, path)
}

fn existing_at(dirfd: &OwnedFd, name: &OsStr, path: &Path) -> Result<Existing, Error> {
    let cname = cstr(name).map_err(|e| io_err(Some(path), "check", e))?;
    check_name_length(dirfd, name, path)?;
    let Some(st) = stat_at(dirfd, &cname).map_err(|e| io_err(Some(path), "check", e))? else {
        return Ok(Existing::Nothing);
    };
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(refused(
            path,
            format!(
                "exists and is {}, not a segment file; refusing to replace it",
                kind(st.st_mode)
            ),
        ));
    }
    if st.st_size == 0 {
        return Ok(Existing::EmptyFile);
    }
    // SAFETY: dirfd is open, cname NUL-terminated; openat's new fd, ours
    // alone, goes straight (errno and all) to owned_fd. O_NONBLOCK: should
    // the name be swapped for a FIFO meanwhile, open does not wait for a
    // writer.
    let file = File::from(unsafe {
        owned_fd(
            libc::openat(
                dirfd.as_raw_fd(),
                cname.as_ptr(),
                libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC,
            ),
            Some(path),
            "open",
        )
    }?);
    let st = fstat(file.as_raw_fd()).map_err(|e| io_err(Some(path), "stat", e))?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(refused(
            path,
            format!("is {}; refusing to replace it", kind(st.st_mode)),
        ));
    }
    let mut head = [0u8; 8];
    let n = std::os::unix::fs::FileExt::read_at(&file, &mut head, 0)
        .map_err(|e| io_err(Some(path), "read", e))?;
    if n == head.len() && head == MAGIC {
        Ok(Existing::OurSegment)
    } else {
        Err(refused(
            path,
            "exists and is not a mod_socache_shm segment; refusing to replace it (a typo in the path? remove the file or name another)".into(),
        ))
    }
}

/// The name, and the temporary name made from it, must fit the directory's
/// file system.
fn check_name_length(dirfd: &OwnedFd, name: &OsStr, path: &Path) -> Result<(), Error> {
    // SAFETY: plain syscall on an open descriptor.
    let max = unsafe { libc::fpathconf(dirfd.as_raw_fd(), libc::_PC_NAME_MAX) };
    let max = if max > 0 { max as usize } else { 255 };
    let longest = name.len() + TMP_SUFFIX_MAX;
    if longest > max {
        return Err(refused(
            path,
            format!(
                "the file name is {} bytes; with the temporary suffix used while creating it, it must stay within this file system's {max}",
                name.len()
            ),
        ));
    }
    Ok(())
}

/// `.{pid}.{random}.tmp`: at most 1 + 10 + 1 + 16 + 4 bytes.
const TMP_SUFFIX_MAX: usize = 32;

/// Map `file` shared, read-write, and ask for transparent huge pages. A large
/// cache is read at random: with 4 KiB pages nearly every lookup also misses
/// the TLB. Whether the kernel grants them is the operator's setting: for an
/// anonymous segment (memfd), `/sys/kernel/mm/transparent_hugepage/shmem_enabled`
/// set to `within_size` or `always` gives them from the start (the pages are
/// allocated by `reserve`, before this advice); under `advise` only
/// khugepaged's background collapse can act on the advice; `never` (Debian's
/// default) refuses. A file on tmpfs follows the mount's `huge=` option. The
/// advice is a hint; its failure is not an error.
#[cfg(not(miri))]
fn map(fd: RawFd) -> std::io::Result<MmapRaw> {
    let map = MmapRaw::map_raw(fd)?;
    let _ = map.advise(Advice::HugePage);
    Ok(map)
}

fn reserve(fd: RawFd, len: u64, path: Option<&Path>) -> Result<(), Error> {
    let len_i = libc::off_t::try_from(len)
        .map_err(|_| io_err(path, "size", std::io::Error::from_raw_os_error(libc::EFBIG)))?;
    // SAFETY: plain syscalls on a descriptor the caller owns.
    if unsafe { libc::ftruncate(fd, len_i) } != 0 {
        return Err(io_err(path, "ftruncate", std::io::Error::last_os_error()));
    }
    // SAFETY: as above.
    let rc = unsafe { libc::posix_fallocate(fd, 0, len_i) };
    if rc != 0 && rc != libc::EOPNOTSUPP && rc != libc::EINVAL {
        return Err(io_err(
            path,
            "allocate",
            std::io::Error::from_raw_os_error(rc),
        ));
    }
    Ok(())
}

fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    u64::from_le_bytes(b)
}

impl Segment {
    /// A new zeroed anonymous segment (memfd, sealed at `len` bytes): lives
    /// while mapped or its fd is open.
    #[cfg(not(miri))]
    pub(crate) fn create_anonymous(len: u64) -> Result<Segment, Error> {
        let name = c"mod_socache_shm";
        let flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
        // SAFETY: name is a valid C string; memfd_create's new fd, ours
        // alone, goes straight (errno and all) to owned_fd.
        let owned = unsafe {
            owned_fd(
                libc::memfd_create(name.as_ptr(), flags),
                None,
                "memfd_create",
            )
        }?;
        let fd = owned.as_raw_fd();
        reserve(fd, len, None)?;
        // SAFETY: plain fcntl on our memfd.
        let rc = unsafe {
            libc::fcntl(
                fd,
                libc::F_ADD_SEALS,
                libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL,
            )
        };
        if rc != 0 {
            return Err(io_err(None, "seal", std::io::Error::last_os_error()));
        }
        let map = map(fd).map_err(|e| io_err(None, "mmap", e))?;
        Ok(Segment {
            map,
            fd: AtomicI32::new(std::os::fd::IntoRawFd::into_raw_fd(owned)),
            path: None,
        })
    }

    /// A new zeroed file-backed segment at `path` (mode 0600, in a trusted
    /// directory, replacing only what [`check_replaceable`] allows). `init`
    /// fills it in before it appears at `path`.
    pub(crate) fn create_file(
        path: &Path,
        len: u64,
        init: impl FnOnce(&Segment) -> Result<(), Error>,
    ) -> Result<Segment, Error> {
        let (dir, name) = split(path)?;
        let dirfd = open_trusted_dir(dir)?;
        existing_at(&dirfd, name, path)?;
        let mut tmp = OsStr::new(".").to_owned();
        tmp.push(name);
        tmp.push(format!(".{}.{:016x}.tmp", std::process::id(), random_u64()));
        let ctmp = cstr(&tmp).map_err(|e| io_err(Some(path), "create", e))?;
        let cname = cstr(name).map_err(|e| io_err(Some(path), "create", e))?;
        let flags =
            libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        // SAFETY: dirfd is open, ctmp NUL-terminated; openat's new fd, ours
        // alone, goes straight (errno and all) to owned_fd.
        let owned = unsafe {
            owned_fd(
                libc::openat(
                    dirfd.as_raw_fd(),
                    ctmp.as_ptr(),
                    flags,
                    0o600 as libc::c_uint,
                ),
                Some(path),
                "create",
            )
        }?;
        let fd = owned.as_raw_fd();
        let made = (|| {
            reserve(fd, len, Some(path))?;
            let map = map(fd).map_err(|e| io_err(Some(path), "mmap", e))?;
            let seg = Segment {
                map,
                fd: AtomicI32::new(-1),
                path: Some(path.to_path_buf()),
            };
            init(&seg)?;
            // SAFETY: both names are NUL-terminated and relative to dirfd.
            let rc = unsafe {
                libc::renameat(
                    dirfd.as_raw_fd(),
                    ctmp.as_ptr(),
                    dirfd.as_raw_fd(),
                    cname.as_ptr(),
                )
            };
            if rc != 0 {
                return Err(io_err(
                    Some(path),
                    "rename",
                    std::io::Error::last_os_error(),
                ));
            }
            Ok(seg)
        })();
        match made {
            Ok(seg) => {
                seg.fd.store(
                    std::os::fd::IntoRawFd::into_raw_fd(owned),
                    Ordering::Release,
                );
                Ok(seg)
            }
            Err(e) => {
                // SAFETY: as for openat; removes only our temporary name.
                unsafe { libc::unlinkat(dirfd.as_raw_fd(), ctmp.as_ptr(), 0) };
                Err(e)
            }
        }
    }

    /// Map an existing segment file read-write (the inspector's way in): a
    /// regular file, not followed if a symbolic link.
    pub(crate) fn open_file(path: &Path) -> Result<Segment, Error> {
        // O_NONBLOCK: a FIFO does not block the open.
        let owned = open_nofollow(path, libc::O_RDWR | libc::O_NONBLOCK, "open")?;
        let fd = owned.as_raw_fd();
        let st = fstat(fd).map_err(|e| io_err(Some(path), "stat", e))?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(refused(
                path,
                format!("is {}, not a segment file", kind(st.st_mode)),
            ));
        }
        let map = map(fd).map_err(|e| io_err(Some(path), "mmap", e))?;
        Ok(Segment {
            map,
            fd: AtomicI32::new(std::os::fd::IntoRawFd::into_raw_fd(owned)),
            path: Some(path.to_path_buf()),
        })
    }

    /// Map the segment behind a descriptor that stays the caller's (one its
    /// creator kept, see rule 4). For a file segment (`path` given), the
    /// file must still be a regular file of a trusted owner, mode 0600, one
    /// link; `Ok(false)` in the answer means the path no longer names it
    /// (removed or replaced), which the caller may repair by making a new one.
    pub(crate) fn reopen(fd: RawFd, path: Option<&Path>) -> Result<(Segment, bool), Error> {
        // SAFETY: dup of a descriptor the caller says is open; the new fd,
        // ours alone, goes straight (errno and all) to owned_fd.
        let owned = unsafe { owned_fd(libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0), path, "dup") }?;
        let mine = owned.as_raw_fd();
        let st = fstat(mine).map_err(|e| io_err(path, "stat", e))?;
        let mut at_path = true;
        if let Some(path) = path {
            let (dir, name) = split(path)?;
            at_path = match open_trusted_dir(dir) {
                Ok(dirfd) => {
                    let cname = cstr(name).map_err(|e| io_err(Some(path), "check", e))?;
                    matches!(stat_at(&dirfd, &cname), Ok(Some(now)) if now.st_dev == st.st_dev && now.st_ino == st.st_ino)
                }
                Err(_) => false,
            };
            if at_path
                && (st.st_mode & libc::S_IFMT != libc::S_IFREG
                    || !trusted_owner(st.st_uid)
                    || st.st_mode & 0o7777 != 0o600
                    || st.st_nlink != 1)
            {
                return Err(refused(
                    path,
                    format!(
                        "the kept segment is no longer a private file (owner uid {}, mode {:o}, {} links)",
                        st.st_uid,
                        st.st_mode & 0o7777,
                        st.st_nlink
                    ),
                ));
            }
        }
        let map = map(mine).map_err(|e| io_err(path, "mmap", e))?;
        Ok((
            Segment {
                map,
                fd: AtomicI32::new(std::os::fd::IntoRawFd::into_raw_fd(owned)),
                path: path.map(Path::to_path_buf),
            },
            at_path,
        ))
    }

    pub(crate) fn base(&self) -> *mut u8 {
        self.map.as_mut_ptr()
    }

    pub(crate) fn len(&self) -> u64 {
        self.map.len() as u64
    }

    pub(crate) fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Whether the file behind the mapping still has every byte mapped: a
    /// file truncated under the mapping would SIGBUS whoever touches the
    /// missing pages. True when the descriptor was dropped (nothing to ask).
    pub(crate) fn intact(&self) -> bool {
        let fd = self.fd.load(Ordering::Acquire);
        if fd < 0 {
            return true;
        }
        fstat(fd).is_ok_and(|st| st.st_size as u64 >= self.len())
    }

    /// A duplicate of the descriptor, owned by the caller.
    pub(crate) fn dup_fd(&self) -> Result<RawFd, Error> {
        let own = self.fd.load(Ordering::Acquire);
        if own < 0 {
            return Err(io_err(
                self.path(),
                "dup",
                std::io::Error::from_raw_os_error(libc::EBADF),
            ));
        }
        // SAFETY: our descriptor is open until close_fd or drop.
        let fd = unsafe { libc::fcntl(own, libc::F_DUPFD_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io_err(self.path(), "dup", std::io::Error::last_os_error()));
        }
        Ok(fd)
    }

    /// Remove the segment's name, if it still names this segment (a file put
    /// there by someone else is left alone). Acts on the trusted directory's
    /// descriptor, never on the path. Ok(false): nothing of ours was there.
    pub(crate) fn unlink(&self) -> Result<bool, Error> {
        let Some(path) = self.path() else {
            return Ok(false);
        };
        let fd = self.fd.load(Ordering::Acquire);
        let mine = if fd >= 0 { fstat(fd).ok() } else { None };
        let (dir, name) = split(path)?;
        let dirfd = open_trusted_dir(dir)?;
        let cname = cstr(name).map_err(|e| io_err(Some(path), "remove", e))?;
        let there = stat_at(&dirfd, &cname).map_err(|e| io_err(Some(path), "remove", e))?;
        match (mine, there) {
            (Some(m), Some(t)) if m.st_dev == t.st_dev && m.st_ino == t.st_ino => {
                // SAFETY: dirfd is open; cname is NUL-terminated.
                if unsafe { libc::unlinkat(dirfd.as_raw_fd(), cname.as_ptr(), 0) } != 0 {
                    return Err(io_err(
                        Some(path),
                        "remove",
                        std::io::Error::last_os_error(),
                    ));
                }
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Drop the descriptor; the mapping stays. For forked children, which
    /// must not hold a writable descriptor of a file they could truncate.
    pub(crate) fn close_fd(&self) {
        let fd = self.fd.swap(-1, Ordering::AcqRel);
        if fd >= 0 {
            // SAFETY: ours, closed once (the swap took it).
            unsafe { libc::close(fd) };
        }
    }
}

/// Under miri (which has neither `memfd_create` nor `mmap` of a descriptor)
/// a file segment cannot be mapped: the file-backed constructors fail with
/// `Unsupported` at their `mmap` step, and their tests are ignored there.
#[cfg(miri)]
fn map(_fd: RawFd) -> std::io::Result<MmapRaw> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "miri cannot map a file: only anonymous (heap-backed) segments run under miri",
    ))
}

#[cfg(miri)]
impl Segment {
    /// Under miri: a zeroed, page-aligned heap allocation stands in for the
    /// memfd mapping, with the same API (no descriptor: `dup_fd` answers
    /// `EBADF`, `intact` is true). Everything the engine does to the bytes
    /// is then checked by miri: bounds, alignment, provenance, aliasing,
    /// data races between threads. What it cannot show: anything between
    /// processes (fork, a second mapping of the same memory at another
    /// address), the seals, and the kernel's robust-futex handling.
    pub fn create_anonymous(len: u64) -> Result<Segment, Error> {
        let map = MmapRaw::zeroed(len).map_err(|e| io_err(None, "allocate", e))?;
        Ok(Segment {
            map,
            fd: AtomicI32::new(-1),
            path: None,
        })
    }
}

/// The heap-backed stand-in for `memmap2::MmapRaw` under miri: the two
/// methods the segment uses, over one zeroed allocation it owns.
#[cfg(miri)]
mod heap {
    use std::alloc::Layout;

    /// Pages are 4 KiB: the layout relies on nothing coarser than 64.
    const ALIGN: usize = 4096;

    pub struct MmapRaw {
        ptr: std::ptr::NonNull<u8>,
        len: usize,
    }

    impl MmapRaw {
        pub fn zeroed(len: u64) -> std::io::Result<MmapRaw> {
            let len = usize::try_from(len)
                .ok()
                .filter(|&l| l > 0)
                .ok_or_else(|| std::io::Error::from_raw_os_error(libc::EINVAL))?;
            let layout = Layout::from_size_align(len, ALIGN)
                .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
            // SAFETY: layout has a non-zero size (checked above).
            let p = unsafe { std::alloc::alloc_zeroed(layout) };
            let ptr = std::ptr::NonNull::new(p)
                .ok_or_else(|| std::io::Error::from_raw_os_error(libc::ENOMEM))?;
            Ok(MmapRaw { ptr, len })
        }

        pub fn as_mut_ptr(&self) -> *mut u8 {
            self.ptr.as_ptr()
        }

        pub fn len(&self) -> usize {
            self.len
        }
    }

    impl Drop for MmapRaw {
        fn drop(&mut self) {
            // SAFETY: allocated in `zeroed` with exactly this layout (it was
            // valid then), freed once, here.
            unsafe {
                std::alloc::dealloc(
                    self.ptr.as_ptr(),
                    Layout::from_size_align_unchecked(self.len, ALIGN),
                )
            };
        }
    }
}
