//! Traffic-control plugins through the real binary: ip-restriction, bot-detection, cors and
//! rate-limiting (local and Redis policies, fixed and sliding windows).
//!
//! The Redis tests need a Redis on 127.0.0.1:6379 (`.ci/run` starts one) and fail loudly when
//! it is not there.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;

/// A config with one service and one route `/` carrying `plugins` (YAML list items, indented
/// by 10 spaces).
fn route_with(origin: &str, plugins: &str) -> String {
    format!(
        r#"_format_version: "3.0"
services:
  - name: svc
    url: {origin}
    routes:
      - name: r
        paths: [/]
        plugins:
{plugins}"#
    )
}

// ---------------------------------------------------------------- ip-restriction

#[tokio::test]
async fn ip_restriction_allow_and_deny() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&route_with(
        &origin.url(),
        "          - name: ip-restriction\n            config: {allow: [10.0.0.0/8, \"2001:db8::/32\"]}\n",
    ))
    .await;
    // The test client is 127.0.0.1: not in the allow list.
    let r = gw.get("/").await;
    assert_status(&r, 403);
    assert_error_body(&r, "IP address not allowed: 127.0.0.1");
    assert_eq!(
        r.header("content-type").unwrap(),
        "application/json; charset=utf-8"
    );
    assert_eq!(origin.hits(), 0);

    // A spoofed X-Forwarded-For from an untrusted peer changes nothing.
    let r = get(gw.proxy, "/", &[("x-forwarded-for", "10.1.2.3")])
        .await
        .unwrap();
    assert_status(&r, 403);
    assert_eq!(r.json()["message"], "IP address not allowed: 127.0.0.1");
    let r = get(gw.proxy, "/", &[("x-real-ip", "10.1.2.3")])
        .await
        .unwrap();
    assert_status(&r, 403);
    assert_eq!(origin.hits(), 0);

    let gw = Gw::start(&route_with(
        &origin.url(),
        "          - name: ip-restriction\n            config: {deny: [127.0.0.0/30], status: 401, message: go away}\n",
    ))
    .await;
    let r = gw.get("/").await;
    assert_status(&r, 401);
    assert_error_body(&r, "go away");

    let gw = Gw::start(&route_with(
        &origin.url(),
        "          - name: ip-restriction\n            config: {allow: [127.0.0.1], deny: [10.0.0.1]}\n",
    ))
    .await;
    let r = gw.get("/").await;
    assert_status(&r, 200);
    assert_eq!(origin.hits(), 1);
}

#[tokio::test]
async fn ip_restriction_uses_forwarded_address_only_from_trusted_proxies() {
    let origin = Origin::start("a").await;
    let config = route_with(
        &origin.url(),
        "          - name: ip-restriction\n            config: {allow: [10.0.0.0/8, \"2001:db8::/32\"], deny: [10.9.0.0/16]}\n",
    );
    let gw = Gw::start_with(&config, "trusted_ips = [\"127.0.0.1/32\"]\n").await;

    // The peer (127.0.0.1) is trusted: the forwarded client address is checked.
    let r = get(gw.proxy, "/", &[("x-forwarded-for", "10.1.2.3")])
        .await
        .unwrap();
    assert_status(&r, 200);
    let r = get(gw.proxy, "/", &[("x-forwarded-for", "10.9.0.1")])
        .await
        .unwrap();
    assert_status(&r, 403);
    assert_eq!(r.json()["message"], "IP address not allowed: 10.9.0.1");
    let r = get(gw.proxy, "/", &[("x-forwarded-for", "192.168.0.1")])
        .await
        .unwrap();
    assert_status(&r, 403);

    // IPv6, and IPv4-mapped IPv6 treated as IPv4.
    let r = get(gw.proxy, "/", &[("x-forwarded-for", "2001:db8::42")])
        .await
        .unwrap();
    assert_status(&r, 200);
    let r = get(gw.proxy, "/", &[("x-forwarded-for", "2001:db9::42")])
        .await
        .unwrap();
    assert_status(&r, 403);
    assert_eq!(r.json()["message"], "IP address not allowed: 2001:db9::42");
    let r = get(gw.proxy, "/", &[("x-forwarded-for", "::ffff:10.1.2.3")])
        .await
        .unwrap();
    assert_status(&r, 200);
    let r = get(gw.proxy, "/", &[("x-forwarded-for", "::ffff:10.9.9.9")])
        .await
        .unwrap();
    assert_status(&r, 403);
    assert_eq!(r.json()["message"], "IP address not allowed: 10.9.9.9");

    // A client behind the trusted proxy cannot plant an allowed address in front of its own:
    // the rightmost untrusted entry is the client.
    let r = get(
        gw.proxy,
        "/",
        &[("x-forwarded-for", "10.1.2.3, 192.168.7.7")],
    )
    .await
    .unwrap();
    assert_status(&r, 403);
    assert_eq!(r.json()["message"], "IP address not allowed: 192.168.7.7");
    assert_eq!(origin.hits(), 3);
}

