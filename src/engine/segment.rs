//! [`Segment`]: the shared mapping itself, anonymous (a memfd) or a file.
//!
//! Both are `MAP_SHARED` (memmap2's `MmapRaw`), so children forked after the
//! mapping is made see each other's writes. The mapping is handed out as a
//! raw pointer only, never as `&mut [u8]`: other processes write it too.
//! Files are created mode 0600 under a temporary name, filled with
//! `posix_fallocate` (so a full tmpfs is an error now, not a SIGBUS later),
//! initialised, then renamed into place: a reader never sees a half-made
//! segment, and processes still mapping a replaced file keep their (unlinked)
//! copy instead of faulting on a truncated one.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use memmap2::{Advice, MmapRaw};

use super::error::Error;

pub struct Segment {
    map: MmapRaw,
    file: File,
    path: Option<PathBuf>,
}

fn io_err(path: Option<&Path>, op: &'static str, source: std::io::Error) -> Error {
    Error::Io {
        path: path.map(Path::to_path_buf),
        op,
        source,
    }
}

/// Map `file` shared, read-write, and ask for transparent huge pages. A large
/// cache is read at random: with 4 KiB pages nearly every lookup also misses
/// the TLB. Whether the kernel grants them is the operator's setting: for an
/// anonymous segment (memfd), `/sys/kernel/mm/transparent_hugepage/shmem_enabled`
/// set to `within_size` or `always` gives them from the start (the pages are
/// allocated by `reserve`, before this advice); under `advise` only
/// khugepaged's background collapse can act on the advice; `never` (Debian's
/// default) refuses. A file on tmpfs follows the mount's `huge=` option. The
/// advice is a hint; its failure is not an error.
fn map(file: &File) -> std::io::Result<MmapRaw> {
    let map = MmapRaw::map_raw(file)?;
    let _ = map.advise(Advice::HugePage);
    Ok(map)
}

/// An error unless `path` is absent or a regular file (not followed if a
/// symbolic link: the link itself is what a rename would replace).
fn refuse_unless_regular(path: &Path) -> Result<(), Error> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if !m.file_type().is_file() => Err(io_err(
            Some(path),
            "check",
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "exists and is not a regular file; refusing to replace it",
            ),
        )),
        _ => Ok(()),
    }
}

fn reserve(file: &File, len: u64, path: Option<&Path>) -> Result<(), Error> {
    let len_i = libc::off_t::try_from(len)
        .map_err(|_| io_err(path, "size", std::io::Error::from_raw_os_error(libc::EFBIG)))?;
    file.set_len(len)
        .map_err(|e| io_err(path, "ftruncate", e))?;
    // SAFETY: plain syscall on an fd we own.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len_i) };
    if rc != 0 && rc != libc::EOPNOTSUPP && rc != libc::EINVAL {
        return Err(io_err(
            path,
            "allocate",
            std::io::Error::from_raw_os_error(rc),
        ));
    }
    Ok(())
}

impl Segment {
    /// A new zeroed anonymous segment (memfd): lives while mapped or its fd is open.
    pub fn create_anonymous(len: u64) -> Result<Segment, Error> {
        let name = CString::new("mod_socache_shm").expect("no NUL in a literal");
        // SAFETY: name is a valid C string; the returned fd is checked.
        let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(io_err(
                None,
                "memfd_create",
                std::io::Error::last_os_error(),
            ));
        }
        // SAFETY: fd is a fresh descriptor we own exclusively.
        let file = unsafe { File::from_raw_fd(fd) };
        reserve(&file, len, None)?;
        let map = map(&file).map_err(|e| io_err(None, "mmap", e))?;
        Ok(Segment {
            map,
            file,
            path: None,
        })
    }

    /// A new zeroed file-backed segment at `path` (mode 0600). `init` fills it
    /// in before it appears at `path`.
    pub fn create_file(
        path: &Path,
        len: u64,
        init: impl FnOnce(&Segment) -> Result<(), Error>,
    ) -> Result<Segment, Error> {
        // The new file is renamed over `path`: never over a device, a
        // directory or anything else that is not a plain file (a mistyped
        // `shm:/dev/null` must not replace the null device).
        refuse_unless_regular(path)?;
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(format!(".{}.tmp", std::process::id()));
        let tmp = PathBuf::from(tmp);
        let _ = std::fs::remove_file(&tmp);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&tmp)
            .map_err(|e| io_err(Some(path), "create", e))?;
        let made = (|| {
            reserve(&file, len, Some(path))?;
            let map = map(&file).map_err(|e| io_err(Some(path), "mmap", e))?;
            let seg = Segment {
                map,
                file,
                path: Some(path.to_path_buf()),
            };
            init(&seg)?;
            std::fs::rename(&tmp, path).map_err(|e| io_err(Some(path), "rename", e))?;
            Ok(seg)
        })();
        if made.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        made
    }

    /// Map an existing segment file read-write.
    pub fn open_file(path: &Path) -> Result<Segment, Error> {
        refuse_unless_regular(path)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| io_err(Some(path), "open", e))?;
        let map = map(&file).map_err(|e| io_err(Some(path), "mmap", e))?;
        Ok(Segment {
            map,
            file,
            path: Some(path.to_path_buf()),
        })
    }

    /// Map the segment behind a descriptor that stays the caller's.
    pub fn from_fd(fd: RawFd) -> Result<Segment, Error> {
        // SAFETY: dup of a descriptor the caller says is open; checked below.
        let mine = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
        if mine < 0 {
            return Err(io_err(None, "dup", std::io::Error::last_os_error()));
        }
        // SAFETY: `mine` is a fresh descriptor we own.
        let file = unsafe { File::from_raw_fd(mine) };
        let map = map(&file).map_err(|e| io_err(None, "mmap", e))?;
        Ok(Segment {
            map,
            file,
            path: None,
        })
    }

    pub fn base(&self) -> *mut u8 {
        self.map.as_mut_ptr()
    }

    pub fn len(&self) -> u64 {
        self.map.len() as u64
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// A duplicate of the descriptor, owned by the caller.
    pub fn dup_fd(&self) -> Result<RawFd, Error> {
        // SAFETY: our file is open for our lifetime.
        let fd = unsafe { libc::fcntl(self.file.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io_err(self.path(), "dup", std::io::Error::last_os_error()));
        }
        Ok(fd)
    }
}
