//! `kind = "dns"`: one query straight to the configured servers, answer compared with
//! what the plan expects.
//!
//! The query is built and sent here (hickory-proto for the wire format) rather than
//! through a stub resolver, because a probe must report exactly what the server said:
//! a resolver hides SERVFAIL and REFUSED behind retries on other servers and caches
//! answers. Nothing is cached; UDP first, TCP when the answer is truncated.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use hickory_proto::rr::{Name, RecordType};
use tokio::time::Instant;

use serde::Deserialize;
use toml::Spanned;

use super::{BuildCx, BuildError, CheckKind, Failure, FailureReason, Measure, Outcome, Phase, ProbeContext};
use crate::net::dns::Answer;

/// Record types a dns check can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsType {
    /// IPv4 address.
    A,
    /// IPv6 address.
    Aaaa,
    /// Alias.
    Cname,
    /// Service location: `priority weight port target.`.
    Srv,
    /// Text.
    Txt,
}

impl DnsType {
    fn parse(s: &str) -> Option<DnsType> {
        Some(match s.to_ascii_uppercase().as_str() {
            "A" => DnsType::A,
            "AAAA" => DnsType::Aaaa,
            "CNAME" => DnsType::Cname,
            "SRV" => DnsType::Srv,
            "TXT" => DnsType::Txt,
            _ => return None,
        })
    }

    fn record_type(self) -> RecordType {
        match self {
            DnsType::A => RecordType::A,
            DnsType::Aaaa => RecordType::AAAA,
            DnsType::Cname => RecordType::CNAME,
            DnsType::Srv => RecordType::SRV,
            DnsType::Txt => RecordType::TXT,
        }
    }
}

/// What the answer must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expectation {
    /// Any non-empty answer passes.
    AnyAnswer,
    /// Exactly this set of answers (normalised text).
    Exact(BTreeSet<String>),
    /// At least these answers.
    Contains(BTreeSet<String>),
}

/// A dns check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsSpec {
    /// The absolute name queried.
    pub name: Name,
    /// The type queried.
    pub rtype: DnsType,
    /// What the answer must be.
    pub expect: Expectation,
    /// The instance's timeout, shared out between the servers when there are several.
    pub budget: Duration,
    /// Every pool of the configuration: the answer is attributed to one of them.
    pub pools: Vec<crate::model::pool::Pool>,
    /// The pool the answer must belong to (`expect_pool`).
    pub expect_pool: Option<String>,
}

/// The keys of `kind = "dns"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsKeys {
    /// The record name to query; `{fqdn}` allowed.
    pub record: Option<Spanned<String>>,
    /// The record type (A, AAAA, CNAME, SRV, TXT; default A).
    #[serde(rename = "type")]
    pub record_type: Option<Spanned<String>>,
    /// The exact answer set expected.
    pub expect: Option<Spanned<Vec<String>>>,
    /// Answers that must be among those returned.
    pub expect_contains: Option<Spanned<Vec<String>>>,
    /// The pool the answer must belong to.
    pub expect_pool: Option<Spanned<String>>,
}

/// `coexist_dns_answers`: how many records the last answer held.
pub static DNS_ANSWERS: Measure =
    Measure { name: "coexist_dns_answers", help: "Answer records in the last DNS response.", label: None };

impl CheckKind for DnsSpec {
    type Keys = DnsKeys;
    const MEASURES: &'static [&'static Measure] = &[&DNS_ANSWERS];

    /// The target label is the record name.
    fn build(keys: &DnsKeys, cx: &BuildCx<'_>) -> Result<(DnsSpec, String), BuildError> {
        let record = keys
            .record
            .as_ref()
            .ok_or_else(|| cx.err(cx.name_span.clone(), "record: required for kind \"dns\""))?;
        let (name, text) = cx.record_name(record)?;
        let rtype = match &keys.record_type {
            None => DnsType::A,
            Some(t) => DnsType::parse(t.get_ref()).ok_or_else(|| {
                cx.err(t.span(), &format!("type: {:?} is not one of A, AAAA, CNAME, SRV, TXT", t.get_ref()))
            })?,
        };
        let parse_set = |v: &Spanned<Vec<String>>, key: &str| -> Result<BTreeSet<String>, BuildError> {
            let mut set = BTreeSet::new();
            for item in v.get_ref() {
                let item = if item.contains("{fqdn}") {
                    cx.expand(&Spanned::new(v.span(), item.clone()), key)?
                } else {
                    item.clone()
                };
                set.insert(
                    normalise_expected(rtype, &item).map_err(|m| cx.err(v.span(), &format!("{key}: {m}")))?,
                );
            }
            Ok(set)
        };
        let expect = match (&keys.expect, &keys.expect_contains) {
            (Some(a), Some(_)) => {
                return Err(cx.err(a.span(), "expect: give either expect or expect_contains, not both"));
            }
            (Some(v), None) => Expectation::Exact(parse_set(v, "expect")?),
            (None, Some(v)) => Expectation::Contains(parse_set(v, "expect_contains")?),
            (None, None) => Expectation::AnyAnswer,
        };
        if let (Some(p), true) = (&keys.expect_pool, keys.expect.is_some() || keys.expect_contains.is_some())
        {
            return Err(cx.err(p.span(), "expect_pool: give either expect_pool or expect/expect_contains"));
        }
        let expect_pool = cx.expect_pool(keys.expect_pool.as_ref())?;
        let spec = DnsSpec { name, rtype, expect, budget: cx.timeout, pools: cx.pools.to_vec(), expect_pool };
        Ok((spec, text))
    }

    fn probe(&self, cx: &ProbeContext) -> impl std::future::Future<Output = Outcome> + Send {
        probe(self, cx)
    }

    fn timeout_reason(&self) -> FailureReason {
        FailureReason::DnsTimeout
    }

    fn expect_pool(&self) -> Option<&str> {
        self.expect_pool.as_deref()
    }
}

