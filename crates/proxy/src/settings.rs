//! Node settings: listeners, trust, limits and timeouts. Read from `portcullis.toml`, the
//! environment and the command line (in increasing precedence) by the binary.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

/// Everything a node needs besides the declarative config.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Plain-text proxy listener.
    pub proxy_listen: SocketAddr,
    /// TLS proxy listener.
    pub proxy_tls_listen: SocketAddr,
    /// Admin API listener.
    pub admin_listen: SocketAddr,
    /// Status listener (`/status`, `/metrics`); off unless set.
    pub status_listen: Option<SocketAddr>,
    /// Proxy worker threads (0 = number of cores).
    pub workers: usize,
    /// Workers poll for events instead of sleeping while traffic flows (see `busy`).
    pub busy_polling: bool,
    /// With busy polling, a worker parks after this many seconds without a request.
    pub busy_polling_window: f64,
    /// First writes of upstream requests and responses leave at the end of the worker's
    /// pass while other requests are in flight (see `batch`).
    pub batch_writes: bool,
    /// Peers whose X-Forwarded-* and X-Real-IP headers are believed.
    pub trusted_ips: Vec<IpNet>,
    /// Time allowed to receive a whole request head, seconds (nginx: client_header_timeout).
    pub client_header_timeout: f64,
    /// Idle time allowed between requests on a keep-alive connection, seconds.
    pub keepalive_timeout: f64,
    /// Maximum request header lines.
    pub max_header_count: usize,
    /// Maximum size of the request head (request line + headers), bytes.
    pub max_header_bytes: usize,
    /// Maximum request-target length, bytes.
    pub max_uri_length: usize,
    /// Request bodies up to this size are buffered so a failed attempt can be retried.
    pub request_buffer_bytes: usize,
    /// HTTP/2: concurrent streams per connection.
    pub h2_max_concurrent_streams: u32,
    /// HTTP/2: pending reset streams before the connection is closed (rapid reset).
    pub h2_max_pending_resets: usize,
    /// HTTP/2: locally reset streams per connection before GOAWAY (MadeYouReset).
    pub h2_max_local_error_resets: usize,
    /// Upstream keep-alive connections kept idle per target.
    pub upstream_keepalive_pool_size: usize,
    /// Idle upstream connections are closed after this many seconds.
    pub upstream_keepalive_idle_timeout: f64,
    /// Default for `tls_verify` on https services when the service does not say.
    pub proxy_ssl_verify: bool,
    /// Seconds to wait for in-flight requests on SIGTERM.
    pub shutdown_timeout: f64,
    /// Default TLS certificate (PEM path); a self-signed one is generated when absent.
    pub ssl_cert: Option<String>,
    /// Key of the default TLS certificate (PEM path).
    pub ssl_cert_key: Option<String>,
    /// Log format: `json` or `text`.
    pub log_format: String,
    /// Log level filter (tracing `EnvFilter` syntax).
    pub log_level: String,
    /// Access log: `stdout` (default), `stderr`, `off`, or a file path (appended).
    pub access_log: String,
    /// Header carrying the request id upstream and back to the client.
    pub request_id_header: String,
    /// Headers the gateway adds to client responses (Kong's `headers`): a comma-separated
    /// string or a list of Kong's tokens, or `off`.
    pub headers: TokenList,
    /// Headers the gateway adds to upstream requests (Kong's `headers_upstream`):
    /// `X-Kong-Request-Id` or `off`.
    pub headers_upstream: TokenList,
    /// Remove headers that advertise the upstream's software (`Server`, `X-Powered-By`,
    /// `X-AspNet-Version`, `X-AspNetMvc-Version`) from every response.
    pub response_hardening: bool,
    /// Security events as JSON lines: `off` (default), `stdout`, `stderr` or a file path.
    pub security_log: String,
    /// Also POST security events, in JSON-array batches, to this http(s) URL.
    pub security_http: Option<String>,
    /// Threshold alert rules (`[[alerts]]` tables).
    pub alerts: Vec<crate::security::AlertRule>,
    /// Headers added to every response that does not already carry them (e.g.
    /// `Strict-Transport-Security`, `X-Content-Type-Options`).
    pub security_headers: std::collections::BTreeMap<String, String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            proxy_listen: SocketAddr::from(([0, 0, 0, 0], 8000)),
            proxy_tls_listen: SocketAddr::from(([0, 0, 0, 0], 8443)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 8001)),
            status_listen: None,
            workers: 0,
            busy_polling: false,
            busy_polling_window: 0.0002,
            batch_writes: true,
            trusted_ips: Vec::new(),
            client_header_timeout: 60.0,
            keepalive_timeout: 75.0,
            max_header_count: 100,
            max_header_bytes: 32 * 1024,
            max_uri_length: 8 * 1024,
            request_buffer_bytes: 8 * 1024 * 1024,
            h2_max_concurrent_streams: 128,
            h2_max_pending_resets: 20,
            h2_max_local_error_resets: 1024,
            upstream_keepalive_pool_size: 512,
            upstream_keepalive_idle_timeout: 60.0,
            proxy_ssl_verify: true,
            shutdown_timeout: 30.0,
            ssl_cert: None,
            ssl_cert_key: None,
            log_format: "json".into(),
            log_level: "info".into(),
            access_log: "stdout".into(),
            request_id_header: "x-request-id".into(),
            headers: TokenList(vec![
                "server_tokens".into(),
                "latency_tokens".into(),
                "X-Kong-Request-Id".into(),
            ]),
            headers_upstream: TokenList(vec!["X-Kong-Request-Id".into()]),
            response_hardening: true,
            security_log: "off".into(),
            security_http: None,
            alerts: Vec::new(),
            security_headers: Default::default(),
        }
    }
}

