//! `kind = "stun"`: a STUN Binding request (RFC 5389) to a STUN/TURN server (coturn, an
//! SBC's TURN service, Skype for Business Server 2019 and Teams media relays), over UDP
//! (default) or TCP, as a client does before it can set up media across a firewall;
//! passes when a Binding success carries a mapped address. The
//! `coexist_stun_rtt_seconds` gauge is the request-to-answer time. Lync's and OCS's A/V
//! Edge speak MS-TURN, whose framing (MAGIC-COOKIE as the first attribute, TCP 443's
//! pseudo-TLS) differs: not verified against a real Edge.
//!
//! UDP: the request is retransmitted as RFC 5389 §7.2.1 says (RTO 500 ms, doubling)
//! until an answer or the instance's timeout; datagrams of other transactions or that
//! are not STUN are skipped. TCP: one connection per run, the answer framed by its
//! length. A `FINGERPRINT` in the answer must check.
//!
//! Reasons: `stun_error` (an error response: code and phrase in the detail),
//! `stun_malformed` (an answer that is not a usable Binding success), `timeout`,
//! `refused` (ICMP port unreachable, a TCP reset), and the connection's.

use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use toml::Spanned;

use super::{BuildCx, BuildError, CheckKind, Failure, FailureReason, Measure, Outcome, ProbeContext};
use crate::model::outcome::Phase;
use crate::net::stun::{self, Answer};
use crate::ua::conn::{connect, host_port, udp_exchange};

/// The STUN port (RFC 5389 §18.4).
pub const DEFAULT_PORT: u16 = 3478;

/// `coexist_stun_rtt_seconds`.
pub static STUN_RTT: Measure = Measure {
    name: "coexist_stun_rtt_seconds",
    help: "Time from the STUN Binding request (its last transmission) to the Binding success, in the last passing probe.",
    label: None,
};

/// A stun check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StunSpec {
    /// Host name or address literal.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Over TCP (else UDP).
    pub tcp: bool,
}

/// The keys of `kind = "stun"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StunKeys {
    /// Target host (default: the pool FQDN).
    pub host: Option<Spanned<String>>,
    /// Port (default 3478).
    pub port: Option<Spanned<u16>>,
    /// `udp` (default) or `tcp`.
    pub transport: Option<Spanned<String>>,
    /// Probe every address behind the target name.
    pub each_address: Option<Spanned<bool>>,
}

impl CheckKind for StunSpec {
    type Keys = StunKeys;
    const MEASURES: &'static [&'static Measure] = &[&STUN_RTT];

    /// The target label is `host:port`, with `/tcp` over TCP.
    fn build(keys: &StunKeys, cx: &BuildCx<'_>) -> Result<(StunSpec, String), BuildError> {
        let host = cx.host(keys.host.as_ref())?;
        let port = match keys.port.as_ref() {
            None => DEFAULT_PORT,
            p => cx.port(p)?,
        };
        let tcp = match keys.transport.as_ref().map(|t| (t, t.get_ref().to_ascii_lowercase())) {
            None => false,
            Some((_, t)) if t == "udp" => false,
            Some((_, t)) if t == "tcp" => true,
            Some((t, other)) => {
                return Err(cx.err(t.span(), &format!("transport: {other:?} is not \"udp\" or \"tcp\"")));
            }
        };
        let target = host_port(&host, port) + if tcp { "/tcp" } else { "" };
        Ok((StunSpec { host, port, tcp }, target))
    }

    fn probe(&self, cx: &ProbeContext) -> impl std::future::Future<Output = Outcome> + Send {
        probe(self, cx)
    }

    fn each_address(keys: &StunKeys) -> bool {
        keys.each_address.as_ref().is_some_and(|v| *v.get_ref())
    }

    fn host(&self) -> Option<&str> {
        Some(&self.host)
    }
}

/// Runs a stun probe.
pub async fn probe(spec: &StunSpec, cx: &ProbeContext) -> Outcome {
    let mut phases = Vec::with_capacity(3);
    let mut tid = [0u8; 12];
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut tid).is_err() {
        return Outcome::fail(FailureReason::Internal, "the system's random source failed", phases);
    }
    let r = if spec.tcp {
        over_tcp(spec, cx, &tid, &mut phases).await
    } else {
        over_udp(spec, cx, &tid, &mut phases).await
    };
    match r {
        Ok((Answer::Mapped(..), rtt)) => {
            let mut o = Outcome::pass(phases);
            o.set(&STUN_RTT, rtt.as_secs_f64());
            o
        }
        Ok((Answer::Error(code, phrase), _)) => {
            Outcome::fail(FailureReason::StunError, format!("Binding error response {code} {phrase}"), phases)
        }
        Err(f) => Outcome::failed(f, phases),
    }
}

async fn over_udp(
    spec: &StunSpec,
    cx: &ProbeContext,
    tid: &[u8; 12],
    phases: &mut Vec<(Phase, Duration)>,
) -> Result<(Answer, Duration), Failure> {
    let request = stun::binding_request(tid);
    udp_exchange(&spec.host, spec.port, cx, phases, &request, Duration::from_millis(500), |d| {
        // Ours: the cookie and our transaction ID. Anything else is skipped.
        let ours =
            d.len() >= stun::HEADER && d[4..8] == stun::MAGIC_COOKIE.to_be_bytes() && d[8..20] == tid[..];
        match stun::parse_response(d, tid) {
            Ok(a) => Ok(Some(a)),
            Err(_) if !ours => Ok(None),
            Err(e) => Err(e.into()),
        }
    })
    .await
}

async fn over_tcp(
    spec: &StunSpec,
    cx: &ProbeContext,
    tid: &[u8; 12],
    phases: &mut Vec<(Phase, Duration)>,
) -> Result<(Answer, Duration), Failure> {
    let mut stream = connect(&spec.host, spec.port, cx, phases).await?;
    let io =
        |e: std::io::Error| Failure::new(crate::failure::connect_reason(&e), format!("STUN over TCP: {e}"));
    let sent = Instant::now();
    stream.write_all(&stun::binding_request(tid)).await.map_err(io)?;
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 512];
    loop {
        if let Some(len) = stun::message_len(&buf) {
            if len > stun::MAX_RESPONSE {
                return Err(Failure::new(FailureReason::StunMalformed, format!("an answer of {len} bytes")));
            }
            if buf.len() >= len {
                phases.push((Phase::Request, sent.elapsed()));
                let a = stun::parse_response(&buf[..len], tid)?;
                return Ok((a, sent.elapsed()));
            }
        }
        let n = stream.read(&mut chunk).await.map_err(io)?;
        if n == 0 {
            return Err(Failure::new(
                FailureReason::StunMalformed,
                format!("the connection closed after {} bytes, before an answer", buf.len()),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}
