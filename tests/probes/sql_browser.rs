//! sql_browser probes (MS-SQLR) against the demo lab's SQL Server Browser responder
//! (built from MS-SQLR §2.2.2 and §2.2.5; there is no SQL Server here), a closed port and
//! fakes for answers that are not an instance list. The wire format is checked against
//! a captured SQL Server answer in `src/net/ssrp.rs`.

use crate::common;

use coexistd::kinds::FailureReason;

async fn run(port: u16, expect: &str) -> coexistd::kinds::Outcome {
    let expect = if expect.is_empty() { String::new() } else { format!("expect_instance = \"{expect}\"\n") };
    let text = format!(
        "[agent]\ntimeout = \"1500ms\"\n[[checks]]\nname = \"b\"\nkind = \"sql_browser\"\npools = []\n\
         host = \"127.0.0.1\"\nport = {port}\n{expect}"
    );
    common::probe_once(&text).await
}

#[tokio::test]
async fn the_browser_lists_the_local_store_and_a_missing_instance_is_named() {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = sock.local_addr().unwrap().port();
    tokio::spawn(coexistd::lab::admin::ssrp_responder(
        sock,
        "LYNCFE01",
        coexistd::lab::admin::LYNC_FRONT_END,
    ));
    assert!(run(port, "RTCLOCAL").await.result.is_ok());
    assert!(run(port, "rtclocal").await.result.is_ok(), "instance names are compared without case");
    assert!(run(port, "").await.result.is_ok(), "without expect_instance any list passes");
    let o = run(port, "XYZLOCAL").await;
    assert_eq!(o.reason(), Some(FailureReason::SqlInstanceMissing), "{:?}", o.result);
    assert!(o.result.unwrap_err().detail.contains("the browser lists RTCLOCAL, LYNCLOCAL"));
}

#[tokio::test]
async fn nobody_listening_is_refused_and_a_stranger_answer_is_malformed() {
    let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    assert_eq!(run(port, "RTCLOCAL").await.reason(), Some(FailureReason::Refused));
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = sock.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut buf = [0u8; 16];
        while let Ok((_, from)) = sock.recv_from(&mut buf).await {
            let _ = sock.send_to(b"\x05\x40\x00ServerName;X", from).await;
        }
    });
    let o = run(port, "RTCLOCAL").await;
    assert_eq!(o.reason(), Some(FailureReason::SsrpMalformed), "{:?}", o.result);
}
