//! `coexistd demo`: a coexistence lab inside the process, on loopback.
//!
//! Two pools of the fictitious `contoso.test` (the `.test` TLD is reserved, RFC 2606):
//!
//! - the legacy OCS 2007 R2 pool `ocspool` on 127.0.10.1: SIP over TLS on 5061 and web
//!   services on 4443 speaking **TLS 1.0 only** with an RSA certificate signed with
//!   **SHA-1** (the legacy TLS engine is needed to probe it), SIP over TCP on 5060;
//! - the new Lync 2013 pool `lyncpool` with two Front Ends, 127.0.20.1 and 127.0.20.2:
//!   SIP over TLS on 5061 and HTTPS web services on 4443 (TLS 1.2/1.3, ECDSA
//!   certificate), answering the `lyncdiscoverinternal` autodiscover request.
//!
//! Port 4443 stands for 443 so that the demo needs no privilege. Certificates come from a
//! CA made at start-up ([`pki`]); its certificate is written to a temporary file that
//! the generated configuration names as `[tls] ca_file`. A DNS responder on a free
//! loopback port serves the pools' A records and the sign-in records of a migration in
//! progress: `_sipinternaltls._tcp` already points at the new pool, the legacy
//! `_sipinternal._tcp` still at the old one.
//!
//! The SIP servers are also small registrars for four test users, two homed on each pool
//! (alice and adam on the legacy pool, bob and beth on the new one). They sign in with
//! NTLM as Office Communicator and Lync do (MS-SIPAE, [`ntlm`]): the legacy pool
//! challenges like OCS 2007 R2 (protocol version 3), the new one like Lync 2013 (Kerberos
//! offered first, then NTLM version 4); once signed in, every request of theirs must be
//! signed (`403` otherwise) and everything the pools send them is signed. A REGISTER for
//! a user homed on the other pool is answered `301` with that pool in `Contact`. They are
//! proxies too: a request is delivered over the target user's registered connection (or
//! to its UDP address), or handed to the pool the target is homed on, which delivers it;
//! responses go back the same way. Other users (the benchmarks' extra ones) sign in with
//! Digest (SHA-256, `qop=auth`), and their requests outside a dialog are challenged
//! (`407`). Passwords are random per start, in files (mode 600) the generated
//! configuration names.
//!
//! The agent then runs against the lab with [`Lab::config_text`].

pub mod admin;
mod demo_config;
pub mod dns_server;
pub mod faults;
pub mod ntlm;
pub mod pki;
mod presence;
pub mod registrar;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use openssl::hash::MessageDigest;
use openssl::ssl::{Ssl, SslAcceptor, SslMethod, SslOptions, SslVersion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

use crate::sip::message;
use pki::{Ca, Issued, KeyKind, Leaf};

use dns_server::{a, cname, srv, txt, DnsServer};
use hickory_proto::rr::Record;

/// The lab's domain.
pub const DOMAIN: &str = "contoso.test";

/// A running lab; everything stops when it is dropped.
pub struct Lab {
    /// The DNS responder serving the lab zone.
    pub dns: DnsServer,
    /// The lab CA's certificate (PEM), named by the generated configuration.
    pub ca_file: PathBuf,
    /// Where the test users' password files are.
    pub users_dir: PathBuf,
    /// The fault played now (`demo --faults`).
    pub faults: Arc<faults::Faults>,
    /// The legacy pool's TLS server configuration, swapped by faults.
    legacy_tls: Acceptor,
    /// The legacy pool's certificates for `demo --faults`: as started, expiring, SHA-1.
    fault_acceptors: Option<[Arc<SslAcceptor>; 3]>,
    listeners: Vec<JoinHandle<()>>,
}

/// A TLS server configuration that a fault may replace while the lab runs.
type Acceptor = Arc<std::sync::RwLock<Arc<SslAcceptor>>>;

impl std::fmt::Debug for Lab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lab")
            .field("dns", &self.dns)
            .field("ca_file", &self.ca_file)
            .field("users_dir", &self.users_dir)
            .field("fault", &self.faults.active())
            .finish_non_exhaustive()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for l in &self.listeners {
            l.abort();
        }
        let _ = std::fs::remove_file(&self.ca_file);
        let _ = std::fs::remove_dir_all(&self.users_dir);
    }
}

/// The Control Panel administrator's account (`CONTOSO\\csadmin`), its password in
/// `users_dir` beside the test users'.
pub const ADMIN: &str = "csadmin";

/// The ports of the administration path in the demo: 1434 (SQL Server Browser), 135
/// (endpoint mapper) and 445 (SMB) in production, moved above 1024 (by 10,000) so that
/// the demo needs no privilege, as 4443 stands for 443.
pub const DEMO_SSRP_PORT: u16 = 11434;
/// See [`DEMO_SSRP_PORT`].
pub const DEMO_EPM_PORT: u16 = 10135;
/// See [`DEMO_SSRP_PORT`].
pub const DEMO_SMB_PORT: u16 = 10445;

/// The lab's test users: name and the pool each is homed on.
pub const LAB_USERS: [(&str, &str); 4] =
    [("alice", "ocs2007r2"), ("adam", "ocs2007r2"), ("bob", "lync2013"), ("beth", "lync2013")];

