//! `opentelemetry` (Kong's plugin): trace context propagation and span export over OTLP/HTTP
//! (protobuf), in batches.
//!
//! On routes with this plugin the proxy records a span per plugin access phase
//! (`kong.access.plugin.<name>`) and one for the upstream call (`kong.balancer`) under the
//! request's root span (`kong`). The plugin injects the trace context upstream (W3C by
//! default; B3, Jaeger as configured or as the caller used with `header_type: preserve`),
//! decides sampling (the caller's flag wins; otherwise `sampling_rate`, decided from the trace
//! id so every node agrees), and exports finished traces from a background task through a
//! bounded queue: a slow or dead collector never slows the proxy, and dropped spans are
//! counted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use portcullis_config::{Errors, Obj};
use prost::Message;
use serde_json::Value;

use crate::trace::{self, hex, AttrValue, SpanKind, TraceIds};
use crate::{Access, Ctx, Flow, LogEntry, Plugin, ResponseHead};

/// OTLP protobuf messages (opentelemetry-proto `collector/trace/v1`), the fields we send.
pub mod otlp {
    #![allow(missing_docs)]
    /// `ExportTraceServiceRequest`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExportTraceServiceRequest {
        #[prost(message, repeated, tag = "1")]
        pub resource_spans: Vec<ResourceSpans>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ResourceSpans {
        #[prost(message, optional, tag = "1")]
        pub resource: Option<Resource>,
        #[prost(message, repeated, tag = "2")]
        pub scope_spans: Vec<ScopeSpans>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Resource {
        #[prost(message, repeated, tag = "1")]
        pub attributes: Vec<KeyValue>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ScopeSpans {
        #[prost(message, optional, tag = "1")]
        pub scope: Option<InstrumentationScope>,
        #[prost(message, repeated, tag = "2")]
        pub spans: Vec<Span>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct InstrumentationScope {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub version: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Span {
        #[prost(bytes = "vec", tag = "1")]
        pub trace_id: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub span_id: Vec<u8>,
        #[prost(bytes = "vec", tag = "4")]
        pub parent_span_id: Vec<u8>,
        #[prost(string, tag = "5")]
        pub name: String,
        #[prost(int32, tag = "6")]
        pub kind: i32,
        #[prost(fixed64, tag = "7")]
        pub start_time_unix_nano: u64,
        #[prost(fixed64, tag = "8")]
        pub end_time_unix_nano: u64,
        #[prost(message, repeated, tag = "9")]
        pub attributes: Vec<KeyValue>,
        #[prost(message, optional, tag = "15")]
        pub status: Option<Status>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Status {
        #[prost(string, tag = "2")]
        pub message: String,
        #[prost(int32, tag = "3")]
        pub code: i32,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct KeyValue {
        #[prost(string, tag = "1")]
        pub key: String,
        #[prost(message, optional, tag = "2")]
        pub value: Option<AnyValue>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AnyValue {
        #[prost(oneof = "any_value::Value", tags = "1, 3")]
        pub value: Option<any_value::Value>,
    }
    pub mod any_value {
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum Value {
            #[prost(string, tag = "1")]
            StringValue(String),
            #[prost(int64, tag = "3")]
            IntValue(i64),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Format {
    W3c,
    B3,
    B3Single,
    Jaeger,
}

fn format_of(s: &str) -> Option<Format> {
    Some(match s {
        "w3c" => Format::W3c,
        "b3" => Format::B3,
        "b3-single" => Format::B3Single,
        "jaeger" => Format::Jaeger,
        _ => return None,
    })
}

struct Exporter {
    tx: tokio::sync::mpsc::Sender<otlp::Span>,
}

/// A compiled `opentelemetry` instance.
pub struct OpenTelemetry {
    endpoint: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    resource: Vec<otlp::KeyValue>,
    batch_size: usize,
    flush_delay: Duration,
    send_timeout: Duration,
    sampling_rate: f64,
    inject: Vec<Format>,
    preserve: bool,
    trace_id_header: Option<HeaderName>,
    exporter: OnceLock<Option<Exporter>>,
    /// Spans dropped because the export queue was full.
    pub dropped: Arc<AtomicU64>,
}

fn kv(key: &str, v: AttrValue) -> otlp::KeyValue {
    otlp::KeyValue {
        key: key.to_string(),
        value: Some(otlp::AnyValue {
            value: Some(match v {
                AttrValue::Str(s) => otlp::any_value::Value::StringValue(s),
                AttrValue::Int(i) => otlp::any_value::Value::IntValue(i),
            }),
        }),
    }
}

impl OpenTelemetry {
    /// Validates the config.
    pub fn build(config: &Value, path: &str, errs: &mut Errors) -> Option<OpenTelemetry> {
        let before = errs.len();
        let mut o = Obj::open(config, path, errs)?;
        let endpoint = o
            .opt_str("traces_endpoint", errs)
            .or_else(|| o.opt_str("endpoint", errs));
        match &endpoint {
            None => errs.push(o.field_path("traces_endpoint"), "required field missing"),
            Some(e) if !(e.starts_with("http://") || e.starts_with("https://")) => {
                errs.push(o.field_path("traces_endpoint"), "must be an http(s) URL")
            }
            _ => {}
        }
        if o.get("logs_endpoint").is_some_and(|v| !v.is_null()) {
            errs.push(
                o.field_path("logs_endpoint"),
                "log export is not supported; use http-log or file-log",
            );
        }
        let mut headers = Vec::new();
        let hpath = o.field_path("headers");
        if let Some(Value::Object(m)) = o.get("headers") {
            for (k, v) in m {
                match (
                    HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()),
                    v.as_str().map(HeaderValue::from_str),
                ) {
                    (Ok(n), Some(Ok(v))) => headers.push((n, v)),
                    _ => errs.push(format!("{hpath}.{k}"), "invalid header"),
                }
            }
        }
        let mut resource = vec![kv("service.name", AttrValue::Str("kong".into()))];
        if let Some(Value::Object(m)) = o.get("resource_attributes") {
            for (k, v) in m {
                let v = match v {
                    Value::String(s) => AttrValue::Str(s.clone()),
                    Value::Number(n) if n.is_i64() => AttrValue::Int(n.as_i64().unwrap_or(0)),
                    other => AttrValue::Str(other.to_string()),
                };
                resource.retain(|a| a.key != *k);
                resource.push(kv(k, v));
            }
        }
        let batch_size = o.int_or("batch_span_count", 200, 1, 65_536, errs) as usize;
        let flush_delay = o.opt_f64("batch_flush_delay", errs).unwrap_or(3.0);
        let mut batch_size = batch_size;
        let mut flush_delay = flush_delay;
        let qpath = o.field_path("queue");
        if let Some(q) = o.get("queue").filter(|q| !q.is_null()) {
            if let Some(mut q) = Obj::open(q, qpath, errs) {
                if let Some(n) = q.opt_int("max_batch_size", 1, 1_000_000, errs) {
                    batch_size = n as usize;
                }
                if let Some(d) = q.opt_f64("max_coalescing_delay", errs) {
                    flush_delay = d;
                }
                q.accept(&[
                    "max_entries",
                    "max_bytes",
                    "max_retry_time",
                    "initial_retry_delay",
                    "max_retry_delay",
                    "concurrency_limit",
                    "name",
                ]);
                q.finish(errs);
            }
        }
        let _connect = o.int_or("connect_timeout", 1000, 0, 2_147_483_646, errs);
        let send_timeout = o.int_or("send_timeout", 5000, 0, 2_147_483_646, errs);
        let _read = o.int_or("read_timeout", 5000, 0, 2_147_483_646, errs);
        let sampling_rate = match o.opt_f64("sampling_rate", errs) {
            Some(r) if !(0.0..=1.0).contains(&r) => {
                errs.push(o.field_path("sampling_rate"), "must be between 0 and 1");
                1.0
            }
            Some(r) => r,
            None => 1.0,
        };
        let trace_id_header = match o.opt_str("http_response_header_for_traceid", errs) {
            Some(h) => match HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes()) {
                Ok(n) => Some(n),
                Err(_) => {
                    errs.push(
                        o.field_path("http_response_header_for_traceid"),
                        "invalid header name",
                    );
                    None
                }
            },
            None => None,
        };
        let mut preserve = true;
        let mut inject = vec![Format::W3c];
        if let Some(h) = o.opt_str("header_type", errs) {
            match h.as_str() {
                "preserve" => {}
                "ignore" | "w3c" => preserve = false,
                other => match format_of(other) {
                    Some(f) => {
                        preserve = false;
                        inject = vec![f];
                    }
                    None => errs.push(
                        o.field_path("header_type"),
                        "expected one of: preserve, ignore, w3c, b3, b3-single, jaeger",
                    ),
                },
            }
        }
        let ppath = o.field_path("propagation");
        if let Some(p) = o.get("propagation").filter(|p| !p.is_null()) {
            if let Some(mut p) = Obj::open(p, &ppath, errs) {
                let list = p.str_array("inject", errs);
                if !list.is_empty() {
                    let mut formats = Vec::new();
                    preserve = false;
                    for (i, f) in list.iter().enumerate() {
                        match f.as_str() {
                            "preserve" => preserve = true,
                            other => match format_of(other) {
                                Some(f) => formats.push(f),
                                None => errs.push(
                                    format!("{ppath}.inject[{i}]"),
                                    "expected one of: preserve, w3c, b3, b3-single, jaeger",
                                ),
                            },
                        }
                    }
                    if !formats.is_empty() {
                        inject = formats;
                    }
                }
                if let Some(d) = p.opt_str("default_format", errs) {
                    match format_of(&d) {
                        Some(f) if preserve => inject = vec![f],
                        Some(_) => {}
                        None => errs.push(format!("{ppath}.default_format"), "unsupported format"),
                    }
                }
                // Extraction always understands w3c, b3 and jaeger; `clear` lists headers to drop.
                p.accept(&["extract", "clear"]);
                p.finish(errs);
            }
        }
        o.accept(&["sampling_strategy"]);
        o.finish(errs);
        if errs.len() > before {
            return None;
        }
        Some(OpenTelemetry {
            endpoint: endpoint?,
            headers,
            resource,
            batch_size,
            flush_delay: Duration::from_secs_f64(flush_delay.clamp(0.01, 3600.0)),
            send_timeout: Duration::from_millis(send_timeout as u64),
            sampling_rate,
            inject,
            preserve,
            trace_id_header,
            exporter: OnceLock::new(),
            dropped: Arc::new(AtomicU64::new(0)),
        })
    }

    fn exporter(&self) -> Option<&Exporter> {
        self.exporter
            .get_or_init(|| {
                let handle = tokio::runtime::Handle::try_current().ok()?;
                let (tx, rx) = tokio::sync::mpsc::channel(8 * 1024);
                handle.spawn(export_loop(
                    rx,
                    self.endpoint.clone(),
                    self.headers.clone(),
                    self.resource.clone(),
                    self.batch_size,
                    self.flush_delay,
                    self.send_timeout,
                    self.dropped.clone(),
                ));
                Some(Exporter { tx })
            })
            .as_ref()
    }

    fn inject(&self, ctx: &mut Ctx, ids: &TraceIds) {
        let sampled = trace::sampled(ids, self.sampling_rate);
        let t = hex(&ids.trace_id);
        let s = hex(&ids.upstream_span_id);
        let caller_format = if ctx.headers.contains_key("traceparent") {
            Some(Format::W3c)
        } else if ctx.headers.contains_key("b3") {
            Some(Format::B3Single)
        } else if ctx.headers.contains_key("x-b3-traceid") {
            Some(Format::B3)
        } else if ctx.headers.contains_key("uber-trace-id") {
            Some(Format::Jaeger)
        } else {
            None
        };
        let formats: Vec<Format> = match (self.preserve, caller_format) {
            (true, Some(f)) => vec![f],
            _ => self.inject.clone(),
        };
        let mut put = |name: &'static str, v: String| {
            if let Ok(v) = HeaderValue::from_str(&v) {
                ctx.headers.insert(name, v);
            }
        };
        for f in formats {
            match f {
                Format::W3c => put(
                    "traceparent",
                    format!("00-{t}-{s}-{}", if sampled { "01" } else { "00" }),
                ),
                Format::B3Single => {
                    put("b3", format!("{t}-{s}-{}", if sampled { "1" } else { "0" }))
                }
                Format::B3 => {
                    put("x-b3-traceid", t.clone());
                    put("x-b3-spanid", s.clone());
                    put("x-b3-sampled", if sampled { "1" } else { "0" }.into());
                    if let Some(p) = ids.parent_span_id {
                        put("x-b3-parentspanid", hex(&p));
                    }
                }
                Format::Jaeger => put(
                    "uber-trace-id",
                    format!("{t}:{s}:0:{}", if sampled { "01" } else { "00" }),
                ),
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn export_loop(
    mut rx: tokio::sync::mpsc::Receiver<otlp::Span>,
    endpoint: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    resource: Vec<otlp::KeyValue>,
    batch_size: usize,
    flush_delay: Duration,
    timeout: Duration,
    dropped: Arc<AtomicU64>,
) {
    let client = match build_client(timeout) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "opentelemetry: cannot build the HTTP client");
            return;
        }
    };
    let mut reported = 0;
    loop {
        let Some(first) = rx.recv().await else { break };
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + flush_delay;
        while batch.len() < batch_size {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(s)) => batch.push(s),
                Ok(None) | Err(_) => break,
            }
        }
        let req = otlp::ExportTraceServiceRequest {
            resource_spans: vec![otlp::ResourceSpans {
                resource: Some(otlp::Resource {
                    attributes: resource.clone(),
                }),
                scope_spans: vec![otlp::ScopeSpans {
                    scope: Some(otlp::InstrumentationScope {
                        name: "portcullis".into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                    }),
                    spans: batch,
                }],
            }],
        };
        let body = req.encode_to_vec();
        let mut r = client
            .post(&endpoint)
            .header(http::header::CONTENT_TYPE, "application/x-protobuf");
        for (k, v) in &headers {
            r = r.header(k, v);
        }
        match r.body(body).send().await {
            Ok(resp) if resp.status().is_success() => {}
            Ok(resp) => tracing::warn!(
                status = resp.status().as_u16(),
                "opentelemetry: collector refused a batch"
            ),
            Err(e) => tracing::warn!(error = %e.without_url(), "opentelemetry: export failed"),
        }
        let lost = dropped.load(Ordering::Relaxed);
        if lost != reported {
            tracing::warn!(
                dropped = lost,
                "opentelemetry: export queue full, spans dropped"
            );
            reported = lost;
        }
    }
}

fn build_client(timeout: Duration) -> Result<reqwest::Client, String> {
    crate::sink::outbound_client(Vec::new(), timeout)?
        .build()
        .map_err(|e| e.to_string())
}

impl Plugin for OpenTelemetry {
    fn name(&self) -> &'static str {
        "opentelemetry"
    }

    fn access<'a>(&'a self, ctx: &'a mut Ctx) -> Access<'a> {
        if let Some(ids) = ctx.state.get::<TraceIds>().copied() {
            self.inject(ctx, &ids);
        }
        Access::Now(Flow::Continue)
    }

    fn response_headers(&self, ctx: &mut Ctx, head: &mut ResponseHead) {
        if let (Some(h), Some(ids)) = (&self.trace_id_header, ctx.state.get::<TraceIds>()) {
            if let Ok(v) = HeaderValue::from_str(&hex(&ids.trace_id)) {
                head.headers.insert(h.clone(), v);
            }
        }
    }

    fn has_log(&self) -> bool {
        true
    }

    fn log(&self, entry: &LogEntry) {
        let Some(t) = &entry.trace else {
            return;
        };
        if !trace::sampled(&t.ids, self.sampling_rate) {
            return;
        }
        let Some(exporter) = self.exporter() else {
            return;
        };
        let trace_id = t.ids.trace_id.to_vec();
        let end = t.start_unix_nanos + entry.latency_total_ms * 1_000_000;
        let mut attrs = vec![
            kv("http.method", AttrValue::Str(entry.method.clone())),
            kv("http.scheme", AttrValue::Str(entry.scheme.into())),
            kv("http.host", AttrValue::Str(entry.host.clone())),
            kv("http.target", AttrValue::Str(entry.path.clone())),
            kv("http.status_code", AttrValue::Int(i64::from(entry.status))),
            kv("kong.request.id", AttrValue::Str(entry.request_id.clone())),
        ];
        if let Some(ip) = entry.client_ip {
            attrs.push(kv("net.peer.ip", AttrValue::Str(ip.to_string())));
        }
        if let Some(r) = &entry.route {
            attrs.push(kv("kong.route.id", AttrValue::Str(r.id.to_string())));
            if let Some(n) = &r.name {
                attrs.push(kv("kong.route.name", AttrValue::Str(n.to_string())));
            }
        }
        if let Some(s) = &entry.service {
            attrs.push(kv("kong.service.id", AttrValue::Str(s.id.to_string())));
            if let Some(n) = &s.name {
                attrs.push(kv("kong.service.name", AttrValue::Str(n.to_string())));
            }
        }
        if let Some(c) = &entry.consumer {
            attrs.push(kv("kong.consumer.id", AttrValue::Str(c.id.to_string())));
        }
        let error = entry.status >= 500;
        let status = |error: bool| {
            Some(otlp::Status {
                message: String::new(),
                code: if error { 2 } else { 0 },
            })
        };
        let root = otlp::Span {
            trace_id: trace_id.clone(),
            span_id: t.ids.root_span_id.to_vec(),
            parent_span_id: t.ids.parent_span_id.map(|p| p.to_vec()).unwrap_or_default(),
            name: "kong".into(),
            kind: SpanKind::Server as i32,
            start_time_unix_nano: t.start_unix_nanos,
            end_time_unix_nano: end.max(t.start_unix_nanos),
            attributes: attrs,
            status: status(error),
        };
        let mut spans = vec![root];
        for s in &t.spans {
            spans.push(otlp::Span {
                trace_id: trace_id.clone(),
                span_id: s.span_id.to_vec(),
                parent_span_id: s.parent_span_id.to_vec(),
                name: s.name.clone(),
                kind: s.kind as i32,
                start_time_unix_nano: s.start_unix_nanos,
                end_time_unix_nano: s.end_unix_nanos,
                attributes: s.attributes.iter().map(|(k, v)| kv(k, v.clone())).collect(),
                status: status(s.error),
            });
        }
        for s in spans {
            if exporter.tx.try_send(s).is_err() {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn config_errors_have_paths() {
        let mut errs = Errors::default();
        let cfg = json!({"traces_endpoint": "ftp://x", "sampling_rate": 2, "propagation": {"inject": ["zipkin"]}});
        assert!(OpenTelemetry::build(&cfg, "p.config", &mut errs).is_none());
        let text: Vec<String> = errs.into_vec().iter().map(|e| e.to_string()).collect();
        assert!(
            text.iter().any(|e| e.contains("p.config.traces_endpoint")),
            "{text:?}"
        );
        assert!(
            text.iter().any(|e| e.contains("p.config.sampling_rate")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|e| e.contains("p.config.propagation.inject[0]")),
            "{text:?}"
        );
    }

    #[test]
    fn injects_the_configured_formats() {
        let mut errs = Errors::default();
        let cfg = json!({"traces_endpoint": "http://127.0.0.1:4318/v1/traces", "propagation": {"inject": ["w3c", "b3-single"]}});
        let p = OpenTelemetry::build(&cfg, "c", &mut errs).unwrap();
        let mut ctx = Ctx::new(
            http::Method::GET,
            "/".into(),
            None,
            http::HeaderMap::new(),
            "127.0.0.1".parse().unwrap(),
        );
        let ids = trace::TraceContext::start(&ctx.headers, 0).ids;
        p.inject(&mut ctx, &ids);
        let tp = ctx.headers["traceparent"].to_str().unwrap().to_string();
        assert_eq!(
            tp,
            format!(
                "00-{}-{}-01",
                hex(&ids.trace_id),
                hex(&ids.upstream_span_id)
            )
        );
        assert!(ctx.headers["b3"].to_str().unwrap().ends_with("-1"));
    }
}
