//! Reads a Kong declarative config (`_format_version: "3.0"`, YAML or JSON) into a validated
//! [`Config`], collecting every error with its path.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::{Map, Value};

use crate::entities::{self, Pending, Refs};
use crate::model::*;
use crate::reader::{index, join, Errors, FieldError, Obj};
use crate::vault::{self, EnvLookup};

/// Credential kinds a consumer may nest, with the field that names each one.
pub(crate) const CREDENTIAL_KINDS: &[(&str, &str)] = &[
    ("keyauth_credentials", "key"),
    ("basicauth_credentials", "username"),
    ("hmacauth_credentials", "username"),
    ("jwt_secrets", "key"),
    ("acls", "group"),
    ("mtls_auth_credentials", "subject_name"),
    ("oauth2_credentials", "client_id"),
];

/// Checks one plugin's `config` against its schema: `(name, config, plugin path, errors)`.
pub type PluginCheck<'a> = &'a dyn Fn(&str, &Value, &str, &mut Errors);

/// Parses config text. JSON is detected by a leading `{`; anything else is read as YAML.
/// Plugin configs are not checked; see [`parse_str_with`].
pub fn parse_str(text: &str, env: EnvLookup<'_>) -> Result<Config, Vec<FieldError>> {
    parse_str_with(text, env, &|_, _, _, _| {})
}

/// Parses config text and checks every plugin's config with `check`, so one pass reports
/// entity and plugin errors together.
pub fn parse_str_with(
    text: &str,
    env: EnvLookup<'_>,
    check: PluginCheck<'_>,
) -> Result<Config, Vec<FieldError>> {
    let mut root: Value = if text.trim_start().starts_with('{') {
        serde_json::from_str(text).map_err(|e| {
            vec![FieldError {
                path: String::new(),
                message: format!("invalid JSON: {e}"),
            }]
        })?
    } else {
        crate::yaml::value(text).map_err(|e| {
            vec![FieldError {
                path: String::new(),
                message: format!("invalid YAML: {e}"),
            }]
        })?
    };
    let mut errs = Errors::default();
    let resolved = vault::resolve(&mut root, "", env, &mut errs);
    let mut config = parse_value(&root, &mut errs);
    for p in &config.plugins {
        if !p.name.is_empty() {
            check(&p.name, &p.config, &p.path, &mut errs);
        }
    }
    if errs.is_empty() {
        config.vault_values = resolved;
        Ok(config)
    } else {
        // An error may quote the value it refused: show the reference, never the secret.
        let mut list = errs.into_vec();
        for e in &mut list {
            e.message = vault::scrub(&e.message, &resolved);
        }
        Err(list)
    }
}

/// Reads the root value into a config; errors go to `errs`.
fn parse_value(root: &Value, errs: &mut Errors) -> Config {
    let mut p = Parser::default();
    let Some(mut top) = Obj::open(root, "", errs) else {
        return Config::default();
    };
    let version = match top.req_str("_format_version", errs) {
        Some(v) if ["1.1", "2.1", "3.0"].contains(&v.as_str()) => v,
        Some(_) => {
            errs.push(
                "_format_version",
                "unsupported version; expected one of: 1.1, 2.1, 3.0",
            );
            String::new()
        }
        None => String::new(),
    };
    p.legacy_paths = version == "1.1" || version == "2.1";
    p.config.no_transform = top.opt_bool("_transform", errs) == Some(false);
    top.accept(&[
        "_comment",
        "_ignore",
        "_workspace",
        "_info",
        "_konnect",
        "_plugin_configs",
    ]);

    let items = |top: &mut Obj<'_>, key: &str, errs: &mut Errors| -> Vec<(String, Value)> {
        top.array(key, errs, |v, path, _| Some((path, v.clone())))
    };
    for (path, v) in items(&mut top, "services", errs) {
        p.service(&v, &path, errs);
    }
    for (path, v) in items(&mut top, "routes", errs) {
        p.route(&v, &path, None, errs);
    }
    for (path, v) in items(&mut top, "upstreams", errs) {
        p.upstream(&v, &path, errs);
    }
    for (path, v) in items(&mut top, "targets", errs) {
        p.target(&v, &path, None, errs);
    }
    for (path, v) in items(&mut top, "certificates", errs) {
        p.certificate(&v, &path, errs);
    }
    for (path, v) in items(&mut top, "snis", errs) {
        p.sni(&v, &path, errs);
    }
    for (path, v) in items(&mut top, "ca_certificates", errs) {
        p.ca_certificate(&v, &path, errs);
    }
    for (path, v) in items(&mut top, "consumers", errs) {
        p.consumer(&v, &path, errs);
    }
    for (path, v) in items(&mut top, "consumer_groups", errs) {
        p.consumer_group(&v, &path, errs);
    }
    for (kind, _) in CREDENTIAL_KINDS {
        for (path, v) in items(&mut top, kind, errs) {
            p.credential(kind, &v, &path, None, errs);
        }
    }
    for (path, v) in items(&mut top, "plugins", errs) {
        p.plugin(&v, &path, Scope::default(), errs);
    }
    for (path, v) in items(&mut top, "vaults", errs) {
        p.vault(&v, &path, errs);
    }
    // Keys and key sets are accepted for compatibility; no bundled plugin uses them yet.
    top.accept(&[
        "key_sets",
        "keys",
        "filter_chains",
        "workspaces",
        "licenses",
    ]);
    top.finish(errs);

    let mut config = p.finish(errs);
    config.format_version = version;
    config
}

