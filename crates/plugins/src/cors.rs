//! `cors`: answers CORS preflights and adds the `Access-Control-*` headers to responses.
//!
//! Kong 3.x semantics:
//! - Preflight = `OPTIONS` with a non-empty `Origin` and an `Access-Control-Request-Method`;
//!   answered `200` with an empty body by the gateway, or proxied untouched with
//!   `preflight_continue`.
//! - `origins` empty or containing `*` allows every origin (`Access-Control-Allow-Origin: *`).
//!   Otherwise entries made only of `[A-Za-z0-9.:/-]` are exact origins (default ports ignored)
//!   and any other entry is a regex, anchored at both ends, matched against the request's
//!   `scheme://host[:port]` when it contains `:` and against the host alone otherwise. A single
//!   exact entry is always sent as is. `Vary: Origin` accompanies every non-`*` answer.
//!
//! Safe deviations (see `docs/kong-compatibility.md`): with `credentials: true` and an
//! allow-all `origins`, Kong reflects any `Origin` with `Access-Control-Allow-Credentials:
//! true`; Portcullis then sends no `Access-Control-Allow-Origin` / `-Credentials` at all. The
//! `null` origin never matches a list entry, and a `null` entry is refused at load.

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, VARY};
use http::{HeaderMap, Method, StatusCode};
use portcullis_config::{Errors, Obj};
use regex::Regex;
use serde_json::Value;

use crate::{Access, Ctx, Flow, Plugin, Response, ResponseHead};

const METHODS: &[&str] = &[
    "GET", "HEAD", "PUT", "PATCH", "POST", "DELETE", "OPTIONS", "TRACE", "CONNECT",
];

const ACAO: HeaderName = HeaderName::from_static("access-control-allow-origin");
const ACAC: HeaderName = HeaderName::from_static("access-control-allow-credentials");
const ACAH: HeaderName = HeaderName::from_static("access-control-allow-headers");
const ACAM: HeaderName = HeaderName::from_static("access-control-allow-methods");
const ACMA: HeaderName = HeaderName::from_static("access-control-max-age");
const ACEH: HeaderName = HeaderName::from_static("access-control-expose-headers");
const ACAPN: HeaderName = HeaderName::from_static("access-control-allow-private-network");
const ACRM: &str = "access-control-request-method";
const ACRH: &str = "access-control-request-headers";
const ACRPN: &str = "access-control-request-private-network";

/// One `origins` entry that is not `*`.
#[derive(Debug)]
enum Rule {
    /// A normalised `scheme://host[:port]` (or the raw entry when it has no host).
    Exact(String),
    /// An anchored regex, matched against the host only when `by_host`.
    Regex { re: Regex, by_host: bool },
}

#[derive(Debug)]
enum Origins {
    /// Empty list or `*`.
    All,
    /// A single exact entry: sent as is, whatever the request's Origin.
    Single(HeaderValue),
    /// Checked against the request's Origin.
    List(Vec<Rule>),
}

/// A compiled `cors` instance.
#[derive(Debug)]
pub struct Cors {
    origins: Origins,
    headers: Option<HeaderValue>,
    exposed_headers: Option<HeaderValue>,
    methods: HeaderValue,
    max_age: Option<HeaderValue>,
    credentials: bool,
    private_network: bool,
    preflight_continue: bool,
    allow_origin_absent: bool,
}

/// Marks a request whose preflight was handled (or delegated): no headers on the response.
#[derive(Clone, Copy)]
struct PreflightSeen;

fn is_plain(entry: &str) -> bool {
    !entry.is_empty()
        && entry
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b':' | b'/' | b'-'))
}

/// An origin as Kong normalises it: `domain` is `scheme://host[:port]` without default ports,
/// `host` the host alone; both are the raw string when it has no host.
#[derive(Debug, PartialEq, Eq)]
struct Normalized {
    domain: String,
    host: String,
}

