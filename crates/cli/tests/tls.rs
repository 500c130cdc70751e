//! TLS through the real binary: certificate selection by SNI, TLS-only routes, HTTP/2 via ALPN,
//! protocol versions, and TLS to upstreams (CA verification, mutual TLS). Every certificate is
//! issued in the test by a throwaway CA.

#![allow(clippy::unwrap_used)]

mod common;

use common::tls::*;
use common::*;

const CERT_A: &str = "6f1d1a80-0000-4000-8000-00000000000a";
const CERT_WILD: &str = "6f1d1a80-0000-4000-8000-00000000000b";
const CERT_CLIENT: &str = "6f1d1a80-0000-4000-8000-00000000000c";
const CA_GOOD: &str = "6f1d1a80-0000-4000-8000-0000000000ca";
const CA_OTHER: &str = "6f1d1a80-0000-4000-8000-0000000000cb";

/// A `certificates` entry (YAML, list item at 2 spaces).
fn cert_entity(id: &str, leaf: &Leaf, snis: &[&str]) -> String {
    let snis: Vec<String> = snis.iter().map(|s| yaml_str(s)).collect();
    format!(
        "  - id: {id}\n    cert: {}\n    key: {}\n    snis: [{}]\n",
        yaml_str(&leaf.cert_pem),
        yaml_str(&leaf.key_pem),
        snis.join(", ")
    )
}

fn ca_entity(id: &str, ca: &TestCa) -> String {
    format!("  - id: {id}\n    cert: {}\n", yaml_str(&ca.pem))
}

/// A gateway with certificates for `a.test` and `*.wild.test` and one catch-all route.
async fn sni_gateway(origin: &Origin, a: &Leaf, wild: &Leaf) -> Gw {
    Gw::start(&format!(
        "_format_version: \"3.0\"\ncertificates:\n{}{}services:\n  - name: svc\n    url: {}\n    routes:\n      - name: all\n        paths: [/]\n      - name: secure\n        paths: [/secure]\n        protocols: [https]\n      - name: plain-only\n        paths: [/plain-only]\n        protocols: [http]\n",
        cert_entity(CERT_A, a, &["a.test"]),
        cert_entity(CERT_WILD, wild, &["*.wild.test"]),
        origin.url()
    ))
    .await
}

#[tokio::test]
async fn sni_selects_the_certificate_and_requests_are_proxied_over_tls() {
    let ca = TestCa::new("portcullis test CA");
    let a = ca.issue(&["a.test"]);
    let wild = ca.issue(&["*.wild.test"]);
    let origin = Origin::start("tls").await;
    let gw = sni_gateway(&origin, &a, &wild).await;
    let trusted = client_config(Some(&[&ca.der]), &["http/1.1"], all_versions());

    // Exact SNI: the a.test certificate, valid for a.test under our CA.
    let s = tls_connect(gw.tls, "a.test", trusted.clone())
        .await
        .expect("handshake for a.test verifies against the test CA");
    assert_eq!(
        peer_leaf(&s),
        a.der,
        "a.test must get the a.test certificate"
    );
    assert_eq!(alpn_of(&s).as_deref(), Some("http/1.1"));
    let r = send_h1(s, "GET", "/x?q=1", &[("host", "a.test")], b"")
        .await
        .unwrap();
    assert_status(&r, 200);
    let echo = r.json();
    assert_eq!(echo["origin"], "tls");
    assert_eq!(echo["uri"], "/x?q=1");
    assert_eq!(r.upstream_header("x-forwarded-proto").unwrap(), "https");
    assert_eq!(r.upstream_header("x-forwarded-host").unwrap(), "a.test");
    assert_eq!(
        r.upstream_header("x-forwarded-port").unwrap(),
        gw.tls.port().to_string()
    );
    assert!(r.header("x-hop").is_none());
    // A route for http only is proxied over https too, as in Kong 3.x (its default router
    // matches without the protocol; only https-only routes refuse the other scheme).
    let s = tls_connect(gw.tls, "a.test", trusted.clone())
        .await
        .unwrap();
    let r = send_h1(s, "GET", "/plain-only/x", &[("host", "a.test")], b"")
        .await
        .unwrap();
    assert_status(&r, 200);
    assert_eq!(r.json()["uri"], "/x");
    assert_eq!(r.upstream_header("x-forwarded-proto").unwrap(), "https");

    // Wildcard SNI: the *.wild.test certificate.
    let s = tls_connect(gw.tls, "x.wild.test", trusted.clone())
        .await
        .expect("handshake for x.wild.test verifies against the test CA");
    assert_eq!(peer_leaf(&s), wild.der, "x.wild.test must get the wildcard");
    let r = send_h1(s, "GET", "/w", &[("host", "x.wild.test")], b"")
        .await
        .unwrap();
    assert_status(&r, 200);
    assert_eq!(r.upstream_header("x-forwarded-proto").unwrap(), "https");
    // The wildcard covers one label only: the bare suffix falls back to the default.
    let s = tls_connect(
        gw.tls,
        "wild.test",
        client_config(None, &[], all_versions()),
    )
    .await
    .unwrap();
    assert_ne!(peer_leaf(&s), wild.der);

    // Unknown SNI, and no SNI at all: the built-in self-signed localhost certificate.
    let any = client_config(None, &["http/1.1"], all_versions());
    for name in ["unknown.test", "127.0.0.1"] {
        let s = tls_connect(gw.tls, name, any.clone()).await.unwrap();
        let leaf = peer_leaf(&s);
        assert_ne!(leaf, a.der, "{name}");
        assert_ne!(leaf, wild.der, "{name}");
        assert!(
            is_self_signed_for(&leaf, "localhost"),
            "{name}: default certificate is self-signed for localhost"
        );
        let r = send_h1(s, "GET", "/d", &[("host", "localhost")], b"")
            .await
            .unwrap();
        assert_status(&r, 200);
        assert_eq!(r.upstream_header("x-forwarded-proto").unwrap(), "https");
    }
    // ...which a client trusting only our CA refuses.
    assert!(tls_connect(gw.tls, "unknown.test", trusted).await.is_err());
    // (The self-signed check discriminates: our CA-issued leaf fails it.)
    assert!(!is_self_signed_for(&a.der, "localhost"));
    assert_eq!(origin.hits(), 5);
}

