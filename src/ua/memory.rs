//! An in-memory network for the user agent's tests: every connection an endpoint opens
//! is one end of a pipe (TCP/TLS) or of a datagram channel (UDP) whose other end the
//! test receives ([`Accepted`]), so a registrar's behaviour — silence, a dropped
//! connection, lost datagrams, a request of its own — is played out under paused time,
//! with no socket and no clock to wait for. TLS is not negotiated on it (a TLS dial
//! gets a plain pipe): TLS on real sockets is the integration tests' job.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Mutex;

use tokio::io::DuplexStream;
use tokio::sync::mpsc;

use super::conn::{Datagram, DatagramFuture, Dial, SipConn};
use crate::sip::message::Transport;

/// Bytes a pipe buffers in each direction before a writer waits.
const PIPE: usize = 256 * 1024;

/// Datagrams a channel holds in each direction; more are dropped, as a full socket
/// buffer drops them.
const QUEUE: usize = 1024;

/// A connection an endpoint opened, as the far side (the test's registrar) gets it.
#[derive(Debug)]
pub struct Accepted {
    /// The host the endpoint dialled.
    pub host: String,
    /// The port it dialled.
    pub port: u16,
    /// The transport it asked for.
    pub transport: Transport,
    /// The registrar's end.
    pub far: Far,
    /// The endpoint's `host:port` as it will write it in Via and Contact.
    pub sent_by: String,
}

/// The registrar's end of a connection.
#[derive(Debug)]
pub enum Far {
    /// TCP or TLS: a pipe.
    Stream(DuplexStream),
    /// UDP: datagrams each way.
    Datagrams(Peer),
}

impl Far {
    /// The pipe of a stream connection (a test that dials UDP asks [`Far::datagrams`]).
    ///
    /// # Panics
    ///
    /// On a UDP connection: a test that asks the wrong end is wrong itself.
    pub fn stream(self) -> DuplexStream {
        match self {
            Far::Stream(s) => s,
            Far::Datagrams(_) => panic!("a UDP connection has no stream"),
        }
    }

    /// The datagrams of a UDP connection.
    ///
    /// # Panics
    ///
    /// On a stream connection (see [`Far::stream`]).
    pub fn datagrams(self) -> Peer {
        match self {
            Far::Datagrams(p) => p,
            Far::Stream(_) => panic!("a stream connection has no datagrams"),
        }
    }
}

/// The registrar's end of a UDP connection.
#[derive(Debug)]
pub struct Peer {
    to_endpoint: mpsc::Sender<Vec<u8>>,
    from_endpoint: mpsc::Receiver<Vec<u8>>,
}

impl Peer {
    /// Sends a datagram to the endpoint (dropped when its queue is full or it is gone).
    pub fn send(&self, datagram: &[u8]) {
        let _ = self.to_endpoint.try_send(datagram.to_vec());
    }

    /// The next datagram from the endpoint; `None` once it closed the socket.
    pub async fn recv(&mut self) -> Option<Vec<u8>> {
        self.from_endpoint.recv().await
    }
}

/// The endpoint's end of a UDP connection.
struct Near {
    to_peer: mpsc::Sender<Vec<u8>>,
    from_peer: tokio::sync::Mutex<mpsc::Receiver<Vec<u8>>>,
    /// A datagram [`Datagram::readable`] took off the channel for the next receive.
    ready: Mutex<VecDeque<Vec<u8>>>,
}

fn take_into(d: Vec<u8>, buf: &mut Vec<u8>) -> usize {
    let n = d.len().min(buf.capacity() - buf.len());
    buf.extend_from_slice(&d[..n]);
    n
}

impl Datagram for Near {
    fn send<'a>(&'a self, buf: &'a [u8]) -> DatagramFuture<'a, usize> {
        Box::pin(async move {
            // A full queue drops the datagram, as the network would.
            let _ = self.to_peer.try_send(buf.to_vec());
            Ok(buf.len())
        })
    }

    fn readable(&self) -> DatagramFuture<'_, ()> {
        Box::pin(async move {
            if !self.ready.lock().unwrap_or_else(|e| e.into_inner()).is_empty() {
                return Ok(());
            }
            match self.from_peer.lock().await.recv().await {
                Some(d) => {
                    self.ready.lock().unwrap_or_else(|e| e.into_inner()).push_back(d);
                    Ok(())
                }
                None => Err(std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the peer is gone")),
            }
        })
    }

    fn try_recv_buf(&self, buf: &mut Vec<u8>) -> std::io::Result<usize> {
        if let Some(d) = self.ready.lock().unwrap_or_else(|e| e.into_inner()).pop_front() {
            return Ok(take_into(d, buf));
        }
        match self.from_peer.try_lock().map(|mut rx| rx.try_recv()) {
            Ok(Ok(d)) => Ok(take_into(d, buf)),
            _ => Err(std::io::ErrorKind::WouldBlock.into()),
        }
    }

    fn recv_buf<'a>(&'a self, buf: &'a mut Vec<u8>) -> DatagramFuture<'a, usize> {
        Box::pin(async move {
            self.readable().await?;
            self.try_recv_buf(buf)
        })
    }
}

/// The in-memory network: a [`Dial`] whose connections come out of the receiver
/// [`MemoryNet::new`] returns.
#[derive(Debug)]
pub struct MemoryNet {
    accepted: mpsc::UnboundedSender<Accepted>,
    next_port: AtomicU16,
}

impl MemoryNet {
    /// A network, and where the connections dialled on it arrive.
    pub fn new() -> (MemoryNet, mpsc::UnboundedReceiver<Accepted>) {
        let (accepted, rx) = mpsc::unbounded_channel();
        (MemoryNet { accepted, next_port: AtomicU16::new(40_000) }, rx)
    }
}

impl Dial for MemoryNet {
    fn dial<'a>(
        &'a self,
        host: &'a str,
        port: u16,
        transport: Transport,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<SipConn>> + Send + 'a>> {
        Box::pin(async move {
            let sent_by = format!("127.0.0.1:{}", self.next_port.fetch_add(1, Ordering::Relaxed));
            let (near, far) = if transport == Transport::Udp {
                let (to_peer, from_endpoint) = mpsc::channel(QUEUE);
                let (to_endpoint, from_peer) = mpsc::channel(QUEUE);
                let near = Near {
                    to_peer,
                    from_peer: tokio::sync::Mutex::new(from_peer),
                    ready: Mutex::new(VecDeque::new()),
                };
                (
                    SipConn::Udp(Box::new(near), sent_by.clone()),
                    Far::Datagrams(Peer { to_endpoint, from_endpoint }),
                )
            } else {
                let (near, far) = tokio::io::duplex(PIPE);
                (SipConn::Stream(Box::new(near), sent_by.clone()), Far::Stream(far))
            };
            let accepted = Accepted { host: host.to_owned(), port, transport, far, sent_by };
            self.accepted.send(accepted).map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::ConnectionRefused,
                    "nobody listens on the memory network",
                )
            })?;
            Ok(near)
        })
    }
}
