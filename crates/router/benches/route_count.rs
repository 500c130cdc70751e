//! Lookup cost versus route count: builds routers of 1, 100 and 10,000
//! routes (prefix paths, exact hosts, wildcard hosts), times `build()` and
//! averages `find()` over ~1e6 lookups whose hits are spread over the set.
//!
//! Run with `cargo bench -p portcullis-router --bench route_count`.

use std::hint::black_box;
use std::time::Instant;

use portcullis_router::{RequestInfo, RouteSpec, Router};

const LOOKUPS: usize = 1_000_000;
const ROUNDS: usize = 5;
const DISTINCT_REQUESTS: usize = 1024;

/// Builds route `i` of a variant and the (host, path) of a request hitting it.
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

fn main() {
    // Optional filter on "variant/routes" (cargo passes `--bench`; skip flags).
    let filter = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    println!(
        "{:<14} {:>7} {:>10} {:>10}",
        "variant", "routes", "build ms", "ns/lookup"
    );
    for (name, route, request) in VARIANTS {
        for n in [1usize, 100, 10_000] {
            if filter
                .as_ref()
                .is_some_and(|f| !format!("{name}/{n}").contains(f.as_str()))
            {
                continue;
            }
            let specs: Vec<RouteSpec> = (0..n).map(route).collect();
            let start = Instant::now();
            let router = match Router::build(&specs) {
                Ok(r) => r,
                Err(e) => panic!("build failed: {e}"),
            };
            let build_ms = start.elapsed().as_secs_f64() * 1e3;

            // Hits spread over the whole set (7919 is prime, so the stride covers it).
            let reqs: Vec<(usize, String, String)> = (0..DISTINCT_REQUESTS)
                .map(|k| {
                    let i = (k * 7919) % n;
                    let (host, path) = request(i);
                    (i, host, path)
                })
                .collect();
            let headers: &[(&str, &str)] = &[];
            // ROUNDS rounds of LOOKUPS / ROUNDS; report the mean and the best
            // round (the machine is shared, so the best round is the least noisy).
            let (mut total, mut best) = (0f64, f64::INFINITY);
            for round in 0..ROUNDS {
                let per_round = LOOKUPS / ROUNDS;
                let start = Instant::now();
                let mut hits = 0usize;
                for k in round * per_round..(round + 1) * per_round {
                    let (want, host, path) = &reqs[k % DISTINCT_REQUESTS];
                    let req = RequestInfo {
                        method: "GET",
                        host,
                        port: 80,
                        path,
                        sni: None,
                        headers: &headers,
                    };
                    let found = black_box(router.find(black_box(&req)));
                    hits += usize::from(found.is_some_and(|m| m.route == *want));
                }
                let secs = start.elapsed().as_secs_f64();
                assert_eq!(hits, per_round, "every lookup must hit its route");
                total += secs;
                best = best.min(secs * 1e9 / per_round as f64);
            }
            let mean = total * 1e9 / LOOKUPS as f64;
            println!("{name:<14} {n:>7} {build_ms:>10.2} {mean:>10.1} {best:>10.1}");
        }
    }
}
