//! `waf`: a web application firewall — libmodsecurity 3 with the OWASP Core Rule Set (a
//! Portcullis plugin; Kong has no open-source equivalent).
//!
//! Each request (method, target, headers and, with `inspect_body`, the buffered body) runs
//! through its own ModSecurity transaction against a rule set compiled once per config load
//! and shared by every request. The transaction is CPU-bound, so it runs on tokio's blocking
//! pool, off the reactor.
//!
//! * `mode: block` — a request the rules deny gets **403** `{"message":"Forbidden"}`; nothing
//!   about the rules reaches the client. A security event (`target: "security"`,
//!   `event: "waf_block"`) names the matched rule ids.
//! * `mode: detect` — the same evaluation, but the request goes on; the event is
//!   `waf_detect`. Operators tune (exclusions, thresholds) before enforcing.
//!
//! Bodies larger than `body_limit` are refused (413) in block mode rather than inspected in
//! part: an attack placed past the inspected prefix would otherwise pass. In detect mode the
//! first `body_limit` bytes are inspected and the oversize is logged.
//!
//! With `inspect_response`, proxied responses go through the CRS response rules (data
//! leakages: SQL error messages, stack traces, directory listings) in the response-inspection
//! phase: the headers always, the first `response_body_limit` bytes of the body for text-like,
//! uncompressed responses. The engine runs a second transaction that replays the request's
//! URI and headers first (see `portcullis_waf::Rules::inspect_response`), on the blocking pool.
//! In block mode a response the rules deny becomes **502** with Kong's "invalid response"
//! message and none of the upstream's headers (`waf_response_block`); in detect mode it passes
//! unchanged (`waf_response_detect`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use http::StatusCode;
use portcullis_config::{Errors, Obj};
use portcullis_waf::{CrsConfig, Request, Rules, Verdict};
use serde_json::Value;

use crate::{Access, BodyPrefix, Ctx, Flow, Plugin, Response, ResponseHead};

/// Largest `body_limit` accepted (the proxy's buffer bounds what can be read anyway).
const MAX_BODY_LIMIT: i64 = 64 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Block,
    Detect,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Block => "block",
            Mode::Detect => "detect",
        }
    }
}

/// A compiled `waf` instance.
#[derive(Debug)]
pub struct Waf {
    rules: Arc<Rules>,
    mode: Mode,
    inspect_body: bool,
    body_limit: usize,
    inspect_response: bool,
    response_body_limit: usize,
}

/// Kong's message for a response the gateway will not pass on (its 502 wording).
const INVALID_RESPONSE: &str = "An invalid response was received from the upstream server";

/// Builds the request a transaction is shown: method, target as sent, version, the client's
/// headers (without the id the gateway generated for this request: unique per request, it
/// carries nothing to inspect and would defeat the verdict cache) and `body`.
fn with_request<R>(ctx: &Ctx, body: Option<&[u8]>, f: impl FnOnce(&Request<'_>) -> R) -> R {
    let target = match ctx.uri.path_and_query() {
        Some(pq) if !pq.as_str().is_empty() => std::borrow::Cow::Borrowed(pq.as_str()),
        _ => match &ctx.query {
            Some(q) => format!("{}?{q}", ctx.path).into(),
            None => ctx.path.as_str().into(),
        },
    };
    let mut headers: Vec<(&[u8], &[u8])> = ctx
        .headers
        .iter()
        .filter(|(_, v)| !ctx.is_own_request_id(v))
        .map(|(k, v)| (k.as_str().as_bytes(), v.as_bytes()))
        .collect();
    if !ctx.headers.contains_key(http::header::HOST) && !ctx.host.is_empty() {
        // HTTP/2 carries the host in :authority; the CRS expects a Host header.
        headers.push((b"host", ctx.host.as_bytes()));
    }
    let mut req = Request::new(ctx.method.as_str(), &target);
    req.version = match ctx.version {
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_2 => "2.0",
        http::Version::HTTP_3 => "3.0",
        _ => "1.1",
    };
    req.client_ip = ctx.client_ip;
    req.headers = headers;
    req.body = body;
    f(&req)
}

/// A request as [`with_request`] built it, without its body, owned so it can move to a
/// blocking thread and be kept in [`Ctx::state`] for the response's transaction to replay.
#[derive(Debug, Clone)]
struct RequestView {
    method: String,
    target: String,
    version: &'static str,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    client_ip: std::net::IpAddr,
}

impl RequestView {
    fn of(req: &Request<'_>) -> RequestView {
        RequestView {
            method: req.method.to_string(),
            target: req.uri.to_string(),
            version: req.version,
            headers: req
                .headers
                .iter()
                .map(|(k, v)| (k.to_vec(), v.to_vec()))
                .collect(),
            client_ip: req.client_ip,
        }
    }

    /// The request again (no body).
    fn request(&self) -> Request<'_> {
        let mut req = Request::new(&self.method, &self.target);
        req.version = self.version;
        req.client_ip = self.client_ip;
        req.headers = self
            .headers
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_slice()))
            .collect();
        req
    }
}