#[tokio::test]
async fn ip_restriction_config_errors_name_the_field() {
    let dir = temp_dir();
    let file = dir.join("kong.yml");
    write_file(
        &file,
        &route_with(
            "http://127.0.0.1:9",
            "          - name: ip-restriction\n            config: {allow: [10.0.0.0/33]}\n          - name: bot-detection\n            config: {deny: [\"(x\"]}\n          - name: cors\n            config: {origins: [\"null\"], color: red}\n          - name: rate-limiting\n            config: {limit_by: ip}\n          - name: rate-limiting\n            config: {minute: 5, hour: 2, policy: redis}\n",
        ),
    );
    let out = std::process::Command::new(common::bin())
        .args(["config", "validate"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "services[0].routes[0].plugins[0].config.allow[0]: invalid ip or cidr range: '10.0.0.0/33'",
        "services[0].routes[0].plugins[1].config.deny[0]: not a valid regex: (x",
        "services[0].routes[0].plugins[2].config.origins[0]: the 'null' origin cannot be allowed",
        "services[0].routes[0].plugins[2].config.color: unknown field",
        "services[0].routes[0].plugins[3].config: at least one of these fields must be non-empty: 'config.second', 'config.minute', 'config.hour', 'config.day', 'config.month', 'config.year'",
        "services[0].routes[0].plugins[4].config: The limit for hour(2.0) cannot be lower than the limit for minute(5.0)",
        "services[0].routes[0].plugins[4].config.redis.host: required field missing",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
}

// ---------------------------------------------------------------- bot-detection

#[tokio::test]
async fn bot_detection_builtin_list_and_custom_rules() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&route_with(
        &origin.url(),
        "          - name: bot-detection\n",
    ))
    .await;
    for ua in [
        "sqlmap/1.7.2#stable (https://sqlmap.org)",
        "Mozilla/5.00 (Nikto/2.1.6) (Evasions:None) (Test:000003)",
        "Mozilla/5.0 (compatible; Nmap Scripting Engine; https://nmap.org/book/nse.html)",
        "masscan/1.3 (https://github.com/robertdavidgraham/masscan)",
        "Mozilla/5.0 zgrab/0.x",
        "Nuclei - Open-source project (github.com/projectdiscovery/nuclei)",
        "gobuster/3.6",
        "WPScan v3.8.22 (https://wpscan.com/wordpress-security-scanner)",
    ] {
        let r = get(gw.proxy, "/", &[("user-agent", ua)]).await.unwrap();
        assert_status(&r, 403);
        assert_error_body(&r, "Forbidden");
    }
    assert_eq!(origin.hits(), 0);
    let r = get(
        gw.proxy,
        "/",
        &[(
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        )],
    )
    .await
    .unwrap();
    assert_status(&r, 200);
    // No User-Agent at all passes; two are refused.
    assert_status(&gw.get("/").await, 200);
    let r = get(
        gw.proxy,
        "/",
        &[("user-agent", "curl/8.0"), ("user-agent", "curl/8.1")],
    )
    .await
    .unwrap();
    assert_status(&r, 400);
    assert_error_body(&r, "Only one User-Agent header allowed");

    let gw = Gw::start(&route_with(
        &origin.url(),
        "          - name: bot-detection\n            config: {allow: [\"^sqlmap/1\\\\.7\"], deny: [\"^curl/\", \"(?i)badbot\"]}\n",
    ))
    .await;
    let r = get(gw.proxy, "/", &[("user-agent", "sqlmap/1.7.2")])
        .await
        .unwrap();
    assert_status(&r, 200);
    let r = get(gw.proxy, "/", &[("user-agent", "sqlmap/1.6")])
        .await
        .unwrap();
    assert_status(&r, 403);
    let r = get(gw.proxy, "/", &[("user-agent", "curl/8.5.0")])
        .await
        .unwrap();
    assert_status(&r, 403);
    let r = get(gw.proxy, "/", &[("user-agent", "Mozilla/5.0 BADBOT")])
        .await
        .unwrap();
    assert_status(&r, 403);
    assert_eq!(r.json()["message"], "Forbidden");
    let r = get(gw.proxy, "/", &[("user-agent", "Wget/1.21")])
        .await
        .unwrap();
    assert_status(&r, 200);
}

