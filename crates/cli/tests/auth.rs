//! Consumers and authentication through the real binary: key-auth, acl, identity headers,
//! anonymous chaining.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;

fn auth_config(origin: &str, route_plugins: &str) -> String {
    format!(
        r#"_format_version: "3.0"
consumers:
  - username: alice
    custom_id: alice-001
    keyauth_credentials:
      - key: alice-secret-key
    acls:
      - group: admins
  - username: bob
    keyauth_credentials:
      - key: bob-secret-key
    acls:
      - group: users
    basicauth_credentials:
      - username: bob
        password: "b0b-p@ss:word"
    hmacauth_credentials:
      - username: bob-hmac
        secret: bob-hmac-secret
  - username: guest
services:
  - name: svc
    url: {origin}
    routes:
      - name: r
        paths: [/]
        plugins:
{route_plugins}"#
    )
}

#[tokio::test]
async fn key_auth_identifies_consumers_and_challenges_strangers() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&auth_config(&origin.url(), "          - name: key-auth\n")).await;

    let r = gw.get("/").await;
    assert_status(&r, 401);
    assert_error_body(&r, "No API key found in request");
    assert_eq!(r.header("www-authenticate").unwrap(), "Key");

    let r = get(gw.proxy, "/", &[("apikey", "wrong")]).await.unwrap();
    assert_status(&r, 401);
    assert_eq!(r.json()["message"], "Unauthorized");

    let r = get(gw.proxy, "/", &[("apikey", "alice-secret-key")])
        .await
        .unwrap();
    assert_status(&r, 200);
    assert_eq!(r.upstream_header("x-consumer-username").unwrap(), "alice");
    assert_eq!(
        r.upstream_header("x-consumer-custom-id").unwrap(),
        "alice-001"
    );
    assert_eq!(r.upstream_header("x-consumer-id").unwrap().len(), 36);
    assert!(r.upstream_header("x-credential-identifier").is_some());
    assert!(r.upstream_header("x-anonymous-consumer").is_none());
    // The key is forwarded unless hide_credentials.
    assert_eq!(r.upstream_header("apikey").unwrap(), "alice-secret-key");

    let r = gw.get("/?apikey=bob-secret-key&x=1").await;
    assert_status(&r, 200);
    assert_eq!(r.upstream_header("x-consumer-username").unwrap(), "bob");
    assert_eq!(origin.hits(), 2);

    // Keys never show up in the gateway's logs.
    let logs = gw.logs();
    assert!(
        !logs.contains("alice-secret-key") && !logs.contains("bob-secret-key"),
        "{logs}"
    );
}

#[tokio::test]
async fn forged_identity_headers_are_stripped() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&auth_config(&origin.url(), "          - name: key-auth\n")).await;
    let r = get(
        gw.proxy,
        "/",
        &[
            ("apikey", "bob-secret-key"),
            ("x-consumer-username", "alice"),
            ("x-consumer-groups", "admins"),
            ("x-anonymous-consumer", "false"),
            ("x-credential-identifier", "forged"),
        ],
    )
    .await
    .unwrap();
    assert_status(&r, 200);
    assert_eq!(r.upstream_header("x-consumer-username").unwrap(), "bob");
    assert!(r.upstream_header("x-consumer-groups").is_none());
    assert!(r.upstream_header("x-anonymous-consumer").is_none());
    assert_ne!(
        r.upstream_header("x-credential-identifier").unwrap(),
        "forged"
    );
}

#[tokio::test]
async fn hide_credentials_and_custom_key_names() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&auth_config(
        &origin.url(),
        "          - name: key-auth\n            config: {key_names: [x-api-key, token], hide_credentials: true, realm: portcullis}\n",
    ))
    .await;
    let r = get(gw.proxy, "/", &[("x-api-key", "alice-secret-key")])
        .await
        .unwrap();
    assert_status(&r, 200);
    assert!(r.upstream_header("x-api-key").is_none());
    let r = gw.get("/p?a=1&token=alice-secret-key&b=2").await;
    assert_status(&r, 200);
    assert_eq!(r.json()["uri"], "/p?a=1&b=2");
    let r = gw.get("/").await;
    assert_eq!(
        r.header("www-authenticate").unwrap(),
        "Key realm=\"portcullis\""
    );
    let r = get(gw.proxy, "/", &[("apikey", "alice-secret-key")])
        .await
        .unwrap();
    assert_status(&r, 401);
}

