//! Brute-force protection for authentication plugins (a Portcullis extension, off unless a
//! plugin's config has a `lockout` block).
//!
//! Wrong credentials (not missing ones: a browser's first request without credentials is
//! normal) are counted per client IP and per presented credential within `window` seconds.
//! At `threshold` failures the IP or credential is locked out: requests carrying it get
//! **429** `{"message":"Too many failed authentication attempts"}` with `Retry-After`, before
//! any password hash or signature is computed. The lock lasts `cooldown` seconds, doubling
//! with each further offence up to `max_cooldown`. Each lockout is logged as a security
//! event (`target: "security"`, `event: "auth_lockout"`) naming the client IP, plugin, route
//! and request id; a credential is named only by a short digest, never as given.
//!
//! Counters are process-wide (shared by every route and plugin, and kept across config
//! reloads) and bounded in memory.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use http::{HeaderValue, StatusCode};
use portcullis_config::{Errors, Obj};
use sha2::{Digest, Sha256};

use crate::{Ctx, Response};

/// Entries kept at most, per shard.
const SHARD_MAX: usize = 8_192;
const SHARDS: usize = 16;
/// Offences are forgotten after this long without a new lockout.
const OFFENCE_MEMORY: Duration = Duration::from_secs(24 * 3600);

/// A plugin's lockout policy.
#[derive(Debug, Clone)]
pub struct Lockout {
    threshold: u32,
    window: Duration,
    cooldown: Duration,
    max_cooldown: Duration,
    plugin: &'static str,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    window_start: Instant,
    offences: u32,
    banned_until: Option<Instant>,
    last_offence: Option<Instant>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Ip(IpAddr),
    Credential([u8; 16]),
}

struct Table {
    shards: Vec<Mutex<HashMap<Key, Entry>>>,
}

fn table() -> &'static Table {
    static T: OnceLock<Table> = OnceLock::new();
    T.get_or_init(|| Table {
        shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
    })
}

impl Table {
    fn shard(&self, key: &Key) -> &Mutex<HashMap<Key, Entry>> {
        use std::hash::BuildHasher;
        static SEED: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
        let h = SEED.get_or_init(Default::default).hash_one(key);
        &self.shards[(h as usize) % SHARDS]
    }
}

/// A credential as a lockout key: a digest, so no secret is kept or logged.
fn credential_key(plugin: &str, credential: &str) -> [u8; 16] {
    let mut h = Sha256::new();
    h.update(plugin.as_bytes());
    h.update([0]);
    h.update(credential.as_bytes());
    let d = h.finalize();
    let mut k = [0u8; 16];
    k.copy_from_slice(&d[..16]);
    k
}

impl Lockout {
    /// Reads the optional `lockout` block of an auth plugin's config.
    pub fn read(o: &mut Obj<'_>, plugin: &'static str, errs: &mut Errors) -> Option<Arc<Lockout>> {
        let path = o.field_path("lockout");
        let value = o.get("lockout")?.clone();
        if value.is_null() {
            return None;
        }
        let mut l = Obj::open(&value, &path, errs)?;
        let threshold = l.int_or("threshold", 10, 1, 1_000_000, errs) as u32;
        let window = l.int_or("window", 60, 1, 86_400, errs) as u64;
        let cooldown = l.int_or("cooldown", 60, 1, 86_400, errs) as u64;
        let max_cooldown = l.int_or("max_cooldown", 3600, 1, 30 * 86_400, errs) as u64;
        l.finish(errs);
        if max_cooldown < cooldown {
            errs.push(format!("{path}.max_cooldown"), "must be at least cooldown");
        }
        Some(Arc::new(Lockout {
            threshold,
            window: Duration::from_secs(window),
            cooldown: Duration::from_secs(cooldown),
            max_cooldown: Duration::from_secs(max_cooldown),
            plugin,
        }))
    }

