//! The client transaction (RFC 3261 §17.1), once for every connection the user agent
//! sends on: a probe's own UDP socket, a probe's own TCP/TLS stream, and a registered
//! endpoint's link. What differs between them is only where responses come from and
//! how a retransmission goes out ([`Channel`]); the loop — match the response to the
//! transaction, note a provisional one, retransmit on timer A/E over UDP
//! ([`Retransmit`]), give up at the deadline — is [`run`].
//!
//! What it does not do: build or sign the request, check a response's signature
//! (the link does, after), or follow a challenge (the caller sends a new request).

use std::future::Future;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::Datagrams;
use crate::failure::{connect_reason, Failure, FailureReason};
use crate::sip::client_tx::Retransmit;
use crate::sip::framer::{FrameError, Framer};
use crate::sip::message::{self, Message, ParseError, Parsed, Transaction, MAX_MESSAGE};

/// Where a client transaction's responses come from and its retransmissions go.
pub trait Channel {
    /// Whether the transport is reliable (TCP, TLS: never retransmitted).
    fn reliable(&self) -> bool;
    /// Sends the request again (the same bytes: a retransmission).
    fn resend(&mut self, request: &[u8]) -> impl Future<Output = Result<(), Failure>> + Send;
    /// The next message received, `Ok(None)` when what arrived was not a message (it
    /// is remembered for the timeout's detail), an error when the connection is gone.
    fn next(&mut self) -> impl Future<Output = Result<Option<Message>, Failure>> + Send;
    /// The failure at the deadline, after `sends` transmissions of `tx`.
    fn timed_out(&self, tx: &Transaction, sends: u32) -> Failure {
        Failure::new(
            FailureReason::Timeout,
            format!("no final response to {} ({sends} transmissions)", tx.method),
        )
    }
}

/// Runs the client transaction of `tx`, whose request (`request`) was just sent once:
/// returns its final response. A provisional response other than `100 Trying` is
/// noted in `provisional` (its code and when it came: a call's post-dial delay) and
/// moves the retransmission interval to T2 (an INVITE's stops).
pub async fn run<C: Channel + Send>(
    ch: &mut C,
    request: &[u8],
    tx: &Transaction,
    deadline: Instant,
    provisional: &mut Option<(u16, Instant)>,
) -> Result<Message, Failure> {
    let mut timer = Retransmit::new(Instant::now(), tx.method == "INVITE", ch.reliable());
    loop {
        tokio::select! {
            m = ch.next() => match m? {
                Some(m) if m.answers(tx) => {
                    let code = m.status().unwrap_or(0);
                    if code >= 200 {
                        return Ok(m);
                    }
                    // 100 Trying is hop by hop: the far end's 18x is what counts.
                    if provisional.is_none() && code > 100 {
                        *provisional = Some((code, Instant::now()));
                    }
                    timer.provisional();
                }
                // Stray, another transaction's, or a request: not ours to end.
                _ => {}
            },
            _ = tokio::time::sleep_until(timer.wake(deadline)) => {
                let now = Instant::now();
                if now >= deadline {
                    return Err(ch.timed_out(tx, timer.sends()));
                }
                if timer.fire(now) {
                    ch.resend(request).await?;
                    let sends = timer.sends();
                    crate::trace::step("sip", || format!("no final response yet: retransmission {sends}"));
                }
            }
        }
    }
}

/// A probe's own UDP socket (connected to the server).
pub struct Udp<'a, S> {
    sock: &'a S,
    buf: Vec<u8>,
    malformed: Option<ParseError>,
}

impl<'a, S: Datagrams + Sync> Udp<'a, S> {
    /// Responses from `sock`.
    pub fn new(sock: &'a S) -> Udp<'a, S> {
        // Capacity, not zeroed length: the datagram is written straight into it.
        Udp { sock, buf: Vec::with_capacity(MAX_MESSAGE), malformed: None }
    }
}

fn udp_io(e: std::io::Error) -> Failure {
    Failure::new(connect_reason(&e), format!("UDP: {e}"))
}

impl<S: Datagrams + Sync> Channel for Udp<'_, S> {
    fn reliable(&self) -> bool {
        false
    }

    async fn resend(&mut self, request: &[u8]) -> Result<(), Failure> {
        self.sock.send(request).await.map(|_| ()).map_err(udp_io)
    }

