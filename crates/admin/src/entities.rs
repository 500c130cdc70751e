//! Kong's DB-less Admin API over the running config: entities read back (`GET /services`,
//! `/routes/{name or id}`, `/consumers/{c}/key-auth`, ...), writes to them refused with 405
//! as Kong refuses them without a database, and `POST /config` to replace the whole
//! declarative config, validated as `SIGHUP` validates the file.
//!
//! Entities are rendered in Kong's shape (foreign keys as `{"id": ...}`, empty arrays as
//! `null`), with one deliberate difference: secrets are never shown. Credential secrets
//! (key-auth `key`, basic-auth `password`, hmac-auth and jwt `secret`, oauth2
//! `client_secret`), certificate private keys and plugin config fields that hold secrets
//! (names ending in `password` or `secret`, and the values of `headers` that carry credentials)
//! read `<redacted>`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use axum::{Json, Router};
use portcullis_config::{
    Algorithm, CaCertificate, Certificate, Config, Consumer, Credential, HashOn, Healthchecks,
    PathHandling, Plugin, Protocol, Route, Service, Target, Upstream,
};
use portcullis_proxy::{Gateway, ReloadError};
use serde_json::{json, Map, Value};

/// What secrets read as in Admin API output.
pub const REDACTED: &str = "<redacted>";

/// The largest `POST /config` body.
const CONFIG_BODY_LIMIT: usize = 16 << 20;

/// Kong's default page size, and its largest.
const PAGE_SIZE: usize = 100;
const MAX_PAGE_SIZE: usize = 1000;

/// Credential kinds: config key, Kong's collection path, the path under a consumer, and the
/// field that holds the secret.
const CREDENTIALS: &[(&str, &str, &str, Option<&str>)] = &[
    ("keyauth_credentials", "key-auths", "key-auth", Some("key")),
    (
        "basicauth_credentials",
        "basic-auths",
        "basic-auth",
        Some("password"),
    ),
    (
        "hmacauth_credentials",
        "hmac-auths",
        "hmac-auth",
        Some("secret"),
    ),
    ("jwt_secrets", "jwts", "jwt", Some("secret")),
    ("acls", "acls", "acls", None),
    ("mtls_auth_credentials", "mtls-auths", "mtls-auth", None),
    (
        "oauth2_credentials",
        "oauth2",
        "oauth2",
        Some("client_secret"),
    ),
];

/// Adds the entity endpoints and `/config` to the Admin API's routes.
pub fn routes(mut r: Router<Arc<Gateway>>) -> Router<Arc<Gateway>> {
    r = r
        .route(
            "/config",
            get(config_get)
                .post(config_post)
                // axum's default of 2 MB is less than a large config; YAML aliases are bounded by
                // the parser (`portcullis_config::yaml_value`).
                .layer(axum::extract::DefaultBodyLimit::max(CONFIG_BODY_LIMIT)),
        )
        .route("/services", read_only("services", services))
        .route("/services/{s}", read_only("services", service))
        .route("/services/{s}/routes", read_only("routes", service_routes))
        .route(
            "/services/{s}/plugins",
            read_only("plugins", service_plugins),
        )
        .route("/routes", read_only("routes", routes_all))
        .route("/routes/{r}", read_only("routes", route))
        .route("/routes/{r}/service", read_only("services", route_service))
        .route("/routes/{r}/plugins", read_only("plugins", route_plugins))
        .route("/upstreams", read_only("upstreams", upstreams))
        .route("/upstreams/{upstream}", read_only("upstreams", upstream))
        .route(
            "/upstreams/{upstream}/targets",
            read_only("targets", upstream_targets),
        )
        .route(
            "/upstreams/{upstream}/targets/all",
            read_only("targets", upstream_targets),
        )
        .route("/consumers", read_only("consumers", consumers))
        .route("/consumers/{c}", read_only("consumers", consumer))
        .route(
            "/consumers/{c}/plugins",
            read_only("plugins", consumer_plugins),
        )
        .route("/plugins", read_only("plugins", plugins))
        .route("/plugins/enabled", get(plugins_enabled))
        .route("/plugins/{p}", read_only("plugins", plugin))
        .route("/certificates", read_only("certificates", certificates))
        .route("/certificates/{c}", read_only("certificates", certificate))
        .route("/snis", read_only("snis", snis))
        .route("/snis/{s}", read_only("snis", sni))
        .route(
            "/ca_certificates",
            read_only("ca_certificates", ca_certificates),
        )
        .route(
            "/ca_certificates/{c}",
            read_only("ca_certificates", ca_certificate),
        );
    for &(kind, collection, nested, _) in CREDENTIALS {
        r = r
            .route(
                &format!("/{collection}"),
                read_only(kind, move |s: State<Arc<Gateway>>, q: RawQuery| async move {
                    credentials_all(s, q, kind).await
                }),
            )
            .route(
                &format!("/consumers/{{c}}/{nested}"),
                read_only(
                    kind,
                    move |s: State<Arc<Gateway>>, p: Path<String>, q: RawQuery| async move {
                        consumer_credentials(s, p, q, kind).await
                    },
                ),
            )
            .route(
                &format!("/{collection}/{{id}}"),
                read_only(
                    kind,
                    move |s: State<Arc<Gateway>>, Path(id): Path<String>| async move {
                        credential_one(&s.0, None, &id, kind)
                    },
                ),
            )
            .route(
                &format!("/consumers/{{c}}/{nested}/{{id}}"),
                read_only(
                    kind,
                    move |s: State<Arc<Gateway>>, Path((c, id)): Path<(String, String)>| async move {
                        credential_one(&s.0, Some(&c), &id, kind)
                    },
                ),
            );
    }
    r
}

