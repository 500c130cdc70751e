//! `rate-limiting`: limits how many requests a client makes per second, minute, hour, day,
//! month and year, with Kong's config, headers and answers.
//!
//! - `limit_by` picks whose requests are counted together: `consumer` (falls back to the
//!   credential, then the client IP), `credential`, `ip`, `service`, `header` (`header_name`),
//!   `path` (`path`), or `consumer-group` (our extension: the consumer's first consumer group).
//!   An unknown consumer, credential, header or path falls back to the client IP, like Kong.
//! - `policy: local` counts in this process ([`local::LocalStore`]); `policy: redis` counts in
//!   Redis, shared by every node ([`redis_policy::RedisStore`]).
//! - `window_type: fixed` (default) uses Kong's UTC calendar windows; `sliding` (extension,
//!   as in Kong's rate-limiting-advanced) weighs the previous window so that a burst across a
//!   boundary cannot pass twice the limit.
//!
//! Counters are keyed like Kong's: `ratelimit:<route id>:<service id>:<identifier>:<window
//! start ms>:<period>`, where the ids are those the plugin is attached to (all zeros when
//! not attached), so a global plugin counts a client across every route.

pub mod local;
pub mod redis_policy;
pub mod window;

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{HeaderName, HeaderValue};
use http::StatusCode;
use portcullis_config::{Errors, Obj};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::catalog::Catalog;
use crate::ip_restriction::canonical_ip;
use crate::registry::Scope;
use crate::{Access, Ctx, Flow, Plugin, Response, ResponseHead};

use local::{Limit, LocalStore};
use redis_policy::{RedisConfig, RedisStore};
use window::{Observed, Period};

const EMPTY_UUID: &str = "00000000-0000-0000-0000-000000000000";

static RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
static RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
static RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");
/// Identifiers longer than this (e.g. a huge header value) are replaced by their SHA-256.
const MAX_IDENTIFIER: usize = 128;

/// What requests are counted together.
#[derive(Debug, Clone, PartialEq, Eq)]
enum LimitBy {
    Consumer,
    Credential,
    Ip,
    Service,
    Header(String),
    Path(String),
    ConsumerGroup,
}

#[derive(Debug)]
enum Policy {
    Local,
    Redis(Box<RedisStore>),
}

/// A compiled `rate-limiting` instance.
#[derive(Debug)]
pub struct RateLimiting {
    limits: Vec<Limit>,
    limit_by: LimitBy,
    policy: Policy,
    sliding: bool,
    fault_tolerant: bool,
    hide_client_headers: bool,
    error_status: StatusCode,
    error_message: String,
    /// `ratelimit:<route>:<service>:` (with the window type for sliding mode).
    key_prefix: String,
    /// Header names per period: (limit, remaining).
    names: [(HeaderName, HeaderName); 6],
    /// Each configured period's limit as a header value, made once.
    limit_values: [Option<HeaderValue>; 6],
    catalog: Arc<Catalog>,
}

/// Headers computed in the access phase, written in the response phase.
#[derive(Clone)]
struct PendingHeaders(Vec<(HeaderName, HeaderValue)>);

fn header_names() -> [(HeaderName, HeaderName); 6] {
    Period::ALL.map(|p| {
        let limit = format!("x-ratelimit-limit-{}", p.name());
        let remaining = format!("x-ratelimit-remaining-{}", p.name());
        (
            HeaderName::try_from(limit).unwrap_or(HeaderName::from_static("x-ratelimit-limit")),
            HeaderName::try_from(remaining)
                .unwrap_or(HeaderName::from_static("x-ratelimit-remaining")),
        )
    })
}

/// `n` as a header value; the seconds up to a minute (every `RateLimit-Reset` of a
/// per-second or per-minute limit) come from a table made once instead of an allocation.
fn small_value(n: i64) -> HeaderValue {
    static SMALL: std::sync::LazyLock<Vec<HeaderValue>> =
        std::sync::LazyLock::new(|| (0..=60).map(HeaderValue::from).collect());
    usize::try_from(n)
        .ok()
        .and_then(|i| SMALL.get(i))
        .cloned()
        .unwrap_or_else(|| HeaderValue::from(n))
}

