//! The request pipeline: normalise, route, check the protocol, run the access phase, pick a
//! target, proxy with retries, run the response phase.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use portcullis_config::HashOn;
use portcullis_plugins::headers::{self, remove_where};
use portcullis_plugins::log_entry::{self, EntityRef};
use portcullis_plugins::trace;
use portcullis_plugins::{Access, BodyPrefix, Ctx, Flow, LogEntry, ResponseHead};
use portcullis_router::{Headers, RequestInfo};

use crate::access_log::{AccessLog, LogTail, RequestId};
use crate::balancer::{Outcome, TargetEntry};
use crate::body::{ClientBody, InFlight, ProxyBody, Rest, TimedIncoming, UpstreamBody};
use crate::errors::{self, kong_error};
use crate::gateway::Gateway;
use crate::h1client::Home;
use crate::h1server::put_header;
use crate::path;
use crate::settings::canonical;
use crate::snapshot::{upstream_path, ChainEntry, CompiledRoute, CompiledService};
use crate::upstream::{send_h2, ConnectError, Pool, Sender};

/// Facts about the client connection a request arrived on.
pub struct ConnInfo {
    /// Client socket address.
    pub peer: SocketAddr,
    /// Local listener address.
    pub local: SocketAddr,
    /// Arrived over TLS.
    pub tls: bool,
    /// SNI sent by the client.
    pub sni: Option<String>,
    /// Negotiated TLS version (`TLSv1.3`), for the access log.
    pub tls_version: Option<&'static str>,
    /// The client's certificate chain (DER, leaf first), when it sent one. Only proof of
    /// possession was checked; trust is up to mtls-auth.
    pub client_certs: Option<Arc<Vec<bytes::Bytes>>>,
    /// The peer's address as a header value (X-Real-IP, X-Forwarded-For), made once per
    /// connection.
    pub peer_value: Option<HeaderValue>,
    /// The local port as a header value (X-Forwarded-Port), made once per connection.
    pub port_value: HeaderValue,
    /// The `X-Forwarded-For`, `X-Real-IP`, `X-Forwarded-Proto` and `X-Forwarded-Port` lines
    /// of an HTTP/1 upstream request for a client that is this (untrusted) peer and addressed
    /// this port: the same for every request of the connection, so made once and written
    /// whole (empty when the peer address has no header form).
    pub forwarded_lines: bytes::Bytes,
}

impl ConnInfo {
    /// A connection's facts, with its per-connection header values made once.
    pub fn new(
        peer: SocketAddr,
        local: SocketAddr,
        tls: bool,
        sni: Option<String>,
        tls_version: Option<&'static str>,
        client_certs: Option<Arc<Vec<bytes::Bytes>>>,
    ) -> ConnInfo {
        let peer_value = ConnInfo::peer_header(peer);
        let port_value = HeaderValue::from(local.port());
        let mut lines = bytes::BytesMut::new();
        if let Some(p) = &peer_value {
            put_header(
                &mut lines,
                X_FORWARDED_FOR.as_str().as_bytes(),
                p.as_bytes(),
            );
            put_header(&mut lines, X_REAL_IP.as_str().as_bytes(), p.as_bytes());
            let proto: &[u8] = if tls { b"https" } else { b"http" };
            put_header(&mut lines, X_FORWARDED_PROTO.as_str().as_bytes(), proto);
            put_header(
                &mut lines,
                X_FORWARDED_PORT.as_str().as_bytes(),
                port_value.as_bytes(),
            );
        }
        ConnInfo {
            peer,
            local,
            tls,
            sni,
            tls_version,
            client_certs,
            peer_value,
            port_value,
            forwarded_lines: lines.freeze(),
        }
    }

    /// The peer's address as X-Real-IP / X-Forwarded-For carry it.
    pub fn peer_header(peer: SocketAddr) -> Option<HeaderValue> {
        HeaderValue::from_str(&portcullis_plugins::ip_restriction::ip_text(canonical(
            peer.ip(),
        )))
        .ok()
    }
}

struct HeaderView<'a>(&'a HeaderMap);

impl Headers for HeaderView<'_> {
    fn any_value(&self, name: &str, pred: &mut dyn FnMut(&str) -> bool) -> bool {
        self.0
            .get_all(name)
            .iter()
            .any(|v| v.to_str().map(&mut *pred).unwrap_or(false))
    }

    fn contains(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
static X_FORWARDED_PATH: HeaderName = HeaderName::from_static("x-forwarded-path");
static X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
/// The headers the gateway sets on proxied responses, replacing any upstream's (each when the
/// `headers` setting names it): the latencies and the upstream's status.
pub(crate) static OWN_RESPONSE_HEADERS: [HeaderName; 3] = [
    HeaderName::from_static("x-kong-upstream-latency"),
    HeaderName::from_static("x-kong-proxy-latency"),
    HeaderName::from_static("x-kong-upstream-status"),
];
static UPSTREAM_LATENCY: &HeaderName = &OWN_RESPONSE_HEADERS[0];
static PROXY_LATENCY: &HeaderName = &OWN_RESPONSE_HEADERS[1];
static UPSTREAM_STATUS: &HeaderName = &OWN_RESPONSE_HEADERS[2];
/// Kong's latency header on responses the gateway makes itself (no upstream answered).
static RESPONSE_LATENCY: HeaderName = HeaderName::from_static("x-kong-response-latency");

/// Removes the headers a client's `Connection` header names (hop-by-hop by declaration). Done
/// once on the client's headers before any plugin runs, so a client can never make the gateway
/// drop a header the gateway itself sets (identity, request id, transformer output).
fn strip_connection_named(h: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers::all(h, &header::CONNECTION)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .filter(|n| *n != header::UPGRADE && *n != header::TE)
        .collect();
    for n in named {
        h.remove(n);
    }
}

/// Removes the fixed hop-by-hop headers (upstream requests: the client's `Connection`-named
/// headers were removed before the plugins ran).
fn strip_fixed_hop_by_hop(h: &mut HeaderMap) {
    remove_where(h, is_hop_by_hop);
}

/// Is this (lower-case) name a hop-by-hop header (RFC 9110 §7.6.1), never forwarded?
fn is_hop_by_hop(name: &str) -> bool {
    crate::h1client::is_hop_by_hop(name.as_bytes())
}

/// Removes hop-by-hop headers, including every header named by `Connection`.
fn strip_hop_by_hop(h: &mut HeaderMap) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for n in named {
        h.remove(n);
    }
    remove_where(h, is_hop_by_hop);
}

/// The request host (lower case, no port) and port: from the absolute URI if any, else Host.
fn request_host(parts: &http::request::Parts, conn: &ConnInfo) -> Option<(String, u16)> {
    let default_port = conn.local.port();
    let raw = match parts.uri.authority() {
        Some(a) => a.as_str(),
        None => match headers::first(&parts.headers, &header::HOST) {
            Some(h) => h.to_str().ok()?,
            // HTTP/1.0 does not require Host (the guard refuses an HTTP/1.1 request without
            // one): such a request matches only routes without hosts, as in nginx and Kong.
            None if parts.version == Version::HTTP_10 => {
                // The address it reached stands in for the name, so no later step
                // (X-Forwarded-Host, a redirect's Location) ever gets an empty host.
                let ip = portcullis_plugins::ip_restriction::ip_text(conn.local.ip());
                return Some((ip, default_port));
            }
            None => return None,
        },
    };
    let (mut host, port) = portcullis_config::text::split_host_port(raw)?;
    // `Host: :80` or `Host: []` name no host.
    if host.is_empty() {
        return None;
    }
    host.make_ascii_lowercase();
    Some((host, port.unwrap_or(default_port)))
}

/// The client address: the socket peer, unless the peer is a trusted proxy that forwarded one.
fn client_ip(gw: &Gateway, peer: IpAddr, headers: &HeaderMap) -> (IpAddr, bool) {
    let peer = canonical(peer);
    if !gw.settings.is_trusted(peer) {
        return (peer, false);
    }
    // Walk X-Forwarded-For from the right; the first untrusted hop is the client. An entry
    // that does not parse ends the walk at the last trusted hop: skipping it would let a
    // client-written entry further left become the address.
    let raw: Vec<&str> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let mut last = peer;
    for entry in raw.iter().rev() {
        let parsed = entry
            .parse::<IpAddr>()
            .ok()
            .or_else(|| entry.parse::<SocketAddr>().ok().map(|a| a.ip()));
        let Some(ip) = parsed.map(canonical) else {
            return (last, true);
        };
        if !gw.settings.is_trusted(ip) {
            return (ip, true);
        }
        last = ip;
    }
    if !raw.is_empty() {
        return (last, true);
    }
    let real = headers
        .get(&X_REAL_IP)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<IpAddr>().ok());
    (real.map(canonical).unwrap_or(peer), true)
}