/// How much of a response the rules see.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ResponseBody {
    /// Text-like and not content-encoded: the first `response_body_limit` bytes.
    Inspected,
    /// Not a text-like type: headers only.
    NotText,
    /// Content-encoded (the gateway does not decompress): headers only.
    Encoded(String),
}

impl ResponseBody {
    fn of(head: &ResponseHead) -> ResponseBody {
        let encodings: Vec<String> = head
            .headers
            .get_all(http::header::CONTENT_ENCODING)
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b','))
            .map(|e| String::from_utf8_lossy(e).trim().to_ascii_lowercase())
            .filter(|e| !e.is_empty() && e != "identity")
            .collect();
        if !encodings.is_empty() {
            return ResponseBody::Encoded(encodings.join(","));
        }
        let text = head
            .headers
            .get_all(http::header::CONTENT_TYPE)
            .iter()
            .next_back()
            .is_some_and(|ct| portcullis_waf::response_body_inspected(ct.as_bytes()));
        if text {
            ResponseBody::Inspected
        } else {
            ResponseBody::NotText
        }
    }
}

/// Compiled rule sets by settings: `config validate`, the load that follows it and several
/// routes with the same settings share one compilation while any of them is alive.
fn compiled(cfg: &CrsConfig) -> Result<Arc<Rules>, portcullis_waf::WafError> {
    static CACHE: OnceLock<Mutex<HashMap<CrsConfig, Weak<Rules>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let mut map = cache.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(rules) = map.get(cfg).and_then(Weak::upgrade) {
        return Ok(rules);
    }
    map.retain(|_, w| w.strong_count() > 0);
    let rules = Arc::new(Rules::from_crs(cfg)?);
    map.insert(cfg.clone(), Arc::downgrade(&rules));
    Ok(rules)
}

