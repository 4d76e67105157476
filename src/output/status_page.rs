//! The status page served at `/`: what an operator opens when a page arrives.
//!
//! In reading order: a banner (all well, or how many pools are down and checks fail),
//! one card per pool with UP/DOWN and *the checks that made it down* (reason, detail,
//! address, for how long), where each record and the sign-in path point and whether
//! that is the plan, the checks x pools matrix with reason and detail written out
//! (not in tooltips), and the recent state changes. It says when it was generated and
//! reloads itself with `<meta http-equiv="refresh">` (no JavaScript, no external
//! assets: it works from a jump host without internet). On a phone the pool cards
//! stack in one column and the tables scroll sideways.
//!
//! It renders a [`StatusView`] and does not read the store, so it shows exactly what
//! `/api/v1/status` and `/api/v1/events` show.

use std::fmt::Write;
use std::time::{Duration, SystemTime};

use crate::output::rollup::{CellState, InteropCell};
use crate::output::views::{EventView, InstanceView, PoolRollup, StatusView};

/// State changes listed on the page (all kept ones are in `/api/v1/events`).
pub const EVENTS_SHOWN: usize = 50;

/// The page reloads at the shortest check interval, within these bounds (seconds).
const REFRESH_BOUNDS: (u64, u64) = (5, 60);

const STYLE: &str = "\
:root{--ok:#1b7f3b;--okbg:#e3f4e8;--bad:#b42318;--badbg:#fde8e6;--wait:#6b7280;--waitbg:#f1f2f4;\
--stale:#8a5a00;--stalebg:#fdf1d6;--line:#d9dce1;--ink:#1f2328;--mute:#59636e}\
*{box-sizing:border-box}\
body{margin:0;font:15px/1.4 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:var(--ink);background:#f7f8fa}\
header{background:#1f2937;color:#fff;padding:10px 16px;display:flex;flex-wrap:wrap;gap:4px 16px;align-items:baseline}\
header h1{font-size:18px;margin:0}header span{color:#cbd5e1;font-size:13px}\
header a{color:#cbd5e1}\
main{padding:12px 16px;max-width:1400px}\
h2{font-size:16px;margin:22px 0 8px}\
.banner{padding:10px 14px;border-radius:6px;font-weight:600;font-size:16px}\
.banner.ok{background:var(--okbg);color:var(--ok)}.banner.bad{background:var(--badbg);color:var(--bad)}\
.banner.wait{background:var(--waitbg);color:var(--wait)}.banner.stale{background:var(--stalebg);color:var(--stale)}\
.pools{display:grid;grid-template-columns:repeat(auto-fill,minmax(300px,1fr));gap:12px}\
.pool{background:#fff;border:1px solid var(--line);border-left:6px solid var(--wait);border-radius:6px;padding:10px 12px}\
.pool.up{border-left-color:var(--ok)}.pool.down{border-left-color:var(--bad)}.pool.stale{border-left-color:var(--stale)}\
.pool h3{margin:0;font-size:16px;display:flex;justify-content:space-between;gap:8px}\
.pool .meta{color:var(--mute);font-size:13px;margin:2px 0 6px}\
.pool ul{margin:6px 0 0;padding-left:18px}.pool li{margin:3px 0}\
.badge{font-size:12px;font-weight:700;padding:2px 8px;border-radius:10px;white-space:nowrap}\
.badge.pass,.badge.up{background:var(--okbg);color:var(--ok)}.badge.fail,.badge.down{background:var(--badbg);color:var(--bad)}\
.badge.pending{background:var(--waitbg);color:var(--wait)}.badge.stale{background:var(--stalebg);color:var(--stale)}\
.scroll{overflow-x:auto;background:#fff;border:1px solid var(--line);border-radius:6px}\
table{border-collapse:collapse;width:100%}\
th,td{border-bottom:1px solid var(--line);padding:6px 8px;text-align:left;vertical-align:top;font-size:14px}\
th{background:#f1f3f5;font-weight:600}tbody th{background:#fafbfc;white-space:nowrap}\
td.pass{background:var(--okbg)}td.fail{background:var(--badbg)}td.pending{background:var(--waitbg)}td.stale{background:var(--stalebg)}\
.cell+.cell{border-top:1px dashed var(--line);margin-top:4px;padding-top:4px}\
.reason{font-weight:600;color:var(--bad)}.detail{color:var(--ink);word-break:break-word}\
.for{color:var(--mute);font-size:13px;white-space:nowrap}small,.mute{color:var(--mute);font-size:12px}\
code{font-size:13px}\
footer{color:var(--mute);font-size:12px;padding:16px}\
@media (max-width:600px){main{padding:8px}th,td{padding:5px;font-size:13px}}";

