//! The node's Prometheus exporter: Kong's node-level metrics (connections, requests,
//! datastore, node info, upstream target health) plus the request metrics recorded by the
//! `prometheus` plugin and the security-event counter, in the text exposition format.
//!
//! Also the [`SecurityEvents`] tracing layer, which counts `target: "security"` events into
//! `portcullis_security_events_total{kind,plugin,route}`.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use portcullis_plugins::prometheus::{self, escape};
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

use crate::Gateway;

/// `Content-Type` of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Renders every metric of this node.
pub fn render(gw: &Gateway) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let node = escape(prometheus::node_id());
    let s = &gw.stats;
    let active = s.connections_active.load(Ordering::Relaxed);
    let accepted = s.connections_accepted.load(Ordering::Relaxed);
    let requests = s.requests_total.load(Ordering::Relaxed);
    let in_flight = s.requests_in_flight.load(Ordering::Relaxed).min(active);

    gauge(
        &mut out,
        "kong_datastore_reachable",
        "Datastore reachable from Kong, 0 is unreachable",
    );
    // DB-less: the config lives in memory and is always reachable.
    out.push_str("kong_datastore_reachable 1\n");

    gauge(&mut out, "kong_node_info", "Kong Node metadata information");
    let _ = writeln!(
        out,
        "kong_node_info{{node_id=\"{node}\",version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );

    gauge(
        &mut out,
        "kong_nginx_connections_total",
        "Number of connections by subsystem",
    );
    // accepted/active/total are exact; handled = accepted (no connection is refused after
    // accept); writing = requests being handled, waiting = idle keep-alive connections,
    // reading = 0 (request heads are read inside the connection task and not tracked).
    for (state, v) in [
        ("accepted", accepted),
        ("active", active),
        ("handled", accepted),
        ("reading", 0),
        ("total", requests),
        ("waiting", active - in_flight),
        ("writing", in_flight),
    ] {
        let _ = writeln!(
            out,
            "kong_nginx_connections_total{{node_id=\"{node}\",subsystem=\"http\",state=\"{state}\"}} {v}"
        );
    }

    gauge(
        &mut out,
        "kong_nginx_requests_total",
        "Number of requests total",
    );
    let _ = writeln!(
        out,
        "kong_nginx_requests_total{{node_id=\"{node}\",subsystem=\"http\"}} {requests}"
    );

    let _ = writeln!(
        out,
        "# HELP kong_nginx_metric_errors_total Number of nginx-lua-prometheus errors\n# TYPE kong_nginx_metric_errors_total counter\nkong_nginx_metric_errors_total 0"
    );

    let snap = gw.snapshot();
    let health_on = snap.config.plugins.iter().any(|p| {
        p.enabled && p.name == "prometheus" && prometheus::wants_upstream_health(&p.config)
    });
    if health_on {
        gauge(
            &mut out,
            "kong_upstream_target_health",
            "Health status of targets of upstream. States = healthchecks_off|healthy|unhealthy|dns_error, value is 1 when state is populated.",
        );
        for b in snap.balancers.iter().filter(|b| b.is_upstream) {
            let upstream = escape(&b.name);
            for t in b.targets() {
                let target = escape(&format!("{}:{}", t.host, t.port));
                let current = if !b.health_checked() {
                    "healthchecks_off"
                } else if t.health.is_healthy() {
                    "healthy"
                } else {
                    "unhealthy"
                };
                for state in ["healthchecks_off", "healthy", "unhealthy", "dns_error"] {
                    let _ = writeln!(
                        out,
                        "kong_upstream_target_health{{upstream=\"{upstream}\",target=\"{target}\",address=\"{target}\",state=\"{state}\",subsystem=\"http\"}} {}",
                        u8::from(state == current)
                    );
                }
            }
        }
    }

    prometheus::render(&mut out);
    out
}

fn gauge(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
}

/// A tracing layer counting `target: "security"` events by their `event`, `plugin` and
/// `route` fields. Install it next to the fmt layer with [`SecurityEvents::filtered`], so the
/// log level never hides security events from the counter and other events never reach it.
#[derive(Debug, Default, Clone, Copy)]
pub struct SecurityEvents;

impl SecurityEvents {
    /// The layer with a per-layer filter passing only `target: "security"` events.
    pub fn filtered<S>() -> impl Layer<S> + Send + Sync + 'static
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        SecurityEvents.with_filter(tracing_subscriber::filter::filter_fn(|m| {
            m.target() == "security"
        }))
    }
}

#[derive(Default)]
struct Fields {
    kind: Option<String>,
    plugin: Option<String>,
    route: Option<String>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        let slot = match field.name() {
            "event" => &mut self.kind,
            "plugin" => &mut self.plugin,
            "route" => &mut self.route,
            _ => return,
        };
        *slot = Some(value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if matches!(field.name(), "event" | "plugin" | "route") {
            let text = format!("{value:?}");
            self.record_str(field, text.trim_matches('"'));
        }
    }
}

impl<S: tracing::Subscriber> Layer<S> for SecurityEvents {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        if event.metadata().target() != "security" {
            return;
        }
        let mut f = Fields::default();
        event.record(&mut f);
        prometheus::record_security_event(
            f.kind.as_deref().unwrap_or("unknown"),
            f.plugin.as_deref().unwrap_or(""),
            f.route.as_deref().unwrap_or(""),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn security_events_are_counted_by_kind_plugin_route() {
        let subscriber = tracing_subscriber::registry().with(SecurityEvents);
        tracing::subscriber::with_default(subscriber, || {
            for _ in 0..3 {
                tracing::warn!(target: "security", event = "unit_test_kind", plugin = "key-auth", route = "r1", "x");
            }
            tracing::warn!(target: "other", event = "unit_test_kind", plugin = "key-auth", route = "r1", "x");
        });
        let mut out = String::new();
        prometheus::render(&mut out);
        assert!(
            out.contains("portcullis_security_events_total{kind=\"unit_test_kind\",plugin=\"key-auth\",route=\"r1\"} 3\n"),
            "{out}"
        );
    }
}
