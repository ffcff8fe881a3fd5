//! Sealing and opening farm values: AES-256-GCM under a single-use key
//! derived from the farm key, so that Redis holds nothing readable (a TLS
//! session's DER holds its master secret) and nothing a writer to Redis
//! could forge, move or prolong.
//!
//! # Format (version 1, sealed)
//!
//! ```text
//! +---------+---------------+------------------+-----------+------------+----------+
//! | 0x01    | key name (16) | expiry_us (8 BE) | salt (16) | ciphertext | tag (16) |
//! +---------+---------------+------------------+-----------+------------+----------+
//! ```
//!
//! - `salt`: 16 fresh bytes from OpenSSL's `RAND_bytes` per value.
//! - The value's key: `K = HMAC-SHA256(farm key, "socache-shm seal v1" || salt)`.
//! - `ciphertext | tag = AES-256-GCM(K, nonce = 12 zero bytes, AD, value)`.
//! - `AD` (associated data, authenticated, not stored):
//!   `"socache-shm farm v1" | len(namespace) (4 BE) | namespace | len(id) (4 BE) | id
//!   | key name (16) | expiry_us (8 BE)`.
//!
//! ## Why a fixed nonce is safe here
//!
//! GCM fails catastrophically if one (key, nonce) pair encrypts two
//! messages. Here every value gets its own key `K`, derived from a fresh
//! 128-bit salt, and `K` encrypts exactly that one message: so no nonce is
//! ever used twice under one key, whatever the nonce. Two values share a `K`
//! only if their salts collide (or HMAC-SHA256 collides): for 2^32 values
//! under one farm key that chance is about 2^-65. Random 96-bit nonces under
//! one long-lived key would instead reach the usual 2^-32 bound after 2^32
//! values, a count a busy farm can reach; deriving per value removes the
//! limit and needs no nonce counter shared between hosts.
//!
//! ## What the associated data binds
//!
//! The namespace and the id (each length-prefixed, so no two pairs encode
//! alike): a value copied in Redis to another key fails to open. The key name
//! and the expiry (both also in the clear header): a writer cannot prolong a
//! value's life or make it open under another record. The opener checks the
//! tag first and the expiry after, so an `Expired` answer is about a genuine
//! value.
//!
//! # Format (version 2, clear: the explicit opt-out)
//!
//! ```text
//! +---------+------------------+-------+
//! | 0x02    | expiry_us (8 BE) | value |
//! +---------+------------------+-------+
//! ```
//!
//! [`Sealer::off`] stores values readable by anyone who reads Redis, with no
//! integrity (the provider warns). A sealer with keys refuses clear values
//! and a sealer that is off refuses sealed ones: both answer
//! [`SealError::UnknownVersion`], so a farm half-configured one way and half
//! the other shows errors rather than silently downgrading.
//!
//! Nothing here panics on any input: every length is checked before a slice
//! is taken, and OpenSSL's errors come back as [`SealError`].

use std::fmt;

use std::sync::OnceLock;

use openssl::cipher::{Cipher, CipherRef};
use openssl::cipher_ctx::CipherCtx;
use openssl::sha::Sha256;
use zeroize::Zeroizing;

use crate::keys::{FarmKeys, KeyName, NAME_LEN};

/// Version byte of a sealed value.
pub const VERSION_SEALED: u8 = 0x01;
/// Version byte of a clear value ([`Sealer::off`]).
pub const VERSION_CLEAR: u8 = 0x02;
/// Bytes of the salt.
pub const SALT_LEN: usize = 16;
/// Bytes of the GCM tag.
pub const TAG_LEN: usize = 16;
/// Bytes before the ciphertext of a sealed value.
pub const SEALED_HEADER_LEN: usize = 1 + NAME_LEN + 8 + SALT_LEN;
/// Bytes a sealed value adds to the plain one.
pub const SEALED_OVERHEAD: usize = SEALED_HEADER_LEN + TAG_LEN;
/// Bytes before the value of a clear value.
pub const CLEAR_HEADER_LEN: usize = 1 + 8;

const DERIVE_LABEL: &[u8] = b"socache-shm seal v1";
const AD_LABEL: &[u8] = b"socache-shm farm v1";
const NONCE: [u8; 12] = [0; 12];

/// Seals and opens values: with the farm's keys, or explicitly off.
pub struct Sealer {
    keys: Option<FarmKeys>,
}

