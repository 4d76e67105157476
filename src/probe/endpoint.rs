//! Registered endpoints: for every test user a `sip_im` check names, the agent stays
//! registered as a client does, so that other test users can reach it.
//!
//! One endpoint per user: one long-lived connection to the user's home pool (TLS or
//! TCP; over UDP a connected socket, whose local address is the Contact), a REGISTER
//! answered with the user's credentials (one `301`/`302` followed, as in
//! `sip_register`), refreshed at half the granted expiry on the same connection,
//! registered again with backoff (1 s doubling to 30 s) after a loss or a refusal.
//!
//! Requests that reach the endpoint are answered as a client answers them: `200` to
//! MESSAGE, OPTIONS, INFO, BYE and CANCEL, `200` with a Contact (and the Record-Route
//! echoed) to an INVITE a probe of this agent waits for (`480` to any other: several
//! agents may register the same test user, and a forking registrar must set the session
//! up with the sender's agent), nothing to ACK, `404` for another user, `405` to
//! anything else.
//! A `sip_im` probe waiting for a request (by its Call-ID and method) is told when it
//! arrived.
//!
//! Hostile bytes: a stream message past 64 KiB ([`crate::sip::message::MAX_MESSAGE`]) or
//! that does not parse closes the connection (there is no resynchronising a stream);
//! the endpoint registers again. A bad datagram is dropped. Nothing is buffered past
//! 64 KiB per connection.
//!
//! Endpoints live across configuration reloads: [`Endpoints::sync`] keeps those whose
//! user, registrar and TLS options did not change.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::sip::{TxError, T1, T2};
use super::sip_register::{self, Conn, Registered, Stream, Transact};
use super::{Failure, FailureReason, ProbeContext};
use crate::pool::Pool;
use crate::sip::auth::Digest;
use crate::sip::message::{self, Message, Parsed, StartLine, Transaction, Transport, MAX_MESSAGE};
use crate::tls::TlsOptions;
use crate::users::{User, UserAuth};

/// Seconds an endpoint's REGISTER asks for (refreshed at half of what is granted).
pub const EXPIRES: u32 = 600;
/// The shortest refresh period, whatever the registrar grants.
const MIN_REFRESH: Duration = Duration::from_secs(1);
/// CRLF keep-alives on a stream (RFC 5626 §4.4.1), so that the registrar does not
/// close an idle connection between refreshes.
const KEEPALIVE: Duration = Duration::from_secs(30);
/// Backoff after a failed registration: from this, doubling…
const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// …up to this.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Time allowed to one registration attempt (connect, challenge, redirect).
const REGISTER_BUDGET: Duration = Duration::from_secs(10);
/// Longest a write to the registrar may block before the connection is given up.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// Responses kept for retransmitted requests (RFC 3261 §17.2: the server transaction
/// answers a retransmission with the same response), and for how long.
const ANSWERS_KEPT: usize = 1024;
const ANSWER_TTL: Duration = Duration::from_secs(32);
/// Probes waiting for a request at one endpoint, at most (one per `sip_im` in flight).
const MAX_WAITERS: usize = 4096;
/// Transactions in flight on one link, at most.
const MAX_PENDING: usize = 4096;

/// What an endpoint is: the user, where it registers first, and how.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointSpec {
    /// The test user.
    pub user: User,
    /// The planned pool's FQDN.
    pub registrar: String,
    /// TLS options (the planned pool's minimum version).
    pub opts: TlsOptions,
    /// Every pool (to say where the user is homed).
    pub pools: Vec<Pool>,
}

/// An endpoint's registration, as the status shows it.
#[derive(Debug, Clone, Serialize)]
pub struct EndpointStatus {
    /// The user's name.
    pub user: String,
    /// Its address of record.
    pub uri: String,
    /// The pool the plan says it is homed on.
    pub pool: String,
    /// Registered now.
    pub registered: bool,
    /// The pool the accepting registrar belongs to (`unknown`: none), when registered.
    pub home_pool: Option<String>,
    /// The registrar host that accepted it.
    pub registrar: Option<String>,
    /// Seconds the registrar granted.
    pub expires: Option<u32>,
    /// Why the last attempt or the last registration failed.
    pub reason: Option<FailureReason>,
    /// The detail of that failure.
    pub detail: Option<String>,
    /// Unix time of the last change between registered and not.
    pub since: f64,
    /// Registration attempts made (refreshes not counted).
    pub attempts: u64,
}

