//! Security events and threshold alerts.
//!
//! Every security decision is a `tracing` event with `target: "security"` and an `event`
//! field naming its kind (`auth_failure`, `authz_denied`, `rate_limited`, `ip_blocked`,
//! `bot_blocked`, `waf_block`, `auth_lockout`, ...), plus the request id, client IP, route,
//! consumer when known, and the reason — never a credential. [`SecurityLayer`] collects them
//! from anywhere in the process (proxy or plugins) and
//!
//! - appends each as one JSON line to the `security_log` file (the access log's writer: a
//!   thread behind a bounded queue; overflow is counted),
//! - POSTs them in batches to `security_http` when set, and
//! - feeds the `[[alerts]]` rules of the node settings: more than `threshold` matching events
//!   for one group (client IP, route, consumer, or all) within `window` seconds posts one JSON
//!   alert to the rule's webhook, then stays quiet for that group for `cooldown` seconds, so a
//!   flood produces one alert per period, not thousands.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::sync::mpsc::{channel, Receiver, Sender};
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::Context;

use crate::access_log::{rfc3339, AccessLogSink};

/// The `target` of security events.
pub const TARGET: &str = "security";

/// One `[[alerts]]` rule of the node settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRule {
    /// Rule name, sent in the alert.
    pub name: String,
    /// Event kinds counted (empty: all).
    #[serde(default)]
    pub events: Vec<String>,
    /// Count per `client_ip`, `route`, `consumer` or `none` (all together).
    #[serde(default = "default_group_by")]
    pub group_by: String,
    /// Alert when more than this many events fall in the window.
    pub threshold: u32,
    /// Window, seconds.
    #[serde(default = "default_window")]
    pub window: u64,
    /// Where the alert is POSTed (JSON).
    pub webhook: String,
    /// Quiet period per group after an alert, seconds (default: the window).
    pub cooldown: Option<u64>,
}

fn default_group_by() -> String {
    "client_ip".into()
}

fn default_window() -> u64 {
    60
}

impl AlertRule {
    /// Checks what serde cannot.
    pub fn validate(&self, i: usize) -> Result<(), String> {
        if !["client_ip", "route", "consumer", "none"].contains(&self.group_by.as_str()) {
            return Err(format!(
                "alerts[{i}].group_by: expected one of: client_ip, route, consumer, none"
            ));
        }
        if self.threshold == 0 || self.window == 0 {
            return Err(format!(
                "alerts[{i}]: threshold and window must be at least 1"
            ));
        }
        if !(self.webhook.starts_with("http://") || self.webhook.starts_with("https://")) {
            return Err(format!("alerts[{i}].webhook: must be an http(s) URL"));
        }
        Ok(())
    }
}

#[derive(Default)]
struct GroupState {
    times: VecDeque<Instant>,
    quiet_until: Option<Instant>,
}

struct RuleState {
    rule: AlertRule,
    groups: HashMap<String, GroupState>,
}

/// Collects security events (see the module documentation).
pub struct SecurityLayer {
    /// `security_log`: the same JSON-lines writer as the access log.
    file: Arc<AccessLogSink>,
    rules: Mutex<Vec<RuleState>>,
    alerts: Sender<(String, Value)>,
    alert_rx: Mutex<Option<Receiver<(String, Value)>>>,
    /// `security_http`: events are also POSTed there in batches.
    events_http: Option<(String, Sender<Value>)>,
    events_rx: Mutex<Option<Receiver<Value>>>,
    /// Events that did not fit in the HTTP queue or were given up after retries (the file's
    /// own drops are counted by its sink).
    pub dropped: AtomicU64,
}

const MAX_GROUPS: usize = 10_000;