/// An entity endpoint (a collection or one entity): GET reads, other methods are refused as
/// writes to `schema`.
fn read_only<H, T>(schema: &'static str, handler: H) -> MethodRouter<Arc<Gateway>>
where
    H: axum::handler::Handler<T, Arc<Gateway>>,
    T: 'static,
{
    get(handler).fallback(move |m: Method| unsupported(m, schema))
}

/// Kong's answer to a write without a database (`kong/db/strategies/off`): 405 with the
/// `operation unsupported` error.
async fn unsupported(method: Method, schema: &'static str) -> Response {
    let op = match method {
        Method::POST => "create",
        Method::PUT => "create or update",
        Method::PATCH => "update",
        Method::DELETE => "remove",
        _ => {
            return (
                StatusCode::METHOD_NOT_ALLOWED,
                Json(json!({"message": "Method not allowed"})),
            )
                .into_response()
        }
    };
    (
        StatusCode::METHOD_NOT_ALLOWED,
        Json(json!({
            "code": 12,
            "name": "operation unsupported",
            "message": format!("cannot {op} '{schema}' entities when not using a database"),
        })),
    )
        .into_response()
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, Json(json!({"message": "Not found"}))).into_response()
}

/// An error answer, kept small until it becomes a response.
struct Refusal(StatusCode, Value);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.0, Json(self.1)).into_response()
    }
}

fn bad_request(code: u32, name: &str, message: String) -> Refusal {
    Refusal(
        StatusCode::BAD_REQUEST,
        json!({"code": code, "name": name, "message": message}),
    )
}

// ---- paging -------------------------------------------------------------------------------

/// Query arguments of a collection request.
struct PageArgs {
    size: usize,
    start: usize,
    tags: Option<Tags>,
    /// Everything else, for the endpoint's own filters (`custom_id`, ...).
    rest: BTreeMap<String, String>,
    raw_size: Option<String>,
    raw_tags: Option<String>,
}

enum Tags {
    All(Vec<String>),
    Any(Vec<String>),
}

impl PageArgs {
    fn parse(query: Option<&str>) -> Result<PageArgs, Refusal> {
        let mut args = PageArgs {
            size: PAGE_SIZE,
            start: 0,
            tags: None,
            rest: BTreeMap::new(),
            raw_size: None,
            raw_tags: None,
        };
        for (k, v) in form_urlencoded(query.unwrap_or("")) {
            match k.as_str() {
                "size" => {
                    let n: usize = v.parse().map_err(|_| {
                        bad_request(9, "invalid size", "size must be a number".into())
                    })?;
                    if n == 0 || n > MAX_PAGE_SIZE {
                        return Err(bad_request(
                            9,
                            "invalid size",
                            format!("size must be an integer between 1 and {MAX_PAGE_SIZE}"),
                        ));
                    }
                    args.size = n;
                    args.raw_size = Some(v);
                }
                "offset" => {
                    args.start = decode_offset(&v).ok_or_else(|| {
                        bad_request(
                            7,
                            "invalid offset",
                            format!("'{v}' is not a valid offset: bad base64 encoding"),
                        )
                    })?;
                }
                "tags" => {
                    // Kong: `a,b` needs both, `a/b` either; not both separators at once.
                    let tags = if v.contains(',') && v.contains('/') {
                        None
                    } else if v.contains('/') {
                        Some(Tags::Any(v.split('/').map(str::to_string).collect()))
                    } else {
                        Some(Tags::All(v.split(',').map(str::to_string).collect()))
                    };
                    match tags {
                        Some(t) if !v.is_empty() && !v.split([',', '/']).any(str::is_empty) => {
                            args.tags = Some(t)
                        }
                        _ => {
                            return Err(bad_request(
                                11,
                                "invalid options",
                                "invalid option (tags: invalid filter syntax)".into(),
                            ))
                        }
                    }
                    args.raw_tags = Some(v);
                }
                _ => {
                    args.rest.insert(k, v);
                }
            }
        }
        Ok(args)
    }

    fn keeps(&self, entity: &Value) -> bool {
        let Some(tags) = &self.tags else { return true };
        let has = |t: &String| {
            entity["tags"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x.as_str() == Some(t)))
        };
        match tags {
            Tags::All(t) => t.iter().all(has),
            Tags::Any(t) => t.iter().any(has),
        }
    }
}

