//! `request-termination`: answer with a fixed status and body instead of proxying.
//!
//! Kong config: `status_code` (default 503), `message` xor `body` + `content_type`, `trigger`
//! (only terminate when a header or query argument of that name is present), `echo` (answer with
//! a JSON description of the request instead).

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use portcullis_config::{Errors, Obj};
use serde_json::{json, Value};

use crate::{Access, Ctx, Flow, Plugin, Response};

/// A compiled `request-termination` instance.
#[derive(Debug)]
pub struct RequestTermination {
    status: StatusCode,
    /// The prebuilt response, when not echoing.
    response: Response,
    trigger: Option<String>,
    echo: bool,
}

impl RequestTermination {
    /// Validates the config and builds the response once.
    pub fn build(config: &Value, path: &str, errs: &mut Errors) -> Option<RequestTermination> {
        let before = errs.len();
        let mut o = Obj::open(config, path, errs)?;
        let code = o.int_or("status_code", 503, 100, 599, errs) as u16;
        // Kong's `is_present`: an empty string counts as not set.
        let present = |v: Option<String>| v.filter(|s| !s.is_empty());
        let message = present(o.opt_str("message", errs));
        let body = present(o.opt_str("body", errs));
        let content_type = present(o.opt_str("content_type", errs));
        let trigger = o.opt_str("trigger", errs);
        let echo = o.bool_or("echo", false, errs);
        if message.is_some() && (body.is_some() || content_type.is_some()) {
            errs.push(
                o.path().to_string(),
                "message cannot be used with content_type or body",
            );
        }
        if content_type.is_some() && body.is_none() {
            errs.push(o.field_path("content_type"), "content_type requires a body");
        }
        if echo && (body.is_some() || content_type.is_some()) {
            errs.push(
                o.path().to_string(),
                "echo cannot be used with content_type and body",
            );
        }
        // Kong's `typedefs.header_name`.
        if let Some(t) = &trigger {
            if t.is_empty()
                || !t
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                errs.push(
                    o.field_path("trigger"),
                    "bad header name, allowed characters are a-z, A-Z, 0-9, '_', and '-'",
                );
            }
        }
        let ct_value = content_type
            .as_deref()
            .map(HeaderValue::from_str)
            .transpose();
        if ct_value.is_err() {
            errs.push(o.field_path("content_type"), "invalid content type");
        }
        o.finish(errs);
        if errs.len() > before {
            return None;
        }
        let status = StatusCode::from_u16(code).ok()?;
        let response = match body {
            Some(b) => {
                let mut r = Response::json(status, Bytes::from(b));
                match ct_value.ok().flatten() {
                    Some(ct) => {
                        r.headers.insert(http::header::CONTENT_TYPE, ct);
                    }
                    None => {
                        r.headers.remove(http::header::CONTENT_TYPE);
                    }
                }
                r
            }
            // Kong sends `{"message": ...}` with the configured message or its default for
            // the status, and no body at all for a status it has no default for.
            None => match message.as_deref().or(default_message(code)) {
                Some(m) => Response::message(status, m),
                None => {
                    let mut r = Response::json(status, Bytes::new());
                    r.headers.remove(http::header::CONTENT_TYPE);
                    r
                }
            },
        };
        Some(RequestTermination {
            status,
            response,
            trigger,
            echo,
        })
    }

    fn triggered(&self, ctx: &Ctx) -> bool {
        match &self.trigger {
            None => true,
            Some(t) => ctx.headers.contains_key(t.as_str()) || ctx.query_arg(t).is_some(),
        }
    }

    fn echo_response(&self, ctx: &Ctx) -> Response {
        // Never echo credentials back: Authorization and Cookie are redacted.
        let headers: serde_json::Map<String, Value> = ctx
            .headers
            .iter()
            .map(|(k, v)| {
                let sensitive = matches!(
                    k.as_str(),
                    "authorization" | "proxy-authorization" | "cookie"
                );
                let val = if sensitive {
                    "REDACTED".to_string()
                } else {
                    String::from_utf8_lossy(v.as_bytes()).into_owned()
                };
                (k.as_str().to_string(), Value::String(val))
            })
            .collect();
        let port = ctx
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.rsplit_once(':'))
            .and_then(|(_, p)| p.parse::<u16>().ok())
            .unwrap_or(if ctx.scheme == "https" { 443 } else { 80 });
        // Kong's `kong.request.get_uri_captures()`: every group by position, named ones by name.
        let unnamed: Vec<&str> = ctx.uri_captures.iter().map(|(_, v)| v.as_str()).collect();
        let named: serde_json::Map<String, Value> = ctx
            .uri_captures
            .iter()
            .filter_map(|(n, v)| Some((n.clone()?, Value::String(v.clone()))))
            .collect();
        let body = json!({
            "message": self.response_message(),
            "kong": {
                "node_id": crate::prometheus::node_id(),
                "worker_pid": std::process::id(),
                "hostname": crate::syslog::hostname(),
            },
            "request": {
                "method": ctx.method.as_str(),
                "path": ctx.path,
                "query": query_table(ctx.query.as_deref()),
                "host": ctx.host,
                "port": port,
                "scheme": ctx.scheme,
                "headers": headers,
                "uri_captures": { "named": named, "unnamed": unnamed },
            },
            "matched_route": { "id": ctx.route_id.as_deref(), "name": ctx.route_name.as_deref() },
            "matched_service": { "id": ctx.service_id.as_deref(), "name": ctx.service_name.as_deref() },
        });
        // Absent, as a nil in Kong's table, when the body is not JSON or a form.
        let mut body = body;
        if let Some(req) = body.get_mut("request") {
            // Not read when a trigger is set (see `reads_body`): left out, not shown empty.
            if self.reads_body() {
                req["raw_body"] =
                    String::from_utf8_lossy(ctx.body.as_deref().unwrap_or_default()).into();
            }
            if let Some(parsed) = parsed_body(ctx) {
                req["body"] = parsed;
            }
        }
        Response::json(self.status, Bytes::from(body.to_string()))
    }

    fn response_message(&self) -> Value {
        serde_json::from_slice::<Value>(&self.response.body)
            .ok()
            .and_then(|v| v.get("message").cloned())
            .unwrap_or(Value::Null)
    }
}

