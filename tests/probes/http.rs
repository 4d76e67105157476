//! http probes against a real HTTPS server (Python's http.server over TLS) with a
//! certificate from a test CA: 200 with the expected body, 404, the wrong body.

use crate::common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use coexistd::agent::probe_context;
use coexistd::config::Config;
use coexistd::kinds::{FailureReason, Outcome, Phase};
use coexistd::lab::dns_server::{a, DnsServer};
use coexistd::lab::pki::{self, Ca, KeyKind, Leaf};
use coexistd::run::scheduler::{run_once, LiveProber};
use openssl::hash::MessageDigest;

const NAME: &str = "lyncdiscoverinternal.contoso.test";

struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Lab {
    _dir: tempfile::TempDir,
    dns: DnsServer,
    ca_file: std::path::PathBuf,
    server: Server,
}

async fn lab() -> Lab {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("Contoso Test Root", KeyKind::P256, MessageDigest::sha256()).unwrap();
    let ca_file = pki::write_ca(dir.path(), "ca", &ca).unwrap();
    let leaf = ca.issue(&Leaf { cn: NAME, sans: &[NAME], ..Leaf::default() }).unwrap();
    let (cert, key) = leaf.write(dir.path(), "leaf", &[]).unwrap();
    let root = dir.path().join("www");
    std::fs::create_dir_all(root.join("autodiscover")).unwrap();
    std::fs::write(
        root.join("autodiscover/autodiscoverservice.svc"),
        r#"{"_links":{"self":{"href":"https://lyncpool.contoso.test/Autodiscover/AutodiscoverService.svc/root"}}}"#,
    )
    .unwrap();
    let port = common::free_port();
    let python = common::require("python3", "python3");
    let mut child = Command::new(python)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/https_server.py"))
        .arg(port.to_string())
        .arg(&cert)
        .arg(&key)
        .arg(&root)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "READY");
    let dns = DnsServer::start("127.0.0.1:0".parse().unwrap(), vec![a(NAME, "127.0.0.1")]).await.unwrap();
    Lab { _dir: dir, dns, ca_file, server: Server { child, port } }
}

impl Lab {
    async fn probe(&self, check: &str) -> (Outcome, String) {
        let text = format!(
            "[agent]\ntimeout = \"3s\"\n[dns]\nservers = [\"{}\"]\n[tls]\nca_file = \"{}\"\n\
             [[checks]]\nname = \"h\"\nkind = \"http\"\npools = []\n{}\n",
            self.dns.addr,
            self.ca_file.display(),
            check.replace("PORT", &self.server.port.to_string())
        );
        let config = Config::parse(&text, "t").unwrap();
        let prober = LiveProber(Arc::new(probe_context(&config).unwrap()));
        let target = config.instances[0].target.clone();
        (run_once(&prober, &config.instances[0]).await.0, target)
    }
}

const URL: &str =
    "url = \"https://lyncdiscoverinternal.contoso.test:PORT/autodiscover/autodiscoverservice.svc\"";

#[tokio::test]
async fn autodiscover_answers_200_with_the_expected_body() {
    let lab = lab().await;
    let (o, target) = lab.probe(&format!("{URL}\nbody_contains = \"AutodiscoverService.svc/root\"")).await;
    assert_eq!(o.result, Ok(()), "{o:?}");
    assert_eq!(target, format!("https://{NAME}:{}/autodiscover/autodiscoverservice.svc", lab.server.port));
    let phases: Vec<Phase> = o.phases.iter().map(|p| p.0).collect();
    assert_eq!(phases, [Phase::Resolve, Phase::Connect, Phase::Tls, Phase::Request]);
    assert_eq!(o.tls.as_ref().unwrap().version, Some(coexistd::net::tls::TlsVersion::V1_3));
}

#[tokio::test]
async fn a_missing_page_is_http_status_unless_expected() {
    let lab = lab().await;
    let (o, _) = lab.probe(&format!("host = \"{NAME}\"\nport = PORT\npath = \"/meet/nothing-here\"")).await;
    let f = o.result.unwrap_err();
    assert_eq!(f.reason, FailureReason::HttpStatus);
    assert_eq!(f.detail, "GET /meet/nothing-here answered 404, expected 2xx");
    let (o, _) = lab
        .probe(&format!(
            "host = \"{NAME}\"\nport = PORT\npath = \"/meet/nothing-here\"\nexpect_status = [404]"
        ))
        .await;
    assert_eq!(o.result, Ok(()));
}

#[tokio::test]
async fn an_administration_url_must_ask_for_the_expected_schemes() {
    let lab = lab().await;
    let check = |path: &str| {
        format!(
            "host = \"{NAME}\"\nport = PORT\npath = \"{path}\"\nexpect_status = [401]\nexpect_auth = [\"Negotiate\", \"NTLM\"]"
        )
    };
    let (o, _) = lab.probe(&check("/OcsPowershell")).await;
    assert_eq!(o.result, Ok(()), "{o:?}");
    let (o, _) = lab.probe(&check("/basic")).await;
    let f = o.result.unwrap_err();
    assert_eq!(f.reason, FailureReason::HttpAuth, "{f:?}");
    assert_eq!(f.detail, "GET /basic answered 401 offering Basic, not Negotiate, NTLM");
}

#[tokio::test]
async fn the_wrong_body_is_http_body() {
    let lab = lab().await;
    let (o, _) = lab.probe(&format!("{URL}\nbody_contains = \"lync2010pool\"")).await;
    let f = o.result.unwrap_err();
    assert_eq!(f.reason, FailureReason::HttpBody, "{f:?}");
    assert!(f.detail.contains("does not contain \"lync2010pool\""), "{}", f.detail);
}

#[tokio::test]
async fn an_http_check_reports_tls_failures_with_their_reason() {
    let lab = lab().await;
    // The server's certificate is for NAME; asking for the address by IP fails the name check.
    let (o, _) = lab.probe("url = \"https://127.0.0.1:PORT/\"").await;
    assert_eq!(o.reason(), Some(FailureReason::CertNameMismatch), "{o:?}");
}
