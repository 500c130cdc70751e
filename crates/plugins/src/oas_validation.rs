//! `oas-validation` (Kong Enterprise's plugin, in the open): validates requests, and
//! optionally upstream responses, against an OpenAPI 3.0 or 3.1 document.
//!
//! At config load the document (JSON or YAML; percent-encoded unless `api_spec_encoded` is
//! false) is parsed, its path templates compiled into matchers, and every parameter, request
//! body and response schema compiled into a validator; `$ref`s resolve within the document.
//! OpenAPI 3.0 schemas are read as JSON Schema draft 4 with `nullable` (as Kong does), 3.1
//! schemas as draft 2020-12.
//!
//! Per request: find the operation (unknown path or method: 400), optionally refuse headers
//! or query arguments the operation does not declare, validate path, query and header
//! parameters (OpenAPI style/explode) and the JSON request body. Responses are checked in
//! the body phase (406 on failure). `notify_only_*` log failures instead of refusing them.
//! Messages match Kong's: `request doesn't conform to schema`, `request param doesn't
//! conform to schema`, `response doesn't conform to schema`, and with `verbose_response` the
//! reason (which names locations and keywords but never echoes values).

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode};
use jsonschema::{Draft, Validator};
use portcullis_config::{Errors, Obj};
use regex::Regex;
use serde_json::{Map, Value};

use crate::validation::{self, Found, Location, MediaType, ParamSpec, Shape, Style};
use crate::{Access, Ctx, Flow, Plugin, Response, ResponseHead};

const DENY_REQUEST: &str = "request doesn't conform to schema";
const DENY_PARAM: &str = "request param doesn't conform to schema";
const DENY_RESPONSE: &str = "response doesn't conform to schema";
const BASE: &str = "https://portcullis.invalid/openapi.json";

#[derive(Debug)]
struct Param {
    spec: ParamSpec,
    required: bool,
    validator: Option<Box<Validator>>,
}

#[derive(Debug)]
struct Content {
    media: MediaType,
    /// Shared so a large body can be validated on the blocking pool.
    validator: Option<Arc<Validator>>,
}

#[derive(Debug)]
struct Operation {
    method: Method,
    params: Vec<Param>,
    body: Option<Vec<Content>>,
    /// `(status pattern: "200", "2XX" or "default", contents)`.
    responses: Vec<(String, Vec<Content>)>,
}

#[derive(Debug)]
struct PathItem {
    matcher: Regex,
    /// Names of the template's parameters, in capture order.
    names: Vec<String>,
    /// Literal characters, to prefer `/pets/mine` over `/pets/{id}`.
    literal_len: usize,
    ops: Vec<Operation>,
}

/// A matched operation: path index, operation index, template parameter values.
type Route = (usize, usize, Vec<(String, String)>);

/// Which operation a request matched (for the response phase).
#[derive(Debug, Clone, Copy)]
struct Matched(usize, usize);

/// A compiled `oas-validation` instance.
#[derive(Debug)]
pub struct OasValidation {
    paths: Vec<PathItem>,
    base_path: Option<String>,
    validate_body: bool,
    validate_headers: bool,
    validate_query: bool,
    validate_path: bool,
    validate_response: bool,
    notify_request: bool,
    notify_response: bool,
    verbose: bool,
    header_check: bool,
    query_check: bool,
    allowed_headers: Vec<String>,
}

/// OpenAPI 3.0's `nullable: true` becomes a `null` member of `type`, as Kong does.
fn convert_nullable(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if m.get("nullable") == Some(&Value::Bool(true)) {
                if let Some(Value::String(t)) = m.get("type").cloned() {
                    m.insert("type".into(), serde_json::json!([t, "null"]));
                }
            }
            for child in m.values_mut() {
                convert_nullable(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(convert_nullable),
        _ => {}
    }
}

/// Characters escaped when a JSON pointer goes into a URI fragment.
const FRAGMENT: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// Escapes a JSON pointer token (`~` and `/`).
fn pointer_token(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

/// Compiles schemas found in the document, by JSON pointer, with `$ref`s resolved in it.
struct Compiler {
    registry: jsonschema::Registry<'static>,
    draft: Draft,
}

impl Compiler {
    fn compile(&self, pointer: &str) -> Result<Validator, String> {
        let fragment = percent_encoding::utf8_percent_encode(pointer, FRAGMENT);
        let wrapper = serde_json::json!({ "$ref": format!("{BASE}#{fragment}") });
        jsonschema::options()
            .with_draft(self.draft)
            .with_registry(&self.registry)
            .build(&wrapper)
            .map_err(|e| format!("invalid schema at '#{pointer}': {}", e.masked()))
    }
}

/// Builds a matcher for a path template such as `/pets/{id}` or `/files/{name}.json`.
fn template(path: &str) -> Result<(Regex, Vec<String>, usize), String> {
    let mut re = String::from("^");
    let mut names = Vec::new();
    let mut literal = 0;
    let mut rest = path;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            return Err("unterminated '{' in path template".into());
        };
        re.push_str(&regex::escape(&rest[..open]));
        literal += open;
        names.push(rest[open + 1..open + close].to_string());
        re.push_str("([^/]+)");
        rest = &rest[open + close + 1..];
    }
    re.push_str(&regex::escape(rest));
    literal += rest.len();
    re.push('$');
    Regex::new(&re)
        .map(|r| (r, names, literal))
        .map_err(|e| e.to_string())
}