fn form_urlencoded(q: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(q.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// Offsets are opaque to clients, as in Kong: the start index, base64-encoded.
fn encode_offset(start: usize) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(start.to_string())
}

fn decode_offset(s: &str) -> Option<usize> {
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD.decode(s).ok()?;
    std::str::from_utf8(&raw).ok()?.parse().ok()
}

/// A page of `items` in Kong's shape: `{"data": [...], "next": ..., "offset": ...}`.
fn page(c: &Config, path: &str, args: &PageArgs, items: impl Iterator<Item = Value>) -> Response {
    let kept: Vec<Value> = items.filter(|v| args.keeps(v)).collect();
    let end = args.start.saturating_add(args.size).min(kept.len());
    let data: Vec<Value> = kept
        .get(args.start.min(kept.len())..end)
        .map(<[Value]>::to_vec)
        .unwrap_or_default();
    let mut body = json!({"data": data, "next": null});
    unvault(c, &mut body);
    if end < kept.len() {
        let offset = encode_offset(end);
        let mut next = format!("{path}?offset={}", escape(&offset));
        // `path` holds the endpoint's key as given, escaped where it names an entity.
        if let Some(t) = &args.raw_tags {
            next.push_str(&format!("&tags={}", escape(t)));
        }
        if let Some(s) = &args.raw_size {
            next.push_str(&format!("&size={s}"));
        }
        body["next"] = json!(next);
        body["offset"] = json!(offset);
    }
    Json(body).into_response()
}

/// Percent-encodes a `next` link's parts: everything but unreserved characters.
fn escape(s: &str) -> String {
    const RESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(s, RESERVED).to_string()
}

/// Shows each value that came from a `{vault://...}` reference as the reference, so that the
/// Admin API never reads a secret out of the environment (Kong shows references too).
fn unvault(c: &Config, v: &mut Value) {
    if c.vault_values.is_empty() {
        return;
    }
    match v {
        Value::String(s) => {
            if let Some((_, reference)) = c.vault_values.iter().find(|(value, _)| value == s) {
                *s = reference.clone();
            } else {
                let scrubbed = portcullis_config::scrub_vault_values(s, &c.vault_values);
                if scrubbed != *s {
                    *s = scrubbed;
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|v| unvault(c, v)),
        Value::Object(o) => o.values_mut().for_each(|v| unvault(c, v)),
        _ => {}
    }
}

/// One entity as the answer.
fn entity(c: &Config, mut v: Value) -> Response {
    unvault(c, &mut v);
    Json(v).into_response()
}

// ---- rendering ----------------------------------------------------------------------------

fn id_ref(id: &Option<String>) -> Value {
    match id {
        Some(id) => json!({ "id": id }),
        None => Value::Null,
    }
}

fn or_null<T: serde::Serialize>(v: &[T]) -> Value {
    if v.is_empty() {
        Value::Null
    } else {
        json!(v)
    }
}

fn protocols(p: &[Protocol]) -> Value {
    json!(p.iter().map(|p| p.as_str()).collect::<Vec<_>>())
}

fn render_service(s: &Service) -> Value {
    json!({
        "id": s.id,
        "name": s.name,
        "protocol": s.protocol.as_str(),
        "host": s.host,
        "port": s.port,
        "path": s.path,
        "retries": s.retries,
        "connect_timeout": s.connect_timeout,
        "write_timeout": s.write_timeout,
        "read_timeout": s.read_timeout,
        "tls_verify": s.tls_verify,
        "tls_verify_depth": s.tls_verify_depth,
        "ca_certificates": or_null(&s.ca_certificates),
        "client_certificate": id_ref(&s.client_certificate),
        "enabled": s.enabled,
        "tags": or_null(&s.tags),
    })
}

fn render_route(r: &Route) -> Value {
    let headers = if r.headers.is_empty() {
        Value::Null
    } else {
        Value::Object(
            r.headers
                .iter()
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect::<Map<_, _>>(),
        )
    };
    json!({
        "id": r.id,
        "name": r.name,
        "service": id_ref(&r.service),
        "protocols": protocols(&r.protocols),
        "methods": or_null(&r.methods),
        "hosts": or_null(&r.hosts),
        "paths": or_null(&r.paths),
        "headers": headers,
        "snis": or_null(&r.snis),
        "sources": null,
        "destinations": null,
        "https_redirect_status_code": r.https_redirect_status_code,
        "strip_path": r.strip_path,
        "preserve_host": r.preserve_host,
        "regex_priority": r.regex_priority,
        "path_handling": match r.path_handling { PathHandling::V0 => "v0", PathHandling::V1 => "v1" },
        "request_buffering": r.request_buffering,
        "response_buffering": r.response_buffering,
        "tags": or_null(&r.tags),
    })
}

/// `hash_on` / `hash_fallback` and the fields that go with them, as Kong's upstream schema
/// names them (`hash_on_header`, `hash_fallback_header`, ...).
fn hash_fields(prefix: &str, h: &HashOn, out: &mut Map<String, Value>) {
    let (kind, extra): (&str, Option<(&str, &str)>) = match h {
        HashOn::None => ("none", None),
        HashOn::Consumer => ("consumer", None),
        HashOn::Ip => ("ip", None),
        HashOn::Path => ("path", None),
        HashOn::Header(n) => ("header", Some(("header", n))),
        HashOn::QueryArg(n) => ("query_arg", Some(("query_arg", n))),
        HashOn::UriCapture(n) => ("uri_capture", Some(("uri_capture", n))),
        HashOn::Cookie { name, path } => {
            out.insert("hash_on_cookie".into(), json!(name));
            out.insert("hash_on_cookie_path".into(), json!(path));
            ("cookie", None)
        }
    };
    out.insert(prefix.into(), json!(kind));
    if let Some((field, value)) = extra {
        out.insert(format!("{prefix}_{field}"), json!(value));
    }
}

fn render_healthchecks(h: &Healthchecks) -> Value {
    let a = &h.active;
    let p = &h.passive;
    let headers = if a.headers.is_empty() {
        Value::Null
    } else {
        let mut m: Map<String, Value> = Map::new();
        for (k, v) in &a.headers {
            let entry = m.entry(k.clone()).or_insert_with(|| json!([]));
            if let Some(list) = entry.as_array_mut() {
                list.push(json!(v));
            }
        }
        redact_headers(&mut m);
        Value::Object(m)
    };
    json!({
        "threshold": h.threshold,
        "active": {
            "type": a.kind,
            "timeout": a.timeout,
            "concurrency": a.concurrency,
            "http_path": a.http_path,
            "https_sni": a.https_sni,
            "https_verify_certificate": a.https_verify_certificate,
            "headers": headers,
            "healthy": {
                "interval": a.healthy_interval,
                "http_statuses": a.healthy_http_statuses,
                "successes": a.healthy_successes,
            },
            "unhealthy": {
                "interval": a.unhealthy_interval,
                "http_statuses": a.unhealthy_http_statuses,
                "tcp_failures": a.unhealthy_tcp_failures,
                "timeouts": a.unhealthy_timeouts,
                "http_failures": a.unhealthy_http_failures,
            },
        },
        "passive": {
            "type": "http",
            "healthy": {
                "http_statuses": p.healthy_http_statuses,
                "successes": p.healthy_successes,
            },
            "unhealthy": {
                "http_statuses": p.unhealthy_http_statuses,
                "tcp_failures": p.unhealthy_tcp_failures,
                "timeouts": p.unhealthy_timeouts,
                "http_failures": p.unhealthy_http_failures,
            },
        },
    })
}

fn render_upstream(u: &Upstream) -> Value {
    let mut m = Map::new();
    m.insert("id".into(), json!(u.id));
    m.insert("name".into(), json!(u.name));
    m.insert(
        "algorithm".into(),
        json!(match u.algorithm {
            Algorithm::RoundRobin => "round-robin",
            Algorithm::ConsistentHashing => "consistent-hashing",
            Algorithm::LeastConnections => "least-connections",
            Algorithm::Latency => "latency",
        }),
    );
    for field in [
        "hash_on_header",
        "hash_fallback_header",
        "hash_on_cookie",
        "hash_on_query_arg",
        "hash_fallback_query_arg",
        "hash_on_uri_capture",
        "hash_fallback_uri_capture",
    ] {
        m.insert(field.into(), Value::Null);
    }
    m.insert("hash_on_cookie_path".into(), json!("/"));
    m.insert("use_srv_name".into(), json!(false));
    hash_fields("hash_on", &u.hash_on, &mut m);
    hash_fields("hash_fallback", &u.hash_fallback, &mut m);
    m.insert("slots".into(), json!(u.slots));
    m.insert("host_header".into(), json!(u.host_header));
    m.insert("client_certificate".into(), id_ref(&u.client_certificate));
    m.insert("healthchecks".into(), render_healthchecks(&u.healthchecks));
    m.insert("tags".into(), or_null(&u.tags));
    Value::Object(m)
}

/// A target as Kong writes it: `host:port`, with an IPv6 address in brackets.
pub(crate) fn target_text(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn render_target(t: &Target) -> Value {
    json!({
        "id": t.id,
        "target": target_text(&t.host, t.port),
        "weight": t.weight,
        "upstream": { "id": t.upstream },
        "tags": or_null(&t.tags),
    })
}

fn render_consumer(c: &Consumer) -> Value {
    json!({
        "id": c.id,
        "username": c.username,
        "custom_id": c.custom_id,
        "tags": or_null(&c.tags),
    })
}

fn render_plugin(p: &Plugin) -> Value {
    let mut config = p.config.clone();
    redact_config(&mut config);
    json!({
        "id": p.id,
        "name": p.name,
        "instance_name": p.instance_name,
        "config": config,
        "protocols": protocols(&p.protocols),
        "enabled": p.enabled,
        "service": id_ref(&p.service),
        "route": id_ref(&p.route),
        "consumer": id_ref(&p.consumer),
        "tags": or_null(&p.tags),
    })
}

fn render_certificate(c: &Certificate) -> Value {
    json!({
        "id": c.id,
        "cert": c.cert,
        "key": REDACTED,
        "cert_alt": c.cert_alt,
        "key_alt": c.key_alt.as_ref().map(|_| REDACTED),
        "snis": c.snis,
        "tags": or_null(&c.tags),
    })
}

fn render_sni(name: &str, cert: &Certificate) -> Value {
    json!({
        "id": portcullis_config::stable_id("snis", name),
        "name": name,
        "certificate": { "id": cert.id },
        "tags": null,
    })
}

fn render_ca(c: &CaCertificate) -> Value {
    json!({
        "id": c.id,
        "cert": c.cert,
        "tags": or_null(&c.tags),
    })
}

fn render_credential(c: &Credential) -> Value {
    let secret = CREDENTIALS.iter().find(|k| k.0 == c.kind).and_then(|k| k.3);
    let mut m = c.fields.clone();
    if let Some(field) = secret {
        if m.get(field).is_some_and(|v| !v.is_null()) {
            m.insert(field.into(), json!(REDACTED));
        }
    }
    m.insert("id".into(), json!(c.id));
    m.insert("consumer".into(), json!({ "id": c.consumer }));
    m.entry("tags").or_insert(Value::Null);
    Value::Object(m)
}

/// Is a plugin config field, by its name, one that holds a secret?
fn secret_field(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n.ends_with("password") || n.ends_with("secret") || n == "client_jwk"
}

/// Header names whose values are credentials.
fn secret_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n == "authorization"
        || n == "proxy-authorization"
        || n == "cookie"
        || n.contains("token")
        || n.contains("secret")
        || n.contains("key")
        || n.contains("password")
}

fn redact_all(v: &mut Value) {
    match v {
        Value::String(s) => *s = REDACTED.into(),
        Value::Array(a) => a.iter_mut().for_each(redact_all),
        Value::Object(o) => o.values_mut().for_each(redact_all),
        _ => {}
    }
}

fn redact_headers(m: &mut Map<String, Value>) {
    for (k, v) in m.iter_mut() {
        if secret_header(k) {
            redact_all(v);
        }
    }
}

/// `name:value` items (the transformers' `headers`, `querystring` and `body` lists): the
/// value of a credential-like name is redacted.
fn redact_pairs(items: &mut [Value]) {
    for item in items {
        if let Value::String(s) = item {
            if let Some((name, _)) = s.split_once(':') {
                if secret_header(name.trim()) {
                    *s = format!("{name}:{REDACTED}");
                }
            }
        }
    }
}

/// Credentials written into a URL (`https://user:pass@host/`): the user information goes.
fn redact_url(s: &mut String) {
    let Some(scheme_end) = s.find("://") else {
        return;
    };
    let rest = &s[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    if let Some(at) = rest[..authority_end].rfind('@') {
        let host = rest[at + 1..].to_string();
        *s = format!("{}{REDACTED}@{host}", &s[..scheme_end + 3]);
    }
}

/// Replaces secret values in a plugin config (recursively: `redis.password` too).
pub fn redact_config(v: &mut Value) {
    match v {
        Value::Object(o) => {
            for (k, v) in o.iter_mut() {
                if secret_field(k) {
                    redact_all(v);
                    continue;
                }
                match (k.as_str(), &mut *v) {
                    ("headers", Value::Object(h)) => redact_headers(h),
                    ("headers" | "querystring" | "body", Value::Array(items)) => {
                        redact_pairs(items)
                    }
                    _ => redact_config(v),
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(redact_config),
        Value::String(s) => redact_url(s),
        _ => {}
    }
}

// ---- lookups ------------------------------------------------------------------------------

fn is_id(key: &str, id: &str) -> bool {
    key.eq_ignore_ascii_case(id)
}

fn find_service<'c>(c: &'c Config, key: &str) -> Option<&'c Service> {
    c.services
        .iter()
        .find(|s| is_id(key, &s.id) || s.name.as_deref() == Some(key))
}

fn find_route<'c>(c: &'c Config, key: &str) -> Option<&'c Route> {
    c.routes
        .iter()
        .find(|r| is_id(key, &r.id) || r.name.as_deref() == Some(key))
}

fn find_upstream<'c>(c: &'c Config, key: &str) -> Option<&'c Upstream> {
    c.upstreams
        .iter()
        .find(|u| is_id(key, &u.id) || u.name == key)
}

/// Kong's rule for `/consumers/{c}`: a UUID names the id, anything else the username.
fn find_consumer<'c>(c: &'c Config, key: &str) -> Option<&'c Consumer> {
    if is_uuid(key) {
        c.consumers.iter().find(|u| is_id(key, &u.id))
    } else {
        c.consumers
            .iter()
            .find(|u| u.username.as_deref() == Some(key))
    }
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// Runs `f` on the running config after parsing the page arguments.
fn with_page(
    gw: &Gateway,
    query: &Option<String>,
    f: impl FnOnce(&Config, &PageArgs) -> Response,
) -> Response {
    match PageArgs::parse(query.as_deref()) {
        Ok(args) => f(&gw.snapshot().config, &args),
        Err(r) => r.into_response(),
    }
}

