//! `kind = "sip_presence"`: a test user's presence reaches another test user through
//! the pools — what users notice first when coexistence breaks (a contact on the other
//! pool that stays "offline" or never changes).
//!
//! One instance per ordered pair of users (`from` publishes, `to` watches; never a user
//! to itself), in the publisher's planned pool; `user` is the publisher, `target` the
//! watcher's address of record and `to_pool` its planned pool, as for `sip_im`. Both
//! users keep registered endpoints ([`crate::ua::endpoint`]).
//!
//! Standard SIMPLE (`presence = "simple"`, the default), as Kamailio's presence modules
//! and most SBC-fronted platforms speak it. Each run:
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
//! Microsoft's dialect (`presence = "msrtc"` on the pools: OCS 2007 R2, Lync, Skype for
//! Business; [`crate::sip::msrtc`]): the publisher sends a `SERVICE` with a category
//! publication (state "Available", the note in the company, team and personal
//! containers, at the versions last seen; a `409` fault's versions are taken and it is
//! published once more); the watcher sends a batched `SUBSCRIBE` to its own URI and, when
//! its pool answers `resubscribe` with the publisher's pool's `poolFqdn`, another to
//! that pool, through its own connection, whose first NOTIFY carries the current note.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::time::Instant;
use toml::Spanned;

use super::{BuildCx, BuildError, CheckKind, Failure, FailureReason, Measure, Outcome, ProbeContext};
use crate::model::pool::PresenceDialect;
use crate::model::users::User;
use crate::sip::message::{self, Message};
use crate::sip::msrtc;
use crate::ua::client::{status_failure, Req, Uac};
use crate::ua::endpoint::Publication;
use crate::ua::endpoint::{Endpoint, EndpointSpec, Link};
use crate::ua::subscription::{Awaited, Seen, Subscription};

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
    /// The two users: `from` acts, `to` is reached.
    pub pair: super::Pair,
    /// How the publisher's planned pool publishes presence.
    pub publish: PresenceDialect,
    /// How the watcher's planned pool watches it.
    pub watch: PresenceDialect,
    /// The instance's timeout.
    pub budget: Duration,
}

impl CheckKind for SipPresenceSpec {
    type Keys = SipPresenceKeys;
    const MEASURES: &'static [&'static Measure] = &[&crate::ua::SIP_STATUS, &PRESENCE_DELIVERY];

    /// The target label is the watcher's address of record.
    fn build(_keys: &SipPresenceKeys, cx: &BuildCx<'_>) -> Result<(SipPresenceSpec, String), BuildError> {
        let pair = cx.pair("sip_presence")?;
        let dialect =
            |u: &User| cx.pools.iter().find(|p| p.name == u.pool).map(|p| p.presence).unwrap_or_default();
        let (publish, watch) = (dialect(&pair.from.user), dialect(&pair.to.user));
        let target = pair.target();
        Ok((SipPresenceSpec { pair, publish, watch, budget: cx.timeout }, target))
    }

    fn probe(&self, cx: &ProbeContext) -> impl std::future::Future<Output = Outcome> + Send {
        probe(self, cx)
    }

    fn pairs(keys: &SipPresenceKeys) -> Option<(super::UserSelection<'_>, super::UserSelection<'_>)> {
        Some((super::UserSelection(keys.from.as_ref()), super::UserSelection(keys.to.as_ref())))
    }

    fn endpoints(&self) -> Vec<&EndpointSpec> {
        self.pair.endpoints()
    }

    /// The publisher and the watcher's planned pool.
    fn extra_labels(&self) -> Vec<(&'static str, &str)> {
        self.pair.extra_labels()
    }

    /// Into the presence matrix.
    fn rollup(&self) -> super::Rollup<'_> {
        self.pair.rollup()
    }
}

