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

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UdpSocket;
use tokio::time::Instant;

use serde::Deserialize;
use toml::Spanned;

use super::{tcp, tls, BuildCx, BuildError, CheckKind, FailureReason, Outcome, Phase, ProbeContext};
use crate::sip::message::{
    self, Message, OptionsParams, ParseError, Parsed, Transaction, Transport, MAX_MESSAGE,
};
use crate::tls::TlsOptions;

/// RFC 3261 T1: the first retransmission interval.
pub const T1: Duration = Duration::from_millis(500);
/// RFC 3261 T2: the longest retransmission interval of a non-INVITE request.
pub const T2: Duration = Duration::from_secs(4);

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

/// `transport`: udp, tcp or tls (any case).
pub fn parse_transport(t: &Spanned<String>, cx: &BuildCx<'_>) -> Result<Transport, BuildError> {
    Transport::parse(t.get_ref()).ok_or_else(|| {
        cx.err(
            t.span(),
            &format!("transport: {:?} is not one of udp, tcp, tls", t.get_ref().to_ascii_lowercase()),
        )
    })
}

impl CheckKind for SipSpec {
    type Keys = SipKeys;

    /// The target label is `host:port`.
    fn build(keys: &SipKeys, cx: &BuildCx<'_>) -> Result<(SipSpec, String), BuildError> {
        let transport = match &keys.transport {
            None => Transport::Tls,
            Some(t) => parse_transport(t, cx)?,
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
        let target = tcp::host_port(&host, port);
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
        probe(self, cx)
    }

    fn each_address(keys: &SipKeys) -> bool {
        keys.each_address.as_ref().is_some_and(|v| *v.get_ref())
    }

    fn host(&self) -> Option<&str> {
        Some(&self.host)
    }
}

/// Why a transaction produced no usable final response: the reason and a detail.
#[derive(Debug)]
pub struct TxError(pub FailureReason, pub String);

/// Runs a sip probe.
pub async fn probe(spec: &SipSpec, cx: &ProbeContext) -> Outcome {
    // End a little before the scheduler's deadline so the probe reports its own reason
    // (a malformed answer, a stall) rather than a bare timeout.
    let deadline = Instant::now() + spec.budget.saturating_sub(spec.budget / 50 + Duration::from_millis(5));
    let mut phases = Vec::with_capacity(4);
    let tx = message::new_transaction();
    let result = match spec.transport {
        Transport::Udp => over_udp(spec, cx, &tx, deadline, &mut phases).await,
        Transport::Tcp => match tcp::connect(&spec.host, spec.port, cx, &mut phases).await {
            Err((r, d)) => return Outcome::fail(r, d, phases),
            Ok(s) => over_stream(spec, s, &tx, deadline, &mut phases).await,
        },
        Transport::Tls => {
            let (stream, info) = match tls::open(&spec.host, spec.port, &spec.opts, cx, &mut phases).await {
                Ok(v) => v,
                Err(o) => return o,
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

fn finish(spec: &SipSpec, result: Result<Message, TxError>, phases: Vec<(Phase, Duration)>) -> Outcome {
    match result {
        Err(TxError(reason, detail)) => Outcome::fail(reason, detail, phases),
        Ok(resp) => {
            let code = resp.status().unwrap_or(0);
            let mut o = if let Err(want) = super::status_accepted(&spec.expect_status, code) {
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
            o.sip_status = Some(code);
            o.sip_server = resp.software().map(|s| s.chars().take(128).collect());
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
) -> Result<Message, TxError> {
    let addrs = cx.addresses(&spec.host, phases).await.map_err(|f| TxError(f.reason, f.detail))?;
    let target = SocketAddr::new(addrs[0], spec.port);
    let io = |e: std::io::Error| TxError(super::connect_reason(&e), format!("UDP {target}: {e}"));
    let sock = crate::os::udp_socket_to(target).await.map_err(io)?;
    let tag = message::token(8);
    let via = sent_by(sock.local_addr().ok());
    let request = message::options_request(&params(spec, &via, tx, &tag));
    let t = Instant::now();
    let r = udp_transaction(&sock, &request, tx, deadline).await;
    phases.push((Phase::Request, t.elapsed()));
    r
}

/// A socket that sends and receives datagrams: the real one, or a recorder in tests.
pub trait Datagrams {
    /// Sends one datagram.
    fn send(&self, buf: &[u8]) -> impl std::future::Future<Output = std::io::Result<usize>> + Send;
    /// Receives one datagram into the spare capacity of `buf` (which starts empty).
    fn recv_buf(&self, buf: &mut Vec<u8>)
        -> impl std::future::Future<Output = std::io::Result<usize>> + Send;
}

impl Datagrams for UdpSocket {
    fn send(&self, buf: &[u8]) -> impl std::future::Future<Output = std::io::Result<usize>> + Send {
        UdpSocket::send(self, buf)
    }
    fn recv_buf(
        &self,
        buf: &mut Vec<u8>,
    ) -> impl std::future::Future<Output = std::io::Result<usize>> + Send {
        UdpSocket::recv_buf(self, buf)
    }
}

/// The UDP client transaction: send, retransmit on timer E, wait for the final response.
pub async fn udp_transaction<S: Datagrams + Sync>(
    sock: &S,
    request: &[u8],
    tx: &Transaction,
    deadline: Instant,
) -> Result<Message, TxError> {
    let io = |e: std::io::Error| TxError(super::connect_reason(&e), format!("UDP: {e}"));
    sock.send(request).await.map_err(io)?;
    crate::trace::step("sip", || {
        format!("sent over UDP ({} bytes):\n{}", request.len(), crate::trace::mask_credentials(request))
    });
    let mut interval = T1;
    let mut next = Instant::now() + interval;
    // Capacity, not zeroed length: the datagram is written straight into it.
    let mut buf: Vec<u8> = Vec::with_capacity(MAX_MESSAGE);
    let mut malformed: Option<ParseError> = None;
    let mut sends = 1u32;
    loop {
        tokio::select! {
            r = { buf.clear(); sock.recv_buf(&mut buf) } => {
                let n = r.map_err(io)?;
                crate::trace::step("sip", || format!("received a datagram ({n} bytes):\n{}", crate::trace::mask_credentials(&buf[..n])));
                match message::parse(&buf[..n], false) {
                    Ok(Parsed::Complete(m, _)) if m.answers(tx) => {
                        if m.status().is_some_and(|c| c >= 200) {
                            return Ok(m);
                        }
                        // Provisional: the server has the request; retransmit at T2.
                        interval = T2;
                    }
                    Ok(_) => {}
                    Err(e) => malformed = Some(e),
                }
            }
            _ = tokio::time::sleep_until(next.min(deadline)) => {
                if Instant::now() >= deadline {
                    return Err(match malformed {
                        Some(e) => TxError(FailureReason::SipMalformed, format!("no valid response; received: {e}")),
                        None => TxError(FailureReason::Timeout, format!("no final response to {sends} transmissions")),
                    });
                }
                sock.send(request).await.map_err(io)?;
                sends += 1;
                crate::trace::step("sip", || format!("no final response yet: retransmission {sends}"));
                interval = (interval * 2).min(T2);
                next = Instant::now() + interval;
            }
        }
    }
}

async fn over_stream(
    spec: &SipSpec,
    stream: tokio::net::TcpStream,
    tx: &Transaction,
    deadline: Instant,
    phases: &mut Vec<(Phase, Duration)>,
) -> Result<Message, TxError> {
    let local = stream.local_addr().ok();
    over_stream_with(spec, stream, local, tx, deadline, phases).await
}

async fn over_stream_with<S: AsyncRead + AsyncWrite + Unpin>(
    spec: &SipSpec,
    mut stream: S,
    local: Option<SocketAddr>,
    tx: &Transaction,
    deadline: Instant,
    phases: &mut Vec<(Phase, Duration)>,
) -> Result<Message, TxError> {
    let tag = message::token(8);
    let via = sent_by(local);
    let request = message::options_request(&params(spec, &via, tx, &tag));
    let t = Instant::now();
    let r = match tokio::time::timeout_at(deadline, stream_transaction(&mut stream, &request, tx)).await {
        Ok(r) => r,
        Err(_) => Err(TxError(FailureReason::Timeout, "no final response before the deadline".into())),
    };
    phases.push((Phase::Request, t.elapsed()));
    let _ = tokio::time::timeout(Duration::from_millis(50), stream.shutdown()).await;
    r
}

/// The stream client transaction: write, then read and frame until our final response.
pub async fn stream_transaction<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    request: &[u8],
    tx: &Transaction,
) -> Result<Message, TxError> {
    let io = |e: std::io::Error| TxError(crate::tls::io_reason(&e), format!("{e}"));
    stream.write_all(request).await.map_err(io)?;
    stream.flush().await.map_err(io)?;
    crate::trace::step("sip", || {
        format!("sent ({} bytes):\n{}", request.len(), crate::trace::mask_credentials(request))
    });
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        // Frame and drop every complete message already buffered.
        loop {
            match message::parse(&buf, true) {
                Ok(Parsed::Complete(m, used)) => {
                    crate::trace::step("sip", || {
                        format!("received ({used} bytes):\n{}", crate::trace::mask_credentials(&buf[..used]))
                    });
                    buf.drain(..used);
                    if m.answers(tx) && m.status().is_some_and(|c| c >= 200) {
                        return Ok(m);
                    }
                }
                Ok(Parsed::Incomplete) => break,
                Err(e) => {
                    crate::trace::step("sip", || {
                        format!(
                            "received bytes that are not SIP ({e}):\n{}",
                            crate::trace::mask_credentials(&buf)
                        )
                    });
                    return Err(TxError(FailureReason::SipMalformed, e.to_string()));
                }
            }
        }
        let room = (MAX_MESSAGE + 4).saturating_sub(buf.len()).clamp(1, chunk.len());
        let n = stream.read(&mut chunk[..room]).await.map_err(io)?;
        if n == 0 {
            return Err(if buf.is_empty() {
                TxError(FailureReason::Io, "connection closed without a response".into())
            } else {
                TxError(
                    FailureReason::SipMalformed,
                    format!("connection closed after {} bytes of a message", buf.len()),
                )
            });
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}
