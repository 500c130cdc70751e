//! Builds plugin instances by name from their validated config, with Kong's priorities.

use std::sync::Arc;

use portcullis_config::Errors;
use serde_json::Value;

use crate::catalog::Catalog;
use crate::{
    acl, basic_auth, bot_detection, correlation_id, cors, file_log, hmac_auth, http_log,
    ip_restriction, jwt, key_auth, mtls_auth, oas_validation, openid_connect, opentelemetry,
    prometheus, rate_limiting, request_size_limiting, request_termination, request_validator,
    syslog, tcp_log, transformer, udp_log, Plugin,
};

/// Plugin names this build knows, with Kong's execution priority (higher runs first).
const PLUGINS: &[(&str, i32)] = &[
    ("correlation-id", 100001),
    ("mtls-auth", 1600),
    ("http-log", 12),
    ("file-log", 9),
    ("opentelemetry", 14),
    ("udp-log", 8),
    ("tcp-log", 7),
    ("syslog", 4),
    ("prometheus", 13),
    ("bot-detection", 2500),
    ("cors", 2000),
    ("jwt", 1450),
    ("key-auth", 1250),
    ("basic-auth", 1100),
    ("openid-connect", 1050),
    ("hmac-auth", 1030),
    // After authentication (so lockouts and 401s cost no rule evaluation), before everything
    // that acts on the request; Kong EE's injection-protection uses the same priority.
    ("waf", 1007),
    ("request-validator", 999),
    ("request-size-limiting", 951),
    ("acl", 950),
    ("oas-validation", 850),
    ("request-transformer", 801),
    ("response-transformer", 800),
    ("ip-restriction", 990),
    ("acl", 950),
    ("rate-limiting", 910),
    ("request-termination", 2),
];

/// Names of all bundled plugins.
pub fn known_plugins() -> impl Iterator<Item = &'static str> {
    PLUGINS
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| cfg!(feature = "waf") || *n != "waf")
}

/// Kong's priority of a plugin, if known.
pub fn priority_of(name: &str) -> Option<i32> {
    PLUGINS.iter().find(|(n, _)| *n == name).map(|(_, p)| *p)
}

/// Where a plugin instance is attached: the ids of its route and service, when scoped to them.
/// Plugins that keep state across requests (rate-limiting counters) key it by scope, as Kong does.
#[derive(Debug, Clone, Copy, Default)]
pub struct Scope<'a> {
    /// The plugin's route id.
    pub route: Option<&'a str>,
    /// The plugin's service id.
    pub service: Option<&'a str>,
}

/// Validates `config` against the plugin's schema and builds an instance. Errors are recorded
/// under `path` (the plugin's path in the file, e.g. `services[0].plugins[1]`).
pub fn build_plugin(
    name: &str,
    config: &Value,
    path: &str,
    errs: &mut Errors,
    catalog: &Arc<Catalog>,
) -> Option<Arc<dyn Plugin>> {
    build_scoped_plugin(name, config, path, Scope::default(), errs, catalog)
}

