//! Why a probe failed: the fixed list of reasons (the `reason` label) and the one
//! failure type of a probe step ([`Failure`], with what a TLS handshake showed when it
//! got that far: [`tls`]). Ground floor: imports nothing of the crate above it; the wire
//! layers turn their own errors into a [`Failure`] with `From`, so `?` composes.

pub mod tls;

use std::sync::Arc;

use serde::Serialize;

use self::tls::TlsInfo;

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
    /// The leaf is signed with SHA-1 or MD5 and the check forbids it (`forbid_sha1`): a renewed certificate that fell back to what the old pool used.
    CertWeakSignature => "cert_weak_signature",
    /// The HTTP status is not one of those expected.
    HttpStatus => "http_status",
    /// The HTTP body does not contain the expected text.
    HttpBody => "http_body",
    /// A `401`/`407` answer does not offer every scheme of `expect_auth` (an administration URL that asks for Basic instead of Negotiate, or for nothing).
    HttpAuth => "http_auth",
    /// The final SIP status is not one of those expected.
    SipStatus => "sip_status",
    /// What came back is not a well-formed SIP response (or is larger than 64 KiB).
    SipMalformed => "sip_malformed",
    /// The registrar refused the test user's credentials (a challenge answered and challenged again without a stale nonce, or 403).
    AuthFailed => "auth_failed",
    /// The agent refused to follow a redirect or answer a challenge that its policy forbids: a host of no configured pool, a weaker transport, a weaker Digest algorithm, another realm.
    PolicyRefused => "policy_refused",
    /// A message of the server's in an NTLM security association (MS-SIPAE) carried no signature, or one that does not match it: never accepted unsigned.
    AuthSignature => "auth_signature",
    /// The registrar's clock (the `Date` of its challenge) is more than 5 minutes from the agent's: NTLM fails beyond 15 minutes and Kerberos beyond 5, for every test user at once.
    ClockSkew => "clock_skew",
    /// The test user registered, but on another pool than its planned `pool`.
    WrongHome => "wrong_home",
    /// The sending or the receiving test user has no registration (the test setup is broken, not the route between pools).
    NotRegistered => "not_registered",
    /// The sender got a 2xx, but the recipient's endpoint never received the request.
    NotDelivered => "not_delivered",
    /// A STUN server answered the Binding request with an error response (its code and phrase in the detail).
    StunError => "stun_error",
    /// What came back to a STUN Binding request is not a usable Binding success (no mapped address, a wrong `FINGERPRINT`, cut short).
    StunMalformed => "stun_malformed",
    /// The SQL Server Browser answered, but without the expected instance (`expect_instance`; the detail lists those it has).
    SqlInstanceMissing => "sql_instance_missing",
    /// What came back to an MS-SQLR request is not an instance list.
    SsrpMalformed => "ssrp_malformed",
    /// The SMB server chose a dialect below `min_dialect`.
    SmbDialect => "smb_dialect",
    /// What came back to an SMB2 NEGOTIATE is not a NEGOTIATE response (an error status, SMB1, cut short).
    SmbMalformed => "smb_malformed",
    /// The RPC endpoint mapper refused the bind (a `bind_nak`, or the context rejected).
    RpcRejected => "rpc_rejected",
    /// What came back to a DCE/RPC bind is not a bind answer.
    RpcMalformed => "rpc_malformed",
    /// The probe failed inside the agent (a bug: it panicked); logged at `error`.
    Internal => "internal",
}

/// A failed probe step, and so a failed probe: the reason label, a human-readable
/// detail for logs and status, and what the TLS handshake showed when the step got that
/// far (a chain that did not verify, an expiring leaf).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The fixed reason.
    pub reason: FailureReason,
    /// What happened, in words (error text, the answer received, ...).
    pub detail: String,
    /// What the peer's TLS handshake showed, when there was one.
    pub tls: Option<Arc<TlsInfo>>,
}

impl Failure {
    /// A failure for `reason` with `detail`.
    pub fn new(reason: FailureReason, detail: impl Into<String>) -> Failure {
        Failure { reason, detail: detail.into(), tls: None }
    }

    /// The same failure with what the TLS handshake showed.
    pub fn with_tls(mut self, tls: Option<Arc<TlsInfo>>) -> Failure {
        self.tls = tls;
        self
    }

    /// The same failure with `context` before its detail (`context: detail`).
    pub fn context(mut self, context: impl std::fmt::Display) -> Failure {
        self.detail = format!("{context}: {}", self.detail);
        self
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.reason.as_str(), self.detail)
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