struct DocReader<'a> {
    doc: &'a Value,
    compiler: Compiler,
    problems: Vec<String>,
}

impl DocReader<'_> {
    fn schema_at(&mut self, pointer: &str) -> Option<Box<Validator>> {
        match self.compiler.compile(pointer) {
            Ok(v) => Some(Box::new(v)),
            Err(e) => {
                self.problems.push(e);
                None
            }
        }
    }

    /// Reads a parameter object at `pointer` (following a `$ref` to `#/components/...`).
    fn param(&mut self, pointer: &str) -> Option<((String, Location), Param)> {
        let raw = self.doc.pointer(pointer)?;
        let (p, pointer) = match raw.get("$ref").and_then(Value::as_str) {
            Some(r) if r.starts_with("#/") => (self.doc.pointer(&r[1..])?, r[1..].to_string()),
            _ => (raw, pointer.to_string()),
        };
        let name = p.get("name")?.as_str()?.to_string();
        let loc_s = p.get("in")?.as_str()?;
        let Some(location) = Location::parse(loc_s) else {
            // Cookie parameters are not validated.
            return None;
        };
        let style = match p.get("style").and_then(Value::as_str) {
            Some(s) => match Style::parse(s, location) {
                Ok(st) => st,
                Err(e) => {
                    self.problems.push(format!("parameter '{name}': {e}"));
                    return None;
                }
            },
            None => Style::default_for(location),
        };
        let explode = p
            .get("explode")
            .and_then(Value::as_bool)
            .unwrap_or(style == Style::Form);
        let required = p.get("required").and_then(Value::as_bool).unwrap_or(false)
            || location == Location::Path;
        let (shape, validator) = match p.get("schema") {
            Some(s) => (
                Shape::of(self.doc, s),
                self.schema_at(&format!("{pointer}/schema")),
            ),
            None => (Shape::Primitive(Vec::new()), None),
        };
        let key = (name.to_ascii_lowercase(), location);
        Some((
            key,
            Param {
                spec: ParamSpec {
                    name: if location == Location::Header {
                        name.to_ascii_lowercase()
                    } else {
                        name
                    },
                    location,
                    style,
                    explode,
                    shape,
                },
                required,
                validator,
            },
        ))
    }

    fn contents(&mut self, pointer: &str) -> Vec<Content> {
        let Some(content) = self.doc.pointer(pointer).and_then(Value::as_object) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (media, def) in content {
            let Some(mt) = MediaType::parse(media) else {
                self.problems
                    .push(format!("invalid media type '{media}' at '#{pointer}'"));
                continue;
            };
            let validator = if def.get("schema").is_some() && mt.is_json() {
                self.schema_at(&format!("{pointer}/{}/schema", pointer_token(media)))
                    .map(Arc::from)
            } else {
                None
            };
            out.push(Content {
                media: mt,
                validator,
            });
        }
        out
    }

    /// `(pointer, object)` of an object that may be a `$ref`.
    fn follow(&self, pointer: String) -> String {
        match self
            .doc
            .pointer(&pointer)
            .and_then(|v| v.get("$ref"))
            .and_then(Value::as_str)
        {
            Some(r) if r.starts_with("#/") => r[1..].to_string(),
            _ => pointer,
        }
    }

    fn read_paths(&mut self) -> Vec<PathItem> {
        let Some(paths) = self.doc.get("paths").and_then(Value::as_object) else {
            self.problems
                .push("the document has no 'paths' object".into());
            return Vec::new();
        };
        let mut items = Vec::new();
        for (path, item) in paths {
            let ppath = format!("/paths/{}", pointer_token(path));
            let (matcher, names, literal_len) = match template(path) {
                Ok(t) => t,
                Err(e) => {
                    self.problems.push(format!("path '{path}': {e}"));
                    continue;
                }
            };
            let mut common = Vec::new();
            for i in 0..item
                .get("parameters")
                .and_then(Value::as_array)
                .map_or(0, Vec::len)
            {
                if let Some(p) = self.param(&format!("{ppath}/parameters/{i}")) {
                    common.push(p);
                }
            }
            let mut ops = Vec::new();
            for m in [
                "get", "put", "post", "delete", "options", "head", "patch", "trace",
            ] {
                let Some(op) = item.get(m) else { continue };
                let opath = format!("{ppath}/{m}");
                let mut params: Vec<((String, Location), Param)> = Vec::new();
                for i in 0..op
                    .get("parameters")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len)
                {
                    if let Some(p) = self.param(&format!("{opath}/parameters/{i}")) {
                        params.push(p);
                    }
                }
                // Path-level parameters apply unless the operation redefines them.
                for (key, p) in &common {
                    if !params.iter().any(|(k, _)| k == key) {
                        params.push((
                            key.clone(),
                            Param {
                                spec: p.spec.clone(),
                                required: p.required,
                                validator: p.validator.clone(),
                            },
                        ));
                    }
                }
                let body = op.get("requestBody").map(|_| {
                    let bpath = self.follow(format!("{opath}/requestBody"));
                    self.contents(&format!("{bpath}/content"))
                });
                let mut responses = Vec::new();
                if let Some(rs) = op.get("responses").and_then(Value::as_object) {
                    for code in rs.keys() {
                        let rpath =
                            self.follow(format!("{opath}/responses/{}", pointer_token(code)));
                        responses.push((
                            code.to_ascii_uppercase(),
                            self.contents(&format!("{rpath}/content")),
                        ));
                    }
                }
                let method =
                    Method::from_bytes(m.to_ascii_uppercase().as_bytes()).unwrap_or(Method::GET);
                ops.push(Operation {
                    method,
                    params: params.into_iter().map(|(_, p)| p).collect(),
                    body,
                    responses,
                });
            }
            items.push(PathItem {
                matcher,
                names,
                literal_len,
                ops,
            });
        }
        // Concrete paths win over templated ones.
        items.sort_by(|a, b| {
            a.names
                .len()
                .cmp(&b.names.len())
                .then(b.literal_len.cmp(&a.literal_len))
        });
        items
    }
}