/// The status page of `view` at `now`, listing `events` (newest first), linking to the
/// metrics at `metrics_path`.
pub fn render(view: &StatusView, events: &[EventView], now: SystemTime, metrics_path: &str) -> String {
    let mut s = String::with_capacity(16 * 1024 + view.instances.len() * 400);
    let refresh = refresh_seconds(view);
    let generated = humantime::format_rfc3339_seconds(now).to_string();
    let _ = write!(
        s,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <meta http-equiv=\"refresh\" content=\"{refresh}\">\
         <title>{} coexistd</title><style>{STYLE}</style></head><body>",
        title_prefix(view)
    );
    let site = view.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ");
    let _ = write!(
        s,
        "<header><h1>coexistd</h1>{}<span id=\"generated\" data-generated=\"{generated}\">generated at {} \
         &middot; refreshes every {refresh} s</span><span><a href=\"/api/v1/status\">status JSON</a> \
         &middot; <a href=\"/api/v1/events\">events JSON</a> &middot; <a href=\"{}\">metrics</a></span></header><main>",
        if site.is_empty() { String::new() } else { format!("<span>{}</span>", esc(&site)) },
        esc(&generated.replace('T', " ").replace('Z', " UTC")),
        esc(metrics_path),
    );
    banner(&mut s, view);
    sites(&mut s, view);
    pools(&mut s, view, now);
    interop(&mut s, view);
    records(&mut s, view, now);
    matrix(&mut s, view, now);
    changes(&mut s, events, now);
    s.push_str(
        "</main><footer>Results are the last scheduled run of each check; nothing is probed when \
         this page is loaded. A result is <b>stale</b> when its check has not finished for 3 \
         intervals.</footer></body></html>\n",
    );
    s
}

/// `[DOWN]` or `[OK]` in the tab title, so a pinned tab says it.
fn title_prefix(view: &StatusView) -> &'static str {
    if view.instances.iter().any(|i| i.success == Some(false)) {
        "[FAILING]"
    } else if view.instances.iter().any(|i| i.stale) {
        "[STALE]"
    } else if view.all_passed() {
        "[OK]"
    } else {
        "[STARTING]"
    }
}

fn refresh_seconds(view: &StatusView) -> u64 {
    let shortest = view.instances.iter().map(|i| i.interval_seconds).fold(f64::INFINITY, f64::min);
    if shortest.is_finite() {
        (shortest.round() as u64).clamp(REFRESH_BOUNDS.0, REFRESH_BOUNDS.1)
    } else {
        REFRESH_BOUNDS.1
    }
}

/// The state word and CSS class of one result.
fn state(i: &InstanceView) -> (&'static str, &'static str) {
    match i.success {
        _ if i.stale => ("STALE", "stale"),
        Some(true) => ("PASS", "pass"),
        Some(false) => ("FAIL", "fail"),
        None => ("NOT RUN", "pending"),
    }
}

fn banner(s: &mut String, view: &StatusView) {
    let failing = view.instances.iter().filter(|i| i.success == Some(false) && !i.stale).count();
    let stale = view.instances.iter().filter(|i| i.stale).count();
    let pending = view.instances.iter().filter(|i| i.success.is_none() && !i.stale).count();
    let down = view.pools.iter().filter(|p| p.failing > 0).count();
    let interop_down = view.interop.iter().filter(|c| c.failing > 0).count();
    let (class, text) = if failing > 0 {
        (
            "bad",
            format!(
                "{down} of {} pools DOWN{} &middot; {failing} of {} check results failing",
                view.pools.len(),
                if interop_down > 0 {
                    format!(
                        " &middot; users cannot reach each other in {interop_down} of {} matrix cells",
                        view.interop.len()
                    )
                } else {
                    String::new()
                },
                view.instances.len()
            ),
        )
    } else if stale > 0 {
        ("stale", format!("{stale} check results are stale: the agent is not keeping up"))
    } else if pending > 0 {
        ("wait", format!("Starting: {pending} checks have not run yet"))
    } else {
        (
            "ok",
            format!("All {} pools UP &middot; all {} checks passing", view.pools.len(), view.instances.len()),
        )
    };
    let _ = write!(s, "<div class=\"banner {class}\" id=\"banner\">{text}</div>");
}

