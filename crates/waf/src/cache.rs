//! A bounded cache of verdicts for requests seen before.
//!
//! libmodsecurity 3.0.9 with the CRS spends about a millisecond of CPU on every transaction,
//! even a benign one. With the rule sets this crate marks *deterministic* (see
//! [`nondeterministic`]) a verdict is a pure function of what the transaction is shown: client
//! address, method, target, version, headers and the inspected body prefix. So a request whose
//! bytes are identical to one inspected before gets the same verdict without a transaction.
//!
//! The key is those bytes themselves, compared in full on every hit; the hash only picks the
//! slot. A hash collision therefore costs a miss, never a wrong verdict. The client address is
//! part of the key, so one client cannot learn from timing what another client sent.
//!
//! The cache is direct-mapped: a fixed number of slots, each holding the last key that hashed
//! to it. Memory is bounded by `slots × MAX_KEY_BYTES`; a flood of distinct requests only
//! evicts entries (and pays for its own transactions).

use std::hash::{BuildHasher, Hasher};
use std::sync::Mutex;

use crate::{Request, Verdict};

/// Requests whose key would be longer than this are not cached (they are inspected every
/// time): bounds the cache's memory and the cost of comparing keys.
pub const MAX_KEY_BYTES: usize = 4096;

struct Slot {
    key: Box<[u8]>,
    verdict: Verdict,
}

pub(crate) struct VerdictCache {
    slots: Box<[Mutex<Option<Slot>>]>,
    hasher: std::collections::hash_map::RandomState,
}

impl VerdictCache {
    pub(crate) fn new(slots: usize) -> VerdictCache {
        VerdictCache {
            slots: (0..slots.max(1)).map(|_| Mutex::new(None)).collect(),
            hasher: Default::default(),
        }
    }

    fn slot(&self, key: &[u8]) -> &Mutex<Option<Slot>> {
        let mut h = self.hasher.build_hasher();
        h.write(key);
        // `slots` is never empty (see `new`).
        &self.slots[(h.finish() % self.slots.len() as u64) as usize]
    }

    pub(crate) fn get(&self, key: &[u8]) -> Option<Verdict> {
        let slot = self.slot(key).lock().unwrap_or_else(|p| p.into_inner());
        slot.as_ref()
            .filter(|s| &*s.key == key)
            .map(|s| s.verdict.clone())
    }

    pub(crate) fn put(&self, key: &[u8], verdict: &Verdict) {
        let mut slot = self.slot(key).lock().unwrap_or_else(|p| p.into_inner());
        *slot = Some(Slot {
            key: key.into(),
            verdict: verdict.clone(),
        });
    }

    pub(crate) fn len(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| s.lock().unwrap_or_else(|p| p.into_inner()).is_some())
            .count()
    }
}

/// The cache key of a request: every input a transaction is shown, length-prefixed so no two
/// different requests share a key. `None` when it would exceed [`MAX_KEY_BYTES`].
pub(crate) fn key(req: &Request<'_>, body_limit: usize) -> Option<Vec<u8>> {
    let body = req.body.map(|b| &b[..b.len().min(body_limit)]);
    let mut len = 64 + req.method.len() + req.uri.len() + req.version.len();
    len += req
        .headers
        .iter()
        .map(|(n, v)| 8 + n.len() + v.len())
        .sum::<usize>();
    len += body.map_or(0, <[u8]>::len);
    if len > MAX_KEY_BYTES {
        return None;
    }
    let mut k = Vec::with_capacity(len);
    let field = |k: &mut Vec<u8>, b: &[u8]| {
        k.extend_from_slice(&(b.len() as u32).to_le_bytes());
        k.extend_from_slice(b);
    };
    match req.client_ip {
        std::net::IpAddr::V4(ip) => field(&mut k, &ip.octets()),
        std::net::IpAddr::V6(ip) => field(&mut k, &ip.octets()),
    }
    match req.server_ip {
        std::net::IpAddr::V4(ip) => field(&mut k, &ip.octets()),
        std::net::IpAddr::V6(ip) => field(&mut k, &ip.octets()),
    }
    field(&mut k, &req.server_port.to_le_bytes());
    field(&mut k, req.method.as_bytes());
    field(&mut k, req.uri.as_bytes());
    field(&mut k, req.version.as_bytes());
    field(&mut k, &(req.headers.len() as u32).to_le_bytes());
    for (n, v) in &req.headers {
        field(&mut k, n);
        field(&mut k, v);
    }
    match body {
        // A present-but-empty body and no body are processed alike; keep them distinct anyway.
        Some(b) => {
            k.push(1);
            field(&mut k, b);
        }
        None => k.push(0),
    }
    Some(k)
}