/// Where a plugin or route was nested.
#[derive(Default, Clone)]
pub(crate) struct Scope {
    pub(crate) service: Option<Id>,
    pub(crate) route: Option<Id>,
    pub(crate) consumer: Option<Id>,
}

/// Accumulates entities and unresolved references while the file is read.
#[derive(Default)]
pub(crate) struct Parser {
    pub(crate) config: Config,
    pub(crate) pending: Vec<Pending>,
    /// Plugins whose id depends on references resolved at the end.
    pub(crate) plugin_keys: Vec<Option<String>>,
    pub(crate) group_members: Vec<(String, String, String)>,
    pub(crate) route_counter: usize,
    /// `_format_version` 1.1 or 2.1: route paths are migrated as Kong migrates them.
    pub(crate) legacy_paths: bool,
    /// Where each entity was read, for errors found after reading (uniqueness).
    pub(crate) paths: Paths,
}

/// The file path of each entity, in the order of the config's vectors.
#[derive(Default)]
pub(crate) struct Paths {
    pub(crate) services: Vec<String>,
    pub(crate) routes: Vec<String>,
    pub(crate) upstreams: Vec<String>,
    pub(crate) targets: Vec<String>,
    pub(crate) certificates: Vec<String>,
    pub(crate) consumers: Vec<String>,
    pub(crate) credentials: Vec<String>,
    /// SNI names with where they were declared (nested in a certificate or top-level).
    pub(crate) snis: Vec<(String, String)>,
    /// Paths of the services, routes, upstreams, consumers and certificates whose `id` the
    /// file gives. Only those can collide as Kong sees it: where it would make a random id,
    /// an id derived here must not be reported as a duplicate primary key.
    pub(crate) explicit: HashSet<String>,
}

