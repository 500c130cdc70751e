//! The openid-connect plugin through the real binary against a real OpenID provider:
//! `oidc-provider` from npm, run by the Node harness in `tests/oidc-provider/` on 127.0.0.1.
//! Nothing is mocked: discovery, JWKS, token, introspection, authorization, login pages and
//! end_session are the provider's own.
//!
//! Needs `node` and `tests/oidc-provider/node_modules` (`cd tests/oidc-provider && npm ci`);
//! without them these tests fail with a message saying so, they are never skipped.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

fn harness_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/oidc-provider")
}

/// An RSA private key (PEM) made with openssl, as the jwt tests do.
fn rsa_key(dir: &std::path::Path, name: &str) -> String {
    let path = dir.join(name);
    let ok = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&path)
        .stderr(Stdio::null())
        .status()
        .expect("openssl is needed to generate the provider's RSA key");
    assert!(ok.success());
    std::fs::read_to_string(&path).unwrap()
}

/// A running oidc-provider.
struct Op {
    child: Child,
    port: u16,
    /// The provider's signing key (the test can sign tokens "as the provider").
    key_pem: String,
    stderr: PathBuf,
}

impl Op {
    fn start(port: u16, redirect_uris: &[String], logout_uris: &[String], access_ttl: u64) -> Op {
        let dir = harness_dir();
        match Command::new("node").arg("--version").output() {
            Ok(o) if o.status.success() => {}
            _ => panic!(
                "the openid-connect tests need Node.js: `node` was not found on PATH. \
                 Install Node.js >= 20.19 and run `cd tests/oidc-provider && npm ci`."
            ),
        }
        assert!(
            dir.join("node_modules/oidc-provider/package.json").exists(),
            "the openid-connect tests need the provider harness installed: \
             run `cd tests/oidc-provider && npm ci --no-audit --no-fund` (missing {})",
            dir.join("node_modules/oidc-provider").display()
        );
        let tmp = temp_dir();
        let key_pem = rsa_key(&tmp, "op.pem");
        let stderr = tmp.join("op.stderr");
        let mut cmd = Command::new("node");
        cmd.current_dir(&dir)
            .arg("server.js")
            .args(["--port", &port.to_string()])
            .arg("--key")
            .arg(tmp.join("op.pem"))
            .args(["--access-ttl", &access_ttl.to_string()]);
        for u in redirect_uris {
            cmd.args(["--redirect-uri", u]);
        }
        for u in logout_uris {
            cmd.args(["--post-logout-redirect-uri", u]);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("spawn node tests/oidc-provider/server.js");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.starts_with("READY ") {
                    let _ = tx.send(line);
                }
            }
        });
        if rx.recv_timeout(Duration::from_secs(30)).is_err() {
            let _ = child.kill();
            panic!(
                "oidc-provider did not print READY; stderr:\n{}",
                std::fs::read_to_string(&stderr).unwrap_or_default()
            );
        }
        Op {
            child,
            port,
            key_pem,
            stderr,
        }
    }

    fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Calls the provider's token endpoint directly (as a client would before calling the API).
    async fn token(&self, client: (&str, &str), form: &[(&str, &str)]) -> Value {
        let r = reqwest::Client::new()
            .post(format!("{}/token", self.issuer()))
            .basic_auth(client.0, Some(client.1))
            .form(form)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        assert!(status.is_success(), "token endpoint: {status} {body}");
        body
    }

    async fn password_token(&self, user: &str, pass: &str, scope: &str) -> String {
        self.token(
            ("gateway", "gateway-secret"),
            &[
                ("grant_type", "password"),
                ("username", user),
                ("password", pass),
                ("scope", scope),
            ],
        )
        .await["access_token"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

impl Drop for Op {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = &self.stderr;
    }
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

/// Signs `claims` with `pem` as RS256 with `kid`.
fn sign(pem: &str, kid: &str, claims: Value) -> String {
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some(kid.to_string());
    encode(
        &h,
        &claims,
        &EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
    )
    .unwrap()
}

fn assert_no_secrets(gw: &Gw, secrets: &[&str]) {
    let logs = gw.logs();
    for s in secrets {
        assert!(!s.is_empty());
        assert!(
            !logs.contains(s),
            "a token or secret appears in the gateway's logs"
        );
    }
}

const CONSUMERS: &str = r#"consumers:
  - username: alice
    custom_id: alice-cid
  - username: gateway-client
    custom_id: gateway
"#;

fn bearer_config(origin: &str, issuer: &str) -> String {
    format!(
        r#"_format_version: "3.0"
{CONSUMERS}services:
  - name: svc
    url: {origin}
    routes:
      - name: bearer
        paths: [/bearer]
        plugins:
          - name: openid-connect
            config:
              issuer: {issuer}
              auth_methods: [bearer]
              scopes_required: ["api:read"]
              consumer_claim: [sub]
              consumer_by: [username]
              upstream_headers_claims: [scope, aud]
              upstream_headers_names: [x-token-scope, x-token-aud]
      - name: write
        paths: [/write]
        plugins:
          - name: openid-connect
            config:
              issuer: {issuer}
              auth_methods: [bearer]
              scopes_required: ["api:read api:write"]
      - name: admins
        paths: [/admins]
        plugins:
          - name: openid-connect
            config:
              issuer: {issuer}
              auth_methods: [bearer]
              groups_required: [admins]
              roles_required: [editor]
              audience_required: ["urn:api"]
      - name: other-audience
        paths: [/other-audience]
        plugins:
          - name: openid-connect
            config:
              issuer: {issuer}
              auth_methods: [bearer]
              audience_required: ["urn:something-else"]
      - name: anon
        paths: [/anon]
        plugins:
          - name: openid-connect
            config:
              issuer: {issuer}
              auth_methods: [bearer]
              anonymous: gateway-client
              consumer_claim: [sub]
      - name: custom-id
        paths: [/custom-id]
        plugins:
          - name: openid-connect
            config:
              issuer: {issuer}
              auth_methods: [bearer]
              consumer_claim: [client_id]
              consumer_by: [custom_id]
"#
    )
}

#[tokio::test]
async fn bearer_tokens_are_verified_against_the_providers_jwks() {
    let origin = Origin::start("api").await;
    let port = free_port();
    let op = Op::start(port, &[], &[], 300);
    let gw = Gw::start(&bearer_config(&origin.url(), &op.issuer())).await;

    // Discovery and JWKS are fetched on the first request; a real provider token passes.
    let alice = op
        .password_token("alice", "alice-password", "api:read api:write")
        .await;
    let r = get(gw.proxy, "/bearer", &[("authorization", &bearer(&alice))])
        .await
        .unwrap();
    assert_status(&r, 200);
    assert_eq!(r.upstream_header("authorization").unwrap(), bearer(&alice));
    assert_eq!(r.upstream_header("x-consumer-username").unwrap(), "alice");
    assert_eq!(
        r.upstream_header("x-credential-identifier").unwrap(),
        "alice"
    );
    assert_eq!(
        r.upstream_header("x-token-scope").unwrap(),
        "api:read api:write"
    );
    assert_eq!(r.upstream_header("x-token-aud").unwrap(), "urn:api");
    // A client cannot forge a claim header.
    let r = get(
        gw.proxy,
        "/bearer",
        &[
            ("authorization", &bearer(&alice)),
            ("x-token-aud", "forged"),
            ("x-consumer-username", "forged"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(r.upstream_header("x-token-aud").unwrap(), "urn:api");
    assert_eq!(r.upstream_header("x-consumer-username").unwrap(), "alice");

    // No token: 401 with a challenge.
    let r = gw.get("/bearer").await;
    assert_status(&r, 401);
    assert_error_body(&r, "Unauthorized");
    assert!(r.header("www-authenticate").unwrap().starts_with("Bearer"));

    // Tampered payload (signature no longer matches).
    let parts: Vec<&str> = alice.split('.').collect();
    let mut claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(parts[1])
            .unwrap(),
    )
    .unwrap();
    claims["sub"] = json!("gateway-client");
    let tampered = format!("{}.{}.{}", parts[0], b64(&claims.to_string()), parts[2]);
    // Flipped signature byte.
    let mut sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(parts[2])
        .unwrap();
    sig[10] ^= 0x55;
    let bad_sig = format!(
        "{}.{}.{}",
        parts[0],
        parts[1],
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sig)
    );
    let exp = now() + 600;
    let good_claims = json!({"iss": op.issuer(), "sub": "alice", "aud": "urn:api", "scope": "api:read", "exp": exp, "iat": now()});
    // Signed with the provider's own key: accepted (proves the test key is the provider's).
    let own = sign(&op.key_pem, "test-key-1", good_claims.clone());
    // Unknown kid, signed by a key the provider never published.
    let rogue_pem = rsa_key(&temp_dir(), "rogue.pem");
    let unknown_kid = sign(&rogue_pem, "rogue-key", good_claims.clone());
    // A known kid but a rogue key.
    let wrong_key = sign(&rogue_pem, "test-key-1", good_claims.clone());
    // Expired, signed by the provider's key.
    let mut c = good_claims.clone();
    c["exp"] = json!(now() - 120);
    let expired = sign(&op.key_pem, "test-key-1", c);
    // Another issuer, signed by the provider's key.
    let mut c = good_claims.clone();
    c["iss"] = json!("http://127.0.0.1:1");
    let wrong_iss = sign(&op.key_pem, "test-key-1", c);
    // No exp at all.
    let mut c = good_claims.clone();
    c.as_object_mut().unwrap().remove("exp");
    let no_exp = sign(&op.key_pem, "test-key-1", c);
    // alg none, and HS256 keyed with the public modulus-free "secret" trick.
    let alg_none = format!(
        "{}.{}.",
        b64(r#"{"alg":"none","typ":"JWT","kid":"test-key-1"}"#),
        b64(&good_claims.to_string())
    );
    let mut hs_header = Header::new(Algorithm::HS256);
    hs_header.kid = Some("test-key-1".into());
    let hs = encode(
        &hs_header,
        &good_claims,
        &EncodingKey::from_secret(b"test-key-1"),
    )
    .unwrap();

    let r = get(gw.proxy, "/bearer", &[("authorization", &bearer(&own))])
        .await
        .unwrap();
    assert_status(&r, 200);
    for (what, t) in [
        ("tampered payload", &tampered),
        ("bad signature", &bad_sig),
        ("unknown kid", &unknown_kid),
        ("rogue key with a known kid", &wrong_key),
        ("expired", &expired),
        ("wrong issuer", &wrong_iss),
        ("no exp", &no_exp),
        ("alg none", &alg_none),
        ("HS256", &hs),
        ("garbage", &"not.a.jwt".to_string()),
    ] {
        let r = get(gw.proxy, "/bearer", &[("authorization", &bearer(t))])
            .await
            .unwrap();
        assert_eq!(r.status, 401, "{what}: {}", r.text());
        assert_eq!(r.json()["message"], "Unauthorized", "{what}");
        assert_error_body(&r, "Unauthorized");
    }

    // Scopes: a reader token lacks api:write.
    let reader = op
        .token(
            ("reader", "reader-secret"),
            &[("grant_type", "client_credentials"), ("scope", "api:read")],
        )
        .await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let r = get(gw.proxy, "/write", &[("authorization", &bearer(&reader))])
        .await
        .unwrap();
    assert_status(&r, 403);
    assert_error_body(&r, "Forbidden");
    let r = get(gw.proxy, "/write", &[("authorization", &bearer(&alice))])
        .await
        .unwrap();
    assert_status(&r, 200);

    // Groups, roles and audience: alice is an admin and editor, bob is neither.
    let bob = op.password_token("bob", "bob-password", "api:read").await;
    let r = get(gw.proxy, "/admins", &[("authorization", &bearer(&alice))])
        .await
        .unwrap();
    assert_status(&r, 200);
    let r = get(gw.proxy, "/admins", &[("authorization", &bearer(&bob))])
        .await
        .unwrap();
    assert_status(&r, 403);
    let r = get(
        gw.proxy,
        "/other-audience",
        &[("authorization", &bearer(&alice))],
    )
    .await
    .unwrap();
    assert_status(&r, 403);

    // consumer_claim maps to nobody: 403 (bob is not a consumer).
    let r = get(gw.proxy, "/bearer", &[("authorization", &bearer(&bob))])
        .await
        .unwrap();
    assert_status(&r, 403);
    // consumer_by custom_id, from the client_credentials token's client_id claim.
    let cc = op
        .token(
            ("gateway", "gateway-secret"),
            &[("grant_type", "client_credentials"), ("scope", "api:read")],
        )
        .await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let r = get(gw.proxy, "/custom-id", &[("authorization", &bearer(&cc))])
        .await
        .unwrap();
    assert_status(&r, 200);
    assert_eq!(
        r.upstream_header("x-consumer-username").unwrap(),
        "gateway-client"
    );
    assert_eq!(
        r.upstream_header("x-consumer-custom-id").unwrap(),
        "gateway"
    );

    // anonymous: a bad or missing token continues as the anonymous consumer; a good one maps.
    for headers in [vec![], vec![("authorization", bearer(&expired))]] {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = get(gw.proxy, "/anon", &h).await.unwrap();
        assert_status(&r, 200);
        assert_eq!(r.upstream_header("x-anonymous-consumer").unwrap(), "true");
        assert_eq!(
            r.upstream_header("x-consumer-username").unwrap(),
            "gateway-client"
        );
    }
    let r = get(gw.proxy, "/anon", &[("authorization", &bearer(&alice))])
        .await
        .unwrap();
    assert_status(&r, 200);
    assert_eq!(r.upstream_header("x-consumer-username").unwrap(), "alice");
    assert!(r.upstream_header("x-anonymous-consumer").is_none());

    assert_no_secrets(&gw, &[&alice, &bob, &reader, &cc, &own, &expired]);
}

#[tokio::test]
async fn unreachable_provider_answers_503_without_details() {
    let origin = Origin::start("api").await;
    // Nothing listens on this port.
    let issuer = format!("http://127.0.0.1:{}", free_port());
    let gw = Gw::start(&bearer_config(&origin.url(), &issuer)).await;
    let t = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsifQ.eyJpc3MiOiJ4In0.c2ln";
    let r = get(gw.proxy, "/bearer", &[("authorization", &bearer(t))])
        .await
        .unwrap();
    assert_status(&r, 503);
    assert_error_body(&r, "An unexpected error occurred");
    assert!(!r.text().contains("127.0.0.1"));
    assert_eq!(origin.hits(), 0);
}

#[tokio::test]
async fn introspection_and_grants() {
    let origin = Origin::start("api").await;
    let port = free_port();
    let op = Op::start(port, &[], &[], 300);
    let issuer = op.issuer();
    let config = format!(
        r#"_format_version: "3.0"
{CONSUMERS}services:
  - name: svc
    url: {origin}
    routes:
      - name: introspect
        paths: [/introspect]
        plugins:
          - name: openid-connect
            config:
              issuer: {issuer}
              client_id: [gateway]
              client_secret: [gateway-secret]
              auth_methods: [introspection]
              scopes_required: ["api:read"]
      - name: introspect-nocache
        paths: [/nocache]
        plugins:
          - name: openid-connect
            config:
              issuer: {issuer}
              client_id: [gateway]
              client_secret: [gateway-secret]
              auth_methods: [introspection]
              cache_introspection: false
      - name: cc
        paths: [/cc]
        plugins:
          - name: openid-connect
            config:
              issuer: {issuer}
              auth_methods: [client_credentials]
              scopes: ["api:read"]
              consumer_claim: [client_id]
              consumer_by: [custom_id]
      - name: password
        paths: [/password]
        plugins:
          - name: openid-connect
            config:
              issuer: {issuer}
              client_id: [gateway]
              client_secret: [gateway-secret]
              auth_methods: [password]
              scopes: ["api:read"]
              consumer_claim: [sub]
              consumer_by: [username]
              groups_required: [staff]
"#,
        origin = origin.url()
    );
    let gw = Gw::start(&config).await;

    // An opaque token (resource urn:opaque): only introspection can tell if it is active.
    let opaque = op
        .token(
            ("gateway", "gateway-secret"),
            &[
                ("grant_type", "client_credentials"),
                ("scope", "api:read"),
                ("resource", "urn:opaque"),
            ],
        )
        .await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!opaque.contains('.'), "expected an opaque token");
    for path in ["/introspect", "/nocache"] {
        let r = get(gw.proxy, path, &[("authorization", &bearer(&opaque))])
            .await
            .unwrap();
        assert_status(&r, 200);
        assert_eq!(r.upstream_header("authorization").unwrap(), bearer(&opaque));
    }
    // Inactive: a token the provider never issued, and a revoked one.
    let r = get(
        gw.proxy,
        "/introspect",
        &[("authorization", "Bearer never-issued-token-value")],
    )
    .await
    .unwrap();
    assert_status(&r, 401);
    let revoked = reqwest::Client::new()
        .post(format!("{issuer}/token/revocation"))
        .basic_auth("gateway", Some("gateway-secret"))
        .form(&[("token", opaque.as_str())])
        .send()
        .await
        .unwrap();
    assert!(revoked.status().is_success());
    let r = get(gw.proxy, "/nocache", &[("authorization", &bearer(&opaque))])
        .await
        .unwrap();
    assert_status(&r, 401);

    // client_credentials: the request's Basic credentials are the client's.
    let basic = |u: &str, p: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
        )
    };
    let r = get(
        gw.proxy,
        "/cc",
        &[("authorization", &basic("gateway", "gateway-secret"))],
    )
    .await
    .unwrap();
    assert_status(&r, 200);
    let upstream_auth = r.upstream_header("authorization").unwrap();
    assert!(upstream_auth.starts_with("Bearer ey"), "{upstream_auth}");
    assert_eq!(
        r.upstream_header("x-consumer-username").unwrap(),
        "gateway-client"
    );
    // Cached: the same credentials get the same token.
    let again = get(
        gw.proxy,
        "/cc",
        &[("authorization", &basic("gateway", "gateway-secret"))],
    )
    .await
    .unwrap();
    assert_eq!(
        again.upstream_header("authorization").unwrap(),
        upstream_auth
    );
    let r = get(
        gw.proxy,
        "/cc",
        &[("authorization", &basic("gateway", "wrong-secret"))],
    )
    .await
    .unwrap();
    assert_status(&r, 401);
    assert_error_body(&r, "Unauthorized");

    // password: the user's credentials, the gateway's client.
    let r = get(
        gw.proxy,
        "/password",
        &[("authorization", &basic("alice", "alice-password"))],
    )
    .await
    .unwrap();
    assert_status(&r, 200);
    assert_eq!(r.upstream_header("x-consumer-username").unwrap(), "alice");
    let pw_token = r.upstream_header("authorization").unwrap();
    assert!(pw_token.starts_with("Bearer ey"));
    let r = get(
        gw.proxy,
        "/password",
        &[("authorization", &basic("alice", "wrong"))],
    )
    .await
    .unwrap();
    assert_status(&r, 401);
    // bob is staff but not a consumer: 403.
    let r = get(
        gw.proxy,
        "/password",
        &[("authorization", &basic("bob", "bob-password"))],
    )
    .await
    .unwrap();
    assert_status(&r, 403);

    assert_no_secrets(
        &gw,
        &[
            &opaque,
            upstream_auth.trim_start_matches("Bearer "),
            pw_token.trim_start_matches("Bearer "),
            "gateway-secret",
            "alice-password",
        ],
    );
}

/// Follows redirects by hand and submits the provider's login and consent forms, until a
/// redirect points back at the gateway. Returns that URL.
async fn login_at_provider(client: &reqwest::Client, start: &str, gw_origin: &str) -> String {
    let mut url = reqwest::Url::parse(start).unwrap();
    let mut form: Option<Vec<(String, String)>> = None;
    for _ in 0..20 {
        let resp = match form.take() {
            Some(f) => client.post(url.clone()).form(&f).send().await.unwrap(),
            None => client.get(url.clone()).send().await.unwrap(),
        };
        let status = resp.status();
        if status.is_redirection() {
            let loc = resp.headers()["location"].to_str().unwrap().to_string();
            let next = url.join(&loc).unwrap();
            if next.as_str().starts_with(gw_origin) {
                return next.to_string();
            }
            url = next;
            continue;
        }
        let html = resp.text().await.unwrap();
        assert_eq!(status, 200, "provider page: {html}");
        let action = html
            .split("action=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap_or_else(|| panic!("no form in provider page: {html}"));
        let mut fields = Vec::new();
        for input in html.split("<input").skip(1) {
            let attr = |name: &str| {
                input
                    .split(&format!("{name}=\""))
                    .nth(1)
                    .and_then(|s| s.split('"').next())
                    .map(str::to_string)
            };
            let Some(name) = attr("name") else { continue };
            let value = match name.as_str() {
                "login" => "alice".to_string(),
                "password" => "alice-password".to_string(),
                _ => attr("value").unwrap_or_default(),
            };
            fields.push((name, value));
        }
        url = url.join(action).unwrap();
        form = Some(fields);
    }
    panic!("the provider did not redirect back to the gateway");
}

fn set_cookie_value(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|v| v.starts_with(&format!("{name}=")))
}

#[tokio::test]
async fn authorization_code_flow_with_session_refresh_and_logout() {
    let origin = Origin::start("app").await;
    let port = free_port();
    let issuer = format!("http://127.0.0.1:{port}");
    let config = format!(
        r#"_format_version: "3.0"
{CONSUMERS}services:
  - name: svc
    url: {origin}
    routes:
      - name: app
        paths: [/app]
        plugins:
          - name: openid-connect
            config:
              issuer: {issuer}
              client_id: [gateway]
              client_secret: [gateway-secret]
              auth_methods: [authorization_code, session]
              scopes: [openid, profile, "api:read"]
              session_secret: "a-test-session-secret-of-32-chars-or-more"
              logout_uri_suffix: /logout
              logout_methods: [POST]
              logout_redirect_uri: [http://localhost/bye]
              consumer_claim: [sub]
              consumer_by: [username]
              upstream_id_token_header: x-id-token
"#,
        origin = origin.url()
    );
    let gw = Gw::start(&config).await;
    // The browser reaches the gateway as `localhost` and the provider as 127.0.0.1, so the
    // cookie jar keeps their cookies apart, as a browser would for two sites.
    let gw_origin = format!("http://localhost:{}", gw.proxy.port());
    let page = format!("{gw_origin}/app/page?x=1");
    // Short access tokens so the session must refresh them.
    let op = Op::start(
        port,
        &[format!("{gw_origin}/app/page")],
        &["http://localhost/bye".to_string()],
        4,
    );
    let jar = Arc::new(reqwest::cookie::Jar::default());
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .cookie_provider(jar.clone())
        .build()
        .unwrap();

    // 1. Not logged in: redirected to the provider with state, nonce and PKCE S256.
    let r = browser.get(&page).send().await.unwrap();
    assert_eq!(r.status(), 302);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    assert!(
        location.starts_with(&format!("{issuer}/auth?")),
        "{location}"
    );
    let auth_url = reqwest::Url::parse(&location).unwrap();
    let q: std::collections::HashMap<_, _> = auth_url.query_pairs().into_owned().collect();
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["client_id"], "gateway");
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["redirect_uri"], format!("{gw_origin}/app/page"));
    assert!(q["state"].len() >= 32 && q["nonce"].len() >= 32);
    assert!(q["code_challenge"].len() == 43);
    let auth_cookie = set_cookie_value(&r, "authorization").unwrap();
    assert!(auth_cookie.contains("HttpOnly") && auth_cookie.contains("SameSite=Lax"));

    // 2. Log in at the provider (its own login and consent pages).
    let callback = login_at_provider(&browser, &location, &gw_origin).await;
    assert!(callback.contains("code="), "{callback}");
    let cb = reqwest::Url::parse(&callback).unwrap();
    let code: String = cb
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();

    // A forged state is refused.
    let forged = callback.replace(&q["state"], "forged-state");
    let r = browser.get(&forged).send().await.unwrap();
    assert_eq!(r.status(), 401);

    // The forged attempt spent the authorization cookie, so log in again.
    let r = browser.get(&page).send().await.unwrap();
    assert_eq!(r.status(), 302);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let callback = login_at_provider(&browser, &location, &gw_origin).await;

    // 3. The callback: session cookie set, back to the original page.
    let r = browser.get(&callback).send().await.unwrap();
    assert_eq!(r.status(), 302, "{}", r.text().await.unwrap());
    assert_eq!(r.headers()["location"], "/app/page?x=1");
    let session = set_cookie_value(&r, "session").unwrap();
    assert!(session.contains("HttpOnly"), "{session}");
    assert!(session.contains("SameSite=Lax"), "{session}");
    let session_value = session
        .split(';')
        .next()
        .unwrap()
        .trim_start_matches("session=")
        .to_string();

    // 4. The session is enough.
    let r = browser.get(&page).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let echo: Value = r.json().await.unwrap();
    let first_token = echo["headers"]["authorization"][0]
        .as_str()
        .unwrap()
        .to_string();
    assert!(first_token.starts_with("Bearer ey"), "{first_token}");
    assert_eq!(echo["headers"]["x-consumer-username"][0], "alice");
    let id_token = echo["headers"]["x-id-token"][0]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        echo["headers"]["cookie"].is_null(),
        "the gateway's cookies must not reach the upstream: {}",
        echo["headers"]["cookie"]
    );

    // Just the cookie, from another client.
    let cookie = format!("session={session_value}");
    let r = get(
        gw.proxy,
        "/app/page",
        &[("cookie", &cookie), ("host", "localhost")],
    )
    .await
    .unwrap();
    assert_status(&r, 200);
    assert_eq!(r.upstream_header("x-consumer-username").unwrap(), "alice");

    // A tampered cookie is no session: back to the provider.
    let mut bad = session_value.clone().into_bytes();
    let i = bad.len() / 2;
    bad[i] = if bad[i] == b'A' { b'B' } else { b'A' };
    let r = get(
        gw.proxy,
        "/app/page",
        &[
            (
                "cookie",
                &format!("session={}", String::from_utf8(bad).unwrap()),
            ),
            ("host", "localhost"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 302);

    // 5. After the access token expires the session refreshes it.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let r = browser.get(&page).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        set_cookie_value(&r, "session").is_some(),
        "a refreshed session is re-issued"
    );
    let echo: Value = r.json().await.unwrap();
    let second_token = echo["headers"]["authorization"][0]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(first_token, second_token, "the access token was refreshed");

    // 6. Logout: session cleared, redirected to the provider's end_session endpoint.
    let r = browser
        .post(format!("{gw_origin}/app/logout"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    assert!(loc.starts_with(&format!("{issuer}/session/end?")), "{loc}");
    assert!(loc.contains("id_token_hint="), "{loc}");
    assert!(loc.contains("post_logout_redirect_uri="), "{loc}");
    let cleared = set_cookie_value(&r, "session").unwrap();
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    let r = browser.get(&page).send().await.unwrap();
    assert_eq!(r.status(), 302, "logged out: back to the provider");
    // The old cookie value is dead too (revoked at logout, not only deleted in the browser).
    let r = get(
        gw.proxy,
        "/app/page",
        &[("cookie", &cookie), ("host", "localhost")],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 302);

    let first = first_token.trim_start_matches("Bearer ").to_string();
    let second = second_token.trim_start_matches("Bearer ").to_string();
    assert_no_secrets(
        &gw,
        &[
            &first,
            &second,
            &id_token,
            &session_value,
            &code,
            "gateway-secret",
        ],
    );
    drop(op);
}

#[test]
fn config_is_checked_with_paths() {
    let dir = temp_dir();
    let f = dir.join("kong.yml");
    std::fs::write(
        &f,
        r#"_format_version: "3.0"
plugins:
  - name: openid-connect
    config:
      issuer: http://idp.example.com/
      auth_methods: [bearer, userinfo]
      no_such_field: 1
      verify_signature: false
      session_secret: short
"#,
    )
    .unwrap();
    let out = Command::new(common::bin())
        .args(["config", "validate"])
        .arg(&f)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for want in [
        "plugins[0].config.issuer: plain http is only allowed for a loopback provider",
        "plugins[0].config.auth_methods[1]: auth method 'userinfo' is not supported",
        "plugins[0].config.no_such_field: unknown field",
        "plugins[0].config.verify_signature: signature verification cannot be turned off",
        "plugins[0].config.session_secret: must be at least 32 characters",
    ] {
        assert!(stdout.contains(want), "missing {want:?} in:\n{stdout}");
    }
    // https and loopback http issuers are fine, and validation does no network I/O.
    for issuer in [
        "https://idp.example.com/realms/x",
        "http://127.0.0.1:9",
        "http://localhost:9",
    ] {
        std::fs::write(
            &f,
            format!(
                "_format_version: \"3.0\"\nplugins:\n  - name: openid-connect\n    config: {{issuer: \"{issuer}\", auth_methods: [bearer]}}\n"
            ),
        )
        .unwrap();
        let out = Command::new(common::bin())
            .args(["config", "validate"])
            .arg(&f)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{issuer}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}
