//! `shmcache`: look into, check and empty a file-backed mod_socache_shm segment
//! while httpd uses it.
//!
//! The command line is described once, in [`HELP`]: `shmcache --help` prints
//! it and `help2man` (scripts/gen-manpage.sh) turns the same text into
//! `shmcache(8)`.
//! Every command takes each shard's lock only for as long as httpd itself
//! would for one operation (dump copies a shard's entries out, then prints).

use std::path::Path;
use std::process::ExitCode;

use shmcache as inspect;
use socache_shm_engine::Cache;

/// The help text, and the source of the man page: `help2man` (GNU's
/// generator, run by `make man`, debian/rules and scripts/gen-manpage.sh)
/// reads it in the shape GNU programs print: "Usage:" and "  or:" lines
/// (the SYNOPSIS), a one-line summary (the NAME), running text, paragraphs
/// headed "Word:" whose items are a term, two or more spaces and its
/// description (continued on deeper-indented lines); "Options:" and
/// "Examples:" become sections of their own, and an example line starts
/// with "$ ".
const HELP: &str = "\
Usage: shmcache stat FILE [--json | --prometheus] [--shards]
  or:  shmcache dump FILE
  or:  shmcache check FILE
  or:  shmcache flush FILE
  or:  shmcache remove FILE ID_HEX
  or:  shmcache -h | --help
  or:  shmcache --version
Inspect, check and empty a mod_socache_shm segment.

shmcache opens FILE, the file-backed shared-memory segment of a
mod_socache_shm cache (for example SSLSessionCache
shm:/run/apache2/ssl_scache(512000)), while httpd uses it. Every command
takes each shard's lock only for as long as httpd itself would for one
operation. An anonymous segment (shm or shm:(SIZE)) has no file: read its
figures from server-status instead.

Commands:
  stat FILE           Print the cache's figures as Key: value lines, under
                      the keys of server-status (CacheCurrentEntries,
                      CacheRetrieveHitCount, ...), then the farm tier's
                      when the segment has served one (FarmRemoteHits,
                      FarmBreaker, ...).
  dump FILE           Print one line per live entry: id, size, seconds left
                      and, for a TLS session, its protocol, cipher, SNI
                      name and creation time. Never key material.
  check FILE          Verify that the arena and the index agree.
  flush FILE          Forget every entry now (their bytes are zeroed).
  remove FILE ID_HEX  Forget the entry whose id is ID_HEX (hexadecimal).

Exit status:
  0                   Success.
  1                   The command failed: FILE is not a segment shmcache
                      can attach, check found a fault, or remove found no
                      such entry.
  2                   Usage error: unknown command or option, missing or
                      extra argument.

Prometheus:
  Every sample has a segment label, FILE as given. The metric names are
  stable: socache_shm_ then the figure, counters ending in _total, units in
  the name. Gauges: cache_info (label cache_type), segment_bytes, entries,
  shards (also CacheSubcaches), index_slots_per_shard, index_usage_ratio,
  arena_usage_ratio, arena_used_bytes, arena_free_bytes,
  arena_largest_free_block_bytes, max_entry_size_bytes. Counters:
  retrieve_hits_total, retrieve_misses_total, stores_total,
  replacements_total, expirations_total, evictions_total,
  refused_stores_total, removals_total, remove_misses_total,
  lock_waits_total, lock_timeouts_total, recoveries_total,
  corrupt_entries_total, unlocked_reads_total. With a farm tier, counters
  farm_remote_hits_total, farm_remote_misses_total, farm_stores_sent_total,
  farm_stores_dropped_total, farm_removes_sent_total,
  farm_removes_dropped_total, farm_errors_total, farm_timeouts_total,
  farm_seal_failures_total, farm_skipped_total, farm_breaker_openings_total,
  farm_error_replies_total, farm_bad_replies_total and gauges
  farm_breaker_open (1 or 0), farm_breaker_open_seconds,
  farm_breaker_backoff_seconds. With session tickets (tickets=), counters
  tickets_issued_total, tickets_opened_newest_key_total,
  tickets_opened_older_key_total, tickets_not_opened_total,
  ticket_keys_made_total, ticket_keys_agreed_total,
  ticket_keys_made_alone_total. A figure added later is named from its key
  (FarmFooBar: socache_shm_farm_foo_bar_total). With --shards, a shard's own
  figures (entries, usage, arena bytes and the cache's event counters) follow
  as socache_shm_shard_* with a shard label: separate families, so that a sum
  never counts a shard twice.

Options:
  --json              stat: print the figures as one JSON object.
  --prometheus        stat: print the figures in the Prometheus text
                      format, for node_exporter's textfile collector (see
                      Prometheus above).
  --shards            stat: also print each shard's figures.
  -h, --help          Print this help and exit.
  --version           Print the version and exit.
  --                  End of options: what follows is FILE or ID_HEX even
                      if it starts with a dash.

Examples:
  $ shmcache stat /run/apache2/ssl_scache
  $ shmcache stat /run/apache2/ssl_scache --json --shards
  $ cd /var/lib/prometheus/node-exporter
  $ shmcache stat /run/apache2/ssl_scache --prometheus >scache.new
  $ mv scache.new socache_shm.prom
  $ shmcache dump /run/apache2/ssl_scache

See also:
  apache2ctl(8), a2enmod(8); /usr/share/doc/libapache2-mod-socache-shm/
";

/// The "Usage:" lines of [`HELP`], printed with every usage error.
fn usage() -> String {
    let mut out = String::from("usage:");
    for line in HELP
        .lines()
        .take_while(|l| l.starts_with("Usage: ") || l.starts_with("  or:  "))
    {
        out.push_str("\n  ");
        out.push_str(
            line.trim_start_matches("Usage: ")
                .trim_start_matches("  or:  "),
        );
    }
    out
}

