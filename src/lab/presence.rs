//! The lab pools' presence server (standard SIMPLE: RFC 3856 subscriptions, RFC 3903
//! publications, PIDF bodies kept as published): each pool serves the presentities of
//! the users homed on it; a SUBSCRIBE or PUBLISH for a user homed on the other pool is
//! handled by that pool (both pools are this process, so "relaying" is a call). A
//! subscription gets a NOTIFY at once (the current document, or an empty "closed" one)
//! and one for every PUBLISH of its presentity, over the connection the watcher
//! subscribed on, signed on its NTLM association when it has one.
//!
//! Not a security boundary and not complete: no authorization rules (every watcher is
//! allowed), one publication per presentity (a new one replaces it), no
//! `SIP-If-Match` check beyond answering an unknown entity tag `412`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::{pool_host, Peer, DOMAIN};
use crate::sip::message::{self, Message};

/// Subscriptions (and publications) kept, at most: the oldest go first.
const MAX_KEPT: usize = 10_000;
/// Seconds granted at most.
const MAX_EXPIRES: u64 = 3600;

/// A subscription the lab serves.
struct Sub {
    presentity: String,
    watcher_uri: String,
    watcher_tag: String,
    our_tag: String,
    target: String,
    peer: Peer,
    opaque: Option<String>,
    pool: &'static str,
    cseq: u32,
    until: Instant,
}

/// Presentities and subscriptions of both lab pools.
#[derive(Default)]
pub struct Presence {
    subs: Mutex<HashMap<String, Sub>>,
    /// presentity → (entity tag, PIDF document).
    published: Mutex<HashMap<String, (String, Vec<u8>)>>,
}

impl std::fmt::Debug for Presence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Presence").finish_non_exhaustive()
    }
}

/// What the pool does with a request.
pub enum Handled {
    /// The response to send back, and NOTIFYs to send: (where, signed on which
    /// association, the request).
    Done(Vec<u8>, Vec<(Peer, Option<String>, Vec<u8>)>),
}

fn expires_of(m: &Message, default: u64) -> u64 {
    m.header("expires").and_then(|e| message::bounded_decimal(e.trim(), MAX_EXPIRES)).unwrap_or(default)
}

fn aor(user: &str) -> String {
    format!("sip:{user}@{DOMAIN}")
}

impl Presence {
    /// A SUBSCRIBE (new, or a refresh in its dialog) at the presence server of `pool`
    /// for `presentity`, from `peer` (signed on `opaque`).
    pub fn subscribe(
        &self,
        pool: &'static str,
        presentity: &str,
        m: &Message,
        peer: &Peer,
        opaque: Option<String>,
        server: &str,
    ) -> Handled {
        let call_id = m.header("call-id").unwrap_or("").trim().to_owned();
        let event = m.header("event").unwrap_or("").trim().to_ascii_lowercase();
        if !event.starts_with("presence") {
            let bad = message::reply(m, 489, "Bad Event", "x", &format!("Server: {server}\r\n"), None);
            return Handled::Done(bad, Vec::new());
        }
        let expires = expires_of(m, 600);
        let now = Instant::now();
        let mut subs = self.subs.lock().unwrap_or_else(|e| e.into_inner());
        subs.retain(|_, s| s.until > now);
        let to_tag = m.header("to").and_then(message::tag_of).map(str::to_owned);
        let our_tag = match to_tag {
            // A refresh: the dialog must be ours.
            Some(tag) => match subs.get_mut(&call_id).filter(|s| s.our_tag == tag) {
                Some(s) => {
                    s.until = now + Duration::from_secs(expires);
                    s.peer = peer.clone();
                    s.opaque = opaque.clone();
                    tag
                }
                None => {
                    let gone = message::reply(
                        m,
                        481,
                        "Subscription Does Not Exist",
                        "x",
                        &format!("Server: {server}\r\n"),
                        None,
                    );
                    return Handled::Done(gone, Vec::new());
                }
            },
            None => {
                if subs.len() >= MAX_KEPT {
                    if let Some(k) = subs.keys().next().cloned() {
                        subs.remove(&k);
                    }
                }
                let our_tag = message::token(8);
                let contact =
                    m.header("contact").map(|c| message::addr_uri(c).to_owned()).unwrap_or_default();
                let from = m.header("from").unwrap_or("");
                subs.insert(
                    call_id.clone(),
                    Sub {
                        presentity: presentity.to_owned(),
                        watcher_uri: message::addr_uri(from).to_owned(),
                        watcher_tag: message::tag_of(from).unwrap_or("").to_owned(),
                        our_tag: our_tag.clone(),
                        target: contact,
                        peer: peer.clone(),
                        opaque: opaque.clone(),
                        pool,
                        cseq: 0,
                        until: now + Duration::from_secs(expires),
                    },
                );
                our_tag
            }
        };
        let contact = format!(
            "Contact: <sip:{}.{DOMAIN}:5061;transport=tls>\r\nExpires: {expires}\r\nServer: {server}\r\n",
            pool_host(pool)
        );
        let ok = message::reply(m, 200, "OK", &our_tag, &contact, None);
        let document = self.document(presentity);
        let notify = if expires == 0 {
            let s = subs.remove(&call_id);
            s.map(|mut s| notify(&mut s, &call_id, "terminated;reason=timeout", &document))
        } else {
            subs.get_mut(&call_id)
                .map(|s| notify(s, &call_id, &format!("active;expires={expires}"), &document))
        };
        Handled::Done(ok, notify.into_iter().collect())
    }

