//! `kind = "sip_presence"`: a test user's presence reaches another test user through
//! the pools — what users notice first when coexistence breaks (a contact on the other
//! pool that stays "offline" or never changes).
//!
//! One instance per ordered pair of users (`from` publishes, `to` watches; never a user
//! to itself), in the publisher's planned pool; `user` is the publisher, `target` the
//! watcher's address of record and `to_pool` its planned pool, as for `sip_im`. Both
//! users keep registered endpoints ([`crate::ua::endpoint`]).
//!
//! Standard SIMPLE, as Kamailio's presence modules and most SBC-fronted platforms speak
//! it. Each run:
//!
//! 1. The watcher holds a subscription to the publisher (RFC 3856: `SUBSCRIBE` with
//!    `Event: presence`, `Accept: application/pidf+xml`, `Expires: 600`) on its
//!    registered connection. It is kept alive across runs: refreshed in its dialog when
//!    less than [`REFRESH_MARGIN`] (two timeouts, if that is longer) is left, set up
//!    anew when it was terminated (`Subscription-State: terminated`), refused
//!    (`481` to a refresh), has expired, or the watcher's connection changed.
//! 2. The publisher publishes a PIDF document (RFC 3863) whose `<note>` is a fresh
//!    random value (RFC 3903 `PUBLISH`; a modification with `SIP-If-Match` while it
//!    holds an entity tag, a new publication after a `412`). Probes of one publisher
//!    take turns for the PUBLISH itself.
//! 3. It passes when a NOTIFY of the watcher's subscription carries that exact note
//!    within the timeout (every NOTIFY is searched as it arrives: a value followed at
//!    once by another's is still seen). `coexist_presence_delivery_seconds`: from the PUBLISH leaving
//!    to that NOTIFY arriving (both ends are in this process: no clock skew).
//!
//! Reasons: `not_registered` (either user), `not_delivered` (the PUBLISH was accepted
//! but no NOTIFY carried the value: the detail says how many NOTIFYs came and what the
//! last one said), `sip_status` (the SUBSCRIBE or PUBLISH refused, with the code),
//! `auth_failed`, `wrong_home` (as for `sip_im`), `timeout`, and the connection's.
//!
//! Microsoft's presence dialect (`msrtc-category-publish`, batched subscriptions with
//! `eventlist`) is not spoken yet: OCS and Lync pools answer these requests with
//! `sip_status`.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::time::Instant;
use toml::Spanned;

use super::{BuildCx, BuildError, CheckKind, Failure, FailureReason, Measure, Outcome, ProbeContext};
use crate::model::users::User;
use crate::sip::message::{self, Message};
use crate::ua::client::{status_failure, Req, Uac};
use crate::ua::endpoint::{Endpoint, EndpointSpec, Link};
use crate::ua::subscription::{Seen, Subscription};

/// Seconds a SUBSCRIBE asks for.
pub const SUBSCRIBE_EXPIRES: u32 = 600;
/// Seconds a PUBLISH asks for.
pub const PUBLISH_EXPIRES: u32 = 600;
/// A subscription with less than this left is refreshed by the next run.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(120);

/// `coexist_presence_delivery_seconds`.
pub static PRESENCE_DELIVERY: Measure = Measure {
    name: "coexist_presence_delivery_seconds",
    help: "Time from the publishing test user's PUBLISH leaving to the watching user's endpoint getting the NOTIFY that carries the value, in the last passing probe.",
    label: None,
};

/// The keys of `kind = "sip_presence"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipPresenceKeys {
    /// The publishing users (`[[users]]` names); default: every one.
    pub from: Option<Spanned<Vec<Spanned<String>>>>,
    /// The watching users; default: every one.
    pub to: Option<Spanned<Vec<Spanned<String>>>>,
}

/// A sip_presence check of one ordered pair.
#[derive(Debug, Clone, PartialEq)]
pub struct SipPresenceSpec {
    /// The publisher's endpoint.
    pub from: Box<EndpointSpec>,
    /// The watcher's endpoint.
    pub to: Box<EndpointSpec>,
    /// The instance's timeout.
    pub budget: Duration,
}

impl CheckKind for SipPresenceSpec {
    type Keys = SipPresenceKeys;
    const MEASURES: &'static [&'static Measure] = &[&crate::ua::SIP_STATUS, &PRESENCE_DELIVERY];

    /// The target label is the watcher's address of record.
    fn build(_keys: &SipPresenceKeys, cx: &BuildCx<'_>) -> Result<(SipPresenceSpec, String), BuildError> {
        let (Some(from), Some(to)) = (cx.user, cx.peer) else {
            return Err(cx.err(cx.name_span.clone(), "from: sip_presence runs between two test users"));
        };
        let endpoint = |u: &User| cx.endpoint_of(u).map(Box::new);
        let spec = SipPresenceSpec { from: endpoint(from)?, to: endpoint(to)?, budget: cx.timeout };
        Ok((spec, to.aor.uri()))
    }

    fn probe(&self, cx: &ProbeContext) -> impl std::future::Future<Output = Outcome> + Send {
        probe(self, cx)
    }

    fn pairs(keys: &SipPresenceKeys) -> Option<(super::UserSelection<'_>, super::UserSelection<'_>)> {
        Some((super::UserSelection(keys.from.as_ref()), super::UserSelection(keys.to.as_ref())))
    }

    fn endpoints(&self) -> Vec<&EndpointSpec> {
        vec![&self.from, &self.to]
    }

    /// The publisher and the watcher's planned pool.
    fn extra_labels(&self) -> Vec<(&'static str, &str)> {
        vec![("user", self.from.user.name.as_str()), ("to_pool", self.to.user.pool.as_str())]
    }

    /// Into the presence matrix.
    fn rollup(&self) -> super::Rollup<'_> {
        super::Rollup::PoolPair {
            from: &self.from.user.pool,
            to: &self.to.user.pool,
            between: (&self.from.user.name, &self.to.user.name),
        }
    }
}

