//! Traffic-control plugins through the real binary: ip-restriction, bot-detection, cors and
//! rate-limiting (local and Redis policies, fixed and sliding windows).
//!
//! The Redis tests need a Redis on 127.0.0.1:6379 (`.ci/run` starts one) and fail loudly when
//! it is not there.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::json;

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
    assert_eq!(
        r.json(),
        json!({"message": "IP address not allowed: 127.0.0.1"})
    );
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
    assert_eq!(r.json(), json!({"message": "go away"}));

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
            "          - name: ip-restriction\n            config: {allow: [10.0.0.0/33]}\n          - name: bot-detection\n            config: {deny: [\"(x\"]}\n          - name: cors\n            config: {origins: [\"null\"], color: red}\n",
        ),
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
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
        assert_eq!(r.json(), json!({"message": "Forbidden"}), "{ua}");
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
    assert_eq!(
        r.json(),
        json!({"message": "Only one User-Agent header allowed"})
    );

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
