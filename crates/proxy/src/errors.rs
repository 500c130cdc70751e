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

/// Kong's answer for an upstream failure.
pub fn upstream_failure(f: UpstreamFailure) -> Response<ProxyBody> {
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