/// Topology sites: their pools UP, and whether an administrator can manage them (the
/// administration checks, `purpose = "admin"`). First on the page.
fn sites(s: &mut String, view: &StatusView) {
    if view.sites.is_empty() {
        return;
    }
    s.push_str(
        "<h2>Sites</h2><div class=\"scroll\"><table id=\"sites\"><thead><tr><th>topology site</th><th>pools</th>\
         <th>pools up</th><th>administration</th></tr></thead><tbody>",
    );
    for st in &view.sites {
        let (up, up_class) = if st.up { ("UP", "pass") } else { ("DOWN", "fail") };
        let (admin, admin_class) = match st.administrable {
            None => ("no administration checks".to_owned(), "pending"),
            Some(true) => (format!("ADMINISTRABLE ({} checks passing)", st.admin_passing), "pass"),
            // Nothing failing: checks not run yet (a 10-minute sign-in after a start) or stale.
            Some(false) if st.failures.is_empty() => (
                format!("PENDING ({} passing, {} not run yet or stale)", st.admin_passing, st.admin_pending),
                "pending",
            ),
            Some(false) => ("NOT ADMINISTRABLE".to_owned(), "fail"),
        };
        let _ = write!(
            s,
            "<tr id=\"site-{}\"><th>{}</th><td>{}</td><td class=\"{up_class}\">{up}</td><td class=\"{admin_class}\"><b>{}</b>",
            esc(&st.name),
            esc(&st.name),
            esc(&st.pools.join(", ")),
            esc(&admin)
        );
        for f in &st.failures {
            let _ = write!(s, "<div class=\"detail\">{}</div>", esc(f));
        }
        s.push_str("</td></tr>");
    }
    s.push_str("</tbody></table></div>");
}

fn pools(s: &mut String, view: &StatusView, now: SystemTime) {
    if view.pools.is_empty() {
        return;
    }
    s.push_str("<h2>Pools</h2><div class=\"pools\">");
    for p in &view.pools {
        let (word, class) = pool_state(p);
        let _ = write!(
            s,
            "<div class=\"pool {class}\" id=\"pool-{}\" data-pool=\"{}\"><h3><span>{}</span>\
             <span class=\"badge {class}\">{word}</span></h3>\
             <div class=\"meta\">{} &middot; {} &middot; {} passing, {} failing{}{}</div>",
            esc(&p.name),
            esc(&p.name),
            esc(&p.name),
            esc(&p.role),
            esc(&p.fqdn),
            p.passing,
            p.failing,
            if p.pending > 0 { format!(", {} not run", p.pending) } else { String::new() },
            if p.stale > 0 { format!(", {} stale", p.stale) } else { String::new() },
        );
        // What made it down: every failing or stale result of this pool.
        let why: Vec<&InstanceView> = view
            .instances
            .iter()
            .filter(|i| {
                i.pool == p.name
                    && i.purpose != crate::config::Purpose::Admin
                    && (i.success == Some(false) || i.stale)
            })
            .collect();
        if !why.is_empty() {
            s.push_str("<ul class=\"why\">");
            for i in why {
                let at = i.address.as_deref().map(|a| format!(" @{}", esc(a))).unwrap_or_default();
                if i.stale {
                    let _ = write!(
                        s,
                        "<li><b>{}</b>{at}: <span class=\"reason\">stale</span> \
                         <span class=\"for\">{}</span></li>",
                        esc(&i.check),
                        since(i.last_run_time(), now)
                            .map_or_else(|| "no result yet".into(), |d| format!("no result for {d}"))
                    );
                } else {
                    let _ = write!(
                        s,
                        "<li data-check=\"{}\"><b>{}</b>{at}: <span class=\"reason\">{}</span> \
                         <span class=\"detail\">{}</span> <span class=\"for\">{}</span></li>",
                        esc(&i.check),
                        esc(&i.check),
                        esc(i.reason.as_deref().unwrap_or("")),
                        esc(i.detail.as_deref().unwrap_or("")),
                        failing_for(i, now),
                    );
                }
            }
            s.push_str("</ul>");
        }
        s.push_str("</div>");
    }
    s.push_str("</div>");
}

