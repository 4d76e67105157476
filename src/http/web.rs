//! The agent's own HTTP port: the exporter-toolkit web configuration
//! (`--web.config.file`: TLS, client certificates, basic auth, response headers), and the
//! limits that keep the port from taking what the probes need.
//!
//! What it does not do: routing and the endpoints themselves ([`crate::http::routes`]), or
//! HTTP/2 (Prometheus scrapes over HTTP/1.1; `http_server_config.http2` is accepted and
//! ignored).
//!
//! - **Bounded serving**: at most [`Limits::connections`] connections at once and
//!   [`PER_CLIENT`] from one address (more are closed at once, never queued), request
//!   headers within [`HEADER_TIMEOUT`], TLS
//!   handshakes within [`HANDSHAKE_TIMEOUT`], a connection lives at most
//!   [`CONNECTION_LIFETIME`], request bodies are refused beyond [`MAX_BODY`].
//! - **Certificates renewed on disk** are picked up by the next connection; a renewal that
//!   does not load keeps the previous pair and is logged.
//! - **Basic auth** checks bcrypt hashes on the blocking pool, at most two at a time;
//!   a verified `(user, password)` is remembered for [`AUTH_CACHE_TTL`] (at most
//!   [`AUTH_CACHE_MAX`] entries, keyed by a SHA-256 of user, password and hash, never
//!   the password itself), so a scrape every 15 s does not pay a bcrypt round each time.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::body::Body;
use axum::http::{header, HeaderName, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::net::tls::read_config_file;

/// Time a client has to send a request's headers (also while a kept-alive connection
/// waits for its next request).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a client has to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest life of one connection; a scraper reconnects.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(300);
/// Largest request header block accepted (hyper's read buffer is capped near it too).
pub const MAX_HEADERS: usize = 16 * 1024;
/// Largest request body accepted (only `POST /-/reload` takes one, and ignores it).
pub const MAX_BODY: usize = 16 * 1024;
/// How long a verified basic-auth credential is remembered.
pub const AUTH_CACHE_TTL: Duration = Duration::from_secs(60);
/// Most credentials remembered at once.
pub const AUTH_CACHE_MAX: usize = 256;

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

/// What [`guard`] needs: the authenticator and the extra response headers.
pub type GuardState = (Auth, Arc<Vec<(HeaderName, HeaderValue)>>);

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

    fn allowed_sans(&self) -> &[String] {
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
fn san_allowed(cert: &CertificateDer<'_>, allowed: &[String]) -> bool {
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

/// Limits of the port, from the descriptor budget.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once.
    pub connections: usize,
    /// Connections served at once from one client address, so that one host's slow or
    /// idle connections cannot lock out Prometheus and the health checks.
    pub per_client: usize,
}

impl Limits {
    /// Raises the soft descriptor limit to the hard one, then leaves `probes + 64`
    /// descriptors to the probes (`agent.concurrency`) and the rest, at most 1,024 and
    /// at least 16, to HTTP connections. Logs a warning when the budget is tight.
    pub fn from_descriptors(probes: usize) -> Limits {
        let nofile = raise_nofile();
        let reserved = probes.saturating_add(64);
        let left = nofile.saturating_sub(reserved);
        let connections = left.clamp(16, 1024);
        if left < 16 {
            tracing::warn!(nofile, concurrency = probes,
                "the descriptor limit leaves almost nothing beside agent.concurrency probes; raise LimitNOFILE or lower agent.concurrency");
        }
        Limits { connections, per_client: PER_CLIENT.min(connections) }
    }
}

/// Default cap of connections from one client address.
pub const PER_CLIENT: usize = 64;

/// The soft RLIMIT_NOFILE after raising it to the hard limit.
fn raise_nofile() -> usize {
    // SAFETY: getrlimit/setrlimit write only the struct passed.
    unsafe {
        let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return 1024;
        }
        if r.rlim_cur < r.rlim_max {
            let raised = libc::rlimit { rlim_cur: r.rlim_max, rlim_max: r.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                r.rlim_cur = r.rlim_max;
            }
        }
        usize::try_from(r.rlim_cur).unwrap_or(usize::MAX)
    }
}

/// Serves `router` on `listener` until `shutdown`, with TLS and limits from `web`.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    web: Option<WebConfig>,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.connections));
    let per_client: Arc<Mutex<HashMap<std::net::IpAddr, usize>>> = Arc::new(Mutex::new(HashMap::new()));
    let conns = Connections::default();
    let tls = web.as_ref().and_then(|w| w.tls.clone());
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Some(client) = ClientSlot::take(&per_client, peer.ip(), limits.per_client) else {
            drop(tcp);
            continue;
        };
        let permit = match permits.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            // At the cap: the oldest idle connection (no request in progress, none
            // started for a while: a slow or parked client) makes room. Without one,
            // close at once: a queued connection would hold a descriptor.
            Err(_) if conns.evict_idle() => None,
            Err(_) => {
                drop(tcp);
                continue;
            }
        };
        let (router, tls, shutdown, permits, conns) =
            (router.clone(), tls.clone(), shutdown.clone(), permits.clone(), conns.clone());
        tokio::spawn(async move {
            let permit = match permit {
                Some(p) => p,
                // The evicted connection releases its permit as it closes.
                None => match tokio::time::timeout(Duration::from_secs(1), permits.acquire_owned()).await {
                    Ok(Ok(p)) => p,
                    _ => return,
                },
            };
            let (id, activity, cancel) = conns.add();
            let _slots = (permit, client, Registered(conns, id));
            let _ = tcp.set_nodelay(true);
            let serve = async move {
                match tls {
                    None => connection(tcp, router, shutdown, activity).await,
                    Some(tls) => {
                        let Some(stream) = tls_accept(tcp, &tls).await else { return };
                        connection(stream, router, shutdown, activity).await
                    }
                }
            };
            // Evicted: the connection had no request in progress, so it is dropped at
            // once (a graceful close would wait for a slow client's headers).
            tokio::select! {
                _ = serve => {}
                _ = cancel.cancelled() => {}
            }
        });
    }
}

