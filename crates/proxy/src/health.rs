//! Active health checks: each upstream with a non-zero interval gets a task that probes its
//! targets (HTTP GET of `http_path`, or a TCP connect) and feeds the results to the balancer.
//! A task ends when its snapshot is replaced and no request holds it any more.

use std::sync::{Arc, Weak};
use std::time::Duration;

use http_body_util::Empty;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::balancer::{Balancer, Outcome, Thresholds};
use crate::settings::secs;
use crate::snapshot::Snapshot;

/// Starts probing tasks for every balancer of `snap` that has active checks on.
pub fn spawn_for(snap: &Snapshot) {
    for b in &snap.balancers {
        if b.healthchecks.is_some() {
            let weak = Arc::downgrade(b);
            tokio::spawn(run(weak));
        }
    }
}

async fn run(weak: Weak<Balancer>) {
    let mut due: Vec<Instant> = Vec::new();
    loop {
        let Some(b) = weak.upgrade() else { return };
        let Some(hc) = b.healthchecks.clone() else {
            return;
        };
        let thresholds = Thresholds::active(&hc);
        let n = b.targets().len();
        if due.len() != n {
            due = vec![Instant::now(); n];
        }
        let now = Instant::now();
        let mut next = now + Duration::from_secs(1);
        for (i, due_i) in due.iter_mut().enumerate() {
            let healthy = b.targets()[i].health.is_healthy();
            let interval = if healthy {
                hc.active.healthy_interval
            } else {
                hc.active.unhealthy_interval
            };
            if interval <= 0.0 {
                continue;
            }
            if *due_i <= now {
                let t = &b.targets()[i];
                let outcome = probe(
                    &t.host,
                    t.port,
                    &hc.active.kind,
                    &hc.active.http_path,
                    &hc.active.headers,
                    secs(hc.active.timeout),
                )
                .await;
                tracing::debug!(upstream = %b.name, target = %format!("{}:{}", t.host, t.port), ?outcome, "active health probe");
                b.report_active(i, outcome, &thresholds);
                *due_i = Instant::now() + secs(interval);
            }
            next = next.min(*due_i);
        }
        drop(b);
        tokio::time::sleep_until(next.max(Instant::now() + Duration::from_millis(10))).await;
    }
}

/// One probe of one target.
pub async fn probe(
    host: &str,
    port: u16,
    kind: &str,
    path: &str,
    headers: &[(String, String)],
    timeout: Duration,
) -> Outcome {
    let attempt = async {
        let tcp = match TcpStream::connect((host, port)).await {
            Ok(s) => s,
            Err(_) => return Outcome::TcpFailure,
        };
        if kind == "tcp" {
            return Outcome::Status(200);
        }
        let (mut sender, conn) = match http1::handshake(TokioIo::new(tcp)).await {
            Ok(x) => x,
            Err(_) => return Outcome::TcpFailure,
        };
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = http::Request::new(Empty::<bytes::Bytes>::new());
        *req.uri_mut() = match path.parse() {
            Ok(u) => u,
            Err(_) => return Outcome::TcpFailure,
        };
        if let Ok(v) = http::HeaderValue::from_str(&format!("{host}:{port}")) {
            req.headers_mut().insert(http::header::HOST, v);
        }
        req.headers_mut().insert(
            http::header::USER_AGENT,
            http::HeaderValue::from_static("portcullis-health-check"),
        );
        for (k, v) in headers {
            if let (Ok(k), Ok(v)) = (
                http::HeaderName::from_bytes(k.as_bytes()),
                http::HeaderValue::from_str(v),
            ) {
                req.headers_mut().append(k, v);
            }
        }
        match sender.send_request(req).await {
            Ok(resp) => Outcome::Status(resp.status().as_u16()),
            Err(_) => Outcome::TcpFailure,
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or(Outcome::Timeout)
}
