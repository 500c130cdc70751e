//! OpenTelemetry through the real binary: W3C / B3 propagation to the upstream and OTLP/HTTP
//! protobuf export, decoded with the official opentelemetry-proto types.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

/// An OTLP/HTTP receiver keeping every decoded export request (and its content type).
async fn collector() -> (String, Received<(String, ExportTraceServiceRequest)>) {
    let (addr, got) = receiver(|headers, body| {
        let ct = headers
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let auth = headers.get("x-collector-token").is_some();
        (
            format!("{ct}|{auth}"),
            ExportTraceServiceRequest::decode(body).unwrap(),
        )
    })
    .await;
    (format!("http://{addr}/v1/traces"), got)
}

fn spans(got: &Arc<Mutex<Vec<(String, ExportTraceServiceRequest)>>>) -> Vec<Span> {
    got.lock()
        .unwrap()
        .iter()
        .flat_map(|(_, r)| r.resource_spans.iter())
        .flat_map(|rs| rs.scope_spans.iter())
        .flat_map(|ss| ss.spans.iter().cloned())
        .collect()
}

async fn wait_spans(
    got: &Arc<Mutex<Vec<(String, ExportTraceServiceRequest)>>>,
    n: usize,
) -> Vec<Span> {
    for _ in 0..200 {
        let s = spans(got);
        if s.len() >= n {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("fewer than {n} spans exported: {:?}", spans(got));
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn attr(s: &Span, key: &str) -> Option<String> {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    s.attributes.iter().find(|a| a.key == key).and_then(|a| {
        match a.value.as_ref()?.value.as_ref()? {
            Value::StringValue(v) => Some(v.clone()),
            Value::IntValue(i) => Some(i.to_string()),
            _ => None,
        }
    })
}

fn config(origin: &str, endpoint: &str, otel: &str) -> String {
    format!(
        r#"_format_version: "3.0"
consumers:
  - username: alice
    keyauth_credentials:
      - key: alice-trace-key
services:
  - name: traced
    url: {origin}
    routes:
      - name: r
        paths: [/]
        plugins:
          - name: key-auth
          - name: opentelemetry
            config:
              traces_endpoint: {endpoint}
              headers: {{x-collector-token: secret-collector-token}}
              resource_attributes: {{service.name: edge-gateway, deployment.environment: test}}
              queue: {{max_batch_size: 10, max_coalescing_delay: 0.05}}
{otel}"#
    )
}

#[tokio::test]
async fn continues_w3c_traces_and_exports_otlp_spans() {
    let origin = Origin::start("a").await;
    let (endpoint, got) = collector().await;
    let gw = Gw::start(&config(
        &origin.url(),
        &endpoint,
        "              http_response_header_for_traceid: x-trace-id\n",
    ))
    .await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";
    let r = get(
        gw.proxy,
        "/orders",
        &[
            ("traceparent", &format!("00-{trace}-{parent}-01")),
            ("apikey", "alice-trace-key"),
        ],
    )
    .await
    .unwrap();
    assert_status(&r, 200);
    assert_eq!(r.header("x-trace-id").unwrap(), trace);
    let sent = r.upstream_header("traceparent").unwrap();
    let parts: Vec<&str> = sent.split('-').collect();
    assert_eq!(parts[1], trace);
    assert_ne!(
        parts[2], parent,
        "the upstream's parent is the gateway's span"
    );
    assert_eq!(parts[3], "01");

    let all = wait_spans(&got, 4).await;
    let root = all.iter().find(|s| s.name == "kong").unwrap();
    assert_eq!(hex(&root.trace_id), trace);
    assert_eq!(hex(&root.parent_span_id), parent);
    assert_eq!(root.kind, 2);
    assert_eq!(attr(root, "http.method").unwrap(), "GET");
    assert_eq!(attr(root, "http.status_code").unwrap(), "200");
    assert_eq!(attr(root, "kong.route.name").unwrap(), "r");
    assert_eq!(
        attr(root, "kong.request.id").unwrap(),
        r.header("x-request-id").unwrap()
    );
    assert!(root.end_time_unix_nano >= root.start_time_unix_nano);
    let auth = all
        .iter()
        .find(|s| s.name == "kong.access.plugin.key-auth")
        .unwrap();
    assert_eq!(auth.parent_span_id, root.span_id);
    // Response phases are spans too (the opentelemetry plugin's own header phase).
    let header = all
        .iter()
        .find(|s| s.name == "kong.header_filter.plugin.opentelemetry")
        .unwrap();
    assert_eq!(header.parent_span_id, root.span_id);
    let balancer = all.iter().find(|s| s.name == "kong.balancer").unwrap();
    assert_eq!(hex(&balancer.span_id), parts[2]);
    assert_eq!(balancer.parent_span_id, root.span_id);
    assert_eq!(balancer.kind, 3);
    assert_eq!(
        attr(balancer, "net.peer.port").unwrap(),
        origin.port().to_string()
    );
    assert!(balancer.start_time_unix_nano >= root.start_time_unix_nano);

    let exports = got.lock().unwrap().clone();
    assert!(
        exports[0].0.starts_with("application/x-protobuf|true"),
        "{}",
        exports[0].0
    );
    let res = exports[0].1.resource_spans[0].resource.clone().unwrap();
    let service = res
        .attributes
        .iter()
        .find(|a| a.key == "service.name")
        .unwrap();
    assert!(format!("{service:?}").contains("edge-gateway"));

    // A refused request is traced too, with the refusing plugin's span.
    let r = gw.get("/orders").await;
    assert_status(&r, 401);
    let mut refused = false;
    for _ in 0..200 {
        refused = spans(&got)
            .iter()
            .any(|s| s.name == "kong" && attr(s, "http.status_code").as_deref() == Some("401"));
        if refused {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        refused,
        "no root span for the refused request: {:?}",
        spans(&got)
    );
    assert!(!gw.logs().contains("secret-collector-token"));
}

#[tokio::test]
async fn new_traces_b3_injection_and_sampling() {
    let origin = Origin::start("a").await;
    let (endpoint, got) = collector().await;
    let gw = Gw::start(&config(
        &origin.url(),
        &endpoint,
        "              propagation: {inject: [b3-single, w3c]}\n              sampling_rate: 0\n",
    ))
    .await;
    // No incoming context: a new trace, injected in both formats, not sampled.
    let r = get(gw.proxy, "/", &[("apikey", "alice-trace-key")])
        .await
        .unwrap();
    assert_status(&r, 200);
    let b3 = r.upstream_header("b3").unwrap();
    let tp = r.upstream_header("traceparent").unwrap();
    let (t, rest) = b3.split_once('-').unwrap();
    assert_eq!(t.len(), 32);
    assert!(rest.ends_with("-0"));
    assert_eq!(tp, format!("00-{t}-{}-00", rest.trim_end_matches("-0")));

    // The caller's sampled flag wins over sampling_rate 0; B3 headers are understood.
    let r = get(
        gw.proxy,
        "/",
        &[
            ("apikey", "alice-trace-key"),
            ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
            ("x-b3-spanid", "e457b5a2e4d86bd1"),
            ("x-b3-sampled", "1"),
        ],
    )
    .await
    .unwrap();
    assert!(r
        .upstream_header("b3")
        .unwrap()
        .starts_with("80f198ee56343ba864fe8b2a57d3eff7-"));
    let all = wait_spans(&got, 3).await;
    assert!(all
        .iter()
        .all(|s| hex(&s.trace_id) == "80f198ee56343ba864fe8b2a57d3eff7"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        spans(&got).len(),
        all.len(),
        "the unsampled trace was not exported"
    );
}
