//! Pool rollups: per pool, how many of its check results pass, fail, are stale or have
//! not run, and whether the pool is UP. The one place this is computed: the status
//! JSON, the page, `check` and the `coexist_pool_*` metrics all read it.

use serde::Serialize;

use crate::config::Config;
use crate::run::results::{SeriesState, Slot};

/// A pool's rollup.
#[derive(Debug, Clone, Serialize)]
pub struct PoolRollup {
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
pub fn pool_rollups(
    config: &Config,
    slots: &[std::sync::Arc<Slot>],
    units: &[(usize, SeriesState)],
) -> Vec<PoolRollup> {
    let mut pools: Vec<PoolRollup> = config
        .pools
        .iter()
        .map(|p| PoolRollup {
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
        // Users reaching each other roll up into the interop matrix, not into a pool.
        if slot.instance.spec.rollup() != crate::kinds::Rollup::Pool {
            continue;
        }
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

/// One cell of the coexistence matrix: every pair of test users (a kind whose rollup is a pool pair) from users planned on one
/// pool to users planned on another (or the same).
#[derive(Debug, Clone, Serialize)]
pub struct InteropCell {
    /// The senders' planned pool.
    pub from_pool: String,
    /// The recipients' planned pool.
    pub to_pool: String,
    /// Every pair passing (and at least one ran).
    pub up: bool,
    /// Pairs passing.
    pub passing: u64,
    /// Pairs failing.
    pub failing: u64,
    /// Pairs not run yet.
    pub pending: u64,
    /// Pairs whose last result is stale.
    pub stale: u64,
    /// The failing pairs: `sender → recipient: reason (detail)`.
    pub failures: Vec<String>,
}

/// The coexistence matrix, in pool order (senders, then recipients): cells with at
/// least one pair.
pub fn interop(
    config: &Config,
    slots: &[std::sync::Arc<Slot>],
    units: &[(usize, SeriesState)],
) -> Vec<InteropCell> {
    let order = |name: &str| config.pools.iter().position(|p| p.name == name).unwrap_or(usize::MAX);
    let mut cells: Vec<InteropCell> = Vec::new();
    for (slot, unit) in units.iter().map(|(i, u)| (&slots[*i], u)) {
        let crate::kinds::Rollup::PoolPair { from, to, between } = slot.instance.spec.rollup() else {
            continue;
        };
        let at = match cells.iter().position(|c| c.from_pool == from && c.to_pool == to) {
            Some(i) => i,
            None => {
                cells.push(InteropCell {
                    from_pool: from.to_owned(),
                    to_pool: to.to_owned(),
                    up: false,
                    passing: 0,
                    failing: 0,
                    pending: 0,
                    stale: 0,
                    failures: Vec::new(),
                });
                cells.len() - 1
            }
        };
        let c = &mut cells[at];
        match unit.state.success() {
            _ if unit.stale => c.stale += 1,
            Some(true) => c.passing += 1,
            Some(false) => {
                c.failing += 1;
                if let Some(f) = unit.state.last.as_ref().and_then(|l| l.outcome.result.as_ref().err()) {
                    c.failures.push(format!(
                        "{} \u{2192} {}: {} ({})",
                        between.0,
                        between.1,
                        f.reason.as_str(),
                        f.detail
                    ));
                }
            }
            None => c.pending += 1,
        }
    }
    for c in &mut cells {
        c.up = c.passing > 0 && c.failing == 0 && c.pending == 0 && c.stale == 0;
    }
    cells.sort_by_key(|c| (order(&c.from_pool), order(&c.to_pool)));
    cells
}
