//! A small schema reader over `serde_json::Value` that collects every error with its field path.
//!
//! Kong reports all schema violations of a declarative config at once, each with the path of the
//! offending field. serde stops at the first error, so entities are read field by field through
//! [`Obj`], which remembers which keys were consumed and reports the rest as unknown fields.

use std::collections::BTreeSet;
use std::fmt;

use serde_json::{Map, Value};

/// One validation error: where it is and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Path of the field, e.g. `services[0].routes[2].paths[0]`.
    pub path: String,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Collects every error found while reading a config.
#[derive(Debug, Default, Clone)]
pub struct Errors {
    list: Vec<FieldError>,
}

impl Errors {
    /// Records an error at `path`.
    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.list.push(FieldError {
            path: path.into(),
            message: message.into(),
        });
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Number of errors recorded.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// The recorded errors, in the order found.
    pub fn into_vec(self) -> Vec<FieldError> {
        self.list
    }

    /// Appends all errors of `other`.
    pub fn extend(&mut self, other: Errors) {
        self.list.extend(other.list);
    }
}

/// Joins a parent path and a key: `a` + `b` = `a.b`, `` + `b` = `b`.
pub fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Joins a parent path and an array index: `a` + 2 = `a[2]`.
pub fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// Names a JSON value's type the way Kong's schema errors do.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "a record",
    }
}

/// Reads the fields of one JSON object, tracking which keys were used.
pub struct Obj<'a> {
    map: &'a Map<String, Value>,
    path: String,
    used: BTreeSet<&'a str>,
}

impl<'a> Obj<'a> {
    /// Opens `v` as a record, or records "expected a record" and returns `None`.
    pub fn open(v: &'a Value, path: impl Into<String>, errs: &mut Errors) -> Option<Obj<'a>> {
        let path = path.into();
        match v {
            Value::Object(map) => Some(Obj {
                map,
                path,
                used: BTreeSet::new(),
            }),
            other => {
                errs.push(path, format!("expected a record, got {}", kind(other)));
                None
            }
        }
    }

    /// The path of this record.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The path of field `key` of this record.
    pub fn field_path(&self, key: &str) -> String {
        join(&self.path, key)
    }

    /// True when `key` is present and not null.
    pub fn has(&self, key: &str) -> bool {
        matches!(self.map.get(key), Some(v) if !v.is_null())
    }

    /// Returns the raw value of `key` (null counts as absent) and marks it used.
    pub fn get(&mut self, key: &str) -> Option<&'a Value> {
        let (k, v) = self.map.get_key_value(key)?;
        self.used.insert(k.as_str());
        if v.is_null() {
            None
        } else {
            Some(v)
        }
    }

    /// Marks keys as accepted without reading them (for fields kept only for compatibility).
    pub fn accept(&mut self, keys: &[&str]) {
        for key in keys {
            let _ = self.get(key);
        }
    }

    /// Accepts `key` only when absent or null (a field Kong's Enterprise edition has and we do
    /// not honour: ignoring a set value would change what the config means, silently).
    pub fn null_only(&mut self, key: &str, why: &str, errs: &mut Errors) {
        if self.get(key).is_some() {
            errs.push(self.field_path(key), why.to_string());
        }
    }

    /// An optional string.
    pub fn opt_str(&mut self, key: &str, errs: &mut Errors) -> Option<String> {
        match self.get(key)? {
            Value::String(s) => Some(s.clone()),
            other => {
                errs.push(
                    self.field_path(key),
                    format!("expected a string, got {}", kind(other)),
                );
                None
            }
        }
    }

    /// A required string.
    pub fn req_str(&mut self, key: &str, errs: &mut Errors) -> Option<String> {
        if !self.has(key) {
            let _ = self.get(key);
            errs.push(self.field_path(key), "required field missing");
            return None;
        }
        self.opt_str(key, errs)
    }

    /// A boolean with a default.
    pub fn bool_or(&mut self, key: &str, default: bool, errs: &mut Errors) -> bool {
        self.opt_bool(key, errs).unwrap_or(default)
    }

    /// An optional boolean.
    pub fn opt_bool(&mut self, key: &str, errs: &mut Errors) -> Option<bool> {
        match self.get(key)? {
            Value::Bool(b) => Some(*b),
            other => {
                errs.push(
                    self.field_path(key),
                    format!("expected a boolean, got {}", kind(other)),
                );
                None
            }
        }
    }

    /// An optional integer within `min..=max`.
    pub fn opt_int(&mut self, key: &str, min: i64, max: i64, errs: &mut Errors) -> Option<i64> {
        let v = self.get(key)?;
        let n = match v {
            Value::Number(n) => match n.as_i64() {
                Some(i) => i,
                None => match n.as_f64() {
                    Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => f as i64,
                    _ => {
                        errs.push(self.field_path(key), "expected an integer");
                        return None;
                    }
                },
            },
            other => {
                errs.push(
                    self.field_path(key),
                    format!("expected an integer, got {}", kind(other)),
                );
                return None;
            }
        };
        if n < min || n > max {
            errs.push(
                self.field_path(key),
                format!("value should be between {min} and {max}"),
            );
            return None;
        }
        Some(n)
    }