/// Reads a limit: a number greater than 0, integral.
fn read_limit(o: &mut Obj<'_>, key: &str, errs: &mut Errors) -> Option<u64> {
    let n = o.opt_f64(key, errs)?;
    if n <= 0.0 {
        errs.push(o.field_path(key), "value must be greater than 0");
        return None;
    }
    if n.fract() != 0.0 || n > 1e15 {
        errs.push(o.field_path(key), "expected an integer");
        return None;
    }
    Some(n as u64)
}

/// Reads the Redis settings from the nested `redis` record and the deprecated flat
/// `redis_*` fields (both accepted, as in Kong 3.x; they must agree when both are given).
fn read_redis(o: &mut Obj<'_>, errs: &mut Errors) -> RedisFields {
    let mut nested = RedisFields::default();
    if let Some(mut r) = o.record("redis", errs) {
        nested.host = r.opt_str("host", errs);
        nested.port = r.opt_int("port", 0, 65535, errs);
        nested.timeout = r.opt_int("timeout", 0, 2_147_483_646, errs);
        nested.username = r.opt_str("username", errs);
        nested.password = r.opt_str("password", errs);
        nested.database = r.opt_int("database", i64::MIN, i64::MAX, errs);
        nested.ssl = r.opt_bool("ssl", errs);
        nested.ssl_verify = r.opt_bool("ssl_verify", errs);
        nested.server_name = r.opt_str("server_name", errs);
        r.finish(errs);
    }
    let flat = RedisFields {
        host: o.opt_str("redis_host", errs),
        port: o.opt_int("redis_port", 0, 65535, errs),
        timeout: o.opt_int("redis_timeout", 0, 2_147_483_646, errs),
        username: o.opt_str("redis_username", errs),
        password: o.opt_str("redis_password", errs),
        database: o.opt_int("redis_database", i64::MIN, i64::MAX, errs),
        ssl: o.opt_bool("redis_ssl", errs),
        ssl_verify: o.opt_bool("redis_ssl_verify", errs),
        server_name: o.opt_str("redis_server_name", errs),
    };
    // Flat fields fill what the record leaves unset; a conflict is an error.
    macro_rules! merge {
        ($field:ident, $flat:literal, $nested:literal) => {
            match (&nested.$field, flat.$field) {
                (Some(a), Some(b)) if *a != b => {
                    errs.push(
                        o.field_path($flat),
                        concat!("conflicts with config.redis.", $nested),
                    );
                }
                (None, Some(b)) => nested.$field = Some(b),
                _ => {}
            }
        };
    }
    merge!(host, "redis_host", "host");
    merge!(port, "redis_port", "port");
    merge!(timeout, "redis_timeout", "timeout");
    merge!(username, "redis_username", "username");
    merge!(password, "redis_password", "password");
    merge!(database, "redis_database", "database");
    merge!(ssl, "redis_ssl", "ssl");
    merge!(ssl_verify, "redis_ssl_verify", "ssl_verify");
    merge!(server_name, "redis_server_name", "server_name");
    nested
}

#[derive(Default)]
struct RedisFields {
    host: Option<String>,
    port: Option<i64>,
    timeout: Option<i64>,
    username: Option<String>,
    password: Option<String>,
    database: Option<i64>,
    ssl: Option<bool>,
    ssl_verify: Option<bool>,
    server_name: Option<String>,
}

