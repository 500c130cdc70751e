//! The compiled, immutable form of a config: router, per-route plugin chains, services with
//! their balancers and TLS clients, and the certificate table. Built once per config load off
//! the request path and swapped in atomically.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use http::HeaderName;
use portcullis_config::{
    reader::join, Config, Errors, FieldError, Plugin as PluginEntity, Protocol, Route, Service,
};
use portcullis_plugins::{build_scoped_plugin, priority_of, Catalog, Plugin, Scope};
use portcullis_router::{RouteSpec, Router};

use crate::balancer::{Balancer, HealthRegistry, TargetEntry};
use crate::settings::Settings;
use crate::tls::{self, CertTable};
use crate::upstream::{Endpoint, Pool, PoolKey, Slot, TlsClient};

/// A service ready to proxy to.
pub struct CompiledService {
    /// Service id.
    pub id: Arc<str>,
    /// Service name.
    pub name: Option<Arc<str>>,
    /// The entity.
    pub service: Service,
    /// Where requests go.
    pub balancer: Arc<Balancer>,
    /// TLS client for https/grpcs/wss services.
    pub tls: Option<Arc<TlsClient>>,
    /// Talk HTTP/2 to the upstream (gRPC).
    pub h2: bool,
    /// Host header value (without port) unless preserve_host.
    pub host_header: String,
    /// A service on an upstream without `host_header`: each target's own host name (or
    /// address) is the Host and the TLS name, as Kong's balancer does, not the upstream's name.
    pub host_from_target: bool,
    /// The whole `Host` value for a target on the service's own port (made once; other
    /// ports, such as an upstream's targets, build theirs per request).
    pub host_value: Option<(u16, http::HeaderValue)>,
    /// Name sent as SNI.
    pub sni: Arc<str>,
    /// The pool slot of each of the balancer's targets, by index, taken from the pool on a
    /// target's first request (see [`CompiledService::slot`]).
    pub pool_slots: Box<[OnceLock<Arc<Slot>>]>,
}

impl CompiledService {
    /// How to reach one of the balancer's targets.
    pub fn endpoint(&self, target: &TargetEntry) -> Endpoint {
        Endpoint {
            host: target.host.clone(),
            port: target.port,
            tls: self.tls.clone(),
            sni: if self.host_from_target {
                target.host.clone()
            } else {
                self.sni.clone()
            },
            h2: self.h2,
        }
    }

    /// The pool slot of `target`, the balancer's target `ti` (kept after the first request,
    /// so later ones look nothing up).
    pub fn slot(&self, pool: &Pool, ti: usize, target: &TargetEntry) -> Arc<Slot> {
        let of_pool = || pool.slot(PoolKey::of(&self.endpoint(target)));
        match self.pool_slots.get(ti) {
            Some(cell) => cell.get_or_init(of_pool).clone(),
            None => of_pool(),
        }
    }
}

/// `Host` for `host` on `port`: the port is left out for 80 and 443, as Kong does.
pub fn host_value(host: &str, port: u16) -> Option<(u16, http::HeaderValue)> {
    let host = bracketed(host);
    let text = if matches!(port, 80 | 443) {
        host.into_owned()
    } else {
        format!("{host}:{port}")
    };
    http::HeaderValue::from_str(&text).ok().map(|v| (port, v))
}

/// A host as it goes in `Host` or an authority: an IPv6 address in brackets.
pub fn bracketed(host: &str) -> std::borrow::Cow<'_, str> {
    if host.contains(':') && !host.starts_with('[') {
        std::borrow::Cow::Owned(format!("[{host}]"))
    } else {
        std::borrow::Cow::Borrowed(host)
    }
}

/// A plugin in a route's chain, with the protocols it runs on.
pub struct ChainEntry {
    /// The instance.
    pub plugin: Arc<dyn Plugin>,
    /// Kong priority (higher runs first).
    pub priority: i32,
    /// Runs for plain-text requests.
    pub on_http: bool,
    /// Runs for TLS requests.
    pub on_https: bool,
}

