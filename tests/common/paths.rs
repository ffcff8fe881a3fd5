//! Paths: the repository, the httpd binary and modules, our module.

use super::*;

/// The repository root.
pub(crate) fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The httpd binary.
pub(crate) fn apache2_bin() -> PathBuf {
    let bin = std::env::var_os("APACHE2_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/sbin/apache2"));
    assert!(
        bin.is_file(),
        "{} not found: install apache2 (sudo bash scripts/deps.sh) or set APACHE2_BIN",
        bin.display()
    );
    bin
}

/// httpd's modules directory.
pub(crate) fn modules_dir() -> PathBuf {
    std::env::var_os("APACHE2_MODULES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/apache2/modules"))
}

/// `build/mod_socache_shm.so`, built with `make module` first if it is
/// missing or older than the sources (once per test process, under a file
/// lock so concurrent test processes do not build at the same time).
pub(crate) fn shm_module() -> PathBuf {
    static MODULE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    MODULE
        .get_or_init(build_module)
        .clone()
        .unwrap_or_else(|e| panic!("{e}"))
}

pub(crate) fn build_module() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("SOCACHE_SHM_MODULE") {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "SOCACHE_SHM_MODULE={}: no such file",
                path.display()
            ))
        };
    }
    let root = repo_root();
    let so = root.join("build/mod_socache_shm.so");
    if !is_stale(&so, &root) {
        return Ok(so);
    }
    fs::create_dir_all(root.join("build")).map_err(|e| format!("mkdir build: {e}"))?;
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(root.join("build/.test-build.lock"))
        .map_err(|e| format!("open build/.test-build.lock: {e}"))?;
    let _locked = FileLock::exclusive(lock);
    if !is_stale(&so, &root) {
        return Ok(so); // Another test process built it meanwhile.
    }
    let log = root.join("build/test-make.log");
    let out = fs::File::create(&log).map_err(|e| format!("create {}: {e}", log.display()))?;
    let err = out.try_clone().map_err(|e| format!("dup: {e}"))?;
    eprintln!(
        "building {} with `make module` (output in {})",
        so.display(),
        log.display()
    );
    // cargo releases its build-directory lock before it runs tests, so the
    // nested cargo build in `make` does not wait for us.
    let status = Command::new("make")
        .arg("module")
        .current_dir(&root)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .status()
        .map_err(|e| format!("cannot run make: {e}"))?;
    let text = fs::read_to_string(&log).unwrap_or_default();
    if !status.success() || !so.is_file() {
        return Err(format!(
            "`make module` failed ({status}); {} is needed by the httpd tests \
             (run `make` first, or scripts/test.sh). Output tail:\n{}",
            so.display(),
            tail(&text, 40)
        ));
    }
    Ok(so)
}

/// Missing, or older than a source it is built from.
pub(crate) fn is_stale(so: &Path, root: &Path) -> bool {
    let Ok(built) = fs::metadata(so).and_then(|m| m.modified()) else {
        return true;
    };
    let mut newest = UNIX_EPOCH;
    let mut visit = |p: &Path| {
        if let Ok(t) = fs::metadata(p).and_then(|m| m.modified()) {
            newest = newest.max(t);
        }
    };
    for f in ["build.rs", "Cargo.toml", "Cargo.lock", "Makefile"] {
        visit(&root.join(f));
    }
    // The workspace crates the module links: the engine, and the farm tier
    // (absent before it lands; `walk` skips a missing directory).
    for dir in ["src", "apache-glue", "engine/src", "farm/src"] {
        walk(&root.join(dir), &mut |p| {
            // The binaries are not linked into the module.
            if !p.starts_with(root.join("src/bin")) {
                visit(p)
            }
        });
    }
    newest > built
}

pub(crate) fn walk(dir: &Path, f: &mut dyn FnMut(&Path)) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, f);
        } else {
            f(&p);
        }
    }
}

/// `flock(LOCK_EX)` held until dropped.
pub(crate) struct FileLock(fs::File);

impl FileLock {
    fn exclusive(file: fs::File) -> FileLock {
        use std::os::fd::AsRawFd;
        // SAFETY: the descriptor is open and owned by `file` for the call.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(rc, 0, "flock: {}", std::io::Error::last_os_error());
        FileLock(file)
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        // SAFETY: the descriptor is still open (owned by self.0).
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}
