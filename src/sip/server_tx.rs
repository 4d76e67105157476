//! Server transactions (RFC 3261 §17.2) of the registered endpoints: a retransmitted
//! request is answered with the response its transaction already sent, not handled
//! again.
//!
//! A request is matched to its transaction (§17.2.3) by the top Via's branch, sent-by
//! and the method when the branch carries the `z9hG4bK` cookie, and otherwise (a peer
//! or proxy of RFC 2543's day) by Request-URI, To tag, From tag, Call-ID, CSeq and the
//! whole top Via: a branch-less Via must never make every later request look like a
//! retransmission of the first.
//!
//! Only unreliable transports keep answers: over TCP and TLS the sender does not
//! retransmit (Timer J is zero, §17.2.2). An answer is kept 64·T1 = 32 s, the longest a
//! UDP client retransmits, and expires on time (oldest first, on every use and by
//! [`ServerTransactions::expire`], which the endpoints call every second); all answers
//! of every endpoint together stay within half of one [`Budget`] (the other half is for
//! stream buffers), the oldest making room for the newest.
//!
//! What it does not do: decide the answer (the endpoint does), or send it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::budget::{Budget, Grant};
use super::message::{param, tag_of, Message, StartLine, BRANCH_COOKIE};

/// How long an answer is kept: 64·T1, the longest a client retransmits (Timer J).
pub const ANSWER_TTL: Duration = Duration::from_secs(32);

/// What identifies a server transaction.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    /// RFC 3261: branch (with the cookie), sent-by, method; `scope` keeps endpoints apart.
    Branch {
        /// The endpoint the request reached.
        scope: u64,
        /// The top Via's branch.
        branch: String,
        /// The top Via's sent-by.
        sent_by: String,
        /// The request's method.
        method: String,
    },
    /// RFC 2543 fallback (§17.2.3): the request's identifying fields.
    Legacy {
        /// The endpoint the request reached.
        scope: u64,
        /// The Request-URI, To tag, From tag, Call-ID, CSeq and the whole top Via.
        fields: [String; 6],
    },
}

impl Key {
    /// The transaction key of request `req` at endpoint `scope`; `None` for responses.
    pub fn of(req: &Message, scope: u64) -> Option<Key> {
        let StartLine::Request { method, uri } = &req.start else { return None };
        let via = req.header_values("via").next().unwrap_or("");
        let branch = param(via, "branch").unwrap_or("");
        if branch.starts_with(BRANCH_COOKIE) {
            let sent_by = via.split(';').next().unwrap_or("").split_whitespace().nth(1).unwrap_or("");
            return Some(Key::Branch {
                scope,
                branch: branch.to_owned(),
                sent_by: sent_by.to_ascii_lowercase(),
                method: method.clone(),
            });
        }
        let h = |n: &str| req.header(n).unwrap_or("").trim().to_owned();
        Some(Key::Legacy {
            scope,
            fields: [
                uri.clone(),
                req.header("to").and_then(tag_of).unwrap_or("").to_owned(),
                req.header("from").and_then(tag_of).unwrap_or("").to_owned(),
                h("call-id"),
                h("cseq"),
                via.to_owned(),
            ],
        })
    }

    fn size(&self) -> usize {
        match self {
            Key::Branch { branch, sent_by, method, .. } => branch.len() + sent_by.len() + method.len(),
            Key::Legacy { fields, .. } => fields.iter().map(String::len).sum(),
        }
    }
}

struct Entry {
    at: Instant,
    answer: Arc<[u8]>,
    grant: Grant,
}

#[derive(Default)]
struct Table {
    entries: HashMap<Key, Entry>,
    /// Keys in the order they were stored (= the order they expire).
    order: VecDeque<(Instant, Key)>,
    /// Bytes the kept answers hold (what their grants took).
    bytes: usize,
}

impl Table {
    fn expire(&mut self, now: Instant) {
        while let Some((at, _)) = self.order.front() {
            if now.duration_since(*at) < ANSWER_TTL {
                break;
            }
            self.evict_oldest();
        }
    }

    fn evict_oldest(&mut self) -> bool {
        let Some((at, key)) = self.order.pop_front() else { return false };
        // Only the entry stored at that time: a key stored again later has its own.
        if self.entries.get(&key).is_some_and(|e| e.at == at) {
            if let Some(e) = self.entries.remove(&key) {
                self.bytes -= e.grant.bytes();
            }
        }
        true
    }
}

/// The answers kept by every endpoint's server transactions.
pub struct ServerTransactions {
    budget: Arc<Budget>,
    table: Mutex<Table>,
}

impl std::fmt::Debug for ServerTransactions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTransactions").field("kept", &self.len()).finish()
    }
}

/// Overhead counted per kept answer besides its bytes and its key's.
const ENTRY_OVERHEAD: usize = 128;

