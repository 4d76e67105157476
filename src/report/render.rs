//! The report as one self-contained HTML file (inline SVG charts and CSS, no script, a
//! print stylesheet for A4) or as Markdown for a ticket. JSON is the [`Report`]
//! serialised as it is.

use std::fmt::Write as _;

use super::analysis::{human, rfc3339, State};
use super::{Report, Span};

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

fn pct(a: Option<f64>) -> String {
    a.map_or_else(|| "no data".into(), |x| format!("{:.4} %", x * 100.0))
}

fn color(s: State) -> &'static str {
    match s {
        State::Up => "#2e7d32",
        State::Down => "#c62828",
        State::Unknown => "#b0b0b0",
    }
}

/// A strip chart: one rectangle per run of equal columns.
fn strip(columns: &[State], label: &str) -> String {
    let (w, h) = (672.0, 14.0);
    let cw = if columns.is_empty() { w } else { w / columns.len() as f64 };
    let mut svg = format!(
        "<svg class=\"strip\" preserveAspectRatio=\"none\" role=\"img\" aria-label=\"{}\" viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\" xmlns=\"http://www.w3.org/2000/svg\">",
        esc(label)
    );
    let mut i = 0;
    while i < columns.len() {
        let mut j = i;
        while j + 1 < columns.len() && columns[j + 1] == columns[i] {
            j += 1;
        }
        let _ = write!(
            svg,
            "<rect x=\"{:.2}\" y=\"0\" width=\"{:.2}\" height=\"{h}\" fill=\"{}\"/>",
            i as f64 * cw,
            (j - i + 1) as f64 * cw,
            color(columns[i])
        );
        i = j + 1;
    }
    svg.push_str("</svg>");
    svg
}

fn heat(a: Option<f64>) -> &'static str {
    match a {
        None => "#b0b0b0",
        Some(x) if x >= 0.999 => "#2e7d32",
        Some(x) if x >= 0.99 => "#9e9d24",
        Some(x) if x >= 0.95 => "#ef6c00",
        Some(_) => "#c62828",
    }
}

fn secs(x: Option<f64>) -> String {
    x.map_or_else(|| "–".into(), |s| format!("{:.1} ms", s * 1000.0))
}

