//! request-size-limiting through the real binary: declared and chunked bodies, before any
//! byte reaches the upstream.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;

fn config(origin: &str, plugin: &str) -> String {
    one_service(
        origin,
        &format!("      - name: r\n        paths: [/]\n        plugins:\n          - name: request-size-limiting\n            config: {plugin}\n"),
    )
}

fn chunked(path: &str, chunks: &[usize]) -> Vec<u8> {
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nhost: localhost\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    )
    .into_bytes();
    for n in chunks {
        req.extend_from_slice(format!("{n:x}\r\n").as_bytes());
        req.extend(std::iter::repeat_n(b'x', *n));
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    req
}

#[tokio::test]
async fn declared_and_chunked_bodies_over_the_limit_are_refused() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&config(
        &origin.url(),
        "{allowed_payload_size: 1, size_unit: kilobytes}",
    ))
    .await;

    let ok = "y".repeat(1024);
    let r = request(gw.proxy, "POST", "/", &[], &ok).await.unwrap();
    assert_status(&r, 200);
    assert_eq!(r.json()["body"].as_str().unwrap().len(), 1024);

    let big = "y".repeat(1025);
    let r = request(gw.proxy, "POST", "/", &[], &big).await.unwrap();
    assert_status(&r, 413);
    assert_error_body(&r, "Request size limit exceeded");

    // Expect: 100-continue with a too-large declared length: 417, body never read.
    let (resp, _) = raw(
        gw.proxy,
        b"POST / HTTP/1.1\r\nhost: localhost\r\ncontent-length: 5000\r\nexpect: 100-continue\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&resp), 417, "{resp}");

    // Chunked: under the limit passes intact, over it is refused.
    let (resp, _) = raw(gw.proxy, &chunked("/", &[500, 500])).await;
    assert_eq!(status_of(&resp), 200, "{resp}");
    assert!(resp.contains(&"x".repeat(1000)));
    let (resp, _) = raw(gw.proxy, &chunked("/", &[600, 600])).await;
    assert_eq!(status_of(&resp), 413, "{resp}");
    assert!(resp.contains("Request size limit exceeded"));
    assert_eq!(origin.hits(), 2);
}

#[tokio::test]
async fn streamed_chunked_bodies_stop_at_the_limit() {
    // A limit above the node's buffer size: the body streams and is cut at the limit.
    let origin = Origin::start("a").await;
    let gw = Gw::start_with(
        &config(
            &origin.url(),
            "{allowed_payload_size: 8, size_unit: kilobytes}",
        ),
        "request_buffer_bytes = 1024\n",
    )
    .await;
    let (resp, _) = raw(gw.proxy, &chunked("/", &[4096, 4096])).await;
    assert_eq!(status_of(&resp), 200, "{resp}");
    let (resp, _) = raw(gw.proxy, &chunked("/", &[4096, 4096, 4096])).await;
    assert_eq!(status_of(&resp), 413, "{resp}");
}

#[tokio::test]
async fn chunked_bodies_are_buffered_up_to_the_node_limit_then_streamed() {
    // No plugin limit: a chunked body within request_buffer_bytes reaches the upstream whole,
    // with a Content-Length; a larger one streams on (the part read ahead first), unchanged.
    let origin = Origin::start("a").await;
    let gw = Gw::start_with(
        &one_service(&origin.url(), "      - name: r\n        paths: [/]\n"),
        "request_buffer_bytes = 1024\n",
    )
    .await;
    let body_of = |resp: &str| -> serde_json::Value {
        serde_json::from_str(&resp[resp.find("\r\n\r\n").unwrap() + 4..]).unwrap()
    };
    let (resp, _) = raw(gw.proxy, &chunked("/", &[300, 700])).await;
    assert_eq!(status_of(&resp), 200, "{resp}");
    let json = body_of(&resp);
    assert_eq!(json["body"].as_str().unwrap().len(), 1000);
    assert_eq!(json["headers"]["content-length"][0], "1000", "{json}");
    let (resp, _) = raw(gw.proxy, &chunked("/", &[600, 600, 4096, 4096])).await;
    assert_eq!(status_of(&resp), 200, "{resp}");
    let json = body_of(&resp);
    assert_eq!(json["body"].as_str().unwrap().len(), 9392);
    assert!(json["body"].as_str().unwrap().bytes().all(|b| b == b'x'));
    assert!(json["headers"].get("content-length").is_none(), "{json}");
    assert_eq!(json["headers"]["transfer-encoding"][0], "chunked", "{json}");
}

#[tokio::test]
async fn content_length_can_be_required() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&config(
        &origin.url(),
        "{allowed_payload_size: 10, require_content_length: true}",
    ))
    .await;
    let (resp, _) = raw(gw.proxy, &chunked("/", &[10])).await;
    assert_eq!(status_of(&resp), 411, "{resp}");
    assert!(resp.contains("A valid Content-Length header is required"));
    let r = request(gw.proxy, "POST", "/", &[], "small").await.unwrap();
    assert_status(&r, 200);
}

#[tokio::test]
async fn a_two_megabyte_chunked_body_against_a_one_megabyte_limit() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&config(
        &origin.url(),
        "{allowed_payload_size: 1, size_unit: megabytes}",
    ))
    .await;
    // 2 MiB in 64 KiB chunks, no Content-Length.
    let (resp, _) = raw(gw.proxy, &chunked("/", &[64 * 1024; 32])).await;
    assert_eq!(status_of(&resp), 413, "{}", &resp[..resp.len().min(300)]);
    assert!(resp.contains("Request size limit exceeded"));
    // Just under the limit passes whole.
    let (resp, _) = raw(gw.proxy, &chunked("/", &[64 * 1024; 15])).await;
    assert_eq!(status_of(&resp), 200);
    assert_eq!(origin.hits(), 1);
}

#[tokio::test]
async fn the_limit_holds_when_a_later_plugin_buffers_the_body() {
    let origin = Origin::start("a").await;
    let cfg = one_service(
        &origin.url(),
        "      - name: r\n        paths: [/]\n        plugins:\n          - name: request-size-limiting\n            config: {allowed_payload_size: 1, size_unit: kilobytes}\n          - name: request-transformer\n            config: {add: {body: [\"x:1\"]}}\n",
    );
    let gw = Gw::start(&cfg).await;
    let (resp, _) = raw(gw.proxy, &chunked("/", &[4096, 3072])).await;
    assert_eq!(status_of(&resp), 413, "{}", &resp[..resp.len().min(300)]);
    let (resp, _) = raw(gw.proxy, &chunked("/", &[100])).await;
    assert_eq!(status_of(&resp), 200, "{}", &resp[..resp.len().min(300)]);
    assert_eq!(origin.hits(), 1);
}
