//! The status page and `/api/v1/events` with failures present, loaded in Debian's
//! headless Chromium: the DOM must show the failing check's reason, detail and
//! duration, the pool that is down with the check that made it down, the record not
//! on its planned pool and the state changes; the screenshots (desktop and phone
//! width) are kept under `target/status-page/` and must show the failure colour.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{require, sample, Agent, Knot};

const ZONE: &str = "\
lyncpool A 127.0.33.1
ocspool A 127.0.33.2
_sipinternaltls._tcp SRV 0 0 5061 lyncpool
";

fn config(knot: &Knot, lync_port: u16, ocs_port: u16) -> String {
    format!(
        r#"[agent]
listen = "{{listen}}"
interval = "1s"
timeout = "500ms"
labels = {{ site = "lab" }}
[dns]
servers = ["{dns}"]
[[pools]]
name = "ocs2007r2"
role = "legacy"
fqdn = "ocspool.contoso.test"
[[pools]]
name = "lync2013"
role = "new"
fqdn = "lyncpool.contoso.test"
[[checks]]
name = "sip-port"
kind = "tcp"
port = {lync_port}
pools = ["lync2013"]
[[checks]]
name = "sip-port-ocs"
kind = "tcp"
port = {ocs_port}
pools = ["ocs2007r2"]
[[checks]]
name = "signin"
kind = "dns"
pools = []
record = "_sipinternaltls._tcp.contoso.test"
type = "SRV"
expect_pool = "ocs2007r2"
"#,
        dns = knot.addr
    )
}

/// Headless Chromium on `url`: the DOM after load, and a screenshot at `width`.
fn chromium(url: &str, width: u32, shot: &Path) -> String {
    let bin = require("chromium", "chromium");
    let profile = tempfile::tempdir().unwrap();
    let common = |c: &mut Command| {
        c.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()));
    };
    let mut c = Command::new(&bin);
    common(&mut c);
    let out = c.args(["--dump-dom", url]).output().unwrap();
    assert!(out.status.success(), "chromium --dump-dom failed: {}", String::from_utf8_lossy(&out.stderr));
    let dom = String::from_utf8(out.stdout).unwrap();
    let mut c = Command::new(&bin);
    common(&mut c);
    let out = c
        .arg(format!("--window-size={width},2000"))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(url)
        .output()
        .unwrap();
    assert!(out.status.success(), "chromium --screenshot failed: {}", String::from_utf8_lossy(&out.stderr));
    dom
}

/// Pixels of exactly `rgb` in the PNG at `path`, and the image width.
fn count_colour(path: &Path, rgb: [u8; 3]) -> (usize, u32) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let step = match info.color_type {
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        other => panic!("unexpected PNG colour type {other:?}"),
    };
    let n = buf[..info.buffer_size()].chunks(step).filter(|p| p[..3] == rgb).count();
    (n, info.width)
}

/// The element whose opening tag carries `attr`, up to the closing `</div>` or `</li>`
/// of the same depth is more than a test needs: the text from the tag to `until`.
fn fragment<'a>(dom: &'a str, attr: &str, until: &str) -> &'a str {
    let start = dom.find(attr).unwrap_or_else(|| panic!("{attr} not in the page:\n{dom}"));
    let rest = &dom[start..];
    &rest[..rest.find(until).unwrap_or(rest.len())]
}

