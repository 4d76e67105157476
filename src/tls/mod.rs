//! The TLS layer every TLS-speaking check uses: one interface, two engines.
//!
//! - **rustls** (ring provider, set per configuration, not process-wide) for TLS 1.2 and
//!   1.3: the default.
//! - **OpenSSL** at security level 0 when a pool or check sets `tls_min_version` to
//!   `"1.0"` or `"1.1"`: the legacy pool of a coexistence period (OCS 2007 R2, early Lync
//!   2013) speaks TLS 1.0 with SHA-1-signed certificates, which rustls will never do.
//!   Chain and name are still verified unless the check sets `tls_skip_verify`.
//!
//! Both engines send SNI and check the certificate against the name given (the pool
//! FQDN, even when connecting to one member address), trust `[tls] ca_file` and the
//! system roots, and present `[tls] client_cert`/`client_key` when configured.
//!
//! The peer's chain is recorded *before* it is verified, so an expired, untrusted or
//! misnamed certificate is still reported in detail ([`TlsInfo`]). Every connection is a
//! full handshake: session resumption is off, so each probe sees the certificate.

pub mod cert;

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode, SslVersion};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, Resumption, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

pub use cert::CertSummary;

use crate::failure::FailureReason;

/// The `[tls]` table: trust anchors and client identity for TLS-speaking checks.
#[derive(Debug, Clone, Default)]
pub struct TlsConfig {
    /// PEM file of enterprise trust anchors (default: system roots).
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate for mutual TLS.
    pub client_cert: Option<PathBuf>,
    /// PEM private key of `client_cert`.
    pub client_key: Option<PathBuf>,
}

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

/// Per-check TLS options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsOptions {
    /// Lowest version accepted.
    pub min_version: TlsVersion,
    /// Skip chain and name verification (the chain is still recorded and reported).
    pub skip_verify: bool,
    /// Fail with `cert_expiring` when the leaf expires within this many days.
    pub min_days_valid: Option<u32>,
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

/// A failed handshake or verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFailure {
    /// The reason label.
    pub reason: FailureReason,
    /// Human-readable detail.
    pub detail: String,
    /// What was seen of the peer before the failure.
    pub info: Option<TlsInfo>,
}

/// Why the TLS material of `[tls]` could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {path}: {message}")]
pub struct TlsSetupError {
    key: &'static str,
    path: String,
    message: String,
}

/// Both engines, configured once per configuration.
pub struct TlsClient {
    provider: Arc<CryptoProvider>,
    webpki: Arc<WebPkiServerVerifier>,
    identity: Option<Arc<CertifiedKey>>,
    openssl: SslConnector,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient").field("client_identity", &self.identity.is_some()).finish_non_exhaustive()
    }
}

fn setup_err(key: &'static str, path: &Path, message: impl std::fmt::Display) -> TlsSetupError {
    TlsSetupError { key, path: path.display().to_string(), message: message.to_string() }
}

