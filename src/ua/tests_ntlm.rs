//! Test users signing in with NTLM (MS-SIPAE) against a registrar played on the
//! in-memory network: the registrar here is the server side of `sip::ntlm` and
//! `sip::sipae` (the client side is checked against pyspnego and pidgin-sipe's OCS
//! captures elsewhere); what these tests show is the user agent's behaviour — the
//! handshake in versions 3 and 4, every REGISTER refresh and every answer to the
//! registrar signed, every message of the registrar's checked, and each fault with its
//! own reason.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::client::{Req, Uac};
use super::endpoint::EndpointSpec;
use super::memory::Accepted;
use super::ProbeContext;
use crate::failure::FailureReason;
use crate::model::pool::{Pool, Role};
use crate::model::users::{Aor, User, UserAuth};
use crate::net::tls::{TlsOptions, TlsVersion};
use crate::sip::auth::{Challenge, Secret};
use crate::sip::framer::Framer;
use crate::sip::message::{self, Message, StartLine, Transport};
use crate::sip::ntlm::{self, AuthenticateMsg, ChallengeMsg};
use crate::sip::sipae::{self, Association};

const POOL: &str = "fe01.contoso.test";
const REALM: &str = "SIP Communications Service";
const PASSWORD: &str = "Pa$$w0rd-ntlm";

/// What the played registrar does wrong, if anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    /// It knows another password.
    WrongPassword,
    /// Its first 200 carries a signature that does not match.
    Tamper,
    /// It signs its first 200, then never again (on any connection).
    StopSigning,
    /// Its clock is 20 minutes ahead.
    Skew,
    /// It offers Kerberos only.
    KerberosOnly,
    /// It forgets the association once, at the first refresh.
    DropOnce,
    /// It accepts the REGISTER at once, unsigned: no sign-in at all.
    NoSignIn,
    /// It forgets the association once, at the user's first MESSAGE.
    DropAtMessage,
    /// It challenges every MESSAGE (and forgets the association each time).
    DropEveryMessage,
    /// It authenticates as a proxy: `407`, `Proxy-Authenticate`.
    Proxy,
}

#[derive(Default)]
struct Seen {
    /// REGISTERs whose signature checked (after the handshake).
    signed_registers: usize,
    /// Unsigned or wrongly signed requests of the user's.
    bad: usize,
    /// Handshakes completed.
    handshakes: usize,
    /// Answers of the endpoint to the registrar's requests: (Call-ID, status, signature ok).
    answers: Vec<(String, u16, bool)>,
    writers: Vec<Arc<tokio::sync::Mutex<tokio::io::WriteHalf<tokio::io::DuplexStream>>>>,
    sa: Option<Association>,
    /// 200s sent, on every connection.
    oks: usize,
    /// MESSAGEs of the user's whose signature checked.
    messages: usize,
}

fn user() -> User {
    User {
        name: "alice".into(),
        aor: Aor::parse("sip:alice@contoso.test").unwrap(),
        pool: "lync".into(),
        auth: UserAuth::Ntlm {
            domain: "CONTOSO".into(),
            username: "alice".into(),
            password: Secret::new(PASSWORD),
        },
        transport: Transport::Tls,
        port: 5061,
        sip: true,
        redirect_hosts: Vec::new(),
    }
}

fn lab(version: u32, fault: Fault) -> (ProbeContext, Arc<Mutex<Seen>>) {
    let (cx, mut accepted) = super::tests::memory_context();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let s = seen.clone();
    tokio::spawn(async move {
        while let Some(a) = accepted.recv().await {
            tokio::spawn(serve(a, version, fault, s.clone()));
        }
    });
    let spec = EndpointSpec {
        user: user(),
        registrar: POOL.into(),
        opts: TlsOptions { min_version: TlsVersion::V1_2, skip_verify: false, min_days_valid: None },
        pools: vec![Pool {
            name: "lync".into(),
            role: Role::New,
            fqdn: POOL.into(),
            tls_min_version: None,
            members: Vec::new(),
            presence: Default::default(),
            site: None,
        }],
    };
    cx.endpoints.sync(vec![spec], &cx, &tokio::runtime::Handle::current());
    (cx, seen)
}

