//! The exporter-toolkit web configuration of the agent's own port (`--web.config.file`:
//! TLS, client certificates, basic-auth users, response headers) and the TLS server it
//! sets up.
//!
//! What it does not do: serve connections ([`super::port`]) or check credentials
//! ([`super::auth`]); HTTP/2 (Prometheus scrapes over HTTP/1.1;
//! `http_server_config.http2` is accepted and ignored).
//!
//! Certificates renewed on disk are picked up by the next connection; a renewal that
//! does not load keeps the previous pair and is logged.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::http::{HeaderName, HeaderValue};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;
use serde::Deserialize;

use crate::net::tls::read_config_file;

/// Why a web configuration file cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct WebConfigError {
    /// The web configuration file (or the file it names).
    pub path: String,
    /// What is wrong.
    pub message: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebConfig {
    #[serde(default)]
    tls_server_config: Option<RawTls>,
    #[serde(default)]
    http_server_config: Option<RawHttp>,
    #[serde(default)]
    basic_auth_users: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    #[serde(default)]
    client_auth_type: Option<String>,
    client_ca_file: Option<PathBuf>,
    #[serde(default)]
    client_allowed_sans: Vec<String>,
    min_version: Option<String>,
    max_version: Option<String>,
    #[serde(default)]
    cipher_suites: Vec<String>,
    #[serde(default)]
    curve_preferences: Vec<String>,
    #[serde(default)]
    prefer_server_cipher_suites: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    #[serde(default)]
    http2: Option<bool>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

/// Response headers exporter-toolkit lets an operator set.
const ALLOWED_HEADERS: [&str; 5] = [
    "Content-Security-Policy",
    "X-Frame-Options",
    "X-Content-Type-Options",
    "X-XSS-Protection",
    "Strict-Transport-Security",
];

/// A loaded web configuration.
#[derive(Clone)]
pub struct WebConfig {
    /// TLS, when configured.
    pub tls: Option<Arc<TlsServer>>,
    /// Extra response headers.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Basic-auth users and their bcrypt hashes; empty: no authentication.
    pub users: Arc<BTreeMap<String, String>>,
}

impl std::fmt::Debug for WebConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebConfig")
            .field("tls", &self.tls.is_some())
            .field("headers", &self.headers.len())
            .field("users", &self.users.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl WebConfig {
    /// Reads and checks the file: unknown keys, unreadable files, a key that does not
    /// match its certificate, a malformed hash are errors.
    pub fn load(path: &Path) -> Result<WebConfig, WebConfigError> {
        let err = |message: String| WebConfigError { path: path.display().to_string(), message };
        let bytes = read_config_file(path).map_err(err)?;
        let raw: RawWebConfig = if bytes.iter().all(u8::is_ascii_whitespace) {
            RawWebConfig { tls_server_config: None, http_server_config: None, basic_auth_users: None }
        } else {
            serde_yaml_ng::from_slice(&bytes).map_err(|e| err(e.to_string()))?
        };
        let mut headers = Vec::new();
        if let Some(http) = &raw.http_server_config {
            if http.http2 == Some(true) {
                tracing::info!("http_server_config.http2: HTTP/2 is not served; HTTP/1.1 is");
            }
            for (name, value) in &http.headers {
                let Some(allowed) = ALLOWED_HEADERS.iter().find(|h| h.eq_ignore_ascii_case(name)) else {
                    return Err(err(format!(
                        "http_server_config.headers: {name:?} cannot be set (allowed: {})",
                        ALLOWED_HEADERS.join(", ")
                    )));
                };
                let value = HeaderValue::from_str(value).map_err(|_| {
                    err(format!("http_server_config.headers.{allowed}: not a valid header value"))
                })?;
                headers.push((HeaderName::from_static(static_lower(allowed)), value));
            }
        }
        let users = raw.basic_auth_users.unwrap_or_default();
        for (user, hash) in &users {
            if user.contains(':') || user.is_empty() {
                return Err(err(format!("basic_auth_users: {user:?} is not a valid user name")));
            }
            hash.parse::<bcrypt::HashParts>()
                .map_err(|e| err(format!("basic_auth_users.{user}: not a bcrypt hash ({e})")))?;
        }
        let tls = match raw.tls_server_config {
            None => None,
            Some(t) => Some(Arc::new(TlsServer::new(t).map_err(|(p, m)| WebConfigError {
                path: p.map_or_else(|| path.display().to_string(), |p| p.display().to_string()),
                message: m,
            })?)),
        };
        Ok(WebConfig { tls, headers, users: Arc::new(users) })
    }
}

fn static_lower(h: &str) -> &'static str {
    match h {
        "Content-Security-Policy" => "content-security-policy",
        "X-Frame-Options" => "x-frame-options",
        "X-Content-Type-Options" => "x-content-type-options",
        "X-XSS-Protection" => "x-xss-protection",
        _ => "strict-transport-security",
    }
}

/// How client certificates are asked for (exporter-toolkit's `client_auth_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientAuth {
    None,
    VerifyIfGiven,
    RequireAndVerify,
}

