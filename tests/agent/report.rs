//! `coexistd report` against Debian's Prometheus holding 14 days of coexistd history
//! written here with incidents placed exactly, loaded with `promtool tsdb
//! create-blocks-from openmetrics`: every figure of the report is known in advance.
//!
//! The period: 2026-11-02T00:00:00Z + 14 days, one sample a minute, agent `coexistd`
//! `agent1:9797`. Placed in it:
//! - the legacy pool DOWN twice for 15 minutes (day 3 02:00, day 11 14:30), its
//!   `sip-tls` check failing with `timeout`;
//! - the IM route new → legacy DOWN 40 minutes (day 7 09:00);
//! - `_sipinternaltls._tcp` flipped to the legacy pool for 2 hours (day 10 08:00), its
//!   check failing (`expect_pool`), and back;
//! - bob moved to the new pool on day 9 00:00 (planned: the configuration moved too);
//! - the legacy certificate expiring 20 days after the period, its signature falling
//!   back from SHA-256 to SHA-1 on day 12;
//! - the agent down 1 hour (day 6 10:00: no series at all);
//! - a check `presence` added by a configuration load on day 5.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{free_port, http, require};

const DAY: i64 = 86_400;
const STEP: i64 = 60;

fn from() -> i64 {
    humantime::parse_rfc3339("2026-11-02T00:00:00Z")
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn at(day: i64, hh: i64, mm: i64) -> i64 {
    from() + day * DAY + hh * 3600 + mm * 60
}

fn within(t: i64, start: i64, minutes: i64) -> bool {
    (start..start + minutes * 60).contains(&t)
}

/// A series' value at a minute (`None`: no sample).
type Values = Box<dyn Fn(i64) -> Option<f64>>;

/// One metric family of the history: its type and samples `(labels, value)` per minute.
struct Family {
    name: &'static str,
    kind: &'static str,
    series: Vec<(String, Values)>,
}

/// The history as OpenMetrics text.
fn history(path: &Path) {
    let (f, to) = (from(), from() + 14 * DAY);
    let agent = "job=\"coexistd\",instance=\"agent1:9797\",site=\"msk\"";
    let agent_down = |t: i64| within(t, at(6, 10, 0), 60);
    let legacy_down = |t: i64| within(t, at(3, 2, 0), 15) || within(t, at(11, 14, 30), 15);
    let route_down = |t: i64| within(t, at(7, 9, 0), 40);
    let flipped = |t: i64| within(t, at(10, 8, 0), 120);
    let moved = |t: i64| t >= at(9, 0, 0);
    let sha1 = |t: i64| t >= at(12, 0, 0);
    let ocs_tls = "pool=\"ocs2007r2\",role=\"legacy\",check=\"sip-tls\",kind=\"tls\",target=\"ocspool.contoso.test:5061\"";
    let lync_tls =
        "pool=\"lync2013\",role=\"new\",check=\"sip-tls\",kind=\"tls\",target=\"lyncpool.contoso.test:5061\"";
    let srv =
        "check=\"sipinternaltls-srv\",kind=\"dns\",target=\"_sipinternaltls._tcp.contoso.test\",pool=\"\"";
    let always = |_t: i64| Some(1.0);
    let families: Vec<Family> = vec![
        Family { name: "coexist_build_info", kind: "gauge", series: vec![("version=\"0.1.0\"".into(), Box::new(always))] },
        Family {
            name: "coexist_pool_up",
            kind: "gauge",
            series: vec![
                (
                    "pool=\"ocs2007r2\",role=\"legacy\"".into(),
                    Box::new(move |t| Some(if legacy_down(t) { 0.0 } else { 1.0 })),
                ),
                ("pool=\"lync2013\",role=\"new\"".into(), Box::new(always)),
            ],
        },
        Family {
            name: "coexist_pool_site_info",
            kind: "gauge",
            series: vec![
                ("pool=\"ocs2007r2\",topology_site=\"BackCompatSite\"".into(), Box::new(always)),
                ("pool=\"lync2013\",topology_site=\"HQ\"".into(), Box::new(always)),
            ],
        },
        Family {
            name: "coexist_probe_failures",
            kind: "counter",
            series: vec![(
                format!("{ocs_tls},reason=\"timeout\""),
                Box::new(move |t| {
                    // One failure a minute in each outage up to t.
                    let failed: i64 = [at(3, 2, 0), at(11, 14, 30)].iter().map(|s| ((t - s) / 60 + 1).clamp(0, 15)).sum();
                    Some(failed as f64)
                }),
            )],
        },
        Family {
            name: "coexist_probe_success",
            kind: "gauge",
            series: vec![
                (ocs_tls.into(), Box::new(move |t| Some(if legacy_down(t) { 0.0 } else { 1.0 }))),
                (srv.into(), Box::new(move |t| Some(if flipped(t) { 0.0 } else { 1.0 }))),
            ],
        },
        Family {
            name: "coexist_interop_up",
            kind: "gauge",
            series: [("ocs2007r2", "ocs2007r2"), ("ocs2007r2", "lync2013"), ("lync2013", "ocs2007r2"), ("lync2013", "lync2013")]
                .iter()
                .map(|(a, b)| {
                    let down = *a == "lync2013" && *b == "ocs2007r2";
                    let f: Values =
                        Box::new(move |t| Some(if down && route_down(t) { 0.0 } else { 1.0 }));
                    (format!("kind=\"sip_im\",from_pool=\"{a}\",to_pool=\"{b}\""), f)
                })
                .collect(),
        },
        Family {
            name: "coexist_interop_untested",
            kind: "gauge",
            series: vec![(
                "kind=\"sip_im\",from_pool=\"ocs2007r2\",to_pool=\"lync2013\"".into(),
                Box::new(|_| Some(0.0)),
            )],
        },
        Family {
            name: "coexist_sip_delivery_seconds",
            kind: "gauge",
            series: vec![
                (
                    "pool=\"ocs2007r2\",to_pool=\"lync2013\",kind=\"sip_im\",check=\"im\",user=\"alice\",target=\"sip:bob@contoso.test\"".into(),
                    Box::new(|t| Some(if (t / 60) % 10 == 0 { 0.05 } else { 0.012 })),
                ),
            ],
        },
        Family {
            name: "coexist_user_registered",
            kind: "gauge",
            series: vec![
                ("user=\"alice\",pool=\"ocs2007r2\"".into(), Box::new(always)),
                ("user=\"bob\",pool=\"ocs2007r2\"".into(), Box::new(move |t| (!moved(t)).then_some(1.0))),
                ("user=\"bob\",pool=\"lync2013\"".into(), Box::new(move |t| moved(t).then_some(1.0))),
            ],
        },
        Family {
            name: "coexist_user_home",
            kind: "gauge",
            series: vec![
                ("user=\"alice\",pool=\"ocs2007r2\",home_pool=\"ocs2007r2\"".into(), Box::new(always)),
                ("user=\"bob\",pool=\"ocs2007r2\",home_pool=\"ocs2007r2\"".into(), Box::new(move |t| (!moved(t)).then_some(1.0))),
                ("user=\"bob\",pool=\"lync2013\",home_pool=\"lync2013\"".into(), Box::new(move |t| moved(t).then_some(1.0))),
            ],
        },
        Family {
            name: "coexist_dns_points_to",
            kind: "gauge",
            series: vec![
                (format!("{srv},points_to=\"lync2013\""), Box::new(move |t| (!flipped(t)).then_some(1.0))),
                (format!("{srv},points_to=\"ocs2007r2\""), Box::new(move |t| flipped(t).then_some(1.0))),
            ],
        },
        Family {
            name: "coexist_tls_cert_not_after_timestamp_seconds",
            kind: "gauge",
            series: vec![
                (ocs_tls.into(), Box::new(move |_| Some((to + 20 * DAY) as f64))),
                (lync_tls.into(), Box::new(move |_| Some((to + 200 * DAY) as f64))),
            ],
        },
        Family {
            name: "coexist_tls_cert_info",
            kind: "gauge",
            series: vec![
                (
                    format!("{ocs_tls},subject=\"CN=ocspool.contoso.test\",signature_algorithm=\"sha256WithRSAEncryption\",fingerprint_sha256=\"aa\""),
                    Box::new(move |t| (!sha1(t)).then_some(1.0)),
                ),
                (
                    format!("{ocs_tls},subject=\"CN=ocspool.contoso.test\",signature_algorithm=\"sha1WithRSAEncryption\",fingerprint_sha256=\"bb\""),
                    Box::new(move |t| sha1(t).then_some(1.0)),
                ),
                (
                    format!("{lync_tls},subject=\"CN=lyncpool.contoso.test\",signature_algorithm=\"ecdsa-with-SHA256\",fingerprint_sha256=\"cc\""),
                    Box::new(always),
                ),
            ],
        },
        Family {
            name: "coexist_tls_version_info",
            kind: "gauge",
            series: vec![
                (format!("{ocs_tls},version=\"TLS 1.0\""), Box::new(always)),
                (format!("{lync_tls},version=\"TLS 1.3\""), Box::new(always)),
            ],
        },
        Family {
            name: "coexist_check_interval_seconds",
            kind: "gauge",
            series: vec![
                (ocs_tls.into(), Box::new(|_| Some(30.0))),
                ("check=\"presence\",pool=\"lync2013\"".into(), Box::new(|t| (t >= at(5, 0, 0)).then_some(30.0))),
            ],
        },
        Family {
            name: "coexist_config_last_reload_success_timestamp_seconds",
            kind: "gauge",
            series: vec![(
                String::new(),
                Box::new(move |t| Some(if t >= at(5, 0, 0) { at(5, 0, 0) } else { f - 3600 } as f64)),
            )],
        },
    ];
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut line = String::new();
    for fam in &families {
        writeln!(out, "# TYPE {} {}", fam.name, fam.kind).unwrap();
        let sample = if fam.kind == "counter" { format!("{}_total", fam.name) } else { fam.name.to_owned() };
        for (labels, value) in &fam.series {
            let sep = if labels.is_empty() { "" } else { "," };
            for t in (f..to).step_by(STEP as usize) {
                if agent_down(t) {
                    continue;
                }
                if let Some(v) = value(t) {
                    line.clear();
                    let _ = writeln!(line, "{sample}{{{agent}{sep}{labels}}} {v} {t}");
                    out.write_all(line.as_bytes()).unwrap();
                }
            }
        }
    }
    writeln!(out, "# EOF").unwrap();
    out.flush().unwrap();
}

struct Prometheus {
    child: std::process::Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Debian's Prometheus serving the history.
fn prometheus_with_history() -> Prometheus {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("history.om");
    history(&text);
    let tsdb = dir.path().join("tsdb");
    let out = Command::new(require("promtool", "prometheus"))
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&text)
        .arg(&tsdb)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(&cfg, "global:\n  scrape_interval: 1m\n").unwrap();
    let port = free_port();
    let child = Command::new(require("prometheus", "prometheus"))
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!("--storage.tsdb.path={}", tsdb.display()))
        .arg("--storage.tsdb.retention.time=10y")
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let p = Prometheus { child, addr, _dir: dir };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !matches!(http(addr, "GET", "/-/ready"), Ok((200, _))) {
        assert!(Instant::now() < deadline, "Prometheus not ready in 60 s");
        std::thread::sleep(Duration::from_millis(200));
    }
    p
}

