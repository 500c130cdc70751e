//! The delivery machinery shared by the network log plugins (`http-log`, `tcp-log`, `udp-log`,
//! `syslog`): a bounded queue, batching, retries with exponential backoff, and drop counting.
//!
//! The log phase runs on the proxy's threads and must never wait, so [`Sink::push`] only
//! tries to enqueue: when the queue is full (or holds `max_bytes`), the entry is dropped and
//! counted. A background thread per sink, with its own single-threaded runtime, takes entries
//! off the queue, groups them into batches (Kong's `queue` semantics: up to `max_batch_size`
//! entries, waiting at most `max_coalescing_delay` for a batch to fill), and hands each batch
//! to a [`Deliver`] implementation. A failed batch is retried after `initial_retry_delay`,
//! doubling up to `max_retry_delay`, until `max_retry_time` has passed; then it is dropped and
//! counted. Drops are reported as warnings at most once per second per sink, with counts.
//!
//! Sinks are shared per destination: every plugin instance (and config reload) with the same
//! plugin name and config uses the same queue and connection, so a reload loses nothing. The
//! thread ends, after draining its queue, when the last instance using it is dropped.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use portcullis_config::{Errors, Obj};
use serde_json::Value;
use tokio::sync::mpsc::{self, error::TryRecvError, error::TrySendError};
use tokio::sync::Semaphore;

use crate::file_log::set_path;

/// A client builder for the gateway's own outbound HTTPS calls (log collectors, OTLP, OpenID
/// providers): rustls with ring, the webpki roots plus `extra_roots`, no redirects followed,
/// no proxy taken from the environment, `timeout` for a whole call. Callers add what differs
/// (connect timeout, idle pool timeout, user agent).
pub(crate) fn outbound_client(
    extra_roots: Vec<rustls_pki_types::CertificateDer<'static>>,
    timeout: Duration,
) -> Result<reqwest::ClientBuilder, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for der in extra_roots {
        roots.add(der).map_err(|e| format!("CA certificate: {e}"))?;
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .no_proxy())
}
use crate::LogEntry;

/// Largest UDP payload over IPv4: entries above it cannot be sent as one datagram.
pub const MAX_DATAGRAM: usize = 65_507;

/// Batches delivered at once when `queue.concurrency_limit` is -1 (Kong: unlimited).
const UNLIMITED_CONCURRENCY: usize = 64;

/// Kong's `queue` record (seconds in the config, durations here).
#[derive(Debug, Clone, PartialEq)]
pub struct QueueConfig {
    /// Entries per batch.
    pub max_batch_size: usize,
    /// How long a started batch waits to fill.
    pub max_coalescing_delay: Duration,
    /// Queue capacity, entries.
    pub max_entries: usize,
    /// Queue capacity, bytes of queued entries (none: unbounded by size).
    pub max_bytes: Option<usize>,
    /// How long a failing batch is retried before it is dropped.
    pub max_retry_time: Duration,
    /// First retry delay; doubles on each failure.
    pub initial_retry_delay: Duration,
    /// Cap on the retry delay.
    pub max_retry_delay: Duration,
    /// Batches in flight at once.
    pub concurrency_limit: usize,
}

impl Default for QueueConfig {
    /// Kong 3.x defaults.
    fn default() -> Self {
        QueueConfig {
            max_batch_size: 1,
            max_coalescing_delay: Duration::from_secs(1),
            max_entries: 10_000,
            max_bytes: None,
            max_retry_time: Duration::from_secs(60),
            initial_retry_delay: Duration::from_millis(10),
            max_retry_delay: Duration::from_secs(60),
            concurrency_limit: 1,
        }
    }
}

fn seconds(
    o: &mut Obj<'_>,
    key: &str,
    min: f64,
    max: f64,
    default: Duration,
    errs: &mut Errors,
) -> Duration {
    match o.opt_f64(key, errs) {
        Some(v) if (min..=max).contains(&v) => Duration::from_secs_f64(v),
        Some(_) => {
            errs.push(
                o.field_path(key),
                format!("value should be between {min} and {max}"),
            );
            default
        }
        None => default,
    }
}

