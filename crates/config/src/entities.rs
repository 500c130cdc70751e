//! Readers for each entity kind, and the resolution of references between them.

use std::collections::HashMap;

use serde_json::Value;

use crate::model::*;
use crate::parse::{
    common, derive_id, fields_without, header_matchers, is_token_byte, read_id, read_ref, Parser,
    Scope,
};
use crate::reader::{index, Errors, Obj};
use crate::text;
use crate::tls;

/// Plugins whose schema has Kong's `consumer = typedefs.no_consumer` (Kong's own, and the
/// Enterprise authentication plugins bundled here).
const NO_CONSUMER: &[&str] = &[
    "acl",
    "basic-auth",
    "bot-detection",
    "cors",
    "hmac-auth",
    "jwt",
    "key-auth",
    "mtls-auth",
    "openid-connect",
];

/// Which entity a reference points at.
#[derive(Clone, Copy, Debug)]
pub(crate) enum RefKind {
    Service,
    Route,
    Upstream,
    Consumer,
    Certificate,
    CaCertificate,
}

impl RefKind {
    fn noun(self) -> &'static str {
        match self {
            RefKind::Service => "service",
            RefKind::Route => "route",
            RefKind::Upstream => "upstream",
            RefKind::Consumer => "consumer",
            RefKind::Certificate => "certificate",
            RefKind::CaCertificate => "ca_certificate",
        }
    }
}

/// Where a resolved reference is written.
#[derive(Clone, Debug)]
pub(crate) enum Slot {
    RouteService(usize),
    TargetUpstream(usize),
    PluginService(usize),
    PluginRoute(usize),
    PluginConsumer(usize),
    CredentialConsumer(usize),
    SniCertificate(String),
    ServiceCa(usize),
    ServiceClientCert(usize),
    UpstreamClientCert(usize),
    /// A nested entity naming its parent (by name or id), which Kong accepts: the reference
    /// must resolve to the parent itself.
    Parent {
        parent: Id,
        child: &'static str,
    },
}

/// A reference read from the file, resolved once every entity is known.
#[derive(Clone, Debug)]
pub(crate) struct Pending {
    kind: RefKind,
    reference: String,
    path: String,
    slot: Slot,
}

/// Lookup tables from names and ids to ids.
/// Endpoint keys and ids of one kind of entity, each mapped to the entity's id.
type KeysAndIds = (HashMap<String, Id>, HashMap<String, Id>);

pub(crate) struct Refs {
    /// Per kind: endpoint keys (names, usernames, custom ids) and ids, looked up in that
    /// order, as Kong's `find_entity` does (a name that equals another entity's id means the
    /// named entity).
    by_kind: HashMap<&'static str, KeysAndIds>,
}

impl Refs {
    pub(crate) fn build(c: &Config) -> Refs {
        let mut by_kind: HashMap<&'static str, KeysAndIds> = HashMap::new();
        let mut add = |kind: RefKind, keys: Vec<Option<&String>>, id: &Id| {
            let (names, ids) = by_kind.entry(kind.noun()).or_default();
            ids.insert(id.clone(), id.clone());
            for k in keys.into_iter().flatten() {
                names.entry(k.clone()).or_insert_with(|| id.clone());
            }
        };
        for s in &c.services {
            add(RefKind::Service, vec![s.name.as_ref()], &s.id);
        }
        for r in &c.routes {
            add(RefKind::Route, vec![r.name.as_ref()], &r.id);
        }
        for u in &c.upstreams {
            add(RefKind::Upstream, vec![Some(&u.name)], &u.id);
        }
        for u in &c.consumers {
            add(
                RefKind::Consumer,
                vec![u.username.as_ref(), u.custom_id.as_ref()],
                &u.id,
            );
        }
        for x in &c.certificates {
            add(RefKind::Certificate, vec![], &x.id);
        }
        for x in &c.ca_certificates {
            add(RefKind::CaCertificate, vec![], &x.id);
        }
        Refs { by_kind }
    }

    fn get(&self, kind: RefKind, reference: &str) -> Option<Id> {
        let (names, ids) = self.by_kind.get(kind.noun())?;
        names
            .get(reference)
            .or_else(|| ids.get(reference))
            .or_else(|| ids.get(&reference.to_ascii_lowercase()))
            .cloned()
    }

    pub(crate) fn consumer(&self, reference: &str) -> Option<Id> {
        self.get(RefKind::Consumer, reference)
    }
}

/// Writes one resolved reference into its slot, or records a dangling-reference error.
pub(crate) fn apply_pending(c: &mut Config, refs: &Refs, p: Pending, errs: &mut Errors) {
    let Some(id) = refs.get(p.kind, &p.reference) else {
        errs.push(
            p.path,
            format!("{} '{}' not found", p.kind.noun(), p.reference),
        );
        return;
    };
    match p.slot {
        Slot::RouteService(i) => c.routes[i].service = Some(id),
        Slot::TargetUpstream(i) => c.targets[i].upstream = id,
        Slot::PluginService(i) => c.plugins[i].service = Some(id),
        Slot::PluginRoute(i) => c.plugins[i].route = Some(id),
        Slot::PluginConsumer(i) => c.plugins[i].consumer = Some(id),
        Slot::CredentialConsumer(i) => c.credentials[i].consumer = id,
        Slot::SniCertificate(name) => {
            if let Some(cert) = c.certificates.iter_mut().find(|x| x.id == id) {
                cert.snis.push(name);
            }
        }
        Slot::ServiceCa(i) => c.services[i].ca_certificates.push(id),
        Slot::ServiceClientCert(i) => c.services[i].client_certificate = Some(id),
        Slot::UpstreamClientCert(i) => c.upstreams[i].client_certificate = Some(id),
        Slot::Parent { parent, child } => {
            if id != parent {
                errs.push(
                    p.path,
                    format!(
                        "a nested {child} cannot reference another {}",
                        p.kind.noun()
                    ),
                );
            }
        }
    }
}

