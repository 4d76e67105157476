//! Framing SIP messages out of a stream (TCP, TLS), incrementally.
//!
//! Bytes arrive in pieces of any size, down to one at a time. The framer remembers how
//! far it has searched for the blank line that ends a message's head, reads the head's
//! Content-Length when it is complete, then waits for the body (the whole message is
//! parsed once it is all there): every
//! byte is examined a bounded number of times however the peer slices its sending (a
//! rescan from the start on every read made a slow sender cost quadratic CPU).
//!
//! Bounds: at most [`MAX_MESSAGE`] bytes (plus a blank line) are buffered; with a
//! [`Budget`] the buffer's capacity past its first 4 KiB is also drawn from it, and
//! growth the budget refuses is an error (the caller closes the connection). The first
//! 4 KiB are every framer's own, so that connections holding the budget cannot keep
//! the others from exchanging ordinary messages (the bound is then 4 KiB per connection
//! plus the budget). CRLFs between messages are
//! keep-alives (RFC 5626 §4.4.1): they are counted, never buffered.
//!
//! What it does not do: I/O, or recover a stream after an error (there is no
//! resynchronising SIP on a stream: the caller closes it).

use std::sync::Arc;

use super::budget::{Budget, Grant};
use super::message::{find, parse_head, Message, ParseError, MAX_MESSAGE};

/// The largest message a framer takes: one message and the blank line before it.
const MAX_BUFFER: usize = MAX_MESSAGE + 4;
/// Room past [`MAX_BUFFER`] for the start of the next message that arrives in the same
/// read as the end of a maximal one (readers read at most this much at a time).
const READ_SLACK: usize = 8192;
/// Capacity kept between messages; a larger buffer is given back once it is empty.
const IDLE_CAPACITY: usize = 4096;

/// Why a stream cannot be framed any further.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The bytes are not SIP (or a message is too large).
    #[error("{0}")]
    Parse(#[from] ParseError),
    /// The memory budget shared by every endpoint refused the buffer's growth.
    #[error("the endpoints' memory budget is exhausted")]
    Budget,
}

/// Bytes that do not frame as SIP: `sip_malformed`, so that `?` turns it into a probe step's failure.
impl From<FrameError> for crate::failure::Failure {
    fn from(e: FrameError) -> crate::failure::Failure {
        crate::failure::Failure::new(crate::failure::FailureReason::SipMalformed, e.to_string())
    }
}

/// The framing state of one stream.
#[derive(Debug)]
pub struct Framer {
    buf: Vec<u8>,
    /// Bytes at the start of `buf` already searched for the head's end.
    searched: usize,
    /// The message being received: where its head ends and its body ends. The parsed
    /// head is not kept while the body arrives (its heap could be many times the bytes
    /// the budget counts): it is parsed again, once, when the body is complete.
    pending: Option<(usize, usize)>,
    grant: Option<Grant>,
    keepalives: u64,
    examined: u64,
    /// Keep each message's bytes as received (a trace shows them).
    keep_raw: bool,
    raw: Vec<u8>,
}

impl Framer {
    /// A framer whose buffer draws from `budget` when given.
    pub fn new(budget: Option<&Arc<Budget>>) -> Framer {
        Framer {
            buf: Vec::new(),
            searched: 0,
            pending: None,
            grant: budget.map(|b| b.empty()),
            keepalives: 0,
            examined: 0,
            keep_raw: false,
            raw: Vec::new(),
        }
    }

    /// Keeps the bytes of each message as received, for [`Framer::last_raw`].
    pub fn keep_raw(mut self, keep: bool) -> Framer {
        self.keep_raw = keep;
        self
    }

