//! Every numeric field a SIP peer sends is bounded before it is used: hostile numbers
//! (u64::MAX, i64::MIN, a leading `+`, ten thousand digits) in every numeric header and
//! in the status code give `sip_malformed` over UDP, TCP and TLS, never a panic, a
//! frozen check or a pass.

use crate::common;

use std::sync::Arc;

use coexistd::kinds::FailureReason;
use coexistd::lab::pki::{self, Ca, KeyKind, Leaf};
use coexistd::sip::message::{self, Parsed};
use openssl::hash::MessageDigest;
use openssl::ssl::{Ssl, SslAcceptor, SslMethod};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

/// Hostile values for a number.
fn values() -> Vec<String> {
    vec![
        u64::MAX.to_string(),
        i64::MIN.to_string(),
        "+5".into(),
        "9".repeat(10_000),
        "".into(),
        "0x10".into(),
    ]
}

/// Ways to put `v` into a numeric field of an otherwise valid response.
const FIELDS: [&str; 6] = ["content-length", "cseq", "status", "expires", "max-forwards", "retry-after"];

fn mutate(resp: &[u8], field: &str, v: &str) -> Vec<u8> {
    let s = String::from_utf8_lossy(resp).into_owned();
    let out = match field {
        "content-length" => s.replace("Content-Length: 0", &format!("Content-Length: {v}")),
        "cseq" => {
            let start = s.find("CSeq: ").unwrap() + 6;
            let end = start + s[start..].find(' ').unwrap();
            format!("{}{v}{}", &s[..start], &s[end..])
        }
        "status" => s.replacen("SIP/2.0 200", &format!("SIP/2.0 {v}"), 1),
        "expires" => s.replacen("\r\n", &format!("\r\nExpires: {v}\r\n"), 1),
        "max-forwards" => s.replacen("\r\n", &format!("\r\nMax-Forwards: {v}\r\n"), 1),
        "retry-after" => s.replacen("\r\n", &format!("\r\nRetry-After: {v} (busy)\r\n"), 1),
        _ => unreachable!(),
    };
    assert_ne!(out, s, "{field} was not changed");
    out.into_bytes()
}

async fn answer_stream<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, case: Arc<(String, String)>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let Ok(n) = s.read(&mut chunk).await else { return };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Ok(Parsed::Complete(req, _)) = message::parse(&buf, true) {
            let resp = mutate(&message::response_to(&req, 200, "OK", "hostile"), &case.0, &case.1);
            let _ = s.write_all(&resp).await;
            let _ = s.flush().await;
            tokio::time::sleep(std::time::Duration::from_secs(3)).await;
            return;
        }
    }
}

fn config(transport: &str, port: u16, extra: &str) -> String {
    format!(
        "[agent]\ninterval = \"10s\"\ntimeout = \"3s\"\n[dns]\nservers = [\"127.0.0.1:9\"]\n{extra}\n\
         [[checks]]\nname = \"s\"\nkind = \"sip\"\npools = []\nhost = \"127.0.0.1\"\ntransport = \"{transport}\"\nport = {port}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_numbers_are_malformed_over_udp_tcp_and_tls() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("numbers CA", KeyKind::P256, MessageDigest::sha256()).unwrap();
    let leaf = ca.issue(&Leaf { cn: "127.0.0.1", sans: &["127.0.0.1"], ..Leaf::default() }).unwrap();
    let ca_file = pki::write_ca(dir.path(), "ca", &ca).unwrap();
    let tls_extra = format!("[tls]\nca_file = \"{}\"", ca_file.display());
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).unwrap();
    b.set_private_key(&leaf.key).unwrap();
    b.set_certificate(&leaf.cert).unwrap();
    let acceptor = Arc::new(b.build());

    // A few probes at a time: this test shares the machine with the rest of the suite,
    // and a starved probe would time out instead of reading the hostile bytes.
    let limit = Arc::new(tokio::sync::Semaphore::new(12));
    let mut probes = Vec::new();
    for field in FIELDS {
        for v in values() {
            let case = Arc::new((field.to_owned(), v));
            // UDP: one socket per case answering every datagram.
            let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let udp_port = udp.local_addr().unwrap().port();
            let c = case.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                loop {
                    let Ok((n, peer)) = udp.recv_from(&mut buf).await else { return };
                    let Ok(Parsed::Complete(req, _)) = message::parse(&buf[..n], false) else { continue };
                    let resp = mutate(&message::response_to(&req, 200, "OK", "hostile"), &c.0, &c.1);
                    let _ = udp.send_to(&resp, peer).await;
                }
            });
            // TCP and TLS: one listener each.
            let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let tcp_port = tcp.local_addr().unwrap().port();
            let c = case.clone();
            tokio::spawn(async move {
                while let Ok((s, _)) = tcp.accept().await {
                    tokio::spawn(answer_stream(s, c.clone()));
                }
            });
            let tls = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let tls_port = tls.local_addr().unwrap().port();
            let (c, acceptor) = (case.clone(), acceptor.clone());
            tokio::spawn(async move {
                while let Ok((s, _)) = tls.accept().await {
                    let (c, acceptor) = (c.clone(), acceptor.clone());
                    tokio::spawn(async move {
                        let ssl = Ssl::new(acceptor.context()).unwrap();
                        let mut s = tokio_openssl::SslStream::new(ssl, s).unwrap();
                        if std::pin::Pin::new(&mut s).accept().await.is_ok() {
                            answer_stream(s, c).await;
                        }
                    });
                }
            });
            for (transport, port, extra) in
                [("udp", udp_port, ""), ("tcp", tcp_port, ""), ("tls", tls_port, tls_extra.as_str())]
            {
                let text = config(transport, port, extra);
                let case = case.clone();
                let limit = limit.clone();
                probes.push(tokio::spawn(async move {
                    let _permit = limit.acquire_owned().await.unwrap();
                    let o = common::probe_once(&text).await;
                    (transport, case, o)
                }));
            }
        }
    }
    let mut wrong = Vec::new();
    let n = probes.len();
    for p in probes {
        let (transport, case, o) = p.await.expect("a probe task panicked");
        if o.reason() != Some(FailureReason::SipMalformed) {
            wrong.push(format!(
                "{transport} {}={:.30}: {:?} {:?}",
                case.0,
                case.1,
                o.reason(),
                o.result.as_ref().err().map(|f| f.detail.chars().take(120).collect::<String>())
            ));
        }
    }
    assert_eq!(n, FIELDS.len() * values().len() * 3);
    assert!(wrong.is_empty(), "{} of {n} not sip_malformed:\n{}", wrong.len(), wrong.join("\n"));
}

#[test]
fn bounded_decimal_takes_digits_only_within_range() {
    use coexistd::sip::message::bounded_decimal;
    assert_eq!(bounded_decimal("0", 10), Some(0));
    assert_eq!(bounded_decimal("0000000000000000000000000007", 10), Some(7));
    assert_eq!(bounded_decimal("10", 10), Some(10));
    assert_eq!(bounded_decimal("11", 10), None);
    assert_eq!(bounded_decimal(&u64::MAX.to_string(), u64::MAX), Some(u64::MAX));
    assert_eq!(bounded_decimal("18446744073709551616", u64::MAX), None);
    for bad in ["", "+1", "-1", " 1", "1 ", "1_0", "٣", &"9".repeat(10_000)] {
        assert_eq!(bounded_decimal(bad, u64::MAX), None, "{bad:.20}");
    }
}