/// Where bytes for a client go: its connection's writer, or its UDP address.
#[derive(Debug, Clone)]
enum Peer {
    Stream(tokio::sync::mpsc::Sender<Vec<u8>>),
    Udp(Arc<UdpSocket>, SocketAddr),
}

impl Peer {
    async fn send(&self, bytes: Vec<u8>) {
        match self {
            // A full queue means a client that does not read: drop, as a proxy would.
            Peer::Stream(tx) => {
                let _ = tx.try_send(bytes);
            }
            Peer::Udp(sock, addr) => {
                let _ = sock.send_to(&bytes, addr).await;
            }
        }
    }
}

/// A registration: the Contact, the pool it registered at, where to send requests, the
/// NTLM association it signed in on (what the lab sends there is signed on it).
type Binding = (String, &'static str, Peer, Option<String>);

/// A request forwarded: where its response goes, the Via lines to remove, the sender's
/// NTLM association.
type Forwarded = (Peer, usize, Option<String>);

/// Transactions forwarded and not answered yet, at most (oldest dropped past this).
const LAB_PENDING: usize = 10_000;

/// The lab's SIP routing, shared by both pools: the test users (password and home),
/// where each is registered, and forwarded transactions waiting for their response.
#[derive(Debug)]
pub struct Router {
    users: Vec<(String, &'static str, crate::sip::auth::Secret)>,
    /// user → (contact, pool, peer), latest last.
    bindings: std::sync::Mutex<std::collections::HashMap<String, Vec<Binding>>>,
    /// our Via branch → (where the response goes, Via lines to remove, the sender's NTLM
    /// association).
    pending: std::sync::Mutex<std::collections::HashMap<String, Forwarded>>,
    /// Branches of INVITEs the lab answered itself (407): their ACK ends here.
    answered: std::sync::Mutex<std::collections::HashSet<String>>,
    /// The users who sign in with NTLM (the four of [`LAB_USERS`]), and their
    /// associations.
    ntlm_users: std::collections::HashSet<String>,
    ntlm: ntlm::NtlmLab,
    /// Both pools' presence server.
    presence: presence::Presence,
    /// The Control Panel's administrator (the new pool's web services sign it in).
    control_panel: Arc<admin::ControlPanel>,
    /// The fault played now: a moved user, a broken route.
    faults: Arc<faults::Faults>,
}

/// A lab registrar and proxy for one pool.
#[derive(Debug)]
pub struct Registrar {
    pool: &'static str,
    router: Arc<Router>,
}

fn pool_host(pool: &str) -> &'static str {
    if pool == "ocs2007r2" {
        "ocspool"
    } else {
        "lyncpool"
    }
}

fn user_part(uri_or_header: &str) -> &str {
    message::uri_user(message::addr_uri(uri_or_header)).unwrap_or("")
}

impl Registrar {
    /// Handles one message from `from`: a response goes back along its transaction; a
    /// REGISTER is answered as a registrar does; any other request is challenged (407)
    /// unless it is in a dialog, then delivered to the target's registration, relayed
    /// to its home pool, or answered 404/480. Not a security boundary: nonces are not
    /// tracked.
    async fn handle(&self, msg: message::Message, from: Peer, server: &str) {
        let method = match &msg.start {
            message::StartLine::Request { method, .. } => method.clone(),
            message::StartLine::Response { .. } => return self.router.response(msg).await,
        };
        if method == "REGISTER" {
            let resp = self.register(&msg, &from, server);
            return from.send(resp).await;
        }
        // Addressed to the server itself (no user part: an OPTIONS ping): it answers.
        let uri = match &msg.start {
            message::StartLine::Request { uri, .. } => uri.as_str(),
            message::StartLine::Response { .. } => "",
        };
        let sender = user_part(msg.header("from").unwrap_or("")).to_owned();
        let ntlm_user = self.router.ntlm_users.contains(&sender);
        let opaque = ntlm::opaque_of(&msg);
        // A user who signs in with NTLM sends nothing unsigned (MS-SIPAE).
        if ntlm_user && !self.router.ntlm.verify(&msg) {
            if method != "ACK" {
                let refused = message::response_to(&msg, 403, "Forbidden (signature)", server);
                from.send(self.router.ntlm.sign_with(opaque.as_deref(), refused)).await;
            }
            return;
        }
        if method == "SUBSCRIBE" && msg.header("to").and_then(message::tag_of).is_some() {
            // A refresh in its dialog: to the presence server that holds it.
            return self.presence(&msg, &method, from, opaque, server).await;
        }
        let presence = matches!(method.as_str(), "SUBSCRIBE" | "PUBLISH" | "SERVICE");
        if message::uri_user(message::addr_uri(uri)).is_none() && !presence {
            if method != "ACK" {
                let ok = message::response_to(&msg, 200, "OK", server);
                from.send(self.router.ntlm.sign_with(opaque.as_deref(), ok)).await;
            }
            return;
        }
        if method == "ACK" {
            let branch = msg.top_via_branch().unwrap_or("");
            if self.router.answered.lock().unwrap_or_else(|e| e.into_inner()).remove(branch) {
                // The ACK of our own 407: hop by hop, it goes no further.
                return;
            }
        }
        let in_dialog = msg.header("to").and_then(message::tag_of).is_some();
        if !in_dialog && method != "ACK" && method != "CANCEL" && !ntlm_user {
            let ok = match (self.router.user(&sender), msg.header("proxy-authorization")) {
                (Some((_, _, pw)), Some(a)) => crate::sip::auth::verify(a, pw, &method),
                _ => false,
            };
            if !ok {
                if method == "INVITE" {
                    let mut a = self.router.answered.lock().unwrap_or_else(|e| e.into_inner());
                    if a.len() >= LAB_PENDING {
                        a.clear();
                    }
                    a.insert(msg.top_via_branch().unwrap_or("").to_owned());
                }
                let challenge = format!(
                    "Proxy-Authenticate: Digest realm=\"{DOMAIN}\", nonce=\"{}\", qop=\"auth\", algorithm=SHA-256\r\n",
                    message::token(24)
                );
                let resp = with_headers(
                    message::response_to(&msg, 407, "Proxy Authentication Required", server),
                    &challenge,
                );
                return from.send(resp).await;
            }
        }
        if presence {
            return self.presence(&msg, &method, from, opaque, server).await;
        }
        self.router.route(self.pool, msg, from, 1, server).await;
    }

    /// A SUBSCRIBE, PUBLISH or SERVICE: handled by a pool's presence server (a batched
    /// SUBSCRIBE by the pool it reaches: the watcher's, or the pool its Request-URI
    /// names; a SIMPLE one by the presentity's home pool); its NOTIFYs sent.
    async fn presence(
        &self,
        msg: &message::Message,
        method: &str,
        from: Peer,
        opaque: Option<String>,
        server: &str,
    ) {
        let to = user_part(msg.header("to").unwrap_or("")).to_owned();
        let sender = user_part(msg.header("from").unwrap_or(""));
        let resp = |code, reason| message::response_to(msg, code, reason, server);
        let home = |u: &str| self.router.home_of(u);
        let uri = match &msg.start {
            message::StartLine::Request { uri, .. } => uri.as_str(),
            message::StartLine::Response { .. } => "",
        };
        let batch =
            msg.header("content-type").is_some_and(|c| c.trim().starts_with(crate::sip::msrtc::BATCH_TYPE))
                || msg.header("to").and_then(message::tag_of).is_some();
        let handled = match method {
            "SUBSCRIBE" if batch => {
                // The pool the Request-URI names (a resubscribe), else the one it reached.
                let host = message::uri_target(uri).map(|(h, _, _)| h).unwrap_or_default();
                let pool = if message::uri_user(message::addr_uri(uri)).is_some() {
                    self.pool
                } else if host.eq_ignore_ascii_case(&format!("ocspool.{DOMAIN}")) {
                    "ocs2007r2"
                } else if host.eq_ignore_ascii_case(&format!("lyncpool.{DOMAIN}")) {
                    "lync2013"
                } else {
                    self.pool
                };
                self.router.presence.subscribe(pool, msg, &from, opaque.clone(), server, &home)
            }
            "SUBSCRIBE" => match home(&to) {
                Some(h) => self.router.presence.subscribe(h, msg, &from, opaque.clone(), server, &home),
                None => presence::Handled(resp(404, "Not Found"), Vec::new()),
            },
            _ if sender != to || home(&to).is_none() => {
                presence::Handled(resp(403, "Forbidden (not your presence)"), Vec::new())
            }
            "SERVICE" => self.router.presence.service(&to, msg, server),
            _ => self.router.presence.publish(&to, msg, server),
        };
        let presence::Handled(response, notifies) = handled;
        from.send(self.router.ntlm.sign_with(opaque.as_deref(), response)).await;
        for (peer, o, n) in notifies {
            peer.send(self.router.ntlm.sign_with(o.as_deref(), n)).await;
        }
    }

    fn register(&self, req: &message::Message, from: &Peer, server: &str) -> Vec<u8> {
        let user = user_part(req.header("to").unwrap_or(""));
        let (Some((_, _, password)), Some(home)) = (self.router.user(user), self.router.home_of(user)) else {
            return message::response_to(req, 404, "Not Found", server);
        };
        if home != self.pool {
            let contact = format!("Contact: <sip:{}.{DOMAIN}:5061;transport=tls>\r\n", pool_host(home));
            return with_headers(
                message::response_to(req, 301, "Redirect request to Home Server", server),
                &contact,
            );
        }
        if self.router.ntlm_users.contains(user) {
            let target = format!("{}.{DOMAIN}", pool_host(self.pool));
            let version = if self.pool == "ocs2007r2" { 3 } else { 4 };
            return match self.router.ntlm.register(req, password, &target, version) {
                ntlm::Register::Challenge(h) => {
                    with_headers(message::response_to(req, 401, "Unauthorized", server), &h)
                }
                ntlm::Register::Refused(code, reason) => message::response_to(req, code, reason, server),
                ntlm::Register::Accepted(opaque) => {
                    let contact = self.bind(req, user, from, Some(opaque.clone()));
                    let ok = with_headers(message::response_to(req, 200, "OK", server), &contact);
                    let signed = self.router.ntlm.sign_with(Some(&opaque), ok);
                    if contact.is_empty() {
                        // Unregistered: the association ends with its binding.
                        self.router.ntlm.forget(&opaque);
                    }
                    signed
                }
            };
        }
        match req.header("authorization") {
            Some(a) if crate::sip::auth::verify(a, password, "REGISTER") => {
                with_headers(message::response_to(req, 200, "OK", server), &self.bind(req, user, from, None))
            }
            _ => {
                let challenge = format!(
                    "WWW-Authenticate: Digest realm=\"{DOMAIN}\", nonce=\"{}\", qop=\"auth\", algorithm=SHA-256\r\n",
                    message::token(24)
                );
                with_headers(message::response_to(req, 401, "Unauthorized", server), &challenge)
            }
        }
    }
}

impl Registrar {
    /// Keeps (or with `Expires: 0` removes) the REGISTER's binding; the Contact header
    /// line of the 200.
    fn bind(&self, req: &message::Message, user: &str, from: &Peer, opaque: Option<String>) -> String {
        let contact = req.header("contact").unwrap_or("").to_owned();
        let expires =
            req.header("expires").and_then(|e| message::bounded_decimal(e.trim(), 3600)).unwrap_or(600);
        let mut b = self.router.bindings.lock().unwrap_or_else(|e| e.into_inner());
        let list = b.entry(user.to_owned()).or_default();
        list.retain(|(c, _, _, _)| *c != contact);
        if expires > 0 {
            list.push((contact.clone(), self.pool, from.clone(), opaque));
            format!("Contact: {contact};expires={expires}\r\n")
        } else {
            String::new()
        }
    }
}

impl Router {
    fn user(&self, name: &str) -> Option<&(String, &'static str, crate::sip::auth::Secret)> {
        self.users.iter().find(|(n, _, _)| n == name)
    }

    /// Where `name` is homed now (`demo --faults` moves alice to the new pool).
    fn home_of(&self, name: &str) -> Option<&'static str> {
        if name == "alice" && self.faults.is(faults::Fault::UserMoved) {
            return Some("lync2013");
        }
        self.user(name).map(|(_, h, _)| *h)
    }

    /// Routes a request at `pool` (which adds its Via): to the target's registration
    /// when homed here, else to its home pool (`vias` counts the lab's Via lines).
    async fn route(&self, pool: &'static str, msg: message::Message, from: Peer, vias: usize, server: &str) {
        let uri = match &msg.start {
            message::StartLine::Request { uri, .. } => uri.clone(),
            message::StartLine::Response { .. } => return,
        };
        let is_ack = matches!(&msg.start, message::StartLine::Request { method, .. } if method == "ACK");
        let target = user_part(&uri).to_owned();
        let opaque = ntlm::opaque_of(&msg);
        let Some(home) = self.home_of(&target) else {
            if !is_ack {
                let not_found = message::response_to(&msg, 404, "Not Found", server);
                from.send(self.ntlm.sign_with(opaque.as_deref(), not_found)).await;
            }
            return;
        };
        if home != pool {
            if pool == "lync2013" && home == "ocs2007r2" && self.faults.is(faults::Fault::RouteOneWay) {
                // The route from the new pool to the legacy one is broken: lost.
                return;
            }
            // Relayed to the home pool (in-process: both pools are this lab).
            return Box::pin(self.route(home, msg, from, vias + 1, server)).await;
        }
        let to = {
            let b = self.bindings.lock().unwrap_or_else(|e| e.into_inner());
            // The binding the Request-URI names (an in-dialog request goes to the remote
            // target it was given), else the latest: a short-lived registration of the
            // same user (a register check) must not catch another dialog's BYE.
            b.get(&target)
                .and_then(|l| l.iter().rev().find(|(c, _, _, _)| message::addr_uri(c) == uri).or(l.last()))
                .map(|(_, _, p, o)| (p.clone(), o.clone()))
        };
        let Some((to, to_opaque)) = to else {
            if !is_ack {
                let unavailable = message::response_to(&msg, 480, "Temporarily Unavailable", server);
                from.send(self.ntlm.sign_with(opaque.as_deref(), unavailable)).await;
            }
            return;
        };
        let branch = format!("{}{}", message::BRANCH_COOKIE, message::token(16));
        if !is_ack {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            if p.len() >= LAB_PENDING {
                p.clear();
            }
            p.insert(branch.clone(), (from, vias, opaque));
        }
        let mut via = String::new();
        for i in 0..vias {
            let b = if i == 0 {
                branch.clone()
            } else {
                format!("{}{}", message::BRANCH_COOKIE, message::token(16))
            };
            via.push_str(&format!("Via: SIP/2.0/TLS {}.{DOMAIN}:5061;branch={b}\r\n", pool_host(pool)));
        }
        to.send(self.ntlm.sign_with(to_opaque.as_deref(), with_headers(message::serialize(&msg), &via)))
            .await;
    }

    /// A response from a client: back along the transaction it answers.
    async fn response(&self, msg: message::Message) {
        let Some(branch) = msg.top_via_branch().map(str::to_owned) else { return };
        let fin = msg.status().is_some_and(|c| c >= 200);
        let entry = {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            if fin {
                p.remove(&branch)
            } else {
                p.get(&branch).cloned()
            }
        };
        let Some((peer, vias, opaque)) = entry else { return };
        let mut msg = msg;
        for _ in 0..vias {
            if let Some(i) = msg.headers.iter().position(|(n, _)| n == "via") {
                msg.headers.remove(i);
            }
        }
        // Back to the request's sender: signed on its association when it has one.
        peer.send(self.ntlm.sign_with(opaque.as_deref(), message::serialize(&msg))).await;
    }
}

