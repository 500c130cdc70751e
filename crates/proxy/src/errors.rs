//! Every response the gateway generates itself: Kong's status codes and `{"message": ...}`
//! bodies, with no internal detail (no upstream address, no error text).

use http::{header, HeaderValue, Response, StatusCode};

use crate::body::ProxyBody;

/// Kong's `kong.response.error`: a JSON `{"message": ...}` response that leaves the handler as
/// `{"message": ..., "request_id": ...}` (the id is added with the request id header; see
/// [`with_request_id`]).
pub fn kong_error(status: StatusCode, message: &str) -> Response<ProxyBody> {
    let body = serde_json::json!({ "message": message }).to_string();
    let mut r = Response::new(ProxyBody::full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r.extensions_mut().insert(ErrorBody);
    r
}

/// Marks a response whose `{"message": ...}` body gets the request id, as the bodies of
/// Kong's `kong.response.error` do (Kong 3.5+).
#[derive(Debug, Clone, Copy)]
pub struct ErrorBody;

/// `{"message": m}` as `{"message": m, "request_id": id}`; any other body is left alone
/// (`None`).
pub fn with_request_id(body: &[u8], request_id: &str) -> Option<String> {
    let serde_json::Value::Object(mut map) = serde_json::from_slice(body).ok()? else {
        return None;
    };
    if map.len() != 1 || !map.get("message").is_some_and(serde_json::Value::is_string) {
        return None;
    }
    map.insert("request_id".into(), request_id.into());
    Some(serde_json::Value::Object(map).to_string())
}

/// Why proxying to the upstream failed after all tries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamFailure {
    /// No healthy target to start with.
    NoPeer,
    /// No healthy target left for a retry: the targets tried were marked down meanwhile.
    Unavailable,
    /// Connection refused or broken, or an invalid response.
    Failed,
    /// Connect or read timeout.
    Timeout,
    /// The target's host name did not resolve.
    Resolve,
}

/// Marks an error Kong sends through its error page (`kong/error_handlers.lua`, which calls
/// `kong.response.exit` with the message) rather than `kong.response.error`: a gRPC client
/// then gets the message itself in `grpc-message`, not the status name.
#[derive(Debug, Clone, Copy)]
pub struct ViaErrorPage;

/// Kong's answer for an upstream failure.
pub fn upstream_failure(f: UpstreamFailure) -> Response<ProxyBody> {
    let mut r = upstream_failure_body(f);
    // Kong's balancer reports no peer and name resolution failures with `kong.response.error`
    // in the access phase; the rest come from nginx's upstream module, through the error page.
    if !matches!(f, UpstreamFailure::NoPeer | UpstreamFailure::Resolve) {
        r.extensions_mut().insert(ViaErrorPage);
    }
    r
}

/// Kong's `HTTP_TO_GRPC_STATUS` (`kong/pdk/response.lua`): the gRPC status for an HTTP one.
fn grpc_status(status: u16) -> u8 {
    // The exact entries first, then Kong's fallbacks by class.
    match status {
        401 => 16,
        403 => 7,
        404 => 5,
        409 => 6,
        429 => 8,
        499 => 1,
        501 => 12,
        503 => 14,
        504 => 4,
        500..=599 => 13,
        400..=499 => 3,
        200..=299 => 0,
        _ => 2,
    }
}

/// Kong's `GRPC_MESSAGES`: the name of a gRPC status.
fn grpc_name(code: u8) -> &'static str {
    [
        "OK",
        "Canceled",
        "Unknown",
        "InvalidArgument",
        "DeadlineExceeded",
        "NotFound",
        "AlreadyExists",
        "PermissionDenied",
        "ResourceExhausted",
        "FailedPrecondition",
        "Aborted",
        "OutOfRange",
        "Unimplemented",
        "Internal",
        "Unavailable",
        "DataLoss",
        "Unauthenticated",
    ]
    .get(usize::from(code))
    .copied()
    .unwrap_or("Unknown")
}

static GRPC_STATUS: header::HeaderName = header::HeaderName::from_static("grpc-status");
static GRPC_MESSAGE: header::HeaderName = header::HeaderName::from_static("grpc-message");