impl ServerTransactions {
    /// A store drawing on `budget`.
    pub fn new(budget: Arc<Budget>) -> ServerTransactions {
        ServerTransactions { budget, table: Mutex::new(Table::default()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The answer already sent in transaction `key`, if it is still kept.
    pub fn answered(&self, key: &Key, now: Instant) -> Option<Arc<[u8]>> {
        let mut t = self.lock();
        t.expire(now);
        t.entries.get(key).map(|e| e.answer.clone())
    }

    /// Keeps `answer` for retransmissions of `key`, making room from the oldest kept
    /// answers when the budget is short; whether it is kept (an answer larger than an
    /// eighth of the whole budget is not).
    pub fn keep(&self, key: Key, answer: &[u8], now: Instant) -> bool {
        let size = answer.len() + key.size() + ENTRY_OVERHEAD;
        if size > self.budget.limit() / 8 {
            return false;
        }
        let mut t = self.lock();
        t.expire(now);
        // Kept answers take at most half the budget: a UDP flood cannot leave the
        // stream buffers nothing.
        while t.bytes + size > self.budget.limit() / 2 {
            if !t.evict_oldest() {
                return false;
            }
        }
        let grant = loop {
            if let Some(g) = self.budget.grant(size) {
                break g;
            }
            // Stream buffers hold the rest of the budget: nothing of ours to give back.
            if !t.evict_oldest() {
                return false;
            }
        };
        if let Some(old) = t.entries.remove(&key) {
            t.bytes -= old.grant.bytes();
        }
        t.bytes += grant.bytes();
        t.order.push_back((now, key.clone()));
        t.entries.insert(key, Entry { at: now, answer: Arc::from(answer), grant });
        true
    }

    /// Drops the answers whose time is up.
    pub fn expire(&self, now: Instant) {
        self.lock().expire(now);
    }

    /// Answers kept now.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether no answer is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::{parse, Parsed};

    fn req(via: &str, call_id: &str, cseq: u32) -> Message {
        let text = format!(
            "MESSAGE sip:bob@example.com SIP/2.0\r\nVia: {via}\r\nFrom: <sip:a@example.com>;tag=f\r\n\
             To: <sip:bob@example.com>\r\nCall-ID: {call_id}\r\nCSeq: {cseq} MESSAGE\r\nContent-Length: 0\r\n\r\n"
        );
        match parse(text.as_bytes(), false).unwrap() {
            Parsed::Complete(m, _) => m,
            Parsed::Incomplete => unreachable!(),
        }
    }

    #[test]
    fn a_branchless_via_matches_by_the_rfc2543_fields_not_by_the_empty_branch() {
        let a = req("SIP/2.0/UDP 10.0.0.1:5060", "one", 1);
        let b = req("SIP/2.0/UDP 10.0.0.1:5060", "two", 2);
        assert_ne!(Key::of(&a, 1), Key::of(&b, 1), "two requests behind an RFC 2543 proxy");
        assert_eq!(Key::of(&a, 1), Key::of(&a.clone(), 1), "a retransmission matches");
        // A branch without the cookie is not trusted to be unique either.
        let c = req("SIP/2.0/UDP 10.0.0.1:5060;branch=1", "one", 1);
        let d = req("SIP/2.0/UDP 10.0.0.1:5060;branch=1", "two", 2);
        assert_ne!(Key::of(&c, 1), Key::of(&d, 1));
        let e = req("SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKx", "one", 1);
        let f = req("SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKx", "one", 1);
        assert_eq!(Key::of(&e, 1), Key::of(&f, 1));
        assert_ne!(Key::of(&e, 1), Key::of(&f, 2), "endpoints keep their own transactions");
    }

    #[tokio::test(start_paused = true)]
    async fn answers_expire_on_time_and_stay_within_the_budget() {
        let budget = Budget::new(1 << 20);
        let st = ServerTransactions::new(budget.clone());
        let t0 = Instant::now();
        let key = |i: u32| Key::of(&req(&format!("SIP/2.0/UDP h;branch=z9hG4bK{i}"), "c", i), 7).unwrap();
        assert!(st.keep(key(0), b"answer zero", t0));
        assert_eq!(st.answered(&key(0), t0 + Duration::from_secs(31)).as_deref(), Some(&b"answer zero"[..]));
        // On time, not when full: one answer stored, then its lifetime passes.
        st.expire(t0 + ANSWER_TTL);
        assert!(st.is_empty());
        assert_eq!(budget.used(), 0);
        // 1,000 answers of an eighth of the budget never take more than the budget: the
        // oldest make room.
        let big = vec![b'v'; budget.limit() / 8 - 400];
        let mut kept = 0;
        for i in 1..=1000 {
            if st.keep(key(i), &big, t0) {
                kept += 1;
            }
            assert!(budget.used() <= budget.limit());
        }
        assert_eq!(kept, 1000, "each was kept, older ones evicted");
        assert!(st.len() <= 4, "half the budget: {}", st.len());
        assert!(budget.used() <= budget.limit() / 2);
        assert!(st.answered(&key(1000), t0).is_some(), "the newest survives");
        assert!(st.answered(&key(1), t0).is_none(), "the oldest made room");
        // Larger than an eighth of the budget: not kept at all.
        assert!(!st.keep(key(2000), &vec![0; budget.limit()], t0));
        st.expire(t0 + ANSWER_TTL);
        assert_eq!(budget.used(), 0);
    }
}