/// Handles one request end to end; never fails (errors become Kong-shaped responses).
/// The gateway and connection are borrowed: an HTTP/1 connection's requests run inside its
/// own task, which holds them (no reference counts taken per request).
pub async fn handle(
    gw: &Gateway,
    conn: &ConnInfo,
    mut req: Request<ClientBody>,
) -> Response<ProxyBody> {
    let started = Instant::now();
    crate::busy::activity();
    gw.stats
        .requests_total
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let _in_flight = crate::body::InFlightRequest::new(&gw.stats);
    // The HTTP/1.1 server marks a well-formed WebSocket upgrade request (GET, HTTP/1.1,
    // `Upgrade: websocket`, `Connection: upgrade`; see `guard::head`).
    let client_upgrade = req.extensions_mut().remove::<crate::h1server::OnUpgrade>();
    // Every request gets a fresh id (32 hex digits, like Kong's X-Kong-Request-Id); a client's
    // copy of the header is replaced, so ids in logs are always the gateway's own.
    let mut log = Box::new(AccessLog::new(&gw.access_log, started));
    log.request_id = RequestId::random();
    if log.enabled() {
        log.method = req.method().as_str().to_string();
        log.protocol = match req.version() {
            Version::HTTP_2 => "HTTP/2",
            Version::HTTP_10 => "HTTP/1.0",
            _ => "HTTP/1.1",
        };
        log.tls = conn.tls_version;
        log.client_ip = Some(canonical(conn.peer.ip()));
        log.request_bytes = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
    }
    let h1_client = req.version() != Version::HTTP_2;
    // Kong's `is_grpc_request`: its own responses to such a request are sent the gRPC way.
    let grpc_client = !h1_client
        && req
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    // Set when the response's header lines are relayed in wire mode (see below).
    let mut wired = false;
    // An upstream answered (its response is relayed): no X-Kong-Response-Latency.
    let mut proxied = false;
    // The pipeline runs in this same future (a labeled block, not a nested async fn): a
    // nested future would be stored inside this one and copied whole on every request.
    let mut resp = {
        let log: &mut AccessLog = &mut log;
        'proxy: {
            let snap = gw.snapshot();
            let (parts, body) = req.into_parts();
            let Some((host, port)) = request_host(&parts, conn) else {
                break 'proxy bad_request_and_close();
            };
            // HTTP/1 methods are checked by the guard; an HTTP/2 `:method` gets the same rule
            // (upper-case letters, `-`, `_`), as nginx's HTTP/2 parser applies.
            if !h1_client
                && !parts
                    .method
                    .as_str()
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b == b'-' || b == b'_')
            {
                break 'proxy bad_request_and_close();
            }
            let raw_path = parts.uri.path();
            let norm = if path::needs_normalising(raw_path) {
                match path::normalise(raw_path) {
                    Ok(p) => p,
                    Err(_) => break 'proxy bad_request_and_close(),
                }
            } else {
                raw_path.to_string()
            };
            if log.enabled() {
                log.host.clone_from(&host);
                log.path.clone_from(&norm);
            }
            let found = snap.router.find(&RequestInfo {
                method: parts.method.as_str(),
                host: &host,
                port,
                path: &norm,
                // A TLS request without SNI matches no route with snis, as in Kong (its
                // `tls.sni` field is then unset); plain text ignores snis.
                sni: conn.tls.then(|| conn.sni.as_deref().unwrap_or("")),
                headers: &HeaderView(&parts.headers),
            });
            let Some(found) = found else {
                if !snap.global_log_plugins.is_empty() {
                    let (client, _) = client_ip(gw, conn.peer.ip(), &parts.headers);
                    start_tail(
                        log,
                        snap.global_log_plugins.clone(),
                        &parts,
                        conn,
                        client,
                        &host,
                        port,
                        &snap.global_redact,
                    );
                }
                break 'proxy kong_error(
                    StatusCode::NOT_FOUND,
                    "no Route matched with those values",
                );
            };
            let Some(route) = snap.routes.get(found.route) else {
                break 'proxy kong_error(
                    StatusCode::NOT_FOUND,
                    "no Route matched with those values",
                );
            };
            if let Some(resp) = protocol_mismatch(gw, route, conn, &parts, &host) {
                break 'proxy resp;
            }

            let (client, trusted) = client_ip(gw, conn.peer.ip(), &parts.headers);
            log.client_ip = Some(client);
            if !route.log_plugins.is_empty() {
                start_tail(
                    log,
                    route.log_plugins.clone(),
                    &parts,
                    conn,
                    client,
                    &host,
                    port,
                    &route.redact,
                );
                if let Some(t) = &mut log.tail {
                    t.entry.route = Some(EntityRef {
                        id: route.id.clone(),
                        name: route.name.clone(),
                        custom_id: None,
                    });
                    t.entry.service = route.service.as_ref().map(|s| EntityRef {
                        id: s.id.clone(),
                        name: s.name.clone(),
                        custom_id: None,
                    });
                }
            }
            if log.enabled() {
                log.route = Some(route.name.clone().unwrap_or_else(|| route.id.clone()));
                log.service = route
                    .service
                    .as_ref()
                    .map(|s| s.name.clone().unwrap_or_else(|| s.id.clone()));
            }
            let mut headers = parts.headers;
            strip_connection_named(&mut headers);
            // RFC 9112 §3.2.2: an absolute-form target (or HTTP/2 :authority) replaces Host, so the
            // upstream sees the host the request was routed on, even with preserve_host.
            if let Some(a) = parts.uri.authority() {
                if let Ok(v) = HeaderValue::from_str(a.as_str()) {
                    headers.insert(header::HOST, v);
                }
            }
            if !trusted {
                // Headers some frameworks believe as much as X-Forwarded-*: only a trusted proxy may
                // send them.
                remove_where(&mut headers, |n| {
                    matches!(n, "forwarded" | "x-original-url" | "x-rewrite-url")
                });
            }
            let mut ctx = Ctx::new(
                parts.method.clone(),
                norm,
                parts.uri.query().map(str::to_string),
                headers,
                client,
            );
            ctx.scheme = if conn.tls { "https" } else { "http" };
            ctx.version = parts.version;
            ctx.peer_ip = canonical(conn.peer.ip());
            ctx.host = host;
            // Only plugins read the target, the route and service names and the context's copy
            // of the id (each a reference count to take and drop on a plain route).
            let plugins = !route.plugins.is_empty() || !route.consumer_plugins.is_empty();
            if plugins {
                ctx.uri = parts.uri.clone();
                ctx.route_id = Some(route.id.clone());
                ctx.route_name = route.name.clone();
                ctx.service_id = route.service.as_ref().map(|s| s.id.clone());
                ctx.service_name = route.service.as_ref().and_then(|s| s.name.clone());
                ctx.request_id.push_str(log.request_id.as_str());
            }
            ctx.client_certs.clone_from(&conn.client_certs);
            if route.traced {
                if let Some(t) = &mut log.tail {
                    let start =
                        trace::now_nanos().saturating_sub(started.elapsed().as_nanos() as u64);
                    let tc = trace::TraceContext::start(&ctx.headers, start);
                    ctx.state.insert(tc.ids);
                    t.entry.trace = Some(tc);
                }
            }
            ctx.uri_captures.clone_from(&found.captures);

            // No client may claim an identity: only auth plugins set these headers.
            portcullis_plugins::auth::strip_identity_headers(&mut ctx.headers);
            // Plugins (and hashing on a header) see the id among the request headers; otherwise
            // it is written straight into the upstream request (`Plan::request_id`), replacing
            // a client's copy the same way, without a header value or a map insert.
            let id_in_map = plugins
                || route.service.as_ref().is_some_and(|s| {
                    matches!(s.balancer.hash_on, HashOn::Header(_))
                        || matches!(s.balancer.hash_fallback, HashOn::Header(_))
                });
            if id_in_map {
                if gw.headers.upstream_request_id {
                    ctx.headers
                        .insert(gw.request_id_header.clone(), log.request_id.header_value());
                } else {
                    ctx.headers.remove(&gw.request_id_header);
                }
            }
            // Access phase: the route's chain, merged by priority with the chain of the consumer once
            // an auth plugin has identified one.
            let mut consumer_chain: Option<&[ChainEntry]> = None;
            let mut pending_body = Some(body);
            let (mut ri, mut ci) = (0, 0);
            loop {
                if consumer_chain.is_none() {
                    consumer_chain = ctx
                        .identity
                        .as_ref()
                        .and_then(|id| route.consumer_plugins.get(&*id.consumer.id))
                        .map(Vec::as_slice);
                }
                let next_route = route.plugins.get(ri);
                let next_consumer = consumer_chain.and_then(|c| c.get(ci));
                let entry = match (next_route, next_consumer) {
                    (None, None) => break,
                    (Some(r), Some(c)) if r.priority > c.priority => {
                        ri += 1;
                        r
                    }
                    (_, Some(c)) => {
                        ci += 1;
                        c
                    }
                    (Some(r), None) => {
                        ri += 1;
                        r
                    }
                };
                // A consumer's own instance replaces the route's instance of the same plugin.
                let overridden = consumer_chain.is_some_and(|c| {
                    !c.iter().any(|e| std::ptr::eq(e, entry))
                        && c.iter().any(|e| e.plugin.name() == entry.plugin.name())
                });
                if overridden
                    || !(if conn.tls {
                        entry.on_https
                    } else {
                        entry.on_http
                    })
                {
                    continue;
                }
                if entry.plugin.reads_body() && ctx.body.is_none() {
                    if let Some(b) = pending_body.take() {
                        // A limit set by request-size-limiting (earlier in the chain) applies too.
                        let limit = ctx
                            .body_limit
                            .map_or(gw.settings.request_buffer_bytes as u64, |l| {
                                l.min(gw.settings.request_buffer_bytes as u64)
                            });
                        // Boxed, like every await off the plain path: an async fn's future holds its
                        // sub-futures, and every request moves (copies) it whole.
                        match Box::pin(read_body(b, limit)).await {
                            Ok(bytes) => ctx.body = Some(bytes),
                            Err(resp) => break 'proxy resp,
                        }
                    }
                }
                let span_start = route.traced.then(trace::now_nanos);
                let flow = match entry.plugin.access(&mut ctx) {
                    Access::Now(f) => f,
                    Access::Later(fut) => fut.await,
                };
                if let (Some(start), Some(tc)) = (
                    span_start,
                    log.tail.as_mut().and_then(|t| t.entry.trace.as_mut()),
                ) {
                    let name = format!("kong.access.plugin.{}", entry.plugin.name());
                    let span = tc.child(name, trace::SpanKind::Internal, start, trace::now_nanos());
                    span.error = matches!(&flow, Flow::Respond(r) if r.status.as_u16() >= 500);
                }
                if let Flow::Respond(r) = flow {
                    log.refused_by = Some(entry.plugin.name());
                    note_consumer(log, &ctx);
                    security_event(entry.plugin.name(), &r, &ctx);
                    let mut head = ResponseHead {
                        status: r.status,
                        headers: r.headers,
                    };
                    run_response_phase(route, conn, &mut ctx, &mut head, log);
                    break 'proxy plugin_response(entry.plugin.name(), head, r.body);
                }
            }

            portcullis_plugins::auth::set_identity_headers(&mut ctx);
            note_consumer(log, &ctx);
            let Some(service) = route.service.as_ref() else {
                break 'proxy kong_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no Service found with those values",
                );
            };
            let plan = Plan {
                path: match ctx.upstream_path.take() {
                    Some(p) => p,
                    None => upstream_path(
                        service.service.path.as_deref(),
                        &ctx.path,
                        route.route.strip_path,
                        found.matched_path.clone(),
                    ),
                },
                websocket: client_upgrade.is_some(),
                request_id: (!id_in_map).then_some((
                    &gw.request_id_header,
                    gw.headers.upstream_request_id.then_some(log.request_id),
                )),
                trusted,
                port,
                original_path: parts.uri.path(),
                peer_value: conn.peer_value.as_ref(),
                port_value: Some(&conn.port_value),
                forwarded_lines: &conn.forwarded_lines,
                prefix: found
                    .matched_path
                    .as_ref()
                    .filter(|r| route.route.strip_path && r.end > 1)
                    .map(|r| ctx.path[r.clone()].to_string()),
            };
            let mut hash_key = hash_key(service, &ctx, &found.captures);
            // Kong's cookie hashing: a client without the cookie gets a fresh value, used for this
            // request and set on the response so its next requests land on the same target.
            let mut set_cookie = None;
            if let (None, HashOn::Cookie { name, path }) = (&hash_key, &service.balancer.hash_on) {
                let value = format!("{:032x}", rand::random::<u128>());
                hash_key = Some(value.clone().into_bytes());
                set_cookie = HeaderValue::from_str(&format!("{name}={value}; Path={path}")).ok();
            }
            // Made only for a body that is streamed with a limit (see `prepare_body`).
            let mut limit_tripped: Option<Arc<AtomicBool>> = None;
            let body = match (ctx.body.take(), pending_body) {
                (Some(buffered), _)
                    if ctx.body_limit.is_some_and(|l| buffered.len() as u64 > l) =>
                {
                    break 'proxy too_large();
                }
                (Some(buffered), _) => buffered_body(&mut ctx, buffered),
                (None, Some(incoming)) if http_body::Body::is_end_stream(&incoming) => {
                    ProxyBody::Empty
                }
                (None, Some(incoming)) => {
                    let tripped = limit_tripped.insert(Arc::new(AtomicBool::new(false)));
                    match Box::pin(prepare_body(gw, route, incoming, &ctx, tripped)).await {
                        // A chunked body read whole: sent with its length, like a buffered one.
                        Ok(ProxyBody::Full(Some(b)))
                            if !ctx.headers.contains_key(header::CONTENT_LENGTH) =>
                        {
                            buffered_body(&mut ctx, b)
                        }
                        Ok(b) => b,
                        Err(resp) => break 'proxy resp,
                    }
                }
                (None, None) => ProxyBody::Empty,
            };
            // When every plugin on the route names the response headers it touches, an HTTP/1
            // client gets the upstream's header lines as they came (less hop-by-hop, framing
            // and fingerprint headers) plus the gateway's own; only the named headers are
            // parsed into a `HeaderMap`, for the response phase.
            let wire = match (&gw.wire_rules, &route.wire_names) {
                (Some(rules), Some(keep))
                    if h1_client
                        && log.tail.is_none()
                        && set_cookie.is_none()
                        && client_upgrade.is_none() =>
                {
                    Some(crate::h1client::Wire { rules, keep })
                }
                _ => None,
            };
            // On a route without plugins and a request without a body nothing has waited since
            // `started`, a few microseconds ago: the proxy latency (whole milliseconds) is 0
            // either way, and a clock reading costs ~25 ns on this kind of VM.
            let upstream_started = if plugins || !matches!(body, ProxyBody::Empty) {
                Instant::now()
            } else {
                started
            };
            let result = send_with_retries(
                gw,
                upstream_started,
                service,
                &mut ctx,
                &plan,
                body,
                route,
                hash_key.as_deref(),
                log,
                wire,
            )
            .await;
            let (resp, target) = match result {
                Ok(r) => r,
                Err(_)
                    if limit_tripped
                        .as_ref()
                        .is_some_and(|t| t.load(Ordering::Relaxed)) =>
                {
                    break 'proxy too_large()
                }
                Err(resp) => break 'proxy resp,
            };
            let upstream_latency = upstream_started.elapsed();
            log.upstream_ms = Some(upstream_latency.as_millis() as u64);
            if let Some(tc) = log.tail.as_mut().and_then(|t| t.entry.trace.as_mut()) {
                let end = trace::now_nanos();
                let start = end.saturating_sub(upstream_latency.as_nanos() as u64);
                let upstream_span = tc.ids.upstream_span_id;
                let span = tc.child("kong.balancer".into(), trace::SpanKind::Client, start, end);
                span.span_id = upstream_span;
                span.error = resp.status().is_server_error();
                span.attributes.push((
                    "http.status_code",
                    trace::AttrValue::Int(i64::from(resp.status().as_u16())),
                ));
                if let Some((host, port)) = log.upstream.as_deref().and_then(|u| u.rsplit_once(':'))
                {
                    span.attributes
                        .push(("net.peer.name", trace::AttrValue::Str(host.to_string())));
                    if let Ok(p) = port.parse::<i64>() {
                        span.attributes
                            .push(("net.peer.port", trace::AttrValue::Int(p)));
                    }
                }
            }
            if let Some(t) = &mut log.tail {
                t.entry.upstream_status = Some(resp.status().as_u16());
                // The query as sent upstream may still hold a credential: redact it too.
                let q = log_entry::redact_query(ctx.query.as_deref(), &route.redact);
                t.entry.upstream_uri = Some(if q.is_empty() {
                    plan.path.clone()
                } else {
                    let pairs: Vec<String> = q.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    format!("{}?{}", plan.path, pairs.join("&"))
                });
            }

            let status = resp.status();
            let (p, mut incoming) = resp.into_parts();
            if status == StatusCode::SWITCHING_PROTOCOLS {
                if let (Some(client_up), Rest::H1(raw)) = (client_upgrade, incoming) {
                    let Some(upstream_up) = raw.into_upgraded() else {
                        break 'proxy errors::upstream_failure(errors::UpstreamFailure::Failed);
                    };
                    tokio::spawn(tunnel(client_up, upstream_up));
                    proxied = true;
                    let mut out = Response::from_parts(p, ProxyBody::Empty);
                    *out.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                    let h = out.headers_mut();
                    // The upstream's hop-by-hop headers (and those its Connection names) stay
                    // on its hop; the client's hop gets the upgrade it asked for.
                    let upgrade = h.get(header::UPGRADE).cloned();
                    strip_hop_by_hop(h);
                    if let Some(u) = upgrade {
                        h.insert(header::UPGRADE, u);
                        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                    }
                    proxied_headers(
                        gw,
                        upstream_latency,
                        upstream_started.saturating_duration_since(started),
                        status,
                        |name, n| {
                            h.insert(name.clone(), number_value(n));
                        },
                    );
                    break 'proxy out;
                }
                // A 101 nobody asked for cannot be relayed.
                break 'proxy errors::upstream_failure(errors::UpstreamFailure::Failed);
            }
            if let Rest::H1(raw) = &mut incoming {
                if let Some((w, seen)) = raw.wire_mut() {
                    // The map holds only the headers the plugins named.
                    let mut head = ResponseHead {
                        status: p.status,
                        headers: p.headers,
                    };
                    run_response_phase(route, conn, &mut ctx, &mut head, log);
                    // As in the map path, the gateway's own headers replace a plugin's and
                    // hardening removes fingerprints a plugin set (the lines have neither).
                    // (The names wire mode drops from the upstream's lines: the request id,
                    // the latencies, and the fingerprints under hardening.)
                    if let Some(rules) = &gw.wire_rules {
                        remove_where(&mut head.headers, |n| rules.drops(n.as_bytes()));
                    }
                    let mut digits = itoa::Buffer::new();
                    proxied_headers(
                        gw,
                        upstream_latency,
                        upstream_started.saturating_duration_since(started),
                        status,
                        |name, n| w.push(name.as_str().as_bytes(), digits.format(n).as_bytes()),
                    );
                    if gw.headers.request_id {
                        w.push(
                            gw.request_id_header.as_str().as_bytes(),
                            log.request_id.as_bytes(),
                        );
                    }
                    for (i, (k, v)) in gw.security_headers.iter().enumerate() {
                        if seen & (1 << i) == 0 && !head.headers.contains_key(k) {
                            w.push(k.as_str().as_bytes(), v.as_bytes());
                        }
                    }
                    wired = true;
                    proxied = true;
                    let body = ProxyBody::Upstream(UpstreamBody::new(incoming), target, None);
                    break 'proxy build_response(head, body);
                }
            }
            let mut head = ResponseHead {
                status: p.status,
                headers: p.headers,
            };
            if let Rest::H2(_) = incoming {
                // (An HTTP/1 response lost its hop-by-hop headers while it was parsed.)
                strip_hop_by_hop(&mut head.headers);
            }
            let mut incoming = UpstreamBody::new(incoming);
            let read_timeout = Duration::from_millis(service.service.read_timeout);
            let inspected = if route.plugins.is_empty() {
                Ok(None)
            } else {
                Box::pin(inspect_response(
                    route,
                    conn,
                    &mut ctx,
                    &head,
                    &mut incoming,
                    read_timeout,
                    log,
                ))
                .await
            };
            match inspected {
                Ok(None) => {}
                Ok(Some((plugin, r))) => {
                    // Replaced: nothing of the upstream's response (status, headers, body) is sent.
                    drop(incoming);
                    drop(target);
                    log.refused_by = Some(plugin);
                    let mut head = ResponseHead {
                        status: r.status,
                        headers: r.headers,
                    };
                    run_response_phase(route, conn, &mut ctx, &mut head, log);
                    break 'proxy plugin_response(plugin, head, r.body);
                }
                Err(resp) => break 'proxy resp,
            }
            proxied = true;
            proxied_headers(
                gw,
                upstream_latency,
                upstream_started.saturating_duration_since(started),
                status,
                |name, n| {
                    head.headers.insert(name.clone(), number_value(n));
                },
            );
            if let Some(c) = set_cookie {
                head.headers.append(header::SET_COOKIE, c);
            }
            run_response_phase(route, conn, &mut ctx, &mut head, log);
            if wants_response_body(route, conn, &ctx, &head, gw.settings.request_buffer_bytes) {
                let limit = gw.settings.request_buffer_bytes;
                let mut body =
                    match Box::pin(http_body_util::Limited::new(incoming, limit).collect()).await {
                        Ok(c) => c.to_bytes(),
                        Err(_) => {
                            break 'proxy errors::upstream_failure(errors::UpstreamFailure::Failed);
                        }
                    };
                drop(target);
                for entry in &route.plugins {
                    if entry.plugin.reads_response_body() && enabled_for(entry, conn) {
                        let start = route.traced.then(trace::now_nanos);
                        entry.plugin.response_body(&mut ctx, &mut head, &mut body);
                        if let (Some(start), Some(tc)) = (
                            start,
                            log.tail.as_mut().and_then(|t| t.entry.trace.as_mut()),
                        ) {
                            let name = format!("kong.body_filter.plugin.{}", entry.plugin.name());
                            tc.child(name, trace::SpanKind::Internal, start, trace::now_nanos());
                        }
                    }
                }
                head.headers.remove(header::TRANSFER_ENCODING);
                head.headers
                    .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
                let mut out = build_response(head, ProxyBody::full(body));
                *out.version_mut() = Version::HTTP_11;
                break 'proxy out;
            }
            let body = ProxyBody::Upstream(incoming, target, None);
            let mut out = build_response(head, body);
            *out.version_mut() = Version::HTTP_11;
            out
        }
    };
    // A wired response has its request id and hardening in its lines already.
    if !wired {
        if grpc_client && !proxied {
            errors::for_grpc_client(&mut resp);
        }
        if resp.extensions().get::<errors::ErrorBody>().is_some() {
            if let ProxyBody::Full(Some(b)) = resp.body() {
                if let Some(body) = errors::with_request_id(b, log.request_id.as_str()) {
                    resp.headers_mut().remove(header::CONTENT_LENGTH);
                    *resp.body_mut() = ProxyBody::full(body);
                }
            }
        }
        if gw.headers.request_id {
            resp.headers_mut()
                .insert(gw.request_id_header.clone(), log.request_id.header_value());
        }
        if !proxied && gw.headers.response_latency {
            set_latency(resp.headers_mut(), &RESPONSE_LATENCY, started.elapsed());
        }
        harden(gw, resp.headers_mut());
    }
    log.status = resp.status().as_u16();
    if let Some(t) = &mut log.tail {
        t.entry.response_headers = log_entry::redact_headers(resp.headers(), &[]);
    }
    match resp.body_mut() {
        ProxyBody::Upstream(_, _, slot) => *slot = Some(log),
        ProxyBody::Full(Some(b)) => {
            log.response_bytes = b.len() as u64;
            if log.reason.is_none() && log.status >= 400 && log.enabled() {
                log.reason = serde_json::from_slice::<serde_json::Value>(b)
                    .ok()
                    .and_then(|v| v.get("message")?.as_str().map(str::to_string));
            }
        }
        _ => {}
    }
    resp
}

