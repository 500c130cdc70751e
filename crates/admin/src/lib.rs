//! The Admin API (axum), bound to localhost by default.
//!
//! Endpoints so far: `GET /` (node info), `GET /status` (readiness, connections, config hash),
//! `GET /status/ready`, `GET /metrics` (Prometheus text format), and Kong's read-only
//! `GET /upstreams/{name or id}/health` (targets with their health; `?balancer_health=1` for
//! the upstream's own) and `POST /upstreams/{u}/targets/{id or host:port}/healthy|unhealthy`
//! (sets a target's health, as the health checks would: the checks may change it again), and
//! Kong's DB-less entity endpoints and `POST /config` ([`entities`]).
//!
//! The status listener (`status_listen`, off by default) serves `GET /status`,
//! `GET /status/ready` and `GET /metrics` only: safe to expose to a Prometheus server.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use portcullis_config::{Target, Upstream};
use portcullis_proxy::balancer::{Balancer, TargetEntry};
use portcullis_proxy::snapshot::Snapshot;
use portcullis_proxy::Gateway;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;

mod entities;
use entities::target_text;

/// The Admin API routes.
pub fn router(gw: Arc<Gateway>) -> Router {
    entities::routes(Router::new())
        .route("/", get(root))
        .route("/status", get(status))
        .route("/status/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/upstreams/{upstream}/health", get(upstream_health))
        .route(
            "/upstreams/{upstream}/targets/{target}/healthy",
            post(target_healthy),
        )
        .route(
            "/upstreams/{upstream}/targets/{target}/unhealthy",
            post(target_unhealthy),
        )
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
    // The peer address is kept for the security event of each change made through the API.
    axum::serve(
        listener,
        router(gw).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        let _ = shutdown.wait_for(|s| *s).await;
    })
    .await
}

async fn not_found() -> Response {
    not_found_response()
}

fn not_found_response() -> Response {
    (StatusCode::NOT_FOUND, Json(json!({"message": "Not found"}))).into_response()
}

/// An upstream named by its name or id, with its balancer and its targets, each paired with
/// the balancer's entry for it (the balancer holds them in config order).
struct UpstreamView<'s> {
    upstream: &'s Upstream,
    balancer: &'s Balancer,
    targets: Vec<(&'s Target, &'s TargetEntry)>,
}

