//! Reading the `openid-connect` config: Kong Enterprise's field names and defaults, every error
//! with its path, unknown fields refused, Kong fields this build does not implement accepted
//! only when null, empty or at Kong's default (a decK dump carries every field) and refused
//! with a reason otherwise.

use std::net::IpAddr;

use portcullis_config::{Errors, Obj};
use reqwest::Url;
use serde_json::Value;

use crate::auth::Anonymous;
use crate::catalog::Catalog;

/// How the plugin authenticates a request (Kong's `auth_methods` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Password,
    ClientCredentials,
    AuthorizationCode,
    Bearer,
    Introspection,
    Session,
}

const METHODS: &[(&str, Method)] = &[
    ("password", Method::Password),
    ("client_credentials", Method::ClientCredentials),
    ("authorization_code", Method::AuthorizationCode),
    ("bearer", Method::Bearer),
    ("introspection", Method::Introspection),
    ("session", Method::Session),
];

/// Kong `auth_methods` values this build does not implement.
const UNSUPPORTED_METHODS: &[&str] = &["userinfo", "kong_oauth2", "refresh_token"];

/// Where a credential may come from (Kong's `*_param_type` values).
#[derive(Debug, Clone, Default)]
pub struct ParamTypes {
    pub header: bool,
    pub query: bool,
    pub cookie: bool,
}

/// How the gateway authenticates itself to the provider's token and introspection endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    Basic,
    Post,
}

/// `SameSite` attribute of the cookies the plugin sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    Strict,
    Lax,
    None,
    Default,
}

/// The validated config. Not `Debug`: it holds the client secret and session secret.
pub struct Conf {
    pub issuer: Url,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub client_auth: ClientAuth,
    pub auth_methods: Vec<Method>,
    pub scopes: Vec<String>,
    pub redirect_uri: Option<Url>,
    pub login_redirect_uri: Option<String>,
    pub logout_redirect_uri: Option<String>,
    pub logout_uri_suffix: Option<String>,
    pub logout_methods: Vec<http::Method>,
    pub logout_query_arg: Option<String>,
    pub session_secret: Option<String>,
    pub session_cookie_name: String,
    pub session_cookie_path: String,
    pub session_cookie_domain: Option<String>,
    pub session_cookie_same_site: SameSite,
    pub session_cookie_http_only: bool,
    pub session_cookie_secure: Option<bool>,
    pub session_rolling_timeout: i64,
    pub session_absolute_timeout: i64,
    pub authorization_cookie_name: String,
    pub authorization_rolling_timeout: i64,
    pub refresh_tokens: bool,
    pub bearer_token_param_type: ParamTypes,
    pub bearer_token_cookie_name: Option<String>,
    pub client_credentials_param_type: ParamTypes,
    pub password_param_type: ParamTypes,
    pub introspection_endpoint: Option<Url>,
    pub introspection_hint: String,
    pub introspection_check_active: bool,
    pub introspect_jwt_tokens: bool,
    pub cache_introspection: bool,
    pub cache_tokens: bool,
    pub cache_ttl: i64,
    pub token_endpoint: Option<Url>,
    pub authorization_endpoint: Option<Url>,
    pub end_session_endpoint: Option<Url>,
    pub audience_required: Vec<String>,
    pub audience_claim: Vec<String>,
    pub scopes_required: Vec<String>,
    pub scopes_claim: Vec<String>,
    pub groups_required: Vec<String>,
    pub groups_claim: Vec<String>,
    pub roles_required: Vec<String>,
    pub roles_claim: Vec<String>,
    pub consumer_claim: Vec<String>,
    pub consumer_by: Vec<String>,
    pub consumer_optional: bool,
    pub by_username_ignore_case: bool,
    pub credential_claim: Vec<String>,
    pub anonymous: Anonymous,
    pub run_on_preflight: bool,
    pub leeway: i64,
    pub rediscovery_lifetime: i64,
    pub timeout_ms: u64,
    pub hide_credentials: bool,
    pub upstream_access_token_header: Option<(String, bool)>,
    pub upstream_id_token_header: Option<String>,
    pub upstream_headers_claims: Vec<String>,
    pub upstream_headers_names: Vec<String>,
    pub unauthorized_error_message: String,
    pub forbidden_error_message: String,
    pub ca_certificates_pem: Vec<String>,
}

