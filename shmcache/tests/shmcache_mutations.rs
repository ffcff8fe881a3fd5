//! The `shmcache` inspector on damaged segments (issue 8, item 4): 300
//! copies of a real segment, each with a few random bytes changed
//! (deterministic seed), through `stat`, `stat --json --shards`, `dump`,
//! `check` and `flush`. Every run ends within its bound, by itself, with
//! exit status 0 or 1: never a panic (101), a signal, or a hang. A copy
//! that fails `check` is refused by every other command, naming the check.
//! (Before issue 8: 3 hangs and 9 panics in 300.)

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use socache_shm_engine::{Cache, CacheConfig, Timestamp};

const BYTES: u64 = 128 * 1024;
const COPIES: u32 = 300;
/// A command may wait 1 s per shard lock it cannot take; two shards here.
const LIMIT: Duration = Duration::from_secs(10);

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// Run shmcache with `args`; (exit code, stderr). Panics on a hang or a signal.
fn run(args: &[&str], file: &Path, what: &str) -> (i32, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_shmcache"))
        .args(&args[..1])
        .arg(file)
        .args(&args[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn shmcache");
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if start.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: shmcache {args:?} hung (> {LIMIT:?})");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut err);
    }
    let code = status.code().unwrap_or_else(|| {
        panic!("{what}: shmcache {args:?} killed by a signal: {status:?}\n{err}")
    });
    assert!(
        code == 0 || code == 1,
        "{what}: shmcache {args:?} exited {code} (a panic is 101):\n{err}"
    );
    assert!(!err.contains("panicked"), "{what}: {args:?}: {err}");
    (code, err)
}

#[test]
fn mutated_segments_never_hang_or_panic_the_inspector() {
    let dir = Dir(std::env::temp_dir().join(format!("shmcache-mut-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).expect("mkdir");
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let good = dir.0.join("good");
    let cache = Cache::create(&CacheConfig {
        path: Some(good.clone()),
        ..CacheConfig::new(BYTES)
    })
    .expect("create");
    let exp = Timestamp::from_secs(4_000_000_000);
    for i in 0..300u32 {
        let v = vec![i as u8; 40 + (i as usize * 13) % 300];
        cache
            .store(&[i as u8, (i >> 8) as u8, 7, 7], &v, exp)
            .expect("store");
    }
    for i in (0..300u32).step_by(5) {
        cache.remove(&[i as u8, (i >> 8) as u8, 7, 7]);
    }
    drop(cache);
    let image = std::fs::read(&good).expect("read");
    let mut x = 0x5eed_2026_1201u64;
    let mut refused = 0;
    for n in 0..COPIES {
        let mut bytes = image.clone();
        for _ in 0..1 + xorshift(&mut x) % 8 {
            let at = (xorshift(&mut x) % bytes.len() as u64) as usize;
            bytes[at] = xorshift(&mut x) as u8;
        }
        let file = dir.0.join(format!("copy-{n}"));
        std::fs::write(&file, &bytes).expect("write copy");
        let what = format!("copy {n}");
        let (checked, _) = run(&["check"], &file, &what);
        for args in [
            &["stat"][..],
            &["stat", "--json", "--shards"],
            &["dump"],
            &["flush"],
        ] {
            let (code, err) = run(args, &file, &what);
            if checked != 0 && code != 0 && err.contains("fails its check") {
                refused += 1;
            }
        }
        let _ = std::fs::remove_file(&file);
    }
    println!("{COPIES} mutated copies: {refused} commands refused a copy that failed its check");
    assert!(
        refused > 0,
        "no mutation was ever found by check: the test proves nothing"
    );
}