impl<'s> UpstreamView<'s> {
    fn find(snap: &'s Snapshot, key: &str) -> Option<UpstreamView<'s>> {
        let upstream = snap
            .config
            .upstreams
            .iter()
            .find(|u| u.name == key || u.id.eq_ignore_ascii_case(key))?;
        let balancer = snap.balancers.iter().find(|b| b.name == upstream.name)?;
        let targets = snap
            .config
            .targets
            .iter()
            .filter(|t| t.upstream == upstream.id)
            .zip(balancer.targets())
            .collect();
        Some(UpstreamView {
            upstream,
            balancer,
            targets,
        })
    }
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

/// Kong's `GET /upstreams/{upstream}/health`: the upstream's targets with the health the
/// balancer holds for them (`HEALTHY`, `UNHEALTHY`, or `HEALTHCHECKS_OFF` when the upstream
/// has no active or passive checks, or the target's weight is 0); with `?balancer_health=1`,
/// the upstream's own health (below its `threshold` or not).
async fn upstream_health(
    State(gw): State<Arc<Gateway>>,
    Path(upstream): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let snap = gw.snapshot();
    let Some(UpstreamView {
        upstream: u,
        balancer,
        targets,
    }) = UpstreamView::find(&snap, &upstream)
    else {
        return not_found_response();
    };
    let checked = balancer.health_checked();
    let label = |healthy: bool| if healthy { "HEALTHY" } else { "UNHEALTHY" };
    let entries = balancer.targets();
    // One status per target, in the shape of Kong's `getTargetStatus` (the address is the
    // target's host as configured: names are resolved per connection, not held here).
    let status = |t: &TargetEntry| {
        let healthy = t.health.is_healthy();
        let unavailable = if healthy { 0 } else { t.weight };
        let health = if checked && t.weight > 0 {
            label(healthy)
        } else {
            "HEALTHCHECKS_OFF"
        };
        (
            health,
            json!({
                "host": &*t.host,
                "port": t.port,
                "nodeWeight": t.weight,
                "weight": {
                    "total": t.weight,
                    "unavailable": unavailable,
                    "available": t.weight - unavailable,
                },
                "addresses": [{
                    "ip": &*t.host,
                    "port": t.port,
                    "weight": t.weight,
                    "health": health,
                }],
            }),
        )
    };
    let node_id = portcullis_plugins::prometheus::node_id();
    let balancer_health = query
        .as_deref()
        .unwrap_or("")
        .split('&')
        .any(|kv| kv == "balancer_health=1");
    if balancer_health {
        let total: u32 = entries.iter().map(|t| t.weight).sum();
        let unavailable: u32 = entries
            .iter()
            .filter(|t| !t.health.is_healthy())
            .map(|t| t.weight)
            .sum();
        let healthy = balancer.above_threshold();
        let hosts: Vec<serde_json::Value> = entries.iter().map(|t| status(t).1).collect();
        return Json(json!({
            "data": {
                "health": if checked { label(healthy) } else { "HEALTHCHECKS_OFF" },
                "balancer_health": label(healthy),
                "id": u.id,
                "details": {
                    "healthy": healthy,
                    "weight": {
                        "total": total,
                        "unavailable": unavailable,
                        "available": total - unavailable,
                    },
                    "hosts": hosts,
                },
            },
            "next": null,
            "node_id": node_id,
        }))
        .into_response();
    }
    let data: Vec<serde_json::Value> = targets
        .iter()
        .map(|&(t, entry)| {
            let (health, data) = status(entry);
            json!({
                "id": t.id,
                "target": target_text(&entry.host, entry.port),
                "weight": t.weight,
                "upstream": { "id": u.id },
                "tags": if t.tags.is_empty() { serde_json::Value::Null } else { json!(t.tags) },
                "health": health,
                "data": data,
            })
        })
        .collect();
    Json(json!({
        "data": data,
        "next": null,
        "node_id": node_id,
    }))
    .into_response()
}

async fn target_healthy(
    State(gw): State<Arc<Gateway>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((upstream, target)): Path<(String, String)>,
) -> Response {
    set_target_health(&gw, peer, &upstream, &target, true)
}

async fn target_unhealthy(
    State(gw): State<Arc<Gateway>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((upstream, target)): Path<(String, String)>,
) -> Response {
    set_target_health(&gw, peer, &upstream, &target, false)
}

/// Kong's `POST /upstreams/{u}/targets/{t}/healthy|unhealthy`: the target by id or by
/// `host:port` (`host` alone means port 8000, as Kong's target field reads it); 204, or 400
/// when the upstream has no health checks to hold the state.
fn set_target_health(
    gw: &Gateway,
    peer: SocketAddr,
    upstream: &str,
    target: &str,
    healthy: bool,
) -> Response {
    let snap = gw.snapshot();
    let Some(UpstreamView {
        upstream: u,
        balancer,
        targets,
    }) = UpstreamView::find(&snap, upstream)
    else {
        return not_found_response();
    };
    // `host:port`, `[v6]:port`, or a host alone (port 8000, Kong's default for targets).
    let wanted = if target.ends_with(']') || !target.contains(':') {
        format!("{target}:8000")
    } else {
        target.to_string()
    };
    let found = targets
        .iter()
        .find(|(t, e)| t.id.eq_ignore_ascii_case(target) || target_text(&e.host, e.port) == wanted);
    let Some(&(_, entry)) = found else {
        return not_found_response();
    };
    if !balancer.health_checked() {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"message": format!("no healthchecker found for {}", u.name)})),
        )
            .into_response();
    }
    entry.health.set_healthy(healthy);
    // An Admin API change is a security event (docs/observability.md).
    tracing::warn!(
        target: "security",
        event = "admin_change",
        client_ip = %peer.ip(),
        method = "POST",
        path = %format!("/upstreams/{upstream}/targets/{target}/{}", if healthy { "healthy" } else { "unhealthy" }),
        upstream = %u.name,
        target_address = %target_text(&entry.host, entry.port),
        reason = if healthy { "target set healthy" } else { "target set unhealthy" },
        "Admin API change"
    );
    StatusCode::NO_CONTENT.into_response()
}
