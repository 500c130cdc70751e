//! `basic-auth`: HTTP Basic credentials (`Proxy-Authorization`, then `Authorization`).
//!
//! Passwords are held only as argon2id hashes: plaintext passwords in the config are hashed at
//! load, PHC strings (`$argon2id$...`) are taken as they are. Verifying a password costs tens of
//! milliseconds by design, so it runs on the blocking pool behind a semaphore (a flood of bad
//! passwords cannot stall the proxy's reactor), and successful verifications are remembered for
//! a short time under a keyed digest so a returning client costs one hash lookup.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::Engine;
use portcullis_config::{Errors, Obj};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::auth::{authenticate, unauthorized, Anonymous};
use crate::catalog::{BasicUser, Catalog, ConsumerInfo};
use crate::lockout::{self, Lockout};
use crate::{Access, Ctx, Flow, Plugin};

/// How long a verified username/password pair is remembered.
const CACHE_TTL: Duration = Duration::from_secs(300);
/// Most remembered pairs; the cache is cleared when full.
const CACHE_MAX: usize = 10_000;

/// Keyed digest of (username, password) → consumer and when it was verified.
type VerifiedCache = HashMap<[u8; 32], (Arc<ConsumerInfo>, Instant)>;

/// A compiled `basic-auth` instance.
pub struct BasicAuth {
    hide_credentials: bool,
    anonymous: Anonymous,
    challenge: String,
    users: Arc<HashMap<String, BasicUser>>,
    salt: [u8; 32],
    verified: Mutex<VerifiedCache>,
    verifiers: Arc<Semaphore>,
    /// Password checks waiting for a permit, and how many may wait.
    waiting: std::sync::atomic::AtomicUsize,
    max_waiting: usize,
    lockout: Option<Arc<Lockout>>,
}

/// Hashes a plaintext password with argon2id (a fresh random salt each time).
pub fn hash_password(password: &str) -> Option<String> {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>()).ok()?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .ok()
        .map(|h| h.to_string())
}

impl BasicAuth {
    /// Validates the config and hashes the consumers' passwords.
    pub fn build(
        config: &Value,
        path: &str,
        errs: &mut Errors,
        catalog: &Catalog,
    ) -> Option<BasicAuth> {
        let before = errs.len();
        let mut o = Obj::open(config, path, errs)?;
        let hide_credentials = o.bool_or("hide_credentials", false, errs);
        let anonymous = Anonymous::read(&mut o, catalog, errs);
        let realm = o.opt_str("realm", errs).unwrap_or_else(|| "service".into());
        let lockout = Lockout::read(&mut o, "basic-auth", errs);
        o.finish(errs);
        if errs.len() > before {
            return None;
        }
        let users = catalog
            .basic_users
            .get_or_init(|| Arc::new(hash_users(catalog)))
            .clone();
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Some(BasicAuth {
            hide_credentials,
            anonymous,
            challenge: format!("Basic realm=\"{realm}\""),
            users,
            salt: rand::random(),
            verified: Mutex::new(HashMap::new()),
            verifiers: Arc::new(Semaphore::new(cores)),
            waiting: std::sync::atomic::AtomicUsize::new(0),
            max_waiting: cores * 64,
            lockout,
        })
    }