impl Parser {
    fn defer(&mut self, kind: RefKind, reference: String, path: String, slot: Slot) {
        self.pending.push(Pending {
            kind,
            reference,
            path,
            slot,
        });
    }

    // === services ===

    pub(crate) fn service(&mut self, v: &Value, path: &str, errs: &mut Errors) {
        let Some(mut o) = Obj::open(v, path, errs) else {
            return;
        };
        let name = o.opt_str("name", errs);
        if let Some(n) = &name {
            if !text::is_valid_name(n) {
                errs.push(
                    o.field_path("name"),
                    "invalid value: must contain only letters, digits, '.', '-', '_' or '~'",
                );
            }
        }
        let key = name.clone().unwrap_or_else(|| path.to_string());
        let id = self.entity_id(&mut o, "service", &key, errs);
        let tags = common(&mut o, errs);

        let (mut protocol, mut host, mut port, mut spath) = (None, None, None, None);
        if let Some(url) = o.opt_str("url", errs) {
            match text::parse_url(&url) {
                Ok(u) => {
                    match Protocol::parse(&u.scheme) {
                        Some(p) => protocol = Some(p),
                        None => errs.push(
                            o.field_path("url"),
                            format!("unsupported scheme '{}'", u.scheme),
                        ),
                    }
                    host = Some(u.host);
                    port = u.port;
                    spath = u.path;
                }
                Err(e) => errs.push(o.field_path("url"), e),
            }
        }
        if let Some(p) = o.opt_str("protocol", errs) {
            match Protocol::parse(&p) {
                Some(p) => protocol = protocol.or(Some(p)),
                None => errs.push(
                    o.field_path("protocol"),
                    format!("expected one of: {}", Protocol::NAMES.join(", ")),
                ),
            }
        }
        let protocol = protocol.unwrap_or(Protocol::Http);
        if let Some(h) = o.opt_str("host", errs) {
            if !text::is_valid_host(&h) {
                errs.push(o.field_path("host"), format!("invalid hostname: {h}"));
            }
            host = host.or(Some(h));
        }
        let default_port = if protocol.is_tls() { 443 } else { 80 };
        let explicit_port = o.opt_int("port", 0, 65535, errs).map(|p| p as u16);
        let port = port.or(explicit_port).unwrap_or(default_port);
        if let Some(p) = o.opt_str("path", errs) {
            spath = spath.or(Some(p));
        }
        if let Some(p) = &spath {
            if let Err(e) = text::check_path(p) {
                errs.push(o.field_path("path"), e);
            }
        }
        if host.is_none() {
            errs.push(o.field_path("host"), "required field missing");
        }
        let retries = o.int_or("retries", 5, 0, 32767, errs) as u32;
        let t = |o: &mut Obj<'_>, k: &str, errs: &mut Errors| {
            o.int_or(k, 60000, 1, 2_147_483_646, errs) as u64
        };
        let connect_timeout = t(&mut o, "connect_timeout", errs);
        let write_timeout = t(&mut o, "write_timeout", errs);
        let read_timeout = t(&mut o, "read_timeout", errs);
        let tls_verify = o.opt_bool("tls_verify", errs);
        let tls_verify_depth = o.opt_int("tls_verify_depth", 0, 64, errs).map(|d| d as u8);
        let enabled = o.bool_or("enabled", true, errs);
        let index_of = self.config.services.len();
        let cas = o.str_array("ca_certificates", errs);
        // Kong's service entity checks: the upstream TLS fields must be null on a service
        // that does not speak TLS to its upstream (an http service with `tls_verify: true`
        // would otherwise read as verified while nothing is).
        let tls_upstream = matches!(
            protocol,
            Protocol::Https | Protocol::Wss | Protocol::Grpcs | Protocol::Tls
        );
        if !tls_upstream {
            let unset = [
                ("tls_verify", tls_verify.is_some()),
                ("tls_verify_depth", tls_verify_depth.is_some()),
                ("ca_certificates", !cas.is_empty()),
            ];
            for (field, set) in unset {
                if set {
                    errs.push(
                        o.field_path(field),
                        format!("value must be null ({field} can only be set when protocol is 'https', 'wss', 'grpcs' or 'tls')"),
                    );
                }
            }
        }
        for (i, ca) in cas.into_iter().enumerate() {
            let p = index(&o.field_path("ca_certificates"), i);
            self.defer(RefKind::CaCertificate, ca, p, Slot::ServiceCa(index_of));
        }
        if let Some(cc) = read_ref(&mut o, "client_certificate", errs) {
            if !tls_upstream {
                errs.push(o.field_path("client_certificate"), "client_certificate can only be set when protocol is 'https', 'wss', 'grpcs' or 'tls'");
            }
            let p = o.field_path("client_certificate");
            self.defer(
                RefKind::Certificate,
                cc,
                p,
                Slot::ServiceClientCert(index_of),
            );
        }
        let routes: Vec<(String, Value)> = o.array("routes", errs, |v, p, _| Some((p, v.clone())));
        let plugins: Vec<(String, Value)> =
            o.array("plugins", errs, |v, p, _| Some((p, v.clone())));
        o.finish(errs);