/// What a connection is doing, for eviction: requests in progress, when the last one
/// started, when it was accepted.
#[derive(Debug)]
pub struct Activity {
    in_flight: std::sync::atomic::AtomicUsize,
    /// Milliseconds after `accepted` when the last request started; 0: none yet.
    last_request_ms: std::sync::atomic::AtomicU64,
    accepted: Instant,
}

/// A connection idle this long (no request started since, none in progress) may be
/// closed to make room for a new one when the port is full.
pub const EVICTABLE_AFTER: Duration = Duration::from_secs(2);

/// A connection's activity and the token that closes it.
type Tracked = (Arc<Activity>, CancellationToken);

/// The open connections of the port.
#[derive(Clone, Default)]
struct Connections {
    inner: Arc<Mutex<(u64, BTreeMap<u64, Tracked>)>>,
}

impl Connections {
    fn add(&self) -> (u64, Arc<Activity>, CancellationToken) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.0 += 1;
        let id = g.0;
        let a = Arc::new(Activity {
            in_flight: std::sync::atomic::AtomicUsize::new(0),
            last_request_ms: std::sync::atomic::AtomicU64::new(0),
            accepted: Instant::now(),
        });
        let c = CancellationToken::new();
        g.1.insert(id, (a.clone(), c.clone()));
        (id, a, c)
    }

    /// Closes the connection idle longest; false when none is idle.
    fn evict_idle(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let victim =
            g.1.values()
                .filter(|(a, c)| !c.is_cancelled() && a.in_flight.load(Relaxed) == 0)
                .map(|(a, c)| {
                    let last = a.accepted + Duration::from_millis(a.last_request_ms.load(Relaxed));
                    (now.saturating_duration_since(last), c)
                })
                .filter(|(idle, _)| *idle >= EVICTABLE_AFTER)
                .max_by_key(|(idle, _)| *idle);
        match victim {
            Some((_, c)) => {
                c.cancel();
                true
            }
            None => false,
        }
    }
}

