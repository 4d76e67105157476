//! Validation: the decoded file becomes a [`Config`], section by section; every
//! `[[checks]]` table is expanded into its instances (one per pool it names, per test
//! user, or per pair of users) by the kind's own `build`.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use toml::Spanned;

use super::users::{build_users, select_users};
use super::*;
use crate::kinds::{parse_tls_version, BuildCx, BuildError};

pub(super) fn build(raw: RawFile, checks: Vec<RawCheck>, src: &Source<'_>) -> Result<Config, ConfigError> {
    let agent = agent(raw.agent.unwrap_or_default(), src)?;
    let dns = dns(&raw.dns.unwrap_or_default(), src)?;
    let tls = tls(raw.tls.unwrap_or_default(), src)?;
    let pools = pools(&raw.pools, src)?;
    let users = build_users(&raw.users, &pools, src)?;
    let pool_names: Vec<String> = pools.iter().map(|p| p.name.clone()).collect();
    let report = super::report::build(raw.report.as_ref(), &pool_names, src)?;
    let mut names = HashSet::new();
    let mut instances = Vec::new();
    for (i, check) in checks.iter().enumerate() {
        let path = format!("checks[{i}]");
        let name = check.common.name.get_ref();
        check_name(name).map_err(|m| src.err(check.common.name.span(), &format!("{path}.name: {m}")))?;
        if !names.insert(name.clone()) {
            return Err(
                src.err(check.common.name.span(), &format!("{path}.name: duplicate check name {name:?}"))
            );
        }
        let cx = Expand { path, agent: &agent, pools: &pools, users: &users, src };
        instances.extend(cx.check(check)?);
    }
    if let Some(shard) = agent.shard {
        instances.retain(|i| (i.stable_hash() % u64::from(shard.count)) as u32 == shard.index - 1);
    }
    Ok(Config { origin: src.origin.to_owned(), agent, dns, tls, pools, users, instances, report })
}

/// `[agent]`.
fn agent(ra: RawAgent, src: &Source<'_>) -> Result<AgentConfig, ConfigError> {
    let listen: SocketAddr = ra.listen.get_ref().parse().map_err(|_| {
        src.err(
            ra.listen.span(),
            &format!(
                "agent.listen: {:?} is not an address:port (e.g. \"127.0.0.1:9797\")",
                ra.listen.get_ref()
            ),
        )
    })?;
    let interval = ra.interval.get_ref().0;
    let timeout = ra.timeout.get_ref().0;
    if interval.is_zero() {
        return Err(src.err(ra.interval.span(), "agent.interval: must be greater than zero"));
    }
    if timeout.is_zero() {
        return Err(src.err(ra.timeout.span(), "agent.timeout: must be greater than zero"));
    }
    if timeout >= interval {
        return Err(src.err(
            ra.timeout.span(),
            &format!(
                "agent.timeout: must be shorter than agent.interval ({} >= {})",
                humantime::format_duration(timeout),
                humantime::format_duration(interval)
            ),
        ));
    }
    let mut labels = BTreeMap::new();
    for (k, v) in ra.labels {
        if !is_label_name(k.get_ref()) || is_reserved_label(k.get_ref()) {
            let why = if is_label_name(k.get_ref()) {
                "is used by coexistd itself"
            } else {
                "is not a valid Prometheus label name"
            };
            return Err(src.err(k.span(), &format!("agent.labels: {:?} {why}", k.get_ref())));
        }
        check_name(&v.0)
            .map_err(|m| src.err(k.span(), &format!("agent.labels: the value of {:?} {m}", k.get_ref())))?;
        labels.insert(k.into_inner(), v.0);
    }
    if *ra.concurrency.get_ref() == 0 {
        return Err(src.err(ra.concurrency.span(), "agent.concurrency: must be at least 1"));
    }
    let shard = match &ra.shard {
        None => None,
        Some(s) => Some(parse_shard(s.get_ref()).ok_or_else(|| {
            src.err(s.span(), &format!("agent.shard: {:?} is not \"K/N\" with 1 <= K <= N", s.get_ref()))
        })?),
    };
    let mib = *ra.endpoint_memory_mib.get_ref();
    if !(1..=MAX_ENDPOINT_MEMORY_MIB).contains(&mib) {
        return Err(src.err(
            ra.endpoint_memory_mib.span(),
            &format!("agent.endpoint_memory_mib: {mib} is not between 1 and {MAX_ENDPOINT_MEMORY_MIB}"),
        ));
    }
    Ok(AgentConfig {
        listen,
        interval,
        timeout,
        labels,
        concurrency: *ra.concurrency.get_ref(),
        shard,
        endpoint_memory: (mib as usize) << 20,
    })
}

