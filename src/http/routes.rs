//! The HTTP endpoints on `agent.listen`.
//!
//! | path | |
//! |---|---|
//! | `/metrics` | Prometheus text 0.0.4; OpenMetrics when `Accept` asks for it |
//! | `/` | status page |
//! | `/api/v1/status` | the same as JSON |
//! | `/api/v1/events` | the last 500 state changes (pass to fail, fail to pass), newest first, and what `demo --faults` announced (oldest first), as JSON |
//! | `/api/v1/trace?check=C[&pool=P][&format=json]` | runs check C (of pool P) once now and shows each step: DNS, connects, TLS, SIP and HTTP messages; one trace at a time (503 while one runs); text, or JSON |
//! | `/-/healthy` | 200 while the process serves |
//! | `/-/ready` | 200 once every instance has run once and none is stale, 503 otherwise |
//! | `POST /-/reload` | with `--web.enable-lifecycle`: reload the configuration; 200, or 500 (the reason is logged); 403 without the flag or from another origin |

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio::sync::{mpsc, oneshot};

use crate::output::views::StatusView;
use crate::run::results::Store;

/// A reload request: the reply says whether the new configuration was taken.
pub type ReloadRequest = oneshot::Sender<Result<(), String>>;

#[derive(Clone)]
struct App {
    store: Arc<Store>,
    reload: mpsc::Sender<ReloadRequest>,
    render: Arc<Render>,
    /// `--web.enable-lifecycle`: `POST /-/reload` is served.
    lifecycle: bool,
    /// Runs `/api/v1/trace`.
    tracer: Arc<crate::run::trace_run::Tracer>,
    /// Where the metrics are (`--web.telemetry-path`): the status page links there.
    metrics_path: Arc<str>,
}

/// How the endpoints are exposed (`--web.*` flags).
#[derive(Debug, Clone)]
pub struct WebOptions {
    /// `--web.enable-lifecycle`: allow `POST /-/reload` (SIGHUP always works).
    pub lifecycle: bool,
    /// `--web.config.file`, loaded.
    pub config: Option<crate::http::web::WebConfig>,
    /// `--web.listen-address`: overrides `agent.listen`.
    pub listen: Option<std::net::SocketAddr>,
    /// `--web.telemetry-path`: where the metrics are served (default `/metrics`).
    pub telemetry_path: String,
}

impl Default for WebOptions {
    fn default() -> Self {
        WebOptions { lifecycle: false, config: None, listen: None, telemetry_path: "/metrics".into() }
    }
}

/// Scrapes and status requests are served from one encoder at a time, with the result
/// shared by every request that arrives within [`REUSE`]: fifty scrapers cost one
/// encoding (and one gzip), not fifty. Requests beyond [`MAX_WAITING`] get 503 at once,
/// so a storm queues no unbounded work or memory.
struct Render {
    /// One encoding at a time.
    encoder: tokio::sync::Semaphore,
    /// Requests waiting for the encoder or being encoded for.
    waiting: AtomicUsize,
    /// The last body of each view and encoding.
    cache: Mutex<HashMap<(View, bool), Cached>>,
}

/// What is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum View {
    /// `/metrics`, Prometheus text.
    Text,
    /// `/metrics`, OpenMetrics.
    OpenMetrics,
    /// `/api/v1/status`.
    StatusJson,
    /// `/`.
    StatusPage,
    /// `/api/v1/events`.
    Events,
}

impl View {
    fn content_type(self) -> &'static str {
        match self {
            View::Text => crate::output::metrics::TEXT_CONTENT_TYPE,
            View::OpenMetrics => crate::output::metrics::OPENMETRICS_CONTENT_TYPE,
            View::StatusJson | View::Events => "application/json",
            View::StatusPage => "text/html; charset=utf-8",
        }
    }
}

/// An encoded body.
struct Cached {
    /// When it was encoded.
    at: Instant,
    /// The store's configuration version it shows.
    version: u64,
    /// The body.
    chunks: Arc<Vec<Bytes>>,
}

/// How long an encoded body is served again. Prometheus servers of an HA pair, and a
/// burst of dashboards, scrape within this window of each other. Results are at most
/// this much older than the store (never across a reload).
pub const REUSE: Duration = Duration::from_secs(1);