// ---------------------------------------------------------------- cors

async fn preflight(gw: &Gw, origin: &str, extra: &[(&str, &str)]) -> Reply {
    let mut h = vec![
        ("origin", origin),
        ("access-control-request-method", "POST"),
    ];
    h.extend_from_slice(extra);
    request(gw.proxy, "OPTIONS", "/", &h, "").await.unwrap()
}

#[tokio::test]
async fn cors_preflight_and_actual_requests() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&route_with(
        &origin.url(),
        "          - name: cors\n            config:\n              origins: [\"https://app.example.com\", \"https://.*\\\\.partner\\\\.test\"]\n              headers: [X-Api-Key, Content-Type]\n              exposed_headers: [X-Request-Id]\n              max_age: 600\n              private_network: true\n",
    ))
    .await;

    let r = preflight(
        &gw,
        "https://app.example.com",
        &[("access-control-request-private-network", "true")],
    )
    .await;
    assert_status(&r, 200);
    assert!(r.body.is_empty());
    assert_eq!(
        r.header("access-control-allow-origin").unwrap(),
        "https://app.example.com"
    );
    assert_eq!(r.header("vary").unwrap(), "Origin");
    assert_eq!(
        r.header("access-control-allow-methods").unwrap(),
        "GET,HEAD,PUT,PATCH,POST,DELETE,OPTIONS,TRACE,CONNECT"
    );
    assert_eq!(
        r.header("access-control-allow-headers").unwrap(),
        "X-Api-Key,Content-Type"
    );
    assert_eq!(r.header("access-control-max-age").unwrap(), "600");
    assert_eq!(
        r.header("access-control-allow-private-network").unwrap(),
        "true"
    );
    assert!(r.header("access-control-allow-credentials").is_none());
    assert!(r.header("access-control-expose-headers").is_none());
    assert_eq!(origin.hits(), 0, "preflights are answered by the gateway");

    // Regex origins are anchored at both ends.
    let r = preflight(&gw, "https://eu.partner.test", &[]).await;
    assert_eq!(
        r.header("access-control-allow-origin").unwrap(),
        "https://eu.partner.test"
    );
    for evil in [
        "https://eu.partner.test.evil.test",
        "https://app.example.com.evil.test",
        "https://evilapp.example.com",
        "null",
    ] {
        let r = preflight(&gw, evil, &[]).await;
        assert_status(&r, 200);
        assert!(
            r.header("access-control-allow-origin").is_none(),
            "{evil} must not be allowed"
        );
        assert_eq!(r.header("vary").unwrap(), "Origin");
    }

    // Actual request: proxied, headers added on the way back.
    let r = get(gw.proxy, "/", &[("origin", "https://app.example.com")])
        .await
        .unwrap();
    assert_status(&r, 200);
    assert_eq!(
        r.header("access-control-allow-origin").unwrap(),
        "https://app.example.com"
    );
    assert_eq!(
        r.header("access-control-expose-headers").unwrap(),
        "X-Request-Id"
    );
    assert_eq!(r.header("vary").unwrap(), "Origin");
    let r = get(
        gw.proxy,
        "/",
        &[("origin", "https://app.example.com.evil.test")],
    )
    .await
    .unwrap();
    assert_status(&r, 200);
    assert!(r.header("access-control-allow-origin").is_none());

    // OPTIONS without Access-Control-Request-Method is not a preflight: proxied.
    let before = origin.hits();
    let r = request(
        gw.proxy,
        "OPTIONS",
        "/",
        &[("origin", "https://app.example.com")],
        "",
    )
    .await
    .unwrap();
    assert_status(&r, 200);
    assert_eq!(origin.hits(), before + 1);
    assert_eq!(r.json()["method"], "OPTIONS");
}

