//! Pool rollups: per pool, how many of its check results pass, fail, are stale or have
//! not run, and whether the pool is UP. The one place this is computed: the status
//! JSON, the page, `check` and the `coexist_pool_*` metrics all read it.

use serde::Serialize;

use crate::config::Config;
use crate::failure::FailureReason;
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
        // Users reaching each other roll up into the interop matrix, administration
        // checks into their site: neither into a pool.
        if slot.instance.spec.rollup() != crate::kinds::Rollup::Pool
            || slot.instance.purpose == crate::config::Purpose::Admin
        {
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

/// A topology site's rollup: its pools, whether they are all UP, and whether every
/// administration check of the site passes.
#[derive(Debug, Clone, Serialize)]
pub struct SiteRollup {
    /// The topology site (`[[pools]] site`): the `topology_site` label.
    pub name: String,
    /// Its pools, in configuration order.
    pub pools: Vec<String>,
    /// Every pool of the site UP.
    pub up: bool,
    /// Every administration check of the site passing; `None` without any.
    pub administrable: Option<bool>,
    /// Administration checks passing.
    pub admin_passing: u64,
    /// Administration checks failing.
    pub admin_failing: u64,
    /// Administration checks not run yet, or stale.
    pub admin_pending: u64,
    /// The failing administration checks: `check pool target: reason (detail)`.
    pub failures: Vec<String>,
}

/// Per topology site of `config` (pools without a site have none), from the pool
/// rollups and the administration checks' results.
pub fn site_rollups(
    config: &Config,
    pools: &[PoolRollup],
    slots: &[std::sync::Arc<Slot>],
    units: &[(usize, SeriesState)],
) -> Vec<SiteRollup> {
    let mut sites: Vec<SiteRollup> = Vec::new();
    for p in &config.pools {
        let Some(site) = &p.site else { continue };
        let up = pools.iter().any(|r| r.name == p.name && r.up);
        match sites.iter_mut().find(|s| &s.name == site) {
            Some(s) => {
                s.pools.push(p.name.clone());
                s.up &= up;
            }
            None => sites.push(SiteRollup {
                name: site.clone(),
                pools: vec![p.name.clone()],
                up,
                administrable: None,
                admin_passing: 0,
                admin_failing: 0,
                admin_pending: 0,
                failures: Vec::new(),
            }),
        }
    }
    for (slot, unit) in units.iter().map(|(i, u)| (&slots[*i], u)) {
        let i = &slot.instance;
        if i.purpose != crate::config::Purpose::Admin {
            continue;
        }
        let Some(site) = i.pool.as_ref().and_then(|p| p.site.as_ref()) else { continue };
        let Some(s) = sites.iter_mut().find(|s| &s.name == site) else { continue };
        match unit.state.success() {
            _ if unit.stale => s.admin_pending += 1,
            Some(true) => s.admin_passing += 1,
            Some(false) => {
                s.admin_failing += 1;
                if let Some(f) = unit.state.last.as_ref().and_then(|l| l.outcome.result.as_ref().err()) {
                    s.failures.push(format!(
                        "{} {} {}: {} ({})",
                        i.check,
                        i.pool_name(),
                        i.target,
                        f.reason.as_str(),
                        f.detail
                    ));
                }
            }
            None => s.admin_pending += 1,
        }
    }
    for s in &mut sites {
        let total = s.admin_passing + s.admin_failing + s.admin_pending;
        s.administrable = (total > 0).then_some(s.admin_failing == 0 && s.admin_pending == 0);
    }
    sites
}

/// What a cell of the coexistence matrix says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CellState {
    /// Pairs ran between users registered on these pools, and every one passed (pairs
    /// without a fresh result are listed, but a fresh pass proves the cell).
    Up,
    /// At least one pair between users registered on these pools failed.
    Down,
    /// Nothing proves or disproves it: no pair with a fresh result ran between users
    /// registered on these pools (their users are elsewhere or not registered, the
    /// pairs have not run, or their results are stale).
    Untested,
}

impl CellState {
    /// The word the page and `check` print.
    pub fn word(self) -> &'static str {
        match self {
            CellState::Up => "UP",
            CellState::Down => "DOWN",
            CellState::Untested => "UNTESTED",
        }
    }
}