/// The registered endpoints of the running configuration.
#[derive(Default)]
pub struct Endpoints {
    running: Mutex<HashMap<String, Running>>,
}

impl std::fmt::Debug for Endpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoints").field("users", &self.statuses().len()).finish()
    }
}

struct Running {
    endpoint: Arc<Endpoint>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Endpoints {
    /// Makes the running endpoints those of `specs` (one per user): unchanged ones keep
    /// their registration, changed ones start over, others unregister and stop. New
    /// tasks run on `rt`; every endpoint uses `cx` from now on.
    pub fn sync(&self, specs: Vec<EndpointSpec>, cx: &ProbeContext, rt: &tokio::runtime::Handle) {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let mut wanted: HashMap<String, EndpointSpec> = HashMap::new();
        for s in specs {
            wanted.entry(s.user.name.clone()).or_insert(s);
        }
        running.retain(|name, r| {
            let keep = wanted.get(name).is_some_and(|s| *s == r.endpoint.spec);
            if !keep {
                r.stop.cancel();
            }
            keep
        });
        for (name, spec) in wanted {
            if let Some(r) = running.get(&name) {
                *r.endpoint.cx.lock().unwrap_or_else(|e| e.into_inner()) = cx.clone();
                continue;
            }
            let endpoint = Arc::new(Endpoint::new(spec, cx.clone()));
            let stop = CancellationToken::new();
            let task = rt.spawn(run(endpoint.clone(), stop.clone()));
            running.insert(name, Running { endpoint, stop, task });
        }
    }

    /// The endpoint of user `name`.
    pub fn get(&self, name: &str) -> Option<Arc<Endpoint>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner()).get(name).map(|r| r.endpoint.clone())
    }

    /// Every endpoint's status, by user name.
    pub fn statuses(&self) -> Vec<EndpointStatus> {
        let mut v: Vec<EndpointStatus> = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|r| r.endpoint.status())
            .collect();
        v.sort_by(|a, b| a.user.cmp(&b.user));
        v
    }

    /// Waits until every endpoint has made its first attempt, or `deadline`.
    pub async fn settled(&self, deadline: Instant) {
        while Instant::now() < deadline
            && self.statuses().iter().any(|s| s.attempts == 0 || (!s.registered && s.reason.is_none()))
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Unregisters and stops every endpoint, waiting at most `within` for them.
    pub async fn stop_all(&self, within: Duration) {
        let tasks: Vec<tokio::task::JoinHandle<()>> = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .map(|(_, r)| {
                r.stop.cancel();
                r.task
            })
            .collect();
        let _ = tokio::time::timeout(within, async {
            for t in tasks {
                let _ = t.await;
            }
        })
        .await;
    }
}

/// One test user's registered endpoint.
pub struct Endpoint {
    spec: EndpointSpec,
    cx: Mutex<ProbeContext>,
    status: Mutex<EndpointStatus>,
    link: Mutex<Option<Arc<Link>>>,
    waiters: Mutex<HashMap<String, oneshot::Sender<Instant>>>,
    answers: Mutex<HashMap<String, (Instant, Vec<u8>)>>,
}

impl Endpoint {
    fn new(spec: EndpointSpec, cx: ProbeContext) -> Endpoint {
        let status = EndpointStatus {
            user: spec.user.name.clone(),
            uri: spec.user.aor.uri(),
            pool: spec.user.pool.clone(),
            registered: false,
            home_pool: None,
            registrar: None,
            expires: None,
            reason: None,
            detail: None,
            since: unix_now(),
            attempts: 0,
        };
        Endpoint {
            spec,
            cx: Mutex::new(cx),
            status: Mutex::new(status),
            link: Mutex::new(None),
            waiters: Mutex::new(HashMap::new()),
            answers: Mutex::new(HashMap::new()),
        }
    }

    /// The test user.
    pub fn user(&self) -> &User {
        &self.spec.user
    }