#[tokio::test]
async fn acl_allows_and_denies_by_group() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&auth_config(
        &origin.url(),
        "          - name: key-auth\n          - name: acl\n            config: {allow: [admins]}\n",
    ))
    .await;
    let r = get(gw.proxy, "/", &[("apikey", "alice-secret-key")])
        .await
        .unwrap();
    assert_status(&r, 200);
    assert_eq!(r.upstream_header("x-consumer-groups").unwrap(), "admins");
    let r = get(gw.proxy, "/", &[("apikey", "bob-secret-key")])
        .await
        .unwrap();
    assert_status(&r, 403);
    assert_error_body(&r, "You cannot consume this service");
    // ACL runs after authentication: no key is still a 401, not a 403.
    assert_status(&gw.get("/").await, 401);

    let gw2 = Gw::start(&auth_config(
        &origin.url(),
        "          - name: key-auth\n          - name: acl\n            config: {deny: [users], hide_groups_header: true}\n",
    ))
    .await;
    let r = get(gw2.proxy, "/", &[("apikey", "alice-secret-key")])
        .await
        .unwrap();
    assert_status(&r, 200);
    assert!(r.upstream_header("x-consumer-groups").is_none());
    assert_status(
        &get(gw2.proxy, "/", &[("apikey", "bob-secret-key")])
            .await
            .unwrap(),
        403,
    );
}

#[tokio::test]
async fn anonymous_fallback() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&auth_config(
        &origin.url(),
        "          - name: key-auth\n            config: {anonymous: guest}\n",
    ))
    .await;
    let r = gw.get("/").await;
    assert_status(&r, 200);
    assert_eq!(r.upstream_header("x-consumer-username").unwrap(), "guest");
    assert_eq!(r.upstream_header("x-anonymous-consumer").unwrap(), "true");
    let r = get(gw.proxy, "/", &[("apikey", "nope")]).await.unwrap();
    assert_eq!(r.upstream_header("x-anonymous-consumer").unwrap(), "true");
    let r = get(gw.proxy, "/", &[("apikey", "alice-secret-key")])
        .await
        .unwrap();
    assert_eq!(r.upstream_header("x-consumer-username").unwrap(), "alice");
    assert!(r.upstream_header("x-anonymous-consumer").is_none());
}

#[test]
fn anonymous_consumer_must_exist() {
    let dir = temp_dir();
    let f = dir.join("kong.yml");
    std::fs::write(
        &f,
        auth_config(
            "http://127.0.0.1:1",
            "          - name: key-auth\n            config: {anonymous: nobody}\n",
        ),
    )
    .unwrap();
    let out = std::process::Command::new(common::bin())
        .args(["config", "validate"])
        .arg(&f)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("services[0].routes[0].plugins[0].config.anonymous: anonymous consumer 'nobody' is configured but doesn't exist"),
        "{stdout}"
    );
}

fn basic(user: &str, pass: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

#[tokio::test]
async fn basic_auth_verifies_hashed_passwords() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&auth_config(
        &origin.url(),
        "          - name: basic-auth\n            config: {hide_credentials: true}\n",
    ))
    .await;
    let r = gw.get("/").await;
    assert_status(&r, 401);
    assert_eq!(r.json()["message"], "Unauthorized");
    assert_eq!(
        r.header("www-authenticate").unwrap(),
        "Basic realm=\"service\""
    );
    let r = get(gw.proxy, "/", &[("authorization", &basic("bob", "wrong"))])
        .await
        .unwrap();
    assert_status(&r, 401);
    let r = get(
        gw.proxy,
        "/",
        &[("authorization", &basic("nobody", "b0b-p@ss:word"))],
    )
    .await
    .unwrap();
    assert_status(&r, 401);
    for _ in 0..3 {
        let r = get(
            gw.proxy,
            "/",
            &[("authorization", &basic("bob", "b0b-p@ss:word"))],
        )
        .await
        .unwrap();
        assert_status(&r, 200);
        assert_eq!(r.upstream_header("x-consumer-username").unwrap(), "bob");
        assert_eq!(r.upstream_header("x-credential-identifier").unwrap(), "bob");
        assert!(
            r.upstream_header("authorization").is_none(),
            "hide_credentials"
        );
    }
    // Proxy-Authorization is read first.
    let r = get(
        gw.proxy,
        "/",
        &[
            ("proxy-authorization", &basic("bob", "b0b-p@ss:word")),
            ("authorization", "Bearer x"),
        ],
    )
    .await
    .unwrap();
    assert_status(&r, 200);
    assert!(!gw.logs().contains("b0b-p@ss"));
}