        self.paths.services.push(path.to_string());
        self.config.services.push(Service {
            id: id.clone(),
            name,
            protocol,
            host: host.unwrap_or_default(),
            port,
            path: spath,
            retries,
            connect_timeout,
            write_timeout,
            read_timeout,
            tls_verify,
            tls_verify_depth,
            ca_certificates: Vec::new(),
            client_certificate: None,
            enabled,
            tags,
        });
        for (p, v) in routes {
            self.route(&v, &p, Some(&id), errs);
        }
        for (p, v) in plugins {
            self.plugin(
                &v,
                &p,
                Scope {
                    service: Some(id.clone()),
                    ..Scope::default()
                },
                errs,
            );
        }
    }

    // === routes ===

    pub(crate) fn route(&mut self, v: &Value, path: &str, service: Option<&Id>, errs: &mut Errors) {
        let Some(mut o) = Obj::open(v, path, errs) else {
            return;
        };
        self.route_counter += 1;
        let name = o.opt_str("name", errs);
        if let Some(n) = &name {
            if !text::is_valid_name(n) {
                errs.push(
                    o.field_path("name"),
                    "invalid value: must contain only letters, digits, '.', '-', '_' or '~'",
                );
            }
        }
        let key = name.clone().unwrap_or_else(|| path.to_string());
        let id = self.entity_id(&mut o, "route", &key, errs);
        let tags = common(&mut o, errs);
        let index_of = self.config.routes.len();

        let mut svc = service.cloned();
        if let Some(r) = read_ref(&mut o, "service", errs) {
            if let Some(parent) = service {
                let slot = Slot::Parent {
                    parent: parent.clone(),
                    child: "route",
                };
                self.defer(RefKind::Service, r, o.field_path("service"), slot);
            } else {
                let p = o.field_path("service");
                self.defer(RefKind::Service, r, p, Slot::RouteService(index_of));
                svc = None;
            }
        }

        let protocols = read_protocols(&mut o, &["http", "https"], errs);
        if protocols.iter().any(|p| {
            matches!(
                p,
                Protocol::Tcp | Protocol::Tls | Protocol::Udp | Protocol::TlsPassthrough
            )
        }) {
            errs.push(
                o.field_path("protocols"),
                "stream routes (tcp, tls, tls_passthrough, udp) are not supported by this gateway",
            );
        }
        let grpc = protocols
            .iter()
            .any(|p| matches!(p, Protocol::Grpc | Protocol::Grpcs));
        let http = protocols.iter().any(|p| {
            matches!(
                p,
                Protocol::Http | Protocol::Https | Protocol::Ws | Protocol::Wss
            )
        });
        if grpc && http {
            errs.push(
                o.field_path("protocols"),
                "'grpc' and 'grpcs' cannot be mixed with 'http', 'https', 'ws' or 'wss'",
            );
        }

        let methods = o.str_array("methods", errs);
        for (i, m) in methods.iter().enumerate() {
            if m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase()) {
                errs.push(
                    index(&o.field_path("methods"), i),
                    "invalid value: must be an uppercase HTTP method",
                );
            }
        }
        let hosts = o.str_array("hosts", errs);
        for (i, h) in hosts.iter().enumerate() {
            if let Err(e) = text::check_route_host(h) {
                errs.push(index(&o.field_path("hosts"), i), e);
            }
        }
        let mut paths = o.str_array("paths", errs);
        if self.legacy_paths {
            for p in &mut paths {
                *p = text::migrate_legacy_path(p);
            }
        }
        for (i, p) in paths.iter().enumerate() {
            let fp = index(&o.field_path("paths"), i);
            if let Some(re) = p.strip_prefix('~') {
                if let Err(e) = regex::Regex::new(&format!("^{re}")) {
                    errs.push(fp, format!("invalid regex: '{re}' ({e})"));
                }
            } else if !p.starts_with('/') {
                errs.push(fp, "must start with \"/\" or \"~\"");
            } else if p.contains("//") {
                errs.push(fp, "must not have empty segments");
            } else if p.chars().any(|c| c.is_control() || c == '?' || c == '#') {
                // Kong 3.x would take such a path as a literal prefix no request can match
                // (and a route that never matches leaves its traffic to broader routes and
                // their plugins), so it is refused; a regex is the usual intent. (A space can
                // match: request paths are routed with `%20` decoded.)
                let hint = if p.chars().any(|c| "()[]^$*+?{}|\\".contains(c)) {
                    "; it looks like a regex: since _format_version 3.0 regex paths start with '~'"
                } else {
                    ""
                };
                errs.push(
                    fp,
                    format!("invalid path: contains a control character, '?' or '#'{hint}"),
                );
            } else if let Err(e) = text::check_route_prefix(p) {
                errs.push(fp, e);
            }
        }
        let headers = header_matchers(&mut o, errs);
        let snis = o.str_array("snis", errs);
        if !snis.is_empty() && !protocols.iter().any(|p| p.is_tls()) {
            errs.push(o.field_path("snis"), "'snis' can only be set when 'protocols' is 'grpcs', 'https', 'tls' or 'tls_passthrough'");
        }
        for (i, s) in snis.iter().enumerate() {
            if text::check_route_host(s).is_err() || s.contains(':') {
                errs.push(index(&o.field_path("snis"), i), "invalid SNI");
            }
        }
        if o.has("sources") || o.has("destinations") {
            errs.push(
                o.path().to_string(),
                "'sources' and 'destinations' apply only to stream routes, which are not supported",
            );
        }
        o.accept(&["sources", "destinations"]);
        if o.has("expression") {
            errs.push(o.field_path("expression"), "expression routes need router_flavor=expressions, which is not supported; use paths, hosts, methods and headers");
        }
        o.accept(&["expression", "priority"]);
        let redirect = o.int_or("https_redirect_status_code", 426, 100, 599, errs);
        if ![426, 301, 302, 307, 308].contains(&redirect) {
            errs.push(
                o.field_path("https_redirect_status_code"),
                "expected one of: 426, 301, 302, 307, 308",
            );
        }
        let strip_path = o.bool_or("strip_path", true, errs);
        let preserve_host = o.bool_or("preserve_host", false, errs);
        let regex_priority = o.int_or("regex_priority", 0, -(1 << 40), 1 << 40, errs);
        let path_handling = match o
            .one_of("path_handling", "v0", &["v0", "v1"], errs)
            .as_str()
        {
            "v1" => PathHandling::V1,
            _ => PathHandling::V0,
        };
        let request_buffering = o.bool_or("request_buffering", true, errs);
        let response_buffering = o.bool_or("response_buffering", true, errs);
        if http
            && methods.is_empty()
            && hosts.is_empty()
            && paths.is_empty()
            && headers.is_empty()
            && snis.is_empty()
        {
            errs.push(o.path().to_string(), "must set one of 'methods', 'hosts', 'headers', 'paths', 'snis' when 'protocols' is 'http' or 'https'");
        }
        let plugins: Vec<(String, Value)> =
            o.array("plugins", errs, |v, p, _| Some((p, v.clone())));
        o.finish(errs);

        self.paths.routes.push(path.to_string());
        self.config.routes.push(Route {
            id: id.clone(),
            name,
            service: svc,
            protocols,
            methods,
            hosts: hosts.into_iter().map(|h| h.to_ascii_lowercase()).collect(),
            paths,
            headers,
            snis: snis.into_iter().map(|h| h.to_ascii_lowercase()).collect(),
            https_redirect_status_code: redirect as u16,
            strip_path,
            preserve_host,
            regex_priority,
            path_handling,
            request_buffering,
            response_buffering,
            tags,
        });
        for (p, v) in plugins {
            self.plugin(
                &v,
                &p,
                Scope {
                    route: Some(id.clone()),
                    ..Scope::default()
                },
                errs,
            );
        }
    }

    // === upstreams and targets ===

    pub(crate) fn upstream(&mut self, v: &Value, path: &str, errs: &mut Errors) {
        let Some(mut o) = Obj::open(v, path, errs) else {
            return;
        };
        let name = o.req_str("name", errs).unwrap_or_default();
        if !name.is_empty()
            && (!text::is_valid_host(&name) || name.parse::<std::net::IpAddr>().is_ok())
        {
            errs.push(
                o.field_path("name"),
                "invalid value: must be a hostname, not an IP address or host:port",
            );
        }
        let id = self.entity_id(&mut o, "upstream", &name, errs);
        let tags = common(&mut o, errs);
        let algorithm = match o
            .one_of(
                "algorithm",
                "round-robin",
                &[
                    "round-robin",
                    "consistent-hashing",
                    "least-connections",
                    "latency",
                ],
                errs,
            )
            .as_str()
        {
            "consistent-hashing" => Algorithm::ConsistentHashing,
            "least-connections" => Algorithm::LeastConnections,
            "latency" => Algorithm::Latency,
            _ => Algorithm::RoundRobin,
        };
        let hash_given = o.has("hash_on");
        let mut hash_on = read_hash(&mut o, "hash_on", errs);
        // Kong's shorthand fields (upstreams.lua): least-connections and latency drop
        // `hash_on`; otherwise a `hash_on` other than `none` means consistent hashing whatever
        // `algorithm` says (configs rely on `hash_on` alone), and `none` means round-robin.
        let algorithm = match algorithm {
            Algorithm::LeastConnections | Algorithm::Latency => {
                hash_on = HashOn::None;
                algorithm
            }
            _ if !hash_given => algorithm,
            _ if hash_on == HashOn::None => Algorithm::RoundRobin,
            _ => Algorithm::ConsistentHashing,
        };
        let hash_fallback = read_hash(&mut o, "hash_fallback", errs);
        if hash_on == HashOn::None && hash_fallback != HashOn::None {
            errs.push(
                o.field_path("hash_fallback"),
                "must be 'none' when 'hash_on' is 'none'",
            );
        }
        if matches!(hash_fallback, HashOn::Cookie { .. }) {
            errs.push(
                o.field_path("hash_fallback"),
                "'cookie' cannot be used as a fallback",
            );
        }
        let slots = o.int_or("slots", 10000, 10, 65536, errs) as u32;
        let host_header = o.opt_str("host_header", errs);
        if let Some(h) = &host_header {
            if !text::is_valid_host(h) {
                errs.push(o.field_path("host_header"), "invalid hostname");
            }
        }
        let index_of = self.config.upstreams.len();
        if let Some(cc) = read_ref(&mut o, "client_certificate", errs) {
            let p = o.field_path("client_certificate");
            self.defer(
                RefKind::Certificate,
                cc,
                p,
                Slot::UpstreamClientCert(index_of),
            );
        }
        o.accept(&[
            "use_srv_name",
            "sticky_sessions_cookie",
            "sticky_sessions_cookie_path",
        ]);
        let healthchecks = match o.record("healthchecks", errs) {
            Some(h) => read_healthchecks(h, errs),
            None => default_healthchecks(),
        };
        let targets: Vec<(String, Value)> =
            o.array("targets", errs, |v, p, _| Some((p, v.clone())));
        o.finish(errs);
        self.paths.upstreams.push(path.to_string());
        self.config.upstreams.push(Upstream {
            id: id.clone(),
            name,
            algorithm,
            hash_on,
            hash_fallback,
            slots,
            host_header,
            client_certificate: None,
            healthchecks,
            tags,
        });
        for (p, v) in targets {
            self.target(&v, &p, Some(&id), errs);
        }
    }

    pub(crate) fn target(
        &mut self,
        v: &Value,
        path: &str,
        upstream: Option<&Id>,
        errs: &mut Errors,
    ) {
        let Some(mut o) = Obj::open(v, path, errs) else {
            return;
        };
        let target = o.req_str("target", errs).unwrap_or_default();
        let (host, port) = match text::split_host_port(&target) {
            Some((h, p)) if text::is_valid_host(&h) => (h, p.unwrap_or(8000)),
            _ => {
                if !target.is_empty() {
                    errs.push(
                        o.field_path("target"),
                        "invalid target; must be in format '<ip|hostname>:<port>'",
                    );
                }
                (String::new(), 8000)
            }
        };
        let weight = o.int_or("weight", 100, 0, 65535, errs) as u32;
        let index_of = self.config.targets.len();
        let mut up = upstream.cloned().unwrap_or_default();
        match (read_ref(&mut o, "upstream", errs), upstream) {
            (Some(r), None) => {
                let p = o.field_path("upstream");
                self.defer(
                    RefKind::Upstream,
                    r.clone(),
                    p,
                    Slot::TargetUpstream(index_of),
                );
                up = r;
            }
            (Some(r), Some(parent)) => {
                let slot = Slot::Parent {
                    parent: parent.clone(),
                    child: "target",
                };
                self.defer(RefKind::Upstream, r, o.field_path("upstream"), slot);
            }
            (None, None) => errs.push(o.field_path("upstream"), "required field missing"),
            (None, Some(_)) => {}
        }
        let key = format!("{up}|{host}:{port}");
        let id = read_id(&mut o, "target", &key, errs);
        let tags = common(&mut o, errs);
        o.finish(errs);
        self.paths.targets.push(path.to_string());
        self.config.targets.push(Target {
            id,
            upstream: up,
            host,
            port,
            weight,
            tags,
        });
    }

    // === certificates ===

    pub(crate) fn certificate(&mut self, v: &Value, path: &str, errs: &mut Errors) {
        let Some(mut o) = Obj::open(v, path, errs) else {
            return;
        };
        let cert = o.req_str("cert", errs).unwrap_or_default();
        let key = o.req_str("key", errs).unwrap_or_default();
        if !cert.is_empty() {
            if let Err(e) = tls::check_cert_chain(&cert) {
                errs.push(o.field_path("cert"), e);
            }
        }
        if !key.is_empty() {
            if let Err(e) = tls::check_private_key(&key) {
                errs.push(o.field_path("key"), e);
            }
        }
        let cert_alt = o.opt_str("cert_alt", errs);
        let key_alt = o.opt_str("key_alt", errs);
        if cert_alt.is_some() != key_alt.is_some() {
            errs.push(
                o.path().to_string(),
                "'cert_alt' and 'key_alt' must be set together",
            );
        }
        let id = self.entity_id(&mut o, "certificate", &tls::digest(&cert), errs);
        let tags = common(&mut o, errs);
        // Each name with its own path: entries that are not names are dropped, and the
        // paths of the rest must not shift.
        let named: Vec<(String, String)> = o.array("snis", errs, |v, p, errs| match v {
            Value::String(s) => Some((s.to_ascii_lowercase(), p)),
            Value::Object(m) => match m.get("name").and_then(Value::as_str) {
                Some(s) => Some((s.to_ascii_lowercase(), p)),
                None => {
                    errs.push(p, "expected an SNI name");
                    None
                }
            },
            _ => {
                errs.push(p, "expected an SNI name");
                None
            }
        });
        for (s, p) in &named {
            // `*` is Kong's catch-all SNI (its default certificate in DB-less files).
            if s != "*" && (text::check_route_host(s).is_err() || s.contains(':')) {
                errs.push(p.clone(), "invalid SNI name");
            }
        }
        o.finish(errs);
        self.paths.certificates.push(path.to_string());
        let mut snis = Vec::with_capacity(named.len());
        for (s, p) in named {
            self.paths.snis.push((s.clone(), p));
            snis.push(s);
        }
        self.config.certificates.push(Certificate {
            id,
            cert,
            key,
            cert_alt,
            key_alt,
            snis,
            tags,
        });
    }

    pub(crate) fn sni(&mut self, v: &Value, path: &str, errs: &mut Errors) {
        let Some(mut o) = Obj::open(v, path, errs) else {
            return;
        };
        let name = o
            .req_str("name", errs)
            .unwrap_or_default()
            .to_ascii_lowercase();
        if !name.is_empty()
            && name != "*"
            && (text::check_route_host(&name).is_err() || name.contains(':'))
        {
            errs.push(o.field_path("name"), "invalid SNI name");
        }
        o.accept(&["id"]);
        common(&mut o, errs);
        if !name.is_empty() {
            self.paths.snis.push((name.clone(), path.to_string()));
        }
        match read_ref(&mut o, "certificate", errs) {
            Some(c) => {
                let p = o.field_path("certificate");
                self.defer(RefKind::Certificate, c, p, Slot::SniCertificate(name));
            }
            None => errs.push(o.field_path("certificate"), "required field missing"),
        }
        o.finish(errs);
    }

    pub(crate) fn ca_certificate(&mut self, v: &Value, path: &str, errs: &mut Errors) {
        let Some(mut o) = Obj::open(v, path, errs) else {
            return;
        };
        let cert = o.req_str("cert", errs).unwrap_or_default();
        if !cert.is_empty() {
            if let Err(e) = tls::check_ca_cert(&cert) {
                errs.push(o.field_path("cert"), e);
            }
        }
        o.accept(&["cert_digest"]);
        let id = read_id(&mut o, "ca_certificate", &tls::digest(&cert), errs);
        let tags = common(&mut o, errs);
        o.finish(errs);
        self.config
            .ca_certificates
            .push(CaCertificate { id, cert, tags });
    }

    // === consumers and credentials ===

    pub(crate) fn consumer(&mut self, v: &Value, path: &str, errs: &mut Errors) {
        let Some(mut o) = Obj::open(v, path, errs) else {
            return;
        };
        let username = o.opt_str("username", errs);
        let custom_id = o.opt_str("custom_id", errs);
        if username.is_none() && custom_id.is_none() {
            errs.push(
                path,
                "at least one of these fields must be non-empty: 'custom_id', 'username'",
            );
        }
        let key = username
            .clone()
            .map(|u| format!("u:{u}"))
            .or_else(|| custom_id.clone().map(|c| format!("c:{c}")))
            .unwrap_or_else(|| path.to_string());
        let id = self.entity_id(&mut o, "consumer", &key, errs);
        let tags = common(&mut o, errs);
        let mut nested = Vec::new();
        for (kind, _) in crate::parse::CREDENTIAL_KINDS {
            for (p, v) in o.array(kind, errs, |v, p, _| Some((p, v.clone()))) {
                nested.push((*kind, p, v));
            }
        }
        let groups = o.array("groups", errs, |v, p, errs| match v {
            Value::String(s) => Some(s.clone()),
            Value::Object(m) => m
                .get("name")
                .and_then(Value::as_str)
                .map(str::to_string)
                .or_else(|| {
                    errs.push(p, "expected a consumer group name");
                    None
                }),
            _ => {
                errs.push(p, "expected a consumer group name");
                None
            }
        });
        let plugins: Vec<(String, Value)> =
            o.array("plugins", errs, |v, p, _| Some((p, v.clone())));
        o.finish(errs);
        self.paths.consumers.push(path.to_string());
        self.config.consumers.push(Consumer {
            id: id.clone(),
            username,
            custom_id,
            tags,
        });
        for g in groups {
            self.group_members.push((g, id.clone(), path.to_string()));
        }
        for (kind, p, v) in nested {
            self.credential(kind, &v, &p, Some(&id), errs);
        }
        for (p, v) in plugins {
            self.plugin(
                &v,
                &p,
                Scope {
                    consumer: Some(id.clone()),
                    ..Scope::default()
                },
                errs,
            );
        }
    }

    pub(crate) fn consumer_group(&mut self, v: &Value, path: &str, errs: &mut Errors) {
        let Some(mut o) = Obj::open(v, path, errs) else {
            return;
        };
        let name = o.req_str("name", errs).unwrap_or_default();
        o.accept(&["id"]);
        common(&mut o, errs);
        let members = o.array("consumers", errs, |v, p, errs| match v {
            Value::String(s) => Some((s.clone(), p)),
            Value::Object(m) => m
                .get("username")
                .or_else(|| m.get("id"))
                .or_else(|| m.get("custom_id"))
                .and_then(Value::as_str)
                .map(|s| (s.to_string(), p.clone()))
                .or_else(|| {
                    errs.push(p, "expected a consumer reference");
                    None
                }),
            _ => {
                errs.push(p, "expected a consumer reference");
                None
            }
        });
        // Plugins scoped to a consumer group (Kong Enterprise) are not applied, so a config
        // that sets them is refused rather than run without them.
        if matches!(o.get("plugins"), Some(v) if v.as_array().is_none_or(|a| !a.is_empty())) {
            errs.push(
                o.field_path("plugins"),
                "plugins scoped to a consumer group are not supported; scope them to consumers, routes or services",
            );
        }
        o.finish(errs);
        self.config.consumer_groups.entry(name.clone()).or_default();
        for (m, p) in members {
            self.group_members.push((name.clone(), m, p));
        }
    }

    pub(crate) fn credential(
        &mut self,
        kind: &str,
        v: &Value,
        path: &str,
        consumer: Option<&Id>,
        errs: &mut Errors,
    ) {
        let Some(mut o) = Obj::open(v, path, errs) else {
            return;
        };
        let Value::Object(map) = v else {
            return;
        };
        let index_of = self.config.credentials.len();
        let mut owner = consumer.cloned().unwrap_or_default();
        match (read_ref(&mut o, "consumer", errs), consumer) {
            (Some(r), None) => {
                let p = o.field_path("consumer");
                self.defer(
                    RefKind::Consumer,
                    r.clone(),
                    p,
                    Slot::CredentialConsumer(index_of),
                );
                owner = r;
            }
            (Some(r), Some(parent)) => {
                let slot = Slot::Parent {
                    parent: parent.clone(),
                    child: "credential",
                };
                self.defer(RefKind::Consumer, r, o.field_path("consumer"), slot);
            }
            (None, None) => errs.push(o.field_path("consumer"), "required field missing"),
            (None, Some(_)) => {}
        }
        let natural = crate::parse::CREDENTIAL_KINDS
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, f)| *f)
            .unwrap_or("id");
        let natural_value = map.get(natural).and_then(Value::as_str).unwrap_or("");
        // Ids derived from a secret must not reveal it: hash the pair with the kind.
        let key = format!("{kind}|{owner}|{}", crate::tls::digest(natural_value));
        let id = read_id(&mut o, kind, &key, errs);
        // Kong's credential schemas: the field names and types each kind has (what each
        // value means is the authentication plugin's to check), whether or not a plugin of
        // that kind is configured: a misspelt field is refused, not silently dropped.
        check_credential_fields(kind, &mut o, errs);
        o.finish(errs);
        let fields = fields_without(map, &["consumer", "id"]);
        self.paths.credentials.push(path.to_string());
        self.config.credentials.push(Credential {
            id,
            kind: kind.to_string(),
            consumer: owner,
            fields,
        });
    }

    // === plugins ===

    pub(crate) fn plugin(&mut self, v: &Value, path: &str, scope: Scope, errs: &mut Errors) {
        let Some(mut o) = Obj::open(v, path, errs) else {
            return;
        };
        let name = o.req_str("name", errs).unwrap_or_default();
        let instance_name = o.opt_str("instance_name", errs);
        let given_id = o.has("id");
        let id = read_id(&mut o, "plugin", path, errs);
        let tags = common(&mut o, errs);
        let config = match o.get("config") {
            None => Value::Object(Default::default()),
            Some(c @ Value::Object(_)) => c.clone(),
            Some(_) => {
                errs.push(o.field_path("config"), "expected a record");
                Value::Object(Default::default())
            }
        };
        let protocols = read_protocols(&mut o, &["grpc", "grpcs", "http", "https"], errs);
        let enabled = o.bool_or("enabled", true, errs);
        let index_of = self.config.plugins.len();
        // Kong's `typedefs.no_consumer`: these plugins cannot be scoped to a consumer (an
        // authentication plugin that only runs once its consumer is known would never run).
        let consumer_given = matches!(o.get("consumer"), Some(v) if !v.is_null());
        if NO_CONSUMER.contains(&name.as_str()) && (scope.consumer.is_some() || consumer_given) {
            errs.push(o.field_path("consumer"), "value must be null");
        }
        for (key, kind) in [
            ("service", RefKind::Service),
            ("route", RefKind::Route),
            ("consumer", RefKind::Consumer),
        ] {
            if let Some(r) = read_ref(&mut o, key, errs) {
                let parent = match kind {
                    RefKind::Service => &scope.service,
                    RefKind::Route => &scope.route,
                    _ => &scope.consumer,
                };
                if let Some(parent) = parent {
                    let slot = Slot::Parent {
                        parent: parent.clone(),
                        child: "plugin",
                    };
                    self.defer(kind, r, o.field_path(key), slot);
                    continue;
                }
                let slot = match kind {
                    RefKind::Service => Slot::PluginService(index_of),
                    RefKind::Route => Slot::PluginRoute(index_of),
                    _ => Slot::PluginConsumer(index_of),
                };
                let p = o.field_path(key);
                self.defer(kind, r, p, slot);
            }
        }
        o.null_only(
            "consumer_group",
            "plugins scoped to a consumer group are not supported; scope them to consumers, routes or services",
            errs,
        );
        o.null_only(
            "ordering",
            "dynamic plugin ordering is not supported; plugins run in Kong's priority order",
            errs,
        );
        o.accept(&["_config"]);
        o.finish(errs);
        self.config.plugins.push(Plugin {
            id,
            name,
            instance_name,
            service: scope.service,
            route: scope.route,
            consumer: scope.consumer,
            config,
            protocols,
            enabled,
            path: path.to_string(),
            tags,
        });
        self.plugin_keys
            .push(if given_id { None } else { Some(String::new()) });
    }

    pub(crate) fn vault(&mut self, v: &Value, path: &str, errs: &mut Errors) {
        let Some(mut o) = Obj::open(v, path, errs) else {
            return;
        };
        let name = o.req_str("name", errs).unwrap_or_default();
        if !name.is_empty() && name != "env" {
            errs.push(
                o.field_path("name"),
                format!("vault '{name}' is not available (supported: env)"),
            );
        }
        o.accept(&["id", "prefix", "description", "config"]);
        common(&mut o, errs);
        o.finish(errs);
    }
}