/// The TLS side of the port: the settings, and the server configuration built from the
/// files, rebuilt when they change on disk.
pub struct TlsServer {
    raw: RawTls,
    current: Mutex<(Arc<ServerConfig>, Vec<Stamp>)>,
}

type SetupError = (Option<PathBuf>, String);

/// A file and its modification time when last loaded.
type Stamp = (PathBuf, Option<SystemTime>);

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

impl TlsServer {
    fn new(raw: RawTls) -> Result<TlsServer, SetupError> {
        // Times first: a change while building is then seen by the next connection.
        let files = tls_files(&raw).into_iter().map(|p| (p.clone(), mtime(&p))).collect();
        let config = build_server_config(&raw)?;
        Ok(TlsServer { raw, current: Mutex::new((Arc::new(config), files)) })
    }

    /// The server configuration for a new connection: rebuilt first when a file changed
    /// on disk; when the new files do not load, the previous configuration stays.
    pub fn config(&self) -> Arc<ServerConfig> {
        let mut cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let changed = cur.1.iter().any(|(p, t)| mtime(p) != *t);
        if changed {
            let files: Vec<Stamp> =
                tls_files(&self.raw).into_iter().map(|p| (p.clone(), mtime(&p))).collect();
            match build_server_config(&self.raw) {
                Ok(c) => {
                    tracing::info!("web TLS certificate reloaded from disk");
                    *cur = (Arc::new(c), files);
                }
                Err((p, m)) => {
                    tracing::error!(file = %p.map(|p| p.display().to_string()).unwrap_or_default(), error = %m,
                        "web TLS files changed but do not load; serving the previous certificate");
                    // Remember these times: retry only when the files change again.
                    cur.1 = files;
                }
            }
        }
        cur.0.clone()
    }

    pub(super) fn allowed_sans(&self) -> &[String] {
        &self.raw.client_allowed_sans
    }
}

fn tls_files(raw: &RawTls) -> Vec<PathBuf> {
    [&raw.cert_file, &raw.key_file, &raw.client_ca_file].into_iter().flatten().cloned().collect()
}

fn tls_version(v: &str) -> Result<&'static rustls::SupportedProtocolVersion, String> {
    match v {
        "TLS13" => Ok(&rustls::version::TLS13),
        "TLS12" => Ok(&rustls::version::TLS12),
        "TLS10" | "TLS11" => Err(format!("{v}: not offered on the agent's port (TLS12 and TLS13 are)")),
        _ => Err(format!("{v:?} is not one of TLS10, TLS11, TLS12, TLS13")),
    }
}

