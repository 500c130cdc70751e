//! The HTTP/1.1 server driven with raw bytes over an in-memory pipe, with a service that
//! answers `got N` (N: body bytes it read).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
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
        send_timeout: Duration::from_millis(300),
    })
}

/// Reads a whole request body and answers `got N` (its length; 0 if it failed).
async fn got(body: RequestBody) -> Response<Full<Bytes>> {
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    Response::new(Full::new(Bytes::from(format!("got {}", body.len()))))
}

fn start(server: tokio::io::DuplexStream) -> watch::Sender<bool> {
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(serve(
        server,
        limits(),
        stop_rx,
        |req: Request<RequestBody>| async move {
            let path = req.uri().path().to_string();
            if path == "/refuse" {
                // Answers without reading the body.
                return Response::new(Full::new(Bytes::from_static(b"refused")));
            }
            got(req.into_body()).await
        },
    ));
    stop_tx
}

/// Serves one in-memory connection (a pipe of `buffer` bytes) with `service`; returns the
/// client's end and the stop switch, which must stay alive for the server to keep serving.
fn serve_with<S, Fut, B>(
    buffer: usize,
    service: S,
) -> (tokio::io::DuplexStream, watch::Sender<bool>)
where
    S: FnMut(Request<RequestBody>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Response<B>> + Send + 'static,
    B: Body<Data = Bytes> + WireBody + Unpin + Send + 'static,
    B::Error: Send,
{
    let (client, server) = tokio::io::duplex(buffer);
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(serve(server, limits(), stop_rx, service));
    (client, stop_tx)
}

/// Sends `input`, returns everything the server wrote before closing.
async fn exchange(input: &[u8]) -> String {
    let (client, server) = tokio::io::duplex(1 << 20);
    let _stop = start(server);
    let (mut r, mut w) = tokio::io::split(client);
    w.write_all(input).await.unwrap();
    until_closed(&mut r).await.0
}

/// Everything the server writes until it closes the connection, and whether it closed
/// within 3 s.
async fn until_closed<R: tokio::io::AsyncRead + Unpin>(r: &mut R) -> (String, bool) {
    let mut out = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(3), r.read_to_end(&mut out))
        .await
        .is_ok();
    (String::from_utf8_lossy(&out).into_owned(), closed)
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
    assert!(out.contains("\r\ncontent-length: 5\r\n"), "{out}");
    assert!(out.contains("\r\ndate: "), "{out}");
    assert!(out.contains("\r\nconnection: close\r\n"), "{out}");
    assert!(out.ends_with("\r\n\r\ngot 0"), "{out}");
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
    let _stop = start(server);
    let (mut r, mut w) = tokio::io::split(client);
    w.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n").await.unwrap();
    let (out, closed) = until_closed(&mut r).await;
    assert!(closed, "connection must be closed by the header timeout");
    assert_eq!(statuses(&out), vec![408], "{out}");
}

#[tokio::test]
async fn a_body_that_stops_arriving_gets_408_and_the_request_never_completes() {
    let (client, server) = tokio::io::duplex(4096);
    let _stop = start(server);
    let (mut r, mut w) = tokio::io::split(client);
    w.write_all(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc")
        .await
        .unwrap();
    let (out, closed) = until_closed(&mut r).await;
    assert!(closed, "connection must be closed by the body timeout");
    assert_eq!(statuses(&out), vec![408], "{out}");
    assert!(!out.contains("got "), "{out}");
}

#[tokio::test]
async fn idle_keep_alive_connections_close_quietly() {
    let (client, server) = tokio::io::duplex(4096);
    let _stop = start(server);
    let (mut r, mut w) = tokio::io::split(client);
    w.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let (out, closed) = until_closed(&mut r).await;
    assert!(closed, "the keep-alive timeout must close the connection");
    assert_eq!(statuses(&out), vec![200], "{out}");
}

#[tokio::test]
async fn non_ascii_request_targets_get_400_without_a_panic() {
    for target in ["ééééé", "/é", "http://é.example/x", "h\u{e9}ttp://x/"] {
        let req = format!("GET {target} HTTP/1.1\r\nHost: a\r\n\r\n");
        let out = exchange(req.as_bytes()).await;
        assert_eq!(statuses(&out), vec![400], "{target}: {out}");
    }
}

#[tokio::test]
async fn expect_continue_is_answered_only_when_the_body_is_read() {
    // Read: 100 first, then the final response.
    let (client, server) = tokio::io::duplex(1 << 16);
    let _stop = start(server);
    let (mut r, mut w) = tokio::io::split(client);
    w.write_all(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(2), r.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], b"HTTP/1.1 100 Continue\r\n\r\n");
    w.write_all(b"abc").await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(2), r.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let out = String::from_utf8_lossy(&buf[..n]);
    assert!(
        out.starts_with("HTTP/1.1 200 OK\r\n") && out.ends_with("got 3"),
        "{out}"
    );

    // Refused before reading: no 100, and the connection closes (the body never came).
    let out = exchange(
        b"POST /refuse HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n",
    )
    .await;
    assert!(!out.contains("100 Continue"), "{out}");
    assert_eq!(statuses(&out), vec![200], "{out}");
    assert!(out.contains("connection: close"), "{out}");
}

