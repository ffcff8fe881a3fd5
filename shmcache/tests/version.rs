//! One version: Cargo.toml's (`CARGO_PKG_VERSION`), the top entry of
//! debian/changelog and `shmcache --version` must agree. The package is
//! Debian-native, so the changelog's version is the crate's, with no
//! Debian revision.

use std::path::Path;
use std::process::Command;

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The version of the top entry of a debian/changelog:
/// `source (version) distribution; urgency=...`.
fn changelog_version(changelog: &str) -> Option<&str> {
    let first = changelog.lines().find(|l| !l.trim().is_empty())?;
    let open = first.find(" (")? + 2;
    let len = first[open..].find(')')?;
    Some(&first[open..open + len])
}

#[test]
fn debian_changelog_has_the_crate_version() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../debian/changelog");
    let changelog =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert!(
        changelog.starts_with("libapache2-mod-socache-shm ("),
        "debian/changelog should start with the source package's entry: {:?}",
        changelog.lines().next()
    );
    assert_eq!(
        changelog_version(&changelog),
        Some(VERSION),
        "debian/changelog's top entry and Cargo.toml disagree (add a changelog entry, `dch -v {VERSION}`, or fix Cargo.toml)"
    );
}

#[test]
fn shmcache_reports_the_crate_version() {
    let out = Command::new(env!("CARGO_BIN_EXE_shmcache"))
        .arg("--version")
        .output()
        .expect("run shmcache --version");
    assert!(out.status.success(), "{out:?}");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        printed.trim_end().rsplit(' ').next(),
        Some(VERSION),
        "shmcache --version printed {printed:?}"
    );
}

#[test]
fn changelog_version_reads_the_top_entry() {
    let text = "libapache2-mod-socache-shm (1.2.3) unstable; urgency=medium\n\n  * x\n\n \
                -- A <a@b>  Tue, 01 Dec 2026 09:00:00 +0000\n\n\
                libapache2-mod-socache-shm (1.2.2) unstable; urgency=medium\n";
    assert_eq!(changelog_version(text), Some("1.2.3"));
    assert_eq!(changelog_version("garbage"), None);
}
