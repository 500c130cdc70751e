//! `hmac-auth`: requests signed with a shared secret (Kong's scheme).
//!
//! `Authorization: hmac username="u", algorithm="hmac-sha256", headers="date request-line",
//! signature="<base64>"` (or `Proxy-Authorization`). The signing string is built from the
//! listed headers exactly as Kong does; `Date` or `X-Date` must be within `clock_skew`.
//! Signatures are compared in constant time (the MAC's own `verify_slice`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use hmac::{Hmac, Mac};
use portcullis_config::{Errors, Obj};
use serde_json::Value;

use crate::auth::{authenticate, unauthorized, Anonymous};
use crate::catalog::{Catalog, ConsumerInfo};
use crate::lockout::{self, Lockout};
use crate::{Access, Ctx, Flow, Plugin};

const ALGORITHMS: &[&str] = &["hmac-sha1", "hmac-sha256", "hmac-sha384", "hmac-sha512"];
const CANNOT_VERIFY: &str = "HMAC signature cannot be verified";
const NO_DATE: &str = "HMAC signature cannot be verified, a valid date or x-date header is required for HMAC Authentication";

/// A compiled `hmac-auth` instance.
pub struct HmacAuth {
    hide_credentials: bool,
    validate_body: bool,
    clock_skew: i64,
    anonymous: Anonymous,
    enforce_headers: Vec<String>,
    algorithms: Vec<String>,
    challenge: String,
    users: HashMap<String, (Arc<ConsumerInfo>, Vec<u8>)>,
    lockout: Option<Arc<Lockout>>,
}

struct Params {
    username: String,
    algorithm: String,
    headers: Vec<String>,
    signature: Vec<u8>,
    header: &'static str,
}

impl HmacAuth {
    /// Validates the config and indexes the consumers' secrets.
    pub fn build(
        config: &Value,
        path: &str,
        errs: &mut Errors,
        catalog: &Catalog,
    ) -> Option<HmacAuth> {
        let before = errs.len();
        let mut o = Obj::open(config, path, errs)?;
        let hide_credentials = o.bool_or("hide_credentials", false, errs);
        let clock_skew = o.int_or("clock_skew", 300, 0, 86_400, errs);
        let anonymous = Anonymous::read(&mut o, catalog, errs);
        let validate_body = o.bool_or("validate_request_body", false, errs);
        let enforce_headers: Vec<String> = o
            .str_array("enforce_headers", errs)
            .into_iter()
            .map(|h| h.to_ascii_lowercase())
            .collect();
        let algorithms = if o.has("algorithms") {
            let a = o.str_array("algorithms", errs);
            for (i, x) in a.iter().enumerate() {
                if !ALGORITHMS.contains(&x.as_str()) {
                    errs.push(
                        format!("{}[{i}]", o.field_path("algorithms")),
                        format!("expected one of: {}", ALGORITHMS.join(", ")),
                    );
                }
            }
            a
        } else {
            let _ = o.get("algorithms");
            ALGORITHMS.iter().map(|s| s.to_string()).collect()
        };
        let realm = o.opt_str("realm", errs);
        let lockout = Lockout::read(&mut o, "hmac-auth", errs);
        o.finish(errs);
        if errs.len() > before {
            return None;
        }
        let mut users = HashMap::new();
        for cred in catalog.credentials("hmacauth_credentials") {
            let (Some(user), Some(secret)) = (
                cred.fields.get("username").and_then(Value::as_str),
                cred.fields.get("secret").and_then(Value::as_str),
            ) else {
                continue;
            };
            if let Some(consumer) = catalog.consumer(&cred.consumer) {
                users.insert(user.to_string(), (consumer, secret.as_bytes().to_vec()));
            }
        }
        Some(HmacAuth {
            hide_credentials,
            validate_body,
            clock_skew,
            anonymous,
            enforce_headers,
            algorithms,
            challenge: match realm {
                Some(r) => format!("hmac realm=\"{r}\""),
                None => "hmac".into(),
            },
            users,
            lockout,
        })
    }