/// A route ready to match and run.
pub struct CompiledRoute {
    /// Route id.
    pub id: Arc<str>,
    /// Route name.
    pub name: Option<Arc<str>>,
    /// The entity.
    pub route: Route,
    /// Its service, if any.
    pub service: Option<Arc<CompiledService>>,
    /// Plugins in execution order (highest priority first).
    pub plugins: Vec<ChainEntry>,
    /// Consumer-scoped instances for this route, by consumer id, in execution order. They
    /// apply once authentication has identified the consumer and take precedence over the
    /// route's instance of the same plugin.
    pub consumer_plugins: HashMap<String, Vec<ChainEntry>>,
    /// Accepts plain-text requests.
    pub allows_http: bool,
    /// Accepts TLS requests.
    pub allows_https: bool,
    /// The route has the opentelemetry plugin: the proxy records spans.
    pub traced: bool,
    /// `Some`: every plugin of the route names the response headers it touches (see
    /// `Plugin::response_header_names`), so a proxied response's head may be relayed as the
    /// upstream's lines, with only these names parsed into a map for the response phase.
    pub wire_names: Option<Arc<[HeaderName]>>,
    /// Plugins with a log phase (route chain), run when the response is done.
    pub log_plugins: Arc<[Arc<dyn Plugin>]>,
    /// Header / query names redacted in log entries (declared by the route's plugins).
    pub redact: Arc<[String]>,
    /// gRPC route (grpc/grpcs only).
    pub grpc: bool,
}

/// Everything a request needs, immutable for the request's life.
pub struct Snapshot {
    /// The validated config it came from.
    pub config: Arc<Config>,
    /// Route matcher.
    pub router: Router,
    /// Routes by router index.
    pub routes: Vec<CompiledRoute>,
    /// All balancers (for health checks and status).
    pub balancers: Vec<Arc<Balancer>>,
    /// Certificates by SNI.
    pub certs: Arc<CertTable>,
    /// Hash of the config text, shown by `/status`.
    pub hash: String,
    /// An enabled mtls-auth plugin exists: the TLS listener asks clients for certificates.
    pub wants_client_certs: bool,
    /// Global plugins with a log phase, for requests that matched no route.
    pub global_log_plugins: Arc<[Arc<dyn Plugin>]>,
    /// Credential names declared by any plugin, redacted in logs of unmatched requests.
    pub global_redact: Arc<[String]>,
}

impl Snapshot {
    /// Health states to carry into the next snapshot.
    pub fn health(&self) -> HealthRegistry {
        let mut reg = HashMap::new();
        for b in &self.balancers {
            b.export_health(&mut reg);
        }
        reg
    }
}

