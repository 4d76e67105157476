//! A registered endpoint's life: register (one redirect, as the policy allows), hold
//! the registration — refreshed at half the granted expiry on the same connection, the
//! flow kept alive (RFC 5626 §4.4: CRLF pings on streams, OPTIONS where no pong can be
//! had) — and register again after a loss or a refusal with jittered exponential
//! backoff. What an endpoint is and answers is [`super::endpoint`].

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::endpoint::{Endpoint, Link, LinkRef, EXPIRES};
use super::link::LinkConnector;
use super::registration::{self, Binding, Plan};
use crate::failure::{Failure, FailureReason};
use crate::sip::message::{self, Transport};

/// The shortest refresh period, whatever the registrar grants.
const MIN_REFRESH: Duration = Duration::from_secs(1);
/// Keep-alive period (RFC 5626 §4.4.1 suggests 95-120 s for streams; probes need to
/// know sooner that a flow is dead): a CRLF ping on a stream this often, and where no
/// pong can be had (UDP, a registrar that does not answer pings) an OPTIONS to the
/// registrar. 1,000 endpoints send 33 a second.
const KEEPALIVE: Duration = Duration::from_secs(30);
/// How long a pong (or the OPTIONS keep-alive's response) may take (RFC 5626 §4.4.1).
const PONG_WAIT: Duration = Duration::from_secs(10);
/// Backoff after a failed registration: from this, doubling…
const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// …up to this.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A registration that held this long resets the backoff.
const HELD_LONG_ENOUGH: Duration = Duration::from_secs(60);
/// Time allowed to one registration attempt (connect, challenge, redirect).
const REGISTER_BUDGET: Duration = Duration::from_secs(10);
/// A registration in force: the link and the binding.
struct InForce {
    link: Arc<Link>,
    binding: Binding,
}

/// Connects to the planned pool and registers (one redirect, as the policy allows).
async fn register_fresh(endpoint: &Arc<Endpoint>) -> Result<InForce, Failure> {
    let spec = &endpoint.spec;
    let cx = endpoint.cx.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let plan = Plan {
        user: &spec.user,
        host: &spec.registrar,
        port: spec.user.port,
        pools: &spec.pools,
        expires: EXPIRES,
        deadline: Instant::now() + REGISTER_BUDGET,
    };
    let mut phases = Vec::new();
    let mut k = LinkConnector { endpoint, cx: &cx };
    let mut reg = registration::register(&mut k, &plan, &cx, &mut phases, &mut None).await?;
    reg.conn.armed = false;
    Ok(InForce { link: reg.conn.link.clone(), binding: reg.binding })
}

/// A random duration between half of `d` and `d` (backoff jitter: a thousand
/// endpoints refused at once do not come back at once).
fn jitter(d: Duration) -> Duration {
    let mut b = [0u8; 2];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    let frac = f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX);
    d.mul_f64(0.5 + 0.5 * frac)
}

