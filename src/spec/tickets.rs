//! The session-ticket options: `tickets=PERIOD` and `ticket-keys=N`.
//!
//! ```text
//! SSLSessionCache "shm:/run/apache2/ssl_scache(64M) tickets=12h ticket-keys=3"
//! ```
//!
//! | option          | meaning                                                              |
//! |-----------------|----------------------------------------------------------------------|
//! | `tickets=PERIOD`| mod_ssl's session tickets sealed under keys kept in this cache's segment: a new key every PERIOD (`1s` to `7d`; units `ms`, `s`, `m`, `h`, `d`) |
//! | `ticket-keys=N` | a key decrypts for N periods (2 to 16, default 3), then is zeroed    |
//!
//! Pure (no httpd, fuzzed with the rest of the argument). Whether the
//! directive is mod_ssl's `SSLSessionCache`, whether another vhost has a
//! `SSLSessionTicketKeyFile`, and whether `SSLSessionCacheTimeout` fits
//! the keys' lifetime are checked by the httpd layer (`src/httpd/tickets.rs`).

use std::time::Duration;

use super::SpecError;

/// The option names this module owns.
pub const OPTIONS: [&str; 2] = ["tickets", "ticket-keys"];

/// The shortest `tickets=` period.
pub const MIN_PERIOD: Duration = Duration::from_secs(1);

/// The longest `tickets=` period: a key then lives at most 16 weeks (with
/// `ticket-keys=16`), which is already far past any advice.
pub const MAX_PERIOD: Duration = Duration::from_secs(7 * 24 * 3600);

/// The default `ticket-keys=`.
pub const DEFAULT_KEYS: u32 = 3;

/// The bounds of `ticket-keys=`: at least the key being used and the one
/// before it (so a ticket made at the end of a period still opens in the
/// next); at most 16 (a key older than that protects nothing a full
/// handshake would not).
pub const MIN_KEYS: u32 = 2;
pub const MAX_KEYS: u32 = 16;

/// The ticket options, parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TicketSpec {
    /// A new key every `period`.
    pub period: Duration,
    /// A key decrypts for `keys` periods (the one it encrypts in and
    /// `keys - 1` after it).
    pub keys: u32,
}

impl TicketSpec {
    /// How long after the end of the period that made it a ticket still
    /// opens, at the least: `(keys - 1) x period`. A ticket's lifetime
    /// (`SSLSessionCacheTimeout`, as mod_ssl gives the context) must not
    /// exceed it.
    pub fn guaranteed_lifetime(&self) -> Duration {
        self.period.saturating_mul(self.keys - 1)
    }
}

/// Is `name` one of this module's options?
pub(super) fn owns(name: &str) -> bool {
    OPTIONS.contains(&name)
}

/// Parse the ticket tokens (`name=value`, names from [`OPTIONS`]); `None`
/// when there are none.
pub(super) fn parse<'a>(
    tokens: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<Option<TicketSpec>, SpecError> {
    let (mut period, mut keys) = (None, None);
    for (name, value) in tokens {
        let twice = match name {
            "tickets" => period.is_some(),
            _ => keys.is_some(),
        };
        if twice {
            return Err(SpecError::DuplicateOption {
                name: name.to_string(),
            });
        }
        if value.is_empty() {
            return Err(SpecError::EmptyOption {
                name: name.to_string(),
            });
        }
        match name {
            "tickets" => period = Some(parse_period(value)?),
            _ => keys = Some(parse_keys(value)?),
        }
    }
    match (period, keys) {
        (None, None) => Ok(None),
        (None, Some(_)) => Err(SpecError::OptionWithoutTickets {
            name: "ticket-keys".into(),
        }),
        (Some(period), keys) => Ok(Some(TicketSpec {
            period,
            keys: keys.unwrap_or(DEFAULT_KEYS),
        })),
    }
}

/// `12h`, `30m`, `1d`, `2s`, `1500ms`: a whole number with a unit.
pub fn parse_period(text: &str) -> Result<Duration, SpecError> {
    let bad = || SpecError::BadTicketPeriod {
        text: text.to_string(),
    };
    let units: [(&str, u64); 5] = [
        ("ms", 1),
        ("s", 1000),
        ("m", 60_000),
        ("h", 3_600_000),
        ("d", 86_400_000),
    ];
    let (digits, unit_ms) = units
        .iter()
        .find_map(|&(suffix, ms)| text.strip_suffix(suffix).map(|d| (d, ms)))
        .ok_or_else(bad)?;
    if digits.is_empty() || digits.len() > 12 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let out_of_range = || SpecError::TicketPeriodOutOfRange {
        text: text.to_string(),
    };
    let ms = n.checked_mul(unit_ms).ok_or_else(out_of_range)?;
    let d = Duration::from_millis(ms);
    if d < MIN_PERIOD || d > MAX_PERIOD {
        return Err(out_of_range());
    }
    Ok(d)
}

