//! An OPTIONS transaction over UDP, TCP or TLS on a fresh connection: the `sip` kind's
//! probe, and the last step of `sip_discovery`.
//!
//! What it does not do: authenticate (an unauthenticated OPTIONS may be answered
//! 401/407: which codes pass is the check's `expect_status`).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::conn::{connect, open};
use super::transaction;
use super::ProbeContext;
use crate::failure::{Failure, FailureReason};
use crate::model::outcome::{status_accepted, Outcome, Phase};
use crate::net::tls::TlsOptions;
use crate::sip::message::{self, Message, OptionsParams, Transaction, Transport};

/// A sip check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipSpec {
    /// Host connected to; Request-URI host, SNI and certificate name.
    pub host: String,
    /// Port.
    pub port: u16,
    /// udp, tcp or tls.
    pub transport: Transport,
    /// Optional Request-URI user.
    pub user: Option<String>,
    /// Final codes that pass; empty: any 2xx.
    pub expect_status: Vec<u16>,
    /// TLS options (tls transport).
    pub opts: TlsOptions,
    /// The instance's timeout: the probe ends a little before it, with its own reason.
    pub budget: Duration,
}

/// Runs a sip probe.
pub async fn probe(spec: &SipSpec, cx: &ProbeContext) -> Outcome {
    // End a little before the scheduler's deadline so the probe reports its own reason
    // (a malformed answer, a stall) rather than a bare timeout.
    let deadline = Instant::now() + spec.budget.saturating_sub(spec.budget / 50 + Duration::from_millis(5));
    let mut phases = Vec::with_capacity(4);
    let tx = message::new_transaction();
    let result = match spec.transport {
        Transport::Udp => over_udp(spec, cx, &tx, deadline, &mut phases).await,
        Transport::Tcp => match connect(&spec.host, spec.port, cx, &mut phases).await {
            Err(f) => return Outcome::failed(f, phases),
            Ok(s) => over_stream(spec, s, &tx, deadline, &mut phases).await,
        },
        Transport::Tls => {
            let (stream, info) = match open(&spec.host, spec.port, &spec.opts, cx, &mut phases).await {
                Ok(v) => v,
                Err(f) => return Outcome::failed(f, phases),
            };
            let local = stream.local_addr();
            let mut o =
                finish(spec, over_stream_with(spec, stream, local, &tx, deadline, &mut phases).await, phases);
            o.tls = Some(info);
            return o;
        }
    };
    finish(spec, result, phases)
}

fn finish(spec: &SipSpec, result: Result<Message, Failure>, phases: Vec<(Phase, Duration)>) -> Outcome {
    match result {
        Err(f) => Outcome::failed(f, phases),
        Ok(resp) => {
            let code = resp.status().unwrap_or(0);
            let mut o = if let Err(want) = status_accepted(&spec.expect_status, code) {
                let reason = match &resp.start {
                    message::StartLine::Response { reason, .. } => reason.clone(),
                    message::StartLine::Request { .. } => String::new(),
                };
                let diag = resp
                    .header("ms-diagnostics")
                    .map(|d| format!(" (ms-diagnostics: {d})"))
                    .unwrap_or_default();
                Outcome::fail(
                    FailureReason::SipStatus,
                    format!("answered {code} {reason}{diag}, expected {want}"),
                    phases,
                )
            } else {
                Outcome::pass(phases)
            };
            o.set(&super::SIP_STATUS, f64::from(code));
            if let Some(s) = resp.software() {
                o.set_labelled(&super::SIP_SERVER, Some(s.chars().take(128).collect()), 1.0);
            }
            o
        }
    }
}

fn params<'a>(spec: &'a SipSpec, sent_by: &'a str, tx: &'a Transaction, tag: &'a str) -> OptionsParams<'a> {
    OptionsParams {
        transport: spec.transport,
        host: &spec.host,
        port: spec.port,
        user: spec.user.as_deref(),
        sent_by,
        tx,
        from_tag: tag,
    }
}

fn sent_by(addr: Option<SocketAddr>) -> String {
    addr.map_or_else(|| "0.0.0.0:0".into(), |a| a.to_string())
}

async fn over_udp(
    spec: &SipSpec,
    cx: &ProbeContext,
    tx: &Transaction,
    deadline: Instant,
    phases: &mut Vec<(Phase, Duration)>,
) -> Result<Message, Failure> {
    let addrs = cx.addresses(&spec.host, phases).await?;
    let target = SocketAddr::new(addrs[0], spec.port);
    let io =
        |e: std::io::Error| Failure::new(crate::failure::connect_reason(&e), format!("UDP {target}: {e}"));
    let sock = crate::os::udp_socket_to(target).await.map_err(io)?;
    let tag = message::token(8);
    let via = sent_by(sock.local_addr().ok());
    let request = message::options_request(&params(spec, &via, tx, &tag));
    let t = Instant::now();
    let r = transaction::over_udp(&sock, &request, tx, deadline).await;
    phases.push((Phase::Request, t.elapsed()));
    r
}

async fn over_stream(
    spec: &SipSpec,
    stream: tokio::net::TcpStream,
    tx: &Transaction,
    deadline: Instant,
    phases: &mut Vec<(Phase, Duration)>,
) -> Result<Message, Failure> {
    let local = stream.local_addr().ok();
    over_stream_with(spec, stream, local, tx, deadline, phases).await
}

async fn over_stream_with<S: AsyncRead + AsyncWrite + Unpin + Send>(
    spec: &SipSpec,
    mut stream: S,
    local: Option<SocketAddr>,
    tx: &Transaction,
    deadline: Instant,
    phases: &mut Vec<(Phase, Duration)>,
) -> Result<Message, Failure> {
    let tag = message::token(8);
    let via = sent_by(local);
    let request = message::options_request(&params(spec, &via, tx, &tag));
    let t = Instant::now();
    let r = transaction::over_stream(&mut stream, &request, tx, deadline).await;
    phases.push((Phase::Request, t.elapsed()));
    let _ = tokio::time::timeout(Duration::from_millis(50), stream.shutdown()).await;
    r
}
