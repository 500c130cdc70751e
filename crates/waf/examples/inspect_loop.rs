//! Times `Rules::inspect` on a benign GET (profiling aid): `cargo run --release -p portcullis-waf --example inspect_loop [n]`.
use std::time::Instant;

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2000);
    let rules =
        portcullis_waf::Rules::from_crs(&portcullis_waf::CrsConfig::default()).expect("crs");
    let req = portcullis_waf::Request::new("GET", "/waf/get?x=1")
        .header("host", "127.0.0.1:8000")
        .header("user-agent", "wrk")
        .header("accept", "*/*");
    for _ in 0..100 {
        rules.inspect(&req).expect("inspect");
    }
    let t = Instant::now();
    for _ in 0..n {
        let v = rules.inspect(&req).expect("inspect");
        assert!(!v.blocked);
    }
    let el = t.elapsed();
    println!(
        "{n} inspections: {:.1} us each",
        el.as_secs_f64() * 1e6 / n as f64
    );
}