#[tokio::test]
async fn cors_defaults_wildcard_and_preflight_continue() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&route_with(&origin.url(), "          - name: cors\n")).await;
    let r = preflight(
        &gw,
        "https://anyone.test",
        &[("access-control-request-headers", "X-Custom")],
    )
    .await;
    assert_status(&r, 200);
    assert_eq!(r.header("access-control-allow-origin").unwrap(), "*");
    assert!(r.header("vary").is_none());
    assert_eq!(
        r.header("access-control-allow-headers").unwrap(),
        "X-Custom"
    );
    assert!(r.header("access-control-max-age").is_none());
    let r = get(gw.proxy, "/", &[("origin", "https://anyone.test")])
        .await
        .unwrap();
    assert_eq!(r.header("access-control-allow-origin").unwrap(), "*");
    // allow_origin_absent (default true): headers even without an Origin.
    let r = gw.get("/").await;
    assert_eq!(r.header("access-control-allow-origin").unwrap(), "*");

    let gw = Gw::start(&route_with(
        &origin.url(),
        "          - name: cors\n            config: {preflight_continue: true, methods: [GET, POST], allow_origin_absent: false}\n",
    ))
    .await;
    let before = origin.hits();
    let r = preflight(&gw, "https://anyone.test", &[]).await;
    assert_status(&r, 200);
    assert_eq!(origin.hits(), before + 1, "preflight goes to the upstream");
    assert!(r.header("access-control-allow-origin").is_none());
    assert!(r.header("access-control-allow-methods").is_none());
    let r = gw.get("/").await;
    assert!(r.header("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn cors_credentials_never_with_wildcard_or_reflection() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&route_with(
        &origin.url(),
        "          - name: cors\n            config: {origins: [\"https://app.example.com\", \"https://admin.example.com\"], credentials: true}\n",
    ))
    .await;
    let r = preflight(&gw, "https://admin.example.com", &[]).await;
    assert_eq!(
        r.header("access-control-allow-origin").unwrap(),
        "https://admin.example.com"
    );
    assert_eq!(
        r.header("access-control-allow-credentials").unwrap(),
        "true"
    );
    assert_eq!(r.header("vary").unwrap(), "Origin");
    let r = get(gw.proxy, "/", &[("origin", "https://app.example.com")])
        .await
        .unwrap();
    assert_eq!(
        r.header("access-control-allow-origin").unwrap(),
        "https://app.example.com"
    );
    assert_eq!(
        r.header("access-control-allow-credentials").unwrap(),
        "true"
    );
    for evil in [
        "https://evil.test",
        "https://app.example.com.evil.test",
        "null",
    ] {
        let r = preflight(&gw, evil, &[]).await;
        assert!(r.header("access-control-allow-origin").is_none(), "{evil}");
        let r = get(gw.proxy, "/", &[("origin", evil)]).await.unwrap();
        assert!(r.header("access-control-allow-origin").is_none(), "{evil}");
    }

    // Kong would reflect any Origin here; Portcullis sends no allow headers at all.
    let gw = Gw::start(&route_with(
        &origin.url(),
        "          - name: cors\n            config: {origins: [\"*\"], credentials: true}\n",
    ))
    .await;
    for r in [
        preflight(&gw, "https://evil.test", &[]).await,
        get(gw.proxy, "/", &[("origin", "https://evil.test")])
            .await
            .unwrap(),
    ] {
        assert!(r.header("access-control-allow-origin").is_none());
        assert!(r.header("access-control-allow-credentials").is_none());
    }
}

// ---------------------------------------------------------------- rate-limiting

/// A name no other test or earlier run uses, so Redis keys (derived from route and service
/// ids) never collide.
fn nonce() -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{}-{t}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// One service+route named uniquely, with `plugins` on the route (items indented by 10).
fn limited(origin: &str, plugins: &str) -> String {
    limited_with_id(origin, plugins).0
}