/// Kong's catch-all SNI `*` (its way to set a default certificate in a DB-less file): served
/// to a client naming a server no other SNI matches, including a name two labels under a
/// wildcard; a client naming no server gets the node's default certificate, as in Kong.
#[tokio::test]
async fn the_catch_all_sni_serves_unmatched_names() {
    let ca = TestCa::new("portcullis test CA");
    let wild = ca.issue(&["*.wild.test"]);
    let any = ca.issue(&["fallback.test"]);
    let origin = Origin::start("tls").await;
    let gw = Gw::start(&format!(
        "_format_version: \"3.0\"\ncertificates:\n{}{}services:\n  - name: svc\n    url: {}\n    routes:\n      - name: all\n        paths: [/]\n",
        cert_entity(CERT_WILD, &wild, &["*.wild.test"]),
        cert_entity(CERT_A, &any, &["*"]),
        origin.url()
    ))
    .await;
    let cfg = client_config(None, &["http/1.1"], all_versions());
    for (name, want) in [
        ("x.wild.test", &wild.der),
        ("a.b.wild.test", &any.der),
        ("unknown.test", &any.der),
    ] {
        let s = tls_connect(gw.tls, name, cfg.clone()).await.unwrap();
        assert_eq!(&peer_leaf(&s), want, "{name}");
    }
    let s = tls_connect(gw.tls, "127.0.0.1", cfg.clone()).await.unwrap();
    assert!(is_self_signed_for(&peer_leaf(&s), "localhost"));
}

#[tokio::test]
async fn https_only_route_is_served_over_tls_and_refused_over_http() {
    let ca = TestCa::new("portcullis test CA");
    let a = ca.issue(&["a.test"]);
    let wild = ca.issue(&["*.wild.test"]);
    let origin = Origin::start("tls").await;
    let gw = sni_gateway(&origin, &a, &wild).await;

    let cfg = client_config(Some(&[&ca.der]), &["http/1.1"], all_versions());
    let s = tls_connect(gw.tls, "a.test", cfg).await.unwrap();
    let r = send_h1(s, "GET", "/secure/page", &[("host", "a.test")], b"")
        .await
        .unwrap();
    assert_status(&r, 200);
    assert_eq!(r.json()["uri"], "/page");
    assert_eq!(r.upstream_header("x-forwarded-proto").unwrap(), "https");
    assert_eq!(r.upstream_header("x-forwarded-prefix").unwrap(), "/secure");

    let r = get(gw.proxy, "/secure/page", &[("host", "a.test")])
        .await
        .unwrap();
    assert_status(&r, 426);
    assert_eq!(r.json()["message"], "Please use HTTPS protocol");
    assert_eq!(origin.hits(), 1);
}

