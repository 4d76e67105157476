//! Human and machine views of the results: the JSON of `/api/v1/status` and
//! `coexistd check --format json`, the table of `coexistd check`, the status page.

use std::fmt::Write;
use std::time::SystemTime;

use serde::Serialize;

use crate::config::Config;
use crate::state::{Slot, Unit};

/// One check instance's last result.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceReport {
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
}

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

/// The whole status.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Where the running configuration came from (empty, and left out, on the agent's
    /// HTTP port).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub config: String,
    /// Per pool.
    pub pools: Vec<PoolReport>,
    /// Per instance, in configuration order.
    pub instances: Vec<InstanceReport>,
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

impl Report {
    /// Builds the report from slots and a copy of their states.
    pub fn build(config: &Config, slots: &[std::sync::Arc<Slot>], units: &[(usize, Unit)]) -> Report {
        let instances: Vec<InstanceReport> = units
            .iter()
            .map(|(index, unit)| {
                let st = &unit.state;
                let i = &slots[*index].instance;
                let failure = st.last.as_ref().and_then(|l| l.outcome.result.as_ref().err());
                InstanceReport {
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
                }
            })
            .collect();
        let pools = pool_reports(config, slots, units);
        Report { config: config.origin.clone(), pools, instances }
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

    /// The HTML status page: pools, then a pools x checks matrix.
    pub fn html(&self) -> String {
        let mut s = String::from(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>coexistd</title><style>\
             body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}\
             td,th{border:1px solid #ccc;padding:4px 8px;font-size:14px;vertical-align:top}\
             .pass{background:#d9f2d9}.fail{background:#f7d4d4}.pending{background:#eee}.stale{background:#f4e3b5}\
             small{color:#555}</style></head><body><h1>coexistd</h1>",
        );
        let _ =
            write!(s, "<p><a href=\"/metrics\">metrics</a> &middot; <a href=\"/api/v1/status\">JSON</a></p>");
        s.push_str("<h2>Pools</h2><table><tr><th>pool</th><th>role</th><th>FQDN</th><th>state</th><th>passing</th><th>failing</th><th>not run</th></tr>");
        for p in &self.pools {
            let class = if p.up {
                "pass"
            } else if p.failing > 0 {
                "fail"
            } else {
                "pending"
            };
            let _ = write!(
                s,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"{class}\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&p.name),
                esc(&p.role),
                esc(&p.fqdn),
                if p.up { "UP" } else { "DOWN" },
                p.passing,
                p.failing,
                p.pending
            );
        }
        s.push_str("</table><h2>Checks</h2>");
        let mut checks: Vec<&str> = Vec::new();
        for i in &self.instances {
            if !checks.contains(&i.check.as_str()) {
                checks.push(&i.check);
            }
        }
        let mut pools: Vec<&str> = self.pools.iter().map(|p| p.name.as_str()).collect();
        if self.instances.iter().any(|i| i.pool.is_empty()) {
            pools.push("");
        }
        s.push_str("<table><tr><th>check</th>");
        for p in &pools {
            let _ = write!(s, "<th>{}</th>", if p.is_empty() { "(no pool)".to_owned() } else { esc(p) });
        }
        s.push_str("</tr>");
        for c in &checks {
            let _ = write!(s, "<tr><th>{}</th>", esc(c));
            for p in &pools {
                // An each_address check has one row per address: one line each in the cell.
                let rows: Vec<&InstanceReport> =
                    self.instances.iter().filter(|i| i.check == *c && i.pool == *p).collect();
                if rows.is_empty() {
                    s.push_str("<td></td>");
                    continue;
                }
                let class = if rows.iter().any(|i| i.stale) {
                    "stale"
                } else if rows.iter().any(|i| i.success == Some(false)) {
                    "fail"
                } else if rows.iter().all(|i| i.success == Some(true)) {
                    "pass"
                } else {
                    "pending"
                };
                let _ = write!(s, "<td class=\"{class}\">");
                for i in rows {
                    let word = match i.success {
                        _ if i.stale => "STALE",
                        Some(true) => "PASS",
                        Some(false) => "FAIL",
                        None => "not run",
                    };
                    let at = i.address.as_deref().map(|a| format!(" @{a}")).unwrap_or_default();
                    let _ = write!(
                        s,
                        "<div title=\"{}\"><b>{word}</b> {}<br><small>{}{} &middot; {} &middot; changed {}</small></div>",
                        esc(i.detail.as_deref().unwrap_or("")),
                        esc(i.reason.as_deref().unwrap_or("")),
                        esc(&i.target),
                        esc(&at),
                        i.last_duration_seconds.map_or("-".into(), |d| format!("{:.1} ms", d * 1000.0)),
                        esc(i.last_change.as_deref().unwrap_or("-")),
                    );
                }
                s.push_str("</td>");
            }
            s.push_str("</tr>");
        }
        s.push_str("</table></body></html>\n");
        s
    }
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

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}