impl TlsClient {
    /// Loads trust anchors (system roots plus `ca_file`) and the client identity.
    pub fn new(cfg: &TlsConfig) -> Result<TlsClient, TlsSetupError> {
        let mut provider = rustls::crypto::ring::default_provider();
        // AES-128-GCM first: a probe needs no 256-bit bulk cipher, and the SHA-384
        // transcript of the AES-256 suites cost about 4 % of a probe's CPU.
        provider.cipher_suites.sort_by_key(|cs| {
            use rustls::CipherSuite as C;
            !matches!(
                cs.suite(),
                C::TLS13_AES_128_GCM_SHA256
                    | C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                    | C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
            )
        });
        let provider = Arc::new(provider);
        let mut roots = RootCertStore::empty();
        // A missing or unreadable system store is not fatal when an enterprise CA is given.
        let native = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(native.certs);
        let files = Files::read(cfg)?;
        if let Some((path, pem)) = &files.ca {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
                .collect::<Result<_, _>>()
                .map_err(|e| setup_err("tls.ca_file", path, e))?;
            if certs.is_empty() {
                return Err(setup_err("tls.ca_file", path, "no PEM certificate in the file"));
            }
            for c in certs {
                roots.add(c).map_err(|e| setup_err("tls.ca_file", path, e))?;
            }
        }
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| setup_err("tls.ca_file", Path::new("(trust store)"), e))?;
        let identity = match &files.identity {
            Some(((cert, cert_pem), (key, key_pem))) => {
                let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
                    .collect::<Result<_, _>>()
                    .map_err(|e| setup_err("tls.client_cert", cert, e))?;
                if chain.is_empty() {
                    return Err(setup_err("tls.client_cert", cert, "no PEM certificate in the file"));
                }
                // The key's text never reaches a message: only the parser's verdict.
                let der = PrivateKeyDer::from_pem_slice(key_pem)
                    .map_err(|e| setup_err("tls.client_key", key, e))?;
                let signer = provider
                    .key_provider
                    .load_private_key(der)
                    .map_err(|e| setup_err("tls.client_key", key, e))?;
                Some(Arc::new(CertifiedKey::new(chain, signer)))
            }
            None => None,
        };
        let openssl = legacy_connector(&files).map_err(|e| setup_err("tls", Path::new("(OpenSSL)"), e))?;
        Ok(TlsClient { provider, webpki, identity, openssl })
    }

    /// Handshakes over `tcp` with SNI and certificate name `name`, then verifies.
    pub async fn handshake(
        &self,
        tcp: TcpStream,
        name: &str,
        opts: &TlsOptions,
    ) -> Result<(TlsStream, TlsInfo), TlsFailure> {
        crate::trace::step("tls", || {
            format!(
                "handshake with SNI {name} ({} engine, lowest version {}{})",
                if opts.min_version.is_legacy() { "OpenSSL" } else { "rustls" },
                opts.min_version.as_str(),
                if opts.skip_verify { ", verification off" } else { "" }
            )
        });
        let t = std::time::Instant::now();
        let result = if opts.min_version.is_legacy() {
            self.handshake_openssl(tcp, name, opts).await
        } else {
            self.handshake_rustls(tcp, name, opts).await
        };
        crate::trace::step("tls", || {
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            match &result {
                Ok((s, info)) => format!(
                    "{} {} in {ms:.3} ms; verification {}\n{}",
                    info.version.map_or("(unknown version)", TlsVersion::as_str),
                    s.cipher(),
                    if opts.skip_verify { "skipped" } else { "passed (chain trusted, name matches)" },
                    describe_chain(&info.chain)
                ),
                Err(f) => format!(
                    "failed after {ms:.3} ms: {}: {}\n{}",
                    f.reason.as_str(),
                    f.detail,
                    f.info.as_ref().map_or("no certificate received".into(), |i| describe_chain(&i.chain))
                ),
            }
        });
        let (stream, info) = result?;
        if let Some(days) = opts.min_days_valid {
            let now = unix_now();
            if let Some(leaf) = info.leaf() {
                let left = leaf.not_after - now;
                if left < i64::from(days) * 86_400 {
                    return Err(TlsFailure {
                        reason: FailureReason::CertExpiring,
                        detail: format!(
                            "certificate {} expires in {:.1} days (min_days_valid = {days})",
                            leaf.subject,
                            left as f64 / 86_400.0
                        ),
                        info: Some(info),
                    });
                }
            }
        }
        Ok((stream, info))
    }

    async fn handshake_rustls(
        &self,
        tcp: TcpStream,
        name: &str,
        opts: &TlsOptions,
    ) -> Result<(TlsStream, TlsInfo), TlsFailure> {
        let verifier = Arc::new(Capturing {
            inner: self.webpki.clone(),
            chain: Mutex::new(Vec::new()),
            skip_verify: opts.skip_verify,
        });
        let versions: &[&'static rustls::SupportedProtocolVersion] = if opts.min_version == TlsVersion::V1_3 {
            &[&rustls::version::TLS13]
        } else {
            &[&rustls::version::TLS13, &rustls::version::TLS12]
        };
        let fail = |reason, detail: String| TlsFailure { reason, detail, info: None };
        let builder = ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(versions)
            .map_err(|e| fail(FailureReason::TlsHandshake, e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone());
        let mut config = match &self.identity {
            Some(id) => builder.with_client_cert_resolver(Arc::new(FixedIdentity(id.clone()))),
            None => builder.with_no_client_auth(),
        };
        config.resumption = Resumption::disabled();
        let server_name = ServerName::try_from(name.to_owned())
            .map_err(|e| fail(FailureReason::TlsHandshake, format!("{name:?}: {e}")))?;
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let result = connector.connect(server_name, tcp).await;
        let chain = cert::summarize_der(&verifier.chain.lock().unwrap_or_else(|e| e.into_inner()));
        match result {
            Ok(s) => {
                let version = match s.get_ref().1.protocol_version() {
                    Some(rustls::ProtocolVersion::TLSv1_3) => Some(TlsVersion::V1_3),
                    Some(rustls::ProtocolVersion::TLSv1_2) => Some(TlsVersion::V1_2),
                    _ => None,
                };
                Ok((TlsStream::Rustls(Box::new(s)), TlsInfo { version, chain }))
            }
            Err(e) => {
                let (reason, detail) = classify_rustls(&e);
                let info = (!chain.is_empty()).then_some(TlsInfo { version: None, chain });
                Err(TlsFailure { reason, detail, info })
            }
        }
    }

    async fn handshake_openssl(
        &self,
        tcp: TcpStream,
        name: &str,
        opts: &TlsOptions,
    ) -> Result<(TlsStream, TlsInfo), TlsFailure> {
        let fail = |detail: String| TlsFailure { reason: FailureReason::TlsHandshake, detail, info: None };
        let mut cfg = self.openssl.configure().map_err(|e| fail(e.to_string()))?;
        let errors: Arc<Mutex<Vec<VerifyError>>> = Arc::new(Mutex::new(Vec::new()));
        let seen = errors.clone();
        // Accept whatever the peer sends so that the handshake completes and the chain
        // can be recorded; the errors noted here decide the outcome afterwards.
        cfg.set_verify_callback(SslVerifyMode::PEER, move |ok, ctx| {
            if !ok {
                let err = ctx.error();
                seen.lock().unwrap_or_else(|e| e.into_inner()).push((
                    err.as_raw(),
                    err.error_string(),
                    ctx.error_depth(),
                ));
            }
            true
        });
        let min = match opts.min_version {
            TlsVersion::V1_0 => SslVersion::TLS1,
            TlsVersion::V1_1 => SslVersion::TLS1_1,
            TlsVersion::V1_2 => SslVersion::TLS1_2,
            TlsVersion::V1_3 => SslVersion::TLS1_3,
        };
        cfg.set_min_proto_version(Some(min)).map_err(|e| fail(e.to_string()))?;
        let ssl = cfg.into_ssl(name).map_err(|e| fail(e.to_string()))?;
        let mut stream = tokio_openssl::SslStream::new(ssl, tcp).map_err(|e| fail(e.to_string()))?;
        let result = Pin::new(&mut stream).connect().await;
        let chain = stream.ssl().peer_cert_chain().map(cert::summarize_stack).unwrap_or_default();
        let version = openssl_version(stream.ssl());
        if let Err(e) = result {
            let (reason, detail) = classify_openssl(&e);
            let info = (!chain.is_empty()).then_some(TlsInfo { version: None, chain });
            return Err(TlsFailure { reason, detail, info });
        }
        let info = TlsInfo { version, chain };
        let first = errors.lock().unwrap_or_else(|e| e.into_inner()).first().copied();
        if let (Some((code, msg, depth)), false) = (first, opts.skip_verify) {
            let (reason, what) = classify_x509(code);
            return Err(TlsFailure {
                reason,
                detail: format!("{what}: {msg} (certificate at depth {depth})"),
                info: Some(info),
            });
        }
        Ok((TlsStream::OpenSsl(Box::new(stream)), info))
    }
}

