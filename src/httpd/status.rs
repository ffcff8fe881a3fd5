//! The `status` callback's text: the cache's figures ([`crate::engine::figures`],
//! the list `shmcache stat` prints too) as mod_status HTML lines
//! (`label: <b>value</b><br>`, like mod_socache_shmcb) or, for `?auto`
//! (`AP_STATUS_SHORT`), one `Key: value` per line.

use std::fmt::Write;
use std::path::Path;

use crate::engine::figures::Figure;

/// The status text of one instance: its figures (the farm's after the
/// cache's), short (`?auto`) or HTML.
pub(crate) fn of_instance(inst: &super::instance::Instance, short: bool) -> String {
    match inst.cache() {
        Some(cache) => {
            let mut figures = crate::engine::figures::figures(cache, &cache.stats());
            if inst.has_farm() {
                figures.extend(farm_figures(cache.tier_words(), cache.now().0));
            }
            if let Some(tickets) = super::ticket_hook::figures(inst) {
                figures.extend(tickets);
            }
            if short {
                self::short(&figures)
            } else {
                html(&figures, cache.path())
            }
        }
        None if short => "CacheType: SHM\nCacheStatus: not initialised\n".to_string(),
        None => "cache type: <b>SHM</b>, not initialised<br>".to_string(),
    }
}

/// What the status says when the callback failed (a panic, logged).
pub(crate) fn unavailable(short: bool) -> String {
    if short {
        "CacheType: SHM\nCacheStatus: error (see the error log)\n".to_string()
    } else {
        "cache type: <b>SHM</b>, status unavailable (see the error log)<br>".to_string()
    }
}

/// The farm tier's figures (kept in the segment's tier words, so the same
/// for every child of the host), after the cache's own.
fn farm_figures(
    words: &[std::sync::atomic::AtomicU64; socache_shm_farm::TIER_WORDS],
    now_us: i64,
) -> Vec<Figure> {
    socache_shm_farm::figures(words, now_us)
        .into_iter()
        .map(|(key, label, value)| Figure { key, label, value })
        .collect()
}

/// The `?auto` form: `Key: value\n` lines.
pub(crate) fn short(figures: &[Figure]) -> String {
    let mut out = String::new();
    for f in figures {
        let _ = writeln!(out, "{}: {}", f.key, f.value);
    }
    out
}

/// The HTML form: where the segment is, then one line per figure.
pub(crate) fn html(figures: &[Figure], path: Option<&Path>) -> String {
    let mut out = String::new();
    match path {
        Some(p) => {
            let _ = writeln!(
                out,
                "segment file: <b>{}</b><br>",
                escape(&p.display().to_string())
            );
        }
        None => out
            .push_str("segment: <b>anonymous</b> (shared memory inherited by the children)<br>\n"),
    }
    for f in figures {
        let _ = writeln!(out, "{}: <b>{}</b><br>", escape(f.label), escape(&f.value));
    }
    out
}

/// Minimal HTML escaping (file names may hold anything).
fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            c => o.push(c),
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Figure> {
        vec![
            Figure {
                key: "CacheType",
                label: "cache type",
                value: "SHM".into(),
            },
            Figure {
                key: "CacheCurrentEntries",
                label: "current entries",
                value: "25".into(),
            },
            Figure {
                key: "CacheIndexUsage",
                label: "index usage",
                value: "25%".into(),
            },
        ]
    }

    #[test]
    fn short_form_is_key_colon_value_lines() {
        assert_eq!(
            short(&sample()),
            "CacheType: SHM\nCacheCurrentEntries: 25\nCacheIndexUsage: 25%\n"
        );
    }

    #[test]
    fn html_form_is_bold_values_and_escapes_the_file() {
        let h = html(&sample(), Some(Path::new("/run/a<b>")));
        assert!(
            h.starts_with("segment file: <b>/run/a&lt;b&gt;</b><br>\n"),
            "{h}"
        );
        assert!(h.contains("cache type: <b>SHM</b><br>\n"), "{h}");
        assert!(h.contains("current entries: <b>25</b><br>\n"), "{h}");
        assert!(html(&sample(), None).contains("<b>anonymous</b>"));
    }
}
