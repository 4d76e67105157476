//! Name resolution for check targets, through the configured `[dns]` servers.
//!
//! Caching is off: a probe must see what clients see now, not what the agent saw a TTL
//! ago (a record moved mid-migration must show on the next probe).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolverConfig,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::TokioResolver;

/// A cheap-to-clone resolver handle.
#[derive(Clone)]
pub struct Resolver {
    inner: Arc<TokioResolver>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver").finish_non_exhaustive()
    }
}

/// Why resolver set-up failed.
#[derive(Debug, thiserror::Error)]
#[error("DNS resolver set-up: {0}")]
pub struct ResolverError(String);

/// The system's name servers (`/etc/resolv.conf`), for configs that name none.
pub fn system_servers() -> Result<Vec<SocketAddr>, ResolverError> {
    let (conf, _) = hickory_resolver::system_conf::read_system_conf()
        .map_err(|e| ResolverError(e.to_string()))?;
    Ok(conf
        .name_servers()
        .iter()
        .map(|ns| SocketAddr::new(ns.ip, ns.connections.first().map_or(53, |c| c.port)))
        .collect())
}

impl Resolver {
    /// A resolver asking `servers` (UDP, TCP on truncation), cache disabled.
    pub fn new(servers: &[SocketAddr], timeout: Duration) -> Result<Resolver, ResolverError> {
        let mut name_servers = Vec::new();
        for s in servers {
            let mut udp = ConnectionConfig::udp();
            udp.port = s.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = s.port();
            name_servers.push(NameServerConfig::new(s.ip(), true, vec![udp, tcp]));
        }
        let config = ResolverConfig::from_parts(None, vec![], name_servers);
        let mut builder =
            TokioResolver::builder_with_config(config, TokioRuntimeProvider::default());
        let opts = builder.options_mut();
        opts.cache_size = 0;
        opts.timeout = timeout;
        opts.attempts = 1;
        opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        opts.use_hosts_file = hickory_resolver::config::ResolveHosts::Never;
        let inner = builder.build().map_err(|e| ResolverError(e.to_string()))?;
        Ok(Resolver {
            inner: Arc::new(inner),
        })
    }

    /// Every address of `host` (A and AAAA), or the address itself when `host` is one.
    /// An empty answer is an error: there is nothing to connect to.
    pub async fn lookup_ip(&self, host: &str) -> Result<Vec<IpAddr>, String> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        // A trailing dot: the configured name is absolute, no search list applies.
        let fqdn = if host.ends_with('.') {
            host.to_owned()
        } else {
            format!("{host}.")
        };
        match self.inner.lookup_ip(fqdn.as_str()).await {
            Ok(l) => {
                let mut v: Vec<IpAddr> = l.iter().collect();
                v.sort();
                v.dedup();
                if v.is_empty() {
                    Err(format!("{host}: no A/AAAA records"))
                } else {
                    Ok(v)
                }
            }
            Err(e) => Err(format!("{host}: {e}")),
        }
    }
}