/// Fragments (lower case, whitespace and quotes removed) that make a custom rule's outcome
/// depend on more than the request's bytes: persistent collections (state left by earlier
/// requests), the clock, per-transaction randomness, the client port, lookups over the
/// network, and the CRS settings that switch on its stateful rules (IP reputation blocking,
/// DoS protection, sampling). A rule set with any of them is never cached. Deliberately broad:
/// a false alarm only turns the cache off.
const NONDETERMINISTIC: &[&str] = &[
    "ip:",
    "ip.",
    "global",
    "session",
    "user:",
    "user.",
    "resource",
    "time",
    "unique_id",
    "duration",
    "remote_port",
    "remote_user",
    "initcol",
    "setsid",
    "setuid",
    "expirevar",
    "deprecatevar",
    "@rbl",
    "@geolookup",
    "geo:",
    "reput",
    "dos_",
    "sampling",
    "high_risk",
    "env:",
    "webserver_error_log",
    "highest_severity",
    "inbound_error_data",
];

/// True when custom rule text may make verdicts depend on more than the request itself.
pub(crate) fn nondeterministic(text: &str) -> bool {
    let squeezed: String = text
        .to_ascii_lowercase()
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '\'' && *c != '"')
        .collect();
    NONDETERMINISTIC.iter().any(|f| squeezed.contains(f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_differ_for_every_input_and_are_bounded() {
        let base = Request::new("GET", "/a?b=c").header("host", "x");
        let k = key(&base, 100).unwrap();
        let variants = [
            Request::new("POST", "/a?b=c").header("host", "x"),
            Request::new("GET", "/a?b=d").header("host", "x"),
            Request::new("GET", "/a?b=c").header("host", "y"),
            Request::new("GET", "/a?b=c").header("hos", "tx"),
            Request::new("GET", "/a?b=c")
                .header("host", "x")
                .header("a", ""),
            Request::new("GET", "/a?b=c").header("host", "x").body(b""),
            Request {
                client_ip: "10.0.0.1".parse().unwrap(),
                ..base.clone()
            },
            Request {
                version: "2.0",
                ..base.clone()
            },
        ];
        for v in &variants {
            assert_ne!(key(v, 100).unwrap(), k, "{v:?}");
        }
        assert_eq!(key(&base.clone(), 100).unwrap(), k);
        // Only the inspected prefix of the body counts.
        let long = Request::new("POST", "/").body(b"0123456789");
        let other = Request::new("POST", "/").body(b"01234567XX");
        assert_eq!(key(&long, 8), key(&other, 8));
        assert_ne!(key(&long, 10), key(&other, 10));
        let huge = vec![b'a'; MAX_KEY_BYTES];
        assert!(key(&Request::new("POST", "/").body(&huge), usize::MAX).is_none());
    }

    #[test]
    fn a_collision_is_a_miss_not_a_wrong_verdict() {
        let cache = VerdictCache::new(1); // every key shares the one slot
        let blocked = Verdict {
            blocked: true,
            status: 403,
            rule_ids: vec![942100],
            anomaly_score: Some(5),
        };
        cache.put(b"attack", &blocked);
        assert_eq!(cache.get(b"attack"), Some(blocked));
        assert_eq!(cache.get(b"benign"), None);
        cache.put(b"benign", &Verdict::default());
        assert_eq!(cache.get(b"attack"), None);
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn stateful_custom_rules_are_recognised() {
        for text in [
            "SecAction \"id:1,phase:1,pass,nolog,setvar:tx.do_reput_block=1\"",
            "SecRule TIME_HOUR \"@lt 6\" \"id:2,phase:1,deny\"",
            "SecRule IP:hits \"@gt 5\" \"id:3,phase:1,deny\"",
            "SecRule REMOTE_PORT \"@eq 1\" \"id:4,phase:1,deny\"",
            "SecAction \"id:5,phase:1,pass,setvar:'tx.dos_burst_time_slice=60'\"",
        ] {
            assert!(nondeterministic(text), "{text}");
        }
        assert!(!nondeterministic(
            "SecRule ARGS:q \"@contains evil\" \"id:6,phase:2,deny,status:403\""
        ));
        assert!(!nondeterministic(
            "SecRuleRemoveById 920350\nSecAction \"id:7,phase:1,pass,nolog,setvar:tx.allowed_request_content_type=|application/json|\""
        ));
    }
}
