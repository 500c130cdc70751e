//! WebSocket tunnelling and gRPC over HTTP/2 through the real binary.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::tls::*;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WS_REQUEST: &str = "GET /ws/chat HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// Reads a response head (up to and including the blank line), nothing more.
async fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(STEP, s.read(&mut byte))
            .await
            .expect("response head timed out")
            .expect("read response head");
        assert!(
            n == 1,
            "connection closed mid-head: {:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    String::from_utf8(head).expect("response head is UTF-8")
}

async fn read_exact(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    tokio::time::timeout(STEP, s.read_exact(&mut buf))
        .await
        .expect("tunnel read timed out")
        .expect("read from tunnel");
    buf
}

#[tokio::test]
async fn websocket_upgrade_is_tunnelled_both_ways() {
    let origin = Origin::start("ws").await;
    let gw = Gw::start(&one_service(
        &origin.url(),
        "      - name: ws\n        paths: [/ws]\n",
    ))
    .await;

    let mut s = TcpStream::connect(gw.proxy).await.unwrap();
    s.write_all(WS_REQUEST.as_bytes()).await.unwrap();
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("\r\nupgrade: websocket\r\n"), "{head}");
    assert!(lower.contains("\r\nconnection: upgrade\r\n"), "{head}");
    // The upstream's hop-by-hop headers stay on its hop.
    assert!(!lower.contains("x-up-hop"), "{head}");
    assert!(!lower.contains("keep-alive"), "{head}");
    // A relayed response like any other: Kong's latency headers and the request id.
    assert!(lower.contains("\r\nx-kong-upstream-latency: "), "{head}");
    assert!(lower.contains("\r\nx-kong-proxy-latency: "), "{head}");
    assert!(lower.contains("\r\nx-request-id: "), "{head}");
    assert!(!lower.contains("x-kong-response-latency"), "{head}");
    assert_eq!(origin.hits(), 1);

    // Bytes flow through the tunnel unchanged, including ones that are not valid HTTP.
    for payload in [
        b"hello through the tunnel".to_vec(),
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),
        (0..=255u8).collect::<Vec<u8>>(),
    ] {
        s.write_all(&payload).await.unwrap();
        assert_eq!(read_exact(&mut s, payload.len()).await, payload);
    }
    // The tunnel is not parsed as HTTP: the origin saw a single request.
    assert_eq!(origin.hits(), 1);

    // Closing our side ends the tunnel: the gateway closes towards us too.
    s.shutdown().await.unwrap();
    let mut rest = Vec::new();
    let n = tokio::time::timeout(STEP, s.read_to_end(&mut rest))
        .await
        .expect("tunnel was not closed after the client finished")
        .unwrap();
    assert_eq!(n, 0, "unexpected bytes after close: {rest:?}");
}