/// Reads Kong's `queue` record (absent: `defaults`), and the Kong 2.x fields it replaced
/// (`queue_size`, `flush_timeout`, `retry_count`: accepted, mapped when the record does not
/// set the same value).
pub fn read_queue(o: &mut Obj<'_>, defaults: QueueConfig, errs: &mut Errors) -> QueueConfig {
    let mut q = defaults;
    if let Some(n) = o.opt_int("queue_size", 1, 1_000_000, errs) {
        q.max_batch_size = n as usize;
    }
    q.max_coalescing_delay = seconds(
        o,
        "flush_timeout",
        0.0,
        3600.0,
        q.max_coalescing_delay,
        errs,
    );
    let _ = o.opt_int("retry_count", 0, 1_000_000, errs);
    let Some(mut r) = o.record("queue", errs) else {
        return q;
    };
    r.accept(&["name"]);
    q.max_batch_size = r.int_or(
        "max_batch_size",
        q.max_batch_size as i64,
        1,
        1_000_000,
        errs,
    ) as usize;
    q.max_coalescing_delay = seconds(
        &mut r,
        "max_coalescing_delay",
        0.0,
        3600.0,
        q.max_coalescing_delay,
        errs,
    );
    q.max_entries = r.int_or("max_entries", q.max_entries as i64, 1, 1_000_000, errs) as usize;
    if let Some(n) = r.opt_int("max_bytes", 1, i64::from(u32::MAX), errs) {
        q.max_bytes = Some(n as usize);
    }
    q.max_retry_time = seconds(&mut r, "max_retry_time", 0.0, 1e6, q.max_retry_time, errs);
    q.initial_retry_delay = seconds(
        &mut r,
        "initial_retry_delay",
        0.001,
        1e6,
        q.initial_retry_delay,
        errs,
    );
    q.max_retry_delay = seconds(
        &mut r,
        "max_retry_delay",
        0.001,
        1e6,
        q.max_retry_delay,
        errs,
    );
    if r.has("concurrency_limit") {
        let path = r.field_path("concurrency_limit");
        match r.opt_int("concurrency_limit", -1, 1, errs) {
            Some(1) => q.concurrency_limit = 1,
            Some(-1) => q.concurrency_limit = UNLIMITED_CONCURRENCY,
            Some(_) => errs.push(path, "expected one of: -1, 1"),
            None => {}
        }
    }
    r.finish(errs);
    q
}

/// Fields added to every entry (`custom_fields`; dotted names nest; string values may hold
/// `$(path)` templates into the entry). Replaces Kong's `custom_fields_by_lua`, which is
/// refused.
#[derive(Debug, Clone, Default)]
pub struct CustomFields(Vec<(Vec<String>, Value)>);

impl CustomFields {
    /// Reads `custom_fields` and refuses a non-empty `custom_fields_by_lua`.
    pub fn read(o: &mut Obj<'_>, errs: &mut Errors) -> CustomFields {
        let mut custom = Vec::new();
        let cpath = o.field_path("custom_fields");
        match o.get("custom_fields") {
            Some(Value::Object(m)) => {
                for (k, v) in m {
                    if k.is_empty() || k.split('.').any(str::is_empty) {
                        errs.push(format!("{cpath}.{k}"), "invalid field name");
                    }
                    custom.push((k.split('.').map(str::to_string).collect(), v.clone()));
                }
            }
            Some(_) => errs.push(cpath, "expected a record"),
            None => {}
        }
        if let Some(v) = o.get("custom_fields_by_lua") {
            if v.as_object().is_none_or(|m| !m.is_empty()) {
                errs.push(
                    o.field_path("custom_fields_by_lua"),
                    "Lua is not supported; use custom_fields",
                );
            }
        }
        CustomFields(custom)
    }

    /// Kong's serialized entry with the custom fields set. String values may hold templates,
    /// `$(route.name)`, `$(consumer.username)`, `$(request.headers.x-team)`: dotted paths into
    /// the (already redacted) entry. A value that is a single template keeps the referenced
    /// value's type; templates inside text are replaced by their text (absent: empty).
    pub fn entry_json(&self, entry: &LogEntry) -> Value {
        let mut v = entry.to_kong_json();
        let rendered: Vec<(&Vec<String>, Value)> = self
            .0
            .iter()
            .map(|(path, value)| (path, render_template(value, &v)))
            .collect();
        for (path, value) in rendered {
            set_path(&mut v, path, value);
        }
        v
    }