fn parse(bytes: &[u8]) -> Message {
    match message::parse(bytes, false) {
        Ok(message::Parsed::Complete(m, _)) => m,
        _ => panic!("unparsable: {}", String::from_utf8_lossy(bytes)),
    }
}

/// `bytes` with the header `name: value` added.
fn with_header(bytes: &[u8], name: &str, value: &str) -> Vec<u8> {
    let end = bytes.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    [&bytes[..end], format!("\r\n{name}: {value}").as_bytes(), &bytes[end..]].concat()
}

fn ntlm_auth(m: &Message) -> Option<Challenge> {
    m.headers
        .iter()
        .filter(|(n, _)| n == "authorization" || n == "proxy-authorization")
        .filter_map(|(_, v)| Challenge::parse(v).ok())
        .find(|c| c.scheme == "NTLM")
}

fn target_info() -> Vec<u8> {
    let mut t = Vec::new();
    for (id, v) in [(2u16, "CONTOSO"), (1, "FE01"), (4, "contoso.test"), (3, POOL)] {
        let v = ntlm::unicode(v);
        t.extend_from_slice(&id.to_le_bytes());
        t.extend_from_slice(&(v.len() as u16).to_le_bytes());
        t.extend_from_slice(&v);
    }
    t.extend_from_slice(&[0, 0, 0, 0]);
    t
}

