//! The configuration checks of `tickets=` that need the whole
//! configuration, made when the cache is created (a directive handler, so
//! they fail `apachectl -t`, which runs no post_config): httpd has by then
//! read every file into `ap_conftree` (the tree of the directives that
//! will be active: `<IfModule>`/`<IfDefine>` bodies that do not apply are
//! not in it), and is walking it.
//!
//! Refused, each naming the directive and its file and line:
//! - `tickets=` on a cache that is not `SSLSessionCache`'s;
//! - `tickets=` on two caches;
//! - `tickets=` with `SSLSessionTicketKeyFile` anywhere;
//! - a ticket lifetime (`SSLSessionCacheTimeout`, default 300 s, global or
//!   per virtual host) longer than `(ticket-keys - 1) x tickets`: a ticket
//!   made at the end of a period must open until it expires.

use std::ffi::CStr;

use super::bindings::{self as b, ap_directive_t};
use super::tickets::human;
use crate::spec::TicketSpec;

/// mod_ssl's default `SSLSessionCacheTimeout` (seconds).
const DEFAULT_CACHE_TIMEOUT: u64 = 300;

/// One directive of the tree, copied out.
struct Directive {
    name: String,
    args: String,
    place: String,
    /// Inside a `<VirtualHost>`.
    in_vhost: bool,
}

/// Check the active configuration for a cache with `spec`.
pub(crate) fn check(spec: TicketSpec) -> Result<(), String> {
    let all = directives();
    check_directives(&all, spec)
}

fn check_directives(all: &[Directive], spec: TicketSpec) -> Result<(), String> {
    let with_tickets: Vec<&Directive> = all.iter().filter(|d| has_tickets(&d.args)).collect();
    if let Some(d) = with_tickets
        .iter()
        .find(|d| !d.name.eq_ignore_ascii_case("SSLSessionCache"))
    {
        return Err(format!(
            "Invalid argument: tickets= is only for SSLSessionCache (mod_ssl's session tickets), \
             not for {} ({})",
            d.name, d.place
        ));
    }
    if with_tickets.len() > 1 {
        return Err(format!(
            "Invalid argument: tickets= is given on two caches ({} and {}); \
             the ticket keys live in one",
            with_tickets[0].place, with_tickets[1].place
        ));
    }
    if let Some(d) = all
        .iter()
        .find(|d| d.name.eq_ignore_ascii_case("SSLSessionTicketKeyFile"))
    {
        return Err(format!(
            "Invalid argument: tickets= and SSLSessionTicketKeyFile ({}) both set the session \
             ticket keys: remove SSLSessionTicketKeyFile (tickets= rotates and shares the keys)",
            d.place
        ));
    }
    let keeps = spec.guaranteed_lifetime().as_secs();
    let timeouts = all
        .iter()
        .filter(|d| d.name.eq_ignore_ascii_case("SSLSessionCacheTimeout"));
    let global = timeouts.clone().rfind(|d| !d.in_vhost);
    let mut lifetimes: Vec<(u64, String)> = vec![match global {
        Some(d) => (
            seconds(&d.args),
            format!("SSLSessionCacheTimeout {} ({})", d.args.trim(), d.place),
        ),
        None => (
            DEFAULT_CACHE_TIMEOUT,
            format!("the default SSLSessionCacheTimeout {DEFAULT_CACHE_TIMEOUT}"),
        ),
    }];
    lifetimes.extend(timeouts.filter(|d| d.in_vhost).map(|d| {
        (
            seconds(&d.args),
            format!("SSLSessionCacheTimeout {} ({})", d.args.trim(), d.place),
        )
    }));
    if let Some((secs, what)) = lifetimes.into_iter().find(|(secs, _)| *secs > keeps) {
        return Err(format!(
            "Invalid argument: tickets={} ticket-keys={} opens a ticket for only {} after the \
             period that made it, but {what} gives tickets a lifetime of {secs} s: raise tickets= \
             or ticket-keys=, or lower SSLSessionCacheTimeout",
            human(spec.period),
            spec.keys,
            human(spec.guaranteed_lifetime()),
        ));
    }
    Ok(())
}

/// A directive's argument as seconds (mod_ssl reads it with atoi).
fn seconds(args: &str) -> u64 {
    let digits: String = first_word(args)
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().unwrap_or(0)
}

/// The first word of a directive's arguments, without its quotes.
fn first_word(args: &str) -> &str {
    let args = args.trim_start();
    if let Some(rest) = args.strip_prefix('"') {
        rest.split('"').next().unwrap_or("")
    } else {
        args.split_ascii_whitespace().next().unwrap_or("")
    }
}