// ---- handlers -----------------------------------------------------------------------------

async fn services(State(gw): State<Arc<Gateway>>, RawQuery(q): RawQuery) -> Response {
    with_page(&gw, &q, |c, a| {
        page(c, "/services", a, c.services.iter().map(render_service))
    })
}

async fn service(State(gw): State<Arc<Gateway>>, Path(key): Path<String>) -> Response {
    let snap = gw.snapshot();
    let c = &snap.config;
    match find_service(c, &key) {
        Some(s) => entity(c, render_service(s)),
        None => not_found(),
    }
}

async fn service_routes(
    State(gw): State<Arc<Gateway>>,
    Path(key): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    with_page(&gw, &q, |c, a| match find_service(c, &key) {
        Some(s) => page(
            c,
            &format!("/services/{}/routes", escape(&key)),
            a,
            c.routes
                .iter()
                .filter(|r| r.service.as_deref() == Some(s.id.as_str()))
                .map(render_route),
        ),
        None => not_found(),
    })
}

async fn service_plugins(
    State(gw): State<Arc<Gateway>>,
    Path(key): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    with_page(&gw, &q, |c, a| {
        let owner = find_service(c, &key).map(|s| s.id.as_str());
        scoped_plugins(c, a, "services", &key, owner, |p| p.service.as_deref())
    })
}

