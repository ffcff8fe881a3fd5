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
    let arg = if text.starts_with('\u{1}') { None } else { Some(text) };
    match spec::parse(arg) {
        Ok(s) => {
            assert!(s.bytes >= MIN_BYTES, "{arg:?} accepted below the minimum: {s:?}");
            if let Some(p) = &s.path {
                let p = p.to_str().expect("a path from a &str is UTF-8");
                assert!(!p.is_empty() && !p.contains('\0'), "{arg:?} -> {s:?}");
                // Written back in canonical form, it parses to the same spec.
                let again = spec::parse(Some(&format!("{p}({})", s.bytes)));
                assert_eq!(again.as_ref(), Ok(&s), "{arg:?} does not round-trip");
            }
        }
        Err(e) => {
            // Every refusal explains itself in operator terms.
            let msg = e.to_string();
            assert!(msg.starts_with("Invalid argument: "), "{msg}");
        }
    }
});