    /// [`CustomFields::entry_json`] as a JSON string.
    pub fn serialize(&self, entry: &LogEntry) -> String {
        self.entry_json(entry).to_string()
    }
}

/// Looks up a dotted path (`request.headers.x-team`) in a serialized entry.
fn lookup<'a>(entry: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(entry, |v, key| v.get(key.trim()))
}

/// Renders `$(path)` templates in a custom field value against the entry.
pub fn render_template(value: &Value, entry: &Value) -> Value {
    let Value::String(text) = value else {
        return value.clone();
    };
    if !text.contains("$(") {
        return value.clone();
    }
    let whole = text
        .strip_prefix("$(")
        .and_then(|t| t.strip_suffix(')'))
        .filter(|t| !t.contains("$(") && !t.contains(')'));
    if let Some(path) = whole {
        return lookup(entry, path).cloned().unwrap_or(Value::Null);
    }
    let mut out = String::new();
    let mut rest = text.as_str();
    while let Some(i) = rest.find("$(") {
        out.push_str(&rest[..i]);
        let Some(end) = rest[i..].find(')') else {
            out.push_str(&rest[i..]);
            rest = "";
            break;
        };
        match lookup(entry, &rest[i + 2..i + end]) {
            Some(Value::String(s)) => out.push_str(s),
            Some(Value::Null) | None => {}
            Some(other) => out.push_str(&other.to_string()),
        }
        rest = &rest[i + end + 1..];
    }
    out.push_str(rest);
    Value::String(out)
}

/// Sends one batch to a collector. Implementations keep their connection state behind
/// `&self` (batches may be delivered concurrently when `concurrency_limit` is -1).
pub trait Deliver: Send + Sync + 'static {
    /// Sends `batch` (serialized entries, in order). An `Err` is retried; its text is logged,
    /// so it must not contain secrets.
    fn deliver(&self, batch: &[String]) -> impl Future<Output = Result<(), String>> + Send;
}

/// Counters of one sink.
#[derive(Debug, Default)]
pub struct Stats {
    /// Entries dropped because the queue was full.
    pub overflow: AtomicU64,
    /// Entries dropped after their batch failed for `max_retry_time`.
    pub failed: AtomicU64,
    /// Entries dropped because they were too large to send.
    pub oversize: AtomicU64,
    /// Entries delivered.
    pub sent: AtomicU64,
    /// Bytes of the entries in the queue.
    queued_bytes: AtomicUsize,
}

/// A queue feeding one background delivery thread.
pub struct Sink {
    tx: Option<mpsc::Sender<String>>,
    stats: Arc<Stats>,
    max_bytes: Option<usize>,
    max_item: Option<usize>,
}

impl Sink {
    /// A sink that sends nothing (schema-only validation).
    pub fn disabled() -> Sink {
        Sink {
            tx: None,
            stats: Arc::new(Stats::default()),
            max_bytes: None,
            max_item: None,
        }
    }

    /// Starts the delivery thread. `label` names the destination in logs (no secrets);
    /// entries longer than `max_item` bytes are dropped and counted.
    pub fn start<D: Deliver>(
        plugin: &'static str,
        label: String,
        queue: QueueConfig,
        max_item: Option<usize>,
        deliver: D,
    ) -> std::io::Result<Sink> {
        let (tx, rx) = mpsc::channel(queue.max_entries.max(1));
        let stats = Arc::new(Stats::default());
        let thread_stats = stats.clone();
        let max_bytes = queue.max_bytes;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name(plugin.into())
            .spawn(move || {
                runtime.block_on(run(
                    rx,
                    Arc::new(deliver),
                    queue,
                    thread_stats,
                    plugin,
                    Arc::from(label),
                ))
            })?;
        Ok(Sink {
            tx: Some(tx),
            stats,
            max_bytes,
            max_item,
        })
    }

