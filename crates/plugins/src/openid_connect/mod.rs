//! `openid-connect`: Kong Enterprise's OpenID Connect plugin, with Kong's field names.
//!
//! Methods (`auth_methods`): `bearer` (JWT access tokens verified locally against the issuer's
//! JWKS), `introspection` (RFC 7662), `password` and `client_credentials` (the gateway calls
//! the token endpoint with credentials from the request's Basic header or query), and
//! `authorization_code` + `session` for browsers (redirect with state, nonce and PKCE S256;
//! the callback is handled on the route; the session lives in an AES-256-GCM sealed cookie;
//! access tokens are refreshed when they expire; logout redirects to the end_session endpoint).
//!
//! Then: claim checks (`audience_required`, `scopes_required`, `groups_required`,
//! `roles_required`; 403 when not met), consumer mapping (`consumer_claim` + `consumer_by`),
//! and upstream headers (the access token, selected claims).
//!
//! Answers: 401 `Unauthorized` for a missing, bad or expired credential; 403 `Forbidden` for a
//! valid one that lacks a required claim or maps to no consumer; 503 `An unexpected error
//! occurred` when the provider cannot be reached or its documents are unusable (the details
//! go to the log, never to the client, and never with a token or secret).

mod claims;
mod config;
mod provider;
mod session;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use http::{HeaderValue, Method as HttpMethod, StatusCode};
use jsonwebtoken::{Algorithm, Validation};
use portcullis_config::Errors;
use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::auth::{authenticate, unauthorized};
use crate::catalog::{Catalog, ConsumerInfo};
use crate::{Access, Ctx, Flow, Plugin, Response, ResponseHead};

pub use config::{check_provider_url, is_loopback_host};
use config::{Conf, Method, SameSite};
use provider::{Provider, ProviderError, TtlCache};
use session::{pkce_challenge, random_token, AuthState, Sealer, Session};

/// Most cached tokens / introspection answers per plugin instance.
const CACHE_MAX: usize = 10_000;
/// Most revoked (logged out) session ids remembered.
const REVOKED_MAX: usize = 100_000;
/// A session's access token is refreshed when it has less than this many seconds left.
const REFRESH_MARGIN: i64 = 10;
/// How long the result of one refresh is reused for the same refresh token.
const REFRESH_REUSE: Duration = Duration::from_secs(30);
/// Browsers drop cookies larger than about 4 KiB.
const COOKIE_MAX: usize = 4000;

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Why a request was not authenticated.
enum Fail {
    /// No usable credential: 401 (or the anonymous consumer).
    Unauthorized,
    /// A valid credential without what the route requires: 403.
    Forbidden,
    /// The provider is not usable: 503.
    Unavailable,
    /// A finished answer (a redirect).
    Respond(Box<Response>),
}

impl From<ProviderError> for Fail {
    fn from(e: ProviderError) -> Fail {
        match e {
            ProviderError::Refused(reason) => {
                tracing::info!(%reason, "openid-connect: provider refused the credentials");
                Fail::Unauthorized
            }
            ProviderError::Unavailable(reason) => {
                tracing::warn!(%reason, "openid-connect: provider unavailable");
                Fail::Unavailable
            }
        }
    }
}

/// A verified request: the access token, its claims, and what to do with the session cookie.
struct Authed {
    access_token: String,
    id_token: Option<String>,
    claims: Arc<Value>,
    /// Where the credential came from, for hiding it from the upstream.
    source: Source,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    BearerHeader,
    BearerQuery,
    BearerCookie,
    BasicHeader,
    QueryCredentials,
    Session,
}

/// Set-Cookie values to send with the response (session renewed, refreshed or cleared).
#[derive(Clone, Default)]
struct PendingCookies(Vec<HeaderValue>);

/// A compiled `openid-connect` instance.
pub struct OpenIdConnect {
    conf: Conf,
    provider: Provider,
    sealer: Sealer,
    catalog: Arc<Catalog>,
    tokens: TtlCache<String>,
    introspected: TtlCache<Arc<Value>>,
    refreshed: TtlCache<provider::Tokens>,
    revoked: Mutex<HashMap<String, i64>>,
}

impl OpenIdConnect {
    /// Validates the config; does no network I/O.
    pub fn build(
        config: &Value,
        path: &str,
        errs: &mut Errors,
        catalog: &Arc<Catalog>,
    ) -> Option<OpenIdConnect> {
        let conf = Conf::read(config, path, errs, catalog)?;
        let provider = Provider::new(&conf);
        let sealer = Sealer::new(conf.session_secret.as_deref());
        Some(OpenIdConnect {
            conf,
            provider,
            sealer,
            catalog: catalog.clone(),
            tokens: TtlCache::new(CACHE_MAX),
            introspected: TtlCache::new(CACHE_MAX),
            refreshed: TtlCache::new(CACHE_MAX),
            revoked: Mutex::new(HashMap::new()),
        })
    }

    fn sessions_enabled(&self) -> bool {
        self.conf.has(Method::Session) || self.conf.has(Method::AuthorizationCode)
    }

