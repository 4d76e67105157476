//! `coexistd report`: the go/no-go evidence of a coexistence period, read from what
//! coexistd exported to Prometheus.
//!
//! Everything comes from Prometheus' HTTP API with the aggregation done there: one
//! range query per rollup on a grid of `--step` (`last_over_time(x[step])` at each
//! point: what the step saw, nothing where it saw nothing); certificates and
//! percentiles on a coarser grid of at most a day per step (no query loads the whole
//! period at once); the causes of every incident from one query of where failure counters rose. Time
//! without data is *unknown*, reported apart and never counted as up or down.
//!
//! The [`Report`] is serialised as JSON as it is (schema in `docs/report.md`) and
//! rendered as one self-contained HTML file or Markdown ([`render`]).

pub mod analysis;
pub mod prom;
pub mod render;

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::config::report::ReportCriteria;
use analysis::{availability, changes, columns, pointing, rfc3339, runs, Availability, Grid, State};
use prom::{Labels, PromError, Prometheus};

/// Columns of the strip charts.
pub const STRIP_COLUMNS: usize = 336;

/// The JSON schema version.
pub const SCHEMA: u32 = 1;

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// [`SCHEMA`].
    pub schema: u32,
    /// Start of the period (RFC 3339).
    pub from: String,
    /// End of the period.
    pub to: String,
    /// The grid's step, seconds.
    pub step_seconds: i64,
    /// Seconds per column of every `strip`.
    pub strip_column_seconds: i64,
    /// Where the data came from.
    pub prometheus: String,
    /// GO / NO-GO and each criterion.
    pub verdict: Verdict,
    /// Topology sites.
    pub sites: Vec<SiteReport>,
    /// Pools.
    pub pools: Vec<PoolReport>,
    /// Matrix cells between users' pools.
    pub interop: Vec<CellReport>,
    /// Test users.
    pub users: Vec<UserReport>,
    /// Where each record pointed.
    pub records: Vec<RecordReport>,
    /// Certificates, soonest expiry first.
    pub certificates: Vec<CertReport>,
    /// Endpoints whose TLS version or signature algorithm changed in the period.
    pub tls_changes: Vec<TlsChange>,
    /// What reported when.
    pub coverage: Coverage,
}

/// The decision and why.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    /// Every criterion holds.
    pub go: bool,
    /// Each criterion.
    pub criteria: Vec<Criterion>,
}

/// One criterion: what was measured against what.
#[derive(Debug, Clone, Serialize)]
pub struct Criterion {
    /// What it asks.
    pub name: String,
    /// The measured value, as read.
    pub measured: String,
    /// The threshold, as read.
    pub threshold: String,
    /// Whether it holds.
    pub pass: bool,
}

/// A span of time.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Span {
    /// Start (RFC 3339).
    pub start: String,
    /// End.
    pub end: String,
    /// Seconds.
    pub duration_seconds: i64,
}

/// A pool DOWN for a while.
#[derive(Debug, Clone, Serialize)]
pub struct Incident {
    /// When.
    #[serde(flatten)]
    pub span: Span,
    /// The checks that failed in it and their reasons (`check: reason`).
    pub causes: Vec<String>,
}

/// A pool over the period.
#[derive(Debug, Clone, Serialize)]
pub struct PoolReport {
    /// Pool name.
    pub pool: String,
    /// `legacy` or `new`.
    pub role: String,
    /// Its topology site.
    pub topology_site: Option<String>,
    /// Time up / down / unknown.
    #[serde(flatten)]
    pub availability: Availability,
    /// Its DOWN periods.
    pub incidents: Vec<Incident>,
    /// The strip chart's columns.
    pub strip: Vec<State>,
}

/// A topology site: DOWN while any of its pools is.
#[derive(Debug, Clone, Serialize)]
pub struct SiteReport {
    /// The site.
    pub topology_site: String,
    /// Its pools.
    pub pools: Vec<String>,
    /// Time up / down / unknown.
    #[serde(flatten)]
    pub availability: Availability,
}

