//! dns probes against a real authoritative server (Knot, started by the test) and,
//! for faults Knot will not produce on demand, an in-process responder.

use crate::common;

use std::sync::Arc;

use coexistd::agent::probe_context;
use coexistd::config::Config;
use coexistd::kinds::{FailureReason, Outcome};
use coexistd::lab::dns_server::{a, srv, DnsServer, Fault};
use coexistd::run::scheduler::{run_once, LiveProber};
use common::Knot;
use hickory_proto::op::ResponseCode;

async fn probe(
    server: std::net::SocketAddr,
    record: &str,
    rtype: &str,
    expect: &str,
    timeout: &str,
) -> Outcome {
    let text = format!(
        "[agent]\ntimeout = \"{timeout}\"\n[dns]\nservers = [\"{server}\"]\n\
         [[checks]]\nname = \"d\"\nkind = \"dns\"\npools = []\nrecord = \"{record}\"\ntype = \"{rtype}\"\n{expect}\n"
    );
    common::probe_once(&text).await
}

const ZONE: &str = "\
lyncpool A 127.0.20.1
lyncpool A 127.0.20.2
ocspool A 127.0.10.1
lyncdiscoverinternal CNAME lyncpool
_sipinternaltls._tcp SRV 0 0 5061 lyncpool
_coexist TXT \"migration wave 3\"
";

#[tokio::test]
async fn knot_answers_a_cname_srv_txt_and_nxdomain() {
    let knot = Knot::start("contoso.test", ZONE);
    let s = knot.addr;

    let o = probe(s, "lyncpool.contoso.test", "A", "expect = [\"127.0.20.2\", \"127.0.20.1\"]", "2s").await;
    assert_eq!(o.result, Ok(()));
    assert_eq!(o.value(&coexistd::kinds::dns::DNS_ANSWERS), Some(2.0));

    let o = probe(s, "lyncpool.contoso.test", "A", "expect = [\"127.0.20.1\"]", "2s").await;
    let f = o.result.unwrap_err();
    assert_eq!(f.reason, FailureReason::DnsMismatch);
    assert_eq!(f.detail, "got [127.0.20.1, 127.0.20.2], expected [127.0.20.1]");

    let o =
        probe(s, "lyncdiscoverinternal.contoso.test", "CNAME", "expect = [\"lyncpool.contoso.test.\"]", "2s")
            .await;
    assert_eq!(o.result, Ok(()));

    let o = probe(
        s,
        "_sipinternaltls._tcp.contoso.test",
        "SRV",
        "expect = [\"0 0 5061 lyncpool.contoso.test.\"]",
        "2s",
    )
    .await;
    assert_eq!(o.result, Ok(()));

    let o = probe(s, "_coexist.contoso.test", "TXT", "expect_contains = [\"migration wave 3\"]", "2s").await;
    assert_eq!(o.result, Ok(()));

    let o = probe(s, "lync2010pool.contoso.test", "A", "", "2s").await;
    assert_eq!(o.reason(), Some(FailureReason::DnsNxdomain));

    let o = probe(s, "ocspool.contoso.test", "AAAA", "", "2s").await;
    assert_eq!(o.reason(), Some(FailureReason::DnsNoAnswer));

    // Knot is authoritative for contoso.test only and does not recurse.
    let o = probe(s, "sip.fabrikam.test", "A", "", "2s").await;
    assert_eq!(o.reason(), Some(FailureReason::DnsRefused));
}

#[tokio::test]
async fn a_zone_change_is_seen_on_the_next_probe() {
    let mut knot = Knot::start("contoso.test", ZONE);
    let expect = "expect = [\"0 0 5061 lyncpool.contoso.test.\"]";
    let o = probe(knot.addr, "_sipinternaltls._tcp.contoso.test", "SRV", expect, "2s").await;
    assert_eq!(o.result, Ok(()));
    // Rollback: the sign-in record moves back to the legacy pool.
    knot.set_records(
        &ZONE.replace(
            "_sipinternaltls._tcp SRV 0 0 5061 lyncpool",
            "_sipinternaltls._tcp SRV 0 0 5061 ocspool",
        ),
    );
    let o = probe(knot.addr, "_sipinternaltls._tcp.contoso.test", "SRV", expect, "2s").await;
    let f = o.result.unwrap_err();
    assert_eq!(f.reason, FailureReason::DnsMismatch);
    assert!(f.detail.contains("0 0 5061 ocspool.contoso.test."), "{}", f.detail);
}

