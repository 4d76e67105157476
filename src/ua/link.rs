//! The connection a registered endpoint holds to its registrar: requests and responses
//! in both directions over one TLS/TCP stream or connected UDP socket, demultiplexed by
//! a reader task (responses to the link's client transactions, requests to the
//! endpoint's UAS answers), bounded by the endpoints' byte budget.
//!
//! What it does not do: decide answers or hold the registration ([`super::endpoint`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::conn::{connect_sip, Datagram, SipConn, Stream};
use super::credentials::SharedAssociation;
use super::endpoint::Endpoint;
use super::registration::{Connector, Transact};
use super::ProbeContext;
use crate::failure::{Failure, FailureReason};
use crate::model::outcome::Phase;
use crate::sip::framer::{FrameError, Framer};
use crate::sip::message::{self, Message, Transaction, Transport, MAX_MESSAGE};

/// Longest a write to the registrar may block before the connection is given up.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// Transactions in flight on one link, at most.
const MAX_PENDING: usize = 4096;
/// Longest a message may take to arrive once its first byte has (a registrar that
/// starts a message and never ends it holds buffer space): the connection is closed.
const MESSAGE_WITHIN: Duration = Duration::from_secs(32);

/// One connection an endpoint is registered over: requests and responses in both
/// directions, demultiplexed by a reader task.
pub struct Link {
    /// The transport.
    pub transport: Transport,
    /// The local `host:port`: Via sent-by and Contact.
    pub sent_by: String,
    writer: tokio::sync::Mutex<Writer>,
    pending: Mutex<HashMap<String, mpsc::Sender<Message>>>,
    pub(super) closed: CancellationToken,
    /// CRLF keep-alive runs received (pongs), counted by the reader.
    pub(super) pongs: AtomicU64,
    /// The NTLM security association every message on the link is signed on, once
    /// the user signed in with NTLM (MS-SIPAE): outgoing requests and responses get a
    /// signature, incoming ones must carry the server's.
    sa: Mutex<Option<SharedAssociation>>,
}

enum Writer {
    Stream(WriteHalf<Box<dyn Stream>>),
    Udp(Arc<dyn Datagram>),
}

impl Link {
    fn new(transport: Transport, sent_by: String, writer: Writer) -> Link {
        Link {
            transport,
            sent_by,
            writer: tokio::sync::Mutex::new(writer),
            pending: Mutex::new(HashMap::new()),
            closed: CancellationToken::new(),
            pongs: AtomicU64::new(0),
            sa: Mutex::new(None),
        }
    }

    /// Signs everything on the link from now on with `sa` (none: nothing is signed).
    pub fn set_association(&self, sa: Option<SharedAssociation>) {
        *self.sa.lock().unwrap_or_else(|e| e.into_inner()) = sa;
    }

