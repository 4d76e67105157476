//! Registered endpoints: for every test user a kind between users names, the agent
//! stays registered as a client does, so that other test users can reach it.
//!
//! One endpoint per user: one long-lived connection to the user's home pool (TLS or
//! TCP; over UDP a connected socket, whose local address is the Contact), registered
//! through [`super::registration`] (the redirect and authentication policy included).
//! Its life — refreshes at half the granted expiry on the same connection, RFC 5626
//! keep-alives, registering again after a loss or a refusal with jittered backoff — is
//! [`super::life`]. A probe that finds the recipient's binding gone (`404`/`480` for a
//! registered user) asks for an immediate refresh ([`Endpoint::refresh_now`]).
//!
//! Requests that reach the endpoint are answered as a client answers them: `200` to
//! MESSAGE, OPTIONS, INFO, BYE and CANCEL, `200` with a Contact (and the Record-Route
//! echoed) to an INVITE a probe of this agent waits for (`480` to any other: several
//! agents may register the same test user, and a forking registrar must set the session
//! up with the sender's agent; an INVITE with an audio offer — a call — rings, `180`, and
//! is answered `200` with the first codec of PCMU and PCMA it offers, `488` without
//! either), `200` to a NOTIFY of a subscription it holds
//! ([`super::subscription`]; `481` to any other), nothing to ACK, `404` for another
//! user, `405` to anything else. A probe waiting for a request (by its Call-ID and method) is told
//! when it arrived.
//!
//! Server transactions ([`crate::sip::server_tx`]): over UDP a retransmitted request
//! gets the answer already sent, kept 32 s. Every endpoint's kept answers and stream
//! buffers draw on one byte budget ([`crate::sip::budget`], 16 MiB by default).
//!
//! Hostile bytes: a stream message past 64 KiB, bytes that are not SIP, or a buffer the
//! budget refuses close the connection (there is no resynchronising a stream); the
//! endpoint registers again. A bad datagram is dropped.
//!
//! Endpoints live across configuration reloads: [`Endpoints::sync`] keeps those whose
//! user, registrar and TLS options did not change.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::conn::Dial;
pub use super::link::{Link, LinkRef};
use super::subscription::Subscriptions;
use super::ProbeContext;
use crate::failure::{Failure, FailureReason};
use crate::model::pool::Pool;
use crate::model::users::User;
use crate::net::tls::TlsOptions;
use crate::sip::budget::{self, Budget};
use crate::sip::message::{self, Message, StartLine, Transport};
use crate::sip::sdp::{audio_answer, im_sdp};
use crate::sip::server_tx::{Key, ServerTransactions};

/// Seconds an endpoint's REGISTER asks for (refreshed at half of what is granted).
pub const EXPIRES: u32 = 600;
/// Shortest time between two registrations a `404`/`480` forces
/// ([`Endpoint::lost_binding`]).
pub const FORCED_REFRESH_EVERY: Duration = Duration::from_secs(30);
/// How long an endpoint's phone rings (between its `180` and its `200` to a call):
/// long enough that the `180` is not overtaken on its way back through the proxies.
pub const RING: Duration = Duration::from_millis(20);
/// The waiters' key prefix of a probe waiting for a token in a MESSAGE body (the other
/// keys are `Call-ID method`, and no Call-ID of ours is `text`).
const TEXT_KEY: &str = "text ";
/// Probes waiting for a request at one endpoint, at most (one per probe in flight).
const MAX_WAITERS: usize = 4096;

/// What an endpoint is: the user, where it registers first, and how.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointSpec {
    /// The test user.
    pub user: User,
    /// The planned pool's FQDN.
    pub registrar: String,
    /// TLS options (the planned pool's minimum version).
    pub opts: TlsOptions,
    /// Every pool (to say where the user is homed).
    pub pools: Vec<Pool>,
}

