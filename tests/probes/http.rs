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
    lab_with(None).await
}

/// The lab with the NTLM sign-in server (pyspnego's acceptor) and the Windows accounts
/// `accounts` (`DOMAIN:USER:PASSWORD` lines) instead of the file server.
async fn lab_with(accounts: Option<&str>) -> Lab {
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
    let mut command = match accounts {
        None => {
            let mut c = Command::new(common::require("python3", "python3"));
            c.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/https_server.py"));
            c
        }
        Some(_) => {
            let venv = concat!(env!("CARGO_MANIFEST_DIR"), "/target/pyspnego-venv/bin/python");
            assert!(std::path::Path::new(venv).exists(), "{venv} is missing: scripts/test.sh creates it");
            let mut c = Command::new(venv);
            c.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/ntlm_https_server.py"));
            c
        }
    };
    let users = dir.path().join("ntlm-users");
    std::fs::write(&users, accounts.unwrap_or("")).unwrap();
    let mut child = command
        .arg(port.to_string())
        .arg(&cert)
        .arg(&key)
        .arg(if accounts.is_some() { users.as_os_str() } else { root.as_os_str() })
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
async fn an_administrator_signs_in_with_ntlm_and_a_wrong_password_is_refused() {
    let lab = lab_with(Some("CONTOSO:cpadmin:Admin-Secret-8f2a\n")).await;
    for (password, want) in
        [("Admin-Secret-8f2a", None), ("not-the-password", Some(FailureReason::AuthFailed))]
    {
        let pw = lab._dir.path().join("cpadmin.pass");
        std::fs::write(&pw, password).unwrap();
        std::fs::set_permissions(&pw, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        let check = format!(
            "host = \"{NAME}\"\nport = PORT\npath = \"/Cscp\"\nsign_in_as = \"cpadmin\"\nbody_contains = \"signed in as\"\n\
             interval = \"10m\"\n\
             [[users]]\nname = \"cpadmin\"\nuri = \"sip:cpadmin@contoso.test\"\npool = \"p\"\nauth = \"ntlm\"\n\
             username = \"CONTOSO\\\\cpadmin\"\npassword_file = \"{}\"\n[[pools]]\nname = \"p\"\nrole = \"new\"\nfqdn = \"{NAME}\"\n",
            pw.display()
        );
        let (o, _) = lab.probe(&check).await;
        assert_eq!(o.reason(), want, "{password}: {:?}", o.result);
        if let Err(f) = &o.result {
            assert!(f.detail.contains("cpadmin's Windows credentials refused"), "{}", f.detail);
        }
    }
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
