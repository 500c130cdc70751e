//! `jwt`: a signed JWT identifies the consumer through its `jwt_secrets` credential.
//!
//! Kong's rules, with two safer choices: the token's `alg` must be exactly the credential's
//! algorithm (so `none`, and an HS* token checked against an RSA/EC public key, are refused),
//! and `exp`/`nbf` are enforced whenever the token carries them, not only when listed in
//! `claims_to_verify` (listing them makes them mandatory). Key material is parsed once at load.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use http::{HeaderValue, Method, StatusCode};
use jsonwebtoken::{Algorithm, DecodingKey};
use portcullis_config::{Errors, Obj};
use serde_json::{json, Value};

use crate::auth::{authenticate, unauthorized, Anonymous};
use crate::catalog::{Catalog, ConsumerInfo};
use crate::lockout::{self, Lockout};
use crate::{Access, Ctx, Flow, Plugin, Response};

struct Secret {
    consumer: Arc<ConsumerInfo>,
    key_id: String,
    alg: Algorithm,
    alg_name: &'static str,
    key: DecodingKey,
}

/// A compiled `jwt` instance.
pub struct Jwt {
    uri_param_names: Vec<String>,
    cookie_names: Vec<String>,
    header_names: Vec<String>,
    claims_to_verify: Vec<String>,
    key_claim_name: String,
    maximum_expiration: i64,
    clock_skew: i64,
    anonymous: Anonymous,
    run_on_preflight: bool,
    realm: Option<String>,
    secrets: HashMap<String, Secret>,
    lockout: Option<Arc<Lockout>>,
}

const ALGORITHMS: &[(&str, Algorithm)] = &[
    ("HS256", Algorithm::HS256),
    ("HS384", Algorithm::HS384),
    ("HS512", Algorithm::HS512),
    ("RS256", Algorithm::RS256),
    ("RS384", Algorithm::RS384),
    ("RS512", Algorithm::RS512),
    ("PS256", Algorithm::PS256),
    ("PS384", Algorithm::PS384),
    ("PS512", Algorithm::PS512),
    ("ES256", Algorithm::ES256),
    ("ES384", Algorithm::ES384),
    ("EdDSA", Algorithm::EdDSA),
];