    fn keys(&self, ip: IpAddr, credential: Option<&str>) -> Vec<Key> {
        // An IPv6 client usually holds a whole /64: count the network, not the address.
        let ip = match ip {
            IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(std::net::Ipv6Addr::from(bits))
            }
            other => other,
        };
        let mut keys = vec![Key::Ip(ip)];
        if let Some(c) = credential {
            keys.push(Key::Credential(credential_key(self.plugin, c)));
        }
        keys
    }

    /// A 429 when the client IP (or the presented credential) is locked out.
    pub fn check(&self, ctx: &Ctx, credential: Option<&str>) -> Option<Response> {
        let now = Instant::now();
        let t = table();
        let mut wait = Duration::ZERO;
        for key in self.keys(ctx.client_ip, credential) {
            let Ok(shard) = t.shard(&key).lock() else {
                continue;
            };
            if let Some(until) = shard.get(&key).and_then(|e| e.banned_until) {
                if until > now {
                    wait = wait.max(until - now);
                }
            }
        }
        (!wait.is_zero()).then(|| locked(wait))
    }

    /// Records a wrong credential; returns the 429 when this failure starts a lockout.
    pub fn failure(&self, ctx: &Ctx, credential: Option<&str>) -> Option<Response> {
        let now = Instant::now();
        let t = table();
        let mut started: Option<Duration> = None;
        for key in self.keys(ctx.client_ip, credential) {
            let Ok(mut shard) = t.shard(&key).lock() else {
                continue;
            };
            if shard.len() >= SHARD_MAX && !shard.contains_key(&key) {
                let window = self.window;
                shard.retain(|_, e| {
                    e.banned_until.is_some_and(|u| u > now)
                        || now.duration_since(e.window_start) < window
                });
                if shard.len() >= SHARD_MAX {
                    continue;
                }
            }
            let e = shard.entry(key.clone()).or_insert(Entry {
                failures: 0,
                window_start: now,
                offences: 0,
                banned_until: None,
                last_offence: None,
            });
            if now.duration_since(e.window_start) > self.window {
                e.failures = 0;
                e.window_start = now;
            }
            if e.last_offence
                .is_some_and(|t| now.duration_since(t) > OFFENCE_MEMORY)
            {
                e.offences = 0;
            }
            e.failures += 1;
            if e.failures >= self.threshold {
                e.offences = e.offences.saturating_add(1);
                let factor = 1u32 << (e.offences - 1).min(20);
                let cool = self.cooldown.saturating_mul(factor).min(self.max_cooldown);
                e.banned_until = Some(now + cool);
                e.last_offence = Some(now);
                e.failures = 0;
                e.window_start = now;
                let subject = match &key {
                    Key::Ip(_) => "client_ip".to_string(),
                    Key::Credential(d) => format!("credential:{}", hex8(d)),
                };
                tracing::warn!(
                    target: "security",
                    event = "auth_lockout",
                    plugin = self.plugin,
                    client_ip = %ctx.client_ip,
                    subject = %subject,
                    offences = e.offences,
                    retry_after = cool.as_secs(),
                    route = ctx.route_name.as_deref().unwrap_or("-"),
                    request_id = %ctx.request_id,
                    "authentication lockout"
                );
                started = Some(started.map_or(cool, |s| s.max(cool)));
            }
        }
        started.map(locked)
    }

    /// Forgets the failures of a client and credential after a success (offences stay).
    pub fn success(&self, ctx: &Ctx, credential: Option<&str>) {
        let t = table();
        for key in self.keys(ctx.client_ip, credential) {
            if let Ok(mut shard) = t.shard(&key).lock() {
                if let Some(e) = shard.get_mut(&key) {
                    e.failures = 0;
                }
            }
        }
    }
}

/// [`Lockout::check`] when a policy is configured.
pub fn check(l: &Option<Arc<Lockout>>, ctx: &Ctx, credential: &str) -> Option<Response> {
    l.as_ref()?.check(ctx, Some(credential))
}

/// [`Lockout::failure`] when a policy is configured.
pub fn failure(l: &Option<Arc<Lockout>>, ctx: &Ctx, credential: &str) -> Option<Response> {
    l.as_ref()?.failure(ctx, Some(credential))
}

