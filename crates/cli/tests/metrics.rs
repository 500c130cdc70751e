//! Prometheus metrics through the real binary: the `prometheus` plugin's Kong-named series
//! scraped over HTTP from the status listener (and the Admin API), parsed, and checked
//! against what the client saw.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;

#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A small parser of the text exposition format (samples only; checks `# TYPE` lines).
fn parse(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    let mut typed = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split(' ');
            let name = it.next().unwrap().to_string();
            let kind = it.next().unwrap();
            assert!(
                ["counter", "gauge", "histogram"].contains(&kind),
                "bad type line: {line}"
            );
            assert!(!typed.contains(&name), "family {name} typed twice");
            typed.push(name);
            continue;
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, rest) = match line.find(['{', ' ']) {
            Some(i) => line.split_at(i),
            None => panic!("bad line: {line}"),
        };
        let mut labels = BTreeMap::new();
        let value_text = if let Some(body) = rest.strip_prefix('{') {
            let mut chars = body.char_indices();
            let mut key = String::new();
            let end;
            loop {
                let (i, c) = chars.next().expect("unterminated labels");
                match c {
                    '}' => {
                        end = i;
                        break;
                    }
                    ',' => {}
                    '=' => {
                        assert_eq!(chars.next().unwrap().1, '"', "{line}");
                        let mut v = String::new();
                        loop {
                            let (_, c) = chars.next().unwrap();
                            match c {
                                '\\' => match chars.next().unwrap().1 {
                                    'n' => v.push('\n'),
                                    c => v.push(c),
                                },
                                '"' => break,
                                c => v.push(c),
                            }
                        }
                        labels.insert(std::mem::take(&mut key), v);
                    }
                    c => key.push(c),
                }
            }
            &body[end + 1..]
        } else {
            rest
        };
        let value: f64 = value_text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
        let family = name
            .trim_end_matches("_bucket")
            .trim_end_matches("_count")
            .trim_end_matches("_sum");
        assert!(
            typed.iter().any(|t| t == name || t == family),
            "sample without # TYPE: {line}"
        );
        out.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    out
}