    async fn run(&self, ctx: &mut Ctx) -> Flow {
        if !self.conf.run_on_preflight && ctx.method == HttpMethod::OPTIONS {
            return Flow::Continue;
        }
        if self.conf.anonymous.skip(ctx) {
            return Flow::Continue;
        }
        if self.is_logout(ctx) {
            return Flow::Respond(self.logout(ctx).await);
        }
        let result = match self.authenticate(ctx).await {
            Ok(a) => self.authorize(ctx, a),
            Err(f) => Err(f),
        };
        match result {
            Ok(()) => Flow::Continue,
            Err(Fail::Respond(r)) => Flow::Respond(self.with_cookies(ctx, *r)),
            Err(Fail::Unauthorized) => {
                let r = unauthorized(
                    &self.conf.unauthorized_error_message,
                    "Bearer error=\"invalid_token\"",
                );
                let r = self.with_cookies(ctx, r);
                self.conf.anonymous.fail(ctx, r)
            }
            Err(Fail::Forbidden) => {
                let mut r =
                    Response::message(StatusCode::FORBIDDEN, &self.conf.forbidden_error_message);
                r.headers.insert(
                    http::header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer error=\"insufficient_scope\""),
                );
                Flow::Respond(self.with_cookies(ctx, r))
            }
            Err(Fail::Unavailable) => Flow::Respond(self.with_cookies(
                ctx,
                Response::message(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "An unexpected error occurred",
                ),
            )),
        }
    }

    /// Adds the pending Set-Cookie values to a short-circuit answer.
    fn with_cookies(&self, ctx: &mut Ctx, mut r: Response) -> Response {
        if let Some(p) = ctx.state.remove::<PendingCookies>() {
            for v in p.0 {
                r.headers.append(http::header::SET_COOKIE, v);
            }
        }
        r
    }

    fn push_cookie(ctx: &mut Ctx, v: Option<HeaderValue>) {
        if let Some(v) = v {
            match ctx.state.get_mut::<PendingCookies>() {
                Some(p) => p.0.push(v),
                None => {
                    ctx.state.insert(PendingCookies(vec![v]));
                }
            }
        }
    }

    // ---------------------------------------------------------------- authentication

    async fn authenticate(&self, ctx: &mut Ctx) -> Result<Authed, Fail> {
        if self.sessions_enabled() {
            if let Some(a) = self.by_session(ctx).await? {
                return Ok(a);
            }
        }
        if self.conf.has(Method::AuthorizationCode) {
            if let Some(r) = self.callback(ctx).await? {
                return Err(Fail::Respond(Box::new(r)));
            }
        }
        if let Some((token, source)) = self.bearer_token(ctx) {
            let claims = self.verify_presented(&token).await?;
            return Ok(Authed {
                access_token: token,
                id_token: None,
                claims,
                source,
            });
        }
        if let Some(a) = self.by_grant(ctx).await? {
            return Ok(a);
        }
        if self.conf.has(Method::AuthorizationCode)
            && matches!(ctx.method, HttpMethod::GET | HttpMethod::HEAD)
        {
            return Err(Fail::Respond(Box::new(self.start_login(ctx).await?)));
        }
        Err(Fail::Unauthorized)
    }

    /// A token presented by the client: JWTs are verified locally (bearer), other tokens are
    /// introspected (introspection).
    async fn verify_presented(&self, token: &str) -> Result<Arc<Value>, Fail> {
        let is_jwt = token.split('.').count() == 3;
        if is_jwt && self.conf.has(Method::Bearer) {
            match self.verify_jwt(token, None).await {
                Err(Fail::Unauthorized)
                    if self.conf.introspect_jwt_tokens && self.conf.has(Method::Introspection) => {}
                other => return other,
            }
        }
        if self.conf.has(Method::Introspection)
            && (!is_jwt || self.conf.introspect_jwt_tokens || !self.conf.has(Method::Bearer))
        {
            return self.introspect(token).await;
        }
        Err(Fail::Unauthorized)
    }

    /// A token the gateway itself received from the token endpoint: verified locally when it
    /// is a JWT, introspected when it is opaque and introspection is possible, else described
    /// by the (verified) ID token's claims.
    async fn verify_obtained(
        &self,
        token: &str,
        id_claims: Option<Arc<Value>>,
    ) -> Result<Arc<Value>, Fail> {
        if token.split('.').count() == 3 {
            return self.verify_jwt(token, None).await;
        }
        if self.conf.has(Method::Introspection) {
            return self.introspect(token).await;
        }
        Ok(id_claims.unwrap_or_else(|| Arc::new(Value::Object(Default::default()))))
    }

    /// Verifies a JWT against the provider's keys. `id_token` = (client id, nonce) switches to
    /// ID token rules (audience is the client, nonce must match).
    async fn verify_jwt(
        &self,
        token: &str,
        id_token: Option<(&str, &str)>,
    ) -> Result<Arc<Value>, Fail> {
        // Unknown algorithms (including `none`) fail to parse here.
        let header = jsonwebtoken::decode_header(token).map_err(|_| Fail::Unauthorized)?;
        let alg = header.alg;
        if matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
            return Err(Fail::Unauthorized);
        }
        let mut keys = self.provider.keys().await?;
        let pick = |keys: &provider::Keys| -> Vec<usize> {
            keys.keys
                .iter()
                .enumerate()
                .filter(|(_, k)| {
                    k.fits(alg)
                        && (header.kid.is_none() || k.kid.as_deref() == header.kid.as_deref())
                })
                .map(|(i, _)| i)
                .collect()
        };
        let mut candidates = pick(&keys);
        if candidates.is_empty() {
            if header.kid.is_none() {
                return Err(Fail::Unauthorized);
            }
            // An unknown kid: the provider may have rotated its keys.
            keys = self.provider.refresh_keys().await?;
            candidates = pick(&keys);
        }
        let mut v = Validation::new(alg);
        v.leeway = self.conf.leeway as u64;
        v.validate_exp = true;
        v.validate_nbf = true;
        v.set_required_spec_claims(&["exp", "iss"]);
        let issuer = self.provider.issuer().to_string();
        v.set_issuer(&[issuer.clone(), format!("{issuer}/")]);
        match id_token {
            Some((client_id, _)) => v.set_audience(&[client_id]),
            None => v.validate_aud = false,
        }
        for i in candidates {
            let Some(k) = keys.keys.get(i) else { continue };
            match jsonwebtoken::decode::<Value>(token, &k.key, &v) {
                Ok(data) => {
                    if let Some((_, nonce)) = id_token {
                        let got = data
                            .claims
                            .get("nonce")
                            .and_then(Value::as_str)
                            .unwrap_or("");
                        if !bool::from(got.as_bytes().ct_eq(nonce.as_bytes())) {
                            tracing::info!("openid-connect: id token nonce mismatch");
                            return Err(Fail::Unauthorized);
                        }
                    }
                    return Ok(Arc::new(data.claims));
                }
                Err(e) => {
                    use jsonwebtoken::errors::ErrorKind;
                    match e.kind() {
                        ErrorKind::InvalidSignature => continue,
                        kind => {
                            tracing::debug!(reason = ?kind, "openid-connect: token refused");
                            return Err(Fail::Unauthorized);
                        }
                    }
                }
            }
        }
        tracing::debug!("openid-connect: no key verifies the token");
        Err(Fail::Unauthorized)
    }

    async fn introspect(&self, token: &str) -> Result<Arc<Value>, Fail> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if self.conf.cache_introspection {
            if let Some(c) = self.introspected.get(&key) {
                return Ok(c);
            }
        }
        let answer = self
            .provider
            .introspect(token, &self.conf.introspection_hint)
            .await?;
        if self.conf.introspection_check_active && answer.get("active") != Some(&Value::Bool(true))
        {
            tracing::debug!("openid-connect: introspection says inactive");
            return Err(Fail::Unauthorized);
        }
        let now = now();
        let exp = answer.get("exp").and_then(Value::as_i64);
        if exp.is_some_and(|e| e + self.conf.leeway <= now) {
            return Err(Fail::Unauthorized);
        }
        if let Some(iss) = answer.get("iss").and_then(Value::as_str) {
            if iss.trim_end_matches('/') != self.provider.issuer() {
                return Err(Fail::Unauthorized);
            }
        }
        let claims = Arc::new(answer);
        if self.conf.cache_introspection {
            let ttl = exp.map_or(self.conf.cache_ttl, |e| (e - now).min(self.conf.cache_ttl));
            self.introspected
                .put(key, claims.clone(), Duration::from_secs(ttl.max(0) as u64));
        }
        Ok(claims)
    }

    /// The bearer token the request carries, per `bearer_token_param_type`.
    fn bearer_token(&self, ctx: &Ctx) -> Option<(String, Source)> {
        if !(self.conf.has(Method::Bearer) || self.conf.has(Method::Introspection)) {
            return None;
        }
        let p = &self.conf.bearer_token_param_type;
        if p.header {
            if let Some(v) = ctx
                .headers
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
            {
                if let Some((scheme, t)) = v.trim().split_once(' ') {
                    if scheme.eq_ignore_ascii_case("bearer") && !t.trim().is_empty() {
                        return Some((t.trim().to_string(), Source::BearerHeader));
                    }
                }
            }
        }
        if p.query {
            if let Some(v) = ctx.query_arg("access_token").filter(|v| !v.is_empty()) {
                return Some((decode_component(v), Source::BearerQuery));
            }
        }
        if p.cookie {
            if let Some(name) = &self.conf.bearer_token_cookie_name {
                if let Some(v) = cookie(ctx, name) {
                    return Some((v, Source::BearerCookie));
                }
            }
        }
        None
    }

    /// password and client_credentials: the gateway fetches a token with the request's
    /// credentials (cached briefly under a digest of them).
    async fn by_grant(&self, ctx: &mut Ctx) -> Result<Option<Authed>, Fail> {
        let pw = self.conf.has(Method::Password);
        let cc = self.conf.has(Method::ClientCredentials);
        if !pw && !cc {
            return Ok(None);
        }
        let basic = basic_credentials(ctx);
        let query = |a: &str, b: &str| -> Option<(String, String)> {
            Some((
                decode_component(ctx.query_arg(a)?),
                decode_component(ctx.query_arg(b)?),
            ))
        };
        let pw_creds = if pw {
            let h = basic
                .clone()
                .filter(|_| self.conf.password_param_type.header)
                .map(|c| (c, Source::BasicHeader));
            h.or_else(|| {
                self.conf
                    .password_param_type
                    .query
                    .then(|| query("username", "password"))
                    .flatten()
                    .map(|c| (c, Source::QueryCredentials))
            })
        } else {
            None
        };
        let cc_creds = if cc {
            let h = basic
                .filter(|_| self.conf.client_credentials_param_type.header)
                .map(|c| (c, Source::BasicHeader));
            h.or_else(|| {
                self.conf
                    .client_credentials_param_type
                    .query
                    .then(|| query("client_id", "client_secret"))
                    .flatten()
                    .map(|c| (c, Source::QueryCredentials))
            })
        } else {
            None
        };
        if pw_creds.is_none() && cc_creds.is_none() {
            return Ok(None);
        }
        let mut last = Fail::Unauthorized;
        if let Some(((user, pass), source)) = pw_creds {
            match self.grant("password", &user, &pass).await {
                Ok(token) => return self.grant_authed(token, source).await.map(Some),
                Err(f) => last = f,
            }
        }
        if let Some(((id, secret), source)) = cc_creds {
            match self.grant("client_credentials", &id, &secret).await {
                Ok(token) => return self.grant_authed(token, source).await.map(Some),
                Err(f) => last = f,
            }
        }
        Err(last)
    }

    async fn grant_authed(&self, token: String, source: Source) -> Result<Authed, Fail> {
        let claims = self.verify_obtained(&token, None).await?;
        Ok(Authed {
            access_token: token,
            id_token: None,
            claims,
            source,
        })
    }

    async fn grant(&self, kind: &'static str, a: &str, b: &str) -> Result<String, Fail> {
        let mut h = Sha256::new();
        for part in [kind, a, b] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        let key: [u8; 32] = h.finalize().into();
        if self.conf.cache_tokens {
            if let Some(t) = self.tokens.get(&key) {
                return Ok(t);
            }
        }
        let scope = self.conf.scopes.join(" ");
        let mut form = vec![("grant_type", kind.to_string())];
        if !scope.is_empty() {
            form.push(("scope", scope));
        }
        let tokens = if kind == "password" {
            form.push(("username", a.to_string()));
            form.push(("password", b.to_string()));
            self.provider.token(form, None).await?
        } else {
            self.provider
                .token(form, Some((a.to_string(), b.to_string())))
                .await?
        };
        if self.conf.cache_tokens {
            // Briefly: never past the token's own lifetime (less a margin), at most cache_ttl.
            let ttl = tokens
                .expires_in
                .map_or(60, |e| e - 5)
                .min(self.conf.cache_ttl)
                .max(0);
            self.tokens.put(
                key,
                tokens.access_token.clone(),
                Duration::from_secs(ttl as u64),
            );
        }
        Ok(tokens.access_token)
    }

    // ---------------------------------------------------------------- sessions

    fn is_revoked(&self, sid: &str) -> bool {
        self.revoked
            .lock()
            .map(|m| m.get(sid).is_some_and(|until| *until > now()))
            .unwrap_or(true)
    }

    async fn by_session(&self, ctx: &mut Ctx) -> Result<Option<Authed>, Fail> {
        let name = &self.conf.session_cookie_name;
        let Some(raw) = cookie(ctx, name) else {
            return Ok(None);
        };
        let now = now();
        let Some(mut s) = self.sealer.open::<Session>(name, &raw) else {
            tracing::debug!("openid-connect: session cookie does not open");
            self.clear_session_cookie(ctx);
            return Ok(None);
        };
        let rolling = self.conf.session_rolling_timeout;
        let absolute = self.conf.session_absolute_timeout;
        if self.is_revoked(&s.sid)
            || (absolute > 0 && now >= s.created + absolute)
            || (rolling > 0 && now >= s.renewed + rolling)
        {
            self.clear_session_cookie(ctx);
            return Ok(None);
        }
        let mut changed = false;
        // Refresh a little before expiry, so the upstream never gets a token about to lapse.
        if s.exp
            .is_some_and(|e| now + self.conf.leeway + REFRESH_MARGIN >= e)
        {
            let refreshed = match (&s.rt, self.conf.refresh_tokens) {
                (Some(rt), true) => {
                    // Requests racing with the same cookie (or a stale copy of it) reuse one
                    // refresh instead of spending a rotated refresh token twice.
                    let key: [u8; 32] = Sha256::digest(rt.as_bytes()).into();
                    match self.refreshed.get(&key) {
                        Some(t) => Some(t),
                        None => {
                            let form = vec![
                                ("grant_type", "refresh_token".to_string()),
                                ("refresh_token", rt.clone()),
                            ];
                            match self.provider.token(form, None).await {
                                Ok(t) => {
                                    // Reused only while the new token is not itself due.
                                    let fresh = t
                                        .expires_in
                                        .map_or(0, |e| e - REFRESH_MARGIN - self.conf.leeway);
                                    let ttl =
                                        REFRESH_REUSE.min(Duration::from_secs(fresh.max(0) as u64));
                                    self.refreshed.put(key, t.clone(), ttl);
                                    Some(t)
                                }
                                Err(ProviderError::Refused(reason)) => {
                                    tracing::info!(
                                        %reason,
                                        "openid-connect: session refresh refused"
                                    );
                                    None
                                }
                                Err(e) => return Err(e.into()),
                            }
                        }
                    }
                }
                _ => None,
            };
            let Some(t) = refreshed else {
                self.clear_session_cookie(ctx);
                return Ok(None);
            };
            s.exp = t
                .expires_in
                .map(|e| now + e)
                .or_else(|| jwt_exp(&t.access_token));
            s.at = t.access_token;
            if t.refresh_token.is_some() {
                s.rt = t.refresh_token;
            }
            if t.id_token.is_some() {
                s.it = t.id_token;
            }
            changed = true;
            tracing::debug!("openid-connect: session tokens refreshed");
        }
        // An opaque access token without introspection is described by the ID token's claims.
        // Those are trusted without a second signature check: the ID token was verified when the
        // session began, or came straight from the token endpoint over verified TLS (OpenID
        // Connect Core 3.1.3.7), and the sealed cookie proves it was not altered since.
        let id_claims = s.it.as_deref().and_then(jwt_payload).map(Arc::new);
        let claims = match self.verify_obtained(&s.at, id_claims).await {
            Ok(c) => c,
            Err(Fail::Unauthorized) => {
                self.clear_session_cookie(ctx);
                return Ok(None);
            }
            Err(f) => return Err(f),
        };
        if s.exp.is_none() {
            s.exp = claims.get("exp").and_then(Value::as_i64);
        }
        if changed || (rolling > 0 && now - s.renewed >= rolling / 2) {
            s.renewed = now;
            let v = self.session_cookie(ctx, &s);
            Self::push_cookie(ctx, v);
        }
        Ok(Some(Authed {
            access_token: s.at,
            id_token: s.it,
            claims,
            source: Source::Session,
        }))
    }

    fn cookie_attrs(&self, ctx: &Ctx, same_site: SameSite, max_age: i64, path: &str) -> String {
        let mut a = format!("; Path={path}; Max-Age={max_age}");
        if let Some(d) = &self.conf.session_cookie_domain {
            a.push_str(&format!("; Domain={d}"));
        }
        let secure = self
            .conf
            .session_cookie_secure
            .unwrap_or(ctx.scheme == "https")
            || same_site == SameSite::None;
        if secure {
            a.push_str("; Secure");
        }
        if self.conf.session_cookie_http_only {
            a.push_str("; HttpOnly");
        }
        match same_site {
            SameSite::Strict => a.push_str("; SameSite=Strict"),
            SameSite::Lax => a.push_str("; SameSite=Lax"),
            SameSite::None => a.push_str("; SameSite=None"),
            SameSite::Default => {}
        }
        a
    }

    fn session_cookie(&self, ctx: &Ctx, s: &Session) -> Option<HeaderValue> {
        let name = &self.conf.session_cookie_name;
        let mut sealed = self.sealer.seal(name, s)?;
        if sealed.len() > COOKIE_MAX && s.it.is_some() {
            // Too large for browsers: drop the ID token (logout then names the client instead).
            let mut slim = s.clone();
            slim.it = None;
            sealed = self.sealer.seal(name, &slim)?;
        }
        if sealed.len() > COOKIE_MAX {
            tracing::warn!("openid-connect: session too large for a cookie");
            return None;
        }
        let max_age = match (
            self.conf.session_rolling_timeout,
            self.conf.session_absolute_timeout,
        ) {
            (0, 0) => 86400,
            (r, 0) => r,
            (0, a) => (s.created + a - now()).max(0),
            (r, a) => r.min((s.created + a - now()).max(0)),
        };
        let attrs = self.cookie_attrs(
            ctx,
            self.conf.session_cookie_same_site,
            max_age,
            &self.conf.session_cookie_path,
        );
        HeaderValue::from_str(&format!("{name}={sealed}{attrs}")).ok()
    }

    fn clear_session_cookie(&self, ctx: &mut Ctx) {
        let attrs = self.cookie_attrs(
            ctx,
            self.conf.session_cookie_same_site,
            0,
            &self.conf.session_cookie_path,
        );
        let v = HeaderValue::from_str(&format!("{}={attrs}", self.conf.session_cookie_name)).ok();
        Self::push_cookie(ctx, v);
    }

    // ---------------------------------------------------------------- authorization code

    fn redirect_uri(&self, ctx: &Ctx) -> String {
        if let Some(u) = &self.conf.redirect_uri {
            return u.to_string();
        }
        let host = ctx
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or(&ctx.host);
        format!("{}://{}{}", ctx.scheme, host, ctx.uri.path())
    }

    async fn start_login(&self, ctx: &mut Ctx) -> Result<Response, Fail> {
        let d = self.provider.discovery().await?;
        let Some(endpoint) = d.authorization_endpoint.clone() else {
            tracing::warn!("openid-connect: the provider has no authorization endpoint");
            return Err(Fail::Unavailable);
        };
        let client_id = self.provider.client_id().ok_or(Fail::Unavailable)?;
        let redirect_uri = self.redirect_uri(ctx);
        let original = ctx
            .uri
            .path_and_query()
            .map_or_else(|| ctx.path.clone(), |p| p.as_str().to_string());
        let st = AuthState {
            state: random_token(24),
            nonce: random_token(24),
            verifier: random_token(48),
            uri: safe_local_path(&original),
            redirect_uri: redirect_uri.clone(),
            created: now(),
        };
        let mut url = endpoint;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", client_id)
            .append_pair("redirect_uri", &redirect_uri)
            .append_pair("scope", &self.conf.scopes.join(" "))
            .append_pair("state", &st.state)
            .append_pair("nonce", &st.nonce)
            .append_pair("code_challenge", &pkce_challenge(&st.verifier))
            .append_pair("code_challenge_method", "S256");
        let name = &self.conf.authorization_cookie_name;
        let sealed = self.sealer.seal(name, &st).ok_or(Fail::Unavailable)?;
        let attrs = self.cookie_attrs(
            ctx,
            SameSite::Lax,
            self.conf.authorization_rolling_timeout,
            "/",
        );
        let mut r = redirect(url.as_str());
        if let Ok(v) = HeaderValue::from_str(&format!("{name}={sealed}{attrs}")) {
            r.headers.append(http::header::SET_COOKIE, v);
        }
        Ok(r)
    }

    /// Handles the provider's redirect back (`code`/`error` + `state` with our authorization
    /// cookie). `None` when this request is not a callback.
    async fn callback(&self, ctx: &mut Ctx) -> Result<Option<Response>, Fail> {
        let Some(state) = ctx.query_arg("state").map(decode_component) else {
            return Ok(None);
        };
        let code = ctx.query_arg("code").map(decode_component);
        let error = ctx.query_arg("error").is_some();
        if code.is_none() && !error {
            return Ok(None);
        }
        let name = self.conf.authorization_cookie_name.clone();
        let Some(raw) = cookie(ctx, &name) else {
            return Ok(None);
        };
        let Some(st) = self.sealer.open::<AuthState>(&name, &raw) else {
            return Ok(None);
        };
        // From here on the authorization cookie is spent, whatever happens.
        let clear = self.cookie_attrs(ctx, SameSite::Lax, 0, "/");
        Self::push_cookie(ctx, HeaderValue::from_str(&format!("{name}={clear}")).ok());
        if now() > st.created + self.conf.authorization_rolling_timeout
            || !bool::from(st.state.as_bytes().ct_eq(state.as_bytes()))
        {
            tracing::info!("openid-connect: callback state mismatch or expired");
            return Err(Fail::Unauthorized);
        }
        let Some(code) = code.filter(|_| !error) else {
            tracing::info!("openid-connect: the provider returned an authorization error");
            return Err(Fail::Unauthorized);
        };
        let form = vec![
            ("grant_type", "authorization_code".to_string()),
            ("code", code),
            ("redirect_uri", st.redirect_uri.clone()),
            ("code_verifier", st.verifier.clone()),
        ];
        let tokens = self.provider.token(form, None).await?;
        let client_id = self.provider.client_id().unwrap_or_default().to_string();
        if let Some(it) = &tokens.id_token {
            self.verify_jwt(it, Some((&client_id, &st.nonce))).await?;
        } else if self.conf.scopes.iter().any(|s| s == "openid") {
            tracing::info!("openid-connect: no id token in the code exchange");
            return Err(Fail::Unauthorized);
        }
        let now = now();
        let exp = tokens
            .expires_in
            .map(|e| now + e)
            .or_else(|| jwt_exp(&tokens.access_token));
        let s = Session {
            sid: random_token(24),
            at: tokens.access_token,
            exp,
            rt: tokens.refresh_token,
            it: tokens.id_token,
            created: now,
            renewed: now,
        };
        let Some(cookie) = self.session_cookie(ctx, &s) else {
            return Err(Fail::Unavailable);
        };
        let target = self
            .conf
            .login_redirect_uri
            .clone()
            .unwrap_or_else(|| st.uri.clone());
        let mut r = redirect(&target);
        r.headers.append(http::header::SET_COOKIE, cookie);
        tracing::info!("openid-connect: session started");
        Ok(Some(r))
    }

    fn is_logout(&self, ctx: &Ctx) -> bool {
        if !self.sessions_enabled() || !self.conf.logout_methods.contains(&ctx.method) {
            return false;
        }
        let by_suffix = self
            .conf
            .logout_uri_suffix
            .as_deref()
            .is_some_and(|s| !s.is_empty() && ctx.path.ends_with(s));
        let by_arg = self
            .conf
            .logout_query_arg
            .as_deref()
            .is_some_and(|a| ctx.query_arg(a).is_some());
        by_suffix || by_arg
    }

    async fn logout(&self, ctx: &mut Ctx) -> Response {
        let name = self.conf.session_cookie_name.clone();
        let session = cookie(ctx, &name).and_then(|raw| self.sealer.open::<Session>(&name, &raw));
        if let Some(s) = &session {
            let until = s.created + self.conf.session_absolute_timeout.max(86400);
            if let Ok(mut m) = self.revoked.lock() {
                if m.len() >= REVOKED_MAX {
                    let n = now();
                    m.retain(|_, u| *u > n);
                }
                if m.len() < REVOKED_MAX {
                    m.insert(s.sid.clone(), until);
                }
            }
            tracing::info!("openid-connect: session ended");
        }
        self.clear_session_cookie(ctx);
        let end_session = match self.provider.discovery().await {
            Ok(d) => d.end_session_endpoint.clone(),
            Err(e) => {
                tracing::warn!(error = %e, "openid-connect: logout without the provider");
                None
            }
        };
        let r = match end_session {
            Some(mut url) => {
                {
                    let mut q = url.query_pairs_mut();
                    match session.as_ref().and_then(|s| s.it.as_deref()) {
                        Some(it) => {
                            q.append_pair("id_token_hint", it);
                        }
                        None => {
                            if let Some(id) = self.provider.client_id() {
                                q.append_pair("client_id", id);
                            }
                        }
                    }
                    if let Some(u) = &self.conf.logout_redirect_uri {
                        q.append_pair("post_logout_redirect_uri", u);
                    }
                }
                redirect(url.as_str())
            }
            None => match &self.conf.logout_redirect_uri {
                Some(u) => redirect(u),
                None => Response::message(StatusCode::OK, "Logged out"),
            },
        };
        self.with_cookies(ctx, r)
    }

    // ---------------------------------------------------------------- authorization

    fn authorize(&self, ctx: &mut Ctx, a: Authed) -> Result<(), Fail> {
        let c = &a.claims;
        let checks = [
            (&self.conf.audience_claim, &self.conf.audience_required),
            (&self.conf.scopes_claim, &self.conf.scopes_required),
            (&self.conf.groups_claim, &self.conf.groups_required),
            (&self.conf.roles_claim, &self.conf.roles_required),
        ];
        for (claim, required) in checks {
            if !claims::satisfies(c, claim, required) {
                tracing::debug!(claim = %claim.join("."), "openid-connect: required claim not met");
                return Err(Fail::Forbidden);
            }
        }
        let credential = claims::lookup(c, &self.conf.credential_claim)
            .map(claims::header_value)
            .unwrap_or_default();
        if !self.conf.consumer_claim.is_empty() {
            let consumer = claims::lookup(c, &self.conf.consumer_claim)
                .and_then(|v| v.as_str().map(str::to_string))
                .and_then(|v| self.find_consumer(&v));
            match consumer {
                Some(consumer) => authenticate(ctx, consumer, credential),
                None if self.conf.consumer_optional => {}
                None => {
                    tracing::info!("openid-connect: no consumer for the token's consumer claim");
                    return Err(Fail::Forbidden);
                }
            }
        }
        self.upstream_headers(ctx, &a);
        Ok(())
    }

    fn find_consumer(&self, value: &str) -> Option<Arc<ConsumerInfo>> {
        self.conf
            .consumer_by
            .iter()
            .find_map(|by| match by.as_str() {
                "id" => self.catalog.consumer_by_id(value),
                "username" => self
                    .catalog
                    .consumer_by_username(value, self.conf.by_username_ignore_case),
                "custom_id" => self.catalog.consumer_by_custom_id(value),
                _ => None,
            })
    }

    fn upstream_headers(&self, ctx: &mut Ctx, a: &Authed) {
        // The gateway's own cookies never reach the upstream.
        strip_cookies(
            ctx,
            &[
                &self.conf.session_cookie_name,
                &self.conf.authorization_cookie_name,
            ],
        );
        match a.source {
            // Passwords and client secrets were meant for the provider, not the upstream.
            Source::BasicHeader => {
                ctx.headers.remove(http::header::AUTHORIZATION);
            }
            Source::QueryCredentials => {
                for arg in ["username", "password", "client_id", "client_secret"] {
                    ctx.remove_query_arg(arg);
                }
            }
            Source::BearerHeader if self.conf.hide_credentials => {
                ctx.headers.remove(http::header::AUTHORIZATION);
            }
            Source::BearerQuery if self.conf.hide_credentials => {
                ctx.remove_query_arg("access_token");
            }
            Source::BearerCookie if self.conf.hide_credentials => {
                if let Some(n) = &self.conf.bearer_token_cookie_name {
                    strip_cookies(ctx, &[n]);
                }
            }
            _ => {}
        }
        if let Some((name, bearer)) = &self.conf.upstream_access_token_header {
            let v = if *bearer {
                format!("Bearer {}", a.access_token)
            } else {
                a.access_token.clone()
            };
            if let (Ok(n), Ok(v)) = (
                http::HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(&v),
            ) {
                ctx.headers.insert(n, v);
            }
        }
        if let (Some(name), Some(it)) = (&self.conf.upstream_id_token_header, &a.id_token) {
            if let (Ok(n), Ok(v)) = (
                http::HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(it),
            ) {
                ctx.headers.insert(n, v);
            }
        }
        for (claim, name) in self
            .conf
            .upstream_headers_claims
            .iter()
            .zip(&self.conf.upstream_headers_names)
        {
            let Ok(n) = http::HeaderName::from_bytes(name.as_bytes()) else {
                continue;
            };
            // A client's own copy of a claim header is never forwarded.
            ctx.headers.remove(&n);
            let path: Vec<String> = claim.split('.').map(str::to_string).collect();
            let value = claims::lookup(&a.claims, std::slice::from_ref(claim))
                .or_else(|| claims::lookup(&a.claims, &path));
            if let Some(v) = value {
                if let Ok(v) = HeaderValue::from_str(&claims::header_value(v)) {
                    ctx.headers.insert(n, v);
                }
            }
        }
    }
}