/// [`limited`], also returning the route's id (given explicitly in the config).
fn limited_with_id(origin: &str, plugins: &str) -> (String, String) {
    let n = nonce();
    let h = n.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |a, b| {
        (a ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let route_id = format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        h >> 32,
        (h >> 16) & 0xffff,
        h & 0xfff,
        (h >> 4) & 0xfff,
        (h ^ (h >> 7)) & 0xffff_ffff_ffff
    );
    let config = format!(
        r#"_format_version: "3.0"
consumers:
  - username: alice
    keyauth_credentials:
      - key: alice-key
  - username: bob
    keyauth_credentials:
      - key: bob-key
services:
  - name: svc-{n}
    url: {origin}
    routes:
      - name: r-{n}
        id: {route_id}
        paths: [/]
        plugins:
{plugins}"#
    );
    (config, route_id)
}

fn millis_now() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

/// Counting tests use minute windows: start them well clear of a minute boundary.
async fn clear_of_minute_boundary() {
    let into = (millis_now() % 60_000) as u64;
    if into > 50_000 {
        tokio::time::sleep(std::time::Duration::from_millis(60_000 - into + 200)).await;
    }
}

/// Sleeps until the current second is `ms` milliseconds old (in the next second if past it).
async fn at_ms_of_second(ms: u64) {
    let into = (millis_now() % 1000) as u64;
    let wait = if into < ms {
        ms - into
    } else {
        1000 - into + ms
    };
    tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
}

fn num(r: &Reply, h: &str) -> i64 {
    r.header(h)
        .unwrap_or_else(|| panic!("no {h} header: {:?}", r.headers))
        .parse()
        .unwrap()
}

/// Sends `n` requests at once (each on its own connection) and returns their statuses.
async fn burst(addrs: &[std::net::SocketAddr], n: usize, headers: &[(&str, &str)]) -> Vec<u16> {
    let owned: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let addr = addrs[i % addrs.len()];
            let h = owned.clone();
            tokio::spawn(async move {
                let h: Vec<(&str, &str)> =
                    h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                get(addr, "/", &h).await.unwrap().status
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

fn count(statuses: &[u16], code: u16) -> usize {
    statuses.iter().filter(|s| **s == code).count()
}

#[tokio::test]
async fn rate_limiting_local_counts_and_headers() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&limited(
        &origin.url(),
        "          - name: rate-limiting\n            config: {minute: 3, hour: 100, limit_by: ip}\n",
    ))
    .await;
    clear_of_minute_boundary().await;
    for remaining in [2, 1, 0] {
        let r = gw.get("/").await;
        assert_status(&r, 200);
        assert_eq!(num(&r, "x-ratelimit-limit-minute"), 3);
        assert_eq!(num(&r, "x-ratelimit-remaining-minute"), remaining);
        assert_eq!(num(&r, "x-ratelimit-limit-hour"), 100);
        assert_eq!(num(&r, "x-ratelimit-remaining-hour"), 97 + remaining);
        // The most restrictive window is the minute.
        assert_eq!(num(&r, "ratelimit-limit"), 3);
        assert_eq!(num(&r, "ratelimit-remaining"), remaining);
        let reset = num(&r, "ratelimit-reset");
        assert!((1..=60).contains(&reset), "{reset}");
        assert!(r.header("retry-after").is_none());
    }
    let r = gw.get("/").await;
    assert_status(&r, 429);
    assert_error_body(&r, "API rate limit exceeded");
    assert_eq!(num(&r, "x-ratelimit-remaining-minute"), 0);
    assert_eq!(num(&r, "ratelimit-remaining"), 0);
    let reset = num(&r, "ratelimit-reset");
    assert_eq!(num(&r, "retry-after"), reset);
    let expected = 60 - ((millis_now() % 60_000) / 1000) as i64;
    assert!((reset - expected).abs() <= 1, "{reset} vs {expected}");
    // Refused requests are not counted against the hour.
    let r = gw.get("/").await;
    assert_status(&r, 429);
    assert_eq!(num(&r, "x-ratelimit-remaining-hour"), 97);
    assert_eq!(origin.hits(), 3);
}

#[tokio::test]
async fn rate_limiting_local_is_exact_under_concurrency() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&limited(
        &origin.url(),
        "          - name: rate-limiting\n            config: {minute: 10, limit_by: ip}\n",
    ))
    .await;
    clear_of_minute_boundary().await;
    let statuses = burst(&[gw.proxy], 40, &[]).await;
    assert_eq!(count(&statuses, 200), 10, "{statuses:?}");
    assert_eq!(count(&statuses, 429), 30, "{statuses:?}");
    assert_eq!(origin.hits(), 10);
}

