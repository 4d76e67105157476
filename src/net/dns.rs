//! The DNS client every probe and every target resolution uses: queries straight to the
//! configured servers (hickory-proto for the wire format), UDP with TCP on truncation,
//! no cache, replies accepted by the rules of RFC 5452.
//!
//! Wire layer: imports only the trace recorder, the UDP-socket helper of `os` and the
//! failure reasons (to say what a failed query means). It reports what
//! the server said (rcode, typed records); what that means for a check is the dns
//! kind's business (`kinds::dns`).

use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// One answer record of a type coexistd asks for, parsed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rec {
    /// IPv4 address.
    A(std::net::Ipv4Addr),
    /// IPv6 address.
    Aaaa(std::net::Ipv6Addr),
    /// Alias target, lower case with the trailing dot.
    Cname(String),
    /// Service location.
    Srv(Srv),
    /// Text (the strings of the record joined).
    Txt(String),
}

/// An SRV record's data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Srv {
    /// Lower is preferred.
    pub priority: u16,
    /// Among equal priorities, higher is chosen more often.
    pub weight: u16,
    /// The service's port.
    pub port: u16,
    /// The host, lower case with the trailing dot.
    pub target: String,
}

impl Rec {
    /// The record of `data`, for the types above; `None` for others.
    pub fn from_rdata(data: &RData) -> Option<Rec> {
        Some(match data {
            RData::A(a) => Rec::A(a.0),
            RData::AAAA(a) => Rec::Aaaa(a.0),
            RData::CNAME(c) => Rec::Cname(lower_fqdn(&c.0)),
            RData::SRV(s) => Rec::Srv(Srv {
                priority: s.priority,
                weight: s.weight,
                port: s.port,
                target: lower_fqdn(&s.target),
            }),
            RData::TXT(t) => Rec::Txt(
                t.txt_data
                    .iter()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .collect::<Vec<_>>()
                    .join(""),
            ),
            _ => return None,
        })
    }

    /// The text form, as written in a dns check's `expect`: `10.0.0.1`, `::1`,
    /// `host.example.`, `0 0 5061 host.example.`, the text.
    pub fn text(&self) -> String {
        match self {
            Rec::A(a) => a.to_string(),
            Rec::Aaaa(a) => a.to_string(),
            Rec::Cname(c) | Rec::Txt(c) => c.clone(),
            Rec::Srv(s) => format!("{} {} {} {}", s.priority, s.weight, s.port, s.target),
        }
    }

    /// The address of an A or AAAA record.
    pub fn ip(&self) -> Option<std::net::IpAddr> {
        match self {
            Rec::A(a) => Some((*a).into()),
            Rec::Aaaa(a) => Some((*a).into()),
            _ => None,
        }
    }

    /// The host name an SRV or CNAME record names.
    pub fn host(&self) -> Option<&str> {
        match self {
            Rec::Srv(s) => Some(&s.target),
            Rec::Cname(c) => Some(c),
            _ => None,
        }
    }
}

fn lower_fqdn(n: &Name) -> String {
    let s = n.to_lowercase().to_ascii();
    if s.ends_with('.') {
        s
    } else {
        format!("{s}.")
    }
}

/// What one server answered.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The response code.
    pub rcode: ResponseCode,
    /// Records of the asked type.
    pub records: Vec<Rec>,
    /// Every record in the answer section (CNAMEs of a chain included).
    pub answer_count: usize,
    /// The server that answered.
    pub server: SocketAddr,
}

/// Why no answer was had.
#[derive(Debug, Clone)]
pub enum QueryError {
    /// No server answered in time.
    Timeout(String),
    /// Something answered that is not a DNS response to our query, or I/O failed.
    Other(String),
}

/// What the failure is for a record check: `dns_timeout` or `dns_error`.
impl From<QueryError> for crate::failure::Failure {
    fn from(e: QueryError) -> crate::failure::Failure {
        use crate::failure::{Failure, FailureReason};
        match e {
            QueryError::Timeout(detail) => Failure::new(FailureReason::DnsTimeout, detail),
            QueryError::Other(detail) => Failure::new(FailureReason::DnsError, detail),
        }
    }
}

/// Sends queries to the configured servers, like a careful stub resolver (RFC 5452 §9.1):
/// every query goes out from a fresh socket, so from a new random source port chosen by
/// the kernel; the socket is connected to the server, so the kernel drops datagrams from
/// any other address; a reply counts only when its id, question name (case-insensitive),
/// type and class are those asked. A reply that carries our id but cannot be parsed is
/// an error at once (`dns_error`), not a wait until the deadline.
///
/// A fresh socket per query also keeps firewall faults visible: a rule that newly
/// blocks DNS flows hits the next probe, where a reused source port would ride on an
/// existing connection-tracking entry. Cost per lookup: docs/performance.md.
#[derive(Debug)]
pub struct DnsClient {
    servers: Vec<SocketAddr>,
}