/// Removes a connection from [`Connections`] when it ends.
struct Registered(Connections, u64);

impl Drop for Registered {
    fn drop(&mut self) {
        self.0.inner.lock().unwrap_or_else(|e| e.into_inner()).1.remove(&self.1);
    }
}

/// One connection counted against its client address; released on drop.
struct ClientSlot {
    map: Arc<Mutex<HashMap<std::net::IpAddr, usize>>>,
    ip: std::net::IpAddr,
}

impl ClientSlot {
    fn take(
        map: &Arc<Mutex<HashMap<std::net::IpAddr, usize>>>,
        ip: std::net::IpAddr,
        cap: usize,
    ) -> Option<ClientSlot> {
        let mut m = map.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(ip).or_insert(0);
        if *n >= cap {
            return None;
        }
        *n += 1;
        Some(ClientSlot { map: map.clone(), ip })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

/// The TLS handshake, within [`HANDSHAKE_TIMEOUT`]. Plain HTTP gets a 400, as Go's
/// servers answer it; a client certificate without an allowed SAN ends the connection.
async fn tls_accept(
    tcp: tokio::net::TcpStream,
    tls: &TlsServer,
) -> Option<tokio_rustls::server::TlsStream<tokio::net::TcpStream>> {
    let mut first = [0u8; 1];
    let peeked = tokio::time::timeout(HANDSHAKE_TIMEOUT, tcp.peek(&mut first)).await;
    if !matches!(peeked, Ok(Ok(1))) {
        return None;
    }
    if first[0] != 0x16 {
        let mut tcp = tcp;
        let _ = tcp
            .write_all(b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n")
            .await;
        let _ = tcp.shutdown().await;
        return None;
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.config());
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake on the web port failed");
            return None;
        }
        Err(_) => return None,
    };
    let allowed = tls.allowed_sans();
    if !allowed.is_empty() {
        let ok = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .is_some_and(|c| san_allowed(c, allowed));
        if !ok {
            tracing::debug!("client certificate has no SAN in client_allowed_sans");
            return None;
        }
    }
    Some(stream)
}

async fn connection<S>(io: S, router: axum::Router, shutdown: CancellationToken, activity: Arc<Activity>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use std::sync::atomic::Ordering::Relaxed;
    use tower::ServiceExt;
    let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
        let (router, activity) = (router.clone(), activity.clone());
        activity.in_flight.fetch_add(1, Relaxed);
        activity.last_request_ms.store((activity.accepted.elapsed().as_millis() as u64).max(1), Relaxed);
        async move {
            let r = router.oneshot(req.map(Body::new)).await;
            activity.in_flight.fetch_sub(1, Relaxed);
            r
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(64 * 1024);
    let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(io), service);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = tokio::time::sleep(CONNECTION_LIFETIME) => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(HEADER_TIMEOUT, conn).await;
        }
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_millis(500), conn).await;
        }
    }
}

/// A bcrypt hash (cost 10) of a random string, checked for unknown users.
const DUMMY_HASH: &str = "$2b$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy";

/// Basic authentication against `users`, with the cache described in the module doc.
#[derive(Clone)]
pub struct Auth {
    users: Arc<BTreeMap<String, String>>,
    cache: Arc<Mutex<HashMap<[u8; 32], Instant>>>,
    bcrypt: Arc<tokio::sync::Semaphore>,
}

impl Auth {
    /// An authenticator for `users` (empty: everyone is let in).
    pub fn new(users: Arc<BTreeMap<String, String>>) -> Auth {
        Auth {
            users,
            cache: Arc::new(Mutex::new(HashMap::new())),
            bcrypt: Arc::new(tokio::sync::Semaphore::new(2)),
        }
    }

