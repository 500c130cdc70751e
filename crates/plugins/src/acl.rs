//! `acl`: allow or deny consumers by group (ACL credentials and consumer groups).

use std::sync::Arc;

use http::{HeaderValue, StatusCode};
use portcullis_config::{Errors, Obj};
use serde_json::Value;

use crate::auth::unauthorized;
use crate::catalog::Catalog;
use crate::{Access, Ctx, Flow, Plugin, Response};

/// A compiled `acl` instance.
pub struct Acl {
    allow: Vec<String>,
    deny: Vec<String>,
    hide_groups_header: bool,
    catalog: Arc<Catalog>,
}

impl Acl {
    /// Validates the config.
    pub fn build(
        config: &Value,
        path: &str,
        errs: &mut Errors,
        catalog: &Arc<Catalog>,
    ) -> Option<Acl> {
        let before = errs.len();
        let mut o = Obj::open(config, path, errs)?;
        let allow = o.str_array("allow", errs);
        let deny = o.str_array("deny", errs);
        if allow.is_empty() == deny.is_empty() {
            errs.push(
                o.path().to_string(),
                "exactly one of these fields must be non-empty: 'allow', 'deny'",
            );
        }
        let hide_groups_header = o.bool_or("hide_groups_header", false, errs);
        o.accept(&["always_use_authenticated_groups", "include_consumer_groups"]);
        o.finish(errs);
        if errs.len() > before {
            return None;
        }
        Some(Acl {
            allow,
            deny,
            hide_groups_header,
            catalog: catalog.clone(),
        })
    }

    fn decide(&self, ctx: &mut Ctx) -> Flow {
        let Some(identity) = &ctx.identity else {
            return Flow::Respond(unauthorized("Unauthorized", "Key"));
        };
        let groups = self.catalog.groups_of(&identity.consumer.id);
        let allowed = if !self.allow.is_empty() {
            groups.iter().any(|g| self.allow.contains(g))
        } else {
            !groups.iter().any(|g| self.deny.contains(g))
        };
        if !allowed {
            return Flow::Respond(Response::message(
                StatusCode::FORBIDDEN,
                "You cannot consume this service",
            ));
        }
        if !self.hide_groups_header && !groups.is_empty() {
            if let Ok(v) = HeaderValue::from_str(&groups.join(", ")) {
                ctx.headers.insert("x-consumer-groups", v);
            }
        }
        Flow::Continue
    }
}

impl Plugin for Acl {
    fn name(&self) -> &'static str {
        "acl"
    }

    fn response_header_names(&self) -> Option<Vec<http::HeaderName>> {
        // No response phase.
        Some(Vec::new())
    }

    fn access<'a>(&'a self, ctx: &'a mut Ctx) -> Access<'a> {
        Access::Now(self.decide(ctx))
    }
}
