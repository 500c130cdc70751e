//! Shared pieces of `request-validator` and `oas-validation`: JSON Schema compilation,
//! error messages that never echo request data, media types, and OpenAPI parameter
//! deserialisation (style/explode) from the raw strings of a request.

use jsonschema::{Draft, Validator};
use serde_json::{Map, Number, Value};

/// Longest validation message a client is shown (verbose mode).
const MAX_MESSAGE: usize = 300;

/// Compiles `schema` for `draft`. Remote `$ref`s are never fetched (the crate is built
/// without retrievers), so a schema that needs one is refused here.
pub(crate) fn compile(schema: &Value, draft: Draft) -> Result<Validator, String> {
    jsonschema::options()
        .with_draft(draft)
        .build(schema)
        .map_err(|e| format!("invalid schema: {}", clip(&e.masked().to_string())))
}

/// The first error of `instance`, described without its value: `property '/a/0': ...`.
pub(crate) fn first_error(v: &Validator, instance: &Value) -> Option<String> {
    let err = v.iter_errors(instance).next()?;
    Some(describe(&err))
}

/// Describes one validation error with its location and without the offending value.
pub(crate) fn describe(err: &jsonschema::ValidationError<'_>) -> String {
    let at = err.instance_path().as_str();
    let msg = err.masked().to_string();
    if at.is_empty() {
        clip(&msg)
    } else {
        clip(&format!("property '{at}' validation failed: {msg}"))
    }
}

fn clip(s: &str) -> String {
    if s.len() <= MAX_MESSAGE {
        return s.to_string();
    }
    let mut end = MAX_MESSAGE;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// A parsed media type (or range): lower-case type and subtype, parameters with lower-case
/// names (the `charset` value lower-cased too, RFC 2046).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MediaType {
    pub(crate) kind: String,
    pub(crate) sub: String,
    pub(crate) params: Vec<(String, String)>,
}

impl MediaType {
    /// Parses `type/subtype; k=v; ...`; `None` when there is no `type/subtype`.
    pub(crate) fn parse(s: &str) -> Option<MediaType> {
        let mut parts = s.split(';');
        let essence = parts.next()?.trim();
        let (kind, sub) = essence.split_once('/')?;
        let (kind, sub) = (kind.trim(), sub.trim());
        if kind.is_empty() || sub.is_empty() || kind.contains(' ') || sub.contains(' ') {
            return None;
        }
        let mut params = Vec::new();
        for p in parts {
            let p = p.trim();
            if p.is_empty() {
                continue;
            }
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let k = k.trim().to_ascii_lowercase();
            let mut v = v.trim().trim_matches('"').to_string();
            if k == "charset" {
                v = v.to_ascii_lowercase();
            }
            params.push((k, v));
        }
        Some(MediaType {
            kind: kind.to_ascii_lowercase(),
            sub: sub.to_ascii_lowercase(),
            params,
        })
    }

    /// Does this range (`*/*`, `type/*` or exact) cover `other`? With `strict_params`, the
    /// parameters must be the same set with the same values (Kong's
    /// `content_type_parameter_validation`); otherwise they are ignored.
    pub(crate) fn covers(&self, other: &MediaType, strict_params: bool) -> bool {
        let kind_ok = self.kind == "*" || self.kind == other.kind;
        let sub_ok = self.sub == "*" || self.sub == other.sub;
        if !(kind_ok && sub_ok) {
            return false;
        }
        if !strict_params {
            return true;
        }
        self.params.len() == other.params.len()
            && self
                .params
                .iter()
                .all(|(k, v)| other.params.iter().any(|(k2, v2)| k == k2 && v == v2))
    }

    /// `type/subtype`.
    pub(crate) fn essence(&self) -> String {
        format!("{}/{}", self.kind, self.sub)
    }

    /// JSON media types: `application/json` and `*/*+json`.
    pub(crate) fn is_json(&self) -> bool {
        self.kind == "application" && (self.sub == "json" || self.sub.ends_with("+json"))
    }
}

/// Where a parameter is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Location {
    Query,
    Header,
    Path,
}

impl Location {
    pub(crate) fn parse(s: &str) -> Option<Location> {
        match s {
            "query" => Some(Location::Query),
            "header" => Some(Location::Header),
            "path" => Some(Location::Path),
            _ => None,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Location::Query => "query",
            Location::Header => "header",
            Location::Path => "path",
        }
    }
}

