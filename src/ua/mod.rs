//! The SIP user agent the kinds stand on: a test user's requests ([`client`]), client
//! transactions, one loop over every connection ([`transaction`]), the OPTIONS exchange
//! ([`options`]), one registration routine with the redirect and authentication
//! policy ([`registration`]), and the test users' registered endpoints ([`endpoint`]:
//! their connections ([`link`]), client transactions on them, and the UAS side — which requests
//! an endpoint answers and how, with server transactions under one byte budget).
//!
//! Kinds ask "did this user-level thing happen, and how long did it take"; everything
//! SIP below that lives here or in [`crate::sip`] (the socket-free parts). Kinds never
//! import each other: what two kinds share is here (connections: [`conn`]).
//!
//! - **UDP**: a request is retransmitted as RFC 3261 §17.1.2 asks of a non-INVITE
//!   client transaction (timer E: T1 = 500 ms, doubling, capped at T2 = 4 s) until a
//!   final response or the deadline; provisional responses move the interval to T2.
//! - **TCP/TLS**: responses are framed incrementally ([`crate::sip::framer`]).
//!
//! A response counts only if it answers our transaction (top Via branch, Call-ID,
//! CSeq); stray and mismatched messages are skipped. Nothing past 64 KiB is read.
//!
//! What it does not do: schedule, judge a check, or write results.

pub mod client;
pub mod conn;
pub mod credentials;
pub mod endpoint;
pub mod life;
pub mod link;
pub mod memory;
pub mod options;
pub mod registration;
pub mod subscription;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_ntlm;
#[cfg(test)]
mod tests_udp;
pub mod transaction;

use tokio::net::UdpSocket;

use std::time::Duration;

use crate::failure::Failure;
use crate::model::outcome::{Measure, Phase};
use crate::net::resolve::Resolver;

pub use crate::sip::client_tx::{T1, T2};

/// `coexist_sip_status_code`: the final status of the SIP transaction a kind judged.
pub static SIP_STATUS: Measure = Measure {
    name: "coexist_sip_status_code",
    help:
        "Final SIP status of the last SIP transaction the probe judged (OPTIONS, or the test user's request).",
    label: None,
};

/// `coexist_sip_server_info{server}`: the peer's `Server` (or `User-Agent`) header.
pub static SIP_SERVER: Measure = Measure {
    name: "coexist_sip_server_info",
    help: "1, labelled with the Server (or User-Agent) header of the last SIP response.",
    label: Some("server"),
};

/// A socket that sends and receives datagrams: the real one, or a recorder in tests.
pub trait Datagrams {
    /// Sends one datagram.
    fn send(&self, buf: &[u8]) -> impl std::future::Future<Output = std::io::Result<usize>> + Send;
    /// Receives one datagram into the spare capacity of `buf` (which starts empty).
    fn recv_buf(&self, buf: &mut Vec<u8>)
        -> impl std::future::Future<Output = std::io::Result<usize>> + Send;
}

impl Datagrams for UdpSocket {
    fn send(&self, buf: &[u8]) -> impl std::future::Future<Output = std::io::Result<usize>> + Send {
        UdpSocket::send(self, buf)
    }
    fn recv_buf(
        &self,
        buf: &mut Vec<u8>,
    ) -> impl std::future::Future<Output = std::io::Result<usize>> + Send {
        UdpSocket::recv_buf(self, buf)
    }
}

/// Shared, per-configuration state that probes use.
#[derive(Debug, Clone)]
pub struct ProbeContext {
    /// Resolves target names through the configured `[dns]` servers.
    pub resolver: Resolver,
    /// Queries the configured `[dns]` servers (system ones when the config names none).
    pub dns: std::sync::Arc<crate::net::dns::DnsClient>,
    /// Both TLS engines with the configured trust anchors and client identity.
    pub tls: std::sync::Arc<crate::net::tls::TlsClient>,
    /// `each_address`: connect to this address instead of resolving the target name
    /// (SNI, certificate name and SIP Request-URI stay the name).
    pub address: Option<std::net::IpAddr>,
    /// The test users' registered endpoints (kept across reloads by the agent).
    pub endpoints: std::sync::Arc<endpoint::Endpoints>,
}

impl ProbeContext {
    /// The addresses to try for `host`: the pinned one (`each_address`), else the
    /// name's addresses now (phase `resolve` timed into `phases`).
    pub async fn addresses(
        &self,
        host: &str,
        phases: &mut Vec<(Phase, Duration)>,
    ) -> Result<Vec<std::net::IpAddr>, Failure> {
        match self.address {
            Some(ip) => Ok(vec![ip]),
            None => {
                let t = std::time::Instant::now();
                let addrs = self.resolver.lookup_ip(host).await?;
                phases.push((Phase::Resolve, t.elapsed()));
                Ok(addrs)
            }
        }
    }
}