/// `resp` with header lines `extra` added after its status line.
fn with_headers(mut resp: Vec<u8>, extra: &str) -> Vec<u8> {
    if let Some(i) = resp.windows(2).position(|w| w == b"\r\n") {
        resp.splice(i + 2..i + 2, extra.bytes());
    }
    resp
}

/// What a lab port speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Service {
    /// SIP over UDP.
    SipUdp,
    /// SIP over TCP.
    SipTcp,
    /// SIP over TLS.
    SipTls,
    /// HTTPS (autodiscover).
    Https,
}

/// A pool member: address, whether it belongs to the legacy pool, its ports.
type Member = (&'static str, bool, &'static [(u16, Service)]);

const PORTS: &[(u16, Service)] =
    &[(5060, Service::SipUdp), (5060, Service::SipTcp), (5061, Service::SipTls), (4443, Service::Https)];

/// Every pool member of the lab.
const MEMBERS: &[Member] =
    &[("127.0.10.1", true, PORTS), ("127.0.20.1", false, PORTS), ("127.0.20.2", false, PORTS)];

/// What the lab's SIP servers call themselves.
fn server_name(legacy: bool) -> &'static str {
    if legacy {
        "RTC/3.5 (coexistd lab: OCS 2007 R2)"
    } else {
        "RTC/5.0 (coexistd lab: Lync Server 2013)"
    }
}