    fn association(&self) -> Option<SharedAssociation> {
        self.sa.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// `bytes` signed on the link's association, unless there is none or the message
    /// carries NTLM credentials already (a REGISTER the registration signed).
    fn signed<'a>(&self, bytes: &'a [u8]) -> Result<std::borrow::Cow<'a, [u8]>, Failure> {
        use std::borrow::Cow;
        // CRLF keep-alives (RFC 5626) are no SIP message: never signed.
        let keepalive = bytes.iter().all(|b| matches!(b, b'\r' | b'\n'));
        let Some(sa) = self.association().filter(|_| !keepalive) else { return Ok(Cow::Borrowed(bytes)) };
        let head_end = bytes.windows(4).position(|w| w == b"\r\n\r\n");
        let (Some(end), Ok(message::Parsed::Complete(m, _))) = (head_end, message::parse(bytes, false))
        else {
            // Never sent unsigned on an association.
            return Err(Failure::new(FailureReason::Internal, "a message of ours does not parse: not sent"));
        };
        if bytes[..end].windows(19).any(|w| w.eq_ignore_ascii_case(b"uthorization: NTLM ")) {
            return Ok(Cow::Borrowed(bytes));
        }
        let (name, value) = sa.lock().unwrap_or_else(|e| e.into_inner()).sign(&m);
        let mut out = Vec::with_capacity(bytes.len() + name.len() + value.len() + 4);
        out.extend_from_slice(&bytes[..end]);
        out.extend_from_slice(format!("\r\n{name}: {value}").as_bytes());
        out.extend_from_slice(&bytes[end..]);
        Ok(Cow::Owned(out))
    }

    /// Whether `m`, a message of the server's, passes the link's association (always
    /// without one).
    fn verified(&self, m: &Message) -> Result<(), Failure> {
        let Some(sa) = self.association() else { return Ok(()) };
        let verdict = sa.lock().unwrap_or_else(|e| e.into_inner()).verify(m);
        verdict.map_err(|e| {
            let what = match m.status() {
                Some(code) => format!("{code} {}", m.cseq().map_or("", |(_, method)| method)),
                None => m.cseq().map_or_else(String::new, |(_, method)| method.to_owned()),
            };
            Failure::new(FailureReason::AuthSignature, format!("{what}: {e}"))
        })
    }

    /// Sends a message (an ACK; a response), signed on the link's association.
    pub async fn send(&self, bytes: &[u8]) -> Result<(), Failure> {
        self.send_signed(bytes).await.map(|_| ())
    }

    /// Signs `bytes` and sends them while holding the writer: the signatures' numbers
    /// (`cnum`) go out in the order they were given. The bytes as sent.
    async fn send_signed<'a>(&self, bytes: &'a [u8]) -> Result<std::borrow::Cow<'a, [u8]>, Failure> {
        let mut writer = self.writer.lock().await;
        let signed = self.signed(bytes)?;
        self.write(&mut writer, &signed).await?;
        Ok(signed)
    }

    async fn send_raw(&self, bytes: &[u8]) -> Result<(), Failure> {
        let mut writer = self.writer.lock().await;
        self.write(&mut writer, bytes).await
    }

    async fn write(&self, writer: &mut Writer, bytes: &[u8]) -> Result<(), Failure> {
        let io = |e: std::io::Error| Failure::new(crate::net::tls::io_reason(&e), format!("sending: {e}"));
        let write = async {
            match writer {
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
            Err(_) => {
                Err(Failure::new(FailureReason::Timeout, format!("sending: blocked for {SEND_TIMEOUT:?}")))
            }
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

    pub(super) fn close(&self) {
        self.closed.cancel();
    }

    /// Runs a client transaction: sends `request`, retransmits over UDP (timer A/E),
    /// and returns the final response to `tx`.
    pub async fn transaction(
        &self,
        request: &[u8],
        tx: &Transaction,
        deadline: Instant,
    ) -> Result<Message, Failure> {
        self.transaction_noting(request, tx, deadline, &mut None).await
    }

    /// [`Link::transaction`], noting the first provisional response other than `100
    /// Trying` (its code and when it came) in `provisional`: a call's post-dial delay.
    pub async fn transaction_noting(
        &self,
        request: &[u8],
        tx: &Transaction,
        deadline: Instant,
        provisional: &mut Option<(u16, Instant)>,
    ) -> Result<Message, Failure> {
        let (stx, srx) = mpsc::channel(8);
        {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            if p.len() >= MAX_PENDING {
                return Err(Failure::new(FailureReason::Internal, "too many transactions in flight"));
            }
            p.insert(tx.branch.clone(), stx);
        }
        let _guard = PendingGuard(self, &tx.branch);
        // Signed once: a retransmission is the same message.
        let request = self.send_signed(request).await?;
        let mut ch = Responses { link: self, rx: srx };
        let m = super::transaction::run(&mut ch, &request, tx, deadline, provisional).await?;
        // REGISTER responses are the registration's to check (it may be setting up a
        // new association).
        if !matches!(m.status(), Some(401 | 407)) && tx.method != "REGISTER" {
            self.verified(&m)?;
        }
        Ok(m)
    }

    fn dispatch(&self, m: Message, endpoint: &Endpoint) -> Vec<Arc<[u8]>> {
        if m.status().is_some() {
            let branch = m.top_via_branch().unwrap_or("").to_owned();
            let sender = self.pending.lock().unwrap_or_else(|e| e.into_inner()).get(&branch).cloned();
            if let Some(s) = sender {
                let _ = s.try_send(m);
            }
            return Vec::new();
        }
        if let Err(f) = self.verified(&m) {
            // Never acted on unsigned: dropped, as a client does (the sender retries,
            // and its probe fails with not_delivered).
            tracing::warn!(user = %endpoint.user().name, "request from the registrar dropped: {}", f.detail);
            return Vec::new();
        }
        endpoint.answer(&m, self)
    }
}

/// A transaction's responses on a link: routed to it by the reader task (by branch).
struct Responses<'a> {
    link: &'a Link,
    rx: mpsc::Receiver<Message>,
}

impl super::transaction::Channel for Responses<'_> {
    fn reliable(&self) -> bool {
        self.link.transport != Transport::Udp
    }

    async fn resend(&mut self, request: &[u8]) -> Result<(), Failure> {
        self.link.send_raw(request).await
    }

    async fn next(&mut self) -> Result<Option<Message>, Failure> {
        let closed = || Failure::new(FailureReason::Io, "the connection to the registrar closed");
        // A response that arrived before the connection closed still counts.
        tokio::select! {
            biased;
            m = self.rx.recv() => {
                let m = m.ok_or_else(closed)?;
                crate::trace::step("sip", || {
                    let method = m.header("cseq").and_then(|c| c.split_whitespace().nth(1)).unwrap_or("");
                    format!("received {} {method}", m.status().unwrap_or(0))
                });
                Ok(Some(m))
            }
            _ = self.link.closed.cancelled() => Err(closed()),
        }
    }
}

