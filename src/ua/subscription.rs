//! Subscriptions a test user's endpoint holds as a watcher (RFC 6665; presence, RFC
//! 3856): what the probe that set one up needs to refresh it in its dialog, and what the
//! NOTIFYs that reached the endpoint said.
//!
//! The endpoint answers a NOTIFY by its Call-ID: `200` for a subscription it holds
//! (recording the body and `Subscription-State`, waking the probes that wait), `481`
//! for any other. A NOTIFY may come before the SUBSCRIBE's `2xx` (RFC 6665 §4.1.2.4):
//! the subscription is held from before the SUBSCRIBE leaves.
//!
//! Bounds: at most [`MAX_SUBSCRIPTIONS`] per endpoint, each keeping the last body only
//! (at most [`MAX_BODY`] bytes of it, drawn from the endpoints' byte budget: a body the
//! budget refuses is not kept, and the probe waiting for it fails); a subscription
//! nobody refreshed past its expiry is forgotten.
//!
//! What it does not do: send anything ([`crate::kinds::sip_presence`] subscribes and
//! refreshes through [`super::client::Uac`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::endpoint::Link;
use crate::sip::budget::{Budget, Grant};
use crate::sip::dialog::Dialog;
use crate::sip::message::Message;

/// Subscriptions one endpoint holds, at most.
pub const MAX_SUBSCRIPTIONS: usize = 4096;
/// Bytes of a NOTIFY body kept (the rest is not looked at).
pub const MAX_BODY: usize = 16 * 1024;

/// One subscription of a watcher to a presentity.
pub struct Subscription {
    /// The presentity's address of record.
    pub presentity: String,
    /// The subscription's Call-ID.
    pub call_id: String,
    /// Our (From) tag.
    pub local_tag: String,
    inner: Mutex<Inner>,
    changed: watch::Sender<u64>,
}

struct Inner {
    /// The bytes `body` holds, from the endpoints' budget (none until held).
    grant: Option<Grant>,
    dialog: Option<Dialog>,
    expires_at: Option<Instant>,
    terminated: Option<String>,
    body: Vec<u8>,
    notifies: u64,
    link: Weak<Link>,
}

/// What the last NOTIFY of a subscription said.
#[derive(Debug, Clone)]
pub struct Notified {
    /// NOTIFYs received so far.
    pub count: u64,
    /// The last one's body (at most [`MAX_BODY`] bytes).
    pub body: Vec<u8>,
    /// Why the subscription ended (`Subscription-State: terminated;reason=…`), if it did.
    pub terminated: Option<String>,
}

impl Subscription {
    /// A subscription to `presentity` about to be set up with `call_id` and our tag
    /// `local_tag` over `link`.
    pub fn new(presentity: &str, call_id: &str, local_tag: &str, link: &Arc<Link>) -> Arc<Subscription> {
        Arc::new(Subscription {
            presentity: presentity.to_owned(),
            call_id: call_id.to_owned(),
            local_tag: local_tag.to_owned(),
            inner: Mutex::new(Inner {
                grant: None,
                dialog: None,
                expires_at: None,
                terminated: None,
                body: Vec::new(),
                notifies: 0,
                link: Arc::downgrade(link),
            }),
            changed: watch::channel(0).0,
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

    /// Whether less than `margin` (or half of what was granted, if less) is left.
    pub fn due(&self, now: Instant, margin: Duration) -> bool {
        self.inner().expires_at.is_none_or(|t| t.saturating_duration_since(now) < margin)
    }

    /// Whether nobody kept it alive: expired, or terminated.
    fn lapsed(&self, now: Instant) -> bool {
        let i = self.inner();
        i.terminated.is_some() || i.expires_at.is_some_and(|t| t <= now)
    }

    /// What the NOTIFYs said so far.
    pub fn notified(&self) -> Notified {
        let i = self.inner();
        Notified { count: i.notifies, body: i.body.clone(), terminated: i.terminated.clone() }
    }

    /// Waits for the next NOTIFY after `seen` NOTIFYs (until `deadline`); `false` on
    /// the deadline.
    pub async fn next_notify(&self, seen: u64, deadline: Instant) -> bool {
        let mut rx = self.changed.subscribe();
        let wait = rx.wait_for(|n| *n > seen);
        tokio::time::timeout_at(deadline, wait).await.is_ok_and(|r| r.is_ok())
    }

    /// Records a NOTIFY of the subscription.
    fn notify(&self, m: &Message) {
        let state = m.header("subscription-state").unwrap_or("").trim().to_ascii_lowercase();
        let mut i = self.inner();
        i.notifies += 1;
        let keep = m.body.len().min(MAX_BODY);
        i.body = if i.grant.as_mut().is_some_and(|g| g.resize(keep)) {
            m.body[..keep].to_vec()
        } else {
            tracing::warn!(presentity = %self.presentity, "a NOTIFY body not kept: the endpoints' memory budget is exhausted");
            if let Some(g) = i.grant.as_mut() {
                g.resize(0);
            }
            Vec::new()
        };
        if state.starts_with("terminated") {
            let reason = state.split(';').find_map(|p| p.trim().strip_prefix("reason=")).unwrap_or("none");
            i.terminated = Some(reason.to_owned());
        } else if let Some(secs) = state.split(';').find_map(|p| p.trim().strip_prefix("expires=")) {
            // The notifier may shorten the subscription (RFC 6665 §4.1.2.3).
            if let Ok(s) = secs.trim().parse::<u64>() {
                let at = Instant::now() + Duration::from_secs(s);
                i.expires_at = Some(i.expires_at.map_or(at, |t| t.min(at)));
            }
        }
        if let Some(d) = i.dialog.as_mut() {
            d.refresh_target(m);
        }
        let n = i.notifies;
        drop(i);
        self.changed.send_replace(n);
    }
}

/// The subscriptions of one endpoint, by Call-ID.
pub struct Subscriptions {
    by_call_id: Mutex<HashMap<String, Arc<Subscription>>>,
    budget: Arc<Budget>,
}

impl Subscriptions {
    /// No subscriptions; their NOTIFY bodies draw on `budget`.
    pub fn new(budget: Arc<Budget>) -> Subscriptions {
        Subscriptions { by_call_id: Mutex::new(HashMap::new()), budget }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Subscription>>> {
        self.by_call_id.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Holds `sub` (forgetting lapsed ones first); `false` when
    /// [`MAX_SUBSCRIPTIONS`] are held already.
    pub fn hold(&self, sub: Arc<Subscription>) -> bool {
        let now = Instant::now();
        let mut m = self.map();
        m.retain(|_, s| s.dialog().is_none() || !s.lapsed(now));
        if m.len() >= MAX_SUBSCRIPTIONS {
            return false;
        }
        sub.inner().grant = Some(self.budget.empty());
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