/// The chain as received, one certificate per line group, for traces.
fn describe_chain(chain: &[Arc<CertSummary>]) -> String {
    let mut s = format!("chain as received: {} certificates", chain.len());
    for (i, c) in chain.iter().enumerate() {
        s.push_str(&format!(
            "\n[{i}] subject {}\n    issuer {}\n    names {}\n    valid {} to {}, {}, sha256 {}",
            c.subject,
            c.issuer,
            if c.sans.is_empty() { "-" } else { &c.sans },
            unix_date(c.not_before),
            unix_date(c.not_after),
            c.signature_algorithm,
            c.fingerprint_sha256
        ));
    }
    s
}

fn unix_date(t: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(t.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// An OpenSSL verification error: X509_V_ERR code, its text, depth in the chain.
type VerifyError = (i32, &'static str, u32);

fn legacy_connector(files: &Files) -> Result<SslConnector, openssl::error::ErrorStack> {
    let mut b = SslConnector::builder(SslMethod::tls_client())?;
    // Security level 0 admits TLS 1.0/1.1, SHA-1 signatures and small keys: what the
    // legacy pool offers. Only checks that ask for TLS < 1.2 use this connector.
    b.set_security_level(0);
    b.set_cipher_list("ALL:@SECLEVEL=0")?;
    b.set_min_proto_version(Some(SslVersion::TLS1))?;
    if let Some((_, pem)) = &files.ca {
        for c in openssl::x509::X509::stack_from_pem(pem)? {
            b.cert_store_mut().add_cert(c)?;
        }
    }
    if let Some(((_, cert_pem), (_, key_pem))) = &files.identity {
        let mut chain = openssl::x509::X509::stack_from_pem(cert_pem)?.into_iter();
        if let Some(leaf) = chain.next() {
            b.set_certificate(&leaf)?;
        }
        for c in chain {
            b.add_extra_chain_cert(c)?;
        }
        let key = openssl::pkey::PKey::private_key_from_pem(key_pem)?;
        b.set_private_key(&key)?;
        b.check_private_key()?;
    }
    b.set_session_cache_mode(openssl::ssl::SslSessionCacheMode::OFF);
    Ok(b.build())
}

/// Largest file the configuration may name (certificates, keys): a CA bundle is a few
/// hundred KiB; anything larger is a mistake (`/dev/zero`, a log file).
pub const MAX_FILE: u64 = 1 << 20;

/// Reads a file the configuration names: a regular file of at most [`MAX_FILE`] bytes,
/// read once. The error never contains the file's content.
pub fn read_config_file(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if meta.len() > MAX_FILE {
        return Err(format!("{} bytes: larger than the {MAX_FILE}-byte limit", meta.len()));
    }
    let mut buf = Vec::with_capacity(meta.len() as usize);
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_FILE + 1).read_to_end(&mut buf))
        .map_err(|e| e.to_string())?;
    if buf.len() as u64 > MAX_FILE {
        return Err(format!("grew past the {MAX_FILE}-byte limit while being read"));
    }
    Ok(buf)
}

/// A file's path (for messages) and content.
type File = (std::path::PathBuf, Vec<u8>);

/// The TLS files of the configuration, each read once and shared by both engines.
struct Files {
    ca: Option<File>,
    /// Client certificate chain and key.
    identity: Option<(File, File)>,
}

impl Files {
    fn read(cfg: &TlsConfig) -> Result<Files, TlsSetupError> {
        let read = |key: &'static str, p: &std::path::PathBuf| {
            read_config_file(p).map(|b| (p.clone(), b)).map_err(|e| setup_err(key, p, e))
        };
        let ca = cfg.ca_file.as_ref().map(|p| read("tls.ca_file", p)).transpose()?;
        let identity = match (&cfg.client_cert, &cfg.client_key) {
            (Some(c), Some(k)) => {
                let key = read("tls.client_key", k)?;
                warn_if_readable_by_others(k);
                Some((read("tls.client_cert", c)?, key))
            }
            _ => None,
        };
        Ok(Files { ca, identity })
    }
}

