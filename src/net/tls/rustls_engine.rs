//! The rustls engine: TLS 1.2 and 1.3, verified against the system roots plus
//! `[tls] ca_file`, with the chain the peer sent recorded before verification.

use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, Resumption, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;

use super::{cert, setup_err, Engine, Files, TlsInfo, TlsOptions, TlsSetupError, TlsStream, TlsVersion};
use crate::failure::{Failure, FailureReason};

/// The rustls engine with the configuration's trust anchors and client identity.
pub(super) struct RustlsEngine {
    provider: Arc<CryptoProvider>,
    webpki: Arc<WebPkiServerVerifier>,
    identity: Option<Arc<CertifiedKey>>,
}

impl RustlsEngine {
    /// Trust anchors (system roots plus `ca_file`) and the client identity.
    pub(super) fn new(files: &Files) -> Result<RustlsEngine, TlsSetupError> {
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
        Ok(RustlsEngine { provider, webpki, identity })
    }

    /// Whether a client certificate is configured.
    pub(super) fn has_identity(&self) -> bool {
        self.identity.is_some()
    }
}

impl Engine for RustlsEngine {
    async fn handshake(
        &self,
        tcp: TcpStream,
        name: &str,
        opts: &TlsOptions,
    ) -> Result<(TlsStream, TlsInfo), Failure> {
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
        let fail = |reason, detail: String| Failure::new(reason, detail);
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
                Err(Failure::new(reason, detail).with_tls(info.map(Arc::new)))
            }
        }
    }
}

/// Finds the rustls error inside an I/O error from the handshake.
pub(super) fn rustls_error(e: &io::Error) -> Option<&rustls::Error> {
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
