//! Validated runtime entities. Every reference between entities is already resolved to an id.

use std::collections::BTreeMap;

use serde_json::Value;

/// Entity id: a UUID string, given in the file or derived deterministically from names.
pub type Id = String;

/// Protocols a service speaks or a route accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// Plain HTTP/1.1 (or h2c).
    Http,
    /// HTTP over TLS.
    Https,
    /// gRPC over cleartext HTTP/2.
    Grpc,
    /// gRPC over TLS.
    Grpcs,
    /// WebSocket.
    Ws,
    /// WebSocket over TLS.
    Wss,
    /// Raw TCP streams (accepted in the file, not proxied by the HTTP data plane).
    Tcp,
    /// TLS streams (accepted in the file, not proxied by the HTTP data plane).
    Tls,
    /// TLS passthrough (accepted in the file, not proxied by the HTTP data plane).
    TlsPassthrough,
    /// UDP (accepted in the file, not proxied by the HTTP data plane).
    Udp,
}

impl Protocol {
    /// Parses Kong's protocol names.
    pub fn parse(s: &str) -> Option<Protocol> {
        Some(match s {
            "http" => Protocol::Http,
            "https" => Protocol::Https,
            "grpc" => Protocol::Grpc,
            "grpcs" => Protocol::Grpcs,
            "ws" => Protocol::Ws,
            "wss" => Protocol::Wss,
            "tcp" => Protocol::Tcp,
            "tls" => Protocol::Tls,
            "tls_passthrough" => Protocol::TlsPassthrough,
            "udp" => Protocol::Udp,
            _ => return None,
        })
    }

    /// Kong's name for the protocol.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Https => "https",
            Protocol::Grpc => "grpc",
            Protocol::Grpcs => "grpcs",
            Protocol::Ws => "ws",
            Protocol::Wss => "wss",
            Protocol::Tcp => "tcp",
            Protocol::Tls => "tls",
            Protocol::TlsPassthrough => "tls_passthrough",
            Protocol::Udp => "udp",
        }
    }

    /// True for protocols carried over TLS.
    pub fn is_tls(self) -> bool {
        matches!(
            self,
            Protocol::Https | Protocol::Grpcs | Protocol::Wss | Protocol::Tls
        )
    }

    /// All protocol names, for error messages.
    pub const NAMES: &'static [&'static str] = &[
        "http",
        "https",
        "grpc",
        "grpcs",
        "ws",
        "wss",
        "tcp",
        "tls",
        "tls_passthrough",
        "udp",
    ];
}

/// A service: where matched traffic goes.
#[derive(Debug, Clone)]
pub struct Service {
    /// Entity id.
    pub id: Id,
    /// Unique name, if given.
    pub name: Option<String>,
    /// Upstream protocol.
    pub protocol: Protocol,
    /// Host name, IP, or the name of an upstream entity.
    pub host: String,
    /// Upstream port.
    pub port: u16,
    /// Path prefix prepended to every upstream request.
    pub path: Option<String>,
    /// Retries on connection failure or timeout.
    pub retries: u32,
    /// Connect timeout, ms.
    pub connect_timeout: u64,
    /// Write timeout, ms.
    pub write_timeout: u64,
    /// Read timeout, ms.
    pub read_timeout: u64,
    /// Verify the upstream's certificate (None = node default, which is on).
    pub tls_verify: Option<bool>,
    /// Maximum verification depth.
    pub tls_verify_depth: Option<u8>,
    /// CA certificates (ids) trusted for upstream TLS.
    pub ca_certificates: Vec<Id>,
    /// Client certificate (id) presented to the upstream.
    pub client_certificate: Option<Id>,
    /// Disabled services are not routed to.
    pub enabled: bool,
    /// Tags.
    pub tags: Vec<String>,
}

impl Service {
    /// The display name: name if set, else the id.
    pub fn display_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.id)
    }
}

/// Kong's `path_handling` algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathHandling {
    /// v0: service path and request path joined, no slash merging.
    V0,
    /// v1 (deprecated in Kong): joins the two with a single slash.
    V1,
}

