//! `kind = "sip_echo"`: a test user sends a MESSAGE to itself through its home pool.
//!
//! The pool's own delivery, without another pool in the way: the registrar and proxy
//! of the user's pool must route a request from a registered user to that user's
//! registration (Microsoft's Test-CsIM with one user). It separates "this pool does not
//! deliver IM at all" from "the route between two pools is broken" (`sip_im`'s matrix),
//! and rolls up into the pool's UP/DOWN.
//!
//! One instance per test user (`users`, default every one), in the user's planned pool;
//! `target` is the user's address of record. It passes when the user's endpoint
//! receives its own MESSAGE (matched by a random Call-ID) and the sender gets the final
//! `2xx`; `coexist_sip_delivery_seconds` is the time between.
//!
//! Reasons: `not_registered`, `not_delivered`, `sip_status`, `auth_failed`,
//! `policy_refused`, `timeout`, and the connection's.

use std::time::Duration;

use serde::Deserialize;
use tokio::time::Instant;
use toml::Spanned;

use super::{BuildCx, BuildError, CheckKind, Failure, FailureReason, Measure, Outcome, ProbeContext};
use crate::sip::message;
use crate::ua::client::{status_failure, Req, Uac};
use crate::ua::endpoint::EndpointSpec;

/// The keys of `kind = "sip_echo"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipEchoKeys {
    /// The test users (`[[users]]` names); default: every one.
    pub users: Option<Spanned<Vec<Spanned<String>>>>,
}

/// A sip_echo check of one user.
#[derive(Debug, Clone, PartialEq)]
pub struct SipEchoSpec {
    /// The user's endpoint.
    pub endpoint: Box<EndpointSpec>,
    /// The instance's timeout.
    pub budget: Duration,
}

impl CheckKind for SipEchoSpec {
    type Keys = SipEchoKeys;
    const MEASURES: &'static [&'static Measure] = &[&crate::ua::SIP_STATUS, &crate::ua::client::DELIVERY];

    /// The target label is the user's address of record.
    fn build(_keys: &SipEchoKeys, cx: &BuildCx<'_>) -> Result<(SipEchoSpec, String), BuildError> {
        let endpoint = cx.endpoint_spec()?;
        let target = endpoint.user.aor.uri();
        Ok((SipEchoSpec { endpoint: Box::new(endpoint), budget: cx.timeout }, target))
    }

    fn probe(&self, cx: &ProbeContext) -> impl std::future::Future<Output = Outcome> + Send {
        probe(self, cx)
    }

    fn users(keys: &SipEchoKeys) -> Option<super::UserSelection<'_>> {
        Some(super::UserSelection(keys.users.as_ref()))
    }

    fn endpoints(&self) -> Vec<&EndpointSpec> {
        vec![&self.endpoint]
    }
}

/// Runs a sip_echo probe.
pub async fn probe(spec: &SipEchoSpec, cx: &ProbeContext) -> Outcome {
    let deadline = Instant::now() + spec.budget.saturating_sub(spec.budget / 50 + Duration::from_millis(5));
    crate::ua::client::deliver(cx, &spec.endpoint.user, &spec.endpoint.user, deadline, || async {
        let mut status = None;
        let r = echo(spec, cx, deadline, &mut status).await;
        (r, status)
    })
    .await
}

async fn echo(
    spec: &SipEchoSpec,
    cx: &ProbeContext,
    deadline: Instant,
    status: &mut Option<u16>,
) -> Result<Duration, Failure> {
    let user = &spec.endpoint.user;
    let e = cx.endpoints.ready(user, deadline).await?;
    let link = e.registered_link()?;
    let mut tx = message::new_transaction();
    tx.method = "MESSAGE";
    let mut arrival = e
        .expect(&tx.call_id, "MESSAGE")
        .ok_or_else(|| Failure::new(FailureReason::Internal, "too many probes wait at this endpoint"))?;
    let mut uac = Uac::new(&link, user, user, cx);
    let uri = user.aor.uri();
    let text = format!("coexistd echo {}", tx.call_id).into_bytes();
    let req = Req::to(&uri, Some(("text/plain", &text)));
    let (resp, sent) = uac.send(&req, &mut tx, deadline).await?;
    *status = resp.status();
    if !resp.status().is_some_and(|c| (200..300).contains(&c)) {
        return Err(status_failure("MESSAGE", &uri, &resp));
    }
    let arrived = arrival.arrived(deadline).await.ok_or_else(|| {
        Failure::new(
            FailureReason::NotDelivered,
            format!("MESSAGE answered 2xx but {} never received it", user.name),
        )
    })?;
    Ok(arrived.saturating_duration_since(sent))
}
