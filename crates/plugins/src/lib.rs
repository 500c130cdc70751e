//! Plugins: one trait with a method per request phase, a registry that builds plugin instances
//! from Kong-format config once per config load, and the bundled plugins.
//!
//! Phases run in this order for each request (see `docs/plugins/README.md` for the chart):
//!
//! 1. [`Plugin::access`] — after the route is matched, before the upstream is chosen. May
//!    short-circuit with a response (authentication failures, termination, rate limits).
//! 2. [`Plugin::inspect_response`] — proxied responses only, for instances that asked
//!    ([`Plugin::response_inspection`]): sees the upstream's head and the first bytes of its
//!    body, may replace the whole response. May await.
//! 3. [`Plugin::response_headers`] — when the response head is known (from the upstream or from a
//!    short-circuit), before it is sent to the client.
//! 4. [`Plugin::response_body`] — rewrites a buffered upstream body ([`Plugin::reads_response_body`]).
//! 5. [`Plugin::log`] — after the response was sent; never affects the client.
//!
//! Plugins never see the proxy engine's types: they get a [`Ctx`] holding the request head
//! (`http` crate types), the matched route and service names, and per-request state.

pub mod acl;
pub mod auth;
pub mod basic_auth;
pub mod bot_detection;
pub mod catalog;
pub mod correlation_id;
pub mod cors;
mod ctx;
pub mod file_log;
pub mod headers;
pub mod hmac_auth;
pub mod http_log;
pub mod ip_restriction;
pub mod jwt;
pub mod key_auth;
pub mod lockout;
pub mod log_entry;
pub mod mtls_auth;
pub mod oas_validation;
pub mod openid_connect;
pub mod opentelemetry;
pub mod prometheus;
pub mod rate_limiting;
mod registry;
pub mod request_size_limiting;
pub mod request_termination;
pub mod request_validator;
pub mod sink;
pub mod syslog;
pub mod tcp_log;
pub mod trace;
pub mod transformer;
pub mod udp_log;
mod validation;
#[cfg(feature = "waf")]
pub mod waf;

pub use catalog::{Catalog, ConsumerInfo};
pub use ctx::{Ctx, ResponseHead};
pub use log_entry::LogEntry;
pub use registry::{
    build_plugin, build_scoped_plugin, known_plugins, priority_of, validate, Scope,
};

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};

/// A response produced by the gateway itself (short-circuit or error).
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: StatusCode,
    /// Headers to send.
    pub headers: HeaderMap,
    /// Body bytes.
    pub body: Bytes,
}

impl Response {
    /// Kong's error shape: `{"message": "..."}` as JSON.
    pub fn message(status: StatusCode, message: &str) -> Response {
        let body = serde_json::json!({ "message": message }).to_string();
        Response::json(status, Bytes::from(body))
    }

    /// A JSON body with the JSON content type.
    pub fn json(status: StatusCode, body: Bytes) -> Response {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        Response {
            status,
            headers,
            body,
        }
    }
}

/// What a phase decided.
#[derive(Debug)]
pub enum Flow {
    /// Go on with the next plugin.
    Continue,
    /// Stop and send this response; later access plugins and the upstream are skipped.
    Respond(Response),
}

/// The result of [`Plugin::access`] and [`Plugin::inspect_response`]: decided now, or after an
/// await (a Redis round trip, an introspection call, work on the blocking pool). Synchronous
/// plugins return `Now` and cost no allocation.
pub enum Access<'a> {
    /// Decided synchronously.
    Now(Flow),
    /// Decided by a future that may borrow the context.
    Later(Pin<Box<dyn Future<Output = Flow> + Send + 'a>>),
}

/// What [`Plugin::inspect_response`] sees of a proxied response's body: its first bytes, read
/// (and held back from the client) before the response is sent.
#[derive(Debug, Clone, Default)]
pub struct BodyPrefix {
    /// The first bytes of the body: at most what the instance asked for, fewer when the body
    /// is shorter; empty when it asked for the head only.
    pub bytes: Bytes,
    /// `bytes` is the whole body (it ended within what was read).
    pub complete: bool,
}

impl<'a> From<Flow> for Access<'a> {
    fn from(f: Flow) -> Self {
        Access::Now(f)
    }
}

