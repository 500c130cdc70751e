//! Log-phase plugins through the real binary: file-log lines in Kong's serialized format,
//! with credentials redacted, for proxied, refused and unmatched requests; reopen on SIGUSR1.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;

#[tokio::test]
async fn file_log_writes_kong_entries_without_credentials() {
    let origin = Origin::start("a").await;
    let dir = temp_dir();
    let file = dir.join("requests.log");
    let cfg = format!(
        r#"_format_version: "3.0"
consumers:
  - username: alice
    custom_id: A-1
    keyauth_credentials:
      - key: alice-log-secret
services:
  - name: echo
    url: {origin}
    routes:
      - name: api
        paths: [/api]
        plugins:
          - name: key-auth
            config: {{key_names: [apikey, x-my-key]}}
plugins:
  - name: file-log
    config:
      path: {path}
      custom_fields: {{env: test, request.team: payments, status_copy: "$(response.status)", who: "user $(consumer.username)"}}
"#,
        origin = origin.url(),
        path = file.display()
    );
    let gw = Gw::start(&cfg).await;

    let ok = get(
        gw.proxy,
        "/api/items?apikey=alice-log-secret&page=2",
        &[
            ("authorization", "Bearer some-token-value"),
            ("cookie", "sid=cookie-secret"),
        ],
    )
    .await
    .unwrap();
    assert_status(&ok, 200);
    let refused = get(gw.proxy, "/api", &[("x-my-key", "guessed-key-value")])
        .await
        .unwrap();
    assert_status(&refused, 401);
    let none = gw.get("/elsewhere").await;
    assert_status(&none, 404);

    let all = json_lines(&file, 3).await;
    let by_id = |r: &Reply| {
        let id = r.header("x-request-id").unwrap();
        all.iter()
            .find(|l| l["request"]["id"] == id.as_str())
            .unwrap()
            .clone()
    };
    let l = by_id(&ok);
    assert_eq!(l["request"]["method"], "GET");
    assert_eq!(l["request"]["querystring"]["apikey"], "REDACTED");
    assert_eq!(l["request"]["querystring"]["page"], "2");
    assert_eq!(l["request"]["headers"]["authorization"], "REDACTED");
    assert_eq!(l["request"]["headers"]["cookie"], "REDACTED");
    assert_eq!(l["request"]["team"], "payments");
    assert_eq!(l["env"], "test");
    assert_eq!(l["status_copy"], 200);
    assert_eq!(l["who"], "user alice");
    assert_eq!(l["response"]["status"], 200);
    assert_eq!(
        l["response"]["size"].as_u64().unwrap(),
        ok.body.len() as u64
    );
    assert_eq!(l["route"]["name"], "api");
    assert_eq!(l["service"]["name"], "echo");
    assert_eq!(l["consumer"]["username"], "alice");
    assert_eq!(l["consumer"]["custom_id"], "A-1");
    assert_eq!(l["source"], "upstream");
    assert_eq!(l["upstream_status"], "200");
    assert_eq!(l["client_ip"], "127.0.0.1");
    assert!(l["upstream_uri"].as_str().unwrap().starts_with("/items?"));
    assert!(l["latencies"]["request"].is_u64() && l["latencies"]["kong"].is_u64());

    let l = by_id(&refused);
    assert_eq!(l["response"]["status"], 401);
    assert_eq!(l["request"]["headers"]["x-my-key"], "REDACTED");
    assert_eq!(l["source"], "kong");
    assert_eq!(l["refused_by"], "key-auth");

    let l = by_id(&none);
    assert_eq!(l["response"]["status"], 404);
    assert!(l.get("route").is_none());

    let text = std::fs::read_to_string(&file).unwrap() + &gw.logs();
    for secret in [
        "alice-log-secret",
        "some-token-value",
        "cookie-secret",
        "guessed-key-value",
    ] {
        assert!(!text.contains(secret), "{secret} leaked");
    }

    // logrotate: move the file away, SIGUSR1, and the next line lands in a new file.
    let rotated = dir.join("requests.log.1");
    std::fs::rename(&file, &rotated).unwrap();
    gw.signal("USR1");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_status(&gw.get("/elsewhere").await, 404);
    assert_eq!(json_lines(&file, 1).await.len(), 1);
    assert_eq!(json_lines(&rotated, 3).await.len(), 3);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn file_log_config_errors_are_refused_with_paths() {
    let origin = Origin::start("a").await;
    let cfg = one_service(
        &origin.url(),
        "      - name: r\n        paths: [/]\n        plugins:\n          - name: file-log\n            config: {path: relative/file.log, custom_fields_by_lua: {a: \"return 1\"}}\n",
    );
    let dir = temp_dir();
    let f = dir.join("bad.yml");
    write_file(&f, &cfg);
    let out = std::process::Command::new(common::bin())
        .args(["config", "validate"])
        .arg(&f)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        text.contains("services[0].routes[0].plugins[0].config.path"),
        "{text}"
    );
    assert!(text.contains("config.custom_fields_by_lua"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}
