//! Pool rollups: per pool, how many of its check results pass, fail, are stale or have
//! not run, and whether the pool is UP. The one place this is computed: the status
//! JSON, the page, `check` and the `coexist_pool_*` metrics all read it.

use serde::Serialize;

use crate::config::Config;
use crate::results::{Slot, Unit};

/// A pool's rollup.
#[derive(Debug, Clone, Serialize)]
pub struct PoolReport {
    /// Pool name.
    pub name: String,
    /// legacy | new.
    pub role: String,
    /// Pool FQDN.
    pub fqdn: String,
    /// Every instance passing.
    pub up: bool,
    /// Instances passing.
    pub passing: u64,
    /// Instances failing.
    pub failing: u64,
    /// Instances not run yet.
    pub pending: u64,
    /// Instances whose last result is stale (counted here, not as passing or failing).
    pub stale: u64,
}

/// Per pool of `config`: its instances passing, failing and not yet run. The one place
/// pool rollups are computed (status, `check` and `coexist_pool_*` metrics).
pub fn pool_reports(
    config: &Config,
    slots: &[std::sync::Arc<Slot>],
    units: &[(usize, Unit)],
) -> Vec<PoolReport> {
    let mut pools: Vec<PoolReport> = config
        .pools
        .iter()
        .map(|p| PoolReport {
            name: p.name.clone(),
            role: p.role.as_str().to_owned(),
            fqdn: p.fqdn.clone(),
            up: false,
            passing: 0,
            failing: 0,
            pending: 0,
            stale: 0,
        })
        .collect();
    let index: std::collections::HashMap<&str, usize> =
        config.pools.iter().enumerate().map(|(i, p)| (p.name.as_str(), i)).collect();
    for (slot, unit) in units.iter().map(|(i, u)| (&slots[*i], u)) {
        let Some(&i) = slot.instance.pool.as_ref().and_then(|p| index.get(p.name.as_str())) else { continue };
        match unit.state.success() {
            _ if unit.stale => pools[i].stale += 1,
            Some(true) => pools[i].passing += 1,
            Some(false) => pools[i].failing += 1,
            None => pools[i].pending += 1,
        }
    }
    for p in &mut pools {
        p.up = p.failing == 0 && p.pending == 0 && p.stale == 0;
    }
    pools
}
