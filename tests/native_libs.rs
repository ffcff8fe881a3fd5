//! The module's link line names every system library the Rust static library
//! needs. `make module` links `libsocache_shm.a` into mod_socache_shm.so with
//! apxs and the Makefile's `-l` flags (SYSLIBS); what the staticlib needs is
//! what rustc prints for it (`--print native-static-libs`: the farm tier's
//! OpenSSL and the Rust runtime's libraries). A library missing from the link
//! line is an undefined symbol when httpd loads the module, not a build
//! error: this test makes it one.
//!
//! rustc's answer comes from `cargo rustc` into its own target directory
//! (`target/native-libs`, a dev build of the library alone: a few minutes the
//! first time, then cargo replays the cached note in about a second), so the
//! release artefacts of `make` and `cargo test --release` are never rebuilt
//! for it. The link line is `make -n -B module`'s apxs command: the one
//! `make` (and debian/rules, through it) runs.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The `-l` names in a whitespace-separated flag list.
fn libs<'a>(flags: impl Iterator<Item = &'a str>) -> BTreeSet<String> {
    flags
        .filter_map(|f| f.strip_prefix("-l"))
        .map(String::from)
        .collect()
}

/// What rustc says the staticlib needs from the system.
fn native_static_libs() -> BTreeSet<String> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(ROOT).join("target"))
        .join("native-libs");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(ROOT)
        .env("CARGO_TARGET_DIR", &target)
        .env("CARGO_TERM_COLOR", "never")
        .args([
            "rustc",
            "-p",
            "mod_socache_shm",
            "--lib",
            "--crate-type",
            "staticlib",
            "--",
            "--print",
            "native-static-libs",
        ])
        .output()
        .expect("run cargo rustc");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "cargo rustc failed:\n{stderr}");
    let line = stderr
        .lines()
        .find_map(|l| l.split_once("native-static-libs:").map(|(_, v)| v))
        .unwrap_or_else(|| panic!("no native-static-libs note from rustc:\n{stderr}"));
    libs(line.split_whitespace())
}

/// The `-l` flags of the apxs command that links the module.
fn link_line_libs() -> (String, BTreeSet<String>) {
    let out = Command::new("make")
        .current_dir(ROOT)
        .args(["-n", "-B", "--no-print-directory", "module"])
        .output()
        .expect("run make -n");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "make -n -B module failed:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find(|l| l.contains("libsocache_shm.a") && l.contains(" -c "))
        .unwrap_or_else(|| panic!("no apxs link command in `make -n -B module`:\n{stdout}"))
        .to_string();
    let found = libs(line.split_whitespace());
    (line, found)
}

#[test]
fn link_line_has_every_native_lib_of_the_staticlib() {
    let needed = native_static_libs();
    // Sanity: the farm tier links OpenSSL; a note without it was misread.
    assert!(
        needed.contains("ssl") && needed.contains("crypto"),
        "unexpected native-static-libs: {needed:?}"
    );
    let (line, linked) = link_line_libs();
    // libc: the C compiler driver apxs runs links it into every object.
    let missing: Vec<_> = needed
        .iter()
        .filter(|l| *l != "c" && !linked.contains(*l))
        .collect();
    assert!(
        missing.is_empty(),
        "the module's link line lacks -l{}: add them to SYSLIBS in the Makefile\n\
         rustc needs: {needed:?}\nlink line: {line}",
        missing
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(" -l"),
    );
}
