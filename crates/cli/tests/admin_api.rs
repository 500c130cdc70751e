//! Kong's DB-less Admin API over the real binary: entities read back in Kong's shape, writes
//! refused with 405, secrets never shown, and `POST /config` replacing the running config
//! (or refused with field paths while the old one keeps serving).

mod common;

use common::*;
use serde_json::{json, Value};

fn full_config(origin: &str) -> String {
    format!(
        r#"_format_version: "3.0"
services:
  - name: orders
    url: {origin}/api
    tags: [team-a]
    routes:
      - name: orders-route
        paths: [/orders]
        methods: [GET, POST]
        headers:
          x-version: ["2"]
        tags: [team-a, public]
    plugins:
      - name: key-auth
        config:
          key_names: [apikey]
  - name: billing
    url: {origin}/billing
    tags: [team-b]
    routes:
      - name: billing-route
        paths: [/billing]
upstreams:
  - name: pool
    algorithm: least-connections
    targets:
      - target: 127.0.0.1:9001
        weight: 50
      - target: "[::1]:9002"
consumers:
  - username: alice
    custom_id: a-1
    keyauth_credentials:
      - key: alice-very-secret-key
    basicauth_credentials:
      - username: alice
        password: alice-password
    acls:
      - group: admins
  - username: bob
plugins:
  - name: http-log
    config:
      http_endpoint: http://127.0.0.1:9/log
      headers:
        Authorization: Bearer log-sink-token
        X-Env: prod
  - name: rate-limiting
    config:
      minute: 100
      policy: redis
      redis:
        host: 127.0.0.1
        password: redis-secret-pw
"#
    )
}

async fn admin(gw: &Gw, path: &str) -> Reply {
    get(gw.admin, path, &[]).await.expect("admin API answers")
}