    /// A PUBLISH of `presentity`'s state at its presence server.
    pub fn publish(&self, presentity: &str, m: &Message, server: &str) -> Handled {
        let expires = expires_of(m, 3600);
        let mut published = self.published.lock().unwrap_or_else(|e| e.into_inner());
        let if_match = m.header("sip-if-match").map(|t| t.trim().to_owned());
        if let Some(t) = &if_match {
            if published.get(presentity).is_none_or(|(etag, _)| etag != t) {
                let stale = message::reply(
                    m,
                    412,
                    "Conditional Request Failed",
                    "x",
                    &format!("Server: {server}\r\n"),
                    None,
                );
                return Handled::Done(stale, Vec::new());
            }
        }
        let etag = message::token(12);
        let body = if m.body.is_empty() {
            published.get(presentity).map(|(_, b)| b.clone()).unwrap_or_default()
        } else {
            m.body.clone()
        };
        if published.len() >= MAX_KEPT && !published.contains_key(presentity) {
            return Handled::Done(message::reply(m, 503, "Service Unavailable", "x", "", None), Vec::new());
        }
        published.insert(presentity.to_owned(), (etag.clone(), body.clone()));
        drop(published);
        let ok = message::reply(
            m,
            200,
            "OK",
            &message::token(8),
            &format!("SIP-ETag: {etag}\r\nExpires: {expires}\r\nServer: {server}\r\n"),
            None,
        );
        let now = Instant::now();
        let mut subs = self.subs.lock().unwrap_or_else(|e| e.into_inner());
        let notifies = subs
            .iter_mut()
            .filter(|(_, s)| s.presentity == presentity && s.until > now)
            .map(|(call_id, s)| {
                let left = s.until.saturating_duration_since(now).as_secs();
                notify(s, call_id, &format!("active;expires={left}"), &body)
            })
            .collect();
        Handled::Done(ok, notifies)
    }

    fn document(&self, presentity: &str) -> Vec<u8> {
        let published = self.published.lock().unwrap_or_else(|e| e.into_inner());
        match published.get(presentity) {
            Some((_, b)) => b.clone(),
            None => format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" \
                 entity=\"{}\"><tuple id=\"lab\"><status><basic>closed</basic></status></tuple></presence>\r\n",
                aor(presentity)
            )
            .into_bytes(),
        }
    }
}

/// A NOTIFY of `s` with `state` and `body`: where it goes and the request.
fn notify(s: &mut Sub, call_id: &str, state: &str, body: &[u8]) -> (Peer, Option<String>, Vec<u8>) {
    s.cseq += 1;
    let host = pool_host(s.pool);
    let head = format!(
        "NOTIFY {target} SIP/2.0\r\nVia: SIP/2.0/TLS {host}.{DOMAIN}:5061;branch={cookie}{branch}\r\n\
         Max-Forwards: 70\r\nFrom: <{presentity}>;tag={ours}\r\nTo: <{watcher}>;tag={theirs}\r\n\
         Call-ID: {call_id}\r\nCSeq: {cseq} NOTIFY\r\nContact: <sip:{host}.{DOMAIN}:5061;transport=tls>\r\n\
         Event: presence\r\nSubscription-State: {state}\r\nContent-Type: application/pidf+xml\r\n\
         Content-Length: {len}\r\n\r\n",
        target = s.target,
        cookie = message::BRANCH_COOKIE,
        branch = message::token(16),
        presentity = aor(&s.presentity),
        ours = s.our_tag,
        watcher = s.watcher_uri,
        theirs = s.watcher_tag,
        cseq = s.cseq,
        len = body.len(),
    );
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    (s.peer.clone(), s.opaque.clone(), bytes)
}