/// Headers that advertise the upstream's software, removed under response hardening.
pub(crate) static FINGERPRINTS: [HeaderName; 4] = [
    header::SERVER,
    HeaderName::from_static("x-powered-by"),
    HeaderName::from_static("x-aspnet-version"),
    HeaderName::from_static("x-aspnetmvc-version"),
];

/// Response hardening: no headers that advertise the upstream's software, and the configured
/// security headers.
fn harden(gw: &Gateway, h: &mut HeaderMap) {
    if gw.settings.response_hardening {
        // One pass over the names (no hashing), then a lookup only for the names present
        // (most responses carry at most `Server`).
        let mut present = [false; FINGERPRINTS.len()];
        for k in h.keys() {
            if matches!(k.as_str().as_bytes().first(), Some(b's' | b'x')) {
                for (seen, f) in present.iter_mut().zip(&FINGERPRINTS) {
                    *seen |= f == k;
                }
            }
        }
        for (seen, name) in present.iter().zip(&FINGERPRINTS) {
            if *seen {
                // `remove` drops every value of the name.
                h.remove(name);
            }
        }
    }
    for (k, v) in &gw.security_headers {
        if !h.contains_key(k) {
            h.insert(k.clone(), v.clone());
        }
    }
}

/// Records a refusal by a security plugin as a security event (see [`crate::security`]).
fn security_event(plugin: &'static str, r: &portcullis_plugins::Response, ctx: &Ctx) {
    let status = r.status.as_u16();
    let Some(kind) = crate::security::refusal_kind(plugin, status) else {
        return;
    };
    let reason = serde_json::from_slice::<serde_json::Value>(&r.body)
        .ok()
        .and_then(|v| v.get("message")?.as_str().map(str::to_string))
        .unwrap_or_default();
    let consumer = ctx.identity.as_ref().filter(|i| !i.anonymous).map(|i| {
        i.consumer
            .username
            .as_deref()
            .unwrap_or(&i.consumer.id)
            .to_string()
    });
    tracing::warn!(
        target: "security",
        event = kind,
        plugin,
        status,
        reason = %reason,
        client_ip = %ctx.client_ip,
        request_id = %ctx.request_id,
        route = ctx.route_name.as_deref().or(ctx.route_id.as_deref()).unwrap_or("-"),
        service = ctx.service_name.as_deref().unwrap_or("-"),
        consumer = consumer.as_deref().unwrap_or("-"),
        method = %ctx.method,
        path = %ctx.path,
        "request refused"
    );
}

