//! Table tests for individual criteria, captures, ranges and build errors.

use super::{hdr, hosts, paths, req, route_of, s};
use crate::{RouteSpec, Router, RouterError};

#[test]
fn host_with_port() {
    let routes = [
        hosts(&["example.com:8000"]),
        hosts(&["*.example.com:8443", "example.*:9000"]),
    ];
    let mut r = req("/");
    r.port = 8000;
    assert_eq!(route_of(&routes, &r), Some(0));
    r.port = 80;
    assert_eq!(route_of(&routes, &r), None);
    r.host = "a.example.com";
    r.port = 8443;
    assert_eq!(route_of(&routes, &r), Some(1));
    r.host = "example.net";
    assert_eq!(route_of(&routes, &r), None);
    r.port = 9000;
    assert_eq!(route_of(&routes, &r), Some(1));
}

#[test]
fn header_regex_case_insensitive() {
    let routes = [RouteSpec {
        headers: vec![hdr("x-v", &["~*^v\\d+$", "exact"])],
        ..Default::default()
    }];
    let mut r = req("/");
    for (v, ok) in [
        ("V12", true),
        ("v1x", false),
        ("EXACT", true),
        ("exactly", false),
    ] {
        r.headers = vec![("x-v", v)];
        assert_eq!(route_of(&routes, &r).is_some(), ok, "{v}");
    }
    let unanchored = [RouteSpec {
        headers: vec![hdr("ua", &["~*bot"])],
        ..Default::default()
    }];
    r.headers = vec![("ua", "Mozilla GoogleBOT/2")];
    assert_eq!(route_of(&unanchored, &r), Some(0));
    r.headers = vec![];
    assert_eq!(route_of(&unanchored, &r), None);
}

#[test]
fn methods() {
    let routes = [RouteSpec {
        methods: s(&["GET", "HEAD"]),
        ..Default::default()
    }];
    for (m, ok) in [
        ("GET", true),
        ("HEAD", true),
        ("POST", false),
        ("get", false),
    ] {
        let mut r = req("/");
        r.method = m;
        assert_eq!(route_of(&routes, &r).is_some(), ok, "{m}");
    }
}

#[test]
fn snis_only_enforced_over_tls() {
    let routes = [
        RouteSpec {
            snis: s(&["*.example.com"]),
            ..paths(&["/"])
        },
        paths(&["/"]),
    ];
    let mut r = req("/");
    assert_eq!(
        route_of(&routes, &r),
        Some(0),
        "plain text ignores snis, but they still weigh"
    );
    r.sni = Some("a.example.com");
    assert_eq!(route_of(&routes, &r), Some(0));
    r.sni = Some("other.org");
    assert_eq!(route_of(&routes, &r), Some(1));
}

#[test]
fn captures_and_ranges() {
    let router = Router::build(&[
        paths(&["~/users/(?<id>\\d+)(/(?P<tab>\\w+))?(x)?", "/static"]),
        paths(&["~/a|/b"]),
    ])
    .unwrap();
    let m = req("/users/42/posts?").find(&router).unwrap();
    assert_eq!(m.route, 0);
    assert_eq!(m.matched_path, Some(0..15));
    let want = vec![
        (Some("id".to_string()), "42".to_string()),
        (None, "/posts".to_string()),
        (Some("tab".to_string()), "posts".to_string()),
    ];
    assert_eq!(m.captures, want);
    let m = req("/users/7").find(&router).unwrap();
    assert_eq!(m.captures, vec![(Some("id".to_string()), "7".to_string())]);
    let m = req("/static/x.css").find(&router).unwrap();
    assert_eq!(
        (m.route, m.matched_path, m.captures.len()),
        (0, Some(0..7), 0)
    );
    // Alternatives are all anchored at the start.
    assert_eq!(route_of(&router_specs(), &req("/zz/b")), None);
    let m = req("/b/zz").find(&router).unwrap();
    assert_eq!((m.route, m.matched_path), (1, Some(0..2)));
    let pathless = Router::build(&[hosts(&["example.com"])]).unwrap();
    assert_eq!(req("/q").find(&pathless).unwrap().matched_path, None);
}

fn router_specs() -> Vec<RouteSpec> {
    vec![paths(&["~/a|/b"])]
}

type ErrCheck = fn(&RouterError) -> bool;

#[test]
fn build_errors() {
    let cases: [(RouteSpec, ErrCheck); 5] = [
        (paths(&["~/(unclosed"]), |e| {
            matches!(e, RouterError::InvalidRegex { .. })
        }),
        (paths(&["~/a)|(/b"]), |e| {
            matches!(e, RouterError::InvalidRegex { .. })
        }),
        (hosts(&["a.*.com"]), |e| {
            matches!(e, RouterError::InvalidHost { .. })
        }),
        (
            RouteSpec {
                snis: s(&["*"]),
                ..Default::default()
            },
            |e| matches!(e, RouterError::InvalidSni { .. }),
        ),
        (
            RouteSpec {
                headers: vec![hdr("x", &["~*("])],
                ..Default::default()
            },
            |e| matches!(e, RouterError::InvalidHeaderRegex { .. }),
        ),
    ];
    for (spec, check) in cases {
        let err = Router::build(&[paths(&["/ok"]), spec]).unwrap_err();
        assert!(check(&err), "{err}");
        assert!(err.to_string().starts_with("route 1:"), "{err}");
    }
}

#[test]
fn misc() {
    let empty = Router::build(&[]).unwrap();
    assert!(empty.is_empty());
    assert_eq!(req("/").find(&empty), None);
    let r = Router::build(&[RouteSpec::default(), paths(&["/a", "/b"])]).unwrap();
    assert_eq!(r.len(), 2);
    assert_eq!(
        route_of(&[RouteSpec::default()], &req("/anything")),
        Some(0)
    );
    // A header listed with no values only needs to be present.
    let routes = [RouteSpec {
        headers: vec![hdr("x-p", &[])],
        ..Default::default()
    }];
    let mut q = req("/");
    assert_eq!(route_of(&routes, &q), None);
    q.headers = vec![("X-P", "")];
    assert_eq!(route_of(&routes, &q), Some(0));
}

#[test]
fn several_hosts_and_mixed_ports() {
    // One route under several exact hosts, one with and one without a port.
    let routes = [
        RouteSpec {
            paths: s(&["/"]),
            ..hosts(&["a.com:8000", "a.com", "b.com:8000", "*.c.com"])
        },
        paths(&["/"]),
    ];
    let mut r = req("/x");
    for (host, port, want) in [
        ("a.com", 80, Some(0)),
        ("a.com", 8000, Some(0)),
        ("b.com", 8000, Some(0)),
        ("b.com", 80, Some(1)),
        ("x.c.com", 1, Some(0)),
        ("c.com", 1, Some(1)),
    ] {
        (r.host, r.port) = (host, port);
        assert_eq!(route_of(&routes, &r), want, "{host}:{port}");
    }
}