/// Kong's default messages (`DEFAULT_RESPONSE` in its handler); other statuses have none.
fn default_message(code: u16) -> Option<&'static str> {
    Some(match code {
        401 => "Unauthorized",
        404 => "Not found",
        405 => "Method not allowed",
        500 => "An unexpected error occurred",
        502 => "Bad Gateway",
        503 => "Service unavailable",
        _ => return None,
    })
}

/// The body as Kong's `kong.request.get_body()` gives it: a JSON body decoded, a form body as a
/// table like the query's; none for other types and bodies that do not parse.
fn parsed_body(ctx: &Ctx) -> Option<Value> {
    let body = ctx.body.as_deref()?;
    match ctx.media_type()?.as_str() {
        // Kong's `get_body` gives only a table (object or array) for JSON.
        "application/json" => serde_json::from_slice(body)
            .ok()
            .filter(|v: &Value| v.is_object() || v.is_array()),
        "application/x-www-form-urlencoded" => Some(Value::Object(query_table(Some(
            &String::from_utf8_lossy(body),
        )))),
        _ => None,
    }
}

/// The query string as Kong's `kong.request.get_query()` gives it: decoded names and values,
/// `true` for a name without `=`, an array for a repeated name.
fn query_table(query: Option<&str>) -> serde_json::Map<String, Value> {
    let mut out = serde_json::Map::new();
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = match pair.split_once('=') {
            Some((k, v)) => (decode(k), Value::String(decode(v))),
            None => (decode(pair), Value::Bool(true)),
        };
        match out.get_mut(&k) {
            Some(Value::Array(a)) => a.push(v),
            Some(prev) => *prev = Value::Array(vec![prev.take(), v]),
            None => {
                out.insert(k, v);
            }
        }
    }
    out
}

impl Plugin for RequestTermination {
    fn response_header_names(&self) -> Option<Vec<http::HeaderName>> {
        // No response phase.
        Some(Vec::new())
    }