    /// The bytes of the last message returned, when [`Framer::keep_raw`] is on.
    pub fn last_raw(&self) -> &[u8] {
        &self.raw
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), FrameError> {
        let mut bytes = bytes;
        if self.buf.is_empty() {
            // Between messages: CRLFs are keep-alives (or pongs), never buffered.
            let crlf = bytes.iter().take_while(|b| **b == b'\r' || **b == b'\n').count();
            if crlf > 0 {
                self.keepalives += 1;
                self.examined += crlf as u64;
                bytes = &bytes[crlf..];
            }
        }
        if bytes.is_empty() {
            return Ok(());
        }
        if self.buf.len() + bytes.len() > MAX_BUFFER + READ_SLACK {
            return Err(ParseError::TooLarge.into());
        }
        let need = self.buf.len() + bytes.len();
        if need > self.buf.capacity() {
            let cap = need.next_power_of_two().clamp(IDLE_CAPACITY, MAX_BUFFER + READ_SLACK).max(need);
            if let Some(g) = &mut self.grant {
                if !g.resize(cap - IDLE_CAPACITY) {
                    return Err(FrameError::Budget);
                }
            }
            self.buf.reserve_exact(cap - self.buf.len());
        }
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    /// The next complete message, `None` when more bytes are needed.
    pub fn next_message(&mut self) -> Result<Option<Message>, FrameError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        if self.pending.is_none() {
            // Resume the search three bytes back: the blank line may straddle reads.
            let from = self.searched.saturating_sub(3);
            let window = &self.buf[from..];
            self.examined += window.len() as u64;
            let Some(i) = find(window, b"\r\n\r\n") else {
                self.searched = self.buf.len();
                if self.buf.len() > MAX_BUFFER {
                    return Err(ParseError::TooLarge.into());
                }
                return Ok(None);
            };
            let head_end = from + i;
            let head = parse_head(&self.buf, head_end, true)?;
            self.examined += head_end as u64;
            let end = head_end + 4 + head.body_len.unwrap_or(0);
            self.pending = Some((head_end, end));
        }
        if self.pending.is_none_or(|(_, end)| self.buf.len() < end) {
            return Ok(None);
        }
        let Some((head_end, end)) = self.pending.take() else { return Ok(None) };
        let head = parse_head(&self.buf, head_end, true)?;
        self.examined += head_end as u64;
        let message = head.into_message(&self.buf[head_end + 4..end]);
        if self.keep_raw {
            self.raw = self.buf[..end].to_vec();
        }
        self.buf.drain(..end);
        self.searched = 0;
        // Keep-alives right after a message are not part of the next one.
        let crlf = self.buf.iter().take_while(|b| **b == b'\r' || **b == b'\n').count();
        if crlf > 0 {
            self.keepalives += 1;
            self.buf.drain(..crlf);
        }
        self.shrink();
        Ok(Some(message))
    }

    fn shrink(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > IDLE_CAPACITY {
            self.buf = Vec::new();
            if let Some(g) = &mut self.grant {
                g.resize(0);
            }
        }
    }

    /// Bytes buffered now (a message begun and not complete yet, when not zero).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Runs of CRLFs seen between messages so far (a registrar's pongs).
    pub fn keepalives(&self) -> u64 {
        self.keepalives
    }