/// Requests that may wait for the encoder; the next gets 503.
pub const MAX_WAITING: usize = 64;

/// The router; `reload` reaches the agent's control loop.
pub fn router(
    store: Arc<Store>,
    reload: mpsc::Sender<ReloadRequest>,
    tracer: Arc<crate::run::trace_run::Tracer>,
    web: &WebOptions,
) -> Router {
    let render = Arc::new(Render {
        encoder: tokio::sync::Semaphore::new(1),
        waiting: AtomicUsize::new(0),
        cache: Mutex::new(HashMap::new()),
    });
    Router::new()
        .route(&web.telemetry_path, get(metrics))
        .route("/", get(status_page))
        .route("/api/v1/status", get(status_json))
        .route("/api/v1/events", get(events_json))
        .route("/api/v1/trace", get(trace))
        .route("/-/healthy", get(|| async { "Healthy.\n" }))
        .route("/-/ready", get(ready))
        .route("/-/reload", post(reload_config))
        .with_state(App {
            store,
            reload,
            render,
            lifecycle: web.lifecycle,
            tracer,
            metrics_path: Arc::from(web.telemetry_path.as_str()),
        })
        .layer(axum::middleware::from_fn_with_state(
            (
                crate::http::auth::Auth::new(
                    web.config.as_ref().map(|c| c.users.clone()).unwrap_or_default(),
                ),
                Arc::new(web.config.as_ref().map(|c| c.headers.clone()).unwrap_or_default()),
            ),
            crate::http::auth::guard,
        ))
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

fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|e| {
            let mut parts = e.split(';');
            let coding = parts.next().unwrap_or("").trim();
            let q_zero = parts.any(|p| matches!(p.trim(), "q=0" | "q=0.0" | "q=0.00" | "q=0.000"));
            coding.eq_ignore_ascii_case("gzip") && !q_zero
        })
}

/// Serves `view`, from the cache when fresh.
async fn serve(app: &App, view: View, headers: &HeaderMap) -> Response {
    let gzip = accepts_gzip(headers);
    let Some(chunks) = body(app, view, gzip).await else { return busy() };
    let stream = futures_util::stream::iter(
        (0..chunks.len()).map(move |i| Ok::<_, std::convert::Infallible>(chunks[i].clone())),
    );
    let mut r = ([(header::CONTENT_TYPE, view.content_type())], Body::from_stream(stream)).into_response();
    if gzip {
        r.headers_mut().insert(header::CONTENT_ENCODING, header::HeaderValue::from_static("gzip"));
    }
    r.headers_mut().insert(header::VARY, header::HeaderValue::from_static("Accept-Encoding"));
    r
}

fn fresh(app: &App, key: (View, bool)) -> Option<Arc<Vec<Bytes>>> {
    let cache = app.render.cache.lock().unwrap_or_else(|e| e.into_inner());
    cache
        .get(&key)
        .filter(|c| c.at.elapsed() < REUSE && c.version == app.store.version())
        .map(|c| c.chunks.clone())
}

/// The encoded body: the shared one when it is fresh, else a new encoding (one at a
/// time, on the blocking pool: thousands of instances take milliseconds of CPU).
async fn body(app: &App, view: View, gzip: bool) -> Option<Arc<Vec<Bytes>>> {
    if let Some(b) = fresh(app, (view, gzip)) {
        return Some(b);
    }
    let _waiting = Waiting::enter(&app.render.waiting)?;
    let _permit = app.render.encoder.acquire().await.ok()?;
    // Another request may have encoded while this one waited.
    if let Some(b) = fresh(app, (view, gzip)) {
        return Some(b);
    }
    let version = app.store.version();
    let plain = match fresh(app, (view, false)) {
        Some(b) => b,
        None => {
            let (store, metrics_path) = (app.store.clone(), app.metrics_path.clone());
            let b = tokio::task::spawn_blocking(move || Arc::new(encode(&store, view, &metrics_path)))
                .await
                .ok()?;
            remember(app, (view, false), version, b.clone());
            b
        }
    };
    if !gzip {
        return Some(plain);
    }
    let packed = tokio::task::spawn_blocking(move || Arc::new(compress(&plain))).await.ok()?;
    remember(app, (view, true), version, packed.clone());
    Some(packed)
}