/// Parses and compiles an OpenAPI document.
fn load(text: &str) -> Result<(Vec<PathItem>, Option<String>), Vec<String>> {
    let trimmed = text.trim_start();
    let mut doc: Value = if trimmed.starts_with('{') {
        serde_json::from_str(trimmed)
            .map_err(|e| vec![format!("api_spec is not valid JSON: {e}")])?
    } else {
        // Bounded: aliases cannot expand past the config parser's node budget.
        portcullis_config::yaml_value(text)
            .map_err(|e| vec![format!("api_spec is neither JSON nor YAML: {e}")])?
    };
    let version = doc
        .get("openapi")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let draft = if version.starts_with("3.0") {
        convert_nullable(&mut doc);
        Draft::Draft4
    } else if version.starts_with("3.1") {
        Draft::Draft202012
    } else if doc.get("swagger").is_some() {
        return Err(vec![
            "Swagger 2.0 documents are not supported; convert to OpenAPI 3".into(),
        ]);
    } else {
        return Err(vec![
            "not an OpenAPI document: 'openapi' must be 3.0.x or 3.1.x".into(),
        ]);
    };
    let base_path = doc
        .pointer("/servers/0/url")
        .and_then(Value::as_str)
        .map(|u| {
            let after_scheme = u.split_once("://").map_or(u, |(_, r)| r);
            let path = if u.contains("://") {
                after_scheme.find('/').map_or("", |i| &after_scheme[i..])
            } else {
                after_scheme
            };
            path.trim_end_matches('/').to_string()
        })
        .filter(|p| !p.is_empty());
    let registry = jsonschema::Registry::new()
        .draft(draft)
        .add(BASE, doc.clone())
        .and_then(|b| b.prepare())
        .map_err(|e| vec![format!("api_spec: {e}")])?;
    let mut reader = DocReader {
        doc: &doc,
        compiler: Compiler { registry, draft },
        problems: Vec::new(),
    };
    let paths = reader.read_paths();
    if reader.problems.is_empty() {
        Ok((paths, base_path))
    } else {
        Err(reader.problems)
    }
}

