//! What authentication plugins share: Kong's chaining rules and the anonymous fallback.
//!
//! Without `anonymous`, every auth plugin on a route must succeed (AND). With `anonymous`, a
//! plugin is skipped when an earlier one already authenticated the request, and a failure
//! maps the request to the anonymous consumer instead of refusing it (OR).

use std::sync::Arc;

use http::{HeaderName, HeaderValue, StatusCode};
use portcullis_config::{Errors, Obj};

use crate::catalog::{Catalog, ConsumerInfo};
use crate::{Ctx, Flow, Response};

/// Who the request is, once an auth plugin decided.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The consumer.
    pub consumer: Arc<ConsumerInfo>,
    /// The credential's identifier (key id, username, JWT key); `None` for anonymous.
    pub credential: Option<String>,
    /// The anonymous fallback was used.
    pub anonymous: bool,
}

/// The `anonymous` field: a consumer id or username, resolved at config load.
#[derive(Debug, Clone, Default)]
pub struct Anonymous(Option<Arc<ConsumerInfo>>);

impl Anonymous {
    /// Reads `anonymous` and checks the consumer exists (when the catalog is complete).
    pub fn read(o: &mut Obj<'_>, catalog: &Catalog, errs: &mut Errors) -> Anonymous {
        let Some(reference) = o.opt_str("anonymous", errs) else {
            return Anonymous(None);
        };
        if !catalog.is_complete() {
            return Anonymous(None);
        }
        match catalog.consumer(&reference) {
            Some(c) => Anonymous(Some(c)),
            None => {
                errs.push(
                    o.field_path("anonymous"),
                    format!("anonymous consumer '{reference}' is configured but doesn't exist"),
                );
                Anonymous(None)
            }
        }
    }

    /// Is a fallback configured?
    pub fn is_set(&self) -> bool {
        self.0.is_some()
    }

    /// On failure: continue as the anonymous consumer, or answer with `refusal`.
    pub fn fail(&self, ctx: &mut Ctx, refusal: Response) -> Flow {
        match &self.0 {
            Some(c) => {
                if ctx.identity.is_none() {
                    ctx.identity = Some(Identity {
                        consumer: c.clone(),
                        credential: None,
                        anonymous: true,
                    });
                }
                Flow::Continue
            }
            None => Flow::Respond(refusal),
        }
    }

    /// Kong: with `anonymous` set, a plugin does nothing when another one already
    /// authenticated the request with a real credential.
    pub fn skip(&self, ctx: &Ctx) -> bool {
        self.is_set() && ctx.identity.as_ref().is_some_and(|i| !i.anonymous)
    }
}

/// Records a successful authentication.
pub fn authenticate(ctx: &mut Ctx, consumer: Arc<ConsumerInfo>, credential: String) {
    ctx.identity = Some(Identity {
        consumer,
        credential: Some(credential),
        anonymous: false,
    });
}

/// A 401 with Kong's body and a `WWW-Authenticate` challenge.
pub fn unauthorized(message: &str, challenge: &str) -> Response {
    let mut r = Response::message(StatusCode::UNAUTHORIZED, message);
    if let Ok(v) = HeaderValue::from_str(challenge) {
        r.headers.insert(http::header::WWW_AUTHENTICATE, v);
    }
    r
}

/// Headers that carry identity upstream; a client's copies are always removed first.
pub const IDENTITY_HEADERS: &[&str] = &[
    "x-consumer-id",
    "x-consumer-custom-id",
    "x-consumer-username",
    "x-credential-identifier",
    "x-anonymous-consumer",
    "x-consumer-groups",
    "x-authenticated-groups",
    "x-authenticated-scope",
    "x-authenticated-userid",
    "x-credential-username",
];

/// Removes forged identity headers sent by the client.
pub fn strip_identity_headers(h: &mut http::HeaderMap) {
    crate::headers::remove_where(h, |n| IDENTITY_HEADERS.contains(&n));
}

/// Writes the identity headers for the upstream.
pub fn set_identity_headers(ctx: &mut Ctx) {
    // Names built at compile time: inserting by `&str` would parse the name on every request.
    static CONSUMER_ID: HeaderName = HeaderName::from_static("x-consumer-id");
    static CONSUMER_USERNAME: HeaderName = HeaderName::from_static("x-consumer-username");
    static CONSUMER_CUSTOM_ID: HeaderName = HeaderName::from_static("x-consumer-custom-id");
    static CREDENTIAL_IDENTIFIER: HeaderName = HeaderName::from_static("x-credential-identifier");
    static ANONYMOUS_CONSUMER: HeaderName = HeaderName::from_static("x-anonymous-consumer");
    let Some(id) = &ctx.identity else {
        return;
    };
    let h = &mut ctx.headers;
    // The consumer's values were prepared at config load; only the credential varies.
    let [cid, username, custom_id] = &id.consumer.header_values;
    for (name, value) in [
        (&CONSUMER_ID, cid),
        (&CONSUMER_USERNAME, username),
        (&CONSUMER_CUSTOM_ID, custom_id),
    ] {
        if let Some(v) = value {
            h.insert(name.clone(), v.clone());
        }
    }
    if let Some(c) = &id.credential {
        if let Ok(v) = HeaderValue::from_str(c) {
            h.insert(CREDENTIAL_IDENTIFIER.clone(), v);
        }
    }
    if id.anonymous {
        h.insert(ANONYMOUS_CONSUMER.clone(), HeaderValue::from_static("true"));
    }
}
