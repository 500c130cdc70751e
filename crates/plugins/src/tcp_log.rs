//! `tcp-log` (Kong's plugin): one JSON line (newline-terminated) per request, in Kong's
//! serialized log format, written to a TCP (optionally TLS) connection.
//!
//! Entries go through the shared [`crate::sink`] queue (10 000 entries; whatever is queued is
//! written at once, up to 100 lines); the connection is kept open up to `keepalive` ms idle,
//! re-established when the peer closed it or a write failed, and a failed batch is retried
//! with backoff for up to 60 s. Unlike Kong, TLS certificates are verified (webpki roots;
//! `tls_sni` names the expected server).

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use portcullis_config::{Errors, Obj};
use rustls_pki_types::ServerName;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::sink::{self, CustomFields, Deliver, QueueConfig, Sink, SinkLog};

/// Queue of the stream sinks (tcp-log has no `queue` record in Kong).
pub(crate) fn stream_queue() -> QueueConfig {
    QueueConfig {
        max_batch_size: 100,
        max_coalescing_delay: Duration::ZERO,
        ..QueueConfig::default()
    }
}

/// The `tcp-log` plugin: its config is checked and its sink started by [`TcpLog::build`];
/// instances are [`SinkLog`]s.
pub struct TcpLog;

enum Conn {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Conn {
    fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(s) => s.get_ref().0,
        }
    }

    /// True when the peer has closed the connection (or it failed): peeking sees EOF.
    fn peer_gone(&self) -> bool {
        let mut buf = [0u8; 1];
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut rb = tokio::io::ReadBuf::new(&mut buf);
        match self.tcp().poll_peek(&mut cx, &mut rb) {
            Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => true,
            Poll::Ready(Ok(_)) | Poll::Pending => false,
        }
    }

    async fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Conn::Plain(s) => {
                s.write_all(data).await?;
                s.flush().await
            }
            Conn::Tls(s) => {
                s.write_all(data).await?;
                s.flush().await
            }
        }
    }
}

struct Target {
    host: String,
    port: u16,
    timeout: Duration,
    keepalive: Duration,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    conn: Mutex<Option<(Conn, Instant)>>,
}

impl Target {
    async fn connect(&self) -> Result<Conn, String> {
        let tcp = tokio::time::timeout(
            self.timeout,
            TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| format!("connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => Ok(Conn::Plain(tcp)),
            Some((connector, name)) => {
                let tls = tokio::time::timeout(self.timeout, connector.connect(name.clone(), tcp))
                    .await
                    .map_err(|_| "TLS handshake timed out".to_string())?
                    .map_err(|e| format!("TLS handshake: {e}"))?;
                Ok(Conn::Tls(Box::new(tls)))
            }
        }
    }
}

impl Deliver for Target {
    async fn deliver(&self, batch: &[String]) -> Result<(), String> {
        let mut data = Vec::with_capacity(batch.iter().map(|l| l.len() + 1).sum());
        for line in batch {
            data.extend_from_slice(line.as_bytes());
            data.push(b'\n');
        }
        let mut guard = self.conn.lock().await;
        let reuse = guard
            .as_ref()
            .is_some_and(|(c, used)| used.elapsed() < self.keepalive && !c.peer_gone());
        let mut conn = match guard.take() {
            Some((c, _)) if reuse => c,
            _ => self.connect().await?,
        };
        match tokio::time::timeout(self.timeout, conn.write_all(&data)).await {
            Ok(Ok(())) => {
                *guard = Some((conn, Instant::now()));
                Ok(())
            }
            Ok(Err(e)) => Err(format!("write: {e}")),
            Err(_) => Err("write timed out".into()),
        }
    }
}

fn connector() -> Result<TlsConnector, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(cfg)))
}

/// Reads `host` and `port` (both required).
pub(crate) fn host_port(o: &mut Obj<'_>, errs: &mut Errors) -> (Option<String>, Option<u16>) {
    let hpath = o.field_path("host");
    let host = o.req_str("host", errs);
    if host.as_deref().is_some_and(|h| !sink::valid_host(h)) {
        errs.push(hpath, "expected a host name or IP address");
    }
    if !o.has("port") {
        errs.push(o.field_path("port"), "required field missing");
    }
    let port = o.opt_int("port", 1, 65535, errs).map(|p| p as u16);
    (host, port)
}

impl TcpLog {
    /// Validates the config; when `start`, starts or shares the connection's queue.
    pub fn build(config: &Value, path: &str, errs: &mut Errors, start: bool) -> Option<SinkLog> {
        let before = errs.len();
        let mut o = Obj::open(config, path, errs)?;
        let (host, port) = host_port(&mut o, errs);
        let timeout = o.int_or("timeout", 10_000, 1, 86_400_000, errs);
        let keepalive = o.int_or("keepalive", 60_000, 0, 86_400_000, errs);
        let tls = o.bool_or("tls", false, errs);
        let sni_path = o.field_path("tls_sni");
        let sni = o.opt_str("tls_sni", errs);
        if sni.as_deref().is_some_and(|s| !sink::valid_host(s)) {
            errs.push(&sni_path, "expected a host name");
        }
        let custom = CustomFields::read(&mut o, errs);
        o.finish(errs);
        if errs.len() > before {
            return None;
        }
        let (host, port) = (host?, port?);
        if !start {
            return Some(SinkLog::unstarted("tcp-log", custom));
        }
        let name = sni.clone().unwrap_or_else(|| {
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_string()
        });
        let dest = format!("{host}:{port}");
        let shared = sink::shared(format!("tcp-log {config}"), || {
            let tls = if tls {
                let name = ServerName::try_from(name).map_err(|e| format!("tls_sni: {e}"))?;
                Some((connector()?, name))
            } else {
                None
            };
            let target = Target {
                host: host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string(),
                port,
                timeout: Duration::from_millis(timeout as u64),
                keepalive: Duration::from_millis(keepalive as u64),
                tls,
                conn: Mutex::new(None),
            };
            Sink::start("tcp-log", dest, stream_queue(), None, target).map_err(|e| e.to_string())
        });
        SinkLog::started("tcp-log", shared, custom, path, errs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn config_errors() {
        let mut errs = Errors::default();
        let cfg = json!({"host": "a b", "tls": "yes", "custom_fields_by_lua": {"a": "x"}});
        assert!(TcpLog::build(&cfg, "p", &mut errs, false).is_none());
        let e: Vec<String> = errs.into_vec().iter().map(|e| e.to_string()).collect();
        for want in [
            "p.host",
            "p.port: required",
            "p.tls",
            "p.custom_fields_by_lua",
        ] {
            assert!(e.iter().any(|e| e.starts_with(want)), "{want}: {e:?}");
        }
        let mut errs = Errors::default();
        let cfg = json!({"host": "logs.example.com", "port": 5000, "tls": true,
            "tls_sni": "logs.example.com", "timeout": 1000, "keepalive": 1000});
        assert!(
            TcpLog::build(&cfg, "p", &mut errs, false).is_some(),
            "{errs:?}"
        );
    }
}
