//! `prometheus` (Kong's plugin): request metrics under Kong 3.x's names and labels, kept in a
//! process-wide registry and rendered in the Prometheus text format by the node's `/metrics`
//! endpoints (status listener and Admin API).
//!
//! Like Kong 3.x, the plugin records nothing until a granular switch is on:
//! `status_code_metrics` (`kong_http_requests_total`), `latency_metrics` (the three latency
//! histograms), `bandwidth_metrics` (`kong_bandwidth_bytes`) and `upstream_health_metrics`
//! (`kong_upstream_target_health`, rendered by the node exporter). `per_consumer` fills the
//! `consumer` label. `ai_metrics` and `wasm_metrics` are accepted and have no effect.
//!
//! Cardinality is bounded: labels are names from the config (service, route, consumer), a
//! status code and a fixed word — never a path or a header. All families together hold at
//! most [`MAX_SERIES`] series; new label sets past that are counted in
//! `portcullis_metrics_series_dropped_total` and not recorded.
//!
//! The log phase takes a read lock on one of [`SHARDS`] shards and bumps atomics; the only
//! per-request cost beyond that is cloning a few `Arc<str>` for the lookup key. A write lock
//! (and allocation) happens once per new label set.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use portcullis_config::{Errors, Obj};
use serde_json::Value;

use crate::{LogEntry, Plugin};

/// Upper bound on the number of series held by the registry (all families together).
pub const MAX_SERIES: usize = 10_000;

/// Lock shards per family.
pub const SHARDS: usize = 16;

/// Kong's `KONG_LATENCY_BUCKETS` (ms), for `kong_kong_latency_ms`.
pub const KONG_LATENCY_BUCKETS: [u64; 15] =
    [1, 2, 5, 7, 10, 15, 20, 30, 50, 75, 100, 200, 500, 750, 1000];

/// Kong's `UPSTREAM_LATENCY_BUCKETS` (ms), for `kong_upstream_latency_ms` and
/// `kong_request_latency_ms`.
pub const UPSTREAM_LATENCY_BUCKETS: [u64; 13] = [
    25, 50, 80, 100, 250, 400, 700, 1000, 2000, 5000, 10000, 30000, 60000,
];

/// Kong's workspace label value (one workspace in DB-less mode).
pub const WORKSPACE: &str = "default";

/// A histogram with fixed bucket bounds; counts per bucket (not cumulative), sum and count.
pub struct Histogram<const N: usize> {
    bounds: &'static [u64; N],
    buckets: [AtomicU64; N],
    sum: AtomicU64,
    count: AtomicU64,
}