/// Compiles a config; every error is returned with its path.
pub fn compile(
    config: Config,
    settings: &Settings,
    previous: &HealthRegistry,
    hash: String,
) -> Result<Snapshot, Vec<FieldError>> {
    let mut errs = Errors::default();

    // Plugins: validate every config (enabled or not) against its schema.
    let catalog = Arc::new(Catalog::build(&config));
    let mut plugins: Vec<(usize, Arc<dyn Plugin>)> = Vec::new();
    for (i, p) in config.plugins.iter().enumerate() {
        let scope = Scope {
            route: p.route.as_deref(),
            service: p.service.as_deref(),
        };
        if let Some(inst) =
            build_scoped_plugin(&p.name, &p.config, &p.path, scope, &mut errs, &catalog)
        {
            if p.enabled {
                plugins.push((i, inst));
            }
        }
    }

    let wants_client_certs = plugins.iter().any(|(_, p)| p.name() == "mtls-auth");
    let mut global_redact: Vec<String> = plugins
        .iter()
        .flat_map(|(_, p)| p.sensitive_names())
        .map(|n| n.to_ascii_lowercase())
        .collect();
    global_redact.sort();
    global_redact.dedup();
    let global_log_plugins: Arc<[Arc<dyn Plugin>]> = plugins
        .iter()
        .filter(|(i, p)| {
            let e = &config.plugins[*i];
            p.has_log() && e.route.is_none() && e.service.is_none() && e.consumer.is_none()
        })
        .map(|(_, p)| p.clone())
        .collect();

    // Plugins now hold digests and hashes; no plaintext secret stays in the snapshot.
    catalog.forget_credentials();
    let mut config = config;
    for cred in &mut config.credentials {
        for field in ["key", "password", "secret", "client_secret"] {
            if let Some(v) = cred.fields.get_mut(field) {
                *v = serde_json::Value::String("<redacted>".into());
            }
        }
    }

    // Balancers: one per upstream entity, shared by the services that name it.
    let mut by_upstream: HashMap<&str, Arc<Balancer>> = HashMap::new();
    let mut balancers = Vec::new();
    for u in &config.upstreams {
        let targets = config
            .targets
            .iter()
            .filter(|t| t.upstream == u.id)
            .map(|t| (t.host.clone(), t.port, t.weight))
            .collect();
        let b = Arc::new(Balancer::for_upstream(u, targets, previous));
        by_upstream.insert(u.name.as_str(), b.clone());
        balancers.push(b);
    }

    let mut services: HashMap<&str, Arc<CompiledService>> = HashMap::new();
    for (i, s) in config.services.iter().enumerate() {
        let path = format!("services[{i}]");
        let upstream = config.upstreams.iter().find(|u| u.name == s.host);
        let balancer = match by_upstream.get(s.host.as_str()) {
            Some(b) => b.clone(),
            None => {
                let b = Arc::new(Balancer::single(&s.host, s.port));
                balancers.push(b.clone());
                b
            }
        };
        let h2 = matches!(s.protocol, Protocol::Grpc | Protocol::Grpcs);
        let tls = if s.protocol.is_tls() {
            match service_tls(
                &config,
                s,
                upstream.and_then(|u| u.client_certificate.as_deref()),
                settings,
                h2,
            ) {
                Ok(t) => Some(Arc::new(t)),
                Err(e) => {
                    errs.push(path.clone(), e);
                    None
                }
            }
        } else {
            None
        };
        let host_header = upstream
            .and_then(|u| u.host_header.clone())
            .unwrap_or_else(|| s.host.clone());
        let host_from_target = upstream.is_some_and(|u| u.host_header.is_none());
        let targets = balancer.targets().len();
        services.insert(
            s.id.as_str(),
            Arc::new(CompiledService {
                id: Arc::from(s.id.as_str()),
                name: s.name.as_deref().map(Arc::from),
                service: s.clone(),
                balancer,
                tls,
                h2,
                sni: Arc::from(host_header.as_str()),
                host_value: if host_from_target {
                    None
                } else {
                    host_value(&host_header, s.port)
                },
                host_header,
                host_from_target,
                pool_slots: (0..targets).map(|_| OnceLock::new()).collect(),
            }),
        );
    }

    let scoped_consumers: std::collections::BTreeSet<String> = plugins
        .iter()
        .filter_map(|(i, _)| config.plugins[*i].consumer.clone())
        .collect();
    let mut specs = Vec::with_capacity(config.routes.len());
    let mut routes = Vec::with_capacity(config.routes.len());
    for r in &config.routes {
        let service = r
            .service
            .as_deref()
            .and_then(|id| services.get(id))
            .cloned();
        let chain = plugin_chain(&config.plugins, &plugins, r, None);
        let mut consumer_plugins = HashMap::new();
        for consumer in &scoped_consumers {
            let c = plugin_chain(&config.plugins, &plugins, r, Some(consumer));
            if !c.is_empty() {
                consumer_plugins.insert(consumer.to_string(), c);
            }
        }
        specs.push(RouteSpec {
            methods: r.methods.clone(),
            hosts: r.hosts.clone(),
            paths: r.paths.clone(),
            headers: r.headers.clone(),
            snis: r.snis.clone(),
            regex_priority: r.regex_priority,
        });
        let log_plugins: Arc<[Arc<dyn Plugin>]> = chain
            .iter()
            .filter(|e| e.plugin.has_log())
            .map(|e| e.plugin.clone())
            .collect();
        let mut redact: Vec<String> = chain
            .iter()
            .chain(consumer_plugins.values().flatten())
            .flat_map(|e| e.plugin.sensitive_names())
            .map(|n| n.to_ascii_lowercase())
            .collect();
        redact.sort();
        redact.dedup();
        let traced = chain.iter().any(|e| e.plugin.name() == "opentelemetry");
        // Wire mode needs every plugin (route and consumer scoped) to name the response
        // headers it touches; their union is what the upstream's head must still give them.
        let wire_names = chain
            .iter()
            .chain(consumer_plugins.values().flatten())
            .try_fold(Vec::new(), |mut acc, e| {
                if e.plugin.reads_response_body() {
                    return None;
                }
                acc.extend(e.plugin.response_header_names()?);
                Some(acc)
            })
            .map(|mut names| {
                names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
                names.dedup();
                Arc::<[HeaderName]>::from(names)
            });
        routes.push(CompiledRoute {
            traced,
            wire_names,
            log_plugins,
            redact: redact.into(),
            id: Arc::from(r.id.as_str()),
            name: r.name.as_deref().map(Arc::from),
            allows_http: r
                .protocols
                .iter()
                .any(|p| matches!(p, Protocol::Http | Protocol::Ws | Protocol::Grpc)),
            allows_https: r
                .protocols
                .iter()
                .any(|p| matches!(p, Protocol::Https | Protocol::Wss | Protocol::Grpcs)),
            grpc: r
                .protocols
                .iter()
                .all(|p| matches!(p, Protocol::Grpc | Protocol::Grpcs)),
            route: r.clone(),
            service,
            plugins: chain,
            consumer_plugins,
        });
    }
    let router = match Router::build(&specs) {
        Ok(r) => Some(r),
        Err(e) => {
            errs.push("routes", e.to_string());
            None
        }
    };

    let mut certs = CertTable::default();
    for (i, c) in config.certificates.iter().enumerate() {
        let alt = match (&c.cert_alt, &c.key_alt) {
            (Some(cert), Some(key)) => match tls::certified_key(cert, key) {
                Ok(k) => Some(k),
                Err(e) => {
                    errs.push(format!("certificates[{i}].cert_alt"), e);
                    None
                }
            },
            _ => None,
        };
        match tls::certified_key(&c.cert, &c.key) {
            Ok(primary) => {
                let pair = tls::CertPair { primary, alt };
                for sni in &c.snis {
                    certs.insert(sni, pair.clone());
                }
            }
            Err(e) => errs.push(format!("certificates[{i}]"), e),
        }
    }
    certs.finish();

    match router {
        Some(router) if errs.is_empty() => Ok(Snapshot {
            config: Arc::new(config),
            router,
            routes,
            balancers,
            certs: Arc::new(certs),
            hash,
            wants_client_certs,
            global_log_plugins,
            global_redact: global_redact.into(),
        }),
        _ => Err(errs.into_vec()),
    }
}