impl Plugin for OpenIdConnect {
    fn name(&self) -> &'static str {
        "openid-connect"
    }

    fn access<'a>(&'a self, ctx: &'a mut Ctx) -> Access<'a> {
        // Headers this plugin fills for the upstream are never taken from the client, on any
        // path (also when the plugin is skipped or falls back to anonymous).
        for name in self
            .conf
            .upstream_headers_names
            .iter()
            .chain(self.conf.upstream_id_token_header.iter())
        {
            if let Ok(n) = http::HeaderName::from_bytes(name.as_bytes()) {
                ctx.headers.remove(n);
            }
        }
        Access::Later(Box::pin(self.run(ctx)))
    }

    fn response_headers(&self, ctx: &mut Ctx, head: &mut ResponseHead) {
        if let Some(p) = ctx.state.remove::<PendingCookies>() {
            for v in p.0 {
                head.headers.append(http::header::SET_COOKIE, v);
            }
        }
    }
}

/// A JWT's payload, unverified: only for tokens whose authenticity is established otherwise.
fn jwt_payload(token: &str) -> Option<Value> {
    let payload = token.split('.').nth(1)?;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    serde_json::from_slice::<Value>(&raw).ok()
}

/// The `exp` of a JWT's payload, unverified (only to schedule a refresh).
fn jwt_exp(token: &str) -> Option<i64> {
    jwt_payload(token)?.get("exp")?.as_i64()
}

