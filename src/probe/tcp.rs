//! `kind = "tcp"`: resolve the target host, connect, close.
//!
//! Each run opens a fresh connection: reusing one would hide firewall and
//! load-balancer faults. Addresses are tried in order, as a client does, and the probe
//! passes when one accepts.

use std::net::SocketAddr;

use tokio::net::TcpStream;
use tokio::time::Instant;

use super::{connect_reason, FailureReason, Outcome, Phase, ProbeContext};
use crate::config::{CheckCx, ConfigError, RawCheck};

/// A tcp check: `host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpSpec {
    /// Host name or address literal.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl TcpSpec {
    /// Validates the tcp keys of `raw`; the target label is `host:port`.
    pub fn build(raw: &RawCheck, cx: &CheckCx<'_>) -> Result<(TcpSpec, String), ConfigError> {
        raw.reject_foreign(cx, &["host", "port", "each_address"])?;
        let host = cx.host(raw)?;
        let port = cx.port(raw)?;
        let target = host_port(&host, port);
        Ok((TcpSpec { host, port }, target))
    }
}

/// `host:port`, with brackets around an IPv6 literal.
pub fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Resolves `host` and connects to its addresses in turn; returns the open stream.
/// Shared by every connecting kind so that resolve/connect phases and reasons agree.
pub async fn connect(
    host: &str,
    port: u16,
    cx: &ProbeContext,
    phases: &mut Vec<(Phase, std::time::Duration)>,
) -> Result<TcpStream, (FailureReason, String)> {
    let addrs = match cx.address {
        // each_address: the scheduler resolved the name and pinned one address.
        Some(ip) => vec![ip],
        None => {
            let t = Instant::now();
            let addrs = cx.resolver.lookup_ip(host).await.map_err(|e| (FailureReason::Resolve, e))?;
            phases.push((Phase::Resolve, t.elapsed()));
            addrs
        }
    };
    let t = Instant::now();
    let mut last = None;
    for ip in addrs {
        let addr = SocketAddr::new(ip, port);
        let c = Instant::now();
        match TcpStream::connect(addr).await {
            Ok(s) => {
                phases.push((Phase::Connect, t.elapsed()));
                crate::trace::step("connect", || {
                    let local = s.local_addr().map(|a| a.to_string()).unwrap_or_default();
                    format!(
                        "TCP {addr}: connected in {:.3} ms from {local}",
                        c.elapsed().as_secs_f64() * 1000.0
                    )
                });
                return Ok(s);
            }
            Err(e) => {
                crate::trace::step("connect", || {
                    format!("TCP {addr}: {e} after {:.3} ms", c.elapsed().as_secs_f64() * 1000.0)
                });
                last = Some((connect_reason(&e), format!("connect {addr}: {e}")))
            }
        }
    }
    Err(last.unwrap_or((FailureReason::Resolve, format!("{host}: no address"))))
}

/// Runs a tcp probe.
pub async fn probe(spec: &TcpSpec, cx: &ProbeContext) -> Outcome {
    let mut phases = Vec::with_capacity(2);
    match connect(&spec.host, spec.port, cx, &mut phases).await {
        Ok(stream) => {
            drop(stream);
            Outcome::pass(phases)
        }
        Err((reason, detail)) => Outcome::fail(reason, detail, phases),
    }
}
