//! The client side of a test user's requests on its registered endpoint's link (a UAC,
//! RFC 3261 §8.1): builds a request from the user's identity, runs its transaction on
//! the link, answers one `401`/`407` with the user's credentials under the
//! authentication policy (a stale nonce once more), acknowledges an INVITE's final
//! response. Every kind that acts as a test user sends through it.
//!
//! What it does not do: wait for the request to arrive anywhere (the recipient's
//! endpoint tells, [`super::endpoint::Endpoint::expect`]), or judge the outcome.

use std::time::Duration;

use tokio::time::Instant;

use std::sync::Arc;

use super::endpoint::{Endpoint, Link};
use super::registration::{reason_phrase, Credentials};
use super::ProbeContext;
use crate::failure::{Failure, FailureReason};
use crate::model::outcome::{Measure, Outcome, PairRoute, Phase};
use crate::model::users::User;
use crate::sip::dialog::Dialog;
use crate::sip::message::{self, Message, RequestParams, Transaction};

/// One request: what varies between the requests of an exchange.
#[derive(Debug, Clone, Copy)]
pub struct Req<'a> {
    /// The Request-URI.
    pub uri: &'a str,
    /// The To tag (in a dialog).
    pub to_tag: Option<&'a str>,
    /// Route headers (a dialog's route set), in order.
    pub route: &'a [String],
    /// Further header lines, each ending in CRLF (`Event`, `Expires`, …).
    pub extra: &'a str,
    /// `(Content-Type, body)`.
    pub body: Option<(&'a str, &'a [u8])>,
}

impl<'a> Req<'a> {
    /// A request outside any dialog to `uri`.
    pub fn to(uri: &'a str, body: Option<(&'a str, &'a [u8])>) -> Req<'a> {
        Req { uri, to_tag: None, route: &[], extra: "", body }
    }

    /// A request inside `dialog`: to its remote target along its route set.
    pub fn in_dialog(dialog: &'a Dialog, body: Option<(&'a str, &'a [u8])>) -> Req<'a> {
        Req {
            uri: &dialog.remote_target,
            to_tag: dialog.remote_tag.as_deref(),
            route: &dialog.route_set,
            extra: "",
            body,
        }
    }
}

/// A test user sending to another address of record over its endpoint's link.
pub struct Uac<'a> {
    link: &'a Link,
    user: &'a User,
    from_uri: String,
    to_uri: String,
    tag: String,
    creds: Credentials,
    /// The sender's endpoint: signs in again when the pool drops its NTLM association.
    endpoint: Option<Arc<Endpoint>>,
    /// The first provisional response to the last request sent, and when it came.
    pub provisional: Option<(u16, Instant)>,
    /// When the last request left.
    pub last_sent: Option<Instant>,
}

impl<'a> Uac<'a> {
    /// `user` sending to `to` over `link`, with the realm pinned for `user` in `cx`.
    pub fn new(link: &'a Link, user: &'a User, to: &User, cx: &ProbeContext) -> Uac<'a> {
        Uac {
            link,
            user,
            from_uri: user.aor.uri(),
            to_uri: to.aor.uri(),
            tag: message::token(8),
            creds: Credentials::of(user, cx.endpoints.realm_of(&user.name)),
            endpoint: cx.endpoints.get(&user.name),
            provisional: None,
            last_sent: None,
        }
    }