/// Starts the log-phase entry with what the request looked like on arrival.
#[allow(clippy::too_many_arguments)]
fn start_tail(
    log: &mut AccessLog,
    plugins: Arc<[Arc<dyn portcullis_plugins::Plugin>]>,
    parts: &http::request::Parts,
    conn: &ConnInfo,
    client: IpAddr,
    host: &str,
    port: u16,
    redact: &[String],
) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let entry = LogEntry {
        started_at_ms: (now.saturating_sub(log.elapsed())).as_millis() as u64,
        request_id: log.request_id.as_str().to_string(),
        client_ip: Some(client),
        method: parts.method.as_str().to_string(),
        scheme: if conn.tls { "https" } else { "http" },
        host: host.to_string(),
        port,
        path: parts.uri.path().to_string(),
        query: log_entry::redact_query(parts.uri.query(), redact),
        request_headers: log_entry::redact_headers(&parts.headers, redact),
        request_size: log.request_bytes.unwrap_or(0),
        request_head_size: head_size(parts),
        tls_version: conn.tls_version,
        ..LogEntry::default()
    };
    log.tail = Some(Box::new(LogTail { plugins, entry }));
}

/// Size of the request line and headers in HTTP/1 framing (for bandwidth metrics).
fn head_size(parts: &http::request::Parts) -> u64 {
    let line = parts.method.as_str().len()
        + parts.uri.path_and_query().map_or(1, |p| p.as_str().len())
        + " HTTP/1.1\r\n".len()
        + 2;
    let headers: usize = parts
        .headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    (line + headers) as u64
}

/// Records who the request was, for the access log.
fn note_consumer(log: &mut AccessLog, ctx: &Ctx) {
    if let Some(t) = &mut log.tail {
        if let Some(id) = &ctx.identity {
            t.entry.consumer = Some(EntityRef {
                id: id.consumer.id.clone(),
                name: id.consumer.username.clone(),
                custom_id: id.consumer.custom_id.clone(),
            });
            t.entry.credential.clone_from(&id.credential);
        }
    }
    if let Some(id) = &ctx.identity {
        log.consumer = Some(
            id.consumer
                .username
                .as_deref()
                .unwrap_or(&id.consumer.id)
                .to_string(),
        );
        log.anonymous = id.anonymous;
    }
}

/// The gateway's headers on a relayed response, each as the `headers` setting asks, handed to
/// `put` as a name and a number: a header map gets a value, wire mode a line.
fn proxied_headers(
    gw: &Gateway,
    upstream_latency: Duration,
    proxy_latency: Duration,
    status: StatusCode,
    mut put: impl FnMut(&HeaderName, u64),
) {
    let on = gw.headers;
    if on.upstream_latency {
        put(UPSTREAM_LATENCY, upstream_latency.as_millis() as u64);
    }
    if on.proxy_latency {
        put(PROXY_LATENCY, proxy_latency.as_millis() as u64);
    }
    if on.upstream_status {
        put(UPSTREAM_STATUS, status.as_u16().into());
    }
}