/// What a matrix of a kind between users shows, for its heading.
fn kind_title(kind: &str) -> &str {
    match kind {
        "sip_im" => "instant messages (sip_im)",
        "sip_presence" => "presence (sip_presence)",
        "sip_call" => "calls (sip_call)",
        other => other,
    }
}

/// The coexistence matrices (test users of one pool reaching those of another), one per
/// kind, and where each test user is registered.
fn interop(s: &mut String, view: &StatusView) {
    let mut kinds: Vec<&str> = Vec::new();
    for c in &view.interop {
        if !kinds.contains(&c.kind.as_str()) {
            kinds.push(&c.kind);
        }
    }
    for kind in kinds {
        let cells: Vec<&InteropCell> = view.interop.iter().filter(|c| c.kind == kind).collect();
        let mut pools: Vec<&str> = Vec::new();
        for c in &cells {
            for p in [&c.from_pool, &c.to_pool] {
                if !pools.contains(&p.as_str()) {
                    pools.push(p);
                }
            }
        }
        let order = |n: &str| view.pools.iter().position(|p| p.name == n).unwrap_or(usize::MAX);
        pools.sort_by_key(|p| order(p));
        let _ = write!(
            s,
            "<h2>Users across pools: {}</h2><div class=\"scroll\"><table class=\"interop\" id=\"interop-{}\">\
             <thead><tr><th>from &darr; to &rarr;</th>",
            esc(kind_title(kind)),
            esc(kind)
        );
        for p in &pools {
            let _ = write!(s, "<th>{}</th>", esc(p));
        }
        s.push_str("</tr></thead><tbody>");
        for from in &pools {
            let _ = write!(s, "<tr><th>{}</th>", esc(from));
            for to in &pools {
                let Some(c) = cells.iter().find(|c| c.from_pool == *from && c.to_pool == *to) else {
                    s.push_str("<td></td>");
                    continue;
                };
                let class = match c.state {
                    CellState::Up => "pass",
                    CellState::Down => "fail",
                    CellState::Untested => "pending",
                };
                let total = c.passing + c.failing;
                let _ = write!(
                    s,
                    "<td class=\"{class}\"><b>{} &rarr; {}: {}</b><br><small>{} of {total} pairs passing",
                    esc(&c.from_pool),
                    esc(&c.to_pool),
                    c.state.word(),
                    c.passing
                );
                if c.pending + c.stale > 0 {
                    let _ = write!(s, ", {} not run, unregistered or stale", c.pending + c.stale);
                }
                s.push_str("</small>");
                for f in &c.failures {
                    let _ = write!(s, "<div class=\"detail\">{}</div>", esc(f));
                }
                for e in &c.unproven {
                    let _ = write!(s, "<div class=\"detail\">planned here, proves nothing: {}</div>", esc(e));
                }
                s.push_str("</td>");
            }
            s.push_str("</tr>");
        }
        s.push_str("</tbody></table></div>");
    }
    if view.users.is_empty() {
        return;
    }
    s.push_str(
        "<h2>Test users</h2><div class=\"scroll\"><table id=\"users\"><thead><tr><th>user</th>\
         <th>planned pool</th><th>registered on</th><th>registrar</th><th>last failure</th></tr></thead><tbody>",
    );
    for u in &view.users {
        let (home, class) = match (&u.registered, &u.home_pool) {
            (true, Some(h)) if *h == u.pool => (esc(h), "pass"),
            (true, Some(h)) => (format!("<b>{}</b>: NOT AS PLANNED", esc(h)), "fail"),
            _ => ("NOT REGISTERED".to_owned(), "fail"),
        };
        let failure = match (&u.reason, &u.detail) {
            (Some(r), Some(d)) => format!("{}: {}", r.as_str(), esc(d)),
            _ => "-".to_owned(),
        };
        let _ = write!(
            s,
            "<tr><th>{} <small><code>{}</code></small></th><td>{}</td><td class=\"{class}\">{home}</td>\
             <td>{}</td><td>{failure}</td></tr>",
            esc(&u.user),
            esc(&u.uri),
            esc(&u.pool),
            esc(u.registrar.as_deref().unwrap_or("-")),
        );
    }
    s.push_str("</tbody></table></div>");
}

fn pool_state(p: &PoolRollup) -> (&'static str, &'static str) {
    if p.up {
        ("UP", "up")
    } else if p.failing > 0 {
        ("DOWN", "down")
    } else if p.stale > 0 {
        ("STALE", "stale")
    } else {
        ("NOT RUN", "pending")
    }
}

