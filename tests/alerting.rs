//! The shipped alerting end to end: Debian's Prometheus and Alertmanager loaded with the
//! files in `deploy/` (only addresses and the webhook changed), the agent against real
//! peers (Knot DNS, TCP listeners), a webhook receiver here. A pool member that stops
//! answering pages within 2 minutes with the check, address, reason and runbook; its
//! recovery resolves; an agent killed while a sign-in record is wrong resolves nothing
//! before it is back.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{free_port, http, require, Agent, Knot};

const ZONE: &str = "\
lyncpool A 127.0.41.1
lyncpool A 127.0.41.2
ocspool A 127.0.41.3
_sipinternaltls._tcp SRV 0 0 5061 ocspool
";

/// One notification as Alertmanager posts it: (status, alertname, labels, annotations).
#[derive(Debug, Clone)]
struct Note {
    at: Instant,
    body: serde_json::Value,
}

/// Collects webhook notifications.
fn receiver() -> (SocketAddr, Arc<Mutex<Vec<Note>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let notes = Arc::new(Mutex::new(Vec::new()));
    let n = notes.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut len = 0;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0u8; len];
            let _ = r.read_exact(&mut body);
            if let Ok(v) = serde_json::from_slice(&body) {
                n.lock().unwrap().push(Note { at: Instant::now(), body: v });
            }
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    (addr, notes)
}

/// Alerts of `notes` with `alertname` and `status` ("firing"/"resolved").
fn alerts(notes: &[Note], alertname: &str, status: &str) -> Vec<(Instant, serde_json::Value)> {
    let mut out = Vec::new();
    for n in notes {
        for a in n.body["alerts"].as_array().into_iter().flatten() {
            if a["labels"]["alertname"] == alertname && a["status"] == status {
                out.push((n.at, a.clone()));
            }
        }
    }
    out
}

/// A TCP listener that accepts and closes, until stopped (then its port refuses).
struct Member(Arc<std::sync::atomic::AtomicBool>);

