//! Property tests: the indexed router agrees with a naive linear reference
//! implementation, and never panics on arbitrary input.

#![allow(clippy::unwrap_used)]

use portcullis_router::{RequestInfo, RouteSpec, Router};
use proptest::prelude::*;
use proptest::sample::select;

mod naive;

use naive::{reference, Req};

const ROUTE_HOSTS: &[&str] = &[
    "a.com",
    "b.com",
    "*.a.com",
    "a.*",
    "a.com:8000",
    "*.a.com:8000",
    "b.a.com",
    "a.b",
    "b.*:80",
];
const REQ_HOSTS: &[&str] = &[
    "a.com",
    "b.com",
    "b.a.com",
    "c.b.a.com",
    "a.org",
    "a.b",
    "x.com",
    "",
];
const REGEXES: &[&str] = &[
    "~/a+",
    "~/(?<x>[ab])/?",
    "~/b/(a)?(b)",
    "~/a|/b",
    "~/[ab]*$",
    "~(/a)(?P<n>/b)?",
    "~/",
];
const HEADER_VALUES: &[&str] = &["1", "2", "A", "~*^a$", "~*b"];

fn strings(pool: &'static [&'static str], max: usize) -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(select(pool).prop_map(String::from), 0..=max)
}

fn route() -> impl Strategy<Value = RouteSpec> {
    let path = prop_oneof![
        3 => "(/[ab/]{0,3})?",
        2 => select(REGEXES).prop_map(String::from),
    ];
    let header = (
        select(&["x-a", "x-b"][..]).prop_map(String::from),
        strings(HEADER_VALUES, 2),
    );
    (
        prop::sample::subsequence(vec!["GET".to_string(), "POST".to_string()], 0..=2),
        strings(ROUTE_HOSTS, 2),
        prop::collection::vec(path, 0..=3),
        prop::collection::vec(header, 0..=2),
        strings(&["a.com", "*.a.com", "b.*"], 1),
        -1i64..=2,
    )
        .prop_map(
            |(methods, hosts, paths, headers, snis, regex_priority)| RouteSpec {
                methods,
                hosts,
                paths,
                headers,
                snis,
                regex_priority,
            },
        )
}

fn request() -> impl Strategy<Value = Req> {
    let header = (
        select(&["x-a", "x-b", "x-c"][..]).prop_map(String::from),
        select(&["1", "2", "a", "A", "b", "xb"][..]).prop_map(String::from),
    );
    (
        select(&["GET", "POST", "PUT"][..]),
        select(REQ_HOSTS),
        select(&[80u16, 8000][..]),
        "[ab/1]{0,6}",
        prop::option::of(select(&["a.com", "b.a.com", "b.org"][..])),
        prop::collection::vec(header, 0..=3),
    )
        .prop_map(|(method, host, port, path, sni, headers)| Req {
            method: method.into(),
            host: host.into(),
            port,
            path,
            sni: sni.map(String::from),
            headers,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn indexed_matches_reference(
        routes in prop::collection::vec(route(), 0..12),
        reqs in prop::collection::vec(request(), 1..24),
    ) {
        let router = Router::build(&routes).unwrap();
        for q in &reqs {
            prop_assert_eq!(router.find(&q.info()), reference(&routes, q), "request {:?}", q);
        }
    }

    #[test]
    fn never_panics_on_arbitrary_input(
        specs in prop::collection::vec((any::<String>(), "\\PC{0,8}", any::<String>()), 0..6),
        method in any::<String>(),
        host in any::<String>(),
        path in any::<String>(),
        sni in prop::option::of(any::<String>()),
        port in any::<u16>(),
    ) {
        let mut routes: Vec<RouteSpec> = specs
            .into_iter()
            .map(|(p, h, v)| RouteSpec {
                paths: vec![p.clone(), format!("~{p}")],
                hosts: vec![h.clone(), format!("*.{h}"), format!("{h}.*:{port}")],
                headers: vec![(h, vec![v.clone(), format!("~*{v}")])],
                snis: vec![path.clone()],
                ..Default::default()
            })
            .collect();
        // Each route alone, so invalid parts only fail their own build.
        let headers = vec![(host.clone(), path.clone())];
        let q = RequestInfo { method: &method, host: &host, port, path: &path, sni: sni.as_deref(), headers: &headers };
        for r in &routes {
            if let Ok(router) = Router::build(std::slice::from_ref(r)) {
                let _ = router.find(&q);
            }
        }
        routes.push(RouteSpec { paths: vec!["/".into(), "~/(?<x>.)".into()], hosts: vec!["*.com".into(), "a.*".into()], ..Default::default() });
        let router = Router::build(&routes[routes.len() - 1..]).unwrap();
        let _ = router.find(&q);
    }
}

/// Large route sets: lookups still find the right route.
#[test]
fn large_route_sets() {
    let n = 10_000;
    let by_path: Vec<RouteSpec> = (0..n)
        .map(|i| RouteSpec {
            paths: vec![format!("/svc{i}/items")],
            ..Default::default()
        })
        .collect();
    let by_host: Vec<RouteSpec> = (0..n)
        .map(|i| RouteSpec {
            hosts: vec![format!("svc{i}.example.com")],
            paths: vec!["/".into()],
            ..Default::default()
        })
        .collect();
    let (rp, rh) = (
        Router::build(&by_path).unwrap(),
        Router::build(&by_host).unwrap(),
    );
    for i in [0, 1, 10, 999, 5000, 9999] {
        let path = format!("/svc{i}/items/42");
        let host = format!("svc{i}.example.com");
        let mut q = Req {
            method: "GET".into(),
            host: "x".into(),
            port: 80,
            path,
            sni: None,
            headers: vec![],
        };
        assert_eq!(rp.find(&q.info()).map(|m| m.route), Some(i));
        q.host = host;
        assert_eq!(rh.find(&q.info()).map(|m| m.route), Some(i));
    }
    let q = Req {
        method: "GET".into(),
        host: "nope".into(),
        port: 80,
        path: "/svc10000/items".into(),
        sni: None,
        headers: vec![],
    };
    assert_eq!(rp.find(&q.info()), None);
    assert_eq!(rh.find(&q.info()), None);
}
