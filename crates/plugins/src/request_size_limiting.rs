//! `request-size-limiting`: refuse request bodies over a configured size (Kong's plugin).
//!
//! A declared Content-Length over the limit is refused before any byte of the body is read
//! (417 when the client asked `Expect: 100-continue`, else 413). A body without a
//! Content-Length (chunked) is counted as it arrives: the proxy stops reading at the limit
//! and answers 413, so an unbounded body is never buffered or forwarded.

use http::StatusCode;
use portcullis_config::{Errors, Obj};
use serde_json::Value;

use crate::{Access, Ctx, Flow, Plugin, Response};

const EXCEEDED: &str = "Request size limit exceeded";

/// A compiled `request-size-limiting` instance.
#[derive(Debug)]
pub struct RequestSizeLimiting {
    limit: u64,
    require_content_length: bool,
}

impl RequestSizeLimiting {
    /// Validates the config.
    pub fn build(config: &Value, path: &str, errs: &mut Errors) -> Option<RequestSizeLimiting> {
        let before = errs.len();
        let mut o = Obj::open(config, path, errs)?;
        let size = o.int_or("allowed_payload_size", 128, 0, i64::MAX / 1024 / 1024, errs);
        let unit = o
            .opt_str("size_unit", errs)
            .unwrap_or_else(|| "megabytes".to_string());
        let factor: u64 = match unit.as_str() {
            "megabytes" => 1024 * 1024,
            "kilobytes" => 1024,
            "bytes" => 1,
            _ => {
                errs.push(
                    o.field_path("size_unit"),
                    "expected one of: megabytes, kilobytes, bytes",
                );
                1
            }
        };
        let require_content_length = o.bool_or("require_content_length", false, errs);
        o.finish(errs);
        if errs.len() > before {
            return None;
        }
        Some(RequestSizeLimiting {
            limit: (size as u64).saturating_mul(factor),
            require_content_length,
        })
    }

    fn refuse(ctx: &Ctx) -> Flow {
        let expect = ctx
            .headers
            .get(http::header::EXPECT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
        let status = if expect {
            StatusCode::EXPECTATION_FAILED
        } else {
            StatusCode::PAYLOAD_TOO_LARGE
        };
        Flow::Respond(Response::message(status, EXCEEDED))
    }

    fn decide(&self, ctx: &mut Ctx) -> Flow {
        if let Some(body) = &ctx.body {
            // Another plugin already read the body: its real size decides.
            if body.len() as u64 > self.limit {
                return Self::refuse(ctx);
            }
            return Flow::Continue;
        }
        let declared = ctx
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        match declared {
            Some(n) if n > self.limit => Self::refuse(ctx),
            Some(_) => Flow::Continue,
            None if self.require_content_length => Flow::Respond(Response::message(
                StatusCode::LENGTH_REQUIRED,
                "A valid Content-Length header is required",
            )),
            None => {
                // Chunked (or no) body: the proxy enforces the limit while streaming.
                let limit = ctx.body_limit.map_or(self.limit, |l| l.min(self.limit));
                ctx.body_limit = Some(limit);
                Flow::Continue
            }
        }
    }
}

impl Plugin for RequestSizeLimiting {
    fn response_header_names(&self) -> Option<Vec<http::HeaderName>> {
        // No response phase.
        Some(Vec::new())
    }

    fn name(&self) -> &'static str {
        "request-size-limiting"
    }

    fn access<'a>(&'a self, ctx: &'a mut Ctx) -> Access<'a> {
        Access::Now(self.decide(ctx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;
    use serde_json::json;

    fn build(cfg: Value) -> Result<RequestSizeLimiting, Vec<String>> {
        let mut errs = Errors::default();
        match RequestSizeLimiting::build(&cfg, "plugins[0].config", &mut errs) {
            Some(p) if errs.is_empty() => Ok(p),
            _ => Err(errs.into_vec().into_iter().map(|e| e.to_string()).collect()),
        }
    }

    fn ctx(headers: &[(&'static str, &str)]) -> Ctx {
        let mut h = http::HeaderMap::new();
        for (k, v) in headers {
            h.insert(*k, v.parse().unwrap());
        }
        Ctx::new(
            Method::POST,
            "/".into(),
            None,
            h,
            "127.0.0.1".parse().unwrap(),
        )
    }

    fn status(f: Flow) -> u16 {
        match f {
            Flow::Continue => 0,
            Flow::Respond(r) => r.status.as_u16(),
        }
    }

    #[test]
    fn units_and_defaults() {
        assert_eq!(build(json!({})).unwrap().limit, 128 * 1024 * 1024);
        let p = build(json!({"allowed_payload_size": 10, "size_unit": "kilobytes"})).unwrap();
        assert_eq!(p.limit, 10 * 1024);
        let errs = build(json!({"size_unit": "gigabytes", "bogus": 1})).unwrap_err();
        assert!(errs
            .iter()
            .any(|e| e.contains("plugins[0].config.size_unit")));
        assert!(errs.iter().any(|e| e.contains("plugins[0].config.bogus")));
    }

    #[test]
    fn declared_length_is_checked_before_reading() {
        let p = build(json!({"allowed_payload_size": 10, "size_unit": "bytes"})).unwrap();
        assert_eq!(status(p.decide(&mut ctx(&[("content-length", "10")]))), 0);
        assert_eq!(status(p.decide(&mut ctx(&[("content-length", "11")]))), 413);
        assert_eq!(
            status(p.decide(&mut ctx(&[
                ("content-length", "11"),
                ("expect", "100-continue")
            ]))),
            417
        );
        let mut c = ctx(&[("transfer-encoding", "chunked")]);
        assert_eq!(status(p.decide(&mut c)), 0);
        assert_eq!(c.body_limit, Some(10));
        let strict = build(json!({"require_content_length": true})).unwrap();
        assert_eq!(status(strict.decide(&mut ctx(&[]))), 411);
    }
}