/// Logs a warning when a secret (a private key, a password file) can be read by the
/// file's group or by anyone.
pub fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = std::fs::metadata(path) {
        let mode = m.permissions().mode();
        if mode & 0o044 != 0 {
            tracing::warn!(file = %path.display(), mode = format!("{:o}", mode & 0o777),
                "secret file is readable by its group or by others; chmod 600 it");
        }
    }
}

/// The version OpenSSL negotiated.
fn openssl_version(ssl: &openssl::ssl::SslRef) -> Option<TlsVersion> {
    match ssl.version2()? {
        SslVersion::TLS1 => Some(TlsVersion::V1_0),
        SslVersion::TLS1_1 => Some(TlsVersion::V1_1),
        SslVersion::TLS1_2 => Some(TlsVersion::V1_2),
        SslVersion::TLS1_3 => Some(TlsVersion::V1_3),
        _ => None,
    }
}

/// OpenSSL's certificate verification codes (`X509_V_ERR_*`) that have a reason of
/// their own; every other code is `cert_untrusted`.
const X509_ERRORS: &[(i32, FailureReason, &str)] = &[
    (openssl_sys::X509_V_ERR_CERT_HAS_EXPIRED, FailureReason::CertExpired, "certificate expired"),
    (openssl_sys::X509_V_ERR_CERT_NOT_YET_VALID, FailureReason::CertNotYetValid, "certificate not yet valid"),
    (openssl_sys::X509_V_ERR_HOSTNAME_MISMATCH, FailureReason::CertNameMismatch, "certificate name mismatch"),
];

