//! tls probes against `openssl s_server` with certificates made by the test: a valid
//! chain, expired, not yet valid, expiring, wrong name, self-signed, a TLS 1.0-only
//! server with a SHA-1 certificate (both engines), and client certificates.

use crate::common;

use coexistd::agent::probe_context;
use coexistd::config::Config;
use coexistd::kinds::{FailureReason, Outcome, Phase};
use coexistd::lab::dns_server::{a, DnsServer};
use coexistd::lab::pki::{self, Ca, KeyKind, Leaf};
use common::SServer;
use openssl::hash::MessageDigest;

const NAME: &str = "pool.contoso.test";

struct Lab {
    dir: tempfile::TempDir,
    dns: DnsServer,
    ca: Ca,
    ca_file: std::path::PathBuf,
}

async fn lab() -> Lab {
    let dir = tempfile::tempdir().unwrap();
    let dns = DnsServer::start(
        "127.0.0.1:0".parse().unwrap(),
        vec![a(NAME, "127.0.0.1"), a("other.contoso.test", "127.0.0.1")],
    )
    .await
    .unwrap();
    let ca = Ca::new("Contoso Test Root", KeyKind::P256, MessageDigest::sha256()).unwrap();
    let ca_file = pki::write_ca(dir.path(), "ca", &ca).unwrap();
    Lab { dir, dns, ca, ca_file }
}

impl Lab {
    /// Serves `leaf` with s_server and `extra` arguments.
    fn serve(&self, leaf: &pki::Issued, extra: &[&str]) -> SServer {
        let (cert, key) = leaf.write(self.dir.path(), "leaf", &[]).unwrap();
        let mut args = vec!["-cert", cert.to_str().unwrap(), "-key", key.to_str().unwrap()];
        args.extend_from_slice(extra);
        SServer::start(self.dir.path(), &args)
    }

    /// Runs one tls check against `port` with extra check keys and `[tls]` keys.
    async fn probe(&self, port: u16, check: &str, tls: &str) -> Outcome {
        let text = format!(
            "[agent]\ntimeout = \"3s\"\n[dns]\nservers = [\"{}\"]\n[tls]\nca_file = \"{}\"\n{tls}\n\
             [[checks]]\nname = \"t\"\nkind = \"tls\"\npools = []\nhost = \"{NAME}\"\nport = {port}\n{check}\n",
            self.dns.addr,
            self.ca_file.display()
        );
        common::probe_once(&text).await
    }
}