impl Sealer {
    /// Seals with the first record of `keys`, opens with any.
    pub fn keys(keys: FarmKeys) -> Sealer {
        Sealer { keys: Some(keys) }
    }

    /// The explicit opt-out: values stored in clear (with a version and the
    /// expiry), readable by anyone who reads Redis.
    pub fn off() -> Sealer {
        Sealer { keys: None }
    }

    /// Whether this is the opt-out.
    pub fn is_off(&self) -> bool {
        self.keys.is_none()
    }

    /// The value as stored in Redis for `id` in `namespace`, until `expiry_us`.
    pub fn seal(
        &self,
        namespace: &str,
        id: &[u8],
        expiry_us: i64,
        value: &[u8],
    ) -> Result<Vec<u8>, SealError> {
        let Some(keys) = &self.keys else {
            let mut out = Vec::with_capacity(CLEAR_HEADER_LEN + value.len());
            out.push(VERSION_CLEAR);
            out.extend_from_slice(&expiry_us.to_be_bytes());
            out.extend_from_slice(value);
            return Ok(out);
        };
        let key = keys.sealing();
        let name = key.name();
        let mut salt = [0u8; SALT_LEN];
        openssl::rand::rand_bytes(&mut salt).map_err(|_| SealError::Crypto)?;
        let value_key = derive(key.secret(), &salt)?;
        let ad = associated_data(namespace, id, &name, expiry_us);
        let mut tag = [0u8; TAG_LEN];
        let ciphertext = aead(true, &value_key[..], &ad, value, &mut tag)?;
        let mut out = Vec::with_capacity(SEALED_OVERHEAD + value.len());
        out.push(VERSION_SEALED);
        out.extend_from_slice(&name.0);
        out.extend_from_slice(&expiry_us.to_be_bytes());
        out.extend_from_slice(&salt);
        out.extend_from_slice(&ciphertext);
        out.extend_from_slice(&tag);
        Ok(out)
    }

    /// The value and its expiry, if `sealed` is a genuine, unexpired value
    /// sealed for `id` in `namespace`.
    pub fn open(
        &self,
        namespace: &str,
        id: &[u8],
        now_us: i64,
        sealed: &[u8],
    ) -> Result<(Vec<u8>, i64), SealError> {
        let (&version, rest) = sealed.split_first().ok_or(SealError::Truncated)?;
        let Some(keys) = &self.keys else {
            if version != VERSION_CLEAR {
                return Err(SealError::UnknownVersion(version));
            }
            let (expiry, value) = split_expiry(rest)?;
            if expiry <= now_us {
                return Err(SealError::Expired);
            }
            return Ok((value.to_vec(), expiry));
        };
        if version != VERSION_SEALED {
            return Err(SealError::UnknownVersion(version));
        }
        if sealed.len() < SEALED_OVERHEAD {
            return Err(SealError::Truncated);
        }
        let (name_bytes, rest) = rest.split_at(NAME_LEN);
        let (expiry, rest) = split_expiry(rest)?;
        let (salt, rest) = rest.split_at(SALT_LEN);
        let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
        let mut name = [0u8; NAME_LEN];
        name.copy_from_slice(name_bytes);
        let name = KeyName(name);
        let key = keys.find(&name).ok_or(SealError::UnknownKey(name))?;
        let value_key = derive(key.secret(), salt)?;
        let ad = associated_data(namespace, id, &name, expiry);
        let mut tag_copy = [0u8; TAG_LEN];
        tag_copy.copy_from_slice(tag);
        let value = aead(false, &value_key[..], &ad, ciphertext, &mut tag_copy)
            .map_err(|_| SealError::Tampered)?;
        if expiry <= now_us {
            return Err(SealError::Expired);
        }
        Ok((value, expiry))
    }
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.keys {
            Some(keys) => f.debug_tuple("Sealer::keys").field(keys).finish(),
            None => f.write_str("Sealer::off"),
        }
    }
}

/// `HMAC-SHA256(farm key, DERIVE_LABEL || salt)`: the value's single-use key.
fn derive(farm_key: &[u8], salt: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
    Ok(Zeroizing::new(
        hmac_sha256(farm_key, &[DERIVE_LABEL, salt]).to_vec(),
    ))
}

