//! The upstream HTTP/1.1 client against a scripted origin on a real socket: response framing
//! (length, chunked, close-delimited), interim responses, keep-alive reuse, strict refusal of
//! ambiguous framing, hop-by-hop headers, and what the upstream receives.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the scripted origin saw.
#[derive(Default)]
struct Seen {
    connections: AtomicUsize,
    /// Every request as raw text (head and body).
    requests: Mutex<Vec<String>>,
}

/// One reply: a list of (bytes, pause before writing them), then whether to close.
type Reply = (Vec<(Vec<u8>, u64)>, bool);

/// An origin answering the n-th request (over all connections) with `script(n)`.
async fn scripted<F>(script: F) -> (u16, Arc<Seen>)
where
    F: Fn(usize) -> Reply + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Seen::default());
    let script = Arc::new(script);
    let s2 = seen.clone();
    tokio::spawn(async move {
        let count = Arc::new(AtomicUsize::new(0));
        while let Ok((s, _)) = listener.accept().await {
            s2.connections.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve(s, s2.clone(), script.clone(), count.clone()));
        }
    });
    (port, seen)
}

async fn serve<F>(mut s: TcpStream, seen: Arc<Seen>, script: Arc<F>, count: Arc<AtomicUsize>)
where
    F: Fn(usize) -> Reply + Send + Sync + 'static,
{
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 8192];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(k) => buf.extend_from_slice(&chunk[..k]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let lower = head.to_ascii_lowercase();
        let len: usize = lower
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + len {
            let mut chunk = [0u8; 8192];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(k) => buf.extend_from_slice(&chunk[..k]),
            }
        }
        let body = String::from_utf8_lossy(&buf[head_end..head_end + len]).to_string();
        buf.drain(..head_end + len);
        seen.requests.lock().unwrap().push(format!("{head}{body}"));
        let n = count.fetch_add(1, Ordering::SeqCst);
        let (parts, close) = script(n);
        for (bytes, pause) in parts {
            if pause > 0 {
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
            if s.write_all(&bytes).await.is_err() {
                return;
            }
        }
        if close {
            return;
        }
    }
}

fn now(bytes: &[u8]) -> Vec<(Vec<u8>, u64)> {
    vec![(bytes.to_vec(), 0)]
}

async fn gateway(port: u16) -> Gw {
    Gw::start(&one_service(
        &format!("http://127.0.0.1:{port}"),
        "      - name: r\n        paths: [/]\n",
    ))
    .await
}

/// One service on the origin with no retries and a 400 ms read timeout.
async fn gateway_with_read_timeout_400(port: u16) -> Gw {
    Gw::start(&format!(
        "_format_version: \"3.0\"\nservices:\n  - name: svc\n    url: http://127.0.0.1:{port}\n    retries: 0\n    read_timeout: 400\n    routes: [{{name: r, paths: [/]}}]\n"
    ))
    .await
}

