//! `shmcache stat --prometheus` read by a real parser: Python's
//! `prometheus_client` text parser (Debian: python3-prometheus-client,
//! installed by scripts/deps.sh). Over a segment with entries, hits,
//! misses, removals, the farm tier's counters and an open breaker, at a
//! path that needs escaping (a double quote, a backslash): every family
//! has HELP and TYPE, counters end in `_total`, every sample carries the
//! segment's path, the names are the documented ones, every value equals
//! the figure `--json` shows, and per-shard families appear with
//! `--shards` only. Without python3 and prometheus_client the test fails,
//! saying what to install.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicU64;

use socache_shm_engine::{Cache, CacheConfig, Timestamp};
use socache_shm_farm::breaker::{Breaker, BREAKER_WORDS, OPEN_AFTER};
use socache_shm_farm::{counters, Admission, Counter};

const BIN: &str = env!("CARGO_BIN_EXE_shmcache");

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Every figure's metric, as documented (shmcache --help, Prometheus): the
/// figure's key, the metric's name, its type, how the value is exposed, and
/// whether a shard has it of its own. These names are an interface: a
/// change here breaks dashboards.
const EXPECTED: &str = r#"[
 ["CacheType", "socache_shm_cache_info", "gauge", "info:cache_type", false],
 ["CacheSharedMemory", "socache_shm_segment_bytes", "gauge", "number", false],
 ["CacheCurrentEntries", "socache_shm_entries", "gauge", "number", true],
 ["CacheSubcaches", "socache_shm_shards", "gauge", "number", false],
 ["CacheShards", "socache_shm_shards", "gauge", "number", false],
 ["CacheIndexesPerSubcaches", "socache_shm_index_slots_per_shard", "gauge", "number", false],
 ["CacheIndexUsage", "socache_shm_index_usage_ratio", "gauge", "percent", true],
 ["CacheUsage", "socache_shm_arena_usage_ratio", "gauge", "percent", true],
 ["CacheBytesUsed", "socache_shm_arena_used_bytes", "gauge", "number", true],
 ["CacheBytesFree", "socache_shm_arena_free_bytes", "gauge", "number", true],
 ["CacheLargestFreeBlock", "socache_shm_arena_largest_free_block_bytes", "gauge", "number", true],
 ["CacheMaxEntrySize", "socache_shm_max_entry_size_bytes", "gauge", "number", false],
 ["CacheLockTimeouts", "socache_shm_lock_timeouts_total", "counter", "number", true],
 ["CacheUnlockedReads", "socache_shm_unlocked_reads_total", "counter", "number", false],
 ["CacheRetrieveHitCount", "socache_shm_retrieve_hits_total", "counter", "number", true],
 ["CacheRetrieveMissCount", "socache_shm_retrieve_misses_total", "counter", "number", true],
 ["CacheStoreCount", "socache_shm_stores_total", "counter", "number", true],
 ["CacheReplaceCount", "socache_shm_replacements_total", "counter", "number", true],
 ["CacheExpireCount", "socache_shm_expirations_total", "counter", "number", true],
 ["CacheDiscardCount", "socache_shm_evictions_total", "counter", "number", true],
 ["CacheRefusedCount", "socache_shm_refused_stores_total", "counter", "number", true],
 ["CacheRemoveHitCount", "socache_shm_removals_total", "counter", "number", true],
 ["CacheRemoveMissCount", "socache_shm_remove_misses_total", "counter", "number", true],
 ["CacheLockWaits", "socache_shm_lock_waits_total", "counter", "number", true],
 ["CacheRecoveries", "socache_shm_recoveries_total", "counter", "number", true],
 ["CacheCorruptEntries", "socache_shm_corrupt_entries_total", "counter", "number", true],
 ["FarmRemoteHits", "socache_shm_farm_remote_hits_total", "counter", "number", false],
 ["FarmRemoteMisses", "socache_shm_farm_remote_misses_total", "counter", "number", false],
 ["FarmStoresSent", "socache_shm_farm_stores_sent_total", "counter", "number", false],
 ["FarmStoresDropped", "socache_shm_farm_stores_dropped_total", "counter", "number", false],
 ["FarmRemovesSent", "socache_shm_farm_removes_sent_total", "counter", "number", false],
 ["FarmRemovesDropped", "socache_shm_farm_removes_dropped_total", "counter", "number", false],
 ["FarmErrors", "socache_shm_farm_errors_total", "counter", "number", false],
 ["FarmTimeouts", "socache_shm_farm_timeouts_total", "counter", "number", false],
 ["FarmSealFailures", "socache_shm_farm_seal_failures_total", "counter", "number", false],
 ["FarmSkipped", "socache_shm_farm_skipped_total", "counter", "number", false],
 ["FarmBreakerOpenings", "socache_shm_farm_breaker_openings_total", "counter", "number", false],
 ["FarmErrorReplies", "socache_shm_farm_error_replies_total", "counter", "number", false],
 ["FarmBadReplies", "socache_shm_farm_bad_replies_total", "counter", "number", false],
 ["FarmBreaker", "socache_shm_farm_breaker_open", "gauge", "open", false],
 ["FarmBreakerOpenSecs", "socache_shm_farm_breaker_open_seconds", "gauge", "seconds", false],
 ["FarmBreakerBackoffMs", "socache_shm_farm_breaker_backoff_seconds", "gauge", "millis", false],
 ["TicketsIssued", "socache_shm_tickets_issued_total", "counter", "number", false],
 ["TicketsOpenedNewestKey", "socache_shm_tickets_opened_newest_key_total", "counter", "number", false],
 ["TicketsOpenedOlderKey", "socache_shm_tickets_opened_older_key_total", "counter", "number", false],
 ["TicketsNotOpened", "socache_shm_tickets_not_opened_total", "counter", "number", false],
 ["TicketKeysMade", "socache_shm_ticket_keys_made_total", "counter", "number", false],
 ["TicketKeysAgreed", "socache_shm_ticket_keys_agreed_total", "counter", "number", false],
 ["TicketKeysMadeAlone", "socache_shm_ticket_keys_made_alone_total", "counter", "number", false]
]"#;