struct PendingGuard<'a>(&'a Link, &'a str);

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.0.pending.lock().unwrap_or_else(|e| e.into_inner()).remove(self.1);
    }
}

/// A link as a registration runs over it; closes the link when dropped while armed
/// (an attempt given up half-way, a redirect, a stop or a reload).
pub struct LinkRef {
    pub(super) link: Arc<Link>,
    pub(super) armed: bool,
}

impl Drop for LinkRef {
    fn drop(&mut self) {
        if self.armed {
            self.link.close();
        }
    }
}

impl Transact for LinkRef {
    fn sent_by(&self) -> String {
        self.link.sent_by.clone()
    }

    async fn transact(
        &mut self,
        request: &[u8],
        tx: &Transaction,
        deadline: Instant,
    ) -> Result<Message, Failure> {
        self.link.transaction(request, tx, deadline).await
    }
}

/// Connects an endpoint's links: a fresh connection whose reader task answers
/// requests for the endpoint.
pub(super) struct LinkConnector<'a> {
    pub(super) endpoint: &'a Arc<Endpoint>,
    pub(super) cx: &'a ProbeContext,
}

impl Connector for LinkConnector<'_> {
    type Conn = LinkRef;

    async fn connect(
        &mut self,
        host: &str,
        port: u16,
        transport: Transport,
        phases: &mut Vec<(Phase, Duration)>,
    ) -> Result<LinkRef, Failure> {
        let conn = match &self.endpoint.shared.dialer {
            None => connect_sip(&self.endpoint.spec.opts, host, port, transport, self.cx, phases).await?,
            Some(d) => d.dial(host, port, transport).await.map_err(|e| {
                Failure::new(crate::failure::connect_reason(&e), format!("{host}:{port}: {e}"))
            })?,
        };
        Ok(LinkRef { link: start_link(conn, transport, self.endpoint), armed: true })
    }
}

/// Turns a fresh connection into a link whose reader task answers requests for
/// `endpoint`.
fn start_link(conn: SipConn, transport: Transport, endpoint: &Arc<Endpoint>) -> Arc<Link> {
    match conn {
        SipConn::Stream(s, sent_by) => {
            let (rd, wr) = tokio::io::split(s);
            let link = Arc::new(Link::new(transport, sent_by, Writer::Stream(wr)));
            tokio::spawn(read_stream(link.clone(), endpoint.clone(), rd));
            link
        }
        SipConn::Udp(sock, sent_by) => {
            let sock: Arc<dyn Datagram> = Arc::from(sock);
            let link = Arc::new(Link::new(transport, sent_by, Writer::Udp(sock.clone())));
            tokio::spawn(read_udp(link.clone(), endpoint.clone(), sock));
            link
        }
    }
}

