//! Cases of Kong's router unit spec (`spec/01-unit/08-router_spec.lua`, Kong 3.x
//! HEAD 22246ef) that apply to the `traditional_compatible` flavour, translated to
//! [`Router`]. Each test names the `it(...)` it comes from; `uc(k)` is the spec's
//! `use_case[k]` (1-based there, route index `k - 1` here).
//!
//! Translation rules:
//! * Kong's `router:select(method, uri, host, ...)` takes the raw host header; a
//!   `host:port` is split here into [`RequestInfo::host`] and [`RequestInfo::port`]
//!   (port 80 when absent, as Kong's `net.dst.port` falls back to the listener port).
//! * `select()` matches the path as given (no normalisation), like [`Router::find`];
//!   `exec()` normalises first, which Portcullis does before routing (crates/config
//!   `path::normalise`), so those cases pass the normalised path.
//! * Request headers are given as a client sends them (`user-agent`), route header
//!   names as the spec writes them (`user_agent`): Kong matches one against the other.
//! * Assertions whose expected route only follows from Kong's tie order among equal
//!   priorities (the atc-router iterates `(priority, uuid)` descending, so the larger
//!   route id wins a tie) are left out and marked `TIE:`; Portcullis breaks ties by
//!   declaration order.

use super::s;
use crate::{Match, RequestInfo, RouteSpec, Router};

/// Route index of the spec's 1-based `use_case[k]`.
fn uc(k: usize) -> Option<usize> {
    Some(k - 1)
}

fn r() -> RouteSpec {
    RouteSpec::default()
}

/// Builder methods for terse route tables.
trait With: Sized {
    fn hosts(self, v: &[&str]) -> Self;
    fn methods(self, v: &[&str]) -> Self;
    fn paths(self, v: &[&str]) -> Self;
    fn snis(self, v: &[&str]) -> Self;
    fn header(self, name: &str, values: &[&str]) -> Self;
    fn regex_priority(self, p: i64) -> Self;
}

impl With for RouteSpec {
    fn hosts(mut self, v: &[&str]) -> Self {
        self.hosts = s(v);
        self
    }
    fn methods(mut self, v: &[&str]) -> Self {
        self.methods = s(v);
        self
    }
    fn paths(mut self, v: &[&str]) -> Self {
        self.paths = s(v);
        self
    }
    fn snis(mut self, v: &[&str]) -> Self {
        self.snis = s(v);
        self
    }
    fn header(mut self, name: &str, values: &[&str]) -> Self {
        self.headers.push((name.to_string(), s(values)));
        self
    }
    fn regex_priority(mut self, p: i64) -> Self {
        self.regex_priority = p;
        self
    }
}

fn build(routes: &[RouteSpec]) -> Router {
    Router::build(routes).expect("routes compile")
}

/// Kong's `select(method, uri, host, scheme, ..., sni, headers)`; `host` may carry a port.
fn find(
    router: &Router,
    method: &str,
    path: &str,
    host: &str,
    sni: Option<&str>,
    headers: &[(&str, &str)],
) -> Option<Match> {
    let (host, port) = match host.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
            (h, p.parse().expect("port"))
        }
        _ => (host, 80),
    };
    router.find(&RequestInfo {
        method,
        host,
        port,
        path,
        sni,
        headers: &headers,
    })
}

fn sel(router: &Router, method: &str, path: &str, host: &str) -> Option<usize> {
    find(router, method, path, host, None, &[]).map(|m| m.route)
}

fn sel_h(
    router: &Router,
    method: &str,
    path: &str,
    host: &str,
    headers: &[(&str, &str)],
) -> Option<usize> {
    find(router, method, path, host, None, headers).map(|m| m.route)
}

fn caps(list: &[(Option<&str>, &str)]) -> Vec<(Option<String>, String)> {
    list.iter()
        .map(|(n, v)| (n.map(str::to_string), v.to_string()))
        .collect()
}

/// The `use_case` table of `describe("select()")`.
fn select_use_case() -> Vec<RouteSpec> {
    let loc = ["my-location-1", "my-location-2"];
    let ppp = ["POST", "PUT", "PATCH"];
    vec![
        // 1. host
        r().hosts(&["domain-1.org", "domain-2.org"]),
        // 2. method
        r().methods(&["TRACE"]),
        // 3. uri
        r().paths(&["/my-route"]),
        // 4. host + uri
        r().paths(&["/route-4"])
            .hosts(&["domain-1.org", "domain-2.org"]),
        // 5. host + method
        r().hosts(&["domain-1.org", "domain-2.org"]).methods(&ppp),
        // 6. uri + method
        r().methods(&ppp).paths(&["/route-6"]),
        // 7. host + uri + method
        r().hosts(&["domain-with-uri-1.org", "domain-with-uri-2.org"])
            .methods(&ppp)
            .paths(&["/my-route-uri"]),
        // 8. serviceless-route
        r().paths(&["/serviceless"]),
        // 9. headers (single)
        r().header("location", &loc),
        // 10. headers (multiple)
        r().header("location", &["my-location-1"])
            .header("version", &["v1", "v2"]),
        // 11. headers + uri
        r().header("location", &loc).paths(&["/headers-uri"]),
        // 12. host + headers + uri + method
        r().hosts(&["domain-with-headers-1.org", "domain-with-headers-2.org"])
            .header("location", &loc)
            .methods(&ppp)
            .paths(&["/headers-host-uri-method"]),
        // 13. host + port
        r().hosts(&["domain-1.org:321", "domain-2.org"]),
        // 14. no "any-port" route
        r().hosts(&["domain-3.org:321"]),
        // 15. headers (regex)
        r().header(
            "user_agent",
            &[r"~*windows|linux|os\s+x\s*[\d\._]+|solaris|bsd"],
        ),
    ]
}

// ---------------------------------------------------------------- select()

#[test]
fn select_host() {
    // it("[host]")
    let router = build(&select_use_case());
    assert_eq!(sel(&router, "GET", "/", "domain-1.org"), uc(1));
    // it("[host] ignores default port")
    assert_eq!(sel(&router, "GET", "/", "domain-1.org:80"), uc(1));
    // it("[host] matches specific port"): TIE: domain-1.org:321 matches use_case[1]
    // (any port) and use_case[13] (port 321) with equal priority; Kong returns 13 by
    // route id. Here use_case[1] wins (declared first); see `kong_id_ties`.
    // it("[host] matches specific port on port-only route")
    assert_eq!(sel(&router, "GET", "/", "domain-3.org:321"), uc(14));
    // it("[host] fails just because of port on port-only route")
    assert_eq!(sel(&router, "GET", "/", "domain-3.org:123"), None);
}