/// Picks, for each plugin name, the most specific instance for this route (Kong's precedence:
/// route+service, route, service, global), ordered by priority. With `consumer`, picks among
/// the instances scoped to that consumer instead (consumer+route+service, consumer+route,
/// consumer+service, consumer).
type Candidate<'a> = (u8, usize, &'a Arc<dyn Plugin>);

fn plugin_chain(
    entities: &[PluginEntity],
    built: &[(usize, Arc<dyn Plugin>)],
    r: &Route,
    consumer: Option<&str>,
) -> Vec<ChainEntry> {
    // Plugin name -> (scope rank, index of the entity, instance).
    let mut best: HashMap<&str, Candidate<'_>> = HashMap::new();
    for (idx, inst) in built {
        let p = &entities[*idx];
        if p.consumer.as_deref() != consumer {
            continue;
        }
        let on_route = p.route.as_deref() == Some(r.id.as_str());
        let on_service = p.service.is_some() && p.service == r.service;
        let rank = match (p.route.is_some(), p.service.is_some()) {
            (true, true) if on_route && on_service => 4,
            (true, false) if on_route => 3,
            (false, true) if on_service => 2,
            (false, false) => 1,
            _ => continue,
        };
        let key = p.name.as_str();
        match best.get(key) {
            Some((have, _, _)) if *have >= rank => {}
            _ => {
                best.insert(key, (rank, *idx, inst));
            }
        }
    }
    let mut chain: Vec<(i32, usize, ChainEntry)> = best
        .into_values()
        .map(|(_, idx, inst)| {
            let p = &entities[idx];
            let entry = ChainEntry {
                plugin: inst.clone(),
                priority: priority_of(&p.name).unwrap_or(0),
                on_http: p
                    .protocols
                    .iter()
                    .any(|x| matches!(x, Protocol::Http | Protocol::Grpc | Protocol::Ws)),
                on_https: p
                    .protocols
                    .iter()
                    .any(|x| matches!(x, Protocol::Https | Protocol::Grpcs | Protocol::Wss)),
            };
            (priority_of(&p.name).unwrap_or(0), idx, entry)
        })
        .collect();
    chain.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    chain.into_iter().map(|(_, _, e)| e).collect()
}