/// The largest `agent.endpoint_memory_mib`: 4 GiB for what peers can make the
/// endpoints hold is already more than any agent should give them.
const MAX_ENDPOINT_MEMORY_MIB: u64 = 4096;

/// `[dns]`.
fn dns(rd: &RawDns, src: &Source<'_>) -> Result<DnsConfig, ConfigError> {
    let mut servers = Vec::new();
    for s in &rd.servers {
        let addr = parse_server(s.get_ref())
            .map_err(|why| src.err(s.span(), &format!("dns.servers: {:?} {why}", s.get_ref())))?;
        servers.push(addr);
    }
    Ok(DnsConfig { servers })
}

/// `[tls]`: the client side of the probes' TLS.
fn tls(rt: RawTls, src: &Source<'_>) -> Result<TlsConfig, ConfigError> {
    if rt.client_cert.is_some() != rt.client_key.is_some() {
        let span = rt.client_cert.as_ref().or(rt.client_key.as_ref()).map(|s| s.span()).unwrap_or(0..0);
        return Err(src.err(span, "tls: client_cert and client_key must be given together"));
    }
    for (key, file) in
        [("ca_file", &rt.ca_file), ("client_cert", &rt.client_cert), ("client_key", &rt.client_key)]
    {
        if let Some(f) = file {
            check_file(f.get_ref())
                .map_err(|m| src.err(f.span(), &format!("tls.{key}: {}: {m}", f.get_ref().display())))?;
        }
    }
    Ok(TlsConfig {
        ca_file: rt.ca_file.map(Spanned::into_inner),
        client_cert: rt.client_cert.map(Spanned::into_inner),
        client_key: rt.client_key.map(Spanned::into_inner),
    })
}

/// `[[pools]]`.
fn pools(raw: &[RawPool], src: &Source<'_>) -> Result<Vec<Pool>, ConfigError> {
    let mut pools: Vec<Pool> = Vec::new();
    for (i, rp) in raw.iter().enumerate() {
        let name = rp.name.get_ref();
        check_name(name).map_err(|m| src.err(rp.name.span(), &format!("pools[{i}].name: {m}")))?;
        if pools.iter().any(|p| &p.name == name) {
            return Err(src.err(rp.name.span(), &format!("pools[{i}].name: duplicate pool name {name:?}")));
        }
        check_hostname(rp.fqdn.get_ref())
            .map_err(|m| src.err(rp.fqdn.span(), &format!("pools[{i}].fqdn: {m}")))?;
        let tls_min_version = match &rp.tls_min_version {
            None => None,
            Some(v) => Some(parse_tls_version(v).map_err(|m| src.err(v.span(), &format!("pools[{i}].{m}")))?),
        };
        let mut members = Vec::new();
        for m in &rp.members {
            check_hostname(m.get_ref())
                .map_err(|e| src.err(m.span(), &format!("pools[{i}].members: {e}")))?;
            members.push(m.get_ref().trim_end_matches('.').to_owned());
        }
        pools.push(Pool {
            name: name.clone(),
            role: rp.role,
            fqdn: rp.fqdn.get_ref().trim_end_matches('.').to_owned(),
            tls_min_version,
            members,
            presence: rp.presence,
            site: match &rp.site {
                None => None,
                Some(v) => {
                    let name = v.get_ref().trim();
                    if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
                        return Err(src.err(
                            v.span(),
                            &format!("pools[{i}].site: a topology site's name, 1 to 64 printable characters"),
                        ));
                    }
                    Some(name.to_owned())
                }
            },
        });
    }

    Ok(pools)
}

/// One run of a check: as a user (and towards a peer), or neither.
type Runner<'u> = (Option<&'u User>, Option<&'u User>);

/// What expanding one `[[checks]]` table needs.
struct Expand<'a> {
    path: String,
    agent: &'a AgentConfig,
    pools: &'a [Pool],
    users: &'a [User],
    src: &'a Source<'a>,
}

