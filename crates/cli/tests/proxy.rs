//! Proxying through the real binary: URIs, headers, errors, protocols, plugins.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;

#[tokio::test]
async fn proxies_with_strip_path_and_query_untouched() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&format!(
        r#"_format_version: "3.0"
services:
  - name: svc
    url: {}/base
    routes:
      - name: r
        paths: ["/api"]
"#,
        origin.url()
    ))
    .await;
    let r = gw.get("/api/items?x=1&y=%20z").await;
    assert_status(&r, 200);
    let echo = r.json();
    assert_eq!(echo["uri"], "/base/items?x=1&y=%20z");
    assert_eq!(echo["method"], "GET");
    // Host is the upstream's host:port unless preserve_host.
    assert_eq!(
        r.upstream_header("host").unwrap(),
        format!("127.0.0.1:{}", origin.port())
    );
    assert_eq!(r.upstream_header("x-forwarded-for").unwrap(), "127.0.0.1");
    assert_eq!(r.upstream_header("x-real-ip").unwrap(), "127.0.0.1");
    assert_eq!(r.upstream_header("x-forwarded-proto").unwrap(), "http");
    assert_eq!(r.upstream_header("x-forwarded-host").unwrap(), "localhost");
    assert_eq!(
        r.upstream_header("x-forwarded-port").unwrap(),
        gw.proxy.port().to_string()
    );
    assert_eq!(r.upstream_header("x-forwarded-path").unwrap(), "/api/items");
    assert_eq!(r.upstream_header("x-forwarded-prefix").unwrap(), "/api");
    // Hop-by-hop headers from the upstream never reach the client.
    assert!(r.header("x-hop").is_none());
    assert!(r.header("x-kong-upstream-latency").is_some());
}

#[tokio::test]
async fn strip_path_false_and_preserve_host() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&one_service(
        &origin.url(),
        "      - name: r\n        paths: [/keep]\n        strip_path: false\n        preserve_host: true\n",
    ))
    .await;
    let r = get(gw.proxy, "/keep/x", &[("host", "api.example.com")])
        .await
        .unwrap();
    assert_status(&r, 200);
    assert_eq!(r.json()["uri"], "/keep/x");
    assert_eq!(r.upstream_header("host").unwrap(), "api.example.com");
}

#[tokio::test]
async fn no_route_is_404_with_kong_message() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&one_service(
        &origin.url(),
        "      - name: r\n        paths: [/only]\n",
    ))
    .await;
    let r = gw.get("/other").await;
    assert_status(&r, 404);
    assert_error_body(&r, "no Route matched with those values");
    assert_eq!(
        r.header("content-type").unwrap(),
        "application/json; charset=utf-8"
    );
}

#[tokio::test]
async fn hosts_methods_headers_route_matching() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&format!(
        r#"_format_version: "3.0"
services:
  - name: svc
    url: {}
    routes:
      - name: wildcard
        hosts: ["*.example.com"]
        paths: [/]
      - name: exact
        hosts: ["api.example.com"]
        paths: [/]
      - name: post-only
        methods: [POST]
        paths: [/m]
      - name: by-header
        headers: {{x-version: ["v2"]}}
        paths: [/h]
    plugins: []
"#,
        origin.url()
    ))
    .await;
    let r = get(gw.proxy, "/", &[("host", "api.example.com")])
        .await
        .unwrap();
    assert_status(&r, 200);
    let r = get(gw.proxy, "/", &[("host", "www.example.com")])
        .await
        .unwrap();
    assert_status(&r, 200);
    let r = get(gw.proxy, "/", &[("host", "example.org")])
        .await
        .unwrap();
    assert_status(&r, 404);
    assert_status(
        &request(gw.proxy, "POST", "/m", &[], "x").await.unwrap(),
        200,
    );
    assert_status(&request(gw.proxy, "GET", "/m", &[], "").await.unwrap(), 404);
    assert_status(
        &get(gw.proxy, "/h", &[("x-version", "V2")]).await.unwrap(),
        200,
    );
    assert_status(
        &get(gw.proxy, "/h", &[("x-version", "v1")]).await.unwrap(),
        404,
    );
}