async fn responder() -> DnsServer {
    DnsServer::start(
        "127.0.0.1:0".parse().unwrap(),
        vec![
            a("lyncpool.contoso.test", "127.0.20.1"),
            srv("_sip._tls.contoso.test", 0, 0, 443, "sip.contoso.test"),
        ],
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn servfail_and_refused_are_reported_as_such() {
    let r = responder().await;
    r.set_fault(Fault::Rcode(ResponseCode::ServFail));
    let o = probe(r.addr, "lyncpool.contoso.test", "A", "", "2s").await;
    assert_eq!(o.reason(), Some(FailureReason::DnsServfail));
    r.set_fault(Fault::Rcode(ResponseCode::Refused));
    let o = probe(r.addr, "lyncpool.contoso.test", "A", "", "2s").await;
    assert_eq!(o.reason(), Some(FailureReason::DnsRefused));
}

#[tokio::test]
async fn a_silent_server_is_a_dns_timeout_within_the_timeout() {
    let r = responder().await;
    r.set_fault(Fault::Silent);
    let t = std::time::Instant::now();
    let o = probe(r.addr, "lyncpool.contoso.test", "A", "", "1s").await;
    assert_eq!(o.reason(), Some(FailureReason::DnsTimeout), "{o:?}");
    assert!(t.elapsed() < std::time::Duration::from_millis(2500), "{:?}", t.elapsed());
}

#[tokio::test]
async fn a_truncated_udp_answer_is_retried_over_tcp() {
    let r = responder().await;
    r.set_fault(Fault::TruncateUdp);
    let o = probe(r.addr, "_sip._tls.contoso.test", "SRV", "expect = [\"0 0 443 sip.contoso.test.\"]", "2s")
        .await;
    assert_eq!(o.result, Ok(()), "the answer came over TCP");
    assert_eq!(o.value(&coexistd::kinds::dns::DNS_ANSWERS), Some(1.0));
}

#[tokio::test]
async fn the_second_server_answers_when_the_first_is_silent() {
    let silent = responder().await;
    silent.set_fault(Fault::Silent);
    let good = responder().await;
    let text = format!(
        "[agent]\ntimeout = \"2s\"\n[dns]\nservers = [\"{}\", \"{}\"]\n\
         [[checks]]\nname = \"d\"\nkind = \"dns\"\npools = []\nrecord = \"lyncpool.contoso.test\"\n",
        silent.addr, good.addr
    );
    let config = Config::parse(&text, "t").unwrap();
    let prober = LiveProber(Arc::new(probe_context(&config).unwrap()));
    let (o, d) = run_once(&prober, &config.instances[0]).await;
    assert_eq!(o.result, Ok(()));
    assert!(d >= std::time::Duration::from_millis(900), "the first server had its share: {d:?}");
}

async fn probe_pools(server: std::net::SocketAddr, record: &str, rtype: &str, expect_pool: &str) -> Outcome {
    let text = format!(
        "[agent]\ntimeout = \"2s\"\n[dns]\nservers = [\"{server}\"]\n\
         [[pools]]\nname = \"ocs\"\nrole = \"legacy\"\nfqdn = \"ocspool.contoso.test\"\n\
         [[pools]]\nname = \"lync\"\nrole = \"new\"\nfqdn = \"lyncpool.contoso.test\"\nmembers = [\"lyncfe1.contoso.test\", \"lyncfe2.contoso.test\"]\n\
         [[checks]]\nname = \"d\"\nkind = \"dns\"\npools = []\nrecord = \"{record}\"\ntype = \"{rtype}\"\n{expect_pool}\n"
    );
    common::probe_once(&text).await
}

const POOL_ZONE: &str = "\
lyncpool A 127.0.20.1
lyncpool A 127.0.20.2
lyncfe1 A 127.0.20.1
lyncfe2 A 127.0.20.2
ocspool A 127.0.10.1
lyncdiscoverinternal CNAME lyncpool
_sipinternaltls._tcp SRV 0 0 5061 lyncpool
_sipfederationtls._tcp SRV 0 0 5061 lyncfe1
_sipfederationtls._tcp SRV 0 0 5061 lyncfe2
sip A 127.0.20.2
meet A 127.0.99.9
";

#[tokio::test]
async fn points_to_names_the_pool_behind_srv_cname_and_a_records() {
    let knot = Knot::start("contoso.test", POOL_ZONE);
    let s = knot.addr;
    for (record, rtype, want) in [
        ("_sipinternaltls._tcp.contoso.test", "SRV", "lync"),
        ("_sipfederationtls._tcp.contoso.test", "SRV", "lync"), // members count as the pool
        ("lyncdiscoverinternal.contoso.test", "CNAME", "lync"),
        ("sip.contoso.test", "A", "lync"), // an address of the pool
        ("ocspool.contoso.test", "A", "ocs"),
        ("meet.contoso.test", "A", "unknown"),
    ] {
        let o = probe_pools(s, record, rtype, "").await;
        assert_eq!(o.result, Ok(()), "{record}: {o:?}");
        assert_eq!(o.points_to.as_deref(), Some(want), "{record}");
    }
}

#[tokio::test]
async fn a_sign_in_record_moved_to_the_other_pool_is_dns_wrong_pool() {
    let mut knot = Knot::start("contoso.test", POOL_ZONE);
    let record = "_sipinternaltls._tcp.contoso.test";
    let o = probe_pools(knot.addr, record, "SRV", "expect_pool = \"lync\"").await;
    assert_eq!(o.result, Ok(()), "{o:?}");
    // A rollback (or a mistake): the record now sends clients to the legacy pool.
    knot.set_records(
        &POOL_ZONE.replace(
            "_sipinternaltls._tcp SRV 0 0 5061 lyncpool",
            "_sipinternaltls._tcp SRV 0 0 5061 ocspool",
        ),
    );
    let o = probe_pools(knot.addr, record, "SRV", "expect_pool = \"lync\"").await;
    let f = o.result.as_ref().unwrap_err();
    assert_eq!(f.reason, FailureReason::DnsWrongPool);
    assert_eq!(f.detail, "points to ocs [0 0 5061 ocspool.contoso.test.], expected pool lync");
    assert_eq!(o.points_to.as_deref(), Some("ocs"));
}

/// A UDP responder that answers each query with the bytes `reply` makes of it and
/// records the source port of every query.
async fn raw_responder(
    reply: impl Fn(&hickory_proto::op::Message) -> Vec<u8> + Send + 'static,
) -> (std::net::SocketAddr, Arc<std::sync::Mutex<Vec<u16>>>) {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    let ports = Arc::new(std::sync::Mutex::new(Vec::new()));
    let p = ports.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((n, peer)) = sock.recv_from(&mut buf).await else { return };
            p.lock().unwrap().push(peer.port());
            let Ok(q) = hickory_proto::op::Message::from_vec(&buf[..n]) else { continue };
            let _ = sock.send_to(&reply(&q), peer).await;
        }
    });
    (addr, ports)
}

