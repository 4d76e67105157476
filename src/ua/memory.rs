//! An in-memory network for the user agent's tests: every connection an endpoint opens
//! is one end of a pipe whose other end the test receives ([`Accepted`]), so a
//! registrar's behaviour — silence, a dropped connection, a request of its own — is
//! played out under paused time, with no socket and no clock to wait for.
//!
//! Streams only (the endpoint's TCP/TLS behaviour: framing, keep-alives, backoff, its
//! UAS answers); a UDP dial fails with `Unsupported`. UDP and TLS on real sockets are
//! the integration tests' job.

use std::sync::atomic::{AtomicU16, Ordering};

use tokio::io::DuplexStream;
use tokio::sync::mpsc;

use super::conn::{Dial, SipConn};
use crate::sip::message::Transport;

/// Bytes a pipe buffers in each direction before a writer waits.
const PIPE: usize = 256 * 1024;

/// A connection an endpoint opened, as the far side (the test's registrar) gets it.
#[derive(Debug)]
pub struct Accepted {
    /// The host the endpoint dialled.
    pub host: String,
    /// The port it dialled.
    pub port: u16,
    /// The transport it asked for.
    pub transport: Transport,
    /// The registrar's end of the pipe.
    pub stream: DuplexStream,
    /// The endpoint's `host:port` as it will write it in Via and Contact.
    pub sent_by: String,
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
            if transport == Transport::Udp {
                return Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "no UDP in memory"));
            }
            let (near, far) = tokio::io::duplex(PIPE);
            let sent_by = format!("127.0.0.1:{}", self.next_port.fetch_add(1, Ordering::Relaxed));
            let accepted =
                Accepted { host: host.to_owned(), port, transport, stream: far, sent_by: sent_by.clone() };
            self.accepted.send(accepted).map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::ConnectionRefused,
                    "nobody listens on the memory network",
                )
            })?;
            Ok(SipConn::Stream(Box::new(near), sent_by))
        })
    }
}