#[tokio::test]
async fn spoofed_forwarded_headers_are_replaced_for_untrusted_peers() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&one_service(
        &origin.url(),
        "      - name: r\n        paths: [/]\n",
    ))
    .await;
    let r = get(
        gw.proxy,
        "/",
        &[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-real-ip", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.test"),
            ("x-forwarded-prefix", "/evil"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(r.upstream_header("x-forwarded-for").unwrap(), "127.0.0.1");
    assert_eq!(r.upstream_header("x-real-ip").unwrap(), "127.0.0.1");
    assert_eq!(r.upstream_header("x-forwarded-proto").unwrap(), "http");
    assert_eq!(r.upstream_header("x-forwarded-host").unwrap(), "localhost");
    assert!(r.upstream_header("x-forwarded-prefix").is_none());
}

#[tokio::test]
async fn trusted_peers_may_forward_client_addresses() {
    let origin = Origin::start("a").await;
    let gw = Gw::start_with(
        &one_service(&origin.url(), "      - name: r\n        paths: [/]\n"),
        "trusted_ips = [\"127.0.0.0/8\"]\n",
    )
    .await;
    let r = get(
        gw.proxy,
        "/",
        &[
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-proto", "https"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(r.upstream_header("x-real-ip").unwrap(), "203.0.113.9");
    assert_eq!(
        r.upstream_header("x-forwarded-for").unwrap(),
        "203.0.113.9, 127.0.0.1"
    );
    assert_eq!(r.upstream_header("x-forwarded-proto").unwrap(), "https");
}

#[tokio::test]
async fn hop_by_hop_request_headers_are_removed() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&one_service(
        &origin.url(),
        "      - name: r\n        paths: [/]\n",
    ))
    .await;
    let r = get(
        gw.proxy,
        "/",
        &[
            ("connection", "keep-alive, x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("proxy-connection", "x"),
            ("x-kept", "yes"),
        ],
    )
    .await
    .unwrap();
    for h in [
        "x-secret",
        "keep-alive",
        "te",
        "proxy-connection",
        "connection",
    ] {
        assert!(r.upstream_header(h).is_none(), "{h} was forwarded");
    }
    assert_eq!(r.upstream_header("x-kept").unwrap(), "yes");
}

#[tokio::test]
async fn https_only_route_over_http_gets_426_or_redirect() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&one_service(
        &origin.url(),
        "      - name: r\n        paths: [/secure]\n        protocols: [https]\n      - name: moved\n        paths: [/moved]\n        protocols: [https]\n        https_redirect_status_code: 301\n",
    ))
    .await;
    let r = gw.get("/secure").await;
    assert_status(&r, 426);
    assert_eq!(r.json()["message"], "Please use HTTPS protocol");
    assert_eq!(r.header("upgrade").unwrap(), "TLS/1.2, HTTP/1.1");
    assert_eq!(
        r.header("connection").unwrap().to_ascii_lowercase(),
        "upgrade"
    );
    let r = gw.get("/moved/x?q=1").await;
    assert_status(&r, 301);
    assert_eq!(
        r.header("location").unwrap(),
        "https://localhost/moved/x?q=1"
    );
    assert!(
        r.body.is_empty(),
        "Kong redirects without a body: {:?}",
        r.text()
    );
    // Headers of an untrusted client change nothing.
    let r = get(
        gw.proxy,
        "/moved/x",
        &[
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
        ],
    )
    .await
    .unwrap();
    assert_status(&r, 301);
    assert_eq!(r.header("location").unwrap(), "https://localhost/moved/x");
}

