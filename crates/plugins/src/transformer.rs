//! `request-transformer` and `response-transformer` (Kong's plugins): remove, rename,
//! replace, add and append — in that order — on headers, query arguments and bodies.
//!
//! Entries are `name:value` (split at the first `:`); `remove` takes names. `add` sets only
//! what is absent, `replace` only what is present, `append` always adds another value.
//! request-transformer values may use Kong's templates, read from the request as it arrived:
//! `$(headers.NAME)` / `$(headers["NAME"])`, `$(query_params.NAME)` /
//! `$(query_params["NAME"])`, and the route's regex captures `$(uri_captures.NAME)` /
//! `$(uri_captures["NAME"])` / `$(uri_captures[N])`. response-transformer values are literal
//! text, as in Kong (a request header must not be reflected into the response). Everything is
//! parsed once per config load.

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method};
use portcullis_config::{Errors, Obj};
use serde_json::{Map, Value};

use crate::{Access, Ctx, Flow, Plugin, ResponseHead};

/// One `name:value` entry.
#[derive(Debug, Clone)]
struct Pair {
    name: String,
    value: Template,
}

/// A value with optional `$(headers.x)` / `$(query_params.x)` / `$(uri_captures.x)` parts.
#[derive(Debug, Clone)]
struct Template(Vec<Part>);

#[derive(Debug, Clone)]
enum Part {
    Text(String),
    Header(String),
    Query(String),
    /// A named regex capture of the matched route path.
    Capture(String),
    /// A capture by number (1 is the first group).
    CaptureAt(usize),
}

/// What templates read: the request as it arrived.
struct Src<'a> {
    headers: &'a HeaderMap,
    query: Option<&'a str>,
    captures: &'a [(Option<String>, String)],
}

impl<'a> Src<'a> {
    fn of(ctx: &'a Ctx, headers: &'a HeaderMap, query: Option<&'a str>) -> Src<'a> {
        Src {
            headers,
            query,
            captures: &ctx.uri_captures,
        }
    }
}

/// The key of `table.KEY`, `table["KEY"]`, `table['KEY']` or `table[N]` in a template
/// expression; `Err(())` when `expr` is about `table` but malformed.
fn template_key<'e>(expr: &'e str, table: &str) -> Option<Result<Key<'e>, ()>> {
    let rest = expr.strip_prefix(table)?;
    if let Some(name) = rest.strip_prefix('.') {
        let ok = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        return Some(if ok { Ok(Key::Name(name)) } else { Err(()) });
    }
    let inner = rest.strip_prefix('[')?.strip_suffix(']')?.trim();
    for q in ['"', '\''] {
        if let Some(name) = inner.strip_prefix(q).and_then(|i| i.strip_suffix(q)) {
            return Some(if name.is_empty() || name.contains(q) {
                Err(())
            } else {
                Ok(Key::Name(name))
            });
        }
    }
    Some(match inner.parse::<usize>() {
        Ok(n) if n > 0 => Ok(Key::At(n)),
        _ => Err(()),
    })
}

enum Key<'e> {
    Name(&'e str),
    At(usize),
}

impl Template {
    /// Text without templates: response-transformer values, taken as written.
    fn literal(s: &str) -> Template {
        Template(vec![Part::Text(s.to_string())])
    }