/// [`build_plugin`] for an instance attached to a route and/or service.
pub fn build_scoped_plugin(
    name: &str,
    config: &Value,
    path: &str,
    scope: Scope<'_>,
    errs: &mut Errors,
    catalog: &Arc<Catalog>,
) -> Option<Arc<dyn Plugin>> {
    let cpath = portcullis_config::reader::join(path, "config");
    match name {
        "key-auth" => key_auth::KeyAuth::build(config, &cpath, errs, catalog)
            .map(|p| Arc::new(p) as Arc<dyn Plugin>),
        "basic-auth" => basic_auth::BasicAuth::build(config, &cpath, errs, catalog)
            .map(|p| Arc::new(p) as Arc<dyn Plugin>),
        "jwt" => {
            jwt::Jwt::build(config, &cpath, errs, catalog).map(|p| Arc::new(p) as Arc<dyn Plugin>)
        }
        "hmac-auth" => hmac_auth::HmacAuth::build(config, &cpath, errs, catalog)
            .map(|p| Arc::new(p) as Arc<dyn Plugin>),
        "openid-connect" => openid_connect::OpenIdConnect::build(config, &cpath, errs, catalog)
            .map(|p| Arc::new(p) as Arc<dyn Plugin>),
        "acl" => {
            acl::Acl::build(config, &cpath, errs, catalog).map(|p| Arc::new(p) as Arc<dyn Plugin>)
        }
        "correlation-id" => correlation_id::CorrelationId::build(config, &cpath, errs)
            .map(|p| Arc::new(p) as Arc<dyn Plugin>),
        "opentelemetry" => opentelemetry::OpenTelemetry::build(config, &cpath, errs)
            .map(|p| Arc::new(p) as Arc<dyn Plugin>),
        "file-log" => file_log::FileLog::build(config, &cpath, errs, catalog.is_complete())
            .map(|p| Arc::new(p) as Arc<dyn Plugin>),
        "http-log" => http_log::HttpLog::build(config, &cpath, errs, catalog.is_complete())
            .map(|p| Arc::new(p) as Arc<dyn Plugin>),
        "tcp-log" => tcp_log::TcpLog::build(config, &cpath, errs, catalog.is_complete())
            .map(|p| Arc::new(p) as Arc<dyn Plugin>),
        "udp-log" => udp_log::UdpLog::build(config, &cpath, errs, catalog.is_complete())
            .map(|p| Arc::new(p) as Arc<dyn Plugin>),
        "syslog" => syslog::Syslog::build(config, &cpath, errs, catalog.is_complete())
            .map(|p| Arc::new(p) as Arc<dyn Plugin>),
        "prometheus" => prometheus::Prometheus::build(config, &cpath, errs)
            .map(|p| Arc::new(p) as Arc<dyn Plugin>),
        "mtls-auth" => mtls_auth::MtlsAuth::build(config, &cpath, errs, catalog)
            .map(|p| Arc::new(p) as Arc<dyn Plugin>),
        "request-size-limiting" => {
            request_size_limiting::RequestSizeLimiting::build(config, &cpath, errs)
                .map(|p| Arc::new(p) as Arc<dyn Plugin>)
        }
        "request-transformer" => transformer::RequestTransformer::build(config, &cpath, errs)
            .map(|p| Arc::new(p) as Arc<dyn Plugin>),
        "response-transformer" => transformer::ResponseTransformer::build(config, &cpath, errs)
            .map(|p| Arc::new(p) as Arc<dyn Plugin>),
        "ip-restriction" => ip_restriction::IpRestriction::build(config, &cpath, errs)
            .map(|p| Arc::new(p) as Arc<dyn Plugin>),
        "bot-detection" => bot_detection::BotDetection::build(config, &cpath, errs)
            .map(|p| Arc::new(p) as Arc<dyn Plugin>),
        "cors" => cors::Cors::build(config, &cpath, errs).map(|p| Arc::new(p) as Arc<dyn Plugin>),
        "rate-limiting" => rate_limiting::RateLimiting::build(config, &cpath, scope, errs, catalog)
            .map(|p| Arc::new(p) as Arc<dyn Plugin>),
        #[cfg(feature = "waf")]
        "waf" => {
            crate::waf::Waf::build(config, &cpath, errs).map(|p| Arc::new(p) as Arc<dyn Plugin>)
        }
        #[cfg(not(feature = "waf"))]
        "waf" => {
            let _ = (config, cpath);
            errs.push(
                portcullis_config::reader::join(path, "name"),
                "plugin 'waf' is not available: this portcullis was built without the `waf` \
                 cargo feature (libmodsecurity); rebuild with default features",
            );
            None
        }
        "oas-validation" => oas_validation::OasValidation::build(config, &cpath, errs)
            .map(|p| Arc::new(p) as Arc<dyn Plugin>),
        "request-validator" => request_validator::RequestValidator::build(config, &cpath, errs)
            .map(|p| Arc::new(p) as Arc<dyn Plugin>),
        "request-termination" => {
            request_termination::RequestTermination::build(config, &cpath, errs)
                .map(|p| Arc::new(p) as Arc<dyn Plugin>)
        }
        _ => {
            errs.push(
                portcullis_config::reader::join(path, "name"),
                format!("plugin '{name}' not enabled; add it to 'plugins' configuration property"),
            );
            None
        }
    }
}

/// Checks a plugin config without keeping the instance (for `config validate` and reloads).
pub fn validate(name: &str, config: &Value, path: &str, errs: &mut Errors) {
    static EMPTY: std::sync::OnceLock<Arc<Catalog>> = std::sync::OnceLock::new();
    let catalog = EMPTY.get_or_init(|| Arc::new(Catalog::schema_only()));
    let _ = build_plugin(name, config, path, errs, catalog);
}
