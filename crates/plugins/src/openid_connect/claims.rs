//! Claim lookups and Kong's `*_required` checks.
//!
//! A claim is named by a path (`["realm_access", "roles"]`). Its value may be a string (split
//! on spaces, as OAuth's `scope`), or an array of strings. A `*_required` list is an OR of
//! entries, each entry an AND of space-separated values: `["a b", "c"]` means (a and b) or c.

use serde_json::Value;

/// The value at a claim path.
pub fn lookup<'a>(claims: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = claims;
    for p in path {
        cur = cur.get(p.as_str())?;
    }
    (!cur.is_null()).then_some(cur)
}

/// A claim's values as strings (space-separated strings are split).
pub fn values(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => s.split_whitespace().map(str::to_string).collect(),
        Value::Array(items) => items
            .iter()
            .filter_map(|i| match i {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .collect(),
        Value::Number(n) => vec![n.to_string()],
        Value::Bool(b) => vec![b.to_string()],
        _ => Vec::new(),
    }
}

/// Kong's required-values rule; true when `required` is empty.
pub fn satisfies(claims: &Value, path: &[String], required: &[String]) -> bool {
    if required.is_empty() {
        return true;
    }
    let Some(v) = lookup(claims, path) else {
        return false;
    };
    let have = values(v);
    required.iter().any(|entry| {
        let mut wanted = entry.split_whitespace().peekable();
        wanted.peek().is_some() && wanted.all(|w| have.iter().any(|h| h == w))
    })
}

/// A claim rendered as a header value: strings as they are, arrays joined with `, `, other
/// JSON as compact JSON.
pub fn header_value(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(items) if items.iter().all(|i| i.is_string()) => items
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(", "),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn required_is_or_of_ands() {
        let c = json!({"scope": "a b c", "groups": ["x", "y"], "realm": {"roles": ["r"]}});
        assert!(satisfies(&c, &p(&["scope"]), &p(&["a b"])));
        assert!(!satisfies(&c, &p(&["scope"]), &p(&["a d"])));
        assert!(satisfies(&c, &p(&["scope"]), &p(&["a d", "c"])));
        assert!(satisfies(&c, &p(&["groups"]), &p(&["y"])));
        assert!(!satisfies(&c, &p(&["groups"]), &p(&["z"])));
        assert!(satisfies(&c, &p(&["realm", "roles"]), &p(&["r"])));
        assert!(!satisfies(&c, &p(&["missing"]), &p(&["r"])));
        assert!(satisfies(&c, &p(&["missing"]), &[]));
        // An empty entry never matches.
        assert!(!satisfies(&c, &p(&["scope"]), &p(&[" "])));
    }

    #[test]
    fn header_values() {
        assert_eq!(header_value(&json!("a")), "a");
        assert_eq!(header_value(&json!(["a", "b"])), "a, b");
        assert_eq!(header_value(&json!(3)), "3");
    }
}
