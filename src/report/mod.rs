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
mod model;
pub mod prom;
pub mod render;

pub use model::*;

use std::collections::{BTreeMap, BTreeSet};

use crate::config::report::ReportCriteria;
use analysis::{availability, changes, columns, longest, pointing, rfc3339, runs, Grid, State};
use prom::{Labels, PromError, Prometheus};

/// Columns of the strip charts.
pub const STRIP_COLUMNS: usize = 336;

/// Steps in one report at most (a year of minutes): each series read is kept as one
/// byte a step.
pub const MAX_STEPS: usize = 600_000;

/// The JSON schema version.
pub const SCHEMA: u32 = 1;

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

/// The whole period cut into windows of at most a day (`full` windows of `cs` seconds
/// from the start, then one of `rem` seconds ending at the period's end): what
/// queries over the whole period (certificates, percentiles, coverage) are evaluated
/// on, one window at a time, so that none loads the whole period at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windows {
    /// Start of the first.
    pub from: i64,
    /// Length of a full window (a multiple of the step).
    pub cs: i64,
    /// Full windows.
    pub full: usize,
    /// Length of the last, shorter window (0: none).
    pub rem: i64,
}

impl Windows {
    /// The windows of `grid`.
    pub fn of(grid: Grid) -> Windows {
        let k = ((86_400 / grid.step).max(1) as usize).min(grid.n.max(1));
        Windows {
            from: grid.from,
            cs: grid.step * k as i64,
            full: grid.n / k,
            rem: grid.step * (grid.n % k) as i64,
        }
    }

    /// How many windows.
    pub fn count(&self) -> usize {
        self.full + usize::from(self.rem > 0)
    }

    /// Start of window `d`.
    pub fn start_of(&self, d: usize) -> i64 {
        self.from + self.cs * d as i64
    }

    /// Length of window `d`.
    pub fn len_of(&self, d: usize) -> i64 {
        if d < self.full {
            self.cs
        } else {
            self.rem
        }
    }
}

/// Queries on the report's grid and windows.
struct Reader<'a> {
    prom: &'a Prometheus,
    grid: Grid,
    windows: Windows,
}

impl Reader<'_> {
    /// Up, down or unknown per step.
    async fn states(&self, q: String) -> Result<Vec<(Labels, Vec<State>)>, PromError> {
        self.prom.range_map(&q, self.grid.from, self.grid.step, self.grid.n, State::Unknown, State::of).await
    }

    /// Whether each step has a point.
    async fn flags(&self, q: String) -> Result<Vec<(Labels, Vec<bool>)>, PromError> {
        self.prom.range_map(&q, self.grid.from, self.grid.step, self.grid.n, false, |_| true).await
    }

    /// `make(window length)` evaluated at the end of every window: one value per window.
    async fn per_window<T: Clone>(
        &self,
        make: impl Fn(i64) -> String,
        missing: T,
        keep: impl Fn(f64) -> T + Copy,
    ) -> Result<Vec<(Labels, Vec<T>)>, PromError> {
        let w = self.windows;
        let mut out: BTreeMap<Labels, Vec<T>> = BTreeMap::new();
        if w.full > 0 {
            for (l, v) in
                self.prom.range_map(&make(w.cs), w.from, w.cs, w.full, missing.clone(), keep).await?
            {
                out.insert(l, v);
            }
        }
        if w.rem > 0 {
            let end = w.start_of(w.full) + w.rem;
            for (l, x) in self.prom.instant(&make(w.rem), end).await? {
                let v = out.entry(l).or_insert_with(|| vec![missing.clone(); w.full]);
                v.resize(w.full, missing.clone());
                v.push(keep(x));
            }
            for v in out.values_mut() {
                v.resize(w.count(), missing.clone());
            }
        }
        Ok(out.into_iter().collect())
    }

    /// Whether each step of window `d` has a point.
    async fn flags_in(&self, q: String, d: usize) -> Result<Vec<(Labels, Vec<bool>)>, PromError> {
        let (from, n) = (self.windows.start_of(d), (self.windows.len_of(d) / self.grid.step) as usize);
        self.prom.range_map(&q, from, self.grid.step, n, false, |_| true).await
    }
}

