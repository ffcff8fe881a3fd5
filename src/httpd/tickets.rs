//! Session-ticket keys kept in the cache's segment (`tickets=PERIOD`,
//! `ticket-keys=N`): which key encrypts now, which keys decrypt, and how a
//! missing key is made (and, with a farm tier, agreed with the other
//! hosts). Plain Rust over [`Tiers`]: no OpenSSL, tested without httpd.
//! The OpenSSL callback that uses them is in `ticket_hook`.
//!
//! Time is cut into periods of `tickets=` length; period `P` covers
//! `[P x period, (P+1) x period)` of the Unix epoch (the same cut on
//! every host). The key of period `P`:
//!
//! ```text
//!  id     b"\0socache-shm:ticket-key:" ++ P (u64 BE)      32 bytes
//!  value  name (16) ++ AES-256 key (32) ++ HMAC-SHA256 key (32)   80 bytes
//!         name = P (u64 BE) ++ 8 random bytes
//!  expiry end of P + (N-1) periods = (P + N) x period
//! ```
//!
//! The id starts with a NUL and is 32 bytes long: mod_ssl's ids are 32
//! random bytes (session ids, TLS 1.3 stateful tickets), so one may equal
//! it with probability 2^-256 per session; other consumers of a `shm`
//! cache do not share this segment's keys with mod_ssl's ticket keys
//! (`tickets=` is refused on any cache but `SSLSessionCache`'s).
//!
//! The key is an ordinary entry of the segment: the engine zeroes it when
//! it departs, and its monitor sweep (the parent, about every 10 s)
//! zeroes it once expired: a key is gone from the segment's bytes within
//! about 11 s of the end of its last period.
//!
//! Rules:
//! 1. Encrypt with the key of the current period `P`; made if missing
//!    (first handshake of a period, at start, after an eviction).
//! 2. From `P`'s midpoint on, the first encryption that finds `P+1`
//!    missing makes it (retrieve, then store): every child and host has it
//!    before anyone encrypts with it. Two children racing here both write
//!    a random key for a period nobody encrypts with yet; the later write
//!    wins and everyone then reads that one.
//! 3. Decrypt with the key named by the ticket if its period is within
//!    `[P-(N-1), P+1]` and its whole 16-byte name matches (constant time):
//!    the newest key (`>= P`) resumes; an older one resumes and renews the
//!    ticket; anything else is a full handshake, never an error.
//! 4. With a farm tier, a key is made by `Farm::agree` (SET NX GET, sealed
//!    under the farm key, bound to the id and expiry): the first host's
//!    random key wins and every host stores that one locally. A farm that
//!    cannot be asked leaves this host with its own key (said once per
//!    period in the error log): its tickets then resume on it alone.
//! 5. Without a farm tier, the parent makes the current key (and the next
//!    one past the midpoint) before it forks, so children do not race for
//!    the key they encrypt with at start. With one, it does not: the
//!    parent does no network I/O, and a local key would differ from the
//!    farm's.

use std::time::Duration;

use socache_shm_farm::Agreement;
use zeroize::Zeroize;

use super::tiers::Tiers;
use crate::engine::Timestamp;
use crate::spec::TicketSpec;

/// The start of every ticket key's id.
pub(crate) const KEY_ID_PREFIX: &[u8; 24] = b"\0socache-shm:ticket-key:";

/// The start of the once-per-period marker "keys made without the farm".
const ALONE_ID_PREFIX: &[u8; 24] = b"\0socache-shm:ticket-own:";

/// Bytes of a key's name, AES key, HMAC key, and of the whole value.
pub(crate) const NAME_LEN: usize = 16;
pub(crate) const AES_LEN: usize = 32;
pub(crate) const HMAC_LEN: usize = 32;
pub(crate) const KEY_LEN: usize = NAME_LEN + AES_LEN + HMAC_LEN;

/// One period's key. Zeroed when dropped.
pub(crate) struct TicketKey {
    bytes: [u8; KEY_LEN],
}

impl Drop for TicketKey {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

impl TicketKey {
    /// A new random key for `period`: the name's first 8 bytes say the
    /// period; everything else comes from the kernel's generator.
    fn random(period: u64) -> Option<TicketKey> {
        let mut bytes = [0u8; KEY_LEN];
        getrandom(&mut bytes[8..])?;
        bytes[..8].copy_from_slice(&period.to_be_bytes());
        Some(TicketKey { bytes })
    }

    /// A key as stored, if it is one (80 bytes, named for `period`).
    fn decode(value: &[u8], period: u64) -> Option<TicketKey> {
        let bytes: [u8; KEY_LEN] = value.try_into().ok()?;
        let key = TicketKey { bytes };
        (key.period() == period).then_some(key)
    }

