//! `kind = "sip"`: an OPTIONS transaction over UDP, TCP or TLS — a real SIP client, not
//! a regular expression on a TCP stream.
//!
//! - **UDP**: the request is retransmitted as RFC 3261 §17.1.2 asks of a non-INVITE
//!   client transaction (timer E: T1 = 500 ms, doubling, capped at T2 = 4 s) until a
//!   final response or the deadline; provisional responses are skipped.
//! - **TCP/TLS**: one request on a fresh connection; responses are framed by
//!   Content-Length. TLS goes through the project's TLS layer (both engines: the
//!   legacy pool's SIP is TLS 1.0; mutual TLS with the configured client certificate).
//!
//! A response counts only if it answers our transaction (top Via branch, Call-ID,
//! CSeq); stray and mismatched messages are skipped. Nothing past 64 KiB is read.

use serde::Deserialize;
use toml::Spanned;

use super::{BuildCx, BuildError, CheckKind, Measure, Outcome, ProbeContext};
use crate::sip::message::Transport;
use crate::ua::conn::host_port;
pub use crate::ua::options::SipSpec;

/// The keys of `kind = "sip"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipKeys {
    /// Target host (default: the pool FQDN).
    pub host: Option<Spanned<String>>,
    /// Target port (default 5061 for TLS, 5060 otherwise).
    pub port: Option<Spanned<u16>>,
    /// udp, tcp or tls (default).
    pub transport: Option<Spanned<String>>,
    /// Request-URI user part.
    pub user: Option<Spanned<String>>,
    /// Accepted final status codes (default: any 2xx).
    pub expect_status: Option<Spanned<Vec<u16>>>,
    /// Lowest TLS version (overrides the pool's).
    pub tls_min_version: Option<Spanned<String>>,
    /// Record the chain but do not verify it.
    pub tls_skip_verify: Option<Spanned<bool>>,
    /// Fail with `cert_expiring` when the leaf expires within this many days.
    pub min_days_valid: Option<Spanned<u32>>,
    /// Probe every address behind the target name.
    pub each_address: Option<Spanned<bool>>,
}

impl CheckKind for SipSpec {
    type Keys = SipKeys;
    const MEASURES: &'static [&'static Measure] = &[&crate::ua::SIP_STATUS, &crate::ua::SIP_SERVER];

    /// The target label is `host:port`.
    fn build(keys: &SipKeys, cx: &BuildCx<'_>) -> Result<(SipSpec, String), BuildError> {
        let transport = match &keys.transport {
            None => Transport::Tls,
            Some(t) => cx.transport(t)?,
        };
        let port = match &keys.port {
            Some(_) => cx.port(keys.port.as_ref())?,
            None => transport.default_port(),
        };
        let expect_status =
            cx.status_codes(keys.expect_status.as_ref(), 200..=699, "a final SIP status code")?;
        let user = keys.user.as_ref().map(|u| u.get_ref().clone());
        if let Some(u) = &keys.user {
            if u.get_ref().is_empty() || u.get_ref().contains(['@', ' ', '<', '>', ':']) {
                return Err(cx.err(u.span(), &format!("user: {:?} is not a SIP user part", u.get_ref())));
            }
        }
        let host = cx.host(keys.host.as_ref())?;
        let target = host_port(&host, port);
        let spec = SipSpec {
            host,
            port,
            transport,
            user,
            expect_status,
            opts: cx.tls_options(&super::TlsKeys {
                tls_min_version: keys.tls_min_version.as_ref(),
                tls_skip_verify: keys.tls_skip_verify.as_ref(),
                min_days_valid: keys.min_days_valid.as_ref(),
            })?,
            budget: cx.timeout,
        };
        Ok((spec, target))
    }

    fn probe(&self, cx: &ProbeContext) -> impl std::future::Future<Output = Outcome> + Send {
        crate::ua::options::probe(self, cx)
    }

    fn each_address(keys: &SipKeys) -> bool {
        keys.each_address.as_ref().is_some_and(|v| *v.get_ref())
    }

    fn host(&self) -> Option<&str> {
        Some(&self.host)
    }
}