/// An endpoint's registration, as the status shows it.
#[derive(Debug, Clone, Serialize)]
pub struct EndpointStatus {
    /// The user's name.
    pub user: String,
    /// Its address of record.
    pub uri: String,
    /// The pool the plan says it is homed on.
    pub pool: String,
    /// Registered now.
    pub registered: bool,
    /// The pool the accepting registrar belongs to (`unknown`: none), when registered.
    pub home_pool: Option<String>,
    /// The registrar host that accepted it.
    pub registrar: Option<String>,
    /// Seconds the registrar granted.
    pub expires: Option<u32>,
    /// Why the last attempt or the last registration failed.
    pub reason: Option<FailureReason>,
    /// The detail of that failure.
    pub detail: Option<String>,
    /// Unix time of the last change between registered and not.
    pub since: f64,
    /// Registration attempts made (refreshes not counted).
    pub attempts: u64,
    /// Times a probe found the registrar had lost this user's binding (a `404`/`480`
    /// while registered) and the endpoint registered again at once.
    pub bindings_lost: u64,
}

/// The registered endpoints of the running configuration.
pub struct Endpoints {
    running: Mutex<HashMap<String, Running>>,
    /// One budget for every endpoint's kept answers and stream buffers.
    budget: Arc<Budget>,
    server_tx: Arc<ServerTransactions>,
    /// Realms learned per user on its first success (pinned, [`crate::sip::policy`]).
    realms: Mutex<HashMap<String, String>>,
    next_scope: AtomicU64,
    /// Expires kept answers every second, traffic or not.
    sweeper: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Opens connections instead of the network (tests).
    dialer: Option<Arc<dyn Dial>>,
}

impl Default for Endpoints {
    fn default() -> Endpoints {
        Endpoints::with_budget(budget::DEFAULT_BYTES)
    }
}

impl std::fmt::Debug for Endpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoints").field("users", &self.statuses().len()).finish()
    }
}