/// A cell of an interoperability matrix.
#[derive(Debug, Clone, Serialize)]
pub struct CellReport {
    /// The pair kind (`sip_im`, `sip_presence`, `sip_call`, `sip_group_im`).
    pub kind: String,
    /// The senders' pool.
    pub from_pool: String,
    /// The receivers' pool.
    pub to_pool: String,
    /// Time up / down / unknown (untested steps are unknown).
    #[serde(flatten)]
    pub availability: Availability,
    /// Its DOWN periods.
    pub incidents: Vec<Span>,
    /// Median delivery (set-up) time over the period of the cell's slowest pair.
    pub p50_seconds: Option<f64>,
    /// 95th percentile, likewise.
    pub p95_seconds: Option<f64>,
    /// The strip chart's columns.
    pub strip: Vec<State>,
}

/// A test user over the period.
#[derive(Debug, Clone, Serialize)]
pub struct UserReport {
    /// The user.
    pub user: String,
    /// Registered (its endpoint's registration) up / down / unknown.
    pub registered: Availability,
    /// Where it was homed and when that changed.
    pub moves: Vec<Move>,
}

/// A change of a user's home pool.
#[derive(Debug, Clone, Serialize)]
pub struct Move {
    /// When it was first seen on the new pool.
    pub at: String,
    /// The pool before.
    pub from: String,
    /// The pool after.
    pub to: String,
    /// The plan homed it there at that time.
    pub planned: bool,
}

/// Where one record pointed.
#[derive(Debug, Clone, Serialize)]
pub struct RecordReport {
    /// The check.
    pub check: String,
    /// The record (the check's target).
    pub record: String,
    /// What it pointed at, when.
    pub segments: Vec<Segment>,
    /// Its changes.
    pub events: Vec<RecordEvent>,
}

/// A period a record pointed at one pool.
#[derive(Debug, Clone, Serialize)]
pub struct Segment {
    /// When.
    #[serde(flatten)]
    pub span: Span,
    /// The pool (`unknown`: none of the configured pools).
    pub points_to: String,
}

/// A record moving.
#[derive(Debug, Clone, Serialize)]
pub struct RecordEvent {
    /// When the new target was first seen.
    pub at: String,
    /// Before.
    pub from: String,
    /// After.
    pub to: String,
    /// `cutover` (to a new pool), `rollback` (to a legacy pool), `change`.
    pub kind: String,
    /// The record's check passed after it (its `expect_pool`, `expect` held).
    pub planned: bool,
}

/// A certificate seen.
#[derive(Debug, Clone, Serialize)]
pub struct CertReport {
    /// Pool.
    pub pool: String,
    /// Check.
    pub check: String,
    /// Target.
    pub target: String,
    /// Address (`each_address`), empty otherwise.
    pub address: String,
    /// Subjects seen for it in the period (the last one first).
    pub subjects: Vec<String>,
    /// NotAfter of the last certificate (RFC 3339).
    pub not_after: String,
    /// Days from the period's end to NotAfter.
    pub days_left: f64,
}

/// An endpoint whose TLS changed.
#[derive(Debug, Clone, Serialize)]
pub struct TlsChange {
    /// Pool.
    pub pool: String,
    /// Check.
    pub check: String,
    /// Target.
    pub target: String,
    /// Address.
    pub address: String,
    /// Versions seen.
    pub versions: Vec<String>,
    /// Signature algorithms seen.
    pub signature_algorithms: Vec<String>,
}

/// What reported when.
#[derive(Debug, Clone, Serialize)]
pub struct Coverage {
    /// Each agent (Prometheus' job and instance) and when it had data.
    pub agents: Vec<AgentCoverage>,
    /// When no agent had data.
    pub no_data: Vec<Span>,
    /// Each check: first and last seen.
    pub checks: Vec<CheckSpan>,
    /// Successful configuration loads in the period.
    pub reloads: Vec<String>,
}