fn leaf<'a>(sans: &'a [&'a str]) -> Leaf<'a> {
    Leaf { cn: sans[0], sans, ..Leaf::default() }
}

#[tokio::test]
async fn a_valid_chain_passes_over_tls_1_3_and_reports_the_real_not_after() {
    let lab = lab().await;
    let l = lab.ca.issue(&leaf(&[NAME])).unwrap();
    let s = lab.serve(&l, &[]);
    let o = lab.probe(s.port, "", "").await;
    assert_eq!(o.result, Ok(()), "{o:?}");
    let info = o.tls.as_ref().unwrap();
    assert_eq!(info.version, Some(coexistd::net::tls::TlsVersion::V1_3));
    let c = info.leaf().unwrap();
    assert_eq!(c.not_after, l.not_after_unix());
    assert_eq!(info.earliest_not_after(), Some(l.not_after_unix()));
    assert_eq!(c.subject, format!("CN={NAME}"));
    assert_eq!(c.issuer, "CN=Contoso Test Root,O=Contoso Test");
    assert_eq!(c.sans, NAME);
    assert_eq!(c.signature_algorithm, "ecdsa-with-SHA256");
    assert_eq!(c.fingerprint_sha256.len(), 64);
    let phases: Vec<Phase> = o.phases.iter().map(|p| p.0).collect();
    assert_eq!(phases, [Phase::Resolve, Phase::Connect, Phase::Tls]);
}

#[tokio::test]
async fn expired_not_yet_valid_wrong_name_and_self_signed_are_told_apart() {
    let lab = lab().await;
    let cases: Vec<(pki::Issued, FailureReason)> = vec![
        (
            lab.ca.issue(&Leaf { from_days: -30, to_days: -1, ..leaf(&[NAME]) }).unwrap(),
            FailureReason::CertExpired,
        ),
        (
            lab.ca.issue(&Leaf { from_days: 2, to_days: 30, ..leaf(&[NAME]) }).unwrap(),
            FailureReason::CertNotYetValid,
        ),
        (lab.ca.issue(&leaf(&["other.contoso.test"])).unwrap(), FailureReason::CertNameMismatch),
        (pki::self_signed(&leaf(&[NAME])).unwrap(), FailureReason::CertUntrusted),
    ];
    for (cert, want) in cases {
        let s = lab.serve(&cert, &[]);
        let o = lab.probe(s.port, "", "").await;
        assert_eq!(o.reason(), Some(want), "{o:?}");
        // The chain was recorded before verification failed.
        let seen =
            o.tls.as_ref().and_then(|t| t.leaf().cloned()).expect("chain recorded despite the failure");
        assert_eq!(seen.not_after, cert.not_after_unix());
    }
}

#[tokio::test]
async fn a_certificate_expiring_in_6_days_fails_min_days_valid_14_only() {
    let lab = lab().await;
    let l = lab.ca.issue(&Leaf { to_days: 6, ..leaf(&[NAME]) }).unwrap();
    let s = lab.serve(&l, &[]);
    let o = lab.probe(s.port, "min_days_valid = 14", "").await;
    assert_eq!(o.reason(), Some(FailureReason::CertExpiring), "{o:?}");
    assert!(o.result.as_ref().unwrap_err().detail.contains("expires in 6.0 days"), "{o:?}");
    let o = lab.probe(s.port, "min_days_valid = 5", "").await;
    assert_eq!(o.result, Ok(()));
}

#[tokio::test]
async fn a_tls_1_0_only_server_with_a_sha1_certificate_needs_the_legacy_engine() {
    let lab = lab().await;
    let ca = Ca::new("Contoso Legacy Root", KeyKind::Rsa2048, MessageDigest::sha1()).unwrap();
    let ca_file = pki::write_ca(lab.dir.path(), "legacy-ca", &ca).unwrap();
    let l =
        ca.issue(&Leaf { digest: MessageDigest::sha1(), key: KeyKind::Rsa2048, ..leaf(&[NAME]) }).unwrap();
    // Debian's OpenSSL refuses TLS 1.0 and SHA-1 by default: the server needs level 0 too.
    let s = lab.serve(&l, &["-tls1", "-cipher", "ALL:@SECLEVEL=0"]);
    let lab = Lab { ca_file, ..lab };

    let o = lab.probe(s.port, "tls_min_version = \"1.0\"", "").await;
    assert_eq!(o.result, Ok(()), "{o:?}");
    let info = o.tls.as_ref().unwrap();
    assert_eq!(info.version, Some(coexistd::net::tls::TlsVersion::V1_0));
    assert_eq!(info.leaf().unwrap().signature_algorithm, "sha1WithRSAEncryption");
    assert_eq!(info.leaf().unwrap().not_after, l.not_after_unix());

    let o = lab.probe(s.port, "", "").await;
    assert_eq!(o.reason(), Some(FailureReason::TlsVersion), "{o:?}");

    // forbid_sha1: the same server fails, a SHA-256 leaf of a SHA-1 root passes (the
    // leaf's own signature is what a renewal changes).
    let o = lab.probe(s.port, "tls_min_version = \"1.0\"\nforbid_sha1 = true", "").await;
    assert_eq!(o.reason(), Some(FailureReason::CertWeakSignature), "{o:?}");
    assert!(o.result.as_ref().is_err_and(|f| f.detail.contains("sha1WithRSAEncryption")), "{o:?}");
    drop(s);
    let renewed =
        ca.issue(&Leaf { digest: MessageDigest::sha256(), key: KeyKind::Rsa2048, ..leaf(&[NAME]) }).unwrap();
    let s = lab.serve(&renewed, &["-tls1", "-cipher", "ALL:@SECLEVEL=0"]);
    let o = lab.probe(s.port, "tls_min_version = \"1.0\"\nforbid_sha1 = true", "").await;
    assert_eq!(o.result, Ok(()), "{o:?}");
}

#[tokio::test]
async fn the_legacy_engine_still_verifies_chain_name_and_dates() {
    let lab = lab().await;
    let legacy = ["-tls1", "-cipher", "ALL:@SECLEVEL=0"];
    let sha1 = |l: Leaf<'static>| Leaf { digest: MessageDigest::sha1(), key: KeyKind::Rsa2048, ..l };
    let cases: Vec<(pki::Issued, FailureReason)> = vec![
        (
            lab.ca.issue(&sha1(Leaf { from_days: -30, to_days: -1, ..leaf(&[NAME]) })).unwrap(),
            FailureReason::CertExpired,
        ),
        (lab.ca.issue(&sha1(leaf(&["other.contoso.test"]))).unwrap(), FailureReason::CertNameMismatch),
        (pki::self_signed(&sha1(leaf(&[NAME]))).unwrap(), FailureReason::CertUntrusted),
    ];
    for (cert, want) in cases {
        let s = lab.serve(&cert, &legacy);
        let o = lab.probe(s.port, "tls_min_version = \"1.0\"", "").await;
        assert_eq!(o.reason(), Some(want), "{o:?}");
        assert_eq!(o.tls.as_ref().unwrap().leaf().unwrap().not_after, cert.not_after_unix());
    }
    // tls_skip_verify: the same untrusted certificate passes and is still reported.
    let cert = pki::self_signed(&sha1(leaf(&[NAME]))).unwrap();
    let s = lab.serve(&cert, &legacy);
    let o = lab.probe(s.port, "tls_min_version = \"1.0\"\ntls_skip_verify = true", "").await;
    assert_eq!(o.result, Ok(()), "{o:?}");
    assert_eq!(o.tls.as_ref().unwrap().leaf().unwrap().not_after, cert.not_after_unix());
}

fn client_identity(lab: &Lab) -> String {
    common::client_identity_toml(&lab.ca, lab.dir.path())
}

#[tokio::test]
async fn a_server_requiring_a_client_certificate_over_tls_1_3() {
    let lab = lab().await;
    let l = lab.ca.issue(&leaf(&[NAME])).unwrap();
    let ca = lab.ca_file.to_str().unwrap().to_owned();
    let s = lab.serve(&l, &["-Verify", "1", "-CAfile", &ca, "-tls1_3"]);
    // Without one: TLS 1.3 reports it after the handshake; the probe must notice.
    let o = lab.probe(s.port, "", "").await;
    assert_eq!(o.reason(), Some(FailureReason::TlsHandshake), "{o:?}");
    // With one.
    let o = lab.probe(s.port, "", &client_identity(&lab)).await;
    assert_eq!(o.result, Ok(()), "{o:?}");
}

#[tokio::test]
async fn a_server_requiring_a_client_certificate_over_tls_1_2_and_1_0() {
    let lab = lab().await;
    let l = lab.ca.issue(&Leaf { key: KeyKind::Rsa2048, ..leaf(&[NAME]) }).unwrap();
    let ca = lab.ca_file.to_str().unwrap().to_owned();
    for (server, check) in
        [(vec!["-tls1_2"], ""), (vec!["-tls1", "-cipher", "ALL:@SECLEVEL=0"], "tls_min_version = \"1.0\"")]
    {
        let mut args = vec!["-Verify", "1", "-CAfile", ca.as_str()];
        args.extend(server.iter().copied());
        let s = lab.serve(&l, &args);
        let o = lab.probe(s.port, check, "").await;
        assert_eq!(o.reason(), Some(FailureReason::TlsHandshake), "{server:?}: {o:?}");
        let o = lab.probe(s.port, check, &client_identity(&lab)).await;
        assert_eq!(o.result, Ok(()), "{server:?}: {o:?}");
    }
}

#[test]
fn unreadable_tls_files_are_configuration_errors() {
    // Caught at load, with the position of the key.
    let text = "[tls]\nca_file = \"/nonexistent/ca.pem\"\n";
    let err = Config::parse(text, "t.toml").unwrap_err().to_string();
    assert!(err.starts_with("t.toml:2:11: tls.ca_file: /nonexistent/ca.pem:"), "{err}");
    // A file that disappears between load and use is still a configuration error.
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "not a certificate").unwrap();
    let text = format!("[tls]\nca_file = \"{}\"\n", ca.display());
    let config = Config::parse(&text, "t.toml").unwrap();
    std::fs::remove_file(&ca).unwrap();
    let err = probe_context(&config).unwrap_err().to_string();
    assert!(err.starts_with(&format!("t.toml: tls.ca_file: {}:", ca.display())), "{err}");
}
