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
use crate::tls;
use portcullis_config::ActiveHealthcheck;
use rustls_pki_types::ServerName;

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
                let outcome = probe(&t.host, t.port, &hc.active).await;
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

/// One probe of one target: TCP connect, or an HTTP(S) GET of `http_path`.
pub async fn probe(host: &str, port: u16, check: &ActiveHealthcheck) -> Outcome {
    let attempt = async {
        let tcp = match TcpStream::connect((host, port)).await {
            Ok(s) => s,
            Err(_) => return Outcome::TcpFailure,
        };
        match check.kind.as_str() {
            "tcp" => Outcome::Status(200),
            "https" | "grpcs" => {
                let Ok(cfg) = tls::client_config(&[], check.https_verify_certificate, None, false)
                else {
                    return Outcome::TcpFailure;
                };
                let sni = check.https_sni.clone().unwrap_or_else(|| host.to_string());
                let Ok(name) = ServerName::try_from(sni) else {
                    return Outcome::TcpFailure;
                };
                match tokio_rustls::TlsConnector::from(Arc::new(cfg))
                    .connect(name, tcp)
                    .await
                {
                    Ok(stream) => http_probe(stream, host, port, check).await,
                    Err(_) => Outcome::TcpFailure,
                }
            }
            _ => http_probe(tcp, host, port, check).await,
        }
    };
    tokio::time::timeout(secs(check.timeout), attempt)
        .await
        .unwrap_or(Outcome::Timeout)
}

async fn http_probe<I>(io: I, host: &str, port: u16, check: &ActiveHealthcheck) -> Outcome
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = match http1::handshake(TokioIo::new(io)).await {
        Ok(x) => x,
        Err(_) => return Outcome::TcpFailure,
    };
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = http::Request::new(Empty::<bytes::Bytes>::new());
    *req.uri_mut() = match check.http_path.parse() {
        Ok(u) => u,
        Err(_) => return Outcome::TcpFailure,
    };
    let h = req.headers_mut();
    if let Ok(v) = http::HeaderValue::from_str(&format!("{host}:{port}")) {
        h.insert(http::header::HOST, v);
    }
    h.insert(
        http::header::USER_AGENT,
        http::HeaderValue::from_static("portcullis-health-check"),
    );
    for (k, v) in &check.headers {
        if let (Ok(k), Ok(v)) = (
            http::HeaderName::from_bytes(k.as_bytes()),
            http::HeaderValue::from_str(v),
        ) {
            h.append(k, v);
        }
    }
    match sender.send_request(req).await {
        Ok(resp) => Outcome::Status(resp.status().as_u16()),
        Err(_) => Outcome::TcpFailure,
    }
}
