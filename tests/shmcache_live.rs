//! The `shmcache` inspector against the segment a real httpd (prefork, `shm`,
//! file-backed) is using: `stat` agrees with server-status, `dump` lists the
//! sessions without their keys, `remove` and `flush` make httpd forget
//! sessions (flush while it serves traffic), and the errors are clear.

mod common;

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use common::{
    parse_status, shmcache, shmcache_as, user_ids, Client, Conn, Httpd, Mpm, Options, Provider,
    Session, Tls, CACHE_FILE,
};

/// Sessions made per protocol version.
const PER_VERSION: usize = 6;

fn start() -> (Httpd, PathBuf) {
    let httpd = Httpd::start(Options::new(Provider::Shm, Mpm::Prefork));
    let file = httpd.dir().join(CACHE_FILE);
    assert!(file.is_file(), "{} missing", file.display());
    (httpd, file)
}

fn describe(c: &Conn) -> String {
    format!("client resumed={} log: {}", c.resumed, c.log.line)
}

/// `PER_VERSION` full handshakes on each of TLS 1.2 and 1.3, each on its own
/// client: (client, first connection).
fn make_sessions(httpd: &mut Httpd) -> Vec<(Client, Conn)> {
    let mut out = Vec::new();
    for tls in [Tls::V12, Tls::V13] {
        for _ in 0..PER_VERSION {
            let client = Client::new(tls);
            let c = httpd.connect(&client, None);
            assert!(!c.log.resumed && c.status == 200, "{}", describe(&c));
            assert_eq!(c.log.protocol, tls.log_name());
            out.push((client, c));
        }
    }
    out
}