/// [`Lockout::success`] when a policy is configured.
pub fn success(l: &Option<Arc<Lockout>>, ctx: &Ctx, credential: &str) {
    if let Some(l) = l {
        l.success(ctx, Some(credential));
    }
}

fn hex8(d: &[u8; 16]) -> String {
    d[..4].iter().map(|b| format!("{b:02x}")).collect()
}

fn locked(wait: Duration) -> Response {
    let mut r = Response::message(
        StatusCode::TOO_MANY_REQUESTS,
        "Too many failed authentication attempts",
    );
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    r.headers
        .insert(http::header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(cfg: serde_json::Value) -> Arc<Lockout> {
        let v = json!({ "lockout": cfg });
        let mut errs = Errors::default();
        let mut o = Obj::open(&v, "config", &mut errs).unwrap();
        let l = Lockout::read(&mut o, "test", &mut errs).unwrap();
        assert!(errs.is_empty());
        l
    }

    fn ctx(ip: &str) -> Ctx {
        Ctx::new(
            http::Method::GET,
            "/".into(),
            None,
            http::HeaderMap::new(),
            ip.parse().unwrap(),
        )
    }

    #[test]
    fn locks_after_threshold_and_doubles_cooldown() {
        let l = policy(json!({"threshold": 3, "window": 60, "cooldown": 10, "max_cooldown": 15}));
        let c = ctx("198.51.100.7");
        assert!(l.check(&c, None).is_none());
        assert!(l.failure(&c, Some("k1")).is_none());
        assert!(l.failure(&c, Some("k2")).is_none());
        let r = l.failure(&c, Some("k3")).expect("third failure locks");
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers[http::header::RETRY_AFTER], "10");
        // Locked for every credential from that IP; other IPs are not affected.
        assert!(l.check(&c, Some("anything")).is_some());
        assert!(l.check(&ctx("198.51.100.8"), None).is_none());
        // A second offence doubles the cooldown, capped by max_cooldown.
        for k in ["a", "b"] {
            assert!(l.failure(&c, Some(k)).is_none());
        }
        let r = l.failure(&c, Some("c")).unwrap();
        assert_eq!(r.headers[http::header::RETRY_AFTER], "15");
    }

    #[test]
    fn credentials_are_counted_across_ips() {
        let l = policy(json!({"threshold": 2}));
        assert!(l.failure(&ctx("203.0.113.1"), Some("victim")).is_none());
        assert!(l.failure(&ctx("203.0.113.2"), Some("victim")).is_some());
        assert!(l.check(&ctx("203.0.113.3"), Some("victim")).is_some());
        assert!(l.check(&ctx("203.0.113.3"), Some("other")).is_none());
    }

    #[test]
    fn ipv6_clients_are_counted_per_64() {
        let l = policy(json!({"threshold": 2}));
        assert!(l.failure(&ctx("2001:db8:1:2::1"), None).is_none());
        assert!(l.failure(&ctx("2001:db8:1:2:ffff::9"), None).is_some());
        assert!(l.check(&ctx("2001:db8:1:2::77"), None).is_some());
        assert!(l.check(&ctx("2001:db8:1:3::1"), None).is_none());
    }

    #[test]
    fn success_resets_failures() {
        let l = policy(json!({"threshold": 2}));
        let c = ctx("192.0.2.50");
        assert!(l.failure(&c, None).is_none());
        l.success(&c, None);
        assert!(l.failure(&c, None).is_none());
    }

    #[test]
    fn bad_config_has_paths() {
        let v = json!({"lockout": {"threshold": 0, "cooldown": 100, "max_cooldown": 10, "x": 1}});
        let mut errs = Errors::default();
        let mut o = Obj::open(&v, "plugins[0].config", &mut errs).unwrap();
        let _ = Lockout::read(&mut o, "t", &mut errs);
        let text: Vec<String> = errs.into_vec().iter().map(|e| e.to_string()).collect();
        assert!(
            text.iter()
                .any(|e| e.contains("plugins[0].config.lockout.threshold")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|e| e.contains("plugins[0].config.lockout.max_cooldown")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|e| e.contains("plugins[0].config.lockout.x")),
            "{text:?}"
        );
    }
}