    /// The registration's status now.
    pub fn status(&self) -> EndpointStatus {
        self.status.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits (until `deadline`) while the endpoint has not finished its first
    /// registration attempt: a probe right after start or a reload is not failed for
    /// a registration still under way.
    pub async fn first_attempt(&self, deadline: Instant) {
        let settled = |s: &EndpointStatus| s.registered || s.reason.is_some();
        while !settled(&self.status()) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The connection it is registered over, when registered.
    pub fn link(&self) -> Option<Arc<Link>> {
        if !self.status.lock().unwrap_or_else(|e| e.into_inner()).registered {
            return None;
        }
        self.link.lock().unwrap_or_else(|e| e.into_inner()).clone().filter(|l| !l.closed.is_cancelled())
    }

    /// Starts waiting for a request with this Call-ID and method to reach the endpoint;
    /// `None` when too many probes wait already. The wait ends when the guard drops.
    pub fn expect(self: &Arc<Self>, call_id: &str, method: &str) -> Option<Expect> {
        let key = format!("{call_id} {method}");
        let (tx, rx) = oneshot::channel();
        let mut w = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        if w.len() >= MAX_WAITERS {
            return None;
        }
        w.insert(key.clone(), tx);
        Some(Expect { endpoint: self.clone(), key, rx: Some(rx) })
    }

    /// Tells the probe waiting for this request that it arrived; whether one waited.
    fn notify(&self, call_id: &str, method: &str) -> bool {
        let key = format!("{call_id} {method}");
        match self.waiters.lock().unwrap_or_else(|e| e.into_inner()).remove(&key) {
            Some(tx) => {
                let _ = tx.send(Instant::now());
                true
            }
            None => false,
        }
    }

    fn set_registered(&self, home: String, host: &str, expires: u32) {
        let mut s = self.status.lock().unwrap_or_else(|e| e.into_inner());
        if !s.registered || s.home_pool.as_deref() != Some(&home) {
            tracing::info!(user = %s.user, home_pool = %home, registrar = %host, expires, "test user registered");
            s.since = unix_now();
        }
        s.registered = true;
        s.home_pool = Some(home);
        s.registrar = Some(host.to_owned());
        s.expires = Some(expires);
        s.reason = None;
        s.detail = None;
    }

    fn set_failed(&self, f: Failure) {
        let mut s = self.status.lock().unwrap_or_else(|e| e.into_inner());
        if s.registered || s.reason != Some(f.reason) {
            tracing::warn!(user = %s.user, reason = f.reason.as_str(), detail = %f.detail, "test user not registered");
        }
        if s.registered {
            s.since = unix_now();
        }
        s.registered = false;
        s.home_pool = None;
        s.expires = None;
        s.reason = Some(f.reason);
        s.detail = Some(f.detail);
    }

    /// The answer to a request that reached the endpoint; a retransmission (same
    /// branch and method within 32 s) gets the same answer again.
    fn answer(&self, req: &Message, link: &Link) -> Option<Vec<u8>> {
        let method = match &req.start {
            StartLine::Request { method, .. } if method != "ACK" => method.as_str(),
            _ => return self.answer_fresh(req, link),
        };
        let key = format!("{} {method}", req.top_via_branch().unwrap_or(""));
        let now = Instant::now();
        {
            let answers = self.answers.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((at, resp)) = answers.get(&key) {
                if now.duration_since(*at) < ANSWER_TTL {
                    return Some(resp.clone());
                }
            }
        }
        let resp = self.answer_fresh(req, link)?;
        let mut answers = self.answers.lock().unwrap_or_else(|e| e.into_inner());
        if answers.len() >= ANSWERS_KEPT {
            answers.retain(|_, (at, _)| now.duration_since(*at) < ANSWER_TTL);
            if answers.len() >= ANSWERS_KEPT {
                answers.clear();
            }
        }
        answers.insert(key, (now, resp.clone()));
        Some(resp)
    }

    /// The answer to a request seen for the first time (and tells a waiting probe).
    fn answer_fresh(&self, req: &Message, link: &Link) -> Option<Vec<u8>> {
        let StartLine::Request { method, uri } = &req.start else { return None };
        if method == "ACK" {
            return None;
        }
        let tag = message::token(8);
        let ours = message::uri_user(message::addr_uri(uri)) == Some(self.spec.user.aor.user.as_str());
        if !ours {
            return Some(message::reply(req, 404, "Not Found", &tag, "", None));
        }
        let call_id = req.header("call-id").unwrap_or("").trim();
        match method.as_str() {
            "MESSAGE" | "OPTIONS" | "INFO" | "BYE" | "CANCEL" => {
                self.notify(call_id, method);
                Some(message::reply(req, 200, "OK", &tag, "", None))
            }
            "INVITE" => {
                // Only sessions this agent's probes open are accepted. The same test user
                // may be registered by several agents (one per site): the registrar then
                // forks an INVITE to every one, and the session must be set up with the
                // endpoint whose agent sent it, or its in-dialog MESSAGE goes elsewhere.
                // 480 (not 6xx) lets a forking proxy wait for the other branches.
                if !self.notify(call_id, method) {
                    return Some(message::reply(req, 480, "Temporarily Unavailable", &tag, "", None));
                }
                let contact = format!(
                    "Contact: <sip:{}@{}{}>\r\n",
                    self.spec.user.aor.user,
                    link.sent_by,
                    message::transport_param(link.transport)
                );
                Some(message::reply(
                    req,
                    200,
                    "OK",
                    &tag,
                    &contact,
                    Some(("application/sdp", &im_sdp(&link.sent_by))),
                ))
            }
            _ => Some(message::reply(
                req,
                405,
                "Method Not Allowed",
                &tag,
                "Allow: INVITE, ACK, BYE, CANCEL, MESSAGE, OPTIONS, INFO\r\n",
                None,
            )),
        }
    }
}

/// The session description of an IM session (RFC 4975-style, as Lync and OCS clients
/// offer for instant messaging): no media flows through it here.
pub fn im_sdp(sent_by: &str) -> Vec<u8> {
    let host = sent_by.rsplit_once(':').map_or(sent_by, |(h, _)| h).trim_matches(['[', ']']);
    let family = if host.contains(':') { "IP6" } else { "IP4" };
    format!(
        "v=0\r\no=- 0 0 IN {family} {host}\r\ns=session\r\nc=IN {family} {host}\r\nt=0 0\r\n\
         m=message 5060 sip null\r\na=accept-types:text/plain\r\n"
    )
    .into_bytes()
}

/// A probe waiting for a request at an endpoint.
pub struct Expect {
    endpoint: Arc<Endpoint>,
    key: String,
    rx: Option<oneshot::Receiver<Instant>>,
}

impl Expect {
    /// When the request arrived, waiting until `deadline`.
    pub async fn arrived(&mut self, deadline: Instant) -> Option<Instant> {
        let rx = self.rx.as_mut()?;
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(t)) => {
                self.rx = None;
                Some(t)
            }
            _ => None,
        }
    }
}

