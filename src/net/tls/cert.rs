//! Certificate summaries for metrics and status: what an operator needs to see on a
//! dashboard (subject, issuer, names, signature algorithm — a SHA-1 signature shows —
//! validity) without opening the certificate.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use openssl::asn1::{Asn1Time, Asn1TimeRef};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::stack::StackRef;
use openssl::x509::{X509NameRef, X509Ref, X509};
use rustls::pki_types::CertificateDer;

pub use crate::failure::tls::CertSummary;

/// Summarises certificates given as DER (rustls' view of the chain); unparseable ones
/// are skipped.
pub fn summarize_der(chain: &[CertificateDer<'_>]) -> Vec<Arc<CertSummary>> {
    chain.iter().filter_map(|der| cached(der.as_ref())).collect()
}

/// Summarises an OpenSSL chain.
pub fn summarize_stack(chain: &StackRef<X509>) -> Vec<Arc<CertSummary>> {
    chain.iter().filter_map(|x| x.to_der().ok()).filter_map(|der| cached(&der)).collect()
}

/// Summaries by SHA-256 of the DER. A pool presents the same certificate probe after
/// probe; parsing it with OpenSSL 3 every time cost a fifth of a TLS probe's CPU.
static CACHE: Mutex<Option<HashMap<[u8; 32], Arc<CertSummary>>>> = Mutex::new(None);

/// Entries kept at most; the cache starts over when full.
const CACHE_MAX: usize = 4096;

fn cached(der: &[u8]) -> Option<Arc<CertSummary>> {
    let fp: [u8; 32] = ring::digest::digest(&ring::digest::SHA256, der).as_ref().try_into().ok()?;
    if let Some(s) = CACHE.lock().unwrap_or_else(|e| e.into_inner()).as_ref().and_then(|c| c.get(&fp)) {
        return Some(s.clone());
    }
    let x509 = X509::from_der(der).ok()?;
    let summary = Arc::new(summarize(&x509));
    let mut guard = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    let cache = guard.get_or_insert_with(HashMap::new);
    if cache.len() >= CACHE_MAX {
        cache.clear();
    }
    cache.insert(fp, summary.clone());
    Some(summary)
}

/// Summarises one certificate.
pub fn summarize(x: &X509Ref) -> CertSummary {
    let sans = x
        .subject_alt_names()
        .map(|names| {
            names
                .iter()
                .filter_map(|n| n.dnsname().map(str::to_owned).or_else(|| n.ipaddress().and_then(ip_text)))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    CertSummary {
        subject: name_text(x.subject_name()),
        issuer: name_text(x.issuer_name()),
        serial: x
            .serial_number()
            .to_bn()
            .ok()
            .and_then(|b| b.to_hex_str().ok())
            .map(|s| s.to_string())
            .unwrap_or_default(),
        sans,
        signature_algorithm: x
            .signature_algorithm()
            .object()
            .nid()
            .long_name()
            .unwrap_or("unknown")
            .to_owned(),
        fingerprint_sha256: x.digest(MessageDigest::sha256()).map(|d| hex(&d)).unwrap_or_default(),
        not_before: unix(x.not_before()),
        not_after: unix(x.not_after()),
    }
}

fn ip_text(b: &[u8]) -> Option<String> {
    match b.len() {
        4 => Some(std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3]).to_string()),
        16 => <[u8; 16]>::try_from(b).ok().map(|a| std::net::Ipv6Addr::from(a).to_string()),
        _ => None,
    }
}

#[allow(deprecated)] // as_utf8: NUL truncation is harmless for display
fn name_text(n: &X509NameRef) -> String {
    n.entries()
        .map(|e| {
            let key = match e.object().nid() {
                Nid::UNDEF => e.object().to_string(),
                nid => nid.short_name().unwrap_or("?").to_owned(),
            };
            let value = e.data().as_utf8().map(|s| s.to_string()).unwrap_or_default();
            format!("{key}={value}")
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unix(t: &Asn1TimeRef) -> i64 {
    Asn1Time::from_unix(0)
        .ok()
        .and_then(|epoch| epoch.diff(t).ok())
        .map_or(0, |d| i64::from(d.days) * 86_400 + i64::from(d.secs))
}