fn records(s: &mut String, view: &StatusView, now: SystemTime) {
    let rows: Vec<&InstanceView> =
        view.instances.iter().filter(|i| i.points_to.is_some() || i.expect_pool.is_some()).collect();
    if rows.is_empty() {
        return;
    }
    s.push_str(
        "<h2>Where records point</h2><div class=\"scroll\"><table id=\"records\"><thead><tr><th>record</th>\
         <th>check</th><th>points to</th><th>plan</th><th>result since</th></tr></thead><tbody>",
    );
    for i in rows {
        let points = i.points_to.as_deref().unwrap_or("-");
        let (verdict, class) = match (&i.expect_pool, &i.points_to) {
            (Some(want), Some(got)) if want == got => (format!("{} (as planned)", esc(want)), "pass"),
            (Some(want), Some(_)) => (format!("<b>{}</b> planned: NOT AS PLANNED", esc(want)), "fail"),
            (Some(want), None) => (format!("{} planned; no answer to compare", esc(want)), "pending"),
            (None, _) => ("no plan set".to_owned(), ""),
        };
        let _ = write!(
            s,
            "<tr><th><code>{}</code></th><td>{}</td><td>{}</td><td class=\"{class}\">{verdict}</td><td>{}</td></tr>",
            esc(&i.target),
            esc(&i.check),
            esc(points),
            since(i.changed_at, now).unwrap_or_else(|| "-".into()),
        );
    }
    s.push_str("</tbody></table></div>");
}

fn matrix(s: &mut String, view: &StatusView, now: SystemTime) {
    let mut checks: Vec<&str> = Vec::new();
    for i in &view.instances {
        if !checks.contains(&i.check.as_str()) {
            checks.push(&i.check);
        }
    }
    if checks.is_empty() {
        return;
    }
    let mut pools: Vec<&str> = view.pools.iter().map(|p| p.name.as_str()).collect();
    if view.instances.iter().any(|i| i.pool.is_empty()) {
        pools.push("");
    }
    s.push_str("<h2>Checks</h2><div class=\"scroll\"><table id=\"matrix\"><thead><tr><th>check</th>");
    for p in &pools {
        let _ = write!(s, "<th>{}</th>", if p.is_empty() { "(no pool)".to_owned() } else { esc(p) });
    }
    s.push_str("</tr></thead><tbody>");
    for c in &checks {
        let _ = write!(s, "<tr><th>{}</th>", esc(c));
        for p in &pools {
            // An each_address check has one result per address: one block each in the cell.
            let rows: Vec<&InstanceView> =
                view.instances.iter().filter(|i| i.check == *c && i.pool == *p).collect();
            if rows.is_empty() {
                s.push_str("<td></td>");
                continue;
            }
            let class = if rows.iter().any(|i| i.success == Some(false)) {
                "fail"
            } else if rows.iter().any(|i| i.stale) {
                "stale"
            } else if rows.iter().all(|i| i.success == Some(true)) {
                "pass"
            } else {
                "pending"
            };
            let _ = write!(s, "<td class=\"{class}\">");
            for i in rows {
                cell(s, i, now);
            }
            s.push_str("</td>");
        }
        s.push_str("</tr>");
    }
    s.push_str("</tbody></table></div>");
}

fn cell(s: &mut String, i: &InstanceView, now: SystemTime) {
    let (word, class) = state(i);
    let at = i.address.as_deref().map(|a| format!(" @{}", esc(a))).unwrap_or_default();
    let _ = write!(
        s,
        "<div class=\"cell\" data-check=\"{}\" data-pool=\"{}\" data-state=\"{class}\"{}>\
         <span class=\"badge {class}\">{word}</span>",
        esc(&i.check),
        esc(&i.pool),
        i.reason.as_deref().map(|r| format!(" data-reason=\"{}\"", esc(r))).unwrap_or_default(),
    );
    match i.success {
        Some(false) if !i.stale => {
            let _ = write!(
                s,
                " <span class=\"reason\">{}</span> <span class=\"for\">{}</span><div class=\"detail\">{}</div>",
                esc(i.reason.as_deref().unwrap_or("")),
                failing_for(i, now),
                esc(i.detail.as_deref().unwrap_or("")),
            );
        }
        Some(_) => {
            let verb = if i.stale { "last result" } else { "passing for" };
            if let Some(d) = since(i.changed_at, now) {
                let _ = write!(s, " <span class=\"for\">{verb} {d}</span>");
            }
        }
        None => {}
    }
    let _ = write!(
        s,
        "<div><small>{}{at} &middot; {}{}</small></div></div>",
        esc(&i.target),
        i.last_duration_seconds.map_or("-".into(), |d| format!("{:.1} ms", d * 1000.0)),
        i.points_to.as_deref().map(|p| format!(" &middot; points to {}", esc(p))).unwrap_or_default(),
    );
}