impl Drop for Expect {
    fn drop(&mut self) {
        self.endpoint.waiters.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.key);
    }
}

/// One connection an endpoint is registered over: requests and responses in both
/// directions, demultiplexed by a reader task.
pub struct Link {
    /// The transport.
    pub transport: Transport,
    /// The local `host:port`: Via sent-by and Contact.
    pub sent_by: String,
    writer: tokio::sync::Mutex<Writer>,
    pending: Mutex<HashMap<String, mpsc::Sender<Message>>>,
    closed: CancellationToken,
}

enum Writer {
    Stream(WriteHalf<Box<dyn Stream>>),
    Udp(Arc<tokio::net::UdpSocket>),
}

impl Link {
    /// Sends bytes as they are (an ACK; a response).
    pub async fn send(&self, bytes: &[u8]) -> Result<(), TxError> {
        let io = |e: std::io::Error| TxError(crate::tls::io_reason(&e), format!("sending: {e}"));
        let write = async {
            match &mut *self.writer.lock().await {
                Writer::Stream(w) => async {
                    w.write_all(bytes).await?;
                    w.flush().await
                }
                .await
                .map_err(io),
                Writer::Udp(s) => s.send(bytes).await.map(|_| ()).map_err(io),
            }
        };
        // A registrar that stops reading must not hold the endpoint (or its reader).
        let r = match tokio::time::timeout(SEND_TIMEOUT, write).await {
            Ok(r) => r,
            Err(_) => Err(TxError(FailureReason::Timeout, format!("sending: blocked for {SEND_TIMEOUT:?}"))),
        };
        crate::trace::step("sip", || {
            format!("sent ({} bytes):\n{}", bytes.len(), crate::trace::mask_credentials(bytes))
        });
        if r.is_err() {
            self.closed.cancel();
        }
        r
    }