/// Sends the endpoint's answers to a request: the first at once, a final one after a
/// provisional ([`super::endpoint::RING`] later, from a task of its own: the reader
/// goes on).
async fn answer(link: &Arc<Link>, answers: Vec<Arc<[u8]>>) {
    let mut answers = answers.into_iter();
    if let Some(first) = answers.next() {
        let _ = link.send(&first).await;
    }
    let rest: Vec<Arc<[u8]>> = answers.collect();
    if !rest.is_empty() {
        let link = link.clone();
        tokio::spawn(async move {
            tokio::time::sleep(super::endpoint::RING).await;
            for r in rest {
                let _ = link.send(&r).await;
            }
        });
    }
}

async fn read_stream(link: Arc<Link>, endpoint: Arc<Endpoint>, mut rd: ReadHalf<Box<dyn Stream>>) {
    let mut framer = Framer::new(Some(&endpoint.shared.budget));
    let mut chunk = [0u8; 4096];
    let mut begun: Option<Instant> = None;
    let user = endpoint.spec.user.name.clone();
    let give_up = |e: FrameError| {
        match e {
            FrameError::Budget => {
                tracing::warn!(user = %user, "the endpoints' memory budget is exhausted; closing the connection")
            }
            FrameError::Parse(e) => {
                tracing::warn!(user = %user, error = %e, "bytes from the registrar are not SIP; closing the connection")
            }
        }
        link.close();
    };
    loop {
        loop {
            match framer.next_message() {
                Ok(Some(m)) => {
                    begun = None;
                    answer(&link, link.dispatch(m, &endpoint)).await;
                }
                Ok(None) => break,
                Err(e) => return give_up(e),
            }
        }
        link.pongs.store(framer.keepalives(), Ordering::Release);
        // A message begun must end in time; between messages there is no limit.
        let started = match (framer.buffered(), begun) {
            (0, _) => None,
            (_, Some(t)) => Some(t),
            (_, None) => Some(Instant::now()),
        };
        begun = started;
        let too_slow = async {
            match started {
                Some(t) => tokio::time::sleep_until(t + MESSAGE_WITHIN).await,
                None => std::future::pending().await,
            }
        };
        let n = tokio::select! {
            r = rd.read(&mut chunk) => r,
            _ = link.closed.cancelled() => return,
            _ = too_slow => {
                tracing::warn!(user = %user, "a message from the registrar did not end within {MESSAGE_WITHIN:?}; closing the connection");
                link.close();
                return;
            }
        };
        match n {
            Ok(0) | Err(_) => {
                link.close();
                return;
            }
            Ok(n) => {
                if let Err(e) = framer.push(&chunk[..n]) {
                    return give_up(e);
                }
            }
        }
    }
}

async fn read_udp(link: Arc<Link>, endpoint: Arc<Endpoint>, sock: Arc<dyn Datagram>) {
    loop {
        let ready = tokio::select! {
            r = sock.readable() => r,
            _ = link.closed.cancelled() => return,
        };
        if ready.is_err() {
            link.close();
            return;
        }
        // A buffer per datagram, gone once it is handled: a thousand idle endpoints
        // hold no 64 KiB buffer each.
        let mut buf: Vec<u8> = Vec::with_capacity(MAX_MESSAGE);
        let n = match sock.try_recv_buf(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            // ICMP port unreachable from a restarted registrar: not fatal for UDP.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
            Err(_) => {
                link.close();
                return;
            }
        };
        match message::parse(&buf[..n], false) {
            Ok(message::Parsed::Complete(m, _)) => {
                drop(buf);
                answer(&link, link.dispatch(m, &endpoint)).await;
            }
            Ok(message::Parsed::Incomplete) => {}
            Err(e) => tracing::debug!(user = %endpoint.spec.user.name, error = %e, "datagram dropped"),
        }
    }
}