/// One agent's reporting.
#[derive(Debug, Clone, Serialize)]
pub struct AgentCoverage {
    /// Prometheus' `job`.
    pub job: String,
    /// Prometheus' `instance`.
    pub instance: String,
    /// Seconds with data.
    pub reporting_seconds: i64,
    /// Its gaps.
    pub gaps: Vec<Span>,
}

/// When a check existed.
#[derive(Debug, Clone, Serialize)]
pub struct CheckSpan {
    /// The check.
    pub check: String,
    /// First step it was seen.
    pub first_seen: String,
    /// Last step.
    pub last_seen: String,
}

fn span(grid: &Grid, first: usize, last: usize) -> Span {
    let (s, e) = (grid.start_of(first), grid.end_of(last));
    Span { start: rfc3339(s), end: rfc3339(e), duration_seconds: e - s }
}

fn label<'a>(l: &'a Labels, k: &str) -> &'a str {
    l.get(k).map_or("", String::as_str)
}

/// A PromQL string literal.
fn quote(v: &str) -> String {
    format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The gauge each matrix kind measures its delivery (set-up) time in.
fn delivery_metric(kind: &str) -> Option<&'static str> {
    match kind {
        "sip_im" => Some("coexist_sip_delivery_seconds"),
        "sip_presence" => Some("coexist_presence_delivery_seconds"),
        "sip_call" => Some("coexist_call_setup_seconds"),
        "sip_group_im" => Some("coexist_group_im_delivery_seconds"),
        _ => None,
    }
}

