//! What a TLS handshake showed: the negotiated version and the peer's chain. Facts a
//! failure carries (a chain that did not verify is reported with its failure) as much
//! as a passing outcome does; the engines that find them live in [`crate::net::tls`].

use std::sync::Arc;

/// Lowest protocol version a check accepts; below 1.2 selects the OpenSSL engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    /// TLS 1.0 (OCS 2007 R2).
    V1_0,
    /// TLS 1.1.
    V1_1,
    /// TLS 1.2 (default).
    V1_2,
    /// TLS 1.3 only.
    V1_3,
}

impl TlsVersion {
    /// Parses `"1.0"`, `"1.1"`, `"1.2"`, `"1.3"`.
    pub fn parse(s: &str) -> Option<TlsVersion> {
        Some(match s {
            "1.0" => TlsVersion::V1_0,
            "1.1" => TlsVersion::V1_1,
            "1.2" => TlsVersion::V1_2,
            "1.3" => TlsVersion::V1_3,
            _ => return None,
        })
    }

    /// `"TLS 1.0"` … `"TLS 1.3"`.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsVersion::V1_0 => "TLS 1.0",
            TlsVersion::V1_1 => "TLS 1.1",
            TlsVersion::V1_2 => "TLS 1.2",
            TlsVersion::V1_3 => "TLS 1.3",
        }
    }

    /// Whether this version needs the OpenSSL engine.
    pub fn is_legacy(self) -> bool {
        self < TlsVersion::V1_2
    }
}

/// One certificate of a peer's chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSummary {
    /// Subject, e.g. `CN=lyncpool.contoso.com,O=Contoso`.
    pub subject: String,
    /// Issuer, same form.
    pub issuer: String,
    /// Serial number, upper-case hex.
    pub serial: String,
    /// Subject alternative names (DNS names and IP addresses), comma-separated.
    pub sans: String,
    /// Signature algorithm, e.g. `sha1WithRSAEncryption`, `ecdsa-with-SHA256`.
    pub signature_algorithm: String,
    /// SHA-256 fingerprint of the DER, lower-case hex.
    pub fingerprint_sha256: String,
    /// NotBefore, unix seconds.
    pub not_before: i64,
    /// NotAfter, unix seconds.
    pub not_after: i64,
}

/// What a handshake showed, whether or not verification passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    /// Negotiated version; `None` when the handshake failed before one was agreed.
    pub version: Option<TlsVersion>,
    /// The peer's chain as sent, leaf first.
    pub chain: Vec<Arc<CertSummary>>,
}

impl TlsInfo {
    /// The leaf certificate.
    pub fn leaf(&self) -> Option<&CertSummary> {
        self.chain.first().map(|c| &**c)
    }

    /// The earliest NotAfter of the chain (unix seconds).
    pub fn earliest_not_after(&self) -> Option<i64> {
        self.chain.iter().map(|c| c.not_after).min()
    }
}