impl Waf {
    /// Validates the config and compiles the rule set (once per distinct settings).
    pub fn build(config: &Value, path: &str, errs: &mut Errors) -> Option<Waf> {
        let before = errs.len();
        let mut o = Obj::open(config, path, errs)?;
        let mode = match o
            .one_of("mode", "block", &["block", "detect"], errs)
            .as_str()
        {
            "detect" => Mode::Detect,
            _ => Mode::Block,
        };
        let paranoia_level = o.int_or("paranoia_level", 1, 1, 4, errs) as u8;
        let inbound = o.int_or("inbound_anomaly_threshold", 5, 1, 10_000, errs) as u32;
        let outbound = o.int_or("outbound_anomaly_threshold", 4, 1, 10_000, errs) as u32;
        let exclude_rules: Vec<u32> = o
            .int_array("exclude_rules", 1, 99_999_999, errs)
            .into_iter()
            .map(|i| i as u32)
            .collect();
        let custom_path = o.field_path("custom_rules");
        let custom_rules = o.str_array("custom_rules", errs);
        for (i, rule) in custom_rules.iter().enumerate() {
            if let Err(e) = portcullis_waf::check_custom_rule(rule) {
                errs.push(
                    portcullis_config::reader::index(&custom_path, i),
                    e.to_string(),
                );
            }
        }
        let methods_path = o.field_path("allowed_methods");
        let allowed_methods = if o.has("allowed_methods") {
            let m = o.str_array("allowed_methods", errs);
            if m.is_empty() {
                errs.push(methods_path.clone(), "must name at least one method");
            }
            for (i, name) in m.iter().enumerate() {
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_uppercase()) {
                    errs.push(
                        portcullis_config::reader::index(&methods_path, i),
                        "expected an upper-case method name",
                    );
                }
            }
            m
        } else {
            let _ = o.get("allowed_methods");
            CrsConfig::default().allowed_methods
        };
        let inspect_body = o.bool_or("inspect_body", true, errs);
        let body_limit = o.int_or("body_limit", 128 * 1024, 1, MAX_BODY_LIMIT, errs) as usize;
        let verdict_cache_size = o.int_or(
            "verdict_cache_size",
            portcullis_waf::DEFAULT_VERDICT_CACHE_SIZE as i64,
            0,
            1_000_000,
            errs,
        ) as usize;
        let inspect_response = o.bool_or("inspect_response", false, errs);
        let response_body_limit =
            o.int_or("response_body_limit", 128 * 1024, 1, MAX_BODY_LIMIT, errs) as usize;
        o.finish(errs);
        if errs.len() > before {
            return None;
        }
        let cfg = CrsConfig {
            paranoia_level,
            inbound_anomaly_threshold: inbound,
            outbound_anomaly_threshold: outbound,
            exclude_rules,
            custom_rules,
            allowed_methods,
            body_limit,
            verdict_cache_size,
            inspect_response,
            // Only part of the compiled rule set (and its cache key) when it is used.
            response_body_limit: if inspect_response {
                response_body_limit
            } else {
                CrsConfig::default().response_body_limit
            },
            ..CrsConfig::default()
        };
        match compiled(&cfg) {
            Ok(rules) => Some(Waf {
                rules,
                mode,
                inspect_body,
                body_limit,
                inspect_response,
                response_body_limit,
            }),
            Err(portcullis_waf::WafError::Rule(e)) => {
                errs.push(custom_path, e);
                None
            }
            Err(e) => {
                errs.push(path, e.to_string());
                None
            }
        }
    }

    /// Logs the security event for a verdict that matched rules, and decides.
    fn decide(&self, ctx: &Ctx, verdict: &Verdict, side: Side) -> Flow {
        if verdict.rule_ids.is_empty() {
            return Flow::Continue;
        }
        let ids = verdict
            .rule_ids
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let route = ctx.route_name.as_deref().unwrap_or("-");
        let upstream_status = side.upstream_status();
        if !verdict.blocked {
            // Below the anomaly threshold: useful when tuning, not an incident.
            tracing::debug!(
                target: "security",
                plugin = "waf",
                event = side.event("match"),
                mode = self.mode.as_str(),
                rule_ids = %ids,
                upstream_status,
                client_ip = %ctx.client_ip,
                route,
                request_id = %ctx.request_id,
                "waf {}rules matched below the blocking threshold",
                if matches!(side, Side::Response(_)) { "response " } else { "" }
            );
            return Flow::Continue;
        }
        let score = verdict
            .anomaly_score
            .map_or_else(|| "-".to_string(), |s| s.to_string());
        let (event, message) = match self.mode {
            Mode::Block => ("block", "waf blocked"),
            Mode::Detect => ("detect", "waf would have blocked"),
        };
        tracing::warn!(
            target: "security",
            plugin = "waf",
            event = side.event(event),
            mode = self.mode.as_str(),
            rule_ids = %ids,
            anomaly_score = %score,
            upstream_status,
            client_ip = %ctx.client_ip,
            method = %ctx.method,
            route,
            request_id = %ctx.request_id,
            "{message} {} {}{}",
            side.article(),
            side.what(),
            if self.mode == Mode::Detect { " (detect mode)" } else { "" }
        );
        match self.mode {
            Mode::Block => side.refusal(),
            Mode::Detect => Flow::Continue,
        }
    }

    async fn run(&self, ctx: &mut Ctx) -> Flow {
        let body = if self.inspect_body {
            ctx.body.clone()
        } else {
            None
        };
        if let Some(b) = &body {
            if b.len() > self.body_limit {
                tracing::warn!(
                    target: "security",
                plugin = "waf",
                    event = "waf_body_too_large",
                    mode = self.mode.as_str(),
                    body_bytes = b.len(),
                    body_limit = self.body_limit,
                    client_ip = %ctx.client_ip,
                    route = ctx.route_name.as_deref().unwrap_or("-"),
                    request_id = %ctx.request_id,
                    "request body larger than the waf inspects"
                );
                if self.mode == Mode::Block {
                    return Flow::Respond(Response::message(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "Request size limit exceeded",
                    ));
                }
            }
        }
        let (key, cached, view) = with_request(ctx, body.as_deref(), |req| {
            let key = self.rules.cache_key(req);
            let cached = key.as_deref().and_then(|k| self.rules.cached(k));
            let view = (cached.is_none() || self.inspect_response).then(|| RequestView::of(req));
            (key, cached, view)
        });
        if self.inspect_response {
            if let Some(v) = &view {
                // The response's transaction replays this request (later plugins may still
                // change the headers).
                ctx.state.insert(v.clone());
            }
        }
        let view = match (cached, view) {
            // Seen before with identical bytes: same verdict, no transaction, no thread hop.
            (Some(verdict), _) => return self.decide(ctx, &verdict, Side::Request),
            (None, Some(view)) => view,
            (None, None) => with_request(ctx, body.as_deref(), RequestView::of),
        };
        let rules = self.rules.clone();
        let result = tokio::task::spawn_blocking(move || {
            let mut req = view.request();
            req.body = body.as_deref();
            rules.inspect_cached(&req, key.as_deref())
        })
        .await;
        match result {
            Ok(Ok(verdict)) => self.decide(ctx, &verdict, Side::Request),
            Ok(Err(e)) => self.failed(ctx, &e.to_string(), Side::Request),
            Err(e) => self.failed(ctx, &e.to_string(), Side::Request),
        }
    }

    /// The engine could not inspect: fail closed when enforcing.
    fn failed(&self, ctx: &Ctx, error: &str, side: Side) -> Flow {
        tracing::error!(
            target: "security",
            plugin = "waf",
            event = side.event("error"),
            mode = self.mode.as_str(),
            error,
            client_ip = %ctx.client_ip,
            request_id = %ctx.request_id,
            "waf could not inspect a {}",
            side.noun()
        );
        match self.mode {
            Mode::Block => side.refusal(),
            Mode::Detect => Flow::Continue,
        }
    }
}