impl Jwt {
    /// Validates the config and parses every `jwt_secrets` credential's key.
    pub fn build(config: &Value, path: &str, errs: &mut Errors, catalog: &Catalog) -> Option<Jwt> {
        let before = errs.len();
        let mut o = Obj::open(config, path, errs)?;
        let list = |o: &mut Obj<'_>, k: &str, d: &[&str], errs: &mut Errors| {
            if o.has(k) {
                o.str_array(k, errs)
            } else {
                let _ = o.get(k);
                d.iter().map(|s| s.to_string()).collect()
            }
        };
        let uri_param_names = list(&mut o, "uri_param_names", &["jwt"], errs);
        let cookie_names = list(&mut o, "cookie_names", &[], errs);
        let header_names = list(&mut o, "header_names", &["authorization"], errs);
        let claims_given = o.has("claims_to_verify");
        let claims_to_verify = o.str_array("claims_to_verify", errs);
        for (i, c) in claims_to_verify.iter().enumerate() {
            if c != "exp" && c != "nbf" {
                errs.push(
                    format!("{}[{i}]", o.field_path("claims_to_verify")),
                    "expected one of: exp, nbf",
                );
            }
        }
        let key_claim_name = o
            .opt_str("key_claim_name", errs)
            .unwrap_or_else(|| "iss".into());
        let secret_is_base64 = o.bool_or("secret_is_base64", false, errs);
        let maximum_expiration = o.int_or("maximum_expiration", 0, 0, 31_536_000, errs);
        // Kong's schema check: a given `claims_to_verify` must list exp. Without the list,
        // maximum_expiration still applies, and a token without exp exceeds it (as in Kong).
        if maximum_expiration > 0 && claims_given && !claims_to_verify.iter().any(|c| c == "exp") {
            errs.push(
                o.field_path("maximum_expiration"),
                "expected 'claims_to_verify' to contain 'exp' when 'maximum_expiration' is set",
            );
        }
        // Not in Kong: allowed clock difference for exp/nbf, bounded to five minutes.
        let clock_skew = o.int_or("clock_skew", 0, 0, 300, errs);
        let anonymous = Anonymous::read(&mut o, catalog, errs);
        let run_on_preflight = o.bool_or("run_on_preflight", true, errs);
        let realm = o.opt_str("realm", errs);
        let lockout = Lockout::read(&mut o, "jwt", errs);
        o.finish(errs);
        if errs.len() > before {
            return None;
        }
        let mut secrets = HashMap::new();
        for cred in catalog.credentials("jwt_secrets") {
            let Some(consumer) = catalog.consumer(&cred.consumer) else {
                continue;
            };
            // Kong fills a missing key with a random string; ours is the credential's
            // (deterministic) id without dashes, so every node agrees.
            let generated_key;
            let key_id = match cred.fields.get("key").and_then(Value::as_str) {
                Some(k) => k,
                None => {
                    generated_key = cred.id.as_str().replace('-', "");
                    &generated_key
                }
            };
            let alg_name = cred
                .fields
                .get("algorithm")
                .and_then(Value::as_str)
                .unwrap_or("HS256");
            let Some(&(alg_name, alg)) = ALGORITHMS.iter().find(|(n, _)| *n == alg_name) else {
                errs.push(
                    "jwt_secrets",
                    format!("credential '{key_id}': unsupported algorithm '{alg_name}'"),
                );
                continue;
            };
            // Two credentials answering to one key would leave one silently unused, or let a
            // token pass as the other consumer.
            if secrets.contains_key(key_id) {
                errs.push(
                    "jwt_secrets",
                    format!(
                        "credential '{key_id}': another jwt_secrets credential has the same key; give each an explicit, unique 'key'"
                    ),
                );
                continue;
            }
            match decoding_key(&cred.fields, alg, secret_is_base64) {
                // Kong accepts an ES256/ES384 credential without a public key (its schema asks
                // for one only for RS, PS and EdDSA); no token can verify against it, so it is
                // left out: its `iss` answers like an unknown one.
                Err(KeyError::Missing) if matches!(alg, Algorithm::ES256 | Algorithm::ES384) => {}
                Ok(key) => {
                    secrets.insert(
                        key_id.to_string(),
                        Secret {
                            consumer,
                            key_id: key_id.to_string(),
                            alg,
                            alg_name,
                            key,
                        },
                    );
                }
                // The message names the credential by its key id, never the secret.
                Err(e) => errs.push("jwt_secrets", format!("credential '{key_id}': {e}")),
            }
        }
        if errs.len() > before {
            return None;
        }
        Some(Jwt {
            lockout,
            uri_param_names,
            cookie_names,
            header_names: header_names
                .into_iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            claims_to_verify,
            key_claim_name,
            maximum_expiration,
            clock_skew,
            anonymous,
            run_on_preflight,
            realm,
            secrets,
        })
    }

    fn challenge(&self, error: bool) -> String {
        let mut c = String::from("Bearer");
        if let Some(r) = &self.realm {
            c.push_str(&format!(" realm=\"{r}\""));
            if error {
                c.push(',');
            }
        }
        if error {
            c.push_str(" error=\"invalid_token\"");
        }
        c
    }

    fn bad(&self, ctx: &mut Ctx, message: &str) -> Flow {
        let challenge = self.challenge(true);
        self.anonymous.fail(ctx, unauthorized(message, &challenge))
    }

    /// Every token the request carries, from query, cookies and headers.
    fn tokens(&self, ctx: &Ctx) -> Vec<String> {
        let mut found = Vec::new();
        for p in &self.uri_param_names {
            if let Some(v) = ctx.query_arg(p) {
                found.push(
                    percent_encoding::percent_decode_str(v)
                        .decode_utf8_lossy()
                        .into_owned(),
                );
            }
        }
        for c in &self.cookie_names {
            for v in ctx
                .headers
                .get_all(http::header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
            {
                for kv in v.split(';') {
                    if let Some((k, val)) = kv.trim().split_once('=') {
                        if k == c {
                            found.push(val.to_string());
                        }
                    }
                }
            }
        }
        for h in &self.header_names {
            for v in ctx
                .headers
                .get_all(h.as_str())
                .iter()
                .filter_map(|v| v.to_str().ok())
            {
                let v = v.trim();
                let token = match v.split_once(' ') {
                    Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") => t.trim(),
                    _ => v,
                };
                found.push(token.to_string());
            }
        }
        found.sort();
        found.dedup();
        found
    }

    fn decide(&self, ctx: &mut Ctx) -> Flow {
        if !self.run_on_preflight && ctx.method == Method::OPTIONS {
            return Flow::Continue;
        }
        if self.anonymous.skip(ctx) {
            return Flow::Continue;
        }
        let tokens = self.tokens(ctx);
        let token = match tokens.as_slice() {
            [] => {
                let challenge = self.challenge(false);
                return self
                    .anonymous
                    .fail(ctx, unauthorized("Unauthorized", &challenge));
            }
            [t] => t.clone(),
            _ => return self.bad(ctx, "Multiple tokens provided"),
        };
        let parts: Vec<&str> = token.split('.').collect();
        let [header_b64, claims_b64, _sig] = parts.as_slice() else {
            return self.bad(ctx, "Unrecognizable token");
        };
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header: Option<Value> = b64
            .decode(header_b64)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let claims: Option<Value> = b64
            .decode(claims_b64)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let (Some(header), Some(claims)) = (header, claims) else {
            return self.bad(ctx, "Bad token; invalid JSON");
        };
        let Some(key_id) = claims.get(&self.key_claim_name) else {
            return self.bad(
                ctx,
                &format!("No mandatory '{}' in claims", self.key_claim_name),
            );
        };
        let Some(key_id) = key_id.as_str() else {
            return self.bad(ctx, &format!("Invalid '{}' in claims", self.key_claim_name));
        };
        if let Some(r) = lockout::check(&self.lockout, ctx, key_id) {
            return Flow::Respond(r);
        }
        let Some(secret) = self.secrets.get(key_id) else {
            if let Some(r) = lockout::failure(&self.lockout, ctx, key_id) {
                return Flow::Respond(r);
            }
            return self.bad(
                ctx,
                &format!("No credentials found for given '{}'", self.key_claim_name),
            );
        };
        // The token's alg must be the credential's, exactly: refuses `none` and HS/RS confusion.
        if header.get("alg").and_then(Value::as_str) != Some(secret.alg_name) {
            return self.bad(ctx, "Invalid algorithm");
        }
        let signed = &token[..header_b64.len() + 1 + claims_b64.len()];
        let sig = &token[signed.len() + 1..];
        if !jsonwebtoken::crypto::verify(sig, signed.as_bytes(), &secret.key, secret.alg)
            .unwrap_or(false)
        {
            if let Some(r) = lockout::failure(&self.lockout, ctx, key_id) {
                return Flow::Respond(r);
            }
            return self.bad(ctx, "Invalid signature");
        }
        lockout::success(&self.lockout, ctx, key_id);
        if let Some(errors) = self.claim_errors(&claims) {
            let mut r = Response::json(StatusCode::UNAUTHORIZED, errors.to_string().into());
            if let Ok(v) = HeaderValue::from_str(&self.challenge(true)) {
                r.headers.insert(http::header::WWW_AUTHENTICATE, v);
            }
            return self.anonymous.fail(ctx, r);
        }
        authenticate(ctx, secret.consumer.clone(), secret.key_id.clone());
        Flow::Continue
    }

    /// Kong's claim errors as an object, e.g. `{"exp": "token expired"}`.
    fn claim_errors(&self, claims: &Value) -> Option<Value> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let mut errors = serde_json::Map::new();
        for name in ["exp", "nbf"] {
            let required = self.claims_to_verify.iter().any(|c| c == name);
            match claims.get(name) {
                None if required => {
                    errors.insert(name.into(), json!("must be a number"));
                }
                None if name == "exp" && self.maximum_expiration > 0 => {
                    errors.insert(name.into(), json!("exceeds maximum allowed expiration"));
                }
                None => {}
                Some(v) => match v.as_f64() {
                    None => {
                        errors.insert(name.into(), json!("must be a number"));
                    }
                    Some(t) => {
                        let t = t as i64;
                        if name == "exp" && now - self.clock_skew >= t {
                            errors.insert(name.into(), json!("token expired"));
                        } else if name == "nbf" && now + self.clock_skew < t {
                            errors.insert(name.into(), json!("token not valid yet"));
                        } else if name == "exp"
                            && self.maximum_expiration > 0
                            && t - now > self.maximum_expiration
                        {
                            errors.insert(name.into(), json!("exceeds maximum allowed expiration"));
                        }
                    }
                },
            }
        }
        (!errors.is_empty()).then_some(Value::Object(errors))
    }
}