/// Runs a sip_presence probe.
pub async fn probe(spec: &SipPresenceSpec, cx: &ProbeContext) -> Outcome {
    let deadline = Instant::now() + spec.budget.saturating_sub(spec.budget / 50 + Duration::from_millis(5));
    let t = Instant::now();
    let before = crate::ua::client::homes(cx, &spec.pair.from.user, &spec.pair.to.user);
    let mut status = None;
    let r = exchange(spec, cx, deadline, &mut status).await;
    crate::ua::client::between(
        cx,
        &spec.pair.from.user,
        &spec.pair.to.user,
        before,
        t,
        r,
        status,
        &PRESENCE_DELIVERY,
    )
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
    let publisher = cx.endpoints.ready(&spec.pair.from.user, deadline).await?;
    let watcher = cx.endpoints.ready(&spec.pair.to.user, deadline).await?;
    let plink = publisher.registered_link()?;
    let wlink = watcher.registered_link()?;
    let note = format!("coexistd presence test {}", message::token(16));
    // Waiting from before the PUBLISH: the NOTIFY may come before its 200.
    let (mut sub, mut awaited) = subscribed(spec, cx, &watcher, &wlink, &note, deadline, status).await?;
    let mut before = sub.notified().count;
    let sent = {
        // Probes of one publisher modify its publication in turn.
        let mut publication =
            tokio::time::timeout_at(deadline, publisher.publication.lock()).await.map_err(|_| {
                Failure::new(
                    FailureReason::Timeout,
                    format!(
                        "{}'s other probes held its publication until the deadline",
                        spec.pair.from.user.name
                    ),
                )
            })?;
        match spec.publish {
            PresenceDialect::Simple => {
                publish(spec, cx, &plink, &note, &mut publication, deadline, status).await?
            }
            PresenceDialect::Msrtc => {
                publish_msrtc(spec, cx, &plink, &note, &mut publication, deadline, status).await?
            }
        }
    };
    let mut seen = awaited.seen(deadline).await;
    // Microsoft's dialect: another pool serves the presentity. Subscribe there (through
    // the watcher's own connection), once; its first NOTIFY carries the current value.
    // Only a name of a configured pool is followed (a pool's FQDN or member).
    if let (Seen::Terminated, Some(host)) = (&seen, sub.notified().resubscribe) {
        if !spec.pair.to.pools.iter().any(|p| p.owns_name(&host)) {
            watcher.subscriptions.forget(&sub.call_id);
            return Err(Failure::new(
                FailureReason::PolicyRefused,
                format!(
                    "{}'s pool said to subscribe to {} at {host}, which is no configured pool's name: not followed",
                    spec.pair.to.user.name, spec.pair.from.user.name
                ),
            ));
        }
        unsubscribe(spec, cx, &wlink, &sub).await;
        watcher.subscriptions.forget(&sub.call_id);
        let pool = format!("sip:{host}");
        (sub, awaited) = subscribe(spec, cx, &watcher, &wlink, Some(&pool), &note, deadline, status).await?;
        before = 0;
        seen = awaited.seen(deadline).await;
    }
    match seen {
        Seen::At(at) => Ok(at.saturating_duration_since(sent)),
        Seen::Terminated => {
            let reason = sub.notified().terminated.unwrap_or_default();
            watcher.subscriptions.forget(&sub.call_id);
            Err(Failure::new(
                FailureReason::NotDelivered,
                format!(
                    "{}'s subscription to {} was terminated (reason {reason}) before the value arrived; it is set up again next time",
                    spec.pair.to.user.name, spec.pair.from.user.name
                ),
            ))
        }
        Seen::Late => {
            let n = sub.notified();
            let said = if n.count <= before {
                "no NOTIFY came".to_owned()
            } else {
                format!("{} NOTIFYs came, the last saying {:?}", n.count - before, n.excerpt)
            };
            Err(Failure::new(
                FailureReason::NotDelivered,
                format!(
                    "PUBLISH of {} accepted, but {} never saw the value: {said}",
                    spec.pair.from.user.name, spec.pair.to.user.name
                ),
            ))
        }
    }
}

