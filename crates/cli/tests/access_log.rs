//! Request ids and the access log: every request leaves one JSON line naming its id, its
//! consumer or the reason it was refused, and no credential.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;

fn config(origin: &str) -> String {
    format!(
        r#"_format_version: "3.0"
consumers:
  - username: alice
    keyauth_credentials:
      - key: alice-very-secret-key
services:
  - name: echo
    url: {origin}
    routes:
      - name: open
        paths: [/open]
      - name: locked
        paths: [/locked]
        plugins:
          - name: key-auth
"#
    )
}

#[tokio::test]
async fn every_request_gets_an_id_sent_upstream_and_back() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&config(&origin.url())).await;

    // A client's own id is replaced: ids in logs are always the gateway's.
    let r = get(gw.proxy, "/open", &[("x-request-id", "forged-id")])
        .await
        .unwrap();
    assert_status(&r, 200);
    let id = r.header("x-request-id").unwrap();
    assert_eq!(id.len(), 32, "{id}");
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(r.upstream_header("x-request-id").unwrap(), id);

    let r2 = gw.get("/open").await;
    assert_ne!(r2.header("x-request-id").unwrap(), id);

    // The same on a route with plugins, where the id is among the headers plugins see.
    let r4 = get(
        gw.proxy,
        "/locked?apikey=alice-very-secret-key",
        &[("x-request-id", "forged-id")],
    )
    .await
    .unwrap();
    assert_status(&r4, 200);
    let id4 = r4.header("x-request-id").unwrap();
    assert_eq!(id4.len(), 32, "{id4}");
    assert_eq!(r4.upstream_header("x-request-id").unwrap(), id4);

    // Gateway-generated answers carry one too.
    let r3 = gw.get("/nowhere").await;
    assert_status(&r3, 404);
    assert_eq!(r3.header("x-request-id").unwrap().len(), 32);
}

#[tokio::test]
async fn access_log_names_consumer_refusals_and_never_credentials() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&config(&origin.url())).await;

    let ok = gw.get("/locked?apikey=alice-very-secret-key&x=1").await;
    assert_status(&ok, 200);
    let refused = get(gw.proxy, "/locked", &[("apikey", "wrong-key-value")])
        .await
        .unwrap();
    assert_status(&refused, 401);
    let missing = gw.get("/locked").await;
    assert_status(&missing, 401);
    let none = gw.get("/nowhere").await;
    assert_status(&none, 404);

    let lines = gw.access_lines(4).await;
    let by_id = |r: &Reply| {
        let id = r.header("x-request-id").unwrap();
        lines
            .iter()
            .find(|l| l["request_id"] == id.as_str())
            .unwrap_or_else(|| panic!("no line for {id}: {lines:?}"))
            .clone()
    };

    let l = by_id(&ok);
    assert_eq!(l["kind"], "access");
    assert_eq!(l["status"], 200);
    assert_eq!(l["method"], "GET");
    assert_eq!(l["path"], "/locked");
    assert_eq!(l["route"], "locked");
    assert_eq!(l["service"], "echo");
    assert_eq!(l["consumer"], "alice");
    assert_eq!(l["client_ip"], "127.0.0.1");
    assert_eq!(l["upstream"], format!("127.0.0.1:{}", origin.port()));
    assert_eq!(l["response_bytes"].as_u64().unwrap(), ok.body.len() as u64);
    assert!(l["latencies"]["total_ms"].is_u64());
    assert!(l["latencies"]["upstream_ms"].is_u64());
    assert!(l.get("refused_by").is_none());

    let l = by_id(&refused);
    assert_eq!(l["status"], 401);
    assert_eq!(l["refused_by"], "key-auth");
    assert_eq!(l["reason"], "Unauthorized");
    assert!(l["consumer"].is_null());
    assert!(l["upstream"].is_null());

    let l = by_id(&missing);
    assert_eq!(l["reason"], "No API key found in request");

    let l = by_id(&none);
    assert_eq!(l["status"], 404);
    assert_eq!(l["reason"], "no Route matched with those values");
    assert!(l["route"].is_null());

    let all = gw.logs();
    assert!(!all.contains("alice-very-secret-key"), "{all}");
    assert!(!all.contains("wrong-key-value"), "{all}");
}

#[tokio::test]
async fn correlation_id_plugin_sets_and_echoes_its_header() {
    let origin = Origin::start("a").await;
    let cfg = one_service(
        &origin.url(),
        "      - name: r\n        paths: [/]\n        plugins:\n          - name: correlation-id\n            config: {echo_downstream: true}\n      - name: keep\n        paths: [/keep]\n        plugins:\n          - name: correlation-id\n            config: {header_name: X-Correlation-ID, generator: uuid, keep_client_id: true}\n",
    );
    let gw = Gw::start(&cfg).await;

    // Kong's defaults: Kong-Request-ID, uuid#counter; a client's value is replaced.
    let r = get(gw.proxy, "/", &[("kong-request-id", "chosen-by-client")])
        .await
        .unwrap();
    let sent = r.upstream_header("kong-request-id").unwrap();
    assert_ne!(sent, "chosen-by-client");
    let (uuid, n) = sent.split_once('#').unwrap();
    assert_eq!(uuid.len(), 36);
    assert!(n.parse::<u64>().is_ok());
    assert_eq!(r.header("kong-request-id").unwrap(), sent);
    let next = gw
        .get("/")
        .await
        .upstream_header("kong-request-id")
        .unwrap();
    assert_ne!(next, sent);
    assert!(next.starts_with(uuid));

    // keep_client_id keeps a client's value; without one a v4 uuid is made; no echo.
    let r = get(gw.proxy, "/keep", &[("x-correlation-id", "trace-123")])
        .await
        .unwrap();
    assert_eq!(r.upstream_header("x-correlation-id").unwrap(), "trace-123");
    assert!(r.header("x-correlation-id").is_none());
    let r = gw.get("/keep").await;
    assert_eq!(r.upstream_header("x-correlation-id").unwrap().len(), 36);
}
