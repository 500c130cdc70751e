//! `http-log` (Kong's plugin): Kong's serialized log entries POSTed (or PUT/PATCHed) as JSON
//! to a collector, through the shared [`crate::sink`] queue: batched per `queue`, retried with
//! exponential backoff, never slowing the proxy.
//!
//! As in Kong, a batch is sent as one JSON object when `queue.max_batch_size` is 1 and as a
//! JSON array otherwise, and a collector status of 400 or more counts as a failure (retried).
//! Unlike Kong, `https` endpoints are verified against the webpki roots.

use std::time::Duration;

use base64::Engine;
use http::{HeaderMap, HeaderName, HeaderValue};
use portcullis_config::{Errors, Obj};
use reqwest::Url;
use serde_json::Value;

use crate::sink::{self, CustomFields, Deliver, QueueConfig, Sink, SinkLog};

/// Largest collector answer read (and discarded) so the connection can be reused.
const MAX_ANSWER: usize = 64 * 1024;

/// The `http-log` plugin: its config is checked and its sink started by [`HttpLog::build`];
/// instances are [`SinkLog`]s.
pub struct HttpLog;

struct Collector {
    client: reqwest::Client,
    url: Url,
    method: reqwest::Method,
    headers: HeaderMap,
    array: bool,
}

/// `scheme://host:port/path` of the endpoint: no user info, no query (either may hold a token).
fn label(url: &Url) -> String {
    format!(
        "{}://{}:{}{}",
        url.scheme(),
        url.host_str().unwrap_or_default(),
        url.port_or_known_default().unwrap_or_default(),
        url.path()
    )
}

impl Deliver for Collector {
    async fn deliver(&self, batch: &[String]) -> Result<(), String> {
        let body = match (self.array, batch) {
            (false, [one]) => one.clone(),
            _ => format!("[{}]", batch.join(",")),
        };
        let resp = self
            .client
            .request(self.method.clone(), self.url.clone())
            .headers(self.headers.clone())
            .body(body)
            .send()
            .await
            // without_url: the URL may carry a token in its query.
            .map_err(|e| e.without_url().to_string())?;
        let status = resp.status();
        // Read (a bounded part of) the answer so the connection can be kept alive.
        let mut resp = resp;
        let mut read = 0;
        while let Ok(Some(chunk)) = resp.chunk().await {
            read += chunk.len();
            if read > MAX_ANSWER {
                break;
            }
        }
        if status.as_u16() >= 400 {
            return Err(format!("collector answered {status}"));
        }
        Ok(())
    }
}

fn client(timeout: Duration, keepalive: Duration) -> Result<reqwest::Client, String> {
    sink::outbound_client(Vec::new(), timeout)?
        .connect_timeout(timeout)
        .pool_idle_timeout(keepalive)
        .user_agent("portcullis-http-log")
        .build()
        .map_err(|e| e.to_string())
}

