//! Every response the gateway generates itself: Kong's status codes and `{"message": ...}`
//! bodies, with no internal detail (no upstream address, no error text).

use http::{header, HeaderValue, Response, StatusCode};

use crate::body::ProxyBody;

/// A JSON `{"message": ...}` response.
pub fn kong_error(status: StatusCode, message: &str) -> Response<ProxyBody> {
    let body = serde_json::json!({ "message": message }).to_string();
    let mut r = Response::new(ProxyBody::full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}

/// Why proxying to the upstream failed after all tries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamFailure {
    /// No healthy target left.
    NoPeer,
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
