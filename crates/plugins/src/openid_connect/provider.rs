//! Talking to the OpenID provider: discovery, JWKS, the token and introspection endpoints.
//!
//! Nothing is fetched at config load. Discovery runs on the first request that needs it and is
//! retried at most once per `rediscovery_lifetime` seconds after a failure; the JWKS is fetched
//! with it and refetched when a token names an unknown `kid`, again at most once per
//! `rediscovery_lifetime`. Every URL the provider hands out must be https (or http to a
//! loopback host); TLS is verified against the webpki roots plus `ca_certificates_pem`.
//! Responses are size-capped, redirects are not followed, and no token or secret is logged.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use base64::Engine;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey};
use reqwest::Url;
use serde_json::Value;
use thiserror::Error;

use super::config::{check_provider_url, ClientAuth, Conf};

/// Largest provider response read (discovery, JWKS, token, introspection).
const MAX_BODY: usize = 1 << 20;

/// Why a provider call failed. Never shown to clients; logged without secrets.
#[derive(Debug, Error)]
pub enum ProviderError {
    /// Network, TLS, timeout, or an unusable document: the provider is not usable right now.
    #[error("provider unavailable: {0}")]
    Unavailable(String),
    /// The provider refused the credentials or grant (4xx with an OAuth error).
    #[error("provider refused the request: {0}")]
    Refused(String),
}

/// What discovery told us (with the config's endpoint overrides applied).
#[derive(Debug)]
pub struct Discovery {
    pub authorization_endpoint: Option<Url>,
    pub token_endpoint: Option<Url>,
    pub introspection_endpoint: Option<Url>,
    pub end_session_endpoint: Option<Url>,
    pub jwks_uri: Url,
}

/// A verification key from the JWKS.
pub struct Key {
    pub kid: Option<String>,
    pub alg: Option<Algorithm>,
    pub key: DecodingKey,
    family: Family,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Rsa,
    Ec,
    Okp,
}

impl Key {
    /// Can this key verify a token signed with `alg`?
    pub fn fits(&self, alg: Algorithm) -> bool {
        if let Some(a) = self.alg {
            if a != alg {
                return false;
            }
        }
        matches!(
            (self.family, alg),
            (
                Family::Rsa,
                Algorithm::RS256
                    | Algorithm::RS384
                    | Algorithm::RS512
                    | Algorithm::PS256
                    | Algorithm::PS384
                    | Algorithm::PS512
            ) | (Family::Ec, Algorithm::ES256 | Algorithm::ES384)
                | (Family::Okp, Algorithm::EdDSA)
        )
    }
}

/// The provider's current signing keys.
pub struct Keys {
    pub keys: Vec<Key>,
}

/// A token endpoint answer.
#[derive(Debug, Clone)]
pub struct Tokens {
    pub access_token: String,
    pub id_token: Option<String>,
    pub refresh_token: Option<String>,
    pub expires_in: Option<i64>,
}

#[derive(Default)]
struct Attempts {
    discovery: Option<Instant>,
    jwks: Option<Instant>,
}

/// One provider, shared by every request of a plugin instance.
pub struct Provider {
    issuer: Url,
    issuer_str: String,
    client_id: Option<String>,
    client_secret: Option<String>,
    client_auth: ClientAuth,
    overrides: Overrides,
    ca_pems: Vec<String>,
    timeout: Duration,
    min_refetch: Duration,
    http: OnceLock<Result<reqwest::Client, String>>,
    discovery: RwLock<Option<Arc<Discovery>>>,
    keys: RwLock<Option<Arc<Keys>>>,
    attempts: Mutex<Attempts>,
    fetching: tokio::sync::Mutex<()>,
}

struct Overrides {
    token: Option<Url>,
    introspection: Option<Url>,
    authorization: Option<Url>,
    end_session: Option<Url>,
}

/// Parses PEM text into DER certificates (at least one).
pub fn parse_pem_certs(pem: &str) -> Result<Vec<Vec<u8>>, String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut out = Vec::new();
    let mut cur: Option<String> = None;
    for line in pem.lines() {
        let line = line.trim();
        if line == "-----BEGIN CERTIFICATE-----" {
            cur = Some(String::new());
        } else if line == "-----END CERTIFICATE-----" {
            let body = cur.take().ok_or("unbalanced PEM")?;
            out.push(b64.decode(body).map_err(|_| "bad base64 in PEM")?);
        } else if let Some(c) = cur.as_mut() {
            c.push_str(line);
        }
    }
    if out.is_empty() || cur.is_some() {
        return Err("no certificate".into());
    }
    Ok(out)
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> ProviderError {
    ProviderError::Unavailable(format!("{what}: {e}"))
}

