//! `kind = "sip_call"`: a test user calls another through the pools, as Microsoft's
//! `Test-CsP2PAV` does — the call rings on the far side and is set up both ways, or
//! users notice calls that ring on one side only.
//!
//! One instance per ordered pair of users (`from` calls, `to` answers; never a user to
//! itself), in the caller's planned pool; `user` is the caller, `target` the callee's
//! address of record and `to_pool` its planned pool, as for `sip_im`. Both users keep
//! registered endpoints ([`crate::ua::endpoint`]).
//!
//! Each run: the caller's endpoint sends an INVITE with an audio offer (RFC 3264: PCMU,
//! PCMA, telephone events, as a desk phone offers) to the callee's address of record
//! over its connection to its home pool, answering a `401`/`407` with its credentials;
//! the callee's endpoint answers like a phone (`180 Ringing`, then `200 OK` with the
//! first codec it shares); the caller acknowledges the `2xx` along the route set, holds
//! the call for a moment ([`HOLD`], less when the timeout is short) and hangs up (`BYE`,
//! which the callee must receive; a fifth of the timeout, at most 0.5 s, is kept for
//! it). A call that rang but got no answer in time is cancelled (`CANCEL`). It passes when the callee got the INVITE and the BYE,
//! the answer names a codec of the offer, and every final response was `2xx`.
//!
//! `coexist_call_setup_seconds`: from the INVITE leaving to its `200`;
//! `coexist_call_post_dial_delay_seconds`: from the INVITE leaving to the first
//! provisional response (`180`/`183`), absent when none came.
//!
//! Signalling only: no RTP flows (the offer's port is not listened on), so a firewall
//! that blocks media between sites is not seen. Where a pool requires ICE (a Lync pool
//! for its own clients' calls) the offer carries no `a=candidate` lines yet.
//!
//! Reasons: `not_registered` (either user), `sip_status` (the INVITE or the BYE refused:
//! `480` from a callee nobody answers for, `408` from a proxy that gave up, with the
//! code in the detail), `not_delivered` (a `2xx` came back but the callee never saw the
//! INVITE, or the BYE), `sip_malformed` (an answer without a codec of the offer, or
//! without a Contact), `auth_failed`, `wrong_home`, `timeout`, and the connection's.

use std::time::Duration;

use serde::Deserialize;
use tokio::time::Instant;
use toml::Spanned;

use super::{BuildCx, BuildError, CheckKind, Failure, FailureReason, Measure, Outcome, ProbeContext};
use crate::sip::message;
use crate::sip::sdp::{audio_offer, common_codec};
use crate::ua::client::{status_failure, Req, Uac};
use crate::ua::endpoint::EndpointSpec;

/// How long a call is held between its ACK and its BYE, at most (a quarter of what is
/// left of the timeout, if less).
pub const HOLD: Duration = Duration::from_millis(500);

/// `coexist_call_setup_seconds`.
pub static CALL_SETUP: Measure = Measure {
    name: "coexist_call_setup_seconds",
    help: "Time from the calling test user's INVITE leaving to its 200 OK, in the last passing probe.",
    label: None,
};

/// `coexist_call_post_dial_delay_seconds`.
pub static POST_DIAL_DELAY: Measure = Measure {
    name: "coexist_call_post_dial_delay_seconds",
    help: "Time from the calling test user's INVITE leaving to the first provisional response (180 Ringing or 183), in the last probe that got one.",
    label: None,
};

/// The keys of `kind = "sip_call"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipCallKeys {
    /// The calling users (`[[users]]` names); default: every one.
    pub from: Option<Spanned<Vec<Spanned<String>>>>,
    /// The called users; default: every one.
    pub to: Option<Spanned<Vec<Spanned<String>>>>,
}

/// A sip_call check of one ordered pair.
#[derive(Debug, Clone, PartialEq)]
pub struct SipCallSpec {
    /// The two users: `from` acts, `to` is reached.
    pub pair: super::Pair,
    /// The instance's timeout.
    pub budget: Duration,
}

impl CheckKind for SipCallSpec {
    type Keys = SipCallKeys;
    const MEASURES: &'static [&'static Measure] = &[&crate::ua::SIP_STATUS, &CALL_SETUP, &POST_DIAL_DELAY];

    /// The target label is the callee's address of record.
    fn build(_keys: &SipCallKeys, cx: &BuildCx<'_>) -> Result<(SipCallSpec, String), BuildError> {
        let pair = cx.pair("sip_call")?;
        let target = pair.target();
        Ok((SipCallSpec { pair, budget: cx.timeout }, target))
    }

    fn probe(&self, cx: &ProbeContext) -> impl std::future::Future<Output = Outcome> + Send {
        probe(self, cx)
    }

    fn pairs(keys: &SipCallKeys) -> Option<(super::UserSelection<'_>, super::UserSelection<'_>)> {
        Some((super::UserSelection(keys.from.as_ref()), super::UserSelection(keys.to.as_ref())))
    }

    fn endpoints(&self) -> Vec<&EndpointSpec> {
        self.pair.endpoints()
    }

    /// The caller and the callee's planned pool.
    fn extra_labels(&self) -> Vec<(&'static str, &str)> {
        self.pair.extra_labels()
    }

    /// Into the calls matrix.
    fn rollup(&self) -> super::Rollup<'_> {
        self.pair.rollup()
    }
}

/// What a call measured.
struct Measured {
    setup: Option<Duration>,
    post_dial: Option<Duration>,
    status: Option<u16>,
}