/// Kong's defaults for the fields in [`UNSUPPORTED`] that have one (Kong 3.4 and 3.10
/// schemas; a field whose default changed has both), as JSON: a decK dump writes them out,
/// and a field at its default asks for nothing this plugin lacks.
const KONG_DEFAULTS: &[(&str, &str)] = &[
    ("cache_token_exchange", r#"true"#),
    ("cache_user_info", r#"true"#),
    ("client_arg", r#""client_id""#),
    (
        "cluster_cache_redis",
        r#"{"cluster_max_redirections":5,"connect_timeout":2000,"connection_is_proxied":false,"database":0,"host":"127.0.0.1","keepalive_pool_size":256,"port":6379,"read_timeout":2000,"send_timeout":2000,"ssl":false,"ssl_verify":false}"#,
    ),
    ("cluster_cache_strategy", r#""off""#),
    ("dpop_proof_lifetime", r#"300"#),
    ("dpop_use_nonce", r#"false"#),
    ("id_token_param_type", r#"["body","header","query"]"#),
    ("introspection_accept", r#""application/json""#),
    ("jwt_session_claim", r#""sid""#),
    ("login_redirect_mode", r#""fragment""#),
    ("login_tokens", r#"["id_token"]"#),
    ("proof_of_possession_auth_methods_validation", r#"true"#),
    ("proof_of_possession_dpop", r#""off""#),
    ("proof_of_possession_mtls", r#""off""#),
    (
        "redis",
        r#"{"cluster_max_redirections":5,"connect_timeout":2000,"connection_is_proxied":false,"database":0,"host":"127.0.0.1","keepalive_pool_size":256,"port":6379,"read_timeout":2000,"send_timeout":2000,"ssl":false,"ssl_verify":false}"#,
    ),
    ("refresh_token_param_type", r#"["body","header","query"]"#),
    ("resolve_distributed_claims", r#"false"#),
    ("search_user_info", r#"false"#),
    ("session_audience", r#""default""#),
    ("session_enforce_same_subject", r#"false"#),
    ("session_hash_storage_key", r#"false"#),
    ("session_hash_subject", r#"false"#),
    ("session_memcached_host", r#""127.0.0.1""#),
    ("session_memcached_port", r#"11211"#),
    ("session_redis_host", r#""127.0.0.1""#),
    ("session_redis_port", r#"6379"#),
    ("session_redis_ssl", r#"false"#),
    ("session_redis_ssl_verify", r#"false"#),
    ("session_remember", r#"false"#),
    ("session_remember_absolute_timeout", r#"2592000"#),
    ("session_remember_cookie_name", r#""remember""#),
    ("session_remember_rolling_timeout", r#"604800"#),
    ("session_store_metadata", r#"false"#),
    ("tls_client_auth_ssl_verify", r#"true"#),
    ("token_cache_key_include_scope", r#"false"#),
    ("unauthorized_destroy_session", r#"true"#),
    ("userinfo_accept", r#""application/json""#),
    ("using_pseudo_issuer", r#"false"#),
];

/// Is `v` (not null) what Kong would have without the field: empty, or its default? Records
/// compare field by field, a null field counting as its default.
fn at_kong_default(key: &str, v: &Value) -> bool {
    fn same(v: &Value, d: &Value) -> bool {
        match (v, d) {
            (Value::Null, _) => true,
            (Value::Array(a), _) if a.is_empty() => d.is_null() || d == &Value::Array(Vec::new()),
            (Value::Object(m), Value::Object(dm)) => m
                .iter()
                .all(|(k, x)| same(x, dm.get(k).unwrap_or(&Value::Null))),
            (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
            _ => v == d,
        }
    }
    match v {
        Value::Array(a) if a.is_empty() => true,
        Value::Object(m) if m.is_empty() => true,
        _ => KONG_DEFAULTS
            .iter()
            .any(|(k, d)| *k == key && serde_json::from_str::<Value>(d).is_ok_and(|d| same(v, &d))),
    }
}

/// Kong fields this build does not implement: accepted when null, empty or at Kong's default
/// ([`KONG_DEFAULTS`]), refused otherwise.
const UNSUPPORTED: &[&str] = &[
    "audience",
    "authenticated_groups_claim",
    "authorization_cookie_domain",
    "authorization_query_args_client",
    "authorization_query_args_names",
    "authorization_query_args_values",
    "bearer_token_param_name",
    "cache_token_exchange",
    "cache_tokens_salt",
    "cache_ttl_max",
    "cache_ttl_min",
    "cache_ttl_neg",
    "cache_ttl_resurrect",
    "cache_user_info",
    "claims_forbidden",
    "client_alg",
    "client_arg",
    "client_jwk",
    "cluster_cache_redis",
    "cluster_cache_strategy",
    "discovery_headers_names",
    "discovery_headers_values",
    "disable_session",
    "domains",
    "downstream_access_token_header",
    "downstream_access_token_jwk_header",
    "downstream_headers_claims",
    "downstream_headers_names",
    "downstream_id_token_header",
    "downstream_id_token_jwk_header",
    "downstream_introspection_header",
    "downstream_introspection_jwt_header",
    "downstream_refresh_token_header",
    "downstream_session_id_header",
    "downstream_user_info_header",
    "downstream_user_info_jwt_header",
    "dpop_proof_lifetime",
    "dpop_use_nonce",
    "error_redirect_uri",
    "extra_jwks_uris",
    "forbidden_redirect_uri",
    "http_proxy",
    "http_proxy_authorization",
    "https_proxy",
    "https_proxy_authorization",
    "id_token_param_name",
    "id_token_param_type",
    "ignore_signature",
    "introspection_accept",
    "introspection_headers_client",
    "introspection_headers_names",
    "introspection_headers_values",
    "introspection_post_args_client",
    "introspection_post_args_names",
    "introspection_post_args_values",
    "issuers_allowed",
    "jwt_session_claim",
    "jwt_session_cookie",
    "login_redirect_mode",
    "login_tokens",
    "logout_post_arg",
    "max_age",
    "mtls_introspection_endpoint",
    "mtls_revocation_endpoint",
    "mtls_token_endpoint",
    "no_proxy",
    "proof_of_possession_auth_methods_validation",
    "proof_of_possession_dpop",
    "proof_of_possession_mtls",
    "pushed_authorization_request_endpoint",
    "pushed_authorization_request_endpoint_auth_method",
    "redis",
    "refresh_token_param_name",
    "refresh_token_param_type",
    "require_pushed_authorization_requests",
    "require_signed_request_object",
    "resolve_distributed_claims",
    "revocation_endpoint",
    "revocation_endpoint_auth_method",
    "search_user_info",
    "session_audience",
    "session_compressor",
    "session_enforce_same_subject",
    "session_hash_storage_key",
    "session_hash_subject",
    "session_memcached_host",
    "session_memcached_port",
    "session_memcached_prefix",
    "session_memcached_socket",
    "session_redis_cluster_max_redirections",
    "session_redis_cluster_nodes",
    "session_redis_connect_timeout",
    "session_redis_host",
    "session_redis_password",
    "session_redis_port",
    "session_redis_prefix",
    "session_redis_read_timeout",
    "session_redis_send_timeout",
    "session_redis_server_name",
    "session_redis_socket",
    "session_redis_ssl",
    "session_redis_ssl_verify",
    "session_redis_username",
    "session_remember",
    "session_remember_absolute_timeout",
    "session_remember_cookie_name",
    "session_remember_rolling_timeout",
    "session_request_headers",
    "session_response_headers",
    "session_store_metadata",
    "tls_client_auth_cert_id",
    "tls_client_auth_ssl_verify",
    "token_cache_key_include_scope",
    "token_exchange_endpoint",
    "token_headers_client",
    "token_headers_grants",
    "token_headers_names",
    "token_headers_prefix",
    "token_headers_replay",
    "token_headers_values",
    "token_post_args_client",
    "token_post_args_names",
    "token_post_args_values",
    "unauthorized_destroy_session",
    "unauthorized_redirect_uri",
    "unexpected_redirect_uri",
    "upstream_access_token_jwk_header",
    "upstream_introspection_header",
    "upstream_introspection_jwt_header",
    "upstream_refresh_token_header",
    "upstream_session_id_header",
    "upstream_user_info_header",
    "upstream_user_info_jwt_header",
    "userinfo_accept",
    "userinfo_endpoint",
    "userinfo_headers_client",
    "userinfo_headers_names",
    "userinfo_headers_values",
    "userinfo_query_args_client",
    "userinfo_query_args_names",
    "userinfo_query_args_values",
    "using_pseudo_issuer",
];

/// True for hosts that never leave the machine: 127.0.0.0/8, ::1 and `localhost`.
pub fn is_loopback_host(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// A provider URL: https, or plain http only to a loopback host.
pub fn check_provider_url(raw: &str) -> Result<Url, String> {
    let url = Url::parse(raw).map_err(|_| "expected an absolute URL".to_string())?;
    if url.cannot_be_a_base() || url.host().is_none() {
        return Err("expected an absolute URL with a host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("credentials in the URL are not allowed".into());
    }
    match url.scheme() {
        "https" => Ok(url),
        "http" if is_loopback_host(&url) => Ok(url),
        "http" => Err(
            "plain http is only allowed for a loopback provider (127.0.0.1, ::1, localhost); use https"
                .into(),
        ),
        _ => Err("expected an http(s) URL".into()),
    }
}

/// Kong allows a string or an array of strings for the client fields; the first one is used.
fn first_str(o: &mut Obj<'_>, key: &str, errs: &mut Errors) -> Option<String> {
    match o.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Array(items) => {
            if items.len() > 1 {
                errs.push(
                    o.field_path(key),
                    "only one value is supported (Kong's client_arg selection is not)",
                );
            }
            match items.first() {
                Some(Value::String(s)) => Some(s.clone()),
                Some(_) => {
                    errs.push(format!("{}[0]", o.field_path(key)), "expected a string");
                    None
                }
                None => None,
            }
        }
        _ => {
            errs.push(
                o.field_path(key),
                "expected a string or an array of strings",
            );
            None
        }
    }
}

fn list_or(o: &mut Obj<'_>, key: &str, default: &[&str], errs: &mut Errors) -> Vec<String> {
    if o.has(key) {
        o.str_array(key, errs)
    } else {
        let _ = o.get(key);
        default.iter().map(|s| s.to_string()).collect()
    }
}

fn param_types(o: &mut Obj<'_>, key: &str, errs: &mut Errors, cookie_ok: bool) -> ParamTypes {
    let mut p = ParamTypes::default();
    for (i, v) in list_or(o, key, &["header", "query", "body"], errs)
        .iter()
        .enumerate()
    {
        match v.as_str() {
            "header" => p.header = true,
            "query" => p.query = true,
            // The access phase has no request body: body credentials are never read.
            "body" => {}
            "cookie" if cookie_ok => p.cookie = true,
            _ => errs.push(
                format!("{}[{i}]", o.field_path(key)),
                if cookie_ok {
                    "expected one of: header, cookie, query, body"
                } else {
                    "expected one of: header, query, body"
                },
            ),
        }
    }
    p
}

fn endpoint(o: &mut Obj<'_>, key: &str, errs: &mut Errors) -> Option<Url> {
    let raw = o.opt_str(key, errs)?;
    match check_provider_url(&raw) {
        Ok(u) => Some(u),
        Err(e) => {
            errs.push(o.field_path(key), e);
            None
        }
    }
}

fn same_site(o: &mut Obj<'_>, key: &str, default: &str, errs: &mut Errors) -> SameSite {
    match o
        .one_of(key, default, &["Strict", "Lax", "None", "Default"], errs)
        .as_str()
    {
        "Strict" => SameSite::Strict,
        "None" => SameSite::None,
        "Default" => SameSite::Default,
        _ => SameSite::Lax,
    }
}

/// Fields that must keep their (safe) value: anything else is refused.
fn must_be(o: &mut Obj<'_>, key: &str, want: bool, why: &str, errs: &mut Errors) {
    if let Some(v) = o.opt_bool(key, errs) {
        if v != want {
            errs.push(o.field_path(key), why.to_string());
        }
    }
}

impl Conf {
    /// Reads and checks the config; `None` when any error was recorded.
    pub fn read(config: &Value, path: &str, errs: &mut Errors, catalog: &Catalog) -> Option<Conf> {
        let before = errs.len();
        let mut o = Obj::open(config, path, errs)?;

        let issuer = match o.req_str("issuer", errs) {
            Some(raw) => match check_provider_url(&raw) {
                Ok(u) => Some(u),
                Err(e) => {
                    errs.push(o.field_path("issuer"), e);
                    None
                }
            },
            None => None,
        };
        let client_id = first_str(&mut o, "client_id", errs);
        let client_secret = first_str(&mut o, "client_secret", errs);
        let client_auth = match o.get("client_auth") {
            None => ClientAuth::Basic,
            Some(v) => match v
                .as_array()
                .and_then(|a| a.first())
                .or(Some(v))
                .and_then(Value::as_str)
            {
                Some("client_secret_basic") => ClientAuth::Basic,
                Some("client_secret_post") => ClientAuth::Post,
                _ => {
                    errs.push(
                        o.field_path("client_auth"),
                        "expected one of: client_secret_basic, client_secret_post",
                    );
                    ClientAuth::Basic
                }
            },
        };
        for key in [
            "token_endpoint_auth_method",
            "introspection_endpoint_auth_method",
        ] {
            if let Some(v) = o.opt_str(key, errs) {
                if v != "client_secret_basic" && v != "client_secret_post" {
                    errs.push(
                        o.field_path(key),
                        "expected one of: client_secret_basic, client_secret_post",
                    );
                }
            }
        }

        let methods_raw = list_or(
            &mut o,
            "auth_methods",
            &[
                "password",
                "client_credentials",
                "authorization_code",
                "bearer",
                "introspection",
                "session",
            ],
            errs,
        );
        let mut auth_methods = Vec::new();
        for (i, m) in methods_raw.iter().enumerate() {
            let p = format!("{}[{i}]", o.field_path("auth_methods"));
            if let Some((_, method)) = METHODS.iter().find(|(n, _)| n == m) {
                if !auth_methods.contains(method) {
                    auth_methods.push(*method);
                }
            } else if UNSUPPORTED_METHODS.contains(&m.as_str()) {
                errs.push(
                    p,
                    format!("auth method '{m}' is not supported by portcullis"),
                );
            } else {
                errs.push(
                    p,
                    "expected one of: password, client_credentials, authorization_code, bearer, introspection, session",
                );
            }
        }
        if auth_methods.is_empty() && errs.len() == before {
            errs.push(
                o.field_path("auth_methods"),
                "at least one method is required",
            );
        }

        let scopes = list_or(&mut o, "scopes", &["openid"], errs);
        let redirect_uri = match o.get("redirect_uri") {
            None => None,
            Some(_) => {
                let list = o.str_array("redirect_uri", errs);
                match list.first().map(|r| Url::parse(r)) {
                    Some(Ok(u)) if matches!(u.scheme(), "http" | "https") => Some(u),
                    Some(_) => {
                        errs.push(
                            format!("{}[0]", o.field_path("redirect_uri")),
                            "expected an absolute http(s) URL",
                        );
                        None
                    }
                    None => None,
                }
            }
        };
        let login_redirect_uri = o.str_array("login_redirect_uri", errs).into_iter().next();
        let logout_redirect_uri = o.str_array("logout_redirect_uri", errs).into_iter().next();
        let logout_uri_suffix = o.opt_str("logout_uri_suffix", errs);
        let mut logout_methods = Vec::new();
        for (i, m) in list_or(&mut o, "logout_methods", &["POST", "DELETE"], errs)
            .iter()
            .enumerate()
        {
            match m.as_str() {
                "GET" => logout_methods.push(http::Method::GET),
                "POST" => logout_methods.push(http::Method::POST),
                "DELETE" => logout_methods.push(http::Method::DELETE),
                _ => errs.push(
                    format!("{}[{i}]", o.field_path("logout_methods")),
                    "expected one of: GET, POST, DELETE",
                ),
            }
        }
        let logout_query_arg = o.opt_str("logout_query_arg", errs);
        must_be(
            &mut o,
            "logout_revoke",
            false,
            "token revocation at logout is not supported by portcullis",
            errs,
        );
        o.accept(&["logout_revoke_access_token", "logout_revoke_refresh_token"]);

        let session_secret = o.opt_str("session_secret", errs);
        if let Some(s) = &session_secret {
            if s.len() < 32 {
                errs.push(
                    o.field_path("session_secret"),
                    "must be at least 32 characters (use a {vault://env/...} reference)",
                );
            }
        }
        let session_cookie_name = o
            .opt_str("session_cookie_name", errs)
            .unwrap_or_else(|| "session".into());
        let session_cookie_path = o
            .opt_str("session_cookie_path", errs)
            .unwrap_or_else(|| "/".into());
        let session_cookie_domain = o.opt_str("session_cookie_domain", errs);
        let session_cookie_same_site = same_site(&mut o, "session_cookie_same_site", "Lax", errs);
        let session_cookie_http_only = o.bool_or("session_cookie_http_only", true, errs);
        let session_cookie_secure = o.opt_bool("session_cookie_secure", errs);
        let session_rolling_timeout =
            o.int_or("session_rolling_timeout", 3600, 0, 31_536_000, errs);
        // Kong ends a session left idle this long (default 15 minutes). Sessions here carry
        // one renewal time, so the idle limit becomes the rolling limit when it is shorter: an
        // idle session lapses after it, an active one is renewed at half of it.
        let session_idling_timeout = o.int_or("session_idling_timeout", 900, 0, 31_536_000, errs);
        let session_rolling_timeout = match (session_idling_timeout, session_rolling_timeout) {
            (0, r) => r,
            (i, 0) => i,
            (i, r) => i.min(r),
        };
        let session_absolute_timeout =
            o.int_or("session_absolute_timeout", 86400, 0, 31_536_000, errs);
        let authorization_cookie_name = o
            .opt_str("authorization_cookie_name", errs)
            .unwrap_or_else(|| "authorization".into());
        let _ = o.opt_str("authorization_cookie_path", errs);
        let _ = same_site(&mut o, "authorization_cookie_same_site", "Default", errs);
        let _ = o.opt_bool("authorization_cookie_http_only", errs);
        let _ = o.opt_bool("authorization_cookie_secure", errs);
        let authorization_rolling_timeout =
            o.int_or("authorization_rolling_timeout", 600, 1, 86_400, errs);
        for (key, name) in [
            ("session_cookie_name", &session_cookie_name),
            ("authorization_cookie_name", &authorization_cookie_name),
        ] {
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            {
                errs.push(
                    o.field_path(key),
                    "cookie names may use letters, digits, '-', '_' and '.'",
                );
            }
        }
        let _ = o.opt_str("session_storage", errs).map(|s| {
            if s != "cookie" {
                errs.push(
                    o.field_path("session_storage"),
                    "only 'cookie' session storage is supported",
                );
            }
        });
        let refresh_tokens = o.bool_or("refresh_tokens", true, errs);

        let bearer_token_param_type = param_types(&mut o, "bearer_token_param_type", errs, true);
        let bearer_token_cookie_name = o.opt_str("bearer_token_cookie_name", errs);
        let client_credentials_param_type =
            param_types(&mut o, "client_credentials_param_type", errs, false);
        let password_param_type = param_types(&mut o, "password_param_type", errs, false);

        let introspection_endpoint = endpoint(&mut o, "introspection_endpoint", errs);
        let introspection_hint = o
            .opt_str("introspection_hint", errs)
            .unwrap_or_else(|| "access_token".into());
        let introspection_check_active = o.bool_or("introspection_check_active", true, errs);
        let introspect_jwt_tokens = o.bool_or("introspect_jwt_tokens", false, errs);
        let cache_introspection = o.bool_or("cache_introspection", true, errs);
        let cache_tokens = o.bool_or("cache_tokens", true, errs);
        let cache_ttl = o.int_or("cache_ttl", 3600, 0, 31_536_000, errs);
        let token_endpoint = endpoint(&mut o, "token_endpoint", errs);
        let authorization_endpoint = endpoint(&mut o, "authorization_endpoint", errs);
        let end_session_endpoint = endpoint(&mut o, "end_session_endpoint", errs);

        let audience_required = o.str_array("audience_required", errs);
        let audience_claim = list_or(&mut o, "audience_claim", &["aud"], errs);
        let scopes_required = o.str_array("scopes_required", errs);
        let scopes_claim = list_or(&mut o, "scopes_claim", &["scope"], errs);
        let groups_required = o.str_array("groups_required", errs);
        let groups_claim = list_or(&mut o, "groups_claim", &["groups"], errs);
        let roles_required = o.str_array("roles_required", errs);
        let roles_claim = list_or(&mut o, "roles_claim", &["roles"], errs);
        let consumer_claim = o.str_array("consumer_claim", errs);
        let consumer_by = list_or(&mut o, "consumer_by", &["username", "custom_id"], errs);
        for (i, b) in consumer_by.iter().enumerate() {
            if !matches!(b.as_str(), "id" | "username" | "custom_id") {
                errs.push(
                    format!("{}[{i}]", o.field_path("consumer_by")),
                    "expected one of: id, username, custom_id",
                );
            }
        }
        let consumer_optional = o.bool_or("consumer_optional", false, errs);
        let by_username_ignore_case = o.bool_or("by_username_ignore_case", false, errs);
        let credential_claim = list_or(&mut o, "credential_claim", &["sub"], errs);
        let anonymous = Anonymous::read(&mut o, catalog, errs);
        let run_on_preflight = o.bool_or("run_on_preflight", true, errs);
        let leeway = o.int_or("leeway", 0, 0, 300, errs);
        let rediscovery_lifetime = o.int_or("rediscovery_lifetime", 30, 1, 86_400, errs);
        let timeout_ms = o.int_or("timeout", 10_000, 1, 300_000, errs) as u64;
        let hide_credentials = o.bool_or("hide_credentials", false, errs);

        // Absent: Kong's default `authorization:bearer`; explicit null: the token is not sent.
        let upstream_access_token_header = match config.get("upstream_access_token_header") {
            None => {
                let _ = o.get("upstream_access_token_header");
                Some(("authorization".to_string(), true))
            }
            Some(_) => match o.opt_str("upstream_access_token_header", errs) {
                None => None,
                Some(s) => match header_spec(&s) {
                    Some(h) => Some(h),
                    None => {
                        errs.push(
                            o.field_path("upstream_access_token_header"),
                            "expected a header name, optionally followed by ':bearer'",
                        );
                        None
                    }
                },
            },
        };
        let upstream_id_token_header = o.opt_str("upstream_id_token_header", errs);
        let upstream_headers_claims = o.str_array("upstream_headers_claims", errs);
        let upstream_headers_names = o.str_array("upstream_headers_names", errs);
        if upstream_headers_claims.len() != upstream_headers_names.len() {
            errs.push(
                o.field_path("upstream_headers_names"),
                "must have as many entries as upstream_headers_claims",
            );
        }
        for (i, n) in upstream_headers_names.iter().enumerate() {
            if http::HeaderName::from_bytes(n.as_bytes()).is_err() {
                errs.push(
                    format!("{}[{i}]", o.field_path("upstream_headers_names")),
                    "invalid header name",
                );
            }
        }
        if let Some(h) = &upstream_id_token_header {
            if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                errs.push(
                    o.field_path("upstream_id_token_header"),
                    "invalid header name",
                );
            }
        }
        let unauthorized_error_message = o
            .opt_str("unauthorized_error_message", errs)
            .unwrap_or_else(|| "Unauthorized".into());
        let forbidden_error_message = o
            .opt_str("forbidden_error_message", errs)
            .unwrap_or_else(|| "Forbidden".into());
        let ca_certificates_pem = o.str_array("ca_certificates_pem", errs);
        for (i, pem) in ca_certificates_pem.iter().enumerate() {
            if super::provider::parse_pem_certs(pem).is_err() {
                errs.push(
                    format!("{}[{i}]", o.field_path("ca_certificates_pem")),
                    "expected one or more PEM certificates",
                );
            }
        }

        // Safety switches: Kong's defaults are the only accepted values.
        must_be(
            &mut o,
            "verify_signature",
            true,
            "signature verification cannot be turned off",
            errs,
        );
        must_be(
            &mut o,
            "verify_claims",
            true,
            "claim verification cannot be turned off",
            errs,
        );
        must_be(
            &mut o,
            "verify_nonce",
            true,
            "nonce verification cannot be turned off",
            errs,
        );
        must_be(
            &mut o,
            "enable_hs_signatures",
            false,
            "HS* signatures are not accepted (shared-secret tokens are forgeable by every holder)",
            errs,
        );
        must_be(
            &mut o,
            "display_errors",
            false,
            "provider error details are never sent to clients",
            errs,
        );
        // Kong's `ssl_verify` default is false; portcullis always verifies TLS, so any value
        // is accepted and has no effect.
        let _ = o.opt_bool("ssl_verify", errs);
        let _ = o.opt_bool("verify_parameters", errs);
        let _ = o.opt_bool("require_proof_key_for_code_exchange", errs);
        let _ = o.opt_bool("preserve_query_args", errs);
        let _ = o.opt_bool("reverify", errs);
        let _ = o.opt_bool("cache_user_info", errs);
        let _ = o.opt_bool("keepalive", errs);
        let _ = o.opt_f64("http_version", errs);
        if let Some(m) = o.opt_str("response_mode", errs) {
            if m != "query" {
                errs.push(
                    o.field_path("response_mode"),
                    "only 'query' is supported (the access phase does not read request bodies)",
                );
            }
        }
        let rt = o.str_array("response_type", errs);
        if !rt.is_empty() && rt != ["code"] {
            errs.push(o.field_path("response_type"), "only [code] is supported");
        }
        if let Some(a) = o.opt_str("login_action", errs) {
            if a != "upstream" && a != "redirect" {
                errs.push(
                    o.field_path("login_action"),
                    "expected one of: upstream, redirect (after login the browser is redirected)",
                );
            }
        }
        for key in UNSUPPORTED {
            // Null, empty, or Kong's own default (as decK dumps write them): nothing asked.
            if o.get(key).is_some_and(|v| !at_kong_default(key, v)) {
                errs.push(o.field_path(key), "not supported by portcullis");
            }
        }
        o.finish(errs);

        let uses_client = auth_methods.iter().any(|m| {
            matches!(
                m,
                Method::Password | Method::AuthorizationCode | Method::Introspection
            )
        });
        if uses_client && (client_id.is_none() || client_secret.is_none()) && errs.len() == before {
            errs.push(
                format!("{path}.client_id"),
                "client_id and client_secret are required for the password, authorization_code and introspection methods",
            );
        }

        if errs.len() > before {
            return None;
        }
        Some(Conf {
            issuer: issuer?,
            client_id,
            client_secret,
            client_auth,
            auth_methods,
            scopes,
            redirect_uri,
            login_redirect_uri,
            logout_redirect_uri,
            logout_uri_suffix,
            logout_methods,
            logout_query_arg,
            session_secret,
            session_cookie_name,
            session_cookie_path,
            session_cookie_domain,
            session_cookie_same_site,
            session_cookie_http_only,
            session_cookie_secure,
            session_rolling_timeout,
            session_absolute_timeout,
            authorization_cookie_name,
            authorization_rolling_timeout,
            refresh_tokens,
            bearer_token_param_type,
            bearer_token_cookie_name,
            client_credentials_param_type,
            password_param_type,
            introspection_endpoint,
            introspection_hint,
            introspection_check_active,
            introspect_jwt_tokens,
            cache_introspection,
            cache_tokens,
            cache_ttl,
            token_endpoint,
            authorization_endpoint,
            end_session_endpoint,
            audience_required,
            audience_claim,
            scopes_required,
            scopes_claim,
            groups_required,
            groups_claim,
            roles_required,
            roles_claim,
            consumer_claim,
            consumer_by,
            consumer_optional,
            by_username_ignore_case,
            credential_claim,
            anonymous,
            run_on_preflight,
            leeway,
            rediscovery_lifetime,
            timeout_ms,
            hide_credentials,
            upstream_access_token_header,
            upstream_id_token_header,
            upstream_headers_claims,
            upstream_headers_names,
            unauthorized_error_message,
            forbidden_error_message,
            ca_certificates_pem,
        })
    }

    /// Is this auth method enabled?
    pub fn has(&self, m: Method) -> bool {
        self.auth_methods.contains(&m)
    }
}

/// Kong's `name:bearer` header spec: the header name, and whether to prefix `Bearer `.
fn header_spec(s: &str) -> Option<(String, bool)> {
    let (name, bearer) = match s.split_once(':') {
        Some((n, t)) if t.trim().eq_ignore_ascii_case("bearer") => (n.trim(), true),
        Some(_) => return None,
        None => (s.trim(), false),
    };
    http::HeaderName::from_bytes(name.as_bytes()).ok()?;
    Some((name.to_ascii_lowercase(), bearer))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn read(v: Value) -> (Option<Conf>, Vec<String>) {
        let mut errs = Errors::default();
        let c = Conf::read(&v, "p.config", &mut errs, &Catalog::schema_only());
        (c, errs.into_vec().iter().map(|e| e.to_string()).collect())
    }

    #[test]
    fn issuer_must_be_https_or_loopback_http() {
        for ok in [
            "https://idp.example.com",
            "http://127.0.0.1:8080/realms/x",
            "http://127.9.9.9",
            "http://[::1]:9000",
            "http://localhost:1",
        ] {
            let (c, e) = read(json!({"issuer": ok, "auth_methods": ["bearer"]}));
            assert!(c.is_some(), "{ok}: {e:?}");
        }
        for bad in [
            "http://idp.example.com",
            "http://10.0.0.1",
            "http://localhost.evil.com",
            "ftp://127.0.0.1",
            "https://user:pw@idp.example.com",
            "not a url",
        ] {
            let (c, e) = read(json!({"issuer": bad, "auth_methods": ["bearer"]}));
            assert!(c.is_none(), "{bad}");
            assert!(e[0].starts_with("p.config.issuer: "), "{e:?}");
        }
        let (_, e) = read(json!({"auth_methods": ["bearer"]}));
        assert_eq!(e, vec!["p.config.issuer: required field missing"]);
    }

    #[test]
    fn kong_fields_nulls_and_refusals() {
        // A decK-style dump: unsupported Kong fields present but null are fine.
        let (c, e) = read(json!({
            "issuer": "https://idp.example.com",
            "client_id": ["a"], "client_secret": ["b"],
            "auth_methods": ["bearer", "introspection"],
            "extra_jwks_uris": null, "session_redis_host": null, "ssl_verify": false,
            "upstream_access_token_header": "x-token",
        }));
        assert!(c.is_some(), "{e:?}");
        let c = c.unwrap();
        assert_eq!(
            c.upstream_access_token_header,
            Some(("x-token".to_string(), false))
        );
        let (_, e) = read(json!({
            "issuer": "https://idp.example.com",
            "auth_methods": ["bearer", "kong_oauth2", "nope"],
            "extra_jwks_uris": ["https://x"],
            "enable_hs_signatures": true,
            "bogus": 1,
            "upstream_headers_claims": ["sub"],
        }));
        let want = [
            "p.config.auth_methods[1]: auth method 'kong_oauth2' is not supported by portcullis",
            "p.config.auth_methods[2]: expected one of",
            "p.config.extra_jwks_uris: not supported by portcullis",
            "p.config.enable_hs_signatures: HS* signatures are not accepted",
            "p.config.bogus: unknown field",
            "p.config.upstream_headers_names: must have as many entries",
        ];
        for w in want {
            assert!(e.iter().any(|m| m.starts_with(w)), "missing {w}: {e:?}");
        }
        // Kong's own defaults, as a decK dump writes every field out, ask for nothing this
        // plugin lacks; a value other than the default is still refused.
        let (c, e) = read(json!({
            "issuer": "https://idp.example.com",
            "auth_methods": ["bearer"],
            "client_arg": "client_id", "jwt_session_claim": "sid",
            "session_idling_timeout": 900, "login_tokens": ["id_token"],
            "id_token_param_type": ["body", "header", "query"],
            "proof_of_possession_dpop": "off", "domains": [], "extra_jwks_uris": [],
            "redis": {"host": "127.0.0.1", "port": 6379, "password": null, "ssl": false,
                      "cluster_nodes": null, "cluster_max_redirections": 5},
        }));
        assert!(c.is_some(), "{e:?}");
        let (_, e) = read(json!({
            "issuer": "https://idp.example.com",
            "auth_methods": ["bearer"],
            "jwt_session_claim": "jti",
            "redis": {"host": "10.0.0.5"}, "login_tokens": ["id_token", "access_token"],
        }));
        for key in ["jwt_session_claim", "redis", "login_tokens"] {
            let w = format!("p.config.{key}: not supported by portcullis");
            assert!(e.contains(&w), "missing {w}: {e:?}");
        }
        // Kong's idle limit (default 900 s) bounds the session's rolling limit.
        let base = json!({"issuer": "https://idp.example.com", "auth_methods": ["bearer"]});
        let rolling = |extra: serde_json::Value| {
            let mut v = base.clone();
            v.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            read(v).0.unwrap().session_rolling_timeout
        };
        assert_eq!(rolling(json!({})), 900);
        assert_eq!(rolling(json!({"session_idling_timeout": 60})), 60);
        assert_eq!(rolling(json!({"session_idling_timeout": 0})), 3600);
        assert_eq!(
            rolling(json!({"session_idling_timeout": 7200, "session_rolling_timeout": 1800})),
            1800
        );
        assert_eq!(
            rolling(json!({"session_idling_timeout": 600, "session_rolling_timeout": 0})),
            600
        );
        // Methods that call the provider as the gateway need its client.
        let (_, e) =
            read(json!({"issuer": "https://idp.example.com", "auth_methods": ["password"]}));
        assert!(e[0].starts_with("p.config.client_id: "), "{e:?}");
        // Explicit null turns the upstream token header off; absent keeps Kong's default.
        let (c, _) = read(
            json!({"issuer": "https://i.example", "auth_methods": ["bearer"], "upstream_access_token_header": null}),
        );
        assert!(c.unwrap().upstream_access_token_header.is_none());
        let (c, _) = read(json!({"issuer": "https://i.example", "auth_methods": ["bearer"]}));
        assert_eq!(
            c.unwrap().upstream_access_token_header,
            Some(("authorization".to_string(), true))
        );
    }
}