/// A route: which requests go to a service.
#[derive(Debug, Clone)]
pub struct Route {
    /// Entity id.
    pub id: Id,
    /// Unique name, if given.
    pub name: Option<String>,
    /// The service (id); a route without one answers 503 in Kong unless a plugin terminates.
    pub service: Option<Id>,
    /// Accepted protocols.
    pub protocols: Vec<Protocol>,
    /// Accepted methods (upper case).
    pub methods: Vec<String>,
    /// Host patterns, possibly with `*` wildcard and `:port`.
    pub hosts: Vec<String>,
    /// Path patterns: prefix (`/x`) or regex (`~/x`).
    pub paths: Vec<String>,
    /// Header matchers: lower-case name and accepted values (values may be `~*regex`).
    pub headers: Vec<(String, Vec<String>)>,
    /// SNI names.
    pub snis: Vec<String>,
    /// Status code when an http request hits an https-only route.
    pub https_redirect_status_code: u16,
    /// Remove the matched prefix before proxying.
    pub strip_path: bool,
    /// Pass the client's Host header upstream.
    pub preserve_host: bool,
    /// Priority among regex routes.
    pub regex_priority: i64,
    /// Path joining algorithm.
    pub path_handling: PathHandling,
    /// Buffer the request body (enables retries of requests with bodies).
    pub request_buffering: bool,
    /// Buffer the response body.
    pub response_buffering: bool,
    /// Tags.
    pub tags: Vec<String>,
}

impl Route {
    /// The display name: name if set, else the id.
    pub fn display_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.id)
    }
}

/// Load-balancing algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// Weighted round-robin.
    RoundRobin,
    /// Consistent hashing on `hash_on`.
    ConsistentHashing,
    /// Fewest in-flight requests.
    LeastConnections,
    /// Lowest observed latency (accepted; balanced as least-connections).
    Latency,
}

/// What consistent hashing hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashOn {
    /// Nothing: fall back to round-robin.
    None,
    /// Consumer id.
    Consumer,
    /// Client IP.
    Ip,
    /// A request header.
    Header(String),
    /// A cookie (set by the gateway if absent) with its path.
    Cookie {
        /// Cookie name.
        name: String,
        /// Cookie path.
        path: String,
    },
    /// The request path.
    Path,
    /// A query argument.
    QueryArg(String),
    /// A regex capture from the route's path.
    UriCapture(String),
}

/// Active health-check settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ActiveHealthcheck {
    /// Probe type: `http` or `https` or `tcp`.
    pub kind: String,
    /// Probe timeout, seconds.
    pub timeout: f64,
    /// Concurrent probes.
    pub concurrency: u32,
    /// Path probed.
    pub http_path: String,
    /// SNI for https probes.
    pub https_sni: Option<String>,
    /// Verify the target's certificate on https probes.
    pub https_verify_certificate: bool,
    /// Extra probe headers.
    pub headers: Vec<(String, String)>,
    /// Interval between probes of healthy targets, seconds (0 = off).
    pub healthy_interval: f64,
    /// Statuses counted as success.
    pub healthy_http_statuses: Vec<u16>,
    /// Successes needed to mark a target healthy.
    pub healthy_successes: u32,
    /// Interval between probes of unhealthy targets, seconds (0 = off).
    pub unhealthy_interval: f64,
    /// Statuses counted as failure.
    pub unhealthy_http_statuses: Vec<u16>,
    /// TCP failures to mark unhealthy.
    pub unhealthy_tcp_failures: u32,
    /// Timeouts to mark unhealthy.
    pub unhealthy_timeouts: u32,
    /// HTTP failures to mark unhealthy.
    pub unhealthy_http_failures: u32,
}

/// Passive health-check (circuit breaker) settings.
#[derive(Debug, Clone, PartialEq)]
pub struct PassiveHealthcheck {
    /// Statuses counted as success.
    pub healthy_http_statuses: Vec<u16>,
    /// Successes needed to mark healthy (0 = never by passive checks).
    pub healthy_successes: u32,
    /// Statuses counted as failure.
    pub unhealthy_http_statuses: Vec<u16>,
    /// TCP failures to mark unhealthy (0 = off).
    pub unhealthy_tcp_failures: u32,
    /// Timeouts to mark unhealthy (0 = off).
    pub unhealthy_timeouts: u32,
    /// HTTP failures to mark unhealthy (0 = off).
    pub unhealthy_http_failures: u32,
}

/// Health checks of an upstream.
#[derive(Debug, Clone, PartialEq)]
pub struct Healthchecks {
    /// Active probing.
    pub active: ActiveHealthcheck,
    /// Passive observation of proxied traffic.
    pub passive: PassiveHealthcheck,
    /// Percentage of healthy capacity below which the whole upstream is unhealthy.
    pub threshold: f64,
}

/// An upstream: a named, balanced set of targets.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// Entity id.
    pub id: Id,
    /// Name; services refer to it through `host`.
    pub name: String,
    /// Balancing algorithm.
    pub algorithm: Algorithm,
    /// Primary hash input.
    pub hash_on: HashOn,
    /// Fallback hash input when the primary is absent.
    pub hash_fallback: HashOn,
    /// Ring slots for consistent hashing.
    pub slots: u32,
    /// Host header sent upstream (instead of the target's).
    pub host_header: Option<String>,
    /// Client certificate (id) for upstream TLS.
    pub client_certificate: Option<Id>,
    /// Health checks.
    pub healthchecks: Healthchecks,
    /// Tags.
    pub tags: Vec<String>,
}