    fn params(ctx: &Ctx) -> Option<Params> {
        for header in ["proxy-authorization", "authorization"] {
            let Some(v) = ctx.headers.get(header).and_then(|v| v.to_str().ok()) else {
                continue;
            };
            let v = v.trim();
            let Some(rest) = v.strip_prefix("hmac ").or_else(|| v.strip_prefix("HMAC ")) else {
                continue;
            };
            let mut fields: HashMap<&str, &str> = HashMap::new();
            for part in split_params(rest) {
                let (k, val) = part.split_once('=')?;
                fields.insert(k.trim(), val.trim().trim_matches('"'));
            }
            let signature = base64::engine::general_purpose::STANDARD
                .decode(fields.get("signature")?)
                .ok()?;
            return Some(Params {
                username: fields
                    .get("username")
                    .or_else(|| fields.get("keyId"))?
                    .to_string(),
                algorithm: fields.get("algorithm")?.to_ascii_lowercase(),
                headers: fields
                    .get("headers")
                    .map(|h| h.split_whitespace().map(str::to_ascii_lowercase).collect())
                    .unwrap_or_default(),
                signature,
                header,
            });
        }
        None
    }

    /// Kong's signing string over the listed headers.
    fn signing_string(ctx: &Ctx, headers: &[String]) -> String {
        let path_q = ctx.uri.path_and_query().map_or("/", |p| p.as_str());
        let version = match ctx.version {
            http::Version::HTTP_10 => "1.0",
            http::Version::HTTP_2 => "2.0",
            _ => "1.1",
        };
        let lines: Vec<String> = headers
            .iter()
            .map(|h| {
                // Every value of a repeated header is signed (joined as Kong does), so an
                // unsigned duplicate cannot ride along.
                let values: Vec<&str> = ctx
                    .headers
                    .get_all(h.as_str())
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .collect();
                let joined = (!values.is_empty()).then(|| values.join(", "));
                match joined.as_deref() {
                    Some(v) => format!("{h}: {v}"),
                    None if h == "request-line" => {
                        format!("{} {path_q} HTTP/{version}", ctx.method)
                    }
                    None if h == "@request-target" => {
                        format!("{h}: {} {path_q}", ctx.method.as_str().to_ascii_lowercase())
                    }
                    None => format!("{h}:"),
                }
            })
            .collect();
        lines.join("\n")
    }

    fn date_ok(&self, ctx: &Ctx) -> bool {
        let date = ctx
            .headers
            .get("x-date")
            .or_else(|| ctx.headers.get("date"))
            .and_then(|v| v.to_str().ok())
            .and_then(parse_http_date);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        date.is_some_and(|d| (now - d).abs() <= self.clock_skew)
    }

    fn decide(&self, ctx: &mut Ctx) -> Flow {
        if self.anonymous.skip(ctx) {
            return Flow::Continue;
        }
        let Some(p) = Self::params(ctx) else {
            return self
                .anonymous
                .fail(ctx, unauthorized("Unauthorized", &self.challenge));
        };
        if !self.date_ok(ctx) {
            return self
                .anonymous
                .fail(ctx, unauthorized(NO_DATE, &self.challenge));
        }
        if !self.algorithms.contains(&p.algorithm)
            || !self.enforce_headers.iter().all(|h| p.headers.contains(h))
        {
            return self
                .anonymous
                .fail(ctx, unauthorized(CANNOT_VERIFY, &self.challenge));
        }
        if let Some(r) = lockout::check(&self.lockout, ctx, &p.username) {
            return Flow::Respond(r);
        }
        let Some((consumer, secret)) = self.users.get(&p.username) else {
            if let Some(r) = lockout::failure(&self.lockout, ctx, &p.username) {
                return Flow::Respond(r);
            }
            return self
                .anonymous
                .fail(ctx, unauthorized(CANNOT_VERIFY, &self.challenge));
        };
        let signing = Self::signing_string(ctx, &p.headers);
        if !verify(&p.algorithm, secret, signing.as_bytes(), &p.signature) {
            if let Some(r) = lockout::failure(&self.lockout, ctx, &p.username) {
                return Flow::Respond(r);
            }
            return self.anonymous.fail(
                ctx,
                unauthorized("HMAC signature does not match", &self.challenge),
            );
        }
        if self.validate_body && !body_matches_digest(ctx, &p.headers) {
            return self.anonymous.fail(
                ctx,
                unauthorized("HMAC signature does not match", &self.challenge),
            );
        }
        lockout::success(&self.lockout, ctx, &p.username);
        if self.hide_credentials {
            ctx.headers.remove(p.header);
        }
        authenticate(ctx, consumer.clone(), p.username);
        Flow::Continue
    }
}

