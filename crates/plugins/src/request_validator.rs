//! `request-validator` (Kong Enterprise's plugin, in the open): validates query, header and
//! path parameters against `parameter_schema`, then the Content-Type against
//! `allowed_content_types` and a JSON body against `body_schema`; a failure is 400.
//!
//! `body_schema` is a JSON string, as in Kong: a JSON Schema (draft 4, 6, 7, 2019-09 or
//! 2020-12, picked by `version`), or with `version: kong` Kong's legacy field-list format (a
//! subset, see [`legacy`]). Every schema is compiled once per config load.
//!
//! Answers follow Kong's: `request param doesn't conform to schema`, `request body doesn't
//! conform to schema`; with `verbose_response`, `<in> '<name>' validation failed, [error]
//! <reason>`, `specified Content-Type is not allowed`, or the body's first error. Reasons
//! name the failing location and keyword but never echo the request's values.

use http::StatusCode;
use jsonschema::{Draft, Validator};
use portcullis_config::{Errors, Obj};
use serde_json::Value;

use crate::validation::{self, Found, Location, MediaType, ParamSpec, Shape, Style};
use crate::{Access, Ctx, Flow, Plugin, Response};

const DENY_BODY: &str = "request body doesn't conform to schema";
const DENY_CONTENT_TYPE: &str = "specified Content-Type is not allowed";
const DENY_PARAM: &str = "request param doesn't conform to schema";
const NOT_JSON: &str = "request body is not valid JSON";

/// How the body is checked.
#[derive(Debug)]
enum BodyCheck {
    Json(Box<Validator>),
    Legacy(legacy::Record),
}

#[derive(Debug)]
struct Param {
    spec: ParamSpec,
    required: bool,
    validator: Box<Validator>,
}

/// A compiled `request-validator` instance.
#[derive(Debug)]
pub struct RequestValidator {
    body: Option<std::sync::Arc<BodyCheck>>,
    params: Vec<Param>,
    allowed: Vec<MediaType>,
    strict_params: bool,
    verbose: bool,
}

fn draft_of(version: &str) -> Draft {
    match version {
        "draft6" => Draft::Draft6,
        "draft7" => Draft::Draft7,
        "draft201909" => Draft::Draft201909,
        "draft202012" => Draft::Draft202012,
        _ => Draft::Draft4,
    }
}

impl RequestValidator {
    /// Validates the config and compiles every schema.
    pub fn build(config: &Value, path: &str, errs: &mut Errors) -> Option<RequestValidator> {
        let before = errs.len();
        let mut o = Obj::open(config, path, errs)?;
        let explicit_version = o.has("version");
        let version = o.one_of(
            "version",
            "kong",
            &[
                "kong",
                "draft4",
                "draft6",
                "draft7",
                "draft201909",
                "draft202012",
            ],
            errs,
        );
        let draft = draft_of(&version);
        let body_path = o.field_path("body_schema");
        let body = o.opt_str("body_schema", errs).and_then(|text| {
            match serde_json::from_str::<Value>(&text) {
                Err(e) => {
                    errs.push(&body_path, format!("body_schema is not valid JSON: {e}"));
                    None
                }
                Ok(schema @ Value::Array(_)) if version == "kong" => {
                    match legacy::Record::parse(&schema) {
                        Ok(r) => Some(BodyCheck::Legacy(r)),
                        Err(e) => {
                            errs.push(&body_path, e);
                            None
                        }
                    }
                }
                Ok(_) if version == "kong" && explicit_version => {
                    errs.push(
                        &body_path,
                        "with version 'kong', body_schema must be an array of field \
                         definitions; set version to a JSON Schema draft (draft4 .. draft202012)",
                    );
                    None
                }
                Ok(schema) => match validation::compile(&schema, draft) {
                    Ok(v) => Some(BodyCheck::Json(Box::new(v))),
                    Err(e) => {
                        errs.push(&body_path, e);
                        None
                    }
                },
            }
        });
        let params = o.array("parameter_schema", errs, |v, p, errs| {
            read_param(v, &p, draft, errs)
        });
        let ct_path = o.field_path("allowed_content_types");
        let allowed: Vec<MediaType> = if o.has("allowed_content_types") {
            o.str_array("allowed_content_types", errs)
                .iter()
                .enumerate()
                .filter_map(|(i, s)| {
                    let m = MediaType::parse(s);
                    if m.is_none() {
                        errs.push(format!("{ct_path}[{i}]"), "invalid value: not a media type");
                    }
                    m
                })
                .collect()
        } else {
            MediaType::parse("application/json").into_iter().collect()
        };
        let verbose = o.bool_or("verbose_response", false, errs);
        let strict_params = o.bool_or("content_type_parameter_validation", true, errs);
        if body.is_none() && params.is_empty() && errs.len() == before {
            errs.push(
                o.path().to_string(),
                "at least one of these fields must be non-empty: 'config.body_schema', \
                 'config.parameter_schema'",
            );
        }
        o.finish(errs);
        if errs.len() > before {
            return None;
        }
        Some(RequestValidator {
            body: body.map(std::sync::Arc::new),
            params,
            allowed,
            strict_params,
            verbose,
        })
    }