    fn parse(s: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = s;
        while let Some(i) = rest.find("$(") {
            if i > 0 {
                parts.push(Part::Text(rest[..i].to_string()));
            }
            let Some(end) = rest[i..].find(')') else {
                return Err("unterminated $( template".into());
            };
            let expr = rest[i + 2..i + end].trim();
            let unsupported = || {
                format!(
                    "unsupported template '{expr}': use headers.NAME, query_params.NAME or \
                     uri_captures.NAME (or [\"NAME\"]; uri_captures[N] for a numbered group)"
                )
            };
            let part = if let Some(k) = template_key(expr, "headers") {
                match k {
                    Ok(Key::Name(h)) => Part::Header(h.to_ascii_lowercase()),
                    _ => return Err(unsupported()),
                }
            } else if let Some(k) = template_key(expr, "query_params") {
                match k {
                    Ok(Key::Name(q)) => Part::Query(q.to_string()),
                    _ => return Err(unsupported()),
                }
            } else if let Some(k) = template_key(expr, "uri_captures") {
                match k {
                    Ok(Key::Name(c)) => Part::Capture(c.to_string()),
                    Ok(Key::At(n)) => Part::CaptureAt(n),
                    Err(()) => return Err(unsupported()),
                }
            } else {
                return Err(unsupported());
            };
            parts.push(part);
            rest = &rest[i + end + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Template(parts))
    }

    fn render(&self, src: &Src<'_>) -> String {
        self.render_with(src, false)
    }

    /// Renders for a URI path: values from the request are percent-encoded (all but
    /// unreserved characters), so a client cannot add `/`, `..`, `?` or `#` to the path.
    fn render_path(&self, src: &Src<'_>) -> String {
        self.render_with(src, true)
    }

    fn render_with(&self, src: &Src<'_>, path: bool) -> String {
        let mut out = String::new();
        for p in &self.0 {
            let value = match p {
                Part::Text(t) => {
                    out.push_str(t);
                    continue;
                }
                Part::Header(h) => src
                    .headers
                    .get(h.as_str())
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string),
                Part::Query(q) => src.query.and_then(|qs| query_get(qs, q)),
                Part::Capture(c) => src
                    .captures
                    .iter()
                    .find(|(n, _)| n.as_deref() == Some(c.as_str()))
                    .map(|(_, v)| v.clone()),
                Part::CaptureAt(i) => src.captures.get(i - 1).map(|(_, v)| v.clone()),
            };
            if let Some(v) = value {
                if path {
                    out.push_str(&encode(&v));
                } else {
                    out.push_str(&v);
                }
            }
        }
        out
    }
}