#[tokio::test]
async fn several_auth_plugins_combine_like_kong() {
    let origin = Origin::start("a").await;
    // Without anonymous: every plugin must pass.
    let gw = Gw::start(&auth_config(
        &origin.url(),
        "          - name: key-auth\n          - name: basic-auth\n",
    ))
    .await;
    let both = get(
        gw.proxy,
        "/",
        &[
            ("apikey", "bob-secret-key"),
            ("authorization", &basic("bob", "b0b-p@ss:word")),
        ],
    )
    .await
    .unwrap();
    assert_status(&both, 200);
    let key_only = get(gw.proxy, "/", &[("apikey", "bob-secret-key")])
        .await
        .unwrap();
    assert_status(&key_only, 401);
    // With anonymous on each: any one is enough, none maps to the anonymous consumer.
    let gw2 = Gw::start(&auth_config(
        &origin.url(),
        "          - name: key-auth\n            config: {anonymous: guest}\n          - name: basic-auth\n            config: {anonymous: guest}\n",
    ))
    .await;
    let r = get(
        gw2.proxy,
        "/",
        &[("authorization", &basic("bob", "b0b-p@ss:word"))],
    )
    .await
    .unwrap();
    assert_status(&r, 200);
    assert_eq!(r.upstream_header("x-consumer-username").unwrap(), "bob");
    assert!(r.upstream_header("x-anonymous-consumer").is_none());
    let r = get(gw2.proxy, "/", &[("apikey", "alice-secret-key")])
        .await
        .unwrap();
    assert_eq!(r.upstream_header("x-consumer-username").unwrap(), "alice");
    let r = gw2.get("/").await;
    assert_status(&r, 200);
    assert_eq!(r.upstream_header("x-anonymous-consumer").unwrap(), "true");
}

#[tokio::test]
async fn consumer_scoped_plugins_apply_once_the_consumer_is_known() {
    let origin = Origin::start("a").await;
    let mut cfg = auth_config(
        &origin.url(),
        "          - name: key-auth\n          - name: request-termination\n            config: {status_code: 418, message: route-level}\n            enabled: false\n",
    );
    cfg.push_str(
        r#"plugins:
  - name: request-termination
    consumer: bob
    config: {status_code: 403, message: "bob is suspended"}
"#,
    );
    let gw = Gw::start(&cfg).await;
    let r = get(gw.proxy, "/", &[("apikey", "bob-secret-key")])
        .await
        .unwrap();
    assert_status(&r, 403);
    assert_eq!(r.json()["message"], "bob is suspended");
    let r = get(gw.proxy, "/", &[("apikey", "alice-secret-key")])
        .await
        .unwrap();
    assert_status(&r, 200);
    assert_eq!(origin.hits(), 1);
}

