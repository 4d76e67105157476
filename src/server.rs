//! The HTTP endpoints on `agent.listen`.
//!
//! | path | |
//! |---|---|
//! | `/metrics` | Prometheus text 0.0.4; OpenMetrics when `Accept` asks for it |
//! | `/` | status page |
//! | `/api/v1/status` | the same as JSON |
//! | `/-/healthy` | 200 while the process serves |
//! | `/-/ready` | 200 once every instance has run once and none is stale, 503 otherwise |
//! | `POST /-/reload` | reload the configuration; 200, or 500 with the error |

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::sync::{mpsc, oneshot};

use crate::report::Report;
use crate::state::Store;

/// A reload request: the reply says whether the new configuration was taken.
pub type ReloadRequest = oneshot::Sender<Result<(), String>>;

#[derive(Clone)]
struct App {
    store: Arc<Store>,
    reload: mpsc::Sender<ReloadRequest>,
    render: Arc<Render>,
}

/// Scrapes and status requests are served from one encoder at a time, with the result
/// shared by every request that arrives within [`REUSE`]: fifty scrapers cost one
/// encoding, not fifty. Requests beyond [`MAX_WAITING`] get 503 at once, so a storm
/// queues no unbounded work and memory.
struct Render {
    /// One encoding at a time.
    encoder: tokio::sync::Semaphore,
    /// Requests waiting for the encoder or being encoded for.
    waiting: AtomicUsize,
    /// The last `/metrics` body per format (text, OpenMetrics) and when it was made.
    cache: Mutex<[Option<Cached>; 2]>,
}

/// An encoded `/metrics` body.
struct Cached {
    /// When it was encoded.
    at: Instant,
    /// The store's configuration version it shows.
    version: u64,
    /// The body.
    chunks: Arc<Vec<Bytes>>,
}

/// How long an encoded `/metrics` body is served again. Prometheus servers of an HA
/// pair, and a burst of dashboards, scrape within this window of each other.
pub const REUSE: Duration = Duration::from_secs(1);

/// Requests that may wait for the encoder; the next gets 503.
pub const MAX_WAITING: usize = 64;

/// The router; `reload` reaches the agent's control loop.
pub fn router(store: Arc<Store>, reload: mpsc::Sender<ReloadRequest>) -> Router {
    let render = Arc::new(Render {
        encoder: tokio::sync::Semaphore::new(1),
        waiting: AtomicUsize::new(0),
        cache: Mutex::new([None, None]),
    });
    Router::new()
        .route("/metrics", get(metrics))
        .route("/", get(status_page))
        .route("/api/v1/status", get(status_json))
        .route("/-/healthy", get(|| async { "Healthy.\n" }))
        .route("/-/ready", get(ready))
        .route("/-/reload", post(reload_config))
        .with_state(App { store, reload, render })
}

/// Counts a waiting request; `None` (answer 503) when too many wait.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn enter(counter: &'a AtomicUsize) -> Option<Waiting<'a>> {
        if counter.fetch_add(1, Ordering::AcqRel) >= MAX_WAITING {
            counter.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Waiting(counter))
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn busy() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, "1")],
        "Too many concurrent requests for metrics or status; retry.\n",
    )
        .into_response()
}

/// Runs `work` on the blocking pool under the encoder permit.
async fn render<T: Send + 'static>(app: &App, work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let _waiting = Waiting::enter(&app.render.waiting)?;
    let _permit = app.render.encoder.acquire().await.ok()?;
    tokio::task::spawn_blocking(work).await.ok()
}

async fn metrics(State(app): State<App>, headers: HeaderMap) -> Response {
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    let ct = if openmetrics {
        crate::metrics::OPENMETRICS_CONTENT_TYPE
    } else {
        crate::metrics::TEXT_CONTENT_TYPE
    };
    let chunks = match metrics_body(&app, openmetrics).await {
        Some(c) => c,
        None => return busy(),
    };
    let body = futures_util::stream::iter(
        (0..chunks.len()).map(move |i| Ok::<_, std::convert::Infallible>(chunks[i].clone())),
    );
    ([(header::CONTENT_TYPE, ct)], Body::from_stream(body)).into_response()
}