/// Reads the period `grid` (ending at `to`) from `prom` and judges it by `criteria`.
pub async fn build(
    prom: &Prometheus,
    url: &str,
    grid: Grid,
    criteria: &ReportCriteria,
) -> Result<Report, PromError> {
    let to = grid.end_of(grid.n - 1);
    let step = grid.step;
    let range = |q: String| async move { prom.range(&q, grid.from, step, grid.n).await };
    // Up (≥ 1), down, or unknown per step, one byte each.
    let range_states = |q: String| async move {
        prom.range_map(&q, grid.from, step, grid.n, State::Unknown, |x| {
            if x >= 1.0 {
                State::Up
            } else {
                State::Down
            }
        })
        .await
    };
    let coarse = coarse_grid(grid);
    let cs = coarse.step;
    let coarse_range = |q: String| async move { prom.range(&q, coarse.from, coarse.step, coarse.n).await };
    let column_seconds = step * grid.n.div_ceil(STRIP_COLUMNS) as i64;

    // Pools and their sites.
    let pool_series =
        range_states(format!("min by (pool, role) (last_over_time(coexist_pool_up[{step}s]))")).await?;
    let site_of: BTreeMap<String, String> =
        coarse_range(format!("max by (pool, topology_site) (last_over_time(coexist_pool_site_info[{cs}s]))"))
            .await?
            .into_iter()
            .map(|(l, _)| (label(&l, "pool").to_owned(), label(&l, "topology_site").to_owned()))
            .collect();
    // Where failure counters rose, step by step (only those steps come back): one query
    // for every incident of every pool. A rise is seen at the step of its second sample.
    let failures = prom
        .range_map(
            &format!(
                "max by (pool, check, reason) (increase(coexist_probe_failures_total{{to_pool=\"\",purpose!=\"admin\"}}[{}s]) > 0)",
                2 * step
            ),
            grid.from,
            step,
            grid.n,
            false,
            |_| true,
        )
        .await?;
    let mut pools = Vec::new();
    let mut role_of: BTreeMap<String, String> = BTreeMap::new();
    let mut pool_states: BTreeMap<String, Vec<State>> = BTreeMap::new();
    for (l, st) in pool_series {
        let (pool, role) = (label(&l, "pool").to_owned(), label(&l, "role").to_owned());
        let incidents = runs(&st, State::Down)
            .iter()
            .map(|r| {
                // The checks whose failures rose within the incident, and why.
                let mut causes: Vec<String> = failures
                    .iter()
                    .filter(|(l, v)| label(l, "pool") == pool && v[r.first..=r.last].iter().any(|rose| *rose))
                    .map(|(l, _)| format!("{}: {}", label(l, "check"), label(l, "reason")))
                    .collect();
                causes.sort();
                causes.dedup();
                Incident { span: span(&grid, r.first, r.last), causes }
            })
            .collect();
        role_of.insert(pool.clone(), role.clone());
        pools.push(PoolReport {
            topology_site: site_of.get(&pool).cloned(),
            pool: pool.clone(),
            role,
            availability: availability(&st, &grid),
            incidents,
            strip: columns(&st, STRIP_COLUMNS),
        });
        pool_states.insert(pool, st);
    }
    let mut by_site: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (pool, site) in &site_of {
        if pool_states.contains_key(pool) {
            by_site.entry(site.clone()).or_default().push(pool.clone());
        }
    }
    let sites = by_site
        .into_iter()
        .map(|(site, members)| {
            let st: Vec<State> = (0..grid.n)
                .map(|i| {
                    let each: Vec<State> = members.iter().map(|p| pool_states[p][i]).collect();
                    if each.contains(&State::Down) {
                        State::Down
                    } else if each.contains(&State::Unknown) {
                        State::Unknown
                    } else {
                        State::Up
                    }
                })
                .collect();
            SiteReport { topology_site: site, pools: members, availability: availability(&st, &grid) }
        })
        .collect();

    // The matrices; an untested cell's step is unknown.
    let cells = range_states(format!(
        "min by (kind, from_pool, to_pool) (last_over_time(coexist_interop_up[{step}s])) unless on (kind, from_pool, to_pool) \
         (max by (kind, from_pool, to_pool) (last_over_time(coexist_interop_untested[{step}s])) == 1)"
    ))
    .await?;
    // Percentiles per coarse step (a day at most): the median day's median and the worst
    // day's 95th percentile of the cell's slowest pair. Each step loads a day of samples,
    // never the whole period at once.
    let mut percentiles: BTreeMap<(String, String, String), (f64, f64)> = BTreeMap::new();
    let kinds: BTreeSet<String> = cells.iter().map(|(l, _)| label(l, "kind").to_owned()).collect();
    for kind in &kinds {
        let Some(metric) = delivery_metric(kind) else { continue };
        for (q, is_p95) in [(0.5, false), (0.95, true)] {
            let query = format!(
                "max by (pool, to_pool) (quantile_over_time({q}, {metric}{{kind={}}}[{cs}s]))",
                quote(kind)
            );
            for (l, per_step) in coarse_range(query).await? {
                let mut v: Vec<f64> = per_step.into_iter().flatten().collect();
                if v.is_empty() {
                    continue;
                }
                v.sort_by(f64::total_cmp);
                let e = percentiles
                    .entry((kind.clone(), label(&l, "pool").to_owned(), label(&l, "to_pool").to_owned()))
                    .or_insert((f64::NAN, f64::NAN));
                if is_p95 {
                    e.1 = v[v.len() - 1];
                } else {
                    e.0 = v[(v.len() - 1) / 2];
                }
            }
        }
    }
    let interop = cells
        .iter()
        .map(|(l, st)| {
            let key = (
                label(l, "kind").to_owned(),
                label(l, "from_pool").to_owned(),
                label(l, "to_pool").to_owned(),
            );
            let p = percentiles.get(&key).copied();
            let finite = |x: f64| x.is_finite().then_some(x);
            CellReport {
                availability: availability(st, &grid),
                incidents: runs(st, State::Down).iter().map(|r| span(&grid, r.first, r.last)).collect(),
                p50_seconds: p.and_then(|p| finite(p.0)),
                p95_seconds: p.and_then(|p| finite(p.1)),
                strip: columns(st, STRIP_COLUMNS),
                kind: key.0,
                from_pool: key.1,
                to_pool: key.2,
            }
        })
        .collect();

    // Test users: registered, and where they were homed.
    let registered =
        range_states(format!("min by (user) (last_over_time(coexist_user_registered[{step}s]))")).await?;
    let homes =
        range(format!("max by (user, pool, home_pool) (last_over_time(coexist_user_home[{step}s]))")).await?;
    let mut user_names: BTreeSet<String> =
        registered.iter().map(|(l, _)| label(l, "user").to_owned()).collect();
    user_names.extend(homes.iter().map(|(l, _)| label(l, "user").to_owned()));
    let mut users = Vec::new();
    for user in user_names {
        let reg = registered
            .iter()
            .find(|(l, _)| label(l, "user") == user)
            .map_or_else(|| vec![State::Unknown; grid.n], |(_, v)| v.clone());
        let mine: Vec<&(Labels, Vec<Option<f64>>)> =
            homes.iter().filter(|(l, _)| label(l, "user") == user).collect();
        // The home each step (whatever the plan), then the plan at each change.
        let mut home_values: Vec<String> = Vec::new();
        let mut home_series: Vec<Vec<Option<f64>>> = Vec::new();
        for (l, v) in &mine {
            let h = label(l, "home_pool").to_owned();
            match home_values.iter().position(|x| *x == h) {
                Some(j) => {
                    for (slot, x) in home_series[j].iter_mut().zip(v) {
                        if x.is_some() {
                            *slot = *x;
                        }
                    }
                }
                None => {
                    home_values.push(h);
                    home_series.push(v.clone());
                }
            }
        }
        let points = pointing(&home_values, &home_series, grid.n);
        let moves = changes(&points)
            .into_iter()
            .filter_map(|c| {
                let from = c.from?;
                let planned = mine.iter().any(|(l, v)| {
                    label(l, "home_pool") == c.to && label(l, "pool") == c.to && v[c.at].is_some()
                });
                Some(Move { at: rfc3339(grid.start_of(c.at)), from, to: c.to, planned })
            })
            .collect();
        users.push(UserReport { user, registered: availability(&reg, &grid), moves });
    }

    // Records.
    let pointed =
        range(format!("max by (check, target, points_to) (last_over_time(coexist_dns_points_to[{step}s]))"))
            .await?;
    let verdicts = range(format!(
        "min by (check, target) (last_over_time(coexist_probe_success{{kind=~\"dns|sip_discovery\"}}[{step}s]))"
    ))
    .await?;
    let mut record_keys: BTreeSet<(String, String)> = BTreeSet::new();
    for (l, _) in &pointed {
        record_keys.insert((label(l, "check").to_owned(), label(l, "target").to_owned()));
    }
    let mut records = Vec::new();
    for (check, target) in record_keys {
        let mine: Vec<&(Labels, Vec<Option<f64>>)> = pointed
            .iter()
            .filter(|(l, _)| label(l, "check") == check && label(l, "target") == target)
            .collect();
        let values: Vec<String> = mine.iter().map(|(l, _)| label(l, "points_to").to_owned()).collect();
        let series: Vec<Vec<Option<f64>>> = mine.iter().map(|(_, v)| v.clone()).collect();
        let points = pointing(&values, &series, grid.n);
        let ok = verdicts.iter().find(|(l, _)| label(l, "check") == check && label(l, "target") == target);
        let all = changes(&points);
        let mut segments = Vec::new();
        for (i, c) in all.iter().enumerate() {
            let last_step = all.get(i + 1).map_or(grid.n - 1, |n| n.at - 1);
            // A segment ends where the record was last seen pointing there.
            let last_seen = (c.at..=last_step).rev().find(|k| points[*k].is_some()).unwrap_or(c.at);
            segments.push(Segment { span: span(&grid, c.at, last_seen), points_to: c.to.clone() });
        }
        let events = all
            .into_iter()
            .filter_map(|c| {
                let from = c.from?;
                let kind = match role_of.get(&c.to).map(String::as_str) {
                    Some("new") => "cutover",
                    Some("legacy") => "rollback",
                    _ => "change",
                };
                let planned = ok.is_none_or(|(_, v)| v[c.at].is_none_or(|x| x >= 1.0));
                Some(RecordEvent {
                    at: rfc3339(grid.start_of(c.at)),
                    from,
                    to: c.to,
                    kind: kind.into(),
                    planned,
                })
            })
            .collect();
        records.push(RecordReport { check, record: target, segments, events });
    }

    // Certificates and TLS.
    let key = |l: &Labels| {
        (
            label(l, "pool").to_owned(),
            label(l, "check").to_owned(),
            label(l, "target").to_owned(),
            label(l, "address").to_owned(),
        )
    };
    type Key = (String, String, String, String);
    // Per coarse step (a day at most), so that no query loads the whole period at once.
    let mut not_after: BTreeMap<Key, f64> = BTreeMap::new();
    for (l, v) in
        coarse_range(format!("last_over_time(coexist_tls_cert_not_after_timestamp_seconds[{cs}s])")).await?
    {
        if let Some(last) = v.iter().rev().flatten().next() {
            not_after.insert(key(&l), *last);
        }
    }
    let mut subjects: BTreeMap<Key, BTreeSet<String>> = BTreeMap::new();
    let mut algorithms: BTreeMap<Key, BTreeSet<String>> = BTreeMap::new();
    for (l, _) in coarse_range(format!("last_over_time(coexist_tls_cert_info[{cs}s])")).await? {
        subjects.entry(key(&l)).or_default().insert(label(&l, "subject").to_owned());
        algorithms.entry(key(&l)).or_default().insert(label(&l, "signature_algorithm").to_owned());
    }
    let mut versions: BTreeMap<Key, BTreeSet<String>> = BTreeMap::new();
    for (l, _) in coarse_range(format!("last_over_time(coexist_tls_version_info[{cs}s])")).await? {
        versions.entry(key(&l)).or_default().insert(label(&l, "version").to_owned());
    }
    let mut certificates: Vec<CertReport> = not_after
        .into_iter()
        .map(|(k, v)| CertReport {
            subjects: subjects.get(&k).map(|s| s.iter().cloned().collect()).unwrap_or_default(),
            pool: k.0,
            check: k.1,
            target: k.2,
            address: k.3,
            not_after: rfc3339(v as i64),
            days_left: (v - to as f64) / 86_400.0,
        })
        .collect();
    certificates.sort_by(|a, b| a.days_left.total_cmp(&b.days_left).then_with(|| a.target.cmp(&b.target)));
    let mut tls_changes = Vec::new();
    let endpoints: BTreeSet<&Key> = versions.keys().chain(algorithms.keys()).collect();
    for k in endpoints {
        let vs: Vec<String> = versions.get(k).map(|s| s.iter().cloned().collect()).unwrap_or_default();
        let algs: Vec<String> = algorithms.get(k).map(|s| s.iter().cloned().collect()).unwrap_or_default();
        if vs.len() > 1 || algs.len() > 1 {
            tls_changes.push(TlsChange {
                pool: k.0.clone(),
                check: k.1.clone(),
                target: k.2.clone(),
                address: k.3.clone(),
                versions: vs,
                signature_algorithms: algs,
            });
        }
    }

    // Coverage.
    let agents_series =
        range_states(format!("max by (job, instance) (last_over_time(coexist_build_info[{step}s]))")).await?;
    let mut any = vec![false; grid.n];
    let mut agents = Vec::new();
    for (l, st) in &agents_series {
        for (a, s) in any.iter_mut().zip(st.iter()) {
            *a |= *s != State::Unknown;
        }
        agents.push(AgentCoverage {
            job: label(l, "job").to_owned(),
            instance: label(l, "instance").to_owned(),
            reporting_seconds: st.iter().filter(|s| **s != State::Unknown).count() as i64 * step,
            gaps: runs(st, State::Unknown).iter().map(|r| span(&grid, r.first, r.last)).collect(),
        });
    }
    let any_states: Vec<State> = any.iter().map(|a| if *a { State::Up } else { State::Unknown }).collect();
    let no_data: Vec<Span> =
        runs(&any_states, State::Unknown).iter().map(|r| span(&grid, r.first, r.last)).collect();
    // Which checks existed when: each check's presence in the last five minutes of each
    // day (coarse step) first, then step by step in only the days where one appeared
    // or went (reading every sample of every instance of a month would take minutes).
    let per_check =
        |w: i64| format!("count by (check) (last_over_time(coexist_check_interval_seconds[{w}s]))");
    let present = |_| true;
    let days = prom.range_map(&per_check(cs.min(300)), coarse.from, cs, coarse.n, false, present).await?;
    let mut bounds: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for (l, v) in &days {
        if let (Some(f), Some(e)) = (v.iter().position(|x| *x), v.iter().rposition(|x| *x)) {
            bounds.insert(label(l, "check").to_owned(), (f, e));
        }
    }
    let per_day = (cs / step) as usize;
    let mut fine: BTreeMap<usize, Vec<(Labels, Vec<bool>)>> = BTreeMap::new();
    // A check last seen at the end of day e may have run into day e + 1.
    let wanted: BTreeSet<usize> =
        bounds.values().flat_map(|(f, e)| [*f, *e, (*e + 1).min(coarse.n - 1)]).collect();
    for d in wanted {
        fine.insert(
            d,
            prom.range_map(&per_check(step), coarse.start_of(d), step, per_day, false, present).await?,
        );
    }
    let seen_in = |d: usize, check: &str, last: bool| {
        let v =
            fine.get(&d).and_then(|l| l.iter().find(|(x, _)| label(x, "check") == check)).map(|(_, v)| v)?;
        let i = if last { v.iter().rposition(|x| *x) } else { v.iter().position(|x| *x) }?;
        Some(d * per_day + i)
    };
    let checks = bounds
        .iter()
        .map(|(check, (f, e))| {
            let first = seen_in(*f, check, false).unwrap_or(f * per_day);
            let last = seen_in(e + 1, check, true)
                .filter(|_| e + 1 < coarse.n)
                .or_else(|| seen_in(*e, check, true))
                .unwrap_or((e + 1) * per_day - 1);
            CheckSpan {
                check: check.clone(),
                first_seen: rfc3339(grid.start_of(first)),
                last_seen: rfc3339(grid.end_of(last)),
            }
        })
        .collect();
    let mut reload_times: BTreeSet<i64> = BTreeSet::new();
    for (_, v) in range(format!(
        "max by (job, instance) (last_over_time(coexist_config_last_reload_success_timestamp_seconds[{step}s]))"
    ))
    .await?
    {
        reload_times.extend(v.iter().flatten().map(|t| *t as i64).filter(|t| (grid.from..=to).contains(t)));
    }
    let coverage =
        Coverage { agents, no_data, checks, reloads: reload_times.into_iter().map(rfc3339).collect() };

    let mut report = Report {
        schema: SCHEMA,
        from: rfc3339(grid.from),
        to: rfc3339(to),
        step_seconds: step,
        strip_column_seconds: column_seconds,
        prometheus: url.to_owned(),
        verdict: Verdict { go: false, criteria: Vec::new() },
        sites,
        pools,
        interop,
        users,
        records,
        certificates,
        tls_changes,
        coverage,
    };
    report.verdict = judge(&report, criteria, to);
    Ok(report)
}

