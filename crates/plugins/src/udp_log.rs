//! `udp-log` (Kong's plugin): one JSON datagram per request, in Kong's serialized log format.
//!
//! Entries go through the shared [`crate::sink`] queue (10 000 entries); an entry larger than
//! a UDP datagram can carry (65 507 bytes) is dropped and counted, never truncated into
//! invalid JSON. Send errors are retried briefly (1 s), then the entries are counted as lost.

use std::net::SocketAddr;
use std::time::Duration;

use portcullis_config::{Errors, Obj};
use serde_json::Value;
use tokio::net::UdpSocket;
use tokio::sync::Mutex;

use crate::sink::{self, CustomFields, Deliver, QueueConfig, Sink, SinkLog, MAX_DATAGRAM};
use crate::tcp_log::host_port;

/// Queue of the datagram sinks: no waiting for batches, short retries.
pub(crate) fn datagram_queue() -> QueueConfig {
    QueueConfig {
        max_batch_size: 100,
        max_coalescing_delay: Duration::ZERO,
        max_retry_time: Duration::from_secs(1),
        ..QueueConfig::default()
    }
}

/// The `udp-log` plugin: its config is checked and its sink started by [`UdpLog::build`];
/// instances are [`SinkLog`]s.
pub struct UdpLog;

/// A UDP destination, resolved and connected on first use (again after an error).
pub(crate) struct UdpTarget {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) timeout: Duration,
    pub(crate) socket: Mutex<Option<UdpSocket>>,
}

impl UdpTarget {
    async fn open(&self) -> Result<UdpSocket, String> {
        let addr: SocketAddr = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .map_err(|e| format!("resolve: {e}"))?
            .next()
            .ok_or("resolve: no address")?;
        let local: SocketAddr = if addr.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            ([0u16; 8], 0).into()
        };
        let s = UdpSocket::bind(local)
            .await
            .map_err(|e| format!("bind: {e}"))?;
        s.connect(addr).await.map_err(|e| format!("connect: {e}"))?;
        Ok(s)
    }
}

impl Deliver for UdpTarget {
    async fn deliver(&self, batch: &[String]) -> Result<(), String> {
        let mut guard = self.socket.lock().await;
        let socket = match guard.take() {
            Some(s) => s,
            None => tokio::time::timeout(self.timeout, self.open())
                .await
                .map_err(|_| "resolve timed out".to_string())??,
        };
        for d in batch {
            match tokio::time::timeout(self.timeout, socket.send(d.as_bytes())).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(format!("send: {e}")),
                Err(_) => return Err("send timed out".into()),
            }
        }
        *guard = Some(socket);
        Ok(())
    }
}

impl UdpLog {
    /// Validates the config; when `start`, starts or shares the destination's queue.
    pub fn build(config: &Value, path: &str, errs: &mut Errors, start: bool) -> Option<SinkLog> {
        let before = errs.len();
        let mut o = Obj::open(config, path, errs)?;
        let (host, port) = host_port(&mut o, errs);
        let timeout = o.int_or("timeout", 10_000, 1, 86_400_000, errs);
        let custom = CustomFields::read(&mut o, errs);
        o.finish(errs);
        if errs.len() > before {
            return None;
        }
        let (host, port) = (host?, port?);
        if !start {
            return Some(SinkLog::unstarted("udp-log", custom));
        }
        let dest = format!("{host}:{port}");
        let shared = sink::shared(format!("udp-log {config}"), || {
            let target = UdpTarget {
                host: host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string(),
                port,
                timeout: Duration::from_millis(timeout as u64),
                socket: Mutex::new(None),
            };
            Sink::start(
                "udp-log",
                dest,
                datagram_queue(),
                Some(MAX_DATAGRAM),
                target,
            )
            .map_err(|e| e.to_string())
        });
        SinkLog::started("udp-log", shared, custom, path, errs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LogEntry, Plugin};
    use serde_json::json;

    #[test]
    fn config_errors() {
        let mut errs = Errors::default();
        let cfg = json!({"host": "h", "port": 70000, "keepalive": 1});
        assert!(UdpLog::build(&cfg, "p", &mut errs, false).is_none());
        let e: Vec<String> = errs.into_vec().iter().map(|e| e.to_string()).collect();
        assert!(e.iter().any(|e| e.starts_with("p.port")), "{e:?}");
        assert!(e.iter().any(|e| e == "p.keepalive: unknown field"), "{e:?}");
    }

    #[tokio::test]
    async fn datagrams_arrive_and_oversize_entries_are_counted() {
        let rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let port = rx.local_addr().unwrap().port();
        let mut errs = Errors::default();
        let cfg = json!({"host": "127.0.0.1", "port": port});
        let p = UdpLog::build(&cfg, "p", &mut errs, true).unwrap();
        p.sink.push("x".repeat(MAX_DATAGRAM + 1));
        p.log(&LogEntry {
            method: "GET".into(),
            scheme: "http",
            ..Default::default()
        });
        let mut buf = vec![0u8; 70_000];
        let n = tokio::time::timeout(Duration::from_secs(5), rx.recv(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let v: Value = serde_json::from_slice(&buf[..n]).unwrap();
        assert_eq!(v["request"]["method"], "GET");
        assert_eq!(
            p.sink
                .stats()
                .oversize
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
    }
}
