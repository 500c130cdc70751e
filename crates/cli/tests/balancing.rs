//! Upstreams, targets, balancing algorithms, retries and health checks through the real binary.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;

fn upstream_config(body: &str) -> String {
    format!(
        r#"_format_version: "3.0"
services:
  - name: svc
    host: backend
    retries: 3
    connect_timeout: 500
    routes: [{{name: r, paths: [/]}}]
upstreams:
{body}"#
    )
}

async fn origins_hit(gw: &Gw, n: usize, headers: &[(&str, &str)]) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for _ in 0..n {
        let r = get(gw.proxy, "/", headers).await.unwrap();
        assert_status(&r, 200);
        *seen
            .entry(r.json()["origin"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
    }
    seen
}

#[tokio::test]
async fn weighted_round_robin_splits_by_weight() {
    let a = Origin::start("a").await;
    let b = Origin::start("b").await;
    let gw = Gw::start(&upstream_config(&format!(
        "  - name: backend\n    targets:\n      - {{target: 127.0.0.1:{}, weight: 300}}\n      - {{target: 127.0.0.1:{}, weight: 100}}\n",
        a.port(),
        b.port()
    )))
    .await;
    let seen = origins_hit(&gw, 40, &[]).await;
    assert_eq!(seen["a"], 30, "{seen:?}");
    assert_eq!(seen["b"], 10, "{seen:?}");
    // The chosen target's host and port are the Host sent upstream (Kong's balancer sets
    // the target's name, not the upstream's).
    let r = gw.get("/").await;
    let want = match r.json()["origin"].as_str().unwrap() {
        "a" => format!("127.0.0.1:{}", a.port()),
        _ => format!("127.0.0.1:{}", b.port()),
    };
    assert_eq!(r.upstream_header("host").unwrap(), want);
}

#[tokio::test]
async fn consistent_hashing_on_header_is_sticky() {
    let a = Origin::start("a").await;
    let b = Origin::start("b").await;
    let c = Origin::start("c").await;
    let gw = Gw::start(&upstream_config(&format!(
        "  - name: backend\n    algorithm: consistent-hashing\n    hash_on: header\n    hash_on_header: x-user\n    targets:\n      - target: 127.0.0.1:{}\n      - target: 127.0.0.1:{}\n      - target: 127.0.0.1:{}\n",
        a.port(),
        b.port(),
        c.port()
    )))
    .await;
    let mut owners = std::collections::HashSet::new();
    for user in 0..12 {
        let id = format!("user-{user}");
        let seen = origins_hit(&gw, 5, &[("x-user", &id)]).await;
        assert_eq!(seen.len(), 1, "user {id} was spread over {seen:?}");
        owners.extend(seen.into_keys());
    }
    assert!(
        owners.len() >= 2,
        "hashing used a single target: {owners:?}"
    );
}

#[tokio::test]
async fn least_connections_avoids_the_busy_target() {
    let a = Origin::start("a").await;
    let b = Origin::start("b").await;
    let gw = Gw::start(&upstream_config(&format!(
        "  - name: backend\n    algorithm: least-connections\n    targets:\n      - target: 127.0.0.1:{}\n      - target: 127.0.0.1:{}\n",
        a.port(),
        b.port()
    )))
    .await;
    // Occupy one target with slow requests, then the quick ones go to the other.
    let addr = gw.proxy;
    let slow: Vec<_> = (0..1)
        .map(|_| tokio::spawn(async move { get(addr, "/delay/1500", &[]).await }))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let busy = if a.hits() > b.hits() { "a" } else { "b" };
    let seen = origins_hit(&gw, 10, &[]).await;
    assert_eq!(
        seen.get(busy).copied().unwrap_or(0),
        0,
        "busy={busy} seen={seen:?}"
    );
    for s in slow {
        s.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn a_dead_target_causes_no_client_error_and_is_marked_down() {
    let a = Origin::start("a").await;
    let dead = free_port();
    let gw = Gw::start(&upstream_config(&format!(
        "  - name: backend\n    healthchecks:\n      passive:\n        unhealthy: {{tcp_failures: 1}}\n    targets:\n      - target: 127.0.0.1:{}\n      - target: 127.0.0.1:{dead}\n",
        a.port()
    )))
    .await;
    for _ in 0..20 {
        let r = gw.get("/").await;
        assert_status(&r, 200);
        assert_eq!(r.json()["origin"], "a");
    }
    assert_eq!(a.hits(), 20);
    let logs = gw.logs();
    assert!(logs.contains("target marked unhealthy"), "{logs}");
    // The dead port never appears in what the client sees.
}

#[tokio::test]
async fn targets_marked_down_by_the_failures_of_a_request_answer_503() {
    // Kong's balancer phase: a retry that finds no healthy target left exits 503 with the
    // error handler's default body; the next request, finding none at the start, gets the
    // ring-balancer message. Without passive checks the same failures end in 502.
    let dead = [free_port(), free_port()];
    let targets = format!(
        "    targets:\n      - target: 127.0.0.1:{}\n      - target: 127.0.0.1:{}\n",
        dead[0], dead[1]
    );
    let gw = Gw::start(&upstream_config(&format!(
        "  - name: backend\n    healthchecks:\n      passive:\n        unhealthy: {{tcp_failures: 1}}\n{targets}"
    )))
    .await;
    let r = gw.get("/").await;
    assert_status(&r, 503);
    assert_error_body(&r, "The upstream server is currently unavailable");
    let r = gw.get("/").await;
    assert_status(&r, 503);
    assert_error_body(&r, "failure to get a peer from the ring-balancer");

    let gw = Gw::start(&upstream_config(&format!("  - name: backend\n{targets}"))).await;
    for _ in 0..2 {
        let r = gw.get("/").await;
        assert_status(&r, 502);
        assert_error_body(
            &r,
            "An invalid response was received from the upstream server",
        );
    }
}

#[tokio::test]
async fn admin_api_reports_target_health_as_kong_does() {
    // Kong's GET /upstreams/{upstream}/health: each target with HEALTHY / UNHEALTHY (or
    // HEALTHCHECKS_OFF without checks), and ?balancer_health=1 for the upstream itself.
    let a = Origin::start("a").await;
    let dead = free_port();
    let gw = Gw::start(&upstream_config(&format!(
        "  - name: backend\n    healthchecks:\n      passive:\n        unhealthy: {{tcp_failures: 1}}\n    targets:\n      - target: 127.0.0.1:{}\n      - target: 127.0.0.1:{dead}\n        tags: [spare]\n  - name: plain\n    targets:\n      - target: 127.0.0.1:{}\n",
        a.port(),
        a.port()
    )))
    .await;
    let health = |body: &serde_json::Value| -> HashMap<String, String> {
        body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    t["target"].as_str().unwrap().to_string(),
                    t["health"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let live = format!("127.0.0.1:{}", a.port());
    let down = format!("127.0.0.1:{dead}");
    let r = get(gw.admin, "/upstreams/backend/health", &[])
        .await
        .unwrap();
    assert_status(&r, 200);
    let before = r.json();
    assert_eq!(health(&before)[&down], "HEALTHY", "{before}");
    assert_eq!(before["data"][1]["tags"], serde_json::json!(["spare"]));
    assert_eq!(before["data"][0]["weight"], 100);
    assert!(before["node_id"].is_string());
    // Requests until one has been sent to the dead target and marked it down.
    for _ in 0..4 {
        assert_status(&gw.get("/").await, 200);
    }
    let r = get(gw.admin, "/upstreams/backend/health", &[])
        .await
        .unwrap();
    let after = r.json();
    assert_eq!(health(&after)[&live], "HEALTHY", "{after}");
    assert_eq!(health(&after)[&down], "UNHEALTHY", "{after}");
    let addr = &after["data"][1]["data"]["addresses"][0];
    assert_eq!(addr["health"], "UNHEALTHY", "{after}");
    assert_eq!(after["data"][1]["data"]["weight"]["available"], 0);
    // By id too, and the balancer's own health (threshold 0: healthy).
    let id = after["data"][0]["upstream"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = get(
        gw.admin,
        &format!("/upstreams/{id}/health?balancer_health=1"),
        &[],
    )
    .await
    .unwrap();
    assert_status(&r, 200);
    let b = r.json();
    assert_eq!(b["data"]["health"], "HEALTHY", "{b}");
    assert_eq!(b["data"]["id"], id.as_str());
    assert_eq!(b["data"]["details"]["weight"]["unavailable"], 100, "{b}");
    // No checks configured: Kong's HEALTHCHECKS_OFF.
    let r = get(gw.admin, "/upstreams/plain/health", &[]).await.unwrap();
    assert_eq!(health(&r.json())[&live], "HEALTHCHECKS_OFF");
    let r = get(gw.admin, "/upstreams/nope/health", &[]).await.unwrap();
    assert_status(&r, 404);
    assert_eq!(r.json(), serde_json::json!({"message": "Not found"}));
}

#[tokio::test]
async fn admin_api_sets_target_health_and_records_the_change() {
    // Kong's POST /upstreams/{u}/targets/{t}/unhealthy|healthy: drain a target by hand, and
    // bring it back; the change is a security event.
    let a = Origin::start("a").await;
    let b = Origin::start("b").await;
    let dir = temp_dir();
    let sec = dir.join("security.log");
    let gw = Gw::start_with(
        &upstream_config(&format!(
            "  - name: backend\n    healthchecks:\n      passive:\n        unhealthy: {{tcp_failures: 3}}\n    targets:\n      - target: 127.0.0.1:{}\n      - target: 127.0.0.1:{}\n  - name: unchecked\n    targets:\n      - target: 127.0.0.1:{}\n      - target: \"[::1]:9\"\n",
            a.port(),
            b.port(),
            a.port()
        )),
        &format!("security_log = \"{}\"\n", sec.display()),
    )
    .await;
    let path = format!(
        "/upstreams/backend/targets/127.0.0.1:{}/unhealthy",
        b.port()
    );
    let r = request(gw.admin, "POST", &path, &[], "").await.unwrap();
    assert_status(&r, 204);
    assert!(r.body.is_empty());
    let seen = origins_hit(&gw, 6, &[]).await;
    assert_eq!(seen.get("b"), None, "{seen:?}");
    let health = get(gw.admin, "/upstreams/backend/health", &[])
        .await
        .unwrap()
        .json();
    assert_eq!(health["data"][1]["health"], "UNHEALTHY", "{health}");
    // Back by id.
    let id = health["data"][1]["id"].as_str().unwrap().to_string();
    let r = request(
        gw.admin,
        "POST",
        &format!("/upstreams/backend/targets/{id}/healthy"),
        &[],
        "",
    )
    .await
    .unwrap();
    assert_status(&r, 204);
    let seen = origins_hit(&gw, 6, &[]).await;
    assert_eq!(seen["b"], 3, "{seen:?}");
    // Unknown target, unknown upstream, an upstream without checks (Kong's 400).
    let r = request(
        gw.admin,
        "POST",
        "/upstreams/backend/targets/10.9.9.9:1/healthy",
        &[],
        "",
    )
    .await
    .unwrap();
    assert_status(&r, 404);
    let r = request(
        gw.admin,
        "POST",
        "/upstreams/nope/targets/x/healthy",
        &[],
        "",
    )
    .await
    .unwrap();
    assert_status(&r, 404);
    let r = request(
        gw.admin,
        "POST",
        &format!(
            "/upstreams/unchecked/targets/127.0.0.1:{}/unhealthy",
            a.port()
        ),
        &[],
        "",
    )
    .await
    .unwrap();
    assert_status(&r, 400);
    assert_eq!(
        r.json(),
        serde_json::json!({"message": "no healthchecker found for unchecked"})
    );
    // An IPv6 target is named as Kong writes it, in brackets.
    let health = get(gw.admin, "/upstreams/unchecked/health", &[])
        .await
        .unwrap()
        .json();
    assert_eq!(health["data"][1]["target"], "[::1]:9", "{health}");
    let r = request(
        gw.admin,
        "POST",
        "/upstreams/unchecked/targets/[::1]:9/healthy",
        &[],
        "",
    )
    .await
    .unwrap();
    assert_status(&r, 400);
    // Each change is one security event with the caller's address.
    let mut events = Vec::new();
    for _ in 0..50 {
        events = std::fs::read_to_string(&sec)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|e| e["event"] == "admin_change")
            .collect();
        if events.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0]["client_ip"], "127.0.0.1");
    assert_eq!(events[0]["reason"], "target set unhealthy");
    assert_eq!(events[1]["reason"], "target set healthy");
    assert_eq!(events[0]["upstream"], "backend");
}

#[tokio::test]
async fn chunked_request_bodies_are_retried_on_another_target() {
    // A chunked body (no Content-Length) is read whole before the first attempt, like
    // nginx's request buffering, so a target that takes the request and hangs up costs a
    // retry with the same body, not a 502 (a streamed body could not be sent again).
    let a = Origin::start("a").await;
    let hangup = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = hangup.local_addr().unwrap().port();
    let hangups = Arc::new(AtomicUsize::new(0));
    let seen = hangups.clone();
    tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        while let Ok((mut s, _)) = hangup.accept().await {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            seen.fetch_add(1, Ordering::SeqCst);
            drop(s);
        }
    });
    let gw = Gw::start(&upstream_config(&format!(
        "  - name: backend\n    targets:\n      - target: 127.0.0.1:{dead}\n      - target: 127.0.0.1:{}\n",
        a.port()
    )))
    .await;
    for i in 0..6 {
        let req = format!(
            "PUT /items/{i} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n"
        );
        let (out, _) = raw(gw.proxy, req.as_bytes()).await;
        assert_eq!(status_of(&out), 200, "attempt {i}: {out}");
        let json = &out[out.find("\r\n\r\n").unwrap() + 4..];
        let json: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(json["body"], "hello, world", "{json}");
        // Sent upstream with its length, not re-chunked.
        assert_eq!(json["headers"]["content-length"][0], "12", "{json}");
        assert!(json["headers"].get("transfer-encoding").is_none(), "{json}");
    }
    assert_eq!(a.hits(), 6);
    assert!(
        hangups.load(Ordering::SeqCst) > 0,
        "the hang-up target was never tried"
    );
}

#[tokio::test]
async fn active_checks_take_targets_out_and_bring_them_back() {
    let a = Origin::start("a").await;
    let b = Origin::start("b").await;
    let gw = Gw::start(&upstream_config(&format!(
        r#"  - name: backend
    healthchecks:
      active:
        http_path: /health
        healthy: {{interval: 0.2, successes: 1}}
        unhealthy: {{interval: 0.2, http_failures: 1}}
    targets:
      - target: 127.0.0.1:{}
      - target: 127.0.0.1:{}
"#,
        a.port(),
        b.port()
    )))
    .await;
    let seen = origins_hit(&gw, 10, &[]).await;
    assert_eq!(seen.len(), 2, "{seen:?}");
    b.health_status
        .store(500, std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let seen = origins_hit(&gw, 10, &[]).await;
    assert_eq!(seen.get("b"), None, "unhealthy target still used: {seen:?}");
    b.health_status
        .store(200, std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let seen = origins_hit(&gw, 10, &[]).await;
    assert_eq!(
        seen.get("b"),
        Some(&5),
        "recovered target not used again: {seen:?}"
    );
}

#[tokio::test]
async fn all_targets_unhealthy_gives_503() {
    let a = Origin::start("a").await;
    a.health_status
        .store(500, std::sync::atomic::Ordering::SeqCst);
    let gw = Gw::start(&upstream_config(&format!(
        "  - name: backend\n    healthchecks:\n      active:\n        http_path: /health\n        healthy: {{interval: 0.2, successes: 1}}\n        unhealthy: {{interval: 0.2, http_failures: 1}}\n    targets:\n      - target: 127.0.0.1:{}\n",
        a.port()
    )))
    .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let r = gw.get("/").await;
    assert_status(&r, 503);
    assert_eq!(
        r.json()["message"],
        "failure to get a peer from the ring-balancer"
    );
}

#[tokio::test]
async fn keepalive_connections_to_upstream_are_reused() {
    let a = Origin::start("a").await;
    let gw = Gw::start(&one_service(
        &a.url(),
        "      - name: r\n        paths: [/]\n",
    ))
    .await;
    for _ in 0..20 {
        assert_status(&gw.get("/").await, 200);
    }
    let conns = a.conns.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        conns <= 2,
        "20 sequential requests opened {conns} upstream connections"
    );
}

#[tokio::test]
async fn cookie_hashing_sets_a_cookie_and_sticks_to_it() {
    let a = Origin::start("a").await;
    let b = Origin::start("b").await;
    let gw = Gw::start(&upstream_config(&format!(
        "  - name: backend\n    algorithm: consistent-hashing\n    hash_on: cookie\n    hash_on_cookie: sticky\n    hash_on_cookie_path: /app\n    targets:\n      - target: 127.0.0.1:{}\n      - target: 127.0.0.1:{}\n",
        a.port(),
        b.port()
    )))
    .await;
    let first = gw.get("/").await;
    assert_status(&first, 200);
    let cookie = first
        .header("set-cookie")
        .expect("a fresh client gets the hash cookie");
    assert!(
        cookie.starts_with("sticky=") && cookie.ends_with("; Path=/app"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap().to_string();
    let owner = first.json()["origin"].as_str().unwrap().to_string();
    for _ in 0..10 {
        let r = get(gw.proxy, "/", &[("cookie", &pair)]).await.unwrap();
        assert_eq!(r.json()["origin"], owner.as_str());
        assert!(
            r.header("set-cookie").is_none(),
            "no new cookie once the client has one"
        );
    }
}

/// Makes `name` resolve to 127.0.0.2 and 127.0.0.3 through /etc/hosts (glibc `multi on`).
fn ensure_multi_address_name(name: &str) {
    let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    let wanted = [format!("127.0.0.2 {name}"), format!("127.0.0.3 {name}")];
    let missing: Vec<&String> = wanted
        .iter()
        .filter(|l| !hosts.lines().any(|h| h.trim() == l.as_str()))
        .collect();
    if !missing.is_empty() {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open("/etc/hosts")
            .unwrap_or_else(|e| panic!("this test needs {name} -> 127.0.0.2 and 127.0.0.3 in /etc/hosts (cannot add them: {e})"));
        for l in missing {
            writeln!(f, "{l}").unwrap();
        }
    }
    let found: std::collections::BTreeSet<std::net::IpAddr> =
        std::net::ToSocketAddrs::to_socket_addrs(&(name, 80))
            .unwrap()
            .map(|a| a.ip())
            .collect();
    assert!(
        found.len() >= 2,
        "{name} resolves to {found:?}; /etc/host.conf needs `multi on`"
    );
}

/// A one-line server on `ip:port` that names itself and closes each connection.
async fn named_server(ip: &str, port: u16, name: &'static str) -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind((ip, port)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                break;
            };
            h.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let body = name;
                let _ = s
                    .write_all(format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len()).as_bytes())
                    .await;
            });
        }
    });
    (port, hits)
}