fn report(p: &Prometheus, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_coexistd"))
        .arg("report")
        .arg("--prometheus")
        .arg(format!("http://{}", p.addr))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn round4(x: &serde_json::Value) -> f64 {
    (x.as_f64().unwrap_or(f64::NAN) * 10_000.0).round() / 10_000.0
}

fn artifacts() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).parent().unwrap().join("report");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn chromium(args: &[&str]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(require("chromium", "chromium"))
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "chromium {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn fourteen_days_of_history_give_the_figures_placed_in_them() {
    if !crate::common::slow_tests("fourteen_days_of_history_give_the_figures_placed_in_them") {
        return;
    }
    let p = prometheus_with_history();
    let dir = tempfile::tempdir().unwrap();
    let criteria = dir.path().join("coexistd.toml");
    std::fs::write(
        &criteria,
        "[[pools]]\nname = \"ocs2007r2\"\nrole = \"legacy\"\nfqdn = \"ocspool.contoso.test\"\n\
         [[pools]]\nname = \"lync2013\"\nrole = \"new\"\nfqdn = \"lyncpool.contoso.test\"\n\
         [[users]]\nname = \"alice\"\nuri = \"sip:alice@contoso.test\"\npool = \"ocs2007r2\"\npassword_file = \"/nonexistent\"\n\
         [report]\nmin_availability_by_role = { legacy = 0.998 }\nmin_interop_availability_by_kind = { sip_im = 0.999 }\n\
         signin_stable_days = 7\nmin_cert_days = 30\nmax_data_gap = \"30m\"\n",
    )
    .unwrap();
    let (from, to) = ("2026-11-02T00:00:00Z", "2026-11-16T00:00:00Z");
    let cfg = criteria.display().to_string();
    let started = Instant::now();
    let (code, json, err) = report(&p, &["--from", from, "--to", to, "--format", "json", "--config", &cfg]);
    eprintln!("report over 14 days: {:?}", started.elapsed());
    assert_eq!(code, 1, "NO-GO exits 1: {err}");
    let r: serde_json::Value = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"));
    let pool =
        |name: &str| r["pools"].as_array().unwrap().iter().find(|x| x["pool"] == name).unwrap().clone();

    // The legacy pool: 2 × 15 min down in 14 days less the agent's hour.
    let legacy = pool("ocs2007r2");
    assert_eq!(legacy["down_seconds"], 1800);
    assert_eq!(legacy["unknown_seconds"], 3600, "the agent's hour is unknown, not up");
    assert_eq!(legacy["up_seconds"], 14 * DAY - 3600 - 1800);
    assert_eq!(round4(&legacy["availability"]), 0.9985);
    assert_eq!(legacy["topology_site"], "BackCompatSite");
    let incidents = legacy["incidents"].as_array().unwrap();
    assert_eq!(incidents.len(), 2);
    assert_eq!(incidents[0]["start"], "2026-11-05T02:00:00Z");
    assert_eq!(incidents[0]["end"], "2026-11-05T02:15:00Z");
    assert_eq!(incidents[1]["start"], "2026-11-13T14:30:00Z");
    for i in incidents {
        assert_eq!(i["duration_seconds"], 900);
        assert_eq!(i["causes"], serde_json::json!(["sip-tls: timeout"]));
    }
    let new = pool("lync2013");
    assert_eq!((new["availability"].as_f64(), new["down_seconds"].as_i64()), (Some(1.0), Some(0)));
    assert_eq!(r["sites"].as_array().unwrap().len(), 2);

    // The IM matrix: new → legacy down 40 minutes; an untested cell is never down.
    let cell = r["interop"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["from_pool"] == "lync2013" && c["to_pool"] == "ocs2007r2")
        .unwrap()
        .clone();
    assert_eq!(cell["down_seconds"], 2400);
    assert_eq!(
        round4(&cell["availability"]),
        round4(&serde_json::json!((14 * DAY - 3600 - 2400) as f64 / (14 * DAY - 3600) as f64))
    );
    assert_eq!(cell["incidents"][0]["start"], "2026-11-09T09:00:00Z");
    let untested = r["interop"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["from_pool"] == "ocs2007r2" && c["to_pool"] == "lync2013")
        .unwrap()
        .clone();
    assert_eq!(untested["down_seconds"], 0);
    assert_eq!(untested["p50_seconds"].as_f64(), Some(0.012));
    assert_eq!(untested["p95_seconds"].as_f64(), Some(0.05), "1 sample in 10 is 50 ms");

    // bob's move on day 9, planned.
    let bob = r["users"].as_array().unwrap().iter().find(|u| u["user"] == "bob").unwrap().clone();
    assert_eq!(
        bob["moves"],
        serde_json::json!([{"at": "2026-11-11T00:00:00Z", "from": "ocs2007r2", "to": "lync2013", "planned": true}])
    );
    assert_eq!(bob["registered"]["down_seconds"], 0);

    // The sign-in record: rolled back to the legacy pool against the plan, cut over again.
    let rec =
        r["records"].as_array().unwrap().iter().find(|x| x["check"] == "sipinternaltls-srv").unwrap().clone();
    assert_eq!(
        rec["events"],
        serde_json::json!([
            {"at": "2026-11-12T08:00:00Z", "from": "lync2013", "to": "ocs2007r2", "kind": "rollback", "planned": false},
            {"at": "2026-11-12T10:00:00Z", "from": "ocs2007r2", "to": "lync2013", "kind": "cutover", "planned": true}
        ])
    );
    assert_eq!(rec["segments"][1]["duration_seconds"], 7200);

    // Certificates, soonest first; the legacy one's SHA-1 fall-back.
    let certs = r["certificates"].as_array().unwrap();
    assert_eq!(certs[0]["target"], "ocspool.contoso.test:5061");
    assert_eq!(certs[0]["days_left"].as_f64(), Some(20.0));
    assert_eq!(certs[1]["target"], "lyncpool.contoso.test:5061");
    assert_eq!(
        r["tls_changes"][0]["signature_algorithms"],
        serde_json::json!(["sha1WithRSAEncryption", "sha256WithRSAEncryption"])
    );

    // Coverage: the agent's hour, the check added on day 5 by a configuration load.
    assert_eq!(
        r["coverage"]["no_data"],
        serde_json::json!([{"start": "2026-11-08T10:00:00Z", "end": "2026-11-08T11:00:00Z", "duration_seconds": 3600}])
    );
    assert_eq!(r["coverage"]["agents"][0]["reporting_seconds"], 14 * DAY - 3600);
    let presence = r["coverage"]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "presence")
        .unwrap()
        .clone();
    assert_eq!(presence["first_seen"], "2026-11-07T00:00:00Z");
    assert_eq!(r["coverage"]["reloads"], serde_json::json!(["2026-11-07T00:00:00Z"]));

    // The verdict, criterion by criterion.
    let verdict: Vec<(String, bool)> = r["verdict"]["criteria"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap().to_owned(), c["pass"].as_bool().unwrap()))
        .collect();
    let pass = |prefix: &str| {
        verdict
            .iter()
            .find(|(n, _)| n.starts_with(prefix))
            .unwrap_or_else(|| panic!("{prefix}: {verdict:?}"))
            .1
    };
    assert!(pass("availability of the legacy pool ocs2007r2"), "99.85 % ≥ 99.8 %");
    assert!(pass("availability of the new pool lync2013"));
    assert!(!pass("sip_im from lync2013 to ocs2007r2"), "99.80 % < 99.9 %");
    assert!(pass("sip_im from lync2013 to lync2013"));
    assert!(!pass("no unplanned sign-in record change"), "day 10 is within the last 7 days");
    assert!(!pass("no certificate expires within 30 days"), "20 days");
    assert!(!pass("no data gap longer than 30m"), "1 hour");
    assert_eq!(r["verdict"]["go"], false);

    // The HTML in Chromium: the verdict and the incidents, desktop and print (A4 PDF).
    let html = artifacts().join("report.html");
    let (code, _, err) =
        report(&p, &["--from", from, "--to", to, "--config", &cfg, "--out", html.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(!page.contains("<script") && !page.contains("src=\"http"), "self-contained, no script");
    let url = format!("file://{}", html.display());
    let dom = chromium(&["--dump-dom", &url]);
    assert!(dom.contains("id=\"verdict\" class=\"verdict nogo\">NO-GO</div>"), "{dom}");
    assert_eq!(dom.matches("<tr class=\"incident\">").count(), 2);
    assert!(dom.contains("2026-11-05T02:00:00Z") && dom.contains("sip-tls: timeout"));
    let shot = artifacts().join("report-desktop.png");
    chromium(&["--window-size=1280,2400", &format!("--screenshot={}", shot.display()), &url]);
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000);
    let pdf = artifacts().join("report-print.pdf");
    chromium(&["--no-pdf-header-footer", &format!("--print-to-pdf={}", pdf.display()), &url]);
    let pdf_bytes = std::fs::read(&pdf).unwrap();
    assert!(pdf_bytes.starts_with(b"%PDF") && pdf_bytes.len() > 10_000);
    assert!(
        String::from_utf8_lossy(&pdf_bytes).contains("/MediaBox [0 0 594.9"),
        "A4 pages (595 × 842 pt) from the print stylesheet"
    );

    // Markdown for a ticket.
    let (_, md, _) = report(&p, &["--from", from, "--to", to, "--config", &cfg, "--format", "markdown"]);
    assert!(md.contains("**Verdict: NO-GO**") && md.contains("| ocs2007r2 | 2026-11-05T02:00:00Z |"), "{md}");

    // The first two days alone hold nothing against GO: exit 0.
    let (code, json, err) =
        report(&p, &["--from", from, "--to", "2026-11-04T00:00:00Z", "--format", "json", "--config", &cfg]);
    assert_eq!(code, 0, "GO exits 0: {err}\n{json}");

    // An unreachable Prometheus or a bad time is an error: exit 2, said on stderr.
    let closed = Prometheus {
        child: Command::new("true").spawn().unwrap(),
        addr: SocketAddr::from(([127, 0, 0, 1], free_port())),
        _dir: tempfile::tempdir().unwrap(),
    };
    let (code, _, err) = report(&closed, &["--from", from, "--to", to]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("connect"), "{err}");
    let (code, _, err) = report(&p, &["--from", "yesterday-ish", "--to", to]);
    assert_eq!((code, err.contains("--from")), (2, true), "{err}");
}

