//! `kind = "sip_group_im"`: two test users meet in an IM conference and one's message
//! reaches the other through the conference server, as Microsoft's `Test-CsGroupIM`
//! does — an IM conference runs on one pool's conference server whatever pool its
//! members are homed on.
//!
//! One instance per ordered pair of users (`from` sends, `to` receives; never a user to
//! itself), in the sender's planned pool; `user` is the sender, `target` the
//! receiver's address of record and `to_pool` its planned pool, as for `sip_im`. Both
//! users keep registered endpoints ([`crate::ua::endpoint`]).
//!
//! The conference server is an IM conference server driven by commands in MESSAGE
//! bodies, as Kamailio's `imc` module is (`conference` = its domain, for example
//! `conf.contoso.test`). Each run: the sender creates the pair's room
//! (`sip:coexistd-<len><from>-<len><to>@<conference>`, `#create`; a refusal — the
//! room exists from an earlier run — is not judged: the join is), the receiver joins it (`#join`), the sender sends a MESSAGE with a fresh
//! random token to the room, and it passes when the receiver's endpoint gets a MESSAGE
//! carrying the token (the server's own request, from the room). Every request is
//! answered with the user's credentials when challenged.
//!
//! `coexist_group_im_delivery_seconds`: from the sender's MESSAGE to the room leaving to
//! the receiver's endpoint getting the conference's copy.
//!
//! Microsoft's conferencing (the focus, C3P over SIP, MS-CONFIM) is not spoken: on OCS
//! and Lync pools this kind does not run yet.
//!
//! Reasons: `sip_status` (a command or the message refused, with the code),
//! `not_delivered` (the room accepted the message but the receiver never got it),
//! `not_registered`, `wrong_home`, `auth_failed`, `timeout`, and the connection's.

use std::time::Duration;

use serde::Deserialize;
use tokio::time::Instant;
use toml::Spanned;

use super::{BuildCx, BuildError, CheckKind, Failure, FailureReason, Measure, Outcome, ProbeContext};
use crate::model::users::{Aor, User};
use crate::sip::message;
use crate::ua::client::{status_failure, Req, Uac};
use crate::ua::endpoint::{EndpointSpec, Link};

/// `coexist_group_im_delivery_seconds`.
pub static GROUP_DELIVERY: Measure = Measure {
    name: "coexist_group_im_delivery_seconds",
    help: "Time from the sending test user's MESSAGE to the IM conference room leaving to the receiving user's endpoint getting the conference's copy, in the last passing probe.",
    label: None,
};

/// The keys of `kind = "sip_group_im"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipGroupImKeys {
    /// The sending users (`[[users]]` names); default: every one.
    pub from: Option<Spanned<Vec<Spanned<String>>>>,
    /// The receiving users; default: every one.
    pub to: Option<Spanned<Vec<Spanned<String>>>>,
    /// The IM conference server's domain (rooms are `sip:ROOM@DOMAIN`).
    pub conference: Spanned<String>,
}

/// A sip_group_im check of one ordered pair.
#[derive(Debug, Clone, PartialEq)]
pub struct SipGroupImSpec {
    /// The two users: `from` acts, `to` is reached.
    pub pair: super::Pair,
    /// The pair's room: `sip:coexistd-<length>FROM-<length>TO@CONFERENCE`.
    pub room: Aor,
    /// The instance's timeout.
    pub budget: Duration,
}