    /// Enqueues one serialized entry without waiting; drops and counts it when it does not fit.
    pub fn push(&self, entry: String) {
        let len = entry.len();
        if self.max_item.is_some_and(|m| len > m) {
            self.stats.oversize.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let Some(tx) = &self.tx else {
            return;
        };
        let before = self.stats.queued_bytes.fetch_add(len, Ordering::Relaxed);
        if self.max_bytes.is_some_and(|max| before + len > max) {
            self.stats.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            self.stats.overflow.fetch_add(1, Ordering::Relaxed);
            return;
        }
        match tx.try_send(entry) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Closed(_)) => {
                self.stats.queued_bytes.fetch_sub(len, Ordering::Relaxed);
                self.stats.overflow.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The sink's counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }
}

type Shared = Mutex<HashMap<String, Weak<Sink>>>;

/// The sink for `key` (plugin name and its whole config), started by `start` when no live
/// instance uses one yet.
pub fn shared(
    key: String,
    start: impl FnOnce() -> Result<Sink, String>,
) -> Result<Arc<Sink>, String> {
    static SINKS: OnceLock<Shared> = OnceLock::new();
    let mut map = SINKS
        .get_or_init(|| Mutex::new(HashMap::new()))
        .lock()
        .map_err(|_| "sink table poisoned".to_string())?;
    if let Some(s) = map.get(&key).and_then(Weak::upgrade) {
        return Ok(s);
    }
    map.retain(|_, w| w.strong_count() > 0);
    let sink = Arc::new(start()?);
    map.insert(key, Arc::downgrade(&sink));
    Ok(sink)
}

/// The sink `shared` returned, or `None` with the start error reported at `path`.
pub fn started(
    shared: Result<Arc<Sink>, String>,
    path: &str,
    errs: &mut Errors,
) -> Option<Arc<Sink>> {
    shared
        .map_err(|e| errs.push(path, format!("cannot start: {e}")))
        .ok()
}

/// A log plugin that sends each entry in Kong's serialized format (with its custom fields)
/// to a shared sink: `http-log`, `tcp-log` and `udp-log`.
pub struct SinkLog {
    name: &'static str,
    pub(crate) sink: Arc<Sink>,
    custom: CustomFields,
}

impl SinkLog {
    /// An instance for a schema check: nothing is started.
    pub(crate) fn unstarted(name: &'static str, custom: CustomFields) -> SinkLog {
        SinkLog {
            name,
            sink: Arc::new(Sink::disabled()),
            custom,
        }
    }

    /// An instance on the sink `shared` returned (see [`started`]).
    pub(crate) fn started(
        name: &'static str,
        shared: Result<Arc<Sink>, String>,
        custom: CustomFields,
        path: &str,
        errs: &mut Errors,
    ) -> Option<SinkLog> {
        let sink = started(shared, path, errs)?;
        Some(SinkLog { name, sink, custom })
    }
}

impl crate::Plugin for SinkLog {
    fn name(&self) -> &'static str {
        self.name
    }

    fn has_log(&self) -> bool {
        true
    }

    fn log(&self, entry: &LogEntry) {
        self.sink.push(self.custom.serialize(entry));
    }
}

/// At most one message per second; counts what it held back.
struct Throttle {
    last: Mutex<Option<Instant>>,
    held: AtomicU64,
}

impl Throttle {
    fn new() -> Throttle {
        Throttle {
            last: Mutex::new(None),
            held: AtomicU64::new(0),
        }
    }

