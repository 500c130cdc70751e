//! Security events and threshold alerts through the real binary: every refusal becomes one
//! JSON event (request id, client ip, route, consumer, reason) in the security log, and a
//! burst produces exactly one webhook alert.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

/// An HTTP receiver that keeps every JSON body POSTed to it.
async fn webhook() -> (u16, Received<Value>) {
    let (addr, got) = receiver(|_, body| serde_json::from_slice(&body).unwrap()).await;
    (addr.port(), got)
}

#[tokio::test]
async fn refusals_become_events_and_a_burst_one_alert() {
    let origin = Origin::start("a").await;
    let (hook, alerts) = webhook().await;
    let dir = temp_dir();
    let sec = dir.join("security.log");
    let settings = format!(
        r#"security_log = "{}"
security_http = "http://127.0.0.1:{hook}/events"

[[alerts]]
name = "auth-bruteforce"
events = ["auth_failure"]
group_by = "client_ip"
threshold = 3
window = 60
webhook = "http://127.0.0.1:{hook}/alert"
"#,
        sec.display()
    );
    let cfg = format!(
        r#"_format_version: "3.0"
consumers:
  - username: alice
    keyauth_credentials:
      - key: alice-event-secret
services:
  - name: svc
    url: {origin}
    routes:
      - name: keyed
        paths: [/keyed]
        plugins:
          - name: key-auth
      - name: admins
        paths: [/admins]
        plugins:
          - name: key-auth
          - name: acl
            config: {{allow: [admins]}}
      - name: blocked
        paths: [/blocked]
        plugins:
          - name: ip-restriction
            config: {{deny: [127.0.0.1]}}
"#,
        origin = origin.url()
    );
    let gw = Gw::start_with(&cfg, &settings).await;

    let mut ids = Vec::new();
    for i in 0..10 {
        let key = format!("wrong-key-{i}");
        let r = get(gw.proxy, "/keyed", &[("apikey", &key)]).await.unwrap();
        assert_status(&r, 401);
        ids.push(r.header("x-request-id").unwrap());
    }
    let denied = get(gw.proxy, "/admins", &[("apikey", "alice-event-secret")])
        .await
        .unwrap();
    assert_status(&denied, 403);
    let blocked = gw.get("/blocked").await;
    assert_status(&blocked, 403);
    assert_status(
        &get(gw.proxy, "/keyed", &[("apikey", "alice-event-secret")])
            .await
            .unwrap(),
        200,
    );

    let all = json_lines(&sec, 12).await;
    assert_eq!(all.len(), 12, "only refusals are events: {all:?}");
    let failures: Vec<&Value> = all
        .iter()
        .filter(|e| e["event"] == "auth_failure")
        .collect();
    assert_eq!(failures.len(), 10);
    for (e, id) in failures.iter().zip(&ids) {
        assert_eq!(e["request_id"], id.as_str());
        assert_eq!(e["kind"], "security");
        assert_eq!(e["plugin"], "key-auth");
        assert_eq!(e["route"], "keyed");
        assert_eq!(e["client_ip"], "127.0.0.1");
        assert_eq!(e["reason"], "Unauthorized");
        assert_eq!(e["status"], 401);
        assert!(e["time"].as_str().unwrap().ends_with('Z'));
    }
    let d = all.iter().find(|e| e["event"] == "authz_denied").unwrap();
    assert_eq!(d["consumer"], "alice");
    assert_eq!(d["plugin"], "acl");
    assert_eq!(d["reason"], "You cannot consume this service");
    let b = all.iter().find(|e| e["event"] == "ip_blocked").unwrap();
    assert_eq!(b["route"], "blocked");

    // Ten failures over a threshold of three: exactly one alert for the period.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let all_posts = alerts.lock().unwrap().clone();
    let got: Vec<Value> = all_posts
        .iter()
        .filter(|v| v.is_object())
        .cloned()
        .collect();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["alert"], "auth-bruteforce");
    assert_eq!(got[0]["group"], "127.0.0.1");
    assert_eq!(got[0]["count"], 4);
    assert_eq!(got[0]["last_event"]["event"], "auth_failure");

    // The same events also arrived at the HTTP sink, batched as JSON arrays.
    let mut posted = Vec::new();
    for _ in 0..100 {
        posted = alerts
            .lock()
            .unwrap()
            .iter()
            .filter_map(|v| v.as_array().cloned())
            .flatten()
            .collect::<Vec<Value>>();
        if posted.len() >= 12 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(posted.len(), 12, "{posted:?}");
    assert_eq!(
        posted
            .iter()
            .filter(|e| e["event"] == "auth_failure")
            .count(),
        10
    );

    let text = std::fs::read_to_string(&sec).unwrap()
        + &serde_json::to_string(&all_posts).unwrap()
        + &gw.logs();
    assert!(!text.contains("wrong-key-"));
    assert!(!text.contains("alice-event-secret"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn bad_alert_rules_stop_the_start_with_a_clear_error() {
    let origin = Origin::start("a").await;
    let err = common::refused_start(
        &one_service(&origin.url(), "      - name: r\n        paths: [/]\n"),
        "[[alerts]]\nname = \"x\"\nthreshold = 3\ngroup_by = \"planet\"\nwebhook = \"http://127.0.0.1:1/\"\n",
    );
    assert!(err.contains("alerts[0].group_by"), "{err}");
}