fn parse_keys(text: &str) -> Result<u32, SpecError> {
    let bad = || SpecError::BadTicketKeys {
        text: text.to_string(),
    };
    if text.is_empty() || text.len() > 3 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u32 = text.parse().map_err(|_| bad())?;
    if !(MIN_KEYS..=MAX_KEYS).contains(&n) {
        return Err(bad());
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{err, ok};
    use super::*;

    #[test]
    fn the_issue_example() {
        let s = ok(Some("/run/apache2/ssl_scache(64M) tickets=12h"));
        assert_eq!(s.bytes, 64 << 20);
        assert_eq!(s.farm, None);
        let t = s.tickets.unwrap();
        assert_eq!(t.period, Duration::from_secs(12 * 3600));
        assert_eq!(t.keys, DEFAULT_KEYS);
        assert_eq!(t.guaranteed_lifetime(), Duration::from_secs(24 * 3600));
    }

    #[test]
    fn with_the_farm_options_in_any_order() {
        let s = ok(Some(
            "/c(1M) ticket-keys=4 redis=redis://h:1 tickets=2s seal=off timeout=5ms",
        ));
        assert_eq!(
            s.tickets,
            Some(TicketSpec {
                period: Duration::from_secs(2),
                keys: 4
            })
        );
        let f = s.farm.unwrap();
        assert_eq!(f.timeout, Duration::from_millis(5));
    }

    #[test]
    fn units() {
        for (text, secs) in [
            ("1s", 1),
            ("1000ms", 1),
            ("90s", 90),
            ("30m", 1800),
            ("12h", 43200),
            ("1d", 86400),
            ("7d", 7 * 86400),
            ("168h", 7 * 86400),
        ] {
            let t = ok(Some(&format!("tickets={text}"))).tickets;
            assert_eq!(t.expect("ticket options").period.as_secs(), secs);
        }
    }

    #[test]
    fn each_bad_ticket_option_is_named() {
        let cases: &[(&str, &str)] = &[
            ("/c(1M) tickets=999ms", "tickets=999ms is out of range"),
            ("/c(1M) tickets=0s", "tickets=0s is out of range"),
            ("/c(1M) tickets=8d", "tickets=8d is out of range"),
            ("/c(1M) tickets=169h", "tickets=169h is out of range"),
            (
                "/c(1M) tickets=99999999999999d",
                "tickets=99999999999999d is not a period",
            ),
            (
                "/c(1M) tickets=12",
                "tickets=12 is not a period (expected a whole number with",
            ),
            ("/c(1M) tickets=1.5h", "tickets=1.5h is not a period"),
            ("/c(1M) tickets=-1h", "tickets=-1h is not a period"),
            ("/c(1M) tickets=h", "tickets=h is not a period"),
            ("/c(1M) tickets=", "\"tickets\" has no value"),
            ("/c(1M) tickets=1h tickets=2h", "\"tickets\" is given twice"),
            (
                "/c(1M) tickets=1h ticket-keys=1",
                "ticket-keys=1 is not a number from 2 to 16",
            ),
            ("/c(1M) tickets=1h ticket-keys=17", "ticket-keys=17"),
            ("/c(1M) tickets=1h ticket-keys=three", "ticket-keys=three"),
            (
                "/c(1M) tickets=1h ticket-keys=3 ticket-keys=3",
                "\"ticket-keys\" is given twice",
            ),
            ("/c(1M) ticket-keys=3", "ticket-keys= needs tickets="),
            ("/c(1M) tickets=1h colour=red", "unknown option \"colour\""),
        ];
        for (arg, want) in cases {
            let msg = err(arg).to_string();
            assert!(msg.starts_with("Invalid argument: "), "{arg}: {msg}");
            assert!(msg.contains(want), "{arg}: {msg:?} does not name {want:?}");
        }
        // The unknown-option message lists the ticket options too.
        assert!(err("/c(1M) colour=red")
            .to_string()
            .contains("tickets, ticket-keys"));
    }

    #[test]
    fn tickets_alone_need_no_redis() {
        let s = ok(Some("tickets=1h"));
        assert_eq!(s.path, None);
        assert_eq!(s.farm, None);
        assert!(s.tickets.is_some());
    }

    #[test]
    fn farm_options_without_redis_are_still_refused_with_tickets() {
        assert!(err("/c(1M) tickets=1h seal=off")
            .to_string()
            .contains("needs redis="));
    }
}