    /// `Some(messages held back since the last one)` when a message may be logged now.
    fn allow(&self) -> Option<u64> {
        let Ok(mut last) = self.last.lock() else {
            return None;
        };
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < Duration::from_secs(1)) {
            self.held.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *last = Some(now);
        Some(self.held.swap(0, Ordering::Relaxed))
    }
}

struct Worker<D> {
    deliver: Arc<D>,
    queue: QueueConfig,
    stats: Arc<Stats>,
    plugin: &'static str,
    label: Arc<str>,
    throttle: Arc<Throttle>,
}

impl<D> Clone for Worker<D> {
    fn clone(&self) -> Self {
        Worker {
            deliver: self.deliver.clone(),
            queue: self.queue.clone(),
            stats: self.stats.clone(),
            plugin: self.plugin,
            label: self.label.clone(),
            throttle: self.throttle.clone(),
        }
    }
}

async fn run<D: Deliver>(
    mut rx: mpsc::Receiver<String>,
    deliver: Arc<D>,
    queue: QueueConfig,
    stats: Arc<Stats>,
    plugin: &'static str,
    label: Arc<str>,
) {
    let w = Worker {
        deliver,
        queue,
        stats,
        plugin,
        label,
        throttle: Arc::new(Throttle::new()),
    };
    let reporter = tokio::spawn(report_loop(w.clone()));
    let concurrency = w.queue.concurrency_limit.max(1);
    let slots = Arc::new(Semaphore::new(concurrency));
    while let Some(first) = rx.recv().await {
        let batch = fill_batch(&mut rx, first, &w.queue).await;
        let bytes: usize = batch.iter().map(String::len).sum();
        w.stats.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let job = w.clone();
        tokio::spawn(async move {
            job.deliver_with_retry(batch).await;
            drop(slot);
        });
    }
    // The last instance is gone: finish the batches in flight, then report once more.
    let _ = slots.acquire_many(concurrency as u32).await;
    reporter.abort();
    report(&w, &mut Reported::default());
}

/// Takes `first` and whatever else fits in the batch, waiting up to `max_coalescing_delay`.
async fn fill_batch(
    rx: &mut mpsc::Receiver<String>,
    first: String,
    q: &QueueConfig,
) -> Vec<String> {
    let mut batch = vec![first];
    let deadline = tokio::time::Instant::now() + q.max_coalescing_delay;
    while batch.len() < q.max_batch_size {
        match rx.try_recv() {
            Ok(e) => batch.push(e),
            Err(TryRecvError::Disconnected) => break,
            Err(TryRecvError::Empty) => match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(e)) => batch.push(e),
                Ok(None) | Err(_) => break,
            },
        }
    }
    batch
}

impl<D: Deliver> Worker<D> {
    async fn deliver_with_retry(&self, batch: Vec<String>) {
        let started = Instant::now();
        let mut delay = self.queue.initial_retry_delay;
        loop {
            match self.deliver.deliver(&batch).await {
                Ok(()) => {
                    self.stats
                        .sent
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    return;
                }
                Err(error) => {
                    if started.elapsed() + delay > self.queue.max_retry_time {
                        self.stats
                            .failed
                            .fetch_add(batch.len() as u64, Ordering::Relaxed);
                        if let Some(held) = self.throttle.allow() {
                            tracing::error!(
                                plugin = self.plugin,
                                destination = %self.label,
                                %error,
                                entries = batch.len(),
                                suppressed = held,
                                "{}: could not send log entries within max_retry_time; batch dropped",
                                self.plugin
                            );
                        }
                        return;
                    }
                    if let Some(held) = self.throttle.allow() {
                        tracing::warn!(
                            plugin = self.plugin,
                            destination = %self.label,
                            %error,
                            retry_in_ms = delay.as_millis() as u64,
                            suppressed = held,
                            "{}: sending log entries failed; will retry",
                            self.plugin
                        );
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(self.queue.max_retry_delay);
                }
            }
        }
    }
}

#[derive(Default)]
struct Reported {
    overflow: u64,
    failed: u64,
    oversize: u64,
}

async fn report_loop<D>(w: Worker<D>) {
    let mut seen = Reported::default();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        report(&w, &mut seen);
    }
}

/// Logs the drops since the last report, with counts.
fn report<D>(w: &Worker<D>, seen: &mut Reported) {
    let overflow = w.stats.overflow.load(Ordering::Relaxed);
    if overflow != seen.overflow {
        tracing::warn!(
            plugin = w.plugin,
            destination = %w.label,
            dropped = overflow - seen.overflow,
            dropped_total = overflow,
            max_entries = w.queue.max_entries,
            "{}: log queue full, entries dropped",
            w.plugin
        );
        seen.overflow = overflow;
    }
    let failed = w.stats.failed.load(Ordering::Relaxed);
    if failed != seen.failed {
        tracing::warn!(
            plugin = w.plugin,
            destination = %w.label,
            dropped = failed - seen.failed,
            dropped_total = failed,
            "{}: log entries dropped after retries",
            w.plugin
        );
        seen.failed = failed;
    }
    let oversize = w.stats.oversize.load(Ordering::Relaxed);
    if oversize != seen.oversize {
        tracing::warn!(
            plugin = w.plugin,
            destination = %w.label,
            dropped = oversize - seen.oversize,
            dropped_total = oversize,
            "{}: log entries too large to send, dropped",
            w.plugin
        );
        seen.oversize = oversize;
    }
}