const STYLE: &str = r#"
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1c1c1c;margin:24px auto;max-width:1040px;padding:0 16px}
h1{font-size:24px;margin:0 0 4px} h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{font-size:15px;margin:16px 0 6px}
.period{color:#555}
.verdict{display:inline-block;font-size:28px;font-weight:700;padding:6px 18px;border-radius:6px;color:#fff;margin:12px 0}
.go{background:#2e7d32}.nogo{background:#c62828}
table{border-collapse:collapse;width:100%;margin:6px 0 12px}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #eee;vertical-align:top}
th{background:#f5f5f5;font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.pass{color:#2e7d32;font-weight:600}.fail{color:#c62828;font-weight:600}
.legend span{display:inline-block;width:10px;height:10px;margin:0 4px 0 12px;vertical-align:middle}
svg.strip,svg.timeline{display:block;width:100%;height:14px}
td.nowrap{white-space:nowrap}
.muted{color:#666}
@page{size:A4;margin:12mm}
@media print{body{margin:0;max-width:none;font-size:11px}h2{break-after:avoid}table,svg{break-inside:avoid}.verdict{-webkit-print-color-adjust:exact;print-color-adjust:exact}svg{-webkit-print-color-adjust:exact;print-color-adjust:exact}}
"#;

fn spans(list: &[Span]) -> String {
    if list.is_empty() {
        return "none".into();
    }
    list.iter()
        .map(|s| format!("{} – {} ({})", s.start, s.end, human(s.duration_seconds)))
        .collect::<Vec<_>>()
        .join("<br>")
}

/// The report as one HTML document.
pub fn html(r: &Report) -> String {
    let mut h = String::with_capacity(64 * 1024);
    let verdict = if r.verdict.go { "GO" } else { "NO-GO" };
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Coexistence report {from} – {to}: {verdict}</title>\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><style>{STYLE}</style></head><body>\
         <h1>Coexistence report</h1><div class=\"period\">{from} – {to} · step {step} · from {prom}</div>\
         <div id=\"verdict\" class=\"verdict {class}\">{verdict}</div>",
        from = esc(&r.from),
        to = esc(&r.to),
        step = human(r.step_seconds),
        prom = esc(&r.prometheus),
        class = if r.verdict.go { "go" } else { "nogo" },
    );
    h.push_str("<h2>Criteria</h2><table id=\"criteria\"><tr><th>criterion</th><th>measured</th><th>threshold</th><th></th></tr>");
    for c in &r.verdict.criteria {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td class=\"nowrap\">{}</td><td class=\"{}\">{}</td></tr>",
            esc(&c.name),
            esc(&c.measured),
            esc(&c.threshold),
            if c.pass { "pass" } else { "fail" },
            if c.pass { "pass" } else { "FAIL" }
        );
    }
    h.push_str("</table>");

    let _ = write!(
        h,
        "<h2>Sites and pools</h2><p class=\"legend muted\">Each strip spans the period, one column per {}:\
         <span style=\"background:#2e7d32\"></span>up<span style=\"background:#c62828\"></span>down\
         <span style=\"background:#b0b0b0\"></span>no data (never counted as up)</p>",
        human(r.strip_column_seconds)
    );
    if !r.sites.is_empty() {
        h.push_str("<table id=\"sites\"><tr><th>topology site</th><th>pools</th><th>availability</th><th>down</th><th>no data</th><th>down periods</th></tr>");
        for s in &r.sites {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>\
                 <tr><td colspan=\"6\">{}</td></tr>",
                esc(&s.topology_site),
                esc(&s.pools.join(", ")),
                pct(s.availability.availability),
                human(s.availability.down_seconds),
                human(s.availability.unknown_seconds),
                s.incidents.len(),
                strip(&s.strip, &format!("site {} over the period", s.topology_site))
            );
        }
        h.push_str("</table>");
    }
    h.push_str("<table id=\"pools\"><tr><th>pool</th><th>role</th><th>site</th><th>availability</th><th>down</th><th>no data</th><th>incidents</th></tr>");
    for p in &r.pools {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>\
             <tr><td colspan=\"7\">{}</td></tr>",
            esc(&p.pool),
            esc(&p.role),
            esc(p.topology_site.as_deref().unwrap_or("")),
            pct(p.availability.availability),
            human(p.availability.down_seconds),
            human(p.availability.unknown_seconds),
            p.incidents.len(),
            strip(&p.strip, &format!("pool {} over the period", p.pool))
        );
    }
    h.push_str("</table><h3>Incidents</h3><table id=\"incidents\"><tr><th>pool</th><th>start</th><th>end</th><th>duration</th><th>failing checks: reasons</th></tr>");
    let mut any = false;
    for p in &r.pools {
        for i in &p.incidents {
            any = true;
            let _ = write!(
                h,
                "<tr class=\"incident\"><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
                esc(&p.pool),
                esc(&i.span.start),
                esc(&i.span.end),
                human(i.span.duration_seconds),
                esc(&i.causes.join(", "))
            );
        }
    }
    if !any {
        h.push_str("<tr><td colspan=\"5\">no pool was DOWN in the period</td></tr>");
    }
    h.push_str("</table>");

    h.push_str("<h2>Users across pools</h2>");
    let mut kinds: Vec<&str> = r.interop.iter().map(|c| c.kind.as_str()).collect();
    kinds.dedup();
    kinds.sort_unstable();
    kinds.dedup();
    for kind in kinds {
        let cells: Vec<_> = r.interop.iter().filter(|c| c.kind == kind).collect();
        let mut from: Vec<&str> = cells.iter().map(|c| c.from_pool.as_str()).collect();
        from.sort_unstable();
        from.dedup();
        let mut to: Vec<&str> = cells.iter().map(|c| c.to_pool.as_str()).collect();
        to.sort_unstable();
        to.dedup();
        let (cw, ch, lw, th) = (150.0, 36.0, 130.0, 22.0);
        let (w, hgt) = (lw + cw * to.len() as f64, th + ch * from.len() as f64);
        let _ = write!(
            h,
            "<h3>{kind}</h3><svg class=\"heat\" role=\"img\" aria-label=\"{kind} matrix\" viewBox=\"0 0 {w} {hgt}\" width=\"{w}\" height=\"{hgt}\" xmlns=\"http://www.w3.org/2000/svg\" font-family=\"sans-serif\" font-size=\"12\">",
            kind = esc(kind)
        );
        for (j, t) in to.iter().enumerate() {
            let _ = write!(
                h,
                "<text x=\"{:.0}\" y=\"15\" text-anchor=\"middle\">to {}</text>",
                lw + cw * (j as f64 + 0.5),
                esc(t)
            );
        }
        for (i, f) in from.iter().enumerate() {
            let y = th + ch * i as f64;
            let _ = write!(h, "<text x=\"4\" y=\"{:.0}\">from {}</text>", y + ch / 2.0 + 4.0, esc(f));
            for (j, t) in to.iter().enumerate() {
                let c = cells.iter().find(|c| c.from_pool == *f && c.to_pool == *t);
                let a = c.and_then(|c| c.availability.availability);
                let x = lw + cw * j as f64;
                let _ = write!(
                    h,
                    "<rect x=\"{x:.0}\" y=\"{y:.0}\" width=\"{:.0}\" height=\"{:.0}\" fill=\"{}\" stroke=\"#fff\"/>\
                     <text x=\"{:.0}\" y=\"{:.0}\" text-anchor=\"middle\" fill=\"#fff\">{}</text>",
                    cw,
                    ch,
                    if c.is_some() { heat(a) } else { "#eeeeee" },
                    x + cw / 2.0,
                    y + ch / 2.0 + 4.0,
                    if c.is_some() { pct(a) } else { String::new() }
                );
            }
        }
        h.push_str("</svg>");
        h.push_str("<table class=\"cells\"><tr><th>from</th><th>to</th><th>availability</th><th>down</th><th>no data</th><th>p50</th><th>p95</th><th>down periods</th></tr>");
        for c in &cells {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
                esc(&c.from_pool),
                esc(&c.to_pool),
                pct(c.availability.availability),
                human(c.availability.down_seconds),
                human(c.availability.unknown_seconds),
                secs(c.p50_seconds),
                secs(c.p95_seconds),
                spans(&c.incidents)
            );
        }
        h.push_str("</table>");
    }
    h.push_str("<h3>Test users</h3><table id=\"users\"><tr><th>user</th><th>registered</th><th>no data</th><th>moves</th></tr>");
    for u in &r.users {
        let moves = if u.moves.is_empty() {
            "none".to_owned()
        } else {
            u.moves
                .iter()
                .map(|m| {
                    format!(
                        "{} → {} at {}{}",
                        esc(&m.from),
                        esc(&m.to),
                        esc(&m.at),
                        if m.planned { "" } else { " (not as planned)" }
                    )
                })
                .collect::<Vec<_>>()
                .join("<br>")
        };
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{moves}</td></tr>",
            esc(&u.user),
            pct(u.registered.availability),
            human(u.registered.unknown_seconds)
        );
    }
    h.push_str("</table>");

    h.push_str("<h2>Where the sign-in path pointed</h2>");
    let role = |pool: &str| r.pools.iter().find(|p| p.pool == pool).map_or("", |p| p.role.as_str());
    let (from_t, to_t) = (parse(&r.from), parse(&r.to));
    let total = (to_t - from_t).max(1) as f64;
    for rec in &r.records {
        let w = 672.0;
        let _ = write!(
            h,
            "<h3>{} <span class=\"muted\">({}, as agent {} resolved it)</span></h3><svg class=\"timeline\" preserveAspectRatio=\"none\" role=\"img\" aria-label=\"{}\" viewBox=\"0 0 {w} 14\" width=\"{w}\" height=\"14\" xmlns=\"http://www.w3.org/2000/svg\"><rect width=\"{w}\" height=\"14\" fill=\"#b0b0b0\"/>",
            esc(&rec.record),
            esc(&rec.check),
            esc(&rec.agent),
            esc(&rec.record)
        );
        for s in &rec.segments {
            let x = (parse(&s.span.start) - from_t) as f64 / total * w;
            let sw = s.span.duration_seconds as f64 / total * w;
            let fill = match role(&s.points_to) {
                "new" => "#1565c0",
                "legacy" => "#ef6c00",
                _ => "#6d4c41",
            };
            let _ = write!(
                h,
                "<rect x=\"{x:.2}\" width=\"{sw:.2}\" height=\"14\" fill=\"{fill}\"><title>{}</title></rect>",
                esc(&s.points_to)
            );
        }
        h.push_str("</svg><table class=\"events\"><tr><th>at</th><th>from</th><th>to</th><th>what</th><th>plan</th></tr>");
        if rec.events.is_empty() {
            let _ = write!(
                h,
                "<tr><td colspan=\"5\">pointed at {} all along</td></tr>",
                esc(&rec.segments.first().map_or_else(|| "nothing".into(), |s| s.points_to.clone()))
            );
        }
        for e in &rec.events {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td></tr>",
                esc(&e.at),
                esc(&e.from),
                esc(&e.to),
                esc(&e.kind),
                if e.planned { "pass" } else { "fail" },
                if e.planned { "as planned" } else { "against the plan" }
            );
        }
        h.push_str("</table>");
    }
    h.push_str("<p class=\"legend muted\"><span style=\"background:#1565c0\"></span>new pool<span style=\"background:#ef6c00\"></span>legacy pool<span style=\"background:#6d4c41\"></span>elsewhere<span style=\"background:#b0b0b0\"></span>no data</p>");

    h.push_str("<h2>Certificates</h2><table id=\"certificates\"><tr><th>expires</th><th>days after the period</th><th>subject</th><th>pool</th><th>target</th><th>address</th></tr>");
    for c in &r.certificates {
        let _ = write!(
            h,
            "<tr class=\"cert\"><td>{}</td><td class=\"num\">{:.1}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&c.not_after),
            c.days_left,
            esc(&c.subjects.join("; ")),
            esc(&c.pool),
            esc(&c.target),
            esc(&c.address)
        );
    }
    h.push_str("</table>");
    if !r.tls_changes.is_empty() {
        h.push_str("<h3>TLS changes in the period</h3><table><tr><th>pool</th><th>target</th><th>versions</th><th>signature algorithms</th></tr>");
        for t in &r.tls_changes {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{} {}</td><td>{}</td><td>{}</td></tr>",
                esc(&t.pool),
                esc(&t.target),
                esc(&t.address),
                esc(&t.versions.join(", ")),
                esc(&t.signature_algorithms.join(", "))
            );
        }
        h.push_str("</table>");
    }

    h.push_str("<h2>Coverage</h2><table id=\"coverage\"><tr><th>agent (job, instance)</th><th>reporting</th><th>gaps</th></tr>");
    for a in &r.coverage.agents {
        let _ = write!(
            h,
            "<tr><td>{} {}</td><td class=\"num\">{}</td><td>{}</td></tr>",
            esc(&a.job),
            esc(&a.instance),
            human(a.reporting_seconds),
            spans(&a.gaps)
        );
    }
    let _ = write!(
        h,
        "</table><p><b>No data from any agent:</b> {}</p><p><b>Configuration loads:</b> {}</p>",
        spans(&r.coverage.no_data),
        if r.coverage.reloads.is_empty() {
            "none in the period".into()
        } else {
            esc(&r.coverage.reloads.join(", "))
        }
    );
    h.push_str("<table id=\"checks\"><tr><th>check</th><th>first seen</th><th>last seen</th></tr>");
    for c in &r.coverage.checks {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&c.check),
            esc(&c.first_seen),
            esc(&c.last_seen)
        );
    }
    h.push_str("</table></body></html>\n");
    h
}