/// HMAC-SHA256 (RFC 2104) over OpenSSL's SHA-256, with no `EVP` object
/// made per call. OpenSSL 3's `PKey::hmac` + `Signer` fetched the digest
/// and built a key object on every value: with `decrypt_aead`'s implicit
/// cipher fetch, about 100,000 instructions of a remote hit's 102,000 went
/// to OpenSSL's algorithm lookups (callgrind, farm/examples/remote_hit.rs).
fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Zeroizing<[u8; 32]> {
    const BLOCK: usize = 64;
    let mut k = Zeroizing::new([0u8; BLOCK]);
    if key.len() > BLOCK {
        let mut h = Sha256::new();
        h.update(key);
        k[..32].copy_from_slice(&h.finish());
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut pad = Zeroizing::new([0u8; BLOCK]);
    for (p, b) in pad.iter_mut().zip(k.iter()) {
        *p = b ^ 0x36;
    }
    let mut inner = Sha256::new();
    inner.update(&pad[..]);
    for part in parts {
        inner.update(part);
    }
    let inner = Zeroizing::new(inner.finish());
    for (p, b) in pad.iter_mut().zip(k.iter()) {
        *p = b ^ 0x5c;
    }
    let mut outer = Sha256::new();
    outer.update(&pad[..]);
    outer.update(&inner[..]);
    Zeroizing::new(outer.finish())
}

/// AES-256-GCM over a cipher fetched once per process (OpenSSL 3 fetches
/// an algorithm implicitly at every init otherwise). Seals (`encrypt`,
/// writing `tag`) or opens (checking `tag`).
fn aead(
    encrypt: bool,
    key: &[u8],
    ad: &[u8],
    input: &[u8],
    tag: &mut [u8; TAG_LEN],
) -> Result<Vec<u8>, SealError> {
    static AES_256_GCM: OnceLock<Option<Cipher>> = OnceLock::new();
    let cipher: &CipherRef = AES_256_GCM
        .get_or_init(|| Cipher::fetch(None, "AES-256-GCM", None).ok())
        .as_deref()
        .ok_or(SealError::Crypto)?;
    let mut ctx = CipherCtx::new().map_err(|_| SealError::Crypto)?;
    let crypto = |_| SealError::Crypto;
    if encrypt {
        ctx.encrypt_init(Some(cipher), Some(key), Some(&NONCE))
            .map_err(crypto)?;
    } else {
        ctx.decrypt_init(Some(cipher), Some(key), Some(&NONCE))
            .map_err(crypto)?;
        ctx.set_tag(&tag[..]).map_err(crypto)?;
    }
    ctx.cipher_update(ad, None).map_err(crypto)?;
    let mut out = vec![0u8; input.len() + 16];
    let n = ctx.cipher_update(input, Some(&mut out)).map_err(crypto)?;
    let m = ctx.cipher_final(&mut out[n..]).map_err(crypto)?;
    out.truncate(n + m);
    if encrypt {
        ctx.tag(&mut tag[..]).map_err(crypto)?;
    }
    Ok(out)
}

fn associated_data(namespace: &str, id: &[u8], name: &KeyName, expiry_us: i64) -> Vec<u8> {
    let mut ad = Vec::with_capacity(AD_LABEL.len() + 8 + namespace.len() + id.len() + 24);
    ad.extend_from_slice(AD_LABEL);
    push_prefixed(&mut ad, namespace.as_bytes());
    push_prefixed(&mut ad, id);
    ad.extend_from_slice(&name.0);
    ad.extend_from_slice(&expiry_us.to_be_bytes());
    ad
}

/// Appends `len (4 BE) | bytes`; a longer field (over 4 GiB, never an id)
/// saturates its length, which still encodes distinct lengths distinctly up
/// to that point.
fn push_prefixed(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

fn split_expiry(bytes: &[u8]) -> Result<(i64, &[u8]), SealError> {
    let (head, rest) = bytes.split_first_chunk::<8>().ok_or(SealError::Truncated)?;
    Ok((i64::from_be_bytes(*head), rest))
}

/// Why a value did not seal or open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SealError {
    /// Shorter than its header and tag.
    Truncated,
    /// A version byte this sealer does not take (including a clear value
    /// read by a sealer with keys, and the reverse).
    UnknownVersion(u8),
    /// Sealed under a key name the key file does not have.
    UnknownKey(KeyName),
    /// Genuine but past its expiry.
    Expired,
    /// The tag did not verify: altered, moved to another id or namespace,
    /// or sealed with another key of the same name.
    Tampered,
    /// OpenSSL failed (random bytes, HMAC or cipher setup).
    Crypto,
}

impl fmt::Display for SealError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated => f.write_str("farm value truncated"),
            Self::UnknownVersion(v) => write!(
                f,
                "farm value of version {v:#04x}, which this server does not take \
                 (sealed against clear: are all hosts' farm keys configured alike?)"
            ),
            Self::UnknownKey(name) => write!(
                f,
                "farm value sealed with key {name}, which the farm key file does not have"
            ),
            Self::Expired => f.write_str("farm value expired"),
            Self::Tampered => f.write_str("farm value failed authentication"),
            Self::Crypto => f.write_str("OpenSSL failed while sealing or opening a farm value"),
        }
    }
}