fn changes(s: &mut String, events: &[EventView], now: SystemTime) {
    s.push_str("<h2>Recent state changes</h2>");
    if events.is_empty() {
        s.push_str(
            "<p class=\"mute\">None since the agent started: every check has kept its first state.</p>",
        );
        return;
    }
    s.push_str(
        "<div class=\"scroll\"><table id=\"events\"><thead><tr><th>when</th><th>check</th><th>pool</th>\
         <th>change</th></tr></thead><tbody>",
    );
    for e in events.iter().take(EVENTS_SHOWN) {
        let at = e.address.as_deref().map(|a| format!(" @{}", esc(a))).unwrap_or_default();
        let change = if e.state == "fail" {
            format!(
                "<span class=\"badge fail\">FAIL</span> <span class=\"reason\">{}</span> <span class=\"detail\">{}</span>{}",
                esc(e.reason.as_deref().unwrap_or("")),
                esc(e.detail.as_deref().unwrap_or("")),
                e.previous_state_seconds
                    .map(|p| format!(" <span class=\"for\">after passing for {}</span>", human(p)))
                    .unwrap_or_default(),
            )
        } else {
            format!(
                "<span class=\"badge pass\">PASS</span>{}",
                e.previous_state_seconds
                    .map(|p| format!(" <span class=\"for\">after failing for {}</span>", human(p)))
                    .unwrap_or_default(),
            )
        };
        let _ = write!(
            s,
            "<tr><td><span class=\"for\">{} ago</span><br><small>{}</small></td><td>{}{at}</td><td>{}</td><td>{change}</td></tr>",
            since(Some(e.at_time), now).unwrap_or_else(|| "0 s".into()),
            esc(&e.at),
            esc(&e.check),
            if e.pool.is_empty() { "-".to_owned() } else { esc(&e.pool) },
        );
    }
    s.push_str("</tbody></table></div>");
}

impl InstanceView {
    /// When the last run finished, as a time.
    fn last_run_time(&self) -> Option<SystemTime> {
        self.last_run.as_deref().and_then(|t| humantime::parse_rfc3339(t).ok())
    }
}

/// "failing for 6 min" (or since the first run).
fn failing_for(i: &InstanceView, now: SystemTime) -> String {
    match since(i.changed_at, now) {
        Some(d) => format!("failing for {d}"),
        None => String::new(),
    }
}

/// How long ago `t` was, for humans; `None` without a time.
fn since(t: Option<SystemTime>, now: SystemTime) -> Option<String> {
    let t = t?;
    Some(human(now.duration_since(t).unwrap_or(Duration::ZERO).as_secs_f64()))
}

/// A duration in seconds as "45 s", "6 min", "2 h 5 min", "3 d 4 h".
pub fn human(seconds: f64) -> String {
    // Seconds are rounded (a run 0.99 s after the last reads "1 s"); minutes and up
    // are whole units passed.
    let s = if seconds.is_finite() && seconds > 0.0 { seconds as u64 } else { 0 };
    let s = if s < 59 && seconds.is_finite() && seconds > 0.0 { seconds.round() as u64 } else { s };
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min", s / 60),
        3600..=86_399 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86_400, s % 86_400 / 3600),
    }
}

/// Escapes text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_a_person_would_say_them() {
        assert_eq!(human(0.4), "0 s");
        assert_eq!(human(0.99), "1 s");
        assert_eq!(human(59.9), "59 s");
        assert_eq!(human(360.0), "6 min");
        assert_eq!(human(7500.0), "2 h 5 min");
        assert_eq!(human(3.0 * 86_400.0 + 4.0 * 3600.0), "3 d 4 h");
        assert_eq!(human(f64::NAN), "0 s");
        assert_eq!(human(-5.0), "0 s");
    }

    #[test]
    fn peer_text_cannot_become_markup() {
        assert_eq!(esc("<script>a&b\"'</script>"), "&lt;script&gt;a&amp;b&quot;&#39;&lt;/script&gt;");
    }
}
