//! One structured (JSON) access-log line per request, written off the request path. The same
//! JSON-lines sink carries the security event log.
//!
//! The handler fills an [`AccessLog`] as the request moves through the pipeline; the line is
//! emitted when the record is dropped, i.e. when the response body has been sent in full (or
//! the client went away), so sizes and the total latency are the real ones. Lines go through a
//! bounded queue to a writer thread: a slow disk or terminal never slows the proxy, and lines
//! that do not fit in the queue are counted, not silently lost.
//!
//! Nothing that can carry a credential is written: no query string, no header values.

use std::io::Write;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use portcullis_plugins::{LogEntry, Plugin};
use serde::Serialize;

/// Where access-log lines go.
pub struct AccessLogSink {
    tx: Option<SyncSender<String>>,
    /// Lines dropped because the writer could not keep up.
    pub dropped: AtomicU64,
}

impl AccessLogSink {
    /// Opens the sink named by the `access_log` setting: `off`, `stdout`, `stderr` or a path.
    pub fn open(target: &str) -> std::io::Result<Arc<AccessLogSink>> {
        let out: Box<dyn Write + Send> = match target {
            "off" => return Ok(AccessLogSink::off()),
            "stdout" => Box::new(std::io::stdout()),
            "stderr" => Box::new(std::io::stderr()),
            path => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ),
        };
        let (tx, rx) = sync_channel::<String>(16 * 1024);
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || writer(rx, out))?;
        Ok(Arc::new(AccessLogSink {
            tx: Some(tx),
            dropped: AtomicU64::new(0),
        }))
    }

    /// A sink that writes nothing.
    pub fn off() -> Arc<AccessLogSink> {
        Arc::new(AccessLogSink {
            tx: None,
            dropped: AtomicU64::new(0),
        })
    }

    /// Is anything written?
    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Queues one line; counted as dropped when the writer is behind.
    pub fn send(&self, line: String) {
        if let Some(tx) = &self.tx {
            match tx.try_send(line) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

fn writer(rx: Receiver<String>, out: Box<dyn Write + Send>) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    while let Ok(line) = rx.recv() {
        let _ = out.write_all(line.as_bytes());
        let _ = out.write_all(b"\n");
        // Write whatever else is queued, then flush once.
        while let Ok(more) = rx.try_recv() {
            let _ = out.write_all(more.as_bytes());
            let _ = out.write_all(b"\n");
        }
        let _ = out.flush();
    }
}

/// What is known about one request; written as one JSON line when dropped.
pub struct AccessLog {
    /// Held only when the sink writes (no reference count taken per request otherwise).
    sink: Option<Arc<AccessLogSink>>,
    started: Instant,
    /// Request id.
    pub request_id: RequestId,
    /// Client address (after trusted-proxy resolution).
    pub client_ip: Option<IpAddr>,
    /// Request method.
    pub method: String,
    /// Request host.
    pub host: String,
    /// Normalised path, without the query string.
    pub path: String,
    /// `HTTP/1.1`, `HTTP/2`.
    pub protocol: &'static str,
    /// TLS version of the client connection, if any.
    pub tls: Option<&'static str>,
    /// Request body size from Content-Length, if given.
    pub request_bytes: Option<u64>,
    /// Response status.
    pub status: u16,
    /// Response body bytes sent.
    pub response_bytes: u64,
    /// Route name or id.
    pub route: Option<Arc<str>>,
    /// Service name or id.
    pub service: Option<Arc<str>>,
    /// Consumer username or id.
    pub consumer: Option<String>,
    /// The anonymous consumer was used.
    pub anonymous: bool,
    /// Upstream target `host:port` of the last try.
    pub upstream: Option<String>,
    /// Upstream latency (request sent to response head), ms.
    pub upstream_ms: Option<u64>,
    /// The plugin that answered instead of the upstream.
    pub refused_by: Option<&'static str>,
    /// Why the gateway answered (the message of its JSON body).
    pub reason: Option<String>,
    /// The log phase of the route's plugins, when it has any.
    pub tail: Option<Box<LogTail>>,
}

/// Log-phase plugins and the entry they will see.
pub struct LogTail {
    /// Plugins to call.
    pub plugins: Arc<[Arc<dyn Plugin>]>,
    /// The entry, completed at drop.
    pub entry: LogEntry,
}

#[derive(Serialize)]
struct Line<'a> {
    time: String,
    kind: &'static str,
    request_id: &'a str,
    client_ip: Option<String>,
    method: &'a str,
    host: &'a str,
    path: &'a str,
    protocol: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls: Option<&'static str>,
    status: u16,
    request_bytes: Option<u64>,
    response_bytes: u64,
    latencies: Latencies,
    route: Option<&'a str>,
    service: Option<&'a str>,
    consumer: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    anonymous: bool,
    upstream: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refused_by: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
}

#[derive(Serialize)]
struct Latencies {
    total_ms: u64,
    upstream_ms: Option<u64>,
    gateway_ms: u64,
}