impl std::error::Error for SealError {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::RECORD_LEN;
    use proptest::prelude::*;
    use std::path::Path;

    fn keys(records: &[(u8, u8)]) -> FarmKeys {
        let mut bytes = Vec::with_capacity(records.len() * RECORD_LEN);
        for &(name, key) in records {
            bytes.extend_from_slice(&[name; NAME_LEN]);
            bytes.extend_from_slice(&[key; 32]);
        }
        FarmKeys::from_bytes(Path::new("test"), &bytes).expect("keys")
    }

    const NS: &str = "mod_ssl-session";
    const NOW: i64 = 1_700_000_000_000_000;
    const LATER: i64 = NOW + 300_000_000;

    /// A sealer of one key (name 1, key bytes 9), and `v` it sealed for
    /// `id` in [`NS`] until [`LATER`].
    fn sealed_v() -> (Sealer, Vec<u8>) {
        let sealer = Sealer::keys(keys(&[(1, 9)]));
        let sealed = sealer.seal(NS, b"id", LATER, b"v").expect("seal");
        (sealer, sealed)
    }

    /// RFC 4231, test cases 1 and 2 (and 6: a key longer than a block).
    #[test]
    fn hmac_sha256_matches_rfc_4231() {
        let hex = |s: &str| -> Vec<u8> {
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
                .collect()
        };
        assert_eq!(
            hmac_sha256(&[0x0b; 20], &[b"Hi There"]).to_vec(),
            hex("b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7")
        );
        assert_eq!(
            hmac_sha256(b"Jefe", &[b"what do ya want ", b"for nothing?"]).to_vec(),
            hex("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        );
        assert_eq!(
            hmac_sha256(
                &[0xaa; 131],
                &[b"Test Using Larger Than Block-Size Key - Hash Key First"]
            )
            .to_vec(),
            hex("60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54")
        );
    }

    #[test]
    fn roundtrip() {
        let sealer = Sealer::keys(keys(&[(1, 9)]));
        let sealed = sealer.seal(NS, b"id", LATER, b"session").expect("seal");
        assert_eq!(sealed.len(), SEALED_OVERHEAD + 7);
        assert_eq!(sealed[0], VERSION_SEALED);
        assert!(!sealed.windows(7).any(|w| w == b"session"));
        assert_eq!(
            sealer.open(NS, b"id", NOW, &sealed),
            Ok((b"session".to_vec(), LATER))
        );
        let empty = sealer.seal(NS, b"", LATER, b"").expect("seal empty");
        assert_eq!(sealer.open(NS, b"", NOW, &empty), Ok((Vec::new(), LATER)));
    }

    #[test]
    fn salts_differ() {
        let (sealer, a) = sealed_v();
        let b = sealer.seal(NS, b"id", LATER, b"v").expect("seal");
        assert_ne!(a, b);
    }

    #[test]
    fn bound_to_id_namespace_and_expiry() {
        let (sealer, sealed) = sealed_v();
        // Length prefixes: ("ab", "c") and ("a", "bc") are not the same.
        let ab = sealer.seal("ab", b"c", LATER, b"v").expect("seal");
        // A longer life written into the header.
        let mut longer = sealed.clone();
        longer[1 + NAME_LEN..1 + NAME_LEN + 8].copy_from_slice(&(LATER * 2).to_be_bytes());
        let moved: [(&str, &[u8], &[u8]); 4] = [
            (NS, b"other", &sealed),
            ("mod_ssl-staple", b"id", &sealed),
            ("a", b"bc", &ab),
            (NS, b"id", &longer),
        ];
        for (namespace, id, value) in moved {
            assert_eq!(
                sealer.open(namespace, id, NOW, value),
                Err(SealError::Tampered),
                "{namespace} {id:?}"
            );
        }
    }

    #[test]
    fn expired() {
        let (sealer, sealed) = sealed_v();
        assert_eq!(
            sealer.open(NS, b"id", LATER, &sealed),
            Err(SealError::Expired)
        );
        assert_eq!(
            sealer.open(NS, b"id", LATER - 1, &sealed).map(|(_, e)| e),
            Ok(LATER)
        );
    }

    #[test]
    fn rotation_and_unknown_keys() {
        let (old, by_old) = sealed_v();
        let rotated = Sealer::keys(keys(&[(2, 8), (1, 9)]));
        assert_eq!(
            rotated.open(NS, b"id", NOW, &by_old),
            Ok((b"v".to_vec(), LATER))
        );
        let by_new = rotated.seal(NS, b"id", LATER, b"v").expect("seal");
        assert_eq!(&by_new[1..1 + NAME_LEN], &[2; NAME_LEN]);
        assert_eq!(
            old.open(NS, b"id", NOW, &by_new),
            Err(SealError::UnknownKey(KeyName([2; NAME_LEN])))
        );
        // Same name, other key bytes.
        let impostor = Sealer::keys(keys(&[(1, 7)]));
        assert_eq!(
            impostor.open(NS, b"id", NOW, &by_old),
            Err(SealError::Tampered)
        );
    }

    #[test]
    fn clear_and_sealed_do_not_mix() {
        let sealed = Sealer::keys(keys(&[(1, 9)]));
        let clear = Sealer::off();
        let c = clear.seal(NS, b"id", LATER, b"value").expect("clear");
        assert_eq!(c[0], VERSION_CLEAR);
        assert_eq!(
            clear.open(NS, b"id", NOW, &c),
            Ok((b"value".to_vec(), LATER))
        );
        assert_eq!(clear.open(NS, b"id", LATER, &c), Err(SealError::Expired));
        assert_eq!(
            sealed.open(NS, b"id", NOW, &c),
            Err(SealError::UnknownVersion(VERSION_CLEAR))
        );
        let s = sealed.seal(NS, b"id", LATER, b"value").expect("seal");
        assert_eq!(
            clear.open(NS, b"id", NOW, &s),
            Err(SealError::UnknownVersion(VERSION_SEALED))
        );
    }

    #[test]
    fn short_inputs() {
        let sealed = Sealer::keys(keys(&[(1, 9)]));
        let clear = Sealer::off();
        let good = sealed.seal(NS, b"id", LATER, b"").expect("seal");
        for len in 0..good.len() {
            assert!(sealed.open(NS, b"id", NOW, &good[..len]).is_err());
            assert!(clear.open(NS, b"id", NOW, &good[..len]).is_err());
        }
        assert_eq!(sealed.open(NS, b"id", NOW, &[]), Err(SealError::Truncated));
        assert_eq!(
            clear.open(NS, b"id", NOW, &[VERSION_CLEAR, 0]),
            Err(SealError::Truncated)
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn roundtrips(id in proptest::collection::vec(any::<u8>(), 0..64),
                      value in proptest::collection::vec(any::<u8>(), 0..512),
                      life in 1i64..1_000_000_000) {
            let sealer = Sealer::keys(keys(&[(3, 4)]));
            let sealed = sealer.seal(NS, &id, NOW + life, &value).expect("seal");
            prop_assert_eq!(sealer.open(NS, &id, NOW, &sealed), Ok((value, NOW + life)));
        }

        #[test]
        fn any_bit_flip_fails(value in proptest::collection::vec(any::<u8>(), 0..64),
                              bit in any::<proptest::sample::Index>()) {
            let sealer = Sealer::keys(keys(&[(3, 4)]));
            let mut sealed = sealer.seal(NS, b"id", LATER, &value).expect("seal");
            let at = bit.index(sealed.len() * 8);
            sealed[at / 8] ^= 1 << (at % 8);
            prop_assert!(sealer.open(NS, b"id", NOW, &sealed).is_err());
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..128),
                                now in any::<i64>()) {
            let sealer = Sealer::keys(keys(&[(3, 4)]));
            let _ = sealer.open(NS, b"id", now, &bytes);
            let _ = Sealer::off().open(NS, b"id", now, &bytes);
        }
    }
}