fn query_get(qs: &str, name: &str) -> Option<String> {
    qs.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (decode(k) == name).then(|| decode(v))
    })
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// The operations on one target (headers, querystring, body or json).
#[derive(Debug, Clone, Default)]
struct Ops {
    remove: Vec<String>,
    rename: Vec<(String, String)>,
    replace: Vec<Pair>,
    add: Vec<Pair>,
    append: Vec<Pair>,
    /// json_types for replace/add/append (response-transformer).
    types: [Vec<JsonType>; 3],
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum JsonType {
    String,
    Number,
    Boolean,
}

impl Ops {
    fn is_empty(&self) -> bool {
        self.remove.is_empty()
            && self.rename.is_empty()
            && self.replace.is_empty()
            && self.add.is_empty()
            && self.append.is_empty()
    }
}

/// Reads `{remove: {...}, rename: {...}, ...}` into per-target operations.
fn read_ops(o: &mut Obj<'_>, targets: &[&str], templates: bool, errs: &mut Errors) -> Vec<Ops> {
    let mut ops = vec![Ops::default(); targets.len()];
    for action in ["remove", "rename", "replace", "add", "append"] {
        let path = o.field_path(action);
        let Some(v) = o.get(action) else { continue };
        if v.is_null() {
            continue;
        }
        let Some(mut a) = Obj::open(v, &path, errs) else {
            continue;
        };
        if action == "replace" {
            // `uri` is read by the caller.
            a.accept(&["uri"]);
        }
        for (ti, target) in targets.iter().enumerate() {
            let list = a.str_array(target, errs);
            let at = a.field_path(target);
            for (i, entry) in list.iter().enumerate() {
                let epath = format!("{at}[{i}]");
                match action {
                    "remove" => ops[ti].remove.push(entry.clone()),
                    "rename" => match entry.split_once(':') {
                        Some((from, to)) if !from.is_empty() && !to.is_empty() => {
                            ops[ti].rename.push((from.to_string(), to.to_string()));
                        }
                        _ => errs.push(epath, "invalid value: expected 'old:new'"),
                    },
                    _ => match entry.split_once(':') {
                        Some((name, value)) if !name.is_empty() => match if templates {
                            Template::parse(value)
                        } else {
                            Ok(Template::literal(value))
                        } {
                            Ok(t) => {
                                let pair = Pair {
                                    name: name.to_string(),
                                    value: t,
                                };
                                match action {
                                    "replace" => ops[ti].replace.push(pair),
                                    "add" => ops[ti].add.push(pair),
                                    _ => ops[ti].append.push(pair),
                                }
                            }
                            Err(e) => errs.push(epath, e),
                        },
                        _ => errs.push(epath, "invalid value: expected 'name:value'"),
                    },
                }
                if *target == "headers" {
                    let name = entry.split(':').next().unwrap_or_default();
                    if HeaderName::from_bytes(name.as_bytes()).is_err() {
                        errs.push(format!("{at}[{i}]"), "invalid header name");
                    }
                }
            }
            if *target == "json" && action != "remove" && action != "rename" {
                let types = a.str_array("json_types", errs);
                let slot = match action {
                    "replace" => 0,
                    "add" => 1,
                    _ => 2,
                };
                for (i, t) in types.iter().enumerate() {
                    ops[ti].types[slot].push(match t.as_str() {
                        "string" => JsonType::String,
                        "number" => JsonType::Number,
                        "boolean" => JsonType::Boolean,
                        _ => {
                            errs.push(
                                format!("{}[{i}]", a.field_path("json_types")),
                                "expected one of: string, number, boolean",
                            );
                            JsonType::String
                        }
                    });
                }
            }
        }
        a.finish(errs);
    }
    ops
}

fn header_ops(ops: &Ops, h: &mut HeaderMap, src: &Src<'_>) {
    let name = |n: &str| HeaderName::from_bytes(n.to_ascii_lowercase().as_bytes()).ok();
    let value = |p: &Pair| HeaderValue::from_str(&p.value.render(src)).ok();
    for n in ops.remove.iter().filter_map(|n| name(n)) {
        h.remove(n);
    }
    for (from, to) in &ops.rename {
        if let (Some(f), Some(t)) = (name(from), name(to)) {
            let values: Vec<HeaderValue> = h.get_all(&f).iter().cloned().collect();
            if !values.is_empty() {
                h.remove(&f);
                for v in values {
                    h.append(t.clone(), v);
                }
            }
        }
    }
    for p in &ops.replace {
        if let (Some(n), Some(v)) = (name(&p.name), value(p)) {
            if h.contains_key(&n) {
                h.insert(n, v);
            }
        }
    }
    for p in &ops.add {
        if let (Some(n), Some(v)) = (name(&p.name), value(p)) {
            if !h.contains_key(&n) {
                h.insert(n, v);
            }
        }
    }
    for p in &ops.append {
        if let (Some(n), Some(v)) = (name(&p.name), value(p)) {
            h.append(n, v);
        }
    }
}

/// Applies operations to ordered `(name, value)` pairs (query strings and form bodies).
fn pair_ops(ops: &Ops, pairs: &mut Vec<(String, String)>, src: &Src<'_>) {
    pairs.retain(|(k, _)| !ops.remove.contains(k));
    for (from, to) in &ops.rename {
        for (k, _) in pairs.iter_mut() {
            if k == from {
                k.clone_from(to);
            }
        }
    }
    for p in &ops.replace {
        let v = p.value.render(src);
        for (k, val) in pairs.iter_mut() {
            if *k == p.name {
                val.clone_from(&v);
            }
        }
    }
    for p in &ops.add {
        if !pairs.iter().any(|(k, _)| *k == p.name) {
            pairs.push((p.name.clone(), p.value.render(src)));
        }
    }
    for p in &ops.append {
        pairs.push((p.name.clone(), p.value.render(src)));
    }
}

fn typed(v: String, t: Option<JsonType>) -> Value {
    match t {
        Some(JsonType::Number) => v
            .parse::<serde_json::Number>()
            .map(Value::Number)
            .unwrap_or(Value::String(v)),
        Some(JsonType::Boolean) => match v.as_str() {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => Value::String(v),
        },
        _ => Value::String(v),
    }
}

/// Applies operations to the top level of a JSON object.
fn json_ops(ops: &Ops, m: &mut Map<String, Value>, src: &Src<'_>) {
    for k in &ops.remove {
        m.remove(k);
    }
    for (from, to) in &ops.rename {
        if let Some(v) = m.remove(from) {
            m.insert(to.clone(), v);
        }
    }
    for (i, p) in ops.replace.iter().enumerate() {
        if m.contains_key(&p.name) {
            let v = typed(p.value.render(src), ops.types[0].get(i).copied());
            m.insert(p.name.clone(), v);
        }
    }
    for (i, p) in ops.add.iter().enumerate() {
        if !m.contains_key(&p.name) {
            let v = typed(p.value.render(src), ops.types[1].get(i).copied());
            m.insert(p.name.clone(), v);
        }
    }
    for (i, p) in ops.append.iter().enumerate() {
        let v = typed(p.value.render(src), ops.types[2].get(i).copied());
        match m.get_mut(&p.name) {
            Some(Value::Array(a)) => a.push(v),
            Some(existing) => {
                let old = existing.take();
                *existing = Value::Array(vec![old, v]);
            }
            None => {
                m.insert(p.name.clone(), v);
            }
        }
    }
}

fn parse_pairs(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn join_pairs(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// A compiled `request-transformer` instance.
#[derive(Debug)]
pub struct RequestTransformer {
    method: Option<Method>,
    uri: Option<Template>,
    headers: Ops,
    query: Ops,
    body: Ops,
}

impl RequestTransformer {
    /// Validates the config.
    pub fn build(config: &Value, path: &str, errs: &mut Errors) -> Option<RequestTransformer> {
        let before = errs.len();
        let mut o = Obj::open(config, path, errs)?;
        let method = match o.opt_str("http_method", errs) {
            Some(m) => match Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
                Ok(m) => Some(m),
                Err(_) => {
                    errs.push(o.field_path("http_method"), "invalid method");
                    None
                }
            },
            None => None,
        };
        let uri = config
            .get("replace")
            .and_then(|r| r.get("uri"))
            .and_then(Value::as_str)
            .map(Template::parse)
            .transpose()
            .unwrap_or_else(|e| {
                errs.push(format!("{path}.replace.uri"), e);
                None
            });
        let mut ops = read_ops(&mut o, &["headers", "querystring", "body"], true, errs);
        o.finish(errs);
        if errs.len() > before {
            return None;
        }
        let body = ops.pop().unwrap_or_default();
        let query = ops.pop().unwrap_or_default();
        let headers = ops.pop().unwrap_or_default();
        Some(RequestTransformer {
            method,
            uri,
            headers,
            query,
            body,
        })
    }

    fn apply(&self, ctx: &mut Ctx) {
        let headers = ctx.headers.clone();
        let q = ctx.query.clone();
        let captures = std::mem::take(&mut ctx.uri_captures);
        let src = Src {
            headers: &headers,
            query: q.as_deref(),
            captures: &captures,
        };
        if !self.body.is_empty() {
            self.transform_body(ctx, &src);
        }
        header_ops(&self.headers, &mut ctx.headers, &src);
        if !self.query.is_empty() {
            let mut pairs = parse_pairs(ctx.query.as_deref().unwrap_or(""));
            pair_ops(&self.query, &mut pairs, &src);
            ctx.query = (!pairs.is_empty()).then(|| join_pairs(&pairs));
        }
        if let Some(m) = &self.method {
            ctx.method = m.clone();
        }
        let rendered = self.uri.as_ref().map(|t| t.render_path(&src));
        ctx.uri_captures = captures;
        if let Some(rendered) = rendered {
            ctx.upstream_path = Some(if rendered.starts_with('/') {
                rendered
            } else {
                format!("/{rendered}")
            });
        }
    }

    fn transform_body(&self, ctx: &mut Ctx, src: &Src<'_>) {
        let Some(body) = ctx.body.clone() else {
            return;
        };
        match ctx.media_type().as_deref() {
            Some("application/x-www-form-urlencoded") => {
                let mut pairs = parse_pairs(&String::from_utf8_lossy(&body));
                pair_ops(&self.body, &mut pairs, src);
                ctx.body = Some(Bytes::from(join_pairs(&pairs)));
            }
            Some("application/json") => {
                let parsed = if body.is_empty() {
                    Some(Value::Object(Map::new()))
                } else {
                    serde_json::from_slice::<Value>(&body).ok()
                };
                if let Some(Value::Object(mut m)) = parsed {
                    json_ops(&self.body, &mut m, src);
                    if let Ok(b) = serde_json::to_vec(&Value::Object(m)) {
                        ctx.body = Some(Bytes::from(b));
                    }
                }
            }
            _ => {}
        }
    }
}

impl Plugin for RequestTransformer {
    fn response_header_names(&self) -> Option<Vec<http::HeaderName>> {
        // No response phase.
        Some(Vec::new())
    }

    fn name(&self) -> &'static str {
        "request-transformer"
    }

    fn access<'a>(&'a self, ctx: &'a mut Ctx) -> Access<'a> {
        self.apply(ctx);
        Access::Now(Flow::Continue)
    }

    fn reads_body(&self) -> bool {
        !self.body.is_empty()
    }
}

/// A compiled `response-transformer` instance.
#[derive(Debug)]
pub struct ResponseTransformer {
    headers: Ops,
    json: Ops,
}

impl ResponseTransformer {
    /// Validates the config.
    pub fn build(config: &Value, path: &str, errs: &mut Errors) -> Option<ResponseTransformer> {
        let before = errs.len();
        let mut o = Obj::open(config, path, errs)?;
        // Kong's response-transformer does not render templates: values are literal.
        let mut ops = read_ops(&mut o, &["headers", "json"], false, errs);
        o.finish(errs);
        if errs.len() > before {
            return None;
        }
        let json = ops.pop().unwrap_or_default();
        let headers = ops.pop().unwrap_or_default();
        Some(ResponseTransformer { headers, json })
    }
}

impl Plugin for ResponseTransformer {
    fn name(&self) -> &'static str {
        "response-transformer"
    }