fn read_protocols(o: &mut Obj<'_>, default: &[&str], errs: &mut Errors) -> Vec<Protocol> {
    if !o.has("protocols") {
        let _ = o.get("protocols");
        return default.iter().filter_map(|p| Protocol::parse(p)).collect();
    }
    let path = o.field_path("protocols");
    let names = o.str_array("protocols", errs);
    let mut out = Vec::new();
    for (i, n) in names.iter().enumerate() {
        match Protocol::parse(n) {
            Some(p) => out.push(p),
            None => errs.push(
                index(&path, i),
                format!("expected one of: {}", Protocol::NAMES.join(", ")),
            ),
        }
    }
    if names.is_empty() {
        errs.push(path, "length must be at least 1");
    }
    out
}

fn read_hash(o: &mut Obj<'_>, key: &str, errs: &mut Errors) -> HashOn {
    let kind = o.one_of(
        key,
        "none",
        &[
            "none",
            "consumer",
            "ip",
            "header",
            "cookie",
            "path",
            "query_arg",
            "uri_capture",
        ],
        errs,
    );
    let need = |o: &mut Obj<'_>, field: &str, errs: &mut Errors| -> String {
        match o.opt_str(field, errs) {
            Some(v) => v,
            None => {
                errs.push(
                    o.field_path(field),
                    format!("required when '{key}' is set to '{kind}'"),
                );
                String::new()
            }
        }
    };
    let prefix = if key == "hash_on" {
        "hash_on"
    } else {
        "hash_fallback"
    };
    match kind.as_str() {
        "consumer" => HashOn::Consumer,
        "ip" => HashOn::Ip,
        "path" => HashOn::Path,
        "header" => {
            let h = need(o, &format!("{prefix}_header"), errs);
            if !h.bytes().all(is_token_byte) {
                errs.push(
                    o.field_path(&format!("{prefix}_header")),
                    "invalid header name",
                );
            }
            HashOn::Header(h.to_ascii_lowercase())
        }
        "cookie" => {
            let name = need(o, "hash_on_cookie", errs);
            let path = o
                .opt_str("hash_on_cookie_path", errs)
                .unwrap_or_else(|| "/".into());
            HashOn::Cookie { name, path }
        }
        "query_arg" => HashOn::QueryArg(need(o, &format!("{prefix}_query_arg"), errs)),
        "uri_capture" => HashOn::UriCapture(need(o, &format!("{prefix}_uri_capture"), errs)),
        _ => {
            // Accept (and ignore) the companion fields when hashing is off.
            o.accept(&[
                &format!("{prefix}_header"),
                &format!("{prefix}_query_arg"),
                &format!("{prefix}_uri_capture"),
            ]);
            if key == "hash_on" {
                o.accept(&["hash_on_cookie", "hash_on_cookie_path"]);
            }
            HashOn::None
        }
    }
}