/// The lab's certificates: the CA, the legacy pool's (RSA, SHA-1) and the new pool's
/// (ECDSA, covering the autodiscover name).
struct LabPki {
    ca: Ca,
    legacy: Issued,
    new: Issued,
    /// For `demo --faults`: the legacy certificate expiring in 5 days, and signed with SHA-1.
    faulty: Option<(Issued, Issued)>,
}

fn lab_pki(for_faults: bool) -> Result<LabPki, openssl::error::ErrorStack> {
    let ca = Ca::new("Contoso Lab Root CA", KeyKind::Rsa2048, MessageDigest::sha256())?;
    let legacy_leaf = |digest, to_days| Leaf {
        cn: "ocspool.contoso.test",
        sans: &["ocspool.contoso.test", "ocsweb.contoso.test"],
        to_days,
        digest,
        key: KeyKind::Rsa2048,
        ..Leaf::default()
    };
    let legacy = ca
        .issue(&legacy_leaf(if for_faults { MessageDigest::sha256() } else { MessageDigest::sha1() }, 365))?;
    let faulty = if for_faults {
        Some((
            ca.issue(&legacy_leaf(MessageDigest::sha256(), 5))?,
            ca.issue(&legacy_leaf(MessageDigest::sha1(), 365))?,
        ))
    } else {
        None
    };
    let new = ca.issue(&Leaf {
        cn: "lyncpool.contoso.test",
        sans: &["lyncpool.contoso.test", "lyncdiscoverinternal.contoso.test", "lyncweb.contoso.test"],
        to_days: 365,
        ..Leaf::default()
    })?;
    Ok(LabPki { ca, legacy, new, faulty })
}

