//! The guard in front of a real hyper server, driven with raw bytes over an in-memory pipe.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

fn limits() -> Arc<Limits> {
    Arc::new(Limits {
        max_header_count: 100,
        max_header_bytes: 32 * 1024,
        max_uri_length: 8 * 1024,
        header_timeout: Duration::from_millis(300),
        keepalive_timeout: Duration::from_millis(300),
        body_timeout: Duration::from_millis(300),
    })
}

/// Sends `input`, returns everything the server wrote before closing.
async fn exchange(input: &[u8]) -> String {
    let (client, server) = tokio::io::duplex(1 << 20);
    let io = GuardedIo::new(server, limits(), Arc::new(UpgradeSignal::default()));
    tokio::spawn(async move {
        let svc = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
            let body = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(format!(
                "got {}",
                body.len()
            )))))
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .half_close(true)
            .serve_connection(hyper_util::rt::TokioIo::new(io), svc)
            .await;
    });
    let (mut r, mut w) = tokio::io::split(client);
    w.write_all(input).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), r.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn statuses(out: &str) -> Vec<u16> {
    out.match_indices("HTTP/1.1 ")
        .filter_map(|(i, _)| out.get(i + 9..i + 12)?.parse().ok())
        .collect()
}

#[tokio::test]
async fn plain_request_passes() {
    let out = exchange(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").await;
    assert_eq!(statuses(&out), vec![200], "{out}");
}

#[tokio::test]
async fn pipelined_then_bad_request_answers_both_in_order() {
    let out = exchange(b"GET / HTTP/1.1\r\nHost: t\r\n\r\nget / HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_eq!(statuses(&out), vec![200, 400], "{out}");
    assert!(out.ends_with(r#"{"message":"Bad request"}"#));
}

#[tokio::test]
async fn smuggling_and_framing_faults_get_400() {
    let cases: &[&[u8]] = &[
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 37\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: t\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.0\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nContent-Length: 26\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: +3\r\n\r\nabc",
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3, 3\r\n\r\nabc",
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length:\r\nContent-Length: 3\r\n\r\nabc",
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"get / HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET / HTTP/1.1\nHost: t\n\n",
        b"GET / HTTP/1.1\r\nX A: b\r\nHost: t\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: t\r\nX: a\r\n b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: t\r\nX: a\x00b\r\n\r\n",
        b"GET /admin#/public HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET * HTTP/1.1\r\nHost: t\r\n\r\n",
        b"CONNECT t:443 HTTP/1.1\r\nHost: t\r\n\r\n",
    ];
    for case in cases {
        let out = exchange(case).await;
        assert_eq!(
            statuses(&out),
            vec![400],
            "{:?} -> {out}",
            String::from_utf8_lossy(case)
        );
        assert!(out.contains("connection: close"));
    }
}

#[tokio::test]
async fn bad_chunks_get_400_and_never_complete_the_request() {
    for case in [
        &b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000003\r\nabc\r\n0\r\n\r\n"[..],
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3;x\nabc\r\n0\r\n\r\n",
    ] {
        let out = exchange(case).await;
        assert_eq!(statuses(&out), vec![400], "{:?} -> {out}", String::from_utf8_lossy(case));
        assert!(!out.contains("got "), "{out}");
    }
}

#[tokio::test]
async fn valid_chunked_and_length_bodies_pass() {
    let out = exchange(b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nPOST / HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi").await;
    assert_eq!(statuses(&out), vec![200, 200], "{out}");
    assert!(out.contains("got 3") && out.contains("got 2"), "{out}");
}

#[tokio::test]
async fn size_limits() {
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "a".repeat(9000));
    assert_eq!(statuses(&exchange(long_uri.as_bytes()).await), vec![414]);
    let big_header = format!(
        "GET / HTTP/1.1\r\nHost: t\r\nX: {}\r\n\r\n",
        "a".repeat(40_000)
    );
    assert_eq!(statuses(&exchange(big_header.as_bytes()).await), vec![431]);
    let mut many = String::from("GET / HTTP/1.1\r\nHost: t\r\n");
    for i in 0..150 {
        many.push_str(&format!("X-{i}: v\r\n"));
    }
    many.push_str("\r\n");
    assert_eq!(statuses(&exchange(many.as_bytes()).await), vec![431]);
}

#[tokio::test]
async fn slow_header_gets_408() {
    let (client, server) = tokio::io::duplex(4096);
    let io = GuardedIo::new(server, limits(), Arc::new(UpgradeSignal::default()));
    tokio::spawn(async move {
        let svc = service_fn(|_req| async {
            Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::new())))
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .half_close(true)
            .serve_connection(hyper_util::rt::TokioIo::new(io), svc)
            .await;
    });
    let (mut r, mut w) = tokio::io::split(client);
    w.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n").await.unwrap();
    let mut out = Vec::new();
    let res = tokio::time::timeout(Duration::from_secs(3), r.read_to_end(&mut out)).await;
    assert!(
        res.is_ok(),
        "connection must be closed by the header timeout"
    );
    let out = String::from_utf8_lossy(&out);
    assert_eq!(statuses(&out), vec![408], "{out}");
}

#[tokio::test]
async fn non_ascii_request_targets_get_400_without_a_panic() {
    for target in ["ééééé", "/é", "http://é.example/x", "h\u{e9}ttp://x/"] {
        let req = format!("GET {target} HTTP/1.1\r\nHost: a\r\n\r\n");
        let out = exchange(req.as_bytes()).await;
        assert_eq!(statuses(&out), vec![400], "{target}: {out}");
    }
}