/// A request id: 128 random bits as 32 lower-case hex digits (like Kong's `$request_id`), kept
/// inline so that making one allocates nothing; header values are made from it only where a
/// `HeaderMap` needs one.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RequestId([u8; 32]);

impl RequestId {
    /// A fresh id from the thread's cryptographic generator: ids are unpredictable.
    pub fn random() -> RequestId {
        RequestId::from_bits(rand::random())
    }

    fn from_bits(n: u128) -> RequestId {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut digits = [0u8; 32];
        // A byte at a time (no 128-bit shift per digit).
        for (pair, b) in digits.chunks_exact_mut(2).zip(n.to_be_bytes()) {
            pair[0] = HEX[usize::from(b >> 4)];
            pair[1] = HEX[usize::from(b & 0xf)];
        }
        RequestId(digits)
    }

    /// The 32 hex digits.
    pub fn as_str(&self) -> &str {
        // Always ASCII hex digits.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The 32 hex digits as bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The id as a header value (for a `HeaderMap`; wire heads take [`RequestId::as_bytes`]).
    pub fn header_value(&self) -> http::HeaderValue {
        // Hex digits are always a valid value.
        http::HeaderValue::from_bytes(&self.0)
            .unwrap_or_else(|_| http::HeaderValue::from_static("0"))
    }
}

impl Default for RequestId {
    /// All zeros: a record that never got an id.
    fn default() -> RequestId {
        RequestId([b'0'; 32])
    }
}

impl std::fmt::Debug for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl AccessLog {
    /// Starts a record for a request that arrived at `started`.
    pub fn new(sink: &Arc<AccessLogSink>, started: Instant) -> AccessLog {
        AccessLog {
            sink: sink.enabled().then(|| sink.clone()),
            started,
            request_id: RequestId::default(),
            client_ip: None,
            method: String::new(),
            host: String::new(),
            path: String::new(),
            protocol: "HTTP/1.1",
            tls: None,
            request_bytes: None,
            status: 0,
            response_bytes: 0,
            route: None,
            service: None,
            consumer: None,
            anonymous: false,
            upstream: None,
            upstream_ms: None,
            refused_by: None,
            reason: None,
            tail: None,
        }
    }

    /// Time since the request arrived.
    pub fn elapsed(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    /// Is the line going to be written at all?
    pub fn enabled(&self) -> bool {
        self.sink.is_some()
    }

    fn line(&self) -> String {
        let total = self.started.elapsed().as_millis() as u64;
        let line = Line {
            time: rfc3339(SystemTime::now()),
            kind: "access",
            request_id: self.request_id.as_str(),
            client_ip: self.client_ip.map(|ip| ip.to_string()),
            method: &self.method,
            host: &self.host,
            path: &self.path,
            protocol: self.protocol,
            tls: self.tls,
            status: self.status,
            request_bytes: self.request_bytes,
            response_bytes: self.response_bytes,
            latencies: Latencies {
                total_ms: total,
                upstream_ms: self.upstream_ms,
                gateway_ms: total.saturating_sub(self.upstream_ms.unwrap_or(0)),
            },
            route: self.route.as_deref(),
            service: self.service.as_deref(),
            consumer: self.consumer.as_deref(),
            anonymous: self.anonymous,
            upstream: self.upstream.as_deref(),
            refused_by: self.refused_by,
            reason: self.reason.as_deref(),
        };
        serde_json::to_string(&line).unwrap_or_default()
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        if let Some(mut tail) = self.tail.take() {
            let e = &mut tail.entry;
            e.response_size = self.response_bytes;
            e.latency_total_ms = self.started.elapsed().as_millis() as u64;
            e.latency_upstream_ms = self.upstream_ms;
            e.upstream_target.clone_from(&self.upstream);
            e.refused_by = self.refused_by;
            e.status = self.status;
            for p in tail.plugins.iter() {
                p.log(e);
            }
        }
        if let Some(sink) = &self.sink {
            sink.send(self.line());
        }
    }
}

/// UTC time as RFC 3339 with milliseconds, without pulling in a date crate.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn request_ids_are_the_bits_in_lower_hex() {
        for n in [0, 1, 0x0123_4567_89ab_cdef_0011_2233_4455_6677, u128::MAX] {
            let id = RequestId::from_bits(n);
            assert_eq!(id.as_str(), format!("{n:032x}"));
            assert_eq!(id.header_value().as_bytes(), id.as_bytes());
        }
    }

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_435_200_123);
        assert_eq!(rfc3339(t), "2026-11-23T12:00:00.123Z");
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn line_shape_for_a_refusal() {
        let mut r = AccessLog::new(&AccessLogSink::off(), Instant::now());
        r.path = "/a".into();
        r.status = 401;
        r.reason = Some("No API key found in request".into());
        let v: serde_json::Value = serde_json::from_str(&r.line()).unwrap();
        assert_eq!(v["path"], "/a");
        assert_eq!(v["status"], 401);
        assert_eq!(v["kind"], "access");
        assert!(v.get("query").is_none());
    }
}
