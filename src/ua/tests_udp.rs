//! The registered endpoint over UDP on the in-memory network ([`super::memory`]) under
//! paused time: the client transaction's timer E on the endpoint's link (a request and
//! the OPTIONS keep-alive retransmitted at T1, 2·T1, …), the keep-alive's loss ending
//! the flow, and the server side: requests matched to their transactions by the
//! RFC 3261 branch or, for an RFC 2543 Via, by the §17.2.3 fallback, each retransmission
//! answered from its transaction.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::endpoint::EndpointSpec;
use super::memory::{Accepted, Peer};
use super::tests::{memory_context, register_ok, spec, user};
use super::ProbeContext;
use crate::model::users::{Aor, User};
use crate::sip::message::{self, Message, Parsed, StartLine, Transport};

/// What the played UDP registrar does with a connection's requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Answers the REGISTER, then hands its end to the test.
    Handoff,
    /// Answers REGISTER and OPTIONS.
    Answering,
    /// Answers the first REGISTER, then nothing.
    Silent,
}

#[derive(Default)]
struct Seen {
    /// When each connection was opened.
    dials: Vec<Instant>,
    /// Each request received: when, on which connection, its method.
    requests: Vec<(Instant, usize, String)>,
    /// The registrar's end of a connection in [`Mode::Handoff`], once registered.
    handed: Option<Peer>,
}

fn udp_spec() -> EndpointSpec {
    let mut s = spec();
    s.user.transport = Transport::Udp;
    s
}

fn parse(d: &[u8]) -> Option<Message> {
    match message::parse(d, false) {
        Ok(Parsed::Complete(m, _)) => Some(m),
        _ => None,
    }
}

/// The endpoints on the memory network, a UDP registrar treating the n-th connection
/// as `mode(n)`, and the user's endpoint started.
fn lab(mode: fn(usize) -> Mode) -> (ProbeContext, Arc<Mutex<Seen>>) {
    let (cx, mut accepted) = memory_context();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let s = seen.clone();
    tokio::spawn(async move {
        let mut n = 0;
        while let Some(a) = accepted.recv().await {
            tokio::spawn(serve(a, n, mode(n), s.clone()));
            n += 1;
        }
    });
    cx.endpoints.sync(vec![udp_spec()], &cx, &tokio::runtime::Handle::current());
    (cx, seen)
}

async fn serve(a: Accepted, conn: usize, mode: Mode, seen: Arc<Mutex<Seen>>) {
    let mut peer = a.far.datagrams();
    let mut registered = false;
    seen.lock().unwrap().dials.push(Instant::now());
    while let Some(d) = peer.recv().await {
        let Some(m) = parse(&d) else { continue };
        let StartLine::Request { method, .. } = &m.start else { continue };
        seen.lock().unwrap().requests.push((Instant::now(), conn, method.clone()));
        let out = match (method.as_str(), mode) {
            ("REGISTER", Mode::Silent) if registered => continue,
            ("REGISTER", _) => {
                registered = true;
                register_ok(&m)
            }
            ("OPTIONS", Mode::Answering) => message::reply(&m, 200, "OK", "o", "", None),
            _ => continue,
        };
        peer.send(&out);
        if mode == Mode::Handoff {
            seen.lock().unwrap().handed = Some(peer);
            return;
        }
    }
}

/// The registrar's end of the first connection, handed to the test once registered.
async fn handed(seen: &Arc<Mutex<Seen>>) -> Peer {
    tokio::time::sleep(Duration::from_millis(100)).await;
    seen.lock().unwrap().handed.take().expect("registered")
}

#[tokio::test(start_paused = true)]
async fn over_udp_a_request_is_sent_again_on_timer_e_until_answered() {
    let (cx, seen) = lab(|_| Mode::Handoff);
    // The registrar's end now belongs to the test: it answers a MESSAGE's third
    // transmission only.
    let mut p = handed(&seen).await;
    let link = cx.endpoints.get("alice").and_then(|e| e.link()).expect("registered");
    assert_eq!(link.transport, Transport::Udp);
    let bob = User { aor: Aor::parse("sip:bob@contoso.test").unwrap(), ..user() };
    let alice = user();
    let registrar = tokio::spawn(async move {
        let mut at = Vec::new();
        while let Some(d) = p.recv().await {
            let Some(m) = parse(&d) else { continue };
            if !matches!(&m.start, StartLine::Request { method, .. } if method == "MESSAGE") {
                continue;
            }
            at.push(Instant::now());
            if at.len() == 3 {
                p.send(&message::reply(&m, 200, "OK", "m", "", None));
                return at;
            }
        }
        at
    });
    let mut uac = super::client::Uac::new(&link, &alice, &bob, &cx);
    let mut tx = message::new_transaction();
    tx.method = "MESSAGE";
    let req = super::client::Req::to("sip:bob@contoso.test", Some(("text/plain", b"hi")));
    let r = uac.send(&req, &mut tx, Instant::now() + Duration::from_secs(10)).await;
    let (resp, _) = r.expect("answered");
    assert_eq!(resp.status(), Some(200));
    let at = registrar.await.unwrap();
    assert_eq!(at.len(), 3);
    // Timer E: T1 (500 ms), then 2·T1 (1 s) later.
    assert_eq!(at[1] - at[0], Duration::from_millis(500));
    assert_eq!(at[2] - at[1], Duration::from_millis(1000));
}

