//! `key-auth`: an API key in a header or query argument identifies the consumer.
//!
//! Keys are never kept in memory as given: at load each key is replaced by a keyed SHA-256
//! digest (random per-process key), and a presented key is digested the same way before the
//! lookup, so a memory dump or a timing side channel does not reveal stored keys.

use std::collections::HashMap;
use std::sync::Arc;

use http::Method;
use portcullis_config::{Errors, Obj};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::auth::{authenticate, unauthorized, Anonymous};
use crate::catalog::{Catalog, ConsumerInfo};
use crate::lockout::{self, Lockout};
use crate::{Access, Ctx, Flow, Plugin};

/// A compiled `key-auth` instance.
pub struct KeyAuth {
    key_names: Vec<String>,
    hide_credentials: bool,
    anonymous: Anonymous,
    key_in_header: bool,
    key_in_query: bool,
    key_in_body: bool,
    run_on_preflight: bool,
    challenge: String,
    salt: [u8; 32],
    keys: HashMap<[u8; 32], (Arc<ConsumerInfo>, String)>,
    lockout: Option<Arc<Lockout>>,
}

impl KeyAuth {
    /// Validates the config and indexes the consumers' keys.
    pub fn build(
        config: &Value,
        path: &str,
        errs: &mut Errors,
        catalog: &Catalog,
    ) -> Option<KeyAuth> {
        let before = errs.len();
        let mut o = Obj::open(config, path, errs)?;
        let key_names = if o.has("key_names") {
            o.str_array("key_names", errs)
        } else {
            let _ = o.get("key_names");
            vec!["apikey".to_string()]
        };
        for (i, k) in key_names.iter().enumerate() {
            if k.is_empty() || http::HeaderName::from_bytes(k.as_bytes()).is_err() {
                errs.push(
                    format!("{}[{i}]", o.field_path("key_names")),
                    "bad header name",
                );
            }
        }
        if key_names.is_empty() {
            errs.push(o.field_path("key_names"), "length must be at least 1");
        }
        let hide_credentials = o.bool_or("hide_credentials", false, errs);
        let anonymous = Anonymous::read(&mut o, catalog, errs);
        let key_in_header = o.bool_or("key_in_header", true, errs);
        let key_in_query = o.bool_or("key_in_query", true, errs);
        let key_in_body = o.bool_or("key_in_body", false, errs);
        let run_on_preflight = o.bool_or("run_on_preflight", true, errs);
        let realm = o.opt_str("realm", errs);
        let lockout = Lockout::read(&mut o, "key-auth", errs);
        o.finish(errs);
        if errs.len() > before {
            return None;
        }
        let salt: [u8; 32] = rand::random();
        let mut keys = HashMap::new();
        for cred in catalog.credentials("keyauth_credentials") {
            let Some(key) = cred.fields.get("key").and_then(Value::as_str) else {
                continue;
            };
            if let Some(consumer) = catalog.consumer(&cred.consumer) {
                keys.insert(digest(&salt, key), (consumer, cred.id.clone()));
            }
        }
        Some(KeyAuth {
            key_names: key_names
                .into_iter()
                .map(|k| k.to_ascii_lowercase())
                .collect(),
            hide_credentials,
            anonymous,
            key_in_header,
            key_in_query,
            key_in_body,
            run_on_preflight,
            challenge: match realm {
                Some(r) => format!("Key realm=\"{r}\""),
                None => "Key".to_string(),
            },
            salt,
            keys,
            lockout,
        })
    }