/// A response the gateway made itself, as Kong's `kong.response.error` / `exit` send it to a
/// gRPC client (HTTP/2, `Content-Type: application/grpc...`): the HTTP status kept, the gRPC
/// status in `grpc-status`, no body. An error (`ErrorBody`) says the status name in
/// `grpc-message` and is typed `application/grpc`; an exit with a `{"message": ...}` body (or
/// an error sent through Kong's error page) says the message. A response whose body is
/// neither (a plugin's own body and type) is left as it is, as in Kong.
pub fn for_grpc_client(resp: &mut Response<ProxyBody>) {
    if resp.headers().contains_key(&GRPC_STATUS) {
        return;
    }
    let code = grpc_status(resp.status().as_u16());
    let error = resp.extensions().get::<ErrorBody>().is_some()
        && resp.extensions().get::<ViaErrorPage>().is_none();
    let message: Option<String> = match resp.body() {
        ProxyBody::Full(Some(b)) if !b.is_empty() => {
            let json = resp
                .headers()
                .get(header::CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
            match serde_json::from_slice::<serde_json::Value>(b) {
                Ok(serde_json::Value::Object(m)) if json => match m.get("message") {
                    Some(serde_json::Value::String(s)) => Some(s.clone()),
                    _ => return,
                },
                _ => return,
            }
        }
        ProxyBody::Full(_) | ProxyBody::Empty => None,
        _ => return,
    };
    let text = match (error, message) {
        (false, Some(m)) => m,
        _ => grpc_name(code).to_string(),
    };
    let headers = resp.headers_mut();
    if error {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
    } else {
        headers.remove(header::CONTENT_TYPE);
    }
    headers.insert(&GRPC_STATUS, HeaderValue::from(u16::from(code)));
    // A message no header can carry (control characters) falls back to the status name.
    let value =
        HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(grpc_name(code)));
    headers.insert(&GRPC_MESSAGE, value);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(0u32));
    *resp.body_mut() = ProxyBody::Empty;
}

fn upstream_failure_body(f: UpstreamFailure) -> Response<ProxyBody> {
    match f {
        UpstreamFailure::NoPeer => kong_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "failure to get a peer from the ring-balancer",
        ),
        // Kong's balancer phase exits 503 when a retry finds no peer; its error handler
        // gives the default body.
        UpstreamFailure::Unavailable => kong_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "The upstream server is currently unavailable",
        ),
        UpstreamFailure::Failed => kong_error(
            StatusCode::BAD_GATEWAY,
            "An invalid response was received from the upstream server",
        ),
        UpstreamFailure::Timeout => kong_error(
            StatusCode::GATEWAY_TIMEOUT,
            "The upstream server is timing out",
        ),
        // Kong's balancer answers a DNS failure with 503 and this message.
        UpstreamFailure::Resolve => {
            kong_error(StatusCode::SERVICE_UNAVAILABLE, "name resolution failed")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grpc(mut r: Response<ProxyBody>) -> (u16, Option<String>, Option<String>, Option<String>) {
        for_grpc_client(&mut r);
        let h = |n: &str| {
            r.headers()
                .get(n)
                .map(|v| v.to_str().unwrap_or_default().to_string())
        };
        assert!(
            matches!(r.body(), ProxyBody::Empty) || h("grpc-status").is_none(),
            "a gRPC answer has no body"
        );
        (
            r.status().as_u16(),
            h("grpc-status"),
            h("grpc-message"),
            h("content-type"),
        )
    }

    /// Kong's `send` for gRPC requests: status mapping (exact, then by class), the name for
    /// errors, the message for exits, and bodies of other types left alone.
    #[test]
    fn gateway_answers_for_grpc_clients() {
        let s = |v: &str| Some(v.to_string());
        assert_eq!(
            grpc(kong_error(
                StatusCode::TOO_MANY_REQUESTS,
                "API rate limit exceeded"
            )),
            (429, s("8"), s("ResourceExhausted"), s("application/grpc"))
        );
        assert_eq!(
            grpc(kong_error(StatusCode::IM_A_TEAPOT, "x")),
            (418, s("3"), s("InvalidArgument"), s("application/grpc"))
        );
        assert_eq!(
            grpc(upstream_failure(UpstreamFailure::Timeout)),
            (504, s("4"), s("The upstream server is timing out"), None)
        );
        assert_eq!(
            grpc(upstream_failure(UpstreamFailure::NoPeer)),
            (503, s("14"), s("Unavailable"), s("application/grpc"))
        );
        let mut exit = Response::new(ProxyBody::full(r#"{"message":"bye"}"#));
        exit.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        assert_eq!(grpc(exit), (200, s("0"), s("bye"), None));
        let mut empty = Response::new(ProxyBody::Empty);
        *empty.status_mut() = StatusCode::IM_A_TEAPOT;
        assert_eq!(grpc(empty), (418, s("3"), s("InvalidArgument"), None));
        let mut html = Response::new(ProxyBody::full("<h1>no</h1>"));
        html.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
        assert_eq!(grpc(html), (200, None, None, s("text/html")));
    }

    #[test]
    fn only_a_lone_message_gets_the_request_id() {
        assert_eq!(
            with_request_id(
                br#"{"message":"no Route matched with those values"}"#,
                "ab12"
            )
            .as_deref(),
            Some(r#"{"message":"no Route matched with those values","request_id":"ab12"}"#)
        );
        assert_eq!(
            with_request_id(br#"{"message":"x","code":1}"#, "ab12"),
            None
        );
        assert_eq!(with_request_id(br#"{"message":5}"#, "ab12"), None);
        assert_eq!(with_request_id(b"forbidden", "ab12"), None);
        assert_eq!(with_request_id(br#"["message"]"#, "ab12"), None);
    }
}