fn set_latency(h: &mut HeaderMap, name: &HeaderName, d: Duration) {
    h.insert(name.clone(), number_value(d.as_millis() as u64));
}

/// A header value for a number: small numbers (latencies in ms, ports below 1024) come from a
/// table made once, so the common case allocates nothing.
fn number_value(n: u64) -> HeaderValue {
    static SMALL: std::sync::LazyLock<Vec<HeaderValue>> = std::sync::LazyLock::new(|| {
        (0..1024u32)
            .map(|i| HeaderValue::from_static(Box::leak(i.to_string().into_boxed_str())))
            .collect()
    });
    match SMALL.get(n as usize) {
        Some(v) if n < 1024 => v.clone(),
        _ => HeaderValue::from(n),
    }
}

fn enabled_for(entry: &ChainEntry, conn: &ConnInfo) -> bool {
    if conn.tls {
        entry.on_https
    } else {
        entry.on_http
    }
}

/// Should the upstream body be buffered for a body-phase plugin? Only bodies that can be
/// read whole within `limit` and are not content-encoded; others stream untouched.
fn wants_response_body(
    route: &CompiledRoute,
    conn: &ConnInfo,
    ctx: &Ctx,
    head: &ResponseHead,
    limit: usize,
) -> bool {
    if !route
        .plugins
        .iter()
        .any(|e| e.plugin.reads_response_body() && enabled_for(e, conn))
    {
        return false;
    }
    if ctx.method == Method::HEAD
        || matches!(head.status.as_u16(), 101 | 204 | 304)
        || head.headers.contains_key(header::CONTENT_ENCODING)
    {
        return false;
    }
    let declared = head
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    declared.is_none_or(|n| n <= limit as u64)
}

/// The response-inspection phase: the route's instances that ask
/// ([`portcullis_plugins::Plugin::response_inspection`]) see the upstream's head and the first
/// bytes of its body (read ahead into `body`, still sent afterwards), in priority order. The
/// first `Flow::Respond` replaces the response: returned with the plugin's name. A body that
/// fails while being read ahead is Kong's 502; one that does not deliver the prefix within the
/// service's `read_timeout`, its 504.
async fn inspect_response(
    route: &CompiledRoute,
    conn: &ConnInfo,
    ctx: &mut Ctx,
    head: &ResponseHead,
    body: &mut UpstreamBody,
    read_timeout: Duration,
    log: &mut AccessLog,
) -> Result<Option<(&'static str, portcullis_plugins::Response)>, Response<ProxyBody>> {
    let wanted: Vec<(&ChainEntry, usize)> = route
        .plugins
        .iter()
        .filter(|e| enabled_for(e, conn))
        .filter_map(|e| e.plugin.response_inspection(ctx, head).map(|n| (e, n)))
        .collect();
    let Some(most) = wanted.iter().map(|(_, n)| *n).max() else {
        return Ok(None);
    };
    let bodiless = ctx.method == Method::HEAD || matches!(head.status.as_u16(), 204 | 304);
    let prefix = if bodiless {
        BodyPrefix {
            bytes: bytes::Bytes::new(),
            complete: true,
        }
    } else if most == 0 {
        BodyPrefix::default()
    } else {
        match tokio::time::timeout(read_timeout, body.peek(most)).await {
            Ok(Ok((bytes, complete))) => BodyPrefix { bytes, complete },
            Ok(Err(_)) => return Err(errors::upstream_failure(errors::UpstreamFailure::Failed)),
            Err(_) => return Err(errors::upstream_failure(errors::UpstreamFailure::Timeout)),
        }
    };
    for (entry, n) in wanted {
        let view = if prefix.bytes.len() > n {
            BodyPrefix {
                bytes: prefix.bytes.slice(..n),
                complete: false,
            }
        } else {
            prefix.clone()
        };
        let start = route.traced.then(trace::now_nanos);
        let flow = match entry.plugin.inspect_response(ctx, head, &view) {
            Access::Now(f) => f,
            Access::Later(fut) => fut.await,
        };
        if let (Some(start), Some(tc)) = (
            start,
            log.tail.as_mut().and_then(|t| t.entry.trace.as_mut()),
        ) {
            let name = format!("kong.body_filter.plugin.{}", entry.plugin.name());
            let span = tc.child(name, trace::SpanKind::Internal, start, trace::now_nanos());
            span.error = matches!(&flow, Flow::Respond(r) if r.status.as_u16() >= 500);
        }
        if let Flow::Respond(r) = flow {
            return Ok(Some((entry.plugin.name(), r)));
        }
    }
    Ok(None)
}

fn run_response_phase(
    route: &CompiledRoute,
    conn: &ConnInfo,
    ctx: &mut Ctx,
    head: &mut ResponseHead,
    log: &mut AccessLog,
) {
    for entry in &route.plugins {
        if enabled_for(entry, conn) {
            let start = route.traced.then(trace::now_nanos);
            entry.plugin.response_headers(ctx, head);
            if let (Some(start), Some(tc)) = (
                start,
                log.tail.as_mut().and_then(|t| t.entry.trace.as_mut()),
            ) {
                let name = format!("kong.header_filter.plugin.{}", entry.plugin.name());
                tc.child(name, trace::SpanKind::Internal, start, trace::now_nanos());
            }
        }
    }
}

/// A plugin's own response. Its `{"message": ...}` error body gets the request id as Kong's
/// `kong.response.error` bodies do, except for the plugins that answer with
/// `kong.response.exit` in Kong (jwt, oauth2 and request-termination, and the request
/// validators): their bodies stay as they are.
fn plugin_response(plugin: &str, head: ResponseHead, body: bytes::Bytes) -> Response<ProxyBody> {
    let mut r = build_response(head, ProxyBody::full(body));
    let exits = matches!(
        plugin,
        "jwt" | "oauth2" | "request-termination" | "request-validator" | "oas-validation"
    );
    if r.status().as_u16() >= 400 && !exits {
        r.extensions_mut().insert(errors::ErrorBody);
    }
    r
}

fn build_response(head: ResponseHead, body: ProxyBody) -> Response<ProxyBody> {
    let mut r = Response::new(body);
    *r.status_mut() = head.status;
    *r.headers_mut() = head.headers;
    r
}

/// Kong's answers when the route's protocols do not fit the request.
fn protocol_mismatch(
    gw: &Gateway,
    route: &CompiledRoute,
    conn: &ConnInfo,
    parts: &http::request::Parts,
    host: &str,
) -> Option<Response<ProxyBody>> {
    if route.grpc {
        let is_grpc_request = headers::first(&parts.headers, &header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/grpc"));
        if parts.version != Version::HTTP_2 {
            return Some(kong_error(
                StatusCode::UPGRADE_REQUIRED,
                "Please use HTTP2 protocol",
            ));
        }
        if !is_grpc_request {
            return Some(kong_error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Non-gRPC request matched gRPC route",
            ));
        }
    }
    // Behind a trusted proxy (trusted_ips) that terminated TLS, its X-Forwarded-Proto says
    // whether the client used https, and its X-Forwarded-Host names the host to redirect to,
    // as in Kong; from anyone else both are ignored.
    // (Only looked at for an https-only route reached over plain http.)
    let forwarded = |name: &HeaderName| {
        gw.settings
            .is_trusted(canonical(conn.peer.ip()))
            .then(|| headers::first(&parts.headers, name))
            .flatten()
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    if !conn.tls
        && !route.allows_http
        && route.allows_https
        && !forwarded(&X_FORWARDED_PROTO).is_some_and(|p| p.eq_ignore_ascii_case("https"))
    {
        let code = route.route.https_redirect_status_code;
        if code == 426 {
            let mut r = kong_error(StatusCode::UPGRADE_REQUIRED, "Please use HTTPS protocol");
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
            r.headers_mut().insert(
                header::UPGRADE,
                HeaderValue::from_static("TLS/1.2, HTTP/1.1"),
            );
            return Some(r);
        }
        let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        // A forwarded host goes into Location only when it is a plain host[:port].
        let forwarded_host = forwarded(&X_FORWARDED_HOST).filter(|h| {
            portcullis_config::text::split_host_port(h).is_some_and(|(name, _)| {
                !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-.:".contains(&b))
            })
        });
        let location = format!("https://{}{pq}", forwarded_host.unwrap_or(host));
        // Kong answers a redirect without a body.
        let mut r = Response::new(ProxyBody::full(bytes::Bytes::new()));
        *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::MOVED_PERMANENTLY);
        match HeaderValue::from_str(&location) {
            Ok(v) => {
                r.headers_mut().insert(header::LOCATION, v);
            }
            // A trusted proxy sent a host no header can carry.
            Err(_) => return Some(kong_error(StatusCode::BAD_REQUEST, "Bad request")),
        }
        return Some(r);
    }
    // An http-only route reached over TLS is proxied, as in Kong 3.x: its default router
    // (traditional_compatible) does not match on the protocol, and the runloop refuses only
    // https-only routes reached over http.
    None
}

/// 400 for a request head the guard let through but the gateway cannot use (a Host it cannot
/// split, a path it cannot normalise): answered, and the connection closed like every other
/// malformed request's.
fn bad_request_and_close() -> Response<ProxyBody> {
    let mut r = kong_error(StatusCode::BAD_REQUEST, "Bad request");
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// Kong's request-size-limiting answer.
fn too_large() -> Response<ProxyBody> {
    kong_error(StatusCode::PAYLOAD_TOO_LARGE, "Request size limit exceeded")
}

/// Reads a whole request body into memory, refusing (413) one larger than `limit`.
async fn read_body(body: ClientBody, limit: u64) -> Result<bytes::Bytes, Response<ProxyBody>> {
    use http_body::Body as _;
    if body.is_end_stream() {
        return Ok(bytes::Bytes::new());
    }
    if body.size_hint().lower() > limit {
        return Err(too_large());
    }
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(_) => Err(kong_error(StatusCode::BAD_REQUEST, "Bad request")),
    }
}