    /// Whether any user is configured.
    pub fn enabled(&self) -> bool {
        !self.users.is_empty()
    }

    /// Whether the request's `Authorization` header names a user and its password.
    pub async fn check(&self, authorization: Option<&HeaderValue>) -> bool {
        if !self.enabled() {
            return true;
        }
        let Some((user, password)) = authorization.and_then(parse_basic) else { return false };
        // An unknown user costs a bcrypt round too, so timing does not tell which
        // user names exist.
        let (known, hash) = match self.users.get(&user) {
            Some(h) => (true, h.clone()),
            None => (false, DUMMY_HASH.to_owned()),
        };
        let key: [u8; 32] = {
            let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
            for part in [user.as_bytes(), password.as_bytes(), hash.as_bytes()] {
                ctx.update(&(part.len() as u64).to_be_bytes());
                ctx.update(part);
            }
            ctx.finish().as_ref().try_into().unwrap_or([0; 32])
        };
        {
            let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if cache.get(&key).is_some_and(|t| t.elapsed() < AUTH_CACHE_TTL) {
                return true;
            }
        }
        let Ok(_permit) = self.bcrypt.acquire().await else { return false };
        let ok = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
            .await
            .unwrap_or(false)
            && known;
        if ok {
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if cache.len() >= AUTH_CACHE_MAX {
                cache.retain(|_, t| t.elapsed() < AUTH_CACHE_TTL);
                if cache.len() >= AUTH_CACHE_MAX {
                    cache.clear();
                }
            }
            cache.insert(key, Instant::now());
        }
        ok
    }
}

fn parse_basic(v: &HeaderValue) -> Option<(String, String)> {
    use base64_lite::decode;
    let s = v.to_str().ok()?;
    let (scheme, b64) = s.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = decode(b64.trim())?;
    let text = String::from_utf8(raw).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_owned(), p.to_owned()))
}

/// Base64 (RFC 4648, standard alphabet, padding optional) for the Authorization header.
mod base64_lite {
    pub fn decode(s: &str) -> Option<Vec<u8>> {
        let s = s.trim_end_matches('=');
        if s.len() > 4096 {
            return None;
        }
        let mut out = Vec::with_capacity(s.len() * 3 / 4);
        let (mut acc, mut bits) = (0u32, 0u32);
        for c in s.bytes() {
            let v = match c {
                b'A'..=b'Z' => c - b'A',
                b'a'..=b'z' => c - b'a' + 26,
                b'0'..=b'9' => c - b'0' + 52,
                b'+' => 62,
                b'/' => 63,
                _ => return None,
            };
            acc = (acc << 6) | u32::from(v);
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
            }
        }
        Some(out)
    }
}

/// The middleware every request passes: basic auth (401 with a challenge), the
/// configured response headers, and a cap on request bodies.
pub async fn guard(
    axum::extract::State((auth, headers)): axum::extract::State<GuardState>,
    req: Request<Body>,
    next: axum::middleware::Next,
) -> Response {
    let too_big = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > MAX_BODY as u64);
    let header_bytes: usize = req.headers().iter().map(|(n, v)| n.as_str().len() + v.len() + 4).sum();
    let mut resp = if too_big {
        (StatusCode::PAYLOAD_TOO_LARGE, "Request body too large.\n").into_response()
    } else if header_bytes > MAX_HEADERS {
        (StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "Request headers too large.\n").into_response()
    } else if !auth.check(req.headers().get(header::AUTHORIZATION)).await {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic realm=\"coexistd\", charset=\"UTF-8\"")],
            "Unauthorized\n",
        )
            .into_response()
    } else {
        let (parts, body) = req.into_parts();
        let req = Request::from_parts(parts, Body::new(http_body_util::Limited::new(body, MAX_BODY)));
        next.run(req).await
    };
    for (name, value) in headers.iter() {
        resp.headers_mut().insert(name.clone(), value.clone());
    }
    resp
}