/// The watcher's subscription to the publisher — the one it holds, refreshed when due,
/// or a new one — with a wait for `value` registered on it.
async fn subscribed(
    spec: &SipPresenceSpec,
    cx: &ProbeContext,
    watcher: &Arc<Endpoint>,
    link: &Arc<Link>,
    value: &str,
    deadline: Instant,
    status: &mut Option<u16>,
) -> Result<(Arc<Subscription>, Awaited), Failure> {
    let presentity = spec.pair.from.user.aor.uri();
    let too_many = || Failure::new(FailureReason::Internal, "too many probes wait on this subscription");
    if let Some(sub) = watcher.subscriptions.to(&presentity, link) {
        if !sub.due(Instant::now(), margin(spec.budget)) {
            let awaited = sub.expect(value).ok_or_else(too_many)?;
            return Ok((sub, awaited));
        }
        // A refresh in the dialog; refused or failed, a new subscription.
        if let Some(mut dialog) = sub.dialog() {
            let awaited = sub.expect(value).ok_or_else(too_many)?;
            let (extra, body) = subscribe_request(spec);
            let mut uac = Uac::new(link, &spec.pair.to.user, &spec.pair.from.user, cx)
                .with_tag(&sub.local_tag)
                .with_to(&sub.to_uri());
            let mut tx = dialog.next("SUBSCRIBE");
            let req = Req {
                extra: &extra,
                ..Req::in_dialog(&dialog, body.as_ref().map(|b| (msrtc::BATCH_TYPE, b.as_bytes())))
            };
            if let Ok((resp, _)) = uac.send(&req, &mut tx, deadline).await {
                if resp.status().is_some_and(|c| (200..300).contains(&c)) {
                    dialog.sent(&tx);
                    dialog.refresh_target(&resp);
                    sub.established(dialog, granted(&resp));
                    return Ok((sub, awaited));
                }
            }
        }
        watcher.subscriptions.forget(&sub.call_id);
    }
    subscribe(spec, cx, watcher, link, None, value, deadline, status).await
}

/// Ends `sub` at the pool (a SUBSCRIBE with `Expires: 0` in its dialog), without
/// waiting long: a subscription given up must not stay at the pool until it expires.
async fn unsubscribe(spec: &SipPresenceSpec, cx: &ProbeContext, link: &Arc<Link>, sub: &Subscription) {
    let Some(mut dialog) = sub.dialog() else { return };
    let (extra, body) = subscribe_request(spec);
    let extra = extra.replace(&format!("Expires: {SUBSCRIBE_EXPIRES}"), "Expires: 0");
    let mut uac = Uac::new(link, &spec.pair.to.user, &spec.pair.from.user, cx)
        .with_tag(&sub.local_tag)
        .with_to(&sub.to_uri());
    let mut tx = dialog.next("SUBSCRIBE");
    let req = Req {
        extra: &extra,
        ..Req::in_dialog(&dialog, body.as_ref().map(|b| (msrtc::BATCH_TYPE, b.as_bytes())))
    };
    let _ = uac.send(&req, &mut tx, Instant::now() + Duration::from_millis(300)).await;
}

/// The header lines and (Microsoft's dialect) the body of a SUBSCRIBE of the watcher to
/// the publisher.
fn subscribe_request(spec: &SipPresenceSpec) -> (String, Option<String>) {
    match spec.watch {
        PresenceDialect::Simple => {
            (format!("Event: presence\r\nAccept: application/pidf+xml\r\nExpires: {SUBSCRIBE_EXPIRES}\r\n"), None)
        }
        PresenceDialect::Msrtc => (
            format!(
                "Event: presence\r\nAccept: {}, application/rlmi+xml, multipart/related\r\n\
                 Supported: eventlist\r\nRequire: adhoclist, categoryList\r\nExpires: {SUBSCRIBE_EXPIRES}\r\n",
                msrtc::CATEGORIES_TYPE
            ),
            Some(msrtc::batch_body(&spec.pair.to.user.aor.uri(), &[&spec.pair.from.user.aor.uri()])),
        ),
    }
}