/// Removes the query from a URL for logging (it may carry tokens).
fn redact(u: &Url) -> String {
    let mut u = u.clone();
    u.set_query(None);
    u.to_string()
}

impl Provider {
    /// A provider handle; does no I/O.
    pub fn new(conf: &Conf) -> Provider {
        let issuer_str = conf.issuer.as_str().trim_end_matches('/').to_string();
        Provider {
            issuer: conf.issuer.clone(),
            issuer_str,
            client_id: conf.client_id.clone(),
            client_secret: conf.client_secret.clone(),
            client_auth: conf.client_auth,
            overrides: Overrides {
                token: conf.token_endpoint.clone(),
                introspection: conf.introspection_endpoint.clone(),
                authorization: conf.authorization_endpoint.clone(),
                end_session: conf.end_session_endpoint.clone(),
            },
            ca_pems: conf.ca_certificates_pem.clone(),
            timeout: Duration::from_millis(conf.timeout_ms),
            min_refetch: Duration::from_secs(conf.rediscovery_lifetime.max(1) as u64),
            http: OnceLock::new(),
            discovery: RwLock::new(None),
            keys: RwLock::new(None),
            attempts: Mutex::new(Attempts::default()),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    /// The issuer as configured, without a trailing slash (what `iss` claims must equal).
    pub fn issuer(&self) -> &str {
        &self.issuer_str
    }

    /// The client id the gateway uses.
    pub fn client_id(&self) -> Option<&str> {
        self.client_id.as_deref()
    }

    fn client(&self) -> Result<&reqwest::Client, ProviderError> {
        self.http
            .get_or_init(|| self.build_client())
            .as_ref()
            .map_err(|e| unavailable("http client", e))
    }

    fn build_client(&self) -> Result<reqwest::Client, String> {
        let mut cas = Vec::new();
        for pem in &self.ca_pems {
            cas.extend(
                parse_pem_certs(pem)?
                    .into_iter()
                    .map(rustls_pki_types::CertificateDer::from),
            );
        }
        crate::sink::outbound_client(cas, self.timeout)?
            .connect_timeout(self.timeout)
            .user_agent("portcullis-openid-connect")
            .build()
            .map_err(|e| e.to_string())
    }

    /// GETs a JSON document.
    async fn get_json(&self, url: &Url, what: &str) -> Result<Value, ProviderError> {
        let resp = self
            .client()?
            .get(url.clone())
            .header(http::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| unavailable(what, e.without_url()))?;
        if !resp.status().is_success() {
            return Err(unavailable(what, format!("status {}", resp.status())));
        }
        let body = read_limited(resp, what).await?;
        serde_json::from_slice(&body).map_err(|_| unavailable(what, "not JSON"))
    }

    /// Current discovery document, fetched on first use (single flight, rate-limited retries).
    pub async fn discovery(&self) -> Result<Arc<Discovery>, ProviderError> {
        if let Some(d) = self.cached_discovery() {
            return Ok(d);
        }
        let _guard = self.fetching.lock().await;
        if let Some(d) = self.cached_discovery() {
            return Ok(d);
        }
        if !self.may_attempt(|a| &mut a.discovery) {
            return Err(ProviderError::Unavailable(
                "discovery failed recently; waiting before the next attempt".into(),
            ));
        }
        let d = Arc::new(self.fetch_discovery().await?);
        let keys = self.fetch_jwks(&d.jwks_uri).await?;
        if let Ok(mut k) = self.keys.write() {
            *k = Some(Arc::new(keys));
        }
        if let Ok(mut a) = self.attempts.lock() {
            a.jwks = Some(Instant::now());
        }
        if let Ok(mut slot) = self.discovery.write() {
            *slot = Some(d.clone());
        }
        tracing::info!(issuer = %self.issuer_str, "openid-connect: discovery and keys loaded");
        Ok(d)
    }

    fn cached_discovery(&self) -> Option<Arc<Discovery>> {
        self.discovery.read().ok().and_then(|d| d.clone())
    }

    /// Records an attempt unless one was made within `min_refetch`.
    fn may_attempt(&self, slot: impl Fn(&mut Attempts) -> &mut Option<Instant>) -> bool {
        let Ok(mut a) = self.attempts.lock() else {
            return false;
        };
        let last = slot(&mut a);
        if last.is_some_and(|t| t.elapsed() < self.min_refetch) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }

    async fn fetch_discovery(&self) -> Result<Discovery, ProviderError> {
        let mut url = self.issuer.clone();
        let path = format!(
            "{}/.well-known/openid-configuration",
            url.path().trim_end_matches('/')
        );
        url.set_path(&path);
        let doc = self.get_json(&url, "discovery").await?;
        let issuer = doc.get("issuer").and_then(Value::as_str).unwrap_or("");
        if issuer.trim_end_matches('/') != self.issuer_str {
            return Err(unavailable(
                "discovery",
                "the document's issuer is not the configured issuer",
            ));
        }
        let ep = |name: &str| -> Result<Option<Url>, ProviderError> {
            match doc.get(name).and_then(Value::as_str) {
                None => Ok(None),
                Some(raw) => check_provider_url(raw)
                    .map(Some)
                    .map_err(|e| unavailable("discovery", format!("{name}: {e}"))),
            }
        };
        let jwks_uri = ep("jwks_uri")?.ok_or_else(|| unavailable("discovery", "no jwks_uri"))?;
        Ok(Discovery {
            authorization_endpoint: self
                .overrides
                .authorization
                .clone()
                .or(ep("authorization_endpoint")?),
            token_endpoint: self.overrides.token.clone().or(ep("token_endpoint")?),
            introspection_endpoint: self
                .overrides
                .introspection
                .clone()
                .or(ep("introspection_endpoint")?),
            end_session_endpoint: self
                .overrides
                .end_session
                .clone()
                .or(ep("end_session_endpoint")?),
            jwks_uri,
        })
    }

    async fn fetch_jwks(&self, uri: &Url) -> Result<Keys, ProviderError> {
        let doc = self.get_json(uri, "jwks").await?;
        let set: JwkSet =
            serde_json::from_value(doc).map_err(|_| unavailable("jwks", "invalid"))?;
        let mut keys = Vec::new();
        for jwk in &set.keys {
            if let Some(k) = key_from_jwk(jwk) {
                keys.push(k);
            }
        }
        if keys.is_empty() {
            return Err(unavailable("jwks", "no usable signing key"));
        }
        Ok(Keys { keys })
    }

    /// The current keys (discovering first if needed).
    pub async fn keys(&self) -> Result<Arc<Keys>, ProviderError> {
        self.discovery().await?;
        self.keys
            .read()
            .ok()
            .and_then(|k| k.clone())
            .ok_or_else(|| unavailable("jwks", "not loaded"))
    }

    /// Refetches the JWKS because a token named a key we do not know; at most once per
    /// `rediscovery_lifetime`. Returns the (possibly unchanged) keys.
    pub async fn refresh_keys(&self) -> Result<Arc<Keys>, ProviderError> {
        let d = self.discovery().await?;
        let _guard = self.fetching.lock().await;
        if self.may_attempt(|a| &mut a.jwks) {
            match self.fetch_jwks(&d.jwks_uri).await {
                Ok(k) => {
                    if let Ok(mut slot) = self.keys.write() {
                        *slot = Some(Arc::new(k));
                    }
                    tracing::info!(issuer = %self.issuer_str, "openid-connect: keys refreshed");
                }
                Err(e) => tracing::warn!(error = %e, "openid-connect: key refresh failed"),
            }
        }
        drop(_guard);
        self.keys().await
    }

    fn auth_form(&self, form: &mut Vec<(&'static str, String)>) -> Option<(String, String)> {
        let (id, secret) = (self.client_id.clone()?, self.client_secret.clone()?);
        match self.client_auth {
            ClientAuth::Basic => Some((id, secret)),
            ClientAuth::Post => {
                form.push(("client_id", id));
                form.push(("client_secret", secret));
                None
            }
        }
    }

    /// POSTs a form to a provider endpoint, with client authentication: the gateway's own
    /// client, or `basic` (client id and secret from the request, for client_credentials).
    async fn post_form(
        &self,
        url: &Url,
        mut form: Vec<(&'static str, String)>,
        basic: Option<(String, String)>,
        what: &str,
    ) -> Result<Value, ProviderError> {
        let basic = match basic {
            Some(b) => Some(b),
            None => self.auth_form(&mut form),
        };
        let body = form_encode(&form);
        let mut req = self
            .client()?
            .post(url.clone())
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(http::header::ACCEPT, "application/json")
            .body(body);
        if let Some((id, secret)) = basic {
            // RFC 6749 §2.3.1: id and secret are form-urlencoded before Basic encoding.
            let pair = format!("{}:{}", form_component(&id), form_component(&secret));
            let b64 = base64::engine::general_purpose::STANDARD.encode(pair);
            req = req.header(http::header::AUTHORIZATION, format!("Basic {b64}"));
        }
        let resp = req
            .send()
            .await
            .map_err(|e| unavailable(what, e.without_url()))?;
        let status = resp.status();
        let body = read_limited(resp, what).await?;
        let json: Option<Value> = serde_json::from_slice(&body).ok();
        if status.is_success() {
            return json.ok_or_else(|| unavailable(what, "not JSON"));
        }
        if status.is_client_error() {
            let code = json
                .as_ref()
                .and_then(|j| j.get("error"))
                .and_then(Value::as_str)
                .unwrap_or("unknown")
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                .take(64)
                .collect::<String>();
            return Err(ProviderError::Refused(format!(
                "{what}: status {status}, error {code}"
            )));
        }
        Err(unavailable(what, format!("status {status}")))
    }

    /// Calls the token endpoint.
    pub async fn token(
        &self,
        form: Vec<(&'static str, String)>,
        basic: Option<(String, String)>,
    ) -> Result<Tokens, ProviderError> {
        let d = self.discovery().await?;
        let url = d
            .token_endpoint
            .clone()
            .ok_or_else(|| unavailable("token", "the provider has no token endpoint"))?;
        tracing::debug!(endpoint = %redact(&url), "openid-connect: token request");
        let j = self.post_form(&url, form, basic, "token").await?;
        let access_token = j
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| unavailable("token", "no access_token in the answer"))?
            .to_string();
        let s = |k: &str| j.get(k).and_then(Value::as_str).map(str::to_string);
        Ok(Tokens {
            access_token,
            id_token: s("id_token"),
            refresh_token: s("refresh_token"),
            expires_in: j.get("expires_in").and_then(Value::as_i64),
        })
    }

    /// RFC 7662 introspection with the gateway's client credentials.
    pub async fn introspect(&self, token: &str, hint: &str) -> Result<Value, ProviderError> {
        let d = self.discovery().await?;
        let url = d.introspection_endpoint.clone().ok_or_else(|| {
            unavailable(
                "introspection",
                "the provider has no introspection endpoint",
            )
        })?;
        let mut form = vec![("token", token.to_string())];
        if !hint.is_empty() {
            form.push(("token_type_hint", hint.to_string()));
        }
        self.post_form(&url, form, None, "introspection").await
    }
}

fn key_from_jwk(jwk: &Jwk) -> Option<Key> {
    use jsonwebtoken::jwk::{AlgorithmParameters, KeyAlgorithm, PublicKeyUse};
    if let Some(u) = &jwk.common.public_key_use {
        if *u != PublicKeyUse::Signature {
            return None;
        }
    }
    let family = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Family::Rsa,
        AlgorithmParameters::EllipticCurve(_) => Family::Ec,
        AlgorithmParameters::OctetKeyPair(_) => Family::Okp,
        // Symmetric keys are never used: a JWKS is public.
        AlgorithmParameters::OctetKey(_) => return None,
    };
    let alg = match jwk.common.key_algorithm {
        None => None,
        Some(KeyAlgorithm::RS256) => Some(Algorithm::RS256),
        Some(KeyAlgorithm::RS384) => Some(Algorithm::RS384),
        Some(KeyAlgorithm::RS512) => Some(Algorithm::RS512),
        Some(KeyAlgorithm::PS256) => Some(Algorithm::PS256),
        Some(KeyAlgorithm::PS384) => Some(Algorithm::PS384),
        Some(KeyAlgorithm::PS512) => Some(Algorithm::PS512),
        Some(KeyAlgorithm::ES256) => Some(Algorithm::ES256),
        Some(KeyAlgorithm::ES384) => Some(Algorithm::ES384),
        Some(KeyAlgorithm::EdDSA) => Some(Algorithm::EdDSA),
        // Encryption or HS algorithms: not a signature key we accept.
        Some(_) => return None,
    };
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some(Key {
        kid: jwk.common.key_id.clone(),
        alg,
        key,
        family,
    })
}

async fn read_limited(mut resp: reqwest::Response, what: &str) -> Result<Vec<u8>, ProviderError> {
    if resp.content_length().is_some_and(|n| n as usize > MAX_BODY) {
        return Err(unavailable(what, "response too large"));
    }
    let mut out = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| unavailable(what, e.without_url()))?
    {
        if out.len() + chunk.len() > MAX_BODY {
            return Err(unavailable(what, "response too large"));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// `application/x-www-form-urlencoded` component encoding.
pub fn form_component(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn form_encode(pairs: &[(&'static str, String)]) -> String {
    let mut ser = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        ser.append_pair(k, v);
    }
    ser.finish()
}

/// A small expiring map keyed by SHA-256 digests (token caches). Cleared when full.
pub struct TtlCache<V> {
    map: Mutex<HashMap<[u8; 32], (V, Instant)>>,
    max: usize,
}

impl<V: Clone> TtlCache<V> {
    pub fn new(max: usize) -> TtlCache<V> {
        TtlCache {
            map: Mutex::new(HashMap::new()),
            max,
        }
    }

    pub fn get(&self, k: &[u8; 32]) -> Option<V> {
        let mut m = self.map.lock().ok()?;
        match m.get(k) {
            Some((v, until)) if *until > Instant::now() => Some(v.clone()),
            Some(_) => {
                m.remove(k);
                None
            }
            None => None,
        }
    }

    pub fn put(&self, k: [u8; 32], v: V, ttl: Duration) {
        if ttl.is_zero() {
            return;
        }
        if let Ok(mut m) = self.map.lock() {
            if m.len() >= self.max {
                let now = Instant::now();
                m.retain(|_, (_, until)| *until > now);
                if m.len() >= self.max {
                    m.clear();
                }
            }
            m.insert(k, (v, Instant::now() + ttl));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::catalog::Catalog;
    use portcullis_config::Errors;

    #[tokio::test]
    async fn failed_discovery_is_retried_at_most_once_per_rediscovery_lifetime() {
        // Nothing listens on port 9 of 127.0.0.1 (discard): the first attempt fails fast and
        // the next one within rediscovery_lifetime does not even try.
        let v = serde_json::json!({"issuer": "http://127.0.0.1:9", "auth_methods": ["bearer"], "rediscovery_lifetime": 60, "timeout": 2000});
        let mut errs = Errors::default();
        let conf = Conf::read(&v, "c", &mut errs, &Catalog::schema_only()).unwrap();
        let p = Provider::new(&conf);
        let first = p.discovery().await.err().unwrap().to_string();
        assert!(!first.contains("waiting"), "{first}");
        let second = p.discovery().await.err().unwrap().to_string();
        assert!(
            second.contains("waiting before the next attempt"),
            "{second}"
        );
    }

    #[test]
    fn ttl_cache_expires_and_bounds() {
        let c: TtlCache<u8> = TtlCache::new(2);
        c.put([1; 32], 1, Duration::from_secs(60));
        c.put([2; 32], 2, Duration::ZERO);
        assert_eq!(c.get(&[1; 32]), Some(1));
        assert_eq!(c.get(&[2; 32]), None);
        c.put([3; 32], 3, Duration::from_secs(60));
        c.put([4; 32], 4, Duration::from_secs(60));
        assert!(c.map.lock().unwrap().len() <= 2);
    }

    #[test]
    fn pem_parsing() {
        assert!(parse_pem_certs("nope").is_err());
        assert!(parse_pem_certs("-----BEGIN CERTIFICATE-----\nAAAA\n").is_err());
        assert_eq!(
            parse_pem_certs("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
                .unwrap(),
            vec![vec![0, 0, 0]]
        );
    }
}