impl Parser {
    /// Resolves references, derives remaining ids and runs cross-entity checks.
    fn finish(mut self, errs: &mut Errors) -> Config {
        let refs = Refs::build(&self.config);
        for pending in std::mem::take(&mut self.pending) {
            entities::apply_pending(&mut self.config, &refs, pending, errs);
        }
        for (group, consumer, path) in std::mem::take(&mut self.group_members) {
            match refs.consumer(&consumer) {
                Some(id) => self
                    .config
                    .consumer_groups
                    .entry(group)
                    .or_default()
                    .push(id),
                None => errs.push(path, format!("consumer '{consumer}' not found")),
            }
        }
        // A plugin scoped to a route and a service runs only where both match: if the route
        // belongs to another service (or to none) it never runs, and an authentication plugin
        // written that way would leave the route open. Kong loads it; it is refused here.
        let routes: HashMap<&Id, &Route> = self.config.routes.iter().map(|r| (&r.id, r)).collect();
        for plugin in &self.config.plugins {
            let (Some(route), Some(service)) = (&plugin.route, &plugin.service) else {
                continue;
            };
            if let Some(r) = routes.get(route) {
                if r.service.as_ref() != Some(service) {
                    errs.push(
                        format!("{}.service", plugin.path),
                        format!(
                            "the plugin's route '{}' does not belong to this service: a plugin scoped to both would never run",
                            r.name.as_deref().unwrap_or(route.as_str())
                        ),
                    );
                }
            }
        }
        // Plugin ids depend on their (now resolved) scope.
        for (plugin, key) in self.config.plugins.iter_mut().zip(&self.plugin_keys) {
            if key.is_none() {
                continue;
            }
            plugin.id = derive_id(
                "plugin",
                &format!(
                    "{}|{}|{}|{}|{}",
                    plugin.name,
                    plugin.instance_name.as_deref().unwrap_or(""),
                    plugin.service.as_deref().unwrap_or(""),
                    plugin.route.as_deref().unwrap_or(""),
                    plugin.consumer.as_deref().unwrap_or("")
                ),
            );
        }
        check_uniqueness(&self.config, &self.paths, errs);
        self.config
    }
}

/// Derives a stable UUID (v5) from an entity kind and its natural key, so every node that loads
/// the same file agrees on ids.
pub(crate) fn derive_id(kind: &str, key: &str) -> Id {
    const NAMESPACE: uuid::Uuid = uuid::Uuid::from_bytes([
        0x0d, 0xc6, 0xf4, 0x5b, 0x8f, 0x8d, 0x40, 0xd2, 0xa5, 0x04, 0x47, 0x35, 0x44, 0xee, 0x19,
        0x0b,
    ]);
    uuid::Uuid::new_v5(&NAMESPACE, format!("{kind}:{key}").as_bytes()).to_string()
}

impl Parser {
    /// [`read_id`] for the kinds whose ids Kong makes random when the file gives none
    /// (services, routes, upstreams, consumers, certificates): a given id is remembered, as
    /// only given ids can be duplicate primary keys.
    pub(crate) fn entity_id(
        &mut self,
        o: &mut Obj<'_>,
        kind: &str,
        key: &str,
        errs: &mut Errors,
    ) -> Id {
        if o.has("id") {
            self.paths.explicit.insert(o.path().to_string());
        }
        read_id(o, kind, key, errs)
    }
}

/// Reads `id` if present (must be a UUID), else derives one from `key`.
pub(crate) fn read_id(o: &mut Obj<'_>, kind: &str, key: &str, errs: &mut Errors) -> Id {
    match o.opt_str("id", errs) {
        Some(id) if uuid::Uuid::parse_str(&id).is_ok() => id.to_ascii_lowercase(),
        Some(_) => {
            errs.push(o.field_path("id"), "expected a valid UUID");
            derive_id(kind, key)
        }
        None => derive_id(kind, key),
    }
}

/// Reads `tags` and the timestamps every entity may carry.
pub(crate) fn common(o: &mut Obj<'_>, errs: &mut Errors) -> Vec<String> {
    o.accept(&["created_at", "updated_at", "_comment", "_ignore"]);
    let tags = o.str_array("tags", errs);
    for (i, t) in tags.iter().enumerate() {
        if t.is_empty() || t.contains(',') || t.contains('/') || !t.chars().all(|c| !c.is_control())
        {
            errs.push(
                index(&o.field_path("tags"), i),
                "invalid tag: must be printable and must not contain ',' or '/'",
            );
        }
    }
    tags
}

/// Reads a foreign key: a string (name or id) or a record `{id: ...}` / `{name: ...}`.
pub(crate) fn read_ref(o: &mut Obj<'_>, key: &str, errs: &mut Errors) -> Option<String> {
    let path = o.field_path(key);
    match o.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Object(m) => {
            let found = m
                .get("id")
                .or_else(|| m.get("name"))
                .or_else(|| m.get("username"))
                .and_then(Value::as_str);
            if found.is_none() {
                errs.push(path, "expected a reference {id: ...} or {name: ...}");
            }
            found.map(str::to_string)
        }
        _ => {
            errs.push(path, "expected a name or id");
            None
        }
    }
}