/// Kong's body check: `Digest: SHA-256=<base64 of the body's SHA-256>`; no Digest is only
/// acceptable for an empty body. Unlike Kong, a non-empty body's Digest must also be among the
/// signed headers, or anyone on the path could swap body and Digest together.
fn body_matches_digest(ctx: &Ctx, signed: &[String]) -> bool {
    use sha2::Digest as _;
    let body = ctx.body.as_deref().unwrap_or_default();
    let Some(received) = ctx.headers.get("digest").and_then(|v| v.to_str().ok()) else {
        return body.is_empty();
    };
    if !body.is_empty() && !signed.iter().any(|h| h == "digest") {
        return false;
    }
    let created = format!(
        "SHA-256={}",
        base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(body))
    );
    // Not a secret (a hash of what the client sent): plain comparison is fine.
    created == received.trim()
}

/// Splits `a="x, y", b="z"` on commas outside quotes.
fn split_params(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(s[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(s[start..].trim());
    out.into_iter().filter(|p| !p.is_empty()).collect()
}

fn verify(alg: &str, key: &[u8], msg: &[u8], sig: &[u8]) -> bool {
    fn check<M: Mac + hmac::digest::KeyInit>(key: &[u8], msg: &[u8], sig: &[u8]) -> bool {
        match <M as hmac::digest::KeyInit>::new_from_slice(key) {
            Ok(mut m) => {
                m.update(msg);
                m.verify_slice(sig).is_ok()
            }
            Err(_) => false,
        }
    }
    match alg {
        "hmac-sha1" => check::<Hmac<sha1::Sha1>>(key, msg, sig),
        "hmac-sha256" => check::<Hmac<sha2::Sha256>>(key, msg, sig),
        "hmac-sha384" => check::<Hmac<sha2::Sha384>>(key, msg, sig),
        "hmac-sha512" => check::<Hmac<sha2::Sha512>>(key, msg, sig),
        _ => false,
    }
}

/// Parses an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) into Unix seconds.
pub fn parse_http_date(s: &str) -> Option<i64> {
    let parts: Vec<&str> = s.split_whitespace().collect();
    let [_, day, mon, year, time, gmt] = parts.as_slice() else {
        return None;
    };
    if *gmt != "GMT" {
        return None;
    }
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| m == mon)? as i64
        + 1;
    let (day, year): (i64, i64) = (day.parse().ok()?, year.parse().ok()?);
    // Bounded so the arithmetic below cannot overflow on hostile input.
    if !(1..=31).contains(&day) || !(1970..=9999).contains(&year) {
        return None;
    }
    let t: Vec<i64> = time
        .split(':')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    let [h, m, sec] = t.as_slice() else {
        return None;
    };
    if !(0..24).contains(h) || !(0..60).contains(m) || !(0..=60).contains(sec) {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + m * 60 + sec)
}

impl Plugin for HmacAuth {
    fn name(&self) -> &'static str {
        "hmac-auth"
    }

    fn response_header_names(&self) -> Option<Vec<http::HeaderName>> {
        // No response phase.
        Some(Vec::new())
    }

    fn access<'a>(&'a self, ctx: &'a mut Ctx) -> Access<'a> {
        Access::Now(self.decide(ctx))
    }

    fn reads_body(&self) -> bool {
        self.validate_body
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates() {
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(parse_http_date("garbage"), None);
        assert_eq!(
            parse_http_date("Sun, 06 Nov 99999999999999 00:00:00 GMT"),
            None
        );
        assert_eq!(parse_http_date("Sun, -6 Nov 1994 08:49:37 GMT"), None);
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 99:49:37 GMT"), None);
    }

    #[test]
    fn params_split_outside_quotes() {
        assert_eq!(
            split_params(r#"username="a", headers="date request-line", signature="x=""#),
            vec![
                r#"username="a""#,
                r#"headers="date request-line""#,
                r#"signature="x=""#
            ]
        );
    }
}
