//! Network log plugins through the real binary, against real collectors started here:
//! http-log (HTTP collector: entries, batching, headers, retries, dead and slow collectors,
//! overflow reporting), tcp-log (newline-delimited JSON, reconnect), udp-log (datagrams) and
//! syslog (PRI by status over UDP and a local socket). Credentials never reach a collector.

#![allow(clippy::unwrap_used)]

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{HeaderMap, Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{TcpListener, UdpSocket};

/// Secrets the client sends; none may reach a collector.
const SECRETS: &[&str] = &["alice-sink-secret", "client-bearer-value", "cookie-secret"];

/// An HTTP log collector: records every accepted body, can fail or stall on demand.
#[derive(Clone)]
struct Collector {
    addr: SocketAddr,
    /// Accepted requests: headers and body.
    got: Arc<Mutex<Vec<(HeaderMap, Value)>>>,
    /// Requests to answer 500 before accepting.
    fail: Arc<AtomicUsize>,
    /// Sleep before answering, ms.
    delay_ms: Arc<AtomicU64>,
    /// Requests received (accepted or not).
    hits: Arc<AtomicUsize>,
}

impl Collector {
    async fn start() -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = Collector {
            addr: listener.local_addr().unwrap(),
            got: Arc::default(),
            fail: Arc::default(),
            delay_ms: Arc::default(),
            hits: Arc::default(),
        };
        let state = c.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = state.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| state.clone().handle(req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        c
    }

    async fn handle(self, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
        self.hits.fetch_add(1, Ordering::SeqCst);
        let delay = self.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        let headers = req.headers().clone();
        let body = req.into_body().collect().await.unwrap().to_bytes();
        if self
            .fail
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Ok(Response::builder()
                .status(500)
                .body(Full::new(Bytes::from_static(b"not now")))
                .unwrap());
        }
        let v: Value = serde_json::from_slice(&body).unwrap();
        self.got.lock().unwrap().push((headers, v));
        Ok(Response::new(Full::new(Bytes::from_static(b"ok"))))
    }

    fn url(&self) -> String {
        format!(
            "http://127.0.0.1:{}/ingest?token=query-token",
            self.addr.port()
        )
    }

    fn bodies(&self) -> Vec<Value> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .map(|(_, b)| b.clone())
            .collect()
    }

    /// Entries received, arrays flattened.
    fn entries(&self) -> Vec<Value> {
        self.bodies()
            .into_iter()
            .flat_map(|b| match b {
                Value::Array(a) => a,
                one => vec![one],
            })
            .collect()
    }

    async fn wait_entries(&self, n: usize, secs: u64) -> Vec<Value> {
        let until = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < until {
            let e = self.entries();
            if e.len() >= n {
                return e;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("collector got {} of {n} entries", self.entries().len());
    }
}

fn assert_no_secrets(what: &str, text: &str) {
    for s in SECRETS.iter().chain(&["collector-token", "query-token"]) {
        assert!(!text.contains(s), "{s} leaked into {what}");
    }
}

/// A consumer with a key, a key-auth route `/api` and a plain route `/open` on one service,
/// plus `plugins` (YAML, at the top level).
fn config(origin: &str, plugins: &str) -> String {
    format!(
        r#"_format_version: "3.0"
consumers:
  - username: alice
    keyauth_credentials:
      - key: alice-sink-secret
services:
  - name: echo
    url: {origin}
    routes:
      - name: api
        paths: [/api]
        plugins:
          - name: key-auth
      - name: open
        paths: [/open]
plugins:
{plugins}"#
    )
}

/// A request carrying every kind of credential.
async fn credentialed(gw: &Gw) -> Reply {
    let r = get(
        gw.proxy,
        "/api/items?apikey=alice-sink-secret&page=2",
        &[
            ("authorization", "Bearer client-bearer-value"),
            ("cookie", "sid=cookie-secret"),
        ],
    )
    .await
    .unwrap();
    assert_status(&r, 200);
    r
}

fn by_id<'a>(entries: &'a [Value], r: &Reply) -> &'a Value {
    let id = r.header("x-request-id").unwrap();
    entries
        .iter()
        .find(|e| e["request"]["id"] == id.as_str())
        .unwrap_or_else(|| panic!("no entry for {id}"))
}

