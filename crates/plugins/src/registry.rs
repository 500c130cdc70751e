//! Builds plugin instances by name from their validated config, with Kong's priorities.

use std::sync::Arc;

use portcullis_config::Errors;
use serde_json::Value;

use crate::catalog::Catalog;
use crate::{
    acl, basic_auth, hmac_auth, jwt, key_auth, mtls_auth, request_size_limiting,
    request_termination, Plugin,
};

/// Plugin names this build knows, with Kong's execution priority (higher runs first).
const PLUGINS: &[(&str, i32)] = &[
    ("mtls-auth", 1600),
    ("jwt", 1450),
    ("key-auth", 1250),
    ("basic-auth", 1100),
    ("hmac-auth", 1030),
    // After authentication (so lockouts and 401s cost no rule evaluation), before everything
    // that acts on the request; Kong EE's injection-protection uses the same priority.
    ("waf", 1007),
    ("request-size-limiting", 951),
    ("acl", 950),
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

/// Validates `config` against the plugin's schema and builds an instance. Errors are recorded
/// under `path` (the plugin's path in the file, e.g. `services[0].plugins[1]`).
pub fn build_plugin(
    name: &str,
    config: &Value,
    path: &str,
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
        "acl" => {
            acl::Acl::build(config, &cpath, errs, catalog).map(|p| Arc::new(p) as Arc<dyn Plugin>)
        }
        "mtls-auth" => mtls_auth::MtlsAuth::build(config, &cpath, errs, catalog)
            .map(|p| Arc::new(p) as Arc<dyn Plugin>),
        "request-size-limiting" => {
            request_size_limiting::RequestSizeLimiting::build(config, &cpath, errs)
                .map(|p| Arc::new(p) as Arc<dyn Plugin>)
        }
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