/// The body plugins buffered (and may have rewritten), with a Content-Length to match.
fn buffered_body(ctx: &mut Ctx, body: bytes::Bytes) -> ProxyBody {
    let had_length = ctx.headers.contains_key(header::CONTENT_LENGTH)
        || ctx.headers.contains_key(header::TRANSFER_ENCODING);
    if had_length || !body.is_empty() {
        ctx.headers.remove(header::TRANSFER_ENCODING);
        ctx.headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    }
    ProxyBody::full(body)
}

/// Buffers small bodies so a failed attempt can be replayed; streams the rest. A body limit
/// set by a plugin is enforced here for bodies without a Content-Length.
async fn prepare_body(
    gw: &Gateway,
    route: &CompiledRoute,
    body: ClientBody,
    ctx: &Ctx,
    tripped: &Arc<AtomicBool>,
) -> Result<ProxyBody, Response<ProxyBody>> {
    use http_body::Body as _;
    if body.is_end_stream() {
        return Ok(ProxyBody::Empty);
    }
    let buffer_limit = gw.settings.request_buffer_bytes as u64;
    let len = ctx
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let (Some(n), Some(max)) = (len, ctx.body_limit) {
        if n > max {
            return Err(too_large());
        }
    }
    match (len, ctx.body_limit) {
        (Some(n), _) if route.route.request_buffering && n <= buffer_limit => {
            match body.collect().await {
                Ok(c) => Ok(ProxyBody::full(c.to_bytes())),
                Err(_) => Err(kong_error(StatusCode::BAD_REQUEST, "Bad request")),
            }
        }
        (None, Some(max)) if route.route.request_buffering && max <= buffer_limit => {
            read_body(body, max).await.map(ProxyBody::full)
        }
        (None, Some(max)) => Ok(ProxyBody::Limited(body, max, tripped.clone())),
        // HTTP/1 only: an HTTP/2 body without a length may be a gRPC or other bidirectional
        // stream, which must reach the upstream before the client has finished sending.
        (None, None)
            if route.route.request_buffering
                && matches!(ctx.version, Version::HTTP_10 | Version::HTTP_11) =>
        {
            read_ahead(body, buffer_limit).await
        }
        _ => Ok(ProxyBody::Stream(body)),
    }
}

/// Reads a body of unknown length (chunked) into memory, as nginx does for Kong, so a failed
/// attempt can be retried on another target: up to `limit` bytes it becomes a replayable
/// in-memory body (sent with a Content-Length); past that, or with trailers, the frames read
/// so far are sent first and the rest streams (not replayable).
async fn read_ahead(mut body: ClientBody, limit: u64) -> Result<ProxyBody, Response<ProxyBody>> {
    use http_body_util::BodyExt as _;
    let mut frames = std::collections::VecDeque::new();
    let mut total = 0u64;
    loop {
        match body.frame().await {
            None => break,
            Some(Err(_)) => return Err(kong_error(StatusCode::BAD_REQUEST, "Bad request")),
            Some(Ok(frame)) => {
                let data = frame.data_ref().map(|d| d.len() as u64);
                frames.push_back(frame);
                match data {
                    Some(n) => {
                        total += n;
                        if total > limit {
                            return Ok(ProxyBody::Prefixed(frames, body));
                        }
                    }
                    // Trailers: keep the frames as they are.
                    None => return Ok(ProxyBody::Prefixed(frames, body)),
                }
            }
        }
    }
    let mut all = bytes::BytesMut::with_capacity(usize::try_from(total).unwrap_or(0));
    for f in frames {
        if let Ok(d) = f.into_data() {
            all.extend_from_slice(&d);
        }
    }
    Ok(ProxyBody::full(all.freeze()))
}

/// What the upstream request is built from, besides the context.
struct Plan<'a> {
    /// Upstream path (service path joined with the request path).
    path: String,
    /// The peer is a trusted proxy: keep its X-Forwarded-* values.
    trusted: bool,
    /// Port the client addressed.
    port: u16,
    /// The path as the client sent it.
    original_path: &'a str,
    /// The prefix stripped by the route, for X-Forwarded-Prefix.
    prefix: Option<String>,
    /// A WebSocket upgrade is being proxied.
    websocket: bool,
    /// The request id and its header, when the id is not in the context's headers (no
    /// plugin on the route): the upstream request gets it as a gateway-set header.
    /// `None` for the id: the setting `headers_upstream` is off, and a client's copy is
    /// removed.
    request_id: Option<(&'a HeaderName, Option<RequestId>)>,
    /// The connection's peer address as a header value.
    peer_value: Option<&'a HeaderValue>,
    /// `port` as a header value, when it is the connection's local port (made once then).
    port_value: Option<&'a HeaderValue>,
    /// The connection's [`ConnInfo::forwarded_lines`].
    forwarded_lines: &'a [u8],
}

fn hash_key(
    service: &CompiledService,
    ctx: &Ctx,
    captures: &[(Option<String>, String)],
) -> Option<Vec<u8>> {
    let get = |h: &HashOn| -> Option<Vec<u8>> {
        match h {
            HashOn::None => None,
            HashOn::Consumer => ctx
                .identity
                .as_ref()
                .map(|i| i.consumer.id.as_bytes().to_vec()),
            HashOn::Ip => Some(ctx.client_ip.to_string().into_bytes()),
            HashOn::Header(name) => ctx
                .headers
                .get(name.as_str())
                .map(|v| v.as_bytes().to_vec()),
            HashOn::Cookie { name, .. } => ctx
                .headers
                .get_all(header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .find_map(|kv| {
                    let (k, v) = kv.trim().split_once('=')?;
                    (k == name).then(|| v.as_bytes().to_vec())
                }),
            HashOn::Path => Some(ctx.path.as_bytes().to_vec()),
            HashOn::QueryArg(a) => ctx.query_arg(a).map(|v| v.as_bytes().to_vec()),
            HashOn::UriCapture(n) => captures
                .iter()
                .find(|(name, _)| name.as_deref() == Some(n.as_str()))
                .map(|(_, v)| v.as_bytes().to_vec()),
        }
    };
    get(&service.balancer.hash_on).or_else(|| get(&service.balancer.hash_fallback))
}

/// A `TE` value naming `trailers` among its codings (forwarded to HTTP/2 upstreams, where gRPC
/// needs it; HTTP/1 upstreams get no `TE`, which is hop-by-hop, as the contract says).
fn wants_trailers(v: &[u8]) -> bool {
    v.split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"trailers"))
}

fn idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS | Method::TRACE
    )
}

/// What one attempt sends: the target, and the headers the gateway sets over the client's
/// (computed once; written straight into an HTTP/1 head, or applied to a copy of the
/// client's header map for HTTP/2).
struct Outgoing<'a> {
    /// Path and query (origin form), validated.
    path_and_query: String,
    /// `scheme://authority` for HTTP/2, where the host travels as `:authority`.
    h2_authority: Option<String>,
    /// Headers set (`Some`) or removed (`None`) by the gateway; every other client header
    /// passes unless it is hop-by-hop.
    overrides: Vec<(&'a HeaderName, Option<Val<'a>>)>,
    /// The request id's header when it is among the overrides (a configurable name, so not
    /// covered by the first-letter filter in [`Outgoing::overrides`]).
    request_id: Option<&'a HeaderName>,
    /// Gateway lines written whole after the others (the connection's forwarded lines, when
    /// they apply; else empty).
    lines: &'a [u8],
}

/// A header value the gateway sets: a ready value, or text borrowed from the request (checked
/// once, written into an HTTP/1 head as it is; only HTTP/2 makes a `HeaderValue` of it).
enum Val<'a> {
    Header(HeaderValue),
    Text(&'a str),
    /// Among the connection's [`ConnInfo::forwarded_lines`], written whole (HTTP/1 only).
    InLines,
}

impl<'a> Val<'a> {
    /// `s` as a header value: visible ASCII, spaces and tabs only.
    fn text(s: &'a str) -> Option<Val<'a>> {
        s.bytes()
            .all(|b| (b' '..=b'~').contains(&b) || b == b'\t')
            .then_some(Val::Text(s))
    }

    /// The bytes written into an HTTP/1 head (`None`: written with the connection's lines).
    fn bytes(&self) -> Option<&[u8]> {
        match self {
            Val::Header(v) => Some(v.as_bytes()),
            Val::Text(t) => Some(t.as_bytes()),
            Val::InLines => None,
        }
    }

    fn into_header(self) -> Option<HeaderValue> {
        match self {
            Val::Header(v) => Some(v),
            Val::Text(t) => HeaderValue::from_str(t).ok(),
            // Never made for an HTTP/2 upstream (see `upstream_request`).
            Val::InLines => None,
        }
    }
}

impl Outgoing<'_> {
    /// `text` is `name.as_str()`, looked up once by the caller.
    fn overrides(&self, name: &HeaderName, text: &str) -> bool {
        // Every other overridden name starts with one of these letters (host, te, connection,
        // upgrade, expect, x-forwarded-*, x-real-ip): most client headers are passed on after
        // one byte compare.
        self.request_id == Some(name)
            || matches!(
                text.as_bytes().first(),
                Some(b'h' | b't' | b'c' | b'u' | b'e' | b'x')
            ) && self.overrides.iter().any(|(n, _)| *n == name)
    }