#[tokio::test]
async fn http2_is_negotiated_with_alpn() {
    let ca = TestCa::new("portcullis test CA");
    let a = ca.issue(&["a.test"]);
    let wild = ca.issue(&["*.wild.test"]);
    let origin = Origin::start("h2").await;
    let gw = sni_gateway(&origin, &a, &wild).await;

    let cfg = client_config(Some(&[&ca.der]), &["h2"], all_versions());
    let s = tls_connect(gw.tls, "a.test", cfg).await.unwrap();
    assert_eq!(alpn_of(&s).as_deref(), Some("h2"));
    let r = send_h2(
        s,
        "POST",
        "https://a.test/items?x=1",
        &[("x-client", "h2")],
        b"payload",
    )
    .await
    .unwrap();
    assert_eq!(r.version, hyper::Version::HTTP_2);
    let r = r.reply;
    assert_status(&r, 200);
    let echo = r.json();
    assert_eq!(echo["origin"], "h2");
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["uri"], "/items?x=1");
    assert_eq!(echo["body"], "payload");
    assert_eq!(r.upstream_header("x-client").unwrap(), "h2");
    assert_eq!(r.upstream_header("x-forwarded-proto").unwrap(), "https");
    assert_eq!(r.upstream_header("x-forwarded-host").unwrap(), "a.test");
    // Connection-specific headers of the HTTP/1.1 upstream response are not relayed.
    assert!(r.header("connection").is_none());
    assert!(r.header("x-hop").is_none());

    // A client offering only http/1.1 gets it.
    let cfg = client_config(Some(&[&ca.der]), &["http/1.1"], all_versions());
    let s = tls_connect(gw.tls, "a.test", cfg).await.unwrap();
    assert_eq!(alpn_of(&s).as_deref(), Some("http/1.1"));
}

#[tokio::test]
async fn tls_1_2_and_1_3_both_negotiate() {
    let ca = TestCa::new("portcullis test CA");
    let a = ca.issue(&["a.test"]);
    let wild = ca.issue(&["*.wild.test"]);
    let origin = Origin::start("v").await;
    let gw = sni_gateway(&origin, &a, &wild).await;

    for (version, want) in [
        (&rustls::version::TLS12, rustls::ProtocolVersion::TLSv1_2),
        (&rustls::version::TLS13, rustls::ProtocolVersion::TLSv1_3),
    ] {
        let cfg = client_config(Some(&[&ca.der]), &["http/1.1"], &[version]);
        let s = tls_connect(gw.tls, "a.test", cfg)
            .await
            .unwrap_or_else(|e| panic!("{want:?} handshake failed: {e}"));
        assert_eq!(s.get_ref().1.protocol_version(), Some(want));
        assert_eq!(peer_leaf(&s), a.der);
        let r = send_h1(s, "GET", "/", &[("host", "a.test")], b"")
            .await
            .unwrap();
        assert_status(&r, 200);
        assert_eq!(r.upstream_header("x-forwarded-proto").unwrap(), "https");
    }
    assert_eq!(origin.hits(), 2);
}

