//! The jwt plugin through the real binary, with tokens and keys made in the test, including
//! the classic attacks: alg none, alg confusion, expired / not-yet-valid, unknown key, forged
//! signature.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use common::*;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

struct Keys {
    es_private: String,
    es_public: String,
    ed_private: String,
    ed_public: String,
    rs_private: String,
    rs_public: String,
}

fn keys() -> Keys {
    let es = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let dir = temp_dir();
    let rs_key = dir.join("rs.pem");
    let ok = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&rs_key)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl is needed to generate an RSA test key");
    assert!(ok.success());
    let rs_pub = std::process::Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&rs_key)
        .output()
        .unwrap();
    Keys {
        es_private: es.serialize_pem(),
        es_public: es.public_key_pem(),
        ed_private: ed.serialize_pem(),
        ed_public: ed.public_key_pem(),
        rs_private: std::fs::read_to_string(&rs_key).unwrap(),
        rs_public: String::from_utf8(rs_pub.stdout).unwrap(),
    }
}

fn indent(pem: &str) -> String {
    pem.lines()
        .map(|l| format!("          {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn config(origin: &str, k: &Keys, plugin_config: &str) -> String {
    format!(
        r#"_format_version: "3.0"
consumers:
  - username: hs-user
    jwt_secrets:
      - key: hs-issuer
        secret: a-long-shared-hmac-secret
  - username: es-user
    jwt_secrets:
      - key: es-issuer
        algorithm: ES256
        rsa_public_key: |
{}
  - username: ed-user
    jwt_secrets:
      - key: ed-issuer
        algorithm: EdDSA
        rsa_public_key: |
{}
  - username: rs-user
    jwt_secrets:
      - key: rs-issuer
        algorithm: RS256
        rsa_public_key: |
{}
services:
  - name: svc
    url: {origin}
    routes:
      - name: r
        paths: [/]
        plugins:
          - name: jwt
            config: {plugin_config}
"#,
        indent(&k.es_public),
        indent(&k.ed_public),
        indent(&k.rs_public)
    )
}

fn token(alg: Algorithm, key: &EncodingKey, claims: Value) -> String {
    encode(&Header::new(alg), &claims, key).unwrap()
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

#[tokio::test]
async fn valid_tokens_of_every_family_authenticate() {
    let origin = Origin::start("a").await;
    let k = keys();
    let gw = Gw::start(&config(&origin.url(), &k, "{claims_to_verify: [exp]}")).await;
    let exp = now() + 600;
    let cases = [
        (
            token(
                Algorithm::HS256,
                &EncodingKey::from_secret(b"a-long-shared-hmac-secret"),
                json!({"iss": "hs-issuer", "exp": exp}),
            ),
            "hs-user",
            "hs-issuer",
        ),
        (
            token(
                Algorithm::ES256,
                &EncodingKey::from_ec_pem(k.es_private.as_bytes()).unwrap(),
                json!({"iss": "es-issuer", "exp": exp}),
            ),
            "es-user",
            "es-issuer",
        ),
        (
            token(
                Algorithm::EdDSA,
                &EncodingKey::from_ed_pem(k.ed_private.as_bytes()).unwrap(),
                json!({"iss": "ed-issuer", "exp": exp}),
            ),
            "ed-user",
            "ed-issuer",
        ),
        (
            token(
                Algorithm::RS256,
                &EncodingKey::from_rsa_pem(k.rs_private.as_bytes()).unwrap(),
                json!({"iss": "rs-issuer", "exp": exp}),
            ),
            "rs-user",
            "rs-issuer",
        ),
    ];
    for (t, user, cred) in &cases {
        let r = get(gw.proxy, "/", &[("authorization", &bearer(t))])
            .await
            .unwrap();
        assert_status(&r, 200);
        assert_eq!(r.upstream_header("x-consumer-username").unwrap(), *user);
        assert_eq!(r.upstream_header("x-credential-identifier").unwrap(), *cred);
    }
    // Query parameter `jwt` works too.
    let r = gw.get(&format!("/?jwt={}", cases[0].0)).await;
    assert_status(&r, 200);
    assert!(
        !gw.logs().contains(&cases[0].0),
        "tokens must not be logged"
    );
}

#[tokio::test]
async fn missing_multiple_and_malformed_tokens() {
    let origin = Origin::start("a").await;
    let k = keys();
    let gw = Gw::start(&config(&origin.url(), &k, "{}")).await;
    let r = gw.get("/").await;
    assert_status(&r, 401);
    // (Kong's jwt answers with kong.response.exit: no request id in the body.)
    assert_eq!(r.json(), json!({"message": "Unauthorized"}));
    assert_eq!(r.header("www-authenticate").unwrap(), "Bearer");
    let hs = EncodingKey::from_secret(b"a-long-shared-hmac-secret");
    let t1 = token(Algorithm::HS256, &hs, json!({"iss": "hs-issuer"}));
    let t2 = token(Algorithm::HS256, &hs, json!({"iss": "hs-issuer", "x": 1}));
    let r = get(
        gw.proxy,
        &format!("/?jwt={t2}"),
        &[("authorization", &bearer(&t1))],
    )
    .await
    .unwrap();
    assert_eq!(r.json()["message"], "Multiple tokens provided");
    let r = get(gw.proxy, "/", &[("authorization", "Bearer not-a-jwt")])
        .await
        .unwrap();
    assert_eq!(r.json()["message"], "Unrecognizable token");
    assert_eq!(
        r.header("www-authenticate").unwrap(),
        "Bearer error=\"invalid_token\""
    );
    let r = get(
        gw.proxy,
        "/",
        &[("authorization", "Bearer e30.bm90LWpzb24.c2ln")],
    )
    .await
    .unwrap();
    assert_eq!(r.json()["message"], "Bad token; invalid JSON");
    let no_iss = token(Algorithm::HS256, &hs, json!({"sub": "x"}));
    let r = get(gw.proxy, "/", &[("authorization", &bearer(&no_iss))])
        .await
        .unwrap();
    assert_eq!(r.json()["message"], "No mandatory 'iss' in claims");
}

#[tokio::test]
async fn attacks_are_refused() {
    let origin = Origin::start("a").await;
    let k = keys();
    let gw = Gw::start(&config(&origin.url(), &k, "{}")).await;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let expect = |r: &Reply, msg: &str| {
        assert_eq!(r.status, 401, "{}", r.text());
        assert_eq!(r.json()["message"], msg);
    };

    // alg none, for an HS and an RS credential.
    for iss in ["hs-issuer", "rs-issuer"] {
        let t = format!(
            "{}.{}.",
            b64.encode(r#"{"alg":"none","typ":"JWT"}"#),
            b64.encode(json!({"iss": iss}).to_string())
        );
        expect(
            &get(gw.proxy, "/", &[("authorization", &bearer(&t))])
                .await
                .unwrap(),
            "Invalid algorithm",
        );
    }
    // Algorithm confusion: HS256 signed with the RSA public key as the HMAC secret.
    let t = token(
        Algorithm::HS256,
        &EncodingKey::from_secret(k.rs_public.as_bytes()),
        json!({"iss": "rs-issuer"}),
    );
    expect(
        &get(gw.proxy, "/", &[("authorization", &bearer(&t))])
            .await
            .unwrap(),
        "Invalid algorithm",
    );
    // Signed by a key the gateway does not know.
    let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let t = token(
        Algorithm::ES256,
        &EncodingKey::from_ec_pem(other.serialize_pem().as_bytes()).unwrap(),
        json!({"iss": "es-issuer"}),
    );
    expect(
        &get(gw.proxy, "/", &[("authorization", &bearer(&t))])
            .await
            .unwrap(),
        "Invalid signature",
    );
    let t = token(
        Algorithm::HS256,
        &EncodingKey::from_secret(b"guessed"),
        json!({"iss": "hs-issuer"}),
    );
    expect(
        &get(gw.proxy, "/", &[("authorization", &bearer(&t))])
            .await
            .unwrap(),
        "Invalid signature",
    );
    // Unknown issuer.
    let t = token(
        Algorithm::HS256,
        &EncodingKey::from_secret(b"x"),
        json!({"iss": "nobody"}),
    );
    expect(
        &get(gw.proxy, "/", &[("authorization", &bearer(&t))])
            .await
            .unwrap(),
        "No credentials found for given 'iss'",
    );
    // Expired and not-yet-valid, even though claims_to_verify is empty (safer than Kong).
    let hs = EncodingKey::from_secret(b"a-long-shared-hmac-secret");
    let t = token(
        Algorithm::HS256,
        &hs,
        json!({"iss": "hs-issuer", "exp": now() - 10}),
    );
    let r = get(gw.proxy, "/", &[("authorization", &bearer(&t))])
        .await
        .unwrap();
    assert_status(&r, 401);
    assert_eq!(r.json(), json!({"exp": "token expired"}));
    let t = token(
        Algorithm::HS256,
        &hs,
        json!({"iss": "hs-issuer", "nbf": now() + 600}),
    );
    let r = get(gw.proxy, "/", &[("authorization", &bearer(&t))])
        .await
        .unwrap();
    assert_eq!(r.json(), json!({"nbf": "token not valid yet"}));
    assert_eq!(origin.hits(), 0, "no refused token reached the upstream");
}

#[tokio::test]
async fn claims_to_verify_and_maximum_expiration() {
    let origin = Origin::start("a").await;
    let k = keys();
    let gw = Gw::start(&config(
        &origin.url(),
        &k,
        "{claims_to_verify: [exp], maximum_expiration: 60}",
    ))
    .await;
    let hs = EncodingKey::from_secret(b"a-long-shared-hmac-secret");
    let t = token(Algorithm::HS256, &hs, json!({"iss": "hs-issuer"}));
    let r = get(gw.proxy, "/", &[("authorization", &bearer(&t))])
        .await
        .unwrap();
    assert_eq!(r.json(), json!({"exp": "must be a number"}));
    let t = token(
        Algorithm::HS256,
        &hs,
        json!({"iss": "hs-issuer", "exp": now() + 3600}),
    );
    let r = get(gw.proxy, "/", &[("authorization", &bearer(&t))])
        .await
        .unwrap();
    assert_eq!(
        r.json(),
        json!({"exp": "exceeds maximum allowed expiration"})
    );
    let t = token(
        Algorithm::HS256,
        &hs,
        json!({"iss": "hs-issuer", "exp": now() + 30}),
    );
    assert_status(
        &get(gw.proxy, "/", &[("authorization", &bearer(&t))])
            .await
            .unwrap(),
        200,
    );
}

#[tokio::test]
async fn maximum_expiration_without_claims_to_verify_still_applies() {
    // Kong's schema accepts maximum_expiration when claims_to_verify is not given, and its
    // handler still refuses a token without exp or with one too far ahead.
    let origin = Origin::start("a").await;
    let k = keys();
    let gw = Gw::start(&config(&origin.url(), &k, "{maximum_expiration: 60}")).await;
    let hs = EncodingKey::from_secret(b"a-long-shared-hmac-secret");
    for claims in [
        json!({"iss": "hs-issuer"}),
        json!({"iss": "hs-issuer", "exp": now() + 3600}),
    ] {
        let t = token(Algorithm::HS256, &hs, claims);
        let r = get(gw.proxy, "/", &[("authorization", &bearer(&t))])
            .await
            .unwrap();
        assert_status(&r, 401);
        assert_eq!(
            r.json(),
            json!({"exp": "exceeds maximum allowed expiration"})
        );
    }
    let t = token(
        Algorithm::HS256,
        &hs,
        json!({"iss": "hs-issuer", "exp": now() + 30}),
    );
    let r = get(gw.proxy, "/", &[("authorization", &bearer(&t))])
        .await
        .unwrap();
    assert_status(&r, 200);
    // A given list without exp is refused, as in Kong's schema.
    let dir = temp_dir();
    let bad = dir.join("bad.yml");
    write_file(
        &bad,
        &config(
            &origin.url(),
            &k,
            "{maximum_expiration: 60, claims_to_verify: [nbf]}",
        ),
    );
    let out = std::process::Command::new(common::bin())
        .args(["config", "validate"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("maximum_expiration"));
}

#[tokio::test]
async fn credentials_kong_completes_are_accepted_but_verify_nothing_forged() {
    // Kong fills a missing key or secret with a random value and accepts an ES256 credential
    // without its public key: such configs load. No token verifies against what no client
    // knows, and the other credentials keep working.
    let origin = Origin::start("a").await;
    let gw = Gw::start(&format!(
        r#"_format_version: "3.0"
consumers:
  - username: no-key
    jwt_secrets:
      - algorithm: HS256
        secret: known-secret-without-key
  - username: no-secret
    jwt_secrets:
      - key: no-secret-issuer
  - username: no-public-key
    jwt_secrets:
      - key: es-without-key
        algorithm: ES256
  - username: ok
    jwt_secrets:
      - key: ok-issuer
        secret: ok-secret
services:
  - name: svc
    url: {}
    routes:
      - name: r
        paths: [/]
        plugins:
          - name: jwt
"#,
        origin.url()
    ))
    .await;
    let ok = token(
        Algorithm::HS256,
        &EncodingKey::from_secret(b"ok-secret"),
        json!({"iss": "ok-issuer"}),
    );
    let r = get(gw.proxy, "/", &[("authorization", &bearer(&ok))])
        .await
        .unwrap();
    assert_status(&r, 200);
    // Guessing the generated secret as empty, or the issuer's name, fails.
    for secret in [&b""[..], b"no-secret-issuer"] {
        let t = token(
            Algorithm::HS256,
            &EncodingKey::from_secret(secret),
            json!({"iss": "no-secret-issuer"}),
        );
        let r = get(gw.proxy, "/", &[("authorization", &bearer(&t))])
            .await
            .unwrap();
        assert_status(&r, 401);
    }
    let r = get(
        gw.proxy,
        "/",
        &[(
            "authorization",
            &bearer(&token(
                Algorithm::HS256,
                &EncodingKey::from_secret(b"x"),
                json!({"iss": "es-without-key"}),
            )),
        )],
    )
    .await
    .unwrap();
    assert_status(&r, 401);
    assert_eq!(origin.hits(), 1);
}

#[tokio::test]
async fn empty_secrets_and_colliding_keys_are_refused() {
    let origin = Origin::start("a").await;
    let dir = temp_dir();
    for (name, consumers, want) in [
        (
            "empty",
            "  - username: a\n    jwt_secrets:\n      - key: a-issuer\n        secret: \"\"\n",
            "secret must not be empty",
        ),
        (
            "twice-keyless",
            "  - username: a\n    jwt_secrets:\n      - secret: one-secret\n      - secret: two-secret\n",
            "same key",
        ),
    ] {
        let file = dir.join(format!("{name}.yml"));
        write_file(
            &file,
            &format!(
                "_format_version: \"3.0\"\nconsumers:\n{consumers}services:\n  - name: s\n    url: {}\n    routes:\n      - name: r\n        paths: [/]\n        plugins:\n          - name: jwt\n",
                origin.url()
            ),
        );
        let out = std::process::Command::new(common::bin())
            .args(["config", "validate"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{name}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains(want), "{name}: {stdout}");
    }
}
