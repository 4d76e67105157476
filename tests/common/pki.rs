//! Certificates made by the tests, never checked in: a CA and leaves with chosen names,
//! validity windows and signature digests (SHA-1 included, for the legacy pool).
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::extension::{BasicConstraints, KeyUsage, SubjectAlternativeName};
use openssl::x509::{X509NameBuilder, X509};

/// Key type of a generated certificate.
#[derive(Clone, Copy)]
pub enum KeyKind {
    /// ECDSA P-256.
    P256,
    /// RSA 2048.
    Rsa2048,
}

fn key(kind: KeyKind) -> PKey<Private> {
    match kind {
        KeyKind::P256 => {
            let g = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
            PKey::from_ec_key(EcKey::generate(&g).unwrap()).unwrap()
        }
        KeyKind::Rsa2048 => PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap(),
    }
}

fn serial() -> Asn1Integer {
    let mut bn = BigNum::new().unwrap();
    bn.rand(64, MsbOption::MAYBE_ZERO, false).unwrap();
    bn.to_asn1_integer().unwrap()
}

fn time(days_from_now: i64) -> Asn1Time {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    Asn1Time::from_unix(now + days_from_now * 86_400).unwrap()
}

/// A certificate and its key.
pub struct Issued {
    pub cert: X509,
    pub key: PKey<Private>,
}

impl Issued {
    /// Writes `NAME.pem` (certificate, then `chain`) and `NAME.key` into `dir`.
    pub fn write(&self, dir: &Path, name: &str, chain: &[&X509]) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{name}.pem"));
        let key = dir.join(format!("{name}.key"));
        let mut pem = self.cert.to_pem().unwrap();
        for c in chain {
            pem.extend(c.to_pem().unwrap());
        }
        std::fs::write(&cert, pem).unwrap();
        std::fs::write(&key, self.key.private_key_to_pem_pkcs8().unwrap()).unwrap();
        (cert, key)
    }

    /// NotAfter as unix seconds.
    pub fn not_after_unix(&self) -> i64 {
        let epoch = Asn1Time::from_unix(0).unwrap();
        let d = epoch.diff(self.cert.not_after()).unwrap();
        i64::from(d.days) * 86_400 + i64::from(d.secs)
    }
}

/// What a leaf looks like.
pub struct Leaf<'a> {
    pub cn: &'a str,
    pub sans: &'a [&'a str],
    pub from_days: i64,
    pub to_days: i64,
    pub digest: MessageDigest,
    pub key: KeyKind,
    pub client: bool,
}

impl Default for Leaf<'_> {
    fn default() -> Self {
        Leaf {
            cn: "x",
            sans: &[],
            from_days: -1,
            to_days: 90,
            digest: MessageDigest::sha256(),
            key: KeyKind::P256,
            client: false,
        }
    }
}

/// A test CA.
pub struct Ca {
    pub issued: Issued,
}

impl Ca {
    pub fn new(cn: &str, kind: KeyKind, digest: MessageDigest) -> Ca {
        let key = key(kind);
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_nid(Nid::COMMONNAME, cn).unwrap();
        name.append_entry_by_nid(Nid::ORGANIZATIONNAME, "Contoso Test").unwrap();
        let name = name.build();
        let mut b = X509::builder().unwrap();
        b.set_version(2).unwrap();
        b.set_serial_number(&serial()).unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(&name).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&time(-30)).unwrap();
        b.set_not_after(&time(3650)).unwrap();
        b.append_extension(BasicConstraints::new().critical().ca().build().unwrap()).unwrap();
        b.append_extension(KeyUsage::new().critical().key_cert_sign().crl_sign().build().unwrap()).unwrap();
        b.sign(&key, digest).unwrap();
        Ca { issued: Issued { cert: b.build(), key } }
    }

    /// A leaf signed by this CA.
    pub fn issue(&self, leaf: &Leaf<'_>) -> Issued {
        sign_leaf(leaf, Some(&self.issued))
    }
}

/// A self-signed leaf (no CA).
pub fn self_signed(leaf: &Leaf<'_>) -> Issued {
    sign_leaf(leaf, None)
}

fn sign_leaf(leaf: &Leaf<'_>, ca: Option<&Issued>) -> Issued {
    let key = key(leaf.key);
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_nid(Nid::COMMONNAME, leaf.cn).unwrap();
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    b.set_serial_number(&serial()).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(ca.map_or(&name, |c| c.cert.subject_name())).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&time(leaf.from_days)).unwrap();
    b.set_not_after(&time(leaf.to_days)).unwrap();
    if !leaf.sans.is_empty() {
        let mut san = SubjectAlternativeName::new();
        for s in leaf.sans {
            if s.parse::<std::net::IpAddr>().is_ok() {
                san.ip(s);
            } else {
                san.dns(s);
            }
        }
        b.append_extension(san.build(&b.x509v3_context(ca.map(|c| c.cert.as_ref()), None)).unwrap()).unwrap();
    }
    let mut ku = KeyUsage::new();
    ku.critical().digital_signature();
    if matches!(leaf.key, KeyKind::Rsa2048) {
        ku.key_encipherment();
    }
    b.append_extension(ku.build().unwrap()).unwrap();
    let mut eku = openssl::x509::extension::ExtendedKeyUsage::new();
    if leaf.client {
        eku.client_auth();
    } else {
        eku.server_auth();
    }
    b.append_extension(eku.build().unwrap()).unwrap();
    b.sign(ca.map_or(&key, |c| &c.key), leaf.digest).unwrap();
    Issued { cert: b.build(), key }
}

/// Writes a CA certificate alone to `dir/NAME.pem`.
pub fn write_ca(dir: &Path, name: &str, ca: &Ca) -> PathBuf {
    let p = dir.join(format!("{name}.pem"));
    std::fs::write(&p, ca.issued.cert.to_pem().unwrap()).unwrap();
    p
}