/// Run by python3 with: the `stat --json --shards` output, the
/// `stat --prometheus --shards` output, the `stat --prometheus` output (all
/// as files), the segment's path, and [`EXPECTED`]. Prints what it checked;
/// an AssertionError names what is wrong.
const CHECK: &str = r#"
import json, math, re, sys
from prometheus_client.parser import text_string_to_metric_families

stats = json.load(open(sys.argv[1]))
with_shards = open(sys.argv[2], encoding="utf-8").read()
without = open(sys.argv[3], encoding="utf-8").read()
segment = sys.argv[4]
expected = {k: (name, typ, conv, per_shard) for k, name, typ, conv, per_shard in json.loads(sys.argv[5])}

def families(text):
    out = {}
    for f in text_string_to_metric_families(text):
        # The parser names a counter's family without _total; its samples keep it.
        full = f.name + "_total" if f.type == "counter" else f.name
        assert full not in out, "family %s twice" % full
        assert f.type in ("counter", "gauge"), "%s: type %r (no TYPE line?)" % (full, f.type)
        assert f.documentation, "%s: no HELP" % full
        assert re.fullmatch(r"socache_shm_[a-z0-9_]+", full), "bad name %r" % full
        assert f.samples, "%s: no sample" % full
        for s in f.samples:
            assert s.name == full, "%s: sample %s" % (full, s.name)
            assert s.labels.get("segment") == segment, "%s: segment label %r, wanted %r" % (full, s.labels.get("segment"), segment)
            assert not math.isnan(s.value) and s.value >= 0, "%s: %r" % (full, s.value)
        out[full] = f
    return out