#[tokio::test]
async fn https_only_route_behind_a_trusted_tls_terminator() {
    let origin = Origin::start("a").await;
    let gw = Gw::start_with(
        &one_service(
            &origin.url(),
            "      - name: r\n        paths: [/secure]\n        protocols: [https]\n      - name: moved\n        paths: [/moved]\n        protocols: [https]\n        https_redirect_status_code: 308\n",
        ),
        "trusted_ips = [\"127.0.0.1/32\"]\n",
    )
    .await;
    // The load balancer in front says the client used https: proxied, as Kong does.
    let r = get(gw.proxy, "/secure/a", &[("x-forwarded-proto", "https")])
        .await
        .unwrap();
    assert_status(&r, 200);
    assert_eq!(r.upstream_header("x-forwarded-proto").unwrap(), "https");
    // Plain http through it: redirected to the host the client asked the balancer for.
    let r = get(
        gw.proxy,
        "/moved/b?x=1",
        &[
            ("x-forwarded-proto", "http"),
            ("x-forwarded-host", "shop.example"),
        ],
    )
    .await
    .unwrap();
    assert_status(&r, 308);
    assert_eq!(
        r.header("location").unwrap(),
        "https://shop.example/moved/b?x=1"
    );
    let r = gw.get("/secure/a").await;
    assert_status(&r, 426);
    // A forwarded host that is not a plain host[:port] is not put in Location.
    for bad in ["evil.example/x", "a@evil.example", ""] {
        let r = get(
            gw.proxy,
            "/moved/c",
            &[("x-forwarded-proto", "http"), ("x-forwarded-host", bad)],
        )
        .await
        .unwrap();
        assert_status(&r, 308);
        assert_eq!(
            r.header("location").unwrap(),
            "https://localhost/moved/c",
            "{bad}"
        );
    }
}

#[tokio::test]
async fn strip_path_leaves_no_dot_segment_to_climb_out_of_the_service_path() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&one_service(
        &format!("{}/api/v1/public", origin.url()),
        "      - name: r\n        paths: [/pub]\n",
    ))
    .await;
    for (req, want) in [
        ("/pub../admin", "/api/v1/public/admin"),
        ("/pub%2e%2e/admin", "/api/v1/public/admin"),
        ("/pub./x", "/api/v1/public/x"),
        ("/pub..", "/api/v1/public"),
        ("/pub..;/admin", "/api/v1/public/admin"),
        ("/pub/x", "/api/v1/public/x"),
    ] {
        let r = gw.get(req).await;
        assert_status(&r, 200);
        assert_eq!(r.json()["uri"], want, "{req}");
    }
}

#[tokio::test]
async fn a_client_proxy_header_is_not_forwarded() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&one_service(
        &origin.url(),
        "      - name: r\n        paths: [/]\n",
    ))
    .await;
    let r = get(
        gw.proxy,
        "/",
        &[("proxy", "http://attacker.example:3128"), ("x-kept", "yes")],
    )
    .await
    .unwrap();
    assert_status(&r, 200);
    assert!(r.upstream_header("proxy").is_none());
    assert_eq!(r.upstream_header("x-kept").unwrap(), "yes");
}

#[tokio::test]
async fn upstream_failures_map_to_502_503_504_without_internals() {
    let origin = Origin::start("a").await;
    let dead = free_port();
    let gw = Gw::start(&format!(
        r#"_format_version: "3.0"
services:
  - name: dead
    url: http://127.0.0.1:{dead}
    retries: 1
    routes: [{{name: dead, paths: [/dead]}}]
  - name: slow
    url: {}
    read_timeout: 200
    retries: 0
    routes: [{{name: slow, paths: [/slow], strip_path: false}}]
  - name: empty
    host: nobody
    routes: [{{name: empty, paths: [/empty]}}]
  - name: unresolvable
    url: http://no-such-host.invalid:8080
    retries: 0
    routes: [{{name: unresolvable, paths: [/nxdomain]}}]
upstreams:
  - name: nobody
"#,
        origin.url()
    ))
    .await;
    let r = gw.get("/dead").await;
    assert_status(&r, 502);
    assert_error_body(
        &r,
        "An invalid response was received from the upstream server",
    );
    assert!(!r.text().contains(&dead.to_string()));
    let r = gw.get("/slow/delay/2000").await;
    assert_status(&r, 504);
    assert_eq!(r.json()["message"], "The upstream server is timing out");
    let r = gw.get("/empty").await;
    assert_status(&r, 503);
    assert_eq!(
        r.json()["message"],
        "failure to get a peer from the ring-balancer"
    );
    // A host name that does not resolve (.invalid never does): Kong's 503.
    let r = gw.get("/nxdomain").await;
    assert_status(&r, 503);
    assert_error_body(&r, "name resolution failed");
}

