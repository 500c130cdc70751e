//! `{vault://env/NAME}` references: secrets come from the environment, never from the file.
//!
//! Kong's `env` vault maps `{vault://env/my-secret}` to the variable `MY_SECRET` (upper case,
//! dashes to underscores). An exact-case variable of the same name is accepted too. An optional
//! `/key` suffix reads one field of a JSON object held in the variable.

use serde_json::Value;

use crate::reader::{index, join, Errors};

/// Looks up environment variables; injectable so tests need not touch the process environment.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Replaces every vault reference in the config `root`, recording an error per unresolved
/// reference. Besides `env`, references may name the `prefix` of an `env` vault entity in the
/// file (`vaults: [{name: env, prefix: my-vault, config: {prefix: APP_}}]` makes
/// `{vault://my-vault/db-password}` read `APP_DB_PASSWORD`, as Kong's env vault does).
///
/// Returns each resolved value with the reference text it came from, so that output meant for
/// people (errors, the Admin API) can show the reference instead of the secret.
pub fn resolve(
    root: &mut Value,
    path: &str,
    env: EnvLookup<'_>,
    errs: &mut Errors,
) -> Vec<(String, String)> {
    let vaults = env_vaults(root);
    let mut resolved = Vec::new();
    resolve_in(root, path, env, &vaults, errs, &mut resolved);
    resolved
}

/// Replaces every resolved vault value in `text` with its reference. Values shorter than 4
/// bytes are left: replacing them would garble ordinary words and numbers.
pub fn scrub(text: &str, resolved: &[(String, String)]) -> String {
    let mut out = text.to_string();
    for (secret, reference) in resolved {
        if secret.len() >= 4 && out.contains(secret.as_str()) {
            out = out.replace(secret.as_str(), reference);
        }
    }
    out
}

/// `(prefix, config.prefix)` of each `env` vault entity.
fn env_vaults(root: &Value) -> Vec<(String, String)> {
    let Some(list) = root.get("vaults").and_then(Value::as_array) else {
        return Vec::new();
    };
    list.iter()
        .filter(|v| v.get("name").and_then(Value::as_str) == Some("env"))
        .filter_map(|v| {
            let prefix = v.get("prefix").and_then(Value::as_str)?;
            let var_prefix = v
                .get("config")
                .and_then(|c| c.get("prefix"))
                .and_then(Value::as_str)
                .unwrap_or("");
            Some((prefix.to_string(), var_prefix.to_string()))
        })
        .collect()
}

fn resolve_in(
    v: &mut Value,
    path: &str,
    env: EnvLookup<'_>,
    vaults: &[(String, String)],
    errs: &mut Errors,
    resolved: &mut Vec<(String, String)>,
) {
    match v {
        Value::String(s) => {
            if let Some(reference) = parse_reference(s) {
                match lookup(reference, env, vaults) {
                    Ok(secret) => {
                        let text = s.trim().to_string();
                        if !resolved.iter().any(|(v, r)| *v == secret && *r == text) {
                            resolved.push((secret.clone(), text));
                        }
                        *s = secret;
                    }
                    Err(msg) => errs.push(path, msg),
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                resolve_in(item, &index(path, i), env, vaults, errs, resolved);
            }
        }
        Value::Object(map) => {
            for (k, item) in map.iter_mut() {
                resolve_in(item, &join(path, k), env, vaults, errs, resolved);
            }
        }
        _ => {}
    }
}

/// Returns the part after `vault://` when the whole string is a reference.
fn parse_reference(s: &str) -> Option<&str> {
    s.trim()
        .strip_prefix("{vault://")
        .and_then(|r| r.strip_suffix('}'))
}

fn lookup(
    reference: &str,
    env: EnvLookup<'_>,
    vaults: &[(String, String)],
) -> Result<String, String> {
    let (vault, rest) = reference
        .split_once('/')
        .ok_or_else(|| format!("invalid vault reference '{{vault://{reference}}}'"))?;
    let var_prefix = if vault == "env" {
        ""
    } else {
        match vaults.iter().find(|(p, _)| p == vault) {
            Some((_, var_prefix)) => var_prefix.as_str(),
            None => {
                return Err(format!(
                    "vault '{vault}' is not available (supported: env, or the prefix of an env vault entity)"
                ))
            }
        }
    };
    let (name, key) = match rest.split_once('/') {
        Some((n, k)) if !k.is_empty() => (n, Some(k)),
        _ => (rest.trim_end_matches('/'), None),
    };
    if name.is_empty() {
        return Err("vault reference names no variable".into());
    }
    let kong_name = format!("{var_prefix}{name}")
        .to_ascii_uppercase()
        .replace('-', "_");
    let exact = format!("{var_prefix}{name}");
    let raw = env(&kong_name).or_else(|| env(&exact)).ok_or_else(|| {
        format!("could not resolve vault reference: environment variable {kong_name} is not set")
    })?;
    match key {
        None => Ok(raw),
        Some(key) => {
            let parsed: Value = serde_json::from_str(&raw).map_err(|_| {
                format!("environment variable {kong_name} does not hold a JSON object")
            })?;
            match parsed.get(key) {
                Some(Value::String(s)) => Ok(s.clone()),
                Some(other) => Ok(other.to_string()),
                None => Err(format!(
                    "environment variable {kong_name} has no key '{key}'"
                )),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env(name: &str) -> Option<String> {
        match name {
            "MY_SECRET" => Some("s3cret".into()),
            "JSON_VAR" => Some(r#"{"user":"bob"}"#.into()),
            "APP_DB_PASSWORD" => Some("from-prefix".into()),
            _ => None,
        }
    }

    #[test]
    fn resolves_and_reports() {
        let mut v = json!({"a": "{vault://env/my-secret}", "b": ["{vault://env/json-var/user}", "{vault://env/nope}"], "c": "plain"});
        let mut errs = Errors::default();
        resolve(&mut v, "", &env, &mut errs);
        assert_eq!(v["a"], "s3cret");
        assert_eq!(v["b"][0], "bob");
        assert_eq!(v["c"], "plain");
        let e = errs.into_vec();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].path, "b[1]");
        assert!(!e[0].message.contains("s3cret"));
    }

    #[test]
    fn env_vault_entities_add_their_prefix() {
        let mut v = json!({
            "vaults": [{"name": "env", "prefix": "my-vault", "config": {"prefix": "APP_"}}],
            "a": "{vault://my-vault/db-password}",
            "b": "{vault://other/db-password}",
            "c": "{vault://env/my-secret}"
        });
        let mut errs = Errors::default();
        resolve(&mut v, "", &env, &mut errs);
        assert_eq!(v["a"], "from-prefix");
        assert_eq!(v["c"], "s3cret");
        let e = errs.into_vec();
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].path, "b");
        assert!(e[0].message.contains("vault 'other' is not available"));
    }
}