/// Maps an X509_V_ERR_* code to a reason and a short phrase.
fn classify_x509(code: i32) -> (FailureReason, &'static str) {
    X509_ERRORS
        .iter()
        .find(|(c, _, _)| *c == code)
        .map_or((FailureReason::CertUntrusted, "certificate untrusted"), |(_, r, what)| (*r, what))
}

/// OpenSSL's SSL-library reason codes (`SSL_R_*` of `<openssl/sslerr.h>`) that mean
/// the peer and we share no protocol version: `tls_version`. Every other handshake
/// error is `tls_handshake`.
const SSL_VERSION_ERRORS: &[i32] = &[
    191,  // SSL_R_NO_PROTOCOLS_AVAILABLE
    258,  // SSL_R_UNSUPPORTED_PROTOCOL
    259,  // SSL_R_UNSUPPORTED_SSL_VERSION
    267,  // SSL_R_WRONG_VERSION_NUMBER
    396,  // SSL_R_VERSION_TOO_LOW
    1070, // SSL_R_TLSV1_ALERT_PROTOCOL_VERSION
];

/// `ERR_LIB_SSL` of `<openssl/err.h>`.
const ERR_LIB_SSL: i32 = 20;

fn classify_openssl(e: &openssl::ssl::Error) -> (FailureReason, String) {
    let version = e.ssl_error().is_some_and(|stack| {
        stack
            .errors()
            .iter()
            .any(|x| x.library_code() == ERR_LIB_SSL && SSL_VERSION_ERRORS.contains(&x.reason_code()))
    });
    let reason = if version { FailureReason::TlsVersion } else { FailureReason::TlsHandshake };
    // The error's text already includes the OpenSSL error stack when there is one.
    (reason, e.to_string())
}

/// The reason for an I/O error on an established connection: a TLS alert from the peer
/// (e.g. a TLS 1.3 server rejecting the client certificate after the handshake) is a
/// handshake failure, anything else plain I/O.
pub fn io_reason(e: &io::Error) -> FailureReason {
    let alert = matches!(rustls_error(e), Some(rustls::Error::AlertReceived(_)))
        || e.to_string().to_ascii_lowercase().contains("alert");
    if alert {
        FailureReason::TlsHandshake
    } else {
        FailureReason::Io
    }
}

/// Finds the rustls error inside an I/O error from the handshake.
fn rustls_error(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>())
}

fn classify_rustls(e: &io::Error) -> (FailureReason, String) {
    use rustls::Error as E;
    let reason = match rustls_error(e) {
        Some(E::InvalidCertificate(c)) => match c {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => FailureReason::CertExpired,
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                FailureReason::CertNotYetValid
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                FailureReason::CertNameMismatch
            }
            _ => FailureReason::CertUntrusted,
        },
        Some(E::PeerIncompatible(_)) | Some(E::AlertReceived(rustls::AlertDescription::ProtocolVersion)) => {
            FailureReason::TlsVersion
        }
        _ => FailureReason::TlsHandshake,
    };
    (reason, e.to_string())
}

