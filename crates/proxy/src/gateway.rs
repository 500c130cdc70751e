//! The running gateway: the current snapshot behind an atomic pointer, the upstream pool, TLS
//! certificate resolver, counters, and reload.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use portcullis_config::{Config, FieldError};

use crate::access_log::AccessLogSink;
use crate::body::Stats;
use crate::h1client::WireRules;
use crate::health;
use crate::settings::{secs, Settings};
use crate::snapshot::{compile, Snapshot};
use crate::tls::{self, SniResolver};
use crate::upstream::Pool;

/// Why a config was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file could not be read.
    #[error("{0}")]
    Io(String),
    /// The config is invalid; the running config keeps serving.
    #[error("{} error(s) in config", .0.len())]
    Invalid(Vec<FieldError>),
}

/// Shared state of one gateway node.
pub struct Gateway {
    /// Node settings.
    pub settings: Settings,
    current: ArcSwap<Snapshot>,
    /// Upstream keep-alive pool.
    pub pool: Arc<Pool>,
    /// TLS certificate selection (its table follows the snapshot).
    pub resolver: Arc<SniResolver>,
    /// Counters for `/status`.
    pub stats: Stats,
    /// Set once listeners are bound and the first config is active.
    pub ready: AtomicBool,
    /// Config file re-read on SIGHUP.
    pub config_path: Option<PathBuf>,
    /// Access-log writer.
    pub access_log: Arc<AccessLogSink>,
    /// Client-certificate requests on the TLS listener (on while mtls-auth is configured).
    pub client_auth: Arc<tls::ClientCertRequest>,
    /// Headers added to every response (from `security_headers`), parsed once.
    pub security_headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// Header carrying the request id (lower case).
    pub request_id_header: http::HeaderName,
    /// Which of its own headers the gateway adds (settings `headers`, `headers_upstream`).
    pub headers: crate::settings::GatewayHeaders,
    /// How upstream response heads are relayed as encoded lines (see
    /// [`crate::h1client::WireRules`]); `None` when the settings rule it out (more than 64
    /// security headers).
    pub wire_rules: Option<WireRules>,
    reload_lock: tokio::sync::Mutex<()>,
}