impl SecurityLayer {
    /// Opens the event file (`off` for none; `stdout`/`stderr`/a path) and loads the rules.
    /// Alerts and event batches queue until [`SecurityLayer::start_alerts`] runs.
    pub fn new(
        security_log: &str,
        security_http: Option<&str>,
        rules: Vec<AlertRule>,
    ) -> std::io::Result<Arc<SecurityLayer>> {
        let file = match security_log {
            "" => AccessLogSink::off(),
            target => AccessLogSink::open(target)?,
        };
        let (alerts, alert_rx) = channel(1024);
        let (events_http, events_rx) = match security_http {
            Some(url) => {
                let (tx, rx) = channel(16 * 1024);
                (Some((url.to_string(), tx)), Some(rx))
            }
            None => (None, None),
        };
        Ok(Arc::new(SecurityLayer {
            events_http,
            events_rx: Mutex::new(events_rx),
            file,
            rules: Mutex::new(
                rules
                    .into_iter()
                    .map(|rule| RuleState {
                        rule,
                        groups: HashMap::new(),
                    })
                    .collect(),
            ),
            alerts,
            alert_rx: Mutex::new(Some(alert_rx)),
            dropped: AtomicU64::new(0),
        }))
    }

    /// Starts posting alerts and (with `security_http`) event batches; call once, inside the
    /// runtime.
    pub fn start_alerts(self: &Arc<Self>) {
        self.start_event_sink();
        self.start_alert_poster();
    }

    fn start_event_sink(self: &Arc<Self>) {
        let (Some((url, _)), Some(mut erx)) = (
            self.events_http.clone(),
            self.events_rx.lock().ok().and_then(|mut r| r.take()),
        ) else {
            return;
        };
        let me = self.clone();
        tokio::spawn(async move {
            let Some(client) = webhook_client() else {
                return;
            };
            while let Some(first) = erx.recv().await {
                // Batches of up to 100 events, or whatever arrived within a second.
                let mut batch = vec![first];
                let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
                while batch.len() < 100 {
                    match tokio::time::timeout_at(deadline, erx.recv()).await {
                        Ok(Some(e)) => batch.push(e),
                        _ => break,
                    }
                }
                let body = Value::Array(batch);
                let mut delivered = false;
                for attempt in 0..4u32 {
                    if attempt > 0 {
                        tokio::time::sleep(Duration::from_millis(250 << attempt)).await;
                    }
                    match client.post(&url).json(&body).send().await {
                        Ok(r) if r.status().is_success() => {
                            delivered = true;
                            break;
                        }
                        Ok(r) => tracing::warn!(
                            status = r.status().as_u16(),
                            "security event sink refused a batch"
                        ),
                        Err(e) => {
                            tracing::warn!(error = %e.without_url(), "security event sink failed")
                        }
                    }
                }
                if !delivered {
                    let n = body.as_array().map_or(0, Vec::len) as u64;
                    me.dropped.fetch_add(n, Ordering::Relaxed);
                    tracing::warn!(dropped = n, "security events given up after retries");
                }
            }
        });
    }

    fn start_alert_poster(self: &Arc<Self>) {
        let Some(mut arx) = self.alert_rx.lock().ok().and_then(|mut r| r.take()) else {
            return;
        };
        tokio::spawn(async move {
            let Some(client) = webhook_client() else {
                return;
            };
            while let Some((url, body)) = arx.recv().await {
                match client.post(&url).json(&body).send().await {
                    Ok(r) if r.status().is_success() => {}
                    Ok(r) => {
                        tracing::warn!(
                            status = r.status().as_u16(),
                            "alert webhook refused the alert"
                        )
                    }
                    Err(e) => tracing::warn!(error = %e.without_url(), "alert webhook failed"),
                }
            }
        });
    }

