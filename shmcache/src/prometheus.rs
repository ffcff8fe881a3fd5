//! `shmcache stat --prometheus`: the figures of `shmcache stat` in the
//! Prometheus text exposition format (version 0.0.4, what node_exporter's
//! textfile collector and a scrape read).
//!
//! Every figure becomes one metric family, under a stable name given in
//! [`SPECS`] (and in the man page): the prefix `socache_shm_`, snake_case,
//! `_total` for counters, the unit in the name (`_bytes`, `_seconds`,
//! `_ratio`); every sample carries a `segment` label, the segment file's
//! path. A figure this table does not know yet (a counter added later)
//! still appears, named by the rule in [`derived_name`]. With `--shards`,
//! the figures a shard has of its own follow as `socache_shm_shard_*`
//! families with a `shard` label: separate families, so that summing one
//! never adds the whole cache to its parts.

use std::fmt::Write as _;

use socache_shm_engine::figures::Figure;
use socache_shm_engine::Stats;

/// The prefix of every metric name.
pub const PREFIX: &str = "socache_shm_";

/// A metric family's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

/// How a figure's value becomes a sample value.
#[derive(Clone, Copy)]
pub enum Conv {
    /// An integer, as it is.
    Number,
    /// Milliseconds, exposed in seconds.
    Millis,
    /// "open" is 1, anything else 0.
    Open,
    /// A percentage figure ("42%"), exposed as the exact ratio of two
    /// figures of [`Stats`] (numerator, denominator).
    Ratio(fn(&Stats) -> (u64, u64)),
    /// A text figure: a gauge of 1 whose label (this name) holds the text.
    Info(&'static str),
    /// Another key's figure under another name (CacheSubcaches is
    /// CacheShards under mod_socache_shmcb's name): no family of its own.
    Alias(&'static str),
}

/// One figure's metric.
pub struct Spec {
    /// The figure's key (`shmcache stat`, `--json`, server-status).
    pub key: &'static str,
    /// The metric's name after [`PREFIX`].
    pub name: &'static str,
    pub kind: Kind,
    pub conv: Conv,
    /// Whether a shard has this figure of its own (`--shards`).
    pub per_shard: bool,
}

const fn spec(
    key: &'static str,
    name: &'static str,
    kind: Kind,
    conv: Conv,
    per_shard: bool,
) -> Spec {
    Spec {
        key,
        name,
        kind,
        conv,
        per_shard,
    }
}

/// A counter of the whole cache only.
const fn counter(key: &'static str, name: &'static str) -> Spec {
    spec(key, name, Kind::Counter, Conv::Number, false)
}

/// A counter a shard also has of its own.
const fn shard_counter(key: &'static str, name: &'static str) -> Spec {
    spec(key, name, Kind::Counter, Conv::Number, true)
}

/// An integer gauge of the whole cache only.
const fn gauge(key: &'static str, name: &'static str) -> Spec {
    gauge_of(key, name, Conv::Number)
}

/// An integer gauge a shard also has of its own.
const fn shard_gauge(key: &'static str, name: &'static str) -> Spec {
    shard_gauge_of(key, name, Conv::Number)
}

/// A gauge of the whole cache only, its value converted by `conv`.
const fn gauge_of(key: &'static str, name: &'static str, conv: Conv) -> Spec {
    spec(key, name, Kind::Gauge, conv, false)
}

/// A gauge a shard also has of its own, its value converted by `conv`.
const fn shard_gauge_of(key: &'static str, name: &'static str, conv: Conv) -> Spec {
    spec(key, name, Kind::Gauge, conv, true)
}

use Conv::{Alias, Info, Millis, Open, Ratio};

/// Every figure's metric. The names are an interface (dashboards and alerts
/// use them): keep them, add new ones.
pub const SPECS: &[Spec] = &[
    gauge_of("CacheType", "cache_info", Info("cache_type")),
    gauge("CacheSharedMemory", "segment_bytes"),
    shard_gauge("CacheCurrentEntries", "entries"),
    gauge("CacheShards", "shards"),
    gauge_of("CacheSubcaches", "shards", Alias("CacheShards")),
    gauge("CacheIndexesPerSubcaches", "index_slots_per_shard"),
    shard_gauge_of(
        "CacheIndexUsage",
        "index_usage_ratio",
        Ratio(|s| (s.entries, s.index_slots)),
    ),
    shard_gauge_of(
        "CacheUsage",
        "arena_usage_ratio",
        Ratio(|s| (s.bytes_used, s.bytes_total)),
    ),
    shard_gauge("CacheBytesUsed", "arena_used_bytes"),
    shard_gauge("CacheBytesFree", "arena_free_bytes"),
    shard_gauge("CacheLargestFreeBlock", "arena_largest_free_block_bytes"),
    gauge("CacheMaxEntrySize", "max_entry_size_bytes"),
    shard_counter("CacheLockTimeouts", "lock_timeouts_total"),
    counter("CacheUnlockedReads", "unlocked_reads_total"),
    shard_counter("CacheRetrieveHitCount", "retrieve_hits_total"),
    shard_counter("CacheRetrieveMissCount", "retrieve_misses_total"),
    shard_counter("CacheStoreCount", "stores_total"),
    shard_counter("CacheReplaceCount", "replacements_total"),
    shard_counter("CacheExpireCount", "expirations_total"),
    shard_counter("CacheDiscardCount", "evictions_total"),
    shard_counter("CacheRefusedCount", "refused_stores_total"),
    shard_counter("CacheRemoveHitCount", "removals_total"),
    shard_counter("CacheRemoveMissCount", "remove_misses_total"),
    shard_counter("CacheLockWaits", "lock_waits_total"),
    shard_counter("CacheRecoveries", "recoveries_total"),
    shard_counter("CacheCorruptEntries", "corrupt_entries_total"),
    counter("FarmRemoteHits", "farm_remote_hits_total"),
    counter("FarmRemoteMisses", "farm_remote_misses_total"),
    counter("FarmStoresSent", "farm_stores_sent_total"),
    counter("FarmStoresDropped", "farm_stores_dropped_total"),
    counter("FarmRemovesSent", "farm_removes_sent_total"),
    counter("FarmRemovesDropped", "farm_removes_dropped_total"),
    counter("FarmErrors", "farm_errors_total"),
    counter("FarmTimeouts", "farm_timeouts_total"),
    counter("FarmSealFailures", "farm_seal_failures_total"),
    counter("FarmSkipped", "farm_skipped_total"),
    counter("FarmBreakerOpenings", "farm_breaker_openings_total"),
    counter("FarmErrorReplies", "farm_error_replies_total"),
    counter("FarmBadReplies", "farm_bad_replies_total"),
    gauge_of("FarmBreaker", "farm_breaker_open", Open),
    gauge("FarmBreakerOpenSecs", "farm_breaker_open_seconds"),
    gauge_of(
        "FarmBreakerBackoffMs",
        "farm_breaker_backoff_seconds",
        Millis,
    ),
    counter("TicketsIssued", "tickets_issued_total"),
    counter("TicketsOpenedNewestKey", "tickets_opened_newest_key_total"),
    counter("TicketsOpenedOlderKey", "tickets_opened_older_key_total"),
    counter("TicketsNotOpened", "tickets_not_opened_total"),
    counter("TicketKeysMade", "ticket_keys_made_total"),
    counter("TicketKeysAgreed", "ticket_keys_agreed_total"),
    counter("TicketKeysMadeAlone", "ticket_keys_made_alone_total"),
];

/// The name (after [`PREFIX`]) of a figure [`SPECS`] does not list: its key
/// in snake_case, without a leading `Cache` or a trailing `Count`, `_total`
/// after a counter's; for example a farm counter `FarmFooBar` becomes
/// `socache_shm_farm_foo_bar_total`.
pub fn derived_name(key: &str, kind: Kind) -> String {
    let key = key.strip_prefix("Cache").unwrap_or(key);
    let key = key.strip_suffix("Count").unwrap_or(key);
    let mut out = String::new();
    for c in key.chars() {
        if c.is_ascii_uppercase() {
            if !out.is_empty() && !out.ends_with('_') {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert_str(0, "figure_");
    }
    if kind == Kind::Counter && !out.ends_with("_total") {
        out.push_str("_total");
    }
    out
}

/// A label value in the text format: backslash, double quote and line feed
/// escaped (`\\`, `\"`, `\n`); everything else as it is.
pub fn escape_label_value(v: &str) -> String {
    // The backslashes and line feeds as in a help text; the quotes last, so
    // that the backslashes escaping them are not escaped again.
    escape_help(v).replace('"', "\\\"")
}

/// A `# HELP` text: backslash and line feed escaped.
fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

/// What a figure is, for the exposition: its spec, or one made up for an
/// unknown key (`counters`: the keys known to be counters).
struct Resolved {
    name: String,
    kind: Kind,
    conv: Conv,
    per_shard: bool,
}

fn resolve(key: &str, value: &str, counters: &[&str], shard_counters: &[&str]) -> Resolved {
    if let Some(s) = SPECS.iter().find(|s| s.key == key) {
        return Resolved {
            name: s.name.to_string(),
            kind: s.kind,
            conv: s.conv,
            per_shard: s.per_shard,
        };
    }
    let counter = counters.contains(&key);
    let kind = if counter { Kind::Counter } else { Kind::Gauge };
    let conv = if value.parse::<u64>().is_ok() {
        Conv::Number
    } else {
        Conv::Info("value")
    };
    let mut name = derived_name(key, kind);
    if let Conv::Info(_) = conv {
        name.push_str("_info");
    }
    Resolved {
        name,
        kind,
        conv,
        per_shard: shard_counters.contains(&key),
    }
}

/// The sample of one figure: its value, and the extra label of an info
/// metric; None for an alias or a value that is not what its spec says.
fn sample(
    conv: Conv,
    value: &str,
    stats: &Stats,
) -> Option<(String, Option<(&'static str, String)>)> {
    Some(match conv {
        Conv::Number => (value.parse::<u64>().ok()?.to_string(), None),
        Conv::Millis => {
            let ms = value.parse::<u64>().ok()?;
            (format!("{}.{:03}", ms / 1000, ms % 1000), None)
        }
        Conv::Open => (u8::from(value == "open").to_string(), None),
        Conv::Ratio(f) => {
            let (part, whole) = f(stats);
            let r = if whole == 0 {
                0.0
            } else {
                part as f64 / whole as f64
            };
            (format!("{r}"), None)
        }
        Conv::Info(label) => ("1".into(), Some((label, value.to_string()))),
        Conv::Alias(_) => return None,
    })
}

/// One family being written: its header once, then its samples.
struct Family {
    name: String,
    kind: Kind,
    help: String,
    samples: Vec<String>,
}

fn help_of(label: &str, key: &str, conv: Conv, shard: bool) -> String {
    let label = label.replace(" (ms)", "");
    let mut h = String::new();
    let mut chars = label.chars();
    if let Some(c) = chars.next() {
        h.extend(c.to_uppercase());
        h.push_str(chars.as_str());
    }
    if let Conv::Millis = conv {
        h.push_str(", in seconds");
    }
    if let Conv::Ratio(_) = conv {
        h.push_str(", as a ratio");
    }
    if let Conv::Open = conv {
        h.push_str(": 1 open, 0 closed");
    }
    if shard {
        h.push_str(", of one shard");
    }
    let _ = write!(h, " (shmcache stat {key}).");
    escape_help(&h)
}

/// The exposition of `figures` (the whole cache's) and, with `shards`,
/// each shard's (`shard_figures[i]` computed from `shards[i]`).
pub fn exposition(
    segment: &str,
    total: &Stats,
    figures: &[Figure],
    shards: &[(Stats, Vec<Figure>)],
    counters: &[&str],
    shard_counters: &[&str],
) -> String {
    let segment = escape_label_value(segment);
    let mut families: Vec<Family> = Vec::new();
    // A sample of `r`'s family (its shard's with `shard`), the family
    // created, header and all, by its first sample.
    let mut add = |r: &Resolved, f: &Figure, shard: bool, labels: &str, value: String| {
        let name = format!("{PREFIX}{}{}", if shard { "shard_" } else { "" }, r.name);
        let sample = format!("{name}{{{labels}}} {value}");
        match families.iter_mut().find(|family| family.name == name) {
            Some(family) => family.samples.push(sample),
            None => families.push(Family {
                help: help_of(f.label, f.key, r.conv, shard),
                name,
                kind: r.kind,
                samples: vec![sample],
            }),
        }
    };
    for f in figures {
        let r = resolve(f.key, &f.value, counters, shard_counters);
        let Some((value, info)) = sample(r.conv, &f.value, total) else {
            continue;
        };
        let mut labels = format!("segment=\"{segment}\"");
        if let Some((label, text)) = info {
            let _ = write!(labels, ",{label}=\"{}\"", escape_label_value(&text));
        }
        add(&r, f, false, &labels, value);
    }
    for (i, (stats, figures)) in shards.iter().enumerate() {
        let labels = format!("segment=\"{segment}\",shard=\"{i}\"");
        for f in figures {
            let r = resolve(f.key, &f.value, counters, shard_counters);
            if !r.per_shard {
                continue;
            }
            let Some((value, _)) = sample(r.conv, &f.value, stats) else {
                continue;
            };
            add(&r, f, true, &labels, value);
        }
    }
    let mut out = String::new();
    for f in families {
        let _ = writeln!(out, "# HELP {} {}", f.name, f.help);
        let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind.as_str());
        for s in f.samples {
            out.push_str(&s);
            out.push('\n');
        }
    }
    out
}

/// The keys of the engine's event counters (per shard) and of the farm
/// tier's counters: what a figure [`SPECS`] does not list is a counter if
/// it is one of these.
pub fn counter_keys() -> (Vec<&'static str>, Vec<&'static str>) {
    let engine: Vec<&'static str> = Stats::default().counters().iter().map(|c| c.0).collect();
    let mut all = engine.clone();
    all.extend(socache_shm_farm::Counter::ALL.iter().map(|c| c.key()));
    (all, engine)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(
            escape_label_value("/run/apache2/ssl_scache"),
            "/run/apache2/ssl_scache"
        );
        assert_eq!(escape_label_value(r"a\b"), r"a\\b");
        assert_eq!(escape_label_value("say \"hi\""), r#"say \"hi\""#);
        assert_eq!(escape_label_value("two\nlines"), r"two\nlines");
        assert_eq!(escape_label_value("\\\"\n"), r#"\\\"\n"#);
        // Everything else (UTF-8, tabs, braces, commas, '=') as it is.
        assert_eq!(escape_label_value("é\t{a=\"b\",c}"), "é\t{a=\\\"b\\\",c}");
    }

    #[test]
    fn help_text_is_escaped() {
        assert_eq!(escape_help("a\\b\nc \"d\""), "a\\\\b\\nc \"d\"");
    }

    #[test]
    fn names_are_valid_unique_and_follow_the_conventions() {
        let mut seen = std::collections::HashMap::new();
        for s in SPECS {
            let full = format!("{PREFIX}{}", s.name);
            assert!(
                full.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                    && !full.contains("__")
                    && !full.ends_with('_'),
                "{full}"
            );
            assert_eq!(
                s.kind == Kind::Counter,
                s.name.ends_with("_total"),
                "{full}"
            );
            // shard_ begins the per-shard families' names only.
            assert!(!s.name.starts_with("shard_"), "{full}");
            if let Conv::Alias(of) = s.conv {
                let target = SPECS.iter().find(|t| t.key == of).expect("alias target");
                assert_eq!(target.name, s.name, "{full}");
                continue;
            }
            assert!(seen.insert(s.name, s.key).is_none(), "{full} twice");
        }
        // Every counter of the engine's and the farm's tables is listed.
        let (counters, _) = counter_keys();
        for key in counters {
            let s = SPECS.iter().find(|s| s.key == key);
            assert!(
                s.is_some_and(|s| s.kind == Kind::Counter),
                "{key}: not listed as a counter in SPECS"
            );
        }
    }

    #[test]
    fn unknown_figures_get_derived_names() {
        assert_eq!(
            derived_name("FarmFooBar", Kind::Counter),
            "farm_foo_bar_total"
        );
        assert_eq!(
            derived_name("CacheThingCount", Kind::Counter),
            "thing_total"
        );
        assert_eq!(derived_name("CacheWidth", Kind::Gauge), "width");
        assert_eq!(derived_name("Farm-Odd key", Kind::Gauge), "farm_odd_key");
        assert_eq!(derived_name("9x", Kind::Gauge), "figure_9x");
        let r = resolve("FarmNewThing", "3", &["FarmNewThing"], &[]);
        assert_eq!(
            (r.name.as_str(), r.kind),
            ("farm_new_thing_total", Kind::Counter)
        );
        let r = resolve("FarmMode", "cluster", &[], &[]);
        assert_eq!((r.name.as_str(), r.kind), ("farm_mode_info", Kind::Gauge));
    }

    #[test]
    fn one_family_per_name_with_its_header_first() {
        let s = Stats::default();
        let figs = vec![
            Figure {
                key: "CacheShards",
                label: "shards",
                value: "4".into(),
            },
            Figure {
                key: "CacheSubcaches",
                label: "shards",
                value: "4".into(),
            },
            Figure {
                key: "CacheType",
                label: "cache type",
                value: "S\"H\\M".into(),
            },
            Figure {
                key: "FarmBreakerBackoffMs",
                label: "breaker backoff (ms)",
                value: "1600".into(),
            },
            Figure {
                key: "FarmBreaker",
                label: "farm circuit breaker",
                value: "open".into(),
            },
        ];
        let text = exposition("/a \"b\"\\c\nd", &s, &figs, &[], &[], &[]);
        let seg = r#"segment="/a \"b\"\\c\nd""#;
        assert_eq!(
            text,
            format!(
                "# HELP socache_shm_shards Shards (shmcache stat CacheShards).\n\
                 # TYPE socache_shm_shards gauge\n\
                 socache_shm_shards{{{seg}}} 4\n\
                 # HELP socache_shm_cache_info Cache type (shmcache stat CacheType).\n\
                 # TYPE socache_shm_cache_info gauge\n\
                 socache_shm_cache_info{{{seg},cache_type=\"S\\\"H\\\\M\"}} 1\n\
                 # HELP socache_shm_farm_breaker_backoff_seconds Breaker backoff, in seconds (shmcache stat FarmBreakerBackoffMs).\n\
                 # TYPE socache_shm_farm_breaker_backoff_seconds gauge\n\
                 socache_shm_farm_breaker_backoff_seconds{{{seg}}} 1.600\n\
                 # HELP socache_shm_farm_breaker_open Farm circuit breaker: 1 open, 0 closed (shmcache stat FarmBreaker).\n\
                 # TYPE socache_shm_farm_breaker_open gauge\n\
                 socache_shm_farm_breaker_open{{{seg}}} 1\n"
            )
        );
    }
}