struct Running {
    endpoint: Arc<Endpoint>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Endpoints {
    /// No endpoints yet; their buffers and kept answers together get `bytes`.
    pub fn with_budget(bytes: usize) -> Endpoints {
        let budget = Budget::new(bytes);
        Endpoints {
            running: Mutex::new(HashMap::new()),
            server_tx: Arc::new(ServerTransactions::new(budget.clone())),
            budget,
            realms: Mutex::new(HashMap::new()),
            next_scope: AtomicU64::new(1),
            sweeper: Mutex::new(None),
            dialer: None,
        }
    }

    /// Like [`Endpoints::with_budget`], with every connection opened by `dialer`
    /// instead of the network: an in-memory transport for tests ([`super::memory`]).
    pub fn with_dialer(bytes: usize, dialer: Arc<dyn Dial>) -> Endpoints {
        Endpoints { dialer: Some(dialer), ..Endpoints::with_budget(bytes) }
    }

    /// Sets the byte budget of every endpoint together (`agent.endpoint_memory_mib`),
    /// at start and on each reload.
    pub fn set_budget(&self, bytes: usize) {
        if self.budget.limit() != bytes {
            tracing::info!(bytes, "endpoint memory budget set");
            self.budget.set_limit(bytes);
        }
    }

    /// The in-memory dialer the endpoints use instead of the network, if any.
    #[cfg(test)]
    pub(super) fn dialer(&self) -> Option<Arc<dyn Dial>> {
        self.dialer.clone()
    }

    /// The realm pinned for user `name`, if any.
    pub fn realm_of(&self, name: &str) -> Option<String> {
        self.realms.lock().unwrap_or_else(|e| e.into_inner()).get(name).cloned()
    }

    /// Pins `realm` for user `name` when none is pinned yet.
    pub fn pin_realm(&self, name: &str, realm: &str) {
        let mut r = self.realms.lock().unwrap_or_else(|e| e.into_inner());
        if !r.contains_key(name) {
            tracing::info!(user = %name, realm = %realm, "realm pinned for the test user");
            r.insert(name.to_owned(), realm.to_owned());
        }
    }

    /// Makes the running endpoints those of `specs` (one per user): unchanged ones keep
    /// their registration, changed ones start over, others unregister and stop. New
    /// tasks run on `rt`; every endpoint uses `cx` from now on.
    pub fn sync(&self, specs: Vec<EndpointSpec>, cx: &ProbeContext, rt: &tokio::runtime::Handle) {
        {
            let mut sweeper = self.sweeper.lock().unwrap_or_else(|e| e.into_inner());
            if sweeper.is_none() && !specs.is_empty() {
                let st = self.server_tx.clone();
                *sweeper = Some(rt.spawn(async move {
                    loop {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        st.expire(Instant::now());
                    }
                }));
            }
        }
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let mut wanted: HashMap<String, EndpointSpec> = HashMap::new();
        for s in specs {
            wanted.entry(s.user.name.clone()).or_insert(s);
        }
        let mut realms = self.realms.lock().unwrap_or_else(|e| e.into_inner());
        running.retain(|name, r| {
            let keep = wanted.get(name).is_some_and(|s| *s == r.endpoint.spec);
            if !keep {
                r.stop.cancel();
                // A user whose plan changed (moved to another pool) learns its realm anew.
                realms.remove(name);
            }
            keep
        });
        drop(realms);
        for (name, spec) in wanted {
            if let Some(r) = running.get(&name) {
                *r.endpoint.cx.lock().unwrap_or_else(|e| e.into_inner()) = cx.clone();
                continue;
            }
            let scope = self.next_scope.fetch_add(1, Ordering::Relaxed);
            let shared = Shared {
                budget: self.budget.clone(),
                server_tx: self.server_tx.clone(),
                scope,
                dialer: self.dialer.clone(),
            };
            let endpoint = Arc::new(Endpoint::new(spec, cx.clone(), shared));
            let stop = CancellationToken::new();
            let task = rt.spawn(super::life::run(endpoint.clone(), stop.clone()));
            running.insert(name, Running { endpoint, stop, task });
        }
    }

    /// The endpoint of user `name`.
    pub fn get(&self, name: &str) -> Option<Arc<Endpoint>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner()).get(name).map(|r| r.endpoint.clone())
    }

    /// Every endpoint's status, by user name.
    pub fn statuses(&self) -> Vec<EndpointStatus> {
        let mut v: Vec<EndpointStatus> = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|r| r.endpoint.status())
            .collect();
        v.sort_by(|a, b| a.user.cmp(&b.user));
        v
    }

    /// The endpoint of `user`, once its first registration attempt is over (or
    /// `deadline`); `not_registered` when the agent keeps none for it.
    pub async fn ready(&self, user: &User, deadline: Instant) -> Result<Arc<Endpoint>, Failure> {
        let e = self.get(&user.name).ok_or_else(|| {
            Failure::new(FailureReason::NotRegistered, format!("{} has no endpoint in this agent", user.name))
        })?;
        e.first_attempt(deadline).await;
        Ok(e)
    }

    /// Waits until every endpoint has made its first attempt, or `deadline`.
    pub async fn settled(&self, deadline: Instant) {
        while Instant::now() < deadline
            && self.statuses().iter().any(|s| s.attempts == 0 || (!s.registered && s.reason.is_none()))
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Unregisters and stops every endpoint, waiting at most `within` for them.
    pub async fn stop_all(&self, within: Duration) {
        if let Some(t) = self.sweeper.lock().unwrap_or_else(|e| e.into_inner()).take() {
            t.abort();
        }
        let tasks: Vec<tokio::task::JoinHandle<()>> = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .map(|(_, r)| {
                r.stop.cancel();
                r.task
            })
            .collect();
        let _ = tokio::time::timeout(within, async {
            for t in tasks {
                let _ = t.await;
            }
        })
        .await;
    }
}

/// What every endpoint shares: the budget and the server transactions; `scope` keeps
/// this endpoint's transactions apart.
pub(super) struct Shared {
    pub(super) budget: Arc<Budget>,
    server_tx: Arc<ServerTransactions>,
    scope: u64,
    /// Opens connections instead of the network (tests).
    pub(super) dialer: Option<Arc<dyn Dial>>,
}

/// One test user's registered endpoint.
pub struct Endpoint {
    pub(super) spec: EndpointSpec,
    pub(super) cx: Mutex<ProbeContext>,
    pub(super) status: Mutex<EndpointStatus>,
    pub(super) link: Mutex<Option<Arc<Link>>>,
    waiters: Mutex<HashMap<String, oneshot::Sender<Instant>>>,
    pub(super) shared: Shared,
    /// Wakes the endpoint to refresh its registration now.
    pub(super) refresh: Notify,
    /// Successful registrations and refreshes so far.
    pub(super) registrations: AtomicU64,
    /// When a probe last made it register again at once ([`Endpoint::lost_binding`]).
    forced: Mutex<Option<Instant>>,
    /// The subscriptions it holds as a watcher; NOTIFYs are answered by them.
    pub subscriptions: Subscriptions,
    /// The user's own published state (RFC 3903): its entity tag and expiry. Held by a
    /// probe for its PUBLISH, so that two probes of one publisher modify the one
    /// publication in turn.
    pub publication: tokio::sync::Mutex<Publication>,
}

