//! The `waf` plugin (libmodsecurity + OWASP CRS) through the real binary. These tests need
//! libmodsecurity and Debian's modsecurity-crs installed and fail loudly without them.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
    assert_error_body(r, "Forbidden");
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
    let out = std::process::Command::new(common::bin())
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
            "{inspect_response: 1}",
            format!("{p}.inspect_response: expected a boolean"),
        ),
        (
            "{inspect_response: true, response_body_limit: 0}",
            format!("{p}.response_body_limit: value should be between 1 and 67108864"),
        ),
        (
            "{response_body_limit: 100000000}",
            format!("{p}.response_body_limit: value should be between 1 and 67108864"),
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
    let (code, out) = validate(&config(
        "http://127.0.0.1:1",
        "{inspect_response: true, response_body_limit: 65536, outbound_anomaly_threshold: 8}",
    ));
    assert_eq!(code, 0, "{out}");
}

// ---- Response inspection (`inspect_response`) ----

const MYSQL_ERROR: &str = "<html><body><h1>Internal error</h1><p>You have an error in your SQL syntax; check the manual that corresponds to your MySQL server version for the right syntax to use near ''' at line 1</p></body></html>";

const JAVA_TRACE: &str = "java.lang.NullPointerException\n\tat com.example.shop.ItemService.find(ItemService.java:42)\n\tat org.apache.catalina.core.ApplicationFilterChain.doFilter(ApplicationFilterChain.java:166)\n";

const BENIGN_JSON: &str =
    r#"{"id": 42, "name": "O'Brien's shop", "note": "select from the menu", "tags": ["a", "b"]}"#;

/// An origin that answers by path with fixed, raw responses (a leaky application), closing
/// each connection after its answer. `/chunked-*` answers arrive in several chunks.
async fn leaky_origin() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                break;
            };
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                counter.fetch_add(1, Ordering::SeqCst);
                let line = String::from_utf8_lossy(&req)
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_string();
                let path = line.split(' ').nth(1).unwrap_or("/").to_string();
                let (status, ctype, extra, body): (u16, &str, &str, Vec<u8>) = match path.as_str() {
                    "/leak/mysql" => (500, "text/html; charset=utf-8", "", MYSQL_ERROR.into()),
                    "/leak/java" => (500, "text/plain", "", JAVA_TRACE.into()),
                    "/benign" => (200, "application/json", "", BENIGN_JSON.into()),
                    // Binary: the same text is not inspected.
                    "/png" => {
                        let mut b = b"\x89PNG\r\n\x1a\n".to_vec();
                        b.extend_from_slice(MYSQL_ERROR.as_bytes());
                        (200, "image/png", "", b)
                    }
                    // Claims gzip: the gateway does not decompress, so the body is not inspected.
                    "/gzip" => (
                        200,
                        "text/html",
                        "content-encoding: gzip\r\n",
                        MYSQL_ERROR.into(),
                    ),
                    // The leak sits past the first 1024 bytes.
                    "/big" => {
                        let big = format!("{}{MYSQL_ERROR}", "x".repeat(2000));
                        (200, "text/html", "", big.into())
                    }
                    // In several chunks: the leak within the first bytes, or past 1024.
                    "/chunked-leak" => (500, "text/html", "", MYSQL_ERROR.into()),
                    "/chunked-late" => {
                        let late = format!("{}{MYSQL_ERROR}", "y".repeat(2000));
                        (500, "text/html", "", late.into())
                    }
                    _ => (404, "text/plain", "", b"not found".to_vec()),
                };
                let head = |framing: &str| {
                    format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: {ctype}\r\nx-upstream-secret: s3cr3t\r\nserver: leaky/1.0\r\n{extra}{framing}connection: close\r\n\r\n"
                    )
                };
                if path.starts_with("/chunked-") {
                    let _ = s
                        .write_all(head("transfer-encoding: chunked\r\n").as_bytes())
                        .await;
                    for chunk in body.chunks(300) {
                        let mut c = format!("{:x}\r\n", chunk.len()).into_bytes();
                        c.extend_from_slice(chunk);
                        c.extend_from_slice(b"\r\n");
                        let _ = s.write_all(&c).await;
                        let _ = s.flush().await;
                        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    }
                    let _ = s.write_all(b"0\r\n\r\n").await;
                } else {
                    let mut out = head(&format!("content-length: {}\r\n", body.len())).into_bytes();
                    out.extend_from_slice(&body);
                    let _ = s.write_all(&out).await;
                }
                let _ = s.shutdown().await;
            });
        }
    });
    (url, hits)
}