/// OpenAPI serialisation styles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Style {
    Form,
    Simple,
    Label,
    Matrix,
    SpaceDelimited,
    PipeDelimited,
    DeepObject,
}

impl Style {
    /// The style name, checked against where it may be used (OpenAPI 3 table).
    pub(crate) fn parse(s: &str, loc: Location) -> Result<Style, String> {
        let style = match s {
            "form" => Style::Form,
            "simple" => Style::Simple,
            "label" => Style::Label,
            "matrix" => Style::Matrix,
            "spaceDelimited" => Style::SpaceDelimited,
            "pipeDelimited" => Style::PipeDelimited,
            "deepObject" => Style::DeepObject,
            _ => return Err(format!("unknown style '{s}'")),
        };
        let ok = match loc {
            Location::Query => matches!(
                style,
                Style::Form | Style::SpaceDelimited | Style::PipeDelimited | Style::DeepObject
            ),
            Location::Header => style == Style::Simple,
            Location::Path => matches!(style, Style::Simple | Style::Label | Style::Matrix),
        };
        if ok {
            Ok(style)
        } else {
            Err(format!(
                "style '{s}' is not allowed for {} parameters",
                loc.as_str()
            ))
        }
    }

    /// The OpenAPI default style of a location.
    pub(crate) fn default_for(loc: Location) -> Style {
        match loc {
            Location::Query => Style::Form,
            Location::Header | Location::Path => Style::Simple,
        }
    }
}

/// What a parameter's schema says about its shape, for deserialising strings.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Shape {
    /// A primitive of one of these JSON types (empty: unknown, kept as a string).
    Primitive(Vec<String>),
    /// An array whose items have these types.
    Array(Vec<String>),
    /// An object with these property types (others are strings).
    Object(Vec<(String, Vec<String>)>),
}

/// Follows local `$ref`s (`#/...`) within `root`, a few levels deep.
pub(crate) fn deref<'a>(root: &'a Value, mut v: &'a Value) -> &'a Value {
    for _ in 0..16 {
        match v.get("$ref").and_then(Value::as_str) {
            Some(r) if r.starts_with('#') => {
                let pointer = percent_encoding::percent_decode_str(&r[1..]).decode_utf8_lossy();
                match root.pointer(&pointer) {
                    Some(target) => v = target,
                    None => return v,
                }
            }
            _ => return v,
        }
    }
    v
}

fn types_of(root: &Value, schema: &Value) -> Vec<String> {
    let schema = deref(root, schema);
    match schema.get("type") {
        Some(Value::String(t)) => vec![t.clone()],
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(|t| t.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

impl Shape {
    /// Reads the shape of `schema` (local `$ref`s resolved against `root`).
    pub(crate) fn of(root: &Value, schema: &Value) -> Shape {
        let schema = deref(root, schema);
        let types = types_of(root, schema);
        if types.iter().any(|t| t == "array") {
            let items = schema
                .get("items")
                .map_or_else(Vec::new, |i| types_of(root, i));
            return Shape::Array(items);
        }
        if types.iter().any(|t| t == "object") {
            let props = schema
                .get("properties")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), types_of(root, v)))
                        .collect()
                })
                .unwrap_or_default();
            return Shape::Object(props);
        }
        Shape::Primitive(types)
    }
}

/// Converts a string to the first of `types` it parses as (OpenAPI parameters are strings on
/// the wire); left a string when none fits, so the schema reports the type error.
pub(crate) fn coerce(s: &str, types: &[String]) -> Value {
    for t in types {
        match t.as_str() {
            "integer" => {
                if let Ok(i) = s.parse::<i64>() {
                    return Value::from(i);
                }
            }
            "number" => {
                if let Ok(i) = s.parse::<i64>() {
                    return Value::from(i);
                }
                if let Some(n) = s.parse::<f64>().ok().and_then(Number::from_f64) {
                    return Value::Number(n);
                }
            }
            "boolean" => match s {
                "true" => return Value::Bool(true),
                "false" => return Value::Bool(false),
                _ => {}
            },
            "null" if s.is_empty() || s == "null" => return Value::Null,
            _ => {}
        }
    }
    Value::String(s.to_string())
}

/// Percent-decodes a query component (`+` is a space).
pub(crate) fn decode_query(s: &str) -> String {
    percent_encoding::percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

/// Percent-decodes a path or header component.
pub(crate) fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// A query string as decoded `(name, value)` pairs, in order.
pub(crate) fn query_pairs(q: Option<&str>) -> Vec<(String, String)> {
    let Some(q) = q else { return Vec::new() };
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode_query(k), decode_query(v))
        })
        .collect()
}