#[tokio::test]
async fn upstream_tls_is_verified_against_configured_cas() {
    let ca = TestCa::new("portcullis test CA");
    let other = TestCa::new("some other CA");
    let server = ca.issue(&["localhost"]);
    let origin = TlsOrigin::start("secure-origin", &server, None).await;
    let url = format!("https://localhost:{}", origin.port());
    let gw = Gw::start(&format!(
        r#"_format_version: "3.0"
ca_certificates:
{}{}services:
  - name: with-ca
    url: {url}
    ca_certificates: [{CA_GOOD}]
    tls_verify: true
    retries: 0
    routes: [{{name: with-ca, paths: [/with-ca]}}]
  - name: public-roots
    url: {url}
    tls_verify: true
    retries: 0
    routes: [{{name: public-roots, paths: [/public-roots]}}]
  - name: wrong-ca
    url: {url}
    ca_certificates: [{CA_OTHER}]
    tls_verify: true
    retries: 0
    routes: [{{name: wrong-ca, paths: [/wrong-ca]}}]
  - name: no-verify
    url: {url}
    tls_verify: false
    retries: 0
    routes: [{{name: no-verify, paths: [/no-verify]}}]
"#,
        ca_entity(CA_GOOD, &ca),
        ca_entity(CA_OTHER, &other),
    ))
    .await;

    let r = gw.get("/with-ca/a").await;
    assert_status(&r, 200);
    let echo = r.json();
    assert_eq!(echo["origin"], "secure-origin");
    assert_eq!(echo["uri"], "/a");
    assert_eq!(
        r.upstream_header("host").unwrap(),
        format!("localhost:{}", origin.port())
    );
    assert_eq!(origin.hits(), 1);

    for path in ["/public-roots/a", "/wrong-ca/a"] {
        let r = gw.get(path).await;
        assert_status(&r, 502);
        assert_error_body(
            &r,
            "An invalid response was received from the upstream server",
        );
    }
    assert_eq!(origin.hits(), 1, "unverified upstreams get no request");

    let r = gw.get("/no-verify/b").await;
    assert_status(&r, 200);
    assert_eq!(r.json()["uri"], "/b");
    assert_eq!(origin.hits(), 2);
}