#[tokio::test]
async fn request_termination_plugin_short_circuits() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&format!(
        r#"_format_version: "3.0"
services:
  - name: svc
    url: {}
    routes:
      - name: closed
        paths: [/closed]
        plugins:
          - name: request-termination
            config: {{status_code: 403, message: "go away"}}
      - name: open
        paths: [/open]
      - name: echo
        paths: [/echo]
        plugins:
          - name: request-termination
            config: {{status_code: 200, echo: true}}
plugins:
  - name: request-termination
    config: {{status_code: 418, trigger: x-stop}}
"#,
        origin.url()
    ))
    .await;
    let r = gw.get("/closed").await;
    assert_status(&r, 403);
    // Kong's request-termination answers with kong.response.exit: no request id in the body.
    assert_eq!(r.json(), serde_json::json!({"message": "go away"}));
    assert_status(&gw.get("/open").await, 200);
    let r = get(gw.proxy, "/open", &[("x-stop", "1")]).await.unwrap();
    assert_status(&r, 418);
    // No message configured and none of Kong's defaults for 418: no body, as in Kong.
    assert_eq!(r.text(), "");
    assert_eq!(r.header("content-type"), None);
    // echo: the request as Kong's plugin describes it, body included.
    let r = request(
        gw.proxy,
        "POST",
        "/echo/x?a=1",
        &[
            ("content-type", "application/json"),
            ("authorization", "Basic c2VjcmV0"),
        ],
        r#"{"k":[1,"v"]}"#,
    )
    .await
    .unwrap();
    assert_status(&r, 200);
    let v = r.json();
    assert_eq!(v["request"]["method"], "POST");
    assert_eq!(v["request"]["path"], "/echo/x");
    assert_eq!(v["request"]["query"], serde_json::json!({"a": "1"}));
    assert_eq!(v["request"]["raw_body"], r#"{"k":[1,"v"]}"#);
    assert_eq!(v["request"]["body"], serde_json::json!({"k": [1, "v"]}));
    assert_eq!(v["matched_route"]["name"], "echo");
    assert_eq!(v["request"]["headers"]["authorization"], "REDACTED");
    assert_eq!(
        origin.hits(),
        1,
        "terminated requests never reach the upstream"
    );
}

#[tokio::test]
async fn path_traversal_is_normalised_before_routing() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&format!(
        r#"_format_version: "3.0"
services:
  - name: svc
    url: {}
    routes:
      - name: public
        paths: [/public]
        strip_path: false
      - name: admin
        paths: [/admin]
        strip_path: false
        plugins: [{{name: request-termination, config: {{status_code: 401, message: "auth required"}}}}]
"#,
        origin.url()
    ))
    .await;
    for p in [
        "/public/../admin",
        "/public/%2e%2e/admin",
        "/%61dmin",
        "//admin",
        "/./admin",
        "/public/.%2E/admin/x",
    ] {
        let r = gw.get(p).await;
        assert_status(&r, 401);
    }
    let r = gw.get("/public/x/../y").await;
    assert_status(&r, 200);
    assert_eq!(r.json()["uri"], "/public/y");
    assert_status(&gw.get("/admin%00.json").await, 400);
}

