//! The per-request context handed to plugins.

use std::net::IpAddr;
use std::sync::Arc;

use http::{Extensions, HeaderMap, Method, StatusCode};

use crate::auth::Identity;

/// What plugins see of a request, and where they leave per-request state.
///
/// Header edits made during `access` are what the upstream receives.
#[derive(Debug)]
pub struct Ctx {
    /// Request method.
    pub method: Method,
    /// Normalised request path (what the router matched).
    pub path: String,
    /// The request target exactly as the client sent it (signatures cover this).
    pub uri: http::Uri,
    /// HTTP version of the request.
    pub version: http::Version,
    /// Raw query string, without `?`.
    pub query: Option<String>,
    /// Request headers; edits are forwarded upstream.
    pub headers: HeaderMap,
    /// Client address: the socket peer, or the forwarded address when the peer is trusted.
    pub client_ip: IpAddr,
    /// The socket peer (a trusted proxy, or the client itself).
    pub peer_ip: IpAddr,
    /// `http` or `https`: how the client reached the gateway.
    pub scheme: &'static str,
    /// Request host (lower case, no port).
    pub host: String,
    /// Matched route id.
    pub route_id: Option<Arc<str>>,
    /// Matched route name.
    pub route_name: Option<Arc<str>>,
    /// Target service id.
    pub service_id: Option<Arc<str>>,
    /// Target service name.
    pub service_name: Option<Arc<str>>,
    /// Request id (also sent upstream and to the client).
    pub request_id: String,
    /// The authenticated (or anonymous) consumer, once an auth plugin decided.
    pub identity: Option<Identity>,
    /// The request body, buffered for plugins that read it ([`crate::Plugin::reads_body`]);
    /// `None` when no such plugin ran. A plugin may replace it; the upstream gets this copy.
    pub body: Option<bytes::Bytes>,
    /// Largest request body allowed upstream, set by `request-size-limiting`; a body without
    /// a Content-Length that grows past it is refused with 413 rather than forwarded.
    pub body_limit: Option<u64>,
    /// The TLS client's certificate chain (DER, leaf first) if it sent one; the handshake
    /// only proved possession of the key, trust is checked by `mtls-auth`.
    pub client_certs: Option<Arc<Vec<bytes::Bytes>>>,
    /// Replaces the upstream path (request-transformer `replace.uri`).
    pub upstream_path: Option<String>,
    /// Captures of the matched route's regex path, `(name if named, value)` in group order
    /// (Kong's `uri_captures`); empty for prefix paths.
    pub uri_captures: Vec<(Option<String>, String)>,
    /// Per-request state, one slot per type; plugins keep their own types here.
    pub state: Extensions,
}

impl Ctx {
    /// Is `value` the id the gateway generated for this request (set in its request-id header
    /// before the plugins run)? Plugins that judge what the client sent skip that header.
    pub fn is_own_request_id(&self, value: &http::HeaderValue) -> bool {
        !self.request_id.is_empty() && value.as_bytes() == self.request_id.as_bytes()
    }

    /// A context for a request; the proxy fills route and service after matching.
    pub fn new(
        method: Method,
        path: String,
        query: Option<String>,
        headers: HeaderMap,
        client_ip: IpAddr,
    ) -> Ctx {
        Ctx {
            method,
            path,
            uri: http::Uri::default(),
            version: http::Version::HTTP_11,
            query,
            headers,
            client_ip,
            peer_ip: client_ip,
            scheme: "http",
            host: String::new(),
            route_id: None,
            route_name: None,
            service_id: None,
            service_name: None,
            request_id: String::new(),
            identity: None,
            body: None,
            body_limit: None,
            client_certs: None,
            upstream_path: None,
            uri_captures: Vec::new(),
            state: Extensions::new(),
        }
    }

    /// Removes every occurrence of a query argument (e.g. a credential with hide_credentials).
    pub fn remove_query_arg(&mut self, name: &str) {
        if let Some(q) = &self.query {
            let kept: Vec<&str> = q
                .split('&')
                .filter(|pair| pair.split_once('=').map_or(*pair, |(k, _)| k) != name)
                .collect();
            self.query = if kept.is_empty() {
                None
            } else {
                Some(kept.join("&"))
            };
        }
    }

    /// The request's media type (Content-Type without parameters), lower case.
    pub fn media_type(&self) -> Option<String> {
        let ct = self
            .headers
            .get(http::header::CONTENT_TYPE)?
            .to_str()
            .ok()?;
        Some(ct.split(';').next()?.trim().to_ascii_lowercase())
    }

    /// First value of a query argument (raw, not percent-decoded).
    pub fn query_arg(&self, name: &str) -> Option<&str> {
        let q = self.query.as_deref()?;
        q.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == name).then_some(v)
        })
    }
}

/// The status and headers of the response on its way to the client.
#[derive(Debug, Clone)]
pub struct ResponseHead {
    /// Status code.
    pub status: StatusCode,
    /// Response headers.
    pub headers: HeaderMap,
}