fn http_date(offset_secs: i64) -> String {
    let t = std::time::SystemTime::now() + std::time::Duration::from_secs(0);
    let secs = t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64 + offset_secs;
    // Format an IMF-fixdate by hand (days-from-civil inverse).
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    let wd = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][days.rem_euclid(7) as usize];
    let mon = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][(m - 1) as usize];
    format!(
        "{wd}, {d:02} {mon} {y} {:02}:{:02}:{:02} GMT",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn hmac_header(secret: &[u8], signing: &str) -> String {
    hmac_header_with(secret, signing, "date request-line")
}

#[tokio::test]
async fn hmac_auth_verifies_signed_requests() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&auth_config(&origin.url(), "          - name: hmac-auth\n            config: {enforce_headers: [date], hide_credentials: true}\n")).await;
    let date = http_date(0);
    let signing = format!("date: {date}\nGET /res?q=1 HTTP/1.1");
    let auth = hmac_header(b"bob-hmac-secret", &signing);
    let r = get(
        gw.proxy,
        "/res?q=1",
        &[("date", &date), ("authorization", &auth)],
    )
    .await
    .unwrap();
    assert_status(&r, 200);
    assert_eq!(r.upstream_header("x-consumer-username").unwrap(), "bob");
    assert_eq!(
        r.upstream_header("x-credential-identifier").unwrap(),
        "bob-hmac"
    );
    assert!(r.upstream_header("authorization").is_none());

    // Same signature on another path: mismatch.
    let r = get(
        gw.proxy,
        "/other",
        &[("date", &date), ("authorization", &auth)],
    )
    .await
    .unwrap();
    assert_status(&r, 401);
    assert_eq!(r.json()["message"], "HMAC signature does not match");
    // Wrong secret.
    let forged = hmac_header(b"guess", &signing);
    let r = get(
        gw.proxy,
        "/res?q=1",
        &[("date", &date), ("authorization", &forged)],
    )
    .await
    .unwrap();
    assert_eq!(r.json()["message"], "HMAC signature does not match");
    // Stale date (replay window is 300 s).
    let old = http_date(-900);
    let auth_old = hmac_header(
        b"bob-hmac-secret",
        &format!("date: {old}\nGET /res HTTP/1.1"),
    );
    let r = get(
        gw.proxy,
        "/res",
        &[("date", &old), ("authorization", &auth_old)],
    )
    .await
    .unwrap();
    assert_eq!(r.json()["message"], "HMAC signature cannot be verified, a valid date or x-date header is required for HMAC Authentication");
    // No credentials.
    let r = gw.get("/res").await;
    assert_status(&r, 401);
    assert_eq!(r.header("www-authenticate").unwrap(), "hmac");
    assert_eq!(origin.hits(), 1);
}

#[tokio::test]
async fn key_auth_reads_keys_from_form_and_json_bodies() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&auth_config(
        &origin.url(),
        "          - name: key-auth\n            config: {key_in_body: true, key_in_query: false, hide_credentials: true}\n",
    ))
    .await;
    let form = [("content-type", "application/x-www-form-urlencoded")];
    let r = request(
        gw.proxy,
        "POST",
        "/",
        &form,
        "a=1&apikey=alice-secret-key&b=two+words",
    )
    .await
    .unwrap();
    assert_status(&r, 200);
    assert_eq!(r.upstream_header("x-consumer-username").unwrap(), "alice");
    // hide_credentials removes the key from the body and the length follows.
    assert_eq!(r.json()["body"], "a=1&b=two+words");
    assert_eq!(r.upstream_header("content-length").unwrap(), "15");

    let json_ct = [("content-type", "application/json; charset=utf-8")];
    let r = request(
        gw.proxy,
        "POST",
        "/",
        &json_ct,
        r#"{"apikey":"bob-secret-key","n":1}"#,
    )
    .await
    .unwrap();
    assert_status(&r, 200);
    assert_eq!(r.upstream_header("x-consumer-username").unwrap(), "bob");
    assert_eq!(r.json()["body"], r#"{"n":1}"#);

    // Wrong key in the body, key in the (disabled) query, or a body type without keys: 401.
    let r = request(gw.proxy, "POST", "/", &form, "apikey=nope")
        .await
        .unwrap();
    assert_status(&r, 401);
    assert_eq!(r.json()["message"], "Unauthorized");
    let r = request(gw.proxy, "POST", "/?apikey=alice-secret-key", &form, "x=1")
        .await
        .unwrap();
    assert_eq!(r.json()["message"], "No API key found in request");
    let r = request(
        gw.proxy,
        "POST",
        "/",
        &[("content-type", "text/plain")],
        "apikey=alice-secret-key",
    )
    .await
    .unwrap();
    assert_status(&r, 401);
    assert_eq!(origin.hits(), 2);
    assert!(!gw.logs().contains("alice-secret-key"));
}