#[tokio::test]
async fn an_unread_buffered_body_is_skipped_and_the_connection_kept() {
    let out = exchange(
        b"POST /refuse HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhelloPOST /refuse HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(statuses(&out), vec![200, 200, 200], "{out}");
    assert!(out.ends_with("got 0"), "{out}");
}

#[tokio::test]
async fn http10_keep_alive_and_head_responses() {
    let out = exchange(
        b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nHEAD / HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.0\r\n\r\n",
    )
    .await;
    assert_eq!(statuses(&out), vec![200, 200, 200], "{out}");
    assert!(out.contains("connection: keep-alive"), "{out}");
    // The HEAD response carries the length but no body: the next response follows at once.
    let head = out.split("HTTP/1.1 ").nth(2).unwrap();
    assert!(head.ends_with("\r\n\r\n"), "{head:?}");
    assert!(head.contains("content-length: 5"), "{head:?}");
    assert!(
        out.ends_with("connection: close\r\n\r\ngot 0") || out.ends_with("got 0"),
        "{out}"
    );
}

#[tokio::test]
async fn streamed_bodies_without_a_length_go_chunked() {
    let (client, _stop_tx) = serve_with(1 << 16, |_req: Request<RequestBody>| async {
        let frames = futures_util::stream::iter(vec![
            Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(b"hello "))),
            Ok(Frame::data(Bytes::from_static(b"world"))),
        ]);
        Response::new(http_body_util::StreamBody::new(frames))
    });
    let (mut r, mut w) = tokio::io::split(client);
    w.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (out, _) = until_closed(&mut r).await;
    assert!(out.contains("transfer-encoding: chunked"), "{out}");
    assert!(
        out.ends_with("\r\n\r\n6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n"),
        "{out}"
    );
}

#[tokio::test]
async fn shutdown_closes_idle_connections_and_finishes_the_current_request() {
    let (client, server) = tokio::io::duplex(1 << 16);
    let stop = start(server);
    let (mut r, mut w) = tokio::io::split(client);
    w.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 1024];
    let n = r.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    stop.send(true).unwrap();
    let (rest, closed) = until_closed(&mut r).await;
    assert!(closed, "an idle connection closes on shutdown");
    assert!(rest.is_empty());
}

#[tokio::test]
async fn websocket_upgrade_hands_over_the_connection() {
    let (client, _stop_tx) = serve_with(1 << 16, |mut req: Request<RequestBody>| async move {
        let up = req.extensions_mut().remove::<OnUpgrade>();
        if let Some(up) = up {
            tokio::spawn(async move {
                if let Some(mut io) = up.upgraded().await {
                    let mut b = [0u8; 4];
                    if io.read_exact(&mut b).await.is_ok() {
                        let _ = io.write_all(&b).await;
                    }
                }
            });
            let mut resp = Response::new(Full::new(Bytes::new()));
            *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            resp.headers_mut()
                .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            return resp;
        }
        Response::new(Full::new(Bytes::from_static(b"plain")))
    });
    let (mut r, mut w) = tokio::io::split(client);
    // The first frame arrives with the head: it must reach the new protocol's reader.
    w.write_all(
        b"GET / HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nping",
    )
    .await
    .unwrap();
    let (out, _) = until_closed(&mut r).await;
    assert!(
        out.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{out}"
    );
    assert!(out.contains("connection: upgrade\r\n"), "{out}");
    assert!(!out.contains("content-length"), "{out}");
    assert!(out.ends_with("\r\n\r\nping"), "{out}");
}

