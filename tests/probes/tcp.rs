//! tcp probes against real listeners on loopback, names resolved through an in-process
//! DNS responder.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use coexistd::agent::probe_context;
use coexistd::config::Config;
use coexistd::kinds::{FailureReason, Phase};
use coexistd::lab::dns_server::{a, DnsServer};
use coexistd::run::scheduler::LiveProber;
use tokio::net::{TcpListener, TcpSocket, TcpStream};

async fn run(dns: &DnsServer, host: &str, port: u16, timeout: &str) -> coexistd::kinds::Outcome {
    let text = format!(
        "[agent]\ntimeout = \"{timeout}\"\n[dns]\nservers = [\"{}\"]\n\
         [[checks]]\nname = \"t\"\nkind = \"tcp\"\npools = []\nhost = \"{host}\"\nport = {port}\n",
        dns.addr
    );
    common::probe_once(&text).await
}

async fn responder() -> DnsServer {
    DnsServer::start(
        "127.0.0.1:0".parse().unwrap(),
        vec![
            a("up.contoso.test", "127.0.0.21"),
            a("down.contoso.test", "127.0.0.22"),
            a("hole.contoso.test", "127.0.0.23"),
        ],
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn a_listening_port_passes_with_resolve_and_connect_timed() {
    let dns = responder().await;
    let l = TcpListener::bind("127.0.0.21:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let accepted = tokio::spawn(async move { l.accept().await.map(|(_, peer)| peer) });
    let o = run(&dns, "up.contoso.test", port, "2s").await;
    assert_eq!(o.result, Ok(()));
    let phases: Vec<Phase> = o.phases.iter().map(|p| p.0).collect();
    assert_eq!(phases, [Phase::Resolve, Phase::Connect]);
    let peer = accepted.await.unwrap().unwrap();
    assert!(peer.ip().is_loopback(), "the probe really connected");
}

#[tokio::test]
async fn a_closed_port_is_refused() {
    let dns = responder().await;
    let l = std::net::TcpListener::bind("127.0.0.22:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    let o = run(&dns, "down.contoso.test", port, "2s").await;
    assert_eq!(o.reason(), Some(FailureReason::Refused), "{o:?}");
    assert!(o.result.unwrap_err().detail.contains("127.0.0.22"));
}

#[tokio::test]
async fn an_unknown_name_is_a_resolve_failure() {
    let dns = responder().await;
    let o = run(&dns, "nowhere.contoso.test", 5061, "2s").await;
    assert_eq!(o.reason(), Some(FailureReason::Resolve), "{o:?}");
}

#[tokio::test]
async fn a_blackholed_port_times_out() {
    // A listener with a full accept queue that never accepts drops further SYNs:
    // the handshake never completes, as behind a firewall that drops packets.
    let dns = responder().await;
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.23:0".parse().unwrap()).unwrap();
    let l = sock.listen(0).unwrap();
    let addr = l.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await {
            fillers.push(s);
        }
    }
    let t = std::time::Instant::now();
    let o = run(&dns, "hole.contoso.test", addr.port(), "1s").await;
    assert_eq!(o.reason(), Some(FailureReason::Timeout), "{o:?}");
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(950) && took < Duration::from_millis(2500), "{took:?}");
    drop(l);
}

#[tokio::test]
async fn each_address_probes_ipv4_and_ipv6_members_behind_one_name() {
    use coexistd::lab::dns_server::aaaa;
    use coexistd::run::results::Round;
    use coexistd::run::scheduler::{run_round, Prober};
    let v4 = TcpListener::bind("127.0.0.51:0").await.unwrap();
    let port = v4.local_addr().unwrap().port();
    let v6 = TcpListener::bind(("::1", port)).await.expect("IPv6 loopback");
    let dns = DnsServer::start(
        "127.0.0.1:0".parse().unwrap(),
        vec![
            a("dual.contoso.test", "127.0.0.51"),
            aaaa("dual.contoso.test", "::1"),
            a("dual.contoso.test", "127.0.0.52"),
        ],
    )
    .await
    .unwrap();
    let text = format!(
        "[dns]\nservers = [\"{}\"]\n[[checks]]\nname = \"t\"\nkind = \"tcp\"\npools = []\nhost = \"dual.contoso.test\"\nport = {port}\neach_address = true\n",
        dns.addr
    );
    let config = Config::parse(&text, "t").unwrap();
    let prober: Arc<dyn Prober> = Arc::new(LiveProber(Arc::new(probe_context(&config).unwrap())));
    let Round::Members(results) = run_round(&prober, &config.instances[0]).await else {
        panic!("no fan-out")
    };
    let got: Vec<(String, Option<FailureReason>)> =
        results.iter().map(|(ip, o, _)| (ip.to_string(), o.reason())).collect();
    assert_eq!(
        got,
        [
            ("127.0.0.51".to_owned(), None),
            ("127.0.0.52".to_owned(), Some(FailureReason::Refused)),
            ("::1".to_owned(), None)
        ]
    );
    drop((v4, v6));
}
