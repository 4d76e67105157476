//! Connections the kinds open: TCP to a name's addresses in turn, TLS on top, and a
//! SIP connection (a TLS or TCP stream, or a connected UDP socket). Shared so that the
//! resolve, connect and tls phases and their failure reasons agree between kinds.
//!
//! What it does not do: speak any protocol above TLS, or keep connections (every probe
//! opens its own: a reused connection hides firewall and load-balancer faults).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::ProbeContext;
use crate::failure::{connect_reason, Failure, FailureReason};
use crate::model::outcome::Phase;
use crate::net::tls::{TlsOptions, TlsStream};
use crate::sip::message::Transport;

/// `host:port`, with brackets around an IPv6 literal.
pub fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// A request/answer exchange over UDP (STUN, the SQL Server Browser): `request` to the
/// first address of `host`, retransmitted from `rto` doubling (at most 8 s apart) until
/// `answer` takes a datagram (`Ok(Some)`); datagrams it passes over (`Ok(None)`: another
/// transaction's, not the protocol) are skipped. The probe's timeout ends the wait. The
/// answer, and the time from the last transmission to it.
pub async fn udp_exchange<T>(
    host: &str,
    port: u16,
    cx: &ProbeContext,
    phases: &mut Vec<(Phase, Duration)>,
    request: &[u8],
    rto: Duration,
    mut answer: impl FnMut(&[u8]) -> Result<Option<T>, Failure>,
) -> Result<(T, Duration), Failure> {
    let addrs = cx.addresses(host, phases).await?;
    let Some(ip) = addrs.first().copied() else {
        return Err(Failure::new(FailureReason::Resolve, format!("{host}: no address")));
    };
    let to = SocketAddr::new(ip, port);
    let bind: SocketAddr = if to.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
    let io = |e: std::io::Error| Failure::new(connect_reason(&e), format!("{to}: {e}"));
    let sock = tokio::net::UdpSocket::bind(bind).await.map_err(io)?;
    sock.connect(to).await.map_err(io)?;
    let started = Instant::now();
    let mut rto = rto;
    let mut buf = vec![0u8; crate::sip::message::MAX_MESSAGE];
    loop {
        let sent = Instant::now();
        sock.send(request).await.map_err(io)?;
        let until = sent + rto;
        loop {
            let n = match tokio::time::timeout_at(until, sock.recv(&mut buf)).await {
                Err(_) => break,
                Ok(r) => r.map_err(io)?,
            };
            if let Some(a) = answer(&buf[..n])? {
                phases.push((Phase::Request, started.elapsed()));
                return Ok((a, sent.elapsed()));
            }
        }
        rto = (rto * 2).min(Duration::from_secs(8));
    }
}

/// Resolves `host` and connects to its addresses in turn; returns the open stream.
/// Shared by every connecting kind so that resolve/connect phases and reasons agree.
pub async fn connect(
    host: &str,
    port: u16,
    cx: &ProbeContext,
    phases: &mut Vec<(Phase, std::time::Duration)>,
) -> Result<TcpStream, Failure> {
    let addrs = cx.addresses(host, phases).await?;
    let t = Instant::now();
    let mut last = None;
    for ip in addrs {
        let addr = SocketAddr::new(ip, port);
        let c = Instant::now();
        match TcpStream::connect(addr).await {
            Ok(s) => {
                phases.push((Phase::Connect, t.elapsed()));
                // Requests leave at once (SIP clients do this): with Nagle, a request
                // written right after one that gets no response (an ACK) waits for the
                // peer's delayed acknowledgement, about 40 ms.
                let _ = s.set_nodelay(true);
                crate::trace::step("connect", || {
                    let local = s.local_addr().map(|a| a.to_string()).unwrap_or_default();
                    format!(
                        "TCP {addr}: connected in {:.3} ms from {local}",
                        c.elapsed().as_secs_f64() * 1000.0
                    )
                });
                return Ok(s);
            }
            Err(e) => {
                crate::trace::step("connect", || {
                    format!("TCP {addr}: {e} after {:.3} ms", c.elapsed().as_secs_f64() * 1000.0)
                });
                last = Some(Failure::new(connect_reason(&e), format!("connect {addr}: {e}")))
            }
        }
    }
    Err(last.unwrap_or_else(|| Failure::new(FailureReason::Resolve, format!("{host}: no address"))))
}

/// Connects and handshakes; shared by every TLS-speaking kind. A failure carries
/// whatever chain was seen ([`Failure::tls`]).
pub async fn open(
    host: &str,
    port: u16,
    opts: &TlsOptions,
    cx: &ProbeContext,
    phases: &mut Vec<(Phase, Duration)>,
) -> Result<(TlsStream, Arc<crate::net::tls::TlsInfo>), Failure> {
    let tcp = connect(host, port, cx, phases).await?;
    let t = Instant::now();
    let handshake = cx.tls.handshake(tcp, host, opts).await;
    phases.push((Phase::Tls, t.elapsed()));
    let (stream, info) = handshake?;
    Ok((stream, Arc::new(info)))
}

