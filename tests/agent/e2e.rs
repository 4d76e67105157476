//! The binary end to end: a config against real peers (Knot DNS, TCP listeners),
//! scraped over HTTP, checked with promtool; reloads; signals; exit codes.

use crate::common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{http, require, sample, Agent, Knot};

const ZONE: &str = "\
lyncpool A 127.0.31.1
ocspool A 127.0.31.2
_sipinternaltls._tcp SRV 0 0 5061 lyncpool
";

fn config(knot: &Knot, lync_port: u16, ocs_port: u16, extra: &str) -> String {
    format!(
        r#"[agent]
listen = "{{listen}}"
interval = "1s"
timeout = "500ms"
labels = {{ site = "lab" }}
[dns]
servers = ["{dns}"]
[[pools]]
name = "ocs"
role = "legacy"
fqdn = "ocspool.contoso.test"
[[pools]]
name = "lync"
role = "new"
fqdn = "lyncpool.contoso.test"
[[checks]]
name = "sip-port-lync"
kind = "tcp"
port = {lync_port}
pools = ["lync"]
[[checks]]
name = "sip-port-ocs"
kind = "tcp"
port = {ocs_port}
pools = ["ocs"]
[[checks]]
name = "signin"
kind = "dns"
pools = []
record = "_sipinternaltls._tcp.contoso.test"
type = "SRV"
expect = ["0 0 5061 lyncpool.contoso.test."]
{extra}"#,
        dns = knot.addr
    )
}

fn promtool_check(metrics: &str) {
    use std::io::Write;
    let mut child = Command::new(require("promtool", "prometheus"))
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(metrics.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Parses OpenMetrics with the strict parser of Debian's python3-prometheus-client
/// (promtool reads only the text format).
fn openmetrics_check(text: &str) {
    use std::io::Write;
    let script =
        "import sys\nfrom prometheus_client.openmetrics.parser import text_string_to_metric_families as p\n\
                  n = sum(1 for _ in p(sys.stdin.read()))\nprint(n)\n";
    let mut child = Command::new(require("python3", "python3"))
        .args(["-c", script])
        .env("PYTHONPATH", "/usr/lib/python3/dist-packages")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "OpenMetrics parser: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let families: usize = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert!(families >= 20, "{families} families parsed");
}

/// Every label name used in a text exposition.
fn label_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(labels) = line.split_once('{').and_then(|(_, r)| r.rsplit_once('}')).map(|(l, _)| l) else {
            continue;
        };
        let mut rest = labels;
        while let Some((name, after)) = rest.split_once("=\"") {
            names.insert(name.trim_start_matches(',').to_owned());
            // Skip the quoted value (escaped quotes are \").
            let mut end = 0;
            let bytes = after.as_bytes();
            while end < bytes.len() && !(bytes[end] == b'"' && (end == 0 || bytes[end - 1] != b'\\')) {
                end += 1;
            }
            rest = after.get(end + 1..).unwrap_or("");
        }
    }
    names
}