    fn name(&self) -> &'static str {
        "request-termination"
    }

    /// The echo returns the request body, as Kong's does. With a `trigger` the body is not
    /// read: the requests that do not trigger it must stream to the upstream untouched (and
    /// never get 413 for a body this plugin will not use), so a triggered echo leaves it out.
    fn reads_body(&self) -> bool {
        self.echo && self.trigger.is_none()
    }

    fn access<'a>(&'a self, ctx: &'a mut Ctx) -> Access<'a> {
        if !self.triggered(ctx) {
            return Access::Now(Flow::Continue);
        }
        if self.echo {
            return Access::Now(Flow::Respond(self.echo_response(ctx)));
        }
        Access::Now(Flow::Respond(self.response.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, Method};

    fn ctx(query: Option<&str>) -> Ctx {
        Ctx::new(
            Method::GET,
            "/x".into(),
            query.map(str::to_string),
            HeaderMap::new(),
            "127.0.0.1".parse().unwrap(),
        )
    }

    fn run(p: &RequestTermination, c: &mut Ctx) -> Option<Response> {
        match p.access(c) {
            Access::Now(Flow::Respond(r)) => Some(r),
            Access::Now(Flow::Continue) => None,
            Access::Later(_) => panic!("sync plugin"),
        }
    }

    #[test]
    fn defaults_to_503_service_unavailable() {
        let mut e = Errors::default();
        let p = RequestTermination::build(&json!({}), "c", &mut e).unwrap();
        let r = run(&p, &mut ctx(None)).unwrap();
        assert_eq!(r.status, 503);
        assert_eq!(&r.body[..], br#"{"message":"Service unavailable"}"#);
    }

    #[test]
    fn custom_body_and_content_type() {
        let mut e = Errors::default();
        let p = RequestTermination::build(
            &json!({"status_code": 418, "body": "<h1>tea</h1>", "content_type": "text/html"}),
            "c",
            &mut e,
        )
        .unwrap();
        let r = run(&p, &mut ctx(None)).unwrap();
        assert_eq!(r.status, 418);
        assert_eq!(r.headers[http::header::CONTENT_TYPE], "text/html");
        assert_eq!(&r.body[..], b"<h1>tea</h1>");
    }

    #[test]
    fn trigger_only_fires_when_present() {
        let mut e = Errors::default();
        let p = RequestTermination::build(
            &json!({"trigger": "stop", "status_code": 403, "message": "no"}),
            "c",
            &mut e,
        )
        .unwrap();
        assert!(run(&p, &mut ctx(None)).is_none());
        let r = run(&p, &mut ctx(Some("a=1&stop"))).unwrap();
        assert_eq!(&r.body[..], br#"{"message":"no"}"#);
    }

    #[test]
    fn invalid_config_names_fields() {
        let mut e = Errors::default();
        assert!(RequestTermination::build(
            &json!({"status_code": 99, "message": "a", "body": "b", "x": 1}),
            "plugins[0].config",
            &mut e
        )
        .is_none());
        let msgs: Vec<String> = e.into_vec().iter().map(ToString::to_string).collect();
        assert!(
            msgs.contains(
                &"plugins[0].config.status_code: value should be between 100 and 599".to_string()
            ),
            "{msgs:?}"
        );
        assert!(msgs.contains(&"plugins[0].config.x: unknown field".to_string()));
        assert!(msgs.contains(
            &"plugins[0].config: message cannot be used with content_type or body".to_string()
        ));
    }

    /// Kong's `DEFAULT_RESPONSE`: a message for 401/404/405/500/502/503 only; any other
    /// status without a message or body is sent with no body.
    #[test]
    fn default_messages_are_kongs() {
        let answer = |code: u16| {
            let mut e = Errors::default();
            let p =
                RequestTermination::build(&json!({ "status_code": code }), "c", &mut e).unwrap();
            run(&p, &mut ctx(None)).unwrap()
        };
        assert_eq!(&answer(404).body[..], br#"{"message":"Not found"}"#);
        assert_eq!(
            &answer(405).body[..],
            br#"{"message":"Method not allowed"}"#
        );
        assert_eq!(
            &answer(500).body[..],
            br#"{"message":"An unexpected error occurred"}"#
        );
        for code in [200, 204, 403, 418, 429] {
            let r = answer(code);
            assert_eq!(r.status, code);
            assert!(r.body.is_empty(), "{code}: {:?}", r.body);
            assert!(r.headers.get(http::header::CONTENT_TYPE).is_none());
        }
    }

    /// Kong's schema checks: empty strings count as unset; echo excludes body and
    /// content_type; message excludes content_type; trigger is a header name.
    #[test]
    fn kong_schema_rules() {
        let errors = |config: Value| {
            let mut e = Errors::default();
            let ok = RequestTermination::build(&config, "c", &mut e).is_some();
            let msgs: Vec<String> = e.into_vec().iter().map(ToString::to_string).collect();
            (ok, msgs)
        };
        assert!(errors(json!({"message": "", "body": "x"})).0);
        assert_eq!(
            errors(json!({"echo": true, "body": "x"})).1,
            vec!["c: echo cannot be used with content_type and body"]
        );
        assert_eq!(
            errors(json!({"message": "m", "content_type": "text/plain"})).1,
            vec![
                "c: message cannot be used with content_type or body",
                "c.content_type: content_type requires a body"
            ]
        );
        let (ok, msgs) = errors(json!({"trigger": "bad header"}));
        assert!(!ok);
        assert!(
            msgs[0].starts_with("c.trigger: bad header name"),
            "{msgs:?}"
        );
        assert!(errors(json!({"trigger": "X-Debug_1"})).0);
    }

    /// `echo`: the request as Kong describes it, with the query as a table.
    #[test]
    fn echo_describes_the_request() {
        let mut e = Errors::default();
        let p = RequestTermination::build(&json!({"echo": true, "status_code": 200}), "c", &mut e)
            .unwrap();
        let r = run(&p, &mut ctx(Some("a=1&a=2&b&c=x%20y"))).unwrap();
        assert_eq!(r.status, 200);
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["message"], Value::Null);
        assert_eq!(
            v["request"]["query"],
            json!({"a": ["1", "2"], "b": true, "c": "x y"})
        );
        assert_eq!(v["request"]["method"], "GET");
        assert_eq!(v["request"]["path"], "/x");
        assert_eq!(v["kong"]["worker_pid"], std::process::id());
        assert_eq!(v["request"]["raw_body"], "");
        assert!(v["request"].get("body").is_none(), "{v}");
        assert!(p.reads_body());
    }

    /// The echoed body: raw, and decoded when JSON or a form (Kong's `get_body`).
    #[test]
    fn echo_returns_the_body() {
        let mut e = Errors::default();
        let p = RequestTermination::build(&json!({"echo": true}), "c", &mut e).unwrap();
        let with = |ct: &str, body: &'static [u8]| {
            let mut c = ctx(None);
            c.headers
                .insert(http::header::CONTENT_TYPE, ct.parse().unwrap());
            c.body = Some(Bytes::from_static(body));
            let r = run(&p, &mut c).unwrap();
            assert_eq!(r.status, 503);
            serde_json::from_slice::<Value>(&r.body).unwrap()["request"].clone()
        };
        let v = with("application/json; charset=utf-8", br#"{"a":[1,2]}"#);
        assert_eq!(v["raw_body"], r#"{"a":[1,2]}"#);
        assert_eq!(v["body"], json!({"a": [1, 2]}));
        let v = with("application/x-www-form-urlencoded", b"x=1&x=2&y=a+b");
        assert_eq!(v["body"], json!({"x": ["1", "2"], "y": "a b"}));
        let v = with("text/plain", b"hello");
        assert_eq!(v["raw_body"], "hello");
        assert!(v.get("body").is_none(), "{v}");
        let v = with("application/json", b"{not json");
        assert!(v.get("body").is_none(), "{v}");
        let v = with("application/json", b"5");
        assert!(v.get("body").is_none(), "{v}");
        assert_eq!(with("application/json", b"[1]")["body"], json!([1]));
        // With a trigger the body is not read, so the echo leaves it out.
        let triggered =
            RequestTermination::build(&json!({"echo": true, "trigger": "x-echo"}), "c", &mut e)
                .unwrap();
        assert!(!triggered.reads_body());
        let plain = RequestTermination::build(&json!({}), "c", &mut e).unwrap();
        assert!(!plain.reads_body());
    }
}