impl CheckKind for SipGroupImSpec {
    type Keys = SipGroupImKeys;
    const MEASURES: &'static [&'static Measure] = &[&crate::ua::SIP_STATUS, &GROUP_DELIVERY];

    /// The target label is the receiver's address of record.
    fn build(keys: &SipGroupImKeys, cx: &BuildCx<'_>) -> Result<(SipGroupImSpec, String), BuildError> {
        let pair = cx.pair("sip_group_im")?;
        let (from, to) = (&pair.from.user, &pair.to.user);
        let domain = keys.conference.get_ref().trim();
        let valid = !domain.is_empty()
            && domain.len() <= 253
            && domain.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
        if !valid {
            return Err(cx.err(
                keys.conference.span(),
                &format!("conference: {domain:?} is not a domain name (the IM conference server's, like \"conf.contoso.test\")"),
            ));
        }
        // Each name with its length: no two pairs share a room.
        let part = |u: &User| {
            let kept: String = u.name.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
            format!("{}{kept}", u.name.len())
        };
        let room = Aor::parse(&format!("sip:coexistd-{}-{}@{domain}", part(from), part(to)))
            .map_err(|e| cx.err(keys.conference.span(), &format!("conference: {e}")))?;
        let target = pair.target();
        Ok((SipGroupImSpec { pair, room, budget: cx.timeout }, target))
    }

    fn probe(&self, cx: &ProbeContext) -> impl std::future::Future<Output = Outcome> + Send {
        probe(self, cx)
    }

    fn pairs(keys: &SipGroupImKeys) -> Option<(super::UserSelection<'_>, super::UserSelection<'_>)> {
        Some((super::UserSelection(keys.from.as_ref()), super::UserSelection(keys.to.as_ref())))
    }

    fn endpoints(&self) -> Vec<&EndpointSpec> {
        self.pair.endpoints()
    }

    /// The sender and the receiver's planned pool.
    fn extra_labels(&self) -> Vec<(&'static str, &str)> {
        self.pair.extra_labels()
    }

    /// Into the group IM matrix.
    fn rollup(&self) -> super::Rollup<'_> {
        self.pair.rollup()
    }
}

/// Runs a sip_group_im probe.
pub async fn probe(spec: &SipGroupImSpec, cx: &ProbeContext) -> Outcome {
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
        &GROUP_DELIVERY,
    )
}

/// Sends `text` as `user` over `link` to the room; the final response must be 2xx.
/// When it left.
async fn to_room(
    spec: &SipGroupImSpec,
    cx: &ProbeContext,
    link: &Link,
    user: &User,
    text: &str,
    deadline: Instant,
    status: &mut Option<u16>,
) -> Result<Instant, Failure> {
    let room = User { aor: spec.room.clone(), ..user.clone() };
    let room_uri = spec.room.uri();
    let mut uac = Uac::new(link, user, &room, cx);
    let mut tx = message::new_transaction();
    tx.method = "MESSAGE";
    let req = Req::to(&room_uri, Some(("text/plain", text.as_bytes())));
    let (resp, sent) = uac.send(&req, &mut tx, deadline).await?;
    *status = resp.status();
    if !resp.status().is_some_and(|c| (200..300).contains(&c)) {
        let what = text.split_whitespace().next().unwrap_or("MESSAGE");
        return Err(status_failure(&format!("{what} from {}", user.name), &room_uri, &resp));
    }
    Ok(sent)
}

async fn exchange(
    spec: &SipGroupImSpec,
    cx: &ProbeContext,
    deadline: Instant,
    status: &mut Option<u16>,
) -> Result<Duration, Failure> {
    let sender = cx.endpoints.ready(&spec.pair.from.user, deadline).await?;
    let receiver = cx.endpoints.ready(&spec.pair.to.user, deadline).await?;
    let slink = sender.registered_link()?;
    let rlink = receiver.registered_link()?;
    let name = spec.room.user.as_str();
    match to_room(spec, cx, &slink, &spec.pair.from.user, &format!("#create {name}"), deadline, status).await
    {
        Ok(_) => {}
        // The room exists already (an earlier run): a server may refuse the command.
        Err(f) if f.reason == FailureReason::SipStatus => {}
        Err(f) => return Err(f),
    }
    to_room(spec, cx, &rlink, &spec.pair.to.user, &format!("#join {name}"), deadline, status).await?;
    let token = format!("coexistd-group-{}", message::token(16));
    let busy = || Failure::new(FailureReason::Internal, "too many probes wait at this endpoint");
    let mut copy = receiver.expect_text(&token).ok_or_else(busy)?;
    let sent = to_room(
        spec,
        cx,
        &slink,
        &spec.pair.from.user,
        &format!("coexistd group IM test {token}"),
        deadline,
        status,
    )
    .await?;
    match copy.arrived(deadline).await {
        Some(at) => Ok(at.saturating_duration_since(sent)),
        None => Err(Failure::new(
            FailureReason::NotDelivered,
            format!(
                "the room {} accepted {}'s message but {} never got the conference's copy",
                spec.room.uri(),
                spec.pair.from.user.name,
                spec.pair.to.user.name
            ),
        )),
    }
}