impl<const N: usize> Histogram<N> {
    fn new(bounds: &'static [u64; N]) -> Self {
        Histogram {
            bounds,
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Records one value.
    pub fn observe(&self, v: u64) {
        let i = self.bounds.partition_point(|b| *b < v);
        if let Some(b) = self.buckets.get(i) {
            b.fetch_add(1, Ordering::Relaxed);
        }
        self.sum.fetch_add(v, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (bound, b) in self.bounds.iter().zip(&self.buckets) {
            cumulative += b.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum{{{labels}}} {}",
            self.sum.load(Ordering::Relaxed)
        );
    }
}

/// Series in all families, for the cap.
static SERIES: AtomicUsize = AtomicUsize::new(0);
/// Label sets refused because of the cap.
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// A metric family: label set → value, sharded behind read-write locks.
struct Family<K, V> {
    hasher: std::collections::hash_map::RandomState,
    shards: [RwLock<HashMap<K, V>>; SHARDS],
}

impl<K: Hash + Eq + Clone, V> Family<K, V> {
    fn new() -> Self {
        Family {
            hasher: Default::default(),
            shards: std::array::from_fn(|_| RwLock::new(HashMap::new())),
        }
    }

    /// Runs `f` on the value of `key`, creating it with `make` (within the series cap).
    fn with(&self, key: K, make: impl FnOnce() -> V, f: impl FnOnce(&V)) {
        let shard = &self.shards[(self.hasher.hash_one(&key) as usize) % SHARDS];
        if let Ok(map) = shard.read() {
            if let Some(v) = map.get(&key) {
                f(v);
                return;
            }
        }
        let Ok(mut map) = shard.write() else { return };
        if let Some(v) = map.get(&key) {
            f(v);
            return;
        }
        if SERIES.fetch_add(1, Ordering::Relaxed) >= MAX_SERIES {
            SERIES.fetch_sub(1, Ordering::Relaxed);
            DROPPED.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let v = make();
        f(&v);
        map.insert(key, v);
    }

    /// Calls `f` for every series, in label order.
    fn each(&self, mut f: impl FnMut(&K, &V))
    where
        K: Ord,
    {
        let guards: Vec<_> = self.shards.iter().filter_map(|s| s.read().ok()).collect();
        let mut all: Vec<(&K, &V)> = guards.iter().flat_map(|m| m.iter()).collect();
        all.sort_by(|a, b| a.0.cmp(b.0));
        for (k, v) in all {
            f(k, v);
        }
    }
}

#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct RouteKey {
    service: Arc<str>,
    route: Arc<str>,
}

#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct StatusKey {
    service: Arc<str>,
    route: Arc<str>,
    code: u16,
    from_kong: bool,
    consumer: Option<Arc<str>>,
}

#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct ConsumerKey {
    service: Arc<str>,
    route: Arc<str>,
    consumer: Option<Arc<str>>,
}

struct Latencies {
    request: Histogram<13>,
    upstream: Histogram<13>,
    kong: Histogram<15>,
}

#[derive(Default)]
struct Bandwidth {
    ingress: AtomicU64,
    egress: AtomicU64,
}

type SecurityKey = (String, String, String);

struct Registry {
    status: Family<StatusKey, AtomicU64>,
    latency: Family<RouteKey, Latencies>,
    bandwidth: Family<ConsumerKey, Bandwidth>,
    security: Family<SecurityKey, AtomicU64>,
}

fn registry() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(|| Registry {
        status: Family::new(),
        latency: Family::new(),
        bandwidth: Family::new(),
        security: Family::new(),
    })
}

/// This node's id for `node_id` labels (random per process, UUID-shaped).
pub fn node_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        let b: [u8; 16] = rand::random();
        let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
        format!(
            "{}-{}-4{}-a{}-{}",
            &h[0..8],
            &h[8..12],
            &h[13..16],
            &h[17..20],
            &h[20..32]
        )
    })
}

/// Counts one security event (`target: "security"` tracing events) by kind, plugin and route.
pub fn record_security_event(kind: &str, plugin: &str, route: &str) {
    registry().security.with(
        (kind.to_string(), plugin.to_string(), route.to_string()),
        || AtomicU64::new(0),
        |c| {
            c.fetch_add(1, Ordering::Relaxed);
        },
    );
}