async fn routes_all(State(gw): State<Arc<Gateway>>, RawQuery(q): RawQuery) -> Response {
    with_page(&gw, &q, |c, a| {
        page(c, "/routes", a, c.routes.iter().map(render_route))
    })
}

async fn route(State(gw): State<Arc<Gateway>>, Path(key): Path<String>) -> Response {
    let snap = gw.snapshot();
    let c = &snap.config;
    match find_route(c, &key) {
        Some(r) => entity(c, render_route(r)),
        None => not_found(),
    }
}

async fn route_service(State(gw): State<Arc<Gateway>>, Path(key): Path<String>) -> Response {
    let snap = gw.snapshot();
    let c = &snap.config;
    let service = find_route(c, &key)
        .and_then(|r| r.service.as_deref())
        .and_then(|id| find_service(c, id));
    match service {
        Some(s) => entity(c, render_service(s)),
        None => not_found(),
    }
}

async fn route_plugins(
    State(gw): State<Arc<Gateway>>,
    Path(key): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    with_page(&gw, &q, |c, a| {
        let owner = find_route(c, &key).map(|r| r.id.as_str());
        scoped_plugins(c, a, "routes", &key, owner, |p| p.route.as_deref())
    })
}

async fn upstreams(State(gw): State<Arc<Gateway>>, RawQuery(q): RawQuery) -> Response {
    with_page(&gw, &q, |c, a| {
        page(c, "/upstreams", a, c.upstreams.iter().map(render_upstream))
    })
}

async fn upstream(State(gw): State<Arc<Gateway>>, Path(key): Path<String>) -> Response {
    let snap = gw.snapshot();
    let c = &snap.config;
    match find_upstream(c, &key) {
        Some(u) => entity(c, render_upstream(u)),
        None => not_found(),
    }
}

async fn upstream_targets(
    State(gw): State<Arc<Gateway>>,
    Path(key): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    with_page(&gw, &q, |c, a| match find_upstream(c, &key) {
        Some(u) => page(
            c,
            &format!("/upstreams/{}/targets", escape(&key)),
            a,
            c.targets
                .iter()
                .filter(|t| t.upstream == u.id)
                .map(render_target),
        ),
        None => not_found(),
    })
}