/// Whether a directive's argument is a `shm:` cache with `tickets=`.
fn has_tickets(args: &str) -> bool {
    let word = first_word(args);
    let Some(arg) = word
        .get(..4)
        .filter(|p| p.eq_ignore_ascii_case("shm:"))
        .map(|_| &word[4..])
    else {
        return false;
    };
    arg.split_ascii_whitespace()
        .any(|token| token.starts_with("tickets="))
}

/// Every directive of httpd's configuration tree, depth first.
fn directives() -> Vec<Directive> {
    let mut out = Vec::new();
    // SAFETY: httpd sets `ap_conftree` before it processes the tree (this
    // runs inside a directive's handler, in the parent, single-threaded);
    // the nodes live in the configuration pool.
    let root = unsafe { b::ap_conftree };
    // SAFETY: as above: `root` is null or a valid tree.
    unsafe { walk(root, false, &mut out) };
    out
}

/// # Safety
/// `node` is null or a valid `ap_directive_t` whose links are valid.
unsafe fn walk(mut node: *const ap_directive_t, in_vhost: bool, out: &mut Vec<Directive>) {
    let text = |p: *const std::ffi::c_char| {
        if p.is_null() {
            String::new()
        } else {
            // SAFETY: httpd's NUL-terminated strings (caller).
            unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
        }
    };
    // SAFETY: per the caller, every node reached is valid.
    while let Some(d) = unsafe { node.as_ref() } {
        let name = text(d.directive);
        let vhost = in_vhost || name.eq_ignore_ascii_case("<VirtualHost");
        out.push(Directive {
            args: text(d.args),
            place: format!("{}:{}", text(d.filename), d.line_num),
            name,
            in_vhost,
        });
        // SAFETY: the child list is valid (caller).
        unsafe { walk(d.first_child, vhost, out) };
        node = d.next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn d(name: &str, args: &str, in_vhost: bool) -> Directive {
        Directive {
            name: name.into(),
            args: args.into(),
            place: format!("{name}.conf:1"),
            in_vhost,
        }
    }

    fn spec(secs: u64, keys: u32) -> TicketSpec {
        TicketSpec {
            period: Duration::from_secs(secs),
            keys,
        }
    }

    #[test]
    fn each_conflict_is_named() {
        let cache = d("SSLSessionCache", "\"shm:/c(1M) tickets=12h\"", false);
        assert!(check_directives(&[cache], spec(43200, 3)).is_ok());

        let cache = || d("SSLSessionCache", "\"shm:/c(1M) tickets=12h\"", false);
        let err = check_directives(
            &[
                cache(),
                d("SSLStaplingCache", "\"shm:/s(1M) tickets=1h\"", false),
            ],
            spec(43200, 3),
        )
        .unwrap_err();
        assert!(
            err.contains("not for SSLStaplingCache (SSLStaplingCache.conf:1)"),
            "{err}"
        );

        let err = check_directives(&[cache(), cache()], spec(43200, 3)).unwrap_err();
        assert!(err.contains("two caches"), "{err}");

        let err = check_directives(
            &[cache(), d("SSLSessionTicketKeyFile", "/k", true)],
            spec(43200, 3),
        )
        .unwrap_err();
        assert!(
            err.contains("SSLSessionTicketKeyFile (SSLSessionTicketKeyFile.conf:1)"),
            "{err}"
        );

        // Other caches without tickets=, and shm: without options: fine.
        assert!(check_directives(
            &[cache(), d("SSLStaplingCache", "shm:/s(1M)", false)],
            spec(43200, 3)
        )
        .is_ok());
    }

    #[test]
    fn the_ticket_lifetime_must_fit() {
        let cache = || d("SSLSessionCache", "\"shm:/c(1M) tickets=2s\"", false);
        // Default 300 s > (3-1) x 2 s.
        let err = check_directives(&[cache()], spec(2, 3)).unwrap_err();
        assert!(err.contains("default SSLSessionCacheTimeout 300"), "{err}");
        assert!(check_directives(
            &[cache(), d("SSLSessionCacheTimeout", "4", false)],
            spec(2, 3)
        )
        .is_ok());
        let err = check_directives(
            &[
                cache(),
                d("SSLSessionCacheTimeout", "4", false),
                d("SSLSessionCacheTimeout", "5", true),
            ],
            spec(2, 3),
        )
        .unwrap_err();
        assert!(err.contains("SSLSessionCacheTimeout 5"), "{err}");
    }

    #[test]
    fn arguments() {
        assert!(has_tickets("\"shm:/c(1M) tickets=1h\""));
        assert!(has_tickets("SHM:tickets=1h"));
        assert!(!has_tickets("\"shmcb:/c(1M) tickets=1h\""));
        assert!(!has_tickets("shm:/c(1M)"));
        assert_eq!(seconds(" 300"), 300);
        assert_eq!(seconds("\"60\""), 60);
    }
}