/// Wraps the webpki verifier to keep a copy of the chain the peer sent.
#[derive(Debug)]
struct Capturing {
    inner: Arc<WebPkiServerVerifier>,
    chain: Mutex<Vec<CertificateDer<'static>>>,
    skip_verify: bool,
}

impl ServerCertVerifier for Capturing {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.chain.lock().unwrap_or_else(|e| e.into_inner()) =
            std::iter::once(end_entity).chain(intermediates).map(|c| c.clone().into_owned()).collect();
        if self.skip_verify {
            return Ok(ServerCertVerified::assertion());
        }
        self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Always presents the configured client certificate.
#[derive(Debug)]
struct FixedIdentity(Arc<CertifiedKey>);

impl ResolvesClientCert for FixedIdentity {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// A TLS connection from either engine.
#[derive(Debug)]
pub enum TlsStream {
    /// rustls.
    Rustls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    /// OpenSSL.
    OpenSsl(Box<tokio_openssl::SslStream<TcpStream>>),
}

impl AsyncRead for TlsStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            TlsStream::Rustls(s) => Pin::new(&mut **s).poll_read(cx, buf),
            TlsStream::OpenSsl(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for TlsStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            TlsStream::Rustls(s) => Pin::new(&mut **s).poll_write(cx, buf),
            TlsStream::OpenSsl(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            TlsStream::Rustls(s) => Pin::new(&mut **s).poll_flush(cx),
            TlsStream::OpenSsl(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            TlsStream::Rustls(s) => Pin::new(&mut **s).poll_shutdown(cx),
            TlsStream::OpenSsl(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }
}

impl TlsStream {
    /// The negotiated cipher suite's name.
    pub fn cipher(&self) -> String {
        match self {
            TlsStream::Rustls(s) => s
                .get_ref()
                .1
                .negotiated_cipher_suite()
                .map_or_else(|| "(no cipher)".into(), |c| format!("{:?}", c.suite())),
            TlsStream::OpenSsl(s) => {
                s.ssl().current_cipher().map_or_else(|| "(no cipher)".into(), |c| c.name().to_owned())
            }
        }
    }

    /// The local address of the underlying TCP connection.
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        match self {
            TlsStream::Rustls(s) => s.get_ref().0.local_addr().ok(),
            TlsStream::OpenSsl(s) => s.get_ref().local_addr().ok(),
        }
    }

    /// Closes the connection and waits briefly for the peer's last word.
    ///
    /// In TLS 1.3 the client's handshake ends before the server has checked the client
    /// certificate: a server that requires one and got none says so with an alert
    /// *after* the handshake. Sending close_notify and reading until the peer closes (at
    /// most `grace`) surfaces that alert; a peer that simply closes, or stays silent, passes.
    pub async fn close_and_confirm(mut self, grace: Duration) -> Result<(), String> {
        let _ = tokio::time::timeout(grace, self.shutdown()).await;
        let mut buf = [0u8; 4096];
        let mut total = 0usize;
        let read = tokio::time::timeout(grace, async {
            loop {
                match self.read(&mut buf).await {
                    Ok(0) => return Ok(()),
                    // Bounded: a peer that streams data is not waited for.
                    Ok(n) if total + n > 64 * 1024 => return Ok(()),
                    Ok(n) => total += n,
                    Err(e) => {
                        return match rustls_error(&e) {
                            Some(rustls::Error::AlertReceived(a)) => {
                                Err(format!("peer sent alert {a:?} after the handshake"))
                            }
                            _ if e.kind() == io::ErrorKind::ConnectionReset => Ok(()),
                            _ if e.to_string().to_ascii_lowercase().contains("alert") => Err(e.to_string()),
                            _ => Ok(()),
                        };
                    }
                }
            }
        })
        .await;
        read.unwrap_or(Ok(()))
    }
}