/// Kong's health-check defaults.
pub fn default_healthchecks() -> Healthchecks {
    Healthchecks {
        active: ActiveHealthcheck {
            kind: "http".into(),
            timeout: 1.0,
            concurrency: 10,
            http_path: "/".into(),
            https_sni: None,
            https_verify_certificate: true,
            headers: Vec::new(),
            healthy_interval: 0.0,
            healthy_http_statuses: vec![200, 302],
            healthy_successes: 0,
            unhealthy_interval: 0.0,
            unhealthy_http_statuses: vec![429, 404, 500, 501, 502, 503, 504, 505],
            unhealthy_tcp_failures: 0,
            unhealthy_timeouts: 0,
            unhealthy_http_failures: 0,
        },
        passive: PassiveHealthcheck {
            healthy_http_statuses: vec![
                200, 201, 202, 203, 204, 205, 206, 207, 208, 226, 300, 301, 302, 303, 304, 305,
                306, 307, 308,
            ],
            healthy_successes: 0,
            unhealthy_http_statuses: vec![429, 500, 503],
            unhealthy_tcp_failures: 0,
            unhealthy_timeouts: 0,
            unhealthy_http_failures: 0,
        },
        threshold: 0.0,
    }
}

fn read_healthchecks(mut o: Obj<'_>, errs: &mut Errors) -> Healthchecks {
    let mut h = default_healthchecks();
    if let Some(t) = o.opt_f64_between("threshold", 0.0, 100.0, errs) {
        h.threshold = t;
    }
    if let Some(mut a) = o.record("active", errs) {
        let act = &mut h.active;
        act.kind = a.one_of(
            "type",
            "http",
            &["tcp", "http", "https", "grpc", "grpcs"],
            errs,
        );
        if let Some(t) = a.opt_f64_between("timeout", 0.0, 65535.0, errs) {
            act.timeout = t;
        }
        act.concurrency = a.int_or("concurrency", 10, 1, 2_147_483_648, errs) as u32;
        if let Some(p) = a.opt_str("http_path", errs) {
            if let Err(e) = text::check_path(&p) {
                errs.push(a.field_path("http_path"), e);
            }
            act.http_path = p;
        }
        act.https_sni = a.opt_str("https_sni", errs);
        act.https_verify_certificate = a.bool_or("https_verify_certificate", true, errs);
        if let Some(Value::Object(m)) = a.get("headers") {
            for (k, v) in m {
                let vals: Vec<String> = match v {
                    Value::String(s) => vec![s.clone()],
                    Value::Array(xs) => xs
                        .iter()
                        .filter_map(|x| x.as_str().map(str::to_string))
                        .collect(),
                    _ => Vec::new(),
                };
                for val in vals {
                    act.headers.push((k.clone(), val));
                }
            }
        }
        if let Some(mut hy) = a.record("healthy", errs) {
            if let Some(i) = hy.opt_f64_between("interval", 0.0, 65535.0, errs) {
                act.healthy_interval = i;
            }
            if hy.has("http_statuses") {
                act.healthy_http_statuses = hy
                    .int_array("http_statuses", 100, 999, errs)
                    .into_iter()
                    .map(|s| s as u16)
                    .collect();
            }
            act.healthy_successes = hy.int_or("successes", 0, 0, 255, errs) as u32;
            hy.finish(errs);
        }
        if let Some(mut un) = a.record("unhealthy", errs) {
            if let Some(i) = un.opt_f64_between("interval", 0.0, 65535.0, errs) {
                act.unhealthy_interval = i;
            }
            if un.has("http_statuses") {
                act.unhealthy_http_statuses = un
                    .int_array("http_statuses", 100, 999, errs)
                    .into_iter()
                    .map(|s| s as u16)
                    .collect();
            }
            act.unhealthy_tcp_failures = un.int_or("tcp_failures", 0, 0, 255, errs) as u32;
            act.unhealthy_timeouts = un.int_or("timeouts", 0, 0, 255, errs) as u32;
            act.unhealthy_http_failures = un.int_or("http_failures", 0, 0, 255, errs) as u32;
            un.finish(errs);
        }
        a.finish(errs);
    }
    if let Some(mut p) = o.record("passive", errs) {
        let pas = &mut h.passive;
        p.one_of(
            "type",
            "http",
            &["tcp", "http", "https", "grpc", "grpcs"],
            errs,
        );
        if let Some(mut hy) = p.record("healthy", errs) {
            if hy.has("http_statuses") {
                pas.healthy_http_statuses = hy
                    .int_array("http_statuses", 100, 999, errs)
                    .into_iter()
                    .map(|s| s as u16)
                    .collect();
            }
            pas.healthy_successes = hy.int_or("successes", 0, 0, 255, errs) as u32;
            hy.finish(errs);
        }
        if let Some(mut un) = p.record("unhealthy", errs) {
            if un.has("http_statuses") {
                pas.unhealthy_http_statuses = un
                    .int_array("http_statuses", 100, 999, errs)
                    .into_iter()
                    .map(|s| s as u16)
                    .collect();
            }
            pas.unhealthy_tcp_failures = un.int_or("tcp_failures", 0, 0, 255, errs) as u32;
            pas.unhealthy_timeouts = un.int_or("timeouts", 0, 0, 255, errs) as u32;
            pas.unhealthy_http_failures = un.int_or("http_failures", 0, 0, 255, errs) as u32;
            un.finish(errs);
        }
        p.finish(errs);
    }
    o.finish(errs);
    h
}