/// Encodes `view` now, in chunks.
fn encode(store: &Store, view: View, metrics_path: &str) -> Vec<Bytes> {
    match view {
        View::Text | View::OpenMetrics => {
            let mut chunks = Vec::new();
            let r = crate::output::metrics::encode_chunks(store, view == View::OpenMetrics, |chunk| {
                chunks.push(Bytes::from(chunk));
                true
            });
            if r.is_err() {
                tracing::error!("metrics encoding failed");
            }
            chunks
        }
        View::StatusJson => {
            #[derive(serde::Serialize)]
            struct Status<'a> {
                ready: bool,
                #[serde(flatten)]
                view: &'a StatusView,
            }
            let view = status_view(store);
            let status = Status { ready: store.is_ready(), view: &view };
            vec![Bytes::from(serde_json::to_vec(&status).unwrap_or_default())]
        }
        View::StatusPage => {
            let events = crate::output::views::events(&store.events());
            vec![Bytes::from(crate::output::status_page::render(
                &status_view(store),
                &events,
                std::time::SystemTime::now(),
                metrics_path,
            ))]
        }
        View::Events => {
            #[derive(serde::Serialize)]
            struct Announcement {
                at: String,
                text: String,
            }
            #[derive(serde::Serialize)]
            struct Events {
                kept: usize,
                events: Vec<crate::output::views::EventView>,
                /// What the demo lab did (`demo --faults`); empty otherwise.
                announcements: Vec<Announcement>,
            }
            let events = Events {
                kept: crate::run::results::EVENTS_KEPT,
                events: crate::output::views::events(&store.events()),
                announcements: store
                    .announcements()
                    .into_iter()
                    .map(|(at, text)| Announcement {
                        at: humantime::format_rfc3339_millis(at).to_string(),
                        text,
                    })
                    .collect(),
            };
            vec![Bytes::from(serde_json::to_vec(&events).unwrap_or_default())]
        }
    }
}

/// gzip at level 1: a scrape body compresses about tenfold even at the fastest level.
fn compress(chunks: &[Bytes]) -> Vec<Bytes> {
    use std::io::Write;
    let mut out = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    for c in chunks {
        let _ = out.write_all(c);
    }
    vec![Bytes::from(out.finish().unwrap_or_default())]
}

/// Caches `chunks` for `key`, and drops them once they are no longer fresh, giving the
/// memory back: after a burst the agent returns to its idle footprint.
fn remember(app: &App, key: (View, bool), version: u64, chunks: Arc<Vec<Bytes>>) {
    let at = Instant::now();
    app.render.cache.lock().unwrap_or_else(|e| e.into_inner()).insert(key, Cached { at, version, chunks });
    let render = app.render.clone();
    tokio::spawn(async move {
        tokio::time::sleep(REUSE).await;
        let dropped = {
            let mut cache = render.cache.lock().unwrap_or_else(|e| e.into_inner());
            match cache.get(&key) {
                Some(c) if c.at == at => cache.remove(&key),
                _ => None,
            }
        };
        let idle = render.cache.lock().unwrap_or_else(|e| e.into_inner()).is_empty();
        if dropped.is_some() && idle {
            drop(dropped);
            let _ = tokio::task::spawn_blocking(crate::os::release_memory).await;
        }
    });
}

async fn metrics(State(app): State<App>, headers: HeaderMap) -> Response {
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    serve(&app, if openmetrics { View::OpenMetrics } else { View::Text }, &headers).await
}

fn status_view(store: &Store) -> StatusView {
    let g = store.current();
    let units = crate::run::results::units(&g.slots);
    let mut r = StatusView::build(&g.config, &g.slots, &units);
    r.users = store.endpoints.statuses();
    // The configuration's path is not for whoever reaches the port.
    r.config.clear();
    r
}

async fn status_page(State(app): State<App>, headers: HeaderMap) -> Response {
    serve(&app, View::StatusPage, &headers).await
}

async fn status_json(State(app): State<App>, headers: HeaderMap) -> Response {
    serve(&app, View::StatusJson, &headers).await
}