/// Escapes a label value for the text format.
pub fn escape(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Renders the request metrics (only families holding series) and the security and registry
/// counters, in the Prometheus text format.
pub fn render(out: &mut String) {
    let r = registry();
    let mut first = true;
    r.status.each(|k, v| {
        if std::mem::take(&mut first) {
            header(
                out,
                "kong_http_requests_total",
                "counter",
                "HTTP status codes per consumer/service/route in Kong",
            );
        }
        let _ = writeln!(
            out,
            "kong_http_requests_total{{service=\"{}\",route=\"{}\",code=\"{}\",source=\"{}\",workspace=\"{WORKSPACE}\",consumer=\"{}\"}} {}",
            escape(&k.service),
            escape(&k.route),
            k.code,
            if k.from_kong { "kong" } else { "service" },
            escape(k.consumer.as_deref().unwrap_or("")),
            v.load(Ordering::Relaxed)
        );
    });
    // Histograms are rendered family by family (all series of one name together).
    let families: [(&str, &str); 3] = [
        (
            "kong_kong_latency_ms",
            "Latency added by Kong and enabled plugins for each service/route in Kong",
        ),
        (
            "kong_upstream_latency_ms",
            "Latency added by upstream response for each service/route in Kong",
        ),
        (
            "kong_request_latency_ms",
            "Total latency incurred during requests for each service/route in Kong",
        ),
    ];
    for (i, (name, help)) in families.iter().enumerate() {
        let mut first = true;
        r.latency.each(|k, v| {
            let labels = format!(
                "service=\"{}\",route=\"{}\",workspace=\"{WORKSPACE}\"",
                escape(&k.service),
                escape(&k.route)
            );
            if i == 1 && v.upstream.count.load(Ordering::Relaxed) == 0 {
                return;
            }
            if std::mem::take(&mut first) {
                header(out, name, "histogram", help);
            }
            match i {
                0 => v.kong.render(out, name, &labels),
                1 => v.upstream.render(out, name, &labels),
                _ => v.request.render(out, name, &labels),
            }
        });
    }
    let mut first = true;
    r.bandwidth.each(|k, v| {
        for (direction, c) in [("egress", &v.egress), ("ingress", &v.ingress)] {
            let n = c.load(Ordering::Relaxed);
            if n == 0 {
                continue;
            }
            if std::mem::take(&mut first) {
                header(
                    out,
                    "kong_bandwidth_bytes",
                    "counter",
                    "Total bandwidth (ingress/egress) throughput in bytes",
                );
            }
            let _ = writeln!(
                out,
                "kong_bandwidth_bytes{{service=\"{}\",route=\"{}\",direction=\"{direction}\",workspace=\"{WORKSPACE}\",consumer=\"{}\"}} {n}",
                escape(&k.service),
                escape(&k.route),
                escape(k.consumer.as_deref().unwrap_or("")),
            );
        }
    });
    header(
        out,
        "portcullis_security_events_total",
        "counter",
        "Security events (lockouts, refusals worth an alert) by kind, plugin and route",
    );
    r.security.each(|(kind, plugin, route), v| {
        let _ = writeln!(
            out,
            "portcullis_security_events_total{{kind=\"{}\",plugin=\"{}\",route=\"{}\"}} {}",
            escape(kind),
            escape(plugin),
            escape(route),
            v.load(Ordering::Relaxed)
        );
    });
    header(
        out,
        "portcullis_metrics_series_dropped_total",
        "counter",
        "Label sets not recorded because the metrics registry reached its series cap",
    );
    let _ = writeln!(
        out,
        "portcullis_metrics_series_dropped_total {}",
        DROPPED.load(Ordering::Relaxed)
    );
    header(
        out,
        "portcullis_metrics_series",
        "gauge",
        "Series held by the metrics registry",
    );
    let _ = writeln!(
        out,
        "portcullis_metrics_series {}",
        SERIES.load(Ordering::Relaxed)
    );
}

/// Does this plugin entity config turn upstream health metrics on? (Read by the exporter from
/// the running config, so turning it off takes effect at the next reload.)
pub fn wants_upstream_health(config: &Value) -> bool {
    config
        .get("upstream_health_metrics")
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// A compiled `prometheus` instance.
pub struct Prometheus {
    per_consumer: bool,
    status_code: bool,
    latency: bool,
    bandwidth: bool,
}

impl Prometheus {
    /// Validates the config (Kong 3.x fields; unknown fields refused).
    pub fn build(config: &Value, path: &str, errs: &mut Errors) -> Option<Prometheus> {
        let before = errs.len();
        let mut o = Obj::open(config, path, errs)?;
        let per_consumer = o.bool_or("per_consumer", false, errs);
        let status_code = o.bool_or("status_code_metrics", false, errs);
        let latency = o.bool_or("latency_metrics", false, errs);
        let bandwidth = o.bool_or("bandwidth_metrics", false, errs);
        let _ = o.bool_or("upstream_health_metrics", false, errs);
        let _ = o.bool_or("ai_metrics", false, errs);
        let _ = o.bool_or("wasm_metrics", false, errs);
        o.finish(errs);
        if errs.len() > before {
            return None;
        }
        Some(Prometheus {
            per_consumer,
            status_code,
            latency,
            bandwidth,
        })
    }
}

impl Plugin for Prometheus {
    fn name(&self) -> &'static str {
        "prometheus"
    }

    fn has_log(&self) -> bool {
        self.status_code || self.latency || self.bandwidth
    }

    fn log(&self, e: &LogEntry) {
        // Kong records nothing for requests without a service (unmatched, service-less routes).
        let Some(service) = &e.service else { return };
        let service = service.name.clone().unwrap_or_else(|| service.id.clone());
        let route = e
            .route
            .as_ref()
            .map(|r| r.name.clone().unwrap_or_else(|| r.id.clone()))
            .unwrap_or_else(|| Arc::from(""));
        let consumer = if self.per_consumer {
            e.consumer.as_ref().map(|c| {
                c.name
                    .clone()
                    .or_else(|| c.custom_id.clone())
                    .unwrap_or_else(|| c.id.clone())
            })
        } else {
            None
        };
        let r = registry();
        if self.status_code {
            let key = StatusKey {
                service: service.clone(),
                route: route.clone(),
                code: e.status,
                from_kong: e.upstream_status.is_none(),
                consumer: consumer.clone(),
            };
            r.status.with(
                key,
                || AtomicU64::new(0),
                |c| {
                    c.fetch_add(1, Ordering::Relaxed);
                },
            );
        }
        if self.latency {
            let key = RouteKey {
                service: service.clone(),
                route: route.clone(),
            };
            r.latency.with(
                key,
                || Latencies {
                    request: Histogram::new(&UPSTREAM_LATENCY_BUCKETS),
                    upstream: Histogram::new(&UPSTREAM_LATENCY_BUCKETS),
                    kong: Histogram::new(&KONG_LATENCY_BUCKETS),
                },
                |h| {
                    h.request.observe(e.latency_total_ms);
                    if let Some(u) = e.latency_upstream_ms {
                        h.upstream.observe(u);
                    }
                    h.kong.observe(e.latency_gateway_ms());
                },
            );
        }
        if self.bandwidth {
            let ingress = e.request_head_size + e.request_size;
            let egress = e.response_size;
            if ingress > 0 || egress > 0 {
                let key = ConsumerKey {
                    service,
                    route,
                    consumer,
                };
                r.bandwidth.with(key, Bandwidth::default, |b| {
                    b.ingress.fetch_add(ingress, Ordering::Relaxed);
                    b.egress.fetch_add(egress, Ordering::Relaxed);
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn histogram_buckets_are_cumulative_and_kong_shaped() {
        let h = Histogram::new(&KONG_LATENCY_BUCKETS);
        for v in [0, 1, 3, 1000, 5000] {
            h.observe(v);
        }
        let mut out = String::new();
        h.render(&mut out, "x", "a=\"b\"");
        assert!(out.contains("x_bucket{a=\"b\",le=\"1\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{a=\"b\",le=\"5\"} 3\n"), "{out}");
        assert!(out.contains("x_bucket{a=\"b\",le=\"1000\"} 4\n"), "{out}");
        assert!(out.contains("x_bucket{a=\"b\",le=\"+Inf\"} 5\n"), "{out}");
        assert!(out.contains("x_count{a=\"b\"} 5\n"), "{out}");
        assert!(out.contains("x_sum{a=\"b\"} 6004\n"), "{out}");
    }

    #[test]
    fn config_errors_have_paths() {
        let mut errs = Errors::default();
        let cfg = json!({"per_consumer": "yes", "bogus": 1, "ai_metrics": true});
        assert!(Prometheus::build(&cfg, "p.config", &mut errs).is_none());
        let text: Vec<String> = errs.into_vec().iter().map(|e| e.to_string()).collect();
        assert!(
            text.iter().any(|e| e.contains("p.config.per_consumer")),
            "{text:?}"
        );
        assert!(
            text.iter().any(|e| e.contains("p.config.bogus")),
            "{text:?}"
        );
        let mut errs = Errors::default();
        let p = Prometheus::build(&json!({}), "p", &mut errs).unwrap();
        assert!(!p.has_log(), "all switches default off, as in Kong 3.x");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
