//! `kind = "sql_browser"`: the SQL Server Browser of a server answers an MS-SQLR
//! `CLNT_UCAST_EX` on UDP 1434 with its instance list, and it holds `expect_instance` —
//! on a Lync Front End `RTCLOCAL`, the local replica of the Central Management Store
//! that configuration replication writes to (or `LYNCLOCAL`). An administration check:
//! usually `purpose = "admin"`.
//!
//! The request is retransmitted (1 s, doubling) until an answer or the timeout. Reasons:
//! `sql_instance_missing` (the browser answered, without the instance: the detail lists
//! those it has), `ssrp_malformed`, `timeout`, `refused` (nothing listens on the port).

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{BuildCx, BuildError, CheckKind, FailureReason, Outcome, ProbeContext};
use crate::net::ssrp;
use crate::ua::conn::{host_port, udp_exchange};

/// The SQL Server Browser's port (MS-SQLR §2.1).
pub const DEFAULT_PORT: u16 = 1434;

/// A sql_browser check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlBrowserSpec {
    /// Host name or address literal.
    pub host: String,
    /// Port.
    pub port: u16,
    /// The instance that must be listed (any case), if any.
    pub expect_instance: Option<String>,
}

/// The keys of `kind = "sql_browser"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlBrowserKeys {
    /// Target host (default: the pool FQDN).
    pub host: Option<Spanned<String>>,
    /// Port (default 1434).
    pub port: Option<Spanned<u16>>,
    /// The instance that must be listed (`RTCLOCAL`, `LYNCLOCAL`).
    pub expect_instance: Option<Spanned<String>>,
    /// Probe every address behind the target name.
    pub each_address: Option<Spanned<bool>>,
}

impl CheckKind for SqlBrowserSpec {
    type Keys = SqlBrowserKeys;

    /// The target label is `host:port`.
    fn build(keys: &SqlBrowserKeys, cx: &BuildCx<'_>) -> Result<(SqlBrowserSpec, String), BuildError> {
        let host = cx.host(keys.host.as_ref())?;
        let port = match keys.port.as_ref() {
            None => DEFAULT_PORT,
            p => cx.port(p)?,
        };
        let expect_instance = match keys.expect_instance.as_ref() {
            None => None,
            Some(i) => {
                let name = i.get_ref().trim();
                if name.is_empty() || name.len() > 255 || name.contains(';') {
                    return Err(
                        cx.err(i.span(), "expect_instance: an instance name (1-255 characters, no ';')")
                    );
                }
                Some(name.to_owned())
            }
        };
        let target = host_port(&host, port);
        Ok((SqlBrowserSpec { host, port, expect_instance }, target))
    }

    fn probe(&self, cx: &ProbeContext) -> impl std::future::Future<Output = Outcome> + Send {
        probe(self, cx)
    }

    fn each_address(keys: &SqlBrowserKeys) -> bool {
        keys.each_address.as_ref().is_some_and(|v| *v.get_ref())
    }

    fn host(&self) -> Option<&str> {
        Some(&self.host)
    }
}

/// Runs a sql_browser probe.
pub async fn probe(spec: &SqlBrowserSpec, cx: &ProbeContext) -> Outcome {
    let mut phases = Vec::with_capacity(2);
    let request = [ssrp::CLNT_UCAST_EX];
    let answered =
        udp_exchange(&spec.host, spec.port, cx, &mut phases, &request, Duration::from_secs(1), |d| {
            Ok(Some(ssrp::parse_svr_resp(d)?))
        })
        .await;
    let instances = match answered {
        Ok((i, _)) => i,
        Err(f) => return Outcome::failed(f, phases),
    };
    match &spec.expect_instance {
        Some(want) if !instances.iter().any(|i| i.name.eq_ignore_ascii_case(want)) => {
            let listed: Vec<&str> = instances.iter().map(|i| i.name.as_str()).collect();
            Outcome::fail(
                FailureReason::SqlInstanceMissing,
                format!("no instance {want}; the browser lists {}", listed.join(", ")),
                phases,
            )
        }
        _ => Outcome::pass(phases),
    }
}