/// Runs a sip_presence probe.
pub async fn probe(spec: &SipPresenceSpec, cx: &ProbeContext) -> Outcome {
    let deadline = Instant::now() + spec.budget.saturating_sub(spec.budget / 50 + Duration::from_millis(5));
    let t = Instant::now();
    let before = crate::ua::client::homes(cx, &spec.from.user, &spec.to.user);
    let mut status = None;
    let r = exchange(spec, cx, deadline, &mut status).await;
    let phases = vec![(crate::model::outcome::Phase::Request, t.elapsed())];
    let mut o = match r {
        Ok(d) => {
            let mut o = Outcome::pass(phases);
            o.set(&PRESENCE_DELIVERY, d.as_secs_f64());
            o
        }
        Err(f) => Outcome::failed(f, phases),
    };
    if let Some(code) = status {
        o.set(&crate::ua::SIP_STATUS, f64::from(code));
    }
    crate::ua::client::routed(cx, &spec.from.user, &spec.to.user, before, o)
}

/// A refresh is due when less than this is left: [`REFRESH_MARGIN`], and never less
/// than two timeouts (a run must not find its subscription expiring under it).
fn margin(budget: Duration) -> Duration {
    REFRESH_MARGIN.max(budget * 2)
}

async fn exchange(
    spec: &SipPresenceSpec,
    cx: &ProbeContext,
    deadline: Instant,
    status: &mut Option<u16>,
) -> Result<Duration, Failure> {
    let publisher = cx.endpoints.ready(&spec.from.user, deadline).await?;
    let watcher = cx.endpoints.ready(&spec.to.user, deadline).await?;
    let plink = publisher.registered_link()?;
    let wlink = watcher.registered_link()?;
    let sub = subscribed(spec, cx, &watcher, &wlink, deadline, status).await?;
    let note = format!("coexistd presence test {}", message::token(16));
    let before = sub.notified().count;
    // Waiting from before the PUBLISH: the NOTIFY may come before its 200.
    let awaited = sub
        .expect(&note)
        .ok_or_else(|| Failure::new(FailureReason::Internal, "too many probes wait on this subscription"))?;
    let sent = {
        // Probes of one publisher modify its publication in turn.
        let mut publication =
            tokio::time::timeout_at(deadline, publisher.publication.lock()).await.map_err(|_| {
                Failure::new(
                    FailureReason::Timeout,
                    format!("{}'s other probes held its publication until the deadline", spec.from.user.name),
                )
            })?;
        publish(spec, cx, &plink, &note, &mut publication, deadline, status).await?
    };
    match awaited.seen(deadline).await {
        Seen::At(at) => Ok(at.saturating_duration_since(sent)),
        Seen::Terminated => {
            let reason = sub.notified().terminated.unwrap_or_default();
            watcher.subscriptions.forget(&sub.call_id);
            Err(Failure::new(
                FailureReason::NotDelivered,
                format!(
                    "{}'s subscription to {} was terminated (reason {reason}) before the value arrived; it is set up again next time",
                    spec.to.user.name, spec.from.user.name
                ),
            ))
        }
        Seen::Late => {
            let n = sub.notified();
            let said = if n.count == before {
                "no NOTIFY came".to_owned()
            } else {
                format!("{} NOTIFYs came, the last saying {:?}", n.count - before, n.excerpt)
            };
            Err(Failure::new(
                FailureReason::NotDelivered,
                format!(
                    "PUBLISH of {} accepted, but {} never saw the value: {said}",
                    spec.from.user.name, spec.to.user.name
                ),
            ))
        }
    }
}