fn normalize(origin: &str) -> Normalized {
    let raw = || Normalized {
        domain: origin.to_string(),
        host: origin.to_string(),
    };
    let Some((scheme, rest)) = origin.split_once("://") else {
        return raw();
    };
    let authority = rest
        .split(['/', '?', '#'])
        .next()
        .unwrap_or_default()
        .rsplit('@')
        .next()
        .unwrap_or_default();
    let (host, port) = if let Some(stripped) = authority.strip_prefix('[') {
        match stripped.split_once(']') {
            Some((h, p)) => (format!("[{h}]"), p.strip_prefix(':')),
            None => return raw(),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (authority.to_string(), None),
        }
    };
    if host.is_empty() || host == "[]" {
        return raw();
    }
    let default_port =
        |p: &str| (scheme == "http" && p == "80") || (scheme == "https" && p == "443");
    let port = port.filter(|p| !p.is_empty() && !default_port(p));
    let mut domain = String::with_capacity(origin.len());
    if !scheme.is_empty() {
        domain.push_str(scheme);
        domain.push_str("://");
    }
    domain.push_str(&host);
    if let Some(p) = port {
        domain.push(':');
        domain.push_str(p);
    }
    Normalized { domain, host }
}

fn join_header(o: &Obj<'_>, key: &str, list: &[String], errs: &mut Errors) -> Option<HeaderValue> {
    if list.is_empty() {
        return None;
    }
    match HeaderValue::from_str(&list.join(",")) {
        Ok(v) => Some(v),
        Err(_) => {
            errs.push(o.field_path(key), "invalid header value");
            None
        }
    }
}

fn compile_rule(entry: &str) -> Result<Rule, regex::Error> {
    if is_plain(entry) {
        return Ok(Rule::Exact(normalize(entry).domain));
    }
    // Kong anchors regexes at the start and appends `$` unless the entry ends with one.
    let mut inner = entry.strip_prefix('^').unwrap_or(entry);
    if inner.ends_with('$') && !inner.ends_with("\\$") {
        inner = &inner[..inner.len() - 1];
    }
    Ok(Rule::Regex {
        re: Regex::new(&format!("^(?:{inner})$"))?,
        by_host: !entry.contains(':'),
    })
}

impl Cors {
    /// Validates the config and compiles the origin rules.
    pub fn build(config: &Value, path: &str, errs: &mut Errors) -> Option<Cors> {
        let before = errs.len();
        let mut o = Obj::open(config, path, errs)?;
        let entries = o.str_array("origins", errs);
        let opath = o.field_path("origins");
        let mut rules = Vec::new();
        let mut allow_all = entries.is_empty();
        for (i, entry) in entries.iter().enumerate() {
            if entry == "*" {
                allow_all = true;
                continue;
            }
            if entry == "null" {
                errs.push(
                    portcullis_config::reader::index(&opath, i),
                    "the 'null' origin cannot be allowed (sandboxed documents and local files send it)",
                );
                continue;
            }
            match compile_rule(entry) {
                Ok(r) => rules.push(r),
                Err(_) => errs.push(
                    portcullis_config::reader::index(&opath, i),
                    format!("'{entry}' is not a valid regex"),
                ),
            }
        }
        let headers = o.str_array("headers", errs);
        let headers = join_header(&o, "headers", &headers, errs);
        let exposed = o.str_array("exposed_headers", errs);
        let exposed_headers = join_header(&o, "exposed_headers", &exposed, errs);
        let methods = if o.has("methods") {
            let mpath = o.field_path("methods");
            let list = o.str_array("methods", errs);
            for (i, m) in list.iter().enumerate() {
                if !METHODS.contains(&m.as_str()) {
                    errs.push(
                        portcullis_config::reader::index(&mpath, i),
                        format!("expected one of: {}", METHODS.join(", ")),
                    );
                }
            }
            list.join(",")
        } else {
            let _ = o.get("methods");
            METHODS.join(",")
        };
        let max_age = match o.opt_f64("max_age", errs) {
            Some(n) if n.fract() == 0.0 && n.abs() < 1e15 => Some(format!("{}", n as i64)),
            Some(n) => Some(format!("{n}")),
            None => None,
        };
        let credentials = o.bool_or("credentials", false, errs);
        let private_network = o.bool_or("private_network", false, errs);
        let preflight_continue = o.bool_or("preflight_continue", false, errs);
        let allow_origin_absent = o.bool_or("allow_origin_absent", true, errs);
        o.finish(errs);
        if errs.len() > before {
            return None;
        }
        let origins = if allow_all {
            Origins::All
        } else if entries.len() == 1 && is_plain(&entries[0]) {
            Origins::Single(HeaderValue::from_str(&entries[0]).ok()?)
        } else {
            Origins::List(rules)
        };
        Some(Cors {
            origins,
            headers,
            exposed_headers,
            methods: HeaderValue::from_str(&methods).ok()?,
            max_age: max_age.and_then(|m| HeaderValue::from_str(&m).ok()),
            credentials,
            private_network,
            preflight_continue,
            allow_origin_absent,
        })
    }

