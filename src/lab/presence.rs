//! The lab pools' presence server, in both dialects the `sip_presence` kind speaks:
//!
//! - **Microsoft's** (what the demo's OCS 2007 R2 and Lync 2013 pools speak): a `SERVICE`
//!   with a category publication, versions checked per category, instance and container
//!   (a stale one is answered `409` with the current versions); a batched `SUBSCRIBE`
//!   served by the pool it reaches — the watcher's home pool, or the pool a
//!   `resubscribe` named — which answers for the presentities homed on it with their
//!   categories and sends every other one to its home pool (`state="resubscribe"`,
//!   `poolFqdn`), as a pool does for contacts on another pool.
//! - **Standard SIMPLE**: subscriptions per presentity (RFC 3856) at the presentity's
//!   home pool, publications with entity tags (RFC 3903, `412` for an unknown one), PIDF
//!   bodies kept as published.
//!
//! A subscription gets a NOTIFY at once (the current state) and one for every
//! publication of its presentities, over the connection the watcher subscribed on,
//! signed on its NTLM association when it has one.
//!
//! Not a security boundary and not complete: no access control (every watcher sees the
//! company container), one note and one state per presentity, no BENOTIFY, no
//! roaming-self subscription.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::{pool_host, Peer, DOMAIN};
use crate::sip::message::{self, Message};
use crate::sip::msrtc;

/// Subscriptions (and presentities) kept, at most: beyond, an arbitrary one goes.
const MAX_KEPT: usize = 10_000;
/// Seconds granted at most.
const MAX_EXPIRES: u64 = 3600;
/// Category publications (category, instance, container) kept per presentity, at most.
const MAX_PUBLICATIONS: usize = 64;

/// A subscription the lab serves.
struct Sub {
    /// The presentities (user names) it is served here for.
    resources: Vec<String>,
    /// Microsoft's dialect (a batched subscription).
    msrtc: bool,
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

/// One presentity's state.
#[derive(Default)]
struct State {
    /// SIMPLE: the publication's entity tag and PIDF document.
    pidf: Option<(String, Vec<u8>)>,
    /// Microsoft's: the personal note, and the version of each category publication.
    note: Option<String>,
    versions: HashMap<String, u32>,
}

/// Presentities and subscriptions of both lab pools.
#[derive(Default)]
pub struct Presence {
    subs: Mutex<HashMap<String, Sub>>,
    states: Mutex<HashMap<String, State>>,
}

impl std::fmt::Debug for Presence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Presence").finish_non_exhaustive()
    }
}

/// A NOTIFY to send: where, signed on which association, the request.
pub type Notify = (Peer, Option<String>, Vec<u8>);

/// What the pool does with a request: the response, and NOTIFYs to send.
pub struct Handled(pub Vec<u8>, pub Vec<Notify>);

fn expires_of(m: &Message, default: u64) -> u64 {
    m.header("expires").and_then(|e| message::bounded_decimal(e.trim(), MAX_EXPIRES)).unwrap_or(default)
}

fn aor(user: &str) -> String {
    format!("sip:{user}@{DOMAIN}")
}

fn user_of(uri: &str) -> &str {
    message::uri_user(message::addr_uri(uri)).unwrap_or("")
}

fn reply(m: &Message, code: u16, reason: &str, server: &str) -> Vec<u8> {
    message::reply(m, code, reason, "x", &format!("Server: {server}\r\n"), None)
}