    async fn next(&mut self) -> Result<Option<Message>, Failure> {
        self.buf.clear();
        let n = self.sock.recv_buf(&mut self.buf).await.map_err(udp_io)?;
        let buf = &self.buf[..n];
        crate::trace::step("sip", || {
            format!("received a datagram ({n} bytes):\n{}", crate::trace::mask_credentials(buf))
        });
        match message::parse(buf, false) {
            Ok(Parsed::Complete(m, _)) => Ok(Some(m)),
            Ok(_) => Ok(None),
            Err(e) => {
                self.malformed = Some(e);
                Ok(None)
            }
        }
    }

    fn timed_out(&self, tx: &Transaction, sends: u32) -> Failure {
        match &self.malformed {
            Some(e) => Failure::new(FailureReason::SipMalformed, format!("no valid response; received: {e}")),
            None => Failure::new(
                FailureReason::Timeout,
                format!("no final response to {} ({sends} transmissions)", tx.method),
            ),
        }
    }
}

/// A probe's own TCP or TLS stream, framed incrementally.
pub struct Stream<'a, S> {
    stream: &'a mut S,
    framer: Framer,
}

impl<'a, S: AsyncRead + AsyncWrite + Unpin + Send> Stream<'a, S> {
    /// Responses read from `stream`.
    pub fn new(stream: &'a mut S) -> Stream<'a, S> {
        Stream { stream, framer: Framer::new(None).keep_raw(crate::trace::active()) }
    }
}

fn stream_io(e: std::io::Error) -> Failure {
    Failure::new(crate::net::tls::io_reason(&e), format!("{e}"))
}

fn malformed(e: FrameError) -> Failure {
    crate::trace::step("sip", || format!("received bytes that are not SIP: {e}"));
    e.into()
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Channel for Stream<'_, S> {
    fn reliable(&self) -> bool {
        true
    }

    async fn resend(&mut self, _: &[u8]) -> Result<(), Failure> {
        Ok(())
    }

    async fn next(&mut self) -> Result<Option<Message>, Failure> {
        let mut chunk = [0u8; 4096];
        loop {
            // A complete message already buffered comes first.
            if let Some(m) = self.framer.next_message().map_err(malformed)? {
                crate::trace::step("sip", || {
                    let raw = self.framer.last_raw();
                    format!("received ({} bytes):\n{}", raw.len(), crate::trace::mask_credentials(raw))
                });
                return Ok(Some(m));
            }
            let n = self.stream.read(&mut chunk).await.map_err(stream_io)?;
            if n == 0 {
                return Err(match self.framer.buffered() {
                    0 => Failure::new(FailureReason::Io, "connection closed without a response"),
                    b => Failure::new(
                        FailureReason::SipMalformed,
                        format!("connection closed after {b} bytes of a message"),
                    ),
                });
            }
            self.framer.push(&chunk[..n]).map_err(malformed)?;
        }
    }

    fn timed_out(&self, tx: &Transaction, _: u32) -> Failure {
        Failure::new(
            FailureReason::Timeout,
            format!("no final response to {} before the deadline", tx.method),
        )
    }
}

/// Sends `request` on a probe's own stream and runs its transaction.
pub async fn over_stream<S: AsyncRead + AsyncWrite + Unpin + Send>(
    stream: &mut S,
    request: &[u8],
    tx: &Transaction,
    deadline: Instant,
) -> Result<Message, Failure> {
    let write = async {
        stream.write_all(request).await?;
        stream.flush().await
    };
    match tokio::time::timeout_at(deadline, write).await {
        Ok(r) => r.map_err(stream_io)?,
        Err(_) => return Err(Failure::new(FailureReason::Timeout, "sending: blocked until the deadline")),
    }
    crate::trace::step("sip", || {
        format!("sent ({} bytes):\n{}", request.len(), crate::trace::mask_credentials(request))
    });
    run(&mut Stream::new(stream), request, tx, deadline, &mut None).await
}

/// Sends `request` on a probe's own UDP socket and runs its transaction.
pub async fn over_udp<S: Datagrams + Sync>(
    sock: &S,
    request: &[u8],
    tx: &Transaction,
    deadline: Instant,
) -> Result<Message, Failure> {
    sock.send(request).await.map_err(udp_io)?;
    crate::trace::step("sip", || {
        format!("sent over UDP ({} bytes):\n{}", request.len(), crate::trace::mask_credentials(request))
    });
    run(&mut Udp::new(sock), request, tx, deadline, &mut None).await
}