#[test]
fn select_uri_method_and_combinations() {
    let router = build(&select_use_case());
    // it("[uri]")
    assert_eq!(sel(&router, "GET", "/my-route", "domain.org"), uc(3));
    // it("[uri + empty host]")
    assert_eq!(sel(&router, "GET", "/my-route-uri", ""), uc(3));
    // it("[method]")
    assert_eq!(sel(&router, "TRACE", "/", "domain.org"), uc(2));
    // it("[host + uri]")
    assert_eq!(sel(&router, "GET", "/route-4", "domain-1.org"), uc(4));
    // it("[host + method]")
    assert_eq!(sel(&router, "POST", "/", "domain-1.org"), uc(5));
    // it("[uri + method]")
    assert_eq!(sel(&router, "PUT", "/route-6", "domain.org"), uc(6));
    // it("[host + uri + method]")
    assert_eq!(
        sel(&router, "PUT", "/my-route-uri", "domain-with-uri-2.org"),
        uc(7)
    );
    // it("[serviceless]")
    assert_eq!(sel(&router, "GET", "/serviceless", ""), uc(8));
}

#[test]
fn select_single_headers_value() {
    // it("single [headers] value")
    let router = build(&select_use_case());
    let loc = |v| sel_h(&router, "GET", "/", "", &[("location", v)]);
    assert_eq!(loc("my-location-1"), uc(9));
    assert_eq!(loc("my-location-2"), uc(9));
    let two = [("location", "my-location-3"), ("location", "my-location-2")];
    assert_eq!(sel_h(&router, "GET", "/", "", &two), uc(9));
    assert_eq!(loc("my-location-3"), None);
    let two = [("location", "my-location-3"), ("location", "foo")];
    assert_eq!(sel_h(&router, "GET", "/", "", &two), None);
    let ua = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) \
              Chrome/83.0.4103.116 Safari/537.36";
    assert_eq!(
        sel_h(&router, "GET", "/", "", &[("user-agent", ua)]),
        uc(15)
    );
}

#[test]
fn select_multiple_headers_values() {
    // it("multiple [headers] values")
    let router = build(&select_use_case());
    let h = |hs: &[(&str, &str)]| sel_h(&router, "GET", "/", "", hs);
    assert_eq!(
        h(&[("location", "my-location-1"), ("version", "v1")]),
        uc(10)
    );
    assert_eq!(
        h(&[("location", "my-location-1"), ("version", "v2")]),
        uc(10)
    );
    assert_eq!(
        h(&[
            ("location", "my-location-3"),
            ("location", "my-location-1"),
            ("version", "v2")
        ]),
        uc(10)
    );
    // fallback to Route 9
    assert_eq!(
        h(&[
            ("location", "my-location-3"),
            ("location", "my-location-2"),
            ("version", "v2")
        ]),
        uc(9)
    );
}

#[test]
fn select_headers_with_other_criteria() {
    let router = build(&select_use_case());
    // it("[headers + uri]")
    let loc2 = [("location", "my-location-2")];
    assert_eq!(sel_h(&router, "GET", "/headers-uri", "", &loc2), uc(11));
    // it("[host + headers + uri + method]")
    assert_eq!(
        sel_h(
            &router,
            "PUT",
            "/headers-host-uri-method",
            "domain-with-headers-1.org",
            &loc2
        ),
        uc(12)
    );
}

// ---------------------------------------------------------------- [uri prefix]

#[test]
fn uri_prefix_matches_in_request_uri_prefix() {
    // it("matches when given [uri] is in request URI prefix")
    let router = build(&select_use_case());
    assert_eq!(
        sel(&router, "GET", "/my-route/some/path", "domain.org"),
        uc(3)
    );
}

#[test]
fn uri_prefix_longer_uri_not_superseded() {
    // it("does not supersede another route with a longer [uri]")
    let router = build(&[r().paths(&["/my-route/hello"]), r().paths(&["/my-route"])]);
    let m = find(&router, "GET", "/my-route/hello", "domain.org", None, &[]).unwrap();
    assert_eq!((Some(m.route), m.matched_path), (uc(1), Some(0..15)));
    assert_eq!(
        sel(&router, "GET", "/my-route/hello/world", "domain.org"),
        uc(1)
    );
    let m = find(&router, "GET", "/my-route", "domain.org", None, &[]).unwrap();
    assert_eq!((Some(m.route), m.matched_path), (uc(2), Some(0..9)));
    assert_eq!(sel(&router, "GET", "/my-route/world", "domain.org"), uc(2));
}

#[test]
fn uri_prefix_longer_uri_with_methods() {
    // it("does not supersede another route with a longer [uri] while [methods] are also defined")
    let m = ["POST", "PUT", "GET"];
    let router = build(&[
        r().methods(&m).paths(&["/my-route"]),
        r().methods(&m).paths(&["/my-route/hello"]),
    ]);
    assert_eq!(sel(&router, "GET", "/my-route/hello", "domain.org"), uc(2));
    assert_eq!(
        sel(&router, "GET", "/my-route/hello/world", "domain.org"),
        uc(2)
    );
    assert_eq!(sel(&router, "GET", "/my-route", "domain.org"), uc(1));
    assert_eq!(sel(&router, "GET", "/my-route/world", "domain.org"), uc(1));
}

#[test]
fn uri_prefix_longer_uri_with_hosts() {
    // it("does not superseds another route with a longer [uri] while [hosts] are also defined")
    let router = build(&[
        r().hosts(&["domain.org"]).paths(&["/my-route"]),
        r().hosts(&["domain.org"]).paths(&["/my-route/hello"]),
    ]);
    assert_eq!(sel(&router, "GET", "/my-route/hello", "domain.org"), uc(2));
    assert_eq!(
        sel(&router, "GET", "/my-route/hello/world", "domain.org"),
        uc(2)
    );
    assert_eq!(sel(&router, "GET", "/my-route", "domain.org"), uc(1));
    assert_eq!(sel(&router, "GET", "/my-route/world", "domain.org"), uc(1));
}

#[test]
fn uri_prefix_better_match_for_another_host() {
    // it("does not supersede another route with a longer [uri] when a better [uri] match exists for another [host]")
    let router = build(&[
        r().hosts(&["example.com"]).paths(&["/my-route"]),
        r().hosts(&["example.com"]).paths(&["/my-route/hello"]),
        r().hosts(&["example.net"])
            .paths(&["/my-route/hello/world"]),
    ]);
    assert_eq!(
        sel(&router, "GET", "/my-route/hello/world", "example.com"),
        uc(2)
    );
    assert_eq!(
        sel(
            &router,
            "GET",
            "/my-route/hello/world/and/goodnight",
            "example.com"
        ),
        uc(2)
    );
}

#[test]
fn uri_prefix_is_anchored() {
    // it("only matches [uri prefix] as a prefix (anchored mode)")
    let router = build(&[
        r().paths(&["/something/my-route"]),
        r().hosts(&["example.com"]).paths(&["/my-route"]),
    ]);
    let m = find(
        &router,
        "GET",
        "/something/my-route",
        "example.com",
        None,
        &[],
    )
    .unwrap();
    assert_eq!((Some(m.route), m.matched_path), (uc(1), Some(0..19)));
}

// ---------------------------------------------------------------- [uri regex]

#[test]
fn uri_regex_matches() {
    // it("matches with [uri regex]")
    let router = build(&[r().paths(&[r"~/users/\d+/profile"])]);
    let m = find(
        &router,
        "GET",
        "/users/123/profile",
        "domain.org",
        None,
        &[],
    )
    .unwrap();
    assert_eq!(Some(m.route), uc(1));
    assert!(m.captures.is_empty(), "no uri_captures");
}