async fn consumers(State(gw): State<Arc<Gateway>>, RawQuery(q): RawQuery) -> Response {
    with_page(&gw, &q, |c, a| {
        // Kong: `?custom_id=` looks a consumer up by its custom id.
        let custom = a.rest.get("custom_id");
        page(
            c,
            "/consumers",
            a,
            c.consumers
                .iter()
                .filter(|u| custom.is_none_or(|id| u.custom_id.as_ref() == Some(id)))
                .map(render_consumer),
        )
    })
}

async fn consumer(State(gw): State<Arc<Gateway>>, Path(key): Path<String>) -> Response {
    let snap = gw.snapshot();
    let c = &snap.config;
    match find_consumer(c, &key) {
        Some(u) => entity(c, render_consumer(u)),
        None => not_found(),
    }
}

async fn consumer_plugins(
    State(gw): State<Arc<Gateway>>,
    Path(key): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    with_page(&gw, &q, |c, a| {
        let owner = find_consumer(c, &key).map(|u| u.id.as_str());
        scoped_plugins(c, a, "consumers", &key, owner, |p| p.consumer.as_deref())
    })
}

/// `/{parent}/{key}/plugins`: the plugins scoped to the entity `owner` (its id, when `key`
/// named one), read off each plugin by `scope`.
fn scoped_plugins(
    c: &Config,
    a: &PageArgs,
    parent: &str,
    key: &str,
    owner: Option<&str>,
    scope: fn(&Plugin) -> Option<&str>,
) -> Response {
    let Some(owner) = owner else {
        return not_found();
    };
    page(
        c,
        &format!("/{parent}/{}/plugins", escape(key)),
        a,
        c.plugins
            .iter()
            .filter(|p| scope(p) == Some(owner))
            .map(render_plugin),
    )
}

async fn plugins(State(gw): State<Arc<Gateway>>, RawQuery(q): RawQuery) -> Response {
    with_page(&gw, &q, |c, a| {
        page(c, "/plugins", a, c.plugins.iter().map(render_plugin))
    })
}

async fn plugin(State(gw): State<Arc<Gateway>>, Path(key): Path<String>) -> Response {
    let snap = gw.snapshot();
    let c = &snap.config;
    match c.plugins.iter().find(|p| is_id(&key, &p.id)) {
        Some(p) => entity(c, render_plugin(p)),
        None => not_found(),
    }
}

async fn certificates(State(gw): State<Arc<Gateway>>, RawQuery(q): RawQuery) -> Response {
    with_page(&gw, &q, |c, a| {
        page(
            c,
            "/certificates",
            a,
            c.certificates.iter().map(render_certificate),
        )
    })
}

/// A certificate by id or by one of its SNIs, as Kong allows.
async fn certificate(State(gw): State<Arc<Gateway>>, Path(key): Path<String>) -> Response {
    let snap = gw.snapshot();
    let c = &snap.config;
    let found = c.certificates.iter().find(|cert| {
        is_id(&key, &cert.id) || cert.snis.iter().any(|s| s.eq_ignore_ascii_case(&key))
    });
    match found {
        Some(cert) => entity(c, render_certificate(cert)),
        None => not_found(),
    }
}

async fn snis(State(gw): State<Arc<Gateway>>, RawQuery(q): RawQuery) -> Response {
    with_page(&gw, &q, |c, a| {
        page(
            c,
            "/snis",
            a,
            c.certificates
                .iter()
                .flat_map(|cert| cert.snis.iter().map(move |s| render_sni(s, cert))),
        )
    })
}

async fn sni(State(gw): State<Arc<Gateway>>, Path(key): Path<String>) -> Response {
    let snap = gw.snapshot();
    let c = &snap.config;
    for cert in &c.certificates {
        for s in &cert.snis {
            if s.eq_ignore_ascii_case(&key) || is_id(&key, &portcullis_config::stable_id("snis", s))
            {
                return entity(c, render_sni(s, cert));
            }
        }
    }
    not_found()
}

async fn ca_certificates(State(gw): State<Arc<Gateway>>, RawQuery(q): RawQuery) -> Response {
    with_page(&gw, &q, |c, a| {
        page(
            c,
            "/ca_certificates",
            a,
            c.ca_certificates.iter().map(render_ca),
        )
    })
}

async fn ca_certificate(State(gw): State<Arc<Gateway>>, Path(key): Path<String>) -> Response {
    let snap = gw.snapshot();
    let c = &snap.config;
    match c.ca_certificates.iter().find(|ca| is_id(&key, &ca.id)) {
        Some(ca) => entity(c, render_ca(ca)),
        None => not_found(),
    }
}

/// One credential by id (never by its secret), optionally only if it belongs to `consumer`.
fn credential_one(gw: &Gateway, consumer: Option<&str>, id: &str, kind: &str) -> Response {
    let snap = gw.snapshot();
    let c = &snap.config;
    let owner = match consumer {
        Some(key) => match find_consumer(c, key) {
            Some(u) => Some(u.id.as_str()),
            None => return not_found(),
        },
        None => None,
    };
    let found = c
        .credentials
        .iter()
        .find(|cr| cr.kind == kind && is_id(id, &cr.id) && owner.is_none_or(|o| cr.consumer == o));
    match found {
        Some(cr) => entity(c, render_credential(cr)),
        None => not_found(),
    }
}

/// Kong's `GET /plugins/enabled`: the plugins this node can run.
async fn plugins_enabled() -> Response {
    Json(json!({
        "enabled_plugins": portcullis_plugins::known_plugins().collect::<Vec<_>>(),
    }))
    .into_response()
}

