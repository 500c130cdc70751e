//! request-validator and oas-validation through the real binary: what is refused (and with
//! which message), what reaches the upstream, and which configs `config validate` refuses.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::{json, Value};

const JSON: (&str, &str) = ("content-type", "application/json");

/// A route `name` on `path` with one plugin (YAML lines, indented for the plugin list).
fn route(name: &str, path: &str, plugin: &str) -> String {
    format!(
        "      - name: {name}\n        paths: [\"{path}\"]\n        strip_path: false\n        plugins:\n{plugin}"
    )
}

/// Indents a block of text for a YAML block scalar at `n` spaces.
fn indent(text: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    text.lines()
        .map(|l| format!("{pad}{l}\n"))
        .collect::<String>()
}

fn request_validator(config: Value) -> String {
    format!(
        "          - name: request-validator\n            config: {}\n",
        config
    )
}

#[tokio::test]
async fn request_validator_body_schema() {
    let origin = Origin::start("a").await;
    let schema = json!({
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name"],
        "additionalProperties": false,
    })
    .to_string();
    let routes = [
        route(
            "quiet",
            "/body",
            &request_validator(json!({"version": "draft7", "body_schema": schema})),
        ),
        route(
            "verbose",
            "/verbose",
            &request_validator(json!({
                "version": "draft7",
                "body_schema": schema,
                "verbose_response": true,
                "allowed_content_types": ["application/json", "application/x-www-form-urlencoded"],
            })),
        ),
        route(
            "modern",
            "/tuple",
            &request_validator(json!({
                "version": "draft202012",
                "body_schema": r#"{"type":"array","prefixItems":[{"type":"string"},{"type":"integer"}],"items":false}"#,
            })),
        ),
    ]
    .concat();
    let gw = Gw::start(&one_service(&origin.url(), &routes)).await;

    // A valid body reaches the upstream intact.
    let body = r#"{"name":"ann","age":7}"#;
    let r = request(gw.proxy, "POST", "/body", &[JSON], body)
        .await
        .unwrap();
    assert_status(&r, 200);
    assert_eq!(r.json()["body"], body);
    assert_eq!(origin.hits(), 1);

    // Wrong type, missing required, additional property: 400 with Kong's message, no upstream.
    for bad in [
        r#"{"name":"ann","age":"seven"}"#,
        r#"{"age":7}"#,
        r#"{"name":"ann","admin":true}"#,
    ] {
        let r = request(gw.proxy, "POST", "/body", &[JSON], bad)
            .await
            .unwrap();
        assert_status(&r, 400);
        assert_eq!(
            r.json(),
            json!({"message": "request body doesn't conform to schema"})
        );
    }
    let r = request(gw.proxy, "POST", "/body", &[JSON], "{oops")
        .await
        .unwrap();
    assert_status(&r, 400);
    assert_eq!(
        r.json(),
        json!({"message": "request body is not valid JSON"})
    );
    // A content type not allowed: Kong's generic message unless verbose.
    let r = request(
        gw.proxy,
        "POST",
        "/body",
        &[("content-type", "text/xml")],
        "<a/>",
    )
    .await
    .unwrap();
    assert_status(&r, 400);
    assert_eq!(
        r.json(),
        json!({"message": "request body doesn't conform to schema"})
    );
    assert_eq!(origin.hits(), 1);

    // Verbose: the reason, naming the property but not echoing the value.
    let r = request(
        gw.proxy,
        "POST",
        "/verbose",
        &[JSON],
        r#"{"name":"ann","age":"top-secret"}"#,
    )
    .await
    .unwrap();
    assert_status(&r, 400);
    let m = r.json()["message"].as_str().unwrap().to_string();
    assert!(m.contains("/age") && !m.contains("top-secret"), "{m}");
    let r = request(
        gw.proxy,
        "POST",
        "/verbose",
        &[("content-type", "text/xml")],
        "<a/>",
    )
    .await
    .unwrap();
    assert_status(&r, 400);
    assert_eq!(
        r.json(),
        json!({"message": "specified Content-Type is not allowed"})
    );
    // Another allowed type is not body-validated (as in Kong).
    let r = request(
        gw.proxy,
        "POST",
        "/verbose",
        &[("content-type", "application/x-www-form-urlencoded")],
        "a=b",
    )
    .await
    .unwrap();
    assert_status(&r, 200);
    assert_eq!(origin.hits(), 2);

    // draft 2020-12 keywords.
    let r = request(gw.proxy, "POST", "/tuple", &[JSON], r#"["a",1]"#)
        .await
        .unwrap();
    assert_status(&r, 200);
    let r = request(gw.proxy, "POST", "/tuple", &[JSON], r#"["a","b"]"#)
        .await
        .unwrap();
    assert_status(&r, 400);
    let r = request(gw.proxy, "POST", "/tuple", &[JSON], r#"["a",1,2]"#)
        .await
        .unwrap();
    assert_status(&r, 400);
    assert_eq!(origin.hits(), 3);
}

#[tokio::test]
async fn request_validator_parameters() {
    let origin = Origin::start("a").await;
    let params = json!([
        {"name": "limit", "in": "query", "required": true, "schema": r#"{"type":"integer","maximum":50}"#},
        {"name": "ids", "in": "query", "required": false, "style": "form", "explode": true,
         "schema": r#"{"type":"array","items":{"type":"integer"},"maxItems":3}"#},
        {"name": "x-kong-name", "in": "header", "required": false, "style": "simple", "explode": false,
         "schema": r#"{"type":"array","items":{"type":"integer"}}"#},
        {"name": "id", "in": "path", "required": true, "style": "simple", "explode": false,
         "schema": r#"{"type":"integer","minimum":1}"#},
    ]);
    let routes = [
        route(
            "quiet",
            "~/items/(?<id>[^/]+)$",
            &request_validator(json!({"parameter_schema": params})),
        ),
        route(
            "verbose",
            "~/v/items/(?<id>[^/]+)$",
            &request_validator(json!({"parameter_schema": params, "verbose_response": true})),
        ),
    ]
    .concat();
    let gw = Gw::start(&one_service(&origin.url(), &routes)).await;

    let r = get(
        gw.proxy,
        "/items/4?limit=10&ids=1&ids=2",
        &[("x-kong-name", "1,2,3")],
    )
    .await
    .unwrap();
    assert_status(&r, 200);
    assert_eq!(r.json()["uri"], "/items/4?limit=10&ids=1&ids=2");

    for target in [
        "/items/4",                                 // required missing
        "/items/4?limit=ten",                       // wrong type
        "/items/4?limit=51",                        // maximum
        "/items/4?limit=1&ids=1&ids=x",             // exploded array item type
        "/items/4?limit=1&ids=1&ids=2&ids=3&ids=4", // maxItems over exploded values
        "/items/0?limit=1",                         // path parameter minimum
    ] {
        let r = gw.get(target).await;
        assert_status(&r, 400);
        assert_eq!(
            r.json(),
            json!({"message": "request param doesn't conform to schema"}),
            "{target}"
        );
    }
    let r = get(gw.proxy, "/items/4?limit=1", &[("x-kong-name", "a,b")])
        .await
        .unwrap();
    assert_status(&r, 400);
    assert_eq!(origin.hits(), 1);

    let r = gw.get("/v/items/4").await;
    assert_eq!(
        r.json(),
        json!({"message": "query 'limit' validation failed, [error] required parameter missing"})
    );
    let r = get(gw.proxy, "/v/items/4?limit=1", &[("x-kong-name", "1,b")])
        .await
        .unwrap();
    let m = r.json()["message"].as_str().unwrap().to_string();
    assert!(
        m.starts_with("header 'x-kong-name' validation failed, [error] ") && m.contains("/1"),
        "{m}"
    );
    let r = gw.get("/v/items/abc?limit=1").await;
    let m = r.json()["message"].as_str().unwrap().to_string();
    assert!(
        m.starts_with("path 'id' validation failed, [error] "),
        "{m}"
    );
    assert_eq!(origin.hits(), 1);
}

const PETSTORE: &str = r##"openapi: 3.0.3
info: {title: petstore, version: "1.0"}
paths:
  /pets:
    get:
      parameters:
        - {name: limit, in: query, required: false, schema: {type: integer, minimum: 1, maximum: 100}}
        - {name: x-tenant, in: header, required: true, schema: {type: string, pattern: "^[a-z]+$"}}
      responses:
        "200":
          description: the echo
          content:
            application/json:
              schema: {$ref: "#/components/schemas/Echo"}
    post:
      requestBody:
        required: true
        content:
          application/json:
            schema: {$ref: "#/components/schemas/Pet"}
      responses:
        "200": {description: created}
  /pets/{petId}:
    get:
      parameters:
        - {name: petId, in: path, required: true, schema: {type: integer, minimum: 1}}
      responses:
        "200":
          description: a pet
          content:
            application/json:
              schema: {$ref: "#/components/schemas/Pet"}
components:
  schemas:
    Pet:
      type: object
      required: [name]
      properties:
        name: {type: string, minLength: 1}
        tag: {type: string, nullable: true}
    Echo:
      type: object
      required: [method, uri]
      properties:
        method: {type: string, enum: [GET]}
        uri: {type: string}
"##;

fn oas_plugin() -> String {
    format!(
        "          - name: oas-validation\n            config:\n              api_spec_encoded: false\n              validate_response_body: true\n              api_spec: |\n{}",
        indent(PETSTORE, 16)
    )
}

#[tokio::test]
async fn oas_validation_petstore() {
    let origin = Origin::start("a").await;
    let routes = route("strict", "/pets", &oas_plugin());
    let gw = Gw::start(&one_service(&origin.url(), &routes)).await;
    let tenant = ("x-tenant", "acme");

    // Valid request, and the echo conforms to the Echo response schema.
    let r = get(gw.proxy, "/pets?limit=5", &[tenant]).await.unwrap();
    assert_status(&r, 200);
    assert_eq!(r.json()["uri"], "/pets?limit=5");
    assert_eq!(origin.hits(), 1);

    // Query and header parameters.
    for (target, headers) in [
        ("/pets?limit=500", vec![tenant]),
        ("/pets?limit=x", vec![tenant]),
        ("/pets", vec![]),
        ("/pets", vec![("x-tenant", "ACME")]),
    ] {
        let r = get(gw.proxy, target, &headers).await.unwrap();
        assert_status(&r, 400);
        assert_eq!(
            r.json(),
            json!({"message": "request param doesn't conform to schema"})
        );
    }
    // Path parameter.
    let r = gw.get("/pets/0").await;
    assert_status(&r, 400);
    assert_eq!(
        r.json(),
        json!({"message": "request param doesn't conform to schema"})
    );
    // Unknown path or method.
    let r = gw.get("/pets/1/toys").await;
    assert_status(&r, 400);
    assert_eq!(
        r.json(),
        json!({"message": "request doesn't conform to schema"})
    );
    let r = request(gw.proxy, "DELETE", "/pets", &[], "").await.unwrap();
    assert_status(&r, 400);
    assert_eq!(origin.hits(), 1);

    // Request body, with $ref and nullable.
    let r = request(
        gw.proxy,
        "POST",
        "/pets",
        &[JSON],
        r#"{"name":"rex","tag":null}"#,
    )
    .await
    .unwrap();
    assert_status(&r, 200);
    assert_eq!(r.json()["body"], r#"{"name":"rex","tag":null}"#);
    let r = request(gw.proxy, "POST", "/pets", &[JSON], r#"{"tag":"x"}"#)
        .await
        .unwrap();
    assert_status(&r, 400);
    assert_eq!(
        r.json(),
        json!({"message": "request param doesn't conform to schema"})
    );
    assert_eq!(origin.hits(), 2);

    // Response body: the echo is not a Pet, so the client gets 406 instead.
    let r = gw.get("/pets/3").await;
    assert_status(&r, 406);
    assert_eq!(
        r.json(),
        json!({"message": "response doesn't conform to schema"})
    );
    assert_eq!(origin.hits(), 3);
}

#[tokio::test]
async fn oas_validation_verbose_and_notify_only() {
    let origin = Origin::start("a").await;
    let spec = PETSTORE.replace("/pets", "/n/pets");
    let notify = format!(
        "          - name: oas-validation\n            config:\n              api_spec_encoded: false\n              validate_response_body: true\n              notify_only_request_validation_failure: true\n              notify_only_response_body_validation_failure: true\n              api_spec: |\n{}",
        indent(&spec, 16)
    );
    let verbose_spec = PETSTORE.replace("/pets", "/v/pets");
    let verbose = format!(
        "          - name: oas-validation\n            config:\n              api_spec_encoded: false\n              validate_response_body: true\n              verbose_response: true\n              query_parameter_check: true\n              api_spec: |\n{}",
        indent(&verbose_spec, 16)
    );
    let routes = [route("n", "/n", &notify), route("v", "/v", &verbose)].concat();
    let gw = Gw::start(&one_service(&origin.url(), &routes)).await;

    // Notify only: invalid requests and responses pass, and are logged.
    let r = gw.get("/n/pets?limit=500").await;
    assert_status(&r, 200);
    let r = gw.get("/n/pets/3").await;
    assert_status(&r, 200);
    assert_eq!(origin.hits(), 2);
    let mut logs = String::new();
    for _ in 0..50 {
        logs = gw.logs();
        if logs.contains("response validation failed (notify only)") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        logs.contains("request validation failed (notify only)"),
        "{logs}"
    );
    assert!(logs.contains("query 'limit' validation failed"), "{logs}");
    assert!(
        logs.contains("response validation failed (notify only)"),
        "{logs}"
    );

    // Verbose reasons.
    let r = get(gw.proxy, "/v/pets?limit=1&debug=1", &[("x-tenant", "a")])
        .await
        .unwrap();
    assert_eq!(
        r.json(),
        json!({"message": "validation failed with error: query parameter 'debug' does not exist in specification"})
    );
    let r = gw.get("/v/pets").await;
    assert_eq!(
        r.json(),
        json!({"message": "header 'x-tenant' validation failed with error: 'required parameter value not found in request'"})
    );
    let r = gw.get("/v/nowhere").await;
    assert_eq!(
        r.json(),
        json!({"message": "validation failed, path not found in api specification"})
    );
    let r = gw.get("/v/pets/3").await;
    assert_status(&r, 406);
    let m = r.json()["message"].as_str().unwrap().to_string();
    assert!(
        m.starts_with("response body validation failed with error: "),
        "{m}"
    );
    assert_eq!(origin.hits(), 3);
}

#[tokio::test]
async fn bad_configs_are_refused_with_paths() {
    let dir = temp_dir();
    let file = dir.join("kong.yml");
    let routes = [
        route(
            "a",
            "/a",
            &request_validator(json!({"version": "draft7", "body_schema": r#"{"type": 12}"#})),
        ),
        route(
            "b",
            "/b",
            &request_validator(json!({"body_schema": "{not json", "colour": "red"})),
        ),
        route(
            "c",
            "/c",
            &request_validator(json!({"parameter_schema": [{"name": "q", "in": "query", "schema": r#"{"type":"nope"}"#}]})),
        ),
        route(
            "d",
            "/d",
            "          - name: oas-validation\n            config: {api_spec_encoded: false, api_spec: \"openapi: 3.0.0\\npaths:\\n  /x:\\n    get:\\n      parameters:\\n        - {name: q, in: query, schema: {minimum: abc}}\\n\"}\n",
        ),
        route(
            "e",
            "/e",
            "          - name: oas-validation\n            config: {api_spec: \"not: [an, openapi]\", extra: 1}\n",
        ),
    ]
    .concat();
    write_file(&file, &one_service("http://127.0.0.1:9", &routes));
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
        "services[0].routes[0].plugins[0].config.body_schema: invalid schema",
        "services[0].routes[1].plugins[0].config.body_schema: body_schema is not valid JSON",
        "services[0].routes[1].plugins[0].config.colour: unknown field",
        "services[0].routes[2].plugins[0].config.parameter_schema[0].schema: invalid schema",
        "services[0].routes[3].plugins[0].config.api_spec: invalid schema at '#/paths/~1x/get/parameters/0/schema'",
        "services[0].routes[4].plugins[0].config.api_spec: not an OpenAPI document",
        "services[0].routes[4].plugins[0].config.extra: unknown field",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }

    // The shipped example passes.
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/validation.yml");
    let out = std::process::Command::new(common::bin())
        .args(["config", "validate", example])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn large_bodies_are_validated_off_the_reactor_with_the_same_answers() {
    let origin = Origin::start("a").await;
    let schema = json!({
        "type": "object",
        "properties": {"items": {"type": "array", "items": {"type": "integer"}}},
        "required": ["items"],
    })
    .to_string();
    let routes = route(
        "big",
        "/big",
        &request_validator(
            json!({"version": "draft7", "body_schema": schema, "verbose_response": true}),
        ),
    );
    let gw = Gw::start(&one_service(&origin.url(), &routes)).await;
    // ~200 KiB bodies: above the offload threshold.
    let good = format!("{{\"items\":[{}]}}", vec!["12345"; 35_000].join(","));
    assert!(good.len() > 64 * 1024);
    let r = request(gw.proxy, "POST", "/big", &[JSON], &good)
        .await
        .unwrap();
    assert_status(&r, 200);
    assert_eq!(r.json()["body"].as_str().unwrap().len(), good.len());
    let bad = good.replacen("12345", "\"x\"", 1);
    let r = request(gw.proxy, "POST", "/big", &[JSON], &bad)
        .await
        .unwrap();
    assert_status(&r, 400);
    assert!(r.json()["message"].as_str().is_some_and(|m| !m.is_empty()));
    let broken = format!("{}]", &good[..good.len() - 2]);
    let r = request(gw.proxy, "POST", "/big", &[JSON], &broken)
        .await
        .unwrap();
    assert_status(&r, 400);
    assert_eq!(origin.hits(), 1);
}