impl Settings {
    /// Is `ip` a trusted proxy?
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.trusted_ips.iter().any(|n| n.contains(&ip))
    }

    /// Proxy worker threads to run: `workers`, or the number of cores when it is 0.
    pub fn worker_count(&self) -> usize {
        if self.workers == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            self.workers
        }
    }

    /// `client_header_timeout` as a duration.
    pub fn header_timeout(&self) -> Duration {
        secs(self.client_header_timeout)
    }

    /// `keepalive_timeout` as a duration.
    pub fn keepalive(&self) -> Duration {
        secs(self.keepalive_timeout)
    }

    /// Checks values that serde cannot.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.busy_polling_window > 0.0 && self.busy_polling_window <= 1.0) {
            return Err(
                "busy_polling_window: must be greater than 0 and at most 1 (seconds)".into(),
            );
        }
        if self.busy_polling && self.worker_count() != 1 {
            return Err(format!(
                "busy_polling: needs workers = 1 (this node would run {}); with several workers \
                 the idle ones hold the event poller and the busy one would poll nothing",
                self.worker_count()
            ));
        }
        if self.client_header_timeout <= 0.0 {
            return Err("client_header_timeout: must be greater than 0".into());
        }
        if self.max_header_count == 0 || self.max_header_bytes < 1024 {
            return Err("max_header_count / max_header_bytes: too small".into());
        }
        if self.ssl_cert.is_some() != self.ssl_cert_key.is_some() {
            return Err("ssl_cert and ssl_cert_key must be set together".into());
        }
        if !["json", "text"].contains(&self.log_format.as_str()) {
            return Err("log_format: expected one of: json, text".into());
        }
        if let Some(u) = &self.security_http {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                return Err("security_http: must be an http(s) URL".into());
            }
        }
        for (i, rule) in self.alerts.iter().enumerate() {
            rule.validate(i)?;
        }
        for (k, v) in &self.security_headers {
            if http::HeaderName::from_bytes(k.as_bytes()).is_err()
                || http::HeaderValue::from_str(v).is_err()
            {
                return Err(format!("security_headers.{k}: not a valid header"));
            }
        }
        if http::HeaderName::from_bytes(self.request_id_header.as_bytes()).is_err() {
            return Err("request_id_header: not a valid header name".into());
        }
        self.gateway_headers()?;
        Ok(())
    }

    /// The headers the gateway adds, from `headers` and `headers_upstream`.
    pub fn gateway_headers(&self) -> Result<GatewayHeaders, String> {
        let mut h = GatewayHeaders::default();
        // Every token is checked, as Kong does, even after a first `off`.
        let (downstream, on) = self.headers.tokens();
        for token in downstream {
            match token.to_ascii_lowercase().as_str() {
                // The gateway never advertises its software or version (see
                // docs/kong-compatibility.md): accepted so Kong's settings carry over.
                "server" | "via" | "server_tokens" => {}
                "latency_tokens" => {
                    h.upstream_latency = on;
                    h.proxy_latency = on;
                    h.response_latency = on;
                }
                "x-kong-upstream-latency" => h.upstream_latency = on,
                "x-kong-proxy-latency" => h.proxy_latency = on,
                "x-kong-response-latency" => h.response_latency = on,
                // Only the Admin API would carry it; it does not.
                "x-kong-admin-latency" => {}
                "x-kong-upstream-status" => h.upstream_status = on,
                "x-kong-request-id" => h.request_id = on,
                _ => return Err(format!("headers: invalid entry '{token}'")),
            }
        }
        let (upstream, on) = self.headers_upstream.tokens();
        for token in upstream {
            match token.to_ascii_lowercase().as_str() {
                "x-kong-request-id" => h.upstream_request_id = on,
                _ => return Err(format!("headers_upstream: invalid entry '{token}'")),
            }
        }
        Ok(h)
    }
}