    fn response_headers(&self, ctx: &mut Ctx, head: &mut ResponseHead) {
        header_ops(
            &self.headers,
            &mut head.headers,
            &Src::of(ctx, &HeaderMap::new(), None),
        );
    }

    fn reads_response_body(&self) -> bool {
        !self.json.is_empty()
    }

    fn response_body(&self, ctx: &mut Ctx, head: &mut ResponseHead, body: &mut Bytes) {
        let is_json = head
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.to_ascii_lowercase().contains("application/json"));
        if !is_json {
            return;
        }
        let Ok(Value::Object(mut m)) = serde_json::from_slice::<Value>(body) else {
            return;
        };
        json_ops(&self.json, &mut m, &Src::of(ctx, &HeaderMap::new(), None));
        if let Ok(b) = serde_json::to_vec(&Value::Object(m)) {
            *body = Bytes::from(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn errors(cfg: Value) -> Vec<String> {
        let mut errs = Errors::default();
        let _ = RequestTransformer::build(&cfg, "plugins[0].config", &mut errs);
        errs.into_vec().iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn config_errors_have_paths() {
        let e = errors(
            json!({"add": {"headers": ["no-colon"], "bogus": []}, "rename": {"querystring": ["x"]}}),
        );
        assert!(
            e.iter()
                .any(|x| x.contains("plugins[0].config.add.headers[0]")),
            "{e:?}"
        );
        assert!(
            e.iter().any(|x| x.contains("plugins[0].config.add.bogus")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|x| x.contains("plugins[0].config.rename.querystring[0]")),
            "{e:?}"
        );
        for bad in [
            "x:$(uri_captures[0])",
            "x:$(headers[1])",
            "x:$(headers['a)",
            "x:$(shared.a)",
            "x:$(headers.a b)",
        ] {
            let e = errors(json!({"add": {"headers": [bad]}}));
            assert!(
                e.iter().any(|x| x.contains("unsupported template")),
                "{bad}: {e:?}"
            );
        }
    }

    #[test]
    fn templates_take_kongs_dot_bracket_and_capture_forms() {
        let cfg = json!({
            "add": {"headers": [
                "x-a:$(headers.x-user-id)",
                "x-b:$(headers[\"X-User-Id\"])/$(query_params['page-size'])",
                "x-c:$(uri_captures.id)-$(uri_captures[\"tab\"])-$(uri_captures[2])",
                "x-d:[$(uri_captures[9])]"
            ]},
            "replace": {"uri": "/users/$(uri_captures[1])"}
        });
        let mut errs = Errors::default();
        let p = RequestTransformer::build(&cfg, "c", &mut errs).unwrap();
        assert!(errs.is_empty(), "{:?}", errs.into_vec());
        let mut h = HeaderMap::new();
        h.insert("x-user-id", HeaderValue::from_static("u7"));
        let mut ctx = Ctx::new(
            Method::GET,
            "/u/42/posts".into(),
            Some("page-size=10".into()),
            h,
            "127.0.0.1".parse().unwrap(),
        );
        ctx.uri_captures = vec![
            (Some("id".into()), "42".into()),
            (Some("tab".into()), "posts".into()),
        ];
        p.apply(&mut ctx);
        let get = |n: &str| ctx.headers.get(n).and_then(|v| v.to_str().ok());
        assert_eq!(get("x-a"), Some("u7"));
        assert_eq!(get("x-b"), Some("u7/10"));
        assert_eq!(get("x-c"), Some("42-posts-posts"));
        assert_eq!(get("x-d"), Some("[]"));
        assert_eq!(ctx.upstream_path.as_deref(), Some("/users/42"));
        assert_eq!(
            ctx.uri_captures.len(),
            2,
            "captures are kept for later plugins"
        );
    }

    #[test]
    fn response_transformer_values_are_literal() {
        // Kong renders no templates here; a request header must not reach the response.
        let cfg =
            json!({"add": {"headers": ["x-status:$(upstream_status)", "x-echo:$(headers.x-in)"]}});
        let mut errs = Errors::default();
        let p = ResponseTransformer::build(&cfg, "c", &mut errs).unwrap();
        assert!(errs.is_empty(), "{:?}", errs.into_vec());
        let mut h = HeaderMap::new();
        h.insert("x-in", HeaderValue::from_static("injected"));
        let mut ctx = Ctx::new(
            Method::GET,
            "/".into(),
            None,
            h,
            "127.0.0.1".parse().unwrap(),
        );
        let mut head = ResponseHead {
            status: http::StatusCode::OK,
            headers: HeaderMap::new(),
        };
        p.response_headers(&mut ctx, &mut head);
        assert_eq!(head.headers["x-status"], "$(upstream_status)");
        assert_eq!(head.headers["x-echo"], "$(headers.x-in)");
    }

    #[test]
    fn query_operations_run_in_kong_order() {
        let cfg = json!({
            "remove": {"querystring": ["drop"]},
            "rename": {"querystring": ["old:new"]},
            "replace": {"querystring": ["new:replaced", "absent:x"]},
            "add": {"querystring": ["new:not-added", "fresh:$(headers.x-src)"]},
            "append": {"querystring": ["multi:2"]}
        });
        let mut errs = Errors::default();
        let p = RequestTransformer::build(&cfg, "c", &mut errs).unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-src", HeaderValue::from_static("from header"));
        let mut ctx = Ctx::new(
            Method::GET,
            "/".into(),
            Some("drop=1&old=v&multi=1".into()),
            h,
            "127.0.0.1".parse().unwrap(),
        );
        p.apply(&mut ctx);
        assert_eq!(
            ctx.query.as_deref(),
            Some("new=replaced&multi=1&fresh=from%20header&multi=2")
        );
    }

    #[test]
    fn json_types_apply() {
        let mut m = Map::new();
        m.insert("a".into(), json!(1));
        let cfg = json!({"add": {"json": ["n:5", "b:true", "s:x"], "json_types": ["number", "boolean", "string"]}});
        let mut errs = Errors::default();
        let p = ResponseTransformer::build(&cfg, "c", &mut errs).unwrap();
        let h = HeaderMap::new();
        let src = Src {
            headers: &h,
            query: None,
            captures: &[],
        };
        json_ops(&p.json, &mut m, &src);
        assert_eq!(
            Value::Object(m),
            json!({"a": 1, "n": 5, "b": true, "s": "x"})
        );
    }
}
