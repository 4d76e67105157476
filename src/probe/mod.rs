//! Probes: one module per check kind, one [`CheckSpec`] variant per kind, one `match`
//! arm per kind in [`build_spec`] and [`run`].
//!
//! Every probe has the same shape: `async fn probe(spec, &ProbeContext) -> Outcome`.
//! Probes do not enforce their own deadline: the caller wraps them in the instance's
//! timeout and turns an elapsed deadline into [`CheckSpec::timeout_reason`].

pub mod dns;
pub mod http;
pub mod sip;
pub mod sip_discovery;
pub mod tcp;
pub mod tls;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{CheckCx, ConfigError, RawCheck};
use crate::resolve::Resolver;

/// The check kinds this build knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// TCP connect.
    Tcp,
    /// DNS query and answer comparison.
    Dns,
    /// TLS handshake and certificate checks.
    Tls,
    /// HTTPS GET.
    Http,
    /// SIP OPTIONS over UDP, TCP or TLS.
    Sip,
    /// SRV record → host → TLS → OPTIONS, as a client signs in.
    SipDiscovery,
}

impl Kind {
    /// The `kind` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Tcp => "tcp",
            Kind::Dns => "dns",
            Kind::Tls => "tls",
            Kind::Http => "http",
            Kind::Sip => "sip",
            Kind::SipDiscovery => "sip_discovery",
        }
    }
}

/// A validated, kind-specific probe description.
#[derive(Debug, Clone, PartialEq)]
pub enum CheckSpec {
    /// See [`tcp::TcpSpec`].
    Tcp(tcp::TcpSpec),
    /// See [`dns::DnsSpec`].
    Dns(dns::DnsSpec),
    /// See [`tls::TlsSpec`].
    Tls(tls::TlsSpec),
    /// See [`http::HttpSpec`].
    Http(http::HttpSpec),
    /// See [`sip::SipSpec`].
    Sip(sip::SipSpec),
    /// See [`sip_discovery::SipDiscoverySpec`].
    SipDiscovery(sip_discovery::SipDiscoverySpec),
}

impl CheckSpec {
    /// The kind of this spec.
    pub fn kind(&self) -> Kind {
        match self {
            CheckSpec::Tcp(_) => Kind::Tcp,
            CheckSpec::Dns(_) => Kind::Dns,
            CheckSpec::Tls(_) => Kind::Tls,
            CheckSpec::Http(_) => Kind::Http,
            CheckSpec::Sip(_) => Kind::Sip,
            CheckSpec::SipDiscovery(_) => Kind::SipDiscovery,
        }
    }

    /// The host a connecting kind resolves and connects to (`each_address` fans out over
    /// its addresses); `None` for dns.
    pub fn host(&self) -> Option<&str> {
        match self {
            CheckSpec::Tcp(s) => Some(&s.host),
            CheckSpec::Tls(s) => Some(&s.host),
            CheckSpec::Http(s) => Some(&s.host),
            CheckSpec::Sip(s) => Some(&s.host),
            CheckSpec::Dns(_) | CheckSpec::SipDiscovery(_) => None,
        }
    }

    /// The pool a record or the sign-in path must point at (`expect_pool`), if planned.
    pub fn expect_pool(&self) -> Option<&str> {
        match self {
            CheckSpec::Dns(s) => s.expect_pool.as_deref(),
            CheckSpec::SipDiscovery(s) => s.expect_pool.as_deref(),
            CheckSpec::Tcp(_) | CheckSpec::Tls(_) | CheckSpec::Http(_) | CheckSpec::Sip(_) => None,
        }
    }

    /// The reason recorded when the probe does not finish within its timeout.
    pub fn timeout_reason(&self) -> FailureReason {
        match self {
            CheckSpec::Tcp(_) => FailureReason::Timeout,
            CheckSpec::Dns(_) => FailureReason::DnsTimeout,
            CheckSpec::Tls(_) | CheckSpec::Http(_) | CheckSpec::Sip(_) | CheckSpec::SipDiscovery(_) => {
                FailureReason::Timeout
            }
        }
    }
}

