//! What the log phase sees of a finished request: typed facts for metrics, and Kong's
//! serialized log format (`kong.log.serialize()`) for the log plugins.
//!
//! Built by the proxy only for routes that have a log-phase plugin, completed when the
//! response body has been sent (sizes and total latency are the real ones). Values of
//! sensitive headers and query arguments — `Authorization`, `Cookie`, API-key names and
//! whatever the route's plugins declare — are replaced by `REDACTED` before any plugin sees
//! them.

use std::net::IpAddr;
use std::sync::Arc;

use serde_json::{json, Map, Value};

/// A route, service or consumer as the log names it.
#[derive(Debug, Clone, Default)]
pub struct EntityRef {
    /// Entity id.
    pub id: Arc<str>,
    /// Name (username for consumers).
    pub name: Option<Arc<str>>,
    /// Consumer custom id.
    pub custom_id: Option<Arc<str>>,
}

/// The replacement for sensitive values.
pub const REDACTED: &str = "REDACTED";

/// Header and query names always redacted (lower case).
pub const ALWAYS_REDACTED: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
    "apikey",
    "api_key",
    "api-key",
    "access_token",
    "id_token",
    "refresh_token",
    "token",
    "jwt",
    "password",
    "client_secret",
    "code",
    "state",
    "digest",
];

/// One finished request.
#[derive(Debug, Clone, Default)]
pub struct LogEntry {
    /// Request start, Unix milliseconds.
    pub started_at_ms: u64,
    /// Gateway request id.
    pub request_id: String,
    /// Client address (after trusted-proxy resolution).
    pub client_ip: Option<IpAddr>,
    /// Method.
    pub method: String,
    /// `http` / `https`.
    pub scheme: &'static str,
    /// Request host.
    pub host: String,
    /// Port the client addressed.
    pub port: u16,
    /// Path as sent (no query).
    pub path: String,
    /// Query arguments, sensitive values redacted.
    pub query: Vec<(String, String)>,
    /// Request headers, sensitive values redacted.
    pub request_headers: Vec<(String, String)>,
    /// Request body size (Content-Length), bytes.
    pub request_size: u64,
    /// Request line and headers as received, bytes (approximate: HTTP/1 framing; for
    /// bandwidth metrics).
    pub request_head_size: u64,
    /// Path and query sent upstream.
    pub upstream_uri: Option<String>,
    /// Status sent to the client.
    pub status: u16,
    /// Upstream status, when the upstream answered.
    pub upstream_status: Option<u16>,
    /// Response headers, sensitive values redacted.
    pub response_headers: Vec<(String, String)>,
    /// Response body bytes sent.
    pub response_size: u64,
    /// Whole request, ms.
    pub latency_total_ms: u64,
    /// Upstream part (request sent to response head), ms.
    pub latency_upstream_ms: Option<u64>,
    /// Matched route.
    pub route: Option<EntityRef>,
    /// Its service.
    pub service: Option<EntityRef>,
    /// Authenticated consumer.
    pub consumer: Option<EntityRef>,
    /// Credential identifier of the authentication.
    pub credential: Option<String>,
    /// Upstream target `host:port` of the last try.
    pub upstream_target: Option<String>,
    /// Plugin that answered instead of the upstream.
    pub refused_by: Option<&'static str>,
    /// TLS version of the client connection.
    pub tls_version: Option<&'static str>,
    /// The request's trace, on routes with the opentelemetry plugin.
    pub trace: Option<crate::trace::TraceContext>,
}

impl LogEntry {
    /// Gateway latency (total minus upstream), ms.
    pub fn latency_gateway_ms(&self) -> u64 {
        self.latency_total_ms
            .saturating_sub(self.latency_upstream_ms.unwrap_or(0))
    }