#[tokio::test(start_paused = true)]
async fn over_udp_a_lost_keepalive_ends_the_flow_and_the_user_registers_again() {
    let (cx, seen) = lab(|n| if n == 0 { Mode::Silent } else { Mode::Answering });
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(cx.endpoints.statuses().first().is_some_and(|s| s.registered), "registered again");
    let s = seen.lock().unwrap();
    assert_eq!(s.dials.len(), 2, "one new flow, not a storm");
    // The keep-alive OPTIONS after 30 s, sent again on timer E for its 10 s wait
    // (0, 0.5, 1.5, 3.5, 7.5 s), then a new flow after a backoff of 0.5-1 s.
    let options: Vec<Duration> =
        s.requests.iter().filter(|r| r.1 == 0 && r.2 == "OPTIONS").map(|r| r.0 - start).collect();
    assert_eq!(options.len(), 5, "{options:?}");
    let gaps: Vec<u64> = options.windows(2).map(|w| (w[1] - w[0]).as_millis() as u64).collect();
    assert_eq!(gaps, [500, 1000, 2000, 4000]);
    let noticed = s.dials[1] - start;
    assert!(noticed >= Duration::from_secs(40) && noticed <= Duration::from_secs(42), "{noticed:?}");
}

/// A MESSAGE from the registrar to alice with the given Via and Call-ID.
fn message_to_alice(via: &str, call_id: &str) -> Vec<u8> {
    format!(
        "MESSAGE sip:alice@contoso.test SIP/2.0\r\nVia: {via}\r\nFrom: <sip:bob@contoso.test>;tag=b\r\n\
         To: <sip:alice@contoso.test>\r\nCall-ID: {call_id}\r\nCSeq: 1 MESSAGE\r\nMax-Forwards: 70\r\n\
         Content-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi"
    )
    .into_bytes()
}

#[tokio::test(start_paused = true)]
async fn over_udp_requests_are_matched_by_branch_or_the_rfc_2543_rule_and_retransmissions_answered_once() {
    let (_cx, seen) = lab(|_| Mode::Handoff);
    let mut p = handed(&seen).await;
    // Two RFC 2543 requests (no z9hG4bK branch) from the same proxy Via: told apart by
    // Call-ID (§17.2.3); a retransmission of the first; and two RFC 3261 ones.
    let old_via = "SIP/2.0/UDP 127.0.0.1:5060";
    let sends = [
        message_to_alice(old_via, "legacy-1"),
        message_to_alice(old_via, "legacy-2"),
        message_to_alice(old_via, "legacy-1"),
        message_to_alice("SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-a", "new-1"),
        message_to_alice("SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-a", "new-1"),
        message_to_alice("SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-b", "new-2"),
        // The same Call-ID, CSeq and tags in a transaction of its own (another branch).
        message_to_alice("SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-c", "new-1"),
    ];
    let mut answers = Vec::new();
    for d in &sends {
        p.send(d);
        let a = tokio::time::timeout(Duration::from_secs(1), p.recv()).await.expect("answered").unwrap();
        answers.push(parse(&a).expect("a response"));
    }
    let call_ids: Vec<&str> = answers.iter().map(|m| m.header("call-id").unwrap_or("").trim()).collect();
    assert_eq!(call_ids, ["legacy-1", "legacy-2", "legacy-1", "new-1", "new-1", "new-2", "new-1"]);
    let to = |m: &Message| m.header("to").unwrap_or("").to_owned();
    // A retransmission gets its transaction's answer (the same To tag), not a new one.
    assert_eq!(to(&answers[2]), to(&answers[0]));
    assert_ne!(to(&answers[1]), to(&answers[0]));
    assert_eq!(to(&answers[4]), to(&answers[3]));
    assert_ne!(to(&answers[5]), to(&answers[3]));
    assert_ne!(to(&answers[6]), to(&answers[3]), "another branch is another transaction");
    // Five transactions, five answers: the retransmissions were absorbed.
    let unique = answers.iter().map(to).collect::<std::collections::HashSet<_>>().len();
    assert_eq!(unique, 5);
}