/// The label value of the series seen last (largest window index) among `series`.
fn latest<'a>(series: impl Iterator<Item = (&'a Labels, &'a Vec<bool>)>, key: &str) -> Option<String> {
    series
        .filter_map(|(l, v)| Some((v.iter().rposition(|x| *x)?, label(l, key))))
        .max_by_key(|(i, _)| *i)
        .map(|(_, v)| v.to_owned())
}

/// Reads the period `grid` from `prom` and judges it by `criteria`.
pub async fn build(
    prom: &Prometheus,
    url: &str,
    grid: Grid,
    criteria: &ReportCriteria,
) -> Result<Report, PromError> {
    if grid.n == 0 {
        return Err(PromError::Setup("the period holds no step".into()));
    }
    let to = grid.end_of(grid.n - 1);
    let step = grid.step;
    let r = Reader { prom, grid, windows: Windows::of(grid) };
    let column_seconds = step * grid.n.div_ceil(STRIP_COLUMNS) as i64;

    // Pools (with several agents, up only when every agent saw it up), their roles and
    // sites (the latest seen).
    let pool_series = r.states(format!("min by (pool) (last_over_time(coexist_pool_up[{step}s]))")).await?;
    let roles = r
        .per_window(
            |w| format!("max by (pool, role) (last_over_time(coexist_pool_up[{w}s]))"),
            false,
            |_| true,
        )
        .await?;
    let sites_seen = r
        .per_window(
            |w| format!("max by (pool, topology_site) (last_over_time(coexist_pool_site_info[{w}s]))"),
            false,
            |_| true,
        )
        .await?;
    let of_pool = |list: &[(Labels, Vec<bool>)], pool: &str, key: &str| {
        latest(list.iter().filter(|(l, _)| label(l, "pool") == pool).map(|(l, v)| (l, v)), key)
    };
    // Where failure counters rose, step by step (only those steps come back): one query
    // for every incident of every pool. A rise is seen at the step of its second sample.
    let failures = r
        .flags(format!(
            "max by (pool, check, reason) (increase(coexist_probe_failures_total{{to_pool=\"\",purpose!=\"admin\"}}[{}s]) > 0)",
            2 * step
        ))
        .await?;
    let mut pools = Vec::new();
    let mut role_of: BTreeMap<String, String> = BTreeMap::new();
    let mut pool_states: BTreeMap<String, Vec<State>> = BTreeMap::new();
    for (l, st) in pool_series {
        let pool = label(&l, "pool").to_owned();
        let role = of_pool(&roles, &pool, "role").unwrap_or_default();
        let incidents = runs(&st, State::Down)
            .iter()
            .map(|run| {
                // The checks whose failures rose within the incident, and why.
                let mut causes: Vec<String> = failures
                    .iter()
                    .filter(|(l, v)| {
                        label(l, "pool") == pool && v[run.first..=run.last].iter().any(|rose| *rose)
                    })
                    .map(|(l, _)| format!("{}: {}", label(l, "check"), label(l, "reason")))
                    .collect();
                causes.sort();
                causes.dedup();
                Incident { span: span(&grid, run.first, run.last), causes }
            })
            .collect();
        role_of.insert(pool.clone(), role.clone());
        pools.push(PoolReport {
            topology_site: of_pool(&sites_seen, &pool, "topology_site"),
            longest_gap_seconds: longest(&st, State::Unknown) as i64 * step,
            pool: pool.clone(),
            role,
            availability: availability(&st, &grid),
            incidents,
            strip: columns(&st, STRIP_COLUMNS),
        });
        pool_states.insert(pool, st);
    }
    let mut by_site: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in &pools {
        if let Some(site) = &p.topology_site {
            by_site.entry(site.clone()).or_default().push(p.pool.clone());
        }
    }
    let sites = by_site
        .into_iter()
        .map(|(site, members)| {
            let st: Vec<State> = (0..grid.n)
                .map(|i| {
                    let each = members.iter().filter_map(|p| pool_states.get(p).map(|s| s[i]));
                    each.fold(State::Up, |acc, s| match (acc, s) {
                        (State::Down, _) | (_, State::Down) => State::Down,
                        (State::Unknown, _) | (_, State::Unknown) => State::Unknown,
                        _ => State::Up,
                    })
                })
                .collect();
            SiteReport {
                topology_site: site,
                pools: members,
                availability: availability(&st, &grid),
                incidents: runs(&st, State::Down).iter().map(|x| span(&grid, x.first, x.last)).collect(),
                strip: columns(&st, STRIP_COLUMNS),
            }
        })
        .collect();

    // The matrices; an untested cell's step is unknown.
    let cells = r
        .states(format!(
            "min by (kind, from_pool, to_pool) (last_over_time(coexist_interop_up[{step}s])) unless on (kind, from_pool, to_pool) \
             (max by (kind, from_pool, to_pool) (last_over_time(coexist_interop_untested[{step}s])) == 1)"
        ))
        .await?;
    // Percentiles per window (a day at most): the median day's median and the worst
    // day's 95th percentile of the cell's slowest pair, by the pairs' planned pools.
    let mut percentiles: BTreeMap<(String, String, String), (f64, f64)> = BTreeMap::new();
    let kinds: BTreeSet<String> = cells.iter().map(|(l, _)| label(l, "kind").to_owned()).collect();
    for kind in &kinds {
        let Some(metric) = delivery_metric(kind) else { continue };
        for (q, is_p95) in [(0.5, false), (0.95, true)] {
            let make = |w: i64| {
                format!(
                    "max by (pool, to_pool) (quantile_over_time({q}, {metric}{{kind={}}}[{w}s]))",
                    quote(kind)
                )
            };
            for (l, per_window) in r.per_window(make, None, Some).await? {
                let mut v: Vec<f64> = per_window.into_iter().flatten().collect();
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
                incidents: runs(st, State::Down).iter().map(|x| span(&grid, x.first, x.last)).collect(),
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
        r.states(format!("min by (user) (last_over_time(coexist_user_registered[{step}s]))")).await?;
    let homes = r
        .flags(format!("max by (user, pool, home_pool) (last_over_time(coexist_user_home[{step}s]))"))
        .await?;
    let mut user_names: BTreeSet<String> =
        registered.iter().map(|(l, _)| label(l, "user").to_owned()).collect();
    user_names.extend(homes.iter().map(|(l, _)| label(l, "user").to_owned()));
    let mut users = Vec::new();
    for user in user_names {
        let reg = registered
            .iter()
            .find(|(l, _)| label(l, "user") == user)
            .map_or_else(|| vec![State::Unknown; grid.n], |(_, v)| v.clone());
        let mine: Vec<&(Labels, Vec<bool>)> =
            homes.iter().filter(|(l, _)| label(l, "user") == user).collect();
        // The home each step (whatever the plan), then the plan at each change.
        let mut home_values: Vec<String> = Vec::new();
        let mut home_series: Vec<Vec<bool>> = Vec::new();
        for (l, v) in &mine {
            let h = label(l, "home_pool").to_owned();
            match home_values.iter().position(|x| *x == h) {
                Some(j) => home_series[j].iter_mut().zip(v).for_each(|(a, b)| *a |= *b),
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
                let planned = mine
                    .iter()
                    .any(|(l, v)| label(l, "home_pool") == c.to && label(l, "pool") == c.to && v[c.at]);
                Some(Move { at: rfc3339(grid.start_of(c.at)), from, to: c.to, planned })
            })
            .collect();
        users.push(UserReport { user, registered: availability(&reg, &grid), moves });
    }

    // Records, as each agent saw them (two agents may be answered differently).
    let pointed = r
        .flags(format!(
            "max by (check, target, instance, points_to) (last_over_time(coexist_dns_points_to[{step}s]))"
        ))
        .await?;
    let verdicts = r
        .states(format!(
            "min by (check, target, instance) (last_over_time(coexist_probe_success{{kind=~\"dns|sip_discovery\"}}[{step}s]))"
        ))
        .await?;
    let record_keys: BTreeSet<(String, String, String)> = pointed
        .iter()
        .map(|(l, _)| {
            (label(l, "check").to_owned(), label(l, "target").to_owned(), label(l, "instance").to_owned())
        })
        .collect();
    let mut records = Vec::new();
    for (check, target, agent) in record_keys {
        let same = |l: &Labels| {
            label(l, "check") == check && label(l, "target") == target && label(l, "instance") == agent
        };
        let mine: Vec<&(Labels, Vec<bool>)> = pointed.iter().filter(|(l, _)| same(l)).collect();
        let values: Vec<String> = mine.iter().map(|(l, _)| label(l, "points_to").to_owned()).collect();
        let series: Vec<Vec<bool>> = mine.iter().map(|(_, v)| v.clone()).collect();
        let points = pointing(&values, &series, grid.n);
        let verdict = verdicts.iter().find(|(l, _)| same(l)).map(|(_, v)| v);
        let all = changes(&points);
        let mut segments = Vec::new();
        for (i, c) in all.iter().enumerate() {
            let last_step = all.get(i + 1).map_or(grid.n - 1, |n| n.at - 1);
            // A segment ends where the record was last seen pointing there.
            let last_seen = (c.at..=last_step).rev().find(|k| points[*k].is_some()).unwrap_or(c.at);
            segments.push(Segment { span: span(&grid, c.at, last_seen), points_to: c.to.clone() });
        }
        let events = all
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let from = c.from.clone()?;
                let kind = match role_of.get(&c.to).map(String::as_str) {
                    Some("new") => "cutover",
                    Some("legacy") => "rollback",
                    _ => "change",
                };
                // The check's first verdict after the change says whether the plan
                // held; no verdict at all (the agent down) is not proof of a plan.
                let until = all.get(i + 1).map_or(grid.n, |n| n.at);
                let first = verdict.and_then(|v| v[c.at..until].iter().find(|s| **s != State::Unknown));
                let planned = first == Some(&State::Up);
                Some(RecordEvent {
                    at: rfc3339(grid.start_of(c.at)),
                    from,
                    to: c.to.clone(),
                    kind: kind.into(),
                    planned,
                })
            })
            .collect();
        records.push(RecordReport { check, record: target, agent, segments, events });
    }

    // Certificates and TLS, a window at a time; the latest value of each endpoint.
    type Key = (String, String, String, String);
    let key = |l: &Labels| {
        (
            label(l, "pool").to_owned(),
            label(l, "check").to_owned(),
            label(l, "target").to_owned(),
            label(l, "address").to_owned(),
        )
    };
    let by = "pool, check, target, address";
    let mut not_after: BTreeMap<Key, (usize, f64)> = BTreeMap::new();
    for (l, v) in r
        .per_window(
            |w| format!("min by ({by}) (last_over_time(coexist_tls_cert_not_after_timestamp_seconds[{w}s]))"),
            None,
            Some,
        )
        .await?
    {
        if let Some((i, x)) = v.iter().enumerate().rev().find_map(|(i, x)| x.map(|x| (i, x))) {
            let e = not_after.entry(key(&l)).or_insert((i, x));
            if i > e.0 || (i == e.0 && x < e.1) {
                *e = (i, x);
            }
        }
    }
    let infos = r
        .per_window(
            |w| format!("max by ({by}, subject, signature_algorithm) (last_over_time(coexist_tls_cert_info[{w}s]))"),
            false,
            |_| true,
        )
        .await?;
    let versions = r
        .per_window(
            |w| format!("max by ({by}, version) (last_over_time(coexist_tls_version_info[{w}s]))"),
            false,
            |_| true,
        )
        .await?;
    // Subjects of an endpoint, the one seen last first.
    let mut subjects: BTreeMap<Key, Vec<(usize, String)>> = BTreeMap::new();
    let mut algorithms: BTreeMap<Key, BTreeSet<String>> = BTreeMap::new();
    for (l, v) in &infos {
        let last = v.iter().rposition(|x| *x).unwrap_or(0);
        subjects.entry(key(l)).or_default().push((last, label(l, "subject").to_owned()));
        algorithms.entry(key(l)).or_default().insert(label(l, "signature_algorithm").to_owned());
    }
    let mut tls_versions: BTreeMap<Key, BTreeSet<String>> = BTreeMap::new();
    for (l, _) in &versions {
        tls_versions.entry(key(l)).or_default().insert(label(l, "version").to_owned());
    }
    let mut certificates: Vec<CertReport> = not_after
        .into_iter()
        .map(|(k, (_, v))| {
            let mut s = subjects.remove(&k).unwrap_or_default();
            s.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
            let mut names: Vec<String> = Vec::new();
            for (_, n) in s {
                if !names.contains(&n) {
                    names.push(n);
                }
            }
            CertReport {
                subjects: names,
                pool: k.0,
                check: k.1,
                target: k.2,
                address: k.3,
                not_after: rfc3339(v as i64),
                days_left: (v - to as f64) / 86_400.0,
            }
        })
        .collect();
    certificates.sort_by(|a, b| a.days_left.total_cmp(&b.days_left).then_with(|| a.target.cmp(&b.target)));
    let mut tls_changes = Vec::new();
    let endpoints: BTreeSet<&Key> = tls_versions.keys().chain(algorithms.keys()).collect();
    for k in endpoints {
        let vs: Vec<String> = tls_versions.get(k).map(|s| s.iter().cloned().collect()).unwrap_or_default();
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

    // Coverage: agents, and the periods without any.
    let agents_series =
        r.states(format!("max by (job, instance) (last_over_time(coexist_build_info[{step}s]))")).await?;
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
            gaps: runs(st, State::Unknown).iter().map(|x| span(&grid, x.first, x.last)).collect(),
        });
    }
    let any_states: Vec<State> = any.iter().map(|a| if *a { State::Up } else { State::Unknown }).collect();
    let no_data: Vec<Span> =
        runs(&any_states, State::Unknown).iter().map(|x| span(&grid, x.first, x.last)).collect();
    // Configuration loads (a start is one too): each distinct value of the gauge that
    // keeps the last one's time (a few series: one per agent).
    let mut reload_times: BTreeSet<i64> = BTreeSet::new();
    for (_, v) in prom
        .range(
            &format!(
                "max by (job, instance) (last_over_time(coexist_config_last_reload_success_timestamp_seconds[{step}s]))"
            ),
            grid.from,
            step,
            grid.n,
        )
        .await?
    {
        reload_times.extend(v.iter().flatten().map(|t| *t as i64).filter(|t| (grid.from..to).contains(t)));
    }
    let checks = check_spans(&r, &reload_times).await?;
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