#[test]
fn uri_regex_right_route_among_several() {
    // it("matches the right route when several ones have a [uri regex]")
    let router = build(&[
        r().paths(&[r"~/route/persons/\d{3}"]),
        r().paths(&[r"~/route/persons/\d{3}/following"]),
        r().paths(&[r"~/route/persons/\d{3}/[a-z]+"]),
    ]);
    assert_eq!(
        sel(&router, "GET", "/route/persons/456", "domain.org"),
        uc(1)
    );
}

#[test]
fn uri_regex_beats_prefix_match() {
    // it("matches a [uri regex] even if a [prefix uri] got a match")
    let router = build(&[
        r().paths(&["/route/persons"]),
        r().paths(&[r"~/route/persons/\d+/profile"]),
    ]);
    let m = find(
        &router,
        "GET",
        "/route/persons/123/profile",
        "domain.org",
        None,
        &[],
    )
    .unwrap();
    assert_eq!(Some(m.route), uc(2));
    assert!(m.captures.is_empty());
}

#[test]
fn uri_regex_beats_exact_prefix_match() {
    // it("matches a [uri regex] even if a [uri] got an exact match")
    let router = build(&[
        r().paths(&["/route/fixture"]),
        r().paths(&["~/route/(fixture)"]),
    ]);
    assert_eq!(sel(&router, "GET", "/route/fixture", "domain.org"), uc(2));
}

#[test]
fn uri_regex_and_host_beat_prefix_match() {
    // it("matches a [uri regex + host] even if a [prefix uri] got a match")
    let router = build(&[
        r().hosts(&["route.com"]).paths(&["/pat"]),
        r().hosts(&["route.com"])
            .paths(&["/path"])
            .methods(&["POST"]),
        r().hosts(&["route.com"]).paths(&["~/(path)"]),
    ]);
    assert_eq!(sel(&router, "GET", "/path", "route.com"), uc(3));
}

#[test]
fn uri_regex_anchored_at_start() {
    // it("matches from the beginning of the request URI [uri regex]")
    let router = build(&[r().paths(&["~/prefix/[0-9]+"])]);
    assert_eq!(sel(&router, "GET", "/prefix/123", "domain.org"), uc(1));
    assert_eq!(sel(&router, "GET", "/extra/prefix/123", "domain.org"), None);
}

// ---------------------------------------------------------------- [wildcard host]

fn wildcard_use_case() -> Vec<RouteSpec> {
    vec![r().hosts(&["*.route.com"]), r().hosts(&["route.*"])]
}

#[test]
fn wildcard_host_leftmost_rightmost_any_port() {
    let router = build(&wildcard_use_case());
    // it("matches leftmost wildcards")
    let m = find(&router, "GET", "/", "foo.route.com", None, &[]).unwrap();
    assert_eq!((Some(m.route), m.matched_path), (uc(1), None));
    // it("matches rightmost wildcards")
    assert_eq!(sel(&router, "GET", "/", "route.org"), uc(2));
    // it("matches any port in request")
    assert_eq!(sel(&router, "GET", "/", "route.org:123"), uc(2));
    assert_eq!(sel(&router, "GET", "/", "foo.route.com:123"), uc(1));
}

#[test]
fn wildcard_host_port_specific_routes() {
    // it("matches port-specific routes")
    let mut routes = wildcard_use_case();
    routes.push(r().hosts(&["*.route.net:123"]));
    routes.push(r().hosts(&["route.*:123"]));
    let router = build(&routes);
    // match the right port
    assert_eq!(sel(&router, "GET", "/", "foo.route.net:123"), uc(3));
    // fail different port
    assert_eq!(sel(&router, "GET", "/", "foo.route.net:456"), None);
    // TIE: "port-specific is higher priority": route.org:123 matches use_case[2]
    // (`route.*`) and use_case[4] (`route.*:123`) with equal priority.
}

#[test]
fn wildcard_host_port_specific_default_ports() {
    for port in [80, 443] {
        // it("prefers port-specific even for http default port")
        // it("prefers port-specific even for https default port")
        let mut routes = wildcard_use_case();
        routes.push(r().hosts(&[format!("route.*:{port}").as_str()]));
        let router = build(&routes);
        // non-port matches any
        assert_eq!(sel(&router, "GET", "/", "route.org:123"), uc(2));
        // TIE: route.org:{port} matches use_case[2] and use_case[3] with equal
        // priority (Kong returns 3 by route id); the implicit-port variant is
        // traditional-only.
        let host = format!("route.org:{port}");
        assert!(sel(&router, "GET", "/", &host).is_some());
    }
}

#[test]
fn wildcard_host_does_not_take_precedence_over_plain_host() {
    // it("does not take precedence over a plain host")
    let mut routes = wildcard_use_case();
    routes.insert(0, r().hosts(&["plain.route.com"]));
    routes.push(r().hosts(&["route.com"]));
    let router = build(&routes);
    assert_eq!(sel(&router, "GET", "/", "route.com"), uc(4));
    assert_eq!(sel(&router, "GET", "/", "route.org"), uc(3));
    assert_eq!(sel(&router, "GET", "/", "plain.route.com"), uc(1));
    assert_eq!(sel(&router, "GET", "/", "foo.route.com"), uc(2));
}

#[test]
fn wildcard_and_plain_host_with_paths() {
    let routes = [
        r().hosts(&["*.route.com"]).paths(&["/path1"]),
        r().hosts(&["plain.route.com"]).paths(&["/path2"]),
    ];
    let router = build(&routes);
    // it("matches [wildcard host + path] even if a similar [plain host] exists")
    assert_eq!(sel(&router, "GET", "/path1", "plain.route.com"), uc(1));
    // it("matches [plain host + path] even if a matching [wildcard host] exists")
    assert_eq!(sel(&router, "GET", "/path2", "plain.route.com"), uc(2));
}

#[test]
fn wildcard_plain_uri_method() {
    // it("matches [wildcard/plain + uri + method]")
    let mut routes = wildcard_use_case();
    routes.push(
        r().hosts(&["*.domain.com", "example.com"])
            .paths(&["/path"])
            .methods(&["GET", "TRACE"]),
    );
    let router = build(&routes);
    assert_eq!(sel(&router, "POST", "/path", "foo.domain.com"), None);
    assert_eq!(sel(&router, "GET", "/path", "foo.domain.com"), uc(3));
    assert_eq!(sel(&router, "TRACE", "/path", "example.com"), uc(3));
    assert_eq!(sel(&router, "POST", "/path", "foo.domain.com"), None);
}

#[test]
fn wildcard_host_and_uri_regex() {
    // describe("[wildcard host] + [uri regex]") it("matches")
    let router = build(&[
        r().hosts(&["*.example.com"])
            .paths(&[r"~/users/\d+/profile"]),
        r().hosts(&["*.example.com"]).paths(&["/users"]),
    ]);
    assert_eq!(
        sel(&router, "GET", "/users/123/profile", "test.example.com"),
        uc(1)
    );
    assert_eq!(sel(&router, "GET", "/users", "test.example.com"), uc(2));
}

