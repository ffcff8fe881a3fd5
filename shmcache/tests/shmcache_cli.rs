//! The `shmcache` command line: every command refuses options it does not
//! take and arguments it does not expect (exit status 2, a message naming
//! the offending word, the usage on stderr, nothing on stdout), and
//! `-h`/`--help`/`--version` work. None of these needs a segment: a usage
//! error is reported before FILE is opened, so FILE here does not exist.

use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_shmcache");
const MISSING: &str = "/nonexistent/shmcache-cli-test/scache";

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {BIN} {args:?}: {e}"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `args` is a usage error whose message contains `wanted`.
fn assert_usage_error(args: &[&str], wanted: &str) {
    let out = run(args);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(2),
        "shmcache {args:?} should be a usage error (exit 2): stdout {stdout:?} stderr {stderr:?}"
    );
    assert!(
        stderr.starts_with("shmcache: ") && stderr.contains(wanted) && stderr.contains("usage:"),
        "shmcache {args:?}: stderr should name {wanted:?} and show the usage: {stderr:?}"
    );
    assert!(stdout.is_empty(), "shmcache {args:?} printed {stdout:?}");
}

#[test]
fn unknown_options_are_refused_by_every_command() {
    for cmd in [
        vec!["stat", MISSING],
        vec!["dump", MISSING],
        vec!["check", MISSING],
        vec!["flush", MISSING],
        vec!["remove", MISSING, "00ff"],
    ] {
        // After the operands, before them, and between command and FILE.
        for at in [cmd.len(), 1, 0] {
            let mut args = cmd.clone();
            args.insert(at, "--bogus");
            assert_usage_error(&args, "unknown option \"--bogus\"");
        }
        let mut args = cmd.clone();
        args.push("-x");
        assert_usage_error(&args, "unknown option \"-x\"");
    }
    // stat's own options belong to stat alone.
    for cmd in ["dump", "check", "flush"] {
        assert_usage_error(&[cmd, MISSING, "--json"], "unknown option \"--json\"");
        assert_usage_error(&[cmd, MISSING, "--shards"], "unknown option \"--shards\"");
    }
    assert_usage_error(
        &["remove", MISSING, "00ff", "--json"],
        "unknown option \"--json\"",
    );
    assert_usage_error(&["--bogus"], "unknown option \"--bogus\"");
}

#[test]
fn extra_and_missing_arguments_are_refused() {
    for cmd in ["stat", "dump", "check", "flush"] {
        assert_usage_error(&[cmd, MISSING, "extra"], "unexpected argument \"extra\"");
        assert_usage_error(&[cmd], "missing FILE");
    }
    assert_usage_error(
        &["stat", MISSING, "--json", "extra", "--shards"],
        "unexpected argument \"extra\"",
    );
    assert_usage_error(
        &["remove", MISSING, "00ff", "extra"],
        "unexpected argument \"extra\"",
    );
    assert_usage_error(&["remove", MISSING], "missing ID_HEX");
    assert_usage_error(&["remove"], "missing FILE ID_HEX");
    assert_usage_error(&[], "missing command");
    assert_usage_error(&["stats", MISSING], "unknown command \"stats\"");
}

#[test]
fn well_formed_commands_reach_the_file() {
    // Accepted command lines fail only because FILE does not exist (exit
    // 1, the operating system's reason), never as usage errors.
    for args in [
        vec!["stat", MISSING],
        vec!["stat", MISSING, "--json"],
        vec!["stat", "--shards", MISSING, "--json"],
        vec!["dump", MISSING],
        vec!["check", MISSING],
        vec!["flush", MISSING],
        vec!["remove", MISSING, "00ff"],
        vec!["check", "--", MISSING],
    ] {
        let out = run(&args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "shmcache {args:?}: {stderr:?}");
        assert!(
            stderr.contains("No such file") && !stderr.contains("usage:"),
            "shmcache {args:?}: {stderr:?}"
        );
    }
    // After "--" a dash-word is an operand: here FILE, which does not exist.
    let out = run(&["check", "--", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    // A malformed id is refused (exit 1) before the file is opened.
    let out = run(&["remove", MISSING, "xyz"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(text(&out.stderr).contains("not a hex id"), "{out:?}");
}

#[test]
fn help_and_version() {
    for args in [
        vec!["--help"],
        vec!["-h"],
        vec!["stat", "--help"],
        vec!["remove", MISSING, "-h"],
        vec!["dump", "--bogus", "--help"],
    ] {
        let out = run(&args);
        let stdout = text(&out.stdout);
        assert!(out.status.success(), "shmcache {args:?}: {out:?}");
        assert!(
            stdout.starts_with("Usage: shmcache ")
                && ["Commands:", "Options:", "Prometheus:", "Exit status:"]
                    .iter()
                    .all(|s| stdout.lines().any(|l| l == *s)),
            "shmcache {args:?} printed {stdout:?}"
        );
        for cmd in [
            "stat", "dump", "check", "flush", "remove", "--json", "--shards",
        ] {
            assert!(stdout.contains(cmd), "help lacks {cmd}: {stdout:?}");
        }
        assert!(out.stderr.is_empty(), "{out:?}");
    }
    let out = run(&["--version"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        text(&out.stdout),
        format!("shmcache (mod_socache_shm) {}\n", env!("CARGO_PKG_VERSION"))
    );
}