#[tokio::test]
async fn keep_alive_connections_are_reused_for_sequential_requests() {
    let (port, seen) = scripted(|_| {
        (
            now(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
            false,
        )
    })
    .await;
    let gw = gateway(port).await;
    for _ in 0..5 {
        let r = gw.get("/a").await;
        assert_status(&r, 200);
        assert_eq!(r.text(), "ok");
    }
    assert_eq!(seen.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn chunked_responses_are_decoded_with_extensions_and_trailers() {
    let (port, seen) = scripted(|_| {
        (
            vec![
                (
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n"
                        .to_vec(),
                    0,
                ),
                (b"7\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n".to_vec(), 50),
            ],
            false,
        )
    })
    .await;
    let gw = gateway(port).await;
    for _ in 0..2 {
        let r = gw.get("/").await;
        assert_status(&r, 200);
        assert_eq!(r.text(), "hello, world");
    }
    // The chunked body ended cleanly, so its connection was reused.
    assert_eq!(seen.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn close_delimited_bodies_are_relayed_whole_and_never_reused() {
    let (port, seen) = scripted(|_| {
        (
            vec![
                (
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nfirst ".to_vec(),
                    0,
                ),
                (b"second".to_vec(), 50),
            ],
            true,
        )
    })
    .await;
    let gw = gateway(port).await;
    for _ in 0..2 {
        let r = gw.get("/").await;
        assert_status(&r, 200);
        assert_eq!(r.text(), "first second");
    }
    assert_eq!(seen.connections.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn bodies_arriving_in_pieces_after_the_head_are_complete() {
    let body = "x".repeat(300_000);
    let b2 = body.clone();
    let (port, _) = scripted(move |_| {
        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", b2.len());
        (
            vec![
                (head.into_bytes(), 0),
                (b2.as_bytes()[..1000].to_vec(), 30),
                (b2.as_bytes()[1000..].to_vec(), 30),
            ],
            false,
        )
    })
    .await;
    let gw = gateway(port).await;
    let r = gw.get("/big").await;
    assert_status(&r, 200);
    assert_eq!(r.body.len(), body.len());
    assert!(r.body.iter().all(|&b| b == b'x'));
}

#[tokio::test]
async fn interim_responses_are_skipped() {
    let (port, _) = scripted(|_| {
        (
            now(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 4\r\n\r\ndone"),
            false,
        )
    })
    .await;
    let gw = gateway(port).await;
    let r = gw.get("/").await;
    assert_status(&r, 201);
    assert_eq!(r.text(), "done");
}

#[tokio::test]
async fn ambiguous_response_framing_is_a_502_and_the_connection_is_dropped() {
    let (port, seen) = scripted(|n| match n {
        0 => (
            now(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
            false,
        ),
        1 => (
            now(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"),
            false,
        ),
        2 => (now(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"), false),
        3 => (now(b"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n"), false),
        _ => (now(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"), false),
    })
    .await;
    // retries = 0: each refused response is the client's answer.
    let gw = Gw::start(&format!(
        "_format_version: \"3.0\"\nservices:\n  - name: svc\n    url: http://127.0.0.1:{port}\n    retries: 0\n    routes:\n      - name: r\n        paths: [/]\n"
    ))
    .await;
    for _ in 0..4 {
        let r = gw.get("/").await;
        assert_eq!(r.status, 502, "{}", r.text());
        assert_eq!(
            r.json()["message"],
            "An invalid response was received from the upstream server"
        );
    }
    let r = gw.get("/").await;
    assert_status(&r, 200);
    // No connection that saw a refused response was used again.
    assert_eq!(seen.connections.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn extra_bytes_after_a_response_close_its_connection() {
    let (port, seen) = scripted(|n| match n {
        0 => (
            now(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nforge"),
            false,
        ),
        _ => (now(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nreal"), false),
    })
    .await;
    let gw = gateway(port).await;
    let r = gw.get("/").await;
    assert_eq!(r.status, 502, "a response with trailing bytes is refused");
    let r = gw.get("/").await;
    assert_status(&r, 200);
    assert_eq!(
        r.text(),
        "real",
        "the smuggled response never reached a client"
    );
    assert_eq!(seen.connections.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn hop_by_hop_response_headers_are_not_relayed() {
    let (port, _) = scripted(|_| {
        (
            now(b"HTTP/1.1 200 OK\r\nX-Internal: secret\r\nKeep-Alive: timeout=5\r\nConnection: keep-alive, X-Internal\r\nX-Public: yes\r\nContent-Length: 0\r\n\r\n"),
            false,
        )
    })
    .await;
    let gw = gateway(port).await;
    let r = gw.get("/").await;
    assert_status(&r, 200);
    assert_eq!(r.header("x-public").as_deref(), Some("yes"));
    assert_eq!(r.header("x-internal"), None);
    assert_eq!(r.header("keep-alive"), None);
}

#[tokio::test]
async fn head_responses_have_no_body_and_keep_the_connection() {
    let (port, seen) = scripted(|n| match n {
        0 => (
            now(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"),
            false,
        ),
        _ => (
            now(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
            false,
        ),
    })
    .await;
    let gw = gateway(port).await;
    let r = request(gw.proxy, "HEAD", "/", &[], "").await.unwrap();
    assert_status(&r, 200);
    assert_eq!(r.header("content-length").as_deref(), Some("1000"));
    let r = gw.get("/").await;
    assert_eq!(r.text(), "ok");
    assert_eq!(seen.connections.load(Ordering::SeqCst), 1);
    assert!(seen.requests.lock().unwrap()[0].starts_with("HEAD / HTTP/1.1\r\n"));
}

#[tokio::test]
async fn the_upstream_receives_one_well_formed_request() {
    let (port, seen) =
        scripted(|_| (now(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"), false)).await;
    let gw = gateway(port).await;
    let r = request(
        gw.proxy,
        "POST",
        "/submit?a=1&b=%20",
        &[
            ("content-type", "text/plain"),
            ("connection", "keep-alive, x-drop"),
            ("x-drop", "1"),
            ("te", "gzip"),
            ("expect", "100-continue"),
            ("x-keep", "2"),
        ],
        "payload",
    )
    .await
    .unwrap();
    assert_status(&r, 200);
    let req = seen.requests.lock().unwrap()[0].clone();
    let lower = req.to_ascii_lowercase();
    assert!(
        req.starts_with("POST /submit?a=1&b=%20 HTTP/1.1\r\n"),
        "{req}"
    );
    assert!(
        lower.contains(&format!("\r\nhost: 127.0.0.1:{port}\r\n")),
        "{req}"
    );
    assert!(lower.contains("\r\ncontent-length: 7\r\n"), "{req}");
    assert!(lower.contains("\r\nx-keep: 2\r\n"), "{req}");
    assert!(
        lower.contains("\r\nx-forwarded-for: 127.0.0.1\r\n"),
        "{req}"
    );
    assert!(lower.contains("\r\nx-real-ip: 127.0.0.1\r\n"), "{req}");
    assert!(!lower.contains("x-drop"), "{req}");
    assert!(!lower.contains("\r\nte:"), "{req}");
    assert!(!lower.contains("\r\nexpect:"), "{req}");
    assert!(!lower.contains("\r\nconnection:"), "{req}");
    assert!(!lower.contains("transfer-encoding"), "{req}");
    assert!(req.ends_with("\r\n\r\npayload"), "{req}");
    assert_eq!(lower.matches("\r\ncontent-length:").count(), 1, "{req}");
    assert_eq!(lower.matches("\r\nhost:").count(), 1, "{req}");
}

#[tokio::test]
async fn an_upstream_that_closes_idle_connections_costs_no_failed_request() {
    // Every response is followed by a close the gateway does not hear about in advance (no
    // `Connection: close`): each next request finds its pooled connection dead.
    let (port, seen) =
        scripted(|_| (now(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"), true)).await;
    let gw = gateway(port).await;
    for i in 0..6 {
        let r = gw.get("/").await;
        assert_status(&r, 200);
        if i % 2 == 1 {
            // Give the close time to arrive, so the pool sees it before the next checkout.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert_eq!(seen.connections.load(Ordering::SeqCst), 6);
    // Nothing was sent twice.
    assert_eq!(seen.requests.lock().unwrap().len(), 6);
}

#[tokio::test]
async fn large_bodies_to_tls_upstreams_arrive_whole() {
    use common::tls::{TestCa, TlsOrigin};
    let ca = TestCa::new("portcullis test CA");
    let origin = TlsOrigin::start("tls-origin", &ca.issue(&["localhost"]), None).await;
    let gw = Gw::start(&format!(
        "_format_version: \"3.0\"\nservices:\n  - name: svc\n    url: https://localhost:{}\n    tls_verify: false\n    read_timeout: 5000\n    routes: [{{name: r, paths: [/]}}]\n",
        origin.port()
    ))
    .await;
    // Larger than the coalescing limit and the socket buffers, so the last bytes of a write
    // can sit in the TLS layer unless it is flushed.
    for size in [20_000, 3_000_000] {
        let body = "b".repeat(size);
        let r = request(gw.proxy, "POST", "/upload", &[], &body)
            .await
            .unwrap();
        assert_status(&r, 200);
        assert_eq!(r.json()["body"].as_str().unwrap().len(), size);
    }
}

#[tokio::test]
async fn an_early_answer_is_relayed_while_the_body_is_still_being_sent() {
    // Answers 413 as soon as it has the head, never reads the body, keeps the connection.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let connections = Arc::new(AtomicUsize::new(0));
    let c2 = connections.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            c2.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let mut chunk = [0u8; 4096];
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => buf.extend_from_slice(&chunk[..k]),
                    }
                    if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                let _ = s
                    .write_all(
                        b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 8\r\n\r\ntoo big!",
                    )
                    .await;
                tokio::time::sleep(Duration::from_secs(30)).await;
            });
        }
    });
    let gw = Gw::start(&format!(
        "_format_version: \"3.0\"\nservices:\n  - name: svc\n    url: http://127.0.0.1:{port}\n    read_timeout: 10000\n    routes: [{{name: r, paths: [/]}}]\n"
    ))
    .await;
    let body = "z".repeat(6_000_000);
    let started = std::time::Instant::now();
    let r = request(gw.proxy, "POST", "/upload", &[], &body)
        .await
        .unwrap();
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(r.text(), "too big!");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "the answer waited for the read timeout"
    );
    // The connection that carried a half-sent body is not reused.
    let r = request(gw.proxy, "POST", "/again", &[], "small")
        .await
        .unwrap();
    assert_eq!(r.status, 413);
    assert_eq!(connections.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_rewritten_length_on_a_streamed_body_never_smuggles_bytes() {
    let (port, seen) = scripted(|_| {
        (
            now(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
            false,
        )
    })
    .await;
    // request_buffering off: the body streams, and a plugin claims a shorter length.
    let gw = Gw::start(&format!(
        r#"_format_version: "3.0"
services:
  - name: svc
    url: http://127.0.0.1:{port}
    retries: 0
    routes:
      - name: r
        paths: [/]
        request_buffering: false
        plugins:
          - name: request-transformer
            config:
              replace: {{headers: ["content-length:4"]}}
"#
    ))
    .await;
    let r = request(
        gw.proxy,
        "POST",
        "/",
        &[],
        "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 502, "{}", r.text());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let seen = seen.requests.lock().unwrap();
    assert!(
        seen.iter().all(|req| !req.contains("/smuggled")),
        "{seen:?}"
    );
}

#[tokio::test]
async fn the_read_timeout_holds_on_reused_connections() {
    // Requests 0 and 2 are answered at once, 1 and 3 only after 5 s: with a 400 ms read
    // timeout each slow one is a 504 in well under a second, also when the connection (and
    // its timer, still registered for an earlier deadline) comes from the pool.
    let (port, seen) = scripted(|n| {
        let pause = if n % 2 == 1 { 5_000 } else { 0 };
        (
            vec![(
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
                pause,
            )],
            false,
        )
    })
    .await;
    let gw = gateway_with_read_timeout_400(port).await;
    for round in 0..2 {
        let r = gw.get("/fast").await;
        assert_status(&r, 200);
        let started = std::time::Instant::now();
        let r = gw.get("/slow").await;
        assert_status(&r, 504);
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(350) && took < Duration::from_millis(1500),
            "round {round}: {took:?}"
        );
    }
    // Each slow request went out on the fast request's pooled connection (timed-out ones are
    // dropped, so each round opened one).
    assert_eq!(seen.requests.lock().unwrap().len(), 4);
    assert_eq!(seen.connections.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_body_that_stalls_after_the_head_is_cut_at_the_read_timeout() {
    // The head and half the body arrive at once, the rest only after 5 s. Kong's read_timeout
    // is the longest wait between two reads, so with 400 ms the client sees the head and the
    // first half, then the connection closes (the status has already left, so there is no 504)
    // well before the upstream's 5 s. The stalled upstream connection is not reused.
    let (port, seen) = scripted(|n| {
        let pause = if n == 0 { 5_000 } else { 0 };
        (
            vec![
                (
                    b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello".to_vec(),
                    0,
                ),
                (b"world".to_vec(), pause),
            ],
            false,
        )
    })
    .await;
    let gw = gateway_with_read_timeout_400(port).await;
    let started = std::time::Instant::now();
    let (text, closed) = raw(gw.proxy, b"GET /stall HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let took = started.elapsed();
    assert!(closed, "the connection stayed open: {text:?}");
    assert_eq!(status_of(&text), 200, "{text}");
    assert!(text.ends_with("hello"), "{text:?}");
    assert!(
        took >= Duration::from_millis(350) && took < Duration::from_millis(2500),
        "{took:?}"
    );
    // A body that keeps arriving, however slowly overall, is not cut.
    let r = gw.get("/next").await;
    assert_status(&r, 200);
    assert_eq!(r.text(), "helloworld");
    assert_eq!(seen.connections.load(Ordering::SeqCst), 2);
}

/// The header lines of a raw HTTP/1 response, lower-cased names, in order.
fn header_lines(text: &str) -> Vec<(String, String)> {
    let head = text.split("\r\n\r\n").next().unwrap();
    head.lines()
        .skip(1)
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.to_ascii_lowercase(), v.trim().to_string())
        })
        .collect()
}

#[tokio::test]
async fn relayed_response_heads_are_the_same_with_and_without_plugins() {
    // Two routes relay the upstream's header lines as they came (wire mode): `/plain` with no
    // plugin, `/four` with plugins that name the response headers they touch (cors,
    // rate-limiting, request-size-limiting). Their twins `/plain-logged` and `/four-logged`
    // add file-log, whose log entry needs the response head parsed into a HeaderMap. Each
    // pair must send the same headers, GET and HEAD: fingerprints and hop-by-hop headers (and
    // those Connection names) removed; repeated headers kept in order; one Date; the
    // gateway's request id and latencies replacing the upstream's; the upstream's security
    // header kept and the missing one added once; cors appending to the upstream's Vary and
    // replacing its Allow-Origin; rate-limiting replacing its X-RateLimit header; and for
    // HEAD the upstream's Content-Length.
    let (port, _) = scripted(|n| {
        let head = b"HTTP/1.1 200 OK\r\nServer: Apache/2.4\r\nX-Powered-By: PHP\r\nDate: Mon, 01 Jan 2024 00:00:00 GMT\r\nContent-Type: text/plain\r\nX-Multi: a\r\nX-Hop: secret\r\nConnection: keep-alive, X-Hop\r\nKeep-Alive: timeout=5\r\nX-Multi: b\r\nX-Content-Type-Options: upstream\r\nX-Request-Id: upstream-id\r\nX-Kong-Proxy-Latency: 999\r\nVary: Accept-Encoding\r\nAccess-Control-Allow-Origin: https://evil.example\r\nX-RateLimit-Limit-Minute: 7\r\nContent-Length: 5\r\n\r\n";
        let mut reply = head.to_vec();
        // Requests alternate GET and HEAD; a HEAD response has no body.
        if n % 2 == 0 {
            reply.extend_from_slice(b"hello");
        }
        (now(&reply), false)
    })
    .await;
    let log = std::env::temp_dir().join(format!("portcullis-wire-{}.log", std::process::id()));
    let plugins = "          - name: cors\n            config: {origins: [\"https://app.example.com\"], credentials: true}\n          - name: rate-limiting\n            config: {minute: 1000, policy: local}\n          - name: request-size-limiting\n            config: {allowed_payload_size: 1}\n";
    let file_log = format!(
        "          - name: file-log\n            config: {{path: {}}}\n",
        log.display()
    );
    let cfg = format!(
        "_format_version: \"3.0\"\nservices:\n  - name: svc\n    url: http://127.0.0.1:{port}\n    routes:\n      - name: plain\n        paths: [/plain]\n      - name: plain-logged\n        paths: [/plain-logged]\n        plugins:\n{file_log}      - name: four\n        paths: [/four]\n        plugins:\n{plugins}      - name: four-logged\n        paths: [/four-logged]\n        plugins:\n{plugins}{file_log}"
    );
    let gw = Gw::start_with(
        &cfg,
        "[security_headers]\nx-content-type-options = \"nosniff\"\nx-frame-options = \"DENY\"\n",
    )
    .await;
    let mut seen = std::collections::HashMap::new();
    for path in ["/plain", "/plain-logged", "/four", "/four-logged"] {
        for method in ["GET", "HEAD"] {
            let req = format!(
                "{method} {path} HTTP/1.1\r\nHost: x\r\nOrigin: https://app.example.com\r\nConnection: close\r\n\r\n"
            );
            let (text, _) = raw(gw.proxy, req.as_bytes()).await;
            assert_eq!(status_of(&text), 200, "{text}");
            if method == "GET" {
                assert!(text.ends_with("\r\n\r\nhello"), "{text:?}");
            } else {
                assert!(text.ends_with("\r\n\r\n"), "{text:?}");
            }
            // Which path ran shows in the names' case: relayed lines keep the upstream's, a
            // HeaderMap lower-cases them.
            assert_eq!(
                text.contains("\r\nX-Multi: a\r\n"),
                !path.ends_with("-logged"),
                "{path}: {text}"
            );
            let mut lines = header_lines(&text);
            let multi: Vec<&str> = lines
                .iter()
                .filter(|(n, _)| n == "x-multi")
                .map(|(_, v)| v.as_str())
                .collect();
            assert_eq!(multi, ["a", "b"], "{method} {path}");
            // The per-request values differ; their presence is what counts.
            for (n, v) in lines.iter_mut() {
                if n == "x-request-id" {
                    assert_eq!(v.len(), 32, "{v}");
                    *v = "id".into();
                }
                if n.starts_with("x-kong-")
                    || n.starts_with("x-ratelimit-remaining")
                    || n.starts_with("ratelimit-")
                {
                    assert!(v.parse::<u64>().is_ok(), "{n}: {v}");
                    *v = "n".into();
                }
            }
            lines.sort();
            seen.insert((path, method), lines);
        }
    }
    let common = [
        ("connection", "close"),
        ("content-length", "5"),
        ("content-type", "text/plain"),
        ("date", "Mon, 01 Jan 2024 00:00:00 GMT"),
        ("x-content-type-options", "upstream"),
        ("x-frame-options", "DENY"),
        ("x-kong-proxy-latency", "n"),
        ("x-kong-upstream-latency", "n"),
        ("x-multi", "a"),
        ("x-multi", "b"),
        ("x-request-id", "id"),
    ];
    let sorted = |extra: &[(&str, &str)]| {
        let mut v: Vec<(String, String)> = common
            .iter()
            .chain(extra)
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        v.sort();
        v
    };
    let plain = sorted(&[
        ("access-control-allow-origin", "https://evil.example"),
        ("vary", "Accept-Encoding"),
        ("x-ratelimit-limit-minute", "7"),
    ]);
    let four = sorted(&[
        ("access-control-allow-credentials", "true"),
        ("access-control-allow-origin", "https://app.example.com"),
        ("ratelimit-limit", "n"),
        ("ratelimit-remaining", "n"),
        ("ratelimit-reset", "n"),
        ("vary", "Accept-Encoding"),
        ("vary", "Origin"),
        ("x-ratelimit-limit-minute", "1000"),
        ("x-ratelimit-remaining-minute", "n"),
    ]);
    for method in ["GET", "HEAD"] {
        assert_eq!(seen[&("/plain", method)], plain, "{method} /plain");
        assert_eq!(
            seen[&("/plain-logged", method)],
            plain,
            "{method} /plain-logged"
        );
        assert_eq!(seen[&("/four", method)], four, "{method} /four");
        assert_eq!(
            seen[&("/four-logged", method)],
            four,
            "{method} /four-logged"
        );
    }
    let _ = std::fs::remove_file(&log);
}

#[tokio::test]
async fn a_plugin_header_named_like_the_gateways_own_is_not_doubled() {
    // correlation-id echoing into `X-Request-ID` (the gateway's request-id header) on a route
    // relayed in wire mode, and on its map-mode twin (file-log): one X-Request-ID each, the
    // gateway's, as the map path's final insert leaves it.
    let (port, _) = scripted(|_| {
        (
            now(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
            false,
        )
    })
    .await;
    let log = std::env::temp_dir().join(format!("portcullis-cid-{}.log", std::process::id()));
    let cid = "          - name: correlation-id\n            config: {header_name: X-Request-ID, echo_downstream: true}\n";
    let cfg = format!(
        "_format_version: \"3.0\"\nservices:\n  - name: svc\n    url: http://127.0.0.1:{port}\n    routes:\n      - name: wire\n        paths: [/wire]\n        plugins:\n{cid}      - name: map\n        paths: [/map]\n        plugins:\n{cid}          - name: file-log\n            config: {{path: {}}}\n",
        log.display()
    );
    let gw = Gw::start(&cfg).await;
    for path in ["/wire", "/map"] {
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let (text, _) = raw(gw.proxy, req.as_bytes()).await;
        assert_eq!(status_of(&text), 200, "{text}");
        let ids: Vec<String> = header_lines(&text)
            .into_iter()
            .filter(|(n, _)| n == "x-request-id")
            .map(|(_, v)| v)
            .collect();
        assert_eq!(ids.len(), 1, "{path}: {text}");
        assert!(
            ids[0].len() == 32 && ids[0].bytes().all(|b| b.is_ascii_hexdigit()),
            "{path}: {}",
            ids[0]
        );
    }
    let _ = std::fs::remove_file(&log);
}