#[tokio::test]
async fn rate_limiting_by_consumer_ip_fallback_and_options() {
    let origin = Origin::start("a").await;
    // limit_by consumer (the default) with key-auth: each consumer has its own budget.
    let gw = Gw::start(&limited(
        &origin.url(),
        "          - name: key-auth\n          - name: rate-limiting\n            config: {minute: 2}\n",
    ))
    .await;
    clear_of_minute_boundary().await;
    for _ in 0..2 {
        let r = get(gw.proxy, "/", &[("apikey", "alice-key")])
            .await
            .unwrap();
        assert_status(&r, 200);
    }
    let r = get(gw.proxy, "/", &[("apikey", "alice-key")])
        .await
        .unwrap();
    assert_status(&r, 429);
    let r = get(gw.proxy, "/", &[("apikey", "bob-key")]).await.unwrap();
    assert_status(&r, 200);
    assert_eq!(num(&r, "x-ratelimit-remaining-minute"), 1);

    // No consumer on the route: Kong falls back to the client IP (here the forwarded one,
    // from a trusted proxy), so two clients have separate budgets.
    let gw = Gw::start_with(
        &limited(
            &origin.url(),
            "          - name: rate-limiting\n            config: {minute: 1}\n",
        ),
        "trusted_ips = [\"127.0.0.1/32\"]\n",
    )
    .await;
    let a = [("x-forwarded-for", "203.0.113.1")];
    let b = [("x-forwarded-for", "203.0.113.2")];
    assert_status(&get(gw.proxy, "/", &a).await.unwrap(), 200);
    assert_status(&get(gw.proxy, "/", &a).await.unwrap(), 429);
    assert_status(&get(gw.proxy, "/", &b).await.unwrap(), 200);

    // Untrusted peer: a spoofed X-Forwarded-For does not buy a fresh budget.
    let gw = Gw::start(&limited(
        &origin.url(),
        "          - name: rate-limiting\n            config: {minute: 1, limit_by: ip}\n",
    ))
    .await;
    assert_status(&get(gw.proxy, "/", &a).await.unwrap(), 200);
    assert_status(&get(gw.proxy, "/", &b).await.unwrap(), 429);

    // hide_client_headers, error_code, error_message.
    let gw = Gw::start(&limited(
        &origin.url(),
        "          - name: rate-limiting\n            config: {minute: 1, limit_by: ip, hide_client_headers: true, error_code: 503, error_message: Slow down}\n",
    ))
    .await;
    let r = gw.get("/").await;
    assert_status(&r, 200);
    let r2 = gw.get("/").await;
    assert_status(&r2, 503);
    assert_error_body(&r2, "Slow down");
    for r in [&r, &r2] {
        for h in [
            "x-ratelimit-limit-minute",
            "x-ratelimit-remaining-minute",
            "ratelimit-limit",
            "ratelimit-remaining",
            "ratelimit-reset",
            "retry-after",
        ] {
            assert!(r.header(h).is_none(), "{h} must be hidden");
        }
    }

    // limit_by header: one budget per header value, the IP when absent.
    let gw = Gw::start(&limited(
        &origin.url(),
        "          - name: rate-limiting\n            config: {minute: 1, limit_by: header, header_name: X-Tenant}\n",
    ))
    .await;
    let t1 = [("x-tenant", "one")];
    let t2 = [("x-tenant", "two")];
    assert_status(&get(gw.proxy, "/", &t1).await.unwrap(), 200);
    assert_status(&get(gw.proxy, "/", &t1).await.unwrap(), 429);
    assert_status(&get(gw.proxy, "/", &t2).await.unwrap(), 200);
    assert_status(&gw.get("/").await, 200);
    assert_status(&gw.get("/").await, 429);
}

// ---------------------------------------------------------------- rate-limiting: redis

const REDIS: &str = "redis://127.0.0.1:6379/";

/// Fails the test (never skips) when Redis is not there.
async fn redis_conn() -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(REDIS).unwrap();
    let mut c = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        client.get_multiplexed_async_connection(),
    )
    .await
    .expect("Redis on 127.0.0.1:6379 did not answer in time (start it: see .ci/run)")
    .expect("Redis on 127.0.0.1:6379 is required for these tests (start it: see .ci/run)");
    let pong: String = redis::cmd("PING").query_async(&mut c).await.unwrap();
    assert_eq!(pong, "PONG");
    c
}

