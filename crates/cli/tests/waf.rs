//! The `waf` plugin (libmodsecurity + OWASP CRS) through the real binary. These tests need
//! libmodsecurity and Debian's modsecurity-crs installed and fail loudly without them.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;

fn config(origin: &str, plugin: &str) -> String {
    one_service(
        origin,
        &format!("      - name: r\n        paths: [/]\n        plugins:\n          - name: waf\n            config: {plugin}\n"),
    )
}

const BROWSER: &[(&str, &str)] = &[
    (
        "user-agent",
        "Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0",
    ),
    ("accept", "application/json"),
];

fn with<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut h = BROWSER.to_vec();
    h.extend_from_slice(extra);
    h
}

fn assert_forbidden(r: &Reply) {
    assert_status(r, 403);
    assert_eq!(r.text(), r#"{"message":"Forbidden"}"#);
}

#[tokio::test]
async fn attacks_are_blocked_before_the_upstream() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&config(&origin.url(), "{}")).await;

    // SQL injection in the query.
    let r = get(gw.proxy, "/items?id=1'%20OR%20'1'='1", BROWSER)
        .await
        .unwrap();
    assert_forbidden(&r);
    // Cross-site scripting in a form body.
    let form = with(&[("content-type", "application/x-www-form-urlencoded")]);
    let r = request(
        gw.proxy,
        "POST",
        "/comments",
        &form,
        "comment=%3Cscript%3Ealert(1)%3C%2Fscript%3E",
    )
    .await
    .unwrap();
    assert_forbidden(&r);
    // SQL injection inside a JSON body.
    let json = with(&[("content-type", "application/json")]);
    let r = request(
        gw.proxy,
        "POST",
        "/login",
        &json,
        r#"{"user": "x' UNION SELECT password FROM users --"}"#,
    )
    .await
    .unwrap();
    assert_forbidden(&r);
    // Path traversal and command injection.
    let r = get(gw.proxy, "/download?file=../../etc/passwd", BROWSER)
        .await
        .unwrap();
    assert_forbidden(&r);
    let r = get(gw.proxy, "/ping?host=1.2.3.4;cat%20/etc/passwd", BROWSER)
        .await
        .unwrap();
    assert_forbidden(&r);
    assert_eq!(origin.hits(), 0, "a blocked request reached the upstream");

    // Nothing about the rules reaches the client.
    for h in r.headers.keys() {
        assert!(!h.as_str().contains("modsec"), "{h}");
    }

    // The security events name the matched rules; the access log names the plugin.
    let lines = gw.access_lines(5).await;
    assert!(lines.iter().all(|l| l["refused_by"] == "waf"), "{lines:?}");
    let logs = gw.logs();
    let events: Vec<&str> = logs.lines().filter(|l| l.contains("waf_block")).collect();
    assert_eq!(events.len(), 5, "{logs}");
    assert!(events[0].contains("942100"), "{}", events[0]);
    assert!(events[0].contains("949110"), "{}", events[0]);
    assert!(events[0].contains("\"security\""), "{}", events[0]);
    assert!(events[1].contains("9411"), "{}", events[1]);
}

#[tokio::test]
async fn benign_traffic_passes_with_its_body_intact() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&config(&origin.url(), "{paranoia_level: 1}")).await;
    let r = get(gw.proxy, "/items?id=42&q=hello%20world", BROWSER)
        .await
        .unwrap();
    assert_status(&r, 200);
    let body = r#"{"name": "O'Brien's shop", "tags": ["a", "b"], "price": 9.5}"#;
    let json = with(&[("content-type", "application/json")]);
    for method in ["POST", "PUT", "PATCH"] {
        let r = request(gw.proxy, method, "/items/42", &json, body)
            .await
            .unwrap();
        assert_status(&r, 200);
        assert_eq!(r.json()["body"], body);
        assert_eq!(r.json()["method"], method);
    }
    let r = request(gw.proxy, "DELETE", "/items/42", BROWSER, "")
        .await
        .unwrap();
    assert_status(&r, 200);
    assert_eq!(origin.hits(), 5);
    assert!(!gw.logs().contains("waf_block"), "{}", gw.logs());
}

#[tokio::test]
async fn repeated_requests_get_the_same_verdict_and_event() {
    // The verdict cache answers repeats of a request without a new transaction: a repeated
    // attack must still be refused and reported every time, and a repeated benign request
    // must still reach the upstream every time.
    let origin = Origin::start("a").await;
    let gw = Gw::start(&config(&origin.url(), "{}")).await;
    for _ in 0..3 {
        let r = get(gw.proxy, "/items?id=1'%20OR%20'1'='1", BROWSER)
            .await
            .unwrap();
        assert_forbidden(&r);
        let r = get(gw.proxy, "/items?id=7", BROWSER).await.unwrap();
        assert_status(&r, 200);
    }
    assert_eq!(origin.hits(), 3);
    let lines = gw.access_lines(6).await;
    let refused = lines.iter().filter(|l| l["refused_by"] == "waf").count();
    assert_eq!(refused, 3, "{lines:?}");
    let logs = gw.logs();
    let events: Vec<&str> = logs.lines().filter(|l| l.contains("waf_block")).collect();
    assert_eq!(events.len(), 3, "{logs}");
    assert!(events.iter().all(|e| e.contains("942100")), "{events:?}");
    // A request differing only in a header is a different request (the CRS checks Referer).
    let r = get(
        gw.proxy,
        "/items?id=7",
        &with(&[("referer", "<script>alert(1)</script>")]),
    )
    .await
    .unwrap();
    assert_forbidden(&r);
}

