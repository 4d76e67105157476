//! `kind = "sip_im"`: a test user reaches another test user through the pools, the
//! coexistence question itself ("clients interoperate with both new and old users").
//!
//! One instance per ordered pair of users (`from` × `to`, never a user to itself), in
//! the sender's planned pool; `user` is the sender, `target` the recipient's address
//! of record and `to_pool` its planned pool. Both users keep registered endpoints
//! ([`crate::ua::endpoint`]); the sender's endpoint sends the request to the recipient's
//! address of record over its connection to its home pool (answering a `401`/`407`
//! with its credentials), and the probe passes when the recipient's endpoint received
//! it (matched by a random Call-ID) and the sender got a final `2xx`.
//!
//! `method`: `MESSAGE` (page mode, the default), `OPTIONS`, or `INVITE`: an IM session
//! as Lync and OCS clients open one (INVITE with an SDP `m=message` offer, ACK, a
//! MESSAGE in the dialog, which must arrive too, BYE).
//!
//! `coexist_sip_delivery_seconds` is the time from the sender's (authenticated) request
//! leaving to the recipient's endpoint receiving it; for INVITE, the INVITE's. Both
//! ends are in this process, so the figure needs no clock synchronisation.
//!
//! A `404` or `480` for a recipient that reads registered means its registrar lost
//! the binding (a registrar restarted): the recipient's endpoint registers again at
//! once and the pair is tried once more; the event is counted on the endpoint
//! (`bindings_lost`), not as a route failure. A challenge with a stale nonce is
//! answered once more.
//!
//! Reasons: `not_registered` (either user has no registration: the test setup is
//! broken, not the route), `not_delivered` (a 2xx came back but the recipient never saw
//! the request), `sip_status` (with the status code), `auth_failed`, `timeout`, and the
//! connection's.

use std::time::Duration;

use serde::Deserialize;
use tokio::time::Instant;
use toml::Spanned;

use super::{BuildCx, BuildError, CheckKind, Failure, FailureReason, Measure, Outcome, ProbeContext};
use crate::sip::message;
use crate::sip::sdp::im_sdp;
use crate::ua::client::{status_failure, Req, Uac};
use crate::ua::endpoint::EndpointSpec;

/// The keys of `kind = "sip_im"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipImKeys {
    /// The sending users (`[[users]]` names); default: every one.
    pub from: Option<Spanned<Vec<Spanned<String>>>>,
    /// The receiving users; default: every one.
    pub to: Option<Spanned<Vec<Spanned<String>>>>,
    /// `MESSAGE` (default), `INVITE` (an IM session) or `OPTIONS`.
    pub method: Option<Spanned<String>>,
}

/// What the sender sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImMethod {
    /// A MESSAGE in page mode.
    Message,
    /// An IM session: INVITE, ACK, MESSAGE in the dialog, BYE.
    Invite,
    /// An OPTIONS to the user.
    Options,
}

impl ImMethod {
    /// The SIP method of the first request.
    pub fn as_str(self) -> &'static str {
        match self {
            ImMethod::Message => "MESSAGE",
            ImMethod::Invite => "INVITE",
            ImMethod::Options => "OPTIONS",
        }
    }
}

/// A sip_im check of one ordered pair.
#[derive(Debug, Clone, PartialEq)]
pub struct SipImSpec {
    /// The two users: `from` acts, `to` is reached.
    pub pair: super::Pair,
    /// What is sent.
    pub method: ImMethod,
    /// The instance's timeout.
    pub budget: Duration,
}

impl CheckKind for SipImSpec {
    type Keys = SipImKeys;
    const MEASURES: &'static [&'static Measure] = &[&crate::ua::SIP_STATUS, &crate::ua::client::DELIVERY];

    /// The target label is the recipient's address of record.
    fn build(keys: &SipImKeys, cx: &BuildCx<'_>) -> Result<(SipImSpec, String), BuildError> {
        let pair = cx.pair("sip_im")?;
        let method = match &keys.method {
            None => ImMethod::Message,
            Some(m) => match m.get_ref().to_ascii_uppercase().as_str() {
                "MESSAGE" => ImMethod::Message,
                "INVITE" => ImMethod::Invite,
                "OPTIONS" => ImMethod::Options,
                other => {
                    return Err(cx.err(
                        m.span(),
                        &format!("method: {other:?} is not one of \"MESSAGE\", \"INVITE\", \"OPTIONS\""),
                    ))
                }
            },
        };
        let target = pair.target();
        Ok((SipImSpec { pair, method, budget: cx.timeout }, target))
    }

    fn probe(&self, cx: &ProbeContext) -> impl std::future::Future<Output = Outcome> + Send {
        probe(self, cx)
    }

    fn pairs(keys: &SipImKeys) -> Option<(super::UserSelection<'_>, super::UserSelection<'_>)> {
        Some((super::UserSelection(keys.from.as_ref()), super::UserSelection(keys.to.as_ref())))
    }

    fn endpoints(&self) -> Vec<&EndpointSpec> {
        self.pair.endpoints()
    }

    /// The sender (`user`: two senders of one pool to one recipient are two series)
    /// and the recipient's planned pool.
    fn extra_labels(&self) -> Vec<(&'static str, &str)> {
        self.pair.extra_labels()
    }

    /// Into the interop matrix, not into the sender's pool: a broken route between
    /// pools is its own cell and alert.
    fn rollup(&self) -> super::Rollup<'_> {
        self.pair.rollup()
    }
}