#[test]
fn a_period_cut_mid_day_and_mid_incident_keeps_exact_figures() {
    if !crate::common::slow_tests("a_period_cut_mid_day_and_mid_incident_keeps_exact_figures") {
        return;
    }
    let p = prometheus_with_history();
    let (code, json, err) =
        report(&p, &["--from", "2026-11-04T12:00:00Z", "--to", "2026-11-13T14:37:00Z", "--format", "json"]);
    assert!(code == 0 || code == 1, "{err}");
    let r: serde_json::Value = serde_json::from_str(&json).unwrap();
    let legacy = r["pools"].as_array().unwrap().iter().find(|x| x["pool"] == "ocs2007r2").unwrap().clone();
    let durations: Vec<i64> = legacy["incidents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["duration_seconds"].as_i64().unwrap())
        .collect();
    assert_eq!(durations, [900, 420], "the second outage cut by the period's end");
    assert_eq!(legacy["down_seconds"], 1320);
    // The last window (2 h 37 min) is read like the full days before it.
    let to = at(11, 14, 37);
    let days = ((from() + 14 * DAY + 20 * DAY) - to) as f64 / 86_400.0;
    assert!(
        (r["certificates"][0]["days_left"].as_f64().unwrap() - days).abs() < 1e-6,
        "{}",
        r["certificates"]
    );
    assert_eq!(r["tls_changes"], serde_json::json!([]), "the SHA-1 fall-back came after this period");
    let presence = r["coverage"]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "presence")
        .unwrap()
        .clone();
    assert_eq!(
        (presence["first_seen"].as_str(), presence["last_seen"].as_str()),
        (Some("2026-11-07T00:00:00Z"), Some("2026-11-13T14:37:00Z"))
    );
}