async fn events_json(State(app): State<App>, headers: HeaderMap) -> Response {
    serve(&app, View::Events, &headers).await
}

/// The query of `/api/v1/trace`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TraceQuery {
    check: String,
    pool: Option<String>,
    format: Option<String>,
}

async fn trace(
    State(app): State<App>,
    headers: HeaderMap,
    query: Result<axum::extract::Query<TraceQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    // A trace makes the agent probe now: no web page of another origin may cause that.
    if cross_origin(&headers) {
        return (StatusCode::FORBIDDEN, "Cross-origin trace requests are refused.\n").into_response();
    }
    let bad = |m: String| (StatusCode::BAD_REQUEST, m).into_response();
    let Ok(axum::extract::Query(q)) = query else {
        return bad("Usage: /api/v1/trace?check=NAME[&pool=NAME][&format=text|json]\n".into());
    };
    let json = match q.format.as_deref() {
        None | Some("text") => false,
        Some("json") => true,
        Some(f) => {
            return bad(format!(
                "format: {:?} is neither text nor json\n",
                f.chars().take(32).collect::<String>()
            ))
        }
    };
    let g = app.store.current();
    let instances: Vec<_> = g
        .config
        .instances
        .iter()
        .filter(|i| i.check == q.check && q.pool.as_deref().is_none_or(|p| p == i.pool_name()))
        .cloned()
        .collect();
    if instances.is_empty() {
        // Names are echoed bounded and only as text: this is not an HTML page.
        let what: String = q.check.chars().take(64).collect();
        return (
            StatusCode::NOT_FOUND,
            format!("No instance of check {what:?} with that pool in the running configuration.\n"),
        )
            .into_response();
    }
    let traces = match app.tracer.trace(instances).await {
        Ok(t) => t,
        Err(crate::run::trace_run::TraceRefused::Busy) => {
            return (StatusCode::SERVICE_UNAVAILABLE, "Another trace is running; try again in a moment.\n")
                .into_response()
        }
        Err(crate::run::trace_run::TraceRefused::Failed) => {
            return (StatusCode::INTERNAL_SERVER_ERROR, "The trace failed; the agent's log says why.\n")
                .into_response()
        }
    };
    if json {
        let body = serde_json::to_vec(&traces).unwrap_or_default();
        return ([(header::CONTENT_TYPE, "application/json")], body).into_response();
    }
    let text: String = traces.iter().map(|t| t.text() + "\n").collect();
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response()
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

async fn reload_config(State(app): State<App>, headers: HeaderMap) -> Response {
    if !app.lifecycle {
        return (
            StatusCode::FORBIDDEN,
            "Lifecycle API is not enabled: start the agent with --web.enable-lifecycle, or send SIGHUP.\n",
        )
            .into_response();
    }
    if cross_origin(&headers) {
        return (StatusCode::FORBIDDEN, "Cross-origin reload requests are refused.\n").into_response();
    }
    let (tx, rx) = oneshot::channel();
    if app.reload.send(tx).await.is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    match rx.await {
        Ok(Ok(())) => (StatusCode::OK, "Configuration reloaded.\n").into_response(),
        // The reason (with the file's path and content) goes to the log, not to the client.
        Ok(Err(_)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "Reload rejected, previous configuration kept; the agent's log says why \
             (or run `coexistd validate` on the file).\n",
        )
            .into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response(),
    }
}

/// A request a web page made from another origin: a browser sends `Origin` (and
/// `Sec-Fetch-Site`) with it. A page must not be able to drive the agent, so any
/// `Origin` that is not this host, and any `Sec-Fetch-Site` other than same-origin or
/// none, is refused. curl and Prometheus send neither.
fn cross_origin(headers: &HeaderMap) -> bool {
    let site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    if site.is_some_and(|s| s != "same-origin" && s != "none") {
        return true;
    }
    let Some(origin) = headers.get(header::ORIGIN) else { return false };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
    let origin = origin.to_str().unwrap_or("");
    let origin_host = origin.split_once("://").map_or("", |(_, h)| h).trim_end_matches('/');
    origin_host.is_empty() || !origin_host.eq_ignore_ascii_case(host)
}