/// The spec assertions that only hold by Kong's tie order: the three cases whose
/// only assertion is a tie between a port-specific and an any-port host
/// (it("[host] matches specific port"), it("submatch_weight [wildcard host port] >
/// [wildcard host] "), it("matches a [wildcard host + port] even if a [wildcard
/// host] matched")), and the tied halves of it("matches port-specific routes"),
/// it("prefers port-specific even for http/https default port") and it("[method]
/// does not supersede [wildcard host]"). Kong's priority (transform.lua
/// `get_priority`) looks neither at ports nor at which criterion a route has, so
/// the routes tie; atc-router's `try_match` walks `matchers.iter().rev()` keyed by
/// `(priority, uuid)`, so Kong picks the larger route id (its docs call the order
/// undefined). Portcullis keeps declaration order.
#[test]
fn kong_id_ties() {
    let router = build(&[r().methods(&["GET"]), r().hosts(&["domain.*"])]);
    assert_eq!(sel(&router, "GET", "/", "domain.com"), uc(1));
    let router = build(&select_use_case());
    assert_eq!(sel(&router, "GET", "/", "domain-1.org:321"), uc(1));
    let router = build(&[
        r().hosts(&["route.*"]),
        r().hosts(&["route.*:80", "route.com.*"]),
    ]);
    assert_eq!(sel(&router, "GET", "/", "route.org:80"), uc(1));
    // Declared the other way round, the port-specific route wins the tie.
    let router = build(&[
        r().hosts(&["route.*:80", "route.com.*"]),
        r().hosts(&["route.*"]),
    ]);
    assert_eq!(sel(&router, "GET", "/", "route.org:80"), uc(1));
    assert_eq!(sel(&router, "GET", "/", "route.org:81"), uc(2));
}

// ---------------------------------------------------------------- [headers]

#[test]
fn headers_more_headers_first() {
    // it("evaluates Routes with more [headers] first")
    let router = build(&[
        r().header("version", &["v1", "v2"])
            .header("user_agent", &["foo", "bar"]),
        r().header("version", &["v1", "v2"])
            .header("user_agent", &["foo", "bar"])
            .header("location", &["east", "west"]),
    ]);
    let hs = [
        ("version", "v1"),
        ("user-agent", "foo"),
        ("location", "north"),
        ("location", "west"),
    ];
    assert_eq!(sel_h(&router, "GET", "/", "", &hs), uc(2));
}

#[test]
fn headers_names_case_insensitive() {
    // it("names are case-insensitive")
    let router = build(&[
        r().header("USER_AGENT", &["foo", "bar"]),
        r().header("user_agent", &["baz"]),
    ]);
    assert_eq!(
        sel_h(&router, "GET", "/", "", &[("user-agent", "foo")]),
        uc(1)
    );
    assert_eq!(
        sel_h(&router, "GET", "/", "", &[("USER-AGENT", "baz")]),
        uc(2)
    );
    // The spec's request tables spell the name `user_agent` / `USER_AGENT` too.
    assert_eq!(
        sel_h(&router, "GET", "/", "", &[("user_agent", "foo")]),
        uc(1)
    );
    assert_eq!(
        sel_h(&router, "GET", "/", "", &[("USER_AGENT", "baz")]),
        uc(2)
    );
}

#[test]
fn headers_values_case_insensitive() {
    // it("matches values in a case-insensitive way")
    let router = build(&[
        r().header("user_agent", &["foo", "bar"]),
        r().header("user_agent", &["BAZ"]),
    ]);
    assert_eq!(
        sel_h(&router, "GET", "/", "", &[("user-agent", "FOO")]),
        uc(1)
    );
    assert_eq!(
        sel_h(&router, "GET", "/", "", &[("user-agent", "baz")]),
        uc(2)
    );
}

// ---------------------------------------------------------------- [wildcard sni]

#[test]
fn wildcard_sni() {
    let router = build(&[r().snis(&["*.sni.test"]), r().snis(&["sni.*"])]);
    let sni = |name| find(&router, "GET", "/", "any.test", Some(name), &[]).map(|m| m.route);
    // it("matches leftmost wildcards")
    for name in ["foo.sni.test", "foo.bar.sni.test"] {
        assert_eq!(sni(name), uc(1), "{name}");
    }
    // it("matches rightmost wildcards")
    for name in ["sni.foo", "sni.foo.bar"] {
        assert_eq!(sni(name), uc(2), "{name}");
    }
    // it("doesn't match wildcard")
    for name in ["bar.sni.foo", "foo.sni.test.bar"] {
        assert_eq!(sni(name), None, "{name}");
    }
}

// ------------------------------------------- raw string / regex with '\' / expressions

