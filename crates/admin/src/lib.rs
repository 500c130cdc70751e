//! The Admin API (axum), bound to localhost by default.
//!
//! Endpoints so far: `GET /` (node info), `GET /status` (readiness, connections, config hash),
//! `GET /status/ready`, `GET /metrics` (Prometheus text format).
//!
//! The status listener (`status_listen`, off by default) serves `GET /status`,
//! `GET /status/ready` and `GET /metrics` only: safe to expose to a Prometheus server.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use portcullis_proxy::Gateway;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The Admin API routes.
pub fn router(gw: Arc<Gateway>) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/status", get(status))
        .route("/status/ready", get(ready))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(gw)
}

/// The status listener's routes.
pub fn status_router(gw: Arc<Gateway>) -> Router {
    Router::new()
        .route("/status", get(status))
        .route("/status/ready", get(ready))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(gw)
}

/// Serves the status listener until `shutdown` turns true.
pub async fn serve_status(
    gw: Arc<Gateway>,
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    axum::serve(listener, status_router(gw))
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|s| *s).await;
        })
        .await
}

async fn metrics(State(gw): State<Arc<Gateway>>) -> Response {
    let body = portcullis_proxy::metrics::render(&gw);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            portcullis_proxy::metrics::CONTENT_TYPE,
        )],
        body,
    )
        .into_response()
}

/// Serves the Admin API until `shutdown` turns true.
pub async fn serve(
    gw: Arc<Gateway>,
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    axum::serve(listener, router(gw))
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|s| *s).await;
        })
        .await
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, Json(json!({"message": "Not found"}))).into_response()
}

async fn root(State(gw): State<Arc<Gateway>>) -> Response {
    let snap = gw.snapshot();
    Json(json!({
        "tagline": "Welcome to portcullis",
        "version": env!("CARGO_PKG_VERSION"),
        "configuration": {
            "database": "off",
            "proxy_listen": gw.settings.proxy_listen.to_string(),
            "proxy_tls_listen": gw.settings.proxy_tls_listen.to_string(),
            "admin_listen": gw.settings.admin_listen.to_string(),
        },
        "configuration_hash": snap.hash,
        "plugins": { "available_on_server": portcullis_plugins::known_plugins().collect::<Vec<_>>() },
    }))
    .into_response()
}

async fn status(State(gw): State<Arc<Gateway>>) -> Response {
    let snap = gw.snapshot();
    let ready = gw.is_ready();
    let body = json!({
        "ready": ready,
        "server": {
            "connections_active": gw.stats.connections_active.load(Ordering::Relaxed),
            "connections_accepted": gw.stats.connections_accepted.load(Ordering::Relaxed),
            "total_requests": gw.stats.requests_total.load(Ordering::Relaxed),
        },
        "database": { "reachable": true },
        "configuration_hash": snap.hash,
        "entities": {
            "services": snap.config.services.len(),
            "routes": snap.config.routes.len(),
            "upstreams": snap.config.upstreams.len(),
            "plugins": snap.config.plugins.len(),
        },
    });
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

async fn ready(State(gw): State<Arc<Gateway>>) -> Response {
    if gw.is_ready() {
        (StatusCode::OK, Json(json!({"message": "ready"}))).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"message": "not ready"})),
        )
            .into_response()
    }
}