impl Waf {
    /// Response-inspection phase: the upstream's head and (for text-like, uncompressed
    /// responses) the first `response_body_limit` bytes of its body through the response
    /// rules, on the blocking pool.
    async fn run_response(&self, ctx: &mut Ctx, head: &ResponseHead, body: &BodyPrefix) -> Flow {
        let route = ctx.route_name.as_deref().unwrap_or("-");
        let kind = ResponseBody::of(head);
        match &kind {
            ResponseBody::Encoded(encoding) => tracing::info!(
                plugin = "waf",
                event = "waf_response_body_skipped",
                content_encoding = %encoding,
                route,
                request_id = %ctx.request_id,
                "waf inspected only the headers of a compressed response (bodies are not decompressed)"
            ),
            ResponseBody::Inspected if !body.complete => tracing::info!(
                plugin = "waf",
                event = "waf_response_body_truncated",
                response_body_limit = self.response_body_limit,
                route,
                request_id = %ctx.request_id,
                "response body larger than the waf inspects: its first response_body_limit bytes were inspected"
            ),
            _ => {}
        }
        let view = ctx
            .state
            .remove::<RequestView>()
            .unwrap_or_else(|| with_request(ctx, None, RequestView::of));
        let status = head.status.as_u16();
        let resp_headers = head.headers.clone();
        let bytes = (kind == ResponseBody::Inspected).then(|| body.bytes.clone());
        let rules = self.rules.clone();
        let result = tokio::task::spawn_blocking(move || {
            let req = view.request();
            let mut resp = portcullis_waf::Response::new(status);
            resp.headers = resp_headers
                .iter()
                .map(|(k, v)| (k.as_str().as_bytes(), v.as_bytes()))
                .collect();
            resp.body = bytes.as_deref();
            rules.inspect_response(&req, &resp)
        })
        .await;
        match result {
            Ok(Ok(verdict)) => self.decide(ctx, &verdict, Side::Response(status)),
            Ok(Err(e)) => self.failed(ctx, &e.to_string(), Side::Response(status)),
            Err(e) => self.failed(ctx, &e.to_string(), Side::Response(status)),
        }
    }
}