    /// Whether the connection is gone.
    pub fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }

    fn close(&self) {
        self.closed.cancel();
    }

    /// Runs a client transaction: sends `request`, retransmits over UDP (timer A/E),
    /// and returns the final response to `tx`.
    pub async fn transaction(
        &self,
        request: &[u8],
        tx: &Transaction,
        deadline: Instant,
    ) -> Result<Message, TxError> {
        let (stx, mut srx) = mpsc::channel(8);
        {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            if p.len() >= MAX_PENDING {
                return Err(TxError(FailureReason::Internal, "too many transactions in flight".into()));
            }
            p.insert(tx.branch.clone(), stx);
        }
        let _guard = PendingGuard(self, &tx.branch);
        self.send(request).await?;
        let udp = self.transport == Transport::Udp;
        let invite = tx.method == "INVITE";
        let mut interval = T1;
        let mut next = Instant::now() + interval;
        let mut provisional = false;
        let mut sends = 1u32;
        loop {
            let wake = if udp && !(invite && provisional) { next.min(deadline) } else { deadline };
            tokio::select! {
                m = srx.recv() => match m {
                    Some(m) if m.answers(tx) => {
                        crate::trace::step("sip", || format!("received {} {}", m.status().unwrap_or(0), tx.method));
                        if m.status().is_some_and(|c| c >= 200) {
                            return Ok(m);
                        }
                        provisional = true;
                        interval = T2;
                    }
                    Some(_) => {}
                    None => return Err(TxError(FailureReason::Io, "the connection to the registrar closed".into())),
                },
                _ = self.closed.cancelled() => {
                    return Err(TxError(FailureReason::Io, "the connection to the registrar closed".into()));
                }
                _ = tokio::time::sleep_until(wake) => {
                    if Instant::now() >= deadline {
                        return Err(TxError(FailureReason::Timeout, format!("no final response to {} ({sends} transmissions)", tx.method)));
                    }
                    self.send(request).await?;
                    sends += 1;
                    interval = (interval * 2).min(T2);
                    next = Instant::now() + interval;
                }
            }
        }
    }

    fn dispatch(&self, m: Message, endpoint: &Endpoint) -> Option<Vec<u8>> {
        if m.status().is_some() {
            let branch = m.top_via_branch().unwrap_or("").to_owned();
            let sender = self.pending.lock().unwrap_or_else(|e| e.into_inner()).get(&branch).cloned();
            if let Some(s) = sender {
                let _ = s.try_send(m);
            }
            return None;
        }
        endpoint.answer(&m, self)
    }
}

struct PendingGuard<'a>(&'a Link, &'a str);

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.0.pending.lock().unwrap_or_else(|e| e.into_inner()).remove(self.1);
    }
}

/// Closes a link when dropped, unless disarmed.
struct CloseOnDrop(Option<Arc<Link>>);

impl CloseOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        if let Some(l) = &self.0 {
            l.close();
        }
    }
}

/// A link as a REGISTER runs over it.
struct LinkRef(Arc<Link>);

impl Transact for LinkRef {
    fn sent_by(&self) -> String {
        self.0.sent_by.clone()
    }

    async fn transact(
        &mut self,
        request: &[u8],
        tx: &Transaction,
        deadline: Instant,
    ) -> Result<Message, TxError> {
        self.0.transaction(request, tx, deadline).await
    }
}

/// Turns a fresh connection into a link whose reader task answers requests for
/// `endpoint`.
fn start_link(conn: Conn, transport: Transport, endpoint: &Arc<Endpoint>) -> Arc<Link> {
    let closed = CancellationToken::new();
    match conn {
        Conn::Stream(s, sent_by) => {
            let (rd, wr) = tokio::io::split(s);
            let link = Arc::new(Link {
                transport,
                sent_by,
                writer: tokio::sync::Mutex::new(Writer::Stream(wr)),
                pending: Mutex::new(HashMap::new()),
                closed,
            });
            tokio::spawn(read_stream(link.clone(), endpoint.clone(), rd));
            link
        }
        Conn::Udp(sock, sent_by) => {
            let sock = Arc::new(sock);
            let link = Arc::new(Link {
                transport,
                sent_by,
                writer: tokio::sync::Mutex::new(Writer::Udp(sock.clone())),
                pending: Mutex::new(HashMap::new()),
                closed,
            });
            tokio::spawn(read_udp(link.clone(), endpoint.clone(), sock));
            link
        }
    }
}

