//! sip probes against a real Kamailio (UDP, TCP, TLS; 200, 403, slow, silent; a TLS
//! 1.0-only server through the legacy engine; a client certificate required).

use crate::common;

use std::path::PathBuf;
use std::sync::Arc;

use coexistd::agent::probe_context;
use coexistd::config::Config;
use coexistd::kinds::{FailureReason, Outcome, Phase};
use coexistd::lab::dns_server::{a, DnsServer};
use coexistd::lab::pki::{self, Ca, KeyKind, Leaf};
use coexistd::run::scheduler::{run_once, LiveProber};
use common::{Kamailio, KamailioMode, KamailioTls};
use openssl::hash::MessageDigest;

const NAME: &str = "sip.contoso.test";

struct Lab {
    dir: tempfile::TempDir,
    dns: DnsServer,
    ca: Ca,
    ca_file: PathBuf,
}

async fn lab() -> Lab {
    let dir = tempfile::tempdir().unwrap();
    let dns = DnsServer::start("127.0.0.1:0".parse().unwrap(), vec![a(NAME, "127.0.0.1")]).await.unwrap();
    let ca = Ca::new("Contoso SIP Root", KeyKind::Rsa2048, MessageDigest::sha256()).unwrap();
    let ca_file = pki::write_ca(dir.path(), "ca", &ca).unwrap();
    Lab { dir, dns, ca, ca_file }
}

impl Lab {
    async fn probe(&self, check: &str, tls: &str, timeout: &str) -> Outcome {
        let text = format!(
            "[agent]\ntimeout = \"{timeout}\"\ninterval = \"10s\"\n[dns]\nservers = [\"{}\"]\n[tls]\nca_file = \"{}\"\n{tls}\n\
             [[checks]]\nname = \"s\"\nkind = \"sip\"\npools = []\nhost = \"{NAME}\"\n{check}\n",
            self.dns.addr,
            self.ca_file.display()
        );
        common::probe_once(&text).await
    }

    fn server_cert(&self, legacy: bool) -> (PathBuf, PathBuf) {
        let leaf = if legacy {
            Leaf {
                cn: NAME,
                sans: &[NAME],
                digest: MessageDigest::sha1(),
                key: KeyKind::Rsa2048,
                ..Leaf::default()
            }
        } else {
            Leaf { cn: NAME, sans: &[NAME], ..Leaf::default() }
        };
        self.ca
            .issue(&leaf)
            .unwrap()
            .write(self.dir.path(), if legacy { "legacy" } else { "server" }, &[])
            .unwrap()
    }

    fn client_tls(&self) -> String {
        common::client_identity_toml(&self.ca, self.dir.path())
    }

    /// A Kamailio serving this lab's certificate over TLS (`method`), as `mode`.
    fn kamailio(&self, mode: KamailioMode, legacy: bool, require_client_cert: bool) -> Kamailio {
        let (cert, key) = self.server_cert(legacy);
        let method = if legacy { "TLSv1" } else { "TLSv1.2+" };
        Kamailio::start(
            mode,
            Some(KamailioTls { cert: &cert, key: &key, ca: &self.ca_file, method, require_client_cert }),
        )
    }
}

#[tokio::test]
async fn kamailio_answers_200_over_udp_tcp_and_tls() {
    let lab = lab().await;
    let k = lab.kamailio(KamailioMode::Ok, false, false);
    for (transport, port) in [("udp", k.port), ("tcp", k.port), ("tls", k.tls_port)] {
        let o = lab.probe(&format!("transport = \"{transport}\"\nport = {port}"), "", "2s").await;
        assert_eq!(o.result, Ok(()), "{transport}: {o:?}");
        assert_eq!(o.value(&coexistd::ua::SIP_STATUS), Some(200.0), "{transport}");
        assert_eq!(
            o.measured_of(&coexistd::ua::SIP_SERVER).and_then(|m| m.label.as_deref()),
            Some("kamailio-test (Ok)"),
            "{transport}"
        );
        assert!(o.phases.iter().any(|p| p.0 == Phase::Request), "{transport}");
        if transport == "tls" {
            assert!(o.phases.iter().any(|p| p.0 == Phase::Tls));
            assert!(o.tls.is_some());
        }
    }
}

#[tokio::test]
async fn a_403_fails_by_default_and_passes_when_expected() {
    let lab = lab().await;
    let k = Kamailio::start(KamailioMode::Forbidden, None);
    for transport in ["udp", "tcp"] {
        let o = lab.probe(&format!("transport = \"{transport}\"\nport = {}", k.port), "", "2s").await;
        let f = o.result.as_ref().unwrap_err();
        assert_eq!(f.reason, FailureReason::SipStatus, "{transport}: {o:?}");
        assert_eq!(f.detail, "answered 403 Forbidden, expected 2xx");
        assert_eq!(o.value(&coexistd::ua::SIP_STATUS), Some(403.0));
        let o = lab
            .probe(
                &format!("transport = \"{transport}\"\nport = {}\nexpect_status = [200, 403]", k.port),
                "",
                "2s",
            )
            .await;
        assert_eq!(o.result, Ok(()), "{transport}");
    }
}