/// Exposed so other crates can derive ids the same way (e.g. for generated entities).
pub fn stable_id(kind: &str, key: &str) -> Id {
    derive_id(kind, key)
}

/// A credential field's type in Kong's schema.
#[derive(Clone, Copy)]
enum FieldType {
    Str,
    ReqStr,
    Int,
    Bool,
    StrArray,
    /// A reference to another entity (its id or name, or `{id: ...}`).
    Ref,
}

/// The fields (besides `id` and `consumer`) of each credential kind, after Kong's schemas.
fn credential_fields(kind: &str) -> &'static [(&'static str, FieldType)] {
    use FieldType::*;
    match kind {
        "keyauth_credentials" => &[("key", Str), ("ttl", Int)],
        "basicauth_credentials" => &[("username", ReqStr), ("password", ReqStr)],
        "hmacauth_credentials" => &[("username", ReqStr), ("secret", Str)],
        "jwt_secrets" => &[
            ("key", Str),
            ("secret", Str),
            ("algorithm", Str),
            ("rsa_public_key", Str),
        ],
        "acls" => &[("group", ReqStr)],
        "mtls_auth_credentials" => &[("subject_name", ReqStr), ("ca_certificate", Ref)],
        "oauth2_credentials" => &[
            ("name", ReqStr),
            ("client_id", Str),
            ("client_secret", Str),
            ("hash_secret", Bool),
            ("redirect_uris", StrArray),
            ("client_type", Str),
        ],
        _ => &[],
    }
}

fn check_credential_fields(kind: &str, o: &mut Obj<'_>, errs: &mut Errors) {
    // Every entity's bookkeeping fields (tags, time stamps, `_comment`, `_ignore`).
    let _ = common(o, errs);
    for (field, ty) in credential_fields(kind) {
        match ty {
            FieldType::Str => {
                let _ = o.opt_str(field, errs);
            }
            FieldType::ReqStr => {
                let _ = o.req_str(field, errs);
            }
            FieldType::Int => {
                let _ = o.opt_int(field, 0, i64::MAX, errs);
            }
            FieldType::Bool => {
                let _ = o.opt_bool(field, errs);
            }
            FieldType::StrArray => {
                let _ = o.str_array(field, errs);
            }
            FieldType::Ref => {
                let _ = read_ref(o, field, errs);
            }
        }
    }
}