use http::HeaderValue;

#[tokio::test]
async fn a_body_held_past_its_response_never_reads_the_next_requests_body() {
    // Like hyper's HTTP/2 client, which sends a request body from its own task: the handler
    // answers at once and a spawned task keeps reading the body afterwards.
    let held: Arc<std::sync::Mutex<Vec<u8>>> = Arc::default();
    let (go_tx, go_rx) = watch::channel(false);
    let held2 = held.clone();
    let (client, _stop_tx) = serve_with(1 << 20, move |req: Request<RequestBody>| {
        let held = held2.clone();
        let mut go = go_rx.clone();
        async move {
            if req.uri().path() == "/first" {
                let mut body = req.into_body();
                tokio::spawn(async move {
                    let _ = go.wait_for(|g| *g).await;
                    while let Some(Ok(f)) = body.frame().await {
                        if let Ok(d) = f.into_data() {
                            held.lock().unwrap().extend_from_slice(&d);
                        }
                    }
                });
                return Response::new(Full::new(Bytes::from_static(b"early")));
            }
            got(req.into_body()).await
        }
    });
    let (mut r, mut w) = tokio::io::split(client);
    w.write_all(b"POST /first HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nAAAAA")
        .await
        .unwrap();
    let (out, _) = until_closed(&mut r).await;
    // The first answer closes the connection: its body was still someone else's to read.
    assert_eq!(statuses(&out), vec![200], "{out}");
    assert!(out.contains("connection: close"), "{out}");
    go_tx.send(true).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        held.lock().unwrap().is_empty(),
        "a cut-off body yields no data"
    );

    // Pipelined: the second request's body arrives after the first response.
    let held: Arc<std::sync::Mutex<Vec<u8>>> = Arc::default();
    let held2 = held.clone();
    let (client, _stop_tx) = serve_with(1 << 20, move |req: Request<RequestBody>| {
        let held = held2.clone();
        async move {
            let mut body = req.into_body();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                while let Some(Ok(f)) = body.frame().await {
                    if let Ok(d) = f.into_data() {
                        held.lock().unwrap().extend_from_slice(&d);
                    }
                }
            });
            Response::new(Full::new(Bytes::from_static(b"early")))
        }
    });
    let (mut r, mut w) = tokio::io::split(client);
    w.write_all(b"POST /first HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nAAAAAPOST /second HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _ = w.write_all(b"SECRETBODY").await;
    let _ = until_closed(&mut r).await;
    let held = String::from_utf8_lossy(&held.lock().unwrap()).into_owned();
    assert!(!held.contains("SECRET"), "{held}");
}

#[tokio::test]
async fn an_interim_status_as_a_final_response_becomes_502() {
    let (client, _stop_tx) = serve_with(1 << 16, |_req: Request<RequestBody>| async {
        let mut r = Response::new(Full::new(Bytes::from_static(b"x")));
        *r.status_mut() = StatusCode::from_u16(103).unwrap();
        r
    });
    let (mut r, mut w) = tokio::io::split(client);
    w.write_all(b"GET /a HTTP/1.1\r\nHost: t\r\n\r\nGET /b HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let (out, _) = until_closed(&mut r).await;
    assert_eq!(statuses(&out), vec![502], "{out}");
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_off_by_the_send_timeout() {
    let (client, server) = tokio::io::duplex(4096);
    let (_stop_tx, stop_rx) = watch::channel(false);
    let done = Arc::new(tokio::sync::Notify::new());
    let done2 = done.clone();
    tokio::spawn(async move {
        serve(
            server,
            limits(),
            stop_rx,
            |_req: Request<RequestBody>| async {
                Response::new(Full::new(Bytes::from(vec![b'x'; 1 << 20])))
            },
        )
        .await;
        done2.notify_one();
    });
    let (_r, mut w) = tokio::io::split(client);
    w.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    // Never read: the server must give up on its own (send timeout 300 ms).
    let ended = tokio::time::timeout(Duration::from_secs(3), done.notified()).await;
    assert!(ended.is_ok(), "the connection task must end");
}

/// A body carrying encoded header lines, as an upstream response relayed in wire mode does.
struct Wired(Option<WireHead>, Full<Bytes>);

impl Body for Wired {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.get_mut().1).poll_frame(cx)
    }

    fn size_hint(&self) -> SizeHint {
        self.1.size_hint()
    }
}