fn parse(t: &str) -> i64 {
    humantime::parse_rfc3339(t)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs() as i64)
}

/// A Markdown table cell: no line breaks, pipes escaped, no raw HTML.
fn cell(s: &str) -> String {
    s.replace(['\r', '\n'], " ")
        .replace('|', "\\|")
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The report as Markdown (a ticket, a chat message).
pub fn markdown(r: &Report) -> String {
    let mut m = String::new();
    let _ = writeln!(m, "# Coexistence report {} – {}\n", r.from, r.to);
    let _ = writeln!(m, "**Verdict: {}**\n", if r.verdict.go { "GO" } else { "NO-GO" });
    m.push_str("| criterion | measured | threshold | |\n|---|---|---|---|\n");
    for c in &r.verdict.criteria {
        let _ = writeln!(
            m,
            "| {} | {} | {} | {} |",
            cell(&c.name),
            cell(&c.measured),
            cell(&c.threshold),
            if c.pass { "pass" } else { "**FAIL**" }
        );
    }
    if !r.sites.is_empty() {
        m.push_str("\n## Sites\n\n| site | pools | availability | down | no data |\n|---|---|---|---|---|\n");
        for s in &r.sites {
            let _ = writeln!(
                m,
                "| {} | {} | {} | {} | {} |",
                cell(&s.topology_site),
                cell(&s.pools.join(", ")),
                pct(s.availability.availability),
                human(s.availability.down_seconds),
                human(s.availability.unknown_seconds)
            );
        }
    }
    m.push_str("\n## Pools\n\n| pool | role | site | availability | down | no data | incidents |\n|---|---|---|---|---|---|---|\n");
    for p in &r.pools {
        let _ = writeln!(
            m,
            "| {} | {} | {} | {} | {} | {} | {} |",
            cell(&p.pool),
            cell(&p.role),
            cell(p.topology_site.as_deref().unwrap_or("")),
            pct(p.availability.availability),
            human(p.availability.down_seconds),
            human(p.availability.unknown_seconds),
            p.incidents.len()
        );
    }
    m.push_str("\n### Incidents\n\n| pool | start | end | duration | causes |\n|---|---|---|---|---|\n");
    for p in &r.pools {
        for i in &p.incidents {
            let _ = writeln!(
                m,
                "| {} | {} | {} | {} | {} |",
                cell(&p.pool),
                i.span.start,
                i.span.end,
                human(i.span.duration_seconds),
                cell(&i.causes.join(", "))
            );
        }
    }
    m.push_str("\n## Users across pools\n\n| kind | from | to | availability | down | no data | p50 | p95 |\n|---|---|---|---|---|---|---|---|\n");
    for c in &r.interop {
        let _ = writeln!(
            m,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            cell(&c.kind),
            cell(&c.from_pool),
            cell(&c.to_pool),
            pct(c.availability.availability),
            human(c.availability.down_seconds),
            human(c.availability.unknown_seconds),
            secs(c.p50_seconds),
            secs(c.p95_seconds)
        );
    }
    m.push_str("\n| user | registered | moves |\n|---|---|---|\n");
    for u in &r.users {
        let moves: Vec<String> = u
            .moves
            .iter()
            .map(|mv| {
                format!(
                    "{} → {} at {}{}",
                    mv.from,
                    mv.to,
                    mv.at,
                    if mv.planned { "" } else { " (not as planned)" }
                )
            })
            .collect();
        let _ = writeln!(
            m,
            "| {} | {} | {} |",
            cell(&u.user),
            pct(u.registered.availability),
            cell(&moves.join("; "))
        );
    }
    m.push_str("\n## Sign-in records\n\n| record | agent | at | from | to | what | plan |\n|---|---|---|---|---|---|---|\n");
    for rec in &r.records {
        for e in &rec.events {
            let _ = writeln!(
                m,
                "| {} | {} | {} | {} | {} | {} | {} |",
                cell(&rec.record),
                cell(&rec.agent),
                e.at,
                cell(&e.from),
                cell(&e.to),
                e.kind,
                if e.planned { "as planned" } else { "**against the plan**" }
            );
        }
    }
    m.push_str("\n## Certificates\n\n| expires | days after | subject | target |\n|---|---|---|---|\n");
    for c in &r.certificates {
        let _ = writeln!(
            m,
            "| {} | {:.1} | {} | {} |",
            c.not_after,
            c.days_left,
            cell(&c.subjects.join("; ")),
            cell(&c.target)
        );
    }
    if !r.tls_changes.is_empty() {
        m.push_str("\n| TLS changed at | versions | signature algorithms |\n|---|---|---|\n");
        for t in &r.tls_changes {
            let _ = writeln!(
                m,
                "| {} {} | {} | {} |",
                cell(&t.target),
                cell(&t.address),
                cell(&t.versions.join(", ")),
                cell(&t.signature_algorithms.join(", "))
            );
        }
    }
    let _ = writeln!(
        m,
        "\n## Coverage\n\nNo data from any agent: {}.\n\nConfiguration loads: {}.\n",
        if r.coverage.no_data.is_empty() {
            "never".to_owned()
        } else {
            r.coverage
                .no_data
                .iter()
                .map(|s| format!("{} – {} ({})", s.start, s.end, human(s.duration_seconds)))
                .collect::<Vec<_>>()
                .join(", ")
        },
        if r.coverage.reloads.is_empty() { "none".to_owned() } else { r.coverage.reloads.join(", ") }
    );
    m.push_str("| check | first seen | last seen |\n|---|---|---|\n");
    for c in &r.coverage.checks {
        let _ = writeln!(m, "| {} | {} | {} |", cell(&c.check), c.first_seen, c.last_seen);
    }
    let _ = writeln!(m, "\nGenerated by coexistd {} on {}.", env!("CARGO_PKG_VERSION"), rfc3339(now()));
    m
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}