fn acceptor(cert: &Issued, legacy: bool) -> Result<SslAcceptor, openssl::error::ErrorStack> {
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())?;
    if legacy {
        // What OCS 2007 R2 offers: TLS 1.0 and nothing else. Level 0 first: a SHA-1
        // certificate is refused at load time above it.
        b.set_security_level(0);
        b.clear_options(SslOptions::NO_TLSV1 | SslOptions::NO_TLSV1_1);
        b.set_cipher_list("ALL:@SECLEVEL=0")?;
        b.set_min_proto_version(Some(SslVersion::TLS1))?;
        b.set_max_proto_version(Some(SslVersion::TLS1))?;
    }
    b.set_private_key(&cert.key)?;
    b.set_certificate(&cert.cert)?;
    Ok(b.build())
}

/// Answers SIP requests with 200 OK on a stream (TCP or TLS) until the client closes,
/// as `server` (also used by the benchmarks as a responder).
pub async fn sip_stream<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static>(
    s: S,
    server: &'static str,
) {
    sip_stream_as(s, server, None).await
}

/// Like [`sip_stream`], requests handled by `registrar` when there is one.
async fn sip_stream_as<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static>(
    s: S,
    server: &'static str,
    registrar: Option<Arc<Registrar>>,
) {
    let (mut rd, mut wr) = tokio::io::split(s);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(256);
    let writer = tokio::spawn(async move {
        while let Some(b) = rx.recv().await {
            if wr.write_all(&b).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });
    let peer = Peer::Stream(tx.clone());
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    'conn: loop {
        loop {
            // A client's CRLF ping between messages gets its pong (RFC 5626 §4.4.1), as
            // Kamailio answers one.
            while buf.starts_with(b"\r\n\r\n") {
                buf.drain(..4);
                if tx.send(b"\r\n".to_vec()).await.is_err() {
                    break 'conn;
                }
            }
            match message::parse(&buf, true) {
                Ok(message::Parsed::Complete(msg, used)) => {
                    buf.drain(..used);
                    match &registrar {
                        Some(r) => r.handle(msg, peer.clone(), server).await,
                        None if matches!(msg.start, message::StartLine::Request { .. })
                            && tx.send(message::response_to(&msg, 200, "OK", server)).await.is_err() =>
                        {
                            break 'conn;
                        }
                        None => {}
                    }
                }
                Ok(message::Parsed::Incomplete) => break,
                Err(_) => break 'conn,
            }
        }
        match rd.read(&mut chunk).await {
            Ok(n) if n > 0 && buf.len() + n <= message::MAX_MESSAGE + 4 => buf.extend_from_slice(&chunk[..n]),
            _ => break,
        }
    }
    drop((peer, tx));
    let _ = writer.await;
}