fn num(m: &HashMap<String, String>, key: &str) -> u64 {
    m.get(key)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no numeric {key} in {m:?}"))
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Braces and brackets outside strings balance and never go negative, and
/// the text is one object: enough to tell broken JSON from JSON.
fn json_object_balanced(text: &str) -> bool {
    let t = text.trim();
    if !(t.starts_with('{') && t.ends_with('}')) {
        return false;
    }
    let (mut depth, mut in_str, mut escaped) = (0i64, false, false);
    for (i, ch) in t.char_indices() {
        if in_str {
            match (escaped, ch) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match ch {
            '"' => in_str = true,
            '{' | '[' => depth += 1,
            '}' | ']' => {
                depth -= 1;
                if depth < 0 || (depth == 0 && i != t.len() - 1) {
                    return false;
                }
            }
            _ => {}
        }
    }
    depth == 0 && !in_str
}

/// A fresh session on each version resumes.
fn assert_new_sessions_resume(httpd: &mut Httpd, when: &str) {
    for tls in [Tls::V12, Tls::V13] {
        let client = Client::new(tls);
        let first = httpd.connect(&client, None);
        let why = format!("{when}: a new {} session did not resume", tls.log_name());
        httpd.offer(&client, &first.session, true, &why, describe);
    }
}

fn contains_bytes(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

#[test]
fn stat_and_dump_match_the_live_segment_without_secrets() {
    let (mut httpd, file) = start();
    let made = make_sessions(&mut httpd);
    // Some resumptions, so the hit counter is not trivially zero.
    for (client, c) in made.iter().step_by(3) {
        let again = httpd.connect(client, Some(&c.session));
        assert!(again.both_resumed(), "{}", describe(&again));
    }
    let n = made.len() as u64;

    // stat: the same figures as server-status (nothing happens in between:
    // the status request's own full handshake is a store, and it is done).
    let status = httpd.status_auto();
    let out = shmcache(&[Path::new("stat"), &file]);
    assert!(out.success, "{out:?}");
    let stat = parse_status(&out.stdout);
    assert!(num(&stat, "CacheCurrentEntries") >= n, "{stat:?}");
    assert!(
        num(&status, "CacheRetrieveHitCount") >= (n / 3),
        "{status:?}"
    );
    assert_eq!(
        stat.get("CacheRetrieveHitCount"),
        status.get("CacheRetrieveHitCount"),
        "hits differ: stat {stat:?} vs server-status {status:?}"
    );
    let mut compared = 0;
    for (key, value) in status.iter().filter(|(k, _)| k.starts_with("Cache")) {
        assert_eq!(
            stat.get(key),
            Some(value),
            "{key}: shmcache stat {stat:?} vs server-status {status:?}"
        );
        compared += 1;
    }
    assert!(
        compared >= 20,
        "only {compared} Cache* figures in {status:?}"
    );

    // --json (and with --shards): one balanced object, the same figures.
    let json = shmcache(&[Path::new("stat"), &file, Path::new("--json")]);
    assert!(
        json.success && json_object_balanced(&json.stdout),
        "{json:?}"
    );
    for key in [
        "CacheCurrentEntries",
        "CacheRetrieveHitCount",
        "CacheStoreCount",
    ] {
        let want = format!("\"{key}\":{}", num(&stat, key));
        assert!(json.stdout.contains(&want), "no {want} in {}", json.stdout);
    }
    assert!(
        json.stdout.contains("\"CacheType\":\"SHM\""),
        "{}",
        json.stdout
    );
    let shards = shmcache(&[
        Path::new("stat"),
        &file,
        Path::new("--json"),
        Path::new("--shards"),
    ]);
    assert!(
        shards.success && json_object_balanced(&shards.stdout),
        "{shards:?}"
    );
    assert!(shards.stdout.contains("\"shards\":[{"), "{}", shards.stdout);
    assert_eq!(
        shards.stdout.matches("\"CacheCurrentEntries\":").count() as u64,
        1 + num(&stat, "CacheShards"),
        "one object per shard plus the total: {}",
        shards.stdout
    );

    // dump: one line per entry: 64-hex id, protocol, cipher.
    let dump = shmcache(&[Path::new("dump"), &file]);
    assert!(dump.success, "{dump:?}");
    let lines: Vec<&str> = dump.stdout.lines().collect();
    assert!(
        lines.len() as u64 >= n,
        "{} lines for {n} sessions",
        lines.len()
    );
    for line in &lines {
        let f: Vec<&str> = line.split_whitespace().collect();
        assert!(is_hex64(f[0]), "no 64-hex-digit id: {line}");
        let p = f
            .iter()
            .position(|w| *w == "TLSv1.2" || *w == "TLSv1.3")
            .unwrap_or_else(|| panic!("no protocol: {line}"));
        let cipher = f.get(p + 1).copied().unwrap_or("");
        assert!(
            cipher.contains("AES") || cipher.contains("CHACHA20"),
            "no cipher name after the protocol: {line}"
        );
    }
    let ids: Vec<String> = lines
        .iter()
        .map(|l| l.split_whitespace().next().unwrap_or("").to_string())
        .collect();
    for (_, c) in made.iter().filter(|(_, c)| c.log.protocol == "TLSv1.2") {
        let id = c.session.id_hex();
        assert!(ids.contains(&id), "TLS 1.2 session {id} not in the dump");
        assert_eq!(id, c.log.session_id.to_lowercase());
    }

    // No key material: no session's master key, in any output.
    let segment = fs::read(&file).expect("read the segment");
    let mut in_segment = 0;
    for (_, c) in &made {
        let key = c.session.master_key_hex();
        assert!(key.len() >= 64, "master key {key:?}");
        for (what, text) in [
            ("dump", &dump.stdout),
            ("stat", &out.stdout),
            ("stat --json --shards", &shards.stdout),
        ] {
            assert!(
                !text.to_lowercase().contains(&key),
                "shmcache {what} shows a session's master key"
            );
        }
        in_segment += contains_bytes(&segment, &unhex(&key)) as usize;
    }
    // The keys are there to be shown, so not showing them is the inspector's doing.
    assert!(
        in_segment >= PER_VERSION,
        "only {in_segment} of {} master keys found in the segment itself",
        made.len()
    );
    println!(
        "stat/dump: {} entries dumped for {n} sessions, {compared} figures equal to server-status, \
         {in_segment}/{} master keys in the segment and none in any output",
        lines.len(),
        made.len()
    );
}

#[test]
fn remove_makes_that_session_unresumable() {
    let (mut httpd, file) = start();
    for tls in [Tls::V12, Tls::V13] {
        let victim_client = Client::new(tls);
        let other_client = Client::new(tls);
        let victim = httpd.connect(&victim_client, None);
        let other = httpd.connect(&other_client, None);
        // The id the server cached the client's session under: for TLS 1.3,
        // the last ticket it issued on that connection (the one the client
        // keeps), as the access log shows it.
        let id = victim.log.session_id.to_lowercase();
        if tls == Tls::V12 {
            assert_eq!(id, victim.session.id_hex());
        }
        let dump = shmcache(&[Path::new("dump"), &file]);
        assert!(
            dump.stdout.contains(&id),
            "{id} not in the dump:\n{}",
            dump.stdout
        );

        let out = shmcache(&[Path::new("remove"), &file, Path::new(&id)]);
        assert!(out.success && out.stdout.contains("removed"), "{out:?}");
        let dump = shmcache(&[Path::new("dump"), &file]);
        assert!(!dump.stdout.contains(&id), "{id} still in the dump");
        let again = shmcache(&[Path::new("remove"), &file, Path::new(&id)]);
        assert!(
            !again.success && again.stderr.contains("no live entry"),
            "{again:?}"
        );

        let why = format!("{}: a removed session resumed", tls.log_name());
        httpd.offer(&victim_client, &victim.session, false, &why, describe);
        let why = format!("{}: removing one session lost another", tls.log_name());
        httpd.offer(&other_client, &other.session, true, &why, describe);
    }
    let bad = shmcache(&[Path::new("remove"), &file, Path::new("xyz")]);
    assert!(
        !bad.success && bad.stderr.contains("not a hex id"),
        "{bad:?}"
    );
}

#[test]
fn flush_while_serving_forgets_every_session() {
    let (mut httpd, file) = start();
    let made = make_sessions(&mut httpd);
    let port = httpd.port();
    let stop = AtomicBool::new(false);
    let (ok, errors) = (AtomicU64::new(0), AtomicU64::new(0));
    let flushed = thread::scope(|s| {
        for tls in [Tls::V12, Tls::V13] {
            let (stop, ok, errors) = (&stop, &ok, &errors);
            s.spawn(move || {
                let client = Client::new(tls);
                let mut session: Option<Session> = None;
                while !stop.load(Ordering::Relaxed) {
                    match client
                        .handshake(port, session.as_ref())
                        .and_then(|o| o.request("/"))
                    {
                        Ok(r) if r.status == 200 => {
                            ok.fetch_add(1, Ordering::Relaxed);
                            session = Some(r.session);
                        }
                        _ => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            });
        }
        thread::sleep(Duration::from_millis(300));
        let out = shmcache(&[Path::new("flush"), &file]);
        thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::Relaxed);
        out
    });
    assert!(
        flushed.success && flushed.stdout.starts_with("flushed "),
        "{flushed:?}"
    );
    let count: u64 = flushed
        .stdout
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(count >= made.len() as u64, "{flushed:?}");
    let (ok, errors) = (ok.into_inner(), errors.into_inner());
    assert!(ok > 0, "no traffic during the flush");
    assert_eq!(errors, 0, "client errors while flushing under traffic");

    for (client, c) in &made {
        let again = httpd.connect(client, Some(&c.session));
        assert!(
            !again.resumed && !again.log.resumed,
            "a session from before the flush resumed: {}",
            describe(&again)
        );
    }
    assert_new_sessions_resume(&mut httpd, "after the flush");
    let check = shmcache(&[Path::new("check"), &file]);
    assert!(check.success, "{check:?}");
    println!(
        "flush: {} with {ok} requests going on ({errors} errors); all {} earlier sessions did a full handshake",
        flushed.stdout.trim(),
        made.len()
    );
}

/// A directory of scratch files, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        let dir = std::env::temp_dir().join(format!("shmcache-live-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("mkdir scratch");
        // Traversable by the unprivileged user of the permission case.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod 755");
        Scratch(dir)
    }

    fn file(&self, name: &str, bytes: &[u8], mode: u32) -> PathBuf {
        let p = self.0.join(name);
        fs::write(&p, bytes).expect("write scratch file");
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).expect("chmod");
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn assert_refused(user: Option<(u32, u32)>, file: &Path, wanted: &str) {
    for cmd in ["stat", "dump", "check"] {
        let out = shmcache_as(user, &[Path::new(cmd), file]);
        assert!(
            !out.success && out.stderr.contains(wanted) && out.stdout.is_empty(),
            "shmcache {cmd} {} should fail saying {wanted:?}: {out:?}",
            file.display()
        );
    }
}

#[test]
fn errors_are_clear() {
    let (mut httpd, file) = start();
    make_sessions(&mut httpd);
    // A copy of the live segment (the inspector must accept it as is).
    let real = fs::read(&file).expect("read the live segment");
    httpd.stop();
    let scratch = Scratch::new();
    let copy = scratch.file("copy", &real, 0o600);
    let ok = shmcache(&[Path::new("check"), &copy]);
    assert!(ok.success, "{ok:?}");

    assert_refused(None, Path::new("/nonexistent/scache"), "No such file");

    let garbage: Vec<u8> = (0..real.len() as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let garbage = scratch.file("garbage", &garbage, 0o600);
    assert_refused(None, &garbage, "not a mod_socache_shm segment");

    let mut versioned = real.clone();
    versioned[8..12].copy_from_slice(&(u32::MAX - 1).to_ne_bytes());
    let versioned = scratch.file("versioned", &versioned, 0o600);
    assert_refused(None, &versioned, "layout version");

    let truncated = scratch.file("truncated", &real[..real.len() / 2], 0o600);
    assert_refused(None, &truncated, "corrupt segment");

    // Permission denied: a root-owned 0600 file read by an unprivileged
    // user (as non-root: a file of ours with no permissions at all).
    // SAFETY: geteuid has no preconditions.
    let (private, user) = if unsafe { libc::geteuid() } == 0 {
        let user = user_ids("nobody")
            .or_else(|| user_ids("www-data"))
            .expect("an unprivileged user (nobody or www-data)");
        (scratch.file("private", &real, 0o600), Some(user))
    } else {
        (scratch.file("private", &real, 0o000), None)
    };
    assert_refused(user, &private, "Permission denied");

    let usage = shmcache(&[Path::new("stat")]);
    assert!(
        !usage.success && usage.stderr.contains("usage"),
        "{usage:?}"
    );
    // A mistyped command is named as such, even with a missing file.
    let unknown = shmcache(&[Path::new("stats"), Path::new("/nonexistent/scache")]);
    assert!(
        !unknown.success && unknown.stderr.contains("unknown command \"stats\""),
        "{unknown:?}"
    );
}