/// The endpoint's life: register, hold (refresh), register again after a loss.
pub(super) async fn run(endpoint: Arc<Endpoint>, stop: CancellationToken) {
    let mut backoff = BACKOFF_MIN;
    loop {
        endpoint.status.lock().unwrap_or_else(|e| e.into_inner()).attempts += 1;
        let attempt = tokio::select! {
            _ = stop.cancelled() => return,
            r = register_fresh(&endpoint) => r,
        };
        let session = match attempt {
            Ok(s) => s,
            Err(f) => {
                endpoint.set_failed(f);
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(jitter(backoff)) => {}
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        // Signing on from the first moment: nothing the pool sends goes unchecked.
        session.link.set_association(session.binding.creds.association());
        let cx = endpoint.cx.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let home = registration::home_of(&endpoint.spec.pools, &session.binding.host, &cx).await;
        *endpoint.link.lock().unwrap_or_else(|e| e.into_inner()) = Some(session.link.clone());
        endpoint.set_registered(home, &session.binding.host, session.binding.granted);
        let since = Instant::now();
        match hold(&endpoint, session, &stop).await {
            None => return,
            Some(f) => endpoint.set_failed(f),
        }
        // A registration the connection loses at once does not reset the backoff: a
        // registrar that accepts and drops gets ever fewer attempts, not one a second.
        if since.elapsed() >= HELD_LONG_ENOUGH {
            backoff = BACKOFF_MIN;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(jitter(backoff)) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Whether the flow to the registrar is alive (RFC 5626 §4.4): a pong to a CRLF ping
/// on a stream whose registrar pongs, else any final response to an OPTIONS.
async fn keepalive(endpoint: &Endpoint, s: &InForce) -> Result<(), Failure> {
    let link = &s.link;
    if link.transport != Transport::Udp {
        let before = link.pongs.load(Ordering::Acquire);
        link.send(b"\r\n\r\n").await?;
        if before > 0 {
            // This registrar has answered pings (or sent CRLFs of its own): wait for the
            // pong; a missed one is not yet a dead flow (a registrar may pong only
            // sometimes): the OPTIONS below decides.
            let deadline = Instant::now() + PONG_WAIT;
            while Instant::now() < deadline && !link.is_closed() {
                if link.pongs.load(Ordering::Acquire) > before {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        // Give a first pong a moment: once one is seen, pings alone keep the flow.
        tokio::time::sleep(Duration::from_millis(200)).await;
        if link.pongs.load(Ordering::Acquire) > before {
            return Ok(());
        }
    }
    let user = &endpoint.spec.user;
    let mut tx = message::new_transaction();
    let domain_uri = format!("sip:{}", user.aor.domain);
    let request = message::request(&message::RequestParams {
        uri: &domain_uri,
        transport: link.transport,
        sent_by: &link.sent_by,
        tx: &tx,
        from: (&user.aor.uri(), &message::token(8)),
        to: (&domain_uri, None),
        contact_user: None,
        route: &[],
        credentials: None,
        extra: "",
        body: None,
    });
    tx.method = "OPTIONS";
    link.transaction(&request, &tx, Instant::now() + PONG_WAIT).await.map(|_| ()).map_err(|f| {
        Failure::new(f.reason, format!("keep-alive OPTIONS to {}: {}", s.binding.host, f.detail))
    })
}

/// Keeps a registration: keep-alives, refreshes at half the granted expiry (or at
/// once when a probe asks), until the link is lost, a refresh or keep-alive fails (the
/// failure), or `stop` (unregisters; `None`).
async fn hold(endpoint: &Arc<Endpoint>, mut s: InForce, stop: &CancellationToken) -> Option<Failure> {
    let user = &endpoint.spec.user;
    let lost = |f: Failure, s: &InForce| {
        s.link.close();
        Some(f)
    };
    loop {
        let refresh = (Duration::from_secs(u64::from(s.binding.granted)) / 2).max(MIN_REFRESH);
        let refresh_at = Instant::now() + refresh;
        let mut now_please = false;
        // Keep-alives until the refresh is due (or asked for).
        while refresh_at.saturating_duration_since(Instant::now()) > KEEPALIVE && !now_please {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = s.link.closed.cancelled() => break,
                _ = endpoint.refresh.notified() => now_please = true,
                _ = tokio::time::sleep(KEEPALIVE) => {
                    // A probe asking for a refresh does not wait for the keep-alive.
                    tokio::select! {
                        r = keepalive(endpoint, &s) => if let Err(f) = r {
                            return lost(f, &s);
                        },
                        _ = endpoint.refresh.notified() => now_please = true,
                    }
                }
            }
        }
        let mut lr = LinkRef { link: s.link.clone(), armed: false };
        let due = async {
            if !now_please {
                tokio::select! {
                    _ = tokio::time::sleep_until(refresh_at) => {}
                    _ = endpoint.refresh.notified() => {}
                }
            }
        };
        tokio::select! {
            _ = stop.cancelled() => {
                let deadline = Instant::now() + Duration::from_secs(1);
                let _ = registration::again(user, &mut lr, &mut s.binding, 0, deadline).await;
                s.link.close();
                return None;
            }
            _ = s.link.closed.cancelled() => {
                return Some(Failure::new(FailureReason::Io, format!("the connection to {} closed", s.binding.host)));
            }
            _ = due => {
                let deadline = Instant::now() + REGISTER_BUDGET;
                match registration::again(user, &mut lr, &mut s.binding, EXPIRES, deadline).await {
                    Ok(granted) => {
                        s.link.set_association(s.binding.creds.association());
                        endpoint.status.lock().unwrap_or_else(|e| e.into_inner()).expires = Some(granted);
                        endpoint.registrations.fetch_add(1, Ordering::AcqRel);
                    }
                    Err(f) => return lost(Failure::new(f.reason, format!("refresh at {}: {}", s.binding.host, f.detail)), &s),
                }
            }
        }
    }
}