impl OasValidation {
    /// Validates the config and compiles the document.
    pub fn build(config: &Value, path: &str, errs: &mut Errors) -> Option<OasValidation> {
        let before = errs.len();
        let mut o = Obj::open(config, path, errs)?;
        let spec_path = o.field_path("api_spec");
        let spec = o.req_str("api_spec", errs);
        let encoded = o.bool_or("api_spec_encoded", true, errs);
        let include_base_path = o.bool_or("include_base_path", false, errs);
        let custom_base_path = o.opt_str("custom_base_path", errs);
        let validate_body = o.bool_or("validate_request_body", true, errs);
        let validate_headers = o.bool_or("validate_request_header_params", true, errs);
        let validate_query = o.bool_or("validate_request_query_params", true, errs);
        let validate_path = o.bool_or("validate_request_uri_params", true, errs);
        let validate_response = o.bool_or("validate_response_body", false, errs);
        let notify_request = o.bool_or("notify_only_request_validation_failure", false, errs);
        let notify_response =
            o.bool_or("notify_only_response_body_validation_failure", false, errs);
        let verbose = o.bool_or("verbose_response", false, errs);
        let header_check = o.bool_or("header_parameter_check", false, errs);
        let query_check = o.bool_or("query_parameter_check", false, errs);
        let allowed = o
            .opt_str("allowed_header_parameters", errs)
            .unwrap_or_else(|| "Host,Content-Type,User-Agent,Accept,Content-Length".into());
        o.finish(errs);
        let text = spec?;
        let text = if encoded {
            // Kong unescapes the document; `+` is kept (it is meaningful in YAML and regexes).
            validation::decode(&text)
        } else {
            text
        };
        let (paths, server_base) = match load(&text) {
            Ok(r) => r,
            Err(problems) => {
                for p in problems {
                    errs.push(&spec_path, p);
                }
                return None;
            }
        };
        if errs.len() > before {
            return None;
        }
        let base_path = include_base_path
            .then(|| custom_base_path.or(server_base))
            .flatten()
            .map(|b| b.trim_end_matches('/').to_string());
        Some(OasValidation {
            paths,
            base_path,
            validate_body,
            validate_headers,
            validate_query,
            validate_path,
            validate_response,
            notify_request,
            notify_response,
            verbose,
            header_check,
            query_check,
            allowed_headers: allowed
                .split(',')
                .map(|s| s.trim().to_ascii_lowercase())
                .filter(|s| !s.is_empty())
                .collect(),
        })
    }

