//! Table tests for the matching and priority rules.

use crate::{Match, RequestInfo, RouteSpec, Router};

mod criteria;
mod kong_spec;

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

fn paths(p: &[&str]) -> RouteSpec {
    RouteSpec {
        paths: s(p),
        ..Default::default()
    }
}

fn hosts(h: &[&str]) -> RouteSpec {
    RouteSpec {
        hosts: s(h),
        ..Default::default()
    }
}

fn hdr(name: &str, values: &[&str]) -> (String, Vec<String>) {
    (name.to_string(), s(values))
}

/// A request; `headers` are `(name, value)` pairs.
struct Req<'a> {
    method: &'a str,
    host: &'a str,
    port: u16,
    path: &'a str,
    sni: Option<&'a str>,
    headers: Vec<(&'a str, &'a str)>,
}

fn req(path: &str) -> Req<'_> {
    Req {
        method: "GET",
        host: "example.com",
        port: 80,
        path,
        sni: None,
        headers: vec![],
    }
}

impl Req<'_> {
    fn find(&self, router: &Router) -> Option<Match> {
        router.find(&RequestInfo {
            method: self.method,
            host: self.host,
            port: self.port,
            path: self.path,
            sni: self.sni,
            headers: &self.headers,
        })
    }
}

fn route_of(routes: &[RouteSpec], r: &Req<'_>) -> Option<usize> {
    r.find(&Router::build(routes).unwrap()).map(|m| m.route)
}

#[test]
fn prefix_rules() {
    let routes = [paths(&["/foo"]), paths(&["/foo/bar"]), paths(&["/"])];
    assert_eq!(route_of(&routes, &req("/foo/bar/baz")), Some(1));
    assert_eq!(route_of(&routes, &req("/foo/ba")), Some(0));
    assert_eq!(
        route_of(&routes, &req("/foobar")),
        Some(0),
        "/foo matches /foobar"
    );
    assert_eq!(route_of(&routes, &req("/other")), Some(2));
    assert_eq!(route_of(&routes[..2], &req("/fo")), None);
    assert_eq!(route_of(&routes[..2], &req("")), None);
}

#[test]
fn regex_beats_longer_prefix_and_regex_priority_orders() {
    let mut r1 = paths(&["~/foo/\\d+"]);
    let mut r2 = paths(&["~/foo/1"]);
    let routes = [paths(&["/foo/123/long/prefix"]), r1.clone(), r2.clone()];
    assert_eq!(
        route_of(&routes, &req("/foo/123/long/prefix")),
        Some(1),
        "tie -> lower index"
    );
    r2.regex_priority = 5;
    let routes = [paths(&["/foo/123/long/prefix"]), r1.clone(), r2.clone()];
    assert_eq!(route_of(&routes, &req("/foo/123/long/prefix")), Some(2));
    r1.regex_priority = 10;
    let routes = [paths(&["/foo/123"]), r1, r2];
    assert_eq!(route_of(&routes, &req("/foo/123")), Some(1));
    // Negative regex_priority still beats a prefix (REGEX_URL is more significant).
    let mut neg = paths(&["~/a"]);
    neg.regex_priority = -3;
    assert_eq!(
        route_of(&[paths(&["/a/b/c"]), neg], &req("/a/b/c")),
        Some(1)
    );
}

#[test]
fn host_exact_beats_wildcard_and_wildcards_match() {
    let routes = [
        hosts(&["*.example.com"]),
        hosts(&["api.example.com"]),
        hosts(&["api.*"]),
    ];
    let mut r = req("/");
    r.host = "api.example.com";
    assert_eq!(route_of(&routes, &r), Some(1));
    r.host = "x.y.example.com";
    assert_eq!(
        route_of(&routes, &r),
        Some(0),
        "suffix wildcard spans labels"
    );
    r.host = "api.example.org";
    assert_eq!(route_of(&routes, &r), Some(2));
    r.host = "example.com";
    assert_eq!(route_of(&routes, &r), None, "*.example.com needs a label");
    // Mixed exact + wildcard hosts are not "plain host only".
    let routes = [hosts(&["a.com", "*.b.com"]), hosts(&["a.com"])];
    r.host = "a.com";
    assert_eq!(route_of(&routes, &r), Some(1));
    r.host = "x.b.com";
    assert_eq!(route_of(&routes, &r), Some(0));
}

#[test]
fn more_criteria_beats_fewer() {
    let long_prefix = paths(&["/api/v1/users/long"]);
    let with_method = RouteSpec {
        methods: s(&["GET"]),
        paths: s(&["/api"]),
        ..Default::default()
    };
    let routes = [long_prefix, with_method];
    assert_eq!(route_of(&routes, &req("/api/v1/users/long")), Some(1));
    let mut post = req("/api/v1/users/long");
    post.method = "POST";
    assert_eq!(route_of(&routes, &post), Some(0));
    // A pathless host route (weight 1) loses to host + path (weight 2).
    let routes = [
        hosts(&["example.com"]),
        RouteSpec {
            paths: s(&["/x"]),
            ..hosts(&["*.com"])
        },
    ];
    assert_eq!(route_of(&routes, &req("/x")), Some(1));
    assert_eq!(route_of(&routes, &req("/y")), Some(0));
}

#[test]
fn header_count_and_values() {
    let one = RouteSpec {
        headers: vec![hdr("x-a", &["1"])],
        ..paths(&["/"])
    };
    let two = RouteSpec {
        headers: vec![hdr("x-a", &["1", "2"]), hdr("x-b", &["B"])],
        ..paths(&["/"])
    };
    let routes = [one, two];
    let mut r = req("/");
    r.headers = vec![("x-a", "2"), ("x-a", "1"), ("x-b", "b")];
    assert_eq!(
        route_of(&routes, &r),
        Some(1),
        "two header criteria win; values case-insensitive"
    );
    r.headers = vec![("x-a", "1")];
    assert_eq!(route_of(&routes, &r), Some(0));
    r.headers = vec![("x-a", "3"), ("x-b", "b")];
    assert_eq!(route_of(&routes, &r), None);
    // Header count outranks REGEX_URL.
    let routes = [
        paths(&["~/"]),
        RouteSpec {
            headers: vec![hdr("x-a", &["1"]), hdr("x-b", &["1"])],
            ..hosts(&["example.com"])
        },
    ];
    let routes2 = [
        RouteSpec {
            headers: vec![hdr("x-a", &["1"])],
            ..paths(&["~/"])
        },
        RouteSpec {
            headers: vec![hdr("x-a", &["1"]), hdr("x-b", &["1"])],
            ..paths(&["/"])
        },
    ];
    r.headers = vec![("x-a", "1"), ("x-b", "1")];
    assert_eq!(route_of(&routes, &r), Some(1), "weight 2 beats weight 1");
    assert_eq!(route_of(&routes2, &r), Some(1));
}

#[test]
fn ties_go_to_lower_index_and_first_path() {
    let routes = [paths(&["/a"]), paths(&["/a"])];
    assert_eq!(route_of(&routes, &req("/a")), Some(0));
    let routes = [paths(&["~/x", "~/y"]), paths(&["~/y"])];
    assert_eq!(route_of(&routes, &req("/y")), Some(0));
    let router = Router::build(&[paths(&["~/(a)", "~/(a)(b)?"])]).unwrap();
    assert_eq!(req("/ab").find(&router).unwrap().matched_path, Some(0..2));
}