#[tokio::test]
async fn entities_read_back_in_kongs_shape() {
    let origin = Origin::start("o").await;
    let gw = Gw::start(&full_config(&origin.url())).await;

    let r = admin(&gw, "/services").await;
    assert_status(&r, 200);
    let v = r.json();
    assert_eq!(v["next"], Value::Null);
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data[0]["name"], "orders");
    assert_eq!(data[0]["host"], "127.0.0.1");
    assert_eq!(data[0]["port"], origin.port());
    assert_eq!(data[0]["path"], "/api");
    assert_eq!(data[0]["protocol"], "http");
    assert_eq!(data[0]["retries"], 5);
    assert_eq!(data[0]["connect_timeout"], 60000);
    assert_eq!(data[0]["tags"], json!(["team-a"]));
    assert_eq!(data[0]["client_certificate"], Value::Null);

    // By name and by id, as Kong looks entities up.
    let by_name = admin(&gw, "/services/orders").await.json();
    let id = by_name["id"].as_str().unwrap().to_string();
    assert_eq!(admin(&gw, &format!("/services/{id}")).await.json(), by_name);
    let r = admin(&gw, "/services/nope").await;
    assert_status(&r, 404);
    assert_eq!(r.json(), json!({"message": "Not found"}));

    let routes = admin(&gw, "/services/orders/routes").await.json();
    let route = &routes["data"][0];
    assert_eq!(routes["data"].as_array().unwrap().len(), 1);
    assert_eq!(route["name"], "orders-route");
    assert_eq!(route["service"], json!({ "id": id }));
    assert_eq!(route["paths"], json!(["/orders"]));
    assert_eq!(route["methods"], json!(["GET", "POST"]));
    assert_eq!(route["headers"], json!({"x-version": ["2"]}));
    assert_eq!(route["strip_path"], true);
    assert_eq!(route["https_redirect_status_code"], 426);
    assert_eq!(route["path_handling"], "v0");
    assert_eq!(route["hosts"], Value::Null);
    assert_eq!(
        admin(&gw, "/routes/orders-route/service").await.json()["name"],
        "orders"
    );
    assert_eq!(
        admin(&gw, "/routes").await.json()["data"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    let plugins = admin(&gw, "/services/orders/plugins").await.json();
    assert_eq!(plugins["data"][0]["name"], "key-auth");
    assert_eq!(plugins["data"][0]["service"], json!({ "id": id }));
    assert_eq!(plugins["data"][0]["config"]["key_names"], json!(["apikey"]));

    let up = admin(&gw, "/upstreams/pool").await.json();
    assert_eq!(up["algorithm"], "least-connections");
    assert_eq!(up["hash_on"], "none");
    assert_eq!(up["healthchecks"]["active"]["http_path"], "/");
    let targets = admin(&gw, "/upstreams/pool/targets").await.json();
    let t: Vec<&str> = targets["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["target"].as_str().unwrap())
        .collect();
    assert_eq!(t, ["127.0.0.1:9001", "[::1]:9002"]);
    assert_eq!(targets["data"][0]["weight"], 50);
    assert_eq!(targets["data"][0]["upstream"], json!({"id": up["id"]}));

    let alice = admin(&gw, "/consumers/alice").await.json();
    assert_eq!(alice["custom_id"], "a-1");
    let by_custom = admin(&gw, "/consumers?custom_id=a-1").await.json();
    assert_eq!(by_custom["data"], json!([alice]));
    let acls = admin(&gw, "/consumers/alice/acls").await.json();
    assert_eq!(acls["data"][0]["group"], "admins");
    assert_eq!(acls["data"][0]["consumer"], json!({"id": alice["id"]}));
    assert_status(&admin(&gw, "/consumers/nobody/acls").await, 404);
    // One credential by id, at the top level or under its consumer (not under another).
    let acl_id = acls["data"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(
        admin(&gw, &format!("/acls/{acl_id}")).await.json(),
        acls["data"][0]
    );
    assert_eq!(
        admin(&gw, &format!("/consumers/alice/acls/{acl_id}"))
            .await
            .json(),
        acls["data"][0]
    );
    assert_status(
        &admin(&gw, &format!("/consumers/bob/acls/{acl_id}")).await,
        404,
    );
    assert_status(
        &admin(&gw, "/acls/00000000-0000-0000-0000-000000000000").await,
        404,
    );

    let enabled = admin(&gw, "/plugins/enabled").await.json();
    let names = enabled["enabled_plugins"].as_array().unwrap();
    assert!(names.iter().any(|n| n == "key-auth"), "{enabled}");
}

#[tokio::test]
async fn secrets_never_leave_through_the_admin_api() {
    let origin = Origin::start("o").await;
    let gw = Gw::start(&full_config(&origin.url())).await;
    let key = admin(&gw, "/consumers/alice/key-auth").await.json();
    assert_eq!(key["data"][0]["key"], "<redacted>");
    let key_id = key["data"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(
        admin(&gw, &format!("/key-auths/{key_id}")).await.json()["key"],
        "<redacted>"
    );
    let all_keys = admin(&gw, "/key-auths").await.json();
    assert_eq!(all_keys["data"][0]["key"], "<redacted>");
    let basic = admin(&gw, "/consumers/alice/basic-auth").await.json();
    assert_eq!(basic["data"][0]["username"], "alice");
    assert_eq!(basic["data"][0]["password"], "<redacted>");
    let plugins = admin(&gw, "/plugins").await.json();
    let by_name = |n: &str| {
        plugins["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == n)
            .unwrap()
            .clone()
    };
    let log = by_name("http-log");
    assert_eq!(log["config"]["headers"]["Authorization"], "<redacted>");
    assert_eq!(log["config"]["headers"]["X-Env"], "prod");
    let rl = by_name("rate-limiting");
    assert_eq!(rl["config"]["redis"]["password"], "<redacted>");
    assert_eq!(rl["config"]["minute"], 100);
    // Nowhere in any answer: walk every read endpoint.
    for path in [
        "/services",
        "/routes",
        "/plugins",
        "/consumers",
        "/consumers/alice/key-auth",
        "/consumers/alice/basic-auth",
        "/key-auths",
        "/basic-auths",
        "/upstreams",
        "/certificates",
        "/config",
        &format!("/key-auths/{key_id}"),
        &format!("/consumers/alice/key-auth/{key_id}"),
    ] {
        let text = admin(&gw, path).await.text();
        assert!(!text.is_empty(), "{path}");
        for secret in [
            "alice-very-secret-key",
            "alice-password",
            "log-sink-token",
            "redis-secret-pw",
        ] {
            assert!(!text.contains(secret), "{path} shows {secret}: {text}");
        }
    }
}

#[tokio::test]
async fn writes_are_refused_as_kong_refuses_them_without_a_database() {
    let origin = Origin::start("o").await;
    let gw = Gw::start(&full_config(&origin.url())).await;
    for (method, path, op, schema) in [
        ("POST", "/services", "create", "services"),
        ("PATCH", "/services/orders", "update", "services"),
        ("PUT", "/routes/orders-route", "create or update", "routes"),
        ("DELETE", "/consumers/alice", "remove", "consumers"),
        (
            "POST",
            "/consumers/alice/key-auth",
            "create",
            "keyauth_credentials",
        ),
        ("POST", "/plugins", "create", "plugins"),
    ] {
        let r = request(gw.admin, method, path, &[], "{}").await.unwrap();
        assert_status(&r, 405);
        assert_eq!(
            r.json(),
            json!({
                "code": 12,
                "name": "operation unsupported",
                "message": format!("cannot {op} '{schema}' entities when not using a database"),
            }),
            "{method} {path}"
        );
    }
    // Nothing changed.
    assert_eq!(
        admin(&gw, "/services").await.json()["data"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn collections_page_and_filter_by_tags() {
    let origin = Origin::start("o").await;
    let gw = Gw::start(&full_config(&origin.url())).await;
    let first = admin(&gw, "/services?size=1").await.json();
    assert_eq!(first["data"].as_array().unwrap().len(), 1);
    assert_eq!(first["data"][0]["name"], "orders");
    let next = first["next"].as_str().unwrap().to_string();
    assert!(next.starts_with("/services?offset="), "{next}");
    assert!(next.ends_with("&size=1"), "{next}");
    let second = admin(&gw, &next).await.json();
    assert_eq!(second["data"][0]["name"], "billing");
    assert_eq!(second["next"], Value::Null);

    let tagged = admin(&gw, "/services?tags=team-b").await.json();
    assert_eq!(tagged["data"].as_array().unwrap().len(), 1);
    assert_eq!(tagged["data"][0]["name"], "billing");
    let either = admin(&gw, "/services?tags=team-a/team-b").await.json();
    assert_eq!(either["data"].as_array().unwrap().len(), 2);
    let both = admin(&gw, "/routes?tags=team-a,public").await.json();
    assert_eq!(both["data"].as_array().unwrap().len(), 1);

    let r = admin(&gw, "/services?size=0").await;
    assert_status(&r, 400);
    assert!(r.json()["message"].as_str().unwrap().contains("size"));
    assert_status(&admin(&gw, "/services?offset=%21%21").await, 400);
}

#[tokio::test]
async fn post_config_replaces_the_running_config_or_is_refused_with_paths() {
    let origin = Origin::start("o").await;
    let dir = temp_dir();
    let sec = dir.join("security.log");
    let gw = Gw::start_with(
        &one_service(&origin.url(), "      - name: r\n        paths: [/old]\n"),
        &format!("security_log = \"{}\"\n", sec.display()),
    )
    .await;
    assert_status(&gw.get("/old").await, 200);
    assert_status(&gw.get("/new").await, 404);

    // A bad config: 400 naming every field path; the old config keeps serving.
    let bad = "_format_version: \"3.0\"\nservices:\n  - name: s\n    url: http://127.0.0.1:1\n    routes:\n      - paths: [nope]\n";
    let r = request(
        gw.admin,
        "POST",
        "/config",
        &[("content-type", "text/yaml")],
        bad,
    )
    .await
    .unwrap();
    assert_status(&r, 400);
    let v = r.json();
    assert_eq!(v["code"], 14);
    assert_eq!(v["name"], "invalid declarative configuration");
    assert!(
        v["fields"]["services[0].routes[0].paths[0]"]
            .as_str()
            .unwrap()
            .contains("must start with"),
        "{v}"
    );
    assert_status(&gw.get("/old").await, 200);

    // Nothing to load.
    let r = request(gw.admin, "POST", "/config", &[], "").await.unwrap();
    assert_status(&r, 400);
    assert_eq!(r.json()["message"], "expected a declarative configuration");

    // A good one as YAML text: 201 with the entities, and it serves at once.
    let good = one_service(&origin.url(), "      - name: r\n        paths: [/new]\n");
    let r = request(
        gw.admin,
        "POST",
        "/config",
        &[("content-type", "text/yaml")],
        &good,
    )
    .await
    .unwrap();
    assert_status(&r, 201);
    // Kong's shape: entities by name, then by id.
    let routes = r.json()["routes"].clone();
    let (id, route) = routes.as_object().unwrap().iter().next().unwrap();
    assert_eq!(&route["id"], id);
    assert_eq!(route["paths"], json!(["/new"]));
    assert_status(&gw.get("/new").await, 200);
    assert_status(&gw.get("/old").await, 404);
    let hash = gw.config_hash().await;
    assert_eq!(hash, portcullis_hash(&good));

    // ?check_hash=1 with the running config: 304, nothing reloaded.
    let r = request(
        gw.admin,
        "POST",
        "/config?check_hash=1",
        &[("content-type", "text/yaml")],
        &good,
    )
    .await
    .unwrap();
    assert_status(&r, 304);

    // As JSON `{"config": "<text>"}`, and as a multipart upload (curl -F config=@kong.yml).
    let again = one_service(&origin.url(), "      - name: r\n        paths: [/json]\n");
    let body = json!({ "config": again }).to_string();
    let r = request(
        gw.admin,
        "POST",
        "/config",
        &[("content-type", "application/json")],
        &body,
    )
    .await
    .unwrap();
    assert_status(&r, 201);
    assert_status(&gw.get("/json").await, 200);
    let multi = one_service(&origin.url(), "      - name: r\n        paths: [/multi]\n");
    let body = format!(
        "--B0undary\r\nContent-Disposition: form-data; name=\"config\"; filename=\"kong.yml\"\r\n\r\n{multi}\r\n--B0undary--\r\n"
    );
    let r = request(
        gw.admin,
        "POST",
        "/config",
        &[("content-type", "multipart/form-data; boundary=B0undary")],
        &body,
    )
    .await
    .unwrap();
    assert_status(&r, 201);
    assert_status(&gw.get("/multi").await, 200);
    assert_status(&gw.get("/json").await, 404);

    // Each accepted change is a security event with the caller's address.
    let events = json_lines(&sec, 3).await;
    let changes: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "admin_change" && e["path"] == "/config")
        .collect();
    assert_eq!(changes.len(), 3, "{events:?}");
    assert_eq!(changes[0]["client_ip"], "127.0.0.1");
}

/// The config hash `/status` reports for a config text (the first 32 hex digits of its
/// SHA-256, as `portcullis_proxy::config_hash` makes it).
fn portcullis_hash(text: &str) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(text.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect::<String>()[..32].to_string()
}

/// Values from `{vault://env/...}` references read back as the reference, in entities and in
/// the errors of a refused `POST /config`, so the Admin API cannot read the environment.
#[tokio::test]
async fn vault_values_read_back_as_their_references() {
    let origin = Origin::start("o").await;
    let secret = std::env::var("PATH").expect("PATH is set");
    assert!(secret.len() >= 4);
    let cfg = format!(
        "{}consumers:\n  - username: carol\n    custom_id: \"{{vault://env/PATH}}\"\n",
        one_service(&origin.url(), "      - name: r\n        paths: [/]\n")
    );
    let gw = Gw::start(&cfg).await;
    let carol = admin(&gw, "/consumers/carol").await;
    assert_eq!(carol.json()["custom_id"], "{vault://env/PATH}");
    assert!(!carol.text().contains(&secret));

    // Refused: the tag check quotes the value it refused, and the answer shows the reference.
    let bad = format!(
        "{}consumers:\n  - username: dave\n    tags: [\"{{vault://env/PATH}}\"]\n",
        one_service(&origin.url(), "      - name: r\n        paths: [/]\n")
    );
    let r = request(
        gw.admin,
        "POST",
        "/config",
        &[("content-type", "text/yaml")],
        &bad,
    )
    .await
    .unwrap();
    assert_status(&r, 400);
    assert!(!r.text().contains(&secret), "{}", r.text());

    // Accepted: the 201 body (Kong's shape: entities by id) shows the reference too.
    let r = request(
        gw.admin,
        "POST",
        "/config",
        &[("content-type", "text/yaml")],
        &cfg,
    )
    .await
    .unwrap();
    assert_status(&r, 201);
    assert!(!r.text().contains(&secret), "{}", r.text());
    let consumers = r.json()["consumers"].clone();
    let (_, c) = consumers.as_object().unwrap().iter().next().unwrap();
    assert_eq!(c["custom_id"], "{vault://env/PATH}");
    assert!(!gw.logs().contains(&secret));
}

/// Transformer header lists, URLs with credentials: redacted; a YAML alias bomb posted to
/// `/config` is refused without taking the node down; a raw body sent form-encoded (as
/// `curl --data-binary @kong.yml` does) is read as the config, as Kong reads it.
#[tokio::test]
async fn more_secrets_redacted_alias_bombs_refused_and_raw_bodies_read() {
    let origin = Origin::start("o").await;
    let cfg = format!(
        "{}plugins:\n  - name: request-transformer\n    config:\n      add:\n        headers: [\"Authorization:Bearer up-token\", \"X-Team:blue\"]\n        querystring: [\"api_key:qs-secret\"]\n  - name: http-log\n    config:\n      http_endpoint: https://logger:url-password@127.0.0.1:9/log\n",
        one_service(&origin.url(), "      - name: r\n        paths: [/]\n")
    );
    let gw = Gw::start(&cfg).await;
    let text = admin(&gw, "/plugins").await.text();
    for secret in ["up-token", "qs-secret", "url-password", "logger:"] {
        assert!(!text.contains(secret), "{secret} shown: {text}");
    }
    assert!(text.contains("X-Team:blue"), "{text}");
    assert!(text.contains("Authorization:<redacted>"), "{text}");

    let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..10 {
        let p = i - 1;
        bomb.push_str(&format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    let r = request(
        gw.admin,
        "POST",
        "/config",
        &[("content-type", "text/yaml")],
        &bomb,
    )
    .await
    .unwrap();
    assert_status(&r, 400);
    // Refused by serde_yaml's own repetition limit or, past it, by the node budget.
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .starts_with("declarative config is invalid: invalid YAML"),
        "{}",
        r.text()
    );
    assert_status(&gw.get("/").await, 200);

    let next = one_service(&origin.url(), "      - name: r\n        paths: [/raw]\n");
    let r = request(
        gw.admin,
        "POST",
        "/config",
        &[("content-type", "application/x-www-form-urlencoded")],
        &next,
    )
    .await
    .unwrap();
    assert_status(&r, 201);
    assert_status(&gw.get("/raw").await, 200);
}
