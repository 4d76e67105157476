//! The OpenSSL engine, for checks that accept TLS 1.0 or 1.1 (the legacy pool): security
//! level 0 (TLS 1.0, SHA-1 signatures, CBC suites), chain and name still verified, the
//! chain the peer sent recorded. Errors are classified from OpenSSL's own codes.

use std::pin::Pin;
use std::sync::{Arc, Mutex};

use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode, SslVersion};
use tokio::net::TcpStream;

use super::{cert, setup_err, Engine, Files, TlsInfo, TlsOptions, TlsSetupError, TlsStream, TlsVersion};
use crate::failure::{Failure, FailureReason};

/// The OpenSSL engine with the configuration's trust anchors and client identity.
pub(super) struct OpenSslEngine {
    connector: SslConnector,
}

impl OpenSslEngine {
    /// Trust anchors (`ca_file`) and the client identity, at security level 0.
    pub(super) fn new(files: &Files) -> Result<OpenSslEngine, TlsSetupError> {
        let connector =
            legacy_connector(files).map_err(|e| setup_err("tls", std::path::Path::new("(OpenSSL)"), e))?;
        Ok(OpenSslEngine { connector })
    }
}

impl Engine for OpenSslEngine {
    async fn handshake(
        &self,
        tcp: TcpStream,
        name: &str,
        opts: &TlsOptions,
    ) -> Result<(TlsStream, TlsInfo), Failure> {
        let fail = |detail: String| Failure::new(FailureReason::TlsHandshake, detail);
        let mut cfg = self.connector.configure().map_err(|e| fail(e.to_string()))?;
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
            return Err(Failure::new(reason, detail).with_tls(info.map(Arc::new)));
        }
        let info = TlsInfo { version, chain };
        let first = errors.lock().unwrap_or_else(|e| e.into_inner()).first().copied();
        if let (Some((code, msg, depth)), false) = (first, opts.skip_verify) {
            let (reason, what) = classify_x509(code);
            let detail = format!("{what}: {msg} (certificate at depth {depth})");
            return Err(Failure::new(reason, detail).with_tls(Some(Arc::new(info))));
        }
        Ok((TlsStream::OpenSsl(Box::new(stream)), info))
    }
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