#[tokio::test]
async fn rate_limiting_redis_is_shared_by_two_gateways() {
    let mut rc = redis_conn().await;
    let origin = Origin::start("a").await;
    let (config, route_id) = limited_with_id(
        &origin.url(),
        "          - name: rate-limiting\n            config:\n              minute: 10\n              limit_by: ip\n              policy: redis\n              redis: {host: 127.0.0.1, port: 6379, timeout: 2000}\n",
    );
    let (gw1, gw2) = tokio::join!(Gw::start(&config), Gw::start(&config));
    clear_of_minute_boundary().await;
    let statuses = burst(&[gw1.proxy, gw2.proxy], 40, &[]).await;
    assert_eq!(count(&statuses, 200), 10, "{statuses:?}");
    assert_eq!(count(&statuses, 429), 30, "{statuses:?}");
    assert_eq!(origin.hits(), 10);

    // Both nodes keep refusing, and report the shared count.
    for gw in [&gw1, &gw2] {
        let r = gw.get("/").await;
        assert_status(&r, 429);
        assert_eq!(num(&r, "x-ratelimit-remaining-minute"), 0);
        assert!(num(&r, "retry-after") >= 1);
    }

    // The counter lives in Redis under Kong's key layout, with an expiry.
    let pattern = format!("ratelimit:{route_id}:*:127.0.0.1:*:minute");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(&pattern)
        .query_async(&mut rc)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1, "{pattern}: {keys:?}");
    let value: i64 = redis::cmd("GET")
        .arg(&keys[0])
        .query_async(&mut rc)
        .await
        .unwrap();
    assert_eq!(value, 10);
    let ttl: i64 = redis::cmd("TTL")
        .arg(&keys[0])
        .query_async(&mut rc)
        .await
        .unwrap();
    assert!((1..=60).contains(&ttl), "{ttl}");
}

#[tokio::test]
async fn rate_limiting_redis_flat_fields_database_and_headers() {
    let mut rc = redis_conn().await;
    let origin = Origin::start("a").await;
    let (config, route_id) = limited_with_id(
        &origin.url(),
        "          - name: key-auth\n          - name: rate-limiting\n            config: {minute: 3, policy: redis, redis_host: 127.0.0.1, redis_port: 6379, redis_database: 7, redis_timeout: 1000}\n",
    );
    let gw = Gw::start(&config).await;
    clear_of_minute_boundary().await;
    for remaining in [2, 1, 0] {
        let r = get(gw.proxy, "/", &[("apikey", "alice-key")])
            .await
            .unwrap();
        assert_status(&r, 200);
        assert_eq!(num(&r, "x-ratelimit-remaining-minute"), remaining);
        assert_eq!(num(&r, "ratelimit-remaining"), remaining);
    }
    let r = get(gw.proxy, "/", &[("apikey", "alice-key")])
        .await
        .unwrap();
    assert_status(&r, 429);
    assert!(r.header("retry-after").is_some());
    let r = get(gw.proxy, "/", &[("apikey", "bob-key")]).await.unwrap();
    assert_status(&r, 200);

    // Counted in database 7, keyed by the consumer id.
    let consumer_id = r.upstream_header("x-consumer-id").unwrap();
    let _: () = redis::cmd("SELECT")
        .arg(7)
        .query_async(&mut rc)
        .await
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("ratelimit:{route_id}:*:{consumer_id}:*:minute"))
        .query_async(&mut rc)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
}

#[tokio::test]
async fn rate_limiting_redis_unreachable_fault_tolerant_or_500() {
    let origin = Origin::start("a").await;
    let closed = free_port();
    let plugin = |ft: bool| {
        format!(
            "          - name: rate-limiting\n            config:\n              minute: 1\n              policy: redis\n              fault_tolerant: {ft}\n              redis: {{host: 127.0.0.1, port: {closed}, password: hunter2-redis-secret, timeout: 300}}\n"
        )
    };
    // fault_tolerant (default true): traffic flows, without rate-limit headers, and a warning
    // is logged (without the password).
    let gw = Gw::start(&limited(&origin.url(), &plugin(true))).await;
    for _ in 0..3 {
        let r = gw.get("/").await;
        assert_status(&r, 200);
        assert!(r.header("x-ratelimit-limit-minute").is_none());
    }
    let logs = gw.logs();
    assert!(logs.contains("cannot reach Redis"), "{logs}");
    assert!(!logs.contains("hunter2-redis-secret"), "{logs}");

    let gw = Gw::start(&limited(&origin.url(), &plugin(false))).await;
    for _ in 0..2 {
        let r = gw.get("/").await;
        assert_status(&r, 500);
        assert_error_body(&r, "An unexpected error occurred");
    }
    assert!(!gw.logs().contains("hunter2-redis-secret"));
    assert_eq!(origin.hits(), 3);
}