impl Expand<'_> {
    /// One `[[checks]]` table's instances: per pool it names, per test user, or per
    /// ordered pair of users, each built by the kind.
    fn check(
        &self,
        RawCheck { common: rc, keys }: &RawCheck,
    ) -> Result<Vec<Arc<CheckInstance>>, ConfigError> {
        let (path, src, pools) = (&self.path, self.src, self.pools);
        let (check_interval, check_timeout) = self.timing(rc)?;
        // Per-user kinds: one instance per selected user, in the user's planned pool;
        // per-pair kinds: one per ordered pair of different users, in the sender's.
        let per_user_kind = keys.users().is_some() || keys.pairs().is_some();
        if let (true, Some(p)) = (per_user_kind, &rc.pools) {
            return Err(src.err(
                p.span(),
                &format!(
                    "{path}.pools: kind \"{}\" runs as test users, in their pools; use {}",
                    rc.kind.get_ref().as_str(),
                    if keys.pairs().is_some() { "from and to" } else { "users" }
                ),
            ));
        }
        let purpose = match rc.purpose.as_ref().map(|p| p.get_ref().as_str()) {
            None | Some("service") => crate::config::Purpose::Service,
            Some("admin") => crate::config::Purpose::Admin,
            Some(other) => {
                let span = rc.purpose.as_ref().map(|p| p.span()).unwrap_or_default();
                return Err(src.err(
                    span,
                    &format!("{path}.purpose: {other:?} is not \"service\" (the default) or \"admin\""),
                ));
            }
        };
        if let Some(p) = rc.purpose.as_ref().filter(|_| purpose == crate::config::Purpose::Admin) {
            if per_user_kind {
                return Err(src.err(
                    p.span(),
                    &format!("{path}.purpose: \"admin\" is for checks of a pool's administration path, not for test users"),
                ));
            }
            if rc.pools.as_ref().is_some_and(|ps| ps.get_ref().is_empty()) {
                return Err(src.err(
                    p.span(),
                    &format!("{path}.purpose: an administration check runs against pools (their sites); pools = [] has none"),
                ));
            }
        }
        let selected = self.selected(rc, keys)?;
        let targets: Vec<Option<&Pool>> = if per_user_kind { Vec::new() } else { self.targets(rc)? };
        if let Some(p) = rc.purpose.as_ref().filter(|_| purpose == crate::config::Purpose::Admin) {
            if let Some(pool) = targets.iter().flatten().find(|pool| pool.site.is_none()) {
                return Err(src.err(
                    p.span(),
                    &format!(
                        "{path}.purpose: an administration check counts in its pool's site; pool {:?} has no site (give it site = \"…\")",
                        pool.name
                    ),
                ));
            }
        }
        let per_user = selected
            .iter()
            .filter_map(|(u, peer)| u.map(|u| (pools.iter().find(|p| p.name == u.pool), Some(u), *peer)));
        let runs: Vec<(Option<&Pool>, Option<&User>, Option<&User>)> =
            targets.into_iter().map(|p| (p, None, None)).chain(per_user).collect();
        let mut instances = Vec::with_capacity(runs.len());
        for (pool, user, peer) in runs {
            let cx = BuildCx {
                path: path.clone(),
                name_span: rc.name.span(),
                kind: *rc.kind.get_ref(),
                pool,
                timeout: check_timeout,
                interval: check_interval,
                pools,
                user,
                peer,
                users: self.users,
            };
            let (spec, target) =
                keys.build(&cx).map_err(|BuildError { span, message }| src.err(span, &message))?;
            instances.push(Arc::new(CheckInstance {
                pool: pool.cloned(),
                check: rc.name.get_ref().clone(),
                target,
                interval: check_interval,
                timeout: check_timeout,
                spec,
                each_address: keys.each_address(),
                purpose,
            }));
        }
        Ok(instances)
    }

    /// The check's interval and timeout (the agent's unless it sets its own).
    fn timing(&self, rc: &RawCheckCommon) -> Result<(Duration, Duration), ConfigError> {
        let (path, src) = (&self.path, self.src);
        let check_interval = rc.interval.as_ref().map_or(self.agent.interval, |d| d.get_ref().0);
        let check_timeout = rc.timeout.as_ref().map_or(self.agent.timeout, |d| d.get_ref().0);
        if let Some(d) = rc.interval.as_ref().filter(|d| d.get_ref().0.is_zero()) {
            return Err(src.err(d.span(), &format!("{path}.interval: must be greater than zero")));
        }
        if let Some(d) = rc.timeout.as_ref().filter(|d| d.get_ref().0.is_zero()) {
            return Err(src.err(d.span(), &format!("{path}.timeout: must be greater than zero")));
        }
        if check_timeout >= check_interval {
            let span =
                rc.timeout.as_ref().or(rc.interval.as_ref()).map_or_else(|| rc.name.span(), |d| d.span());
            return Err(src.err(
                span,
                &format!(
                    "{path}.timeout: must be shorter than the interval ({} >= {})",
                    humantime::format_duration(check_timeout),
                    humantime::format_duration(check_interval)
                ),
            ));
        }
        Ok((check_interval, check_timeout))
    }

    /// The users (or ordered pairs of different users) a per-user or per-pair kind runs
    /// as; one `(None, None)` for a kind that runs per pool.
    fn selected(&self, rc: &RawCheckCommon, keys: &KindKeys) -> Result<Vec<Runner<'_>>, ConfigError> {
        let (path, src, users) = (&self.path, self.src, self.users);
        Ok(match (keys.users(), keys.pairs()) {
            (Some(sel), _) => select_users(sel, users, path, "users", rc.name.span(), src)?
                .into_iter()
                .map(|u| (Some(u), None))
                .collect(),
            (None, Some((from, to))) => {
                let from = select_users(from, users, path, "from", rc.name.span(), src)?;
                let to = select_users(to, users, path, "to", rc.name.span(), src)?;
                let pairs: Vec<Runner<'_>> = from
                    .iter()
                    .flat_map(|a| {
                        to.iter().filter(move |b| b.name != a.name).map(move |b| (Some(*a), Some(*b)))
                    })
                    .collect();
                if pairs.is_empty() {
                    return Err(src.err(
                        rc.name.span(),
                        &format!(
                            "{path}.to: no pair of two different test users (from and to name the same one)"
                        ),
                    ));
                }
                pairs
            }
            (None, None) => vec![(None, None)],
        })
    }

    /// The pools a per-pool check runs in: `pools`, or every pool; `pools = []`: one
    /// instance in no pool.
    fn targets(&self, rc: &RawCheckCommon) -> Result<Vec<Option<&Pool>>, ConfigError> {
        let (path, src, pools) = (&self.path, self.src, self.pools);
        Ok(match &rc.pools {
            None => pools.iter().map(Some).collect(),
            Some(list) if list.get_ref().is_empty() => vec![None],
            Some(list) => {
                let mut v: Vec<Option<&Pool>> = Vec::new();
                for pname in list.get_ref() {
                    if v.iter().any(|p| p.is_some_and(|p| &p.name == pname.get_ref())) {
                        return Err(src.err(
                            pname.span(),
                            &format!("{path}.pools: {:?} is listed twice", pname.get_ref()),
                        ));
                    }
                    let p = pools.iter().find(|p| &p.name == pname.get_ref()).ok_or_else(|| {
                        src.err(pname.span(), &format!("{path}.pools: unknown pool {:?}", pname.get_ref()))
                    })?;
                    v.push(Some(p));
                }
                v
            }
        })
    }
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with("__")
}