#[tokio::test]
async fn http_log_posts_kong_entries_with_headers_and_custom_fields() {
    let origin = Origin::start("a").await;
    let collector = Collector::start().await;
    let plugins = format!(
        r#"  - name: http-log
    config:
      http_endpoint: "{}"
      headers: {{Authorization: "Bearer collector-token", X-Source: portcullis}}
      custom_fields: {{env: test, request.team: payments}}
"#,
        collector.url()
    );
    let gw = Gw::start(&config(&origin.url(), &plugins)).await;
    let ok = credentialed(&gw).await;
    let refused = get(gw.proxy, "/api", &[]).await.unwrap();
    assert_status(&refused, 401);

    let entries = collector.wait_entries(2, 10).await;
    // max_batch_size 1 (Kong's default): one JSON object per request, not an array.
    assert!(collector.bodies().iter().all(Value::is_object));
    let e = by_id(&entries, &ok);
    assert_eq!(e["request"]["method"], "GET");
    assert_eq!(e["response"]["status"], 200);
    assert_eq!(e["route"]["name"], "api");
    assert_eq!(e["service"]["name"], "echo");
    assert_eq!(e["consumer"]["username"], "alice");
    assert_eq!(e["env"], "test");
    assert_eq!(e["request"]["team"], "payments");
    assert_eq!(e["request"]["querystring"]["apikey"], "REDACTED");
    assert_eq!(e["request"]["querystring"]["page"], "2");
    assert_eq!(e["request"]["headers"]["authorization"], "REDACTED");
    assert_eq!(e["request"]["headers"]["cookie"], "REDACTED");
    let e = by_id(&entries, &refused);
    assert_eq!(e["response"]["status"], 401);
    assert_eq!(e["refused_by"], "key-auth");

    let got = collector.got.lock().unwrap().clone();
    for (h, body) in &got {
        assert_eq!(h["authorization"], "Bearer collector-token");
        assert_eq!(h["x-source"], "portcullis");
        assert_eq!(h["content-type"], "application/json");
        for s in SECRETS {
            assert!(!body.to_string().contains(s), "{s} reached the collector");
        }
    }
    assert_no_secrets("the gateway log", &gw.logs());
}

#[tokio::test]
async fn http_log_batches_are_json_arrays_of_at_most_max_batch_size() {
    let origin = Origin::start("a").await;
    let collector = Collector::start().await;
    let plugins = format!(
        "  - name: http-log\n    config:\n      http_endpoint: \"{}\"\n      method: PUT\n      queue: {{max_batch_size: 5, max_coalescing_delay: 0.5}}\n",
        collector.url()
    );
    let gw = Gw::start(&config(&origin.url(), &plugins)).await;
    let mut replies = Vec::new();
    for _ in 0..12 {
        let r = gw.get("/open/x").await;
        assert_status(&r, 200);
        replies.push(r);
    }
    let entries = collector.wait_entries(12, 10).await;
    assert_eq!(entries.len(), 12);
    let bodies = collector.bodies();
    for b in &bodies {
        let n = b.as_array().expect("a batch is an array").len();
        assert!((1..=5).contains(&n), "batch of {n}");
    }
    assert!(bodies.len() >= 3, "12 entries need at least 3 batches of 5");
    assert!(
        bodies.iter().any(|b| b.as_array().unwrap().len() > 1),
        "requests within the coalescing delay share a batch"
    );
    for r in &replies {
        assert_eq!(by_id(&entries, r)["route"]["name"], "open");
    }
}

#[tokio::test]
async fn http_log_retries_a_failing_collector_until_it_accepts() {
    let origin = Origin::start("a").await;
    let collector = Collector::start().await;
    collector.fail.store(3, Ordering::SeqCst);
    let plugins = format!(
        "  - name: http-log\n    config:\n      http_endpoint: \"{}\"\n      queue: {{initial_retry_delay: 0.05, max_retry_delay: 0.2}}\n",
        collector.url()
    );
    let gw = Gw::start(&config(&origin.url(), &plugins)).await;
    let a = gw.get("/open/a").await;
    let b = gw.get("/open/b").await;
    let entries = collector.wait_entries(2, 10).await;
    by_id(&entries, &a);
    by_id(&entries, &b);
    assert_eq!(entries.len(), 2, "each entry delivered once");
    assert!(
        collector.hits.load(Ordering::SeqCst) >= 5,
        "3 refusals, then 2 deliveries"
    );
    assert!(
        gw.logs().contains("will retry"),
        "failures are logged:\n{}",
        gw.logs()
    );
    assert_no_secrets("the gateway log", &gw.logs());
}

