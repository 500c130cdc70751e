//! mtls-auth through the real binary: client certificates verified against the configured
//! CAs (and CRLs) on the TLS listener, mapped to consumers by CN, SAN or credential.

#![allow(clippy::unwrap_used)]

mod common;

use common::tls::*;
use common::*;

const CA_ID: &str = "6f0c7a2e-0c11-4b6e-9a59-3f5b6bb1b0a1";

fn config(origin: &str, ca: &TestCa, extra: &str) -> String {
    format!(
        r#"_format_version: "3.0"
ca_certificates:
  - id: {CA_ID}
    cert: {ca}
consumers:
  - username: alice
  - username: bob
    mtls_auth_credentials:
      - subject_name: bob@example.com
  - username: guest
services:
  - name: svc
    url: {origin}
    routes:
      - name: open
        paths: [/open]
      - name: m
        paths: [/m]
        plugins:
          - name: mtls-auth
            config:
              ca_certificates: [{CA_ID}]
{extra}"#,
        ca = yaml_str(&ca.pem)
    )
}

async fn over_tls(gw: &Gw, leaf: Option<&Leaf>, path: &str, headers: &[(&str, &str)]) -> Reply {
    let cfg = match leaf {
        Some(l) => client_with_cert(l),
        None => client_config(None, &[], all_versions()),
    };
    let s = tls_connect(gw.tls, "localhost", cfg).await.unwrap();
    let mut h = vec![("host", "localhost")];
    h.extend_from_slice(headers);
    send_h1(s, "GET", path, &h, b"").await.unwrap()
}

#[tokio::test]
async fn client_certificates_map_to_consumers() {
    let origin = Origin::start("a").await;
    let ca = TestCa::new("Test Client CA");
    let gw = Gw::start(&config(&origin.url(), &ca, "")).await;

    // No certificate: over TLS or plain text.
    let r = over_tls(&gw, None, "/m", &[]).await;
    assert_status(&r, 401);
    assert_error_body(&r, "No required TLS certificate was sent");
    let r = gw.get("/m").await;
    assert_status(&r, 401);
    // The certificate is optional for routes without the plugin.
    let r = over_tls(&gw, None, "/open", &[]).await;
    assert_status(&r, 200);

    // CN matches a consumer username.
    let alice = ca.issue_client("alice", &[], 10);
    let r = over_tls(
        &gw,
        Some(&alice),
        "/m",
        &[("x-consumer-username", "forged")],
    )
    .await;
    assert_status(&r, 200);
    assert_eq!(r.upstream_header("x-consumer-username").unwrap(), "alice");

    // A SAN email matches an mtls_auth_credentials subject_name.
    let bob = ca.issue_client("bob-laptop", &["email:bob@example.com"], 11);
    let r = over_tls(&gw, Some(&bob), "/m", &[]).await;
    assert_status(&r, 200);
    assert_eq!(r.upstream_header("x-consumer-username").unwrap(), "bob");
    assert!(r.upstream_header("x-credential-identifier").is_some());

    // Trusted CA but nobody we know; a known name from an untrusted CA.
    let mallory = ca.issue_client("mallory", &["dns:mallory.example"], 12);
    let r = over_tls(&gw, Some(&mallory), "/m", &[]).await;
    assert_status(&r, 401);
    assert_eq!(r.json()["message"], "TLS certificate failed verification");
    let rogue_ca = TestCa::new("Rogue CA");
    let fake_alice = rogue_ca.issue_client("alice", &[], 10);
    let r = over_tls(&gw, Some(&fake_alice), "/m", &[]).await;
    assert_status(&r, 401);
    assert_eq!(r.json()["message"], "TLS certificate failed verification");
    assert_eq!(origin.hits(), 3);
}

#[tokio::test]
async fn revoked_certificates_are_refused_and_anonymous_applies() {
    let origin = Origin::start("a").await;
    let ca = TestCa::new("Test Client CA");
    let crl = ca.crl(&[21]);
    let extra = format!(
        "              crls: [{}]\n              anonymous: guest\n",
        yaml_str(&crl)
    );
    let gw = Gw::start(&config(&origin.url(), &ca, &extra)).await;

    let alice = ca.issue_client("alice", &[], 20);
    let r = over_tls(&gw, Some(&alice), "/m", &[]).await;
    assert_status(&r, 200);
    assert_eq!(r.upstream_header("x-consumer-username").unwrap(), "alice");

    // Revoked: falls back to the anonymous consumer instead of alice.
    let revoked = ca.issue_client("alice", &[], 21);
    let r = over_tls(&gw, Some(&revoked), "/m", &[]).await;
    assert_status(&r, 200);
    assert_eq!(r.upstream_header("x-consumer-username").unwrap(), "guest");
    assert_eq!(r.upstream_header("x-anonymous-consumer").unwrap(), "true");
}

#[tokio::test]
async fn bad_mtls_configs_are_refused_with_paths() {
    let out = std::process::Command::new(common::bin())
        .args(["config", "validate", "/dev/stdin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(
                br#"_format_version: "3.0"
plugins:
  - name: mtls-auth
    config:
      ca_certificates: [00000000-0000-0000-0000-000000000000]
      revocation_check_mode: SOMETIMES
      crls: ["not a crl"]
"#,
            )?;
            c.wait_with_output()
        })
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("plugins[0].config.revocation_check_mode"),
        "{text}"
    );
    assert!(text.contains("plugins[0].config.crls[0]"), "{text}");
}

#[tokio::test]
async fn a_credential_pinned_to_one_ca_cannot_be_claimed_through_another() {
    let origin = Origin::start("a").await;
    let corp = TestCa::new("Corp CA");
    let partner = TestCa::new("Partner CA");
    let corp_id = "11111111-1111-4111-8111-111111111111";
    let partner_id = "22222222-2222-4222-8222-222222222222";
    let cfg = format!(
        r#"_format_version: "3.0"
ca_certificates:
  - id: {corp_id}
    cert: {corp}
  - id: {partner_id}
    cert: {partner}
consumers:
  - username: alice
    mtls_auth_credentials:
      - subject_name: alice
        ca_certificate: {corp_id}
  - username: bob
services:
  - name: svc
    url: {origin}
    routes:
      - name: m
        paths: [/m]
        plugins:
          - name: mtls-auth
            config:
              ca_certificates: [{corp_id}, {partner_id}]
"#,
        corp = yaml_str(&corp.pem),
        partner = yaml_str(&partner.pem),
        origin = origin.url()
    );
    let gw = Gw::start(&cfg).await;
    let real = corp.issue_client("alice", &[], 30);
    let r = over_tls(&gw, Some(&real), "/m", &[]).await;
    assert_status(&r, 200);
    assert_eq!(r.upstream_header("x-consumer-username").unwrap(), "alice");
    // The partner CA is trusted, but alice's identity is pinned to the corp CA.
    let forged = partner.issue_client("alice", &["dns:alice"], 31);
    let r = over_tls(&gw, Some(&forged), "/m", &[]).await;
    assert_status(&r, 401);
    // Unpinned names still map through consumer_by from either CA.
    let bob = partner.issue_client("bob", &[], 32);
    let r = over_tls(&gw, Some(&bob), "/m", &[]).await;
    assert_status(&r, 200);
    assert_eq!(r.upstream_header("x-consumer-username").unwrap(), "bob");
}