/// Normalises one expected answer to the form [`crate::net::dns::Rec::text`] produces.
fn normalise_expected(rtype: DnsType, s: &str) -> Result<String, String> {
    let s = s.trim();
    match rtype {
        DnsType::A => match s.parse::<IpAddr>() {
            Ok(IpAddr::V4(a)) => Ok(a.to_string()),
            _ => Err(format!("{s:?} is not an IPv4 address")),
        },
        DnsType::Aaaa => match s.parse::<IpAddr>() {
            Ok(IpAddr::V6(a)) => Ok(a.to_string()),
            _ => Err(format!("{s:?} is not an IPv6 address")),
        },
        DnsType::Cname => normalise_name(s),
        DnsType::Srv => {
            let parts: Vec<&str> = s.split_whitespace().collect();
            let bad = || format!("{s:?} is not an SRV answer \"priority weight port target.\"");
            if parts.len() != 4 {
                return Err(bad());
            }
            let nums: Result<Vec<u16>, _> = parts[..3].iter().map(|p| p.parse::<u16>()).collect();
            let nums = nums.map_err(|_| bad())?;
            Ok(format!("{} {} {} {}", nums[0], nums[1], nums[2], normalise_name(parts[3])?))
        }
        DnsType::Txt => Ok(s.to_owned()),
    }
}

fn normalise_name(s: &str) -> Result<String, String> {
    let n = s.trim_end_matches('.').to_ascii_lowercase();
    Name::from_ascii(format!("{n}.")).map_err(|e| format!("{s:?} is not a DNS name: {e}"))?;
    Ok(format!("{n}."))
}

/// Compares an answer with the expectation; `Ok` or the failure reason and detail.
pub fn judge(answer: &Answer, expect: &Expectation) -> Result<(), Failure> {
    super::answered(answer)?;
    let got: BTreeSet<String> = answer.records.iter().map(crate::net::dns::Rec::text).collect();
    let shown = || got.iter().cloned().collect::<Vec<_>>().join(", ");
    match expect {
        Expectation::AnyAnswer => Ok(()),
        Expectation::Exact(want) if &got == want => Ok(()),
        Expectation::Exact(want) => Err(Failure::new(
            FailureReason::DnsMismatch,
            format!("got [{}], expected [{}]", shown(), want.iter().cloned().collect::<Vec<_>>().join(", ")),
        )),
        Expectation::Contains(want) => {
            let missing: Vec<String> = want.difference(&got).cloned().collect();
            if missing.is_empty() {
                Ok(())
            } else {
                Err(Failure::new(
                    FailureReason::DnsMismatch,
                    format!("got [{}], missing [{}]", shown(), missing.join(", ")),
                ))
            }
        }
    }
}

pub use crate::model::pool::UNKNOWN;

/// Which pool the answer points at: SRV targets and CNAME targets by name (the pool FQDN
/// or a member), A/AAAA answers by address (every address must be one the pool FQDN or a
/// member resolves to now). `unknown` when no pool owns every answer; `None` for TXT.
async fn points_to(spec: &DnsSpec, answer: &Answer, cx: &ProbeContext) -> Option<String> {
    if spec.pools.is_empty() {
        return None;
    }
    let names: Vec<&str> = match spec.rtype {
        DnsType::Srv | DnsType::Cname => {
            answer.records.iter().filter_map(crate::net::dns::Rec::host).collect()
        }
        DnsType::A | DnsType::Aaaa => {
            for pool in &spec.pools {
                let mut addrs = std::collections::HashSet::new();
                for host in std::iter::once(&pool.fqdn).chain(&pool.members) {
                    if let Ok(ips) = cx.resolver.lookup_ip(host).await {
                        addrs.extend(ips);
                    }
                }
                if answer.records.iter().all(|r| r.ip().is_some_and(|ip| addrs.contains(&ip))) {
                    return Some(pool.name.clone());
                }
            }
            return Some(UNKNOWN.to_owned());
        }
        DnsType::Txt => return None,
    };
    let owner = spec.pools.iter().find(|p| names.iter().all(|n| p.owns_name(n)));
    Some(owner.map_or_else(|| UNKNOWN.to_owned(), |p| p.name.clone()))
}