#[tokio::test]
async fn responses_are_hardened_and_carry_security_headers() {
    let origin = Origin::start("a").await;
    let cfg = one_service(&origin.url(), "      - name: r\n        paths: [/]\n");
    let gw = Gw::start_with(
        &cfg,
        "[security_headers]\nx-content-type-options = \"nosniff\"\nstrict-transport-security = \"max-age=63072000\"\n",
    )
    .await;
    let r = get(
        gw.proxy,
        "/",
        &[
            ("x-echo-response-server", "Apache/2.4.1 (Unix)"),
            ("x-echo-response-x-powered-by", "PHP/5.6"),
            ("x-echo-response-x-content-type-options", "upstream-value"),
            ("x-echo-response-x-custom", "kept"),
        ],
    )
    .await
    .unwrap();
    assert_status(&r, 200);
    assert!(r.header("server").is_none());
    assert!(r.header("x-powered-by").is_none());
    assert_eq!(r.header("x-custom").unwrap(), "kept");
    // The upstream's own value wins; missing ones are added, also on gateway answers.
    assert_eq!(
        r.header("x-content-type-options").unwrap(),
        "upstream-value"
    );
    assert_eq!(
        r.header("strict-transport-security").unwrap(),
        "max-age=63072000"
    );
    let r = gw.get("/nowhere/../..").await;
    assert_eq!(r.header("x-content-type-options").unwrap(), "nosniff");

    // Hardening can be switched off.
    let gw = Gw::start_with(&cfg, "response_hardening = false\n").await;
    let r = get(gw.proxy, "/", &[("x-echo-response-server", "Apache")])
        .await
        .unwrap();
    assert_eq!(r.header("server").unwrap(), "Apache");
}

/// An upstream that answers the first request on each connection, then reads the second one
/// and closes without answering (a crash after processing). Counts POSTs it received.
async fn drops_second_request() -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let posts = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let p = posts.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                break;
            };
            let p = p.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                for n in 0.. {
                    // Read one request head and its Content-Length body.
                    let head_end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        let mut chunk = [0u8; 4096];
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(k) => buf.extend_from_slice(&chunk[..k]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    while buf.len() < head_end + len {
                        let mut chunk = [0u8; 4096];
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(k) => buf.extend_from_slice(&chunk[..k]),
                        }
                    }
                    buf.drain(..head_end + len);
                    if head.starts_with("post") {
                        p.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    if n == 1 {
                        return; // processed, then gone without an answer
                    }
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                        .await;
                }
            });
        }
    });
    (port, posts)
}