    fn decide(&self, ctx: &mut Ctx) -> Flow {
        if !self.run_on_preflight && ctx.method == Method::OPTIONS {
            return Flow::Continue;
        }
        if self.anonymous.skip(ctx) {
            return Flow::Continue;
        }
        let mut found: Option<(String, &str, Place)> = None;
        for name in &self.key_names {
            if self.key_in_header {
                let mut values = ctx.headers.get_all(name.as_str()).iter();
                if let Some(v) = values.next() {
                    if values.next().is_some() {
                        return self.anonymous.fail(
                            ctx,
                            unauthorized("Duplicate API key found", &self.challenge),
                        );
                    }
                    if let Ok(v) = v.to_str() {
                        found = Some((v.to_string(), name, Place::Header));
                        break;
                    }
                }
            }
            if self.key_in_query {
                if let Some(v) = ctx.query_arg(name) {
                    let decoded = percent_encoding::percent_decode_str(v)
                        .decode_utf8_lossy()
                        .into_owned();
                    found = Some((decoded, name, Place::Query));
                    break;
                }
            }
            if self.key_in_body {
                if let Some(v) = body_arg(ctx, name) {
                    found = Some((v, name, Place::Body));
                    break;
                }
            }
        }
        let Some((key, name, place)) = found else {
            return self.anonymous.fail(
                ctx,
                unauthorized("No API key found in request", &self.challenge),
            );
        };
        if let Some(r) = lockout::check(&self.lockout, ctx, &key) {
            return Flow::Respond(r);
        }
        let Some((consumer, cred_id)) = self.keys.get(&digest(&self.salt, &key)) else {
            if let Some(r) = lockout::failure(&self.lockout, ctx, &key) {
                return Flow::Respond(r);
            }
            return self
                .anonymous
                .fail(ctx, unauthorized("Unauthorized", &self.challenge));
        };
        lockout::success(&self.lockout, ctx, &key);
        if self.hide_credentials {
            match place {
                Place::Header => {
                    ctx.headers.remove(name);
                }
                Place::Query => ctx.remove_query_arg(name),
                Place::Body => remove_body_arg(ctx, name),
            }
        }
        authenticate(ctx, consumer.clone(), cred_id.clone());
        Flow::Continue
    }
}

/// Where the key was found.
#[derive(Clone, Copy)]
enum Place {
    Header,
    Query,
    Body,
}

/// A key in a form (`application/x-www-form-urlencoded`) or JSON object body.
fn body_arg(ctx: &Ctx, name: &str) -> Option<String> {
    let body = ctx.body.as_deref()?;
    match ctx.media_type()?.as_str() {
        "application/x-www-form-urlencoded" => form_urlencoded(body)
            .find(|(k, _)| k == name)
            .map(|(_, v)| v),
        "application/json" => match serde_json::from_slice::<Value>(body).ok()?.get(name)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        },
        _ => None,
    }
}

/// Decoded `(name, value)` pairs of a form body.
fn form_urlencoded(body: &[u8]) -> impl Iterator<Item = (String, String)> + '_ {
    body.split(|b| *b == b'&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = match pair.iter().position(|b| *b == b'=') {
                Some(i) => (&pair[..i], &pair[i + 1..]),
                None => (pair, &[][..]),
            };
            (form_decode(k), form_decode(v))
        })
}

fn form_decode(s: &[u8]) -> String {
    let plus: Vec<u8> = s
        .iter()
        .map(|b| if *b == b'+' { b' ' } else { *b })
        .collect();
    percent_encoding::percent_decode(&plus)
        .decode_utf8_lossy()
        .into_owned()
}

/// Removes the key from the body (hide_credentials), keeping everything else as sent.
fn remove_body_arg(ctx: &mut Ctx, name: &str) {
    let Some(body) = ctx.body.take() else {
        return;
    };
    let rewritten = match ctx.media_type().as_deref() {
        Some("application/x-www-form-urlencoded") => {
            let kept: Vec<&[u8]> = body
                .split(|b| *b == b'&')
                .filter(|pair| {
                    let k = pair.split(|b| *b == b'=').next().unwrap_or_default();
                    form_decode(k) != name
                })
                .collect();
            Some(bytes::Bytes::from(kept.join(&b'&')))
        }
        Some("application/json") => match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(mut m)) => {
                m.remove(name);
                serde_json::to_vec(&Value::Object(m))
                    .ok()
                    .map(bytes::Bytes::from)
            }
            _ => None,
        },
        _ => None,
    };
    ctx.body = Some(rewritten.unwrap_or(body));
}

fn digest(salt: &[u8; 32], key: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(key.as_bytes());
    h.finalize().into()
}

impl Plugin for KeyAuth {
    fn response_header_names(&self) -> Option<Vec<http::HeaderName>> {
        // No response phase.
        Some(Vec::new())
    }

    fn name(&self) -> &'static str {
        "key-auth"
    }

    fn access<'a>(&'a self, ctx: &'a mut Ctx) -> Access<'a> {
        Access::Now(self.decide(ctx))
    }

    fn reads_body(&self) -> bool {
        self.key_in_body
    }

    fn sensitive_names(&self) -> Vec<String> {
        self.key_names.clone()
    }
}