/// Which transaction a verdict came from: its event names, log wording and refusal.
#[derive(Debug, Clone, Copy)]
enum Side {
    Request,
    /// With the upstream's status.
    Response(u16),
}

impl Side {
    /// `waf_<what>` for a request, `waf_response_<what>` for a response.
    fn event(self, what: &str) -> String {
        match self {
            Side::Request => format!("waf_{what}"),
            Side::Response(_) => format!("waf_response_{what}"),
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Side::Request => "request",
            Side::Response(_) => "response",
        }
    }

    fn article(self) -> &'static str {
        match self {
            Side::Request => "a",
            Side::Response(_) => "an",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Side::Request => "request",
            Side::Response(_) => "upstream response",
        }
    }

    /// Recorded only for responses (`None` adds no field).
    fn upstream_status(self) -> Option<u16> {
        match self {
            Side::Request => None,
            Side::Response(s) => Some(s),
        }
    }

    /// What the client gets when enforcing: 403 for a request, Kong's 502 for a response.
    fn refusal(self) -> Flow {
        match self {
            Side::Request => Flow::Respond(Response::message(StatusCode::FORBIDDEN, "Forbidden")),
            Side::Response(_) => {
                Flow::Respond(Response::message(StatusCode::BAD_GATEWAY, INVALID_RESPONSE))
            }
        }
    }
}

