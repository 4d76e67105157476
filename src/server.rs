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

use std::sync::Arc;

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
}

/// The router; `reload` reaches the agent's control loop.
pub fn router(store: Arc<Store>, reload: mpsc::Sender<ReloadRequest>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/", get(status_page))
        .route("/api/v1/status", get(status_json))
        .route("/-/healthy", get(|| async { "Healthy.\n" }))
        .route("/-/ready", get(ready))
        .route("/-/reload", post(reload_config))
        .with_state(App { store, reload })
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
    // Encoding thousands of instances takes milliseconds of CPU: it runs on the blocking
    // pool and streams chunks, so neither the probes nor memory pay for a large scrape.
    let (tx, rx) = mpsc::channel::<String>(2);
    let store = app.store.clone();
    tokio::task::spawn_blocking(move || {
        let r = crate::metrics::encode_chunks(&store, openmetrics, |chunk| tx.blocking_send(chunk).is_ok());
        if r.is_err() {
            tracing::error!("metrics encoding failed");
        }
    });
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (Ok::<_, std::convert::Infallible>(chunk), rx))
    });
    ([(header::CONTENT_TYPE, ct)], Body::from_stream(body)).into_response()
}

fn report(store: &Store) -> Report {
    let g = store.current();
    let units = crate::state::units(&g.slots);
    Report::build(&g.config, &g.slots, &units)
}

async fn status_page(State(app): State<App>) -> Html<String> {
    Html(report(&app.store).html())
}

async fn status_json(State(app): State<App>) -> Json<serde_json::Value> {
    let r = report(&app.store);
    let mut v = serde_json::to_value(&r).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert("ready".into(), app.store.is_ready().into());
    }
    Json(v)
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