/// Runs a sip_call probe.
pub async fn probe(spec: &SipCallSpec, cx: &ProbeContext) -> Outcome {
    let deadline = Instant::now() + spec.budget.saturating_sub(spec.budget / 50 + Duration::from_millis(5));
    let t = Instant::now();
    let before = crate::ua::client::homes(cx, &spec.pair.from.user, &spec.pair.to.user);
    let mut m = Measured { setup: None, post_dial: None, status: None };
    let r = call(spec, cx, deadline, &mut m).await;
    let phases = vec![(crate::model::outcome::Phase::Request, t.elapsed())];
    let mut o = match r {
        Ok(()) => {
            let mut o = Outcome::pass(phases);
            if let Some(d) = m.setup {
                o.set(&CALL_SETUP, d.as_secs_f64());
            }
            o
        }
        Err(f) => Outcome::failed(f, phases),
    };
    if let Some(d) = m.post_dial {
        o.set(&POST_DIAL_DELAY, d.as_secs_f64());
    }
    if let Some(code) = m.status {
        o.set(&crate::ua::SIP_STATUS, f64::from(code));
    }
    crate::ua::client::routed(cx, &spec.pair.from.user, &spec.pair.to.user, before, o)
}

async fn call(
    spec: &SipCallSpec,
    cx: &ProbeContext,
    deadline: Instant,
    m: &mut Measured,
) -> Result<(), Failure> {
    let caller = cx.endpoints.ready(&spec.pair.from.user, deadline).await?;
    let callee = cx.endpoints.ready(&spec.pair.to.user, deadline).await?;
    let link = caller.registered_link()?;
    callee.registered_link()?;
    let mut tx = message::new_transaction();
    tx.method = "INVITE";
    let busy = || Failure::new(FailureReason::Internal, "too many probes wait at this endpoint");
    let mut rang = callee.expect(&tx.call_id, "INVITE").ok_or_else(busy)?;
    let mut hung_up = callee.expect(&tx.call_id, "BYE").ok_or_else(busy)?;
    let mut uac = Uac::new(&link, &spec.pair.from.user, &spec.pair.to.user, cx);
    let to_uri = uac.to_uri().to_owned();
    let offer = audio_offer(&link.sent_by);
    let req = Req::to(&to_uri, Some(("application/sdp", &offer[..])));
    // The BYE gets time of its own before the deadline: the call must not stay up.
    let until = deadline.checked_sub((spec.budget / 5).min(Duration::from_millis(500))).unwrap_or(deadline);
    let (resp, sent) = match uac.send(&req, &mut tx, until).await {
        Ok(r) => r,
        Err(mut f) => {
            if let (Some((code, at)), Some(sent)) = (uac.provisional, uac.last_sent) {
                m.post_dial = Some(at.saturating_duration_since(sent));
                f.detail.push_str(&format!(": it rang ({code}) but nobody answered"));
                // Given up: the proxies' transactions end, a late answer is refused.
                let _ = uac.cancel(&req, &tx).await;
            }
            return Err(f);
        }
    };
    m.status = resp.status();
    m.post_dial = uac.provisional.map(|(_, at)| at.saturating_duration_since(sent));
    if !resp.status().is_some_and(|c| (200..300).contains(&c)) {
        let mut f = status_failure("INVITE", &to_uri, &resp);
        match uac.provisional {
            Some((code, _)) => f.detail.push_str(&format!(" after {code} (it rang)")),
            None => f.detail.push_str(" (it never rang)"),
        }
        return Err(f);
    }
    m.setup = Some(Instant::now().saturating_duration_since(sent));
    // The 2xx is acknowledged at once (whatever follows), then the call is held and
    // ended with BYE.
    let ack_branch = format!("{}{}", message::BRANCH_COOKIE, message::token(16));
    let mut dialog = match uac.dialog(&tx, &resp) {
        Ok(d) => d,
        Err(f) => {
            // A 2xx without a Contact is still acknowledged (to the request's target).
            let _ = uac.ack(&req, &tx, &resp, &ack_branch).await;
            return Err(f);
        }
    };
    uac.ack(&Req::in_dialog(&dialog, None), &tx, &resp, &ack_branch).await?;
    let checked = async {
        if rang.arrived(until).await.is_none() {
            return Err(Failure::new(
                FailureReason::NotDelivered,
                format!("INVITE answered 2xx but {} never received it", spec.pair.to.user.name),
            ));
        }
        if common_codec(&resp.body).is_none() {
            return Err(Failure::new(
                FailureReason::SipMalformed,
                format!("the answer of {to_uri} names no codec of the offer (PCMU, PCMA)"),
            ));
        }
        let hold = HOLD.min(until.saturating_duration_since(Instant::now()) / 4);
        tokio::time::sleep(hold).await;
        Ok(())
    }
    .await;
    // The BYE goes even when the call failed a check: it must not stay up.
    let mut bye = dialog.next("BYE");
    let ended = uac.send(&Req::in_dialog(&dialog, None), &mut bye, deadline).await;
    checked?;
    let (resp, _) = ended?;
    if !resp.status().is_some_and(|c| (200..300).contains(&c)) {
        return Err(status_failure("BYE", &to_uri, &resp));
    }
    if hung_up.arrived(deadline.max(Instant::now())).await.is_none() {
        return Err(Failure::new(
            FailureReason::NotDelivered,
            format!("BYE answered 2xx but {} never received it", spec.pair.to.user.name),
        ));
    }
    Ok(())
}
