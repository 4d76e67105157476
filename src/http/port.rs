//! The agent's HTTP port: accepting, TLS handshakes and the limits that keep the port
//! from taking what the probes need.
//!
//! What it does not do: routing and the endpoints themselves ([`super::routes`]), or
//! read the web configuration ([`super::web`]).
//!
//! - **Bounded serving**: at most [`Limits::connections`] connections at once and
//!   [`PER_CLIENT`] from one address (more are closed at once, never queued), request
//!   headers within [`HEADER_TIMEOUT`], TLS
//!   handshakes within [`HANDSHAKE_TIMEOUT`], a connection lives at most
//!   [`CONNECTION_LIFETIME`], request bodies are refused beyond [`MAX_BODY`].

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::web::{san_allowed, TlsServer, WebConfig};

/// Time a client has to send a request's headers (also while a kept-alive connection
/// waits for its next request).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a client has to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest life of one connection; a scraper reconnects.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(300);
/// Largest request header block accepted (hyper's read buffer is capped near it too).
pub const MAX_HEADERS: usize = 16 * 1024;
/// Largest request body accepted (only `POST /-/reload` takes one, and ignores it).
pub const MAX_BODY: usize = 16 * 1024;

/// Limits of the port, from the descriptor budget.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once.
    pub connections: usize,
    /// Connections served at once from one client address, so that one host's slow or
    /// idle connections cannot lock out Prometheus and the health checks.
    pub per_client: usize,
}

impl Limits {
    /// Raises the soft descriptor limit to the hard one, then leaves `probes + 64`
    /// descriptors to the probes (`agent.concurrency`) and the rest, at most 1,024 and
    /// at least 16, to HTTP connections. Logs a warning when the budget is tight.
    pub fn from_descriptors(probes: usize) -> Limits {
        let nofile = raise_nofile();
        let reserved = probes.saturating_add(64);
        let left = nofile.saturating_sub(reserved);
        let connections = left.clamp(16, 1024);
        if left < 16 {
            tracing::warn!(nofile, concurrency = probes,
                "the descriptor limit leaves almost nothing beside agent.concurrency probes; raise LimitNOFILE or lower agent.concurrency");
        }
        Limits { connections, per_client: PER_CLIENT.min(connections) }
    }
}

/// Default cap of connections from one client address.
pub const PER_CLIENT: usize = 64;

/// The soft RLIMIT_NOFILE after raising it to the hard limit.
fn raise_nofile() -> usize {
    // SAFETY: getrlimit/setrlimit write only the struct passed.
    unsafe {
        let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return 1024;
        }
        if r.rlim_cur < r.rlim_max {
            let raised = libc::rlimit { rlim_cur: r.rlim_max, rlim_max: r.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                r.rlim_cur = r.rlim_max;
            }
        }
        usize::try_from(r.rlim_cur).unwrap_or(usize::MAX)
    }
}

/// Serves `router` on `listener` until `shutdown`, with TLS and limits from `web`.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    web: Option<WebConfig>,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.connections));
    let per_client: Arc<Mutex<HashMap<std::net::IpAddr, usize>>> = Arc::new(Mutex::new(HashMap::new()));
    let conns = Connections::default();
    let tls = web.as_ref().and_then(|w| w.tls.clone());
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Some(client) = ClientSlot::take(&per_client, peer.ip(), limits.per_client) else {
            drop(tcp);
            continue;
        };
        let permit = match permits.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            // At the cap: the oldest idle connection (no request in progress, none
            // started for a while: a slow or parked client) makes room. Without one,
            // close at once: a queued connection would hold a descriptor.
            Err(_) if conns.evict_idle() => None,
            Err(_) => {
                drop(tcp);
                continue;
            }
        };
        let (router, tls, shutdown, permits, conns) =
            (router.clone(), tls.clone(), shutdown.clone(), permits.clone(), conns.clone());
        tokio::spawn(async move {
            let permit = match permit {
                Some(p) => p,
                // The evicted connection releases its permit as it closes.
                None => match tokio::time::timeout(Duration::from_secs(1), permits.acquire_owned()).await {
                    Ok(Ok(p)) => p,
                    _ => return,
                },
            };
            let (id, activity, cancel) = conns.add();
            let _slots = (permit, client, Registered(conns, id));
            let _ = tcp.set_nodelay(true);
            let serve = async move {
                match tls {
                    None => connection(tcp, router, shutdown, activity).await,
                    Some(tls) => {
                        let Some(stream) = tls_accept(tcp, &tls).await else { return };
                        connection(stream, router, shutdown, activity).await
                    }
                }
            };
            // Evicted: the connection had no request in progress, so it is dropped at
            // once (a graceful close would wait for a slow client's headers).
            tokio::select! {
                _ = serve => {}
                _ = cancel.cancelled() => {}
            }
        });
    }
}