/// Builds the spec of one instance of `raw` and its `target` label.
pub fn build_spec(raw: &RawCheck, cx: &CheckCx<'_>) -> Result<(CheckSpec, String), ConfigError> {
    match raw.kind.get_ref() {
        Kind::Tcp => tcp::TcpSpec::build(raw, cx).map(|(s, t)| (CheckSpec::Tcp(s), t)),
        Kind::Dns => dns::DnsSpec::build(raw, cx).map(|(s, t)| (CheckSpec::Dns(s), t)),
        Kind::Tls => tls::TlsSpec::build(raw, cx).map(|(s, t)| (CheckSpec::Tls(s), t)),
        Kind::Http => http::HttpSpec::build(raw, cx).map(|(s, t)| (CheckSpec::Http(s), t)),
        Kind::Sip => sip::SipSpec::build(raw, cx).map(|(s, t)| (CheckSpec::Sip(s), t)),
        Kind::SipDiscovery => {
            sip_discovery::SipDiscoverySpec::build(raw, cx).map(|(s, t)| (CheckSpec::SipDiscovery(s), t))
        }
    }
}

/// Shared, per-configuration state that probes use.
#[derive(Debug, Clone)]
pub struct ProbeContext {
    /// Resolves target names through the configured `[dns]` servers.
    pub resolver: Resolver,
    /// Queries the configured `[dns]` servers (system ones when the config names none).
    pub dns: std::sync::Arc<dns::DnsClient>,
    /// Both TLS engines with the configured trust anchors and client identity.
    pub tls: std::sync::Arc<crate::tls::TlsClient>,
    /// `each_address`: connect to this address instead of resolving the target name
    /// (SNI, certificate name and SIP Request-URI stay the name).
    pub address: Option<std::net::IpAddr>,
}

/// Runs one probe, without a deadline of its own.
pub async fn run(spec: &CheckSpec, cx: &ProbeContext) -> Outcome {
    match spec {
        CheckSpec::Tcp(s) => tcp::probe(s, cx).await,
        CheckSpec::Dns(s) => dns::probe(s, cx).await,
        CheckSpec::Tls(s) => tls::probe(s, cx).await,
        CheckSpec::Http(s) => http::probe(s, cx).await,
        CheckSpec::Sip(s) => sip::probe(s, cx).await,
        CheckSpec::SipDiscovery(s) => sip_discovery::probe(s, cx).await,
    }
}

/// Declares [`FailureReason`] from one list: the variants, [`FailureReason::ALL`],
/// the label values and the doc lines all come from it, so they cannot drift apart.
macro_rules! failure_reasons {
    ($($(#[doc = $doc:literal])+ $variant:ident => $label:literal,)+) => {
        /// Why a probe failed: a fixed list, the `reason` label.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(rename_all = "snake_case")]
        pub enum FailureReason {
            $($(#[doc = $doc])+ $variant,)+
        }

        impl FailureReason {
            /// Every reason, in declaration order.
            pub const ALL: &'static [FailureReason] = &[$(FailureReason::$variant,)+];

            /// Number of reasons (the length of per-reason counter arrays).
            pub const COUNT: usize = FailureReason::ALL.len();

            /// The `reason` label value.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(FailureReason::$variant => $label,)+
                }
            }

            /// What the reason means, as documented on its variant.
            pub fn description(self) -> &'static str {
                match self {
                    $(FailureReason::$variant => concat!($($doc, " ",)+).trim_ascii(),)+
                }
            }

            /// Index into [`FailureReason::ALL`], for per-reason counters.
            pub fn index(self) -> usize {
                self as usize
            }
        }
    };
}

failure_reasons! {
    /// No answer within the timeout.
    Timeout => "timeout",
    /// The peer actively refused the connection (RST / ICMP port unreachable).
    Refused => "refused",
    /// No route to the host or network.
    Unreachable => "unreachable",
    /// The target name did not resolve to any address.
    Resolve => "resolve",
    /// Any other I/O failure on the connection.
    Io => "io",
    /// The name does not exist.
    DnsNxdomain => "dns_nxdomain",
    /// The server answered SERVFAIL.
    DnsServfail => "dns_servfail",
    /// The server answered REFUSED.
    DnsRefused => "dns_refused",
    /// No answer from any server within the timeout.
    DnsTimeout => "dns_timeout",
    /// The name exists but has no record of the type asked for.
    DnsNoAnswer => "dns_no_answer",
    /// The answer differs from what the check expects.
    DnsMismatch => "dns_mismatch",
    /// The answer belongs to another pool than `expect_pool` (or to none).
    DnsWrongPool => "dns_wrong_pool",
    /// Any other DNS response code or an unparseable response.
    DnsError => "dns_error",
    /// The TLS handshake failed (other than for the reasons below).
    TlsHandshake => "tls_handshake",
    /// No protocol version in common (e.g. a TLS 1.0-only server and a TLS 1.2 client).
    TlsVersion => "tls_version",
    /// A certificate of the chain has expired.
    CertExpired => "cert_expired",
    /// A certificate of the chain is not valid yet.
    CertNotYetValid => "cert_not_yet_valid",
    /// The chain does not lead to a trusted root (self-signed, unknown CA, bad signature).
    CertUntrusted => "cert_untrusted",
    /// The certificate does not cover the name asked for.
    CertNameMismatch => "cert_name_mismatch",
    /// The leaf expires within `min_days_valid` days.
    CertExpiring => "cert_expiring",
    /// The HTTP status is not one of those expected.
    HttpStatus => "http_status",
    /// The HTTP body does not contain the expected text.
    HttpBody => "http_body",
    /// The final SIP status is not one of those expected.
    SipStatus => "sip_status",
    /// What came back is not a well-formed SIP response (or is larger than 64 KiB).
    SipMalformed => "sip_malformed",
    /// The probe failed inside the agent (a bug: it panicked); logged at `error`.
    Internal => "internal",
}

/// A timed step of a probe, the `phase` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Name resolution of the target.
    Resolve,
    /// TCP connect.
    Connect,
    /// TLS handshake and certificate verification.
    Tls,
    /// Request and response (a DNS query and its answer).
    Request,
}