/// One cell of the coexistence matrix of one kind between users (`sip_im`, …): the
/// pairs of test users that ran from users registered on one pool to users registered
/// on another (or the same). A pair counts where its users were registered when it
/// ran ([`crate::model::outcome::PairRoute`]), not where they were planned; a pair
/// that has not run counts where it is planned.
#[derive(Debug, Clone, Serialize)]
pub struct InteropCell {
    /// The check kind of its pairs.
    pub kind: String,
    /// The senders' pool.
    pub from_pool: String,
    /// The recipients' pool.
    pub to_pool: String,
    /// UP, DOWN or UNTESTED.
    pub state: CellState,
    /// `state` is UP.
    pub up: bool,
    /// Pairs passing.
    pub passing: u64,
    /// Pairs failing.
    pub failing: u64,
    /// Pairs planned here without a result that says anything about it: not run yet,
    /// a user not registered, or a pass whose users' pools are unknown.
    pub pending: u64,
    /// Pairs planned here whose last result is stale.
    pub stale: u64,
    /// The failing pairs: `sender → recipient: reason (detail)`.
    pub failures: Vec<String>,
    /// Pairs planned here that prove nothing about it: they ran between other pools (a
    /// user registered elsewhere than planned: `sender → recipient: ran A → B`), or a
    /// user was not registered (`sender → recipient: not_registered (detail)`).
    pub unproven: Vec<String>,
}

/// The coexistence matrices, by kind, in pool order (senders, then recipients): every
/// cell some pair is planned in or ran in.
pub fn interop(
    config: &Config,
    slots: &[std::sync::Arc<Slot>],
    units: &[(usize, SeriesState)],
) -> Vec<InteropCell> {
    let order = |name: &str| config.pools.iter().position(|p| p.name == name).unwrap_or(usize::MAX);
    let mut cells: Vec<InteropCell> = Vec::new();
    let cell = |cells: &mut Vec<InteropCell>, kind: &str, from: &str, to: &str| -> usize {
        if let Some(i) = cells.iter().position(|c| c.kind == kind && c.from_pool == from && c.to_pool == to) {
            return i;
        }
        cells.push(InteropCell {
            kind: kind.to_owned(),
            from_pool: from.to_owned(),
            to_pool: to.to_owned(),
            state: CellState::Untested,
            up: false,
            passing: 0,
            failing: 0,
            pending: 0,
            stale: 0,
            failures: Vec::new(),
            unproven: Vec::new(),
        });
        cells.len() - 1
    };
    for (slot, unit) in units.iter().map(|(i, u)| (&slots[*i], u)) {
        let crate::kinds::Rollup::PoolPair { from, to, between } = slot.instance.spec.rollup() else {
            continue;
        };
        let kind = slot.instance.kind().as_str();
        let planned = cell(&mut cells, kind, from, to);
        let last = unit.state.last.as_ref().map(|l| &l.outcome);
        let Some(outcome) = last.filter(|_| !unit.stale) else {
            if unit.stale {
                cells[planned].stale += 1;
            } else {
                cells[planned].pending += 1;
            }
            continue;
        };
        let (at, passed) = match &outcome.route {
            Some(r) if (r.from_pool.as_str(), r.to_pool.as_str()) != (from, to) => {
                cells[planned].unproven.push(format!(
                    "{} \u{2192} {}: ran {} \u{2192} {}",
                    between.0, between.1, r.from_pool, r.to_pool
                ));
                (cell(&mut cells, kind, &r.from_pool, &r.to_pool), r.passed)
            }
            Some(_) => (planned, outcome.result.is_ok()),
            // Where its users were is unknown: a user was not registered (a test setup
            // problem, not the route), or a pass it cannot place. Neither proves the cell.
            None => match &outcome.result {
                Err(f) if f.reason != FailureReason::NotRegistered => (planned, false),
                r => {
                    let why = match r {
                        Err(f) => format!("{} ({})", f.reason.as_str(), f.detail),
                        Ok(()) => "passed, but its users' pools are unknown".to_owned(),
                    };
                    cells[planned].pending += 1;
                    cells[planned].unproven.push(format!("{} \u{2192} {}: {why}", between.0, between.1));
                    continue;
                }
            },
        };
        let c = &mut cells[at];
        if passed {
            c.passing += 1;
        } else {
            c.failing += 1;
            if let Err(f) = &outcome.result {
                c.failures.push(format!(
                    "{} \u{2192} {}: {} ({})",
                    between.0,
                    between.1,
                    f.reason.as_str(),
                    f.detail
                ));
            }
        }
    }
    for c in &mut cells {
        c.state = if c.failing > 0 {
            CellState::Down
        } else if c.passing > 0 {
            CellState::Up
        } else {
            CellState::Untested
        };
        c.up = c.state == CellState::Up;
    }
    cells.sort_by_key(|c| (c.kind.clone(), order(&c.from_pool), order(&c.to_pool)));
    cells
}