fn object_from_pairs(pairs: &[&str], props: &[(String, Vec<String>)]) -> Value {
    let mut m = Map::new();
    for kv in pairs.chunks(2) {
        let k = kv[0];
        let v = kv.get(1).copied().unwrap_or("");
        m.insert(k.to_string(), coerce(v, prop_types(props, k)));
    }
    Value::Object(m)
}

fn object_from_assignments<'a>(
    items: impl Iterator<Item = &'a str>,
    props: &[(String, Vec<String>)],
) -> Value {
    let mut m = Map::new();
    for item in items {
        let (k, v) = item.split_once('=').unwrap_or((item, ""));
        m.insert(k.to_string(), coerce(v, prop_types(props, k)));
    }
    Value::Object(m)
}

fn prop_types<'a>(props: &'a [(String, Vec<String>)], k: &str) -> &'a [String] {
    props
        .iter()
        .find(|(n, _)| n == k)
        .map_or(&[][..], |(_, t)| t.as_slice())
}

fn split_values(s: &str, sep: char, items: &[String]) -> Value {
    if s.is_empty() {
        return Value::Array(Vec::new());
    }
    Value::Array(s.split(sep).map(|v| coerce(v, items)).collect())
}

/// A parameter's definition, as far as deserialising goes.
#[derive(Debug, Clone)]
pub(crate) struct ParamSpec {
    pub(crate) name: String,
    pub(crate) location: Location,
    pub(crate) style: Style,
    pub(crate) explode: bool,
    pub(crate) shape: Shape,
}

/// What a request holds for a parameter.
#[derive(Debug, PartialEq)]
pub(crate) enum Found {
    /// Not sent.
    Missing,
    /// Deserialised values to validate (several for a repeated primitive).
    Values(Vec<Value>),
}

impl ParamSpec {
    /// Reads and deserialises this parameter from a query (decoded pairs).
    pub(crate) fn read_query(&self, pairs: &[(String, String)]) -> Found {
        let name = self.name.as_str();
        match (&self.shape, self.style) {
            (Shape::Object(props), Style::DeepObject) => {
                let prefix = format!("{name}[");
                let mut m = Map::new();
                for (k, v) in pairs {
                    if let Some(rest) = k.strip_prefix(&prefix).and_then(|r| r.strip_suffix(']')) {
                        m.insert(rest.to_string(), coerce(v, prop_types(props, rest)));
                    }
                }
                if m.is_empty() {
                    Found::Missing
                } else {
                    Found::Values(vec![Value::Object(m)])
                }
            }
            (Shape::Object(props), Style::Form) if self.explode => {
                let mut m = Map::new();
                for (p, types) in props {
                    if let Some((_, v)) = pairs.iter().find(|(k, _)| k == p) {
                        m.insert(p.clone(), coerce(v, types));
                    }
                }
                if m.is_empty() {
                    Found::Missing
                } else {
                    Found::Values(vec![Value::Object(m)])
                }
            }
            (Shape::Array(items), style) => {
                let values: Vec<&str> = pairs
                    .iter()
                    .filter(|(k, _)| k == name)
                    .map(|(_, v)| v.as_str())
                    .collect();
                if values.is_empty() {
                    return Found::Missing;
                }
                let sep = match style {
                    Style::SpaceDelimited => ' ',
                    Style::PipeDelimited => '|',
                    _ => ',',
                };
                if self.explode && style == Style::Form {
                    Found::Values(vec![Value::Array(
                        values.iter().map(|v| coerce(v, items)).collect(),
                    )])
                } else {
                    let mut all = Vec::new();
                    for v in values {
                        if let Value::Array(a) = split_values(v, sep, items) {
                            all.extend(a);
                        }
                    }
                    Found::Values(vec![Value::Array(all)])
                }
            }
            (Shape::Object(props), _) => match pairs.iter().find(|(k, _)| k == name) {
                None => Found::Missing,
                Some((_, v)) => {
                    let parts: Vec<&str> = v.split(',').collect();
                    Found::Values(vec![object_from_pairs(&parts, props)])
                }
            },
            (Shape::Primitive(types), _) => {
                let values: Vec<Value> = pairs
                    .iter()
                    .filter(|(k, _)| k == name)
                    .map(|(_, v)| coerce(v, types))
                    .collect();
                if values.is_empty() {
                    Found::Missing
                } else {
                    Found::Values(values)
                }
            }
        }
    }

