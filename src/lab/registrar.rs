//! A fake registrar on real sockets, for the tests and benchmarks that need one they
//! can turn against the endpoints: it answers every request `200 OK` (a REGISTER with
//! its Contact kept for a fixed expiry, and no authentication), and keeps what a
//! hostile registrar needs to reach a user — the TCP connection each user registered
//! over, the UDP address each user registered from — and what the endpoints answered.
//!
//! What it does not do: route, authenticate, or parse more SIP than a test needs (it
//! is a peer to attack from, not a registrar to test against: that is Kamailio).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::{Arc, Mutex};

/// What the fake registrar has seen.
#[derive(Debug, Default)]
pub struct Seen {
    /// REGISTERs received (both transports).
    pub registers: usize,
    /// Per user, the latest TCP connection it registered over.
    pub tcp: Vec<(String, TcpStream)>,
    /// Per user, the latest UDP address it registered from.
    pub udp: Vec<(String, SocketAddr)>,
    /// Responses the endpoints sent (both transports).
    pub answers: usize,
    /// Those responses over TCP, in full, when kept.
    pub tcp_responses: Vec<String>,
    /// Those responses over UDP, in full, when kept.
    pub udp_responses: Vec<String>,
}

/// A fake registrar listening on UDP and TCP on one port.
#[derive(Debug)]
pub struct FakeRegistrar {
    /// The port (UDP and TCP).
    pub port: u16,
    /// What it has seen.
    pub seen: Arc<Mutex<Seen>>,
    /// A second handle on its UDP socket, to send requests of the registrar's own.
    pub udp: UdpSocket,
}

impl FakeRegistrar {
    /// Listens on `ip` (a free port), grants every REGISTER `expires` seconds, and keeps
    /// the endpoints' responses in full when `keep_responses` (tests read them; a flood
    /// benchmark only counts them).
    pub fn start(ip: &str, expires: u32, keep_responses: bool) -> std::io::Result<FakeRegistrar> {
        let listener = TcpListener::bind((ip, 0))?;
        let port = listener.local_addr()?.port();
        let udp = UdpSocket::bind((ip, port))?;
        let seen = Arc::new(Mutex::new(Seen::default()));
        let fake = FakeRegistrar { port, seen: seen.clone(), udp: udp.try_clone()? };
        let s = seen.clone();
        std::thread::spawn(move || serve_tcp(&listener, &s, expires, keep_responses));
        std::thread::spawn(move || serve_udp(&udp, &seen, expires, keep_responses));
        Ok(fake)
    }
}

fn lock(seen: &Mutex<Seen>) -> std::sync::MutexGuard<'_, Seen> {
    seen.lock().unwrap_or_else(|e| e.into_inner())
}

/// Reads one SIP message (headers and a Content-Length body) from a stream; CRLF
/// keep-alives between messages are skipped; `None` at the end of the stream or for a
/// body larger than a SIP message may be.
pub fn read_message(s: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).ok()? == 0 {
            return None;
        }
        buf.push(byte[0]);
        if buf == b"\r\n" {
            buf.clear();
        }
    }
    let head = String::from_utf8_lossy(&buf).to_string();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: ").or_else(|| l.strip_prefix("l: ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    if len > crate::sip::message::MAX_MESSAGE {
        return None;
    }
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).ok()?;
    Some(head + &String::from_utf8_lossy(&body))
}

/// The value of header `name` in `msg` (case-insensitive, full names only), or "".
pub fn header<'a>(msg: &'a str, name: &str) -> &'a str {
    msg.lines()
        .find(|l| {
            l.len() > name.len()
                && l[..name.len()].eq_ignore_ascii_case(name)
                && l[name.len()..].starts_with(':')
        })
        .map_or("", |l| l[name.len() + 1..].trim())
}

/// 200 to a request, its Via/From/To/Call-ID/CSeq echoed; a REGISTER's Contact kept
/// for `expires` seconds.
pub fn ok(req: &str, expires: u32) -> String {
    let mut r = String::from("SIP/2.0 200 OK\r\n");
    for h in ["Via", "From", "Call-ID", "CSeq"] {
        r.push_str(&format!("{h}: {}\r\n", header(req, h)));
    }
    let to = header(req, "To");
    if to.contains(";tag=") {
        r.push_str(&format!("To: {to}\r\n"));
    } else {
        r.push_str(&format!("To: {to};tag=fake\r\n"));
    }
    if req.starts_with("REGISTER") {
        r.push_str(&format!("Contact: {};expires={expires}\r\n", header(req, "Contact")));
    }
    r.push_str("Content-Length: 0\r\n\r\n");
    r
}

fn user_of(req: &str) -> String {
    let to = header(req, "To");
    let uri = to.split_once("sips:").or_else(|| to.split_once("sip:")).map_or("", |(_, r)| r);
    uri.split('@').next().unwrap_or("").to_owned()
}

fn serve_tcp(listener: &TcpListener, seen: &Arc<Mutex<Seen>>, expires: u32, keep: bool) {
    for conn in listener.incoming() {
        let Ok(mut c) = conn else { continue };
        let seen = seen.clone();
        std::thread::spawn(move || {
            while let Some(req) = read_message(&mut c) {
                if req.starts_with("SIP/2.0") {
                    let mut s = lock(&seen);
                    s.answers += 1;
                    if keep {
                        s.tcp_responses.push(req);
                    }
                    continue;
                }
                if req.starts_with("REGISTER") {
                    let mut s = lock(&seen);
                    s.registers += 1;
                    let user = user_of(&req);
                    s.tcp.retain(|(u, _)| *u != user);
                    if let Ok(clone) = c.try_clone() {
                        s.tcp.push((user, clone));
                    }
                }
                let _ = c.write_all(ok(&req, expires).as_bytes());
            }
        });
    }
}

fn serve_udp(sock: &UdpSocket, seen: &Mutex<Seen>, expires: u32, keep: bool) {
    let mut buf = vec![0u8; 65536];
    loop {
        let Ok((n, from)) = sock.recv_from(&mut buf) else { return };
        let req = String::from_utf8_lossy(&buf[..n]).to_string();
        let mut s = lock(seen);
        if req.starts_with("SIP/2.0") {
            s.answers += 1;
            if keep {
                s.udp_responses.push(req);
            }
            continue;
        }
        if req.starts_with("REGISTER") {
            s.registers += 1;
            let user = user_of(&req);
            s.udp.retain(|(u, _)| *u != user);
            s.udp.push((user, from));
        }
        drop(s);
        let _ = sock.send_to(ok(&req, expires).as_bytes(), from);
    }
}