#[tokio::test]
async fn a_name_with_several_addresses_is_balanced_round_robin() {
    let name = "dns-multi.portcullis.test";
    ensure_multi_address_name(name);
    let (port, a) = named_server("127.0.0.2", 0, "two").await;
    let (_, b) = named_server("127.0.0.3", port, "three").await;
    let gw = Gw::start(&one_service(
        &format!("http://{name}:{port}"),
        "      - name: r\n        paths: [/]\n",
    ))
    .await;
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..10 {
        let r = gw.get("/").await;
        assert_status(&r, 200);
        *seen.entry(r.text()).or_insert(0) += 1;
    }
    assert_eq!(seen.get("two"), Some(&5), "{seen:?}");
    assert_eq!(seen.get("three"), Some(&5), "{seen:?}");
    assert_eq!(a.load(Ordering::SeqCst) + b.load(Ordering::SeqCst), 10);
}

#[tokio::test]
async fn upstream_host_is_the_target_name_unless_host_header_is_set() {
    let a = Origin::start("a").await;
    let port = a.port();
    for (upstream, host) in [
        // A target given by name: that name (and the target's port) is the Host.
        (
            format!("  - name: backend\n    targets:\n      - {{target: localhost:{port}}}\n"),
            format!("localhost:{port}"),
        ),
        // The upstream's host_header wins.
        (
            format!("  - name: backend\n    host_header: virt.example\n    targets:\n      - {{target: 127.0.0.1:{port}}}\n"),
            format!("virt.example:{port}"),
        ),
    ] {
        let gw = Gw::start(&upstream_config(&upstream)).await;
        let r = gw.get("/").await;
        assert_status(&r, 200);
        assert_eq!(r.upstream_header("host").unwrap(), host);
    }
}
