//! dns probes against a real authoritative server (Knot, started by the test) and,
//! for faults Knot will not produce on demand, an in-process responder.

mod common;

use std::sync::Arc;

use coexistd::agent::probe_context;
use coexistd::config::Config;
use coexistd::lab::dns_server::{a, srv, DnsServer, Fault};
use coexistd::probe::{FailureReason, Outcome};
use coexistd::scheduler::{run_once, LiveProber};
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
    assert_eq!(o.dns_answers, Some(2));

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
    assert_eq!(o.dns_answers, Some(1));
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