    /// The HTTP/1.1 request head (without its final empty line and without body framing:
    /// [`crate::h1client`] writes the one Content-Length or Transfer-Encoding).
    fn encode_h1(&self, ctx: &Ctx) -> bytes::BytesMut {
        let mut head = bytes::BytesMut::with_capacity(512);
        head.extend_from_slice(ctx.method.as_str().as_bytes());
        head.extend_from_slice(b" ");
        head.extend_from_slice(self.path_and_query.as_bytes());
        head.extend_from_slice(b" HTTP/1.1\r\n");
        for (name, value) in &ctx.headers {
            // (A standard name's text is a table lookup: done once per header.)
            let text = name.as_str();
            if is_hop_by_hop(text) || *name == header::CONTENT_LENGTH || self.overrides(name, text)
            {
                continue;
            }
            put_header(&mut head, text.as_bytes(), value.as_bytes());
        }
        for (name, value) in &self.overrides {
            if let Some(v) = value.as_ref().and_then(Val::bytes) {
                put_header(&mut head, name.as_str().as_bytes(), v);
            }
        }
        head.extend_from_slice(self.lines);
        head
    }

    /// The request for an HTTP/2 upstream.
    fn into_h2_request(self, ctx: &Ctx, body: ProxyBody) -> Option<Request<ProxyBody>> {
        let uri: Uri = format!(
            "{}{}",
            self.h2_authority.as_deref().unwrap_or_default(),
            self.path_and_query
        )
        .parse()
        .ok()?;
        let mut headers = ctx.headers.clone();
        strip_fixed_hop_by_hop(&mut headers);
        for (name, value) in self.overrides {
            match value.and_then(Val::into_header) {
                Some(v) => {
                    headers.insert(name.clone(), v);
                }
                None => {
                    headers.remove(name);
                }
            }
        }
        let mut req = Request::new(body);
        *req.method_mut() = ctx.method.clone();
        *req.uri_mut() = uri;
        *req.headers_mut() = headers;
        *req.version_mut() = Version::HTTP_2;
        Some(req)
    }
}

static TE_TRAILERS: HeaderValue = HeaderValue::from_static("trailers");

/// Appends `path`, percent-encoding what Kong escapes in an upstream path (its `uri.escape`:
/// everything but unreserved and reserved characters and `%`), such as `|`, `"`, `{`, `}`, `^`
/// and `\`, which a client may send raw but many servers refuse. The query is not touched.
fn push_escaped_path(out: &mut String, path: &str) {
    // One table lookup a byte (this runs on every proxied request's path).
    static KEEP: [bool; 256] = {
        let mut t = [false; 256];
        let mut i = 0;
        while i < 256 {
            t[i] = (i as u8).is_ascii_alphanumeric();
            i += 1;
        }
        let extra = b"-._~%!$&'()*+,;=:@/?#[]";
        let mut j = 0;
        while j < extra.len() {
            t[extra[j] as usize] = true;
            j += 1;
        }
        t
    };
    let keep = |b: u8| KEEP[usize::from(b)];
    if path.bytes().all(keep) {
        out.push_str(path);
        return;
    }
    for &b in path.as_bytes() {
        if keep(b) {
            out.push(b as char);
        } else {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 15)] as char);
        }
    }
}

/// Visible ASCII but `#`, `"`, `<`, `>` and `` ` ``: bytes `http::uri::PathAndQuery` takes as
/// they are in both path and query (tested), so such a target needs no parse; any other goes
/// through it (and is refused, or cut at `#`).
fn is_plain_target(t: &[u8]) -> bool {
    t.iter()
        .all(|&b| (0x21..=0x7e).contains(&b) && !matches!(b, b'#' | b'"' | b'<' | b'>' | b'`'))
}

/// Builds what one attempt sends (`None`: the target or a header value is not valid).
fn upstream_request<'a>(
    service: &CompiledService,
    ctx: &'a Ctx,
    fwd: &'a Plan<'a>,
    route: &CompiledRoute,
    target: &TargetEntry,
) -> Option<Outgoing<'a>> {
    let target_port = target.port;
    let mut path_and_query =
        String::with_capacity(fwd.path.len() + ctx.query.as_ref().map_or(0, |q| q.len() + 1));
    push_escaped_path(&mut path_and_query, &fwd.path);
    if let Some(q) = &ctx.query {
        path_and_query.push('?');
        path_and_query.push_str(q);
    }
    // Whatever plugins did to the path, the request line carries a valid origin-form target.
    if !path_and_query.starts_with('/') {
        return None;
    }
    if !is_plain_target(path_and_query.as_bytes()) {
        path_and_query =
            http::uri::PathAndQuery::from_maybe_shared(bytes::Bytes::from(path_and_query))
                .ok()?
                .as_str()
                .to_string();
    }
    // The service's own Host value, made at config load, when it applies.
    let cached_host = match &service.host_value {
        Some((port, v)) if !route.route.preserve_host && !service.h2 && *port == target_port => {
            Some(v.clone())
        }
        _ => None,
    };
    let host_value = if cached_host.is_some() {
        String::new()
    } else if route.route.preserve_host {
        ctx.headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .unwrap_or_else(|| ctx.host.clone())
    } else {
        let base = crate::snapshot::bracketed(if service.host_from_target {
            &target.host
        } else {
            &service.host_header
        });
        if matches!(target_port, 80 | 443) {
            base.into_owned()
        } else {
            let mut h = String::with_capacity(base.len() + 6);
            h.push_str(&base);
            h.push(':');
            h.push_str(itoa::Buffer::new().format(target_port));
            h
        }
    };
    let mut overrides: Vec<(&'a HeaderName, Option<Val<'a>>)> = Vec::with_capacity(11);
    if let Some((name, id)) = &fwd.request_id {
        overrides.push((*name, id.as_ref().map(|id| Val::Text(id.as_str()))));
    }
    let h2_authority = if service.h2 {
        let scheme = if service.tls.is_some() {
            "https"
        } else {
            "http"
        };
        // gRPC needs `TE: trailers` to reach the upstream.
        if headers::all(&ctx.headers, &header::TE).any(|v| wants_trailers(v.as_bytes())) {
            overrides.push((&header::TE, Some(Val::Header(TE_TRAILERS.clone()))));
        }
        overrides.push((&header::HOST, None));
        Some(format!("{scheme}://{host_value}"))
    } else {
        let value = match cached_host {
            Some(v) => v,
            None => HeaderValue::from_str(&host_value).ok()?,
        };
        overrides.push((&header::HOST, Some(Val::Header(value))));
        None
    };
    // The client's 100-continue exchange was had with the gateway; the body follows the head
    // at once, so an upstream must not wait for (or answer without reading) it.
    overrides.push((&header::EXPECT, None));
    if fwd.websocket {
        overrides.push((&header::CONNECTION, Some(Val::Text("Upgrade"))));
        overrides.push((&header::UPGRADE, Some(Val::Text("websocket"))));
    }
    // The usual case, an HTTP/1 upstream and a client that is the (untrusted) socket peer on
    // the port it connected to: four lines the connection made once.
    let lines: &[u8] = if !service.h2
        && !fwd.trusted
        && fwd.port_value.is_some()
        && ctx.client_ip == ctx.peer_ip
    {
        fwd.forwarded_lines
    } else {
        &[]
    };
    if !lines.is_empty() {
        for name in [
            &X_FORWARDED_FOR,
            &X_REAL_IP,
            &X_FORWARDED_PROTO,
            &X_FORWARDED_PORT,
        ] {
            overrides.push((name, Some(Val::InLines)));
        }
    } else {
        // Usually the client is the socket peer, whose header value the connection made once.
        let client_value = match fwd.peer_value {
            Some(v) if ctx.client_ip == ctx.peer_ip => Some(v.clone()),
            _ => HeaderValue::from_str(&portcullis_plugins::ip_restriction::ip_text(ctx.client_ip))
                .ok(),
        };
        let prev: Vec<&str> = if fwd.trusted {
            ctx.headers
                .get_all(&X_FORWARDED_FOR)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect()
        } else {
            Vec::new()
        };
        let xff = if prev.is_empty() {
            client_value.clone()
        } else {
            HeaderValue::from_str(&format!("{}, {}", prev.join(", "), ctx.peer_ip)).ok()
        };
        overrides.push((&X_FORWARDED_FOR, xff.map(Val::Header)));
        overrides.push((&X_REAL_IP, client_value.map(Val::Header)));
    }
    // A trusted proxy's values are kept; otherwise the gateway's own (only built then).
    let mut set = |name: &'static HeaderName, own: &dyn Fn() -> Option<Val<'a>>| {
        let theirs = if fwd.trusted {
            ctx.headers.get(name).cloned().map(Val::Header)
        } else {
            None
        };
        overrides.push((name, theirs.or_else(own)));
    };
    if lines.is_empty() {
        set(&X_FORWARDED_PROTO, &|| {
            Some(Val::Text(if ctx.scheme == "https" {
                "https"
            } else {
                "http"
            }))
        });
        set(&X_FORWARDED_PORT, &|| {
            Some(Val::Header(match fwd.port_value {
                Some(v) => v.clone(),
                None => number_value(u64::from(fwd.port)),
            }))
        });
    }
    set(&X_FORWARDED_HOST, &|| Val::text(&ctx.host));
    set(&X_FORWARDED_PATH, &|| Val::text(fwd.original_path));
    match &fwd.prefix {
        Some(p) => set(&X_FORWARDED_PREFIX, &|| Val::text(p)),
        None if !fwd.trusted => overrides.push((&X_FORWARDED_PREFIX, None)),
        None => {}
    }
    Some(Outgoing {
        path_and_query,
        h2_authority,
        overrides,
        request_id: fwd.request_id.map(|(name, _)| name),
        lines,
    })
}