    /// An integer within `min..=max`, with a default.
    pub fn int_or(
        &mut self,
        key: &str,
        default: i64,
        min: i64,
        max: i64,
        errs: &mut Errors,
    ) -> i64 {
        self.opt_int(key, min, max, errs).unwrap_or(default)
    }

    /// An optional number (integer or float).
    pub fn opt_f64(&mut self, key: &str, errs: &mut Errors) -> Option<f64> {
        match self.get(key)? {
            Value::Number(n) => n.as_f64(),
            other => {
                errs.push(
                    self.field_path(key),
                    format!("expected a number, got {}", kind(other)),
                );
                None
            }
        }
    }

    /// An optional number within `min..=max`.
    pub fn opt_f64_between(
        &mut self,
        key: &str,
        min: f64,
        max: f64,
        errs: &mut Errors,
    ) -> Option<f64> {
        let v = self.opt_f64(key, errs)?;
        if !(min..=max).contains(&v) {
            errs.push(
                self.field_path(key),
                format!("value should be between {min} and {max}"),
            );
            return None;
        }
        Some(v)
    }

    /// A string that must be one of `allowed`, with a default.
    pub fn one_of(
        &mut self,
        key: &str,
        default: &str,
        allowed: &[&str],
        errs: &mut Errors,
    ) -> String {
        match self.opt_str(key, errs) {
            Some(s) if allowed.contains(&s.as_str()) => s,
            Some(_) => {
                errs.push(
                    self.field_path(key),
                    format!("expected one of: {}", allowed.join(", ")),
                );
                default.to_string()
            }
            None => default.to_string(),
        }
    }

    /// An optional array; each element is handed to `f` with its path.
    pub fn array<T>(
        &mut self,
        key: &str,
        errs: &mut Errors,
        mut f: impl FnMut(&'a Value, String, &mut Errors) -> Option<T>,
    ) -> Vec<T> {
        let path = self.field_path(key);
        match self.get(key) {
            None => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .filter_map(|(i, v)| f(v, index(&path, i), errs))
                .collect(),
            Some(other) => {
                errs.push(path, format!("expected an array, got {}", kind(other)));
                Vec::new()
            }
        }
    }

    /// An optional array of strings.
    pub fn str_array(&mut self, key: &str, errs: &mut Errors) -> Vec<String> {
        self.array(key, errs, |v, path, errs| match v {
            Value::String(s) => Some(s.clone()),
            other => {
                errs.push(path, format!("expected a string, got {}", kind(other)));
                None
            }
        })
    }

    /// An optional array of integers within `min..=max`.
    pub fn int_array(&mut self, key: &str, min: i64, max: i64, errs: &mut Errors) -> Vec<i64> {
        self.array(key, errs, |v, path, errs| match v.as_i64() {
            Some(n) if n >= min && n <= max => Some(n),
            Some(_) => {
                errs.push(path, format!("value should be between {min} and {max}"));
                None
            }
            None => {
                errs.push(path, format!("expected an integer, got {}", kind(v)));
                None
            }
        })
    }

    /// Opens an optional nested record.
    pub fn record(&mut self, key: &str, errs: &mut Errors) -> Option<Obj<'a>> {
        let path = self.field_path(key);
        let v = self.get(key)?;
        Obj::open(v, path, errs)
    }

    /// Reports every key that was never read as an unknown field.
    pub fn finish(self, errs: &mut Errors) {
        for key in self.map.keys() {
            if !self.used.contains(key.as_str()) {
                errs.push(join(&self.path, key), "unknown field");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn collects_every_error_with_paths() {
        let v = json!({"a": "x", "b": "not-int", "c": 70000, "d": [1, "two"], "zz": 1});
        let mut errs = Errors::default();
        let mut o = Obj::open(&v, "root", &mut errs).unwrap();
        assert_eq!(o.req_str("a", &mut errs).as_deref(), Some("x"));
        assert_eq!(o.int_or("b", 5, 0, 10, &mut errs), 5);
        assert_eq!(o.int_or("c", 80, 0, 65535, &mut errs), 80);
        assert_eq!(o.str_array("d", &mut errs), vec!["two".to_string()]);
        assert!(o.req_str("missing", &mut errs).is_none());
        o.finish(&mut errs);
        let msgs: Vec<String> = errs.into_vec().iter().map(|e| e.to_string()).collect();
        assert_eq!(
            msgs,
            vec![
                "root.b: expected an integer, got a string",
                "root.c: value should be between 0 and 65535",
                "root.d[0]: expected a string, got a number",
                "root.missing: required field missing",
                "root.zz: unknown field",
            ]
        );
    }
}