fn service_tls(
    config: &Config,
    s: &Service,
    upstream_cert: Option<&str>,
    settings: &Settings,
    h2: bool,
) -> Result<TlsClient, String> {
    let cas: Vec<&str> = s
        .ca_certificates
        .iter()
        .filter_map(|id| config.ca_certificates.iter().find(|c| &c.id == id))
        .map(|c| c.cert.as_str())
        .collect();
    let verify = s.tls_verify.unwrap_or(settings.proxy_ssl_verify);
    let cert_id = s.client_certificate.as_deref().or(upstream_cert);
    let client = cert_id
        .and_then(|id| config.certificates.iter().find(|c| c.id == id))
        .map(|c| (c.cert.as_str(), c.key.as_str()));
    let cfg = tls::client_config(&cas, verify, client, h2).map_err(|e| join("tls", &e))?;
    let fingerprint = crate::balancer::hash64(
        format!("{:?}|{verify}|{:?}|{h2}", s.ca_certificates, cert_id).as_bytes(),
    );
    Ok(TlsClient {
        config: Arc::new(cfg),
        fingerprint,
    })
}

/// Joins the service path and the request path as Kong 3.x does under its default
/// `traditional_compatible` router (`get_upstream_uri_v0` in Kong's `router/utils.lua`), which
/// applies path_handling v0 to every route: `path_handling: v1` is accepted, and works only
/// under Kong's legacy `traditional` router, so it is treated as v0 here too.
///
/// `matched` is the part of the request path the route matched (its prefix, or the regex
/// match); with `strip_path` it is removed, and a leading `.`, `..`, `./` or `../` left
/// behind is dropped, so `/route../x` cannot climb out of the service's path.
pub fn upstream_path(
    service_path: Option<&str>,
    path: &str,
    strip_path: bool,
    matched: Option<std::ops::Range<usize>>,
) -> String {
    let base = service_path.unwrap_or("/");
    // Joined by hand: `format!` costs more than the rest of this on every request.
    let join = |parts: &[&str]| {
        let mut out = String::with_capacity(parts.iter().map(|p| p.len()).sum());
        for p in parts {
            out.push_str(p);
        }
        out
    };
    if !strip_path {
        return if base.ends_with('/') {
            join(&[base, path.strip_prefix('/').unwrap_or(path)])
        } else if path == "/" {
            base.to_string()
        } else {
            join(&[base, path])
        };
    }
    let cut = match matched {
        Some(r) if r.start == 0 && r.end <= path.len() && path.is_char_boundary(r.end) => r.end,
        _ if path.starts_with('/') => 1,
        _ => 0,
    };
    let rest = sanitize_postfix(&path[cut..]);
    if let Some(trimmed) = base.strip_suffix('/') {
        if rest.is_empty() {
            // Kong tests the request's last byte here, so a request for `/` keeps the base's
            // slash (`/base/`); the branch below needs a longer path.
            if base == "/" || path.ends_with('/') {
                base.to_string()
            } else {
                trimmed.to_string()
            }
        } else if rest.starts_with('/') {
            join(&[trimmed, rest])
        } else {
            join(&[base, rest])
        }
    } else if rest.is_empty() {
        if path.len() > 1 && path.ends_with('/') {
            join(&[base, "/"])
        } else {
            base.to_string()
        }
    } else if rest.starts_with('/') {
        join(&[base, rest])
    } else {
        join(&[base, "/", rest])
    }
}