/// Runs a sip_im probe.
pub async fn probe(spec: &SipImSpec, cx: &ProbeContext) -> Outcome {
    let deadline = Instant::now() + spec.budget.saturating_sub(spec.budget / 50 + Duration::from_millis(5));
    crate::ua::client::deliver(cx, &spec.pair.from.user, &spec.pair.to.user, deadline, || async {
        let mut status = None;
        let r = exchange(spec, cx, deadline, &mut status).await;
        (r, status)
    })
    .await
}

async fn exchange(
    spec: &SipImSpec,
    cx: &ProbeContext,
    deadline: Instant,
    status: &mut Option<u16>,
) -> Result<Duration, Failure> {
    let a = cx.endpoints.ready(&spec.pair.from.user, deadline).await?;
    let b = cx.endpoints.ready(&spec.pair.to.user, deadline).await?;
    let link = a.registered_link()?;
    b.registered_link()?;
    let method = spec.method.as_str();
    let mut tx = message::new_transaction();
    tx.method = method;
    tx.call_id = format!("{}@coexistd", message::token(24));
    let busy = || Failure::new(FailureReason::Internal, "too many probes wait at this endpoint");
    let mut first = b.expect(&tx.call_id, method).ok_or_else(busy)?;
    let mut sender = Uac::new(&link, &spec.pair.from.user, &spec.pair.to.user, cx);
    let to_uri = sender.to_uri().to_owned();
    let text = format!("coexistd interop test {}", tx.call_id).into_bytes();
    let sdp = im_sdp(&link.sent_by);
    let body = match spec.method {
        ImMethod::Message => Some(("text/plain", &text[..])),
        ImMethod::Invite => Some(("application/sdp", &sdp[..])),
        ImMethod::Options => None,
    };
    let req = Req::to(&to_uri, body);
    let (resp, sent) = sender.send(&req, &mut tx, deadline).await?;
    *status = resp.status();
    if !resp.status().is_some_and(|c| (200..300).contains(&c)) {
        return Err(status_failure(method, &to_uri, &resp));
    }
    let code = resp.status().unwrap_or(0);
    if spec.method != ImMethod::Invite {
        let Some(arrived) = first.arrived(deadline).await else {
            return Err(Failure::new(
                FailureReason::NotDelivered,
                format!("{method} answered {code} but {} never received it", spec.pair.to.user.name),
            ));
        };
        return Ok(arrived.saturating_duration_since(sent));
    }
    // The IM session: the 2xx is acknowledged at once along the route set (whatever
    // follows), then a MESSAGE in the dialog, then BYE; a session that was set up is
    // ended with BYE even when the MESSAGE fails (not when the 2xx has no Contact to
    // send it to, or the ACK cannot be sent: the connection is gone).
    let mut dialog = sender.dialog(&tx, &resp)?;
    let ack_branch = format!("{}{}", message::BRANCH_COOKIE, message::token(16));
    sender.ack(&Req::in_dialog(&dialog, None), &tx, &resp, &ack_branch).await?;
    let mut in_dialog = dialog.next("MESSAGE");
    let session = async {
        let Some(arrived) = first.arrived(deadline).await else {
            return Err(Failure::new(
                FailureReason::NotDelivered,
                format!("INVITE answered {code} but {} never received it", spec.pair.to.user.name),
            ));
        };
        let mut second = b.expect(&tx.call_id, "MESSAGE").ok_or_else(busy)?;
        let req = Req::in_dialog(&dialog, Some(("text/plain", &text[..])));
        let (resp, _) = sender.send(&req, &mut in_dialog, deadline).await?;
        if !resp.status().is_some_and(|c| (200..300).contains(&c)) {
            return Err(status_failure("MESSAGE in the IM session", &to_uri, &resp));
        }
        if second.arrived(deadline).await.is_none() {
            return Err(Failure::new(
                FailureReason::NotDelivered,
                format!(
                    "the MESSAGE in the IM session was answered 2xx but {} never received it",
                    spec.pair.to.user.name
                ),
            ));
        }
        Ok(arrived.saturating_duration_since(sent))
    }
    .await;
    // The BYE gets a moment past the deadline when the session failed: it must be sent.
    let bye_deadline = deadline.max(Instant::now() + Duration::from_millis(200));
    // After a challenged MESSAGE, its retry took the next CSeq: the BYE follows it.
    dialog.sent(&in_dialog);
    let mut bye = dialog.next("BYE");
    let ended = sender.send(&Req::in_dialog(&dialog, None), &mut bye, bye_deadline).await;
    let delivery = session?;
    let (resp, _) = ended?;
    if !resp.status().is_some_and(|c| (200..300).contains(&c)) {
        return Err(status_failure("BYE", &to_uri, &resp));
    }
    Ok(delivery)
}