/// Serves one accepted connection.
async fn serve(
    tcp: TcpStream,
    service: Service,
    legacy: bool,
    acceptor: Acceptor,
    registrar: Arc<Registrar>,
    silent: Option<Arc<faults::Faults>>,
) {
    // A Front End that stops answering SIP: it reads and never answers.
    let quiet = || silent.as_ref().is_some_and(|f| f.is(faults::Fault::FrontEndSilent));
    if service == Service::SipTcp {
        if quiet() {
            return swallow(tcp, silent).await;
        }
        return sip_stream_as(tcp, server_name(legacy), Some(registrar)).await;
    }
    let current = acceptor.read().unwrap_or_else(|e| e.into_inner()).clone();
    let Ok(ssl) = Ssl::new(current.context()) else { return };
    let Ok(mut tls) = tokio_openssl::SslStream::new(ssl, tcp) else { return };
    if Pin::new(&mut tls).accept().await.is_err() {
        return;
    }
    if service == Service::Https {
        let session = Arc::new(admin::Session::default());
        let svc = hyper::service::service_fn(|req: Request<hyper::body::Incoming>| {
            let (session, panel) = (session.clone(), registrar.router.control_panel.clone());
            async move {
                let authorization =
                    req.headers().get(hyper::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
                Ok::<_, std::convert::Infallible>(web(req.uri().path(), authorization, &panel, &session))
            }
        });
        let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), svc).await;
    } else if quiet() {
        swallow(tls, silent).await;
    } else {
        sip_stream_as(tls, server_name(legacy), Some(registrar)).await;
    }
}

/// Reads and discards while the fault lasts (a server that has stopped answering), then
/// closes: a client reconnects to the repaired server.
async fn swallow<S: tokio::io::AsyncRead + Unpin>(mut s: S, silent: Option<Arc<faults::Faults>>) {
    let mut buf = [0u8; 4096];
    while silent.as_ref().is_some_and(|f| f.is(faults::Fault::FrontEndSilent)) {
        match tokio::time::timeout(std::time::Duration::from_millis(100), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            _ => {}
        }
    }
}

/// Answers SIP request datagrams with 200 OK as `server`.
pub async fn sip_udp(sock: UdpSocket, server: &'static str) {
    sip_udp_as(sock, server, None, None).await
}

/// Like [`sip_udp`], requests handled by `registrar` when there is one; nothing
/// answered while `silent` plays a Front End that stopped answering.
async fn sip_udp_as(
    sock: UdpSocket,
    server: &'static str,
    registrar: Option<Arc<Registrar>>,
    silent: Option<Arc<faults::Faults>>,
) {
    let sock = Arc::new(sock);
    let mut buf = vec![0u8; message::MAX_MESSAGE];
    loop {
        let Ok((n, peer)) = sock.recv_from(&mut buf).await else { continue };
        if silent.as_ref().is_some_and(|f| f.is(faults::Fault::FrontEndSilent)) {
            continue;
        }
        let Ok(message::Parsed::Complete(msg, _)) = message::parse(&buf[..n], false) else { continue };
        match &registrar {
            Some(r) => r.handle(msg, Peer::Udp(sock.clone(), peer), server).await,
            None if matches!(msg.start, message::StartLine::Request { .. }) => {
                let _ = sock.send_to(&message::response_to(&msg, 200, "OK", server), peer).await;
            }
            None => {}
        }
    }
}

/// The lab's web services: the Lync 2013 autodiscover root; remote PowerShell
/// (`/OcsPowershell`) asking for Windows credentials (`401` with `Negotiate` and
/// `NTLM`), as a live Front End does; the Control Panel (`/Cscp`) asking for them too
/// and signing the lab's administrator in with NTLM on the connection `session`; 404
/// elsewhere.
fn web(
    path: &str,
    authorization: Option<&str>,
    panel: &admin::ControlPanel,
    session: &admin::Session,
) -> Response<Full<Bytes>> {
    let under = |p: &str| {
        let lower = path.to_ascii_lowercase();
        lower == p || lower.starts_with(&format!("{p}/"))
    };
    if under("/ocspowershell") {
        return admin::asks_for_credentials();
    }
    if under("/cscp") {
        return panel.answer(session, authorization);
    }
    if path.eq_ignore_ascii_case("/autodiscover/autodiscoverservice.svc/root") {
        let body = r#"{"AccessLocation":"Internal","Root":{"Links":[{"token":"Domain","href":"https://lyncweb.contoso.test/Autodiscover/AutodiscoverService.svc/root/domain"},{"token":"User","href":"https://lyncweb.contoso.test/Autodiscover/AutodiscoverService.svc/root/oauth/user"}]}}"#;
        let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
        r.headers_mut()
            .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
        r
    } else {
        let mut r = Response::new(Full::new(Bytes::from_static(b"not found\n")));
        *r.status_mut() = StatusCode::NOT_FOUND;
        r
    }
}