/// Every name and id must be unique within its entity kind. As in Kong, the error is put on
/// the later entry (`services[1]`, `services[0].routes[2]`), naming the first's value.
fn check_uniqueness(c: &Config, paths: &Paths, errs: &mut Errors) {
    /// Entities with the paths they were read at (recorded in step with them).
    fn paired<'a, T>(
        items: &'a [T],
        paths: &'a [String],
    ) -> impl Iterator<Item = (&'a T, &'a str)> + Clone {
        items.iter().zip(paths.iter().map(String::as_str))
    }
    fn dup<'a>(
        errs: &mut Errors,
        kind: &str,
        what: &str,
        values: impl Iterator<Item = (&'a str, &'a str)>,
    ) {
        let mut seen = HashSet::new();
        for (v, path) in values {
            if !seen.insert(v) {
                errs.push(path, uniqueness(kind, what, v));
            }
        }
    }
    // Ids, skipping a collision between entities of the same name: their ids were derived
    // from that name, and the name's duplicate is the error to report.
    fn dup_ids<'a>(
        errs: &mut Errors,
        explicit: &HashSet<String>,
        kind: &str,
        values: impl Iterator<Item = (&'a str, Option<&'a str>, &'a str)>,
    ) {
        let mut seen: HashMap<&str, Option<&str>> = HashMap::new();
        for (id, name, path) in values {
            match seen.get(id) {
                Some(first) if name.is_some() && *first == name => {}
                Some(_) if !explicit.contains(path) => {}
                Some(_) => errs.push(path, uniqueness(kind, "primary key", id)),
                None => {
                    seen.insert(id, name);
                }
            }
        }
    }
    // Kong's words (declarative_config.lua).
    fn uniqueness(kind: &str, what: &str, v: &str) -> String {
        format!("uniqueness violation: '{kind}' entity with {what} set to '{v}' already declared")
    }
    let services = paired(&c.services, &paths.services);
    dup_ids(
        errs,
        &paths.explicit,
        "services",
        services
            .clone()
            .map(|(s, p)| (s.id.as_str(), s.name.as_deref(), p)),
    );
    dup(
        errs,
        "services",
        "name",
        services
            .clone()
            .filter_map(|(s, p)| Some((s.name.as_deref()?, p))),
    );
    let routes = paired(&c.routes, &paths.routes);
    dup_ids(
        errs,
        &paths.explicit,
        "routes",
        routes
            .clone()
            .map(|(r, p)| (r.id.as_str(), r.name.as_deref(), p)),
    );
    dup(
        errs,
        "routes",
        "name",
        routes
            .clone()
            .filter_map(|(r, p)| Some((r.name.as_deref()?, p))),
    );
    let upstreams = paired(&c.upstreams, &paths.upstreams);
    dup_ids(
        errs,
        &paths.explicit,
        "upstreams",
        upstreams
            .clone()
            .map(|(u, p)| (u.id.as_str(), Some(u.name.as_str()), p)),
    );
    dup(
        errs,
        "upstreams",
        "name",
        upstreams.clone().map(|(u, p)| (u.name.as_str(), p)),
    );
    let consumers = paired(&c.consumers, &paths.consumers);
    dup_ids(
        errs,
        &paths.explicit,
        "consumers",
        consumers
            .clone()
            .map(|(u, p)| (u.id.as_str(), u.username.as_deref(), p)),
    );
    dup(
        errs,
        "consumers",
        "username",
        consumers
            .clone()
            .filter_map(|(u, p)| Some((u.username.as_deref()?, p))),
    );
    dup(
        errs,
        "consumers",
        "custom_id",
        consumers
            .clone()
            .filter_map(|(u, p)| Some((u.custom_id.as_deref()?, p))),
    );
    // Kong gives a certificate without an id a random one: only given ids can collide.
    dup(
        errs,
        "certificates",
        "primary key",
        paired(&c.certificates, &paths.certificates)
            .filter(|(_, p)| paths.explicit.contains(*p))
            .map(|(u, p)| (u.id.as_str(), p)),
    );
    dup(
        errs,
        "snis",
        "name",
        paths.snis.iter().map(|(n, p)| (n.as_str(), p.as_str())),
    );
    dup(
        errs,
        "targets",
        "primary key",
        paired(&c.targets, &paths.targets).map(|(t, p)| (t.id.as_str(), p)),
    );
    dup(
        errs,
        "plugins",
        "primary key",
        c.plugins.iter().map(|p| (p.id.as_str(), p.path.as_str())),
    );
    let mut scopes: HashMap<(&str, &str, &str, &str, &str), &str> = HashMap::new();
    for p in &c.plugins {
        let key = (
            p.name.as_str(),
            p.instance_name.as_deref().unwrap_or(""),
            p.service.as_deref().unwrap_or(""),
            p.route.as_deref().unwrap_or(""),
            p.consumer.as_deref().unwrap_or(""),
        );
        if let Some(first) = scopes.insert(key, p.path.as_str()) {
            errs.push(
                p.path.clone(),
                format!(
                    "duplicate plugin '{}' for the same scope (also at {first})",
                    p.name
                ),
            );
        }
    }
    let mut cred_keys: BTreeMap<(&str, String), ()> = BTreeMap::new();
    for (cred, path) in paired(&c.credentials, &paths.credentials) {
        let natural = CREDENTIAL_KINDS
            .iter()
            .find(|(k, _)| *k == cred.kind)
            .map(|(_, f)| *f);
        // ACL groups repeat across consumers; only one consumer may own a key or username.
        if cred.kind == "acls" || cred.kind == "mtls_auth_credentials" {
            continue;
        }
        if let Some(Value::String(v)) = natural.and_then(|f| cred.fields.get(f)) {
            if cred_keys
                .insert((cred.kind.as_str(), v.clone()), ())
                .is_some()
            {
                // Never echo a secret (a key) back in an error.
                errs.push(
                    path,
                    format!(
                        "duplicate credential {} in {}",
                        natural.unwrap_or("key"),
                        cred.kind
                    ),
                );
            }
        }
    }
}

