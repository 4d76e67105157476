//! `kind = "tcp"`: resolve the target host, connect, close.
//!
//! Each run opens a fresh connection: reusing one would hide firewall and
//! load-balancer faults. Addresses are tried in order, as a client does, and the probe
//! passes when one accepts.

use serde::Deserialize;
use toml::Spanned;

use super::{BuildCx, BuildError, CheckKind, Outcome, ProbeContext};
use crate::ua::conn::{connect, host_port};

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

/// Runs a tcp probe.
pub async fn probe(spec: &TcpSpec, cx: &ProbeContext) -> Outcome {
    let mut phases = Vec::with_capacity(2);
    match connect(&spec.host, spec.port, cx, &mut phases).await {
        Ok(stream) => {
            drop(stream);
            Outcome::pass(phases)
        }
        Err(f) => Outcome::failed(f, phases),
    }
}
