//! sip probes against hostile in-process peers: a 10 MB response, a header that never
//! ends, garbage, a stall mid-response, a response for another transaction before ours.
//! Each must give its reason within the timeout, with bounded memory and no panic.
//! Also: UDP retransmission timing (timer E) with paused time.

use crate::common;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use coexistd::kinds::{FailureReason, Outcome};
use coexistd::sip::message::{self, Parsed};
use coexistd::ua::transaction::over_udp;
use coexistd::ua::Datagrams;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::time::Instant;

async fn probe(transport: &str, port: u16, timeout: &str) -> Outcome {
    let text = format!(
        "[agent]\ntimeout = \"{timeout}\"\n[dns]\nservers = [\"127.0.0.1:9\"]\n\
         [[checks]]\nname = \"s\"\nkind = \"sip\"\npools = []\nhost = \"127.0.0.1\"\ntransport = \"{transport}\"\nport = {port}\n"
    );
    common::probe_once(&text).await
}

/// A TCP peer that reads the request and then runs `behave` on the connection.
async fn tcp_peer<F, Fut>(behave: F) -> u16
where
    F: Fn(tokio::net::TcpStream, message::Message) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let behave = Arc::new(behave);
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else { return };
            let behave = behave.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 2048];
                let req = loop {
                    let Ok(n) = s.read(&mut chunk).await else { return };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Ok(Parsed::Complete(m, _)) = message::parse(&buf, true) {
                        break m;
                    }
                };
                behave(s, req).await;
            });
        }
    });
    port
}

fn wrong_branch(resp: &[u8]) -> Vec<u8> {
    String::from_utf8_lossy(resp).replace("branch=z9hG4bK", "branch=z9hG4bKnotyours").into_bytes()
}

#[tokio::test]
async fn a_10_mb_response_is_malformed_not_buffered() {
    let port = tcp_peer(|mut s, _| async move {
        let _ = s.write_all(b"SIP/2.0 200 OK\r\nContent-Length: 10485760\r\n\r\n").await;
        let junk = vec![b'x'; 64 * 1024];
        for _ in 0..160 {
            if s.write_all(&junk).await.is_err() {
                return;
            }
        }
    })
    .await;
    let t = std::time::Instant::now();
    let o = probe("tcp", port, "3s").await;
    assert_eq!(o.reason(), Some(FailureReason::SipMalformed), "{o:?}");
    assert!(o.result.unwrap_err().detail.contains("larger than 65536 bytes"));
    assert!(t.elapsed() < Duration::from_millis(2500), "{:?}", t.elapsed());
}

#[tokio::test]
async fn a_header_that_never_ends_is_malformed() {
    let port = tcp_peer(|mut s, _| async move {
        let _ = s.write_all(b"SIP/2.0 200 OK\r\nX-Forever: ").await;
        let junk = vec![b'a'; 8192];
        loop {
            if s.write_all(&junk).await.is_err() {
                return;
            }
        }
    })
    .await;
    let o = probe("tcp", port, "3s").await;
    assert_eq!(o.reason(), Some(FailureReason::SipMalformed), "{o:?}");
}

#[tokio::test]
async fn garbage_is_malformed() {
    let port = tcp_peer(|mut s, _| async move {
        let _ = s.write_all(b"\x16\x03\x01\x02\x00 this is not SIP at all\r\n\r\n").await;
        tokio::time::sleep(Duration::from_secs(5)).await;
    })
    .await;
    let o = probe("tcp", port, "3s").await;
    assert_eq!(o.reason(), Some(FailureReason::SipMalformed), "{o:?}");
}

#[tokio::test]
async fn a_stall_mid_response_times_out_within_the_timeout() {
    let port = tcp_peer(|mut s, req| async move {
        let resp = message::response_to(&req, 200, "OK", "staller");
        let _ = s.write_all(&resp[..resp.len() / 2]).await;
        tokio::time::sleep(Duration::from_secs(10)).await;
    })
    .await;
    let t = std::time::Instant::now();
    let o = probe("tcp", port, "1s").await;
    assert_eq!(o.reason(), Some(FailureReason::Timeout), "{o:?}");
    assert!(t.elapsed() < Duration::from_millis(2000), "{:?}", t.elapsed());
}