#[test]
fn regex_paths_with_quotes_and_backslashes() {
    // it("path has '\"'")
    let router = build(&[r().methods(&["GET"]).paths(&[r#"~/\"/*$"#])]);
    assert_eq!(sel(&router, "GET", "/\"//", "a.test"), uc(1));
    assert_eq!(sel(&router, "GET", "/x", "a.test"), None);
    // it("path has '\"#'")
    let router = build(&[r().methods(&["GET"]).paths(&[r##"~/\"#/*$"##])]);
    assert_eq!(sel(&router, "GET", "/\"#/", "a.test"), uc(1));
    // it("regex path has double '\\'")
    let router = build(&[r().methods(&["GET"]).paths(&[r"~/\\/*$"])]);
    assert_eq!(sel(&router, "GET", r"/\//", "a.test"), uc(1));
    assert_eq!(sel(&router, "GET", "/x", "a.test"), None);
    // it("regex path has '\\d'")
    let router = build(&[r().methods(&["GET"]).paths(&[r"~/\d+"])]);
    assert_eq!(sel(&router, "GET", "/123", "a.test"), uc(1));
    assert_eq!(sel(&router, "GET", "/d", "a.test"), None);
}

#[test]
fn header_regex_is_lowered() {
    // it("should always add lower() when matching http.headers.*"): `~*Quote` becomes
    // `any(lower(http.headers.test)) ~ r#"quote"#`.
    let router = build(&[r().methods(&["GET"]).header("test", &["~*Quote"])]);
    for v in ["quote", "QUOTE", "a Quote!"] {
        assert_eq!(sel_h(&router, "GET", "/", "", &[("test", v)]), uc(1), "{v}");
    }
    assert_eq!(sel_h(&router, "GET", "/", "", &[("test", "quota")]), None);
}

#[test]
fn host_port_uses_destination_port() {
    // it("should use 'net.dst.port' when deprecating 'net.port'")
    let router = build(&[r().hosts(&["www.example.com:8000"])]);
    assert_eq!(sel(&router, "GET", "/", "www.example.com:8000"), uc(1));
    assert_eq!(sel(&router, "GET", "/", "www.example.com"), None);
}

// ---------------------------------------------------------------- normalization stopgap

fn stopgap_use_case() -> Vec<RouteSpec> {
    vec![
        r().paths(&["/plain/a.b.c"]),
        r().paths(&["/plain/a.b%58c"]),
        r().paths(&[r"~/reg%65x/\d+"]),
        r().paths(&[r"~/regex-meta/%5Cd\+%2E"]),
        r().paths(&["~/regex-reserved%2Fabc"]),
    ]
}

#[test]
fn stopgap_plain_text_paths() {
    // it("matches against plain text paths")
    let router = build(&stopgap_use_case());
    assert_eq!(sel(&router, "GET", "/plain/a.b.c", "example.com"), uc(1));
    // route no longer normalize user configured path
    assert_eq!(sel(&router, "GET", "/plain/a.bXc", "example.com"), None);
    assert_eq!(sel(&router, "GET", "/plain/a.b%58c", "example.com"), uc(2));
    assert_eq!(sel(&router, "GET", "/plain/aab.c", "example.com"), None);
}

#[test]
fn stopgap_regex_paths() {
    let router = build(&stopgap_use_case());
    // it("matches against regex paths")
    assert_eq!(sel(&router, "GET", "/regex/123", "example.com"), None);
    assert_eq!(sel(&router, "GET", "/reg%65x/123", "example.com"), uc(3));
    assert_eq!(sel(&router, "GET", r"/regex/\d+", "example.com"), None);
    // it("escapes meta character after percent decoding from regex paths")
    assert_eq!(sel(&router, "GET", "/regex-meta/123a", "example.com"), None);
    assert_eq!(
        sel(&router, "GET", r"/regex-meta/\d+.", "example.com"),
        None
    );
    assert_eq!(
        sel(&router, "GET", "/regex-meta/%5Cd+%2E", "example.com"),
        uc(4)
    );
    // it("leave reserved characters alone in regex paths")
    assert_eq!(
        sel(&router, "GET", "/regex-reserved/abc", "example.com"),
        None
    );
    assert_eq!(
        sel(&router, "GET", "/regex-reserved%2Fabc", "example.com"),
        uc(5)
    );
}

// ---------------------------------------------------------------- edge-cases

#[test]
fn edge_host_and_uri_beat_method() {
    // it("[host] and [uri] have higher priority than [method]")
    let router = build(&select_use_case()[..7]);
    assert_eq!(sel(&router, "TRACE", "/", "domain-2.org"), uc(1));
    assert_eq!(sel(&router, "TRACE", "/my-route", "domain.org"), uc(3));
}

#[test]
fn edge_half_uri_and_host_match() {
    // it("half [uri] and [host] match does not supersede another route")
    let router = build(&[
        r().hosts(&["host1.com"]).paths(&["/v1/path"]),
        r().hosts(&["host2.com"]).paths(&["/"]),
    ]);
    assert_eq!(sel(&router, "GET", "/v1/path", "host1.com"), uc(1));
    assert_eq!(sel(&router, "GET", "/v1/path", "host2.com"), uc(2));
}

#[test]
fn edge_half_wildcard_host_and_method_match() {
    // it("half [wildcard host] and [method] match does not supersede another route")
    let router = build(&[
        r().hosts(&["host.*"]).methods(&["GET"]),
        r().hosts(&["host.*"]).methods(&["POST"]),
    ]);
    assert_eq!(sel(&router, "GET", "/", "host.com"), uc(1));
    assert_eq!(sel(&router, "POST", "/", "host.com"), uc(2));
}

#[test]
fn edge_half_uri_regex_and_method_match() {
    // it("half [uri regex] and [method] match does not supersede another route")
    let router = build(&[
        r().methods(&["GET"]).paths(&[r"~/users/\d+/profile"]),
        r().methods(&["POST"]).paths(&[r"~/users/\d*/profile"]),
    ]);
    assert_eq!(
        sel(&router, "GET", "/users/123/profile", "domain.org"),
        uc(1)
    );
    assert_eq!(
        sel(&router, "POST", "/users/123/profile", "domain.org"),
        uc(2)
    );
}

#[test]
fn edge_method_does_not_supersede_uri_prefix() {
    // it("[method] does not supersede [uri prefix]")
    let router = build(&[r().methods(&["GET"]), r().paths(&["/example"])]);
    assert_eq!(sel(&router, "GET", "/example", "domain.org"), uc(2));
    assert_eq!(
        sel(&router, "GET", "/example/status/200", "domain.org"),
        uc(2)
    );
}

#[test]
fn edge_method_does_not_supersede_wildcard_host() {
    // it("[method] does not supersede [wildcard host]")
    let router = build(&[r().methods(&["GET"]), r().hosts(&["domain.*"])]);
    assert_eq!(sel(&router, "GET", "/", "nothing.com"), uc(1));
    // TIE: GET domain.com matches both with equal priority (one criterion each, the
    // host a wildcard); Kong returns use_case[2] by route id. See `kong_id_ties`.
    assert!(sel(&router, "GET", "/", "domain.com").is_some());
}

#[test]
fn edge_longer_uri_prefix_of_split_route() {
    // it_trad_only("does not supersede another route with a longer [uri prefix]"):
    // pending for the ATC flavours in the spec, but Kong's
    // `split_routes_and_services_by_path` (transform.lua) gives `/a` and `/bbbbbbb`
    // their own priorities, so traditional_compatible agrees.
    let router = build(&[r().paths(&["/a", "/bbbbbbb"]), r().paths(&["/a/bb"])]);
    assert_eq!(sel(&router, "GET", "/a/bb/foobar", "domain.org"), uc(2));
}

fn root_use_case() -> Vec<RouteSpec> {
    let mut routes = select_use_case();
    routes.insert(0, r().paths(&["/"]));
    routes
}

#[test]
fn edge_root_uri() {
    let router = build(&root_use_case());
    // describe("root / [uri]") it("request with [method]")
    assert_eq!(sel(&router, "GET", "/", "domain.org"), uc(1));
    // it("does not supersede another route")
    assert_eq!(sel(&router, "GET", "/my-route", "domain.org"), uc(4));
    assert_eq!(
        sel(&router, "GET", "/my-route/hello/world", "domain.org"),
        uc(4)
    );
    // it("acts as a catch-all route")
    let m = find(&router, "GET", "/foobar/baz", "domain.org", None, &[]).unwrap();
    assert_eq!((Some(m.route), m.matched_path), (uc(1), Some(0..1)));
}

#[test]
fn edge_same_category_conflicting_values() {
    // describe("multiple routes of same category with conflicting values")
    // it("matches correct route")
    let mut routes = select_use_case();
    for _ in 1..6 {
        routes.push(r().hosts(&["domain.org"]).paths(&["/my-uri"]));
    }
    routes.push(r().hosts(&["domain.org"]).paths(&["/my-target-uri"]));
    let router = build(&routes);
    assert_eq!(
        sel(&router, "GET", "/my-target-uri", "domain.org"),
        Some(routes.len() - 1)
    );
}

#[test]
fn edge_more_headers_beat_longer_paths() {
    // it("more [headers] has priority over longer [paths]")
    let router = build(&[
        r().header("version", &["v1"]).paths(&["/my-route/hello"]),
        r().header("version", &["v1"])
            .header("location", &["us-east"])
            .paths(&["/my-route"]),
    ]);
    let hs = [("version", "v1"), ("location", "us-east")];
    let m = find(&router, "GET", "/my-route/hello", "domain.org", None, &hs).unwrap();
    assert_eq!((Some(m.route), m.matched_path), (uc(2), Some(0..9)));
    // (The spec passes "http" as the host here.)
    assert_eq!(
        sel_h(&router, "GET", "/my-route/hello/world", "http", &hs),
        uc(2)
    );
}

// ---------------------------------------------------------------- misses

#[test]
fn misses() {
    let router = build(&select_use_case());
    // it("invalid [host]")
    assert_eq!(sel(&router, "GET", "/", "domain-3.org"), None);
    // it("invalid host in [host + uri]")
    assert_eq!(sel(&router, "GET", "/route-4", "domain-3.org"), None);
    // it("invalid host in [host + method]")
    assert_eq!(sel(&router, "GET", "/", "domain-3.org"), None);
    // it("invalid method in [host + uri + method]")
    assert_eq!(
        sel(&router, "GET", "/some-uri", "domain-with-uri-2.org"),
        None
    );
    // it("invalid uri in [host + uri + method]")
    assert_eq!(
        sel(&router, "PUT", "/some-uri-foo", "domain-with-uri-2.org"),
        None
    );
    // it("does not match when given [uri] is in URI but not in prefix")
    assert_eq!(
        sel(&router, "GET", "/some-other-prefix/my-route", "domain.org"),
        None
    );
    let bad = [("location", "invalid-location")];
    // it("invalid [headers]")
    assert_eq!(sel_h(&router, "GET", "/", "", &bad), None);
    // it("invalid headers in [headers + uri]")
    assert_eq!(sel_h(&router, "GET", "/headers-uri", "", &bad), None);
    // it("invalid headers in [headers + uri + method]")
    assert_eq!(sel_h(&router, "PUT", "/headers-uri-method", "", &bad), None);
    // it("invalid headers in [headers + host + uri + method]"): the spec puts the
    // host in the headers table, which is not the request's host.
    let bad_with_host = [
        ("location", "invalid-location"),
        ("host", "domain-with-headers-1.org"),
    ];
    assert_eq!(
        sel_h(
            &router,
            "PUT",
            "/headers-host-uri-method",
            "",
            &bad_with_host
        ),
        None
    );
}

// ---------------------------------------------------------------- #benchmarks (smaller n)

const N: usize = 2_000;

#[test]
fn benchmark_plain_host() {
    // describe("plain [host]") it("takes < 1ms")
    let routes: Vec<RouteSpec> = (1..=N)
        .map(|i| r().hosts(&[format!("domain-{i}.org").as_str()]))
        .collect();
    let router = build(&routes);
    assert_eq!(
        sel(&router, "GET", "/", &format!("domain-{N}.org")),
        Some(N - 1)
    );
}

#[test]
fn benchmark_method_uri_host() {
    // describe("[method + uri + host]") it("takes < 1ms")
    let (host, uri) = (format!("domain-{N}.org"), format!("/my-route-{N}"));
    let mut routes: Vec<RouteSpec> = (1..N)
        .map(|_| r().hosts(&[host.as_str()]).paths(&[uri.as_str()]))
        .collect();
    routes.push(
        r().hosts(&[host.as_str()])
            .methods(&["POST"])
            .paths(&[uri.as_str()]),
    );
    let router = build(&routes);
    assert_eq!(sel(&router, "POST", &uri, &host), Some(N - 1));
}

#[test]
fn benchmark_headers_single_key() {
    // describe("[headers]") describe("single key") it("takes < 1ms")
    let routes: Vec<RouteSpec> = (1..=N)
        .map(|i| r().header("location", &[format!("somewhere-{i}").as_str()]))
        .collect();
    let router = build(&routes);
    let target = format!("somewhere-{N}");
    assert_eq!(
        sel_h(&router, "GET", "/", "", &[("location", target.as_str())]),
        Some(N - 1)
    );
}

#[test]
fn benchmark_same_category_identical_values() {
    // describe("multiple routes of same category with identical values") it("takes < 1ms")
    let uri = format!("/my-route-{N}");
    let mut routes: Vec<RouteSpec> = (1..N)
        .map(|_| r().hosts(&["domain.org"]).paths(&[uri.as_str()]))
        .collect();
    routes.push(r().hosts(&["domain.org"]).paths(&["/my-real-route"]));
    let router = build(&routes);
    assert_eq!(
        sel(&router, "GET", "/my-real-route", "domain.org"),
        Some(N - 1)
    );
}

#[test]
fn benchmark_method_uri_host_headers() {
    // describe("[method + uri + host + headers]") it("takes < 1ms")
    let (host, uri, loc) = (
        format!("domain-{N}.org"),
        format!("/my-route-{N}"),
        format!("somewhere-{N}"),
    );
    let mut routes: Vec<RouteSpec> = (1..N)
        .map(|_| {
            r().hosts(&[host.as_str()])
                .paths(&[uri.as_str()])
                .header("location", &[loc.as_str()])
        })
        .collect();
    routes.push(
        r().hosts(&[host.as_str()])
            .header("location", &[loc.as_str()])
            .methods(&["POST"])
            .paths(&[uri.as_str()]),
    );
    let router = build(&routes);
    assert_eq!(
        sel_h(&router, "POST", &uri, &host, &[("location", loc.as_str())]),
        Some(N - 1)
    );
}

// ---------------------------------------------------------------- exec()

#[test]
fn exec_upstream_url_routes() {
    // it("returns parsed upstream_url + upstream_uri")
    let router = build(&[r().paths(&["/my-route"]), r().paths(&["/my-route-2"])]);
    let m = find(&router, "GET", "/my-route", "domain.org", None, &[]).unwrap();
    assert_eq!((Some(m.route), m.matched_path), (uc(1), Some(0..9)));
    let m = find(&router, "GET", "/my-route-2", "domain.org", None, &[]).unwrap();
    assert_eq!((Some(m.route), m.matched_path), (uc(2), Some(0..11)));
}

#[test]
fn exec_matched_host_uri_method_headers() {
    // it("returns matched_host + matched_uri + matched_method + matched_headers")
    let router = build(&[
        r().hosts(&["host.com"])
            .methods(&["GET"])
            .paths(&["/my-route"]),
        r().hosts(&["host.com"]).paths(&["/my-route"]),
        r().hosts(&["*.host.com"])
            .header("location", &["my-location-1", "my-location-2"]),
        r().paths(&[r"~/users/\d+/profile"]),
    ]);
    let m = find(&router, "GET", "/my-route", "host.com", None, &[]).unwrap();
    assert_eq!((Some(m.route), m.matched_path), (uc(1), Some(0..9)));
    let m = find(
        &router,
        "GET",
        "/my-route/prefix/match",
        "host.com",
        None,
        &[],
    )
    .unwrap();
    assert_eq!((Some(m.route), m.matched_path), (uc(1), Some(0..9)));
    assert_eq!(sel(&router, "POST", "/my-route", "host.com"), uc(2));
    let loc = [("location", "my-location-1")];
    let m = find(&router, "GET", "/", "test.host.com", None, &loc).unwrap();
    assert_eq!((Some(m.route), m.matched_path), (uc(3), None));
    let m = find(
        &router,
        "GET",
        "/users/123/profile",
        "domain.org",
        None,
        &[],
    )
    .unwrap();
    assert_eq!((Some(m.route), m.matched_path), (uc(4), Some(0..18)));
}

#[test]
fn exec_uri_captures_optional_group() {
    // it("uri_captures works well with the optional capture group. Fix #13014")
    let router = build(&[r().paths(&["~/(users/)?1984/(?<subpath>profile)$"])]);
    let m = find(&router, "GET", "/1984/profile", "domain.org", None, &[]).unwrap();
    assert_eq!(m.captures, caps(&[(Some("subpath"), "profile")]));
}

#[test]
fn exec_uri_captures_from_regex() {
    // it("returns uri_captures from a [uri regex]")
    let router = build(&[r().paths(&[r"~/users/(?P<user_id>\d+)/profile/?(?P<scope>[a-z]*)"])]);
    let m = find(
        &router,
        "GET",
        "/users/1984/profile",
        "domain.org",
        None,
        &[],
    )
    .unwrap();
    assert_eq!(
        m.captures,
        caps(&[(Some("user_id"), "1984"), (Some("scope"), "")])
    );
    // returns the full match as well (captures[0])
    assert_eq!(m.matched_path, Some(0..19));
    let m = find(
        &router,
        "GET",
        "/users/1984/profile/email",
        "domain.org",
        None,
        &[],
    )
    .unwrap();
    assert_eq!(
        m.captures,
        caps(&[(Some("user_id"), "1984"), (Some("scope"), "email")])
    );
    assert_eq!(m.matched_path, Some(0..25));
}

#[test]
fn exec_uri_captures_normalized() {
    // it("returns uri_captures normalized, fix #7913"): the request path
    // `/users/%6aohn%20doe/profile` is normalised before routing (crates/config
    // `path::normalise`, tested there) to `/users/john doe/profile`.
    let router =
        build(&[r().paths(&[r"~/users/(?P<fullname>[a-zA-Z\s\d%]+)/profile/?(?P<scope>[a-z]*)"])]);
    let m = find(
        &router,
        "GET",
        "/users/john doe/profile",
        "domain.org",
        None,
        &[],
    )
    .unwrap();
    assert_eq!(
        m.captures,
        caps(&[(Some("fullname"), "john doe"), (Some("scope"), "")])
    );
    assert_eq!(m.matched_path, Some(0.."/users/john doe/profile".len()));
}

#[test]
fn exec_no_uri_captures() {
    // it("returns no uri_captures from a [uri prefix] match")
    let router = build(&[r().paths(&["/hello"])]);
    let m = find(&router, "GET", "/hello/world", "domain.org", None, &[]).unwrap();
    assert_eq!((m.matched_path, m.captures.len()), (Some(0..6), 0));
    // it("returns no uri_captures from a [uri regex] match without groups")
    let router = build(&[r().paths(&[r"~/users/\d+/profile"])]);
    let m = find(
        &router,
        "GET",
        "/users/1984/profile",
        "domain.org",
        None,
        &[],
    )
    .unwrap();
    assert!(m.captures.is_empty());
}

#[test]
fn exec_url_encoded_reserved_characters() {
    // it("allows url encoded paths if they are reserved characters")
    let router = build(&[r().paths(&["/endel%2Fst"])]);
    let m = find(&router, "GET", "/endel%2Fst", "domain.org", None, &[]).unwrap();
    assert_eq!((Some(m.route), m.matched_path), (uc(1), Some(0..11)));
}

#[test]
fn exec_stripped_paths_prefix() {
    // describe("stripped paths #strip"): the stripped prefix is the matched path.
    let router = build(&[
        r().paths(&["/my-route", "/xx-route"]),
        r().methods(&["POST"]).paths(&["/my-route", "/xx-route"]),
    ]);
    let hit = |method, path| {
        let m = find(&router, method, path, "domain.org", None, &[]).unwrap();
        (Some(m.route), m.matched_path)
    };
    // it("strips the specified paths from the given uri if matching")
    assert_eq!(hit("GET", "/my-route/hello/world"), (uc(1), Some(0..9)));
    // it("strips if matched URI is plain (not a prefix)")
    assert_eq!(hit("GET", "/my-route"), (uc(1), Some(0..9)));
    // it("doesn't strip if 'strip_uri' is not enabled")
    // it("normalized client URI before matching and proxying")
    assert_eq!(hit("POST", "/my-route/hello/world"), (uc(2), Some(0..9)));
    // it("can find an route with stripped URI several times in a row")
    // it("can proxy an route with stripped URI with different URIs in a row")
    for _ in 0..2 {
        assert_eq!(hit("GET", "/my-route"), (uc(1), Some(0..9)));
        assert_eq!(hit("GET", "/xx-route"), (uc(1), Some(0..9)));
    }
    // it("does not strips root / URI")
    let router = build(&[r().paths(&["/"])]);
    let m = find(
        &router,
        "POST",
        "/my-route/hello/world",
        "domain.org",
        None,
        &[],
    )
    .unwrap();
    assert_eq!(m.matched_path, Some(0..1));
    // it("strips url encoded paths")
    let router = build(&[r().paths(&["/endel%2Fst"])]);
    let m = find(&router, "GET", "/endel%2Fst", "domain.org", None, &[]).unwrap();
    assert_eq!(m.matched_path, Some(0..11));
}

#[test]
fn exec_stripped_paths_regex() {
    // it("strips a [uri regex]")
    let router = build(&[r().paths(&[r"~/users/\d+/profile"])]);
    let path = "/users/123/profile/hello/world";
    let m = find(&router, "GET", path, "domain.org", None, &[]).unwrap();
    assert_eq!(m.matched_path, Some(0..18));
    // it("strips a [uri regex] with a capture group")
    let router = build(&[r().paths(&[r"~/users/(\d+)/profile"])]);
    let m = find(&router, "GET", path, "domain.org", None, &[]).unwrap();
    assert_eq!(m.matched_path, Some(0..18));
    assert_eq!(m.captures, caps(&[(None, "123")]));
}

#[test]
fn exec_special_characters() {
    // it("works with special characters('\"','\\')")
    let router = build(&[r().paths(&[r"/\d"]), r().paths(&[r#"~/\d+""#])]);
    assert_eq!(sel(&router, "GET", r"/\d", "domain.org"), uc(1));
    assert_eq!(sel(&router, "GET", "/123\"", "domain.org"), uc(2));
}

// ------------------------------------------------- regex_priority / split paths

#[test]
fn prefix_matching_ignores_regex_priority() {
    // describe("[both regex and prefix with regex_priority]")
    // it("[prefix matching ignore regex_priority]")
    let router = build(&[
        r().paths(&["/.*"]).hosts(&["domain-1.org"]),
        r().paths(&["/"]).hosts(&["domain-2.org"]).regex_priority(5),
        r().paths(&["/v1"]).hosts(&["domain-2.org"]),
    ]);
    assert_eq!(sel(&router, "GET", "/v1", "domain-2.org"), uc(3));
}

#[test]
fn regex_and_prefix_paths_get_own_priorities() {
    // describe("[both regex and prefix]")
    // it("[assigns different priorities to regex and non-regex path]")
    let router = build(&[
        r().paths(&["~/some/thing/else", "/foo"])
            .hosts(&["domain-1.org"]),
        r().paths(&["/foo/bar"]).hosts(&["domain-1.org"]),
    ]);
    assert_eq!(
        sel(&router, "GET", "/some/thing/else", "domain-1.org"),
        uc(1)
    );
    assert_eq!(sel(&router, "GET", "/foo/bar", "domain-1.org"), uc(2));
}

#[test]
fn overlapping_prefixes_get_own_priorities() {
    // describe("[overlapping prefixes]") it("[assigns different priorities to each path]")
    let router = build(&[
        r().paths(&["/foo", "/foo/bar/baz"])
            .hosts(&["domain-1.org"]),
        r().paths(&["/foo/bar"]).hosts(&["domain-1.org"]),
    ]);
    assert_eq!(sel(&router, "GET", "/foo", "domain-1.org"), uc(1));
    assert_eq!(sel(&router, "GET", "/foo/bar", "domain-1.org"), uc(2));
    // (not in the spec) the longest path of the split route still wins where it matches.
    let m = find(&router, "GET", "/foo/bar/baz/x", "domain-1.org", None, &[]).unwrap();
    assert_eq!((Some(m.route), m.matched_path), (uc(1), Some(0..12)));
}

#[test]
fn route_with_multiple_paths_and_no_service() {
    // it("[can create route with multiple paths and no service]")
    let router = build(&[r().paths(&["/foo", "/foo/bar/baz"])]);
    assert_eq!(router.len(), 1);
}

#[test]
fn header_value_match_is_case_insensitive_per_request() {
    // it("[cache hit should be case sensitive]"): each request is matched on its own.
    let router = build(&[r().paths(&["/foo"]).header("test1", &["Quote"])]);
    assert_eq!(
        sel_h(&router, "GET", "/foo", "", &[("test1", "QUOTE")]),
        uc(1)
    );
    assert_eq!(
        sel_h(&router, "GET", "/foo", "", &[("test1", "QuoTe")]),
        uc(1)
    );
}

#[test]
fn host_route_any_path() {
    // it("[cache hit should have correct match_t.upstream_uri]")
    let router = build(&[r().hosts(&["example.com"])]);
    assert_eq!(sel(&router, "GET", "/foo", "example.com"), uc(1));
    assert_eq!(sel(&router, "GET", "/bar", "example.com"), uc(1));
}

// ------------------------------------------- Kong source behaviour (not spec cases)

/// transform.lua `get_expression` L438: a `~*` header regex is lowered with Lua's
/// `string.lower` (ASCII only) before it is compiled, and matched against the
/// lowered header value. So `\D` becomes `\d`, `\W` becomes `\w`, ...
#[test]
fn header_regex_source_lowered_like_kong() {
    let router = build(&[r().header("x-id", &[r"~*^\D+$"])]);
    assert_eq!(sel_h(&router, "GET", "/", "", &[("x-id", "123")]), uc(1));
    assert_eq!(sel_h(&router, "GET", "/", "", &[("x-id", "abc")]), None);
    let router = build(&[r().header("x-id", &[r"~*^A\S+Z$"])]);
    assert_eq!(sel_h(&router, "GET", "/", "", &[("x-id", "A Z")]), uc(1));
    assert_eq!(sel_h(&router, "GET", "/", "", &[("x-id", "AbZ")]), None);
}

/// transform.lua L438: exact values are lowered with `string.lower` (ASCII only)
/// and compared with atc-router's `lower()` of the request value (Unicode
/// `to_lowercase`): a value with a non-ASCII capital can never match.
#[test]
fn header_value_lowered_ascii_only_like_kong() {
    let router = build(&[
        r().header("x-name", &["ÄBC"]),
        r().header("x-name", &["äBC"]),
    ]);
    assert_eq!(sel_h(&router, "GET", "/", "", &[("x-name", "ÄBC")]), uc(2));
    assert_eq!(sel_h(&router, "GET", "/", "", &[("x-name", "äbc")]), uc(2));
}

/// transform.lua L428 names the field `http.headers.<name>` with dashes replaced by
/// underscores, and fields.lua reads it from `ngx.req.get_headers()`, whose lookup
/// tries the name as written (`x_api_version`) and then with underscores turned
/// into dashes (`x-api-version`).
#[test]
fn header_names_dash_and_underscore_like_kong() {
    let router = build(&[r().header("x-api-version", &["2"])]);
    assert_eq!(
        sel_h(&router, "GET", "/", "", &[("X-Api-Version", "2")]),
        uc(1)
    );
    assert_eq!(
        sel_h(&router, "GET", "/", "", &[("x_api_version", "2")]),
        uc(1)
    );
    assert_eq!(
        sel_h(&router, "GET", "/", "", &[("x_api-version", "2")]),
        None
    );
    // A header spelled with underscores hides the dashed one.
    let both = [("x_api_version", "1"), ("x-api-version", "2")];
    assert_eq!(sel_h(&router, "GET", "/", "", &both), None);
    let both = [("x-api-version", "1"), ("x_api_version", "2")];
    assert_eq!(sel_h(&router, "GET", "/", "", &both), uc(1));
    // A header listed without values only has to be present, under either name.
    let router = build(&[r().header("x-flag", &[])]);
    assert_eq!(sel_h(&router, "GET", "/", "", &[("x_flag", "")]), uc(1));
}

/// transform.lua `get_priority` L597-601: the header count is capped at 255 when
/// ranking routes.
#[test]
fn header_count_capped_at_255() {
    let names: Vec<String> = (0..256).map(|i| format!("x-h{i}")).collect();
    let with = |n: usize| {
        let mut route = r();
        for name in &names[..n] {
            route = route.header(name, &["1"]);
        }
        route
    };
    let headers: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "1")).collect();
    // 255 and 256 headers rank the same, so the earlier route wins the tie.
    let router = build(&[with(255), with(256)]);
    assert_eq!(sel_h(&router, "GET", "/", "", &headers), uc(1));
    let router = build(&[with(254), with(255)]);
    assert_eq!(sel_h(&router, "GET", "/", "", &headers), uc(2));
}

/// transform.lua `sni_val_transform` L303-306: a trailing dot of a route SNI is
/// not used for routing.
#[test]
fn sni_trailing_dot_ignored_like_kong() {
    let router = build(&[r().snis(&["example.com."]), r().snis(&["*.example.org."])]);
    let sni = |name| find(&router, "GET", "/", "a.test", Some(name), &[]).map(|m| m.route);
    assert_eq!(sni("example.com"), uc(1));
    assert_eq!(sni("a.example.org"), uc(2));
    assert_eq!(sni("example.net"), None);
}

/// transform.lua `get_expression` L344-352: snis compile to
/// `(net.protocol != "https" || tls.sni == ...)`, so over TLS a client that sent no
/// SNI matches no route with snis. [`RequestInfo::sni`] is `Some("")` then.
#[test]
fn tls_without_sni_matches_no_sni_route() {
    let router = build(&[
        r().snis(&["*.example.com"]).paths(&["/"]),
        r().paths(&["/"]),
    ]);
    let with = |sni| find(&router, "GET", "/", "a.test", sni, &[]).map(|m| m.route);
    assert_eq!(with(None), uc(1), "plain text: snis ignored");
    assert_eq!(with(Some("a.example.com")), uc(1));
    assert_eq!(with(Some("")), uc(2));
}