/// The watcher's subscription to the publisher: the one it holds, refreshed when due,
/// or a new one.
async fn subscribed(
    spec: &SipPresenceSpec,
    cx: &ProbeContext,
    watcher: &Arc<Endpoint>,
    link: &Arc<Link>,
    deadline: Instant,
    status: &mut Option<u16>,
) -> Result<Arc<Subscription>, Failure> {
    let presentity = spec.from.user.aor.uri();
    let extra =
        format!("Event: presence\r\nAccept: application/pidf+xml\r\nExpires: {SUBSCRIBE_EXPIRES}\r\n");
    if let Some(sub) = watcher.subscriptions.to(&presentity, link) {
        if !sub.due(Instant::now(), margin(spec.budget)) {
            return Ok(sub);
        }
        // A refresh in the dialog; refused or failed, a new subscription.
        if let Some(mut dialog) = sub.dialog() {
            let mut uac = Uac::new(link, &spec.to.user, &spec.from.user, cx).with_tag(&sub.local_tag);
            let mut tx = dialog.next("SUBSCRIBE");
            let req = Req { extra: &extra, ..Req::in_dialog(&dialog, None) };
            if let Ok((resp, _)) = uac.send(&req, &mut tx, deadline).await {
                if resp.status().is_some_and(|c| (200..300).contains(&c)) {
                    dialog.sent(&tx);
                    dialog.refresh_target(&resp);
                    sub.established(dialog, granted(&resp));
                    return Ok(sub);
                }
            }
        }
        watcher.subscriptions.forget(&sub.call_id);
    }
    let mut uac = Uac::new(link, &spec.to.user, &spec.from.user, cx);
    let mut tx = message::new_transaction();
    tx.method = "SUBSCRIBE";
    let sub = Subscription::new(&presentity, &tx.call_id, uac.tag(), link);
    if !watcher.subscriptions.hold(sub.clone()) {
        return Err(Failure::new(FailureReason::Internal, "too many subscriptions at this endpoint"));
    }
    let req = Req { extra: &extra, ..Req::to(&presentity, None) };
    let sent = uac.send(&req, &mut tx, deadline).await;
    let resp = match sent {
        Ok((resp, _)) => resp,
        Err(f) => {
            watcher.subscriptions.forget(&sub.call_id);
            return Err(f);
        }
    };
    *status = resp.status();
    if !resp.status().is_some_and(|c| (200..300).contains(&c)) {
        watcher.subscriptions.forget(&sub.call_id);
        return Err(status_failure("SUBSCRIBE", &presentity, &resp));
    }
    let dialog = match uac.dialog(&tx, &resp) {
        Ok(d) => d,
        Err(f) => {
            watcher.subscriptions.forget(&sub.call_id);
            return Err(f);
        }
    };
    sub.established(dialog, granted(&resp));
    Ok(sub)
}

/// Seconds a SUBSCRIBE's 2xx granted (`Expires`; what was asked when absent; never
/// more).
fn granted(resp: &Message) -> u32 {
    resp.header("expires")
        .and_then(|v| v.trim().parse::<u32>().ok())
        .map_or(SUBSCRIBE_EXPIRES, |g| g.min(SUBSCRIBE_EXPIRES))
}

/// Publishes `note` as the publisher's presence; when the PUBLISH left.
async fn publish(
    spec: &SipPresenceSpec,
    cx: &ProbeContext,
    link: &Arc<Link>,
    note: &str,
    publication: &mut Option<(String, Instant)>,
    deadline: Instant,
    status: &mut Option<u16>,
) -> Result<Instant, Failure> {
    let me = &spec.from.user;
    let uri = me.aor.uri();
    let body = pidf(&uri, note);
    // A publication kept alive is modified; one that lapsed (or is unknown) is new.
    let mut etag = publication.as_ref().filter(|(_, until)| *until > Instant::now()).map(|(e, _)| e.clone());
    for _ in 0..2 {
        let if_match = etag.as_ref().map(|e| format!("SIP-If-Match: {e}\r\n")).unwrap_or_default();
        let extra = format!("Event: presence\r\nExpires: {PUBLISH_EXPIRES}\r\n{if_match}");
        let mut uac = Uac::new(link, me, me, cx);
        let mut tx = message::new_transaction();
        tx.method = "PUBLISH";
        let req = Req { extra: &extra, ..Req::to(&uri, Some(("application/pidf+xml", body.as_bytes()))) };
        let (resp, sent) = uac.send(&req, &mut tx, deadline).await?;
        *status = resp.status();
        match resp.status().unwrap_or(0) {
            200..=299 => {
                let granted = resp
                    .header("expires")
                    .and_then(|v| message::bounded_decimal(v.trim(), u64::from(PUBLISH_EXPIRES)))
                    .unwrap_or(u64::from(PUBLISH_EXPIRES));
                *publication = resp
                    .header("sip-etag")
                    .map(|e| (e.trim().to_owned(), Instant::now() + Duration::from_secs(granted) / 2));
                return Ok(sent);
            }
            // The entity tag is unknown to the presence server (it restarted, or the
            // publication expired): publish anew, once.
            412 if etag.is_some() => {
                etag = None;
                *publication = None;
            }
            _ => return Err(status_failure("PUBLISH", &uri, &resp)),
        }
    }
    Err(Failure::new(FailureReason::SipStatus, format!("PUBLISH to {uri} answered 412 twice")))
}

/// A PIDF document (RFC 3863) for `entity`: open, with `note`.
fn pidf(entity: &str, note: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n\
         <presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"{entity}\">\r\n\
         <tuple id=\"coexistd\"><status><basic>open</basic></status><note>{note}</note></tuple>\r\n\
         </presence>\r\n"
    )
}