    pub(crate) fn name(&self) -> &[u8; NAME_LEN] {
        self.bytes[..NAME_LEN].try_into().expect("16 bytes")
    }

    pub(crate) fn aes(&self) -> &[u8; AES_LEN] {
        self.bytes[NAME_LEN..NAME_LEN + AES_LEN]
            .try_into()
            .expect("32 bytes")
    }

    pub(crate) fn hmac(&self) -> &[u8; HMAC_LEN] {
        self.bytes[NAME_LEN + AES_LEN..]
            .try_into()
            .expect("32 bytes")
    }

    fn period(&self) -> u64 {
        period_of_name(&self.bytes[..NAME_LEN])
    }
}

/// The period a ticket's key name says (its first 8 bytes).
fn period_of_name(name: &[u8]) -> u64 {
    let mut p = [0u8; 8];
    p.copy_from_slice(&name[..8]);
    u64::from_be_bytes(p)
}

/// The segment id of period `period`'s key.
pub(crate) fn key_id(period: u64) -> [u8; 32] {
    let mut id = [0u8; 32];
    id[..24].copy_from_slice(KEY_ID_PREFIX);
    id[24..].copy_from_slice(&period.to_be_bytes());
    id
}

fn alone_id(period: u64) -> [u8; 32] {
    let mut id = [0u8; 32];
    id[..24].copy_from_slice(ALONE_ID_PREFIX);
    id[24..].copy_from_slice(&period.to_be_bytes());
    id
}

/// `len` bytes from the kernel's generator (getrandom(2); no file, no
/// state inherited across fork).
fn getrandom(buf: &mut [u8]) -> Option<()> {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = &mut buf[filled..];
        // SAFETY: `rest` is writable for its length.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return None;
        }
        filled += usize::try_from(n).ok()?;
    }
    Some(())
}

/// Equal, in time that depends on the length only.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What a decryption found.
pub(crate) enum Found {
    /// The key of the current period (or the next): resume.
    Newest(TicketKey),
    /// An older key still within its N periods: resume and renew.
    Older(TicketKey),
}

/// What happened when a key had to be made (for the caller's log).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Made {
    /// Found in the segment: nothing made.
    Present,
    /// Made here (no farm tier).
    Local,
    /// Agreed through the farm (ours or another host's).
    Agreed,
    /// The farm could not be asked: made here, first time this period.
    AloneFirst,
    /// The farm could not be asked: made here (already said this period).
    Alone,
}

/// The ticket keys of one cache.
pub(crate) struct TicketKeys<'a> {
    tiers: Tiers<'a>,
    period_us: i64,
    keys: u64,
}

