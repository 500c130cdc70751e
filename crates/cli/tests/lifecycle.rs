//! Reload, shutdown, validation and strict parsing through the real binary.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;

fn config(origin: &str, route: &str) -> String {
    one_service(
        origin,
        &format!("      - name: r\n        paths: [{route}]\n"),
    )
}

#[tokio::test]
async fn sighup_applies_valid_config_and_refuses_invalid() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&config(&origin.url(), "/v1")).await;
    assert_status(&gw.get("/v1").await, 200);
    assert_status(&gw.get("/v2").await, 404);

    gw.reload(&config(&origin.url(), "/v2")).await;
    assert_status(&gw.get("/v2").await, 200);
    assert_status(&gw.get("/v1").await, 404);

    // An invalid config is refused, its errors logged with paths, and /v2 keeps serving.
    let hash = gw.config_hash().await;
    gw.reload(&config(&origin.url(), "no-slash")).await;
    assert_eq!(gw.config_hash().await, hash);
    assert_status(&gw.get("/v2").await, 200);
    let logs = gw.logs();
    assert!(logs.contains("services[0].routes[0].paths[0]"), "{logs}");
    assert!(logs.contains("config reload refused"));
}

#[tokio::test]
async fn reload_under_load_drops_nothing() {
    let a = Origin::start("a").await;
    let b = Origin::start("b").await;
    let gw = Gw::start(&config(&a.url(), "/")).await;
    let failures = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (f, d, s, addr) = (failures.clone(), done.clone(), stop.clone(), gw.proxy);
        tasks.push(tokio::spawn(async move {
            while !s.load(Ordering::Relaxed) {
                match get(addr, "/delay/5", &[]).await {
                    Ok(r) if r.status == 200 => {}
                    _ => {
                        f.fetch_add(1, Ordering::Relaxed);
                    }
                }
                d.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for i in 0..6 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let target = if i % 2 == 0 { &b } else { &a };
        gw.reload(&config(&target.url(), "/")).await;
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    assert!(done.load(Ordering::Relaxed) > 100, "load was too light");
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "requests failed during reloads"
    );
    assert!(a.hits() > 0 && b.hits() > 0);
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests() {
    let origin = Origin::start("a").await;
    let mut gw = Gw::start(&config(&origin.url(), "/")).await;
    let addr = gw.proxy;
    let slow = tokio::spawn(async move { get(addr, "/delay/800", &[]).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    gw.signal("TERM");
    let r = slow.await.unwrap().expect("in-flight request completes");
    assert_eq!(r.status, 200);
    let status = tokio::task::spawn_blocking(move || {
        let s = gw.child.wait();
        (s, gw)
    })
    .await
    .unwrap();
    assert!(status.0.unwrap().success());
    // New connections are refused after shutdown.
    assert!(get(addr, "/", &[]).await.is_err());
}

#[tokio::test]
async fn status_endpoint_reports_ready() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&config(&origin.url(), "/")).await;
    let r = get(gw.admin, "/status", &[]).await.unwrap();
    assert_status(&r, 200);
    let j = r.json();
    assert_eq!(j["ready"], true);
    assert_eq!(j["database"]["reachable"], true);
    assert_eq!(j["configuration_hash"].as_str().unwrap().len(), 32);
}

#[test]
fn config_validate_prints_every_error_with_its_path() {
    let dir = temp_dir();
    let bad = dir.join("bad.yml");
    std::fs::write(
        &bad,
        r#"_format_version: "3.0"
services:
  - name: s
    host: example.com
    port: 99999
    routes:
      - name: a
        paths: ["/ok"]
      - name: b
        paths: ["/ok"]
      - name: c
        paths: ["nope"]
plugins:
  - name: no-such-plugin
  - name: request-termination
    config: {status_code: 42}
routes:
  - name: dangling
    service: missing
    paths: [/x]
"#,
    )
    .unwrap();
    let out = std::process::Command::new(common::bin())
        .args(["config", "validate"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for want in [
        "services[0].port: value should be between 0 and 65535",
        "services[0].routes[2].paths[0]: must start with \"/\" or \"~\"",
        "plugins[0].name: plugin 'no-such-plugin' not enabled",
        "plugins[1].config.status_code: value should be between 100 and 599",
        "routes[0].service: service 'missing' not found",
    ] {
        assert!(stdout.contains(want), "missing {want:?} in:\n{stdout}");
    }
    let good = dir.join("good.yml");
    std::fs::write(&good, "_format_version: \"3.0\"\nservices: [{name: s, url: 'http://x:1', routes: [{name: r, paths: [/]}]}]\n").unwrap();
    let out = std::process::Command::new(common::bin())
        .args(["config", "validate"])
        .arg(&good)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stdout.contains("valid (1 services, 1 routes"));
}

#[tokio::test]
async fn invalid_config_at_start_fails_with_paths() {
    let dir = temp_dir();
    let cfg = dir.join("kong.yml");
    std::fs::write(
        &cfg,
        "_format_version: \"3.0\"\nservices: [{name: s, host: h, retries: -1}]\n",
    )
    .unwrap();
    let out = std::process::Command::new(common::bin())
        .args(["start", "--config"])
        .arg(&cfg)
        .args(["--proxy-listen", &format!("127.0.0.1:{}", free_port())])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("services[0].retries"), "{err}");
}

#[tokio::test]
async fn malformed_requests_get_400_and_close_never_reaching_the_upstream() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&config(&origin.url(), "/")).await;
    let cases: &[&[u8]] = &[
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 37\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: t\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nContent-Length: 26\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad Header: x\r\nHost: t\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: t\r\nX: \x01\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"get / HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET / HTTP/1.1\nHost: t\n\n",
        // Bare CRs: refused at once, not left waiting for a line end (the client keeps the
        // connection open).
        b"GET / HTTP/1.1\rHost: t\r\r",
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        // Refused as nginx does: an empty Host, and Content-Length twice even when equal.
        b"GET / HTTP/1.1\r\nHost:\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\nabcd",
        // A Host whose port is not a number: refused by the handler, closed all the same.
        b"GET / HTTP/1.1\r\nHost: a:abc\r\n\r\n",
        // Hosts that split to nothing.
        b"GET / HTTP/1.1\r\nHost: :80\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: []\r\n\r\n",
    ];
    for (i, case) in cases.iter().enumerate() {
        let (out, closed) = raw(gw.proxy, case).await;
        assert_eq!(
            status_of(&out),
            400,
            "{:?} -> {out}",
            String::from_utf8_lossy(case)
        );
        // The guard's answers come before the request has an id; the handler's (the last
        // three cases) carry it, as Kong's error bodies do.
        if i + 3 < cases.len() {
            assert!(out.ends_with(r#"{"message":"Bad request"}"#), "{out}");
        } else {
            assert!(
                out.contains(r#"{"message":"Bad request","request_id":""#),
                "{out}"
            );
        }
        assert!(closed, "connection must be closed");
    }
    assert_eq!(origin.hits(), 0, "nothing ambiguous reaches the upstream");
    let (out, _) = raw(
        gw.proxy,
        format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "a".repeat(10_000)).as_bytes(),
    )
    .await;
    assert_eq!(status_of(&out), 414);
    let (out, _) = raw(
        gw.proxy,
        format!(
            "GET / HTTP/1.1\r\nHost: t\r\nX: {}\r\n\r\n",
            "a".repeat(40_000)
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(status_of(&out), 431);
    // HTTP/1.0 does not require Host: proxied, as nginx and Kong do.
    let (out, _) = raw(gw.proxy, b"GET / HTTP/1.0\r\n\r\n").await;
    assert_eq!(status_of(&out), 200, "{out}");
    assert_eq!(origin.hits(), 1);
}

#[tokio::test]
async fn slowloris_is_cut_off_with_408() {
    let origin = Origin::start("a").await;
    let gw = Gw::start_with(&config(&origin.url(), "/"), "client_header_timeout = 1.0\n").await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(gw.proxy).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n").await.unwrap();
    let started = std::time::Instant::now();
    let writer = async {
        for i in 0..10 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if s.write_all(format!("X-{i}: y\r\n").as_bytes())
                .await
                .is_err()
            {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(1500), writer).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut out)).await;
    let out = String::from_utf8_lossy(&out);
    assert_eq!(status_of(&out), 408, "{out}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

/// A refused reload logs the same errors `config validate` prints: plugin-schema errors
/// together with the entity ones.
#[tokio::test]
async fn a_refused_reload_logs_plugin_errors_too() {
    let origin = Origin::start("a").await;
    let gw = Gw::start(&config(&origin.url(), "/v1")).await;
    let bad = format!(
        "{}        plugins:\n          - name: request-termination\n            config: {{status_code: 403, bogus_field: 1}}\n      - name: r2\n        paths: [no-slash]\n",
        config(&origin.url(), "/v2")
    );
    let hash = gw.config_hash().await;
    gw.reload(&bad).await;
    assert_eq!(gw.config_hash().await, hash);
    assert_status(&gw.get("/v1").await, 200);
    let logs = gw.logs();
    assert!(
        logs.contains("services[0].routes[0].plugins[0].config.bogus_field"),
        "{logs}"
    );
    assert!(logs.contains("services[0].routes[1].paths[0]"), "{logs}");
}

/// User plus system CPU time of a process so far, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// `busy_polling = true` (one worker): requests are proxied as usual; while they keep coming
/// within the window (50 ms here, so that a debug build and a loaded test machine keep up)
/// the worker polls instead of sleeping, so it is busy though it mostly waits; once traffic
/// stops its spinner parks, so an idle node uses next to no CPU.
#[tokio::test]
async fn busy_polling_spins_under_traffic_then_idles() {
    let origin = Origin::start("busy").await;
    let gw = Gw::start_workers(
        &config(&origin.url(), "/"),
        "busy_polling = true\nbusy_polling_window = 0.05\n",
        1,
    )
    .await;
    let pid = gw.child.id();
    // One request at a time, a new one every 5 ms: each takes the gateway well under 5 ms,
    // so without busy polling its worker sleeps most of the second (13 ticks in a debug build).
    let before = cpu_ticks(pid);
    let start = std::time::Instant::now();
    let mut n = 0;
    while start.elapsed() < Duration::from_secs(1) {
        let r = get(gw.proxy, &format!("/n/{n}"), &[]).await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["origin"], "busy");
        assert_eq!(r.json()["uri"], format!("/n/{n}"));
        n += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let busy = cpu_ticks(pid) - before;
    assert_eq!(origin.hits(), n);
    // 100 ticks per second on Linux; a worker polling all second uses close to 100, less
    // on a machine loaded by other tests, but far above 13.
    assert!(
        busy >= 25,
        "busy-polling worker used only {busy} ticks in one second of traffic"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = cpu_ticks(pid);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = cpu_ticks(pid) - before;
    assert!(
        idle <= 15,
        "idle node used {idle} ticks of CPU in one second"
    );
    // Traffic after the idle spell wakes the worker and is served at once.
    assert_status(&gw.get("/again").await, 200);
}

/// Busy polling needs the single-threaded scheduler: with more workers the node refuses to
/// start and says why.
#[tokio::test]
async fn busy_polling_with_several_workers_is_refused() {
    let cfg = config("http://127.0.0.1:9", "/");
    let err = refused_start(&cfg, "busy_polling = true\nworkers = 2\n");
    assert!(err.contains("busy_polling: needs workers = 1"), "{err}");
    let err = refused_start(&cfg, "busy_polling_window = 0\n");
    assert!(
        err.contains("busy_polling_window: must be greater than 0"),
        "{err}"
    );
}

/// Write batching (`batch_writes`, on by default) holds first writes to the end of the
/// worker's pass while other requests are in flight: with many keep-alive connections busy at
/// once on one worker, every client still gets the answer to its own request, in order, with
/// batching on and off.
#[tokio::test]
async fn concurrent_requests_on_one_worker_get_their_own_answers_with_and_without_batching() {
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::TokioIo;
    let origin = Origin::start("batch").await;
    for settings in ["", "batch_writes = false\n"] {
        let gw = Gw::start_workers(&config(&origin.url(), "/"), settings, 1).await;
        let proxy = gw.proxy;
        let mut tasks = Vec::new();
        for c in 0..32 {
            tasks.push(tokio::spawn(async move {
                let stream = tokio::net::TcpStream::connect(proxy).await.unwrap();
                let (mut sender, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream))
                        .await
                        .unwrap();
                tokio::spawn(conn);
                for n in 0..20 {
                    let path = format!("/c{c}/n{n}");
                    let req = hyper::Request::get(path.as_str())
                        .header("host", "localhost")
                        .body(Full::new(bytes::Bytes::new()))
                        .unwrap();
                    let resp = sender.send_request(req).await.unwrap();
                    assert_eq!(resp.status(), 200, "{settings:?} {path}");
                    let body = resp.into_body().collect().await.unwrap().to_bytes();
                    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                    assert_eq!(v["uri"], path, "{settings:?}");
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    }
    assert_eq!(origin.hits(), 2 * 32 * 20);
}