/// The security log file of a test gateway; its directory is removed on drop.
struct SecurityLog(std::path::PathBuf);

impl SecurityLog {
    async fn events(&self, n: usize) -> Vec<serde_json::Value> {
        json_lines(&self.0.join("security.log"), n).await
    }

    fn text(&self) -> String {
        std::fs::read_to_string(self.0.join("security.log")).unwrap_or_default()
    }
}

impl Drop for SecurityLog {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A gateway with the waf on `/` and a security log file.
async fn gateway_with_security_log(origin: &str, plugin: &str) -> (Gw, SecurityLog) {
    let dir = temp_dir();
    let path = dir.join("security.log").display().to_string();
    let gw = Gw::start_with(
        &config(origin, plugin),
        &format!("security_log = {path:?}\n"),
    )
    .await;
    (gw, SecurityLog(dir))
}

fn assert_invalid_response(r: &Reply) {
    assert_status(r, 502);
    assert_error_body(
        r,
        "An invalid response was received from the upstream server",
    );
    // None of the upstream's headers, the gateway's own are there.
    assert!(r.header("x-upstream-secret").is_none(), "{:?}", r.headers);
    assert!(r.header("server").is_none(), "{:?}", r.headers);
    assert!(r.header("x-request-id").is_some(), "{:?}", r.headers);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/json; charset=utf-8")
    );
}

#[tokio::test]
async fn leaky_responses_get_502_in_block_mode() {
    let (origin, hits) = leaky_origin().await;
    let (gw, sec) = gateway_with_security_log(&origin, "{inspect_response: true}").await;

    let r = get(gw.proxy, "/leak/mysql", BROWSER).await.unwrap();
    assert_invalid_response(&r);
    let mysql_id = r.header("x-request-id").unwrap();
    let r = get(gw.proxy, "/leak/java", BROWSER).await.unwrap();
    assert_invalid_response(&r);
    // Several chunks, the leak within the inspected prefix.
    let r = get(gw.proxy, "/chunked-leak", BROWSER).await.unwrap();
    assert_invalid_response(&r);
    assert_eq!(hits.load(Ordering::SeqCst), 3);

    let events = sec.events(3).await;
    let blocks: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["event"] == "waf_response_block")
        .collect();
    assert_eq!(blocks.len(), 3, "{events:?}");
    let e = blocks
        .iter()
        .find(|e| e["request_id"] == mysql_id.as_str())
        .unwrap_or_else(|| panic!("no event for {mysql_id}: {events:?}"));
    assert_eq!(e["plugin"], "waf");
    assert_eq!(e["mode"], "block");
    assert_eq!(e["route"], "r");
    let ids = e["rule_ids"].as_str().unwrap();
    assert!(ids.contains("951230") && ids.contains("959100"), "{e}");
    assert!(
        blocks
            .iter()
            .any(|e| e["rule_ids"].as_str().unwrap().contains("9521")),
        "{blocks:?}"
    );
    // The leaked text is not copied into the events.
    let text = sec.text();
    assert!(!text.contains("SQL syntax"), "{text}");
    assert!(!text.contains("NullPointerException"), "{text}");

    let lines = gw.access_lines(3).await;
    assert!(
        lines
            .iter()
            .all(|l| l["status"] == 502 && l["refused_by"] == "waf"),
        "{lines:?}"
    );
}

