use super::*;

fn no_env(_: &str) -> Option<String> {
    None
}

fn ok(text: &str) -> Config {
    match parse_str(text, &no_env) {
        Ok(c) => c,
        Err(e) => panic!("unexpected errors: {e:#?}"),
    }
}

fn errors(text: &str) -> Vec<String> {
    match parse_str(text, &no_env) {
        Ok(_) => panic!("expected errors"),
        Err(e) => e.iter().map(ToString::to_string).collect(),
    }
}

/// Every line of `want` is among `errs`.
fn assert_has_all(errs: &[String], want: &[&str]) {
    for w in want {
        assert!(errs.iter().any(|e| e == w), "missing {w:?} in {errs:#?}");
    }
}

#[test]
fn minimal_service_with_defaults() {
    let c = ok(r#"
_format_version: "3.0"
services:
  - name: echo
    url: http://127.0.0.1:9000/base
    routes:
      - name: r1
        paths: ["/echo"]
"#);
    let s = &c.services[0];
    assert_eq!(s.protocol, Protocol::Http);
    assert_eq!(s.host, "127.0.0.1");
    assert_eq!(s.port, 9000);
    assert_eq!(s.path.as_deref(), Some("/base"));
    assert_eq!(s.retries, 5);
    assert_eq!(s.connect_timeout, 60000);
    assert_eq!(s.read_timeout, 60000);
    assert_eq!(s.write_timeout, 60000);
    let r = &c.routes[0];
    assert_eq!(r.service.as_deref(), Some(s.id.as_str()));
    assert!(r.strip_path);
    assert!(!r.preserve_host);
    assert_eq!(r.https_redirect_status_code, 426);
    assert_eq!(r.protocols, vec![Protocol::Http, Protocol::Https]);
    assert_eq!(r.path_handling, PathHandling::V0);
}

#[test]
fn https_url_defaults_to_443() {
    let c = ok("_format_version: '3.0'\nservices: [{name: a, url: 'https://example.com'}]\n");
    assert_eq!(c.services[0].port, 443);
    assert_eq!(c.services[0].protocol, Protocol::Https);
}

#[test]
fn ids_are_deterministic_and_given_ids_kept() {
    let text = r#"
_format_version: "3.0"
services:
  - name: a
    host: example.com
  - id: 5f0e6a52-3c3e-4c4d-9c1c-27a3c0e6f6a1
    name: b
    host: example.com
"#;
    let one = ok(text);
    let two = ok(text);
    assert_eq!(one.services[0].id, two.services[0].id);
    assert_eq!(one.services[1].id, "5f0e6a52-3c3e-4c4d-9c1c-27a3c0e6f6a1");
    assert_ne!(one.services[0].id, one.services[1].id);
}

#[test]
fn top_level_route_references_service_by_name() {
    let c = ok(r#"
_format_version: "3.0"
services: [{name: svc, host: example.com}]
routes:
  - name: r
    service: svc
    paths: [/x]
  - name: r2
    service: {name: svc}
    hosts: [example.com]
"#);
    assert_eq!(c.routes[0].service, Some(c.services[0].id.clone()));
    assert_eq!(c.routes[1].service, Some(c.services[0].id.clone()));
}

/// Kong's `find_entity` looks a reference up by endpoint key (name) before by id: a service
/// named with another service's id is the one meant.
#[test]
fn a_reference_matches_a_name_before_an_id() {
    let c = ok(r#"
_format_version: "3.0"
services:
  - {name: a, id: 11111111-1111-4111-8111-111111111111, host: a.example.com}
  - {name: "11111111-1111-4111-8111-111111111111", host: b.example.com}
routes:
  - name: r
    service: "11111111-1111-4111-8111-111111111111"
    paths: [/x]
  - name: r2
    service: a
    paths: [/y]
"#);
    assert_eq!(c.routes[0].service, Some(c.services[1].id.clone()));
    assert_eq!(c.routes[1].service, Some(c.services[0].id.clone()));
}

#[test]
fn every_error_is_reported_with_its_path() {
    let e = errors(
        r#"
_format_version: "3.0"
services:
  - name: svc
    host: example.com
    port: 70000
    retries: "many"
    bogus: 1
    routes:
      - paths: ["/ok", "nope", "~/(unclosed"]
      - name: empty
      - name: r3
        hosts: ["a.*.com"]
        methods: [get]
        paths: [/a]
routes:
  - name: dangling
    service: missing
    paths: [/d]
"#,
    );
    let want = [
        "services[0].port: value should be between 0 and 65535",
        "services[0].retries: expected an integer, got a string",
        "services[0].bogus: unknown field",
        "services[0].routes[0].paths[1]: must start with \"/\" or \"~\"",
        "services[0].routes[2].hosts[0]: wildcard must be leftmost or rightmost character",
        "services[0].routes[2].methods[0]: invalid value: must be an uppercase HTTP method",
        "routes[0].service: service 'missing' not found",
    ];
    assert_has_all(&e, &want);
    assert!(e
        .iter()
        .any(|x| x.starts_with("services[0].routes[0].paths[2]: invalid regex")));
    assert!(e
        .iter()
        .any(|x| x.starts_with("services[0].routes[1]: must set one of")));
}

#[test]
fn wildcard_hosts_accepted() {
    let c = ok(r#"
_format_version: "3.0"
services: [{name: s, host: h, routes: [{name: r, hosts: ["*.example.com", "example.*", "api.example.com:8000"]}]}]
"#);
    assert_eq!(c.routes[0].hosts.len(), 3);
}

#[test]
fn duplicates_are_refused() {
    let e = errors(
        r#"
_format_version: "3.0"
services:
  - {name: s, host: h}
  - {name: s, host: h}
consumers:
  - username: alice
  - username: alice
"#,
    );
    // Kong's message; the ids derived from the repeated names are not reported twice.
    assert_eq!(
        e,
        vec![
            "services[1]: uniqueness violation: 'services' entity with name set to 's' already declared",
            "consumers[1]: uniqueness violation: 'consumers' entity with username set to 'alice' already declared",
        ],
        "{e:?}"
    );
}

#[test]
fn upstreams_and_targets() {
    let c = ok(r#"
_format_version: "3.0"
upstreams:
  - name: backend
    algorithm: consistent-hashing
    hash_on: header
    hash_on_header: X-User
    healthchecks:
      active:
        http_path: /health
        healthy: {interval: 1, successes: 2}
        unhealthy: {interval: 1, http_failures: 2}
    targets:
      - target: 127.0.0.1:9001
        weight: 50
targets:
  - target: 127.0.0.1
    upstream: backend
"#);
    let u = &c.upstreams[0];
    assert_eq!(u.algorithm, Algorithm::ConsistentHashing);
    assert_eq!(u.hash_on, HashOn::Header("x-user".into()));
    assert_eq!(u.healthchecks.active.http_path, "/health");
    assert_eq!(u.healthchecks.active.healthy_successes, 2);
    assert_eq!(u.healthchecks.active.unhealthy_http_statuses[0], 429);
    assert_eq!(c.targets.len(), 2);
    assert_eq!(c.targets[0].weight, 50);
    assert_eq!(c.targets[1].port, 8000);
    assert_eq!(c.targets[1].upstream, u.id);
}

/// Kong's upstream shorthands: `hash_on` alone means consistent hashing, `hash_on: none`
/// means round-robin, and least-connections drops `hash_on`.
#[test]
fn hash_on_sets_the_algorithm_as_in_kong() {
    let c = ok(r#"
_format_version: "3.0"
upstreams:
  - {name: a, hash_on: header, hash_on_header: X-User}
  - {name: b, algorithm: round-robin, hash_on: ip}
  - {name: c, algorithm: consistent-hashing, hash_on: none}
  - {name: d, algorithm: least-connections, hash_on: ip}
  - {name: e, algorithm: consistent-hashing}
  - {name: f}
"#);
    let got: Vec<(&Algorithm, &HashOn)> = c
        .upstreams
        .iter()
        .map(|u| (&u.algorithm, &u.hash_on))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                &Algorithm::ConsistentHashing,
                &HashOn::Header("x-user".into())
            ),
            (&Algorithm::ConsistentHashing, &HashOn::Ip),
            (&Algorithm::RoundRobin, &HashOn::None),
            (&Algorithm::LeastConnections, &HashOn::None),
            (&Algorithm::ConsistentHashing, &HashOn::None),
            (&Algorithm::RoundRobin, &HashOn::None),
        ]
    );
}

#[test]
fn vault_references_resolve_from_env() {
    let env = |name: &str| (name == "UPSTREAM_HOST").then(|| "10.0.0.1".to_string());
    let c = parse_str(
        "_format_version: '3.0'\nservices: [{name: s, host: '{vault://env/upstream-host}'}]\n",
        &env,
    )
    .unwrap();
    assert_eq!(c.services[0].host, "10.0.0.1");
    let e = parse_str(
        "_format_version: '3.0'\nservices: [{name: s, host: '{vault://env/absent}'}]\n",
        &env,
    )
    .unwrap_err();
    assert_eq!(e[0].path, "services[0].host");
}

#[test]
fn plugins_at_every_scope() {
    let c = ok(r#"
_format_version: "3.0"
services:
  - name: s
    host: h
    plugins: [{name: request-termination}]
    routes:
      - name: r
        paths: [/]
        plugins: [{name: request-termination, config: {status_code: 403}}]
consumers:
  - username: bob
    plugins: [{name: request-termination}]
plugins:
  - name: request-termination
  - name: request-termination
    route: r
    instance_name: second
"#);
    assert_eq!(c.plugins.len(), 5);
    let scoped = |f: &dyn Fn(&Plugin) -> bool| c.plugins.iter().filter(|p| f(p)).count();
    assert_eq!(scoped(&|p| p.service.is_some()), 1);
    assert_eq!(scoped(&|p| p.route.is_some()), 2);
    assert_eq!(scoped(&|p| p.consumer.is_some()), 1);
    assert_eq!(
        scoped(&|p| p.service.is_none() && p.route.is_none() && p.consumer.is_none()),
        1
    );
    let ids: std::collections::HashSet<_> = c.plugins.iter().map(|p| p.id.clone()).collect();
    assert_eq!(ids.len(), 5);
}

#[test]
fn json_input_and_bad_syntax() {
    let c = ok(r#"{"_format_version":"3.0","services":[{"name":"s","host":"h"}]}"#);
    assert_eq!(c.services.len(), 1);
    let e = errors("_format_version: '3.0'\nservices: [\n");
    assert!(e[0].starts_with("invalid YAML"));
    let e = errors("services: []\n");
    assert_eq!(e, vec!["_format_version: required field missing"]);
}

#[test]
fn consumers_with_credentials() {
    let c = ok(r#"
_format_version: "3.0"
consumers:
  - username: alice
    custom_id: a-1
    keyauth_credentials: [{key: secret-key}]
    acls: [{group: admins}]
keyauth_credentials:
  - consumer: alice
    key: other-key
"#);
    assert_eq!(c.credentials.len(), 3);
    assert!(c
        .credentials
        .iter()
        .all(|k| k.consumer == c.consumers[0].id));
    // Ids derived from keys must not contain the key.
    assert!(c.credentials.iter().all(|k| !k.id.contains("secret")));
}

#[test]
fn bad_certificate_is_refused_without_echoing_the_key() {
    let e = errors(
        r#"
_format_version: "3.0"
certificates:
  - cert: "not a pem"
    key: "-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n"
    snis: [example.com]
"#,
    );
    assert!(
        e.iter()
            .any(|x| x.starts_with("certificates[0].cert: invalid certificate")),
        "{e:?}"
    );
    assert!(e.iter().all(|x| !x.contains("c2VjcmV0")));
}

#[test]
fn consumer_group_scoping_and_plugin_ordering_are_refused_not_ignored() {
    // Ignoring them would run a group-only plugin for everyone, or drop a group's limits.
    let e = errors(
        r#"
_format_version: "3.0"
consumer_groups:
  - name: gold
  - name: free
    plugins:
      - name: rate-limiting
        config: {minute: 5}
plugins:
  - name: request-termination
    consumer_group: gold
    config: {status_code: 418}
  - name: cors
    ordering: {before: {access: [key-auth]}}
"#,
    );
    assert!(
        e.iter().any(|m| m.starts_with(
            "consumer_groups[1].plugins: plugins scoped to a consumer group are not supported"
        )),
        "{e:?}"
    );
    assert!(
        e.iter().any(|m| m.starts_with(
            "plugins[0].consumer_group: plugins scoped to a consumer group are not supported"
        )),
        "{e:?}"
    );
    assert!(
        e.iter().any(|m| m.starts_with("plugins[1].ordering: dynamic plugin ordering is not supported")),
        "{e:?}"
    );
    assert_eq!(e.len(), 3, "{e:?}");
    // decK dumps carry them as nulls or empty lists: accepted.
    ok(r#"
_format_version: "3.0"
consumer_groups:
  - name: gold
    plugins: []
plugins:
  - name: cors
    consumer_group: null
    ordering: null
"#);
}

#[test]
fn legacy_format_paths_are_migrated_as_kong_migrates_them() {
    let c = ok(r#"
_format_version: "2.1"
services:
  - name: s
    url: http://127.0.0.1:9
    routes:
      - name: r
        paths: ["/users/\\d+$", "/api/v1/(?<id>[0-9]+)", "/a//b", "/plain/x.y-z_~", "/enc%2Fx%41(y)"]
"#);
    assert_eq!(
        c.routes[0].paths,
        vec![
            "~/users/\\d+$",
            "~/api/v1/(?<id>[0-9]+)",
            "/a/b",
            "/plain/x.y-z_~",
            "~/enc%2FxA(y)",
        ]
    );
    // In 3.0 the same regex without '~' is refused, with the reason.
    let e = errors(
        r#"
_format_version: "3.0"
services:
  - name: s
    url: http://127.0.0.1:9
    routes:
      - name: r
        paths: ["/api/v1/(?<id>[0-9]+)"]
"#,
    );
    assert!(
        e[0].starts_with("services[0].routes[0].paths[0]: invalid path")
            && e[0].contains("regex paths start with '~'"),
        "{e:?}"
    );
}

#[test]
fn legacy_regex_percent_triplets_keep_reserved_and_escape_metacharacters() {
    use crate::text::migrate_legacy_path as m;
    assert_eq!(m("/a%2e(b)"), "~/a\\.(b)");
    assert_eq!(m("/a%3f(b)"), "~/a%3F(b)");
    assert_eq!(m("/x%7c(y)"), "~/x\\|(y)");
    assert_eq!(m("/%zz(y)"), "~/%zz(y)");
    assert_eq!(m("/ü(y)"), "~/ü(y)");
}

#[test]
fn route_prefixes_must_be_in_kongs_normal_form() {
    use crate::text::check_route_prefix as c;
    for ok in [
        "/",
        "/a",
        "/a/",
        "/a/b.c",
        "/v1.2/x",
        "/a%2Fb",
        "/x..y",
        "/.well-known/x",
    ] {
        assert_eq!(c(ok), Ok(()), "{ok}");
    }
    for (bad, want) in [
        ("/a/./b", "consider use '/a/b'"),
        ("/a/../b", "consider use '/b'"),
        ("/a/.", "consider use '/a/'"),
        ("/a/..", "consider use '/'"),
        ("/files/%7Euser", "consider use '/files/~user'"),
        ("/a%2fb", "consider use '/a%2Fb'"),
        ("/some%2words", "invalid url-encoded value: '%2w'"),
        ("/end%", "invalid url-encoded value: '%'"),
    ] {
        let e = c(bad).unwrap_err();
        assert!(e.contains(want), "{bad}: {e}");
    }
}

#[test]
fn url_query_and_fragment_are_dropped_as_kong_does() {
    let c = ok(
        "_format_version: '3.0'\nservices: [{name: a, url: 'http://example.com:81/v1?key=x#f'}]\n",
    );
    let s = &c.services[0];
    assert_eq!((s.host.as_str(), s.port), ("example.com", 81));
    assert_eq!(s.path.as_deref(), Some("/v1"));
}

#[test]
fn upstream_tls_fields_are_refused_on_plain_services() {
    let errs = errors(
        r#"
_format_version: "3.0"
services:
  - name: plain
    url: http://example.com
    tls_verify: true
    tls_verify_depth: 2
    ca_certificates: [00000000-0000-0000-0000-000000000001]
"#,
    );
    for field in ["tls_verify", "tls_verify_depth", "ca_certificates"] {
        assert!(
            errs.iter()
                .any(|e| e.starts_with(&format!("services[0].{field}: value must be null"))),
            "{field}: {errs:?}"
        );
    }
    // Null is what Kong's own exports carry; https services take the fields.
    ok("_format_version: '3.0'\nservices: [{name: a, url: 'http://e.com', tls_verify: null, ca_certificates: null}]\n");
    ok("_format_version: '3.0'\nservices: [{name: a, url: 'https://e.com', tls_verify: false, tls_verify_depth: 3}]\n");
    ok("_format_version: '3.0'\nservices: [{name: a, protocol: grpcs, host: e.com, tls_verify: true}]\n");
}

#[test]
fn credential_fields_follow_kongs_schemas_with_or_without_their_plugin() {
    let errs = errors(
        r#"
_format_version: "3.0"
consumers:
  - username: alice
    keyauth_credentials: [{key: abc, bogus: 1}]
    basicauth_credentials: [{username: a}]
    jwt_secrets: [{key: k, secret: s, algorithm: HS256, nope: 1}]
    acls: [{group: 5}]
keyauth_credentials:
  - {consumer: alice, key: k2, ttl: "soon"}
"#,
    );
    let want = [
        "consumers[0].keyauth_credentials[0].bogus: unknown field",
        "consumers[0].basicauth_credentials[0].password: required field missing",
        "consumers[0].jwt_secrets[0].nope: unknown field",
        "consumers[0].acls[0].group: expected a string, got a number",
        "keyauth_credentials[0].ttl: expected an integer, got a string",
    ];
    assert_has_all(&errs, &want);
    assert_eq!(errs.len(), want.len(), "{errs:?}");
    // What Kong's exports carry loads, and so do the declarative format's `_comment` and
    // `_ignore` on any entity, nested or top-level.
    ok(r#"
_format_version: "3.0"
keyauth_credentials:
  - {consumer: bob, key: top, _comment: "rotated 2026-11", _ignore: [{x: 1}]}
consumers:
  - username: bob
    keyauth_credentials: [{key: abc, tags: [t], created_at: 1700000000, ttl: null, _comment: "ci"}]
    hmacauth_credentials: [{username: bob, secret: s}]
    oauth2_credentials:
      - {name: app, client_id: id, client_secret: s, hash_secret: true, redirect_uris: ["https://a.example/cb"]}
"#);
}

#[test]
fn nested_entities_may_name_their_own_parent_as_kong_allows() {
    // Kong's flatten_spec: "accepts as a nested entity by id / by username".
    let c = ok(r#"
_format_version: "3.0"
services:
  - name: svc
    host: example.com
    routes:
      - name: r
        paths: [/r]
        service: svc
        plugins:
          - name: request-termination
            route: r
            service: {name: svc}
upstreams:
  - name: up
    targets:
      - target: 10.0.0.1:80
        upstream: up
consumers:
  - username: kd1234
    basicauth_credentials:
      - consumer: kd1234
        username: kd1234
        password: "12341234"
  - id: 5f0e6a52-3c3e-4c4d-9c1c-27a3c0e6f6a1
    username: other
    keyauth_credentials:
      - consumer: {id: 5f0e6a52-3c3e-4c4d-9c1c-27a3c0e6f6a1}
        key: k
"#);
    assert_eq!(
        c.routes[0].service.as_deref(),
        Some(c.services[0].id.as_str())
    );
    assert_eq!(c.credentials[0].consumer, c.consumers[0].id);
    assert_eq!(c.credentials[1].consumer, c.consumers[1].id);
    assert_eq!(c.targets[0].upstream, c.upstreams[0].id);
    // Naming another entity is still refused, and so is naming one that does not exist.
    let errs = errors(
        r#"
_format_version: "3.0"
services:
  - {name: a, host: example.com}
  - name: b
    host: example.com
    routes: [{name: r, paths: [/r], service: a}]
consumers:
  - username: x
  - username: y
    keyauth_credentials: [{consumer: x, key: k}, {consumer: nobody, key: k2}]
"#,
    );
    // A plugin scoped to a route and to a service the route does not belong to would never run.
    let errs2 = errors(
        r#"
_format_version: "3.0"
services:
  - {name: a, host: example.com}
  - name: b
    host: example.com
    routes:
      - name: rb
        paths: [/rb]
        plugins: [{name: key-auth, service: a}]
plugins:
  - {name: cors, route: rb, service: b}
  - {name: acl, route: rb, service: a, config: {allow: [x]}}
"#,
    );
    assert_eq!(
        errs2,
        vec![
            "services[1].routes[0].plugins[0].service: the plugin's route 'rb' does not belong to this service: a plugin scoped to both would never run",
            "plugins[1].service: the plugin's route 'rb' does not belong to this service: a plugin scoped to both would never run",
        ],
        "{errs2:?}"
    );
    let want = [
        "services[1].routes[0].service: a nested route cannot reference another service",
        "consumers[1].keyauth_credentials[0].consumer: a nested credential cannot reference another consumer",
        "consumers[1].keyauth_credentials[1].consumer: consumer 'nobody' not found",
    ];
    assert_has_all(&errs, &want);
}

#[test]
fn duplicates_name_the_later_entry_path() {
    // Kong puts the error on the later entry, nested ones under their parent's path.
    let e = errors(
        r#"
_format_version: "3.0"
services:
  - name: a
    host: h
    routes:
      - {name: r1, paths: [/a]}
      - {name: r2, paths: [/b]}
  - name: b
    host: h
    routes:
      - {name: r1, paths: [/c]}
routes:
  - {name: r2, service: a, paths: [/d]}
upstreams:
  - name: u
    targets:
      - target: 10.0.0.1:80
      - target: 10.0.0.1:80
consumers:
  - username: x
    custom_id: c1
  - username: y
    custom_id: c1
keyauth_credentials:
  - {consumer: x, key: k-1}
  - {consumer: y, key: k-1}
"#,
    );
    assert_has_all(
        &e,
        &[
            "services[1].routes[0]: uniqueness violation: 'routes' entity with name set to 'r1' already declared",
            "routes[0]: uniqueness violation: 'routes' entity with name set to 'r2' already declared",
            "consumers[1]: uniqueness violation: 'consumers' entity with custom_id set to 'c1' already declared",
            "keyauth_credentials[1]: duplicate credential key in keyauth_credentials",
        ],
    );
    let target = e
        .iter()
        .find(|x| x.starts_with("upstreams[0].targets[1]: "))
        .unwrap_or_else(|| panic!("{e:#?}"));
    assert!(
        target.contains("'targets' entity with primary key set to '"),
        "{target}"
    );
    assert!(e.iter().all(|x| !x.contains("k-1")), "{e:#?}");
    assert_eq!(e.len(), 5, "{e:#?}");

    // Explicit ids, and SNIs declared nested and at the top level.
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["t.example".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap()
        .pem();
    let id = "6a4e2f0c-6f35-4b9c-9a57-0c7e0d0f3b11";
    let text = serde_json::json!({
        "_format_version": "3.0",
        "services": [{"id": id, "name": "s1", "host": "h"}, {"id": id, "name": "s2", "host": "h"}],
        "certificates": [
            {"id": id, "cert": cert, "key": key.serialize_pem(), "snis": ["a.example", "b.example"]},
            {"id": id, "cert": cert, "key": key.serialize_pem(), "snis": [{}, {"name": "a.example"}]},
            {"cert": cert, "key": key.serialize_pem()},
            {"cert": cert, "key": key.serialize_pem()}
        ],
        "snis": [{"name": "b.example", "certificate": {"id": "00000000-0000-4000-8000-000000000000"}}]
    })
    .to_string();
    let e = errors(&text);
    assert_has_all(
        &e,
        &[
            &format!("services[1]: uniqueness violation: 'services' entity with primary key set to '{id}' already declared"),
            "certificates[1].snis[1]: uniqueness violation: 'snis' entity with name set to 'a.example' already declared",
            "certificates[1].snis[0]: expected an SNI name",
            "snis[0]: uniqueness violation: 'snis' entity with name set to 'b.example' already declared",
        ],
    );
    // A given id repeated is a duplicate; identical certificates without ids are not (Kong
    // gives each a random id).
    assert!(
        e.iter().any(|x| x == &format!("certificates[1]: uniqueness violation: 'certificates' entity with primary key set to '{id}' already declared")),
        "{e:#?}"
    );
    assert!(
        !e.iter().any(|x| x.starts_with("certificates[3]")),
        "{e:#?}"
    );
    // (The sixth: the top-level SNI's certificate does not exist.)
    assert_eq!(e.len(), 6, "{e:#?}");
    // Consumers known only by custom_id: the custom_id is the duplicate, not a derived id.
    let e = errors(
        r#"
_format_version: "3.0"
consumers:
  - custom_id: c1
  - custom_id: c1
"#,
    );
    assert_eq!(
        e,
        vec!["consumers[1]: uniqueness violation: 'consumers' entity with custom_id set to 'c1' already declared"],
    );
}

/// Kong validates a `~*` header regex as its router compiles it, lower-cased
/// (`kong/router/transform.lua` `get_expression`, checked by the routes schema's
/// `validate_route`): `\Z` is not a Rust regex escape but `\z` is.
#[test]
fn header_regex_validated_lower_cased_as_kong_compiles_it() {
    let c = ok(r#"
_format_version: "3.0"
routes:
  - name: r1
    headers:
      x-id: ["~*^A\\d+\\Z"]
"#);
    assert_eq!(
        c.routes[0].headers,
        vec![("x-id".to_string(), vec![r"~*^A\d+\Z".to_string()])]
    );
    let e = errors(
        r#"
_format_version: "3.0"
routes:
  - name: r1
    headers:
      x-id: ["~*(unclosed"]
"#,
    );
    assert!(
        e.iter()
            .any(|x| x.starts_with("routes[0].headers.x-id[0]: invalid regex")),
        "{e:#?}"
    );
}

/// Kong's upstream schema bounds: `seconds` (0..65535) for probe timeouts and intervals,
/// 0..100 for the health threshold. Out of range was accepted, and a negative timeout
/// failed every probe (marking every target down) while a threshold over 100 refused all
/// traffic.
#[test]
fn healthcheck_numbers_are_bounded_as_in_kong() {
    let e = errors(
        r#"
_format_version: "3.0"
upstreams:
  - name: u
    healthchecks:
      threshold: 101
      active:
        timeout: -1
        healthy: {interval: -5}
        unhealthy: {interval: 70000}
"#,
    );
    assert_eq!(
        e,
        vec![
            "upstreams[0].healthchecks.threshold: value should be between 0 and 100",
            "upstreams[0].healthchecks.active.timeout: value should be between 0 and 65535",
            "upstreams[0].healthchecks.active.healthy.interval: value should be between 0 and 65535",
            "upstreams[0].healthchecks.active.unhealthy.interval: value should be between 0 and 65535",
        ],
        "{e:#?}"
    );
    ok(r#"
_format_version: "3.0"
upstreams:
  - name: u
    healthchecks:
      threshold: 50.5
      active: {timeout: 0.5, healthy: {interval: 0}, unhealthy: {interval: 2.5}}
"#);
}

/// Kong's `typedefs.no_consumer`: authentication plugins (and acl, cors, bot-detection)
/// cannot be scoped to a consumer, nested or by reference.
#[test]
fn auth_plugins_cannot_be_scoped_to_a_consumer() {
    let e = errors(
        r#"
_format_version: "3.0"
consumers:
  - username: u
    plugins:
      - name: key-auth
      - name: rate-limiting
        config: {minute: 5}
plugins:
  - name: cors
    consumer: u
"#,
    );
    assert_eq!(
        e,
        vec![
            "consumers[0].plugins[0].consumer: value must be null",
            "plugins[0].consumer: value must be null",
        ],
        "{e:#?}"
    );
}