/// A plugin instance, built once per config load from its validated config.
///
/// Every phase has a default that does nothing, so a plugin implements only what it needs.
/// Instances are shared by all requests; per-request state belongs in [`Ctx`].
pub trait Plugin: Send + Sync + 'static {
    /// Kong's plugin name, e.g. `request-termination`.
    fn name(&self) -> &'static str;

    /// Access phase: runs in priority order (highest first) after routing. Return
    /// `Flow::Respond` to answer the client without proxying. Default: continue.
    fn access<'a>(&'a self, ctx: &'a mut Ctx) -> Access<'a> {
        let _ = ctx;
        Access::Now(Flow::Continue)
    }

    /// Does this instance read the request body in `access`? When it does, the proxy buffers
    /// the body (up to the node's `request_buffer_bytes`, else 413) into [`Ctx::body`] before
    /// calling it. Default: no, and bodies stream untouched.
    fn reads_body(&self) -> bool {
        false
    }

    /// Response-headers phase: may edit the status and headers sent to the client. Runs for
    /// proxied and short-circuited responses alike. Default: no change.
    fn response_headers(&self, ctx: &mut Ctx, head: &mut ResponseHead) {
        let _ = (ctx, head);
    }

    /// The response header names this instance's response phase reads or changes, when those
    /// names are all it touches and it has no response inspection or body phase. The proxy may
    /// then relay the upstream's other headers as they came and give
    /// [`Plugin::response_headers`] a map holding only these (each with every value the
    /// upstream sent). `Some(vec![])`: no response phase at all. Default `None`: the phase
    /// needs the whole response head.
    fn response_header_names(&self) -> Option<Vec<http::HeaderName>> {
        None
    }

    /// Does this instance inspect this proxied response, and with how many leading body bytes?
    /// Asked when the upstream's response head is known (hop-by-hop headers removed), before
    /// the response-headers phase. `Some(n)`: the proxy reads up to `n` bytes of the body
    /// (holding them back from the client; `Some(0)` for the head only) and calls
    /// [`Plugin::inspect_response`]. Default `None`: nothing is read ahead.
    fn response_inspection(&self, ctx: &Ctx, head: &ResponseHead) -> Option<usize> {
        let _ = (ctx, head);
        None
    }

    /// Response-inspection phase: runs for proxied responses, in priority order, for the
    /// instances whose [`Plugin::response_inspection`] asked, with the upstream's head and the
    /// first bytes of its body, before the response-headers phase. `Flow::Respond(r)` replaces
    /// the response entirely: the upstream's status, headers and body are discarded and `r` is
    /// sent (the response-headers phase then runs on it, as for access-phase refusals).
    /// `Access::Later` for work that must await, e.g. CPU-bound work on the blocking pool.
    /// Default: continue.
    fn inspect_response<'a>(
        &'a self,
        ctx: &'a mut Ctx,
        head: &'a ResponseHead,
        body: &'a BodyPrefix,
    ) -> Access<'a> {
        let _ = (ctx, head, body);
        Access::Now(Flow::Continue)
    }

    /// Does this instance rewrite response bodies? When it does, the proxy buffers the
    /// upstream's body (up to the node's `request_buffer_bytes`) and calls
    /// [`Plugin::response_body`]. Default: no, and responses stream untouched.
    fn reads_response_body(&self) -> bool {
        false
    }

    /// Body phase: may rewrite a buffered response body (the proxy fixes Content-Length).
    fn response_body(&self, ctx: &mut Ctx, head: &mut ResponseHead, body: &mut Bytes) {
        let _ = (ctx, head, body);
    }

    /// Does this instance have a log phase? Only routes with such a plugin pay for building
    /// a [`LogEntry`]. Default: no.
    fn has_log(&self) -> bool {
        false
    }

    /// Log phase: runs once the response has been sent (or the client went away), with
    /// sensitive values already redacted. Must not block: queue work for a background task.
    fn log(&self, entry: &LogEntry) {
        let _ = entry;
    }

    /// Header and query-argument names this instance reads credentials from (e.g. key-auth's
    /// `key_names`), redacted in every log entry of the routes it is on.
    fn sensitive_names(&self) -> Vec<String> {
        Vec::new()
    }
}