    /// The same user agent with the From tag of a dialog it set up earlier (a
    /// subscription refreshed by a later probe).
    pub fn with_tag(mut self, tag: &str) -> Uac<'a> {
        self.tag = tag.to_owned();
        self
    }

    /// The same user agent addressing `uri` (its To) instead of the recipient's address
    /// of record: a batched subscription to one's own URI or to a pool.
    pub fn with_to(mut self, uri: &str) -> Uac<'a> {
        self.to_uri = uri.to_owned();
        self
    }

    /// Our From tag.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// The recipient's address of record.
    pub fn to_uri(&self) -> &str {
        &self.to_uri
    }

    /// The dialog that `resp`, a 2xx to our request `tx`, sets up.
    pub fn dialog(&self, tx: &Transaction, resp: &Message) -> Result<Dialog, Failure> {
        Dialog::from_response(tx, &self.tag, resp)
            .map_err(|e| Failure::new(FailureReason::SipMalformed, format!("{}: {e}", self.to_uri)))
    }

    fn build(&self, req: &Req<'_>, tx: &Transaction, credentials: Option<(&str, &str)>) -> Vec<u8> {
        message::request(&RequestParams {
            uri: req.uri,
            transport: self.link.transport,
            sent_by: &self.link.sent_by,
            tx,
            from: (&self.from_uri, &self.tag),
            to: (&self.to_uri, req.to_tag),
            // Dialog-creating requests carry a Contact: where requests in the dialog go.
            contact_user: matches!(tx.method, "INVITE" | "SUBSCRIBE").then_some(self.user.aor.user.as_str()),
            route: req.route,
            credentials,
            extra: req.extra,
            body: req.body,
        })
    }

    /// Sends a request, answering one challenge; the final response and when the
    /// answered (last) request left. `tx` ends as the last transaction sent.
    pub async fn send(
        &mut self,
        req: &Req<'_>,
        tx: &mut Transaction,
        deadline: Instant,
    ) -> Result<(Message, Instant), Failure> {
        self.creds.begin();
        let mut retried = false;
        let mut signed_in_again = false;
        loop {
            let bytes = self.build(req, tx, self.creds.pending());
            let sent = Instant::now();
            self.provisional = None;
            self.last_sent = Some(sent);
            let resp = self.link.transaction_noting(&bytes, tx, deadline, &mut self.provisional).await?;
            let code = resp.status().unwrap_or(0);
            if tx.method == "INVITE" && code >= 300 {
                // A non-2xx final response to INVITE is acknowledged in its transaction.
                self.ack(req, tx, &resp, &tx.branch.clone()).await?;
            }
            if !matches!(code, 401 | 407) {
                return Ok((resp, sent));
            }
            let phrase = reason_phrase(&resp);
            if self.creds.is_ntlm() {
                // Requests on an NTLM association are signed by the link; a challenge
                // here means the pool dropped the association. The endpoint signs in
                // again (its refresh is challenged too and answered once), and the
                // request goes once more on the new association.
                let dropped = format!(
                    "{code} {phrase} to a signed {}: the server dropped the security association",
                    tx.method
                );
                if signed_in_again {
                    return Err(Failure::new(
                        FailureReason::AuthFailed,
                        format!("{dropped} again after {} signed in anew", self.user.name),
                    ));
                }
                signed_in_again = true;
                if !self.sign_in_again(deadline).await {
                    return Err(Failure::new(
                        FailureReason::AuthFailed,
                        format!("{dropped}, and signing in again did not succeed in time"),
                    ));
                }
                tracing::warn!(user = %self.user.name, "{dropped}; signed in again, sending once more");
                *tx = tx.next(tx.method);
                continue;
            }
            let answered = self.creds.answering();
            let may_follow = self.creds.answer(&resp, tx.method, req.uri)?;
            if answered && (!may_follow || retried) {
                return Err(Failure::new(
                    FailureReason::AuthFailed,
                    format!("{} credentials refused: {code} {phrase} again", self.user.name),
                ));
            }
            retried |= answered;
            *tx = tx.next(tx.method);
        }
    }

    /// Has the endpoint register again now (on the same link, so that the request can
    /// follow on it); whether it did before `deadline`.
    async fn sign_in_again(&self, deadline: Instant) -> bool {
        let Some(e) = &self.endpoint else { return false };
        e.refresh_now(deadline).await && e.link().is_some_and(|l| std::ptr::eq(&*l, self.link))
    }

    /// ACK for an INVITE's final response `resp` (`branch`: the INVITE's for a
    /// non-2xx, a new one for a 2xx).
    pub async fn ack(
        &self,
        req: &Req<'_>,
        invite: &Transaction,
        resp: &Message,
        branch: &str,
    ) -> Result<(), Failure> {
        let tx = Transaction {
            branch: branch.to_owned(),
            call_id: invite.call_id.clone(),
            cseq: invite.cseq,
            method: "ACK",
        };
        let to_tag = resp.header("to").and_then(message::tag_of);
        let ack = Req { uri: req.uri, to_tag, route: req.route, extra: "", body: None };
        self.link.send(&self.build(&ack, &tx, None)).await
    }
}

impl Uac<'_> {
    /// CANCEL for the INVITE `invite` sent as `req` that got a provisional response but
    /// no final one (RFC 3261 §9.1: its branch, CSeq number and route; no credentials).
    /// Sent once, not waited for: the probe has given up on the call.
    pub async fn cancel(&self, req: &Req<'_>, invite: &Transaction) -> Result<(), Failure> {
        let tx = Transaction {
            branch: invite.branch.clone(),
            call_id: invite.call_id.clone(),
            cseq: invite.cseq,
            method: "CANCEL",
        };
        let cancel = Req { uri: req.uri, to_tag: None, route: req.route, extra: "", body: None };
        self.link.send(&self.build(&cancel, &tx, None)).await
    }
}

/// `sip_status` for a final response that is not 2xx.
pub fn status_failure(method: &str, to: &str, resp: &Message) -> Failure {
    let code = resp.status().unwrap_or(0);
    let diag = resp.header("ms-diagnostics").map(|d| format!(" (ms-diagnostics: {d})")).unwrap_or_default();
    Failure::new(
        FailureReason::SipStatus,
        format!("{method} to {to} answered {code} {}{diag}", reason_phrase(resp)),
    )
}

