//! Human and machine views of the results: the JSON of `/api/v1/status`,
//! `/api/v1/events` and `coexistd check --format json`, the table of `coexistd check`;
//! the status page's HTML is in [`crate::output::status_page`]. Nothing here changes results.

use std::fmt::Write;
use std::time::SystemTime;

use serde::Serialize;

use crate::config::Config;
pub use crate::output::rollup::PoolRollup;
use crate::run::results::{SeriesState, Slot, Transition};

/// One check instance's last result.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceView {
    /// Pool name (empty for pool-less checks).
    pub pool: String,
    /// Pool role (empty for pool-less checks).
    pub role: String,
    /// Check name.
    pub check: String,
    /// Check kind.
    pub kind: String,
    /// `host:port` or record.
    pub target: String,
    /// The address probed, for `each_address` checks.
    pub address: Option<String>,
    /// Last result; `null` before the first run.
    pub success: Option<bool>,
    /// Failure reason of the last run.
    pub reason: Option<String>,
    /// Failure detail of the last run.
    pub detail: Option<String>,
    /// Duration of the last run.
    pub last_duration_seconds: Option<f64>,
    /// When the last run finished (RFC 3339).
    pub last_run: Option<String>,
    /// When pass/fail last changed (RFC 3339).
    pub last_change: Option<String>,
    /// Runs so far.
    pub runs: u64,
    /// Failures since the last success.
    pub consecutive_failures: u64,
    /// dns: the pool the record points at now.
    pub points_to: Option<String>,
    /// No run finished for 3 intervals: the result above is no longer current.
    pub stale: bool,
    /// The configured interval, in seconds.
    pub interval_seconds: f64,
    /// dns, sip_discovery: the pool the record must point at (`expect_pool`).
    pub expect_pool: Option<String>,
    /// When pass/fail last changed, for durations.
    #[serde(skip)]
    pub changed_at: Option<SystemTime>,
    /// `service`, or `admin` (an administration check: counts in its site, not its pool).
    pub purpose: crate::config::Purpose,
}

/// The whole status.
#[derive(Debug, Clone, Serialize)]
pub struct StatusView {
    /// Where the running configuration came from (empty, and left out, on the agent's
    /// HTTP port).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub config: String,
    /// Per topology site (pools with a `site`): UP, and administrable.
    pub sites: Vec<crate::output::rollup::SiteRollup>,
    /// Per pool.
    pub pools: Vec<PoolRollup>,
    /// Per instance, in configuration order.
    pub instances: Vec<InstanceView>,
    /// The coexistence matrix: test users of one pool reaching those of another.
    pub interop: Vec<crate::output::rollup::InteropCell>,
    /// The test users' registered endpoints (users that checks between users name).
    pub users: Vec<crate::ua::endpoint::EndpointStatus>,
    /// The agent's constant labels (`agent.labels`), naming its vantage point.
    #[serde(skip)]
    pub labels: Vec<(String, String)>,
}

/// One state change, as `/api/v1/events` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct EventView {
    /// When the run that changed the state finished (RFC 3339).
    pub at: String,
    /// Pool name (empty for pool-less checks).
    pub pool: String,
    /// Pool role (empty for pool-less checks).
    pub role: String,
    /// Check name.
    pub check: String,
    /// Check kind.
    pub kind: String,
    /// `host:port` or record.
    pub target: String,
    /// The address probed, for `each_address` checks.
    pub address: Option<String>,
    /// `fail` or `pass`: the state entered.
    pub state: &'static str,
    /// The failure reason, when it entered `fail`.
    pub reason: Option<String>,
    /// The failure detail, when it entered `fail`.
    pub detail: Option<String>,
    /// How long the previous state had lasted (`null` for a first run that failed).
    pub previous_state_seconds: Option<f64>,
    /// [`EventView::at`] as a time, for durations.
    #[serde(skip)]
    pub at_time: SystemTime,
}