/// A response to `q` with question `qname` (not necessarily the one asked) and one A.
fn answer_for(q: &hickory_proto::op::Message, qname: &str) -> Vec<u8> {
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::{rdata::A, Name, RData, Record, RecordType};
    let name: Name = qname.parse().unwrap();
    let mut m = Message::response(q.metadata.id, q.metadata.op_code);
    m.add_query(Query::query(name.clone(), RecordType::A));
    m.add_answer(Record::from_rdata(name, 60, RData::A(A("127.0.20.1".parse().unwrap()))));
    m.to_vec().unwrap()
}

#[tokio::test]
async fn a_reply_with_our_id_but_another_question_is_not_our_answer() {
    let (addr, _) = raw_responder(|q| answer_for(q, "other.contoso.test.")).await;
    let o = probe(addr, "lyncpool.contoso.test", "A", "", "1s").await;
    assert_eq!(o.reason(), Some(FailureReason::DnsTimeout), "a forged question must not pass: {o:?}");
}

#[tokio::test]
async fn the_question_name_matches_without_regard_to_case() {
    let (addr, _) = raw_responder(|q| answer_for(q, "LyncPool.CONTOSO.test.")).await;
    let o = probe(addr, "lyncpool.contoso.test", "A", "expect = [\"127.0.20.1\"]", "1s").await;
    assert_eq!(o.result, Ok(()), "{o:?}");
}

#[tokio::test]
async fn an_unparseable_reply_with_our_id_is_dns_error_at_once() {
    fn header(id: u16, qd: u16, an: u16) -> Vec<u8> {
        let mut h = id.to_be_bytes().to_vec();
        h.extend_from_slice(&[0x81, 0x80]); // QR=1, RD, RA, NOERROR
        for n in [qd, an, 0, 0] {
            h.extend_from_slice(&n.to_be_bytes());
        }
        h
    }
    type MakeReply = Box<dyn Fn(u16) -> Vec<u8> + Send + Sync>;
    let cases: Vec<(&str, MakeReply)> = vec![
        ("3 bytes", Box::new(|id| vec![(id >> 8) as u8, id as u8, 0x81])),
        (
            "a compression loop",
            Box::new(|id| {
                let mut b = header(id, 1, 0);
                b.extend_from_slice(&[0xC0, 0x0C, 0x00, 0x01, 0x00, 0x01]); // name points at itself
                b
            }),
        ),
        (
            "ANCOUNT 65535 and no records",
            Box::new(|id| {
                let mut b = header(id, 1, 65535);
                b.extend_from_slice(b"\x08lyncpool\x07contoso\x04test\x00\x00\x01\x00\x01");
                b
            }),
        ),
    ];
    for (what, make) in cases {
        let (addr, _) = raw_responder(move |q| make(q.metadata.id)).await;
        let t = std::time::Instant::now();
        let o = probe(addr, "lyncpool.contoso.test", "A", "", "3s").await;
        assert_eq!(o.reason(), Some(FailureReason::DnsError), "{what}: {o:?}");
        assert!(t.elapsed() < std::time::Duration::from_secs(1), "{what}: not at once: {:?}", t.elapsed());
        assert!(o.result.unwrap_err().detail.contains("cannot be parsed"), "{what}");
    }
}

#[tokio::test]
async fn every_query_comes_from_a_fresh_source_port() {
    let (addr, ports) = raw_responder(|q| answer_for(q, "lyncpool.contoso.test.")).await;
    for _ in 0..8 {
        let o = probe(addr, "lyncpool.contoso.test", "A", "", "1s").await;
        assert_eq!(o.result, Ok(()), "{o:?}");
    }
    let ports = ports.lock().unwrap().clone();
    let distinct: std::collections::BTreeSet<u16> = ports.iter().copied().collect();
    assert_eq!(ports.len(), 8);
    assert!(distinct.len() >= 7, "source ports reused: {ports:?}");
}