    /// Deserialises a `simple`-style value (headers, and path segments).
    pub(crate) fn parse_simple(&self, raw: &str) -> Value {
        match &self.shape {
            Shape::Primitive(t) => coerce(raw, t),
            Shape::Array(items) => split_values(raw, ',', items),
            Shape::Object(props) if self.explode => object_from_assignments(raw.split(','), props),
            Shape::Object(props) => {
                let parts: Vec<&str> = raw.split(',').collect();
                object_from_pairs(&parts, props)
            }
        }
    }

    /// Reads a header parameter: repeated lines of a primitive are validated one by one,
    /// arrays and objects see all lines joined with commas.
    pub(crate) fn read_headers(&self, headers: &http::HeaderMap) -> Found {
        let values: Vec<String> = headers
            .get_all(self.name.as_str())
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_string())
            .collect();
        if values.is_empty() {
            return Found::Missing;
        }
        match self.shape {
            Shape::Primitive(_) => {
                Found::Values(values.iter().map(|v| self.parse_simple(v)).collect())
            }
            _ => Found::Values(vec![self.parse_simple(&values.join(","))]),
        }
    }

    /// Deserialises a path parameter's raw (still percent-encoded) value.
    pub(crate) fn parse_path(&self, raw: &str) -> Value {
        match self.style {
            Style::Label => {
                let rest = raw.strip_prefix('.').unwrap_or(raw);
                let sep = if self.explode { '.' } else { ',' };
                match &self.shape {
                    Shape::Primitive(t) => coerce(&decode(rest), t),
                    Shape::Array(items) => Value::Array(
                        rest.split(sep)
                            .filter(|s| !s.is_empty())
                            .map(|v| coerce(&decode(v), items))
                            .collect(),
                    ),
                    Shape::Object(props) => {
                        let parts: Vec<String> = rest.split(sep).map(decode).collect();
                        let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
                        if self.explode {
                            object_from_assignments(parts.into_iter(), props)
                        } else {
                            object_from_pairs(&parts, props)
                        }
                    }
                }
            }
            Style::Matrix => {
                let rest = raw.strip_prefix(';').unwrap_or(raw);
                let prefix = format!("{}=", self.name);
                let items: Vec<String> = rest.split(';').map(decode).collect();
                match &self.shape {
                    Shape::Primitive(t) => {
                        let v = items
                            .first()
                            .and_then(|i| i.strip_prefix(&prefix))
                            .unwrap_or("");
                        coerce(v, t)
                    }
                    Shape::Array(types) if self.explode => Value::Array(
                        items
                            .iter()
                            .filter_map(|i| i.strip_prefix(&prefix))
                            .map(|v| coerce(v, types))
                            .collect(),
                    ),
                    Shape::Array(types) => {
                        let v = items
                            .first()
                            .and_then(|i| i.strip_prefix(&prefix))
                            .unwrap_or("");
                        split_values(v, ',', types)
                    }
                    Shape::Object(props) if self.explode => {
                        object_from_assignments(items.iter().map(String::as_str), props)
                    }
                    Shape::Object(props) => {
                        let v = items
                            .first()
                            .and_then(|i| i.strip_prefix(&prefix))
                            .unwrap_or("");
                        let parts: Vec<&str> = v.split(',').collect();
                        object_from_pairs(&parts, props)
                    }
                }
            }
            _ => match &self.shape {
                Shape::Primitive(t) => coerce(&decode(raw), t),
                _ => {
                    // Split before decoding so an encoded comma stays inside a value.
                    let decoded: Vec<String> = raw.split(',').map(decode).collect();
                    match &self.shape {
                        Shape::Array(items) => {
                            Value::Array(decoded.iter().map(|v| coerce(v, items)).collect())
                        }
                        Shape::Object(props) if self.explode => {
                            object_from_assignments(decoded.iter().map(String::as_str), props)
                        }
                        Shape::Object(props) => {
                            let parts: Vec<&str> = decoded.iter().map(String::as_str).collect();
                            object_from_pairs(&parts, props)
                        }
                        Shape::Primitive(_) => Value::Null,
                    }
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(loc: Location, style: Style, explode: bool, schema: Value) -> ParamSpec {
        ParamSpec {
            name: "id".into(),
            location: loc,
            style,
            explode,
            shape: Shape::of(&schema, &schema),
        }
    }

    #[test]
    fn media_types_match_with_wildcards_and_parameters() {
        let json = MediaType::parse("application/json").unwrap();
        let utf8 = MediaType::parse("Application/JSON; charset=UTF-8").unwrap();
        let any = MediaType::parse("*/*").unwrap();
        let app = MediaType::parse("application/*").unwrap();
        assert!(json.covers(&json, true));
        assert!(!json.covers(&utf8, true));
        assert!(json.covers(&utf8, false));
        assert!(MediaType::parse("application/json; charset=utf-8")
            .unwrap()
            .covers(&utf8, true));
        assert!(any.covers(&utf8, false) && app.covers(&json, true));
        assert!(!app.covers(&MediaType::parse("text/plain").unwrap(), true));
        assert!(MediaType::parse("nonsense").is_none());
        assert!(MediaType::parse("application/problem+json")
            .unwrap()
            .is_json());
    }

    #[test]
    fn query_styles_deserialise() {
        let pairs = query_pairs(Some("id=1&id=2&x=a%20b&o=role,admin,n,3&o[k]=v"));
        let arr = spec(
            Location::Query,
            Style::Form,
            true,
            json!({"type":"array","items":{"type":"integer"}}),
        );
        assert_eq!(arr.read_query(&pairs), Found::Values(vec![json!([1, 2])]));
        let flat = spec(
            Location::Query,
            Style::Form,
            false,
            json!({"type":"array","items":{"type":"integer"}}),
        );
        let p2 = query_pairs(Some("id=1,2,x"));
        assert_eq!(
            flat.read_query(&p2),
            Found::Values(vec![json!([1, 2, "x"])])
        );
        let prim = spec(
            Location::Query,
            Style::Form,
            true,
            json!({"type":"integer"}),
        );
        assert_eq!(
            prim.read_query(&pairs),
            Found::Values(vec![json!(1), json!(2)])
        );
        assert_eq!(prim.read_query(&[]), Found::Missing);
        let mut obj = spec(
            Location::Query,
            Style::Form,
            false,
            json!({"type":"object","properties":{"n":{"type":"integer"}}}),
        );
        obj.name = "o".into();
        assert_eq!(
            obj.read_query(&pairs),
            Found::Values(vec![json!({"role":"admin","n":3})])
        );
        obj.style = Style::DeepObject;
        assert_eq!(
            obj.read_query(&pairs),
            Found::Values(vec![json!({"k":"v"})])
        );
    }

    #[test]
    fn header_and_path_styles_deserialise() {
        let arr = spec(
            Location::Header,
            Style::Simple,
            false,
            json!({"type":"array","items":{"type":"integer"}}),
        );
        assert_eq!(arr.parse_simple("1,2,3"), json!([1, 2, 3]));
        let obj = spec(
            Location::Header,
            Style::Simple,
            true,
            json!({"type":"object","properties":{"a":{"type":"boolean"}}}),
        );
        assert_eq!(obj.parse_simple("a=true,b=x"), json!({"a":true,"b":"x"}));
        let label = spec(
            Location::Path,
            Style::Label,
            true,
            json!({"type":"array","items":{"type":"integer"}}),
        );
        assert_eq!(label.parse_path(".3.4"), json!([3, 4]));
        let matrix = spec(
            Location::Path,
            Style::Matrix,
            true,
            json!({"type":"array","items":{"type":"integer"}}),
        );
        assert_eq!(matrix.parse_path(";id=3;id=4"), json!([3, 4]));
        let simple = spec(
            Location::Path,
            Style::Simple,
            false,
            json!({"type":"number"}),
        );
        assert_eq!(simple.parse_path("2.5"), json!(2.5));
        assert_eq!(simple.parse_path("a%20b"), json!("a b"));
        assert!(Style::parse("form", Location::Header).is_err());
        assert!(Style::parse("matrix", Location::Path).is_ok());
    }

    #[test]
    fn errors_do_not_echo_values() {
        let v = compile(
            &json!({"properties":{"a":{"type":"integer"}}}),
            Draft::Draft4,
        )
        .unwrap();
        let msg = first_error(&v, &json!({"a": "secret-value"})).unwrap();
        assert!(msg.contains("/a"), "{msg}");
        assert!(!msg.contains("secret-value"), "{msg}");
        assert!(compile(&json!({"type": 12}), Draft::Draft4).is_err());
    }
}
