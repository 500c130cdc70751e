//! HTTP/2 abuse limits through the real binary, with hand-built frames: a rapid-reset flood
//! (CVE-2023-44487) gets a GOAWAY and the connection closed, a CONTINUATION flood
//! (CVE-2024-27316 family) is cut off at the header-list limit, and the gateway keeps serving
//! other clients.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// GET / with :authority localhost, from HPACK's static table (no dynamic state).
fn get_headers() -> Vec<u8> {
    let mut b = vec![0x82, 0x86, 0x84, 0x01, 9];
    b.extend_from_slice(b"localhost");
    b
}

/// Reads frames until the peer closes or `limit` passes; returns (GOAWAY error codes seen,
/// closed).
async fn read_goaways(s: &mut TcpStream, limit: Duration) -> (Vec<u32>, bool) {
    let mut buf = Vec::new();
    let mut codes = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (codes, true),
            Ok(Ok(n)) => n,
            Err(_) => return (codes, false),
        };
        buf.extend_from_slice(&chunk[..n]);
        while buf.len() >= 9 {
            let len =
                (usize::from(buf[0]) << 16) | (usize::from(buf[1]) << 8) | usize::from(buf[2]);
            if buf.len() < 9 + len {
                break;
            }
            if buf[3] == 0x7 && len >= 8 {
                codes.push(u32::from_be_bytes([buf[13], buf[14], buf[15], buf[16]]));
            }
            buf.drain(..9 + len);
        }
    }
}

fn config(origin: &str) -> String {
    one_service(origin, "      - name: r\n        paths: [/]\n")
}

#[tokio::test]
async fn rapid_reset_floods_get_goaway() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&config(&origin.url())).await;
    let mut s = TcpStream::connect(gw.proxy).await.unwrap();
    let mut out = PREFACE.to_vec();
    out.extend(frame(0x4, 0, 0, &[]));
    // 500 streams, each opened and immediately cancelled (RST_STREAM CANCEL = 0x8).
    for i in 0..500u32 {
        let id = 1 + 2 * i;
        out.extend(frame(0x1, 0x5, id, &get_headers()));
        out.extend(frame(0x3, 0, id, &8u32.to_be_bytes()));
    }
    let _ = s.write_all(&out).await;
    let (codes, closed) = read_goaways(&mut s, Duration::from_secs(10)).await;
    // ENHANCE_YOUR_CALM (0xb), then the connection is closed.
    assert!(codes.contains(&0xb), "GOAWAY codes: {codes:?}");
    assert!(closed, "the flooding connection must be closed");
    // Far fewer than 500 requests reached the upstream, and others are still served.
    assert!(
        origin.hits() < 100,
        "{} requests reached the upstream",
        origin.hits()
    );
    assert_status(&gw.get("/").await, 200);
}

#[tokio::test]
async fn continuation_floods_are_cut_off() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&config(&origin.url())).await;
    let mut s = TcpStream::connect(gw.proxy).await.unwrap();
    let mut out = PREFACE.to_vec();
    out.extend(frame(0x4, 0, 0, &[]));
    // HEADERS without END_HEADERS, then endless CONTINUATION frames of a huge header value
    // (literal without indexing, new name "x-a", a 16 KiB value per frame).
    out.extend(frame(0x1, 0x1, 1, &get_headers()));
    let mut lit = vec![0x00, 0x03];
    lit.extend_from_slice(b"x-a");
    let _ = s.write_all(&out).await;
    let mut sent = 0usize;
    let mut cut = false;
    for _ in 0..256 {
        let mut block = lit.clone();
        // Value length 16000 as an HPACK integer with a 7-bit prefix: 127 + varint(15873).
        block.push(0x7f);
        let mut rest = 16000 - 127;
        while rest >= 128 {
            block.push((rest % 128) as u8 | 0x80);
            rest /= 128;
        }
        block.push(rest as u8);
        block.extend(std::iter::repeat_n(b'v', 16000));
        if s.write_all(&frame(0x9, 0, 1, &block)).await.is_err() {
            cut = true;
            break;
        }
        sent += block.len();
    }
    let (codes, closed) = read_goaways(&mut s, Duration::from_secs(10)).await;
    assert!(
        cut || closed || !codes.is_empty(),
        "server accepted {sent} bytes of headers"
    );
    assert!(
        sent < 4 * 1024 * 1024,
        "server read {sent} bytes of one header block"
    );
    assert_eq!(origin.hits(), 0);
    assert_status(&gw.get("/").await, 200);
}

#[tokio::test]
async fn http2_methods_follow_the_http1_rule() {
    // nginx refuses a lower-case method on HTTP/2 as on HTTP/1; so does the gateway, before
    // routing, and the upstream never sees it.
    let origin = Origin::start("a").await;
    let gw = Gw::start(&config(&origin.url())).await;
    let uri = format!("http://localhost:{}/", gw.proxy.port());
    for (method, want) in [("get", 400), ("Get", 400), ("GET", 200), ("M-SEARCH", 200)] {
        let io = TcpStream::connect(gw.proxy).await.unwrap();
        let r = tls::send_h2(io, method, &uri, &[], b"").await.unwrap();
        assert_eq!(r.reply.status, want, "{method}: {}", r.reply.text());
    }
    assert_eq!(origin.hits(), 2);
}
