//! Request tracing shared by the proxy and the `opentelemetry` plugin: trace context
//! extraction (W3C `traceparent`, B3 single and multi header, Jaeger `uber-trace-id`),
//! injection, and the spans the proxy records for traced routes.

use std::time::{SystemTime, UNIX_EPOCH};

use http::HeaderMap;

/// Ids of the current request's trace, kept in `Ctx::state` for propagation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceIds {
    /// Trace id.
    pub trace_id: [u8; 16],
    /// The caller's span, when the request carried a context.
    pub parent_span_id: Option<[u8; 8]>,
    /// The gateway's root span (`kong`).
    pub root_span_id: [u8; 8],
    /// The span of the upstream call (`kong.balancer`): the parent the upstream sees.
    pub upstream_span_id: [u8; 8],
    /// The caller's sampling decision, if it sent one.
    pub sampled: Option<bool>,
}

/// Span kinds (OTLP numbering).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    /// Internal work.
    Internal = 1,
    /// Serving the client.
    Server = 2,
    /// Calling the upstream.
    Client = 3,
}

/// An attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    /// String.
    Str(String),
    /// Integer.
    Int(i64),
}

/// One finished span.
#[derive(Debug, Clone)]
pub struct SpanRecord {
    /// Name (`kong.access.plugin.key-auth`, `kong.balancer`).
    pub name: String,
    /// Span id.
    pub span_id: [u8; 8],
    /// Parent span id.
    pub parent_span_id: [u8; 8],
    /// Kind.
    pub kind: SpanKind,
    /// Start, Unix nanoseconds.
    pub start_unix_nanos: u64,
    /// End, Unix nanoseconds.
    pub end_unix_nanos: u64,
    /// Attributes.
    pub attributes: Vec<(&'static str, AttrValue)>,
    /// Error status.
    pub error: bool,
}

/// The trace of one request: ids and the spans recorded by the proxy.
#[derive(Debug, Clone)]
pub struct TraceContext {
    /// Ids (also in `Ctx::state`).
    pub ids: TraceIds,
    /// Request start, Unix nanoseconds.
    pub start_unix_nanos: u64,
    /// Child spans recorded so far.
    pub spans: Vec<SpanRecord>,
}

/// Unix time in nanoseconds.
pub fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// A random non-zero span id.
pub fn span_id() -> [u8; 8] {
    loop {
        let id: [u8; 8] = rand::random();
        if id != [0; 8] {
            return id;
        }
    }
}

fn trace_id() -> [u8; 16] {
    loop {
        let id: [u8; 16] = rand::random();
        if id != [0; 16] {
            return id;
        }
    }
}

fn hex_to<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    (out != [0u8; N]).then_some(out)
}

