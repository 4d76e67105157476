//! Subscriptions a test user's endpoint holds as a watcher (RFC 6665; presence, RFC
//! 3856): what the probe that set one up needs to refresh it in its dialog, and which
//! of the values probes wait for the NOTIFYs carried.
//!
//! The endpoint answers a NOTIFY by its Call-ID and our tag: `200` for a subscription
//! it holds, `481` for any other. A NOTIFY may come before the SUBSCRIBE's `2xx` (RFC
//! 6665 §4.1.2.4): the subscription is held from before the SUBSCRIBE leaves. A probe
//! says which value it waits for before the value is published
//! ([`Subscription::expect`]); every NOTIFY is searched for every awaited value as it
//! arrives, so a value is seen even when later NOTIFYs follow at once.
//!
//! Bounds: at most [`MAX_SUBSCRIPTIONS`] per endpoint and [`MAX_AWAITED`] awaited values
//! per subscription; of a body, only a short printable excerpt is kept (for failure
//! details). A subscription nobody refreshed past its expiry, or one whose SUBSCRIBE
//! never got an answer within [`SETUP_WITHIN`], is forgotten.
//!
//! What it does not do: send anything ([`crate::kinds::sip_presence`] subscribes and
//! refreshes through [`super::client::Uac`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::endpoint::Link;
use crate::sip::dialog::Dialog;
use crate::sip::message::Message;

/// Subscriptions one endpoint holds, at most.
pub const MAX_SUBSCRIPTIONS: usize = 4096;
/// Values probes wait for on one subscription, at most.
pub const MAX_AWAITED: usize = 64;
/// Characters of the last NOTIFY body kept, for failure details.
const EXCERPT: usize = 160;
/// Longest a subscription may stay without a dialog (its SUBSCRIBE unanswered, or the
/// probe that sent it gone).
pub const SETUP_WITHIN: Duration = Duration::from_secs(60);
/// Longest expiry believed from a NOTIFY's `Subscription-State`.
const MAX_EXPIRES: u64 = 86_400;

/// One subscription of a watcher to a presentity.
pub struct Subscription {
    /// The presentity's address of record.
    pub presentity: String,
    /// The subscription's Call-ID.
    pub call_id: String,
    /// Our (From) tag.
    pub local_tag: String,
    created: Instant,
    inner: Mutex<Inner>,
}

struct Inner {
    dialog: Option<Dialog>,
    expires_at: Option<Instant>,
    terminated: Option<String>,
    excerpt: String,
    notifies: u64,
    link: Weak<Link>,
    awaited: Vec<(String, oneshot::Sender<Instant>)>,
    /// Where a `resubscribe` sent the presentity (Microsoft's dialect).
    resubscribe: Option<String>,
    /// The To URI of the SUBSCRIBE, when not the presentity's (a batched subscription).
    to: Option<String>,
    /// Wakes a probe waiting when the subscription ends.
    ended: Vec<oneshot::Sender<()>>,
}

/// What the NOTIFYs of a subscription said so far.
#[derive(Debug, Clone)]
pub struct Notified {
    /// NOTIFYs received so far.
    pub count: u64,
    /// The start of the last one's body, printable characters only.
    pub excerpt: String,
    /// Why the subscription ended (`Subscription-State: terminated;reason=…`, or
    /// `resubscribe`), if it did.
    pub terminated: Option<String>,
    /// Where to subscribe again for the presentity: the pool a `resubscribe` named
    /// (Microsoft's dialect, [`crate::sip::msrtc::resubscribe_to`]).
    pub resubscribe: Option<String>,
}

/// A probe waiting for a value in a subscription's NOTIFYs.
pub struct Awaited {
    arrived: oneshot::Receiver<Instant>,
    ended: oneshot::Receiver<()>,
}

/// How a wait for a value ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Seen {
    /// A NOTIFY carried it, at this time.
    At(Instant),
    /// The subscription ended first.
    Terminated,
    /// The deadline passed.
    Late,
}

