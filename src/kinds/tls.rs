//! `kind = "tls"`: connect, handshake with SNI = the target name, verify chain and name,
//! report the chain. Phases: resolve, connect, tls.

use std::time::Duration;

use tokio::time::Instant;

use serde::Deserialize;
use toml::Spanned;

use super::{BuildCx, BuildError, CheckKind, FailureReason, Outcome, Phase, ProbeContext};
use crate::net::tls::TlsOptions;
use crate::ua::conn::{host_port, open};

/// A tls check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSpec {
    /// Host to connect to; also the SNI and the name the certificate must cover.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Engine, version floor, verification, expiry margin.
    pub opts: TlsOptions,
    /// A leaf signed with SHA-1 or MD5 fails (`cert_weak_signature`).
    pub forbid_sha1: bool,
}

/// The keys of `kind = "tls"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsKeys {
    /// Target host (default: the pool FQDN): also the SNI and the certificate name.
    pub host: Option<Spanned<String>>,
    /// Target port.
    pub port: Option<Spanned<u16>>,
    /// Lowest TLS version (overrides the pool's).
    pub tls_min_version: Option<Spanned<String>>,
    /// Record the chain but do not verify it.
    pub tls_skip_verify: Option<Spanned<bool>>,
    /// Fail with `cert_expiring` when the leaf expires within this many days.
    pub min_days_valid: Option<Spanned<u32>>,
    /// Probe every address behind the target name.
    pub each_address: Option<Spanned<bool>>,
    /// Fail with `cert_weak_signature` when the leaf is signed with SHA-1 or MD5.
    pub forbid_sha1: Option<Spanned<bool>>,
}

impl CheckKind for TlsSpec {
    type Keys = TlsKeys;

    /// The target label is `host:port`.
    fn build(keys: &TlsKeys, cx: &BuildCx<'_>) -> Result<(TlsSpec, String), BuildError> {
        let host = cx.host(keys.host.as_ref())?;
        let port = cx.port(keys.port.as_ref())?;
        let target = host_port(&host, port);
        let opts = cx.tls_options(&super::TlsKeys {
            tls_min_version: keys.tls_min_version.as_ref(),
            tls_skip_verify: keys.tls_skip_verify.as_ref(),
            min_days_valid: keys.min_days_valid.as_ref(),
        })?;
        let forbid_sha1 = keys.forbid_sha1.as_ref().is_some_and(|v| *v.get_ref());
        Ok((TlsSpec { host, port, opts, forbid_sha1 }, target))
    }

    fn probe(&self, cx: &ProbeContext) -> impl std::future::Future<Output = Outcome> + Send {
        probe(self, cx)
    }

    fn each_address(keys: &TlsKeys) -> bool {
        keys.each_address.as_ref().is_some_and(|v| *v.get_ref())
    }

    fn host(&self) -> Option<&str> {
        Some(&self.host)
    }
}

/// How long to wait for a TLS 1.3 server's verdict on our client certificate.
const CONFIRM_GRACE: Duration = Duration::from_millis(250);

/// Runs a tls probe.
pub async fn probe(spec: &TlsSpec, cx: &ProbeContext) -> Outcome {
    let mut phases = Vec::with_capacity(3);
    let (stream, info) = match open(&spec.host, spec.port, &spec.opts, cx, &mut phases).await {
        Ok(v) => v,
        Err(f) => return Outcome::failed(f, phases),
    };
    // TLS 1.3 servers reject a missing or bad client certificate only after the
    // client's handshake is over: close and listen for that verdict.
    if info.version == Some(crate::net::tls::TlsVersion::V1_3) {
        let t = Instant::now();
        let confirmed = stream.close_and_confirm(CONFIRM_GRACE).await;
        if let Some((Phase::Tls, d)) = phases.last_mut() {
            *d += t.elapsed();
        }
        if let Err(detail) = confirmed {
            let mut o = Outcome::fail(FailureReason::TlsHandshake, detail, phases);
            o.tls = Some(info);
            return o;
        }
    }
    if spec.forbid_sha1 {
        if let Some(leaf) = info.leaf() {
            let alg = leaf.signature_algorithm.to_ascii_lowercase();
            if alg.contains("sha1") || alg.contains("md5") {
                let detail = format!(
                    "certificate {} is signed with {} (forbid_sha1 = true)",
                    leaf.subject, leaf.signature_algorithm
                );
                let mut o = Outcome::fail(FailureReason::CertWeakSignature, detail, phases);
                o.tls = Some(info);
                return o;
            }
        }
    }
    let mut o = Outcome::pass(phases);
    o.tls = Some(info);
    o
}
