//! `coexistd check --trace` and `/api/v1/trace` against real peers: Knot DNS and a TLS
//! Kamailio. The trace shows the DNS questions and answers, the connect, the TLS
//! handshake with the chain as received and the verdict, the SIP request and response
//! as sent and received, in time order; the running agent's endpoint shows the same
//! steps.

use crate::common;

use std::process::Command;

use coexistd::lab::pki::{self, Ca, KeyKind, Leaf};
use common::{http_with, Agent, Kamailio, KamailioMode, KamailioTls, Knot};
use openssl::hash::MessageDigest;

const ZONE: &str = "sip A 127.0.0.1\n";

struct Setup {
    _dir: tempfile::TempDir,
    _knot: Knot,
    _kamailio: Kamailio,
    config: String,
    refused_port: u16,
    tls_port: u16,
}

fn setup() -> Setup {
    let knot = Knot::start("contoso.test", ZONE);
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("Contoso Trace Root", KeyKind::Rsa2048, MessageDigest::sha256()).unwrap();
    let ca_file = pki::write_ca(dir.path(), "ca", &ca).unwrap();
    let name = "sip.contoso.test";
    let (cert, key) = ca
        .issue(&Leaf { cn: name, sans: &[name], ..Leaf::default() })
        .unwrap()
        .write(dir.path(), "sip", &[])
        .unwrap();
    let kamailio = Kamailio::start(
        KamailioMode::Ok,
        Some(KamailioTls {
            cert: &cert,
            key: &key,
            ca: &ca_file,
            method: "TLSv1.2+",
            require_client_cert: false,
        }),
    );
    let refused_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = format!(
        r#"[agent]
listen = "{{listen}}"
interval = "30s"
timeout = "3s"
[dns]
servers = ["{dns}"]
[tls]
ca_file = "{ca}"
[[pools]]
name = "lync2013"
role = "new"
fqdn = "sip.contoso.test"
[[checks]]
name = "sip-tls"
kind = "sip"
transport = "tls"
port = {tls_port}
[[checks]]
name = "closed"
kind = "tcp"
port = {refused_port}
"#,
        dns = knot.addr,
        ca = ca_file.display(),
        tls_port = kamailio.tls_port,
    );
    let tls_port = kamailio.tls_port;
    Setup { _dir: dir, _knot: knot, _kamailio: kamailio, config, refused_port, tls_port }
}

fn check_trace(config: &str, args: &[&str]) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("coexistd.toml");
    std::fs::write(&path, config.replace("{listen}", "127.0.0.1:1")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_coexistd"))
        .args(["check", "--config"])
        .arg(&path)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// Asserts the `needles` appear in `text` in this order.
fn in_order(text: &str, needles: &[&str]) {
    let mut at = 0;
    for n in needles {
        match text[at..].find(n) {
            Some(i) => at += i + n.len(),
            None => panic!("{n:?} missing (or out of order) after byte {at} of:\n{text}"),
        }
    }
}

/// The step kinds of a JSON trace list, in order.
fn kinds(json: &serde_json::Value) -> Vec<String> {
    json[0]["steps"].as_array().unwrap().iter().map(|s| s["step"].as_str().unwrap().to_owned()).collect()
}

#[test]
fn a_trace_shows_every_step_of_a_sip_probe_over_tls_from_the_cli_and_the_agent() {
    let s = setup();
    let (code, out, err) = check_trace(&s.config, &["--trace", "sip-tls"]);
    assert_eq!(code, 0, "{out}{err}");
    in_order(
        &out,
        &[
            "== trace: check sip-tls (sip) pool lync2013 target sip.contoso.test:",
            "dns       question sip.contoso.test. A IN",
            "answer from ",
            "sip.contoso.test. 60 A 127.0.0.1",
            "resolve   sip.contoso.test -> [127.0.0.1]",
            &format!("connect   TCP 127.0.0.1:{}: connected", s.tls_port),
            "tls       handshake with SNI sip.contoso.test (rustls engine",
            "TLS 1.3 TLS13_",
            "verification passed",
            // Kamailio sends its CA after the leaf: the chain as received, both.
            "chain as received: 2 certificates",
            "[0] subject CN=sip.contoso.test",
            "issuer CN=Contoso Trace Root",
            "[1] subject CN=Contoso Trace Root",
            "sip       sent (",
            "OPTIONS sip:sip.contoso.test:",
            "CSeq: 1 OPTIONS",
            "sip       received (",
            "SIP/2.0 200 OK",
            "Server: kamailio-test",
            "result: PASS",
            "round took",
        ],
    );
    // Timings grow down the page.
    let times: Vec<f64> = out
        .lines()
        .filter_map(|l| l.trim_start().split(" ms ").next().and_then(|t| t.trim().parse().ok()))
        .collect();
    assert!(times.len() >= 8, "{out}");
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");

    // The same steps from the running agent's endpoint.
    let (code, json, _) = check_trace(&s.config, &["--trace", "sip-tls", "--format", "json"]);
    assert_eq!(code, 0);
    let cli: serde_json::Value = serde_json::from_str(&json).unwrap();
    let agent = Agent::start(&s.config);
    let (code, body) = agent.get("/api/v1/trace?check=sip-tls&pool=lync2013&format=json");
    assert_eq!(code, 200, "{body}");
    let served: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(kinds(&served), kinds(&cli));
    assert_eq!(kinds(&cli), ["dns", "dns", "dns", "dns", "resolve", "connect", "tls", "tls", "sip", "sip"]);
    assert_eq!(served[0]["results"][0]["success"], true);
    let (code, text) = agent.get("/api/v1/trace?check=sip-tls");
    assert_eq!(code, 200);
    in_order(&text, &["dns       question", "tls       handshake", "SIP/2.0 200 OK", "result: PASS"]);

    // Refusals: an unknown check, a bad query, another origin.
    assert_eq!(agent.get("/api/v1/trace?check=nope").0, 404);
    assert_eq!(agent.get("/api/v1/trace?check=sip-tls&pool=ocs").0, 404);
    assert_eq!(agent.get("/api/v1/trace").0, 400);
    assert_eq!(agent.get("/api/v1/trace?check=sip-tls&format=xml").0, 400);
    let (code, _) = http_with(
        agent.listen,
        "GET",
        "/api/v1/trace?check=sip-tls",
        &[("Origin", "http://evil.example"), ("Sec-Fetch-Site", "cross-site")],
    )
    .unwrap();
    assert_eq!(code, 403);
}

#[test]
fn a_failing_probe_traces_to_its_reason_and_check_exits_1() {
    let s = setup();
    let (code, out, _) = check_trace(&s.config, &["--trace", "closed", "--pool", "lync2013"]);
    assert_eq!(code, 1, "{out}");
    in_order(
        &out,
        &[
            "resolve   sip.contoso.test -> [127.0.0.1]",
            &format!("connect   TCP 127.0.0.1:{}: Connection refused", s.refused_port),
            "result: FAIL refused: connect 127.0.0.1:",
        ],
    );
    let (code, _, err) = check_trace(&s.config, &["--trace", "nope"]);
    assert_eq!(code, 2);
    assert!(err.contains("no such check") && err.contains("closed, sip-tls"), "{err}");
}