/// The grid of at most a day per step that divides `grid` exactly: what queries over
/// the whole period (certificates, percentiles) are evaluated on, one step at a time.
pub fn coarse_grid(grid: Grid) -> Grid {
    let most = (86_400 / grid.step).max(1) as usize;
    let k = (1..=most.min(grid.n)).rev().find(|k| grid.n.is_multiple_of(*k)).unwrap_or(1);
    Grid { from: grid.from, step: grid.step * k as i64, n: grid.n / k }
}

fn percent(x: f64) -> String {
    format!("{:.4} %", x * 100.0)
}

/// Judges `report` (ending at `to`) by `criteria`.
pub fn judge(report: &Report, criteria: &ReportCriteria, to: i64) -> Verdict {
    let mut out = Vec::new();
    if report.pools.is_empty() {
        out.push(Criterion {
            name: "coexistd's pool series exist in the period".into(),
            measured: "none found".into(),
            threshold: "at least one pool".into(),
            pass: false,
        });
    }
    for p in &report.pools {
        let t = criteria.pool_threshold(&p.pool, &p.role);
        out.push(Criterion {
            name: format!("availability of the {} pool {}", p.role, p.pool),
            measured: p.availability.availability.map_or_else(|| "no data".into(), percent),
            threshold: format!("≥ {}", percent(t)),
            pass: p.availability.availability.is_some_and(|a| a >= t),
        });
    }
    for c in &report.interop {
        let t = criteria.interop_threshold(&c.kind);
        out.push(Criterion {
            name: format!("{} from {} to {}", c.kind, c.from_pool, c.to_pool),
            measured: c.availability.availability.map_or_else(|| "no data".into(), percent),
            threshold: format!("≥ {}", percent(t)),
            pass: c.availability.availability.is_some_and(|a| a >= t),
        });
    }
    let since = to - i64::from(criteria.signin_stable_days) * 86_400;
    let unplanned: Vec<String> = report
        .records
        .iter()
        .flat_map(|r| r.events.iter().map(move |e| (r, e)))
        .filter(|(_, e)| !e.planned && humantime::parse_rfc3339(&e.at).is_ok_and(|t| unix(t) >= since))
        .map(|(r, e)| format!("{} → {} at {}", r.record, e.to, e.at))
        .collect();
    out.push(Criterion {
        name: format!("no unplanned sign-in record change in the last {} days", criteria.signin_stable_days),
        measured: if unplanned.is_empty() { "none".into() } else { unplanned.join("; ") },
        threshold: "none".into(),
        pass: unplanned.is_empty(),
    });
    let soonest = report.certificates.first();
    out.push(Criterion {
        name: format!("no certificate expires within {} days of the period's end", criteria.min_cert_days),
        measured: soonest.map_or_else(
            || "no certificate seen".into(),
            |c| {
                format!(
                    "{:.1} days ({}, {})",
                    c.days_left,
                    c.subjects.first().map_or("?", String::as_str),
                    c.target
                )
            },
        ),
        threshold: format!("≥ {} days", criteria.min_cert_days),
        pass: soonest.is_none_or(|c| c.days_left >= f64::from(criteria.min_cert_days)),
    });
    let longest = report.coverage.no_data.iter().map(|s| s.duration_seconds).max().unwrap_or(0);
    out.push(Criterion {
        name: format!("no data gap longer than {}", analysis::human(criteria.max_data_gap.as_secs() as i64)),
        measured: if longest == 0 { "no gap".into() } else { analysis::human(longest) },
        threshold: format!("≤ {}", analysis::human(criteria.max_data_gap.as_secs() as i64)),
        pass: longest <= criteria.max_data_gap.as_secs() as i64,
    });
    Verdict { go: out.iter().all(|c| c.pass), criteria: out }
}

fn unix(t: std::time::SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// Reads a time flag: RFC 3339 (`2026-11-01T00:00:00Z`), unix seconds, or `now`.
pub fn parse_time(s: &str, now: i64) -> Result<i64, String> {
    if s == "now" {
        return Ok(now);
    }
    if let Ok(t) = s.parse::<i64>() {
        return Ok(t);
    }
    humantime::parse_rfc3339_weak(s).map(unix).map_err(|e| {
        format!("{s:?} is not a time (RFC 3339 such as 2026-11-01T00:00:00Z, unix seconds, or now): {e}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_coarse_grid_divides_the_period_in_steps_of_a_day_at_most() {
        let g = Grid { from: 0, step: 60, n: 20_160 };
        assert_eq!(coarse_grid(g), Grid { from: 0, step: 86_400, n: 14 });
        let odd = Grid { from: 0, step: 60, n: 20_161 };
        let c = coarse_grid(odd);
        assert_eq!((c.step * c.n as i64, c.step <= 86_400), (60 * 20_161, true));
        let short = Grid { from: 0, step: 300, n: 7 };
        assert_eq!(coarse_grid(short), Grid { from: 0, step: 2_100, n: 1 });
    }
}
