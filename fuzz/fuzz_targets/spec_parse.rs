//! The provider-argument parser on arbitrary text: it never panics, and
//! whatever it accepts is within its documented bounds and round-trips.
#![no_main]

use libfuzzer_sys::fuzz_target;
use socache_shm::spec::{self, MIN_BYTES};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The first byte chooses between `shm` (no argument) and `shm:<text>`.
    let arg = if text.starts_with('\u{1}') {
        None
    } else {
        Some(text)
    };
    match spec::parse(arg) {
        Ok(s) => {
            assert!(
                s.bytes >= MIN_BYTES,
                "{arg:?} accepted below the minimum: {s:?}"
            );
            if let Some(p) = &s.path {
                let p = p.to_str().expect("a path from a &str is UTF-8");
                assert!(!p.is_empty() && !p.contains('\0'), "{arg:?} -> {s:?}");
                // Its segment written back in canonical form parses to the
                // same segment.
                let again =
                    spec::parse(Some(&format!("{p}({})", s.bytes))).map(|a| (a.path, a.bytes));
                assert_eq!(
                    again,
                    Ok((s.path.clone(), s.bytes)),
                    "{arg:?} does not round-trip"
                );
            }
            if let Some(f) = &s.farm {
                // Farm options within their documented bounds.
                assert!(
                    !f.timeout.is_zero() && f.timeout <= spec::farm::MAX_TIMEOUT,
                    "{arg:?}"
                );
                assert!(f.prefix.len() <= spec::farm::MAX_PREFIX, "{arg:?}");
            }
            if let Some(t) = &s.tickets {
                // Ticket options within their documented bounds.
                use spec::tickets::{MAX_KEYS, MAX_PERIOD, MIN_KEYS, MIN_PERIOD};
                assert!(t.period >= MIN_PERIOD && t.period <= MAX_PERIOD, "{arg:?}");
                assert!((MIN_KEYS..=MAX_KEYS).contains(&t.keys), "{arg:?}");
            }
        }
        Err(e) => {
            // Every refusal explains itself in operator terms.
            let msg = e.to_string();
            assert!(msg.starts_with("Invalid argument: "), "{msg}");
        }
    }
});