async fn credentials_all(
    State(gw): State<Arc<Gateway>>,
    RawQuery(q): RawQuery,
    kind: &'static str,
) -> Response {
    let path = CREDENTIALS.iter().find(|k| k.0 == kind).map_or("", |k| k.1);
    with_page(&gw, &q, |c, a| {
        page(
            c,
            &format!("/{path}"),
            a,
            c.credentials
                .iter()
                .filter(|cr| cr.kind == kind)
                .map(render_credential),
        )
    })
}

async fn consumer_credentials(
    State(gw): State<Arc<Gateway>>,
    Path(key): Path<String>,
    RawQuery(q): RawQuery,
    kind: &'static str,
) -> Response {
    let nested = CREDENTIALS.iter().find(|k| k.0 == kind).map_or("", |k| k.2);
    with_page(&gw, &q, |c, a| match find_consumer(c, &key) {
        Some(u) => page(
            c,
            &format!("/consumers/{}/{nested}", escape(&key)),
            a,
            c.credentials
                .iter()
                .filter(|cr| cr.kind == kind && cr.consumer == u.id)
                .map(render_credential),
        ),
        None => not_found(),
    })
}

/// All entities of a config as Kong's `POST /config` answers: by entity name, then by id.
fn render_all(c: &Config) -> Value {
    fn by_id(items: impl Iterator<Item = Value>) -> Value {
        Value::Object(
            items
                .map(|e| (e["id"].as_str().unwrap_or_default().to_string(), e))
                .collect(),
        )
    }
    let mut m = Map::new();
    m.insert(
        "services".into(),
        by_id(c.services.iter().map(render_service)),
    );
    m.insert("routes".into(), by_id(c.routes.iter().map(render_route)));
    m.insert(
        "upstreams".into(),
        by_id(c.upstreams.iter().map(render_upstream)),
    );
    m.insert("targets".into(), by_id(c.targets.iter().map(render_target)));
    m.insert(
        "consumers".into(),
        by_id(c.consumers.iter().map(render_consumer)),
    );
    m.insert("plugins".into(), by_id(c.plugins.iter().map(render_plugin)));
    m.insert(
        "certificates".into(),
        by_id(c.certificates.iter().map(render_certificate)),
    );
    m.insert(
        "ca_certificates".into(),
        by_id(c.ca_certificates.iter().map(render_ca)),
    );
    for &(kind, ..) in CREDENTIALS {
        if c.credentials.iter().any(|cr| cr.kind == kind) {
            let list = c.credentials.iter().filter(|cr| cr.kind == kind);
            m.insert(kind.into(), by_id(list.map(render_credential)));
        }
    }
    let mut v = Value::Object(m);
    unvault(c, &mut v);
    v
}

// ---- /config ------------------------------------------------------------------------------

/// `GET /config`: Kong exports the whole declarative config, secrets included. Portcullis
/// does not: the config is the operator's file (or what was posted), and its credentials
/// would leave through the Admin API. The entity endpoints read everything else.
async fn config_get() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({
            "message": "exporting the configuration is not supported: it holds secrets; \
                        read entities through their endpoints"
        })),
    )
        .into_response()
}

/// Extracts the declarative config text from a `POST /config` body: a config object
/// (JSON), `{"config": "<text>"}`, a form field `config` (urlencoded or multipart, as
/// `curl -F config=@kong.yml` sends it), or the YAML or JSON text itself.
fn config_text(headers: &HeaderMap, body: &Bytes) -> Result<String, Refusal> {
    let raw_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // The media type is case-insensitive; the multipart boundary is not.
    let ctype = raw_type.to_ascii_lowercase();
    let missing = || {
        Refusal(
            StatusCode::BAD_REQUEST,
            json!({"message": "expected a declarative configuration"}),
        )
    };
    if ctype.starts_with("multipart/form-data") {
        return multipart_field(raw_type, body, "config").ok_or_else(missing);
    }
    let text = std::str::from_utf8(body).map_err(|_| missing())?;
    if text.trim().is_empty() {
        return Err(missing());
    }
    if ctype.starts_with("application/x-www-form-urlencoded") {
        // `config=<text>`; anything else is the config itself, as Kong reads the raw body
        // (`curl --data-binary @kong.yml` sends this type).
        if let Some((_, v)) = form_urlencoded(text)
            .into_iter()
            .find(|(k, _)| k == "config")
        {
            return Ok(v);
        }
        return Ok(text.to_string());
    }
    if let Ok(Value::Object(o)) = serde_json::from_str::<Value>(text) {
        if !o.contains_key("_format_version") {
            match o.get("config") {
                Some(Value::String(s)) => return Ok(s.clone()),
                Some(v @ Value::Object(_)) => return Ok(v.to_string()),
                _ => {}
            }
        }
    }
    Ok(text.to_string())
}

/// The text of one field of a `multipart/form-data` body.
fn multipart_field(ctype: &str, body: &[u8], name: &str) -> Option<String> {
    let boundary = ctype
        .split(';')
        .map(str::trim)
        .find_map(|p| {
            p.get(..9)
                .filter(|k| k.eq_ignore_ascii_case("boundary="))
                .map(|_| &p[9..])
        })?
        .trim_matches('"');
    if boundary.is_empty() {
        return None;
    }
    let delim = format!("--{boundary}");
    let text = String::from_utf8_lossy(body);
    for part in text.split(delim.as_str()).skip(1) {
        let part = part.strip_prefix("\r\n").unwrap_or(part);
        let Some((head, rest)) = part.split_once("\r\n\r\n") else {
            continue;
        };
        let named = head.lines().any(|l| {
            let Some((key, params)) = l.split_once(':') else {
                return false;
            };
            key.trim().eq_ignore_ascii_case("content-disposition")
                && params.split(';').map(str::trim).any(|p| {
                    p.strip_prefix("name=")
                        .is_some_and(|v| v.trim_matches('"') == name)
                })
        });
        if named {
            return Some(rest.strip_suffix("\r\n").unwrap_or(rest).to_string());
        }
    }
    None
}

