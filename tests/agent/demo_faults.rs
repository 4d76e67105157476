//! `coexistd demo --faults` with time compressed (each fault and each repaired pause
//! held 7 s, checks every 1.2 s): two cycles of the six faults, each seen on the status
//! page, in the metrics with its reason and in `/api/v1/events`, and everything green
//! again between faults.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{free_port, http};
use coexistd::lab::faults::Fault;

/// The failing probes of a scrape: `check reason` of every instance whose last probe failed.
fn failing(metrics: &str) -> Vec<String> {
    metrics
        .lines()
        .filter(|l| l.starts_with("coexist_probe_success{") && l.ends_with(" 0"))
        .map(|l| l.to_owned())
        .collect()
}

/// State changes into failing for `check` with `reason` in `/api/v1/events`.
fn fail_events(addr: std::net::SocketAddr, check: &str, reason: &str) -> usize {
    let Ok((200, body)) = http(addr, "GET", "/api/v1/events") else { return 0 };
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    v["events"].as_array().map_or(0, |a| {
        a.iter().filter(|e| e["check"] == check && e["state"] == "fail" && e["reason"] == reason).count()
    })
}

fn announcements(addr: std::net::SocketAddr) -> Vec<String> {
    let Ok((200, body)) = http(addr, "GET", "/api/v1/events") else { return Vec::new() };
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    v["announcements"]
        .as_array()
        .map_or_else(Vec::new, |a| a.iter().filter_map(|x| x["text"].as_str().map(str::to_owned)).collect())
}

/// The status page during a fault, as the README shows it:
/// `target/demo-faults/status-page-fault.png`.
fn screenshot(url: &str) {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).parent().unwrap().join("demo-faults");
    std::fs::create_dir_all(&dir).unwrap();
    let shot = dir.join("status-page-fault.png");
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(crate::common::require("chromium", "chromium"))
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"])
        .args(["--hide-scrollbars", "--window-size=1280,1100"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(url)
        .output()
        .unwrap();
    assert!(out.status.success(), "chromium: {}", String::from_utf8_lossy(&out.stderr));
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000);
}

#[test]
fn two_cycles_of_faults_each_seen_and_repaired() {
    if !crate::common::slow_tests("two_cycles_of_faults_each_seen_and_repaired") {
        return;
    }
    let _lab = crate::common::DEMO_LAB.lock().unwrap_or_else(|e| e.into_inner());
    let port = free_port();
    let _demo = crate::common::Demo(
        Command::new(env!("CARGO_BIN_EXE_coexistd"))
            .args([
                "demo",
                "--faults",
                "--faults.hold",
                "7s",
                "--web.listen-address",
                &format!("127.0.0.1:{port}"),
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(20);
    while http(addr, "GET", "/-/healthy").is_err() {
        assert!(Instant::now() < deadline, "the demo did not serve in 20 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut seen = 0;
    for cycle in 0..2 {
        for fault in Fault::ALL {
            let now = format!("now: {}", fault.announcement());
            let repaired = format!("repaired: {}", fault.announcement());
            let count = |text: &str| announcements(addr).iter().filter(|a| *a == text).count();
            let (check, reason) = fault.shows_as();
            let before = fail_events(addr, check, reason);
            // Its announcement.
            let until = Instant::now() + Duration::from_secs(30);
            while count(&now) <= cycle {
                assert!(Instant::now() < until, "cycle {cycle}: {now:?} not announced in /api/v1/events");
                std::thread::sleep(Duration::from_millis(100));
            }
            // The check that shows it fails with its reason now: in the status (what the
            // page is made of) and the page, in the metrics, and as a new state change in
            // the events.
            let until = Instant::now() + Duration::from_secs(7);
            loop {
                let (_, status) = http(addr, "GET", "/api/v1/status").unwrap();
                let v: serde_json::Value = serde_json::from_str(&status).unwrap_or_default();
                let failing_now = v["instances"].as_array().is_some_and(|list| {
                    list.iter().any(|i| i["check"] == check && i["success"] == false && i["reason"] == reason)
                });
                let (_, m) = http(addr, "GET", "/metrics").unwrap();
                let metrics = failing(&m).iter().any(|l| l.contains(&format!("check=\"{check}\"")))
                    && m.lines().any(|l| {
                        l.starts_with("coexist_probe_failures_total{")
                            && l.contains(&format!("check=\"{check}\""))
                            && l.contains(&format!("reason=\"{reason}\""))
                    });
                if failing_now && metrics && fail_events(addr, check, reason) > before {
                    let (_, page) = http(addr, "GET", "/").unwrap();
                    if page.contains(check) && page.contains(reason) {
                        break;
                    }
                }
                assert!(
                    Instant::now() < until,
                    "cycle {cycle}: {fault:?} never showed as {check} {reason}:\n{m}"
                );
                std::thread::sleep(Duration::from_millis(200));
            }
            seen += 1;
            if cycle == 0 && fault == Fault::FrontEndSilent {
                screenshot(&format!("http://{addr}/"));
            }
            // Repaired, and all green before the next fault.
            let until = Instant::now() + Duration::from_secs(30);
            while count(&repaired) <= cycle {
                assert!(Instant::now() < until, "cycle {cycle}: {repaired:?} not announced");
                std::thread::sleep(Duration::from_millis(100));
            }
            let until = Instant::now() + Duration::from_secs(6);
            loop {
                let (_, m) = http(addr, "GET", "/metrics").unwrap();
                let red = failing(&m);
                if red.is_empty() {
                    break;
                }
                assert!(
                    Instant::now() < until,
                    "cycle {cycle}: still failing after {fault:?} was repaired: {red:#?}"
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
    assert_eq!(seen, 12);
}