fn artifacts() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).parent().unwrap().join("status-page");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn the_status_page_shows_what_broke_why_and_since_when_in_chromium() {
    let knot = Knot::start("contoso.test", ZONE);
    let lync = std::net::TcpListener::bind("127.0.33.1:0").unwrap();
    let lync_port = lync.local_addr().unwrap().port();
    // Nothing listens on the OCS port: refused from the first run.
    let ocs_port = std::net::TcpListener::bind("127.0.33.2:0").unwrap().local_addr().unwrap().port();
    let agent = Agent::start(&config(&knot, lync_port, ocs_port));

    // The new pool's port passes first, then goes away: a pass -> fail change.
    agent.wait_metrics(Duration::from_secs(10), |m| {
        sample(m, "coexist_probe_success", &[("check", "sip-port")]) == Some(1.0)
    });
    drop(lync);
    agent.wait_metrics(Duration::from_secs(10), |m| {
        sample(m, "coexist_probe_success", &[("check", "sip-port")]) == Some(0.0)
    });
    // Long enough for "failing for" to read in seconds of its own.
    std::thread::sleep(Duration::from_secs(3));

    // /api/v1/events: newest first, with the reason and how long it had passed.
    let (code, body) = agent.get("/api/v1/events");
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["kept"], 500);
    let events = v["events"].as_array().unwrap();
    let lync_fail = events
        .iter()
        .find(|e| e["check"] == "sip-port" && e["state"] == "fail")
        .unwrap_or_else(|| panic!("no fail event for sip-port: {body}"));
    assert_eq!(lync_fail["reason"], "refused");
    assert_eq!(lync_fail["pool"], "lync2013");
    assert!(lync_fail["previous_state_seconds"].as_f64().unwrap() > 0.0, "{lync_fail}");
    let ocs_fail = events.iter().find(|e| e["check"] == "sip-port-ocs").unwrap();
    assert_eq!(ocs_fail["state"], "fail");
    assert!(ocs_fail["previous_state_seconds"].is_null(), "a first run has no previous state: {ocs_fail}");
    let times: Vec<&str> = events.iter().map(|e| e["at"].as_str().unwrap()).collect();
    let mut sorted = times.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(times, sorted, "events are newest first");

    let dir = artifacts();
    let url = format!("http://{}/", agent.listen);
    let desktop = dir.join("desktop.png");
    let phone = dir.join("phone.png");
    let dom = chromium(&url, 1280, &desktop);
    chromium(&url, 390, &phone);

    // Generated at, and a refresh that needs no JavaScript.
    assert!(dom.contains("http-equiv=\"refresh\" content=\"5\""), "{dom}");
    assert!(dom.contains("id=\"generated\""), "{dom}");
    assert!(!dom.contains("<script"), "the page needs no JavaScript");
    assert!(dom.contains("site=lab"));

    // The banner says pools are down.
    let banner = fragment(&dom, "id=\"banner\"", "</div>");
    assert!(banner.contains("2 of 2 pools DOWN"), "{banner}");

    // Each pool card names the check that made it down, the reason and for how long.
    let card = fragment(&dom, "id=\"pool-lync2013\"", "</ul>");
    assert!(card.contains("DOWN"), "{card}");
    assert!(card.contains("<b>sip-port</b>") && card.contains("refused"), "{card}");
    assert!(card.contains("failing for"), "{card}");
    let card = fragment(&dom, "id=\"pool-ocs2007r2\"", "</ul>");
    assert!(card.contains("<b>sip-port-ocs</b>") && card.contains("refused"), "{card}");

    // The matrix cell: reason and detail written out, with the duration.
    let cell = fragment(&dom, "data-check=\"sip-port\" data-pool=\"lync2013\"", "</small>");
    assert!(cell.contains("data-reason=\"refused\""), "{cell}");
    assert!(cell.contains("FAIL"), "{cell}");
    assert!(cell.contains("class=\"detail\""), "detail is visible, not a tooltip: {cell}");
    let secs: u64 = cell
        .split("failing for ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no 'failing for N s' in {cell}"));
    assert!((2..120).contains(&secs), "failing for {secs} s: {cell}");

    // The sign-in record points at the new pool while the plan says the old one.
    let records = fragment(&dom, "id=\"records\"", "</table>");
    assert!(records.contains("_sipinternaltls._tcp.contoso.test"), "{records}");
    assert!(records.contains("lync2013") && records.contains("NOT AS PLANNED"), "{records}");
    let cell = fragment(&dom, "data-check=\"signin\" data-pool=\"\"", "</small>");
    assert!(cell.contains("data-reason=\"dns_wrong_pool\""), "{cell}");

    // The recent changes list the pass -> fail change with how long it had passed.
    let changes = fragment(&dom, "id=\"events\"", "</table>");
    assert!(changes.contains("sip-port") && changes.contains("after passing for"), "{changes}");

    // The screenshots show failures: the failure background (#fde8e6) covers real area.
    for shot in [&desktop, &phone] {
        let (bad, width) = count_colour(shot, [0xfd, 0xe8, 0xe6]);
        assert!(bad > 5_000, "{}: only {bad} failure-coloured pixels", shot.display());
        assert!(width >= 390);
    }
    eprintln!("screenshots: {} {}", desktop.display(), phone.display());
}