fn build_server_config(raw: &RawTls) -> Result<ServerConfig, SetupError> {
    let none = |m: String| (None, m);
    let (Some(cert_file), Some(key_file)) = (&raw.cert_file, &raw.key_file) else {
        return Err(none("tls_server_config: cert_file and key_file are required".into()));
    };
    let at = |p: &Path| {
        let p = p.to_path_buf();
        move |m: String| (Some(p.clone()), m)
    };
    let cert_pem = read_config_file(cert_file).map_err(at(cert_file))?;
    let key_pem = read_config_file(key_file).map_err(at(key_file))?;
    crate::net::tls::warn_if_readable_by_others(key_file);
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| at(cert_file)(e.to_string()))?;
    if chain.is_empty() {
        return Err(at(cert_file)("no PEM certificate in the file".into()));
    }
    // The key's content never reaches a message.
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| at(key_file)(e.to_string()))?;
    let x509 = openssl::x509::X509::from_der(chain[0].as_ref()).map_err(|e| at(cert_file)(e.to_string()))?;
    let pkey = openssl::pkey::PKey::private_key_from_der(key.secret_der())
        .map_err(|_| at(key_file)("the private key cannot be read".into()))?;
    let matches = x509.public_key().map(|p| p.public_eq(&pkey)).unwrap_or(false);
    if !matches {
        return Err(at(key_file)(format!(
            "the key does not match the certificate in {}",
            cert_file.display()
        )));
    }

    let mut provider = rustls::crypto::ring::default_provider();
    if !raw.cipher_suites.is_empty() {
        let mut chosen = Vec::new();
        for name in &raw.cipher_suites {
            let suite =
                provider.cipher_suites.iter().find(|s| format!("{:?}", s.suite()) == *name).ok_or_else(
                    || none(format!("tls_server_config.cipher_suites: {name} is not one this build offers")),
                )?;
            chosen.push(*suite);
        }
        // Go's crypto/tls ignores the list for TLS 1.3; so does this: its suites stay.
        chosen.extend(
            provider.cipher_suites.iter().filter(|s| s.version() == &rustls::version::TLS13).copied(),
        );
        provider.cipher_suites = chosen;
    }
    if !raw.curve_preferences.is_empty() {
        let mut groups = Vec::new();
        for c in &raw.curve_preferences {
            let want = match c.as_str() {
                "X25519" => rustls::NamedGroup::X25519,
                "CurveP256" => rustls::NamedGroup::secp256r1,
                "CurveP384" => rustls::NamedGroup::secp384r1,
                other => {
                    return Err(none(format!(
                        "tls_server_config.curve_preferences: {other} is not offered (X25519, CurveP256, CurveP384 are)"
                    )))
                }
            };
            if let Some(g) = provider.kx_groups.iter().find(|g| g.name() == want) {
                groups.push(*g);
            }
        }
        provider.kx_groups = groups;
    }
    let min = tls_version(raw.min_version.as_deref().unwrap_or("TLS12"))
        .map_err(|m| none(format!("tls_server_config.min_version: {m}")))?;
    let max = tls_version(raw.max_version.as_deref().unwrap_or("TLS13"))
        .map_err(|m| none(format!("tls_server_config.max_version: {m}")))?;
    let versions: Vec<&'static rustls::SupportedProtocolVersion> =
        [&rustls::version::TLS12, &rustls::version::TLS13]
            .into_iter()
            .filter(|v| {
                let n = |v: &rustls::SupportedProtocolVersion| u16::from(v.version);
                n(v) >= n(min) && n(v) <= n(max)
            })
            .collect();
    if versions.is_empty() {
        return Err(none("tls_server_config: min_version is above max_version".into()));
    }
    let _ = raw.prefer_server_cipher_suites; // rustls always prefers the server's order
    let builder = ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&versions)
        .map_err(|e| none(format!("tls_server_config: {e}")))?;
    let auth = match raw.client_auth_type.as_deref().unwrap_or("NoClientCert") {
        "NoClientCert" => ClientAuth::None,
        "VerifyClientCertIfGiven" => ClientAuth::VerifyIfGiven,
        "RequireAndVerifyClientCert" => ClientAuth::RequireAndVerify,
        t @ ("RequestClientCert" | "RequireAnyClientCert") => {
            return Err(none(format!(
                "tls_server_config.client_auth_type: {t} accepts unverified certificates and is not offered; \
                 use VerifyClientCertIfGiven or RequireAndVerifyClientCert"
            )))
        }
        other => {
            return Err(none(format!("tls_server_config.client_auth_type: {other:?} is not a known type")))
        }
    };
    let builder = if auth == ClientAuth::None {
        if raw.client_ca_file.is_some() {
            return Err(none("tls_server_config.client_ca_file: set client_auth_type to use it".into()));
        }
        if !raw.client_allowed_sans.is_empty() {
            return Err(none(
                "tls_server_config.client_allowed_sans: needs client_auth_type RequireAndVerifyClientCert \
                 (without a client certificate every connection would be refused)"
                    .into(),
            ));
        }
        builder.with_no_client_auth()
    } else {
        let Some(ca_file) = &raw.client_ca_file else {
            return Err(none("tls_server_config.client_ca_file: required by client_auth_type".into()));
        };
        let pem = read_config_file(ca_file).map_err(at(ca_file))?;
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(&pem) {
            let c = c.map_err(|e| at(ca_file)(e.to_string()))?;
            roots.add(c).map_err(|e| at(ca_file)(e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(at(ca_file)("no PEM certificate in the file".into()));
        }
        let provider = builder.crypto_provider().clone();
        let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
        let v = if auth == ClientAuth::VerifyIfGiven { v.allow_unauthenticated() } else { v };
        builder.with_client_cert_verifier(v.build().map_err(|e| at(ca_file)(e.to_string()))?)
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| at(cert_file)(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Whether the client's certificate carries one of `allowed` among its SANs (DNS, IP,
/// e-mail, URI), as exporter-toolkit checks `client_allowed_sans`.
pub(super) fn san_allowed(cert: &CertificateDer<'_>, allowed: &[String]) -> bool {
    let Ok(x) = openssl::x509::X509::from_der(cert.as_ref()) else { return false };
    let Some(names) = x.subject_alt_names() else { return false };
    names.iter().any(|n| {
        let v = n
            .dnsname()
            .map(str::to_owned)
            .or_else(|| n.email().map(str::to_owned))
            .or_else(|| n.uri().map(str::to_owned))
            .or_else(|| {
                n.ipaddress().and_then(|b| match b.len() {
                    4 => Some(std::net::IpAddr::from(<[u8; 4]>::try_from(b).ok()?).to_string()),
                    16 => Some(std::net::IpAddr::from(<[u8; 16]>::try_from(b).ok()?).to_string()),
                    _ => None,
                })
            });
        v.is_some_and(|v| allowed.contains(&v))
    })
}