impl Awaited {
    /// Waits until `deadline` for the value.
    pub async fn seen(self, deadline: Instant) -> Seen {
        let Awaited { arrived, ended } = self;
        tokio::select! {
            // A NOTIFY that carries the value and ends the subscription counts as seen.
            biased;
            r = arrived => match r {
                Ok(at) => Seen::At(at),
                Err(_) => Seen::Terminated,
            },
            _ = ended => Seen::Terminated,
            _ = tokio::time::sleep_until(deadline) => Seen::Late,
        }
    }
}

impl Subscription {
    /// A subscription to `presentity` about to be set up with `call_id` and our tag
    /// `local_tag` over `link`.
    pub fn new(presentity: &str, call_id: &str, local_tag: &str, link: &Arc<Link>) -> Arc<Subscription> {
        Arc::new(Subscription {
            presentity: presentity.to_owned(),
            call_id: call_id.to_owned(),
            local_tag: local_tag.to_owned(),
            created: Instant::now(),
            inner: Mutex::new(Inner {
                dialog: None,
                expires_at: None,
                terminated: None,
                excerpt: String::new(),
                notifies: 0,
                link: Arc::downgrade(link),
                awaited: Vec::new(),
                resubscribe: None,
                to: None,
                ended: Vec::new(),
            }),
        })
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes the dialog a `2xx` (or a refresh's) set up and the seconds it granted.
    pub fn established(&self, dialog: Dialog, granted: u32) {
        let mut i = self.inner();
        i.dialog = Some(dialog);
        i.expires_at = Some(Instant::now() + Duration::from_secs(u64::from(granted)));
    }

    /// Notes that the SUBSCRIBE went to `uri` (its To), not to the presentity: a batched
    /// subscription (Microsoft's dialect), whose NOTIFYs may send the presentity to
    /// another pool.
    pub fn set_to(&self, uri: &str) {
        self.inner().to = Some(uri.to_owned());
    }

    /// The To URI of requests in the subscription's dialog.
    pub fn to_uri(&self) -> String {
        self.inner().to.clone().unwrap_or_else(|| self.presentity.clone())
    }

    /// The dialog, for a refresh (`None` before the `2xx`).
    pub fn dialog(&self) -> Option<Dialog> {
        self.inner().dialog.clone()
    }

    /// Whether it can still be used over `link`: not terminated, not expired, set up on
    /// this very connection (a new connection has another Contact).
    pub fn usable_on(&self, link: &Arc<Link>, now: Instant) -> bool {
        let i = self.inner();
        i.terminated.is_none()
            && i.expires_at.is_some_and(|t| t > now)
            && i.link.upgrade().is_some_and(|l| Arc::ptr_eq(&l, link))
    }

    /// Whether less than `margin` of it is left (a refresh is due).
    pub fn due(&self, now: Instant, margin: Duration) -> bool {
        self.inner().expires_at.is_none_or(|t| t.saturating_duration_since(now) < margin)
    }

    /// Whether it can go: terminated, expired, or never set up in time.
    fn lapsed(&self, now: Instant) -> bool {
        let i = self.inner();
        i.terminated.is_some()
            || i.expires_at.is_some_and(|t| t <= now)
            || (i.dialog.is_none() && now.saturating_duration_since(self.created) > SETUP_WITHIN)
    }

    /// What the NOTIFYs said so far.
    pub fn notified(&self) -> Notified {
        let i = self.inner();
        Notified {
            count: i.notifies,
            excerpt: i.excerpt.clone(),
            terminated: i.terminated.clone(),
            resubscribe: i.resubscribe.clone(),
        }
    }

    /// Starts waiting for a NOTIFY whose body carries `value` (before it is published);
    /// `None` when [`MAX_AWAITED`] probes wait already.
    pub fn expect(&self, value: &str) -> Option<Awaited> {
        let mut i = self.inner();
        i.awaited.retain(|(_, tx)| !tx.is_closed());
        i.ended.retain(|tx| !tx.is_closed());
        if i.awaited.len() >= MAX_AWAITED {
            return None;
        }
        let (tx, arrived) = oneshot::channel();
        let (end_tx, ended) = oneshot::channel();
        if i.terminated.is_some() {
            let _ = end_tx.send(());
        } else {
            i.ended.push(end_tx);
        }
        i.awaited.push((value.to_owned(), tx));
        Some(Awaited { arrived, ended })
    }

    /// Records a NOTIFY of the subscription.
    fn notify(&self, m: &Message) {
        let now = Instant::now();
        let state = m.header("subscription-state").unwrap_or("").trim().to_ascii_lowercase();
        let mut i = self.inner();
        i.notifies += 1;
        i.excerpt = String::from_utf8_lossy(&m.body[..m.body.len().min(4 * EXCERPT)])
            .chars()
            .filter(|c| !c.is_control())
            .take(EXCERPT)
            .collect();
        let body = &m.body;
        let mut k = 0;
        while k < i.awaited.len() {
            if contains(body, &i.awaited[k].0) {
                let (_, tx) = i.awaited.swap_remove(k);
                let _ = tx.send(now);
            } else {
                k += 1;
            }
        }
        // Microsoft's dialect: the presentity is served by another pool. This
        // subscription ends for it; the probe subscribes there.
        // Only a batched subscription's NOTIFY has an rlmi index (a SIMPLE one carries
        // whatever was published for the presentity).
        let moved = if i.to.is_some() && contains(body, "resubscribe") {
            crate::sip::msrtc::resubscribe_to(&String::from_utf8_lossy(body), &self.presentity)
        } else {
            None
        };
        if let Some(pool) = moved {
            i.resubscribe = Some(pool);
            i.terminated = Some("resubscribe".to_owned());
            for tx in i.ended.drain(..) {
                let _ = tx.send(());
            }
        } else if state.starts_with("terminated") {
            let reason = state.split(';').find_map(|p| p.trim().strip_prefix("reason=")).unwrap_or("none");
            i.terminated = Some(reason.to_owned());
            for tx in i.ended.drain(..) {
                let _ = tx.send(());
            }
        } else if let Some(secs) = state.split(';').find_map(|p| p.trim().strip_prefix("expires=")) {
            // The notifier may shorten the subscription (RFC 6665 §4.1.2.3); never
            // lengthen it, and never believe more than a day.
            if let Some(s) = crate::sip::message::bounded_decimal(secs.trim(), MAX_EXPIRES) {
                let at = now + Duration::from_secs(s);
                i.expires_at = Some(i.expires_at.map_or(at, |t| t.min(at)));
            }
        }
        if let Some(d) = i.dialog.as_mut() {
            d.refresh_target(m);
        }
    }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// The subscriptions of one endpoint, by Call-ID.
#[derive(Default)]
pub struct Subscriptions {
    by_call_id: Mutex<HashMap<String, Arc<Subscription>>>,
}

impl Subscriptions {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Subscription>>> {
        self.by_call_id.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Holds `sub` (forgetting lapsed ones first); `false` when
    /// [`MAX_SUBSCRIPTIONS`] are held already.
    pub fn hold(&self, sub: Arc<Subscription>) -> bool {
        let now = Instant::now();
        let mut m = self.map();
        m.retain(|_, s| !s.lapsed(now));
        if m.len() >= MAX_SUBSCRIPTIONS {
            return false;
        }
        m.insert(sub.call_id.clone(), sub);
        true
    }

    /// Forgets the subscription with this Call-ID.
    pub fn forget(&self, call_id: &str) {
        self.map().remove(call_id);
    }

    /// The subscription to `presentity` usable over `link`, if one is held.
    pub fn to(&self, presentity: &str, link: &Arc<Link>) -> Option<Arc<Subscription>> {
        let now = Instant::now();
        self.map().values().find(|s| s.presentity == presentity && s.usable_on(link, now)).cloned()
    }

    /// Records a NOTIFY; whether a subscription it belongs to is held.
    pub fn notify(&self, m: &Message) -> bool {
        let call_id = m.header("call-id").unwrap_or("").trim();
        let Some(sub) = self.map().get(call_id).cloned() else { return false };
        let to_tag = m.header("to").and_then(crate::sip::message::tag_of);
        if to_tag != Some(sub.local_tag.as_str()) {
            return false;
        }
        sub.notify(m);
        true
    }
}