/// Checks a host name or IP literal (no scheme, port or path).
pub fn valid_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-_:[]".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Records batches; fails the first `fail` calls; sleeps `delay` per call.
    struct Fake {
        batches: Mutex<Vec<Vec<String>>>,
        fail: AtomicUsize,
        delay: Duration,
        calls: AtomicUsize,
    }

    impl Fake {
        fn new(fail: usize, delay: Duration) -> Arc<Fake> {
            Arc::new(Fake {
                batches: Mutex::new(Vec::new()),
                fail: AtomicUsize::new(fail),
                delay,
                calls: AtomicUsize::new(0),
            })
        }
        fn batches(&self) -> Vec<Vec<String>> {
            self.batches.lock().unwrap().clone()
        }
    }

    struct Shim(Arc<Fake>);

    impl Deliver for Shim {
        async fn deliver(&self, batch: &[String]) -> Result<(), String> {
            self.0.calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(self.0.delay).await;
            if self
                .0
                .fail
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return Err("collector said no".into());
            }
            self.0.batches.lock().unwrap().push(batch.to_vec());
            Ok(())
        }
    }

    fn wait(mut f: impl FnMut() -> bool) {
        for _ in 0..300 {
            if f() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("condition not reached");
    }

    fn quick(batch: usize) -> QueueConfig {
        QueueConfig {
            max_batch_size: batch,
            max_coalescing_delay: Duration::from_millis(200),
            max_retry_time: Duration::from_secs(5),
            initial_retry_delay: Duration::from_millis(5),
            max_retry_delay: Duration::from_millis(50),
            ..Default::default()
        }
    }

    #[test]
    fn batches_hold_at_most_max_batch_size_in_order() {
        let fake = Fake::new(0, Duration::ZERO);
        let sink = Sink::start("t", "fake".into(), quick(5), None, Shim(fake.clone())).unwrap();
        for i in 0..12 {
            sink.push(i.to_string());
        }
        wait(|| fake.batches().iter().map(Vec::len).sum::<usize>() == 12);
        let b = fake.batches();
        assert!(b.iter().all(|b| b.len() <= 5), "{b:?}");
        assert_eq!(b[0].len(), 5, "a batch fills before the coalescing delay");
        let flat: Vec<String> = b.concat();
        let want: Vec<String> = (0..12).map(|i| i.to_string()).collect();
        assert_eq!(flat, want);
        assert_eq!(sink.stats().sent.load(Ordering::Relaxed), 12);
    }

    #[test]
    fn failures_are_retried_until_delivered() {
        let fake = Fake::new(3, Duration::ZERO);
        let sink = Sink::start("t", "fake".into(), quick(1), None, Shim(fake.clone())).unwrap();
        sink.push("a".into());
        wait(|| fake.batches().len() == 1);
        assert_eq!(fake.calls.load(Ordering::SeqCst), 4);
        assert_eq!(sink.stats().failed.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn batches_are_dropped_and_counted_after_max_retry_time() {
        let fake = Fake::new(usize::MAX, Duration::ZERO);
        let q = QueueConfig {
            max_retry_time: Duration::from_millis(100),
            ..quick(2)
        };
        let sink = Sink::start("t", "fake".into(), q, None, Shim(fake.clone())).unwrap();
        sink.push("a".into());
        sink.push("b".into());
        wait(|| sink.stats().failed.load(Ordering::Relaxed) == 2);
        let calls = fake.calls.load(Ordering::SeqCst);
        // 5, 10, 20, 40 ms of backoff fit in 100 ms; not hundreds of immediate retries.
        assert!((3..=8).contains(&calls), "{calls} attempts");
    }

    #[test]
    fn a_slow_collector_fills_the_queue_and_drops_are_counted_not_blocking() {
        let fake = Fake::new(0, Duration::from_secs(5));
        let q = QueueConfig {
            max_entries: 3,
            ..quick(1)
        };
        let sink = Sink::start("t", "fake".into(), q, None, Shim(fake.clone())).unwrap();
        let t = Instant::now();
        for i in 0..100 {
            sink.push(i.to_string());
        }
        assert!(
            t.elapsed() < Duration::from_millis(200),
            "push must not wait"
        );
        let dropped = sink.stats().overflow.load(Ordering::Relaxed);
        // One batch in flight, one waiting for it, three queued: the rest are counted.
        assert!((95..=97).contains(&dropped), "{dropped}");
    }

    #[test]
    fn byte_bound_and_oversize_entries() {
        let fake = Fake::new(0, Duration::from_secs(5));
        let q = QueueConfig {
            max_bytes: Some(10),
            max_batch_size: 1,
            ..quick(1)
        };
        let sink = Sink::start("t", "fake".into(), q, Some(8), Shim(fake.clone())).unwrap();
        sink.push("123456789".into());
        assert_eq!(sink.stats().oversize.load(Ordering::Relaxed), 1);
        // The worker may take the first entry off the queue at any time, so fill it slowly.
        for _ in 0..10 {
            sink.push("12345678".into());
        }
        assert!(sink.stats().overflow.load(Ordering::Relaxed) >= 7);
    }

    #[test]
    fn disabled_sink_accepts_and_discards() {
        let s = Sink::disabled();
        s.push("x".into());
        assert_eq!(s.stats().sent.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn shared_sinks_per_key_live_while_used() {
        let a = shared("k1".into(), || Ok(Sink::disabled())).unwrap();
        let b = shared("k1".into(), || Err("must reuse".into())).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        drop((a, b));
        assert!(shared("k1".into(), || Err("restarted".into())).is_err());
    }

    #[test]
    fn queue_config_reads_kong_fields_and_reports_paths() {
        let cfg = json!({"queue": {"max_batch_size": 5, "max_coalescing_delay": 0.5,
            "max_entries": 7, "max_bytes": 100, "concurrency_limit": -1, "initial_retry_delay": 0.5},
            "flush_timeout": 2, "retry_count": 10});
        let mut errs = Errors::default();
        let mut o = Obj::open(&cfg, "c", &mut errs).unwrap();
        let q = read_queue(&mut o, QueueConfig::default(), &mut errs);
        o.finish(&mut errs);
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(q.max_batch_size, 5);
        assert_eq!(q.max_coalescing_delay, Duration::from_millis(500));
        assert_eq!(q.max_entries, 7);
        assert_eq!(q.max_bytes, Some(100));
        assert_eq!(q.concurrency_limit, UNLIMITED_CONCURRENCY);
        assert_eq!(q.max_retry_time, Duration::from_secs(60));

        let bad = json!({"queue": {"max_batch_size": 0, "concurrency_limit": 2, "bogus": 1}});
        let mut errs = Errors::default();
        let mut o = Obj::open(&bad, "c", &mut errs).unwrap();
        let _ = read_queue(&mut o, QueueConfig::default(), &mut errs);
        let text: Vec<String> = errs.into_vec().iter().map(|e| e.to_string()).collect();
        assert!(
            text.iter().any(|e| e.starts_with("c.queue.max_batch_size")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|e| e.starts_with("c.queue.concurrency_limit")),
            "{text:?}"
        );
        assert!(
            text.iter().any(|e| e.starts_with("c.queue.bogus")),
            "{text:?}"
        );
    }

    #[test]
    fn custom_field_templates_read_the_entry() {
        let entry = json!({"route": {"name": "orders"}, "response": {"status": 201},
                           "request": {"headers": {"x-team": "pay", "authorization": "REDACTED"}}});
        assert_eq!(
            render_template(&json!("$(response.status)"), &entry),
            json!(201)
        );
        assert_eq!(
            render_template(
                &json!("team $(request.headers.x-team) on $(route.name)$(nope.x)"),
                &entry
            ),
            json!("team pay on orders")
        );
        assert_eq!(
            render_template(&json!("$(request.headers.authorization)"), &entry),
            json!("REDACTED")
        );
        assert_eq!(render_template(&json!(5), &entry), json!(5));
    }

    #[test]
    fn custom_fields_nest_and_lua_is_refused() {
        let cfg = json!({"custom_fields": {"env": "t", "request.team": "p"},
            "custom_fields_by_lua": {"x": "return 1"}});
        let mut errs = Errors::default();
        let mut o = Obj::open(&cfg, "c", &mut errs).unwrap();
        let c = CustomFields::read(&mut o, &mut errs);
        assert_eq!(errs.len(), 1);
        let v = c.entry_json(&LogEntry {
            method: "GET".into(),
            scheme: "http",
            ..Default::default()
        });
        assert_eq!(v["env"], "t");
        assert_eq!(v["request"]["team"], "p");
        assert_eq!(v["request"]["method"], "GET");
    }
}