fn select<'a>(samples: &'a [Sample], name: &str, want: &[(&str, &str)]) -> Vec<&'a Sample> {
    samples
        .iter()
        .filter(|s| {
            s.name == name
                && want
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect()
}

fn one(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> f64 {
    let found = select(samples, name, want);
    assert_eq!(found.len(), 1, "{name} {want:?}: {found:?}");
    found[0].value
}

async fn scrape(addr: SocketAddr) -> (String, Vec<Sample>) {
    let r = get(addr, "/metrics", &[]).await.unwrap();
    assert_status(&r, 200);
    assert_eq!(
        r.header("content-type").unwrap(),
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = r.text();
    let samples = parse(&text);
    (text, samples)
}

fn requests_total(samples: &[Sample]) -> f64 {
    select(samples, "kong_http_requests_total", &[])
        .iter()
        .map(|s| s.value)
        .sum()
}

/// Scrapes until the request counters add up to `n` (the log phase runs once the body is
/// sent, a moment after the client has it).
async fn scrape_when(addr: SocketAddr, n: usize) -> (String, Vec<Sample>) {
    for _ in 0..100 {
        let (text, samples) = scrape(addr).await;
        if requests_total(&samples) as usize >= n {
            return (text, samples);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (text, _) = scrape(addr).await;
    panic!("counters never reached {n}:\n{text}");
}

fn config(a: &Origin, b: &Origin, prometheus: &str) -> String {
    format!(
        r#"_format_version: "3.0"
consumers:
  - username: alice
    keyauth_credentials:
      - key: alice-metrics-secret
upstreams:
  - name: backend
    healthchecks:
      active:
        http_path: /health
        healthy: {{interval: 0.2, successes: 1}}
        unhealthy: {{interval: 0.2, http_failures: 1}}
    targets:
      - target: 127.0.0.1:{b}
services:
  - name: api
    url: {a}
    routes:
      - name: public
        paths: [/public]
  - name: guarded
    host: backend
    protocol: http
    routes:
      - name: private
        paths: [/private]
        plugins:
          - name: key-auth
            config: {{lockout: {{threshold: 2, window: 60, cooldown: 30}}}}
plugins:
  - name: prometheus
    config: {prometheus}
"#,
        a = a.url(),
        b = b.port()
    )
}

const ALL_ON: &str = "{status_code_metrics: true, latency_metrics: true, bandwidth_metrics: true, upstream_health_metrics: true}";

fn status_settings() -> (u16, String) {
    let port = free_port();
    (port, format!("status_listen = \"127.0.0.1:{port}\"\n"))
}

#[tokio::test]
async fn kong_metrics_match_what_clients_saw() {
    let a = Origin::start("a").await;
    let b = Origin::start("b").await;
    let (port, settings) = status_settings();
    let status: SocketAddr = ([127, 0, 0, 1], port).into();
    let gw = Gw::start_with(&config(&a, &b, ALL_ON), &settings).await;

    // What the client saw, by (route, code).
    let mut seen: HashMap<(&str, u16), usize> = HashMap::new();
    for path in [
        "/public/status/200",
        "/public/status/200",
        "/public/status/200",
        "/public/status/404",
        "/public/status/404",
        "/public/status/503",
    ] {
        let r = gw.get(path).await;
        *seen.entry(("public", r.status)).or_default() += 1;
    }
    for _ in 0..3 {
        let r = get(gw.proxy, "/private", &[("apikey", "alice-metrics-secret")])
            .await
            .unwrap();
        assert_status(&r, 200);
        *seen.entry(("private", 200)).or_default() += 1;
    }
    // Wrong keys: refused by key-auth, then locked out (threshold 2).
    for i in 0..4 {
        let key = format!("wrong-key-{i}");
        let r = get(gw.proxy, "/private", &[("apikey", &key)])
            .await
            .unwrap();
        assert!([401, 429].contains(&r.status), "{}", r.text());
        *seen.entry(("private", r.status)).or_default() += 1;
    }
    assert!(seen.contains_key(&("private", 429)), "{seen:?}");
    // Unmatched: no service, so no series (as in Kong).
    assert_status(&gw.get("/nowhere").await, 404);

    let total: usize = seen.values().sum();
    let (text, samples) = scrape_when(status, total).await;

    // Exact counters per label set; every series has Kong 3.x's labels.
    for ((route, code), n) in &seen {
        let service = if *route == "public" { "api" } else { "guarded" };
        let source = if [401, 429].contains(code) {
            "kong"
        } else {
            "service"
        };
        let v = one(
            &samples,
            "kong_http_requests_total",
            &[
                ("service", service),
                ("route", route),
                ("code", &code.to_string()),
                ("source", source),
                ("workspace", "default"),
                ("consumer", ""),
            ],
        );
        assert_eq!(v as usize, *n, "{route} {code}:\n{text}");
    }
    assert_eq!(requests_total(&samples) as usize, total, "{text}");
    for s in select(&samples, "kong_http_requests_total", &[]) {
        let keys: Vec<&str> = s.labels.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "code",
                "consumer",
                "route",
                "service",
                "source",
                "workspace"
            ]
        );
    }

    // Histograms: Kong's buckets, cumulative, +Inf = _count = requests of the route.
    for (route, service) in [("public", "api"), ("private", "guarded")] {
        let n: usize = seen
            .iter()
            .filter(|((r, _), _)| *r == route)
            .map(|(_, n)| *n)
            .sum();
        let upstream_n: usize = seen
            .iter()
            .filter(|((r, c), _)| *r == route && ![401, 429].contains(c))
            .map(|(_, n)| *n)
            .sum();
        for (name, want, bounds) in [
            (
                "kong_request_latency_ms",
                n,
                "25,50,80,100,250,400,700,1000,2000,5000,10000,30000,60000,+Inf",
            ),
            (
                "kong_upstream_latency_ms",
                upstream_n,
                "25,50,80,100,250,400,700,1000,2000,5000,10000,30000,60000,+Inf",
            ),
            (
                "kong_kong_latency_ms",
                n,
                "1,2,5,7,10,15,20,30,50,75,100,200,500,750,1000,+Inf",
            ),
        ] {
            let labels = [
                ("service", service),
                ("route", route),
                ("workspace", "default"),
            ];
            let buckets = select(&samples, &format!("{name}_bucket"), &labels);
            let les: Vec<&str> = buckets.iter().map(|s| s.labels["le"].as_str()).collect();
            assert_eq!(les.join(","), bounds, "{name}");
            let mut last = 0.0;
            for s in &buckets {
                assert!(s.value >= last, "{name} not monotonic:\n{text}");
                last = s.value;
            }
            assert_eq!(last as usize, want, "{name} {route} +Inf:\n{text}");
            assert_eq!(
                one(&samples, &format!("{name}_count"), &labels) as usize,
                want,
                "{name} {route} count"
            );
            assert!(one(&samples, &format!("{name}_sum"), &labels) >= 0.0);
        }
        for direction in ["ingress", "egress"] {
            let v = one(
                &samples,
                "kong_bandwidth_bytes",
                &[
                    ("service", service),
                    ("route", route),
                    ("direction", direction),
                    ("workspace", "default"),
                    ("consumer", ""),
                ],
            );
            assert!(v > 0.0, "{direction} {route}");
        }
    }

    // Node-level metrics.
    assert_eq!(one(&samples, "kong_datastore_reachable", &[]), 1.0);
    let info = select(&samples, "kong_node_info", &[]);
    assert_eq!(info.len(), 1);
    assert_eq!(info[0].value, 1.0);
    assert_eq!(info[0].labels["node_id"].len(), 36);
    let node = info[0].labels["node_id"].clone();
    let conn = |state: &str| {
        one(
            &samples,
            "kong_nginx_connections_total",
            &[("node_id", &node), ("subsystem", "http"), ("state", state)],
        )
    };
    assert!(conn("accepted") >= (total + 1) as f64);
    assert_eq!(conn("handled"), conn("accepted"));
    assert!(conn("active") >= 0.0 && conn("reading") == 0.0);
    assert!(
        one(
            &samples,
            "kong_nginx_requests_total",
            &[("node_id", &node), ("subsystem", "http")]
        ) >= (total + 1) as f64
    );
    assert_eq!(one(&samples, "kong_nginx_metric_errors_total", &[]), 0.0);

    // Security events: one per lockout written to the log.
    let lockouts = gw
        .logs()
        .lines()
        .filter(|l| l.contains("\"auth_lockout\""))
        .count();
    assert!(lockouts >= 1);
    assert_eq!(
        one(
            &samples,
            "portcullis_security_events_total",
            &[
                ("kind", "auth_lockout"),
                ("plugin", "key-auth"),
                ("route", "private")
            ]
        ) as usize,
        lockouts,
        "{text}"
    );

    // Upstream health: only the upstream entity, one series per state, 1 on the current one.
    let health = |samples: &[Sample], state: &str| {
        one(
            samples,
            "kong_upstream_target_health",
            &[
                ("upstream", "backend"),
                ("target", &format!("127.0.0.1:{}", b.port())),
                ("address", &format!("127.0.0.1:{}", b.port())),
                ("state", state),
                ("subsystem", "http"),
            ],
        )
    };
    assert_eq!(
        select(&samples, "kong_upstream_target_health", &[]).len(),
        4
    );
    assert_eq!(health(&samples, "healthy"), 1.0);
    assert_eq!(health(&samples, "unhealthy"), 0.0);
    assert_eq!(health(&samples, "healthchecks_off"), 0.0);
    assert_eq!(health(&samples, "dns_error"), 0.0);
    b.health_status.store(500, Ordering::SeqCst);
    let mut went_unhealthy = false;
    for _ in 0..100 {
        let (_, s) = scrape(status).await;
        if health(&s, "unhealthy") == 1.0 {
            assert_eq!(health(&s, "healthy"), 0.0);
            went_unhealthy = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(went_unhealthy, "target never reported unhealthy");

    // Cardinality: 200 distinct paths add no series and no path label.
    let series_before = samples.len();
    let before_200 = one(
        &samples,
        "kong_http_requests_total",
        &[("route", "public"), ("code", "200")],
    );
    for i in 0..200 {
        assert_status(&gw.get(&format!("/public/cardinality-{i}/x")).await, 200);
    }
    let (text, samples) = scrape_when(status, total + 200).await;
    assert_eq!(
        one(
            &samples,
            "kong_http_requests_total",
            &[("route", "public"), ("code", "200")]
        ),
        before_200 + 200.0
    );
    assert_eq!(samples.len(), series_before, "series grew:\n{text}");
    assert!(!text.contains("cardinality-"), "a path leaked into labels");
    assert!(samples.iter().all(|s| !s.labels.contains_key("path")));

    // No credential ever appears in a scrape.
    for secret in ["alice-metrics-secret", "wrong-key-"] {
        assert!(!text.contains(secret), "{secret} leaked");
    }

    // Every metric the sample Grafana dashboard queries is exported.
    let dashboard = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/grafana-dashboard.json"
    ))
    .unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    let mut queried = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("kong_") || word.starts_with("portcullis_") {
                    queried += 1;
                    assert!(
                        samples.iter().any(|s| s.name == word),
                        "dashboard queries {word}, not exported"
                    );
                }
            }
        }
    }
    assert!(queried >= 10);

    // The Admin API serves the same metrics.
    let (admin_text, admin) = scrape(gw.admin).await;
    assert_eq!(
        requests_total(&admin),
        requests_total(&samples),
        "{admin_text}"
    );
    // The status listener also answers /status, and nothing else.
    let st = get(status, "/status", &[]).await.unwrap();
    assert_status(&st, 200);
    assert_eq!(st.json()["ready"], true);
    assert_status(&get(status, "/", &[]).await.unwrap(), 404);
}