impl<'a> TicketKeys<'a> {
    pub(crate) fn new(tiers: Tiers<'a>, spec: TicketSpec) -> TicketKeys<'a> {
        TicketKeys {
            tiers,
            period_us: i64::try_from(spec.period.as_micros())
                .unwrap_or(i64::MAX)
                .max(1),
            keys: u64::from(spec.keys),
        }
    }

    /// The period `now` falls in.
    pub(crate) fn period_at(&self, now: Timestamp) -> u64 {
        u64::try_from(now.0.max(0) / self.period_us).unwrap_or(0)
    }

    /// When period `period`'s key stops decrypting (µs since the epoch).
    fn expiry_of(&self, period: u64) -> i64 {
        i64::try_from(period.saturating_add(self.keys))
            .unwrap_or(i64::MAX)
            .saturating_mul(self.period_us)
    }

    fn now(&self) -> Timestamp {
        self.tiers.cache.now()
    }

    /// The key to encrypt a new ticket with (rule 1), after making the next
    /// period's key if it is time to (rule 2). `on_made` hears how a key
    /// was made, for the log.
    pub(crate) fn for_encrypt(&self, mut on_made: impl FnMut(u64, Made)) -> Option<TicketKey> {
        let now = self.now();
        let p = self.period_at(now);
        let (key, made) = self.obtain(p, now)?;
        if made != Made::Present {
            on_made(p, made);
        }
        let into_period = now.0 - i64::try_from(p).unwrap_or(0) * self.period_us;
        if into_period >= self.period_us / 2 {
            match self.obtain(p + 1, now) {
                Some((_, Made::Present)) | None => {}
                Some((_, made)) => on_made(p + 1, made),
            }
        }
        Some(key)
    }

    /// The key a ticket named `name` was sealed with, if it may still open
    /// it (rule 3). A missing key of the current or next period is made
    /// (another host may have used it first: with a farm tier this fetches
    /// it); with a farm tier an older missing key is asked for too (a key
    /// the farm no longer has comes back as a new random one that opens
    /// nothing: a full handshake).
    pub(crate) fn for_decrypt(
        &self,
        name: &[u8; NAME_LEN],
        mut on_made: impl FnMut(u64, Made),
    ) -> Option<Found> {
        let now = self.now();
        let p = self.period_at(now);
        let q = period_of_name(name);
        if q > p.saturating_add(1) || q.saturating_add(self.keys) <= p {
            return None;
        }
        let key = match self.get(q) {
            Some(key) => key,
            None if q >= p || self.tiers.farm.is_some() => {
                let (key, made) = self.obtain(q, now)?;
                on_made(q, made);
                key
            }
            None => return None,
        };
        if !constant_time_eq(key.name(), name) {
            return None;
        }
        Some(if q >= p {
            Found::Newest(key)
        } else {
            Found::Older(key)
        })
    }

    /// Period `period`'s key from the segment.
    fn get(&self, period: u64) -> Option<TicketKey> {
        let mut buf = [0u8; KEY_LEN];
        let n = self.tiers.cache.retrieve(&key_id(period), &mut buf).ok();
        let key = n.and_then(|n| TicketKey::decode(&buf[..n], period));
        buf.zeroize();
        key
    }

    /// Period `period`'s key: from the segment, else made (rules 1, 2, 4).
    pub(crate) fn obtain(&self, period: u64, now: Timestamp) -> Option<(TicketKey, Made)> {
        if let Some(key) = self.get(period) {
            return Some((key, Made::Present));
        }
        let proposal = TicketKey::random(period)?;
        let expiry = self.expiry_of(period);
        let id = key_id(period);
        let (chosen, made) = match self.tiers.farm {
            None => (proposal, Made::Local),
            Some(farm) => {
                let words = self.tiers.cache.tier_words();
                match farm.agree(words, &id, &proposal.bytes, expiry, now.0) {
                    Agreement::Ours => (proposal, Made::Agreed),
                    Agreement::Theirs { mut value } => {
                        let theirs = TicketKey::decode(&value, period);
                        value.zeroize();
                        match theirs {
                            Some(key) => (key, Made::Agreed),
                            // Sealed under our farm key yet not a key for
                            // this period: keep ours (never expected).
                            None => (proposal, self.alone(period, expiry)),
                        }
                    }
                    Agreement::Unreachable => (proposal, self.alone(period, expiry)),
                }
            }
        };
        // Best effort: a key the segment refuses still serves this call.
        let _ = self
            .tiers
            .cache
            .store(&id, &chosen.bytes, Timestamp(expiry));
        // Rule 2's race: whoever wrote last, everyone reads that one.
        Some((self.get(period).unwrap_or(chosen), made))
    }

    /// Marks `period` as keyed without the farm; whether this is the first
    /// time (so the caller says it once per period, not per child).
    fn alone(&self, period: u64, expiry: i64) -> Made {
        let id = alone_id(period);
        let mut buf = [0u8; 1];
        if self.tiers.cache.retrieve(&id, &mut buf).is_ok() {
            return Made::Alone;
        }
        let _ = self.tiers.cache.store(&id, &[1], Timestamp(expiry));
        Made::AloneFirst
    }

    /// How many keys the segment holds for the periods that may decrypt
    /// now (for server-status).
    pub(crate) fn held(&self) -> u64 {
        let p = self.period_at(self.now());
        let first = p.saturating_sub(self.keys - 1);
        (first..=p + 1).filter(|&q| self.get(q).is_some()).count() as u64
    }
}

/// The period as the error log says it.
pub(crate) fn describe(spec: TicketSpec) -> String {
    format!(
        "a new key every {}, each decrypting for {} periods ({} after its own)",
        human(spec.period),
        spec.keys,
        human(spec.guaranteed_lifetime())
    )
}

/// `12h`, `90s`, `1500ms`: the largest unit that divides it.
pub(crate) fn human(d: Duration) -> String {
    let ms = d.as_millis();
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ] {
        if ms >= size && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::sync::Arc;

    use super::*;
    use crate::engine::{Cache, CacheConfig, Clock};

    struct TestClock(AtomicI64);
    impl Clock for TestClock {
        fn now(&self) -> Timestamp {
            Timestamp(self.0.load(Ordering::Relaxed))
        }
    }

    const PERIOD: i64 = 2_000_000;

    fn setup(start_us: i64) -> (Cache, Arc<TestClock>) {
        let clock = Arc::new(TestClock(AtomicI64::new(start_us)));
        let cache = Cache::create(&CacheConfig::new(64 * 1024))
            .expect("engine cache")
            .with_clock(clock.clone());
        (cache, clock)
    }

    fn spec() -> TicketSpec {
        TicketSpec {
            period: Duration::from_secs(2),
            keys: 3,
        }
    }

    fn keys(cache: &Cache) -> TicketKeys<'_> {
        TicketKeys::new(Tiers { cache, farm: None }, spec())
    }

