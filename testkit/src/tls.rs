//! The test CA and the one server certificate it issues (for 127.0.0.1 and
//! localhost), made in memory once per test process.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::x509::extension::{BasicConstraints, SubjectAlternativeName};
use openssl::x509::{X509Builder, X509NameBuilder};

/// PEM files of a TLS server.
pub(crate) struct TlsFiles {
    /// The CA that issued the certificate (what a client trusts).
    pub(crate) ca: Vec<u8>,
    /// The server certificate, for IP 127.0.0.1 and DNS localhost.
    pub(crate) cert: Vec<u8>,
    /// Its key (PKCS#8).
    pub(crate) key: Vec<u8>,
}

/// The files, made on first use (P-256 keys, valid from an hour ago for a
/// week).
pub(crate) fn tls_files() -> &'static TlsFiles {
    static FILES: OnceLock<TlsFiles> = OnceLock::new();
    FILES.get_or_init(|| {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).expect("P-256 group");
        let new_key = || PKey::from_ec_key(EcKey::generate(&group).expect("EC key")).expect("PKey");
        let name = |cn: &str| {
            let mut n = X509NameBuilder::new().expect("name builder");
            n.append_entry_by_text("CN", cn).expect("CN");
            n.build()
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs() as i64;
        let validity = |b: &mut X509Builder, serial: u32| {
            b.set_version(2).expect("version");
            let serial = BigNum::from_u32(serial)
                .and_then(|n| n.to_asn1_integer())
                .expect("serial");
            b.set_serial_number(&serial).expect("serial");
            b.set_not_before(&Asn1Time::from_unix(now - 3600).expect("time"))
                .expect("not before");
            b.set_not_after(&Asn1Time::days_from_now(7).expect("time"))
                .expect("not after");
        };
        let ca_key = new_key();
        let ca_name = name("socache test CA");
        let mut b = X509Builder::new().expect("X509 builder");
        validity(&mut b, 1);
        b.set_subject_name(&ca_name).expect("subject");
        b.set_issuer_name(&ca_name).expect("issuer");
        b.set_pubkey(&ca_key).expect("pubkey");
        b.append_extension(BasicConstraints::new().critical().ca().build().expect("BC"))
            .expect("BC");
        b.sign(&ca_key, MessageDigest::sha256()).expect("sign CA");
        let ca = b.build();

        let key = new_key();
        let mut b = X509Builder::new().expect("X509 builder");
        validity(&mut b, 2);
        b.set_subject_name(&name("127.0.0.1")).expect("subject");
        b.set_issuer_name(ca.subject_name()).expect("issuer");
        b.set_pubkey(&key).expect("pubkey");
        let san = SubjectAlternativeName::new()
            .dns("localhost")
            .ip("127.0.0.1")
            .build(&b.x509v3_context(Some(&ca), None))
            .expect("SAN");
        b.append_extension(san).expect("SAN");
        b.append_extension(BasicConstraints::new().build().expect("BC"))
            .expect("BC");
        b.sign(&ca_key, MessageDigest::sha256()).expect("sign cert");
        TlsFiles {
            ca: ca.to_pem().expect("CA PEM"),
            cert: b.build().to_pem().expect("cert PEM"),
            key: key.private_key_to_pem_pkcs8().expect("key PEM"),
        }
    })
}