impl RateLimiting {
    /// Validates the config; for the Redis policy prepares (but does not open) the connection.
    pub fn build(
        config: &Value,
        path: &str,
        scope: Scope<'_>,
        errs: &mut Errors,
        catalog: &Arc<Catalog>,
    ) -> Option<RateLimiting> {
        let before = errs.len();
        let mut o = Obj::open(config, path, errs)?;
        let mut limits = Vec::new();
        for p in Period::ALL {
            if let Some(limit) = read_limit(&mut o, p.name(), errs) {
                limits.push(Limit { period: p, limit });
            }
        }
        let limit_by = o.one_of(
            "limit_by",
            "consumer",
            &[
                "consumer",
                "credential",
                "ip",
                "service",
                "header",
                "path",
                "consumer-group",
            ],
            errs,
        );
        let header_name = o.opt_str("header_name", errs);
        let lpath = o.opt_str("path", errs);
        let policy = o.one_of("policy", "local", &["local", "redis"], errs);
        let fault_tolerant = o.bool_or("fault_tolerant", true, errs);
        let hide_client_headers = o.bool_or("hide_client_headers", false, errs);
        let error_code = o.int_or("error_code", 429, 100, 599, errs);
        let error_message = o
            .opt_str("error_message", errs)
            .unwrap_or_else(|| "API rate limit exceeded".to_string());
        let sync_rate = o.opt_f64("sync_rate", errs).unwrap_or(-1.0);
        let window_type = o.one_of("window_type", "fixed", &["fixed", "sliding"], errs);
        let redis = read_redis(&mut o, errs);

        if limits.is_empty() && !Period::ALL.iter().any(|p| o.has(p.name())) {
            errs.push(
                o.path().to_string(),
                "at least one of these fields must be non-empty: 'config.second', \
                 'config.minute', 'config.hour', 'config.day', 'config.month', 'config.year'",
            );
        }
        // Kong: a longer period may not have a lower limit than a shorter one.
        for (i, lower) in limits.iter().enumerate() {
            for upper in &limits[i + 1..] {
                if upper.limit < lower.limit {
                    errs.push(
                        o.path().to_string(),
                        format!(
                            "The limit for {}({:.1}) cannot be lower than the limit for {}({:.1})",
                            upper.period.name(),
                            upper.limit as f64,
                            lower.period.name(),
                            lower.limit as f64
                        ),
                    );
                }
            }
        }
        if policy != "redis" && sync_rate != -1.0 {
            errs.push(
                o.path().to_string(),
                "sync_rate can only be used with the redis policy",
            );
        }
        if policy == "redis" && sync_rate != -1.0 && sync_rate < 0.02 {
            errs.push(
                o.path().to_string(),
                "sync_rate must be greater than 0.02, or -1 to disable",
            );
        }
        let limit_by = match limit_by.as_str() {
            "credential" => LimitBy::Credential,
            "ip" => LimitBy::Ip,
            "service" => LimitBy::Service,
            "consumer-group" => LimitBy::ConsumerGroup,
            "header" => match header_name {
                Some(h) => match HeaderName::try_from(h.as_str()) {
                    Ok(_) => LimitBy::Header(h.to_ascii_lowercase()),
                    Err(_) => {
                        errs.push(o.field_path("header_name"), "bad header name");
                        LimitBy::Ip
                    }
                },
                None => {
                    errs.push(o.field_path("header_name"), "required field missing");
                    LimitBy::Ip
                }
            },
            "path" => match lpath {
                Some(p) if p.starts_with('/') => LimitBy::Path(p),
                Some(_) => {
                    errs.push(o.field_path("path"), "should start with: /");
                    LimitBy::Ip
                }
                None => {
                    errs.push(o.field_path("path"), "required field missing");
                    LimitBy::Ip
                }
            },
            _ => LimitBy::Consumer,
        };
        let policy = if policy == "redis" {
            let host = match &redis.host {
                Some(h) if !h.is_empty() => Some(h.clone()),
                _ => {
                    errs.push(
                        portcullis_config::reader::join(&o.field_path("redis"), "host"),
                        "required field missing",
                    );
                    None
                }
            };
            host.map(|host| RedisConfig {
                host,
                port: redis.port.unwrap_or(6379) as u16,
                username: redis.username.clone().filter(|u| !u.is_empty()),
                password: redis.password.clone().filter(|p| !p.is_empty()),
                database: redis.database.unwrap_or(0),
                ssl: redis.ssl.unwrap_or(false),
                ssl_verify: redis.ssl_verify.unwrap_or(true),
                timeout: Duration::from_millis(redis.timeout.unwrap_or(2000).max(1) as u64),
            })
        } else {
            None
        };
        o.finish(errs);
        if errs.len() > before {
            return None;
        }
        let policy = match policy {
            Some(cfg) => match RedisStore::new(&cfg) {
                Ok(store) => Policy::Redis(Box::new(store)),
                Err(e) => {
                    errs.push(
                        format!("{path}.redis"),
                        format!("invalid redis settings: {e}"),
                    );
                    return None;
                }
            },
            None => Policy::Local,
        };
        let sliding = window_type == "sliding";
        let key_prefix = format!(
            "ratelimit:{}{}:{}:",
            if sliding { "sliding:" } else { "" },
            scope.route.unwrap_or(EMPTY_UUID),
            scope.service.unwrap_or(EMPTY_UUID),
        );
        let mut limit_values: [Option<HeaderValue>; 6] = Default::default();
        for l in &limits {
            if let Some(slot) = limit_values.get_mut(l.period.index()) {
                *slot = Some(HeaderValue::from(l.limit));
            }
        }
        Some(RateLimiting {
            limit_values,
            limits,
            limit_by,
            policy,
            sliding,
            fault_tolerant,
            hide_client_headers,
            error_status: StatusCode::from_u16(error_code as u16).ok()?,
            error_message,
            key_prefix,
            names: header_names(),
            catalog: catalog.clone(),
        })
    }