#[tokio::test]
async fn mutual_tls_to_upstream_presents_the_client_certificate() {
    let ca = TestCa::new("portcullis test CA");
    let server = ca.issue(&["localhost"]);
    let client = ca.issue(&["portcullis-client"]);
    let origin = TlsOrigin::start("mtls-origin", &server, Some(&ca)).await;
    let url = format!("https://localhost:{}", origin.port());
    let gw = Gw::start(&format!(
        r#"_format_version: "3.0"
ca_certificates:
{}certificates:
{}services:
  - name: with-cert
    url: {url}
    ca_certificates: [{CA_GOOD}]
    tls_verify: true
    client_certificate: {CERT_CLIENT}
    retries: 0
    routes: [{{name: with-cert, paths: [/with-cert]}}]
  - name: without-cert
    url: {url}
    ca_certificates: [{CA_GOOD}]
    tls_verify: true
    retries: 0
    routes: [{{name: without-cert, paths: [/without-cert]}}]
"#,
        ca_entity(CA_GOOD, &ca),
        cert_entity(CERT_CLIENT, &client, &[]),
    ))
    .await;

    let r = gw.get("/with-cert/x").await;
    assert_status(&r, 200);
    assert_eq!(r.json()["origin"], "mtls-origin");
    assert_eq!(r.json()["uri"], "/x");
    {
        let seen = origin.client_certs.lock().unwrap();
        assert!(!seen.is_empty());
        assert!(
            seen.iter().all(|c| *c == client.der),
            "the origin saw the configured client certificate"
        );
    }
    assert_eq!(origin.hits(), 1);

    let failed_before = origin
        .failed_handshakes
        .load(std::sync::atomic::Ordering::SeqCst);
    let r = gw.get("/without-cert/x").await;
    assert_status(&r, 502);
    assert_error_body(
        &r,
        "An invalid response was received from the upstream server",
    );
    assert_eq!(origin.hits(), 1, "no request without a client certificate");
    // The origin counts the refusal just after sending its alert: allow it a moment.
    let mut refused = false;
    for _ in 0..100 {
        refused = origin
            .failed_handshakes
            .load(std::sync::atomic::Ordering::SeqCst)
            > failed_before;
        if refused {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(
        refused,
        "the origin refused the handshake without a client certificate"
    );
}

#[tokio::test]
async fn cert_alt_is_served_to_clients_that_cannot_use_the_primary_key() {
    let origin = Origin::start("a").await;
    let ca = TestCa::new("Alt CA");
    let ecdsa = ca.issue(&["dual.test"]);
    let ed = ca.issue_ed25519("dual.test");
    let cfg = format!(
        "_format_version: \"3.0\"\ncertificates:\n  - cert: {}\n    key: {}\n    cert_alt: {}\n    key_alt: {}\n    snis: [dual.test]\nservices:\n  - name: svc\n    url: {}\n    routes:\n      - name: all\n        paths: [/]\n",
        yaml_str(&ecdsa.cert_pem),
        yaml_str(&ecdsa.key_pem),
        yaml_str(&ed.cert_pem),
        yaml_str(&ed.key_pem),
        origin.url()
    );
    let gw = Gw::start(&cfg).await;
    // A client that can verify ECDSA gets the primary certificate...
    let s = tls_connect(
        gw.tls,
        "dual.test",
        client_offering(&[rustls::SignatureScheme::ECDSA_NISTP256_SHA256]),
    )
    .await
    .unwrap();
    assert_eq!(peer_leaf(&s), ecdsa.der);
    // ...one that only verifies Ed25519 gets the alternate.
    let s = tls_connect(
        gw.tls,
        "dual.test",
        client_offering(&[rustls::SignatureScheme::ED25519]),
    )
    .await
    .unwrap();
    assert_eq!(peer_leaf(&s), ed.der);
    let r = send_h1(s, "GET", "/", &[("host", "dual.test")], b"")
        .await
        .unwrap();
    assert_status(&r, 200);
}

#[tokio::test]
async fn active_https_health_checks_probe_over_tls() {
    let ca = TestCa::new("Upstream CA");
    let leaf = ca.issue(&["127.0.0.1", "localhost"]);
    let tls_origin = TlsOrigin::start("tls", &leaf, None).await;
    // A plain-HTTP server: a TLS probe to it fails, so it must be marked unhealthy.
    let plain = Origin::start("plain").await;
    let cfg = format!(
        r#"_format_version: "3.0"
upstreams:
  - name: backend
    healthchecks:
      active:
        type: https
        http_path: /health
        https_verify_certificate: false
        healthy: {{interval: 0.2, successes: 1}}
        unhealthy: {{interval: 0.2, tcp_failures: 1, http_failures: 1, timeouts: 1}}
    targets:
      - target: 127.0.0.1:{}
      - target: 127.0.0.1:{}
services:
  - name: svc
    protocol: https
    host: backend
    tls_verify: false
    routes:
      - name: r
        paths: [/]
"#,
        tls_origin.port(),
        plain.port()
    );
    let gw = Gw::start(&cfg).await;
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    // Probes reached the TLS target over TLS, without any client traffic yet.
    // (The echo origin answers /health without counting it as a hit.)
    assert!(
        tls_origin
            .handshakes
            .load(std::sync::atomic::Ordering::SeqCst)
            > 0
    );
    assert_eq!(tls_origin.hits(), 0);
    assert_eq!(plain.hits(), 0, "a TLS probe must not speak plain HTTP");
    assert!(gw.logs().contains("marked unhealthy"), "{}", gw.logs());
    let before = tls_origin.hits();
    for _ in 0..6 {
        assert_status(&gw.get("/").await, 200);
    }
    assert!(tls_origin.hits() >= before + 6);
    assert_eq!(plain.hits(), 0);
}

/// A route's `snis` (Kong's traditional_compatible: `net.protocol != "https" || tls.sni ...`):
/// over TLS the client's SNI must match, and a TLS client naming no server matches no route
/// with snis; plain-text requests ignore them.
#[tokio::test]
async fn route_snis_match_the_tls_server_name() {
    let ca = TestCa::new("portcullis test CA");
    let a = ca.issue(&["a.test"]);
    let origin = Origin::start("tls").await;
    let gw = Gw::start(&format!(
        "_format_version: \"3.0\"\ncertificates:\n{}services:\n  - name: svc\n    url: {}\n    routes:\n      - name: by-sni\n        paths: [/s]\n        snis: [a.test]\n",
        cert_entity(CERT_A, &a, &["a.test"]),
        origin.url()
    ))
    .await;
    let any = client_config(None, &["http/1.1"], all_versions());
    let s = tls_connect(gw.tls, "a.test", any.clone()).await.unwrap();
    let r = send_h1(s, "GET", "/s", &[("host", "a.test")], b"")
        .await
        .unwrap();
    assert_status(&r, 200);
    // Another name, and no name at all ("127.0.0.1": rustls sends no SNI for an address).
    for name in ["b.test", "127.0.0.1"] {
        let s = tls_connect(gw.tls, name, any.clone()).await.unwrap();
        let r = send_h1(s, "GET", "/s", &[("host", "a.test")], b"")
            .await
            .unwrap();
        assert_status(&r, 404);
    }
    assert_status(&gw.get("/s").await, 200);
    assert_eq!(origin.hits(), 2);
}