/// Which checks existed when: each check's presence in the last five minutes of every
/// window (a day), then step by step in the windows where one appeared or went and in
/// those with a configuration load (reading every sample of every instance of a month
/// would take minutes).
async fn check_spans(r: &Reader<'_>, reloads: &BTreeSet<i64>) -> Result<Vec<CheckSpan>, PromError> {
    let (grid, w) = (r.grid, r.windows);
    let per_check =
        |s: i64| format!("count by (check) (last_over_time(coexist_check_interval_seconds[{s}s]))");
    let days = r.per_window(|len| per_check(len.min(300)), false, |_| true).await?;
    // Present in the period's first and last step: those bounds need no search.
    let at_edge = |end: i64| async move {
        Ok::<BTreeSet<String>, PromError>(
            r.prom
                .instant(&per_check(grid.step), end)
                .await?
                .iter()
                .map(|(l, _)| label(l, "check").to_owned())
                .collect(),
        )
    };
    let (at_start, at_end) = (at_edge(grid.end_of(0)).await?, at_edge(grid.end_of(grid.n - 1)).await?);
    let mut wanted: BTreeSet<usize> = BTreeSet::new();
    let mut coarse: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for (l, v) in &days {
        if let (Some(f), Some(e)) = (v.iter().position(|x| *x), v.iter().rposition(|x| *x)) {
            let check = label(l, "check");
            coarse.insert(check.to_owned(), (f, e));
            if !at_start.contains(check) {
                wanted.insert(f);
            }
            if !at_end.contains(check) {
                // Last seen at the end of day e: it may have run into day e + 1.
                wanted.extend([e, (e + 1).min(w.count() - 1)]);
            }
        }
    }
    // A day with a configuration load is read step by step only when a check ran in it
    // that neither its end nor the previous day's end shows (added and removed the same
    // day).
    for t in reloads {
        let d = (((t - w.from) / w.cs) as usize).min(w.count() - 1);
        if wanted.contains(&d) {
            continue;
        }
        let in_day = r.prom.instant(&per_check(w.len_of(d)), w.start_of(d) + w.len_of(d)).await?;
        let shown = |i: usize| {
            days.iter()
                .filter(|(_, v)| v.get(i).copied().unwrap_or(false))
                .map(|(l, _)| label(l, "check"))
                .collect::<BTreeSet<_>>()
        };
        let (end, before) = (shown(d), if d > 0 { shown(d - 1) } else { BTreeSet::new() });
        if in_day.iter().any(|(l, _)| !end.contains(label(l, "check")) && !before.contains(label(l, "check")))
        {
            wanted.insert(d);
        }
    }
    let per_day = (w.cs / grid.step) as usize;
    // Fine bounds (grid step indices) from the windows read step by step.
    let mut fine: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for d in wanted {
        for (l, v) in r.flags_in(per_check(grid.step), d).await? {
            if let (Some(f), Some(e)) = (v.iter().position(|x| *x), v.iter().rposition(|x| *x)) {
                let (f, e) = (d * per_day + f, d * per_day + e);
                let b = fine.entry(label(&l, "check").to_owned()).or_insert((f, e));
                *b = (b.0.min(f), b.1.max(e));
            }
        }
    }
    let mut names: BTreeSet<&String> = coarse.keys().collect();
    names.extend(fine.keys());
    Ok(names
        .into_iter()
        .map(|check| {
            // Present at the period's edges: the edges. Else the windows read step by
            // step hold the check's bounds; the day's bounds without them.
            let c = coarse.get(check).map(|(f, e)| (f * per_day, ((e + 1) * per_day).min(grid.n) - 1));
            let (mut first, mut last) = fine.get(check).copied().or(c).unwrap_or((0, 0));
            if at_start.contains(check.as_str()) {
                first = 0;
            }
            if at_end.contains(check.as_str()) {
                last = grid.n - 1;
            }
            CheckSpan {
                check: check.clone(),
                first_seen: rfc3339(grid.start_of(first)),
                last_seen: rfc3339(grid.end_of(last)),
            }
        })
        .collect())
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
    // Without any agent, or without a pool's rollup (a pool 99 % unknown is no proof).
    let agents_gap = report.coverage.no_data.iter().map(|s| s.duration_seconds).max().unwrap_or(0);
    let pool_gap = report.pools.iter().max_by_key(|p| p.longest_gap_seconds);
    let longest = agents_gap.max(pool_gap.map_or(0, |p| p.longest_gap_seconds));
    let whose = match pool_gap {
        Some(p) if p.longest_gap_seconds > agents_gap => format!(" (pool {})", p.pool),
        _ => String::new(),
    };
    out.push(Criterion {
        name: format!(
            "no data gap longer than {} (any agent's, any pool's)",
            analysis::human(criteria.max_data_gap.as_secs() as i64)
        ),
        measured: if longest == 0 { "no gap".into() } else { format!("{}{whose}", analysis::human(longest)) },
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
    fn windows_cover_the_period_exactly_a_day_at_most_each() {
        let w = Windows::of(Grid { from: 0, step: 60, n: 20_160 });
        assert_eq!((w.cs, w.full, w.rem, w.count()), (86_400, 14, 0, 14));
        let odd = Windows::of(Grid { from: 100, step: 60, n: 20_161 });
        assert_eq!(
            (odd.full, odd.rem, odd.count(), odd.start_of(14), odd.len_of(14)),
            (14, 60, 15, 100 + 14 * 86_400, 60)
        );
        let short = Windows::of(Grid { from: 0, step: 300, n: 7 });
        assert_eq!((short.cs, short.full, short.rem), (2_100, 1, 0));
    }
}