    /// The `Access-Control-Allow-Origin` value for a request Origin (`None`: send none).
    fn allowed_origin(&self, req_origin: Option<&str>) -> Option<HeaderValue> {
        match &self.origins {
            // Never `*` (nor a reflected origin) together with credentials.
            Origins::All if self.credentials => None,
            Origins::All => Some(HeaderValue::from_static("*")),
            Origins::Single(v) => Some(v.clone()),
            Origins::List(rules) => {
                let origin = req_origin.filter(|o| *o != "null")?;
                let n = normalize(origin);
                let found = rules.iter().any(|r| match r {
                    Rule::Exact(d) => *d == n.domain,
                    Rule::Regex { re, by_host } => {
                        re.is_match(if *by_host { &n.host } else { &n.domain })
                    }
                });
                if found {
                    HeaderValue::from_str(&n.domain).ok()
                } else {
                    None
                }
            }
        }
    }

    /// Writes the origin and credentials headers; `append_vary` adds to an upstream's Vary.
    fn configure_origin(&self, h: &mut HeaderMap, req_origin: Option<&str>, append_vary: bool) {
        let wildcard = matches!(self.origins, Origins::All);
        if !wildcard || self.credentials {
            let origin = HeaderValue::from_static("Origin");
            if append_vary {
                h.append(VARY, origin);
            } else {
                h.insert(VARY, origin);
            }
        }
        match self.allowed_origin(req_origin) {
            Some(v) => {
                h.insert(ACAO, v);
                if self.credentials {
                    h.insert(ACAC, HeaderValue::from_static("true"));
                }
            }
            None => {
                h.remove(ACAO);
                if wildcard && self.credentials {
                    h.remove(ACAC);
                }
            }
        }
    }

    fn preflight(&self, ctx: &Ctx, req_origin: &str) -> Response {
        let mut h = HeaderMap::new();
        self.configure_origin(&mut h, Some(req_origin), false);
        match (&self.headers, ctx.headers.get(ACRH)) {
            (Some(v), _) => {
                h.insert(ACAH, v.clone());
            }
            (None, Some(requested)) => {
                h.insert(ACAH, requested.clone());
            }
            (None, None) => {}
        }
        h.insert(ACAM, self.methods.clone());
        if let Some(m) = &self.max_age {
            h.insert(ACMA, m.clone());
        }
        if self.private_network
            && ctx
                .headers
                .get(ACRPN)
                .is_some_and(|v| v.as_bytes() == b"true")
        {
            h.insert(ACAPN, HeaderValue::from_static("true"));
        }
        Response {
            status: StatusCode::OK,
            headers: h,
            body: Bytes::new(),
        }
    }
}

fn request_origin(ctx: &Ctx) -> Option<String> {
    let v = ctx.headers.get(http::header::ORIGIN)?;
    let s = v.to_str().ok()?;
    (!s.is_empty()).then(|| s.to_string())
}

impl Plugin for Cors {
    fn response_header_names(&self) -> Option<Vec<HeaderName>> {
        // What `response_headers` sets, appends to or removes.
        Some(vec![VARY, ACAO, ACAC, ACEH])
    }