/// A test user's own published presence, as the agent last left it.
#[derive(Debug, Default)]
pub struct Publication {
    /// Standard SIMPLE: the publication's entity tag (RFC 3903) and until when it is
    /// kept alive.
    pub etag: Option<(String, Instant)>,
    /// Microsoft's dialect: the version of each category publication (category,
    /// instance, container) as the server last had it.
    pub versions: HashMap<String, u32>,
}

impl Endpoint {
    fn new(spec: EndpointSpec, cx: ProbeContext, shared: Shared) -> Endpoint {
        let status = EndpointStatus {
            user: spec.user.name.clone(),
            uri: spec.user.aor.uri(),
            pool: spec.user.pool.clone(),
            registered: false,
            home_pool: None,
            registrar: None,
            expires: None,
            reason: None,
            detail: None,
            since: unix_now(),
            attempts: 0,
            bindings_lost: 0,
        };
        Endpoint {
            spec,
            cx: Mutex::new(cx),
            status: Mutex::new(status),
            link: Mutex::new(None),
            waiters: Mutex::new(HashMap::new()),
            shared,
            refresh: Notify::new(),
            registrations: AtomicU64::new(0),
            forced: Mutex::new(None),
            subscriptions: Subscriptions::default(),
            publication: tokio::sync::Mutex::new(Publication::default()),
        }
    }

    /// The test user.
    pub fn user(&self) -> &User {
        &self.spec.user
    }