/// Convenience for the entity readers: a map of headers from a record of name → values.
pub(crate) fn header_matchers(o: &mut Obj<'_>, errs: &mut Errors) -> Vec<(String, Vec<String>)> {
    let path = o.field_path("headers");
    let Some(v) = o.get("headers") else {
        return Vec::new();
    };
    let Value::Object(map) = v else {
        errs.push(path, "expected a map of header name to values");
        return Vec::new();
    };
    let mut out = Vec::new();
    for (name, values) in map {
        let hpath = join(&path, name);
        if name.eq_ignore_ascii_case("host") {
            errs.push(
                hpath,
                "cannot contain 'host' header, which must be specified in the 'hosts' attribute",
            );
            continue;
        }
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            errs.push(hpath, "invalid header name");
            continue;
        }
        let vals: Vec<String> = match values {
            Value::String(s) => vec![s.clone()],
            Value::Array(items) => {
                let mut vals = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    match item.as_str() {
                        Some(s) => vals.push(s.to_string()),
                        None => errs.push(index(&hpath, i), "expected a string"),
                    }
                }
                vals
            }
            _ => {
                errs.push(hpath, "expected an array of strings");
                continue;
            }
        };
        for (i, val) in vals.iter().enumerate() {
            if let Some(re) = val.strip_prefix("~*") {
                // Compiled as the router compiles it: Kong lower-cases the regex source
                // (ASCII only, `kong/router/transform.lua` `get_expression`).
                if let Err(e) = regex::Regex::new(&format!("(?i){}", re.to_ascii_lowercase())) {
                    errs.push(index(&hpath, i), format!("invalid regex: {e}"));
                }
            }
        }
        out.push((name.to_ascii_lowercase(), vals));
    }
    out
}

/// RFC 9110 token characters.
pub(crate) fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Copies a record's fields into a map without the listed keys.
pub(crate) fn fields_without(map: &Map<String, Value>, skip: &[&str]) -> Map<String, Value> {
    map.iter()
        .filter(|(k, _)| !skip.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}