/// The lab zone.
pub fn zone() -> Vec<Record> {
    zone_with(false)
}

/// The lab zone, `_sipinternaltls._tcp` rolled back to the legacy pool when `rolled_back`.
fn zone_with(rolled_back: bool) -> Vec<Record> {
    let signin = if rolled_back { "ocspool.contoso.test" } else { "lyncpool.contoso.test" };
    vec![
        a("ocspool.contoso.test", "127.0.10.1"),
        a("lyncpool.contoso.test", "127.0.20.1"),
        a("lyncpool.contoso.test", "127.0.20.2"),
        srv("_sipinternaltls._tcp.contoso.test", 0, 0, 5061, signin),
        srv("_sipinternal._tcp.contoso.test", 0, 0, 5060, "ocspool.contoso.test"),
        cname("lyncdiscoverinternal.contoso.test", "lyncpool.contoso.test"),
        txt("_coexist.contoso.test", "migration wave 3 of 5"),
    ]
}

impl Lab {
    /// Plays `fault` (or repairs everything with `None`): the DNS record, the legacy
    /// certificate, and the state the listeners and the router read. Certificate faults
    /// need a lab from [`Lab::start_for_faults`].
    pub fn set_fault(&self, fault: Option<faults::Fault>) {
        use faults::Fault;
        self.faults.set(fault);
        self.dns.set_records(zone_with(fault == Some(Fault::SignInRolledBack)));
        if let Some(certs) = &self.fault_acceptors {
            let pick = match fault {
                Some(Fault::CertExpiring) => 1,
                Some(Fault::LegacySha1) => 2,
                _ => 0,
            };
            *self.legacy_tls.write().unwrap_or_else(|e| e.into_inner()) = certs[pick].clone();
        }
    }

    /// Plays every fault in turn, for ever: each for `hold`, then `hold` with everything
    /// repaired; `announce` hears of each change as it happens.
    pub async fn play_faults(&self, hold: std::time::Duration, announce: impl Fn(String)) {
        loop {
            for f in faults::Fault::ALL {
                self.set_fault(Some(f));
                announce(format!("now: {}", f.announcement()));
                tokio::time::sleep(hold).await;
                self.set_fault(None);
                announce(format!("repaired: {}", f.announcement()));
                tokio::time::sleep(hold).await;
            }
        }
    }

    /// Starts the DNS responder and every member's listeners.
    pub async fn start() -> std::io::Result<Lab> {
        Lab::start_with_users(0).await
    }

    /// Like [`Lab::start`], with `extra` more test users (benchmarks): `user0001`…,
    /// homed alternately on the legacy and the new pool, passwords in `users_dir` like
    /// the others.
    pub async fn start_with_users(extra: usize) -> std::io::Result<Lab> {
        Lab::start_inner(extra, false).await
    }

    /// The lab `coexistd demo --faults` plays its faults on ([`Lab::set_fault`]): the
    /// legacy pool's certificate is signed with SHA-256 as started (renewed), so that
    /// falling back to SHA-1 is a fault.
    pub async fn start_for_faults() -> std::io::Result<Lab> {
        Lab::start_inner(0, true).await
    }