    fn refuse(&self, reason: Value) -> Flow {
        tracing::info!(plugin = "request-validator", reason = %reason, "request validation failed");
        let body = serde_json::json!({ "message": reason }).to_string();
        Flow::Respond(Response::json(StatusCode::BAD_REQUEST, body.into()))
    }

    fn check_params(&self, ctx: &Ctx) -> Result<(), String> {
        let mut pairs = None;
        for p in &self.params {
            let found = match p.spec.location {
                Location::Query => p.spec.read_query(
                    pairs.get_or_insert_with(|| validation::query_pairs(ctx.query.as_deref())),
                ),
                Location::Header => p.spec.read_headers(&ctx.headers),
                Location::Path => ctx
                    .uri_captures
                    .iter()
                    .find(|(n, _)| n.as_deref() == Some(p.spec.name.as_str()))
                    .map_or(Found::Missing, |(_, v)| {
                        Found::Values(vec![p.spec.parse_path(v)])
                    }),
            };
            let fail = |why: String| {
                Err(format!(
                    "{} '{}' validation failed, [error] {why}",
                    p.spec.location.as_str(),
                    p.spec.name
                ))
            };
            match found {
                Found::Missing if p.required => return fail("required parameter missing".into()),
                Found::Missing => {}
                Found::Values(values) => {
                    for v in &values {
                        if let Some(e) = validation::first_error(&p.validator, v) {
                            return fail(e);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn decide(&self, ctx: &Ctx) -> Flow {
        if let Err(reason) = self.check_params(ctx) {
            let msg = if self.verbose {
                reason.as_str()
            } else {
                DENY_PARAM
            };
            return self.refuse(Value::String(msg.into()));
        }
        let Some(check) = &self.body else {
            return Flow::Continue;
        };
        let media = ctx
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(MediaType::parse);
        let allowed = media
            .as_ref()
            .is_some_and(|m| self.allowed.iter().any(|a| a.covers(m, self.strict_params)));
        let Some(media) = media.filter(|_| allowed) else {
            let msg = if self.verbose {
                DENY_CONTENT_TYPE
            } else {
                DENY_BODY
            };
            return self.refuse(Value::String(msg.into()));
        };
        // As in Kong, only JSON bodies are validated; other allowed types pass.
        if media.essence() != "application/json" {
            return Flow::Continue;
        }
        let raw = ctx.body.as_deref().unwrap_or_default();
        self.verdict(judge(check, raw))
    }

    /// The answer for a body judgement.
    fn verdict(&self, judged: Result<(), Option<Value>>) -> Flow {
        match judged {
            Ok(()) => Flow::Continue,
            Err(None) => self.refuse(Value::String(NOT_JSON.into())),
            Err(Some(reason)) if self.verbose => self.refuse(reason),
            Err(Some(reason)) => {
                tracing::debug!(reason = %reason, "request-validator: body refused");
                self.refuse(Value::String(DENY_BODY.into()))
            }
        }
    }

    /// Does the body still need a (possibly large) schema check? Everything else — parameters,
    /// content type — is decided here.
    fn needs_body_check(&self, ctx: &Ctx) -> bool {
        let Some(body) = ctx.body.as_ref() else {
            return false;
        };
        body.len() > OFFLOAD_BYTES
            && self.body.is_some()
            && self.check_params(ctx).is_ok()
            && ctx
                .headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .and_then(MediaType::parse)
                .is_some_and(|m| {
                    m.essence() == "application/json"
                        && self
                            .allowed
                            .iter()
                            .any(|a| a.covers(&m, self.strict_params))
                })
    }
}

/// Bodies larger than this are parsed and validated on the blocking pool, not on the reactor.
const OFFLOAD_BYTES: usize = 64 * 1024;

/// Parses and validates a JSON body: `Err(None)` when it is not JSON, `Err(Some(reason))`
/// when it breaks the schema.
fn judge(check: &BodyCheck, raw: &[u8]) -> Result<(), Option<Value>> {
    let body: Value = if raw.iter().all(u8::is_ascii_whitespace) {
        Value::Object(serde_json::Map::new())
    } else {
        serde_json::from_slice(raw).map_err(|_| None)?
    };
    let failure = match check {
        BodyCheck::Json(v) => validation::first_error(v, &body).map(Value::String),
        BodyCheck::Legacy(r) => r.validate(&body).err(),
    };
    match failure {
        None => Ok(()),
        Some(reason) => Err(Some(reason)),
    }
}

impl RequestValidator {}

fn read_param(v: &Value, path: &str, draft: Draft, errs: &mut Errors) -> Option<Param> {
    let before = errs.len();
    let mut o = Obj::open(v, path, errs)?;
    let name = o.req_str("name", errs);
    let in_path = o.field_path("in");
    let location = o.req_str("in", errs).and_then(|s| {
        let l = Location::parse(&s);
        if l.is_none() {
            errs.push(&in_path, "expected one of: query, header, path");
        }
        l
    });
    let required = o.bool_or("required", false, errs);
    let style_path = o.field_path("style");
    let style = o.opt_str("style", errs);
    let explode = o.opt_bool("explode", errs);
    let schema_path = o.field_path("schema");
    let schema_text = o.req_str("schema", errs);
    o.finish(errs);
    let location = location?;
    let style = match style {
        Some(s) => match Style::parse(&s, location) {
            Ok(st) => st,
            Err(e) => {
                errs.push(style_path, e);
                return None;
            }
        },
        None => Style::default_for(location),
    };
    let schema: Value = match serde_json::from_str(&schema_text?) {
        Ok(s) => s,
        Err(e) => {
            errs.push(schema_path, format!("schema is not valid JSON: {e}"));
            return None;
        }
    };
    let validator = match validation::compile(&schema, draft) {
        Ok(v) => v,
        Err(e) => {
            errs.push(schema_path, e);
            return None;
        }
    };
    if errs.len() > before {
        return None;
    }
    Some(Param {
        spec: ParamSpec {
            name: name?,
            location,
            style,
            explode: explode.unwrap_or(style == Style::Form),
            shape: Shape::of(&schema, &schema),
        },
        required,
        validator: Box::new(validator),
    })
}

impl Plugin for RequestValidator {
    fn response_header_names(&self) -> Option<Vec<http::HeaderName>> {
        // No response phase.
        Some(Vec::new())
    }

    fn name(&self) -> &'static str {
        "request-validator"
    }

    fn reads_body(&self) -> bool {
        self.body.is_some()
    }

    fn access<'a>(&'a self, ctx: &'a mut Ctx) -> Access<'a> {
        if !self.needs_body_check(ctx) {
            return Access::Now(self.decide(ctx));
        }
        // A large JSON body: parse and validate it off the reactor threads.
        let (Some(check), Some(raw)) = (self.body.clone(), ctx.body.clone()) else {
            return Access::Now(self.decide(ctx));
        };
        Access::Later(Box::pin(async move {
            match tokio::task::spawn_blocking(move || judge(&check, &raw)).await {
                Ok(judged) => self.verdict(judged),
                Err(_) => self.refuse(Value::String(DENY_BODY.into())),
            }
        }))
    }
}

/// Kong's legacy body schema (`version: kong`): a JSON array of one-key objects, each naming a
/// field and its definition, e.g. `[{"name": {"type": "string", "required": true}}]`.
///
/// Supported: types `string`, `number`, `integer`, `boolean`, `array`, `set`, `map`,
/// `record`; `required`, `default` (accepted, not applied), `len_min`, `len_max`,
/// `between`, `gt`, `one_of`, `starts_with`, `uuid`, `elements`, `keys`, `values`, `fields`.
/// Lua-pattern validators (`match`, `match_all`, `not_match`, ...) and custom validators are
/// refused at config load. As in Kong, strings must be non-empty unless `len_min` is 0, and
/// fields not in the schema are refused.
pub mod legacy {
    use serde_json::{Map, Value};

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Type {
        String,
        Number,
        Integer,
        Boolean,
        Array,
        Set,
        Map,
        Record,
    }

    /// One field definition.
    #[derive(Debug)]
    pub struct Field {
        ty: Type,
        required: bool,
        len_min: Option<usize>,
        len_max: Option<usize>,
        between: Option<(f64, f64)>,
        gt: Option<f64>,
        one_of: Option<Vec<Value>>,
        starts_with: Option<String>,
        uuid: bool,
        elements: Option<Box<Field>>,
        keys: Option<Box<Field>>,
        values: Option<Box<Field>>,
        fields: Option<Record>,
    }

    /// An ordered list of named fields (a record).
    #[derive(Debug)]
    pub struct Record(Vec<(String, Field)>);

    impl Record {
        /// Parses `[{"name": {...}}, ...]`.
        pub fn parse(v: &Value) -> Result<Record, String> {
            Self::parse_at(v, "")
        }

        fn parse_at(v: &Value, at: &str) -> Result<Record, String> {
            let Value::Array(items) = v else {
                return Err(format!("{at}expected an array of field definitions"));
            };
            let mut out = Vec::new();
            for item in items {
                let Some(obj) = item.as_object().filter(|o| o.len() == 1) else {
                    return Err(format!(
                        "{at}each field must be an object with exactly one key (its name)"
                    ));
                };
                for (name, def) in obj {
                    out.push((name.clone(), Field::parse(def, &format!("{at}{name}."))?));
                }
            }
            Ok(Record(out))
        }

        /// Validates a body; the error is Kong's shape, `{"field": "message", ...}`.
        pub fn validate(&self, v: &Value) -> Result<(), Value> {
            let Value::Object(m) = v else {
                return Err(Value::String("expected a record".into()));
            };
            let mut errs = Map::new();
            for (name, f) in &self.0 {
                match m.get(name).filter(|v| !v.is_null()) {
                    None if f.required => {
                        errs.insert(name.clone(), "required field missing".into());
                    }
                    None => {}
                    Some(v) => {
                        if let Err(e) = f.validate(v) {
                            errs.insert(name.clone(), e);
                        }
                    }
                }
            }
            for k in m.keys() {
                if !self.0.iter().any(|(n, _)| n == k) {
                    errs.insert(k.clone(), "unknown field".into());
                }
            }
            if errs.is_empty() {
                Ok(())
            } else {
                Err(Value::Object(errs))
            }
        }
    }

    fn num(v: &Value, at: &str, key: &str) -> Result<f64, String> {
        v.as_f64()
            .ok_or_else(|| format!("{at}{key}: expected a number"))
    }

    fn size(v: &Value, at: &str, key: &str) -> Result<usize, String> {
        v.as_u64()
            .map(|n| n as usize)
            .ok_or_else(|| format!("{at}{key}: expected a non-negative integer"))
    }

    impl Field {
        fn parse(v: &Value, at: &str) -> Result<Field, String> {
            let Some(m) = v.as_object() else {
                return Err(format!("{at}expected a field definition object"));
            };
            let ty = match m.get("type").and_then(Value::as_str) {
                Some("string") => Type::String,
                Some("number") => Type::Number,
                Some("integer") => Type::Integer,
                Some("boolean") => Type::Boolean,
                Some("array") => Type::Array,
                Some("set") => Type::Set,
                Some("map") => Type::Map,
                Some("record") => Type::Record,
                Some(t) => return Err(format!("{at}type: unsupported type '{t}'")),
                None => return Err(format!("{at}type: required field missing")),
            };
            let mut f = Field {
                ty,
                required: false,
                len_min: None,
                len_max: None,
                between: None,
                gt: None,
                one_of: None,
                starts_with: None,
                uuid: false,
                elements: None,
                keys: None,
                values: None,
                fields: None,
            };
            for (k, v) in m {
                match k.as_str() {
                    "type" | "default" => {}
                    "required" => {
                        f.required = v
                            .as_bool()
                            .ok_or_else(|| format!("{at}required: expected a boolean"))?
                    }
                    "uuid" => {
                        f.uuid = v
                            .as_bool()
                            .ok_or_else(|| format!("{at}uuid: expected a boolean"))?
                    }
                    "len_min" => f.len_min = Some(size(v, at, k)?),
                    "len_max" => f.len_max = Some(size(v, at, k)?),
                    "gt" => f.gt = Some(num(v, at, k)?),
                    "between" => {
                        let pair = v.as_array().filter(|a| a.len() == 2).ok_or_else(|| {
                            format!("{at}between: expected an array of two numbers")
                        })?;
                        f.between = Some((num(&pair[0], at, k)?, num(&pair[1], at, k)?));
                    }
                    "one_of" => {
                        f.one_of = Some(
                            v.as_array()
                                .cloned()
                                .ok_or_else(|| format!("{at}one_of: expected an array"))?,
                        )
                    }
                    "starts_with" => {
                        f.starts_with = Some(
                            v.as_str()
                                .ok_or_else(|| format!("{at}starts_with: expected a string"))?
                                .to_string(),
                        )
                    }
                    "elements" => {
                        f.elements = Some(Box::new(Field::parse(v, &format!("{at}elements."))?))
                    }
                    "keys" => f.keys = Some(Box::new(Field::parse(v, &format!("{at}keys."))?)),
                    "values" => {
                        f.values = Some(Box::new(Field::parse(v, &format!("{at}values."))?))
                    }
                    "fields" => f.fields = Some(Record::parse_at(v, at)?),
                    "match" | "match_all" | "match_none" | "match_any" | "not_match" => {
                        return Err(format!(
                            "{at}{k}: Lua patterns are not supported; use a JSON Schema \
                             version with 'pattern'"
                        ))
                    }
                    other => return Err(format!("{at}{other}: unsupported field attribute")),
                }
            }
            Ok(f)
        }

        fn validate(&self, v: &Value) -> Result<(), Value> {
            let fail = |m: String| Err(Value::String(m));
            match self.ty {
                Type::String => {
                    let Some(s) = v.as_str() else {
                        return fail("expected a string".into());
                    };
                    let n = s.chars().count();
                    let min = self.len_min.unwrap_or(1);
                    if n < min {
                        return fail(format!("length must be at least {min}"));
                    }
                    if let Some(max) = self.len_max.filter(|m| n > *m) {
                        return fail(format!("length must be at most {max}"));
                    }
                    if let Some(p) = self.starts_with.as_ref().filter(|p| !s.starts_with(*p)) {
                        return fail(format!("should start with: {p}"));
                    }
                    if self.uuid && !is_uuid(s) {
                        return fail("expected a valid UUID".into());
                    }
                }
                Type::Number | Type::Integer => {
                    let Some(n) = v.as_f64() else {
                        return fail(if self.ty == Type::Integer {
                            "expected an integer".into()
                        } else {
                            "expected a number".into()
                        });
                    };
                    if self.ty == Type::Integer && n.fract() != 0.0 {
                        return fail("expected an integer".into());
                    }
                    if let Some((lo, hi)) = self.between.filter(|(lo, hi)| n < *lo || n > *hi) {
                        return fail(format!("value should be between {lo} and {hi}"));
                    }
                    if let Some(g) = self.gt.filter(|g| n <= *g) {
                        return fail(format!("value must be greater than {g}"));
                    }
                }
                Type::Boolean if !v.is_boolean() => return fail("expected a boolean".into()),
                Type::Boolean => {}
                Type::Array | Type::Set => {
                    let Some(items) = v.as_array() else {
                        return fail(if self.ty == Type::Set {
                            "expected a set".into()
                        } else {
                            "expected an array".into()
                        });
                    };
                    if let Some(min) = self.len_min.filter(|m| items.len() < *m) {
                        return fail(format!("length must be at least {min}"));
                    }
                    if let Some(max) = self.len_max.filter(|m| items.len() > *m) {
                        return fail(format!("length must be at most {max}"));
                    }
                    if let Some(el) = &self.elements {
                        let mut errs = Map::new();
                        for (i, item) in items.iter().enumerate() {
                            if let Err(e) = el.validate(item) {
                                errs.insert((i + 1).to_string(), e);
                            }
                        }
                        if !errs.is_empty() {
                            return Err(Value::Object(errs));
                        }
                    }
                }
                Type::Map => {
                    let Some(m) = v.as_object() else {
                        return fail("expected a map".into());
                    };
                    let mut errs = Map::new();
                    for (k, val) in m {
                        if let Some(kf) = &self.keys {
                            if let Err(e) = kf.validate(&Value::String(k.clone())) {
                                errs.insert(k.clone(), e);
                                continue;
                            }
                        }
                        if let Some(vf) = &self.values {
                            if let Err(e) = vf.validate(val) {
                                errs.insert(k.clone(), e);
                            }
                        }
                    }
                    if !errs.is_empty() {
                        return Err(Value::Object(errs));
                    }
                }
                Type::Record => {
                    if !v.is_object() {
                        return fail("expected a record".into());
                    }
                    if let Some(r) = &self.fields {
                        r.validate(v)?;
                    }
                }
            }
            if let Some(allowed) = self.one_of.as_ref().filter(|a| !a.contains(v)) {
                let list: Vec<String> = allowed
                    .iter()
                    .map(|a| a.as_str().map_or_else(|| a.to_string(), str::to_string))
                    .collect();
                return fail(format!("expected one of: {}", list.join(", ")));
            }
            Ok(())
        }
    }

    fn is_uuid(s: &str) -> bool {
        let b = s.as_bytes();
        b.len() == 36
            && b.iter().enumerate().all(|(i, c)| match i {
                8 | 13 | 18 | 23 => *c == b'-',
                _ => c.is_ascii_hexdigit(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;
    use serde_json::json;

    fn build(cfg: Value) -> Result<RequestValidator, Vec<String>> {
        let mut errs = Errors::default();
        match RequestValidator::build(&cfg, "plugins[0].config", &mut errs) {
            Some(p) if errs.is_empty() => Ok(p),
            _ => Err(errs.into_vec().into_iter().map(|e| e.to_string()).collect()),
        }
    }

    fn ctx(query: Option<&str>, headers: &[(&'static str, &str)], body: &str) -> Ctx {
        let mut h = http::HeaderMap::new();
        for (k, v) in headers {
            h.append(*k, v.parse().unwrap());
        }
        let mut c = Ctx::new(
            Method::POST,
            "/".into(),
            query.map(str::to_string),
            h,
            "127.0.0.1".parse().unwrap(),
        );
        c.body = Some(bytes::Bytes::from(body.to_string()));
        c
    }

    fn answer(f: Flow) -> Option<(u16, Value)> {
        match f {
            Flow::Continue => None,
            Flow::Respond(r) => Some((
                r.status.as_u16(),
                serde_json::from_slice::<Value>(&r.body).unwrap()["message"].clone(),
            )),
        }
    }

    const JSON: (&str, &str) = ("content-type", "application/json");

    #[test]
    fn json_schema_body() {
        let p = build(json!({
            "version": "draft7",
            "body_schema": r#"{"type":"object","properties":{"a":{"type":"integer"}},"required":["a"],"additionalProperties":false}"#,
        }))
        .unwrap();
        assert!(answer(p.decide(&ctx(None, &[JSON], r#"{"a":1}"#))).is_none());
        let (s, m) = answer(p.decide(&ctx(None, &[JSON], r#"{"a":"x"}"#))).unwrap();
        assert_eq!((s, m), (400, json!(DENY_BODY)));
        let (_, m) = answer(p.decide(&ctx(None, &[JSON], "{nope"))).unwrap();
        assert_eq!(m, json!(NOT_JSON));
        // Missing Content-Type, or another type, is refused without verbose detail.
        let (_, m) = answer(p.decide(&ctx(None, &[], r#"{"a":1}"#))).unwrap();
        assert_eq!(m, json!(DENY_BODY));
    }

    #[test]
    fn verbose_reasons_and_content_types() {
        let p = build(json!({
            "version": "draft4",
            "verbose_response": true,
            "allowed_content_types": ["application/json", "text/*"],
            "body_schema": r#"{"properties":{"a":{"type":"integer"}},"additionalProperties":false}"#,
        }))
        .unwrap();
        let (_, m) = answer(p.decide(&ctx(None, &[JSON], r#"{"a":"secret"}"#))).unwrap();
        let m = m.as_str().unwrap().to_string();
        assert!(m.contains("/a") && !m.contains("secret"), "{m}");
        let (_, m) = answer(p.decide(&ctx(None, &[JSON], r#"{"zz":1}"#))).unwrap();
        assert!(m.as_str().unwrap().contains("zz"), "{m}");
        let (_, m) =
            answer(p.decide(&ctx(None, &[("content-type", "application/xml")], "<a/>"))).unwrap();
        assert_eq!(m, json!(DENY_CONTENT_TYPE));
        // Parameters are strict by default: a charset not listed is refused.
        let utf8 = ("content-type", "application/json; charset=utf-8");
        assert!(answer(p.decide(&ctx(None, &[utf8], "{}"))).is_some());
        // Other allowed types are not body-validated.
        assert!(answer(p.decide(&ctx(None, &[("content-type", "text/plain")], "x"))).is_none());
        let lax = build(json!({
            "body_schema": "{}",
            "content_type_parameter_validation": false,
        }))
        .unwrap();
        assert!(answer(lax.decide(&ctx(None, &[utf8], "{}"))).is_none());
    }

    #[test]
    fn parameters() {
        let p = build(json!({
            "verbose_response": true,
            "parameter_schema": [
                {"name": "limit", "in": "query", "required": true, "schema": r#"{"type":"integer","maximum":10}"#},
                {"name": "ids", "in": "query", "required": false, "style": "form", "explode": false,
                 "schema": r#"{"type":"array","items":{"type":"integer"}}"#},
                {"name": "x-kong-name", "in": "header", "required": false, "style": "simple", "explode": false,
                 "schema": r#"{"type":"array","items":{"type":"integer"}}"#},
            ],
        }))
        .unwrap();
        assert!(answer(p.decide(&ctx(
            Some("limit=3&ids=1,2"),
            &[("x-kong-name", "1,2,3")],
            ""
        )))
        .is_none());
        let (_, m) = answer(p.decide(&ctx(None, &[], ""))).unwrap();
        assert_eq!(
            m,
            json!("query 'limit' validation failed, [error] required parameter missing")
        );
        let (_, m) = answer(p.decide(&ctx(Some("limit=11"), &[], ""))).unwrap();
        assert!(
            m.as_str()
                .unwrap()
                .starts_with("query 'limit' validation failed, [error] "),
            "{m}"
        );
        let (_, m) =
            answer(p.decide(&ctx(Some("limit=1"), &[("x-kong-name", "a,b")], ""))).unwrap();
        assert!(
            m.as_str()
                .unwrap()
                .starts_with("header 'x-kong-name' validation failed"),
            "{m}"
        );
        let (_, m) = answer(p.decide(&ctx(Some("limit=1&ids=1,x"), &[], ""))).unwrap();
        assert!(m.as_str().unwrap().contains("/1"), "{m}");
    }

    #[test]
    fn legacy_kong_format() {
        let p = build(json!({
            "verbose_response": true,
            "body_schema": r#"[{"name":{"type":"string","required":true}},{"age":{"type":"integer","between":[0,150]}},
                {"tags":{"type":"array","elements":{"type":"string","one_of":["a","b"]}}},
                {"addr":{"type":"record","fields":[{"city":{"type":"string","required":true}}]}}]"#,
        }))
        .unwrap();
        assert!(answer(p.decide(&ctx(
            None,
            &[JSON],
            r#"{"name":"n","age":3,"tags":["a"],"addr":{"city":"c"}}"#
        )))
        .is_none());
        let (_, m) = answer(p.decide(&ctx(
            None,
            &[JSON],
            r#"{"age":200,"tags":["c"],"addr":{},"x":1}"#,
        )))
        .unwrap();
        assert_eq!(
            m,
            json!({
                "name": "required field missing",
                "age": "value should be between 0 and 150",
                "tags": {"1": "expected one of: a, b"},
                "addr": {"city": "required field missing"},
                "x": "unknown field",
            })
        );
        let (_, m) = answer(p.decide(&ctx(None, &[JSON], r#"{"name":""}"#))).unwrap();
        assert_eq!(m, json!({"name": "length must be at least 1"}));
    }

    #[test]
    fn config_errors_have_paths() {
        let errs = build(json!({"body_schema": "{not json", "bogus": 1})).unwrap_err();
        assert!(
            errs.iter()
                .any(|e| e
                    .starts_with("plugins[0].config.body_schema: body_schema is not valid JSON")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e == "plugins[0].config.bogus: unknown field"),
            "{errs:?}"
        );
        let errs =
            build(json!({"version": "draft7", "body_schema": r#"{"type": 5}"#})).unwrap_err();
        assert!(
            errs.iter()
                .any(|e| e.starts_with("plugins[0].config.body_schema: invalid schema")),
            "{errs:?}"
        );
        let errs =
            build(json!({"version": "kong", "body_schema": r#"{"type": "object"}"#})).unwrap_err();
        assert!(errs[0].contains("array of field definitions"), "{errs:?}");
        let errs = build(json!({"body_schema": r#"[{"a":{"type":"string","match":"%d+"}}]"#}))
            .unwrap_err();
        assert!(errs[0].contains("Lua patterns"), "{errs:?}");
        let errs = build(json!({})).unwrap_err();
        assert!(errs[0].contains("at least one of"), "{errs:?}");
        let errs = build(
            json!({"parameter_schema": [{"name": "a", "in": "cookie", "schema": "{}"},
            {"name": "b", "in": "header", "style": "form", "schema": "{}"}]}),
        )
        .unwrap_err();
        assert!(
            errs.iter()
                .any(|e| e.starts_with("plugins[0].config.parameter_schema[0].in:")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.starts_with("plugins[0].config.parameter_schema[1].style:")),
            "{errs:?}"
        );
        // Remote references are never fetched: refused at load.
        let errs = build(json!({"version": "draft7", "body_schema": r#"{"$ref": "https://example.com/s.json"}"#}))
            .unwrap_err();
        assert!(
            errs[0].starts_with("plugins[0].config.body_schema: invalid schema"),
            "{errs:?}"
        );
        // Without an explicit version, a JSON Schema object is read as draft 4.
        assert!(build(json!({"body_schema": r#"{"type":"object"}"#})).is_ok());
    }

    #[test]
    fn draft_2020_12_keywords() {
        let p = build(json!({
            "version": "draft202012",
            "body_schema": r#"{"type":"array","prefixItems":[{"type":"string"},{"type":"integer"}],"items":false}"#,
        }))
        .unwrap();
        assert!(answer(p.decide(&ctx(None, &[JSON], r#"["a",1]"#))).is_none());
        assert!(answer(p.decide(&ctx(None, &[JSON], r#"["a","b"]"#))).is_some());
        assert!(answer(p.decide(&ctx(None, &[JSON], r#"["a",1,2]"#))).is_some());
    }
}
