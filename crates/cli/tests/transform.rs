//! request-transformer and response-transformer through the real binary: what the upstream
//! received and what the client got back.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;

fn config(origin: &str, plugins: &str) -> String {
    one_service(
        origin,
        &format!("      - name: r\n        paths: [/t]\n        strip_path: false\n        plugins:\n{plugins}"),
    )
}

#[tokio::test]
async fn request_transformer_edits_headers_query_and_bodies() {
    let origin = Origin::start("a").await;
    let plugins = r#"          - name: request-transformer
            config:
              remove: {headers: [x-drop], querystring: [secret], body: [password]}
              rename: {headers: ["x-old:x-new"], querystring: ["q:query"], body: ["user:username"]}
              replace: {headers: ["x-rep:replaced", "x-absent:never"], body: ["role:user"]}
              add: {headers: ["x-added:from-$(headers.x-src)", "x-rep:not-added"], querystring: ["v:2"], body: ["source:gateway"]}
              append: {headers: ["x-multi:two"]}
"#;
    let gw = Gw::start(&config(&origin.url(), plugins)).await;
    let r = request(
        gw.proxy,
        "POST",
        "/t/path?q=find&secret=s3&keep=1",
        &[
            ("x-drop", "gone"),
            ("x-old", "moved"),
            ("x-rep", "original"),
            ("x-src", "src-value"),
            ("x-multi", "one"),
            ("content-type", "application/json"),
        ],
        r#"{"user":"ann","password":"pw","role":"admin"}"#,
    )
    .await
    .unwrap();
    assert_status(&r, 200);
    let j = r.json();
    assert!(r.upstream_header("x-drop").is_none());
    assert!(r.upstream_header("x-old").is_none());
    assert_eq!(r.upstream_header("x-new").unwrap(), "moved");
    assert_eq!(r.upstream_header("x-rep").unwrap(), "replaced");
    assert!(r.upstream_header("x-absent").is_none());
    assert_eq!(r.upstream_header("x-added").unwrap(), "from-src-value");
    assert_eq!(r.upstream_header("x-multi").unwrap(), "one, two");
    assert_eq!(j["uri"], "/t/path?query=find&keep=1&v=2");
    let body: serde_json::Value = serde_json::from_str(j["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"username": "ann", "role": "user", "source": "gateway"})
    );
    let len = j["body"].as_str().unwrap().len().to_string();
    assert_eq!(r.upstream_header("content-length").unwrap(), len);

    // Form bodies too.
    let r = request(
        gw.proxy,
        "POST",
        "/t",
        &[("content-type", "application/x-www-form-urlencoded")],
        "user=bo+b&password=x&role=admin",
    )
    .await
    .unwrap();
    assert_eq!(r.json()["body"], "username=bo%20b&role=user&source=gateway");
}

#[tokio::test]
async fn request_transformer_changes_method_and_uri() {
    let origin = Origin::start("a").await;
    let plugins = r#"          - name: request-transformer
            config:
              http_method: POST
              replace: {uri: "/v2/items/$(query_params.id)"}
"#;
    let gw = Gw::start(&config(&origin.url(), plugins)).await;
    let r = gw.get("/t/legacy?id=42").await;
    assert_status(&r, 200);
    assert_eq!(r.json()["method"], "POST");
    assert_eq!(r.json()["uri"], "/v2/items/42?id=42");
    // Values from the request cannot add path segments, a query or a fragment.
    let r = gw.get("/t/legacy?id=%2e%2e%2fadmin%3Fx%3D1").await;
    let uri = r.json()["uri"].as_str().unwrap().to_string();
    assert!(
        uri.starts_with("/v2/items/%2E%2E%2Fadmin%3Fx%3D1?"),
        "{uri}"
    );
}

#[tokio::test]
async fn response_transformer_edits_headers_and_json() {
    let origin = Origin::start("a").await;
    let plugins = r#"          - name: response-transformer
            config:
              remove: {headers: [x-internal], json: [headers, uri]}
              rename: {headers: ["x-old:x-new"], json: ["origin:served_by"]}
              add: {headers: ["x-added:yes"], json: ["version:2", "beta:true"], json_types: [number, boolean]}
              append: {headers: ["x-multi:b"]}
"#;
    let gw = Gw::start(&config(&origin.url(), plugins)).await;
    let r = get(
        gw.proxy,
        "/t",
        &[
            ("x-echo-response-x-internal", "secret-topology"),
            ("x-echo-response-x-old", "v"),
            ("x-echo-response-x-multi", "a"),
        ],
    )
    .await
    .unwrap();
    assert_status(&r, 200);
    assert!(r.header("x-internal").is_none());
    assert_eq!(r.header("x-new").unwrap(), "v");
    assert_eq!(r.header("x-added").unwrap(), "yes");
    let multi: Vec<_> = r
        .headers
        .get_all("x-multi")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(multi, ["a", "b"]);
    let j = r.json();
    assert!(j.get("headers").is_none() && j.get("uri").is_none(), "{j}");
    assert_eq!(j["served_by"], "a");
    assert_eq!(j["version"], 2);
    assert_eq!(j["beta"], true);
    assert_eq!(
        r.header("content-length").unwrap(),
        r.body.len().to_string()
    );

    // Bad entries are refused with their paths, and the running config keeps serving.
    let bad = config(
        &origin.url(),
        "          - name: response-transformer\n            config: {add: {json: [\"x\"], json_types: [float]}}\n",
    );
    gw.reload(&bad).await;
    let logs = gw.logs();
    assert!(logs.contains("plugins[0].config.add.json[0]"), "{logs}");
    assert!(
        logs.contains("plugins[0].config.add.json_types[0]"),
        "{logs}"
    );
    assert_status(&gw.get("/t").await, 200);
}