fn redirect(location: &str) -> Response {
    let mut r = Response::message(StatusCode::FOUND, "Found");
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers.insert(http::header::LOCATION, v);
    }
    r.headers.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    r
}

/// Only a local absolute path may be a return target (no `//host` or `/\host` open redirect).
fn safe_local_path(p: &str) -> String {
    if p.starts_with('/') && !p.starts_with("//") && !p.starts_with("/\\") {
        p.to_string()
    } else {
        "/".to_string()
    }
}

fn decode_component(v: &str) -> String {
    let v = v.replace('+', " ");
    percent_encoding::percent_decode_str(&v)
        .decode_utf8_lossy()
        .into_owned()
}

/// The first value of cookie `name`.
fn cookie(ctx: &Ctx, name: &str) -> Option<String> {
    ctx.headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == name && !v.is_empty()).then(|| v.to_string())
        })
}

/// Removes the named cookies from the request's Cookie headers.
fn strip_cookies(ctx: &mut Ctx, names: &[&String]) {
    let values: Vec<String> = ctx
        .headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::to_string)
        .collect();
    if values.is_empty() {
        return;
    }
    let kept: Vec<String> = values
        .iter()
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|kv| {
            let k = kv.split_once('=').map_or(*kv, |(k, _)| k);
            !kv.is_empty() && !names.iter().any(|n| n.as_str() == k)
        })
        .map(str::to_string)
        .collect();
    ctx.headers.remove(http::header::COOKIE);
    if !kept.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&kept.join("; ")) {
            ctx.headers.insert(http::header::COOKIE, v);
        }
    }
}

/// `Authorization: Basic` user and password.
fn basic_credentials(ctx: &Ctx) -> Option<(String, String)> {
    let v = ctx
        .headers
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, b64) = v.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (u, p) = text.split_once(':')?;
    (!u.is_empty()).then(|| (u.to_string(), p.to_string()))
}