async fn serve(a: Accepted, version: u32, fault: Fault, seen: Arc<Mutex<Seen>>) {
    let (mut rd, wr) = tokio::io::split(a.far.stream());
    let wr = Arc::new(tokio::sync::Mutex::new(wr));
    seen.lock().unwrap().writers.push(wr.clone());
    let mut framer = Framer::new(None);
    let mut chunk = [0u8; 8192];
    let mut server_challenge = [0u8; 8];
    let mut dropped = false;
    let date = |ahead: bool| {
        let t = std::time::SystemTime::now() + if ahead { Duration::from_secs(1200) } else { Duration::ZERO };
        format!("Date: {}\r\n", httpdate::fmt_http_date(t))
    };
    loop {
        while let Ok(Some(m)) = framer.next_message() {
            let StartLine::Request { method, .. } = &m.start else {
                let sa = seen.lock().unwrap().sa.clone();
                let ok = sa.is_some_and(|sa| sa.verify(&m).is_ok());
                let call_id = m.header("call-id").unwrap_or("").trim().to_owned();
                seen.lock().unwrap().answers.push((call_id, m.status().unwrap_or(0), ok));
                continue;
            };
            let (code, phrase, challenge_name, answer_name) = if fault == Fault::Proxy {
                (407, "Proxy Authentication Required", "Proxy-Authenticate", "Proxy-Authorization")
            } else {
                (401, "Unauthorized", "WWW-Authenticate", "Authorization")
            };
            let challenge = |extra: &str| {
                let mut h = String::new();
                if fault == Fault::KerberosOnly || extra.is_empty() {
                    h.push_str(&format!(
                        "{challenge_name}: Kerberos realm=\"{REALM}\", targetname=\"sip/{POOL}\", version={version}\r\n"
                    ));
                }
                if fault != Fault::KerberosOnly {
                    h.push_str(&format!(
                        "{challenge_name}: NTLM realm=\"{REALM}\", targetname=\"{POOL}\", version={version}{extra}\r\n"
                    ));
                }
                h.push_str(&date(fault == Fault::Skew));
                message::reply(&m, code, phrase, "srv", &h, None)
            };
            let out: Vec<u8> = if method == "REGISTER" && fault == Fault::NoSignIn {
                let contact = m
                    .header("contact")
                    .map(|c| format!("Contact: {};expires=600\r\n", c.trim()))
                    .unwrap_or_default();
                message::reply(&m, 200, "OK", "srv", &contact, None)
            } else if method == "REGISTER" {
                let auth = ntlm_auth(&m);
                let sa = seen.lock().unwrap().sa.clone();
                match (auth.as_ref().and_then(|c| c.param("gssapi-data").map(str::to_owned)), sa) {
                    // Signed on the association: checked, answered signed.
                    (None, Some(sa)) if auth.as_ref().is_some_and(|c| c.param("response").is_some()) => {
                        if fault == Fault::DropOnce && !dropped {
                            dropped = true;
                            seen.lock().unwrap().sa = None;
                            challenge("")
                        } else if sa.verify(&m).is_ok() {
                            seen.lock().unwrap().signed_registers += 1;
                            ok(&m, fault, &seen)
                        } else {
                            seen.lock().unwrap().bad += 1;
                            message::reply(&m, 403, "Forbidden", "srv", "", None)
                        }
                    }
                    (Some(g), _) if g.is_empty() => {
                        let _ = ring::rand::SecureRandom::fill(
                            &ring::rand::SystemRandom::new(),
                            &mut server_challenge,
                        );
                        let c = ChallengeMsg {
                            flags: ntlm::SERVER_FLAGS,
                            server_challenge,
                            target_info: target_info(),
                        };
                        let token = openssl::base64::encode_block(&c.to_bytes());
                        challenge(&format!(", opaque=\"0A1B2C3D\", gssapi-data=\"{token}\""))
                    }
                    (Some(g), _) => {
                        let password = if fault == Fault::WrongPassword { "another one" } else { PASSWORD };
                        let msg =
                            AuthenticateMsg::parse(&openssl::base64::decode_block(&g).unwrap()).unwrap();
                        match msg.verify(password, &server_challenge) {
                            Ok(keys) => {
                                let sa = Association::new(
                                    REALM,
                                    POOL,
                                    "0A1B2C3D",
                                    version,
                                    answer_name,
                                    sipae::Role::Server,
                                    keys,
                                );
                                // Version 4 signs the AUTHENTICATE's own REGISTER.
                                if version >= 4 && sa.verify(&m).is_err() {
                                    seen.lock().unwrap().bad += 1;
                                }
                                {
                                    let mut s = seen.lock().unwrap();
                                    s.sa = Some(sa);
                                    s.handshakes += 1;
                                }
                                ok(&m, fault, &seen)
                            }
                            Err(_) => challenge(""),
                        }
                    }
                    _ => challenge(""),
                }
            } else if method == "OPTIONS" {
                ok(&m, fault, &seen)
            } else if method == "MESSAGE" {
                let sa = seen.lock().unwrap().sa.clone();
                // Signed in the header the challenge asked for.
                let proxy = m.header("proxy-authorization").is_some();
                if sa.is_none_or(|sa| sa.verify(&m).is_err()) || proxy != (fault == Fault::Proxy) {
                    seen.lock().unwrap().bad += 1;
                    message::reply(&m, 403, "Forbidden", "srv", "", None)
                } else if fault == Fault::DropEveryMessage || (fault == Fault::DropAtMessage && !dropped) {
                    dropped = true;
                    seen.lock().unwrap().sa = None;
                    challenge("")
                } else {
                    seen.lock().unwrap().messages += 1;
                    ok(&m, fault, &seen)
                }
            } else {
                continue;
            };
            let _ = wr.lock().await.write_all(&out).await;
        }
        if framer.keepalives() > 0 && framer.buffered() == 0 {
            let _ = wr.lock().await.write_all(b"\r\n").await;
        }
        match rd.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if framer.push(&chunk[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

/// A signed 200 (its Contact kept for the expiry asked), as `fault` has it.
fn ok(m: &Message, fault: Fault, seen: &Mutex<Seen>) -> Vec<u8> {
    let nth = {
        let mut s = seen.lock().unwrap();
        s.oks += 1;
        s.oks
    };
    let expires = m.header("expires").and_then(|v| v.trim().parse().ok()).unwrap_or(600u32);
    let contact = m
        .header("contact")
        .map(|c| format!("Contact: {};expires={expires}\r\n", c.trim()))
        .unwrap_or_default();
    let plain = message::reply(m, 200, "OK", "srv", &contact, None);
    if fault == Fault::StopSigning && nth > 1 {
        return plain;
    }
    let mut sa = seen.lock().unwrap().sa.clone().expect("an association");
    let (name, mut value) = sa.sign(&parse(&plain));
    seen.lock().unwrap().sa = Some(sa);
    if fault == Fault::Tamper {
        value = value.replacen("rspauth=\"01000000", "rspauth=\"01000001", 1);
    }
    with_header(&plain, name, &value)
}

/// `alice` sends bob a MESSAGE through the played registrar: its final status.
async fn message(cx: &ProbeContext) -> Result<u16, crate::failure::Failure> {
    let link = cx.endpoints.get("alice").expect("alice's endpoint").registered_link()?;
    let (alice, mut bob) = (user(), user());
    bob.name = "bob".into();
    bob.aor = Aor::parse("sip:bob@contoso.test").unwrap();
    let mut uac = Uac::new(&link, &alice, &bob, cx);
    let mut tx = message::new_transaction();
    tx.method = "MESSAGE";
    let to = uac.to_uri().to_owned();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let (resp, _) = uac.send(&Req::to(&to, Some(("text/plain", b"hello"))), &mut tx, deadline).await?;
    Ok(resp.status().unwrap_or(0))
}

fn status(cx: &ProbeContext) -> crate::ua::endpoint::EndpointStatus {
    cx.endpoints.statuses().remove(0)
}

#[tokio::test(start_paused = true)]
async fn a_user_signs_in_with_ntlm_v3_and_v4_and_every_message_after_is_signed() {
    for version in [3, 4] {
        let (cx, seen) = lab(version, Fault::None);
        tokio::time::sleep(Duration::from_secs(1800)).await;
        let st = status(&cx);
        assert!(st.registered, "version {version}: {st:?}");
        {
            let s = seen.lock().unwrap();
            assert_eq!(s.handshakes, 1, "version {version}: one handshake for half an hour");
            // Asked 600 s, refreshed every 300 s: five refreshes in 1,800 s, each signed.
            assert!(s.signed_registers >= 5, "version {version}: {} signed refreshes", s.signed_registers);
            assert_eq!(s.bad, 0, "version {version}: nothing unsigned");
        }
        // The registrar sends the user a signed MESSAGE and an unsigned one: the first is
        // answered, with the user's signature; the second is dropped.
        let wr = seen.lock().unwrap().writers[0].clone();
        let request = |n: u32| {
            format!(
                "MESSAGE sip:alice@contoso.test SIP/2.0\r\nVia: SIP/2.0/TLS 10.0.0.1:5061;branch=z9hG4bKsrv{n}\r\n\
                 From: <sip:bob@contoso.test>;tag=b{n}\r\nTo: <sip:alice@contoso.test>\r\nCall-ID: ntlm-{n}\r\n\
                 CSeq: {n} MESSAGE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
            )
        };
        let signed = {
            let mut sa = seen.lock().unwrap().sa.clone().unwrap();
            let plain = request(1);
            let (name, value) = sa.sign(&parse(plain.as_bytes()));
            seen.lock().unwrap().sa = Some(sa);
            with_header(plain.as_bytes(), name, &value)
        };
        wr.lock().await.write_all(&signed).await.unwrap();
        wr.lock().await.write_all(request(2).as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let answers = seen.lock().unwrap().answers.clone();
        assert_eq!(answers, [("ntlm-1".to_owned(), 200, true)], "version {version}");
        cx.endpoints.stop_all(Duration::from_secs(1)).await;
        assert!(
            seen.lock().unwrap().signed_registers >= 6,
            "version {version}: the unregister is signed too"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn each_ntlm_fault_has_its_own_reason() {
    for (fault, reason, detail) in [
        (Fault::WrongPassword, FailureReason::AuthFailed, "NTLM credentials refused"),
        (Fault::Tamper, FailureReason::AuthSignature, "does not match"),
        (Fault::Skew, FailureReason::ClockSkew, "s ahead of the agent's"),
        (
            Fault::KerberosOnly,
            FailureReason::AuthFailed,
            "scheme not supported: no NTLM challenge (offered: Kerberos)",
        ),
        (Fault::NoSignIn, FailureReason::AuthSignature, "accepted without an NTLM sign-in"),
    ] {
        let (cx, _) = lab(4, fault);
        tokio::time::sleep(Duration::from_secs(5)).await;
        let st = status(&cx);
        assert!(!st.registered, "{fault:?}");
        assert_eq!(st.reason, Some(reason), "{fault:?}: {st:?}");
        assert!(st.detail.as_deref().unwrap_or("").contains(detail), "{fault:?}: {st:?}");
    }
    // A registrar that stops signing after the sign-in: the first refresh fails.
    let (cx, _) = lab(4, Fault::StopSigning);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(status(&cx).registered);
    tokio::time::sleep(Duration::from_secs(301)).await;
    let st = status(&cx);
    assert_eq!(st.reason, Some(FailureReason::AuthSignature), "{st:?}");
}

#[tokio::test(start_paused = true)]
async fn a_dropped_association_is_set_up_again() {
    let (cx, seen) = lab(4, Fault::DropOnce);
    tokio::time::sleep(Duration::from_secs(400)).await;
    let st = status(&cx);
    assert!(st.registered, "{st:?}");
    let s = seen.lock().unwrap();
    assert_eq!(s.handshakes, 2, "signed in again when the first refresh was challenged");
    assert_eq!(s.bad, 0);
}

#[tokio::test(start_paused = true)]
async fn a_message_challenged_inside_the_association_signs_in_again_once() {
    let (cx, seen) = lab(4, Fault::DropAtMessage);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(message(&cx).await.unwrap(), 200);
    {
        let s = seen.lock().unwrap();
        assert_eq!((s.handshakes, s.messages, s.bad), (2, 1, 0), "signed in again, then delivered");
    }
    // The next one goes on the new association, with no new sign-in.
    assert_eq!(message(&cx).await.unwrap(), 200);
    assert_eq!(seen.lock().unwrap().handshakes, 2);

    // A pool that challenges every MESSAGE: one new sign-in, then the probe fails.
    let (cx, seen) = lab(4, Fault::DropEveryMessage);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let f = message(&cx).await.unwrap_err();
    assert_eq!(f.reason, FailureReason::AuthFailed, "{f:?}");
    assert!(f.detail.contains("dropped the security association again after alice signed in anew"), "{f:?}");
    let s = seen.lock().unwrap();
    assert_eq!((s.handshakes, s.messages), (2, 0), "signed in again once, not in a loop");
}

#[tokio::test(start_paused = true)]
async fn a_pool_authenticating_as_a_proxy_is_answered_and_signed_in_proxy_headers() {
    let (cx, seen) = lab(4, Fault::Proxy);
    tokio::time::sleep(Duration::from_secs(700)).await;
    let st = status(&cx);
    assert!(st.registered, "{st:?}");
    assert_eq!(message(&cx).await.unwrap(), 200);
    let s = seen.lock().unwrap();
    assert_eq!(s.handshakes, 1);
    assert!(s.signed_registers >= 2, "{} signed refreshes", s.signed_registers);
    assert_eq!((s.messages, s.bad), (1, 0), "the MESSAGE signed in Proxy-Authorization");
}

/// Connections of a probe's own (not an endpoint's) over the memory network.
struct Dialled(Arc<dyn super::conn::Dial>);

impl super::registration::Connector for Dialled {
    type Conn = super::conn::SipConn;

    fn connect(
        &mut self,
        host: &str,
        port: u16,
        transport: Transport,
        _phases: &mut Vec<(crate::model::outcome::Phase, Duration)>,
    ) -> impl std::future::Future<Output = Result<Self::Conn, crate::failure::Failure>> + Send {
        let (dial, host) = (self.0.clone(), host.to_owned());
        async move {
            dial.dial(&host, port, transport)
                .await
                .map_err(|e| crate::failure::Failure::new(FailureReason::Io, e.to_string()))
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_skewed_registrar_clock_is_measured_on_the_failing_probe() {
    for (fault, low, high) in [(Fault::Skew, 1195.0, 1205.0), (Fault::None, -2.0, 2.0)] {
        let (cx, _) = lab(4, fault);
        let (user, pools) = (user(), Vec::new());
        let plan = super::registration::Plan {
            user: &user,
            host: POOL,
            port: 5061,
            pools: &pools,
            expires: 600,
            deadline: tokio::time::Instant::now() + Duration::from_secs(5),
        };
        let mut dialled = Dialled(cx.endpoints.dialer().expect("the memory network"));
        let mut skew = None;
        match super::registration::register(&mut dialled, &plan, &cx, &mut Vec::new(), &mut skew).await {
            Err(f) => assert_eq!(f.reason, FailureReason::ClockSkew, "{fault:?}"),
            Ok(r) => {
                assert_eq!(fault, Fault::None);
                assert_eq!(r.binding.creds.skew(), skew);
            }
        }
        assert!(skew.is_some_and(|s| (low..high).contains(&s)), "{fault:?}: {skew:?}");
    }
}