    fn pair_digest(&self, user: &str, password: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.salt);
        h.update(user.as_bytes());
        h.update([0]);
        h.update(password.as_bytes());
        h.finalize().into()
    }

    /// The `user:password` of the first Basic credential header, if any.
    fn credentials(ctx: &Ctx) -> Option<(String, String, &'static str)> {
        for name in ["proxy-authorization", "authorization"] {
            let Some(v) = ctx.headers.get(name).and_then(|v| v.to_str().ok()) else {
                continue;
            };
            let Some((scheme, b64)) = v.trim().split_once(' ') else {
                continue;
            };
            if !scheme.eq_ignore_ascii_case("basic") {
                continue;
            }
            let raw = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .ok()?;
            let text = String::from_utf8(raw).ok()?;
            let (u, p) = text.split_once(':')?;
            return Some((u.to_string(), p.to_string(), name));
        }
        None
    }

    async fn decide(&self, ctx: &mut Ctx) -> Flow {
        if self.anonymous.skip(ctx) {
            return Flow::Continue;
        }
        let Some((user, password, header)) = Self::credentials(ctx) else {
            return self
                .anonymous
                .fail(ctx, unauthorized("Unauthorized", &self.challenge));
        };
        // A locked-out client or username costs no password hash.
        if let Some(r) = lockout::check(&self.lockout, ctx, &user) {
            return Flow::Respond(r);
        }
        let key = self.pair_digest(&user, &password);
        let cached = self.verified.lock().ok().and_then(|m| {
            m.get(&key)
                .filter(|(_, at)| at.elapsed() < CACHE_TTL)
                .map(|(c, _)| c.clone())
        });
        let consumer = match cached {
            Some(c) => Some(c),
            None => {
                // Password hashing is bounded: past a queue of checks per core, answer 503
                // at once instead of letting a flood delay every basic-auth user.
                if self.verifiers.available_permits() == 0
                    && self.waiting.load(std::sync::atomic::Ordering::Relaxed) >= self.max_waiting
                {
                    let mut r = crate::Response::message(
                        http::StatusCode::SERVICE_UNAVAILABLE,
                        "Too many authentication requests, retry later",
                    );
                    r.headers
                        .insert(http::header::RETRY_AFTER, http::HeaderValue::from(1));
                    return Flow::Respond(r);
                }
                // Counted down on drop too: a client that goes away mid-wait is not leaked.
                let _waiting = Waiting::enter(&self.waiting);
                self.verify(user.clone(), password).await
            }
        };
        let Some(consumer) = consumer else {
            if let Some(r) = lockout::failure(&self.lockout, ctx, &user) {
                return Flow::Respond(r);
            }
            return self
                .anonymous
                .fail(ctx, unauthorized("Unauthorized", &self.challenge));
        };
        if let Ok(mut m) = self.verified.lock() {
            if m.len() >= CACHE_MAX {
                m.clear();
            }
            m.insert(key, (consumer.clone(), Instant::now()));
        }
        lockout::success(&self.lockout, ctx, &user);
        if self.hide_credentials {
            ctx.headers.remove(header);
        }
        authenticate(ctx, consumer, user);
        Flow::Continue
    }

    /// Runs argon2 verification on the blocking pool, at most one per core at a time.
    async fn verify(&self, user: String, password: String) -> Option<Arc<ConsumerInfo>> {
        let _permit = self.verifiers.clone().acquire_owned().await.ok()?;
        let users = self.users.clone();
        tokio::task::spawn_blocking(move || {
            // Unknown users still pay for a hash, so timing does not reveal valid usernames.
            static DUMMY: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
            let (hash, consumer) = match users.get(&user) {
                Some(e) => (e.hash.clone(), Some(e.consumer.clone())),
                None => (DUMMY.get_or_init(|| hash_password("dummy")).clone()?, None),
            };
            if let Some(legacy) = hash.strip_prefix(KONG_SHA1) {
                // Kong's own scheme, only for `_transform: false` files: sha1(password .. id).
                let (hex, consumer_id) = legacy.split_once('$')?;
                let mut h = sha1::Sha1::new();
                h.update(password.as_bytes());
                h.update(consumer_id.as_bytes());
                let computed: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
                let same = computed.len() == hex.len()
                    && computed
                        .bytes()
                        .zip(hex.bytes())
                        .fold(0u8, |acc, (a, b)| acc | (a ^ b.to_ascii_lowercase()))
                        == 0;
                return same.then_some(consumer).flatten();
            }
            let parsed = PasswordHash::new(&hash).ok()?;
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .ok()
                .and(consumer)
        })
        .await
        .ok()
        .flatten()
    }
}

/// One password check waiting for (or holding) a permit.
struct Waiting<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> Waiting<'a> {
    fn enter(n: &'a std::sync::atomic::AtomicUsize) -> Waiting<'a> {
        n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Waiting(n)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Marks a password kept in Kong's legacy SHA-1 form (`_transform: false` imports).
const KONG_SHA1: &str = "kong-sha1$";

/// Hashes every basic-auth credential's password (PHC strings are kept as given).
fn hash_users(catalog: &Catalog) -> HashMap<String, BasicUser> {
    let mut users = HashMap::new();
    for cred in catalog.credentials("basicauth_credentials") {
        let (Some(user), Some(password)) = (
            cred.fields.get("username").and_then(Value::as_str),
            cred.fields.get("password").and_then(Value::as_str),
        ) else {
            continue;
        };
        let Some(consumer) = catalog.consumer(&cred.consumer) else {
            continue;
        };
        let kong_sha1 = catalog.no_transform
            && password.len() == 40
            && password.bytes().all(|b| b.is_ascii_hexdigit());
        let hash = if kong_sha1 {
            Some(format!("{KONG_SHA1}{password}${}", consumer.id))
        } else if password.starts_with("$argon2") && PasswordHash::new(password).is_ok() {
            Some(password.to_string())
        } else {
            hash_password(password)
        };
        if let Some(hash) = hash {
            users.insert(user.to_string(), BasicUser { consumer, hash });
        }
    }
    users
}

impl Plugin for BasicAuth {
    fn name(&self) -> &'static str {
        "basic-auth"
    }

    fn response_header_names(&self) -> Option<Vec<http::HeaderName>> {
        // No response phase.
        Some(Vec::new())
    }

    fn access<'a>(&'a self, ctx: &'a mut Ctx) -> Access<'a> {
        Access::Later(Box::pin(self.decide(ctx)))
    }
}