impl WireBody for Wired {
    fn take_wire(&mut self) -> Option<WireHead> {
        self.0.take()
    }
}

#[tokio::test]
async fn wire_header_lines_are_written_as_they_are() {
    // The lines carry a Date (so the server adds none) and the upstream's length, which a
    // HEAD response still reports.
    let (client, _stop_tx) = serve_with(1 << 16, |req: Request<RequestBody>| async move {
        let mut w = WireHead {
            date: true,
            length: Some(5),
            ..WireHead::default()
        };
        w.push(b"X-Up", b"1");
        w.push(b"Date", b"Mon, 01 Jan 2024 00:00:00 GMT");
        let body = if req.method() == Method::HEAD {
            Full::new(Bytes::new())
        } else {
            Full::new(Bytes::from_static(b"hello"))
        };
        let mut resp = Response::new(Wired(Some(w), body));
        resp.headers_mut()
            .insert("x-map", http::HeaderValue::from_static("2"));
        resp
    });
    let (mut r, mut w) = tokio::io::split(client);
    w.write_all(
        b"GET / HTTP/1.1\r\nHost: t\r\n\r\nHEAD / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let (out, _) = until_closed(&mut r).await;
    let (get, head) = out.split_at(out.rfind("HTTP/1.1 200 OK\r\n").unwrap());
    assert_eq!(
        get,
        "HTTP/1.1 200 OK\r\nx-map: 2\r\nX-Up: 1\r\nDate: Mon, 01 Jan 2024 00:00:00 GMT\r\ncontent-length: 5\r\n\r\nhello"
    );
    assert_eq!(
        head,
        "HTTP/1.1 200 OK\r\nx-map: 2\r\nX-Up: 1\r\nDate: Mon, 01 Jan 2024 00:00:00 GMT\r\ncontent-length: 5\r\nconnection: close\r\n\r\n"
    );
}

#[tokio::test]
async fn heads_of_any_line_count_arrive_whole_and_in_order() {
    // The handler answers with every header as `name=value`, in the order the map holds them.
    let (client, _stop_tx) = serve_with(1 << 20, |req: Request<RequestBody>| async move {
        let lines: Vec<String> = req
            .headers()
            .iter()
            .map(|(k, v)| format!("{k}={}", v.to_str().unwrap_or("?")))
            .collect();
        Response::new(Full::new(Bytes::from(format!(
            "{} {}",
            req.uri(),
            lines.join(",")
        ))))
    });
    let (mut r, mut w) = tokio::io::split(client);
    // Two pipelined requests in one write: one with lines on the stack (3), one that spills
    // past them (40); the second head is split from the same read buffer as the first.
    let mut input = b"GET /a?x=1 HTTP/1.1\r\nHost: t\r\nX-One: 1\r\n\r\n".to_vec();
    input.extend_from_slice(b"GET /b HTTP/1.1\r\nHost: t\r\n");
    for i in 0..39 {
        input.extend_from_slice(format!("X-H{i}: v{i}\r\n").as_bytes());
    }
    input.extend_from_slice(b"Connection: close\r\n\r\n");
    w.write_all(&input).await.unwrap();
    let (out, closed) = until_closed(&mut r).await;
    assert!(closed);
    assert!(out.contains("/a?x=1 host=t,x-one=1"), "{out}");
    let mut expected = String::from("/b host=t,");
    for i in 0..39 {
        expected.push_str(&format!("x-h{i}=v{i},"));
    }
    expected.push_str("connection=close");
    assert!(out.contains(&expected), "{out}");
}