#[tokio::test]
async fn a_sent_post_is_not_replayed_when_a_pooled_connection_dies() {
    let (port, posts) = drops_second_request().await;
    let cfg = one_service(
        &format!("http://127.0.0.1:{port}"),
        "      - name: r\n        paths: [/]\n",
    );
    let gw = Gw::start(&cfg).await;
    // First request pools the connection; the POST goes out on it and the upstream dies.
    assert_status(&gw.get("/").await, 200);
    let r = request(
        gw.proxy,
        "POST",
        "/pay",
        &[("content-type", "text/plain")],
        "amount=100",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(
        posts.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the POST was replayed"
    );
    // An idempotent GET in the same situation is retried once on a fresh connection.
    let (port, _) = drops_second_request().await;
    let cfg = one_service(
        &format!("http://127.0.0.1:{port}"),
        "      - name: r\n        paths: [/]\n",
    );
    let gw = Gw::start(&cfg).await;
    assert_status(&gw.get("/").await, 200);
    assert_status(&gw.get("/again").await, 200);
}

#[tokio::test]
async fn a_client_cannot_strip_gateway_headers_or_spoof_routing_headers() {
    let origin = Origin::start("a").await;
    let cfg = format!(
        r#"_format_version: "3.0"
consumers:
  - username: guest
services:
  - name: svc
    url: {}
    routes:
      - name: r
        paths: [/]
        plugins:
          - name: key-auth
            config: {{anonymous: guest}}
"#,
        origin.url()
    );
    let gw = Gw::start(&cfg).await;
    let r = get(
        gw.proxy,
        "/",
        &[
            (
                "connection",
                "keep-alive, X-Anonymous-Consumer, X-Request-Id, X-Consumer-Username",
            ),
            ("forwarded", "for=127.0.0.1;host=admin.internal"),
            ("x-original-url", "/admin"),
            ("x-rewrite-url", "/admin"),
        ],
    )
    .await
    .unwrap();
    assert_status(&r, 200);
    // The gateway's own headers survive whatever the client's Connection header names.
    assert_eq!(r.upstream_header("x-anonymous-consumer").unwrap(), "true");
    assert_eq!(r.upstream_header("x-consumer-username").unwrap(), "guest");
    assert_eq!(r.upstream_header("x-request-id").unwrap().len(), 32);
    // Routing headers from an untrusted client do not reach the upstream.
    assert!(r.upstream_header("forwarded").is_none());
    assert!(r.upstream_header("x-original-url").is_none());
    assert!(r.upstream_header("x-rewrite-url").is_none());

    // An absolute-form target decides the Host the upstream sees.
    let (resp, _) = raw(
        gw.proxy,
        b"GET http://public.example/x HTTP/1.1\r\nHost: internal.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&resp), 200, "{resp}");
    assert!(
        resp.contains("\"x-forwarded-host\":[\"public.example\"]"),
        "{resp}"
    );
    assert!(!resp.contains("internal.example"), "{resp}");
}

#[tokio::test]
async fn forwarded_for_walks_stop_at_entries_that_do_not_parse() {
    let origin = Origin::start("a").await;
    let cfg = one_service(&origin.url(), "      - name: r\n        paths: [/]\n");
    let gw = Gw::start_with(&cfg, "trusted_ips = [\"127.0.0.1/32\", \"10.0.0.0/8\"]\n").await;
    // A trusted balancer appending ip:port: the port form is understood.
    let r = get(
        gw.proxy,
        "/",
        &[("x-forwarded-for", "10.9.9.9, 203.0.113.7:51234")],
    )
    .await
    .unwrap();
    assert_eq!(r.upstream_header("x-real-ip").unwrap(), "203.0.113.7");
    // A client-written entry left of garbage never becomes the address.
    let r = get(
        gw.proxy,
        "/",
        &[("x-forwarded-for", "198.51.100.1, not-an-ip, 10.1.1.1")],
    )
    .await
    .unwrap();
    assert_eq!(r.upstream_header("x-real-ip").unwrap(), "10.1.1.1");
    // Every X-Forwarded-For line of a trusted peer is kept, then the peer is appended.
    let r = get(
        gw.proxy,
        "/",
        &[
            ("x-forwarded-for", "198.51.100.2"),
            ("x-forwarded-for", "10.2.2.2"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        r.upstream_header("x-forwarded-for").unwrap(),
        "198.51.100.2, 10.2.2.2, 127.0.0.1"
    );
    assert_eq!(r.upstream_header("x-real-ip").unwrap(), "198.51.100.2");
}

/// The connection's ready-made forwarded lines apply only to the port the client connected
/// to; a Host naming another port gets that port, and either way each header is sent once.
#[tokio::test]
async fn forwarded_port_is_the_listening_port_and_each_header_is_sent_once() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&one_service(
        &origin.url(),
        "      - name: r\n        paths: [/]\n",
    ))
    .await;
    // Kong's X-Forwarded-Port is the port the gateway listens on (`server_port`), whatever
    // port the client wrote in Host: a client must not choose it.
    for host in [
        format!("localhost:{}", gw.proxy.port()),
        "localhost:9443".to_string(),
    ] {
        let port = gw.proxy.port();
        let r = get(
            gw.proxy,
            "/",
            &[
                ("host", host.as_str()),
                ("x-forwarded-for", "6.6.6.6"),
                ("x-forwarded-port", "1"),
                ("x-real-ip", "6.6.6.6"),
            ],
        )
        .await
        .unwrap();
        assert_status(&r, 200);
        assert_eq!(
            r.upstream_header("x-forwarded-port").unwrap(),
            port.to_string()
        );
        assert_eq!(r.upstream_header("x-forwarded-for").unwrap(), "127.0.0.1");
        assert_eq!(r.upstream_header("x-real-ip").unwrap(), "127.0.0.1");
        assert_eq!(r.upstream_header("x-forwarded-proto").unwrap(), "http");
        assert_eq!(r.upstream_header("x-forwarded-host").unwrap(), "localhost");
    }
}

#[tokio::test]
async fn characters_kong_escapes_in_the_upstream_path_are_percent_encoded() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&one_service(
        &origin.url(),
        "      - name: r\n        paths: [/]\n",
    ))
    .await;
    let (out, _) = raw(
        gw.proxy,
        b"GET /p|q{x}^\"y?k=a|b HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&out), 200, "{out}");
    let body = &out[out.find("\r\n\r\n").unwrap() + 4..];
    let echo: serde_json::Value = serde_json::from_str(body).unwrap();
    // The path is escaped as Kong's uri.escape does; the query goes as it came.
    assert_eq!(echo["uri"], "/p%7Cq%7Bx%7D%5E%22y?k=a|b");
}

/// Kong routes by the decoded path: escapes of non-reserved characters (UTF-8 text, space,
/// braces) are decoded before matching, so a route written `/café` takes `/caf%C3%A9`; the
/// upstream gets them encoded again, reserved escapes untouched. Raw non-ASCII bytes in the
/// request line are refused (400), as RFC 9112 allows; nginx would take them.
#[tokio::test]
async fn non_ascii_route_paths_match_encoded_and_raw_requests() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&one_service(
        &origin.url(),
        "      - name: r\n        paths: [\"/café\"]\n        strip_path: false\n      - name: rx\n        paths: [\"~/ünï$\"]\n      - name: sp\n        paths: [\"/with space\"]\n",
    ))
    .await;
    for (target, upstream) in [
        ("/caf%C3%A9/a%20b%7b%2F", "/caf%C3%A9/a%20b%7B%2F"),
        ("/caf%c3%a9", "/caf%C3%A9"),
    ] {
        let req = format!("GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        let (out, _) = raw(gw.proxy, req.as_bytes()).await;
        assert_eq!(status_of(&out), 200, "{target}: {out}");
        let body = &out[out.find("\r\n\r\n").unwrap() + 4..];
        let echo: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(echo["uri"], upstream, "{target}");
    }
    assert_status(&gw.get("/%C3%BCn%C3%AF").await, 200);
    assert_status(&gw.get("/with%20space/x").await, 200);
    let (out, _) = raw(
        gw.proxy,
        "GET /café HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".as_bytes(),
    )
    .await;
    assert_eq!(status_of(&out), 400, "{out}");
    // An escape that is not UTF-8 stays escaped: it is not `/café`.
    assert_status(&gw.get("/caf%E9").await, 404);
}