    /// The registration's status now.
    pub fn status(&self) -> EndpointStatus {
        self.status.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits (until `deadline`) while the endpoint has not finished its first
    /// registration attempt: a probe right after start or a reload is not failed for
    /// a registration still under way.
    pub async fn first_attempt(&self, deadline: Instant) {
        let settled = |s: &EndpointStatus| s.registered || s.reason.is_some();
        while !settled(&self.status()) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The registrar may have lost this user's binding (a probe got `404`/`480` for it
    /// while it reads registered): refresh the registration now and wait (until
    /// `deadline`) for the result. Whether the endpoint is registered afterwards.
    pub async fn refresh_now(&self, deadline: Instant) -> bool {
        let before = self.registrations.load(Ordering::Acquire);
        self.refresh.notify_one();
        while Instant::now() < deadline {
            if self.registrations.load(Ordering::Acquire) > before {
                return self.link().is_some();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// The link it is registered over, or `not_registered` with the last failure.
    pub fn registered_link(&self) -> Result<Arc<Link>, Failure> {
        self.link().ok_or_else(|| {
            let s = self.status();
            let why = match (s.reason, s.detail) {
                (Some(r), Some(d)) => format!(": {} ({d})", r.as_str()),
                _ => " yet".to_owned(),
            };
            Failure::new(
                FailureReason::NotRegistered,
                format!("{} ({}) is not registered{why}", s.user, s.uri),
            )
        })
    }

    /// After a request to this user was answered `status`: when that is `404`/`480`
    /// while the endpoint reads registered, the registrar has likely lost the binding
    /// (it restarted): registers again now and says whether the caller should try once
    /// more (then [`Endpoint::binding_was_lost`] if the retry passes).
    ///
    /// At most once per [`FORCED_REFRESH_EVERY`]: a `404` that is a real route failure
    /// (a proxy that cannot route to the user) does not make every probe of every pair
    /// register the recipient again.
    pub async fn lost_binding(&self, status: Option<u16>, deadline: Instant) -> bool {
        if !matches!(status, Some(404 | 480)) || self.link().is_none() {
            return false;
        }
        {
            let mut last = self.forced.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|t| t.elapsed() < FORCED_REFRESH_EVERY) {
                return false;
            }
            *last = Some(Instant::now());
        }
        self.refresh_now(deadline).await
    }

    /// Counts a binding the registrar had lost (a probe's retry after
    /// [`Endpoint::refresh_now`] passed), with a log line.
    pub fn binding_was_lost(&self) {
        let mut s = self.status.lock().unwrap_or_else(|e| e.into_inner());
        s.bindings_lost += 1;
        tracing::warn!(user = %s.user, registrar = ?s.registrar, "the registrar had lost the test user's binding; registered again");
    }

    /// The connection it is registered over, when registered.
    pub fn link(&self) -> Option<Arc<Link>> {
        if !self.status.lock().unwrap_or_else(|e| e.into_inner()).registered {
            return None;
        }
        self.link.lock().unwrap_or_else(|e| e.into_inner()).clone().filter(|l| !l.closed.is_cancelled())
    }

    /// Starts waiting for a request with this Call-ID and method to reach the endpoint;
    /// `None` when too many probes wait already. The wait ends when the guard drops.
    pub fn expect(self: &Arc<Self>, call_id: &str, method: &str) -> Option<Expect> {
        let key = format!("{call_id} {method}");
        let (tx, rx) = oneshot::channel();
        let mut w = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        if w.len() >= MAX_WAITERS {
            return None;
        }
        w.insert(key.clone(), tx);
        Some(Expect { endpoint: self.clone(), key, rx: Some(rx) })
    }

    /// Starts waiting for a MESSAGE whose body carries `token` (one relayed by a server
    /// that makes a request of its own, such as an IM conference); `None` when too many
    /// probes wait already.
    pub fn expect_text(self: &Arc<Self>, token: &str) -> Option<Expect> {
        let key = format!("{TEXT_KEY}{token}");
        let (tx, rx) = oneshot::channel();
        let mut w = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        if w.len() >= MAX_WAITERS {
            return None;
        }
        w.insert(key.clone(), tx);
        Some(Expect { endpoint: self.clone(), key, rx: Some(rx) })
    }

    /// Tells the probes waiting for a token in `body` that it arrived.
    fn notify_text(&self, body: &[u8]) {
        let mut w = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        let found: Vec<String> = w
            .keys()
            .filter_map(|k| k.strip_prefix(TEXT_KEY).filter(|t| contains(body, t)).map(|_| k.clone()))
            .collect();
        for k in found {
            if let Some(tx) = w.remove(&k) {
                let _ = tx.send(Instant::now());
            }
        }
    }

    /// Tells the probe waiting for this request that it arrived; whether one waited.
    fn notify(&self, call_id: &str, method: &str) -> bool {
        let key = format!("{call_id} {method}");
        match self.waiters.lock().unwrap_or_else(|e| e.into_inner()).remove(&key) {
            Some(tx) => {
                let _ = tx.send(Instant::now());
                true
            }
            None => false,
        }
    }

    pub(super) fn set_registered(&self, home: String, host: &str, expires: u32) {
        let mut s = self.status.lock().unwrap_or_else(|e| e.into_inner());
        if !s.registered || s.home_pool.as_deref() != Some(&home) {
            tracing::info!(user = %s.user, home_pool = %home, registrar = %host, expires, "test user registered");
            s.since = unix_now();
        }
        s.registered = true;
        s.home_pool = Some(home);
        s.registrar = Some(host.to_owned());
        s.expires = Some(expires);
        s.reason = None;
        s.detail = None;
        drop(s);
        self.registrations.fetch_add(1, Ordering::AcqRel);
    }

    pub(super) fn set_failed(&self, f: Failure) {
        let mut s = self.status.lock().unwrap_or_else(|e| e.into_inner());
        if s.registered || s.reason != Some(f.reason) {
            tracing::warn!(user = %s.user, reason = f.reason.as_str(), detail = %f.detail, "test user not registered");
        }
        if s.registered {
            s.since = unix_now();
        }
        s.registered = false;
        s.home_pool = None;
        s.expires = None;
        s.reason = Some(f.reason);
        s.detail = Some(f.detail);
        drop(s);
        // A probe waiting in `refresh_now` learns the outcome at once.
        self.registrations.fetch_add(1, Ordering::AcqRel);
    }

    /// The answers to a request that reached the endpoint, in order (a call: `180`,
    /// then `200`). Over UDP a retransmission (the same server transaction, RFC 3261
    /// §17.2.3) gets the final answer already sent.
    pub(super) fn answer(&self, req: &Message, link: &Link) -> Vec<Arc<[u8]>> {
        let fresh = |e: &Endpoint| {
            let (provisional, last) = match e.answer_fresh(req, link) {
                Some(a) => a,
                None => return (None, None),
            };
            (provisional.map(Arc::from), Some(Arc::<[u8]>::from(last)))
        };
        if link.transport != Transport::Udp
            || matches!(&req.start, StartLine::Request { method, .. } if method == "ACK")
        {
            let (p, f) = fresh(self);
            return p.into_iter().chain(f).collect();
        }
        let Some(key) = Key::of(req, self.shared.scope) else { return Vec::new() };
        let now = Instant::now();
        if let Some(kept) = self.shared.server_tx.answered(&key, now) {
            return vec![kept];
        }
        let (p, f) = fresh(self);
        if let Some(f) = &f {
            self.shared.server_tx.keep(key, f, now);
        }
        p.into_iter().chain(f).collect()
    }

    /// The answer to a request seen for the first time (and tells a waiting probe): a
    /// provisional response to send first, if any, and the final one.
    fn answer_fresh(&self, req: &Message, link: &Link) -> Option<(Option<Vec<u8>>, Vec<u8>)> {
        let StartLine::Request { method, uri } = &req.start else { return None };
        if method == "ACK" {
            return None;
        }
        let fin = |r: Vec<u8>| Some((None, r));
        let tag = message::token(8);
        let ours = message::uri_user(message::addr_uri(uri)) == Some(self.spec.user.aor.user.as_str());
        if !ours {
            return fin(message::reply(req, 404, "Not Found", &tag, "", None));
        }
        let call_id = req.header("call-id").unwrap_or("").trim();
        match method.as_str() {
            "NOTIFY" => {
                if self.subscriptions.notify(req) {
                    fin(message::reply(req, 200, "OK", &tag, "", None))
                } else {
                    fin(message::reply(req, 481, "Subscription Does Not Exist", &tag, "", None))
                }
            }
            "MESSAGE" | "OPTIONS" | "INFO" | "BYE" | "CANCEL" => {
                self.notify(call_id, method);
                if method == "MESSAGE" {
                    self.notify_text(&req.body);
                }
                fin(message::reply(req, 200, "OK", &tag, "", None))
            }
            "INVITE" => {
                // Only sessions this agent's probes open are accepted. The same test user
                // may be registered by several agents (one per site): the registrar then
                // forks an INVITE to every one, and the session must be set up with the
                // endpoint whose agent sent it, or its in-dialog MESSAGE goes elsewhere.
                // 480 (not 6xx) lets a forking proxy wait for the other branches.
                if !self.notify(call_id, method) {
                    return fin(message::reply(req, 480, "Temporarily Unavailable", &tag, "", None));
                }
                let contact = format!(
                    "Contact: <sip:{}@{}{}>\r\n",
                    self.spec.user.aor.user,
                    link.sent_by,
                    message::transport_param(link.transport)
                );
                if req.body.windows(8).any(|w| w == b"m=audio ") {
                    // A call: the phone rings, then answers with the codec it shares.
                    let Some(answer) = audio_answer(&req.body, &link.sent_by) else {
                        return fin(message::reply(req, 488, "Not Acceptable Here", &tag, "", None));
                    };
                    let ringing = message::reply(req, 180, "Ringing", &tag, &contact, None);
                    let ok =
                        message::reply(req, 200, "OK", &tag, &contact, Some(("application/sdp", &answer)));
                    return Some((Some(ringing), ok));
                }
                fin(message::reply(
                    req,
                    200,
                    "OK",
                    &tag,
                    &contact,
                    Some(("application/sdp", &im_sdp(&link.sent_by))),
                ))
            }
            _ => fin(message::reply(
                req,
                405,
                "Method Not Allowed",
                &tag,
                "Allow: INVITE, ACK, BYE, CANCEL, MESSAGE, OPTIONS, INFO, NOTIFY\r\n",
                None,
            )),
        }
    }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// A probe waiting for a request at an endpoint.
pub struct Expect {
    endpoint: Arc<Endpoint>,
    key: String,
    rx: Option<oneshot::Receiver<Instant>>,
}

impl Expect {
    /// When the request arrived, waiting until `deadline`.
    pub async fn arrived(&mut self, deadline: Instant) -> Option<Instant> {
        let rx = self.rx.as_mut()?;
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(t)) => {
                self.rx = None;
                Some(t)
            }
            _ => None,
        }
    }
}

impl Drop for Expect {
    fn drop(&mut self) {
        self.endpoint.waiters.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.key);
    }
}