impl Presence {
    /// A SUBSCRIBE (new, or a refresh in its dialog) served by `pool`, from `peer`
    /// (signed on `opaque`). `home`: a user's home pool.
    pub fn subscribe(
        &self,
        pool: &'static str,
        m: &Message,
        peer: &Peer,
        opaque: Option<String>,
        server: &str,
        home: &dyn Fn(&str) -> Option<&'static str>,
    ) -> Handled {
        let call_id = m.header("call-id").unwrap_or("").trim().to_owned();
        let event = m.header("event").unwrap_or("").trim().to_ascii_lowercase();
        if !event.starts_with("presence") {
            return Handled(reply(m, 489, "Bad Event", server), Vec::new());
        }
        let expires = expires_of(m, 600);
        let now = Instant::now();
        let mut subs = self.subs.lock().unwrap_or_else(|e| e.into_inner());
        subs.retain(|_, s| s.until > now);
        let to_tag = m.header("to").and_then(message::tag_of).map(str::to_owned);
        let mut moved: Vec<(String, String)> = Vec::new();
        let our_tag = match to_tag {
            // A refresh: the dialog must be ours.
            Some(tag) => match subs.get_mut(&call_id).filter(|s| s.our_tag == tag) {
                Some(s) => {
                    s.until = now + Duration::from_secs(expires);
                    s.peer = peer.clone();
                    s.opaque = opaque.clone();
                    tag
                }
                None => return Handled(reply(m, 481, "Subscription Does Not Exist", server), Vec::new()),
            },
            // A new subscription may not take over another's Call-ID.
            None if subs.contains_key(&call_id) => {
                return Handled(reply(m, 400, "Bad Request (Call-ID in use)", server), Vec::new());
            }
            None => {
                let batch = m.header("content-type").is_some_and(|c| c.trim().starts_with(msrtc::BATCH_TYPE));
                let resources = if batch {
                    let mut here = Vec::new();
                    for uri in msrtc::parse_batch_resources(&String::from_utf8_lossy(&m.body)) {
                        match home(user_of(&uri)) {
                            Some(h) if h == pool => here.push(user_of(&uri).to_owned()),
                            Some(h) => moved.push((uri.clone(), format!("{}.{DOMAIN}", pool_host(h)))),
                            None => {}
                        }
                    }
                    here
                } else {
                    vec![user_of(m.header("to").unwrap_or("")).to_owned()]
                };
                if subs.len() >= MAX_KEPT {
                    if let Some(k) = subs.keys().next().cloned() {
                        subs.remove(&k);
                    }
                }
                let our_tag = message::token(8);
                let from = m.header("from").unwrap_or("");
                subs.insert(
                    call_id.clone(),
                    Sub {
                        resources,
                        msrtc: batch,
                        watcher_uri: message::addr_uri(from).to_owned(),
                        watcher_tag: message::tag_of(from).unwrap_or("").to_owned(),
                        our_tag: our_tag.clone(),
                        target: m
                            .header("contact")
                            .map(|c| message::addr_uri(c).to_owned())
                            .unwrap_or_default(),
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
        let state = if expires == 0 {
            "terminated;reason=timeout".to_owned()
        } else {
            format!("active;expires={expires}")
        };
        let notify = match subs.get_mut(&call_id) {
            Some(s) if s.msrtc => {
                let mut entries: Vec<(String, msrtc::Resource)> = s
                    .resources
                    .iter()
                    .map(|u| (aor(u), msrtc::Resource::Active(self.categories(u))))
                    .collect();
                entries.extend(moved.into_iter().map(|(u, p)| (u, msrtc::Resource::Resubscribe(p))));
                let (ctype, body) = msrtc::rlmi_multipart(&s.watcher_uri, &entries);
                Some(notify(s, &call_id, &state, &ctype, body.as_bytes()))
            }
            Some(s) => {
                let doc = s.resources.first().map(|u| self.pidf(u)).unwrap_or_default();
                Some(notify(s, &call_id, &state, "application/pidf+xml", &doc))
            }
            None => None,
        };
        if expires == 0 {
            subs.remove(&call_id);
        }
        Handled(ok, notify.into_iter().collect())
    }

    /// A SIMPLE PUBLISH of `presentity`'s state at its presence server.
    pub fn publish(&self, presentity: &str, m: &Message, server: &str) -> Handled {
        let expires = expires_of(m, 3600);
        let etag = message::token(12);
        {
            let mut states = self.states.lock().unwrap_or_else(|e| e.into_inner());
            if states.len() >= MAX_KEPT && !states.contains_key(presentity) {
                return Handled(reply(m, 503, "Service Unavailable", server), Vec::new());
            }
            let state = states.entry(presentity.to_owned()).or_default();
            if let Some(t) = m.header("sip-if-match").map(str::trim) {
                if state.pidf.as_ref().is_none_or(|(e, _)| e != t) {
                    return Handled(reply(m, 412, "Conditional Request Failed", server), Vec::new());
                }
            }
            let body = if m.body.is_empty() {
                state.pidf.as_ref().map(|(_, b)| b.clone()).unwrap_or_default()
            } else {
                m.body.clone()
            };
            state.pidf = Some((etag.clone(), body));
        }
        let ok = message::reply(
            m,
            200,
            "OK",
            &message::token(8),
            &format!("SIP-ETag: {etag}\r\nExpires: {expires}\r\nServer: {server}\r\n"),
            None,
        );
        Handled(ok, self.notify_all(presentity))
    }

    /// A category publication (Microsoft's `SERVICE`) of `presentity`'s own state.
    pub fn service(&self, presentity: &str, m: &Message, server: &str) -> Handled {
        let publications: Vec<msrtc::Publication> =
            msrtc::parse_publications(&String::from_utf8_lossy(&m.body))
                .into_iter()
                .filter(|p| p.category == "state" || p.category == "note")
                .collect();
        if publications.is_empty() {
            return Handled(reply(m, 400, "Bad Request (no publication)", server), Vec::new());
        }
        {
            let mut states = self.states.lock().unwrap_or_else(|e| e.into_inner());
            if states.len() >= MAX_KEPT && !states.contains_key(presentity) {
                return Handled(reply(m, 503, "Service Unavailable", server), Vec::new());
            }
            let state = states.entry(presentity.to_owned()).or_default();
            let new_keys = publications.iter().filter(|p| !state.versions.contains_key(&p.key())).count();
            if state.versions.len() + new_keys > MAX_PUBLICATIONS {
                return Handled(
                    reply(m, 503, "Service Unavailable (too many publications)", server),
                    Vec::new(),
                );
            }
            let stale: Vec<(usize, u32, u32)> = publications
                .iter()
                .enumerate()
                .filter_map(|(i, p)| {
                    let cur = state.versions.get(&p.key()).copied().unwrap_or(0);
                    (p.version != cur).then_some((i + 1, p.version, cur))
                })
                .collect();
            if !stale.is_empty() {
                let fault = msrtc::fault_body(&stale);
                let conflict = message::reply(
                    m,
                    409,
                    "Conflict",
                    "x",
                    &format!("Server: {server}\r\n"),
                    Some((msrtc::FAULT_TYPE, fault.as_bytes())),
                );
                return Handled(conflict, Vec::new());
            }
            for p in &publications {
                state.versions.insert(p.key(), p.version.wrapping_add(1));
                if p.category == "note" && p.container == 200 {
                    state.note = msrtc::note_text(&p.content);
                }
            }
        }
        Handled(reply(m, 200, "OK", server), self.notify_all(presentity))
    }

    /// NOTIFYs of `presentity`'s new state to every subscription served for it.
    fn notify_all(&self, presentity: &str) -> Vec<Notify> {
        let now = Instant::now();
        let mut subs = self.subs.lock().unwrap_or_else(|e| e.into_inner());
        subs.iter_mut()
            .filter(|(_, s)| s.until > now && s.resources.iter().any(|r| r == presentity))
            .map(|(call_id, s)| {
                let state = format!("active;expires={}", s.until.saturating_duration_since(now).as_secs());
                if s.msrtc {
                    notify(s, call_id, &state, msrtc::CATEGORIES_TYPE, self.categories(presentity).as_bytes())
                } else {
                    notify(s, call_id, &state, "application/pidf+xml", &self.pidf(presentity))
                }
            })
            .collect()
    }

    fn categories(&self, user: &str) -> String {
        let states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        let note = states.get(user).and_then(|s| s.note.clone());
        let availability = if note.is_some() { msrtc::AVAILABLE } else { 18_500 };
        msrtc::categories_doc(&aor(user), availability, note.as_deref())
    }

    fn pidf(&self, user: &str) -> Vec<u8> {
        let states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        match states.get(user).and_then(|s| s.pidf.as_ref()) {
            Some((_, b)) => b.clone(),
            None => format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" \
                 entity=\"{}\"><tuple id=\"lab\"><status><basic>closed</basic></status></tuple></presence>\r\n",
                aor(user)
            )
            .into_bytes(),
        }
    }
}

/// A NOTIFY of `s` with `state` and a body: where it goes and the request.
fn notify(s: &mut Sub, call_id: &str, state: &str, content_type: &str, body: &[u8]) -> Notify {
    s.cseq += 1;
    let host = pool_host(s.pool);
    let from =
        if s.msrtc { s.watcher_uri.clone() } else { s.resources.first().map(|u| aor(u)).unwrap_or_default() };
    let head = format!(
        "NOTIFY {target} SIP/2.0\r\nVia: SIP/2.0/TLS {host}.{DOMAIN}:5061;branch={cookie}{branch}\r\n\
         Max-Forwards: 70\r\nFrom: <{from}>;tag={ours}\r\nTo: <{watcher}>;tag={theirs}\r\n\
         Call-ID: {call_id}\r\nCSeq: {cseq} NOTIFY\r\nContact: <sip:{host}.{DOMAIN}:5061;transport=tls>\r\n\
         Event: presence\r\nSubscription-State: {state}\r\nContent-Type: {content_type}\r\n\
         Content-Length: {len}\r\n\r\n",
        target = s.target,
        cookie = message::BRANCH_COOKIE,
        branch = message::token(16),
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
