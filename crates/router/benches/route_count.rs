//! Lookup cost versus route count: builds routers of 1, 100 and 10,000
//! routes (prefix paths, exact hosts, wildcard hosts), times `build()` and
//! averages `find()` over 1e6 lookups whose hits are spread over the set.
//! A last variant times a plain `HashMap<String, usize>` lookup of the same
//! host names, as a yardstick for what the growing working set alone costs.
//!
//! Run with `cargo bench -p portcullis-router --bench route_count`; an
//! argument filters on "variant/routes", e.g. `-- "exact host/10000"`.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Instant;

use portcullis_router::{RequestInfo, RouteSpec, Router};

const LOOKUPS: usize = 1_000_000;
const ROUNDS: usize = 5;
const DISTINCT_REQUESTS: usize = 1024;
const SIZES: [usize; 3] = [1, 100, 10_000];

/// Name, route `i` of the variant, and the (host, path) of a request hitting it.
type Variant = (
    &'static str,
    fn(usize) -> RouteSpec,
    fn(usize) -> (String, String),
);

const VARIANTS: [Variant; 3] = [
    (
        "prefix path",
        |i| RouteSpec {
            paths: vec![format!("/svc{i}/items")],
            ..Default::default()
        },
        |i| ("gw.example.com".into(), format!("/svc{i}/items/42")),
    ),
    (
        "exact host",
        |i| RouteSpec {
            hosts: vec![format!("svc{i}.example.com")],
            paths: vec!["/".into()],
            ..Default::default()
        },
        |i| (format!("svc{i}.example.com"), "/api/items/42".into()),
    ),
    (
        "wildcard host",
        |i| RouteSpec {
            hosts: vec![format!("*.svc{i}.example.com")],
            ..Default::default()
        },
        |i| (format!("api.svc{i}.example.com"), "/api/items/42".into()),
    ),
];

/// Runs `lookup` on every request index `LOOKUPS` times in `ROUNDS` rounds;
/// returns (mean ns, best round's ns) per lookup. The machine is shared, so
/// the best round is the least disturbed one.
fn time(mut lookup: impl FnMut(usize) -> bool) -> (f64, f64) {
    let per_round = LOOKUPS / ROUNDS;
    let (mut total, mut best) = (0f64, f64::INFINITY);
    for round in 0..ROUNDS {
        let start = Instant::now();
        let mut hits = 0usize;
        for k in round * per_round..(round + 1) * per_round {
            hits += usize::from(lookup(k % DISTINCT_REQUESTS));
        }
        let secs = start.elapsed().as_secs_f64();
        assert_eq!(hits, per_round, "every lookup must hit");
        total += secs;
        best = best.min(secs * 1e9 / per_round as f64);
    }
    (total * 1e9 / LOOKUPS as f64, best)
}

/// Indices of the requests: hits spread over the whole set (7919 is prime).
fn targets(n: usize) -> impl Iterator<Item = usize> {
    (0..DISTINCT_REQUESTS).map(move |k| (k * 7919) % n)
}

fn main() {
    let filter = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    let wanted = |name: &str, n: usize| {
        filter
            .as_ref()
            .is_none_or(|f| format!("{name}/{n}").contains(f.as_str()))
    };
    println!(
        "{:<14} {:>7} {:>10} {:>10} {:>11}",
        "variant", "routes", "build ms", "ns/lookup", "best round"
    );
    for (name, route, request) in VARIANTS {
        for n in SIZES.into_iter().filter(|&n| wanted(name, n)) {
            let specs: Vec<RouteSpec> = (0..n).map(route).collect();
            let start = Instant::now();
            let router = match Router::build(&specs) {
                Ok(r) => r,
                Err(e) => panic!("build failed: {e}"),
            };
            let build_ms = start.elapsed().as_secs_f64() * 1e3;
            let reqs: Vec<(usize, (String, String))> =
                targets(n).map(|i| (i, request(i))).collect();
            let headers: &[(&str, &str)] = &[];
            let (mean, best) = time(|k| {
                let (want, (host, path)) = &reqs[k];
                let req = RequestInfo {
                    method: "GET",
                    host,
                    port: 80,
                    path,
                    sni: None,
                    headers: &headers,
                };
                black_box(router.find(black_box(&req))).is_some_and(|m| m.route == *want)
            });
            println!("{name:<14} {n:>7} {build_ms:>10.2} {mean:>10.1} {best:>11.1}");
        }
    }
    let name = "HashMap (ref)";
    for n in SIZES.into_iter().filter(|&n| wanted(name, n)) {
        let start = Instant::now();
        let map: HashMap<String, usize> =
            (0..n).map(|i| (format!("svc{i}.example.com"), i)).collect();
        let build_ms = start.elapsed().as_secs_f64() * 1e3;
        let reqs: Vec<(usize, String)> = targets(n)
            .map(|i| (i, format!("svc{i}.example.com")))
            .collect();
        let (mean, best) = time(|k| {
            let (want, host) = &reqs[k];
            black_box(map.get(black_box(host.as_str()))) == Some(want)
        });
        println!("{name:<14} {n:>7} {build_ms:>10.2} {mean:>10.1} {best:>11.1}");
    }
}
