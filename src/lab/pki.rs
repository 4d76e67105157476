//! Certificates made at run time, never checked in: a CA and leaves with chosen names,
//! validity windows, key types and signature digests (SHA-1 included, for the legacy
//! pool). Used by the demo lab and by the tests.

use std::path::{Path, PathBuf};

use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::error::ErrorStack;
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

fn key(kind: KeyKind) -> Result<PKey<Private>, ErrorStack> {
    match kind {
        KeyKind::P256 => {
            let g = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
            PKey::from_ec_key(EcKey::generate(&g)?)
        }
        KeyKind::Rsa2048 => PKey::from_rsa(Rsa::generate(2048)?),
    }
}

fn serial() -> Result<Asn1Integer, ErrorStack> {
    let mut bn = BigNum::new()?;
    bn.rand(64, MsbOption::MAYBE_ZERO, false)?;
    bn.to_asn1_integer()
}

fn time(days_from_now: i64) -> Result<Asn1Time, ErrorStack> {
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    Asn1Time::from_unix(now + days_from_now * 86_400)
}

/// A certificate and its key.
pub struct Issued {
    /// The certificate.
    pub cert: X509,
    /// Its private key.
    pub key: PKey<Private>,
}

impl Issued {
    /// Writes `NAME.pem` (certificate, then `chain`) and `NAME.key` into `dir`.
    pub fn write(&self, dir: &Path, name: &str, chain: &[&X509]) -> std::io::Result<(PathBuf, PathBuf)> {
        let cert = dir.join(format!("{name}.pem"));
        let key = dir.join(format!("{name}.key"));
        let mut pem = self.cert.to_pem().map_err(std::io::Error::other)?;
        for c in chain {
            pem.extend(c.to_pem().map_err(std::io::Error::other)?);
        }
        std::fs::write(&cert, pem)?;
        std::fs::write(&key, self.key.private_key_to_pem_pkcs8().map_err(std::io::Error::other)?)?;
        Ok((cert, key))
    }

    /// NotAfter as unix seconds.
    #[cfg(feature = "lab-faults")]
    pub fn not_after_unix(&self) -> i64 {
        crate::net::tls::cert::summarize(&self.cert).not_after
    }
}

/// What a leaf looks like.
pub struct Leaf<'a> {
    /// Common name.
    pub cn: &'a str,
    /// DNS names and IP addresses.
    pub sans: &'a [&'a str],
    /// NotBefore, days from now (negative: in the past).
    pub from_days: i64,
    /// NotAfter, days from now.
    pub to_days: i64,
    /// Signature digest of the issuer.
    pub digest: MessageDigest,
    /// Key type.
    pub key: KeyKind,
    /// A client (not a server) certificate.
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
    /// The CA's own certificate and key.
    pub issued: Issued,
}

impl Ca {
    /// A self-signed CA valid for ten years.
    pub fn new(cn: &str, kind: KeyKind, digest: MessageDigest) -> Result<Ca, ErrorStack> {
        let key = key(kind)?;
        let mut name = X509NameBuilder::new()?;
        name.append_entry_by_nid(Nid::COMMONNAME, cn)?;
        name.append_entry_by_nid(Nid::ORGANIZATIONNAME, "Contoso Test")?;
        let name = name.build();
        let mut b = X509::builder()?;
        b.set_version(2)?;
        b.set_serial_number(serial()?.as_ref())?;
        b.set_subject_name(&name)?;
        b.set_issuer_name(&name)?;
        b.set_pubkey(&key)?;
        b.set_not_before(time(-30)?.as_ref())?;
        b.set_not_after(time(3650)?.as_ref())?;
        b.append_extension(BasicConstraints::new().critical().ca().build()?)?;
        b.append_extension(KeyUsage::new().critical().key_cert_sign().crl_sign().build()?)?;
        b.sign(&key, digest)?;
        Ok(Ca { issued: Issued { cert: b.build(), key } })
    }

    /// A leaf signed by this CA.
    pub fn issue(&self, leaf: &Leaf<'_>) -> Result<Issued, ErrorStack> {
        sign_leaf(leaf, Some(&self.issued))
    }
}

/// A self-signed leaf (no CA).
#[cfg(feature = "lab-faults")]
pub fn self_signed(leaf: &Leaf<'_>) -> Result<Issued, ErrorStack> {
    sign_leaf(leaf, None)
}

fn sign_leaf(leaf: &Leaf<'_>, ca: Option<&Issued>) -> Result<Issued, ErrorStack> {
    let key = key(leaf.key)?;
    let mut name = X509NameBuilder::new()?;
    name.append_entry_by_nid(Nid::COMMONNAME, leaf.cn)?;
    let name = name.build();
    let mut b = X509::builder()?;
    b.set_version(2)?;
    b.set_serial_number(serial()?.as_ref())?;
    b.set_subject_name(&name)?;
    b.set_issuer_name(ca.map_or(&name, |c| c.cert.subject_name()))?;
    b.set_pubkey(&key)?;
    b.set_not_before(time(leaf.from_days)?.as_ref())?;
    b.set_not_after(time(leaf.to_days)?.as_ref())?;
    if !leaf.sans.is_empty() {
        let mut san = SubjectAlternativeName::new();
        for s in leaf.sans {
            if s.parse::<std::net::IpAddr>().is_ok() {
                san.ip(s);
            } else {
                san.dns(s);
            }
        }
        b.append_extension(san.build(&b.x509v3_context(ca.map(|c| c.cert.as_ref()), None))?)?;
    }
    let mut ku = KeyUsage::new();
    ku.critical().digital_signature();
    if matches!(leaf.key, KeyKind::Rsa2048) {
        ku.key_encipherment();
    }
    b.append_extension(ku.build()?)?;
    let mut eku = openssl::x509::extension::ExtendedKeyUsage::new();
    if leaf.client {
        eku.client_auth();
    } else {
        eku.server_auth();
    }
    b.append_extension(eku.build()?)?;
    b.sign(ca.map_or(&key, |c| &c.key), leaf.digest)?;
    Ok(Issued { cert: b.build(), key })
}

/// Writes a CA certificate alone to `dir/NAME.pem`.
pub fn write_ca(dir: &Path, name: &str, ca: &Ca) -> std::io::Result<PathBuf> {
    let p = dir.join(format!("{name}.pem"));
    std::fs::write(&p, ca.issued.cert.to_pem().map_err(std::io::Error::other)?)?;
    Ok(p)
}
