//! Registered endpoints: for every test user a kind between users names, the agent
//! stays registered as a client does, so that other test users can reach it.
//!
//! One endpoint per user: one long-lived connection to the user's home pool (TLS or
//! TCP; over UDP a connected socket, whose local address is the Contact), registered
//! through [`super::registration`] (the redirect and authentication policy included),
//! refreshed at half the granted expiry on the same connection, registered again after
//! a loss or a refusal with jittered exponential backoff (1 s doubling to 30 s, reset
//! only once a registration has held for a minute).
//!
//! Keep-alives (RFC 5626 §4.4): on a stream a CRLF ping every 30 s, answered by a pong
//! within 10 s where the registrar has ever sent one. Over UDP, on streams whose
//! registrar never pongs, and when a pong does not come, an OPTIONS to the registrar
//! must get a final response (any code) within 10 s, else the flow is dead. A dead flow is closed
//! and the user registered again. A probe that finds the recipient's binding gone
//! (`404`/`480` for a registered user) asks for an immediate refresh
//! ([`Endpoint::refresh_now`]).
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
use super::link::LinkConnector;
pub use super::link::{Link, LinkRef};
use super::registration::{self, Binding, Plan};
use super::subscription::Subscriptions;
use super::ProbeContext;
use crate::failure::{Failure, FailureReason};
use crate::model::pool::Pool;
use crate::model::users::User;
use crate::net::tls::TlsOptions;
use crate::sip::budget::{self, Budget};
use crate::sip::message::{self, Message, StartLine, Transport};
use crate::sip::server_tx::{Key, ServerTransactions};

/// Seconds an endpoint's REGISTER asks for (refreshed at half of what is granted).
pub const EXPIRES: u32 = 600;
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
/// Shortest time between two registrations a `404`/`480` forces
/// ([`Endpoint::lost_binding`]).
pub const FORCED_REFRESH_EVERY: Duration = Duration::from_secs(30);
/// Time allowed to one registration attempt (connect, challenge, redirect).
const REGISTER_BUDGET: Duration = Duration::from_secs(10);
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
            let task = rt.spawn(run(endpoint.clone(), stop.clone()));
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
    cx: Mutex<ProbeContext>,
    status: Mutex<EndpointStatus>,
    link: Mutex<Option<Arc<Link>>>,
    waiters: Mutex<HashMap<String, oneshot::Sender<Instant>>>,
    pub(super) shared: Shared,
    /// Wakes the endpoint to refresh its registration now.
    refresh: Notify,
    /// Successful registrations and refreshes so far.
    registrations: AtomicU64,
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

    fn set_registered(&self, home: String, host: &str, expires: u32) {
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

    fn set_failed(&self, f: Failure) {
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

/// The audio codecs a call offers and an endpoint answers with: (payload type, name).
pub const AUDIO_CODECS: [(u8, &str); 2] = [(0, "PCMU/8000"), (8, "PCMA/8000")];

/// A call's SDP offer from `sent_by` (RFC 3264, as a desk phone makes one: PCMU, PCMA and
/// telephone events); no media flows through it (the port is not listened on).
pub fn audio_offer(sent_by: &str) -> Vec<u8> {
    audio_sdp(sent_by, &[0, 8])
}

/// The answer an endpoint makes to `offer`: the first of [`AUDIO_CODECS`] the offer
/// has; `None` when it has none.
pub fn audio_answer(offer: &[u8], sent_by: &str) -> Option<Vec<u8>> {
    let pt = common_codec(offer)?;
    Some(audio_sdp(sent_by, &[pt]))
}

/// The first of [`AUDIO_CODECS`] that the `m=audio` line of `sdp` lists.
pub fn common_codec(sdp: &[u8]) -> Option<u8> {
    let text = std::str::from_utf8(sdp).ok()?;
    let m = text.lines().find_map(|l| l.trim_end().strip_prefix("m=audio "))?;
    let listed: Vec<&str> = m.split_whitespace().skip(2).collect();
    AUDIO_CODECS.iter().map(|(pt, _)| *pt).find(|pt| listed.contains(&pt.to_string().as_str()))
}

fn audio_sdp(sent_by: &str, pts: &[u8]) -> Vec<u8> {
    let host = sent_by.rsplit_once(':').map_or(sent_by, |(h, _)| h).trim_matches(['[', ']']);
    let family = if host.contains(':') { "IP6" } else { "IP4" };
    let session = message::token(8).bytes().fold(0u32, |a, b| a.wrapping_mul(31).wrapping_add(u32::from(b)));
    let list: Vec<String> = pts.iter().map(u8::to_string).collect();
    let mut s = format!(
        "v=0\r\no=- {session} {session} IN {family} {host}\r\ns=coexistd call\r\nc=IN {family} {host}\r\nt=0 0\r\n\
         m=audio 49170 RTP/AVP {} 101\r\n",
        list.join(" ")
    );
    for pt in pts {
        if let Some((_, name)) = AUDIO_CODECS.iter().find(|(p, _)| p == pt) {
            s.push_str(&format!("a=rtpmap:{pt} {name}\r\n"));
        }
    }
    s.push_str("a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\na=sendrecv\r\n");
    s.into_bytes()
}

/// The session description of an IM session (RFC 4975-style, as Lync and OCS clients
/// offer for instant messaging): no media flows through it here.
pub fn im_sdp(sent_by: &str) -> Vec<u8> {
    let host = sent_by.rsplit_once(':').map_or(sent_by, |(h, _)| h).trim_matches(['[', ']']);
    let family = if host.contains(':') { "IP6" } else { "IP4" };
    format!(
        "v=0\r\no=- 0 0 IN {family} {host}\r\ns=session\r\nc=IN {family} {host}\r\nt=0 0\r\n\
         m=message 5060 sip null\r\na=accept-types:text/plain\r\n"
    )
    .into_bytes()
}

/// A registration in force: the link and the binding.
struct InForce {
    link: Arc<Link>,
    binding: Binding,
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
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
    let mut reg = registration::register(&mut k, &plan, &cx, &mut phases).await.map_err(|o| {
        o.result.err().unwrap_or_else(|| Failure::new(FailureReason::Internal, "registration failed"))
    })?;
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
async fn run(endpoint: Arc<Endpoint>, stop: CancellationToken) {
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
