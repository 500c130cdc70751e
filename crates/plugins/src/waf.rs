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

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use http::StatusCode;
use portcullis_config::{Errors, Obj};
use portcullis_waf::{CrsConfig, Request, Rules, Verdict};
use serde_json::Value;

use crate::{Access, Ctx, Flow, Plugin, Response};

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
        if o.bool_or("inspect_response", false, errs) {
            errs.push(
                o.field_path("inspect_response"),
                "response inspection is not implemented: the proxy has no response-body phase yet",
            );
        }
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
            ..CrsConfig::default()
        };
        match compiled(&cfg) {
            Ok(rules) => Some(Waf {
                rules,
                mode,
                inspect_body,
                body_limit,
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

    fn forbidden() -> Flow {
        Flow::Respond(Response::message(StatusCode::FORBIDDEN, "Forbidden"))
    }

    /// Logs the security event for a verdict that matched rules, and decides.
    fn decide(&self, ctx: &Ctx, verdict: &Verdict) -> Flow {
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
        if !verdict.blocked {
            // Below the anomaly threshold: useful when tuning, not an incident.
            tracing::debug!(
                target: "security",
                plugin = "waf",
                event = "waf_match",
                mode = self.mode.as_str(),
                rule_ids = %ids,
                client_ip = %ctx.client_ip,
                route,
                request_id = %ctx.request_id,
                "waf rules matched below the blocking threshold"
            );
            return Flow::Continue;
        }
        let score = verdict
            .anomaly_score
            .map_or_else(|| "-".to_string(), |s| s.to_string());
        match self.mode {
            Mode::Block => {
                tracing::warn!(
                    target: "security",
                plugin = "waf",
                    event = "waf_block",
                    mode = "block",
                    rule_ids = %ids,
                    anomaly_score = %score,
                    client_ip = %ctx.client_ip,
                    method = %ctx.method,
                    route,
                    request_id = %ctx.request_id,
                    "waf blocked a request"
                );
                Self::forbidden()
            }
            Mode::Detect => {
                tracing::warn!(
                    target: "security",
                plugin = "waf",
                    event = "waf_detect",
                    mode = "detect",
                    rule_ids = %ids,
                    anomaly_score = %score,
                    client_ip = %ctx.client_ip,
                    method = %ctx.method,
                    route,
                    request_id = %ctx.request_id,
                    "waf would have blocked a request (detect mode)"
                );
                Flow::Continue
            }
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
        let target = match ctx.uri.path_and_query() {
            Some(pq) if !pq.as_str().is_empty() => std::borrow::Cow::Borrowed(pq.as_str()),
            _ => match &ctx.query {
                Some(q) => format!("{}?{q}", ctx.path).into(),
                None => ctx.path.as_str().into(),
            },
        };
        let version = match ctx.version {
            http::Version::HTTP_10 => "1.0",
            http::Version::HTTP_2 => "2.0",
            http::Version::HTTP_3 => "3.0",
            _ => "1.1",
        };
        // The transaction sees the client's headers, not the id the gateway just generated
        // for this request (unique per request, it carries nothing to inspect).
        let mut headers: Vec<(&[u8], &[u8])> = ctx
            .headers
            .iter()
            .filter(|(_, v)| v.as_bytes() != ctx.request_id.as_bytes())
            .map(|(k, v)| (k.as_str().as_bytes(), v.as_bytes()))
            .collect();
        if !ctx.headers.contains_key(http::header::HOST) && !ctx.host.is_empty() {
            // HTTP/2 carries the host in :authority; the CRS expects a Host header.
            headers.push((b"host", ctx.host.as_bytes()));
        }
        let mut req = Request::new(ctx.method.as_str(), &target);
        req.version = version;
        req.client_ip = ctx.client_ip;
        req.headers = headers;
        req.body = body.as_deref();
        let key = self.rules.cache_key(&req);
        if let Some(verdict) = key.as_deref().and_then(|k| self.rules.cached(k)) {
            // Seen before with identical bytes: same verdict, no transaction, no thread hop.
            return self.decide(ctx, &verdict);
        }
        let owned = OwnedRequest::from(&req, body.clone());
        let rules = self.rules.clone();
        let result = tokio::task::spawn_blocking(move || {
            rules.inspect_cached(&owned.view(), key.as_deref())
        })
        .await;
        match result {
            Ok(Ok(verdict)) => self.decide(ctx, &verdict),
            Ok(Err(e)) => self.failed(ctx, &e.to_string()),
            Err(e) => self.failed(ctx, &e.to_string()),
        }
    }

    /// The engine could not inspect the request: fail closed when enforcing.
    fn failed(&self, ctx: &Ctx, error: &str) -> Flow {
        tracing::error!(
            target: "security",
                plugin = "waf",
            event = "waf_error",
            mode = self.mode.as_str(),
            error,
            client_ip = %ctx.client_ip,
            request_id = %ctx.request_id,
            "waf could not inspect a request"
        );
        match self.mode {
            Mode::Block => Self::forbidden(),
            Mode::Detect => Flow::Continue,
        }
    }
}

/// A request's inspected parts, owned so they can move to a blocking thread.
struct OwnedRequest {
    method: String,
    target: String,
    version: &'static str,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    body: Option<bytes::Bytes>,
    client_ip: std::net::IpAddr,
}

impl OwnedRequest {
    fn from(req: &Request<'_>, body: Option<bytes::Bytes>) -> OwnedRequest {
        OwnedRequest {
            method: req.method.to_string(),
            target: req.uri.to_string(),
            version: match req.version {
                "1.0" => "1.0",
                "2.0" => "2.0",
                "3.0" => "3.0",
                _ => "1.1",
            },
            headers: req
                .headers
                .iter()
                .map(|(k, v)| (k.to_vec(), v.to_vec()))
                .collect(),
            body,
            client_ip: req.client_ip,
        }
    }

    fn view(&self) -> Request<'_> {
        let mut req = Request::new(&self.method, &self.target);
        req.version = self.version;
        req.client_ip = self.client_ip;
        req.headers = self
            .headers
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_slice()))
            .collect();
        req.body = self.body.as_deref();
        req
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
            "inspect_response": true,
            "custom_rules": ["SecRuleEngine Off", "SecRule ARGS \"@rx a\" \"id:10001,phase:2,denyy\""],
        }))
        .unwrap_err();
        for want in [
            "plugins[0].config.paranoia_level",
            "plugins[0].config.mode",
            "plugins[0].config.bogus",
            "plugins[0].config.exclude_rules[0]",
            "plugins[0].config.inspect_response",
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
        // A private rule set (cache size 7 is used by no other test) so counts are exact.
        let waf = build(json!({"verdict_cache_size": 7})).unwrap();
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
}