    /// `upstream` when the upstream answered, `kong` when the gateway did (Kong's `source`).
    pub fn source(&self) -> &'static str {
        if self.upstream_status.is_some() {
            "upstream"
        } else {
            "kong"
        }
    }

    /// Kong's serialized log object.
    pub fn to_kong_json(&self) -> Value {
        fn table(pairs: &[(String, String)]) -> Value {
            let mut m = Map::new();
            for (k, v) in pairs {
                match m.get_mut(k) {
                    Some(Value::Array(a)) => a.push(Value::String(v.clone())),
                    Some(existing) => {
                        let first = existing.take();
                        *existing = Value::Array(vec![first, Value::String(v.clone())]);
                    }
                    None => {
                        m.insert(k.clone(), Value::String(v.clone()));
                    }
                }
            }
            Value::Object(m)
        }
        let entity = |e: &Option<EntityRef>| {
            e.as_ref().map(|e| {
                let mut o = json!({ "id": &*e.id });
                if let Some(n) = &e.name {
                    o["name"] = json!(&**n);
                }
                o
            })
        };
        let qs = if self.query.is_empty() {
            String::new()
        } else {
            let parts: Vec<String> = self.query.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("?{}", parts.join("&"))
        };
        let default_port = matches!((self.scheme, self.port), ("http", 80) | ("https", 443));
        let authority = if default_port {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        };
        let mut v = json!({
            "request": {
                "method": self.method,
                "uri": format!("{}{qs}", self.path),
                "url": format!("{}://{authority}{}{qs}", self.scheme, self.path),
                "size": self.request_size,
                "querystring": table(&self.query),
                "headers": table(&self.request_headers),
                "id": self.request_id,
            },
            "upstream_uri": self.upstream_uri.clone().unwrap_or_default(),
            "response": {
                "status": self.status,
                "size": self.response_size,
                "headers": table(&self.response_headers),
            },
            "latencies": {
                "request": self.latency_total_ms,
                "proxy": self.latency_upstream_ms.map_or(-1, |v| v as i64),
                "kong": self.latency_gateway_ms(),
            },
            "client_ip": self.client_ip.map(|ip| ip.to_string()),
            "started_at": self.started_at_ms,
            "source": self.source(),
        });
        if let Some(r) = entity(&self.route) {
            v["route"] = r;
        }
        if let Some(s) = entity(&self.service) {
            v["service"] = s;
        }
        if let Some(c) = &self.consumer {
            let mut o = json!({ "id": &*c.id });
            if let Some(n) = &c.name {
                o["username"] = json!(&**n);
            }
            if let Some(n) = &c.custom_id {
                o["custom_id"] = json!(&**n);
            }
            v["consumer"] = o;
        }
        if let Some(c) = &self.credential {
            v["authenticated_entity"] = json!({ "id": c });
        }
        if let Some(s) = self.upstream_status {
            v["upstream_status"] = json!(s.to_string());
        }
        if let Some(t) = &self.upstream_target {
            v["tries"] = json!([{ "balancer_latency": 0, "ip": t.rsplit_once(':').map_or(t.as_str(), |(h, _)| h), "port": t.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok()) }]);
        }
        if let Some(t) = self.tls_version {
            v["request"]["tls"] = json!({ "version": t });
        }
        if let Some(p) = self.refused_by {
            v["refused_by"] = json!(p);
        }
        v
    }
}

/// Copies headers, redacting sensitive values.
pub fn redact_headers(h: &http::HeaderMap, extra: &[String]) -> Vec<(String, String)> {
    h.iter()
        .map(|(k, v)| {
            let name = k.as_str();
            let value = if is_sensitive(name, extra) {
                REDACTED.to_string()
            } else {
                String::from_utf8_lossy(v.as_bytes()).into_owned()
            };
            (name.to_string(), value)
        })
        .collect()
}

/// Splits a query string into pairs, redacting sensitive values.
pub fn redact_query(q: Option<&str>, extra: &[String]) -> Vec<(String, String)> {
    let Some(q) = q else {
        return Vec::new();
    };
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let decoded = percent_encoding::percent_decode_str(k).decode_utf8_lossy();
            let value = if is_sensitive(&decoded.to_ascii_lowercase(), extra) {
                REDACTED.to_string()
            } else {
                v.to_string()
            };
            (k.to_string(), value)
        })
        .collect()
}

fn is_sensitive(name: &str, extra: &[String]) -> bool {
    ALWAYS_REDACTED.iter().any(|s| name.eq_ignore_ascii_case(s))
        || extra.iter().any(|s| name.eq_ignore_ascii_case(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sensitive_values_are_redacted() {
        let mut h = http::HeaderMap::new();
        h.insert("authorization", "Bearer abc".parse().unwrap());
        h.insert("x-my-key", "k".parse().unwrap());
        h.insert("accept", "*/*".parse().unwrap());
        let r = redact_headers(&h, &["x-my-key".to_string()]);
        assert!(r.contains(&("authorization".into(), REDACTED.into())));
        assert!(r.contains(&("x-my-key".into(), REDACTED.into())));
        assert!(r.contains(&("accept".into(), "*/*".into())));
        let q = redact_query(Some("a=1&apikey=secret&Token=t"), &[]);
        assert_eq!(
            q,
            vec![
                ("a".into(), "1".into()),
                ("apikey".into(), REDACTED.into()),
                ("Token".into(), REDACTED.into())
            ]
        );
    }

    #[test]
    fn kong_shape() {
        let e = LogEntry {
            method: "GET".into(),
            scheme: "http",
            host: "example.com".into(),
            port: 8000,
            path: "/a".into(),
            query: vec![("x".into(), "1".into())],
            status: 200,
            upstream_status: Some(200),
            latency_total_ms: 7,
            latency_upstream_ms: Some(5),
            ..Default::default()
        };
        let v = e.to_kong_json();
        assert_eq!(v["request"]["url"], "http://example.com:8000/a?x=1");
        assert_eq!(v["request"]["uri"], "/a?x=1");
        assert_eq!(v["latencies"]["kong"], 2);
        assert_eq!(v["source"], "upstream");
        assert_eq!(v["upstream_status"], "200");
    }
}