#[tokio::test]
async fn dead_or_slow_collectors_never_slow_the_proxy_and_overflow_is_counted() {
    let origin = Origin::start("a").await;
    let slow = Collector::start().await;
    slow.delay_ms.store(10_000, Ordering::SeqCst);
    let dead = free_port(); // bound, then released: connections are refused
    let cfg = format!(
        r#"_format_version: "3.0"
services:
  - name: echo
    url: {origin}
    routes:
      - name: slow
        paths: [/slow]
        plugins:
          - name: http-log
            config:
              http_endpoint: "{slow}"
              headers: {{Authorization: "Bearer collector-token"}}
              queue: {{max_entries: 5}}
      - name: dead
        paths: [/dead]
        plugins:
          - name: http-log
            config:
              http_endpoint: "http://127.0.0.1:{dead}/ingest"
              queue: {{max_entries: 5, initial_retry_delay: 0.01}}
"#,
        origin = origin.url(),
        slow = slow.url(),
    );
    let gw = Gw::start(&cfg).await;
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for i in 0..200 {
        let path = if i % 2 == 0 { "/slow/x" } else { "/dead/x" };
        let t = Instant::now();
        let r = gw.get(path).await;
        slowest = slowest.max(t.elapsed());
        assert_status(&r, 200);
    }
    // Were the log phase waiting for a collector, one request would take 10 s (slow) or the
    // retry time (dead); 200 requests would take minutes.
    assert!(
        slowest < Duration::from_secs(5),
        "slowest request {slowest:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "200 requests took {:?}",
        started.elapsed()
    );
    // At most 5 queued + a batch in flight + one waiting (a few more if the slow collector's
    // 10 s timeout passes meanwhile): the rest of each 100 is dropped and reported with a
    // count (warnings at most once a second).
    let mut dropped = std::collections::HashMap::new();
    for _ in 0..100 {
        dropped.clear();
        for line in std::fs::read_to_string(&gw.log).unwrap_or_default().lines() {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            if v["message"]
                .as_str()
                .is_some_and(|m| m.contains("log queue full"))
            {
                let dest = v["destination"].as_str().unwrap().to_string();
                let n = v["dropped"].as_u64().unwrap();
                *dropped.entry(dest).or_insert(0) += n;
            }
        }
        if dropped.values().sum::<u64>() >= 2 * 93 && dropped.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let slow_dest = format!("http://127.0.0.1:{}/ingest", slow.addr.port());
    let dead_dest = format!("http://127.0.0.1:{dead}/ingest");
    for d in [&slow_dest, &dead_dest] {
        let n = dropped.get(d).copied().unwrap_or(0);
        assert!(
            (93..=95).contains(&n),
            "{d}: {n} dropped; {dropped:?}\n{}",
            gw.logs()
        );
    }
    assert_no_secrets("the gateway log", &gw.logs());
}

#[tokio::test]
async fn tcp_log_writes_json_lines_and_reconnects() {
    let origin = Origin::start("a").await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let plugins = format!(
        "  - name: tcp-log\n    config: {{host: 127.0.0.1, port: {port}, custom_fields: {{env: tcp}}}}\n"
    );
    let gw = Gw::start(&config(&origin.url(), &plugins)).await;
    let first = credentialed(&gw).await;
    let second = gw.get("/open/x").await;

    let (conn, _) = tokio::time::timeout(Duration::from_secs(5), listener.accept())
        .await
        .unwrap()
        .unwrap();
    let mut lines = BufReader::new(conn).lines();
    let mut got = Vec::new();
    for _ in 0..2 {
        let l = tokio::time::timeout(Duration::from_secs(5), lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_no_secrets("a tcp-log line", &l);
        got.push(serde_json::from_str::<Value>(&l).unwrap());
    }
    let e = by_id(&got, &first);
    assert_eq!(e["consumer"]["username"], "alice");
    assert_eq!(e["request"]["headers"]["authorization"], "REDACTED");
    assert_eq!(e["env"], "tcp");
    assert_eq!(by_id(&got, &second)["route"]["name"], "open");

    // The collector goes away: the next entry arrives on a new connection.
    drop(lines);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let third = gw.get("/open/y").await;
    let (conn, _) = tokio::time::timeout(Duration::from_secs(5), listener.accept())
        .await
        .unwrap()
        .unwrap();
    let mut lines = BufReader::new(conn).lines();
    let l = tokio::time::timeout(Duration::from_secs(5), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let v: Value = serde_json::from_str(&l).unwrap();
    assert_eq!(
        v["request"]["id"],
        third.header("x-request-id").unwrap().as_str()
    );
}

async fn datagram(socket: &UdpSocket) -> String {
    let mut buf = vec![0u8; 70_000];
    let n = tokio::time::timeout(Duration::from_secs(5), socket.recv(&mut buf))
        .await
        .expect("a datagram")
        .unwrap();
    String::from_utf8(buf[..n].to_vec()).unwrap()
}

#[tokio::test]
async fn udp_log_sends_one_datagram_per_entry() {
    let origin = Origin::start("a").await;
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = socket.local_addr().unwrap().port();
    let plugins = format!("  - name: udp-log\n    config: {{host: 127.0.0.1, port: {port}}}\n");
    let gw = Gw::start(&config(&origin.url(), &plugins)).await;
    let a = credentialed(&gw).await;
    let b = gw.get("/nowhere").await;
    assert_status(&b, 404);
    let mut got = Vec::new();
    for _ in 0..2 {
        let d = datagram(&socket).await;
        assert_no_secrets("a udp-log datagram", &d);
        got.push(serde_json::from_str::<Value>(&d).unwrap());
    }
    assert_eq!(by_id(&got, &a)["response"]["status"], 200);
    let e = by_id(&got, &b);
    assert_eq!(e["response"]["status"], 404);
    assert!(e.get("route").is_none());
}

/// The message after the syslog header, parsed.
fn syslog_json(line: &str) -> Value {
    let json = &line[line.find('{').unwrap()..];
    serde_json::from_str(json).unwrap()
}

#[tokio::test]
async fn syslog_priority_follows_status_and_configured_severities() {
    let origin = Origin::start("a").await;
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = socket.local_addr().unwrap().port();
    let plugins = format!(
        "  - name: syslog\n    config: {{host: 127.0.0.1, port: {port}, facility: local0, successful_severity: info, client_errors_severity: debug, server_errors_severity: err}}\n"
    );
    let gw = Gw::start(&config(&origin.url(), &plugins)).await;
    let ok = credentialed(&gw).await;
    // debug is below log_level (info): not sent.
    assert_status(&gw.get("/nowhere").await, 404);
    let failed = gw.get("/open/status/500").await;
    assert_status(&failed, 500);
    let mut got = Vec::new();
    for _ in 0..2 {
        let d = datagram(&socket).await;
        assert_no_secrets("a syslog message", &d);
        got.push(d);
    }
    let line_of = |r: &Reply| {
        let id = r.header("x-request-id").unwrap();
        got.iter()
            .find(|l| syslog_json(l)["request"]["id"] == id.as_str())
            .unwrap()
            .clone()
    };
    // local0 = 16: 16*8 + info (6) = 134, + err (3) = 131.
    let l = line_of(&ok);
    assert!(l.starts_with("<134>"), "{l}");
    assert!(l.contains(" kong["), "{l}");
    assert!(line_of(&failed).starts_with("<131>"));
    let mut buf = [0u8; 100];
    assert!(
        tokio::time::timeout(Duration::from_millis(500), socket.recv(&mut buf))
            .await
            .is_err(),
        "the 404 must not be sent"
    );
}

#[tokio::test]
async fn syslog_writes_rfc5424_to_a_local_socket() {
    let origin = Origin::start("a").await;
    let dir = temp_dir();
    let path = dir.join("log.sock");
    let socket = tokio::net::UnixDatagram::bind(&path).unwrap();
    let plugins = format!(
        "  - name: syslog\n    config: {{path: {}, format: rfc5424}}\n",
        path.display()
    );
    let gw = Gw::start(&config(&origin.url(), &plugins)).await;
    let r = gw.get("/open/x").await;
    let mut buf = vec![0u8; 70_000];
    let n = tokio::time::timeout(Duration::from_secs(5), socket.recv(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let line = String::from_utf8(buf[..n].to_vec()).unwrap();
    // user (1) * 8 + info (6) = 14; version 1.
    assert!(line.starts_with("<14>1 20"), "{line}");
    assert!(line.contains(" kong "), "{line}");
    assert_eq!(
        syslog_json(&line)["request"]["id"],
        r.header("x-request-id").unwrap().as_str()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn validate(yaml: &str) -> (bool, String) {
    let dir = temp_dir();
    let f = dir.join("c.yml");
    write_file(&f, yaml);
    let out = std::process::Command::new(common::bin())
        .args(["config", "validate"])
        .arg(&f)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[tokio::test]
async fn bad_log_plugin_configs_are_refused_with_paths() {
    let (ok, text) = validate(
        r#"_format_version: "3.0"
plugins:
  - name: http-log
    config: {method: POST}
  - name: http-log
    config: {http_endpoint: "ftp://user:ftp-secret@logs.example.com/x"}
  - name: tcp-log
    config: {host: logs.example.com, port: 5000, colour: blue}
  - name: udp-log
    config: {host: logs.example.com}
  - name: syslog
    config: {server_errors_severity: fatal}
  - name: http-log
    config: {http_endpoint: "http://logs.example.com/", queue: {max_batch_size: 0}, headers: {Content-Type: text/plain}}
"#,
    );
    assert!(!ok, "{text}");
    for want in [
        "plugins[0].config.http_endpoint",
        "plugins[1].config.http_endpoint",
        "plugins[2].config.colour",
        "plugins[3].config.port",
        "plugins[4].config.server_errors_severity",
        "plugins[5].config.queue.max_batch_size",
        "plugins[5].config.headers.Content-Type",
    ] {
        assert!(text.contains(want), "{want} missing:\n{text}");
    }
    assert!(!text.contains("ftp-secret"), "{text}");
}

#[tokio::test]
async fn the_logging_example_validates() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/logging.yml");
    let (ok, text) = validate(&std::fs::read_to_string(path).unwrap());
    assert!(ok, "{text}");
}