#[tokio::test]
async fn slower_than_the_timeout_and_silent_servers_time_out() {
    let lab = lab().await;
    for mode in [KamailioMode::Slow, KamailioMode::Drop] {
        let k = Kamailio::start(mode, None);
        for transport in ["udp", "tcp"] {
            let t = std::time::Instant::now();
            let o = lab.probe(&format!("transport = \"{transport}\"\nport = {}", k.port), "", "1500ms").await;
            assert_eq!(o.reason(), Some(FailureReason::Timeout), "{mode:?} {transport}: {o:?}");
            assert!(t.elapsed() < std::time::Duration::from_millis(3000), "{:?}", t.elapsed());
        }
    }
}

#[tokio::test]
async fn a_tls_1_0_only_kamailio_is_reached_through_the_legacy_engine() {
    let lab = lab().await;
    let k = lab.kamailio(KamailioMode::Ok, true, false);
    let check = format!("transport = \"tls\"\nport = {}", k.tls_port);
    let o = lab.probe(&format!("{check}\ntls_min_version = \"1.0\""), "", "2s").await;
    assert_eq!(o.result, Ok(()), "{o:?}\nkamailio: {}", k.log());
    let info = o.tls.as_ref().unwrap();
    assert_eq!(info.version, Some(coexistd::net::tls::TlsVersion::V1_0));
    assert_eq!(info.leaf().unwrap().signature_algorithm, "sha1WithRSAEncryption");
    let o = lab.probe(&check, "", "2s").await;
    assert_eq!(o.reason(), Some(FailureReason::TlsVersion), "{o:?}");
}

#[tokio::test]
async fn a_kamailio_requiring_a_client_certificate() {
    let lab = lab().await;
    let k = lab.kamailio(KamailioMode::Ok, false, true);
    let check = format!("transport = \"tls\"\nport = {}", k.tls_port);
    let o = lab.probe(&check, "", "2s").await;
    assert_eq!(o.reason(), Some(FailureReason::TlsHandshake), "without a client certificate: {o:?}");
    let o = lab.probe(&check, &lab.client_tls(), "2s").await;
    assert_eq!(o.result, Ok(()), "{o:?}");
}

#[tokio::test]
async fn sip_discovery_follows_the_sign_in_srv_record_to_a_pool() {
    use common::Knot;
    let lab = lab().await;
    let leaf = lab
        .ca
        .issue(&Leaf { cn: "lyncpool.contoso.test", sans: &["lyncpool.contoso.test"], ..Leaf::default() })
        .unwrap();
    let (cert, key) = leaf.write(lab.dir.path(), "lyncpool", &[]).unwrap();
    let k = Kamailio::start(
        KamailioMode::Ok,
        Some(KamailioTls {
            cert: &cert,
            key: &key,
            ca: &lab.ca_file,
            method: "TLSv1.2+",
            require_client_cert: false,
        }),
    );
    let zone = format!(
        "lyncpool A 127.0.0.1\nocspool A 127.0.0.1\n_sipinternaltls._tcp SRV 0 0 {} lyncpool\n",
        k.tls_port
    );
    let mut knot = Knot::start("contoso.test", &zone);
    let dns = knot.addr;
    let probe = |expect: &'static str| {
        let text = format!(
            "[agent]\ntimeout = \"3s\"\n[dns]\nservers = [\"{}\"]\n[tls]\nca_file = \"{}\"\n\
             [[pools]]\nname = \"ocs\"\nrole = \"legacy\"\nfqdn = \"ocspool.contoso.test\"\n\
             [[pools]]\nname = \"lync\"\nrole = \"new\"\nfqdn = \"lyncpool.contoso.test\"\n\
             [[checks]]\nname = \"signin\"\nkind = \"sip_discovery\"\npools = []\nrecord = \"_sipinternaltls._tcp.contoso.test\"\n{expect}\n",
            dns,
            lab.ca_file.display()
        );
        async move {
            let config = Config::parse(&text, "t").unwrap();
            let prober = LiveProber(Arc::new(probe_context(&config).unwrap()));
            run_once(&prober, &config.instances[0]).await.0
        }
    };
    let o = probe("expect_pool = \"lync\"").await;
    assert_eq!(o.result, Ok(()), "{o:?}");
    assert_eq!(o.points_to.as_deref(), Some("lync"));
    assert_eq!(o.value(&coexistd::ua::SIP_STATUS), Some(200.0));
    assert_eq!(o.tls.as_ref().unwrap().leaf().unwrap().subject, "CN=lyncpool.contoso.test");
    let phases: Vec<Phase> = o.phases.iter().map(|p| p.0).collect();
    assert_eq!(phases, [Phase::Resolve, Phase::Connect, Phase::Tls, Phase::Request]);

    // The record moves to the legacy pool.
    knot.set_records(&zone.replace(" lyncpool\n", " ocspool\n"));
    let o = probe("expect_pool = \"lync\"").await;
    assert_eq!(o.reason(), Some(FailureReason::DnsWrongPool), "{o:?}");
    assert_eq!(o.points_to.as_deref(), Some("ocs"));
    // Without expect_pool the client's path is followed: the certificate does not cover
    // the host the record now names.
    let o = probe("").await;
    assert_eq!(o.reason(), Some(FailureReason::CertNameMismatch), "{o:?}");
    assert_eq!(o.points_to.as_deref(), Some("ocs"));
}