/// What the command line asks for.
#[derive(Debug, PartialEq)]
enum Request<'a> {
    Help,
    Version,
    Stat {
        file: &'a Path,
        format: Format,
        shards: bool,
    },
    Dump(&'a Path),
    Check(&'a Path),
    Flush(&'a Path),
    Remove(&'a Path, &'a str),
}

/// How `stat` prints the figures.
#[derive(Debug, PartialEq, Clone, Copy)]
enum Format {
    Text,
    Json,
    Prometheus,
}

/// A command line shmcache does not accept (exit status 2).
#[derive(Debug, PartialEq)]
struct UsageError(String);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let request = match parse(&args) {
        Ok(r) => r,
        Err(UsageError(msg)) => {
            eprintln!("shmcache: {msg}\n{}", usage());
            return ExitCode::from(2);
        }
    };
    match run(request) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("shmcache: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// Reads the command line: `-h`/`--help` or `--version` anywhere (before a
/// `--`) wins; otherwise a known command, only the options that command
/// takes, and exactly its operands.
fn parse(args: &[String]) -> Result<Request<'_>, UsageError> {
    let mut options = Vec::new();
    let mut operands = Vec::new();
    let mut only_operands = false;
    for a in args {
        if only_operands {
            operands.push(a.as_str());
        } else if a == "--" {
            only_operands = true;
        } else if a == "-h" || a == "--help" {
            return Ok(Request::Help);
        } else if a == "--version" {
            return Ok(Request::Version);
        } else if a.len() > 1 && a.starts_with('-') {
            options.push(a.as_str());
        } else {
            operands.push(a.as_str());
        }
    }
    let Some((&cmd, operands)) = operands.split_first() else {
        return Err(UsageError(match options.first() {
            Some(o) => format!("unknown option {o:?}"),
            None => "missing command".into(),
        }));
    };
    let (allowed, names): (&[&str], &[&str]) = match cmd {
        "stat" => (&["--json", "--prometheus", "--shards"], &["FILE"]),
        "dump" | "check" | "flush" => (&[], &["FILE"]),
        "remove" => (&[], &["FILE", "ID_HEX"]),
        // A mistyped command is reported as such, not as whatever is wrong with FILE.
        other => return Err(UsageError(format!("unknown command {other:?}"))),
    };
    if let Some(o) = options.iter().find(|o| !allowed.contains(o)) {
        return Err(UsageError(format!("unknown option {o:?} for {cmd}")));
    }
    if operands.len() < names.len() {
        return Err(UsageError(format!(
            "{cmd}: missing {}",
            names[operands.len()..].join(" ")
        )));
    }
    if let Some(extra) = operands.get(names.len()) {
        return Err(UsageError(format!("{cmd}: unexpected argument {extra:?}")));
    }
    let file = Path::new(operands[0]);
    Ok(match cmd {
        "stat" => Request::Stat {
            file,
            format: match (
                options.contains(&"--json"),
                options.contains(&"--prometheus"),
            ) {
                (true, true) => {
                    return Err(UsageError(
                        "stat: --json and --prometheus exclude each other".into(),
                    ))
                }
                (true, false) => Format::Json,
                (false, true) => Format::Prometheus,
                (false, false) => Format::Text,
            },
            shards: options.contains(&"--shards"),
        },
        "dump" => Request::Dump(file),
        "check" => Request::Check(file),
        "flush" => Request::Flush(file),
        _ => Request::Remove(file, operands[1]),
    })
}

fn run(request: Request<'_>) -> Result<(), String> {
    match request {
        Request::Help => print!("{HELP}"),
        Request::Version => println!("shmcache (mod_socache_shm) {}", env!("CARGO_PKG_VERSION")),
        Request::Stat {
            file,
            format,
            shards,
        } => {
            let cache = inspect::open(file)?;
            print!(
                "{}",
                match format {
                    Format::Text => inspect::stat(&cache, false, shards),
                    Format::Json => inspect::stat(&cache, true, shards),
                    Format::Prometheus => {
                        inspect::stat_prometheus(&cache, &file.to_string_lossy(), shards)
                    }
                }
            )
        }
        Request::Dump(file) => print!("{}", inspect::dump(&inspect::open(file)?)),
        Request::Check(file) => {
            let cache = Cache::attach(file).map_err(|e| e.to_string())?;
            println!("{}", inspect::check(&cache)?);
        }
        Request::Flush(file) => {
            let cache = inspect::open(file)?;
            let n = cache.stats().entries;
            cache.flush();
            println!("flushed {n} entries");
        }
        Request::Remove(file, hex) => {
            let id = inspect::from_hex(hex).ok_or_else(|| format!("{hex:?} is not a hex id"))?;
            if !inspect::open(file)?.remove(&id) {
                return Err("no live entry with that id".into());
            }
            println!("removed");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The help (and so the man page) names every metric.
    #[test]
    fn help_documents_every_metric_name() {
        for s in inspect::prometheus::SPECS {
            assert!(
                HELP.contains(s.name),
                "the help's Prometheus paragraph lacks {}",
                s.name
            );
        }
    }

    #[test]
    fn stat_formats() {
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let a = args(&["stat", "f", "--prometheus", "--shards"]);
        assert_eq!(
            parse(&a),
            Ok(Request::Stat {
                file: Path::new("f"),
                format: Format::Prometheus,
                shards: true
            })
        );
        let a = args(&["stat", "--prometheus", "f", "--json"]);
        assert!(parse(&a).is_err());
    }
}