impl DnsClient {
    /// A client for `servers`, asked in order.
    pub fn new(servers: Vec<SocketAddr>) -> DnsClient {
        DnsClient { servers }
    }

    /// Queries the servers in order, each given an equal share of `budget`; the first
    /// response (of any rcode) wins.
    pub async fn query(
        &self,
        name: &Name,
        rtype: RecordType,
        budget: Duration,
    ) -> Result<Answer, QueryError> {
        let mut answers = self.query_types(name, &[rtype], budget).await?;
        Ok(answers.remove(0))
    }

    /// Like [`DnsClient::query`] for several types of one name at once (A and AAAA of
    /// a target): one socket, the queries sent together, one answer per type in
    /// `rtypes` order, all from the same server.
    pub async fn query_types(
        &self,
        name: &Name,
        rtypes: &[RecordType],
        budget: Duration,
    ) -> Result<Vec<Answer>, QueryError> {
        if self.servers.is_empty() {
            return Err(QueryError::Other("no DNS servers configured or found in /etc/resolv.conf".into()));
        }
        let share = budget / self.servers.len() as u32;
        let mut errors = Vec::new();
        let mut all_timeouts = true;
        for &server in &self.servers {
            match tokio::time::timeout(share, self.query_one(server, name, rtypes)).await {
                Ok(Ok(a)) => return Ok(a),
                Ok(Err(e)) => {
                    all_timeouts = false;
                    errors.push(format!("{server}: {e}"));
                }
                Err(_) => {
                    errors.push(format!("{server}: no response within {}", humantime::format_duration(share)))
                }
            }
        }
        let joined = errors.join("; ");
        Err(if all_timeouts { QueryError::Timeout(joined) } else { QueryError::Other(joined) })
    }

    async fn socket(&self, server: SocketAddr) -> Result<UdpSocket, String> {
        crate::os::udp_socket_to(server).await.map_err(|e| e.to_string())
    }

    async fn query_one(
        &self,
        server: SocketAddr,
        name: &Name,
        rtypes: &[RecordType],
    ) -> Result<Vec<Answer>, String> {
        let sock = self.socket(server).await?;
        exchange(&sock, server, name, rtypes).await
    }
}

fn build_query(name: &Name, rtype: RecordType) -> Message {
    let mut msg = Message::query();
    msg.add_query(Query::query(name.clone(), rtype));
    msg.metadata.recursion_desired = true;
    msg
}

/// Largest UDP response read: without EDNS a server sends at most 512 bytes.
const UDP_MAX: usize = 4096;

async fn exchange(
    sock: &UdpSocket,
    server: SocketAddr,
    name: &Name,
    rtypes: &[RecordType],
) -> Result<Vec<Answer>, String> {
    let mut pending = Vec::with_capacity(rtypes.len());
    for &rtype in rtypes {
        let msg = build_query(name, rtype);
        let bytes = msg.to_vec().map_err(|e| e.to_string())?;
        sock.send(&bytes).await.map_err(|e| e.to_string())?;
        crate::trace::step("dns", || {
            let local = sock.local_addr().map(|a| a.to_string()).unwrap_or_default();
            format!("question {name} {rtype} IN (id {}) to {server} over UDP from {local}", msg.metadata.id)
        });
        pending.push((msg.metadata.id, rtype, bytes, None::<Message>));
    }
    let mut buf = vec![0u8; UDP_MAX];
    while pending.iter().any(|p| p.3.is_none()) {
        let n = sock.recv(&mut buf).await.map_err(|e| e.to_string())?;
        match match_reply(&buf[..n], name, &pending) {
            Reply::Ours(i, m) => {
                crate::trace::step("dns", || describe_reply(&m, server));
                pending[i].3 = Some(*m)
            }
            // Stray or forged datagrams (another id, another question, not a response)
            // are ignored, as a stub resolver does; the deadline bounds the wait.
            Reply::NotOurs => crate::trace::step("dns", || {
                format!("ignored a datagram of {n} bytes that answers no question of ours")
            }),
            Reply::Unparseable(e) => {
                crate::trace::step("dns", || format!("unparseable reply with our id ({n} bytes): {e}"));
                return Err(format!("a reply with our query id cannot be parsed ({n} bytes): {e}"));
            }
        }
    }
    let mut answers = Vec::with_capacity(rtypes.len());
    for (id, rtype, bytes, resp) in pending {
        // invariant: the receive loop above ends only when every query has its response.
        let mut resp = resp.expect("loop ends when every query has its response");
        if resp.metadata.truncation {
            crate::trace::step("dns", || format!("{rtype} answer truncated: asking {server} again over TCP"));
            resp = query_tcp(server, &bytes, id, name, rtype).await?;
            crate::trace::step("dns", || describe_reply(&resp, server));
        }
        answers.push(to_answer(resp, rtype, server));
    }
    Ok(answers)
}