    async fn start_inner(extra: usize, for_faults: bool) -> std::io::Result<Lab> {
        let pki = lab_pki(for_faults).map_err(std::io::Error::other)?;
        let ca_file = std::env::temp_dir().join(format!("coexistd-demo-ca-{}.pem", std::process::id()));
        std::fs::write(&ca_file, pki.ca.issued.cert.to_pem().map_err(std::io::Error::other)?)?;
        let legacy_acceptor = Arc::new(acceptor(&pki.legacy, true).map_err(std::io::Error::other)?);
        let legacy_tls: Acceptor = Arc::new(std::sync::RwLock::new(legacy_acceptor.clone()));
        let new_tls: Acceptor = Arc::new(std::sync::RwLock::new(Arc::new(
            acceptor(&pki.new, false).map_err(std::io::Error::other)?,
        )));
        let fault_acceptors = match &pki.faulty {
            Some((expiring, sha1)) => Some([
                legacy_acceptor,
                Arc::new(acceptor(expiring, true).map_err(std::io::Error::other)?),
                Arc::new(acceptor(sha1, true).map_err(std::io::Error::other)?),
            ]),
            None => None,
        };
        let faults = Arc::new(faults::Faults::default());
        // invariant: an address literal of the lab's own (loopback data in this crate).
        let dns = DnsServer::start("127.0.0.1:0".parse().expect("literal"), zone()).await?;
        let users_dir = std::env::temp_dir().join(format!("coexistd-demo-users-{}", std::process::id()));
        std::fs::create_dir_all(&users_dir)?;
        let mut users = Vec::new();
        let extra_users = (1..=extra).map(|i| {
            let home = if i % 2 == 1 { "ocs2007r2" } else { "lync2013" };
            (format!("user{i:04}"), home)
        });
        let all = LAB_USERS.iter().map(|(n, h)| ((*n).to_owned(), *h)).chain(extra_users);
        for (name, home) in all {
            let password = message::token(20);
            let path = users_dir.join(format!("{name}.pass"));
            std::fs::write(&path, &password)?;
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
            users.push((name, home, crate::sip::auth::Secret::new(password)));
        }
        let admin_password = message::token(20);
        let path = users_dir.join(format!("{ADMIN}.pass"));
        std::fs::write(&path, &admin_password)?;
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        let router = Arc::new(Router {
            users,
            bindings: std::sync::Mutex::new(std::collections::HashMap::new()),
            pending: std::sync::Mutex::new(std::collections::HashMap::new()),
            answered: std::sync::Mutex::new(std::collections::HashSet::new()),
            ntlm_users: LAB_USERS.iter().map(|(n, _)| (*n).to_owned()).collect(),
            ntlm: ntlm::NtlmLab::default(),
            presence: presence::Presence::default(),
            faults: faults.clone(),
            control_panel: Arc::new(admin::ControlPanel {
                domain: "CONTOSO".into(),
                user: ADMIN.into(),
                password: crate::sip::auth::Secret::new(admin_password),
            }),
        });
        let mut lab = Lab {
            dns,
            ca_file,
            users_dir,
            faults: faults.clone(),
            legacy_tls: legacy_tls.clone(),
            fault_acceptors,
            listeners: Vec::new(),
        };
        for &(ip, legacy, ports) in MEMBERS {
            for &(port, service) in ports {
                // invariant: an address literal of the lab's own (loopback data in this crate).
                let addr: SocketAddr = format!("{ip}:{port}").parse().expect("literal");
                let busy = |e: std::io::Error| {
                    std::io::Error::new(e.kind(), format!("demo lab cannot listen on {addr}: {e}"))
                };
                let pool = if legacy { "ocs2007r2" } else { "lync2013" };
                let registrar = Arc::new(Registrar { pool, router: router.clone() });
                // The new pool's second Front End is the one a fault silences.
                let silent = (ip == "127.0.20.2").then(|| faults.clone());
                if service == Service::SipUdp {
                    let sock = UdpSocket::bind(addr).await.map_err(busy)?;
                    lab.listeners.push(tokio::spawn(sip_udp_as(
                        sock,
                        server_name(legacy),
                        Some(registrar),
                        silent,
                    )));
                    continue;
                }
                let l = TcpListener::bind(addr).await.map_err(busy)?;
                let acceptor = if legacy { legacy_tls.clone() } else { new_tls.clone() };
                lab.listeners.push(tokio::spawn(async move {
                    loop {
                        if let Ok((tcp, _)) = l.accept().await {
                            let _ = tcp.set_nodelay(true);
                            let silent = silent.clone();
                            tokio::spawn(serve(
                                tcp,
                                service,
                                legacy,
                                acceptor.clone(),
                                registrar.clone(),
                                silent,
                            ));
                        }
                    }
                }));
            }
        }
        // The administration path: every server's SQL Server Browser, the legacy server's
        // endpoint mapper (WMI/DCOM), the Front Ends' SMB (CMS replication).
        let listen_error = |addr: SocketAddr| {
            move |e: std::io::Error| {
                std::io::Error::new(e.kind(), format!("demo lab cannot listen on {addr}: {e}"))
            }
        };
        for (ip, server, instances) in [
            ("127.0.10.1", "OCSSE01", admin::OCS_STANDARD_EDITION),
            ("127.0.20.1", "LYNCFE01", admin::LYNC_FRONT_END),
            ("127.0.20.2", "LYNCFE02", admin::LYNC_FRONT_END),
        ] {
            // invariant: an address literal of the lab's own (loopback data in this crate).
            let addr: SocketAddr = format!("{ip}:{DEMO_SSRP_PORT}").parse().expect("literal");
            let sock = UdpSocket::bind(addr).await.map_err(listen_error(addr))?;
            lab.listeners.push(tokio::spawn(admin::ssrp_responder(sock, server, instances)));
        }
        // invariant: an address literal of the lab's own (loopback data in this crate).
        let addr: SocketAddr = format!("127.0.10.1:{DEMO_EPM_PORT}").parse().expect("literal");
        let l = TcpListener::bind(addr).await.map_err(listen_error(addr))?;
        lab.listeners.push(tokio::spawn(admin::epm_responder(l)));
        for ip in ["127.0.20.1", "127.0.20.2"] {
            // invariant: an address literal of the lab's own (loopback data in this crate).
            let addr: SocketAddr = format!("{ip}:{DEMO_SMB_PORT}").parse().expect("literal");
            let l = TcpListener::bind(addr).await.map_err(listen_error(addr))?;
            lab.listeners.push(tokio::spawn(admin::smb_responder(l)));
        }
        Ok(lab)
    }
}