impl EventView {
    /// The view of `t`.
    pub fn new(t: &Transition) -> EventView {
        let i = &t.instance;
        EventView {
            at: rfc3339(t.at),
            pool: i.pool_name().to_owned(),
            role: i.role_name().to_owned(),
            check: i.check.clone(),
            kind: i.kind().as_str().to_owned(),
            target: i.target.clone(),
            address: t.address.map(|a| a.to_string()),
            state: if t.failure.is_some() { "fail" } else { "pass" },
            reason: t.failure.as_ref().map(|(r, _)| r.as_str().to_owned()),
            detail: t.failure.as_ref().map(|(_, d)| d.clone()),
            previous_state_seconds: t
                .previous_since
                .and_then(|s| t.at.duration_since(s).ok())
                .map(|d| d.as_secs_f64()),
            at_time: t.at,
        }
    }
}

/// The state changes kept by the store, newest first, as `/api/v1/events` serves them.
pub fn events(transitions: &[Transition]) -> Vec<EventView> {
    transitions.iter().rev().map(EventView::new).collect()
}

/// `t` as RFC 3339 UTC with milliseconds.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

impl StatusView {
    /// Builds the view from slots and a copy of their states.
    pub fn build(
        config: &Config,
        slots: &[std::sync::Arc<Slot>],
        units: &[(usize, SeriesState)],
    ) -> StatusView {
        let instances: Vec<InstanceView> = units
            .iter()
            .map(|(index, unit)| {
                let st = &unit.state;
                let i = &slots[*index].instance;
                let failure = st.last.as_ref().and_then(|l| l.outcome.result.as_ref().err());
                InstanceView {
                    pool: i.pool_name().to_owned(),
                    role: i.role_name().to_owned(),
                    check: i.check.clone(),
                    kind: i.kind().as_str().to_owned(),
                    target: i.target.clone(),
                    address: unit.address.map(|a| a.to_string()),
                    success: st.success(),
                    reason: failure.map(|f| f.reason.as_str().to_owned()),
                    detail: failure.map(|f| f.detail.clone()),
                    last_duration_seconds: st.last.as_ref().map(|l| l.duration.as_secs_f64()),
                    last_run: st.last.as_ref().map(|l| rfc3339(l.at)),
                    last_change: st.last_change.map(rfc3339),
                    runs: st.runs,
                    consecutive_failures: st.consecutive_failures,
                    points_to: st.last.as_ref().and_then(|l| l.outcome.points_to.clone()),
                    stale: unit.stale,
                    interval_seconds: i.interval.as_secs_f64(),
                    expect_pool: i.spec.expect_pool().map(str::to_owned),
                    changed_at: st.last_change,
                    purpose: i.purpose,
                }
            })
            .collect();
        let pools = crate::output::rollup::pool_rollups(config, slots, units);
        let sites = crate::output::rollup::site_rollups(config, &pools, slots, units);
        let interop = crate::output::rollup::interop(config, slots, units);
        let labels = config.agent.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        StatusView {
            config: config.origin.clone(),
            sites,
            pools,
            instances,
            interop,
            users: Vec::new(),
            labels,
        }
    }

    /// True when every instance passed.
    pub fn all_passed(&self) -> bool {
        self.instances.iter().all(|i| i.success == Some(true))
    }