/// A server that answers every query_range with `range` and every query with
/// `instant` (status 200), until dropped.
fn fake_prometheus(range: String, instant: String) -> Prometheus {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 65536];
            // Head, then the body's Content-Length.
            let body_len = loop {
                let n = std::io::Read::read(&mut s, &mut chunk).unwrap_or(0);
                if n == 0 {
                    break None;
                }
                buf.extend_from_slice(&chunk[..n]);
                if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            l.strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    break Some((end + 4, len));
                }
            };
            let Some((start, len)) = body_len else { continue };
            while buf.len() < start + len {
                let n = std::io::Read::read(&mut s, &mut chunk).unwrap_or(0);
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let body = if buf.starts_with(b"POST /api/v1/query_range") { &range } else { &instant };
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    Prometheus { child: Command::new("true").spawn().unwrap(), addr, _dir: tempfile::tempdir().unwrap() }
}

#[test]
fn a_broken_or_hostile_prometheus_is_an_error_never_a_panic() {
    let args = ["--from", "2026-11-02T00:00:00Z", "--to", "2026-11-16T00:00:00Z", "--format", "json"];
    let empty_vector = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#.to_owned();
    // Not Prometheus.
    let (code, _, err) = report(&fake_prometheus("<html>login</html>".into(), "x".into()), &args);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not a Prometheus API answer"), "{err}");
    // A refused query.
    let refused = r#"{"status":"error","errorType":"execution","error":"query processing would load too many samples"}"#;
    let (code, _, err) = report(&fake_prometheus(refused.into(), refused.into()), &args);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("too many samples"), "{err}");
    // Values that are no numbers, timestamps off the grid, labels missing: read as no
    // data where they make no sense, never a panic.
    let odd = r#"{"status":"success","data":{"resultType":"matrix","result":[
        {"metric":{},"values":[[1793577659.999,"NaN"],[1793577719.999,"+Inf"],[12,"1"],[1793577779.5,"1"],[1793577839.999,"0"]]},
        {"metric":{"pool":"p\"<b>","role":"x"},"values":[[1793577659.999,"1e400"],[1793577719.999,"0"]]}]}}"#;
    let (code, json, err) = report(&fake_prometheus(odd.into(), empty_vector.clone()), &args);
    assert_eq!(code, 1, "NO-GO, not a crash: {err}");
    let r: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(r["pools"].as_array().unwrap().iter().any(|p| p["pool"] == "p\"<b>"));
    // Hundreds of thousands of series: refused with a message, memory bounded.
    let mut many = String::from(r#"{"status":"success","data":{"resultType":"matrix","result":["#);
    for i in 0..30_000 {
        let _ = write!(
            many,
            "{}{{\"metric\":{{\"pool\":\"p{i}\"}},\"values\":[[1793577659.999,\"1\"]]}}",
            if i > 0 { "," } else { "" }
        );
    }
    many.push_str("]}}");
    let (code, _, err) = report(&fake_prometheus(many, empty_vector), &args);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("series over 20160 steps"), "{err}");
}