/// A connection to a SIP server: a TLS or TCP stream, or a connected UDP socket, with
/// the local `host:port` (Via sent-by and Contact).
pub enum SipConn {
    /// TLS or TCP.
    Stream(Box<dyn Stream>, String),
    /// A UDP socket connected to the server (the network's, or the memory network's).
    Udp(Box<dyn Datagram>, String),
}

/// Boxed future of a [`Datagram`] method.
pub type DatagramFuture<'a, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<T>> + Send + 'a>>;

/// A datagram socket connected to its peer: a UDP socket, or one of the memory
/// network's ([`super::memory`]) for the user agent's tests.
pub trait Datagram: Send + Sync {
    /// Sends one datagram.
    fn send<'a>(&'a self, buf: &'a [u8]) -> DatagramFuture<'a, usize>;
    /// Waits until a datagram can be received.
    fn readable(&self) -> DatagramFuture<'_, ()>;
    /// Receives one datagram into the spare capacity of `buf` without waiting
    /// (`WouldBlock` when there is none).
    fn try_recv_buf(&self, buf: &mut Vec<u8>) -> std::io::Result<usize>;
    /// Receives one datagram into the spare capacity of `buf`.
    fn recv_buf<'a>(&'a self, buf: &'a mut Vec<u8>) -> DatagramFuture<'a, usize>;
}

impl Datagram for tokio::net::UdpSocket {
    fn send<'a>(&'a self, buf: &'a [u8]) -> DatagramFuture<'a, usize> {
        Box::pin(tokio::net::UdpSocket::send(self, buf))
    }
    fn readable(&self) -> DatagramFuture<'_, ()> {
        Box::pin(tokio::net::UdpSocket::readable(self))
    }
    fn try_recv_buf(&self, buf: &mut Vec<u8>) -> std::io::Result<usize> {
        tokio::net::UdpSocket::try_recv_buf(self, buf)
    }
    fn recv_buf<'a>(&'a self, buf: &'a mut Vec<u8>) -> DatagramFuture<'a, usize> {
        Box::pin(tokio::net::UdpSocket::recv_buf(self, buf))
    }
}

impl<'d> super::Datagrams for Box<dyn Datagram + 'd> {
    async fn send(&self, buf: &[u8]) -> std::io::Result<usize> {
        Datagram::send(&**self, buf).await
    }
    async fn recv_buf(&self, buf: &mut Vec<u8>) -> std::io::Result<usize> {
        Datagram::recv_buf(&**self, buf).await
    }
}

impl SipConn {
    /// The local `host:port`.
    pub fn sent_by(&self) -> &str {
        match self {
            SipConn::Stream(_, s) | SipConn::Udp(_, s) => s,
        }
    }
}

/// Opens the registered endpoints' connections in place of the network: the user
/// agent's tests dial an in-memory one ([`super::memory`]), under paused time.
pub trait Dial: Send + Sync {
    /// A connection to `host:port` over `transport`.
    fn dial<'a>(
        &'a self,
        host: &'a str,
        port: u16,
        transport: Transport,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<SipConn>> + Send + 'a>>;
}

/// A TLS or TCP stream.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Opens a SIP connection to `host:port` over `transport` (UDP: to the first address).
pub async fn connect_sip(
    opts: &TlsOptions,
    host: &str,
    port: u16,
    transport: Transport,
    cx: &ProbeContext,
    phases: &mut Vec<(Phase, Duration)>,
) -> Result<SipConn, Failure> {
    let local = |a: Option<SocketAddr>| a.map_or_else(|| "0.0.0.0:0".to_owned(), |a| a.to_string());
    match transport {
        Transport::Tls => {
            let (stream, _) = open(host, port, opts, cx, phases).await?;
            let sent_by = local(stream.local_addr());
            Ok(SipConn::Stream(Box::new(stream), sent_by))
        }
        Transport::Tcp => {
            let s = connect(host, port, cx, phases).await?;
            let sent_by = local(s.local_addr().ok());
            Ok(SipConn::Stream(Box::new(s), sent_by))
        }
        Transport::Udp => {
            let addrs = cx.addresses(host, phases).await?;
            let target = SocketAddr::new(addrs[0], port);
            let sock = crate::os::udp_socket_to(target)
                .await
                .map_err(|e| Failure::new(connect_reason(&e), format!("UDP {target}: {e}")))?;
            let sent_by = local(sock.local_addr().ok());
            Ok(SipConn::Udp(Box::new(sock), sent_by))
        }
    }
}