    /// Bytes examined so far, counting every rescan: what framing has cost.
    pub fn examined(&self) -> u64 {
        self.examined
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nCall-ID: c\r\n\
        CSeq: 1 OPTIONS\r\nContent-Length: 4\r\n\r\nbody";

    #[test]
    fn messages_split_anywhere_come_out_whole_and_in_order() {
        let two = [MSG, b"\r\n\r\n", MSG].concat();
        for cut in 0..two.len() {
            let mut f = Framer::new(None);
            let mut got = Vec::new();
            for piece in [&two[..cut], &two[cut..]] {
                f.push(piece).unwrap();
                while let Some(m) = f.next_message().unwrap() {
                    got.push(m);
                }
            }
            assert_eq!(got.len(), 2, "cut at {cut}");
            assert!(got.iter().all(|m| m.body == b"body" && m.status() == Some(200)));
            assert_eq!(f.buffered(), 0);
            assert!(f.keepalives() >= 1, "the CRLFs between the messages were seen");
        }
    }

    #[test]
    fn a_slow_sender_costs_linear_work() {
        // 60,000 header bytes one byte at a time, as a hostile registrar can send them:
        // rescanning from the start on every read examined about 1.8 billion bytes.
        let mut head = b"SIP/2.0 200 OK\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n".to_vec();
        while head.len() < 60_000 {
            head.extend_from_slice(b"X-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        head.extend_from_slice(b"\r\n");
        let mut f = Framer::new(None);
        let mut got = 0;
        for b in &head {
            f.push(std::slice::from_ref(b)).unwrap();
            while f.next_message().unwrap().is_some() {
                got += 1;
            }
        }
        assert_eq!(got, 1);
        let n = head.len() as u64;
        assert!(f.examined() < 6 * n, "examined {} bytes for {n}", f.examined());
    }

    #[test]
    fn endless_keepalives_and_oversize_messages_are_bounded() {
        let mut f = Framer::new(None);
        for _ in 0..100_000 {
            f.push(b"\r\n\r\n").unwrap();
        }
        assert_eq!(f.buffered(), 0);
        let mut f = Framer::new(None);
        let big = vec![b'a'; 70_000];
        f.push(&big).unwrap();
        assert!(matches!(f.next_message(), Err(FrameError::Parse(ParseError::TooLarge))));
        let mut f = Framer::new(None);
        assert!(matches!(f.push(&vec![b'a'; 80_000]), Err(FrameError::Parse(ParseError::TooLarge))));
        // A maximal message whose last read also carries the next message's start.
        let head = "SIP/2.0 200 OK\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\nContent-Length: ";
        let body_len = MAX_MESSAGE - head.len() - 10;
        let first = format!("{head}{body_len:05}\r\n\r\n{}", "b".repeat(body_len));
        assert_eq!(first.len(), MAX_MESSAGE - 1);
        let both = [first.as_bytes(), MSG].concat();
        let mut f = Framer::new(None);
        let mut got = 0;
        for piece in both.chunks(4096) {
            f.push(piece).unwrap();
            while f.next_message().unwrap().is_some() {
                got += 1;
            }
        }
        assert_eq!(got, 2);
        let mut f = Framer::new(None);
        let head = format!("SIP/2.0 200 OK\r\nContent-Length: {}\r\n\r\n", MAX_MESSAGE);
        f.push(head.as_bytes()).unwrap();
        assert!(matches!(f.next_message(), Err(FrameError::Parse(ParseError::TooLarge))));
    }

    #[test]
    fn the_budget_bounds_every_framer_together() {
        let budget = Budget::new(64 * 1024);
        let mut a = Framer::new(Some(&budget));
        let mut b = Framer::new(Some(&budget));
        // The first 4 KiB are the framer's own.
        b.push(&[b'b'; 4000]).unwrap();
        assert_eq!(budget.used(), 0);
        let mut b = Framer::new(Some(&budget));
        a.push(&vec![b'a'; 40_000]).unwrap();
        assert!(budget.used() >= 40_000 - IDLE_CAPACITY);
        // Even with the budget held, a small message still fits.
        let mut small = Framer::new(Some(&budget));
        small.push(MSG).unwrap();
        assert!(small.next_message().unwrap().is_some());
        assert_eq!(b.push(&vec![b'b'; 40_000]), Err(FrameError::Budget));
        drop(a);
        assert_eq!(budget.used(), 0);
        b.push(&vec![b'b'; 40_000]).unwrap();
        // A message that completes gives its memory back.
        let mut c = Framer::new(Some(&Budget::new(1 << 20)));
        c.push(&[MSG; 100].concat()).unwrap();
        let mut n = 0;
        while c.next_message().unwrap().is_some() {
            n += 1;
        }
        assert_eq!(n, 100);
        assert_eq!(c.grant.as_ref().unwrap().bytes(), 0);
    }

    #[test]
    fn garbage_is_an_error() {
        let mut f = Framer::new(None);
        f.push(b"HELLO THERE\r\n\r\n").unwrap();
        assert!(matches!(f.next_message(), Err(FrameError::Parse(ParseError::StartLine(_)))));
    }
}
