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

use super::sip::message::Transport;
use super::sip::{self, SipSpec};
use super::{FailureReason, Outcome, Phase, ProbeContext};
use crate::config::{CheckCx, ConfigError, Pool, RawCheck};
use crate::tls::TlsOptions;

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

impl SipDiscoverySpec {
    /// Validates the keys of `raw`; the target label is the SRV record.
    pub fn build(raw: &RawCheck, cx: &CheckCx<'_>) -> Result<(SipDiscoverySpec, String), ConfigError> {
        raw.reject_foreign(
            cx,
            &[
                "record",
                "transport",
                "user",
                "expect_status",
                "expect_pool",
                "tls_min_version",
                "tls_skip_verify",
                "min_days_valid",
            ],
        )?;
        let rec = raw
            .record
            .as_ref()
            .ok_or_else(|| cx.err(raw.name.span(), "record: required for kind \"sip_discovery\""))?;
        let text = cx.expand(rec, "record")?.trim_end_matches('.').to_owned();
        let record = Name::from_ascii(format!("{text}."))
            .map_err(|e| cx.err(rec.span(), &format!("record: {text:?} is not a DNS name: {e}")))?;
        let lower = text.to_ascii_lowercase();
        let transport = match raw.transport.as_ref().map(|t| t.get_ref().to_ascii_lowercase()) {
            Some(t) if t == "udp" => Transport::Udp,
            Some(t) if t == "tcp" => Transport::Tcp,
            Some(t) if t == "tls" => Transport::Tls,
            Some(other) => {
                let span = raw.transport.as_ref().map_or(0..0, |t| t.span());
                return Err(cx.err(span, &format!("transport: {other:?} is not one of udp, tcp, tls")));
            }
            // `_sipinternaltls._tcp`, `_sip._tls`, `_sipfederationtls._tcp`: TLS.
            None if lower.contains("tls") => Transport::Tls,
            None if lower.contains("._udp.") => Transport::Udp,
            None => Transport::Tcp,
        };
        let expect_pool = match &raw.expect_pool {
            Some(p) if !cx.pools.iter().any(|x| &x.name == p.get_ref()) => {
                return Err(cx.err(p.span(), &format!("expect_pool: unknown pool {:?}", p.get_ref())));
            }
            p => p.as_ref().map(|p| p.get_ref().clone()),
        };
        let spec = SipDiscoverySpec {
            record,
            transport,
            user: raw.user.as_ref().map(|u| u.get_ref().clone()),
            expect_status: raw.expect_status.as_ref().map(|v| v.get_ref().clone()).unwrap_or_default(),
            opts: cx.tls_options(raw)?,
            budget: cx.timeout,
            pools: cx.pools.to_vec(),
            expect_pool,
        };
        Ok((spec, text))
    }
}

/// Runs a sip_discovery probe.
pub async fn probe(spec: &SipDiscoverySpec, cx: &ProbeContext) -> Outcome {
    let t = Instant::now();
    let answer = match cx.dns.query(&spec.record, RecordType::SRV, spec.budget / 2).await {
        Ok(a) => a,
        Err(super::dns::QueryError::Timeout(d)) => {
            return Outcome::fail(FailureReason::DnsTimeout, d, vec![(Phase::Resolve, t.elapsed())]);
        }
        Err(super::dns::QueryError::Other(d)) => {
            return Outcome::fail(FailureReason::DnsError, d, vec![(Phase::Resolve, t.elapsed())]);
        }
    };
    let srv_time = t.elapsed();
    if let Err((reason, detail)) = super::dns::judge(&answer, &super::dns::Expectation::AnyAnswer) {
        return Outcome::fail(reason, detail, vec![(Phase::Resolve, srv_time)]);
    }
    let Some((_, _, port, host)) = answer
        .records
        .iter()
        .filter_map(|r| super::dns::srv_fields(r))
        .min_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)).then(a.3.cmp(&b.3)))
    else {
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
        .map_or_else(|| super::dns::UNKNOWN.to_owned(), |p| p.name.clone());
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
    let mut o = sip::probe(&sip_spec, cx).await;
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