fn hmac_header_with(secret: &[u8], signing: &str, headers: &str) -> String {
    use base64::Engine;
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
    mac.update(signing.as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    format!(
        r#"hmac username="bob-hmac", algorithm="hmac-sha256", headers="{headers}", signature="{sig}""#
    )
}

fn sha256_digest(body: &str) -> String {
    use base64::Engine;
    use sha2::Digest;
    format!(
        "SHA-256={}",
        base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(body.as_bytes()))
    )
}

#[tokio::test]
async fn hmac_auth_validates_the_body_digest() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&auth_config(
        &origin.url(),
        "          - name: hmac-auth\n            config: {validate_request_body: true}\n",
    ))
    .await;
    let body = r#"{"amount":100}"#;
    let date = http_date(0);
    let digest = sha256_digest(body);
    let signing = format!("date: {date}\ndigest: {digest}");
    let auth = hmac_header_with(b"bob-hmac-secret", &signing, "date digest");
    let headers = [
        ("date", date.as_str()),
        ("digest", digest.as_str()),
        ("authorization", auth.as_str()),
    ];
    let r = request(gw.proxy, "POST", "/pay", &headers, body)
        .await
        .unwrap();
    assert_status(&r, 200);
    assert_eq!(r.json()["body"], body);

    // The body swapped in transit: the digest no longer matches.
    let r = request(gw.proxy, "POST", "/pay", &headers, r#"{"amount":999}"#)
        .await
        .unwrap();
    assert_status(&r, 401);
    assert_eq!(r.json()["message"], "HMAC signature does not match");

    // Body and Digest swapped together, but Digest not signed: refused (Kong accepts this).
    let evil = r#"{"amount":999}"#;
    let evil_digest = sha256_digest(evil);
    let signing = format!("date: {date}");
    let auth = hmac_header_with(b"bob-hmac-secret", &signing, "date");
    let h = [
        ("date", date.as_str()),
        ("digest", evil_digest.as_str()),
        ("authorization", auth.as_str()),
    ];
    let r = request(gw.proxy, "POST", "/pay", &h, evil).await.unwrap();
    assert_status(&r, 401);

    // No body and no Digest: fine. A body without Digest: refused.
    let h = [("date", date.as_str()), ("authorization", auth.as_str())];
    let r = request(gw.proxy, "GET", "/pay", &h, "").await.unwrap();
    assert_status(&r, 200);
    let r = request(gw.proxy, "POST", "/pay", &h, "x=1").await.unwrap();
    assert_status(&r, 401);
    assert_eq!(origin.hits(), 2);
}

#[tokio::test]
async fn repeated_failures_lock_out_the_client_and_the_credential() {
    let origin = Origin::start("a").await;
    let plugins = "          - name: key-auth\n            config: {anonymous: null, lockout: {threshold: 3, window: 60, cooldown: 1, max_cooldown: 4}}\n";
    let cfg = auth_config(&origin.url(), plugins)
        + "      - name: b\n        paths: [/basic]\n        plugins:\n          - name: basic-auth\n            config: {lockout: {threshold: 2, cooldown: 30}}\n";
    // The test talks from 127.0.0.1 as a trusted proxy, so each X-Forwarded-For is a client.
    let gw = Gw::start_with(&cfg, "trusted_ips = [\"127.0.0.1/32\"]\n").await;
    let from = |ip: &'static str, key: &'static str| {
        let proxy = gw.proxy;
        async move {
            get(proxy, "/", &[("x-forwarded-for", ip), ("apikey", key)])
                .await
                .unwrap()
        }
    };

    // Missing credentials are never counted.
    for _ in 0..5 {
        let r = get(gw.proxy, "/", &[("x-forwarded-for", "10.0.0.9")])
            .await
            .unwrap();
        assert_status(&r, 401);
    }
    assert_status(&from("10.0.0.9", "alice-secret-key").await, 200);

    assert_status(&from("10.0.0.1", "guess-1").await, 401);
    assert_status(&from("10.0.0.1", "guess-2").await, 401);
    let r = from("10.0.0.1", "guess-3").await;
    assert_status(&r, 429);
    assert_eq!(
        r.json()["message"],
        "Too many failed authentication attempts"
    );
    assert_eq!(r.header("retry-after").unwrap(), "1");
    // Locked out even with a good key; other clients are unaffected.
    assert_status(&from("10.0.0.1", "alice-secret-key").await, 429);
    assert_status(&from("10.0.0.2", "alice-secret-key").await, 200);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_status(&from("10.0.0.1", "alice-secret-key").await, 200);

    // basic-auth counts per username across client addresses.
    let bad = basic("bob", "wrong");
    let r = get(
        gw.proxy,
        "/basic",
        &[("x-forwarded-for", "10.1.0.1"), ("authorization", &bad)],
    )
    .await
    .unwrap();
    assert_status(&r, 401);
    let r = get(
        gw.proxy,
        "/basic",
        &[("x-forwarded-for", "10.1.0.2"), ("authorization", &bad)],
    )
    .await
    .unwrap();
    assert_status(&r, 429);
    let good = basic("bob", "b0b-p@ss:word");
    let r = get(
        gw.proxy,
        "/basic",
        &[("x-forwarded-for", "10.1.0.3"), ("authorization", &good)],
    )
    .await
    .unwrap();
    assert_status(&r, 429);
    assert_eq!(r.header("retry-after").unwrap(), "30");

    // Each lockout is a security event; no guessed credential is written anywhere.
    let logs = gw.logs();
    assert!(logs.matches("auth_lockout").count() >= 2, "{logs}");
    assert!(logs.contains("10.0.0.1"));
    for secret in ["guess-1", "guess-3", "wrong", "b0b-p@ss"] {
        assert!(!logs.contains(secret), "{secret} leaked: {logs}");
    }
}