    #[test]
    fn ids_cannot_be_session_ids_and_names_say_the_period() {
        let id = key_id(0x0102_0304_0506_0708);
        assert_eq!(id.len(), 32);
        assert_eq!(id[0], 0);
        assert_eq!(&id[24..], &[1, 2, 3, 4, 5, 6, 7, 8]);
        let k = TicketKey::random(42).unwrap();
        assert_eq!(k.period(), 42);
        assert!(TicketKey::decode(&k.bytes, 42).is_some());
        assert!(TicketKey::decode(&k.bytes, 43).is_none());
        assert!(TicketKey::decode(&k.bytes[..79], 42).is_none());
        let other = TicketKey::random(42).unwrap();
        assert_ne!(k.name(), other.name(), "8 random bytes in every name");
        assert_ne!(k.aes(), other.aes());
        assert_ne!(k.hmac(), other.hmac());
    }

    #[test]
    fn one_key_per_period_shared_and_made_ahead_from_the_midpoint() {
        let (cache, clock) = setup(1000 * PERIOD + 1);
        let keys = keys(&cache);
        let mut made = Vec::new();
        let a = keys.for_encrypt(|p, m| made.push((p, m))).unwrap();
        assert_eq!(made, vec![(1000, Made::Local)]);
        let b = keys.for_encrypt(|p, m| made.push((p, m))).unwrap();
        assert_eq!(a.bytes, b.bytes, "the same key for the whole period");
        assert_eq!(made.len(), 1);
        assert!(keys.get(1001).is_none(), "not before the midpoint");
        clock.0.store(1000 * PERIOD + PERIOD / 2, Ordering::Relaxed);
        keys.for_encrypt(|p, m| made.push((p, m))).unwrap();
        assert_eq!(made.last(), Some(&(1001, Made::Local)));
        let next = keys.get(1001).unwrap();
        clock.0.store(1001 * PERIOD, Ordering::Relaxed);
        let c = keys.for_encrypt(|p, m| made.push((p, m))).unwrap();
        assert_eq!(c.bytes, next.bytes, "the key made ahead is the one used");
    }

    #[test]
    fn decrypt_newest_older_and_expired() {
        let (cache, clock) = setup(1000 * PERIOD);
        let keys = keys(&cache);
        let k1000 = keys.for_encrypt(|_, _| {}).unwrap();
        let name = *k1000.name();
        assert!(matches!(
            keys.for_decrypt(&name, |_, _| {}),
            Some(Found::Newest(_))
        ));
        // A name for the right period with other random bytes: unknown.
        let mut forged = name;
        forged[15] ^= 1;
        assert!(keys.for_decrypt(&forged, |_, _| {}).is_none());
        // Next period and the one after: older, still opens (renew).
        for p in [1001, 1002] {
            clock.0.store(p * PERIOD + 1, Ordering::Relaxed);
            assert!(
                matches!(keys.for_decrypt(&name, |_, _| {}), Some(Found::Older(_))),
                "period {p}"
            );
        }
        // N = 3 periods later: gone.
        clock.0.store(1003 * PERIOD, Ordering::Relaxed);
        assert!(keys.for_decrypt(&name, |_, _| {}).is_none());
        // And the entry itself has expired.
        assert!(keys.get(1000).is_none());
        // A name from the far future or the distant past: never made.
        let mut future = [0u8; 16];
        future[..8].copy_from_slice(&5000u64.to_be_bytes());
        assert!(keys.for_decrypt(&future, |_, _| {}).is_none());
        assert!(keys.get(5000).is_none());
        let mut past = [0u8; 16];
        past[..8].copy_from_slice(&1001u64.to_be_bytes());
        // 1001 is within the window but missing locally, no farm: not made.
        cache.remove(&key_id(1001));
        assert!(keys.for_decrypt(&past, |_, _| {}).is_none());
        assert!(keys.get(1001).is_none());
    }

    #[test]
    fn expiry_is_the_end_of_the_last_period() {
        let (cache, _clock) = setup(10 * PERIOD);
        let keys = keys(&cache);
        assert_eq!(keys.expiry_of(10), 13 * PERIOD);
        assert_eq!(keys.held(), 0);
        keys.for_encrypt(|_, _| {}).unwrap();
        assert_eq!(keys.held(), 1);
    }

    #[test]
    fn durations_read_back() {
        assert_eq!(human(Duration::from_secs(43200)), "12h");
        assert_eq!(human(Duration::from_secs(90)), "90s");
        assert_eq!(human(Duration::from_millis(1500)), "1500ms");
        assert!(describe(spec()).contains("every 2s"));
    }
}