async fn read_stream(link: Arc<Link>, endpoint: Arc<Endpoint>, mut rd: ReadHalf<Box<dyn Stream>>) {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    let user = endpoint.spec.user.name.clone();
    loop {
        loop {
            match message::parse(&buf, true) {
                Ok(Parsed::Complete(m, used)) => {
                    buf.drain(..used);
                    if let Some(resp) = link.dispatch(m, &endpoint) {
                        let _ = link.send(&resp).await;
                    }
                }
                Ok(Parsed::Incomplete) => {
                    // Keep-alive CRLFs (a registrar's pongs) are not kept.
                    let crlf = buf.iter().take_while(|b| **b == b'\r' || **b == b'\n').count();
                    buf.drain(..crlf);
                    break;
                }
                Err(e) => {
                    tracing::warn!(user = %user, error = %e, "bytes from the registrar are not SIP; closing the connection");
                    link.close();
                    return;
                }
            }
        }
        let room = (MAX_MESSAGE + 4).saturating_sub(buf.len()).clamp(1, chunk.len());
        let n = tokio::select! {
            r = rd.read(&mut chunk[..room]) => r,
            _ = link.closed.cancelled() => return,
        };
        match n {
            Ok(0) | Err(_) => {
                link.close();
                return;
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

async fn read_udp(link: Arc<Link>, endpoint: Arc<Endpoint>, sock: Arc<tokio::net::UdpSocket>) {
    let mut buf: Vec<u8> = Vec::with_capacity(MAX_MESSAGE);
    loop {
        buf.clear();
        let r = tokio::select! {
            r = sock.recv_buf(&mut buf) => r,
            _ = link.closed.cancelled() => return,
        };
        let n = match r {
            Ok(n) => n,
            // ICMP port unreachable from a restarted registrar: not fatal for UDP.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
            Err(_) => {
                link.close();
                return;
            }
        };
        match message::parse(&buf[..n], false) {
            Ok(Parsed::Complete(m, _)) => {
                if let Some(resp) = link.dispatch(m, &endpoint) {
                    let _ = link.send(&resp).await;
                }
            }
            Ok(Parsed::Incomplete) => {}
            Err(e) => tracing::debug!(user = %endpoint.spec.user.name, error = %e, "datagram dropped"),
        }
    }
}

/// A registration in force: the link, its Call-ID/CSeq and tag, the credentials.
struct Session {
    link: Arc<Link>,
    tx: Transaction,
    tag: String,
    scheme: Option<Digest>,
    granted: u32,
    host: String,
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

fn fail(reason: FailureReason, detail: impl Into<String>) -> Failure {
    Failure { reason, detail: detail.into() }
}

/// The expiry the registrar granted: our Contact's `expires`, else `Expires`, else
/// what was asked.
fn granted(resp: &Message, sent_by: &str) -> u32 {
    let from_contact = resp
        .header_values("contact")
        .find(|c| c.contains(sent_by))
        .and_then(|c| message::param(c, "expires"))
        .and_then(|v| message::bounded_decimal(v.trim_end_matches('>'), u64::from(EXPIRES)));
    let from_header =
        || resp.header("expires").and_then(|v| message::bounded_decimal(v.trim(), u64::from(u32::MAX)));
    from_contact.or_else(from_header).map_or(EXPIRES, |v| v.min(u64::from(EXPIRES)) as u32)
}

/// Connects to the planned pool and registers, following one redirect.
async fn register_fresh(endpoint: &Arc<Endpoint>) -> Result<Session, Failure> {
    let spec = &endpoint.spec;
    let cx = endpoint.cx.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let deadline = Instant::now() + REGISTER_BUDGET;
    let mut scheme = match &spec.user.auth {
        UserAuth::Digest { username, password } => Some(Digest::new(username.clone(), password.clone())),
        UserAuth::None => None,
    };
    let (mut host, mut port, mut transport) = (spec.registrar.clone(), spec.user.port, spec.user.transport);
    let mut redirected = false;
    loop {
        let mut phases = Vec::new();
        let conn = tokio::time::timeout_at(
            deadline,
            sip_register::connect(&spec.opts, &host, port, transport, &cx, &mut phases),
        )
        .await
        .map_err(|_| fail(FailureReason::Timeout, format!("connecting to {host}:{port}")))?
        .map_err(|o| o.result.err().unwrap_or_else(|| fail(FailureReason::Internal, "connect failed")))?;
        let link = start_link(conn, transport, endpoint);
        // Closes the link (and ends its reader) if this attempt is dropped half-way, as
        // on a stop or a reload.
        let guard = CloseOnDrop(Some(link.clone()));
        let mut tx = message::new_transaction();
        tx.method = "REGISTER";
        let tag = message::token(8);
        let mut lr = LinkRef(link.clone());
        let r =
            sip_register::register(&spec.user, &mut lr, &mut scheme, &mut tx, &tag, EXPIRES, deadline).await;
        match r {
            Err((reason, detail)) => {
                link.close();
                return Err(fail(reason, format!("{host}:{port}: {detail}")));
            }
            Ok(Registered::Redirect(contact)) => {
                link.close();
                if redirected {
                    return Err(fail(FailureReason::SipStatus, format!("redirected twice (to {contact})")));
                }
                let Some((h, p, tr)) = message::uri_target(&contact) else {
                    return Err(fail(
                        FailureReason::SipMalformed,
                        format!("3xx without a usable Contact: {contact:?}"),
                    ));
                };
                transport = tr.unwrap_or(transport);
                port = p.unwrap_or(transport.default_port());
                host = h;
                redirected = true;
            }
            Ok(Registered::Ok(resp)) => {
                let granted = granted(&resp, &link.sent_by);
                guard.disarm();
                return Ok(Session { link, tx, tag, scheme, granted, host });
            }
        }
    }
}

/// The endpoint's life: register, hold (refresh), register again after a loss.
async fn run(endpoint: Arc<Endpoint>, stop: CancellationToken) {
    let mut backoff = BACKOFF_MIN;
    loop {
        endpoint.status.lock().unwrap_or_else(|e| e.into_inner()).attempts += 1;
        let attempt = tokio::select! {
            _ = stop.cancelled() => return,
            r = register_fresh(&endpoint) => r,
        };
        let session = match attempt {
            Ok(s) => s,
            Err(f) => {
                endpoint.set_failed(f);
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        backoff = BACKOFF_MIN;
        let cx = endpoint.cx.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let home = sip_register::home_of(&endpoint.spec.pools, &session.host, &cx).await;
        *endpoint.link.lock().unwrap_or_else(|e| e.into_inner()) = Some(session.link.clone());
        endpoint.set_registered(home, &session.host, session.granted);
        match hold(&endpoint, session, &stop).await {
            None => return,
            Some(f) => endpoint.set_failed(f),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(BACKOFF_MIN) => {}
        }
    }
}

/// Keeps a registration: refreshes it at half the granted expiry until the link is
/// lost, a refresh fails (the failure), or `stop` (unregisters; `None`).
async fn hold(endpoint: &Arc<Endpoint>, mut s: Session, stop: &CancellationToken) -> Option<Failure> {
    let user = &endpoint.spec.user;
    let stream = s.link.transport != Transport::Udp;
    loop {
        let refresh = (Duration::from_secs(u64::from(s.granted)) / 2).max(MIN_REFRESH);
        let refresh_at = Instant::now() + refresh;
        // Keep-alives until the refresh is due.
        while stream && refresh_at.saturating_duration_since(Instant::now()) > KEEPALIVE {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = s.link.closed.cancelled() => break,
                _ = tokio::time::sleep(KEEPALIVE) => {
                    let _ = s.link.send(b"\r\n\r\n").await;
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => {
                s.tx = s.tx.next("REGISTER");
                let deadline = Instant::now() + Duration::from_secs(1);
                let mut lr = LinkRef(s.link.clone());
                let _ = sip_register::register(user, &mut lr, &mut s.scheme, &mut s.tx, &s.tag, 0, deadline).await;
                s.link.close();
                return None;
            }
            _ = s.link.closed.cancelled() => {
                return Some(fail(FailureReason::Io, format!("the connection to {} closed", s.host)));
            }
            _ = tokio::time::sleep_until(refresh_at) => {
                s.tx = s.tx.next("REGISTER");
                let deadline = Instant::now() + REGISTER_BUDGET;
                let mut lr = LinkRef(s.link.clone());
                match sip_register::register(user, &mut lr, &mut s.scheme, &mut s.tx, &s.tag, EXPIRES, deadline).await {
                    Ok(Registered::Ok(resp)) => {
                        s.granted = granted(&resp, &s.link.sent_by);
                        endpoint.status.lock().unwrap_or_else(|e| e.into_inner()).expires = Some(s.granted);
                    }
                    Ok(Registered::Redirect(c)) => {
                        s.link.close();
                        return Some(fail(FailureReason::SipStatus, format!("refresh redirected to {c}: registering again")));
                    }
                    Err((r, d)) => {
                        s.link.close();
                        return Some(fail(r, format!("refresh at {}: {d}", s.host)));
                    }
                }
            }
        }
    }
}