fn headers_config(origin: &Origin) -> String {
    format!(
        r#"_format_version: "3.0"
services:
  - name: svc
    url: {}
    routes:
      - name: plain
        paths: ["/plain"]
      - name: transformed
        paths: ["/transformed"]
        plugins:
          - name: response-transformer
            config: {{add: {{headers: ["x-added:1"]}}}}
"#,
        origin.url()
    )
}

/// Kong's `headers` and `headers_upstream` settings, on routes relaying the upstream's header
/// lines (no plugins) and on routes whose plugins see the response map.
#[tokio::test]
async fn gateway_headers_follow_kongs_headers_settings() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&headers_config(&origin)).await;
    for path in ["/plain/status/201", "/transformed/status/201"] {
        let r = get(gw.proxy, path, &[("x-request-id", "forged")])
            .await
            .unwrap();
        assert_status(&r, 201);
        // Kong's defaults: server_tokens (never sent here), latency_tokens, the request id.
        assert!(r.header("x-kong-upstream-latency").is_some(), "{path}");
        assert!(r.header("x-kong-proxy-latency").is_some(), "{path}");
        assert!(r.header("x-kong-response-latency").is_none(), "{path}");
        assert!(r.header("x-kong-upstream-status").is_none(), "{path}");
        let id = r.header("x-request-id").unwrap();
        assert_eq!(id.len(), 32, "{path}");
        assert_eq!(r.upstream_header("x-request-id").unwrap(), id, "{path}");
    }
    // A response the gateway makes itself carries X-Kong-Response-Latency instead.
    let r = gw.get("/nowhere").await;
    assert_status(&r, 404);
    assert!(r.header("x-kong-response-latency").is_some());
    assert!(r.header("x-kong-upstream-latency").is_none());
    assert_eq!(r.header("x-request-id").unwrap().len(), 32);
    drop(gw);

    // `off` on both: none of the gateway's headers, and a client's request-id header does not
    // reach the upstream either (only the gateway's own id could have gone there). The
    // upstream's own copies of those names pass, as in Kong.
    let gw = Gw::start_with(
        &headers_config(&origin),
        "headers = \"off\"\nheaders_upstream = \"off\"\n",
    )
    .await;
    for path in ["/plain", "/transformed"] {
        let r = get(
            gw.proxy,
            path,
            &[
                ("x-request-id", "forged"),
                ("x-echo-response-x-kong-upstream-latency", "upstream's"),
            ],
        )
        .await
        .unwrap();
        assert_status(&r, 200);
        assert!(r.header("x-kong-proxy-latency").is_none(), "{path}");
        assert!(r.header("x-request-id").is_none(), "{path}");
        assert_eq!(r.header("x-kong-upstream-latency").unwrap(), "upstream's");
        assert!(r.upstream_header("x-request-id").is_none(), "{path}");
    }
    let r = gw.get("/nowhere").await;
    assert_status(&r, 404);
    assert!(r.header("x-kong-response-latency").is_none());
    assert!(r.header("x-request-id").is_none());
    // As in Kong, the error body still names the request id.
    assert_eq!(r.json()["request_id"].as_str().unwrap().len(), 32);
    drop(gw);

    // Single tokens, as a kong.conf line: the upstream's status only, request id upstream.
    let gw = Gw::start_with(
        &headers_config(&origin),
        "headers = \"X-Kong-Upstream-Status\"\n",
    )
    .await;
    for path in ["/plain/status/203", "/transformed/status/203"] {
        let r = get(
            gw.proxy,
            path,
            &[("x-echo-response-x-kong-upstream-status", "999")],
        )
        .await
        .unwrap();
        assert_status(&r, 203);
        assert_eq!(r.header("x-kong-upstream-status").unwrap(), "203", "{path}");
        assert!(r.header("x-kong-upstream-latency").is_none(), "{path}");
        assert!(r.header("x-request-id").is_none(), "{path}");
        assert_eq!(r.upstream_header("x-request-id").unwrap().len(), 32);
    }
}

