//! A small authoritative DNS responder (UDP and TCP) for the demo lab and for tests
//! that need faults a real server will not produce on demand: SERVFAIL, REFUSED,
//! silence, truncation. Records can be replaced while it runs.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinHandle;

/// How the responder misbehaves (tests only: feature `lab-faults`).
#[cfg(feature = "lab-faults")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer from the records.
    None,
    /// Answer every query with this response code and no records.
    Rcode(ResponseCode),
    /// Never answer.
    Silent,
    /// Over UDP, answer with TC=1 and no records; over TCP, answer properly.
    TruncateUdp,
}

#[derive(Debug)]
struct Shared {
    records: Mutex<Vec<Record>>,
    #[cfg(feature = "lab-faults")]
    fault: Mutex<Fault>,
}

/// A running responder; stops when dropped.
#[derive(Debug)]
pub struct DnsServer {
    /// The UDP and TCP address it serves on.
    pub addr: SocketAddr,
    // Read by the tests' record and fault setters (feature `lab-faults`).
    #[cfg_attr(not(feature = "lab-faults"), allow(dead_code))]
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// `name` as an absolute DNS name (panics on an invalid literal: lab and test data only).
pub fn name(s: &str) -> Name {
    let s = s.trim_end_matches('.');
    // invariant: lab and test data only, written as literals in this crate.
    Name::from_ascii(format!("{s}.")).expect("valid DNS name literal")
}

/// An A record.
pub fn a(owner: &str, ip: &str) -> Record {
    // invariant: an address literal of the lab's own (loopback data in this crate).
    Record::from_rdata(name(owner), 60, RData::A(A(ip.parse().expect("IPv4 literal"))))
}

/// An AAAA record.
pub fn aaaa(owner: &str, ip: &str) -> Record {
    // invariant: an address literal of the lab's own (loopback data in this crate).
    Record::from_rdata(name(owner), 60, RData::AAAA(AAAA(ip.parse().expect("IPv6 literal"))))
}

/// A CNAME record.
pub fn cname(owner: &str, target: &str) -> Record {
    Record::from_rdata(name(owner), 60, RData::CNAME(CNAME(name(target))))
}

/// An SRV record.
pub fn srv(owner: &str, priority: u16, weight: u16, port: u16, target: &str) -> Record {
    Record::from_rdata(name(owner), 60, RData::SRV(SRV::new(priority, weight, port, name(target))))
}

/// A TXT record with one string.
pub fn txt(owner: &str, text: &str) -> Record {
    Record::from_rdata(name(owner), 60, RData::TXT(TXT::new(vec![text.to_owned()])))
}

impl DnsServer {
    /// Serves `records` on `addr` (UDP and TCP on the same port; port 0 picks one).
    pub async fn start(addr: SocketAddr, records: Vec<Record>) -> io::Result<DnsServer> {
        // Port 0: take the UDP port first, then the same TCP port; retry on a clash.
        let mut attempt = 0;
        let (udp, tcp) = loop {
            let udp = UdpSocket::bind(addr).await?;
            let bound = udp.local_addr()?;
            match TcpListener::bind(bound).await {
                Ok(tcp) => break (udp, tcp),
                Err(e) if addr.port() == 0 && attempt < 20 => {
                    attempt += 1;
                    tracing::debug!(error = %e, "TCP port taken, retrying");
                }
                Err(e) => return Err(e),
            }
        };
        let addr = udp.local_addr()?;
        let shared = Arc::new(Shared {
            records: Mutex::new(records),
            #[cfg(feature = "lab-faults")]
            fault: Mutex::new(Fault::None),
        });
        let s1 = shared.clone();
        let udp_task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, peer)) = udp.recv_from(&mut buf).await else {
                    continue;
                };
                if let Some(resp) = respond(&s1, &buf[..n], false) {
                    let _ = udp.send_to(&resp, peer).await;
                }
            }
        });
        let s2 = shared.clone();
        let tcp_task = tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = tcp.accept().await else {
                    continue;
                };
                let s = s2.clone();
                tokio::spawn(async move {
                    loop {
                        let mut len = [0u8; 2];
                        if conn.read_exact(&mut len).await.is_err() {
                            return;
                        }
                        let mut q = vec![0u8; usize::from(u16::from_be_bytes(len))];
                        if conn.read_exact(&mut q).await.is_err() {
                            return;
                        }
                        let Some(resp) = respond(&s, &q, true) else {
                            continue;
                        };
                        let mut out = (resp.len() as u16).to_be_bytes().to_vec();
                        out.extend_from_slice(&resp);
                        if conn.write_all(&out).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Ok(DnsServer { addr, shared, tasks: vec![udp_task, tcp_task] })
    }

    /// Replaces every record (tests, and `demo --faults` moving a sign-in record).
    pub fn set_records(&self, records: Vec<Record>) {
        *self.shared.records.lock().unwrap_or_else(|e| e.into_inner()) = records;
    }

    /// Changes how the responder behaves from the next query on.
    #[cfg(feature = "lab-faults")]
    pub fn set_fault(&self, fault: Fault) {
        *self.shared.fault.lock().unwrap_or_else(|e| e.into_inner()) = fault;
    }
}

fn respond(shared: &Shared, query: &[u8], over_tcp: bool) -> Option<Vec<u8>> {
    let q = Message::from_vec(query).ok()?;
    if q.metadata.message_type != MessageType::Query {
        return None;
    }
    let question = q.queries.first()?.clone();
    #[cfg(not(feature = "lab-faults"))]
    let _ = over_tcp;
    let mut resp = Message::response(q.metadata.id, q.metadata.op_code);
    resp.metadata.authoritative = true;
    resp.metadata.recursion_desired = q.metadata.recursion_desired;
    resp.add_query(question.clone());
    #[cfg(feature = "lab-faults")]
    match *shared.fault.lock().unwrap_or_else(|e| e.into_inner()) {
        Fault::Silent => return None,
        Fault::Rcode(rc) => {
            resp.metadata.response_code = rc;
            return resp.to_vec().ok();
        }
        Fault::TruncateUdp if !over_tcp => {
            resp.metadata.truncation = true;
            return resp.to_vec().ok();
        }
        Fault::TruncateUdp | Fault::None => {}
    }
    let records = shared.records.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let qtype = question.query_type();
    let mut owner = question.name().to_lowercase();
    let mut found_name = false;
    // Follow a CNAME chain inside the zone, as an authoritative server does.
    for _ in 0..8 {
        let at: Vec<&Record> = records.iter().filter(|r| r.name.to_lowercase() == owner).collect();
        found_name |= !at.is_empty();
        let direct: Vec<Record> =
            at.iter().filter(|r| r.record_type() == qtype).map(|r| (*r).clone()).collect();
        if !direct.is_empty() {
            resp.add_answers(direct);
            break;
        }
        match at.iter().find(|r| r.record_type() == RecordType::CNAME) {
            Some(c) if qtype != RecordType::CNAME => {
                resp.add_answer((*c).clone());
                let RData::CNAME(target) = &c.data else { break };
                owner = target.0.to_lowercase();
            }
            _ => break,
        }
    }
    if !found_name {
        resp.metadata.response_code = ResponseCode::NXDomain;
    }
    resp.to_vec().ok()
}