    fn record(&self, fields: Map<String, Value>) {
        let kind = fields
            .get("event")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_string();
        let mut line = Map::new();
        line.insert("time".into(), Value::String(rfc3339(SystemTime::now())));
        line.insert("kind".into(), Value::String("security".into()));
        for (k, v) in &fields {
            line.insert(k.clone(), v.clone());
        }
        let line = Value::Object(line);
        if let Some((_, tx)) = &self.events_http {
            if tx.try_send(line.clone()).is_err() {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        if self.file.enabled() {
            self.file.send(line.to_string());
        }
        let Ok(mut rules) = self.rules.lock() else {
            return;
        };
        let now = Instant::now();
        for state in rules.iter_mut() {
            let rule = &state.rule;
            if !rule.events.is_empty() && !rule.events.contains(&kind) {
                continue;
            }
            let group = match rule.group_by.as_str() {
                "none" => String::new(),
                key => match fields.get(key).and_then(Value::as_str) {
                    Some(v) => v.to_string(),
                    None => continue,
                },
            };
            if state.groups.len() >= MAX_GROUPS && !state.groups.contains_key(&group) {
                let window = Duration::from_secs(rule.window);
                state.groups.retain(|_, g| {
                    g.quiet_until.is_some_and(|q| q > now)
                        || g.times
                            .back()
                            .is_some_and(|t| now.duration_since(*t) < window)
                });
                if state.groups.len() >= MAX_GROUPS {
                    continue;
                }
            }
            let g = state.groups.entry(group.clone()).or_default();
            let window = Duration::from_secs(rule.window);
            while g
                .times
                .front()
                .is_some_and(|t| now.duration_since(*t) > window)
            {
                g.times.pop_front();
            }
            g.times.push_back(now);
            if g.times.len() as u32 > rule.threshold && g.quiet_until.is_none_or(|q| now >= q) {
                g.quiet_until =
                    Some(now + Duration::from_secs(rule.cooldown.unwrap_or(rule.window)));
                let alert = serde_json::json!({
                    "alert": rule.name,
                    "group_by": rule.group_by,
                    "group": group,
                    "count": g.times.len(),
                    "threshold": rule.threshold,
                    "window_seconds": rule.window,
                    "time": rfc3339(SystemTime::now()),
                    "last_event": line,
                });
                let _ = self.alerts.try_send((rule.webhook.clone(), alert));
            }
        }
    }
}

/// An HTTP client for webhooks and the event sink: public roots, no redirects, no proxy.
fn webhook_client() -> Option<reqwest::Client> {
    let tls = match crate::tls::client_config(&[], true, None, false) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the webhook TLS config");
            return None;
        }
    };
    match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .use_preconfigured_tls(tls)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
    {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::error!(error = %e, "cannot build the webhook client");
            None
        }
    }
}

struct Fields(Map<String, Value>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(
            field.name().to_string(),
            Value::String(format!("{value:?}")),
        );
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .insert(field.name().to_string(), Value::String(value.to_string()));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_string(), Value::from(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_string(), Value::from(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_string(), Value::from(value));
    }
}

/// The `tracing` layer; install with `registry().with(SecurityTap(layer))`.
pub struct SecurityTap(pub Arc<SecurityLayer>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for SecurityTap {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        if event.metadata().target() != TARGET {
            return;
        }
        let mut f = Fields(Map::new());
        event.record(&mut f);
        // `message` is the human text of the event; keep it as `message`.
        self.0.record(f.0);
    }
}

/// The kind of security event a refusal by `plugin` with `status` is. `None` for plugins that
/// are not security controls, and for the WAF, which emits its own richer event (rule ids).
pub fn refusal_kind(plugin: &str, status: u16) -> Option<&'static str> {
    Some(match plugin {
        "key-auth" | "basic-auth" | "hmac-auth" | "jwt" | "mtls-auth" | "openid-connect"
        | "ldap-auth" | "oauth2" => match status {
            429 => "auth_locked",
            403 => "authz_denied",
            _ => "auth_failure",
        },
        "acl" => "authz_denied",
        "rate-limiting" | "rate-limiting-advanced" | "response-ratelimiting" => "rate_limited",
        "ip-restriction" => "ip_blocked",
        "bot-detection" => "bot_blocked",
        "request-size-limiting" => "size_limited",
        "request-validator" | "oas-validation" => "validation_failed",
        _ => return None,
    })
}