impl Gateway {
    /// Builds a gateway around a first config.
    pub fn new(
        settings: Settings,
        config: Config,
        hash: String,
        config_path: Option<PathBuf>,
    ) -> Result<Arc<Gateway>, ReloadError> {
        let snap =
            compile(config, &settings, &Default::default(), hash).map_err(ReloadError::Invalid)?;
        let default_cert = match (&settings.ssl_cert, &settings.ssl_cert_key) {
            (Some(c), Some(k)) => {
                let cert = std::fs::read_to_string(c)
                    .map_err(|e| ReloadError::Io(format!("ssl_cert: {e}")))?;
                let key = std::fs::read_to_string(k)
                    .map_err(|e| ReloadError::Io(format!("ssl_cert_key: {e}")))?;
                tls::certified_key(&cert, &key)
                    .map_err(|e| ReloadError::Io(format!("ssl_cert: {e}")))?
            }
            _ => tls::self_signed().map_err(ReloadError::Io)?,
        };
        let resolver = Arc::new(SniResolver {
            table: ArcSwap::new(snap.certs.clone()),
            default: default_cert,
        });
        let access_log = AccessLogSink::open(&settings.access_log)
            .map_err(|e| ReloadError::Io(format!("access_log: {e}")))?;
        let request_id_header = http::HeaderName::from_bytes(
            settings.request_id_header.to_ascii_lowercase().as_bytes(),
        )
        .map_err(|_| ReloadError::Io("request_id_header: not a valid header name".into()))?;
        let headers = settings.gateway_headers().map_err(ReloadError::Io)?;
        let security_headers = settings
            .security_headers
            .iter()
            .filter_map(|(k, v)| {
                Some((
                    http::HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()).ok()?,
                    http::HeaderValue::from_str(v).ok()?,
                ))
            })
            .collect::<Vec<_>>();
        let wire_rules = (security_headers.len() <= 64).then(|| {
            // The gateway's own headers replace an upstream's copies of them.
            let ours = [
                (headers.request_id, &request_id_header),
                (
                    headers.upstream_latency,
                    &crate::handler::OWN_RESPONSE_HEADERS[0],
                ),
                (
                    headers.proxy_latency,
                    &crate::handler::OWN_RESPONSE_HEADERS[1],
                ),
                (
                    headers.upstream_status,
                    &crate::handler::OWN_RESPONSE_HEADERS[2],
                ),
            ];
            let mut drop: Vec<http::HeaderName> = ours
                .into_iter()
                .filter(|(on, _)| *on)
                .map(|(_, name)| name.clone())
                .collect();
            if settings.response_hardening {
                drop.extend(crate::handler::FINGERPRINTS.iter().cloned());
            }
            WireRules::new(
                drop,
                security_headers.iter().map(|(k, _)| k.clone()).collect(),
            )
        });
        let pool = Arc::new(Pool::new(
            settings.upstream_keepalive_pool_size,
            secs(settings.upstream_keepalive_idle_timeout),
        ));
        let snap = Arc::new(snap);
        let gw = Arc::new(Gateway {
            settings,
            current: ArcSwap::new(snap.clone()),
            pool,
            resolver,
            stats: Stats::default(),
            ready: AtomicBool::new(false),
            config_path,
            access_log,
            client_auth: Arc::new(tls::ClientCertRequest {
                enabled: AtomicBool::new(snap.wants_client_certs),
            }),
            request_id_header,
            headers,
            security_headers,
            wire_rules,
            reload_lock: tokio::sync::Mutex::new(()),
        });
        Ok(gw)
    }

    /// Starts background tasks (health checks, pool sweeping). Call inside the runtime.
    pub fn start_background(self: &Arc<Self>) {
        health::spawn_for(&self.snapshot());
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(10));
            loop {
                tick.tick().await;
                let Some(gw) = weak.upgrade() else { break };
                gw.pool.sweep();
            }
        });
    }

    /// The snapshot for a new request.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Is the node ready to proxy?
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Compiles `config` and swaps it in; on error the running config stays.
    pub async fn apply(self: &Arc<Self>, config: Config, hash: String) -> Result<(), ReloadError> {
        let _guard = self.reload_lock.lock().await;
        let previous = self.snapshot().health();
        let settings = self.settings.clone();
        // Compiling 10k routes takes real CPU: keep it off the reactor threads.
        let snap = tokio::task::spawn_blocking(move || compile(config, &settings, &previous, hash))
            .await
            .map_err(|e| ReloadError::Io(format!("compile task failed: {e}")))?
            .map_err(ReloadError::Invalid)?;
        let snap = Arc::new(snap);
        self.resolver.table.store(snap.certs.clone());
        self.client_auth
            .enabled
            .store(snap.wants_client_certs, Ordering::Relaxed);
        self.current.store(snap.clone());
        health::spawn_for(&snap);
        Ok(())
    }

    /// Re-reads the config file and applies it.
    pub async fn reload_file(self: &Arc<Self>) -> Result<String, ReloadError> {
        let Some(path) = self.config_path.clone() else {
            return Err(ReloadError::Io("no config file to reload".into()));
        };
        let text = tokio::fs::read_to_string(&path)
            .await
            .map_err(|e| ReloadError::Io(format!("cannot read {}: {e}", path.display())))?;
        let hash = config_hash(&text);
        // Plugin schemas checked in the same pass, so a refused reload logs every error that
        // `portcullis config validate` prints, not only the entity ones.
        let config = portcullis_config::parse_str_with(
            &text,
            &|n| std::env::var(n).ok(),
            &portcullis_plugins::validate,
        )
        .map_err(ReloadError::Invalid)?;
        let summary = config.summary();
        self.apply(config, hash).await?;
        Ok(summary)
    }
}

/// A short hash of config text (shown by `/status` as `configuration_hash`).
pub fn config_hash(text: &str) -> String {
    portcullis_config::tls::digest(text)[..32].to_string()
}