#[tokio::test]
async fn detect_mode_lets_attacks_through_and_logs_them() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&config(&origin.url(), "{mode: detect}")).await;
    let r = get(gw.proxy, "/items?id=1'%20OR%20'1'='1", BROWSER)
        .await
        .unwrap();
    assert_status(&r, 200);
    assert_eq!(r.json()["uri"], "/items?id=1'%20OR%20'1'='1");
    assert_eq!(origin.hits(), 1);
    let mut logs = String::new();
    for _ in 0..100 {
        logs = gw.logs();
        if logs.contains("waf_detect") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let event = logs
        .lines()
        .find(|l| l.contains("waf_detect"))
        .unwrap_or_else(|| panic!("no waf_detect event in:\n{logs}"));
    assert!(event.contains("942100"), "{event}");
    assert!(!logs.contains("waf_block"));
}

#[tokio::test]
async fn exclusions_and_custom_rules_apply() {
    let origin = Origin::start("a").await;
    let plugin = r#"{exclude_rules: [942100], inbound_anomaly_threshold: 100, custom_rules: ["SecRule REQUEST_HEADERS:X-Debug \"@streq on\" \"id:10001,phase:1,deny,log,msg:'debug header'\""]}"#;
    let gw = Gw::start(&config(&origin.url(), plugin)).await;
    let r = get(gw.proxy, "/items?id=1'%20OR%20'1'='1", BROWSER)
        .await
        .unwrap();
    assert_status(&r, 200);
    let r = get(gw.proxy, "/", &with(&[("x-debug", "on")]))
        .await
        .unwrap();
    assert_forbidden(&r);
    assert_eq!(origin.hits(), 1);
    let logs = gw.logs();
    let event = logs.lines().find(|l| l.contains("waf_block")).unwrap();
    assert!(event.contains("10001"), "{event}");
}

#[tokio::test]
async fn oversized_bodies_are_refused_not_partly_inspected() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&config(&origin.url(), "{body_limit: 1024}")).await;
    let form = with(&[("content-type", "application/x-www-form-urlencoded")]);
    let small = format!("a={}", "x".repeat(1000));
    let r = request(gw.proxy, "POST", "/", &form, &small).await.unwrap();
    assert_status(&r, 200);
    // The attack sits past the inspected prefix: refusing is the only safe answer.
    let big = format!(
        "a={}&b=%3Cscript%3Ealert(1)%3C%2Fscript%3E",
        "x".repeat(2000)
    );
    let r = request(gw.proxy, "POST", "/", &form, &big).await.unwrap();
    assert_status(&r, 413);
    assert_eq!(origin.hits(), 1);
    assert!(gw.logs().contains("waf_body_too_large"));
}

fn validate(yaml: &str) -> (i32, String) {
    let dir = temp_dir();
    let f = dir.join("kong.yml");
    std::fs::write(&f, yaml).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["config", "validate"])
        .arg(&f)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn bad_configs_are_refused_with_paths() {
    let p = "services[0].routes[0].plugins[0].config";
    for (plugin, want) in [
        (
            "{paranoia_level: 7}",
            format!("{p}.paranoia_level: value should be between 1 and 4"),
        ),
        (
            "{mode: block, blcok: 1}",
            format!("{p}.blcok: unknown field"),
        ),
        (
            r#"{custom_rules: ["SecRule ARGS \"@rx a\" \"id:10001,phase:2,denyy\""]}"#,
            format!("{p}.custom_rules[0]:"),
        ),
        (
            r#"{custom_rules: ["SecRuleEngine Off"]}"#,
            format!("{p}.custom_rules[0]: directive 'SecRuleEngine' is not allowed"),
        ),
        (
            r#"{custom_rules: ["SecAction \"id:942100,phase:1,pass,nolog\""]}"#,
            format!("{p}.custom_rules: rule id 942100 is already used by the Core Rule Set"),
        ),
        (
            "{inspect_response: true}",
            format!("{p}.inspect_response: response inspection is not implemented"),
        ),
        (
            "{mode: log}",
            format!("{p}.mode: expected one of: block, detect"),
        ),
    ] {
        let (code, out) = validate(&config("http://127.0.0.1:1", plugin));
        assert_eq!(code, 1, "{plugin} accepted:\n{out}");
        assert!(out.contains(&want), "missing {want:?} for {plugin}:\n{out}");
    }
    let (code, out) = validate(&config(
        "http://127.0.0.1:1",
        "{mode: detect, paranoia_level: 2, exclude_rules: [920300]}",
    ));
    assert_eq!(code, 0, "{out}");
}