impl Phase {
    /// The `phase` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Resolve => "resolve",
            Phase::Connect => "connect",
            Phase::Tls => "tls",
            Phase::Request => "request",
        }
    }
}

/// A failed probe: the reason label and a human-readable detail for logs and status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The fixed reason.
    pub reason: FailureReason,
    /// What happened, in words (error text, the answer received, ...).
    pub detail: String,
}

/// The result of one probe run.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// `Ok` when the probe passed.
    pub result: Result<(), Failure>,
    /// Timed phases, in the order they ran.
    pub phases: Vec<(Phase, Duration)>,
    /// dns: number of answer records in the last response.
    pub dns_answers: Option<u64>,
    /// TLS-speaking kinds: what the handshake showed (also on failure, when it got that far).
    pub tls: Option<std::sync::Arc<crate::tls::TlsInfo>>,
    /// sip: the final status code received.
    pub sip_status: Option<u16>,
    /// sip: the peer's `Server` (or `User-Agent`) header.
    pub sip_server: Option<String>,
    /// dns: the pool the answer points at (`unknown` when none).
    pub points_to: Option<String>,
}

impl Outcome {
    /// A passing outcome.
    pub fn pass(phases: Vec<(Phase, Duration)>) -> Outcome {
        Outcome {
            result: Ok(()),
            phases,
            dns_answers: None,
            tls: None,
            sip_status: None,
            sip_server: None,
            points_to: None,
        }
    }

    fn with_result(result: Result<(), Failure>, phases: Vec<(Phase, Duration)>) -> Outcome {
        Outcome { result, ..Outcome::pass(phases) }
    }

    /// A failing outcome.
    pub fn fail(reason: FailureReason, detail: impl Into<String>, phases: Vec<(Phase, Duration)>) -> Outcome {
        Outcome::with_result(Err(Failure { reason, detail: detail.into() }), phases)
    }

    /// The failure reason, if any.
    pub fn reason(&self) -> Option<FailureReason> {
        self.result.as_ref().err().map(|f| f.reason)
    }
}

/// Maps a connect error to a failure reason.
pub fn connect_reason(e: &std::io::Error) -> FailureReason {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused => FailureReason::Refused,
        K::TimedOut => FailureReason::Timeout,
        K::HostUnreachable | K::NetworkUnreachable | K::AddrNotAvailable => FailureReason::Unreachable,
        _ => match e.raw_os_error() {
            // EHOSTUNREACH, ENETUNREACH, ENETDOWN on Linux.
            Some(113) | Some(101) | Some(100) => FailureReason::Unreachable,
            _ => FailureReason::Io,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::FailureReason;

    #[test]
    fn every_reason_has_a_distinct_label_a_description_and_its_own_index() {
        let mut labels = std::collections::HashSet::new();
        for (i, r) in FailureReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
            assert!(labels.insert(r.as_str()), "{} twice", r.as_str());
            assert!(!r.description().is_empty());
            let json = serde_json::to_string(r).unwrap();
            assert_eq!(json, format!("\"{}\"", r.as_str()), "serde and the label agree");
        }
        assert_eq!(FailureReason::COUNT, FailureReason::ALL.len());
    }
}