#[tokio::test]
async fn per_consumer_fills_the_consumer_label() {
    let a = Origin::start("a").await;
    let b = Origin::start("b").await;
    let (port, settings) = status_settings();
    let status: SocketAddr = ([127, 0, 0, 1], port).into();
    let gw = Gw::start_with(
        &config(
            &a,
            &b,
            "{per_consumer: true, status_code_metrics: true, bandwidth_metrics: true}",
        ),
        &settings,
    )
    .await;
    for _ in 0..2 {
        let r = get(gw.proxy, "/private", &[("apikey", "alice-metrics-secret")])
            .await
            .unwrap();
        assert_status(&r, 200);
    }
    let r = get(gw.proxy, "/private", &[("apikey", "bad-key")])
        .await
        .unwrap();
    assert_status(&r, 401);
    let (text, samples) = scrape_when(status, 3).await;
    let base = [("service", "guarded"), ("route", "private")];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut l = base.to_vec();
        l.extend_from_slice(extra);
        l
    };
    assert_eq!(
        one(
            &samples,
            "kong_http_requests_total",
            &with(&[
                ("code", "200"),
                ("source", "service"),
                ("consumer", "alice")
            ])
        ),
        2.0
    );
    assert_eq!(
        one(
            &samples,
            "kong_http_requests_total",
            &with(&[("code", "401"), ("source", "kong"), ("consumer", "")])
        ),
        1.0
    );
    assert!(
        one(
            &samples,
            "kong_bandwidth_bytes",
            &with(&[("direction", "egress"), ("consumer", "alice")])
        ) > 0.0
    );
    // Latency metrics and upstream health are off: not exported.
    assert!(!text.contains("kong_request_latency_ms"), "{text}");
    assert!(!text.contains("kong_upstream_target_health"), "{text}");
    assert!(!text.contains("alice-metrics-secret"));
}

#[tokio::test]
async fn without_the_plugin_only_node_metrics_are_exported() {
    let a = Origin::start("a").await;
    let (port, settings) = status_settings();
    let status: SocketAddr = ([127, 0, 0, 1], port).into();
    let gw = Gw::start_with(
        &one_service(&a.url(), "      - name: r\n        paths: [/]\n"),
        &settings,
    )
    .await;
    assert_status(&gw.get("/x").await, 200);
    let (text, samples) = scrape(status).await;
    assert_eq!(one(&samples, "kong_datastore_reachable", &[]), 1.0);
    assert_eq!(select(&samples, "kong_node_info", &[]).len(), 1);
    assert_eq!(
        select(&samples, "kong_nginx_connections_total", &[]).len(),
        7
    );
    assert!(!text.contains("kong_http_requests_total"), "{text}");
    assert!(!text.contains("kong_request_latency_ms"), "{text}");
    assert!(!text.contains("kong_upstream_target_health"), "{text}");
    // The admin listener has /metrics too.
    let (_, admin) = scrape(gw.admin).await;
    assert_eq!(one(&admin, "kong_datastore_reachable", &[]), 1.0);
}