impl Plugin for Waf {
    fn name(&self) -> &'static str {
        "waf"
    }

    fn reads_body(&self) -> bool {
        self.inspect_body
    }

    fn access<'a>(&'a self, ctx: &'a mut Ctx) -> Access<'a> {
        Access::Later(Box::pin(self.run(ctx)))
    }

    fn response_inspection(&self, _ctx: &Ctx, head: &ResponseHead) -> Option<usize> {
        if !self.inspect_response {
            return None;
        }
        Some(match ResponseBody::of(head) {
            ResponseBody::Inspected => self.response_body_limit,
            _ => 0,
        })
    }

    fn inspect_response<'a>(
        &'a self,
        ctx: &'a mut Ctx,
        head: &'a ResponseHead,
        body: &'a BodyPrefix,
    ) -> Access<'a> {
        Access::Later(Box::pin(self.run_response(ctx, head, body)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;
    use serde_json::json;

    fn build(cfg: Value) -> Result<Waf, Vec<String>> {
        let mut errs = Errors::default();
        match Waf::build(&cfg, "plugins[0].config", &mut errs) {
            Some(p) if errs.is_empty() => Ok(p),
            _ => Err(errs.into_vec().into_iter().map(|e| e.to_string()).collect()),
        }
    }

    fn ctx(method: Method, uri: &str, body: Option<&str>) -> Ctx {
        let uri: http::Uri = uri.parse().unwrap();
        let mut h = http::HeaderMap::new();
        h.insert("host", "api.example.com".parse().unwrap());
        h.insert("user-agent", "test-client/1.0".parse().unwrap());
        h.insert("accept", "*/*".parse().unwrap());
        if body.is_some() {
            h.insert(
                "content-type",
                "application/x-www-form-urlencoded".parse().unwrap(),
            );
        }
        let mut c = Ctx::new(
            method,
            uri.path().to_string(),
            uri.query().map(str::to_string),
            h,
            "127.0.0.1".parse().unwrap(),
        );
        c.uri = uri;
        c.body = body.map(|b| bytes::Bytes::from(b.to_string()));
        c
    }

    fn status(f: &Flow) -> u16 {
        match f {
            Flow::Continue => 0,
            Flow::Respond(r) => r.status.as_u16(),
        }
    }

    #[test]
    fn config_is_checked_with_paths() {
        let errs = build(json!({
            "paranoia_level": 7,
            "mode": "log",
            "bogus": true,
            "exclude_rules": ["x"],
            "inspect_response": "yes",
            "response_body_limit": 0,
            "custom_rules": ["SecRuleEngine Off", "SecRule ARGS \"@rx a\" \"id:10001,phase:2,denyy\""],
        }))
        .unwrap_err();
        for want in [
            "plugins[0].config.paranoia_level",
            "plugins[0].config.mode",
            "plugins[0].config.bogus",
            "plugins[0].config.exclude_rules[0]",
            "plugins[0].config.inspect_response",
            "plugins[0].config.response_body_limit",
            "plugins[0].config.custom_rules[0]",
            "plugins[0].config.custom_rules[1]",
        ] {
            assert!(
                errs.iter().any(|e| e.contains(want)),
                "{want} not in {errs:?}"
            );
        }
        // Nothing about the CRS internals leaks into the message for a wrong mode.
        assert!(errs
            .iter()
            .any(|e| e.contains("expected one of: block, detect")));
    }

    #[test]
    fn same_settings_share_one_compilation() {
        let a = build(json!({"paranoia_level": 1})).unwrap();
        let b = build(json!({"mode": "detect"})).unwrap();
        assert!(Arc::ptr_eq(&a.rules, &b.rules));
        let c = build(json!({"paranoia_level": 2})).unwrap();
        assert!(!Arc::ptr_eq(&a.rules, &c.rules));
    }

    #[tokio::test]
    async fn blocks_detects_and_passes() {
        let block = build(json!({})).unwrap();
        let detect = build(json!({"mode": "detect"})).unwrap();
        let mut c = ctx(Method::GET, "/a?id=1'%20OR%20'1'='1", None);
        let f = block.run(&mut c).await;
        assert_eq!(status(&f), 403);
        if let Flow::Respond(r) = f {
            assert_eq!(&r.body[..], br#"{"message":"Forbidden"}"#);
        }
        assert_eq!(status(&detect.run(&mut c).await), 0);
        let mut ok = ctx(Method::POST, "/a?id=42", Some("name=alice"));
        assert_eq!(status(&block.run(&mut ok).await), 0);
        let mut xss = ctx(
            Method::POST,
            "/a",
            Some("c=%3Cscript%3Ealert(1)%3C%2Fscript%3E"),
        );
        assert_eq!(status(&block.run(&mut xss).await), 403);
        let no_body = build(json!({"inspect_body": false})).unwrap();
        assert!(!no_body.reads_body());
        assert_eq!(status(&no_body.run(&mut xss).await), 0);
    }

    #[tokio::test]
    async fn repeated_requests_reuse_their_verdict() {
        // A private rule set (cache size 1021 is used by no other test) so counts are exact.
        // The cache is direct-mapped with a per-process hash: with few slots, the five keys
        // below could share slots (7 slots: about 4% of runs) and the count would vary.
        let waf = build(json!({"verdict_cache_size": 1021})).unwrap();
        assert!(waf.rules.caches_verdicts());
        assert_eq!(waf.rules.cached_verdicts(), 0);
        let mut attack = ctx(Method::GET, "/a?id=1'%20OR%20'1'='1", None);
        attack.request_id = "0123456789abcdef0123456789abcdef".into();
        attack
            .headers
            .insert("x-request-id", attack.request_id.parse().unwrap());
        assert_eq!(status(&waf.run(&mut attack).await), 403);
        assert_eq!(waf.rules.cached_verdicts(), 1);
        // The same request again, with another gateway-generated request id: answered from
        // the cache, still blocked.
        attack.request_id = "fedcba9876543210fedcba9876543210".into();
        attack
            .headers
            .insert("x-request-id", attack.request_id.parse().unwrap());
        assert_eq!(status(&waf.run(&mut attack).await), 403);
        assert_eq!(waf.rules.cached_verdicts(), 1);
        // Any other byte is another request: inspected on its own.
        let mut benign = ctx(Method::GET, "/a?id=1", None);
        assert_eq!(status(&waf.run(&mut benign).await), 0);
        assert_eq!(status(&waf.run(&mut benign).await), 0);
        let mut other_ip = ctx(Method::GET, "/a?id=1", None);
        other_ip.client_ip = "10.1.2.3".parse().unwrap();
        assert_eq!(status(&waf.run(&mut other_ip).await), 0);
        let mut body = ctx(Method::POST, "/a?id=1", Some("q=1"));
        assert_eq!(status(&waf.run(&mut body).await), 0);
        let mut evil_body = ctx(Method::POST, "/a?id=1", Some("q=1'%20OR%20'1'='1"));
        assert_eq!(status(&waf.run(&mut evil_body).await), 403);
        assert!(waf.rules.cached_verdicts() >= 3);

        let off = build(json!({"verdict_cache_size": 0})).unwrap();
        assert!(!off.rules.caches_verdicts());
        assert_eq!(status(&off.run(&mut attack).await), 403);
        let stateful = build(json!({"custom_rules": [
            "SecRule TIME_HOUR \"@lt 0\" \"id:10001,phase:1,deny,status:403\""
        ]}))
        .unwrap();
        assert!(!stateful.rules.caches_verdicts());
    }

    #[tokio::test]
    async fn oversized_bodies_are_refused_when_blocking() {
        let block = build(json!({"body_limit": 16})).unwrap();
        let detect = build(json!({"body_limit": 16, "mode": "detect"})).unwrap();
        let mut c = ctx(Method::POST, "/", Some(&"a=b&".repeat(10)));
        assert_eq!(status(&block.run(&mut c).await), 413);
        assert_eq!(status(&detect.run(&mut c).await), 0);
    }

    fn head(status: u16, headers: &[(&str, &str)]) -> ResponseHead {
        let mut h = http::HeaderMap::new();
        for (k, v) in headers {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                http::HeaderValue::from_str(v).unwrap(),
            );
        }
        ResponseHead {
            status: StatusCode::from_u16(status).unwrap(),
            headers: h,
        }
    }

    fn prefix(body: &str) -> BodyPrefix {
        BodyPrefix {
            bytes: bytes::Bytes::from(body.to_string()),
            complete: true,
        }
    }

    async fn flow(a: Access<'_>) -> Flow {
        match a {
            Access::Now(f) => f,
            Access::Later(f) => f.await,
        }
    }

    const MYSQL_ERROR: &str = "<p>You have an error in your SQL syntax; check the manual that corresponds to your MySQL server version for the right syntax to use near 'x' at line 1</p>";

    #[test]
    fn response_inspection_is_asked_for_only_when_configured() {
        let off = build(json!({})).unwrap();
        let html = head(200, &[("content-type", "text/html; charset=utf-8")]);
        let c = ctx(Method::GET, "/", None);
        assert_eq!(off.response_inspection(&c, &html), None);
        let on = build(json!({"inspect_response": true, "response_body_limit": 4096})).unwrap();
        assert_eq!(on.response_inspection(&c, &html), Some(4096));
        let json_head = head(200, &[("content-type", "application/json")]);
        assert_eq!(on.response_inspection(&c, &json_head), Some(4096));
        // Not text, or compressed: the head only.
        let png = head(200, &[("content-type", "image/png")]);
        assert_eq!(on.response_inspection(&c, &png), Some(0));
        let gz = head(
            200,
            &[("content-type", "text/html"), ("content-encoding", "gzip")],
        );
        assert_eq!(on.response_inspection(&c, &gz), Some(0));
        let identity = head(
            200,
            &[
                ("content-type", "text/html"),
                ("content-encoding", "identity"),
            ],
        );
        assert_eq!(on.response_inspection(&c, &identity), Some(4096));
        // Response inspection compiles its own rule set.
        assert!(on.rules.inspects_responses());
        assert!(!off.rules.inspects_responses());
        // An unused response_body_limit does not split the compilation cache.
        let off2 = build(json!({"response_body_limit": 4096})).unwrap();
        assert!(Arc::ptr_eq(&off.rules, &off2.rules));
    }

    #[tokio::test]
    async fn leaky_responses_are_replaced_or_reported() {
        let block = build(json!({"inspect_response": true})).unwrap();
        let detect = build(json!({"inspect_response": true, "mode": "detect"})).unwrap();
        let html = head(500, &[("content-type", "text/html")]);
        let mut c = ctx(Method::GET, "/items/1", None);
        let f = block
            .run_response(&mut c, &html, &prefix(MYSQL_ERROR))
            .await;
        assert_eq!(status(&f), 502);
        if let Flow::Respond(r) = f {
            assert_eq!(
                &r.body[..],
                br#"{"message":"An invalid response was received from the upstream server"}"#
            );
            assert_eq!(r.headers.len(), 1, "{:?}", r.headers);
        }
        let f = detect
            .run_response(&mut c, &html, &prefix(MYSQL_ERROR))
            .await;
        assert_eq!(status(&f), 0);
        // Benign, not text, compressed: passed.
        let json_head = head(200, &[("content-type", "application/json")]);
        let f = block
            .run_response(&mut c, &json_head, &prefix(r#"{"id": 1}"#))
            .await;
        assert_eq!(status(&f), 0);
        let png = head(200, &[("content-type", "image/png")]);
        let f = block.run_response(&mut c, &png, &prefix(MYSQL_ERROR)).await;
        assert_eq!(status(&f), 0);
        let gz = head(
            200,
            &[("content-type", "text/html"), ("content-encoding", "gzip")],
        );
        let f = block.run_response(&mut c, &gz, &prefix(MYSQL_ERROR)).await;
        assert_eq!(status(&f), 0);
    }

    #[tokio::test]
    async fn the_request_view_from_the_access_phase_is_replayed() {
        let block = build(json!({
            "inspect_response": true,
            "custom_rules": ["SecRule REQUEST_FILENAME \"@beginsWith /debug\" \"id:10030,phase:1,pass,nolog,ctl:ruleRemoveByTag=attack-disclosure\""],
        }))
        .unwrap();
        let html = head(500, &[("content-type", "text/html")]);
        let mut c = ctx(Method::GET, "/debug/x", None);
        assert_eq!(status(&flow(block.access(&mut c)).await), 0);
        assert!(c.state.get::<RequestView>().is_some());
        // A later plugin rewrites the target: the response replays what the WAF saw.
        c.path = "/items".into();
        c.uri = "/items".parse().unwrap();
        let f = block
            .run_response(&mut c, &html, &prefix(MYSQL_ERROR))
            .await;
        assert_eq!(status(&f), 0);
        assert!(c.state.get::<RequestView>().is_none());
        // Without a stored view (the access phase did not run) the context is used.
        let f = block
            .run_response(&mut c, &html, &prefix(MYSQL_ERROR))
            .await;
        assert_eq!(status(&f), 502);
    }
}