/// Runs a dns probe.
pub async fn probe(spec: &DnsSpec, cx: &ProbeContext) -> Outcome {
    let t = Instant::now();
    let res = cx.dns.query(&spec.name, spec.rtype.record_type(), spec.budget).await;
    let phases = vec![(Phase::Request, t.elapsed())];
    match res {
        Err(e) => {
            let f = Failure::from(e);
            Outcome::fail(f.reason, f.detail, phases)
        }
        Ok(answer) => {
            let mut verdict = judge(&answer, &spec.expect);
            let points_to = if answer.records.is_empty() { None } else { points_to(spec, &answer, cx).await };
            if let (Ok(()), Some(want)) = (&verdict, &spec.expect_pool) {
                let got = points_to.as_deref().unwrap_or(UNKNOWN);
                if got != want {
                    verdict = Err(Failure::new(
                        FailureReason::DnsWrongPool,
                        format!(
                            "points to {got} [{}], expected pool {want}",
                            answer
                                .records
                                .iter()
                                .map(crate::net::dns::Rec::text)
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ));
                }
            }
            let mut o = match verdict {
                Ok(()) => Outcome::pass(phases),
                Err(f) => Outcome::failed(f, phases),
            };
            o.set(&DNS_ANSWERS, answer.answer_count as f64);
            o.points_to = points_to;
            o
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::ResponseCode;

    fn answer(rcode: ResponseCode, records: &[&str]) -> Answer {
        Answer {
            rcode,
            records: records
                .iter()
                .map(|s| match s.parse::<std::net::IpAddr>() {
                    Ok(std::net::IpAddr::V4(a)) => crate::net::dns::Rec::A(a),
                    Ok(std::net::IpAddr::V6(a)) => crate::net::dns::Rec::Aaaa(a),
                    Err(_) => crate::net::dns::Rec::Txt(s.to_string()),
                })
                .collect(),
            answer_count: records.len(),
            server: "127.0.0.1:53".parse().unwrap(),
        }
    }

    fn set(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn rcodes_map_to_reasons() {
        let any = Expectation::AnyAnswer;
        assert_eq!(
            judge(&answer(ResponseCode::NXDomain, &[]), &any).unwrap_err().reason,
            FailureReason::DnsNxdomain
        );
        assert_eq!(
            judge(&answer(ResponseCode::ServFail, &[]), &any).unwrap_err().reason,
            FailureReason::DnsServfail
        );
        assert_eq!(
            judge(&answer(ResponseCode::Refused, &[]), &any).unwrap_err().reason,
            FailureReason::DnsRefused
        );
        assert_eq!(
            judge(&answer(ResponseCode::FormErr, &[]), &any).unwrap_err().reason,
            FailureReason::DnsError
        );
        assert_eq!(
            judge(&answer(ResponseCode::NoError, &[]), &any).unwrap_err().reason,
            FailureReason::DnsNoAnswer
        );
        assert!(judge(&answer(ResponseCode::NoError, &["1.2.3.4"]), &any).is_ok());
    }

    #[test]
    fn exact_and_contains() {
        let a = answer(ResponseCode::NoError, &["10.0.0.1", "10.0.0.2"]);
        assert!(judge(&a, &Expectation::Exact(set(&["10.0.0.2", "10.0.0.1"]))).is_ok());
        let e = judge(&a, &Expectation::Exact(set(&["10.0.0.1"]))).unwrap_err();
        assert_eq!(e.reason, FailureReason::DnsMismatch);
        assert_eq!(e.detail, "got [10.0.0.1, 10.0.0.2], expected [10.0.0.1]");
        assert!(judge(&a, &Expectation::Contains(set(&["10.0.0.1"]))).is_ok());
        let e = judge(&a, &Expectation::Contains(set(&["10.0.0.3"]))).unwrap_err();
        assert_eq!(e.detail, "got [10.0.0.1, 10.0.0.2], missing [10.0.0.3]");
    }

    #[test]
    fn expected_answers_are_normalised() {
        assert_eq!(
            normalise_expected(DnsType::Srv, "0 0 5061 LyncPool.Contoso.com").unwrap(),
            "0 0 5061 lyncpool.contoso.com."
        );
        assert_eq!(normalise_expected(DnsType::Cname, "a.b.").unwrap(), "a.b.");
        assert_eq!(normalise_expected(DnsType::Aaaa, "2001:db8:0::1").unwrap(), "2001:db8::1");
        assert!(normalise_expected(DnsType::A, "::1").is_err());
        assert!(normalise_expected(DnsType::Srv, "0 0 lyncpool.contoso.com").is_err());
        assert!(normalise_expected(DnsType::Srv, "0 0 99999 x.").is_err());
    }
}
