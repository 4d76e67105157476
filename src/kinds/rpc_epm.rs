//! `kind = "rpc_epm"`: a DCE/RPC `bind` to the endpoint mapper on TCP 135 (MS-RPCE) and
//! its `bind_ack` — the first step of DCOM and RPC, which user moves between pools, OCS
//! 2007 R2's administration (WMI) and the management tools take. An administration
//! check: usually `purpose = "admin"`.
//!
//! Reasons: `rpc_rejected` (a `bind_nak`, or the context rejected), `rpc_malformed` (not
//! a bind answer), `timeout`, and the connection's.

use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use toml::Spanned;

use super::{BuildCx, BuildError, CheckKind, Failure, FailureReason, Outcome, ProbeContext};
use crate::model::outcome::Phase;
use crate::net::dcerpc::{self, Bound};
use crate::ua::conn::{connect, host_port};

/// The endpoint mapper's port.
pub const DEFAULT_PORT: u16 = 135;

/// An rpc_epm check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcEpmSpec {
    /// Host name or address literal.
    pub host: String,
    /// Port.
    pub port: u16,
}

/// The keys of `kind = "rpc_epm"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RpcEpmKeys {
    /// Target host (default: the pool FQDN).
    pub host: Option<Spanned<String>>,
    /// Port (default 135).
    pub port: Option<Spanned<u16>>,
    /// Probe every address behind the target name.
    pub each_address: Option<Spanned<bool>>,
}

impl CheckKind for RpcEpmSpec {
    type Keys = RpcEpmKeys;

    /// The target label is `host:port`.
    fn build(keys: &RpcEpmKeys, cx: &BuildCx<'_>) -> Result<(RpcEpmSpec, String), BuildError> {
        let host = cx.host(keys.host.as_ref())?;
        let port = match keys.port.as_ref() {
            None => DEFAULT_PORT,
            p => cx.port(p)?,
        };
        let target = host_port(&host, port);
        Ok((RpcEpmSpec { host, port }, target))
    }

    fn probe(&self, cx: &ProbeContext) -> impl std::future::Future<Output = Outcome> + Send {
        probe(self, cx)
    }

    fn each_address(keys: &RpcEpmKeys) -> bool {
        keys.each_address.as_ref().is_some_and(|v| *v.get_ref())
    }

    fn host(&self) -> Option<&str> {
        Some(&self.host)
    }
}

/// Runs an rpc_epm probe.
pub async fn probe(spec: &RpcEpmSpec, cx: &ProbeContext) -> Outcome {
    let mut phases = Vec::with_capacity(3);
    match bind(spec, cx, &mut phases).await {
        Ok(Bound::Accepted(_)) => Outcome::pass(phases),
        Ok(Bound::Rejected(why)) => Outcome::fail(FailureReason::RpcRejected, why, phases),
        Err(f) => Outcome::failed(f, phases),
    }
}

async fn bind(
    spec: &RpcEpmSpec,
    cx: &ProbeContext,
    phases: &mut Vec<(Phase, std::time::Duration)>,
) -> Result<Bound, Failure> {
    let mut stream = connect(&spec.host, spec.port, cx, phases).await?;
    let io = |e: std::io::Error| Failure::new(crate::failure::connect_reason(&e), format!("DCE/RPC: {e}"));
    let call_id = 1;
    let sent = Instant::now();
    stream.write_all(&dcerpc::epm_bind(call_id)).await.map_err(io)?;
    let mut buf = Vec::with_capacity(128);
    let mut chunk = [0u8; 512];
    loop {
        if let Some(len) = dcerpc::pdu_len(&buf) {
            if !(16..=dcerpc::MAX_RESPONSE).contains(&len) {
                return Err(Failure::new(FailureReason::RpcMalformed, format!("a fragment of {len} bytes")));
            }
            if buf.len() >= len {
                phases.push((Phase::Request, sent.elapsed()));
                return Ok(dcerpc::parse_bind_answer(&buf[..len], call_id)?);
            }
        }
        let n = stream.read(&mut chunk).await.map_err(io)?;
        if n == 0 {
            return Err(Failure::new(
                FailureReason::RpcMalformed,
                format!("the connection closed after {} bytes, before a bind answer", buf.len()),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}