/// One reply as a trace shows it: rcode, flags and every answer record.
fn describe_reply(m: &Message, server: SocketAddr) -> String {
    let q = m.queries.first().map(|q| format!("{} {}", q.name(), q.query_type())).unwrap_or_default();
    let mut s = format!(
        "answer from {server} to {q}: {}{}{}, {} answer records",
        m.metadata.response_code,
        if m.metadata.authoritative { ", authoritative" } else { "" },
        if m.metadata.truncation { ", truncated" } else { "" },
        m.answers.len()
    );
    for r in &m.answers {
        let data = Rec::from_rdata(&r.data).map_or_else(|| format!("({})", r.record_type()), |r| r.text());
        s.push_str(&format!("\n{} {} {} {data}", r.name, r.ttl, r.record_type()));
    }
    s
}

/// What a datagram received on a query's socket is.
#[derive(Debug)]
pub enum Reply {
    /// The response to pending query number `.0`.
    Ours(usize, Box<Message>),
    /// Not a response to any pending query.
    NotOurs,
    /// Carries a pending query's id but cannot be parsed.
    Unparseable(String),
}

/// Matches a datagram against pending queries `(id, type, …, answered)`: id, then
/// exactly one question with our name (case-insensitive), type and class IN.
pub fn match_reply<B>(bytes: &[u8], name: &Name, pending: &[(u16, RecordType, B, Option<Message>)]) -> Reply {
    let id = match bytes {
        [a, b, ..] => u16::from_be_bytes([*a, *b]),
        _ => return Reply::NotOurs,
    };
    if !pending.iter().any(|p| p.0 == id && p.3.is_none()) {
        return Reply::NotOurs;
    }
    let m = match Message::from_vec(bytes) {
        Ok(m) => m,
        Err(e) => return Reply::Unparseable(e.to_string()),
    };
    if !is_response(&m) || m.queries.len() != 1 {
        return Reply::NotOurs;
    }
    let q = &m.queries[0];
    if q.query_class() != hickory_proto::rr::DNSClass::IN || !q.name().eq_ignore_root(name) {
        return Reply::NotOurs;
    }
    // Two queries of one lookup may draw the same id: the type tells them apart.
    match pending.iter().position(|p| p.0 == id && p.1 == q.query_type() && p.3.is_none()) {
        Some(i) => Reply::Ours(i, Box::new(m)),
        None => Reply::NotOurs,
    }
}

fn is_response(m: &Message) -> bool {
    m.metadata.message_type == hickory_proto::op::MessageType::Response
}

async fn query_tcp(
    server: SocketAddr,
    query: &[u8],
    id: u16,
    name: &Name,
    rtype: RecordType,
) -> Result<Message, String> {
    let mut s = TcpStream::connect(server).await.map_err(|e| format!("TCP retry after truncation: {e}"))?;
    let mut framed = Vec::with_capacity(query.len() + 2);
    framed.extend_from_slice(&(query.len() as u16).to_be_bytes());
    framed.extend_from_slice(query);
    s.write_all(&framed).await.map_err(|e| e.to_string())?;
    let mut len = [0u8; 2];
    s.read_exact(&mut len).await.map_err(|e| format!("TCP: {e}"))?;
    let len = usize::from(u16::from_be_bytes(len));
    let mut buf = vec![0u8; len];
    s.read_exact(&mut buf).await.map_err(|e| format!("TCP: {e}"))?;
    // The same acceptance rules as over UDP: id, question name, type and class.
    match match_reply(&buf, name, &[(id, rtype, (), None)]) {
        Reply::Ours(_, m) => Ok(*m),
        Reply::Unparseable(e) => Err(format!("TCP: unparseable response: {e}")),
        Reply::NotOurs => Err("TCP: the response does not answer the query (id or question)".into()),
    }
}

fn to_answer(resp: Message, rtype: RecordType, server: SocketAddr) -> Answer {
    let records = resp
        .answers
        .iter()
        .filter(|r| r.record_type() == rtype)
        .filter_map(|r| Rec::from_rdata(&r.data))
        .collect();
    Answer { rcode: resp.metadata.response_code, records, answer_count: resp.answers.len(), server }
}