#[allow(clippy::too_many_arguments)] // one call site; a struct would only rename the list
async fn send_with_retries(
    gw: &Gateway,
    started: Instant,
    service: &Arc<CompiledService>,
    ctx: &mut Ctx,
    plan: &Plan<'_>,
    body: ProxyBody,
    route: &CompiledRoute,
    hash_key: Option<&[u8]>,
    log: &mut AccessLog,
    wire: Option<crate::h1client::Wire<'_>>,
) -> Result<(Response<Rest>, InFlight), Response<ProxyBody>> {
    let svc = &service.service;
    let balancer = &service.balancer;
    let connect_timeout = Duration::from_millis(svc.connect_timeout);
    let read_timeout = Duration::from_millis(svc.read_timeout);
    let max_tries = svc.retries as usize + 1;
    let mut tried: Vec<usize> = Vec::new();
    let mut body = Some(body);
    let mut last_error = errors::UpstreamFailure::NoPeer;
    let mut stale_retry_used = false;
    let mut tries = 0;
    while tries < max_tries {
        tries += 1;
        let Some(ti) = balancer.select(hash_key, &tried) else {
            // Targets were healthy when the first try started; a retry finding none means
            // the failures so far marked them down (Kong answers 503 here, not 502).
            if !tried.is_empty() {
                last_error = errors::UpstreamFailure::Unavailable;
            }
            break;
        };
        let target = &balancer.targets()[ti];
        if log.enabled() || log.tail.is_some() {
            log.upstream = Some(format!("{}:{}", target.host, target.port));
        }
        // Counted from selection, so least-connections sees requests still waiting upstream.
        let in_flight = InFlight::new(balancer, ti);
        let slot = service.slot(&gw.pool, ti, target);
        // The first attempt starts when the caller read the clock; a retry reads it again.
        let mut now = if tries == 1 && !stale_retry_used {
            started
        } else {
            Instant::now()
        };
        let (sender, reused) = match slot.checkout(now) {
            Some(s) => (s, true),
            None => match Box::pin(Pool::connect(
                &service.endpoint(target),
                &slot,
                connect_timeout,
            ))
            .await
            {
                Ok(s) => {
                    now = Instant::now();
                    (s, false)
                }
                Err(e) => {
                    let (outcome, failure) = match e {
                        ConnectError::Timeout => {
                            (Outcome::Timeout, errors::UpstreamFailure::Timeout)
                        }
                        ConnectError::Failed(_) => {
                            (Outcome::TcpFailure, errors::UpstreamFailure::Failed)
                        }
                        ConnectError::Resolve(_) => {
                            (Outcome::TcpFailure, errors::UpstreamFailure::Resolve)
                        }
                    };
                    tracing::warn!(upstream = %balancer.name, target = %format!("{}:{}", target.host, target.port), error = %e, "upstream connect failed");
                    balancer.report(ti, outcome);
                    tried.push(ti);
                    last_error = failure;
                    continue;
                }
            },
        };
        let Some(b) = body.take() else {
            break;
        };
        let replay = b.replay();
        let Some(out) = upstream_request(service, ctx, plan, route, target) else {
            return Err(kong_error(StatusCode::BAD_REQUEST, "Bad request"));
        };
        let attempt = match sender {
            Sender::H1(conn) => {
                let Ok(declared) = declared_length(&ctx.headers) else {
                    return Err(kong_error(StatusCode::BAD_REQUEST, "Bad request"));
                };
                let head = out.encode_h1(ctx);
                let zero_length = declared.is_some()
                    || matches!(ctx.method, Method::POST | Method::PUT | Method::PATCH);
                let home = Home { slot, sent_at: now };
                let head_request = ctx.method == Method::HEAD;
                // The read timeout runs on the connection's own timer (no registration per
                // request), for the response head and then between body reads.
                let sent = conn.send(
                    head,
                    b,
                    declared,
                    zero_length,
                    head_request,
                    home,
                    read_timeout,
                    wire,
                );
                match sent.await {
                    Ok(resp) => Ok(Ok(resp.map(Rest::H1))),
                    Err(f) if matches!(f.error, crate::h1client::H1Error::TimedOut) => {
                        Err(TimedOut)
                    }
                    Err(f) => Ok(Err(Failed {
                        retryable: !matches!(f.error, crate::h1client::H1Error::Invalid(_)),
                        unsent: f.unsent,
                        incomplete: f.incomplete,
                        error: f.error.to_string(),
                    })),
                }
            }
            Sender::H2(mut s) => {
                let Some(req) = out.into_h2_request(ctx, b) else {
                    return Err(kong_error(StatusCode::BAD_REQUEST, "Bad request"));
                };
                match Box::pin(tokio::time::timeout(read_timeout, send_h2(&mut s, req))).await {
                    Ok(Ok(resp)) => Ok(Ok(
                        resp.map(|b| Rest::H2(TimedIncoming::new(b, read_timeout)))
                    )),
                    Ok(Err(e)) => Ok(Err(Failed {
                        retryable: true,
                        unsent: e.unsent.map(Request::into_body),
                        incomplete: e.error.is_incomplete_message() || e.error.is_canceled(),
                        error: e.error.to_string(),
                    })),
                    Err(_elapsed) => Err(TimedOut),
                }
            }
        };
        match attempt {
            Ok(Ok(resp)) => {
                balancer.report(ti, Outcome::Status(resp.status().as_u16()));
                return Ok((resp, in_flight));
            }
            Ok(Err(e)) => {
                // A request that never left gets its body back.
                let never_sent = e.unsent.is_some();
                body = e.unsent.or(replay);
                let stale = reused && e.incomplete;
                // A non-idempotent request is replayed only when it provably never left: an
                // upstream that processed a POST and then closed must not see it twice.
                let replay_ok = never_sent || idempotent(&ctx.method);
                if stale && !stale_retry_used && body.is_some() && replay_ok {
                    // A pooled connection the upstream had already closed: retry on a fresh
                    // connection without counting it against the target.
                    stale_retry_used = true;
                    tries -= 1;
                    continue;
                }
                tracing::warn!(upstream = %balancer.name, error = %e.error, "upstream request failed");
                balancer.report(ti, Outcome::TcpFailure);
                last_error = errors::UpstreamFailure::Failed;
                // An invalid response is an answer, not a connection failure: like Kong
                // (nginx's default proxy_next_upstream), it is not retried.
                if !e.retryable || !idempotent(&ctx.method) {
                    break;
                }
            }
            Err(TimedOut) => {
                balancer.report(ti, Outcome::Timeout);
                last_error = errors::UpstreamFailure::Timeout;
                body = replay;
                if !idempotent(&ctx.method) {
                    break;
                }
            }
        }
        tried.push(ti);
        if body.is_none() {
            break;
        }
    }
    Err(errors::upstream_failure(last_error))
}

/// An attempt got no response head within the service's read timeout.
struct TimedOut;

/// The request's Content-Length: `Ok(None)` without one, an error when a copy does not parse
/// or copies differ (a plugin may have rewritten the header of a streamed body).
fn declared_length(h: &HeaderMap) -> Result<Option<u64>, ()> {
    let mut length = None;
    for v in headers::all(h, &header::CONTENT_LENGTH) {
        let n = crate::guard::parse_content_length(v.as_bytes()).ok_or(())?;
        if length.is_some_and(|l| l != n) {
            return Err(());
        }
        length = Some(n);
    }
    Ok(length)
}

/// A failed attempt, from either kind of connection.
struct Failed {
    /// A connection failure (retried on another target), not an invalid response.
    retryable: bool,
    /// The body, when nothing of the request left.
    unsent: Option<ProxyBody>,
    /// The connection closed before any response: stale when it came from the pool.
    incomplete: bool,
    /// For the log.
    error: String,
}

async fn tunnel(client: crate::h1server::OnUpgrade, mut upstream: crate::h1client::Upgraded) {
    let Some(mut c) = client.upgraded().await else {
        return;
    };
    let _ = tokio::io::copy_bidirectional(&mut c, &mut upstream).await;
}

#[cfg(test)]
mod tests {
    #[test]
    fn te_wants_trailers_among_its_codings() {
        for v in [
            "trailers",
            "TRAILERS",
            "deflate, trailers",
            "trailers,deflate",
            " trailers ",
        ] {
            assert!(super::wants_trailers(v.as_bytes()), "{v}");
        }
        for v in ["", "deflate", "trailersx", "x-trailers", "gzip;q=trailers"] {
            assert!(!super::wants_trailers(v.as_bytes()), "{v}");
        }
    }

    #[test]
    fn plain_targets_are_what_path_and_query_keeps_unchanged() {
        for b in 0u8..=255 {
            let target = [b"/a".as_slice(), &[b], b"b?x=", &[b]].concat();
            let plain = super::is_plain_target(&target);
            let parsed =
                http::uri::PathAndQuery::from_maybe_shared(bytes::Bytes::from(target.clone()));
            if plain {
                // Taken as it is: the fast path sends exactly what the parse would have.
                let parsed = parsed.unwrap_or_else(|e| panic!("byte {b:#x}: {e}"));
                assert_eq!(parsed.as_str().as_bytes(), &target[..], "byte {b:#x}");
            } else {
                // Only these visible bytes take the parse (one of path or query refuses each).
                assert!(
                    b <= 0x20 || b >= 0x7f || b"#\"<>`".contains(&b),
                    "byte {b:#x} is visible ASCII"
                );
            }
        }
    }

    #[test]
    fn request_ids_are_32_lower_hex_and_distinct() {
        let a = crate::access_log::RequestId::random();
        let b = crate::access_log::RequestId::random();
        assert_eq!(a.as_str().len(), 32);
        assert!(a
            .as_bytes()
            .iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c)));
        assert_ne!(a, b);
    }
}
