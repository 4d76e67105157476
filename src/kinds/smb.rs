//! `kind = "smb"`: an SMB2 NEGOTIATE to a server (TCP 445) and its response, as every SMB
//! client opens a session — the path Lync Server's Central Management Store replication
//! takes to copy configuration to each server. Passes when the server answers with a
//! dialect offered (2.0.2, 2.1, 3.0, 3.0.2) and at least `min_dialect` when set;
//! `coexist_smb_dialect_info{dialect}` says which. An administration check: usually
//! `purpose = "admin"`.
//!
//! Reasons: `smb_dialect` (below `min_dialect`), `smb_malformed` (not an SMB2 NEGOTIATE
//! response: an error status, SMB1, cut short), `timeout`, and the connection's.

use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use toml::Spanned;

use super::{BuildCx, BuildError, CheckKind, Failure, FailureReason, Measure, Outcome, ProbeContext};
use crate::model::outcome::Phase;
use crate::net::smb;
use crate::ua::conn::{connect, host_port};

/// The SMB port.
pub const DEFAULT_PORT: u16 = 445;

/// `coexist_smb_dialect_info{dialect}`.
pub static SMB_DIALECT: Measure = Measure {
    name: "coexist_smb_dialect_info",
    help:
        "1 for the SMB dialect the server chose in the last passing probe (dialect: 2.0.2, 2.1, 3.0, 3.0.2).",
    label: Some("dialect"),
};

/// An smb check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmbSpec {
    /// Host name or address literal.
    pub host: String,
    /// Port.
    pub port: u16,
    /// The lowest dialect accepted, if any.
    pub min_dialect: Option<u16>,
}

/// The keys of `kind = "smb"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmbKeys {
    /// Target host (default: the pool FQDN).
    pub host: Option<Spanned<String>>,
    /// Port (default 445).
    pub port: Option<Spanned<u16>>,
    /// The lowest dialect accepted: `2.0.2`, `2.1`, `3.0`, `3.0.2`.
    pub min_dialect: Option<Spanned<String>>,
    /// Probe every address behind the target name.
    pub each_address: Option<Spanned<bool>>,
}

impl CheckKind for SmbSpec {
    type Keys = SmbKeys;
    const MEASURES: &'static [&'static Measure] = &[&SMB_DIALECT];

    /// The target label is `host:port`.
    fn build(keys: &SmbKeys, cx: &BuildCx<'_>) -> Result<(SmbSpec, String), BuildError> {
        let host = cx.host(keys.host.as_ref())?;
        let port = match keys.port.as_ref() {
            None => DEFAULT_PORT,
            p => cx.port(p)?,
        };
        let min_dialect = match keys.min_dialect.as_ref() {
            None => None,
            Some(d) => Some(smb::dialect_of(d.get_ref().trim()).ok_or_else(|| {
                cx.err(
                    d.span(),
                    &format!("min_dialect: {:?} is not one of 2.0.2, 2.1, 3.0, 3.0.2", d.get_ref()),
                )
            })?),
        };
        let target = host_port(&host, port);
        Ok((SmbSpec { host, port, min_dialect }, target))
    }

    fn probe(&self, cx: &ProbeContext) -> impl std::future::Future<Output = Outcome> + Send {
        probe(self, cx)
    }

    fn each_address(keys: &SmbKeys) -> bool {
        keys.each_address.as_ref().is_some_and(|v| *v.get_ref())
    }

    fn host(&self) -> Option<&str> {
        Some(&self.host)
    }
}

/// Runs an smb probe.
pub async fn probe(spec: &SmbSpec, cx: &ProbeContext) -> Outcome {
    let mut phases = Vec::with_capacity(3);
    match negotiate(spec, cx, &mut phases).await {
        Ok(n) => match spec.min_dialect.filter(|min| n.dialect < *min) {
            Some(min) => Outcome::fail(
                FailureReason::SmbDialect,
                format!(
                    "the server chose SMB {}, below min_dialect {}",
                    smb::dialect_name(n.dialect),
                    smb::dialect_name(min)
                ),
                phases,
            ),
            None => {
                let mut o = Outcome::pass(phases);
                o.set_labelled(&SMB_DIALECT, Some(smb::dialect_name(n.dialect)), 1.0);
                o
            }
        },
        Err(f) => Outcome::failed(f, phases),
    }
}

async fn negotiate(
    spec: &SmbSpec,
    cx: &ProbeContext,
    phases: &mut Vec<(Phase, std::time::Duration)>,
) -> Result<smb::Negotiated, Failure> {
    let mut stream = connect(&spec.host, spec.port, cx, phases).await?;
    let io = |e: std::io::Error| Failure::new(crate::failure::connect_reason(&e), format!("SMB: {e}"));
    let mut guid = [0u8; 16];
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut guid).is_err() {
        return Err(Failure::new(FailureReason::Internal, "the system's random source failed"));
    }
    let sent = Instant::now();
    stream.write_all(&smb::negotiate_request(&guid)).await.map_err(io)?;
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(len) = smb::message_len(&buf) {
            if len > smb::MAX_RESPONSE {
                return Err(Failure::new(FailureReason::SmbMalformed, format!("an answer of {len} bytes")));
            }
            if buf.len() >= len {
                phases.push((Phase::Request, sent.elapsed()));
                return Ok(smb::parse_negotiate_response(&buf[..len])?);
            }
        }
        let n = stream.read(&mut chunk).await.map_err(io)?;
        if n == 0 {
            return Err(Failure::new(
                FailureReason::SmbMalformed,
                format!("the connection closed after {} bytes, before a NEGOTIATE response", buf.len()),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}
