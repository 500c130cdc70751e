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
        let message = o.opt_str("message", errs);
        let body = o.opt_str("body", errs);
        let content_type = o.opt_str("content_type", errs);
        let trigger = o.opt_str("trigger", errs);
        let echo = o.bool_or("echo", false, errs);
        if message.is_some() && body.is_some() {
            errs.push(
                o.path().to_string(),
                "message cannot be used with content_type or body",
            );
        }
        if content_type.is_some() && body.is_none() {
            errs.push(o.field_path("content_type"), "content_type requires a body");
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
            None => {
                let default = default_message(status);
                Response::message(status, message.as_deref().unwrap_or(&default))
            }
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
        let body = json!({
            "message": self.response_message(),
            "request": {
                "method": ctx.method.as_str(),
                "path": ctx.path,
                "query": ctx.query,
                "host": ctx.host,
                "scheme": ctx.scheme,
                "headers": headers,
            },
            "matched_route": { "id": ctx.route_id.as_deref(), "name": ctx.route_name.as_deref() },
            "matched_service": { "id": ctx.service_id.as_deref(), "name": ctx.service_name.as_deref() },
        });
        Response::json(self.status, Bytes::from(body.to_string()))
    }

    fn response_message(&self) -> Value {
        serde_json::from_slice::<Value>(&self.response.body)
            .ok()
            .and_then(|v| v.get("message").cloned())
            .unwrap_or(Value::Null)
    }
}

/// Kong's default messages per status.
fn default_message(status: StatusCode) -> String {
    match status.as_u16() {
        503 => "Service unavailable".into(),
        _ => status.canonical_reason().unwrap_or("Unknown").to_string(),
    }
}

impl Plugin for RequestTermination {
    fn response_header_names(&self) -> Option<Vec<http::HeaderName>> {
        // No response phase.
        Some(Vec::new())
    }

    fn name(&self) -> &'static str {
        "request-termination"
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
}