impl Member {
    fn listen(ip: &str, port: u16) -> Member {
        let l = TcpListener::bind((ip, port)).unwrap();
        l.set_nonblocking(true).unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        std::thread::spawn(move || {
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                match l.accept() {
                    Ok((c, _)) => drop(c),
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Member(stop)
    }

    fn stop(&self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for(within: Duration, what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
    t.elapsed()
}

fn agent_config(knot: &Knot, port: u16, shard: &str) -> String {
    format!(
        r#"[agent]
listen = "{{listen}}"
interval = "30s"
timeout = "2s"
labels = {{ site = "lab" }}
{shard}
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
port = {port}
each_address = true
[[checks]]
name = "signin"
kind = "dns"
pools = []
record = "_sipinternaltls._tcp.contoso.test"
type = "SRV"
expect_pool = "lync2013"
"#,
        dns = knot.addr
    )
}

#[test]
fn a_member_failure_pages_within_two_minutes_and_a_dead_agent_resolves_nothing() {
    // About 12 minutes of real alerting time.
    if !common::slow_tests("a_member_failure_pages_within_two_minutes_and_a_dead_agent_resolves_nothing") {
        return;
    }
    let prometheus = require("prometheus", "prometheus");
    let alertmanager = require("prometheus-alertmanager", "prometheus-alertmanager");
    let root = env!("CARGO_MANIFEST_DIR");
    let knot = Knot::start("contoso.test", ZONE);
    // Three pool members on one port: lync .1 and .2, ocs .3.
    let port = free_port();
    let members: Vec<Member> =
        ["127.0.41.1", "127.0.41.2", "127.0.41.3"].iter().map(|ip| Member::listen(ip, port)).collect();
    let mut agent = Agent::start(&agent_config(&knot, port, ""));
    let target = agent.listen;

    let (hook, notes) = receiver();
    let dir = tempfile::tempdir().unwrap();
    // Alertmanager: the shipped file with both webhooks pointed here.
    let am_port = free_port();
    let am_cfg = std::fs::read_to_string(format!("{root}/deploy/alertmanager/alertmanager.yml"))
        .unwrap()
        .replace("http://pager.contoso.com/hooks/coexist", &format!("http://{hook}/oncall"))
        .replace("http://chat.contoso.com/hooks/uc-migration", &format!("http://{hook}/team"));
    std::fs::write(dir.path().join("am.yml"), am_cfg).unwrap();
    let _am = Proc(
        Command::new(alertmanager)
            .arg(format!("--config.file={}", dir.path().join("am.yml").display()))
            .arg(format!("--storage.path={}", dir.path().join("am").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{am_port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Prometheus: the shipped scrape file and rules, targets pointed at the agent.
    let prom_port = free_port();
    let scrape = std::fs::read_to_string(format!("{root}/deploy/prometheus/scrape.yml"))
        .unwrap()
        .replace("[\"coexist-hq.contoso.com:9797\"]", &format!("[\"{target}\"]"))
        .replace("      - targets: [\"coexist-branch1.contoso.com:9797\"]\n        labels: { site: branch1 }\n", "")
        .replace("labels: { site: hq }", "labels: { site: lab }")
        .replace("  - coexistd.rules.yml", &format!("  - {root}/deploy/prometheus/coexistd.rules.yml"))
        + &format!("alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: [\"127.0.0.1:{am_port}\"]\n");
    std::fs::write(dir.path().join("prometheus.yml"), &scrape).unwrap();
    let _prom = Proc(
        Command::new(prometheus)
            .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let prom = SocketAddr::from(([127, 0, 0, 1], prom_port));
    wait_for(Duration::from_secs(60), "Prometheus scrapes the agent", || {
        http(prom, "GET", "/api/v1/query?query=up").is_ok_and(|(c, b)| c == 200 && b.contains("\"1\"]"))
    });

    // The sign-in record points at the legacy pool from the start (the plan says new):
    // that pages. Then one member of the new pool stops answering.
    let sign_in = wait_for(Duration::from_secs(180), "sign-in page", || {
        !alerts(&notes.lock().unwrap(), "CoexistSignInNotAsPlanned", "firing").is_empty()
    });
    eprintln!("sign-in record page after {sign_in:?}");
    let down_at = Instant::now();
    members[1].stop(); // 127.0.41.2 now refuses
    let took = wait_for(Duration::from_secs(150), "pool-down page", || {
        !alerts(&notes.lock().unwrap(), "CoexistPoolDown", "firing").is_empty()
    });
    let page = alerts(&notes.lock().unwrap(), "CoexistPoolDown", "firing")[0].1.clone();
    eprintln!("page after {took:?}: {page}");
    assert!(took <= Duration::from_secs(120), "the page took {took:?}");
    assert_eq!(page["labels"]["pool"], "lync2013");
    assert_eq!(page["labels"]["site"], "lab");
    let d = page["annotations"]["description"].as_str().unwrap_or_default();
    assert!(d.contains("sip-port") && d.contains("127.0.41.2") && d.contains("refused"), "{d}");
    assert!(!d.contains("127.0.41.1 "), "only the failing member is named: {d}");
    assert_eq!(page["annotations"]["runbook_url"], "docs/runbook.md#coexistpooldown");
    assert_eq!(page["annotations"]["status_page"], format!("http://{target}/"));
    eprintln!("member down to page: {:?}", down_at.elapsed());

    // The member answers again: the page resolves (2 minutes after the pool passes:
    // keep_firing_for, so that a restarted agent is no all-clear).
    let back = Member::listen("127.0.41.2", port);
    wait_for(Duration::from_secs(300), "pool-down resolved", || {
        !alerts(&notes.lock().unwrap(), "CoexistPoolDown", "resolved").is_empty()
    });

    // The member fails again and pages again; then the agent dies while the member is
    // down and the sign-in record still wrong: the agent-down page comes, and neither
    // alert resolves while the agent is away, nor when it comes back with its failure
    // streaks started from zero.
    back.stop();
    let firing_before = alerts(&notes.lock().unwrap(), "CoexistPoolDown", "firing").len();
    wait_for(Duration::from_secs(150), "second pool-down page", || {
        alerts(&notes.lock().unwrap(), "CoexistPoolDown", "firing").len() > firing_before
    });
    let killed = Instant::now();
    let _ = agent.child.kill();
    let _ = agent.child.wait();
    wait_for(Duration::from_secs(150), "agent-down page", || {
        !alerts(&notes.lock().unwrap(), "CoexistAgentDown", "firing").is_empty()
    });
    // Three minutes without the agent: past AgentDown's minute, well into the rules'
    // five-minute hold.
    std::thread::sleep(Duration::from_secs(180).saturating_sub(killed.elapsed()));
    let resolved_since = |name: &str| -> Vec<_> {
        alerts(&notes.lock().unwrap(), name, "resolved").into_iter().filter(|(at, _)| *at > killed).collect()
    };
    for name in ["CoexistSignInNotAsPlanned", "CoexistPoolDown"] {
        let r = resolved_since(name);
        assert!(r.is_empty(), "{name} resolved while the agent was down: {r:?}");
    }
    eprintln!("agent down for {:?}, no false resolve", killed.elapsed());

    // The agent comes back on the same address: for its first probes every streak reads
    // 0 or 1. Nothing may resolve in the next two minutes.
    let restarted = Instant::now();
    agent.child = Command::new(env!("CARGO_BIN_EXE_coexistd"))
        .args(["run", "--config"])
        .arg(&agent.config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(30), "the agent serves again", || http(target, "GET", "/-/healthy").is_ok());
    std::thread::sleep(Duration::from_secs(120).saturating_sub(restarted.elapsed()));
    for name in ["CoexistSignInNotAsPlanned", "CoexistPoolDown"] {
        let r = resolved_since(name);
        assert!(r.is_empty(), "{name} resolved after the agent came back: {r:?}");
    }
    eprintln!("agent back for {:?}, no false resolve", restarted.elapsed());
}

#[test]
fn three_shards_of_one_file_scrape_every_instance_exactly_once() {
    let prometheus = require("prometheus", "prometheus");
    let root = env!("CARGO_MANIFEST_DIR");
    let knot = Knot::start("contoso.test", ZONE);
    let port = free_port();
    let mut extra = String::new();
    for i in 0..30 {
        extra.push_str(&format!(
            "[[checks]]\nname = \"c{i}\"\nkind = \"tcp\"\npools = [\"ocs2007r2\"]\nport = {}\n",
            port
        ));
    }
    let agents: Vec<Agent> = (1..=3)
        .map(|k| Agent::start(&(agent_config(&knot, port, &format!("shard = \"{k}/3\"")) + &extra)))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let prom_port = free_port();
    let targets = agents.iter().map(|a| format!("\"{}\"", a.listen)).collect::<Vec<_>>().join(", ");
    let scrape = std::fs::read_to_string(format!("{root}/deploy/prometheus/scrape.yml"))
        .unwrap()
        .replace("[\"coexist-hq.contoso.com:9797\"]", &format!("[{targets}]"))
        .replace(
            "      - targets: [\"coexist-branch1.contoso.com:9797\"]\n        labels: { site: branch1 }\n",
            "",
        )
        .replace("labels: { site: hq }", "labels: { site: lab }")
        .replace("  - coexistd.rules.yml", &format!("  - {root}/deploy/prometheus/coexistd.rules.yml"));
    std::fs::write(dir.path().join("prometheus.yml"), &scrape).unwrap();
    let _prom = Proc(
        Command::new(prometheus)
            .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let prom = SocketAddr::from(([127, 0, 0, 1], prom_port));
    // Every series of the file once, no more: sip-port on lync (two addresses) and ocs
    // (one), signin, 30 × c{i}.
    let q =
        "/api/v1/query?query=count%20by%20(check%2C%20pool%2C%20address)%20(coexist_check_interval_seconds)";
    let mut last = String::new();
    wait_for(Duration::from_secs(90), "every instance scraped", || {
        let Ok((200, body)) = http(prom, "GET", q) else { return false };
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let rows = v["data"]["result"].as_array().cloned().unwrap_or_default();
        last = body;
        rows.len() == 34 && rows.iter().all(|r| r["value"][1] == "1")
    });
    let per_agent = "/api/v1/query?query=count%20by%20(instance)%20(coexist_check_interval_seconds)";
    let (_, body) = http(prom, "GET", per_agent).unwrap();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let counts: Vec<u64> = v["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["value"][1].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(counts.len(), 3, "three agents: {body} {last}");
    assert_eq!(counts.iter().sum::<u64>(), 34);
    assert!(counts.iter().all(|c| *c > 0), "every shard runs some: {counts:?}");
}