/// The encoded body: the shared one when it is fresh, else a new encoding (one at a
/// time, on the blocking pool: thousands of instances take milliseconds of CPU).
async fn metrics_body(app: &App, openmetrics: bool) -> Option<Arc<Vec<Bytes>>> {
    let fresh = |render: &Render| {
        let cache = render.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache[openmetrics as usize]
            .as_ref()
            .filter(|c| c.at.elapsed() < REUSE && c.version == app.store.version())
            .map(|c| c.chunks.clone())
    };
    if let Some(b) = fresh(&app.render) {
        return Some(b);
    }
    let _waiting = Waiting::enter(&app.render.waiting)?;
    let _permit = app.render.encoder.acquire().await.ok()?;
    // Another request may have encoded while this one waited.
    if let Some(b) = fresh(&app.render) {
        return Some(b);
    }
    let store = app.store.clone();
    let version = store.version();
    let chunks = tokio::task::spawn_blocking(move || {
        let mut chunks = Vec::new();
        let r = crate::metrics::encode_chunks(&store, openmetrics, |chunk| {
            chunks.push(Bytes::from(chunk));
            true
        });
        if r.is_err() {
            tracing::error!("metrics encoding failed");
        }
        Arc::new(chunks)
    })
    .await
    .ok()?;
    let at = Instant::now();
    app.render.cache.lock().unwrap_or_else(|e| e.into_inner())[openmetrics as usize] =
        Some(Cached { at, version, chunks: chunks.clone() });
    // Drop the body once it is no longer fresh and give the memory back: after a
    // burst, the agent returns to its idle footprint.
    let render = app.render.clone();
    tokio::spawn(async move {
        tokio::time::sleep(REUSE).await;
        let dropped = {
            let mut cache = render.cache.lock().unwrap_or_else(|e| e.into_inner());
            let slot = &mut cache[openmetrics as usize];
            if slot.as_ref().is_some_and(|c| c.at == at) {
                slot.take()
            } else {
                None
            }
        };
        if dropped.is_some() {
            drop(dropped);
            let _ = tokio::task::spawn_blocking(crate::agent::release_memory).await;
        }
    });
    Some(chunks)
}

fn report(store: &Store) -> Report {
    let g = store.current();
    let units = crate::state::units(&g.slots);
    Report::build(&g.config, &g.slots, &units)
}

async fn status_page(State(app): State<App>) -> Response {
    let store = app.store.clone();
    match render(&app, move || report(&store).html()).await {
        Some(html) => Html(html).into_response(),
        None => busy(),
    }
}

async fn status_json(State(app): State<App>) -> Response {
    let store = app.store.clone();
    let v = render(&app, move || {
        let r = report(&store);
        let mut v = serde_json::to_value(&r).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.insert("ready".into(), store.is_ready().into());
        }
        v
    })
    .await;
    match v {
        Some(v) => Json(v).into_response(),
        None => busy(),
    }
}

async fn ready(State(app): State<App>) -> Response {
    if !app.store.is_ready() {
        return (StatusCode::SERVICE_UNAVAILABLE, "Not ready: the first round of probes has not finished.\n")
            .into_response();
    }
    let stale = app.store.stale_instances();
    if stale > 0 {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "Not ready: {stale} check instances have not run for 3 intervals (see /api/v1/status).\n"
            ),
        )
            .into_response();
    }
    (StatusCode::OK, "Ready.\n").into_response()
}

async fn reload_config(State(app): State<App>) -> Response {
    let (tx, rx) = oneshot::channel();
    if app.reload.send(tx).await.is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    match rx.await {
        Ok(Ok(())) => (StatusCode::OK, "Configuration reloaded.\n").into_response(),
        Ok(Err(e)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("Reload rejected, previous configuration kept: {e}\n"),
        )
            .into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response(),
    }
}