/// What a connection is doing, for eviction: requests in progress, when the last one
/// started, when it was accepted.
#[derive(Debug)]
pub struct Activity {
    in_flight: std::sync::atomic::AtomicUsize,
    /// Milliseconds after `accepted` when the last request started; 0: none yet.
    last_request_ms: std::sync::atomic::AtomicU64,
    accepted: Instant,
}

/// A connection idle this long (no request started since, none in progress) may be
/// closed to make room for a new one when the port is full.
pub const EVICTABLE_AFTER: Duration = Duration::from_secs(2);

/// A connection's activity and the token that closes it.
type Tracked = (Arc<Activity>, CancellationToken);

/// The open connections of the port.
#[derive(Clone, Default)]
struct Connections {
    inner: Arc<Mutex<(u64, BTreeMap<u64, Tracked>)>>,
}

impl Connections {
    fn add(&self) -> (u64, Arc<Activity>, CancellationToken) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.0 += 1;
        let id = g.0;
        let a = Arc::new(Activity {
            in_flight: std::sync::atomic::AtomicUsize::new(0),
            last_request_ms: std::sync::atomic::AtomicU64::new(0),
            accepted: Instant::now(),
        });
        let c = CancellationToken::new();
        g.1.insert(id, (a.clone(), c.clone()));
        (id, a, c)
    }

    /// Closes the connection idle longest; false when none is idle.
    fn evict_idle(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let victim =
            g.1.values()
                .filter(|(a, c)| !c.is_cancelled() && a.in_flight.load(Relaxed) == 0)
                .map(|(a, c)| {
                    let last = a.accepted + Duration::from_millis(a.last_request_ms.load(Relaxed));
                    (now.saturating_duration_since(last), c)
                })
                .filter(|(idle, _)| *idle >= EVICTABLE_AFTER)
                .max_by_key(|(idle, _)| *idle);
        match victim {
            Some((_, c)) => {
                c.cancel();
                true
            }
            None => false,
        }
    }
}

/// Removes a connection from [`Connections`] when it ends.
struct Registered(Connections, u64);

impl Drop for Registered {
    fn drop(&mut self) {
        self.0.inner.lock().unwrap_or_else(|e| e.into_inner()).1.remove(&self.1);
    }
}

/// One connection counted against its client address; released on drop.
struct ClientSlot {
    map: Arc<Mutex<HashMap<std::net::IpAddr, usize>>>,
    ip: std::net::IpAddr,
}

impl ClientSlot {
    fn take(
        map: &Arc<Mutex<HashMap<std::net::IpAddr, usize>>>,
        ip: std::net::IpAddr,
        cap: usize,
    ) -> Option<ClientSlot> {
        let mut m = map.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(ip).or_insert(0);
        if *n >= cap {
            return None;
        }
        *n += 1;
        Some(ClientSlot { map: map.clone(), ip })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

/// The TLS handshake, within [`HANDSHAKE_TIMEOUT`]. Plain HTTP gets a 400, as Go's
/// servers answer it; a client certificate without an allowed SAN ends the connection.
async fn tls_accept(
    tcp: tokio::net::TcpStream,
    tls: &TlsServer,
) -> Option<tokio_rustls::server::TlsStream<tokio::net::TcpStream>> {
    let mut first = [0u8; 1];
    let peeked = tokio::time::timeout(HANDSHAKE_TIMEOUT, tcp.peek(&mut first)).await;
    if !matches!(peeked, Ok(Ok(1))) {
        return None;
    }
    if first[0] != 0x16 {
        let mut tcp = tcp;
        let _ = tcp
            .write_all(b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n")
            .await;
        let _ = tcp.shutdown().await;
        return None;
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.config());
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake on the web port failed");
            return None;
        }
        Err(_) => return None,
    };
    let allowed = tls.allowed_sans();
    if !allowed.is_empty() {
        let ok = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .is_some_and(|c| san_allowed(c, allowed));
        if !ok {
            tracing::debug!("client certificate has no SAN in client_allowed_sans");
            return None;
        }
    }
    Some(stream)
}

async fn connection<S>(io: S, router: axum::Router, shutdown: CancellationToken, activity: Arc<Activity>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use std::sync::atomic::Ordering::Relaxed;
    use tower::ServiceExt;
    let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
        let (router, activity) = (router.clone(), activity.clone());
        activity.in_flight.fetch_add(1, Relaxed);
        activity.last_request_ms.store((activity.accepted.elapsed().as_millis() as u64).max(1), Relaxed);
        async move {
            let r = router.oneshot(req.map(Body::new)).await;
            activity.in_flight.fetch_sub(1, Relaxed);
            r
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(64 * 1024);
    let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(io), service);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = tokio::time::sleep(CONNECTION_LIFETIME) => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(HEADER_TIMEOUT, conn).await;
        }
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_millis(500), conn).await;
        }
    }
}