#[tokio::test]
async fn bad_headers_setting_is_refused_at_start() {
    let err = refused_start(
        "_format_version: \"3.0\"\n",
        "headers = \"latency_tokens, X-Powered-By\"\n",
    );
    assert!(
        err.contains("headers: invalid entry 'X-Powered-By'"),
        "{err}"
    );
}

/// Kong's header criteria read `http.headers.x_api_version` through `ngx.req.get_headers`:
/// a request header spelled with `_` matches a route header spelled with `-`, and when both
/// are sent the `_` one is the one read (whatever its value's bytes).
#[tokio::test]
async fn route_header_names_match_with_dash_or_underscore() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&format!(
        r#"_format_version: "3.0"
services:
  - name: svc
    url: {}
    routes:
      - name: v2
        paths: [/h]
        headers: {{x-api-version: [v2]}}
"#,
        origin.url()
    ))
    .await;
    assert_status(
        &get(gw.proxy, "/h", &[("x-api-version", "v2")])
            .await
            .unwrap(),
        200,
    );
    assert_status(
        &get(gw.proxy, "/h", &[("x_api_version", "v2")])
            .await
            .unwrap(),
        200,
    );
    assert_status(
        &get(gw.proxy, "/h", &[("x-api-version", "v1")])
            .await
            .unwrap(),
        404,
    );
    let (out, _) = raw(
        gw.proxy,
        b"GET /h HTTP/1.1\r\nHost: t\r\nx_api_version: \xe9t\xe9\r\nx-api-version: v2\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&out), 404, "{out}");
    assert_eq!(origin.hits(), 2);
}