def one(fam, **labels):
    hits = [s for s in fam.samples if all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(hits) == 1, "%s %r: %d samples" % (fam.name, labels, len(hits))
    return hits[0]

def check(key, figure, fam, sample_labels):
    name, typ, conv, _ = expected[key]
    assert fam.type == typ, "%s (%s): type %s, wanted %s" % (name, key, fam.type, typ)
    assert ("(shmcache stat %s)" % key) in fam.documentation or key == "CacheSubcaches", \
        "%s: HELP %r does not name %s" % (name, fam.documentation, key)
    s = one(fam, **sample_labels)
    v = s.value
    if conv == "number":
        assert v == figure, "%s: %r, --json %s %r" % (name, v, key, figure)
    elif conv == "seconds":
        # Read at two instants (two runs): the clock may have ticked once.
        assert abs(v - figure) <= 1, "%s: %r, --json %s %r" % (name, v, key, figure)
    elif conv == "millis":
        assert round(v * 1000) == figure, "%s: %r s, --json %s %r ms" % (name, v, key, figure)
    elif conv == "open":
        assert v == (1 if figure == "open" else 0), "%s: %r, --json %s %r" % (name, v, key, figure)
    elif conv == "percent":
        pct = int(figure.rstrip("%"))
        assert 0 <= v <= 1 and math.floor(v * 100 + 1e-9) == pct, "%s: %r, --json %s %r" % (name, v, key, figure)
    elif conv.startswith("info:"):
        label = conv[5:]
        assert v == 1 and s.labels.get(label) == figure, "%s: %r, --json %s %r" % (name, s, key, figure)
    else:
        raise AssertionError("unknown conversion " + conv)

fams = families(with_shards)
unknown = [k for k in stats if k != "shards" and k not in expected]
assert not unknown, "figures with no documented metric name: %r (add them to SPECS, the help's Prometheus paragraph and this test)" % unknown
missing = [k for k in expected if k not in stats]
assert not missing, "--json lacks %r: the segment should show every figure" % missing
for key, figure in stats.items():
    if key == "shards":
        continue
    name = expected[key][0]
    assert name in fams, "no family %s for %s" % (name, key)
    check(key, figure, fams[name], {})
shard_count = len(stats["shards"])
assert shard_count == stats["CacheShards"] and shard_count > 1, stats["shards"]
per_shard = [k for k, e in expected.items() if e[3]]
for i, shard in enumerate(stats["shards"]):
    for key in per_shard:
        name = expected[key][0].replace("socache_shm_", "socache_shm_shard_", 1)
        assert name in fams, "--shards: no family %s" % name
        check(key, shard[key], fams[name], {"shard": str(i)})
shard_names = {e[0].replace("socache_shm_", "socache_shm_shard_", 1) for e in expected.values() if e[3]}
totals = {e[0] for e in expected.values()}
assert not shard_names & totals, "a per-shard family has a whole-cache name: %r" % (shard_names & totals)
wanted = totals | shard_names
assert set(fams) == wanted, "families beyond the figures: %r; missing: %r" % (set(fams) - wanted, wanted - set(fams))
for name, f in fams.items():
    if name in shard_names:
        assert {s.labels["shard"] for s in f.samples} == {str(i) for i in range(shard_count)}, name
    else:
        assert all("shard" not in s.labels for s in f.samples), name

plain = families(without)
assert set(plain) == totals, "without --shards: %r" % sorted(set(plain) ^ totals)
for key, figure in stats.items():
    if key != "shards":
        check(key, figure, plain[expected[key][0]], {})
print("prometheus_client parsed %d families (%d without --shards), %d shards; every value equals --json" % (len(fams), len(plain), shard_count))
"#;

/// A python3 that has prometheus_client: $SHMCACHE_TEST_PYTHON, else
/// Debian's /usr/bin/python3 (where python3-prometheus-client installs),
/// else python3 on PATH.
fn python() -> String {
    let mut tried = Vec::new();
    let candidates = std::env::var("SHMCACHE_TEST_PYTHON")
        .ok()
        .into_iter()
        .chain(["/usr/bin/python3".to_string(), "python3".to_string()]);
    for py in candidates {
        match Command::new(&py)
            .args(["-c", "import prometheus_client.parser"])
            .output()
        {
            Ok(o) if o.status.success() => return py,
            Ok(o) => tried.push(format!(
                "{py}: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => tried.push(format!("{py}: {e}")),
        }
    }
    panic!(
        "this test needs python3 with prometheus_client, to parse `shmcache stat --prometheus` \
         with a real parser: apt-get install python3 python3-prometheus-client (scripts/deps.sh \
         installs it), or set SHMCACHE_TEST_PYTHON to a python that has it. Tried:\n  {}",
        tried.join("\n  ")
    )
}

fn shmcache(args: &[&str], file: &Path) -> String {
    let out = Command::new(BIN)
        .arg(args[0])
        .arg(file)
        .args(&args[1..])
        .output()
        .expect("run shmcache");
    assert!(
        out.status.success(),
        "shmcache {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// A segment with something in every figure that can be made to move.
fn populate(path: &Path) {
    let cache = Cache::create(&CacheConfig {
        path: Some(path.to_path_buf()),
        ..CacheConfig::new(256 * 1024)
    })
    .expect("create segment");
    let exp = Timestamp::from_secs(4_000_000_000);
    let mut buf = vec![0u8; 64 * 1024];
    for i in 0..200u32 {
        let id = [i as u8, (i >> 8) as u8, 1, 2];
        cache
            .store(&id, &vec![i as u8; 50 + (i as usize * 7) % 400], exp)
            .expect("store");
    }
    for i in 0..60u32 {
        let _ = cache.retrieve(&[i as u8, (i >> 8) as u8, 1, 2], &mut buf);
        let _ = cache.retrieve(&[i as u8, 9, 9, 9], &mut buf);
    }
    for i in (0..200u32).step_by(7) {
        cache.remove(&[i as u8, (i >> 8) as u8, 1, 2]);
    }
    cache.remove(b"absent");
    // Replace a few.
    for i in 100..110u32 {
        let id = [i as u8, (i >> 8) as u8, 1, 2];
        cache.store(&id, b"again", exp).expect("replace");
    }
    let _ = cache.store(b"too large", &vec![0u8; 200 * 1024], exp);

    // The farm tier's figures: each counter a different value, and a
    // breaker that opened 42.5 s ago and whose probe failed once.
    let words = cache.tier_words();
    for (i, c) in Counter::ALL.iter().enumerate() {
        counters::add(&words[BREAKER_WORDS..], *c, 7 * (i as u64 + 1));
    }
    // The session tickets' counters: each a different value too.
    for (i, w) in socache_shm_farm::ticket_words(words).iter().enumerate() {
        w.fetch_add(11 * (i as u64 + 1), std::sync::atomic::Ordering::Relaxed);
    }
    let breaker_words: &[AtomicU64; BREAKER_WORDS] =
        (&words[..BREAKER_WORDS]).try_into().expect("breaker words");
    let breaker = Breaker::over(breaker_words);
    let now_ms = u64::try_from(socache_shm_farm::now_us() / 1000).expect("clock");
    let opened = now_ms - 42_500;
    for _ in 0..OPEN_AFTER {
        breaker.failed(Admission::Closed, opened);
    }
    let probe = breaker.admit(opened + 1_000);
    breaker.failed(probe, opened + 1_000);
    assert!(breaker.state(now_ms).open, "the breaker should be open");
}

#[test]
fn prometheus_output_parses_and_equals_the_json_figures() {
    let py = python();
    let dir = Dir(std::env::temp_dir().join(format!("shmcache-prom-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).expect("mkdir");
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    // A path whose label value needs escaping.
    let seg = dir.0.join("scache \"quoted\" back\\slash");
    populate(&seg);

    let json = shmcache(&["stat", "--json", "--shards"], &seg);
    let prom = shmcache(&["stat", "--prometheus", "--shards"], &seg);
    let plain = shmcache(&["stat", "--prometheus"], &seg);
    assert!(
        prom.contains("\\\"quoted\\\" back\\\\slash"),
        "the segment label is not escaped:\n{prom}"
    );
    assert!(json.contains("\"FarmBreaker\":\"open\""), "{json}");
    let files: Vec<PathBuf> = ["stat.json", "shards.prom", "plain.prom"]
        .iter()
        .zip([&json, &prom, &plain])
        .map(|(name, text)| {
            let f = dir.0.join(name);
            std::fs::write(&f, text).expect("write");
            f
        })
        .collect();
    let out = Command::new(&py)
        .arg("-c")
        .arg(CHECK)
        .args(&files)
        .arg(&seg)
        .arg(EXPECTED)
        .output()
        .expect("run python3");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "{py}'s prometheus_client check failed:\n{stderr}\n--- stat --prometheus --shards:\n{prom}\n--- stat --json --shards:\n{json}"
    );
    println!("{}", stdout.trim());
}

#[test]
fn json_and_prometheus_exclude_each_other() {
    let out = Command::new(BIN)
        .args(["stat", "/nonexistent/x", "--json", "--prometheus"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("exclude each other"),
        "{out:?}"
    );
}
