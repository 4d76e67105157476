//! Name resolution for check targets, through the configured `[dns]` servers.
//!
//! A probe must see what clients see now, not what the agent saw a TTL ago: nothing is
//! cached, every probe asks again (a record moved mid-migration shows on the next
//! probe). A and AAAA are asked at once with the same query code the dns check uses
//! (UDP, TCP on truncation, servers in order). A stub resolver library was measured at
//! about 0.14 ms of CPU per lookup on a 2-core machine, more than the rest of a tcp
//! probe; this direct path costs a fraction of that.
//!
//! Names are taken as absolute (no search list): pool FQDNs are fully qualified. A
//! CNAME chain is followed as far as the server's answer goes, which for the recursive
//! resolvers clients use is the whole chain.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{Name, RecordType};

use crate::failure::{Failure, FailureReason};
use crate::net::dns::{DnsClient, QueryError};

/// A cheap-to-clone resolver handle.
#[derive(Debug, Clone)]
pub struct Resolver {
    client: Arc<DnsClient>,
    budget: Duration,
}

/// The name servers of `/etc/resolv.conf`, for configs that name none.
pub fn system_servers() -> Result<Vec<SocketAddr>, String> {
    let text = std::fs::read_to_string("/etc/resolv.conf").map_err(|e| format!("/etc/resolv.conf: {e}"))?;
    let servers = parse_resolv_conf(&text);
    if servers.is_empty() {
        return Err("/etc/resolv.conf names no nameserver; set [dns] servers".into());
    }
    Ok(servers)
}

fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("nameserver")).then(|| w.next()).flatten()
        })
        // A link-local IPv6 server may carry a zone (`fe80::1%eth0`): not supported.
        .filter_map(|s| s.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

impl Resolver {
    /// A resolver asking `client`'s servers; `budget` bounds one lookup.
    pub fn new(client: Arc<DnsClient>, budget: Duration) -> Resolver {
        Resolver { client, budget }
    }

    /// Every address of `host` (A and AAAA), or the address itself when `host` is one.
    /// An empty answer is an error: there is nothing to connect to. The failure keeps
    /// its kind: `dns_timeout` when no server answered in time, `resolve` otherwise (no
    /// such name, no address, an error from the server).
    pub async fn lookup_ip(&self, host: &str) -> Result<Vec<IpAddr>, Failure> {
        let fail = |reason, detail: String| Failure::new(reason, detail);
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        let trimmed = host.trim_end_matches('.');
        let name = Name::from_ascii(format!("{trimmed}."))
            .map_err(|e| fail(FailureReason::Resolve, format!("{host}: {e}")))?;
        let answers =
            self.client.query_types(&name, &[RecordType::A, RecordType::AAAA], self.budget).await.map_err(
                |e| match e {
                    QueryError::Timeout(d) => fail(FailureReason::DnsTimeout, format!("{trimmed}: {d}")),
                    QueryError::Other(d) => fail(FailureReason::Resolve, format!("{trimmed}: {d}")),
                },
            );
        let answers = match answers {
            Ok(a) => a,
            Err(e) => {
                crate::trace::step("resolve", || format!("{trimmed}: failed: {}", e.detail));
                return Err(e);
            }
        };
        let mut ips = Vec::new();
        let mut problems = Vec::new();
        for (label, a) in ["A", "AAAA"].into_iter().zip(answers) {
            if a.rcode == ResponseCode::NoError {
                ips.extend(a.records.iter().filter_map(crate::net::dns::Rec::ip));
            } else {
                problems.push(format!("{label}: {} answered {}", a.server, a.rcode));
            }
        }
        ips.sort();
        ips.dedup();
        crate::trace::step("resolve", || {
            let list: Vec<String> = ips.iter().map(ToString::to_string).collect();
            let problems =
                if problems.is_empty() { String::new() } else { format!(" ({})", problems.join("; ")) };
            format!("{trimmed} -> [{}]{problems}", list.join(", "))
        });
        if ips.is_empty() {
            let why = if problems.is_empty() { "no A/AAAA records".to_owned() } else { problems.join("; ") };
            return Err(fail(FailureReason::Resolve, format!("{trimmed}: {why}")));
        }
        Ok(ips)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_nameservers() {
        let t = "# c\nsearch contoso.com\nnameserver 10.0.0.10\nnameserver ::1\nnameserver fe80::1%eth0\noptions ndots:2\n";
        let s = parse_resolv_conf(t);
        assert_eq!(s, vec!["10.0.0.10:53".parse().unwrap(), "[::1]:53".parse().unwrap()]);
    }
}