// ---------------------------------------------------------------- rate-limiting: sliding

/// Five requests late in one second, five just after the boundary; returns how many of each
/// burst passed.
async fn boundary_bursts(addr: std::net::SocketAddr) -> (usize, usize) {
    let tenant = [("x-tenant", "bursty")];
    at_ms_of_second(600).await;
    let first = burst(&[addr], 5, &tenant).await;
    at_ms_of_second(30).await;
    let second = burst(&[addr], 5, &tenant).await;
    (count(&first, 200), count(&second, 200))
}

#[tokio::test]
async fn rate_limiting_sliding_window_stops_the_boundary_burst() {
    let _ = redis_conn().await;
    let origin = Origin::start("a").await;
    let redis = "              policy: redis\n              redis: {host: 127.0.0.1, port: 6379}\n";
    for (window, policy) in [
        ("fixed", ""),
        ("sliding", ""),
        ("fixed", redis),
        ("sliding", redis),
    ] {
        let gw = Gw::start(&limited(
            &origin.url(),
            &format!("          - name: rate-limiting\n            config:\n              second: 5\n              limit_by: header\n              header_name: X-Tenant\n              window_type: {window}\n{policy}"),
        ))
        .await;
        // Warm the connection (Redis) so the bursts are not slowed by it; another tenant, so
        // the bursts' budget is untouched.
        let warm = get(gw.proxy, "/", &[("x-tenant", "warm-up")])
            .await
            .unwrap();
        assert_status(&warm, 200);
        let (a, b) = boundary_bursts(gw.proxy).await;
        let label = format!(
            "{window} {}",
            if policy.is_empty() { "local" } else { "redis" }
        );
        assert_eq!(a, 5, "{label}: first burst");
        if window == "fixed" {
            // The flaw the sliding window fixes: twice the limit within ~half a second.
            assert_eq!(b, 5, "{label}: second burst");
        } else {
            assert!(b <= 1, "{label}: second burst let {b} through");
        }
        // Later in the second the weight of the previous one falls and traffic resumes.
        if window == "sliding" {
            at_ms_of_second(800).await;
            let r = get(gw.proxy, "/", &[("x-tenant", "bursty")]).await.unwrap();
            assert_status(&r, 200);
        }
    }
}

/// A private redis-server on a free port, killed on drop (or earlier by the test).
struct PrivateRedis {
    child: std::process::Child,
    port: u16,
}

impl PrivateRedis {
    async fn start() -> PrivateRedis {
        let port = free_port();
        #[allow(clippy::zombie_processes)] // killed and waited for in Drop
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server must be installed (.ci/run installs it)");
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return PrivateRedis { child, port };
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("private redis-server did not start on {port}");
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test]
async fn rate_limiting_redis_stopped_mid_run() {
    for fault_tolerant in [true, false] {
        let origin = Origin::start("a").await;
        let mut redis = PrivateRedis::start().await;
        let cfg = limited(
            &origin.url(),
            &format!(
                "          - name: rate-limiting\n            config:\n              minute: 3\n              policy: redis\n              fault_tolerant: {fault_tolerant}\n              redis: {{host: 127.0.0.1, port: {}, timeout: 300}}\n",
                redis.port
            ),
        );
        let gw = Gw::start(&cfg).await;
        // While Redis runs the limit holds: 3 pass, the 4th is refused.
        let statuses: Vec<u16> = {
            let mut v = Vec::new();
            for _ in 0..4 {
                v.push(gw.get("/").await.status);
            }
            v
        };
        assert_eq!(
            statuses,
            [200, 200, 200, 429],
            "fault_tolerant={fault_tolerant}"
        );
        // Redis goes away mid-run.
        redis.stop();
        let r = gw.get("/").await;
        if fault_tolerant {
            assert_status(&r, 200);
            assert!(r.header("x-ratelimit-remaining-minute").is_none());
            assert!(gw.logs().contains("cannot reach Redis"));
        } else {
            assert_status(&r, 500);
            assert_error_body(&r, "An unexpected error occurred");
        }
        assert_eq!(origin.hits(), if fault_tolerant { 4 } else { 3 });
    }
}