/// Lower-case hex.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A 64-bit id padded to a 128-bit trace id (B3 and Jaeger allow 16 hex digits).
fn trace_from(s: &str) -> Option<[u8; 16]> {
    if s.len() == 16 {
        let short: [u8; 8] = hex_to(s)?;
        let mut t = [0u8; 16];
        t[8..].copy_from_slice(&short);
        Some(t)
    } else {
        hex_to(s)
    }
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

/// A caller's context: trace id, parent span id, sampling decision (each may be absent).
pub type Extracted = (Option<[u8; 16]>, Option<[u8; 8]>, Option<bool>);

/// Reads the caller's trace context: W3C, then B3 (single, multi), then Jaeger.
pub fn extract(h: &HeaderMap) -> Option<Extracted> {
    if let Some(tp) = header(h, "traceparent") {
        let parts: Vec<&str> = tp.split('-').collect();
        if let [version, t, s, flags] = parts.as_slice() {
            if *version != "ff" && version.len() == 2 {
                if let (Some(t), Some(s)) = (hex_to::<16>(t), hex_to::<8>(s)) {
                    let sampled = u8::from_str_radix(flags, 16).ok().map(|f| f & 1 == 1);
                    return Some((Some(t), Some(s), sampled));
                }
            }
        }
    }
    if let Some(b3) = header(h, "b3") {
        let parts: Vec<&str> = b3.split('-').collect();
        match parts.as_slice() {
            ["0"] => return Some((None, None, Some(false))),
            ["1"] | ["d"] => return Some((None, None, Some(true))),
            [t, s, rest @ ..] => {
                if let (Some(t), Some(s)) = (trace_from(t), hex_to::<8>(s)) {
                    let sampled = rest.first().map(|f| *f == "1" || *f == "d");
                    return Some((Some(t), Some(s), sampled));
                }
            }
            _ => {}
        }
    }
    if let (Some(t), Some(s)) = (header(h, "x-b3-traceid"), header(h, "x-b3-spanid")) {
        if let (Some(t), Some(s)) = (trace_from(t), hex_to::<8>(s)) {
            let sampled = header(h, "x-b3-sampled").map(|v| v == "1" || v == "true");
            return Some((Some(t), Some(s), sampled));
        }
    }
    if let Some(u) = header(h, "uber-trace-id") {
        let parts: Vec<&str> = u.split(':').collect();
        if let [t, s, _, flags] = parts.as_slice() {
            let pad = |x: &str| format!("{x:0>16}");
            let t = if t.len() <= 16 {
                pad(t)
            } else {
                format!("{t:0>32}")
            };
            if let (Some(t), Some(s)) = (trace_from(&t), hex_to::<8>(&pad(s))) {
                let sampled = u8::from_str_radix(flags, 16).ok().map(|f| f & 1 == 1);
                return Some((Some(t), Some(s), sampled));
            }
        }
    }
    None
}

impl TraceContext {
    /// Starts a trace for a request: continues the caller's, or begins a new one.
    pub fn start(h: &HeaderMap, start_unix_nanos: u64) -> TraceContext {
        let (t, parent, sampled) = extract(h).unwrap_or((None, None, None));
        TraceContext {
            ids: TraceIds {
                trace_id: t.unwrap_or_else(trace_id),
                parent_span_id: parent,
                root_span_id: span_id(),
                upstream_span_id: span_id(),
                sampled,
            },
            start_unix_nanos,
            spans: Vec::new(),
        }
    }

    /// Records a finished child span of the root span.
    pub fn child(&mut self, name: String, kind: SpanKind, start: u64, end: u64) -> &mut SpanRecord {
        self.spans.push(SpanRecord {
            name,
            span_id: span_id(),
            parent_span_id: self.ids.root_span_id,
            kind,
            start_unix_nanos: start,
            end_unix_nanos: end.max(start),
            attributes: Vec::new(),
            error: false,
        });
        let last = self.spans.len() - 1;
        &mut self.spans[last]
    }
}

/// Is this trace sampled at `rate` (0..=1)? The caller's decision wins; otherwise the trace
/// id decides, so every node (and every phase) agrees without coordination.
pub fn sampled(ids: &TraceIds, rate: f64) -> bool {
    if let Some(s) = ids.sampled {
        return s;
    }
    let mut v = [0u8; 8];
    v.copy_from_slice(&ids.trace_id[8..]);
    let x = u64::from_be_bytes(v) >> 11;
    (x as f64) < rate * (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.insert(*k, v.parse().unwrap());
        }
        m
    }

    #[test]
    fn extracts_w3c_b3_and_jaeger() {
        let (t, s, f) = extract(&h(&[(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )]))
        .unwrap();
        assert_eq!(hex(&t.unwrap()), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(hex(&s.unwrap()), "00f067aa0ba902b7");
        assert_eq!(f, Some(true));
        let (t, s, f) = extract(&h(&[(
            "b3",
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-0",
        )]))
        .unwrap();
        assert_eq!(hex(&t.unwrap()), "80f198ee56343ba864fe8b2a57d3eff7");
        assert_eq!(hex(&s.unwrap()), "e457b5a2e4d86bd1");
        assert_eq!(f, Some(false));
        let (t, _, _) = extract(&h(&[
            ("x-b3-traceid", "a3ce929d0e0e4736"),
            ("x-b3-spanid", "00f067aa0ba902b7"),
        ]))
        .unwrap();
        assert_eq!(hex(&t.unwrap()), "0000000000000000a3ce929d0e0e4736");
        let (t, s, f) = extract(&h(&[(
            "uber-trace-id",
            "a3ce929d0e0e4736:f067aa0ba902b7:0:1",
        )]))
        .unwrap();
        assert_eq!(hex(&t.unwrap()), "0000000000000000a3ce929d0e0e4736");
        assert_eq!(hex(&s.unwrap()), "00f067aa0ba902b7");
        assert_eq!(f, Some(true));
        // All-zero ids and garbage are not contexts.
        assert!(extract(&h(&[(
            "traceparent",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01"
        )]))
        .is_none());
        assert!(extract(&h(&[("traceparent", "garbage")])).is_none());
    }

    #[test]
    fn sampling_is_deterministic_per_trace() {
        let ids = TraceContext::start(&HeaderMap::new(), 0).ids;
        assert!(sampled(&ids, 1.0));
        assert!(!sampled(&ids, 0.0));
        assert_eq!(sampled(&ids, 0.5), sampled(&ids, 0.5));
        let forced = TraceIds {
            sampled: Some(false),
            ..ids
        };
        assert!(!sampled(&forced, 1.0));
    }
}