#[tokio::test]
async fn a_response_for_another_transaction_is_skipped_for_ours() {
    let port = tcp_peer(|mut s, req| async move {
        let resp = message::response_to(&req, 200, "OK", "patient");
        let mut both = wrong_branch(&message::response_to(&req, 486, "Busy Here", "other"));
        both.extend_from_slice(&resp);
        let _ = s.write_all(&both).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    })
    .await;
    let o = probe("tcp", port, "2s").await;
    assert_eq!(o.result, Ok(()), "{o:?}");
    assert_eq!(o.measured_of(&coexistd::ua::SIP_SERVER).and_then(|m| m.label.as_deref()), Some("patient"));
}

async fn udp_peer(reply: impl Fn(&message::Message) -> Vec<Vec<u8>> + Send + 'static) -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = s.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        loop {
            let Ok((n, peer)) = s.recv_from(&mut buf).await else { return };
            let Ok(Parsed::Complete(req, _)) = message::parse(&buf[..n], false) else { continue };
            for d in reply(&req) {
                let _ = s.send_to(&d, peer).await;
            }
        }
    });
    port
}

#[tokio::test]
async fn over_udp_stray_then_provisional_then_final() {
    let port = udp_peer(|req| {
        vec![
            wrong_branch(&message::response_to(req, 200, "OK", "stray")),
            b"garbage".to_vec(),
            message::response_to(req, 100, "Trying", "x"),
            message::response_to(req, 200, "OK", "udp-peer"),
        ]
    })
    .await;
    let o = probe("udp", port, "2s").await;
    assert_eq!(o.result, Ok(()), "{o:?}");
    assert_eq!(o.measured_of(&coexistd::ua::SIP_SERVER).and_then(|m| m.label.as_deref()), Some("udp-peer"));
}

#[tokio::test]
async fn over_udp_only_garbage_is_malformed_at_the_deadline() {
    let port = udp_peer(|_| vec![b"\x00\x01 definitely not sip".to_vec()]).await;
    let t = std::time::Instant::now();
    let o = probe("udp", port, "1s").await;
    assert_eq!(o.reason(), Some(FailureReason::SipMalformed), "{o:?}");
    assert!(t.elapsed() < Duration::from_millis(2000));
}

/// Records when datagrams are sent; never receives anything.
struct Recorder(Mutex<Vec<(Instant, Vec<u8>)>>);

impl Datagrams for Recorder {
    fn send(&self, buf: &[u8]) -> impl Future<Output = std::io::Result<usize>> + Send {
        self.0.lock().unwrap().push((Instant::now(), buf.to_vec()));
        std::future::ready(Ok(buf.len()))
    }
    fn recv_buf(&self, _buf: &mut Vec<u8>) -> impl Future<Output = std::io::Result<usize>> + Send {
        std::future::pending()
    }
}

#[tokio::test(start_paused = true)]
async fn udp_retransmits_on_timer_e_within_the_timeout() {
    let rec = Recorder(Mutex::new(Vec::new()));
    let tx = message::new_transaction();
    let t0 = Instant::now();
    let r = over_udp(&rec, b"OPTIONS sip:x SIP/2.0\r\n\r\n", &tx, t0 + Duration::from_secs(2)).await;
    assert_eq!(r.unwrap_err().reason, FailureReason::Timeout);
    let sends = rec.0.lock().unwrap().clone();
    let at: Vec<Duration> = sends.iter().map(|(t, _)| *t - t0).collect();
    assert_eq!(at, [Duration::ZERO, Duration::from_millis(500), Duration::from_millis(1500)]);
    assert!(sends.iter().all(|(_, b)| b == &sends[0].1), "every transmission is the same request");
    // A longer deadline: intervals double up to T2 = 4 s.
    let rec = Recorder(Mutex::new(Vec::new()));
    let t0 = Instant::now();
    let _ = over_udp(&rec, b"x", &tx, t0 + Duration::from_secs(16)).await;
    let at: Vec<u64> = rec.0.lock().unwrap().iter().map(|(t, _)| (*t - t0).as_millis() as u64).collect();
    assert_eq!(at, [0, 500, 1500, 3500, 7500, 11500, 15500]);
}