impl HttpLog {
    /// Validates the config; when `start` (a real config load, not a schema check), starts or
    /// shares the delivery queue for this endpoint.
    pub fn build(config: &Value, path: &str, errs: &mut Errors, start: bool) -> Option<SinkLog> {
        let before = errs.len();
        let mut o = Obj::open(config, path, errs)?;
        let endpoint_path = o.field_path("http_endpoint");
        let url = match o.req_str("http_endpoint", errs) {
            // The messages never repeat the value: it may carry credentials.
            Some(s) => match Url::parse(&s) {
                Ok(u) if !matches!(u.scheme(), "http" | "https") => {
                    errs.push(&endpoint_path, "expected an http or https URL");
                    None
                }
                Ok(u) if u.host_str().is_none_or(str::is_empty) => {
                    errs.push(&endpoint_path, "the URL has no host");
                    None
                }
                Ok(u) => Some(u),
                Err(e) => {
                    errs.push(&endpoint_path, format!("invalid URL: {e}"));
                    None
                }
            },
            None => None,
        };
        let method = o.one_of("method", "POST", &["POST", "PUT", "PATCH"], errs);
        let content_type = o.one_of(
            "content_type",
            "application/json",
            &["application/json", "application/json; charset=utf-8"],
            errs,
        );
        let timeout = o.int_or("timeout", 10_000, 1, 86_400_000, errs);
        let keepalive = o.int_or("keepalive", 60_000, 0, 86_400_000, errs);
        let mut queue = sink::read_queue(&mut o, QueueConfig::default(), errs);
        queue.max_batch_size = queue.max_batch_size.max(1);
        let mut headers = HeaderMap::new();
        let hpath = o.field_path("headers");
        match o.get("headers") {
            Some(Value::Object(m)) => {
                for (k, v) in m {
                    let p = format!("{hpath}.{k}");
                    let Ok(name) = HeaderName::try_from(k.as_str()) else {
                        errs.push(p, "invalid header name");
                        continue;
                    };
                    if matches!(name.as_str(), "host" | "content-length" | "content-type") {
                        errs.push(p, format!("cannot contain '{k}' header"));
                        continue;
                    }
                    match v.as_str().map(HeaderValue::try_from) {
                        Some(Ok(mut value)) => {
                            value.set_sensitive(true);
                            headers.append(name, value);
                        }
                        // Never echo the value: collector tokens live here.
                        Some(Err(_)) => errs.push(p, "invalid header value"),
                        None => errs.push(p, "expected a string"),
                    }
                }
            }
            Some(_) => errs.push(hpath, "expected a record"),
            None => {}
        }
        let custom = CustomFields::read(&mut o, errs);
        o.finish(errs);
        if errs.len() > before {
            return None;
        }
        let mut url = url?;
        if !start {
            return Some(SinkLog::unstarted("http-log", custom));
        }
        // Kong: user info in the endpoint becomes Basic authentication (and wins).
        if !url.username().is_empty() {
            let user = percent_encoding::percent_decode_str(url.username()).decode_utf8_lossy();
            let pass = url
                .password()
                .map(|p| {
                    percent_encoding::percent_decode_str(p)
                        .decode_utf8_lossy()
                        .into_owned()
                })
                .unwrap_or_default();
            let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
            if let Ok(mut v) = HeaderValue::try_from(format!("Basic {token}")) {
                v.set_sensitive(true);
                headers.insert(http::header::AUTHORIZATION, v);
            }
            let _ = url.set_username("");
            let _ = url.set_password(None);
        }
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_str(&content_type).ok()?,
        );
        let key = format!("http-log {config}");
        let dest = label(&url);
        let timeout = Duration::from_millis(timeout as u64);
        let keepalive = Duration::from_millis(keepalive as u64);
        let method = reqwest::Method::from_bytes(method.as_bytes()).ok()?;
        let shared = sink::shared(key, || {
            let collector = Collector {
                client: client(timeout, keepalive)?,
                url,
                method,
                headers,
                array: queue.max_batch_size > 1,
            };
            Sink::start("http-log", dest, queue, None, collector).map_err(|e| e.to_string())
        });
        SinkLog::started("http-log", shared, custom, path, errs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn errors(cfg: Value) -> Vec<String> {
        let mut errs = Errors::default();
        assert!(HttpLog::build(&cfg, "p.config", &mut errs, false).is_none());
        errs.into_vec().iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn config_errors_carry_paths_and_no_secrets() {
        let e = errors(json!({"method": "GET"}));
        assert!(
            e.iter()
                .any(|e| e.starts_with("p.config.http_endpoint: required")),
            "{e:?}"
        );
        assert!(e.iter().any(|e| e.starts_with("p.config.method")), "{e:?}");
        let e = errors(json!({"http_endpoint": "ftp://user:s3cret@h/x"}));
        assert_eq!(
            e,
            vec!["p.config.http_endpoint: expected an http or https URL"]
        );
        let e = errors(
            json!({"http_endpoint": "http://h/", "headers": {"Host": "x", "X-T": "bad\nvalue-s3cret"}, "nope": 1}),
        );
        assert!(
            e.iter().any(|e| e.starts_with("p.config.headers.Host")),
            "{e:?}"
        );
        assert!(
            e.iter().any(|e| e.starts_with("p.config.headers.X-T")),
            "{e:?}"
        );
        assert!(
            e.iter().any(|e| e == "p.config.nope: unknown field"),
            "{e:?}"
        );
        assert!(!e.concat().contains("s3cret"));
    }

    #[test]
    fn kong_config_is_accepted() {
        let mut errs = Errors::default();
        let cfg = json!({"http_endpoint": "https://logs.example.com/in?token=t", "method": "PUT",
            "content_type": "application/json; charset=utf-8", "timeout": 1000, "keepalive": 1000,
            "flush_timeout": 2, "retry_count": 10, "queue_size": 3,
            "headers": {"Authorization": "Bearer x"}, "custom_fields": {"a": 1},
            "queue": {"max_batch_size": 10, "max_coalescing_delay": 1, "max_entries": 10000,
                "max_bytes": null, "max_retry_time": 60, "initial_retry_delay": 0.01,
                "max_retry_delay": 60, "concurrency_limit": 1}});
        assert!(
            HttpLog::build(&cfg, "p", &mut errs, false).is_some(),
            "{errs:?}"
        );
    }

    #[test]
    fn label_hides_user_info_and_query() {
        let u = Url::parse("https://u:p@h.example/x?token=t").unwrap();
        assert_eq!(label(&u), "https://h.example:443/x");
    }
}
