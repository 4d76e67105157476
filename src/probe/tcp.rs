//! `kind = "tcp"`: resolve the target host, connect, close.
//!
//! Each run opens a fresh connection: reusing one would hide firewall and
//! load-balancer faults. Addresses are tried in order, as a client does, and the probe
//! passes when one accepts.

use std::net::SocketAddr;

use tokio::net::TcpStream;
use tokio::time::Instant;

use serde::Deserialize;
use toml::Spanned;

use super::{connect_reason, BuildCx, BuildError, CheckKind, FailureReason, Outcome, Phase, ProbeContext};

/// A tcp check: `host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpSpec {
    /// Host name or address literal.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

/// The keys of `kind = "tcp"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpKeys {
    /// Target host (default: the pool FQDN); `{fqdn}` is replaced by the pool FQDN.
    pub host: Option<Spanned<String>>,
    /// Target port.
    pub port: Option<Spanned<u16>>,
    /// Probe every address behind the target name.
    pub each_address: Option<Spanned<bool>>,
}

impl CheckKind for TcpSpec {
    type Keys = TcpKeys;

    /// The target label is `host:port`.
    fn build(keys: &TcpKeys, cx: &BuildCx<'_>) -> Result<(TcpSpec, String), BuildError> {
        let host = cx.host(keys.host.as_ref())?;
        let port = cx.port(keys.port.as_ref())?;
        let target = host_port(&host, port);
        Ok((TcpSpec { host, port }, target))
    }

    fn probe(&self, cx: &ProbeContext) -> impl std::future::Future<Output = Outcome> + Send {
        probe(self, cx)
    }

    fn each_address(keys: &TcpKeys) -> bool {
        keys.each_address.as_ref().is_some_and(|v| *v.get_ref())
    }

    fn host(&self) -> Option<&str> {
        Some(&self.host)
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
    let addrs = cx.addresses(host, phases).await.map_err(|f| (f.reason, f.detail))?;
    let t = Instant::now();
    let mut last = None;
    for ip in addrs {
        let addr = SocketAddr::new(ip, port);
        let c = Instant::now();
        match TcpStream::connect(addr).await {
            Ok(s) => {
                phases.push((Phase::Connect, t.elapsed()));
                // Requests leave at once (SIP clients do this): with Nagle, a request
                // written right after one that gets no response (an ACK) waits for the
                // peer's delayed acknowledgement, about 40 ms.
                let _ = s.set_nodelay(true);
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
