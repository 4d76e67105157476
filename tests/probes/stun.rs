//! stun probes against Debian's coturn (`turnserver -S`, STUN only, on loopback) over
//! UDP and TCP, and against in-process fakes for what a real server does not send (an
//! error response, an answer without an address, one with a wrong FINGERPRINT). The
//! wire format itself is checked against RFC 5769's test vectors in `src/net/stun.rs`.

use crate::common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use coexistd::kinds::FailureReason;

struct Coturn {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Coturn {
    fn start() -> Coturn {
        let bin = common::require("turnserver", "coturn");
        let dir = tempfile::tempdir().unwrap();
        let port = common::free_port();
        let child = Command::new(bin)
            .args(["-n", "-S", "--no-cli", "--no-tls", "--no-dtls", "--listening-ip", "127.0.0.1"])
            .args(["--listening-port", &port.to_string(), "--simple-log", "--no-stdout-log"])
            .arg("--log-file")
            .arg(dir.path().join("turn.log"))
            .arg("--pidfile")
            .arg(dir.path().join("turn.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start turnserver");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "turnserver did not listen within 10 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        Coturn { child, port, _dir: dir }
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn run(port: u16, transport: &str) -> coexistd::kinds::Outcome {
    let text = format!(
        "[agent]\ntimeout = \"1500ms\"\n[[checks]]\nname = \"s\"\nkind = \"stun\"\npools = []\n\
         host = \"127.0.0.1\"\nport = {port}\ntransport = \"{transport}\"\n"
    );
    common::probe_once(&text).await
}

#[tokio::test]
async fn coturn_answers_a_binding_request_over_udp_and_tcp() {
    let turn = Coturn::start();
    for transport in ["udp", "tcp"] {
        let o = run(turn.port, transport).await;
        assert!(o.result.is_ok(), "{transport}: {:?}", o.result);
        let rtt = o.value(&coexistd::kinds::stun::STUN_RTT);
        assert!(rtt.is_some_and(|r| r > 0.0 && r < 1.0), "{transport}: {rtt:?}");
    }
}

#[tokio::test]
async fn nobody_there_is_refused_and_a_silent_server_times_out() {
    // A UDP port nobody listens on: ICMP port unreachable.
    let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let o = run(port, "udp").await;
    assert_eq!(o.reason(), Some(FailureReason::Refused), "{:?}", o.result);
    // A socket that reads and never answers.
    let silent = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let o = run(silent.local_addr().unwrap().port(), "udp").await;
    assert_eq!(o.reason(), Some(FailureReason::Timeout), "{:?}", o.result);
}

/// A fake STUN server over UDP answering every request with `answer(request)`.
async fn fake(answer: fn(&[u8]) -> Vec<u8>) -> u16 {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = sock.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = sock.recv_from(&mut buf).await {
            let _ = sock.send_to(&answer(&buf[..n]), from).await;
        }
    });
    port
}

fn header(kind: u16, body: &[u8], request: &[u8]) -> Vec<u8> {
    let mut m = kind.to_be_bytes().to_vec();
    m.extend_from_slice(&(body.len() as u16).to_be_bytes());
    m.extend_from_slice(&request[4..20]);
    m.extend_from_slice(body);
    m
}

#[tokio::test]
async fn an_error_response_and_answers_that_are_not_usable_have_their_reasons() {
    // 401 Unauthorized, as a TURN server that wants credentials for everything.
    let port = fake(|r| {
        let mut attr = vec![0x00, 0x09, 0x00, 0x10, 0, 0, 4, 1];
        attr.extend_from_slice(b"Unauthorized");
        header(0x0111, &attr, r)
    })
    .await;
    let o = run(port, "udp").await;
    assert_eq!(o.reason(), Some(FailureReason::StunError), "{:?}", o.result);
    assert!(o.result.unwrap_err().detail.contains("401 Unauthorized"));
    // A success without an address.
    let port = fake(|r| header(0x0101, &[], r)).await;
    let o = run(port, "udp").await;
    assert_eq!(o.reason(), Some(FailureReason::StunMalformed), "{:?}", o.result);
    // A FINGERPRINT that does not match.
    let port = fake(|r| {
        let attrs = [
            0x00, 0x20, 0x00, 0x08, 0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43, 0x80, 0x28, 0x00, 0x04,
            1, 2, 3, 4,
        ];
        header(0x0101, &attrs, r)
    })
    .await;
    let o = run(port, "udp").await;
    assert_eq!(o.reason(), Some(FailureReason::StunMalformed), "{:?}", o.result);
    assert!(o.result.unwrap_err().detail.contains("FINGERPRINT"));
}