/// Runs a delivery from one test user to another (`attempt`, which sets the final
/// status it got) and, when the recipient's pool answered `404`/`480` while the
/// recipient reads registered (its registrar lost the binding: a restart), registers
/// the recipient again at once and attempts once more, counting the loss on its
/// endpoint rather than as a route failure. The outcome: the delivery time on a pass,
/// the last final status either way, and the pools the two users were registered on
/// ([`PairRoute`]). A pair whose user is registered elsewhere than planned fails
/// `wrong_home`, whatever the delivery did: it is no evidence about the planned pools.
pub async fn deliver<F, Fut>(
    cx: &ProbeContext,
    sender: &User,
    recipient: &User,
    deadline: Instant,
    mut attempt: F,
) -> Outcome
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = (Result<Duration, Failure>, Option<u16>)>,
{
    let t = Instant::now();
    let before = homes(cx, sender, recipient);
    let (mut r, mut status) = attempt().await;
    if r.as_ref().is_err_and(|f| f.reason == FailureReason::SipStatus) {
        if let Some(e) = cx.endpoints.get(&recipient.name) {
            if e.lost_binding(status, deadline).await {
                (r, status) = attempt().await;
                if r.is_ok() {
                    e.binding_was_lost();
                }
            }
        }
    }
    between(cx, sender, recipient, before, t, r, status, &DELIVERY)
}

/// The outcome of a probe between `sender` and `recipient` that started at `t`, when
/// they were registered on `before` ([`homes`]): `measure` set to the time `r` gives on
/// a pass, the last final status either way, the pools it ran between ([`routed`]).
#[allow(clippy::too_many_arguments)]
pub fn between(
    cx: &ProbeContext,
    sender: &User,
    recipient: &User,
    before: Option<(String, String)>,
    t: Instant,
    r: Result<Duration, Failure>,
    status: Option<u16>,
    measure: &'static Measure,
) -> Outcome {
    let phases = vec![(Phase::Request, t.elapsed())];
    let mut o = match r {
        Ok(d) => {
            let mut o = Outcome::pass(phases);
            o.set(measure, d.as_secs_f64());
            o
        }
        Err(f) => Outcome::failed(f, phases),
    };
    if let Some(code) = status {
        o.set(&super::SIP_STATUS, f64::from(code));
    }
    routed(cx, sender, recipient, before, o)
}

/// The pools `sender` and `recipient` are registered on now, when both are.
pub fn homes(cx: &ProbeContext, sender: &User, recipient: &User) -> Option<(String, String)> {
    let home = |u: &User| {
        let s = cx.endpoints.get(&u.name)?.status();
        s.registered.then_some(s.home_pool).flatten()
    };
    Some((home(sender)?, home(recipient)?))
}

/// `o`, a probe between `sender` and `recipient`, with the pools they were registered
/// on when it started (`before`, from [`homes`]; when they were not both registered
/// yet, where they are now); failing `wrong_home` when those are not the planned ones.
/// Without both homes known, `o` goes without a route (the matrix does not count a pass
/// it cannot place).
pub fn routed(
    cx: &ProbeContext,
    sender: &User,
    recipient: &User,
    before: Option<(String, String)>,
    mut o: Outcome,
) -> Outcome {
    let Some((from, to)) = before.or_else(|| homes(cx, sender, recipient)) else { return o };
    let passed = o.result.is_ok();
    let mut misplaced: Vec<String> = Vec::new();
    for (u, h) in [(sender, &from), (recipient, &to)] {
        if u.pool != *h && !misplaced.iter().any(|m| m.starts_with(&format!("{} ", u.name))) {
            misplaced.push(format!("{} is registered on {h}, planned {}", u.name, u.pool));
        }
    }
    if !misplaced.is_empty() {
        let what = match &o.result {
            Ok(()) => "it passed".to_owned(),
            Err(f) => format!("it failed: {} ({})", f.reason.as_str(), f.detail),
        };
        o.result = Err(Failure::new(
            FailureReason::WrongHome,
            format!(
                "{}: the pair ran {from} \u{2192} {to}, not {} \u{2192} {} as planned ({what})",
                misplaced.join("; "),
                sender.pool,
                recipient.pool
            ),
        ));
    }
    o.route = Some(PairRoute { from_pool: from, to_pool: to, passed });
    o
}

/// `coexist_sip_delivery_seconds`: what [`deliver`] measures on a pass.
pub static DELIVERY: Measure = Measure {
    name: "coexist_sip_delivery_seconds",
    help: "Time from the sending test user's request leaving to the receiving user's endpoint getting it, in the last passing probe between users.",
    label: None,
};