fn parse_shard(s: &str) -> Option<Shard> {
    let (k, n) = s.split_once('/')?;
    let index: u32 = k.trim().parse().ok()?;
    let count: u32 = n.trim().parse().ok()?;
    (index >= 1 && index <= count).then_some(Shard { index, count })
}

/// `10.0.0.10`, `10.0.0.10:53`, `::1`, `[::1]:5353`.
fn parse_server(s: &str) -> Result<SocketAddr, &'static str> {
    let addr = match s.parse::<SocketAddr>() {
        Ok(a) => a,
        Err(_) => match s.parse::<std::net::IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, 53),
            Err(_) => return Err("is not an IP address or address:port"),
        },
    };
    let ip = addr.ip();
    let broadcast = matches!(ip, std::net::IpAddr::V4(v4) if v4.is_broadcast());
    if addr.port() == 0 {
        Err("has port 0")
    } else if ip.is_unspecified() || ip.is_multicast() || broadcast {
        Err("is not a unicast address (unspecified, multicast or broadcast)")
    } else {
        Ok(addr)
    }
}

/// A file the configuration names: a regular file within the size limit (read later,
/// once, by its user; see [`crate::net::tls::read_config_file`]).
fn check_file(path: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if meta.len() > crate::net::tls::MAX_FILE {
        return Err(format!(
            "{} bytes: larger than the {}-byte limit",
            meta.len(),
            crate::net::tls::MAX_FILE
        ));
    }
    Ok(())
}

/// A name an operator chose (check, pool, label value): shown in labels, logs and pages,
/// so it must be visible text.
pub(super) fn check_name(s: &str) -> Result<(), &'static str> {
    if s.trim().is_empty() {
        Err("must not be empty or blank")
    } else if s.chars().any(char::is_control) {
        Err("must not contain control characters")
    } else if s.trim() != s {
        Err("must not start or end with blanks")
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_parsing() {
        assert_eq!(parse_shard("1/3"), Some(Shard { index: 1, count: 3 }));
        assert_eq!(parse_shard("0/3"), None);
        assert_eq!(parse_shard("4/3"), None);
        assert_eq!(parse_shard("x"), None);
    }
}