    /// Finds the operation: `(path index, op index, template captures)`.
    fn find(&self, path: &str, method: &Method) -> Option<Route> {
        let path = match &self.base_path {
            Some(b) => {
                let rest = path.strip_prefix(b.as_str())?;
                if rest.is_empty() {
                    "/"
                } else if rest.starts_with('/') {
                    rest
                } else {
                    return None;
                }
            }
            None => path,
        };
        for (pi, item) in self.paths.iter().enumerate() {
            let Some(caps) = item.matcher.captures(path) else {
                continue;
            };
            let Some(oi) = item.ops.iter().position(|o| o.method == *method) else {
                continue;
            };
            let values = item
                .names
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    (
                        n.clone(),
                        caps.get(i + 1).map_or("", |m| m.as_str()).to_string(),
                    )
                })
                .collect();
            return Some((pi, oi, values));
        }
        None
    }

    /// A failed check: refused (unless notify-only), always logged.
    fn fail(&self, reason: &str, default: &str) -> Flow {
        if self.notify_request {
            tracing::warn!(
                plugin = "oas-validation",
                reason,
                "request validation failed (notify only)"
            );
            return Flow::Continue;
        }
        tracing::info!(
            plugin = "oas-validation",
            reason,
            "request validation failed"
        );
        let msg = if self.verbose { reason } else { default };
        Flow::Respond(Response::message(StatusCode::BAD_REQUEST, msg))
    }

    /// Everything but a large body's schema check, which is handed back as [`Step::Body`].
    fn decide(&self, ctx: &mut Ctx) -> Step {
        let Some((pi, oi, captures)) = self.find(&ctx.path, &ctx.method) else {
            return Step::Done(self.fail(
                "validation failed, path not found in api specification",
                DENY_REQUEST,
            ));
        };
        ctx.state.insert(Matched(pi, oi));
        let op = &self.paths[pi].ops[oi];
        if self.header_check {
            for name in ctx.headers.keys() {
                let n = name.as_str();
                let declared = op
                    .params
                    .iter()
                    .any(|p| p.spec.location == Location::Header && p.spec.name == n);
                // The gateway's own request id header is not the client's.
                let ours = ctx
                    .headers
                    .get(name)
                    .is_some_and(|v| ctx.is_own_request_id(v));
                if !declared && !ours && !self.allowed_headers.iter().any(|a| a == n) {
                    return Step::Done(self.fail(
                        &format!("validation failed with error: header parameter '{n}' does not exist in specification"),
                        DENY_PARAM,
                    ));
                }
            }
        }
        let pairs = validation::query_pairs(ctx.query.as_deref());
        if self.query_check {
            for (k, _) in &pairs {
                let base = k.split('[').next().unwrap_or(k);
                let declared = op.params.iter().any(|p| {
                    p.spec.location == Location::Query
                        && (p.spec.name.eq_ignore_ascii_case(k)
                            || p.spec.name.eq_ignore_ascii_case(base)
                            || matches!(&p.spec.shape, Shape::Object(props)
                                if p.spec.explode && props.iter().any(|(n, _)| n == k)))
                });
                if !declared {
                    return Step::Done(self.fail(
                        &format!("validation failed with error: query parameter '{k}' does not exist in specification"),
                        DENY_PARAM,
                    ));
                }
            }
        }
        for p in &op.params {
            let wanted = match p.spec.location {
                Location::Header => self.validate_headers,
                Location::Query => self.validate_query,
                Location::Path => self.validate_path,
            };
            if !wanted {
                continue;
            }
            let found = match p.spec.location {
                Location::Query => p.spec.read_query(&pairs),
                Location::Header => p.spec.read_headers(&ctx.headers),
                Location::Path => captures
                    .iter()
                    .find(|(n, _)| *n == p.spec.name)
                    .map_or(Found::Missing, |(_, v)| {
                        Found::Values(vec![p.spec.parse_path(v)])
                    }),
            };
            let problem = match found {
                Found::Missing if p.required => {
                    Some("required parameter value not found in request".to_string())
                }
                Found::Missing => None,
                Found::Values(values) => p
                    .validator
                    .as_ref()
                    .and_then(|v| values.iter().find_map(|x| validation::first_error(v, x))),
            };
            if let Some(e) = problem {
                let reason = format!(
                    "{} '{}' validation failed with error: '{e}'",
                    p.spec.location.as_str(),
                    p.spec.name
                );
                if let flow @ Flow::Respond(_) = self.fail(&reason, DENY_PARAM) {
                    return Step::Done(flow);
                }
            }
        }
        let content_method = matches!(ctx.method, Method::POST | Method::PUT | Method::PATCH);
        if let (true, true, Some(contents)) = (self.validate_body, content_method, &op.body) {
            let ct = ctx
                .headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("application/json");
            let media = MediaType::parse(ct);
            let matched = media
                .as_ref()
                .and_then(|m| contents.iter().find(|c| c.media.covers(m, false)));
            let Some(content) = matched else {
                let shown = media.map_or_else(|| "invalid".to_string(), |m| m.essence());
                return Step::Done(self.fail(
                    &format!("validation failed: content-type '{shown}' is not allowed"),
                    DENY_REQUEST,
                ));
            };
            if let Some(v) = &content.validator {
                let raw = ctx.body.clone().unwrap_or_default();
                if raw.len() > OFFLOAD_BYTES {
                    return Step::Body(v.clone(), raw);
                }
                return Step::Done(self.body_verdict(body_problem(v, &raw)));
            }
        }
        Step::Done(Flow::Continue)
    }

    /// The access decision once the body was checked.
    fn body_verdict(&self, problem: Option<String>) -> Flow {
        match problem {
            Some(e) => self.fail(
                &format!("request body validation failed with error: '{e}'"),
                DENY_PARAM,
            ),
            None => Flow::Continue,
        }
    }

    fn check_response(&self, ctx: &Ctx, head: &ResponseHead, body: &Bytes) -> Option<String> {
        let Matched(pi, oi) = *ctx.state.get::<Matched>()?;
        let op = self.paths.get(pi)?.ops.get(oi)?;
        let code = head.status.as_str().to_string();
        let range = format!("{}XX", &code[..1]);
        let contents = op
            .responses
            .iter()
            .find(|(c, _)| *c == code)
            .or_else(|| op.responses.iter().find(|(c, _)| *c == range))
            .or_else(|| op.responses.iter().find(|(c, _)| c == "DEFAULT"))
            .map(|(_, c)| c)?;
        let media = head
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(MediaType::parse)
            .or_else(|| MediaType::parse("application/json"))?;
        let v = contents
            .iter()
            .find(|c| c.media.covers(&media, false))?
            .validator
            .as_ref()?;
        match serde_json::from_slice::<Value>(body) {
            Ok(b) => validation::first_error(v, &b),
            Err(_) => Some("response body is not valid JSON".into()),
        }
    }
}