#[tokio::test]
async fn websocket_to_a_dead_service_is_502_and_closes() {
    let dead = free_port();
    let gw = Gw::start(&one_service(
        &format!("http://127.0.0.1:{dead}"),
        "      - name: ws\n        paths: [/ws]\n",
    ))
    .await;
    let mut req = WS_REQUEST.as_bytes().to_vec();
    // Bytes sent before the answer must not be treated as a tunnel or a second request.
    req.extend_from_slice(b"early frame bytes");
    let (out, closed) = raw(gw.proxy, &req).await;
    assert_eq!(status_of(&out), 502, "{out}");
    assert!(
        out.contains(r#"{"message":"An invalid response was received from the upstream server","request_id":""#)
            && out.ends_with(r#""}"#),
        "{out}"
    );
    assert_eq!(out.matches("HTTP/1.1").count(), 1, "{out}");
    assert!(closed, "connection must be closed after a refused upgrade");
}

/// One gRPC service on the h2c origin, on a grpc-only route.
async fn grpc_gateway(origin: &GrpcOrigin) -> Gw {
    grpc_gateway_with(origin, "").await
}

/// [`grpc_gateway`] with more service fields (YAML lines indented for the service).
async fn grpc_gateway_with(origin: &GrpcOrigin, service_fields: &str) -> Gw {
    Gw::start(&format!(
        r#"_format_version: "3.0"
services:
  - name: grpc
    url: {}
{service_fields}    routes:
      - name: grpc
        protocols: [grpc]
        paths: [/pkg.Svc]
        strip_path: false
"#,
        origin.url()
    ))
    .await
}

#[tokio::test]
async fn grpc_over_h2c_is_proxied_with_trailers() {
    let origin = GrpcOrigin::start().await;
    let gw = grpc_gateway(&origin).await;
    let message = grpc_frame(b"\x0a\x05hello");

    let tcp = TcpStream::connect(gw.proxy).await.unwrap();
    let r = send_h2(
        tcp,
        "POST",
        "http://localhost/pkg.Svc/Method",
        &[
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            ("x-call", "1"),
        ],
        &message,
    )
    .await
    .unwrap();
    assert_eq!(r.version, hyper::Version::HTTP_2);
    assert_status(&r.reply, 200);
    assert_eq!(r.reply.header("content-type").unwrap(), "application/grpc");
    assert_eq!(r.reply.body.as_ref(), &message[..], "body echoed");
    let trailers = r.trailers.expect("trailers reach the client");
    assert_eq!(trailers.get("grpc-status").unwrap(), "0");
    assert_eq!(trailers.get("grpc-message").unwrap(), "ok");

    // What the upstream received: the full method path over HTTP/2, gRPC headers intact.
    let seen = origin.seen();
    assert_eq!(seen.len(), 1);
    let up = &seen[0];
    assert_eq!(up.version, hyper::Version::HTTP_2);
    assert_eq!(up.method, "POST");
    assert!(up.uri.ends_with("/pkg.Svc/Method"), "{}", up.uri);
    assert_eq!(up.body.as_ref(), &message[..]);
    assert_eq!(up.headers.get("content-type").unwrap(), "application/grpc");
    assert_eq!(up.headers.get("te").unwrap(), "trailers");
    assert_eq!(up.headers.get("x-call").unwrap(), "1");
    assert_eq!(up.headers.get("x-forwarded-proto").unwrap(), "http");
}

#[tokio::test]
async fn grpc_route_refuses_http1_and_non_grpc_requests() {
    let origin = GrpcOrigin::start().await;
    let gw = grpc_gateway(&origin).await;

    let r = request(
        gw.proxy,
        "POST",
        "/pkg.Svc/Method",
        &[("content-type", "application/grpc")],
        "x",
    )
    .await
    .unwrap();
    assert_status(&r, 426);
    assert_error_body(&r, "Please use HTTP2 protocol");

    let tcp = TcpStream::connect(gw.proxy).await.unwrap();
    let r = send_h2(
        tcp,
        "POST",
        "http://localhost/pkg.Svc/Method",
        &[("content-type", "application/json")],
        b"{}",
    )
    .await
    .unwrap();
    assert_status(&r.reply, 415);
    assert_error_body(&r.reply, "Non-gRPC request matched gRPC route");
    assert!(
        origin.seen().is_empty(),
        "refused requests never reach the upstream"
    );
}

#[tokio::test]
async fn a_stalled_http2_upstream_body_is_cut_at_the_read_timeout() {
    // The gRPC origin sends its data, then its trailers only after 5 s. With a 400 ms
    // read_timeout the gateway resets the stream long before, instead of holding it open.
    let origin = GrpcOrigin::start().await;
    let gw = grpc_gateway_with(&origin, "    read_timeout: 400\n").await;
    let message = grpc_frame(b"\x0a\x05hello");
    let call = |stall: &'static str| {
        let message = message.clone();
        let addr = gw.proxy;
        async move {
            let tcp = TcpStream::connect(addr).await.unwrap();
            send_h2(
                tcp,
                "POST",
                "http://localhost/pkg.Svc/Method",
                &[
                    ("content-type", "application/grpc"),
                    ("te", "trailers"),
                    ("x-stall-ms", stall),
                ],
                &message,
            )
            .await
        }
    };
    let started = std::time::Instant::now();
    let r = call("5000").await;
    let took = started.elapsed();
    assert!(
        r.is_err(),
        "a stalled stream completed: {:?}",
        r.map(|r| r.trailers)
    );
    assert!(
        took >= Duration::from_millis(350) && took < Duration::from_millis(2500),
        "{took:?}"
    );
    // Pauses shorter than the timeout are fine.
    let r = call("100").await.unwrap();
    assert_status(&r.reply, 200);
    assert_eq!(r.trailers.unwrap().get("grpc-status").unwrap(), "0");
}

/// The gateway's own answers to a gRPC client are sent as Kong's `kong.response.error` and
/// `exit` send them: the HTTP status kept, `grpc-status` and `grpc-message` headers, no body.
#[tokio::test]
async fn gateway_answers_to_grpc_clients_carry_grpc_status() {
    let origin = GrpcOrigin::start().await;
    let dead = free_port();
    let gw = Gw::start(&format!(
        r#"_format_version: "3.0"
services:
  - name: grpc
    url: {}
    routes:
      - name: locked
        protocols: [grpc]
        paths: [/pkg.Locked]
        strip_path: false
        plugins: [{{name: key-auth}}]
      - name: closed
        protocols: [grpc]
        paths: [/pkg.Closed]
        strip_path: false
        plugins: [{{name: request-termination, config: {{status_code: 403, message: "closed for now"}}}}]
  - name: down
    url: http://127.0.0.1:{dead}
    retries: 0
    routes:
      - name: down
        protocols: [grpc]
        paths: [/pkg.Down]
        strip_path: false
"#,
        origin.url()
    ))
    .await;
    let call = |path: &'static str| {
        let addr = gw.proxy;
        async move {
            let tcp = TcpStream::connect(addr).await.unwrap();
            send_h2(
                tcp,
                "POST",
                &format!("http://localhost{path}"),
                &[("content-type", "application/grpc"), ("te", "trailers")],
                &grpc_frame(b"\x0a\x01x"),
            )
            .await
            .unwrap()
            .reply
        }
    };
    // kong.response.error (key-auth, no route): the status name, typed application/grpc.
    for (path, status, code, name) in [
        ("/pkg.Locked/M", 401, "16", "Unauthenticated"),
        ("/other.Svc/M", 404, "5", "NotFound"),
    ] {
        let r = call(path).await;
        assert_status(&r, status);
        assert_eq!(r.header("grpc-status").as_deref(), Some(code), "{path}");
        assert_eq!(r.header("grpc-message").as_deref(), Some(name), "{path}");
        assert_eq!(
            r.header("content-type").as_deref(),
            Some("application/grpc"),
            "{path}"
        );
        assert!(r.body.is_empty(), "{path}: {:?}", r.body);
    }
    // kong.response.exit with a message (request-termination), and an upstream failure
    // (Kong's error page): the message itself.
    let r = call("/pkg.Closed/M").await;
    assert_status(&r, 403);
    assert_eq!(r.header("grpc-status").as_deref(), Some("7"));
    assert_eq!(r.header("grpc-message").as_deref(), Some("closed for now"));
    assert!(r.body.is_empty());
    let r = call("/pkg.Down/M").await;
    assert_status(&r, 502);
    assert_eq!(r.header("grpc-status").as_deref(), Some("13"));
    assert_eq!(
        r.header("grpc-message").as_deref(),
        Some("An invalid response was received from the upstream server")
    );
    assert!(origin.seen().is_empty());
}