/// A new subscription of the watcher to the publisher, with a wait for `value`
/// registered before the SUBSCRIBE leaves. Standard SIMPLE subscribes to the publisher;
/// Microsoft's dialect sends a batched SUBSCRIBE to the watcher's own URI, or to `pool`
/// (a `resubscribe`'s `poolFqdn`).
#[allow(clippy::too_many_arguments)]
async fn subscribe(
    spec: &SipPresenceSpec,
    cx: &ProbeContext,
    watcher: &Arc<Endpoint>,
    link: &Arc<Link>,
    pool: Option<&str>,
    value: &str,
    deadline: Instant,
    status: &mut Option<u16>,
) -> Result<(Arc<Subscription>, Awaited), Failure> {
    let presentity = spec.pair.from.user.aor.uri();
    let own = spec.pair.to.user.aor.uri();
    let target = match (spec.watch, pool) {
        (_, Some(p)) => p.to_owned(),
        (PresenceDialect::Simple, None) => presentity.clone(),
        (PresenceDialect::Msrtc, None) => own,
    };
    let (extra, body) = subscribe_request(spec);
    let mut uac = Uac::new(link, &spec.pair.to.user, &spec.pair.from.user, cx).with_to(&target);
    let mut tx = message::new_transaction();
    tx.method = "SUBSCRIBE";
    let sub = Subscription::new(&presentity, &tx.call_id, uac.tag(), link);
    if target != presentity {
        sub.set_to(&target);
    }
    let awaited = sub.expect(value).ok_or_else(|| Failure::new(FailureReason::Internal, "no wait"))?;
    if !watcher.subscriptions.hold(sub.clone()) {
        return Err(Failure::new(FailureReason::Internal, "too many subscriptions at this endpoint"));
    }
    let req =
        Req { extra: &extra, ..Req::to(&target, body.as_ref().map(|b| (msrtc::BATCH_TYPE, b.as_bytes()))) };
    let forget = |f: Failure| {
        watcher.subscriptions.forget(&sub.call_id);
        f
    };
    let (resp, _) = uac.send(&req, &mut tx, deadline).await.map_err(forget)?;
    *status = resp.status();
    if !resp.status().is_some_and(|c| (200..300).contains(&c)) {
        return Err(forget(status_failure("SUBSCRIBE", &target, &resp)));
    }
    let dialog = uac.dialog(&tx, &resp).map_err(forget)?;
    sub.established(dialog, granted(&resp));
    Ok((sub, awaited))
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
    publication: &mut Publication,
    deadline: Instant,
    status: &mut Option<u16>,
) -> Result<Instant, Failure> {
    let me = &spec.pair.from.user;
    let uri = me.aor.uri();
    let body = pidf(&uri, note);
    // A publication kept alive is modified; one that lapsed (or is unknown) is new.
    let mut etag =
        publication.etag.as_ref().filter(|(_, until)| *until > Instant::now()).map(|(e, _)| e.clone());
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
                publication.etag = resp
                    .header("sip-etag")
                    .map(|e| (e.trim().to_owned(), Instant::now() + Duration::from_secs(granted) / 2));
                return Ok(sent);
            }
            // The entity tag is unknown to the presence server (it restarted, or the
            // publication expired): publish anew, once.
            412 if etag.is_some() => {
                etag = None;
                publication.etag = None;
            }
            _ => return Err(status_failure("PUBLISH", &uri, &resp)),
        }
    }
    Err(Failure::new(FailureReason::SipStatus, format!("PUBLISH to {uri} answered 412 twice")))
}

/// Publishes `note` (and the state "Available") in Microsoft's dialect: a SERVICE to
/// the publisher's own URI with a category publication at the versions last seen; a
/// `409` naming the server's versions is answered once with those. When the SERVICE
/// left.
async fn publish_msrtc(
    spec: &SipPresenceSpec,
    cx: &ProbeContext,
    link: &Arc<Link>,
    note: &str,
    publication: &mut Publication,
    deadline: Instant,
    status: &mut Option<u16>,
) -> Result<Instant, Failure> {
    let me = &spec.pair.from.user;
    let uri = me.aor.uri();
    for _ in 0..2 {
        let (body, keys) =
            msrtc::publish_body(&uri, note, |k| publication.versions.get(k).copied().unwrap_or(0));
        let mut uac = Uac::new(link, me, me, cx);
        let mut tx = message::new_transaction();
        tx.method = "SERVICE";
        let req = Req::to(&uri, Some((msrtc::PUBLISH_TYPE, body.as_bytes())));
        let (resp, sent) = uac.send(&req, &mut tx, deadline).await?;
        *status = resp.status();
        match resp.status().unwrap_or(0) {
            200..=299 => {
                // The server keeps each publication at the next version.
                for k in keys {
                    let v = publication.versions.entry(k).or_insert(0);
                    *v = v.wrapping_add(1);
                }
                return Ok(sent);
            }
            409 => {
                let current = msrtc::parse_fault(&String::from_utf8_lossy(&resp.body));
                if current.is_empty() {
                    return Err(status_failure("SERVICE (category publication)", &uri, &resp));
                }
                for (index, version) in current {
                    if let Some(k) = index.checked_sub(1).and_then(|i| keys.get(i)) {
                        publication.versions.insert(k.clone(), version);
                    }
                }
            }
            _ => return Err(status_failure("SERVICE (category publication)", &uri, &resp)),
        }
    }
    Err(Failure::new(
        FailureReason::SipStatus,
        format!("SERVICE (category publication) to {uri} answered 409 twice: the versions do not settle"),
    ))
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
