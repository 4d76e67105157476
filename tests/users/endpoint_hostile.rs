//! A registered endpoint against a hostile registrar (an in-process fake: a real one
//! does not send these). The fake accepts every REGISTER (no authentication), answers
//! every MESSAGE with 200 without delivering it, and the test pushes requests down the
//! endpoints' connections: a 10 MB body, garbage, a request for another user, over TCP
//! and UDP. The endpoint answers or drops, never panics, buffers nothing past 64 KiB,
//! and registers again after closing a connection it cannot trust. Over UDP, requests
//! behind an RFC 2543 proxy (no branch) are told apart, and a flood of large requests
//! with distinct branches keeps no more answers than the endpoints' budget.

use crate::common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use coexistd::lab::registrar::{header, ok, read_message, FakeRegistrar, Seen};
use common::{sample, Agent, Knot};

const IP: &str = "127.0.53.1";

/// The response whose Call-ID is `call_id`, waiting for it.
fn response(seen: &Arc<Mutex<Seen>>, udp: bool, call_id: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        {
            let s = seen.lock().unwrap();
            let list = if udp { &s.udp_responses } else { &s.tcp_responses };
            if let Some(r) = list.iter().find(|r| header(r, "Call-ID") == call_id) {
                return r.clone();
            }
        }
        assert!(Instant::now() < deadline, "no response with Call-ID {call_id}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The connection alice is registered over now (waiting for one).
fn alice_conn(seen: &Arc<Mutex<Seen>>) -> TcpStream {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some((_, c)) = seen.lock().unwrap().tcp.iter().find(|(u, _)| u == "alice") {
            return c.try_clone().unwrap();
        }
        assert!(Instant::now() < deadline, "alice never registered");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn request(method: &str, user: &str, extra: &str, body_len: usize) -> String {
    format!(
        "{method} sip:{user}@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP {IP}:5060;branch=z9hG4bKhostile{method}{user}\r\n\
         From: <sip:mallory@contoso.test>;tag=m\r\nTo: <sip:{user}@contoso.test>\r\nCall-ID: hostile-{method}-{user}\r\n\
         CSeq: 1 {method}\r\nMax-Forwards: 70\r\n{extra}Content-Length: {body_len}\r\n\r\n"
    )
}

fn current_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn a_hostile_registrar_gets_answers_or_a_closed_connection_and_the_endpoint_registers_again() {
    let knot = Knot::start("contoso.test", &format!("pool A {IP}\n"));
    let fake = FakeRegistrar::start(IP, 60, true).unwrap();
    let (port, seen, udp_probe) = (fake.port, fake.seen.clone(), fake.udp.try_clone().unwrap());
    let mut users = String::new();
    for (u, t) in [("alice", "tcp"), ("bob", "tcp"), ("carol", "udp")] {
        users.push_str(&format!(
            "[[users]]\nname = \"{u}\"\nuri = \"sip:{u}@contoso.test\"\npool = \"p\"\nauth = \"none\"\n\
             transport = \"{t}\"\nport = {port}\n"
        ));
    }
    let agent = Agent::start(&format!(
        "[agent]\nlisten = \"{{listen}}\"\ninterval = \"1s\"\ntimeout = \"900ms\"\n[dns]\nservers = [\"{}\"]\n\
         [[pools]]\nname = \"p\"\nrole = \"new\"\nfqdn = \"pool.contoso.test\"\n{users}\
         [[checks]]\nname = \"im\"\nkind = \"sip_im\"\nfrom = [\"alice\"]\nto = [\"bob\", \"carol\"]\n",
        knot.addr
    ));
    // The fake says 200 to the MESSAGE but never delivers it: not_delivered.
    let m = agent.wait_metrics(Duration::from_secs(15), |m| {
        sample(m, "coexist_probe_failures_total", &[("check", "im"), ("reason", "not_delivered")])
            .is_some_and(|n| n >= 1.0)
    });
    for u in ["alice", "bob", "carol"] {
        assert_eq!(sample(&m, "coexist_user_registered", &[("user", u)]), Some(1.0), "{u}");
    }

    // A well-formed OPTIONS for alice: 200. A MESSAGE for another user: 404.
    let mut c = alice_conn(&seen);
    c.write_all(request("OPTIONS", "alice", "", 0).as_bytes()).unwrap();
    let resp = response(&seen, false, "hostile-OPTIONS-alice");
    assert!(resp.starts_with("SIP/2.0 200"), "{resp}");
    c.write_all(request("MESSAGE", "mallory", "Content-Type: text/plain\r\n", 2).as_bytes()).unwrap();
    c.write_all(b"hi").unwrap();
    let resp = response(&seen, false, "hostile-MESSAGE-mallory");
    assert!(resp.starts_with("SIP/2.0 404"), "{resp}");
    c.write_all(request("SUBSCRIBE", "alice", "", 0).as_bytes()).unwrap();
    let resp = response(&seen, false, "hostile-SUBSCRIBE-alice");
    assert!(resp.starts_with("SIP/2.0 405") && resp.contains("Allow:"), "{resp}");
    let registers_before = seen.lock().unwrap().registers;

    // A request announcing a 10 MB body, then the body: the endpoint closes the
    // connection after the headers (nothing past 64 KiB is buffered) and registers again.
    c.write_all(request("MESSAGE", "alice", "Content-Type: text/plain\r\n", 10_000_000).as_bytes()).unwrap();
    let chunk = vec![b'x'; 64 * 1024];
    let mut written = 0usize;
    let write_error = loop {
        match c.write(&chunk) {
            Ok(n) => written += n,
            Err(e) => break Some(e),
        }
        if written >= 10_000_000 {
            break None;
        }
    };
    assert!(write_error.is_some(), "the endpoint kept reading a 10 MB body ({written} bytes taken)");
    eprintln!("10 MB body: connection reset after {written} bytes were taken by the kernel buffers");
    let deadline = Instant::now() + Duration::from_secs(15);
    while seen.lock().unwrap().registers == registers_before {
        assert!(Instant::now() < deadline, "alice did not register again");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Garbage on the new connection: closed again, registered again.
    let registers_before = seen.lock().unwrap().registers;
    std::thread::sleep(Duration::from_millis(200));
    let mut c = alice_conn(&seen);
    c.write_all(b"\x00\x01\x02 this is not SIP at all\r\n\r\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while seen.lock().unwrap().registers == registers_before {
        assert!(Instant::now() < deadline, "alice did not register again after garbage");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Over UDP: an oversized datagram and garbage are dropped; the next OPTIONS is answered.
    let carol = seen
        .lock()
        .unwrap()
        .udp
        .iter()
        .find(|(u, _)| u == "carol")
        .map(|(_, a)| *a)
        .expect("carol registered over UDP");
    let mut big = request("MESSAGE", "carol", "", 65_000).into_bytes();
    big.resize(65_000, b'x');
    udp_probe.send_to(&big, carol).unwrap();
    udp_probe.send_to(b"\xff\xfe garbage", carol).unwrap();
    udp_probe.send_to(request("OPTIONS", "carol", "", 0).as_bytes(), carol).unwrap();
    let resp = response(&seen, true, "hostile-OPTIONS-carol");
    assert!(resp.starts_with("SIP/2.0 200"), "{resp}");
    assert!(
        !seen.lock().unwrap().udp_responses.iter().any(|r| r.contains("hostile-MESSAGE-carol")),
        "the oversized datagram was dropped, not answered"
    );

    // Retransmission matching behind an RFC 2543 proxy (a Via without a branch): two
    // different MESSAGEs are two transactions, each answered for its own Call-ID (a
    // cache keyed by branch and method answered the second with the first's response).
    for call_id in ["legacy-proxy-1", "legacy-proxy-2"] {
        let req = format!(
            "MESSAGE sip:carol@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {IP}:5060\r\n\
             From: <sip:mallory@contoso.test>;tag=m\r\nTo: <sip:carol@contoso.test>\r\nCall-ID: {call_id}\r\n\
             CSeq: 1 MESSAGE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        );
        udp_probe.send_to(req.as_bytes(), carol).unwrap();
        let resp = response(&seen, true, call_id);
        assert!(resp.starts_with("SIP/2.0 200"), "{resp}");
    }

    // The retransmission cache as a weapon: 1,023 OPTIONS with distinct branches and a
    // 60 KB Via each (echoed in every answer). Kept answers draw on one 16 MiB budget
    // for every endpoint, so the agent stays far below what 1,023 answers would take.
    let pad = "a".repeat(60_000);
    let rss_before = current_rss_kib(agent.child.id());
    let before = seen.lock().unwrap().udp_responses.len();
    for i in 0..1023 {
        let req = format!(
            "OPTIONS sip:carol@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {IP}:5060;branch=z9hG4bKflood{i};x={pad}\r\n\
             From: <sip:mallory@contoso.test>;tag=m\r\nTo: <sip:carol@contoso.test>\r\nCall-ID: flood-{i}\r\n\
             CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        );
        udp_probe.send_to(req.as_bytes(), carol).unwrap();
        // One at a time: the point is what the agent keeps, not what the socket drops.
        let deadline = Instant::now() + Duration::from_secs(5);
        while seen.lock().unwrap().udp_responses.len() <= before + i {
            assert!(Instant::now() < deadline, "OPTIONS {i} unanswered");
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    seen.lock().unwrap().udp_responses.truncate(before);
    let rss = current_rss_kib(agent.child.id());
    eprintln!("agent RSS before 1,023 answers of 60 KB: {rss_before} KiB, after: {rss} KiB");
    // 16 MiB of kept answers, allocator slack and the transient per-datagram buffers; a
    // cache of 1,023 answers would be 60 MiB more.
    assert!(rss < rss_before + 24 * 1024, "RSS {rss} KiB: the answers were kept past the budget");

    // Still serving, every user registered again, memory never near 10 MB of body.
    let m = agent.wait_metrics(Duration::from_secs(15), |m| {
        ["alice", "bob", "carol"]
            .iter()
            .all(|u| sample(m, "coexist_user_registered", &[("user", u)]) == Some(1.0))
    });
    assert!(m.contains("coexist_interop_up"));
    assert_eq!(agent.get("/-/healthy").0, 200);
    let peak = peak_rss_kib(agent.child.id());
    eprintln!("agent peak RSS: {peak} KiB");
    assert!(peak < 64 * 1024, "peak RSS {peak} KiB");
    let mut agent = agent;
    let _ = agent.child.kill();
    let log = agent.stderr();
    assert!(!log.contains("panicked"), "{log}");
}

/// A registrar that accepts every REGISTER and then drops the connection: the endpoint
/// registers again with a growing, jittered backoff (1 s doubling to 30 s, not reset by
/// a registration the connection loses at once), not once a second forever.
#[test]
fn a_registrar_that_accepts_and_drops_gets_ever_fewer_attempts() {
    let ip = "127.0.53.2";
    let knot = Knot::start("contoso.test", &format!("pool A {ip}\n"));
    let listener = TcpListener::bind((ip, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let registers = Arc::new(Mutex::new(Vec::<Instant>::new()));
    {
        let registers = registers.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut c) = conn else { continue };
                if let Some(req) = read_message(&mut c) {
                    if req.starts_with("REGISTER") {
                        registers.lock().unwrap().push(Instant::now());
                        let _ = c.write_all(ok(&req, 60).as_bytes());
                    }
                }
                // Accepted, then dropped.
                std::thread::sleep(Duration::from_millis(50));
                drop(c);
            }
        });
    }
    let agent = Agent::start(&format!(
        "[agent]\nlisten = \"{{listen}}\"\ninterval = \"1h\"\ntimeout = \"5s\"\n[dns]\nservers = [\"{}\"]\n\
         [[pools]]\nname = \"p\"\nrole = \"new\"\nfqdn = \"pool.contoso.test\"\n\
         [[users]]\nname = \"alice\"\nuri = \"sip:alice@contoso.test\"\npool = \"p\"\nauth = \"none\"\n\
         transport = \"tcp\"\nport = {port}\n\
         [[checks]]\nname = \"echo\"\nkind = \"sip_echo\"\n",
        knot.addr
    ));
    std::thread::sleep(Duration::from_secs(20));
    let times = registers.lock().unwrap().clone();
    let gaps: Vec<f64> = times.windows(2).map(|w| (w[1] - w[0]).as_secs_f64()).collect();
    eprintln!("{} REGISTERs in 20 s, gaps {gaps:.1?}", times.len());
    // 0, then after 0.5-1, 1-2, 2-4, 4-8 s (and the 50 ms each is held): at most 6.
    assert!(times.len() >= 3, "the endpoint gave up: {} REGISTERs", times.len());
    assert!(times.len() <= 6, "{} REGISTERs in 20 s: the backoff reset on a lost registration", times.len());
    assert!(gaps.last().is_some_and(|g| *g >= 2.0), "the gaps do not grow: {gaps:?}");
    drop(agent);
}

/// A registrar that goes silent after accepting the REGISTER (a half-open connection,
/// a hung process): no pong, no answer to the OPTIONS keep-alive. The endpoint gives
/// the flow up within one keep-alive period and 10 s (RFC 5626 §4.4.1) and registers
/// again on a new connection, instead of reading registered until its refresh. About
/// 45 s: a slow test.
#[test]
fn a_registrar_gone_silent_is_noticed_by_the_keepalive() {
    if !common::slow_tests("a_registrar_gone_silent_is_noticed_by_the_keepalive") {
        return;
    }
    let ip = "127.0.53.3";
    let knot = Knot::start("contoso.test", &format!("pool A {ip}\n"));
    let listener = TcpListener::bind((ip, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let registers = Arc::new(Mutex::new(Vec::<Instant>::new()));
    {
        let registers = registers.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut c) = conn else { continue };
                let registers = registers.clone();
                std::thread::spawn(move || {
                    if let Some(req) = read_message(&mut c) {
                        registers.lock().unwrap().push(Instant::now());
                        let _ = c.write_all(ok(&req, 60).as_bytes());
                    }
                    // Silent from now on: reads everything, answers nothing.
                    let mut sink = [0u8; 4096];
                    while c.read(&mut sink).is_ok_and(|n| n > 0) {}
                });
            }
        });
    }
    let agent = Agent::start(&format!(
        "[agent]\nlisten = \"{{listen}}\"\ninterval = \"1h\"\ntimeout = \"5s\"\n[dns]\nservers = [\"{}\"]\n\
         [[pools]]\nname = \"p\"\nrole = \"new\"\nfqdn = \"pool.contoso.test\"\n\
         [[users]]\nname = \"alice\"\nuri = \"sip:alice@contoso.test\"\npool = \"p\"\nauth = \"none\"\n\
         transport = \"tcp\"\nport = {port}\n\
         [[checks]]\nname = \"echo\"\nkind = \"sip_echo\"\n",
        knot.addr
    ));
    let t = Instant::now();
    while registers.lock().unwrap().len() < 2 {
        assert!(t.elapsed() < Duration::from_secs(60), "the silent registrar was never noticed");
        std::thread::sleep(Duration::from_millis(200));
    }
    let times = registers.lock().unwrap().clone();
    let gap = (times[1] - times[0]).as_secs_f64();
    eprintln!("registered again {gap:.1} s after the registrar went silent");
    // 30 s to the keep-alive, 10 s for its answer, then the backoff (0.5-1 s).
    assert!(gap < 45.0, "{gap}");
    drop(agent);
}