#[tokio::test]
async fn basic_auth_accepts_kong_sha1_hashes_from_untransformed_exports() {
    use sha1::Digest;
    let origin = Origin::start("a").await;
    let id = "0a6e3a4e-5c1d-4d8b-9c3e-1f2a3b4c5d6e";
    let hex: String = sha1::Sha1::digest(format!("legacy-pass{id}").as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let cfg = format!(
        r#"_format_version: "3.0"
_transform: false
consumers:
  - id: {id}
    username: old-timer
    basicauth_credentials:
      - username: old-timer
        password: "{hex}"
services:
  - name: svc
    url: {origin}
    routes:
      - name: r
        paths: [/]
        plugins:
          - name: basic-auth
"#,
        origin = origin.url()
    );
    let gw = Gw::start(&cfg).await;
    let r = get(
        gw.proxy,
        "/",
        &[("authorization", &basic("old-timer", "legacy-pass"))],
    )
    .await
    .unwrap();
    assert_status(&r, 200);
    assert_eq!(
        r.upstream_header("x-consumer-username").unwrap(),
        "old-timer"
    );
    // The hash itself is not a password.
    let r = get(
        gw.proxy,
        "/",
        &[("authorization", &basic("old-timer", &hex))],
    )
    .await
    .unwrap();
    assert_status(&r, 401);
    let r = get(
        gw.proxy,
        "/",
        &[("authorization", &basic("old-timer", "legacy-pasS"))],
    )
    .await
    .unwrap();
    assert_status(&r, 401);
}

#[tokio::test]
async fn a_flood_of_password_checks_is_shed_not_queued_forever() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&auth_config(
        &origin.url(),
        "          - name: basic-auth\n",
    ))
    .await;
    let proxy = gw.proxy;
    let mut tasks = Vec::new();
    for i in 0..400 {
        tasks.push(tokio::spawn(async move {
            let auth = basic("bob", &format!("wrong-{i}"));
            get(proxy, "/", &[("authorization", &auth)])
                .await
                .map(|r| r.status)
        }));
    }
    let mut counts = std::collections::BTreeMap::new();
    for t in tasks {
        if let Ok(Ok(s)) = t.await {
            *counts.entry(s).or_insert(0) += 1;
        }
    }
    assert!(counts.keys().all(|s| *s == 401 || *s == 503), "{counts:?}");
    assert!(
        counts.get(&503).copied().unwrap_or(0) > 0,
        "no check was shed: {counts:?}"
    );
    assert!(counts.get(&401).copied().unwrap_or(0) > 0, "{counts:?}");
    // The good password still works once the flood has passed.
    let r = get(
        proxy,
        "/",
        &[("authorization", &basic("bob", "b0b-p@ss:word"))],
    )
    .await
    .unwrap();
    assert_status(&r, 200);
}