    fn name(&self) -> &'static str {
        "cors"
    }

    fn access<'a>(&'a self, ctx: &'a mut Ctx) -> Access<'a> {
        if ctx.method != Method::OPTIONS || !ctx.headers.contains_key(ACRM) {
            return Access::Now(Flow::Continue);
        }
        let Some(origin) = request_origin(ctx) else {
            return Access::Now(Flow::Continue);
        };
        ctx.state.insert(PreflightSeen);
        if self.preflight_continue {
            return Access::Now(Flow::Continue);
        }
        Access::Now(Flow::Respond(self.preflight(ctx, &origin)))
    }

    fn response_headers(&self, ctx: &mut Ctx, head: &mut ResponseHead) {
        if ctx.state.get::<PreflightSeen>().is_some() {
            return;
        }
        let origin = request_origin(ctx);
        if origin.is_none() && !self.allow_origin_absent {
            return;
        }
        self.configure_origin(&mut head.headers, origin.as_deref(), true);
        if let Some(v) = &self.exposed_headers {
            head.headers.insert(ACEH, v.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn build(v: Value) -> Result<Cors, Vec<String>> {
        let mut e = Errors::default();
        Cors::build(&v, "plugins[0].config", &mut e)
            .ok_or_else(|| e.into_vec().iter().map(ToString::to_string).collect())
    }

    fn acao(c: &Cors, origin: &str) -> Option<String> {
        c.allowed_origin(Some(origin))
            .map(|v| v.to_str().unwrap().to_string())
    }

    #[test]
    fn normalizes_like_kong() {
        let n = normalize("https://App.example.com:443/x");
        assert_eq!(n.domain, "https://App.example.com");
        assert_eq!(n.host, "App.example.com");
        assert_eq!(normalize("http://a.test:8080").domain, "http://a.test:8080");
        assert_eq!(normalize("http://[::1]:80").domain, "http://[::1]");
        assert_eq!(normalize("null").domain, "null");
        assert_eq!(normalize("http://u:p@h.test").domain, "http://h.test");
    }

    #[test]
    fn exact_and_regex_origins() {
        let c = build(json!({"origins": ["https://app.example.com", "https://.*\\.partner\\.test", "(.*\\.)?corp\\.test"]}))
            .unwrap();
        assert_eq!(
            acao(&c, "https://app.example.com").as_deref(),
            Some("https://app.example.com")
        );
        assert_eq!(
            acao(&c, "https://app.example.com:443").as_deref(),
            Some("https://app.example.com")
        );
        assert_eq!(acao(&c, "http://app.example.com"), None);
        assert_eq!(acao(&c, "https://app.example.com.evil.test"), None);
        assert_eq!(
            acao(&c, "https://x.partner.test").as_deref(),
            Some("https://x.partner.test")
        );
        assert_eq!(acao(&c, "https://x.partner.test.evil.test"), None);
        assert_eq!(acao(&c, "https://evil.test/?https://x.partner.test"), None);
        // No ':' in the regex: matched against the host alone, any scheme.
        assert_eq!(
            acao(&c, "http://a.corp.test").as_deref(),
            Some("http://a.corp.test")
        );
        assert_eq!(acao(&c, "http://a.corp.test.evil"), None);
        assert_eq!(acao(&c, "null"), None);
    }

    #[test]
    fn explicit_anchors_are_kept_once() {
        let c = build(json!({"origins": ["^https://a\\.test$", "https://b.test"]})).unwrap();
        assert!(acao(&c, "https://a.test").is_some());
        assert!(acao(&c, "https://xa.test").is_none());
    }

    #[test]
    fn single_exact_origin_is_always_sent() {
        let c = build(json!({"origins": ["https://app.example.com"]})).unwrap();
        assert_eq!(
            acao(&c, "https://evil.test").as_deref(),
            Some("https://app.example.com")
        );
    }

    #[test]
    fn wildcard_never_goes_with_credentials() {
        let c = build(json!({})).unwrap();
        assert_eq!(acao(&c, "https://x.test").as_deref(), Some("*"));
        let c = build(json!({"origins": ["*"], "credentials": true})).unwrap();
        assert_eq!(acao(&c, "https://x.test"), None);
        let mut h = HeaderMap::new();
        h.insert(ACAO, HeaderValue::from_static("*"));
        h.insert(ACAC, HeaderValue::from_static("true"));
        c.configure_origin(&mut h, Some("https://x.test"), true);
        assert!(h.get(ACAO).is_none() && h.get(ACAC).is_none());
    }

    #[test]
    fn config_errors() {
        let e = build(json!({"origins": ["(bad", "null"], "methods": ["GET", "FETCH"], "max_age": "x", "q": 1}))
            .unwrap_err();
        assert!(
            e.contains(&"plugins[0].config.origins[0]: '(bad' is not a valid regex".to_string()),
            "{e:?}"
        );
        assert!(e
            .iter()
            .any(|m| m.starts_with("plugins[0].config.origins[1]: the 'null' origin")));
        assert!(e.contains(&"plugins[0].config.methods[1]: expected one of: GET, HEAD, PUT, PATCH, POST, DELETE, OPTIONS, TRACE, CONNECT".to_string()));
        assert!(
            e.contains(&"plugins[0].config.max_age: expected a number, got a string".to_string())
        );
        assert!(e.contains(&"plugins[0].config.q: unknown field".to_string()));
    }
}
