//! `kind = "sip_discovery"`: the path a client takes to sign in. The SRV record (e.g.
//! `_sipinternaltls._tcp.<domain>`) names a host and port; the host's addresses are
//! resolved; TLS is set up with SNI = that host, whose certificate must cover it; an
//! OPTIONS transaction runs. The outcome says which pool the client lands on
//! (`points_to`) and, with `expect_pool`, fails with `dns_wrong_pool` when it is not the
//! planned one.
//!
//! Among the SRV answers the probe takes the lowest priority and, within it, the
//! highest weight (then the first name): a deterministic choice, so that the result does
//! not flap between targets from one probe to the next the way a client's weighted
//! random choice would.

use std::time::Duration;

use hickory_proto::rr::{Name, RecordType};
use tokio::time::Instant;

use crate::sip::message::Transport;
use crate::ua::options::{self, SipSpec};
use serde::Deserialize;
use toml::Spanned;

use super::{BuildCx, BuildError, CheckKind, Failure, FailureReason, Measure, Outcome, Phase, ProbeContext};
use crate::model::pool::Pool;
use crate::net::tls::TlsOptions;

/// A sip_discovery check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipDiscoverySpec {
    /// The SRV record.
    pub record: Name,
    /// Transport of the service the record names.
    pub transport: Transport,
    /// Optional Request-URI user.
    pub user: Option<String>,
    /// Final SIP codes that pass; empty: any 2xx.
    pub expect_status: Vec<u16>,
    /// TLS options.
    pub opts: TlsOptions,
    /// The instance's timeout.
    pub budget: Duration,
    /// Every pool (to say where the record points).
    pub pools: Vec<Pool>,
    /// The pool clients must land on.
    pub expect_pool: Option<String>,
}

/// The keys of `kind = "sip_discovery"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipDiscoveryKeys {
    /// The SRV record; `{fqdn}` allowed.
    pub record: Option<Spanned<String>>,
    /// udp, tcp or tls (default: from the record's name).
    pub transport: Option<Spanned<String>>,
    /// Request-URI user part.
    pub user: Option<Spanned<String>>,
    /// Accepted final status codes (default: any 2xx).
    pub expect_status: Option<Spanned<Vec<u16>>>,
    /// The pool clients must land on.
    pub expect_pool: Option<Spanned<String>>,
    /// Lowest TLS version (overrides the pool's).
    pub tls_min_version: Option<Spanned<String>>,
    /// Record the chain but do not verify it.
    pub tls_skip_verify: Option<Spanned<bool>>,
    /// Fail with `cert_expiring` when the leaf expires within this many days.
    pub min_days_valid: Option<Spanned<u32>>,
}

impl CheckKind for SipDiscoverySpec {
    type Keys = SipDiscoveryKeys;
    const MEASURES: &'static [&'static Measure] = &[&crate::ua::SIP_STATUS, &crate::ua::SIP_SERVER];

    /// The target label is the SRV record.
    fn build(keys: &SipDiscoveryKeys, cx: &BuildCx<'_>) -> Result<(SipDiscoverySpec, String), BuildError> {
        let rec = keys
            .record
            .as_ref()
            .ok_or_else(|| cx.err(cx.name_span.clone(), "record: required for kind \"sip_discovery\""))?;
        let (record, text) = cx.record_name(rec)?;
        let lower = text.to_ascii_lowercase();
        let transport = match &keys.transport {
            Some(t) => cx.transport(t)?,
            // `_sipinternaltls._tcp`, `_sip._tls`, `_sipfederationtls._tcp`: TLS.
            None if lower.contains("tls") => Transport::Tls,
            None if lower.contains("._udp.") => Transport::Udp,
            None => Transport::Tcp,
        };
        let spec = SipDiscoverySpec {
            record,
            transport,
            user: keys.user.as_ref().map(|u| u.get_ref().clone()),
            expect_status: cx.status_codes(
                keys.expect_status.as_ref(),
                200..=699,
                "a final SIP status code",
            )?,
            opts: cx.tls_options(&super::TlsKeys {
                tls_min_version: keys.tls_min_version.as_ref(),
                tls_skip_verify: keys.tls_skip_verify.as_ref(),
                min_days_valid: keys.min_days_valid.as_ref(),
            })?,
            budget: cx.timeout,
            pools: cx.pools.to_vec(),
            expect_pool: cx.expect_pool(keys.expect_pool.as_ref())?,
        };
        Ok((spec, text))
    }

    fn probe(&self, cx: &ProbeContext) -> impl std::future::Future<Output = Outcome> + Send {
        probe(self, cx)
    }

    fn expect_pool(&self) -> Option<&str> {
        self.expect_pool.as_deref()
    }
}

/// Runs a sip_discovery probe.
pub async fn probe(spec: &SipDiscoverySpec, cx: &ProbeContext) -> Outcome {
    let t = Instant::now();
    let answer = match cx.dns.query(&spec.record, RecordType::SRV, spec.budget / 2).await {
        Ok(a) => a,
        Err(e) => {
            let f = Failure::from(e);
            return Outcome::fail(f.reason, f.detail, vec![(Phase::Resolve, t.elapsed())]);
        }
    };
    let srv_time = t.elapsed();
    if let Err(Failure { reason, detail, .. }) = super::answered(&answer) {
        return Outcome::fail(reason, detail, vec![(Phase::Resolve, srv_time)]);
    }
    let chosen = answer
        .records
        .iter()
        .filter_map(|r| match r {
            crate::net::dns::Rec::Srv(s) => Some(s),
            _ => None,
        })
        .min_by(|a, b| {
            a.priority.cmp(&b.priority).then(b.weight.cmp(&a.weight)).then(a.target.cmp(&b.target))
        });
    let Some((port, host)) = chosen.map(|s| (s.port, s.target.trim_end_matches('.').to_owned())) else {
        return Outcome::fail(
            FailureReason::DnsNoAnswer,
            "no usable SRV target",
            vec![(Phase::Resolve, srv_time)],
        );
    };
    let points_to = spec
        .pools
        .iter()
        .find(|p| p.owns_name(&host))
        .map_or_else(|| crate::model::pool::UNKNOWN.to_owned(), |p| p.name.clone());
    if let Some(want) = spec.expect_pool.as_ref().filter(|w| **w != points_to) {
        let mut o = Outcome::fail(
            FailureReason::DnsWrongPool,
            format!("clients are sent to {host}:{port} ({points_to}), expected pool {want}"),
            vec![(Phase::Resolve, srv_time)],
        );
        o.points_to = Some(points_to);
        return o;
    }
    let sip_spec = SipSpec {
        host: host.clone(),
        port,
        transport: spec.transport,
        user: spec.user.clone(),
        expect_status: spec.expect_status.clone(),
        opts: spec.opts,
        budget: spec.budget.saturating_sub(t.elapsed()),
    };
    let mut o = options::probe(&sip_spec, cx).await;
    // The SRV lookup is part of resolving.
    match o.phases.iter_mut().find(|p| p.0 == Phase::Resolve) {
        Some(p) => p.1 += srv_time,
        None => o.phases.insert(0, (Phase::Resolve, srv_time)),
    }
    if let Err(f) = &mut o.result {
        f.detail = format!("{host}:{port}: {}", f.detail);
    }
    o.points_to = Some(points_to);
    o
}