fn sigterm(agent: &mut Agent) -> (std::process::ExitStatus, Duration) {
    let t = Instant::now();
    let pid = agent.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    loop {
        if let Some(s) = agent.child.try_wait().unwrap() {
            return (s, t.elapsed());
        }
        assert!(t.elapsed() < Duration::from_secs(5), "agent still running 5 s after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn scraped_metrics_follow_real_peers_and_pass_promtool() {
    let mut knot = Knot::start("contoso.test", ZONE);
    let lync = std::net::TcpListener::bind("127.0.31.1:0").unwrap();
    let lync_port = lync.local_addr().unwrap().port();
    // The OCS port: nothing listens there.
    let ocs_port = std::net::TcpListener::bind("127.0.31.2:0").unwrap().local_addr().unwrap().port();
    let mut agent = Agent::start(&config(&knot, lync_port, ocs_port, ""));

    let (code, _) = agent.get("/-/ready");
    assert!(code == 503 || code == 200);
    let m = agent.wait_metrics(Duration::from_secs(5), |m| {
        sample(m, "coexist_probe_success", &[("check", "sip-port-ocs")]).is_some()
            && sample(m, "coexist_probe_success", &[("check", "sip-port-lync")]).is_some()
            && sample(m, "coexist_probe_success", &[("check", "signin")]).is_some()
    });
    let lync_l =
        [("pool", "lync"), ("role", "new"), ("check", "sip-port-lync"), ("kind", "tcp"), ("site", "lab")];
    assert_eq!(sample(&m, "coexist_probe_success", &lync_l), Some(1.0));
    assert_eq!(
        sample(
            &m,
            "coexist_probe_success",
            &[("check", "sip-port-ocs"), ("target", &format!("ocspool.contoso.test:{ocs_port}"))]
        ),
        Some(0.0)
    );
    assert!(
        sample(&m, "coexist_probe_failures_total", &[("check", "sip-port-ocs"), ("reason", "refused")])
            .unwrap()
            >= 1.0
    );
    assert_eq!(
        sample(&m, "coexist_probe_success", &[("check", "signin"), ("pool", ""), ("kind", "dns")]),
        Some(1.0)
    );
    assert_eq!(sample(&m, "coexist_dns_answers", &[("check", "signin")]), Some(1.0));
    assert!(sample(&m, "coexist_probe_phase_seconds", &[("check", "sip-port-lync"), ("phase", "connect")])
        .is_some());
    assert_eq!(sample(&m, "coexist_pool_up", &[("pool", "lync")]), Some(1.0));
    assert_eq!(sample(&m, "coexist_pool_up", &[("pool", "ocs")]), Some(0.0));
    assert_eq!(sample(&m, "coexist_pool_checks", &[("pool", "ocs"), ("state", "failing")]), Some(1.0));
    assert_eq!(sample(&m, "coexist_build_info", &[("version", env!("CARGO_PKG_VERSION"))]), Some(1.0));
    assert_eq!(sample(&m, "coexist_config_last_reload_successful", &[]), Some(1.0));
    promtool_check(&m);
    assert_eq!(agent.get("/-/ready").0, 200);

    // OpenMetrics on request.
    let om = common::openmetrics(agent.listen);
    assert!(om.trim_end().ends_with("# EOF"), "OpenMetrics ends with # EOF");
    assert!(om.contains("coexist_probe_runs_total{"));
    openmetrics_check(&om);
    // Every label name in the scrape is one coexistd reserves from agent.labels (a
    // constant label of the same name would duplicate it and break the scrape).
    for name in label_names(&m) {
        assert!(coexistd::config::is_reserved_label(&name) || name == "site", "label {name} is not reserved");
    }

    // The status JSON.
    let (code, body) = agent.get("/api/v1/status");
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let ocs = v["instances"].as_array().unwrap().iter().find(|i| i["check"] == "sip-port-ocs").unwrap();
    assert_eq!(ocs["success"], false);
    assert_eq!(ocs["reason"], "refused");
    assert_eq!(ocs["role"], "legacy");
    assert!(ocs["last_run"].is_string() && ocs["last_change"].is_string());
    assert_eq!(v["ready"], true);
    let (code, page) = agent.get("/");
    assert_eq!(code, 200);
    assert!(page.contains("sip-port-ocs") && page.contains("refused"));

    // The sign-in record moves (a rollback): the next probes see it.
    knot.set_records(&ZONE.replace("5061 lyncpool", "5061 ocspool"));
    let m = agent.wait_metrics(Duration::from_secs(4), |m| {
        sample(m, "coexist_probe_success", &[("check", "signin")]) == Some(0.0)
    });
    assert!(sample(&m, "coexist_probe_failures_total", &[("check", "signin"), ("reason", "dns_mismatch")])
        .is_some());

    // The listener goes away: refused on the next probe, pool down.
    drop(lync);
    agent.wait_metrics(Duration::from_secs(4), |m| {
        sample(m, "coexist_pool_up", &[("pool", "lync")]) == Some(0.0)
    });

    let (status, took) = sigterm(&mut agent);
    assert_eq!(status.code(), Some(0));
    assert!(took < Duration::from_secs(2), "stopped in {took:?}");
}

#[test]
fn reload_swaps_good_configs_and_keeps_the_old_one_on_a_bad_file() {
    let knot = Knot::start("contoso.test", ZONE);
    let lync = std::net::TcpListener::bind("127.0.31.1:0").unwrap();
    let port = lync.local_addr().unwrap().port();
    let extra = "[[checks]]\nname = \"extra\"\nkind = \"tcp\"\nport = 9\npools = [\"ocs\"]\n";
    let agent = Agent::start_with(&config(&knot, port, port, extra), &["--web.enable-lifecycle"]);
    agent.wait_metrics(Duration::from_secs(5), |m| {
        sample(m, "coexist_probe_success", &[("check", "extra")]).is_some()
    });

    // GET is not allowed on the reload endpoint.
    assert_eq!(http(agent.listen, "GET", "/-/reload").unwrap().0, 405);

    // A bad file: rejected, old config keeps running, the gauge says so.
    let good = std::fs::read_to_string(&agent.config).unwrap();
    std::fs::write(&agent.config, good.replace("interval = \"1s\"", "interval = \"1 fortnight\"")).unwrap();
    let (code, body) = http(agent.listen, "POST", "/-/reload").unwrap();
    assert_eq!(code, 500);
    assert!(body.contains("previous configuration kept"), "{body}");
    assert!(!body.contains("fortnight") && !body.contains(".toml"), "no path or file content: {body}");
    let m = agent.get("/metrics").1;
    assert_eq!(sample(&m, "coexist_config_last_reload_successful", &[]), Some(0.0));
    assert!(sample(&m, "coexist_probe_success", &[("check", "extra")]).is_some(), "old config still runs");

    // A good file without the extra check, via SIGHUP: its series disappear.
    let listen_line = format!("listen = \"{}\"", agent.listen);
    let new = config(&knot, port, port, "").replace("listen = \"{listen}\"", &listen_line);
    std::fs::write(&agent.config, new).unwrap();
    assert!(Command::new("kill").args(["-HUP", &agent.child.id().to_string()]).status().unwrap().success());
    let m = agent.wait_metrics(Duration::from_secs(5), |m| {
        sample(m, "coexist_config_last_reload_successful", &[]) == Some(1.0)
    });
    assert!(!m.contains("check=\"extra\""), "series of the removed check are gone");
    assert!(sample(&m, "coexist_probe_runs_total", &[("check", "sip-port-lync")]).is_some());
    drop(lync);
}

#[test]
fn bad_config_exits_2_with_file_line_and_key_before_binding() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[agent]\ninterval = \"5s\"\ntimeout = \"10s\"\n").unwrap();
    for sub in ["run", "check", "validate"] {
        let out =
            Command::new(env!("CARGO_BIN_EXE_coexistd")).args([sub, "--config"]).arg(&path).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{sub}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!(
                "{}:3:11: agent.timeout: must be shorter than agent.interval (10s >= 5s)",
                path.display()
            )),
            "{sub}: {err}"
        );
    }
    let out = Command::new(env!("CARGO_BIN_EXE_coexistd"))
        .args(["run", "--config", "/nonexistent/c.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("/nonexistent/c.toml: cannot read the configuration")
    );
    let out = Command::new(env!("CARGO_BIN_EXE_coexistd")).args(["frobnicate"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "usage error");
}

#[test]
fn check_prints_a_table_or_json_and_exits_1_on_failure() {
    let knot = Knot::start("contoso.test", ZONE);
    let lync = std::net::TcpListener::bind("127.0.31.1:0").unwrap();
    let port = lync.local_addr().unwrap().port();
    let closed = std::net::TcpListener::bind("127.0.31.2:0").unwrap().local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, config(&knot, port, closed, "").replace("{listen}", "127.0.0.1:1")).unwrap();
    let bin = env!("CARGO_BIN_EXE_coexistd");

    let out = Command::new(bin).args(["check", "--config"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.lines().next().unwrap().starts_with("POOL"), "{table}");
    let ocs_row = table.lines().find(|l| l.contains("sip-port-ocs")).unwrap();
    assert!(ocs_row.contains("FAIL") && ocs_row.contains("refused"), "{ocs_row}");
    assert!(table.contains("pool lync (new, lyncpool.contoso.test): UP"), "{table}");
    assert!(table.contains("pool ocs (legacy, ocspool.contoso.test): DOWN"), "{table}");

    let out = Command::new(bin)
        .args(["check", "--pool", "lync", "--format", "json", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let instances = v["instances"].as_array().unwrap();
    assert_eq!(instances.len(), 1);
    assert_eq!(instances[0]["check"], "sip-port-lync");
    assert_eq!(instances[0]["success"], true);

    let out = Command::new(bin).args(["check", "--pool", "skype", "--config"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    drop(lync);
}

#[test]
fn the_demo_serves_a_passing_lab() {
    if !common::slow_tests("the_demo_serves_a_passing_lab") {
        return;
    }
    let _lab = common::DEMO_LAB.lock().unwrap_or_else(|e| e.into_inner());
    let port = common::free_port();
    let mut demo = common::Demo(
        Command::new(env!("CARGO_BIN_EXE_coexistd"))
            .args(["demo", "--listen", &format!("127.0.0.1:{port}")])
            .env("RUST_LOG", "warn")
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(75);
    // interval 10 s: every instance has run once within 10 s of the start; the Control
    // Panel sign-in (every 10 minutes) within a minute.
    loop {
        if let Ok((200, _)) = http(addr, "GET", "/-/ready") {
            break;
        }
        assert!(Instant::now() < deadline, "demo not ready in 75 s");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (_, m) = http(addr, "GET", "/metrics").unwrap();
    let successes: Vec<&str> = m.lines().filter(|l| l.starts_with("coexist_probe_success{")).collect();
    // 18 server checks, 4 test users registering (2 per pool, over TLS, UDP and TCP,
    // signing in with NTLM) and the 12 ordered pairs of them exchanging a MESSAGE,
    // opening an IM session, watching each other's presence and calling each other
    // through the pools, every message signed and checked.
    // And each site's administration path: in HQ remote PowerShell, the local
    // configuration store (the SQL Server Browser) and SMB on both new Front Ends and an
    // administrator's NTLM sign-in to the Control Panel; in BackCompatSite the legacy
    // server's endpoint mapper and SQL back end.
    assert_eq!(successes.len(), 80, "{m}");
    for site in ["HQ", "BackCompatSite"] {
        let s = [("topology_site", site)];
        assert_eq!(sample(&m, "coexist_site_administrable", &s), Some(1.0), "{site}: {m}");
        assert_eq!(sample(&m, "coexist_site_up", &s), Some(1.0), "{site}: {m}");
    }
    let panel = [("check", "control-panel"), ("purpose", "admin")];
    assert_eq!(sample(&m, "coexist_probe_success", &panel), Some(1.0), "{m}");
    assert!(successes.iter().all(|l| l.ends_with(" 1") || l.ends_with(" 1.0")), "{successes:#?}");
    assert_eq!(sample(&m, "coexist_pool_up", &[("pool", "ocs2007r2")]), Some(1.0));
    assert_eq!(sample(&m, "coexist_pool_up", &[("pool", "lync2013")]), Some(1.0));
    for from in ["ocs2007r2", "lync2013"] {
        for to in ["ocs2007r2", "lync2013"] {
            for kind in ["sip_im", "sip_presence", "sip_call"] {
                let cell = [("kind", kind), ("from_pool", from), ("to_pool", to)];
                assert_eq!(sample(&m, "coexist_interop_up", &cell), Some(1.0), "{kind} {from} -> {to}: {m}");
            }
        }
    }
    // A call from the legacy pool's alice to the new pool's bob rang before it was set up.
    let call = [("check", "call"), ("user", "alice"), ("target", "sip:bob@contoso.test")];
    let setup = sample(&m, "coexist_call_setup_seconds", &call).expect("call set-up time");
    let post_dial = sample(&m, "coexist_call_post_dial_delay_seconds", &call).expect("post-dial delay");
    assert!(post_dial > 0.0 && post_dial <= setup && setup < 1.0, "{post_dial} {setup}");
    for u in ["alice", "adam", "bob", "beth"] {
        assert_eq!(sample(&m, "coexist_user_registered", &[("user", u)]), Some(1.0), "{u}");
        // The lab's pools run on this clock: the skew read from their challenges' Date
        // is within the second's rounding of HTTP dates.
        let target = format!("sip:{u}@contoso.test");
        let skew = sample(&m, "coexist_clock_skew_seconds", &[("target", target.as_str())]);
        assert!(skew.is_some_and(|s| s.abs() < 2.0), "{u}: clock skew {skew:?}");
    }
    // The legacy pool is reached over TLS 1.0 with its SHA-1 certificate, the new one over TLS 1.3.
    let legacy = [("pool", "ocs2007r2"), ("check", "sip-tls")];
    assert_eq!(
        sample(&m, "coexist_tls_version_info", &[legacy[0], legacy[1], ("version", "TLS 1.0")]),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &m,
            "coexist_tls_cert_info",
            &[legacy[0], legacy[1], ("signature_algorithm", "sha1WithRSAEncryption")]
        ),
        Some(1.0)
    );
    let new = [("pool", "lync2013"), ("check", "sip-tls"), ("version", "TLS 1.3")];
    assert_eq!(sample(&m, "coexist_tls_version_info", &new), Some(1.0));
    assert_eq!(sample(&m, "coexist_probe_success", &[("check", "autodiscover")]), Some(1.0));
    // The sign-in record, and the sign-in path, point at the new pool.
    assert_eq!(
        sample(&m, "coexist_dns_points_to", &[("check", "signin-path"), ("points_to", "lync2013")]),
        Some(1.0)
    );
    assert_eq!(
        sample(&m, "coexist_dns_points_to", &[("check", "sipinternaltls-srv"), ("points_to", "lync2013")]),
        Some(1.0)
    );
    // SIP OPTIONS over TLS 1.0 to the legacy pool and over UDP to the new one.
    assert_eq!(
        sample(&m, "coexist_sip_status_code", &[("pool", "ocs2007r2"), ("check", "sip-options-tls")]),
        Some(200.0)
    );
    assert_eq!(
        sample(&m, "coexist_sip_status_code", &[("pool", "lync2013"), ("check", "sip-options-udp")]),
        Some(200.0)
    );
    assert!(sample(
        &m,
        "coexist_sip_server_info",
        &[("pool", "ocs2007r2"), ("server", "RTC/3.5 (coexistd lab: OCS 2007 R2)")]
    )
    .is_some());
    for (user, pool) in
        [("alice", "ocs2007r2"), ("adam", "ocs2007r2"), ("bob", "lync2013"), ("beth", "lync2013")]
    {
        assert_eq!(
            sample(&m, "coexist_user_home", &[("user", user), ("home_pool", pool), ("pool", pool)]),
            Some(1.0),
            "{user}"
        );
    }
    // Microsoft-style sign-in: Kerberos offered first and skipped, NTLM version 4 at the
    // new pool (3 at the legacy one), the server's signature on the 200; no secret shown.
    let (_, trace) = http(addr, "GET", "/api/v1/trace?check=register&pool=lync2013").unwrap();
    for want in [
        "WWW-Authenticate: Kerberos",
        "WWW-Authenticate: NTLM realm=\"SIP Communications Service\", targetname=\"lyncpool.contoso.test\", version=4",
        "Authorization: NTLM ***",
        "Authentication-Info: NTLM rspauth=",
    ] {
        assert!(trace.contains(want), "{want}: {trace}");
    }
    let (_, trace) = http(addr, "GET", "/api/v1/trace?check=register&pool=ocs2007r2").unwrap();
    assert!(trace.contains("targetname=\"ocspool.contoso.test\", version=3"), "{trace}");
    // No output carries an NTLM user's password (the lab's password files, random per
    // start): metrics, status, page, events, traces of the sign-in and of an IM session.
    let users = std::env::temp_dir().join(format!("coexistd-demo-users-{}", demo.0.id()));
    let passwords: Vec<String> = ["alice", "adam", "bob", "beth"]
        .iter()
        .map(|u| std::fs::read_to_string(users.join(format!("{u}.pass"))).unwrap().trim().to_owned())
        .collect();
    let outputs = [
        m.clone(),
        http(addr, "GET", "/api/v1/status").unwrap().1,
        http(addr, "GET", "/").unwrap().1,
        http(addr, "GET", "/api/v1/events").unwrap().1,
        trace.clone(),
        http(addr, "GET", "/api/v1/trace?check=im-session&pool=lync2013").unwrap().1,
    ];
    for pw in &passwords {
        assert!(pw.len() >= 16, "a lab password");
        for o in &outputs {
            assert!(!o.contains(pw.as_str()), "a password in an output");
        }
    }
    promtool_check(&m);
    Command::new("kill").args(["-INT", &demo.0.id().to_string()]).status().unwrap();
    let t = Instant::now();
    while demo.0.try_wait().unwrap().is_none() {
        assert!(t.elapsed() < Duration::from_secs(2), "demo did not stop on SIGINT within 2 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(demo.0.wait().unwrap().code(), Some(0));
}

#[test]
fn tls_metrics_show_the_real_certificate_and_pass_promtool() {
    use coexistd::lab::pki::{self, Ca, KeyKind, Leaf};
    use openssl::hash::MessageDigest;
    let dir = tempfile::tempdir().unwrap();
    let knot = Knot::start("contoso.test", &format!("{ZONE}ocs-fe1 A 127.0.0.1\n"));
    let ca = Ca::new("Contoso Test Root", KeyKind::Rsa2048, MessageDigest::sha1()).unwrap();
    let ca_file = pki::write_ca(dir.path(), "ca", &ca).unwrap();
    let leaf = ca
        .issue(&Leaf {
            cn: "ocs-fe1.contoso.test",
            sans: &["ocs-fe1.contoso.test"],
            digest: MessageDigest::sha1(),
            key: KeyKind::Rsa2048,
            to_days: 40,
            ..Leaf::default()
        })
        .unwrap();
    let (cert, key) = leaf.write(dir.path(), "leaf", &[]).unwrap();
    let s = common::SServer::start(
        dir.path(),
        &[
            "-cert",
            cert.to_str().unwrap(),
            "-key",
            key.to_str().unwrap(),
            "-tls1",
            "-cipher",
            "ALL:@SECLEVEL=0",
        ],
    );
    let text = config(&knot, 9, 9, &format!(
        "[[checks]]\nname = \"sip-tls\"\nkind = \"tls\"\npools = [\"ocs\"]\nhost = \"ocs-fe1.contoso.test\"\nport = {}\ntls_min_version = \"1.0\"\nmin_days_valid = 14\n",
        s.port
    ))
    .replace("[[pools]]\nname = \"ocs\"", &format!("[tls]\nca_file = \"{}\"\n[[pools]]\nname = \"ocs\"", ca_file.display()));
    let agent = Agent::start(&text);
    let m = agent.wait_metrics(Duration::from_secs(5), |m| {
        sample(m, "coexist_probe_success", &[("check", "sip-tls")]).is_some()
    });
    assert_eq!(sample(&m, "coexist_probe_success", &[("check", "sip-tls")]), Some(1.0), "{m}");
    assert_eq!(
        sample(&m, "coexist_tls_version_info", &[("check", "sip-tls"), ("version", "TLS 1.0")]),
        Some(1.0)
    );
    assert_eq!(
        sample(&m, "coexist_tls_cert_not_after_timestamp_seconds", &[("check", "sip-tls")]),
        Some(leaf.not_after_unix() as f64)
    );
    assert_eq!(
        sample(&m, "coexist_tls_chain_earliest_not_after_timestamp_seconds", &[("check", "sip-tls")]),
        Some(leaf.not_after_unix() as f64)
    );
    assert_eq!(
        sample(
            &m,
            "coexist_tls_cert_info",
            &[
                ("check", "sip-tls"),
                ("signature_algorithm", "sha1WithRSAEncryption"),
                ("subject", "CN=ocs-fe1.contoso.test")
            ]
        ),
        Some(1.0)
    );
    assert!(sample(&m, "coexist_probe_phase_seconds", &[("check", "sip-tls"), ("phase", "tls")]).is_some());
    promtool_check(&m);
    assert!(common::openmetrics(agent.listen).contains("coexist_tls_cert_info{"));
}

#[test]
fn each_address_fans_out_over_the_pool_members_as_dns_changes() {
    use common::{Kamailio, KamailioMode};
    let zone = "lyncpool A 127.0.41.1\nlyncpool A 127.0.41.2\nocspool A 127.0.31.2\n";
    let mut knot = Knot::start("contoso.test", zone);
    let port = common::free_port();
    let mut fe1 = Kamailio::start_at("127.0.41.1", port, KamailioMode::Ok, None);
    let _fe2 = Kamailio::start_at("127.0.41.2", port, KamailioMode::Ok, None);
    let extra = format!(
        "[[checks]]\nname = \"sip-udp\"\nkind = \"sip\"\ntransport = \"udp\"\nport = {port}\npools = [\"lync\"]\neach_address = true\n"
    );
    // Only the fan-out check counts for the pool: the tcp checks of `config` go to ocs.
    // Interval 2 s: every change below must show within two intervals (4 s, plus the
    // scrape polling).
    let text = config(&knot, 9, 9, &extra).replace("interval = \"1s\"", "interval = \"2s\"").replace(
        "pools = [\"lync\"]\n[[checks]]\nname = \"sip-port-ocs\"",
        "pools = [\"ocs\"]\n[[checks]]\nname = \"sip-port-ocs\"",
    );
    let agent = Agent::start(&text);
    let ok = |m: &str, ip: &str| sample(m, "coexist_probe_success", &[("check", "sip-udp"), ("address", ip)]);
    let m = agent.wait_metrics(Duration::from_secs(5), |m| {
        ok(m, "127.0.41.1").is_some() && ok(m, "127.0.41.2").is_some()
    });
    assert_eq!(ok(&m, "127.0.41.1"), Some(1.0), "{m}");
    assert_eq!(ok(&m, "127.0.41.2"), Some(1.0));
    assert_eq!(sample(&m, "coexist_pool_checks", &[("pool", "lync"), ("state", "passing")]), Some(2.0));
    assert_eq!(sample(&m, "coexist_pool_up", &[("pool", "lync")]), Some(1.0));
    promtool_check(&m);

    // One Front End stops: only its address fails, the pool is down.
    fe1.stop();
    let m = agent.wait_metrics(Duration::from_millis(4500), |m| ok(m, "127.0.41.1") == Some(0.0));
    assert_eq!(ok(&m, "127.0.41.2"), Some(1.0));
    assert_eq!(sample(&m, "coexist_pool_up", &[("pool", "lync")]), Some(0.0));

    // A third member appears in DNS (nothing listens there), then leaves.
    knot.set_records(&format!("{zone}lyncpool A 127.0.41.3\n"));
    let m = agent.wait_metrics(Duration::from_millis(4500), |m| ok(m, "127.0.41.3").is_some());
    assert_eq!(ok(&m, "127.0.41.3"), Some(0.0), "nothing listens on the new member");
    knot.set_records(zone);
    let m = agent.wait_metrics(Duration::from_millis(4500), |m| ok(m, "127.0.41.3").is_none());
    assert!(!m.contains("address=\"127.0.41.3\""), "the removed member's series are gone");
    assert_eq!(ok(&m, "127.0.41.2"), Some(1.0));
    let (_, body) = agent.get("/api/v1/status");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let rows: Vec<&serde_json::Value> =
        v["instances"].as_array().unwrap().iter().filter(|i| i["check"] == "sip-udp").collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["address"], "127.0.41.1");
}

#[test]
fn the_flags_follow_the_prometheus_exporter_conventions() {
    // --version as Prometheus' tools print it.
    let out = Command::new(env!("CARGO_BIN_EXE_coexistd")).arg("--version").output().unwrap();
    let v = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success());
    assert!(v.starts_with(&format!("coexistd, version {} (branch: ", env!("CARGO_PKG_VERSION"))), "{v}");
    assert!(v.contains(", revision: ") && v.contains("\n  rust version:"), "{v}");
    // --web.listen-address overrides agent.listen, --web.telemetry-path moves the
    // metrics, --config.file names the configuration, --log.level is accepted.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "[agent]\nlisten = \"127.0.0.1:1\"\n").unwrap();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], common::free_port()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_coexistd"))
        .args(["--log.level", "warn", "run", "--config.file"])
        .arg(&cfg)
        .args(["--web.listen-address", &addr.to_string(), "--web.telemetry-path", "/probe-metrics"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while http(addr, "GET", "/-/healthy").is_err() {
        assert!(Instant::now() < deadline, "the agent did not listen on --web.listen-address");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (code, m) = http(addr, "GET", "/probe-metrics").unwrap();
    assert_eq!(code, 200);
    let info = m.lines().find(|l| l.starts_with("coexist_build_info{")).unwrap_or_default();
    for label in ["version=", "revision=", "branch=", "rustversion="] {
        assert!(info.contains(label), "{info}");
    }
    assert_eq!(http(addr, "GET", "/metrics").unwrap().0, 404);
    let (_, page) = http(addr, "GET", "/").unwrap();
    assert!(page.contains("<a href=\"/probe-metrics\">metrics</a>"), "the page links to the metrics");
    let _ = child.kill();
    let _ = child.wait();
    // A telemetry path that would hide another endpoint is refused.
    let out = Command::new(env!("CARGO_BIN_EXE_coexistd"))
        .args(["run", "--config"])
        .arg(&cfg)
        .args(["--web.telemetry-path", "/-/ready"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    // A path the router would read as a parameter, a wildcard or a query: refused too.
    for odd in ["/:m", "/*x", "/m?x", "/m%20"] {
        let out = Command::new(env!("CARGO_BIN_EXE_coexistd"))
            .args(["run", "--config"])
            .arg(&cfg)
            .args(["--web.telemetry-path", odd])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{odd}: {}", String::from_utf8_lossy(&out.stderr));
    }
}