/// One target of an upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Entity id.
    pub id: Id,
    /// The upstream (id).
    pub upstream: Id,
    /// Host name or IP.
    pub host: String,
    /// Port (default 8000).
    pub port: u16,
    /// Weight (0 = disabled).
    pub weight: u32,
    /// Tags.
    pub tags: Vec<String>,
}

/// A certificate with its key, and the SNIs it serves.
#[derive(Debug, Clone)]
pub struct Certificate {
    /// Entity id.
    pub id: Id,
    /// PEM certificate chain.
    pub cert: String,
    /// PEM private key.
    pub key: String,
    /// Alternate PEM certificate (other key type).
    pub cert_alt: Option<String>,
    /// Alternate PEM key.
    pub key_alt: Option<String>,
    /// SNI names (possibly wildcards) served with this certificate.
    pub snis: Vec<String>,
    /// Tags.
    pub tags: Vec<String>,
}

/// A trusted CA certificate.
#[derive(Debug, Clone)]
pub struct CaCertificate {
    /// Entity id.
    pub id: Id,
    /// PEM certificate.
    pub cert: String,
    /// Tags.
    pub tags: Vec<String>,
}

/// A consumer: an identity that credentials map to.
#[derive(Debug, Clone)]
pub struct Consumer {
    /// Entity id.
    pub id: Id,
    /// Unique username.
    pub username: Option<String>,
    /// Unique custom id.
    pub custom_id: Option<String>,
    /// Tags.
    pub tags: Vec<String>,
}

/// A credential of a consumer (key-auth key, basic-auth password, ...), kept as the raw record
/// for the authentication plugins, with its consumer resolved.
#[derive(Debug, Clone)]
pub struct Credential {
    /// Entity id.
    pub id: Id,
    /// Kind: `keyauth_credentials`, `basicauth_credentials`, `jwt_secrets`, ...
    pub kind: String,
    /// The consumer (id).
    pub consumer: Id,
    /// The record's fields (without `consumer`).
    pub fields: serde_json::Map<String, Value>,
}

/// A plugin instance with its scope.
#[derive(Debug, Clone)]
pub struct Plugin {
    /// Entity id.
    pub id: Id,
    /// Plugin name (`request-termination`, ...).
    pub name: String,
    /// Optional instance name.
    pub instance_name: Option<String>,
    /// Scoped to this service (id).
    pub service: Option<Id>,
    /// Scoped to this route (id).
    pub route: Option<Id>,
    /// Scoped to this consumer (id).
    pub consumer: Option<Id>,
    /// Raw config, validated by the plugin's own schema at compile time.
    pub config: Value,
    /// Protocols the plugin runs on.
    pub protocols: Vec<Protocol>,
    /// Disabled plugins are skipped.
    pub enabled: bool,
    /// Path of the plugin in the file, for errors from its schema.
    pub path: String,
    /// Tags.
    pub tags: Vec<String>,
}

/// A whole validated declarative config.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// `_format_version`.
    pub format_version: String,
    /// `_transform: false`: credentials are given already hashed (Kong's export format, e.g.
    /// basic-auth passwords as SHA-1 of password + consumer id).
    pub no_transform: bool,
    /// Services in file order.
    pub services: Vec<Service>,
    /// Routes in file order (nested routes first within their service).
    pub routes: Vec<Route>,
    /// Upstreams.
    pub upstreams: Vec<Upstream>,
    /// Targets.
    pub targets: Vec<Target>,
    /// Certificates.
    pub certificates: Vec<Certificate>,
    /// CA certificates.
    pub ca_certificates: Vec<CaCertificate>,
    /// Consumers.
    pub consumers: Vec<Consumer>,
    /// Consumer credentials by kind.
    pub credentials: Vec<Credential>,
    /// Plugins.
    pub plugins: Vec<Plugin>,
    /// Consumer groups: name → member consumer ids.
    pub consumer_groups: BTreeMap<String, Vec<Id>>,
    /// Each value resolved from a `{vault://...}` reference, with the reference text: output
    /// for people shows the reference instead (see `vault::scrub`).
    pub vault_values: Vec<(String, String)>,
}

impl Config {
    /// A one-line summary, as printed by `portcullis config validate`.
    pub fn summary(&self) -> String {
        format!(
            "{} services, {} routes, {} upstreams, {} targets, {} consumers, {} plugins, {} certificates",
            self.services.len(),
            self.routes.len(),
            self.upstreams.len(),
            self.targets.len(),
            self.consumers.len(),
            self.plugins.len(),
            self.certificates.len()
        )
    }
}