/// Why a credential has no usable key.
#[derive(Debug)]
enum KeyError {
    /// No `rsa_public_key` for an asymmetric algorithm.
    Missing,
    /// A key that does not parse.
    Invalid(&'static str),
}

impl std::fmt::Display for KeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyError::Missing => {
                f.write_str("this algorithm needs an 'rsa_public_key' (PEM public key)")
            }
            KeyError::Invalid(why) => f.write_str(why),
        }
    }
}

fn decoding_key(
    fields: &serde_json::Map<String, Value>,
    alg: Algorithm,
    secret_is_base64: bool,
) -> Result<DecodingKey, KeyError> {
    match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
            let Some(secret) = fields.get("secret").and_then(Value::as_str) else {
                // Kong fills a missing secret with a random one that no client knows: tokens
                // for this credential can never verify. So here: 32 fresh random bytes.
                return Ok(DecodingKey::from_secret(&rand::random::<[u8; 32]>()));
            };
            // An empty secret would verify tokens anyone can sign.
            if secret.is_empty() {
                return Err(KeyError::Invalid("secret must not be empty"));
            }
            if secret_is_base64 {
                use base64::Engine;
                match base64::engine::general_purpose::STANDARD.decode(secret) {
                    Ok(raw) if raw.is_empty() => Err(KeyError::Invalid("secret must not be empty")),
                    Ok(_) => DecodingKey::from_base64_secret(secret)
                        .map_err(|_| KeyError::Invalid("secret is not valid base64")),
                    Err(_) => Err(KeyError::Invalid("secret is not valid base64")),
                }
            } else {
                Ok(DecodingKey::from_secret(secret.as_bytes()))
            }
        }
        _ => {
            let pem = fields
                .get("rsa_public_key")
                .and_then(Value::as_str)
                .ok_or(KeyError::Missing)?;
            let key = match alg {
                Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(pem.as_bytes()),
                Algorithm::EdDSA => DecodingKey::from_ed_pem(pem.as_bytes()),
                _ => DecodingKey::from_rsa_pem(pem.as_bytes()),
            };
            key.map_err(|_| KeyError::Invalid("invalid public key for its algorithm"))
        }
    }
}

impl Jwt {
    fn names_to_redact(&self) -> Vec<String> {
        self.header_names
            .iter()
            .chain(&self.uri_param_names)
            .cloned()
            .collect()
    }
}

impl Plugin for Jwt {
    fn response_header_names(&self) -> Option<Vec<http::HeaderName>> {
        // No response phase.
        Some(Vec::new())
    }

    fn sensitive_names(&self) -> Vec<String> {
        self.names_to_redact()
    }

    fn name(&self) -> &'static str {
        "jwt"
    }

    fn access<'a>(&'a self, ctx: &'a mut Ctx) -> Access<'a> {
        Access::Now(self.decide(ctx))
    }
}