    /// Whose requests this one is counted with (Kong's `get_identifier`). Borrowed where the
    /// request already holds it (consumer, credential, service, path, header), so the usual
    /// request builds its counter key with one allocation.
    fn identifier<'a>(&'a self, ctx: &'a Ctx) -> Cow<'a, str> {
        let found: Option<Cow<'a, str>> = match &self.limit_by {
            LimitBy::Consumer => ctx
                .identity
                .as_ref()
                .map(|i| Cow::Borrowed(&*i.consumer.id)),
            LimitBy::Credential => ctx
                .identity
                .as_ref()
                .filter(|i| !i.anonymous)
                .and_then(|i| i.credential.as_deref().map(Cow::Borrowed)),
            LimitBy::Service => ctx.service_id.as_deref().map(Cow::Borrowed),
            LimitBy::Header(name) => ctx
                .headers
                .get(name.as_str())
                .map(|v| String::from_utf8_lossy(v.as_bytes())),
            LimitBy::Path(p) => (ctx.path == *p).then_some(Cow::Borrowed(p.as_str())),
            LimitBy::ConsumerGroup => ctx.identity.as_ref().and_then(|i| {
                self.catalog
                    .consumer_groups_of(&i.consumer.id)
                    .first()
                    .cloned()
                    .map(Cow::Owned)
            }),
            LimitBy::Ip => None,
        };
        let id = found.unwrap_or_else(|| {
            Cow::Owned(crate::ip_restriction::ip_text(canonical_ip(ctx.client_ip)))
        });
        if id.len() > MAX_IDENTIFIER {
            let digest = Sha256::digest(id.as_bytes());
            let mut hex = String::with_capacity(64);
            for b in digest {
                let _ = write!(hex, "{b:02x}");
            }
            Cow::Owned(hex)
        } else {
            id
        }
    }

    fn window_start(&self, p: Period, now_ms: i64) -> i64 {
        if self.sliding {
            p.sliding_start(now_ms)
        } else {
            p.fixed_start(now_ms)
        }
    }

    /// A period's limit as a header value (made at config load; every observed period is a
    /// configured one).
    fn limit_value(&self, index: usize, limit: u64) -> HeaderValue {
        match self.limit_values.get(index) {
            Some(Some(v)) => v.clone(),
            _ => HeaderValue::from(limit),
        }
    }

    /// Kong's headers for what was observed.
    fn headers(&self, observed: &[Observed], admitted: bool, now_ms: i64) -> PendingHeaders {
        // The period that refused the request (Kong's `stop`): the longest one, so Retry-After
        // covers every exhausted window.
        let stop = if admitted {
            None
        } else {
            observed
                .iter()
                .filter(|o| !o.admits())
                .map(|o| o.period)
                .max()
        };
        let mut out = Vec::with_capacity(2 * observed.len() + 4);
        // (limit, remaining, window seconds, period index, remaining as a header value)
        let mut best: Option<(u64, u64, i64, usize, HeaderValue)> = None;
        let mut reset = 1;
        for o in observed {
            let mut remaining = o.limit.saturating_sub(o.usage());
            if stop.is_none() || stop == Some(o.period) {
                remaining = remaining.saturating_sub(1);
            }
            // Made once: the best period's `RateLimit-Remaining` shares it.
            let remaining_value = HeaderValue::from(remaining);
            let window = o.period.seconds();
            let better = match &best {
                None => true,
                Some((_, r, w, _, _)) => remaining < *r || (remaining == *r && window > *w),
            };
            if better {
                best = Some((
                    o.limit,
                    remaining,
                    window,
                    o.period.index(),
                    remaining_value.clone(),
                ));
                let elapsed = (now_ms - self.window_start(o.period, now_ms)).div_euclid(1000);
                reset = (window - elapsed).max(1);
            }
            if let Some((l, r)) = self.names.get(o.period.index()) {
                out.push((l.clone(), self.limit_value(o.period.index(), o.limit)));
                out.push((r.clone(), remaining_value));
            }
        }
        if let Some((limit, _, _, index, remaining_value)) = best {
            out.push((RATELIMIT_LIMIT.clone(), self.limit_value(index, limit)));
            out.push((RATELIMIT_REMAINING.clone(), remaining_value));
            let reset = small_value(reset);
            out.push((RATELIMIT_RESET.clone(), reset.clone()));
            if !admitted {
                out.push((http::header::RETRY_AFTER, reset));
            }
        }
        PendingHeaders(out)
    }

    /// Turns a store's verdict into the access decision.
    fn decide(&self, ctx: &mut Ctx, observed: &[Observed], admitted: bool, now_ms: i64) -> Flow {
        let headers = if self.hide_client_headers {
            None
        } else {
            Some(self.headers(observed, admitted, now_ms))
        };
        if admitted {
            if let Some(h) = headers {
                ctx.state.insert(h);
            }
            return Flow::Continue;
        }
        let mut r = Response::message(self.error_status, &self.error_message);
        if let Some(h) = headers {
            for (k, v) in h.0 {
                r.headers.insert(k, v);
            }
        }
        Flow::Respond(r)
    }

    fn store_failed(&self, err: &redis_policy::RedisFailure) -> Flow {
        if self.fault_tolerant {
            tracing::warn!(error = %err, "rate-limiting: cannot reach Redis, request let through (fault_tolerant)");
            Flow::Continue
        } else {
            tracing::error!(error = %err, "rate-limiting: cannot reach Redis");
            Flow::Respond(Response::message(
                StatusCode::INTERNAL_SERVER_ERROR,
                "An unexpected error occurred",
            ))
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Plugin for RateLimiting {
    fn response_header_names(&self) -> Option<Vec<HeaderName>> {
        // Every header `headers` may set.
        let mut names: Vec<HeaderName> = self
            .names
            .iter()
            .flat_map(|(l, r)| [l.clone(), r.clone()])
            .collect();
        names.extend([
            RATELIMIT_LIMIT.clone(),
            RATELIMIT_REMAINING.clone(),
            RATELIMIT_RESET.clone(),
            http::header::RETRY_AFTER,
        ]);
        Some(names)
    }

    fn name(&self) -> &'static str {
        "rate-limiting"
    }

    fn access<'a>(&'a self, ctx: &'a mut Ctx) -> Access<'a> {
        let now = now_ms();
        let identifier = self.identifier(ctx);
        match &self.policy {
            Policy::Local => {
                let mut key = String::with_capacity(self.key_prefix.len() + identifier.len());
                key.push_str(&self.key_prefix);
                key.push_str(&identifier);
                let (observed, admitted) =
                    LocalStore::global().hit(&key, &self.limits, self.sliding, now);
                Access::Now(self.decide(ctx, &observed, admitted, now))
            }
            Policy::Redis(store) => {
                let mut keys = Vec::with_capacity(self.limits.len());
                let mut starts = Vec::with_capacity(self.limits.len());
                for l in &self.limits {
                    let start = self.window_start(l.period, now);
                    let len = l.period.seconds() * 1000;
                    let name = l.period.name();
                    let cur = format!("{}{identifier}:{start}:{name}", self.key_prefix);
                    let prev = if self.sliding {
                        format!("{}{identifier}:{}:{name}", self.key_prefix, start - len)
                    } else {
                        cur.clone()
                    };
                    keys.push((cur, prev));
                    starts.push(start);
                }
                Access::Later(Box::pin(async move {
                    match store
                        .hit(&keys, &self.limits, &starts, self.sliding, now)
                        .await
                    {
                        Ok((observed, admitted)) => self.decide(ctx, &observed, admitted, now),
                        Err(e) => self.store_failed(&e),
                    }
                }))
            }
        }
    }

    fn response_headers(&self, ctx: &mut Ctx, head: &mut ResponseHead) {
        if let Some(PendingHeaders(h)) = ctx.state.remove::<PendingHeaders>() {
            for (k, v) in h {
                head.headers.insert(k, v);
            }
        }
    }
}

#[cfg(test)]
mod tests;