#[tokio::test]
async fn benign_and_uninspected_responses_pass_byte_for_byte() {
    let (origin, _) = leaky_origin().await;
    let gw = Gw::start(&config(
        &origin,
        "{inspect_response: true, response_body_limit: 1024}",
    ))
    .await;

    let r = get(gw.proxy, "/benign", BROWSER).await.unwrap();
    assert_status(&r, 200);
    assert_eq!(r.text(), BENIGN_JSON);
    assert_eq!(r.header("x-upstream-secret").as_deref(), Some("s3cr3t"));
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/json")
    );

    // A non-text body is not inspected (only the head is).
    let r = get(gw.proxy, "/png", BROWSER).await.unwrap();
    assert_status(&r, 200);
    assert!(r.body.starts_with(b"\x89PNG\r\n\x1a\n"));
    assert!(r.body.ends_with(MYSQL_ERROR.as_bytes()));

    // A compressed body is not decompressed: headers only, and the skip is logged.
    let r = get(gw.proxy, "/gzip", BROWSER).await.unwrap();
    assert_status(&r, 200);
    assert_eq!(r.text(), MYSQL_ERROR);
    assert_eq!(r.header("content-encoding").as_deref(), Some("gzip"));

    // Past response_body_limit: the first bytes are inspected, the response is not refused,
    // and all of it arrives (streamed after the inspected prefix).
    let r = get(gw.proxy, "/big", BROWSER).await.unwrap();
    assert_status(&r, 200);
    assert_eq!(r.body.len(), 2000 + MYSQL_ERROR.len());
    assert!(r.text().ends_with(MYSQL_ERROR));
    let r = get(gw.proxy, "/chunked-late", BROWSER).await.unwrap();
    assert_status(&r, 500);
    assert_eq!(r.text(), format!("{}{MYSQL_ERROR}", "y".repeat(2000)));

    let mut logs = String::new();
    for _ in 0..100 {
        logs = gw.logs();
        if logs.matches("waf_response_body_truncated").count() >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(logs.contains("waf_response_body_skipped"), "{logs}");
    assert_eq!(
        logs.matches("waf_response_body_truncated").count(),
        2,
        "{logs}"
    );
    assert!(!logs.contains("waf_response_block"), "{logs}");
}

#[tokio::test]
async fn detect_mode_passes_leaky_responses_and_logs_them() {
    let (origin, _) = leaky_origin().await;
    let (gw, sec) =
        gateway_with_security_log(&origin, "{inspect_response: true, mode: detect}").await;
    let r = get(gw.proxy, "/leak/mysql", BROWSER).await.unwrap();
    assert_status(&r, 500);
    assert_eq!(r.text(), MYSQL_ERROR);
    assert_eq!(r.header("x-upstream-secret").as_deref(), Some("s3cr3t"));
    let id = r.header("x-request-id").unwrap();
    let events = sec.events(1).await;
    let e = events
        .iter()
        .find(|e| e["event"] == "waf_response_detect")
        .unwrap_or_else(|| panic!("no waf_response_detect event: {events:?}"));
    assert_eq!(e["request_id"], id.as_str());
    assert_eq!(e["mode"], "detect");
    assert!(e["rule_ids"].as_str().unwrap().contains("951230"), "{e}");
    assert!(!events.iter().any(|e| e["event"] == "waf_response_block"));
}

#[tokio::test]
async fn without_inspect_response_responses_are_untouched() {
    let (origin, _) = leaky_origin().await;
    let (gw, sec) = gateway_with_security_log(&origin, "{}").await;
    let r = get(gw.proxy, "/leak/mysql", BROWSER).await.unwrap();
    assert_status(&r, 500);
    assert_eq!(r.text(), MYSQL_ERROR);
    assert_eq!(r.header("x-upstream-secret").as_deref(), Some("s3cr3t"));
    // Requests are still judged.
    let r = get(gw.proxy, "/items?id=1'%20OR%20'1'='1", BROWSER)
        .await
        .unwrap();
    assert_forbidden(&r);
    let events = sec.events(1).await;
    assert!(
        events
            .iter()
            .all(|e| !e["event"].as_str().unwrap().starts_with("waf_response")),
        "{events:?}"
    );
    assert!(!gw.logs().contains("waf_response"), "{}", gw.logs());
}