/// A list setting written as Kong writes it in `kong.conf` (`"a, b"`) or as a TOML list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenList(pub Vec<String>);

impl<'de> Deserialize<'de> for TokenList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            One(String),
            Many(Vec<String>),
        }
        Ok(TokenList(match Form::deserialize(d)? {
            Form::One(s) => s.split(',').map(|t| t.trim().to_string()).collect(),
            Form::Many(v) => v.into_iter().map(|t| t.trim().to_string()).collect(),
        }))
    }
}

impl TokenList {
    /// The tokens other than `off`, and whether they apply: as in Kong's conf loader, a first
    /// token `off` turns the whole list off, and a later `off` is ignored.
    fn tokens(&self) -> (Vec<&str>, bool) {
        let is_off = |t: &str| t.eq_ignore_ascii_case("off");
        let tokens: Vec<&str> = self
            .0
            .iter()
            .map(String::as_str)
            .filter(|t| !t.is_empty())
            .collect();
        let on = !tokens.first().is_some_and(|t| is_off(t));
        (tokens.into_iter().filter(|t| !is_off(t)).collect(), on)
    }
}

/// Which of its own headers the gateway adds (settings `headers` and `headers_upstream`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GatewayHeaders {
    /// `X-Kong-Upstream-Latency` on proxied responses.
    pub upstream_latency: bool,
    /// `X-Kong-Proxy-Latency` on proxied responses.
    pub proxy_latency: bool,
    /// `X-Kong-Response-Latency` on responses the gateway makes itself.
    pub response_latency: bool,
    /// `X-Kong-Upstream-Status` (the upstream's status) on proxied responses.
    pub upstream_status: bool,
    /// The request id (`request_id_header`) on every response.
    pub request_id: bool,
    /// The request id (`request_id_header`) on upstream requests.
    pub upstream_request_id: bool,
}

/// Seconds (possibly fractional) to a duration, clamped to sane bounds.
pub fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.clamp(0.0, 86_400.0 * 365.0))
}

/// Maps IPv4-mapped IPv6 addresses to IPv4 so `127.0.0.1/32` matches `::ffff:127.0.0.1`.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<GatewayHeaders, String> {
        let s: Settings = toml::from_str(text).map_err(|e| e.to_string())?;
        s.validate()?;
        s.gateway_headers()
    }

    #[test]
    fn kong_defaults_send_latencies_and_the_request_id() {
        let h = parse("").unwrap();
        assert!(h.upstream_latency && h.proxy_latency && h.response_latency);
        assert!(h.request_id && h.upstream_request_id);
        assert!(!h.upstream_status);
    }

    #[test]
    fn headers_take_kong_tokens_as_a_string_or_a_list() {
        let h = parse("headers = \"off\"\nheaders_upstream = \"off\"").unwrap();
        assert_eq!(h, GatewayHeaders::default());
        let h = parse("headers = \"X-Kong-Upstream-Latency, x-kong-upstream-status\"").unwrap();
        assert!(h.upstream_latency && h.upstream_status);
        assert!(!h.proxy_latency && !h.request_id && !h.response_latency);
        assert!(h.upstream_request_id);
        let h = parse("headers = [\"server_tokens\", \"X-Kong-Request-Id\"]").unwrap();
        assert!(h.request_id && !h.upstream_latency);
    }

    #[test]
    fn unknown_tokens_and_off_with_others_are_refused() {
        assert_eq!(
            parse("headers = \"latency_tokens, X-Powered-By\"").unwrap_err(),
            "headers: invalid entry 'X-Powered-By'"
        );
        assert_eq!(
            parse("headers_upstream = \"X-Kong-Proxy-Latency\"").unwrap_err(),
            "headers_upstream: invalid entry 'X-Kong-Proxy-Latency'"
        );
    }

    #[test]
    fn off_first_means_none_and_a_later_off_is_ignored_as_in_kong() {
        let none = parse("headers = \"off, X-Kong-Upstream-Latency\"").unwrap();
        assert!(!none.upstream_latency && !none.request_id);
        let some = parse("headers = \"X-Kong-Upstream-Latency, off\"").unwrap();
        assert!(some.upstream_latency && !some.proxy_latency);
        assert_eq!(
            parse("headers = \"off, X-Powered-By\"").unwrap_err(),
            "headers: invalid entry 'X-Powered-By'"
        );
    }
}