    /// The plain-text table of `coexistd check`.
    pub fn table(&self) -> String {
        let header = ["POOL", "ROLE", "CHECK", "KIND", "TARGET", "RESULT", "REASON", "LATENCY", "DETAIL"];
        let rows: Vec<[String; 9]> = self
            .instances
            .iter()
            .map(|i| {
                [
                    if i.pool.is_empty() { "-".into() } else { i.pool.clone() },
                    if i.role.is_empty() { "-".into() } else { i.role.clone() },
                    i.check.clone(),
                    i.kind.clone(),
                    match &i.address {
                        Some(a) => format!("{} @{a}", i.target),
                        None => i.target.clone(),
                    },
                    match i.success {
                        Some(true) => "PASS".into(),
                        Some(false) => "FAIL".into(),
                        None => "-".into(),
                    },
                    i.reason.clone().unwrap_or_else(|| "-".into()),
                    i.last_duration_seconds.map_or("-".into(), |d| format!("{:.1}ms", d * 1000.0)),
                    i.detail.clone().unwrap_or_default(),
                ]
            })
            .collect();
        let mut widths = header.map(str::len);
        for r in &rows {
            for (w, c) in widths.iter_mut().zip(r.iter()).take(8) {
                *w = (*w).max(c.chars().count());
            }
        }
        let mut out = String::new();
        let line = |out: &mut String, cells: &[&str]| {
            for (k, c) in cells.iter().enumerate() {
                if k == cells.len() - 1 {
                    let _ = write!(out, "{c}");
                } else {
                    let _ = write!(out, "{c:<w$}  ", w = widths[k]);
                }
            }
            let trimmed = out.trim_end().len();
            out.truncate(trimmed);
            out.push('\n');
        };
        line(&mut out, &header);
        for r in &rows {
            let cells: Vec<&str> = r.iter().map(String::as_str).collect();
            line(&mut out, &cells);
        }
        out.push('\n');
        for i in self.instances.iter().filter(|i| i.points_to.is_some()) {
            let _ = writeln!(
                out,
                "record {} ({}) points to {}",
                i.target,
                i.check,
                i.points_to.as_deref().unwrap_or_default()
            );
        }
        for u in &self.users {
            let _ = match (u.registered, &u.home_pool) {
                (true, Some(home)) => {
                    writeln!(out, "user {} ({}) registered on {home} (planned {})", u.user, u.uri, u.pool)
                }
                _ => writeln!(
                    out,
                    "user {} ({}) NOT registered: {} {}",
                    u.user,
                    u.uri,
                    u.reason.map_or("-", |r| r.as_str()),
                    u.detail.as_deref().unwrap_or("")
                ),
            };
        }
        for c in &self.interop {
            let mut notes = String::new();
            if c.pending + c.stale > 0 {
                let _ = write!(notes, ", {} not run, unregistered or stale", c.pending + c.stale);
            }
            if !c.unproven.is_empty() {
                let _ = write!(notes, "; planned here, proving nothing: {}", c.unproven.join(", "));
            }
            let _ = writeln!(
                out,
                "interop {} {} -> {}: {} - {} pairs passing, {} failing{notes}",
                c.kind,
                c.from_pool,
                c.to_pool,
                c.state.word(),
                c.passing,
                c.failing,
            );
        }
        for st in &self.sites {
            let admin = match st.administrable {
                None => "no administration checks".to_owned(),
                Some(true) => format!("administrable ({} administration checks passing)", st.admin_passing),
                Some(false) if st.failures.is_empty() => {
                    format!("NOT ADMINISTRABLE yet ({} administration checks not run)", st.admin_pending)
                }
                Some(false) => format!("NOT ADMINISTRABLE: {}", st.failures.join("; ")),
            };
            let _ = writeln!(
                out,
                "site {} (pools {}): {} - {admin}",
                st.name,
                st.pools.join(", "),
                if st.up { "UP" } else { "DOWN" }
            );
        }
        for p in &self.pools {
            let _ = writeln!(
                out,
                "pool {} ({}, {}): {} - {} passing, {} failing{}",
                p.name,
                p.role,
                p.fqdn,
                if p.up { "UP" } else { "DOWN" },
                p.passing,
                p.failing,
                if p.pending > 0 { format!(", {} not run", p.pending) } else { String::new() }
                    + &if p.stale > 0 { format!(", {} stale", p.stale) } else { String::new() }
            );
        }
        out
    }
}
