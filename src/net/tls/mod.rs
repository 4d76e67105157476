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
mod openssl_engine;
mod rustls_engine;

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

pub use crate::failure::tls::{CertSummary, TlsInfo, TlsVersion};

use crate::failure::{Failure, FailureReason};

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

/// Why the TLS material of `[tls]` could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {path}: {message}")]
pub struct TlsSetupError {
    key: &'static str,
    path: String,
    message: String,
}

/// One TLS engine: a client handshake over a connected socket, with SNI and certificate
/// name `name`, recording the chain the peer sent whether or not it verifies.
trait Engine {
    fn handshake(
        &self,
        tcp: TcpStream,
        name: &str,
        opts: &TlsOptions,
    ) -> impl std::future::Future<Output = Result<(TlsStream, TlsInfo), Failure>> + Send;
}

/// Both engines, configured once per configuration: rustls for TLS 1.2 and 1.3,
/// OpenSSL at security level 0 for checks that accept TLS 1.0 or 1.1.
pub struct TlsClient {
    rustls: rustls_engine::RustlsEngine,
    openssl: openssl_engine::OpenSslEngine,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient")
            .field("client_identity", &self.rustls.has_identity())
            .finish_non_exhaustive()
    }
}

pub(crate) fn setup_err(key: &'static str, path: &Path, message: impl std::fmt::Display) -> TlsSetupError {
    TlsSetupError { key, path: path.display().to_string(), message: message.to_string() }
}

impl TlsClient {
    /// Loads trust anchors (system roots plus `ca_file`) and the client identity,
    /// once, for both engines.
    pub fn new(cfg: &TlsConfig) -> Result<TlsClient, TlsSetupError> {
        let files = Files::read(cfg)?;
        Ok(TlsClient {
            rustls: rustls_engine::RustlsEngine::new(&files)?,
            openssl: openssl_engine::OpenSslEngine::new(&files)?,
        })
    }

    /// Handshakes over `tcp` with SNI and certificate name `name`, then verifies.
    pub async fn handshake(
        &self,
        tcp: TcpStream,
        name: &str,
        opts: &TlsOptions,
    ) -> Result<(TlsStream, TlsInfo), Failure> {
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
            self.openssl.handshake(tcp, name, opts).await
        } else {
            self.rustls.handshake(tcp, name, opts).await
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
                    f.tls.as_ref().map_or("no certificate received".into(), |i| describe_chain(&i.chain))
                ),
            }
        });
        let (stream, info) = result?;
        if let Some(days) = opts.min_days_valid {
            let now = unix_now();
            if let Some(leaf) = info.leaf() {
                let left = leaf.not_after - now;
                if left < i64::from(days) * 86_400 {
                    let detail = format!(
                        "certificate {} expires in {:.1} days (min_days_valid = {days})",
                        leaf.subject,
                        left as f64 / 86_400.0
                    );
                    return Err(
                        Failure::new(FailureReason::CertExpiring, detail).with_tls(Some(Arc::new(info)))
                    );
                }
            }
        }
        Ok((stream, info))
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
pub(crate) type File = (std::path::PathBuf, Vec<u8>);

/// The TLS files of the configuration, each read once and shared by both engines.
pub(crate) struct Files {
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

/// The reason for an I/O error on an established connection: a TLS alert from the peer
/// (e.g. a TLS 1.3 server rejecting the client certificate after the handshake) is a
/// handshake failure, anything else plain I/O.
pub fn io_reason(e: &io::Error) -> FailureReason {
    let alert = matches!(rustls_engine::rustls_error(e), Some(rustls::Error::AlertReceived(_)))
        || e.to_string().to_ascii_lowercase().contains("alert");
    if alert {
        FailureReason::TlsHandshake
    } else {
        FailureReason::Io
    }
}

pub(crate) fn unix_now() -> i64 {
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
                        return match rustls_engine::rustls_error(&e) {
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