/// Bodies larger than this are parsed and validated on the blocking pool, not on the reactor.
const OFFLOAD_BYTES: usize = 64 * 1024;

/// What the access phase still has to do.
enum Step {
    /// Decided.
    Done(Flow),
    /// Validate this (large) body against this schema, then decide.
    Body(Arc<Validator>, Bytes),
}

/// Parses a JSON body and checks it against the schema: the first problem, if any. An empty
/// body is checked as `{}`.
fn body_problem(v: &Validator, raw: &[u8]) -> Option<String> {
    if raw.iter().all(u8::is_ascii_whitespace) {
        validation::first_error(v, &Value::Object(Map::new()))
    } else {
        match serde_json::from_slice::<Value>(raw) {
            Ok(body) => validation::first_error(v, &body),
            Err(_) => Some("request body is not valid JSON".to_string()),
        }
    }
}

impl Plugin for OasValidation {
    fn name(&self) -> &'static str {
        "oas-validation"
    }

    fn reads_body(&self) -> bool {
        self.validate_body
    }

    fn access<'a>(&'a self, ctx: &'a mut Ctx) -> Access<'a> {
        match self.decide(ctx) {
            Step::Done(flow) => Access::Now(flow),
            // A large JSON body: parse and validate it off the reactor threads.
            Step::Body(v, raw) => Access::Later(Box::pin(async move {
                match tokio::task::spawn_blocking(move || body_problem(&v, &raw)).await {
                    Ok(problem) => self.body_verdict(problem),
                    Err(_) => self.body_verdict(Some("request body could not be validated".into())),
                }
            })),
        }
    }

    fn reads_response_body(&self) -> bool {
        self.validate_response
    }

    fn response_body(&self, ctx: &mut Ctx, head: &mut ResponseHead, body: &mut Bytes) {
        let Some(e) = self.check_response(ctx, head, body) else {
            return;
        };
        let reason = format!("response body validation failed with error: {e}");
        if self.notify_response {
            tracing::warn!(
                plugin = "oas-validation",
                reason,
                "response validation failed (notify only)"
            );
            return;
        }
        tracing::warn!(
            plugin = "oas-validation",
            reason,
            "response validation failed"
        );
        let msg = if self.verbose {
            reason.as_str()
        } else {
            DENY_RESPONSE
        };
        let r = Response::message(StatusCode::NOT_ACCEPTABLE, msg);
        head.status = r.status;
        head.headers.remove(http::header::CONTENT_ENCODING);
        head.headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        *body = r.body;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SPEC: &str = r##"
openapi: 3.0.3
info: {title: pets, version: "1"}
servers: [{url: "https://api.example.com/v1"}]
paths:
  /pets:
    get:
      parameters:
        - {name: limit, in: query, schema: {type: integer, maximum: 100}}
        - {name: tags, in: query, style: form, explode: false, schema: {type: array, items: {type: string}}}
        - {name: x-trace, in: header, required: true, schema: {type: string, pattern: "^[a-f0-9]+$"}}
      responses:
        "200":
          description: ok
          content:
            application/json:
              schema: {type: array, items: {$ref: "#/components/schemas/Pet"}}
    post:
      requestBody:
        required: true
        content:
          application/json:
            schema: {$ref: "#/components/schemas/Pet"}
      responses:
        default: {description: any}
  /pets/mine:
    get:
      responses: {"200": {description: ok}}
  /pets/{id}:
    parameters:
      - {$ref: "#/components/parameters/Id"}
    get:
      responses:
        2XX:
          description: ok
          content:
            application/json:
              schema: {$ref: "#/components/schemas/Pet"}
components:
  parameters:
    Id: {name: id, in: path, required: true, schema: {type: integer, minimum: 1}}
  schemas:
    Pet:
      type: object
      required: [name]
      additionalProperties: false
      properties:
        name: {type: string}
        tag: {type: string, nullable: true}
"##;

    fn build(cfg: Value) -> Result<OasValidation, Vec<String>> {
        let mut errs = Errors::default();
        match OasValidation::build(&cfg, "plugins[0].config", &mut errs) {
            Some(p) if errs.is_empty() => Ok(p),
            _ => Err(errs.into_vec().into_iter().map(|e| e.to_string()).collect()),
        }
    }

    fn ctx(method: Method, target: &str, headers: &[(&'static str, &str)], body: &str) -> Ctx {
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p, Some(q.to_string())),
            None => (target, None),
        };
        let mut h = http::HeaderMap::new();
        for (k, v) in headers {
            h.append(*k, v.parse().unwrap());
        }
        let mut c = Ctx::new(method, path.into(), query, h, "127.0.0.1".parse().unwrap());
        c.body = Some(Bytes::from(body.to_string()));
        c
    }

    impl OasValidation {
        /// The access decision with any body check done inline.
        fn decide_now(&self, ctx: &mut Ctx) -> Flow {
            match self.decide(ctx) {
                Step::Done(f) => f,
                Step::Body(v, raw) => self.body_verdict(body_problem(&v, &raw)),
            }
        }
    }

    #[tokio::test]
    async fn large_bodies_are_validated_off_the_reactor() {
        let p = verbose();
        let json = ("content-type", "application/json");
        let pad = "x".repeat(OFFLOAD_BYTES);
        let good = format!(r#"{{"name":"rex","tag":"{pad}"}}"#);
        let bad = format!(r#"{{"tag":"{pad}"}}"#);
        let mut c = ctx(Method::POST, "/pets", &[json], &good);
        assert!(matches!(p.decide(&mut c), Step::Body(..)));
        let f = match p.access(&mut c) {
            crate::Access::Later(fut) => fut.await,
            crate::Access::Now(_) => panic!("a large body was validated on the reactor"),
        };
        assert_eq!(message(f), None);
        let mut c = ctx(Method::POST, "/pets", &[json], &bad);
        let f = match p.access(&mut c) {
            crate::Access::Later(fut) => fut.await,
            crate::Access::Now(_) => panic!("a large body was validated on the reactor"),
        };
        assert!(message(f)
            .unwrap()
            .contains("request body validation failed"));
        let mut c = ctx(Method::POST, "/pets", &[json], "{not json");
        assert!(matches!(p.access(&mut c), crate::Access::Now(_)));
    }

    fn message(f: Flow) -> Option<String> {
        match f {
            Flow::Continue => None,
            Flow::Respond(r) => Some(
                serde_json::from_slice::<Value>(&r.body).unwrap()["message"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            ),
        }
    }

    fn verbose() -> OasValidation {
        build(json!({"api_spec": SPEC, "api_spec_encoded": false, "verbose_response": true}))
            .unwrap()
    }

    #[test]
    fn matches_templates_and_validates_parameters() {
        let p = verbose();
        let ok = ctx(
            Method::GET,
            "/pets?limit=5&tags=a,b",
            &[("x-trace", "ab12")],
            "",
        );
        assert_eq!(message(p.decide_now(&mut { ok })), None);
        let m = message(p.decide_now(&mut ctx(
            Method::GET,
            "/pets?limit=500",
            &[("x-trace", "ab")],
            "",
        )))
        .unwrap();
        assert!(
            m.starts_with("query 'limit' validation failed with error: '"),
            "{m}"
        );
        let m = message(p.decide_now(&mut ctx(Method::GET, "/pets", &[], ""))).unwrap();
        assert_eq!(m, "header 'x-trace' validation failed with error: 'required parameter value not found in request'");
        assert_eq!(
            message(p.decide_now(&mut ctx(Method::GET, "/pets/7", &[], ""))),
            None
        );
        assert_eq!(
            message(p.decide_now(&mut ctx(Method::GET, "/pets/mine", &[], ""))),
            None
        );
        let m = message(p.decide_now(&mut ctx(Method::GET, "/pets/0", &[], ""))).unwrap();
        assert!(m.starts_with("path 'id' validation failed"), "{m}");
        let m = message(p.decide_now(&mut ctx(Method::GET, "/pets/x", &[], ""))).unwrap();
        assert!(m.starts_with("path 'id' validation failed"), "{m}");
        let m = message(p.decide_now(&mut ctx(Method::DELETE, "/pets/1", &[], ""))).unwrap();
        assert_eq!(m, "validation failed, path not found in api specification");
        let m = message(p.decide_now(&mut ctx(Method::GET, "/cats", &[], ""))).unwrap();
        assert_eq!(m, "validation failed, path not found in api specification");
    }

    #[test]
    fn validates_bodies_with_refs_and_nullable() {
        let p = verbose();
        let json = ("content-type", "application/json");
        let body = |b: &str| ctx(Method::POST, "/pets", &[json], b);
        assert_eq!(
            message(p.decide_now(&mut body(r#"{"name":"rex","tag":null}"#))),
            None
        );
        let m = message(p.decide_now(&mut body(r#"{"tag":"x"}"#))).unwrap();
        assert!(
            m.starts_with("request body validation failed with error: '"),
            "{m}"
        );
        assert!(message(p.decide_now(&mut body(r#"{"name":"a","extra":1}"#))).is_some());
        let m = message(p.decide_now(&mut ctx(
            Method::POST,
            "/pets",
            &[("content-type", "text/plain")],
            "x",
        )))
        .unwrap();
        assert_eq!(
            m,
            "validation failed: content-type 'text/plain' is not allowed"
        );
        // Not verbose: Kong's generic messages.
        let quiet = build(json!({"api_spec": SPEC, "api_spec_encoded": false})).unwrap();
        assert_eq!(
            message(quiet.decide_now(&mut body("{}"))).unwrap(),
            DENY_PARAM
        );
        assert_eq!(
            message(quiet.decide_now(&mut ctx(Method::GET, "/x", &[], ""))).unwrap(),
            DENY_REQUEST
        );
        // Notify only: passes.
        let notify = build(json!({"api_spec": SPEC, "api_spec_encoded": false,
            "notify_only_request_validation_failure": true}))
        .unwrap();
        assert_eq!(message(notify.decide_now(&mut body("{}"))), None);
    }

    #[test]
    fn unknown_parameters_and_base_path() {
        let p = build(
            json!({"api_spec": SPEC, "api_spec_encoded": false, "verbose_response": true,
            "query_parameter_check": true, "header_parameter_check": true,
            "include_base_path": true}),
        )
        .unwrap();
        let m = message(p.decide_now(&mut ctx(
            Method::GET,
            "/v1/pets?bogus=1",
            &[("x-trace", "a")],
            "",
        )))
        .unwrap();
        assert_eq!(
            m,
            "validation failed with error: query parameter 'bogus' does not exist in specification"
        );
        let m = message(p.decide_now(&mut ctx(
            Method::GET,
            "/v1/pets",
            &[("x-trace", "a"), ("x-other", "1")],
            "",
        )))
        .unwrap();
        assert_eq!(m, "validation failed with error: header parameter 'x-other' does not exist in specification");
        assert_eq!(
            message(p.decide_now(&mut ctx(
                Method::GET,
                "/v1/pets",
                &[("x-trace", "a"), ("accept", "*/*")],
                ""
            ))),
            None
        );
        assert!(
            message(p.decide_now(&mut ctx(Method::GET, "/pets", &[("x-trace", "a")], "")))
                .is_some()
        );
    }

    #[test]
    fn responses() {
        let p = build(json!({"api_spec": SPEC, "api_spec_encoded": false,
            "validate_response_body": true}))
        .unwrap();
        let mut c = ctx(Method::GET, "/pets/3", &[], "");
        assert_eq!(message(p.decide_now(&mut c)), None);
        let mut head = ResponseHead {
            status: StatusCode::OK,
            headers: http::HeaderMap::new(),
        };
        let mut body = Bytes::from_static(br#"{"name":"rex"}"#);
        p.response_body(&mut c, &mut head, &mut body);
        assert_eq!(head.status, StatusCode::OK);
        let mut body = Bytes::from_static(br#"{"nom":"rex"}"#);
        p.response_body(&mut c, &mut head, &mut body);
        assert_eq!(head.status, StatusCode::NOT_ACCEPTABLE);
        assert_eq!(
            &body[..],
            br#"{"message":"response doesn't conform to schema"}"#
        );
    }

    #[test]
    fn bad_documents_are_refused() {
        let errs = build(json!({"api_spec": "openapi: [", "api_spec_encoded": false})).unwrap_err();
        assert!(
            errs[0].starts_with("plugins[0].config.api_spec: "),
            "{errs:?}"
        );
        let errs = build(json!({"api_spec": "{\"swagger\": \"2.0\"}"})).unwrap_err();
        assert!(errs[0].contains("Swagger 2.0"), "{errs:?}");
        let bad = SPEC.replace("maximum: 100", "maximum: \"x\"");
        let errs =
            build(json!({"api_spec": bad, "api_spec_encoded": false, "color": 1})).unwrap_err();
        assert!(
            errs.iter()
                .any(|e| e == "plugins[0].config.color: unknown field"),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.contains("invalid schema at '#/paths/~1pets/get/parameters/0/schema'")),
            "{errs:?}"
        );
        let errs = build(json!({})).unwrap_err();
        assert_eq!(errs, ["plugins[0].config.api_spec: required field missing"]);
        // Percent-encoded documents (Kong's default) are decoded.
        let enc = percent_encoding::utf8_percent_encode(SPEC, percent_encoding::NON_ALPHANUMERIC)
            .to_string();
        assert!(build(json!({"api_spec": enc})).is_ok());
    }
}