/// `POST /config`: validates a whole declarative config and swaps it in, as `SIGHUP` does for
/// the file. 201 with the entities (secrets redacted); 400 with Kong's `invalid declarative
/// configuration` error naming each field path; `?check_hash=1` answers 304 when the config
/// is the one running. The running config keeps serving when the new one is refused. A
/// later `SIGHUP` re-reads the file, replacing what was posted.
async fn config_post(
    State(gw): State<Arc<Gateway>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let text = match config_text(&headers, &body) {
        Ok(t) => t,
        Err(r) => return r.into_response(),
    };
    let args = form_urlencoded(q.as_deref().unwrap_or(""));
    let check_hash = args.iter().any(|(k, v)| k == "check_hash" && v == "1");
    let hash = portcullis_proxy::config_hash(&text);
    if check_hash && gw.snapshot().hash == hash {
        return StatusCode::NOT_MODIFIED.into_response();
    }
    let parsed = portcullis_config::parse_str_with(
        &text,
        &|n| std::env::var(n).ok(),
        &portcullis_plugins::validate,
    );
    let config = match parsed {
        Ok(c) => c,
        Err(errors) => return invalid(errors),
    };
    let summary = config.summary();
    let rendered = render_all(&config);
    match gw.apply(config, hash).await {
        Ok(()) => {}
        Err(ReloadError::Invalid(errors)) => return invalid(errors),
        Err(ReloadError::Io(e)) => {
            tracing::error!(error = %e, "config from the Admin API could not be applied");
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({"message": "An unexpected error occurred"})),
            )
                .into_response();
        }
    }
    tracing::info!(config = %summary, "config loaded through the Admin API");
    tracing::warn!(
        target: "security",
        event = "admin_change",
        client_ip = %peer.ip(),
        method = "POST",
        path = "/config",
        reason = "declarative config replaced",
        "Admin API change"
    );
    (StatusCode::CREATED, Json(rendered)).into_response()
}

/// Kong's `invalid declarative configuration` error (code 14). `fields` maps each field
/// path, as `portcullis config validate` prints it, to its message (Kong nests them instead).
fn invalid(errors: Vec<portcullis_config::FieldError>) -> Response {
    tracing::warn!(
        errors = errors.len(),
        "config from the Admin API refused; the running config keeps serving"
    );
    let mut fields = Map::new();
    for e in &errors {
        let key = if e.path.is_empty() {
            "@entity"
        } else {
            &e.path
        };
        match fields.get_mut(key) {
            Some(Value::String(s)) => {
                s.push_str("; ");
                s.push_str(&e.message);
            }
            _ => {
                fields.insert(key.to_string(), json!(e.message));
            }
        }
    }
    let listed: Vec<String> = errors.iter().map(ToString::to_string).collect();
    (
        StatusCode::BAD_REQUEST,
        Json(json!({
            "code": 14,
            "name": "invalid declarative configuration",
            "message": format!("declarative config is invalid: {}", listed.join("; ")),
            "fields": fields,
        })),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_secrets_are_redacted_wherever_they_sit() {
        let mut v = json!({
            "client_secret": ["a", "b"],
            "redis": {"host": "r", "password": "pw"},
            "redis_password": "pw2",
            "secret_is_base64": false,
            "headers": {"Authorization": "Bearer x", "X-Trace": "keep"},
            "key_names": ["apikey"],
            "token_endpoint": "https://idp/token",
        });
        redact_config(&mut v);
        assert_eq!(v["client_secret"], json!([REDACTED, REDACTED]));
        assert_eq!(v["redis"]["password"], REDACTED);
        assert_eq!(v["redis"]["host"], "r");
        assert_eq!(v["redis_password"], REDACTED);
        assert_eq!(v["secret_is_base64"], false);
        assert_eq!(v["headers"]["Authorization"], REDACTED);
        assert_eq!(v["headers"]["X-Trace"], "keep");
        assert_eq!(v["key_names"], json!(["apikey"]));
        assert_eq!(v["token_endpoint"], "https://idp/token");
    }

    #[test]
    fn offsets_round_trip_and_bad_ones_are_refused() {
        assert_eq!(decode_offset(&encode_offset(100)), Some(100));
        assert_eq!(decode_offset("not base64!"), None);
        assert!(PageArgs::parse(Some("offset=%%%")).is_err());
        assert!(PageArgs::parse(Some("size=0")).is_err());
        assert!(PageArgs::parse(Some("size=abc")).is_err());
        assert!(PageArgs::parse(Some("tags=a,b/c")).is_err());
        let a = PageArgs::parse(Some("size=2&tags=a%2Cb")).unwrap_or_else(|_| panic!());
        assert_eq!(a.size, 2);
        assert!(a.keeps(&json!({"tags": ["a", "b", "c"]})));
        assert!(!a.keeps(&json!({"tags": ["a"]})));
        let a = PageArgs::parse(Some("tags=a/z")).unwrap_or_else(|_| panic!());
        assert!(a.keeps(&json!({"tags": ["z"]})));
        assert!(!a.keeps(&json!({"tags": null})));
    }

    #[test]
    fn multipart_config_field_is_found() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"config\"; filename=\"kong.yml\"\r\nContent-Type: application/octet-stream\r\n\r\n_format_version: \"3.0\"\n\r\n--XyZ--\r\n";
        let got = multipart_field("multipart/form-data; boundary=XyZ", body, "config");
        assert_eq!(got.as_deref(), Some("_format_version: \"3.0\"\n"));
        assert_eq!(
            multipart_field("multipart/form-data; boundary=XyZ", body, "other"),
            None
        );
    }
}
