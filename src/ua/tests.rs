//! The registered endpoint against registrars played on the in-memory network
//! ([`super::memory`]) under paused time: an hour of keep-alives and refreshes, a
//! registrar gone silent, one that accepts and drops, a message that never ends, the
//! endpoint's answers to its registrar's requests, the unregister at shutdown, the
//! redirect policy (pools, `redirect_hosts`, weaker transports), a stale nonce at a
//! test user's request — each in well under a second of real time.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, WriteHalf};
use tokio::time::Instant;

use super::endpoint::{EndpointSpec, Endpoints};
use super::memory::{Accepted, MemoryNet};
use super::ProbeContext;
use crate::model::pool::{Pool, Role};
use crate::model::users::{Aor, User, UserAuth};
use crate::net::tls::{TlsConfig, TlsOptions, TlsVersion};
use crate::sip::framer::Framer;
use crate::sip::message::{self, Message, StartLine, Transport};

/// How the played registrar treats one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Answers REGISTER and OPTIONS, pongs every ping.
    Pong,
    /// Answers the first REGISTER, then nothing at all (a hung process, a half-open
    /// connection).
    Silent,
    /// Answers the REGISTER, then closes the connection.
    Drop,
    /// Answers the REGISTER, then starts a request it never finishes, and sends
    /// nothing more.
    Stall,
    /// Answers a REGISTER `301` to this Contact.
    Redirect(&'static str),
    /// Answers REGISTER and OPTIONS; challenges a MESSAGE (`407`, nonce `n1`, realm
    /// `contoso.test`), its answer again with `stale=true` (nonce `n2`, in this realm),
    /// and accepts an answer to `n2` — or, with `true`, calls that one stale too.
    Stale(&'static str, bool),
}

type Writer = Arc<tokio::sync::Mutex<WriteHalf<DuplexStream>>>;

/// What the registrar saw.
#[derive(Default)]
struct Seen {
    /// When each connection was opened, and to which host.
    dials: Vec<Instant>,
    hosts: Vec<String>,
    /// Each REGISTER: when, and the expiry asked for.
    registers: Vec<(Instant, u32)>,
    /// When each connection ended (the endpoint closed it).
    closed: Vec<Instant>,
    /// Responses the endpoint sent to the registrar's requests.
    answers: Vec<Message>,
    /// The write side of each connection, for requests of the registrar's own.
    writers: Vec<Writer>,
    /// The `Proxy-Authorization` of each MESSAGE (empty: none).
    message_auths: Vec<String>,
}

pub(super) const POOL_FQDN: &str = "pool.contoso.test";
const NEW_POOL_FQDN: &str = "newpool.contoso.test";

pub(super) fn user() -> User {
    User {
        name: "alice".into(),
        aor: Aor::parse("sip:alice@contoso.test").unwrap(),
        pool: "legacy".into(),
        auth: UserAuth::None,
        transport: Transport::Tcp,
        port: 5060,
        sip: true,
        redirect_hosts: Vec::new(),
    }
}

pub(super) fn spec() -> EndpointSpec {
    EndpointSpec {
        user: user(),
        registrar: POOL_FQDN.into(),
        opts: TlsOptions { min_version: TlsVersion::V1_2, skip_verify: false, min_days_valid: None },
        pools: vec![
            Pool {
                name: "legacy".into(),
                role: Role::Legacy,
                fqdn: POOL_FQDN.into(),
                tls_min_version: None,
                members: Vec::new(),
                presence: Default::default(),
                site: None,
            },
            Pool {
                name: "new".into(),
                role: Role::New,
                fqdn: NEW_POOL_FQDN.into(),
                tls_min_version: None,
                members: Vec::new(),
                presence: Default::default(),
                site: None,
            },
        ],
    }
}

/// A probe context whose endpoints dial the memory network, and where the
/// connections they open arrive.
pub(super) fn memory_context() -> (ProbeContext, tokio::sync::mpsc::UnboundedReceiver<Accepted>) {
    let (net, accepted) = MemoryNet::new();
    // Nothing listens there: a name the tests make the user agent resolve (a redirect's
    // host, checked against the pools' addresses) fails at once.
    let dns = Arc::new(crate::net::dns::DnsClient::new(vec!["127.0.0.1:9".parse().unwrap()]));
    let cx = ProbeContext {
        resolver: crate::net::resolve::Resolver::new(dns.clone(), Duration::from_secs(1)),
        dns,
        tls: Arc::new(crate::net::tls::TlsClient::new(&TlsConfig::default()).unwrap()),
        address: None,
        endpoints: Arc::new(Endpoints::with_dialer(1 << 20, Arc::new(net))),
    };
    (cx, accepted)
}

/// Endpoints on the memory network, a registrar that treats the n-th connection as
/// `mode(n)`, and the user's endpoint started.
fn lab(mode: fn(usize) -> Mode) -> (ProbeContext, Arc<Mutex<Seen>>) {
    lab_for(spec(), mode)
}

/// [`lab`] for the endpoint of `spec`.
fn lab_for(spec: EndpointSpec, mode: fn(usize) -> Mode) -> (ProbeContext, Arc<Mutex<Seen>>) {
    let (cx, mut accepted) = memory_context();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let s = seen.clone();
    tokio::spawn(async move {
        let mut n = 0;
        while let Some(a) = accepted.recv().await {
            {
                let mut s = s.lock().unwrap();
                s.dials.push(Instant::now());
                s.hosts.push(a.host.clone());
            }
            tokio::spawn(serve(a, mode(n), s.clone()));
            n += 1;
        }
    });
    cx.endpoints.sync(vec![spec], &cx, &tokio::runtime::Handle::current());
    (cx, seen)
}

/// 200 to a REGISTER: its Contact kept for the expiry asked.
pub(super) fn register_ok(req: &Message) -> Vec<u8> {
    let expires = req.header("expires").and_then(|v| v.trim().parse().ok()).unwrap_or(3600u32);
    let contact = req.header("contact").unwrap_or_default().trim();
    message::reply(
        req,
        200,
        "OK",
        &message::token(6),
        &format!("Contact: {contact};expires={expires}\r\n"),
        None,
    )
}

async fn serve(a: Accepted, mode: Mode, seen: Arc<Mutex<Seen>>) {
    let (mut rd, wr) = tokio::io::split(a.far.stream());
    let wr: Writer = Arc::new(tokio::sync::Mutex::new(wr));
    seen.lock().unwrap().writers.push(wr.clone());
    let mut framer = Framer::new(None);
    let mut pings = 0;
    let mut registered = false;
    let mut chunk = [0u8; 4096];
    loop {
        while let Ok(Some(m)) = framer.next_message() {
            let StartLine::Request { method, .. } = &m.start else {
                seen.lock().unwrap().answers.push(m);
                continue;
            };
            let out = match method.as_str() {
                "REGISTER" => {
                    let expires = m.header("expires").and_then(|v| v.trim().parse().ok()).unwrap_or(0);
                    seen.lock().unwrap().registers.push((Instant::now(), expires));
                    if registered && mode == Mode::Silent {
                        continue;
                    }
                    registered = true;
                    match mode {
                        Mode::Redirect(to) => message::reply(
                            &m,
                            301,
                            "Moved Permanently",
                            "r",
                            &format!("Contact: <{to}>\r\n"),
                            None,
                        ),
                        _ => register_ok(&m),
                    }
                }
                "OPTIONS" if matches!(mode, Mode::Pong | Mode::Stale(..)) => {
                    message::reply(&m, 200, "OK", "t", "", None)
                }
                "MESSAGE" if matches!(mode, Mode::Stale(..)) => {
                    let Mode::Stale(stale_realm, again) = mode else { continue };
                    let auth = m.header("proxy-authorization").unwrap_or_default().to_owned();
                    seen.lock().unwrap().message_auths.push(auth.clone());
                    let challenge = |realm: &str, nonce: &str, stale: &str| {
                        format!(
                            "Proxy-Authenticate: Digest realm=\"{realm}\", nonce=\"{nonce}\", \
                             algorithm=SHA-256, qop=\"auth\"{stale}\r\n"
                        )
                    };
                    if auth.contains("nonce=\"n2\"") && again {
                        let c = challenge(stale_realm, "n3", ", stale=true");
                        message::reply(&m, 407, "Proxy Authentication Required", "t", &c, None)
                    } else if auth.contains("nonce=\"n2\"") {
                        message::reply(&m, 200, "OK", "t", "", None)
                    } else if auth.contains("nonce=\"n1\"") {
                        let c = challenge(stale_realm, "n2", ", stale=true");
                        message::reply(&m, 407, "Proxy Authentication Required", "t", &c, None)
                    } else {
                        let c = challenge("contoso.test", "n1", "");
                        message::reply(&m, 407, "Proxy Authentication Required", "t", &c, None)
                    }
                }
                _ => continue,
            };
            let mut w = wr.lock().await;
            let _ = w.write_all(&out).await;
            match mode {
                Mode::Drop => {
                    let _ = w.shutdown().await;
                    return;
                }
                Mode::Stall if method == "REGISTER" => {
                    let _ =
                        w.write_all(b"OPTIONS sip:alice@contoso.test SIP/2.0\r\nVia: SIP/2.0/TCP reg").await;
                }
                _ => {}
            }
        }
        if framer.keepalives() > pings {
            pings = framer.keepalives();
            if mode == Mode::Pong {
                let _ = wr.lock().await.write_all(b"\r\n").await;
            }
        }
        match rd.read(&mut chunk).await {
            Ok(0) | Err(_) => {
                seen.lock().unwrap().closed.push(Instant::now());
                return;
            }
            Ok(n) => {
                if framer.push(&chunk[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_stale_nonce_is_answered_once_in_the_same_realm_and_algorithm_and_never_in_another() {
    // The realm of the stale challenge: the first one (retried, delivered), or another
    // (refused: a stale retry must not switch realm).
    // A second stale challenge in a row is not answered again: auth_failed.
    let same: fn(usize) -> Mode = |_| Mode::Stale("contoso.test", false);
    let other: fn(usize) -> Mode = |_| Mode::Stale("attacker.example", false);
    let twice: fn(usize) -> Mode = |_| Mode::Stale("contoso.test", true);
    for (mode, delivered) in [(same, Some(true)), (other, Some(false)), (twice, None)] {
        let (cx, seen) = lab(mode);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let link = cx.endpoints.get("alice").and_then(|e| e.link()).expect("registered");
        let alice = User {
            auth: UserAuth::Digest {
                username: "alice".into(),
                password: crate::sip::auth::Secret::new("secret"),
                realm: None,
                allow_md5: false,
                min_algorithm: crate::sip::auth::Algorithm::Sha256,
            },
            ..user()
        };
        let bob = User { aor: Aor::parse("sip:bob@contoso.test").unwrap(), ..user() };
        let mut uac = super::client::Uac::new(&link, &alice, &bob, &cx);
        let mut tx = message::new_transaction();
        tx.method = "MESSAGE";
        let req = super::client::Req::to("sip:bob@contoso.test", Some(("text/plain", b"hi")));
        let r = uac.send(&req, &mut tx, Instant::now() + Duration::from_secs(5)).await;
        let auths = seen.lock().unwrap().message_auths.clone();
        if delivered.is_none() {
            let f = r.expect_err("a second stale challenge is not answered again");
            assert_eq!(f.reason, crate::failure::FailureReason::AuthFailed, "{f}");
            assert_eq!(auths.len(), 3, "{auths:?}");
        } else if delivered == Some(true) {
            let (resp, _) = r.expect("delivered after the stale retry");
            assert_eq!(resp.status(), Some(200));
            assert_eq!(auths.len(), 3, "{auths:?}");
            for (a, nonce) in auths[1..].iter().zip(["n1", "n2"]) {
                assert!(a.contains(&format!("nonce=\"{nonce}\"")), "{a}");
                assert!(a.contains("realm=\"contoso.test\"") && a.contains("algorithm=SHA-256"), "{a}");
            }
        } else {
            let f = r.expect_err("a stale challenge from another realm is not answered");
            assert_eq!(f.reason, crate::failure::FailureReason::PolicyRefused, "{f}");
            assert_eq!(auths.len(), 2, "nothing answered in the other realm: {auths:?}");
        }
    }
}

fn registered(cx: &ProbeContext) -> bool {
    cx.endpoints.statuses().first().is_some_and(|s| s.registered)
}

#[tokio::test(start_paused = true)]
async fn a_registrar_that_pongs_keeps_one_flow_and_gets_a_refresh_every_half_expiry_for_an_hour() {
    let (cx, seen) = lab(|_| Mode::Pong);
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert!(registered(&cx));
    let s = seen.lock().unwrap();
    assert_eq!(s.dials.len(), 1, "one connection for the whole hour");
    // Asked 600 s, refreshed at half: at 0, 300, …, 3300 s.
    assert_eq!(s.registers.len(), 12, "{:?}", s.registers.iter().map(|r| r.0 - start).collect::<Vec<_>>());
    for w in s.registers.windows(2) {
        let gap = w[1].0 - w[0].0;
        assert!(gap >= Duration::from_secs(299) && gap <= Duration::from_secs(301), "refresh after {gap:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_registrar_gone_silent_loses_the_flow_within_a_keepalive_period_and_the_pong_wait() {
    // The first connection goes silent after its REGISTER; later ones behave.
    let (cx, seen) = lab(|n| if n == 0 { Mode::Silent } else { Mode::Pong });
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert!(registered(&cx), "registered again over a new connection");
    let s = seen.lock().unwrap();
    assert_eq!(s.dials.len(), 2, "one new connection, not a storm");
    let noticed = s.dials[1] - start;
    // Keep-alive after 30 s, an OPTIONS unanswered for 10 s, then a backoff of 0.5-1 s.
    assert!(
        noticed >= Duration::from_secs(30) && noticed <= Duration::from_secs(42),
        "noticed after {noticed:?}"
    );
    assert_eq!(s.closed.first().map(|t| *t - start <= noticed), Some(true), "the silent flow was closed");
}

#[tokio::test(start_paused = true)]
async fn a_registrar_that_accepts_and_drops_gets_ever_fewer_attempts_not_one_a_second() {
    let (_cx, seen) = lab(|_| Mode::Drop);
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(600)).await;
    let s = seen.lock().unwrap();
    let n = s.dials.len();
    // Backoff 1 s doubling to 30 s, each wait jittered to half-to-whole: between 24 and
    // 45 connections in ten minutes (a reset on each short-lived success: 600).
    assert!((20..=46).contains(&n), "{n} connections in 10 minutes");
    let gaps: Vec<Duration> = s.dials.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.iter().skip(6).all(|g| *g >= Duration::from_secs(15)), "{gaps:?}");
    assert!(s.dials[0] - start < Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn a_message_that_never_ends_closes_the_connection_after_32_seconds() {
    let (cx, seen) = lab(|n| if n == 0 { Mode::Stall } else { Mode::Pong });
    tokio::time::sleep(Duration::from_secs(60)).await;
    let s = seen.lock().unwrap();
    let begun = s.registers[0].0;
    let closed = s.closed.first().copied().expect("the endpoint closed the stalled connection");
    let after = closed - begun;
    assert!(after >= Duration::from_secs(32) && after <= Duration::from_secs(34), "closed after {after:?}");
    assert_eq!(s.dials.len(), 2);
    drop(s);
    assert!(registered(&cx));
}

#[tokio::test(start_paused = true)]
async fn the_endpoint_answers_its_registrars_requests_and_unregisters_when_stopped() {
    let (cx, seen) = lab(|_| Mode::Pong);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(registered(&cx));
    let wr = seen.lock().unwrap().writers[0].clone();
    let request = |method: &str, user: &str, n: u32| {
        format!(
            "{method} sip:{user}@contoso.test SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bK-{method}-{n}\r\n\
             From: <sip:pool@contoso.test>;tag=p{n}\r\nTo: <sip:{user}@contoso.test>\r\nCall-ID: call-{n}\r\n\
             CSeq: {n} {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
    };
    for (n, (method, user)) in
        [("OPTIONS", "alice"), ("MESSAGE", "alice"), ("SUBSCRIBE", "alice"), ("OPTIONS", "mallory")]
            .iter()
            .enumerate()
    {
        wr.lock().await.write_all(request(method, user, n as u32).as_bytes()).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let answers: Vec<(String, u16)> = seen
        .lock()
        .unwrap()
        .answers
        .iter()
        .map(|m| (m.header("call-id").unwrap_or_default().trim().to_owned(), m.status().unwrap_or(0)))
        .collect();
    assert_eq!(
        answers,
        [("call-0", 200), ("call-1", 200), ("call-2", 405), ("call-3", 404)].map(|(c, s)| (c.to_owned(), s))
    );

    let registers = seen.lock().unwrap().registers.len();
    cx.endpoints.stop_all(Duration::from_secs(1)).await;
    let s = seen.lock().unwrap();
    assert_eq!(s.registers.len(), registers + 1, "one unregister");
    assert_eq!(s.registers.last().map(|r| r.1), Some(0), "Expires: 0");
}

#[tokio::test(start_paused = true)]
async fn a_redirect_is_followed_to_another_pool_only_and_never_to_a_weaker_transport() {
    // To the new pool over TCP: followed; the user reads homed there.
    let (cx, seen) =
        lab(|n| if n == 0 { Mode::Redirect("sip:newpool.contoso.test;transport=tcp") } else { Mode::Pong });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(seen.lock().unwrap().hosts, [POOL_FQDN, NEW_POOL_FQDN]);
    let st = cx.endpoints.statuses().remove(0);
    assert!(st.registered);
    assert_eq!(st.home_pool.as_deref(), Some("new"));

    // To a host of no pool, over UDP from TCP: refused, nothing sent there, and said so.
    let (cx, seen) = lab(|_| Mode::Redirect("sip:127.0.99.3:5060;transport=udp"));
    tokio::time::sleep(Duration::from_secs(5)).await;
    let st = cx.endpoints.statuses().remove(0);
    assert!(!st.registered);
    assert_eq!(st.reason, Some(crate::failure::FailureReason::PolicyRefused), "{st:?}");
    assert!(seen.lock().unwrap().hosts.iter().all(|h| h == POOL_FQDN), "only the planned pool was dialled");

    // To a host of no pool that the user's redirect_hosts names: followed (its home
    // pool then reads unknown).
    let mut listed = spec();
    listed.user.redirect_hosts = vec!["director.contoso.test".into()];
    let (cx, seen) = lab_for(listed, |n| {
        if n == 0 {
            Mode::Redirect("sip:Director.contoso.test;transport=tcp")
        } else {
            Mode::Pong
        }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(seen.lock().unwrap().hosts, [POOL_FQDN, "Director.contoso.test"]);
    let st = cx.endpoints.statuses().remove(0);
    assert!(st.registered, "{st:?}");
    assert_eq!(st.home_pool.as_deref(), Some("unknown"));
}

#[tokio::test(start_paused = true)]
async fn notifies_are_answered_by_the_subscriptions_the_endpoint_holds() {
    let (cx, seen) = lab(|_| Mode::Pong);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let endpoint = cx.endpoints.get("alice").unwrap();
    let link = endpoint.link().expect("registered");
    let sub = super::subscription::Subscription::new("sip:bob@contoso.test", "sub-1", "w1", &link);
    assert!(endpoint.subscriptions.hold(sub.clone()));
    sub.established(
        crate::sip::dialog::Dialog {
            call_id: "sub-1".into(),
            local_tag: "w1".into(),
            remote_tag: Some("pres".into()),
            remote_target: "sip:pres@pool.contoso.test".into(),
            route_set: Vec::new(),
            local_seq: 1,
        },
        600,
    );
    assert!(endpoint.subscriptions.to("sip:bob@contoso.test", &link).is_some());
    let wr = seen.lock().unwrap().writers[0].clone();
    let notify = |n: u32, call_id: &str, to_tag: &str, state: &str, body: &str| {
        format!(
            "NOTIFY sip:alice@contoso.test SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bK-n{n}\r\n\
             From: <sip:bob@contoso.test>;tag=pres\r\nTo: <sip:alice@contoso.test>;tag={to_tag}\r\n\
             Call-ID: {call_id}\r\nCSeq: {n} NOTIFY\r\nMax-Forwards: 70\r\nEvent: presence\r\n\
             Subscription-State: {state}\r\nContent-Type: application/pidf+xml\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let first = sub.expect("first").expect("a wait");
    let later = sub.expect("never sent").expect("a wait");
    for text in [
        notify(1, "sub-1", "w1", "active;expires=600", "<note>first</note>"),
        // Another subscription's, and one with our Call-ID but not our tag: 481.
        notify(2, "sub-2", "w1", "active", "<note>other</note>"),
        notify(3, "sub-1", "forged", "active", "<note>forged</note>"),
    ] {
        wr.lock().await.write_all(text.as_bytes()).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    assert!(
        matches!(first.seen(deadline).await, super::subscription::Seen::At(_)),
        "the awaited value is seen"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let n = sub.notified();
    assert_eq!((n.count, n.excerpt.as_str(), n.terminated.as_deref()), (1, "<note>first</note>", None));
    // An expiry past any clock: not believed (no overflow), the subscription goes on.
    wr.lock()
        .await
        .write_all(notify(5, "sub-1", "w1", "active;expires=18446744073709551615", "").as_bytes())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(endpoint.subscriptions.to("sip:bob@contoso.test", &link).is_some());
    assert!(!link.is_closed(), "the reader is alive");
    wr.lock()
        .await
        .write_all(notify(4, "sub-1", "w1", "terminated;reason=deactivated", "").as_bytes())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(sub.notified().terminated.as_deref(), Some("deactivated"));
    assert_eq!(
        later.seen(Instant::now() + Duration::from_secs(5)).await,
        super::subscription::Seen::Terminated,
        "a probe still waiting learns that the subscription ended"
    );
    assert!(
        endpoint.subscriptions.to("sip:bob@contoso.test", &link).is_none(),
        "a terminated one is not used"
    );
    let answers: Vec<(String, u16)> = seen
        .lock()
        .unwrap()
        .answers
        .iter()
        .map(|m| (m.header("cseq").unwrap_or_default().trim().to_owned(), m.status().unwrap_or(0)))
        .collect();
    let want =
        [("1 NOTIFY", 200), ("2 NOTIFY", 481), ("3 NOTIFY", 481), ("5 NOTIFY", 200), ("4 NOTIFY", 200)];
    assert_eq!(answers, want.map(|(c, s)| (c.to_owned(), s)));
}