/// Kong's `sanitize_uri_postfix`: what remains after the stripped prefix loses a leading
/// `./` or `../`, and is empty when it was only `.` or `..`.
///
/// Stricter than Kong in one case: a first segment that is `.` or `..` followed by `;params`
/// (`..;`) is dropped too, since servers that strip path parameters (Tomcat, Spring) read it
/// as `..`.
fn sanitize_postfix(rest: &str) -> &str {
    let (first, after) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, ""),
    };
    let bare = first.split(';').next().unwrap_or(first);
    if bare == "." || bare == ".." {
        after
    } else {
        rest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_hosts_are_bracketed_in_host_values() {
        assert_eq!(bracketed("::1"), "[::1]");
        assert_eq!(bracketed("[::1]"), "[::1]");
        assert_eq!(bracketed("example.com"), "example.com");
        assert_eq!(host_value("::1", 8080).unwrap().1, "[::1]:8080");
        assert_eq!(host_value("::1", 443).unwrap().1, "[::1]");
        assert_eq!(host_value("a.example", 80).unwrap().1, "a.example");
    }

    /// Rows of Kong's own table (`spec/fixtures/router_path_handling_tests.lua`, v0, which
    /// Kong 3.x's default router applies to every route): service path, route path (None for
    /// a host-only route), strip_path, request, expected upstream path.
    #[test]
    fn kong_path_handling_table() {
        type Row = (
            Option<&'static str>,
            Option<&'static str>,
            bool,
            &'static str,
            &'static str,
        );
        let cases: &[Row] = &[
            (Some("/s"), Some("/fv0"), true, "/fv0req", "/s/req"),
            (Some("/s"), Some("/fv0"), true, "/fv0/req", "/s/req"),
            (Some("/s"), Some("/fv0"), true, "/fv0", "/s"),
            (Some("/s/"), Some("/fv0"), true, "/fv0req", "/s/req"),
            (Some("/s"), Some("/fv0"), false, "/fv0req", "/s/fv0req"),
            (None, Some("/fv0"), true, "/fv0/req", "/req"),
            (None, Some("/fv0"), true, "/fv0", "/"),
            (None, None, false, "/a/b", "/a/b"),
            // rows 21/59: a service path ending in / and an exact prefix request
            (Some("/srv/"), Some("/rou"), true, "/rou", "/srv"),
            (
                Some("/service/"),
                Some("/route"),
                true,
                "/route",
                "/service",
            ),
            (
                Some("/service/"),
                Some("/route"),
                true,
                "/route/",
                "/service/",
            ),
            // row 23: route "/" without strip_path
            (Some("/service"), Some("/"), false, "/", "/service"),
            // row 46: a route path ending in /
            (
                Some("/service"),
                Some("/route/"),
                true,
                "/route/",
                "/service/",
            ),
            // fixture rows 82 and 111: a service path ending in /, a request for / on a
            // stripping `/` route or a host-only one: the base keeps its slash
            (Some("/service/"), Some("/"), true, "/", "/service/"),
            (Some("/service/"), None, true, "/", "/service/"),
            // row 70: host-only route
            (Some("/service"), None, false, "/", "/service"),
            (Some("/service"), None, true, "/", "/service"),
            (Some("/service"), None, true, "/x/y", "/service/x/y"),
            (Some("/service/"), None, false, "/x", "/service/x"),
            // rows 78-95: dot segments left by the strip are dropped
            (
                Some("/service"),
                Some("/route"),
                true,
                "/route./req",
                "/service/req",
            ),
            (
                Some("/service/"),
                Some("/route"),
                true,
                "/route./req",
                "/service/req",
            ),
            (
                Some("/service"),
                Some("/route"),
                true,
                "/route../req",
                "/service/req",
            ),
            (
                Some("/service/"),
                Some("/route"),
                true,
                "/route../req",
                "/service/req",
            ),
            (
                Some("/service"),
                Some("/route"),
                true,
                "/route..",
                "/service",
            ),
            (
                Some("/service"),
                Some("/route"),
                true,
                "/route.",
                "/service",
            ),
            (None, Some("/r"), true, "/r../etc", "/etc"),
            (
                Some("/api/v1/public"),
                Some("/pub"),
                true,
                "/pub..;/admin",
                "/api/v1/public/admin",
            ),
            (Some("/s"), Some("/r"), true, "/r.;x/y", "/s/y"),
            (Some("/s"), Some("/r"), true, "/r..;", "/s"),
            (Some("/s"), Some("/r"), true, "/r..x/y", "/s/..x/y"),
            (
                Some("/api/v1/public"),
                Some("/pub"),
                true,
                "/pub../admin",
                "/api/v1/public/admin",
            ),
            // a dot segment kept without strip_path is the client's own path (normalised
            // before routing, so only `..` glued to a name can reach here)
            (Some("/s"), Some("/r"), false, "/r../x", "/s/r../x"),
        ];
        for &(base, route, strip, req, want) in cases {
            let matched = route.map(|r| 0..r.len().min(req.len()));
            assert_eq!(
                upstream_path(base, req, strip, matched),
                want,
                "{base:?} {route:?} strip={strip} {req}"
            );
        }
    }
}
